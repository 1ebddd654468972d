//! `segment-fill`: what a new segment costs the writer that fills it, in batches of a given size
//! with an fdatasync after each (as the log writes a batch), two ways:
//!
//! - into `fallocate`d blocks: each fdatasync also commits the extents the batch turned from
//!   unwritten to written (metadata, through the file system's journal);
//! - zero-filled first, as the log's preallocator prepares a spare (1 MiB writes, one
//!   fdatasync), then overwritten: every byte written twice, each batch's fdatasync data only.
//!
//! The log pre-zeroes a spare only while its batches average under
//! [`PREZERO_MAX_AVG_BATCH_BYTES`](logship_engine::options::PREZERO_MAX_AVG_BATCH_BYTES): this
//! finds where the two ways cross on the machine, buffered (the `portable` and `io_uring`
//! backends) and `O_DIRECT` (`io_uring_direct`). Each case is the best of its rounds, the two
//! ways alternating.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use logship_engine::io::aligned::AlignedBytes;
use logship_engine::io::{Backend, OpenMode, StdVfs, Vfs};
use logship_engine::options::PREZERO_WRITE_BYTES as ZERO_WRITE_BYTES;
use serde::Serialize;

use crate::raw::pattern;

/// One batch size, one kind of write: the fill's milliseconds both ways.
#[derive(Clone, Debug, Serialize)]
pub struct FillCase {
    /// `O_DIRECT` writes (else buffered).
    pub direct: bool,
    /// Bytes per batch (one pwrite and one fdatasync).
    pub batch_bytes: usize,
    /// Filling a fallocated file, ms.
    pub fallocated_ms: f64,
    /// Zero-filling a new file, ms.
    pub zero_fill_ms: f64,
    /// Filling the zero-filled file, ms.
    pub overwrite_ms: f64,
}

impl FillCase {
    /// Zero-filling first costs more than it saves.
    pub fn fallocated_wins(&self) -> bool {
        self.fallocated_ms < self.zero_fill_ms + self.overwrite_ms
    }
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct FillReport {
    /// The command line.
    pub command: String,
    /// Bytes of each segment filled.
    pub segment_bytes: u64,
    /// Rounds per case (the best is kept).
    pub rounds: usize,
    /// The engine's threshold: no pre-zeroing at this average batch size and above.
    pub prezero_max_avg_batch_bytes: u64,
    /// Every case.
    pub cases: Vec<FillCase>,
}

/// Fills `segment_bytes` files in `dir` both ways, for each batch size in `batches`, buffered
/// then `O_DIRECT` (skipped where the file system refuses it).
///
/// # Errors
/// On any I/O failure.
pub fn run(
    dir: &Path,
    segment_bytes: u64,
    batches: &[usize],
    rounds: usize,
) -> anyhow::Result<Vec<FillCase>> {
    let mut cases = Vec::new();
    for direct in [false, true] {
        for &batch_bytes in batches {
            let mut best = [f64::INFINITY; 3];
            for _ in 0..rounds.max(1) {
                let fill = Fill {
                    dir,
                    segment_bytes,
                    batch_bytes,
                    direct,
                };
                let Some(fallocated) = fill.fallocated()? else {
                    eprintln!("segment-fill: O_DIRECT refused here; buffered only");
                    return Ok(cases);
                };
                let (zero, overwrite) = fill.zeroed_then_overwritten()?;
                for (b, ms) in best.iter_mut().zip([fallocated, zero, overwrite]) {
                    *b = b.min(ms);
                }
            }
            cases.push(FillCase {
                direct,
                batch_bytes,
                fallocated_ms: best[0],
                zero_fill_ms: best[1],
                overwrite_ms: best[2],
            });
        }
    }
    Ok(cases)
}

/// One fill's shape.
struct Fill<'a> {
    dir: &'a Path,
    segment_bytes: u64,
    batch_bytes: usize,
    direct: bool,
}

