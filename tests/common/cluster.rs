//! A replicated cluster of `logship node` child processes on 127.0.0.1 for the replication
//! tests: one primary `p` and followers, each with its own config file, data directory and log
//! file (its stderr, `RUST_LOG=info`) in a temporary directory.
//!
//! Every child is killed by its PID and reaped by [`Cluster`]'s or [`Proc`]'s `Drop`, so a
//! failing assertion never leaves a node behind; a test that panics prints the tail of every
//! node's log. Every wait is bounded.
#![allow(dead_code)] // each test uses a different subset

use std::fmt::Write as _;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use logship::replication::client::{ClientTls, Credentials};
use logship::replication::http::http_get;
use logship::replication::protocol::client_auth::ClientKey;
use logship::replication::status::{FollowerStatus, PrimaryStatus};
use logship::{Client, Lsn, NodeStatus, Record};

/// The primary's node id.
pub const PRIMARY: &str = "p";
/// The cluster id every node shares unless a test says otherwise.
pub const CLUSTER_ID: &str = "test";
/// Commit timeout of the primary (`timeouts.commit_ms`).
pub const COMMIT_MS: u64 = 2000;
/// Bound on a node coming up (its client port answering).
pub const START_BOUND: Duration = Duration::from_secs(15);
/// Short timeouts so that failures are noticed quickly, yet long enough that a node starved of
/// CPU for a moment (another test suite running beside) is not taken for a dead one.
fn timeouts(commit_ms: u64) -> String {
    format!("[timeouts]\nconnect_ms = 300\nhandshake_ms = 1000\nheartbeat_interval_ms = 50\npeer_ms = 1000\ncommit_ms = {commit_ms}\n\n[backoff]\ninitial_ms = 20\nmax_ms = 200\n")
}
/// A breaker that retries a dead follower soon.
const BREAKER: &str = "[breaker]\nreset_timeout_ms = 300\n";
/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;
/// Bytes asked for per `Client::read`.
const READ_CHUNK_BYTES: u32 = 4 << 20;

/// Path of the `logship` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_logship")
}

/// The log backends the nodes of a test cluster take in turn, by their place in it (the
/// primary, or the first member, first), unless `LOGSHIP_TEST_BACKEND` pins every node's: a
/// cluster of two nodes runs the default and `io_uring_direct`, one of three runs all three.
const BACKENDS: [&str; 3] = ["portable", "io_uring_direct", "io_uring"];

/// The log backend of the node at `place` in its cluster: `LOGSHIP_TEST_BACKEND`, or else
/// [`BACKENDS`] in turn.
pub fn node_backend(place: usize) -> String {
    std::env::var("LOGSHIP_TEST_BACKEND")
        .unwrap_or_else(|_| BACKENDS[place % BACKENDS.len()].to_string())
}

/// `config` with `backend = "<backend>"` in its `[log]` table, which is added if it has none.
pub fn with_log_backend(config: &str, backend: &str) -> String {
    let line = format!("backend = \"{backend}\"\n");
    match config.find("\n[log]\n") {
        Some(at) => {
            let end = at + "\n[log]\n".len();
            format!("{}{line}{}", &config[..end], &config[end..])
        }
        None => format!("{config}\n[log]\n{line}"),
    }
}

/// One follower of the cluster as the primary's config and its own config describe it.
#[derive(Clone, Debug)]
pub struct FollowerSpec {
    pub name: String,
    /// `sync` or `async`.
    pub mode: &'static str,
    /// Its own `cluster_id` (the cluster's unless set).
    pub cluster_id: String,
    /// Its own key file, with a key other than the cluster's.
    pub own_key: bool,
}

impl FollowerSpec {
    pub fn sync(name: &str) -> FollowerSpec {
        FollowerSpec {
            name: name.to_string(),
            mode: "sync",
            cluster_id: CLUSTER_ID.to_string(),
            own_key: false,
        }
    }

    pub fn asynchronous(name: &str) -> FollowerSpec {
        FollowerSpec {
            mode: "async",
            ..FollowerSpec::sync(name)
        }
    }

    pub fn with_cluster_id(mut self, id: &str) -> FollowerSpec {
        self.cluster_id = id.to_string();
        self
    }

