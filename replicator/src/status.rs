//! What a node reports about itself: the API's status, `logship status`, and the metrics all
//! render these types (JSON through serde).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::pacing::PacingStatus;

/// Records and bytes a follower is behind the primary's last LSN, at one level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behind {
    /// Records behind.
    pub records: u64,
    /// Bytes behind (exact to the batch for recent LSNs, estimated further back).
    pub bytes: u64,
}

/// One follower, seen from the primary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FollowerStatus {
    /// Its name.
    pub name: String,
    /// Its address.
    pub addr: String,
    /// `"sync"` or `"async"`.
    pub mode: String,
    /// Where the link is.
    pub phase: Phase,
    /// Streaming and heard from within the peer timeout.
    pub healthy: bool,
    /// Circuit breaker: `"closed"`, `"open"` or `"half_open"`.
    pub breaker: String,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// Last LSN received.
    pub write_lsn: u64,
    /// Last LSN fdatasync'ed.
    pub durable_lsn: u64,
    /// Last LSN applied.
    pub applied_lsn: u64,
    /// Behind at the write level.
    pub write_behind: Behind,
    /// Behind at the durable level.
    pub durable_behind: Behind,
    /// Behind at the applied level.
    pub applied_behind: Behind,
    /// Time from handing a batch to replication to its write acknowledgement, last measured.
    pub write_lag_ms: Option<f64>,
    /// Same, to the durable acknowledgement (`flush_lag`).
    pub flush_lag_ms: Option<f64>,
    /// Same, to the applied acknowledgement (`replay_lag`).
    pub replay_lag_ms: Option<f64>,
    /// Its records are kept from purging.
    pub retained: bool,
    /// It needs records that were purged.
    pub purged: bool,
    /// Why the link last failed.
    pub last_error: Option<String>,
    /// Counters.
    pub counters: LinkCounters,
    /// The RPO of failing over to it now, per durability level: the acknowledged writes it
    /// does not hold durably.
    #[serde(default)]
    pub rpo: Vec<LevelRpo>,
}

/// What failing over to a follower now would lose of the writes acknowledged at one level.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LevelRpo {
    /// `local`, `remote_write`, `remote_durable` or `remote_applied`.
    pub level: String,
    /// Acknowledged records it lacks.
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
    /// How long ago the oldest of them was sent to it (`None`: not sent yet, or nothing
    /// lacking).
    pub seconds: Option<f64>,
}

/// Commit LSN per durability level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitLsns {
    /// Primary fdatasync'ed.
    pub local: u64,
    /// Quorum received.
    pub remote_write: u64,
    /// Quorum fdatasync'ed.
    pub remote_durable: u64,
    /// Quorum applied.
    pub remote_applied: u64,
}

/// The primary's replication state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrimaryStatus {
    /// Last LSN written.
    pub last_lsn: u64,
    /// First LSN held.
    pub first_lsn: u64,
    /// Commit LSNs.
    pub commit: CommitLsns,
    /// The sync quorum, e.g. `ANY 1 (a, b)`, or `none`.
    pub quorum: String,
    /// Enough sync followers are healthy.
    pub quorum_available: bool,
    /// Acknowledging remote levels at local durability (policy `degrade`).
    pub degraded: bool,
    /// Appends are served. False at start while a primary that may have lost records takes
    /// back what its sync followers hold.
    #[serde(default = "yes")]
    pub serving: bool,
    /// Catch-up pacing, when a latency target is configured.
    #[serde(default)]
    pub catch_up_pacing: Option<PacingStatus>,
    /// Times degraded mode was entered.
    pub degraded_entered: u64,
    /// Records at and after this LSN are kept for followers.
    pub retention_lsn: u64,
    /// Sessions this primary refused, by reason.
    pub rejected: Vec<(String, u64)>,
    /// Sessions followers refused, by reason (a follower with another cluster id, say).
    pub refused_by_peer: Vec<(String, u64)>,
    /// Each follower.
    pub followers: Vec<FollowerStatus>,
}

/// The follower's replication state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FollowerSideStatus {
    /// Streaming from a primary.
    pub connected: bool,
    /// The primary's node id, when connected.
    pub primary: Option<String>,
    /// Last LSN received.
    pub write_lsn: u64,
    /// Last LSN fdatasync'ed.
    pub durable_lsn: u64,
    /// Last LSN applied.
    pub applied_lsn: u64,
    /// The primary's commit LSN as last heard.
    pub primary_commit_lsn: u64,
    /// The primary's last LSN as last heard.
    pub primary_last_lsn: u64,
    /// Milliseconds since the primary was last heard from.
    pub last_heard_ms: Option<f64>,
    /// Sessions refused, by reason.
    pub rejected: Vec<(String, u64)>,
}

fn yes() -> bool {
    true
}

/// Where the link is, for status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Not connected; waiting for the backoff delay or the breaker.
    Idle,
    /// Connecting.
    Connecting,
    /// Authenticating.
    Handshake,
    /// Streaming records, behind (reading from the log).
    CatchingUp,
    /// Streaming live batches.
    Streaming,
}

/// Counters of one link.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LinkCounters {
    /// Connections that reached streaming.
    pub sessions: u64,
    /// Connect failures, timeouts, lost connections.
    pub failures: u64,
    /// Sessions this side refused (bad key, cluster id, protocol errors).
    pub rejected: u64,
    /// Sessions the follower refused.
    pub rejected_by_peer: u64,
    /// Record frames sent.
    pub frames_sent: u64,
    /// Record bytes sent.
    pub bytes_sent: u64,
    /// Catch-up chunks sent.
    pub chunks_sent: u64,
}

/// Counters of the primary as a whole.
#[derive(Debug, Default)]
pub struct PrimaryCounters {
    /// Sessions this primary refused, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Sessions followers refused, by reason.
    pub refused_by_peer: BTreeMap<&'static str, u64>,
    /// Times degraded mode was entered.
    pub degraded_entered: u64,
    /// Times a follower was dropped from retention.
    pub retention_drops: u64,
}
