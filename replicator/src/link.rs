//! One follower link, seen from the primary: connect with backoff behind a circuit breaker,
//! authenticate, decide where streaming starts, then stream (live batches, or chunks read from
//! the log while the follower is behind), heartbeat, and track the follower's progress and lag.
//!
//! Pure: the link returns [`Action`]s and is told their outcomes as events. Invariants:
//! records are sent in LSN order without gaps from the agreed start; no record is sent before
//! the follower has proven the cluster key; unacknowledged bytes stay under the window.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use logship_engine::{Chunk, Epoch, Lsn};

use crate::backoff::Backoff;
use crate::backoff::Rng;
use crate::breaker::CircuitBreaker;
use crate::commit::Progress;
use crate::fetch::{FetchProgress, FetchRequest, Fetcher, IntegrityAction, Purpose};
use crate::lag::{AckLevel, LagClock};
use crate::pacing::{Pacer, PACED_CHUNKS_IN_FLIGHT};
use crate::protocol::auth::{self, Role, Transcript, NONCE_LEN};
use crate::protocol::msg::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::protocol::{Msg, RejectCode};
use crate::status::PrimaryCounters;
pub use crate::status::{LinkCounters, Phase};
use crate::vocab::{Action, ConnId, EpochHistory, NodeId, PrimaryConfig, ReadError};

/// What a link needs from the primary while it handles an event.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub(crate) config: &'a PrimaryConfig,
    pub(crate) link: usize,
    pub(crate) first_lsn: Lsn,
    pub(crate) last_lsn: Lsn,
    pub(crate) commit_lsn: Lsn,
    /// The lowest LSN the log was truncated after since this primary started.
    pub(crate) truncated_at: Option<Lsn>,
    /// Once serving: the primary's last LSN when it began to (see `Primary`'s `fence`).
    pub(crate) fence: Option<Lsn>,
    /// Appends are served (the start gate is open).
    pub(crate) serving: bool,
    /// Some link is taking back records.
    pub(crate) taking_back: bool,
    /// The primary's epoch history (sessions are planned from it; records taken back graft
    /// their follower's epochs onto it).
    pub(crate) history: &'a mut EpochHistory,
    /// While the start gate is closed: each quorum member heard, with the (epoch, LSN) of
    /// its last record if its log continues the primary's beyond its end (a take-back source).
    pub(crate) gate_heard: &'a mut BTreeMap<NodeId, Option<(Epoch, Lsn)>>,
    /// Quorum members that must be heard before the gate opens.
    pub(crate) gate_needed: usize,
    pub(crate) rng: &'a mut Rng,
    pub(crate) counters: &'a mut PrimaryCounters,
    /// The catch-up allowance every lagging follower's reads draw from.
    pub(crate) pacer: &'a mut Pacer,
}

impl Ctx<'_> {
    pub(crate) fn rejected(&mut self, code: RejectCode) {
        *self.counters.rejected.entry(code.as_str()).or_default() += 1;
    }

    pub(crate) fn refused_by_peer(&mut self, code: RejectCode) {
        *self
            .counters
            .refused_by_peer
            .entry(code.as_str())
            .or_default() += 1;
    }
}

/// How often a link whose breaker refuses a connection asks again.
const BREAKER_POLL: Duration = Duration::from_millis(50);
/// How soon a link that must wait for another link's take-back tries again.
const TAKE_BACK_RETRY: Duration = Duration::from_millis(100);

#[derive(Debug)]
enum CatchUp {
    Live,
    Reading { from: Lsn, deadline: Duration },
    Waiting,
}

#[derive(Debug)]
struct Stream {
    conn: ConnId,
    next_send: Lsn,
    /// (last LSN of a sent frame, bytes sent up to and including it)
    inflight: VecDeque<(Lsn, u64)>,
    sent_bytes: u64,
    acked_bytes: u64,
    catch_up: CatchUp,
    last_sent: Duration,
    /// Records the follower holds and the primary does not, being taken back.
    take_back: Option<TakeBack>,
    /// A fetch for a repair of the primary's log.
    repair: Option<Fetcher>,
    next_fetch_id: u64,
}

impl Stream {
    /// A new fetch on this session, and its first request.
    fn fetch(
        &mut self,
        purpose: Purpose,
        range: (Lsn, Lsn),
        prev_crc: Option<u32>,
        now: Duration,
        ctx: &Ctx<'_>,
    ) -> (Fetcher, Msg) {
        let id = self.next_fetch_id;
        self.next_fetch_id += 1;
        let timeout = ctx.config.timeouts.catch_up_read;
        Fetcher::start(purpose, id, range, prev_crc, now, timeout)
    }

    /// Ends the repair fetch, telling the driver why it failed.
    fn end_repair(&mut self, reason: String, out: &mut Vec<Action>) {
        if let Some(failed) = self.repair.take().and_then(|f| f.failed(reason)) {
            out.push(Action::Integrity(failed));
        }
    }
}

/// Taking back `..=to` from the follower: fetched chunks are appended to the primary's log by
/// the driver, which confirms each one; done when `appended` reaches `to`.
#[derive(Debug)]
struct TakeBack {
    fetcher: Option<Fetcher>,
    from: Lsn,
    to: Lsn,
    appended: Lsn,
    /// The follower's epoch history: the records taken back keep their epochs.
    history: EpochHistory,
}

/// Where a session starts, decided from the follower's last LSN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// An empty follower and a log that still starts at LSN 1.
    Fresh,
    /// Continue after the follower's last LSN, once its CRC matches the primary's record.
    Compare(Lsn),
    /// Truncate the follower after this LSN (it is ahead, or past a truncation of the
    /// primary's log) and send the primary's CRC there for the follower to check.
    Cut(Lsn),
    /// The follower holds records after the primary's last LSN (this one) that the primary
    /// lost: take them back, checked against the primary's CRC here, before serving.
    TakeBack(Lsn),
    /// The record the follower would continue from (or be checked at) was purged.
    Purged,
    /// The primary's log is empty and the follower's is not: nothing to compare, and cutting
    /// the follower to nothing could throw away everything the cluster acknowledged.
    Unrelated,
}

