//! One replica: the sans-I/O core of a node. Its role (primary or follower) is a value that
//! can change; it takes [`Input`]s with the time they happened and returns [`Action`]s.
//!
//! Inside: the role's state machine, one frame decoder per connection, the handshake nonces
//! (from a seeded source), the start gate's waiting appends, the commit deadlines of appends
//! waiting for a remote level, and the rule that a failed log stops everything. Outside, in
//! an executor (the node, the simulator): sockets, the log, the clock, threads, and the
//! randomness that seeds this. Nothing here reads a clock or blocks.

mod failover;

pub use self::failover::failover_follower;

use crate::log_summary::{PerAddress, Summary, SUMMARY_INTERVAL};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use logship_engine::{Lsn, RangeDigest, DEFAULT_DIGEST_RANGE_RECORDS};

use crate::election::Elector;
use crate::fetch::IntegrityAction;
use crate::follower::Follower;
use crate::integrity::{report_mismatches, Damaged, IntegrityRules, RepairStep};
use crate::primary::Primary;
use crate::protocol::frame::{FrameDecoder, DEFAULT_MAX_BODY_BYTES};
use crate::protocol::msg::MAX_DIGESTS_PER_FRAME;
use crate::protocol::{DurabilityLevel, FrameError, Msg};
use crate::vocab::{
    Action, ConnId, ElectionConfig, ElectionState, EpochHistory, FollowerConfig, Input,
    NonceSource, PrimaryConfig, Tail, Timeouts, WaitError, WaiterId,
};

/// What the replica is now.
#[derive(Debug)]
pub enum Role {
    /// Accepts appends and streams them to its followers.
    Primary(Box<Primary>),
    /// Takes records from a primary.
    Follower(Box<Follower>),
}

/// Counters the replica keeps for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaCounters {
    /// Connections opened (either way).
    pub connections: u64,
    /// Connections ended by a malformed frame.
    pub malformed_frames: u64,
    /// Appends that failed their commit deadline (or the start gate's).
    pub quorum_timeouts: u64,
    /// Times this node stopped being the primary by check-quorum.
    pub step_downs: u64,
}

/// An append waiting for its remote level, until its deadline.
#[derive(Clone, Copy, Debug)]
struct Deadline {
    at: Duration,
    since: Duration,
    waiter: WaiterId,
    level: DurabilityLevel,
    lsn: Lsn,
}

/// One sans-I/O replica. See the module documentation.
#[derive(Debug)]
pub struct Replica {
    role: Role,
    timeouts: Timeouts,
    decoders: BTreeMap<ConnId, FrameDecoder>,
    nonces: NonceSource,
    /// Appends waiting for the start gate: (waiter, level, since).
    gated: VecDeque<(WaiterId, DurabilityLevel, Duration)>,
    /// Appends waiting for a remote level; deadlines rise (one commit timeout for all).
    deadlines: VecDeque<Deadline>,
    /// The commit LSNs last reported with [`Action::Committed`].
    committed: [Lsn; 4],
    /// Why the log failed, once it did: the replica then accepts nothing.
    failed: Option<String>,
    counters: ReplicaCounters,
    integrity: IntegrityRules,
    /// Failover: the elector (`None`: the role is fixed by configuration).
    election: Option<Elector>,
    /// The election state last handed to the executor to persist.
    persisted: Option<ElectionState>,
    /// The number of the last `Persist` action.
    persist_seq: u64,
    /// The log's first LSN (an elected primary starts from it).
    first_lsn: Lsn,
    /// Connections a primary accepted: each may carry one vote request before its deadline.
    vote_conns: BTreeMap<ConnId, Duration>,
    /// A former primary waits for its log's tail ([`Action::ReadTail`]).
    tail_pending: bool,
    /// When the follower last heard its primary, as the election timer last saw it.
    heard: Option<Duration>,
    /// When this node became primary by election.
    primary_since: Duration,
    /// The disk stalled: no votes, no candidacy (and a primary steps down).
    stalled: bool,
    /// A planned switchover under way: appends wait while the target catches up.
    handover: Option<failover::Handover>,
    /// Malformed frames, logged as one summary line per interval and remote address.
    malformed_log: PerAddress,
    /// The remote address of each accepted connection, until it closes.
    peers: BTreeMap<ConnId, SocketAddr>,
    /// Appends failed for want of a quorum, logged as one summary line per interval.
    quorum_failed_log: Summary,
    /// The primary was degraded when it last reported commit LSNs.
    committed_degraded: bool,
}

