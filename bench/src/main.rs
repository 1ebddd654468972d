//! `logship-bench`: the macro benchmark binary.
//!
//! `logship-bench append` measures, in one run and in one directory, the raw limits of the disk
//! (4 KiB `pwrite` + `fdatasync` latency, 1 MiB sequential `pwrite` + `fdatasync` bandwidth) and
//! then logship's durable appends across record sizes and appender counts, and prints every
//! logship figure as a ratio to the raw limit it is bounded by. See `bench/README.md` for how to
//! read the table.
//!
//! `logship-bench replicate` measures, in one run, the raw limits (4 KiB overwrite +
//! fdatasync latency, loopback TCP round trip, 1 MiB sequential bandwidth), then replicated
//! commit latency and throughput across cluster topologies of in-process `Node`s (clients in the
//! primary's process, and clients on its client port), and the catch-up bandwidth of an empty
//! follower, each as a ratio to its limit (`src/replicate/`); with `--peer postgres`, then the
//! PostgreSQL peer script, beside the network-client cases.
//!
//! `logship-bench failover` kills the primary of a three-member cluster of `logship node`
//! processes that elects its primary, and hands over to a follower, over and over under a
//! client's appends; it times detection, election, the first commit and switchovers, and checks
//! that nothing acknowledged was lost (`src/failover/`).
//!
//! The binary owns its scratch directory: it creates a fresh one and removes it at the end, also
//! on error. It never touches any other file.
// Unsafe code is denied (the workspace lint); the one exception is `failover::netns`, which
// calls unshare(2) and geteuid(2) for the failover benchmark's private network namespace.
#![deny(unsafe_code)]

mod append;
mod breakdown;
mod ceiling;
mod failover;
mod freed;
mod latency;
mod machine;
mod plan;
mod raw;
mod reopen;
mod replicate;
mod report;
mod scratch;
mod scrub;
mod segment_fill;
mod stats;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use logship_engine::io::Backend;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "logship-bench", about = "logship macro benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Durable append throughput and commit latency against the raw fdatasync limits.
    Append(AppendArgs),
    /// Replicated commit latency and throughput, and catch-up bandwidth, against the raw
    /// fdatasync, round-trip and bandwidth limits.
    Replicate(ReplicateArgs),
    /// The scrubber: its speed, the seconds per GiB at the default rate, and what it costs one
    /// appender's commit latency (p50, p99, p99.9) at the default and a high rate.
    Scrub(ScrubArgs),
    /// Failover of a three-member cluster that elects its primary (needs root, for a private
    /// network namespace): time to detect a killed primary, to elect another and to the first
    /// commit; planned switchover time; nothing acknowledged lost.
    Failover(FailoverArgs),
    /// Where the microseconds of one network client's commit go, with one sync follower,
    /// beside the ideal commit's (plain threads): `perf trace` of every thread's socket, write
    /// and fdatasync calls, and each thread's CPU per commit (needs perf, and root).
    Breakdown(BreakdownCliArgs),
    /// What a new segment costs its writer, batch by batch with an fdatasync each: written into
    /// fallocated blocks, or zero-filled first as the log's preallocator does, then
    /// overwritten; buffered and `O_DIRECT`.
    SegmentFill(SegmentFillArgs),
    /// How long a log takes to open (a restarted node's recovery time) after a crash and after
    /// a clean close, page cache warm and cold, for logs of several sizes, beside a cold read
    /// of the last segment.
    Reopen(ReopenArgs),
    /// `reopen`'s writer child: appends to a log, prints `ready` once durable, waits to be
    /// killed.
    #[command(hide = true)]
    ReopenWriter(ReopenWriterArgs),
}

/// Arguments of `reopen`.
#[derive(Debug, clap::Args)]
struct ReopenArgs {
    /// Log sizes, MiB of 4 KiB records. The defaults leave the last of the 64 MiB segments
    /// about 3 % full (128), then about 90 % full with 3 and with 32 segments (184, 2025).
    #[arg(long, value_delimiter = ',', default_values_t = [128, 184, 2025])]
    sizes_mib: Vec<u64>,
    /// Opens per case.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The log's backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Parent of the scratch directory.
    #[arg(long, value_name = "DIR", default_value = "target/bench-tmp")]
    dir: PathBuf,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Arguments of `reopen-writer`.
#[derive(Debug, clap::Args)]
struct ReopenWriterArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    bytes: u64,
    #[arg(long, value_enum)]
    backend: BackendArg,
}

