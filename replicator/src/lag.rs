//! Lag: how far each follower is behind, in records, bytes and time.
//!
//! [`ByteIndex`] maps LSNs to byte positions of the primary's log (batch granularity), so bytes
//! behind can be computed for any follower LSN it still covers. [`LagClock`] keeps, per
//! follower, when each recent batch was handed to replication; when an acknowledgement at a
//! level (write, durable, applied) covers a batch, the time since then is that level's lag,
//! like `pg_stat_replication`'s `write_lag`, `flush_lag` and `replay_lag`. Pure: time is an
//! argument.

use std::collections::VecDeque;
use std::time::Duration;

use logship_engine::Lsn;

/// Batches the byte index remembers; older LSNs are estimated from the average record size.
pub const BYTE_INDEX_CAPACITY: usize = 1 << 16;
/// Send times a follower's lag clock remembers.
pub const LAG_SAMPLES_CAPACITY: usize = 1 << 12;

/// The three acknowledgement levels a follower reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckLevel {
    /// Received and handed to its log.
    Write = 0,
    /// fdatasync'ed.
    Durable = 1,
    /// Applied by its application.
    Applied = 2,
}

/// LSN → cumulative bytes of the log, at batch ends.
#[derive(Debug, Default)]
pub struct ByteIndex {
    /// (last LSN of a batch, bytes of the log up to and including it)
    ends: VecDeque<(Lsn, u64)>,
    total_bytes: u64,
    last: Lsn,
}

impl ByteIndex {
    /// An index whose log already holds records up to `last` (their sizes unknown).
    pub fn new(last: Lsn) -> ByteIndex {
        ByteIndex {
            ends: VecDeque::from([(last, 0)]),
            total_bytes: 0,
            last,
        }
    }

    /// Notes a batch of `bytes` ending at `last`.
    pub fn push(&mut self, last: Lsn, bytes: u64) {
        assert!(last > self.last, "batches rise: {last} after {}", self.last);
        self.total_bytes += bytes;
        self.last = last;
        if self.ends.len() == BYTE_INDEX_CAPACITY {
            self.ends.pop_front();
        }
        self.ends.push_back((last, self.total_bytes));
    }

    /// The last LSN noted.
    pub fn last(&self) -> Lsn {
        self.last
    }

    /// Bytes of the log after `lsn`: exact at batch ends, interpolated inside a batch,
    /// estimated from the average record size before the oldest batch remembered.
    pub fn bytes_after(&self, lsn: Lsn) -> u64 {
        if lsn >= self.last {
            return 0;
        }
        let Some(&(oldest_lsn, oldest_total)) = self.ends.front() else {
            return 0;
        };
        let i = self.ends.partition_point(|&(l, _)| l <= lsn);
        let at = if i == 0 {
            // Before the index: extrapolate with the average record size it has seen.
            let (n, b) = self.span();
            let avg = b.checked_div(n).unwrap_or(0);
            let back = oldest_lsn.0.saturating_sub(lsn.0);
            oldest_total.saturating_sub(back.saturating_mul(avg))
        } else {
            let (l0, t0) = self.ends[i - 1];
            match self.ends.get(i) {
                Some(&(l1, t1)) if l1 > l0 => t0 + (t1 - t0) * (lsn.0 - l0.0) / (l1.0 - l0.0),
                _ => t0,
            }
        };
        self.total_bytes.saturating_sub(at)
    }

    fn span(&self) -> (u64, u64) {
        match (self.ends.front(), self.ends.back()) {
            (Some(&(l0, t0)), Some(&(l1, t1))) if l1 > l0 => (l1.0 - l0.0, t1 - t0),
            _ => (0, 0),
        }
    }
}

/// Per follower: when recent batches were sent, and the last lag measured at each level.
#[derive(Debug, Default)]
pub struct LagClock {
    samples: VecDeque<(Lsn, Duration)>,
    /// Per level: LSN acknowledged so far.
    acked: [Lsn; 3],
    /// Per level: the last lag measured.
    lag: [Option<Duration>; 3],
}

