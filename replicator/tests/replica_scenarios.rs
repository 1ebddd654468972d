//! Scenarios of a primary and a follower `Replica` driven against each other in virtual time
//! through their `step` API, with the simulator's model logs (`common/pair.rs` carries out
//! their actions): each test states which records reach whom, the commit LSNs of each level,
//! the rejections and the breaker's states. One-input handler tests are `replica_handlers`;
//! whole clusters under random faults are the simulator's (`sim`).

#[path = "common/pair.rs"]
mod pair;

use std::time::Duration;

use logship_engine::Lsn;
use logship_replicator::breaker::BreakerState;
use logship_replicator::integrity::Damaged;
use logship_replicator::link::Phase;
use logship_replicator::pacing::{PacingConfig, PACED_CHUNKS_IN_FLIGHT};
use logship_replicator::protocol::auth::{ClusterKey, KeyRing};
use logship_replicator::protocol::{Msg, RejectCode};
use logship_replicator::sim::ModelLog;
use logship_replicator::vocab::{Action, Input, ReplicaLog};
use logship_replicator::DurabilityLevel;

use pair::{concat, crc, log_of, log_with, records, Pair, Side, KEY};

const MS: Duration = Duration::from_millis(1);
/// The level of the paced scenarios' foreground appends: the pacer watches appends that wait
/// for a remote level.
const REMOTE: DurabilityLevel = DurabilityLevel::RemoteDurable;

/// `n` records as `log_of(n)` holds them, then records of other payloads, all durable.
fn log_then(n: u64, extra: &[&[u8]]) -> ModelLog {
    let common: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let mut payloads: Vec<&[u8]> = common.iter().map(String::as_bytes).collect();
    payloads.extend_from_slice(extra);
    log_with(&payloads)
}

fn damaged(first: u64, last: u64, prev_crc: Option<u32>) -> Input {
    Input::Damaged(vec![Damaged {
        first: Lsn(first),
        last: Lsn(last),
        sealed: true,
        prev_crc,
    }])
}

#[test]
fn handshake_then_live_streaming_commits_at_each_level() {
    let mut h = Pair::new(KEY, ModelLog::new(), ModelLog::new());
    h.tick(MS);
    assert_eq!(h.primary().links()[0].phase(), Phase::Streaming);
    let lsn = h.append(b"hello");
    assert_eq!(
        h.log(Side::F).last_lsn(),
        lsn,
        "sent before the primary's fdatasync"
    );
    assert_eq!(
        h.replica(Side::P).committed(),
        [Lsn::ZERO; 4],
        "nothing is committed before local durability"
    );
    assert!(h.committed.is_empty(), "no commit reported yet");
    h.durable_everywhere();
    assert_eq!(
        h.committed,
        vec![[lsn, lsn, Lsn::ZERO, Lsn::ZERO], [lsn; 4]],
        "local and remote write with the primary's sync, the rest with the follower's"
    );
    assert_eq!(h.replica(Side::P).committed(), [lsn; 4]);
    assert_eq!(
        records(h.log(Side::F)),
        records(h.log(Side::P)),
        "same bytes"
    );
}

#[test]
fn a_follower_without_the_key_never_receives_a_record() {
    let mut h = Pair::new("some other key entirely", log_of(3), ModelLog::new());
    h.tick(MS);
    h.append(b"secret");
    assert_eq!(h.log(Side::F).last_lsn(), Lsn::ZERO);
    assert_eq!(
        h.rejects(Side::P),
        vec![(RejectCode::AuthFailed, 0)],
        "the follower's proof fails at the primary"
    );
    let to_follower: Vec<&Msg> = h.received(Side::F).collect();
    assert!(
        matches!(
            to_follower.as_slice(),
            [Msg::Hello { .. }, Msg::Reject { .. }]
        ),
        "a hello and the rejection, no records: {to_follower:?}"
    );
    assert_ne!(h.primary().links()[0].phase(), Phase::Streaming);
    let s = h.primary().status();
    assert!(
        s.rejected
            .iter()
            .any(|(r, n)| r == "auth_failed" && *n == 1),
        "{:?}",
        s.rejected
    );
}

