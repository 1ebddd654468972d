//! `logship-bench scrub`: what the scrubber costs and how fast it goes.
//!
//! 1. A log is filled with `fill_bytes` of 4 KiB records (sealed segments, then dropped from
//!    the page cache by the scrubber itself, so passes read the device).
//! 2. The scrubber's own speed: one unthrottled pass, MB/s, and so the seconds per GiB at the
//!    node's default rate (which bounds it: 1 GiB / 8 MiB/s = 128 s).
//! 3. Its cost on commits: one appender committing 100-byte records for `phase` seconds with no
//!    scrubber, with one at the default rate, and with one at a high rate, interleaved `rounds`
//!    times; the p50/p99/p99.9 of each next to each other, as ratios to the run without.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use logship_engine::{Bytes, Log, Options, ScrubOptions};
use serde::Serialize;

use crate::latency::{Recorder, Summary};

/// What one run measures.
#[derive(Clone, Debug, Serialize)]
pub struct ScrubPlan {
    /// Bytes of records written before measuring.
    pub fill_bytes: u64,
    /// Seconds each commit phase runs.
    pub phase_secs: f64,
    /// How many times the three phases are interleaved.
    pub rounds: usize,
    /// The rates compared with no scrubber, bytes per second.
    pub rates: Vec<u64>,
}

/// One rate's commit latencies over every round.
#[derive(Clone, Debug, Serialize)]
pub struct RateResult {
    /// Bytes per second (0: no scrubber).
    pub rate: u64,
    /// Commit latencies.
    pub latency: Summary,
    /// Bytes the scrubber read during the phases.
    pub scrubbed_bytes: u64,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct ScrubRun {
    /// The plan.
    pub plan: ScrubPlan,
    /// One unthrottled pass: bytes, seconds.
    pub pass_bytes: u64,
    /// Seconds the unthrottled pass took.
    pub pass_secs: f64,
    /// Commit latency per rate.
    pub rates: Vec<RateResult>,
}

/// Runs the plan in `dir`.
///
/// # Errors
/// When the log cannot be opened or written.
pub fn run(plan: &ScrubPlan, dir: &Path) -> anyhow::Result<ScrubRun> {
    let log = Log::open(
        dir.join("log"),
        Options {
            create_if_missing: true,
            ..Options::default()
        },
    )
    .context("opening the benchmark log")?;
    fill(&log, plan.fill_bytes)?;
    let (pass_bytes, pass_secs) = full_pass(&log)?;
    let mut recorders: Vec<(u64, Recorder, u64)> = std::iter::once(0)
        .chain(plan.rates.iter().copied())
        .map(|r| (r, Recorder::new(), 0))
        .collect();
    let log = Arc::new(log);
    for _ in 0..plan.rounds {
        for (rate, rec, scrubbed) in &mut recorders {
            let (r, bytes) = commit_phase(&log, *rate, Duration::from_secs_f64(plan.phase_secs))?;
            rec.merge(&r);
            *scrubbed += bytes;
        }
    }
    let rates = recorders
        .into_iter()
        .map(|(rate, rec, scrubbed_bytes)| RateResult {
            rate,
            latency: rec.summary(),
            scrubbed_bytes,
        })
        .collect();
    Ok(ScrubRun {
        plan: plan.clone(),
        pass_bytes,
        pass_secs,
        rates,
    })
}

fn fill(log: &Log, bytes: u64) -> anyhow::Result<()> {
    let record = Bytes::from(vec![0x5au8; 4096]);
    let n = bytes / 4096;
    for i in 0..n {
        let a = log.append(record.clone())?;
        if i % 1024 == 1023 {
            a.wait()?;
        }
    }
    log.sync()?;
    Ok(())
}

/// One pass as fast as the device allows.
fn full_pass(log: &Log) -> anyhow::Result<(u64, f64)> {
    let mut s = log.scrubber(ScrubOptions::default());
    let (mut bytes, started) = (0u64, Instant::now());
    loop {
        let step = s.step(1 << 20)?;
        bytes += step.bytes;
        anyhow::ensure!(
            step.corruption.is_none(),
            "damage in a fresh log: {:?}",
            step.corruption
        );
        if step.pass_finished {
            return Ok((bytes, started.elapsed().as_secs_f64()));
        }
    }
}

/// One appender committing 100-byte records for `length`, with a scrubber at `rate` bytes per
/// second beside it (none for 0), paced as the node paces it.
fn commit_phase(log: &Arc<Log>, rate: u64, length: Duration) -> anyhow::Result<(Recorder, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let scrubber = (rate > 0).then(|| {
        let (log, stop) = (Arc::clone(log), Arc::clone(&stop));
        std::thread::spawn(move || scrub_at(&log, rate, &stop))
    });
    let mut rec = Recorder::new();
    let payload = Bytes::from(vec![0x33u8; 100]);
    let end = Instant::now() + length;
    while Instant::now() < end {
        let t0 = Instant::now();
        log.append(payload.clone())?.wait()?;
        rec.record(t0.elapsed());
    }
    stop.store(true, Ordering::Release);
    let scrubbed = match scrubber {
        Some(h) => h
            .join()
            .map_err(|_| anyhow::anyhow!("scrubber thread panicked"))??,
        None => 0,
    };
    Ok((rec, scrubbed))
}

/// The node's pacing: a 256 KiB step, then a nap that keeps `rate`.
fn scrub_at(log: &Log, rate: u64, stop: &AtomicBool) -> anyhow::Result<u64> {
    const STEP: usize = 256 << 10;
    let mut s = log.scrubber(ScrubOptions::default());
    let mut total = 0;
    while !stop.load(Ordering::Acquire) {
        let t0 = Instant::now();
        let step = s.step(STEP)?;
        total += step.bytes;
        let budget = Duration::from_secs_f64(step.bytes.max(1) as f64 / rate as f64);
        if let Some(nap) = budget.checked_sub(t0.elapsed()) {
            std::thread::sleep(nap);
        }
    }
    Ok(total)
}

/// The report.
pub fn table(run: &ScrubRun) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mbs = run.pass_bytes as f64 / run.pass_secs / 1e6;
    let default = logship_replicator::config::DEFAULT_SCRUB_BYTES_PER_SEC as f64;
    let _ = writeln!(
        out,
        "scrubber, unthrottled: {:.0} MiB in {:.2} s = {mbs:.0} MB/s ({:.1} s per GiB); at the default rate ({:.0} MiB/s) a pass takes {:.0} s per GiB",
        run.pass_bytes as f64 / 1048576.0,
        run.pass_secs,
        1073741824.0 / (mbs * 1e6),
        default / 1048576.0,
        1073741824.0 / default
    );
    let base = run.rates.first().map(|r| r.latency);
    let _ = writeln!(
        out,
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>12}",
        "1 appender, 100 B",
        "commits",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "p50 ×",
        "p99 ×",
        "scrubbed MiB"
    );
    for r in &run.rates {
        let l = &r.latency;
        let ratio = |f: fn(&Summary) -> f64| base.as_ref().map_or(1.0, |b| f(l) / f(b));
        let name = if r.rate == 0 {
            "no scrubber".to_string()
        } else {
            format!("{} MiB/s", r.rate >> 20)
        };
        let _ = writeln!(
            out,
            "{name:<16} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>8.2} {:>8.2} {:>12.1}",
            l.count,
            l.p50_us,
            l.p99_us,
            l.p999_us,
            ratio(|s| s.p50_us),
            ratio(|s| s.p99_us),
            r.scrubbed_bytes as f64 / 1048576.0
        );
    }
    out
}
