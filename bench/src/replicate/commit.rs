//! One topology's commit cases: a fresh cluster in a fresh directory, every record size and
//! client count against it (each warmed up, then measured), a check that every follower ended
//! with every record, then shutdown and removal of the directory.
//!
//! Each case also measures the disk's fdatasync latency in its own moments (`probe.rs`): paired
//! slices in a 1-client case, a probe just before and just after the window in a 64-client
//! case.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use logship_engine::LogStats;
use logship_replicator::Node;
use serde::Serialize;

use crate::latency::{Recorder, Summary};
use crate::machine::process_cpu_time;
use crate::replicate::check::CommitCheck;
use crate::replicate::clients::{ClientResult, Clients, Paired, SharedProbe};
use crate::replicate::cluster::{Cluster, NodeSettings, READY_TIMEOUT};
use crate::replicate::plan::{CaseSpec, ClientMode, ReplicatePlan, Topology};
use crate::replicate::run::settle;
use crate::replicate::watchdog::Watchdog;
use crate::workload::{PHASE_MEASURE, PHASE_STOP, PHASE_WARM};

/// Longest the clients may take to finish after the stop: the default commit timeout (5 s,
/// after which a commit fails with `QuorumUnavailable`) and a margin.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the followers may take to hold every record after the last case.
const CAUGHT_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a cluster may take to shut down.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(15);

/// One commit case's figures.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    /// `replicate::commit/topology=1sync,size=100,clients=1` and the like.
    pub name: String,
    /// The cluster shape.
    pub topology: Topology,
    /// Payload bytes per record.
    pub record_bytes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// `threads` or `tasks`.
    pub mode: ClientMode,
    /// OS threads that ran the clients.
    pub client_threads: usize,
    /// Commits that started and finished in the window.
    pub records: u64,
    /// The window in seconds.
    pub elapsed_s: f64,
    /// Commits per second (a paired case: per second spent committing).
    pub records_per_s: f64,
    /// Payload MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Commit latency at `remote_durable`: from calling `append` to the commit resolving.
    pub latency: Summary,
    /// Raw 4 KiB overwrite + fdatasync latency in the case's moments, one concurrent stream per
    /// node: paired with the commits (1 client) or just before and after the window (64
    /// clients).
    pub disk: Summary,
    /// Whether `disk` was paired with the commits.
    pub disk_paired: bool,
    /// CPU time of the whole process (clients and every node) per second of the window.
    pub cpu_cores: f64,
    /// Commits that resolved before the primary and the quorum were durable (`check.rs`);
    /// anything but 0 means the figures do not measure durability.
    pub early_acks: u64,
    /// The first such commit, described.
    pub first_early_ack: Option<String>,
    /// Follower link failures (connect failures, timeouts, lost connections) the primary
    /// counted from warm-up to the clients' end: a stall with these is a reconnect.
    pub link_failures: u64,
    /// The primary log's group commits over the window.
    pub primary_writes: u64,
    /// Records per group commit of the primary's log over the window.
    pub primary_records_per_write: f64,
}

/// The transport and log backend one cluster reported.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Backends {
    /// The replication transport's name.
    pub transport: String,
    /// The primary log's backend.
    pub log_backend: String,
}

/// Runs `topology`'s cases in `dir/topology-<name>`, appending each result to `out` as it
/// completes (so a later failure keeps the earlier figures).
///
/// # Errors
/// When the cluster does not start, a case fails, a follower misses records, or shutdown fails.
pub fn run_topology(
    plan: &ReplicatePlan,
    dir: &Path,
    topology: Topology,
    settings: NodeSettings,
    probe: &SharedProbe,
    watchdog: &Watchdog,
    out: &mut Vec<CaseResult>,
) -> anyhow::Result<Backends> {
    let cluster_dir = dir.join(format!("topology-{}", topology.name()));
    watchdog.stage(
        format!("starting cluster {}", topology.name()),
        READY_TIMEOUT * 2,
    );
    settle(dir);
    let cluster = Cluster::start(&cluster_dir, topology, settings)?;
    let status = cluster.primary().status();
    let backends = Backends {
        transport: status.transport,
        log_backend: status.log_backend,
    };
    let check = Arc::new(cluster.commit_check());
    let measured = run_cases(plan, dir, &cluster, &check, probe, watchdog, out);
    drop(check);
    let checked = measured.and_then(|()| {
        watchdog.stage(
            format!("followers of {} catching up", topology.name()),
            CAUGHT_UP_TIMEOUT * 2,
        );
        cluster.wait_followers_caught_up(CAUGHT_UP_TIMEOUT)
    });
    watchdog.stage(
        format!("shutting down cluster {}", topology.name()),
        SHUTDOWN_BUDGET,
    );
    let stopped = cluster.shutdown();
    watchdog.idle();
    checked?;
    stopped?;
    std::fs::remove_dir_all(&cluster_dir)
        .with_context(|| format!("removing {}", cluster_dir.display()))?;
    Ok(backends)
}

