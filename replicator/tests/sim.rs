//! The cluster simulator as a test: thousands of random seeds (each a cluster, a schedule of
//! faults and appends, then convergence), determinism, scripted scenarios through the
//! `Cluster` API, and one regression test per bug a seed found, named after it.
//!
//! A failure prints the command that replays it:
//! `cargo run --release -p logship-replicator --example sim -- --seed N [flags]`.

use std::time::Duration;

use logship_engine::Lsn;
use logship_replicator::commit::QuorumPolicy;
use logship_replicator::protocol::DurabilityLevel;
use logship_replicator::sim::{
    run_seed, shrink, ClientOutcome, ClientRef, Cluster, ClusterSpec, FaultClass, FaultSet,
    FollowerSpec, RunOptions, PRIMARY,
};
use logship_replicator::vocab::ReplicaLog;

const MS: Duration = Duration::from_millis(1);

/// Seeds the sweep runs: 2,000 in release builds (what CI runs), fewer in debug builds, where
/// every step is some ten times slower.
const SEEDS: u64 = if cfg!(debug_assertions) { 500 } else { 2_000 };

/// Runs `seeds` over every core; panics with the first failure, shrunk, and its replay command.
fn sweep(seeds: std::ops::Range<u64>) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= seeds.end || !failures.lock().unwrap().is_empty() {
                    return;
                }
                if let Err(f) = run_seed(seed, &RunOptions::default(), false) {
                    failures.lock().unwrap().push(f);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|f| f.seed);
    if let Some(f) = failures.first() {
        let small = shrink(f);
        panic!("{f}\nshrunk:\n{small}");
    }
}

#[test]
fn random_seeds_hold_every_property() {
    let started = std::time::Instant::now();
    sweep(0..SEEDS);
    eprintln!("{SEEDS} seeds in {:?}", started.elapsed());
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 77, 1_000_003] {
        let options = RunOptions::default();
        let a = run_seed(seed, &options, false).map(|r| r.trace_hash);
        let b = std::thread::spawn(move || run_seed(seed, &options, false).map(|r| r.trace_hash))
            .join()
            .unwrap();
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "seed {seed}: two runs differ"),
            (Err(a), Err(b)) => assert_eq!(a.trace, b.trace, "seed {seed}: two failures differ"),
            (a, b) => panic!("seed {seed}: one run passed, one failed: {a:?} / {b:?}"),
        }
    }
}

#[test]
fn disabling_a_fault_class_removes_it_from_the_run() {
    let options = RunOptions {
        disabled: FaultClass::ALL
            .into_iter()
            .fold(FaultSet::default(), FaultSet::with),
        hostile: Some(false),
        ..RunOptions::default()
    };
    for seed in 0..20 {
        let r = run_seed(seed, &options, false).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(
            r.settled_in,
            Some(Duration::from_millis(100)),
            "seed {seed}: no faults, yet slow to converge"
        );
    }
}

fn follower(sync: bool) -> FollowerSpec {
    FollowerSpec {
        sync,
        auto_apply: true,
    }
}

/// Appends `n` records at `level`; returns their references.
fn append_n(c: &mut Cluster, level: DurabilityLevel, n: usize) -> Vec<ClientRef> {
    (0..n).map(|_| c.append(level)).collect()
}

fn acked(c: &Cluster, refs: &[ClientRef]) -> usize {
    refs.iter()
        .filter(|r| matches!(c.outcome(**r), ClientOutcome::Acked { .. }))
        .count()
}

/// Runs until `cond` holds, in steps of 100 µs, at most `limit`.
fn run_until(c: &mut Cluster, limit: Duration, cond: impl Fn(&Cluster) -> bool) -> bool {
    let end = c.now() + limit;
    while c.now() < end {
        if cond(c) {
            return true;
        }
        c.run_for(Duration::from_micros(100))
            .unwrap_or_else(|v| panic!("{v}"));
    }
    cond(c)
}