#[test]
fn a_behind_follower_catches_up_in_chunks_then_goes_live() {
    let mut h = Pair::new(KEY, log_of(500), log_of(10));
    h.tick(MS);
    assert_eq!(
        h.log(Side::F).last_lsn(),
        Lsn(500),
        "caught up from the log"
    );
    assert!(h.read_chunks > 1, "in chunks: {}", h.read_chunks);
    let runs = (h.received(Side::F))
        .filter(|m| matches!(m, Msg::Records { .. }))
        .count();
    assert_eq!(runs, h.read_chunks, "one run of records per chunk read");
    assert_eq!(h.cuts, vec![], "nothing cut");
    let lsn = h.append(b"live");
    assert_eq!(h.log(Side::F).last_lsn(), lsn);
    assert_eq!(h.primary().links()[0].phase(), Phase::Streaming);
    assert_eq!(records(h.log(Side::F)), records(h.log(Side::P)));
}

#[test]
fn a_follower_ahead_of_the_primary_is_truncated() {
    let flog = log_then(5, &[b"only on the follower"]);
    let mut h = Pair::new(KEY, log_of(5), flog);
    h.tick(MS);
    assert_eq!(h.cuts, vec![Lsn(5)], "cut after the primary's last record");
    assert_eq!(records(h.log(Side::F)), records(h.log(Side::P)));
    h.append(b"next");
    assert_eq!(h.log(Side::F).last_lsn(), Lsn(6));
    assert_eq!(records(h.log(Side::F)), records(h.log(Side::P)));
}

#[test]
fn a_diverged_follower_is_refused() {
    let flog = log_then(4, &[b"not what the primary has at 5"]);
    let before = records(&flog);
    let mut h = Pair::new(KEY, log_of(8), flog);
    h.tick(MS);
    assert_eq!(h.rejects(Side::P), vec![(RejectCode::Diverged, 5)]);
    assert_eq!(h.cuts, vec![]);
    assert_eq!(
        records(h.log(Side::F)),
        before,
        "nothing changed on the follower"
    );
}

#[test]
fn silence_closes_the_link_and_reconnects_with_backoff_behind_the_breaker() {
    let mut h = Pair::new(KEY, ModelLog::new(), ModelLog::new());
    h.tick(MS);
    assert!(h.primary().links()[0].healthy());
    h.follower_up = false;
    // The follower stops answering: its end vanishes, the primary hears nothing.
    let conn = h.primary().links()[0].conn().expect("connected");
    h.drop_follower_end(conn);
    for _ in 0..150 {
        h.tick(10 * MS);
    }
    let link = &h.primary().links()[0];
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
    let link = &h.primary().links()[0];
    assert!(link.healthy(), "reconnected after the reset timeout");
    assert_eq!(
        link.breaker.state(),
        BreakerState::Closed,
        "probe successes close it"
    );
    assert_eq!(
        h.breaker,
        [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Closed
        ],
        "the breaker's transitions"
    );
}

#[test]
fn records_out_of_order_close_the_session() {
    let mut h = Pair::new(KEY, ModelLog::new(), ModelLog::new());
    h.tick(MS);
    let conn = h.primary().links()[0].conn().expect("connected");
    let later = log_of(3);
    let c = (later.read_chunk(Lsn(2), 1 << 20, false))
        .expect("read")
        .expect("held");
    let records = Msg::Records {
        first: c.first,
        last: c.last,
        commit_lsn: Lsn::ZERO,
        records: c.bytes,
    };
    let now = h.now;
    let bytes = records.encode().into();
    let out = h
        .replica_mut(Side::F)
        .step(now, Input::Data { conn, bytes });
    assert!(
        matches!(
            out.as_slice(),
            [
                Action::Send { conn: c1, msg: Msg::Reject { code: RejectCode::Protocol, .. } },
                Action::Close { conn: c2, .. },
            ] if *c1 == conn && *c2 == conn
        ),
        "refused and closed, nothing appended: {out:?}"
    );
}

#[test]
fn block_policy_never_commits_remote_levels_without_the_quorum() {
    let mut h = Pair::new(KEY, ModelLog::new(), ModelLog::new());
    h.follower_up = false;
    h.tick(MS);
    h.append(b"a");
    let durable = h.log(Side::P).sync().expect("synced");
    h.input(Side::P, Input::Durable(durable));
    for _ in 0..100 {
        h.tick(10 * MS);
    }
    let local_only = [Lsn(1), Lsn::ZERO, Lsn::ZERO, Lsn::ZERO];
    assert_eq!(h.replica(Side::P).committed(), local_only);
    assert_eq!(h.committed, vec![local_only], "the only commit reported");
    assert!(!h.primary().status().quorum_available);
}

