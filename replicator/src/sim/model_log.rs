//! The simulator's log: an in-memory [`ReplicaLog`] holding the engine's real record encoding,
//! with the crash semantics of a disk.
//!
//! It owns the records one replica holds, dense from its first LSN, and how far they are
//! durable. What a disk can do to them the simulator asks for explicitly:
//! - [`ModelLog::crash`]: everything past the durable LSN is lost; with a torn write a random
//!   prefix of the unsynced records survives and the next one is torn, and the recovery scan
//!   (the engine's decoder, CRC included) drops the torn record and everything after it.
//! - [`ModelLog::fail_next_sync`]: the next sync fails and the log is poisoned (fail-stop, as the
//!   engine's log: never retry an fsync) until the next crash, which stands for the reopen.
//! - [`ModelLog::corrupt`]: a durable record's byte flips silently; every read of it is refused.
//!
//! Invariants (checked after every mutation, in full by [`ModelLog::check_invariants`]): the log
//! holds records `first..=last` with no gap, record `lsn` carries `lsn` in its header, every
//! record not deliberately corrupted passes its CRC, and `first - 1 <= durable <= last`.
//!
//! It does not model time: when a sync completes is the simulator's choice (it calls
//! [`ReplicaLog::sync`] or [`ModelLog::sync_up_to`] then). Interior mutability through a
//! `RefCell`: the trait takes `&self`, and the simulator runs on one thread.

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use logship_engine::record::{self, RECORD_HEADER_BYTES};
use logship_engine::{Chunk, Epoch, Lsn};

use crate::vocab::{ReplicaLog, Rng, StorageError};

/// Cause of the failure [`ModelLog::fail_next_sync`] injects.
const INJECTED_SYNC_FAILURE: &str = "injected fsync failure";

/// A replica's log in the simulator; see the module documentation.
#[derive(Debug, Default)]
pub struct ModelLog {
    state: RefCell<LogState>,
}

#[derive(Debug)]
struct LogState {
    /// First LSN held; records below were purged.
    first: Lsn,
    /// Encoded records; LSN `first + i` at index `i`.
    records: VecDeque<Bytes>,
    /// Last LSN that survives a crash.
    durable: Lsn,
    /// Why the log failed, once it has; cleared by a crash (the reopen).
    poisoned: Option<String>,
    /// The next sync fails.
    fail_next_sync: bool,
    /// Records whose bytes the simulator flipped on purpose.
    corrupted: BTreeSet<Lsn>,
}

impl Default for LogState {
    fn default() -> LogState {
        LogState {
            first: Lsn::FIRST,
            records: VecDeque::new(),
            durable: Lsn::ZERO,
            poisoned: None,
            fail_next_sync: false,
            corrupted: BTreeSet::new(),
        }
    }
}

impl LogState {
    fn last(&self) -> Lsn {
        Lsn(self.first.prev().get() + self.records.len() as u64)
    }

    fn index(&self, lsn: Lsn) -> Option<usize> {
        if lsn < self.first {
            return None;
        }
        let i = usize::try_from(lsn.get() - self.first.get()).ok()?;
        (i < self.records.len()).then_some(i)
    }

    fn get(&self, lsn: Lsn) -> Option<&Bytes> {
        self.index(lsn).map(|i| &self.records[i])
    }

    fn admit(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(cause) => Err(StorageError::Failed(cause.clone())),
            None => Ok(()),
        }
    }

    /// Record `lsn` decoded and checked: CRC, and the LSN in its header.
    fn verified(&self, lsn: Lsn) -> Result<Option<record::RecordRef<'_>>, StorageError> {
        let Some(bytes) = self.get(lsn) else {
            return Ok(None);
        };
        match record::decode(bytes) {
            Ok(r) if r.header.lsn == lsn && r.encoded_len() == bytes.len() => Ok(Some(r)),
            Ok(r) => Err(corruption(
                lsn,
                &format!("header says LSN {}", r.header.lsn),
            )),
            Err(e) => Err(corruption(lsn, &e.to_string())),
        }
    }

    /// The cheap invariants, after every mutation.
    fn check_bounds(&self) {
        assert!(self.first >= Lsn::FIRST, "first LSN {} below 1", self.first);
        let last = self.last();
        assert!(
            self.durable <= last && self.durable >= self.first.prev(),
            "durable LSN {} outside {}..={last}",
            self.durable,
            self.first.prev()
        );
        if let Some(&c) = self.corrupted.iter().next_back() {
            assert!(c <= self.durable, "corrupted LSN {c} is not durable");
        }
    }
}

