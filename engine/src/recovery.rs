//! Opening a log directory: creation, validation, and crash recovery.
//!
//! Where damage can come from decides what recovery does with it (the rules themselves are in
//! `segment_scan.rs`, shared with `verify`, the scanner and the scrubber):
//! - A crash leaves damage only in the writes that were in flight in the last segment: sealed
//!   segments were synced in full before their successor was named, and every write marker
//!   proves what was synced before it. Such a torn tail is cut (the region is zeroed and synced)
//!   and reported.
//! - Damage to bytes that a marker or the durable floor proves were synced, and any failure in
//!   a sealed segment, is corruption. [`RecoveryMode::Strict`] refuses the open with
//!   [`Error::Corruption`] naming file, offset and LSN; [`RecoveryMode::Salvage`] (for a node
//!   whose replicas hold the records) sets the damage aside and opens; and
//!   [`RecoveryMode::TruncateAtCorruption`] cuts the log there on purpose.
//!
//! After the scan, the bytes of the last segment that no marker or floor proves synced are
//! written again and fdatasync'ed: what a killed process (or one whose fdatasync failed) left
//! in the page cache is read back as records, and must be on stable storage before anyone is
//! told so; after a failed fdatasync the pages are clean, so a sync alone would write nothing.

use std::path::{Path, PathBuf};

use crate::corruption::Corruption;
use crate::error::{Error, Result};
use crate::files::{
    list, not_a_log, read_floor, read_meta, write_floor, write_meta, write_segment_header, Listing,
};
use crate::io::{OpenMode, Vfs, VfsFile};
use crate::options::{Options, RecoveryMode};
use crate::pool::{create_file, write_zeros};
use crate::segment::{quarantine_name, segment_name, META_FILE, SEGMENT_HEADER_BYTES};
use crate::segment_file::{open_segment, read_all, Opened};
use crate::segment_scan::{check_floor, scan_records, Scan, SegmentFacts, Stop};
use crate::segment_set::Segment;
use crate::types::Lsn;

/// What recovery found and did when the log was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The log was created by this open.
    pub created: bool,
    /// Segment files in the log after recovery.
    pub segments: usize,
    /// First LSN held.
    pub first_lsn: Lsn,
    /// Last LSN recovered (`first_lsn - 1` when the log is empty).
    pub last_lsn: Lsn,
    /// The log's durable floor when it was opened (`Lsn::ZERO`: none). Equal to `last_lsn` when
    /// the log was closed cleanly and nothing was lost since.
    pub durable_floor: Lsn,
    /// A damaged durable floor was removed (`Salvage` only): the end of the log is vouched for
    /// by nothing local.
    pub durable_floor_removed: bool,
    /// A torn write at the end of the log that was cut.
    pub torn_tail: Option<TornTail>,
    /// Corruption the log was cut at ([`RecoveryMode::TruncateAtCorruption`] only).
    pub corruption_cut: Option<Corruption>,
    /// Segment files removed because they followed a corruption cut.
    pub segments_removed: usize,
    /// Unfinished temporary files removed.
    pub temp_files_removed: usize,
    /// Damage set aside by [`RecoveryMode::Salvage`]: sealed segments that opened damaged (their
    /// range reads as corruption until repaired), and the point the last segment was cut at.
    pub salvaged: Vec<Salvaged>,
}

/// Damage [`RecoveryMode::Salvage`] set aside instead of refusing the open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Salvaged {
    /// Where and what.
    pub corruption: Corruption,
    /// What was done about it.
    pub action: SalvageAction,
}

/// What [`RecoveryMode::Salvage`] did with one damage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SalvageAction {
    /// A sealed segment stays in the log, marked damaged from this LSN: reads there fail with
    /// [`Error::Corruption`] until [`crate::Log::repair_segment`] replaces it.
    MarkedDamaged,
    /// The last segment's bytes were copied to `quarantine` and the log cut before the damage:
    /// the records from `corruption.lsn` on must come back from a replica.
    CutAndQuarantined {
        /// The copy of the damaged file.
        quarantine: PathBuf,
        /// Records after the damage that were intact but cut with it.
        records_cut: u64,
    },
}

