//! The writer: group commit.
//!
//! One writer owns the write queue (the io_uring ring on the io_uring backends), behind a lock
//! (`WriterCell`) that one thread at a time holds, and lets go of only with nothing taken or in
//! flight. Each turn it takes every record queued so far, copies as many as fit into one
//! buffer, and submits one write plus one fdatasync. While that flush is in flight it builds and
//! submits the next batch (at most `PIPELINE_DEPTH` operations in flight), so a batch's write
//! overlaps the previous flush. No timer: an idle log commits a lone record at once, and does so
//! inline (an io_uring fdatasync always runs on a kernel worker, a hand-off that only pays when
//! there is something to overlap).
//!
//! Caller-runs: the writer thread holds the lock while there is work. While it idles, an
//! appender that waits for its records (`Completion::wait`) and finds only them queued takes
//! the lock and writes them itself, saving the two thread hand-offs (appender → writer thread
//! → appender) that a lone commit otherwise pays; an append that finds the writer thread in its
//! idle-marker wait does not even wake it (the completion owes that wake, and pays it if it is
//! dropped, polled, or finds the writer busy). When the writer thread's last write released a
//! group of waiters, they leave the next write to it, so that it gathers them. A log with an
//! observer has no caller-runs (its waiters never write): only the writer thread writes, and a
//! thread that asks to with `Log::append_replicated_here` (a follower that just appended what its
//! primary sent, and would otherwise hand it to the writer thread).
//!
//! One pause, bounded and adaptive: after a flush that released several waiters, the writer
//! waits (at most a quarter of the recent flush time) for them to append again before it
//! starts the next write, so that a closed loop of N appenders commits in groups of N rather
//! than two alternating groups of N/2 that each wait for two flushes. A lone appender never
//! pauses; appenders that measure slow to return (OS threads outnumbering the CPUs) turn the
//! pause off (see `gather`).
//!
//! Batches complete in any order but are acknowledged in LSN order: the durable watermark moves
//! to a batch's last LSN only when it and every earlier batch are synced. A failed write or
//! fdatasync poisons the log: nothing at or after it is ever reported durable, the fdatasync is
//! never retried (after a failed fsync the kernel may have dropped the dirty pages), and every
//! later call fails until the log is reopened from what is on disk.
//!
//! Every write ends with a marker (format version 2) saying which bytes of the segment were
//! synced when it was submitted; when the writer falls idle after a sync it writes one more
//! marker, unsynced, so that the last write is proven too; a clean close writes the durable
//! floor. Recovery uses them to tell a torn write from corruption by proof, not by distance.
//!
//! Invariants: every segment but the active one was fully synced before the active one was named;
//! at most `WRITES_IN_FLIGHT × buffer` bytes (and one idle marker) are written and unsynced, the
//! window stored in each segment's header, which recovery zeroes past a torn write.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::completion::Watermark;
use crate::error::{Error, Result};
use crate::files::{write_floor, write_segment_header};
use crate::io::{
    Backend, OpenMode, QueueConfig, Vfs, VfsFile, WriteCompletion, WriteOp, WriteQueue,
};
use crate::options::{
    Options, PREZERO_MAX_AVG_BATCH_BYTES, SEGMENT_TAIL_RESERVE_BYTES, WRITES_IN_FLIGHT,
};
use crate::pool::{create_file, write_zeros, FreePool};
use crate::reader::{record_end, LogReader};
use crate::record::{encode_marker, Marker, MarkerKind, MARKER_BYTES, RECORD_HEADER_BYTES};
use crate::recovery::{Recovered, RecoveryReport};
use crate::segment::{segment_name, FORMAT_VERSION, SEGMENT_HEADER_BYTES};
use crate::segment_set::Segment;
use crate::state::{Counters, Item, Queue, QueueState, Shared};
use crate::types::{Epoch, Lsn};

/// Write operations in flight at once: one flushing, one being written behind it.
pub(crate) const PIPELINE_DEPTH: usize = WRITES_IN_FLIGHT;
/// Replicated records' pages are dropped from the page cache in whole aligned grains of this
/// size once durable (`Options::drop_behind_replicated`): one `posix_fadvise` per grain, about
/// 100 µs here, where a catch-up writes 2 MiB in about 3 ms. Aligned, because the page cache
/// holds a file's pages in folios of up to 2 MiB (large writes make large ones), and a drop
/// leaves every folio it covers only in part: drops in page-aligned ranges left two thirds of
/// a follower's pages cached (measured with `mincore`, ext4 on Linux 6.x). The grain holding
/// the log's end is kept: the next write fills it.
const DROP_BEHIND_GRAIN: u64 = 2 << 20;
/// How long the writer waits for more work after a sync before it writes an idle marker. Under
/// load the next write's marker proves the last one anyway; the delay keeps idle markers off the
/// path of a lone appender that commits one record after another.
const IDLE_MARKER_DELAY: Duration = Duration::from_millis(1);
/// While writes keep coming (a lone appender writing its own records: each restarts the
/// delay), the writer thread doubles its wait each time it wakes to find a newer write, up to
/// this: a thread that woke every `IDLE_MARKER_DELAY` to go back to sleep cost the lone
/// appender's commits a wake-up of each node's writer per millisecond. Back to
/// `IDLE_MARKER_DELAY` once a marker is written. The marker is unsynced either way, so the
/// longer wait only delays a proof that waits for writeback anyway.
const IDLE_MARKER_MAX_DELAY: Duration = Duration::from_millis(8);
/// How far past its end a lone write into a segment's unwritten (fallocated) blocks writes
/// zeros ([`Writer::zero_ahead`]). On ext4 an fdatasync after a write into unwritten blocks
/// also commits their conversion to written, on every such write: a lone client's 4 KiB
/// commits into a fallocated segment (the one a burst left, having outrun the preallocator)
/// measured 1.46-1.94x the ideal commit in seven of eighteen quick runs, 1.11-1.18x with the
/// zeros (`docs/benchmarks.md`, "A lone commit into a fallocated segment"). With the zeros,
/// one commit in each 64 KiB pays the conversion (and 64 KiB more of writing) instead of each.
const ZERO_AHEAD_BYTES: u64 = 64 << 10;
/// Page size the zeros end on.
const ZERO_AHEAD_ALIGN: u64 = 4096;
/// A write that released at least this many waiters is followed by a short gathering pause:
/// those appenders are about to append again, and a write started at once would take only
/// the records that arrived during the flush, splitting the appenders into two groups that
/// alternate, each waiting for two flushes. One waiter (a lone appender, or a replication
/// executor) never causes a pause.
const GATHER_MIN_RELEASED: usize = 4;
/// The pause lasts at most this fraction of the recent flush time...
const GATHER_FLUSH_DIVISOR: u32 = 4;
/// ...and never longer than this.
const GATHER_MAX: Duration = Duration::from_micros(250);
/// Pauses that end with the appenders back add one to a score, pauses that time out take two;
/// the writer pauses only while the score is not negative. Appenders that are OS threads
/// measured back in time for fewer than half of the pauses (64 threads waking one another on
/// two CPUs), and the pause then cost more than it gathered; tasks came back in nearly all.
const GATHER_SCORE_MAX: i32 = 8;
const GATHER_SCORE_MIN: i32 = -32;
/// While the score is negative, one opportunity in this many still pauses, to notice when
/// the appenders have become quick to return.
const GATHER_PROBE_EVERY: u32 = 32;

