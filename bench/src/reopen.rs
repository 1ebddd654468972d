//! `logship-bench reopen`: how long a log takes to open, which is a restarted node's recovery
//! time before it can serve, after a crash (its writer SIGKILLed) and after a clean close, with
//! the page cache warm (a process crash) and cold (a power cut or a reboot), beside the limit
//! measured in the same run: reading the last segment's file once, cold, with 1 MiB `pread`s.
//!
//! Open reads every segment's header and scans the last segment whole (docs/fault-tolerance.md,
//! "Recovery Time Objective"), so its time should follow the last segment's size and the number
//! of segments, not the bytes of the log: the run fills logs of several sizes to show it. Each
//! log is filled by a child process of this binary (`reopen-writer`), which is SIGKILLed once
//! its records are durable; each crash round after that has a new child append 64 KiB more and
//! be killed the same way. "Cold" drops the log's pages first (`fdatasync`, then
//! `posix_fadvise(DONTNEED)` of every file: what a writer killed mid-way left dirty is written
//! back, as the kernel would have done, and nothing is cached).

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use logship_engine::io::std_fs::drop_cached_pages;
use logship_engine::io::Backend;
use logship_engine::{Bytes, Log, Options};
use serde::Serialize;

use crate::stats::quantile;

/// Records the writer child appends: 4 KiB each.
const RECORD_BYTES: usize = 4096;
/// What each crash round's writer appends before it is killed.
const CRASH_ROUND_BYTES: u64 = 64 << 10;
/// Bytes per read of the cold-read limit.
const READ_CHUNK_BYTES: usize = 1 << 20;
/// The line the writer child prints once its records are durable.
const READY: &str = "ready";
/// Bound on a writer child getting there (2 GiB take about 10 s here).
const WRITER_BOUND: Duration = Duration::from_secs(600);

/// What one run measures.
#[derive(Clone, Debug, Serialize)]
pub struct ReopenPlan {
    /// Log sizes, MiB of records.
    pub sizes_mib: Vec<u64>,
    /// Opens per case.
    pub rounds: usize,
    /// The log's backend.
    pub backend: &'static str,
}

/// One log size, one way the log was left, one cache state.
#[derive(Clone, Debug, Serialize)]
pub struct ReopenCase {
    /// MiB of records the log was filled with.
    pub log_mib: u64,
    /// Segment files at the last open.
    pub segments: usize,
    /// MiB of records in the last segment at the last open (the part of its file the scan
    /// decodes; the rest it passes over as zeros).
    pub last_segment_records_mib: f64,
    /// `crash` (writer SIGKILLed) or `close` (closed cleanly).
    pub after: &'static str,
    /// `warm` or `cold`.
    pub cache: &'static str,
    /// Each open, milliseconds.
    pub open_ms: Vec<f64>,
    /// Their median.
    pub p50_ms: f64,
    /// Their maximum.
    pub max_ms: f64,
}