fn corruption(lsn: Lsn, detail: &str) -> StorageError {
    StorageError::Refused(format!("corruption at LSN {lsn}: {detail}"))
}

/// Whole records at the start of `image` that decode and continue densely from `next`: what a
/// recovery scan keeps. Stops at the first torn or foreign frame.
fn recovery_scan(image: &Bytes, mut next: Lsn) -> Vec<Bytes> {
    let mut kept = Vec::new();
    for item in record::run(image) {
        let Ok((offset, r)) = item else { break };
        if r.header.lsn != next {
            break;
        }
        kept.push(image.slice(offset..offset + r.encoded_len()));
        next = next.next();
    }
    kept
}

/// `bytes` as a torn write leaves them: a strict prefix, then either the end of the file or
/// zeros where the rest of the record never reached the disk.
fn tear(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let kept = rng.below(bytes.len() as u64) as usize;
    let mut torn = bytes[..kept].to_vec();
    if rng.chance(500_000) {
        torn.resize(bytes.len(), 0);
    }
    torn
}

impl ModelLog {
    /// An empty log: first LSN 1, nothing written.
    pub fn new() -> ModelLog {
        ModelLog::default()
    }

    /// The process (or machine) crashed and the log was reopened. Records past the durable LSN
    /// are lost; with `torn`, a random prefix of them survives and the record after that prefix
    /// is torn, and the recovery scan drops it with everything after it. What survives is durable
    /// (it was read back from the disk). A poisoned log is usable again; corruption stays.
    pub fn crash(&self, rng: &mut Rng, torn: bool) {
        let mut st = self.state.borrow_mut();
        let keep = usize::try_from(st.durable.get() + 1 - st.first.get())
            .expect("the durable prefix fits in memory");
        let unsynced: Vec<Bytes> = st.records.drain(keep..).collect();
        st.poisoned = None;
        st.fail_next_sync = false;
        if torn && !unsynced.is_empty() {
            let whole = rng.below(unsynced.len() as u64 + 1) as usize;
            let mut image: Vec<u8> = unsynced[..whole].iter().flatten().copied().collect();
            if let Some(next) = unsynced.get(whole) {
                image.extend_from_slice(&tear(rng, next));
            }
            let next = st.last().next();
            st.records.extend(recovery_scan(&Bytes::from(image), next));
            assert!(
                st.records.len() <= keep + unsynced.len(),
                "recovery found more records than were written"
            );
        }
        st.durable = st.last();
        st.check_bounds();
    }

    /// The next sync fails, and the log with it, until [`ModelLog::crash`].
    pub fn fail_next_sync(&self) {
        self.state.borrow_mut().fail_next_sync = true;
    }

    /// Flips a byte of durable record `lsn` without telling anyone: later reads of it fail
    /// their CRC and are refused. Returns whether the log holds such a record (otherwise
    /// nothing changes).
    pub fn corrupt(&self, lsn: Lsn) -> bool {
        let mut st = self.state.borrow_mut();
        if lsn > st.durable {
            return false;
        }
        let Some(i) = st.index(lsn) else {
            return false;
        };
        let mut bytes = st.records[i].to_vec();
        // The last byte: payload when there is one, else the reserved field; CRC-32 catches
        // every single-bit error, and a set reserved bit is refused before the CRC is checked.
        let at = bytes.len() - 1;
        bytes[at] ^= 0x01;
        st.records[i] = Bytes::from(bytes);
        st.corrupted.insert(lsn);
        assert!(
            st.verified(lsn).is_err(),
            "corrupted record {lsn} still reads"
        );
        true
    }

