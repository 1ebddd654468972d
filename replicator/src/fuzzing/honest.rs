//! The honest session: a real primary and a real follower wired together through frame
//! decoders, the harness carrying out their actions on model logs. The follower's log starts as
//! a prefix of the primary's, possibly followed by records the primary does not have (a
//! divergent history, possibly past the primary's end); the input's schedule delivers frames,
//! advances time, appends batches, reports durability and drops connections (reset, or
//! half-open to either side), then everything heals. Properties: no frame fails to decode and
//! neither side refuses the other except with a justified `purged` or `diverged`; appends
//! continue the follower's log densely with the primary's bytes; every record the follower
//! keeps is the primary's; `remote_durable` never passes what the follower made durable; and
//! after healing the pair has converged.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use logship_engine::{Epoch, Lsn};

use crate::commit::QuorumPolicy;
use crate::fetch::IntegrityAction;
use crate::follower::{Follower, FollowerAction};
use crate::link::Phase;
use crate::primary::{Action, Primary};
use crate::protocol::frame::{FrameDecoder, DEFAULT_MAX_BODY_BYTES};
use crate::protocol::{DurabilityLevel, Msg, RejectCode};
use crate::transport::ConnId;

use super::common::{
    drain, follower_config, fresh_nonce, header_crc, primary_config, MAX_LOG_RECORDS,
};
use super::input::Input;
use super::log_model::LogModel;

/// Steps of the honest session's schedule, at most.
const HONEST_STEPS: usize = 64;
/// Virtual time per heal round of the honest session, and the rounds allowed: 30 s covers the
/// longest backoff (5 s) and an open breaker (2 s) several times.
const HEAL_ROUND: Duration = Duration::from_millis(50);
const HEAL_ROUNDS: usize = 600;
/// Frames delivered in one `deliver_all`, at most.
const MAX_DELIVERIES: usize = 4096;
/// Codes an honest pair may refuse each other with: the follower's log cannot be continued.
const HONEST_REJECTS: [RejectCode; 2] = [RejectCode::Purged, RejectCode::Diverged];

/// One TCP connection between the pair.
#[derive(Debug)]
struct Wire {
    to_follower: VecDeque<Bytes>,
    to_primary: VecDeque<Bytes>,
    follower_decoder: FrameDecoder,
    primary_decoder: FrameDecoder,
    /// Each side still uses the connection.
    follower_open: bool,
    primary_open: bool,
    /// Each side will learn that the other closed it (false: a half-open connection).
    follower_hears_close: bool,
    primary_hears_close: bool,
}

impl Wire {
    fn new() -> Wire {
        Wire {
            to_follower: VecDeque::new(),
            to_primary: VecDeque::new(),
            follower_decoder: FrameDecoder::new(DEFAULT_MAX_BODY_BYTES),
            primary_decoder: FrameDecoder::new(DEFAULT_MAX_BODY_BYTES),
            follower_open: true,
            primary_open: true,
            follower_hears_close: true,
            primary_hears_close: true,
        }
    }
}

pub(super) struct HonestPair {
    p: Primary,
    f: Follower,
    plog: LogModel,
    flog: LogModel,
    fdurable: Lsn,
    /// Highest LSN the follower's log has made durable (lowered by truncation).
    fdurable_max: Lsn,
    /// What the primary had durable at start: committed at every level by definition.
    initial_durable: Lsn,
    wires: BTreeMap<ConnId, Wire>,
    reads: VecDeque<Action>,
    now: Duration,
    nonces: u64,
    /// A justified refusal from the primary: the code and its detail.
    verdict: Option<(RejectCode, u64)>,
    /// The primary refused while its log was empty and the follower's was not.
    refused_while_empty: bool,
    /// The first Start the primary sent: truncate_after and start LSN.
    first_start: Option<(Option<Lsn>, Lsn)>,
}

impl HonestPair {
    pub(super) fn run(input: &mut Input<'_>) {
        let mut pair = HonestPair::new(input);
        for _ in 0..HONEST_STEPS {
            if input.is_empty() {
                break;
            }
            pair.step(input);
        }
        pair.heal();
    }

