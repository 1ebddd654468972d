//! The node's configuration file (TOML). Unknown keys are refused; [`NodeConfig::load`] checks
//! every value and names the bad key. Relative paths are relative to the file's directory.
//!
//! ```toml
//! [node]
//! id = "p1"
//! role = "primary"                 # or "follower"; left out with automatic failover
//! cluster_id = "demo"
//! key_file = "cluster.key"
//! data_dir = "data/p1"
//! listen_replication = "127.0.0.1:7001"   # followers: where the primary connects
//! listen_client = "127.0.0.1:7101"
//! listen_http = "127.0.0.1:7201"
//!
//! [replication]                    # primary only
//! quorum = "ANY 1 (f1, f2)"
//! policy = "block"                 # or "degrade"
//! followers = [
//!   { name = "f1", addr = "127.0.0.1:7002", mode = "sync" },
//!   { name = "f2", addr = "127.0.0.1:7003", mode = "async" },
//! ]
//! ```
//!
//! A `[cluster]` table lists every member instead of `replication.followers`; with automatic
//! failover (the default with three or more voters) the members elect the primary and
//! `node.role` is left out:
//!
//! ```toml
//! [cluster]
//! members = [
//!   { id = "n1", replication = "127.0.0.1:7001", client = "127.0.0.1:7101" },
//!   { id = "n2", replication = "127.0.0.1:7002", client = "127.0.0.1:7102" },
//!   { id = "n3", replication = "127.0.0.1:7003", client = "127.0.0.1:7103" },
//!   { id = "n4", replication = "127.0.0.1:7004", mode = "async", voter = false },
//! ]
//! quorum = "ANY 1"                 # over the sync members; the primary leaves itself out
//! ```
//!
//! Keys. `node.key_file` holds the cluster key ring: one key per line (blank lines and `#`
//! comments skipped), the first the one this node proves with, every one accepted from peers.
//! An optional `[clients]` table turns on client authentication on the client port:
//!
//! ```toml
//! [clients]
//! keys_file = "clients.keys"       # lines of `<name> <grants> <key>`; grants: append,read,admin
//! ```
//!
//! Without `[clients]` the client port serves anyone who can reach it (bind it to loopback or a
//! trusted network). With it, a connection completes a challenge-response before any request,
//! within `timeouts.client_request_ms`, and each request needs its grant (`append` for appends,
//! `read` for reads, `admin` for promote; status is answered to any authenticated client). Both
//! files are read again on `Node::reload_keys` (SIGHUP for `logship node`); the format of the
//! client keys file is `protocol::client_auth`'s, and docs/operations.md gives the rotation
//! procedure.
//!
//! A `[tls]` table turns TLS on (docs/operations.md, "TLS"); without it every port is plain
//! TCP. The HTTP port (metrics, health) stays plain either way:
//!
//! ```toml
//! [tls]
//! cert_file = "tls/p1.crt"         # this node's certificate (its node id as a DNS name)
//! key_file = "tls/p1.key"
//! ca_file = "tls/ca.crt"           # peers' and clients' certificates must chain to it
//! client_auth = "none"             # or "required": clients present a certificate (mTLS)
//! replication = true               # default true: TLS between nodes, both sides present certificates
//! client_port = true               # default true
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::backoff::BackoffConfig;
use crate::breaker::BreakerConfig;
use crate::commit::QuorumPolicy;
use crate::error::{Error, Result};
use crate::pacing::{PacingConfig, DEFAULT_MIN_BYTES_PER_SEC};
use crate::quorum::QuorumSpec;
use crate::transport::NetBackend;
use crate::vocab::{
    FollowerLink, Timeouts, DEFAULT_CATCH_UP_CHUNK_BYTES, DEFAULT_MAX_INFLIGHT_BYTES,
};

/// Largest `replication.catch_up_latency_target_ms`.
pub const MAX_CATCH_UP_LATENCY_TARGET_MS: f64 = 60_000.0;
/// Smallest `replication.catch_up_latency_target_ms`: a tenth of a millisecond, below any
/// commit that includes an fdatasync.
pub const MIN_CATCH_UP_LATENCY_TARGET_MS: f64 = 0.1;
/// Smallest `replication.catch_up_min_bytes_per_sec`.
pub const MIN_CATCH_UP_MIN_BYTES_PER_SEC: u64 = 64 << 10;

/// Default time written records may wait for an fdatasync before the disk counts as stalled.
pub const DEFAULT_DISK_STALL_MS: u64 = 5_000;
/// Default `timeouts.client_idle_ms`: a client connection with no request in flight and no
/// bytes for this long is closed.
pub const DEFAULT_CLIENT_IDLE_MS: u64 = 60_000;
/// Default `timeouts.client_request_ms`: a request frame must arrive whole within this long of
/// its first byte, or its connection is closed (slow senders cannot hold a connection).
pub const DEFAULT_CLIENT_REQUEST_MS: u64 = 10_000;
/// Default `node.max_client_connections_per_address`.
pub const DEFAULT_CLIENT_CONNECTIONS_PER_ADDRESS: usize = 64;

/// Default wait before the `degrade` policy acknowledges at local durability.
pub const DEFAULT_DEGRADE_AFTER: Duration = Duration::from_secs(2);

/// Default lower bound of the randomized election timeout, milliseconds.
pub const DEFAULT_ELECTION_TIMEOUT_MIN_MS: u64 = 1000;
/// Default upper bound of the randomized election timeout, milliseconds.
pub const DEFAULT_ELECTION_TIMEOUT_MAX_MS: u64 = 2000;

/// The node's role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes appends and streams them.
    Primary,
    /// Receives the stream.
    Follower,
    /// The cluster's election decides; needs a `[cluster]` table with failover. The default
    /// when `node.role` is left out.
    #[default]
    Elected,
}

/// The log's hot-path backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogBackend {
    /// Chosen by measurement (portable).
    #[default]
    Auto,
    /// io_uring.
    IoUring,
    /// pwrite + fdatasync.
    Portable,
    /// io_uring with `O_DIRECT | O_DSYNC` writes (`io_uring_direct`, alias `direct`).
    #[serde(alias = "direct")]
    IoUringDirect,
}

/// A follower's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// May count in the sync quorum.
    Sync,
    /// Never waited for.
    Async,
}

/// What to do without a quorum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Wait up to the commit timeout, then fail.
    #[default]
    Block,
    /// After `degrade_after_ms`, acknowledge at local durability.
    Degrade,
}

/// `[node]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's id: 1-255 characters of `A-Z a-z 0-9 _ . -`.
    pub id: String,
    /// `primary` or `follower`; left out (`elected`) when the `[cluster]` table has failover.
    #[serde(default)]
    pub role: Role,
    /// The cluster id, same rules as `id`; every node of a cluster has the same.
    pub cluster_id: String,
    /// File holding the pre-shared cluster key (at least 16 bytes of text).
    pub key_file: PathBuf,
    /// The log's directory (created if missing).
    pub data_dir: PathBuf,
    /// Where a follower listens for its primary. Required for followers without a `[cluster]`
    /// table; with one it defaults to this member's `replication` address (read it with
    /// [`NodeConfig::listen_replication`]).
    pub listen_replication: Option<SocketAddr>,
    /// The client port (append, read, status). Optional.
    pub listen_client: Option<SocketAddr>,
    /// HTTP for `/metrics`, `/health/live`, `/health/ready`. Optional.
    pub listen_http: Option<SocketAddr>,
    /// Client connections from one remote address (IP) served at once; more are closed at
    /// accept. Default 64.
    pub max_client_connections_per_address: Option<usize>,
    /// Replication transport: `auto` (portable, by measurement), `io_uring`, `portable`.
    #[serde(default)]
    pub transport: NetBackend,
}

/// `[log]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// Segment size; default 64 MiB.
    pub segment_size_bytes: Option<u64>,
    /// Largest record; default 4 MiB.
    pub max_record_bytes: Option<usize>,
    /// Drop the page-cache pages of records received from a primary once they are durable
    /// (`logship_engine::Options::drop_behind_replicated`); default `true`.
    pub drop_behind_replicated: Option<bool>,
    /// `auto`, `io_uring`, `portable` or `io_uring_direct`.
    #[serde(default)]
    pub backend: LogBackend,
}

/// One entry of `replication.followers`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowerEntry {
    /// The follower's node id.
    pub name: String,
    /// Its `listen_replication` address.
    pub addr: SocketAddr,
    /// `sync` or `async`.
    pub mode: Mode,
}