/// A torn record at the end of the log: what a crash mid-write leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub segment: PathBuf,
    /// Offset of the first byte that is not part of a valid record.
    pub offset: u64,
    /// The first LSN that was not recovered.
    pub lsn: Lsn,
    /// Bytes zeroed from `offset` on (0 for `verify`, which changes nothing).
    pub bytes_zeroed: u64,
    /// Checksummed records found after the tear: written by the crashed process but never
    /// proven synced, so never acknowledged as durable.
    pub discarded_records: u64,
    /// What was wrong at `offset`.
    pub reason: String,
}

/// Creates a new log: the marker, then the first segment, each through a temporary name. A
/// crash in between leaves a marker without segments, which the next open with
/// `create_if_missing` completes.
fn create(vfs: &dyn Vfs, dir: &Path, options: &Options, window: u64) -> Result<()> {
    write_meta(vfs, dir)?;
    create_segment(vfs, dir, Lsn::FIRST, options, window)?;
    tracing::info!(dir = %dir.display(), "created log");
    Ok(())
}

/// Creates an empty segment at `base` through a temporary name.
fn create_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    base: Lsn,
    options: &Options,
    window: u64,
) -> Result<()> {
    let size = options.segment_size_bytes;
    let tmp = dir.join("logship-create-segment.tmp");
    let file = create_file(vfs, &tmp, size, options.prezero_segments)
        .map_err(|e| Error::io("create segment", &tmp, e))?;
    write_segment_header(&*file, base, size, window)?;
    let seg = dir.join(segment_name(base));
    vfs.rename(&tmp, &seg)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    vfs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Everything the writer needs to start.
pub(crate) struct Recovered {
    /// The exclusive lock on the marker, held for the log's lifetime.
    pub(crate) lock: crate::io::LockGuard,
    pub(crate) segments: Vec<Segment>,
    pub(crate) next_lsn: Lsn,
    pub(crate) free: Vec<u64>,
    /// The durable floor on disk (`Lsn::ZERO`: none).
    pub(crate) floor: Lsn,
    pub(crate) report: RecoveryReport,
}

/// Opens, creates or recovers the log in `dir`.
pub(crate) fn recover(vfs: &dyn Vfs, dir: &Path, options: &Options) -> Result<Recovered> {
    let window = options.unsynced_window_bytes();
    let (mut listing, mut created) = open_dir(vfs, dir, options, window)?;
    read_meta(vfs, dir)?;
    // Recovery rewrites the tail: never while another process appends to it.
    let lock = vfs
        .lock_exclusive(&dir.join(META_FILE))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked {
                path: dir.to_path_buf(),
            },
            _ => Error::io("lock", dir.join(META_FILE), e),
        })?;
    if !listing.foreign.is_empty() {
        tracing::warn!(dir = %dir.display(), files = ?listing.foreign, "log directory holds files that are not logship's; leaving them alone");
    }
    let temp_files_removed = remove_temp(vfs, dir, &listing.temp)?;
    if listing.segments.is_empty() {
        if !options.create_if_missing {
            return Err(Error::Corruption {
                segment: dir.to_path_buf(),
                offset: 0,
                lsn: Lsn::FIRST,
                reason: "the log has a marker but no segment file (an interrupted creation; \
                         open with create_if_missing to finish it)"
                    .into(),
            });
        }
        tracing::warn!(dir = %dir.display(), "finishing an interrupted log creation");
        create_segment(vfs, dir, Lsn::FIRST, options, window)?;
        listing.segments.push(Lsn::FIRST);
        created = true;
    }
    let floor = floor_at_open(vfs, dir, &listing, options)?;
    let mut rec = recover_segments(vfs, dir, &listing.segments, options, floor)?;
    rec.report.durable_floor_removed = listing.has_floor && floor == Lsn::ZERO;
    rec.lock = lock;
    rec.free = listing.free;
    rec.report.created = created;
    rec.report.temp_files_removed = temp_files_removed;
    Ok(rec)
}

