//! The commit tracker: the LSN each durability level has reached, from the primary's own
//! durable LSN and its sync followers' acknowledgements, under the configured quorum and the
//! policy for when the quorum cannot be met.
//!
//! Invariants: every level's commit LSN only rises; a remote level never passes the local
//! durable LSN (an append is acknowledged only once the primary itself holds it); outside
//! degraded mode a remote level never passes what the quorum has acknowledged at that level.
//! In degraded mode (policy `degrade`, quorum lost for `degrade_after`) remote levels follow
//! the local durable LSN, and the node says so; it leaves degraded mode once the quorum is back
//! and has caught up to where the primary was when it came back.

use std::time::Duration;

use logship_engine::Lsn;

use crate::protocol::DurabilityLevel;
use crate::quorum::{MemberState, QuorumScratch, QuorumSpec};

/// What happens when the sync quorum cannot be met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumPolicy {
    /// Appends wait up to the commit timeout, then fail with `QuorumUnavailable`.
    Block,
    /// After `after` without a quorum, appends are acknowledged at local durability.
    Degrade {
        /// How long the quorum must be missing first.
        after: Duration,
    },
}

/// A sync follower's acknowledged position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Received.
    pub write: Lsn,
    /// fdatasync'ed.
    pub durable: Lsn,
    /// Applied.
    pub applied: Lsn,
}

impl Progress {
    /// The progress left once the leader's log was cut after `last`: what the follower holds
    /// past `last` are records of the old history, not the new ones that will take their LSNs.
    pub fn truncate(&mut self, last: Lsn) {
        self.write = self.write.min(last);
        self.durable = self.durable.min(last);
        self.applied = self.applied.min(last);
    }
}

/// One follower's state as the tracker sees it.
#[derive(Clone, Copy, Debug)]
pub struct MemberProgress<'a> {
    /// Its name in the quorum spec.
    pub name: &'a str,
    /// Streaming and heard from within the peer timeout.
    pub healthy: bool,
    /// What it acknowledged.
    pub progress: Progress,
}

/// A change of degraded mode, for the driver to log and count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DegradeChange {
    /// Entered degraded mode.
    Entered,
    /// Back on the sync quorum.
    Left,
}

/// Tracks commit LSNs per durability level.
#[derive(Debug)]
pub struct CommitTracker {
    quorum: Option<QuorumSpec>,
    policy: QuorumPolicy,
    committed: [Lsn; 4],
    local_durable: Lsn,
    unavailable_since: Option<Duration>,
    degraded: bool,
    /// While degraded with the quorum back: the LSN it must reach to leave degraded mode.
    return_at: Option<Lsn>,
    available: bool,
    /// The quorum's buffers, kept so that an update allocates nothing.
    scratch: QuorumScratch,
}

impl CommitTracker {
    /// A tracker starting at `durable` (everything already durable locally counts as
    /// committed at every level: it was acknowledged, or never asked for, before a restart).
    pub fn new(quorum: Option<QuorumSpec>, policy: QuorumPolicy, durable: Lsn) -> CommitTracker {
        CommitTracker {
            quorum,
            policy,
            committed: [durable; 4],
            local_durable: durable,
            unavailable_since: None,
            degraded: false,
            return_at: None,
            available: true,
            scratch: QuorumScratch::default(),
        }
    }

    /// The commit LSN of `level`.
    pub fn committed(&self, level: DurabilityLevel) -> Lsn {
        self.committed[level as usize]
    }

    /// All four commit LSNs, weakest level first.
    pub fn all_committed(&self) -> [Lsn; 4] {
        self.committed
    }

    /// In degraded mode.
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// Whether enough sync followers are healthy.
    pub fn quorum_available(&self) -> bool {
        self.available
    }

    /// The quorum spec, if any.
    pub fn quorum(&self) -> Option<&QuorumSpec> {
        self.quorum.as_ref()
    }

