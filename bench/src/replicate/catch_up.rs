//! Catch-up: how fast an async follower that starts empty copies a primary's existing log.
//!
//! The primary's log is filled first, with no node running: `logship_engine::Log` in the
//! primary's future data directory, 4 KiB records in 1 MiB `append_batch`es, synced and closed.
//! Then an empty follower starts, then the primary on the filled directory with that follower
//! configured as async. The clock starts when the primary's `Node::start` returns (both nodes
//! are running from then on) and stops when the follower's durable LSN reaches the primary's
//! last LSN. The primary's start (opening the filled log) is timed separately.
//!
//! The filled log was just written. With a backend that writes through the page cache the
//! primary reads it from there, so this measures the follower's side (network, append,
//! fdatasync), which is what a recently written log costs; with `io_uring_direct` nothing of it
//! is cached and the primary reads it from the disk the follower writes to, which the copy
//! limit (`new_file`) measures beside it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use logship_engine::io::Backend;
use logship_engine::{Log, Lsn, Options};
use serde::Serialize;

use crate::freed::settle_freed;
use crate::machine::process_cpu_time;
use crate::replicate::cluster::{self, FollowerRef, NodeSettings, READY_TIMEOUT};
use crate::replicate::new_file::{self, NewFileLimit};
use crate::replicate::plan::{ReplicatePlan, CATCH_UP_BATCH_RECORDS, CATCH_UP_RECORD_BYTES};
use crate::replicate::watchdog::Watchdog;

/// The follower's node id.
const FOLLOWER_ID: &str = "f1";
/// Longest the fill may take per GiB before the watchdog ends the run.
const FILL_BUDGET_PER_GIB: Duration = Duration::from_secs(60);

/// The catch-up measurement's figures.
#[derive(Clone, Debug, Serialize)]
pub struct CatchUpResult {
    /// `replicate::catch_up/size=4096,bytes=1073741824`.
    pub name: String,
    /// Records in the primary's log.
    pub records: u64,
    /// Payload bytes of those records.
    pub payload_bytes: u64,
    /// Bytes of those records as written (headers included): what the follower copies.
    pub log_bytes: u64,
    /// Seconds the fill took (append and sync, not the close).
    pub fill_s: f64,
    /// Log bytes per second of the fill, MB/s.
    pub fill_mb_per_s: f64,
    /// Seconds the primary's `Node::start` took on the filled directory.
    pub primary_start_s: f64,
    /// Seconds from the primary running to the follower holding the last LSN durably.
    pub catch_up_s: f64,
    /// Log bytes per second of catch-up, MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Bytes this process sent to storage during the catch-up (`write_bytes` of
    /// `/proc/self/io`): the follower's appends, and the zero-filling of its new segments.
    pub disk_write_bytes: u64,
    /// `disk_write_bytes` over `log_bytes`.
    pub write_amplification: f64,
    /// The same for the fill (a bare log, no network).
    pub fill_write_amplification: f64,
    /// Catch-up chunks the primary read from its log and sent.
    pub chunks_sent: u64,
    /// CPU time of the whole process per second of catch-up.
    pub cpu_cores: f64,
    /// The raw limit of writing the same bytes into new files, measured just before.
    pub new_file: Option<NewFileLimit>,
}

/// Runs the catch-up measurement in `dir/catch-up`.
///
/// # Errors
/// On any failure, or when the follower has not caught up within `plan.catch_up_timeout`.
pub fn run(
    plan: &ReplicatePlan,
    dir: &Path,
    settings: NodeSettings,
    backend: Backend,
    watchdog: &Watchdog,
) -> anyhow::Result<CatchUpResult> {
    let case_dir = dir.join("catch-up");
    let (fill, gib) = fill_primary(&case_dir, plan.catch_up_bytes, backend, watchdog)?;
    eprintln!(
        "catch-up: filled {} records ({:.0} MB) in {:.2} s ({:.0} MB/s)",
        fill.records,
        fill.log_bytes as f64 / 1e6,
        fill.elapsed.as_secs_f64(),
        fill.log_bytes as f64 / 1e6 / fill.elapsed.as_secs_f64()
    );
    watchdog.stage(
        "the new-file write limit",
        FILL_BUDGET_PER_GIB.mul_f64(gib * 2.0),
    );
    report_settle_wait(settle_freed(dir));
    let primary_dir = case_dir.join(cluster::PRIMARY_ID);
    let uncached = backend == Backend::IoUringDirect;
    let limit = new_file::measure(&case_dir, fill.log_bytes, Some((&primary_dir, uncached)));
    watchdog.stage("catch-up", READY_TIMEOUT * 2 + plan.catch_up_timeout * 2);
    report_settle_wait(settle_freed(dir));
    let result = follow(plan, &case_dir, &fill, settings);
    watchdog.idle();
    let mut result = result?;
    match limit {
        Ok(l) => result.new_file = Some(l),
        Err(e) => eprintln!("catch-up: the new-file limit could not be measured: {e:#}"),
    }
    std::fs::remove_dir_all(&case_dir)
        .with_context(|| format!("removing {}", case_dir.display()))?;
    Ok(result)
}

/// Says that a stage waited for freed memory and blocks to be handed back ([`settle_freed`]).
pub(crate) fn report_settle_wait(waited: Duration) {
    if !waited.is_zero() {
        eprintln!(
            "catch-up: waited {:.0} s for freed memory and blocks to be handed back to the host, so \
             that the limit and the catch-up start from the same state",
            waited.as_secs_f64()
        );
    }
}