    /// Makes records up to `lsn` (at most the last) durable: a sync that covered only what was
    /// written when it started. Returns the durable LSN.
    ///
    /// # Errors
    /// [`StorageError::Failed`] once the log failed, or when this is the sync
    /// [`ModelLog::fail_next_sync`] asked to fail (which poisons the log).
    pub fn sync_up_to(&self, lsn: Lsn) -> Result<Lsn, StorageError> {
        let mut st = self.state.borrow_mut();
        st.admit()?;
        if st.fail_next_sync {
            st.fail_next_sync = false;
            st.poisoned = Some(INJECTED_SYNC_FAILURE.to_string());
            return Err(StorageError::Failed(INJECTED_SYNC_FAILURE.to_string()));
        }
        let target = lsn.min(st.last());
        st.durable = st.durable.max(target);
        st.check_bounds();
        Ok(st.durable)
    }

    /// Removes the records below `lsn` (they must be durable). Returns the new first LSN.
    ///
    /// # Errors
    /// [`StorageError::Refused`] if that would remove a record that is not durable,
    /// [`StorageError::Failed`] once the log failed.
    pub fn purge_before(&self, lsn: Lsn) -> Result<Lsn, StorageError> {
        let mut st = self.state.borrow_mut();
        st.admit()?;
        if lsn > st.durable.next() {
            return Err(StorageError::Refused(format!(
                "purge before {lsn}: records after the durable LSN {} would go",
                st.durable
            )));
        }
        while st.first < lsn {
            st.records.pop_front();
            st.first = st.first.next();
        }
        let first = st.first;
        st.corrupted.retain(|&c| c >= first);
        st.check_bounds();
        Ok(first)
    }

    /// Replaces held records with these (whole, CRC checked, dense), as a repair from a
    /// replica does. Returns the range replaced.
    ///
    /// # Errors
    /// [`StorageError::Refused`] for bad records or a range the log does not hold,
    /// [`StorageError::Failed`] once the log failed.
    pub fn repair(&self, records: Bytes) -> Result<(Lsn, Lsn), StorageError> {
        let mut st = self.state.borrow_mut();
        st.admit()?;
        let Some((first, parsed)) = parse_records(&records)? else {
            return Err(StorageError::Refused("a repair with no records".into()));
        };
        let last = Lsn(first.get() + parsed.len() as u64 - 1);
        if st.index(first).is_none() || st.index(last).is_none() {
            return Err(StorageError::Refused(format!(
                "repair of {first}..={last}: the log holds {}..={}",
                st.first,
                st.last()
            )));
        }
        for (k, bytes) in parsed.into_iter().enumerate() {
            let lsn = Lsn(first.get() + k as u64);
            let i = st.index(lsn).expect("the range is held");
            st.records[i] = bytes;
            st.corrupted.remove(&lsn);
        }
        st.check_bounds();
        Ok((first, last))
    }

    /// The encoded bytes of record `lsn` as stored (flipped, if corrupted), written or durable.
    pub fn record(&self, lsn: Lsn) -> Option<Bytes> {
        self.state.borrow().get(lsn).cloned()
    }

    /// Every durable record held, with its LSN, as stored.
    pub fn durable_records(&self) -> Vec<(Lsn, Bytes)> {
        let st = self.state.borrow();
        (st.first.get()..=st.durable.get())
            .filter_map(|l| st.get(Lsn(l)).map(|b| (Lsn(l), b.clone())))
            .collect()
    }

    /// Records the simulator corrupted that the log still holds.
    pub fn corrupted(&self) -> Vec<Lsn> {
        self.state.borrow().corrupted.iter().copied().collect()
    }

    /// Whether the log failed and refuses everything until [`ModelLog::crash`].
    pub fn is_poisoned(&self) -> bool {
        self.state.borrow().poisoned.is_some()
    }

