//! How the state machines are configured.

use std::net::SocketAddr;

use logship_engine::Epoch;

use super::{NodeId, Timeouts};
use crate::backoff::BackoffConfig;
use crate::breaker::BreakerConfig;
use crate::commit::QuorumPolicy;
use crate::protocol::auth::ClusterKey;
use crate::quorum::QuorumSpec;

/// A follower the primary streams to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerLink {
    /// Its node id.
    pub name: NodeId,
    /// Its replication address.
    pub addr: SocketAddr,
    /// `true` for sync (may count in the quorum), `false` for async.
    pub sync: bool,
}

/// Default bytes sent and not yet acknowledged as received, per follower.
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 32 << 20;
/// Default size of a catch-up chunk.
pub const DEFAULT_CATCH_UP_CHUNK_BYTES: usize = 4 << 20;

/// Everything the primary's state machine is configured with.
#[derive(Clone, Debug)]
pub struct PrimaryConfig {
    /// The cluster id both sides must share.
    pub cluster_id: String,
    /// This node's id.
    pub node_id: NodeId,
    /// The pre-shared key.
    pub key: ClusterKey,
    /// This primary's epoch.
    pub epoch: Epoch,
    /// The followers.
    pub followers: Vec<FollowerLink>,
    /// The sync quorum (`None`: no sync followers; remote levels follow local durability).
    pub quorum: Option<QuorumSpec>,
    /// What happens without a quorum.
    pub policy: QuorumPolicy,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Reconnection backoff.
    pub backoff: BackoffConfig,
    /// Per-link circuit breaker.
    pub breaker: BreakerConfig,
    /// Unacknowledged bytes per follower before the link reads from the log instead.
    pub max_inflight_bytes: u64,
    /// Catch-up chunk size.
    pub catch_up_chunk_bytes: usize,
    /// Bytes behind past which an async follower no longer holds back purging.
    pub max_retained_bytes: Option<u64>,
}

/// The follower's configuration.
#[derive(Clone, Debug)]
pub struct FollowerConfig {
    /// The cluster id both sides must share.
    pub cluster_id: String,
    /// This node's id.
    pub node_id: NodeId,
    /// The pre-shared key.
    pub key: ClusterKey,
    /// Timeouts (handshake, heartbeat interval, peer).
    pub timeouts: Timeouts,
    /// Applied follows durable (no embedding application reports it).
    pub auto_apply: bool,
}
