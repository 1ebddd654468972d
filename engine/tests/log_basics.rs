//! Behaviour of the log on real files and on the fault-injecting file system.

use std::future::IntoFuture;
use std::sync::Arc;

use bytes::Bytes;
use logship_engine::io::{Backend, FaultConfig, FaultyVfs};
use logship_engine::{Durability, Error, Log, Lsn, Options};

fn small(backend: Backend) -> Options {
    Options {
        create_if_missing: true,
        segment_size_bytes: 64 << 10,
        max_record_bytes: 8 << 10,
        max_batch_bytes: 16 << 10,
        max_queue_bytes: 256 << 10,
        backend,
        ..Options::default()
    }
}

/// Every hot-path backend the host allows (it says why when it skips one): io_uring where the
/// kernel allows it, io_uring with O_DIRECT where the temporary directory's file system takes it.
fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Portable];
    if let Err(reason) = logship_engine::io::uring::probe() {
        println!("io_uring cases skipped: {reason}");
        return backends;
    }
    backends.push(Backend::IoUring);
    let dir = tempfile::tempdir().unwrap();
    match logship_engine::io::direct::probe_dir(dir.path()) {
        Ok(()) => backends.push(Backend::IoUringDirect),
        Err(reason) => println!("io_uring_direct cases skipped: {reason}"),
    }
    backends
}

fn payload(i: u64) -> Bytes {
    Bytes::from(format!("record-{i}-{}", "x".repeat((i % 300) as usize)))
}

fn read_all(log: &Log) -> Vec<(Lsn, Bytes)> {
    log.read_from(Lsn::ZERO)
        .expect("reader")
        .map(|r| r.map(|r| (r.lsn, r.payload)).expect("record"))
        .collect()
}

#[test]
fn append_read_reopen_across_segments_on_both_backends() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let log = Log::open(&path, small(backend)).unwrap();
        let mut last = Lsn::ZERO;
        for i in 1..=2000u64 {
            let a = log.append(payload(i)).unwrap();
            assert_eq!(a.lsn(), Lsn(i));
            if i % 100 == 0 {
                last = a.wait().unwrap();
            }
        }
        assert_eq!(last, Lsn(2000));
        assert!(log.stats().rollovers > 3, "{:?}", log.stats());
        let got = read_all(&log);
        assert_eq!(got.len(), 2000);
        for (i, (lsn, p)) in got.iter().enumerate() {
            assert_eq!(*lsn, Lsn(i as u64 + 1));
            assert_eq!(*p, payload(i as u64 + 1));
        }
        log.close().unwrap();
        let log = Log::open(&path, small(backend)).unwrap();
        assert!(log.recovery_report().torn_tail.is_none());
        assert_eq!(log.last_lsn(), Lsn(2000));
        assert_eq!(read_all(&log).len(), 2000);
        assert_eq!(
            log.append(payload(2001)).unwrap().wait().unwrap(),
            Lsn(2001)
        );
        let v = logship_engine::verify(&path).unwrap();
        assert!(v.is_clean(), "{v:?}");
        assert_eq!(v.records, 2001);
    }
}

#[test]
fn concurrent_appenders_get_dense_lsns() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path().join("log"), small(backend)).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..300u64 {
                        log.append(payload(t * 1000 + i)).unwrap().wait().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(log.durable_lsn(), Lsn(2400), "{backend:?}");
        assert_eq!(read_all(&log).len(), 2400, "{backend:?}");
    }
}

#[test]
fn truncate_purge_and_recycle() {
    for backend in backends() {
        truncate_purge_and_recycle_on(backend);
    }
}

