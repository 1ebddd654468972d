//! The raw limits: what the file system gives a single writer that does nothing but `pwrite` and
//! `fdatasync`, measured in the benchmark's own directory.
//!
//! Each loop runs on a "prewritten" file (every block written and fsynced first, as a recycled
//! segment is) and, for reference, on a fresh file that grows with each write (each fdatasync
//! then also commits the new size and extents, which costs more on ext4 and xfs). Writes are
//! buffered, like the engine's portable and io_uring backends; the `O_DIRECT` loops
//! ([`run_direct_loop`]) give the limit of the `io_uring_direct` backend.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::latency::{Recorder, Summary};
use crate::plan::{RAW_BLOCK_BYTES, RAW_FILE_BYTES, RAW_FRESH_CAP_BYTES, RAW_STREAM_BYTES};

/// Where the loop writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Sequential offsets wrapping within a fully written, fsynced file.
    Prewritten,
    /// Sequential offsets at the end of a new file.
    Fresh,
}

impl FileKind {
    /// The name used in case names.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Prewritten => "prewritten",
            FileKind::Fresh => "fresh",
        }
    }
}

/// One raw loop's figures.
#[derive(Clone, Debug, Serialize)]
pub struct RawResult {
    /// `raw::pwrite_fdatasync/size=4096,file=prewritten` and the like.
    pub name: String,
    /// Bytes per write.
    pub block_bytes: usize,
    /// The file written.
    pub file: FileKind,
    /// Bytes written.
    pub bytes: u64,
    /// Wall time of the loop in seconds.
    pub elapsed_s: f64,
    /// Bandwidth in MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Operations (write + fdatasync) per second.
    pub ops_per_s: f64,
    /// Latency of one write + fdatasync.
    pub latency: Summary,
}

/// Creates `path`, fills `len` bytes, fsyncs it and its directory.
///
/// # Errors
/// On any I/O failure.
pub fn prewrite(path: &Path, len: u64) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let chunk = pattern(RAW_STREAM_BYTES);
    let mut off = 0;
    while off < len {
        let n = chunk
            .len()
            .min(usize::try_from(len - off).unwrap_or(usize::MAX));
        file.write_all_at(&chunk[..n], off)
            .with_context(|| format!("prewriting {}", path.display()))?;
        off += n as u64;
    }
    file.sync_all()
        .with_context(|| format!("fsync {}", path.display()))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("fsync {}", dir.display()))?;
    }
    Ok(file)
}

