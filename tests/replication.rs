//! Replication end to end with real processes: a primary and followers as `logship node`
//! children on 127.0.0.1 (tests/common/cluster.rs), load from `logship load`, faults made with
//! real signals (SIGKILL, SIGSTOP/SIGCONT) and raw TCP connections, and checks through the
//! client port, `logship status` and the HTTP endpoints.
//!
//! The tests run one at a time (they measure timing against short timeouts, which a machine
//! busy with another cluster would blur); each bounds every wait and kills every child it
//! started. A failing test prints the tail of each node's log.

#[path = "common/cluster.rs"]
mod cluster;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cluster::{
    args, metric, poll_until, run, wait_until, Cluster, FollowerSpec, Proc, Spec, COMMIT_MS,
    PRIMARY,
};
use logship::replication::protocol::auth::NONCE_LEN;
use logship::replication::protocol::frame::{self, FrameDecoder, DEFAULT_MAX_BODY_BYTES};
use logship::replication::protocol::msg::kind;
use logship::replication::protocol::{Msg, RejectCode};
use logship::replication::Error;
use logship::{Bytes, DurabilityLevel, Epoch, Lsn, NodeStatus, Record};

/// Bound on a cluster converging, a follower catching up or a metric changing.
const BOUND: Duration = Duration::from_secs(20);
/// Bound on a refused follower's sessions being counted (the primary retries every few
/// hundred milliseconds).
const REJECT_BOUND: Duration = Duration::from_secs(5);
/// Bound on a `logship load` run beyond its `--duration`.
const LOAD_SLACK: Duration = Duration::from_secs(30);

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the file's lock while a test runs and prints how long the test took.
struct Serial {
    _lock: MutexGuard<'static, ()>,
    test: &'static str,
    start: Instant,
}

impl Drop for Serial {
    fn drop(&mut self) {
        println!("{}: {:.1} s", self.test, self.start.elapsed().as_secs_f64());
    }
}

/// Runs the tests of this file one at a time; a failed test does not block the others.
fn serial(test: &'static str) -> Serial {
    let lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Serial {
        _lock: lock,
        test,
        start: Instant::now(),
    }
}

fn sync(name: &str) -> FollowerSpec {
    FollowerSpec::sync(name)
}

/// `logship load --addr <primary's client port> <extra>` arguments.
fn load_args(c: &Cluster, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["load", "--addr", &c.node(PRIMARY).client.to_string()]);
    a.extend(args(extra));
    a
}

/// Runs `logship load ... --json --duration <secs>` to its end and returns its summary.
fn load_json(c: &Cluster, secs: u64, extra: &[&str]) -> serde_json::Value {
    let d = secs.to_string();
    let mut a = load_args(c, &["--json", "--duration", &d]);
    a.extend(args(extra));
    parse_load(run(&a, Duration::from_secs(secs) + LOAD_SLACK))
}

fn parse_load((code, stdout, stderr): (i32, String, String)) -> serde_json::Value {
    assert_eq!(code, 0, "logship load failed: {stdout} {stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("logship load printed {stdout:?}, not JSON: {e}"))
}

/// The load's error count of `kind`.
fn load_errors(v: &serde_json::Value, kind: &str) -> u64 {
    v["errors"][kind].as_u64().unwrap_or(0)
}

fn payload(tag: &str, i: usize) -> Bytes {
    Bytes::from(format!("{tag}-{i:06}"))
}

/// Appends through the primary's client port, returning the outcome and how long it took.
fn timed_append(
    c: &Cluster,
    level: DurabilityLevel,
    p: Bytes,
) -> (logship::replication::Result<Lsn>, Duration) {
    let mut client = c.client(PRIMARY);
    client
        .set_timeout(Duration::from_secs(10))
        .expect("client timeout");
    let t0 = Instant::now();
    let r = client.append(p, level);
    (r, t0.elapsed())
}

#[track_caller]
fn append_ok(c: &Cluster, level: DurabilityLevel, p: Bytes) -> Lsn {
    let (r, took) = timed_append(c, level, p);
    r.unwrap_or_else(|e| panic!("append at {} failed after {took:?}: {e}", level.as_str()))
}

fn is_quorum_unavailable(r: &logship::replication::Result<Lsn>) -> bool {
    matches!(r, Err(Error::Remote { status, .. }) if status == "quorum_unavailable")
}

fn primary_metric(c: &Cluster, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&c.metrics(PRIMARY), name, labels).unwrap_or(0.0)
}