fn truncate_purge_and_recycle_on(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let log = Log::open(&path, small(backend)).unwrap();
    for i in 1..=3000u64 {
        let _ = log.append(payload(i)).unwrap();
    }
    log.sync().unwrap();
    log.truncate_after(Lsn(1234)).unwrap();
    assert_eq!(log.last_lsn(), Lsn(1234));
    assert_eq!(
        log.append(Bytes::from_static(b"new"))
            .unwrap()
            .wait()
            .unwrap(),
        Lsn(1235)
    );
    let all = read_all(&log);
    assert_eq!(all.len(), 1235);
    assert_eq!(all[1234].1, Bytes::from_static(b"new"));
    let r = log.purge_before(Lsn(1000)).unwrap();
    assert!(r.segments_removed > 0);
    assert!(log.first_lsn() <= Lsn(1000));
    assert!(matches!(log.read_from(Lsn(1)), Err(Error::Purged { .. })));
    for i in 0..3000u64 {
        let _ = log.append(payload(i)).unwrap();
    }
    log.sync().unwrap();
    assert!(log.stats().recycled > 0, "{backend:?} {:?}", log.stats());
    let first = log.first_lsn();
    let n = read_all(&log).len() as u64;
    assert_eq!(first.get() + n - 1, log.last_lsn().get());
    log.close().unwrap();
    let log = Log::open(&path, small(backend)).unwrap();
    assert_eq!(log.first_lsn(), first);
    assert_eq!(read_all(&log).len() as u64, n);
    assert!(logship_engine::verify(&path).unwrap().is_clean());
}

#[test]
fn buffered_appends_return_at_once_and_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), small(Backend::Auto)).unwrap();
    for i in 1..=100 {
        let a = log.append_with(payload(i), Durability::Buffered).unwrap();
        assert!(a.into_completion().is_done());
    }
    assert_eq!(log.sync().unwrap(), Lsn(100));
}

#[test]
fn failed_fdatasync_poisons_and_reopen_recovers_acknowledged() {
    let vfs = FaultyVfs::new(7);
    let opts = Options {
        vfs: Some(Arc::new(vfs.clone())),
        ..small(Backend::Portable)
    };
    let path = std::path::PathBuf::from("/faulty/log");
    let log = Log::open(&path, opts.clone()).unwrap();
    let mut acked = Vec::new();
    for i in 1..=50 {
        acked.push(log.append(payload(i)).unwrap().wait().unwrap());
    }
    vfs.set_faults(FaultConfig {
        fail_sync_after: Some(1),
        ..FaultConfig::default()
    });
    let failed = log.append(payload(51)).unwrap().wait();
    assert!(matches!(failed, Err(Error::Poisoned { .. })), "{failed:?}");
    assert!(matches!(
        log.append(payload(52)),
        Err(Error::Poisoned { .. })
    ));
    drop(log);
    vfs.set_faults(FaultConfig::default());
    vfs.crash();
    let log = Log::open(&path, opts).unwrap();
    let got = read_all(&log);
    assert_eq!(got.len(), 50, "exactly the acknowledged records survive");
}

/// A minimal executor: the engine promises completions work under any runtime, including none.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn completions_can_be_awaited_and_backpressure_awaits() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        max_queue_bytes: 16 << 10,
        ..small(Backend::Auto)
    };
    let log = Log::open(dir.path().join("log"), opts).unwrap();
    let lsns = block_on(async {
        let mut out = Vec::new();
        for i in 1..=500u64 {
            let a = log.append_async(payload(i)).await.unwrap();
            if i % 50 == 0 {
                out.push(a.await.unwrap());
            }
        }
        out
    });
    assert_eq!(lsns.last(), Some(&Lsn(500)));
    let batch = log
        .append_batch((0..10).map(|i| payload(1000 + i)))
        .unwrap();
    assert_eq!((batch.first_lsn(), batch.last_lsn()), (Lsn(501), Lsn(510)));
    assert_eq!(block_on(batch.into_future()).unwrap(), Lsn(510));
}