#[test]
fn purged_records_are_reported_to_the_follower() {
    let mut h = Pair::new(KEY, log_of(100), ModelLog::new());
    h.purge(Lsn(50));
    h.tick(MS);
    assert_eq!(
        h.rejects(Side::P),
        vec![(RejectCode::Purged, 50)],
        "the first LSN held goes with it"
    );
    assert!(h.primary().links()[0].purged);
    assert_eq!(h.log(Side::F).last_lsn(), Lsn::ZERO);
}

#[test]
fn a_primary_that_lost_records_takes_them_back_before_serving() {
    // The primary's log ends at 10; its sync follower durably holds 25 with the same history.
    let mut h = Pair::gated(log_of(10), log_of(25));
    assert!(!h.replica(Side::P).serving());
    h.tick(MS);
    assert_eq!(h.rejects(Side::P), vec![]);
    assert_eq!(h.rejects(Side::F), vec![]);
    assert_eq!(
        records(h.log(Side::P)),
        records(&log_of(25)),
        "every record came back, byte for byte"
    );
    assert_eq!(h.log(Side::F).last_lsn(), Lsn(25));
    assert_eq!(h.cuts, vec![], "and the follower was not cut");
    assert!(
        h.replica(Side::P).serving(),
        "served once the only sync follower was heard and taken back from"
    );
    let lsn = h.append(b"after the take-back");
    assert_eq!(lsn, Lsn(26));
    assert_eq!(records(h.log(Side::F)), records(h.log(Side::P)));
}

#[test]
fn a_take_back_from_another_history_is_refused_and_the_gate_stays_shut() {
    let flog = log_then(
        9,
        &[
            b"the follower's record 10 is not the primary's",
            b"later 0",
            b"later 1",
            b"later 2",
            b"later 3",
            b"later 4",
        ],
    );
    let before = records(&flog);
    let mut h = Pair::gated(log_of(10), flog);
    h.tick(MS);
    assert_eq!(
        h.rejects(Side::P),
        vec![(RejectCode::Diverged, 0)],
        "the follower could not give back records of the primary's history"
    );
    assert!(
        h.received(Side::P)
            .any(|m| matches!(m, Msg::FetchFailed { .. })),
        "the follower refused the fetch: its record 10 is not the primary's"
    );
    assert_eq!(
        records(h.log(Side::P)),
        records(&log_of(10)),
        "nothing taken from another history"
    );
    assert_eq!(records(h.log(Side::F)), before, "and nothing cut there");
    assert_eq!(h.cuts, vec![]);
    assert!(!h.replica(Side::P).serving());
}

#[test]
fn a_follower_repairs_a_damaged_range_from_the_primary() {
    let flog = log_of(50);
    assert!(flog.corrupt(Lsn(25)));
    let mut h = Pair::new(KEY, log_of(50), flog);
    h.tick(MS);
    let prev = crc(h.log(Side::F), Lsn(19));
    h.input(Side::F, damaged(20, 39, prev));
    assert_eq!(h.repair_failures, vec![]);
    let repaired = concat(h.log(Side::P), 20, 39);
    assert_eq!(h.repairs, vec![(Side::F, Lsn(20), repaired)]);
    assert_eq!(h.log(Side::F).corrupted(), vec![], "the damage is gone");
    assert_eq!(records(h.log(Side::F)), records(h.log(Side::P)));
}

