//! The follower's replication state machine: accept a primary's connection, answer its
//! challenge and check its proof of the cluster key, truncate what the primary does not have,
//! then append what it streams (same LSNs, same bytes) and acknowledge write, durable and
//! applied positions, which double as heartbeats.
//!
//! Pure: events in, [`Action`]s out. Invariants: nothing is appended from a session
//! that has not proven the key; records are appended densely from the agreed start (a gap or an
//! overlap closes the session); acknowledged positions never exceed what the log holds
//! (applied <= durable <= written).

use crate::log_summary::{PerAddress, SUMMARY_INTERVAL};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use logship_engine::{Epoch, Lsn, RangeDigest};

use crate::fetch::{scan_records, FetchProgress, FetchRequest, Fetcher, IntegrityAction, Purpose};
use crate::protocol::auth::{self, Role, Transcript, NONCE_LEN};
use crate::protocol::msg::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::protocol::{FrameError, Msg, RejectCode};
use crate::status::FollowerSideStatus;
use crate::vocab::{Action, ConnId, EpochHistory, FollowerConfig, Tail, Timeouts};

#[derive(Debug)]
enum Session {
    AwaitHello {
        deadline: Duration,
        nonce: [u8; NONCE_LEN],
    },
    AwaitStart {
        deadline: Duration,
        nonce: [u8; NONCE_LEN],
        hello: Hello,
    },
    Streaming {
        primary: String,
    },
}

#[derive(Debug)]
struct Hello {
    version: u16,
    primary: String,
    epoch: Epoch,
    nonce: [u8; NONCE_LEN],
}

/// The follower's state machine.
#[derive(Debug)]
pub struct Follower {
    config: FollowerConfig,
    sessions: BTreeMap<ConnId, Session>,
    tail: Tail,
    written: Lsn,
    durable: Lsn,
    applied: Lsn,
    primary_commit: Lsn,
    primary_last: Lsn,
    last_heard: Option<Duration>,
    last_ack: Duration,
    rejected: BTreeMap<&'static str, u64>,
    /// Refused sessions, logged as one summary line per interval and remote address (a peer
    /// without the key must not be able to fill the disk with log lines).
    refusals_log: PerAddress,
    /// The remote address of each accepted connection, until it closes.
    peers: BTreeMap<ConnId, IpAddr>,
    /// The latest time an input brought, for the refusal summary.
    now: Duration,
    /// A repair fetch in progress, on the streaming session.
    repair: Option<(ConnId, Fetcher)>,
    /// The connection whose Hello (of this cluster) came last: only its handshake may start a
    /// session. A Hello, not the accept: a connection that says nothing, or garbage, must not
    /// make a primary's handshake in progress void (anyone who can reach the port could keep
    /// the primary out by connecting in a loop).
    newest: Option<ConnId>,
    /// The one before it (restored when the newest was a vote request's).
    newest_before: Option<ConnId>,
    next_fetch_id: u64,
    /// The epoch history of this log (the primary's, from the session's Start on).
    history: EpochHistory,
    /// The epoch of the primary of the session that streams (set when its Start verified).
    session_epoch: Epoch,
    /// The primary's history, adopted once the cut its Start asked for is done (until then
    /// this log still holds records of its own history past the cut).
    pending_history: Option<EpochHistory>,
}

impl Follower {
    /// A follower whose log is at `tail`.
    pub fn new(config: FollowerConfig, tail: Tail) -> Follower {
        assert!(
            tail.durable <= tail.last,
            "durable {} past last {}",
            tail.durable,
            tail.last
        );
        let applied = if config.auto_apply {
            tail.durable
        } else {
            tail.applied.min(tail.durable)
        };
        Follower {
            config,
            sessions: BTreeMap::new(),
            tail,
            written: tail.last,
            durable: tail.durable,
            applied,
            primary_commit: Lsn::ZERO,
            primary_last: Lsn::ZERO,
            last_heard: None,
            last_ack: Duration::ZERO,
            rejected: BTreeMap::new(),
            refusals_log: PerAddress::default(),
            peers: BTreeMap::new(),
            now: Duration::ZERO,
            repair: None,
            newest: None,
            newest_before: None,
            next_fetch_id: 1,
            history: EpochHistory::default(),
            session_epoch: Epoch(0),
            pending_history: None,
        }
    }

