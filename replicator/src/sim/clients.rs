//! The clients' appends and how each ended: the simulator's counterpart of the node's
//! `Waiters`. An append waits for admission, then (with its LSN) for its level; a `Committed`
//! completes every append it satisfies, exactly as `Waiters::advance` does, and an append
//! registered when its level already holds completes at once (`Waiters::register`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use logship_engine::Lsn;

use crate::protocol::DurabilityLevel;
use crate::vocab::WaiterId;

/// A client's append, as the scripted API names it (its waiter number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientRef(pub u64);

/// How an append ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutcome {
    /// Still waiting.
    Pending,
    /// Acknowledged at its level, as record `lsn`.
    Acked {
        /// Its LSN.
        lsn: Lsn,
    },
    /// Failed.
    Failed {
        /// Why.
        why: String,
    },
}

/// One append.
#[derive(Clone, Debug)]
pub struct ClientOp {
    /// The node it went to.
    pub node: usize,
    /// The level it waits for.
    pub level: DurabilityLevel,
    /// Its payload.
    pub payload: Bytes,
    /// Its LSN, once the log took it.
    pub lsn: Option<Lsn>,
    /// When it was issued.
    pub issued_at: Duration,
    /// How it ended.
    pub outcome: ClientOutcome,
}

/// An acknowledgement: which append, at which level, as which record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The append.
    pub client: ClientRef,
    /// Its level.
    pub level: DurabilityLevel,
    /// Its LSN.
    pub lsn: Lsn,
}

/// Every append of the run.
#[derive(Debug, Default)]
pub struct Clients {
    ops: BTreeMap<u64, ClientOp>,
    /// Per node: appends not yet ended.
    pending: BTreeMap<usize, BTreeSet<u64>>,
    /// Per node and level: appends with an LSN waiting for it.
    waiting: BTreeMap<(usize, usize), BTreeSet<(Lsn, u64)>>,
    /// Per node: the commit LSNs last seen (`Waiters::committed`).
    committed: BTreeMap<usize, [Lsn; 4]>,
    next_id: u64,
}

impl Clients {
    /// A new append to `node`; returns its number.
    pub fn issue(
        &mut self,
        node: usize,
        level: DurabilityLevel,
        payload: Bytes,
        now: Duration,
    ) -> ClientRef {
        self.next_id += 1;
        let id = self.next_id;
        let op = ClientOp {
            node,
            level,
            payload,
            lsn: None,
            issued_at: now,
            outcome: ClientOutcome::Pending,
        };
        self.ops.insert(id, op);
        self.pending.entry(node).or_default().insert(id);
        ClientRef(id)
    }

    /// The append `c`.
    pub fn get(&self, c: ClientRef) -> Option<&ClientOp> {
        self.ops.get(&c.0)
    }

    /// `node` (re)started with these commit LSNs.
    pub fn reset_node(&mut self, node: usize, committed: [Lsn; 4]) {
        self.committed.insert(node, committed);
    }

    /// The log took append `c` as `lsn`: it waits for its level, or is done at once if the
    /// level already holds.
    pub fn register(&mut self, c: ClientRef, lsn: Lsn) -> Option<Ack> {
        let op = self.ops.get_mut(&c.0)?;
        op.lsn = Some(lsn);
        let (node, level) = (op.node, op.level);
        let committed = self.committed.get(&node).copied().unwrap_or_default();
        if committed[level as usize] >= lsn {
            self.finish(c.0, ClientOutcome::Acked { lsn });
            return Some(Ack {
                client: c,
                level,
                lsn,
            });
        }
        self.waiting
            .entry((node, level as usize))
            .or_default()
            .insert((lsn, c.0));
        None
    }

    /// `node`'s commit LSNs rose: the appends they satisfy are done.
    pub fn advance(&mut self, node: usize, levels: [Lsn; 4]) -> Vec<Ack> {
        let seen = self.committed.entry(node).or_default();
        for (s, l) in seen.iter_mut().zip(levels) {
            *s = (*s).max(l);
        }
        let seen = *seen;
        let mut acks = Vec::new();
        for (i, level) in LEVELS.into_iter().enumerate() {
            let Some(w) = self.waiting.get_mut(&(node, i)) else {
                continue;
            };
            while let Some(&(lsn, id)) = w.first() {
                if lsn > seen[i] {
                    break;
                }
                w.pop_first();
                acks.push(Ack {
                    client: ClientRef(id),
                    level,
                    lsn,
                });
            }
        }
        for a in &acks {
            self.finish(a.client.0, ClientOutcome::Acked { lsn: a.lsn });
        }
        acks
    }

