//! The primary under attack: the fuzzer plays its follower, and the harness is the primary's
//! executor (its log's batches, durability and purges, its reader, its transport). The harness
//! follows every connection's handshake and knows which follower proofs were the true one; the
//! primary must never send `Start`, `Records` or `Heartbeat` to any other connection. What it
//! sends must be its log's bytes, dense from the start it chose by the rules (truncate a
//! follower that is ahead, refuse one that needs purged records, compare the CRC of the
//! follower's last record), within the window of unacknowledged bytes; answers to the
//! follower's fetches hold durable records of its log; commit LSNs only rise, and without an
//! authenticated follower the remote levels of a blocking quorum do not move.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use logship_engine::{Epoch, Lsn};

use crate::commit::QuorumPolicy;
use crate::primary::Primary;
use crate::protocol::auth::{self, Role, MAC_LEN, NONCE_LEN};
use crate::protocol::msg::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::protocol::Msg;
use crate::replica::Replica;
use crate::vocab::{self, Action, ConnId, NonceSource, ReadError};

use super::common::{
    cluster_key, header_crc, primary_config, Session, CLUSTER, FOLLOWER_ID, INTEGRITY_OP,
    MAX_INFLIGHT_BYTES, MAX_LOG_RECORDS, PRIMARY_ID,
};
use super::executor::Executor;
use super::input::{
    pick_ack, pick_any_msg, pick_fetch, pick_integrity_msg, pick_mac, remember, Input,
};
use super::log_model::LogModel;

/// One connection of the primary's link, as the harness saw it.
#[derive(Debug, Default)]
pub(super) struct PrimaryConn {
    /// The nonce the primary must use on it (predicted when it connected).
    nonce: Option<[u8; NONCE_LEN]>,
    /// The nonce of the primary's Hello on it.
    hello_nonce: Option<[u8; NONCE_LEN]>,
    /// A HelloReply was delivered on it: the first one decides the handshake.
    replied: bool,
    /// The reply that proved the key: transcript, the follower's last LSN and its CRC.
    proof: Option<(Session, Lsn, u32)>,
    /// After a Start: the next LSN the primary must send.
    next: Option<Lsn>,
    /// Records frames sent and not acknowledged: (last LSN, record bytes).
    inflight: VecDeque<(Lsn, u64)>,
    /// A VoteRequest was delivered on it: the primary may answer it.
    vote_asked: bool,
}

pub(super) struct PrimaryUnderTest {
    x: Executor,
    log: LogModel,
    epoch: Epoch,
    durable: Lsn,
    conns: BTreeMap<ConnId, PrimaryConn>,
    /// Reads waiting for the reader: catch-up chunks, CRC lookups, peers' fetches.
    reads: VecDeque<Action>,
    seen: Vec<[u8; MAC_LEN]>,
    /// The commit LSNs of the primary's machine after the last step.
    committed: [Lsn; 4],
    /// The commit LSNs the replica last reported ([`Action::Committed`]).
    reported: [Lsn; 4],
    /// Remote levels can only move with a follower's acknowledgements.
    quorum_blocks: bool,
    any_proven: bool,
}

impl PrimaryUnderTest {
    pub(super) fn new(input: &mut Input<'_>) -> PrimaryUnderTest {
        let epoch = Epoch(input.pick(3) as u64);
        let mut log = LogModel::default();
        let n = input.pick(12);
        for _ in 0..n {
            log.push(epoch, 0x22, input.pick(40));
        }
        log.first = Lsn(1 + input.pick(n + 1) as u64);
        let durable = Lsn(input.pick(n + 1) as u64);
        let quorum = input.byte() & 1 == 1;
        let policy = match input.byte() & 1 {
            0 => QuorumPolicy::Block,
            _ => QuorumPolicy::Degrade {
                after: Duration::from_millis(500),
            },
        };
        let seed = u64::from(input.byte());
        let replica = Replica::new_primary(
            primary_config(epoch, quorum, policy),
            (log.first, log.last(), durable),
            seed,
            NonceSource::from_u64(seed),
        );
        let mut s = PrimaryUnderTest {
            committed: replica.committed(),
            reported: replica.committed(),
            x: Executor::new(replica, seed),
            log,
            epoch,
            durable,
            conns: BTreeMap::new(),
            reads: VecDeque::new(),
            seen: Vec::new(),
            quorum_blocks: quorum && policy == QuorumPolicy::Block,
            any_proven: false,
        };
        // The link connects at once and the connection comes up: where the fuzzer starts.
        let out = s.x.step(vocab::Input::Tick);
        s.execute(out);
        s.connect_outcome(true);
        s
    }

