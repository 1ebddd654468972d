//! Failover in the simulator: scripted scenarios (a primary killed, partitioned both ways and
//! one way, a former primary's divergent suffix, a follower that must not disturb a healthy
//! primary) and the random sweep over clusters that elect their primary.

use std::time::Duration;

use logship_engine::{Epoch, Lsn};
use logship_replicator::commit::QuorumPolicy;
use logship_replicator::protocol::DurabilityLevel;
use logship_replicator::sim::runner::{run_seed, shrink, RunOptions};
use logship_replicator::sim::{ClientOutcome, ClientRef, Cluster, ClusterSpec, FollowerSpec};
use logship_replicator::vocab::ReplicaLog;

const MS: Duration = Duration::from_millis(1);

/// Seeds the failover sweep runs (release: CI's count; debug builds are some ten times slower).
const SEEDS: u64 = if cfg!(debug_assertions) { 300 } else { 2_000 };

fn cluster(seed: u64, nodes: usize, quorum: &str) -> Cluster {
    let followers = (1..nodes)
        .map(|_| FollowerSpec {
            sync: true,
            auto_apply: true,
        })
        .collect();
    Cluster::new(ClusterSpec::new_failover(
        seed,
        followers,
        quorum,
        QuorumPolicy::Block,
    ))
}

fn acked(c: &Cluster, refs: &[ClientRef]) -> Vec<Lsn> {
    refs.iter()
        .filter_map(|r| match c.outcome(*r) {
            ClientOutcome::Acked { lsn } => Some(lsn),
            _ => None,
        })
        .collect()
}

/// Runs until some node is a serving primary; returns it.
fn elected(c: &mut Cluster, within: Duration) -> usize {
    elected_after(c, Epoch(0), within)
}

/// Runs until some node is a serving primary of an epoch after `after`; returns it.
fn elected_after(c: &mut Cluster, after: Epoch, within: Duration) -> usize {
    let end = c.now() + within;
    while c.now() < end {
        let serving = |p: &usize| {
            c.replica(*p)
                .is_some_and(|r| r.serving() && r.epoch() > after)
        };
        if let Some(p) = c.primary().filter(serving) {
            return p;
        }
        c.run_for(10 * MS).unwrap_or_else(|v| panic!("{v}"));
    }
    panic!("no primary elected within {within:?}");
}

fn append_durable(c: &mut Cluster, n: usize) -> Vec<ClientRef> {
    let refs: Vec<ClientRef> = (0..n)
        .map(|_| c.append(DurabilityLevel::RemoteDurable))
        .collect();
    c.run_for(300 * MS).unwrap_or_else(|v| panic!("{v}"));
    refs
}

/// Every acknowledged LSN is on `node` with the bytes acknowledged (the simulator's history
/// checks the bytes; here: present).
fn holds_all(c: &Cluster, node: usize, lsns: &[Lsn]) -> bool {
    lsns.iter().all(|l| c.log(node).record(*l).is_some())
}

#[test]
fn a_killed_primary_is_replaced_and_nothing_acknowledged_is_lost() {
    for seed in 0..10 {
        let mut c = cluster(seed, 3, "ANY 1");
        let first = elected(&mut c, 5_000 * MS);
        let before = append_durable(&mut c, 20);
        let lsns = acked(&c, &before);
        assert_eq!(
            lsns.len(),
            20,
            "seed {seed}: a healthy cluster acknowledges"
        );
        let epoch = c.replica(first).unwrap().epoch();
        c.crash(first, seed % 2 == 0);
        let second = elected(&mut c, 5_000 * MS);
        assert_ne!(second, first, "seed {seed}");
        assert!(c.replica(second).unwrap().epoch() > epoch, "seed {seed}");
        assert!(
            holds_all(&c, second, &lsns),
            "seed {seed}: the new primary holds every ack"
        );
        let after = append_durable(&mut c, 5);
        assert_eq!(
            acked(&c, &after).len(),
            5,
            "seed {seed}: serving in the new epoch"
        );
        c.restart(first);
        c.settle(Duration::from_secs(30))
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert!(
            holds_all(&c, first, &lsns),
            "seed {seed}: the old primary rejoined"
        );
        c.check_invariants()
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
    }
}

