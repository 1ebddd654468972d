//! Completions: how an appender learns that its record is durable.
//!
//! The writer publishes one durable watermark (the highest LSN whose record and every record
//! before it are fdatasync'ed) rather than signalling each record: a group commit of thousands of
//! records is one store and one broadcast. A [`Completion`] compares its LSN with the watermark;
//! synchronous waiters park on a condition variable, async waiters leave a `Waker`.
//!
//! Truncation makes LSNs reusable, so the watermark can move back. Each completion remembers the
//! log's truncation generation: a record of an older generation was made durable before the
//! truncation ran (the writer drains every earlier record first), so it completes `Ok`.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::types::Lsn;
use crate::writer::{run_for_waiter, Take, WriterCell};

/// Waiters a woken thread wakes in turn, so that waking a whole group commit is a tree spread
/// over the woken threads instead of a loop on the writer thread.
const WAKE_FANOUT: usize = 2;
/// Async wakers the writer wakes itself; larger groups go to the notifier thread so the writer
/// can start the next write instead of paying one wake-up per task (a lone commit keeps its
/// latency: no hand-off).
const INLINE_TASK_WAKES: usize = 4;

/// The shared durable watermark.
///
/// `durable` and `generation` are atomics so a completion can check itself without a lock.
/// Waiters that must sleep register in a queue kept in `(generation, lsn)` order: advancing the
/// watermark takes exactly the satisfied ones (a prefix), so a waiter whose record is in a later
/// batch is never woken early. Appenders register in about the order they appended, so a new
/// waiter almost always goes at the back, and a release is one drain of the front.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    durable: AtomicU64,
    generation: AtomicU64,
    failed: AtomicBool,
    /// The writer pauses for the appenders it releases (see `writer::gather`): it has nothing
    /// to do meanwhile, so it wakes every task itself instead of handing them to the notifier.
    wake_inline: AtomicBool,
    waiters: Mutex<Waiters>,
    handoff: Mutex<Handoff>,
    /// The writer, for a thread to write queued records itself while the writer thread is
    /// idle: a waiter its own (caller-runs, when `waiters_write`), or
    /// `Log::append_replicated_here`.
    runner: OnceLock<Weak<WriterCell>>,
    waiters_write: AtomicBool,
    handoff_cond: parking_lot::Condvar,
}

/// Wakers for the notifier thread.
#[derive(Debug, Default)]
struct Handoff {
    wakers: Vec<Waker>,
    stop: bool,
}

#[derive(Debug, Default)]
struct Waiters {
    /// Sorted by [`Waiter::key`].
    queue: VecDeque<Waiter>,
    /// Satisfied threads not woken yet; woken threads wake these in turn.
    ready: Vec<SleepingThread>,
    poisoned: Option<String>,
    closed: bool,
}

#[derive(Debug)]
struct Waiter {
    generation: u64,
    lsn: Lsn,
    wake: Wake,
}

#[derive(Debug)]
enum Wake {
    Thread(SleepingThread),
    Task(Waker),
}

/// A thread in [`Completion::wait`]. `waiting` turns false when it leaves, so wakers skip it:
/// a thread that left can no longer pass the wake-up chain on, but one that is still waiting
/// will, because every thread calls `help_wake` on its way out.
#[derive(Debug)]
struct SleepingThread {
    thread: Thread,
    waiting: Arc<AtomicBool>,
}

impl Waiter {
    /// The queue's order: a later generation's LSNs come after every earlier one's.
    fn key(&self) -> (u64, Lsn) {
        (self.generation, self.lsn)
    }
}

/// What a completion sees when it looks.
enum Status {
    Done(Result<Lsn>),
    Pending,
}

impl Watermark {
    pub(crate) fn new(durable: Lsn) -> Watermark {
        Watermark {
            durable: AtomicU64::new(durable.get()),
            ..Watermark::default()
        }
    }

    pub(crate) fn durable(&self) -> Lsn {
        Lsn(self.durable.load(Ordering::Acquire))
    }

    /// Success is decided from the atomics alone; `generation` is read before `durable`, and
    /// `truncated` stores them in the opposite order, so a new-generation completion never sees
    /// the old generation's larger watermark.
    fn succeeded(&self, lsn: Lsn, generation: u64) -> bool {
        let g = self.generation.load(Ordering::Acquire);
        let d = self.durable.load(Ordering::Acquire);
        generation < g || (generation == g && lsn.get() <= d)
    }