    pub(super) fn step(&mut self, op: u8, input: &mut Input<'_>) {
        if op == INTEGRITY_OP {
            if let Some(conn) = self.pick_conn(input) {
                let m = match input.byte() & 1 {
                    0 => pick_fetch(input, &self.log),
                    _ => pick_integrity_msg(input, self.log.last()),
                };
                self.send(conn, &m.encode());
            }
        } else {
            self.run_op(op, input);
        }
        self.check();
    }

    /// One of the operations other than [`INTEGRITY_OP`].
    fn run_op(&mut self, op: u8, input: &mut Input<'_>) {
        match op % 12 {
            0 | 1 => {
                if let Some(conn) = self.pick_conn(input) {
                    let m = self.pick_hello_reply(input, conn);
                    self.send(conn, &m.encode());
                }
            }
            2 => {
                if let Some(conn) = self.pick_conn(input) {
                    let sent = self.conns[&conn].next.map_or(Lsn::ZERO, Lsn::prev);
                    self.send(conn, &pick_ack(input, sent).encode());
                }
            }
            3 => {
                if let Some(conn) = self.pick_conn(input) {
                    self.send(conn, &pick_any_msg(input, self.log.last()).encode());
                }
            }
            4 => {
                if let Some(conn) = self.pick_conn(input) {
                    self.send(conn, &input.bytes(300));
                }
            }
            5 => self.tick(input),
            6 => self.connect_outcome(input.byte() & 3 != 0),
            7 => self.batch(input),
            8 => self.local_durable(input),
            9 => self.answer_read(input),
            10 => self.purge(input),
            _ => {
                if let Some(conn) = self.pick_conn(input) {
                    let out = self.x.closed(conn, "connection lost");
                    self.execute(out);
                }
            }
        }
    }

    /// Usually the newest connection; sometimes an older one.
    fn pick_conn(&mut self, input: &mut Input<'_>) -> Option<ConnId> {
        let newest = *self.conns.keys().next_back()?;
        if input.pick(4) == 0 {
            let i = input.pick(self.conns.len());
            return self.conns.keys().nth(i).copied();
        }
        Some(newest)
    }

    /// Time passes: the transport reports the connections the primary closed, then the tick.
    fn tick(&mut self, input: &mut Input<'_>) {
        self.x.advance(input.duration());
        for conn in self.x.closing() {
            let out = self.x.closed(conn, "closed by this node");
            self.execute(out);
        }
        let out = self.x.step(vocab::Input::Tick);
        self.execute(out);
    }

    /// The oldest connect under way succeeds, or fails.
    fn connect_outcome(&mut self, up: bool) {
        let Some(conn) = self.x.dialing() else {
            return;
        };
        let out = if up {
            let (nonce, out) = self.x.connected(conn);
            self.conns.get_mut(&conn).expect("dialed by execute").nonce = Some(nonce);
            out
        } else {
            self.x.closed(conn, "connect failed")
        };
        self.execute(out);
    }

    fn pick_hello_reply(&mut self, input: &mut Input<'_>, conn: ConnId) -> Msg {
        let version = input.version();
        let nonce = input.nonce();
        let near = if input.byte() & 1 == 0 {
            self.log.last()
        } else {
            self.log.first.prev()
        };
        let last_lsn = input.lsn_near(near);
        let last_crc = match input.pick(4) {
            0 => input.u32(),
            _ => self.log.crc(last_lsn).unwrap_or(0),
        };
        let session = self.conns[&conn].hello_nonce.map(|primary_nonce| Session {
            version,
            primary_id: PRIMARY_ID.into(),
            epoch: self.epoch.0,
            primary_nonce,
            follower_nonce: nonce,
        });
        let mac = pick_mac(input, Role::Follower, session.as_ref(), &self.seen);
        Msg::HelloReply {
            version,
            last_lsn,
            last_epoch: Epoch(input.pick(3) as u64),
            last_crc,
            nonce,
            mac,
            cluster_id: input.name(CLUSTER),
            node_id: input.name(FOLLOWER_ID),
            history: input.history(last_lsn),
        }
    }