/// Whether a follower can be cut after `c` with the primary's record there checked (or at 0,
/// with nothing to check, if the log still starts at LSN 1).
fn can_cut_at(ctx: &Ctx<'_>, c: Lsn) -> bool {
    (c >= ctx.first_lsn && c <= ctx.last_lsn) || (c == Lsn::ZERO && ctx.first_lsn <= Lsn::FIRST)
}

/// An elected primary's plan: continue after the last LSN both logs share by their epoch
/// histories, cutting the follower there if it holds more (records of an epoch this log does
/// not have there were never committed: the election chose a log holding every committed one).
fn plan_by_epochs(ctx: &Ctx<'_>, reply: &Pending) -> Plan {
    let shared = (ctx.history).common_prefix(ctx.last_lsn, &reply.history, reply.last_lsn);
    let held = |lsn: Lsn| lsn >= ctx.first_lsn && lsn <= ctx.last_lsn;
    match shared {
        l if l == Lsn::ZERO && ctx.first_lsn <= Lsn::FIRST && reply.last_lsn == Lsn::ZERO => {
            Plan::Fresh
        }
        l if l == reply.last_lsn && held(l) => Plan::Compare(l),
        l if can_cut_at(ctx, l) => Plan::Cut(l),
        _ => Plan::Purged,
    }
}

/// A fixed primary's plan. Where the two logs part below both tails (their epoch histories
/// differ there), the follower's records after the parting were never acknowledged, and it is
/// cut there: no acknowledged record differs from the primary's log at an LSN it holds. Its
/// own records were durable there since it wrote them (no later start writes at those LSNs),
/// and records it took back came from the quorum member whose last record was newest among
/// enough members to hold every acknowledged record (see [`take_back_turn`]). Otherwise the
/// follower continues, is taken back from, or is cut at the fence, as [`plan_start`] decides.
fn plan_fixed(ctx: &Ctx<'_>, reply: &Pending) -> Plan {
    let shared = (ctx.history).common_prefix(ctx.last_lsn, &reply.history, reply.last_lsn);
    if shared < ctx.last_lsn.min(reply.last_lsn) && can_cut_at(ctx, shared) {
        return Plan::Cut(shared);
    }
    plan_start(ctx, reply.last_lsn)
}

/// A fixed primary that writes in an epoch (its executor set one) takes back only records of
/// older epochs: its own earlier starts wrote them.
fn fixed_epoch_behind(ctx: &Ctx<'_>, reply: &Pending) -> bool {
    let epoch = ctx.config.epoch;
    !ctx.config.failover && epoch > Epoch(0) && reply.last_epoch >= epoch
}

/// Whether a closed start gate takes back records from this follower now: enough quorum
/// members have been heard to include one holding every acknowledged record, and no member
/// whose log continues the primary's holds a newer last record (a newer epoch first, then a
/// longer log). The newest holds every acknowledged record the others hold: each start of the
/// primary took back every acknowledged record before it wrote anything.
fn take_back_turn(ctx: &Ctx<'_>, reply: &Pending) -> bool {
    let own = (reply.last_epoch, reply.last_lsn);
    ctx.gate_heard.len() >= ctx.gate_needed && ctx.gate_heard.values().flatten().all(|p| *p <= own)
}

fn plan_start(ctx: &Ctx<'_>, l: Lsn) -> Plan {
    if l > ctx.last_lsn && !ctx.serving && ctx.truncated_at.is_none() {
        return Plan::TakeBack(ctx.last_lsn);
    }
    if l > Lsn::ZERO
        && ctx.last_lsn == Lsn::ZERO
        && ctx.truncated_at.is_none()
        && ctx.fence.is_none()
    {
        // An empty primary (a new disk?) never empties a follower: it has nothing to compare.
        return Plan::Unrelated;
    }
    // A follower ahead of a serving primary holds, after the fence, only records of a history
    // this log lost (new records reach a follower only after it was cut back to the fence).
    let ahead_cut = ctx.fence.map_or(ctx.last_lsn, |f| f.min(ctx.last_lsn));
    let cut = match ctx.truncated_at {
        Some(t) if l > t => Some(t.min(ahead_cut)),
        _ if l > ctx.last_lsn => Some(ahead_cut),
        _ => None,
    };
    let held = |lsn: Lsn| lsn >= ctx.first_lsn && lsn <= ctx.last_lsn;
    match cut {
        Some(c) if c == Lsn::ZERO && ctx.first_lsn <= Lsn::FIRST => Plan::Cut(c),
        Some(c) if held(c) => Plan::Cut(c),
        Some(_) => Plan::Purged,
        None if l == Lsn::ZERO && ctx.first_lsn <= Lsn::FIRST => Plan::Fresh,
        None if l > Lsn::ZERO && held(l) => Plan::Compare(l),
        None => Plan::Purged,
    }
}

#[derive(Debug)]
struct Pending {
    version: u16,
    last_lsn: Lsn,
    /// The epoch in the follower's last record.
    last_epoch: Epoch,
    last_crc: u32,
    follower_nonce: [u8; NONCE_LEN],
    /// The follower's epoch history.
    history: EpochHistory,
}

#[derive(Debug)]
enum State {
    Idle {
        retry_at: Duration,
    },
    Connecting {
        conn: Option<ConnId>,
        deadline: Duration,
    },
    Handshake {
        conn: ConnId,
        nonce: [u8; NONCE_LEN],
        deadline: Duration,
    },
    Verifying {
        conn: ConnId,
        nonce: [u8; NONCE_LEN],
        reply: Pending,
        deadline: Duration,
        plan: Plan,
    },
    Streaming(Box<Stream>),
}

/// One follower link.
#[derive(Debug)]
pub struct Link {
    /// The follower's name.
    pub name: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Counted in the sync quorum.
    pub sync: bool,
    state: State,
    /// What it acknowledged.
    pub progress: Progress,
    last_heard: Duration,
    healthy: bool,
    /// The circuit breaker.
    pub breaker: CircuitBreaker,
    backoff: Backoff,
    /// Lag measurements.
    pub lag: LagClock,
    /// Counters.
    pub counters: LinkCounters,
    /// The follower needs records that were purged.
    pub purged: bool,
    /// The last reason the link failed, for status.
    pub last_error: Option<String>,
    /// A session reached streaming with nothing left to take back: what this follower holds,
    /// the primary holds too.
    settled: bool,
}

