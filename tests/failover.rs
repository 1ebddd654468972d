//! Failover on real processes: three `logship node` children that elect their primary, on
//! 127.0.0.2-4 inside a network namespace the test creates (tests/common/elected.rs), under
//! `logship load --durability remote_durable --acked FILE` following the primary. Faults are
//! real signals: SIGKILL of the primary, and SIGSTOP past the election timeout then SIGCONT.
//! After each, a checker in the spirit of Jepsen's queue checker reads every node: every
//! acknowledged append is on the final primary exactly once, at its LSN, with its bytes, and no
//! two nodes hold different records below the commit LSN. Lost, duplicated and inconsistent
//! counts must all be zero.
//!
//! Needs root for the namespace; without it each test says it was skipped, and why.

// unshare(2) and geteuid(2), for the test thread's own network namespace.
#![allow(unsafe_code)]

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/elected.rs"]
mod elected;

use std::time::{Duration, Instant};

use elected::{check, enter_private_netns, have_iptables, iptables, say, Elected, Verdict};

/// How long an election may take: the longest election timeout (2 s), a pre-vote and a vote
/// round, and slack for a busy machine.
const ELECTION_BOUND: Duration = Duration::from_secs(15);

fn skip(test: &str) -> bool {
    match enter_private_netns() {
        Ok(()) => false,
        Err(why) => {
            say(&format!("{test}: skipped: {why}"));
            true
        }
    }
}