#[test]
fn a_primary_repairs_a_damaged_range_from_a_follower_that_holds_it() {
    let plog = log_of(50);
    assert!(plog.corrupt(Lsn(15)));
    let mut h = Pair::new(KEY, plog, log_of(50));
    h.tick(MS);
    h.durable_everywhere();
    let now = h.now;
    let out = h.replica_mut(Side::P).step(now, damaged(40, 60, None));
    assert_eq!(out, vec![], "no follower holds 60: no fetch");
    let prev = crc(h.log(Side::P), Lsn(9));
    h.input(Side::P, damaged(10, 30, prev));
    assert_eq!(h.repair_failures, vec![]);
    let repaired = concat(h.log(Side::F), 10, 30);
    assert_eq!(h.repairs, vec![(Side::P, Lsn(10), repaired)]);
    assert_eq!(h.log(Side::P).corrupted(), vec![], "the damage is gone");
    // A fetch whose previous record differs on the other side fails instead of mixing
    // histories.
    h.input(Side::P, damaged(10, 30, Some(0xdead)));
    assert_eq!(h.repairs.len(), 1);
    assert_eq!(h.repair_failures.len(), 1, "{:?}", h.repair_failures);
}

#[test]
fn an_empty_primary_never_empties_a_follower() {
    // A primary started on a new disk while its follower holds records: nothing to compare,
    // and cutting the follower to nothing could throw away all the cluster acknowledged.
    let mut h = Pair::new(KEY, ModelLog::new(), log_of(20));
    h.tick(MS);
    assert_eq!(h.rejects(Side::P), vec![(RejectCode::Diverged, 0)]);
    assert_eq!(h.cuts, vec![]);
    assert_eq!(
        records(h.log(Side::F)),
        records(&log_of(20)),
        "the follower keeps every record"
    );
    // With its gate closed (a sync quorum), the same primary takes them back instead.
    let mut h = Pair::gated(ModelLog::new(), log_of(20));
    h.tick(MS);
    assert_eq!(records(h.log(Side::P)), records(&log_of(20)));
    assert!(h.replica(Side::P).serving());
}

#[test]
fn slow_commits_pace_a_later_catch_up_which_still_completes() {
    let floor = 4 << 10;
    let pacing = PacingConfig {
        latency_target: 5 * MS,
        min_bytes_per_sec: floor,
    };
    let mut h = Pair::paced(log_of(10), log_of(10), pacing);
    h.tick(MS);
    assert!(h.primary().links()[0].healthy());
    // Foreground commits of 20 ms, over the 5 ms target: the allowance falls to the floor.
    for _ in 0..15 {
        h.append_at(REMOTE, b"slow");
        h.tick(20 * MS);
        h.durable_everywhere();
    }
    let pacing = |h: &Pair| h.primary().status().catch_up_pacing.expect("paced");
    assert_eq!(pacing(&h).allowance_bytes_per_sec, Some(floor));
    // The follower goes away; 20 KB of records pile up while their commits wait for it (the
    // allowance holds).
    h.follower_up = false;
    let conn = h.primary().links()[0].conn().expect("connected");
    h.drop_follower_end(conn);
    for _ in 0..100 {
        h.append_at(REMOTE, &[7u8; 200]);
    }
    let last = h.log(Side::P).last_lsn();
    h.follower_up = true;
    let (mut reconnected, mut caught_up) = (None, None);
    for i in 0..3_000u64 {
        h.tick(10 * MS);
        if reconnected.is_none() && h.primary().links()[0].healthy() {
            reconnected = Some(i);
        }
        if h.log(Side::F).last_lsn() == last {
            caught_up = Some(i);
            break;
        }
    }
    let (reconnected, caught_up) = (
        reconnected.expect("reconnects"),
        caught_up.expect("caught up"),
    );
    // 20 KB at 4 KiB/s: some 5 s, in reads of at most 4 KiB.
    let took = Duration::from_millis(10 * (caught_up - reconnected));
    assert!(took >= Duration::from_secs(4), "caught up in {took:?}");
    assert!(pacing(&h).throttled_seconds >= 3.0, "{:?}", pacing(&h));
    assert_eq!(records(h.log(Side::F)), records(h.log(Side::P)));
}

