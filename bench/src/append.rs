//! The run: the raw latency limits, the small-record cases, the raw bandwidth limits, the 64 KiB
//! cases, then the raw latency limit again (to show how much the disk drifted during the run).
//! Right before each 64-appender 100 B case runs the hand-off ceiling of its mode
//! (`ceiling.rs`).
//!
//! A case opens a log in a fresh subdirectory, warms it up (fills and purges more segments than
//! the free pool holds, so that measured writes overwrite recycled files, as in a long-running
//! database), runs its own workload unmeasured for a moment, then measures `appenders` appenders
//! that each loop on "append, wait until durable" for a fixed time (`workload.rs`): OS threads
//! calling `append` + `wait` (mode `threads`), or tokio tasks on a multi-thread runtime with one
//! worker per CPU awaiting `append_async` and then the returned `Append` (mode `tasks`). A
//! 1-appender threads case pairs its appends with raw operations in the same moments. A
//! checkpointer thread (in both modes) purges
//! behind the writer after each rollover, as a database checkpoint would, so the disk footprint
//! stays bounded. The log is closed and its directory removed before the next case.

use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use logship_engine::io::Backend;
use logship_engine::{Log, LogStats, Options};
use serde::Serialize;

use crate::ceiling::{self, Ceilings, Shape, Wake};
use crate::latency::Summary;
use crate::machine::process_cpu_time;
use crate::plan::{
    Case, Mode, Plan, LARGE_RECORD_BYTES, MANY_APPENDERS, MAX_FREE_SEGMENTS, RAW_BLOCK_BYTES,
    SEGMENT_SIZE_BYTES, SMALL_RECORD_BYTES, WARM_UP_RECORD_BYTES, WARM_UP_SEGMENTS,
};
use crate::raw::{self, RawLimits, RawResult};
use crate::workload::{
    appender, checkpointer, task_appender, AppenderResult, PairedRaw, PHASE_MEASURE, PHASE_STOP,
    PHASE_WARM,
};

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct RunResult {
    /// The engine's backend, as `Log::backend` names it.
    pub backend: String,
    /// Whether waiting appenders wrote their records themselves while the writer thread was
    /// idle (`Options::caller_runs`; `--no-caller-runs` turns it off).
    pub caller_runs: bool,
    /// The raw limits, measured before the cases.
    pub raw: RawLimits,
    /// The 4 KiB overwrite latency measured again after the cases.
    pub raw_overwrite_4k_after: RawResult,
    /// The hand-off ceilings of the 64-appender 100 B cases, each measured right before its case.
    pub ceilings: Ceilings,
    /// One entry per case, in run order.
    pub cases: Vec<CaseResult>,
}

/// One case's figures.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    /// `logship::append/size=100,appenders=1`, `...,appenders=64,mode=tasks` and the like.
    pub name: String,
    /// Payload bytes per record.
    pub record_bytes: usize,
    /// Appenders (threads or tasks).
    pub appenders: usize,
    /// `threads` or `tasks`.
    pub mode: Mode,
    /// OS threads that ran the appenders: `appenders` in mode `threads`, the runtime's worker
    /// threads in mode `tasks`.
    pub appender_threads: usize,
    /// The engine backend that ran it.
    pub backend: String,
    /// Appends that became durable within the measured window.
    pub records: u64,
    /// The measured window in seconds.
    pub elapsed_s: f64,
    /// Durable appends per second.
    pub records_per_s: f64,
    /// Payload MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Commit latency: from calling `append` to `wait` returning (threads), or from calling
    /// `append_async` to the awaited `Append` resolving (tasks).
    pub latency: Summary,
    /// Raw 4 KiB overwrite + fdatasync latency measured in slices alternating with the appends
    /// (1-appender threads cases only).
    pub paired_raw: Option<Summary>,
    /// CPU time the whole process (appenders, engine threads) used per second of the window:
    /// 1.0 is one CPU busy. Near `nproc`, the case is CPU-bound.
    pub cpu_cores: f64,
    /// The engine's counters over the measured window.
    pub engine: EngineDelta,
}

