//! An in-process cluster: a primary and its followers as `Node`s in this process, each with its
//! own log directory under one directory, connected over 127.0.0.1 (followers listen on port 0;
//! the primary is configured with the ports they got). Every node is configured from TOML text
//! through `NodeConfig::parse`, as `replicator/tests/cluster.rs` does.
//!
//! Starting waits, for a bounded time, until every follower is streaming; a cluster that does
//! not get there is an error that says where each link stands.
//!
//! A TLS cluster ([`Cluster::start`] with `tls`) gets a CA and a certificate per node written into
//! its directory, and TLS on the replication link and the client port of every node.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use logship_engine::Lsn;
use logship_replicator::client::ClientTls;
use logship_replicator::config::NodeConfig;
use logship_replicator::status::FollowerStatus;
use logship_replicator::tls::generate::{write_tls_dir, Subject};
use logship_replicator::Node;

use crate::replicate::check::CommitCheck;
use crate::replicate::plan::Topology;

/// The pre-shared key every node of a bench cluster loads (at least 16 bytes of text).
const CLUSTER_KEY: &str = "logship-bench-cluster-key-0123456789abcdef";
/// The cluster id of every bench cluster.
const CLUSTER_ID: &str = "bench";
/// The primary's node id.
pub const PRIMARY_ID: &str = "p";
/// Longest a started cluster may take until every follower streams.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness and catch-up are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Settings shared by every node of a run: the `node.transport` and `log.backend` values.
#[derive(Clone, Copy, Debug)]
pub struct NodeSettings {
    /// `auto`, `portable` or `io_uring`.
    pub transport: &'static str,
    /// `auto`, `portable` or `io_uring`.
    pub log_backend: &'static str,
    /// `integrity.scrub_bytes_per_sec` of every node (0: no scrubber); `None`: the default.
    pub scrub_bytes_per_sec: Option<u64>,
}

/// A follower entry of the primary's configuration.
#[derive(Clone, Copy, Debug)]
pub struct FollowerRef<'a> {
    /// Its node id.
    pub name: &'a str,
    /// Its replication address.
    pub addr: SocketAddr,
    /// `sync` (else `async`).
    pub sync: bool,
}

/// A running cluster. The primary is shared with the clients; it stops when the last
/// reference to it goes.
#[derive(Debug)]
pub struct Cluster {
    topology: Topology,
    primary: Arc<Node>,
    followers: Vec<Arc<Node>>,
    /// What a client of a TLS cluster's client port trusts.
    client_tls: Option<ClientTls>,
}

