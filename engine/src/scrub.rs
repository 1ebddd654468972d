//! [`Scrubber`]: re-reads the log a step at a time and checks every frame, to find rot that
//! nobody reads: `Log::open` checks sealed segments by header only, and a record nobody asks
//! for is never checked by a reader.
//!
//! A pass walks every sealed segment and the durable part of the active one, in LSN order,
//! with `pread` after dropping the range from the page cache (so it checks what is on the
//! device, not what the cache remembers). Every record's CRC and LSN, every marker, are checked
//! by the rules recovery uses. Damage marks its segment damaged (readers then refuse its range
//! with [`Error::Corruption`] until the segment is repaired) and is reported; the pass goes on
//! with the next segment.
//!
//! The scrubber also computes a digest per range of [`ScrubOptions::digest_range_records`]
//! LSNs (over each record's LSN, epoch, CRC and length), which replicas compare: ranges, not
//! segments, because each replica cuts its segments at its own LSNs.
//!
//! It has no clock and no thread: the caller decides the pace (`step(max_bytes)`), which is
//! how a node bounds its rate.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::corruption::Corruption;
use crate::error::{Error, Result};
use crate::record::{decode_frame, Frame, RECORD_HEADER_BYTES};
use crate::segment::SEGMENT_HEADER_BYTES;
use crate::segment_set::Segment;
use crate::state::Shared;
use crate::types::Lsn;

/// Default records per digest range.
pub const DEFAULT_DIGEST_RANGE_RECORDS: u64 = 16_384;

/// How the scrubber digests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrubOptions {
    /// LSNs per digest range: range k holds LSNs `k * n + 1 ..= (k + 1) * n`. Every replica of a
    /// cluster must use the same value for their digests to compare. Default 16,384.
    pub digest_range_records: u64,
}

impl Default for ScrubOptions {
    fn default() -> ScrubOptions {
        ScrubOptions {
            digest_range_records: DEFAULT_DIGEST_RANGE_RECORDS,
        }
    }
}

/// The digest of one range of LSNs: the first 16 bytes of SHA-256 over each record's LSN,
/// epoch, CRC and payload length (8 + 8 + 4 + 4 bytes, little-endian), in LSN order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RangeDigest {
    /// First LSN of the range.
    pub first: Lsn,
    /// Last LSN of the range.
    pub last: Lsn,
    /// The digest.
    pub digest: [u8; 16],
}

/// What one [`Scrubber::step`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubStep {
    /// Bytes read.
    pub bytes: u64,
    /// Damage found (its segment is now marked damaged).
    pub corruption: Option<Corruption>,
    /// Digest ranges completed by this step.
    pub digests: Vec<RangeDigest>,
    /// The step ended a pass over the whole log (the next step starts a new one).
    pub pass_finished: bool,
}

/// Where the scrubber is.
struct Position {
    seg: Arc<Segment>,
    offset: u64,
    next_lsn: Lsn,
}

/// Builds [`RangeDigest`]s from records given in LSN order: the scrubber's digests, and anyone
/// else's who must compute the same ones (a replica checking records it fetched).
#[derive(Clone, Debug)]
pub struct DigestBuilder {
    range_records: u64,
    current: Option<(u64, Sha256, bool)>,
}

impl DigestBuilder {
    /// Digests ranges of `range_records` LSNs.
    ///
    /// # Panics
    /// If `range_records` is 0.
    pub fn new(range_records: u64) -> DigestBuilder {
        assert!(range_records > 0, "digest ranges of 0 records");
        DigestBuilder {
            range_records,
            current: None,
        }
    }

    /// Adds a record; returns its range's digest when it completes the range and every record
    /// of the range was added since its first.
    pub fn push(
        &mut self,
        lsn: Lsn,
        epoch: u64,
        crc: u32,
        payload_len: usize,
    ) -> Option<RangeDigest> {
        let n = self.range_records;
        let range = (lsn.get() - 1) / n;
        let first = range * n + 1;
        if self.current.as_ref().map(|c| c.0) != Some(range) {
            self.current = Some((range, Sha256::new(), lsn.get() == first));
        }
        let (_, hasher, _) = self.current.as_mut().expect("set above");
        hasher.update(lsn.get().to_le_bytes());
        hasher.update(epoch.to_le_bytes());
        hasher.update(crc.to_le_bytes());
        hasher.update((payload_len as u32).to_le_bytes());
        if lsn.get() != first + n - 1 {
            return None;
        }
        let (_, hasher, whole) = self.current.take().expect("set above");
        whole.then(|| {
            let mut digest = [0u8; 16];
            digest.copy_from_slice(&hasher.finalize()[..16]);
            RangeDigest {
                first: Lsn(first),
                last: lsn,
                digest,
            }
        })
    }

