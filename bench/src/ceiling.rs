//! The hand-off ceiling of group commit: what N closed-loop appenders can commit per second on
//! this machine when nothing but the hand-offs and the disk stands between them, measured in the
//! same run as the cases it bounds.
//!
//! There is no log: an appender "appends" by counting itself into a shared queue (one short
//! critical section on a `std::sync::Mutex`), then sleeps until a single writer thread releases
//! its group. The writer waits until every appender still running has queued (the largest group
//! a closed loop can form: a writer that took whatever was queued would split 64 appenders into
//! two alternating groups of about 32, as the engine's did before it learnt to pause), does one
//! real `pwrite` of the group's payload (records × record size, no headers) at the next offset
//! of a prewritten scratch file plus an `fdatasync`, and wakes every appender of the group. So
//! the figure is the group-commit limit with the real disk, the real scheduler, full groups and
//! ideal hand-offs: no encoding, no checksums, no pipelining.
//!
//! The disk of the project's machines changes speed from one second to the next, so each
//! ceiling runs right before the case it bounds, and its result also gives the time per cycle
//! that was not the flush ([`CeilingResult::handoff_us`]): the hand-off cost, which the disk's
//! speed does not change.
//!
//! Three ways to wake a group ([`Wake`]): OS threads parked on one `Condvar` that the writer
//! broadcasts to, OS threads the writer unparks one by one, and tokio tasks on a multi-thread
//! runtime with one worker per CPU (as the cases' tasks mode) whose `Waker`s the writer calls.
//! The writer is an OS thread in every mode, as the engine's is.
//!
//! Each appender has at most one record in flight, so no group exceeds the appender count (an
//! assertion), and the writer releases exactly the records the appenders see complete
//! ([`Totals`], checked by the tests).

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use serde::Serialize;

use crate::latency::{Recorder, Summary};
use crate::machine::process_cpu_time;
use crate::plan::{Mode, CEILING_FILE_BYTES};
use crate::raw;
use crate::workload::{PHASE_MEASURE, PHASE_STOP, PHASE_WARM};

/// How the writer wakes the appenders of a group it has made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Wake {
    /// OS threads wait on one `Condvar`; the writer calls `notify_all` (a futex broadcast).
    Broadcast,
    /// OS threads `park`; the writer `unpark`s each thread of the group.
    Unpark,
    /// Tokio tasks; the writer calls each task's `Waker`.
    Wakers,
}

impl Wake {
    /// The name used in case names.
    pub fn name(self) -> &'static str {
        match self {
            Wake::Broadcast => "broadcast",
            Wake::Unpark => "unpark",
            Wake::Wakers => "wakers",
        }
    }

    /// The appender mode this way of waking belongs to.
    pub fn mode(self) -> Mode {
        match self {
            Wake::Broadcast | Wake::Unpark => Mode::Threads,
            Wake::Wakers => Mode::Tasks,
        }
    }
}

/// What one ceiling measured.
#[derive(Clone, Debug, Serialize)]
pub struct CeilingResult {
    /// `ceiling::group_commit/size=100,appenders=64,wake=unpark` and the like.
    pub name: String,
    /// The appender mode it bounds.
    pub mode: Mode,
    /// How the writer woke each group.
    pub wake: Wake,
    /// Appenders (threads or tasks).
    pub appenders: usize,
    /// Payload bytes per record (each flush writes records × this).
    pub record_bytes: usize,
    /// Records released within the measured window.
    pub records: u64,
    /// Flushes (pwrite + fdatasync) released within the window.
    pub flushes: u64,
    /// The measured window in seconds.
    pub elapsed_s: f64,
    /// Records released per second: the ceiling.
    pub records_per_s: f64,
    /// Records per flush.
    pub records_per_flush: f64,
    /// Latency of the writer's pwrite + fdatasync.
    pub flush: Summary,
    /// Mean time from one flush's start to the next's (window ÷ flushes), µs.
    pub cycle_us: f64,
    /// `cycle_us` minus the mean flush: the time per group spent waking the group and gathering
    /// the next, µs.
    pub handoff_us: f64,
    /// CPU time of the whole process per second of the window (1.0 = one CPU busy).
    pub cpu_cores: f64,
}

