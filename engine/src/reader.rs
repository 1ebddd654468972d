//! [`LogReader`]: iterates records from any LSN across segments.
//!
//! Sealed segments are read through a memory map (zero-copy: payloads are slices of the map, and
//! a chunk gives its pages back to the kernel when the last copy of it is dropped);
//! the active segment with `pread`, never past the bytes known to be written. A log written
//! around the page cache (the `io_uring_direct` backend) reads its sealed segments around it too
//! (`O_DIRECT`, into reused aligned windows): see [`Source::Uncached`]. Every record's CRC
//! and LSN are checked as it is read; write markers between records are checked and skipped. By
//! default a reader stops at the durable watermark, so it never returns a record a crash could
//! take back. A segment known to be damaged (found at open or by the scrubber) fails reads from
//! its damaged LSN on with [`Error::Corruption`] until it is repaired.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::io::aligned::{AlignedBytes, BUFFER_ALIGN};
use crate::io::Backend;
use crate::record::{
    self, decode_header, Frame, Record, FLAG_MARKER, MARKER_BYTES, RECORD_HEADER_BYTES,
};
use crate::segment_set::{Mapped, Segment, PAGE_BYTES};
use crate::state::Shared;
use crate::types::Lsn;

/// A reader of records from a mapped segment gives the pages behind it back in steps of this
/// (and the rest when it leaves the segment); chunks give theirs back when dropped.
const RELEASE_STEP_BYTES: u64 = 4 << 20;
/// Bytes read ahead from the active segment.
const READ_AHEAD_BYTES: usize = 256 << 10;
/// Markers that can stand between two records: a write's, and an idle one after it.
const MAX_MARKERS_BETWEEN_RECORDS: usize = 2;
/// Bytes of an uncached read when the reader asks for less: a walk over headers reads ahead.
const UNCACHED_WINDOW_BYTES: usize = 1 << 20;
/// Windows one reader keeps for reuse once their bytes are dropped.
const POOLED_WINDOWS: usize = 8;
/// What an uncached chunk read takes beyond its bound: the header of the record after the
/// chunk's last and the markers before it, which decide where the chunk ends.
const CHUNK_SLACK_BYTES: usize = RECORD_HEADER_BYTES + MAX_MARKERS_BETWEEN_RECORDS * MARKER_BYTES;

/// An iterator over records, from an LSN on. It ends at the durable end of the log (or the
/// written end, for [`crate::Log::read_from_unsynced`]); calling `next` again later continues
/// from there as the log grows. After an error it returns `None`.
///
/// A reader that runs across a [`crate::Log::truncate_after`] may end with an error; open a new
/// reader after truncating.
pub struct LogReader {
    shared: Arc<Shared>,
    next: Lsn,
    unsynced: bool,
    cursor: Option<Cursor>,
    failed: bool,
    /// Read windows for uncached segments, reused across segments and chunks.
    windows: Arc<Windows>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("next", &self.next)
            .field("unsynced", &self.unsynced)
            .finish()
    }
}

struct Cursor {
    seg: Arc<Segment>,
    /// Offset of the record `lsn`.
    offset: u64,
    lsn: Lsn,
    source: Source,
    /// A mapped source's pages below this offset were given back (records read past them).
    released: u64,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.release_behind(true);
    }
}

enum Source {
    /// A sealed segment's map: records are slices of it, chunks give their pages back when
    /// dropped ([`Mapped::chunk`]).
    Mapped(Mapped),
    Read {
        data: Vec<u8>,
        start: u64,
    },
    /// A sealed segment of a log whose writes go around the page cache: its pages are not
    /// cached, and reading them through a map or `pread` would allocate a page-cache page for
    /// every 4 KiB read, which on a virtual machine costs more than the read (the first touch
    /// of a page the host has not backed; `docs/benchmarks.md`, "Catch-up reads around the page
    /// cache"). Read with `O_DIRECT` into `data`, a window from `windows` that holds the
    /// segment's bytes from `start` (a block boundary) on; chunks are zero-copy slices of it.
    Uncached {
        data: Bytes,
        start: u64,
        windows: Arc<Windows>,
    },
}

