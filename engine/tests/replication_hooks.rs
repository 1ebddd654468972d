//! The engine's hooks for replication: the writer's observer, chunked reads of encoded
//! records, and appending another log's records byte for byte.

use std::sync::Arc;

use bytes::Bytes;
use logship_engine::{Error, Log, LogObserver, Lsn, Options};
use parking_lot::Mutex;

fn small() -> Options {
    Options {
        create_if_missing: true,
        segment_size_bytes: 64 << 10,
        max_record_bytes: 8 << 10,
        max_batch_bytes: 16 << 10,
        max_queue_bytes: 256 << 10,
        ..Options::default()
    }
}

/// [`small`] with `observer`.
fn observed(observer: Arc<dyn LogObserver>) -> Options {
    Options {
        observer: Some(observer),
        ..small()
    }
}

/// The calling thread's name, as the observer records it.
fn this_thread() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_string()
}

/// Gives the log's writer thread time to write its idle marker after the last write and go to
/// sleep without a deadline (its longest idle-marker wait is 8 ms), so that a caller finds it
/// idle: on a loaded machine a caller that comes back at once after its wait can find the
/// writer thread still finishing the write it woke the caller from, every time, and leave its
/// records to it. Only the tests that count writes made on the calling thread need it.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(10));
}

fn payload(i: u64) -> Bytes {
    Bytes::from(format!("record-{i}-{}", "y".repeat((i % 500) as usize)))
}

#[derive(Debug, Default)]
struct Recorder {
    batches: Mutex<Vec<(Lsn, Lsn, Vec<u8>)>>,
    durable: Mutex<Vec<Lsn>>,
}

impl LogObserver for Recorder {
    fn on_batch(&self, first: Lsn, last: Lsn, records: &[u8]) {
        self.batches.lock().push((first, last, records.to_vec()));
    }
    fn on_durable(&self, durable: Lsn) {
        self.durable.lock().push(durable);
    }
}

/// The record frames of a chunk, without the write markers of the log it was read from.
fn records_only(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in logship_engine::record::run(bytes) {
        let (at, r) = item.unwrap();
        out.extend_from_slice(&bytes[at..at + r.encoded_len()]);
    }
    out
}

fn all_chunks(log: &Log, max_bytes: usize) -> Vec<logship_engine::Chunk> {
    let mut reader = log.read_from(Lsn::ZERO).unwrap();
    let mut out = Vec::new();
    while let Some(c) = reader.next_chunk(max_bytes) {
        out.push(c.unwrap());
    }
    out
}

/// Appends `payload(i)` for each `i` without waiting, then syncs.
fn append_synced(log: &Log, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        drop(log.append(payload(i)).unwrap());
    }
    log.sync().unwrap();
}

/// Every record of `log`, encoded, without its write markers.
fn all_records(log: &Log) -> Vec<u8> {
    all_chunks(log, 1 << 20)
        .iter()
        .flat_map(|c| records_only(&c.bytes))
        .collect()
}

#[test]
fn observer_sees_every_batch_before_it_is_durable_and_chunks_match_them() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Arc::new(Recorder::default());
    let opts = observed(rec.clone());
    let log = Log::open(dir.path().join("p"), opts).unwrap();
    for i in 1..=3000u64 {
        let a = log.append(payload(i)).unwrap();
        if i % 250 == 0 {
            a.wait().unwrap();
        }
    }
    log.sync().unwrap();
    let batches = rec.batches.lock().clone();
    let mut next = Lsn(1);
    let mut streamed = Vec::new();
    for (first, last, bytes) in &batches {
        assert_eq!(*first, next, "batches are dense and in order");
        next = last.next();
        streamed.extend_from_slice(bytes);
    }
    assert_eq!(next, Lsn(3001));
    // The observer hears of a durable advance after the waiters are woken: give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while rec.durable.lock().last() != Some(&Lsn(3000)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let durable = rec.durable.lock().clone();
    assert!(durable.windows(2).all(|w| w[0] < w[1]), "durable LSNs rise");
    assert_eq!(durable.last(), Some(&Lsn(3000)));

    let chunks = all_chunks(&log, 20_000);
    assert!(chunks.len() > 5, "several segments, several chunks");
    let mut read = Vec::new();
    let mut next = Lsn(1);
    for c in &chunks {
        assert_eq!(c.first, next);
        assert!(c.bytes.len() <= 20_000 || c.first == c.last);
        next = c.last.next();
        read.extend_from_slice(&records_only(&c.bytes));
    }
    assert_eq!(
        read, streamed,
        "chunks hold exactly the records the observer saw"
    );
}

