//! The simulated cluster: nodes, network, clients, in one thread and virtual time, every choice
//! drawn from the spec's seed.
//!
//! The event loop always advances to the earliest of: a network delivery, a disk completion
//! (sync or read job), a writer's batch report, a tick of some node's clock, an application's
//! progress report, a restart, or (through [`Cluster::run_until`] called by a schedule or a
//! test) the next scripted operation. Simultaneous events run in a fixed order (network, then
//! nodes by index, each: admitted appends, read jobs, the writer, syncs, ticks, apply), so a
//! seed replays exactly.
//!
//! The executor's side (what each action does, mirroring the node's) is in `exec.rs`; the
//! invariants' bookkeeping in `checks.rs`. This file holds the loop and the scripted API:
//! appends, crashes, restarts, partitions, disk and clock faults, accessors, and
//! [`Cluster::settle`], which ends the faults and waits for convergence.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use logship_engine::Lsn;

use super::checks::Checks;
use super::clients::{ClientOutcome, ClientRef, Clients};
use super::disk::between;
use super::history::History;
use super::invariants::{caught_up_after_faults, Convergence, Violation};
use super::net::{Net, NetConfig};
use super::node::SimNode;
use super::schedule::Op;
use super::spec::{sub_seed, ClusterSpec, Stream, PRIMARY};
use super::trace::Trace;
use super::ModelLog;
use crate::protocol::DurabilityLevel;
use crate::replica::Replica;
use crate::vocab::{ConnId, Input, ReplicaLog, Rng};

/// How often [`Cluster::settle`] looks whether the cluster converged.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// The simulated cluster; see the module documentation.
#[derive(Debug)]
pub struct Cluster {
    pub(super) spec: ClusterSpec,
    pub(super) now: Duration,
    pub(super) nodes: Vec<SimNode>,
    pub(super) net: Net,
    /// Executor choices (frame splits, completion order, writer delays).
    pub(super) rng: Rng,
    pub(super) disk_rng: Rng,
    crash_rng: Rng,
    payload_rng: Rng,
    payloads: u64,
    pub(super) clients: Clients,
    pub(super) history: History,
    pub(super) checks: Checks,
    pub(super) trace: Trace,
    /// Per node: when it (re)starts (a running node crashes first).
    pub(super) restart_at: Vec<Option<Duration>>,
    /// The first property that failed.
    pub(super) violation: Option<Violation>,
    /// Each connection's (dialer, acceptor).
    pub(super) conn_nodes: BTreeMap<ConnId, (usize, usize)>,
}

impl Cluster {
    /// A cluster of `spec`'s nodes, all started at time 0 on empty logs.
    pub fn new(spec: ClusterSpec) -> Cluster {
        let seed = spec.seed;
        let rng = |s: Stream| Rng::new(sub_seed(seed, s, 0));
        let net = Net::new(spec.nodes(), spec.net, rng(Stream::Net));
        let mut c = Cluster {
            nodes: (0..spec.nodes()).map(|i| SimNode::new(i, &spec)).collect(),
            net,
            now: Duration::ZERO,
            rng: rng(Stream::Exec),
            disk_rng: rng(Stream::Disk),
            crash_rng: rng(Stream::Crash),
            payload_rng: rng(Stream::Payload),
            payloads: 0,
            clients: Clients::default(),
            history: History::default(),
            checks: Checks::new(&spec),
            trace: Trace::default(),
            restart_at: vec![None; spec.nodes()],
            violation: None,
            conn_nodes: BTreeMap::new(),
            spec,
        };
        for n in 0..c.nodes.len() {
            c.start(n);
        }
        c
    }

    /// The spec.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Simulated time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Node `n`'s log.
    pub fn log(&self, n: usize) -> &ModelLog {
        &self.nodes[n].log
    }

    /// Node `n`'s replica, while it runs.
    pub fn replica(&self, n: usize) -> Option<&Replica> {
        self.nodes[n].replica.as_ref()
    }

    /// Whether node `n` runs.
    pub fn is_up(&self, n: usize) -> bool {
        self.nodes[n].is_up()
    }

    /// How many times node `n` started.
    pub fn incarnation(&self, n: usize) -> u64 {
        self.nodes[n].incarnation
    }