impl Fill<'_> {
    /// Creates the file (fallocated to the segment's size when `allocate`) and opens it for
    /// this fill's writes; `None` if `O_DIRECT` is refused.
    fn create(&self, name: &str, allocate: bool) -> anyhow::Result<Option<(File, TempPath)>> {
        let path = self.dir.join(name);
        let _ = std::fs::remove_file(&path);
        let created = StdVfs::new(Backend::Portable)
            .open(&path, OpenMode::CreateNew)
            .with_context(|| format!("creating {}", path.display()))?;
        if allocate {
            (created.allocate(self.segment_bytes))
                .with_context(|| format!("fallocate {}", path.display()))?;
            created.sync_data()?;
        }
        drop(created);
        let temp = TempPath(path);
        let flags = if self.direct { libc::O_DIRECT } else { 0 };
        match OpenOptions::new()
            .write(true)
            .custom_flags(flags)
            .open(&temp.0)
        {
            Ok(f) => Ok(Some((f, temp))),
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("opening {}", temp.0.display())),
        }
    }

    fn fallocated(&self) -> anyhow::Result<Option<f64>> {
        let Some((file, _temp)) = self.create("fill-fallocated.seg", true)? else {
            return Ok(None);
        };
        Ok(Some(self.batches(&file)?))
    }

    /// (zero-fill ms, overwrite ms).
    fn zeroed_then_overwritten(&self) -> anyhow::Result<(f64, f64)> {
        let (file, _temp) = (self.create("fill-zeroed.seg", false)?)
            .context("O_DIRECT refused on the second file")?;
        let zeros = aligned(&vec![0; ZERO_WRITE_BYTES]);
        let start = Instant::now();
        let mut off = 0;
        while off < self.segment_bytes {
            let n = ZERO_WRITE_BYTES.min(usize::try_from(self.segment_bytes - off)?);
            file.write_all_at(&zeros.as_slice()[..n], off)?;
            off += n as u64;
        }
        file.sync_data()?;
        let zero = ms(start);
        Ok((zero, self.batches(&file)?))
    }

    /// Writes the segment in batches, an fdatasync after each; ms.
    fn batches(&self, file: &File) -> anyhow::Result<f64> {
        let batch = aligned(&pattern(self.batch_bytes));
        let start = Instant::now();
        let mut off = 0;
        while off + self.batch_bytes as u64 <= self.segment_bytes {
            file.write_all_at(batch.as_slice(), off)?;
            file.sync_data()?;
            off += self.batch_bytes as u64;
        }
        Ok(ms(start))
    }
}

/// A file removed when dropped.
struct TempPath(std::path::PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn aligned(bytes: &[u8]) -> AlignedBytes {
    let mut b = AlignedBytes::with_capacity(bytes.len());
    b.extend_from_slice(bytes);
    b
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

impl FillReport {
    /// The table and its reading.
    pub fn table(&self) -> String {
        let mut out = format!(
            "segment-fill: a {} MiB segment in batches, an fdatasync after each (best of {}):\n\
             {:<9} {:>9} {:>15} {:>12} {:>13} {:>12}  cheaper\n",
            self.segment_bytes >> 20,
            self.rounds,
            "writes",
            "batch",
            "fallocated ms",
            "zero-fill ms",
            "overwrite ms",
            "zeroed ms"
        );
        for c in &self.cases {
            out += &format!(
                "{:<9} {:>6} KiB {:>15.1} {:>12.1} {:>13.1} {:>12.1}  {}\n",
                if c.direct { "O_DIRECT" } else { "buffered" },
                c.batch_bytes >> 10,
                c.fallocated_ms,
                c.zero_fill_ms,
                c.overwrite_ms,
                c.zero_fill_ms + c.overwrite_ms,
                if c.fallocated_wins() {
                    "fallocated"
                } else {
                    "pre-zeroed"
                }
            );
        }
        out += &format!(
            "the log pre-zeroes a spare while its batches average under {} KiB\n",
            self.prezero_max_avg_batch_bytes >> 10
        );
        out
    }
}