/// Arguments of `segment-fill`.
#[derive(Debug, clap::Args)]
struct SegmentFillArgs {
    /// Segment size (MiB), the log's default.
    #[arg(long, default_value_t = logship_engine::options::DEFAULT_SEGMENT_SIZE_BYTES >> 20)]
    segment_mib: u64,
    /// Batch sizes (KiB).
    #[arg(long, value_delimiter = ',', default_values_t = [64, 128, 256, 512, 1024])]
    batches_kib: Vec<usize>,
    /// Rounds per case (the best is kept).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Parent of the scratch directory.
    #[arg(long, value_name = "DIR", default_value = "target/bench-tmp")]
    dir: PathBuf,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Arguments of `breakdown`.
#[derive(Debug, clap::Args)]
struct BreakdownCliArgs {
    /// Commits traced.
    #[arg(long, default_value_t = 2000)]
    commits: usize,
    /// Record size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Parent of the scratch directory.
    #[arg(long, value_name = "DIR", default_value = "target/bench-tmp")]
    dir: PathBuf,
    /// Keep the raw `perf trace` output in this file.
    #[arg(long, value_name = "FILE")]
    keep_trace: Option<PathBuf>,
    /// The nodes' network transport. On io_uring the port's and the nodes' reads are ring
    /// completions the trace does not see: the chain is lost, the call counts remain.
    #[arg(long, value_enum, default_value = "portable")]
    transport: BreakdownTransport,
    /// TLS on the replication link and the client port.
    #[arg(long)]
    tls: bool,
}

/// The transports `breakdown` runs on.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum BreakdownTransport {
    Portable,
    #[value(name = "io_uring")]
    IoUring,
}

/// Arguments of `failover`.
#[derive(Debug, clap::Args)]
struct FailoverArgs {
    /// 5 kills and 5 switchovers instead of 20 of each.
    #[arg(long)]
    quick: bool,
    /// Also write every figure as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Parent of the scratch directory that holds the nodes' configs, logs and data.
    #[arg(long, value_name = "DIR", default_value = "target/bench-tmp")]
    dir: PathBuf,
    /// Kill rounds instead of the plan's.
    #[arg(long)]
    kills: Option<usize>,
    /// Switchover rounds instead of the plan's.
    #[arg(long)]
    switchovers: Option<usize>,
    /// Copy the nodes' logs (`n1.log`...) into this directory at the end of the run (the
    /// scratch directory that holds them is removed).
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<PathBuf>,
}

/// Arguments of `scrub`.
#[derive(Debug, clap::Args)]
struct ScrubArgs {
    /// Bytes of records in the log the scrubber passes over (MiB).
    #[arg(long, default_value_t = 512)]
    fill_mib: u64,
    /// Seconds of each commit phase.
    #[arg(long, default_value_t = 5.0)]
    phase_secs: f64,
    /// Rounds of phases (no scrubber, each rate), interleaved.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Scrubber rates to compare with none, bytes per second.
    #[arg(long, value_delimiter = ',', default_values_t = [logship_replicator::config::DEFAULT_SCRUB_BYTES_PER_SEC, 64 << 20])]
    rates: Vec<u64>,
    /// Parent of the scratch directory.
    #[arg(long, value_name = "DIR", default_value = "target/bench-tmp")]
    dir: PathBuf,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Arguments of `append`.
#[derive(Debug, clap::Args)]
struct AppendArgs {
    /// Shorter cases and fewer of them (the whole run takes under a minute).
    #[arg(long)]
    quick: bool,
    /// Also write every figure as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Parent of the scratch directory. Default `./target/bench-tmp`: the file system the
    /// benchmark measures is the one this directory is on.
    #[arg(long, value_name = "DIR", default_value = "target/bench-tmp")]
    dir: PathBuf,
    /// Run only these cases instead of the plan's, as SIZExAPPENDERS with an optional `:tasks`
    /// (or `:threads`, the default) suffix, e.g. `100x1,100x64:tasks,65536x64`.
    #[arg(long, value_delimiter = ',', value_parser = parse_case)]
    cases: Vec<plan::Case>,
    /// The engine's hot-path I/O backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Waiting appenders never write their records themselves: every write is the writer
    /// thread's, as before caller-runs (for an A/B of the two on one build).
    #[arg(long)]
    no_caller_runs: bool,
}

/// `--backend` values, mirroring [`Backend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Auto,
    #[value(name = "io_uring")]
    IoUring,
    Portable,
    /// The log's `io_uring_direct` backend; the network transport has no direct variant, so a
    /// replicate run uses io_uring there.
    #[value(name = "io_uring_direct", alias = "direct")]
    IoUringDirect,
}

