//! The record frame: the same bytes on disk and on the wire; and the write marker, the frame
//! the writer puts after each write (format version 2) to prove what was synced before it.
//!
//! ```text
//! offset size field
//!      0    4 payload_len  u32 LE, bytes of payload that follow the header
//!      4    4 crc32        u32 LE, CRC-32 (IEEE) of bytes 0..4, 8..32 and the payload
//!      8    8 lsn          u64 LE, dense record number, >= 1 (a marker: the LSN that follows it)
//!     16    8 epoch        u64 LE, leadership epoch (0 in logs written before failover)
//!     24    4 flags        u32 LE, bit 0 = marker (version 2); other bits must be 0
//!     28    4 reserved     u32 LE, must be 0
//!     32    n payload      a marker's payload is the 32-byte [`Marker`] body
//! ```
//! Decoding never panics on arbitrary bytes: every way a frame can be wrong is a [`DecodeError`].
//! [`decode`] accepts records only (a marker is [`DecodeError::Marker`]), so code that does not
//! know about markers can never take one for a record; [`decode_frame`] returns either.

use bytes::Bytes;

use crate::crc_shift;
use crate::types::{Epoch, Lsn};

/// Size of the record header in bytes.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Hard upper bound on one payload; options may set a lower one.
pub const MAX_PAYLOAD_BYTES: usize = 256 << 20;
/// Flag bit of a write marker (format version 2).
pub const FLAG_MARKER: u32 = 1;
/// Flags understood by this version.
const KNOWN_FLAGS: u32 = FLAG_MARKER;
/// Payload bytes of a marker.
pub const MARKER_PAYLOAD_BYTES: usize = 32;
/// Encoded size of a marker: header and payload.
pub const MARKER_BYTES: usize = RECORD_HEADER_BYTES + MARKER_PAYLOAD_BYTES;

const _: () = assert!(MAX_PAYLOAD_BYTES <= u32::MAX as usize);

/// The fixed-size part of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload length in bytes.
    pub payload_len: u32,
    /// CRC-32 of the header (less this field) and the payload.
    pub crc: u32,
    /// The record's LSN.
    pub lsn: Lsn,
    /// The epoch the record was written in.
    pub epoch: Epoch,
    /// Flag bits (0 in version 1).
    pub flags: u32,
}

/// Why bytes are not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header, or than the header says the record needs.
    #[error("incomplete record: {needed} bytes needed, {available} available")]
    Incomplete {
        /// Bytes the record needs in total.
        needed: usize,
        /// Bytes that were available.
        available: usize,
    },
    /// The length field exceeds the maximum payload size.
    #[error("payload length {len} exceeds the maximum {max}")]
    TooLong {
        /// Length read from the header.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Reserved bits or unknown flags are set.
    #[error("reserved bits set (flags {flags:#x}, reserved {reserved:#x})")]
    Reserved {
        /// The flags field.
        flags: u32,
        /// The reserved field.
        reserved: u32,
    },
    /// LSN 0 is never written.
    #[error("LSN 0 is not a valid record number")]
    ZeroLsn,
    /// The checksum does not match.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// A valid write marker where a record was asked for ([`decode`]).
    #[error("a write marker, not a record")]
    Marker,
    /// A frame flagged as a marker whose body is not a marker's.
    #[error("malformed write marker: {0}")]
    BadMarker(&'static str),
}

/// What a marker ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MarkerKind {
    /// The end of a group-commit write: follows the records it wrote.
    Write = 1,
    /// Written when the writer falls idle after a sync, without a sync of its own: proves the
    /// last write was synced.
    Idle = 2,
}

/// A write marker (format version 2): what the writer knew to be durable when it submitted the
/// write this marker ends. Recovery uses it to prove that bytes before `synced_offset` were on
/// stable storage, so damage there is corruption and never a torn write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// The LSN of the record that follows (the write's last LSN + 1).
    pub next_lsn: Lsn,
    /// The epoch field (the epoch of the log's last record).
    pub epoch: Epoch,
    /// Base LSN of the segment the marker was written into (tells it from a reused file's).
    pub segment_base: Lsn,
    /// Bytes `0..synced_offset` of this segment were synced when the write was submitted.
    pub synced_offset: u64,
    /// The log's durable LSN when the write was submitted.
    pub durable_lsn: Lsn,
    /// Records in the write this marker ends (0 for an idle marker).
    pub records: u32,
    /// What the marker ends.
    pub kind: MarkerKind,
}