/// One log size's limit: reading its last segment's file once, cold.
#[derive(Clone, Debug, Serialize)]
pub struct ColdRead {
    /// MiB of records the log was filled with.
    pub log_mib: u64,
    /// The last segment file's bytes.
    pub bytes: u64,
    /// Milliseconds of each read (one per round), and their median.
    pub ms: Vec<f64>,
    /// Median.
    pub p50_ms: f64,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct ReopenRun {
    /// The command line.
    pub command: String,
    /// The plan.
    pub plan: ReopenPlan,
    /// Every case.
    pub cases: Vec<ReopenCase>,
    /// Every log size's limit.
    pub limits: Vec<ColdRead>,
}

/// The writer child: opens (creating) the log in `dir`, appends `bytes` of 4 KiB records,
/// syncs, prints [`READY`] and waits to be killed.
///
/// # Errors
/// When the log cannot be opened or written.
pub fn writer_child(dir: &Path, bytes: u64, backend: Backend) -> anyhow::Result<()> {
    let log = Log::open(dir, options(backend)).context("the writer child opening the log")?;
    let record = Bytes::from(vec![0x5au8; RECORD_BYTES]);
    for i in 0..bytes / RECORD_BYTES as u64 {
        let a = log.append(record.clone())?;
        if i % 1024 == 1023 {
            a.wait()?;
        }
    }
    log.sync()?;
    println!("{READY}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn options(backend: Backend) -> Options {
    Options {
        create_if_missing: true,
        backend,
        ..Options::default()
    }
}

/// Runs the plan in `scratch`, starting writer children from `exe`.
///
/// # Errors
/// When a log cannot be written, opened or read, or a child fails.
pub fn run(
    plan: &ReopenPlan,
    backend: Backend,
    exe: &Path,
    scratch: &Path,
    command: String,
) -> anyhow::Result<ReopenRun> {
    anyhow::ensure!(plan.rounds > 0, "--rounds must be at least 1");
    let (mut cases, mut limits) = (Vec::new(), Vec::new());
    for &mib in &plan.sizes_mib {
        let dir = scratch.join(format!("log-{mib}"));
        let writer = Writer {
            exe,
            dir: &dir,
            backend: plan.backend,
        };
        writer.crash(mib << 20)?;
        let mut opens = Opens::default();
        let mut reads = Vec::new();
        for _ in 0..plan.rounds {
            writer.crash(CRASH_ROUND_BYTES)?;
            opens.crash_warm.push(timed_open(&dir, backend)?);
            writer.crash(CRASH_ROUND_BYTES)?;
            drop_cache(&dir)?;
            opens.crash_cold.push(timed_open(&dir, backend)?);
            opens.close_warm.push(timed_open(&dir, backend)?);
            drop_cache(&dir)?;
            opens.close_cold.push(timed_open(&dir, backend)?);
            reads.push(cold_read(&last_segment(&dir)?)?);
        }
        let last = last_segment(&dir)?;
        let bytes = std::fs::metadata(&last)?.len();
        let segments = segment_files(&dir)?.len();
        let filled = last_segment_records_mib(&dir, &last, backend)?;
        cases.extend(opens.cases(mib, segments, filled));
        limits.push(ColdRead {
            log_mib: mib,
            bytes,
            p50_ms: median(&reads),
            ms: reads,
        });
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(ReopenRun {
        command,
        plan: plan.clone(),
        cases,
        limits,
    })
}

/// The opens of one log size, milliseconds, by how the log was left and the cache.
#[derive(Default)]
struct Opens {
    crash_warm: Vec<f64>,
    crash_cold: Vec<f64>,
    close_warm: Vec<f64>,
    close_cold: Vec<f64>,
}

impl Opens {
    fn cases(self, log_mib: u64, segments: usize, filled: f64) -> Vec<ReopenCase> {
        [
            ("crash", "warm", self.crash_warm),
            ("crash", "cold", self.crash_cold),
            ("close", "warm", self.close_warm),
            ("close", "cold", self.close_cold),
        ]
        .into_iter()
        .map(|(after, cache, open_ms)| ReopenCase {
            log_mib,
            segments,
            last_segment_records_mib: filled,
            after,
            cache,
            p50_ms: median(&open_ms),
            max_ms: open_ms.iter().copied().fold(0.0, f64::max),
            open_ms,
        })
        .collect()
    }
}

/// Starts writer children on one log directory.
struct Writer<'a> {
    exe: &'a Path,
    dir: &'a Path,
    backend: &'static str,
}

impl Writer<'_> {
    /// A child appends `bytes` to the log and is SIGKILLed once they are durable.
    fn crash(&self, bytes: u64) -> anyhow::Result<()> {
        let mut child = Command::new(self.exe)
            .arg("reopen-writer")
            .arg("--dir")
            .arg(self.dir)
            .args(["--bytes", &bytes.to_string(), "--backend", self.backend])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} reopen-writer", self.exe.display()))?;
        let out = child
            .stdout
            .take()
            .context("the writer child has no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(read.map(|_| line));
        });
        let line = rx.recv_timeout(WRITER_BOUND);
        let _ = child.kill();
        let status = child.wait().context("reaping the writer child")?;
        match line {
            Ok(Ok(line)) if line.trim() == READY => Ok(()),
            Err(_) => anyhow::bail!("the writer child was not ready within {WRITER_BOUND:?}"),
            other => anyhow::bail!(
                "the writer child ended before its records were durable ({status}, {other:?})"
            ),
        }
    }
}