impl BackendArg {
    fn engine(self) -> Backend {
        match self {
            BackendArg::Auto => Backend::Auto,
            BackendArg::IoUring => Backend::IoUring,
            BackendArg::Portable => Backend::Portable,
            BackendArg::IoUringDirect => Backend::IoUringDirect,
        }
    }

    /// The value of a node configuration's `log.backend` key.
    fn config(self) -> &'static str {
        match self {
            BackendArg::Auto => "auto",
            BackendArg::IoUring => "io_uring",
            BackendArg::Portable => "portable",
            BackendArg::IoUringDirect => "io_uring_direct",
        }
    }

    /// The value of a node configuration's `node.transport` key (sockets have no direct I/O).
    fn transport_config(self) -> &'static str {
        match self {
            BackendArg::IoUringDirect => "io_uring",
            other => other.config(),
        }
    }
}

/// Arguments of `replicate`.
#[derive(Debug, clap::Args)]
struct ReplicateArgs {
    /// Shorter cases and a 128 MiB catch-up (the whole run takes under a minute).
    #[arg(long)]
    quick: bool,
    /// Also write every figure as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Parent of the scratch directory that holds every node's log. Default
    /// `./target/bench-tmp`: the file system the benchmark measures is the one this directory
    /// is on.
    #[arg(long, value_name = "DIR", default_value = "target/bench-tmp")]
    dir: PathBuf,
    /// The nodes' replication transport.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    transport: BackendArg,
    /// The nodes' log backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// How the 64-client cases run their clients: tokio tasks (the default: on the 2-vCPU
    /// machines they commit as much or more than 64 threads once a follower is involved, at
    /// less CPU) or OS threads.
    #[arg(long, value_enum, default_value_t = ClientsArg::Tasks)]
    clients_as: ClientsArg,
    /// Run only these topologies (for investigating one figure), e.g. `none,2sync_any2`; of
    /// `none`, `1sync`, `2sync_any1`, `2sync_any2`, `1sync_1async`.
    #[arg(long, value_delimiter = ',', value_parser = parse_topology)]
    topologies: Vec<replicate::plan::Topology>,
    /// Skip the catch-up measurement.
    #[arg(long)]
    no_catch_up: bool,
    /// The catch-up's log size in bytes, in place of the plan's (1 GiB full, 128 MiB quick):
    /// a quick catch-up lasts well under a second, too short to read a bandwidth off.
    #[arg(long, value_name = "BYTES")]
    catch_up_bytes: Option<u64>,
    /// Skip the steered catch-up (commits while an empty follower catches up, unthrottled and
    /// with `catch_up_latency_target_ms`).
    #[arg(long)]
    no_steered_catch_up: bool,
    /// Run only the steered catch-up (and the raw limits): no topology, network or catch-up
    /// case.
    #[arg(long, conflicts_with = "no_steered_catch_up")]
    steered_only: bool,
    /// Seconds the steered catch-up's clients run alone (no catch-up), in place of the plan's
    /// (3 full, 2 quick): their p99 over that span is what (g) divides by.
    #[arg(long, value_name = "SECS")]
    steered_alone: Option<f64>,
    /// The steered run's `catch_up_latency_target_ms` as a multiple of the primary's commit
    /// p99 alone, in place of 1.25: how fast the pacer lets a catch-up run at a looser or a
    /// tighter target.
    #[arg(long, value_name = "TIMES")]
    steered_target_of_alone: Option<f64>,
    /// Which p99 of the primary's commits alone the steered run's target multiplies: `whole`,
    /// every commit of the window (the default), or `windows`, the median of its 400 ms
    /// stretches' p99s (a quiet moment's, as before).
    #[arg(long, value_enum, default_value_t = TargetFromArg::Whole)]
    steered_target_from: TargetFromArg,
    /// Skip the network-client cases (clients on the primary's client port, topologies `none`
    /// and `1sync`).
    #[arg(long)]
    no_network: bool,
    /// Threads driving the connections of each many-client network case, each polling its
    /// share (as pgbench's `-j`); 0: one OS thread per connection.
    #[arg(long, value_name = "N", default_value_t = replicate::plan::NET_DRIVERS)]
    net_drivers: usize,
    /// Skip the TLS network cases (`...,tls`: the 100-byte network cases again, on a cluster
    /// with TLS on the client port and the replication link).
    #[arg(long)]
    no_tls: bool,
    /// The in-process 1-client cases with a follower measure their ideal commit with the
    /// node's hand-off: the acknowledgement read by a thread of its own that wakes the
    /// committing thread, instead of the committing thread reading it.
    #[arg(long)]
    ideal_handoff: bool,
    /// After the logship cases, run this peer's benchmark script and print each network case
    /// beside the peer's case of the same size and clients (`postgres`: needs root; installs
    /// PostgreSQL with apt-get). A peer that fails is reported and the run goes on.
    #[arg(long, value_enum)]
    peer: Option<PeerArg>,
    /// The nodes' scrubber rate in bytes per second (0: no scrubber); default: the node's
    /// default (`integrity.scrub_bytes_per_sec`), so the run measures what a node does.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    scrub_rate: Option<u64>,
}

