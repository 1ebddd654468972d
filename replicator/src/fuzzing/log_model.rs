//! A log as the harness models it, for both ends: what the follower's log holds after the
//! follower's appends and truncations, and what the log's reads and CRC lookups return (the
//! primary's catch-up reads, either side's answers to a peer's fetch).

use bytes::Bytes;
use logship_engine::record::{self, RECORD_HEADER_BYTES};
use logship_engine::{Chunk, Epoch, Lsn};

use crate::fetch::{FetchRequest, FETCH_CHUNK_BYTES};
use crate::vocab::ReadError;
use crate::vocab::Tail;

use super::common::{header_crc, header_epoch};

/// A log as the harness models it: whole encoded records, dense from LSN 1.
#[derive(Clone, Debug)]
pub(super) struct LogModel {
    /// First LSN held; records below were purged (they stay here to compare against).
    pub(super) first: Lsn,
    /// Encoded records; LSN `i + 1` at index `i`.
    pub(super) records: Vec<Vec<u8>>,
}

impl Default for LogModel {
    fn default() -> LogModel {
        LogModel {
            first: Lsn::FIRST,
            records: Vec::new(),
        }
    }
}

impl LogModel {
    pub(super) fn last(&self) -> Lsn {
        Lsn(self.records.len() as u64)
    }

    /// Appends a record whose payload is made from `salt`, the LSN and `len`.
    pub(super) fn push(&mut self, epoch: Epoch, salt: u8, len: usize) {
        let lsn = self.last().next();
        let payload: Vec<u8> = (0..len)
            .map(|i| salt ^ (lsn.0 as u8).wrapping_mul(31).wrapping_add(i as u8))
            .collect();
        let mut encoded = Vec::with_capacity(RECORD_HEADER_BYTES + len);
        record::encode_into(&mut encoded, lsn, epoch, &payload);
        self.records.push(encoded);
    }

    pub(super) fn record(&self, lsn: Lsn) -> Option<&[u8]> {
        let i = usize::try_from(lsn.0).ok()?.checked_sub(1)?;
        self.records.get(i).map(Vec::as_slice)
    }

    /// A record the log still holds (not purged).
    pub(super) fn held(&self, lsn: Lsn) -> Option<&[u8]> {
        if lsn < self.first {
            return None;
        }
        self.record(lsn)
    }

    pub(super) fn crc(&self, lsn: Lsn) -> Option<u32> {
        self.record(lsn).map(header_crc)
    }

    /// Records `first..=last`, back to back.
    pub(super) fn run(&self, first: Lsn, last: Lsn) -> Vec<u8> {
        assert!(
            last <= self.last(),
            "the harness asked for records past {}",
            self.last()
        );
        (first.0..=last.0)
            .filter_map(|l| self.record(Lsn(l)))
            .flatten()
            .copied()
            .collect()
    }

    /// What the log's `read_chunk` returns: whole records from `from` up to `end` (the last
    /// LSN written, or the durable one), at least one, else at most `max_bytes`.
    pub(super) fn chunk(
        &self,
        from: Lsn,
        max_bytes: usize,
        end: Lsn,
    ) -> Result<Option<Chunk>, ReadError> {
        if from < self.first {
            return Err(ReadError::Purged { first: self.first });
        }
        let Some(head) = self.record(from).filter(|_| from <= end) else {
            return Ok(None);
        };
        let (mut last, mut bytes) = (from, head.len());
        while let Some(r) = self.record(last.next()).filter(|_| last < end) {
            if bytes + r.len() > max_bytes {
                break;
            }
            bytes += r.len();
            last = last.next();
        }
        Ok(Some(Chunk {
            first: from,
            last,
            bytes: Bytes::from(self.run(from, last)),
        }))
    }

    /// What the node's `serve_fetch` reads for a peer's `request`: the CRC of the record before
    /// the range (when asked for, and held) and durable records from the range's start.
    pub(super) fn fetch_read(
        &self,
        request: &FetchRequest,
        durable: Lsn,
    ) -> (Option<u32>, Result<Option<Chunk>, String>) {
        let from = request.range.0;
        let prev_crc = request
            .prev_crc
            .and_then(|_| self.held(from.prev()))
            .map(header_crc);
        let bound = (request.max_bytes as usize).clamp(1, FETCH_CHUNK_BYTES as usize);
        let read = self.chunk(from, bound, durable).map_err(|e| match e {
            ReadError::Purged { first } => format!("purged: the log starts at {first}"),
            ReadError::Failed(why) => why,
        });
        (prev_crc, read)
    }

    /// An answer to a peer's fetch holds this log's durable records `first..=last`.
    pub(super) fn check_fetched(&self, (first, last): (Lsn, Lsn), records: &[u8], durable: Lsn) {
        assert!(
            first <= last && last <= durable,
            "Fetched {first}..={last} with the log durable up to {durable}"
        );
        assert!(
            records == self.run(first, last),
            "Fetched {first}..={last} are not the log's bytes"
        );
    }

    pub(super) fn truncate_after(&mut self, after: Lsn) {
        self.records
            .truncate(usize::try_from(after.0).expect("small LSNs"));
    }

    pub(super) fn last_crc_epoch(&self) -> (u32, Epoch) {
        self.records
            .last()
            .map_or((0, Epoch(0)), |r| (header_crc(r), header_epoch(r)))
    }

    pub(super) fn tail(&self, durable: Lsn, applied: Lsn) -> Tail {
        let (last_crc, last_epoch) = self.last_crc_epoch();
        Tail {
            last: self.last(),
            last_epoch,
            last_crc,
            durable,
            applied,
        }
    }

    /// What `Log::append_replicated` does: whole records with valid CRCs continuing the log
    /// densely, all or nothing. Returns the new last LSN.
    pub(super) fn append_replicated(&mut self, records: &[u8]) -> Result<Lsn, String> {
        let mut parsed = Vec::new();
        let (mut offset, mut next) = (0, self.last().next());
        while offset < records.len() {
            let r = record::decode(&records[offset..]).map_err(|e| format!("at {offset}: {e}"))?;
            if r.header.lsn != next {
                return Err(format!("LSN {} where {next} was expected", r.header.lsn));
            }
            let len = r.encoded_len();
            parsed.push(records[offset..offset + len].to_vec());
            offset += len;
            next = next.next();
        }
        if parsed.is_empty() {
            return Err("no records".into());
        }
        self.records.extend(parsed);
        Ok(self.last())
    }
}