/// Runs `block_bytes` pwrite + fdatasync at sequential offsets for `duration`.
/// On a prewritten file the offsets wrap within [`RAW_FILE_BYTES`]; a fresh file grows, up to
/// [`RAW_FRESH_CAP_BYTES`].
///
/// # Errors
/// On any I/O failure.
pub fn run_loop(
    dir: &Path,
    kind: FileKind,
    block_bytes: usize,
    duration: Duration,
) -> anyhow::Result<RawResult> {
    let path = dir.join(format!("raw-{}-{block_bytes}", kind.name()));
    let file = match kind {
        FileKind::Prewritten => prewrite(&path, RAW_FILE_BYTES)?,
        FileKind::Fresh => prewrite(&path, 0)?,
    };
    let block = pattern(block_bytes);
    let mut recorder = Recorder::new();
    let mut written: u64 = 0;
    let start = Instant::now();
    while start.elapsed() < duration
        && (kind == FileKind::Prewritten || written < RAW_FRESH_CAP_BYTES)
    {
        let offset = match kind {
            FileKind::Prewritten => {
                written % (RAW_FILE_BYTES - RAW_FILE_BYTES % block_bytes as u64)
            }
            FileKind::Fresh => written,
        };
        let t0 = Instant::now();
        file.write_all_at(&block, offset)
            .with_context(|| format!("pwrite {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("fdatasync {}", path.display()))?;
        recorder.record(t0.elapsed());
        written += block_bytes as u64;
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(RawResult {
        name: format!(
            "raw::pwrite_fdatasync/size={block_bytes},file={}",
            kind.name()
        ),
        block_bytes,
        file: kind,
        bytes: written,
        elapsed_s,
        mb_per_s: written as f64 / 1e6 / elapsed_s,
        ops_per_s: recorder.len() as f64 / elapsed_s,
        latency: recorder.summary(),
    })
}

/// How an `O_DIRECT` loop makes each write durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectSync {
    /// The descriptor is opened `O_DSYNC`: each write is durable when `pwrite` returns.
    Dsync,
    /// Plain `O_DIRECT` writes, each followed by an `fdatasync`.
    Fdatasync,
}

/// Runs `block_bytes` `O_DIRECT` pwrites at sequential offsets of a prewritten file for
/// `duration`, each made durable as `sync` says, from a 4096-aligned buffer. `Ok(None)` when the
/// file system refuses `O_DIRECT` (`EINVAL`, as tmpfs before Linux 6.6 does).
///
/// # Errors
/// On any other I/O failure.
pub fn run_direct_loop(
    dir: &Path,
    sync: DirectSync,
    block_bytes: usize,
    duration: Duration,
) -> anyhow::Result<Option<RawResult>> {
    let (label, flags) = match sync {
        DirectSync::Dsync => ("pwrite_odirect_dsync", libc::O_DIRECT | libc::O_DSYNC),
        DirectSync::Fdatasync => ("pwrite_odirect_fdatasync", libc::O_DIRECT),
    };
    let path = dir.join(format!("raw-{label}-{block_bytes}"));
    drop(prewrite(&path, RAW_FILE_BYTES)?);
    let opened = OpenOptions::new()
        .write(true)
        .custom_flags(flags)
        .open(&path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("opening {} O_DIRECT", path.display())),
    };
    let mut block = logship_engine::io::aligned::AlignedBytes::with_capacity(block_bytes);
    block.extend_from_slice(&pattern(block_bytes));
    let wrap = RAW_FILE_BYTES - RAW_FILE_BYTES % block_bytes as u64;
    let mut recorder = Recorder::new();
    let mut written: u64 = 0;
    let start = Instant::now();
    while start.elapsed() < duration {
        let t0 = Instant::now();
        file.write_all_at(block.as_slice(), written % wrap)
            .with_context(|| format!("pwrite {}", path.display()))?;
        if sync == DirectSync::Fdatasync {
            file.sync_data()
                .with_context(|| format!("fdatasync {}", path.display()))?;
        }
        recorder.record(t0.elapsed());
        written += block_bytes as u64;
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(Some(RawResult {
        name: format!("raw::{label}/size={block_bytes}"),
        block_bytes,
        file: FileKind::Prewritten,
        bytes: written,
        elapsed_s,
        mb_per_s: written as f64 / 1e6 / elapsed_s,
        ops_per_s: recorder.len() as f64 / elapsed_s,
        latency: recorder.summary(),
    }))
}

/// All raw limits of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RawLimits {
    /// 4 KiB overwrite + fdatasync: the latency limit.
    pub overwrite_4k: RawResult,
    /// 4 KiB append to a growing file + fdatasync, for reference.
    pub append_4k: RawResult,
    /// 1 MiB sequential overwrite + fdatasync: the bandwidth limit.
    pub overwrite_1m: RawResult,
    /// 1 MiB sequential append to a growing file + fdatasync, for reference.
    pub append_1m: RawResult,
    /// 4 KiB `O_DIRECT | O_DSYNC` overwrite: the latency limit of the `io_uring_direct` backend
    /// (`None` where the file system refuses `O_DIRECT`).
    pub odirect_dsync_4k: Option<RawResult>,
    /// 4 KiB `O_DIRECT` overwrite + fdatasync, the alternative the direct backend did not take.
    pub odirect_fdatasync_4k: Option<RawResult>,
}

/// Measures the latency limits (4 KiB loops) in `dir`.
///
/// # Errors
/// On any I/O failure.
pub fn measure_latency(dir: &Path, duration: Duration) -> anyhow::Result<[RawResult; 2]> {
    Ok([
        run_loop(dir, FileKind::Prewritten, RAW_BLOCK_BYTES, duration)?,
        run_loop(dir, FileKind::Fresh, RAW_BLOCK_BYTES, duration)?,
    ])
}

/// Measures the `O_DIRECT` latency limits (4 KiB loops) in `dir`: `O_DSYNC`, then fdatasync.
///
/// # Errors
/// On any I/O failure but a refused `O_DIRECT`.
pub fn measure_direct_latency(
    dir: &Path,
    duration: Duration,
) -> anyhow::Result<[Option<RawResult>; 2]> {
    Ok([
        run_direct_loop(dir, DirectSync::Dsync, RAW_BLOCK_BYTES, duration)?,
        run_direct_loop(dir, DirectSync::Fdatasync, RAW_BLOCK_BYTES, duration)?,
    ])
}

/// Measures the bandwidth limits (1 MiB loops) in `dir`.
///
/// # Errors
/// On any I/O failure.
pub fn measure_bandwidth(dir: &Path, duration: Duration) -> anyhow::Result<[RawResult; 2]> {
    Ok([
        run_loop(dir, FileKind::Prewritten, RAW_STREAM_BYTES, duration)?,
        run_loop(dir, FileKind::Fresh, RAW_STREAM_BYTES, duration)?,
    ])
}

/// Non-zero, non-repeating-per-block bytes, so that no layer can shortcut zero pages.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ 0x5a).collect()
}
