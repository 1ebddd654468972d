//! A cluster that elects its primary, on real processes: three nodes on 127.0.0.2, 127.0.0.3
//! and 127.0.0.4 inside a network namespace the test thread creates for itself (so fixed ports
//! cannot collide with anything, and iptables rules inside it touch nothing else), a `logship
//! load` child following the primary, and the checker for what it acknowledged.
//!
//! Needs root (a new network namespace). Every child is killed by `Drop`; the namespace goes
//! away with its last process.
#![allow(dead_code)] // each test uses a different subset

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logship::replication::{Client, NodeStatus};
use logship::Lsn;

use crate::cluster::{bin, node_backend, signal, tail, with_log_backend};

/// True when running as root.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Ports every node uses on its own address.
const REPLICATION_PORT: u16 = 7000;
const CLIENT_PORT: u16 = 7100;
const HTTP_PORT: u16 = 7200;

/// Moves the calling thread (and every process it starts from now on) into a new network
/// namespace with its loopback up. `Err` says why it cannot (not root, no `ip`).
pub fn enter_private_netns() -> Result<(), String> {
    if !is_root() {
        return Err("needs root for a network namespace".into());
    }
    // SAFETY: unshare only changes the calling thread's namespaces; no memory is involved.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    match up {
        Ok(s) if s.success() => Ok(()),
        other => Err(format!("ip link set lo up: {other:?}")),
    }
}