    /// The primary's log; the follower's: a prefix of it, then records the primary does not
    /// have (a divergent history), possibly past the primary's end.
    fn new(input: &mut Input<'_>) -> HonestPair {
        let mut plog = LogModel::default();
        let n = input.pick(20);
        for i in 0..n {
            plog.push(Epoch(0), 0x5a, (i * 7) % 40);
        }
        let mut flog = LogModel {
            first: Lsn::FIRST,
            records: plog.records[..input.pick(n + 1)].to_vec(),
        };
        for _ in 0..input.pick(5) {
            flog.push(Epoch(1), 0xa5, 8);
            let l = flog.last();
            assert_ne!(
                plog.crc(l),
                flog.crc(l),
                "the harness's divergent record {l} has the primary's CRC"
            );
        }
        if input.pick(4) == 0 {
            plog.first = Lsn(1 + input.pick(n + 1) as u64);
        }
        let fdurable = Lsn(input.pick(flog.records.len() + 1) as u64);
        let config = primary_config(Epoch(0), true, QuorumPolicy::Block);
        let p = Primary::new(
            config,
            plog.first,
            plog.last(),
            plog.last(),
            u64::from(input.byte()),
        );
        let f = Follower::new(
            follower_config(input.byte() & 1 == 1),
            flog.tail(fdurable, Lsn::ZERO),
        );
        let mut pair = HonestPair {
            p,
            f,
            initial_durable: plog.last(),
            plog,
            flog,
            fdurable,
            fdurable_max: fdurable,
            wires: BTreeMap::new(),
            reads: VecDeque::new(),
            now: Duration::ZERO,
            nonces: 0,
            verdict: None,
            refused_while_empty: false,
            first_start: None,
        };
        pair.tick(Duration::ZERO);
        pair
    }

    fn step(&mut self, input: &mut Input<'_>) {
        match input.pick(12) {
            0..=2 => {
                self.deliver_one(true);
            }
            3..=5 => {
                self.deliver_one(false);
            }
            6 => self.tick(input.duration()),
            7 => self.batch(input.pick(3) + 1),
            8 => self.follower_durable(),
            9 => self.primary_durable(),
            10 => self.answer_reads(1),
            _ => self.drop_wire(input.pick(3)),
        }
        self.check();
    }

    /// Up to [`HEAL_ROUNDS`] rounds of everything working; then the pair must have converged
    /// or refused for a reason the logs justify.
    fn heal(&mut self) {
        for _ in 0..HEAL_ROUNDS {
            if self.verdict.is_some() || self.converged() {
                break;
            }
            self.answer_reads(usize::MAX);
            self.deliver_all();
            self.follower_durable();
            self.primary_durable();
            self.tick(HEAL_ROUND);
            self.check();
        }
        match self.verdict {
            // An empty primary refuses to empty a follower that holds records.
            Some((RejectCode::Diverged, 0)) if self.refused_while_empty => {}
            Some((RejectCode::Diverged, at)) => {
                let at = Lsn(at);
                assert!(
                    at <= self.flog.last() && at <= self.plog.last(),
                    "diverged at {at}: beyond a log's end"
                );
                assert!(
                    self.flog.record(at) != self.plog.record(at),
                    "refused as diverged at {at}, but the records agree"
                );
            }
            // Checked when it was sent, against the logs as they were then.
            Some((RejectCode::Purged, _)) => {}
            Some((code, _)) => unreachable!("{code:?} is not a verdict"),
            None => {
                assert!(
                    self.converged(),
                    "honest peers did not converge: {}",
                    self.describe()
                );
                self.check_prefix("after converging");
            }
        }
    }

    fn converged(&self) -> bool {
        let link = &self.p.links()[0];
        let last = self.plog.last();
        link.phase() == Phase::Streaming
            && link.progress.durable == last
            && self.f.written() == last
            && self.f.durable() == last
    }

    fn describe(&self) -> String {
        let link = &self.p.links()[0];
        format!(
            "primary {}..={}, follower log at {} (written {}, durable {}), link {:?} at {:?}, last error {:?}",
            self.plog.first,
            self.plog.last(),
            self.flog.last(),
            self.f.written(),
            self.f.durable(),
            link.phase(),
            link.progress,
            link.last_error
        )
    }