    /// Whether node `n`'s start gate mark is on its disk.
    pub fn gate_marked(&self, n: usize) -> bool {
        self.nodes[n].gate_marked
    }

    /// The clients' appends.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// How append `c` ended so far.
    pub fn outcome(&self, c: ClientRef) -> ClientOutcome {
        self.clients
            .get(c)
            .map_or(ClientOutcome::Pending, |op| op.outcome.clone())
    }

    /// The trace.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Prints every event as it happens from now on.
    pub fn echo_trace(&mut self, on: bool) {
        self.trace.echo = on;
    }

    /// The network (to change its behaviour).
    pub fn net_mut(&mut self) -> &mut Net {
        &mut self.net
    }

    /// The primary clients go to: node 0 without failover; with failover the running primary
    /// of the newest epoch (clients follow the leader hint to it), if any.
    pub fn primary(&self) -> Option<usize> {
        if !self.spec.failover {
            return Some(PRIMARY);
        }
        (0..self.nodes.len())
            .filter_map(|n| {
                let r = self.nodes[n].replica.as_ref()?;
                r.as_primary().map(|_| (r.epoch(), n))
            })
            .max()
            .map(|(_, n)| n)
    }

    /// A client appends a fresh, unique payload at `level` to the primary.
    pub fn append(&mut self, level: DurabilityLevel) -> ClientRef {
        let primary = self.primary().unwrap_or(PRIMARY);
        self.payloads += 1;
        let filler = self.payload_rng.below(120) as usize;
        let mut payload = format!("seed {} append {} ", self.spec.seed, self.payloads).into_bytes();
        payload.extend((0..filler).map(|i| b'a' + (i % 26) as u8));
        let c = self
            .clients
            .issue(primary, level, Bytes::from(payload), self.now);
        let level_n = level as u64;
        self.trace.note(
            self.now,
            primary,
            "client append",
            &[("waiter", c.0), ("level", level_n)],
        );
        if !self.is_up(primary) {
            self.clients.fail(c, "the primary is down".into());
            return c;
        }
        let waiter = Clients::waiter(c);
        self.step(primary, Input::ClientAppend { waiter, level });
        self.after_event();
        c
    }

    /// Runs for `d` of simulated time.
    ///
    /// # Errors
    /// The first property that failed.
    pub fn run_for(&mut self, d: Duration) -> Result<(), Violation> {
        self.run_until(self.now + d)
    }

