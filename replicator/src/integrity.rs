//! The replica's integrity rules: which damaged range is repaired next and when it is tried
//! again, the check a fetched range must pass before it replaces a damaged one, and the
//! comparison of this node's digests with its peers'. Pure; the replica holds one.
//!
//! Damaged ranges are repaired one at a time. The executor reports the ranges its log found
//! damaged ([`Damaged`]); the replica seals the active segment first if the damage is there,
//! fetches a sealed range from a peer over the replication session, checks what came against
//! every other peer's digests of the same ranges (a second source), and only then asks the
//! executor to replace the range. A repair that failed is tried again after [`REPAIR_RETRY`];
//! one left unanswered is given up after [`REPAIR_STALE`].

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use logship_engine::{Lsn, RangeDigest};

use crate::digests::{DigestBook, Mismatch};

/// How soon a range whose repair failed is tried again.
pub const REPAIR_RETRY: Duration = Duration::from_secs(2);
/// A repair in flight for this long is given up (its fetch's own timeout should end it first).
pub const REPAIR_STALE: Duration = Duration::from_secs(60);

/// A damaged range of the log, as the executor reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damaged {
    /// The damaged segment's first LSN.
    pub first: Lsn,
    /// Its last LSN.
    pub last: Lsn,
    /// Whether the segment is sealed (the active one is sealed before its repair).
    pub sealed: bool,
    /// This log's CRC of record `first - 1`, if it holds it.
    pub prev_crc: Option<u32>,
}

/// What to do about the damaged ranges now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepairStep {
    /// Nothing (repair is off, one is in flight, or every range waits for its retry).
    Wait,
    /// Seal the active segment: its damage is repaired once sealed.
    SealActive,
    /// Fetch this range from a peer.
    Fetch(Damaged),
}

/// Integrity rules and their state.
#[derive(Debug)]
pub struct IntegrityRules {
    repair: bool,
    digest_range_records: u64,
    book: DigestBook,
    /// The range being repaired, and since when.
    in_flight: Option<(Lsn, Duration)>,
    /// Ranges whose repair failed, and when they may be tried again.
    next_try: BTreeMap<Lsn, Duration>,
}

impl IntegrityRules {
    /// Rules that repair (`repair`) and compare digests of `digest_range_records`-LSN ranges.
    pub fn new(repair: bool, digest_range_records: u64) -> IntegrityRules {
        IntegrityRules {
            repair,
            digest_range_records,
            book: DigestBook::default(),
            in_flight: None,
            next_try: BTreeMap::new(),
        }
    }

    /// The digests seen so far, for status.
    pub fn book(&self) -> &DigestBook {
        &self.book
    }

    /// The range being repaired, if any.
    pub fn in_flight(&self) -> Option<Lsn> {
        self.in_flight.map(|(lsn, _)| lsn)
    }

    /// What to do about `damaged` at `now`.
    pub fn next(&mut self, now: Duration, damaged: &[Damaged]) -> RepairStep {
        if !self.repair {
            return RepairStep::Wait;
        }
        if let Some((_, since)) = self.in_flight {
            if now.saturating_sub(since) < REPAIR_STALE {
                return RepairStep::Wait;
            }
            self.in_flight = None;
        }
        self.next_try.retain(|_, at| *at > now);
        match damaged
            .iter()
            .find(|d| !self.next_try.contains_key(&d.first))
        {
            None => RepairStep::Wait,
            Some(d) if !d.sealed => RepairStep::SealActive,
            Some(d) => RepairStep::Fetch(*d),
        }
    }

    /// The fetch of `first`'s range started.
    pub fn started(&mut self, now: Duration, first: Lsn) {
        self.in_flight = Some((first, now));
    }

    /// The repair of `first`'s range ended: done, or failed (tried again later).
    pub fn ended(&mut self, now: Duration, first: Lsn, failed: bool) {
        if self.in_flight.is_some_and(|(lsn, _)| lsn == first) {
            self.in_flight = None;
        }
        if failed {
            self.next_try.insert(first, now + REPAIR_RETRY);
        }
    }

    /// Checks records fetched from `source` against every other peer's digests of the ranges
    /// they cover.
    ///
    /// # Errors
    /// The first range that disagrees, as text.
    pub fn check_fetched(&self, source: &str, chunks: &[Bytes]) -> Result<usize, String> {
        (self.book).check_fetched(source, chunks, self.digest_range_records)
    }

    /// This node's digests; returns the ranges that disagree with a peer's.
    pub fn add_local(&mut self, ranges: &[RangeDigest]) -> Vec<Mismatch> {
        ranges
            .iter()
            .flat_map(|d| self.book.add_local(*d))
            .collect()
    }

    /// A peer's digests; returns the ranges that disagree with this node's.
    pub fn add_peer(&mut self, peer: &str, ranges: &[RangeDigest]) -> Vec<Mismatch> {
        self.book.add_peer(peer, ranges)
    }
}

/// Logs replicas that disagree: neither side can tell alone which copy is right.
pub fn report_mismatches(found: &[Mismatch]) {
    for m in found {
        tracing::error!(peer = %m.peer, first = m.first, last = m.last, here = %m.here, there = %m.there,
            "replicas disagree: this node and its peer hold different records under the same LSNs (each passes its CRC); a human must compare them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn damaged(first: u64, sealed: bool) -> Damaged {
        Damaged {
            first: Lsn(first),
            last: Lsn(first + 9),
            sealed,
            prev_crc: None,
        }
    }

    #[test]
    fn one_repair_at_a_time_and_a_failed_one_waits_for_its_retry() {
        let mut r = IntegrityRules::new(true, 16);
        let list = [damaged(1, true), damaged(11, true)];
        assert_eq!(r.next(S, &list), RepairStep::Fetch(list[0]));
        r.started(S, Lsn(1));
        assert_eq!(r.next(2 * S, &list), RepairStep::Wait, "one in flight");
        r.ended(2 * S, Lsn(1), true);
        assert_eq!(r.next(2 * S, &list), RepairStep::Fetch(list[1]));
        r.started(2 * S, Lsn(11));
        r.ended(3 * S, Lsn(11), false);
        assert_eq!(r.next(3 * S, &list[..1]), RepairStep::Wait, "retry not due");
        let due = 2 * S + REPAIR_RETRY;
        let early = due - Duration::from_millis(1);
        assert_eq!(r.next(early, &list[..1]), RepairStep::Wait);
        assert_eq!(r.next(due, &list[..1]), RepairStep::Fetch(list[0]));
    }

    #[test]
    fn the_active_segment_is_sealed_first_and_a_stale_repair_is_given_up() {
        let mut r = IntegrityRules::new(true, 16);
        assert_eq!(r.next(S, &[damaged(1, false)]), RepairStep::SealActive);
        r.started(S, Lsn(1));
        assert_eq!(
            r.next(S + REPAIR_STALE - S, &[damaged(1, true)]),
            RepairStep::Wait
        );
        assert_eq!(
            r.next(S + REPAIR_STALE, &[damaged(1, true)]),
            RepairStep::Fetch(damaged(1, true))
        );
        let mut off = IntegrityRules::new(false, 16);
        assert_eq!(off.next(S, &[damaged(1, true)]), RepairStep::Wait);
    }
}
