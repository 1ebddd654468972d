//! One simulated node: its log (which survives crashes), its replica (which does not), its
//! disk, its clock, and what the node's threads would be holding: admitted appends on their
//! way to the log, records written but not yet reported to the replica (the writer's batch),
//! the start gate's mark on disk.
//!
//! Starting a node mirrors `Node::start`: a primary's replica is built from its log with the
//! start gate closed when it has a sync quorum and the log may have lost records (after any
//! crash, and on a new log) or the gate's mark is still on disk; a follower's from its log's
//! tail.

use std::collections::VecDeque;
use std::time::Duration;

use logship_engine::{Epoch, Lsn};

use crate::primary::Primary;
use crate::replica::Replica;
use crate::vocab::{ElectionState, EpochHistory, Input, NonceSource, ReplicaLog, Tail, WaiterId};

use super::disk::Disk;
use super::spec::{sub_seed, ClusterSpec, Stream, PRIMARY};
use super::ModelLog;

/// How often a node's ticker runs (the node's `TICK`).
pub const TICK: Duration = Duration::from_millis(10);

/// One node; see the module documentation.
#[derive(Debug)]
pub struct SimNode {
    /// Its index.
    pub id: usize,
    /// Its log.
    pub log: ModelLog,
    /// Its replica, while it runs.
    pub replica: Option<Replica>,
    /// Starts so far (each crash or stop ends one).
    pub incarnation: u64,
    /// Local time minus simulated time: only grows (a paused process's clock jumps forward).
    pub clock_offset: Duration,
    /// Local time of the next tick.
    pub next_tick: Duration,
    /// Its disk.
    pub disk: Disk,
    /// The start gate's mark on disk (the node's `GATE_FILE`).
    pub gate_marked: bool,
    /// Appends admitted, on their way to the log (the clients' threads).
    pub admitted: VecDeque<WaiterId>,
    /// Primary: the last LSN reported to the replica with `Written`.
    pub reported: Lsn,
    /// Primary: when the writer reports what the log holds past `reported`.
    pub flush_at: Option<Duration>,
    /// The log failed (`FailAll`): the node runs on, refusing work, until it is restarted.
    pub failed: bool,
    /// Follower without auto-apply: when its application next reports progress.
    pub apply_at: Option<Duration>,
    /// Its last stop was clean (its log was synced and closed), so its next start does not
    /// suspect lost records. False for a new log.
    pub closed_cleanly: bool,
    /// The election state on its disk (failover clusters): written by `Persist`, durable at
    /// once, kept through crashes.
    pub election: ElectionState,
    /// The number of the last `Persist` carried out in this incarnation (its replica numbers
    /// them from 1).
    pub election_seq: u64,
    /// Paused (SIGSTOP) until then: its inputs wait in `held`.
    pub paused_until: Option<Duration>,
    /// Inputs that reached it while paused, in order.
    pub held: VecDeque<Input>,
    /// Its replica was told its disk stalled.
    pub stall_reported: bool,
}

impl SimNode {
    /// Node `id`, not started, with an empty log.
    pub fn new(id: usize, spec: &ClusterSpec) -> SimNode {
        SimNode {
            id,
            log: ModelLog::new(),
            replica: None,
            incarnation: 0,
            clock_offset: Duration::ZERO,
            next_tick: Duration::ZERO,
            disk: Disk::new(spec.disk),
            gate_marked: false,
            admitted: VecDeque::new(),
            reported: Lsn::ZERO,
            flush_at: None,
            failed: false,
            apply_at: None,
            closed_cleanly: false,
            election: ElectionState::default(),
            election_seq: 0,
            paused_until: None,
            held: VecDeque::new(),
            stall_reported: false,
        }
    }

    /// The node's clock at simulated time `now`.
    pub fn local(&self, now: Duration) -> Duration {
        now + self.clock_offset
    }

    /// Whether it runs.
    pub fn is_up(&self) -> bool {
        self.replica.is_some()
    }

