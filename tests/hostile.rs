//! Hostile input on real processes: a primary and one sync follower (`logship node` children,
//! tests/common/cluster.rs), a honest client on 127.0.0.1 appending at `remote_durable` through
//! the primary's client port all along, and an attacker in this process that connects from
//! other loopback addresses (127.0.0.0/8 is local on Linux: a socket bound to 127.0.0.x before
//! its connect is seen by the node as coming from 127.0.0.x, no root needed).
//!
//! Three attacks ([`Attack`]) on each of the three ports ([`Port`]): 2,000 idle connections,
//! 200 slowloris connections (one byte a second of a plausible request), and a garbage flood
//! (16 connections writing random bytes as fast as they can). Every attacker reconnects
//! whatever the node closes, so the pressure lasts the whole attack. A tenth case sends the
//! replication port frame headers announcing 16 MiB bodies, then the bodies, from four
//! addresses: what a peer without the key may make the follower buffer. During each attack
//! ([`probe`]): `/health/live` of both nodes answers 200 before a 1 s read timeout (the bound
//! the security issue states; a behavioural bound, not a speed figure), a new client from
//! 127.0.0.1 gets an append acknowledged at `remote_durable` and `status` answered on both
//! nodes, both nodes stay alive. After it ([`check_after`]): every acknowledged LSN reads back
//! with its payload from the primary and from the follower; the peak anonymous RSS and open
//! descriptors of each node stayed under bounds derived from the configured limits; each node's
//! log grew by at most [`MAX_LOG_LINES_PER_ATTACK`] lines.
//!
//! The fixed primary has no replication listener (it dials its followers), so the replication
//! port attacked is the follower's. The HTTP and client ports attacked are the primary's.
//!
//! Every case uses its own attacking address, so no per-address state carries over. The suite
//! prints a table of what it observed (docs/security.md shows one run) and fails after printing
//! it if any case broke a bound.
#![allow(unsafe_code)] // setrlimit, and sockets bound to a source address before connect

#[path = "common/cluster.rs"]
mod cluster;

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cluster::{Cluster, FollowerSpec, Spec, PRIMARY};
use logship::replication::config::DEFAULT_CLIENT_CONNECTIONS_PER_ADDRESS;
use logship::replication::http::{self, http_get};
use logship::replication::log_summary::MAX_SUMMARIZED_ADDRESSES;
use logship::replication::node::{
    MAX_CLIENT_CONNECTIONS, MAX_REPLICATION_CONNECTIONS, MAX_REPLICATION_CONNECTIONS_PER_ADDRESS,
};
use logship::replication::protocol::frame::DEFAULT_MAX_BODY_BYTES;
use logship::replication::protocol::Msg;
use logship::{Bytes, Client, DurabilityLevel, Epoch, Lsn};

/// The sync follower.
const FOLLOWER: &str = "f";
/// How long each attack lasts.
const ATTACK: Duration = Duration::from_secs(3);
/// Connections of the idle attack.
const IDLE_CONNECTIONS: usize = 2000;
/// Connections of the slowloris attack.
const SLOWLORIS_CONNECTIONS: usize = 200;
/// Connections of the garbage flood.
const FLOOD_CONNECTIONS: usize = 16;
/// Connections of the large-frame attack: as many as four addresses may hold on the
/// replication port.
const BIG_FRAME_CONNECTIONS: usize = 4 * MAX_REPLICATION_CONNECTIONS_PER_ADDRESS;
/// `/health/live` must answer within this read timeout.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// A new client's connect and each of its requests, at most (generous: it is a liveness
/// check under attack on 2 shared cores, not a latency figure).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// One attacking connect, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Lines each node's log may grow by during one attack (the summaries are one line per 10 s
/// per kind of refusal; a few ordinary lines may fall in the window too).
const MAX_LOG_LINES_PER_ATTACK: usize = 20;
/// `timeouts.client_idle_ms` and `timeouts.client_request_ms` of the test cluster: short, so
/// that the attacks see the client port's timeouts act within an attack (the defaults are
/// 60 s and 10 s).
const CLIENT_IDLE_MS: u64 = 2000;
/// The idle timeout of the many-addresses case: long enough for the attacker to open its 750
/// connections one after the other before the first of them times out (a few seconds for an
/// unoptimised node on 2 shared cores), so that the port is seen full.
const MANY_IDLE_MS: u64 = 8000;
const CLIENT_REQUEST_MS: u64 = 2000;
/// Runs of a case at most, when the machine paused this process during it.
const ATTEMPTS: u32 = 3;
/// A wake-up of the [`Stalls`] watcher this much later than asked counts as a stall of the
/// machine: a 1 s health bound means nothing across it.
const STALL: Duration = Duration::from_millis(500);
/// How long after a stall the honest client's errors are the stall's (its own timeout, the
/// replication link's reconnect, the appends that waited through it).
const STALL_AFTERMATH: Duration = Duration::from_secs(15);
/// Time between probes during an attack.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Descriptors a node may open beyond its bounded ports for a moment: sockets accepted and
/// closed at once (refusals), log segments, pipes.
const FD_SLACK: usize = 64;
/// Touched memory per connection slot, generously: a client connection has two threads (a few
/// pages of stack each), a 64 KiB read buffer and a 64 KiB write buffer; a replication
/// connection a reader thread, a 64 KiB read buffer and a frame decoder holding at most the
/// frame in progress (the attacks here send no valid frame header, so a few KiB); an HTTP
/// connection a thread and an 8 KiB head buffer. 512 KiB covers each with room for the
/// allocator's per-thread arenas.
const RSS_PER_CONNECTION_BYTES: u64 = 512 << 10;
/// Allocator and log-queue variation not tied to connections.
const RSS_SLACK_BYTES: u64 = 64 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the tests of this file one at a time (each starts a cluster and floods it).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The port under attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    /// The follower's replication listener.
    Replication,
    /// The primary's client port.
    Client,
    /// The primary's HTTP port.
    Http,
}

