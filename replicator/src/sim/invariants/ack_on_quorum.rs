//! `remote_durable_ack_is_on_a_quorum`: when an append is acknowledged, the copies its level
//! promises exist at that moment.
//!
//! - every level: the primary's log holds the record durably (a remote level never passes
//!   local durability);
//! - `RemoteDurable`, `RemoteApplied`: at least k members of the sync quorum hold it durably,
//!   with identical bytes (FIRST k and ANY k alike promise k copies);
//! - `RemoteWrite`: at least k members received it (a member may have lost it since, unsynced,
//!   in a crash: the level promises receipt, not survival).
//!
//! While the primary is degraded (policy `degrade`, quorum lost), remote levels are
//! acknowledged at local durability, as documented; the caller passes `degraded` and only the
//! primary's copy is checked then.

use logship_engine::Lsn;

use super::{holds_durably, Check, Violation};
use crate::protocol::DurabilityLevel;
use crate::sim::history::{crc_of, History};
use crate::sim::spec::ClusterSpec;
use crate::sim::ModelLog;

/// Checks the acknowledgement of record `lsn` (`bytes`, the primary's) at `level`.
///
/// # Errors
/// A copy the level promises is missing.
pub fn remote_durable_ack_is_on_a_quorum(
    spec: &ClusterSpec,
    logs: &[&ModelLog],
    history: &History,
    (primary, level, lsn, bytes): (usize, DurabilityLevel, Lsn, &[u8]),
    degraded: bool,
) -> Check {
    let fail = |m: String| Err(Violation::new("remote_durable_ack_is_on_a_quorum", m));
    if !holds_durably(logs[primary], lsn, bytes) {
        return fail(format!(
            "{level:?} ack of {lsn}: the primary does not hold it durably"
        ));
    }
    if level == DurabilityLevel::Local || degraded {
        return Ok(());
    }
    let members: Vec<usize> = (spec.quorum_members().into_iter())
        .filter(|&m| m != primary)
        .collect();
    let crc = crc_of(bytes);
    let holders: Vec<usize> = (members.iter().copied())
        .filter(|&m| match level {
            DurabilityLevel::RemoteWrite => history.ever_received(m, lsn, crc),
            _ => holds_durably(logs[m], lsn, bytes),
        })
        .collect();
    let k = spec.quorum_k();
    if holders.len() < k {
        return fail(format!(
            "{level:?} ack of {lsn} (not degraded): only members {holders:?} of {members:?} hold it, k={k}"
        ));
    }
    Ok(())
}