type Started = (Arc<Shared>, [JoinHandle<()>; 3], RecoveryReport);

/// Builds the shared state from a recovered directory and starts the writer and preallocator.
pub(crate) fn start(
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    options: Options,
    recovered: Recovered,
) -> Result<Started> {
    let config = QueueConfig {
        depth: PIPELINE_DEPTH,
        buffer_bytes: options.write_buffer_bytes(),
        dir: Some(dir.clone()),
    };
    let queue = vfs
        .write_queue(&config)
        .map_err(|e| match options.backend {
            Backend::IoUring | Backend::IoUringDirect => Error::BackendUnavailable {
                backend: options.backend.name(),
                reason: e.to_string(),
            },
            _ => Error::io("create write queue", &dir, e),
        })?;
    let backend = queue.name();
    tracing::info!(dir = %dir.display(), backend, "log opened");
    let pool = Arc::new(FreePool::new(
        dir.clone(),
        Arc::clone(&vfs),
        options.segment_size_bytes,
        options.prezero_segments,
        options.max_free_segments,
        recovered.free,
    ));
    let segments: Vec<Arc<Segment>> = recovered.segments.into_iter().map(Arc::new).collect();
    let active = Arc::clone(segments.last().expect("recovery yields a segment"));
    let durable = recovered.next_lsn.prev();
    let shared = Arc::new(Shared {
        dir,
        vfs,
        options,
        queue: Queue {
            state: Mutex::new(QueueState {
                next_lsn: recovered.next_lsn,
                ..QueueState::default()
            }),
            work: Condvar::new(),
            space: Condvar::new(),
        },
        watermark: Arc::new(Watermark::new(durable)),
        segments: RwLock::new(segments),
        pool: Arc::clone(&pool),
        written_lsn: AtomicU64::new(durable.get()),
        counters: Counters::default(),
        backend,
        _lock: recovered.lock,
    });
    let epoch = recovered_epoch(&shared, durable);
    shared.queue.state.lock().epoch = epoch;
    let mut writer = Writer::new(
        Arc::clone(&shared),
        queue,
        active,
        recovered.floor,
        recovered.next_lsn,
        epoch,
    );
    if recovered.report.created && shared.options.prezero_segments {
        // The first segment was zero-filled at creation.
        writer.zeroed_to = writer.active.capacity;
    }
    let threads = spawn(&shared, writer, pool)?;
    Ok((shared, threads, recovered.report))
}

/// The epoch of the log's last record at open (`last`), read back with its CRC checked; 0 when
/// the log holds no record. A last record that cannot be read (damage set aside under salvage)
/// counts as epoch 0 rather than failing the open: the caller that knows the epoch sets it.
fn recovered_epoch(shared: &Arc<Shared>, last: Lsn) -> Epoch {
    if last == Lsn::ZERO {
        return Epoch(0);
    }
    let read =
        LogReader::new(Arc::clone(shared), last, false).and_then(|mut r| r.next().transpose());
    match read {
        Ok(Some(record)) if record.lsn == last => record.epoch,
        Ok(_) | Err(Error::Purged { .. }) => Epoch(0),
        Err(e) => {
            tracing::warn!(dir = %shared.dir.display(), lsn = %last, error = %e, "could not read the last record's epoch; the log's epoch starts at 0");
            Epoch(0)
        }
    }
}

/// Starts the writer thread (and lets waiting appenders run the writer while it idles, unless
/// the options say otherwise), the preallocator and the durability notifier.
fn spawn(shared: &Arc<Shared>, writer: Writer, pool: Arc<FreePool>) -> Result<[JoinHandle<()>; 3]> {
    let cell = Arc::new(WriterCell {
        writer: Mutex::new(writer),
        shared: Arc::clone(shared),
    });
    shared
        .watermark
        .set_runner(Arc::downgrade(&cell), shared.caller_runs());
    let spawn_err = |e| Error::io("spawn thread", &shared.dir, e);
    let for_writer = Arc::clone(shared);
    let w = thread::Builder::new()
        .name("logship-writer".into())
        .spawn(move || run_writer_thread(&for_writer, &cell))
        .map_err(spawn_err)?;
    let p = thread::Builder::new()
        .name("logship-prealloc".into())
        .spawn(move || pool.run())
        .map_err(spawn_err)?;
    let watermark = Arc::clone(&shared.watermark);
    let n = thread::Builder::new()
        .name("logship-notify".into())
        .spawn(move || watermark.run_notifier())
        .map_err(spawn_err)?;
    Ok([w, p, n])
}

