//! Catch-up pacing: how many catch-up bytes the primary may send to lagging followers, steered
//! by the latency of foreground commits.
//!
//! A follower far behind is fed from the log in chunks as fast as it acknowledges them. That
//! traffic shares the primary's reader, transport and (on a shared machine) disk with the
//! commits that caught-up sync followers acknowledge, and can slow them. With a latency target
//! configured, the [`Pacer`] watches each append that waits for a remote level from the moment
//! the log took it to the moment `remote_durable` covered it (the wait its client sees, less the
//! wake-up), and every [`CONTROL_INTERVAL`] adjusts an allowance in bytes per second that
//! catch-up reads must draw from (a token bucket):
//!
//! - no commit finished or waiting in the interval (no foreground load): unthrottled;
//! - commits waiting and none finished: no evidence either way, the allowance holds;
//! - more than 1% of the commits above the target (their p99 above it), both in the interval and
//!   over the last [`LONG_HISTORY_INTERVALS`] intervals (2 s): the allowance is cut to
//!   [`DECREASE_NUM`]/[`DECREASE_DEN`] of itself (of the catch-up rate just measured, coming
//!   from unthrottled), never below the configured floor, so catch-up always moves;
//! - else, the last [`HISTORY_INTERVALS`] intervals' (400 ms) p99 above the target: the
//!   allowance holds while they recover;
//! - at or under the target: foreground load that was unthrottled starts paced at the floor,
//!   and the allowance grows while catch-up runs, doubling (slow start) until the first
//!   interval over the target, then by an eighth (at least the floor); never beyond twice what
//!   catch-up actually sent, so an allowance that does not bind stays close to one that would.
//!   With no catch-up running it holds.
//!
//! A single interval's p99 is close to its slowest few commits. The target is a p99, and a cut
//! needs the commits over it to pass 1% of the last 2 s's too: a slow stretch of the disk's own
//! (they come without catch-up as well) that holds fewer only holds the allowance, for as long
//! as the last 400 ms's p99 is over. Requiring the interval's own keeps slow commits already
//! answered by a cut from cutting again. (With no catch-up running, up to 12 % of its intervals
//! had the last 400 ms over a target of 1.25 × a p99 alone in the benchmark, and cut then.)
//!
//! Starting paced under foreground load keeps a catch-up that begins then from flooding the
//! disk for a whole interval before the first cut: the allowance probes up to what the target
//! allows instead of down from what the hardware allows (TCP's slow start and AIMD, with the
//! commit p99 as the congestion signal).
//!
//! Paced reads are small and clocked by the follower: at most [`PACED_CHUNK_BYTES`], and the
//! link keeps [`PACED_CHUNKS_IN_FLIGHT`] paced chunks in flight, so the next is read once the
//! follower acknowledged the write of the oldest. A commit's fdatasync then queues behind a
//! chunk or two on a disk the follower shares, not behind a multi-MiB burst
//! (`replicate::steered_catch_up` measured both grains).
//!
//! Each append is a sample, not each batch: the target is the clients' p99, and when an
//! fdatasync stalls, the appends that queue behind it wait for the stall and then form one
//! batch whose own commit is quick. Timed from its formation, that batch was one fast sample;
//! timed from their appends, they are many slow ones, as their clients saw them
//! (`replicate::steered_catch_up` measured a p99 alone of 1.7 ms from batches beside the
//! clients' 10.5 ms). Appends at the local level only are not watched: a load of them alone
//! leaves catch-up unthrottled.
//!
//! Only catch-up is paced: live batches to caught-up followers never draw from the allowance.
//! The pacer is pure: time is an argument, and its decision is a function of the counts it
//! was fed ([`next_allowance`]). Limits: it cannot tell catch-up's cost from any other cause of
//! slow commits, so commits over the target for another reason hold catch-up at the floor; and
//! a follower the quorum waits for while it catches up is paced like any other.

use std::collections::VecDeque;
use std::time::Duration;

use hdrhistogram::Histogram;
use logship_engine::Lsn;
use serde::{Deserialize, Serialize};

