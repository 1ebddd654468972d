//! Repeated events logged as one line per interval, with their count: a peer that sends
//! garbage, or appends that keep failing for want of a quorum, must not turn into one log line
//! each (an unauthenticated peer could otherwise fill the disk with logs).
//!
//! Sans-I/O: time is the caller's `now` (the replica's virtual or real clock), so the
//! simulator sees the same lines on every run of a seed.

use std::collections::HashMap;
use std::net::IpAddr;
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

/// Remote addresses summarised each on its own line, at most; events from further addresses
/// share one line (a flood from many addresses must not become one line per address).
pub const MAX_SUMMARIZED_ADDRESSES: usize = 16;

/// One summary line of [`PerAddress`]: the address (`None`: the addresses beyond
/// [`MAX_SUMMARIZED_ADDRESSES`], together), the count since its last line and the last reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressLine {
    /// The remote address, or `None` for the pooled others.
    pub address: Option<IpAddr>,
    /// Events since the previous line for this address.
    pub count: u64,
    /// Why the last of them happened.
    pub last_reason: String,
}

impl AddressLine {
    /// The address for a log line (`other addresses` for the pooled ones).
    pub fn address_text(&self) -> String {
        self.address
            .map_or_else(|| "other addresses".to_string(), |a| a.to_string())
    }

    /// Logs the line as a warning about connections `port` refused (the replication and the
    /// client port word it alike).
    pub fn warn_refused(&self, port: &str) {
        tracing::warn!(
            refused = self.count,
            address = %self.address_text(),
            last_reason = %self.last_reason,
            "{port}: connections refused (one line per {} s at most per remote address, with the count since the last)",
            SUMMARY_INTERVAL.as_secs()
        );
    }
}

/// Repeated events per remote address: the first from an address is logged at once, later ones
/// at most once per [`SUMMARY_INTERVAL`] for that address, each line with the count and the
/// last reason. At most [`MAX_SUMMARIZED_ADDRESSES`] addresses are tracked; an address quiet
/// for a whole interval with nothing held back gives its place up.
#[derive(Debug, Default, Clone)]
pub struct PerAddress {
    by_address: HashMap<IpAddr, (Summary, Duration)>,
    others: Summary,
}

impl PerAddress {
    /// Notes one event from `address` at `now`; `Some(line)`: log it now.
    pub fn note(&mut self, now: Duration, address: IpAddr, reason: &str) -> Option<AddressLine> {
        if !self.by_address.contains_key(&address) {
            self.forget_quiet(now);
        }
        let line = |address, count| AddressLine {
            address,
            count,
            last_reason: reason.to_string(),
        };
        if self.by_address.len() >= MAX_SUMMARIZED_ADDRESSES
            && !self.by_address.contains_key(&address)
        {
            return self.others.note(now, 1).map(|n| line(None, n));
        }
        let (summary, seen) = self.by_address.entry(address).or_default();
        *seen = now;
        summary.note(now, 1).map(|n| line(Some(address), n))
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.by_address.len()
    }

    /// Drops addresses with no event for a whole interval and nothing held back (their next
    /// event is logged at once, as a first one).
    fn forget_quiet(&mut self, now: Duration) {
        self.by_address.retain(|_, (summary, seen)| {
            summary.unlogged > 0 || now.saturating_sub(*seen) < SUMMARY_INTERVAL
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, i])
    }

    #[test]
    fn each_address_gets_its_own_line_with_its_count_and_last_reason() {
        let mut s = PerAddress::default();
        let at = Duration::from_secs;
        let first = s.note(at(100), ip(1), "bad frame").expect("first from 1");
        assert_eq!((first.address, first.count), (Some(ip(1)), 1));
        let other = s.note(at(100), ip(2), "bad key").expect("first from 2");
        assert_eq!((other.address, other.count), (Some(ip(2)), 1));
        for t in 101..110 {
            assert_eq!(s.note(at(t), ip(1), "bad frame"), None);
        }
        assert_eq!(s.note(at(105), ip(2), "bad key"), None);
        let later = s
            .note(at(110), ip(1), "timeout")
            .expect("a line after the interval");
        assert_eq!(
            later,
            AddressLine {
                address: Some(ip(1)),
                count: 10,
                last_reason: "timeout".into()
            },
            "9 held back and this one, with the last reason"
        );
    }

    #[test]
    fn addresses_beyond_the_bound_share_one_line() {
        let mut s = PerAddress::default();
        let now = Duration::from_secs(5);
        for i in 0..MAX_SUMMARIZED_ADDRESSES as u8 {
            assert!(s.note(now, ip(i), "x").is_some());
        }
        let pooled = s.note(now, ip(200), "y").expect("the pool's first line");
        assert_eq!((pooled.address, pooled.count), (None, 1));
        assert_eq!(
            s.note(now, ip(201), "y"),
            None,
            "the pool is summarised too"
        );
        assert_eq!(s.tracked(), MAX_SUMMARIZED_ADDRESSES);
        // A whole quiet interval later the tracked addresses give their places up.
        let later = now + SUMMARY_INTERVAL;
        let line = s.note(later, ip(201), "z").expect("a tracked address now");
        assert_eq!((line.address, line.count), (Some(ip(201)), 1));
        assert_eq!(s.tracked(), 1);
    }

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