/// The ceilings of one run; each is `None` when no case of its mode with 64 appenders ran.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ceilings {
    /// Threads woken by a `Condvar` broadcast.
    pub threads_broadcast: Option<CeilingResult>,
    /// Threads unparked one by one.
    pub threads_unpark: Option<CeilingResult>,
    /// Tokio tasks woken by their `Waker`s.
    pub tasks: Option<CeilingResult>,
}

impl Ceilings {
    /// The ceiling of `mode`: for threads, the way of waking them with the shorter hand-off
    /// (`handoff_us`; the rates also depend on how fast the disk was in each one's second).
    pub fn for_mode(&self, mode: Mode) -> Option<&CeilingResult> {
        match mode {
            Mode::Threads => [&self.threads_broadcast, &self.threads_unpark]
                .into_iter()
                .flatten()
                .min_by(|a, b| a.handoff_us.total_cmp(&b.handoff_us)),
            Mode::Tasks => self.tasks.as_ref(),
        }
    }

    /// Every ceiling measured, in run order.
    pub fn all(&self) -> impl Iterator<Item = &CeilingResult> {
        [&self.threads_broadcast, &self.threads_unpark, &self.tasks]
            .into_iter()
            .flatten()
    }
}

/// How long each ceiling runs, and its shape.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Appenders (threads or tasks).
    pub appenders: usize,
    /// Payload bytes per record.
    pub record_bytes: usize,
    /// Unmeasured run before the window (the appenders start during it).
    pub warm_up: Duration,
    /// The measured window.
    pub duration: Duration,
}

/// Counts over the whole run (warm-up and stop included), for checking the hand-offs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Records the writer released.
    pub released: u64,
    /// Commits the appenders saw complete.
    pub completed: u64,
    /// Largest group the writer took.
    pub largest_group: u64,
}

/// Measures the ceiling of each way of waking in `wakes`, in `dir`, on one prewritten scratch
/// file that is removed afterwards.
///
/// # Errors
/// On any I/O failure, or when the tokio runtime does not start.
pub fn measure(dir: &Path, shape: Shape, wakes: &[Wake]) -> anyhow::Result<Vec<CeilingResult>> {
    let path = dir.join("ceiling-scratch");
    let mut flusher = Flusher::create(&path, shape.appenders * shape.record_bytes)?;
    let results = wakes
        .iter()
        .map(|&wake| run(&mut flusher, shape, wake).map(|(result, _)| result))
        .collect();
    drop(flusher);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    results
}

/// The prewritten file the writer flushes into.
struct Flusher {
    file: File,
    block: Vec<u8>,
    offset: u64,
}

impl Flusher {
    /// Prewrites [`CEILING_FILE_BYTES`] at `path`; flushes write at most `max_bytes`.
    fn create(path: &Path, max_bytes: usize) -> anyhow::Result<Flusher> {
        Ok(Flusher {
            file: raw::prewrite(path, CEILING_FILE_BYTES)?,
            block: raw::pattern(max_bytes),
            offset: 0,
        })
    }

    /// Writes `records` records' payload at the next offset and fdatasyncs; returns the latency.
    fn flush(&mut self, records: u64, record_bytes: usize) -> anyhow::Result<Duration> {
        let len = usize::try_from(records)
            .map_or(usize::MAX, |r| r.saturating_mul(record_bytes))
            .min(self.block.len());
        if self.offset + len as u64 > CEILING_FILE_BYTES {
            self.offset = 0;
        }
        let t0 = Instant::now();
        self.file
            .write_all_at(&self.block[..len], self.offset)
            .context("ceiling pwrite")?;
        self.file.sync_data().context("ceiling fdatasync")?;
        self.offset += len as u64;
        Ok(t0.elapsed())
    }
}

/// What the appenders and the writer share.
struct Shared {
    state: Mutex<State>,
    /// Groups released so far; an appender whose record went into group `g` (0-based) is done
    /// once this exceeds `g`. Stored under `state`'s lock, so that a `Condvar` waiter that checks
    /// it under the lock cannot miss the broadcast.
    released: AtomicU64,
    /// The writer waits here for records.
    work: Condvar,
    /// Broadcast appenders wait here for their group.
    done: Condvar,
    phase: AtomicU8,
}

struct State {
    /// Records queued for the next group.
    queued: u64,
    /// Groups the writer has taken; a record queued now goes into group `taken`.
    taken: u64,
    /// Appenders that have not returned.
    active: usize,
    /// The writer waits on `work` (an appender that queues then notifies it once).
    writer_waiting: bool,
    /// Unpark appenders of the next group.
    threads: Vec<Thread>,
    /// Task appenders of the next group.
    slots: Vec<Arc<WakerSlot>>,
}

