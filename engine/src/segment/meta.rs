//! The `logship.meta` marker file: 32 bytes that make a directory a logship log.
//!
//! ```text
//! offset size field
//!      0    8 magic               b"LSHIPLOG"
//!      8    4 format_version      u32 LE (2 for logs this build creates; 1 is still read)
//!     12    4 reserved            must be 0
//!     16    8 created_unix_nanos  u64 LE
//!     24    4 reserved            must be 0
//!     28    4 crc                 u32 LE, CRC-32 of bytes 0..28
//! ```

use super::header::HeaderError;
use super::{FORMAT_VERSION, LEGACY_FORMAT_VERSION};

/// The marker's file name.
pub const META_FILE: &str = "logship.meta";
/// Its magic.
pub const META_MAGIC: [u8; 8] = *b"LSHIPLOG";
/// Its size.
pub const META_BYTES: usize = 32;

/// The decoded marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogMeta {
    /// The format version the log was created with.
    pub format_version: u32,
    /// When the log was created, nanoseconds since the Unix epoch.
    pub created_unix_nanos: u64,
}

impl LogMeta {
    /// Encodes the marker.
    pub fn encode(&self) -> [u8; META_BYTES] {
        let mut b = [0u8; META_BYTES];
        b[0..8].copy_from_slice(&META_MAGIC);
        b[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        b[16..24].copy_from_slice(&self.created_unix_nanos.to_le_bytes());
        let crc = crc32fast::hash(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks the marker.
    pub fn decode(b: &[u8]) -> Result<LogMeta, HeaderError> {
        if b.len() < META_BYTES {
            return Err(HeaderError::Truncated(b.len()));
        }
        if b[0..8] != META_MAGIC {
            return Err(HeaderError::Magic);
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != FORMAT_VERSION && version != LEGACY_FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let stored = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
        let crc = crc32fast::hash(&b[0..28]);
        if stored != crc {
            return Err(HeaderError::Invalid(format!(
                "logship.meta checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"
            )));
        }
        if b[12..16].iter().chain(&b[24..28]).any(|&x| x != 0) {
            return Err(HeaderError::Invalid(
                "logship.meta reserved bytes are not zero".into(),
            ));
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[16..24]);
        Ok(LogMeta {
            format_version: version,
            created_unix_nanos: u64::from_le_bytes(t),
        })
    }
}
