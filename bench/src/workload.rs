//! The appenders of a logship case (threads or tokio tasks), the checkpointer, and the paired raw
//! loop.
//!
//! Phases are shared through one atomic: warm (run, do not record), measure (record), stop. An
//! operation is recorded only if it both started and finished in the measure phase.
//!
//! Pairing: the disk of a virtual machine (or a cloud volume) changes speed from one second to the
//! next (token-bucket throttling, neighbours). A 1-appender case therefore alternates short slices
//! of logship appends with slices of raw 4 KiB `pwrite` + `fdatasync` on a prewritten file, in the
//! same thread, so that its latency ratio compares two samples of the same moments.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use logship_engine::Log;

use crate::latency::Recorder;
use crate::plan::{CHECKPOINT_INTERVAL, PAIR_SLICE, RAW_BLOCK_BYTES, RAW_FILE_BYTES};
use crate::raw;

/// Phase: run the workload without recording.
pub const PHASE_WARM: u8 = 0;
/// Phase: record.
pub const PHASE_MEASURE: u8 = 1;
/// Phase: threads return.
pub const PHASE_STOP: u8 = 2;

/// What one appender (thread or task) measured.
#[derive(Debug, Default)]
pub struct AppenderResult {
    /// Commit latency of each recorded append.
    pub logship: Recorder,
    /// Sum of the recorded appends' latencies: the time this appender spent appending.
    pub logship_busy: Duration,
    /// Latency of each recorded raw operation (paired appenders only).
    pub raw: Recorder,
}

/// A prewritten file for the paired raw loop.
#[derive(Debug)]
pub struct PairedRaw {
    file: File,
    block: Vec<u8>,
    offset: u64,
}

impl PairedRaw {
    /// Prewrites `path` (one segment's size) for raw 4 KiB overwrites.
    ///
    /// # Errors
    /// On any I/O failure.
    pub fn create(path: &Path) -> anyhow::Result<PairedRaw> {
        Ok(PairedRaw {
            file: raw::prewrite(path, RAW_FILE_BYTES)?,
            block: raw::pattern(RAW_BLOCK_BYTES),
            offset: 0,
        })
    }

    /// One 4 KiB overwrite + fdatasync at the next offset; returns its latency.
    fn op(&mut self) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        self.file
            .write_all_at(&self.block, self.offset)
            .context("paired raw pwrite")?;
        self.file.sync_data().context("paired raw fdatasync")?;
        self.offset = (self.offset + RAW_BLOCK_BYTES as u64) % RAW_FILE_BYTES;
        Ok(t0.elapsed())
    }
}

/// An appender: append, wait until durable, repeat, until the stop phase. With `paired`, it
/// alternates [`PAIR_SLICE`] of appends with [`PAIR_SLICE`] of raw operations.
///
/// # Errors
/// When an append, its wait, or a raw operation fails.
pub fn appender(
    log: &Log,
    phase: &AtomicU8,
    start: &Barrier,
    payload: &Bytes,
    mut paired: Option<PairedRaw>,
) -> anyhow::Result<AppenderResult> {
    let mut result = AppenderResult::default();
    start.wait();
    loop {
        let slice = Instant::now();
        while paired.is_none() || slice.elapsed() < PAIR_SLICE {
            let before = phase.load(Ordering::Relaxed);
            if before == PHASE_STOP {
                return Ok(result);
            }
            let t0 = Instant::now();
            log.append(payload.clone())?.wait()?;
            let latency = t0.elapsed();
            if before == PHASE_MEASURE && phase.load(Ordering::Relaxed) == PHASE_MEASURE {
                result.logship.record(latency);
                result.logship_busy += latency;
            }
        }
        if let Some(raw) = paired.as_mut() {
            raw_slice(raw, phase, &mut result.raw)?;
        }
    }
}

/// A task appender: `append_async(..).await` (room in the queue), then `.await` the returned
/// `Append` (durable), repeat, until the stop phase. Its latency runs from before `append_async`
/// to after the durability await. It counts itself in `started` once running on the runtime.
///
/// # Errors
/// When an append or its durability fails.
pub async fn task_appender(
    log: Arc<Log>,
    phase: Arc<AtomicU8>,
    started: Arc<AtomicUsize>,
    payload: Bytes,
) -> anyhow::Result<AppenderResult> {
    let mut result = AppenderResult::default();
    started.fetch_add(1, Ordering::SeqCst);
    loop {
        let before = phase.load(Ordering::Relaxed);
        if before == PHASE_STOP {
            return Ok(result);
        }
        let t0 = Instant::now();
        let append = log.append_async(payload.clone()).await?;
        append.await?;
        let latency = t0.elapsed();
        if before == PHASE_MEASURE && phase.load(Ordering::Relaxed) == PHASE_MEASURE {
            result.logship.record(latency);
            result.logship_busy += latency;
        }
    }
}

/// Runs raw operations for [`PAIR_SLICE`] (or until the stop phase).
fn raw_slice(raw: &mut PairedRaw, phase: &AtomicU8, recorder: &mut Recorder) -> anyhow::Result<()> {
    let slice = Instant::now();
    while slice.elapsed() < PAIR_SLICE {
        let before = phase.load(Ordering::Relaxed);
        if before == PHASE_STOP {
            return Ok(());
        }
        let latency = raw.op()?;
        if before == PHASE_MEASURE && phase.load(Ordering::Relaxed) == PHASE_MEASURE {
            recorder.record(latency);
        }
    }
    Ok(())
}

/// Purges every durable segment after each rollover, like a database checkpoint, so that
/// steady-state writes go to recycled files and the disk footprint stays bounded.
///
/// # Errors
/// When a purge fails.
pub fn checkpointer(log: &Log, phase: &AtomicU8) -> anyhow::Result<()> {
    let mut seen = log.stats().rollovers;
    while phase.load(Ordering::Relaxed) != PHASE_STOP {
        std::thread::sleep(CHECKPOINT_INTERVAL);
        let rollovers = log.stats().rollovers;
        if rollovers != seen {
            seen = rollovers;
            log.purge_before(log.durable_lsn().next())
                .context("purging behind the writer")?;
        }
    }
    Ok(())
}
