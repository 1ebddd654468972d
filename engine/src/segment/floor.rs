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
use super::small::{self, SMALL_FILE_BYTES};
use super::FORMAT_VERSION;

/// The floor's file name.
pub const FLOOR_FILE: &str = "logship.durable";
/// Its magic.
pub const FLOOR_MAGIC: [u8; 8] = *b"LSHIPDUR";
/// Its size.
pub const FLOOR_BYTES: usize = SMALL_FILE_BYTES;

/// The decoded floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableFloor {
    /// Every record up to this LSN was durable when the floor was written.
    pub durable_lsn: Lsn,
}

impl DurableFloor {
    /// Encodes the floor.
    pub fn encode(&self) -> [u8; FLOOR_BYTES] {
        small::encode(&FLOOR_MAGIC, FORMAT_VERSION, self.durable_lsn.get())
    }

    /// Decodes and checks the floor.
    pub fn decode(b: &[u8]) -> Result<DurableFloor, HeaderError> {
        let (_, durable_lsn) = small::decode(b, &FLOOR_MAGIC, &[FORMAT_VERSION], "durable floor")?;
        Ok(DurableFloor {
            durable_lsn: Lsn(durable_lsn),
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