/// Where a task appender leaves its `Waker` for the writer.
#[derive(Default)]
struct WakerSlot {
    waker: Mutex<Option<Waker>>,
}

impl Shared {
    fn new(appenders: usize) -> Shared {
        Shared {
            state: Mutex::new(State {
                queued: 0,
                taken: 0,
                active: appenders,
                writer_waiting: false,
                threads: Vec::with_capacity(appenders),
                slots: Vec::with_capacity(appenders),
            }),
            released: AtomicU64::new(0),
            work: Condvar::new(),
            done: Condvar::new(),
            phase: AtomicU8::new(PHASE_WARM),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one record under `state` and returns its group; wakes the writer if it waits and
    /// the group is complete.
    fn queue(&self, state: &mut State) -> u64 {
        state.queued += 1;
        self.wake_writer_if_complete(state);
        state.taken
    }

    /// The writer waits for every running appender to queue (see the module's comment).
    fn wake_writer_if_complete(&self, state: &mut State) {
        if state.writer_waiting && state.queued >= state.active as u64 {
            state.writer_waiting = false;
            self.work.notify_one();
        }
    }

    fn is_released(&self, group: u64) -> bool {
        self.released.load(Ordering::Acquire) > group
    }

    /// An appender returns.
    fn leave(&self) {
        let mut state = self.lock();
        state.active -= 1;
        self.wake_writer_if_complete(&mut state);
    }
}

/// One group taken by the writer: its records and whom to wake.
#[derive(Default)]
struct Group {
    records: u64,
    threads: Vec<Thread>,
    slots: Vec<Arc<WakerSlot>>,
}

/// Runs one ceiling: the writer, the appenders, a warm-up, then the measured window.
fn run(flusher: &mut Flusher, shape: Shape, wake: Wake) -> anyhow::Result<(CeilingResult, Totals)> {
    let shared = Arc::new(Shared::new(shape.appenders));
    let runtime = match wake.mode() {
        Mode::Tasks => Some(task_runtime()?),
        Mode::Threads => None,
    };
    let on_threads: &Shared = &shared;
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || writer(on_threads, flusher, wake, shape));
        let appenders: Vec<_> = (0..shape.appenders)
            .map(|_| match &runtime {
                Some(rt) => Appender::Task(rt.spawn(task_appender(Arc::clone(&shared)))),
                None => Appender::Thread(scope.spawn(move || thread_appender(on_threads, wake))),
            })
            .collect();
        std::thread::sleep(shape.warm_up);
        let (cpu_before, t0) = (process_cpu_time(), Instant::now());
        shared.phase.store(PHASE_MEASURE, Ordering::SeqCst);
        std::thread::sleep(shape.duration);
        shared.phase.store(PHASE_STOP, Ordering::SeqCst);
        let window = t0.elapsed();
        let cpu_cores = (process_cpu_time() - cpu_before).as_secs_f64() / window.as_secs_f64();
        let mut completed = 0;
        for a in appenders {
            completed += a.join(runtime.as_ref())?;
        }
        let count = writer
            .join()
            .map_err(|_| anyhow!("ceiling writer panicked"))??;
        let totals = Totals {
            released: count.released,
            completed,
            largest_group: count.largest_group,
        };
        Ok((count.result(shape, wake, window, cpu_cores), totals))
    })
}

/// A multi-thread runtime with one worker per CPU, as the cases' tasks mode.
fn task_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("bench-ceiling-worker")
        .build()
        .context("starting the tokio runtime")
}

/// A running appender.
enum Appender<'scope> {
    Thread(std::thread::ScopedJoinHandle<'scope, u64>),
    Task(tokio::task::JoinHandle<u64>),
}

impl Appender<'_> {
    /// Waits for the appender (after the stop phase); returns the commits it saw complete.
    fn join(self, runtime: Option<&tokio::runtime::Runtime>) -> anyhow::Result<u64> {
        match (self, runtime) {
            (Appender::Thread(t), _) => t.join().map_err(|_| anyhow!("ceiling appender panicked")),
            (Appender::Task(t), Some(rt)) => rt
                .block_on(t)
                .map_err(|e| anyhow!("ceiling appender task: {e}")),
            (Appender::Task(_), None) => Err(anyhow!("a ceiling task without its runtime")),
        }
    }
}

