//! Opening a log directory: creation, validation, and crash recovery; and [`verify`].
//!
//! Where damage can come from decides what recovery does with it:
//! - A crash leaves damage only at the end of the last segment, and only within the bytes the
//!   writer had written but not yet synced (at most `max_unsynced_bytes`, stored in the segment
//!   header): sealed segments were synced in full before their successor was named. Such a torn
//!   tail is cut (the region is zeroed and synced) and reported.
//! - A checksum failure followed by valid records beyond that window, or any failure inside a
//!   sealed segment, is corruption: open refuses with [`Error::Corruption`] naming file, offset and
//!   LSN, unless [`RecoveryMode::TruncateAtCorruption`] was chosen.
//!
//! Records whose LSN is below their segment's base are leftovers of a reused file; they are
//! neither data nor damage.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::{OpenMode, StdVfs, Vfs, VfsFile};
use crate::options::{Options, RecoveryMode};
use crate::pool::{create_file, write_zeros};
use crate::record::{self, RECORD_HEADER_BYTES};
use crate::segment::{
    classify, segment_name, EntryKind, HeaderError, LogMeta, SegmentHeader, FORMAT_VERSION,
    META_BYTES, META_FILE, SEGMENT_HEADER_BYTES,
};
use crate::segment_set::Segment;
use crate::types::{Epoch, Lsn};

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
    /// A torn write at the end of the log that was cut.
    pub torn_tail: Option<TornTail>,
    /// Corruption the log was cut at ([`RecoveryMode::TruncateAtCorruption`] only).
    pub corruption_cut: Option<Corruption>,
    /// Segment files removed because they followed a corruption cut.
    pub segments_removed: usize,
    /// Unfinished temporary files removed.
    pub temp_files_removed: usize,
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
    /// Checksummed records found after the tear and inside the unsynced window: written by the
    /// crashed process but never acknowledged as durable, since an earlier record of theirs was
    /// not durable.
    pub discarded_records: u64,
    /// What was wrong at `offset`.
    pub reason: String,
}

/// Damage a crash cannot explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// The file.
    pub segment: PathBuf,
    /// Byte offset of the bad record or header.
    pub offset: u64,
    /// The LSN expected there.
    pub lsn: Lsn,
    /// What was wrong.
    pub reason: String,
}

impl From<Corruption> for Error {
    fn from(c: Corruption) -> Error {
        Error::Corruption {
            segment: c.segment,
            offset: c.offset,
            lsn: c.lsn,
            reason: c.reason,
        }
    }
}

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
}

impl VerifyReport {
    /// No corruption (a torn tail is not corruption).
    pub fn is_clean(&self) -> bool {
        self.corruptions.is_empty()
    }
}

/// How a segment's record scan ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Clean: a sealed segment reached its successor's base, or the last one reached zeros,
    /// leftovers of a reused file, or its end.
    Clean,
    /// A crash's torn write at `offset`.
    Torn {
        offset: u64,
        reason: String,
        discarded: u64,
    },
    /// Damage a crash cannot explain.
    Corrupt { offset: u64, reason: String },
}

/// Result of scanning one segment's records.
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    /// Offset after the last valid record.
    pub(crate) end: u64,
    /// LSN the next record would have.
    pub(crate) next_lsn: Lsn,
    pub(crate) index: Vec<(Lsn, u64)>,
    pub(crate) stop: Stop,
}

/// Scans the records of a segment whose bytes (header included) are `bytes`. A sealed segment
/// (`next_base` known) must hold exactly `base..next_base`.
pub(crate) fn scan_records(bytes: &[u8], base: Lsn, next_base: Option<Lsn>, window: u64) -> Scan {
    let mut scan = Scan {
        records: 0,
        bytes: 0,
        end: SEGMENT_HEADER_BYTES as u64,
        next_lsn: base,
        index: Vec::new(),
        stop: Stop::Clean,
    };
    let mut last_indexed = 0u64;
    loop {
        if next_base == Some(scan.next_lsn) {
            return scan;
        }
        let pos = scan.end as usize;
        let rest = bytes.get(pos..).unwrap_or(&[]);
        let failure = match record::decode(rest) {
            Ok(r) if r.header.lsn == scan.next_lsn => {
                if scan.index.is_empty() || scan.end - last_indexed >= 256 << 10 {
                    scan.index.push((scan.next_lsn, scan.end));
                    last_indexed = scan.end;
                }
                scan.records += 1;
                scan.bytes += r.encoded_len() as u64;
                scan.end += r.encoded_len() as u64;
                scan.next_lsn = scan.next_lsn.next();
                continue;
            }
            Ok(r) if r.header.lsn < base && next_base.is_none() => return scan,
            Ok(r) => format!("LSN {} where {} was expected", r.header.lsn, scan.next_lsn),
            Err(e) => e.to_string(),
        };
        scan.stop = match next_base {
            Some(nb) => Stop::Corrupt {
                offset: scan.end,
                reason: format!(
                    "sealed segment must hold LSNs up to {} (the next segment starts at {nb}): {failure}",
                    nb.prev()
                ),
            },
            None => classify_tail(bytes, pos, scan.next_lsn, window, failure),
        };
        return scan;
    }
}