    /// Checks every invariant in the module documentation, decoding every record.
    ///
    /// # Panics
    /// When one does not hold: a bug in this model.
    pub fn check_invariants(&self) {
        let st = self.state.borrow();
        st.check_bounds();
        for l in st.first.get()..=st.last().get() {
            let lsn = Lsn(l);
            let ok = st.verified(lsn).is_ok();
            assert!(
                ok != st.corrupted.contains(&lsn),
                "record {lsn}: verifies={ok}, corrupted on purpose={}",
                !ok
            );
        }
    }

    /// Records from `from` up to `end` whose total stays within `max_bytes` (at least one),
    /// each verified, back to back.
    fn gather(st: &LogState, from: Lsn, end: Lsn, max_bytes: usize) -> Result<Chunk, StorageError> {
        let mut bytes = BytesMut::new();
        let mut last = from;
        let mut lsn = from;
        while lsn <= end {
            let r = st.get(lsn).expect("records up to the last are held");
            if lsn > from && bytes.len() + r.len() > max_bytes {
                break;
            }
            st.verified(lsn)?;
            bytes.extend_from_slice(r);
            last = lsn;
            lsn = lsn.next();
        }
        Ok(Chunk {
            first: from,
            last,
            bytes: bytes.freeze(),
        })
    }
}

/// Whole records with good CRCs and dense LSNs (markers between them skipped): the first LSN
/// and each record's bytes, or `None` for no records.
fn parse_records(records: &Bytes) -> Result<Option<(Lsn, Vec<Bytes>)>, StorageError> {
    let mut parsed: Vec<Bytes> = Vec::new();
    let mut first = None;
    for item in record::run(records) {
        let (offset, r) = item.map_err(|(offset, e)| {
            StorageError::Refused(format!("bad record at byte {offset}: {e}"))
        })?;
        let lsn = r.header.lsn;
        let expected = first.map(|f: Lsn| Lsn(f.get() + parsed.len() as u64));
        if expected.is_some_and(|e| e != lsn) {
            return Err(StorageError::Refused(format!(
                "LSN {lsn} at byte {offset} where {} was expected",
                expected.unwrap_or_default()
            )));
        }
        first.get_or_insert(lsn);
        parsed.push(records.slice(offset..offset + r.encoded_len()));
    }
    Ok(first.map(|f| (f, parsed)))
}

impl ReplicaLog for ModelLog {
    fn first_lsn(&self) -> Lsn {
        self.state.borrow().first
    }

    fn last_lsn(&self) -> Lsn {
        self.state.borrow().last()
    }

    fn durable_lsn(&self) -> Lsn {
        self.state.borrow().durable
    }

    fn append(&self, epoch: Epoch, payload: Bytes) -> Result<Lsn, StorageError> {
        let mut st = self.state.borrow_mut();
        st.admit()?;
        let lsn = st.last().next();
        let mut encoded = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
        record::encode_into(&mut encoded, lsn, epoch, &payload);
        st.records.push_back(Bytes::from(encoded));
        assert!(
            st.verified(lsn).is_ok(),
            "record {lsn} fails after encoding"
        );
        st.check_bounds();
        Ok(lsn)
    }

    fn append_records(&self, records: Bytes) -> Result<Lsn, StorageError> {
        let mut st = self.state.borrow_mut();
        st.admit()?;
        let Some((first, parsed)) = parse_records(&records)? else {
            return Err(StorageError::Refused("no records".into()));
        };
        let next = st.last().next();
        if first != next {
            return Err(StorageError::Refused(format!(
                "records start at LSN {first}; the log continues at {next}"
            )));
        }
        st.records.extend(parsed);
        st.check_bounds();
        Ok(st.last())
    }

    fn sync(&self) -> Result<Lsn, StorageError> {
        self.sync_up_to(Lsn(u64::MAX))
    }

