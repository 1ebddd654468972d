//! The follower under attack: the fuzzer plays the primary (or anyone who can reach the
//! follower's port), and the harness is the follower's executor (its log, its reader, its
//! transport). The harness follows every connection's handshake and knows which ones proved
//! the cluster key; the follower must never append or truncate, nor acknowledge, serve a fetch
//! or answer one, for any other. Appends must continue its log densely and agree with the
//! records they carry; acknowledgements must state the log as it is.

use std::collections::{BTreeMap, VecDeque};

use logship_engine::{Epoch, Lsn};

use crate::fetch::FetchRequest;
use crate::follower::Follower;
use crate::protocol::auth::{Role, MAC_LEN, NONCE_LEN};
use crate::protocol::msg::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::protocol::Msg;
use crate::replica::Replica;
use crate::vocab::{self, Action, ConnId, NonceSource};

use super::common::{follower_config, Session, CLUSTER, FOLLOWER_ID, INTEGRITY_OP};
use super::executor::Executor;
use super::input::{
    pick_any_msg, pick_fetch, pick_hello, pick_integrity_msg, pick_mac, pick_records, remember,
    Input,
};
use super::log_model::LogModel;

/// Connections the fuzzer opens to the follower, at most.
pub(super) const MAX_FOLLOWER_CONNS: usize = 6;
/// Seeds the follower's handshake nonces (which the harness predicts, so any seed will do).
const FOLLOWER_NONCE_SEED: u64 = 0xf0;

/// One connection to the follower, as the harness saw it. A follower streams only after a
/// Hello and then a Start carrying the primary's proof over that Hello's transcript: the first
/// two messages delivered on the connection decide.
#[derive(Debug)]
pub(super) struct FollowerConn {
    /// The follower's nonce on it (predicted).
    nonce: [u8; NONCE_LEN],
    /// Messages delivered on it.
    delivered: usize,
    /// The transcript the follower answers with, if the first message was a Hello.
    session: Option<Session>,
    /// The second message was a Start with the primary's true proof: the peer proved the key.
    proven: bool,
    /// The follower answered the Hello.
    replied: bool,
    /// A VoteRequest was delivered on it: the follower may answer it.
    vote_asked: bool,
}

impl FollowerConn {
    /// The oracle: which Hello the follower answers, and whether a Start proves the key.
    fn delivered(&mut self, m: &Msg) {
        match (self.delivered, m) {
            (
                0,
                Msg::Hello {
                    version_max,
                    epoch,
                    nonce,
                    node_id,
                    ..
                },
            ) => {
                self.session = Some(Session {
                    version: (*version_max).min(PROTOCOL_VERSION),
                    primary_id: node_id.clone(),
                    epoch: epoch.0,
                    primary_nonce: *nonce,
                    follower_nonce: self.nonce,
                });
            }
            (1, Msg::Start { mac, .. }) => {
                self.proven =
                    (self.session.as_ref()).is_some_and(|s| *mac == s.honest(Role::Primary));
            }
            (_, Msg::VoteRequest { .. }) => self.vote_asked = true,
            _ => {}
        }
        self.delivered += 1;
    }
}

