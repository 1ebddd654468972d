//! Retention: [`purge_before`] removes whole segments whose records are all below an LSN, oldest
//! first, never the active one, keeping files no reader mapped in the free pool for reuse.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::segment_set::Segment;
use crate::state::Shared;
use crate::types::Lsn;

/// Result of [`crate::Log::purge_before`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Segment files removed from the log.
    pub segments_removed: usize,
    /// Of those, files kept in the free pool for reuse.
    pub segments_recycled: usize,
    /// The log's first LSN afterwards.
    pub first_lsn: Lsn,
}

/// Removes whole segments below `lsn` (never the active one).
pub(crate) fn purge_before(shared: &Shared, lsn: Lsn) -> Result<PurgeReport> {
    let removed: Vec<Arc<Segment>> = {
        let mut segs = shared.segments.write();
        let n = segs
            .windows(2)
            .take_while(|w| w[1].base <= lsn && w[0].is_sealed())
            .count();
        segs.drain(..n).collect()
    };
    let mut report = PurgeReport {
        first_lsn: shared.first_lsn(),
        ..PurgeReport::default()
    };
    // Oldest first, the directory synced after each: a crash leaves a log that starts later,
    // never one with a hole.
    for seg in removed {
        let recycled = if seg.may_be_read() {
            shared.vfs.remove_file(&seg.path).map(|()| false)
        } else {
            shared.pool.recycle(&seg.path)
        }
        .map_err(|e| Error::io("remove segment", &seg.path, e))?;
        shared
            .vfs
            .sync_dir(&shared.dir)
            .map_err(|e| Error::io("fsync directory", &shared.dir, e))?;
        report.segments_removed += 1;
        report.segments_recycled += usize::from(recycled);
    }
    Ok(report)
}
