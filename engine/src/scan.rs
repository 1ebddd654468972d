//! [`scan`]: read a log directory without opening it for writing.
//!
//! `Log::open` takes the log's lock and rewrites a torn tail; a scanner does neither, so tools
//! (`logship dump`) can read a log that another process is appending to, or a copy that must not
//! change. It reads one segment at a time with `pread` (never a map, so an EIO is an error, not a
//! SIGBUS), checks every record's CRC and LSN, ends quietly at a torn tail (which recovery would
//! cut), and returns [`Error::Corruption`] for damage a crash cannot explain. Records a concurrent
//! writer has written but not yet synced may be returned: a scanner cannot know the durable end.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::io::{OpenMode, StdVfs, Vfs};
use crate::record::{self, Record};
use crate::recovery::{classify_tail, list, not_a_log, open_segment, read_all, read_meta, Stop};
use crate::segment::SEGMENT_HEADER_BYTES;
use crate::types::Lsn;

/// An iterator over the records of a log directory, read-only. After an error it returns `None`.
pub struct Scanner {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    bases: Vec<Lsn>,
    /// Index in `bases` of the segment loaded next.
    next_segment: usize,
    current: Option<Loaded>,
    from: Lsn,
    done: bool,
}

struct Loaded {
    path: PathBuf,
    base: Lsn,
    bytes: Bytes,
    pos: usize,
    next_lsn: Lsn,
    next_base: Option<Lsn>,
    window: u64,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("dir", &self.dir)
            .field("from", &self.from)
            .finish()
    }
}

/// Scans the log in `dir` from LSN `from` (`Lsn::ZERO`: from the start), read-only.
///
/// # Errors
/// [`Error::NotALog`], [`Error::UnsupportedVersion`], [`Error::Io`], and [`Error::Purged`] if
/// `from` is below the first LSN held.
pub fn scan(dir: &Path, from: Lsn) -> Result<Scanner> {
    scan_with(Arc::new(StdVfs::default()), dir, from)
}

/// [`scan`] on a given file system.
///
/// # Errors
/// As [`scan`].
pub fn scan_with(vfs: Arc<dyn Vfs>, dir: &Path, from: Lsn) -> Result<Scanner> {
    if !vfs.is_dir(dir) {
        return Err(Error::NotALog {
            path: dir.to_path_buf(),
            reason: "no such directory".into(),
        });
    }
    let listing = list(&*vfs, dir)?;
    if !listing.has_meta {
        return Err(not_a_log(dir, &listing));
    }
    read_meta(&*vfs, dir)?;
    let bases = listing.segments;
    let first = bases.first().copied().unwrap_or(Lsn::FIRST);
    if from != Lsn::ZERO && from < first {
        return Err(Error::Purged { lsn: from, first });
    }
    // Start at the segment holding `from`.
    let next_segment = bases.partition_point(|b| *b <= from).saturating_sub(1);
    Ok(Scanner {
        vfs,
        dir: dir.to_path_buf(),
        bases,
        next_segment,
        current: None,
        from,
        done: false,
    })
}

impl Scanner {
    fn load(&mut self) -> Result<bool> {
        let Some(&base) = self.bases.get(self.next_segment) else {
            return Ok(false);
        };
        let o = open_segment(&*self.vfs, &self.dir, base, OpenMode::Read)?;
        let bytes = Bytes::from(read_all(&*o.file)?);
        self.next_segment += 1;
        self.current = Some(Loaded {
            path: o.path,
            base,
            bytes,
            pos: SEGMENT_HEADER_BYTES,
            next_lsn: base,
            next_base: self.bases.get(self.next_segment).copied(),
            window: o.header.max_unsynced_bytes,
        });
        Ok(true)
    }

    fn step(&mut self) -> Result<Option<Record>> {
        loop {
            if self.current.is_none() && !self.load()? {
                return Ok(None);
            }
            let cur = self.current.as_mut().expect("loaded above");
            if cur.next_base == Some(cur.next_lsn) {
                self.current = None;
                continue;
            }
            let rest = cur.bytes.get(cur.pos..).unwrap_or(&[]);
            let failure = match record::decode(rest) {
                Ok(r) if r.header.lsn == cur.next_lsn => {
                    let len = r.encoded_len();
                    let (lsn, epoch, crc) = (r.header.lsn, r.header.epoch, r.header.crc);
                    let start = cur.pos + record::RECORD_HEADER_BYTES;
                    let payload = cur.bytes.slice(start..cur.pos + len);
                    cur.pos += len;
                    cur.next_lsn = lsn.next();
                    if lsn < self.from {
                        continue;
                    }
                    return Ok(Some(Record {
                        lsn,
                        epoch,
                        crc,
                        payload,
                    }));
                }
                // Leftovers of a reused file, as in recovery.
                Ok(r) if r.header.lsn < cur.base && cur.next_base.is_none() => return Ok(None),
                Ok(r) => format!("LSN {} where {} was expected", r.header.lsn, cur.next_lsn),
                Err(e) => e.to_string(),
            };
            let stop = match cur.next_base {
                Some(_) => Stop::Corrupt {
                    offset: cur.pos as u64,
                    reason: format!("sealed segment ends early: {failure}"),
                },
                None => classify_tail(&cur.bytes, cur.pos, cur.next_lsn, cur.window, failure),
            };
            return match stop {
                Stop::Clean | Stop::Torn { .. } => Ok(None),
                Stop::Corrupt { offset, reason } => Err(Error::Corruption {
                    segment: cur.path.clone(),
                    offset,
                    lsn: cur.next_lsn,
                    reason,
                }),
            };
        }
    }
}

impl Iterator for Scanner {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