#[test]
fn oversized_records_and_bad_options_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), small(Backend::Auto)).unwrap();
    let big = Bytes::from(vec![0u8; (8 << 10) + 1]);
    assert!(matches!(log.append(big), Err(Error::RecordTooLarge { .. })));
    let bad = Options {
        segment_size_bytes: 1000,
        ..small(Backend::Auto)
    };
    match Log::open(dir.path().join("other"), bad) {
        Err(Error::InvalidOptions { key, .. }) => assert_eq!(key, "segment_size_bytes"),
        other => panic!("{other:?}"),
    }
    // Direct writes cover whole 4096-byte blocks: a segment must end on one.
    let unaligned = Options {
        segment_size_bytes: (64 << 10) + 512,
        ..small(Backend::IoUringDirect)
    };
    match Log::open(dir.path().join("direct"), unaligned) {
        Err(Error::InvalidOptions { key, reason }) => {
            assert_eq!(key, "segment_size_bytes");
            assert!(reason.contains("io_uring_direct"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn payloads_read_from_a_purged_segment_never_change() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), small(Backend::Auto)).unwrap();
    for i in 1..=600u64 {
        let _ = log.append(payload(i)).unwrap();
    }
    log.sync().unwrap();
    let early: Vec<_> = log
        .read_from(Lsn(1))
        .unwrap()
        .take(50)
        .map(|r| r.unwrap())
        .collect();
    log.purge_before(Lsn(500)).unwrap();
    for i in 0..3000u64 {
        let _ = log
            .append(Bytes::from(vec![0xEE; 200 + (i % 50) as usize]))
            .unwrap();
    }
    log.sync().unwrap();
    for (i, r) in early.iter().enumerate() {
        assert_eq!(
            r.payload,
            payload(i as u64 + 1),
            "a zero-copy payload changed"
        );
    }
}

#[test]
fn many_async_waiters_are_all_woken() {
    // More async waiters per group commit than the writer wakes inline, so the notifier thread
    // wakes most of them.
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path().join("log"), small(backend)).unwrap());
        let threads: Vec<_> = (0..24u64)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    block_on(async {
                        for i in 0..200u64 {
                            let a = log.append_async(payload(t * 1000 + i)).await.unwrap();
                            a.await.unwrap();
                        }
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(log.durable_lsn(), Lsn(24 * 200), "{backend:?}");
    }
}

#[test]
fn a_second_open_is_refused_and_a_scan_reads_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let log = Log::open(&path, small(Backend::Auto)).unwrap();
    for i in 1..=700u64 {
        let _ = log.append(payload(i)).unwrap();
    }
    log.sync().unwrap();
    match Log::open(&path, small(Backend::Auto)) {
        Err(Error::Locked { path: p }) => assert_eq!(p, path),
        other => panic!("expected Locked, got {other:?}"),
    }
    let scanned: Vec<_> = logship_engine::scan(&path, Lsn(650))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(scanned.len(), 51);
    for r in &scanned {
        assert_eq!(r.payload, payload(r.lsn.get()));
    }
    let all = logship_engine::scan(&path, Lsn::ZERO).unwrap().count();
    assert_eq!(all, 700);
    drop(log);
    assert!(
        Log::open(&path, small(Backend::Auto)).is_ok(),
        "the lock goes with the log"
    );
}

#[test]
fn records_larger_than_a_batch_are_written_alone() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        create_if_missing: true,
        segment_size_bytes: 256 << 10,
        max_batch_bytes: 4096,
        max_record_bytes: 100 << 10,
        max_queue_bytes: 512 << 10,
        ..Options::default()
    };
    let path = dir.path().join("log");
    let log = Log::open(&path, opts.clone()).unwrap();
    let sizes = [100 << 10, 10, 5000, 100 << 10, 0, 70_000, 3];
    let big: Vec<Bytes> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Bytes::from(vec![i as u8 + 1; n]))
        .collect();
    for p in &big {
        let _ = log.append(p.clone()).unwrap();
    }
    log.sync().unwrap();
    log.close().unwrap();
    let log = Log::open(&path, opts).unwrap();
    let got: Vec<Bytes> = read_all(&log).into_iter().map(|r| r.1).collect();
    assert_eq!(got, big);
}

/// A scratch directory for an `io_uring_direct` log, or `None` (said) where there is none.
fn direct_dir() -> Option<tempfile::TempDir> {
    if !backends().contains(&Backend::IoUringDirect) {
        println!("skipped: no io_uring_direct here");
        return None;
    }
    Some(tempfile::tempdir().unwrap())
}

fn chunks_from(log: &Log, from: Lsn, max_bytes: usize) -> Vec<(Lsn, Lsn, Bytes)> {
    let mut reader = log.read_from(from).unwrap();
    let mut out = Vec::new();
    while let Some(c) = reader.next_chunk(max_bytes) {
        let c = c.unwrap();
        out.push((c.first, c.last, c.bytes));
    }
    out
}