#[test]
fn the_pacer_times_an_append_from_when_the_log_took_it_not_from_its_batch() {
    let pacing = PacingConfig {
        latency_target: 5 * MS,
        min_bytes_per_sec: 4 << 10,
    };
    let mut h = Pair::paced(log_of(10), log_of(10), pacing);
    h.tick(MS);
    assert!(h.primary().links()[0].healthy());
    let paced = |h: &Pair| h.primary().status().catch_up_pacing.expect("paced");
    // Appends at the local level only are not watched.
    h.append(b"local");
    h.tick(20 * MS);
    h.durable_everywhere();
    h.tick(100 * MS);
    assert_eq!(paced(&h).window_commits, 0, "{:?}", paced(&h));
    // Two remote appends wait 20 ms for their batches (an fdatasync stalled), which then commit
    // within 1 ms of being formed: two commits of 21 ms, over the target.
    let first = h.take_append(REMOTE, b"queued");
    let second = h.take_append(REMOTE, b"queued too");
    h.tick(20 * MS);
    h.report_written(first);
    h.report_written(second);
    h.tick(MS);
    h.durable_everywhere();
    h.tick(100 * MS);
    let s = paced(&h);
    assert_eq!((s.window_commits, s.window_over_target), (2, 2), "{s:?}");
    let p99 = s.recent_commit_p99_ms.expect("a p99");
    assert!((20.0..=22.0).contains(&p99), "{s:?}");
    assert!(h.failed_waits.is_empty());
}

#[test]
fn a_paced_catch_up_keeps_its_chunks_in_flight_bounded() {
    // A floor far above what the chunks need: the allowance never holds a read back, so only
    // the in-flight rule spaces them.
    let pacing = PacingConfig {
        latency_target: 5 * MS,
        min_bytes_per_sec: 64 << 20,
    };
    let mut h = Pair::paced(log_of(10), log_of(10), pacing);
    h.tick(MS);
    for _ in 0..15 {
        h.append_at(REMOTE, b"slow");
        h.tick(20 * MS);
        h.durable_everywhere();
    }
    let paced = |h: &Pair| h.primary().status().catch_up_pacing.expect("paced");
    assert!(paced(&h).allowance_bytes_per_sec.is_some(), "throttled");
    h.follower_up = false;
    let conn = h.primary().links()[0].conn().expect("connected");
    h.drop_follower_end(conn);
    for _ in 0..200 {
        h.append_at(REMOTE, &[7u8; 200]);
    }
    let last = h.log(Side::P).last_lsn();
    let from = h.sent.len();
    h.follower_up = true;
    // A follower that acknowledges no write: exactly PACED_CHUNKS_IN_FLIGHT chunks go out.
    h.hold_acks_past = Some(h.log(Side::F).last_lsn());
    let sent_chunks = |h: &Pair| {
        (h.sent[from..].iter())
            .filter(|(side, msg)| *side == Side::P && matches!(msg, Msg::Records { .. }))
            .count()
    };
    for _ in 0..3_000 {
        h.tick(10 * MS);
        if sent_chunks(&h) > 0 {
            break;
        }
    }
    for _ in 0..20 {
        h.tick(10 * MS);
    }
    assert_eq!(sent_chunks(&h), PACED_CHUNKS_IN_FLIGHT);
    h.hold_acks_past = None;
    h.release_acks();
    for _ in 0..3_000 {
        h.tick(10 * MS);
        if h.log(Side::F).last_lsn() == last {
            break;
        }
    }
    assert_eq!(records(h.log(Side::F)), records(h.log(Side::P)));
    assert!(
        paced(&h).allowance_bytes_per_sec.is_some(),
        "still throttled"
    );
    // Each Records frame goes out after the primary took in an acknowledgement of the frame
    // PACED_CHUNKS_IN_FLIGHT before it; and some go out before the one just before them was
    // acknowledged (the next chunk travels while the follower writes).
    let chunks: Vec<(usize, Lsn)> = (from..h.sent.len())
        .filter_map(|i| match &h.sent[i] {
            (Side::P, Msg::Records { last, .. }) => Some((i, *last)),
            _ => None,
        })
        .collect();
    assert!(chunks.len() >= 5, "{} chunks", chunks.len());
    // The session's messages go one way in order and none is lost: the primary's n-th intake
    // since `from` is the follower's n-th message since then. Each Ack the primary took in,
    // with how many messages had been sent by then.
    let from_follower = (h.sent[from..].iter()).filter(|(side, _)| *side == Side::F);
    let intakes = (h.taken_in.iter()).filter(|&&(side, sent)| side == Side::P && sent > from);
    let acks: Vec<(usize, Lsn)> = (intakes.zip(from_follower))
        .filter_map(|(&(_, sent), (_, msg))| match msg {
            Msg::Ack { write, .. } => Some((sent, *write)),
            _ => None,
        })
        .collect();
    // Whether the primary took in an Ack covering `last` before sending message `at`.
    let acked_before =
        |last: Lsn, at: usize| (acks.iter()).any(|&(sent, w)| sent <= at && w >= last);
    for (k, &(at, _)) in chunks.iter().enumerate().skip(PACED_CHUNKS_IN_FLIGHT) {
        let (before, last) = chunks[k - PACED_CHUNKS_IN_FLIGHT];
        assert!(
            acked_before(last, at),
            "chunk {at} sent before the primary took in an ack of chunk {before}"
        );
    }
    let overlapped = (chunks.windows(2)).filter(|w| !acked_before(w[0].1, w[1].0));
    assert!(
        overlapped.count() >= 2,
        "never more than one chunk in flight"
    );
}

