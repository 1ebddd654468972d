//! What a failover run does: how many kills and switchovers, the cluster's timeouts (written
//! into every member's config, and printed beside the figures), and the pacing between rounds.

use std::time::Duration;

use logship_replicator::config::{
    DEFAULT_ELECTION_TIMEOUT_MAX_MS, DEFAULT_ELECTION_TIMEOUT_MIN_MS,
};
use logship_replicator::vocab::Timeouts;
use serde::Serialize;

/// Status polls of the members during a round, this far apart.
pub const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// A round that has not reached its end within this long fails the run.
pub const ROUND_BOUND: Duration = Duration::from_secs(30);
/// The cluster must converge (every member at the same last LSN) within this long.
pub const CONVERGE_BOUND: Duration = Duration::from_secs(60);
/// Payload bytes of each append.
pub const RECORD_BYTES: usize = 100;
/// Target for the time to the first commit after a kill: its p50 over (election timeout max
/// + 2 heartbeat intervals + this), at most 1.
pub const FIRST_COMMIT_SLACK_MS: u64 = 50;
/// Target for a switchover (promote request to the target serving): p50 at most this.
pub const SWITCHOVER_TARGET_MS: f64 = 100.0;

/// The plan.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverPlan {
    /// `full` or `quick`.
    pub name: &'static str,
    /// Primaries killed (SIGKILL), one per round.
    pub kills: usize,
    /// Planned switchovers (promote), one per round.
    pub switchovers: usize,
    /// Cluster members (all sync voters).
    pub members: usize,
    /// The quorum, `ANY 1`.
    pub quorum: &'static str,
    /// `[timeouts] heartbeat_interval_ms`.
    pub heartbeat_interval_ms: u64,
    /// `[timeouts] peer_ms`.
    pub peer_timeout_ms: u64,
    /// `[cluster] election_timeout_min_ms`.
    pub election_timeout_min_ms: u64,
    /// `[cluster] election_timeout_max_ms`.
    pub election_timeout_max_ms: u64,
    /// Load runs this long (ms) on a converged cluster before each kill or switchover.
    pub settle_ms: u64,
    /// Payload bytes of each append.
    pub record_bytes: usize,
    /// Status poll interval during a round (ms).
    pub poll_interval_ms: f64,
}

impl FailoverPlan {
    /// 20 kills and 20 switchovers, the nodes' default timeouts.
    pub fn full() -> FailoverPlan {
        let t = Timeouts::default();
        FailoverPlan {
            name: "full",
            kills: 20,
            switchovers: 20,
            members: 3,
            quorum: "ANY 1",
            heartbeat_interval_ms: t.heartbeat_interval.as_millis() as u64,
            peer_timeout_ms: t.peer.as_millis() as u64,
            election_timeout_min_ms: DEFAULT_ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: DEFAULT_ELECTION_TIMEOUT_MAX_MS,
            settle_ms: 1000,
            record_bytes: RECORD_BYTES,
            poll_interval_ms: POLL_INTERVAL.as_secs_f64() * 1e3,
        }
    }

    /// 5 kills and 5 switchovers, shorter pauses between rounds.
    pub fn quick() -> FailoverPlan {
        FailoverPlan {
            name: "quick",
            kills: 5,
            switchovers: 5,
            settle_ms: 500,
            ..FailoverPlan::full()
        }
    }

    /// The bound the time to the first commit after a kill is compared with: election
    /// timeout max + 2 heartbeat intervals + 50 ms.
    pub fn first_commit_bound_ms(&self) -> f64 {
        (self.election_timeout_max_ms + 2 * self.heartbeat_interval_ms + FIRST_COMMIT_SLACK_MS)
            as f64
    }
}