    fn truncate_after(&self, lsn: Lsn) -> Result<(), StorageError> {
        let mut st = self.state.borrow_mut();
        st.admit()?;
        let (first, last) = (st.first, st.last());
        if lsn > last || lsn.next() < first {
            return Err(StorageError::Refused(format!(
                "cut after {lsn}: the log holds {first}..={last}"
            )));
        }
        let keep = usize::try_from(lsn.next().get() - first.get()).expect("a held length");
        st.records.truncate(keep);
        // As the engine's: the cut is durable when it returns, and so is what it kept.
        st.durable = lsn;
        st.corrupted.retain(|&c| c <= lsn);
        st.check_bounds();
        Ok(())
    }

    fn read_chunk(
        &self,
        from: Lsn,
        max_bytes: usize,
        unsynced: bool,
    ) -> Result<Option<Chunk>, StorageError> {
        let st = self.state.borrow();
        st.admit()?;
        let from = if from == Lsn::ZERO { st.first } else { from };
        if from < st.first {
            return Err(StorageError::Purged { first: st.first });
        }
        let end = if unsynced { st.last() } else { st.durable };
        if from > end {
            return Ok(None);
        }
        let chunk = ModelLog::gather(&st, from, end, max_bytes)?;
        assert!(
            chunk.first <= chunk.last && chunk.last <= end,
            "chunk {}..={} outside {from}..={end}",
            chunk.first,
            chunk.last
        );
        Ok(Some(chunk))
    }