/// A log written around the page cache (`io_uring_direct`) reads its sealed segments around it
/// too, into reused windows: chunks of every bound and records from every start come out as the
/// mapped reads of the same files give them, across window and segment boundaries, and a
/// chunk's bytes stay as they were after its window went back to the pool.
#[test]
fn uncached_reads_of_a_direct_log_match_mapped_reads() {
    let Some(dir) = direct_dir() else {
        return;
    };
    let path = dir.path().join("log");
    let options = |backend| Options {
        create_if_missing: true,
        segment_size_bytes: 4 << 20,
        max_record_bytes: 96 << 10,
        max_batch_bytes: 256 << 10,
        max_queue_bytes: 1 << 20,
        backend,
        ..Options::default()
    };
    let big = |i: u64| Bytes::from(vec![(i % 251) as u8; (i * 7919 % (90 << 10)) as usize + 1]);
    let log = Log::open(&path, options(Backend::IoUringDirect)).unwrap();
    for i in 1..=600u64 {
        let _ = log.append(big(i)).unwrap();
    }
    log.sync().unwrap();
    assert!(log.stats().rollovers >= 4, "{:?}", log.stats());
    // Both reads below start from a fresh open of the same files, so that they position
    // through the same index (one built while writing places some entries after write markers).
    log.close().unwrap();
    let log = Log::open(&path, options(Backend::IoUringDirect)).unwrap();
    let starts = [Lsn(1), Lsn(2), Lsn(77), Lsn(301), Lsn(599)];
    let bounds = [1, 5_000, 300_000, 1 << 20, 3 << 20];
    let mut direct = Vec::new();
    for &from in &starts {
        for &bound in &bounds {
            direct.push(chunks_from(&log, from, bound));
        }
    }
    let records: Vec<_> = starts
        .iter()
        .map(|&from| {
            let r = log.read_from(from).unwrap();
            r.map(|r| r.unwrap().payload).collect::<Vec<_>>()
        })
        .collect();
    // Windows go back to the pool as chunks drop, and are refilled by later reads.
    let again = chunks_from(&log, Lsn(1), 1 << 20);
    assert!(
        log.stats().uncached_read_bytes > 4 << 20,
        "{:?}",
        log.stats()
    );
    log.close().unwrap();

    let log = Log::open(&path, options(Backend::Portable)).unwrap();
    let mut i = 0;
    for &from in &starts {
        for &bound in &bounds {
            let mapped = chunks_from(&log, from, bound);
            let shape = |c: &[(Lsn, Lsn, Bytes)]| -> Vec<(Lsn, Lsn, usize)> {
                c.iter().map(|(f, l, b)| (*f, *l, b.len())).collect()
            };
            assert_eq!(
                shape(&direct[i]),
                shape(&mapped),
                "from {from}, bound {bound}"
            );
            assert!(
                direct[i] == mapped,
                "from {from}, bound {bound}: the bytes differ"
            );
            i += 1;
        }
    }
    assert_eq!(again, chunks_from(&log, Lsn(1), 1 << 20));
    assert_eq!(
        log.stats().uncached_read_bytes,
        0,
        "mapped, not read around the cache"
    );
    for (k, &from) in starts.iter().enumerate() {
        let want: Vec<_> = (from.get()..=600).map(big).collect();
        assert_eq!(records[k], want, "records from {from}");
    }
}

/// Damage on disk inside a sealed segment of a direct log is found by an uncached read, as
/// corruption at the damaged record; the records before it read as written.
#[test]
fn uncached_reads_report_damage_in_sealed_segments() {
    let Some(dir) = direct_dir() else {
        return;
    };
    let path = dir.path().join("log");
    let log = Log::open(&path, small(Backend::IoUringDirect)).unwrap();
    for i in 1..=2000u64 {
        let _ = log.append(payload(i)).unwrap();
    }
    log.sync().unwrap();
    let mut segments: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() > 3);
    let victim = &segments[1];
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap();
    let at = std::fs::metadata(victim).unwrap().len() / 3;
    std::os::unix::fs::FileExt::write_all_at(&file, b"\xAA\x55\xAA\x55", at).unwrap();
    let mut read = 0u64;
    let mut damage = None;
    for r in log.read_from(Lsn(1)).unwrap() {
        match r {
            Ok(r) => {
                assert_eq!(r.payload, payload(r.lsn.get()));
                read += 1;
            }
            Err(e) => damage = Some(e),
        }
    }
    match damage {
        Some(Error::Corruption { lsn, .. }) => assert_eq!(lsn, Lsn(read + 1)),
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(read > 0 && read < 2000, "{read}");
}