/// How often the allowance is adjusted (and the window its p99 is judged on).
pub const CONTROL_INTERVAL: Duration = Duration::from_millis(100);
/// Intervals whose commits make the recent p99.
pub const HISTORY_INTERVALS: usize = 4;
/// Intervals whose commits a cut also needs over the target: a p99 over a span long enough
/// that one slow stretch of the disk's own does not make it.
pub const LONG_HISTORY_INTERVALS: usize = 20;
const _: () = assert!(LONG_HISTORY_INTERVALS >= HISTORY_INTERVALS);
/// Commits over the target, in percent, past which the window is over target (p99).
pub const OVER_TARGET_PERCENT: u64 = 1;
/// The cut over target: the allowance becomes `DECREASE_NUM / DECREASE_DEN` of itself.
pub const DECREASE_NUM: u64 = 7;
/// See [`DECREASE_NUM`].
pub const DECREASE_DEN: u64 = 10;
/// The growth under target: an allowance grows by itself divided by this (at least the floor).
pub const INCREASE_DIVISOR: u64 = 8;
/// Appends whose commit the pacer waits for; later ones go unsampled until it drains.
pub const MAX_PENDING_APPENDS: usize = 16_384;
/// Catch-up time one read may cover: a read asks for at most the allowance times this, and
/// never more than [`PACED_CHUNK_BYTES`]. At low allowances it keeps reads under a paced chunk
/// (50 ms at the 4 MiB/s floor is 205 KiB).
pub const PACE_SLICE: Duration = Duration::from_millis(50);
/// The largest read a paced catch-up makes (the link keeps [`PACED_CHUNKS_IN_FLIGHT`] of them
/// in flight). What a commit's fdatasync may queue behind on a disk the follower shares is a
/// chunk or two, not a multi-MiB one: raw copies beside 64 clients fit about four times the
/// bandwidth within their p99 bound in a 256 KiB grain as in 4 MiB bursts
/// (`replicate::steered_catch_up`, the disk's share). An unthrottled catch-up reads whole
/// chunks, many in flight.
pub const PACED_CHUNK_BYTES: usize = 256 << 10;
/// Paced chunks a link keeps in flight at most (sent and not acknowledged as written): the
/// next chunk is read and sent while the follower writes the last, so the follower's writes
/// follow one another without waiting for a read, a send and an acknowledgement between them.
/// With one in flight, that wait was in every chunk's cycle: beside 64 clients, with an
/// allowance that did not bind, a paced catch-up ran at 140-148 MB/s with one and 214-266 with
/// two (`replicate::steered_catch_up`, docs/benchmarks.md).
pub const PACED_CHUNKS_IN_FLIGHT: usize = 2;
/// Slices of unused allowance a bucket may save up.
const BURST_SLICES: u64 = 2;
/// The smallest read the pacer grants (a read returns at least one record anyway).
pub const MIN_GRANT_BYTES: usize = 4 << 10;
/// The longest commit latency the recent p99 tells apart, µs (longer ones count as this).
const LATENCY_MAX_US: u64 = 60_000_000;
/// Default floor of the allowance.
pub const DEFAULT_MIN_BYTES_PER_SEC: u64 = 4 << 20;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// What the pacer steers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacingConfig {
    /// The p99 of foreground commit latency (append to `remote_durable`) to keep under.
    pub latency_target: Duration,
    /// The allowance never goes below this, so catch-up always progresses.
    pub min_bytes_per_sec: u64,
}

impl PacingConfig {
    /// Pacing for `latency_target` with the default floor.
    pub fn new(latency_target: Duration) -> PacingConfig {
        PacingConfig {
            latency_target,
            min_bytes_per_sec: DEFAULT_MIN_BYTES_PER_SEC,
        }
    }
}

/// What one control interval saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Commits (appends waiting for a remote level) that finished in it.
    pub commits: u64,
    /// Of those, the ones slower than the target.
    pub over_target: u64,
    /// Commits were still waiting at its end.
    pub waiting: bool,
    /// Catch-up bytes sent per second during it.
    pub catch_up_bytes_per_sec: u64,
    /// Commits that finished in the last [`HISTORY_INTERVALS`] intervals, this one included.
    pub recent_commits: u64,
    /// Of those, the ones slower than the target.
    pub recent_over_target: u64,
    /// Commits that finished in the last [`LONG_HISTORY_INTERVALS`] intervals, this one
    /// included.
    pub long_commits: u64,
    /// Of those, the ones slower than the target.
    pub long_over_target: u64,
}

impl Window {
    /// More than [`OVER_TARGET_PERCENT`] of its commits were slower than the target.
    pub fn over(&self) -> bool {
        p99_over(self.commits, self.over_target)
    }

    /// The same over the last [`HISTORY_INTERVALS`] intervals.
    pub fn recent_over(&self) -> bool {
        p99_over(self.recent_commits, self.recent_over_target)
    }

    /// The same over the last [`LONG_HISTORY_INTERVALS`] intervals.
    pub fn long_over(&self) -> bool {
        p99_over(self.long_commits, self.long_over_target)
    }
}

fn p99_over(commits: u64, over_target: u64) -> bool {
    commits > 0 && over_target * 100 > commits * OVER_TARGET_PERCENT
}

/// Catch-up's allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowance {
    /// No foreground load: catch-up runs as fast as its window allows.
    Unthrottled,
    /// Bytes per second, doubling while under the target (no interval over it yet).
    SlowStart(u64),
    /// Bytes per second, growing by an eighth while under the target.
    Steady(u64),
}

impl Allowance {
    /// Bytes per second allowed; `None` while unthrottled.
    pub fn rate(self) -> Option<u64> {
        match self {
            Allowance::Unthrottled => None,
            Allowance::SlowStart(r) | Allowance::Steady(r) => Some(r),
        }
    }
}

