//! [`Corruption`]: where and what a damage is that a crash cannot explain. Recovery, readers,
//! the scrubber and repair all describe damage with it, and it converts to and from
//! [`Error::Corruption`]. It only describes damage; finding and handling it is theirs.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::types::Lsn;

/// Damage a crash cannot explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// The file.
    pub segment: PathBuf,
    /// Byte offset of the bad record or header.
    pub offset: u64,
    /// The LSN expected there.
    pub lsn: Lsn,
    /// What was wrong.
    pub reason: String,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at offset {} (LSN {}): {}",
            self.segment.display(),
            self.offset,
            self.lsn,
            self.reason
        )
    }
}

impl From<Corruption> for Error {
    fn from(c: Corruption) -> Error {
        Error::Corruption {
            segment: c.segment,
            offset: c.offset,
            lsn: c.lsn,
            reason: c.reason,
        }
    }
}

impl TryFrom<Error> for Corruption {
    type Error = Error;
    fn try_from(e: Error) -> Result<Corruption> {
        match e {
            Error::Corruption {
                segment,
                offset,
                lsn,
                reason,
            } => Ok(Corruption {
                segment,
                offset,
                lsn,
                reason,
            }),
            other => Err(other),
        }
    }
}