impl Link {
    /// A link that connects at once.
    pub fn new(name: NodeId, addr: SocketAddr, sync: bool, config: &PrimaryConfig) -> Link {
        Link {
            name,
            addr,
            sync,
            state: State::Idle {
                retry_at: Duration::ZERO,
            },
            progress: Progress::default(),
            last_heard: Duration::ZERO,
            healthy: false,
            breaker: CircuitBreaker::new(config.breaker),
            backoff: Backoff::new(config.backoff),
            lag: LagClock::default(),
            counters: LinkCounters::default(),
            purged: false,
            last_error: None,
            settled: false,
        }
    }

    /// A session reached streaming with nothing left to take back from this follower.
    pub fn settled(&self) -> bool {
        self.settled
    }

    /// A sync follower that the quorum counts.
    fn in_quorum(&self, ctx: &Ctx<'_>) -> bool {
        let q = ctx.config.quorum.as_ref();
        self.sync && q.is_some_and(|q| q.is_member(self.name.as_str()))
    }

    /// The connection in use, if any.
    pub fn conn(&self) -> Option<ConnId> {
        match &self.state {
            State::Idle { .. } => None,
            State::Connecting { conn, .. } => *conn,
            State::Handshake { conn, .. } | State::Verifying { conn, .. } => Some(*conn),
            State::Streaming(s) => Some(s.conn),
        }
    }

    /// When the follower was last heard from on a streaming session.
    pub fn last_heard(&self) -> Duration {
        self.last_heard
    }

    /// Streaming and heard from within the peer timeout.
    pub fn healthy(&self) -> bool {
        self.healthy && matches!(self.state, State::Streaming(_))
    }

    /// Where the link is.
    pub fn phase(&self) -> Phase {
        match &self.state {
            State::Idle { .. } => Phase::Idle,
            State::Connecting { .. } => Phase::Connecting,
            State::Handshake { .. } | State::Verifying { .. } => Phase::Handshake,
            State::Streaming(s) if matches!(s.catch_up, CatchUp::Live) => Phase::Streaming,
            State::Streaming(_) => Phase::CatchingUp,
        }
    }

    /// The next LSN to send, while streaming.
    pub fn next_send(&self) -> Option<Lsn> {
        match &self.state {
            State::Streaming(s) => Some(s.next_send),
            _ => None,
        }
    }

    /// Timer: connect when due, time out handshakes and silent peers, heartbeat.
    pub fn tick(&mut self, now: Duration, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        let t = ctx.config.timeouts;
        match &mut self.state {
            State::Idle { retry_at } => {
                if now < *retry_at {
                    return;
                }
                if !self.breaker.allow(now) {
                    *retry_at = now + BREAKER_POLL;
                    return;
                }
                out.push(Action::Connect {
                    link: ctx.link,
                    addr: self.addr,
                    timeout: t.connect,
                });
                self.state = State::Connecting {
                    conn: None,
                    deadline: now + t.connect,
                };
            }
            State::Connecting { deadline, .. }
            | State::Handshake { deadline, .. }
            | State::Verifying { deadline, .. } => {
                if now >= *deadline {
                    let what = if matches!(self.state, State::Connecting { .. }) {
                        "connect"
                    } else {
                        "handshake"
                    };
                    self.fail(now, ctx, out, format!("{what} timed out"));
                }
            }
            State::Streaming(_) => self.tick_streaming(now, ctx, out),
        }
    }

    fn tick_streaming(&mut self, now: Duration, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        let t = ctx.config.timeouts;
        let silent = now.saturating_sub(self.last_heard);
        self.healthy = silent < t.peer;
        if silent >= t.peer {
            return self.fail(now, ctx, out, format!("no acknowledgement for {silent:?}"));
        }
        self.expire_fetches(now, ctx, out);
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        match s.catch_up {
            CatchUp::Reading { deadline, .. } if now >= deadline => {
                return self.fail(now, ctx, out, "catch-up read timed out".into());
            }
            CatchUp::Waiting => self.read_more(now, ctx, out),
            _ => {}
        }
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        if now.saturating_sub(s.last_sent) >= t.heartbeat_interval {
            s.last_sent = now;
            out.push(Action::Send {
                conn: s.conn,
                msg: Msg::Heartbeat {
                    commit_lsn: ctx.commit_lsn,
                    last_lsn: ctx.last_lsn,
                },
            });
        }
    }

    /// The transport assigned `conn` to the connect this link asked for.
    pub fn connect_started(&mut self, conn: ConnId) {
        if let State::Connecting { conn: c @ None, .. } = &mut self.state {
            *c = Some(conn);
        }
    }

    /// The connection is up: send Hello with the driver's fresh `nonce`.
    pub fn on_connected(
        &mut self,
        now: Duration,
        conn: ConnId,
        nonce: [u8; NONCE_LEN],
        ctx: &Ctx<'_>,
        out: &mut Vec<Action>,
    ) {
        if !matches!(self.state, State::Connecting { conn: Some(c), .. } if c == conn) {
            out.push(Action::Close {
                conn,
                reason: "stale connection".into(),
            });
            return;
        }
        out.push(Action::Send {
            conn,
            msg: Msg::Hello {
                version_min: MIN_PROTOCOL_VERSION,
                version_max: PROTOCOL_VERSION,
                epoch: ctx.config.epoch,
                last_lsn: ctx.last_lsn,
                nonce,
                cluster_id: ctx.config.cluster_id.clone(),
                node_id: ctx.config.node_id.to_string(),
            },
        });
        let deadline = now + ctx.config.timeouts.handshake;
        self.state = State::Handshake {
            conn,
            nonce,
            deadline,
        };
    }