/// `[replication]` (primary).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationSection {
    /// `FIRST k (a, b)`, `ANY k (a, b)` or `a, b`; default `FIRST 1 (<sync followers>)`.
    pub quorum: Option<String>,
    /// `block` (default) or `degrade`.
    pub policy: Policy,
    /// For `degrade`: quorum missing this long before acknowledging at local durability.
    pub degrade_after_ms: u64,
    /// Bytes behind past which an async follower stops holding back purges. Default: none.
    pub max_retained_bytes: Option<u64>,
    /// Unacknowledged bytes per follower before reading from the log. Default 32 MiB.
    pub max_inflight_bytes: u64,
    /// Catch-up chunk size. Default 4 MiB.
    pub catch_up_chunk_bytes: usize,
    /// The p99 of foreground commit latency (an append waiting for a remote level, from the log
    /// taking it to `remote_durable`) that catch-up is paced to keep under, in milliseconds,
    /// fractions allowed (0.1 to 60000: a commit p99 of 1.2 ms wants a target of 1.5, not 2).
    /// Default: none, catch-up unpaced.
    pub catch_up_latency_target_ms: Option<f64>,
    /// The pacing's floor: catch-up is never paced below this many bytes per second (at least
    /// 64 KiB). Default 4 MiB.
    pub catch_up_min_bytes_per_sec: u64,
    /// The followers.
    pub followers: Vec<FollowerEntry>,
}

impl ReplicationSection {
    /// The catch-up pacing these keys ask for (`None` without a latency target).
    pub fn catch_up_pacing(&self) -> Option<PacingConfig> {
        let target = self.catch_up_latency_target_ms?;
        Some(PacingConfig {
            latency_target: Duration::from_secs_f64(target / 1e3),
            min_bytes_per_sec: self.catch_up_min_bytes_per_sec,
        })
    }

    fn validate_pacing(&self) -> Result<()> {
        if let Some(t) = self.catch_up_latency_target_ms {
            if !(MIN_CATCH_UP_LATENCY_TARGET_MS..=MAX_CATCH_UP_LATENCY_TARGET_MS).contains(&t) {
                return Err(Error::config(
                    "replication.catch_up_latency_target_ms",
                    format!(
                        "{t} is not between {MIN_CATCH_UP_LATENCY_TARGET_MS} and \
                         {MAX_CATCH_UP_LATENCY_TARGET_MS} (omit it for unpaced catch-up)"
                    ),
                ));
            }
        }
        if self.catch_up_min_bytes_per_sec < MIN_CATCH_UP_MIN_BYTES_PER_SEC {
            return Err(Error::config(
                "replication.catch_up_min_bytes_per_sec",
                format!("must be at least {MIN_CATCH_UP_MIN_BYTES_PER_SEC}"),
            ));
        }
        Ok(())
    }
}

impl Default for ReplicationSection {
    fn default() -> ReplicationSection {
        ReplicationSection {
            quorum: None,
            policy: Policy::Block,
            degrade_after_ms: DEFAULT_DEGRADE_AFTER.as_millis() as u64,
            max_retained_bytes: None,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            catch_up_chunk_bytes: DEFAULT_CATCH_UP_CHUNK_BYTES,
            catch_up_latency_target_ms: None,
            catch_up_min_bytes_per_sec: DEFAULT_MIN_BYTES_PER_SEC,
            followers: Vec::new(),
        }
    }
}

/// One entry of `cluster.members`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    /// The member's node id (its `node.id`).
    pub id: String,
    /// Its replication address: where it listens for a primary and for election requests.
    pub replication: SocketAddr,
    /// Its client address, given to clients as a leader hint. Optional.
    #[serde(default)]
    pub client: Option<SocketAddr>,
    /// It votes in elections. Default `true`.
    #[serde(default = "default_voter")]
    pub voter: bool,
    /// `sync` (default: may count in the quorum, and stand for election if a voter) or `async`.
    #[serde(default = "default_mode")]
    pub mode: Mode,
}

fn default_voter() -> bool {
    true
}

fn default_mode() -> Mode {
    Mode::Sync
}

/// `[cluster]`: every member of the cluster, the same table on every node. It replaces
/// `replication.followers`: a primary streams to every other member.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Every member, this node included.
    pub members: Vec<MemberEntry>,
    /// `FIRST k` or `ANY k` over the sync members (a written-out `ANY k (a, b)` names sync
    /// members only). Default: `FIRST k` over the sync members with the smallest k that keeps
    /// acknowledged appends through a failover (1 without failover).
    pub quorum: Option<String>,
    /// `block` (default) or `degrade`.
    pub policy: Policy,
    /// For `degrade`: quorum missing this long before acknowledging at local durability.
    pub degrade_after_ms: u64,
    /// Lower bound of the randomized election timeout; at least `timeouts.peer_ms`. Default 1000.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout; above the lower. Default 2000.
    pub election_timeout_max_ms: u64,
    /// Automatic failover: the members elect the primary. Default: on with three or more voters.
    pub failover: Option<bool>,
    /// Accept a quorum too small for every acknowledged append to survive a failover.
    pub allow_unsafe_quorum: bool,
}

impl Default for ClusterSection {
    fn default() -> ClusterSection {
        ClusterSection {
            members: Vec::new(),
            quorum: None,
            policy: Policy::Block,
            degrade_after_ms: DEFAULT_DEGRADE_AFTER.as_millis() as u64,
            election_timeout_min_ms: DEFAULT_ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: DEFAULT_ELECTION_TIMEOUT_MAX_MS,
            failover: None,
            allow_unsafe_quorum: false,
        }
    }
}

impl ClusterSection {
    /// How many members vote.
    pub fn voters(&self) -> usize {
        self.members.iter().filter(|m| m.voter).count()
    }

    /// Whether the members elect the primary: `failover`, or by default three or more voters.
    pub fn failover_on(&self) -> bool {
        self.failover.unwrap_or(self.voters() >= 3)
    }

    /// The member named `id`, by index.
    pub fn member(&self, id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    fn sync_ids(&self) -> Vec<&str> {
        (self.members.iter())
            .filter(|m| m.mode == Mode::Sync)
            .map(|m| m.id.as_str())
            .collect()
    }
}

/// Failover settings when the cluster elects its primary: the members, this node's index, the
/// election timeout bounds, and the quorum over member ids (a [`QuorumSpec`] listing the sync
/// members, or the one written out; the elected primary leaves itself out of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverSettings {
    /// Every member in the table's order; `addr` is its replication address.
    pub members: Vec<crate::vocab::Member>,
    /// This node's index in `members`.
    pub me: usize,
    /// Bounds of the randomized election timeout.
    pub timeout: (Duration, Duration),
    /// The sync quorum over member ids, this node included (`None`: no sync member besides a
    /// primary to wait for, accepted only with `allow_unsafe_quorum`).
    pub quorum: Option<QuorumSpec>,
    /// What happens without a quorum.
    pub policy: QuorumPolicy,
    /// The quorum rule was waived: a failover may lose acknowledged appends.
    pub allow_unsafe_quorum: bool,
}

/// `[timeouts]`, milliseconds. Defaults and reasons: docs/fault-tolerance.md.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsSection {
    /// TCP connect. Default 1000.
    pub connect_ms: u64,
    /// Connection to streaming. Default 2000.
    pub handshake_ms: u64,
    /// Heartbeat interval. Default 100.
    pub heartbeat_interval_ms: u64,
    /// Silence before a peer is unhealthy. Default 1000.
    pub peer_ms: u64,
    /// Append wait under `block`. Default 5000.
    pub commit_ms: u64,
    /// One catch-up read. Default 5000.
    pub catch_up_read_ms: u64,
    /// Written records waiting this long for an fdatasync make the disk "stalled": the node
    /// stops voting and standing, and a primary steps down (with failover). Default 5000.
    pub disk_stall_ms: u64,
    /// A client connection idle this long (no request in flight, no bytes) is closed.
    /// Default 60000.
    pub client_idle_ms: u64,
    /// A client request frame must arrive whole within this long of its first byte. Default
    /// 10000.
    pub client_request_ms: u64,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Default for TimeoutsSection {
    fn default() -> TimeoutsSection {
        let t = Timeouts::default();
        TimeoutsSection {
            connect_ms: ms(t.connect),
            handshake_ms: ms(t.handshake),
            heartbeat_interval_ms: ms(t.heartbeat_interval),
            peer_ms: ms(t.peer),
            commit_ms: ms(t.commit),
            catch_up_read_ms: ms(t.catch_up_read),
            disk_stall_ms: DEFAULT_DISK_STALL_MS,
            client_idle_ms: DEFAULT_CLIENT_IDLE_MS,
            client_request_ms: DEFAULT_CLIENT_REQUEST_MS,
        }
    }
}

/// The client port's bounds ([`NodeConfig::client_limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Connections from one remote address at once.
    pub per_address: usize,
    /// No request in flight and no bytes for this long: the connection is closed.
    pub idle: Duration,
    /// A request frame must arrive whole within this long of its first byte.
    pub request: Duration,
}

/// `[backoff]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffSection {
    /// First delay cap, ms. Default 50.
    pub initial_ms: u64,
    /// Growth per attempt. Default 2.
    pub multiplier: f64,
    /// Largest delay cap, ms. Default 5000.
    pub max_ms: u64,
}