/// The allowance after a window, from the one before. See the module documentation for the
/// rules.
pub fn next_allowance(current: Allowance, w: &Window, floor: u64) -> Allowance {
    let measured = w.catch_up_bytes_per_sec;
    if w.commits == 0 {
        return if w.waiting {
            current
        } else {
            Allowance::Unthrottled
        };
    }
    if w.over() && w.long_over() {
        let base = (current.rate())
            .or((measured > 0).then_some(measured))
            .unwrap_or(floor);
        let cut = base.saturating_mul(DECREASE_NUM) / DECREASE_DEN;
        return Allowance::Steady(cut.max(floor));
    }
    if w.recent_over() {
        return current;
    }
    // Never beyond twice what catch-up sent, never under the floor.
    let bound = |grown: u64| grown.min(measured.saturating_mul(2)).max(floor);
    match current {
        Allowance::Unthrottled => Allowance::SlowStart(floor),
        _ if measured == 0 => current,
        Allowance::SlowStart(r) => Allowance::SlowStart(bound(r.saturating_mul(2))),
        Allowance::Steady(r) => {
            Allowance::Steady(bound(r.saturating_add((r / INCREASE_DIVISOR).max(floor))))
        }
    }
}

/// The pacer's figures, for status and metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PacingStatus {
    /// The configured latency target, milliseconds.
    pub latency_target_ms: f64,
    /// Catch-up bytes per second allowed now; `None` while unthrottled.
    pub allowance_bytes_per_sec: Option<u64>,
    /// Seconds catch-up reads waited for the allowance, in total.
    pub throttled_seconds: f64,
    /// Commits finished in the last control interval.
    pub window_commits: u64,
    /// Of those, the ones slower than the target.
    pub window_over_target: u64,
    /// The p99 of the commits of the last [`HISTORY_INTERVALS`] intervals (append to
    /// `remote_durable`), milliseconds, 1% precision; `None` without commits. The figure the
    /// pacer steers against its target.
    #[serde(default)]
    pub recent_commit_p99_ms: Option<f64>,
    /// The p99 of every commit measured while no catch-up ran (in closed intervals that sent
    /// no catch-up chunk, since this node became primary), milliseconds, 1% precision; `None`
    /// without such commits. The p99 a target is best set from: it counts the slow stretches
    /// the system has without catch-up, which the recent p99 of a quiet moment leaves out, and
    /// none that a catch-up caused.
    #[serde(default)]
    pub commit_p99_ms: Option<f64>,
    /// Control intervals closed with foreground commits, in total.
    #[serde(default)]
    pub control_intervals: u64,
    /// Of those, the ones over the target both on their own and over the last
    /// [`LONG_HISTORY_INTERVALS`]: each cuts a paced allowance (or finds it at its floor). Counted
    /// with or without catch-up running, so the share of them while none runs is how often the
    /// foreground load alone would cut.
    #[serde(default)]
    pub over_intervals: u64,
}

/// The controller and its token bucket; see the module documentation.
#[derive(Debug)]
pub struct Pacer {
    config: Option<PacingConfig>,
    allowance: Allowance,
    /// Saved-up allowance in byte-nanoseconds (bytes × 10^9), negative while in debt.
    tokens: i128,
    refilled_at: Duration,
    /// (last LSN of an append, when the log took it), in LSN order.
    pending: VecDeque<(Lsn, Duration)>,
    /// The highest `remote_durable` seen (back to a cut's LSN after a truncation).
    committed: Lsn,
    window_start: Duration,
    window: Window,
    /// (commits, over target) of the last [`LONG_HISTORY_INTERVALS`] intervals, a ring indexed
    /// by `intervals`: the recent and the long history are its last entries.
    history: [(u64, u64); LONG_HISTORY_INTERVALS],
    /// Commit latencies in µs: of the interval under way, and of the last
    /// [`HISTORY_INTERVALS`].
    latencies: Histogram<u64>,
    latency_history: Vec<Histogram<u64>>,
    /// Every commit latency measured in an interval without catch-up, in µs.
    latency_total: Histogram<u64>,
    recent_p99: Option<Duration>,
    intervals: usize,
    catch_up_bytes: u64,
    last_window: Window,
    throttled: Duration,
    throttled_since: Option<Duration>,
    control_intervals: u64,
    over_intervals: u64,
}

impl Pacer {
    /// A pacer steering for `config`; `None` never throttles.
    pub fn new(config: Option<PacingConfig>) -> Pacer {
        if let Some(c) = config {
            assert!(
                c.min_bytes_per_sec > 0,
                "a pacing floor of 0 could stop catch-up"
            );
            assert!(!c.latency_target.is_zero(), "a latency target of 0");
        }
        Pacer {
            config,
            allowance: Allowance::Unthrottled,
            tokens: 0,
            refilled_at: Duration::ZERO,
            pending: VecDeque::new(),
            committed: Lsn::ZERO,
            window_start: Duration::ZERO,
            window: Window::default(),
            history: [(0, 0); LONG_HISTORY_INTERVALS],
            latencies: latency_histogram(),
            latency_history: vec![latency_histogram(); HISTORY_INTERVALS],
            latency_total: latency_histogram(),
            recent_p99: None,
            intervals: 0,
            catch_up_bytes: 0,
            last_window: Window::default(),
            throttled: Duration::ZERO,
            throttled_since: None,
            control_intervals: 0,
            over_intervals: 0,
        }
    }

