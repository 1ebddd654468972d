//! The rules that read one segment's bytes and decide where its records end and why: a clean
//! end, a torn write a crash left, or corruption. Recovery, `verify`, the read-only scanner and
//! the scrubber all use these rules, so they never disagree about a byte.
//!
//! Format version 2 decides by proof, not by distance. The writer ends every write with a
//! marker that says which bytes of the segment were synced when the write was submitted (and
//! writes one more, unsynced, when it falls idle after a sync). Damage at offset `p` is:
//! - corruption, when a valid marker of this segment says bytes past `p` were synced (a marker
//!   speaks only for bytes before itself, so it is one found after `p`), or the log's durable
//!   floor (`logship.durable`, written at a clean close) says the damaged record's LSN was
//!   durable: a crash cannot damage what was synced;
//! - also corruption when valid records lie further past `p` than the writer can have had in
//!   flight (`max_unsynced_bytes`), as in version 1;
//! - otherwise a torn tail: the writes in flight at a crash, none of them proven synced.
//!
//! Format version 1 segments (written before markers existed) keep the version-1 rule: damage
//! within `max_unsynced_bytes` of the end of the written data is a torn tail.
//!
//! Records whose LSN is below their segment's base, and markers of another segment, are
//! leftovers of a reused file; they end a segment cleanly and are never data.

use crate::record::{self, Frame, RECORD_HEADER_BYTES};
use crate::segment::{LEGACY_FORMAT_VERSION, SEGMENT_HEADER_BYTES};
use crate::types::Lsn;

/// Distance between sparse index entries built while scanning.
const INDEX_INTERVAL_BYTES: u64 = 256 << 10;

/// What the scan knows about the segment besides its bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentFacts {
    pub(crate) base: Lsn,
    /// The next segment's base, for a sealed segment (which must hold exactly up to it).
    pub(crate) next_base: Option<Lsn>,
    /// The header's format version.
    pub(crate) version: u32,
    /// The header's `max_unsynced_bytes`.
    pub(crate) window: u64,
    /// The log's durable floor: every LSN up to it was durable at a clean close.
    pub(crate) floor: Lsn,
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
    /// Bytes of records (markers not counted).
    pub(crate) bytes: u64,
    /// Offset after the last valid frame (record or marker): where the next write goes.
    pub(crate) end: u64,
    /// LSN the next record would have.
    pub(crate) next_lsn: Lsn,
    pub(crate) index: Vec<(Lsn, u64)>,
    pub(crate) stop: Stop,
    /// Bytes `0..proven` were synced, by the markers read before the stop.
    pub(crate) proven: u64,
}

/// Scans the records of a segment whose bytes (header included) are `bytes`.
pub(crate) fn scan_records(bytes: &[u8], facts: &SegmentFacts) -> Scan {
    let mut scan = Scan {
        records: 0,
        bytes: 0,
        end: SEGMENT_HEADER_BYTES as u64,
        next_lsn: facts.base,
        index: Vec::new(),
        stop: Stop::Clean,
        proven: SEGMENT_HEADER_BYTES as u64,
    };
    let mut last_indexed = 0u64;
    loop {
        if facts.next_base == Some(scan.next_lsn) {
            return scan;
        }
        let pos = scan.end as usize;
        let rest = bytes.get(pos..).unwrap_or(&[]);
        let failure = match next_frame(rest, facts) {
            Ok(Frame::Record(r)) if r.header.lsn == scan.next_lsn => {
                if scan.index.is_empty() || scan.end - last_indexed >= INDEX_INTERVAL_BYTES {
                    scan.index.push((scan.next_lsn, scan.end));
                    last_indexed = scan.end;
                }
                scan.records += 1;
                scan.bytes += r.encoded_len() as u64;
                scan.end += r.encoded_len() as u64;
                scan.next_lsn = scan.next_lsn.next();
                continue;
            }
            Ok(Frame::Marker(m)) if m.segment_base == facts.base && m.next_lsn == scan.next_lsn => {
                // A marker can only speak for bytes before itself.
                scan.proven = scan.proven.max(m.synced_offset.min(scan.end));
                scan.end += record::MARKER_BYTES as u64;
                continue;
            }
            Ok(f) if is_leftover(&f, facts) && facts.next_base.is_none() => return scan,
            Ok(f) => format!("LSN {} where {} was expected", f.lsn(), scan.next_lsn),
            Err(e) => e.to_string(),
        };
        scan.stop = match facts.next_base {
            Some(nb) => Stop::Corrupt {
                offset: scan.end,
                reason: format!(
                    "sealed segment must hold LSNs up to {} (the next segment starts at {nb}): {failure}",
                    nb.prev()
                ),
            },
            None => classify_tail(bytes, pos, scan.next_lsn, scan.proven, facts, failure),
        };
        return scan;
    }
}