/// A ring of `keys`, the first current.
fn ring(keys: &[&str]) -> KeyRing {
    let keys = (keys.iter())
        .map(|k| ClusterKey::from_bytes(k.as_bytes()).expect("long enough"))
        .collect();
    KeyRing::new(keys).expect("a ring of one to a few keys")
}

/// Ends the streaming session at both ends and lets the primary connect again; returns
/// whether the new session reached streaming.
fn new_session(h: &mut Pair) -> bool {
    let conn = h.primary().links()[0].conn().expect("connected");
    h.drop_follower_end(conn);
    h.input(
        Side::P,
        Input::Closed {
            conn,
            why: "a new session is wanted".into(),
        },
    );
    for _ in 0..300 {
        h.tick(10 * MS);
        if h.primary().links()[0].phase() == Phase::Streaming {
            return true;
        }
    }
    false
}

const NEXT_KEY: &str = "the next key of this cluster";

#[test]
fn the_cluster_key_rotates_through_the_ring_with_a_new_session_at_every_step() {
    let mut h = Pair::new(KEY, log_of(2), log_of(2));
    h.tick(MS);
    assert_eq!(h.primary().links()[0].phase(), Phase::Streaming);
    // Each step on both replicas, the follower first, then a new session: the primary's
    // current key is always in the follower's ring, and the follower's in the primary's.
    let steps: [&[&str]; 3] = [&[KEY, NEXT_KEY], &[NEXT_KEY, KEY], &[NEXT_KEY]];
    for (i, keys) in steps.into_iter().enumerate() {
        h.input(Side::F, Input::KeyRing(ring(keys)));
        // The session under way goes on across the reload.
        let lsn = h.append(format!("before reconnect {i}").as_bytes());
        assert_eq!(h.log(Side::F).last_lsn(), lsn, "step {i}: the old session");
        h.input(Side::P, Input::KeyRing(ring(keys)));
        assert!(
            new_session(&mut h),
            "step {i}: a session under the new rings"
        );
        let lsn = h.append(format!("after reconnect {i}").as_bytes());
        assert_eq!(h.log(Side::F).last_lsn(), lsn, "step {i}: the new session");
    }
    assert_eq!(h.rejects(Side::P), vec![], "no proof failed");
    assert_eq!(h.rejects(Side::F), vec![]);
    assert_eq!(records(h.log(Side::F)), records(h.log(Side::P)));
}

#[test]
fn a_key_dropped_from_the_ring_before_its_peer_moved_on_refuses_the_next_session() {
    let mut h = Pair::new(KEY, log_of(2), log_of(2));
    h.tick(MS);
    // The follower skips the overlap: the primary still proves with the old key only.
    h.input(Side::F, Input::KeyRing(ring(&[NEXT_KEY])));
    let lsn = h.append(b"the session under way is not cut");
    assert_eq!(h.log(Side::F).last_lsn(), lsn);
    assert!(!new_session(&mut h), "no session without a shared key");
    assert!(
        h.rejects(Side::P).contains(&(RejectCode::AuthFailed, 0)),
        "the follower's proof (it proves first) fails at the primary: {:?}",
        h.rejects(Side::P)
    );
    // Step 1 of the procedure (the old key current, the new one accepted) lets it in again.
    h.input(Side::F, Input::KeyRing(ring(&[KEY, NEXT_KEY])));
    for _ in 0..1000 {
        h.tick(10 * MS);
    }
    assert_eq!(h.primary().links()[0].phase(), Phase::Streaming);
}