/// Checks the directory, creating the log when asked; returns its listing.
fn open_dir(vfs: &dyn Vfs, dir: &Path, options: &Options, window: u64) -> Result<(Listing, bool)> {
    if !vfs.is_dir(dir) {
        if !options.create_if_missing {
            return Err(Error::NotALog {
                path: dir.to_path_buf(),
                reason: "no such directory".into(),
            });
        }
        vfs.create_dir_all(dir)
            .map_err(|e| Error::io("create directory", dir, e))?;
    }
    let listing = list(vfs, dir)?;
    if listing.has_meta {
        return Ok((listing, false));
    }
    let empty =
        listing.segments.is_empty() && listing.free.is_empty() && listing.foreign.is_empty();
    if !(options.create_if_missing && empty) {
        return Err(not_a_log(dir, &listing));
    }
    remove_temp(vfs, dir, &listing.temp)?;
    create(vfs, dir, options, window)?;
    Ok((list(vfs, dir)?, true))
}

/// The durable floor. A damaged floor is corruption, except under `Salvage`, where it is removed
/// (the replicas vouch for the end of the log instead).
fn floor_at_open(vfs: &dyn Vfs, dir: &Path, listing: &Listing, options: &Options) -> Result<Lsn> {
    if !listing.has_floor {
        return Ok(Lsn::ZERO);
    }
    match read_floor(vfs, dir) {
        Err(Error::Corruption {
            segment, reason, ..
        }) if options.recovery == RecoveryMode::Salvage => {
            tracing::warn!(file = %segment.display(), %reason, "removing a damaged durable floor: the replicas vouch for the end of the log");
            vfs.remove_file(&segment)
                .map_err(|e| Error::io("remove", &segment, e))?;
            Ok(Lsn::ZERO)
        }
        other => other,
    }
}

fn remove_temp(vfs: &dyn Vfs, dir: &Path, temp: &[String]) -> Result<usize> {
    for name in temp {
        let p = dir.join(name);
        vfs.remove_file(&p)
            .map_err(|e| Error::io("remove temporary file", &p, e))?;
    }
    Ok(temp.len())
}

/// Walks the segments in order: headers of sealed ones (records too with `full_scan_on_open`),
/// every record of the last one.
fn recover_segments(
    vfs: &dyn Vfs,
    dir: &Path,
    bases: &[Lsn],
    options: &Options,
    floor: Lsn,
) -> Result<Recovered> {
    let mut segments = Vec::with_capacity(bases.len());
    let mut report = RecoveryReport {
        first_lsn: bases[0],
        durable_floor: floor,
        ..RecoveryReport::default()
    };
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        if let Some(nb) = next_base.filter(|nb| *nb <= base) {
            return Err(Error::Corruption {
                segment: dir.join(segment_name(base)),
                offset: 0,
                lsn: base,
                reason: format!("next segment starts at {nb}, not after {base}"),
            });
        }
        let step = recover_one(vfs, dir, bases, i, options, floor, &mut report)?;
        let cut = step.cut;
        segments.push(step.segment);
        if cut {
            break;
        }
    }
    let last = segments.last().expect("at least one segment");
    report.segments = segments.len();
    report.last_lsn = last.last_lsn();
    let mut floor = floor;
    if floor > report.last_lsn {
        // A salvage or a cut on purpose ended the log below what the floor vouched for.
        write_floor(vfs, dir, report.last_lsn)?;
        floor = report.last_lsn;
    }
    Ok(Recovered {
        lock: crate::io::LockGuard(None),
        next_lsn: last.last_lsn().next(),
        segments,
        free: Vec::new(),
        floor,
        report,
    })
}

/// One segment recovered; `cut` ends the walk (nothing after it is kept).
struct Step {
    segment: Segment,
    cut: bool,
}

