//! `memory_is_bounded`: what the replicas make the cluster hold stays within bounds derived
//! from the configuration.
//!
//! - Bytes in flight on a connection toward a follower (sent, not yet delivered, held across a
//!   partition included): at most `max_inflight_bytes` (the link's window), plus one catch-up
//!   chunk or batch (the window admits one frame of any size when nothing is unacknowledged),
//!   plus [`CONTROL_SLACK_BYTES`] for handshakes and heartbeats. Toward the primary: one
//!   fetch answer ([`FETCH_CHUNK_BYTES`](crate::fetch::FETCH_CHUNK_BYTES)) plus the slack.
//! - Appends waiting on a node: the replica's count never exceeds the node's own, and none is
//!   older than twice the commit timeout (the start gate's wait, then the level's) plus a
//!   second: appends are bounded by the rate at which clients send them.
//! - Read jobs queued on a node: at most the node's queue capacity.

use std::time::Duration;

use super::{Check, Violation};
use crate::sim::clients::ClientRef;

/// Heartbeats, acknowledgements and handshake frames a connection may hold beyond the window:
/// 50 heartbeats held across a partition until the stall reset, with room to spare.
pub const CONTROL_SLACK_BYTES: u64 = 64 << 10;

/// The bound on one connection's bytes in flight.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionBound {
    /// Toward a follower.
    pub to_follower: u64,
    /// Toward the primary.
    pub to_primary: u64,
}

/// What a node's waiting appends look like now.
#[derive(Clone, Copy, Debug)]
pub struct WaiterBound {
    /// The node.
    pub node: usize,
    /// Appends the replica holds (gate and deadlines).
    pub replica_waiting: usize,
    /// Appends the node's clients wait for.
    pub pending: usize,
    /// The oldest, and its age.
    pub oldest: Option<(ClientRef, Duration)>,
    /// The age no append may pass.
    pub max_age: Duration,
    /// Read jobs queued, and the capacity.
    pub read_jobs: (usize, usize),
}

/// Checks one connection's bytes in flight toward `to` (0: the primary).
///
/// # Errors
/// Past the bound.
pub fn connection_bytes_bounded(
    conn: u64,
    to: usize,
    in_flight: u64,
    bound: ConnectionBound,
) -> Check {
    let limit = if to == 0 {
        bound.to_primary
    } else {
        bound.to_follower
    };
    if in_flight > limit {
        return Err(Violation::new(
            "memory_is_bounded",
            format!("conn {conn} holds {in_flight} bytes toward n{to}; the bound is {limit}"),
        ));
    }
    Ok(())
}

/// Checks a node's waiting appends and read jobs.
///
/// # Errors
/// More than the bound.
pub fn memory_is_bounded(w: &WaiterBound) -> Check {
    let fail = |m: String| Err(Violation::new("memory_is_bounded", m));
    if w.replica_waiting > w.pending {
        return fail(format!(
            "n{}'s replica holds {} waiting appends; its clients wait for {}",
            w.node, w.replica_waiting, w.pending
        ));
    }
    if let Some((c, age)) = w.oldest {
        if age > w.max_age {
            return fail(format!(
                "n{}: append {} has waited {age:?} (bound {:?})",
                w.node, c.0, w.max_age
            ));
        }
    }
    if w.read_jobs.0 > w.read_jobs.1 {
        return fail(format!(
            "n{}: {} read jobs queued, capacity {}",
            w.node, w.read_jobs.0, w.read_jobs.1
        ));
    }
    Ok(())
}