    fn tick(&mut self, by: Duration) {
        self.now += by;
        let mut out = Vec::new();
        self.p.tick(self.now, &mut out);
        self.primary_actions(out);
        let mut out = Vec::new();
        self.f.tick(self.now, &mut out);
        self.follower_actions(None, out);
    }

    fn batch(&mut self, n: usize) {
        if self.plog.records.len() >= MAX_LOG_RECORDS {
            return;
        }
        let first = self.plog.last().next();
        for _ in 0..n {
            let len = self.plog.records.len() % 40;
            self.plog.push(Epoch(0), 0x5a, len);
        }
        let last = self.plog.last();
        let mut out = Vec::new();
        self.p
            .on_batch(self.now, first, last, &self.plog.run(first, last), &mut out);
        self.primary_actions(out);
    }

    fn follower_durable(&mut self) {
        self.fdurable = self.flog.last();
        self.fdurable_max = self.fdurable_max.max(self.fdurable);
        let mut out = Vec::new();
        self.f.on_durable(self.now, self.fdurable, &mut out);
        self.follower_actions(None, out);
    }

    fn primary_durable(&mut self) {
        self.p.on_local_durable(self.now, self.plog.last());
        self.check();
    }

    fn answer_reads(&mut self, n: usize) {
        for _ in 0..n {
            let Some(read) = self.reads.pop_front() else {
                return;
            };
            let mut out = Vec::new();
            match read {
                Action::ReadChunk {
                    link,
                    conn,
                    from,
                    max_bytes,
                } => {
                    let result = self.plog.chunk(from, max_bytes);
                    self.p
                        .on_chunk(self.now, link, conn, from, result, &mut out);
                }
                Action::LookupCrc { link, conn, lsn } => {
                    let crc = self.plog.held(lsn).map(header_crc);
                    self.p.on_crc(self.now, link, conn, crc, &mut out);
                }
                other => unreachable!("only reads are queued, not {other:?}"),
            }
            self.primary_actions(out);
        }
    }

    /// Drops the newest connection: a reset both sides learn of, or a half-open connection
    /// only one side learns of (the other finds out by its timeouts).
    fn drop_wire(&mut self, how: usize) {
        let Some(&conn) = self.wires.keys().next_back() else {
            return;
        };
        let (tell_primary, tell_follower) = match how {
            0 => (true, true),
            1 => (true, false),
            _ => (false, true),
        };
        let w = self.wires.get_mut(&conn).expect("the newest wire");
        w.to_follower.clear();
        w.to_primary.clear();
        w.primary_hears_close = tell_primary;
        w.follower_hears_close = tell_follower;
        let (primary_was_open, follower_was_open) = (w.primary_open, w.follower_open);
        w.primary_open &= !tell_primary;
        w.follower_open &= !tell_follower;
        if tell_follower && follower_was_open {
            self.f.on_closed(conn);
        }
        if tell_primary && primary_was_open {
            let mut out = Vec::new();
            self.p
                .on_closed(self.now, conn, "connection reset".into(), &mut out);
            self.primary_actions(out);
        }
    }

    fn deliver_all(&mut self) {
        for _ in 0..MAX_DELIVERIES {
            if !(self.deliver_one(true) | self.deliver_one(false)) {
                return;
            }
        }
    }

    /// Delivers the oldest pending bytes to one side, or the end of a connection the other side
    /// closed. Returns whether anything happened.
    fn deliver_one(&mut self, to_follower: bool) -> bool {
        let conns: Vec<ConnId> = self.wires.keys().copied().collect();
        for conn in conns {
            if self.deliver_on(conn, to_follower) {
                return true;
            }
        }
        false
    }

    fn deliver_on(&mut self, conn: ConnId, to_follower: bool) -> bool {
        let w = self.wires.get_mut(&conn).expect("iterating the wires");
        let (open, queue, peer_open, hears) = if to_follower {
            (
                w.follower_open,
                &mut w.to_follower,
                w.primary_open,
                w.follower_hears_close,
            )
        } else {
            (
                w.primary_open,
                &mut w.to_primary,
                w.follower_open,
                w.primary_hears_close,
            )
        };
        if !open {
            return false;
        }
        if let Some(bytes) = queue.pop_front() {
            let d = if to_follower {
                &mut w.follower_decoder
            } else {
                &mut w.primary_decoder
            };
            d.push(&bytes);
            let (msgs, failure) = drain(d);
            assert!(
                failure.is_none(),
                "an honest peer's frame failed to decode: {failure:?}"
            );
            for m in msgs {
                self.receive(conn, to_follower, m);
            }
            return true;
        }
        if peer_open || !hears {
            return false;
        }
        let mut out = Vec::new();
        if to_follower {
            w.follower_open = false;
            self.f.on_closed(conn);
        } else {
            w.primary_open = false;
            self.p
                .on_closed(self.now, conn, "closed by the follower".into(), &mut out);
            self.primary_actions(out);
        }
        true
    }

