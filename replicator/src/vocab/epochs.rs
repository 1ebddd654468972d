//! Epochs: the history of a log's epochs (the first LSN written in each, as Kafka's
//! leader-epoch checkpoint keeps it), and the election state a node persists before it acts
//! on it (its current epoch and its vote in that epoch).
//!
//! Within one epoch only one primary writes, so two logs that hold a record of the same epoch
//! at the same LSN hold the same record there, and everything before it is the same too. The
//! history is what lets two nodes find the last LSN they share without reading their logs.

use logship_engine::{Epoch, Lsn};

use super::NodeId;

/// Most entries a history sends on the wire; a longer history sends its newest entries (the
/// older ones only matter to a follower that far behind, which is then cut to where the sent
/// part begins, the records before it compared by CRC as always).
pub const MAX_HISTORY_ENTRIES: usize = 4096;

/// The first LSN of every epoch a log holds records of, oldest first. Records before the first
/// entry (and every record of a log with no entry) are of epoch 0: logs written before
/// failover existed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<(Epoch, Lsn)>,
}

impl EpochHistory {
    /// A history from entries; `None` unless epochs and LSNs both strictly rise, and no epoch
    /// is 0 and no LSN 0.
    pub fn from_entries(entries: Vec<(Epoch, Lsn)>) -> Option<EpochHistory> {
        let rising = entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let positive = entries.iter().all(|&(e, l)| e > Epoch(0) && l > Lsn::ZERO);
        (rising && positive).then_some(EpochHistory { entries })
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[(Epoch, Lsn)] {
        &self.entries
    }

    /// The newest entries, at most [`MAX_HISTORY_ENTRIES`], as sent on the wire.
    pub fn wire_entries(&self) -> &[(Epoch, Lsn)] {
        let skip = self.entries.len().saturating_sub(MAX_HISTORY_ENTRIES);
        &self.entries[skip..]
    }

    /// The epoch of record `lsn` (0 before the first entry).
    pub fn epoch_of(&self, lsn: Lsn) -> Epoch {
        let i = self.entries.partition_point(|&(_, first)| first <= lsn);
        if i == 0 {
            Epoch(0)
        } else {
            self.entries[i - 1].0
        }
    }

    /// The first LSN of the epoch record `lsn` belongs to (1 for epoch 0).
    fn start_of(&self, lsn: Lsn) -> Lsn {
        let i = self.entries.partition_point(|&(_, first)| first <= lsn);
        if i == 0 {
            Lsn::FIRST
        } else {
            self.entries[i - 1].1
        }
    }

    /// The newest epoch in the history (0 for none).
    pub fn last_epoch(&self) -> Epoch {
        self.entries.last().map_or(Epoch(0), |e| e.0)
    }

    /// Records from `first` on are of `epoch`, which is newer than every epoch here; entries
    /// at or after `first` (records cut since) go first.
    ///
    /// # Panics
    /// If `epoch` is not newer than the history's entries before `first`.
    pub fn begin(&mut self, epoch: Epoch, first: Lsn) {
        self.clip(first.prev());
        assert!(
            epoch > self.last_epoch() && first > Lsn::ZERO,
            "epoch {epoch} at {first} does not extend {:?}",
            self.entries
        );
        self.entries.push((epoch, first));
    }

    /// The history of a log holding `first..=last`, read from its records' epochs:
    /// `epoch_at(lsn)` is the epoch in record `lsn`'s header (`None` if it cannot be read).
    /// Epochs never fall along a log, so each epoch's first record is found by bisection: a
    /// few reads per epoch. `None` if a record could not be read or the epochs fall.
    pub fn rebuild(
        (first, last): (Lsn, Lsn),
        mut epoch_at: impl FnMut(Lsn) -> Option<Epoch>,
    ) -> Option<EpochHistory> {
        let mut entries = Vec::new();
        if first > last || last == Lsn::ZERO {
            return Some(EpochHistory { entries });
        }
        let (mut at, last_epoch) = (first.max(Lsn::FIRST), epoch_at(last)?);
        let mut epoch = epoch_at(at)?;
        loop {
            if epoch > Epoch(0) {
                entries.push((epoch, at));
            }
            if epoch == last_epoch {
                break;
            }
            // The first record after `at` whose epoch is newer than `epoch`.
            let (mut lo, mut hi) = (at.0, last.0);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if epoch_at(Lsn(mid))? > epoch {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            let next = epoch_at(Lsn(hi))?;
            if next <= epoch {
                return None;
            }
            (at, epoch) = (Lsn(hi), next);
        }
        EpochHistory::from_entries(entries)
    }

    /// Records `from..=to` were copied from a log of history `other` (taken back): this
    /// history, cut before `from`, continues with `other`'s epochs there. False, and nothing
    /// changes, if `other`'s epochs there are older than this history's before `from`.
    pub fn graft(&mut self, other: &EpochHistory, from: Lsn, to: Lsn) -> bool {
        let mut mine = self.clone();
        mine.clip(from.prev());
        let at_from = other.epoch_of(from);
        if at_from < mine.last_epoch() {
            return false;
        }
        if at_from > mine.last_epoch() {
            mine.entries.push((at_from, from));
        }
        let later = other.entries.iter().filter(|&&(_, l)| l > from && l <= to);
        mine.entries.extend(later.copied());
        *self = mine;
        true
    }

    /// Forgets entries of records after `last` (the log was cut there, or ends there).
    pub fn clip(&mut self, last: Lsn) {
        self.entries.retain(|&(_, first)| first <= last);
    }

    /// The last LSN this log (ending at `last`) and another (`other`, ending at `other_last`)
    /// share: the highest LSN both hold in the same epoch. Epoch-0 records are taken as shared
    /// (the CRC check at the cut still compares them). The other history may be only its
    /// newest part ([`EpochHistory::wire_entries`]): below where it begins, nothing is shared.
    pub fn common_prefix(&self, last: Lsn, other: &EpochHistory, other_last: Lsn) -> Lsn {
        let floor = match (other.entries.first(), other.entries.len()) {
            (Some(&(_, first)), MAX_HISTORY_ENTRIES) => first,
            _ => Lsn::ZERO,
        };
        let mut at = last.min(other_last);
        while at > floor {
            let (mine, theirs) = (self.epoch_of(at), other.epoch_of(at));
            if mine == theirs {
                return at;
            }
            // Both epochs hold from their starts up to `at`: below the later start, at least
            // one of them changes.
            at = self.start_of(at).max(other.start_of(at)).prev();
        }
        at
    }
}

/// Whether a log ending at (`epoch`, `lsn`) is at least as up to date as one ending at
/// (`other_epoch`, `other_lsn`): a newer last epoch wins, then a longer log.
pub fn at_least_as_up_to_date(epoch: Epoch, lsn: Lsn, other_epoch: Epoch, other_lsn: Lsn) -> bool {
    (epoch, lsn) >= (other_epoch, other_lsn)
}

/// What a node persists (temporary file, fdatasync, rename, directory fsync) before it acts
/// on it: the newest epoch it knows, its vote in that epoch, and its log's epoch history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElectionState {
    /// The newest epoch this node has seen.
    pub epoch: Epoch,
    /// Whom it voted for in `epoch`, if anyone.
    pub voted_for: Option<NodeId>,
    /// Its log's epoch history.
    pub history: EpochHistory,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(entries: &[(u64, u64)]) -> EpochHistory {
        EpochHistory::from_entries(entries.iter().map(|&(e, l)| (Epoch(e), Lsn(l))).collect())
            .expect("valid")
    }

    #[test]
    fn epoch_of_follows_the_entries() {
        let hist = h(&[(1, 5), (3, 9)]);
        assert_eq!(hist.epoch_of(Lsn(4)), Epoch(0));
        assert_eq!(hist.epoch_of(Lsn(5)), Epoch(1));
        assert_eq!(hist.epoch_of(Lsn(8)), Epoch(1));
        assert_eq!(hist.epoch_of(Lsn(9)), Epoch(3));
        assert_eq!(hist.epoch_of(Lsn(900)), Epoch(3));
    }

    #[test]
    fn invalid_histories_are_refused() {
        for bad in [
            vec![(Epoch(2), Lsn(5)), (Epoch(1), Lsn(9))],
            vec![(Epoch(1), Lsn(5)), (Epoch(2), Lsn(5))],
            vec![(Epoch(0), Lsn(5))],
            vec![(Epoch(1), Lsn(0))],
        ] {
            assert_eq!(EpochHistory::from_entries(bad), None);
        }
    }

    #[test]
    fn the_same_history_shares_everything_both_hold() {
        let a = h(&[(1, 1), (2, 10)]);
        assert_eq!(a.common_prefix(Lsn(20), &a, Lsn(15)), Lsn(15));
        assert_eq!(a.common_prefix(Lsn(12), &a, Lsn(15)), Lsn(12));
    }

    #[test]
    fn a_former_primary_shares_up_to_where_the_next_epoch_began() {
        // The old primary wrote epoch 1 up to 30; the new one had epoch 1 up to 20 and began
        // epoch 2 at 21.
        let old = h(&[(1, 1)]);
        let new = h(&[(1, 1), (2, 21)]);
        assert_eq!(new.common_prefix(Lsn(40), &old, Lsn(30)), Lsn(20));
        assert_eq!(old.common_prefix(Lsn(30), &new, Lsn(40)), Lsn(20));
    }

    #[test]
    fn interleaved_epochs_walk_back_to_the_last_agreement() {
        // Kafka's classic case: both wrote epoch 1 to 10; one went on in epoch 2 from 11, the
        // other in epoch 3 from 6 (it had only 1..=5 of epoch 1 when elected).
        let a = h(&[(1, 1), (2, 11)]);
        let b = h(&[(1, 1), (3, 6)]);
        assert_eq!(a.common_prefix(Lsn(20), &b, Lsn(25)), Lsn(5));
        assert_eq!(b.common_prefix(Lsn(25), &a, Lsn(20)), Lsn(5));
    }

    #[test]
    fn epoch_zero_records_count_as_shared() {
        let legacy = EpochHistory::default();
        let new = h(&[(1, 8)]);
        assert_eq!(new.common_prefix(Lsn(12), &legacy, Lsn(10)), Lsn(7));
        assert_eq!(legacy.common_prefix(Lsn(10), &legacy, Lsn(4)), Lsn(4));
    }

    #[test]
    fn begin_clips_what_was_cut() {
        let mut hist = h(&[(1, 1), (2, 10)]);
        hist.begin(Epoch(4), Lsn(8));
        assert_eq!(hist.entries(), &[(Epoch(1), Lsn(1)), (Epoch(4), Lsn(8))]);
    }

    #[test]
    fn up_to_date_compares_epoch_first() {
        assert!(at_least_as_up_to_date(Epoch(2), Lsn(3), Epoch(1), Lsn(9)));
        assert!(!at_least_as_up_to_date(Epoch(1), Lsn(9), Epoch(2), Lsn(3)));
        assert!(at_least_as_up_to_date(Epoch(2), Lsn(3), Epoch(2), Lsn(3)));
        assert!(!at_least_as_up_to_date(Epoch(2), Lsn(2), Epoch(2), Lsn(3)));
    }

    fn epochs_of(runs: &[(u64, u64)]) -> Vec<Epoch> {
        // (epoch, count) runs from LSN 1 on; index 0 is unused.
        let mut v = vec![Epoch(0)];
        for &(e, n) in runs {
            v.extend(std::iter::repeat_n(Epoch(e), n as usize));
        }
        v
    }

    #[test]
    fn rebuild_finds_each_epochs_first_record_in_few_reads() {
        let log = epochs_of(&[(0, 4), (1, 3), (3, 1), (7, 50)]);
        let last = Lsn(log.len() as u64 - 1);
        let mut reads = 0;
        let hist = EpochHistory::rebuild((Lsn(1), last), |l| {
            reads += 1;
            log.get(l.0 as usize).copied()
        })
        .expect("rebuilt");
        assert_eq!(hist, h(&[(1, 5), (3, 8), (7, 9)]));
        assert!(reads < 25, "{reads} reads");
        // Purged below 6: epoch 1 is known from 6 on only.
        let purged = EpochHistory::rebuild((Lsn(6), last), |l| log.get(l.0 as usize).copied());
        assert_eq!(purged, Some(h(&[(1, 6), (3, 8), (7, 9)])));
        let legacy = epochs_of(&[(0, 9)]);
        let none = EpochHistory::rebuild((Lsn(1), Lsn(9)), |l| legacy.get(l.0 as usize).copied());
        assert_eq!(none, Some(EpochHistory::default()));
        assert_eq!(
            EpochHistory::rebuild((Lsn(1), Lsn(0)), |_| None),
            Some(EpochHistory::default())
        );
    }

    #[test]
    fn rebuild_refuses_unreadable_records_and_falling_epochs() {
        let log = epochs_of(&[(2, 5), (1, 5)]);
        let last = Lsn(10);
        assert_eq!(
            EpochHistory::rebuild((Lsn(1), last), |l| log.get(l.0 as usize).copied()),
            None
        );
        assert_eq!(EpochHistory::rebuild((Lsn(1), last), |_| None), None);
    }

    #[test]
    fn graft_continues_with_the_sources_epochs() {
        let mut mine = h(&[(1, 1), (2, 10)]);
        // Taken back 12..=20 from a log whose epoch 2 ran to 14, then epoch 4.
        assert!(mine.graft(&h(&[(1, 1), (2, 10), (4, 15)]), Lsn(12), Lsn(20)));
        assert_eq!(mine, h(&[(1, 1), (2, 10), (4, 15)]));
        // Epochs of the source beyond what was taken are not copied.
        let mut mine = h(&[(1, 1)]);
        assert!(mine.graft(&h(&[(1, 1), (3, 5), (5, 30)]), Lsn(7), Lsn(20)));
        assert_eq!(mine, h(&[(1, 1), (3, 7)]));
        // A source older than this log before `from` is refused.
        let mut mine = h(&[(4, 1)]);
        assert!(!mine.graft(&h(&[(2, 1)]), Lsn(5), Lsn(9)));
        assert_eq!(mine, h(&[(4, 1)]));
    }
}