impl Replica {
    /// A primary. `nonces` seeds the handshake nonces.
    pub fn primary(primary: Primary, nonces: NonceSource) -> Replica {
        let committed = primary.committed();
        let timeouts = primary.config().timeouts;
        Replica::with_role(
            Role::Primary(Box::new(primary)),
            timeouts,
            committed,
            nonces,
        )
    }

    /// A new primary for `config` whose log holds `first..=last`, durable up to `durable`;
    /// `seed` drives the backoff jitter.
    pub fn new_primary(
        config: PrimaryConfig,
        (first, last, durable): (Lsn, Lsn, Lsn),
        seed: u64,
        nonces: NonceSource,
    ) -> Replica {
        Replica::primary(Primary::new(config, first, last, durable, seed), nonces)
    }

    /// A follower whose log is at `tail`.
    pub fn new_follower(config: FollowerConfig, tail: Tail, nonces: NonceSource) -> Replica {
        let timeouts = config.timeouts;
        let follower = Follower::new(config, tail);
        Replica::with_role(
            Role::Follower(Box::new(follower)),
            timeouts,
            [Lsn::ZERO; 4],
            nonces,
        )
    }

    fn with_role(
        role: Role,
        timeouts: Timeouts,
        committed: [Lsn; 4],
        nonces: NonceSource,
    ) -> Replica {
        Replica {
            role,
            timeouts,
            decoders: BTreeMap::new(),
            nonces,
            gated: VecDeque::new(),
            deadlines: VecDeque::new(),
            committed,
            failed: None,
            counters: ReplicaCounters::default(),
            integrity: IntegrityRules::new(true, DEFAULT_DIGEST_RANGE_RECORDS),
            election: None,
            persisted: None,
            persist_seq: 0,
            first_lsn: Lsn::FIRST,
            vote_conns: BTreeMap::new(),
            tail_pending: false,
            heard: None,
            primary_since: Duration::ZERO,
            stalled: false,
            handover: None,
            malformed_log: PerAddress::default(),
            peers: BTreeMap::new(),
            quorum_failed_log: Summary::default(),
            committed_degraded: false,
        }
    }

    /// Whether the last [`Action::Committed`] came from a degraded primary (its remote levels
    /// followed local durability), even if the same step then ended its reign.
    pub fn committed_degraded(&self) -> bool {
        self.committed_degraded
    }

    /// A replica with automatic failover: it starts as a follower whose log holds
    /// `first..=tail.last`, in the persisted election `state` (its history clipped to the
    /// log), and stands for election when it hears no primary. `seed` drives the election
    /// timeouts; `now` starts the election timer.
    pub fn with_failover(
        config: ElectionConfig,
        (first, tail): (Lsn, Tail),
        state: ElectionState,
        (seed, nonces): (u64, NonceSource),
        now: Duration,
    ) -> Replica {
        let follower = failover_follower(&config, tail, state.history.clone());
        let elector = Elector::new(config, state.epoch, state.voted_for.clone(), seed, now);
        let mut r = Replica::with_role(
            Role::Follower(Box::new(follower)),
            elector.config().follower.timeouts,
            [Lsn::ZERO; 4],
            nonces,
        );
        r.persisted = Some(state);
        r.election = Some(elector);
        r.first_lsn = first;
        r
    }

    /// The same replica with its log's epoch history, read from the log by the executor (a
    /// fixed primary's or follower's; an elected node's comes with its persisted state).
    pub fn with_history(mut self, history: EpochHistory) -> Replica {
        self.role = match self.role {
            Role::Primary(p) => Role::Primary(Box::new(p.with_history(history))),
            Role::Follower(f) => Role::Follower(Box::new(f.with_history(history))),
        };
        self
    }