    /// Bytes arrive on `conn`: the oracle reads them, then the primary does. An Ack frees the
    /// window if the primary kept the connection.
    fn send(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(said) = self.x.peer_says(conn, bytes) else {
            return;
        };
        for m in &said.msgs {
            self.before_delivery(conn, m);
        }
        let out = self.x.deliver(conn, bytes, &said);
        self.execute(out);
        for m in &said.msgs {
            if let Msg::Ack { write, .. } = m {
                self.acked(conn, *write);
            }
        }
    }

    /// The oracle: the first HelloReply on a connection decides; if its proof is the
    /// follower's true one, the follower proved the key.
    fn before_delivery(&mut self, conn: ConnId, m: &Msg) {
        if let (Msg::VoteRequest { .. }, Some(c)) = (m, self.conns.get_mut(&conn)) {
            c.vote_asked = true;
        }
        let Msg::HelloReply {
            version,
            last_lsn,
            last_crc,
            nonce,
            mac,
            ..
        } = m
        else {
            return;
        };
        let c = self
            .conns
            .get_mut(&conn)
            .expect("delivering on a known connection");
        let Some(primary_nonce) = c.hello_nonce.filter(|_| !c.replied) else {
            return;
        };
        c.replied = true;
        let s = Session {
            version: *version,
            primary_id: PRIMARY_ID.into(),
            epoch: self.epoch.0,
            primary_nonce,
            follower_nonce: *nonce,
        };
        let honest = s.honest(Role::Follower);
        remember(&mut self.seen, honest);
        if *mac == honest {
            c.proof = Some((s, *last_lsn, *last_crc));
            self.any_proven = true;
        }
    }

    /// An Ack the primary took (the connection is still open) frees the window up to `write`.
    fn acked(&mut self, conn: ConnId, write: Lsn) {
        if !self.x.is_open(conn) {
            return;
        }
        let Some(c) = self.conns.get_mut(&conn).filter(|c| c.next.is_some()) else {
            return;
        };
        while c.inflight.front().is_some_and(|&(last, _)| last <= write) {
            c.inflight.pop_front();
        }
    }

    /// Carries out the primary's actions in order, as the node does: a connect starts at once
    /// (`Dialed`), reads wait for the reader.
    fn execute(&mut self, out: Vec<Action>) {
        let mut todo = VecDeque::from(out);
        while let Some(a) = todo.pop_front() {
            match a {
                Action::Connect { link, .. } => {
                    assert_eq!(link, 0, "the primary has one link");
                    let (conn, more) = self.x.dial(link);
                    self.conns.insert(conn, PrimaryConn::default());
                    todo.extend(more);
                }
                Action::Send { conn, msg } => self.on_sent(conn, msg),
                Action::Close { conn, .. } => self.x.close_asked(conn),
                Action::Committed(levels) => self.on_committed(levels),
                read @ (Action::ReadChunk { .. }
                | Action::LookupCrc { .. }
                | Action::ServeFetch { .. }) => self.reads.push_back(read),
                other => {
                    panic!("the primary serves from the start and repairs nothing here: {other:?}")
                }
            }
        }
    }

    /// The replica reports commit progress: every level rises, none past local durability.
    fn on_committed(&mut self, levels: [Lsn; 4]) {
        for (level, (now, before)) in levels.iter().zip(self.reported).enumerate() {
            assert!(
                *now >= before && *now <= levels[0],
                "reported commit LSN of level {level} went from {before} to {now} (local {})",
                levels[0]
            );
        }
        self.reported = levels;
    }

    fn on_sent(&mut self, conn: ConnId, msg: Msg) {
        let Some(c) = self.conns.get_mut(&conn) else {
            panic!(
                "the primary sent {} on connection {conn}, which it never opened",
                msg.name()
            )
        };
        match msg {
            Msg::Hello { .. } => self.check_hello(conn, msg),
            Msg::Start {
                mac,
                truncate_after,
                start_lsn,
                commit_lsn,
                cut_crc,
                history: _,
            } => {
                self.check_start(conn, mac, (truncate_after, cut_crc), start_lsn, commit_lsn);
            }
            Msg::Records {
                first,
                last,
                records,
                ..
            } => self.check_records(conn, first, last, &records),
            Msg::Heartbeat {
                last_lsn,
                commit_lsn,
            } => {
                assert!(
                    c.next.is_some(),
                    "a Heartbeat to connection {conn}, which is not streaming"
                );
                assert!(
                    last_lsn == self.log.last() && commit_lsn <= last_lsn,
                    "Heartbeat misstates the primary"
                );
            }
            Msg::Fetched {
                first,
                last,
                records,
                ..
            } => {
                assert!(
                    c.next.is_some(),
                    "a Fetched to connection {conn}, not streaming"
                );
                self.log
                    .check_fetched((first, last), &records, self.durable);
            }
            Msg::FetchFailed { .. } => {
                assert!(
                    c.next.is_some(),
                    "a FetchFailed to connection {conn}, not streaming"
                );
            }
            Msg::VoteResponse { .. } => {
                assert!(
                    c.vote_asked,
                    "a VoteResponse on connection {conn}, which asked no vote"
                );
            }
            Msg::Reject { .. } => {}
            other => panic!("the primary sent {}", other.name()),
        }
    }

