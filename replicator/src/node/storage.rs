//! The engine's log as the replica's storage ([`ReplicaLog`]): what production carries out the
//! replica's log actions on. The simulator's model log implements the same trait.

use bytes::Bytes;
use logship_engine::{Chunk, Epoch, Error, Log, Lsn};

use crate::vocab::{ReplicaLog, StorageError};

fn storage_error(e: Error) -> StorageError {
    match e {
        Error::Purged { first, .. } => StorageError::Purged { first },
        Error::StaleEpoch { current, requested } => StorageError::Refused(format!(
            "refusing to write in epoch {requested}: the log already writes in epoch {current}"
        )),
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

    /// Writes the record in `epoch`, which first becomes the log's epoch if it is newer; an
    /// epoch older than the log's is refused (a stale primary must not write after a newer
    /// epoch began). Check and append are one step in the log, so no epoch change slips
    /// between them.
    fn append(&self, epoch: Epoch, payload: Bytes) -> Result<Lsn, StorageError> {
        Log::append_in_epoch(self, epoch, payload)
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

#[cfg(test)]
mod tests {
    use logship_engine::Options;

    use super::*;

    #[test]
    fn appends_write_in_their_epoch_and_refuse_an_older_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = Options {
            create_if_missing: true,
            ..Options::default()
        };
        let log = Log::open(dir.path(), options).expect("open");
        let append = |epoch, p: &'static [u8]| ReplicaLog::append(&log, Epoch(epoch), p.into());
        assert_eq!(append(0, b"a"), Ok(Lsn(1)));
        assert_eq!(append(2, b"b"), Ok(Lsn(2)));
        assert_eq!(log.epoch(), Epoch(2));
        assert!(matches!(append(1, b"c"), Err(StorageError::Refused(_))));
        assert_eq!(append(2, b"d"), Ok(Lsn(3)));
        ReplicaLog::sync(&log).expect("sync");
        let epochs: Vec<_> = (1..=3)
            .map(|l| log.record_meta(Lsn(l)).expect("read").map(|m| m.1 .0))
            .collect();
        assert_eq!(epochs, vec![Some(0), Some(2), Some(2)]);
    }
}