/// What the attacker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attack {
    /// Connect and say nothing; reconnect what the node closes.
    Idle,
    /// One byte a second of a plausible request; reconnect what the node closes.
    Slowloris,
    /// Random bytes as fast as they go; reconnect when closed.
    Flood,
    /// A valid frame header announcing the largest body a frame may have (16 MiB), then zeros
    /// as fast as they go, from several addresses; reconnect when closed. Only the replication
    /// port decodes such frames before authentication.
    BigFrame,
}

/// The cases: each port, each attack, each from its own address (nine), and large frames on the
/// replication port.
const CASES: [(Port, Attack); 10] = [
    (Port::Replication, Attack::Idle),
    (Port::Replication, Attack::Slowloris),
    (Port::Replication, Attack::Flood),
    (Port::Client, Attack::Idle),
    (Port::Client, Attack::Slowloris),
    (Port::Client, Attack::Flood),
    (Port::Http, Attack::Idle),
    (Port::Http, Attack::Slowloris),
    (Port::Http, Attack::Flood),
    (Port::Replication, Attack::BigFrame),
];

#[test]
fn every_port_survives_idle_slowloris_and_garbage_attacks() {
    let _serial = serial();
    raise_fd_limit();
    let mut h = Harness::start(CLIENT_IDLE_MS);
    let mut table = Vec::new();
    let mut failures = Vec::new();
    for (i, &(port, attack)) in CASES.iter().enumerate() {
        if !selected(i) {
            continue;
        }
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i as u8));
        let row = run_case(&h, port, attack, source);
        failures.extend(
            row.failures
                .iter()
                .map(|f| format!("{port:?}/{attack:?}: {f}")),
        );
        table.push(row);
    }
    let honest = h.honest.stop();
    println!("{}", render(&table, &honest));
    let errors = h.stalls.unexcused(&honest.errors);
    assert!(errors.is_empty(), "the honest client failed: {errors:?}");
    assert!(
        failures.is_empty(),
        "bounds broken:\n{}",
        failures.join("\n")
    );
}

/// Idle connections from 250 addresses, three each (750, more than the client port's 512
/// slots), on the client port, without reconnecting: no per-address bound applies (each
/// address holds three), and the port is full until `timeouts.client_idle_ms` closes them.
///
/// What a honest client sees meanwhile: a connection it already holds keeps being served (the
/// continuous client must not fail once); a NEW connection may be closed at accept while every
/// slot is taken (the test records whether it was). Once the idle timeout passed, a new client
/// is served again: the port recovers without anyone's help, within the idle timeout.
#[test]
fn idle_connections_from_many_addresses_are_bounded_by_the_idle_timeout() {
    let _serial = serial();
    raise_fd_limit();
    let mut h = Harness::start(MANY_IDLE_MS);
    let sources: Vec<IpAddr> = (1..=250)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 1, i)))
        .collect();
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        let outcome = many_addresses_once(&h, &sources);
        match h.stalls.longest_since(started) {
            Some(stall) if attempt < ATTEMPTS => println!(
                "this process stalled for {stall:?} (the machine paused it): running the case again"
            ),
            _ => {
                outcome.unwrap_or_else(|e| panic!("{e}"));
                break;
            }
        }
        h.cluster.wait_healthy(Duration::from_secs(30));
        attempt += 1;
    }
    let honest = h.honest.stop();
    let errors = h.stalls.unexcused(&honest.errors);
    assert!(errors.is_empty(), "the honest client failed: {errors:?}");
    let mut acked = honest.acked;
    acked.extend(h.probe_acks.lock().expect("probe acks").iter().cloned());
    check_records(&h, &acked).expect("acknowledged records");
}

