//! `followers_hold_only_primary_records`: every record a follower appends is one the primary's
//! log held at that LSN at some time (a follower never invents, shifts or mixes records).
//! Checked on each append: nothing else puts records into a follower's log.

use bytes::Bytes;
use logship_engine::record;

use super::{Check, Violation};
use crate::sim::history::History;

/// Checks the records `node` appends (whole, encoded, as the action carried them).
///
/// # Errors
/// A record the primary never held at its LSN, or bytes that are not whole records.
pub fn followers_hold_only_primary_records(
    history: &History,
    node: usize,
    records: &Bytes,
) -> Check {
    let fail = |m: String| Err(Violation::new("followers_hold_only_primary_records", m));
    for item in record::run(records) {
        let Ok((offset, r)) = item else {
            return fail(format!("n{node} appends bytes that are not whole records"));
        };
        let lsn = r.header.lsn;
        let bytes = &records[offset..offset + r.encoded_len()];
        if !history.primary_ever_held(lsn, bytes) {
            return fail(format!(
                "n{node} appends a record at {lsn} that the primary never held there"
            ));
        }
    }
    Ok(())
}
