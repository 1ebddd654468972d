//! `logship-bench`: the macro benchmark binary.
//!
//! `logship-bench append` measures, in one run and in one directory, the raw limits of the disk
//! (4 KiB `pwrite` + `fdatasync` latency, 1 MiB sequential `pwrite` + `fdatasync` bandwidth) and
//! then logship's durable appends across record sizes and appender counts, and prints every
//! logship figure as a ratio to the raw limit it is bounded by. See `bench/README.md` for how to
//! read the table.
//!
//! The binary owns its scratch directory: it creates a fresh one and removes it at the end, also
//! on error. It never touches any other file.
#![forbid(unsafe_code)]

mod append;
mod latency;
mod machine;
mod plan;
mod raw;
mod report;
mod scratch;
mod workload;

use std::path::PathBuf;

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
}

/// `--backend` values, mirroring [`Backend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Auto,
    #[value(name = "io_uring")]
    IoUring,
    Portable,
}

impl BackendArg {
    fn engine(self) -> Backend {
        match self {
            BackendArg::Auto => Backend::Auto,
            BackendArg::IoUring => Backend::IoUring,
            BackendArg::Portable => Backend::Portable,
        }
    }
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
    }
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
    let scratch = scratch::Scratch::create(&args.dir)?;
    let machine = machine::Machine::probe(scratch.path())?;
    if let Some(warning) = machine.warning() {
        eprintln!("WARNING: {warning}");
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    eprintln!(
        "logship-bench append: {} plan, scratch directory {} ({})",
        plan.name,
        scratch.path().display(),
        machine.fs_type
    );
    let run = append::run(&plan, scratch.path(), args.backend.engine())?;
    scratch.remove()?;
    let report = report::Report::new(command, plan, machine, run);
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
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
