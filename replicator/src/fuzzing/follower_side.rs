//! The follower under attack: the fuzzer plays the primary (or anyone who can reach the
//! follower's port). The harness follows every connection's handshake and knows which ones
//! proved the cluster key; the follower must never append or truncate, nor acknowledge, for any
//! other. Appends must continue its log densely and agree with the records they carry.

use std::collections::BTreeMap;
use std::time::Duration;

use logship_engine::{Epoch, Lsn};

use crate::fetch::IntegrityAction;
use crate::follower::Follower;
use crate::protocol::auth::{Role, MAC_LEN, NONCE_LEN};
use crate::protocol::frame::{FrameDecoder, DEFAULT_MAX_BODY_BYTES};
use crate::protocol::msg::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::protocol::Msg;
use crate::vocab::Action;
use crate::vocab::ConnId;

use super::common::{drain, follower_config, fresh_nonce, Session, CLUSTER, FOLLOWER_ID};
use super::input::{pick_any_msg, pick_hello, pick_mac, pick_records, remember, Input};
use super::log_model::LogModel;

/// Connections the fuzzer opens to the follower, at most.
pub(super) const MAX_FOLLOWER_CONNS: usize = 6;

/// One connection to the follower, as the harness saw it.
#[derive(Debug)]
pub(super) struct FollowerConn {
    /// The follower's nonce on it.
    nonce: [u8; NONCE_LEN],
    /// The last Hello delivered on it: primary id, epoch, nonce.
    hello: Option<(String, Epoch, [u8; NONCE_LEN])>,
    /// The transcript, once the follower answered a Hello.
    session: Option<Session>,
    /// A Start carrying the primary's true proof over `session` was delivered on it.
    authentic: bool,
    /// The driver still reads it (the follower has not closed it, no frame error).
    decoder: Option<FrameDecoder>,
}

pub(super) struct FollowerUnderTest {
    f: Follower,
    log: LogModel,
    log_durable: Lsn,
    conns: BTreeMap<ConnId, FollowerConn>,
    now: Duration,
    nonces: u64,
    seen: Vec<[u8; MAC_LEN]>,
}

impl FollowerUnderTest {
    pub(super) fn new(input: &mut Input<'_>) -> FollowerUnderTest {
        let mut log = LogModel::default();
        let k = input.pick(6);
        for _ in 0..k {
            log.push(Epoch(input.pick(2) as u64), 0x11, input.pick(24));
        }
        let log_durable = Lsn(input.pick(k + 1) as u64);
        let tail = log.tail(log_durable, Lsn(input.pick(k + 1) as u64));
        let f = Follower::new(follower_config(input.byte() & 1 == 1), tail);
        FollowerUnderTest {
            f,
            log,
            log_durable,
            conns: BTreeMap::new(),
            now: Duration::ZERO,
            nonces: 0,
            seen: Vec::new(),
        }
    }

