//! Appends waiting for a durability level. One heap per level, ordered by LSN, so an advance
//! wakes exactly the appends it satisfies; one heap of deadlines for the commit timeout.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use logship_engine::Lsn;
use parking_lot::Mutex;

use crate::error::Error;
use crate::protocol::DurabilityLevel;

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
}

impl Commit {
    pub(crate) fn ready(outcome: Outcome) -> Commit {
        let lsn = *outcome.as_ref().unwrap_or(&Lsn::ZERO);
        Commit {
            lsn,
            slot: None,
            ready: Some(outcome),
        }
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
        self.slot.take().map_or(Err(Error::Closed), |s| s.wait())
    }
}

impl Future for Commit {
    type Output = Result<Lsn, Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
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
    level: DurabilityLevel,
    lsn: Lsn,
    since: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    committed: [Lsn; 4],
    by_lsn: [BinaryHeap<Reverse<(Lsn, u64)>>; 4],
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    entries: HashMap<u64, Entry>,
    next_id: u64,
}

/// All waiting appends of a node.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    inner: Mutex<Inner>,
}

impl Waiters {
    /// Waits for `lsn` at `level`, failing at `deadline` (`None`: no deadline).
    pub(crate) fn register(
        &self,
        level: DurabilityLevel,
        lsn: Lsn,
        deadline: Option<Instant>,
    ) -> Commit {
        let mut st = self.inner.lock();
        if st.committed[level as usize] >= lsn {
            return Commit::ready(Ok(lsn));
        }
        let id = st.next_id;
        st.next_id += 1;
        let slot = Arc::new(Slot::default());
        st.by_lsn[level as usize].push(Reverse((lsn, id)));
        if let Some(d) = deadline {
            st.deadlines.push(Reverse((d, id)));
        }
        st.entries.insert(
            id,
            Entry {
                slot: Arc::clone(&slot),
                level,
                lsn,
                since: Instant::now(),
            },
        );
        Commit {
            lsn,
            slot: Some(slot),
            ready: None,
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

    /// Fails appends whose deadline passed; `quorum` names the quorum in the error.
    pub(crate) fn expire(&self, now: Instant, quorum: &str) -> usize {
        let mut done = Vec::new();
        {
            let mut st = self.inner.lock();
            while let Some(Reverse((d, id))) = st.deadlines.peek().copied() {
                if d > now {
                    break;
                }
                st.deadlines.pop();
                if let Some(e) = st.entries.remove(&id) {
                    let waited = now.saturating_duration_since(e.since);
                    let err = Error::QuorumUnavailable {
                        level: e.level,
                        lsn: e.lsn,
                        waited,
                        quorum: quorum.to_string(),
                    };
                    done.push((e.slot, err));
                }
            }
        }
        let n = done.len();
        for (slot, err) in done {
            slot.complete(Err(err));
        }
        n
    }

    /// Fails every waiting append (shutdown, log failure).
    pub(crate) fn fail_all(&self, make: impl Fn() -> Error) {
        let entries: Vec<Entry> = {
            let mut st = self.inner.lock();
            st.by_lsn.iter_mut().for_each(BinaryHeap::clear);
            st.deadlines.clear();
            st.entries.drain().map(|(_, e)| e).collect()
        };
        for e in entries {
            e.slot.complete(Err(make()));
        }
    }

    /// Appends waiting.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }
}

/// How long to wait, from a timeout.
pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_complete_exactly_the_satisfied_appends() {
        let w = Waiters::default();
        let a = w.register(DurabilityLevel::RemoteDurable, Lsn(5), None);
        let b = w.register(DurabilityLevel::RemoteDurable, Lsn(9), None);
        let c = w.register(DurabilityLevel::RemoteWrite, Lsn(9), None);
        w.advance([Lsn(9), Lsn(9), Lsn(6), Lsn(0)]);
        assert_eq!(a.wait().unwrap(), Lsn(5));
        assert_eq!(c.wait().unwrap(), Lsn(9));
        assert_eq!(w.len(), 1);
        w.advance([Lsn(9), Lsn(9), Lsn(9), Lsn(0)]);
        assert_eq!(b.wait().unwrap(), Lsn(9));
        let late = w.register(DurabilityLevel::RemoteDurable, Lsn(3), None);
        assert_eq!(
            late.wait().unwrap(),
            Lsn(3),
            "already committed: ready at once"
        );
    }

    #[test]
    fn deadlines_fail_with_quorum_unavailable() {
        let w = Waiters::default();
        let now = Instant::now();
        let a = w.register(DurabilityLevel::RemoteDurable, Lsn(5), Some(now));
        let b = w.register(
            DurabilityLevel::RemoteDurable,
            Lsn(6),
            Some(now + Duration::from_secs(60)),
        );
        w.expire(now, "ANY 1 (a, b)");
        assert!(matches!(
            a.wait(),
            Err(Error::QuorumUnavailable { lsn: Lsn(5), .. })
        ));
        w.advance([Lsn(6); 4]);
        assert_eq!(b.wait().unwrap(), Lsn(6));
    }
}