impl Cluster {
    /// Starts `topology` in `dir` (created): followers first, then the primary (with a client
    /// port on 127.0.0.1, port 0, if `client_port`), then waits until every follower streams.
    /// With `tls`, both ports of every node run TLS.
    ///
    /// # Errors
    /// When a node does not start or the cluster is not ready within [`READY_TIMEOUT`]; when
    /// the certificates cannot be written.
    pub fn start(
        dir: &Path,
        topology: Topology,
        settings: NodeSettings,
        client_port: bool,
        tls: bool,
    ) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tls_dir = tls.then(|| dir.join("tls"));
        let client_tls = tls_dir
            .as_deref()
            .map(|d| write_certificates(d, topology))
            .transpose()?;
        let tail = |name: &str| {
            tls_dir
                .as_deref()
                .map_or(Ok(String::new()), |d| tls_toml(d, name))
        };
        let mut followers = Vec::new();
        let mut refs = Vec::new();
        for &(name, sync) in topology.followers() {
            let text = node_toml(dir, name, "follower", &dir.join(name), LISTEN_ANY, settings)?;
            let node = start_node(&(text + &tail(name)?), &format!("follower {name}"))?;
            let addr = node
                .replication_addr()
                .ok_or_else(|| anyhow!("follower {name} has no replication address"))?;
            refs.push(FollowerRef { name, addr, sync });
            followers.push(Arc::new(node));
        }
        let data = dir.join(PRIMARY_ID);
        let text = primary_toml(
            dir,
            &data,
            &refs,
            topology.quorum(),
            settings,
            client_port,
            None,
        )?;
        let primary = start_node(&(text + &tail(PRIMARY_ID)?), "the primary")?;
        let cluster = Cluster {
            topology,
            primary: Arc::new(primary),
            followers,
            client_tls,
        };
        wait_streaming(&cluster.primary, READY_TIMEOUT)
            .with_context(|| format!("cluster {} did not become ready", topology.name()))?;
        Ok(cluster)
    }

    /// What a client of the client port trusts, for a TLS cluster.
    pub fn client_tls(&self) -> Option<&ClientTls> {
        self.client_tls.as_ref()
    }

    /// The cluster's shape.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// The primary, to share with clients.
    pub fn primary(&self) -> &Arc<Node> {
        &self.primary
    }

    /// A check of commits against this cluster's durable watermarks. Drop it before
    /// [`Cluster::shutdown`].
    pub fn commit_check(&self) -> CommitCheck {
        let sync = (self.followers.iter().zip(self.topology.followers()))
            .filter(|(_, (_, sync))| *sync)
            .map(|(f, _)| Arc::clone(f))
            .collect();
        CommitCheck::new(Arc::clone(&self.primary), sync, self.topology.quorum_size())
    }

    /// Waits until every follower holds the primary's last LSN durably: the run's check that
    /// replication kept every record, async followers included.
    ///
    /// # Errors
    /// When a follower is still behind at `timeout`.
    pub fn wait_followers_caught_up(&self, timeout: Duration) -> anyhow::Result<()> {
        let last = self.primary.log().last_lsn();
        let deadline = Instant::now() + timeout;
        for f in &self.followers {
            let left = deadline.saturating_duration_since(Instant::now());
            wait_durable(f, last, left)
                .with_context(|| format!("follower {} behind the primary", f.status().node_id))?;
        }
        Ok(())
    }

    /// Stops the primary, then the followers.
    ///
    /// # Errors
    /// When a client or a check still holds a node (it stops when that holder lets go).
    pub fn shutdown(self) -> anyhow::Result<()> {
        let primary = Arc::try_unwrap(self.primary);
        let mut held = match primary {
            Ok(p) => {
                p.shutdown();
                false
            }
            Err(_) => true,
        };
        for f in self.followers {
            match Arc::try_unwrap(f) {
                Ok(f) => f.shutdown(),
                Err(_) => held = true,
            }
        }
        if held {
            bail!("a client still holds a node at shutdown: it stops when that client ends");
        }
        Ok(())
    }
}

