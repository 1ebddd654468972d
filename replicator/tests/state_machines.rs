//! The primary's and the follower's state machines driven against each other in virtual time,
//! with in-memory logs: every action is carried out by this harness, so each test states
//! exactly what the machines asked for.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use logship_engine::record::{decode, encode_into, RECORD_HEADER_BYTES};
use logship_engine::{Chunk, Epoch, Lsn};
use logship_replicator::backoff::BackoffConfig;
use logship_replicator::breaker::{BreakerConfig, BreakerState};
use logship_replicator::commit::QuorumPolicy;
use logship_replicator::fetch::{FetchRequest, IntegrityAction};
use logship_replicator::follower::Follower;
use logship_replicator::link::Phase;
use logship_replicator::primary::Primary;
use logship_replicator::protocol::auth::ClusterKey;
use logship_replicator::protocol::frame::FrameDecoder;
use logship_replicator::protocol::{DurabilityLevel, Msg, RejectCode};
use logship_replicator::vocab::{
    Action, ConnId, FollowerConfig, FollowerLink, PrimaryConfig, ReadError, Tail, Timeouts,
};

const MS: Duration = Duration::from_millis(1);

fn key(text: &str) -> ClusterKey {
    ClusterKey::from_bytes(text.as_bytes()).unwrap()
}

/// An in-memory log: encoded records.
#[derive(Default, Clone)]
struct MemLog {
    records: Vec<Vec<u8>>,
}

impl MemLog {
    fn last(&self) -> Lsn {
        Lsn(self.records.len() as u64)
    }
    fn push(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        encode_into(&mut r, self.last().next(), Epoch(0), payload);
        self.records.push(r.clone());
        r
    }
    fn crc(&self, lsn: Lsn) -> Option<u32> {
        let r = self.records.get((lsn.0 as usize).checked_sub(1)?)?;
        Some(decode(r).unwrap().header.crc)
    }
    fn chunk(&self, from: Lsn, max: usize) -> Option<Chunk> {
        let start = from.0 as usize - 1;
        let mut bytes = Vec::new();
        let mut last = from.prev();
        for r in self.records.get(start..)? {
            if !bytes.is_empty() && bytes.len() + r.len() > max {
                break;
            }
            bytes.extend_from_slice(r);
            last = last.next();
        }
        (!bytes.is_empty()).then(|| Chunk {
            first: from,
            last,
            bytes: Bytes::from(bytes),
        })
    }
    fn append_run(&mut self, first: Lsn, run: &[u8]) {
        assert_eq!(first, self.last().next(), "appends continue the log");
        let mut off = 0;
        while off < run.len() {
            let r = decode(&run[off..]).expect("valid record");
            let len = RECORD_HEADER_BYTES + r.payload.len();
            self.records.push(run[off..off + len].to_vec());
            off += len;
        }
    }
}

