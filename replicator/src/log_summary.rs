//! Repeated events logged as one line per interval, with their count: a peer that sends
//! garbage, or appends that keep failing for want of a quorum, must not turn into one log line
//! each (an unauthenticated peer could otherwise fill the disk with logs).
//!
//! Sans-I/O: time is the caller's `now` (the replica's virtual or real clock), so the
//! simulator sees the same lines on every run of a seed.

use std::time::Duration;

/// At most one line per this long for each kind of repeated event.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of repeated event: the first is logged at once, later ones at most once per
/// [`SUMMARY_INTERVAL`], each line with how many happened since the previous one.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    logged_at: Option<Duration>,
    unlogged: u64,
}

impl Summary {
    /// Notes `n` events at `now`. `Some(count)`: log a line now, for `count` events (these and
    /// those held back since the last line); `None`: stay quiet.
    pub fn note(&mut self, now: Duration, n: u64) -> Option<u64> {
        self.unlogged += n;
        if self
            .logged_at
            .is_some_and(|t| now.saturating_sub(t) < SUMMARY_INTERVAL)
        {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_is_logged_then_one_line_per_interval_with_the_count() {
        let mut s = Summary::default();
        let at = Duration::from_secs;
        assert_eq!(s.note(at(100), 1), Some(1));
        for t in 101..110 {
            assert_eq!(s.note(at(t), 3), None);
        }
        assert_eq!(
            s.note(at(110), 1),
            Some(28),
            "9 × 3 held back, and this one"
        );
        assert_eq!(s.note(at(115), 2), None);
        assert_eq!(
            s.note(at(200), 0),
            Some(2),
            "a quiet spell ends with the rest"
        );
    }
}
