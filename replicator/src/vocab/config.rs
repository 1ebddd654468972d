//! How the state machines are configured.

use std::net::SocketAddr;

use logship_engine::Epoch;

use super::{NodeId, Timeouts};
use crate::backoff::BackoffConfig;
use crate::breaker::BreakerConfig;
use crate::commit::QuorumPolicy;
use crate::pacing::PacingConfig;
use crate::protocol::auth::KeyRing;
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
    /// The pre-shared cluster key ring: proves with its current key, accepts any.
    pub key: KeyRing,
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
    /// Catch-up paced to keep foreground commits' p99 under a target (`None`: unpaced).
    pub catch_up_pacing: Option<PacingConfig>,
    /// Bytes behind past which an async follower no longer holds back purging.
    pub max_retained_bytes: Option<u64>,
    /// Elected by the cluster (automatic failover): where a follower's log starts is decided
    /// from the two logs' epoch histories, and nothing is taken back from followers.
    pub failover: bool,
}

/// The follower's configuration.
#[derive(Clone, Debug)]
pub struct FollowerConfig {
    /// The cluster id both sides must share.
    pub cluster_id: String,
    /// This node's id.
    pub node_id: NodeId,
    /// The pre-shared cluster key ring: proves with its current key, accepts any.
    pub key: KeyRing,
    /// Timeouts (handshake, heartbeat interval, peer).
    pub timeouts: Timeouts,
    /// Applied follows durable (no embedding application reports it).
    pub auto_apply: bool,
}

/// One member of the cluster, as every node's `[cluster]` table lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its node id.
    pub id: NodeId,
    /// Its replication address.
    pub addr: SocketAddr,
    /// It votes in elections.
    pub voter: bool,
    /// A sync replica (counted in the quorum when a follower; may stand for election).
    pub sync: bool,
}

/// Automatic failover: the cluster's members, the election timeout, and what this node runs
/// with as a primary or as a follower.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// Every member, this node included, in the table's order.
    pub members: Vec<Member>,
    /// This node's index in `members`.
    pub me: usize,
    /// Bounds of the randomized election timeout (default 1 to 2 s).
    pub timeout: (std::time::Duration, std::time::Duration),
    /// The primary's configuration without its epoch, followers and quorum (filled in from
    /// `members` and `quorum` when this node is elected).
    pub primary: PrimaryConfig,
    /// The sync quorum over member ids; this node is left out of it while it is primary.
    pub quorum: Option<QuorumSpec>,
    /// The follower's configuration.
    pub follower: FollowerConfig,
}

impl ElectionConfig {
    /// The voters' indices.
    pub fn voters(&self) -> impl Iterator<Item = usize> + '_ {
        (self.members.iter().enumerate())
            .filter(|(_, m)| m.voter)
            .map(|(i, _)| i)
    }

    /// Votes that make a majority of the voters.
    pub fn majority(&self) -> usize {
        self.voters().count() / 2 + 1
    }

    /// This node votes and is a sync replica: it may stand for election.
    pub fn may_stand(&self) -> bool {
        let me = &self.members[self.me];
        me.voter && me.sync
    }

    /// The member named `id`.
    pub fn member(&self, id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == *id)
    }

    /// This node's primary configuration in `epoch`: every other member a follower, the
    /// quorum without this node.
    pub fn primary_config(&self, epoch: Epoch) -> PrimaryConfig {
        let me = &self.members[self.me].id;
        let followers = (self.members.iter())
            .filter(|m| m.id != *me)
            .map(|m| FollowerLink {
                name: m.id.clone(),
                addr: m.addr,
                sync: m.sync,
            })
            .collect();
        let quorum = self.quorum.as_ref().and_then(|q| {
            let members: Vec<String> = (q.members.iter())
                .filter(|m| *m != me.as_str())
                .cloned()
                .collect();
            let k = q.k.min(members.len());
            (k > 0).then_some(QuorumSpec {
                mode: q.mode,
                k,
                members,
            })
        });
        PrimaryConfig {
            epoch,
            followers,
            quorum,
            failover: true,
            ..self.primary.clone()
        }
    }
}