/// The writer's state, behind the lock that makes one thread at a time its writer: the writer
/// thread, or (caller-runs) an appender waiting for its record while the writer thread is idle.
/// Whoever holds it lets it go only with nothing taken or in flight.
pub(crate) struct WriterCell {
    writer: Mutex<Writer>,
    shared: Arc<Shared>,
}

impl WriterCell {
    /// Wakes the writer thread if it sleeps while records are queued: the wake an append left
    /// to its waiter (`Log::wake_writer_unless_waited`), paid when the waiter does not write.
    pub(crate) fn wake_thread(&self) {
        let q = &self.shared.queue;
        q.wake_writer(&mut q.state.lock());
    }
}

/// What a thread other than the writer thread writes when it runs the writer.
#[derive(Clone, Copy)]
pub(crate) enum Take {
    /// A waiter's own records, `first..=last`, when nothing else is queued.
    Own { first: Lsn, last: Lsn },
    /// Every record queued, when they take at most this many bytes (`Log::append_replicated_here`).
    All { max_bytes: usize },
}

/// Who is running the writer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runner {
    Thread,
    Caller,
}

/// How a run of the writer ended.
enum Turn {
    /// Nothing queued, taken or in flight.
    Idle,
    /// The log is closing and everything is written.
    Closed,
}

/// Why the idle writer thread woke.
enum Woke {
    Work,
    MarkerDue,
}

/// The writer thread: runs the writer whenever there is work, lets go of it while it waits
/// for more (so that a waiting appender may write meanwhile), writes the idle marker, and at
/// the end the durable floor (clean close) or the poison (a failed write).
fn run_writer_thread(shared: &Arc<Shared>, cell: &WriterCell) {
    loop {
        let (marker_due, gathers) = {
            let mut w = cell.writer.lock();
            if w.finished {
                break;
            }
            match w.run_until_idle(Runner::Thread) {
                Ok(Turn::Idle) => (w.marker_due(), w.gather_target.is_some()),
                Ok(Turn::Closed) => {
                    w.write_floor_at_close();
                    w.finished = true;
                    break;
                }
                Err(cause) => {
                    w.poison(cause);
                    w.finished = true;
                    break;
                }
            }
        };
        if let Woke::MarkerDue = wait_for_work(shared, marker_due, gathers) {
            cell.writer.lock().write_idle_marker_if_idle();
        }
    }
    shared.watermark.close();
}

/// The idle writer thread's wait: for an item or the close, or (when a write is not proven
/// yet) at most `IDLE_MARKER_DELAY` (doubling, up to `IDLE_MARKER_MAX_DELAY`, while writes
/// keep coming), after which the idle marker is due. While `gathers` (its
/// last write released a group of waiters, which it gathers again), appends wake it and their
/// waiters leave the write to it.
fn wait_for_work(shared: &Shared, mut marker_due: bool, gathers: bool) -> Woke {
    let q = &shared.queue;
    let mut st = q.state.lock();
    st.writer_gathers = gathers;
    let mut delay = IDLE_MARKER_DELAY;
    loop {
        if !st.items.is_empty() || st.closing || st.poisoned.is_some() {
            st.writer_waiting = false;
            st.writer_timed = false;
            return Woke::Work;
        }
        // A waiting appender that wrote while this thread slept leaves word here; each such
        // write restarts the delay, so that no idle marker lands between a lone appender's
        // commits.
        marker_due |= std::mem::take(&mut st.marker_due);
        st.writer_waiting = true;
        st.writer_timed = marker_due;
        if !marker_due {
            q.work.wait(&mut st);
        } else if q.work.wait_for(&mut st, delay).timed_out() {
            if st.marker_due {
                delay = (delay * 2).min(IDLE_MARKER_MAX_DELAY);
            } else if st.items.is_empty() && !st.closing {
                st.writer_waiting = false;
                st.writer_timed = false;
                return Woke::MarkerDue;
            }
        }
    }
}

/// Caller-runs: an appender about to wait for its records `first..=last` writes them itself
/// when the writer thread is idle (holds nothing and has nothing in flight) and nothing else
/// is queued, and the writer thread is not about to gather a group (its last write released
/// several waiters, who are appending again: one of them writing its own record would split
/// the group). Returns false at once otherwise: the writer's write in flight then covers the
/// records, or the writer thread takes them next, with whatever other appenders queued.
pub(crate) fn run_for_waiter(cell: &WriterCell, take: Take) -> bool {
    let Some(mut w) = cell.writer.try_lock() else {
        return false;
    };
    if w.finished || w.gather_target.is_some() || !w.take_for_caller(take) {
        return false;
    }
    let shared = Arc::clone(&w.shared);
    let writes = shared.counters.writes.load(Ordering::Relaxed);
    let ran = w.run_until_idle(Runner::Caller);
    let wrote = shared.counters.writes.load(Ordering::Relaxed) - writes;
    shared
        .counters
        .caller_writes
        .fetch_add(wrote, Ordering::Relaxed);
    match ran {
        Ok(_) if wrote > 0 && w.marker_due() => {
            // The writer thread proves this write if nothing follows it; wake it only if it
            // sleeps without a deadline.
            let mut st = shared.queue.state.lock();
            st.marker_due = true;
            if st.writer_waiting && !st.writer_timed {
                st.writer_waiting = false;
                shared.queue.work.notify_one();
            }
        }
        Ok(_) => {}
        Err(cause) => {
            w.poison(cause);
            w.finished = true;
            drop(w);
            // The writer thread finds the log poisoned and finished, and ends, closing the
            // watermark.
            let _st = shared.queue.state.lock();
            shared.queue.work.notify_all();
        }
    }
    true
}