struct Harness {
    now: Duration,
    p: Primary,
    f: Follower,
    plog: MemLog,
    flog: MemLog,
    conn: u64,
    follower_up: bool,
    rejected_by_follower: Vec<RejectCode>,
    rejected_by_primary: Vec<RejectCode>,
    read_chunks: usize,
    /// Repairs the machines asked for: (who asked, first LSN, the records' bytes).
    repairs: Vec<(&'static str, Lsn, Vec<u8>)>,
    repair_failures: Vec<(&'static str, String)>,
}

fn addr() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

fn primary_config(k: &str) -> PrimaryConfig {
    PrimaryConfig {
        cluster_id: "c".into(),
        node_id: "p".into(),
        key: key(k),
        epoch: Epoch(1),
        followers: vec![FollowerLink {
            name: "f".into(),
            addr: addr(),
            sync: true,
        }],
        quorum: Some("FIRST 1 (f)".parse().unwrap()),
        policy: QuorumPolicy::Block,
        timeouts: Timeouts::default(),
        backoff: BackoffConfig::default(),
        breaker: BreakerConfig {
            failure_threshold: 3,
            reset_timeout: Duration::from_secs(2),
            success_threshold: 2,
        },
        max_inflight_bytes: 1 << 20,
        catch_up_chunk_bytes: 4096,
        max_retained_bytes: None,
        failover: false,
    }
}

impl Harness {
    fn new(pkey: &str, fkey: &str, plog: MemLog, flog: MemLog) -> Harness {
        let p = Primary::new(primary_config(pkey), Lsn(1), plog.last(), plog.last(), 7);
        let fc = FollowerConfig {
            cluster_id: "c".into(),
            node_id: "f".into(),
            key: key(fkey),
            timeouts: Timeouts::default(),
            auto_apply: true,
        };
        let last = flog.last();
        let tail = Tail {
            last,
            last_epoch: Epoch(0),
            last_crc: flog.crc(last).unwrap_or(0),
            durable: last,
            applied: last,
        };
        let f = Follower::new(fc, tail);
        Harness {
            now: Duration::ZERO,
            p,
            f,
            plog,
            flog,
            conn: 0,
            follower_up: true,
            rejected_by_follower: vec![],
            rejected_by_primary: vec![],
            read_chunks: 0,
            repairs: vec![],
            repair_failures: vec![],
        }
    }

    /// What a node's reader answers to a peer's fetch, from `log`.
    fn answer(log: &MemLog, request: FetchRequest) -> Msg {
        let from = request.range.0;
        let prev_here = log.crc(from.prev());
        let read = Ok(log.chunk(from, request.max_bytes as usize));
        request.answer(prev_here, read)
    }

    /// Re-encodes and decodes a message, as the wire would.
    fn wire(msg: &Msg) -> Msg {
        let mut d = FrameDecoder::new(16 << 20);
        d.push(&msg.encode());
        Msg::decode(&d.next_frame().unwrap().unwrap()).unwrap()
    }

    fn run_primary(&mut self, mut actions: Vec<Action>) {
        while !actions.is_empty() {
            let mut next = Vec::new();
            for a in actions {
                match a {
                    Action::Connect { link, .. } => {
                        self.conn += 1;
                        let conn = ConnId(self.conn);
                        self.p.connect_started(link, conn);
                        if self.follower_up {
                            self.p.on_connected(self.now, conn, [1; 32], &mut next);
                            self.f.on_accepted(self.now, conn, [2; 32]);
                        } else {
                            self.p
                                .on_closed(self.now, conn, "refused".into(), &mut next);
                        }
                    }
                    Action::Send { conn, msg } => {
                        if let Msg::Reject { code, .. } = &msg {
                            self.rejected_by_primary.push(*code);
                        }
                        let mut fo = Vec::new();
                        self.f.on_frame(self.now, conn, Self::wire(&msg), &mut fo);
                        self.run_follower(fo, &mut next);
                    }
                    Action::Close { conn, .. } => self.f.on_closed(conn),
                    Action::ReadChunk {
                        link,
                        conn,
                        from,
                        max_bytes,
                    } => {
                        self.read_chunks += 1;
                        let c = self.plog.chunk(from, max_bytes);
                        self.p
                            .on_chunk(self.now, link, conn, from, Ok(c), &mut next);
                    }
                    Action::LookupCrc { link, conn, lsn } => {
                        let crc = self.plog.crc(lsn);
                        self.p.on_crc(self.now, link, conn, crc, &mut next);
                    }
                    Action::ServeFetch {
                        link,
                        conn,
                        request,
                    } => {
                        let answer = Self::answer(&self.plog, request);
                        self.p
                            .send_answer(link.unwrap_or(0), conn, answer, &mut next);
                    }
                    Action::AppendTakenBack {
                        link,
                        conn,
                        records,
                    } => {
                        // What the node does: append, and the writer's observer sees the batch.
                        let first = self.plog.last().next();
                        self.plog.append_run(first, &records);
                        let last = self.plog.last();
                        self.p.on_batch(self.now, first, last, &records, &mut next);
                        self.p
                            .on_taken_back(self.now, link, conn, Ok(last), &mut next);
                    }
                    Action::Integrity(a) => self.integrity("primary", a),
                    other => panic!("not a primary's action: {other:?}"),
                }
            }
            actions = next;
        }
    }

    /// What the node does with a repair's records: here, keep them to compare.
    fn integrity(&mut self, who: &'static str, a: IntegrityAction) {
        match a {
            IntegrityAction::Repair { base, chunks, .. } => {
                self.repairs.push((who, base, chunks.concat()))
            }
            IntegrityAction::RepairFailed { reason, .. } => {
                self.repair_failures.push((who, reason))
            }
            IntegrityAction::PeerDigests { .. } => {}
        }
    }

    fn run_follower(&mut self, actions: Vec<Action>, primary_out: &mut Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { conn, msg } => {
                    if let Msg::Reject { code, .. } = &msg {
                        self.rejected_by_follower.push(*code);
                    }
                    self.p
                        .on_frame(self.now, conn, Self::wire(&msg), primary_out);
                }
                Action::Close { conn, reason } => {
                    self.p.on_closed(self.now, conn, reason, primary_out)
                }
                Action::Append { first, records, .. } => self.flog.append_run(first, &records),
                Action::Truncate { after, expect_crc } => {
                    assert_eq!(
                        self.flog.crc(after).unwrap_or(0),
                        expect_crc,
                        "the cut point is the primary's record"
                    );
                    self.flog.records.truncate(after.0 as usize);
                    self.f
                        .on_truncated(self.flog.crc(after).unwrap_or(0), Epoch(0));
                }
                Action::ServeFetch { conn, request, .. } => {
                    let answer = Self::answer(&self.flog, request);
                    let mut fo = Vec::new();
                    self.f.send_answer(conn, answer, &mut fo);
                    self.run_follower(fo, primary_out);
                }
                Action::Integrity(a) => self.integrity("follower", a),
                other => panic!("not a follower's action: {other:?}"),
            }
        }
    }

