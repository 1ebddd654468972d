//! `acknowledged_records_survive`: every record acknowledged at `RemoteDurable` or
//! `RemoteApplied` outside degraded mode stays at its LSN, with its bytes, durably, on at
//! least k + 1 of the primary and the quorum's members, through every later crash, restart,
//! truncation and take-back. (Checked after each of those: nothing else removes a record.)

use super::{holds_durably, Check, Violation};
use crate::sim::history::History;
use crate::sim::spec::{ClusterSpec, PRIMARY};
use crate::sim::ModelLog;

/// Checks every acknowledged record against the logs as they are now.
///
/// # Errors
/// The first record held durably by too few nodes.
pub fn acknowledged_records_survive(
    spec: &ClusterSpec,
    logs: &[&ModelLog],
    history: &History,
) -> Check {
    // With failover the primary is one of the quorum's members; without, node 0.
    let mut nodes = if spec.failover {
        Vec::new()
    } else {
        vec![PRIMARY]
    };
    nodes.extend(spec.quorum_members());
    let need = spec.quorum_k() + 1;
    for (lsn, acked) in history.acked_records() {
        let holders: Vec<usize> = (nodes.iter().copied())
            .filter(|&n| holds_durably(logs[n], *lsn, &acked.bytes))
            .collect();
        if holders.len() < need {
            return Err(Violation::new(
                "acknowledged_records_survive",
                format!(
                    "record {lsn}, acknowledged at {:?}, is held durably by {holders:?} only; {need} of {nodes:?} must hold it",
                    acked.level
                ),
            ));
        }
    }
    Ok(())
}