fn parse_topology(s: &str) -> Result<replicate::plan::Topology, String> {
    replicate::plan::Topology::from_name(s).ok_or_else(|| {
        format!("{s:?} is not one of none, 1sync, 2sync_any1, 2sync_any2, 1sync_1async")
    })
}

/// `--peer` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PeerArg {
    /// `bench/peers/postgres.sh`: a primary and a synchronous standby, pgbench.
    Postgres,
}

/// `--steered-target-from` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TargetFromArg {
    Whole,
    Windows,
}

/// `--clients-as` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ClientsArg {
    Tasks,
    Threads,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Append(args) => run_append(&args),
        Command::Replicate(args) => run_replicate(&args),
        Command::Scrub(args) => run_scrub(&args),
        Command::Failover(args) => run_failover(&args),
        Command::Breakdown(args) => run_breakdown(&args),
        Command::SegmentFill(args) => run_segment_fill(&args),
        Command::Reopen(args) => run_reopen(&args),
        Command::ReopenWriter(args) => {
            reopen::writer_child(&args.dir, args.bytes, args.backend.engine())
        }
    }
}

fn run_reopen(args: &ReopenArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this binary for the writer child")?;
    let plan = reopen::ReopenPlan {
        sizes_mib: args.sizes_mib.clone(),
        rounds: args.rounds,
        backend: args.backend.config(),
    };
    let (scratch, _machine, command) = prepare("reopen", "reopen", &args.dir)?;
    let run = reopen::run(&plan, args.backend.engine(), &exe, scratch.path(), command)?;
    scratch.remove()?;
    print!("{}", reopen::table(&run));
    if let Some(path) = &args.json {
        write_json(path, &run)?;
    }
    Ok(())
}

fn run_breakdown(args: &BreakdownCliArgs) -> anyhow::Result<()> {
    let run = breakdown::trace(&breakdown::BreakdownArgs {
        commits: args.commits,
        record_bytes: args.size,
        dir: args.dir.clone(),
        keep_trace: args.keep_trace.clone(),
        // Portable by default: the client port then reads with system calls the trace sees
        // (on io_uring its reads are ring completions, and the chain loses its second link).
        settings: replicate::cluster::NodeSettings {
            transport: match args.transport {
                BreakdownTransport::Portable => "portable",
                BreakdownTransport::IoUring => "io_uring",
            },
            log_backend: "portable",
            scrub_bytes_per_sec: None,
        },
        tls: args.tls,
    })?;
    print!("{}", breakdown::report(&run, args.size));
    Ok(())
}