/// One submitted batch.
#[derive(Debug)]
struct Flight {
    token: u64,
    last: Lsn,
    records: u64,
    bytes: u64,
    /// Offset after the write (its marker included) in the active segment.
    end: u64,
    /// It holds replicated records: its pages are dropped once durable.
    replicated: bool,
    outcome: Option<Result<(), String>>,
    /// When it was submitted, for the flush time that bounds a gathering pause.
    submitted: Instant,
}

struct Writer {
    shared: Arc<Shared>,
    queue: Box<dyn WriteQueue>,
    active: Arc<Segment>,
    /// Unsynced-bytes bound written into new segment headers.
    window: u64,
    /// The active segment was made by a writer with a smaller window, or in an older format:
    /// roll before writing.
    must_roll: bool,
    /// Bytes of the active segment known synced.
    synced_offset: u64,
    /// Offset up to which the active segment's blocks are known written (records, zeros of a
    /// pre-zeroed spare, a recycled segment's old bytes, or [`Writer::zero_ahead`]'s zeros);
    /// past it they may be unwritten (fallocated) extents.
    zeroed_to: u64,
    /// The largest `synced_offset` a marker on disk (or in the page cache) states.
    proven_offset: u64,
    /// Offset (a multiple of `DROP_BEHIND_GRAIN`) below which the active segment's pages were
    /// last dropped from the page cache (drop-behind of replicated records).
    dropped_to: u64,
    /// The durable floor on disk.
    floor: Lsn,
    pending: VecDeque<Item>,
    flights: VecDeque<Flight>,
    next_token: u64,
    completions: Vec<WriteCompletion>,
    /// LSN of the next record to write.
    next_lsn: Lsn,
    /// Epoch of the last record copied into a write (at open: of the log's last record), which
    /// markers carry. Every marker follows a write of records, so it is never stale after a
    /// truncation: nothing is written there until the next write.
    last_epoch: Epoch,
    /// Moving average of batch sizes (bytes), to tell a stream of large writes (a follower
    /// catching up, a bulk load) from small synchronous commits.
    avg_batch_bytes: u64,
    /// Moving average of the time from a write's submission to its acknowledgement.
    avg_flush: Duration,
    /// After an acknowledgement that released several waiters: how many items the queue
    /// should hold (those already queued, plus one per released waiter) before the next write.
    gather_target: Option<usize>,
    /// How well recent pauses gathered (see `GATHER_SCORE_MAX`).
    gather_score: i32,
    /// Opportunities skipped since the last pause, while the score is negative.
    gather_skipped: u32,
    /// The writer thread ended (a clean close or a failure): nobody writes any more.
    finished: bool,
}

impl Writer {
    /// The writer of a recovered log whose last segment is `active`, whose durable floor on
    /// disk is `floor`, next to write `next_lsn`, its last record of `last_epoch`.
    fn new(
        shared: Arc<Shared>,
        queue: Box<dyn WriteQueue>,
        active: Arc<Segment>,
        floor: Lsn,
        next_lsn: Lsn,
        last_epoch: Epoch,
    ) -> Writer {
        let window = shared.options.unsynced_window_bytes();
        let synced_offset = active.end_offset();
        Writer {
            must_roll: active.window < window || active.format_version() < FORMAT_VERSION,
            synced_offset,
            proven_offset: synced_offset,
            // Unknown past the recovered end: a pre-zeroed segment gets zeros written once more
            // in front of lone writes until its roll.
            zeroed_to: synced_offset,
            dropped_to: 0,
            floor,
            shared,
            queue,
            active,
            window,
            pending: VecDeque::new(),
            flights: VecDeque::new(),
            next_token: 0,
            avg_batch_bytes: 0,
            avg_flush: Duration::ZERO,
            gather_target: None,
            gather_score: 0,
            gather_skipped: 0,
            finished: false,
            completions: Vec::new(),
            next_lsn,
            last_epoch,
        }
    }

    /// A clean close: everything written is durable; say so in the durable floor, which also
    /// proves the last write and tells a lost end of the log from a clean one.
    fn write_floor_at_close(&mut self) {
        let durable = self.shared.watermark.durable();
        if durable == self.floor || self.next_lsn.prev() != durable {
            return;
        }
        if self.active.format_version() < FORMAT_VERSION {
            // A version-1 log that was only opened stays a version-1 log, floor included.
            return;
        }
        match write_floor(&*self.shared.vfs, &self.shared.dir, durable) {
            Ok(()) => self.floor = durable,
            Err(e) => {
                tracing::warn!(dir = %self.shared.dir.display(), error = %e, "could not write the durable floor at close")
            }
        }
    }

    /// Runs until nothing is queued, taken or in flight; never waits for new work, only for
    /// the completions of its own writes. The writer thread (`Runner::Thread`) takes whatever
    /// is queued each time it runs out; a waiting appender (`Runner::Caller`) writes only what
    /// it took (`take_own_items`) and leaves what arrived since to the writer thread (whose
    /// appenders woke it), so that it returns as soon as its own records are durable. Returns
    /// `Turn::Closed` when the log is closing and everything is written.
    fn run_until_idle(&mut self, runner: Runner) -> Result<Turn, String> {
        loop {
            if self.pending.is_empty() && runner == Runner::Thread && !self.take_items() {
                return Ok(Turn::Closed);
            }
            if self.pending.is_empty() && self.flights.is_empty() {
                return Ok(Turn::Idle);
            }
            self.step(runner)?;
        }
    }