    fn receive(&mut self, conn: ConnId, to_follower: bool, m: Msg) {
        if to_follower {
            let mut out = Vec::new();
            self.f.on_frame(self.now, conn, m, &mut out);
            self.follower_actions(Some(conn), out);
        } else {
            let mut out = Vec::new();
            self.p.on_frame(self.now, conn, m, &mut out);
            self.primary_actions(out);
        }
    }

    /// Carries out what the primary asked for; every primary event ends here, so the commit
    /// LSN is checked after each.
    fn primary_actions(&mut self, out: Vec<Action>) {
        self.check();
        for a in out {
            match a {
                Action::Connect { link, .. } => self.connect(link),
                Action::Send { conn, msg } => {
                    if let Msg::Reject {
                        code,
                        detail,
                        message,
                    } = &msg
                    {
                        assert!(
                            HONEST_REJECTS.contains(code),
                            "the primary refused an honest follower: {code:?}: {message}"
                        );
                        if *code == RejectCode::Purged {
                            self.check_purged();
                        }
                        self.refused_while_empty |= *code == RejectCode::Diverged
                            && self.plog.last() == Lsn::ZERO
                            && self.flog.last() > Lsn::ZERO;
                        self.verdict = Some((*code, *detail));
                    }
                    if let Msg::Start {
                        truncate_after,
                        start_lsn,
                        ..
                    } = &msg
                    {
                        self.first_start = self.first_start.or(Some((*truncate_after, *start_lsn)));
                    }
                    let w = self
                        .wires
                        .get_mut(&conn)
                        .expect("the primary sends on its connections");
                    if w.primary_open && w.follower_open {
                        w.to_follower.push_back(msg.encode());
                    }
                }
                Action::Close { conn, .. } => {
                    if let Some(w) = self.wires.get_mut(&conn) {
                        w.primary_open = false;
                        w.to_primary.clear();
                    }
                }
                Action::ServeFetch { .. }
                | Action::Integrity(IntegrityAction::PeerDigests { .. }) => {}
                other @ (Action::AppendTakenBack { .. } | Action::Integrity(_)) => {
                    panic!("the primary serves from the start and repairs nothing here, yet: {other:?}")
                }
                read @ (Action::ReadChunk { .. } | Action::LookupCrc { .. }) => {
                    self.reads.push_back(read)
                }
            }
        }
    }

    /// The connection comes up at once: the follower accepts it, the primary says Hello.
    fn connect(&mut self, link: usize) {
        let conn = self.wires.len() as ConnId + 1;
        self.p.connect_started(link, conn);
        self.wires.insert(conn, Wire::new());
        let follower_nonce = fresh_nonce(&mut self.nonces, 0xf0);
        self.f.on_accepted(self.now, conn, follower_nonce);
        let primary_nonce = fresh_nonce(&mut self.nonces, 0x0f);
        let mut out = Vec::new();
        self.p.on_connected(self.now, conn, primary_nonce, &mut out);
        self.primary_actions(out);
    }