/// Fills the log of the primary of the case in `case_dir` with `bytes` of records, under the
/// watchdog's fill budget; returns the fill and its size in GiB (at least 1/8), by which the
/// later stages' budgets are scaled.
///
/// # Errors
/// The fill's.
pub fn fill_primary(
    case_dir: &Path,
    bytes: u64,
    backend: Backend,
    watchdog: &Watchdog,
) -> anyhow::Result<(Fill, f64)> {
    let gib = (bytes as f64 / f64::from(1u32 << 30)).max(0.125);
    watchdog.stage(
        format!("filling the primary's log in {}", case_dir.display()),
        FILL_BUDGET_PER_GIB.mul_f64(gib),
    );
    let fill = fill(&case_dir.join(cluster::PRIMARY_ID), bytes, backend)?;
    Ok((fill, gib))
}

/// Bytes this process has caused to be written to storage (`write_bytes` in `/proc/self/io`;
/// buffered writes count when they dirty the page cache). 0 where unavailable.
fn process_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// What the fill wrote.
#[derive(Debug)]
pub(crate) struct Fill {
    pub(crate) records: u64,
    pub(crate) last: Lsn,
    pub(crate) log_bytes: u64,
    pub(crate) written: u64,
    pub(crate) elapsed: Duration,
}

/// Writes `bytes` of 4 KiB records into a new log in `dir`, syncs and closes it.
pub(crate) fn fill(dir: &Path, bytes: u64, backend: Backend) -> anyhow::Result<Fill> {
    let options = Options {
        create_if_missing: true,
        backend,
        ..Options::default()
    };
    let log = Log::open(dir, options).with_context(|| format!("opening {}", dir.display()))?;
    let payload = Bytes::from(crate::raw::pattern(CATCH_UP_RECORD_BYTES));
    let records = (bytes / CATCH_UP_RECORD_BYTES as u64).max(1);
    let (start, written_before) = (Instant::now(), process_write_bytes());
    let mut left = records;
    while left > 0 {
        let n = left.min(CATCH_UP_BATCH_RECORDS as u64);
        let batch = (0..n).map(|_| payload.clone());
        // Durability is awaited once, by the sync below.
        drop(log.append_batch(batch).context("filling the log")?);
        left -= n;
    }
    let last = log.sync().context("syncing the filled log")?;
    let elapsed = start.elapsed();
    let written = process_write_bytes() - written_before;
    let log_bytes = log.stats().bytes;
    log.close().context("closing the filled log")?;
    if last != Lsn(records) {
        bail!("the filled log ends at {last}, not {records}");
    }
    Ok(Fill {
        records,
        last,
        log_bytes,
        written,
        elapsed,
    })
}

/// Starts the follower, then the primary, and times the catch-up.
fn follow(
    plan: &ReplicatePlan,
    dir: &Path,
    fill: &Fill,
    settings: NodeSettings,
) -> anyhow::Result<CatchUpResult> {
    let follower = cluster::start_follower(dir, FOLLOWER_ID, settings)?;
    let addr = follower
        .replication_addr()
        .context("the follower has no replication address")?;
    let link = FollowerRef {
        name: FOLLOWER_ID,
        addr,
        sync: false,
    };
    let t0 = Instant::now();
    let primary = cluster::start_primary(
        dir,
        &dir.join(cluster::PRIMARY_ID),
        &[link],
        None,
        settings,
        false,
    )?;
    let (primary_start, t1) = (t0.elapsed(), Instant::now());
    let (cpu_before, written_before) = (process_cpu_time(), process_write_bytes());
    let caught_up = cluster::wait_durable(&follower, fill.last, plan.catch_up_timeout);
    let catch_up = t1.elapsed();
    let written = process_write_bytes() - written_before;
    let cpu_cores = (process_cpu_time() - cpu_before).as_secs_f64() / catch_up.as_secs_f64();
    let status = primary.status().primary;
    primary.shutdown();
    follower.shutdown();
    let followers = status.map(|p| p.followers).unwrap_or_default();
    caught_up.with_context(|| format!("catch-up: follower {}", cluster::describe(&followers)))?;
    let chunks_sent = followers.first().map_or(0, |f| f.counters.chunks_sent);
    let secs = catch_up.as_secs_f64();
    Ok(CatchUpResult {
        name: format!(
            "replicate::catch_up/size={CATCH_UP_RECORD_BYTES},bytes={}",
            fill.records * CATCH_UP_RECORD_BYTES as u64
        ),
        records: fill.records,
        payload_bytes: fill.records * CATCH_UP_RECORD_BYTES as u64,
        log_bytes: fill.log_bytes,
        fill_s: fill.elapsed.as_secs_f64(),
        fill_mb_per_s: fill.log_bytes as f64 / 1e6 / fill.elapsed.as_secs_f64(),
        primary_start_s: primary_start.as_secs_f64(),
        catch_up_s: secs,
        mb_per_s: fill.log_bytes as f64 / 1e6 / secs,
        disk_write_bytes: written,
        write_amplification: written as f64 / fill.log_bytes as f64,
        fill_write_amplification: fill.written as f64 / fill.log_bytes as f64,
        chunks_sent,
        cpu_cores,
        new_file: None,
    })
}