    /// Catch-up bytes per second allowed now; `None` while unthrottled.
    pub fn allowance(&self) -> Option<u64> {
        self.allowance.rate()
    }

    /// The log took an append ending at `last` whose client waits for a remote level.
    pub fn appended(&mut self, now: Duration, last: Lsn) {
        let Some(c) = self.config else {
            return;
        };
        if self.pending.len() >= MAX_PENDING_APPENDS {
            return;
        }
        if last <= self.committed {
            // Committed before its appender reported it: at once, as far as the pacer can tell.
            self.sample(c.latency_target, Duration::ZERO);
            return;
        }
        // Appenders report in about their LSNs' order: the place is almost always the back.
        let at = self.pending.partition_point(|&(l, _)| l <= last);
        self.pending.insert(at, (last, now));
    }

    /// The log was cut after `last`: appends past it will never commit as such.
    pub fn truncated(&mut self, last: Lsn) {
        let keep = self.pending.partition_point(|&(l, _)| l <= last);
        self.pending.truncate(keep);
        self.committed = self.committed.min(last);
    }

    /// `remote_durable` reached `committed`: every append it covers is a latency sample.
    pub fn committed(&mut self, now: Duration, committed: Lsn) {
        let Some(c) = self.config else {
            return;
        };
        self.committed = self.committed.max(committed);
        while let Some(&(last, taken)) = self.pending.front() {
            if last > committed {
                break;
            }
            self.pending.pop_front();
            self.sample(c.latency_target, now.saturating_sub(taken));
        }
    }