    /// Acts on the first pending item, or waits for a write in flight.
    fn step(&mut self, runner: Runner) -> Result<(), String> {
        match self.pending.front() {
            Some(Item::Truncate { .. }) => {
                self.drain()?;
                let item = self.pending.pop_front().expect("front exists");
                return self.truncate(item);
            }
            Some(Item::Seal { .. }) => {
                self.drain()?;
                let Some(Item::Seal { reply }) = self.pending.pop_front() else {
                    unreachable!("front is a seal");
                };
                let result = self.seal();
                let _ = reply.send(result.clone().map_err(|cause| Error::Poisoned { cause }));
                return result;
            }
            Some(Item::Record { .. }) if self.flights.len() < PIPELINE_DEPTH => {
                if self.flights.is_empty() && runner == Runner::Thread {
                    self.gather();
                }
                self.write_batch()?;
                // Acknowledge whatever already completed before building the next batch: a
                // synchronous queue finishes its operation inside `submit`, and its waiters
                // must not wait for the next batch's flush as well.
                if !self.flights.is_empty() {
                    self.reap(0)?;
                }
                return Ok(());
            }
            _ => {}
        }
        if !self.flights.is_empty() {
            self.reap(1)?;
        }
        Ok(())
    }

    /// Moves queued items into `pending`. Returns false when the log is closing and nothing is
    /// left to do. Never waits.
    fn take_items(&mut self) -> bool {
        let shared = Arc::clone(&self.shared);
        let mut st = shared.queue.state.lock();
        if st.items.is_empty() {
            return !(st.closing && self.flights.is_empty());
        }
        self.pending.extend(st.items.drain(..));
        true
    }

    /// Caller-runs: takes the queue if it holds only records, and with `Take::Own` only the
    /// records `first..=last`, with `Take::All` at most `max_bytes` of them.
    fn take_for_caller(&mut self, take: Take) -> bool {
        debug_assert!(self.pending.is_empty() && self.flights.is_empty());
        let shared = Arc::clone(&self.shared);
        let mut st = shared.queue.state.lock();
        let ours = match (take, st.items.first()) {
            (_, None | Some(Item::Truncate { .. } | Item::Seal { .. })) => false,
            (Take::Own { first, last }, Some(Item::Record { header, .. })) => {
                header_lsn(header) == first
                    && st.next_lsn.prev() == last
                    && st.items.len() as u64 == last.get() + 1 - first.get()
            }
            (Take::All { max_bytes }, Some(Item::Record { .. })) => {
                st.queued_bytes <= max_bytes
                    && st
                        .items
                        .iter()
                        .all(|item| matches!(item, Item::Record { .. }))
            }
        };
        if ours {
            self.pending.extend(st.items.drain(..));
        }
        ours
    }

    /// The last write is synced and no later marker says so yet.
    fn marker_due(&self) -> bool {
        self.synced_offset > self.proven_offset
    }

    /// The idle marker, once the writer has waited `IDLE_MARKER_DELAY` with nothing to do.
    fn write_idle_marker_if_idle(&mut self) {
        if !self.finished && self.marker_due() && self.pending.is_empty() && self.flights.is_empty()
        {
            self.write_idle_marker();
        }
    }

    /// Proves the last write synced, without a sync of its own: a marker after it in the page
    /// cache. A failure here only loses the proof, which recovery then does without.
    fn write_idle_marker(&mut self) {
        if !self.queue.buffered_writes_between_ops() {
            // Only the proof is lost: recovery then does without it, as after a failed marker.
            // Nothing more to try until the next write.
            self.proven_offset = self.synced_offset;
            return;
        }
        let seg = &self.active;
        let at = seg.end_offset();
        if at + MARKER_BYTES as u64 > seg.capacity {
            return;
        }
        let marker = self.marker(MarkerKind::Idle, 0);
        if let Err(e) = seg.file.write_all_at(&encode_marker(&marker), at) {
            tracing::warn!(segment = %seg.path.display(), error = %e, "could not write an idle marker");
            return;
        }
        seg.note_marker(at + MARKER_BYTES as u64);
        self.proven_offset = self.synced_offset;
    }

    fn marker(&self, kind: MarkerKind, records: u32) -> Marker {
        Marker {
            next_lsn: self.next_lsn,
            epoch: self.last_epoch,
            segment_base: self.active.base,
            synced_offset: self.synced_offset,
            durable_lsn: self.shared.watermark.durable(),
            records,
            kind,
        }
    }

    fn write_batch(&mut self) -> Result<(), String> {
        let first_len = match self.pending.front() {
            Some(Item::Record { payload, .. }) => (RECORD_HEADER_BYTES + payload.len()) as u64,
            _ => unreachable!("write_batch starts at a record"),
        };
        let room = self.active.capacity - SEGMENT_TAIL_RESERVE_BYTES;
        if self.must_roll || self.active.end_offset() + first_len > room {
            self.drain()?;
            self.rollover()?;
        }
        let mut buf = self
            .queue
            .take_buffer()
            .expect("a free buffer while fewer than PIPELINE_DEPTH operations are in flight");
        let seg = Arc::clone(&self.active);
        let start = seg.end_offset();
        let (records, replicated) =
            self.fill(&mut buf, seg.capacity - SEGMENT_TAIL_RESERVE_BYTES - start);
        let mut end = start + buf.len() as u64;
        let first = self.next_lsn;
        let last = Lsn(first.get() + records - 1);
        let queue_idle = self.release_queue_bytes((end - start) as usize);
        if let Some(observer) = &self.shared.options.observer {
            observer.on_batch(first, last, buf.as_slice());
        }
        self.next_lsn = last.next();
        let records_u32 =
            u32::try_from(records).expect("a batch buffer holds fewer than 2^32 records");
        buf.extend_from_slice(&encode_marker(&self.marker(MarkerKind::Write, records_u32)));
        self.proven_offset = self.proven_offset.max(self.synced_offset);
        end += MARKER_BYTES as u64;
        seg.note_written(first, start, last, end);
        self.shared.written_lsn.store(last.get(), Ordering::Release);
        let token = self.next_token;
        self.next_token += 1;
        self.flights.push_back(Flight {
            token,
            last,
            records,
            bytes: end - start,
            end,
            replicated,
            outcome: None,
            submitted: Instant::now(),
        });
        self.shared.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.note_batch(end - start, end);
        let lone = queue_idle && self.pending.is_empty() && self.flights.len() == 1;
        if lone {
            self.zero_ahead(&mut buf, end);
        }
        let op = WriteOp {
            token,
            file: Arc::clone(&seg.file),
            offset: start,
            buf,
            sync: true,
        };
        if lone {
            let c = self.queue.run_now(op);
            self.record_outcome(c);
            return self.acknowledge();
        }
        self.queue
            .submit(op)
            .map_err(|e| format!("submitting a write to {}: {e}", seg.path.display()))
    }

