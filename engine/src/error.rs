//! The engine's error type. Variants carry what a caller branches on.

use std::io;
use std::path::PathBuf;

use crate::types::{Epoch, Lsn};

/// Errors returned by the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation that failed, for example `"open"` or `"fdatasync"`.
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The directory is not a logship log (missing, foreign files, no marker).
    #[error("{path} is not a logship log: {reason}")]
    NotALog {
        /// The directory.
        path: PathBuf,
        /// Why it is not accepted.
        reason: String,
    },
    /// A file carries a format version this build does not read.
    #[error("{path}: format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found on disk.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// Checksummed data failed its check, or the log's structure is inconsistent,
    /// somewhere a crash cannot explain.
    #[error("corruption in {segment} at offset {offset} (expected LSN {lsn}): {reason}")]
    Corruption {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the bad record or header within the file.
        offset: u64,
        /// The LSN that was expected at that offset.
        lsn: Lsn,
        /// What was wrong.
        reason: String,
    },
    /// An earlier write or fdatasync failed; the log accepts nothing until reopened.
    #[error("log is poisoned by an earlier I/O failure ({cause}); reopen it to recover from disk")]
    Poisoned {
        /// The failure that poisoned the log.
        cause: String,
    },
    /// The log was closed.
    #[error("log is closed")]
    Closed,
    /// Replicated records handed to [`crate::Log::append_replicated`] are not valid records.
    #[error("invalid replicated records at byte {offset}: {reason}")]
    InvalidRecords {
        /// Byte offset of the bad record in the input.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// Replicated records do not continue the log: their first LSN is not the next one.
    #[error("replicated records start at LSN {found}, the log continues at {expected}")]
    LsnMismatch {
        /// The LSN the log expects next.
        expected: Lsn,
        /// The first LSN offered.
        found: Lsn,
    },
    /// Another process (or another `Log` in this one) has the log open.
    #[error("{path} is in use by another process (it holds the lock on its logship.meta)")]
    Locked {
        /// The log directory.
        path: PathBuf,
    },
    /// A record exceeds the configured maximum size.
    #[error("record of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// The record's payload length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An option is out of bounds.
    #[error("invalid option {key}: {reason}")]
    InvalidOptions {
        /// The option's name.
        key: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// An LSN argument lies outside the log's range.
    #[error("LSN {lsn} is outside the log's range [{first}, {last}]")]
    LsnOutOfRange {
        /// The LSN asked for.
        lsn: Lsn,
        /// The first LSN the log holds.
        first: Lsn,
        /// The last LSN the log holds.
        last: Lsn,
    },
    /// The records asked for were purged by retention.
    #[error("LSN {lsn} was purged; the log now starts at {first}")]
    Purged {
        /// The LSN asked for.
        lsn: Lsn,
        /// The first LSN still held.
        first: Lsn,
    },
    /// An epoch older than the log's current one: the log never goes back to an older epoch
    /// ([`crate::Log::set_epoch`], [`crate::Log::append_in_epoch`]).
    #[error("epoch {requested} is older than the log's current epoch {current}")]
    StaleEpoch {
        /// The log's current epoch.
        current: Epoch,
        /// The epoch asked for.
        requested: Epoch,
    },
    /// The I/O backend asked for is not available on this host.
    #[error("I/O backend {backend} is unavailable: {reason}")]
    BackendUnavailable {
        /// The backend's name.
        backend: &'static str,
        /// Why the probe failed.
        reason: String,
    },
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the operation and path it came from.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True for errors that mean data on disk is damaged (as opposed to the OS refusing a call).
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }
}