/// Whether `iptables` is there (the partition tests need it; `.ci/run` installs it).
pub fn have_iptables() -> bool {
    Command::new("iptables")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `iptables ARGS` inside the namespace (panics if it fails).
pub fn iptables(args: &[&str]) {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .expect("run iptables");
    assert!(
        out.status.success(),
        "iptables {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One node.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub ip: String,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Its log's `backend` (`cluster::node_backend`).
    pub backend: String,
    child: Option<Child>,
}

impl Member {
    pub fn client_addr(&self) -> SocketAddr {
        format!("{}:{CLIENT_PORT}", self.ip)
            .parse()
            .expect("address")
    }
}

/// The cluster; dropping it kills every node and the load.
#[derive(Debug)]
pub struct Elected {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    load: Option<Child>,
}

/// Member `i`'s address (from 1). 127.0.0.1 is left to the test and the load: the kernel picks
/// it as the source of every unbound connection on loopback, so a rule cutting a node off by its
/// address must not be that one.
fn member_ip(i: usize) -> String {
    format!("127.0.0.{}", i + 1)
}

fn table(n: usize) -> String {
    let rows: Vec<String> = (1..=n)
        .map(|i| {
            let ip = member_ip(i);
            format!("  {{ id = \"n{i}\", replication = \"{ip}:{REPLICATION_PORT}\", client = \"{ip}:{CLIENT_PORT}\" }},")
        })
        .collect();
    format!("members = [\n{}\n]\n", rows.join("\n"))
}

impl Elected {
    /// Writes the configs of `n` members with `quorum` (`ANY 1`) and starts them all.
    pub fn start(n: usize, quorum: &str) -> Elected {
        let dir = tempfile::Builder::new()
            .prefix("logship-failover-")
            .tempdir()
            .expect("temp dir");
        let key = logship::replication::node::generate_key_text().expect("key");
        std::fs::write(dir.path().join("cluster.key"), format!("{key}\n")).expect("key file");
        let members = (1..=n)
            .map(|i| {
                let name = format!("n{i}");
                let ip = member_ip(i);
                let config = dir.path().join(format!("{name}.toml"));
                let text = format!(
                    "[node]\nid = \"{name}\"\ncluster_id = \"failover\"\nkey_file = \"cluster.key\"\ndata_dir = \"data/{name}\"\ntransport = \"portable\"\nlisten_client = \"{ip}:{CLIENT_PORT}\"\nlisten_http = \"{ip}:{HTTP_PORT}\"\n\n[cluster]\nquorum = \"{quorum}\"\n{}",
                    table(n)
                );
                let backend = node_backend(i - 1);
                println!("member {name}: log backend {backend}");
                std::fs::write(&config, with_log_backend(&text, &backend)).expect("config");
                let log = dir.path().join(format!("{name}.log"));
                Member {
                    name,
                    ip,
                    config,
                    log,
                    backend,
                    child: None,
                }
            })
            .collect();
        let mut c = Elected {
            dir,
            members,
            load: None,
        };
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    /// Starts member `i` (again).
    pub fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "{} runs already", m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("node log");
        let child = Command::new(bin())
            .args(["node", "--config"])
            .arg(&m.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start node");
        m.child = Some(child);
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to member `i`.
    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.members[i].child.as_ref().expect("running").id();
        signal(pid, sig);
    }

    /// Member `i`'s status, if it answers within a second.
    pub fn status(&self, i: usize) -> Option<NodeStatus> {
        let mut c = Client::connect(self.members[i].client_addr(), Duration::from_secs(1)).ok()?;
        c.set_timeout(Duration::from_secs(1)).ok()?;
        let status = c.status().ok()?;
        let m = &self.members[i];
        assert_eq!(
            status.log_backend, m.backend,
            "{} runs another log backend than its config names",
            m.name
        );
        Some(status)
    }

    /// The member that is primary in the newest epoch (among those answering), and the epoch.
    pub fn primary(&self) -> Option<(usize, u64)> {
        (0..self.members.len())
            .filter_map(|i| self.status(i).map(|s| (i, s)))
            .filter(|(_, s)| s.primary.as_ref().is_some_and(|p| p.serving))
            .map(|(i, s)| (s.epoch, i))
            .max()
            .map(|(e, i)| (i, e))
    }

    /// Waits until a primary of an epoch after `after` serves; returns it and how long that
    /// took.
    pub fn wait_primary(&self, after: u64, bound: Duration) -> (usize, u64, Duration) {
        let start = Instant::now();
        loop {
            if let Some((i, e)) = self.primary().filter(|(_, e)| *e > after) {
                return (i, e, start.elapsed());
            }
            assert!(
                start.elapsed() < bound,
                "no primary after epoch {after} within {bound:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of every node's log, for a failure message.
    pub fn logs(&self) -> String {
        (self.members.iter())
            .map(|m| format!("--- {}:\n{}\n", m.name, tail(&m.log, 15)))
            .collect()
    }

    /// Starts `logship load` over every member's client port, acknowledging at
    /// `remote_durable` into `acked`.
    pub fn start_load(&mut self, seconds: f64, acked: &Path) {
        self.start_load_with(seconds, acked, &[]);
    }

    /// [`Elected::start_load`] with `extra` arguments for `logship load`.
    pub fn start_load_with(&mut self, seconds: f64, acked: &Path, extra: &[&str]) {
        let addrs: Vec<String> = (self.members.iter())
            .map(|m| m.client_addr().to_string())
            .collect();
        let out = std::fs::File::create(self.dir.path().join("load.txt")).expect("load output");
        let child = Command::new(bin())
            .args([
                "load",
                "--addr",
                &addrs.join(","),
                "--clients",
                "4",
                "--durability",
                "remote_durable",
            ])
            .args(extra)
            .args(["--duration", &seconds.to_string(), "--acked"])
            .arg(acked)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("start load");
        self.load = Some(child);
    }

    /// Waits for the load to end (bounded); returns its output.
    pub fn finish_load(&mut self, bound: Duration) -> String {
        let mut child = self.load.take().expect("load runs");
        let start = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if start.elapsed() > bound {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the load did not end within {bound:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(self.dir.path().join("load.txt")).unwrap_or_default()
    }

    /// Every record of member `i`, by LSN: (epoch, payload CRC).
    pub fn records(&self, i: usize) -> BTreeMap<u64, (u64, u32)> {
        let mut c = Client::connect(self.members[i].client_addr(), Duration::from_secs(2))
            .expect("connect");
        c.set_timeout(Duration::from_secs(10)).expect("timeout");
        let mut out = BTreeMap::new();
        let mut from = Lsn(1);
        loop {
            let batch = c.read(from, 1 << 20).expect("read");
            let Some(last) = batch.last().map(|r| r.lsn) else {
                break;
            };
            for r in batch {
                out.insert(r.lsn.0, (r.epoch.0, crc32fast::hash(&r.payload)));
            }
            from = last.next();
        }
        out
    }
}

impl Drop for Elected {
    fn drop(&mut self) {
        if let Some(mut l) = self.load.take() {
            let _ = l.kill();
            let _ = l.wait();
        }
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// What the checker found (in the spirit of Jepsen's queue checker).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Acknowledged appends.
    pub acked: usize,
    /// Acknowledged LSNs missing on the final primary.
    pub lost: usize,
    /// Acknowledged payloads found at more than one LSN.
    pub duplicated: usize,
    /// Acknowledged LSNs holding other bytes, and LSNs where two nodes' committed prefixes
    /// differ.
    pub inconsistent: usize,
}

/// Checks `acked` (`LSN CRC` lines) against the final primary's records, and every node's
/// records against the primary's below `commit`.
pub fn check(
    acked: &Path,
    primary: &BTreeMap<u64, (u64, u32)>,
    others: &[BTreeMap<u64, (u64, u32)>],
    commit: u64,
) -> Verdict {
    let text = std::fs::read_to_string(acked).expect("acked file");
    let mut v = Verdict::default();
    let mut at: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (lsn, crc) in primary.iter().map(|(l, (_, c))| (*l, *c)) {
        at.entry(crc).or_default().push(lsn);
    }
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let lsn: u64 = f.next().and_then(|x| x.parse().ok()).expect("LSN");
        let crc = f
            .next()
            .and_then(|x| u32::from_str_radix(x, 16).ok())
            .expect("CRC");
        v.acked += 1;
        match primary.get(&lsn) {
            None => v.lost += 1,
            Some((_, c)) if *c != crc => v.inconsistent += 1,
            Some(_) => {}
        }
        if at.get(&crc).is_some_and(|l| l.len() > 1) {
            v.duplicated += 1;
        }
    }
    for other in others {
        v.inconsistent += (other.range(..=commit))
            .filter(|(l, r)| primary.get(l).is_some_and(|p| p != *r))
            .count();
    }
    v
}

/// Writes `text` to the test's output.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}