    /// The epoch of the primary it streams from, once that primary proved the key.
    pub fn streaming_epoch(&self) -> Option<Epoch> {
        self.streaming().map(|_| self.session_epoch)
    }

    /// The same follower with this epoch history (clipped to its log).
    pub fn with_history(mut self, mut history: EpochHistory) -> Follower {
        history.clip(self.written);
        self.history = history;
        self
    }

    /// The epoch history of its log: the streaming primary's (it may name epochs past the
    /// last record written; they describe what the primary will send).
    pub fn history(&self) -> &EpochHistory {
        &self.history
    }

    /// The history up to the last record written, as the handshake reports it.
    pub fn written_history(&self) -> EpochHistory {
        let mut h = self.history.clone();
        h.clip(self.written);
        h
    }

    /// When the streaming primary was last heard from (a frame of its session).
    pub fn last_heard(&self) -> Option<Duration> {
        self.last_heard
    }

    /// Whether `conn` is the session that streams.
    pub fn is_streaming(&self, conn: ConnId) -> bool {
        self.streaming() == Some(conn)
    }

    /// The primary's commit LSN, as last heard.
    pub fn primary_commit(&self) -> Lsn {
        self.primary_commit
    }

    /// The id of the primary it streams from, if any.
    pub fn primary(&self) -> Option<&str> {
        self.sessions.values().find_map(|s| match s {
            Session::Streaming { primary } => Some(primary.as_str()),
            _ => None,
        })
    }

    /// Streams from a primary now.
    pub fn connected(&self) -> bool {
        self.streaming().is_some()
    }

    /// The log really ends at `tail` (read after this node stopped being the primary).
    pub fn reset_tail(&mut self, tail: Tail) {
        self.tail = tail;
        self.written = tail.last;
        self.durable = tail.durable.min(tail.last);
        self.applied = if self.config.auto_apply {
            self.durable
        } else {
            self.applied.min(self.durable)
        };
        self.history.clip(tail.last);
    }

    /// `conn` carried a vote request, not a primary's session: forget it.
    pub fn forget(&mut self, conn: ConnId) {
        self.sessions.remove(&conn);
        self.peers.remove(&conn);
        if self.newest == Some(conn) {
            self.newest = self.newest_before.take();
        }
    }

    /// Ends a streaming session (its primary's epoch is over).
    pub fn end_streaming(&mut self, why: &str, out: &mut Vec<Action>) {
        if let Some(conn) = self.streaming() {
            self.sessions.remove(&conn);
            out.push(Action::Close {
                conn,
                reason: why.to_string(),
            });
        }
    }

    /// The timeouts it runs with.
    pub fn timeouts(&self) -> Timeouts {
        self.config.timeouts
    }

    /// Replaces the cluster key ring: handshakes from now on prove and verify with it; the
    /// session under way (already authenticated) goes on.
    pub fn set_key_ring(&mut self, ring: crate::protocol::auth::KeyRing) {
        self.config.key = ring;
    }

    /// Last LSN handed to the log.
    pub fn written(&self) -> Lsn {
        self.written
    }

    /// Last LSN durable.
    pub fn durable(&self) -> Lsn {
        self.durable
    }

    /// Last LSN applied.
    pub fn applied(&self) -> Lsn {
        self.applied
    }

    fn streaming(&self) -> Option<ConnId> {
        self.sessions
            .iter()
            .find(|(_, s)| matches!(s, Session::Streaming { .. }))
            .map(|(c, _)| *c)
    }

    /// A primary connected from `peer` (`None`: not known); `nonce` is fresh randomness for
    /// the handshake.
    pub fn on_accepted(
        &mut self,
        now: Duration,
        conn: ConnId,
        peer: Option<SocketAddr>,
        nonce: [u8; NONCE_LEN],
    ) {
        self.now = self.now.max(now);
        if let Some(peer) = peer {
            self.peers.insert(conn, peer.ip());
        }
        let deadline = now + self.config.timeouts.handshake;
        self.sessions
            .insert(conn, Session::AwaitHello { deadline, nonce });
    }