impl LagClock {
    /// Notes that records up to `last` were handed to replication at `now`.
    pub fn sent(&mut self, last: Lsn, now: Duration) {
        if self.samples.back().is_some_and(|&(l, _)| l >= last) {
            return;
        }
        if self.samples.len() == LAG_SAMPLES_CAPACITY {
            // Keep the oldest: they are the ones the next acknowledgements measure.
            return;
        }
        self.samples.push_back((last, now));
    }

    /// Notes an acknowledgement at `level` up to `lsn`.
    pub fn acked(&mut self, level: AckLevel, lsn: Lsn, now: Duration) {
        let l = level as usize;
        if lsn <= self.acked[l] {
            return;
        }
        self.acked[l] = lsn;
        if let Some(&(_, at)) = self.samples.iter().take_while(|&&(s, _)| s <= lsn).last() {
            self.lag[l] = Some(now.saturating_sub(at));
        }
        let slowest = self.acked.iter().min().copied().unwrap_or(Lsn::ZERO);
        while self.samples.front().is_some_and(|&(s, _)| s <= slowest) {
            self.samples.pop_front();
        }
    }

    /// Forgets samples (the follower reconnected; it will be measured afresh).
    pub fn reset(&mut self, position: [Lsn; 3]) {
        self.samples.clear();
        self.acked = position;
    }

    /// When the first batch past `lsn` was handed to replication, if it is still tracked.
    pub fn sent_after(&self, lsn: Lsn) -> Option<Duration> {
        self.samples
            .iter()
            .find(|&&(s, _)| s > lsn)
            .map(|&(_, at)| at)
    }

    /// The last lag measured at `level`, `None` before any.
    pub fn lag(&self, level: AckLevel) -> Option<Duration> {
        self.lag[level as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_after_is_exact_at_batch_ends_and_interpolated_inside() {
        let mut ix = ByteIndex::new(Lsn::ZERO);
        ix.push(Lsn(10), 1000);
        ix.push(Lsn(20), 1000);
        ix.push(Lsn(30), 500);
        let cases = [
            (30, 0),
            (40, 0),
            (20, 500),
            (10, 1500),
            (15, 1000),
            (25, 250),
            (0, 2500),
            (5, 2000),
            (3, 2200),
        ];
        for (lsn, want) in cases {
            assert_eq!(ix.bytes_after(Lsn(lsn)), want, "after {lsn}");
        }
    }

    #[test]
    fn empty_index_reports_nothing_behind() {
        let ix = ByteIndex::new(Lsn(100));
        assert_eq!(ix.bytes_after(Lsn(3)), 0);
    }

    #[test]
    fn lag_is_time_since_the_covered_batch_was_sent() {
        let ms = Duration::from_millis;
        let mut c = LagClock::default();
        c.sent(Lsn(10), ms(100));
        c.sent(Lsn(20), ms(110));
        c.sent(Lsn(30), ms(120));
        c.acked(AckLevel::Write, Lsn(20), ms(112));
        assert_eq!(c.lag(AckLevel::Write), Some(ms(2)));
        assert_eq!(c.lag(AckLevel::Durable), None);
        c.acked(AckLevel::Durable, Lsn(15), ms(130));
        assert_eq!(
            c.lag(AckLevel::Durable),
            Some(ms(30)),
            "batch 10 sent at 100"
        );
        c.acked(AckLevel::Applied, Lsn(30), ms(150));
        assert_eq!(c.lag(AckLevel::Applied), Some(ms(30)));
        c.acked(AckLevel::Write, Lsn(30), ms(150));
        c.acked(AckLevel::Durable, Lsn(30), ms(151));
        assert_eq!(c.samples.len(), 0, "samples every level passed are dropped");
        c.acked(AckLevel::Durable, Lsn(25), ms(200));
        assert_eq!(
            c.lag(AckLevel::Durable),
            Some(ms(31)),
            "old acks change nothing"
        );
    }
}
