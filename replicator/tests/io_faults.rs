//! The in-process half of the fault matrix: I/O errors injected, through the engine's
//! fault-injecting file system, into one node of a cluster on 127.0.0.1 (a primary `p` and a
//! sync follower `a`, quorum `ANY 1 (a)`, policy `block`), under load at `remote_durable`.
//!
//! Every node runs on its own in-memory disk ([`FaultyVfs`]); the faulty one gets its faults at
//! runtime, once the load is acknowledged. Every cell ends with the same checks: each append
//! acknowledged at `remote_durable` is in the primary's and the sync follower's logs with its
//! payload (as far as the nodes still run), their logs are identical up to where both are
//! durable, and the fault either healed without a restart or stopped the node with an error that
//! names the file. A restart is a process restart: the old `Node` is dropped and a new one opens
//! the same disk (page cache intact) with the faults cleared, as after an operator frees space
//! or the device recovers; after an fdatasync EIO a power cut follows, to check that the node
//! told the truth when it called records durable.
//!
//! ENOSPC is a disk that fills up: the byte budget is set to what the disk holds, so bytes already
//! allocated (the active segment) are still written in place and the next segment cannot be
//! made. Each node's data directory also exists, empty, on the real file system (see
//! [`Cell::dir`]).
//!
//! Each cell prints one line, `| role | fault | outcome | evidence | seconds |`, for
//! `docs/fault-tolerance.md`; run with `-- --nocapture` to see them.
//!
//! Not covered here: faults on the real file system (a sealed segment is read through `mmap`
//! there, where a read error is a SIGBUS, not an `Err`), and faults in two nodes at once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logship_engine::io::{FaultConfig, FaultyVfs, Vfs};
use logship_engine::{Lsn, Record};
use logship_replicator::config::NodeConfig;
use logship_replicator::{Commit, DurabilityLevel, Error, Node};

const KEY: &str = "0123456789abcdef0123456789abcdef";
/// Small segments, so that rollovers (ENOSPC) and sealed segments (read EIO) come quickly.
const LOG_SECTION: &str = "[log]\nsegment_size_bytes = 262144\nmax_record_bytes = 65536\n";
/// A scrubber fast enough to keep up with the load and that starts its next pass at once, so
/// that it runs into an unreadable segment and finishes a pass within a cell.
const INTEGRITY_SECTION: &str =
    "[integrity]\nscrub_bytes_per_sec = 268435456\nscrub_pause_ms = 20\n";
/// The primary: `block` with a short commit timeout, quick reconnects to a restarted follower.
const PRIMARY_SECTIONS: &str = "[timeouts]\ncommit_ms = 1000\n[backoff]\ninitial_ms = 20\nmax_ms = 200\n[breaker]\nreset_timeout_ms = 200\n";
/// Appends the load keeps waiting at once.
const IN_FLIGHT: usize = 16;
/// Payload size of the load's records: about 280 records per segment.
const PAYLOAD_BYTES: usize = 900;
/// Bound on every wait of a cell.
const WAIT: Duration = Duration::from_secs(10);
/// Bound on the first acknowledgements after a restart (a reconnect takes well under a second).
const RESUME_WAIT: Duration = Duration::from_secs(5);
/// Acknowledgements that show the cluster serves again.
const RESUMED_ACKS: u64 = 200;

/// One cell of the matrix: its name, its clock, and a temporary directory for the key file (the
/// logs live on in-memory disks).
struct Cell {
    tmp: tempfile::TempDir,
    started: Instant,
    role: &'static str,
    fault: &'static str,
}

impl Cell {
    fn new(role: &'static str, fault: &'static str) -> Cell {
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::write(tmp.path().join("key"), KEY).expect("key file");
        Cell {
            tmp,
            started: Instant::now(),
            role,
            fault,
        }
    }

    fn key_file(&self) -> PathBuf {
        self.tmp.path().join("key")
    }