/// Opens the log, returns the milliseconds it took, and closes it cleanly.
fn timed_open(dir: &Path, backend: Backend) -> anyhow::Result<f64> {
    let started = Instant::now();
    let log = Log::open(dir, options(backend)).context("opening the log")?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    log.close().context("closing the log")?;
    Ok(ms)
}

/// Writes back and drops every cached page of the log's files.
fn drop_cache(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        file.sync_data()?;
        drop_cached_pages(&file, 0, file.metadata()?.len())?;
    }
    Ok(())
}

/// The segment files of the log, sorted by name (so by base LSN).
fn segment_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".seg") && n.starts_with(|c: char| c.is_ascii_digit()))
        })
        .collect();
    segments.sort();
    Ok(segments)
}

fn last_segment(dir: &Path) -> anyhow::Result<PathBuf> {
    segment_files(dir)?
        .pop()
        .with_context(|| format!("no segment in {}", dir.display()))
}

/// MiB of records (with their headers) in the last segment, whose file is `last`: the records
/// from its base LSN (its name) to the log's last, 4 KiB each.
fn last_segment_records_mib(dir: &Path, last: &Path, backend: Backend) -> anyhow::Result<f64> {
    let base: u64 = last
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no base LSN in {}", last.display()))?;
    let log = Log::open(dir, options(backend)).context("opening the log")?;
    let records = (log.last_lsn().get() + 1).saturating_sub(base);
    log.close().context("closing the log")?;
    let record = (RECORD_BYTES + logship_engine::record::RECORD_HEADER_BYTES) as f64;
    Ok(records as f64 * record / f64::from(1 << 20))
}

/// Milliseconds to read `path` whole, cold.
fn cold_read(path: &Path) -> anyhow::Result<f64> {
    use std::os::unix::fs::FileExt as _;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    drop_cached_pages(&file, 0, len)?;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let started = Instant::now();
    let mut offset = 0u64;
    while offset < len {
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            break;
        }
        offset += n as u64;
    }
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

fn median(values: &[f64]) -> f64 {
    quantile(&mut values.to_vec(), 0.5)
}

/// The run as a table: each case's open p50 and max, and for the cold ones their ratio to the
/// log size's cold read of the last segment.
pub fn table(run: &ReopenRun) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "command: {}\nbackend: {}   rounds: {}\nlimit: the last segment's file read once, cold (1 MiB preads)\n",
        run.command, run.plan.backend, run.plan.rounds
    );
    let _ = writeln!(
        out,
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11}",
        "case", "segments", "last MiB", "p50 ms", "max ms", "limit ms", "p50/limit"
    );
    for c in &run.cases {
        let limit = run.limits.iter().find(|l| l.log_mib == c.log_mib);
        let name = format!("reopen/log={}MiB,after={},{}", c.log_mib, c.after, c.cache);
        let (limit_ms, ratio) = match (limit, c.cache) {
            (Some(l), "cold") => (
                format!("{:.1}", l.p50_ms),
                format!("{:.2}", c.p50_ms / l.p50_ms),
            ),
            _ => ("-".to_string(), "-".to_string()),
        };
        let _ = writeln!(
            out,
            "{name:<34} {:>9} {:>9.1} {:>9.1} {:>9.1} {limit_ms:>11} {ratio:>11}",
            c.segments, c.last_segment_records_mib, c.p50_ms, c.max_ms
        );
    }
    for l in &run.limits {
        let _ = writeln!(
            out,
            "limit/log={}MiB: last segment {:.1} MiB read cold in {:.1} ms p50 ({:.0} MB/s)",
            l.log_mib,
            l.bytes as f64 / f64::from(1 << 20),
            l.p50_ms,
            l.bytes as f64 / 1e3 / l.p50_ms
        );
    }
    out
}