    /// The same replica with these integrity rules (the default repairs, with the engine's
    /// default digest ranges).
    pub fn with_integrity(mut self, rules: IntegrityRules) -> Replica {
        self.integrity = rules;
        self
    }

    /// The integrity rules' state (digests compared, the repair in flight), for status.
    pub fn integrity(&self) -> &IntegrityRules {
        &self.integrity
    }

    /// The role.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The primary's machine, if this is the primary.
    pub fn as_primary(&self) -> Option<&Primary> {
        match &self.role {
            Role::Primary(p) => Some(p),
            Role::Follower(_) => None,
        }
    }

    /// The follower's machine, if this is a follower.
    pub fn as_follower(&self) -> Option<&Follower> {
        match &self.role {
            Role::Follower(f) => Some(f),
            Role::Primary(_) => None,
        }
    }

    /// Changes the role: every connection of the old role is closed (sessions start
    /// again under the new one), and a primary that stops being one fails every append still
    /// waiting with `NotPrimary` (whether its record reaches a quorum is not known here).
    pub fn change_role(&mut self, role: Role) -> Vec<Action> {
        let mut out: Vec<Action> = (std::mem::take(&mut self.decoders).into_keys())
            .map(|conn| Action::Close {
                conn,
                reason: "this node's role changed".into(),
            })
            .collect();
        if matches!(self.role, Role::Primary(_)) {
            self.gated.clear();
            self.deadlines.clear();
            out.push(Action::FailWaiting {
                error: WaitError::NotPrimary,
            });
        }
        self.committed = match &role {
            Role::Primary(p) => p.committed(),
            Role::Follower(_) => [Lsn::ZERO; 4],
        };
        self.timeouts = match &role {
            Role::Primary(p) => p.config().timeouts,
            Role::Follower(f) => f.timeouts(),
        };
        if matches!(role, Role::Primary(_)) {
            out.push(Action::RestartCommitted(self.committed));
        }
        self.role = role;
        out
    }

    /// Replaces the cluster key ring of the role and of the elector (see [`Input::KeyRing`]).
    fn set_key_ring(&mut self, ring: crate::protocol::auth::KeyRing) {
        match &mut self.role {
            Role::Primary(p) => p.set_key_ring(ring.clone()),
            Role::Follower(f) => f.set_key_ring(ring.clone()),
        }
        if let Some(e) = &mut self.election {
            e.set_key_ring(ring);
        }
    }

    /// Whether appends are served now (a primary whose start gate is open, with a working log).
    pub fn serving(&self) -> bool {
        self.failed.is_none() && self.as_primary().is_some_and(Primary::serving)
    }

    /// Why the log failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The commit LSN of every level (all zero on a follower).
    pub fn committed(&self) -> [Lsn; 4] {
        self.committed
    }

    /// The counters.
    pub fn counters(&self) -> ReplicaCounters {
        self.counters
    }

    /// Appends waiting for the start gate or a remote level.
    pub fn waiting(&self) -> usize {
        self.gated.len() + self.deadlines.len()
    }

    /// Takes one input that happened at `now` (time since the executor started; it never goes
    /// backwards) and returns what to do, in order.
    pub fn step(&mut self, now: Duration, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        self.step_into(now, input, &mut out);
        out
    }