    fn status(&self, lsn: Lsn, generation: u64) -> Status {
        if self.succeeded(lsn, generation) {
            return Status::Done(Ok(lsn));
        }
        if !self.failed.load(Ordering::Acquire) {
            return Status::Pending;
        }
        let w = self.waiters.lock();
        Self::failure(&w).map_or(Status::Pending, |e| Status::Done(Err(e)))
    }

    fn failure(w: &Waiters) -> Option<Error> {
        if let Some(cause) = &w.poisoned {
            return Some(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        w.closed.then_some(Error::Closed)
    }

    /// Advances the watermark and wakes exactly the waiters it satisfies; returns how many.
    pub(crate) fn advance(&self, durable: Lsn) -> usize {
        let old = self.durable.swap(durable.get(), Ordering::AcqRel);
        assert!(
            durable.get() >= old,
            "durable LSN regressed: old={old} new={durable}"
        );
        self.release_satisfied()
    }

    /// After a truncation to `cut`: a new generation whose watermark is `cut`.
    pub(crate) fn truncated(&self, cut: Lsn, generation: u64) {
        assert!(
            generation > self.generation.load(Ordering::Acquire),
            "generation must grow"
        );
        self.durable.store(cut.get(), Ordering::Release);
        self.generation.store(generation, Ordering::Release);
        self.release_satisfied();
    }

    /// Fails every pending completion with `Poisoned`.
    pub(crate) fn poison(&self, cause: String) {
        let mut w = self.waiters.lock();
        if w.poisoned.is_none() {
            w.poisoned = Some(cause);
        }
        self.fail_all(w);
    }

    /// Fails every pending completion with `Closed` (the writer exited).
    pub(crate) fn close(&self) {
        let mut w = self.waiters.lock();
        w.closed = true;
        self.fail_all(w);
    }

    fn fail_all(&self, mut w: parking_lot::MutexGuard<'_, Waiters>) {
        self.failed.store(true, Ordering::Release);
        let all: Vec<Waiter> = w.queue.drain(..).collect();
        drop(w);
        for waiter in all {
            waiter.wake.wake();
        }
    }

    /// Wakes the waiters the watermark satisfies; returns how many.
    fn release_satisfied(&self) -> usize {
        let g = self.generation.load(Ordering::Acquire);
        let d = self.durable.load(Ordering::Acquire);
        let mut tasks = Vec::new();
        let mut threads = 0;
        {
            let mut w = self.waiters.lock();
            let Waiters { queue, ready, .. } = &mut *w;
            let satisfied =
                |o: &Waiter| o.generation < g || (o.generation == g && o.lsn.get() <= d);
            let n = queue.partition_point(satisfied);
            tasks.reserve(n);
            for waiter in queue.drain(..n) {
                match waiter.wake {
                    Wake::Task(t) => tasks.push(t),
                    Wake::Thread(t) => {
                        threads += 1;
                        ready.push(t);
                    }
                }
            }
        }
        self.help_wake();
        let released = threads + tasks.len();
        if tasks.len() <= INLINE_TASK_WAKES || self.wake_inline.load(Ordering::Relaxed) {
            for t in tasks {
                t.wake();
            }
            return released;
        }
        let mut h = self.handoff.lock();
        let idle = h.wakers.is_empty();
        h.wakers.append(&mut tasks);
        drop(h);
        if idle {
            self.handoff_cond.notify_one();
        }
        released
    }

    /// Lets other threads run the writer while it is idle; waiters too if `waiters_write`
    /// (caller-runs).
    pub(crate) fn set_runner(&self, cell: Weak<WriterCell>, waiters_write: bool) {
        let _ = self.runner.set(cell);
        self.waiters_write.store(waiters_write, Ordering::Release);
    }

    /// Writes every queued record on this thread if the writer thread is idle and they take
    /// at most `max_bytes`.
    pub(crate) fn write_queued_here(&self, max_bytes: usize) -> bool {
        self.runner
            .get()
            .and_then(Weak::upgrade)
            .is_some_and(|cell| run_for_waiter(&cell, Take::All { max_bytes }))
    }

    /// Caller-runs: writes `first..=last` on this thread if the writer is idle and nothing
    /// else is queued; otherwise pays the wake the append left owing, if it did.
    fn run_writer_here(&self, first: Lsn, last: Lsn, owes_wake: bool) {
        if self.waiters_write.load(Ordering::Acquire) {
            self.write_own_here(first, last, owes_wake);
        } else if owes_wake {
            // A replicated append that more were to follow leaves a wake owing without
            // caller-runs too.
            self.wake_writer_thread();
        }
    }

    /// Writes `first..=last` on this thread if the writer is idle and nothing else is queued
    /// (whatever `waiters_write` says: [`Completion::write_here`] asks for it); returns whether
    /// it did, and otherwise pays the wake the append left owing, if it did.
    fn write_own_here(&self, first: Lsn, last: Lsn, owes_wake: bool) -> bool {
        let Some(cell) = self.runner.get().and_then(Weak::upgrade) else {
            return false;
        };
        let wrote = run_for_waiter(&cell, Take::Own { first, last });
        if !wrote && owes_wake {
            cell.wake_thread();
        }
        wrote
    }

    /// Pays the wake an append left owing (its completion was dropped or polled, or the
    /// appender did not write after all).
    pub(crate) fn wake_writer_thread(&self) {
        if let Some(cell) = self.runner.get().and_then(Weak::upgrade) {
            cell.wake_thread();
        }
    }

    /// Whether the writer wakes every task itself (while it gathers its appenders after a
    /// flush) or hands large groups to the notifier thread.
    pub(crate) fn set_wake_inline(&self, inline: bool) {
        self.wake_inline.store(inline, Ordering::Relaxed);
    }

    /// The notifier thread: wakes the async waiters handed off by `release_satisfied`.
    pub(crate) fn run_notifier(&self) {
        let mut batch = Vec::new();
        loop {
            {
                let mut h = self.handoff.lock();
                while h.wakers.is_empty() && !h.stop {
                    self.handoff_cond.wait(&mut h);
                }
                if h.wakers.is_empty() {
                    return;
                }
                std::mem::swap(&mut batch, &mut h.wakers);
            }
            for w in batch.drain(..) {
                w.wake();
            }
        }
    }

    /// Stops the notifier thread once it has woken everything handed to it.
    pub(crate) fn stop_notifier(&self) {
        self.handoff.lock().stop = true;
        self.handoff_cond.notify_all();
    }

    /// Wakes up to `WAKE_FANOUT` satisfied threads that are still waiting.
    fn help_wake(&self) {
        // On the stack: every release and every woken thread comes here, mostly to find none.
        let mut batch: [Option<Thread>; WAKE_FANOUT] = Default::default();
        {
            let mut w = self.waiters.lock();
            for slot in &mut batch {
                *slot = loop {
                    match w.ready.pop() {
                        Some(t) if t.waiting.load(Ordering::Acquire) => break Some(t.thread),
                        Some(_) => {}
                        None => break None,
                    }
                };
            }
        }
        for t in batch.into_iter().flatten() {
            t.unpark();
        }
    }

    /// Registers a waiter unless the outcome is already known (checked under the lock, so a
    /// concurrent advance cannot be missed).
    fn register(&self, lsn: Lsn, generation: u64, wake: Wake) -> Status {
        let mut w = self.waiters.lock();
        if self.succeeded(lsn, generation) {
            return Status::Done(Ok(lsn));
        }
        if let Some(e) = Self::failure(&w) {
            return Status::Done(Err(e));
        }
        let waiter = Waiter {
            generation,
            lsn,
            wake,
        };
        // Usually the last so far; otherwise after every waiter of the same or an earlier key.
        if w.queue.back().is_none_or(|o| o.key() <= waiter.key()) {
            w.queue.push_back(waiter);
        } else {
            let at = w.queue.partition_point(|o| o.key() <= waiter.key());
            w.queue.insert(at, waiter);
        }
        Status::Pending
    }
}

impl Wake {
    fn wake(self) {
        match self {
            Wake::Thread(t) => t.thread.unpark(),
            Wake::Task(w) => w.wake(),
        }
    }
}

/// Resolves when a record is durable (or the log fails). Wait with [`Completion::wait`] or
/// `.await` it from any async runtime.
#[derive(Debug)]
#[must_use = "a completion does nothing unless waited on or awaited"]
pub struct Completion {
    lsn: Lsn,
    /// The first LSN of the append this completes (`lsn` but for a batch): the records its
    /// waiter may write itself (caller-runs) when nothing else is queued.
    first: Lsn,
    generation: u64,
    /// `None` for completions that were resolved at creation (buffered durability).
    watermark: Option<Arc<Watermark>>,
    /// The append did not wake the writer thread, expecting this completion's waiter to write
    /// the record (caller-runs): waiting pays it, and so do polling and dropping.
    owes_wake: bool,
}

impl Completion {
    pub(crate) fn new(lsn: Lsn, generation: u64, watermark: Arc<Watermark>) -> Completion {
        Completion {
            lsn,
            first: lsn,
            generation,
            watermark: Some(watermark),
            owes_wake: false,
        }
    }

    /// This completion owes the writer thread the wake its append skipped.
    pub(crate) fn owing_wake(mut self, owes: bool) -> Completion {
        self.owes_wake = owes && self.watermark.is_some();
        self
    }

    pub(crate) fn ready(lsn: Lsn) -> Completion {
        Completion {
            lsn,
            first: lsn,
            generation: 0,
            watermark: None,
            owes_wake: false,
        }
    }

    /// The LSN this completion waits for.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    fn status(&self) -> Status {
        match &self.watermark {
            None => Status::Done(Ok(self.lsn)),
            Some(w) => w.status(self.lsn, self.generation),
        }
    }

    /// True once the outcome is known.
    pub fn is_done(&self) -> bool {
        matches!(self.status(), Status::Done(_))
    }

    /// Caller-runs without the wait: writes this append's records on the calling thread,
    /// with their fdatasync, if the log's writer is idle and nothing else is queued, and
    /// returns whether it did (a log's observer then runs on this thread too). Otherwise the
    /// writer thread takes them, woken now if the append left the wake to this completion
    /// ([`Log::append_to_write_here`](crate::Log::append_to_write_here)). For a thread that
    /// answers the append later rather than waiting for it (a network port serving one
    /// client): it saves the hand-offs to the writer thread and back, at the price of being
    /// busy for one flush. Either way the outcome is then known as ever
    /// ([`Completion::is_done`], [`Completion::wait`], `.await`); a write that failed poisons
    /// the log and fails this completion.
    pub fn write_here(&mut self) -> bool {
        let owes_wake = std::mem::take(&mut self.owes_wake);
        let Some(w) = &self.watermark else {
            return false;
        };
        if w.succeeded(self.lsn, self.generation) {
            if owes_wake {
                w.wake_writer_thread();
            }
            return false;
        }
        w.write_own_here(self.first, self.lsn, owes_wake)
    }

    /// Blocks until the record is durable.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if a write or fdatasync failed before the record was durable;
    /// [`Error::Closed`] if the log shut down first.
    pub fn wait(mut self) -> Result<Lsn> {
        let owes_wake = std::mem::take(&mut self.owes_wake);
        let Some(w) = &self.watermark else {
            return Ok(self.lsn);
        };
        if let Status::Done(r) = w.status(self.lsn, self.generation) {
            return r;
        }
        w.run_writer_here(self.first, self.lsn, owes_wake);
        if let Status::Done(r) = w.status(self.lsn, self.generation) {
            return r;
        }
        let waiting = Arc::new(AtomicBool::new(true));
        let me = Wake::Thread(SleepingThread {
            thread: std::thread::current(),
            waiting: Arc::clone(&waiting),
        });
        let result = match w.register(self.lsn, self.generation, me) {
            Status::Done(r) => r,
            Status::Pending => loop {
                // Spurious unparks are possible (std's contract); the loop re-checks.
                std::thread::park();
                if let Status::Done(r) = w.status(self.lsn, self.generation) {
                    break r;
                }
            },
        };
        waiting.store(false, Ordering::Release);
        w.help_wake();
        result
    }
}

impl Future for Completion {
    type Output = Result<Lsn>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Lsn>> {
        if std::mem::take(&mut self.owes_wake) {
            if let Some(w) = &self.watermark {
                w.wake_writer_thread();
            }
        }
        let Some(w) = &self.watermark else {
            return Poll::Ready(Ok(self.lsn));
        };
        if let Status::Done(r) = w.status(self.lsn, self.generation) {
            return Poll::Ready(r);
        }
        // Each poll registers its current waker; an extra wake of a stale one is harmless.
        match w.register(self.lsn, self.generation, Wake::Task(cx.waker().clone())) {
            Status::Done(r) => Poll::Ready(r),
            Status::Pending => Poll::Pending,
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if self.owes_wake {
            if let Some(w) = &self.watermark {
                w.wake_writer_thread();
            }
        }
    }
}

/// One appended record: its LSN, known at once, and its durability completion.
#[derive(Debug)]
#[must_use = "an append's durability is only known by waiting on it"]
pub struct Append {
    completion: Completion,
}

impl Append {
    pub(crate) fn new(completion: Completion) -> Append {
        Append { completion }
    }