    /// Records were skipped: the range being built has no digest.
    pub fn skip(&mut self) {
        if let Some(c) = &mut self.current {
            c.2 = false;
        }
    }

    /// Starts over (the next record starts a range only if it is the range's first).
    pub fn reset(&mut self) {
        self.current = None;
    }
}

/// Re-reads the log a step at a time; see the module docs. Made by [`crate::Log::scrubber`].
pub struct Scrubber {
    shared: Arc<Shared>,
    pos: Option<Position>,
    digests: DigestBuilder,
    /// Truncation generation seen when the pass started.
    generation: u64,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("next_lsn", &self.pos.as_ref().map(|p| p.next_lsn))
            .finish()
    }
}

impl Scrubber {
    pub(crate) fn new(shared: Arc<Shared>, options: ScrubOptions) -> Scrubber {
        assert!(
            options.digest_range_records > 0,
            "digest ranges of 0 records"
        );
        let generation = shared.queue.state.lock().generation;
        Scrubber {
            shared,
            digests: DigestBuilder::new(options.digest_range_records),
            pos: None,
            generation,
        }
    }

    /// The LSN the next step checks first.
    pub fn next_lsn(&self) -> Option<Lsn> {
        self.pos.as_ref().map(|p| p.next_lsn)
    }

    /// Reads and checks about `max_bytes` (at least one whole frame).
    ///
    /// # Errors
    /// [`Error::Io`] when a read of the active segment fails (the position is kept; try again
    /// later). A sealed segment that cannot be read is reported as damage instead, like a
    /// checksum failure: a replica's copy replaces it.
    pub fn step(&mut self, max_bytes: usize) -> Result<ScrubStep> {
        let mut step = ScrubStep::default();
        let generation = self.shared.queue.state.lock().generation;
        if generation != self.generation {
            // A truncation rewrote the end of the log: start over.
            self.generation = generation;
            self.pos = None;
            self.digests.reset();
        }
        let Some(mut pos) = self.position() else {
            self.end_pass(&mut step);
            return Ok(step);
        };
        if pos.seg.damage().is_some() {
            // Known damaged, awaiting repair: found and reported once already.
            self.digests.skip();
            self.advance(&pos.seg, &mut step);
            return Ok(step);
        }
        let stop = self.stop_lsn(&pos.seg);
        if pos.next_lsn > stop {
            if pos.seg.is_sealed() {
                self.advance(&pos.seg, &mut step);
            } else {
                self.end_pass(&mut step);
            }
            return Ok(step);
        }
        let bytes = match read_span(&pos.seg, pos.offset, max_bytes) {
            Ok(b) => b,
            Err(e) if pos.seg.is_sealed() => {
                // An unreadable sealed segment is damage like any other: a replica's copy,
                // written to new blocks, replaces it. The pass goes on with the next segment.
                let c = Corruption {
                    segment: pos.seg.path.clone(),
                    offset: pos.offset,
                    lsn: pos.next_lsn,
                    reason: format!("found by the scrubber: unreadable: {e}"),
                };
                tracing::error!(segment = %c.segment.display(), offset = c.offset, lsn = %c.lsn, reason = %c.reason, "scrubber cannot read a sealed segment: it reads as corruption until it is repaired");
                pos.seg.mark_damaged(c.clone());
                self.digests.skip();
                self.advance(&pos.seg, &mut step);
                step.corruption = Some(c);
                return Ok(step);
            }
            Err(e) => {
                // The active segment: keep the position and let the caller try again.
                self.pos = Some(pos);
                return Err(e);
            }
        };
        step.bytes = bytes.len() as u64;
        match self.walk(&mut pos, &bytes, stop, &mut step.digests) {
            Ok(()) => self.pos = Some(pos),
            Err(c) => {
                tracing::error!(segment = %c.segment.display(), offset = c.offset, lsn = %c.lsn, reason = %c.reason, "scrubber found damage: the segment reads as corruption until it is repaired");
                pos.seg.mark_damaged(c.clone());
                self.digests.skip();
                self.advance(&pos.seg, &mut step);
                step.corruption = Some(c);
            }
        }
        Ok(step)
    }

    /// The position to read from: where the last step stopped, unless its segment was purged
    /// or replaced; the first segment at the start of a pass.
    fn position(&mut self) -> Option<Position> {
        let segs = self.shared.segments.read();
        match self.pos.take() {
            Some(p) => {
                if let Some(now) = segs.iter().find(|s| s.base == p.seg.base) {
                    if Arc::ptr_eq(now, &p.seg) {
                        return Some(p);
                    }
                    // Replaced (repaired): walk the new file from its start.
                    self.digests.reset();
                    return Some(start_of(now));
                }
                self.digests.reset();
                segs.iter().find(|s| s.base > p.seg.base).map(start_of)
            }
            None => segs.first().map(start_of),
        }
    }