fn durable_lag(c: &Cluster, follower: &str) -> f64 {
    primary_metric(
        c,
        "logship_follower_lag_records",
        &[("follower", follower), ("level", "durable")],
    )
}

/// `logship status --addr <name's client port> --json`, parsed.
fn status_cli_json(c: &Cluster, name: &str) -> NodeStatus {
    let addr = c.node(name).client.to_string();
    let (code, stdout, stderr) = run(
        &args(&["status", "--addr", &addr, "--json"]),
        Duration::from_secs(10),
    );
    assert_eq!(code, 0, "logship status --json: {stderr}");
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("logship status --json printed {stdout:?}: {e}"))
}

#[test]
fn any_1_of_2_keeps_committing_with_one_follower_down() {
    let _serial = serial("any_1_of_2_keeps_committing_with_one_follower_down");
    let mut c = Cluster::start(&Spec::new("ANY 1 (a, b)", vec![sync("a"), sync("b")]));
    c.wait_healthy(BOUND);
    c.kill("a");
    // Grace period: the primary notices that a is gone (b acknowledges throughout).
    wait_until("the primary to see a down", BOUND, || {
        !c.follower_seen("a").healthy
    });
    let v = load_json(&c, 2, &["--durability", "remote_durable", "--clients", "4"]);
    println!("load with a down: {v}");
    let acked = v["acknowledged"].as_u64().expect("acknowledged count");
    assert!(acked > 0, "nothing acknowledged: {v}");
    assert_eq!(
        load_errors(&v, "quorum_unavailable"),
        0,
        "quorum_unavailable with b up: {v}"
    );
    assert_eq!(
        v["errors"].as_object().map_or(0, |e| e.len()),
        0,
        "errors: {v}"
    );
    let p = c.primary_status();
    assert!(p.quorum_available, "ANY 1 (a, b) with b up: {p:?}");
    let b = c.follower_seen("b");
    assert!(
        b.healthy && b.durable_lsn >= p.commit.remote_durable,
        "b must hold everything committed: commit {} b {b:?}",
        p.commit.remote_durable
    );
    assert!(
        p.commit.remote_durable >= acked,
        "commit LSN {} below {acked} acknowledged appends",
        p.commit.remote_durable
    );
}

#[test]
fn block_policy_fails_with_quorum_unavailable_when_both_are_down() {
    let _serial = serial("block_policy_fails_with_quorum_unavailable_when_both_are_down");
    let mut c = Cluster::start(&Spec::new("ANY 1 (a, b)", vec![sync("a"), sync("b")]));
    c.wait_healthy(BOUND);
    assert_eq!(
        c.http(PRIMARY, "/health/ready").0,
        200,
        "ready with a quorum"
    );
    append_ok(&c, DurabilityLevel::RemoteDurable, payload("before", 0));
    c.kill("a");
    c.kill("b");
    let (r, took) = timed_append(&c, DurabilityLevel::RemoteDurable, payload("lost", 0));
    println!("remote_durable append with both followers down: {r:?} after {took:?}");
    assert!(
        is_quorum_unavailable(&r),
        "expected quorum_unavailable: {r:?}"
    );
    let commit = Duration::from_millis(COMMIT_MS);
    assert!(
        took >= commit.mul_f64(0.9) && took <= commit + Duration::from_secs(2),
        "failed after {took:?}, commit timeout {commit:?}"
    );
    let lsn = append_ok(&c, DurabilityLevel::Local, payload("local", 0));
    assert!(lsn >= Lsn(3), "local append got LSN {lsn}");
    wait_until("/health/ready to answer 503", BOUND, || {
        c.http(PRIMARY, "/health/ready").0 == 503
    });
    assert_eq!(c.http(PRIMARY, "/health/live").0, 200);
    let s = c.status(PRIMARY).expect("primary status");
    assert!(s.quorum_timeouts >= 1, "quorum timeouts not counted: {s:?}");
    assert!(!s.primary.expect("primary").quorum_available);
    // Quorum lost and appends failed for want of it are warnings naming the missing followers.
    // (The primary also says so at its start, before its followers are heard: look after the
    // last "available again".)
    let log = std::fs::read_to_string(&c.node(PRIMARY).log).expect("the primary's log");
    let since = log
        .rfind("sync quorum available again")
        .expect("the quorum was available");
    let warned = |what: &str| {
        log[since..]
            .lines()
            .any(|l| l.contains("WARN") && l.contains(what) && l.contains("a, b"))
    };
    assert!(
        warned("sync quorum unavailable"),
        "no quorum warning:\n{log}"
    );
    assert!(warned("appends failed"), "no failed-append warning:\n{log}");
}

