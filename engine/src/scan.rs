//! [`scan`]: read a log directory without opening it for writing.
//!
//! `Log::open` takes the log's lock and rewrites a torn tail; a scanner does neither, so tools
//! (`logship dump`) can read a log that another process is appending to, or a copy that must not
//! change. It reads one segment at a time with `pread` (never a map, so an EIO is an error, not a
//! SIGBUS), checks every record by the rules recovery applies (`segment_scan.rs`), ends quietly
//! at a torn tail (which recovery would cut), and returns [`Error::Corruption`] where the records
//! end in damage a crash cannot explain, after yielding every record before it. Records a
//! concurrent writer has written but not yet synced may be returned: a scanner cannot know the
//! durable end.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::files::{list, not_a_log, read_floor, read_meta};
use crate::io::{OpenMode, StdVfs, Vfs};
use crate::record::{self, Frame, Record};
use crate::recovery::scan_opened;
use crate::segment::SEGMENT_HEADER_BYTES;
use crate::segment_file::{open_segment, read_all};
use crate::segment_scan::Stop;
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
    floor: Lsn,
    done: bool,
}

/// One segment's bytes and where its records end.
struct Loaded {
    path: PathBuf,
    bytes: Bytes,
    pos: usize,
    /// Offset after the last record the rules accept.
    end: usize,
    stop: Stop,
    next_lsn: Lsn,
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
/// As [`scan`]; [`Error::Corruption`] for a damaged durable floor.
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
    let floor = if listing.has_floor {
        read_floor(&*vfs, dir)?
    } else {
        Lsn::ZERO
    };
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
        floor,
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
        let next_base = self.bases.get(self.next_segment).copied();
        let scan = scan_opened(&o, &bytes, next_base, self.floor);
        self.current = Some(Loaded {
            path: o.path,
            bytes,
            pos: SEGMENT_HEADER_BYTES,
            end: scan.end as usize,
            stop: scan.stop,
            next_lsn: scan.next_lsn,
        });
        Ok(true)
    }

    fn step(&mut self) -> Result<Option<Record>> {
        loop {
            if self.current.is_none() && !self.load()? {
                return Ok(None);
            }
            let cur = self.current.as_mut().expect("loaded above");
            if cur.pos >= cur.end {
                let Loaded {
                    path,
                    stop,
                    next_lsn,
                    ..
                } = self.current.take().expect("loaded above");
                match stop {
                    Stop::Clean => continue,
                    Stop::Torn { .. } => return Ok(None),
                    Stop::Corrupt { offset, reason } => {
                        return Err(Error::Corruption {
                            segment: path,
                            offset,
                            lsn: next_lsn,
                            reason,
                        })
                    }
                }
            }
            // The rules already accepted every frame before `end`.
            let frame = record::decode_frame(&cur.bytes[cur.pos..cur.end]);
            let Ok(frame) = frame else {
                unreachable!("a frame the segment scan accepted does not decode: {frame:?}");
            };
            let len = frame.encoded_len();
            let start = cur.pos;
            cur.pos += len;
            let Frame::Record(r) = frame else { continue };
            if r.header.lsn < self.from {
                continue;
            }
            let (lsn, epoch, crc) = (r.header.lsn, r.header.epoch, r.header.crc);
            let payload = cur
                .bytes
                .slice(start + record::RECORD_HEADER_BYTES..start + len);
            return Ok(Some(Record {
                lsn,
                epoch,
                crc,
                payload,
            }));
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
