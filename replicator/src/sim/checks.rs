//! The cluster's invariant bookkeeping: when each property in `invariants` is checked, and the
//! state the incremental ones keep (the primary's commit LSNs in this incarnation, how far
//! each follower was verified against the primary, the bytes in flight per connection).
//! The first violation is kept; the event loop stops on it.

use std::collections::BTreeMap;
use std::time::Duration;

use logship_engine::{Epoch, Lsn};

use super::cluster::Cluster;
use super::disk::READ_JOBS_CAPACITY;
use super::invariants::{
    acknowledged_records_survive, commit_never_goes_back, connection_bytes_bounded,
    logs_agree_below_commit, memory_is_bounded, one_primary_per_epoch,
    remote_durable_ack_is_on_a_quorum, ConnectionBound, Violation, WaiterBound,
    CONTROL_SLACK_BYTES,
};
use super::spec::ClusterSpec;
use super::ModelLog;
use crate::fetch::FETCH_CHUNK_BYTES;
use crate::protocol::DurabilityLevel;
use crate::vocab::{ConnId, ReplicaLog};

/// How often bounds on waiters are checked and finished connections forgotten.
const BOUNDS_EVERY: Duration = Duration::from_millis(100);
/// How often the logs' and the network's own invariants are checked in full.
const FULL_EVERY: Duration = Duration::from_millis(500);
/// The longest pause a schedule draws.
const MAX_PAUSE: Duration = Duration::from_millis(2_500);
/// Slack on an append's age bound, past twice the commit timeout.
const AGE_SLACK: Duration = Duration::from_secs(1);

/// The invariants' state; see the module documentation.
#[derive(Debug)]
pub struct Checks {
    /// Per node: the epoch it was last seen primary in, and its commit LSNs then.
    commit_seen: Vec<(Epoch, [Lsn; 4])>,
    /// The primary the agreement was last checked against.
    agreed_with: Option<usize>,
    /// The node that was primary in each epoch.
    primaries: BTreeMap<Epoch, usize>,
    /// Per node: how far its log was verified against the primary's.
    agreed: Vec<Lsn>,
    /// Bytes sent and not yet delivered, per connection and receiving node.
    in_flight: BTreeMap<(ConnId, usize), u64>,
    bound: ConnectionBound,
    max_age: Duration,
    next_bounds: Duration,
    next_full: Duration,
}

impl Checks {
    /// Fresh state for `spec`'s cluster.
    pub fn new(spec: &ClusterSpec) -> Checks {
        let chunk = spec.catch_up_chunk_bytes as u64;
        Checks {
            commit_seen: vec![(Epoch(0), [Lsn::ZERO; 4]); spec.nodes()],
            agreed_with: None,
            primaries: BTreeMap::new(),
            agreed: vec![Lsn::ZERO; spec.nodes()],
            in_flight: BTreeMap::new(),
            bound: ConnectionBound {
                to_follower: spec.max_inflight_bytes + chunk + CONTROL_SLACK_BYTES,
                to_primary: u64::from(FETCH_CHUNK_BYTES) + CONTROL_SLACK_BYTES,
            },
            // A paused node (failover clusters) answers nothing while it is paused.
            max_age: 2 * spec.timeouts.commit
                + AGE_SLACK
                + if spec.failover {
                    MAX_PAUSE
                } else {
                    Duration::ZERO
                },
            next_bounds: Duration::ZERO,
            next_full: Duration::ZERO,
        }
    }

    /// Node `n` started with these commit LSNs (a new incarnation for the primary).
    pub fn started(&mut self, n: usize, committed: [Lsn; 4]) {
        self.commit_seen[n] = (Epoch(0), committed);
    }

    /// Node `n`'s log was cut after `after`.
    pub fn cut(&mut self, n: usize, after: Lsn) {
        self.agreed[n] = self.agreed[n].min(after);
    }
}

/// The index of the node named `name` (`n3` is 3).
fn node_index(name: &str) -> Option<usize> {
    name.strip_prefix('n')?.parse().ok()
}

impl Cluster {
    /// Keeps the first violation.
    pub(super) fn fail(&mut self, v: Violation) {
        if self.violation.is_none() {
            self.trace.note(self.now, usize::MAX, "VIOLATION", &[]);
            self.violation = Some(v);
        }
    }

    fn logs(&self) -> Vec<&ModelLog> {
        self.nodes.iter().map(|n| &n.log).collect()
    }

    /// The primary's commit LSNs after a step.
    pub(super) fn check_commit(&mut self, n: usize, epoch: Epoch, now: [Lsn; 4]) {
        if let Err(v) = one_primary_per_epoch(&mut self.checks.primaries, epoch, n) {
            self.fail(v);
        }
        let seen = &mut self.checks.commit_seen[n];
        if seen.0 != epoch {
            // A new reign: its commit LSNs start where its log stands.
            *seen = (epoch, now);
        }
        if let Err(v) = commit_never_goes_back(&mut seen.1, now) {
            self.fail(v);
        }
    }

    /// An acknowledgement at `level` of record `lsn` (`bytes`).
    pub(super) fn check_ack(
        &mut self,
        n: usize,
        level: DurabilityLevel,
        lsn: Lsn,
        bytes: &[u8],
        degraded: bool,
    ) {
        let r = remote_durable_ack_is_on_a_quorum(
            &self.spec,
            &self.logs(),
            &self.history,
            (n, level, lsn, bytes),
            degraded,
        );
        if let Err(v) = r {
            self.fail(v);
        }
    }

