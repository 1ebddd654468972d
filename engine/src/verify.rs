//! [`verify`]: checks every segment and record of a log directory without changing anything,
//! by the same rules recovery applies (`segment_scan.rs`).

use std::path::Path;

use crate::corruption::Corruption;
use crate::error::{Error, Result};
use crate::files::{list, not_a_log, read_floor, read_meta};
use crate::io::{OpenMode, StdVfs, Vfs};
use crate::recovery::{scan_opened, TornTail};
use crate::segment::LEGACY_FORMAT_VERSION;
use crate::segment_file::{open_segment, read_all};
use crate::segment_scan::Stop;
use crate::types::Lsn;

/// Result of [`verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files.
    pub segments: usize,
    /// Valid records.
    pub records: u64,
    /// First LSN.
    pub first_lsn: Lsn,
    /// Last valid LSN.
    pub last_lsn: Lsn,
    /// Bytes of valid records, headers included.
    pub bytes: u64,
    /// A torn tail that recovery would cut (clean: a crash explains it).
    pub torn_tail: Option<TornTail>,
    /// Every corruption found (at most one per segment: a segment is not read past its first).
    pub corruptions: Vec<Corruption>,
    /// Files in the free pool.
    pub free_segments: usize,
    /// Segments in format version 1 (no write markers): their tail is judged by the version-1
    /// rule, which takes damage within `max_unsynced_bytes` of the end for a torn write.
    pub legacy_segments: usize,
    /// The durable floor (`Lsn::ZERO`: none, or the log was not closed cleanly since it was
    /// created by a version-2 build).
    pub durable_floor: Lsn,
    /// Quarantined copies of damaged segments, kept for forensics.
    pub quarantined: Vec<String>,
}

impl VerifyReport {
    /// No corruption (a torn tail is not corruption).
    pub fn is_clean(&self) -> bool {
        self.corruptions.is_empty()
    }
}

/// Checks every segment and record of the log in `dir` without changing anything.
///
/// # Errors
/// [`Error::NotALog`], [`Error::UnsupportedVersion`], [`Error::Io`]. Corruption is not an error
/// here: it is listed in the report.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    verify_with(&StdVfs::default(), dir)
}

/// [`verify`] on a given file system.
///
/// # Errors
/// As [`verify`].
pub fn verify_with(vfs: &dyn Vfs, dir: &Path) -> Result<VerifyReport> {
    if !vfs.is_dir(dir) {
        return Err(Error::NotALog {
            path: dir.to_path_buf(),
            reason: "no such directory".into(),
        });
    }
    let listing = list(vfs, dir)?;
    if !listing.has_meta {
        return Err(not_a_log(dir, &listing));
    }
    let mut report = VerifyReport {
        segments: listing.segments.len(),
        free_segments: listing.free.len(),
        first_lsn: listing.segments.first().copied().unwrap_or(Lsn::FIRST),
        quarantined: listing.quarantined.clone(),
        ..VerifyReport::default()
    };
    if let Err(e) = read_meta(vfs, dir) {
        report.corruptions.push(Corruption::try_from(e)?);
        return Ok(report);
    }
    if listing.has_floor {
        match read_floor(vfs, dir) {
            Ok(f) => report.durable_floor = f,
            Err(e) => report.corruptions.push(Corruption::try_from(e)?),
        }
    }
    report.last_lsn = report.first_lsn.prev();
    for (i, &base) in listing.segments.iter().enumerate() {
        let next_base = listing.segments.get(i + 1).copied();
        verify_segment(vfs, dir, base, next_base, &mut report)?;
    }
    Ok(report)
}

fn verify_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    base: Lsn,
    next_base: Option<Lsn>,
    report: &mut VerifyReport,
) -> Result<()> {
    let o = match open_segment(vfs, dir, base, OpenMode::Read) {
        Ok(o) => o,
        Err(e) => {
            report.corruptions.push(Corruption::try_from(e)?);
            return Ok(());
        }
    };
    if o.header.format_version == LEGACY_FORMAT_VERSION {
        report.legacy_segments += 1;
    }
    let bytes = read_all(&*o.file)?;
    let scan = scan_opened(&o, &bytes, next_base, report.durable_floor);
    report.records += scan.records;
    report.bytes += scan.bytes;
    if scan.records > 0 {
        report.last_lsn = scan.next_lsn.prev();
    }
    match scan.stop {
        Stop::Clean => {}
        Stop::Torn {
            offset,
            reason,
            discarded,
        } => {
            report.torn_tail = Some(TornTail {
                segment: o.path,
                offset,
                lsn: scan.next_lsn,
                bytes_zeroed: 0,
                discarded_records: discarded,
                reason,
            })
        }
        Stop::Corrupt { offset, reason } => report.corruptions.push(Corruption {
            segment: o.path,
            offset,
            lsn: scan.next_lsn,
            reason,
        }),
    }
    Ok(())
}