#[test]
fn a_primary_cut_off_both_ways_steps_down_and_its_unreplicated_suffix_is_cut() {
    for seed in 0..10 {
        let mut c = cluster(seed, 3, "ANY 1");
        let old = elected(&mut c, 5_000 * MS);
        let refs_lsns = append_durable(&mut c, 10);
        let lsns = acked(&c, &refs_lsns);
        assert_eq!(lsns.len(), 10, "seed {seed}");
        for other in (0..3).filter(|&n| n != old) {
            c.partition(old, other, false);
        }
        // Local appends on the isolated primary: acknowledged at local only, losable.
        let local: Vec<ClientRef> = (0..5).map(|_| c.append(DurabilityLevel::Local)).collect();
        c.run_for(100 * MS).unwrap();
        assert_eq!(
            acked(&c, &local).len(),
            5,
            "seed {seed}: local acks on the old primary"
        );
        let end = c.now() + 6_000 * MS;
        while c.replica(old).is_some_and(|r| r.as_primary().is_some()) && c.now() < end {
            c.run_for(10 * MS)
                .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        }
        assert!(
            c.replica(old).unwrap().as_follower().is_some(),
            "seed {seed}: check-quorum made the cut-off primary step down"
        );
        let new = c.primary().expect("the majority elected one");
        assert_ne!(new, old, "seed {seed}");
        let more = append_durable(&mut c, 5);
        assert_eq!(acked(&c, &more).len(), 5, "seed {seed}");
        c.heal_all();
        c.settle(Duration::from_secs(30))
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        let last = c.log(new).last_lsn();
        assert_eq!(
            c.log(old).last_lsn(),
            last,
            "seed {seed}: the old primary caught up"
        );
        for l in 1..=last.0 {
            assert_eq!(
                c.log(old).record(Lsn(l)),
                c.log(new).record(Lsn(l)),
                "seed {seed} lsn {l}"
            );
        }
        assert!(holds_all(&c, old, &lsns), "seed {seed}");
        c.check_invariants()
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
    }
}

#[test]
fn a_primary_that_hears_nothing_back_steps_down_and_a_new_one_serves() {
    for seed in 0..10 {
        let mut c = cluster(seed, 3, "ANY 1");
        let old = elected(&mut c, 5_000 * MS);
        let refs_lsns = append_durable(&mut c, 10);
        let lsns = acked(&c, &refs_lsns);
        // One way: the primary's frames reach the followers, theirs never reach it.
        for other in (0..3).filter(|&n| n != old) {
            c.partition(other, old, true);
        }
        c.run_for(8_000 * MS)
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        let new = elected(&mut c, 5_000 * MS);
        assert!(holds_all(&c, new, &lsns), "seed {seed}");
        c.heal_all();
        c.settle(Duration::from_secs(30))
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        c.check_invariants()
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
    }
}

#[test]
fn a_follower_cut_off_from_the_primary_does_not_depose_it() {
    for seed in 0..10 {
        let mut c = cluster(seed, 3, "ANY 1");
        let p = elected(&mut c, 5_000 * MS);
        let epoch = c.replica(p).unwrap().epoch();
        let lonely = (0..3).find(|&n| n != p).unwrap();
        c.partition(p, lonely, false);
        let refs: Vec<ClientRef> = (0..50)
            .map(|_| c.append(DurabilityLevel::RemoteDurable))
            .collect();
        c.run_for(6_000 * MS)
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        // The lonely follower asks for pre-votes; the other follower hears the primary and
        // refuses, so nobody's epoch moves and the primary keeps serving.
        assert_eq!(c.primary(), Some(p), "seed {seed}");
        assert_eq!(
            c.replica(p).unwrap().epoch(),
            epoch,
            "seed {seed}: the primary was not disturbed"
        );
        assert_eq!(acked(&c, &refs).len(), 50, "seed {seed}");
        c.heal_all();
        c.settle(Duration::from_secs(30))
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert_eq!(
            c.replica(p).unwrap().epoch(),
            epoch,
            "seed {seed}: still no new epoch"
        );
    }
}

#[test]
fn records_carry_the_epoch_they_were_written_in() {
    let mut c = cluster(7, 3, "ANY 1");
    let first = elected(&mut c, 5_000 * MS);
    let refs_lsns = append_durable(&mut c, 3);
    let lsns = acked(&c, &refs_lsns);
    let e1 = c.replica(first).unwrap().epoch();
    c.crash(first, false);
    let second = elected(&mut c, 5_000 * MS);
    let refs_more = append_durable(&mut c, 3);
    let more = acked(&c, &refs_more);
    let e2 = c.replica(second).unwrap().epoch();
    assert!(e2 > e1 && e1 > Epoch(0));
    let log = c.log(second);
    for l in &lsns {
        assert_eq!(log.record_meta(*l).unwrap().map(|m| m.1), Some(e1));
    }
    for l in &more {
        assert_eq!(log.record_meta(*l).unwrap().map(|m| m.1), Some(e2));
    }
}