    /// The primary's Hello states its epoch and log, with the nonce drawn for the connection.
    fn check_hello(&mut self, conn: ConnId, msg: Msg) {
        let Msg::Hello {
            version_min,
            version_max,
            epoch,
            last_lsn,
            nonce,
            cluster_id,
            node_id,
        } = msg
        else {
            unreachable!("called for a Hello")
        };
        assert_eq!(
            (version_min, version_max),
            (MIN_PROTOCOL_VERSION, PROTOCOL_VERSION)
        );
        assert_eq!(
            (epoch, last_lsn),
            (self.epoch, self.log.last()),
            "Hello misstates the primary"
        );
        assert_eq!(
            (cluster_id.as_str(), node_id.as_str()),
            (CLUSTER, PRIMARY_ID)
        );
        let c = self.conns.get_mut(&conn).expect("checked by on_sent");
        assert!(
            c.hello_nonce.is_none(),
            "a second Hello on connection {conn}"
        );
        assert_eq!(
            Some(nonce),
            c.nonce,
            "Hello carries another nonce than the one drawn for it"
        );
        c.hello_nonce = Some(nonce);
    }

    fn check_start(
        &mut self,
        conn: ConnId,
        mac: [u8; MAC_LEN],
        (truncate_after, cut_crc): (Option<Lsn>, u32),
        start: Lsn,
        commit: Lsn,
    ) {
        let (first, last) = (self.log.first, self.log.last());
        let crc_at = |l: Lsn| self.log.crc(l);
        let c = self.conns.get_mut(&conn).expect("checked by on_sent");
        let Some((s, l, crc)) = &c.proof else {
            panic!("Start sent on connection {conn}, whose follower has not proven the cluster key")
        };
        let t = s.transcript();
        assert!(
            auth::verify(&cluster_key(), Role::Primary, &t, &mac),
            "the primary's proof does not verify"
        );
        // A follower ahead is cut at or below the primary's end (the primary may have grown
        // while it looked up the CRC of the cut point); else it continues after its last LSN.
        match truncate_after {
            Some(cut) => assert!(
                cut < *l && cut <= last && start == cut.next(),
                "Start cuts a follower at {l} after {cut} and starts at {start}, primary holding {first}..={last}"
            ),
            None => assert!(
                *l <= last && start == l.next(),
                "Start for a follower at {l} at {start} without a cut, primary holding {first}..={last}"
            ),
        }
        assert!(
            start >= first,
            "Start at {start} but the primary holds {first}.. (purged)"
        );
        if let Some(cut) = truncate_after {
            assert_eq!(
                cut_crc,
                crc_at(cut).unwrap_or(0),
                "Start cuts after {cut} without the primary's CRC there"
            );
        } else {
            assert!(
                *l == Lsn::ZERO || *l >= first,
                "Start after {l}, whose record was purged and so was never compared"
            );
        }
        if truncate_after.is_none() && *l >= first && *l <= last && *l > Lsn::ZERO {
            assert_eq!(
                crc_at(*l),
                Some(*crc),
                "Start although the follower's record {l} differs"
            );
        }
        assert!(
            commit <= last,
            "Start names commit {commit} past the last LSN {last}"
        );
        assert!(c.next.is_none(), "a second Start on connection {conn}");
        c.next = Some(start);
        remember(&mut self.seen, mac);
    }

