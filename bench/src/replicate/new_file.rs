//! The raw limit of writing the bytes a catch-up writes, the way a new follower writes them:
//! into new files, never written before, one segment after another.
//!
//! Two ways, both measured in the same run as the catch-up and the better one taken as the
//! limit: buffered 1 MiB `pwrite`s with an `fdatasync` every [`SYNC_EVERY_BYTES`] (the
//! catch-up chunk the primary sends, which the follower appends and syncs as one batch), and
//! the same through `O_DIRECT` from an aligned buffer. Each file is [`FILE_BYTES`] (a segment)
//! and is synced before the next one starts, as the engine's rollover does. This is the
//! figure catch-up is held to besides the overwrite bandwidth: a new follower has no old
//! segments to overwrite.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

/// Bytes per write.
const WRITE_BYTES: usize = 1 << 20;
/// Bytes written between two fdatasyncs: the default catch-up chunk.
pub const SYNC_EVERY_BYTES: u64 = 4 << 20;
/// Bytes per file: the default segment size.
const FILE_BYTES: u64 = 64 << 20;
/// Alignment of `O_DIRECT` buffers and offsets.
const DIRECT_ALIGN: usize = 4096;

/// The new-file limit.
#[derive(Clone, Debug, Serialize)]
pub struct NewFileLimit {
    /// Bytes written by each way.
    pub bytes: u64,
    /// Buffered writes, MB/s (10^6 bytes).
    pub buffered_mb_per_s: f64,
    /// `O_DIRECT` writes, MB/s; `None` where the file system refuses `O_DIRECT`.
    pub direct_mb_per_s: Option<f64>,
}

impl NewFileLimit {
    /// The better of the two ways.
    pub fn best_mb_per_s(&self) -> f64 {
        self.direct_mb_per_s
            .map_or(self.buffered_mb_per_s, |d| d.max(self.buffered_mb_per_s))
    }
}

/// Measures both ways, `bytes` each (rounded up to whole writes), in new files under `dir`
/// (removed afterwards).
///
/// # Errors
/// When a file cannot be created, written or synced (`O_DIRECT` refused is not an error).
pub fn measure(dir: &Path, bytes: u64) -> anyhow::Result<NewFileLimit> {
    let dir = dir.join("new-file-limit");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let buffered = write_files(&dir, "buffered", bytes, false)?
        .context("buffered writes are always possible")?;
    let direct = write_files(&dir, "direct", bytes, true)?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(NewFileLimit {
        bytes,
        buffered_mb_per_s: buffered,
        direct_mb_per_s: direct,
    })
}

/// Writes `bytes` into new files named `name.N`; returns MB/s, or `None` when `direct` and
/// the file system refuses `O_DIRECT`.
fn write_files(dir: &Path, name: &str, bytes: u64, direct: bool) -> anyhow::Result<Option<f64>> {
    // An aligned window of an ordinary allocation: O_DIRECT wants the buffer's address aligned.
    let mut backing = vec![0u8; WRITE_BYTES + DIRECT_ALIGN];
    let start = backing.as_ptr().align_offset(DIRECT_ALIGN);
    let buf = &mut backing[start..start + WRITE_BYTES];
    buf.copy_from_slice(&crate::raw::pattern(WRITE_BYTES));
    let (t0, mut written, mut file_no) = (Instant::now(), 0u64, 0);
    while written < bytes {
        let path = dir.join(format!("{name}.{file_no}"));
        let Some(file) = create(&path, direct)? else {
            return Ok(None);
        };
        let in_file = FILE_BYTES.min(bytes - written).div_ceil(WRITE_BYTES as u64);
        for i in 0..in_file {
            let at = i * WRITE_BYTES as u64;
            file.write_all_at(buf, at)
                .with_context(|| format!("writing {}", path.display()))?;
            if (at + WRITE_BYTES as u64).is_multiple_of(SYNC_EVERY_BYTES) || i + 1 == in_file {
                file.sync_data()
                    .with_context(|| format!("fdatasync of {}", path.display()))?;
            }
        }
        written += in_file * WRITE_BYTES as u64;
        file_no += 1;
    }
    Ok(Some(written as f64 / 1e6 / t0.elapsed().as_secs_f64()))
}

/// Creates a new file; `None` when `direct` and the file system refuses `O_DIRECT`.
fn create(path: &Path, direct: bool) -> anyhow::Result<Option<File>> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    match o.open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_write_whole_files_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limit = measure(dir.path(), 3 << 20).expect("measure");
        assert_eq!(limit.bytes, 3 << 20);
        assert!(limit.buffered_mb_per_s > 0.0);
        assert!(limit.best_mb_per_s() >= limit.buffered_mb_per_s);
        assert!(!dir.path().join("new-file-limit").exists());
    }
}