#[test]
fn a_planned_switchover_hands_over_within_milliseconds_and_loses_nothing() {
    for seed in 0..10 {
        let mut c = cluster(seed, 3, "ANY 1");
        let old = elected(&mut c, 5_000 * MS);
        let epoch = c.replica(old).unwrap().epoch();
        let refs: Vec<ClientRef> = (0..30)
            .map(|_| c.append(DurabilityLevel::RemoteDurable))
            .collect();
        let target = (old + 1) % 3;
        c.promote(target);
        let start = c.now();
        while c.primary() != Some(target) || !c.replica(target).unwrap().serving() {
            c.run_for(MS).unwrap_or_else(|v| panic!("seed {seed}: {v}"));
            assert!(
                c.now() - start < 500 * MS,
                "seed {seed}: not handed over within 500 ms"
            );
        }
        assert_eq!(
            c.replica(target).unwrap().epoch(),
            Epoch(epoch.0 + 1),
            "seed {seed}"
        );
        assert!(
            c.replica(old).unwrap().as_follower().is_some(),
            "seed {seed}: the old primary follows"
        );
        let more: Vec<ClientRef> = (0..10)
            .map(|_| c.append(DurabilityLevel::RemoteDurable))
            .collect();
        c.settle(Duration::from_secs(30))
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert_eq!(
            acked(&c, &more).len(),
            10,
            "seed {seed}: the new primary serves"
        );
        let before = acked(&c, &refs);
        assert!(holds_all(&c, target, &before), "seed {seed}");
        c.check_invariants()
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
    }
}

#[test]
fn a_paused_primary_is_replaced_and_steps_down_when_it_resumes() {
    for seed in 0..10 {
        let mut c = cluster(seed, 3, "ANY 1");
        let old = elected(&mut c, 5_000 * MS);
        let lsns = {
            let refs = append_durable(&mut c, 10);
            acked(&c, &refs)
        };
        let epoch = c.replica(old).unwrap().epoch();
        c.pause(old, 4_000 * MS);
        let _waiting: Vec<ClientRef> = (0..5)
            .map(|_| c.append(DurabilityLevel::RemoteDurable))
            .collect();
        let new = elected_after(&mut c, epoch, 4_000 * MS);
        assert_ne!(new, old, "seed {seed}");
        c.run_for(4_000 * MS)
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert!(
            c.replica(old).unwrap().as_follower().is_some(),
            "seed {seed}: the resumed primary stepped down"
        );
        c.settle(Duration::from_secs(30))
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert!(holds_all(&c, old, &lsns), "seed {seed}");
        c.check_invariants()
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
    }
}

#[test]
fn a_primary_whose_disk_stalls_steps_down_and_another_serves() {
    for seed in 0..10 {
        let mut c = cluster(seed, 3, "ANY 1");
        let old = elected(&mut c, 5_000 * MS);
        append_durable(&mut c, 5);
        c.stall_disk(old, 6_000 * MS);
        let refs: Vec<ClientRef> = (0..5)
            .map(|_| c.append(DurabilityLevel::RemoteDurable))
            .collect();
        let epoch = c.replica(old).unwrap().epoch();
        c.run_for(1_500 * MS)
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert!(
            c.replica(old).unwrap().as_follower().is_some(),
            "seed {seed}: the stalled primary stepped down"
        );
        let new = elected_after(&mut c, epoch, 4_000 * MS);
        assert_ne!(new, old, "seed {seed}");
        c.settle(Duration::from_secs(30))
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        assert!(
            refs.iter()
                .all(|r| !matches!(c.outcome(*r), ClientOutcome::Pending)),
            "seed {seed}"
        );
        c.check_invariants()
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
    }
}

#[test]
fn random_failover_seeds_hold_every_property() {
    let options = RunOptions {
        failover: true,
        ..RunOptions::default()
    };
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicU64::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= SEEDS || !failures.lock().unwrap().is_empty() {
                    return;
                }
                if let Err(f) = run_seed(seed, &options, false) {
                    failures.lock().unwrap().push(f);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|f| f.seed);
    if let Some(f) = failures.first() {
        panic!("{f}\nshrunk:\n{}", shrink(f));
    }
    eprintln!("{SEEDS} failover seeds in {:?}", started.elapsed());
}