/// Valid records with LSN >= `expected` found at or after `from`.
struct Future {
    count: u64,
    first_offset: usize,
    last_end: usize,
    max_lsn: Lsn,
}

fn find_future_records(bytes: &[u8], from: usize, expected: Lsn) -> Option<Future> {
    let plausible_max = expected
        .get()
        .saturating_add((bytes.len() / RECORD_HEADER_BYTES) as u64);
    let mut found: Option<Future> = None;
    let mut off = from;
    while off + RECORD_HEADER_BYTES <= bytes.len() {
        let window = &bytes[off..off + RECORD_HEADER_BYTES];
        if window.iter().all(|&b| b == 0) {
            // Skip a zero run: a header needs a non-zero LSN within its first 16 bytes.
            let q = bytes[off..]
                .iter()
                .position(|&b| b != 0)
                .map_or(bytes.len(), |p| off + p);
            off = (off + 1).max(q.saturating_sub(RECORD_HEADER_BYTES - 1));
            continue;
        }
        let lsn = u64::from_le_bytes(window[8..16].try_into().expect("8 bytes"));
        if lsn >= expected.get() && lsn <= plausible_max {
            if let Ok(r) = record::decode(&bytes[off..]) {
                let end = off + r.encoded_len();
                let f = found.get_or_insert(Future {
                    count: 0,
                    first_offset: off,
                    last_end: end,
                    max_lsn: r.header.lsn,
                });
                f.count += 1;
                f.last_end = end;
                f.max_lsn = f.max_lsn.max(r.header.lsn);
                off = end;
                continue;
            }
        }
        off += 1;
    }
    found
}

pub(crate) fn classify_tail(
    bytes: &[u8],
    pos: usize,
    expected: Lsn,
    window: u64,
    failure: String,
) -> Stop {
    let future = find_future_records(bytes, pos + 1, expected);
    match future {
        Some(f) if (f.last_end - pos) as u64 > window => Stop::Corrupt {
            offset: pos as u64,
            reason: format!(
                "{failure}; valid records up to LSN {} follow from offset {}, beyond what a crash can leave unsynced ({window} bytes)",
                f.max_lsn, f.first_offset
            ),
        },
        Some(f) => Stop::Torn {
            offset: pos as u64,
            reason: failure,
            discarded: f.count,
        },
        None => {
            let head = &bytes[pos..bytes.len().min(pos + RECORD_HEADER_BYTES)];
            if head.iter().all(|&b| b == 0) {
                Stop::Clean
            } else {
                Stop::Torn {
                    offset: pos as u64,
                    reason: failure,
                    discarded: 0,
                }
            }
        }
    }
}

/// The directory's entries, classified.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) has_meta: bool,
    pub(crate) segments: Vec<Lsn>,
    pub(crate) free: Vec<u64>,
    pub(crate) temp: Vec<String>,
    pub(crate) foreign: Vec<String>,
}