/// A reader inside a sealed segment of a direct log that a purge removes goes on reading the
/// bytes that segment was written with: the purge unlinks a file a reader read around the page
/// cache instead of reusing it (as it does a mapped one), so a new segment never overwrites
/// what the reader has yet to read, which it would take for damage. Past it, the reader is told
/// the range was purged.
#[test]
fn a_purged_segment_a_direct_reader_is_inside_is_never_reused() {
    let Some(dir) = direct_dir() else {
        return;
    };
    let options = Options {
        create_if_missing: true,
        segment_size_bytes: 2 << 20,
        max_record_bytes: 8 << 10,
        max_batch_bytes: 64 << 10,
        max_queue_bytes: 1 << 20,
        backend: Backend::IoUringDirect,
        // Only purged files in the pool, room for all of them: the next segments reuse them.
        max_free_segments: 8,
        prezero_segments: false,
        ..Options::default()
    };
    let log = Log::open(dir.path().join("log"), options).unwrap();
    let rec = |i: u64| Bytes::from(vec![(i % 251) as u8; 1000]);
    for i in 1..=8000u64 {
        let _ = log.append(rec(i)).unwrap();
    }
    log.sync().unwrap();
    let mut reader = log.read_from(Lsn(1)).unwrap();
    for i in 1..=10u64 {
        assert_eq!(reader.next().unwrap().unwrap().payload, rec(i));
    }
    let purged = log.purge_before(Lsn(6000)).unwrap();
    assert!(purged.segments_removed >= 2, "{purged:?}");
    let recycled_before = log.stats().recycled;
    for _ in 0..8000u64 {
        let _ = log.append(Bytes::from(vec![0xEE; 1000])).unwrap();
    }
    log.sync().unwrap();
    assert!(
        log.stats().recycled > recycled_before,
        "purged files were reused"
    );
    let mut next = 11u64;
    loop {
        match reader.next() {
            Some(Ok(r)) => {
                assert_eq!((r.lsn, r.payload), (Lsn(next), rec(next)));
                next += 1;
            }
            Some(Err(Error::Purged { .. })) => break,
            other => panic!("after LSN {}: {other:?}", next - 1),
        }
    }
    assert!(next > 1200, "the reader went past its first window: {next}");
}

/// `max_batch_bytes` bounds a group-commit write even where the write buffer, sized for one
/// maximum record, would hold more: records queued together go out in writes of at most that
/// size (a record larger than it alone).
#[test]
fn queued_records_are_written_in_batches_of_at_most_max_batch_bytes() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            max_batch_bytes: 4096,
            ..small(backend)
        };
        let log = Log::open(dir.path().join("log"), opts).unwrap();
        let before = log.stats().writes;
        let records = 32;
        let batch = log
            .append_batch((0..records).map(|_| Bytes::from(vec![7u8; 1000])))
            .unwrap();
        batch.wait().unwrap();
        // At most four 1000-byte records with their headers fit in 4096 bytes; the 8 KiB
        // record limit would let a buffer take eight.
        let writes = log.stats().writes - before;
        assert!(writes >= records / 4, "{backend:?}: {writes} writes");
        assert_eq!(read_all(&log).len(), records as usize, "{backend:?}");
    }
}