/// Waits until every member holds the primary's last LSN; returns the records of all.
fn converge(c: &Elected, primary: usize) -> Vec<std::collections::BTreeMap<u64, (u64, u32)>> {
    let start = Instant::now();
    loop {
        let all: Vec<_> = (0..c.members.len()).map(|i| c.records(i)).collect();
        let last = |m: &std::collections::BTreeMap<u64, (u64, u32)>| m.keys().next_back().copied();
        if all.iter().all(|m| last(m) == last(&all[primary])) {
            return all;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the nodes did not converge\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until member `i` is a follower in epoch `epoch` or later; returns how long that took.
fn follows(c: &Elected, i: usize, epoch: u64, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        if c.status(i)
            .is_some_and(|s| s.primary.is_none() && s.epoch >= epoch)
        {
            return start.elapsed();
        }
        assert!(start.elapsed() < ELECTION_BOUND, "{what}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn verdict(c: &Elected, acked: &std::path::Path, primary: usize) -> Verdict {
    let all = converge(c, primary);
    let others: Vec<_> = (0..all.len())
        .filter(|i| *i != primary)
        .map(|i| all[i].clone())
        .collect();
    let commit = c
        .status(primary)
        .and_then(|s| s.primary)
        .map_or(0, |p| p.commit.remote_durable);
    let v = check(acked, &all[primary], &others, commit);
    say(&format!(
        "checker: {v:?}, final primary n{}, {} records",
        primary + 1,
        all[primary].len()
    ));
    v
}

#[test]
fn a_killed_primary_is_replaced_and_rejoins_with_nothing_acknowledged_lost() {
    if skip("a_killed_primary_is_replaced_and_rejoins_with_nothing_acknowledged_lost") {
        return;
    }
    let mut c = Elected::start(3, "ANY 1");
    let (first, e1, took) = c.wait_primary(0, ELECTION_BOUND);
    say(&format!(
        "n{} elected in epoch {e1} after {took:?}",
        first + 1
    ));
    let acked = c.dir.path().join("acked.txt");
    // The 4 clients on 2 driver threads: a driven connection follows the failover too.
    c.start_load_with(8.0, &acked, &["--drivers", "2"]);
    std::thread::sleep(Duration::from_secs(2));
    c.kill(first);
    let killed = Instant::now();
    let (second, e2, _) = c.wait_primary(e1, ELECTION_BOUND);
    say(&format!(
        "n{} elected in epoch {e2} {:?} after the kill",
        second + 1,
        killed.elapsed()
    ));
    assert_ne!(first, second);
    std::thread::sleep(Duration::from_secs(2));
    c.spawn(first);
    let out = c.finish_load(Duration::from_secs(60));
    say(&out);
    let v = verdict(&c, &acked, second);
    assert!(v.acked > 100, "too few acknowledged to judge: {v:?}\n{out}");
    assert_eq!(
        (v.lost, v.duplicated, v.inconsistent),
        (0, 0, 0),
        "{v:?}\n{}",
        c.logs()
    );
    let addrs: Vec<_> = c.members.iter().map(|m| m.client_addr()).collect();
    let (_, found) =
        logship::Client::connect_primary(&addrs[first..=first], Duration::from_secs(2))
            .expect("the old primary sends a client to the new one");
    assert_eq!(
        found,
        c.members[second].client_addr(),
        "the leader hint names the new primary"
    );
    let rejoined = c.status(first).expect("the old primary answers");
    assert!(rejoined.primary.is_none(), "the old primary follows");
    assert_eq!(rejoined.epoch, e2, "the old primary learned the new epoch");
}

#[test]
fn a_paused_primary_steps_down_and_acknowledges_nothing_more() {
    if skip("a_paused_primary_steps_down_and_acknowledges_nothing_more") {
        return;
    }
    let mut c = Elected::start(3, "ANY 1");
    let (first, e1, _) = c.wait_primary(0, ELECTION_BOUND);
    let acked = c.dir.path().join("acked.txt");
    c.start_load(10.0, &acked);
    std::thread::sleep(Duration::from_secs(2));
    c.signal(first, "-STOP");
    let (second, e2, took) = c.wait_primary(e1, ELECTION_BOUND);
    say(&format!(
        "n{} elected in epoch {e2} {took:?} after the pause",
        second + 1
    ));
    std::thread::sleep(Duration::from_secs(1));
    c.signal(first, "-CONT");
    let took = follows(&c, first, e2, "the resumed primary did not step down");
    say(&format!("the resumed primary stepped down after {took:?}"));
    let out = c.finish_load(Duration::from_secs(60));
    say(&out);
    let v = verdict(&c, &acked, second);
    assert!(v.acked > 100, "too few acknowledged to judge: {v:?}\n{out}");
    assert_eq!(
        (v.lost, v.duplicated, v.inconsistent),
        (0, 0, 0),
        "{v:?}\n{}",
        c.logs()
    );
}

/// Cuts member `i` off with iptables rules inside the test's namespace: its own packets
/// dropped (one way), and packets to it too unless `one_way`; runs the load through the
/// partition, heals, and checks.
fn partition_the_primary(one_way: bool) {
    let mut c = Elected::start(3, "ANY 1");
    let (first, e1, _) = c.wait_primary(0, ELECTION_BOUND);
    let acked = c.dir.path().join("acked.txt");
    c.start_load(12.0, &acked);
    std::thread::sleep(Duration::from_secs(2));
    let ip = c.members[first].ip.clone();
    iptables(&["-A", "OUTPUT", "-s", &ip, "-j", "DROP"]);
    if !one_way {
        iptables(&["-A", "OUTPUT", "-d", &ip, "-j", "DROP"]);
    }
    let cut = Instant::now();
    let (second, e2, _) = c.wait_primary(e1, ELECTION_BOUND);
    say(&format!(
        "cut off n{} (one way: {one_way}); n{} elected in epoch {e2} {:?} after",
        first + 1,
        second + 1,
        cut.elapsed()
    ));
    std::thread::sleep(Duration::from_secs(4));
    iptables(&["-F", "OUTPUT"]);
    follows(
        &c,
        first,
        e2,
        "the cut-off primary did not rejoin as a follower",
    );
    let out = c.finish_load(Duration::from_secs(60));
    say(&out);
    let (last, _, _) = c.wait_primary(0, ELECTION_BOUND);
    let v = verdict(&c, &acked, last);
    if let Some(s) = c.status(first) {
        say(&format!(
            "the cut-off primary kept {} divergent records in {:?}",
            s.divergent_records, s.divergent_files
        ));
        assert_eq!(s.divergent_records > 0, !s.divergent_files.is_empty());
    }
    assert!(v.acked > 100, "too few acknowledged to judge: {v:?}\n{out}");
    assert_eq!(
        (v.lost, v.duplicated, v.inconsistent),
        (0, 0, 0),
        "{v:?}\n{}",
        c.logs()
    );
}

#[test]
fn a_primary_cut_off_both_ways_is_replaced_and_rejoins() {
    if skip("a_primary_cut_off_both_ways_is_replaced_and_rejoins") {
        return;
    }
    if !have_iptables() {
        return say("a_primary_cut_off_both_ways_is_replaced_and_rejoins: skipped: iptables is not installed");
    }
    partition_the_primary(false);
}

#[test]
fn a_primary_whose_packets_are_dropped_one_way_is_replaced_and_rejoins() {
    if skip("a_primary_whose_packets_are_dropped_one_way_is_replaced_and_rejoins") {
        return;
    }
    if !have_iptables() {
        return say("a_primary_whose_packets_are_dropped_one_way_is_replaced_and_rejoins: skipped: iptables is not installed");
    }
    partition_the_primary(true);
}