#[test]
fn degrade_policy_falls_back_and_then_recovers() {
    let _serial = serial("degrade_policy_falls_back_and_then_recovers");
    let spec = Spec {
        policy: "degrade",
        degrade_after_ms: Some(500),
        ..Spec::new("ANY 1 (a, b)", vec![sync("a"), sync("b")])
    };
    let mut c = Cluster::start(&spec);
    c.wait_healthy(BOUND);
    let degraded = |c: &Cluster| primary_metric(c, "logship_degraded", &[("node", PRIMARY)]);
    append_ok(&c, DurabilityLevel::RemoteDurable, payload("before", 0));
    assert_eq!(degraded(&c), 0.0);
    c.kill("a");
    c.kill("b");
    let (r, waited) = timed_append(&c, DurabilityLevel::RemoteDurable, payload("first", 0));
    println!("first remote_durable append without followers: {r:?} after {waited:?}");
    r.expect("degrade: the append succeeds at local durability");
    assert!(
        waited >= Duration::from_millis(400),
        "the first append did not wait for degrade_after_ms: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(COMMIT_MS),
        "degraded after the commit timeout: {waited:?}"
    );
    assert_eq!(degraded(&c), 1.0, "{}", c.metrics(PRIMARY));
    for i in 0..20 {
        let (r, took) = timed_append(&c, DurabilityLevel::RemoteDurable, payload("degraded", i));
        r.unwrap_or_else(|e| panic!("degraded append {i}: {e}"));
        assert!(
            took < Duration::from_millis(COMMIT_MS),
            "degraded append {i} waited for the quorum: {took:?}"
        );
    }
    c.spawn("a");
    c.wait_up("a");
    let back = wait_until("logship_degraded to return to 0", BOUND, || {
        degraded(&c) == 0.0
    });
    println!("degraded mode left {back:?} after a restarted");
    let lsn = append_ok(&c, DurabilityLevel::RemoteDurable, payload("after", 0));
    let a = status_cli_json(&c, "a");
    println!(
        "a: last {} durable {}; acknowledged {lsn}",
        a.last_lsn, a.durable_lsn
    );
    assert!(
        a.durable_lsn >= lsn.0,
        "a durable {} < acknowledged {lsn}",
        a.durable_lsn
    );
    assert!(c.follower_seen("a").durable_lsn >= lsn.0);
    assert_eq!(
        primary_metric(&c, "logship_degraded_entered_total", &[]),
        1.0
    );
}

#[test]
fn first_1_uses_b_when_a_is_down() {
    let _serial = serial("first_1_uses_b_when_a_is_down");
    let mut c = Cluster::start(&Spec::new("FIRST 1 (a, b)", vec![sync("a"), sync("b")]));
    c.wait_healthy(BOUND);
    c.kill("a");
    let mut acked = Vec::new();
    for i in 0..50 {
        acked.push(append_ok(
            &c,
            DurabilityLevel::RemoteDurable,
            payload("x", i),
        ));
    }
    let max = acked.iter().max().copied().expect("appends");
    let b = c.follower_seen("b");
    println!(
        "FIRST 1 (a, b) with a down: {} appends up to LSN {max}; b durable {}",
        acked.len(),
        b.durable_lsn
    );
    assert!(
        b.durable_lsn >= max.0,
        "b durable {} < {max}",
        b.durable_lsn
    );
    let own = c.status("b").expect("b status");
    assert!(
        own.durable_lsn >= max.0,
        "b's own durable {}",
        own.durable_lsn
    );
    assert!(!c.follower_seen("a").healthy);
}