#[test]
fn replicated_records_are_appended_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Log::open(dir.path().join("p"), small()).unwrap();
    append_synced(&primary, 1..=2500);
    let follower = Log::open(dir.path().join("f"), small()).unwrap();
    for c in all_chunks(&primary, 7_000) {
        let b = follower.append_replicated(c.bytes.clone()).unwrap();
        assert_eq!((b.first_lsn(), b.last_lsn()), (c.first, c.last));
    }
    follower.sync().unwrap();
    let (a, b) = (all_records(&primary), all_records(&follower));
    assert_eq!(a.len(), b.len());
    assert!(a == b, "the follower's records are the primary's bytes");
    follower.close().unwrap();
    let reopened = Log::open(dir.path().join("f"), small()).unwrap();
    assert_eq!(reopened.last_lsn(), Lsn(2500));
}

#[test]
fn bad_replicated_records_are_refused_and_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Log::open(dir.path().join("p"), small()).unwrap();
    append_synced(&primary, 1..=10);
    let chunk = all_chunks(&primary, 1 << 20).remove(0);
    let bytes = chunk.bytes.to_vec();
    let follower = Log::open(dir.path().join("f"), small()).unwrap();

    let mut flipped = bytes.clone();
    flipped[40] ^= 1;
    let e = follower
        .append_replicated(Bytes::from(flipped))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidRecords { offset: 0, .. }), "{e}");

    let cut = Bytes::copy_from_slice(&bytes[..bytes.len() - 3]);
    let e = follower.append_replicated(cut).unwrap_err();
    assert!(matches!(e, Error::InvalidRecords { .. }), "{e}");

    // Records 2..=10 on an empty log: the LSNs do not continue it.
    let mut reader = primary.read_from(Lsn(2)).unwrap();
    let tail = reader.next_chunk(1 << 20).unwrap().unwrap();
    let e = follower.append_replicated(tail.bytes.clone()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LsnMismatch {
                expected: Lsn(1),
                found: Lsn(2)
            }
        ),
        "{e}"
    );

    // A gap inside the run.
    let first_len = 32 + payload(1).len();
    let second_len = 32 + payload(2).len();
    let mut gap = bytes[..first_len].to_vec();
    gap.extend_from_slice(&bytes[first_len + second_len..]);
    let e = follower.append_replicated(Bytes::from(gap)).unwrap_err();
    assert!(matches!(e, Error::InvalidRecords { .. }), "{e}");

    let e = follower.append_replicated(Bytes::new()).unwrap_err();
    assert!(matches!(e, Error::InvalidRecords { .. }), "{e}");
    assert_eq!(follower.last_lsn(), Lsn::ZERO, "nothing was appended");
    follower
        .append_replicated(chunk.bytes)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(follower.last_lsn(), Lsn(10));
}

#[test]
fn chunks_stay_within_their_bound_when_markers_lie_between_records() {
    // Each record waited for, then the writer idles: every record is followed by its write's
    // marker and an idle marker, so a chunk's bound falls next to markers at every size.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("p"), small()).unwrap();
    for i in 1..=40u64 {
        log.append(payload(i)).unwrap().wait().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    for max in (64..2_000).step_by(7) {
        let mut next = Lsn(1);
        for c in all_chunks(&log, max) {
            assert!(
                c.bytes.len() <= max || c.first == c.last,
                "{} bytes for a bound of {max}",
                c.bytes.len()
            );
            assert_eq!(c.first, next);
            next = c.last.next();
        }
        assert_eq!(next, Lsn(41));
    }
}

/// Notes the thread each callback runs on.
#[derive(Debug, Default)]
struct Threads(Mutex<Vec<String>>);

impl Threads {
    fn note(&self) {
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        self.0.lock().push(name);
    }
}

impl LogObserver for Threads {
    fn on_batch(&self, _first: Lsn, _last: Lsn, _records: &[u8]) {
        self.note();
    }
    fn on_durable(&self, _durable: Lsn) {
        self.note();
    }
}

/// The observer is called on the writer thread only, as documented: a log with an observer
/// never lets a waiting appender write its record itself (caller-runs), even though every
/// append here waits while the writer is idle.
#[test]
fn with_an_observer_only_the_writer_thread_writes() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Threads::default());
    let opts = observed(seen.clone());
    let log = Log::open(dir.path().join("p"), opts).unwrap();
    for i in 1..=50u64 {
        assert_eq!(log.append(payload(i)).unwrap().wait().unwrap(), Lsn(i));
    }
    log.sync().unwrap();
    let stats = log.stats();
    assert!(stats.writes >= 1);
    assert_eq!(stats.caller_writes, 0);
    let names = seen.0.lock().clone();
    // At least each write's batch call (made before its fdatasync; the last durable call may
    // still be on its way).
    assert!(names.len() as u64 >= stats.writes, "{stats:?}: {names:?}");
    assert!(
        names.iter().all(|n| n == "logship-writer"),
        "callbacks ran on {names:?}"
    );
}

