//! `caught_up_after_faults`: once the faults stop (partitions healed, crashed nodes restarted,
//! disks and network back to normal) the cluster converges within a bounded simulated time:
//! every node is up with a working log, the primary serves, every follower holds exactly the
//! primary's records, durably, the commit LSN of every level reaches the primary's last LSN,
//! and every client's append has ended.
//!
//! One outcome besides convergence is accepted, and checked: a follower whose log diverged from
//! the primary's at or below the primary's fence (the point where it began serving) after
//! several primary crashes is refused with `diverged`. Without epochs nothing tells the primary
//! where the histories split, so it keeps the follower's records rather than guess (the next
//! issue's epoch history finds the split). Such a follower is left out of the convergence
//! check, and so are the commit levels when without it too few sync members remain.
//!
//! Otherwise the levels can always reach the last LSN here: every sync follower is up and reachable, so
//! the quorum (any k of them) is met under `block` as under `degrade`, and remote-applied
//! follows as the followers' applications (the simulator's, for those without auto-apply) keep
//! applying. Runs with hostile network faults do not check this: their frames are garbled on
//! purpose, so progress is not owed.

use logship_engine::Lsn;

use crate::sim::cluster::Cluster;
use crate::vocab::ReplicaLog;

/// Where convergence stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Convergence {
    /// Converged.
    Done,
    /// Not yet: the first thing missing.
    Waiting(String),
}

/// Whether the cluster has converged (cheap checks first; the logs compared whole last).
pub fn caught_up_after_faults(c: &Cluster) -> Convergence {
    match missing(c) {
        Some(why) => Convergence::Waiting(why),
        None => Convergence::Done,
    }
}

fn missing(c: &Cluster) -> Option<String> {
    for n in 0..c.spec().nodes() {
        match c.replica(n) {
            None => return Some(format!("n{n} is down")),
            Some(r) if r.failure().is_some() => return Some(format!("n{n}'s log failed")),
            Some(_) => {}
        }
    }
    let Some(pn) = c.primary() else {
        return Some("no node is the primary".into());
    };
    let others: Vec<usize> = (0..c.spec().nodes()).filter(|&n| n != pn).collect();
    if let Some(&n) = others
        .iter()
        .find(|&&n| c.replica(n).is_some_and(|r| r.as_primary().is_some()))
    {
        return Some(format!(
            "n{n} is a primary too (n{pn} has the newest epoch)"
        ));
    }
    let primary = c.replica(pn)?;
    if !primary.serving() {
        return Some("the primary does not serve (its start gate is closed)".into());
    }
    let plog = c.log(pn);
    let last = plog.last_lsn();
    if plog.durable_lsn() < last {
        return Some(format!(
            "the primary is durable to {} of {last}",
            plog.durable_lsn()
        ));
    }
    let fence = primary
        .as_primary()
        .and_then(|p| p.fence())
        .unwrap_or(Lsn::ZERO);
    // Without failover, a follower whose log split from the primary's below the fence is
    // exempt (the open liveness class of fixed primaries); with failover, none is.
    let split: Vec<usize> = (others.iter().copied())
        .filter(|n| !c.spec().failover && split_below(c, pn, *n, fence))
        .collect();
    let committed = primary.committed();
    if quorum_possible(c, pn, &split) && committed.iter().any(|l| *l < last) {
        return Some(format!(
            "commit LSNs {committed:?} short of the last LSN {last}"
        ));
    }
    let pending = (0..c.spec().nodes())
        .map(|n| c.clients().pending_on(n))
        .sum::<usize>();
    if pending > 0 {
        return Some(format!("{pending} appends still wait"));
    }
    (others.iter().copied())
        .filter(|n| !split.contains(n))
        .find_map(|n| follower_missing(c, pn, n, last))
}

/// Whether follower `n`'s log first differs from the primary's at or below `fence` (both hold
/// a record there, and they differ).
fn split_below(c: &Cluster, pn: usize, n: usize, fence: Lsn) -> bool {
    let (log, plog) = (c.log(n), c.log(pn));
    let from = log.first_lsn().max(plog.first_lsn());
    let to = log.last_lsn().min(plog.last_lsn()).min(fence);
    (from.0..=to.0)
        .map(Lsn)
        .any(|l| l > Lsn::ZERO && log.record(l) != plog.record(l))
}

/// Whether the sync quorum can be met by the sync followers outside `split`.
fn quorum_possible(c: &Cluster, pn: usize, split: &[usize]) -> bool {
    let spec = c.spec();
    let Some(q) = &spec.quorum else {
        return true;
    };
    let usable = (spec.quorum_members().into_iter())
        .filter(|&n| n != pn && !split.contains(&n))
        .count();
    usable >= q.k
}

fn follower_missing(c: &Cluster, pn: usize, n: usize, last: Lsn) -> Option<String> {
    let log = c.log(n);
    if log.durable_lsn() != last || log.last_lsn() != last {
        return Some(format!(
            "n{n} holds {}..={} (durable {}); the primary's last is {last}",
            log.first_lsn(),
            log.last_lsn(),
            log.durable_lsn()
        ));
    }
    let plog = c.log(pn);
    let from = log.first_lsn().max(plog.first_lsn());
    (from.0..=last.0)
        .map(Lsn)
        .find(|l| log.record(*l) != plog.record(*l))
        .map(|l| format!("n{n}'s record {l} differs from the primary's"))
}
