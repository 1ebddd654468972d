//! Three `logship node` processes that elect their primary: their configs, their keys, their
//! logs, and the children themselves. Member `i` (0-based) is `n{i+1}` on `127.0.0.{i+1}`, with
//! the same ports on every address (the private network namespace makes that possible). Every
//! child is killed when the cluster is dropped.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use logship_replicator::{Client, NodeStatus};

use super::plan::FailoverPlan;

/// Ports every member uses on its own address.
const REPLICATION_PORT: u16 = 7000;
const CLIENT_PORT: u16 = 7100;
const HTTP_PORT: u16 = 7200;
/// How long a status request may take before the member counts as not answering.
const STATUS_TIMEOUT: Duration = Duration::from_millis(250);

/// One member.
#[derive(Debug)]
pub struct Member {
    /// Its node id, `n1`...
    pub id: String,
    /// Its client address.
    pub client: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// The cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The members, in id order.
    pub members: Vec<Member>,
    bin: PathBuf,
    /// One open status connection per member (reopened after an error).
    status_clients: Vec<Option<Client>>,
}

/// The `logship` binary next to this one (both are built into the same target directory).
///
/// # Errors
/// When it is not there.
pub fn logship_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating the benchmark binary")?;
    let bin = me.with_file_name("logship");
    if !bin.is_file() {
        bail!(
            "{} is missing: the failover benchmark runs its nodes as `logship node` processes; \
             run `cargo build --release -p logship` first",
            bin.display()
        );
    }
    Ok(bin)
}

/// The `members = [...]` line of every config.
fn members_table(n: usize) -> String {
    let rows: Vec<String> = (1..=n)
        .map(|i| {
            format!(
                "  {{ id = \"n{i}\", replication = \"127.0.0.{i}:{REPLICATION_PORT}\", \
                 client = \"127.0.0.{i}:{CLIENT_PORT}\" }},"
            )
        })
        .collect();
    format!("members = [\n{}\n]\n", rows.join("\n"))
}

/// Member `i`'s config (paths relative to the config's directory).
fn config_text(i: usize, plan: &FailoverPlan) -> String {
    let n = i + 1;
    format!(
        "[node]\nid = \"n{n}\"\ncluster_id = \"bench\"\nkey_file = \"cluster.key\"\n\
         data_dir = \"data/n{n}\"\ntransport = \"portable\"\n\
         listen_client = \"127.0.0.{n}:{CLIENT_PORT}\"\nlisten_http = \"127.0.0.{n}:{HTTP_PORT}\"\n\n\
         [timeouts]\nheartbeat_interval_ms = {}\npeer_ms = {}\n\n\
         [cluster]\nquorum = \"{}\"\nelection_timeout_min_ms = {}\nelection_timeout_max_ms = {}\n{}",
        plan.heartbeat_interval_ms,
        plan.peer_timeout_ms,
        plan.quorum,
        plan.election_timeout_min_ms,
        plan.election_timeout_max_ms,
        members_table(plan.members)
    )
}

impl Cluster {
    /// Writes the key and every member's config into `dir` and starts every member.
    ///
    /// # Errors
    /// When a file cannot be written or a node cannot be started.
    pub fn start(dir: &Path, plan: &FailoverPlan, bin: PathBuf) -> anyhow::Result<Cluster> {
        let key = logship_replicator::node::generate_key_text().context("generating a key")?;
        std::fs::write(dir.join("cluster.key"), format!("{key}\n")).context("writing the key")?;
        let mut members = Vec::new();
        for i in 0..plan.members {
            let id = format!("n{}", i + 1);
            let config = dir.join(format!("{id}.toml"));
            std::fs::write(&config, config_text(i, plan))
                .with_context(|| format!("writing {}", config.display()))?;
            let client = format!("127.0.0.{}:{CLIENT_PORT}", i + 1).parse()?;
            let log = dir.join(format!("{id}.log"));
            members.push(Member {
                id,
                client,
                config,
                log,
                child: None,
            });
        }
        let status_clients = members.iter().map(|_| None).collect();
        let mut cluster = Cluster {
            members,
            bin,
            status_clients,
        };
        for i in 0..plan.members {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// Starts member `i` (again), its stderr appended to its log file.
    ///
    /// # Errors
    /// When the log cannot be opened or the process cannot be started.
    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        anyhow::ensure!(m.child.is_none(), "{} runs already", m.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .with_context(|| format!("opening {}", m.log.display()))?;
        let child = Command::new(&self.bin)
            .args(["node", "--config"])
            .arg(&m.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} ({})", m.id, self.bin.display()))?;
        m.child = Some(child);
        Ok(())
    }

    /// SIGKILLs member `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.status_clients[i] = None;
    }

    /// Member `i`'s status, if it answers within [`STATUS_TIMEOUT`]. Keeps the connection
    /// open for the next call.
    pub fn status(&mut self, i: usize) -> Option<NodeStatus> {
        if self.status_clients[i].is_none() {
            let c = Client::connect(self.members[i].client, STATUS_TIMEOUT).ok()?;
            self.status_clients[i] = Some(c);
        }
        let c = self.status_clients[i].as_mut()?;
        match c.status() {
            Ok(s) => Some(s),
            Err(_) => {
                self.status_clients[i] = None;
                None
            }
        }
    }

    /// The member serving as primary in the newest epoch among those answering, and the epoch.
    pub fn primary(&mut self) -> Option<(usize, u64)> {
        (0..self.members.len())
            .filter_map(|i| self.status(i).map(|s| (i, s)))
            .filter(|(_, s)| s.primary.as_ref().is_some_and(|p| p.serving))
            .map(|(i, s)| (s.epoch, i))
            .max()
            .map(|(e, i)| (i, e))
    }

    /// Waits (polling every 10 ms) until a primary serves; returns it and its epoch.
    ///
    /// # Errors
    /// When none serves within `bound`.
    pub fn wait_primary(&mut self, bound: Duration) -> anyhow::Result<(usize, u64)> {
        let start = Instant::now();
        loop {
            if let Some(found) = self.primary() {
                return Ok(found);
            }
            if start.elapsed() > bound {
                bail!("no primary serves within {bound:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Copies every member's log into `to` (created if needed), as `n1.log`...
    ///
    /// # Errors
    /// When a directory or file cannot be written.
    pub fn copy_logs(&self, to: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
        for m in &self.members {
            let dest = to.join(format!("{}.log", m.id));
            std::fs::copy(&m.log, &dest).with_context(|| format!("writing {}", dest.display()))?;
        }
        Ok(())
    }

    /// The last lines of every member's log, for an error message.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- {} (last lines of its log):\n{}\n",
                    m.id,
                    tail(&m.log, 12)
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