/// Caller-runs: an appender that waits for its record while the writer thread is idle writes
/// and syncs it itself. A closed loop of one appender leaves the writer idle before every
/// append, so most of its writes are its own (the writer thread, which each append wakes, can
/// win a race now and then; at least one of 50 must go the appender's way). With the option
/// off, the writer thread makes every write. Either way every record is durable, readable and
/// there after a reopen, and the last write is proven by an idle marker or the floor.
#[test]
fn a_waiting_appender_writes_its_own_record_while_the_writer_is_idle() {
    for backend in backends() {
        for caller_runs in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("log");
            let opts = Options {
                caller_runs,
                ..small(backend)
            };
            let log = Log::open(&path, opts.clone()).unwrap();
            let records = 50u64;
            for i in 1..=records {
                let payload = Bytes::from(format!("record {i}"));
                assert_eq!(log.append(payload).unwrap().wait().unwrap(), Lsn(i));
            }
            let stats = log.stats();
            let what = format!("{backend:?}, caller_runs {caller_runs}: {stats:?}");
            assert!(stats.writes >= 1, "{what}");
            if caller_runs {
                assert!(stats.caller_writes >= 1, "{what}");
                assert!(stats.caller_writes <= stats.writes, "{what}");
            } else {
                assert_eq!(stats.caller_writes, 0, "{what}");
            }
            assert_eq!(read_all(&log).len(), records as usize, "{what}");
            log.close().unwrap();
            let log = Log::open(&path, opts).unwrap();
            let back = read_all(&log);
            assert_eq!(back.len(), records as usize, "{what}");
            assert_eq!(back[9].1, Bytes::from("record 10"), "{what}");
        }
    }
}

/// Many appenders wait at once, each writing its own record when it finds the writer thread
/// idle and nothing else queued, the writer thread writing the rest: every acknowledged record
/// is there exactly once, in LSN order, after a reopen.
#[test]
fn many_waiting_appenders_with_caller_runs_lose_nothing() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let log = Arc::new(Log::open(&path, small(backend)).unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    (0..200u64)
                        .map(|i| {
                            let payload = Bytes::from(format!("t{t} r{i}"));
                            (log.append(payload).unwrap().wait().unwrap(), t, i)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut acked: Vec<(Lsn, u64, u64)> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        acked.sort();
        let stats = log.stats();
        Arc::try_unwrap(log).unwrap().close().unwrap();
        let back = read_all(&Log::open(&path, small(backend)).unwrap());
        assert_eq!(back.len(), acked.len(), "{backend:?}: {stats:?}");
        for ((lsn, payload), (acked_lsn, t, i)) in back.iter().zip(&acked) {
            assert_eq!(lsn, acked_lsn, "{backend:?}");
            assert_eq!(payload, &Bytes::from(format!("t{t} r{i}")), "{backend:?}");
        }
    }
}

/// An append into an idle log whose writer thread waits to write an idle marker leaves the
/// writer asleep, expecting its waiter to write the record (caller-runs). A record nobody
/// waits for must still become durable: held without waiting, dropped at once, or awaited as
/// a future. (The bound here is only against a hang; the writer takes such a record within
/// a few milliseconds.)
#[test]
fn records_nobody_waits_for_still_become_durable() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path().join("log"), small(backend)).unwrap();
        let durable_soon = |lsn: Lsn| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while log.durable_lsn() < lsn {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{backend:?}: {lsn} never became durable"
                );
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        };
        for round in 0..20u64 {
            // A waited append first, so that the writer thread is in its marker wait.
            log.append(Bytes::from(format!("waited {round}")))
                .unwrap()
                .wait()
                .unwrap();
            let held = log.append(Bytes::from(format!("held {round}"))).unwrap();
            durable_soon(held.lsn());
            assert_eq!(held.wait().unwrap(), log.durable_lsn());
            log.append(Bytes::from(format!("waited again {round}")))
                .unwrap()
                .wait()
                .unwrap();
            let dropped = log.append(Bytes::from(format!("dropped {round}"))).unwrap();
            let lsn = dropped.lsn();
            drop(dropped);
            durable_soon(lsn);
            log.append(Bytes::from(format!("and again {round}")))
                .unwrap()
                .wait()
                .unwrap();
            let polled = log.append(Bytes::from(format!("polled {round}"))).unwrap();
            let lsn = polled.lsn();
            assert_eq!(block_on(polled.into_future()).unwrap(), lsn);
        }
        assert_eq!(read_all(&log).len(), 120, "{backend:?}");
    }
}