#[test]
fn a_primary_crash_with_a_torn_write_takes_back_and_loses_nothing_acknowledged() {
    let mut lost = 0;
    for seed in 0..20 {
        let mut spec = ClusterSpec::new(
            seed,
            vec![follower(true), follower(true)],
            "ANY 1",
            QuorumPolicy::Block,
        );
        spec.disk.sync_latency = (5 * MS, 5 * MS);
        let mut c = Cluster::new(spec);
        c.run_for(50 * MS).unwrap();
        let durable = append_n(&mut c, DurabilityLevel::RemoteDurable, 20);
        c.run_for(200 * MS).unwrap();
        assert_eq!(
            acked(&c, &durable),
            20,
            "seed {seed}: a healthy cluster acknowledges"
        );
        append_n(&mut c, DurabilityLevel::RemoteWrite, 5);
        let held = |c: &Cluster| c.log(1).last_lsn() == Lsn(25) && c.log(2).last_lsn() == Lsn(25);
        assert!(
            run_until(&mut c, 4 * MS, held),
            "seed {seed}: the followers received the tail"
        );
        assert!(
            c.log(PRIMARY).durable_lsn() < Lsn(25),
            "seed {seed}: the primary synced already"
        );
        c.crash(PRIMARY, true);
        lost += usize::from(c.log(PRIMARY).last_lsn() < Lsn(25));
        c.restart(PRIMARY);
        c.run_for(2_000 * MS)
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert_eq!(
            c.log(PRIMARY).last_lsn(),
            Lsn(25),
            "seed {seed}: the tail was taken back"
        );
        assert!(
            c.replica(PRIMARY).unwrap().serving(),
            "seed {seed}: the gate opened"
        );
        let after = append_n(&mut c, DurabilityLevel::RemoteDurable, 3);
        c.settle(Duration::from_secs(30))
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert_eq!(acked(&c, &after), 3, "seed {seed}: serving again");
        c.check_invariants()
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
    }
    assert!(
        lost > 5,
        "only {lost} crashes lost records: nothing was taken back"
    );
}

#[test]
fn a_partitioned_sync_follower_under_block_never_lets_remote_durable_be_acknowledged() {
    for seed in 0..10 {
        let spec = ClusterSpec::new(
            seed,
            vec![follower(true), follower(false)],
            "ANY 1",
            QuorumPolicy::Block,
        );
        let commit = spec.timeouts.commit;
        let mut c = Cluster::new(spec);
        c.run_for(50 * MS).unwrap();
        c.partition(PRIMARY, 1, false);
        let remote: Vec<ClientRef> = [
            DurabilityLevel::RemoteWrite,
            DurabilityLevel::RemoteDurable,
            DurabilityLevel::RemoteApplied,
        ]
        .into_iter()
        .flat_map(|l| append_n(&mut c, l, 4))
        .collect();
        let local = append_n(&mut c, DurabilityLevel::Local, 4);
        c.run_for(commit + 500 * MS)
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert_eq!(
            acked(&c, &local),
            4,
            "seed {seed}: local appends are acknowledged"
        );
        for r in &remote {
            assert!(
                matches!(c.outcome(*r), ClientOutcome::Failed { ref why } if why.contains("QuorumUnavailable")),
                "seed {seed}: {:?}",
                c.outcome(*r)
            );
        }
        c.heal_all();
        let later = append_n(&mut c, DurabilityLevel::RemoteDurable, 3);
        c.settle(Duration::from_secs(30))
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert_eq!(acked(&c, &later), 3, "seed {seed}: the quorum is back");
    }
}

#[test]
fn fdatasync_eio_on_a_follower_fail_stops_it_and_it_rejoins() {
    for seed in 0..10 {
        let spec = ClusterSpec::new(
            seed,
            vec![follower(true), follower(true)],
            "ANY 1",
            QuorumPolicy::Block,
        );
        let restart_after = spec.fail_stop_restart_after;
        let mut c = Cluster::new(spec);
        c.run_for(50 * MS).unwrap();
        c.fail_next_sync(1);
        let refs = append_n(&mut c, DurabilityLevel::RemoteDurable, 5);
        let failed = |c: &Cluster| c.replica(1).is_some_and(|r| r.failure().is_some());
        assert!(
            run_until(&mut c, 20 * MS, failed),
            "seed {seed}: the follower's log failed"
        );
        c.run_for(restart_after + 10 * MS).unwrap();
        assert_eq!(c.incarnation(1), 2, "seed {seed}: restarted once");
        c.settle(Duration::from_secs(30))
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert_eq!(
            acked(&c, &refs),
            5,
            "seed {seed}: the other sync follower made the quorum"
        );
        assert_eq!(
            c.log(1).last_lsn(),
            c.log(PRIMARY).last_lsn(),
            "seed {seed}: rejoined"
        );
    }
}

