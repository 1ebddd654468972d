//! The order of a `replicate` run: the latency limits (4 KiB overwrite + fdatasync, loopback
//! round trip), the null-port ceilings of the many-client network cases, every topology's commit cases (in-process, then network clients), the bandwidth limit (1 MiB sequential overwrite +
//! fdatasync) just before the catch-up it bounds, the catch-up, and the fdatasync limit again
//! (to show how much the disk drifted). The steered catch-up (`steered.rs`) runs after the
//! catch-up.
//!
//! A raw limit that fails ends the run (no ratio means anything without it). A topology or the
//! catch-up that fails is recorded in [`RunResult::errors`] and the run goes on with the next
//! one, on a fresh cluster.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logship_engine::io::Backend;
use serde::Serialize;

use crate::latency::{Recorder, Summary};
use crate::plan::{RAW_BLOCK_BYTES, RAW_STREAM_BYTES};
use crate::raw::{self, FileKind, RawResult};
use crate::replicate::catch_up::{self, CatchUpResult};
use crate::replicate::cluster::NodeSettings;
use crate::replicate::commit::{self, Backends, CaseResult, CaseResults};
use crate::replicate::net::NetCaseResult;
use crate::replicate::null_port::{self, PortCeiling};
use crate::replicate::plan::ReplicatePlan;
use crate::replicate::probe::{DiskProbe, MAX_STREAMS};
use crate::replicate::rtt::{self, RttResult};
use crate::replicate::steered::{self, SteeredResult};
use crate::replicate::watchdog::Watchdog;

/// Longest a raw loop may take beyond its duration (prewriting its 64 MiB file, removal).
const RAW_MARGIN: Duration = Duration::from_secs(60);

/// What the nodes run on.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Transport and log backend as configuration values.
    pub settings: NodeSettings,
    /// The log backend, for the catch-up fill (a bare `Log`).
    pub backend: Backend,
}

/// The raw limits of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RawLimits {
    /// 4 KiB overwrite + fdatasync: the local and the remote fdatasync latency.
    pub fdatasync_4k: RawResult,
    /// The same, 2 and 3 streams at once (one per node of a cluster).
    pub fdatasync_4k_streams: Vec<StreamsResult>,
    /// Loopback TCP round trip.
    pub rtt: RttResult,
    /// The ceilings of the many-client, one-in-flight network cases: a port that answers at
    /// once (none without network cases).
    pub null_port: Vec<PortCeiling>,
    /// 1 MiB sequential overwrite + fdatasync: the bandwidth limit of catch-up.
    pub bandwidth_1m: RawResult,
    /// The 4 KiB loop again after everything else.
    pub fdatasync_4k_after: RawResult,
}

