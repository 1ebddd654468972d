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
use super::small::{self, SMALL_FILE_BYTES};
use super::{FORMAT_VERSION, LEGACY_FORMAT_VERSION};

/// The marker's file name.
pub const META_FILE: &str = "logship.meta";
/// Its magic.
pub const META_MAGIC: [u8; 8] = *b"LSHIPLOG";
/// Its size.
pub const META_BYTES: usize = SMALL_FILE_BYTES;

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
        small::encode(&META_MAGIC, self.format_version, self.created_unix_nanos)
    }

    /// Decodes and checks the marker.
    pub fn decode(b: &[u8]) -> Result<LogMeta, HeaderError> {
        let versions = [FORMAT_VERSION, LEGACY_FORMAT_VERSION];
        let (format_version, created_unix_nanos) =
            small::decode(b, &META_MAGIC, &versions, "logship.meta")?;
        Ok(LogMeta {
            format_version,
            created_unix_nanos,
        })
    }
}