    /// The connection failed or closed.
    pub fn on_closed(
        &mut self,
        now: Duration,
        conn: ConnId,
        why: String,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
    ) {
        if self.conn() == Some(conn) {
            self.abandon_repair(out, &why);
            self.state = State::Idle { retry_at: now };
            self.fail(now, ctx, out, why);
        }
    }

    /// Gives up on the current connection: closes it, counts a failure, waits a backoff delay.
    fn fail(&mut self, now: Duration, ctx: &mut Ctx<'_>, out: &mut Vec<Action>, why: String) {
        self.abandon_repair(out, &why);
        if let Some(conn) = self.conn() {
            out.push(Action::Close {
                conn,
                reason: why.clone(),
            });
        }
        tracing::info!(follower = %self.name, reason = %why, "replication link down");
        self.breaker.on_failure(now);
        self.counters.failures += 1;
        self.healthy = false;
        self.last_error = Some(why);
        let delay = self.backoff.next_delay(ctx.rng.next_u64());
        self.state = State::Idle {
            retry_at: now + delay,
        };
    }

    /// Ends the current session (if any) so that the next one starts from a fresh handshake.
    pub fn restart(&mut self, now: Duration, ctx: &mut Ctx<'_>, out: &mut Vec<Action>, why: &str) {
        if self.conn().is_some() {
            self.fail(now, ctx, out, why.to_string());
        }
    }

    /// Refuses the session: Reject frame, then close.
    fn reject(
        &mut self,
        now: Duration,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
        code: RejectCode,
        detail: u64,
        message: String,
    ) {
        if let Some(conn) = self.conn() {
            out.push(Action::Send {
                conn,
                msg: Msg::Reject {
                    code,
                    detail,
                    message: message.clone(),
                },
            });
        }
        self.counters.rejected += 1;
        ctx.rejected(code);
        self.fail(
            now,
            ctx,
            out,
            format!(
                "refused follower {}: {}: {message}",
                self.name,
                code.as_str()
            ),
        );
    }

    /// A decoded frame from this link's connection.
    pub fn on_frame(
        &mut self,
        now: Duration,
        conn: ConnId,
        msg: Msg,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
    ) {
        if self.conn() != Some(conn) {
            return;
        }
        match (&self.state, msg) {
            (
                _,
                Msg::Reject {
                    code,
                    detail,
                    message,
                },
            ) => self.on_refused(now, ctx, out, code, detail, &message),
            (State::Handshake { .. }, msg @ Msg::HelloReply { .. }) => {
                self.hello_reply(now, ctx, out, msg)
            }
            (
                State::Streaming(_),
                Msg::Ack {
                    write,
                    durable,
                    applied,
                },
            ) => self.on_ack(now, ctx, out, write, durable, applied),
            (
                State::Streaming(_),
                msg @ (Msg::Fetch { .. }
                | Msg::Fetched { .. }
                | Msg::FetchFailed { .. }
                | Msg::Digests { .. }),
            ) => self.on_integrity(now, ctx, out, msg),
            (_, other) => {
                let what = format!(
                    "unexpected {} frame in phase {:?}",
                    other.name(),
                    self.phase()
                );
                self.reject(now, ctx, out, RejectCode::Protocol, 0, what);
            }
        }
    }

    fn hello_reply(&mut self, now: Duration, ctx: &mut Ctx<'_>, out: &mut Vec<Action>, msg: Msg) {
        let Msg::HelloReply {
            version,
            last_lsn,
            last_epoch,
            last_crc,
            nonce,
            mac,
            cluster_id,
            node_id,
            history,
        } = msg
        else {
            unreachable!("called with a HelloReply");
        };
        let Some(history) = EpochHistory::from_entries(history) else {
            let m = "the follower's epoch history is not in order".to_string();
            return self.reject(now, ctx, out, RejectCode::Protocol, 0, m);
        };
        let pending = Pending {
            version,
            last_lsn,
            last_epoch,
            last_crc,
            follower_nonce: nonce,
            history,
        };
        self.on_hello_reply(now, ctx, out, version, (cluster_id, node_id), mac, pending);
    }

    /// The follower refused the session.
    fn on_refused(
        &mut self,
        now: Duration,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
        code: RejectCode,
        detail: u64,
        message: &str,
    ) {
        self.counters.rejected_by_peer += 1;
        ctx.refused_by_peer(code);
        let why = format!(
            "follower refused the session: {} ({detail}): {message}",
            code.as_str()
        );
        self.fail(now, ctx, out, why);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_hello_reply(
        &mut self,
        now: Duration,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
        version: u16,
        (cluster_id, node_id): (String, String),
        mac: [u8; auth::MAC_LEN],
        reply: Pending,
    ) {
        let State::Handshake {
            conn,
            nonce,
            deadline,
        } = self.state
        else {
            return;
        };
        if cluster_id != ctx.config.cluster_id {
            let m = format!(
                "cluster id {cluster_id:?} is not {:?}",
                ctx.config.cluster_id
            );
            return self.reject(now, ctx, out, RejectCode::ClusterId, 0, m);
        }
        if self.name != *node_id.as_str() {
            let m = format!(
                "node {node_id:?} answered at the address of {:?}",
                self.name
            );
            return self.reject(now, ctx, out, RejectCode::UnknownNode, 0, m);
        }
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
            let m =
                format!("version {version} outside {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}");
            return self.reject(now, ctx, out, RejectCode::Version, 0, m);
        }
        let t = transcript(
            ctx,
            self.name.as_str(),
            version,
            &nonce,
            &reply.follower_nonce,
        );
        if !(ctx.config.key).accepts(|k| auth::verify(k, Role::Follower, &t, &mac)) {
            let m = "the follower's proof of the cluster key is wrong".to_string();
            return self.reject(now, ctx, out, RejectCode::AuthFailed, 0, m);
        }
        self.follow_plan(now, ctx, out, (conn, nonce, deadline), reply);
    }