/// A raw 4 KiB overwrite + fdatasync figure of several concurrent streams.
#[derive(Clone, Debug, Serialize)]
pub struct StreamsResult {
    /// `raw::pwrite_fdatasync/size=4096,file=prewritten,streams=2`.
    pub name: String,
    /// Concurrent streams, each a thread on its own file.
    pub streams: usize,
    /// Operations per second, all streams together.
    pub ops_per_s: f64,
    /// Latency of one write + fdatasync, every stream's merged.
    pub latency: Summary,
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct RunResult {
    /// The transport and log backend the clusters reported (the first that started).
    pub backends: Backends,
    /// The raw limits.
    pub raw: RawLimits,
    /// Every in-process commit case, in run order.
    pub cases: Vec<CaseResult>,
    /// Every network-client commit case, in run order.
    pub net_cases: Vec<NetCaseResult>,
    /// Peak RSS of the process before the catch-up (every commit case's clusters), KiB.
    pub peak_rss_kib_before_catch_up: u64,
    /// The catch-up, if it succeeded.
    pub catch_up: Option<CatchUpResult>,
    /// The steered catch-up, if it ran and succeeded.
    pub steered: Option<SteeredResult>,
    /// Topologies and catch-up that failed, with why.
    pub errors: Vec<String>,
}

/// Runs the whole plan in `dir` (the scratch directory).
///
/// # Errors
/// When a raw limit cannot be measured. Cluster failures land in [`RunResult::errors`].
pub fn run(plan: &ReplicatePlan, dir: &Path, options: RunOptions) -> anyhow::Result<RunResult> {
    let watchdog = Watchdog::start(dir.to_path_buf());
    eprintln!("raw latency limits ({:?} each) ...", plan.raw_duration);
    let fdatasync_4k = raw_loop(plan, dir, RAW_BLOCK_BYTES, &watchdog)?;
    watchdog.stage("prewriting the disk probe's files", RAW_MARGIN);
    let mut probe = DiskProbe::create(dir)?;
    let fdatasync_4k_streams = (2..=MAX_STREAMS)
        .map(|n| raw_streams(plan, &mut probe, n, &watchdog))
        .collect::<anyhow::Result<_>>()?;
    let probe = Arc::new(Mutex::new(probe));
    watchdog.stage("raw loopback round trip", plan.raw_duration + RAW_MARGIN);
    let rtt = rtt::measure(plan.raw_duration)?;
    let null_port = null_port_ceilings(plan, options, &watchdog)?;
    let mut backends = None;
    let mut cases = CaseResults::default();
    let mut errors = Vec::new();
    for &topology in &plan.topologies {
        let settings = options.settings;
        match commit::run_topology(plan, dir, topology, settings, &probe, &watchdog, &mut cases) {
            Ok(b) => {
                backends.get_or_insert(b);
            }
            Err(e) => record_error(&mut errors, format!("topology {}", topology.name()), &e),
        }
    }
    eprintln!("raw bandwidth limit ({:?}) ...", plan.raw_duration);
    let bandwidth_1m = raw_loop(plan, dir, RAW_STREAM_BYTES, &watchdog)?;
    let peak_rss_kib_before_catch_up = crate::machine::peak_rss_kib();
    let catch_up = if plan.catch_up {
        eprintln!("catch-up of {} MiB ...", plan.catch_up_bytes >> 20);
        catch_up::run(plan, dir, options.settings, options.backend, &watchdog)
            .map_err(|e| record_error(&mut errors, "catch-up".into(), &e))
            .ok()
    } else {
        None
    };
    let steered = if plan.steered {
        eprintln!("steered catch-up of {} MiB ...", plan.steered_bytes >> 20);
        steered::run(plan, dir, options.settings, options.backend, &watchdog)
            .map_err(|e| record_error(&mut errors, "steered catch-up".into(), &e))
            .ok()
    } else {
        None
    };
    let fdatasync_4k_after = raw_loop(plan, dir, RAW_BLOCK_BYTES, &watchdog)?;
    Ok(RunResult {
        backends: backends.unwrap_or_default(),
        raw: RawLimits {
            fdatasync_4k,
            fdatasync_4k_streams,
            rtt,
            null_port,
            bandwidth_1m,
            fdatasync_4k_after,
        },
        cases: cases.cases,
        net_cases: cases.net_cases,
        peak_rss_kib_before_catch_up,
        catch_up,
        steered,
        errors,
    })
}

/// The null-port ceilings, when the plan runs network cases.
fn null_port_ceilings(
    plan: &ReplicatePlan,
    options: RunOptions,
    watchdog: &Watchdog,
) -> anyhow::Result<Vec<PortCeiling>> {
    if !plan.network || plan.topologies.is_empty() {
        return Ok(Vec::new());
    }
    eprintln!("null-port ceilings ...");
    let window = plan.case_warm_up + plan.case_duration;
    watchdog.stage("null-port ceilings", 2 * window + RAW_MARGIN);
    let ceilings = null_port::measure(plan, options.settings.transport)?;
    watchdog.idle();
    Ok(ceilings)
}

fn record_error(errors: &mut Vec<String>, what: String, e: &anyhow::Error) {
    let message = format!("{what}: {e:#}");
    eprintln!("ERROR: {message}");
    errors.push(message);
}

/// One raw pwrite + fdatasync loop on a prewritten file, after a settle.
fn raw_loop(
    plan: &ReplicatePlan,
    dir: &Path,
    block_bytes: usize,
    watchdog: &Watchdog,
) -> anyhow::Result<RawResult> {
    watchdog.stage(
        format!("raw pwrite + fdatasync of {block_bytes} B"),
        plan.raw_duration + RAW_MARGIN,
    );
    settle(dir);
    let result = raw::run_loop(dir, FileKind::Prewritten, block_bytes, plan.raw_duration);
    watchdog.idle();
    result
}

/// `streams` concurrent raw loops on the probe's files.
fn raw_streams(
    plan: &ReplicatePlan,
    probe: &mut DiskProbe,
    streams: usize,
    watchdog: &Watchdog,
) -> anyhow::Result<StreamsResult> {
    watchdog.stage(
        format!("raw pwrite + fdatasync, {streams} streams"),
        plan.raw_duration + RAW_MARGIN,
    );
    let mut recorder = Recorder::new();
    let start = Instant::now();
    probe.run(streams, plan.raw_duration, None, &mut recorder)?;
    let elapsed_s = start.elapsed().as_secs_f64();
    watchdog.idle();
    Ok(StreamsResult {
        name: format!(
            "raw::pwrite_fdatasync/size={RAW_BLOCK_BYTES},file=prewritten,streams={streams}"
        ),
        streams,
        ops_per_s: recorder.len() as f64 / elapsed_s,
        latency: recorder.summary(),
    })
}

pub(crate) use crate::append::settle;