/// How the cases open their logs.
#[derive(Clone, Copy, Debug)]
pub struct Engine {
    /// The hot-path backend.
    pub backend: Backend,
    /// `Options::caller_runs`.
    pub caller_runs: bool,
}

/// Differences of [`LogStats`] over the measured window, and what they imply.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct EngineDelta {
    /// Records made durable.
    pub records: u64,
    /// Bytes written, headers included.
    pub bytes: u64,
    /// Group-commit writes.
    pub writes: u64,
    /// fdatasync calls.
    pub syncs: u64,
    /// Segment rollovers.
    pub rollovers: u64,
    /// Rollovers that reused a purged segment file.
    pub recycled: u64,
    /// Records per group-commit write.
    pub records_per_write: f64,
    /// Bytes per group-commit write.
    pub bytes_per_write: f64,
    /// Of `writes`, those a waiting appender made itself (caller-runs).
    pub caller_writes: u64,
}

impl EngineDelta {
    /// The share of writes waiting appenders made themselves, in percent.
    pub fn caller_writes_percent(&self) -> f64 {
        if self.writes == 0 {
            0.0
        } else {
            100.0 * self.caller_writes as f64 / self.writes as f64
        }
    }

    fn between(a: LogStats, b: LogStats) -> EngineDelta {
        let writes = b.writes - a.writes;
        let per_write = |x: u64| {
            if writes == 0 {
                0.0
            } else {
                x as f64 / writes as f64
            }
        };
        EngineDelta {
            records: b.records - a.records,
            bytes: b.bytes - a.bytes,
            writes,
            syncs: b.syncs - a.syncs,
            rollovers: b.rollovers - a.rollovers,
            recycled: b.recycled - a.recycled,
            records_per_write: per_write(b.records - a.records),
            bytes_per_write: per_write(b.bytes - a.bytes),
            caller_writes: b.caller_writes - a.caller_writes,
        }
    }
}

/// Runs the whole plan in `dir`.
///
/// # Errors
/// On any I/O or engine failure.
pub fn run(plan: &Plan, dir: &Path, engine: Engine) -> anyhow::Result<RunResult> {
    // Each raw limit runs just before the cases it bounds, so both see the disk in a similar
    // state (a throttled virtual disk changes speed over seconds).
    let (small, large): (Vec<_>, Vec<_>) = plan
        .cases
        .iter()
        .partition(|c| c.record_bytes < LARGE_RECORD_BYTES);
    eprintln!("raw latency limits ({:?} each) ...", plan.raw_duration);
    settle(dir);
    let [overwrite_4k, append_4k] = raw::measure_latency(dir, plan.raw_duration)?;
    let [odirect_dsync_4k, odirect_fdatasync_4k] =
        raw::measure_direct_latency(dir, plan.raw_duration)?;
    let mut ceilings = Ceilings::default();
    let mut cases = run_cases(plan, dir, engine, &small, &mut ceilings)?;
    eprintln!("raw bandwidth limits ({:?} each) ...", plan.raw_duration);
    settle(dir);
    let [overwrite_1m, append_1m] = raw::measure_bandwidth(dir, plan.raw_duration)?;
    cases.extend(run_cases(plan, dir, engine, &large, &mut ceilings)?);
    settle(dir);
    let raw_overwrite_4k_after = raw::run_loop(
        dir,
        raw::FileKind::Prewritten,
        RAW_BLOCK_BYTES,
        plan.raw_duration,
    )?;
    let raw = RawLimits {
        overwrite_4k,
        append_4k,
        overwrite_1m,
        append_1m,
        odirect_dsync_4k,
        odirect_fdatasync_4k,
    };
    Ok(RunResult {
        backend: cases.first().map(|c| c.backend.clone()).unwrap_or_default(),
        caller_runs: engine.caller_runs,
        raw,
        raw_overwrite_4k_after,
        ceilings,
        cases,
    })
}