fn run_failover(args: &FailoverArgs) -> anyhow::Result<()> {
    // First, while this is the only thread: every thread and child started later inherits it.
    failover::netns::enter()?;
    let bin = failover::cluster::logship_binary()?;
    let mut plan = if args.quick {
        failover::FailoverPlan::quick()
    } else {
        failover::FailoverPlan::full()
    };
    plan.kills = args.kills.unwrap_or(plan.kills);
    plan.switchovers = args.switchovers.unwrap_or(plan.switchovers);
    let (scratch, machine, command) = prepare("failover", plan.name, &args.dir)?;
    let run = failover::run(&plan, scratch.path(), bin, args.keep_logs.as_deref())?;
    scratch.remove()?;
    let report = failover::Report::new(command, plan, machine, run);
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    let failures = report.failures();
    for f in &failures {
        eprintln!("ERROR: {f}");
    }
    if !failures.is_empty() {
        anyhow::bail!("{} part(s) of the run failed (see errors)", failures.len());
    }
    Ok(())
}

fn run_scrub(args: &ScrubArgs) -> anyhow::Result<()> {
    let plan = scrub::ScrubPlan {
        fill_bytes: args.fill_mib << 20,
        phase_secs: args.phase_secs,
        rounds: args.rounds,
        rates: args.rates.clone(),
    };
    let (scratch, _machine, _command) = prepare("scrub", "scrub", &args.dir)?;
    let run = scrub::run(&plan, scratch.path())?;
    scratch.remove()?;
    print!("{}", scrub::table(&run));
    if let Some(path) = &args.json {
        write_json(path, &run)?;
    }
    Ok(())
}

fn run_segment_fill(args: &SegmentFillArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.segment_mib > 0
            && args.rounds > 0
            && args.batches_kib.iter().all(|&b| b > 0 && b % 4 == 0),
        "--segment-mib, --rounds and --batches-kib take positive values, batches in whole 4 KiB \
         blocks"
    );
    let (scratch, _machine, command) = prepare("segment-fill", "segment-fill", &args.dir)?;
    let segment_bytes = args.segment_mib << 20;
    let batches: Vec<usize> = args.batches_kib.iter().map(|b| b << 10).collect();
    let cases = segment_fill::run(scratch.path(), segment_bytes, &batches, args.rounds)?;
    scratch.remove()?;
    let report = segment_fill::FillReport {
        command,
        segment_bytes,
        rounds: args.rounds,
        prezero_max_avg_batch_bytes: logship_engine::options::PREZERO_MAX_AVG_BATCH_BYTES,
        cases,
    };
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

/// Writes `value` as pretty JSON, with a final newline, to `path` (a run's `--json`).
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(value).context("serializing the run")?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Parses `SIZExAPPENDERS[:threads|:tasks]`.
fn parse_case(s: &str) -> Result<plan::Case, String> {
    let (case, mode) = match s.split_once(':') {
        None => (s, plan::Mode::Threads),
        Some((case, "threads")) => (case, plan::Mode::Threads),
        Some((case, "tasks")) => (case, plan::Mode::Tasks),
        Some((_, mode)) => return Err(format!("mode {mode:?} is not `threads` or `tasks`")),
    };
    let (size, appenders) = case
        .split_once('x')
        .ok_or_else(|| format!("{s:?} is not SIZExAPPENDERS[:tasks]"))?;
    let size = size.parse().map_err(|e| format!("size {size:?}: {e}"))?;
    let appenders: usize = appenders
        .parse()
        .map_err(|e| format!("appenders {appenders:?}: {e}"))?;
    if appenders == 0 {
        return Err("appenders must be at least 1".into());
    }
    Ok(plan::Case {
        record_bytes: size,
        appenders,
        mode,
    })
}