fn recover_one(
    vfs: &dyn Vfs,
    dir: &Path,
    bases: &[Lsn],
    i: usize,
    options: &Options,
    floor: Lsn,
    report: &mut RecoveryReport,
) -> Result<Step> {
    let base = bases[i];
    let next_base = bases.get(i + 1).copied();
    let o = match open_segment(vfs, dir, base, OpenMode::ReadWrite) {
        Ok(o) => o,
        Err(e @ Error::Corruption { .. }) if options.recovery == RecoveryMode::Salvage => {
            return salvage_header(vfs, dir, base, next_base, options, e, report);
        }
        Err(e) => return Err(e),
    };
    if let (Some(nb), false) = (next_base, options.full_scan_on_open) {
        return Ok(Step {
            segment: sealed_unscanned(o, nb),
            cut: false,
        });
    }
    let bytes = read_all(&*o.file)?;
    let scan = scan_opened(&o, &bytes, next_base, floor);
    let cut = match &scan.stop {
        Stop::Clean => false,
        Stop::Torn { .. } => {
            report.torn_tail = Some(cut_torn_tail(&o, &bytes, &scan)?);
            false
        }
        Stop::Corrupt { offset, reason } => {
            let c = Corruption {
                segment: o.path.clone(),
                offset: *offset,
                lsn: scan.next_lsn,
                reason: reason.clone(),
            };
            return on_corruption(
                vfs,
                dir,
                &bases[i + 1..],
                (options, floor),
                o,
                &bytes,
                scan,
                c,
                report,
            );
        }
    };
    if next_base.is_none() && floor < scan.next_lsn.prev() {
        make_tail_durable(&o, &bytes, &scan)?;
    }
    Ok(Step {
        segment: scanned_segment(o, &bytes, scan, next_base.is_some()),
        cut,
    })
}

/// Scans an opened segment's bytes by the recovery rules; the last segment also gets the floor
/// check.
pub(crate) fn scan_opened(o: &Opened, bytes: &[u8], next_base: Option<Lsn>, floor: Lsn) -> Scan {
    let last = next_base.is_none();
    let facts = SegmentFacts {
        base: o.base,
        next_base,
        version: o.header.format_version,
        window: o.header.max_unsynced_bytes,
        floor: if last { floor } else { Lsn::ZERO },
    };
    let mut scan = scan_records(bytes, &facts);
    if last {
        check_floor(&mut scan, floor);
    }
    scan
}

fn scanned_segment(o: Opened, bytes: &[u8], scan: Scan, sealed: bool) -> Segment {
    let seg = Segment::new(
        o.base,
        o.path,
        o.file,
        // The file's real size, not the header's claim: files are preallocated in full, and
        // a header is only trusted as far as its checksum goes.
        bytes.len() as u64,
        o.header.max_unsynced_bytes,
        scan.next_lsn.prev(),
        scan.end,
        scan.index,
    );
    seg.set_format_version(o.header.format_version);
    if sealed {
        seg.seal();
    }
    seg
}

/// What a killed process left in the page cache is read back as records; it must be on stable
/// storage before anyone is told it is durable. An fdatasync alone is not enough: after a
/// failed one, Linux marks the dirty pages clean although the device never got them, so a new
/// fdatasync writes nothing. The bytes no marker proves synced are written again (the pages are
/// dirty once more), then synced.
fn make_tail_durable(o: &Opened, bytes: &[u8], scan: &Scan) -> Result<()> {
    let (from, to) = (scan.proven as usize, scan.end as usize);
    if from < to {
        o.file
            .write_all_at(&bytes[from..to], from as u64)
            .map_err(|e| Error::io("rewrite the unproven tail", &o.path, e))?;
    }
    o.file
        .sync_data()
        .map_err(|e| Error::io("fdatasync", &o.path, e))
}