    /// Moves on to the segment after `seg`, or ends the pass after the last one.
    fn advance(&mut self, seg: &Arc<Segment>, step: &mut ScrubStep) {
        let next = {
            let segs = self.shared.segments.read();
            segs.iter().find(|s| s.base > seg.base).map(start_of)
        };
        match next {
            Some(p) => self.pos = Some(p),
            None => self.end_pass(step),
        }
    }

    fn end_pass(&mut self, step: &mut ScrubStep) {
        step.pass_finished = true;
        self.pos = None;
        self.digests.reset();
    }

    /// Sealed: its last LSN. Active: its durable part.
    fn stop_lsn(&self, seg: &Segment) -> Lsn {
        if seg.is_sealed() {
            seg.last_lsn()
        } else {
            seg.last_lsn().min(self.shared.watermark.durable())
        }
    }

    /// Checks the whole frames in `bytes` (read at `pos.offset`), up to record `stop`.
    fn walk(
        &mut self,
        pos: &mut Position,
        bytes: &[u8],
        stop: Lsn,
        digests: &mut Vec<RangeDigest>,
    ) -> std::result::Result<(), Corruption> {
        let mut at = 0usize;
        while pos.next_lsn <= stop && at < bytes.len() {
            let rest = &bytes[at..];
            let partial =
                rest.len() < RECORD_HEADER_BYTES || frame_len(rest).is_some_and(|n| n > rest.len());
            if partial && at > 0 {
                break; // The frame continues past what was read: the next step reads it.
            }
            let corrupt = |reason: String| Corruption {
                segment: pos.seg.path.clone(),
                offset: pos.offset + at as u64,
                lsn: pos.next_lsn,
                reason: format!("found by the scrubber: {reason}"),
            };
            match decode_frame(rest) {
                Ok(Frame::Record(r)) if r.header.lsn == pos.next_lsn => {
                    let h = &r.header;
                    digests.extend(
                        self.digests
                            .push(h.lsn, h.epoch.get(), h.crc, r.payload.len()),
                    );
                    pos.next_lsn = pos.next_lsn.next();
                    at += r.encoded_len();
                }
                Ok(Frame::Marker(m))
                    if m.next_lsn == pos.next_lsn && m.segment_base == pos.seg.base =>
                {
                    at += crate::record::MARKER_BYTES;
                }
                Ok(f) => {
                    return Err(corrupt(format!(
                        "LSN {} where {} was expected",
                        f.lsn(),
                        pos.next_lsn
                    )))
                }
                Err(e) => return Err(corrupt(e.to_string())),
            }
        }
        pos.offset += at as u64;
        Ok(())
    }
}

fn start_of(seg: &Arc<Segment>) -> Position {
    Position {
        seg: Arc::clone(seg),
        offset: SEGMENT_HEADER_BYTES as u64,
        next_lsn: seg.base,
    }
}

/// A frame's total length from its header, if the header is there.
fn frame_len(rest: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
    Some(RECORD_HEADER_BYTES.saturating_add(len))
}

/// Reads `[offset, offset + max_bytes)` of the segment (at least one whole frame, bounded by
/// the file), from the device: the range is dropped from the page cache first when the
/// segment is sealed (an active segment's pages may be dirty, and dropping does not apply).
fn read_span(seg: &Segment, offset: u64, max_bytes: usize) -> Result<Vec<u8>> {
    let file_len = seg
        .file
        .len()
        .map_err(|e| Error::io("stat", &seg.path, e))?;
    let mut want = (max_bytes.max(RECORD_HEADER_BYTES) as u64).min(file_len.saturating_sub(offset));
    let mut header = [0u8; RECORD_HEADER_BYTES];
    if seg
        .file
        .read_at(&mut header, offset)
        .map_err(|e| Error::io("read", &seg.path, e))?
        == RECORD_HEADER_BYTES
    {
        // One frame larger than the step is read whole (a bogus length is bounded by the file).
        let len = frame_len(&header).unwrap_or(0) as u64;
        want = want.max(len.min(file_len.saturating_sub(offset)));
    }
    if seg.is_sealed() {
        let _ = seg.file.drop_cache(offset, want);
    }
    let mut buf = vec![0u8; want as usize];
    let n = seg
        .file
        .read_at(&mut buf, offset)
        .map_err(|e| Error::io("read", &seg.path, e))?;
    buf.truncate(n);
    Ok(buf)
}