/// One frame: a record or a marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A record.
    Record(RecordRef<'a>),
    /// A write marker.
    Marker(Marker),
}

impl Frame<'_> {
    /// Total encoded size.
    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::Record(r) => r.encoded_len(),
            Frame::Marker(_) => MARKER_BYTES,
        }
    }

    /// The LSN field: a record's LSN, or the LSN a marker says follows it.
    pub fn lsn(&self) -> Lsn {
        match self {
            Frame::Record(r) => r.header.lsn,
            Frame::Marker(m) => m.next_lsn,
        }
    }
}

/// A decoded record borrowing its payload from the buffer it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The header.
    pub header: RecordHeader,
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// A decoded record owning its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The epoch it was written in.
    pub epoch: Epoch,
    /// Its stored checksum.
    pub crc: u32,
    /// The payload.
    pub payload: Bytes,
}

impl RecordRef<'_> {
    /// Total encoded size: header plus payload.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload.len()
    }

    /// Copies the payload into an owned [`Record`].
    pub fn to_owned_record(&self) -> Record {
        Record {
            lsn: self.header.lsn,
            epoch: self.header.epoch,
            crc: self.header.crc,
            payload: Bytes::copy_from_slice(self.payload),
        }
    }
}

/// Total encoded size of a record with `payload_len` bytes of payload.
pub const fn encoded_len(payload_len: usize) -> usize {
    RECORD_HEADER_BYTES + payload_len
}

/// A payload's CRC-32 and the factor that joins a header's CRC to it, computed before the LSN
/// is known: appenders checksum in parallel, outside the queue lock, and [`encode_header`]
/// under it costs the same few dozen operations whatever the payload's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadCrc {
    len: usize,
    crc: u32,
    /// `x^(8·len) mod P` (`crc_shift::shift_for`).
    shift: u32,
}

/// The CRC of a payload alone, to build its header with [`encode_header`].
pub fn payload_crc(payload: &[u8]) -> PayloadCrc {
    PayloadCrc {
        len: payload.len(),
        crc: crc32fast::hash(payload),
        shift: crc_shift::shift_for(payload.len()),
    }
}

/// Builds the 32-byte header for the payload whose CRC is `payload` (from [`payload_crc`]).
pub fn encode_header(lsn: Lsn, epoch: Epoch, payload: &PayloadCrc) -> [u8; RECORD_HEADER_BYTES] {
    assert!(lsn.get() >= 1, "LSN 0 is never written");
    let payload_len = payload.len;
    assert!(
        payload_len <= MAX_PAYLOAD_BYTES,
        "payload of {payload_len} bytes exceeds {MAX_PAYLOAD_BYTES}"
    );
    let mut hdr = [0u8; RECORD_HEADER_BYTES];
    hdr[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    hdr[8..16].copy_from_slice(&lsn.get().to_le_bytes());
    hdr[16..24].copy_from_slice(&epoch.get().to_le_bytes());
    // flags and reserved stay 0.
    let mut h = crc32fast::Hasher::new();
    h.update(&hdr[0..4]);
    h.update(&hdr[8..RECORD_HEADER_BYTES]);
    let crc = crc_shift::shift(h.finalize(), payload.shift, payload.crc);
    hdr[4..8].copy_from_slice(&crc.to_le_bytes());
    hdr
}

/// Encodes one record, appending it to `out`.
pub fn encode_into(out: &mut Vec<u8>, lsn: Lsn, epoch: Epoch, payload: &[u8]) {
    let hdr = encode_header(lsn, epoch, &payload_crc(payload));
    out.extend_from_slice(&hdr);
    out.extend_from_slice(payload);
    debug_assert!(
        decode(&out[out.len() - encoded_len(payload.len())..]).is_ok(),
        "record {lsn} does not decode after encoding"
    );
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Parses and checks the header fields that need no payload. Does not verify the CRC.
pub fn decode_header(buf: &[u8]) -> Result<RecordHeader, DecodeError> {
    if buf.len() < RECORD_HEADER_BYTES {
        return Err(DecodeError::Incomplete {
            needed: RECORD_HEADER_BYTES,
            available: buf.len(),
        });
    }
    let header = RecordHeader {
        payload_len: read_u32(buf, 0),
        crc: read_u32(buf, 4),
        lsn: Lsn(read_u64(buf, 8)),
        epoch: Epoch(read_u64(buf, 16)),
        flags: read_u32(buf, 24),
    };
    let reserved = read_u32(buf, 28);
    if header.payload_len as usize > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLong {
            len: header.payload_len as usize,
            max: MAX_PAYLOAD_BYTES,
        });
    }
    if header.flags & !KNOWN_FLAGS != 0 || reserved != 0 {
        return Err(DecodeError::Reserved {
            flags: header.flags,
            reserved,
        });
    }
    if header.lsn == Lsn::ZERO {
        return Err(DecodeError::ZeroLsn);
    }
    Ok(header)
}

