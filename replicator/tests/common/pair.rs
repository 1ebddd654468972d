//! A primary and a follower `Replica` driven against each other in virtual time, each with the
//! simulator's `ModelLog`: the executor of the scenario tests (`replica_scenarios.rs`).
//!
//! It carries out their actions as the node does: a `Send` becomes the other replica's
//! `Input::Data` (as bytes, so the frame decoder runs), log actions run on the side's model log
//! and their completions are stepped back. Connections, sends and read completions go through
//! one FIFO queue (per-connection order holds); a dial, a compare-and-cut and a take-back's
//! append complete at once, as in the simulator's executor. It keeps what scenarios assert on:
//! every message sent, the chunks read, the cuts, the repairs, the commit reports and the
//! breaker's transitions.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use logship_engine::{Epoch, Lsn};
use logship_replicator::backoff::BackoffConfig;
use logship_replicator::breaker::{BreakerConfig, BreakerState};
use logship_replicator::commit::QuorumPolicy;
use logship_replicator::fetch::{IntegrityAction, FETCH_CHUNK_BYTES};
use logship_replicator::pacing::PacingConfig;
use logship_replicator::primary::Primary;
use logship_replicator::protocol::auth::ClusterKey;
use logship_replicator::protocol::{DurabilityLevel, Msg, RejectCode};
use logship_replicator::replica::Replica;
use logship_replicator::sim::ModelLog;
use logship_replicator::vocab::{
    Action, ConnId, FollowerConfig, FollowerLink, Input, NonceSource, PrimaryConfig, ReadError,
    ReplicaLog, StorageError, Tail, Timeouts, WaiterId,
};

/// The cluster's key (the primary's always; the follower's unless a test says otherwise).
pub const KEY: &str = "the key of this cluster";

/// Which replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The primary.
    P,
    /// Its one sync follower, `f`.
    F,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::P => Side::F,
            Side::F => Side::P,
        }
    }

    fn at(self) -> usize {
        self as usize
    }
}

/// A log holding `payloads` as records `1..` of epoch 0, all durable.
pub fn log_with(payloads: &[&[u8]]) -> ModelLog {
    let log = ModelLog::new();
    for p in payloads {
        log.append(Epoch(0), Bytes::copy_from_slice(p))
            .expect("a fresh log appends");
    }
    log.sync().expect("a fresh log syncs");
    log
}

/// A log holding `n` records (`r0`, `r1`, ...), all durable.
pub fn log_of(n: u64) -> ModelLog {
    let payloads: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    log_with(&payloads.iter().map(String::as_bytes).collect::<Vec<_>>())
}

/// Every record `log` holds, as stored.
pub fn records(log: &ModelLog) -> Vec<Bytes> {
    (log.first_lsn().0..=log.last_lsn().0)
        .map(|l| log.record(Lsn(l)).expect("held"))
        .collect()
}

/// Records `from..=to` of `log`, back to back.
pub fn concat(log: &ModelLog, from: u64, to: u64) -> Bytes {
    let all: Vec<u8> = (from..=to)
        .flat_map(|l| log.record(Lsn(l)).expect("held").to_vec())
        .collect();
    Bytes::from(all)
}

/// The CRC field of record `lsn`, if `log` holds it.
pub fn crc(log: &ModelLog, lsn: Lsn) -> Option<u32> {
    log.record_meta(lsn).ok().flatten().map(|(crc, _)| crc)
}

fn key(text: &str) -> ClusterKey {
    ClusterKey::from_bytes(text.as_bytes()).expect("long enough")
}

fn primary_config(catch_up_pacing: Option<PacingConfig>) -> PrimaryConfig {
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("an address");
    PrimaryConfig {
        cluster_id: "c".into(),
        node_id: "p".into(),
        key: key(KEY).into(),
        epoch: Epoch(1),
        followers: vec![FollowerLink {
            name: "f".into(),
            addr,
            sync: true,
        }],
        quorum: Some("FIRST 1 (f)".parse().expect("a quorum")),
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
        catch_up_pacing,
        max_retained_bytes: None,
        failover: false,
    }
}

fn follower(follower_key: &str, log: &ModelLog) -> Replica {
    let config = FollowerConfig {
        cluster_id: "c".into(),
        node_id: "f".into(),
        key: key(follower_key).into(),
        timeouts: Timeouts::default(),
        auto_apply: true,
    };
    let last = log.last_lsn();
    let tail = Tail {
        last,
        last_epoch: Epoch(0),
        last_crc: crc(log, last).unwrap_or(0),
        durable: log.durable_lsn(),
        applied: log.durable_lsn(),
    };
    Replica::new_follower(config, tail, NonceSource::from_u64(2))
}

