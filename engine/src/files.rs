//! Small files written whole and atomically, and the directory's entries: the marker, the
//! durable floor, segment headers, the listing.
//!
//! Every file is made under a temporary name, written, fdatasync'ed, renamed, and the directory
//! fsync'ed after the rename, so a crash leaves either the old file or the new one.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::{OpenMode, Vfs, VfsFile};
use crate::segment::{
    classify, DurableFloor, EntryKind, HeaderError, LogMeta, SegmentHeader, FLOOR_BYTES,
    FLOOR_FILE, FORMAT_VERSION, META_BYTES, META_FILE,
};
use crate::types::{Epoch, Lsn};

/// Writes `bytes` as `dir/name` through `dir/tmp_name`: write, fdatasync, rename, fsync dir.
pub(crate) fn write_atomically(
    vfs: &dyn Vfs,
    dir: &Path,
    tmp_name: &str,
    name: &str,
    bytes: &[u8],
) -> Result<()> {
    let tmp = dir.join(tmp_name);
    if vfs.open(&tmp, OpenMode::Read).is_ok() {
        vfs.remove_file(&tmp)
            .map_err(|e| Error::io("remove stale temporary file", &tmp, e))?;
    }
    let file = vfs
        .open(&tmp, OpenMode::CreateNew)
        .map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all_at(bytes, 0)
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io("write", &tmp, e))?;
    drop(file);
    let path = dir.join(name);
    vfs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    vfs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// The directory's entries, classified.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) has_meta: bool,
    pub(crate) has_floor: bool,
    pub(crate) segments: Vec<Lsn>,
    pub(crate) free: Vec<u64>,
    pub(crate) temp: Vec<String>,
    pub(crate) quarantined: Vec<String>,
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
            EntryKind::Floor => l.has_floor = true,
            EntryKind::Segment(base) => l.segments.push(base),
            EntryKind::Free(id) => l.free.push(id),
            EntryKind::Temp => l.temp.push(name),
            EntryKind::Quarantine => l.quarantined.push(name),
            EntryKind::NodeState => {}
            EntryKind::Foreign => l.foreign.push(name),
        }
    }
    l.segments.sort();
    l.foreign.sort();
    l.quarantined.sort();
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

/// Reads a small file whole: at most `N` bytes.
fn read_small<const N: usize>(vfs: &dyn Vfs, path: &Path) -> Result<([u8; N], usize)> {
    let file = vfs
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io("open", path, e))?;
    let mut buf = [0u8; N];
    let n = file
        .read_at(&mut buf, 0)
        .map_err(|e| Error::io("read", path, e))?;
    Ok((buf, n))
}

pub(crate) fn read_meta(vfs: &dyn Vfs, dir: &Path) -> Result<LogMeta> {
    let path = dir.join(META_FILE);
    let (buf, n) = read_small::<META_BYTES>(vfs, &path)?;
    LogMeta::decode(&buf[..n]).map_err(|e| match e {
        HeaderError::Version(found) => Error::UnsupportedVersion {
            path: path.clone(),
            found,
            supported: FORMAT_VERSION,
        },
        HeaderError::Magic => Error::NotALog {
            path: dir.to_path_buf(),
            reason: format!(
                "{META_FILE} has the wrong magic (damaged, or this is not a log; a damaged \
                 {META_FILE} is rewritten by `logship repair DIR --from HOST:PORT`, or from a \
                 replica's copy: see docs/operations.md)"
            ),
        },
        HeaderError::Truncated(n) => Error::NotALog {
            path: dir.to_path_buf(),
            reason: format!("{META_FILE} is truncated ({n} of {META_BYTES} bytes)"),
        },
        HeaderError::Invalid(why) => Error::Corruption {
            segment: path.clone(),
            offset: 0,
            lsn: Lsn::ZERO,
            reason: format!(
                "{why}: the log's marker file is damaged (no record is lost; rewrite it with \
                 `logship repair DIR --from HOST:PORT` or copy a replica's: see \
                 docs/operations.md)"
            ),
        },
    })
}