    /// The follower proved the key: decide where its session starts, and go there (at once, or
    /// after looking up the primary's CRC at the LSN the plan compares).
    fn follow_plan(
        &mut self,
        now: Duration,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
        (conn, nonce, deadline): (ConnId, [u8; NONCE_LEN], Duration),
        reply: Pending,
    ) {
        let plan = if ctx.config.failover {
            plan_by_epochs(ctx, &reply)
        } else {
            plan_fixed(ctx, &reply)
        };
        if !ctx.serving && self.in_quorum(ctx) {
            let source = matches!(plan, Plan::TakeBack(_));
            let position = source.then_some((reply.last_epoch, reply.last_lsn));
            ctx.gate_heard.insert(self.name.clone(), position);
        }
        match plan {
            Plan::Purged => self.reject_purged(now, ctx, out, reply.last_lsn),
            Plan::Unrelated => {
                let m = format!(
                    "this primary's log is empty and the follower holds records up to {}: refusing \
                     to cut them (restore the primary from a replica, or start the primary with \
                     a sync quorum, which takes them back)",
                    reply.last_lsn
                );
                self.reject(now, ctx, out, RejectCode::Diverged, 0, m);
            }
            Plan::TakeBack(_) if ctx.taking_back => {
                // One take-back at a time: come back when the other one is done.
                self.retry_soon(now, out, "another follower's records are being taken back");
            }
            Plan::TakeBack(_) if !self.in_quorum(ctx) => {
                // Acknowledged records are held by quorum members only: a follower outside
                // the quorum may hold records of a lost history that differ from theirs. It
                // waits for the gate, then is cut back like any follower ahead.
                self.retry_soon(
                    now,
                    out,
                    "a follower outside the quorum waits for the start gate",
                );
            }
            Plan::TakeBack(_) if fixed_epoch_behind(ctx, &reply) => {
                let m = format!(
                    "the follower holds records of epoch {} and this primary writes epoch {}: \
                     they were not written by this primary (was the cluster run with failover?)",
                    reply.last_epoch, ctx.config.epoch
                );
                self.reject(now, ctx, out, RejectCode::Diverged, 0, m);
            }
            Plan::TakeBack(_) if !take_back_turn(ctx, &reply) => {
                // Records are taken back from the most up-to-date quorum member only: another
                // may hold records of an older history at the same LSNs.
                self.retry_soon(
                    now,
                    out,
                    "waiting to hear enough sync followers to take back from the newest",
                );
            }
            plan @ (Plan::Compare(lsn) | Plan::Cut(lsn) | Plan::TakeBack(lsn))
                if lsn > Lsn::ZERO =>
            {
                self.look_up(ctx, out, (conn, nonce, deadline), reply, plan, lsn)
            }
            plan => self.start(now, ctx, out, nonce, reply, plan, 0),
        }
    }

    fn reject_purged(
        &mut self,
        now: Duration,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
        last: Lsn,
    ) {
        self.purged = true;
        let m = format!(
            "the follower's log ends at {last}; the primary holds {} on, and the record a follower \
             continues from must be held to be checked (restore from a backup)",
            ctx.first_lsn
        );
        self.reject(now, ctx, out, RejectCode::Purged, ctx.first_lsn.0, m);
    }

    /// The driver looked up the CRC of the primary's record at the follower's last LSN.
    pub fn on_crc(
        &mut self,
        now: Duration,
        conn: ConnId,
        crc: Option<u32>,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
    ) {
        let State::Verifying { conn: c, .. } = &self.state else {
            return;
        };
        if *c != conn {
            return;
        }
        let State::Verifying {
            nonce,
            reply,
            deadline,
            plan,
            ..
        } = std::mem::replace(&mut self.state, State::Idle { retry_at: now })
        else {
            unreachable!("matched above")
        };
        // Back to the handshake state, which still answers `conn()` for `reject` and `start`.
        self.state = State::Handshake {
            conn,
            nonce,
            deadline,
        };
        match (plan, crc) {
            (Plan::Compare(l), Some(c)) if c == reply.last_crc => {
                self.start(now, ctx, out, nonce, reply, Plan::Compare(l), 0)
            }
            (Plan::Cut(c), Some(crc)) => self.start(now, ctx, out, nonce, reply, Plan::Cut(c), crc),
            (Plan::TakeBack(c), _) if ctx.serving || ctx.taking_back || ctx.last_lsn != c => {
                // Planned before the gate opened, another take-back began, or the log moved
                // while the CRC was looked up: the plan is stale; plan again on a new session.
                self.retry_soon(
                    now,
                    out,
                    "the primary's log changed while planning a take-back",
                );
            }
            (Plan::TakeBack(c), Some(crc)) => {
                self.start(now, ctx, out, nonce, reply, Plan::TakeBack(c), crc)
            }
            (Plan::Compare(l), Some(_))
                if ctx.fence.is_some_and(|f| l > f && can_cut_at(ctx, f)) =>
            {
                // Record `l` was written by this primary after the fence; the follower's differs,
                // so its records after the fence are of a lost history: cut it back there.
                let f = ctx.fence.expect("checked");
                self.cut_back(now, ctx, out, (conn, nonce, deadline), reply, f);
            }
            (Plan::Compare(l), crc) => {
                let m = format!(
                    "the follower's record {l} differs from the primary's (CRC {:#010x} vs {})",
                    reply.last_crc,
                    crc.map_or("none".to_string(), |c| format!("{c:#010x}"))
                );
                self.reject(now, ctx, out, RejectCode::Diverged, l.0, m);
            }
            _ => self.reject_purged(now, ctx, out, reply.last_lsn),
        }
    }

    /// Plans a cut after `f` instead: at once at 0, after looking up the CRC there otherwise.
    fn cut_back(
        &mut self,
        now: Duration,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
        (conn, nonce, deadline): (ConnId, [u8; NONCE_LEN], Duration),
        reply: Pending,
        f: Lsn,
    ) {
        if f == Lsn::ZERO {
            return self.start(now, ctx, out, nonce, reply, Plan::Cut(f), 0);
        }
        self.look_up(ctx, out, (conn, nonce, deadline), reply, Plan::Cut(f), f);
    }