    /// Node `name`'s data directory: its log's directory on its in-memory disk, and an empty
    /// directory of the same path on the real file system, where the node keeps its own files
    /// (the start-gate marker is written with `std::fs`, not through `log_vfs`; see
    /// [`a_primary_whose_data_dir_exists_only_on_its_log_vfs_starts`]).
    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("data dir");
        dir
    }

    /// Prints the cell's line of the matrix, with paths relative to the temporary directory.
    fn report(&self, outcome: &str, evidence: &str) {
        let evidence = evidence.replace(&format!("{}/", self.tmp.path().display()), "");
        println!(
            "| {} | {} | {outcome} | {evidence} | {:.1} |",
            self.role,
            self.fault,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Follower `name` on `disk` (log in `/<name>`), listening for its primary at `addr`.
    fn follower(&self, disk: &FaultyVfs, name: &str, addr: SocketAddr) -> Node {
        let text = format!(
            "[node]\nid = \"{name}\"\nrole = \"follower\"\ncluster_id = \"io\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\nlisten_replication = \"{addr}\"\nlisten_http = \"127.0.0.1:0\"\n{LOG_SECTION}{INTEGRITY_SECTION}",
            self.key_file().display(),
            self.dir(name).display()
        );
        start(&text, disk)
    }

    /// The primary on `disk` (log in `/p`), with sync follower `a` and any others.
    fn primary(&self, disk: &FaultyVfs, followers: &[(&str, SocketAddr, &str)]) -> Node {
        let list: Vec<String> = followers
            .iter()
            .map(|(n, a, m)| format!("{{ name = \"{n}\", addr = \"{a}\", mode = \"{m}\" }}"))
            .collect();
        let text = format!(
            "[node]\nid = \"p\"\nrole = \"primary\"\ncluster_id = \"io\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\nlisten_http = \"127.0.0.1:0\"\n[replication]\nquorum = \"ANY 1 (a)\"\nfollowers = [{}]\n{LOG_SECTION}{INTEGRITY_SECTION}{PRIMARY_SECTIONS}",
            self.key_file().display(),
            self.dir("p").display(),
            list.join(", ")
        );
        start(&text, disk)
    }
}

/// Starts a node whose log runs on a fresh process handle of `disk`.
fn start(text: &str, disk: &FaultyVfs) -> Node {
    let mut config = NodeConfig::parse(text).expect("config parses");
    config.log_vfs = Some(Arc::new(disk.process()));
    Node::start(config).expect("node starts")
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn faults(f: impl FnOnce(&mut FaultConfig)) -> FaultConfig {
    let mut config = FaultConfig::default();
    f(&mut config);
    config
}

/// Polls `f` until it holds; past [`WAIT`], fails with what `nodes` say about themselves.
fn wait_until(what: &str, nodes: &[&Node], mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > WAIT {
            let states: Vec<String> = nodes.iter().map(|n| describe(n)).collect();
            panic!(
                "timed out after {WAIT:?} waiting for {what}:\n{}",
                states.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A node's state in one paragraph, for a failed wait.
fn describe(node: &Node) -> String {
    let s = node.status();
    let mut out = format!(
        "{}: last {} durable {} waiting {} failure {:?}",
        s.node_id,
        s.last_lsn,
        s.durable_lsn,
        s.waiting_appends,
        node.failure()
    );
    if let Some(p) = &s.primary {
        out += &format!(
            "; serving {} quorum_available {} commit {:?} rejected {:?} refused {:?}",
            p.serving, p.quorum_available, p.commit, p.rejected, p.refused_by_peer
        );
        for f in &p.followers {
            out += &format!(
                "\n  link {}: {:?} healthy {} breaker {} write {} durable {} error {:?}",
                f.name, f.phase, f.healthy, f.breaker, f.write_lsn, f.durable_lsn, f.last_error
            );
        }
    }
    if let Some(f) = &s.follower {
        out += &format!(
            "; connected {} write {} durable {} rejected {:?}",
            f.connected, f.write_lsn, f.durable_lsn, f.rejected
        );
    }
    out
}

/// What the load thread saw: acknowledgements in LSN order, and failures by kind.
#[derive(Debug, Default)]
struct Tally {
    acked: AtomicU64,
    poisoned: AtomicU64,
    quorum_unavailable: AtomicU64,
    other: AtomicU64,
    /// An append was acknowledged after the wait of an earlier one (in LSN order) failed
    /// `Poisoned`.
    acked_after_poison: AtomicBool,
}

impl Tally {
    fn get(n: &AtomicU64) -> u64 {
        n.load(Ordering::Relaxed)
    }
}

/// The load's outcome.
#[derive(Debug, Default)]
struct Load {
    acked: Vec<(Lsn, Bytes)>,
    /// The first failure of each kind, as the caller saw it.
    errors: Vec<String>,
}

fn payload(tag: &str, i: u64) -> Bytes {
    let mut p = format!("{tag}-{i:08}-").into_bytes();
    p.resize(PAYLOAD_BYTES, b'a' + (i % 26) as u8);
    Bytes::from(p)
}

/// Appends at `remote_durable`, `IN_FLIGHT` at a time, waiting in LSN order, until `stop`;
/// then waits for what is in flight.
fn run_load(p: &Node, tag: &str, stop: &AtomicBool, tally: &Tally) -> Load {
    let mut load = Load::default();
    let mut in_flight: std::collections::VecDeque<(Commit, Bytes)> = Default::default();
    let mut poisoned = false;
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) || !in_flight.is_empty() {
        if !stop.load(Ordering::Acquire) && in_flight.len() < IN_FLIGHT {
            i += 1;
            let body = payload(tag, i);
            match p.append(body.clone(), DurabilityLevel::RemoteDurable) {
                Ok(c) => in_flight.push_back((c, body)),
                Err(e) => {
                    // No LSN: it says nothing about the order of acknowledgements.
                    note_failure(&mut load, tally, &e);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            continue;
        }
        let (c, body) = in_flight.pop_front().expect("in flight");
        match c.wait() {
            Ok(lsn) => {
                if poisoned {
                    tally.acked_after_poison.store(true, Ordering::Relaxed);
                }
                load.acked.push((lsn, body));
                tally.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => poisoned |= note_failure(&mut load, tally, &e),
        }
    }
    load
}

/// Counts a failed append or wait; true if it was `Poisoned`.
fn note_failure(load: &mut Load, tally: &Tally, e: &Error) -> bool {
    let (counter, kind) = match e {
        Error::Log(logship_engine::Error::Poisoned { .. }) => (&tally.poisoned, "poisoned"),
        Error::QuorumUnavailable { .. } => (&tally.quorum_unavailable, "quorum_unavailable"),
        _ => (&tally.other, "other"),
    };
    if counter.fetch_add(1, Ordering::Relaxed) == 0 {
        load.errors.push(format!("{kind}: {e}"));
    }
    kind == "poisoned"
}

/// Runs `load` on `p` in a thread while `during` runs on this one; stops the load after.
fn with_load<T>(p: &Node, tag: &str, tally: &Tally, during: impl FnOnce() -> T) -> (Load, T) {
    /// Stops the load however `during` ends: a failed assertion must not leave it running.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = s.spawn(|| run_load(p, tag, &stop, tally));
        let out = {
            let _stop = StopOnDrop(&stop);
            during()
        };
        (h.join().expect("load thread"), out)
    })
}

/// Every durable record of `node`'s log, checked dense from LSN 1.
fn records(who: &str, node: &Node) -> Vec<Record> {
    let mut out = Vec::new();
    let reader = node.log().read_from(Lsn::FIRST).expect("reader");
    for r in reader {
        let r = r.unwrap_or_else(|e| panic!("{who}: reading its log: {e}"));
        assert_eq!(r.lsn, Lsn(out.len() as u64 + 1), "{who}: LSNs not dense");
        out.push(r);
    }
    out
}

/// Every acknowledged append is in `held` with its payload.
fn assert_holds(who: &str, held: &[Record], acked: &[(Lsn, Bytes)]) {
    for (lsn, body) in acked {
        let r = held.get(lsn.0 as usize - 1).unwrap_or_else(|| {
            panic!(
                "{who} lost acknowledged LSN {lsn}: it holds 1..={}",
                held.len()
            )
        });
        assert_eq!(&r.payload, body, "{who}: LSN {lsn} holds another payload");
    }
}

/// Waits until `f` has made durable everything `p` has, then checks that both hold every
/// acknowledged append and the same records. Returns the number of records.
fn assert_converged(p: &Node, f: &Node, f_name: &str, acked: &[(Lsn, Bytes)]) -> usize {
    let target = p.log().durable_lsn();
    wait_until("the follower to catch up", &[p, f], || {
        f.log().durable_lsn() >= target
    });
    let (held_p, held_f) = (records("p", p), records(f_name, f));
    assert_holds("p", &held_p, acked);
    assert_holds(f_name, &held_f, acked);
    assert_eq!(held_p.len(), held_f.len(), "p and {f_name} hold as many");
    assert!(held_p == held_f, "p and {f_name} hold different records");
    held_p.len()
}

/// `GET path` on a node's HTTP port: the status code and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code.expect("a status line"), body.trim_end().to_string())
}

/// The segment files of the log in `dir` on `disk`, oldest first.
fn segments(disk: &FaultyVfs, dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<String> = disk
        .list_dir(dir)
        .expect("list the log")
        .into_iter()
        .filter(|n| {
            n.len() == 24 && n.ends_with(".seg") && n[..20].bytes().all(|b| b.is_ascii_digit())
        })
        .collect();
    names.sort();
    names.into_iter().map(|n| dir.join(n)).collect()
}

/// Empty `logship-free-*.tmp` files in `dir`: spare segments that could not be made.
fn temp_files(disk: &FaultyVfs, dir: &Path) -> usize {
    let names = disk.list_dir(dir).expect("list the log");
    let temp = |n: &&String| n.starts_with("logship-free-") && n.ends_with(".tmp");
    names.iter().filter(temp).count()
}

/// Evidence about temporary files left by a fail-stop and removed by the restart, if any.
fn temp_evidence(left: usize, restarted: &Node) -> String {
    if left == 0 {
        return String::new();
    }
    let removed = restarted.log().recovery_report().temp_files_removed;
    format!("; {left} logship-free-*.tmp files left by failed spare preparations, {removed} removed at restart")
}

/// The primary's view of follower `i` (configuration order).
fn link(p: &Node, i: usize) -> logship_replicator::status::FollowerStatus {
    p.status().primary.expect("a primary").followers[i].clone()
}

/// Checks that a fail-stop's cause names a file of the node's log and the error.
#[track_caller]
fn assert_names_file(cause: &str, dir: &Path, expect: &str) {
    let dir = format!("{}/", dir.display());
    assert!(
        cause.contains(&dir) && cause.contains(expect),
        "the cause should name the file under {dir} and {expect:?}: {cause}"
    );
}

/// Checks `/health/live`: 503 with the cause.
#[track_caller]
fn assert_not_live(node: &Node, cause: &str) {
    let (code, body) = http_get(node.http_addr().expect("http"), "/health/live");
    assert_eq!(code, 503, "/health/live of a poisoned node: {body}");
    assert!(body.contains(cause), "/health/live names the cause: {body}");
}

/// Polls `f` for up to `bound`; true if it held.
fn wait_for(bound: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > bound {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Load on the (restarted) cluster until [`RESUMED_ACKS`] appends are acknowledged at
/// `remote_durable`. If they are not within [`RESUME_WAIT`], the cell's line says so and the
/// cell fails: a restart with the fault gone must bring the cluster back.
fn resume(cell: &Cell, p: &Node, a: &Node, evidence: &str) -> Load {
    let tally = Tally::default();
    let (load, served) = with_load(p, "after", &tally, || {
        wait_for(RESUME_WAIT, || Tally::get(&tally.acked) >= RESUMED_ACKS)
    });
    if !served {
        let why = link(p, 0).last_error.unwrap_or_default();
        let failures = &load.errors;
        cell.report(
            "BUG: no remote_durable ack after the restart",
            &format!("{evidence}; restart (faults cleared): {} acks in {RESUME_WAIT:?}, {failures:?}, link to a: `{why}`", Tally::get(&tally.acked)),
        );
        panic!(
            "after the restart, {} appends acknowledged at remote_durable in {RESUME_WAIT:?}:\n{}\n{}",
            Tally::get(&tally.acked),
            describe(p),
            describe(a)
        );
    }
    load
}

/// Reads `node`'s whole durable log: the records read before an error, and the error.
fn read_all(node: &Node) -> (u64, Option<String>) {
    let mut n = 0;
    for r in node.log().read_from(Lsn::FIRST).expect("reader") {
        match r {
            Ok(_) => n += 1,
            Err(e) => return (n, Some(e.to_string())),
        }
    }
    (n, None)
}

/// A power cut on `disk` right after `node` made its log durable: reopened by `restart`, the
/// node must still hold every record it had made durable, from its own disk, before any peer
/// sends it anything. The cell's line says how that went; the cell fails if it did not.
fn power_loss(
    cell: &Cell,
    evidence: &mut String,
    (node, disk): (Node, &FaultyVfs),
    restart: impl FnOnce() -> Node,
) -> Node {
    let made_durable = node.log().durable_lsn();
    drop(node);
    disk.crash();
    let node = restart();
    let (read, error) = read_all(&node);
    let report = node.log().recovery_report().clone();
    let salvaged: Vec<String> = (report.salvaged.iter())
        .map(|s| logship_engine::Error::from(s.corruption.clone()).to_string())
        .collect();
    *evidence += &format!(
        "; then a power cut: reopened with LSNs 1..={} (of {made_durable} made durable), salvaged {salvaged:?}, {read} records readable",
        report.last_lsn
    );
    if let Some(e) = &error {
        *evidence += &format!(", then `{e}`");
    }
    let kept = read >= made_durable.0 && error.is_none() && salvaged.is_empty();
    if !kept {
        cell.report(
            "BUG: records made durable lost at a later power cut",
            evidence,
        );
        panic!(
            "{} lost records it had made durable and acknowledged: {evidence}",
            cell.role
        );
    }
    node
}

/// A sync follower's fail-stop, as the cluster saw it.
#[derive(Debug)]
struct FollowerStop {
    cause: String,
    frozen: Lsn,
    timeouts: u64,
}

/// Under load, `fault` hits the sync follower's disk: its log is poisoned, it stops
/// acknowledging, and the primary, under `block`, fails `remote_durable` appends with
/// `QuorumUnavailable` and reports the quorum unavailable, while it still serves `local`.
fn poison_follower(p: &Node, a: &Node, ad: &FaultyVfs, fault: impl Fault) -> (Load, FollowerStop) {
    let tally = Tally::default();
    let (load, (cause, frozen)) = with_load(p, "before", &tally, || {
        wait_until("the load to be acknowledged", &[p, a], || {
            Tally::get(&tally.acked) >= 300
        });
        ad.set_faults(fault(ad));
        wait_until("a's log to be poisoned", &[p, a], || a.failure().is_some());
        let frozen = a.log().durable_lsn();
        wait_until("a remote_durable append to time out", &[p, a], || {
            Tally::get(&tally.quorum_unavailable) > 0
        });
        wait_until("p to report the quorum unavailable", &[p, a], || {
            !p.status().primary.expect("a primary").quorum_available
        });
        let local = p.append(Bytes::from_static(b"local, a down"), DurabilityLevel::Local);
        local
            .and_then(Commit::wait)
            .expect("p still serves `local`");
        (a.failure().expect("poisoned"), frozen)
    });
    assert_eq!(
        a.log().durable_lsn(),
        frozen,
        "a's poisoned log made more durable"
    );
    let seen = link(p, 0);
    assert!(
        seen.durable_lsn <= frozen.0,
        "a acknowledged what it does not hold durably (it holds {frozen}): {seen:?}"
    );
    assert_eq!(Tally::get(&tally.poisoned), 0, "{:?}", load.errors);
    let timeouts = Tally::get(&tally.quorum_unavailable);
    (
        load,
        FollowerStop {
            cause,
            frozen,
            timeouts,
        },
    )
}

/// The sync follower's disk fails under load (`fault`); it fail-stops with an error naming the
/// file; restarted with the fault gone, it catches up and nothing acknowledged is lost. With
/// `then_power_cut`, a power cut follows, after which it must still hold what it made durable.
fn sync_follower_fail_stop(
    fault_name: &'static str,
    fault: impl Fault,
    expect: &str,
    then_power_cut: bool,
) {
    let cell = Cell::new("sync follower", fault_name);
    let (pd, ad) = (FaultyVfs::new(1), FaultyVfs::new(2));
    let a = cell.follower(&ad, "a", any_port());
    let a_addr = a.replication_addr().expect("bound");
    let p = cell.primary(&pd, &[("a", a_addr, "sync")]);
    let (before, stop) = poison_follower(&p, &a, &ad, fault);
    assert_names_file(&stop.cause, &cell.dir("a"), expect);
    assert_not_live(&a, &stop.cause);
    assert_holds("a (poisoned)", &records("a", &a), &before.acked);
    let mut evidence = format!(
        "a: `{}`, durable frozen at LSN {}, /health/live 503; p: quorum_available=false, {} remote_durable appends QuorumUnavailable after commit_ms, `local` served",
        stop.cause, stop.frozen, stop.timeouts
    );
    let left = temp_files(&ad, &cell.dir("a"));
    drop(a);
    ad.set_faults(FaultConfig::default());
    let a = cell.follower(&ad, "a", a_addr);
    evidence += &temp_evidence(left, &a);
    let after = resume(&cell, &p, &a, &evidence);
    let acked = [before.acked, after.acked].concat();
    let held = assert_converged(&p, &a, "a", &acked);
    evidence += &format!(
        "; restart (faults cleared): caught up, {} acked records held by p and a, logs identical ({held} records)",
        acked.len()
    );
    if then_power_cut {
        let a = power_loss(&cell, &mut evidence, (a, &ad), || {
            cell.follower(&ad, "a", a_addr)
        });
        assert_converged(&p, &a, "a", &acked);
    }
    cell.report("fail-stop; restart catches up", &evidence);
}

/// The primary's disk fails under load (`fault`): it fail-stops with an error naming the file,
/// its waiting appends fail `Poisoned`, and the sync follower holds every acknowledged record;
/// restarted with the fault gone, it serves again with all of them. With `then_power_cut`, a
/// power cut follows, after which it must still hold what it made durable.
fn primary_fail_stop(
    fault_name: &'static str,
    fault: impl Fault,
    expect: &str,
    then_power_cut: bool,
) {
    let cell = Cell::new("primary", fault_name);
    let (pd, ad) = (FaultyVfs::new(3), FaultyVfs::new(4));
    let a = cell.follower(&ad, "a", any_port());
    let a_addr = a.replication_addr().expect("bound");
    let p = cell.primary(&pd, &[("a", a_addr, "sync")]);
    let (before, cause, failed) = poison_primary(&p, &a, &pd, fault);
    assert_names_file(&cause, &cell.dir("p"), expect);
    assert_not_live(&p, &cause);
    assert_holds("a", &records("a", &a), &before.acked);
    let mut evidence = format!(
        "p: `{cause}`, /health/live 503; {failed} waiting or later appends failed Poisoned, none acknowledged after; a holds all {} acknowledged",
        before.acked.len()
    );
    let left = temp_files(&pd, &cell.dir("p"));
    drop(p);
    pd.set_faults(FaultConfig::default());
    let p = cell.primary(&pd, &[("a", a_addr, "sync")]);
    evidence += &temp_evidence(left, &p);
    // An append at once, before a can be heard: it must not take an LSN that a holds already
    // (records p sent before its own write failed), or a is refused as diverged for good.
    let body = Bytes::from_static(b"first after restart");
    let first = p.append(body.clone(), DurabilityLevel::Local);
    let first = first.and_then(Commit::wait);
    evidence += &format!("; restart (faults cleared): a `local` append at once: {first:?}");
    let after = resume(&cell, &p, &a, &evidence);
    let first = first.map(|lsn| (lsn, body)).into_iter();
    let acked: Vec<_> = before
        .acked
        .into_iter()
        .chain(first)
        .chain(after.acked)
        .collect();
    let held = assert_converged(&p, &a, "a", &acked);
    evidence += &format!(
        ", then serves; {} acked records held by p and a, logs identical ({held} records)",
        acked.len()
    );
    if then_power_cut {
        let restart = || cell.primary(&pd, &[("a", a_addr, "sync")]);
        let p = power_loss(&cell, &mut evidence, (p, &pd), restart);
        assert_converged(&p, &a, "a", &acked);
    }
    cell.report("fail-stop; restart serves", &evidence);
}

/// Under load, `fault` hits the primary's disk: its log is poisoned, every waiting and later
/// append fails `Poisoned`, and nothing is acknowledged after the first failure. Returns the
/// load, the cause and the number of failed appends.
fn poison_primary(p: &Node, a: &Node, pd: &FaultyVfs, fault: impl Fault) -> (Load, String, u64) {
    let tally = Tally::default();
    let (load, cause) = with_load(p, "before", &tally, || {
        wait_until("the load to be acknowledged", &[p, a], || {
            Tally::get(&tally.acked) >= 300
        });
        pd.set_faults(fault(pd));
        wait_until("p's log to be poisoned", &[p, a], || p.failure().is_some());
        wait_until("an append to fail Poisoned", &[p, a], || {
            Tally::get(&tally.poisoned) > 0
        });
        p.failure().expect("poisoned")
    });
    assert!(
        !tally.acked_after_poison.load(Ordering::Relaxed),
        "an append was acknowledged after an earlier one failed Poisoned"
    );
    let (unavailable, other) = (
        Tally::get(&tally.quorum_unavailable),
        Tally::get(&tally.other),
    );
    assert_eq!(
        (unavailable, other),
        (0, 0),
        "every failure is Poisoned: {:?}",
        load.errors
    );
    let refused = p.append(Bytes::from_static(b"after"), DurabilityLevel::Local);
    assert!(
        matches!(
            refused,
            Err(Error::Log(logship_engine::Error::Poisoned { .. }))
        ),
        "a later append: {refused:?}"
    );
    (load, cause, Tally::get(&tally.poisoned))
}

/// A fault to inject, made from the disk's state when it is injected.
trait Fault: FnOnce(&FaultyVfs) -> FaultConfig {}
impl<F: FnOnce(&FaultyVfs) -> FaultConfig> Fault for F {}

fn eio_writes(_: &FaultyVfs) -> FaultConfig {
    faults(|f| f.fail_write_after = Some(1))
}

fn eio_syncs(_: &FaultyVfs) -> FaultConfig {
    faults(|f| f.fail_sync_after = Some(1))
}

/// The disk is full from now on: what is allocated can be overwritten, nothing can grow.
fn disk_full(disk: &FaultyVfs) -> FaultConfig {
    faults(|f| f.enospc_after_bytes = Some(disk.used_bytes()))
}

#[test]
fn sync_follower_write_eio_fails_stop_and_catches_up_after_restart() {
    sync_follower_fail_stop("write EIO", eio_writes, "Input/output error", false);
}

/// The restart is a process restart (the page cache keeps what the failed fdatasync did not
/// write); a power cut then shows whether the follower told the truth about durability.
#[test]
fn sync_follower_fdatasync_eio_fails_stop_and_keeps_what_it_made_durable() {
    sync_follower_fail_stop("fdatasync EIO", eio_syncs, "Input/output error", true);
}

/// "A follower whose disk fills up already behaves well: keep it that way, with a test."
#[test]
fn sync_follower_with_a_full_disk_fails_stop_and_catches_up_once_space_is_freed() {
    sync_follower_fail_stop("ENOSPC", disk_full, "No space left on device", false);
}

/// Also guards the restart: the primary sent the batch whose write failed to `a` first, so `a`
/// holds LSNs the primary's log lacks; the restarted primary, asked for an append at once, must
/// not give one of them to another record (`a` would be refused as diverged for good).
#[test]
fn primary_write_eio_fails_waiting_appends_and_serves_after_restart() {
    primary_fail_stop("write EIO", eio_writes, "Input/output error", false);
}

#[test]
fn primary_fdatasync_eio_fails_waiting_appends_and_keeps_what_it_made_durable() {
    primary_fail_stop("fdatasync EIO", eio_syncs, "Input/output error", true);
}

#[test]
fn primary_with_a_full_disk_fails_waiting_appends_and_serves_after_restart() {
    primary_fail_stop("ENOSPC", disk_full, "No space left on device", false);
}

/// A sealed segment of the sync follower becomes unreadable under load (bad sectors): reads of
/// it fail with an error naming it, never a record; the scrubber takes it for damage, and the
/// node replaces it with the primary's copy, written to new blocks, which read fine.
/// Replication goes on throughout.
#[test]
fn sync_follower_read_eio_on_a_sealed_segment_is_repaired_from_the_primary() {
    let cell = Cell::new("sync follower", "read EIO, sealed segment");
    let (pd, ad) = (FaultyVfs::new(5), FaultyVfs::new(6));
    let a = cell.follower(&ad, "a", any_port());
    let p = cell.primary(&pd, &[("a", a.replication_addr().expect("bound"), "sync")]);
    let tally = Tally::default();
    let nodes = [&p, &a];
    let (load, (read_error, during)) = with_load(&p, "load", &tally, || {
        wait_until("two sealed segments on a", &nodes, || {
            segments(&ad, &cell.dir("a")).len() >= 3
        });
        let bad = segments(&ad, &cell.dir("a"))[0].clone();
        ad.set_faults(faults(|f| f.fail_reads_of = Some(bad.clone())));
        let at_fault = Tally::get(&tally.acked);
        let read_error = read_during_repair(&a, &bad);
        wait_until("the unreadable segment repaired", &nodes, || {
            a.status().integrity.repairs >= 1
        });
        assert!(a.status().integrity.corruptions_found_by_scrub >= 1);
        assert!(a.log().damaged_segments().is_empty());
        assert!(
            a.failure().is_none(),
            "a read error does not poison the log"
        );
        wait_until("acks after the repair", &nodes, || {
            Tally::get(&tally.acked) >= at_fault + 200
        });
        (read_error, Tally::get(&tally.acked) - at_fault)
    });
    // The old blocks stay unreadable; the repaired file is a new one.
    assert_eq!(read_all(&a).1, None, "the repaired log reads whole");
    let failed = Tally::get(&tally.quorum_unavailable)
        + Tally::get(&tally.other)
        + Tally::get(&tally.poisoned);
    assert_eq!(failed, 0, "{:?}", load.errors);
    let held = assert_converged(&p, &a, "a", &load.acked);
    let i = a.status().integrity;
    cell.report(
        "found by the scrubber, repaired from the primary, no restart",
        &format!(
            "client read while unreadable: `{read_error}`; {} read faults; scrubber damage {}, repairs {}; {during} appends acknowledged meanwhile, none failed; {} acked records held by p and a, logs identical ({held} records)",
            ad.read_faults(),
            i.corruptions_found_by_scrub,
            i.repairs,
            load.acked.len()
        ),
    );
}

/// Reads `node`'s log while its segment `bad` is unreadable: an error naming it (an I/O error,
/// or the corruption the scrubber marked it with), never a record from it; or, if the repair
/// already happened, the whole log.
fn read_during_repair(node: &Node, bad: &Path) -> String {
    match read_all(node) {
        (_, Some(e)) => {
            assert!(e.contains(&bad.display().to_string()), "{e}");
            e
        }
        (_, None) => {
            assert!(
                node.status().integrity.repairs >= 1,
                "an unreadable segment read fine"
            );
            "(repaired before the read)".into()
        }
    }
}

/// A sealed segment of the primary becomes unreadable (bad sectors) while an async follower
/// must catch up from it: reads and the catch-up fail with an error naming the file (never a
/// record from it), the scrubber takes it for damage, the primary replaces it with the sync
/// follower's copy, and the async follower catches up from the repaired file.
#[test]
fn primary_read_eio_on_a_sealed_segment_is_repaired_from_its_sync_follower() {
    let cell = Cell::new("primary", "read EIO, sealed segment");
    let (pd, ad, bd) = (FaultyVfs::new(7), FaultyVfs::new(8), FaultyVfs::new(9));
    let a = cell.follower(&ad, "a", any_port());
    // b has an empty log and an address, and is down until the primary must read for it.
    let b = cell.follower(&bd, "b", any_port());
    let b_addr = b.replication_addr().expect("bound");
    drop(b);
    let peers = [
        ("a", a.replication_addr().expect("bound"), "sync"),
        ("b", b_addr, "async"),
    ];
    let p = cell.primary(&pd, &peers);
    let tally = Tally::default();
    let (load, (b, read_error, during)) = with_load(&p, "load", &tally, || {
        wait_until("two sealed segments on p", &[&p, &a], || {
            segments(&pd, &cell.dir("p")).len() >= 3
        });
        let bad = segments(&pd, &cell.dir("p"))[0].clone();
        pd.set_faults(faults(|f| f.fail_reads_of = Some(bad.clone())));
        let at_fault = Tally::get(&tally.acked);
        let read_error = read_during_repair(&p, &bad);
        let b = cell.follower(&bd, "b", b_addr);
        let nodes = [&p, &a, &b];
        wait_until("the unreadable segment repaired", &nodes, || {
            p.status().integrity.repairs >= 1
        });
        assert!(p.status().integrity.corruptions_found_by_scrub >= 1);
        assert!(
            p.failure().is_none(),
            "a read error does not poison the log"
        );
        wait_until("acks after the repair", &nodes, || {
            Tally::get(&tally.acked) >= at_fault + 200
        });
        (b, read_error, Tally::get(&tally.acked) - at_fault)
    });
    let failed = Tally::get(&tally.quorum_unavailable)
        + Tally::get(&tally.other)
        + Tally::get(&tally.poisoned);
    assert_eq!(failed, 0, "{:?}", load.errors);
    let held = assert_converged(&p, &a, "a", &load.acked);
    assert_converged(&p, &b, "b", &load.acked);
    let i = p.status().integrity;
    cell.report(
        "found by the scrubber, repaired from the sync follower, no restart",
        &format!(
            "client read while unreadable: `{read_error}`; scrubber damage {}, repairs {}; async b caught up from the repaired file; sync a streamed on: {during} appends acknowledged meanwhile, none failed; {} acked records held by p, a and b, logs identical ({held} records)",
            i.corruptions_found_by_scrub,
            i.repairs,
            load.acked.len()
        ),
    );
}

/// An embedded node keeps its state on the file system it was given: a primary whose data
/// directory exists only on its `log_vfs` starts, its start gate closed (a new log).
#[test]
fn a_primary_whose_data_dir_exists_only_on_its_log_vfs_starts() {
    let cell = Cell::new("primary", "none");
    let text = format!(
        "[node]\nid = \"p\"\nrole = \"primary\"\ncluster_id = \"io\"\nkey_file = \"{}\"\ndata_dir = \"/in-memory-only/p\"\n[replication]\nfollowers = [{{ name = \"a\", addr = \"127.0.0.1:9\", mode = \"sync\" }}]\n{LOG_SECTION}",
        cell.key_file().display()
    );
    let mut config = NodeConfig::parse(&text).expect("config parses");
    config.log_vfs = Some(Arc::new(FaultyVfs::new(10)));
    let started = Node::start(config);
    assert!(started.is_ok(), "{:?}", started.err());
}
