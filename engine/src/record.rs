//! The record frame: the same bytes on disk and (in a later issue) on the wire.
//!
//! ```text
//! offset size field
//!      0    4 payload_len  u32 LE, bytes of payload that follow the header
//!      4    4 crc32        u32 LE, CRC-32 (IEEE) of bytes 0..4, 8..32 and the payload
//!      8    8 lsn          u64 LE, dense record number, >= 1
//!     16    8 epoch        u64 LE, leadership epoch (0 until failover exists)
//!     24    4 flags        u32 LE, no flag is defined in version 1: must be 0
//!     28    4 reserved     u32 LE, must be 0
//!     32    n payload
//! ```
//! Decoding never panics on arbitrary bytes: every way a frame can be wrong is a [`DecodeError`].

use bytes::Bytes;

use crate::types::{Epoch, Lsn};

/// Size of the record header in bytes.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Hard upper bound on one payload; options may set a lower one.
pub const MAX_PAYLOAD_BYTES: usize = 256 << 20;
/// Flags understood by this version (none).
const KNOWN_FLAGS: u32 = 0;

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

/// CRC-32 of a payload alone; combine it into a header with [`encode_header`].
pub fn payload_crc(payload: &[u8]) -> crc32fast::Hasher {
    let mut h = crc32fast::Hasher::new();
    h.update(payload);
    h
}

/// Builds the 32-byte header for a payload whose CRC state is `payload_hasher`
/// (from [`payload_crc`]). Computing the payload CRC before the LSN is known lets
/// appenders checksum in parallel and only combine under the queue lock.
pub fn encode_header(
    lsn: Lsn,
    epoch: Epoch,
    payload_len: usize,
    payload_hasher: &crc32fast::Hasher,
) -> [u8; RECORD_HEADER_BYTES] {
    assert!(lsn.get() >= 1, "LSN 0 is never written");
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
    h.combine(payload_hasher);
    let crc = h.finalize();
    hdr[4..8].copy_from_slice(&crc.to_le_bytes());
    hdr
}

/// Encodes one record, appending it to `out`.
pub fn encode_into(out: &mut Vec<u8>, lsn: Lsn, epoch: Epoch, payload: &[u8]) {
    let hdr = encode_header(lsn, epoch, payload.len(), &payload_crc(payload));
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

/// Decodes one record at the start of `buf`, verifying its checksum.
pub fn decode(buf: &[u8]) -> Result<RecordRef<'_>, DecodeError> {
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
/// [`DecodeError`] with its offset, after which it ends.
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
        if self.offset >= self.buf.len() {
            return None;
        }
        let at = self.offset;
        match decode(&self.buf[at..]) {
            Ok(r) => {
                self.offset = at + RECORD_HEADER_BYTES + r.payload.len();
                Some(Ok((at, r)))
            }
            Err(e) => {
                self.offset = self.buf.len();
                Some(Err((at, e)))
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