    fn follower_actions(&mut self, conn: Option<ConnId>, out: Vec<FollowerAction>) {
        for a in out {
            match a {
                FollowerAction::Send { conn, msg } => {
                    if let Msg::Reject {
                        code,
                        detail,
                        message,
                    } = &msg
                    {
                        assert_eq!(
                            *code,
                            RejectCode::Diverged,
                            "the follower refused an honest primary: {code:?}: {message}"
                        );
                        self.verdict = Some((*code, *detail));
                    }
                    let w = self
                        .wires
                        .get_mut(&conn)
                        .expect("the follower sends on its connections");
                    if w.follower_open && w.primary_open {
                        w.to_primary.push_back(msg.encode());
                    }
                }
                FollowerAction::Close { conn, .. } => {
                    let w = self
                        .wires
                        .get_mut(&conn)
                        .expect("the follower closes its connections");
                    w.follower_open = false;
                    w.to_follower.clear();
                }
                FollowerAction::Truncate { after, expect_crc } => self.truncate(after, expect_crc),
                FollowerAction::Append {
                    first,
                    last,
                    records,
                } => self.append(conn, first, last, &records),
                FollowerAction::ServeFetch { .. }
                | FollowerAction::Integrity(IntegrityAction::PeerDigests { .. }) => {}
                other @ FollowerAction::Integrity(_) => {
                    panic!("the follower repairs nothing here, yet: {other:?}")
                }
            }
        }
    }

    fn truncate(&mut self, after: Lsn, expect_crc: u32) {
        assert!(
            after < self.flog.last(),
            "truncate after {after}, the follower's log ends at {}",
            self.flog.last()
        );
        if after > Lsn::ZERO && self.flog.crc(after) != Some(expect_crc) {
            // The node's driver refuses and changes nothing: the logs diverged before `after`.
            let (last_crc, last_epoch) = self.flog.last_crc_epoch();
            let tail = crate::follower::Tail {
                last: self.flog.last(),
                last_epoch,
                last_crc,
                durable: self.fdurable.min(self.flog.last()),
                applied: Lsn::ZERO,
            };
            let mut out = Vec::new();
            self.f
                .on_truncate_refused(after, "diverged".into(), tail, &mut out);
            self.follower_actions(None, out);
            return;
        }
        self.flog.truncate_after(after);
        self.fdurable = self.fdurable.min(after);
        self.fdurable_max = self.fdurable_max.min(after);
        let (crc, epoch) = self.flog.last_crc_epoch();
        self.f.on_truncated(crc, epoch);
    }

    fn append(&mut self, conn: Option<ConnId>, first: Lsn, last: Lsn, records: &[u8]) {
        assert!(conn.is_some(), "an Append outside any frame");
        let end = self.flog.last();
        assert_eq!(
            first,
            end.next(),
            "the follower appends {first}..={last} to a log ending at {end}"
        );
        assert!(
            records == self.plog.run(first, last),
            "appended bytes {first}..={last} are not the primary's"
        );
        let got = self
            .flog
            .append_replicated(records)
            .unwrap_or_else(|e| panic!("the primary's records do not append: {e}"));
        assert_eq!(got, last);
        self.check_prefix(&format!("after appending {first}..={last}"));
    }

    /// A `purged` refusal is justified: the record a follower continues from (or is cut at)
    /// must be held so that it can be compared; an empty follower needs LSN 1.
    fn check_purged(&self) {
        let (l, first) = (self.flog.last(), self.plog.first);
        let checked_at = l.min(self.plog.last());
        assert!(
            (l == Lsn::ZERO && first > Lsn::FIRST) || (l > Lsn::ZERO && checked_at < first),
            "refused as purged, but the follower at {l} can be checked against {first}..={}",
            self.plog.last()
        );
    }

    /// Every record the follower holds must be the primary's record at that LSN.
    fn check_prefix(&self, when: &str) {
        let differs = |l: &Lsn| self.flog.record(*l) != self.plog.record(*l);
        let Some(at) = (1..=self.flog.last().0).map(Lsn).find(differs) else {
            return;
        };
        let cause = match self.first_start {
            Some((Some(cut), _)) => {
                format!("the follower was ahead and Start only truncated it after {cut}, comparing none of the records it kept")
            }
            Some((None, start)) if start == self.plog.first => format!(
                "the follower's last record {} is just below the primary's first LSN {start}: purged, so never compared",
                start.prev()
            ),
            other => format!("first Start {other:?}"),
        };
        panic!(
            "{when}, the follower keeps its own record {at}, not the primary's: {cause}; {}",
            self.describe()
        );
    }

    fn check(&self) {
        let c = self.p.committed()[DurabilityLevel::RemoteDurable as usize];
        let bound = self.initial_durable.max(self.fdurable_max);
        assert!(
            c <= bound,
            "remote_durable commit at {c}, but the follower made only {} durable ({})",
            self.fdurable_max,
            self.describe()
        );
    }
}