    /// The record's LSN.
    pub fn lsn(&self) -> Lsn {
        self.completion.lsn
    }

    /// Blocks until durable; see [`Completion::wait`].
    ///
    /// # Errors
    /// As [`Completion::wait`].
    pub fn wait(self) -> Result<Lsn> {
        self.completion.wait()
    }

    /// Writes the record on this thread if the writer is idle; see [`Completion::write_here`].
    pub fn write_here(&mut self) -> bool {
        self.completion.write_here()
    }

    /// The completion, to await or wait on later.
    pub fn into_completion(self) -> Completion {
        self.completion
    }
}

impl IntoFuture for Append {
    type Output = Result<Lsn>;
    type IntoFuture = Completion;

    fn into_future(self) -> Completion {
        self.completion
    }
}

/// A batch of appended records with dense LSNs `first..=last`, durable together.
#[derive(Debug)]
#[must_use = "an append's durability is only known by waiting on it"]
pub struct AppendBatch {
    first: Lsn,
    completion: Completion,
}

impl AppendBatch {
    pub(crate) fn new(first: Lsn, mut completion: Completion) -> AppendBatch {
        completion.first = first;
        AppendBatch { first, completion }
    }

    /// LSN of the first record.
    pub fn first_lsn(&self) -> Lsn {
        self.first
    }