    fn tick(&mut self, by: Duration) {
        self.now += by;
        let mut out = Vec::new();
        self.p.tick(self.now, &mut out);
        self.run_primary(out);
        let mut fo = Vec::new();
        self.f.tick(self.now, &mut fo);
        let mut po = Vec::new();
        self.run_follower(fo, &mut po);
        self.run_primary(po);
    }

    fn append(&mut self, payload: &[u8]) -> Lsn {
        let r = self.plog.push(payload);
        let lsn = self.plog.last();
        let mut out = Vec::new();
        self.p
            .on_batch(self.now, lsn, lsn, &Bytes::from(r), &mut out);
        self.run_primary(out);
        lsn
    }

    fn durable_everywhere(&mut self) {
        self.p.on_local_durable(self.now, self.plog.last());
        let mut fo = Vec::new();
        self.f.on_durable(self.now, self.flog.last(), &mut fo);
        let mut po = Vec::new();
        self.run_follower(fo, &mut po);
        self.run_primary(po);
    }
}

fn log_of(n: u64) -> MemLog {
    let mut l = MemLog::default();
    for i in 0..n {
        l.push(format!("r{i}").as_bytes());
    }
    l
}

#[test]
fn handshake_then_live_streaming_commits_at_each_level() {
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        MemLog::default(),
        MemLog::default(),
    );
    h.tick(MS);
    assert_eq!(h.p.links()[0].phase(), Phase::Streaming);
    let lsn = h.append(b"hello");
    assert_eq!(h.flog.last(), lsn, "sent before the primary's fdatasync");
    assert_eq!(
        h.p.committed(),
        [Lsn(0); 4],
        "nothing is committed before local durability"
    );
    h.durable_everywhere();
    assert_eq!(h.p.committed(), [lsn; 4]);
    assert_eq!(h.flog.records, h.plog.records, "same bytes");
}

#[test]
fn a_follower_without_the_key_never_receives_a_record() {
    let mut h = Harness::new(
        "the key of this cluster",
        "some other key entirely",
        log_of(3),
        MemLog::default(),
    );
    h.tick(MS);
    h.append(b"secret");
    assert_eq!(h.flog.last(), Lsn(0));
    assert_eq!(
        h.rejected_by_primary,
        vec![RejectCode::AuthFailed],
        "the follower's proof fails at the primary"
    );
    assert_ne!(h.p.links()[0].phase(), Phase::Streaming);
    let s = h.p.status();
    assert!(s
        .rejected
        .iter()
        .any(|(r, n)| r == "auth_failed" && *n == 1));
}

#[test]
fn a_behind_follower_catches_up_in_chunks_then_goes_live() {
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        log_of(500),
        log_of(10),
    );
    h.tick(MS);
    assert_eq!(h.flog.last(), Lsn(500), "caught up from the log");
    assert!(h.read_chunks > 1, "in chunks: {}", h.read_chunks);
    let lsn = h.append(b"live");
    assert_eq!(h.flog.last(), lsn);
    assert_eq!(h.p.links()[0].phase(), Phase::Streaming);
    assert_eq!(h.flog.records, h.plog.records);
}