/// `LSN CRC` lines of a `--acked` file.
fn read_acked(path: &std::path::Path) -> Vec<(u64, u32)> {
    let text = std::fs::read_to_string(path).expect("read the acked file");
    text.lines()
        .map(|l| {
            let (lsn, crc) = l.split_once(' ').expect("LSN CRC");
            (
                lsn.parse().expect("LSN"),
                u32::from_str_radix(crc, 16).expect("hex CRC"),
            )
        })
        .collect()
}

/// Every acknowledged (LSN, payload CRC) is in `records` with that CRC.
fn check_acked(name: &str, records: &BTreeMap<u64, &Record>, acked: &[(u64, u32)]) {
    for (lsn, crc) in acked {
        let r = records
            .get(lsn)
            .unwrap_or_else(|| panic!("{name} lacks acknowledged LSN {lsn}"));
        assert_eq!(
            crc32fast::hash(&r.payload),
            *crc,
            "{name}: LSN {lsn} holds another payload"
        );
    }
}

/// The same records: LSN, epoch, CRC and payload of each, dense from 1.
fn assert_same_log(name: &str, got: &[Record], want: &[Record]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{name} holds another number of records"
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(w.lsn, Lsn(i as u64 + 1), "the primary's LSNs are not dense");
        let same = g.lsn == w.lsn && g.epoch == w.epoch && g.crc == w.crc && g.payload == w.payload;
        assert!(same, "{name} differs from the primary at LSN {}", w.lsn);
    }
}

#[test]
fn sigkill_a_follower_under_load_and_it_converges() {
    let _serial = serial("sigkill_a_follower_under_load_and_it_converges");
    let mut c = Cluster::start(&Spec::new("ANY 1 (a, b)", vec![sync("a"), sync("b")]));
    c.wait_healthy(BOUND);
    let acked_path = c.dir.path().join("acked.txt");
    let acked_arg = acked_path.display().to_string();
    let load = Proc::spawn(&load_args(
        &c,
        &[
            "--duration",
            "6",
            "--durability",
            "remote_durable",
            "--acked",
            &acked_arg,
            "--json",
        ],
    ));
    std::thread::sleep(Duration::from_secs(2));
    c.kill("b");
    std::thread::sleep(Duration::from_millis(1500));
    c.spawn("b");
    c.wait_up("b");
    let v = parse_load(load.finish(Duration::from_secs(6) + LOAD_SLACK));
    println!("load: {v}");
    let last = c.status(PRIMARY).expect("primary status").last_lsn;
    let took = wait_until(
        "every follower durable at the primary's last LSN",
        BOUND,
        || {
            ["a", "b"].iter().all(|f| {
                c.status(f).is_ok_and(|s| s.durable_lsn == last)
                    && c.follower_seen(f).durable_lsn == last
            })
        },
    );
    let acked = read_acked(&acked_path);
    assert_eq!(
        acked.len() as u64,
        v["acknowledged"].as_u64().expect("acknowledged"),
        "acked file and summary disagree"
    );
    assert!(!acked.is_empty(), "nothing acknowledged: {v}");
    let primary = c.records(PRIMARY);
    assert_eq!(primary.len() as u64, last, "primary records vs last LSN");
    let by_lsn: BTreeMap<u64, &Record> = primary.iter().map(|r| (r.lsn.0, r)).collect();
    check_acked(PRIMARY, &by_lsn, &acked);
    for f in ["a", "b"] {
        let theirs = c.records(f);
        let map: BTreeMap<u64, &Record> = theirs.iter().map(|r| (r.lsn.0, r)).collect();
        check_acked(f, &map, &acked);
        assert_same_log(f, &theirs, &primary);
    }
    println!(
        "converged {took:?} after the load: {} acknowledged records checked; primary, a and b \
         hold the same {last} records (b SIGKILLed and restarted under load; errors {})",
        acked.len(),
        v["errors"]
    );
}