/// Corruption found in a scanned segment, handled as the recovery mode says.
#[allow(clippy::too_many_arguments)]
fn on_corruption(
    vfs: &dyn Vfs,
    dir: &Path,
    later: &[Lsn],
    (options, floor): (&Options, Lsn),
    o: Opened,
    bytes: &[u8],
    scan: Scan,
    c: Corruption,
    report: &mut RecoveryReport,
) -> Result<Step> {
    let sealed = !later.is_empty();
    let cuts = !sealed || options.recovery == RecoveryMode::TruncateAtCorruption;
    if options.recovery != RecoveryMode::Strict && cuts && floor > c.lsn.prev() {
        // Lower the floor before cutting: it must never vouch for records no longer there.
        write_floor(vfs, dir, c.lsn.prev())?;
    }
    match options.recovery {
        RecoveryMode::Strict => Err(c.into()),
        RecoveryMode::Salvage if sealed => {
            tracing::warn!(segment = %c.segment.display(), offset = c.offset, lsn = %c.lsn, reason = %c.reason, "sealed segment is damaged: its records from this LSN read as corruption until it is repaired from a replica");
            // The segment still holds up to its successor's base; reads stop at the damage.
            let seg = sealed_unscanned(o, later[0]);
            seg.mark_damaged(c.clone());
            report.salvaged.push(Salvaged {
                corruption: c,
                action: SalvageAction::MarkedDamaged,
            });
            Ok(Step {
                segment: seg,
                cut: false,
            })
        }
        RecoveryMode::Salvage => {
            let records_cut = count_later_records(bytes, &scan);
            let quarantine = quarantine_copy(vfs, dir, o.base, bytes)?;
            tracing::warn!(segment = %c.segment.display(), offset = c.offset, lsn = %c.lsn, reason = %c.reason, quarantine = %quarantine.display(), records_cut, "cut the log before damaged records that were synced; a replica must supply them again");
            zero_range(&*o.file, c.offset, bytes.len() as u64, bytes)?;
            report.salvaged.push(Salvaged {
                corruption: c,
                action: SalvageAction::CutAndQuarantined {
                    quarantine,
                    records_cut,
                },
            });
            Ok(Step {
                segment: scanned_segment(o, bytes, scan, false),
                cut: true,
            })
        }
        RecoveryMode::TruncateAtCorruption => {
            tracing::warn!(segment = %c.segment.display(), offset = c.offset, lsn = %c.lsn, reason = %c.reason, "cutting the log at corruption, as asked");
            report.segments_removed = remove_after(vfs, dir, later)?;
            zero_range(&*o.file, c.offset, bytes.len() as u64, bytes)?;
            report.corruption_cut = Some(c);
            Ok(Step {
                segment: scanned_segment(o, bytes, scan, false),
                cut: true,
            })
        }
    }
}

/// Intact records after the damage of a salvaged last segment (cut along with it).
fn count_later_records(bytes: &[u8], scan: &Scan) -> u64 {
    let mut n = 0;
    let mut off = scan.end as usize + 1;
    while off + crate::record::RECORD_HEADER_BYTES <= bytes.len() {
        match crate::record::decode(&bytes[off..]) {
            Ok(r) if r.header.lsn >= scan.next_lsn => {
                n += 1;
                off += r.encoded_len();
            }
            _ => off += 1,
        }
    }
    n
}

/// A sealed segment whose header is damaged (`Salvage`): kept, marked damaged as a whole. The
/// last segment's: its file is set aside and an empty segment takes its place.
fn salvage_header(
    vfs: &dyn Vfs,
    dir: &Path,
    base: Lsn,
    next_base: Option<Lsn>,
    options: &Options,
    e: Error,
    report: &mut RecoveryReport,
) -> Result<Step> {
    let c = Corruption::try_from(e)?;
    let path = dir.join(segment_name(base));
    if let Some(nb) = next_base {
        tracing::warn!(segment = %path.display(), reason = %c.reason, "sealed segment header is damaged: the segment reads as corruption until it is repaired from a replica");
        let file = vfs
            .open(&path, OpenMode::ReadWrite)
            .map_err(|e| Error::io("open", &path, e))?;
        let end = file.len().map_err(|e| Error::io("stat", &path, e))?;
        let seg = Segment::new(base, path, file, end, 0, nb.prev(), end, Vec::new());
        seg.seal();
        seg.mark_damaged(c.clone());
        report.salvaged.push(Salvaged {
            corruption: c,
            action: SalvageAction::MarkedDamaged,
        });
        return Ok(Step {
            segment: seg,
            cut: false,
        });
    }
    let quarantine = dir.join(quarantine_name(base, crate::files::now_nanos()));
    vfs.rename(&path, &quarantine)
        .map_err(|e| Error::io("rename", &path, e))?;
    vfs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))?;
    tracing::warn!(segment = %path.display(), reason = %c.reason, quarantine = %quarantine.display(), "the last segment's header is damaged: set it aside and started the segment empty; a replica must supply its records again");
    create_segment(vfs, dir, base, options, options.unsynced_window_bytes())?;
    let o = open_segment(vfs, dir, base, OpenMode::ReadWrite)?;
    report.salvaged.push(Salvaged {
        corruption: c,
        action: SalvageAction::CutAndQuarantined {
            quarantine,
            records_cut: 0,
        },
    });
    let end = SEGMENT_HEADER_BYTES as u64;
    let capacity = o.file.len().map_err(|e| Error::io("stat", &o.path, e))?;
    let seg = Segment::new(
        base,
        o.path,
        o.file,
        capacity,
        o.header.max_unsynced_bytes,
        base.prev(),
        end,
        Vec::new(),
    );
    seg.set_format_version(o.header.format_version);
    Ok(Step {
        segment: seg,
        cut: true,
    })
}