/// Version-1 segments hold records only: a marker there is damage like any other.
fn next_frame<'a>(rest: &'a [u8], facts: &SegmentFacts) -> Result<Frame<'a>, record::DecodeError> {
    if facts.version == LEGACY_FORMAT_VERSION {
        record::decode(rest).map(Frame::Record)
    } else {
        record::decode_frame(rest)
    }
}

/// A valid frame that belongs to the file's earlier life as another segment.
fn is_leftover(f: &Frame<'_>, facts: &SegmentFacts) -> bool {
    match f {
        Frame::Record(r) => r.header.lsn < facts.base,
        Frame::Marker(m) => m.segment_base != facts.base,
    }
}

/// Valid frames of this segment's life found at or after a failure.
#[derive(Debug, Default)]
struct Later {
    records: u64,
    first_offset: usize,
    last_end: usize,
    max_lsn: Lsn,
    /// The largest `synced_offset` among this segment's markers.
    proven: u64,
    proven_by: usize,
}

/// Searches every byte offset from `from` on (skipping runs of zeros) for records with a
/// plausible LSN (at least `expected`) and for this segment's markers.
fn find_later(bytes: &[u8], from: usize, expected: Lsn, facts: &SegmentFacts) -> Option<Later> {
    let plausible_max = expected
        .get()
        .saturating_add((bytes.len() / RECORD_HEADER_BYTES) as u64 + 1);
    let mut found: Option<Later> = None;
    let mut off = from;
    while off + RECORD_HEADER_BYTES <= bytes.len() {
        let window = &bytes[off..off + RECORD_HEADER_BYTES];
        if window.iter().all(|&b| b == 0) {
            // Skip a zero run: a header needs a non-zero LSN within its first 16 bytes.
            let q = first_nonzero(bytes, off);
            off = (off + 1).max(q.saturating_sub(RECORD_HEADER_BYTES - 1));
            continue;
        }
        let lsn = u64::from_le_bytes(window[8..16].try_into().expect("8 bytes"));
        if lsn >= expected.get() && lsn <= plausible_max {
            if let Ok(f) = next_frame(&bytes[off..], facts) {
                let end = off + f.encoded_len();
                note_later(&mut found, &f, off, end, facts);
                off = end;
                continue;
            }
        }
        off += 1;
    }
    found
}

/// Bytes [`first_nonzero`] tests at a time.
const ZERO_BLOCK_BYTES: usize = 256;

