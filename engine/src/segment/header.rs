//! The 64-byte segment header.
//!
//! ```text
//! offset size field
//!      0    8 magic               b"LSHIPSEG"
//!      8    4 format_version      u32 LE (2; 1 is still read)
//!     12    4 header_bytes        u32 LE (64)
//!     16    8 base_lsn            u64 LE, first LSN in this segment
//!     24    8 created_unix_nanos  u64 LE
//!     32    8 segment_size_bytes  u64 LE, capacity the writer used
//!     40    8 max_unsynced_bytes  u64 LE, most bytes the writer ever had written but not synced
//!     48    8 epoch               u64 LE, epoch at creation (0 until failover exists)
//!     56    4 reserved            must be 0
//!     60    4 header_crc          u32 LE, CRC-32 of bytes 0..60
//! ```

use crate::types::{Epoch, Lsn};

use super::{FORMAT_VERSION, LEGACY_FORMAT_VERSION};

/// Bytes before the first record.
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// First eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LSHIPSEG";

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The format the segment's records are in: [`FORMAT_VERSION`] for every segment this
    /// build creates, [`LEGACY_FORMAT_VERSION`] for older ones (no write markers).
    pub format_version: u32,
    /// First LSN in the segment.
    pub base_lsn: Lsn,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_nanos: u64,
    /// Capacity the writer used for this segment.
    pub segment_size_bytes: u64,
    /// The writer's bound on written-but-unsynced bytes: how far past a torn write recovery
    /// zeroes, and (in version 1, which has no markers) the distance within which damage is
    /// taken for a torn write.
    pub max_unsynced_bytes: u64,
    /// Epoch at creation.
    pub epoch: Epoch,
}

/// Why a header was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than 64 bytes.
    Truncated(usize),
    /// Wrong magic: not a segment.
    Magic,
    /// A version this build does not read.
    Version(u32),
    /// Checksum or field check failed.
    Invalid(String),
}

impl SegmentHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        b[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.base_lsn.get().to_le_bytes());
        b[24..32].copy_from_slice(&self.created_unix_nanos.to_le_bytes());
        b[32..40].copy_from_slice(&self.segment_size_bytes.to_le_bytes());
        b[40..48].copy_from_slice(&self.max_unsynced_bytes.to_le_bytes());
        b[48..56].copy_from_slice(&self.epoch.get().to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if b.len() < SEGMENT_HEADER_BYTES {
            return Err(HeaderError::Truncated(b.len()));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Magic);
        }
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(x)
        };
        let version = u32_at(8);
        if version != FORMAT_VERSION && version != LEGACY_FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let crc = crc32fast::hash(&b[0..60]);
        if crc != u32_at(60) {
            return Err(HeaderError::Invalid(format!(
                "header checksum mismatch: stored {:#010x}, computed {crc:#010x}",
                u32_at(60)
            )));
        }
        if u32_at(12) as usize != SEGMENT_HEADER_BYTES || u32_at(56) != 0 {
            return Err(HeaderError::Invalid(
                "bad header length or reserved bits".into(),
            ));
        }
        let header = SegmentHeader {
            format_version: version,
            base_lsn: Lsn(u64_at(16)),
            created_unix_nanos: u64_at(24),
            segment_size_bytes: u64_at(32),
            max_unsynced_bytes: u64_at(40),
            epoch: Epoch(u64_at(48)),
        };
        if header.base_lsn == Lsn::ZERO {
            return Err(HeaderError::Invalid("base LSN 0".into()));
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_reject_flips() {
        let h = SegmentHeader {
            format_version: FORMAT_VERSION,
            base_lsn: Lsn(42),
            created_unix_nanos: 7,
            segment_size_bytes: 1 << 20,
            max_unsynced_bytes: 8 << 20,
            epoch: Epoch(0),
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for bit in 0..SEGMENT_HEADER_BYTES * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(
                SegmentHeader::decode(&c).is_err(),
                "bit {bit} flip accepted"
            );
        }
        assert_eq!(
            SegmentHeader::decode(&b[..10]),
            Err(HeaderError::Truncated(10))
        );
    }
}