/// `append_to_write_here` + `write_here`, one record (or batch) at a time while the writer
/// idles: the calling thread writes it, the observer called on it, and the completion is done
/// when `write_here` returns; a record appended the ordinary way is left to the writer thread,
/// and so is one whose `write_here` finds another record queued before it. Every record reads
/// back after a reopen.
#[test]
fn a_record_appended_to_write_here_is_written_by_the_calling_thread() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Threads::default());
    let opts = observed(seen.clone());
    let log = Log::open(dir.path().join("p"), opts).unwrap();
    let me = this_thread();
    // The writer thread idles between these appends, each waited for: the calling thread
    // writes nearly all, but one finds the writer thread still busy with an idle marker now
    // and then (often, on a loaded machine), and leaves its record to it. Appends until 20
    // were written here, 400 at most.
    let (mut wrote, mut next) = (0, 1u64);
    while wrote < 20 {
        assert!(
            next <= 400,
            "{wrote} of {} written here: {:?}",
            next - 1,
            log.stats()
        );
        let mut a = log.append_to_write_here(payload(next)).unwrap();
        if a.write_here() {
            wrote += 1;
            assert!(
                a.into_completion().is_done(),
                "record {next} durable on return"
            );
        } else {
            assert_eq!(a.wait().unwrap(), Lsn(next));
        }
        next += 1;
    }
    let mut batch = log
        .append_batch_to_write_here((next..next + 5).map(payload))
        .unwrap();
    let batch_here = batch.write_here();
    assert_eq!(batch.wait().unwrap(), Lsn(next + 4));
    next += 5;
    assert_eq!(log.stats().caller_writes, wrote + u64::from(batch_here));
    assert!(seen.0.lock().contains(&me), "the observer ran here");
    // Another record queued first: `write_here` leaves both to the writer thread.
    let last = another_record_queued_first(&log, next);
    log.close().unwrap();
    let reopened = Log::open(dir.path().join("p"), small()).unwrap();
    let got: Vec<Bytes> = reopened
        .read_from(Lsn(1))
        .unwrap()
        .map(|r| r.unwrap().payload)
        .collect();
    assert_eq!(got, (1..=last).map(payload).collect::<Vec<_>>());
}

/// An ordinary append, then one to write here, from LSN `next`: `write_here` finds the first
/// queued before its own and leaves both to the writer thread. The writer thread may take the
/// first on its own before `write_here` looks (its idle-marker wait ends in between on a busy
/// machine); the second is then alone and written here, which must never happen before the
/// first is durable. Tried until `write_here` declines, 20 times at most; returns the last LSN
/// appended.
fn another_record_queued_first(log: &Log, mut next: u64) -> u64 {
    for _ in 0..20 {
        let before = log.stats().caller_writes;
        let other = log.append(payload(next)).unwrap().into_completion();
        let mut a = log.append_to_write_here(payload(next + 1)).unwrap();
        let here = a.write_here();
        assert!(
            !here || other.is_done(),
            "record {} written here before record {next} was durable",
            next + 1
        );
        assert_eq!(a.wait().unwrap(), Lsn(next + 1));
        assert_eq!(other.wait().unwrap(), Lsn(next));
        assert_eq!(log.stats().caller_writes, before + u64::from(here));
        next += 2;
        if !here {
            return next - 1;
        }
    }
    panic!("write_here wrote its record with another queued first, 20 times in a row");
}

