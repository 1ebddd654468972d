//! The engine's log as the replica's storage ([`ReplicaLog`]): what production carries out the
//! replica's log actions on. The simulator's model log implements the same trait.

use bytes::Bytes;
use logship_engine::{Chunk, Epoch, Error, Log, Lsn};

use crate::vocab::{ReplicaLog, StorageError};

fn storage_error(e: Error) -> StorageError {
    match e {
        Error::Purged { first, .. } => StorageError::Purged { first },
        e @ (Error::Poisoned { .. } | Error::Io { .. } | Error::Closed) => {
            StorageError::Failed(e.to_string())
        }
        e => StorageError::Refused(e.to_string()),
    }
}

impl ReplicaLog for Log {
    fn first_lsn(&self) -> Lsn {
        Log::first_lsn(self)
    }

    fn last_lsn(&self) -> Lsn {
        Log::last_lsn(self)
    }

    fn durable_lsn(&self) -> Lsn {
        Log::durable_lsn(self)
    }

    /// Records are written in epoch 0 until epochs are assigned (failover); any other epoch
    /// is refused rather than written wrong.
    fn append(&self, epoch: Epoch, payload: Bytes) -> Result<Lsn, StorageError> {
        if epoch != Epoch(0) {
            let m = format!("this log writes epoch 0 only, not {}", epoch.0);
            return Err(StorageError::Refused(m));
        }
        Log::append(self, payload)
            .map(|a| a.lsn())
            .map_err(storage_error)
    }

    fn append_records(&self, records: Bytes) -> Result<Lsn, StorageError> {
        self.append_replicated(records)
            .map(|b| b.last_lsn())
            .map_err(storage_error)
    }

    fn sync(&self) -> Result<Lsn, StorageError> {
        Log::sync(self).map_err(storage_error)
    }

    fn truncate_after(&self, lsn: Lsn) -> Result<(), StorageError> {
        Log::truncate_after(self, lsn).map_err(storage_error)
    }

    fn read_chunk(
        &self,
        from: Lsn,
        max_bytes: usize,
        unsynced: bool,
    ) -> Result<Option<Chunk>, StorageError> {
        let reader = if unsynced {
            self.read_from_unsynced(from)
        } else {
            self.read_from(from)
        };
        let mut reader = reader.map_err(storage_error)?;
        reader
            .next_chunk(max_bytes)
            .transpose()
            .map_err(storage_error)
    }

    fn record_meta(&self, lsn: Lsn) -> Result<Option<(u32, Epoch)>, StorageError> {
        if lsn == Lsn::ZERO || lsn < Log::first_lsn(self) {
            return Ok(None);
        }
        let mut r = self.read_from_unsynced(lsn).map_err(storage_error)?;
        let record = r.next().transpose().map_err(storage_error)?;
        Ok(record
            .filter(|rec| rec.lsn == lsn)
            .map(|rec| (rec.crc, rec.epoch)))
    }
}