/// Measures, before a 64-appender 100 B case, the hand-off ceiling of its mode (both ways of
/// waking threads) into `ceilings`, for `plan.raw_duration` each after `plan.case_warm_up`.
fn measure_ceilings(
    plan: &Plan,
    dir: &Path,
    spec: Case,
    ceilings: &mut Ceilings,
) -> anyhow::Result<()> {
    if spec.appenders != MANY_APPENDERS || spec.record_bytes != SMALL_RECORD_BYTES {
        return Ok(());
    }
    let wakes: &[Wake] = match spec.mode {
        Mode::Threads => &[Wake::Broadcast, Wake::Unpark],
        Mode::Tasks => &[Wake::Wakers],
    };
    settle(dir);
    let shape = Shape {
        appenders: MANY_APPENDERS,
        record_bytes: SMALL_RECORD_BYTES,
        warm_up: plan.case_warm_up,
        duration: plan.raw_duration,
    };
    for c in ceiling::measure(dir, shape, wakes)? {
        eprintln!(
            "{}: {:.0} rec/s, {:.1} records/flush, flush mean {:.1} us, cycle {:.1} us, \
             {:.2} CPUs busy",
            c.name, c.records_per_s, c.records_per_flush, c.flush.mean_us, c.cycle_us, c.cpu_cores
        );
        match c.wake {
            Wake::Broadcast => ceilings.threads_broadcast = Some(c),
            Wake::Unpark => ceilings.threads_unpark = Some(c),
            Wake::Wakers => ceilings.tasks = Some(c),
        }
    }
    Ok(())
}

fn run_cases(
    plan: &Plan,
    dir: &Path,
    engine: Engine,
    cases: &[&Case],
    ceilings: &mut Ceilings,
) -> anyhow::Result<Vec<CaseResult>> {
    let mut results = Vec::with_capacity(cases.len());
    for &&spec in cases {
        measure_ceilings(plan, dir, spec, ceilings)?;
        settle(dir);
        let case = run_case(plan, dir, engine, spec)?;
        eprintln!(
            "{}: {:.0} rec/s, {:.1} MB/s, p50 {:.1} us, {:.1} records/write, {:.0} % of writes by appenders, {:.2} CPUs busy",
            case.name,
            case.records_per_s,
            case.mb_per_s,
            case.latency.p50_us,
            case.engine.records_per_write,
            case.engine.caller_writes_percent(),
            case.cpu_cores
        );
        results.push(case);
    }
    Ok(results)
}

/// Runs one case in a fresh subdirectory of `dir`.
fn run_case(plan: &Plan, dir: &Path, engine: Engine, spec: Case) -> anyhow::Result<CaseResult> {
    let (size, appenders) = (spec.record_bytes, spec.appenders);
    let case_dir = dir.join(format!(
        "log-size{size}-appenders{appenders}-{}",
        spec.mode.as_str()
    ));
    let paired_path = dir.join(format!("paired-raw-size{size}"));
    let pairs = is_paired(spec);
    let paired = pairs.then(|| PairedRaw::create(&paired_path)).transpose()?;
    let options = Options {
        create_if_missing: true,
        segment_size_bytes: SEGMENT_SIZE_BYTES,
        max_free_segments: MAX_FREE_SEGMENTS,
        backend: engine.backend,
        caller_runs: engine.caller_runs,
        ..Options::default()
    };
    let log = Arc::new(
        Log::open(&case_dir, options).with_context(|| format!("opening {}", case_dir.display()))?,
    );
    warm_up(&log).context("warming up")?;
    let mut case = measure(plan, &log, spec, paired)?;
    case.backend = log.backend().to_string();
    let log = Arc::try_unwrap(log).map_err(|_| anyhow!("a thread still holds the log"))?;
    log.close().context("closing the log")?;
    std::fs::remove_dir_all(&case_dir)
        .with_context(|| format!("removing {}", case_dir.display()))?;
    if pairs {
        std::fs::remove_file(&paired_path)
            .with_context(|| format!("removing {}", paired_path.display()))?;
    }
    Ok(case)
}

/// Whether a case pairs its appends with raw operations: 1-appender threads cases.
fn is_paired(spec: Case) -> bool {
    spec.mode == Mode::Threads && spec.appenders == 1
}