/// One run of the many-addresses case (sources 127.0.1.1-250, three connections each).
fn many_addresses_once(h: &Harness, sources: &[IpAddr]) -> Result<(), String> {
    let target = h.target(Port::Client);
    let marks = h.log_marks();
    let started = Instant::now();
    let held = hold_idle(target, sources, 3);
    let connecting = started.elapsed();
    let open_at_start = held.iter().filter(|s| is_open(s)).count();
    // Until every attacking connection is closed (refused at accept, or idle past
    // `timeouts.client_idle_ms`), a new client every 250 ms: what a honest client sees.
    let bound = Duration::from_millis(MANY_IDLE_MS) + Duration::from_secs(4);
    let (mut served, mut refused) = (0, Vec::new());
    let drained = cluster::poll_until(bound, || {
        match new_client(h) {
            Ok(_) => served += 1,
            Err(e) => refused.push(format!("at {:?}: {e}", started.elapsed())),
        }
        std::thread::sleep(Duration::from_millis(250));
        held.iter().all(|s| !is_open(s))
    });
    let after = new_client(h);
    println!(
        "many addresses: {} connections from {} addresses in {connecting:?}, {open_at_start} open at first; every one closed {:?} after the first probe; new clients meanwhile: {served} served, {} refused (first: {:?}, last: {:?}); a new client afterwards: {}",
        held.len(),
        sources.len(),
        drained,
        refused.len(),
        refused.first(),
        refused.last(),
        if after.is_ok() { "served" } else { "refused" },
    );
    // The honest client's connection holds a slot; probes may hold a few for a moment.
    if open_at_start < MAX_CLIENT_CONNECTIONS - 8 {
        return Err(format!(
            "the flood did not fill the port ({open_at_start} open): the case shows nothing"
        ));
    }
    if drained.is_none() {
        return Err(format!(
            "the node still held attacking connections {bound:?} after they went idle"
        ));
    }
    after.map_err(|e| format!("no new client once the idle connections are gone: {e}"))?;
    // One summary line per refusing address, for at most MAX_SUMMARIZED_ADDRESSES of them,
    // one for the rest, and a few ordinary lines.
    let lines = lines_since(&h.cluster.node(PRIMARY).log, marks[0]);
    let bound = MAX_SUMMARIZED_ADDRESSES + 1 + 4;
    println!("many addresses: {lines} new lines in the primary's log (at most {bound})");
    if lines > bound {
        return Err(format!(
            "{lines} log lines from refusals of 250 addresses (at most {bound}):\n{}",
            cluster::tail(&h.cluster.node(PRIMARY).log, 30)
        ));
    }
    Ok(())
}

/// Runs one case: the attack, the probes during it, the checks after it. A case during which
/// this process itself stalled (the machine paused it: see [`Stalls`]) is run again, up to
/// [`ATTEMPTS`] times; the row says how many runs it took.
fn run_case(h: &Harness, port: Port, attack: Attack, source: IpAddr) -> Row {
    let mut attempt = 1;
    loop {
        let start = Instant::now();
        let target = h.target(port);
        let marks = h.log_marks();
        // Large frames come from four addresses (32 connections at 8 per address).
        let sources: Vec<IpAddr> = match (attack, source) {
            (Attack::BigFrame, IpAddr::V4(a)) => (0..4)
                .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 3 + k, a.octets()[3])))
                .collect(),
            _ => vec![source],
        };
        let attacker = Attacker::start(attack, port, target, &sources);
        let seen = probe(h, ATTACK);
        let stats = attacker.stop();
        let stalled = h.stalls.longest_since(start);
        if stalled.is_none() || attempt == ATTEMPTS {
            let mut row = check_after(h, (port, attack, sources[0]), seen, marks, &stats);
            row.attempts = attempt;
            return row;
        }
        println!(
            "{port:?}/{attack:?}: this process stalled for {stalled:?} during the attack (the machine paused it): running the case again"
        );
        h.cluster.wait_healthy(Duration::from_secs(30));
        attempt += 1;
    }
}

