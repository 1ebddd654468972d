//! The properties the simulator checks, one per file, each a small function that returns a
//! [`Violation`] naming itself and saying what it saw.
//!
//! When they are checked (the cluster calls them; see `cluster.rs`): every property that a
//! step can break is checked right after the step that could break it, which is the same as
//! after every step but cheaper: an acknowledgement's quorum when it is made, a follower's
//! records when it appends them, survival after every crash, restart and truncation (the only
//! events that remove records), agreement incrementally after every step, bounds on every
//! send and every 100 ms. Each replica's own `check_invariants` runs after each of its steps;
//! the logs' and the network's every 500 ms.

mod ack_on_quorum;
mod acked_survive;
mod caught_up;
mod commit_never_goes_back;
mod logs_agree;
mod memory_bounded;
mod one_primary_per_epoch;
mod only_primary_records;

use std::fmt;

pub use self::ack_on_quorum::remote_durable_ack_is_on_a_quorum;
pub use self::acked_survive::acknowledged_records_survive;
pub use self::caught_up::{caught_up_after_faults, Convergence};
pub use self::commit_never_goes_back::commit_never_goes_back;
pub use self::logs_agree::logs_agree_below_commit;
pub use self::memory_bounded::{
    connection_bytes_bounded, memory_is_bounded, ConnectionBound, WaiterBound, CONTROL_SLACK_BYTES,
};
pub use self::one_primary_per_epoch::one_primary_per_epoch;
pub use self::only_primary_records::followers_hold_only_primary_records;

/// A property that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property's name (its function's).
    pub invariant: &'static str,
    /// What was seen.
    pub message: String,
}

impl Violation {
    /// A violation of `invariant`.
    pub fn new(invariant: &'static str, message: String) -> Violation {
        Violation { invariant, message }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.message)
    }
}

/// A property's verdict.
pub type Check = Result<(), Violation>;

/// Whether `log` holds `bytes` at `lsn`, durably.
pub(crate) fn holds_durably(log: &super::ModelLog, lsn: logship_engine::Lsn, bytes: &[u8]) -> bool {
    use crate::vocab::ReplicaLog;
    log.durable_lsn() >= lsn && log.record(lsn).is_some_and(|b| b[..] == *bytes)
}