/// Writes a new log's marker.
pub(crate) fn write_meta(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    let bytes = LogMeta {
        format_version: FORMAT_VERSION,
        created_unix_nanos: now_nanos(),
    }
    .encode();
    write_atomically(vfs, dir, "logship-create-meta.tmp", META_FILE, &bytes)
}

/// Rewrites a damaged or missing `logship.meta` in a directory that holds segment files whose
/// headers check out: the marker holds nothing but its magic, its version and a creation time,
/// so it can be made again (the damaged bytes are kept in a `quarantine-meta-<n>.seg` file).
/// Returns whether it was rewritten; `Ok(false)` when the marker is fine. The log must not be
/// open elsewhere.
///
/// # Errors
/// [`Error::NotALog`] when no segment file with a valid header is there (nothing says this is
/// a log), [`Error::Io`].
pub fn repair_meta(dir: &Path) -> Result<bool> {
    let vfs = crate::io::StdVfs::default();
    if !vfs.is_dir(dir) {
        return Err(Error::NotALog {
            path: dir.to_path_buf(),
            reason: "no such directory".into(),
        });
    }
    match read_meta(&vfs, dir) {
        Ok(_) => return Ok(false),
        Err(Error::Corruption { .. } | Error::NotALog { .. }) => {}
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listing = list(&vfs, dir)?;
    let mut versions = Vec::new();
    for base in &listing.segments {
        if let Ok(o) = crate::segment_file::open_segment(&vfs, dir, *base, OpenMode::Read) {
            versions.push(o.header.format_version);
        }
    }
    let Some(version) = versions.iter().max().copied() else {
        return Err(Error::NotALog {
            path: dir.to_path_buf(),
            reason: format!("{META_FILE} is damaged and no segment file has a valid header"),
        });
    };
    let path = dir.join(META_FILE);
    if let Ok(old) = std::fs::read(&path) {
        let name = format!("quarantine-meta-{}.seg", now_nanos());
        write_atomically(&vfs, dir, "logship-quarantine.tmp", &name, &old)?;
    }
    let bytes = LogMeta {
        format_version: version,
        created_unix_nanos: now_nanos(),
    }
    .encode();
    write_atomically(&vfs, dir, "logship-create-meta.tmp", META_FILE, &bytes)?;
    tracing::warn!(dir = %dir.display(), version, "rewrote a damaged logship.meta");
    Ok(true)
}

/// Reads the durable floor; `Lsn::ZERO` when there is none.
pub(crate) fn read_floor(vfs: &dyn Vfs, dir: &Path) -> Result<Lsn> {
    let path = dir.join(FLOOR_FILE);
    let (buf, n) = read_small::<FLOOR_BYTES>(vfs, &path)?;
    match DurableFloor::decode(&buf[..n]) {
        Ok(f) => Ok(f.durable_lsn),
        Err(HeaderError::Version(found)) => Err(Error::UnsupportedVersion {
            path,
            found,
            supported: FORMAT_VERSION,
        }),
        Err(e) => Err(Error::Corruption {
            segment: path,
            offset: 0,
            lsn: Lsn::ZERO,
            reason: format!(
                "the durable floor is damaged ({}); remove the file to open the log without the \
                 check it adds at the end of the log",
                header_error_text(&e)
            ),
        }),
    }
}

fn header_error_text(e: &HeaderError) -> String {
    match e {
        HeaderError::Truncated(n) => format!("{n} bytes"),
        HeaderError::Magic => "wrong magic".into(),
        HeaderError::Version(v) => format!("version {v}"),
        HeaderError::Invalid(why) => why.clone(),
    }
}

/// Writes the durable floor: every record up to `lsn` is durable.
pub(crate) fn write_floor(vfs: &dyn Vfs, dir: &Path, lsn: Lsn) -> Result<()> {
    let bytes = DurableFloor { durable_lsn: lsn }.encode();
    write_atomically(vfs, dir, "logship-floor.tmp", FLOOR_FILE, &bytes)
}

pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Writes a segment header (in the current format) at offset 0 and syncs it.
pub(crate) fn write_segment_header(
    file: &dyn VfsFile,
    base: Lsn,
    capacity: u64,
    window: u64,
) -> Result<()> {
    let header = SegmentHeader {
        format_version: FORMAT_VERSION,
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