    /// Folds a batch of `bytes` into the moving average of batch sizes, and asks for a
    /// pre-zeroed spare once the write's `end` is past half the segment while they are small.
    fn note_batch(&mut self, bytes: u64, end: u64) {
        // The first batch seeds the average: from 0 it would take some fifty batches to pass
        // the threshold, and pre-zero a spare for each segment meanwhile.
        self.avg_batch_bytes = match self.avg_batch_bytes {
            0 => bytes,
            avg => (avg * 7 + bytes) / 8,
        };
        if end > self.active.capacity / 2 && self.batches_small() {
            self.shared.pool.request_spare();
        }
    }

    /// Batches average under [`PREZERO_MAX_AVG_BATCH_BYTES`]: writing zeros ahead of them (a
    /// spare, or [`Writer::zero_ahead`]) costs less than their conversions of unwritten blocks.
    fn batches_small(&self) -> bool {
        self.avg_batch_bytes < PREZERO_MAX_AVG_BATCH_BYTES
    }

    /// A lone write (run to its sync on this thread, nothing else in flight) that ends past
    /// `zeroed_to` carries zeros after its marker, to a page boundary [`ZERO_AHEAD_BYTES`]
    /// further (within the segment and the buffer), so that the next lone writes there
    /// overwrite written blocks. Only while batches are small, by the rule that decides
    /// pre-zeroing ([`PREZERO_MAX_AVG_BATCH_BYTES`]): larger writes amortize the conversion.
    /// The zeros stand for nothing: the segment past its end reads as zeros anyway, and the
    /// next write, which starts at `end`, is issued only once this one is synced, so it cannot
    /// be overwritten by them. Not on a queue that writes around the page cache: it rewrites
    /// the file's last partial block itself. Whatever `prezero_segments` says: at most a
    /// segment's bytes once, and only under lone small writes.
    fn zero_ahead(&mut self, buf: &mut crate::io::IoBuf, end: u64) {
        if end <= self.zeroed_to
            || !self.batches_small()
            || !self.queue.buffered_writes_between_ops()
        {
            return;
        }
        let target = (end + ZERO_AHEAD_BYTES)
            .next_multiple_of(ZERO_AHEAD_ALIGN)
            .min(self.active.capacity);
        // Under `ZERO_AHEAD_BYTES + ZERO_AHEAD_ALIGN`: the cast cannot truncate.
        let zeros = (target.saturating_sub(end) as usize).min(buf.remaining());
        buf.extend_zeros(zeros);
        self.zeroed_to = end + zeros as u64;
        self.shared
            .counters
            .zeroed_ahead_bytes
            .fetch_add(zeros as u64, Ordering::Relaxed);
    }

    /// Copies pending records into `buf` while they fit in it (with their marker), in `room`
    /// bytes of the segment and, but for the first, in `max_batch_bytes`; returns how many, and
    /// whether any of them was replicated.
    fn fill(&mut self, buf: &mut crate::io::IoBuf, room: u64) -> (u64, bool) {
        let mut records = 0u64;
        let mut any_replicated = false;
        let max_batch = self.shared.options.max_batch_bytes;
        while let Some(Item::Record {
            header,
            payload,
            replicated,
        }) = self.pending.front()
        {
            let len = RECORD_HEADER_BYTES + payload.len();
            if len + MARKER_BYTES > buf.remaining()
                || (buf.len() + len) as u64 > room
                || (records > 0 && buf.len() + len > max_batch)
            {
                break;
            }
            debug_assert_eq!(
                header_lsn(header).get(),
                self.next_lsn.get() + records,
                "records reach the writer out of LSN order"
            );
            buf.extend_from_slice(header);
            buf.extend_from_slice(payload);
            self.last_epoch = header_epoch(header);
            any_replicated |= *replicated;
            records += 1;
            self.pending.pop_front();
        }
        assert!(records > 0, "a batch holds at least one record");
        (records, any_replicated)
    }

    /// Bytes copied into a write buffer no longer count against the queue bound. Returns
    /// whether the queue is empty.
    fn release_queue_bytes(&self, bytes: usize) -> bool {
        let q = &self.shared.queue;
        let mut st = q.state.lock();
        st.queued_bytes = st.queued_bytes.saturating_sub(bytes);
        let idle = st.items.is_empty();
        let wakers: Vec<_> = st.space_wakers.drain(..).collect();
        drop(st);
        q.space.notify_all();
        for w in wakers {
            w.wake();
        }
        idle
    }

    /// Reaps at least `min` completions and acknowledges every batch that is durable in order.
    fn reap(&mut self, min: usize) -> Result<(), String> {
        let mut done = std::mem::take(&mut self.completions);
        let waited = self.queue.wait(min, &mut done);
        for c in done.drain(..) {
            self.record_outcome(c);
        }
        self.completions = done;
        waited.map_err(|e| format!("waiting for write completions: {e}"))?;
        self.acknowledge()
    }

    fn record_outcome(&mut self, c: WriteCompletion) {
        let path = &self.active.path;
        let flight = self
            .flights
            .iter_mut()
            .find(|f| f.token == c.token)
            .expect("a completion matches a flight");
        flight.outcome = Some(c.result.map_err(|(step, e)| {
            let op = match step {
                crate::io::FailedStep::Write => "write",
                crate::io::FailedStep::Sync => "fdatasync",
            };
            format!("{op} of {} failed: {e}", path.display())
        }));
    }