/// What the writer counted.
#[derive(Default)]
struct WriterCount {
    records: u64,
    flushes: u64,
    flush: Recorder,
    released: u64,
    largest_group: u64,
}

impl WriterCount {
    fn result(self, shape: Shape, wake: Wake, window: Duration, cpu_cores: f64) -> CeilingResult {
        let elapsed_s = window.as_secs_f64();
        let flush = self.flush.summary();
        let cycle_us = elapsed_s * 1e6 / self.flushes.max(1) as f64;
        let mode = match wake.mode() {
            Mode::Threads => String::new(),
            Mode::Tasks => ",mode=tasks".into(),
        };
        CeilingResult {
            name: format!(
                "ceiling::group_commit/size={},appenders={}{mode},wake={}",
                shape.record_bytes,
                shape.appenders,
                wake.name()
            ),
            mode: wake.mode(),
            wake,
            appenders: shape.appenders,
            record_bytes: shape.record_bytes,
            records: self.records,
            flushes: self.flushes,
            elapsed_s,
            records_per_s: self.records as f64 / elapsed_s,
            records_per_flush: self.records as f64 / self.flushes.max(1) as f64,
            flush,
            cycle_us,
            handoff_us: cycle_us - flush.mean_us,
            cpu_cores,
        }
    }
}

/// The writer: take the group, flush, wake the group; until every appender returned.
/// A group counts if it is released in the measure phase (as the cases count the records made
/// durable between two snapshots of the engine's counters).
fn writer(
    shared: &Shared,
    flusher: &mut Flusher,
    wake: Wake,
    shape: Shape,
) -> anyhow::Result<WriterCount> {
    let mut count = WriterCount::default();
    let mut group = Group::default();
    while take(shared, &mut group) {
        assert!(
            group.records <= shape.appenders as u64,
            "a group of {} records from {} appenders",
            group.records,
            shape.appenders
        );
        let latency = match flusher.flush(group.records, shape.record_bytes) {
            Ok(latency) => latency,
            Err(e) => {
                // No later flush will come: stop the appenders and release them all.
                shared.phase.store(PHASE_STOP, Ordering::SeqCst);
                release(shared, wake, &mut group);
                drain(shared, wake, &mut group);
                return Err(e);
            }
        };
        release(shared, wake, &mut group);
        if shared.phase.load(Ordering::Relaxed) == PHASE_MEASURE {
            count.records += group.records;
            count.flushes += 1;
            count.flush.record(latency);
        }
        count.released += group.records;
        count.largest_group = count.largest_group.max(group.records);
    }
    Ok(count)
}

/// Waits until every running appender has queued and takes their records into `group`;
/// `false` once no appender is left.
fn take(shared: &Shared, group: &mut Group) -> bool {
    let mut state = shared.lock();
    while state.queued < state.active as u64 {
        state.writer_waiting = true;
        state = shared
            .work
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner);
    }
    if state.queued == 0 {
        return false;
    }
    group.records = std::mem::take(&mut state.queued);
    state.taken += 1;
    std::mem::swap(&mut group.threads, &mut state.threads);
    std::mem::swap(&mut group.slots, &mut state.slots);
    true
}

/// Marks the taken group released and wakes its appenders. `group` keeps its (emptied) vectors,
/// which `take` swaps back in, so that no group allocates.
fn release(shared: &Shared, wake: Wake, group: &mut Group) {
    {
        let _state = shared.lock();
        shared.released.fetch_add(1, Ordering::Release);
    }
    match wake {
        Wake::Broadcast => shared.done.notify_all(),
        Wake::Unpark => group.threads.drain(..).for_each(|t| t.unpark()),
        Wake::Wakers => {
            for slot in group.slots.drain(..) {
                let waker = slot.waker.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(w) = waker.as_ref() {
                    w.wake_by_ref();
                }
            }
        }
    }
}

/// After a failed flush: releases groups until every appender has returned.
fn drain(shared: &Shared, wake: Wake, group: &mut Group) {
    while take(shared, group) {
        release(shared, wake, group);
    }
}

