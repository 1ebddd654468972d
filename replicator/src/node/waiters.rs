//! Where appends wait: for the replica to admit them (the start gate), then for their
//! durability level. One heap per level, ordered by LSN, so an advance wakes exactly the
//! appends it satisfies. Deadlines are the replica's: it fails an append by its number.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::Thread;

use logship_engine::{Completion, Lsn};
use parking_lot::Mutex;

use crate::error::Error;
use crate::protocol::DurabilityLevel;
use crate::vocab::WaiterId;

/// How a wait ended.
pub(crate) type Outcome = Result<Lsn, Error>;

#[derive(Debug, Default)]
struct SlotState {
    outcome: Option<Outcome>,
    waker: Option<Waker>,
    thread: Option<Thread>,
}

/// Where one append's outcome lands.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
}

impl Slot {
    fn complete(&self, outcome: Outcome) {
        let mut st = self.state.lock();
        if st.outcome.is_some() {
            return;
        }
        st.outcome = Some(outcome);
        let (waker, thread) = (st.waker.take(), st.thread.take());
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        if let Some(t) = thread {
            t.unpark();
        }
    }

    fn wait(&self) -> Outcome {
        loop {
            let mut st = self.state.lock();
            if let Some(o) = st.outcome.take() {
                return o;
            }
            st.thread = Some(std::thread::current());
            drop(st);
            std::thread::park();
        }
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut st = self.state.lock();
        match st.outcome.take() {
            Some(o) => Poll::Ready(o),
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A replicated append's wait for its level. `wait()` blocks; `.await` works too.
#[derive(Debug)]
pub struct Commit {
    lsn: Lsn,
    slot: Option<Arc<Slot>>,
    ready: Option<Outcome>,
    /// The log's completion of the record, left for `wait()` to write the record on its own
    /// thread if the log's writer is idle then (caller-runs); polling or dropping the commit
    /// hands the record to the writer thread instead.
    write: Option<Completion>,
}

impl Commit {
    pub(crate) fn ready(outcome: Outcome) -> Commit {
        let lsn = *outcome.as_ref().unwrap_or(&Lsn::ZERO);
        Commit {
            lsn,
            slot: None,
            ready: Some(outcome),
            write: None,
        }
    }

    /// This commit's `wait()` writes the record itself if the log's writer idles then.
    pub(crate) fn written_by_waiter(mut self, completion: Completion) -> Commit {
        self.write = Some(completion);
        self
    }

    /// The record's LSN (0 if the append failed before it got one).
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Blocks until the level holds (or the wait fails).
    ///
    /// # Errors
    /// [`Error::QuorumUnavailable`], [`Error::Log`], [`Error::Closed`].
    pub fn wait(mut self) -> Result<Lsn, Error> {
        if let Some(o) = self.ready.take() {
            return o;
        }
        if let Some(mut completion) = self.write.take() {
            // Caller-runs: the record, written on this thread if the writer idles; else the
            // writer thread is woken and takes it.
            completion.write_here();
        }
        self.slot.take().map_or(Err(Error::Closed), |s| s.wait())
    }
}

impl Future for Commit {
    type Output = Result<Lsn, Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // An async waiter must not block its executor on a write: the writer thread takes it.
        drop(self.write.take());
        if let Some(o) = self.ready.take() {
            return Poll::Ready(o);
        }
        match &self.slot {
            Some(s) => s.poll(cx),
            None => Poll::Ready(Err(Error::Closed)),
        }
    }
}

#[derive(Debug)]
struct Entry {
    slot: Arc<Slot>,
}

#[derive(Debug, Default)]
struct Inner {
    committed: [Lsn; 4],
    by_lsn: [BinaryHeap<Reverse<(Lsn, WaiterId)>>; 4],
    entries: HashMap<WaiterId, Entry>,
    /// Appends waiting for the replica's admission.
    admissions: HashMap<WaiterId, Arc<Slot>>,
    next_id: u64,
}

/// All waiting appends of a node.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    inner: Mutex<Inner>,
}

impl Waiters {
    /// A new append's number, and the wait for its admission ([`Waiters::admit`] or
    /// [`Waiters::fail`] ends it).
    pub(crate) fn admission(&self) -> (WaiterId, Admission) {
        let mut st = self.inner.lock();
        st.next_id += 1;
        let id = WaiterId(st.next_id);
        let slot = Arc::new(Slot::default());
        st.admissions.insert(id, Arc::clone(&slot));
        (id, Admission(slot))
    }

    /// The replica admitted `id`.
    pub(crate) fn admit(&self, id: WaiterId) {
        if let Some(slot) = self.inner.lock().admissions.remove(&id) {
            slot.complete(Ok(Lsn::ZERO));
        }
    }

