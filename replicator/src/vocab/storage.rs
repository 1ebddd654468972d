//! The replica's view of storage: what an executor needs from a log to carry out a replica's
//! log actions. The engine's `Log` implements it for the node; the simulator's model log
//! implements it with crash semantics (unsynced writes lost or torn, failing syncs, silent
//! corruption).

use bytes::Bytes;
use logship_engine::{Chunk, Epoch, Lsn};

/// Why a log operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The records asked for were purged; the log starts at `first`.
    #[error("purged: the log starts at {first}")]
    Purged {
        /// First LSN held.
        first: Lsn,
    },
    /// The log failed (I/O error, failed sync) and accepts nothing until reopened.
    #[error("the log failed: {0}")]
    Failed(String),
    /// The log refused the operation (bad records, a cut below its durable floor, damage).
    #[error("{0}")]
    Refused(String),
}

/// A log as a replica's executor uses it. Appends return once the records are handed to the
/// log (not durable); durability is reported by `sync` or, for a log that syncs by itself,
/// through the executor's own completion path.
pub trait ReplicaLog {
    /// First LSN held (1 for a log that never purged).
    fn first_lsn(&self) -> Lsn;
    /// Last LSN written (0 for an empty log).
    fn last_lsn(&self) -> Lsn;
    /// Last LSN known durable.
    fn durable_lsn(&self) -> Lsn;
    /// Appends one new record in `epoch`; returns its LSN.
    ///
    /// # Errors
    /// [`StorageError::Failed`] once the log failed.
    fn append(&self, epoch: Epoch, payload: Bytes) -> Result<Lsn, StorageError>;
    /// Appends whole encoded records that continue the log (replication, take-back);
    /// returns the new last LSN.
    ///
    /// # Errors
    /// [`StorageError::Refused`] if they do not continue it or fail their CRC.
    fn append_records(&self, records: Bytes) -> Result<Lsn, StorageError>;
    /// Makes everything written durable; returns the durable LSN.
    ///
    /// # Errors
    /// [`StorageError::Failed`]: the sync failed, and the log with it.
    fn sync(&self) -> Result<Lsn, StorageError>;
    /// Removes every record after `lsn`.
    ///
    /// # Errors
    /// [`StorageError::Refused`] below the durable floor, [`StorageError::Failed`].
    fn truncate_after(&self, lsn: Lsn) -> Result<(), StorageError>;
    /// Whole records from `from` on, at most `max_bytes` (at least one record), written or
    /// durable as `unsynced` says; `None` past the end.
    ///
    /// # Errors
    /// [`StorageError::Purged`], or damage found while reading.
    fn read_chunk(
        &self,
        from: Lsn,
        max_bytes: usize,
        unsynced: bool,
    ) -> Result<Option<Chunk>, StorageError>;
    /// The CRC field and epoch of record `lsn`, if the log holds it.
    ///
    /// # Errors
    /// Damage found while reading.
    fn record_meta(&self, lsn: Lsn) -> Result<Option<(u32, Epoch)>, StorageError>;
}