/// A thread appender: queue a record, sleep until its group is released, repeat until the stop
/// phase. Returns the commits it saw complete.
fn thread_appender(shared: &Shared, wake: Wake) -> u64 {
    let me = std::thread::current();
    let mut completed = 0;
    while shared.phase.load(Ordering::Relaxed) != PHASE_STOP {
        let mut state = shared.lock();
        let group = shared.queue(&mut state);
        if wake == Wake::Unpark {
            state.threads.push(me.clone());
            drop(state);
            while !shared.is_released(group) {
                std::thread::park();
            }
        } else {
            let state = shared
                .done
                .wait_while(state, |_| !shared.is_released(group))
                .unwrap_or_else(PoisonError::into_inner);
            drop(state);
        }
        completed += 1;
    }
    shared.leave();
    completed
}

/// A task appender: as [`thread_appender`], awaiting a [`Commit`].
async fn task_appender(shared: Arc<Shared>) -> u64 {
    let slot = Arc::new(WakerSlot::default());
    let mut completed = 0;
    while shared.phase.load(Ordering::Relaxed) != PHASE_STOP {
        Commit {
            shared: &shared,
            slot: &slot,
            group: None,
        }
        .await;
        completed += 1;
    }
    shared.leave();
    completed
}

/// One record of a task appender: queued on first poll, ready once its group is released.
struct Commit<'a> {
    shared: &'a Shared,
    slot: &'a Arc<WakerSlot>,
    group: Option<u64>,
}

impl Future for Commit<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // The waker is in the slot before the record can be taken, and the writer reads the
        // slot after it marks the group released: a poll that stores a new waker and then finds
        // the group not released will be woken.
        {
            let mut waker = this
                .slot
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match waker.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        match this.group {
            Some(group) if this.shared.is_released(group) => Poll::Ready(()),
            Some(_) => Poll::Pending,
            None => {
                let mut state = this.shared.lock();
                this.group = Some(this.shared.queue(&mut state));
                state.slots.push(Arc::clone(this.slot));
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(wake: Wake) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let shape = Shape {
            appenders: 8,
            record_bytes: 100,
            warm_up: Duration::from_millis(20),
            duration: Duration::from_millis(100),
        };
        let mut flusher = Flusher::create(
            &dir.path().join("scratch"),
            shape.appenders * shape.record_bytes,
        )
        .expect("a scratch file");
        let (result, totals) = run(&mut flusher, shape, wake).expect("the ceiling runs");
        assert!(totals.released > 0, "{wake:?}: nothing released");
        assert_eq!(
            totals.released, totals.completed,
            "{wake:?}: the writer released {} records, the appenders saw {} complete",
            totals.released, totals.completed
        );
        assert!(totals.largest_group <= shape.appenders as u64);
        // A group released in the measure phase was taken before any appender could leave.
        assert_eq!(
            result.records,
            result.flushes * shape.appenders as u64,
            "{wake:?}: a measured group was not full"
        );
        assert!(result.records <= totals.released);
        assert_eq!(result.flush.count, result.flushes);
        assert_eq!(result.mode, wake.mode());
    }

    #[test]
    fn every_released_record_completes_once_with_broadcast() {
        check(Wake::Broadcast);
    }

    #[test]
    fn every_released_record_completes_once_with_unpark() {
        check(Wake::Unpark);
    }

    #[test]
    fn every_released_record_completes_once_with_wakers() {
        check(Wake::Wakers);
    }

    #[test]
    fn the_threads_ceiling_is_the_way_of_waking_with_the_shorter_hand_off() {
        let ceiling = |wake: Wake, records_per_s: f64, handoff_us: f64| CeilingResult {
            name: wake.name().into(),
            mode: wake.mode(),
            wake,
            appenders: 64,
            record_bytes: 100,
            records: 0,
            flushes: 0,
            elapsed_s: 1.0,
            records_per_s,
            records_per_flush: 0.0,
            flush: Recorder::new().summary(),
            cycle_us: 0.0,
            handoff_us,
            cpu_cores: 0.0,
        };
        let ceilings = Ceilings {
            // Unpark released more records per second (on a faster disk), broadcast hands off
            // faster.
            threads_broadcast: Some(ceiling(Wake::Broadcast, 2.0, 250.0)),
            threads_unpark: Some(ceiling(Wake::Unpark, 3.0, 400.0)),
            tasks: Some(ceiling(Wake::Wakers, 1.0, 50.0)),
        };
        let threads = ceilings.for_mode(Mode::Threads).map(|c| c.wake);
        assert_eq!(threads, Some(Wake::Broadcast));
        let tasks = ceilings.for_mode(Mode::Tasks).map(|c| c.wake);
        assert_eq!(tasks, Some(Wake::Wakers));
    }
}