    pub fn with_own_key(mut self) -> FollowerSpec {
        self.own_key = true;
        self
    }
}

/// The cluster's shape.
#[derive(Clone, Debug)]
pub struct Spec {
    /// `replication.quorum`.
    pub quorum: String,
    /// `replication.policy`: `block` or `degrade`.
    pub policy: &'static str,
    /// `replication.degrade_after_ms`.
    pub degrade_after_ms: Option<u64>,
    pub followers: Vec<FollowerSpec>,
}

impl Spec {
    pub fn new(quorum: &str, followers: Vec<FollowerSpec>) -> Spec {
        Spec {
            quorum: quorum.to_string(),
            policy: "block",
            degrade_after_ms: None,
            followers,
        }
    }
}

/// One node: its files, its addresses and its process while it runs. Every port is chosen by
/// the node itself (port 0) and read back from the line it prints once up; a follower that
/// restarts binds its replication port again (the primary's config names it).
#[derive(Debug)]
pub struct NodeProc {
    pub name: String,
    pub config: PathBuf,
    pub data: PathBuf,
    pub log: PathBuf,
    /// The client port, known once the node came up (`wait_up`).
    pub client: SocketAddr,
    /// The HTTP port, known once the node came up.
    pub http: SocketAddr,
    /// A follower's replication port, known once it came up the first time.
    pub replication: Option<SocketAddr>,
    /// The `[node]` section's fixed part, and every table added with `add_config`.
    sections: String,
    /// Lines added to the `[timeouts]` table with `add_timeouts`.
    timeouts: String,
    /// Its log's `backend` ([`node_backend`]).
    pub backend: String,
    follower: bool,
    /// Length of the log file when the node was last spawned: its "up" line comes after.
    log_mark: u64,
    child: Option<Child>,
}

/// The cluster; dropping it kills every node.
#[derive(Debug)]
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    /// Each follower's mode (`sync`, `async`), in the primary's config order.
    modes: Vec<(String, &'static str)>,
    /// `timeouts.commit_ms` of every node, for its next start ([`COMMIT_MS`] unless a test
    /// changes it).
    pub commit_ms: u64,
    /// The client key the test's own clients (status, reads) use, for nodes with `[clients]`.
    pub client_key: Option<ClientKey>,
    /// TLS settings for the helpers' clients, for nodes whose client port runs TLS.
    pub tls: Option<ClientTls>,
}

/// Not known yet: the node picks its ports.
const UNBOUND: &str = "127.0.0.1:0";

fn node_section(name: &str, role: &str, cluster_id: &str, key: &str) -> String {
    format!(
        "[node]\nid = \"{name}\"\nrole = \"{role}\"\ncluster_id = \"{cluster_id}\"\nkey_file = \"{key}\"\ndata_dir = \"data/{name}\"\ntransport = \"portable\"\nlisten_client = \"{UNBOUND}\"\nlisten_http = \"{UNBOUND}\"\n"
    )
}

fn write_key(path: &Path) {
    let key = logship::replication::node::generate_key_text().expect("random key");
    std::fs::write(path, format!("{key}\n")).expect("write key file");
}