#[test]
fn pipelined_batched_and_driven_load_acknowledges_only_what_the_log_holds() {
    let _serial = serial("pipelined_batched_and_driven_load_acknowledges_only_what_the_log_holds");
    let c = Cluster::start(&Spec::new("ANY 1 (a)", vec![sync("a")]));
    c.wait_healthy(BOUND);
    let mut all = Vec::new();
    for (name, how) in [
        ("pipelined", &["--pipeline", "16"][..]),
        ("batched", &["--batch", "32"][..]),
        // 5 clients on 2 driver threads (3 and 2 connections), 8 in flight each.
        ("driven", &["--drivers", "2", "--pipeline", "8"][..]),
    ] {
        let path = c.dir.path().join(format!("acked-{name}.txt"));
        let acked_arg = path.display().to_string();
        let clients = if name == "driven" { "5" } else { "4" };
        let mut extra = vec!["--clients", clients, "--acked", &acked_arg];
        extra.extend_from_slice(how);
        let v = load_json(&c, 2, &extra);
        println!("{name} load: {v}");
        let acked = read_acked(&path);
        assert!(!acked.is_empty(), "{name}: nothing acknowledged: {v}");
        assert_eq!(
            acked.len() as u64,
            v["acknowledged"].as_u64().expect("acknowledged"),
            "{name}: acked file and summary disagree"
        );
        assert_eq!(
            v["errors"].as_object().map_or(0, |e| e.len()),
            0,
            "{name}: errors: {v}"
        );
        all.extend(acked);
    }
    let primary = c.records(PRIMARY);
    let by_lsn: BTreeMap<u64, &Record> = primary.iter().map(|r| (r.lsn.0, r)).collect();
    check_acked(PRIMARY, &by_lsn, &all);
    let theirs = c.records("a");
    let map: BTreeMap<u64, &Record> = theirs.iter().map(|r| (r.lsn.0, r)).collect();
    check_acked("a", &map, &all);
    let mut lsns: Vec<u64> = all.iter().map(|(l, _)| *l).collect();
    lsns.sort_unstable();
    lsns.dedup();
    assert_eq!(lsns.len(), all.len(), "an LSN acknowledged twice");
}

#[test]
fn wrong_key_or_cluster_id_is_rejected() {
    let _serial = serial("wrong_key_or_cluster_id_is_rejected");
    for (follower, reason) in [
        (sync("a").with_own_key(), "auth_failed"),
        (sync("a").with_cluster_id("other"), "cluster_id"),
    ] {
        let c = Cluster::start(&Spec::new("FIRST 1 (a)", vec![follower]));
        // A primary whose log is new cannot know that its only sync follower holds nothing it
        // lacks: until it has heard from it, it serves no append, not even at local.
        for level in [DurabilityLevel::Local, DurabilityLevel::RemoteDurable] {
            let (r, took) = timed_append(&c, level, payload("refused", 0));
            assert!(
                is_quorum_unavailable(&r),
                "{reason}: expected quorum_unavailable at {}, got {r:?} after {took:?}",
                level.as_str()
            );
        }
        let rejected = |c: &Cluster| {
            primary_metric(c, "logship_sessions_rejected_total", &[("reason", reason)])
        };
        // A wrong cluster id is refused by the follower (it checks the primary's Hello), a
        // wrong key by the primary (it checks the follower's proof first); either way the
        // primary, which an operator watches, must count the refused sessions by reason.
        let a_rejected = |c: &Cluster| {
            let m = c.metrics("a");
            metric(&m, "logship_sessions_rejected_total", &[("reason", reason)]).unwrap_or(0.0)
        };
        let seen = poll_until(REJECT_BOUND, || rejected(&c) > 0.0 || a_rejected(&c) > 0.0);
        assert!(seen.is_some(), "{reason}: no node counted a rejection");
        if poll_until(REJECT_BOUND, || rejected(&c) > 0.0).is_none() {
            let m = c.metrics(PRIMARY);
            let lines: Vec<&str> = m.lines().filter(|l| l.contains("rejected")).collect();
            let seen = c.follower_seen("a");
            panic!(
                "{reason}: the primary's /metrics has no logship_sessions_rejected_total{{reason=\"{reason}\"}} > 0\n\
                 the primary's rejection metrics: {lines:#?}\n\
                 follower a's own logship_sessions_rejected_total{{reason=\"{reason}\"}}: {}\n\
                 the primary's link to a: last_error {:?}, counters {:?}",
                a_rejected(&c),
                seen.last_error,
                seen.counters
            );
        }
        let a = c.status("a").expect("a status");
        let p = c.status(PRIMARY).expect("primary status");
        println!(
            "{reason}: primary rejected {} session(s); primary last LSN {}, a last LSN {}",
            rejected(&c),
            p.last_lsn,
            a.last_lsn
        );
        assert_eq!(a.last_lsn, 0, "{reason}: the follower received records");
        assert_eq!(
            p.last_lsn, 0,
            "{reason}: the primary served before its follower was heard"
        );
        let serving = c.primary_status().serving;
        assert!(
            !serving,
            "{reason}: the primary serves without its sync follower"
        );
    }
}