pub(crate) fn list(vfs: &dyn Vfs, dir: &Path) -> Result<Listing> {
    let names = vfs
        .list_dir(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    let mut l = Listing::default();
    for name in names {
        match classify(&name) {
            EntryKind::Meta => l.has_meta = true,
            EntryKind::Segment(base) => l.segments.push(base),
            EntryKind::Free(id) => l.free.push(id),
            EntryKind::Temp => l.temp.push(name),
            EntryKind::Foreign => l.foreign.push(name),
        }
    }
    l.segments.sort();
    l.foreign.sort();
    Ok(l)
}

pub(crate) fn not_a_log(dir: &Path, l: &Listing) -> Error {
    let reason = if l.foreign.is_empty() {
        format!("no {META_FILE} marker")
    } else {
        let shown: Vec<&str> = l.foreign.iter().take(3).map(String::as_str).collect();
        format!(
            "no {META_FILE} marker; it holds other files ({}{})",
            shown.join(", "),
            if l.foreign.len() > 3 { ", ..." } else { "" }
        )
    };
    Error::NotALog {
        path: dir.to_path_buf(),
        reason,
    }
}

pub(crate) fn read_meta(vfs: &dyn Vfs, dir: &Path) -> Result<LogMeta> {
    let path = dir.join(META_FILE);
    let file = vfs
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io("open", &path, e))?;
    let mut buf = [0u8; META_BYTES];
    let n = file
        .read_at(&mut buf, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    LogMeta::decode(&buf[..n]).map_err(|e| match e {
        HeaderError::Version(found) => Error::UnsupportedVersion {
            path: path.clone(),
            found,
            supported: FORMAT_VERSION,
        },
        HeaderError::Magic => Error::NotALog {
            path: dir.to_path_buf(),
            reason: format!("{META_FILE} has the wrong magic"),
        },
        HeaderError::Truncated(n) => Error::NotALog {
            path: dir.to_path_buf(),
            reason: format!("{META_FILE} is truncated ({n} of {META_BYTES} bytes)"),
        },
        HeaderError::Invalid(why) => Error::Corruption {
            segment: path.clone(),
            offset: 0,
            lsn: Lsn::ZERO,
            reason: why,
        },
    })
}

pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Writes a segment header at offset 0 and syncs it.
pub(crate) fn write_segment_header(
    file: &dyn VfsFile,
    base: Lsn,
    capacity: u64,
    window: u64,
) -> Result<()> {
    let header = SegmentHeader {
        base_lsn: base,
        created_unix_nanos: now_nanos(),
        segment_size_bytes: capacity,
        max_unsynced_bytes: window,
        epoch: Epoch(0),
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(|e| Error::io("write segment header", file.path(), e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", file.path(), e))
}

/// Creates a new log: the marker, then the first segment, each through a temporary name. A
/// crash in between leaves a marker without segments, which the next open with
/// `create_if_missing` completes.
fn create(vfs: &dyn Vfs, dir: &Path, options: &Options, window: u64) -> Result<()> {
    let meta_tmp = dir.join("logship-create-meta.tmp");
    let meta = vfs
        .open(&meta_tmp, OpenMode::CreateNew)
        .map_err(|e| Error::io("create", &meta_tmp, e))?;
    let bytes = LogMeta {
        created_unix_nanos: now_nanos(),
    }
    .encode();
    meta.write_all_at(&bytes, 0)
        .and_then(|()| meta.sync_data())
        .map_err(|e| Error::io("write", &meta_tmp, e))?;
    let meta_path = dir.join(META_FILE);
    vfs.rename(&meta_tmp, &meta_path)
        .map_err(|e| Error::io("rename", &meta_tmp, e))?;
    vfs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))?;
    create_first_segment(vfs, dir, options, window)?;
    tracing::info!(dir = %dir.display(), "created log");
    Ok(())
}

fn create_first_segment(vfs: &dyn Vfs, dir: &Path, options: &Options, window: u64) -> Result<()> {
    let size = options.segment_size_bytes;
    let tmp = dir.join("logship-create-segment.tmp");
    let file = create_file(vfs, &tmp, size, options.prezero_segments)
        .map_err(|e| Error::io("create segment", &tmp, e))?;
    write_segment_header(&*file, Lsn::FIRST, size, window)?;
    let seg = dir.join(segment_name(Lsn::FIRST));
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
    pub(crate) report: RecoveryReport,
}

/// Opens, creates or recovers the log in `dir`.
pub(crate) fn recover(vfs: &dyn Vfs, dir: &Path, options: &Options) -> Result<Recovered> {
    let window = 2 * options.write_buffer_bytes() as u64;
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
    let mut listing = list(vfs, dir)?;
    let mut created = false;
    if !listing.has_meta {
        let empty =
            listing.segments.is_empty() && listing.free.is_empty() && listing.foreign.is_empty();
        if !(options.create_if_missing && empty) {
            return Err(not_a_log(dir, &listing));
        }
        remove_temp(vfs, dir, &listing.temp)?;
        create(vfs, dir, options, window)?;
        created = true;
        listing = list(vfs, dir)?;
    }
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
        create_first_segment(vfs, dir, options, window)?;
        listing.segments.push(Lsn::FIRST);
        created = true;
    }
    let mut rec = recover_segments(vfs, dir, &listing.segments, options)?;
    rec.lock = lock;
    rec.free = listing.free;
    rec.report.created = created;
    rec.report.temp_files_removed = temp_files_removed;
    Ok(rec)
}

fn remove_temp(vfs: &dyn Vfs, dir: &Path, temp: &[String]) -> Result<usize> {
    for name in temp {
        let p = dir.join(name);
        vfs.remove_file(&p)
            .map_err(|e| Error::io("remove temporary file", &p, e))?;
    }
    Ok(temp.len())
}

/// An opened segment file with its checked header.
pub(crate) struct Opened {
    pub(crate) base: Lsn,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn VfsFile>,
    pub(crate) header: SegmentHeader,
}

pub(crate) fn open_segment(vfs: &dyn Vfs, dir: &Path, base: Lsn, mode: OpenMode) -> Result<Opened> {
    let path = dir.join(segment_name(base));
    let file = vfs
        .open(&path, mode)
        .map_err(|e| Error::io("open", &path, e))?;
    let mut buf = [0u8; SEGMENT_HEADER_BYTES];
    let n = file
        .read_at(&mut buf, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    let corrupt = |reason: String| Error::Corruption {
        segment: path.clone(),
        offset: 0,
        lsn: base,
        reason,
    };
    let header = match SegmentHeader::decode(&buf[..n]) {
        Ok(h) => h,
        Err(HeaderError::Version(found)) => {
            return Err(Error::UnsupportedVersion {
                path,
                found,
                supported: FORMAT_VERSION,
            })
        }
        Err(HeaderError::Magic) => {
            return Err(corrupt("segment header has the wrong magic".into()))
        }
        Err(HeaderError::Truncated(n)) => {
            return Err(corrupt(format!("segment header truncated to {n} bytes")))
        }
        Err(HeaderError::Invalid(why)) => return Err(corrupt(why)),
    };
    if header.base_lsn != base {
        return Err(corrupt(format!(
            "header says base LSN {} but the file name says {base}",
            header.base_lsn
        )));
    }
    Ok(Opened {
        base,
        path,
        file,
        header,
    })
}

/// Reads a whole file with `read_at` (not a map, so that an EIO is an error, not a SIGBUS).
pub(crate) fn read_all(file: &dyn VfsFile) -> Result<Vec<u8>> {
    let len = file.len().map_err(|e| Error::io("stat", file.path(), e))?;
    let len = usize::try_from(len).map_err(|_| Error::Corruption {
        segment: file.path().to_path_buf(),
        offset: 0,
        lsn: Lsn::ZERO,
        reason: format!("segment of {len} bytes is larger than this machine can address"),
    })?;
    let mut buf = vec![0u8; len];
    let n = file
        .read_at(&mut buf, 0)
        .map_err(|e| Error::io("read", file.path(), e))?;
    buf.truncate(n);
    Ok(buf)
}

fn recover_segments(
    vfs: &dyn Vfs,
    dir: &Path,
    bases: &[Lsn],
    options: &Options,
) -> Result<Recovered> {
    let mut segments = Vec::with_capacity(bases.len());
    let mut report = RecoveryReport {
        first_lsn: bases[0],
        ..RecoveryReport::default()
    };
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        let o = open_segment(vfs, dir, base, OpenMode::ReadWrite)?;
        if let Some(nb) = next_base {
            if nb <= base {
                return Err(Error::Corruption {
                    segment: o.path,
                    offset: 0,
                    lsn: base,
                    reason: format!("next segment starts at {nb}, not after {base}"),
                });
            }
        }
        if let (Some(nb), false) = (next_base, options.full_scan_on_open) {
            segments.push(sealed_unscanned(o, nb));
            continue;
        }
        let bytes = read_all(&*o.file)?;
        let scan = scan_records(&bytes, base, next_base, o.header.max_unsynced_bytes);
        let cut_here = match &scan.stop {
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
                if options.recovery == RecoveryMode::Strict {
                    return Err(c.into());
                }
                tracing::warn!(segment = %c.segment.display(), offset = c.offset, lsn = %c.lsn, reason = %c.reason, "cutting the log at corruption, as asked");
                report.segments_removed = remove_after(vfs, dir, &bases[i + 1..])?;
                zero_range(&*o.file, *offset, bytes.len() as u64, &bytes)?;
                report.corruption_cut = Some(c);
                true
            }
        };
        let sealed = next_base.is_some() && !cut_here;
        let seg = Segment::new(
            base,
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
        if sealed {
            seg.seal();
        }
        segments.push(seg);
        if cut_here {
            break;
        }
    }
    let last = segments.last().expect("at least one segment");
    report.segments = segments.len();
    report.last_lsn = last.last_lsn();
    Ok(Recovered {
        lock: crate::io::LockGuard(None),
        next_lsn: last.last_lsn().next(),
        segments,
        free: Vec::new(),
        report,
    })
}

/// A sealed segment taken on trust at open (its header checked; its records are checked by
/// their CRCs when read, and by `verify`).
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
    read_meta(vfs, dir)?;
    let mut report = VerifyReport {
        segments: listing.segments.len(),
        free_segments: listing.free.len(),
        first_lsn: listing.segments.first().copied().unwrap_or(Lsn::FIRST),
        ..VerifyReport::default()
    };
    report.last_lsn = report.first_lsn.prev();
    for (i, &base) in listing.segments.iter().enumerate() {
        verify_segment(
            vfs,
            dir,
            base,
            listing.segments.get(i + 1).copied(),
            &mut report,
        )?;
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
        Err(Error::Corruption {
            segment,
            offset,
            lsn,
            reason,
        }) => {
            report.corruptions.push(Corruption {
                segment,
                offset,
                lsn,
                reason,
            });
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let bytes = read_all(&*o.file)?;
    let scan = scan_records(&bytes, base, next_base, o.header.max_unsynced_bytes);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::encode_into;

    fn segment_with(records: std::ops::RangeInclusive<u64>, size: usize) -> Vec<u8> {
        let mut b = SegmentHeader {
            base_lsn: Lsn(*records.start()),
            created_unix_nanos: 0,
            segment_size_bytes: size as u64,
            max_unsynced_bytes: 4096,
            epoch: Epoch(0),
        }
        .encode()
        .to_vec();
        for lsn in records {
            encode_into(
                &mut b,
                Lsn(lsn),
                Epoch(0),
                format!("record {lsn}").as_bytes(),
            );
        }
        b.resize(size, 0);
        b
    }

    #[test]
    fn clean_tail_of_zeros() {
        let b = segment_with(1..=10, 64 << 10);
        let s = scan_records(&b, Lsn(1), None, 4096);
        assert_eq!(s.stop, Stop::Clean);
        assert_eq!(s.next_lsn, Lsn(11));
    }

    #[test]
    fn partial_last_record_is_torn() {
        let mut b = segment_with(1..=10, 64 << 10);
        let end = scan_records(&b, Lsn(1), None, 4096).end as usize;
        encode_into(&mut Vec::new(), Lsn(11), Epoch(0), b"x");
        b[end..end + 20].copy_from_slice(&[7u8; 20]);
        let s = scan_records(&b, Lsn(1), None, 4096);
        assert!(matches!(s.stop, Stop::Torn { .. }), "{:?}", s.stop);
    }

    #[test]
    fn flipped_bit_far_from_the_end_is_corruption() {
        let mut b = segment_with(1..=2000, 256 << 10);
        b[SEGMENT_HEADER_BYTES + 40] ^= 1;
        let s = scan_records(&b, Lsn(1), None, 4096);
        assert!(matches!(s.stop, Stop::Corrupt { .. }), "{:?}", s.stop);
        // Record 1 ("record 1") is 40 bytes, so byte 40 after the header is record 2's.
        assert_eq!(s.next_lsn, Lsn(2));
    }

    #[test]
    fn flipped_bit_in_the_unsynced_window_is_a_tear() {
        let mut b = segment_with(1..=2000, 256 << 10);
        let s = scan_records(&b, Lsn(1), None, 4096);
        let last_start = s.end as usize - 45;
        b[last_start + 36] ^= 1;
        let s = scan_records(&b, Lsn(1), None, 4096);
        assert!(matches!(s.stop, Stop::Torn { .. }), "{:?}", s.stop);
    }

    #[test]
    fn stale_records_of_a_reused_file_end_the_segment_cleanly() {
        let old = segment_with(1..=100, 64 << 10);
        let mut b = old.clone();
        let new = segment_with(500..=510, 64 << 10);
        let new_end = scan_records(&new, Lsn(500), None, 4096).end as usize;
        b[..new_end].copy_from_slice(&new[..new_end]);
        let s = scan_records(&b, Lsn(500), None, 4096);
        assert_eq!(s.next_lsn, Lsn(511));
        assert!(matches!(s.stop, Stop::Clean | Stop::Torn { .. }));
        assert!(!matches!(s.stop, Stop::Corrupt { .. }));
    }

    #[test]
    fn sealed_segment_short_of_its_successor_is_corrupt() {
        let b = segment_with(1..=10, 64 << 10);
        let s = scan_records(&b, Lsn(1), Some(Lsn(12)), 4096);
        assert!(matches!(s.stop, Stop::Corrupt { .. }));
    }
}
