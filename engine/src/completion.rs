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

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::types::Lsn;

/// The shared durable watermark.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    state: Mutex<WatermarkState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct WatermarkState {
    durable: Lsn,
    generation: u64,
    poisoned: Option<String>,
    closed: bool,
    wakers: Vec<(Lsn, u64, Waker)>,
}

/// What a completion sees when it looks.
enum Status {
    Done(Result<Lsn>),
    Pending,
}

impl WatermarkState {
    fn status(&self, lsn: Lsn, generation: u64) -> Status {
        if generation < self.generation || (generation == self.generation && lsn <= self.durable) {
            return Status::Done(Ok(lsn));
        }
        if let Some(cause) = &self.poisoned {
            return Status::Done(Err(Error::Poisoned {
                cause: cause.clone(),
            }));
        }
        if self.closed {
            return Status::Done(Err(Error::Closed));
        }
        Status::Pending
    }
}

impl Watermark {
    pub(crate) fn new(durable: Lsn) -> Watermark {
        Watermark {
            state: Mutex::new(WatermarkState {
                durable,
                ..WatermarkState::default()
            }),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn durable(&self) -> Lsn {
        self.state.lock().durable
    }

    /// Advances the watermark and wakes everyone it satisfies.
    pub(crate) fn advance(&self, durable: Lsn) {
        let mut st = self.state.lock();
        assert!(
            durable >= st.durable,
            "durable LSN regressed: old={} new={durable}",
            st.durable
        );
        st.durable = durable;
        self.wake(st);
    }

    /// After a truncation to `cut`: a new generation whose watermark is `cut`.
    pub(crate) fn truncated(&self, cut: Lsn, generation: u64) {
        let mut st = self.state.lock();
        assert!(generation > st.generation, "generation must grow");
        st.generation = generation;
        st.durable = cut;
        self.wake(st);
    }

    /// Fails every pending completion with `Poisoned`.
    pub(crate) fn poison(&self, cause: String) {
        let mut st = self.state.lock();
        if st.poisoned.is_none() {
            st.poisoned = Some(cause);
        }
        self.wake(st);
    }

    /// Fails every pending completion with `Closed` (the writer exited).
    pub(crate) fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        self.wake(st);
    }

    fn wake(&self, mut st: parking_lot::MutexGuard<'_, WatermarkState>) {
        let mut ready = Vec::new();
        let mut i = 0;
        while i < st.wakers.len() {
            let (lsn, generation, _) = &st.wakers[i];
            if matches!(st.status(*lsn, *generation), Status::Done(_)) {
                ready.push(st.wakers.swap_remove(i).2);
            } else {
                i += 1;
            }
        }
        drop(st);
        self.cond.notify_all();
        for w in ready {
            w.wake();
        }
    }
}

/// Resolves when a record is durable (or the log fails). Wait with [`Completion::wait`] or
/// `.await` it from any async runtime.
#[derive(Debug)]
#[must_use = "a completion does nothing unless waited on or awaited"]
pub struct Completion {
    lsn: Lsn,
    generation: u64,
    /// `None` for completions that were resolved at creation (buffered durability).
    watermark: Option<Arc<Watermark>>,
}

impl Completion {
    pub(crate) fn new(lsn: Lsn, generation: u64, watermark: Arc<Watermark>) -> Completion {
        Completion {
            lsn,
            generation,
            watermark: Some(watermark),
        }
    }

    pub(crate) fn ready(lsn: Lsn) -> Completion {
        Completion {
            lsn,
            generation: 0,
            watermark: None,
        }
    }

    /// The LSN this completion waits for.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    fn status(&self) -> Status {
        match &self.watermark {
            None => Status::Done(Ok(self.lsn)),
            Some(w) => w.state.lock().status(self.lsn, self.generation),
        }
    }

    /// True once the outcome is known.
    pub fn is_done(&self) -> bool {
        matches!(self.status(), Status::Done(_))
    }

    /// Blocks until the record is durable.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if a write or fdatasync failed before the record was durable;
    /// [`Error::Closed`] if the log shut down first.
    pub fn wait(self) -> Result<Lsn> {
        let Some(w) = &self.watermark else {
            return Ok(self.lsn);
        };
        let mut st = w.state.lock();
        loop {
            if let Status::Done(r) = st.status(self.lsn, self.generation) {
                return r;
            }
            w.cond.wait(&mut st);
        }
    }
}

impl Future for Completion {
    type Output = Result<Lsn>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Lsn>> {
        let Some(w) = &self.watermark else {
            return Poll::Ready(Ok(self.lsn));
        };
        let mut st = w.state.lock();
        match st.status(self.lsn, self.generation) {
            Status::Done(r) => Poll::Ready(r),
            Status::Pending => {
                // Replace a waker this completion registered on an earlier poll.
                let waker = cx.waker();
                if let Some(slot) = st
                    .wakers
                    .iter_mut()
                    .find(|(l, g, w)| *l == self.lsn && *g == self.generation && w.will_wake(waker))
                {
                    slot.2 = waker.clone();
                } else {
                    st.wakers.push((self.lsn, self.generation, waker.clone()));
                }
                Poll::Pending
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
    pub(crate) fn new(first: Lsn, completion: Completion) -> AppendBatch {
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