/// The key file in `dir`, written if missing.
fn key_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("cluster.key");
    if !path.exists() {
        std::fs::write(&path, CLUSTER_KEY)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

/// A TOML basic string holding `path` (JSON string escapes are valid TOML ones).
fn toml_path(path: &Path) -> anyhow::Result<String> {
    let s = path
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", path.display()))?;
    Ok(serde_json::to_string(s)?)
}

/// The `[node]` and `[log]` sections shared by both roles.
fn node_toml(
    dir: &Path,
    id: &str,
    role: &str,
    data_dir: &Path,
    listen: &str,
    settings: NodeSettings,
) -> anyhow::Result<String> {
    Ok(format!(
        "[node]\nid = \"{id}\"\nrole = \"{role}\"\ncluster_id = \"{CLUSTER_ID}\"\n\
         key_file = {}\ndata_dir = {}\ntransport = \"{}\"\n{listen}\
         [log]\nbackend = \"{}\"\n{}",
        toml_path(&key_file(dir)?)?,
        toml_path(data_dir)?,
        settings.transport,
        settings.log_backend,
        settings.scrub_bytes_per_sec.map_or(String::new(), |r| {
            format!("[integrity]\nscrub_bytes_per_sec = {r}\n")
        })
    ))
}

/// A follower's replication address before it starts: 127.0.0.1, the port it picks.
const LISTEN_ANY: &str = "listen_replication = \"127.0.0.1:0\"\n";

/// Writes a CA and a certificate for every node of `topology` into `dir`; returns what a client
/// of the client port trusts.
fn write_certificates(dir: &Path, topology: Topology) -> anyhow::Result<ClientTls> {
    let names = std::iter::once(PRIMARY_ID).chain(topology.followers().iter().map(|f| f.0));
    let subject = |name: &str| Subject {
        name: name.to_string(),
        extra_names: Vec::new(),
    };
    let nodes: Vec<Subject> = names.map(subject).collect();
    write_tls_dir(dir, &nodes, &[]).context("writing the cluster's certificates")?;
    Ok(ClientTls::from_files(&dir.join("ca.crt"), None)?)
}

/// The `[tls]` table of node `name`, whose files are in `dir`.
fn tls_toml(dir: &Path, name: &str) -> anyhow::Result<String> {
    Ok(format!(
        "\n[tls]\ncert_file = {}\nkey_file = {}\nca_file = {}\n",
        toml_path(&dir.join(format!("{name}.crt")))?,
        toml_path(&dir.join(format!("{name}.key")))?,
        toml_path(&dir.join("ca.crt"))?,
    ))
}

fn start_node(text: &str, what: &str) -> anyhow::Result<Node> {
    start_node_on(text, what, None)
}

/// [`start_node`], serving `listener` (bound to the config's replication address and
/// listening) instead of binding that address.
fn start_node_on(text: &str, what: &str, listener: Option<TcpListener>) -> anyhow::Result<Node> {
    let mut config = NodeConfig::parse(text)
        .map_err(|e| anyhow!("{what}: configuration does not parse: {e}\n{text}"))?;
    config.replication_listener = listener.map(Arc::new);
    Node::start(config).with_context(|| format!("starting {what}"))
}

/// Starts a follower `name` with its log in `dir/name`, listening on 127.0.0.1, port 0.
///
/// # Errors
/// When the node does not start.
pub fn start_follower(dir: &Path, name: &str, settings: NodeSettings) -> anyhow::Result<Node> {
    let listen = "listen_replication = \"127.0.0.1:0\"\n";
    let text = node_toml(dir, name, "follower", &dir.join(name), listen, settings)?;
    start_node(&text, &format!("follower {name}"))
}

/// [`start_follower`], serving `listener`: bound (and listening) at an address the primary
/// was configured with before the follower started, so the port was never free meanwhile.
///
/// # Errors
/// When the node does not start.
pub fn start_follower_on(
    dir: &Path,
    name: &str,
    listener: TcpListener,
    settings: NodeSettings,
) -> anyhow::Result<Node> {
    let addr = listener.local_addr().context("the listener's address")?;
    let listen = format!("listen_replication = \"{addr}\"\n");
    let text = node_toml(dir, name, "follower", &dir.join(name), &listen, settings)?;
    start_node_on(&text, &format!("follower {name}"), Some(listener))
}

/// Starts the primary with its log in `data_dir` and these followers and quorum; with
/// `client_port`, it also serves clients on 127.0.0.1, port 0 (`Node::client_addr` says which
/// port it got).
///
/// # Errors
/// When the node does not start.
pub fn start_primary(
    dir: &Path,
    data_dir: &Path,
    followers: &[FollowerRef<'_>],
    quorum: Option<&str>,
    settings: NodeSettings,
    client_port: bool,
) -> anyhow::Result<Node> {
    start_primary_with(
        dir,
        data_dir,
        followers,
        quorum,
        settings,
        client_port,
        None,
    )
}

/// [`start_primary`], with `replication.catch_up_latency_target_ms` set if `target_ms` is.
///
/// # Errors
/// When the node does not start.
pub fn start_primary_with(
    dir: &Path,
    data_dir: &Path,
    followers: &[FollowerRef<'_>],
    quorum: Option<&str>,
    settings: NodeSettings,
    client_port: bool,
    target_ms: Option<f64>,
) -> anyhow::Result<Node> {
    let text = primary_toml(
        dir,
        data_dir,
        followers,
        quorum,
        settings,
        client_port,
        target_ms,
    )?;
    start_node(&text, "the primary")
}

/// The primary's configuration text (see [`start_primary_with`]).
fn primary_toml(
    dir: &Path,
    data_dir: &Path,
    followers: &[FollowerRef<'_>],
    quorum: Option<&str>,
    settings: NodeSettings,
    client_port: bool,
    target_ms: Option<f64>,
) -> anyhow::Result<String> {
    let list: Vec<String> = followers
        .iter()
        .map(|f| {
            let mode = if f.sync { "sync" } else { "async" };
            format!(
                "{{ name = \"{}\", addr = \"{}\", mode = \"{mode}\" }}",
                f.name, f.addr
            )
        })
        .collect();
    let mut quorum = quorum.map_or_else(String::new, |q| format!("quorum = \"{q}\"\n"));
    if let Some(t) = target_ms {
        quorum += &format!("catch_up_latency_target_ms = {t:.3}\n");
    }
    let listen = if client_port {
        "listen_client = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    Ok(
        node_toml(dir, PRIMARY_ID, "primary", data_dir, listen, settings)?
            + &format!("[replication]\n{quorum}followers = [{}]\n", list.join(", ")),
    )
}

/// Waits until every follower of `primary` is healthy and streaming.
///
/// # Errors
/// When one is not at `timeout`, naming each link's phase and last error.
pub fn wait_streaming(primary: &Node, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let status = primary.status();
        let followers = status.primary.map(|p| p.followers).unwrap_or_default();
        if followers.iter().all(|f| f.healthy) {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            bail!(
                "followers not streaming after {timeout:?}: {}",
                describe(&followers)
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// `f1: phase=connecting healthy=false last_error=...; ...`.
pub fn describe(followers: &[FollowerStatus]) -> String {
    followers
        .iter()
        .map(|f| {
            format!(
                "{}: phase={:?} healthy={} durable_lsn={} last_error={}",
                f.name,
                f.phase,
                f.healthy,
                f.durable_lsn,
                f.last_error.as_deref().unwrap_or("none")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Waits until `node`'s log is durable to `lsn`, up to `timeout`.
///
/// # Errors
/// When it is not, with how far it got.
pub fn wait_durable(node: &Node, lsn: Lsn, timeout: Duration) -> anyhow::Result<()> {
    let durable = node.wait_durable(lsn, timeout);
    if durable < lsn {
        bail!("durable to {durable} of {lsn} after {timeout:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use logship_replicator::DurabilityLevel;

    use super::*;
    use crate::scratch::Scratch;

    const SETTINGS: NodeSettings = NodeSettings {
        scrub_bytes_per_sec: None,
        transport: "portable",
        log_backend: "portable",
    };

    #[test]
    fn a_cluster_starts_commits_checks_and_stops() {
        let scratch = Scratch::create(&std::env::temp_dir()).unwrap();
        let cluster = Cluster::start(
            scratch.path(),
            Topology::OneSyncOneAsync,
            SETTINGS,
            false,
            false,
        )
        .unwrap();
        let check = cluster.commit_check();
        for _ in 0..20 {
            let commit = cluster
                .primary()
                .append(Bytes::from_static(b"x"), DurabilityLevel::RemoteDurable)
                .unwrap();
            check.commit_resolved(commit.wait().unwrap());
        }
        assert_eq!(check.take(), (0, None));
        cluster
            .wait_followers_caught_up(Duration::from_secs(10))
            .unwrap();
        drop(check);
        cluster.shutdown().unwrap();
        scratch.remove().unwrap();
    }

    #[test]
    fn a_follower_that_never_answers_is_a_clear_error() {
        let scratch = Scratch::create(&std::env::temp_dir()).unwrap();
        // A follower that never answers: a listener held for the whole test and never
        // accepted from (the kernel completes the connection; no handshake ever comes back).
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let link = FollowerRef {
            name: "f1",
            addr,
            sync: true,
        };
        let data = scratch.path().join(PRIMARY_ID);
        let primary = start_primary(scratch.path(), &data, &[link], None, SETTINGS, false).unwrap();
        let start = Instant::now();
        let e = wait_streaming(&primary, Duration::from_millis(300)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        let e = e.to_string();
        assert!(
            e.contains("f1: phase=") && e.contains("healthy=false"),
            "{e}"
        );
        primary.shutdown();
        drop(silent);
        scratch.remove().unwrap();
    }

    #[test]
    fn a_check_counts_commits_no_node_holds() {
        let scratch = Scratch::create(&std::env::temp_dir()).unwrap();
        let cluster =
            Cluster::start(scratch.path(), Topology::OneSync, SETTINGS, false, false).unwrap();
        let check = cluster.commit_check();
        check.commit_resolved(Lsn(1_000_000));
        let (early, first) = check.take();
        assert_eq!(early, 1);
        assert!(first.unwrap().contains("LSN 1000000"));
        drop(check);
        cluster.shutdown().unwrap();
        scratch.remove().unwrap();
    }
}
