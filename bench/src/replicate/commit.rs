//! One topology's commit cases: a fresh cluster in a fresh directory, every record size and
//! client count against it (each warmed up, then measured), in-process clients first, then
//! network clients on the primary's client port (`net.rs`) where the plan has them; a check
//! that every follower ended with every record, then shutdown and removal of the directory.
//!
//! Each case also measures the disk's fdatasync latency in its own moments (`probe.rs`): paired
//! slices in a 1-client case, a probe just before and just after the window in a 64-client
//! case.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use logship_engine::LogStats;
use logship_replicator::Node;
use serde::Serialize;

use crate::latency::{Recorder, Summary};
use crate::machine::{process_cpu_time, threads_cpu_time};
use crate::replicate::check::CommitCheck;
use crate::replicate::clients::{ClientResult, Clients, Paired, SharedProbe};
use crate::replicate::cluster::{Cluster, NodeSettings, READY_TIMEOUT};
use crate::replicate::ideal::{IdealCommit, IdealHow};
use crate::replicate::net::{self, NetCaseResult};
use crate::replicate::plan::{CaseSpec, ClientMode, NetCaseSpec, ReplicatePlan, Topology};
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
    /// The ideal commit's latency in the case's moments (`ideal.rs`): a 1-client case of a
    /// topology it models.
    pub ideal: Option<Summary>,
    /// Whether that ideal commit had the node's hand-off (`--ideal-handoff`): its
    /// acknowledgement read by a thread of its own that wakes the committing thread.
    pub ideal_handoff: bool,
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
    /// The primary's group commits written by the thread that appended (the lone client's
    /// write, caller-runs) rather than its log's writer thread, over the window.
    pub primary_caller_writes: u64,
}

/// The transport and log backend one cluster reported.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Backends {
    /// The replication transport's name.
    pub transport: String,
    /// The primary log's backend.
    pub log_backend: String,
}

/// Every commit case's figures, in run order: the in-process cases and the network-client
/// cases.
#[derive(Debug, Default)]
pub struct CaseResults {
    /// In-process clients (`Node::append`).
    pub cases: Vec<CaseResult>,
    /// Network clients (`Client::append` over the primary's client port).
    pub net_cases: Vec<NetCaseResult>,
}

/// Runs `topology`'s cases in `dir/topology-<name>`: the in-process ones, then the
/// network-client ones on the same cluster, appending each result to `out` as it completes (so
/// a later failure keeps the earlier figures); then the TLS network cases, if the plan has
/// them, on a TLS cluster of their own in `dir/topology-<name>-tls`.
///
/// # Errors
/// When a cluster does not start, a case fails, a follower misses records, or shutdown fails.
pub fn run_topology(
    plan: &ReplicatePlan,
    dir: &Path,
    topology: Topology,
    settings: NodeSettings,
    probe: &SharedProbe,
    watchdog: &Watchdog,
    out: &mut CaseResults,
) -> anyhow::Result<Backends> {
    let watch = (probe, watchdog);
    let backends = run_cluster(plan, dir, (topology, settings, false), watch, out)?;
    if plan.net_cases(topology).iter().any(|c| c.tls) {
        run_cluster(plan, dir, (topology, settings, true), watch, out)?;
    }
    Ok(backends)
}

/// One cluster of `topology` (with TLS on both ports if `tls`) and its cases: without TLS the
/// in-process and the plain network cases, with TLS the TLS network cases.
fn run_cluster(
    plan: &ReplicatePlan,
    dir: &Path,
    (topology, settings, tls): (Topology, NodeSettings, bool),
    (probe, watchdog): (&SharedProbe, &Watchdog),
    out: &mut CaseResults,
) -> anyhow::Result<Backends> {
    let suffix = if tls { "-tls" } else { "" };
    let cluster_dir = dir.join(format!("topology-{}{suffix}", topology.name()));
    watchdog.stage(
        format!("starting cluster {}{suffix}", topology.name()),
        READY_TIMEOUT * 2,
    );
    settle(dir);
    let client_port = plan.net_cases(topology).iter().any(|c| c.tls == tls);
    let cluster = Cluster::start(&cluster_dir, topology, settings, client_port, tls)?;
    let status = cluster.primary().status();
    let backends = Backends {
        transport: status.transport,
        log_backend: status.log_backend,
    };
    let check = Arc::new(cluster.commit_check());
    let measured = run_cases(plan, dir, (&cluster, tls), &check, (probe, watchdog), out);
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
    (cluster, tls): (&Cluster, bool),
    check: &Arc<CommitCheck>,
    (probe, watchdog): (&SharedProbe, &Watchdog),
    out: &mut CaseResults,
) -> anyhow::Result<()> {
    let budget =
        plan.case_warm_up + plan.case_duration + plan.probe_duration * 2 + JOIN_TIMEOUT * 2;
    let in_process = if tls {
        Vec::new()
    } else {
        plan.cases(cluster.topology())
    };
    for spec in in_process {
        watchdog.stage(spec.name(), budget);
        settle(dir);
        let case =
            run_case(plan, (cluster, dir), spec, check, probe).with_context(|| spec.name())?;
        print_progress(&case);
        out.cases.push(case);
    }
    let net = plan.net_cases(cluster.topology());
    for spec in net.into_iter().filter(|c| c.tls == tls) {
        watchdog.stage(spec.name(), budget);
        settle(dir);
        let case =
            run_net_case(plan, (cluster, dir), spec, check, probe).with_context(|| spec.name())?;
        print_progress(&case.case);
        out.net_cases.push(case);
    }
    Ok(())
}