/// Copies a damaged segment's bytes to a quarantine file (synced), for forensics.
fn quarantine_copy(vfs: &dyn Vfs, dir: &Path, base: Lsn, bytes: &[u8]) -> Result<PathBuf> {
    let name = quarantine_name(base, crate::files::now_nanos());
    crate::files::write_atomically(vfs, dir, "logship-quarantine.tmp", &name, bytes)?;
    Ok(dir.join(name))
}

/// A sealed segment taken on trust at open (its header checked; its records are checked by
/// their CRCs when read, by the scrubber and by `verify`).
fn sealed_unscanned(o: Opened, next_base: Lsn) -> Segment {
    let end = o.file.len().unwrap_or(0);
    let seg = Segment::new(
        o.base,
        o.path,
        o.file,
        end,
        o.header.max_unsynced_bytes,
        next_base.prev(),
        end,
        Vec::new(),
    );
    seg.set_format_version(o.header.format_version);
    seg.seal();
    seg
}

fn cut_torn_tail(o: &Opened, bytes: &[u8], scan: &Scan) -> Result<TornTail> {
    let Stop::Torn {
        offset,
        reason,
        discarded,
    } = &scan.stop
    else {
        unreachable!("cut_torn_tail on a scan that did not tear");
    };
    let end = offset
        .saturating_add(o.header.max_unsynced_bytes)
        .min(bytes.len() as u64);
    let zeroed = zero_range(&*o.file, *offset, end, bytes)?;
    let t = TornTail {
        segment: o.path.clone(),
        offset: *offset,
        lsn: scan.next_lsn,
        bytes_zeroed: zeroed,
        discarded_records: *discarded,
        reason: reason.clone(),
    };
    tracing::warn!(segment = %t.segment.display(), offset = t.offset, lsn = %t.lsn, discarded = t.discarded_records, reason = %t.reason, "cut a torn tail left by a crash");
    Ok(t)
}

/// Zeroes `[from, to)` where it is not zero already, then syncs. Returns bytes written.
fn zero_range(file: &dyn VfsFile, from: u64, to: u64, current: &[u8]) -> Result<u64> {
    let written = write_zeros(file, from, to, Some(current), &|| false)
        .map_err(|e| Error::io("zero torn tail", file.path(), e))?
        .unwrap_or(0);
    if written > 0 {
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", file.path(), e))?;
    }
    Ok(written)
}

/// Deletes segments (newest first, syncing the directory after each so a crash never leaves a
/// hole), for a corruption cut.
fn remove_after(vfs: &dyn Vfs, dir: &Path, bases: &[Lsn]) -> Result<usize> {
    for base in bases.iter().rev() {
        let p = dir.join(segment_name(*base));
        vfs.remove_file(&p)
            .map_err(|e| Error::io("remove", &p, e))?;
        vfs.sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    Ok(bases.len())
}