/// `append_replicated_here`: a follower's records, one chunk at a time, each waited for; the
/// calling thread writes them while the writer thread idles (it is not even woken), the
/// observer called on it; a chunk larger than `max_bytes` is left to the writer thread. Every
/// record arrives byte for byte and is there after a reopen.
#[test]
fn replicated_records_are_written_on_the_calling_thread_when_the_writer_idles() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Log::open(dir.path().join("p"), small()).unwrap();
    append_synced(&primary, 1..=300);
    let seen = Arc::new(Threads::default());
    let opts = observed(seen.clone());
    let follower = Log::open(dir.path().join("f"), opts.clone()).unwrap();
    let me = this_thread();
    let chunks = all_chunks(&primary, 2_000);
    for c in &chunks {
        settle();
        let b = follower
            .append_replicated_here(c.bytes.clone(), 64 << 10)
            .unwrap();
        assert_eq!(b.wait().unwrap(), c.last);
    }
    let here = follower.stats();
    assert!(here.caller_writes >= 1, "{here:?}");
    assert!(seen.0.lock().contains(&me), "the observer ran here");
    // Chunks larger than the bound (every record is larger than 16 bytes) go to the writer
    // thread.
    append_synced(&primary, 301..=400);
    let mut reader = primary.read_from(Lsn(301)).unwrap();
    while let Some(c) = reader.next_chunk(1 << 20) {
        let c = c.unwrap();
        let b = follower
            .append_replicated_here(c.bytes.clone(), 16)
            .unwrap();
        assert_eq!(b.wait().unwrap(), c.last);
    }
    assert_eq!(follower.last_lsn(), Lsn(400));
    assert_eq!(follower.stats().caller_writes, here.caller_writes);
    let (a, f) = (all_records(&primary), all_records(&follower));
    assert!(a == f, "the follower's records are the primary's bytes");
    follower.close().unwrap();
    let reopened = Log::open(dir.path().join("f"), small()).unwrap();
    assert_eq!(reopened.last_lsn(), Lsn(400));
}

/// `append_replicated_before_more`: frames that arrived together are queued without a wake and
/// written with the last one's `append_replicated_here`, one write for the pair on the calling
/// thread; every record arrives byte for byte.
#[test]
fn frames_that_arrive_together_are_written_together() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Log::open(dir.path().join("p"), small()).unwrap();
    append_synced(&primary, 1..=400);
    let follower = Log::open(dir.path().join("f"), small()).unwrap();
    let chunks = all_chunks(&primary, 2_000);
    let pairs = chunks.len() / 2;
    assert!(pairs >= 20, "{} chunks", chunks.len());
    let before = follower.stats();
    for pair in chunks.chunks(2).take(pairs) {
        settle();
        let held = follower
            .append_replicated_before_more(pair[0].bytes.clone())
            .unwrap();
        let b = follower
            .append_replicated_here(pair[1].bytes.clone(), 64 << 10)
            .unwrap();
        drop(held);
        assert_eq!(b.wait().unwrap(), pair[1].last);
    }
    let after = follower.stats();
    let writes = after.writes - before.writes;
    // One write per pair, but for a pair the writer thread took between the two calls (its
    // idle-marker wait may end there); written apart, every pair would take two.
    assert!(
        writes < 2 * pairs as u64,
        "{writes} writes for {pairs} pairs"
    );
    assert!(after.caller_writes > before.caller_writes, "{after:?}");
    for c in &chunks[2 * pairs..] {
        follower
            .append_replicated(c.bytes.clone())
            .unwrap()
            .wait()
            .unwrap();
    }
    let (a, f) = (all_records(&primary), all_records(&follower));
    assert!(a == f, "the follower's records are the primary's bytes");
}

/// A batch queued for a write that never came owes the idle writer thread its wake and pays
/// it when dropped: the records become durable without anyone waiting on them.
#[test]
fn records_queued_before_more_that_never_came_are_written_once_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Log::open(dir.path().join("p"), small()).unwrap();
    append_synced(&primary, 1..=50);
    let follower = Log::open(dir.path().join("f"), small()).unwrap();
    let chunks = all_chunks(&primary, 2_000);
    let first = follower.append_replicated(chunks[0].bytes.clone()).unwrap();
    first.wait().unwrap();
    // The writer thread writes its idle marker and waits for work without a deadline: only a
    // wake brings it back.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let chunk = &chunks[1];
    drop(
        follower
            .append_replicated_before_more(chunk.bytes.clone())
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while follower.durable_lsn() < chunk.last {
        assert!(std::time::Instant::now() < deadline, "never written");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
