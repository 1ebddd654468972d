//! Repairing a damaged sealed segment with records from elsewhere (a replica's copy).
//!
//! The records must be exactly the segment's LSNs, each with a valid CRC. The new segment is
//! written under a temporary name, fdatasync'ed, read back and checked by the recovery rules,
//! then renamed over the damaged file and the directory fsync'ed; the damaged bytes are first
//! copied to a `quarantine-*.seg` file for forensics, so nothing is ever silently discarded. A
//! crash at any point leaves either the damaged segment or the repaired one, never a hole.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::files::{now_nanos, write_atomically, write_segment_header};
use crate::io::OpenMode;
use crate::pool::create_file;
use crate::record::{self, encode_marker, Marker, MarkerKind, MARKER_BYTES};
use crate::segment::{quarantine_name, segment_name, FORMAT_VERSION, SEGMENT_HEADER_BYTES};
use crate::segment_file::read_all;
use crate::segment_scan::{scan_records, SegmentFacts, Stop};
use crate::segment_set::Segment;
use crate::state::Shared;
use crate::types::{Epoch, Lsn};

/// What a repair did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairReport {
    /// The segment file repaired.
    pub segment: PathBuf,
    /// Its LSNs.
    pub first: Lsn,
    /// Its last LSN.
    pub last: Lsn,
    /// Where the damaged bytes were kept.
    pub quarantine: PathBuf,
}

/// A sealed segment known to be damaged: its range, and the first damage found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedSegment {
    /// The segment is sealed (the active one must be sealed before its repair).
    pub sealed: bool,
    /// First LSN of the segment.
    pub first: Lsn,
    /// Last LSN of the segment.
    pub last: Lsn,
    /// The damage.
    pub corruption: crate::corruption::Corruption,
}

/// Replaces sealed segment `base` with `records` (see the module docs).
pub(crate) fn repair_segment(
    shared: &Shared,
    base: Lsn,
    records: &[Bytes],
) -> Result<RepairReport> {
    let (index, seg, next_base) = find_sealed(shared, base)?;
    let last = seg.last_lsn();
    let image = build_image(shared, base, last, records)?;
    let (file, scan) = write_image(shared, base, next_base, &image)?;
    let dir = &shared.dir;
    let vfs = &*shared.vfs;
    let damaged = read_all(&*seg.file).unwrap_or_default();
    let quarantine = quarantine_name(base, now_nanos());
    write_atomically(vfs, dir, "logship-quarantine.tmp", &quarantine, &damaged)?;
    let tmp = dir.join(REPAIR_TMP);
    let path = dir.join(segment_name(base));
    vfs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    vfs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))?;
    let window = shared.options.unsynced_window_bytes();
    let capacity = image.len() as u64;
    let repaired = Segment::new(
        base,
        path.clone(),
        file,
        capacity,
        window,
        last,
        scan.end,
        scan.index,
    );
    repaired.seal();
    {
        let mut segs = shared.segments.write();
        if segs.get(index).is_some_and(|s| Arc::ptr_eq(s, &seg)) {
            segs[index] = Arc::new(repaired);
        }
    }
    tracing::warn!(segment = %path.display(), first = %base, %last, quarantine = %quarantine, "repaired a damaged segment from a replica's records");
    Ok(RepairReport {
        segment: path,
        first: base,
        last,
        quarantine: dir.join(quarantine),
    })
}

/// Where the repair's new segment is prepared.
const REPAIR_TMP: &str = "logship-repair.tmp";

/// The sealed segment starting at `base`: its index, itself, its successor's base.
fn find_sealed(shared: &Shared, base: Lsn) -> Result<(usize, Arc<Segment>, Option<Lsn>)> {
    let segs = shared.segments.read();
    let i = segs
        .iter()
        .position(|s| s.base == base)
        .ok_or_else(|| not_repairable(base, "no segment starts at this LSN".into()))?;
    if !segs[i].is_sealed() {
        return Err(not_repairable(
            base,
            "the active segment is repaired by sealing it first".into(),
        ));
    }
    let next = segs.get(i + 1).map(|s| s.base);
    Ok((i, Arc::clone(&segs[i]), next))
}

