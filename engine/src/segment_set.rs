//! The in-memory view of the segments: where each one's records are, a sparse LSN → offset index,
//! and damage known in each. Retention (`purge_before`) is in `retention.rs`.
//!
//! Invariant: segments are in LSN order and contiguous (`next.base == prev.last_lsn + 1`), every
//! segment but the last is sealed and was fully fdatasync'ed before its successor was named.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::corruption::Corruption;
use crate::error::Result;
use crate::io::VfsFile;
use crate::segment::{FORMAT_VERSION, SEGMENT_HEADER_BYTES};
use crate::types::Lsn;

/// Distance between sparse index entries.
const INDEX_INTERVAL_BYTES: u64 = 256 << 10;

/// One segment file of the log.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: Lsn,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn VfsFile>,
    /// Bytes the segment may use (its file size when created).
    pub(crate) capacity: u64,
    /// The segment header's bound on unsynced bytes; the writer never exceeds it here.
    pub(crate) window: u64,
    last_lsn: AtomicU64,
    end_offset: AtomicU64,
    sealed: AtomicBool,
    /// The header's format version.
    format_version: AtomicU32,
    index: Mutex<Vec<(Lsn, u64)>>,
    mapped: OnceLock<Option<Mapped>>,
    /// A reader read it around the page cache ([`Segment::note_uncached_reader`]).
    read_uncached: AtomicBool,
    /// Damage found in this segment (at open under `Salvage`, or by the scrubber): reads from
    /// its LSN on fail with it until the segment is repaired (replaced).
    damage: Mutex<Option<Corruption>>,
}

/// A page, the granule in which a map gives its memory back.
pub(crate) const PAGE_BYTES: usize = 4096;

/// Lets a memory map back `Bytes` without copying.
struct MapOwner(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A sealed segment's map: its bytes for readers, and the map itself for the chunks that give
/// their pages back ([`Mapped::chunk`]).
#[derive(Clone)]
pub(crate) struct Mapped {
    bytes: Bytes,
    map: Arc<memmap2::Mmap>,
}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapped")
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl std::ops::Deref for Mapped {
    type Target = Bytes;

    fn deref(&self) -> &Bytes {
        &self.bytes
    }
}

impl Mapped {
    /// Takes the pages `[from, to)` (page boundaries) out of this process's page tables, as a
    /// dropped chunk does: for a reader of records, which hands out slices too small to give
    /// pages back themselves.
    pub(crate) fn release(&self, from: usize, to: usize) {
        dont_need(&self.map, (from, to));
    }

    /// The bytes `[start, end)` as a chunk that, once every copy of it is dropped, takes the
    /// whole pages inside its range out of this process's page tables (they stay in the page
    /// cache). A catch-up reads the whole log through chunks and sends each once; without this
    /// the log it read stayed counted in the process's resident memory, all of it. A later read
    /// of the range faults the same file pages back in.
    pub(crate) fn chunk(&self, start: usize, end: usize) -> Bytes {
        let inner = (start.next_multiple_of(PAGE_BYTES), end - end % PAGE_BYTES);
        if inner.0 >= inner.1 {
            return self.bytes.slice(start..end);
        }
        Bytes::from_owner(ReleasedOnDrop {
            map: Arc::clone(&self.map),
            range: (start, end),
            pages: inner,
        })
    }
}

/// See [`Mapped::chunk`].
struct ReleasedOnDrop {
    map: Arc<memmap2::Mmap>,
    range: (usize, usize),
    /// The whole pages inside `range`.
    pages: (usize, usize),
}

impl AsRef<[u8]> for ReleasedOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.range.0..self.range.1]
    }
}

impl Drop for ReleasedOnDrop {
    fn drop(&mut self) {
        dont_need(&self.map, self.pages);
    }
}

/// Takes the whole pages `[from, to)` (page-aligned) of `map` out of this process's page tables.
fn dont_need(map: &memmap2::Mmap, (from, to): (usize, usize)) {
    let to = to.min(map.len());
    if from >= to {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: `MADV_DONTNEED` on a shared, read-only map of a file drops the page-table entries
    // of the range and nothing else: any later access (another chunk or record sliced from the
    // same map) faults the file's pages back in with the same bytes. A sealed segment's file is
    // never rewritten in place while mapped (`Segment::may_be_read`).
    let advised =
        unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from) };
    if let Err(e) = advised {
        tracing::debug!(error = %e, "madvise of a read range failed");
    }
}