    /// Recomputes from the local durable LSN and the followers' progress. Returns a degraded
    /// mode change, if one happened.
    pub fn update(
        &mut self,
        now: Duration,
        local_durable: Lsn,
        members: &[MemberProgress<'_>],
    ) -> Option<DegradeChange> {
        assert!(
            local_durable >= self.local_durable,
            "local durable LSN regressed: old={} new={local_durable}",
            self.local_durable
        );
        self.local_durable = local_durable;
        let Some(spec) = &self.quorum else {
            self.raise([local_durable; 4]);
            return None;
        };
        let scratch = &mut self.scratch;
        let mut eval = |pick: fn(&Progress) -> Lsn| {
            let states = members.iter().map(|m| MemberState {
                name: m.name,
                healthy: m.healthy,
                lsn: pick(&m.progress).0,
            });
            spec.evaluate_in(states, scratch)
        };
        let (write, _) = eval(|p| p.write);
        let (durable, available) = eval(|p| p.durable);
        let (applied, _) = eval(|p| p.applied);
        self.available = available;
        let change = self.track_degrade(now, Lsn(durable));
        let quorum = if self.degraded {
            [local_durable; 3]
        } else {
            [Lsn(write), Lsn(durable), Lsn(applied)]
        };
        self.raise([
            local_durable,
            quorum[0].min(local_durable),
            quorum[1].min(local_durable),
            quorum[2].min(local_durable),
        ]);
        self.check_invariants();
        change
    }

    fn track_degrade(&mut self, now: Duration, quorum_durable: Lsn) -> Option<DegradeChange> {
        let QuorumPolicy::Degrade { after } = self.policy else {
            return None;
        };
        if !self.available {
            self.return_at = None;
            let since = *self.unavailable_since.get_or_insert(now);
            if !self.degraded && now.saturating_sub(since) >= after {
                self.degraded = true;
                return Some(DegradeChange::Entered);
            }
            return None;
        }
        self.unavailable_since = None;
        if !self.degraded {
            return None;
        }
        let target = *self.return_at.get_or_insert(self.local_durable);
        if quorum_durable >= target {
            self.degraded = false;
            self.return_at = None;
            return Some(DegradeChange::Left);
        }
        None
    }

    /// The log was cut after `last` by its owner: nothing after it is durable or committed at
    /// any level any more. The LSNs after `last` will name new records, which must earn their
    /// levels afresh (without this, a new record would find its LSN already committed, and be
    /// acknowledged before it is durable or replicated).
    pub fn truncate(&mut self, last: Lsn) {
        for c in &mut self.committed {
            *c = (*c).min(last);
        }
        self.local_durable = self.local_durable.min(last);
        self.return_at = self.return_at.map(|r| r.min(last));
    }

    fn raise(&mut self, to: [Lsn; 4]) {
        for (c, t) in self.committed.iter_mut().zip(to) {
            *c = (*c).max(t);
        }
    }

    /// Asserts the tracker's invariants.
    pub fn check_invariants(&self) {
        if let Some(q) = &self.quorum {
            q.check_invariants();
        }
        let local = self.committed[DurabilityLevel::Local as usize];
        for level in &self.committed[1..] {
            assert!(
                *level <= local,
                "a remote level passed local durability: {:?}",
                self.committed
            );
        }
        assert!(
            !self.degraded || matches!(self.policy, QuorumPolicy::Degrade { .. }),
            "degraded under the block policy"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, healthy: bool, w: u64, d: u64, a: u64) -> MemberProgress<'_> {
        MemberProgress {
            name,
            healthy,
            progress: Progress {
                write: Lsn(w),
                durable: Lsn(d),
                applied: Lsn(a),
            },
        }
    }

    fn levels(t: &CommitTracker) -> [u64; 4] {
        t.all_committed().map(|l| l.0)
    }

    #[test]
    fn remote_levels_wait_for_the_quorum_and_for_local_durability() {
        let spec = "ANY 1 (a, b)".parse().ok();
        let mut t = CommitTracker::new(spec, QuorumPolicy::Block, Lsn(0));
        let s = Duration::ZERO;
        t.update(
            s,
            Lsn(10),
            &[m("a", true, 12, 8, 5), m("b", false, 0, 0, 0)],
        );
        assert_eq!(levels(&t), [10, 10, 8, 5]);
        t.update(
            s,
            Lsn(11),
            &[m("a", false, 12, 8, 5), m("b", true, 20, 20, 20)],
        );
        assert_eq!(levels(&t), [11, 11, 11, 11], "never past local durability");
        t.update(
            s,
            Lsn(30),
            &[m("a", false, 12, 8, 5), m("b", false, 20, 20, 20)],
        );
        assert_eq!(levels(&t), [30, 20, 20, 20]);
        assert!(!t.quorum_available());
    }

    #[test]
    fn commit_lsns_never_fall() {
        let spec = "FIRST 1 (a, b)".parse().ok();
        let mut t = CommitTracker::new(spec, QuorumPolicy::Block, Lsn(0));
        let s = Duration::ZERO;
        t.update(
            s,
            Lsn(100),
            &[m("a", true, 100, 100, 100), m("b", true, 50, 50, 50)],
        );
        assert_eq!(levels(&t), [100; 4]);
        t.update(
            s,
            Lsn(120),
            &[m("a", false, 100, 100, 100), m("b", true, 60, 60, 60)],
        );
        assert_eq!(
            levels(&t),
            [120, 100, 100, 100],
            "b is chosen but the commit stays"
        );
    }

    #[test]
    fn no_sync_followers_means_remote_levels_follow_local() {
        let mut t = CommitTracker::new(None, QuorumPolicy::Block, Lsn(3));
        t.update(Duration::ZERO, Lsn(9), &[]);
        assert_eq!(levels(&t), [9; 4]);
    }

    #[test]
    fn degrade_after_the_timeout_and_return_once_caught_up() {
        let spec = "ANY 1 (a)".parse().ok();
        let after = Duration::from_secs(1);
        let mut t = CommitTracker::new(spec, QuorumPolicy::Degrade { after }, Lsn(0));
        let at = Duration::from_millis;
        assert_eq!(t.update(at(0), Lsn(10), &[m("a", true, 10, 10, 10)]), None);
        assert_eq!(
            t.update(at(100), Lsn(20), &[m("a", false, 10, 10, 10)]),
            None
        );
        assert_eq!(levels(&t), [20, 10, 10, 10]);
        assert_eq!(
            t.update(at(900), Lsn(30), &[m("a", false, 10, 10, 10)]),
            None
        );
        let e = t.update(at(1100), Lsn(40), &[m("a", false, 10, 10, 10)]);
        assert_eq!(e, Some(DegradeChange::Entered));
        assert_eq!(levels(&t), [40; 4]);
        // Back, but behind: still degraded; it must reach 50 (local when it came back).
        assert_eq!(
            t.update(at(1200), Lsn(50), &[m("a", true, 30, 30, 30)]),
            None
        );
        assert!(t.is_degraded());
        assert_eq!(
            t.update(at(1300), Lsn(60), &[m("a", true, 45, 45, 45)]),
            None
        );
        let e = t.update(at(1400), Lsn(70), &[m("a", true, 55, 55, 55)]);
        assert_eq!(e, Some(DegradeChange::Left));
        assert_eq!(
            levels(&t),
            [70, 60, 60, 60],
            "levels never fall; new appends wait again"
        );
    }

    #[test]
    fn block_policy_never_degrades() {
        let spec = "ANY 1 (a)".parse().ok();
        let mut t = CommitTracker::new(spec, QuorumPolicy::Block, Lsn(0));
        for s in 0..100 {
            assert_eq!(
                t.update(
                    Duration::from_secs(s),
                    Lsn(s + 1),
                    &[m("a", false, 0, 0, 0)]
                ),
                None
            );
        }
        assert_eq!(levels(&t), [100, 0, 0, 0]);
    }

    #[test]
    fn a_truncation_takes_back_every_level_past_the_cut() {
        let mut t = CommitTracker::new(None, QuorumPolicy::Block, Lsn(20));
        t.truncate(Lsn(10));
        assert_eq!(t.all_committed(), [Lsn(10); 4]);
        // Durability then rises again from the cut, not from before it.
        t.update(Duration::ZERO, Lsn(12), &[]);
        assert_eq!(t.committed(DurabilityLevel::RemoteDurable), Lsn(12));
        let mut p = Progress {
            write: Lsn(20),
            durable: Lsn(18),
            applied: Lsn(5),
        };
        p.truncate(Lsn(10));
        assert_eq!((p.write, p.durable, p.applied), (Lsn(10), Lsn(10), Lsn(5)));
    }
}