pub(super) struct FollowerUnderTest {
    x: Executor,
    log: LogModel,
    log_durable: Lsn,
    conns: BTreeMap<ConnId, FollowerConn>,
    /// Peers' fetches waiting for the reader ([`Action::ServeFetch`]).
    fetches: VecDeque<(ConnId, FetchRequest)>,
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
        let config = follower_config(input.byte() & 1 == 1);
        let nonces = NonceSource::from_u64(FOLLOWER_NONCE_SEED);
        let replica = Replica::new_follower(config, tail, nonces);
        FollowerUnderTest {
            x: Executor::new(replica, FOLLOWER_NONCE_SEED),
            log,
            log_durable,
            conns: BTreeMap::new(),
            fetches: VecDeque::new(),
            seen: Vec::new(),
        }
    }

    pub(super) fn step(&mut self, op: u8, input: &mut Input<'_>) {
        if op == INTEGRITY_OP {
            let conn = self.pick_conn(input);
            let m = match input.byte() & 1 {
                0 => pick_fetch(input, &self.log),
                _ => pick_integrity_msg(input, self.log.last()),
            };
            self.send(conn, &m.encode());
        } else {
            self.run_op(op, input);
        }
        self.check();
    }

    /// One of the operations other than [`INTEGRITY_OP`].
    fn run_op(&mut self, op: u8, input: &mut Input<'_>) {
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
                let next = self.log.last().next();
                let (conn, m) = (self.pick_conn(input), pick_records(input, next));
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
            7 => self.tick(input),
            8 => self.durable_or_applied(input),
            _ => {
                let conn = self.pick_conn(input);
                let out = self.x.closed(conn, "connection lost");
                self.execute(None, out);
            }
        }
    }

    fn accept(&mut self) {
        if self.x.numbered() >= MAX_FOLLOWER_CONNS {
            return;
        }
        let (conn, nonce, out) = self.x.accept();
        let c = FollowerConn {
            nonce,
            delivered: 0,
            session: None,
            proven: false,
            replied: false,
            vote_asked: false,
        };
        self.conns.insert(conn, c);
        self.execute(None, out);
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
            history: input.history(last),
        }
    }

    /// Time passes: the transport reports the connections the follower closed, the reader
    /// answers the fetches it was given, then the tick.
    fn tick(&mut self, input: &mut Input<'_>) {
        self.x.advance(input.duration());
        for conn in self.x.closing() {
            let out = self.x.closed(conn, "closed by this node");
            self.execute(None, out);
        }
        // Bounded: a fetch is queued only by a message from the fuzzer.
        while let Some((conn, request)) = self.fetches.pop_front() {
            self.serve_fetch(input, conn, request);
        }
        let out = self.x.step(vocab::Input::Tick);
        self.execute(None, out);
    }

    fn durable_or_applied(&mut self, input: &mut Input<'_>) {
        let out = if input.byte() & 1 == 0 {
            let lo = self.log_durable.min(self.log.last());
            let span = (self.log.last().0 - lo.0) as usize;
            self.log_durable = Lsn(lo.0 + input.pick(span + 1) as u64);
            self.x.step(vocab::Input::Durable(self.log_durable))
        } else {
            let lsn = input.lsn_near(self.follower().durable());
            self.x.step(vocab::Input::Applied(lsn))
        };
        self.execute(None, out);
    }

    fn follower(&self) -> &Follower {
        self.x.replica().as_follower().expect("a follower")
    }

    /// The reader answers a fetch as the node's `serve_fetch` does (or fails it).
    fn serve_fetch(&mut self, input: &mut Input<'_>, conn: ConnId, request: FetchRequest) {
        let (prev_crc, mut read) = self.log.fetch_read(&request, self.log_durable);
        if input.pick(8) == 0 {
            read = Err("injected read failure".into());
        }
        let out = self.x.step(vocab::Input::FetchRead {
            link: None,
            conn,
            request,
            prev_crc,
            read,
        });
        self.execute(None, out);
    }

    /// Bytes arrive on `conn`: the oracle reads them, then the follower does.
    fn send(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(said) = self.x.peer_says(conn, bytes) else {
            return;
        };
        let c = self.conns.get_mut(&conn).expect("a known connection");
        for m in &said.msgs {
            c.delivered(m);
        }
        let out = self.x.deliver(conn, bytes, &said);
        self.execute(Some(conn), out);
    }

    /// Carries out the follower's actions in order, as the node does: a log action that fails
    /// is reported at once, and the actions after it are dropped.
    fn execute(&mut self, event_conn: Option<ConnId>, out: Vec<Action>) {
        for a in out {
            match a {
                Action::Send { conn, msg } => self.on_sent(conn, msg),
                Action::Close { conn, .. } => self.x.close_asked(conn),
                Action::Truncate { after, expect_crc } => {
                    self.assert_proven(event_conn, "Truncate");
                    if !self.truncate(after, expect_crc) {
                        return;
                    }
                }
                Action::Append {
                    first,
                    last,
                    records,
                } => {
                    self.assert_proven(event_conn, "Append");
                    if !self.append(first, last, &records) {
                        return;
                    }
                }
                Action::ServeFetch {
                    link: None,
                    conn,
                    request,
                } => {
                    self.assert_proven(event_conn, "ServeFetch");
                    self.fetches.push_back((conn, request));
                }
                other => panic!("not a follower's action here: {other:?}"),
            }
        }
    }

    fn proven(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.proven)
    }

    fn assert_proven(&self, event_conn: Option<ConnId>, what: &str) {
        let ok = event_conn.is_some_and(|c| self.proven(c));
        assert!(ok, "the follower emitted {what} for connection {event_conn:?}, which never proved the cluster key");
    }

    fn on_sent(&mut self, conn: ConnId, msg: Msg) {
        assert!(
            self.conns.contains_key(&conn),
            "the follower sent {} on connection {conn}, which it never accepted",
            msg.name()
        );
        let proven = self.proven(conn);
        match msg {
            Msg::HelloReply { .. } => self.on_hello_reply_sent(conn, msg),
            Msg::Ack {
                write,
                durable,
                applied,
            } => {
                assert!(
                    proven,
                    "the follower acknowledges on connection {conn}, which never proved the key"
                );
                assert_eq!(write, self.log.last(), "Ack names another written LSN");
                assert!(
                    applied <= durable && durable <= write && durable <= self.log_durable,
                    "Ack {write}/{durable}/{applied} out of order or past the log's durable {}",
                    self.log_durable
                );
            }
            Msg::Fetched {
                first,
                last,
                records,
                ..
            } => {
                assert!(proven, "a Fetched to connection {conn}, never proven");
                let durable = self.log_durable;
                self.log.check_fetched((first, last), &records, durable);
            }
            Msg::FetchFailed { .. } => {
                assert!(proven, "a FetchFailed to connection {conn}, never proven");
            }
            Msg::VoteResponse { .. } => {
                let asked = self.conns.get(&conn).is_some_and(|c| c.vote_asked);
                assert!(
                    asked,
                    "a VoteResponse on connection {conn}, which asked no vote"
                );
            }
            Msg::Reject { .. } => {}
            other => panic!("the follower sent {}", other.name()),
        }
    }

    /// The follower answered a Hello: its reply states its log's tail and carries its honest
    /// proof over the transcript of the first message on the connection, a Hello.
    fn on_hello_reply_sent(&mut self, conn: ConnId, msg: Msg) {
        let Msg::HelloReply {
            version,
            last_lsn,
            last_epoch,
            last_crc,
            nonce,
            mac,
            cluster_id,
            node_id,
            history: _,
        } = msg
        else {
            unreachable!("called for a HelloReply")
        };
        let (crc, epoch) = self.log.last_crc_epoch();
        assert_eq!(
            (last_lsn, last_crc, last_epoch),
            (self.log.last(), crc, epoch),
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
        assert!(!c.replied, "a second HelloReply on connection {conn}");
        c.replied = true;
        assert_eq!(
            nonce, c.nonce,
            "HelloReply carries another nonce than the one drawn for it"
        );
        let s = c.session.as_ref().expect("a HelloReply answers a Hello");
        assert_eq!(version, s.version, "HelloReply chose another version");
        let honest = s.honest(Role::Follower);
        let primary_proof = s.honest(Role::Primary);
        assert!(mac == honest, "the follower's proof is not the honest one");
        remember(&mut self.seen, mac);
        remember(&mut self.seen, primary_proof);
    }

    /// Cuts the log as the node's `truncate` does (only where the record's CRC is the
    /// primary's), and reports. False if nothing was cut.
    fn truncate(&mut self, after: Lsn, expect_crc: u32) -> bool {
        assert!(
            after < self.log.last(),
            "truncate after {after} but the log ends at {}",
            self.log.last()
        );
        let found_crc = self.log.crc(after).unwrap_or(0);
        let done = after == Lsn::ZERO || found_crc == expect_crc;
        if done {
            self.log.truncate_after(after);
            self.log_durable = self.log_durable.min(after);
        }
        let tail = self.log.tail(self.log_durable, self.follower().applied());
        let out = self.x.step(vocab::Input::Truncated {
            after,
            found_crc,
            done,
            tail,
        });
        self.execute(None, out);
        done
    }

    /// Appends as the node's `append_replicated` does, and reports a failure. False if it failed.
    fn append(&mut self, first: Lsn, last: Lsn, records: &[u8]) -> bool {
        let end = self.log.last();
        assert_eq!(
            first,
            end.next(),
            "the follower appends {first}..={last} to a log ending at {end}"
        );
        assert!(last >= first, "Append of {first}..={last}");
        match self.log.append_replicated(records) {
            Ok(got) => {
                assert_eq!(
                    got, last,
                    "Append {first}..={last} holds records up to {got}"
                );
                true
            }
            Err(reason) => {
                let tail = self.log.tail(self.log_durable, self.follower().applied());
                let out = self.x.step(vocab::Input::AppendFailed { reason, tail });
                self.execute(None, out);
                false
            }
        }
    }

    fn check(&self) {
        let f = self.follower();
        assert_eq!(
            f.written(),
            self.log.last(),
            "the follower's written LSN and its log disagree"
        );
    }

    pub(super) fn finish(&self) {
        let f = self.follower();
        let s = f.status(self.x.now());
        assert_eq!(s.write_lsn, f.written().0);
    }
}