    /// Advances the durable watermark over every leading batch that completed; a failed one
    /// stops everything.
    fn acknowledge(&mut self) -> Result<(), String> {
        let mut advanced = None;
        let mut replicated_to = None;
        let mut released = 0;
        let queued = self.queued_items();
        while let Some(f) = self.flights.front() {
            match &f.outcome {
                None => break,
                Some(Err(cause)) => return Err(cause.clone()),
                Some(Ok(())) => {
                    let c = &self.shared.counters;
                    c.records.fetch_add(f.records, Ordering::Relaxed);
                    c.bytes.fetch_add(f.bytes, Ordering::Relaxed);
                    c.syncs.fetch_add(1, Ordering::Relaxed);
                    released += self.shared.watermark.advance(f.last);
                    self.avg_flush = (self.avg_flush * 7 + f.submitted.elapsed()) / 8;
                    advanced = Some(f.last);
                    self.synced_offset = f.end;
                    if f.replicated {
                        replicated_to = Some(f.end);
                    }
                    self.flights.pop_front();
                }
            }
        }
        if let (Some(durable), Some(observer)) = (advanced, &self.shared.options.observer) {
            observer.on_durable(durable);
        }
        if released >= GATHER_MIN_RELEASED {
            self.gather_target = Some(queued + released);
        }
        if let Some(end) = replicated_to {
            self.drop_behind(end);
        }
        Ok(())
    }