/// Connects to `addr`, sends `bytes`, and reads until the peer closes; panics if it is still
/// open after `bound`. Returns what the peer sent.
fn send_and_expect_close(addr: SocketAddr, bytes: &[u8], bound: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    // The peer may close before taking everything; that is what is being tested.
    let _ = s.write_all(bytes);
    let deadline = Instant::now() + bound;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return got,
        }
        assert!(
            Instant::now() < deadline,
            "the follower kept the connection open for {bound:?} after {} bytes",
            bytes.len()
        );
    }
}

/// Names of the messages in `bytes` (frames the follower sent back).
fn message_names(bytes: &[u8]) -> Vec<String> {
    let mut d = FrameDecoder::new(DEFAULT_MAX_BODY_BYTES);
    d.push(bytes);
    let mut out = Vec::new();
    while let Ok(Some(f)) = d.next_frame() {
        match Msg::decode(&f) {
            Ok(Msg::Reject { code, message, .. }) => {
                out.push(format!("reject({}: {message})", code.as_str()))
            }
            Ok(m) => out.push(m.name().to_string()),
            Err(e) => out.push(format!("undecodable: {e}")),
        }
    }
    out
}

fn hello() -> Msg {
    Msg::Hello {
        version_min: logship::replication::protocol::msg::PROTOCOL_VERSION,
        version_max: logship::replication::protocol::msg::PROTOCOL_VERSION,
        epoch: Epoch(0),
        last_lsn: Lsn(1),
        nonce: [7; NONCE_LEN],
        cluster_id: cluster::CLUSTER_ID.to_string(),
        node_id: PRIMARY.to_string(),
    }
}

/// The malformed inputs: (what, bytes, counts as a malformed frame).
fn hostile_inputs() -> Vec<(&'static str, Vec<u8>, bool)> {
    let mut garbage = vec![16, 0, 0, 0, 0x99, 0x77, 0x55, 0x33];
    garbage.extend((0..56u8).map(|i| i.wrapping_mul(37)));
    let mut oversized = [0u8; frame::FRAME_HEADER_BYTES];
    oversized[0..4].copy_from_slice(&(1u32 << 30).to_le_bytes());
    oversized[4] = kind::HELLO;
    let mut bad_crc = hello().encode().to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x5a;
    let unknown_kind = frame::encode(200, b"no such message").to_vec();
    let mut record = Vec::new();
    logship::record::encode_into(&mut record, Lsn(1), Epoch(0), b"forged record");
    let records = Msg::Records {
        first: Lsn(1),
        last: Lsn(1),
        commit_lsn: Lsn(1),
        records: Bytes::from(record),
    };
    let mut early = hello().encode().to_vec();
    early.extend_from_slice(&records.encode());
    vec![
        ("garbage", garbage, true),
        ("oversized length header", oversized.to_vec(), true),
        ("bad CRC", bad_crc, true),
        ("unknown kind", unknown_kind, true),
        ("Records before Start", early, false),
    ]
}