impl Default for BackoffSection {
    fn default() -> BackoffSection {
        let b = BackoffConfig::default();
        BackoffSection {
            initial_ms: ms(b.initial),
            multiplier: b.multiplier,
            max_ms: ms(b.max),
        }
    }
}

/// `[breaker]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// Consecutive failures that open it. Default 5.
    pub failure_threshold: u32,
    /// Open time before a probe, ms. Default 2000.
    pub reset_timeout_ms: u64,
    /// Probe successes that close it. Default 3.
    pub success_threshold: u32,
}

impl Default for BreakerSection {
    fn default() -> BreakerSection {
        let b = BreakerConfig::default();
        BreakerSection {
            failure_threshold: b.failure_threshold,
            reset_timeout_ms: ms(b.reset_timeout),
            success_threshold: b.success_threshold,
        }
    }
}

/// Default scrubber rate: 8 MiB/s, a 64 MiB segment in 8 s, 1 GiB in about two minutes.
pub const DEFAULT_SCRUB_BYTES_PER_SEC: u64 = 8 << 20;
/// Default bytes per scrubber step.
pub const DEFAULT_SCRUB_STEP_BYTES: u64 = 256 << 10;
/// Default pause between two scrubber passes.
pub const DEFAULT_SCRUB_PAUSE_MS: u64 = 10_000;

/// `[integrity]`: the scrubber, digest comparison between replicas, and repair.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegritySection {
    /// Bytes the scrubber reads per second (0: no scrubbing). Default 8 MiB/s.
    pub scrub_bytes_per_sec: u64,
    /// Bytes per scrubber step, 4 KiB to 16 MiB. Default 256 KiB.
    pub scrub_step_bytes: u64,
    /// Pause after each full pass, milliseconds. Default 10,000.
    pub scrub_pause_ms: u64,
    /// LSNs per digest range (every node of a cluster must use the same). Default 16,384.
    pub digest_range_records: u64,
    /// Repair damaged segments from a replica by itself. Default `true`.
    pub repair: bool,
    /// When the node has replicas (a primary with followers, or a follower), open the log with
    /// `RecoveryMode::Salvage`: damage is set aside (quarantined, or marked for repair) instead
    /// of refusing to start, and the records come back from a replica. Default `true`.
    pub salvage: bool,
}

impl Default for IntegritySection {
    fn default() -> IntegritySection {
        IntegritySection {
            scrub_bytes_per_sec: DEFAULT_SCRUB_BYTES_PER_SEC,
            scrub_step_bytes: DEFAULT_SCRUB_STEP_BYTES,
            scrub_pause_ms: DEFAULT_SCRUB_PAUSE_MS,
            digest_range_records: logship_engine::DEFAULT_DIGEST_RANGE_RECORDS,
            repair: true,
            salvage: true,
        }
    }
}

/// `[follower]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FollowerSection {
    /// Applied follows durable (no application reports it). Default `true` for the `logship
    /// node` binary; embedders that apply records set it to `false`.
    pub auto_apply: bool,
}

impl Default for FollowerSection {
    fn default() -> FollowerSection {
        FollowerSection { auto_apply: true }
    }
}

/// `[clients]`: client authentication on the client port.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsSection {
    /// The client keys file: one `<name> <grants> <key>` line per key (no default; relative
    /// to the config file's directory). Read at start and on every key reload.
    pub keys_file: PathBuf,
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `[node]`.
    pub node: NodeSection,
    /// `[log]`.
    #[serde(default)]
    pub log: LogSection,
    /// `[replication]`.
    #[serde(default)]
    pub replication: ReplicationSection,
    /// `[timeouts]`.
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    /// `[backoff]`.
    #[serde(default)]
    pub backoff: BackoffSection,
    /// `[breaker]`.
    #[serde(default)]
    pub breaker: BreakerSection,
    /// `[follower]`.
    #[serde(default)]
    pub follower: FollowerSection,
    /// `[integrity]`.
    #[serde(default)]
    pub integrity: IntegritySection,
    /// `[cluster]`: the members, for automatic failover or a fixed primary.
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// `[clients]`: client authentication (none: the client port is open).
    #[serde(default)]
    pub clients: Option<ClientsSection>,
    /// `[tls]`: TLS on the replication link and the client port; plain TCP without it.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// A file system for the log instead of the real one: the fault-injecting one, for tests
    /// of an embedded node. Never read from a config file.
    #[serde(skip)]
    pub log_vfs: Option<std::sync::Arc<dyn logship_engine::io::Vfs>>,
    /// A socket already bound to [`NodeConfig::listen_replication`] and listening, which the
    /// node serves instead of binding that address: one a parent process handed over (see
    /// [`crate::transport::handover`]), so the port is never free between bind and serve. The
    /// node serves a duplicate of it; a node without a replication address ignores it. Never
    /// read from a config file.
    #[serde(skip)]
    pub replication_listener: Option<std::sync::Arc<std::net::TcpListener>>,
}

/// `[tls]`: TLS on the replication link and the client port (rustls). Files are PEM; relative
/// paths are relative to the config file's directory. Reread by [`crate::Node::reload_tls`]
/// (SIGHUP to `logship node`) for new connections.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// This node's certificate chain, leaf first. Its subject alternative names must include
    /// the node id (the name peers verify it for) and whatever clients connect by.
    pub cert_file: PathBuf,
    /// This node's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The CA certificates that peers' (and with `client_auth = "required"`, clients')
    /// certificates must chain to.
    pub ca_file: PathBuf,
    /// `none` (default) or `required`: the client port asks clients for a certificate from
    /// `ca_file`. Replication peers always present theirs.
    #[serde(default)]
    pub client_auth: crate::tls::ClientAuth,
    /// TLS on the replication link (between nodes). Default `true`. Every member of a cluster
    /// must have the same setting.
    #[serde(default = "default_true")]
    pub replication: bool,
    /// TLS on the client port. Default `true`.
    #[serde(default = "default_true")]
    pub client_port: bool,
}

fn default_true() -> bool {
    true
}

impl TlsSection {
    /// The files, as the TLS module takes them.
    pub fn files(&self) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            ca_file: self.ca_file.clone(),
            client_auth: self.client_auth,
        }
    }

    fn validate(&self) -> Result<()> {
        for (key, path) in [
            ("tls.cert_file", &self.cert_file),
            ("tls.key_file", &self.key_file),
            ("tls.ca_file", &self.ca_file),
        ] {
            if path.as_os_str().is_empty() {
                return Err(Error::config(key, "must name a file"));
            }
        }
        if !self.replication && !self.client_port {
            return Err(Error::config(
                "tls",
                "neither replication nor client_port is on: leave the [tls] table out instead",
            ));
        }
        Ok(())
    }
}

fn check_name(key: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 255
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("{v:?} must be 1-255 characters of A-Z a-z 0-9 _ . -"),
        ))
    }
}

fn positive(key: &str, v: u64) -> Result<Duration> {
    if v == 0 {
        return Err(Error::config(key, "must be greater than 0"));
    }
    Ok(Duration::from_millis(v))
}