    /// Starts it at `now`: builds the replica from the log. `may_have_lost`: the log was not
    /// closed cleanly (a crash, or a new log), as `may_have_lost_records` says on the node.
    pub fn start(&mut self, spec: &ClusterSpec, now: Duration, may_have_lost: bool) {
        assert!(self.replica.is_none(), "n{} started twice", self.id);
        self.incarnation += 1;
        let seed = sub_seed(
            spec.seed,
            Stream::Replica,
            (self.id as u64) << 32 | self.incarnation,
        );
        let nonces = NonceSource::from_u64(seed ^ 0x6e6f_6e63_6573);
        let replica = if spec.failover {
            let first_tail = (self.log.first_lsn(), self.tail());
            let state = self.election.clone();
            let local = self.local(now);
            let config = spec.election_config(self.id);
            Replica::with_failover(config, first_tail, state, (seed, nonces), local)
        } else if self.id == PRIMARY {
            Replica::primary(self.primary(spec, seed, may_have_lost), nonces)
                .with_history(self.history())
        } else {
            Replica::new_follower(spec.follower_config(self.id), self.tail(), nonces)
                .with_history(self.history())
        };
        self.replica = Some(replica);
        self.election_seq = 0;
        self.reported = self.log.last_lsn();
        self.flush_at = None;
        self.failed = false;
        self.next_tick = self.local(now) + TICK;
        self.apply_at = (!spec.auto_apply(self.id)).then_some(now + TICK);
    }

    fn primary(&mut self, spec: &ClusterSpec, seed: u64, may_have_lost: bool) -> Primary {
        let log = &self.log;
        let (first, last, durable) = (log.first_lsn(), log.last_lsn(), log.durable_lsn());
        // Each start writes a newer epoch than any before it (persisted before it serves).
        let mut config = spec.primary_config();
        let last_epoch = self.tail().last_epoch;
        self.election.epoch = Epoch(self.election.epoch.max(last_epoch).0 + 1);
        config.epoch = self.election.epoch;
        let mut p = Primary::new(config, first, last, durable, seed);
        if self.incarnation > 1 {
            // Only the first start creates the log, as on the node.
            p.mark_recovered_log();
        }
        if self.gate_marked || may_have_lost {
            p.close_gate();
            if !p.serving() {
                self.gate_marked = true;
            }
        }
        p
    }

    /// The log's epoch history, read from its records as the node reads it at start.
    fn history(&self) -> EpochHistory {
        let log = &self.log;
        let range = (log.first_lsn(), log.last_lsn());
        EpochHistory::rebuild(range, |l| log.record_meta(l).ok().flatten().map(|m| m.1))
            .unwrap_or_default()
    }

    /// The log's tail, as `tail_of` on the node reads it (applied: none yet).
    pub fn tail(&self) -> Tail {
        let last = self.log.last_lsn();
        let (last_crc, last_epoch) = (self.log.record_meta(last))
            .ok()
            .flatten()
            .unwrap_or((0, Epoch(0)));
        Tail {
            last,
            last_epoch,
            last_crc,
            durable: self.log.durable_lsn(),
            applied: Lsn::ZERO,
        }
    }

    /// The replica is gone (a crash or a stop): everything in flight goes with it.
    pub fn stop(&mut self) {
        self.replica = None;
        self.paused_until = None;
        self.held.clear();
        self.stall_reported = false;
        self.disk.clear();
        self.admitted.clear();
        self.flush_at = None;
        self.failed = false;
        self.apply_at = None;
    }

    /// When the next tick is due, in simulated time (at once if the clock jumped past it).
    pub fn next_tick_at(&self, now: Duration) -> Duration {
        self.next_tick.saturating_sub(self.clock_offset).max(now)
    }

    /// The applied LSN to report to a follower's replica, as its application would.
    pub fn applied_to_report(&self) -> Option<Lsn> {
        let f = self.replica.as_ref()?.as_follower()?;
        (f.applied() < f.durable()).then(|| f.durable())
    }
}