    fn check_records(&mut self, conn: ConnId, first: Lsn, last: Lsn, records: &[u8]) {
        let c = self.conns.get_mut(&conn).expect("checked by on_sent");
        let Some(next) = c.next else {
            panic!("Records sent on connection {conn} before Start")
        };
        assert_eq!(
            first, next,
            "Records {first}..={last} where {next} comes next"
        );
        assert!(
            first <= last && last <= self.log.last(),
            "Records {first}..={last} past the log's end"
        );
        assert!(
            records == self.log.run(first, last),
            "Records {first}..={last} are not the log's bytes"
        );
        let unacked: u64 = c.inflight.iter().map(|&(_, b)| b).sum();
        let len = records.len() as u64;
        assert!(
            unacked == 0 || unacked + len <= MAX_INFLIGHT_BYTES,
            "{len} bytes sent with {unacked} unacknowledged: window of {MAX_INFLIGHT_BYTES} exceeded"
        );
        c.inflight.push_back((last, len));
        c.next = Some(last.next());
    }

    /// The writer forms a batch of new records.
    fn batch(&mut self, input: &mut Input<'_>) {
        if self.log.records.len() >= MAX_LOG_RECORDS {
            return;
        }
        let first = self.log.last().next();
        for _ in 0..=input.pick(3) {
            self.log.push(self.epoch, 0x33, input.pick(40));
        }
        let last = self.log.last();
        let records = Bytes::from(self.log.run(first, last));
        let out = self.x.step(vocab::Input::Written {
            first,
            last,
            records,
        });
        self.execute(out);
    }

    fn local_durable(&mut self, input: &mut Input<'_>) {
        let span = (self.log.last().0 - self.durable.0) as usize;
        self.durable = Lsn(self.durable.0 + input.pick(span + 1) as u64);
        let out = self.x.step(vocab::Input::Durable(self.durable));
        self.execute(out);
    }

    /// The reader answers the oldest read as the node's `read_job` does (or with a transient
    /// failure).
    fn answer_read(&mut self, input: &mut Input<'_>) {
        let Some(read) = self.reads.pop_front() else {
            return;
        };
        let answer = match read {
            Action::ReadChunk {
                link,
                conn,
                from,
                max_bytes,
            } => {
                let result = match input.pick(8) {
                    0 => Ok(None),
                    1 => Err(ReadError::Failed("injected read failure".into())),
                    _ => self.log.chunk(from, max_bytes, self.log.last()),
                };
                vocab::Input::Chunk {
                    link,
                    conn,
                    from,
                    result,
                }
            }
            Action::LookupCrc { link, conn, lsn } => {
                let crc = match input.pick(8) {
                    0 => None,
                    _ => self.log.held(lsn).map(header_crc),
                };
                vocab::Input::Crc { link, conn, crc }
            }
            Action::ServeFetch {
                link,
                conn,
                request,
            } => {
                let (prev_crc, read) = self.log.fetch_read(&request, self.durable);
                vocab::Input::FetchRead {
                    link,
                    conn,
                    request,
                    prev_crc,
                    read,
                }
            }
            other => unreachable!("only reads are queued, not {other:?}"),
        };
        let out = self.x.step(answer);
        self.execute(out);
    }

    /// Purges up to what retention allows, as the node's `purge_before` does.
    fn purge(&mut self, input: &mut Input<'_>) {
        let wanted = Lsn(self.log.first.0 + 1 + input.pick(4) as u64);
        let allowed = wanted
            .min(self.primary().retention_lsn())
            .min(self.log.last().next());
        if allowed > self.log.first {
            self.log.first = allowed;
            let out = self.x.step(vocab::Input::Purged(allowed));
            self.execute(out);
        }
    }

    fn primary(&self) -> &Primary {
        self.x.replica().as_primary().expect("a primary")
    }

    fn check(&mut self) {
        let c = self.primary().committed();
        for (level, (now, before)) in c.iter().zip(self.committed).enumerate() {
            assert!(
                *now >= before,
                "commit LSN of level {level} regressed from {before} to {now}"
            );
            assert!(
                *now <= c[0],
                "commit LSN of level {level} ({now}) passed local durability ({})",
                c[0]
            );
        }
        if self.quorum_blocks && !self.any_proven {
            assert!(
                c[1..] == self.committed[1..],
                "remote commit moved without an authenticated follower: {c:?}"
            );
        }
        assert_eq!(
            self.reported, c,
            "the replica reported other commit LSNs than its primary's"
        );
        self.committed = c;
    }

    pub(super) fn finish(&self) {
        let s = self.primary().status();
        assert_eq!(s.last_lsn, self.log.last().0);
    }
}