impl Segment {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        base: Lsn,
        path: PathBuf,
        file: Arc<dyn VfsFile>,
        capacity: u64,
        window: u64,
        last_lsn: Lsn,
        end_offset: u64,
        index: Vec<(Lsn, u64)>,
    ) -> Segment {
        assert!(
            last_lsn.get() + 1 >= base.get(),
            "segment {base} ends before it starts"
        );
        Segment {
            base,
            path,
            file,
            capacity,
            window,
            last_lsn: AtomicU64::new(last_lsn.get()),
            end_offset: AtomicU64::new(end_offset),
            sealed: AtomicBool::new(false),
            format_version: AtomicU32::new(FORMAT_VERSION),
            index: Mutex::new(index),
            mapped: OnceLock::new(),
            read_uncached: AtomicBool::new(false),
            damage: Mutex::new(None),
        }
    }

    pub(crate) fn format_version(&self) -> u32 {
        self.format_version.load(Ordering::Acquire)
    }

    pub(crate) fn set_format_version(&self, v: u32) {
        self.format_version.store(v, Ordering::Release);
    }

    /// Marks the segment damaged from `c.lsn` on (the earliest damage wins).
    pub(crate) fn mark_damaged(&self, c: Corruption) {
        let mut d = self.damage.lock();
        match &*d {
            Some(old) if old.lsn <= c.lsn => {}
            _ => *d = Some(c),
        }
    }

    /// The damage known in this segment, if any.
    pub(crate) fn damage(&self) -> Option<Corruption> {
        self.damage.lock().clone()
    }

    /// Fails with the known damage when `lsn` lies at or after it.
    pub(crate) fn check_readable(&self, lsn: Lsn) -> Result<()> {
        match &*self.damage.lock() {
            Some(c) if lsn >= c.lsn => Err(c.clone().into()),
            _ => Ok(()),
        }
    }

    /// Last LSN written into this segment (`base - 1` when empty).
    pub(crate) fn last_lsn(&self) -> Lsn {
        Lsn(self.last_lsn.load(Ordering::Acquire))
    }

    /// Byte offset after the last written record.
    pub(crate) fn end_offset(&self) -> u64 {
        self.end_offset.load(Ordering::Acquire)
    }

    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    pub(crate) fn seal(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    /// A marker was written at the end of the segment, up to `end_offset`.
    pub(crate) fn note_marker(&self, end_offset: u64) {
        assert!(
            end_offset > self.end_offset(),
            "marker does not extend segment {}",
            self.base
        );
        self.end_offset.store(end_offset, Ordering::Release);
    }

    /// Records that `first..=last` were written at `first_offset..end_offset`.
    pub(crate) fn note_written(&self, first: Lsn, first_offset: u64, last: Lsn, end_offset: u64) {
        assert_eq!(
            first,
            self.last_lsn().next(),
            "gap in segment {}",
            self.base
        );
        assert_eq!(
            first_offset,
            self.end_offset(),
            "hole in segment {}",
            self.base
        );
        {
            let mut index = self.index.lock();
            let last_indexed = index.last().map_or(0, |e| e.1);
            if index.is_empty() || first_offset - last_indexed >= INDEX_INTERVAL_BYTES {
                index.push((first, first_offset));
            }
        }
        self.end_offset.store(end_offset, Ordering::Release);
        self.last_lsn.store(last.get(), Ordering::Release);
    }

    /// After truncation inside this segment: the records end at `lsn`, at `offset`.
    pub(crate) fn cut(&self, lsn: Lsn, offset: u64) {
        self.index.lock().retain(|e| e.0 <= lsn && e.1 < offset);
        self.end_offset.store(offset, Ordering::Release);
        self.last_lsn.store(lsn.get(), Ordering::Release);
        self.sealed.store(false, Ordering::Release);
    }

    /// The nearest known record start at or before `lsn`.
    pub(crate) fn locate(&self, lsn: Lsn) -> (Lsn, u64) {
        let index = self.index.lock();
        let i = index.partition_point(|e| e.0 <= lsn);
        if i == 0 {
            (self.base, SEGMENT_HEADER_BYTES as u64)
        } else {
            index[i - 1]
        }
    }

    /// True once a reader mapped the file: its payloads may still be alive as zero-copy slices,
    /// so the file must never be reused (overwritten), only unlinked.
    pub(crate) fn was_mapped(&self) -> bool {
        matches!(self.mapped.get(), Some(Some(_)))
    }

    /// A reader is about to read this sealed segment around the page cache, in windows.
    pub(crate) fn note_uncached_reader(&self) {
        self.read_uncached.store(true, Ordering::Release);
    }

    /// True when a reader may still be reading the file: it was mapped, or read in windows by
    /// a reader that may come back for the next window. Such a file is never reused
    /// (overwritten) after a purge, only unlinked, so that a reader still inside it reads the
    /// bytes it was written with (the open descriptors keep the unlinked inode), never another
    /// segment's, which it would take for damage.
    pub(crate) fn may_be_read(&self) -> bool {
        self.was_mapped() || self.read_uncached.load(Ordering::Acquire)
    }

    /// The whole file mapped, for sealed segments on file systems that can map.
    pub(crate) fn mapped(&self) -> Option<Mapped> {
        if !self.is_sealed() {
            return None;
        }
        self.mapped
            .get_or_init(|| match self.file.map()? {
                Ok(map) => {
                    let map = Arc::new(map);
                    let bytes = Bytes::from_owner(MapOwner(Arc::clone(&map)));
                    Some(Mapped { bytes, map })
                }
                Err(e) => {
                    tracing::debug!(path = %self.path.display(), error = %e, "mmap failed; reading with pread");
                    None
                }
            })
            .clone()
    }
}