/// Writes the new segment under its temporary name (body, then the header, then one sync) and
/// reads it back through the recovery rules.
fn write_image(
    shared: &Shared,
    base: Lsn,
    next_base: Option<Lsn>,
    image: &[u8],
) -> Result<(Arc<dyn crate::io::VfsFile>, crate::segment_scan::Scan)> {
    let vfs = &*shared.vfs;
    let tmp = shared.dir.join(REPAIR_TMP);
    if vfs.open(&tmp, OpenMode::Read).is_ok() {
        vfs.remove_file(&tmp)
            .map_err(|e| Error::io("remove", &tmp, e))?;
    }
    let file = create_file(vfs, &tmp, image.len() as u64, false)
        .map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all_at(&image[SEGMENT_HEADER_BYTES..], SEGMENT_HEADER_BYTES as u64)
        .map_err(|e| Error::io("write", &tmp, e))?;
    let window = shared.options.unsynced_window_bytes();
    write_segment_header(&*file, base, image.len() as u64, window)?;
    let scan = check_image(&*file, base, next_base, window)?;
    Ok((file, scan))
}

fn not_repairable(base: Lsn, reason: String) -> Error {
    Error::InvalidOptions {
        key: "repair_segment",
        reason: format!("segment {base}: {reason}"),
    }
}

/// The new segment's bytes: a header placeholder (written last, synced), the records, one
/// marker. The records (runs of encoded records, markers between them skipped) must be exactly
/// `base..=last`, CRCs valid.
fn build_image(shared: &Shared, base: Lsn, last: Lsn, records: &[Bytes]) -> Result<Vec<u8>> {
    let mut image = vec![0u8; SEGMENT_HEADER_BYTES];
    let mut next = base;
    let mut consumed = 0;
    for run in records {
        for item in record::run(run) {
            let (offset, r) = item.map_err(|(offset, e)| Error::InvalidRecords {
                offset: consumed + offset,
                reason: e.to_string(),
            })?;
            if r.header.lsn != next || next > last {
                return Err(Error::InvalidRecords {
                    offset: consumed + offset,
                    reason: format!(
                        "LSN {} where {next} was expected (segment {base}..={last})",
                        r.header.lsn
                    ),
                });
            }
            image.extend_from_slice(&run[offset..offset + r.encoded_len()]);
            next = next.next();
        }
        consumed += run.len();
    }
    if next != last.next() {
        return Err(Error::InvalidRecords {
            offset: consumed,
            reason: format!(
                "records end at {} but the segment holds up to {last}",
                next.prev()
            ),
        });
    }
    let marker = Marker {
        next_lsn: next,
        epoch: Epoch(0),
        segment_base: base,
        synced_offset: SEGMENT_HEADER_BYTES as u64,
        durable_lsn: shared.watermark.durable(),
        records: u32::try_from(last.get() + 1 - base.get()).unwrap_or(u32::MAX),
        kind: MarkerKind::Write,
    };
    image.extend_from_slice(&encode_marker(&marker));
    image.resize(image.len() + MARKER_BYTES, 0);
    Ok(image)
}

/// Reads the written file back and checks it by the recovery rules: it must hold exactly the
/// segment's records.
fn check_image(
    file: &dyn crate::io::VfsFile,
    base: Lsn,
    next_base: Option<Lsn>,
    window: u64,
) -> Result<crate::segment_scan::Scan> {
    let bytes = read_all(file)?;
    let facts = SegmentFacts {
        base,
        next_base,
        version: FORMAT_VERSION,
        window,
        floor: Lsn::ZERO,
    };
    let scan = scan_records(&bytes, &facts);
    if scan.stop != Stop::Clean {
        return Err(Error::Corruption {
            segment: file.path().to_path_buf(),
            offset: scan.end,
            lsn: scan.next_lsn,
            reason: format!("the repaired segment does not read back: {:?}", scan.stop),
        });
    }
    Ok(scan)
}