/// Aligned read windows, kept for reuse: a window whose memory was touched before costs nothing
/// to fill again, where a fresh allocation pays for its pages on first touch.
struct Windows {
    free: parking_lot::Mutex<Vec<AlignedBytes>>,
    /// The log's count of bytes read into windows.
    read_bytes: Arc<AtomicU64>,
}

impl Windows {
    /// A buffer of `len` initialized bytes (zeros, or what a reused buffer last held: the read
    /// overwrites them, so a reused window is not zeroed again), aligned for `O_DIRECT`.
    fn take(&self, len: usize) -> AlignedBytes {
        let reused = {
            let mut free = self.free.lock();
            let fit = free.iter().position(|b| b.capacity() >= len);
            fit.map(|i| free.swap_remove(i))
        };
        let mut buf = reused.unwrap_or_else(|| {
            let capacity = len.div_ceil(UNCACHED_WINDOW_BYTES) * UNCACHED_WINDOW_BYTES;
            AlignedBytes::with_capacity(capacity)
        });
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            buf.extend_zeros(len - buf.len());
        }
        buf
    }

    fn give_back(&self, buf: AlignedBytes) {
        let mut free = self.free.lock();
        if free.len() < POOLED_WINDOWS {
            free.push(buf);
        }
    }
}

/// The owner of an uncached window's bytes: returns the buffer to its pool when the last slice
/// of it goes.
struct Window {
    buf: AlignedBytes,
    home: Arc<Windows>,
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_slice()
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        let buf = std::mem::replace(&mut self.buf, AlignedBytes::with_capacity(0));
        self.home.give_back(buf);
    }
}

/// Whole encoded records, as they lie in the segment: headers and payloads.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// LSN of the first record.
    pub first: Lsn,
    /// LSN of the last record.
    pub last: Lsn,
    /// The records' bytes; a slice of the segment's map when it is sealed.
    pub bytes: Bytes,
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, from: Lsn, unsynced: bool) -> Result<LogReader> {
        let first = shared.first_lsn();
        let from = if from == Lsn::ZERO { first } else { from };
        if from < first {
            return Err(Error::Purged { lsn: from, first });
        }
        Ok(LogReader {
            next: from,
            unsynced,
            cursor: None,
            failed: false,
            windows: Arc::new(Windows {
                free: parking_lot::Mutex::default(),
                read_bytes: Arc::clone(&shared.counters.uncached_read_bytes),
            }),
            shared,
        })
    }

    /// The LSN the next call to `next` returns.
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    fn limit(&self) -> Lsn {
        if self.unsynced {
            Lsn(self.shared.written_lsn.load(Ordering::Acquire))
        } else {
            self.shared.watermark.durable()
        }
    }

    fn position(&mut self) -> Result<()> {
        let seg = {
            let segs = self.shared.segments.read();
            let first = segs.first().map_or(Lsn::FIRST, |s| s.base);
            if self.next < first {
                return Err(Error::Purged {
                    lsn: self.next,
                    first,
                });
            }
            let i = segs.partition_point(|s| s.base <= self.next);
            Arc::clone(&segs[i.max(1) - 1])
        };
        let (lsn, offset) = seg.locate(self.next);
        let uncached = self.shared.options.backend == Backend::IoUringDirect && seg.is_sealed();
        if uncached {
            seg.note_uncached_reader();
        }
        // Never mapped when read around the cache: a map is made (and kept) by asking for it.
        let mapped = if uncached { None } else { seg.mapped() };
        let source = match mapped {
            _ if uncached => Source::Uncached {
                data: Bytes::new(),
                start: 0,
                windows: Arc::clone(&self.windows),
            },
            Some(map) => Source::Mapped(map),
            None => Source::Read {
                data: Vec::new(),
                start: 0,
            },
        };
        let mut cursor = Cursor {
            seg,
            offset,
            lsn,
            source,
            released: 0,
        };
        while cursor.lsn < self.next {
            let (_, len) = cursor.header_at()?;
            cursor.offset += len;
            cursor.lsn = cursor.lsn.next();
        }
        self.cursor = Some(cursor);
        Ok(())
    }

    fn read_one(&mut self) -> Result<Record> {
        let stale = match &self.cursor {
            None => true,
            Some(c) => c.lsn != self.next || self.next > c.seg.last_lsn(),
        };
        if stale {
            self.position()?;
        }
        let c = self.cursor.as_mut().expect("positioned");
        c.seg.check_readable(c.lsn)?;
        c.release_behind(false);
        let rec = c.record()?;
        c.offset += (RECORD_HEADER_BYTES + rec.payload.len()) as u64;
        c.lsn = c.lsn.next();
        Ok(rec)
    }
}

