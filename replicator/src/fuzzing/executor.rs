//! The harness's executor of a [`Replica`], shared by both sides: it numbers connections and
//! tells the replica of their lifecycle as a transport reports it (dialed, connected or
//! accepted, data, closed, the last also after the replica asked to close one), and checks
//! after every step what must always hold: the replica's invariants, the nonce it draws for
//! each new connection (predicted by an identical [`NonceSource`]), and its counters:
//! connections opened, and malformed frames, which rise exactly when a decoder error ended a
//! connection.
//!
//! What the actions mean (sends to check, log work to do, reads to answer) is each side's.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::protocol::auth::NONCE_LEN;
use crate::replica::Replica;
use crate::vocab::{self, Action, ConnId, NonceSource};

use super::common::{Delivered, PeerStream};

/// A connection the replica was told of and not yet told closed.
#[derive(Debug)]
struct Wire {
    /// What its peer said; `None` while an outgoing connection is being established.
    stream: Option<PeerStream>,
    /// The replica asked to close it; the transport's `Closed` is still to come.
    closing: bool,
}

/// One replica under test and the connections its executor holds.
pub(super) struct Executor {
    replica: Replica,
    now: Duration,
    /// The twin of the replica's nonce source: the nonce it must draw next.
    nonces: NonceSource,
    wires: BTreeMap<ConnId, Wire>,
    /// Connections numbered so far (never reused, as a transport's).
    numbered: u64,
    /// Decoder errors seen, on connections the replica still read.
    malformed: u64,
    /// Connections reported connected or accepted.
    connections: u64,
}

impl Executor {
    /// Runs `replica`, built with `NonceSource::from_u64(nonce_seed)`.
    pub(super) fn new(replica: Replica, nonce_seed: u64) -> Executor {
        Executor {
            replica,
            now: Duration::ZERO,
            nonces: NonceSource::from_u64(nonce_seed),
            wires: BTreeMap::new(),
            numbered: 0,
            malformed: 0,
            connections: 0,
        }
    }

    pub(super) fn replica(&self) -> &Replica {
        &self.replica
    }

    pub(super) fn now(&self) -> Duration {
        self.now
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Connections numbered so far.
    pub(super) fn numbered(&self) -> usize {
        self.numbered as usize
    }

    /// Steps the replica, then checks its invariants and counters.
    pub(super) fn step(&mut self, input: vocab::Input) -> Vec<Action> {
        let out = self.replica.step(self.now, input);
        self.replica.check_invariants();
        let c = self.replica.counters();
        assert_eq!(
            c.malformed_frames, self.malformed,
            "the malformed-frame counter disagrees with the decoder errors that ended connections"
        );
        assert_eq!(
            c.connections, self.connections,
            "the connection counter disagrees with the connections opened"
        );
        out
    }

    fn number(&mut self, stream: Option<PeerStream>) -> ConnId {
        self.numbered += 1;
        let conn = ConnId(self.numbered);
        let closing = false;
        self.wires.insert(conn, Wire { stream, closing });
        conn
    }

    /// A peer connects: the connection, the nonce the replica must use on it, the actions.
    pub(super) fn accept(&mut self) -> (ConnId, [u8; NONCE_LEN], Vec<Action>) {
        let conn = self.number(Some(PeerStream::new()));
        self.connections += 1;
        let nonce = self.nonces.next_nonce();
        (
            conn,
            nonce,
            self.step(vocab::Input::Accepted {
                conn,
                peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            }),
        )
    }

    /// The replica asked to connect `link`: the connection starts (`Dialed`).
    pub(super) fn dial(&mut self, link: usize) -> (ConnId, Vec<Action>) {
        let conn = self.number(None);
        (conn, self.step(vocab::Input::Dialed { link, conn }))
    }

    /// The oldest outgoing connection still being established (and not being closed).
    pub(super) fn dialing(&self) -> Option<ConnId> {
        (self.wires.iter())
            .find(|(_, w)| w.stream.is_none() && !w.closing)
            .map(|(&c, _)| c)
    }

    /// An outgoing connection is up: the nonce the replica must use on it, and the actions.
    pub(super) fn connected(&mut self, conn: ConnId) -> ([u8; NONCE_LEN], Vec<Action>) {
        let w = self
            .wires
            .get_mut(&conn)
            .expect("connecting a numbered wire");
        assert!(w.stream.is_none(), "connection {conn} connected twice");
        w.stream = Some(PeerStream::new());
        self.connections += 1;
        let nonce = self.nonces.next_nonce();
        (nonce, self.step(vocab::Input::Connected { conn }))
    }

    /// The replica asked to close `conn`: the transport reports `Closed` later.
    pub(super) fn close_asked(&mut self, conn: ConnId) {
        assert!(
            (1..=self.numbered).contains(&conn.0),
            "the replica closes connection {conn}, which was never opened"
        );
        if let Some(w) = self.wires.get_mut(&conn) {
            w.closing = true;
        }
    }

    /// Connections the replica asked to close, whose `Closed` is still to come.
    pub(super) fn closing(&self) -> Vec<ConnId> {
        (self.wires.iter())
            .filter(|(_, w)| w.closing)
            .map(|(&c, _)| c)
            .collect()
    }

    /// Open, and not being closed.
    pub(super) fn is_open(&self, conn: ConnId) -> bool {
        self.wires.get(&conn).is_some_and(|w| !w.closing)
    }

    /// The transport reports `conn` closed (or its connect failed); nothing for a connection
    /// already reported closed.
    pub(super) fn closed(&mut self, conn: ConnId, why: &str) -> Vec<Action> {
        if self.wires.remove(&conn).is_none() {
            return Vec::new();
        }
        let why = why.to_string();
        self.step(vocab::Input::Closed { conn, why })
    }

    /// What `bytes` from the peer on `conn` say, as the oracle reads them; `None` where no
    /// transport would deliver them (a connection not yet up, or reported closed).
    pub(super) fn peer_says(&mut self, conn: ConnId, bytes: &[u8]) -> Option<Delivered> {
        let stream = self.wires.get_mut(&conn)?.stream.as_mut()?;
        Some(stream.push(bytes))
    }

    /// Delivers the bytes [`Executor::peer_says`] read: a decoder error must end the
    /// connection, and bytes after one must do nothing.
    pub(super) fn deliver(&mut self, conn: ConnId, bytes: &[u8], said: &Delivered) -> Vec<Action> {
        if said.error.is_some() {
            self.malformed += 1;
        }
        let bytes = bytes::BytesMut::from(bytes);
        let out = self.step(vocab::Input::Data { conn, bytes });
        if let Some(e) = &said.error {
            assert!(
                out.iter()
                    .any(|a| matches!(a, Action::Close { conn: c, .. } if *c == conn)),
                "a malformed frame ({e}) did not end connection {conn}: {out:?}"
            );
        }
        if said.ignored {
            assert!(
                out.is_empty(),
                "bytes after a malformed frame on connection {conn} did something: {out:?}"
            );
        }
        out
    }
}