    /// After anything that can remove records.
    pub(super) fn check_survival(&mut self) {
        if let Err(v) = acknowledged_records_survive(&self.spec, &self.logs(), &self.history) {
            self.fail(v);
        }
    }

    /// `bytes` more in flight on `conn` toward node `to`.
    pub(super) fn note_sent(&mut self, conn: ConnId, to: usize, bytes: u64) {
        let f = self.checks.in_flight.entry((conn, to)).or_default();
        *f += bytes;
        let (f, bound) = (*f, self.checks.bound);
        if let Err(v) = connection_bytes_bounded(conn.0, to, f, bound) {
            self.fail(v);
        }
    }

    /// `bytes` delivered on `conn` to node `to`.
    pub(super) fn note_delivered(&mut self, conn: ConnId, to: usize, bytes: u64) {
        if let Some(f) = self.checks.in_flight.get_mut(&(conn, to)) {
            *f = f.saturating_sub(bytes);
        }
    }

    /// After every event: syncs to start, agreement, and the periodic checks.
    pub(super) fn after_event(&mut self) {
        self.kick_syncs();
        self.check_agreement();
        if self.now >= self.checks.next_bounds {
            self.checks.next_bounds = self.now + BOUNDS_EVERY;
            self.check_bounds();
        }
        if self.now >= self.checks.next_full {
            self.checks.next_full = self.now + FULL_EVERY;
            if let Err(v) = self.check_full() {
                self.fail(v);
            }
        }
    }

    /// `logs_agree_below_commit` for every follower, from where it was verified.
    /// The primary the checks judge the others by: the one of the newest epoch any node was
    /// primary in, while it still is (a deposed one may linger until check-quorum steps it
    /// down; it can acknowledge nothing at a remote level meanwhile).
    fn judge(&self) -> Option<usize> {
        if !self.spec.failover {
            return self.primary();
        }
        let (&epoch, &n) = self.checks.primaries.iter().next_back()?;
        let r = self.nodes[n].replica.as_ref()?;
        (r.as_primary().is_some() && r.epoch() == epoch).then_some(n)
    }

    fn check_agreement(&mut self) {
        let Some(pn) = self.judge() else {
            return;
        };
        if self.checks.agreed_with != Some(pn) {
            // Verified against another primary's log: verify again from the start.
            self.checks.agreed_with = Some(pn);
            self.checks.agreed.iter_mut().for_each(|a| *a = Lsn::ZERO);
        }
        let Some(p) = self.nodes[pn].replica.as_ref().and_then(|r| r.as_primary()) else {
            return;
        };
        // Without failover the primary keeps even what it acknowledged degraded; with it, only
        // what a quorum held survives a change of primary.
        let commit = if self.spec.failover {
            self.history.max_acked_on_quorum()
        } else {
            self.history.max_acked()
        };
        let acked: Vec<(String, Lsn)> = (p.links().iter())
            .map(|l| (l.name.to_string(), l.progress.durable))
            .collect();
        for (name, durable) in acked {
            let Some(n) = node_index(&name) else { continue };
            let upto = commit.min(durable);
            if upto <= self.checks.agreed[n] {
                continue;
            }
            let (plog, flog) = (&self.nodes[pn].log, &self.nodes[n].log);
            if let Err(v) = logs_agree_below_commit(plog, flog, n, upto, &mut self.checks.agreed[n])
            {
                self.fail(v);
            }
        }
    }

    /// `memory_is_bounded` for waiters and read jobs; forgets finished connections.
    fn check_bounds(&mut self) {
        for n in 0..self.nodes.len() {
            let node = &self.nodes[n];
            let w = WaiterBound {
                node: n,
                replica_waiting: node.replica.as_ref().map_or(0, |r| r.waiting()),
                pending: self.clients.pending_on(n),
                oldest: (self.clients.oldest_pending(n)).map(|(c, t)| (c, self.now - t)),
                max_age: self.checks.max_age,
                read_jobs: (node.disk.queued_jobs(), READ_JOBS_CAPACITY),
            };
            if let Err(v) = memory_is_bounded(&w) {
                self.fail(v);
            }
        }
        let live: std::collections::BTreeSet<ConnId> = (0..self.nodes.len())
            .flat_map(|n| self.net.conns_of(n))
            .collect();
        self.checks.in_flight.retain(|(c, _), _| live.contains(c));
        self.conn_nodes.retain(|c, _| live.contains(c));
    }

    /// Every property over the whole cluster, and the logs' and network's own invariants.
    pub(super) fn check_full(&mut self) -> Result<(), Violation> {
        for node in &self.nodes {
            node.log.check_invariants();
            if let Some(r) = &node.replica {
                r.check_invariants();
            }
        }
        self.net.check_invariants();
        acknowledged_records_survive(&self.spec, &self.logs(), &self.history)?;
        let Some(pn) = self.judge() else {
            return Ok(());
        };
        // A primary holds every acknowledged record; a fixed one durably (an elected one may
        // not have synced what it received as a follower yet).
        let fixed = !self.spec.failover;
        let plog = &self.nodes[pn].log;
        for (lsn, acked) in self.history.acked_records() {
            if plog.record(*lsn).as_ref() != Some(&acked.bytes)
                || (fixed && plog.durable_lsn() < *lsn)
            {
                let m = format!(
                    "record {lsn} acknowledged at {:?} is not the primary n{pn}'s record",
                    acked.level
                );
                return Err(Violation::new("acknowledged_records_survive", m));
            }
        }
        Ok(())
    }
}