    /// Drop-behind: once the active segment is durable up to `end` through replicated records,
    /// asks the page cache to drop the whole grains ([`DROP_BEHIND_GRAIN`]) below `end` not
    /// dropped yet (`Options::drop_behind_replicated`), after the waiters were released. Not
    /// on a queue that writes around the page cache: it leaves nothing there to drop.
    fn drop_behind(&mut self, end: u64) {
        let to = end / DROP_BEHIND_GRAIN * DROP_BEHIND_GRAIN;
        if !self.shared.options.drop_behind_replicated
            || to <= self.dropped_to
            || !self.queue.buffered_writes_between_ops()
        {
            return;
        }
        let from = self.dropped_to;
        self.dropped_to = to;
        match self.active.file.drop_cache(from, to - from) {
            Ok(()) => {
                self.shared
                    .counters
                    .dropped_behind_bytes
                    .fetch_add(to - from, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "dropping written pages failed"),
        }
    }

    /// Items waiting for a write: taken by the writer or still in the queue.
    fn queued_items(&self) -> usize {
        self.pending.len() + self.shared.queue.state.lock().items.len()
    }

    /// The gathering pause after a write that released several waiters: waits until they have
    /// appended again (each wakes the writer only once the queue holds the target) or a
    /// fraction of the recent flush time has passed, whichever comes first.
    fn gather(&mut self) {
        let Some(target) = self.gather_target.take() else {
            return;
        };
        if self.gather_score < 0 {
            self.gather_skipped += 1;
            if self.gather_skipped < GATHER_PROBE_EVERY {
                return;
            }
        }
        self.gather_skipped = 0;
        let limit = (self.avg_flush / GATHER_FLUSH_DIVISOR).min(GATHER_MAX);
        let deadline = Instant::now() + limit;
        let q = &self.shared.queue;
        let mut st = q.state.lock();
        while self.pending.len() + st.items.len() < target && !st.closing {
            st.writer_wants = target - self.pending.len();
            st.writer_waiting = true;
            if q.work.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        st.writer_waiting = false;
        st.writer_wants = 0;
        self.pending.extend(st.items.drain(..));
        drop(st);
        self.gather_score = if self.pending.len() >= target {
            (self.gather_score + 1).min(GATHER_SCORE_MAX)
        } else {
            (self.gather_score - 2).max(GATHER_SCORE_MIN)
        };
        self.shared
            .watermark
            .set_wake_inline(self.gather_score >= 0);
    }

    fn drain(&mut self) -> Result<(), String> {
        while !self.flights.is_empty() {
            self.reap(1)?;
        }
        Ok(())
    }

    /// Rolls over on request, unless the active segment is empty.
    fn seal(&mut self) -> Result<(), String> {
        if self.active.last_lsn() < self.active.base {
            return Ok(());
        }
        self.rollover()
    }

    /// Starts a new segment at `next_lsn`. Everything before it is synced (the caller drained),
    /// so only the last segment can ever hold a torn write.
    fn rollover(&mut self) -> Result<(), String> {
        assert!(self.flights.is_empty(), "rollover with writes in flight");
        let base = self.next_lsn;
        let old = Arc::clone(&self.active);
        let replaces_empty = old.last_lsn() < old.base;
        let (path, file, capacity, pooled) = self
            .prepare_segment_file(base)
            .map_err(|e| format!("starting segment {base}: {e}"))?;
        let seg = Arc::new(Segment::new(
            base,
            path,
            file,
            capacity,
            self.window,
            base.prev(),
            SEGMENT_HEADER_BYTES as u64,
            Vec::new(),
        ));
        {
            let mut segs = self.shared.segments.write();
            if replaces_empty {
                // An empty segment with the same base was just replaced by rename.
                segs.pop();
            } else {
                old.seal();
            }
            segs.push(Arc::clone(&seg));
        }
        self.active = seg;
        self.must_roll = false;
        // The header was synced: nothing else of the new segment is written yet.
        self.synced_offset = SEGMENT_HEADER_BYTES as u64;
        self.proven_offset = self.synced_offset;
        // A pooled file is a pre-zeroed spare or a purged segment, written through; a new one
        // is fallocated past its header.
        self.zeroed_to = if pooled { capacity } else { self.synced_offset };
        self.dropped_to = 0;
        self.shared
            .counters
            .rollovers
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes a pooled file (or creates one), writes and syncs the header, then names it. Returns
    /// its path, file, capacity and whether it came from the pool.
    fn prepare_segment_file(&self, base: Lsn) -> Result<(PathBuf, Arc<dyn VfsFile>, u64, bool)> {
        let vfs = &*self.shared.vfs;
        let dir = &self.shared.dir;
        let size = self.shared.options.segment_size_bytes;
        let (src, file, pooled) = match self.shared.pool.take() {
            Some(p) => {
                let f = vfs
                    .open(&p, OpenMode::ReadWrite)
                    .map_err(|e| Error::io("open", &p, e))?;
                f.allocate(size)
                    .map_err(|e| Error::io("fallocate", &p, e))?;
                self.shared
                    .counters
                    .recycled
                    .fetch_add(1, Ordering::Relaxed);
                (p, f, true)
            }
            None => {
                let p = self.shared.pool.fresh_path();
                let f =
                    create_file(vfs, &p, size, false).map_err(|e| Error::io("create", &p, e))?;
                (p, f, false)
            }
        };
        let capacity = file
            .len()
            .map_err(|e| Error::io("stat", &src, e))?
            .max(size);
        write_segment_header(&*file, base, capacity, self.window)?;
        let dest = dir.join(segment_name(base));
        vfs.rename(&src, &dest)
            .map_err(|e| Error::io("rename", &src, e))?;
        vfs.sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
        Ok((dest, file, capacity, pooled))
    }

    fn truncate(&mut self, item: Item) -> Result<(), String> {
        let Item::Truncate {
            cut,
            generation,
            reply,
        } = item
        else {
            unreachable!("truncate takes a truncate item");
        };
        match self.truncate_files(cut) {
            Ok(()) => {
                self.shared.watermark.truncated(cut, generation);
                if let Some(observer) = &self.shared.options.observer {
                    observer.on_truncate(cut);
                }
                // The caller may have given up waiting; that is not the writer's problem.
                let _ = reply.send(Ok(()));
                Ok(())
            }
            Err(e) => {
                let cause = format!("truncating after LSN {cut}: {e}");
                let _ = reply.send(Err(Error::Poisoned {
                    cause: cause.clone(),
                }));
                Err(cause)
            }
        }
    }

    /// Deletes the segments after the one holding `cut + 1` (newest first, syncing the directory
    /// after each, so a crash never leaves a hole), then zeroes that segment's tail and syncs.
    fn truncate_files(&mut self, cut: Lsn) -> Result<()> {
        assert!(self.flights.is_empty(), "truncate with writes in flight");
        let vfs = &*self.shared.vfs;
        let dir = &self.shared.dir;
        if self.floor > cut {
            // Never let the floor vouch for records removed on purpose.
            write_floor(vfs, dir, cut)?;
            self.floor = cut;
        }
        let seg = {
            let mut segs = self.shared.segments.write();
            let keep = segs.partition_point(|s| s.base <= cut.next());
            assert!(
                keep >= 1,
                "truncate below the first segment was refused by the caller"
            );
            while segs.len() > keep {
                let s = segs.pop().expect("len > keep");
                vfs.remove_file(&s.path)
                    .map_err(|e| Error::io("remove", &s.path, e))?;
                vfs.sync_dir(dir)
                    .map_err(|e| Error::io("fsync directory", dir, e))?;
            }
            Arc::clone(&segs[keep - 1])
        };
        let offset = if cut < seg.base {
            SEGMENT_HEADER_BYTES as u64
        } else {
            record_end(&seg, cut)?
        };
        zero_tail(&*seg.file, offset, seg.end_offset())?;
        seg.cut(cut, offset);
        self.must_roll = seg.window < self.window || seg.format_version() < FORMAT_VERSION;
        self.synced_offset = offset;
        self.proven_offset = offset;
        self.zeroed_to = offset;
        self.dropped_to = self
            .dropped_to
            .min(offset / DROP_BEHIND_GRAIN * DROP_BEHIND_GRAIN);
        self.active = seg;
        self.next_lsn = cut.next();
        self.shared.written_lsn.store(cut.get(), Ordering::Release);
        Ok(())
    }

    fn poison(&mut self, cause: String) {
        tracing::error!(dir = %self.shared.dir.display(), %cause, "log poisoned: every pending and later append fails until the log is reopened");
        // Appends are refused before any waiter learns of the failure, so a caller that sees
        // `Poisoned` from a completion can never get an append accepted afterwards.
        let items: Vec<Item> = {
            let mut st = self.shared.queue.state.lock();
            st.poisoned = Some(cause.clone());
            st.queued_bytes = 0;
            for w in st.space_wakers.drain(..) {
                w.wake();
            }
            self.shared.queue.space.notify_all();
            st.items.drain(..).collect()
        };
        self.shared.watermark.poison(cause.clone());
        if let Some(observer) = &self.shared.options.observer {
            observer.on_failure(&cause);
        }
        for item in self.pending.drain(..).chain(items) {
            if let Item::Truncate { reply, .. } | Item::Seal { reply } = item {
                let _ = reply.send(Err(Error::Poisoned {
                    cause: cause.clone(),
                }));
            }
        }
        // The kernel owns in-flight buffers until their completions arrive.
        let mut sink = Vec::new();
        while self.queue.in_flight() > 0 {
            if self.queue.wait(1, &mut sink).is_err() {
                break;
            }
        }
    }
}

/// The LSN field of an encoded record header.
fn header_lsn(header: &[u8; RECORD_HEADER_BYTES]) -> Lsn {
    let mut field = [0u8; 8];
    field.copy_from_slice(&header[8..16]);
    Lsn(u64::from_le_bytes(field))
}

/// The epoch field of an encoded record header.
fn header_epoch(header: &[u8; RECORD_HEADER_BYTES]) -> Epoch {
    let mut field = [0u8; 8];
    field.copy_from_slice(&header[16..24]);
    Epoch(u64::from_le_bytes(field))
}

/// Zeroes `[from, to)` and syncs.
fn zero_tail(file: &dyn VfsFile, from: u64, to: u64) -> Result<()> {
    if from >= to {
        return Ok(());
    }
    write_zeros(file, from, to, None, &|| false)
        .map_err(|e| Error::io("zero truncated tail", file.path(), e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", file.path(), e))
}