    /// LSN of the last record.
    pub fn last_lsn(&self) -> Lsn {
        self.completion.lsn
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.completion.lsn.get() + 1 - self.first.get()
    }

    /// True if the batch holds no record (never: an empty batch is refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks until every record of the batch is durable; returns the last LSN.
    ///
    /// # Errors
    /// As [`Completion::wait`].
    pub fn wait(self) -> Result<Lsn> {
        self.completion.wait()
    }

    /// Writes the batch on this thread if the writer is idle; see [`Completion::write_here`].
    pub fn write_here(&mut self) -> bool {
        self.completion.write_here()
    }

    /// The completion of the last record.
    pub fn into_completion(self) -> Completion {
        self.completion
    }
}

impl IntoFuture for AppendBatch {
    type Output = Result<Lsn>;
    type IntoFuture = Completion;

    fn into_future(self) -> Completion {
        self.completion
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake as TaskWake;

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl TaskWake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Registers a task waiter for `lsn` of `generation`; its wake count.
    fn waiter(w: &Watermark, generation: u64, lsn: u64) -> Arc<Count> {
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        assert!(matches!(
            w.register(Lsn(lsn), generation, Wake::Task(waker)),
            Status::Pending
        ));
        count
    }

    fn woken(counts: &[&Arc<Count>]) -> Vec<usize> {
        counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect()
    }

    #[test]
    fn an_advance_wakes_exactly_the_waiters_it_satisfies_whatever_order_they_came_in() {
        let w = Watermark::new(Lsn(0));
        let (w5, w3, w9, w7) = (
            waiter(&w, 0, 5),
            waiter(&w, 0, 3),
            waiter(&w, 0, 9),
            waiter(&w, 0, 7),
        );
        assert_eq!(w.advance(Lsn(5)), 2);
        assert_eq!(woken(&[&w3, &w5, &w7, &w9]), [1, 1, 0, 0]);
        // A waiter already satisfied is not registered.
        let waker = Waker::from(Arc::new(Count::default()));
        assert!(matches!(
            w.register(Lsn(4), 0, Wake::Task(waker)),
            Status::Done(Ok(Lsn(4)))
        ));
        // A truncation to 6 starts generation 1: the older generation's records were made
        // durable before it ran, so its waiters complete; the new generation's wait for LSNs.
        let (n8, n10) = (waiter(&w, 0, 8), waiter(&w, 0, 10));
        w.truncated(Lsn(6), 1);
        assert_eq!(woken(&[&w7, &w9, &n8, &n10]), [1, 1, 1, 1]);
        let (g8, g7) = (waiter(&w, 1, 8), waiter(&w, 1, 7));
        assert_eq!(w.advance(Lsn(7)), 1);
        assert_eq!(woken(&[&g7, &g8]), [1, 0]);
        assert_eq!(w.advance(Lsn(8)), 1);
        assert_eq!(woken(&[&g7, &g8]), [1, 1]);
        assert!(w.waiters.lock().queue.is_empty());
    }
}