    /// [`Replica::step`], appending the actions to `out`.
    pub fn step_into(&mut self, now: Duration, input: Input, out: &mut Vec<Action>) {
        let start = out.len();
        match input {
            Input::Tick => self.on_tick(now, out),
            Input::ClientAppend { waiter, level } => self.on_client_append(now, waiter, level, out),
            Input::Appended { waiter, level, lsn } => self.on_appended(now, waiter, level, lsn),
            Input::LogFailed { cause } => self.on_log_failed(cause, out),
            Input::LogCut { last } => {
                if let Role::Primary(p) = &mut self.role {
                    p.on_log_cut(now, last, out);
                }
            }
            Input::Dialed { .. }
            | Input::DialedVoter { .. }
            | Input::Connected { .. }
            | Input::Accepted { .. }
            | Input::Closed { .. }
            | Input::Data { .. } => self.on_network(now, input, out),
            Input::LocalDigests(ranges) => self.on_local_digests(&ranges, out),
            Input::Damaged(damaged) => self.on_damaged(now, &damaged, out),
            Input::Repaired { first, result } => self.on_repaired(now, first, result),
            Input::Tail(tail) => self.on_tail(tail),
            Input::Promote { target } => self.on_promote(now, target, out),
            Input::KeyRing(ring) => self.set_key_ring(ring),
            Input::DiskStalled(stalled) => self.on_disk_stalled(now, stalled, out),
            Input::Purged(first) => {
                self.first_lsn = self.first_lsn.max(first);
                self.on_log(now, Input::Purged(first), out);
            }
            other => self.on_log(now, other, out),
        }
        self.take_integrity(now, out, start);
        self.after_step(out);
        self.try_hand_over(now, out);
        self.persist(out);
        #[cfg(debug_assertions)]
        self.check_invariants();
    }

    fn on_network(&mut self, now: Duration, input: Input, out: &mut Vec<Action>) {
        match input {
            Input::Dialed { link, conn } => {
                if let Role::Primary(p) = &mut self.role {
                    p.connect_started(link, conn);
                }
            }
            Input::DialedVoter { member, conn } => {
                if let Some(e) = &mut self.election {
                    e.dialed(member, conn);
                }
            }
            Input::Connected { conn } | Input::Accepted { conn, .. } => {
                let peer = match input {
                    Input::Accepted { peer, .. } => Some(peer),
                    _ => None,
                };
                if let Some(peer) = peer {
                    self.peers.insert(conn, peer);
                }
                self.counters.connections += 1;
                self.decoders
                    .insert(conn, FrameDecoder::new(DEFAULT_MAX_BODY_BYTES));
                let nonce = self.nonces.next_nonce();
                let accepted = matches!(input, Input::Accepted { .. });
                if self.owns_vote(conn) {
                    let last = self.last_position();
                    let e = self.election.as_mut().expect("checked");
                    return e.connected(conn, last, out);
                }
                match &mut self.role {
                    Role::Primary(_) if accepted && self.election.is_some() => {
                        self.accept_on_primary(now, conn)
                    }
                    Role::Primary(p) => p.on_connected(now, conn, nonce, out),
                    Role::Follower(f) => f.on_accepted(now, conn, peer, nonce),
                }
            }
            Input::Closed { conn, why } => {
                self.decoders.remove(&conn);
                self.peers.remove(&conn);
                if self.failover_closed(conn) {
                    return;
                }
                match &mut self.role {
                    Role::Primary(p) => p.on_closed(now, conn, why, out),
                    Role::Follower(f) => f.on_closed(conn),
                }
            }
            Input::Data { conn, bytes } => self.on_data(now, conn, bytes, out),
            _ => unreachable!("not a network input"),
        }
    }