/// The two replicas, their logs, and what happened. See the module documentation.
#[derive(Debug)]
pub struct Pair {
    /// Virtual time.
    pub now: Duration,
    replicas: [Replica; 2],
    logs: [ModelLog; 2],
    /// Whether the follower accepts connections (a dial is refused otherwise).
    pub follower_up: bool,
    queue: VecDeque<(Side, Input)>,
    closed: BTreeSet<ConnId>,
    next_conn: u64,
    next_waiter: u64,
    admitted: Vec<WaiterId>,
    /// Every message sent, by whom.
    pub sent: Vec<(Side, Msg)>,
    /// Each message a side took in, in order: the receiver, and how many messages had been
    /// sent by then (an index into `sent`).
    pub taken_in: Vec<(Side, usize)>,
    /// Catch-up reads the primary asked for.
    pub read_chunks: usize,
    /// Where the follower's log was cut.
    pub cuts: Vec<Lsn>,
    /// Repairs carried out: who asked, the range's first LSN, the records written over it.
    pub repairs: Vec<(Side, Lsn, Bytes)>,
    /// Repairs that failed: who asked, why.
    pub repair_failures: Vec<(Side, String)>,
    /// The primary's `Committed` reports, in order.
    pub committed: Vec<[Lsn; 4]>,
    /// The appends whose wait failed (`Action::FailWait`), in order.
    pub failed_waits: Vec<WaiterId>,
    /// The states the primary's breaker went through, one entry per change.
    pub breaker: Vec<BreakerState>,
    /// While set, the follower's acknowledgements of writes past this LSN wait (see
    /// [`Pair::release_acks`]) instead of reaching the primary: a follower slow to write.
    pub hold_acks_past: Option<Lsn>,
    held_acks: VecDeque<(Side, Input)>,
}

impl Pair {
    /// A primary on `plog` (its start gate open) and a follower on `flog` holding
    /// `follower_key`.
    pub fn new(follower_key: &str, plog: ModelLog, flog: ModelLog) -> Pair {
        Pair::build(follower_key, plog, flog, false, None)
    }

    /// As [`Pair::new`], with the primary's catch-up paced.
    pub fn paced(plog: ModelLog, flog: ModelLog, pacing: PacingConfig) -> Pair {
        Pair::build(KEY, plog, flog, false, Some(pacing))
    }

    /// As [`Pair::new`], with the primary's start gate closed: it takes records back from its
    /// sync followers before it serves.
    pub fn gated(plog: ModelLog, flog: ModelLog) -> Pair {
        Pair::build(KEY, plog, flog, true, None)
    }

    fn build(
        follower_key: &str,
        plog: ModelLog,
        flog: ModelLog,
        gated: bool,
        pacing: Option<PacingConfig>,
    ) -> Pair {
        let (first, last, durable) = (plog.first_lsn(), plog.last_lsn(), plog.durable_lsn());
        let mut p = Primary::new(primary_config(pacing), first, last, durable, 7);
        if gated {
            p.close_gate();
        }
        let f = follower(follower_key, &flog);
        Pair {
            now: Duration::ZERO,
            replicas: [Replica::primary(p, NonceSource::from_u64(1)), f],
            logs: [plog, flog],
            follower_up: true,
            queue: VecDeque::new(),
            closed: BTreeSet::new(),
            next_conn: 0,
            next_waiter: 0,
            admitted: Vec::new(),
            sent: Vec::new(),
            taken_in: Vec::new(),
            read_chunks: 0,
            cuts: Vec::new(),
            repairs: Vec::new(),
            repair_failures: Vec::new(),
            committed: Vec::new(),
            failed_waits: Vec::new(),
            breaker: vec![BreakerState::Closed],
            hold_acks_past: None,
            held_acks: VecDeque::new(),
        }
    }

    /// Delivers the acknowledgements held back while [`Pair::hold_acks_past`] was set.
    pub fn release_acks(&mut self) {
        self.queue.append(&mut self.held_acks);
        self.run();
    }

    /// A replica.
    pub fn replica(&self, side: Side) -> &Replica {
        &self.replicas[side.at()]
    }

    /// A replica, to step by hand (its actions are not carried out).
    pub fn replica_mut(&mut self, side: Side) -> &mut Replica {
        &mut self.replicas[side.at()]
    }

    /// The primary's state machine.
    pub fn primary(&self) -> &Primary {
        self.replica(Side::P).as_primary().expect("the primary")
    }

    /// A replica's log.
    pub fn log(&self, side: Side) -> &ModelLog {
        &self.logs[side.at()]
    }

    /// The rejections `side` sent: (code, detail).
    pub fn rejects(&self, side: Side) -> Vec<(RejectCode, u64)> {
        (self.sent.iter())
            .filter_map(|(s, m)| match m {
                Msg::Reject { code, detail, .. } if *s == side => Some((*code, *detail)),
                _ => None,
            })
            .collect()
    }