/// 200 connections of garbage to follower `a` at `addr` are all counted (`malformed` reads the
/// counter), and its log holds a few summary lines about them, not one line each.
fn garbage_flood_is_logged_as_a_summary(
    c: &Cluster,
    addr: SocketAddr,
    malformed: impl Fn() -> f64,
) {
    let flood = Instant::now();
    let m0 = malformed();
    for _ in 0..200 {
        send_and_expect_close(addr, &[0xff; 64], Duration::from_secs(5));
    }
    wait_until("the flood to be counted", BOUND, || {
        malformed() >= m0 + 200.0
    });
    let log = std::fs::read_to_string(&c.node("a").log).expect("a's log");
    let lines = log
        .lines()
        .filter(|l| l.contains("malformed frame"))
        .count();
    let bound = 2 + (flood.elapsed().as_secs() / 10) as usize + hostile_inputs().len();
    println!("{lines} log lines about {} malformed frames", m0 + 200.0);
    assert!(
        lines <= bound,
        "{lines} lines about malformed frames (bound {bound})"
    );
}

#[test]
fn malformed_frames_are_rejected_without_harm() {
    let _serial = serial("malformed_frames_are_rejected_without_harm");
    let c = Cluster::start(&Spec::new("FIRST 1 (a)", vec![sync("a")]));
    c.wait_healthy(BOUND);
    for i in 0..5 {
        append_ok(&c, DurabilityLevel::RemoteDurable, payload("good", i));
    }
    let addr = c.node("a").replication.expect("a listens");
    let a_lsns = |c: &Cluster| {
        let s = c.status("a").expect("a status");
        (s.last_lsn, s.durable_lsn)
    };
    let before = a_lsns(&c);
    assert_eq!(before, (5, 5));
    let counters = |c: &Cluster| {
        let m = c.metrics("a");
        let malformed = metric(&m, "logship_malformed_frames_total", &[]).unwrap_or(0.0);
        let rejected = metric(
            &m,
            "logship_sessions_rejected_total",
            &[("reason", RejectCode::Protocol.as_str())],
        )
        .unwrap_or(0.0);
        (malformed, rejected)
    };
    for (what, bytes, malformed) in hostile_inputs() {
        let (m0, r0) = counters(&c);
        let t0 = Instant::now();
        let reply = send_and_expect_close(addr, &bytes, Duration::from_secs(5));
        println!(
            "{what}: closed after {:?}; the follower sent {:?}",
            t0.elapsed(),
            message_names(&reply)
        );
        wait_until(&format!("{what}: a counter to grow"), BOUND, || {
            let (m1, r1) = counters(&c);
            r1 > r0 && (!malformed || m1 > m0)
        });
        assert_eq!(a_lsns(&c), before, "{what}: the follower's log changed");
    }
    garbage_flood_is_logged_as_a_summary(&c, addr, || counters(&c).0);
    let lsn = append_ok(&c, DurabilityLevel::RemoteDurable, payload("after", 0));
    let s = c.status("a").expect("a status");
    assert!(
        s.durable_lsn >= lsn.0,
        "a durable {} < {lsn}",
        s.durable_lsn
    );
    assert!(c.follower_seen("a").healthy);
    let a = c.records("a");
    assert_same_log("a", &a, &c.records(PRIMARY));
}