    /// Asks for the primary's CRC at `lsn`, which `plan` is checked against in `on_crc`.
    fn look_up(
        &mut self,
        ctx: &Ctx<'_>,
        out: &mut Vec<Action>,
        (conn, nonce, deadline): (ConnId, [u8; NONCE_LEN], Duration),
        reply: Pending,
        plan: Plan,
        lsn: Lsn,
    ) {
        out.push(Action::LookupCrc {
            link: ctx.link,
            conn,
            lsn,
        });
        self.state = State::Verifying {
            conn,
            nonce,
            reply,
            deadline,
            plan,
        };
    }

    /// Authenticated: tell the follower where streaming starts, and start.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        now: Duration,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
        nonce: [u8; NONCE_LEN],
        reply: Pending,
        plan: Plan,
        crc: u32,
    ) {
        let Some(conn) = self.conn() else { return };
        let (truncate_after, start) = match plan {
            Plan::Compare(l) => (None, l.next()),
            Plan::Cut(c) => (Some(c), c.next()),
            Plan::TakeBack(_) => (None, reply.last_lsn.next()),
            Plan::Fresh | Plan::Purged | Plan::Unrelated => (None, Lsn::FIRST),
        };
        // The primary's CRC at the cut goes in Start; at a take-back's start, in the Fetch.
        let cut_crc = if truncate_after.is_some() { crc } else { 0 };
        let follower_last = reply.last_lsn;
        self.purged = false;
        let t = transcript(
            ctx,
            self.name.as_str(),
            reply.version,
            &nonce,
            &reply.follower_nonce,
        );
        let mac = auth::prove(ctx.config.key.current(), Role::Primary, &t);
        // A follower keeps the records taken back from it, of its own epochs.
        let history = match plan {
            Plan::TakeBack(last) => {
                let mut h = ctx.history.clone();
                h.graft(&reply.history, last.next(), follower_last);
                h.wire_entries().to_vec()
            }
            _ => ctx.history.wire_entries().to_vec(),
        };
        out.push(Action::Send {
            conn,
            msg: Msg::Start {
                mac,
                truncate_after,
                start_lsn: start,
                commit_lsn: ctx.commit_lsn,
                cut_crc,
                history,
            },
        });
        // Where the follower stands is verified by the primary for a compared (or empty)
        // follower; after a cut or a take-back, only the follower's own Acks will say.
        let verified = matches!(plan, Plan::Compare(_) | Plan::Fresh);
        self.begin_streaming(now, conn, start, verified);
        tracing::info!(follower = %self.name, start = %start, truncated = ?truncate_after, "replication link streaming");
        if let Plan::TakeBack(last) = plan {
            let prev_crc = (last > Lsn::ZERO).then_some(crc);
            let range = (last.next(), follower_last);
            self.start_take_back(now, ctx, out, range, prev_crc, reply.history);
        } else {
            self.settled = true;
        }
        self.read_more(now, ctx, out);
    }

    /// The session streams from `start`. `verified`: the follower has everything before it
    /// (the primary compared its last record); otherwise it must still check the cut, or holds
    /// records the primary is taking back, and nothing counts until it acknowledges.
    fn begin_streaming(&mut self, now: Duration, conn: ConnId, start: Lsn, verified: bool) {
        let at = start.prev();
        // What the follower has received is known; what it has made durable or applied is
        // not (it may have crashed before its fdatasync): its first Ack says.
        self.progress = if verified {
            Progress {
                write: at,
                durable: self.progress.durable.min(at),
                applied: self.progress.applied.min(at),
            }
        } else {
            Progress::default()
        };
        let p = &self.progress;
        self.lag.reset([p.write, p.durable, p.applied]);
        self.state = State::Streaming(Box::new(Stream {
            conn,
            next_send: start,
            inflight: VecDeque::new(),
            sent_bytes: 0,
            acked_bytes: 0,
            catch_up: CatchUp::Waiting,
            last_sent: now,
            take_back: None,
            repair: None,
            next_fetch_id: 1,
        }));
        self.counters.sessions += 1;
        self.healthy = true;
        self.last_heard = now;
        self.last_error = None;
        self.backoff.reset();
        self.breaker.on_success(now);
    }

    fn on_ack(
        &mut self,
        now: Duration,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
        write: Lsn,
        durable: Lsn,
        applied: Lsn,
    ) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        let sent = s.next_send.prev();
        if write > sent || durable > write || applied > durable {
            let m = format!("acknowledgement write={write} durable={durable} applied={applied} with {sent} sent");
            return self.reject(now, ctx, out, RejectCode::Protocol, 0, m);
        }
        while let Some(&(lsn, bytes)) = s.inflight.front() {
            if lsn > write {
                break;
            }
            s.acked_bytes = bytes;
            s.inflight.pop_front();
        }
        self.last_heard = now;
        self.healthy = true;
        if s.take_back.is_some() {
            // The follower's positions are those of records the primary does not hold yet.
            return;
        }
        let p = &mut self.progress;
        p.write = p.write.max(write);
        p.durable = p.durable.max(durable);
        p.applied = p.applied.max(applied);
        self.lag.acked(AckLevel::Write, write, now);
        self.lag.acked(AckLevel::Durable, durable, now);
        self.lag.acked(AckLevel::Applied, applied, now);
        self.last_heard = now;
        self.healthy = true;
        if self.breaker.state() != crate::breaker::BreakerState::Closed {
            self.breaker.on_success(now);
        }
        if matches!(s.catch_up, CatchUp::Waiting) {
            self.read_more(now, ctx, out);
        }
    }

    /// A repair fetch in progress on the session that ends fails now (the node retries it).
    fn abandon_repair(&mut self, out: &mut Vec<Action>, why: &str) {
        if let State::Streaming(s) = &mut self.state {
            if s.repair.is_some() {
                let reason = format!("the session with {} ended: {why}", self.name);
                s.end_repair(reason, out);
            }
        }
    }

    /// Closes the session without counting a failure, and connects again soon.
    fn retry_soon(&mut self, now: Duration, out: &mut Vec<Action>, why: &str) {
        if let Some(conn) = self.conn() {
            out.push(Action::Close {
                conn,
                reason: why.to_string(),
            });
        }
        tracing::info!(follower = %self.name, reason = %why, "replication link waits");
        self.breaker.on_abandoned();
        self.healthy = false;
        self.state = State::Idle {
            retry_at: now + TAKE_BACK_RETRY,
        };
    }

    /// Starts taking back `from..=to`, the records the follower holds past the primary's end.
    fn start_take_back(
        &mut self,
        now: Duration,
        ctx: &Ctx<'_>,
        out: &mut Vec<Action>,
        (from, to): (Lsn, Lsn),
        prev_crc: Option<u32>,
        history: EpochHistory,
    ) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        tracing::warn!(follower = %self.name, from = %from, to = %to, "the follower holds records this primary lost: taking them back before serving");
        let (f, request) = s.fetch(Purpose::TakeBack, (from, to), prev_crc, now, ctx);
        s.take_back = Some(TakeBack {
            fetcher: Some(f),
            from,
            to,
            appended: from.prev(),
            history,
        });
        out.push(Action::Send {
            conn: s.conn,
            msg: request,
        });
    }

    /// Still taking back records (fetching, or waiting for the driver to append them).
    pub fn taking_back(&self) -> bool {
        matches!(&self.state, State::Streaming(s) if s.take_back.is_some())
    }

    /// Streaming, healthy, and free to fetch for a repair of `..=last`.
    pub fn can_serve_repair(&self, last: Lsn) -> bool {
        matches!(&self.state, State::Streaming(s) if s.repair.is_none() && s.take_back.is_none())
            && self.healthy()
            && self.progress.durable >= last
    }

    /// Starts fetching `base..=last` from this follower to repair the primary's log.
    pub fn start_repair(
        &mut self,
        now: Duration,
        ctx: &Ctx<'_>,
        out: &mut Vec<Action>,
        (base, last): (Lsn, Lsn),
        prev_crc: Option<u32>,
    ) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        let (f, request) = s.fetch(Purpose::Repair(base), (base, last), prev_crc, now, ctx);
        s.repair = Some(f);
        out.push(Action::Send {
            conn: s.conn,
            msg: request,
        });
    }

    /// The integrity messages of a streaming session.
    fn on_integrity(&mut self, now: Duration, ctx: &mut Ctx<'_>, out: &mut Vec<Action>, msg: Msg) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        let conn = s.conn;
        self.last_heard = now;
        match msg {
            Msg::Fetch {
                id,
                from,
                to,
                max_bytes,
                prev_crc,
            } => out.push(Action::ServeFetch {
                link: Some(ctx.link),
                conn,
                request: FetchRequest {
                    id,
                    range: (from, to),
                    max_bytes,
                    prev_crc,
                },
            }),
            Msg::Digests { ranges } => out.push(Action::Integrity(IntegrityAction::PeerDigests {
                peer: self.name.to_string(),
                ranges,
            })),
            Msg::Fetched {
                id,
                first,
                last,
                records,
            } => self.on_fetched(now, ctx, out, id, (first, last), records),
            Msg::FetchFailed { id, message } => self.on_fetch_failed(now, ctx, out, id, message),
            other => unreachable!("on_integrity called with {}", other.name()),
        }
    }

    fn on_fetched(
        &mut self,
        now: Duration,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
        id: u64,
        range: (Lsn, Lsn),
        records: Bytes,
    ) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        let conn = s.conn;
        let fetcher = match (&mut s.take_back, &mut s.repair) {
            (
                Some(TakeBack {
                    fetcher: Some(f), ..
                }),
                _,
            ) if f.id() == id => f,
            (_, Some(f)) if f.id() == id => f,
            _ => return,
        };
        let purpose = fetcher.purpose;
        let progress = match fetcher.on_fetched(now, range, records) {
            Ok(p) => p,
            Err(e) => {
                let m = format!("answered a fetch badly: {e}");
                return self.reject(now, ctx, out, RejectCode::Protocol, 0, m);
            }
        };
        match (purpose, progress) {
            (Purpose::TakeBack, FetchProgress::More { request, received }) => {
                out.extend(received.map(|records| Action::AppendTakenBack {
                    link: ctx.link,
                    conn,
                    records,
                }));
                out.push(Action::Send { conn, msg: request });
            }
            (Purpose::TakeBack, FetchProgress::Done(mut chunks)) => {
                if let Some(TakeBack { fetcher, .. }) = &mut s.take_back {
                    *fetcher = None;
                }
                if let Some(records) = chunks.pop() {
                    out.push(Action::AppendTakenBack {
                        link: ctx.link,
                        conn,
                        records,
                    });
                }
            }
            (Purpose::Repair(_), FetchProgress::More { request, .. }) => {
                out.push(Action::Send { conn, msg: request })
            }
            (Purpose::Repair(base), FetchProgress::Done(chunks)) => {
                s.repair = None;
                out.push(Action::Integrity(IntegrityAction::Repair {
                    base,
                    chunks,
                    source: self.name.to_string(),
                }));
            }
        }
    }

    fn on_fetch_failed(
        &mut self,
        now: Duration,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
        id: u64,
        message: String,
    ) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        if s.repair.as_ref().is_some_and(|f| f.id() == id) {
            s.end_repair(format!("{} could not serve it: {message}", self.name), out);
            return;
        }
        if matches!(&s.take_back, Some(TakeBack { fetcher: Some(f), .. }) if f.id() == id) {
            let m = format!("could not give back the records this primary lost: {message}");
            self.reject(now, ctx, out, RejectCode::Diverged, 0, m);
        }
    }

    /// The driver appended taken-back records up to `last` to the primary's log (or failed).
    pub fn on_taken_back(
        &mut self,
        now: Duration,
        conn: ConnId,
        result: Result<Lsn, String>,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
    ) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        if s.conn != conn {
            return;
        }
        let Some(tb) = &mut s.take_back else {
            return;
        };
        match result {
            Ok(last) => {
                tb.appended = tb.appended.max(last);
                if tb.appended >= tb.from {
                    ctx.history.graft(&tb.history, tb.from, tb.appended);
                }
                if tb.appended >= tb.to && tb.fetcher.is_none() {
                    tracing::warn!(follower = %self.name, to = %tb.to, "took back every record the follower held past this primary's log");
                    s.take_back = None;
                    self.settled = true;
                }
            }
            Err(e) => self.fail(
                now,
                ctx,
                out,
                format!("appending taken-back records failed: {e}"),
            ),
        }
    }

    /// Fetches left unanswered past their deadline fail.
    fn expire_fetches(&mut self, now: Duration, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        if s.repair.as_ref().is_some_and(|f| f.expired(now)) {
            let reason = format!("{} did not answer the repair fetch in time", self.name);
            s.end_repair(reason, out);
        }
        if matches!(&s.take_back, Some(TakeBack { fetcher: Some(f), .. }) if f.expired(now)) {
            self.fail(now, ctx, out, "the take-back fetch timed out".into());
        }
    }

    fn window_open(s: &Stream, ctx: &Ctx<'_>, bytes: usize) -> bool {
        let unacked = s.sent_bytes - s.acked_bytes;
        unacked == 0 || unacked + bytes as u64 <= ctx.config.max_inflight_bytes
    }

    fn sent(
        s: &mut Stream,
        now: Duration,
        counters: &mut LinkCounters,
        first: Lsn,
        last: Lsn,
        bytes: usize,
    ) {
        assert_eq!(first, s.next_send, "records are sent in order without gaps");
        s.next_send = last.next();
        s.sent_bytes += bytes as u64;
        s.inflight.push_back((last, s.sent_bytes));
        s.last_sent = now;
        counters.frames_sent += 1;
        counters.bytes_sent += bytes as u64;
    }

    /// A batch was formed by the primary's writer (its fdatasync has not finished).
    pub fn on_batch(
        &mut self,
        now: Duration,
        first: Lsn,
        last: Lsn,
        records: &Bytes,
        ctx: &Ctx<'_>,
        out: &mut Vec<Action>,
    ) {
        self.lag.sent(last, now);
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        let live = matches!(s.catch_up, CatchUp::Live | CatchUp::Waiting);
        if live && s.next_send == first && Self::window_open(s, ctx, records.len()) {
            Self::sent(s, now, &mut self.counters, first, last, records.len());
            s.catch_up = CatchUp::Live;
            out.push(Action::Send {
                conn: s.conn,
                msg: Msg::Records {
                    first,
                    last,
                    commit_lsn: ctx.commit_lsn,
                    records: records.clone(),
                },
            });
        } else if matches!(s.catch_up, CatchUp::Live) && s.next_send <= last {
            s.catch_up = CatchUp::Waiting;
        }
    }

    /// Asks for the next chunk from the log if the follower is behind and both the window and
    /// the pacer's allowance allow (a paced read waits for a later tick, or for the follower's
    /// acknowledgement of the oldest paced chunk in flight).
    fn read_more(&mut self, now: Duration, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        if s.next_send > ctx.last_lsn {
            s.catch_up = CatchUp::Live;
            return;
        }
        // A paced read waits while PACED_CHUNKS_IN_FLIGHT chunks are unacknowledged: the
        // follower's writes clock the reads, and the next chunk is on its way while it writes.
        let paced_in_flight = ctx.pacer.paced() && s.inflight.len() >= PACED_CHUNKS_IN_FLIGHT;
        if paced_in_flight || !Self::window_open(s, ctx, ctx.config.catch_up_chunk_bytes) {
            s.catch_up = CatchUp::Waiting;
            return;
        }
        let Some(max_bytes) = ctx.pacer.grant(now, ctx.config.catch_up_chunk_bytes) else {
            s.catch_up = CatchUp::Waiting;
            return;
        };
        let deadline = now + ctx.config.timeouts.catch_up_read;
        s.catch_up = CatchUp::Reading {
            from: s.next_send,
            deadline,
        };
        out.push(Action::ReadChunk {
            link: ctx.link,
            conn: s.conn,
            from: s.next_send,
            max_bytes,
        });
    }

    /// A catch-up read finished: `Ok(None)` means nothing was readable yet.
    pub fn on_chunk(
        &mut self,
        now: Duration,
        conn: ConnId,
        from: Lsn,
        result: Result<Option<Chunk>, ReadError>,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
    ) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        if s.conn != conn || !matches!(s.catch_up, CatchUp::Reading { from: f, .. } if f == from) {
            return;
        }
        match result {
            Ok(Some(chunk)) if chunk.first == s.next_send => {
                let len = chunk.bytes.len();
                Self::sent(s, now, &mut self.counters, chunk.first, chunk.last, len);
                self.counters.chunks_sent += 1;
                ctx.pacer.charge(len);
                out.push(Action::Send {
                    conn,
                    msg: Msg::Records {
                        first: chunk.first,
                        last: chunk.last,
                        commit_lsn: ctx.commit_lsn,
                        records: chunk.bytes,
                    },
                });
                self.read_more(now, ctx, out);
            }
            Ok(Some(chunk)) => {
                let m = format!(
                    "catch-up read from {from} returned {}..={}",
                    chunk.first, chunk.last
                );
                self.fail(now, ctx, out, m);
            }
            Ok(None) => s.catch_up = CatchUp::Waiting,
            Err(ReadError::Purged { first }) => {
                self.purged = true;
                let m = format!("records from {from} were purged; the primary holds {first} on (restore from a backup)");
                self.reject(now, ctx, out, RejectCode::Purged, first.0, m);
            }
            Err(ReadError::Failed(e)) => {
                self.fail(now, ctx, out, format!("catch-up read failed: {e}"))
            }
        }
    }
}

fn transcript<'a>(
    ctx: &'a Ctx<'_>,
    follower: &'a str,
    version: u16,
    primary_nonce: &'a [u8; NONCE_LEN],
    follower_nonce: &'a [u8; NONCE_LEN],
) -> Transcript<'a> {
    Transcript {
        version,
        cluster_id: &ctx.config.cluster_id,
        primary_id: ctx.config.node_id.as_str(),
        follower_id: follower,
        epoch: ctx.config.epoch.0,
        primary_nonce,
        follower_nonce,
    }
}
