//! The 32-byte layout `logship.meta` and `logship.durable` share:
//!
//! ```text
//! offset size field
//!      0    8 magic               the file's own
//!      8    4 format_version      u32 LE
//!     12    4 reserved            must be 0
//!     16    8 value               u64 LE, the file's one field
//!     24    4 reserved            must be 0
//!     28    4 crc                 u32 LE, CRC-32 of bytes 0..28
//! ```

use super::header::HeaderError;

/// The files' size.
pub const SMALL_FILE_BYTES: usize = 32;

/// Encodes a small file.
pub(super) fn encode(magic: &[u8; 8], version: u32, value: u64) -> [u8; SMALL_FILE_BYTES] {
    let mut b = [0u8; SMALL_FILE_BYTES];
    b[0..8].copy_from_slice(magic);
    b[8..12].copy_from_slice(&version.to_le_bytes());
    b[16..24].copy_from_slice(&value.to_le_bytes());
    let crc = crc32fast::hash(&b[0..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes and checks a small file whose version must be one of `versions`; returns the
/// version and the value. `name` names the file in errors.
pub(super) fn decode(
    b: &[u8],
    magic: &[u8; 8],
    versions: &[u32],
    name: &str,
) -> Result<(u32, u64), HeaderError> {
    if b.len() < SMALL_FILE_BYTES {
        return Err(HeaderError::Truncated(b.len()));
    }
    if b[0..8] != magic[..] {
        return Err(HeaderError::Magic);
    }
    let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if !versions.contains(&version) {
        return Err(HeaderError::Version(version));
    }
    let stored = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
    let crc = crc32fast::hash(&b[0..28]);
    if stored != crc {
        return Err(HeaderError::Invalid(format!(
            "{name} checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"
        )));
    }
    if b[12..16].iter().chain(&b[24..28]).any(|&x| x != 0) {
        return Err(HeaderError::Invalid(format!(
            "{name} reserved bytes are not zero"
        )));
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[16..24]);
    Ok((version, u64::from_le_bytes(v)))
}