/// Appends `records` of `bytes` each, waiting for each, into a log of 1 MiB segments that
/// pre-zeroes spares; returns its counters once closed (its preallocator stopped).
fn fill_one_by_one(dir: &std::path::Path, records: u64, bytes: usize) -> logship_engine::LogStats {
    let options = Options {
        create_if_missing: true,
        segment_size_bytes: 1 << 20,
        max_record_bytes: 256 << 10,
        max_batch_bytes: 256 << 10,
        max_queue_bytes: 1 << 20,
        prezero_segments: true,
        ..Options::default()
    };
    let log = Log::open(dir.join("log"), options).unwrap();
    for i in 0..records {
        log.append(Bytes::from(vec![(i % 251) as u8; bytes]))
            .unwrap()
            .wait()
            .unwrap();
        if log.stats().rollovers > 0 && bytes < 4096 {
            // Small batches: wait (bounded) for the spare the writer asked for at the first
            // segment's half, so the case does not depend on the preallocator's speed.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while log.stats().prezeroed == 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
    let stats = log.stats();
    log.close().unwrap();
    stats
}

/// Zero-filling a spare writes a segment's bytes once more; under batches of
/// `PREZERO_MAX_AVG_BATCH_BYTES` and more (a catch-up's chunks, large records) writing into
/// fallocated blocks costs the disk less (`logship-bench segment-fill`), and the zero-fill's
/// burst would land beside the commits of a paced catch-up. Small batches still get spares.
#[test]
fn large_batches_fill_fallocated_segments_and_small_ones_get_pre_zeroed_spares() {
    let batch = logship_engine::options::PREZERO_MAX_AVG_BATCH_BYTES as usize;
    let dir = tempfile::tempdir().unwrap();
    let large = fill_one_by_one(dir.path(), 16, batch);
    assert!(large.rollovers >= 2, "{large:?}");
    assert_eq!((large.prezeroed, large.recycled), (0, 0), "{large:?}");
    let dir = tempfile::tempdir().unwrap();
    let small = fill_one_by_one(dir.path(), 3000, 1000);
    assert!(small.rollovers >= 2, "{small:?}");
    assert!(small.prezeroed >= 1 && small.recycled >= 1, "{small:?}");
}

/// A lone commit into a segment's fallocated blocks would pay, on each fdatasync, the blocks'
/// conversion to written: lone writes there carry zeros ahead of them, one stretch at a time,
/// until the segment is written through; into a zero-filled segment none. Every record reads
/// back after a reopen.
#[test]
fn lone_small_writes_zero_ahead_in_fallocated_blocks_only() {
    let segment = 1u64 << 20;
    let options = |prezero_segments| Options {
        create_if_missing: true,
        segment_size_bytes: segment,
        max_record_bytes: 64 << 10,
        prezero_segments,
        ..Options::default()
    };
    let fill = |path: &std::path::Path, prezero, records: u64| {
        let log = Log::open(path, options(prezero)).unwrap();
        for i in 0..records {
            let record = Bytes::from(vec![(i % 251) as u8; 4000]);
            log.append(record).unwrap().wait().unwrap();
        }
        let stats = log.stats();
        log.close().unwrap();
        stats
    };
    // No pre-zeroing: every segment is fallocated, and written through with zeros ahead.
    let dir = tempfile::tempdir().unwrap();
    let stats = fill(&dir.path().join("log"), false, 600);
    assert!(stats.rollovers >= 2 && stats.prezeroed == 0, "{stats:?}");
    assert!(
        stats.zeroed_ahead_bytes >= stats.bytes - segment / 8
            && stats.zeroed_ahead_bytes <= (stats.rollovers + 1) * segment,
        "{stats:?}"
    );
    let log = Log::open(dir.path().join("log"), options(false)).unwrap();
    let all = read_all(&log);
    assert_eq!(all.len(), 600);
    for (i, (lsn, payload)) in all.iter().enumerate() {
        assert_eq!(*lsn, Lsn(i as u64 + 1));
        assert!(payload.len() == 4000 && payload.iter().all(|&b| b == (i % 251) as u8));
    }
    // A new log's first segment is zero-filled at creation: nothing to zero ahead.
    let dir = tempfile::tempdir().unwrap();
    let stats = fill(&dir.path().join("log"), true, 100);
    assert_eq!(
        (stats.rollovers, stats.zeroed_ahead_bytes),
        (0, 0),
        "{stats:?}"
    );
}

/// Resident KiB of this process's maps of files under `dir` (`/proc/self/smaps`).
fn resident_kib_under(dir: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let dir = dir.to_str().expect("a UTF-8 path");
    let mut inside = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            inside = line
                .split_whitespace()
                .nth(5)
                .is_some_and(|p| p.starts_with(dir));
        } else if inside && first == "Rss:" {
            kib += words
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    kib
}

/// A long read of sealed segments in chunks (a catch-up) must not leave the log it read counted
/// in the process's resident memory: a chunk of a mapped segment gives its pages back when it is
/// dropped, and a chunk still held reads the same bytes after another one over the same range
/// gave them back.
/// A log of about 48 MiB in 16 MiB segments of 60 KiB records, all durable (two sealed).
fn three_segments(dir: &std::path::Path) -> Log {
    let options = Options {
        create_if_missing: true,
        segment_size_bytes: 16 << 20,
        max_record_bytes: 64 << 10,
        max_batch_bytes: 1 << 20,
        max_queue_bytes: 8 << 20,
        backend: Backend::Portable,
        ..Options::default()
    };
    let log = Log::open(dir.join("log"), options).unwrap();
    let record = |i: u64| Bytes::from(vec![(i % 251) as u8; 60 << 10]);
    for i in 0..800u64 {
        let _ = log.append(record(i)).unwrap();
    }
    log.sync().unwrap();
    assert!(log.stats().rollovers >= 2, "{:?}", log.stats());
    log
}

#[test]
fn chunks_give_back_the_mapped_pages_they_held() {
    let dir = tempfile::tempdir().unwrap();
    let log = three_segments(dir.path());
    let sum = |b: &Bytes| b.iter().map(|&x| u64::from(x)).sum::<u64>();
    let mut reader = log.read_from(Lsn::ZERO).unwrap();
    let held = reader.next_chunk(1 << 20).unwrap().unwrap();
    let held_sum = sum(&held.bytes);
    let (mut read, mut most_kib) = (held.bytes.len(), 0);
    let mut again = log.read_from(Lsn::ZERO).unwrap();
    while let Some(chunk) = again.next_chunk(1 << 20) {
        let chunk = chunk.unwrap();
        read += chunk.bytes.len();
        assert!(sum(&chunk.bytes) > 0);
        most_kib = most_kib.max(resident_kib_under(dir.path()));
    }
    assert!(read > 40 << 20, "read {read} bytes");
    // The held chunk and the one being read (1 MiB each), with the kernel's fault-around;
    // without the releases, every sealed segment read (32 MiB).
    assert!(most_kib <= 4 << 10, "{most_kib} KiB of the log resident");
    assert_eq!(sum(&held.bytes), held_sum, "a held chunk changed");
}

/// The same for a reader of records (a scan, the digests of ranges): it gives the pages behind
/// it back as it goes, and a record still held reads the same afterwards.
#[test]
fn a_reader_of_records_gives_back_the_pages_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = three_segments(dir.path());
    let mut reader = log.read_from(Lsn::ZERO).unwrap();
    let held = reader.next().unwrap().unwrap();
    let (mut records, mut most_kib) = (1, 0);
    for r in reader {
        let r = r.unwrap();
        assert_eq!(r.payload[0], ((r.lsn.0 - 1) % 251) as u8);
        records += 1;
        most_kib = most_kib.max(resident_kib_under(dir.path()));
    }
    assert_eq!(records, 800);
    // A release step (4 MiB) and the record being read, with the kernel's fault-around;
    // without the releases, every sealed segment read (32 MiB).
    assert!(most_kib <= 6 << 10, "{most_kib} KiB of the log resident");
    assert!(
        held.payload.iter().all(|&b| b == 0),
        "a held record changed"
    );
}