/// The offset of the first non-zero byte at or after `from` (`bytes.len()` if none). Tests whole
/// blocks first, which compiles to vector ORs: the zeros after the last record of a segment
/// are most of a lightly filled one, and recovery passes over them at every open.
fn first_nonzero(bytes: &[u8], from: usize) -> usize {
    let rest = &bytes[from..];
    let zero_blocks = rest
        .chunks_exact(ZERO_BLOCK_BYTES)
        .take_while(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
        .count();
    let skipped = zero_blocks * ZERO_BLOCK_BYTES;
    rest[skipped..]
        .iter()
        .position(|&b| b != 0)
        .map_or(bytes.len(), |p| from + skipped + p)
}

fn note_later(
    found: &mut Option<Later>,
    f: &Frame<'_>,
    off: usize,
    end: usize,
    facts: &SegmentFacts,
) {
    match f {
        Frame::Record(r) => {
            let l = found.get_or_insert(Later {
                first_offset: off,
                ..Later::default()
            });
            if l.records == 0 {
                l.first_offset = off;
            }
            l.records += 1;
            l.last_end = l.last_end.max(end);
            l.max_lsn = l.max_lsn.max(r.header.lsn);
        }
        Frame::Marker(m) if m.segment_base == facts.base => {
            let l = found.get_or_insert(Later::default());
            let claim = m.synced_offset.min(off as u64);
            if claim > l.proven {
                l.proven = claim;
                l.proven_by = off;
            }
        }
        Frame::Marker(_) => {}
    }
}

/// Decides what a failure at `pos` in the last segment is.
fn classify_tail(
    bytes: &[u8],
    pos: usize,
    expected: Lsn,
    proven_before: u64,
    facts: &SegmentFacts,
    failure: String,
) -> Stop {
    let later = find_later(bytes, pos + 1, expected, facts);
    let corrupt = |reason: String| Stop::Corrupt {
        offset: pos as u64,
        reason,
    };
    if facts.floor >= expected {
        return corrupt(format!(
            "{failure}; the log was closed with every record up to LSN {} durable (logship.durable), so a crash cannot explain it",
            facts.floor
        ));
    }
    if let Some(l) = &later {
        let proven = if facts.version == LEGACY_FORMAT_VERSION {
            0
        } else {
            proven_before.max(l.proven)
        };
        if proven > pos as u64 {
            return corrupt(format!(
                "{failure}; the write marker at offset {} says bytes up to offset {proven} were synced, so a crash cannot explain it",
                l.proven_by
            ));
        }
        if l.records > 0 && (l.last_end - pos) as u64 > facts.window {
            return corrupt(format!(
                "{failure}; valid records up to LSN {} follow from offset {}, beyond what a crash can leave unsynced ({} bytes)",
                l.max_lsn, l.first_offset, facts.window
            ));
        }
        // Frames of this segment after the failure (records, or only a marker) are what the
        // crashed process left in flight: cut them, so they are zeroed and can never be taken
        // later for proof or for data.
        return Stop::Torn {
            offset: pos as u64,
            reason: failure,
            discarded: l.records,
        };
    }
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

/// The floor check at the end of the log: a log that ends cleanly before the LSN its durable
/// floor vouches for lost records that were durable (a zeroed block, a deleted file).
pub(crate) fn check_floor(scan: &mut Scan, floor: Lsn) {
    if scan.stop == Stop::Clean && floor >= scan.next_lsn {
        scan.stop = Stop::Corrupt {
            offset: scan.end,
            reason: format!(
                "the log ends at LSN {} but was closed with every record up to LSN {floor} durable (logship.durable)",
                scan.next_lsn.prev()
            ),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{encode_into, encode_marker, Marker, MarkerKind};
    use crate::segment::{SegmentHeader, FORMAT_VERSION};
    use crate::types::Epoch;

    const WINDOW: u64 = 4096;

    #[test]
    fn first_nonzero_finds_the_first_set_byte_at_or_after_the_start() {
        let len = 3 * ZERO_BLOCK_BYTES + 5;
        let naive = |b: &[u8], from: usize| (from..b.len()).find(|&i| b[i] != 0).unwrap_or(b.len());
        let zeros = vec![0u8; len];
        for from in [0, 1, ZERO_BLOCK_BYTES, len - 1, len] {
            assert_eq!(first_nonzero(&zeros, from), len, "all zero, from {from}");
        }
        for set in [
            0,
            1,
            ZERO_BLOCK_BYTES - 1,
            ZERO_BLOCK_BYTES,
            2 * ZERO_BLOCK_BYTES + 7,
            len - 1,
        ] {
            let mut b = zeros.clone();
            b[set] = 0x80;
            b[len - 1] |= 1;
            for from in [
                0,
                1,
                set.saturating_sub(1),
                set,
                set + 1,
                ZERO_BLOCK_BYTES + 3,
                len - 1,
            ] {
                let from = from.min(len);
                assert_eq!(
                    first_nonzero(&b, from),
                    naive(&b, from),
                    "set {set}, from {from}"
                );
            }
        }
    }

    fn facts(base: u64, next_base: Option<u64>, version: u32) -> SegmentFacts {
        SegmentFacts {
            base: Lsn(base),
            next_base: next_base.map(Lsn),
            version,
            window: WINDOW,
            floor: Lsn::ZERO,
        }
    }

    /// A segment whose records are written one per write, each followed by its marker, as a
    /// lone appender's log is: marker k says the bytes before write k were synced.
    fn segment_v2(records: std::ops::RangeInclusive<u64>, size: usize) -> Vec<u8> {
        let base = *records.start();
        let mut b = header(base, size, FORMAT_VERSION);
        let mut synced = b.len() as u64;
        for lsn in records {
            let start = b.len() as u64;
            encode_into(
                &mut b,
                Lsn(lsn),
                Epoch(0),
                format!("record {lsn}").as_bytes(),
            );
            b.extend_from_slice(&encode_marker(&Marker {
                next_lsn: Lsn(lsn + 1),
                epoch: Epoch(0),
                segment_base: Lsn(base),
                synced_offset: synced,
                durable_lsn: Lsn(lsn - 1),
                records: 1,
                kind: MarkerKind::Write,
            }));
            let _ = start;
            synced = b.len() as u64;
        }
        b.resize(size, 0);
        b
    }

    fn header(base: u64, size: usize, version: u32) -> Vec<u8> {
        SegmentHeader {
            format_version: version,
            base_lsn: Lsn(base),
            created_unix_nanos: 0,
            segment_size_bytes: size as u64,
            max_unsynced_bytes: WINDOW,
            epoch: Epoch(0),
        }
        .encode()
        .to_vec()
    }

    fn segment_v1(records: std::ops::RangeInclusive<u64>, size: usize) -> Vec<u8> {
        let mut b = header(*records.start(), size, LEGACY_FORMAT_VERSION);
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

    /// Offset of record `lsn` (after any marker before it).
    fn offset_of(b: &[u8], _: &SegmentFacts, lsn: u64) -> usize {
        let mut off = SEGMENT_HEADER_BYTES;
        loop {
            match record::decode_frame(&b[off..]).unwrap() {
                Frame::Record(r) if r.header.lsn == Lsn(lsn) => return off,
                f => off += f.encoded_len(),
            }
        }
    }

    #[test]
    fn clean_tail_of_zeros() {
        let f = facts(1, None, FORMAT_VERSION);
        let s = scan_records(&segment_v2(1..=10, 64 << 10), &f);
        assert_eq!(s.stop, Stop::Clean);
        assert_eq!(s.next_lsn, Lsn(11));
    }

    #[test]
    fn damage_to_a_record_a_later_marker_proves_synced_is_corruption_even_near_the_end() {
        let f = facts(1, None, FORMAT_VERSION);
        let mut b = segment_v2(1..=20, 64 << 10);
        // Record 19 is two writes from the end: record 20's marker proves it synced.
        let at = offset_of(&b, &f, 19);
        b[at + 36] ^= 1;
        let s = scan_records(&b, &f);
        assert!(matches!(s.stop, Stop::Corrupt { .. }), "{:?}", s.stop);
        assert_eq!(s.next_lsn, Lsn(19));
    }

    #[test]
    fn damage_to_the_last_write_is_a_torn_tail_and_counts_what_it_discards() {
        let f = facts(1, None, FORMAT_VERSION);
        let mut b = segment_v2(1..=20, 64 << 10);
        let at = offset_of(&b, &f, 20);
        b[at + 36] ^= 1;
        let s = scan_records(&b, &f);
        assert!(matches!(s.stop, Stop::Torn { .. }), "{:?}", s.stop);
        assert_eq!(s.next_lsn, Lsn(20));
    }

    #[test]
    fn the_durable_floor_makes_the_last_write_corruption_too() {
        let mut f = facts(1, None, FORMAT_VERSION);
        f.floor = Lsn(20);
        let mut b = segment_v2(1..=20, 64 << 10);
        let at = offset_of(&b, &f, 20);
        b[at + 36] ^= 1;
        assert!(matches!(scan_records(&b, &f).stop, Stop::Corrupt { .. }));
        // A zeroed tail would read as a clean end.
        let mut b = segment_v2(1..=20, 64 << 10);
        b[at..].fill(0);
        assert!(matches!(scan_records(&b, &f).stop, Stop::Corrupt { .. }));
        // So would a log whose last records sit in a file that was lost: the floor check at the
        // end of the log refuses it.
        let b = segment_v2(1..=19, 64 << 10);
        let mut s = scan_records(&b, &facts(1, None, FORMAT_VERSION));
        assert_eq!(s.stop, Stop::Clean);
        check_floor(&mut s, Lsn(20));
        assert!(matches!(s.stop, Stop::Corrupt { .. }));
    }

    #[test]
    fn version_1_keeps_the_window_rule() {
        let f = facts(1, None, LEGACY_FORMAT_VERSION);
        let mut b = segment_v1(1..=2000, 256 << 10);
        b[SEGMENT_HEADER_BYTES + 40] ^= 1;
        let s = scan_records(&b, &f);
        assert!(matches!(s.stop, Stop::Corrupt { .. }), "{:?}", s.stop);
        assert_eq!(s.next_lsn, Lsn(2));
        let mut b = segment_v1(1..=2000, 256 << 10);
        let end = scan_records(&b, &f).end as usize;
        b[end - 45 + 36] ^= 1;
        assert!(matches!(scan_records(&b, &f).stop, Stop::Torn { .. }));
    }

    #[test]
    fn stale_frames_of_a_reused_file_end_the_segment_cleanly() {
        let f = facts(500, None, FORMAT_VERSION);
        let old = segment_v2(1..=100, 64 << 10);
        let mut b = old.clone();
        let new = segment_v2(500..=510, 64 << 10);
        let new_end = scan_records(&new, &f).end as usize;
        b[..new_end].copy_from_slice(&new[..new_end]);
        let s = scan_records(&b, &f);
        assert_eq!(s.next_lsn, Lsn(511));
        assert!(!matches!(s.stop, Stop::Corrupt { .. }), "{:?}", s.stop);
    }

    #[test]
    fn sealed_segment_short_of_its_successor_is_corrupt() {
        let b = segment_v2(1..=10, 64 << 10);
        let s = scan_records(&b, &facts(1, Some(12), FORMAT_VERSION));
        assert!(matches!(s.stop, Stop::Corrupt { .. }));
    }

    #[test]
    fn a_marker_in_a_version_1_segment_is_damage() {
        let f = facts(1, None, LEGACY_FORMAT_VERSION);
        let b = segment_v2(1..=10, 64 << 10);
        let s = scan_records(&b, &f);
        assert_eq!(s.next_lsn, Lsn(2));
        assert!(!matches!(s.stop, Stop::Clean));
    }
}