    /// Append `c` failed.
    pub fn fail(&mut self, c: ClientRef, why: String) {
        let Some(op) = self.ops.get(&c.0) else {
            return;
        };
        if op.outcome != ClientOutcome::Pending {
            return;
        }
        if let Some(lsn) = op.lsn {
            let key = (op.node, op.level as usize);
            if let Some(w) = self.waiting.get_mut(&key) {
                w.remove(&(lsn, c.0));
            }
        }
        self.finish(c.0, ClientOutcome::Failed { why });
    }

    /// Every append still waiting on `node` fails (its log failed, or it stopped).
    pub fn fail_node(&mut self, node: usize, why: &str) {
        let ids: Vec<u64> = self
            .pending
            .get(&node)
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.fail(ClientRef(id), why.to_string());
        }
    }

    fn finish(&mut self, id: u64, outcome: ClientOutcome) {
        if let Some(op) = self.ops.get_mut(&id) {
            if op.outcome == ClientOutcome::Pending {
                op.outcome = outcome;
                if let Some(p) = self.pending.get_mut(&op.node) {
                    p.remove(&id);
                }
            }
        }
    }

    /// Appends on `node` not yet ended.
    pub fn pending_on(&self, node: usize) -> usize {
        self.pending.get(&node).map_or(0, BTreeSet::len)
    }

    /// The oldest append still waiting on `node`, with when it was issued.
    pub fn oldest_pending(&self, node: usize) -> Option<(ClientRef, Duration)> {
        let p = self.pending.get(&node)?;
        p.iter()
            .map(|id| (ClientRef(*id), self.ops[id].issued_at))
            .min_by_key(|(_, t)| *t)
    }

    /// Every append, in issue order.
    pub fn all(&self) -> impl Iterator<Item = (ClientRef, &ClientOp)> {
        self.ops.iter().map(|(id, op)| (ClientRef(*id), op))
    }

    /// The waiter number the replica knows `c` by.
    pub fn waiter(c: ClientRef) -> WaiterId {
        WaiterId(c.0)
    }
}

/// The levels, in `DurabilityLevel as usize` order.
pub const LEVELS: [DurabilityLevel; 4] = [
    DurabilityLevel::Local,
    DurabilityLevel::RemoteWrite,
    DurabilityLevel::RemoteDurable,
    DurabilityLevel::RemoteApplied,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(c: &mut Clients, level: DurabilityLevel) -> ClientRef {
        c.issue(0, level, Bytes::from_static(b"x"), Duration::ZERO)
    }

    #[test]
    fn an_advance_completes_exactly_the_appends_it_satisfies() {
        let mut c = Clients::default();
        c.reset_node(0, [Lsn(2); 4]);
        let a = issue(&mut c, DurabilityLevel::RemoteDurable);
        let b = issue(&mut c, DurabilityLevel::RemoteDurable);
        let early = issue(&mut c, DurabilityLevel::Local);
        assert_eq!(c.register(a, Lsn(5)), None);
        assert_eq!(c.register(b, Lsn(9)), None);
        let ready = c.register(early, Lsn(2));
        assert_eq!(
            ready.map(|r| r.lsn),
            Some(Lsn(2)),
            "already committed: done at once"
        );
        let acks = c.advance(0, [Lsn(9), Lsn(9), Lsn(6), Lsn(0)]);
        assert_eq!(acks.iter().map(|k| k.client).collect::<Vec<_>>(), vec![a]);
        assert_eq!(c.pending_on(0), 1);
        c.fail_node(0, "crashed");
        assert!(matches!(
            c.get(b).unwrap().outcome,
            ClientOutcome::Failed { .. }
        ));
        assert!(
            c.advance(0, [Lsn(9); 4]).is_empty(),
            "a failed append is not acknowledged"
        );
    }
}