/// Writes [`WARM_UP_SEGMENTS`] segments of large records, waits for them, purges them, so
/// that the free pool is full and the segment files are allocated, written blocks, and seals
/// the segment the warm-up left active, so that the case writes into a recycled one. Without
/// the seal the case wrote into that last segment, a fresh file whose blocks were allocated
/// and never written (the writer does not pre-zero spares under 1 MiB batches), and every
/// fdatasync also converted extents: about 30 % slower than an overwrite here, which is not
/// the steady state of a long-running log the cases are meant to show.
fn warm_up(log: &Log) -> anyhow::Result<()> {
    let payload = Bytes::from(raw::pattern(WARM_UP_RECORD_BYTES));
    let records = WARM_UP_SEGMENTS * SEGMENT_SIZE_BYTES / WARM_UP_RECORD_BYTES as u64;
    let mut last = None;
    for _ in 0..records {
        last = Some(log.append(payload.clone())?);
    }
    if let Some(last) = last {
        last.wait()?;
    }
    log.purge_before(log.durable_lsn().next())?;
    log.seal_active()?;
    Ok(())
}

/// Runs the workload: unmeasured for `plan.case_warm_up`, then measured for `plan.case_duration`.
/// `paired` (1-appender threads cases) goes to the single appender.
fn measure(
    plan: &Plan,
    log: &Arc<Log>,
    spec: Case,
    paired: Option<PairedRaw>,
) -> anyhow::Result<CaseResult> {
    let phase = Arc::new(AtomicU8::new(PHASE_WARM));
    let payload = Bytes::from(raw::pattern(spec.record_bytes));
    let checkpointer = {
        let (log, phase) = (Arc::clone(log), Arc::clone(&phase));
        std::thread::spawn(move || checkpointer(&log, &phase))
    };
    // Every appender is running before the warm-up starts.
    let appenders = match spec.mode {
        Mode::Threads => spawn_threads(log, &phase, &payload, spec.appenders, paired),
        Mode::Tasks => spawn_tasks(log, &phase, &payload, spec.appenders),
    };
    let appenders = match appenders {
        Ok(a) => a,
        Err(e) => {
            phase.store(PHASE_STOP, Ordering::SeqCst);
            let _ = checkpointer.join();
            return Err(e);
        }
    };
    std::thread::sleep(plan.case_warm_up);
    let (stats_before, cpu_before, t0) = (log.stats(), process_cpu_time(), Instant::now());
    phase.store(PHASE_MEASURE, Ordering::SeqCst);
    std::thread::sleep(plan.case_duration);
    phase.store(PHASE_STOP, Ordering::SeqCst);
    let (stats_after, window) = (log.stats(), t0.elapsed());
    let cpu_cores = (process_cpu_time() - cpu_before).as_secs_f64() / window.as_secs_f64();
    let appender_threads = appenders.os_threads();
    let mut merged = AppenderResult::default();
    for r in appenders.join()? {
        merged.logship.merge(&r.logship);
        merged.raw.merge(&r.raw);
        merged.logship_busy += r.logship_busy;
    }
    checkpointer
        .join()
        .map_err(|_| anyhow!("checkpointer thread panicked"))??;
    // A paired appender appended only part of the window: its rate is over its own busy time.
    let elapsed = if is_paired(spec) {
        merged.logship_busy
    } else {
        window
    };
    Ok(case_result(
        spec,
        appender_threads,
        &merged,
        elapsed,
        cpu_cores,
        EngineDelta::between(stats_before, stats_after),
    ))
}

/// A case's running appenders.
enum Appenders {
    /// One OS thread each.
    Threads(Vec<JoinHandle<anyhow::Result<AppenderResult>>>),
    /// Tokio tasks on their own multi-thread runtime.
    Tasks {
        runtime: tokio::runtime::Runtime,
        workers: usize,
        tasks: Vec<tokio::task::JoinHandle<anyhow::Result<AppenderResult>>>,
    },
}

impl Appenders {
    /// OS threads running the appenders.
    fn os_threads(&self) -> usize {
        match self {
            Appenders::Threads(threads) => threads.len(),
            Appenders::Tasks { workers, .. } => *workers,
        }
    }