impl NodeConfig {
    /// Reads, parses and validates `path`; relative paths in it become relative to its
    /// directory.
    ///
    /// # Errors
    /// [`Error::ConfigParse`] (naming the key and line), [`Error::InvalidConfig`].
    pub fn load(path: &Path) -> Result<NodeConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigParse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut c = NodeConfig::parse(&text).map_err(|message| Error::ConfigParse {
            path: path.to_path_buf(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        c.node.key_file = base.join(&c.node.key_file);
        c.node.data_dir = base.join(&c.node.data_dir);
        if let Some(clients) = &mut c.clients {
            clients.keys_file = base.join(&clients.keys_file);
        }
        if let Some(t) = &mut c.tls {
            for f in [&mut t.cert_file, &mut t.key_file, &mut t.ca_file] {
                *f = base.join(&*f);
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Parses TOML text (not validated).
    ///
    /// # Errors
    /// The parser's message.
    pub fn parse(text: &str) -> std::result::Result<NodeConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Checks every value; the error names the first bad key.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`].
    pub fn validate(&self) -> Result<()> {
        check_name("node.id", &self.node.id)?;
        check_name("node.cluster_id", &self.node.cluster_id)?;
        self.validate_cluster()?;
        self.validate_role()?;
        self.timeouts()?;
        self.disk_stall()?;
        self.client_limits()?;
        self.backoff()?;
        self.breaker()?;
        self.validate_followers()?;
        self.validate_clients()?;
        self.quorum()?;
        self.replication.validate_pacing()?;
        if let Some(t) = &self.tls {
            t.validate()?;
            self.validate_tls_names(t)?;
        }
        if self.replication.catch_up_chunk_bytes < 64 << 10
            || self.replication.catch_up_chunk_bytes > 8 << 20
        {
            return Err(Error::config(
                "replication.catch_up_chunk_bytes",
                "must be between 64 KiB and 8 MiB",
            ));
        }
        if self.replication.max_inflight_bytes < self.replication.catch_up_chunk_bytes as u64 {
            return Err(Error::config(
                "replication.max_inflight_bytes",
                "must be at least catch_up_chunk_bytes",
            ));
        }
        let i = &self.integrity;
        if !(4 << 10..=16 << 20).contains(&i.scrub_step_bytes) {
            return Err(Error::config(
                "integrity.scrub_step_bytes",
                "must be between 4 KiB and 16 MiB",
            ));
        }
        positive("integrity.digest_range_records", i.digest_range_records)?;
        if self.replication.policy == Policy::Degrade {
            positive(
                "replication.degrade_after_ms",
                self.replication.degrade_after_ms,
            )?;
        }
        // A catch-up chunk of one record may carry the write markers before it (two at most).
        let frame_room = crate::protocol::frame::DEFAULT_MAX_BODY_BYTES
            - crate::protocol::msg::RECORDS_PREFIX_BYTES
            - logship_engine::record::RECORD_HEADER_BYTES
            - 2 * logship_engine::record::MARKER_BYTES;
        if self.log.max_record_bytes.is_some_and(|m| m > frame_room) {
            return Err(Error::config(
                "log.max_record_bytes",
                format!("at most {frame_room}: a record must fit in one replication frame"),
            ));
        }
        self.log_options().validate().map_err(|e| match e {
            logship_engine::Error::InvalidOptions { key, reason } => {
                Error::config(format!("log.{key}"), reason)
            }
            other => Error::config("log", other.to_string()),
        })
    }

    fn validate_clients(&self) -> Result<()> {
        let Some(clients) = &self.clients else {
            return Ok(());
        };
        if clients.keys_file.as_os_str().is_empty() {
            return Err(Error::config("clients.keys_file", "must name a file"));
        }
        Ok(())
    }

    /// The engine options the `[log]` section asks for (without an observer).
    pub fn log_options(&self) -> logship_engine::Options {
        let mut o = logship_engine::Options {
            create_if_missing: true,
            ..logship_engine::Options::default()
        };
        if let Some(s) = self.log.segment_size_bytes {
            o.segment_size_bytes = s;
        }
        if let Some(m) = self.log.max_record_bytes {
            o.max_record_bytes = m;
        }
        if let Some(d) = self.log.drop_behind_replicated {
            o.drop_behind_replicated = d;
        }
        o.vfs.clone_from(&self.log_vfs);
        o.backend = match self.log.backend {
            LogBackend::Auto => logship_engine::io::Backend::Auto,
            LogBackend::IoUring => logship_engine::io::Backend::IoUring,
            LogBackend::Portable => logship_engine::io::Backend::Portable,
            LogBackend::IoUringDirect => logship_engine::io::Backend::IoUringDirect,
        };
        o
    }

    /// `node.role` against the `[cluster]` table, and what a follower needs.
    fn validate_role(&self) -> Result<()> {
        let key = "node.role";
        let failover = self.cluster.as_ref().map(ClusterSection::failover_on);
        match (self.node.role, failover) {
            (Role::Elected, None) => {
                return Err(Error::config(
                    key,
                    "required: primary or follower (or a [cluster] table with failover)",
                ))
            }
            (Role::Elected, Some(false)) => {
                return Err(Error::config(
                    key,
                    "required: primary or follower (the [cluster] table has no failover: \
                     cluster.failover = false, or fewer than three voters)",
                ))
            }
            (Role::Primary | Role::Follower, Some(true)) => {
                return Err(Error::config(
                    key,
                    "with automatic failover the cluster elects the primary: remove node.role",
                ))
            }
            _ => {}
        }
        if self.node.role == Role::Follower && self.listen_replication().is_none() {
            return Err(Error::config(
                "node.listen_replication",
                "a follower needs an address for its primary to connect to",
            ));
        }
        if self.node.role == Role::Follower && !self.replication.followers.is_empty() {
            return Err(Error::config(
                "replication.followers",
                "a follower does not stream to followers",
            ));
        }
        Ok(())
    }

    /// The `[cluster]` table, if any: members, this node's entry, what it replaces in
    /// `[replication]`, failover, the election timeout and the quorum.
    fn validate_cluster(&self) -> Result<()> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        validate_members(c)?;
        self.validate_me(c)?;
        self.validate_replaced()?;
        let voters = c.voters();
        if c.failover == Some(true) && voters < 3 {
            return Err(Error::config(
                "cluster.failover",
                format!(
                    "automatic failover needs three or more voters (a majority must survive \
                     one failure); cluster.members has {voters}"
                ),
            ));
        }
        if c.policy == Policy::Degrade {
            positive("cluster.degrade_after_ms", c.degrade_after_ms)?;
        }
        if c.failover_on() {
            self.election_timeout(c)?;
        }
        self.check_cluster_quorum(c)
    }

    /// This node is a member, and its own addresses agree with its entry.
    fn validate_me(&self, c: &ClusterSection) -> Result<()> {
        let Some(i) = c.member(&self.node.id) else {
            return Err(Error::config(
                "node.id",
                format!("{:?} is not in cluster.members", self.node.id),
            ));
        };
        let me = &c.members[i];
        if let Some(a) = self
            .node
            .listen_replication
            .filter(|a| *a != me.replication)
        {
            return Err(Error::config(
                "node.listen_replication",
                format!(
                    "{a} differs from cluster.members[{i}].replication ({}): leave it out or \
                     make them the same",
                    me.replication
                ),
            ));
        }
        if let (Some(a), Some(b)) = (self.node.listen_client, me.client) {
            if a != b {
                return Err(Error::config(
                    "node.listen_client",
                    format!(
                        "{a} differs from cluster.members[{i}].client ({b}): clients would \
                         be sent to the wrong address"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// With a `[cluster]` table, `[replication]` no longer lists followers nor sets the quorum.
    fn validate_replaced(&self) -> Result<()> {
        let r = &self.replication;
        let replaced = if !r.followers.is_empty() {
            Some((
                "followers",
                "the followers are the other members of cluster.members",
            ))
        } else if r.quorum.is_some() {
            Some(("quorum", "set cluster.quorum instead"))
        } else if r.policy == Policy::Degrade {
            Some(("policy", "set cluster.policy instead"))
        } else if r.degrade_after_ms != DEFAULT_DEGRADE_AFTER.as_millis() as u64 {
            Some(("degrade_after_ms", "set cluster.degrade_after_ms instead"))
        } else {
            None
        };
        match replaced {
            Some((k, why)) => Err(Error::config(
                format!("replication.{k}"),
                format!("the [cluster] table replaces it: {why}"),
            )),
            None => Ok(()),
        }
    }

    /// The election timeout's bounds: at least the peer timeout, the upper above the lower.
    fn election_timeout(&self, c: &ClusterSection) -> Result<(Duration, Duration)> {
        let (min, max) = (c.election_timeout_min_ms, c.election_timeout_max_ms);
        let peer = self.timeouts.peer_ms;
        if min < peer {
            return Err(Error::config(
                "cluster.election_timeout_min_ms",
                format!(
                    "{min} is below timeouts.peer_ms ({peer}): a follower would stand for \
                     election before it gives up on a silent primary"
                ),
            ));
        }
        if max <= min {
            return Err(Error::config(
                "cluster.election_timeout_max_ms",
                format!(
                    "{max} must be greater than cluster.election_timeout_min_ms ({min}): \
                     the timeouts are drawn at random between the two"
                ),
            ));
        }
        Ok((Duration::from_millis(min), Duration::from_millis(max)))
    }

    /// The cluster's quorum over member ids, this node included: the written one (`FIRST k` /
    /// `ANY k` over the sync members, or spelled out), or the default.
    fn cluster_spec(&self, c: &ClusterSection) -> Result<Option<QuorumSpec>> {
        let key = "cluster.quorum";
        let sync = c.sync_ids();
        let text = match &c.quorum {
            Some(text) => spell_out(text, &sync)?,
            None => match self.default_k(c, &sync) {
                Some(k) => format!("FIRST {k} ({})", sync.join(", ")),
                None => return Ok(None),
            },
        };
        let spec: QuorumSpec = text
            .parse()
            .map_err(|e| Error::config(key, format!("{e}")))?;
        for m in &spec.members {
            if !sync.contains(&m.as_str()) {
                return Err(Error::config(
                    key,
                    format!("{m:?} is not a sync member in cluster.members"),
                ));
            }
        }
        Ok(Some(spec))
    }

    /// The default quorum's k: none when a primary has no sync member to wait for; 1 without
    /// failover; with it, the smallest k that keeps the quorum rule (1 if none does).
    fn default_k(&self, c: &ClusterSection, sync: &[&str]) -> Option<usize> {
        let limit = self.quorum_limit(c, sync);
        if limit == 0 {
            return None;
        }
        if !c.failover_on() {
            return Some(1);
        }
        let non_voting = non_voting(c, sync);
        let safe = (1..=limit).find(|&k| Intersection::new(c.voters(), k, non_voting).safe());
        Some(safe.unwrap_or(1))
    }

    /// The largest k a quorum over `list` can have: a primary leaves itself out of it. With
    /// failover any sync voter may be primary; without, only this node when it is primary.
    fn quorum_limit(&self, c: &ClusterSection, list: &[&str]) -> usize {
        let may_lead = |id: &str| {
            if c.failover_on() {
                c.member(id)
                    .map(|i| &c.members[i])
                    .is_some_and(|m| m.voter && m.mode == Mode::Sync)
            } else {
                self.node.role == Role::Primary && id == self.node.id
            }
        };
        list.len() - usize::from(list.iter().any(|id| may_lead(id)))
    }

    /// The quorum's k fits the members a primary waits for, and with failover an acknowledged
    /// append survives the next election (unless `allow_unsafe_quorum`).
    fn check_cluster_quorum(&self, c: &ClusterSection) -> Result<()> {
        let key = "cluster.quorum";
        let spec = self.cluster_spec(c)?;
        let list: Vec<&str> = (spec.iter())
            .flat_map(|q| q.members.iter().map(String::as_str))
            .collect();
        let limit = self.quorum_limit(c, &list);
        let k = spec.as_ref().map_or(0, |q| q.k);
        if k > limit {
            return Err(Error::config(
                key,
                format!(
                    "k = {k}, but a primary has at most {limit} other quorum members to wait \
                     for: it leaves itself out of the quorum"
                ),
            ));
        }
        if !c.failover_on() || c.allow_unsafe_quorum {
            return Ok(());
        }
        let non_voting = non_voting(c, &list);
        let x = Intersection::new(c.voters(), k, non_voting);
        if x.safe() {
            return Ok(());
        }
        let (desc, mode) = match &spec {
            Some(q) => (format!("{} {}", q.mode.as_str(), q.k), q.mode.as_str()),
            None => ("No sync quorum".to_string(), "ANY"),
        };
        let fix = match (1..=limit).find(|&k| Intersection::new(c.voters(), k, non_voting).safe()) {
            Some(k) => format!("Use {mode} {k} or more"),
            None => "Make more members sync voters".to_string(),
        };
        Err(Error::config(key, x.refusal(&desc, &fix)))
    }

    /// Where this node listens for replication (and, with failover, for election requests):
    /// `node.listen_replication`, or else this member's `replication` address in `[cluster]`.
    pub fn listen_replication(&self) -> Option<SocketAddr> {
        self.node.listen_replication.or_else(|| {
            let c = self.cluster.as_ref()?;
            c.member(&self.node.id).map(|i| c.members[i].replication)
        })
    }

    /// The failover settings when the cluster elects its primary; `None` without a `[cluster]`
    /// table, with failover off, or for a configuration that does not validate.
    pub fn failover(&self) -> Option<FailoverSettings> {
        let c = self.cluster.as_ref().filter(|c| c.failover_on())?;
        let me = c.member(&self.node.id)?;
        let members = (c.members.iter())
            .map(|m| crate::vocab::Member {
                id: m.id.as_str().into(),
                addr: m.replication,
                voter: m.voter,
                sync: m.mode == Mode::Sync,
            })
            .collect();
        Some(FailoverSettings {
            members,
            me,
            timeout: self.election_timeout(c).ok()?,
            quorum: self.cluster_spec(c).ok()?,
            policy: self.policy(),
            allow_unsafe_quorum: c.allow_unsafe_quorum,
        })
    }

    /// The client address of every member, by id, in the table's order (for leader hints);
    /// empty without a `[cluster]` table.
    pub fn member_clients(&self) -> Vec<(String, Option<SocketAddr>)> {
        (self.cluster.iter())
            .flat_map(|c| c.members.iter().map(|m| (m.id.clone(), m.client)))
            .collect()
    }

    fn validate_followers(&self) -> Result<()> {
        let f = &self.replication.followers;
        for (i, e) in f.iter().enumerate() {
            check_name(&format!("replication.followers[{i}].name"), &e.name)?;
            if e.name == self.node.id {
                return Err(Error::config(
                    format!("replication.followers[{i}].name"),
                    "is this node's own id",
                ));
            }
            if f[..i].iter().any(|o| o.name == e.name) {
                return Err(Error::config(
                    format!("replication.followers[{i}].name"),
                    format!("{:?} is listed twice", e.name),
                ));
            }
            if f[..i].iter().any(|o| o.addr == e.addr) {
                return Err(Error::config(
                    format!("replication.followers[{i}].addr"),
                    format!("{} is listed twice", e.addr),
                ));
            }
        }
        Ok(())
    }

    /// The sync quorum: the configured one, or `FIRST 1 (<sync followers>)`, or none. With a
    /// `[cluster]` table: `cluster.quorum` without this node, what it waits for as primary.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for `replication.quorum` (or `cluster.quorum`).
    pub fn quorum(&self) -> Result<Option<QuorumSpec>> {
        if let Some(c) = &self.cluster {
            let spec = self.cluster_spec(c)?;
            return Ok(spec.and_then(|q| leave_out(q, &self.node.id)));
        }
        let key = "replication.quorum";
        let sync: Vec<&str> = (self.replication.followers.iter())
            .filter(|f| f.mode == Mode::Sync)
            .map(|f| f.name.as_str())
            .collect();
        let spec: QuorumSpec = match &self.replication.quorum {
            Some(text) => text
                .parse()
                .map_err(|e| Error::config(key, format!("{e}")))?,
            None if sync.is_empty() => return Ok(None),
            None => format!("FIRST 1 ({})", sync.join(", "))
                .parse()
                .map_err(|e| Error::config(key, format!("{e}")))?,
        };
        for m in &spec.members {
            if !sync.contains(&m.as_str()) {
                return Err(Error::config(
                    key,
                    format!("{m:?} is not a sync follower in replication.followers"),
                ));
            }
        }
        Ok(Some(spec))
    }

    /// The quorum policy (from `[cluster]` when there is one, else `[replication]`).
    pub fn policy(&self) -> QuorumPolicy {
        let (policy, after_ms) = match &self.cluster {
            Some(c) => (c.policy, c.degrade_after_ms),
            None => (self.replication.policy, self.replication.degrade_after_ms),
        };
        match policy {
            Policy::Block => QuorumPolicy::Block,
            Policy::Degrade => QuorumPolicy::Degrade {
                after: Duration::from_millis(after_ms),
            },
        }
    }

    /// How long written records may wait for an fdatasync before the disk counts as stalled.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for 0.
    pub fn disk_stall(&self) -> Result<Duration> {
        positive("timeouts.disk_stall_ms", self.timeouts.disk_stall_ms)
    }

    /// The client port's bounds: connections per remote address, the idle and request
    /// timeouts.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for 0.
    pub fn client_limits(&self) -> Result<ClientLimits> {
        let per_address = self
            .node
            .max_client_connections_per_address
            .unwrap_or(DEFAULT_CLIENT_CONNECTIONS_PER_ADDRESS);
        if per_address == 0 {
            return Err(Error::config(
                "node.max_client_connections_per_address",
                "must be greater than 0",
            ));
        }
        Ok(ClientLimits {
            per_address,
            idle: positive("timeouts.client_idle_ms", self.timeouts.client_idle_ms)?,
            request: positive(
                "timeouts.client_request_ms",
                self.timeouts.client_request_ms,
            )?,
        })
    }

    /// The timeouts.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the bad `timeouts.*` key.
    pub fn timeouts(&self) -> Result<Timeouts> {
        let t = &self.timeouts;
        let out = Timeouts {
            connect: positive("timeouts.connect_ms", t.connect_ms)?,
            handshake: positive("timeouts.handshake_ms", t.handshake_ms)?,
            heartbeat_interval: positive(
                "timeouts.heartbeat_interval_ms",
                t.heartbeat_interval_ms,
            )?,
            peer: positive("timeouts.peer_ms", t.peer_ms)?,
            commit: positive("timeouts.commit_ms", t.commit_ms)?,
            catch_up_read: positive("timeouts.catch_up_read_ms", t.catch_up_read_ms)?,
        };
        if out.heartbeat_interval * 2 > out.peer {
            return Err(Error::config(
                "timeouts.peer_ms",
                "must be at least twice timeouts.heartbeat_interval_ms",
            ));
        }
        Ok(out)
    }

    /// The backoff.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for `backoff`.
    pub fn backoff(&self) -> Result<BackoffConfig> {
        let b = BackoffConfig {
            initial: Duration::from_millis(self.backoff.initial_ms),
            multiplier: self.backoff.multiplier,
            max: Duration::from_millis(self.backoff.max_ms),
        };
        b.validate().map_err(|e| Error::config("backoff", e))?;
        Ok(b)
    }

    /// The breaker.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for `breaker`.
    pub fn breaker(&self) -> Result<BreakerConfig> {
        let b = BreakerConfig {
            failure_threshold: self.breaker.failure_threshold,
            reset_timeout: Duration::from_millis(self.breaker.reset_timeout_ms),
            success_threshold: self.breaker.success_threshold,
        };
        b.validate().map_err(|e| Error::config("breaker", e))?;
        Ok(b)
    }

    /// With TLS on the replication link, every node id a certificate is checked for must be a
    /// DNS name (ids may hold `_`, which DNS names allow here, but not, say, a leading `-`).
    fn validate_tls_names(&self, t: &TlsSection) -> Result<()> {
        if !t.replication {
            return Ok(());
        }
        let ids =
            std::iter::once(self.node.id.clone()).chain(self.peer_names().into_iter().map(|p| p.1));
        for id in ids {
            if crate::tls::server_name(&id).is_err() {
                return Err(Error::config(
                    "tls.replication",
                    format!("node id {id:?} is not a DNS name, which a certificate must name"),
                ));
            }
        }
        Ok(())
    }

    /// The name each peer's certificate must carry, by replication address: its node id
    /// (every follower or member this node may connect to).
    pub fn peer_names(&self) -> Vec<(SocketAddr, String)> {
        (self.follower_links().into_iter())
            .map(|l| (l.addr, l.name.to_string()))
            .collect()
    }

    /// The followers as the primary's state machine takes them: with a `[cluster]` table,
    /// every other member.
    pub fn follower_links(&self) -> Vec<FollowerLink> {
        if let Some(c) = &self.cluster {
            return (c.members.iter())
                .filter(|m| m.id != self.node.id)
                .map(|m| FollowerLink {
                    name: m.id.as_str().into(),
                    addr: m.replication,
                    sync: m.mode == Mode::Sync,
                })
                .collect();
        }
        (self.replication.followers.iter())
            .map(|f| FollowerLink {
                name: f.name.as_str().into(),
                addr: f.addr,
                sync: f.mode == Mode::Sync,
            })
            .collect()
    }
}

/// Member ids are valid names, and ids and addresses are unique.
fn validate_members(c: &ClusterSection) -> Result<()> {
    let m = &c.members;
    if m.is_empty() {
        return Err(Error::config(
            "cluster.members",
            "lists no member: list every member of the cluster, this node included",
        ));
    }
    for (i, e) in m.iter().enumerate() {
        let key = |field: &str| format!("cluster.members[{i}].{field}");
        check_name(&key("id"), &e.id)?;
        let twice = |field: &str, value: String| {
            Error::config(key(field), format!("{value} is listed twice"))
        };
        if m[..i].iter().any(|o| o.id == e.id) {
            return Err(twice("id", format!("{:?}", e.id)));
        }
        if m[..i].iter().any(|o| o.replication == e.replication) {
            return Err(twice("replication", e.replication.to_string()));
        }
        if let Some(a) = e
            .client
            .filter(|a| m[..i].iter().any(|o| o.client == Some(*a)))
        {
            return Err(twice("client", a.to_string()));
        }
    }
    Ok(())
}

/// `FIRST k` / `ANY k` with the member list left out gets the sync members.
fn spell_out(text: &str, sync: &[&str]) -> Result<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let implied = match words.as_slice() {
        [mode, k] => {
            (mode.eq_ignore_ascii_case("first") || mode.eq_ignore_ascii_case("any"))
                && k.chars().all(|c| c.is_ascii_digit())
        }
        _ => false,
    };
    if !implied {
        return Ok(text.to_string());
    }
    if sync.is_empty() {
        return Err(Error::config(
            "cluster.quorum",
            "no member is sync: a quorum counts sync members",
        ));
    }
    Ok(format!("{} {} ({})", words[0], words[1], sync.join(", ")))
}

/// How many of `list` do not vote.
fn non_voting(c: &ClusterSection, list: &[&str]) -> usize {
    (list.iter())
        .filter(|id| c.member(id).is_some_and(|i| !c.members[i].voter))
        .count()
}

/// `q` without `me` (k capped at what is left); `None` when nothing is left.
fn leave_out(q: QuorumSpec, me: &str) -> Option<QuorumSpec> {
    if !q.is_member(me) {
        return Some(q);
    }
    let members: Vec<String> = q.members.into_iter().filter(|m| m != me).collect();
    let k = q.k.min(members.len());
    (k > 0).then_some(QuorumSpec {
        mode: q.mode,
        k,
        members,
    })
}

/// The worst case of an append acknowledged at `remote_durable` meeting the next election:
/// it is on the primary and k sync followers; the fewest voters among them is the primary
/// (only sync voters stand) plus the k minus the quorum's non-voting members.
struct Intersection {
    voters: usize,
    majority: usize,
    nodes: usize,
    voting_holders: usize,
}

impl Intersection {
    fn new(voters: usize, k: usize, non_voting: usize) -> Intersection {
        Intersection {
            voters,
            majority: voters / 2 + 1,
            nodes: k + 1,
            voting_holders: 1 + k.saturating_sub(non_voting),
        }
    }

    /// Every election majority includes a voter holding the append.
    fn safe(&self) -> bool {
        self.voting_holders + self.majority > self.voters
    }

    fn refusal(&self, desc: &str, fix: &str) -> String {
        let (v, m, h, n) = (self.voters, self.majority, self.voting_holders, self.nodes);
        let on = match (n, h < n) {
            (1, _) => "1 node".to_string(),
            (n, false) => format!("{n} nodes"),
            (n, true) => format!("{n} nodes, at worst {h} of them voters"),
        };
        format!(
            "{desc} over {v} voters: an acknowledged record is on {on}, an election needs {m} \
             of {v} votes, and {h} + {m} is not more than {v}: a new primary could be elected \
             without the record. {fix}, or set allow_unsafe_quorum = true to accept losing \
             acknowledged appends on failover."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
id = "p1"
role = "primary"
cluster_id = "demo"
key_file = "k"
data_dir = "d"
[replication]
quorum = "ANY 1 (f1, f2)"
followers = [
  { name = "f1", addr = "127.0.0.1:7002", mode = "sync" },
  { name = "f2", addr = "127.0.0.1:7003", mode = "sync" },
  { name = "f3", addr = "127.0.0.1:7004", mode = "async" },
]
"#;

    fn check(text: &str) -> std::result::Result<NodeConfig, String> {
        let c = NodeConfig::parse(text)?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn clients_names_a_keys_file_relative_to_the_config() {
        assert!(
            check(GOOD).unwrap().clients.is_none(),
            "open port by default"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let text = format!("{GOOD}\n[clients]\nkeys_file = \"clients.keys\"\n");
        std::fs::write(&path, &text).unwrap();
        let c = NodeConfig::load(&path).unwrap();
        assert_eq!(
            c.clients.unwrap().keys_file,
            dir.path().join("clients.keys")
        );
        let unknown = format!("{GOOD}\n[clients]\nkeys_file = \"c\"\nkey = \"x\"\n");
        assert!(check(&unknown).unwrap_err().contains("unknown field"));
        let empty = format!("{GOOD}\n[clients]\nkeys_file = \"\"\n");
        assert!(check(&empty).unwrap_err().contains("clients.keys_file"));
        let missing = format!("{GOOD}\n[clients]\n");
        assert!(check(&missing).unwrap_err().contains("keys_file"));
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = check(GOOD).unwrap();
        assert_eq!(c.quorum().unwrap().unwrap().to_string(), "ANY 1 (f1, f2)");
        assert_eq!(c.timeouts().unwrap(), Timeouts::default());
        assert_eq!(c.policy(), QuorumPolicy::Block);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                GOOD.replace("role = \"primary\"", "role = \"leader\""),
                "role",
            ),
            (
                GOOD.replace("[replication]", "[replication]\nquorom = \"x\""),
                "quorom",
            ),
            (
                GOOD.replace("ANY 1 (f1, f2)", "ANY 1 (f1, f3)"),
                "replication.quorum",
            ),
            (
                GOOD.replace("ANY 1 (f1, f2)", "ANY 3 (f1, f2)"),
                "replication.quorum",
            ),
            (GOOD.replace("id = \"p1\"", "id = \"p 1\""), "node.id"),
            (
                GOOD.replace("\"127.0.0.1:7003\"", "\"127.0.0.1:7002\""),
                "replication.followers[1].addr",
            ),
            (GOOD.replace("\"127.0.0.1:7003\"", "\"localhost\""), "addr"),
            (
                format!("{GOOD}\n[timeouts]\npeer_ms = 150\n"),
                "timeouts.peer_ms",
            ),
            (
                format!("{GOOD}\n[timeouts]\ncommit_ms = 0\n"),
                "timeouts.commit_ms",
            ),
            (
                format!("{GOOD}\n[breaker]\nfailure_threshold = 0\n"),
                "breaker",
            ),
            (
                GOOD.replace("role = \"primary\"", "role = \"follower\""),
                "node.listen_replication",
            ),
            (
                format!("{GOOD}\n[log]\nsegment_size_bytes = 1000\n"),
                "log.segment_size_bytes",
            ),
            (
                GOOD.replace(
                    "[replication]",
                    "[replication]\ncatch_up_latency_target_ms = 0",
                ),
                "replication.catch_up_latency_target_ms",
            ),
            (
                GOOD.replace(
                    "[replication]",
                    "[replication]\ncatch_up_latency_target_ms = 60001",
                ),
                "replication.catch_up_latency_target_ms",
            ),
            (
                GOOD.replace(
                    "[replication]",
                    "[replication]\ncatch_up_latency_target_ms = 0.05",
                ),
                "replication.catch_up_latency_target_ms",
            ),
            (
                GOOD.replace(
                    "[replication]",
                    "[replication]\ncatch_up_latency_target_ms = nan",
                ),
                "replication.catch_up_latency_target_ms",
            ),
            (
                GOOD.replace(
                    "[replication]",
                    "[replication]\ncatch_up_latency_target_ms = inf",
                ),
                "replication.catch_up_latency_target_ms",
            ),
            (
                GOOD.replace(
                    "[replication]",
                    "[replication]\ncatch_up_min_bytes_per_sec = 1000",
                ),
                "replication.catch_up_min_bytes_per_sec",
            ),
            (
                GOOD.replace(
                    "[replication]",
                    "[replication]\ncatch_up_latency_target_ms = \"5\"",
                ),
                "catch_up_latency_target_ms",
            ),
        ];
        for (text, key) in cases {
            let e = check(&text).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    const TLS: &str =
        "\n[tls]\ncert_file = \"p1.crt\"\nkey_file = \"p1.key\"\nca_file = \"ca.crt\"\n";

    #[test]
    fn a_tls_table_parses_with_defaults_and_bad_values_name_their_key() {
        let c = check(&format!("{GOOD}{TLS}")).unwrap();
        let t = c.tls.expect("a [tls] table");
        assert!(t.replication && t.client_port);
        assert_eq!(t.client_auth, crate::tls::ClientAuth::None);
        assert!(check(GOOD).unwrap().tls.is_none());
        let cases = [
            (
                format!("{GOOD}{TLS}client_auth = \"optional\"\n"),
                "client_auth",
            ),
            (format!("{GOOD}{TLS}ciphers = \"x\"\n"), "ciphers"),
            (
                GOOD.to_string() + &TLS.replace("ca_file = \"ca.crt\"\n", ""),
                "ca_file",
            ),
            (
                GOOD.to_string() + &TLS.replace("\"p1.key\"", "\"\""),
                "tls.key_file",
            ),
            (
                format!("{GOOD}{TLS}replication = false\nclient_port = false\n"),
                "tls",
            ),
            (
                GOOD.replace("id = \"p1\"", "id = \"-p1\"") + TLS,
                "tls.replication",
            ),
        ];
        for (text, key) in cases {
            let e = check(&text).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn log_backend_names_map_to_engine_backends() {
        use logship_engine::io::Backend;
        let cases = [
            ("auto", Backend::Auto),
            ("io_uring", Backend::IoUring),
            ("portable", Backend::Portable),
            ("io_uring_direct", Backend::IoUringDirect),
            ("direct", Backend::IoUringDirect),
        ];
        for (name, backend) in cases {
            let c = check(&format!("{GOOD}\n[log]\nbackend = \"{name}\"\n")).unwrap();
            assert_eq!(c.log_options().backend, backend, "{name}");
        }
        let e = check(&format!("{GOOD}\n[log]\nbackend = \"o_direct\"\n")).unwrap_err();
        assert!(e.contains("backend"), "{e}");
    }

    #[test]
    fn drop_behind_is_on_unless_the_log_section_turns_it_off() {
        assert!(check(GOOD).unwrap().log_options().drop_behind_replicated);
        for (value, want) in [("true", true), ("false", false)] {
            let text = format!("{GOOD}\n[log]\ndrop_behind_replicated = {value}\n");
            let c = check(&text).unwrap();
            assert_eq!(c.log_options().drop_behind_replicated, want, "{value}");
        }
        let e = check(&format!("{GOOD}\n[log]\ndrop_behind_replicated = 1\n")).unwrap_err();
        assert!(e.contains("drop_behind_replicated"), "{e}");
    }

    #[test]
    fn catch_up_pacing_is_off_unless_a_latency_target_is_set() {
        let c = check(GOOD).unwrap();
        assert_eq!(c.replication.catch_up_pacing(), None);
        let text = GOOD.replace(
            "[replication]",
            "[replication]\ncatch_up_latency_target_ms = 5\ncatch_up_min_bytes_per_sec = 1048576",
        );
        let c = check(&text).unwrap();
        let want = PacingConfig {
            latency_target: Duration::from_millis(5),
            min_bytes_per_sec: 1 << 20,
        };
        assert_eq!(c.replication.catch_up_pacing(), Some(want));
        let text = GOOD.replace(
            "[replication]",
            "[replication]\ncatch_up_latency_target_ms = 7",
        );
        let floor = check(&text).unwrap().replication.catch_up_pacing().unwrap();
        assert_eq!(floor.min_bytes_per_sec, DEFAULT_MIN_BYTES_PER_SEC);
        let text = GOOD.replace(
            "[replication]",
            "[replication]\ncatch_up_latency_target_ms = 1.5",
        );
        let fine = check(&text).unwrap().replication.catch_up_pacing().unwrap();
        assert_eq!(fine.latency_target, Duration::from_micros(1_500));
    }

    #[test]
    fn sync_followers_without_a_quorum_get_first_1() {
        let c = check(&GOOD.replace("quorum = \"ANY 1 (f1, f2)\"\n", "")).unwrap();
        assert_eq!(c.quorum().unwrap().unwrap().to_string(), "FIRST 1 (f1, f2)");
    }

    /// Member `n{i}` at ports 700i (replication) and 710i (client), then `extra` fields.
    fn member(i: usize, extra: &str) -> String {
        let (replication, client) = (7000 + i, 7100 + i);
        format!(
            "  {{ id = \"n{i}\", replication = \"127.0.0.1:{replication}\", \
             client = \"127.0.0.1:{client}\"{extra} }},\n"
        )
    }

    /// `n` sync voters.
    fn voters(n: usize) -> String {
        (1..=n).map(|i| member(i, "")).collect()
    }

    /// Node `n1` (`node` adds `[node]` lines) in a cluster of `members`, then `rest`.
    fn cluster(node: &str, members: &str, rest: &str) -> String {
        format!(
            "[node]\nid = \"n1\"\ncluster_id = \"demo\"\nkey_file = \"k\"\ndata_dir = \"d\"\n\
             {node}\n[cluster]\nmembers = [\n{members}]\n{rest}"
        )
    }

    fn three() -> String {
        cluster("", &voters(3), "quorum = \"ANY 1\"\n")
    }

    #[test]
    fn a_good_cluster_table_gives_failover_settings() {
        let c = check(&three()).unwrap();
        assert_eq!(c.node.role, Role::Elected);
        let f = c.failover().unwrap();
        assert_eq!(f.me, 0);
        assert_eq!(f.members.len(), 3);
        assert_eq!(f.members[1].id, *"n2");
        assert_eq!(f.members[1].addr, "127.0.0.1:7002".parse().unwrap());
        assert!(f.members.iter().all(|m| m.voter && m.sync));
        let second = Duration::from_secs(1);
        assert_eq!(f.timeout, (second, 2 * second));
        let quorum = f.quorum.unwrap().to_string();
        assert_eq!(quorum, "ANY 1 (n1, n2, n3)");
        assert_eq!(f.policy, QuorumPolicy::Block);
        assert!(!f.allow_unsafe_quorum);
        let addr = |p: u16| Some(SocketAddr::from(([127, 0, 0, 1], p)));
        assert_eq!(c.listen_replication(), addr(7001));
        assert_eq!(c.member_clients()[2], ("n3".to_string(), addr(7103)));
        // As primary it waits for the others.
        assert_eq!(c.quorum().unwrap().unwrap().to_string(), "ANY 1 (n2, n3)");
        let links = c.follower_links();
        assert_eq!(links.len(), 2);
        assert!(links.iter().all(|l| l.name != *"n1"));
    }

    #[test]
    fn the_brief_example_parses_with_its_defaults() {
        let members = format!(
            "{}{}{}",
            member(1, ", voter = true, mode = \"sync\""),
            member(2, ""),
            "  { id = \"n3\", replication = \"127.0.0.1:7003\", mode = \"async\", \
             voter = false },\n"
        );
        let rest = "quorum = \"ANY 1\"\npolicy = \"degrade\"\ndegrade_after_ms = 3000\n\
                    election_timeout_min_ms = 1500\nelection_timeout_max_ms = 2500\n";
        let c = NodeConfig::parse(&cluster("", &members, rest)).unwrap();
        let t = c.cluster.as_ref().unwrap();
        assert!(t.members[1].voter && t.members[1].mode == Mode::Sync);
        assert_eq!(t.members[2].client, None);
        // Two voters: no failover by default, so the node needs a role.
        assert!(!t.failover_on());
        let e = check(&cluster("", &members, rest)).unwrap_err();
        assert!(e.contains("node.role"), "{e}");
        let c = check(&cluster("role = \"primary\"", &members, rest)).unwrap();
        assert!(c.failover().is_none());
        let after = Duration::from_millis(3000);
        assert_eq!(c.policy(), QuorumPolicy::Degrade { after });
        assert_eq!(c.quorum().unwrap().unwrap().to_string(), "ANY 1 (n2)");
        let links = c.follower_links();
        assert_eq!((links.len(), links[1].sync), (2, false));
    }

    /// Each text fails validation naming its key: validation errors lead with it, parse errors
    /// (unknown key, bad value) mention it.
    fn refused(cases: &[(String, &str)]) {
        for (text, key) in cases {
            let e = check(text).unwrap_err();
            let named = if key.contains('.') {
                e.starts_with(&format!("invalid config {key}: "))
            } else {
                e.contains(key)
            };
            assert!(named, "{key}: {e}");
        }
    }

    #[test]
    fn bad_members_name_their_key() {
        let dup = |from: &str, to: &str| three().replacen(from, to, 1);
        let node = |line: &str| cluster(line, &voters(3), "");
        let addr = "\"127.0.0.1:7009\"";
        refused(&[
            (dup("\"n2\"", "\"n1\""), "cluster.members[1].id"),
            (dup("\"n2\"", "\"n 2\""), "cluster.members[1].id"),
            (dup(":7003\"", ":7002\""), "cluster.members[2].replication"),
            (dup(":7102\"", ":7101\""), "cluster.members[1].client"),
            (dup("id = \"n1\"", "id = \"n9\""), "node.id"),
            (
                node(&format!("listen_replication = {addr}")),
                "node.listen_replication",
            ),
            (
                node(&format!("listen_client = {addr}")),
                "node.listen_client",
            ),
            (node("role = \"primary\""), "node.role"),
            (node("role = \"follower\""), "node.role"),
            (cluster("", "", ""), "cluster.members"),
            (cluster("", &member(1, ", vote = true"), ""), "vote"),
            (cluster("", &member(1, ", mode = \"fast\""), ""), "mode"),
        ]);
    }

    #[test]
    fn bad_cluster_values_name_their_key() {
        let table = |rest: &str| cluster("", &voters(3), rest);
        let after = |section: &str| format!("{}\n{section}\n", three());
        let follower = "{ name = \"n2\", addr = \"127.0.0.1:7002\", mode = \"sync\" }";
        let min = "cluster.election_timeout_min_ms";
        refused(&[
            (
                cluster("", &voters(2), "failover = true\n"),
                "cluster.failover",
            ),
            (table("election_timeout_min_ms = 900\n"), min),
            (
                table("election_timeout_min_ms = 1500\n[timeouts]\npeer_ms = 2000\n"),
                min,
            ),
            (
                table("election_timeout_max_ms = 1000\n"),
                "cluster.election_timeout_max_ms",
            ),
            (table("quorum = \"ANY 1 (n2, n9)\"\n"), "cluster.quorum"),
            (table("quorum = \"ANY 3\"\n"), "cluster.quorum"),
            (table("quorum = \"ANY 3 (n1, n2, n3)\"\n"), "cluster.quorum"),
            (table("quorum = \"SOME 1\"\n"), "cluster.quorum"),
            (
                table("policy = \"degrade\"\ndegrade_after_ms = 0\n"),
                "cluster.degrade_after_ms",
            ),
            (
                after("[replication]\nquorum = \"ANY 1 (n2)\""),
                "replication.quorum",
            ),
            (
                after("[replication]\npolicy = \"degrade\""),
                "replication.policy",
            ),
            (
                after(&format!("[replication]\nfollowers = [{follower}]")),
                "replication.followers",
            ),
        ]);
    }

    #[test]
    fn a_role_is_required_without_failover() {
        let e = check(&GOOD.replace("role = \"primary\"\n", "")).unwrap_err();
        assert!(e.contains("node.role") && e.contains("required"), "{e}");
        let off = cluster("", &voters(3), "failover = false\n");
        let e = check(&off).unwrap_err();
        assert!(e.contains("node.role"), "{e}");
        let follower = off.replace("\n\n[cluster]", "\nrole = \"follower\"\n\n[cluster]");
        let c = check(&follower).unwrap();
        assert_eq!(
            c.listen_replication(),
            Some("127.0.0.1:7001".parse().unwrap())
        );
        assert!(c.failover().is_none());
    }

    #[test]
    fn with_failover_the_cluster_elects_the_primary() {
        let e = check(&cluster("role = \"primary\"", &voters(3), "")).unwrap_err();
        assert!(
            e.contains("node.role") && e.contains("remove node.role"),
            "{e}"
        );
        assert!(check(&cluster("role = \"elected\"", &voters(3), "")).is_ok());
    }

    #[test]
    fn any_1_over_5_voters_is_refused_unless_allowed() {
        let e = check(&cluster("", &voters(5), "quorum = \"ANY 1\"\n")).unwrap_err();
        let want = "ANY 1 over 5 voters: an acknowledged record is on 2 nodes, an election \
                    needs 3 of 5 votes, and 2 + 3 is not more than 5: a new primary could be \
                    elected without the record. Use ANY 2 or more, or set allow_unsafe_quorum = \
                    true to accept losing acknowledged appends on failover.";
        assert!(e.contains("cluster.quorum") && e.contains(want), "{e}");
        let allowed = "quorum = \"ANY 1\"\nallow_unsafe_quorum = true\n";
        let c = check(&cluster("", &voters(5), allowed)).unwrap();
        assert!(c.failover().unwrap().allow_unsafe_quorum);
        assert!(check(&cluster("", &voters(5), "quorum = \"ANY 2\"\n")).is_ok());
        assert!(check(&cluster(
            "",
            &voters(5),
            "quorum = \"FIRST 2 (n2, n3, n4)\"\n"
        ))
        .is_ok());
    }

    #[test]
    fn the_default_quorum_is_the_smallest_safe_one() {
        let quorum = |n| {
            let c = check(&cluster("", &voters(n), "")).unwrap();
            c.failover().unwrap().quorum.unwrap().to_string()
        };
        assert_eq!(quorum(3), "FIRST 1 (n1, n2, n3)");
        assert_eq!(quorum(5), "FIRST 2 (n1, n2, n3, n4, n5)");
        assert_eq!(quorum(7), "FIRST 3 (n1, n2, n3, n4, n5, n6, n7)");
    }

    #[test]
    fn non_voting_and_async_members_count_against_the_rule() {
        // Three sync voters and two sync non-voters: the one follower holding an append may be
        // a non-voter.
        let nv = ", voter = false";
        let members = format!("{}{}{}", voters(3), member(4, nv), member(5, nv));
        let e = check(&cluster("", &members, "quorum = \"ANY 1\"\n")).unwrap_err();
        assert!(
            e.contains("at worst 1 of them voters") && e.contains("Use ANY 3"),
            "{e}"
        );
        assert!(check(&cluster("", &members, "quorum = \"ANY 3\"\n")).is_ok());
        // Five voters, three of them async: no quorum over the two sync ones is enough.
        let a = ", mode = \"async\"";
        let members = format!(
            "{}{}{}{}",
            voters(2),
            member(3, a),
            member(4, a),
            member(5, a)
        );
        let e = check(&cluster("", &members, "quorum = \"ANY 1\"\n")).unwrap_err();
        assert!(e.contains("Make more members sync voters"), "{e}");
        let e = check(&cluster("", &members, "")).unwrap_err();
        assert!(e.contains("cluster.quorum"), "{e}");
        // Five voters, two of them async: ANY 2 over the three sync ones is on three voters.
        let members = format!("{}{}{}", voters(3), member(4, a), member(5, a));
        assert!(check(&cluster("", &members, "quorum = \"ANY 2\"\n")).is_ok());
        // A lone sync voter: no quorum at all.
        let members = format!("{}{}{}", voters(1), member(2, a), member(3, a));
        let e = check(&cluster("", &members, "")).unwrap_err();
        assert!(
            e.contains("No sync quorum over 3 voters") && e.contains("1 node,"),
            "{e}"
        );
    }
}
