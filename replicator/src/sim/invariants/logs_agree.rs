//! `logs_agree_below_commit`: a follower's log and the primary's hold identical bytes at every
//! LSN up to the highest remote-durable commit ever acknowledged, within what the follower has
//! acknowledged as durable to the current primary.
//!
//! Why the second bound: a follower cut off while the primary lost unsynced records and wrote
//! new ones at their LSNs legitimately holds the old ones until its next session truncates
//! them (or refuses it); what it acknowledged durable in a session with this primary, though,
//! it must hold as the primary does, since the quorum counts it. The primary's records up to
//! the commit are durable on it and never change, so the check is incremental: `agreed` is how
//! far this follower was verified, lowered when its log is cut.

use logship_engine::Lsn;

use super::{Check, Violation};
use crate::sim::ModelLog;

/// Verifies follower `node` against the primary from `agreed + 1` up to `upto` (the lower of
/// the commit bound and what it acknowledged), and raises `agreed`.
///
/// # Errors
/// A record that differs, or that the follower acknowledged but does not hold.
pub fn logs_agree_below_commit(
    primary: &ModelLog,
    follower: &ModelLog,
    node: usize,
    upto: Lsn,
    agreed: &mut Lsn,
) -> Check {
    let mut lsn = agreed.next();
    while lsn <= upto {
        let (p, f) = (primary.record(lsn), follower.record(lsn));
        if p.is_none() || p != f {
            let what = match (p, f) {
                (None, _) => "the primary does not hold it".to_string(),
                (_, None) => {
                    "the follower acknowledged it durable but does not hold it".to_string()
                }
                _ => "the bytes differ".to_string(),
            };
            return Err(Violation::new(
                "logs_agree_below_commit",
                format!("n{node} record {lsn} (verified up to {upto}): {what}"),
            ));
        }
        *agreed = lsn;
        lsn = lsn.next();
    }
    Ok(())
}