    /// Runs until simulated time `end`.
    ///
    /// # Errors
    /// The first property that failed.
    pub fn run_until(&mut self, end: Duration) -> Result<(), Violation> {
        loop {
            if let Some(v) = &self.violation {
                return Err(v.clone());
            }
            match self.next_event() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.fire();
                    self.after_event();
                }
                _ => {
                    self.now = self.now.max(end);
                    return Ok(());
                }
            }
        }
    }

    /// When the next event is due.
    fn next_event(&self) -> Option<Duration> {
        let net = self.net.next_delivery_time();
        (0..self.nodes.len())
            .filter_map(|n| self.node_due(n))
            .chain(net)
            .min()
    }

    fn node_due(&self, n: usize) -> Option<Duration> {
        let node = &self.nodes[n];
        let restart = self.restart_at[n];
        if !node.is_up() {
            return restart;
        }
        if let Some(t) = node.paused_until {
            return Some(t.min(restart.unwrap_or(t)));
        }
        if !node.admitted.is_empty() {
            return Some(self.now);
        }
        [
            restart,
            node.disk.next_due(),
            node.flush_at,
            node.apply_at,
            Some(node.next_tick_at(self.now)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles one event due now: the network's first, then each node's in order.
    fn fire(&mut self) {
        if self.net.next_delivery_time().is_some_and(|t| t <= self.now) {
            for e in self.net.pop_due(self.now) {
                self.deliver(e);
            }
            return;
        }
        for n in 0..self.nodes.len() {
            if self.node_due(n).is_some_and(|t| t <= self.now) {
                self.fire_node(n);
                return;
            }
        }
    }

    fn fire_node(&mut self, n: usize) {
        let now = self.now;
        if self.restart_at[n].is_some_and(|t| t <= now) {
            return self.restart_due(n);
        }
        if self.nodes[n].paused_until.is_some_and(|t| t <= now) {
            return self.resume(n);
        }
        let node = &mut self.nodes[n];
        if let Some(w) = node.admitted.pop_front() {
            return self.client_write(n, w);
        }
        if let Some(job) = node.disk.take_done_job(now) {
            return self.read_job(n, job);
        }
        if node.flush_at.is_some_and(|t| t <= now) {
            return self.flush_writer(n);
        }
        if let Some(sync) = node.disk.take_done_sync(now) {
            return self.sync_done(n, sync.target);
        }
        if node.next_tick_at(now) <= now {
            return self.tick(n);
        }
        if node.apply_at.is_some_and(|t| t <= now) {
            node.apply_at = Some(
                now + between(
                    &mut self.rng,
                    Duration::from_millis(5),
                    Duration::from_millis(50),
                ),
            );
            if let Some(lsn) = self.nodes[n].applied_to_report() {
                self.step(n, Input::Applied(lsn));
            }
        }
    }

    fn restart_due(&mut self, n: usize) {
        self.restart_at[n] = None;
        if self.is_up(n) {
            let torn = self.crash_rng.below(2) == 0;
            self.crash(n, torn);
        }
        self.start(n);
    }

    /// A paused node goes on: what reached it meanwhile, in order.
    fn resume(&mut self, n: usize) {
        self.trace.note(self.now, n, "resume", &[]);
        self.nodes[n].paused_until = None;
        while let Some(input) = self.nodes[n].held.pop_front() {
            self.step(n, input);
        }
    }

    fn tick(&mut self, n: usize) {
        let local = self.nodes[n].local(self.now);
        self.nodes[n].next_tick = local + super::node::TICK;
        let node = &mut self.nodes[n];
        let stalled = node
            .disk
            .sync()
            .is_some_and(|s| s.started_at + self.spec.stall_limit <= self.now);
        if stalled && !node.stall_reported {
            node.stall_reported = true;
            self.step(n, Input::DiskStalled(true));
        }
        self.step(n, Input::Tick);
        let node = &mut self.nodes[n];
        if node.gate_marked && node.replica.as_ref().is_some_and(Replica::serving) {
            node.gate_marked = false;
        }
    }

    /// Starts node `n`; its log may have lost records unless it was closed cleanly.
    fn start(&mut self, n: usize) {
        self.restart_at[n] = None;
        let now = self.now;
        let jitter = between(&mut self.rng, Duration::ZERO, super::node::TICK);
        let may_have_lost = !self.nodes[n].closed_cleanly;
        self.nodes[n].start(&self.spec, now, may_have_lost);
        self.nodes[n].next_tick += jitter;
        self.net.set_listening(n, true);
        let committed = self.nodes[n]
            .replica
            .as_ref()
            .map(Replica::committed)
            .unwrap_or_default();
        self.clients.reset_node(n, committed);
        self.checks.started(n, committed);
        let inc = self.nodes[n].incarnation;
        self.trace.note(
            now,
            n,
            "start",
            &[
                ("incarnation", inc),
                ("may_have_lost", u64::from(may_have_lost)),
            ],
        );
    }

    /// Node `n` crashes: unsynced writes are lost (`torn`: a prefix of them survives and the
    /// next one is torn), its connections vanish, its waiting appends fail.
    pub fn crash(&mut self, n: usize, torn: bool) {
        if !self.is_up(n) {
            return;
        }
        self.trace
            .note(self.now, n, "crash", &[("torn", u64::from(torn))]);
        self.nodes[n].log.crash(&mut self.crash_rng, torn);
        self.down(n, "the node crashed", false);
    }

    /// Node `n` stops cleanly: its log is synced and closed, so that its next start does not
    /// suspect lost records (only the start gate's mark can close the gate then). A log that
    /// failed cannot be synced: that stop is a crash.
    pub fn stop_clean(&mut self, n: usize) {
        if !self.is_up(n) {
            return;
        }
        self.trace.note(self.now, n, "clean stop", &[]);
        let synced = self.nodes[n].log.sync().is_ok();
        self.nodes[n].log.crash(&mut self.crash_rng, false);
        self.down(n, "the node stopped", synced);
    }

    fn down(&mut self, n: usize, why: &str, clean: bool) {
        self.net.reset_node(self.now, n);
        self.net.set_listening(n, false);
        self.nodes[n].stop();
        self.nodes[n].closed_cleanly = clean;
        self.restart_at[n] = None;
        self.clients.fail_node(n, why);
        self.check_survival();
        self.after_event();
    }

    /// Restarts node `n` now: a running node crashes first (untorn); a stopped one starts.
    pub fn restart(&mut self, n: usize) {
        self.crash(n, false);
        self.start(n);
        self.after_event();
    }

    /// Restarts node `n` after `delay` (a running node crashes first, torn or not).
    pub fn restart_after(&mut self, n: usize, delay: Duration) {
        self.restart_at[n] = Some(self.now + delay);
    }

    /// Blocks `a` → `b`, and `b` → `a` unless `one_way`.
    pub fn partition(&mut self, a: usize, b: usize, one_way: bool) {
        self.trace.note(
            self.now,
            a,
            "partition",
            &[
                ("from", a as u64),
                ("to", b as u64),
                ("one_way", u64::from(one_way)),
            ],
        );
        self.net.partition(self.now, a, b, one_way);
    }

    /// Heals every partition.
    pub fn heal_all(&mut self) {
        self.trace.note(self.now, usize::MAX, "heal all", &[]);
        self.net.heal_all(self.now);
    }

    /// Resets every connection of node `n` (`half_open`: only one end hears of it).
    pub fn reset_connections(&mut self, n: usize, half_open: bool) {
        self.trace.note(
            self.now,
            n,
            "reset connections",
            &[("half_open", u64::from(half_open))],
        );
        for conn in self.net.conns_of(n) {
            self.net.reset(self.now, conn, half_open);
        }
    }

    /// Node `n`'s next fdatasync fails (its log fails; the node fail-stops, then restarts).
    pub fn fail_next_sync(&mut self, n: usize) {
        self.trace.note(self.now, n, "fail next sync", &[]);
        self.nodes[n].log.fail_next_sync();
    }

    /// Node `n`'s disk is slow for `lasting`.
    pub fn slow_disk(&mut self, n: usize, lasting: Duration) {
        self.trace.note(
            self.now,
            n,
            "slow disk",
            &[("ms", lasting.as_millis() as u64)],
        );
        self.nodes[n].disk.slow_until = self.now + lasting;
    }

    /// Node `n` pauses for `lasting` (SIGSTOP, then SIGCONT): nothing runs on it meanwhile;
    /// what reaches it waits; its clock goes on.
    pub fn pause(&mut self, n: usize, lasting: Duration) {
        if !self.is_up(n) || self.nodes[n].paused_until.is_some() {
            return;
        }
        self.trace
            .note(self.now, n, "pause", &[("ms", lasting.as_millis() as u64)]);
        self.nodes[n].paused_until = Some(self.now + lasting);
    }

    /// Node `n`'s fdatasyncs complete no earlier than `lasting` from now.
    pub fn stall_disk(&mut self, n: usize, lasting: Duration) {
        self.trace.note(
            self.now,
            n,
            "stall disk",
            &[("ms", lasting.as_millis() as u64)],
        );
        let d = &mut self.nodes[n].disk;
        d.stalled_until = d.stalled_until.max(self.now + lasting);
    }

    /// The primary hands over to node `n` (planned switchover), if it is a follower.
    pub fn promote(&mut self, n: usize) {
        let Some(p) = self.primary().filter(|&p| p != n && self.spec.failover) else {
            return;
        };
        self.trace.note(self.now, p, "promote", &[("to", n as u64)]);
        let target = crate::vocab::NodeId::from(super::spec::node_name(n));
        self.step(p, Input::Promote { target });
    }

    /// Node `n`'s clock jumps forward by `by`.
    pub fn jump_clock(&mut self, n: usize, by: Duration) {
        self.trace
            .note(self.now, n, "clock jump", &[("ms", by.as_millis() as u64)]);
        self.nodes[n].clock_offset += by;
    }

    /// With failover, a schedule's faults aimed at node 0 (a quarter of the crashes) hit
    /// whoever is primary now.
    fn aim(&self, node: usize) -> usize {
        match self.primary() {
            Some(p) if self.spec.failover && node == PRIMARY => p,
            _ => node,
        }
    }

    /// Carries out one scheduled operation now.
    pub fn apply(&mut self, op: Op) {
        let op = match op {
            Op::Crash {
                node,
                torn,
                down_for,
            } => Op::Crash {
                node: self.aim(node),
                torn,
                down_for,
            },
            Op::Partition { a, b, one_way } if self.aim(a) != b => Op::Partition {
                a: self.aim(a),
                b,
                one_way,
            },
            Op::SlowDisk { node, lasting } => Op::SlowDisk {
                node: self.aim(node),
                lasting,
            },
            Op::ClockJump { node, by } => Op::ClockJump {
                node: self.aim(node),
                by,
            },
            Op::Pause { node, lasting } => Op::Pause {
                node: self.aim(node),
                lasting,
            },
            op => op,
        };
        match op {
            Op::Append { level, count } => {
                for _ in 0..count {
                    self.append(level);
                }
            }
            Op::Crash {
                node,
                torn,
                down_for,
            } => {
                if self.is_up(node) {
                    self.crash(node, torn);
                    self.restart_after(node, down_for);
                }
            }
            Op::CleanRestart { node, down_for } => {
                if self.is_up(node) {
                    self.stop_clean(node);
                    self.restart_after(node, down_for);
                }
            }
            Op::Partition { a, b, one_way } => self.partition(a, b, one_way),
            Op::HealAll => self.heal_all(),
            Op::ResetConnections { node, half_open } => self.reset_connections(node, half_open),
            Op::FailNextSync { node } => self.fail_next_sync(node),
            Op::SlowDisk { node, lasting } => self.slow_disk(node, lasting),
            Op::ClockJump { node, by } => self.jump_clock(node, by),
            Op::Pause { node, lasting } => self.pause(node, lasting),
            Op::StallDisk { node, lasting } => self.stall_disk(node, lasting),
            Op::Promote { node } => self.promote(node),
        }
        self.after_event();
    }

    /// Ends the faults: heals the network and returns it to plain delays (hostile faults, if
    /// any, stay), restarts every stopped or failed node now, and makes disks fast.
    pub fn end_faults(&mut self) {
        self.heal_all();
        let hostile = self.net.config().hostile;
        self.net.set_config(NetConfig {
            hostile,
            ..NetConfig::default()
        });
        for n in 0..self.nodes.len() {
            self.nodes[n].disk.slow_until = Duration::ZERO;
            if !self.is_up(n) || self.nodes[n].failed {
                self.restart_at[n] = Some(self.now);
            }
        }
    }

    /// Ends the faults, then runs until the cluster converges ([`caught_up_after_faults`]);
    /// returns how long that took.
    ///
    /// # Errors
    /// Any property that failed meanwhile, or `caught_up_after_faults` if `within` passed.
    pub fn settle(&mut self, within: Duration) -> Result<Duration, Violation> {
        self.end_faults();
        let start = self.now;
        loop {
            self.run_for(SETTLE_POLL)?;
            match caught_up_after_faults(self) {
                Convergence::Done => return Ok(self.now - start),
                Convergence::Waiting(why) if self.now - start >= within => {
                    let m = format!("not converged {within:?} after the faults ended: {why}");
                    return Err(Violation::new("caught_up_after_faults", m));
                }
                Convergence::Waiting(_) => {}
            }
        }
    }

    /// Checks every property over the whole cluster now (not incrementally).
    ///
    /// # Errors
    /// The first that fails.
    pub fn check_invariants(&mut self) -> Result<(), Violation> {
        if let Some(v) = &self.violation {
            return Err(v.clone());
        }
        self.check_full()
    }

    /// The primary's last LSN (0 without a primary).
    pub fn last_lsn(&self) -> Lsn {
        self.primary()
            .map_or(Lsn::ZERO, |p| self.nodes[p].log.last_lsn())
    }
}