    /// One commit of `latency`, judged against `target`.
    fn sample(&mut self, target: Duration, latency: Duration) {
        self.window.commits += 1;
        if latency > target {
            self.window.over_target += 1;
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latencies
            .saturating_record(us.clamp(1, LATENCY_MAX_US));
    }

    /// Timer: closes the control interval when it is due and adjusts the allowance.
    pub fn tick(&mut self, now: Duration) {
        let Some(c) = self.config else {
            return;
        };
        let elapsed = now.saturating_sub(self.window_start);
        if elapsed < CONTROL_INTERVAL {
            return;
        }
        let per_sec = u128::from(self.catch_up_bytes) * NANOS_PER_SEC / elapsed.as_nanos();
        let mut w = std::mem::take(&mut self.window);
        w.waiting = !self.pending.is_empty();
        w.catch_up_bytes_per_sec = u64::try_from(per_sec).unwrap_or(u64::MAX);
        let slot = self.intervals % HISTORY_INTERVALS;
        self.history[self.intervals % LONG_HISTORY_INTERVALS] = (w.commits, w.over_target);
        if self.catch_up_bytes == 0 {
            // Same bounds, values clamped into them when recorded: adding cannot fail.
            let _ = self.latency_total.add(&self.latencies);
        }
        std::mem::swap(&mut self.latency_history[slot], &mut self.latencies);
        self.latencies.reset();
        self.recent_p99 = recent_p99(&self.latency_history);
        self.intervals = self.intervals.wrapping_add(1);
        (w.recent_commits, w.recent_over_target) = self.history_sums(HISTORY_INTERVALS);
        (w.long_commits, w.long_over_target) = self.history_sums(LONG_HISTORY_INTERVALS);
        if w.commits > 0 {
            self.control_intervals += 1;
            self.over_intervals += u64::from(w.over() && w.long_over());
        }
        let before = self.allowance.rate();
        self.refill(now);
        self.allowance = next_allowance(self.allowance, &w, c.min_bytes_per_sec);
        if before.is_none() || self.allowance().is_none() {
            // Debt or savings of an unthrottled stretch mean nothing to the new allowance.
            self.tokens = 0;
            self.refilled_at = now;
        }
        if self.allowance().is_none() {
            self.stop_waiting(now);
        }
        self.catch_up_bytes = 0;
        self.window_start = now;
        self.last_window = w;
        self.check_invariants();
    }

    /// (commits, over target) of the last `n` closed intervals, `n` at most
    /// [`LONG_HISTORY_INTERVALS`].
    fn history_sums(&self, n: usize) -> (u64, u64) {
        // The newest closed interval is `intervals - 1`.
        let newest = self.intervals % LONG_HISTORY_INTERVALS + LONG_HISTORY_INTERVALS - 1;
        (0..n)
            .map(|back| self.history[(newest - back) % LONG_HISTORY_INTERVALS])
            .fold((0, 0), |(c, o), (commits, over)| (c + commits, o + over))
    }

    /// How many bytes a catch-up read wanting `want` may ask for now; `None`: none yet (ask
    /// again at a later tick).
    pub fn grant(&mut self, now: Duration, want: usize) -> Option<usize> {
        let Some(rate) = self.allowance() else {
            return Some(want);
        };
        self.refill(now);
        if self.tokens <= 0 {
            self.throttled_since.get_or_insert(now);
            return None;
        }
        self.stop_waiting(now);
        Some(want.min(slice_bytes(rate)).min(PACED_CHUNK_BYTES))
    }

    /// Catch-up is throttled now: reads are paced, [`PACED_CHUNK_BYTES`] at most and
    /// [`PACED_CHUNKS_IN_FLIGHT`] in flight.
    pub fn paced(&self) -> bool {
        self.allowance().is_some()
    }

    /// A catch-up chunk of `bytes` was sent.
    pub fn charge(&mut self, bytes: usize) {
        if self.config.is_none() {
            return;
        }
        self.catch_up_bytes = self.catch_up_bytes.saturating_add(bytes as u64);
        if self.allowance().is_some() {
            self.tokens -= bytes as i128 * NANOS_PER_SEC as i128;
        }
    }

    fn refill(&mut self, now: Duration) {
        let Some(rate) = self.allowance() else {
            return;
        };
        let dt = now.saturating_sub(self.refilled_at).as_nanos();
        let cap = slice_bytes(rate) as u128 * u128::from(BURST_SLICES) * NANOS_PER_SEC;
        let gained = i128::try_from(u128::from(rate) * dt).unwrap_or(i128::MAX);
        let cap = i128::try_from(cap).unwrap_or(i128::MAX);
        // A debt is paid back in full; only savings are capped.
        self.tokens = self.tokens.saturating_add(gained).min(cap);
        self.refilled_at = self.refilled_at.max(now);
    }

    fn stop_waiting(&mut self, now: Duration) {
        if let Some(since) = self.throttled_since.take() {
            self.throttled += now.saturating_sub(since);
        }
    }

    /// The pacer's figures; `None` without a target.
    pub fn status(&self) -> Option<PacingStatus> {
        let c = self.config?;
        Some(PacingStatus {
            latency_target_ms: c.latency_target.as_secs_f64() * 1e3,
            allowance_bytes_per_sec: self.allowance(),
            throttled_seconds: self.throttled.as_secs_f64(),
            window_commits: self.last_window.commits,
            window_over_target: self.last_window.over_target,
            recent_commit_p99_ms: self.recent_p99.map(|d| d.as_secs_f64() * 1e3),
            commit_p99_ms: (!self.latency_total.is_empty())
                .then(|| self.latency_total.value_at_quantile(0.99) as f64 / 1e3),
            control_intervals: self.control_intervals,
            over_intervals: self.over_intervals,
        })
    }

    /// Asserts the pacer's invariants: an allowance only with a target and never under its
    /// floor; appends waiting in LSN order and within their bound.
    pub fn check_invariants(&self) {
        match (self.config, self.allowance()) {
            (None, Some(a)) => panic!("allowance {a} without a latency target"),
            (Some(c), Some(a)) => assert!(
                a >= c.min_bytes_per_sec,
                "allowance {a} under its floor {}",
                c.min_bytes_per_sec
            ),
            _ => {}
        }
        assert!(self.pending.len() <= MAX_PENDING_APPENDS);
        let rising =
            (self.pending.iter().zip(self.pending.iter().skip(1))).all(|(a, b)| a.0 <= b.0);
        assert!(rising, "pending appends out of LSN order");
    }
}

fn latency_histogram() -> Histogram<u64> {
    // Two significant digits over 1 µs to a minute: a few KiB.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("valid histogram bounds")
}

/// The p99 of the intervals' latencies together; `None` without any.
fn recent_p99(intervals: &[Histogram<u64>]) -> Option<Duration> {
    let mut all = latency_histogram();
    for h in intervals {
        // Same bounds, and values clamped into them when recorded: adding cannot fail.
        all.add(h).ok()?;
    }
    (!all.is_empty()).then(|| Duration::from_micros(all.value_at_quantile(0.99)))
}

/// The bytes one read may ask for at `rate`: one [`PACE_SLICE`] of it, at least
/// [`MIN_GRANT_BYTES`].
fn slice_bytes(rate: u64) -> usize {
    let bytes = u128::from(rate) * PACE_SLICE.as_nanos() / NANOS_PER_SEC;
    usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .max(MIN_GRANT_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const FLOOR: u64 = 4 * MIB;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// An interval whose recent history is itself (the first after quiet ones).
    fn window(commits: u64, over_target: u64, waiting: bool, catch_up: u64) -> Window {
        Window {
            commits,
            over_target,
            waiting,
            catch_up_bytes_per_sec: catch_up,
            recent_commits: commits,
            recent_over_target: over_target,
            long_commits: commits,
            long_over_target: over_target,
        }
    }

    #[test]
    fn a_cut_needs_both_the_interval_and_its_long_history_over_the_target() {
        use Allowance::Steady;
        let m = 100 * MIB;
        let with = |w: Window, (recent, recent_over), (long, long_over)| Window {
            recent_commits: recent,
            recent_over_target: recent_over,
            long_commits: long,
            long_over_target: long_over,
            ..w
        };
        // One slow interval among fast ones, under 1% of the last 400 ms: no cut, growth.
        let blip = with(window(100, 5, false, m), (600, 5), (2000, 5));
        assert_eq!(
            next_allowance(Steady(48 * MIB), &blip, FLOOR),
            Steady(54 * MIB)
        );
        // Slow for a while, this interval too, over 1% of the last 2 s: cut.
        let slow = with(window(100, 5, false, m), (400, 20), (2000, 40));
        assert_eq!(
            next_allowance(Steady(50 * MIB), &slow, FLOOR),
            Steady(35 * MIB)
        );
        // A slow stretch over 1% of the last 400 ms but not of the last 2 s: hold, no cut.
        let stretch = with(window(100, 5, false, m), (400, 20), (2000, 15));
        assert_eq!(
            next_allowance(Steady(50 * MIB), &stretch, FLOOR),
            Steady(50 * MIB)
        );
        // Slow for a while, not this interval: hold while the history recovers.
        let recovering = with(window(100, 0, false, m), (400, 15), (2000, 40));
        assert_eq!(
            next_allowance(Steady(50 * MIB), &recovering, FLOOR),
            Steady(50 * MIB)
        );
    }

    #[test]
    fn the_allowance_follows_each_rule() {
        use Allowance::{SlowStart, Steady, Unthrottled};
        let m = 100 * MIB;
        let cases: [(Allowance, Window, Allowance); 16] = [
            // No foreground commit at all: unthrottled.
            (Steady(m), window(0, 0, false, m), Unthrottled),
            // Commits waiting, none finished: hold.
            (Steady(m), window(0, 0, true, m), Steady(m)),
            (Unthrottled, window(0, 0, true, m), Unthrottled),
            // p99 over the target: cut to 7/10, from the measured rate coming from unthrottled.
            (Unthrottled, window(100, 2, false, m), Steady(70 * MIB)),
            (Steady(50 * MIB), window(100, 2, false, m), Steady(35 * MIB)),
            (
                SlowStart(50 * MIB),
                window(100, 2, false, m),
                Steady(35 * MIB),
            ),
            (Steady(5 * MIB), window(10, 1, false, m), Steady(FLOOR)),
            (Unthrottled, window(100, 50, false, 0), Steady(FLOOR)),
            // Exactly 1% over is not over the p99.
            (Steady(48 * MIB), window(100, 1, false, m), Steady(54 * MIB)),
            // Foreground load, under the target: paced from the floor up.
            (Unthrottled, window(5, 0, false, m), SlowStart(FLOOR)),
            (Unthrottled, window(5, 0, false, 0), SlowStart(FLOOR)),
            (
                SlowStart(8 * MIB),
                window(100, 0, false, 8 * MIB),
                SlowStart(16 * MIB),
            ),
            (
                SlowStart(8 * MIB),
                window(100, 0, false, 6 * MIB),
                SlowStart(12 * MIB),
            ),
            // Under target: grow by an eighth (at least the floor), up to twice the measured.
            (
                Steady(8 * MIB),
                window(100, 0, false, 8 * MIB),
                Steady(12 * MIB),
            ),
            (
                Steady(80 * MIB),
                window(100, 0, false, 30 * MIB),
                Steady(60 * MIB),
            ),
            // Under target and no catch-up ran: hold.
            (Steady(80 * MIB), window(100, 0, false, 0), Steady(80 * MIB)),
        ];
        for (i, (current, w, want)) in cases.iter().enumerate() {
            assert_eq!(next_allowance(*current, w, FLOOR), *want, "case {i}: {w:?}");
        }
    }

    fn pacer(target_ms: u64) -> Pacer {
        Pacer::new(Some(PacingConfig {
            latency_target: ms(target_ms),
            min_bytes_per_sec: FLOOR,
        }))
    }

    /// Feeds one control interval starting at `t`: `n` appends taken at `t` and committed
    /// `latency` later, and `catch_up` bytes sent; ticks at its end.
    fn interval(p: &mut Pacer, t: Duration, next_lsn: &mut u64, n: u64, latency: Duration) {
        for _ in 0..n {
            *next_lsn += 1;
            p.appended(t, Lsn(*next_lsn));
        }
        p.committed(t + latency, Lsn(*next_lsn));
        p.tick(t + CONTROL_INTERVAL);
    }

    #[test]
    fn slow_commits_during_catch_up_cut_the_allowance_and_fast_ones_grow_it() {
        let mut p = pacer(5);
        let mut lsn = 0;
        // Unthrottled: 10 MiB of catch-up in the first interval, commits at 8 ms.
        assert_eq!(p.grant(ms(0), 4 << 20), Some(4 << 20));
        p.charge(10 << 20);
        interval(&mut p, ms(0), &mut lsn, 50, ms(8));
        // 10 MiB over 100 ms = 100 MiB/s measured; cut to 70 MiB/s.
        assert_eq!(p.allowance(), Some(70 * MIB));
        assert_eq!(p.status().unwrap().window_over_target, 50);
        // Throttled at 70 MiB/s: the tokens are empty right after the cut.
        assert_eq!(p.grant(ms(100), 4 << 20), None);
        // 10 ms later: 0.7 MiB saved, a read of one slice (50 ms: 3.5 MiB) is granted, at most
        // one paced chunk of it.
        let slice = PACED_CHUNK_BYTES.min((70 * MIB / 20) as usize);
        assert_eq!(slice, 256 << 10);
        assert_eq!(p.grant(ms(110), 4 << 20), Some(slice));
        // The chunk read was one 4 MiB record: in debt, the next read waits until the 3.3 MiB
        // owed are paid back at 70 MiB/s (about 47 ms).
        p.charge(4 << 20);
        assert_eq!(p.grant(ms(110), 4 << 20), None);
        assert_eq!(p.grant(ms(150), 4 << 20), None);
        assert_eq!(p.grant(ms(160), 4 << 20), Some(slice));
        assert_eq!(p.status().unwrap().throttled_seconds, 0.06);
        // Fast commits, but the recent ones were slow: hold while they recover.
        interval(&mut p, ms(100), &mut lsn, 50, ms(2));
        assert_eq!(p.allowance(), Some(70 * MIB));
        // Once the slow interval has left the history: grow by an eighth (under twice the
        // 7 MiB/s sent per interval).
        for i in 2..HISTORY_INTERVALS as u64 {
            p.charge(7 << 20);
            interval(&mut p, ms(100 * i), &mut lsn, 50, ms(2));
            assert_eq!(p.allowance(), Some(70 * MIB));
        }
        p.charge(7 << 20);
        interval(&mut p, ms(400), &mut lsn, 50, ms(2));
        assert_eq!(p.allowance(), Some(70 * MIB + 70 * MIB / 8));
    }

    #[test]
    fn intervals_over_the_target_are_counted_with_or_without_catch_up() {
        let mut p = pacer(5);
        let mut lsn = 0;
        let counts = |p: &Pacer| {
            let s = p.status().unwrap();
            (s.control_intervals, s.over_intervals)
        };
        // No catch-up anywhere. Slow commits: over on their own and over their history.
        interval(&mut p, ms(0), &mut lsn, 100, ms(8));
        assert_eq!(counts(&p), (1, 1));
        // Fast: under the target on their own (the history still over it).
        interval(&mut p, ms(100), &mut lsn, 100, ms(2));
        assert_eq!(counts(&p), (2, 1));
        // One slow commit of a hundred is the p99, not over it.
        for _ in 0..100 {
            lsn += 1;
            p.appended(ms(200), Lsn(lsn));
        }
        p.committed(ms(202), Lsn(lsn - 1));
        p.committed(ms(208), Lsn(lsn));
        p.tick(ms(300));
        assert_eq!(counts(&p), (3, 1));
        // No commit in an interval: not a control interval.
        p.tick(ms(400));
        assert_eq!(counts(&p), (3, 1));
        assert_eq!(p.allowance(), None, "nothing here ever throttled");
    }

    #[test]
    fn a_catch_up_under_foreground_load_starts_at_the_floor_and_doubles() {
        let mut p = pacer(5);
        let mut lsn = 0;
        interval(&mut p, ms(0), &mut lsn, 20, ms(1));
        assert_eq!(p.allowance(), Some(FLOOR));
        // Tokens for a read after 10 ms; it may ask for one 50 ms slice at the floor (205 KiB).
        assert_eq!(p.grant(ms(100), 4 << 20), None);
        assert_eq!(p.grant(ms(110), 4 << 20), Some((FLOOR / 20) as usize));
        p.charge(FLOOR as usize);
        interval(&mut p, ms(100), &mut lsn, 20, ms(1));
        assert_eq!(p.allowance(), Some(2 * FLOOR));
        p.charge(FLOOR as usize);
        interval(&mut p, ms(200), &mut lsn, 20, ms(1));
        assert_eq!(p.allowance(), Some(4 * FLOOR));
        // The first interval over the target ends the slow start: 7/10. Fast commits then
        // hold it while the slow interval is in the recent history.
        p.charge(FLOOR as usize);
        interval(&mut p, ms(300), &mut lsn, 20, ms(6));
        assert_eq!(p.allowance(), Some(FLOOR * 28 / 10));
        p.charge(FLOOR as usize);
        interval(&mut p, ms(400), &mut lsn, 20, ms(1));
        assert_eq!(p.allowance(), Some(FLOOR * 28 / 10));
    }

    #[test]
    fn the_recent_commit_p99_covers_the_last_intervals() {
        let mut p = pacer(5);
        let mut lsn = 0;
        let p99 = |p: &Pacer| p.status().unwrap().recent_commit_p99_ms;
        assert_eq!(p99(&p), None);
        // 99 appends of 2 ms: the p99 is 2 ms (to 1%).
        interval(&mut p, ms(0), &mut lsn, 99, ms(2));
        let near =
            |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() <= want / 100.0);
        assert!(near(p99(&p), 2.0), "{:?}", p99(&p));
        for i in 1..HISTORY_INTERVALS as u64 {
            interval(&mut p, ms(100 * i), &mut lsn, 1, ms(30));
        }
        // 99 of 2 ms and 3 of 30 ms over the last four intervals.
        assert!(near(p99(&p), 30.0), "{:?}", p99(&p));
        // Once the 2 ms interval has left the history, only 30 ms ones remain; then none.
        interval(&mut p, ms(400), &mut lsn, 1, ms(30));
        assert!(near(p99(&p), 30.0));
        for i in 5..5 + HISTORY_INTERVALS as u64 {
            interval(&mut p, ms(100 * i), &mut lsn, 0, ms(1));
        }
        assert_eq!(p99(&p), None);
        // Every commit so far, 99 of 2 ms and 4 of 30 ms, makes the whole time's p99; 2 ms
        // once enough fast ones followed.
        let total = |p: &Pacer| p.status().unwrap().commit_p99_ms;
        assert!(near(total(&p), 30.0), "{:?}", total(&p));
        interval(&mut p, ms(900), &mut lsn, 400, ms(2));
        assert!(near(total(&p), 2.0), "{:?}", total(&p));
        // Commits of an interval that sent catch-up do not count.
        p.charge(1 << 20);
        interval(&mut p, ms(1000), &mut lsn, 100, ms(30));
        assert!(near(p99(&p), 30.0), "{:?}", p99(&p));
        assert!(near(total(&p), 2.0), "{:?}", total(&p));
    }

    #[test]
    fn no_foreground_commits_mean_unthrottled() {
        let mut p = pacer(5);
        let mut lsn = 0;
        p.charge(10 << 20);
        interval(&mut p, ms(0), &mut lsn, 10, ms(50));
        assert_eq!(p.allowance(), Some(70 * MIB));
        p.tick(ms(200));
        assert_eq!(p.allowance(), None);
        assert_eq!(p.grant(ms(200), 1 << 20), Some(1 << 20));
    }

    #[test]
    fn commits_still_waiting_hold_the_allowance() {
        let mut p = pacer(5);
        let mut lsn = 0;
        p.charge(10 << 20);
        interval(&mut p, ms(0), &mut lsn, 10, ms(50));
        p.appended(ms(150), Lsn(lsn + 1));
        p.tick(ms(200));
        assert_eq!(p.allowance(), Some(70 * MIB));
        // It commits 200 ms after it was taken: over the target, cut again.
        p.committed(ms(350), Lsn(lsn + 1));
        p.charge(7 << 20);
        p.tick(ms(350));
        assert_eq!(p.allowance(), Some(49 * MIB));
    }

    #[test]
    fn the_allowance_never_falls_under_its_floor() {
        let mut p = pacer(1);
        let mut lsn = 0;
        p.charge(MIB as usize);
        for i in 0..40 {
            interval(&mut p, ms(100 * i), &mut lsn, 10, ms(9));
        }
        assert_eq!(p.allowance(), Some(FLOOR));
        // At the floor a read still gets one slice (205 KiB per 50 ms).
        let t = ms(100 * 40 + 10);
        assert_eq!(p.grant(t, 4 << 20), Some((FLOOR / 20) as usize));
    }

    #[test]
    fn without_a_target_nothing_is_throttled_or_sampled() {
        let mut p = Pacer::new(None);
        p.appended(ms(0), Lsn(1));
        p.charge(1 << 30);
        p.committed(ms(500), Lsn(1));
        p.tick(ms(1000));
        assert_eq!(p.allowance(), None);
        assert_eq!(p.grant(ms(1000), 1 << 20), Some(1 << 20));
        assert_eq!(p.status(), None);
    }

    #[test]
    fn appends_reported_out_of_order_are_each_sampled_once() {
        let mut p = pacer(5);
        p.appended(ms(0), Lsn(10));
        p.appended(ms(1), Lsn(20));
        p.appended(ms(2), Lsn(15));
        p.appended(ms(2), Lsn(15));
        p.check_invariants();
        p.committed(ms(3), Lsn(15));
        p.tick(ms(100));
        assert_eq!(p.status().unwrap().window_commits, 3);
        // Reported after its commit: one sample, under the target.
        p.appended(ms(150), Lsn(12));
        p.committed(ms(180), Lsn(20));
        p.tick(ms(200));
        let s = p.status().unwrap();
        assert_eq!((s.window_commits, s.window_over_target), (2, 1));
    }

    #[test]
    fn a_truncated_log_forgets_the_appends_it_lost() {
        let mut p = pacer(5);
        p.appended(ms(0), Lsn(10));
        p.appended(ms(1), Lsn(20));
        p.committed(ms(2), Lsn(10));
        p.truncated(Lsn(12));
        // LSN 20 now names a new record, appended later: one sample of it, from then.
        p.appended(ms(50), Lsn(20));
        p.check_invariants();
        p.committed(ms(51), Lsn(20));
        p.tick(ms(100));
        let s = p.status().unwrap();
        assert_eq!((s.window_commits, s.window_over_target), (2, 0));
    }

    #[test]
    fn a_full_queue_of_appends_samples_the_older_ones_only() {
        let mut p = pacer(5);
        for i in 1..=MAX_PENDING_APPENDS as u64 + 10 {
            p.appended(ms(0), Lsn(i));
        }
        p.committed(ms(1), Lsn(1 << 20));
        p.tick(ms(100));
        let s = p.status().unwrap();
        assert_eq!(s.window_commits, MAX_PENDING_APPENDS as u64);
    }
}
