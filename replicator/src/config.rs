//! The node's configuration file (TOML). Unknown keys are refused; [`NodeConfig::load`] checks
//! every value and names the bad key. Relative paths are relative to the file's directory.
//!
//! ```toml
//! [node]
//! id = "p1"
//! role = "primary"                 # or "follower"
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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::backoff::BackoffConfig;
use crate::breaker::BreakerConfig;
use crate::commit::QuorumPolicy;
use crate::error::{Error, Result};
use crate::quorum::QuorumSpec;
use crate::transport::NetBackend;
use crate::vocab::{
    FollowerLink, Timeouts, DEFAULT_CATCH_UP_CHUNK_BYTES, DEFAULT_MAX_INFLIGHT_BYTES,
};

/// Default wait before the `degrade` policy acknowledges at local durability.
pub const DEFAULT_DEGRADE_AFTER: Duration = Duration::from_secs(2);

/// The node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes appends and streams them.
    Primary,
    /// Receives the stream.
    Follower,
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
    /// `primary` or `follower`.
    pub role: Role,
    /// The cluster id, same rules as `id`; every node of a cluster has the same.
    pub cluster_id: String,
    /// File holding the pre-shared cluster key (at least 16 bytes of text).
    pub key_file: PathBuf,
    /// The log's directory (created if missing).
    pub data_dir: PathBuf,
    /// Where a follower listens for its primary. Required for followers.
    pub listen_replication: Option<SocketAddr>,
    /// The client port (append, read, status). Optional.
    pub listen_client: Option<SocketAddr>,
    /// HTTP for `/metrics`, `/health/live`, `/health/ready`. Optional.
    pub listen_http: Option<SocketAddr>,
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
    /// `auto`, `io_uring` or `portable`.
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
    /// The followers.
    pub followers: Vec<FollowerEntry>,
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
            followers: Vec::new(),
        }
    }
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
        }
    }
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
    /// A file system for the log instead of the real one: the fault-injecting one, for tests
    /// of an embedded node. Never read from a config file.
    #[serde(skip)]
    pub log_vfs: Option<std::sync::Arc<dyn logship_engine::io::Vfs>>,
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
        if self.node.role == Role::Follower && self.node.listen_replication.is_none() {
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
        self.timeouts()?;
        self.backoff()?;
        self.breaker()?;
        self.validate_followers()?;
        self.quorum()?;
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
        o.vfs.clone_from(&self.log_vfs);
        o.backend = match self.log.backend {
            LogBackend::Auto => logship_engine::io::Backend::Auto,
            LogBackend::IoUring => logship_engine::io::Backend::IoUring,
            LogBackend::Portable => logship_engine::io::Backend::Portable,
        };
        o
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

    /// The sync quorum: the configured one, or `FIRST 1 (<sync followers>)`, or none.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for `replication.quorum`.
    pub fn quorum(&self) -> Result<Option<QuorumSpec>> {
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

    /// The quorum policy.
    pub fn policy(&self) -> QuorumPolicy {
        match self.replication.policy {
            Policy::Block => QuorumPolicy::Block,
            Policy::Degrade => QuorumPolicy::Degrade {
                after: Duration::from_millis(self.replication.degrade_after_ms),
            },
        }
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

    /// The followers as the primary's state machine takes them.
    pub fn follower_links(&self) -> Vec<FollowerLink> {
        (self.replication.followers.iter())
            .map(|f| FollowerLink {
                name: f.name.as_str().into(),
                addr: f.addr,
                sync: f.mode == Mode::Sync,
            })
            .collect()
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
        ];
        for (text, key) in cases {
            let e = check(&text).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn sync_followers_without_a_quorum_get_first_1() {
        let c = check(&GOOD.replace("quorum = \"ANY 1 (f1, f2)\"\n", "")).unwrap();
        assert_eq!(c.quorum().unwrap().unwrap().to_string(), "FIRST 1 (f1, f2)");
    }
}