fn print_progress(case: &CaseResult) {
    let ideal = (case.ideal.as_ref()).map_or_else(String::new, |i| {
        let how = if case.ideal_handoff {
            " (hand-off)"
        } else {
            ""
        };
        format!(", ideal p50 {:.1} us{how}", i.p50_us)
    });
    eprintln!(
        "{}: {:.0} rec/s, p50 {:.1} us, p99 {:.1} us, disk p50 {:.1} us{ideal}, {:.1} \
         records/write, {:.2} CPUs busy",
        case.name,
        case.records_per_s,
        case.latency.p50_us,
        case.latency.p99_us,
        case.disk.p50_us,
        case.primary_records_per_write,
        case.cpu_cores
    );
    if case.clients == 1 {
        eprintln!(
            "  the primary's writes by the appending thread: {} of {}",
            case.primary_caller_writes, case.primary_writes
        );
    }
}

/// One in-process case: its clients call `Node::append` on the primary.
fn run_case(
    plan: &ReplicatePlan,
    (cluster, dir): (&Cluster, &Path),
    spec: CaseSpec,
    check: &Arc<CommitCheck>,
    probe: &SharedProbe,
) -> anyhow::Result<CaseResult> {
    let pairing = (spec.clients == 1 && spec.mode == ClientMode::Threads).then_some(Pairing {
        dir,
        record_bytes: spec.record_bytes,
        network: false,
    });
    let measured = measure(plan, cluster, pairing, probe, check, |phase, pair| {
        Clients::spawn(cluster.primary(), phase, spec, check, pair)
    })?;
    Ok(case_result(spec.name(), spec, measured))
}

/// One network-client case: its clients are connections to the primary's client port, one
/// thread each.
fn run_net_case(
    plan: &ReplicatePlan,
    (cluster, dir): (&Cluster, &Path),
    spec: NetCaseSpec,
    check: &Arc<CommitCheck>,
    probe: &SharedProbe,
) -> anyhow::Result<NetCaseResult> {
    let addr = (cluster.primary().client_addr())
        .ok_or_else(|| anyhow::anyhow!("the primary has no client port"))?;
    let tls = cluster.client_tls();
    let pairing = (spec.clients == 1).then_some(Pairing {
        dir,
        record_bytes: spec.record_bytes,
        network: true,
    });
    let measured = measure(plan, cluster, pairing, probe, check, |phase, pair| {
        net::spawn((addr, tls), phase, spec, Some(check), pair)
    })?;
    let shape = CaseSpec {
        topology: spec.topology,
        record_bytes: spec.record_bytes,
        clients: spec.clients,
        mode: ClientMode::Threads,
    };
    let client_cpu_cores = measured.window.client_cpu_cores;
    Ok(NetCaseResult {
        case: case_result(spec.name(), shape, measured),
        pipeline: spec.pipeline,
        tls: spec.tls,
        client_cpu_cores,
    })
}

/// A 1-client case's pairing with the disk probe and the ideal commit.
#[derive(Clone, Copy, Debug)]
struct Pairing<'a> {
    /// Where the ideal commit's files go.
    dir: &'a Path,
    record_bytes: usize,
    /// Whether the case's client is a network client.
    network: bool,
}

/// What one case measured: its clients' commits and the disk in the same moments.
#[derive(Debug)]
struct Measured {
    clients: ClientResult,
    disk: Recorder,
    paired: bool,
    ideal_handoff: bool,
    window: Window,
    early: (u64, Option<String>),
    link_failures: u64,
}