    /// The messages `side` received (sent to it, whether or not its session took them).
    pub fn received(&self, side: Side) -> impl Iterator<Item = &Msg> + '_ {
        (self.sent.iter())
            .filter(move |(s, _)| *s == side.other())
            .map(|(_, m)| m)
    }

    /// `input` happens to `side` now; everything it leads to is carried out.
    pub fn input(&mut self, side: Side, input: Input) {
        self.queue.push_back((side, input));
        self.run();
    }

    /// Time passes: each replica ticks, the primary first.
    pub fn tick(&mut self, by: Duration) {
        self.now += by;
        self.input(Side::P, Input::Tick);
        self.input(Side::F, Input::Tick);
    }

    /// A client appends `payload` at the local level: admitted, written to the primary's log,
    /// reported to the primary as a batch. Returns its LSN.
    pub fn append(&mut self, payload: &[u8]) -> Lsn {
        self.append_at(DurabilityLevel::Local, payload)
    }

    /// As [`Pair::append`], by a client waiting for `level`: the primary hears that the log
    /// took it, before the batch. Appends the commit timeout fails are in `failed_waits`.
    pub fn append_at(&mut self, level: DurabilityLevel, payload: &[u8]) -> Lsn {
        let lsn = self.take_append(level, payload);
        self.report_written(lsn);
        lsn
    }

    /// The first half of [`Pair::append_at`]: the log takes the append (the primary hears of
    /// it if `level` is remote), but its batch is not formed yet.
    pub fn take_append(&mut self, level: DurabilityLevel, payload: &[u8]) -> Lsn {
        self.next_waiter += 1;
        let waiter = WaiterId(self.next_waiter);
        self.input(Side::P, Input::ClientAppend { waiter, level });
        assert_eq!(self.admitted.pop(), Some(waiter), "admitted at once");
        let log = self.log(Side::P);
        let lsn = (log.append(Epoch(0), Bytes::copy_from_slice(payload))).expect("appended");
        if level != DurabilityLevel::Local {
            self.input(Side::P, Input::Appended { waiter, level, lsn });
        }
        lsn
    }

    /// The second half: the writer formed the batch of the record at `lsn` alone.
    pub fn report_written(&mut self, lsn: Lsn) {
        let records = self.log(Side::P).record(lsn).expect("appended");
        let written = Input::Written {
            first: lsn,
            last: lsn,
            records,
        };
        self.input(Side::P, written);
    }

    /// Both logs sync, the primary's first; each replica is told.
    pub fn durable_everywhere(&mut self) {
        for side in [Side::P, Side::F] {
            let durable = self.log(side).sync().expect("the sync");
            self.input(side, Input::Durable(durable));
        }
    }

    /// The primary's log purges the records below `first`, and the primary is told.
    pub fn purge(&mut self, first: Lsn) {
        self.log(Side::P).purge_before(first).expect("purged");
        self.input(Side::P, Input::Purged(first));
    }

    /// The follower's end of `conn` vanishes: it hears the close, the primary hears nothing,
    /// and nothing more is delivered on `conn` either way.
    pub fn drop_follower_end(&mut self, conn: ConnId) {
        self.closed.insert(conn);
        self.input(
            Side::F,
            Input::Closed {
                conn,
                why: "the follower went silent".into(),
            },
        );
    }

    fn run(&mut self) {
        while let Some((side, input)) = self.queue.pop_front() {
            self.step(side, input);
        }
    }

    /// Steps `side` with `input` and carries out its actions in order.
    fn step(&mut self, side: Side, input: Input) {
        if matches!(input, Input::Data { .. }) {
            self.taken_in.push((side, self.sent.len()));
        }
        let r = &mut self.replicas[side.at()];
        let actions = r.step(self.now, input);
        r.check_invariants();
        if let Some(link) = r.as_primary().map(|p| &p.links()[0]) {
            let state = link.breaker.state();
            if self.breaker.last() != Some(&state) {
                self.breaker.push(state);
            }
        }
        for a in actions {
            self.carry_out(side, a);
        }
    }

    fn carry_out(&mut self, side: Side, a: Action) {
        match a {
            Action::Connect { link, .. } => self.connect(link),
            Action::Send { conn, msg } => {
                if !self.closed.contains(&conn) {
                    let bytes = msg.encode().into();
                    let held = matches!((&msg, self.hold_acks_past),
                        (Msg::Ack { write, .. }, Some(past)) if *write > past);
                    let queue = if held {
                        &mut self.held_acks
                    } else {
                        &mut self.queue
                    };
                    queue.push_back((side.other(), Input::Data { conn, bytes }));
                }
                self.sent.push((side, msg));
            }
            Action::Close { conn, reason } => {
                let why = reason.clone();
                self.queue.push_back((side, Input::Closed { conn, why }));
                if self.closed.insert(conn) {
                    let why = reason;
                    self.queue
                        .push_back((side.other(), Input::Closed { conn, why }));
                }
            }
            Action::Admit { waiter } => self.admitted.push(waiter),
            Action::FailWait { waiter, .. } => self.failed_waits.push(waiter),
            Action::Committed(levels) => self.committed.push(levels),
            Action::Integrity(IntegrityAction::Repair { base, chunks, .. }) => {
                let bytes = Bytes::from(chunks.concat());
                let result = (self.log(side).repair(bytes.clone()))
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                self.repairs.push((side, base, bytes));
                let first = base;
                self.queue
                    .push_back((side, Input::Repaired { first, result }));
            }
            Action::Integrity(IntegrityAction::RepairFailed { reason, .. }) => {
                self.repair_failures.push((side, reason));
            }
            a => self.log_action(side, a),
        }
    }

    /// A dial: refused while the follower is down, else accepted by it and connected.
    fn connect(&mut self, link: usize) {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.step(Side::P, Input::Dialed { link, conn });
        if self.follower_up {
            self.queue.push_back((
                Side::F,
                Input::Accepted {
                    conn,
                    peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                },
            ));
            self.queue.push_back((Side::P, Input::Connected { conn }));
        } else {
            let why = "connection refused".to_string();
            self.queue.push_back((Side::P, Input::Closed { conn, why }));
        }
    }

    /// Log work: appends and cuts at once, reads answered through the queue.
    fn log_action(&mut self, side: Side, a: Action) {
        let log = &self.logs[side.at()];
        let answer = match a {
            Action::Append { records, .. } => {
                log.append_records(records)
                    .expect("replicated records continue the log");
                return;
            }
            Action::Truncate { after, expect_crc } => return self.truncate(after, expect_crc),
            Action::AppendTakenBack {
                link,
                conn,
                records,
            } => return self.take_back(link, conn, records),
            Action::ReadChunk {
                link,
                conn,
                from,
                max_bytes,
            } => {
                self.read_chunks += 1;
                let result = (log.read_chunk(from, max_bytes, true)).map_err(|e| match e {
                    StorageError::Purged { first } => ReadError::Purged { first },
                    e => ReadError::Failed(e.to_string()),
                });
                Input::Chunk {
                    link,
                    conn,
                    from,
                    result,
                }
            }
            Action::LookupCrc { link, conn, lsn } => Input::Crc {
                link,
                conn,
                crc: crc(log, lsn),
            },
            Action::ServeFetch {
                link,
                conn,
                request,
            } => {
                let from = request.range.0;
                let prev_crc = request.prev_crc.and_then(|_| crc(log, from.prev()));
                let bound = (request.max_bytes as usize).clamp(1, FETCH_CHUNK_BYTES as usize);
                let read = (log.read_chunk(from, bound, false)).map_err(|e| e.to_string());
                Input::FetchRead {
                    link,
                    conn,
                    request,
                    prev_crc,
                    read,
                }
            }
            other => {
                panic!("{side:?} asked for an action this executor does not expect: {other:?}")
            }
        };
        self.queue.push_back((side, answer));
    }

    /// The follower's compare-and-cut, told to it at once.
    fn truncate(&mut self, after: Lsn, expect_crc: u32) {
        let log = &self.logs[Side::F.at()];
        let found_crc = crc(log, after).unwrap_or(0);
        let done = after == Lsn::ZERO || found_crc == expect_crc;
        if done {
            log.truncate_after(after).expect("the cut");
            self.cuts.push(after);
        }
        let last = log.last_lsn();
        let applied = (self.replica(Side::F).as_follower()).map_or(Lsn::ZERO, |f| f.applied());
        let tail = Tail {
            last,
            last_epoch: Epoch(0),
            last_crc: crc(log, last).unwrap_or(0),
            durable: log.durable_lsn(),
            applied,
        };
        let truncated = Input::Truncated {
            after,
            found_crc,
            done,
            tail,
        };
        self.step(Side::F, truncated);
    }

    /// The primary appends records taken back from the follower; its writer reports them as a
    /// batch, then the append's answer comes.
    fn take_back(&mut self, link: usize, conn: ConnId, records: Bytes) {
        let log = self.log(Side::P);
        let first = log.last_lsn().next();
        let result = log.append_records(records.clone());
        if let Ok(last) = result {
            self.step(
                Side::P,
                Input::Written {
                    first,
                    last,
                    records,
                },
            );
        }
        let result = result.map_err(|e| e.to_string());
        self.step(Side::P, Input::TakenBack { link, conn, result });
    }
}