    pub(super) fn step(&mut self, op: u8, input: &mut Input<'_>) {
        match op % 10 {
            0 => self.accept(),
            1 => {
                let (conn, m) = (self.pick_conn(input), pick_hello(input, self.log.last()));
                self.send(conn, &m.encode());
            }
            2 => {
                let conn = self.pick_conn(input);
                let m = self.pick_start(input, conn);
                self.send(conn, &m.encode());
            }
            3 => {
                let (conn, m) = (
                    self.pick_conn(input),
                    pick_records(input, self.log.last().next()),
                );
                self.send(conn, &m.encode());
            }
            4 | 5 => {
                let (conn, m) = (self.pick_conn(input), pick_any_msg(input, self.log.last()));
                self.send(conn, &m.encode());
            }
            6 => {
                let (conn, bytes) = (self.pick_conn(input), input.bytes(300));
                self.send(conn, &bytes);
            }
            7 => {
                self.now += input.duration();
                let mut out = Vec::new();
                self.f.tick(self.now, &mut out);
                self.apply(None, out);
            }
            8 => self.durable_or_applied(input),
            _ => {
                let conn = self.pick_conn(input);
                self.f.on_closed(conn);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.decoder = None;
                }
            }
        }
        self.check();
    }

    fn accept(&mut self) {
        if self.conns.len() >= MAX_FOLLOWER_CONNS {
            return;
        }
        let conn = ConnId(self.conns.len() as u64 + 1);
        let nonce = fresh_nonce(&mut self.nonces, 0xf0);
        self.f.on_accepted(self.now, conn, nonce);
        let decoder = Some(FrameDecoder::new(DEFAULT_MAX_BODY_BYTES));
        self.conns.insert(
            conn,
            FollowerConn {
                nonce,
                hello: None,
                session: None,
                authentic: false,
                decoder,
            },
        );
    }

    fn pick_conn(&mut self, input: &mut Input<'_>) -> ConnId {
        if self.conns.is_empty() {
            self.accept();
        }
        let i = input.pick(self.conns.len());
        *self.conns.keys().nth(i).expect("at least one connection")
    }

    fn pick_start(&mut self, input: &mut Input<'_>, conn: ConnId) -> Msg {
        let session = self.conns.get(&conn).and_then(|c| c.session.as_ref());
        let mac = pick_mac(input, Role::Primary, session, &self.seen);
        let last = self.log.last();
        let truncate_after = match input.pick(4) {
            0 => Some(input.lsn_near(last.prev())),
            _ => None,
        };
        let kept = truncate_after.map_or(last, |t| t.min(last));
        let start_lsn = match input.pick(4) {
            0 => input.lsn_near(kept.next()),
            _ => kept.next(),
        };
        let cut_crc = match truncate_after {
            Some(t) if input.pick(2) == 0 => self.log.crc(t).unwrap_or(0),
            Some(_) => input.u32(),
            None => 0,
        };
        Msg::Start {
            mac,
            truncate_after,
            start_lsn,
            commit_lsn: Lsn(input.u64()),
            cut_crc,
        }
    }

    fn durable_or_applied(&mut self, input: &mut Input<'_>) {
        let mut out = Vec::new();
        if input.byte() & 1 == 0 {
            let lo = self.log_durable.min(self.log.last());
            let span = (self.log.last().0 - lo.0) as usize;
            self.log_durable = Lsn(lo.0 + input.pick(span + 1) as u64);
            self.f.on_durable(self.now, self.log_durable, &mut out);
        } else {
            let lsn = input.lsn_near(self.f.durable());
            self.f.on_applied(self.now, lsn, &mut out);
        }
        self.apply(None, out);
    }

    /// Bytes arrive on `conn`: the driver's `on_data`.
    fn send(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(d) = self.conns.get_mut(&conn).and_then(|c| c.decoder.as_mut()) else {
            return;
        };
        d.push(bytes);
        let (msgs, failure) = drain(d);
        if failure.is_some() {
            self.conns.get_mut(&conn).expect("looked up above").decoder = None;
        }
        for m in msgs {
            self.before_delivery(conn, &m);
            let mut out = Vec::new();
            self.f.on_frame(self.now, conn, m, &mut out);
            self.apply(Some(conn), out);
        }
        if let Some(e) = failure {
            let mut out = Vec::new();
            self.f.on_frame_error(conn, &e, &mut out);
            self.apply(Some(conn), out);
        }
    }

    /// The oracle: which Hello the follower answers, and whether a Start proves the key.
    fn before_delivery(&mut self, conn: ConnId, m: &Msg) {
        let c = self
            .conns
            .get_mut(&conn)
            .expect("delivering on a known connection");
        match m {
            Msg::Hello {
                epoch,
                nonce,
                node_id,
                ..
            } => c.hello = Some((node_id.clone(), *epoch, *nonce)),
            Msg::Start { mac, .. }
                if c.session
                    .as_ref()
                    .is_some_and(|s| *mac == s.honest(Role::Primary)) =>
            {
                c.authentic = true;
            }
            _ => {}
        }
    }

    fn apply(&mut self, event_conn: Option<ConnId>, out: Vec<Action>) {
        let written = self.f.written();
        for a in out {
            match a {
                Action::Send { conn, msg } => self.on_sent(conn, msg, written),
                Action::Close { conn, .. } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.decoder = None;
                    }
                }
                Action::Truncate { after, expect_crc } => {
                    self.assert_authentic(event_conn, "Truncate");
                    self.truncate(after, expect_crc);
                }
                Action::Append {
                    first,
                    last,
                    records,
                } => {
                    self.assert_authentic(event_conn, "Append");
                    self.append(first, last, &records);
                }
                Action::ServeFetch { .. } => self.assert_authentic(event_conn, "ServeFetch"),
                Action::Integrity(IntegrityAction::PeerDigests { .. }) => {
                    self.assert_authentic(event_conn, "PeerDigests")
                }
                other => panic!("not a follower's action here: {other:?}"),
            }
        }
    }

    fn assert_authentic(&self, event_conn: Option<ConnId>, what: &str) {
        let ok = event_conn
            .and_then(|c| self.conns.get(&c))
            .is_some_and(|c| c.authentic);
        assert!(ok, "the follower emitted {what} for connection {event_conn:?}, which never proved the cluster key");
    }

    fn on_sent(&mut self, conn: ConnId, msg: Msg, written: Lsn) {
        let Some(c) = self.conns.get(&conn) else {
            panic!(
                "the follower sent {} on connection {conn}, which it never accepted",
                msg.name()
            )
        };
        match msg {
            Msg::HelloReply { .. } => self.on_hello_reply_sent(conn, msg, written),
            Msg::Ack {
                write,
                durable,
                applied,
            } => {
                assert!(
                    c.authentic,
                    "the follower acknowledges on connection {conn}, which never proved the key"
                );
                assert_eq!(write, written, "Ack names another written LSN");
                assert!(
                    applied <= durable && durable <= write,
                    "Ack {write}/{durable}/{applied} out of order"
                );
            }
            Msg::Reject { .. } => {}
            other => panic!("the follower sent {}", other.name()),
        }
    }

    /// The follower answered a Hello: its reply states its log's tail and carries its honest
    /// proof over the connection's transcript, which the oracle records.
    fn on_hello_reply_sent(&mut self, conn: ConnId, msg: Msg, written: Lsn) {
        let Msg::HelloReply {
            version,
            last_lsn,
            last_epoch,
            last_crc,
            nonce,
            mac,
            cluster_id,
            node_id,
        } = msg
        else {
            unreachable!("called for a HelloReply")
        };
        let (crc, epoch) = self.log.last_crc_epoch();
        assert_eq!(
            (last_lsn, last_crc, last_epoch),
            (written, crc, epoch),
            "HelloReply misstates the log's tail"
        );
        assert_eq!(
            (cluster_id.as_str(), node_id.as_str()),
            (CLUSTER, FOLLOWER_ID)
        );
        assert!(
            (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version),
            "chose version {version}"
        );
        let c = self.conns.get_mut(&conn).expect("checked by on_sent");
        assert_eq!(
            nonce, c.nonce,
            "HelloReply carries another connection's nonce"
        );
        let (primary_id, epoch, primary_nonce) =
            c.hello.clone().expect("a HelloReply answers a Hello");
        let s = Session {
            version,
            primary_id,
            epoch: epoch.0,
            primary_nonce,
            follower_nonce: nonce,
        };
        assert!(
            mac == s.honest(Role::Follower),
            "the follower's proof is not the honest one"
        );
        remember(&mut self.seen, mac);
        remember(&mut self.seen, s.honest(Role::Primary));
        c.session = Some(s);
    }

    fn truncate(&mut self, after: Lsn, expect_crc: u32) {
        assert!(
            after < self.log.last(),
            "truncate after {after} but the log ends at {}",
            self.log.last()
        );
        if after > Lsn::ZERO && self.log.crc(after) != Some(expect_crc) {
            // What the node's driver does: refuse, change nothing.
            let (last_crc, last_epoch) = self.log.last_crc_epoch();
            let tail = crate::vocab::Tail {
                last: self.log.last(),
                last_epoch,
                last_crc,
                durable: self.log_durable.min(self.log.last()),
                applied: Lsn::ZERO,
            };
            let mut out = Vec::new();
            self.f
                .on_truncate_refused(after, "diverged".into(), tail, &mut out);
            self.apply(None, out);
            return;
        }
        self.log.truncate_after(after);
        self.log_durable = self.log_durable.min(after);
        let (crc, epoch) = self.log.last_crc_epoch();
        self.f.on_truncated(crc, epoch);
    }

    fn append(&mut self, first: Lsn, last: Lsn, records: &[u8]) {
        let end = self.log.last();
        assert_eq!(
            first,
            end.next(),
            "the follower appends {first}..={last} to a log ending at {end}"
        );
        assert!(last >= first, "Append of {first}..={last}");
        match self.log.append_replicated(records) {
            Ok(got) => assert_eq!(
                got, last,
                "Append {first}..={last} holds records up to {got}"
            ),
            Err(reason) => {
                let mut more = Vec::new();
                let tail = self.log.tail(self.log_durable, self.f.applied());
                self.f.on_append_failed(reason, tail, &mut more);
                self.apply(None, more);
            }
        }
    }

    fn check(&self) {
        let (w, d, a) = (self.f.written(), self.f.durable(), self.f.applied());
        assert_eq!(
            w,
            self.log.last(),
            "the follower's written LSN and its log disagree"
        );
        assert!(
            a <= d && d <= w,
            "follower positions out of order: written {w} durable {d} applied {a}"
        );
    }

    pub(super) fn finish(&self) {
        let s = self.f.status(self.now);
        assert_eq!(s.write_lsn, self.f.written().0);
    }
}
