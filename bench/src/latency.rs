//! Latency histograms: recorded in nanoseconds (hdrhistogram, 3 significant digits), reported in
//! microseconds.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency the histogram holds exactly; longer ones are clamped to it.
const MAX_TRACKED_NANOS: u64 = 60_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram for one thread or one merged case.
#[derive(Debug, Clone)]
pub struct Recorder {
    hist: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty histogram.
    pub fn new() -> Recorder {
        let hist = Histogram::new_with_bounds(1, MAX_TRACKED_NANOS, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        Recorder { hist }
    }

    /// Records one operation's latency.
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(nanos.max(1));
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Recorder) {
        self.hist
            .add(&other.hist)
            .expect("histograms with equal bounds always merge");
    }

    /// Operations recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// The percentiles, in microseconds.
    pub fn summary(&self) -> Summary {
        let us = |nanos: u64| nanos as f64 / 1000.0;
        Summary {
            count: self.hist.len(),
            mean_us: self.hist.mean() / 1000.0,
            p50_us: us(self.hist.value_at_quantile(0.50)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            p999_us: us(self.hist.value_at_quantile(0.999)),
            max_us: us(self.hist.max()),
        }
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    /// Operations recorded.
    pub count: u64,
    /// Mean latency.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_microseconds() {
        let mut r = Recorder::new();
        for i in 1..=1000u64 {
            r.record(Duration::from_micros(i));
        }
        let s = r.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() < 1.0, "p50 {}", s.p50_us);
        assert!((s.p99_us - 990.0).abs() < 1.0, "p99 {}", s.p99_us);
        assert!((s.max_us - 1000.0).abs() < 1.0, "max {}", s.max_us);
    }

    #[test]
    fn merge_adds_samples() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.record(Duration::from_micros(10));
        b.record(Duration::from_micros(20));
        a.merge(&b);
        assert_eq!(a.len(), 2);
    }
}