#[test]
fn a_follower_ahead_of_the_primary_is_truncated() {
    let mut flog = log_of(5);
    flog.push(b"only on the follower");
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        log_of(5),
        flog,
    );
    h.tick(MS);
    assert_eq!(h.flog.records, h.plog.records);
    h.append(b"next");
    assert_eq!(h.flog.records, h.plog.records);
}

#[test]
fn a_diverged_follower_is_refused() {
    let mut flog = log_of(4);
    flog.push(b"not what the primary has at 5");
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        log_of(8),
        flog.clone(),
    );
    h.tick(MS);
    assert_eq!(h.rejected_by_primary, vec![RejectCode::Diverged]);
    assert_eq!(
        h.flog.records, flog.records,
        "nothing changed on the follower"
    );
}

#[test]
fn silence_closes_the_link_and_reconnects_with_backoff_behind_the_breaker() {
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        MemLog::default(),
        MemLog::default(),
    );
    h.tick(MS);
    assert!(h.p.links()[0].healthy());
    h.follower_up = false;
    // The follower stops answering: drop it from the follower side only.
    let conn = h.p.links()[0].conn().unwrap();
    h.f.on_closed(conn);
    for _ in 0..150 {
        h.tick(10 * MS);
    }
    let link = &h.p.links()[0];
    assert!(!link.healthy());
    assert!(link.counters.failures >= 3, "{:?}", link.counters);
    assert_eq!(
        link.breaker.state(),
        BreakerState::Open,
        "3 failures open the breaker"
    );
    h.follower_up = true;
    for _ in 0..400 {
        h.tick(10 * MS);
    }
    let link = &h.p.links()[0];
    assert!(link.healthy(), "reconnected after the reset timeout");
    assert_eq!(
        link.breaker.state(),
        BreakerState::Closed,
        "probe successes close it"
    );
}

#[test]
fn records_out_of_order_close_the_session() {
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        MemLog::default(),
        MemLog::default(),
    );
    h.tick(MS);
    let conn = h.p.links()[0].conn().unwrap();
    let later = log_of(3);
    let mut fo = Vec::new();
    let c = later.chunk(Lsn(2), 1 << 20).unwrap();
    h.f.on_frame(
        h.now,
        conn,
        Msg::Records {
            first: c.first,
            last: c.last,
            commit_lsn: Lsn(0),
            records: c.bytes,
        },
        &mut fo,
    );
    assert!(fo.iter().any(|a| matches!(
        a,
        Action::Send {
            msg: Msg::Reject {
                code: RejectCode::Protocol,
                ..
            },
            ..
        }
    )));
    assert!(fo.iter().any(|a| matches!(a, Action::Close { .. })));
    assert!(!fo.iter().any(|a| matches!(a, Action::Append { .. })));
}

#[test]
fn block_policy_never_commits_remote_levels_without_the_quorum() {
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        MemLog::default(),
        MemLog::default(),
    );
    h.follower_up = false;
    h.tick(MS);
    h.append(b"a");
    h.p.on_local_durable(h.now, Lsn(1));
    for _ in 0..100 {
        h.tick(10 * MS);
    }
    let c = h.p.committed();
    assert_eq!(c[DurabilityLevel::Local as usize], Lsn(1));
    assert_eq!(c[DurabilityLevel::RemoteWrite as usize], Lsn(0));
    assert_eq!(c[DurabilityLevel::RemoteDurable as usize], Lsn(0));
    assert!(!h.p.status().quorum_available);
}

#[test]
fn purged_records_are_reported_to_the_follower() {
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        log_of(100),
        MemLog::default(),
    );
    h.p.on_purged(Lsn(50));
    h.tick(MS);
    assert_eq!(h.rejected_by_primary, vec![RejectCode::Purged]);
    assert!(h.p.links()[0].purged);
    assert_eq!(h.flog.last(), Lsn(0));
    let _ = ReadError::Purged { first: Lsn(50) };
}

fn concat(log: &MemLog, from: u64, to: u64) -> Vec<u8> {
    log.records[from as usize - 1..to as usize].concat()
}