#[test]
fn a_clean_restart_before_the_start_gate_opened_keeps_it_closed() {
    let spec = ClusterSpec::new(
        5,
        vec![follower(true), follower(true)],
        "ANY 2",
        QuorumPolicy::Block,
    );
    let mut c = Cluster::new(spec);
    c.run_for(50 * MS).unwrap();
    append_n(&mut c, DurabilityLevel::RemoteDurable, 5);
    c.run_for(100 * MS).unwrap();
    c.partition(PRIMARY, 1, false);
    c.partition(PRIMARY, 2, false);
    c.crash(PRIMARY, false);
    c.restart(PRIMARY);
    c.run_for(200 * MS).unwrap();
    assert!(
        !c.replica(PRIMARY).unwrap().serving(),
        "no member heard: gated"
    );
    assert!(c.gate_marked(PRIMARY));
    c.stop_clean(PRIMARY);
    c.restart(PRIMARY);
    c.run_for(200 * MS).unwrap();
    assert!(
        !c.replica(PRIMARY).unwrap().serving(),
        "the mark keeps the gate closed after a clean stop"
    );
    c.settle(Duration::from_secs(30))
        .unwrap_or_else(|v| panic!("{v}"));
    assert!(c.replica(PRIMARY).unwrap().serving());
    assert!(
        !c.gate_marked(PRIMARY),
        "the mark goes once the gate opened"
    );
}

/// Bug found by seed 12: a follower holding records the primary wrote but lost in a crash
/// (sent before its fdatasync) is refused as diverged forever once the restarted primary wrote
/// new records at those LSNs; it must be cut back to where the histories agree.
#[test]
fn seed_12_a_follower_holding_records_the_primary_lost_rejoins() {
    let options = RunOptions {
        steps: 48,
        disabled: FaultSet::default()
            .with(FaultClass::Torn)
            .with(FaultClass::SlowDisk)
            .with(FaultClass::Clock),
        hostile: None,
        failover: false,
    };
    if let Err(f) = run_seed(12, &options, false) {
        panic!("{f}");
    }
}

/// The bug seed 12 found, scripted: an async follower receives a record the primary then
/// loses (it was not synced yet), and the restarted primary writes another at its LSN.
#[test]
fn seed_12_scripted_an_async_follower_holding_a_record_the_primary_lost_rejoins() {
    for seed in 0..5 {
        let mut spec = ClusterSpec::new(seed, vec![follower(false)], "ANY 1", QuorumPolicy::Block);
        spec.disk.sync_latency = (5 * MS, 5 * MS);
        let mut c = Cluster::new(spec);
        c.run_for(50 * MS).unwrap();
        append_n(&mut c, DurabilityLevel::Local, 3);
        c.run_for(50 * MS).unwrap();
        append_n(&mut c, DurabilityLevel::Local, 1);
        assert!(run_until(&mut c, 4 * MS, |c| c.log(1).last_lsn() == Lsn(4)));
        assert!(c.log(PRIMARY).durable_lsn() < Lsn(4));
        c.crash(PRIMARY, false);
        c.partition(PRIMARY, 1, false);
        c.restart(PRIMARY);
        append_n(&mut c, DurabilityLevel::Local, 2);
        c.run_for(100 * MS).unwrap();
        c.settle(Duration::from_secs(30))
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
    }
}

/// Bug found by seed 1492: a take-back planned while the start gate was closed is carried out
/// after another member opened the gate and new records reused the LSNs: the follower keeps
/// its old record and streams the new ones after it, and acknowledgements count it.
#[test]
fn seed_1492_a_take_back_planned_before_the_gate_opened_is_not_carried_out_after() {
    let options = RunOptions {
        steps: 46,
        disabled: FaultSet::default()
            .with(FaultClass::Torn)
            .with(FaultClass::CleanRestart)
            .with(FaultClass::Spike)
            .with(FaultClass::Eio),
        hostile: None,
        failover: false,
    };
    if let Err(f) = run_seed(1492, &options, false) {
        panic!("{f}");
    }
}