fn run_append(args: &AppendArgs) -> anyhow::Result<()> {
    let mut plan = if args.quick {
        plan::Plan::quick()
    } else {
        plan::Plan::full()
    };
    if !args.cases.is_empty() {
        plan.cases.clone_from(&args.cases);
    }
    let (scratch, machine, command) = prepare("append", plan.name, &args.dir)?;
    let engine = append::Engine {
        backend: args.backend.engine(),
        caller_runs: !args.no_caller_runs,
    };
    let run = append::run(&plan, scratch.path(), engine)?;
    scratch.remove()?;
    let report = report::Report::new(command, plan, machine, run);
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The scratch directory, the machine's description (warning on stderr when its file system
/// makes the figures meaningless) and the command line, for benchmark `name`.
fn prepare(
    name: &str,
    plan: &str,
    dir: &std::path::Path,
) -> anyhow::Result<(scratch::Scratch, machine::Machine, String)> {
    let scratch = scratch::Scratch::create(dir)?;
    let machine = machine::Machine::probe(scratch.path())?;
    if let Some(warning) = machine.warning() {
        eprintln!("WARNING: {warning}");
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    eprintln!(
        "logship-bench {name}: {plan} plan, scratch directory {} ({})",
        scratch.path().display(),
        machine.fs_type
    );
    Ok((scratch, machine, command))
}

fn run_replicate(args: &ReplicateArgs) -> anyhow::Result<()> {
    let mode = match args.clients_as {
        ClientsArg::Tasks => replicate::ClientMode::Tasks,
        ClientsArg::Threads => replicate::ClientMode::Threads,
    };
    let mut plan = if args.quick {
        replicate::ReplicatePlan::quick(mode)
    } else {
        replicate::ReplicatePlan::full(mode)
    };
    if !args.topologies.is_empty() {
        plan.topologies.clone_from(&args.topologies);
    }
    plan.catch_up = !args.no_catch_up;
    if let Some(bytes) = args.catch_up_bytes {
        plan.catch_up_bytes = bytes;
    }
    plan.network = !args.no_network;
    plan.tls = !args.no_tls;
    plan.ideal_handoff = args.ideal_handoff;
    plan.net_drivers = args.net_drivers;
    plan.steered = !args.no_steered_catch_up;
    if let Some(secs) = args.steered_alone {
        plan.steered_alone = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .context("--steered-alone takes a positive number of seconds")?;
    }
    if let Some(times) = args.steered_target_of_alone {
        anyhow::ensure!(
            times.is_finite() && times > 0.0,
            "--steered-target-of-alone takes a positive multiple"
        );
        plan.steered_target_of_alone = times;
    }
    plan.steered_target_from = match args.steered_target_from {
        TargetFromArg::Whole => replicate::plan::TargetFrom::Whole,
        TargetFromArg::Windows => replicate::plan::TargetFrom::Windows,
    };
    if args.steered_only {
        plan.topologies.clear();
        plan.catch_up = false;
        plan.network = false;
    }
    let (scratch, machine, command) = prepare("replicate", plan.name, &args.dir)?;
    let options = replicate::RunOptions {
        settings: replicate::cluster::NodeSettings {
            transport: args.transport.transport_config(),
            log_backend: args.backend.config(),
            scrub_bytes_per_sec: args.scrub_rate,
        },
        backend: args.backend.engine(),
    };
    let run = replicate::run(&plan, scratch.path(), options)?;
    scratch.remove()?;
    let peer = args.peer.map(|PeerArg::Postgres| run_peer(args));
    let report = replicate::Report::new(command, plan, machine, run, peer);
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    let failures = report.failures();
    if !failures.is_empty() {
        anyhow::bail!("{} part(s) of the run failed (see errors)", failures.len());
    }
    Ok(())
}

/// The PostgreSQL peer, with its clusters under `--dir` (the file system logship was measured
/// on).
fn run_peer(args: &ReplicateArgs) -> replicate::peer::PeerResult {
    let script = replicate::peer::postgres_script();
    match std::fs::canonicalize(&args.dir) {
        Ok(dir) => replicate::peer::run(&script, args.quick, &dir),
        Err(e) => replicate::peer::PeerResult::failed(
            format!("bash {}", script.display()),
            0.0,
            format!("{}: {e}", args.dir.display()),
            String::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plan::Case;

    #[test]
    fn cases_parse_with_an_optional_mode() {
        assert_eq!(parse_case("100x64"), Ok(Case::threads(100, 64)));
        assert_eq!(parse_case("100x64:threads"), Ok(Case::threads(100, 64)));
        assert_eq!(parse_case("4096x16:tasks"), Ok(Case::tasks(4096, 16)));
        assert!(parse_case("100x64:fibers").is_err());
        assert!(parse_case("100x0:tasks").is_err());
        assert!(parse_case("100").is_err());
    }
}