    /// Waits for every appender (after the stop phase) and returns what each measured; the
    /// first failure wins.
    fn join(self) -> anyhow::Result<Vec<AppenderResult>> {
        match self {
            Appenders::Threads(threads) => threads
                .into_iter()
                .map(|t| t.join().map_err(|_| anyhow!("appender thread panicked"))?)
                .collect(),
            Appenders::Tasks { runtime, tasks, .. } => {
                let results = runtime.block_on(async {
                    let mut results = Vec::with_capacity(tasks.len());
                    for t in tasks {
                        results.push(t.await.map_err(|e| anyhow!("appender task: {e}"))??);
                    }
                    Ok(results)
                });
                runtime.shutdown_background();
                results
            }
        }
    }
}

/// Starts `n` appender threads and returns once all of them are running.
fn spawn_threads(
    log: &Arc<Log>,
    phase: &Arc<AtomicU8>,
    payload: &Bytes,
    n: usize,
    mut paired: Option<PairedRaw>,
) -> anyhow::Result<Appenders> {
    let start = Arc::new(Barrier::new(n + 1));
    let threads = (0..n)
        .map(|_| {
            let (log, phase, start) = (Arc::clone(log), Arc::clone(phase), Arc::clone(&start));
            let (payload, paired) = (payload.clone(), paired.take());
            std::thread::spawn(move || appender(&log, &phase, &start, &payload, paired))
        })
        .collect();
    start.wait();
    Ok(Appenders::Threads(threads))
}

/// Starts a multi-thread tokio runtime with one worker per CPU and `n` appender tasks on it;
/// returns once all of them have started.
fn spawn_tasks(
    log: &Arc<Log>,
    phase: &Arc<AtomicU8>,
    payload: &Bytes,
    n: usize,
) -> anyhow::Result<Appenders> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("bench-task-worker")
        .enable_time()
        .build()
        .context("starting the tokio runtime")?;
    let started = Arc::new(AtomicUsize::new(0));
    let tasks = (0..n)
        .map(|_| {
            let (log, phase, started) = (Arc::clone(log), Arc::clone(phase), Arc::clone(&started));
            runtime.spawn(task_appender(log, phase, started, payload.clone()))
        })
        .collect::<Vec<_>>();
    while started.load(Ordering::SeqCst) < n {
        if tasks.iter().any(tokio::task::JoinHandle::is_finished) {
            // A task ended before the others started: it failed, and `join` will say why.
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(Appenders::Tasks {
        runtime,
        workers,
        tasks,
    })
}

fn case_result(
    spec: Case,
    appender_threads: usize,
    merged: &AppenderResult,
    elapsed: Duration,
    cpu_cores: f64,
    engine: EngineDelta,
) -> CaseResult {
    let elapsed_s = elapsed.as_secs_f64();
    let records = merged.logship.len();
    let size = spec.record_bytes;
    CaseResult {
        name: spec.name(),
        record_bytes: size,
        appenders: spec.appenders,
        mode: spec.mode,
        appender_threads,
        backend: String::new(),
        records,
        elapsed_s,
        records_per_s: records as f64 / elapsed_s,
        mb_per_s: (records * size as u64) as f64 / 1e6 / elapsed_s,
        latency: merged.logship.summary(),
        paired_raw: (merged.raw.len() > 0).then(|| merged.raw.summary()),
        cpu_cores,
        engine,
    }
}

/// Flushes dirty data of the file system under `dir` (other processes' included, e.g. a build's),
/// so that writeback started before a measurement does not land inside it. Best effort: `sync -f`
/// is syncfs(2) on that file system; without it, plain `sync`.
pub(crate) fn settle(dir: &Path) {
    let synced = std::process::Command::new("sync")
        .arg("-f")
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !synced {
        let _ = std::process::Command::new("sync").status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_the_warm_up_the_log_writes_into_a_recycled_segment() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            create_if_missing: true,
            segment_size_bytes: SEGMENT_SIZE_BYTES,
            max_free_segments: MAX_FREE_SEGMENTS,
            ..Options::default()
        };
        let log = Log::open(dir.path(), options).unwrap();
        warm_up(&log).unwrap();
        log.append(Bytes::from_static(b"first record of a case"))
            .unwrap()
            .wait()
            .unwrap();
        assert!(
            log.stats().recycled >= 1,
            "the case's first segment is a fresh file: {:?}",
            log.stats()
        );
        log.close().unwrap();
    }
}