    fn record_meta(&self, lsn: Lsn) -> Result<Option<(u32, Epoch)>, StorageError> {
        let st = self.state.borrow();
        st.admit()?;
        Ok(st.verified(lsn)?.map(|r| (r.header.crc, r.header.epoch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(lsn: u64) -> Bytes {
        Bytes::from(format!("record {lsn}").into_bytes())
    }

    /// A log holding records `1..=n`, durable up to `durable`.
    fn log_with(n: u64, durable: u64) -> ModelLog {
        let log = ModelLog::new();
        for l in 1..=n {
            assert_eq!(log.append(Epoch(1), payload(l)), Ok(Lsn(l)));
            if l == durable {
                assert_eq!(log.sync(), Ok(Lsn(l)));
            }
        }
        log.check_invariants();
        log
    }

    fn encoded(lsns: std::ops::RangeInclusive<u64>) -> Bytes {
        let mut out = Vec::new();
        for l in lsns {
            record::encode_into(&mut out, Lsn(l), Epoch(2), &payload(l));
        }
        Bytes::from(out)
    }

    #[test]
    fn a_crash_drops_what_was_not_synced() {
        let log = log_with(5, 3);
        log.crash(&mut Rng::new(1), false);
        assert_eq!((log.last_lsn(), log.durable_lsn()), (Lsn(3), Lsn(3)));
        assert_eq!(log.append(Epoch(1), payload(4)), Ok(Lsn(4)));
        log.check_invariants();
    }

    #[test]
    fn a_torn_crash_keeps_a_dense_prefix_that_verifies() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..200 {
            let log = log_with(8, 2);
            let before: Vec<Option<Bytes>> = (1..=8).map(|l| log.record(Lsn(l))).collect();
            log.crash(&mut Rng::new(seed), true);
            log.check_invariants();
            let last = log.last_lsn();
            assert!(last >= Lsn(2) && last <= Lsn(8), "seed {seed}: last {last}");
            assert_eq!(log.durable_lsn(), last);
            for l in 1..=last.get() {
                assert_eq!(
                    log.record(Lsn(l)),
                    before[l as usize - 1],
                    "seed {seed}: {l}"
                );
            }
            outcomes.insert(last.get());
        }
        assert!(
            outcomes.len() > 4,
            "too few distinct outcomes: {outcomes:?}"
        );
    }

    #[test]
    fn a_torn_write_is_dropped_by_the_recovery_scan() {
        let image = encoded(1..=3);
        let cut = image.len() - 3;
        let mut torn = image[..cut].to_vec();
        assert_eq!(recovery_scan(&Bytes::from(torn.clone()), Lsn(1)).len(), 2);
        torn.resize(image.len(), 0);
        assert_eq!(recovery_scan(&Bytes::from(torn), Lsn(1)).len(), 2);
        assert_eq!(recovery_scan(&image, Lsn(2)).len(), 0, "foreign LSN kept");
    }

    #[test]
    fn a_failed_sync_poisons_until_the_crash() {
        let log = log_with(3, 1);
        log.fail_next_sync();
        assert!(matches!(log.sync(), Err(StorageError::Failed(_))));
        assert!(log.is_poisoned());
        assert!(matches!(log.sync(), Err(StorageError::Failed(_))));
        assert!(matches!(
            log.append(Epoch(1), payload(4)),
            Err(StorageError::Failed(_))
        ));
        assert!(matches!(
            log.append_records(encoded(4..=4)),
            Err(StorageError::Failed(_))
        ));
        assert!(matches!(
            log.truncate_after(Lsn(1)),
            Err(StorageError::Failed(_))
        ));
        assert!(matches!(
            log.read_chunk(Lsn(1), 100, true),
            Err(StorageError::Failed(_))
        ));
        assert!(matches!(
            log.record_meta(Lsn(1)),
            Err(StorageError::Failed(_))
        ));
        assert_eq!(
            log.durable_lsn(),
            Lsn(1),
            "a failed sync made nothing durable"
        );
        log.crash(&mut Rng::new(7), false);
        assert!(!log.is_poisoned());
        assert_eq!(log.last_lsn(), Lsn(1));
        assert_eq!(log.sync(), Ok(Lsn(1)));
    }

    #[test]
    fn corruption_is_refused_by_every_read_and_survives_a_crash() {
        let log = log_with(4, 4);
        assert!(!log.corrupt(Lsn(9)));
        assert!(log.corrupt(Lsn(2)));
        log.check_invariants();
        let refused = |r: Result<(), StorageError>| match r {
            Err(StorageError::Refused(m)) => m.starts_with("corruption at LSN 2"),
            _ => false,
        };
        assert!(refused(log.read_chunk(Lsn(1), 1 << 20, false).map(|_| ())));
        assert!(refused(log.read_chunk(Lsn(2), 1, false).map(|_| ())));
        assert!(refused(log.record_meta(Lsn(2)).map(|_| ())));
        let tail = log.read_chunk(Lsn(3), 1 << 20, false).expect("undamaged");
        assert_eq!(tail.map(|c| (c.first, c.last)), Some((Lsn(3), Lsn(4))));
        log.crash(&mut Rng::new(3), true);
        assert_eq!(log.corrupted(), vec![Lsn(2)]);
        assert!(refused(log.record_meta(Lsn(2)).map(|_| ())));
        assert_eq!(log.repair(encoded(2..=2)), Ok((Lsn(2), Lsn(2))));
        assert!(log.corrupted().is_empty());
        log.check_invariants();
    }

    #[test]
    fn only_durable_records_can_be_corrupted() {
        let log = log_with(4, 2);
        assert!(!log.corrupt(Lsn(3)));
        assert!(log.corrupted().is_empty());
    }

    #[test]
    fn appended_records_must_continue_the_log_and_pass_their_crc() {
        let log = log_with(2, 2);
        let refused = |r: Result<Lsn, StorageError>| matches!(r, Err(StorageError::Refused(_)));
        assert!(refused(log.append_records(encoded(4..=5))), "gap accepted");
        assert!(
            refused(log.append_records(encoded(2..=3))),
            "overlap accepted"
        );
        let mut skip = encoded(3..=3).to_vec();
        skip.extend_from_slice(&encoded(5..=5));
        assert!(
            refused(log.append_records(Bytes::from(skip))),
            "hole accepted"
        );
        let mut bad = encoded(3..=4).to_vec();
        let at = bad.len() - 1;
        bad[at] ^= 0x40;
        assert!(
            refused(log.append_records(Bytes::from(bad))),
            "bad CRC accepted"
        );
        assert!(
            refused(log.append_records(Bytes::new())),
            "nothing accepted"
        );
        assert_eq!(log.last_lsn(), Lsn(2), "a refused append changed the log");
        assert_eq!(log.append_records(encoded(3..=4)), Ok(Lsn(4)));
        assert_eq!(log.record(Lsn(4)), Some(encoded(4..=4)));
        assert_eq!(
            log.record_meta(Lsn(4)).map(|m| m.map(|(_, e)| e)),
            Ok(Some(Epoch(2)))
        );
        log.check_invariants();
    }

    #[test]
    fn read_chunk_returns_whole_records_within_the_bound_and_at_least_one() {
        let log = log_with(6, 4);
        let one = encoded(1..=1).len();
        let c = log.read_chunk(Lsn(2), 2 * one, false).unwrap().unwrap();
        assert_eq!((c.first, c.last, c.bytes.len()), (Lsn(2), Lsn(3), 2 * one));
        let c = log.read_chunk(Lsn(2), 1, false).unwrap().unwrap();
        assert_eq!((c.first, c.last), (Lsn(2), Lsn(2)));
        let c = log.read_chunk(Lsn(3), 1 << 20, false).unwrap().unwrap();
        assert_eq!(c.last, Lsn(4), "unsynced records read as durable");
        let c = log.read_chunk(Lsn(3), 1 << 20, true).unwrap().unwrap();
        assert_eq!(c.last, Lsn(6));
        assert!(matches!(log.read_chunk(Lsn(5), 1 << 20, false), Ok(None)));
        assert!(matches!(log.read_chunk(Lsn(7), 1 << 20, true), Ok(None)));
        assert_eq!(log.purge_before(Lsn(3)), Ok(Lsn(3)));
        assert!(matches!(
            log.read_chunk(Lsn(2), 100, false),
            Err(StorageError::Purged { first: Lsn(3) })
        ));
        log.check_invariants();
    }

    #[test]
    fn truncation_is_durable_and_bounded_by_what_is_held() {
        let log = log_with(6, 2);
        assert!(matches!(
            log.truncate_after(Lsn(7)),
            Err(StorageError::Refused(_))
        ));
        assert_eq!(log.truncate_after(Lsn(4)), Ok(()));
        assert_eq!((log.last_lsn(), log.durable_lsn()), (Lsn(4), Lsn(4)));
        log.crash(&mut Rng::new(5), true);
        assert_eq!(log.last_lsn(), Lsn(4));
        assert_eq!(log.truncate_after(Lsn(0)), Ok(()));
        assert_eq!(log.last_lsn(), Lsn(0));
        assert_eq!(log.append(Epoch(3), payload(1)), Ok(Lsn(1)));
        log.check_invariants();
    }

    #[test]
    fn purge_keeps_what_is_not_durable() {
        let log = log_with(5, 3);
        assert!(matches!(
            log.purge_before(Lsn(5)),
            Err(StorageError::Refused(_))
        ));
        assert_eq!(log.purge_before(Lsn(4)), Ok(Lsn(4)));
        assert_eq!((log.first_lsn(), log.last_lsn()), (Lsn(4), Lsn(5)));
        assert!(matches!(
            log.truncate_after(Lsn(2)),
            Err(StorageError::Refused(_))
        ));
        assert_eq!(log.truncate_after(Lsn(3)), Ok(()));
        assert_eq!(log.last_lsn(), Lsn(3));
        log.check_invariants();
    }

    #[test]
    fn sync_up_to_makes_only_a_prefix_durable() {
        let log = log_with(5, 0);
        assert_eq!(log.sync_up_to(Lsn(3)), Ok(Lsn(3)));
        assert_eq!(log.sync_up_to(Lsn(2)), Ok(Lsn(3)), "durable LSN regressed");
        assert_eq!(log.sync_up_to(Lsn(9)), Ok(Lsn(5)));
    }
}