    /// Bytes on `conn`: every frame they complete goes to the role; a malformed one ends the
    /// connection.
    fn on_data(&mut self, now: Duration, conn: ConnId, bytes: BytesMut, out: &mut Vec<Action>) {
        let Some(d) = self.decoders.get_mut(&conn) else {
            return;
        };
        d.push_owned(bytes);
        let mut frames = Vec::new();
        let failure = loop {
            match d
                .next_frame()
                .and_then(|f| f.map(|f| Msg::decode(&f)).transpose())
            {
                Ok(Some(m)) => frames.push(m),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        if failure.is_some() {
            self.decoders.remove(&conn);
        }
        for m in frames {
            let Some(m) = self.intercept(now, conn, m, out) else {
                continue;
            };
            match &mut self.role {
                Role::Primary(p) => p.on_frame(now, conn, m, out),
                Role::Follower(f) => f.on_frame(now, conn, m, out),
            }
            self.note_session_epoch(now, out);
        }
        if let Some(e) = failure {
            self.on_malformed(now, conn, &e, out);
        }
    }

    fn on_malformed(&mut self, now: Duration, conn: ConnId, e: &FrameError, out: &mut Vec<Action>) {
        self.counters.malformed_frames += 1;
        let peer = (self.peers.get(&conn)).map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
        if let Some(line) = self.malformed_log.note(now, peer, &e.to_string()) {
            tracing::warn!(
                frames = line.count,
                address = %line.address_text(),
                last_conn = conn.0,
                last_error = %line.last_reason,
                "malformed frames: closing their connections (one line per {} s at most per remote address, with the count since the last)",
                SUMMARY_INTERVAL.as_secs()
            );
        }
        match &mut self.role {
            Role::Primary(p) => p.on_frame_error(now, conn, e, out),
            Role::Follower(f) => f.on_frame_error(now, conn, e, out),
        }
    }

    /// Completions of log work the replica asked for, and the log's own progress.
    fn on_log(&mut self, now: Duration, input: Input, out: &mut Vec<Action>) {
        match &mut self.role {
            Role::Primary(p) => Self::primary_log(p, now, input, out),
            Role::Follower(f) => Self::follower_log(f, now, input, out),
        }
    }

    /// A primary's log inputs; those of the other role (a completion that arrives after a
    /// role change) are dropped.
    fn primary_log(p: &mut Primary, now: Duration, input: Input, out: &mut Vec<Action>) {
        match input {
            Input::Written {
                first,
                last,
                records,
            } => p.on_batch(now, first, last, &records, out),
            Input::Durable(lsn) => p.on_local_durable(now, lsn),
            Input::Purged(first) => p.on_purged(first),
            Input::Chunk {
                link,
                conn,
                from,
                result,
            } => p.on_chunk(now, link, conn, from, result, out),
            Input::Crc { link, conn, crc } => p.on_crc(now, link, conn, crc, out),
            Input::TakenBack { link, conn, result } => {
                p.on_taken_back(now, link, conn, result, out)
            }
            Input::FetchRead {
                link: Some(link),
                conn,
                request,
                prev_crc,
                read,
            } => p.send_answer(link, conn, request.answer(prev_crc, read), out),
            _ => {}
        }
    }

    /// A follower's log inputs; those of the other role are dropped.
    fn follower_log(f: &mut Follower, now: Duration, input: Input, out: &mut Vec<Action>) {
        match input {
            Input::Durable(lsn) => f.on_durable(now, lsn, out),
            Input::Applied(lsn) => f.on_applied(now, lsn, out),
            Input::FetchRead {
                link: None,
                conn,
                request,
                prev_crc,
                read,
            } => f.send_answer(conn, request.answer(prev_crc, read), out),
            Input::Truncated {
                done: true, tail, ..
            } => f.on_truncated(tail.last_crc, tail.last_epoch),
            Input::Truncated {
                after,
                found_crc,
                tail,
                ..
            } => {
                let m = format!(
                    "record {after} here has CRC {found_crc:#010x}, not the primary's: the logs diverged before it"
                );
                tracing::error!("{m}; refusing to truncate");
                f.on_truncate_refused(after, m, tail, out);
            }
            Input::AppendFailed { reason, tail } => {
                tracing::warn!(error = %reason, "appending replicated records failed");
                f.on_append_failed(reason, tail, out);
            }
            _ => {}
        }
    }

    /// This node's digests: compared with its peers', then sent to them.
    fn on_local_digests(&mut self, ranges: &[RangeDigest], out: &mut Vec<Action>) {
        report_mismatches(&self.integrity.add_local(ranges));
        for chunk in ranges.chunks(MAX_DIGESTS_PER_FRAME) {
            match &mut self.role {
                Role::Primary(p) => p.send_digests(chunk, out),
                Role::Follower(f) => f.send_digests(chunk.to_vec(), out),
            }
        }
    }

    /// The log's damaged ranges: seal, start a repair fetch, or wait.
    fn on_damaged(&mut self, now: Duration, damaged: &[Damaged], out: &mut Vec<Action>) {
        let d = match self.integrity.next(now, damaged) {
            RepairStep::Wait => return,
            RepairStep::SealActive => return out.push(Action::SealActive),
            RepairStep::Fetch(d) => d,
        };
        let range = (d.first, d.last);
        let started = match &mut self.role {
            Role::Primary(p) => p.start_repair(now, range, d.prev_crc, out),
            Role::Follower(f) => f.start_repair(now, range, d.prev_crc, out),
        };
        // Not started (no session to fetch on yet, or no follower holds the range): the next
        // report tries again.
        if started {
            tracing::warn!(first = %d.first, last = %d.last, "repairing a damaged range from a replica");
            self.integrity.started(now, d.first);
        }
    }

    fn on_repaired(&mut self, now: Duration, first: Lsn, result: Result<(), String>) {
        if let Err(reason) = &result {
            tracing::warn!(%first, %reason, "replacing a damaged range failed; retrying later");
        }
        self.integrity.ended(now, first, result.is_err());
    }

    /// The roles' integrity actions since `start`: peers' digests are compared here, fetched
    /// repairs checked against a second source before the executor applies them, failures
    /// noted for a later retry.
    fn take_integrity(&mut self, now: Duration, out: &mut Vec<Action>, start: usize) {
        let mut i = start;
        while i < out.len() {
            let Action::Integrity(a) = &out[i] else {
                i += 1;
                continue;
            };
            match a {
                IntegrityAction::PeerDigests { peer, ranges } => {
                    report_mismatches(&self.integrity.add_peer(peer, ranges));
                    out.remove(i);
                    continue;
                }
                IntegrityAction::Repair {
                    base,
                    chunks,
                    source,
                } => {
                    if let Err(why) = self.integrity.check_fetched(source, chunks) {
                        let (base, reason) = (*base, format!("from {source}: {why}"));
                        self.integrity.ended(now, base, true);
                        out[i] = Action::Integrity(IntegrityAction::RepairFailed { base, reason });
                    }
                }
                IntegrityAction::RepairFailed { base, .. } => {
                    self.integrity.ended(now, *base, true);
                }
            }
            i += 1;
        }
    }

    fn on_client_append(
        &mut self,
        now: Duration,
        waiter: WaiterId,
        level: DurabilityLevel,
        out: &mut Vec<Action>,
    ) {
        let error = match (&self.failed, &self.role) {
            (Some(cause), _) => WaitError::Poisoned {
                cause: cause.clone(),
            },
            (None, Role::Follower(_)) => WaitError::NotPrimary,
            (None, Role::Primary(p)) if p.serving() && self.handover.is_none() => {
                return out.push(Action::Admit { waiter })
            }
            (None, Role::Primary(_)) => return self.gated.push_back((waiter, level, now)),
        };
        out.push(Action::FailWait { waiter, error });
    }

    fn on_appended(&mut self, now: Duration, waiter: WaiterId, level: DurabilityLevel, lsn: Lsn) {
        if level == DurabilityLevel::Local {
            return;
        }
        if let Role::Primary(p) = &mut self.role {
            p.on_client_appended(now, lsn);
        }
        if self.committed[level as usize] >= lsn {
            return;
        }
        self.deadlines.push_back(Deadline {
            at: now + self.timeouts.commit,
            since: now,
            waiter,
            level,
            lsn,
        });
    }

    fn on_log_failed(&mut self, cause: String, out: &mut Vec<Action>) {
        if self.failed.is_some() {
            return;
        }
        tracing::error!(%cause, "the log failed: this node accepts nothing until it is restarted");
        self.failed = Some(cause.clone());
        self.gated.clear();
        self.deadlines.clear();
        out.push(Action::FailAll { cause });
    }

    fn on_tick(&mut self, now: Duration, out: &mut Vec<Action>) {
        match &mut self.role {
            Role::Primary(p) => p.tick(now, out),
            Role::Follower(f) => f.tick(now, out),
        }
        self.failover_tick(now, out);
        self.expire(now, out);
    }

    /// Fails appends whose commit deadline passed, and appends the start gate held too long.
    fn expire(&mut self, now: Duration, out: &mut Vec<Action>) {
        let quorum = self
            .as_primary()
            .map_or_else(String::new, |p| p.quorum_text().to_string());
        let failed_before = self.counters.quorum_timeouts;
        while let Some(d) = self.deadlines.front().copied() {
            if d.at > now {
                break;
            }
            self.deadlines.pop_front();
            if self.committed[d.level as usize] >= d.lsn {
                continue;
            }
            self.counters.quorum_timeouts += 1;
            let error = WaitError::QuorumUnavailable {
                level: d.level,
                lsn: d.lsn,
                waited: now.saturating_sub(d.since),
                quorum: quorum.clone(),
            };
            out.push(Action::FailWait {
                waiter: d.waiter,
                error,
            });
        }
        while let Some(&(waiter, level, since)) = self.gated.front() {
            if since + self.timeouts.commit > now {
                break;
            }
            self.gated.pop_front();
            self.counters.quorum_timeouts += 1;
            let error = WaitError::QuorumUnavailable {
                level,
                lsn: Lsn::ZERO,
                waited: now.saturating_sub(since),
                quorum: format!(
                    "{quorum} (not serving yet: taking back records from the sync followers first)"
                ),
            };
            out.push(Action::FailWait { waiter, error });
        }
        self.log_quorum_failures(now, self.counters.quorum_timeouts - failed_before, &quorum);
    }

    /// A summary line for appends failed for want of a quorum, naming the sync followers that
    /// are missing.
    fn log_quorum_failures(&mut self, now: Duration, failed: u64, quorum: &str) {
        if failed == 0 {
            return;
        }
        let Some(appends) = self.quorum_failed_log.note(now, failed) else {
            return;
        };
        let missing = self
            .as_primary()
            .map(|p| p.missing_sync_followers().join(", "))
            .unwrap_or_default();
        tracing::warn!(
            appends,
            quorum,
            missing = %missing,
            "appends failed: the sync quorum did not hold them within timeouts.commit_ms (one line per {} s at most, with the count since the last)",
            SUMMARY_INTERVAL.as_secs()
        );
    }

    /// After every input: report commit progress, admit appends the gate held once it opens,
    /// drop deadlines their level met.
    fn after_step(&mut self, out: &mut Vec<Action>) {
        let Role::Primary(p) = &self.role else {
            return;
        };
        let now = p.committed();
        if now.iter().zip(&self.committed).any(|(n, c)| n < c) {
            // The owner cut the primary's log: the LSNs past the cut will name new records, so
            // the waiters' levels start again from the cut (else a new append would find its
            // LSN committed by the old record's acknowledgement).
            self.committed = now;
            out.push(Action::RestartCommitted(now));
        } else if now != self.committed {
            for (c, n) in self.committed.iter_mut().zip(now) {
                *c = (*c).max(n);
            }
            out.push(Action::Committed(self.committed));
            self.committed_degraded = p.status_degraded();
            let committed = self.committed;
            self.deadlines
                .retain(|d| committed[d.level as usize] < d.lsn);
        }
        if p.serving() && self.failed.is_none() && self.handover.is_none() {
            out.extend(
                self.gated
                    .drain(..)
                    .map(|(waiter, ..)| Action::Admit { waiter }),
            );
        }
    }

    /// Asserts the replica's invariants (and its role's): checked after every step in debug
    /// builds, and always by the simulator.
    pub fn check_invariants(&self) {
        let [local, ..] = self.committed;
        for level in &self.committed[1..] {
            assert!(
                *level <= local,
                "a level passed local: {:?}",
                self.committed
            );
        }
        assert!(
            self.deadlines
                .iter()
                .zip(self.deadlines.iter().skip(1))
                .all(|(a, b)| a.at <= b.at),
            "commit deadlines out of order"
        );
        match &self.role {
            Role::Primary(p) => p.check_invariants(),
            Role::Follower(f) => f.check_invariants(),
        }
    }
}
