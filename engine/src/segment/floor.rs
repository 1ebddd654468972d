//! The `logship.durable` file: the durable floor, written at a clean close (format version 2).
//!
//! ```text
//! offset size field
//!      0    8 magic               b"LSHIPDUR"
//!      8    4 format_version      u32 LE (2)
//!     12    4 reserved            must be 0
//!     16    8 durable_lsn         u64 LE, every record up to this LSN was durable
//!     24    4 reserved            must be 0
//!     28    4 crc                 u32 LE, CRC-32 of bytes 0..28
//! ```
//!
//! Markers prove every write but the last one or two; the floor proves those too, and it is the
//! only thing that tells a zeroed or lost end of the log from a clean one. It is a lower bound:
//! records above it may exist, records at or below it must. Truncation below it rewrites it
//! first, so it never vouches for a record that was removed on purpose.

use crate::types::Lsn;

use super::header::HeaderError;
use super::FORMAT_VERSION;

/// The floor's file name.
pub const FLOOR_FILE: &str = "logship.durable";
/// Its magic.
pub const FLOOR_MAGIC: [u8; 8] = *b"LSHIPDUR";
/// Its size.
pub const FLOOR_BYTES: usize = 32;

/// The decoded floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableFloor {
    /// Every record up to this LSN was durable when the floor was written.
    pub durable_lsn: Lsn,
}

impl DurableFloor {
    /// Encodes the floor.
    pub fn encode(&self) -> [u8; FLOOR_BYTES] {
        let mut b = [0u8; FLOOR_BYTES];
        b[0..8].copy_from_slice(&FLOOR_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.durable_lsn.get().to_le_bytes());
        let crc = crc32fast::hash(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks the floor.
    pub fn decode(b: &[u8]) -> Result<DurableFloor, HeaderError> {
        if b.len() < FLOOR_BYTES {
            return Err(HeaderError::Truncated(b.len()));
        }
        if b[0..8] != FLOOR_MAGIC {
            return Err(HeaderError::Magic);
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let stored = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
        let crc = crc32fast::hash(&b[0..28]);
        if stored != crc {
            return Err(HeaderError::Invalid(format!(
                "durable floor checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"
            )));
        }
        if b[12..16].iter().chain(&b[24..28]).any(|&x| x != 0) {
            return Err(HeaderError::Invalid(
                "durable floor reserved bytes are not zero".into(),
            ));
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[16..24]);
        Ok(DurableFloor {
            durable_lsn: Lsn(u64::from_le_bytes(t)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_every_flipped_bit() {
        let f = DurableFloor {
            durable_lsn: Lsn(20_000),
        };
        let b = f.encode();
        assert_eq!(DurableFloor::decode(&b), Ok(f));
        for bit in 0..FLOOR_BYTES * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(DurableFloor::decode(&c).is_err(), "bit {bit} flip accepted");
        }
    }
}