#[test]
fn a_primary_that_lost_records_takes_them_back_before_serving() {
    // The primary's log ends at 10; its sync follower durably holds 25 with the same history.
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        log_of(10),
        log_of(25),
    );
    h.p.close_gate();
    assert!(!h.p.serving());
    h.tick(MS);
    assert!(
        h.rejected_by_primary.is_empty(),
        "{:?}",
        h.rejected_by_primary
    );
    assert_eq!(
        h.plog.records, h.flog.records,
        "every record came back, byte for byte"
    );
    assert_eq!(h.flog.last(), Lsn(25), "and the follower was not cut");
    assert!(
        h.p.serving(),
        "served once the only sync follower was heard and taken back from"
    );
    let lsn = h.append(b"after the take-back");
    assert_eq!(lsn, Lsn(26));
    assert_eq!(h.flog.records, h.plog.records);
}

#[test]
fn a_take_back_from_another_history_is_refused_and_the_gate_stays_shut() {
    let mut flog = log_of(9);
    flog.push(b"the follower's record 10 is not the primary's");
    for i in 0..5 {
        flog.push(format!("later {i}").as_bytes());
    }
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        log_of(10),
        flog.clone(),
    );
    h.p.close_gate();
    h.tick(MS);
    assert!(
        h.rejected_by_primary.contains(&RejectCode::Diverged),
        "{:?}",
        h.rejected_by_primary
    );
    assert_eq!(
        h.plog.records,
        log_of(10).records,
        "nothing taken from another history"
    );
    assert_eq!(h.flog.records, flog.records, "and nothing cut there");
    assert!(!h.p.serving());
}

#[test]
fn a_follower_repairs_a_damaged_range_from_the_primary() {
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        log_of(50),
        log_of(50),
    );
    h.tick(MS);
    let mut fo = Vec::new();
    let prev = h.flog.crc(Lsn(19));
    assert!(h.f.start_repair(h.now, (Lsn(20), Lsn(39)), prev, &mut fo));
    let mut po = Vec::new();
    h.run_follower(fo, &mut po);
    h.run_primary(po);
    assert_eq!(h.repairs.len(), 1, "{:?}", h.repair_failures);
    let (who, base, bytes) = &h.repairs[0];
    assert_eq!((*who, *base), ("follower", Lsn(20)));
    assert_eq!(*bytes, concat(&h.plog, 20, 39));
}

#[test]
fn a_primary_repairs_a_damaged_range_from_a_follower_that_holds_it() {
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        log_of(50),
        log_of(50),
    );
    h.tick(MS);
    h.durable_everywhere();
    let mut out = Vec::new();
    assert!(
        !h.p.start_repair(h.now, (Lsn(40), Lsn(60)), None, &mut out),
        "no follower holds 60"
    );
    let prev = h.plog.crc(Lsn(9));
    assert!(h.p.start_repair(h.now, (Lsn(10), Lsn(30)), prev, &mut out));
    h.run_primary(out);
    assert_eq!(h.repairs.len(), 1, "{:?}", h.repair_failures);
    let (who, base, bytes) = &h.repairs[0];
    assert_eq!((*who, *base), ("primary", Lsn(10)));
    assert_eq!(*bytes, concat(&h.flog, 10, 30));
    // A fetch whose previous record differs on the other side fails instead of mixing
    // histories.
    let mut out = Vec::new();
    assert!(h
        .p
        .start_repair(h.now, (Lsn(10), Lsn(30)), Some(0xdead), &mut out));
    h.run_primary(out);
    assert_eq!(h.repairs.len(), 1);
    assert_eq!(h.repair_failures.len(), 1, "{:?}", h.repair_failures);
}

#[test]
fn an_empty_primary_never_empties_a_follower() {
    // A primary started on a new disk while its follower holds records: nothing to compare,
    // and cutting the follower to nothing could throw away all the cluster acknowledged.
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        MemLog::default(),
        log_of(20),
    );
    h.tick(MS);
    assert_eq!(h.rejected_by_primary, vec![RejectCode::Diverged]);
    assert_eq!(
        h.flog.records,
        log_of(20).records,
        "the follower keeps every record"
    );
    // With its gate closed (a sync quorum), the same primary takes them back instead.
    let mut h = Harness::new(
        "the key of this cluster",
        "the key of this cluster",
        MemLog::default(),
        log_of(20),
    );
    h.p.close_gate();
    h.tick(MS);
    assert_eq!(h.plog.records, log_of(20).records);
    assert!(h.p.serving());
}