#[test]
fn a_slow_follower_shows_growing_lag() {
    let _serial = serial("a_slow_follower_shows_growing_lag");
    let c = Cluster::start(&Spec::new(
        "FIRST 1 (a)",
        vec![sync("a"), FollowerSpec::asynchronous("b")],
    ));
    c.wait_healthy(BOUND);
    let load = Proc::spawn(&load_args(
        &c,
        &[
            "--duration",
            "5",
            "--rate",
            "400",
            "--clients",
            "2",
            "--json",
        ],
    ));
    std::thread::sleep(Duration::from_secs(1));
    c.pause("b");
    std::thread::sleep(Duration::from_millis(500));
    let first = durable_lag(&c, "b");
    std::thread::sleep(Duration::from_secs(1));
    let second = durable_lag(&c, "b");
    println!("b stopped: durable lag {first} then {second} records");
    let addr = c.node(PRIMARY).client.to_string();
    let (code, text, stderr) = run(&args(&["status", "--addr", &addr]), Duration::from_secs(10));
    let json = status_cli_json(&c, PRIMARY);
    c.resume("b");
    assert!(second > first && first > 0.0, "lag {first} then {second}");
    assert_eq!(code, 0, "logship status: {stderr}");
    println!("{text}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("b"))
        .unwrap_or_else(|| panic!("no line for b in {text}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols.get(3), Some(&"no"), "b is shown healthy: {line}");
    let behind: u64 = cols.get(8).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(behind > 0, "b is shown 0 records behind: {line}");
    let b = (json.primary.expect("primary").followers.into_iter())
        .find(|f| f.name == "b")
        .expect("b in status --json");
    assert!(!b.healthy && b.durable_behind.records > 0, "{b:?}");
    let caught = wait_until("b's lag to return to ~0 after SIGCONT", BOUND, || {
        durable_lag(&c, "b") <= 40.0
    });
    println!("b caught up {caught:?} after SIGCONT");
    let v = parse_load(load.finish(Duration::from_secs(5) + LOAD_SLACK));
    println!("load: {v}");
    assert_eq!(load_errors(&v, "quorum_unavailable"), 0, "{v}");
    wait_until("b's lag to reach 0 after the load", BOUND, || {
        durable_lag(&c, "b") == 0.0
    });
}

/// A primary's config with `key_file`, quorum `quorum` and `extra` lines in `[replication]`.
fn primary_config(key_file: &str, quorum: &str, extra: &str) -> String {
    format!(
        "[node]\nid = \"p\"\nrole = \"primary\"\ncluster_id = \"test\"\nkey_file = \"{key_file}\"\ndata_dir = \"data\"\nlisten_client = \"127.0.0.1:0\"\n\n[replication]\nquorum = \"{quorum}\"\n{extra}followers = [ {{ name = \"a\", addr = \"127.0.0.1:9\", mode = \"sync\" }} ]\n"
    )
}

#[test]
fn node_config_errors_name_the_bad_key() {
    let _serial = serial("node_config_errors_name_the_bad_key");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("cluster.key"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .expect("key");
    let good = primary_config("cluster.key", "ANY 1 (a)", "");
    let cases = [
        (
            "unknown key",
            primary_config("cluster.key", "ANY 1 (a)", "quorom = \"ANY 1 (a)\"\n"),
            "quorom",
        ),
        (
            "bad quorum",
            primary_config("cluster.key", "ANY 3 (a)", ""),
            "replication.quorum",
        ),
        (
            "quorum member that is no follower",
            primary_config("cluster.key", "FIRST 1 (z)", ""),
            "replication.quorum",
        ),
        (
            "missing key file",
            primary_config("no-such.key", "ANY 1 (a)", ""),
            "no-such.key",
        ),
    ];
    let path = dir.path().join("node.toml");
    std::fs::write(&path, &good).expect("config");
    let p = path.display().to_string();
    let (code, out, err) = run(
        &args(&["node", "--config", &p, "--check"]),
        Duration::from_secs(10),
    );
    assert_eq!(code, 0, "the base config is refused: {out} {err}");
    for (what, text, needle) in cases {
        std::fs::write(&path, text).expect("config");
        let (code, stdout, stderr) = run(&args(&["node", "--config", &p]), Duration::from_secs(10));
        println!("{what}: exit {code}: {}", stderr.trim());
        assert_eq!(code, 2, "{what}: exit {code}: {stdout} {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{what}: one error line expected: {stderr:?}"
        );
        assert!(
            lines[0].starts_with("logship: error: ") && lines[0].contains(needle),
            "{what}: {:?} does not name {needle:?}",
            lines[0]
        );
    }
}