/// Whether case `i` (0-based, in [`CASES`]) runs: all of them, or those listed in
/// `LOGSHIP_HOSTILE_CASES` (comma-separated indexes), to replay one.
fn selected(i: usize) -> bool {
    match std::env::var("LOGSHIP_HOSTILE_CASES") {
        Ok(list) => list.split(',').any(|c| c.trim().parse() == Ok(i)),
        Err(_) => true,
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster and the honest client.

struct Harness {
    cluster: Cluster,
    stalls: Stalls,
    honest: Honest,
    /// Acks of the new clients of the probes.
    probe_acks: Mutex<Vec<(Lsn, Bytes)>>,
    /// Each node's anonymous RSS (bytes) and descriptors before any attack.
    baseline: [(u64, usize); 2],
}

impl Harness {
    /// A cluster whose client ports close connections idle for `idle_ms`.
    fn start(idle_ms: u64) -> Harness {
        let spec = Spec::new(
            &format!("ANY 1 ({FOLLOWER})"),
            vec![FollowerSpec::sync(FOLLOWER)],
        );
        let mut cluster = Cluster::new(&spec);
        for name in [PRIMARY, FOLLOWER] {
            cluster.add_timeouts(
                name,
                &format!("client_idle_ms = {idle_ms}\nclient_request_ms = {CLIENT_REQUEST_MS}"),
            );
        }
        cluster.start_all();
        cluster.wait_healthy(Duration::from_secs(20));
        let honest = Honest::start(cluster.node(PRIMARY).client);
        // Let the honest client's connection and the log settle before the baseline.
        std::thread::sleep(Duration::from_secs(1));
        let baseline = [PRIMARY, FOLLOWER].map(|n| (rss_anon(cluster.pid(n)), fds(cluster.pid(n))));
        Harness {
            cluster,
            stalls: Stalls::start(),
            honest,
            probe_acks: Mutex::new(Vec::new()),
            baseline,
        }
    }

    fn target(&self, port: Port) -> SocketAddr {
        match port {
            Port::Replication => self
                .cluster
                .node(FOLLOWER)
                .replication
                .expect("follower up"),
            Port::Client => self.cluster.node(PRIMARY).client,
            Port::Http => self.cluster.node(PRIMARY).http,
        }
    }

    /// Each node's log length now.
    fn log_marks(&self) -> [u64; 2] {
        [PRIMARY, FOLLOWER]
            .map(|n| std::fs::metadata(&self.cluster.node(n).log).map_or(0, |m| m.len()))
    }
}

/// What the honest client did.
#[derive(Debug, Default)]
struct HonestOutcome {
    acked: Vec<(Lsn, Bytes)>,
    errors: Vec<(Instant, String)>,
}

/// A client on 127.0.0.1 appending at `remote_durable` without pause, one request at a time,
/// through one connection (a new one after an error, which is recorded).
struct Honest {
    stop: Arc<AtomicBool>,
    outcome: Arc<Mutex<HonestOutcome>>,
    thread: Option<JoinHandle<()>>,
}

impl Honest {
    fn start(addr: SocketAddr) -> Honest {
        let stop = Arc::new(AtomicBool::new(false));
        let outcome = Arc::new(Mutex::new(HonestOutcome::default()));
        let (s, o) = (Arc::clone(&stop), Arc::clone(&outcome));
        let thread = std::thread::spawn(move || honest_loop(addr, &s, &o));
        Honest {
            stop,
            outcome,
            thread: Some(thread),
        }
    }

    fn acks(&self) -> usize {
        self.outcome.lock().expect("outcome").acked.len()
    }

    fn stop(&mut self) -> HonestOutcome {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("honest client thread");
        }
        std::mem::take(&mut *self.outcome.lock().expect("outcome"))
    }
}

impl Drop for Honest {
    fn drop(&mut self) {
        self.stop();
    }
}

fn honest_loop(addr: SocketAddr, stop: &AtomicBool, outcome: &Mutex<HonestOutcome>) {
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let c = match client.as_mut() {
            Some(c) => c,
            None => match connect_client(addr) {
                Ok(c) => client.insert(c),
                Err(e) => {
                    outcome
                        .lock()
                        .expect("outcome")
                        .errors
                        .push((Instant::now(), format!("connect: {e}")));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let payload = Bytes::from(format!("honest-{n:08}"));
        n += 1;
        match c.append(payload.clone(), DurabilityLevel::RemoteDurable) {
            Ok(lsn) => outcome.lock().expect("outcome").acked.push((lsn, payload)),
            Err(e) => {
                outcome
                    .lock()
                    .expect("outcome")
                    .errors
                    .push((Instant::now(), format!("append: {e}")));
                client = None;
            }
        }
    }
}

fn connect_client(addr: SocketAddr) -> logship::replication::Result<Client> {
    let mut c = Client::connect(addr, CLIENT_TIMEOUT)?;
    c.set_timeout(CLIENT_TIMEOUT)?;
    Ok(c)
}

/// A new client on 127.0.0.1: an append at `remote_durable` acknowledged on the primary, and
/// `status` answered by both nodes. Returns the acknowledged record.
fn new_client(h: &Harness) -> Result<(Lsn, Bytes), String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let payload = Bytes::from(format!("probe-{:06}", NEXT.fetch_add(1, Ordering::Relaxed)));
    let mut c =
        connect_client(h.cluster.node(PRIMARY).client).map_err(|e| format!("connect: {e}"))?;
    let lsn = (c.append(payload.clone(), DurabilityLevel::RemoteDurable))
        .map_err(|e| format!("append: {e}"))?;
    h.probe_acks
        .lock()
        .expect("probe acks")
        .push((lsn, payload.clone()));
    c.status().map_err(|e| format!("primary status: {e}"))?;
    connect_client(h.cluster.node(FOLLOWER).client)
        .and_then(|mut f| f.status())
        .map_err(|e| format!("follower status: {e}"))?;
    Ok((lsn, payload))
}

/// Stalls of this process: a thread that sleeps 20 ms at a time and notes every wake-up more
/// than [`STALL`] late. On a machine shared with other builds (or a virtual machine paused by
/// its host) every process, the nodes and this one, can stop for seconds at once; timeouts
/// then expire that no attack caused. A case that saw one is run again ([`run_case`]).
struct Stalls {
    seen: Arc<Mutex<Vec<(Instant, Duration)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Stalls {
    fn start() -> Stalls {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let tick = Duration::from_millis(20);
            while !st.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                std::thread::sleep(tick);
                let late = t0.elapsed().saturating_sub(tick);
                if late >= STALL {
                    s.lock().expect("stalls").push((Instant::now(), late));
                }
            }
        });
        Stalls {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// The longest stall that ended after `t`, if any.
    fn longest_since(&self, t: Instant) -> Option<Duration> {
        let seen = self.seen.lock().expect("stalls");
        seen.iter()
            .filter(|(end, _)| *end > t)
            .map(|(_, d)| *d)
            .max()
    }

    /// The errors not explained by a stall: those outside every stall and its aftermath.
    fn unexcused(&self, errors: &[(Instant, String)]) -> Vec<String> {
        let seen = self.seen.lock().expect("stalls");
        let excused = |at: Instant| {
            seen.iter()
                .any(|&(end, d)| at + d + STALL >= end && at <= end + STALL_AFTERMATH)
        };
        (errors.iter())
            .filter(|(at, _)| !excused(*at))
            .map(|(_, e)| e.clone())
            .collect()
    }
}

impl Drop for Stalls {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// What the probes saw during one attack.
#[derive(Debug, Default)]
struct Seen {
    health_probes: usize,
    health_failures: Vec<String>,
    worst_health: Duration,
    clients_tried: usize,
    client_failures: Vec<String>,
    dead: Vec<String>,
    /// Peak (anonymous RSS bytes, descriptors) of the primary and the follower.
    peak: [(u64, usize); 2],
    /// Acks of the honest client during the attack.
    honest_acks: usize,
}

/// Probes the nodes from 127.0.0.1 every [`PROBE_EVERY`] for `duration`: health of both, a new
/// client about once a second, liveness, memory and descriptors.
fn probe(h: &Harness, duration: Duration) -> Seen {
    let mut seen = Seen::default();
    let honest_before = h.honest.acks();
    let start = Instant::now();
    let mut next_client = start + Duration::from_millis(500);
    while start.elapsed() < duration {
        for name in [PRIMARY, FOLLOWER] {
            probe_health(h, name, &mut seen);
        }
        if Instant::now() >= next_client {
            seen.clients_tried += 1;
            if let Err(e) = new_client(h) {
                seen.client_failures
                    .push(format!("at {:?}: {e}", start.elapsed()));
            }
            next_client += Duration::from_secs(1);
        }
        for (i, name) in [PRIMARY, FOLLOWER].into_iter().enumerate() {
            let pid = h.cluster.pid(name);
            if !alive(pid) {
                seen.dead.push(name.to_string());
            }
            let (rss, fd) = (rss_anon(pid), fds(pid));
            seen.peak[i] = (seen.peak[i].0.max(rss), seen.peak[i].1.max(fd));
        }
        std::thread::sleep(PROBE_EVERY);
    }
    seen.honest_acks = h.honest.acks() - honest_before;
    seen
}

fn probe_health(h: &Harness, name: &str, seen: &mut Seen) {
    seen.health_probes += 1;
    let t0 = Instant::now();
    let answer = http_get(h.cluster.node(name).http, "/health/live", HEALTH_TIMEOUT);
    let took = t0.elapsed();
    match answer {
        Ok((200, _)) => seen.worst_health = seen.worst_health.max(took),
        Ok((code, body)) => seen
            .health_failures
            .push(format!("{name}: {code} {body:?}")),
        Err(e) => seen
            .health_failures
            .push(format!("{name}: {e} after {took:?}")),
    }
}

/// One row of the results table, with the bounds it broke.
#[derive(Debug)]
struct Row {
    port: Port,
    attack: Attack,
    seen: Seen,
    log_lines: [usize; 2],
    attacker: AttackStats,
    failures: Vec<String>,
    /// Runs it took (more than one when the machine paused this process).
    attempts: u32,
}

/// After an attack: the records, the bounds, the log.
fn check_after(
    h: &Harness,
    (port, attack, source): (Port, Attack, IpAddr),
    seen: Seen,
    marks: [u64; 2],
    stats: &AttackStats,
) -> Row {
    let mut failures = Vec::new();
    if let Some(e) = refusals_named(h, port, attack, source, marks) {
        failures.push(e);
    }
    let log_lines = [PRIMARY, FOLLOWER].map(|n| {
        let i = usize::from(n == FOLLOWER);
        lines_since(&h.cluster.node(n).log, marks[i])
    });
    failures.extend(seen.health_failures.iter().map(|f| format!("health: {f}")));
    failures.extend(
        seen.client_failures
            .iter()
            .map(|f| format!("new client: {f}")),
    );
    failures.extend(seen.dead.iter().map(|n| format!("node {n} died")));
    if seen.clients_tried == 0 {
        failures.push("no new client was tried".into());
    }
    if seen.honest_acks == 0 {
        failures.push("the honest client got no ack during the attack".into());
    }
    for (i, name) in [PRIMARY, FOLLOWER].into_iter().enumerate() {
        let (rss_bound, fd_bound) = bounds(port, h.baseline[i]);
        let (rss, fd) = seen.peak[i];
        if rss > rss_bound {
            failures.push(format!(
                "{name}: anonymous RSS {} MiB over the bound {} MiB",
                rss >> 20,
                rss_bound >> 20
            ));
        }
        if fd > fd_bound {
            failures.push(format!(
                "{name}: {fd} descriptors over the bound {fd_bound}"
            ));
        }
        if log_lines[i] > MAX_LOG_LINES_PER_ATTACK {
            failures.push(format!(
                "{name}: {} log lines during the attack (at most {MAX_LOG_LINES_PER_ATTACK}):\n{}",
                log_lines[i],
                cluster::tail(&h.cluster.node(name).log, 10)
            ));
        }
    }
    if stats.connects == 0 {
        failures.push("the attacker never connected: the case shows nothing".into());
    }
    let mut acked = h.honest.outcome.lock().expect("outcome").acked.clone();
    acked.extend(h.probe_acks.lock().expect("probe acks").iter().cloned());
    if let Err(e) = check_records(h, &acked) {
        failures.push(e);
    }
    Row {
        port,
        attack,
        seen,
        log_lines,
        attacker: *stats,
        failures,
        attempts: 1,
    }
}

/// When the attack opens more connections than the port takes from one address, the attacked
/// node's log must name the attacking address in its summary of refusals (the replication
/// port's per-address summary, the client port's last address). The HTTP port refuses without
/// a log line.
fn refusals_named(
    h: &Harness,
    port: Port,
    attack: Attack,
    source: IpAddr,
    marks: [u64; 2],
) -> Option<String> {
    let (node, per_address) = match port {
        Port::Replication => (FOLLOWER, MAX_REPLICATION_CONNECTIONS_PER_ADDRESS),
        Port::Client => (PRIMARY, DEFAULT_CLIENT_CONNECTIONS_PER_ADDRESS),
        Port::Http => return None,
    };
    let opened = match attack {
        Attack::Idle => IDLE_CONNECTIONS,
        Attack::Slowloris => SLOWLORIS_CONNECTIONS,
        Attack::Flood => FLOOD_CONNECTIONS,
        // From four addresses: each address holds at most its bound, and closing a connection
        // past MAX_UNPROVEN_BYTES is a refusal too.
        Attack::BigFrame => BIG_FRAME_CONNECTIONS / 4 + 1,
    };
    if opened <= per_address {
        return None;
    }
    let log = std::fs::read(&h.cluster.node(node).log).unwrap_or_default();
    let mark = marks[usize::from(node == FOLLOWER)] as usize;
    let text = String::from_utf8_lossy(&log[mark.min(log.len())..]).into_owned();
    let named = format!("address={source}");
    (!text.contains(&named)).then(|| {
        format!("{node}'s log does not name the refused address ({named}) in the attack's lines:\n{text}")
    })
}

/// (anonymous RSS, descriptors) a node may reach from `baseline` while `port` is attacked:
/// every connection slot of that port taken (a client connection holds two descriptors, its
/// socket and the writer's duplicate), plus slack. The node's bounds are
/// `MAX_CLIENT_CONNECTIONS` (512), `http::MAX_CONNECTIONS` (16) and
/// `MAX_REPLICATION_CONNECTIONS` (128).
fn bounds(port: Port, (rss, fd): (u64, usize)) -> (u64, usize) {
    let (slots, fds_per_slot) = match port {
        Port::Client => (MAX_CLIENT_CONNECTIONS, 2),
        Port::Http => (http::MAX_CONNECTIONS, 1),
        Port::Replication => (MAX_REPLICATION_CONNECTIONS, 1),
    };
    let rss_bound = rss + slots as u64 * RSS_PER_CONNECTION_BYTES + RSS_SLACK_BYTES;
    (rss_bound, fd + slots * fds_per_slot + FD_SLACK)
}

/// Every record `name` holds, read through its client port from 127.0.0.1.
fn read_all(h: &Harness, name: &str) -> Result<Vec<logship::Record>, String> {
    let mut c = connect_client(h.cluster.node(name).client).map_err(|e| e.to_string())?;
    let mut out: Vec<logship::Record> = Vec::new();
    loop {
        let from = out.last().map_or(Lsn(1), |r| r.lsn.next());
        let batch = (c.read(from, 4 << 20)).map_err(|e| format!("reading from {from}: {e}"))?;
        if batch.is_empty() {
            return Ok(out);
        }
        out.extend(batch);
    }
}

/// Every acknowledged LSN holds its payload on the primary and on the follower.
fn check_records(h: &Harness, acked: &[(Lsn, Bytes)]) -> Result<(), String> {
    for name in [PRIMARY, FOLLOWER] {
        let records = read_all(h, name).map_err(|e| format!("{name}: {e}"))?;
        for (lsn, payload) in acked {
            let Some(r) = records.get((lsn.0 as usize).wrapping_sub(1)) else {
                return Err(format!(
                    "{name}: acknowledged LSN {lsn} is missing (it holds {})",
                    records.len()
                ));
            };
            if r.lsn != *lsn || r.payload != *payload {
                return Err(format!(
                    "{name}: LSN {lsn} holds another record than the one acknowledged"
                ));
            }
        }
    }
    Ok(())
}

/// Lines written to `path` after byte `mark`.
fn lines_since(path: &std::path::Path, mark: u64) -> usize {
    let text = std::fs::read(path).unwrap_or_default();
    let from = (mark as usize).min(text.len());
    text[from..].iter().filter(|&&b| b == b'\n').count()
}

fn render(table: &[Row], honest: &HonestOutcome) -> String {
    let mut s = String::from(
        "| port | attack | attacker connects | health answered | worst health | new clients served | honest acks | peak RSS anon p / f (MiB) | peak fds p / f | log lines p / f | runs |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in table {
        let (p, f) = (r.seen.peak[0], r.seen.peak[1]);
        let _ =
            writeln!(
            s,
            "| {:?} | {:?} | {} | {} ({}/{}) | {} ms | {}/{} | {} | {} / {} | {} / {} | {} / {} | {} |",
            r.port,
            r.attack,
            r.attacker.connects,
            if r.seen.health_failures.is_empty() { "yes" } else { "NO" },
            r.seen.health_probes - r.seen.health_failures.len(),
            r.seen.health_probes,
            r.seen.worst_health.as_millis(),
            r.seen.clients_tried - r.seen.client_failures.len(),
            r.seen.clients_tried,
            r.seen.honest_acks,
            p.0 >> 20,
            f.0 >> 20,
            p.1,
            f.1,
            r.log_lines[0],
            r.log_lines[1],
            r.attempts,
        );
    }
    let _ = write!(
        s,
        "honest client: {} acks, {} errors",
        honest.acked.len(),
        honest.errors.len()
    );
    s
}

// ---------------------------------------------------------------------------------------------
// The attacker.

/// What an attacker did.
#[derive(Clone, Copy, Debug, Default)]
struct AttackStats {
    /// Connections made (reconnections included).
    connects: u64,
}

/// Attacking threads, stopped and joined by [`Attacker::stop`] (or on drop).
struct Attacker {
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Attacker {
    fn start(attack: Attack, port: Port, target: SocketAddr, sources: &[IpAddr]) -> Attacker {
        let stop = Arc::new(AtomicBool::new(false));
        let connects = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        let spawn = |f: Box<dyn FnOnce() + Send>| std::thread::spawn(f);
        match attack {
            Attack::Idle => {
                let (s, c, src) = (Arc::clone(&stop), Arc::clone(&connects), sources.to_vec());
                threads.push(spawn(Box::new(move || {
                    idle(target, &src, IDLE_CONNECTIONS, &s, &c)
                })));
            }
            Attack::Slowloris => {
                let (s, c, src) = (Arc::clone(&stop), Arc::clone(&connects), sources.to_vec());
                let request = plausible_request(port);
                threads.push(spawn(Box::new(move || {
                    slowloris(target, &src, &request, &s, &c)
                })));
            }
            Attack::Flood | Attack::BigFrame => {
                let big = attack == Attack::BigFrame;
                let n = if big {
                    BIG_FRAME_CONNECTIONS
                } else {
                    FLOOD_CONNECTIONS
                };
                for i in 0..n {
                    let (s, c) = (Arc::clone(&stop), Arc::clone(&connects));
                    let source = sources[i % sources.len()];
                    threads.push(spawn(Box::new(move || {
                        flood(target, source, (i as u64, big), &s, &c)
                    })));
                }
            }
        }
        Attacker {
            stop,
            connects,
            threads,
        }
    }

    fn stop(mut self) -> AttackStats {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().expect("attacking thread");
        }
        AttackStats {
            connects: self.connects.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The start of a request the port would take, never completed at one byte a second: a
/// client append of 64 KiB, a replication Hello, an HTTP request whose headers never end.
fn plausible_request(port: Port) -> Vec<u8> {
    match port {
        Port::Client => Msg::AppendRequest {
            id: 1,
            level: DurabilityLevel::RemoteDurable,
            payload: Bytes::from(vec![b'x'; 64 << 10]),
        }
        .encode()
        .to_vec(),
        Port::Replication => Msg::Hello {
            version_min: 3,
            version_max: 3,
            epoch: Epoch(1),
            last_lsn: Lsn(0),
            nonce: [7; logship::replication::protocol::auth::NONCE_LEN],
            cluster_id: cluster::CLUSTER_ID.into(),
            node_id: "intruder".into(),
        }
        .encode()
        .to_vec(),
        Port::Http => {
            let mut r = b"GET /health/live HTTP/1.1\r\nHost: logship\r\n".to_vec();
            r.extend(b"X-Slow: 1\r\n".repeat(1000));
            r
        }
    }
}

/// Holds `n` idle connections, spread over `sources`; every half second, reconnects those the
/// node closed.
fn idle(target: SocketAddr, sources: &[IpAddr], n: usize, stop: &AtomicBool, connects: &AtomicU64) {
    let mut held: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    while !stop.load(Ordering::Relaxed) {
        for (i, slot) in held.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|s| !is_open(s)) {
                *slot = None;
            }
            if slot.is_none() && !stop.load(Ordering::Relaxed) {
                *slot = start_connect(sources[i % sources.len()], target).ok();
                connects.fetch_add(1, Ordering::Relaxed);
            }
        }
        sleep_unless(stop, Duration::from_millis(500));
    }
}

/// Opens `per_source` idle connections from each of `sources`, one after the other (each
/// connect completes before the next starts, so that the node's accept queue never overflows
/// and every one reaches the node), and returns them (no reconnect).
fn hold_idle(target: SocketAddr, sources: &[IpAddr], per_source: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..per_source {
        for &s in sources {
            let Ok(c) = start_connect(s, target) else {
                continue;
            };
            if wait_connected(&c, CONNECT_TIMEOUT).is_ok() {
                held.push(c);
            }
        }
    }
    // Let the node accept the last ones (or close those beyond its slots).
    std::thread::sleep(Duration::from_millis(300));
    held
}

/// [`SLOWLORIS_CONNECTIONS`] connections that each send one more byte of `request` a second;
/// reconnects those the node closed.
fn slowloris(
    target: SocketAddr,
    sources: &[IpAddr],
    request: &[u8],
    stop: &AtomicBool,
    connects: &AtomicU64,
) {
    let mut held: Vec<Option<(TcpStream, usize)>> =
        (0..SLOWLORIS_CONNECTIONS).map(|_| None).collect();
    while !stop.load(Ordering::Relaxed) {
        for (i, slot) in held.iter_mut().enumerate() {
            let alive = match slot {
                Some((s, sent)) => {
                    let ok =
                        is_open(s) && (&*s).write(&request[*sent % request.len()..][..1]).is_ok();
                    *sent += 1;
                    ok
                }
                None => false,
            };
            if !alive && !stop.load(Ordering::Relaxed) {
                *slot = start_connect(sources[i % sources.len()], target)
                    .ok()
                    .map(|s| (s, 0));
                connects.fetch_add(1, Ordering::Relaxed);
            }
        }
        sleep_unless(stop, Duration::from_secs(1));
    }
}

/// Writes random bytes to `target` as fast as the node takes them, reconnecting when closed.
/// With `big`, each connection starts with a frame header announcing the largest body, and the
/// bytes after it are zeros (the body the node would buffer).
fn flood(
    target: SocketAddr,
    source: IpAddr,
    (seed, big): (u64, bool),
    stop: &AtomicBool,
    connects: &AtomicU64,
) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (seed + 1);
    let mut chunk = vec![0u8; 16 << 10];
    while !stop.load(Ordering::Relaxed) {
        connects.fetch_add(1, Ordering::Relaxed);
        let Ok(s) = start_connect(source, target) else {
            sleep_unless(stop, Duration::from_millis(10));
            continue;
        };
        if wait_connected(&s, CONNECT_TIMEOUT).is_err() || s.set_nonblocking(false).is_err() {
            continue;
        }
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        if big {
            let mut header = [0u8; 12];
            header[0..4].copy_from_slice(&(DEFAULT_MAX_BODY_BYTES as u32).to_le_bytes());
            header[4] = 1; // Hello
            if (&s).write_all(&header).is_err() {
                continue;
            }
        }
        while !stop.load(Ordering::Relaxed) {
            for b in chunk.chunks_mut(8).filter(|_| !big) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
            match (&s).write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the node has not closed `s` (a non-blocking socket): no EOF, no error.
fn is_open(s: &TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut buf = [0u8; 4096];
    loop {
        match (&*s).read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // A connect still in progress reads as "not connected": still held.
            Err(e) if e.kind() == ErrorKind::NotConnected => return true,
            Err(_) => return false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// System calls std does not offer.

/// Raises this process's soft descriptor limit to its hard limit (the attacker holds 2,000
/// sockets; the nodes, its children, inherit the limit).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit the call writes into.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    let need = (IDLE_CONNECTIONS * 2 + 1024) as libc::rlim_t;
    assert!(
        lim.rlim_max >= need,
        "the hard descriptor limit {} is below the {need} this suite needs (ulimit -Hn)",
        lim.rlim_max
    );
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit the call reads.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// A non-blocking IPv4 socket bound to `source`, its connect to `dest` started.
fn start_connect(source: IpAddr, dest: SocketAddr) -> std::io::Result<TcpStream> {
    let (IpAddr::V4(src), SocketAddr::V4(dst)) = (source, dest) else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let addr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = addr(src, 0);
    // SAFETY: `local` is a sockaddr_in of `len` bytes that outlives the call; the descriptor
    // is owned by `stream`.
    if unsafe { libc::bind(stream.as_raw_fd(), std::ptr::from_ref(&local).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let remote = addr(*dst.ip(), dst.port());
    // SAFETY: as for bind.
    if unsafe { libc::connect(stream.as_raw_fd(), std::ptr::from_ref(&remote).cast(), len) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(stream)
}

/// Waits for a started connect to finish.
fn wait_connected(s: &TcpStream, timeout: Duration) -> std::io::Result<()> {
    let mut fds = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = timeout.as_millis() as libc::c_int;
    // SAFETY: `fds` is one valid pollfd that outlives the call.
    let ready = unsafe { libc::poll(&mut fds, 1, ms) };
    if ready <= 0 {
        return Err(std::io::Error::new(
            ErrorKind::TimedOut,
            "connect timed out",
        ));
    }
    match s.take_error()? {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `RssAnon` of `pid`, bytes (0 if it is gone).
fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb << 10)
}

/// Open descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Whether `pid` runs (exists and is no zombie).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    matches!(state, Some(c) if c != 'Z' && c != 'X')
}