/// Bug found by seed 1538 once the stale take-back (seed 1492) is out of the way: a link's
/// progress outlives the session that earned it, and a new session assumes the follower holds
/// the primary's records up to where it starts (a cut the follower has not checked yet, or a
/// take-back that then failed), so a quorum counts a follower that holds other records at
/// those LSNs.
#[test]
fn seed_1538_a_follower_is_counted_only_for_records_it_holds() {
    let options = RunOptions {
        steps: 191,
        disabled: FaultSet::default().with(FaultClass::Torn),
        hostile: None,
        failover: false,
    };
    if let Err(f) = run_seed(1538, &options, false) {
        panic!("{f}");
    }
}

/// Runs `seed` with the default schedule; panics with its failure.
fn replay(seed: u64) {
    if let Err(f) = run_seed(seed, &RunOptions::default(), false) {
        panic!("{f}");
    }
}

/// Seed 387: a restarted primary took back a record from an async follower, whose copy came
/// from a lost history; the sync follower holding the acknowledged history was then refused
/// and the start gate stayed shut. Take-back is from quorum members only.
#[test]
fn seed_387_take_back_is_from_quorum_members_only() {
    replay(387);
}

/// Seed 718: a link that withdrew a half-open breaker's probe (waiting for the start gate)
/// left the probe outstanding, and the follower was never dialed again.
#[test]
fn seed_718_a_withdrawn_probe_lets_the_breaker_probe_again() {
    replay(718);
}

/// Seed 17543: a primary whose start gate opened at LSN 0 (nothing acknowledged anywhere)
/// would not cut an async follower holding records of a lost history ("an empty primary never
/// empties a follower" is for a primary that never closed its gate).
#[test]
fn seed_17543_a_gated_fence_at_zero_cuts_a_lost_history() {
    replay(17543);
}

/// Seed 18909: after three primary crashes the only sync follower held records of an older
/// history than the primary's, and the start gate stayed shut; it converges since a recovered
/// empty log trusts its fence and a stale `Start` is refused (seeds 150296, 80164).
#[test]
fn seed_18909_a_sync_follower_of_an_older_history_rejoins() {
    replay(18909);
}

/// Seed 31145: after several primary crashes, the restarted fixed primary took back record 46
/// from the first sync follower to answer, which held it from an older start of the primary;
/// the two other sync followers held the newer 46 and 47 (acknowledged), their take-back was
/// refused at the CRC check, and the start gate stayed shut. Each start of a fixed primary now
/// writes a newer epoch, a closed gate takes back only from the quorum member whose last record
/// is newest (once enough members were heard), and a follower holding records of an older
/// epoch below both tails is cut where the logs part.
#[test]
fn seed_31145_sync_followers_of_another_history_than_the_primary_rejoin() {
    replay(31145);
}

/// Seed 50953 (found by the million-seed run of the first fix for 31145): the primary took
/// back records from the only member its gate needed, failed, and at its next start heard
/// another member whose records from a newer start had never been acknowledged; the newest
/// member was taken as the source though its log parted from the primary's below the
/// primary's end, and was refused. A follower whose log parts from the primary's below both
/// ends is cut where they part (the primary's log never conflicts with an acknowledged
/// record); only followers continuing the primary's log compete as take-back sources.
#[test]
fn seed_50953_a_member_of_a_newer_unacknowledged_history_is_cut_not_taken_back_from() {
    replay(50953);
}

/// Seed 80164: a `Start` held up in a partition on an older connection reached a follower
/// after a newer session had streamed and acknowledged records; the follower cut them (an
/// acknowledged record thrown away) to follow the stale `Start`. Only the newest connection's
/// handshake may start a session now, and a session that streams closes every other one.
#[test]
fn seed_80164_a_stale_start_on_an_older_connection_is_refused() {
    replay(80164);
}

/// Seed 22111, the same stale `Start` seen from the other side: the follower's durable
/// acknowledgement counted for records the stale session then cut.
#[test]
fn seed_22111_a_follower_never_acknowledges_what_a_stale_session_cuts() {
    replay(22111);
}

/// Seed 150296: a primary without a sync quorum that recovered an empty log after a crash
/// (nothing it had was durable, so nothing was acknowledged) refused forever followers holding
/// its lost records. Only a log created at that start (a new disk) keeps the rule that an
/// empty primary never empties a follower.
#[test]
fn seed_150296_a_recovered_empty_primary_cuts_what_it_lost() {
    replay(150296);
}