/// Decodes one record at the start of `buf`, verifying its checksum. A valid marker is
/// [`DecodeError::Marker`].
pub fn decode(buf: &[u8]) -> Result<RecordRef<'_>, DecodeError> {
    match decode_frame(buf)? {
        Frame::Record(r) => Ok(r),
        Frame::Marker(_) => Err(DecodeError::Marker),
    }
}

/// Decodes one frame (a record or a marker) at the start of `buf`, verifying its checksum.
pub fn decode_frame(buf: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let r = decode_checked(buf)?;
    if r.header.flags & FLAG_MARKER == 0 {
        return Ok(Frame::Record(r));
    }
    decode_marker(&r).map(Frame::Marker)
}

fn decode_marker(r: &RecordRef<'_>) -> Result<Marker, DecodeError> {
    let p = r.payload;
    if p.len() != MARKER_PAYLOAD_BYTES {
        return Err(DecodeError::BadMarker("its payload is not 32 bytes"));
    }
    let kind = match read_u32(p, 28) {
        1 => MarkerKind::Write,
        2 => MarkerKind::Idle,
        _ => return Err(DecodeError::BadMarker("unknown kind")),
    };
    let segment_base = Lsn(read_u64(p, 0));
    if segment_base == Lsn::ZERO || segment_base > r.header.lsn {
        return Err(DecodeError::BadMarker(
            "segment base outside the LSN it precedes",
        ));
    }
    Ok(Marker {
        next_lsn: r.header.lsn,
        epoch: r.header.epoch,
        segment_base,
        synced_offset: read_u64(p, 8),
        durable_lsn: Lsn(read_u64(p, 16)),
        records: read_u32(p, 24),
        kind,
    })
}

/// Encodes a marker.
pub fn encode_marker(m: &Marker) -> [u8; MARKER_BYTES] {
    assert!(
        m.segment_base >= Lsn::FIRST && m.segment_base <= m.next_lsn,
        "marker for {} in segment {}",
        m.next_lsn,
        m.segment_base
    );
    let mut b = [0u8; MARKER_BYTES];
    b[0..4].copy_from_slice(&(MARKER_PAYLOAD_BYTES as u32).to_le_bytes());
    b[8..16].copy_from_slice(&m.next_lsn.get().to_le_bytes());
    b[16..24].copy_from_slice(&m.epoch.get().to_le_bytes());
    b[24..28].copy_from_slice(&FLAG_MARKER.to_le_bytes());
    let p = &mut b[RECORD_HEADER_BYTES..];
    p[0..8].copy_from_slice(&m.segment_base.get().to_le_bytes());
    p[8..16].copy_from_slice(&m.synced_offset.to_le_bytes());
    p[16..24].copy_from_slice(&m.durable_lsn.get().to_le_bytes());
    p[24..28].copy_from_slice(&m.records.to_le_bytes());
    p[28..32].copy_from_slice(&(m.kind as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&b[0..4]);
    h.update(&b[8..]);
    let crc = h.finalize();
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(decode_frame(&b), Ok(Frame::Marker(*m)), "marker round trip");
    b
}

/// Decodes a frame and checks its CRC, whatever its flags say.
fn decode_checked(buf: &[u8]) -> Result<RecordRef<'_>, DecodeError> {
    let header = decode_header(buf)?;
    let needed = encoded_len(header.payload_len as usize);
    if buf.len() < needed {
        return Err(DecodeError::Incomplete {
            needed,
            available: buf.len(),
        });
    }
    let payload = &buf[RECORD_HEADER_BYTES..needed];
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[0..4]);
    h.update(&buf[8..RECORD_HEADER_BYTES]);
    h.update(payload);
    let computed = h.finalize();
    if computed != header.crc {
        return Err(DecodeError::Checksum {
            stored: header.crc,
            computed,
        });
    }
    Ok(RecordRef { header, payload })
}