/// Starts the clients with `spawn` (given the phase, and the probe and the ideal commit when
/// paired), warms up, measures one window, and joins them; probes the disk in the same moments
/// (paired with a single client's commits, else just before and after the window).
fn measure(
    plan: &ReplicatePlan,
    cluster: &Cluster,
    pairing: Option<Pairing<'_>>,
    probe: &SharedProbe,
    check: &CommitCheck,
    spawn: impl FnOnce(&Arc<AtomicU8>, Option<Paired>) -> anyhow::Result<Clients>,
) -> anyhow::Result<Measured> {
    let streams = cluster.topology().nodes();
    let paired = pairing.is_some();
    let mut around = Recorder::new();
    if !paired {
        sample(probe, streams, plan.probe_duration, &mut around)?;
    }
    let primary = cluster.primary();
    let failures_before = link_failures(primary);
    let phase = Arc::new(AtomicU8::new(PHASE_WARM));
    let pair = pairing
        .map(|p| pair_with(plan, cluster, probe, p))
        .transpose()?;
    let ideal_handoff = (pair.as_ref().and_then(|p| p.ideal.as_ref()))
        .is_some_and(|i| i.lock().is_ok_and(|i| i.has_handoff()));
    let clients = spawn(&phase, pair)?;
    std::thread::sleep(plan.case_warm_up);
    let (stats_before, cpu_before, t0) =
        (primary.log().stats(), process_cpu_time(), Instant::now());
    let client_cpu_before = threads_cpu_time(net::CLIENT_THREAD_PREFIX);
    phase.store(PHASE_MEASURE, Ordering::SeqCst);
    std::thread::sleep(plan.case_duration);
    // Read before the stop: a client thread's time is not counted once it has ended.
    let client_cpu = threads_cpu_time(net::CLIENT_THREAD_PREFIX).saturating_sub(client_cpu_before);
    phase.store(PHASE_STOP, Ordering::SeqCst);
    let (stats_after, window) = (primary.log().stats(), t0.elapsed());
    let cpu_cores = (process_cpu_time() - cpu_before).as_secs_f64() / window.as_secs_f64();
    let client_cpu_cores = client_cpu.as_secs_f64() / window.as_secs_f64();
    let client_threads = clients.os_threads();
    let mut result = clients.join(JOIN_TIMEOUT)?;
    let early = check.take();
    let link_failures = link_failures(primary) - failures_before;
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
        client_cpu_cores,
        client_threads,
        stats: (stats_before, stats_after),
    };
    Ok(Measured {
        clients: result,
        disk: around,
        paired,
        ideal_handoff,
        window,
        early,
        link_failures,
    })
}

/// A 1-client case's disk probe and ideal commit.
fn pair_with(
    plan: &ReplicatePlan,
    cluster: &Cluster,
    probe: &SharedProbe,
    p: Pairing<'_>,
) -> anyhow::Result<Paired> {
    let how = IdealHow {
        network: p.network,
        handoff: plan.ideal_handoff,
    };
    let ideal = IdealCommit::start(p.dir, cluster.topology(), p.record_bytes, how)?;
    Ok(Paired {
        probe: Arc::clone(probe),
        streams: cluster.topology().nodes(),
        ideal: ideal.map(|i| Arc::new(Mutex::new(i))),
    })
}

/// What a case's window measured outside the clients.
#[derive(Debug)]
struct Window {
    elapsed: Duration,
    cpu_cores: f64,
    /// The network clients' threads' share of `cpu_cores` (0 for in-process clients).
    client_cpu_cores: f64,
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

/// The figures of case `name`, of `spec`'s shape.
fn case_result(name: String, spec: CaseSpec, m: Measured) -> CaseResult {
    let window = &m.window;
    let elapsed_s = window.elapsed.as_secs_f64();
    let (primary_writes, primary_records_per_write) = group_commits(window.stats.0, window.stats.1);
    let records = m.clients.commits.len();
    CaseResult {
        name,
        topology: spec.topology,
        record_bytes: spec.record_bytes,
        clients: spec.clients,
        mode: spec.mode,
        client_threads: window.client_threads,
        records,
        elapsed_s,
        records_per_s: records as f64 / elapsed_s,
        mb_per_s: (records * spec.record_bytes as u64) as f64 / 1e6 / elapsed_s,
        latency: m.clients.commits.summary(),
        disk: m.disk.summary(),
        disk_paired: m.paired,
        ideal: (m.clients.ideal.len() > 0).then(|| m.clients.ideal.summary()),
        ideal_handoff: m.ideal_handoff,
        early_acks: m.early.0,
        first_early_ack: m.early.1,
        link_failures: m.link_failures,
        cpu_cores: window.cpu_cores,
        primary_writes,
        primary_records_per_write,
        primary_caller_writes: window.stats.1.caller_writes - window.stats.0.caller_writes,
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