impl LogReader {
    /// Reads whole records from the next LSN on as their encoded bytes: at least one record,
    /// at most `max_bytes` unless one record alone is larger, never across a segment boundary.
    /// From sealed segments the bytes are a slice of the map (zero-copy). Headers (length, LSN)
    /// are checked here; the CRCs are left to whoever decodes the records. Returns `None` at
    /// the end, like `next`.
    pub fn next_chunk(&mut self, max_bytes: usize) -> Option<Result<Chunk>> {
        let limit = self.limit();
        if self.failed || self.next > limit {
            return None;
        }
        match self.read_chunk(max_bytes, limit) {
            Ok(c) => {
                self.next = c.last.next();
                Some(Ok(c))
            }
            Err(_) if self.unsynced && self.next > self.shared.watermark.durable() => {
                self.cursor = None;
                None
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }

    fn read_chunk(&mut self, max_bytes: usize, limit: Lsn) -> Result<Chunk> {
        let stale = match &self.cursor {
            None => true,
            Some(c) => c.lsn != self.next || self.next > c.seg.last_lsn(),
        };
        if stale {
            self.position()?;
        }
        let c = self.cursor.as_mut().expect("positioned");
        c.seg.check_readable(c.lsn)?;
        let mut stop = limit.min(c.seg.last_lsn());
        if let Some(d) = c.seg.damage() {
            stop = stop.min(d.lsn.prev());
        }
        let (first, start) = (c.lsn, c.offset);
        if matches!(c.source, Source::Uncached { .. }) {
            // One read for the whole chunk, and the header that ends it.
            let want = (max_bytes + CHUNK_SLACK_BYTES) as u64;
            let end = start + want.min(c.seg.end_offset().saturating_sub(start));
            c.cover(start, end)?;
        }
        loop {
            let before = c.offset;
            let (_, len) = c.header_at()?;
            if c.lsn != first && c.offset + len - start > max_bytes as u64 {
                // The markers just stepped over belong to the next chunk: this one ends at the
                // last record it holds, within the bound.
                c.offset = before;
                break;
            }
            if c.seg.is_sealed() && c.offset + len > c.seg.end_offset() {
                let end = c.seg.end_offset();
                return Err(c.corrupt(format!(
                    "a record of {len} bytes at offset {} runs past the segment's end ({end})",
                    c.offset
                )));
            }
            c.offset += len;
            c.lsn = c.lsn.next();
            if c.lsn > stop {
                break;
            }
        }
        let (end, last) = (c.offset, c.lsn.prev());
        let bytes = c.span(start, end)?;
        Ok(Chunk { first, last, bytes })
    }
}

impl Iterator for LogReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.failed || self.next > self.limit() {
            return None;
        }
        match self.read_one() {
            Ok(r) => {
                self.next = self.next.next();
                Some(Ok(r))
            }
            Err(_) if self.unsynced && self.next > self.shared.watermark.durable() => {
                // Submitted but not yet in the page cache: not readable yet.
                self.cursor = None;
                None
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl Cursor {
    /// Damage found by a read. In a sealed segment it marks the segment damaged, for repair (the
    /// active segment's unsynced end may still be in flight, so its errors are not marked).
    fn corrupt(&self, reason: String) -> Error {
        let c = crate::corruption::Corruption {
            segment: self.seg.path.clone(),
            offset: self.offset,
            lsn: self.lsn,
            reason,
        };
        if self.seg.is_sealed() {
            self.seg.mark_damaged(c.clone());
        }
        c.into()
    }

    /// Gives back the mapped pages wholly before the cursor once a step of them was read since
    /// the last time, or all of them with `all`.
    fn release_behind(&mut self, all: bool) {
        let Source::Mapped(map) = &self.source else {
            return;
        };
        let upto = self.offset - self.offset % PAGE_BYTES as u64;
        if upto > self.released && (all || upto - self.released >= RELEASE_STEP_BYTES) {
            let (Ok(from), Ok(to)) = (usize::try_from(self.released), usize::try_from(upto)) else {
                return;
            };
            map.release(from, to);
            self.released = upto;
        }
    }

    /// The segment's bytes `[start, end)`, whole.
    fn span(&mut self, start: u64, end: u64) -> Result<Bytes> {
        let short = || "segment ends inside a record".to_string();
        match &self.source {
            Source::Mapped(map) if end > map.len() as u64 => Err(self.corrupt(short())),
            Source::Mapped(map) => Ok(map.chunk(start as usize, end as usize)),
            Source::Read { .. } => {
                let mut data = vec![0u8; (end - start) as usize];
                let n = (self.seg.file)
                    .read_at(&mut data, start)
                    .map_err(|e| Error::io("read", &self.seg.path, e))?;
                if n < data.len() {
                    return Err(self.corrupt(short()));
                }
                Ok(Bytes::from(data))
            }
            Source::Uncached { .. } => {
                self.cover(start, end)?;
                let Source::Uncached {
                    data, start: at, ..
                } = &self.source
                else {
                    unreachable!("covered above");
                };
                let (from, to) = ((start - at) as usize, (end - at) as usize);
                if to > data.len() {
                    return Err(self.corrupt(short()));
                }
                Ok(data.slice(from..to))
            }
        }
    }

    /// For an uncached source: makes its window hold `[start, end)` (as much of it as the
    /// segment has), reading a new window from the block holding `start` unless it does.
    fn cover(&mut self, start: u64, end: u64) -> Result<()> {
        let Source::Uncached {
            data,
            start: at,
            windows,
        } = &mut self.source
        else {
            return Ok(());
        };
        if start >= *at && end <= *at + data.len() as u64 {
            return Ok(());
        }
        let align = BUFFER_ALIGN as u64;
        let from = start - start % align;
        let readable = self.seg.end_offset().next_multiple_of(align);
        let want = (end - from).next_multiple_of(align);
        let len = want
            .max(UNCACHED_WINDOW_BYTES as u64)
            .min(readable.saturating_sub(from));
        let mut buf = windows.take(len.max(want) as usize);
        let n = (self.seg.file)
            .read_uncached_at(buf.as_mut_slice(), from)
            .map_err(|e| Error::io("read", &self.seg.path, e))?;
        buf.truncate(n);
        windows.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
        let home = Arc::clone(windows);
        *data = Bytes::from_owner(Window { buf, home });
        *at = from;
        Ok(())
    }

    /// Makes `[offset, offset + len)` available; returns it.
    fn bytes(&mut self, len: usize) -> Result<&[u8]> {
        let off = self.offset;
        if let Source::Uncached { .. } = self.source {
            self.cover(off, off + len as u64)?;
        }
        let (data, start): (&[u8], u64) = match &mut self.source {
            Source::Mapped(map) => (map, 0),
            Source::Read { data, start } => {
                let have = off >= *start && off + len as u64 <= *start + data.len() as u64;
                if !have {
                    // Never buffer past the written end: bytes there may change.
                    let written = self.seg.end_offset().max(off + len as u64);
                    let want = (written - off).min(READ_AHEAD_BYTES.max(len) as u64) as usize;
                    data.resize(want.max(len), 0);
                    let n = self
                        .seg
                        .file
                        .read_at(data, off)
                        .map_err(|e| Error::io("read", &self.seg.path, e))?;
                    data.truncate(n);
                    *start = off;
                }
                (data, *start)
            }
            Source::Uncached { data, start, .. } => (data, *start),
        };
        // Fewer than `len` bytes where the source ends: the caller's decoding reports it.
        let from = usize::try_from(off - start)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let to = from.saturating_add(len).min(data.len());
        Ok(&data[from..to])
    }

    /// The record header at the cursor, checked for its LSN, after skipping (and checking) the
    /// write markers before it; returns it and the record's total length.
    fn header_at(&mut self) -> Result<(record::RecordHeader, u64)> {
        let lsn = self.lsn;
        for _ in 0..=MAX_MARKERS_BETWEEN_RECORDS {
            let h = decode_header(self.bytes(RECORD_HEADER_BYTES)?)
                .map_err(|e| self.corrupt(e.to_string()))?;
            if h.flags & FLAG_MARKER == 0 {
                if h.lsn != lsn {
                    return Err(
                        self.corrupt(format!("found LSN {} where {lsn} was expected", h.lsn))
                    );
                }
                return Ok((h, (RECORD_HEADER_BYTES + h.payload_len as usize) as u64));
            }
            self.skip_marker()?;
        }
        Err(self.corrupt(format!(
            "more than {MAX_MARKERS_BETWEEN_RECORDS} write markers before LSN {lsn}"
        )))
    }

    /// Checks the marker at the cursor (it must announce the expected LSN) and steps over it.
    fn skip_marker(&mut self) -> Result<()> {
        let (lsn, base) = (self.lsn, self.seg.base);
        let frame = record::decode_frame(self.bytes(MARKER_BYTES)?).map(|f| match f {
            Frame::Marker(m) => Some(m),
            Frame::Record(_) => None,
        });
        match frame {
            Ok(Some(m)) if m.next_lsn == lsn && m.segment_base == base => {
                self.offset += MARKER_BYTES as u64;
                Ok(())
            }
            Ok(_) => Err(self.corrupt(format!("a write marker that does not precede LSN {lsn}"))),
            Err(e) => Err(self.corrupt(e.to_string())),
        }
    }

    fn record(&mut self) -> Result<Record> {
        let (_, len) = self.header_at()?;
        let len = len as usize;
        let off = self.offset as usize;
        let mapped = matches!(self.source, Source::Mapped(_));
        let bytes = self.bytes(len)?;
        let (header, copied) = match record::decode(bytes) {
            // Copied unless mapped: a read buffer is reused, and a record kept for long would
            // keep a whole uncached window alive.
            Ok(r) => (
                r.header,
                (!mapped).then(|| Bytes::copy_from_slice(&bytes[RECORD_HEADER_BYTES..])),
            ),
            Err(e) => return Err(self.corrupt(e.to_string())),
        };
        let payload = match (&self.source, copied) {
            (Source::Mapped(map), _) => map.slice(off + RECORD_HEADER_BYTES..off + len),
            (_, copied) => copied.unwrap_or_default(),
        };
        Ok(Record {
            lsn: header.lsn,
            epoch: header.epoch,
            crc: header.crc,
            payload,
        })
    }
}

/// Offset just after record `lsn` in `seg`, walking headers from the nearest index entry.
pub(crate) fn record_end(seg: &Arc<Segment>, lsn: Lsn) -> Result<u64> {
    let (start_lsn, offset) = seg.locate(lsn);
    let mut cursor = Cursor {
        seg: Arc::clone(seg),
        offset,
        lsn: start_lsn,
        source: Source::Read {
            data: Vec::new(),
            start: 0,
        },
        released: 0,
    };
    loop {
        let (_, len) = cursor.header_at()?;
        cursor.offset += len;
        if cursor.lsn == lsn {
            return Ok(cursor.offset);
        }
        cursor.lsn = cursor.lsn.next();
    }
}