impl Cluster {
    /// Writes the key; starts nothing. Each node's config is written when it is spawned (the
    /// primary's names the followers' replication ports, known once they came up).
    pub fn new(spec: &Spec) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("logship-replication-")
            .tempdir()
            .expect("temp dir");
        write_key(&dir.path().join("cluster.key"));
        let mut nodes = Vec::new();
        for (i, f) in spec.followers.iter().enumerate() {
            let key = if f.own_key {
                let k = format!("{}-own.key", f.name);
                write_key(&dir.path().join(&k));
                k
            } else {
                "cluster.key".to_string()
            };
            let text = node_section(&f.name, "follower", &f.cluster_id, &key);
            let backend = node_backend(i + 1);
            nodes.push(NodeProc::new(dir.path(), &f.name, text, backend, true));
        }
        let mut text = node_section(PRIMARY, "primary", CLUSTER_ID, "cluster.key");
        let _ = write!(
            text,
            "\n[replication]\nquorum = \"{}\"\npolicy = \"{}\"\n",
            spec.quorum, spec.policy
        );
        if let Some(ms) = spec.degrade_after_ms {
            let _ = writeln!(text, "degrade_after_ms = {ms}");
        }
        nodes.push(NodeProc::new(
            dir.path(),
            PRIMARY,
            text,
            node_backend(0),
            false,
        ));
        let modes = spec
            .followers
            .iter()
            .map(|f| (f.name.clone(), f.mode))
            .collect();
        Cluster {
            dir,
            nodes,
            modes,
            commit_ms: COMMIT_MS,
            client_key: None,
            tls: None,
        }
    }

    /// Starts every follower, then the primary, and waits until each answers on its client
    /// port.
    pub fn start(spec: &Spec) -> Cluster {
        let mut c = Cluster::new(spec);
        c.start_all();
        c
    }

    /// Starts the followers, waits until they are up (their ports known), then the primary.
    pub fn start_all(&mut self) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for name in names.iter().filter(|n| n.as_str() != PRIMARY) {
            self.spawn(name);
        }
        for name in names.iter().filter(|n| n.as_str() != PRIMARY) {
            self.wait_up(name);
        }
        self.spawn(PRIMARY);
        self.wait_up(PRIMARY);
    }

    pub fn node(&self, name: &str) -> &NodeProc {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    fn node_mut(&mut self, name: &str) -> &mut NodeProc {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Adds TOML (whole tables) to `name`'s config, for its next start.
    pub fn add_config(&mut self, name: &str, toml: &str) {
        let n = self.node_mut(name);
        n.sections.push('\n');
        n.sections.push_str(toml);
        n.sections.push('\n');
    }

    /// Adds `key = value` lines to `name`'s `[timeouts]` table, for its next start.
    pub fn add_timeouts(&mut self, name: &str, lines: &str) {
        let n = self.node_mut(name);
        n.timeouts.push_str(lines);
        n.timeouts.push('\n');
    }

    /// The primary's `followers` list: every follower must have come up once.
    fn followers_toml(&self) -> String {
        let entries: Vec<String> = (self.modes.iter())
            .map(|(name, mode)| {
                let addr = self.node(name).replication.unwrap_or_else(|| {
                    panic!(
                        "follower {name} must come up before the primary (its port is not known)"
                    )
                });
                format!("  {{ name = \"{name}\", addr = \"{addr}\", mode = \"{mode}\" }},")
            })
            .collect();
        format!("followers = [\n{}\n]\n", entries.join("\n"))
    }

    /// Starts `name` (again) with its config and data directory.
    pub fn spawn(&mut self, name: &str) {
        let followers = (name == PRIMARY).then(|| self.followers_toml());
        let commit_ms = self.commit_ms;
        let n = self.node_mut(name);
        assert!(n.child.is_none(), "node {name} already runs");
        n.write_config(followers.as_deref(), commit_ms);
        println!("node {name}: log backend {}", n.backend);
        n.log_mark = std::fs::metadata(&n.log).map_or(0, |m| m.len());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .expect("open node log");
        let child = Command::new(bin())
            .args(["node", "--config"])
            .arg(&n.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting node {name}: {e}"));
        n.child = Some(child);
    }

    /// The PID of a running node.
    pub fn pid(&self, name: &str) -> u32 {
        self.node(name)
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {name} is not running"))
            .id()
    }

    /// Whether `name` printed the ports it bound (read now) and answers a status request.
    pub fn is_up(&mut self, name: &str) -> bool {
        self.node_mut(name).read_ports() && self.status(name).is_ok()
    }

    /// Waits until `name` printed the ports it bound and answers a status request on its
    /// client port.
    pub fn wait_up(&mut self, name: &str) {
        let deadline = Instant::now() + START_BOUND;
        loop {
            let n = self.node_mut(name);
            if n.read_ports() {
                if let Ok(status) = self.status(name) {
                    let backend = &self.node(name).backend;
                    assert_eq!(
                        &status.log_backend, backend,
                        "node {name} runs another log backend than its config names"
                    );
                    return;
                }
            }
            let n = self.node_mut(name);
            if let Some(Ok(Some(status))) = n.child.as_mut().map(Child::try_wait) {
                n.child = None;
                panic!("node {name} exited with {status} while starting");
            }
            assert!(
                Instant::now() < deadline,
                "node {name} did not come up within {START_BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs `name` and reaps it.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut child) = self.node_mut(name).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs `name` and waits (bounded) for it to exit; SIGKILLs it past the bound.
    pub fn terminate(&mut self, name: &str) -> Option<ExitStatus> {
        let mut child = self.node_mut(name).child.take()?;
        signal(child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGSTOPs `name`.
    pub fn pause(&self, name: &str) {
        signal(self.pid(name), "-STOP");
    }

    /// SIGCONTs `name`.
    pub fn resume(&self, name: &str) {
        signal(self.pid(name), "-CONT");
    }

    /// A client of `name`'s client port.
    pub fn client(&self, name: &str) -> Client {
        Client::connect_as(
            self.node(name).client,
            Duration::from_secs(5),
            self.credentials(),
        )
        .unwrap_or_else(|e| panic!("connecting to {name}: {e}"))
    }

    /// `name`'s status from its client port.
    pub fn status(&self, name: &str) -> logship::replication::Result<NodeStatus> {
        let timeout = Duration::from_millis(500);
        Client::connect_as(self.node(name).client, timeout, self.credentials())?.status()
    }

    /// What the helpers' clients show the nodes: [`Cluster::tls`] and [`Cluster::client_key`].
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials {
            tls: self.tls.as_ref(),
            key: self.client_key.as_ref(),
        }
    }

    /// The primary's replication status.
    pub fn primary_status(&self) -> PrimaryStatus {
        self.status(PRIMARY)
            .expect("primary status")
            .primary
            .expect("the primary reports a primary status")
    }

    /// One follower as the primary sees it.
    pub fn follower_seen(&self, name: &str) -> FollowerStatus {
        self.primary_status()
            .followers
            .into_iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("the primary does not list follower {name}"))
    }

    /// GET `path` from `name`'s HTTP port: (status, body).
    pub fn http(&self, name: &str, path: &str) -> (u16, String) {
        http_get(self.node(name).http, path, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("GET {path} from {name}: {e}"))
    }

    /// `name`'s `/metrics` text.
    pub fn metrics(&self, name: &str) -> String {
        let (code, body) = self.http(name, "/metrics");
        assert_eq!(code, 200, "GET /metrics from {name}: {body}");
        body
    }

    /// Waits until every follower is healthy as the primary sees it.
    pub fn wait_healthy(&self, bound: Duration) {
        wait_until("every follower healthy", bound, || {
            self.status(PRIMARY)
                .ok()
                .and_then(|s| s.primary)
                .is_some_and(|p| p.followers.iter().all(|f| f.healthy))
        });
    }

    /// Every record `name` holds, read through its client port.
    pub fn records(&self, name: &str) -> Vec<Record> {
        let mut c = self.client(name);
        let mut out: Vec<Record> = Vec::new();
        let mut from = Lsn(1);
        loop {
            let batch = c
                .read(from, READ_CHUNK_BYTES)
                .unwrap_or_else(|e| panic!("reading {name} from {from}: {e}"));
            let Some(last) = batch.last() else {
                return out;
            };
            from = last.lsn.next();
            out.extend(batch);
        }
    }
}

impl NodeProc {
    fn new(dir: &Path, name: &str, sections: String, backend: String, follower: bool) -> NodeProc {
        NodeProc {
            name: name.to_string(),
            config: dir.join(format!("{name}.toml")),
            data: dir.join("data").join(name),
            log: dir.join(format!("{name}.log")),
            client: UNBOUND.parse().expect("an address"),
            http: UNBOUND.parse().expect("an address"),
            replication: None,
            sections,
            timeouts: String::new(),
            backend,
            follower,
            log_mark: 0,
            child: None,
        }
    }

    /// Writes the config for the next start: a follower listens where it listened before (its
    /// primary's config names that port), or on a port it picks the first time.
    fn write_config(&self, followers: Option<&str>, commit_ms: u64) {
        let mut text = self.sections.clone();
        if self.follower {
            let addr = self
                .replication
                .map_or(UNBOUND.to_string(), |a| a.to_string());
            text = text.replacen(
                "[node]\n",
                &format!("[node]\nlisten_replication = \"{addr}\"\n"),
                1,
            );
        }
        if let Some(f) = followers {
            text = text.replacen("\n[replication]\n", &format!("\n[replication]\n{f}"), 1);
        }
        let extra = if self.follower { "" } else { BREAKER };
        let timeouts = timeouts(commit_ms).replacen(
            "[timeouts]\n",
            &format!("[timeouts]\n{}", self.timeouts),
            1,
        );
        let text = with_log_backend(&format!("{text}\n{extra}\n{timeouts}"), &self.backend);
        std::fs::write(&self.config, text).expect("write node config");
    }

    /// Reads the ports from the node's "up" line, printed once it listens. True once known.
    fn read_ports(&mut self) -> bool {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let text =
            String::from_utf8_lossy(&text[(self.log_mark as usize).min(text.len())..]).into_owned();
        // Whole lines only: the node may be writing the up line as it is read.
        let text = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let prefix = format!("logship node {} up: ", self.name);
        let Some(line) = text.lines().find_map(|l| l.strip_prefix(&prefix)) else {
            return false;
        };
        let mut fields = line
            .split(", ")
            .map(|f| f.split_once(' ').map_or("-", |x| x.1));
        let (repl, client, http) = (fields.next(), fields.next(), fields.next());
        if let Some(Ok(a)) = repl.map(str::parse) {
            self.replication = Some(a);
        }
        match (client.map(str::parse), http.map(str::parse)) {
            (Some(Ok(c)), Some(Ok(h))) => {
                self.client = c;
                self.http = h;
                true
            }
            _ => panic!(
                "node {} printed an up line without its ports: {line:?}",
                self.name
            ),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!(
                    "----- {} ({}, log backend {}) -----",
                    n.name,
                    n.log.display(),
                    n.backend
                );
                eprintln!("{}", tail(&n.log, LOG_TAIL_LINES));
            }
        }
    }
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends a signal (`-STOP`, `-CONT`, `-TERM`) to `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

/// Polls `f` every 10 ms until it holds (returning how long that took) or `bound` passes.
pub fn poll_until(bound: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= bound {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` every 10 ms until it holds; panics after `bound`.
#[track_caller]
pub fn wait_until(what: &str, bound: Duration, f: impl FnMut() -> bool) -> Duration {
    poll_until(bound, f).unwrap_or_else(|| panic!("timed out after {bound:?} waiting for {what}"))
}

/// The value of the sample of metric `name` whose labels include every one of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            (n == name).then_some((rest, value))
        })
        .find(|(rest, _)| {
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}

/// A child process other than a node (`logship load`), killed and reaped on drop. Its stdout
/// and stderr are collected by threads so that it never blocks on a full pipe.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    what: String,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
}

fn collect(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl Proc {
    /// Starts `logship <args>` with stdout and stderr piped.
    pub fn spawn(args: &[String]) -> Proc {
        let mut child = Command::new(bin())
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting logship {args:?}: {e}"));
        let out = collect(child.stdout.take().expect("piped stdout"));
        let err = collect(child.stderr.take().expect("piped stderr"));
        Proc {
            child: Some(child),
            what: format!("logship {}", args.join(" ")),
            out: Some(out),
            err: Some(err),
        }
    }

    /// Waits (bounded) for it to exit: (exit code, stdout, stderr). Kills it past `bound`.
    pub fn finish(mut self, bound: Duration) -> (i32, String, String) {
        let mut child = self.child.take().expect("not finished yet");
        let deadline = Instant::now() + bound;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{} did not exit within {bound:?}", self.what);
                }
            }
        };
        let join = |h: Option<JoinHandle<String>>| h.map(|h| h.join().unwrap_or_default());
        (
            status.code().unwrap_or(-1),
            join(self.out.take()).unwrap_or_default(),
            join(self.err.take()).unwrap_or_default(),
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `logship <args>` to completion within `bound`: (exit code, stdout, stderr).
pub fn run(args: &[String], bound: Duration) -> (i32, String, String) {
    Proc::spawn(args).finish(bound)
}

/// Strings from `str`s, for [`run`] and [`Proc::spawn`].
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}