fn run_cases(
    plan: &ReplicatePlan,
    dir: &Path,
    cluster: &Cluster,
    check: &Arc<CommitCheck>,
    probe: &SharedProbe,
    watchdog: &Watchdog,
    out: &mut Vec<CaseResult>,
) -> anyhow::Result<()> {
    for spec in plan.cases(cluster.topology()) {
        let budget =
            plan.case_warm_up + plan.case_duration + plan.probe_duration * 2 + JOIN_TIMEOUT * 2;
        watchdog.stage(spec.name(), budget);
        settle(dir);
        let case = run_case(plan, cluster, spec, check, probe).with_context(|| spec.name())?;
        eprintln!(
            "{}: {:.0} rec/s, p50 {:.1} us, p99 {:.1} us, disk p50 {:.1} us, {:.1} records/write, \
             {:.2} CPUs busy",
            case.name,
            case.records_per_s,
            case.latency.p50_us,
            case.latency.p99_us,
            case.disk.p50_us,
            case.primary_records_per_write,
            case.cpu_cores
        );
        out.push(case);
    }
    Ok(())
}

/// Warms up, measures one window, and joins the clients; probes the disk in the same moments.
fn run_case(
    plan: &ReplicatePlan,
    cluster: &Cluster,
    spec: CaseSpec,
    check: &Arc<CommitCheck>,
    probe: &SharedProbe,
) -> anyhow::Result<CaseResult> {
    let paired = spec.clients == 1 && spec.mode == ClientMode::Threads;
    let streams = spec.topology.nodes();
    let mut around = Recorder::new();
    if !paired {
        sample(probe, streams, plan.probe_duration, &mut around)?;
    }
    let primary = cluster.primary();
    let failures_before = link_failures(primary);
    let phase = Arc::new(AtomicU8::new(PHASE_WARM));
    let clients = Clients::spawn(
        primary,
        &phase,
        spec,
        check,
        paired.then(|| Paired {
            probe: Arc::clone(probe),
            streams,
        }),
    )?;
    std::thread::sleep(plan.case_warm_up);
    let (stats_before, cpu_before, t0) =
        (primary.log().stats(), process_cpu_time(), Instant::now());
    phase.store(PHASE_MEASURE, Ordering::SeqCst);
    std::thread::sleep(plan.case_duration);
    phase.store(PHASE_STOP, Ordering::SeqCst);
    let (stats_after, window) = (primary.log().stats(), t0.elapsed());
    let cpu_cores = (process_cpu_time() - cpu_before).as_secs_f64() / window.as_secs_f64();
    let client_threads = clients.os_threads();
    let mut result = clients.join(JOIN_TIMEOUT)?;
    let early = check.take();
    let failures = link_failures(primary) - failures_before;
    if paired {
        std::mem::swap(&mut around, &mut result.probe);
    } else {
        sample(probe, streams, plan.probe_duration, &mut around)?;
    }
    let window = Window {
        // A paired client committed for only part of the window: its rate is over its busy
        // time.
        elapsed: if paired { result.busy } else { window },
        cpu_cores,
        client_threads,
        stats: (stats_before, stats_after),
    };
    let mut case = case_result(spec, &result, &around, paired, &window);
    (case.early_acks, case.first_early_ack) = early;
    case.link_failures = failures;
    Ok(case)
}

/// What a case's window measured outside the clients.
#[derive(Debug)]
struct Window {
    elapsed: Duration,
    cpu_cores: f64,
    client_threads: usize,
    stats: (LogStats, LogStats),
}

fn sample(
    probe: &SharedProbe,
    streams: usize,
    duration: Duration,
    into: &mut Recorder,
) -> anyhow::Result<()> {
    (probe.lock())
        .map_err(|_| anyhow::anyhow!("the disk probe is poisoned"))?
        .run(streams, duration, None, into)
}

fn case_result(
    spec: CaseSpec,
    clients: &ClientResult,
    disk: &Recorder,
    disk_paired: bool,
    window: &Window,
) -> CaseResult {
    let elapsed_s = window.elapsed.as_secs_f64();
    let (primary_writes, primary_records_per_write) = group_commits(window.stats.0, window.stats.1);
    let records = clients.commits.len();
    CaseResult {
        name: spec.name(),
        topology: spec.topology,
        record_bytes: spec.record_bytes,
        clients: spec.clients,
        mode: spec.mode,
        client_threads: window.client_threads,
        records,
        elapsed_s,
        records_per_s: records as f64 / elapsed_s,
        mb_per_s: (records * spec.record_bytes as u64) as f64 / 1e6 / elapsed_s,
        latency: clients.commits.summary(),
        disk: disk.summary(),
        disk_paired,
        early_acks: 0,
        first_early_ack: None,
        link_failures: 0,
        cpu_cores: window.cpu_cores,
        primary_writes,
        primary_records_per_write,
    }
}

/// Link failures the primary counted over all its followers.
fn link_failures(primary: &Node) -> u64 {
    let status = primary.status().primary;
    status.map_or(0, |p| p.followers.iter().map(|f| f.counters.failures).sum())
}

/// Group-commit writes between two snapshots, and records per write.
fn group_commits(a: LogStats, b: LogStats) -> (u64, f64) {
    let writes = b.writes - a.writes;
    let records = b.records - a.records;
    let per_write = if writes == 0 {
        0.0
    } else {
        records as f64 / writes as f64
    };
    (writes, per_write)
}