    /// A connection closed.
    pub fn on_closed(&mut self, conn: ConnId) {
        self.peers.remove(&conn);
        if let Some(Session::Streaming { primary }) = self.sessions.remove(&conn) {
            tracing::info!(%primary, "replication session from the primary ended");
        }
    }

    fn ack(&mut self, now: Duration, conn: ConnId, out: &mut Vec<Action>) {
        self.last_ack = now;
        out.push(Action::Send {
            conn,
            msg: Msg::Ack {
                write: self.written,
                durable: self.durable,
                applied: self.applied,
            },
        });
    }

    fn reject(
        &mut self,
        conn: ConnId,
        code: RejectCode,
        detail: u64,
        message: String,
        out: &mut Vec<Action>,
    ) {
        let peer = (self.peers.get(&conn).copied()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if let Some(line) = self.refusals_log.note(self.now, peer, &message) {
            tracing::info!(
                sessions = line.count,
                address = %line.address_text(),
                last_conn = conn.0,
                last_reason = code.as_str(),
                last_message = %line.last_reason,
                "refusing replication sessions (one line per {} s at most per remote address, with the count since the last)",
                SUMMARY_INTERVAL.as_secs()
            );
        }
        *self.rejected.entry(code.as_str()).or_default() += 1;
        out.push(Action::Send {
            conn,
            msg: Msg::Reject {
                code,
                detail,
                message: message.clone(),
            },
        });
        out.push(Action::Close {
            conn,
            reason: message,
        });
        self.sessions.remove(&conn);
    }

    /// Bytes on `conn` were not a valid frame.
    pub fn on_frame_error(
        &mut self,
        now: Duration,
        conn: ConnId,
        error: &FrameError,
        out: &mut Vec<Action>,
    ) {
        self.now = self.now.max(now);
        self.reject(
            conn,
            RejectCode::Protocol,
            0,
            format!("malformed frame: {error}"),
            out,
        );
    }

    /// A decoded frame arrived on `conn`.
    pub fn on_frame(&mut self, now: Duration, conn: ConnId, msg: Msg, out: &mut Vec<Action>) {
        self.now = self.now.max(now);
        let Some(session) = self.sessions.remove(&conn) else {
            return;
        };
        match (session, msg) {
            (_, Msg::Reject { code, message, .. }) => {
                tracing::info!(conn = conn.0, reason = code.as_str(), %message, "the primary refused the session");
                out.push(Action::Close {
                    conn,
                    reason: message,
                });
            }
            (
                Session::AwaitHello { nonce, .. },
                Msg::Hello {
                    version_min,
                    version_max,
                    epoch,
                    last_lsn,
                    nonce: pn,
                    cluster_id,
                    node_id,
                },
            ) => {
                let hello = Hello {
                    version: version_max.min(PROTOCOL_VERSION),
                    primary: node_id,
                    epoch,
                    nonce: pn,
                };
                self.on_hello(
                    now,
                    conn,
                    nonce,
                    hello,
                    (version_min, cluster_id, last_lsn),
                    out,
                );
            }
            (
                Session::AwaitStart { nonce, hello, .. },
                Msg::Start {
                    mac,
                    truncate_after,
                    start_lsn,
                    commit_lsn,
                    cut_crc,
                    history,
                },
            ) => {
                let Some(history) = EpochHistory::from_entries(history) else {
                    let m = "the primary's epoch history is not in order".to_string();
                    return self.reject(conn, RejectCode::Protocol, 0, m, out);
                };
                self.on_start(
                    now,
                    conn,
                    (nonce, hello, history),
                    mac,
                    (truncate_after, start_lsn, commit_lsn, cut_crc),
                    out,
                );
            }
            (Session::Streaming { primary }, msg) => {
                self.on_streaming(now, conn, primary, msg, out)
            }
            (_, other) => self.unexpected(conn, &other, out),
        }
    }

    /// A frame the session does not expect now: refused, and the session closed.
    fn unexpected(&mut self, conn: ConnId, msg: &Msg, out: &mut Vec<Action>) {
        let m = format!("unexpected {} frame", msg.name());
        self.reject(conn, RejectCode::Protocol, 0, m, out);
    }

    /// A frame on a streaming session (whose entry `on_frame` took out).
    fn on_streaming(
        &mut self,
        now: Duration,
        conn: ConnId,
        primary: String,
        msg: Msg,
        out: &mut Vec<Action>,
    ) {
        match msg {
            Msg::Records {
                first,
                last,
                commit_lsn,
                records,
            } => {
                self.sessions.insert(conn, Session::Streaming { primary });
                self.on_records(now, conn, first, last, commit_lsn, records, out);
            }
            Msg::Heartbeat {
                commit_lsn,
                last_lsn,
            } => {
                self.sessions.insert(conn, Session::Streaming { primary });
                self.primary_commit = self.primary_commit.max(commit_lsn);
                self.primary_last = self.primary_last.max(last_lsn);
                self.last_heard = Some(now);
            }
            msg @ (Msg::Fetch { .. }
            | Msg::Fetched { .. }
            | Msg::FetchFailed { .. }
            | Msg::Digests { .. }) => {
                self.on_integrity(now, conn, &primary, msg, out);
                self.sessions.insert(conn, Session::Streaming { primary });
            }
            other => self.unexpected(conn, &other, out),
        }
    }

    /// The integrity messages of a streaming session: the primary's fetches, answers to ours,
    /// its digests.
    fn on_integrity(
        &mut self,
        now: Duration,
        conn: ConnId,
        primary: &str,
        msg: Msg,
        out: &mut Vec<Action>,
    ) {
        self.last_heard = Some(now);
        match msg {
            Msg::Fetch {
                id,
                from,
                to,
                max_bytes,
                prev_crc,
            } => out.push(Action::ServeFetch {
                link: None,
                conn,
                request: FetchRequest {
                    id,
                    range: (from, to),
                    max_bytes,
                    prev_crc,
                },
            }),
            Msg::Fetched {
                id,
                first,
                last,
                records,
            } => self.on_fetched(now, conn, primary, id, (first, last), records, out),
            Msg::FetchFailed { id, message } => {
                if matches!(&self.repair, Some((c, f)) if *c == conn && f.id() == id) {
                    self.repair_failed(format!("{primary} could not serve it: {message}"), out);
                }
            }
            Msg::Digests { ranges } => out.push(Action::Integrity(IntegrityAction::PeerDigests {
                peer: primary.to_string(),
                ranges,
            })),
            other => unreachable!("on_integrity called with {}", other.name()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_fetched(
        &mut self,
        now: Duration,
        conn: ConnId,
        primary: &str,
        id: u64,
        range: (Lsn, Lsn),
        records: Bytes,
        out: &mut Vec<Action>,
    ) {
        let Some((c, f)) = &mut self.repair else {
            return;
        };
        if *c != conn || f.id() != id {
            return;
        }
        let Purpose::Repair(base) = f.purpose else {
            unreachable!("a follower only fetches to repair");
        };
        match f.on_fetched(now, range, records) {
            Ok(FetchProgress::More { request, .. }) => {
                out.push(Action::Send { conn, msg: request })
            }
            Ok(FetchProgress::Done(chunks)) => {
                self.repair = None;
                out.push(Action::Integrity(IntegrityAction::Repair {
                    base,
                    chunks,
                    source: primary.to_string(),
                }));
            }
            Err(e) => self.repair_failed(format!("{primary} answered badly: {e}"), out),
        }
    }

    fn repair_failed(&mut self, reason: String, out: &mut Vec<Action>) {
        if let Some(failed) = self.repair.take().and_then(|(_, f)| f.failed(reason)) {
            out.push(Action::Integrity(failed));
        }
    }

    /// Starts fetching `base..=last` from the primary to repair a damaged segment; `prev_crc`
    /// is this log's CRC of record `base - 1` (`None` if it has none). Returns false when there
    /// is no session to fetch on, or a repair is already under way.
    pub fn start_repair(
        &mut self,
        now: Duration,
        (base, last): (Lsn, Lsn),
        prev_crc: Option<u32>,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(conn) = self.streaming() else {
            return false;
        };
        if self.repair.is_some() {
            return false;
        }
        let id = self.next_fetch_id;
        self.next_fetch_id += 1;
        let timeout = self.config.timeouts.catch_up_read;
        let (f, request) = Fetcher::start(
            Purpose::Repair(base),
            id,
            (base, last),
            prev_crc,
            now,
            timeout,
        );
        self.repair = Some((conn, f));
        out.push(Action::Send { conn, msg: request });
        true
    }

    /// Sends this node's digests to the primary (if a session streams).
    pub fn send_digests(&mut self, ranges: Vec<RangeDigest>, out: &mut Vec<Action>) {
        if let Some(conn) = self.streaming() {
            out.push(Action::Send {
                conn,
                msg: Msg::Digests { ranges },
            });
        }
    }

    /// The answer to a [`Action::ServeFetch`] is ready.
    pub fn send_answer(&mut self, conn: ConnId, answer: Msg, out: &mut Vec<Action>) {
        if self.sessions.contains_key(&conn) {
            out.push(Action::Send { conn, msg: answer });
        }
    }

    fn on_hello(
        &mut self,
        now: Duration,
        conn: ConnId,
        nonce: [u8; NONCE_LEN],
        hello: Hello,
        (version_min, cluster_id, primary_last): (u16, String, Lsn),
        out: &mut Vec<Action>,
    ) {
        if hello.version < version_min.max(MIN_PROTOCOL_VERSION) {
            let m = format!("no common protocol version: primary {version_min}.., this node {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}");
            return self.reject(conn, RejectCode::Version, 0, m, out);
        }
        if cluster_id != self.config.cluster_id {
            let m = format!(
                "cluster id {cluster_id:?} is not {:?}",
                self.config.cluster_id
            );
            return self.reject(conn, RejectCode::ClusterId, 0, m, out);
        }
        self.newest_before = self.newest.replace(conn);
        let t = transcript(&self.config, &hello, &nonce);
        let mac = auth::prove(self.config.key.current(), Role::Follower, &t);
        out.push(Action::Send {
            conn,
            msg: Msg::HelloReply {
                version: hello.version,
                last_lsn: self.written,
                last_epoch: self.tail.last_epoch,
                last_crc: self.tail.last_crc,
                nonce,
                mac,
                cluster_id: self.config.cluster_id.clone(),
                node_id: self.config.node_id.to_string(),
                history: self.written_history().wire_entries().to_vec(),
            },
        });
        self.primary_last = self.primary_last.max(primary_last);
        let deadline = now + self.config.timeouts.handshake;
        self.sessions.insert(
            conn,
            Session::AwaitStart {
                deadline,
                nonce,
                hello,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn on_start(
        &mut self,
        now: Duration,
        conn: ConnId,
        (nonce, hello, history): ([u8; NONCE_LEN], Hello, EpochHistory),
        mac: [u8; auth::MAC_LEN],
        (truncate_after, start, commit, cut_crc): (Option<Lsn>, Lsn, Lsn, u32),
        out: &mut Vec<Action>,
    ) {
        let t = transcript(&self.config, &hello, &nonce);
        if !(self.config.key).accepts(|k| auth::verify(k, Role::Primary, &t, &mac)) {
            let m = format!("{}'s proof of the cluster key is wrong", hello.primary);
            return self.reject(conn, RejectCode::AuthFailed, 0, m, out);
        }
        if self.newest != Some(conn) {
            // A Start held up in the network on an older connection (its primary may be gone):
            // only the newest connection's handshake may decide what this log keeps.
            let m = "a newer connection was accepted since this handshake began".to_string();
            return self.reject(conn, RejectCode::Protocol, 0, m, out);
        }
        let kept = truncate_after.map_or(self.written, |t| t.min(self.written));
        if start != kept.next() {
            let m = format!(
                "streaming would start at {start}, the log continues at {}",
                kept.next()
            );
            return self.reject(conn, RejectCode::Protocol, 0, m, out);
        }
        let others: Vec<ConnId> = (self.sessions.keys().copied())
            .filter(|c| *c != conn)
            .collect();
        for old in others {
            out.push(Action::Close {
                conn: old,
                reason: format!("superseded by a session from {}", hello.primary),
            });
            self.sessions.remove(&old);
        }
        let cutting = kept < self.written;
        if cutting {
            tracing::warn!(after = %kept, last = %self.written, "truncating records the primary does not have");
            out.push(Action::Truncate {
                after: kept,
                expect_crc: cut_crc,
            });
            self.written = kept;
            self.durable = self.durable.min(kept);
            self.applied = self.applied.min(kept);
        }
        // What this log keeps is the primary's up to `kept`, and what it appends from now on
        // is the primary's: its history is the primary's, once the cut is done.
        if cutting {
            self.pending_history = Some(history);
        } else {
            self.pending_history = None;
            self.history = history;
        }
        self.session_epoch = hello.epoch;
        tracing::info!(primary = %hello.primary, epoch = %hello.epoch, start = %start, "streaming from the primary");
        self.primary_commit = self.primary_commit.max(commit);
        self.last_heard = Some(now);
        self.sessions.insert(
            conn,
            Session::Streaming {
                primary: hello.primary,
            },
        );
        self.ack(now, conn, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_records(
        &mut self,
        now: Duration,
        conn: ConnId,
        first: Lsn,
        last: Lsn,
        commit: Lsn,
        records: Bytes,
        out: &mut Vec<Action>,
    ) {
        if first != self.written.next() {
            let m = format!(
                "records {first}..={last} where {} was expected",
                self.written.next()
            );
            return self.reject(conn, RejectCode::Protocol, 0, m, out);
        }
        let mut starts = Vec::new();
        let mut newest = (self.pending_history.as_ref())
            .unwrap_or(&self.history)
            .epoch_of(last);
        let scanned = scan_records(&records, (first, last), |lsn, epoch| {
            if epoch > newest {
                starts.push((epoch, lsn));
                newest = epoch;
            }
        });
        let Some((crc, epoch)) = scanned else {
            let m = format!("records {first}..={last} do not hold exactly those LSNs");
            return self.reject(conn, RejectCode::Protocol, 0, m, out);
        };
        // The history names every epoch this log holds records of, even one the primary's
        // history did not name when the session started (its start gate opened since).
        let history = self.pending_history.as_mut().unwrap_or(&mut self.history);
        for (epoch, lsn) in starts {
            history.begin(epoch, lsn);
        }
        out.push(Action::Append {
            first,
            last,
            records,
        });
        self.written = last;
        self.tail.last_crc = crc;
        self.tail.last_epoch = epoch;
        self.primary_commit = self.primary_commit.max(commit);
        self.primary_last = self.primary_last.max(last);
        self.last_heard = Some(now);
        self.ack(now, conn, out);
    }

    /// The log is durable up to `lsn`.
    pub fn on_durable(&mut self, now: Duration, lsn: Lsn, out: &mut Vec<Action>) {
        let lsn = lsn.min(self.written);
        if lsn <= self.durable {
            return;
        }
        self.durable = lsn;
        if self.config.auto_apply {
            self.applied = lsn;
        }
        if let Some(conn) = self.streaming() {
            self.ack(now, conn, out);
        }
    }

    /// The application applied records up to `lsn`.
    pub fn on_applied(&mut self, now: Duration, lsn: Lsn, out: &mut Vec<Action>) {
        let lsn = lsn.min(self.durable);
        if lsn <= self.applied {
            return;
        }
        self.applied = lsn;
        if let Some(conn) = self.streaming() {
            self.ack(now, conn, out);
        }
    }

    /// The truncation asked for is done; the log's last record now has this CRC and epoch.
    pub fn on_truncated(&mut self, last_crc: u32, last_epoch: Epoch) {
        self.tail.last_crc = last_crc;
        self.tail.last_epoch = last_epoch;
        if let Some(h) = self.pending_history.take() {
            self.history = h;
        }
    }

    /// The record at the truncation point differs from the primary's: the logs diverged
    /// before it. The session is refused; the log, untouched, really ends at `tail`.
    pub fn on_truncate_refused(
        &mut self,
        at: Lsn,
        reason: String,
        tail: Tail,
        out: &mut Vec<Action>,
    ) {
        if let Some(conn) = self.streaming() {
            self.reject(conn, RejectCode::Diverged, at.0, reason, out);
        }
        self.pending_history = None;
        self.tail = tail;
        self.written = tail.last;
        self.durable = tail.durable.min(tail.last);
        self.applied = self.applied.min(self.durable);
    }

    /// Appending failed; the log really ends at `tail` (the session is closed: the primary
    /// reconnects and starts from the truth).
    pub fn on_append_failed(&mut self, reason: String, tail: Tail, out: &mut Vec<Action>) {
        self.pending_history = None;
        self.history.clip(tail.last);
        if let Some(conn) = self.streaming() {
            self.sessions.remove(&conn);
            out.push(Action::Close {
                conn,
                reason: format!("append failed: {reason}"),
            });
        }
        self.tail = tail;
        self.written = tail.last;
        self.durable = tail.durable.min(tail.last);
        self.applied = self.applied.min(self.durable);
    }

    /// Timer: handshake deadlines, a silent primary, heartbeats, a repair fetch left unanswered.
    pub fn tick(&mut self, now: Duration, out: &mut Vec<Action>) {
        self.now = self.now.max(now);
        let lost = match &self.repair {
            Some((c, f)) => f.expired(now) || !self.sessions.contains_key(c),
            None => false,
        };
        if lost {
            self.repair_failed(
                "the primary did not answer the repair fetch in time".into(),
                out,
            );
        }
        let expired: Vec<ConnId> = (self.sessions.iter())
            .filter(|(_, s)| match s {
                Session::AwaitHello { deadline, .. } | Session::AwaitStart { deadline, .. } => {
                    now >= *deadline
                }
                Session::Streaming { .. } => false,
            })
            .map(|(c, _)| *c)
            .collect();
        for conn in expired {
            self.sessions.remove(&conn);
            out.push(Action::Close {
                conn,
                reason: "handshake timed out".into(),
            });
        }
        let Some(conn) = self.streaming() else { return };
        let silent = now.saturating_sub(self.last_heard.unwrap_or(now));
        if silent >= self.config.timeouts.peer {
            self.sessions.remove(&conn);
            out.push(Action::Close {
                conn,
                reason: format!("primary silent for {silent:?}"),
            });
            return;
        }
        if now.saturating_sub(self.last_ack) >= self.config.timeouts.heartbeat_interval {
            self.ack(now, conn, out);
        }
    }

    /// Asserts the follower's invariants: applied ≤ durable ≤ written, and at most one
    /// session streams.
    pub fn check_invariants(&self) {
        assert!(
            self.applied <= self.durable && self.durable <= self.written,
            "applied {} durable {} written {}",
            self.applied,
            self.durable,
            self.written
        );
        let streaming = (self.sessions.values())
            .filter(|s| matches!(s, Session::Streaming { .. }))
            .count();
        assert!(streaming <= 1, "{streaming} sessions stream");
    }

    /// A snapshot for status.
    pub fn status(&self, now: Duration) -> FollowerSideStatus {
        let primary = self.sessions.values().find_map(|s| match s {
            Session::Streaming { primary } => Some(primary.clone()),
            _ => None,
        });
        FollowerSideStatus {
            connected: primary.is_some(),
            primary,
            write_lsn: self.written.0,
            durable_lsn: self.durable.0,
            applied_lsn: self.applied.0,
            primary_commit_lsn: self.primary_commit.0,
            primary_last_lsn: self.primary_last.0,
            last_heard_ms: self
                .last_heard
                .map(|t| now.saturating_sub(t).as_secs_f64() * 1e3),
            rejected: self
                .rejected
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }
}

fn transcript<'a>(
    config: &'a FollowerConfig,
    hello: &'a Hello,
    nonce: &'a [u8; NONCE_LEN],
) -> Transcript<'a> {
    Transcript {
        version: hello.version,
        cluster_id: &config.cluster_id,
        primary_id: &hello.primary,
        follower_id: config.node_id.as_str(),
        epoch: hello.epoch.0,
        primary_nonce: &hello.nonce,
        follower_nonce: nonce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::auth::ClusterKey;

    const CLUSTER: &str = "c";

    fn follower() -> Follower {
        let config = FollowerConfig {
            cluster_id: CLUSTER.into(),
            node_id: "f".into(),
            key: ClusterKey::from_bytes(&[7; 32]).expect("a key").into(),
            timeouts: Timeouts::default(),
            auto_apply: true,
        };
        Follower::new(config, Tail::default())
    }

    fn hello(epoch: u64) -> Msg {
        Msg::Hello {
            version_min: PROTOCOL_VERSION,
            version_max: PROTOCOL_VERSION,
            epoch: Epoch(epoch),
            last_lsn: Lsn::ZERO,
            nonce: [1; NONCE_LEN],
            cluster_id: CLUSTER.into(),
            node_id: "p".into(),
        }
    }

    /// The primary's Start for its Hello on a connection where the follower drew `nonce`.
    fn start(f: &Follower, epoch: u64, nonce: [u8; NONCE_LEN]) -> Msg {
        let h = Hello {
            version: PROTOCOL_VERSION,
            primary: "p".into(),
            epoch: Epoch(epoch),
            nonce: [1; NONCE_LEN],
        };
        let mac = auth::prove(
            f.config.key.current(),
            Role::Primary,
            &transcript(&f.config, &h, &nonce),
        );
        Msg::Start {
            mac,
            truncate_after: None,
            start_lsn: Lsn(1),
            commit_lsn: Lsn::ZERO,
            cut_crc: 0,
            history: Vec::new(),
        }
    }

    fn addr(last: u8) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, last], 4000)))
    }

    #[test]
    fn connections_that_say_nothing_or_garbage_do_not_void_a_handshake_in_progress() {
        let mut f = follower();
        let mut out = Vec::new();
        let now = Duration::from_secs(1);
        let (primary, idle, garbage) = (ConnId(1), ConnId(2), ConnId(3));
        f.on_accepted(now, primary, addr(1), [9; NONCE_LEN]);
        f.on_frame(now, primary, hello(1), &mut out);
        f.on_accepted(now, idle, addr(2), [8; NONCE_LEN]);
        f.on_accepted(now, garbage, addr(2), [6; NONCE_LEN]);
        let bad = FrameError::UnknownKind(200);
        f.on_frame_error(now, garbage, &bad, &mut out);
        out.clear();
        let start = start(&f, 1, [9; NONCE_LEN]);
        f.on_frame(now, primary, start, &mut out);
        assert!(f.is_streaming(primary), "actions: {out:?}");
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Close { conn, .. } if *conn == idle)),
            "the idle connection is closed once a session streams: {out:?}"
        );
    }

    #[test]
    fn a_start_on_a_connection_whose_hello_came_before_another_hello_is_refused() {
        let mut f = follower();
        let mut out = Vec::new();
        let now = Duration::from_secs(1);
        f.on_accepted(now, ConnId(1), addr(1), [9; NONCE_LEN]);
        f.on_frame(now, ConnId(1), hello(1), &mut out);
        f.on_accepted(now, ConnId(2), addr(1), [8; NONCE_LEN]);
        f.on_frame(now, ConnId(2), hello(2), &mut out);
        out.clear();
        let stale = start(&f, 1, [9; NONCE_LEN]);
        f.on_frame(now, ConnId(1), stale, &mut out);
        assert!(!f.is_streaming(ConnId(1)));
        assert!(
            out.iter().any(|a| matches!(
                a,
                Action::Send {
                    msg: Msg::Reject { .. },
                    ..
                }
            )),
            "refused: {out:?}"
        );
    }

    #[test]
    fn refusals_are_summarised_per_remote_address() {
        let mut f = follower();
        let mut out = Vec::new();
        let now = Duration::from_secs(1);
        for (i, last) in [(1u64, 2u8), (2, 2), (3, 3)] {
            f.on_accepted(now, ConnId(i), addr(last), [0; NONCE_LEN]);
            f.on_frame_error(now, ConnId(i), &FrameError::UnknownKind(99), &mut out);
        }
        assert_eq!(
            f.refusals_log.tracked(),
            2,
            "two remote addresses, each with its own summary"
        );
        f.on_closed(ConnId(1));
        assert!(
            !f.peers.contains_key(&ConnId(1)),
            "the address is forgotten at close"
        );
    }
}
