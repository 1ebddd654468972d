//! The replica's vocabulary, shared by the state machines, the node that runs them and the
//! simulator: identifiers, timeouts, the inputs a replica takes and the actions it returns,
//! its view of storage, and the randomness it is given. A leaf: nothing here imports the
//! machines or their executors.

mod action;
mod config;
mod epochs;
mod ids;
mod random;
mod storage;

pub use self::action::{Action, Input, ReadError, Tail, WaitError, WaiterId};
pub use self::config::{
    ElectionConfig, FollowerConfig, FollowerLink, Member, PrimaryConfig,
    DEFAULT_CATCH_UP_CHUNK_BYTES, DEFAULT_MAX_INFLIGHT_BYTES,
};
pub use self::epochs::{at_least_as_up_to_date, ElectionState, EpochHistory, MAX_HISTORY_ENTRIES};
pub use self::ids::{ConnId, NodeId};
pub use self::random::NonceSource;
pub use self::storage::{ReplicaLog, StorageError};
pub use crate::backoff::Rng;

use std::time::Duration;

/// Named timeouts. Defaults and their reasons: docs/fault-tolerance.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a TCP connection.
    pub connect: Duration,
    /// From connection to the start of streaming.
    pub handshake: Duration,
    /// Heartbeat interval, both ways.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is unhealthy and its connection dropped.
    pub peer: Duration,
    /// How long an append waits for its level under the `block` policy.
    pub commit: Duration,
    /// One catch-up chunk read from the log.
    pub catch_up_read: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(1),
            handshake: Duration::from_secs(2),
            heartbeat_interval: Duration::from_millis(100),
            peer: Duration::from_secs(1),
            commit: Duration::from_secs(5),
            catch_up_read: Duration::from_secs(5),
        }
    }
}