    /// Waits for `lsn` at `level` under the number `id`.
    pub(crate) fn register(&self, id: WaiterId, level: DurabilityLevel, lsn: Lsn) -> Commit {
        let mut st = self.inner.lock();
        if st.committed[level as usize] >= lsn {
            return Commit::ready(Ok(lsn));
        }
        let slot = Arc::new(Slot::default());
        st.by_lsn[level as usize].push(Reverse((lsn, id)));
        st.entries.insert(
            id,
            Entry {
                slot: Arc::clone(&slot),
            },
        );
        Commit {
            lsn,
            slot: Some(slot),
            ready: None,
            write: None,
        }
    }

    /// The commit LSNs rose: complete every append they satisfy.
    pub(crate) fn advance(&self, committed: [Lsn; 4]) {
        let mut done = Vec::new();
        {
            let mut st = self.inner.lock();
            let st = &mut *st;
            for (i, lsn) in committed.iter().enumerate() {
                if *lsn <= st.committed[i] {
                    continue;
                }
                st.committed[i] = *lsn;
                while let Some(Reverse((l, id))) = st.by_lsn[i].peek().copied() {
                    if l > *lsn {
                        break;
                    }
                    st.by_lsn[i].pop();
                    if let Some(e) = st.entries.remove(&id) {
                        done.push((e.slot, Ok(l)));
                    }
                }
            }
        }
        for (slot, outcome) in done {
            slot.complete(outcome);
        }
    }

    /// A new reign as primary: the commit LSNs start again from `committed` (what the old
    /// reign reached says nothing of records written since).
    pub(crate) fn restart_levels(&self, committed: [Lsn; 4]) {
        self.inner.lock().committed = committed;
    }

    /// Fails append `id`, waiting for admission or for its level.
    pub(crate) fn fail(&self, id: WaiterId, error: Error) {
        let slot = {
            let mut st = self.inner.lock();
            let st = &mut *st;
            st.admissions
                .remove(&id)
                .or_else(|| st.entries.remove(&id).map(|e| e.slot))
        };
        if let Some(slot) = slot {
            slot.complete(Err(error));
        }
    }

    /// Fails every waiting append (shutdown, log failure).
    pub(crate) fn fail_all(&self, make: impl Fn() -> Error) {
        let slots: Vec<Arc<Slot>> = {
            let mut st = self.inner.lock();
            st.by_lsn.iter_mut().for_each(BinaryHeap::clear);
            let admissions = st.admissions.drain().map(|(_, s)| s).collect::<Vec<_>>();
            (st.entries.drain().map(|(_, e)| e.slot))
                .chain(admissions)
                .collect()
        };
        for slot in slots {
            slot.complete(Err(make()));
        }
    }

    /// Appends waiting.
    pub(crate) fn len(&self) -> usize {
        let st = self.inner.lock();
        st.entries.len() + st.admissions.len()
    }
}

/// An append's wait for the replica's admission.
#[derive(Debug)]
pub(crate) struct Admission(Arc<Slot>);

impl Admission {
    /// Whether the replica has admitted (or refused) it; without blocking. Registers `cx`'s
    /// waker to hear when it does, if it has not.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.0.poll(cx).map(|o| o.map(|_| ()))
    }

    /// Blocks until admitted (or refused).
    pub(crate) fn wait(self) -> Result<(), Error> {
        self.0.wait().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_complete_exactly_the_satisfied_appends() {
        let w = Waiters::default();
        let a = w.register(WaiterId(1), DurabilityLevel::RemoteDurable, Lsn(5));
        let b = w.register(WaiterId(2), DurabilityLevel::RemoteDurable, Lsn(9));
        let c = w.register(WaiterId(3), DurabilityLevel::RemoteWrite, Lsn(9));
        w.advance([Lsn(9), Lsn(9), Lsn(6), Lsn(0)]);
        assert_eq!(a.wait().unwrap(), Lsn(5));
        assert_eq!(c.wait().unwrap(), Lsn(9));
        assert_eq!(w.len(), 1);
        w.advance([Lsn(9), Lsn(9), Lsn(9), Lsn(0)]);
        assert_eq!(b.wait().unwrap(), Lsn(9));
        let late = w.register(WaiterId(4), DurabilityLevel::RemoteDurable, Lsn(3));
        assert_eq!(
            late.wait().unwrap(),
            Lsn(3),
            "already committed: ready at once"
        );
    }

    #[test]
    fn a_failed_waiter_fails_and_an_admitted_one_proceeds() {
        let w = Waiters::default();
        let (id, admission) = w.admission();
        w.admit(id);
        admission.wait().unwrap();
        let a = w.register(id, DurabilityLevel::RemoteDurable, Lsn(5));
        w.fail(id, Error::NotPrimary { leader_hint: None });
        assert!(matches!(a.wait(), Err(Error::NotPrimary { .. })));
        let (id, admission) = w.admission();
        w.fail(id, Error::NotPrimary { leader_hint: None });
        assert!(matches!(admission.wait(), Err(Error::NotPrimary { .. })));
    }
}