/// Walks a run of whole encoded records laid end to end (a replicated batch, a catch-up chunk,
/// a read response): yields each record with its byte offset, CRC checked, or the first
/// [`DecodeError`] with its offset, after which it ends. Write markers between the records (a
/// chunk read from a segment carries the markers of the log it came from) are checked and
/// skipped: they belong to the log that wrote them, not to the records.
pub fn run(buf: &[u8]) -> Run<'_> {
    Run { buf, offset: 0 }
}

/// Iterator of [`run`].
#[derive(Debug)]
pub struct Run<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Run<'a> {
    type Item = Result<(usize, RecordRef<'a>), (usize, DecodeError)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let at = self.offset;
            if at >= self.buf.len() {
                return None;
            }
            match decode_frame(&self.buf[at..]) {
                Ok(Frame::Record(r)) => {
                    self.offset = at + r.encoded_len();
                    return Some(Ok((at, r)));
                }
                Ok(Frame::Marker(_)) => self.offset = at + MARKER_BYTES,
                Err(e) => {
                    self.offset = self.buf.len();
                    return Some(Err((at, e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_run_yields_each_record_then_stops_at_the_first_bad_one() {
        let mut buf = Vec::new();
        for (i, p) in [&b"a"[..], b"bc", b""].iter().enumerate() {
            encode_into(&mut buf, Lsn(i as u64 + 1), Epoch(0), p);
        }
        let good = buf.len();
        buf.extend_from_slice(&[0xff; 40]);
        let items: Vec<_> = run(&buf).collect();
        assert_eq!(items.len(), 4);
        let offsets: Vec<usize> = items[..3].iter().map(|r| r.as_ref().unwrap().0).collect();
        assert_eq!(offsets, vec![0, 33, 67]);
        assert!(matches!(items[3], Err((at, _)) if at == good));
        assert_eq!(run(&buf[..good]).count(), 3);
        assert_eq!(run(&[]).count(), 0);
    }

    #[test]
    fn round_trip_known_record() {
        let mut buf = Vec::new();
        encode_into(&mut buf, Lsn(7), Epoch(0), b"hello");
        assert_eq!(buf.len(), 37);
        let rec = decode(&buf).expect("decodes");
        assert_eq!(rec.header.lsn, Lsn(7));
        assert_eq!(rec.payload, b"hello");
    }

    fn marker() -> Marker {
        Marker {
            next_lsn: Lsn(8),
            epoch: Epoch(0),
            segment_base: Lsn(1),
            synced_offset: 4096,
            durable_lsn: Lsn(5),
            records: 2,
            kind: MarkerKind::Write,
        }
    }

    #[test]
    fn a_marker_round_trips_and_is_never_a_record() {
        let b = encode_marker(&marker());
        assert_eq!(decode_frame(&b), Ok(Frame::Marker(marker())));
        assert_eq!(decode(&b), Err(DecodeError::Marker));
        for bit in 0..MARKER_BYTES * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_frame(&c).is_err(), "bit {bit} flip accepted");
        }
    }

    #[test]
    fn a_run_skips_markers_between_records() {
        let mut buf = Vec::new();
        encode_into(&mut buf, Lsn(6), Epoch(0), b"a");
        encode_into(&mut buf, Lsn(7), Epoch(0), b"b");
        buf.extend_from_slice(&encode_marker(&marker()));
        encode_into(&mut buf, Lsn(8), Epoch(0), b"c");
        let lsns: Vec<u64> = run(&buf).map(|r| r.unwrap().1.header.lsn.get()).collect();
        assert_eq!(lsns, vec![6, 7, 8]);
    }

    #[test]
    fn zeroed_header_is_not_a_record() {
        let buf = [0u8; 64];
        assert_eq!(decode(&buf), Err(DecodeError::ZeroLsn));
    }

    proptest! {
        #[test]
        fn round_trips(lsn in 1u64.., epoch: u64, payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut buf = Vec::new();
            encode_into(&mut buf, Lsn(lsn), Epoch(epoch), &payload);
            let rec = decode(&buf).unwrap();
            prop_assert_eq!(rec.header.lsn, Lsn(lsn));
            prop_assert_eq!(rec.header.epoch, Epoch(epoch));
            prop_assert_eq!(rec.payload, &payload[..]);
        }

        #[test]
        fn any_single_bit_flip_is_rejected(payload in proptest::collection::vec(any::<u8>(), 0..256), bit in 0usize..8 * 288) {
            let mut buf = Vec::new();
            encode_into(&mut buf, Lsn(3), Epoch(1), &payload);
            let bit = bit % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&buf).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&buf);
        }
    }
}
