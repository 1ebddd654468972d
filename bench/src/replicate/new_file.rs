//! The raw limit of writing the bytes a catch-up writes, the way a new follower writes them:
//! into new files, never written before, one segment after another.
//!
//! Three ways, all measured in the same run as the catch-up and the best one taken as the
//! limit: buffered 1 MiB `pwrite`s with an `fdatasync` every [`SYNC_EVERY_BYTES`] (the
//! catch-up chunk the primary sends, which the follower appends and syncs as one batch); the
//! same with the synced pages dropped from the page cache after each `fdatasync`
//! (`posix_fadvise(DONTNEED)`, as a follower's log drops replicated records behind it), so that
//! the writes reuse pages instead of filling the page cache with new ones; and the same through
//! `O_DIRECT` from an aligned buffer. Each file is [`FILE_BYTES`] (a segment)
//! and is synced before the next one starts, as the engine's rollover does. This is the
//! figure catch-up is held to besides the overwrite bandwidth: a new follower has no old
//! segments to overwrite.
//!
//! A catch-up also reads what it writes, from the same disk when both nodes share one (as in
//! this benchmark). The copy limit measures that: the primary's segment files read as its log's
//! readers read them (around the page cache when the log is written around it, `O_DIRECT`;
//! through it otherwise) by one thread, handed through a queue as deep as the catch-up's
//! in-flight window to a second thread that writes them into new files the best of the three
//! ways above. Reads and writes overlap, as in a catch-up.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
/// Bytes per read of the copy: the default catch-up chunk.
const READ_BYTES: usize = 4 << 20;
/// Reads the copy's reader may be ahead of its writer: the default catch-up in-flight window
/// (32 MiB) in chunks.
const COPY_QUEUE: usize = 8;

/// The sizes a copy reads, writes and syncs in.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Grain {
    /// Bytes per read.
    pub read_bytes: usize,
    /// Bytes per write.
    pub write_bytes: usize,
    /// Bytes written between two fdatasyncs.
    pub sync_every_bytes: u64,
}

/// A catch-up's own grain with the default chunk: 4 MiB reads, 1 MiB writes, an fdatasync per
/// chunk. The copy limit uses it.
pub const CATCH_UP_GRAIN: Grain = Grain {
    read_bytes: READ_BYTES,
    write_bytes: WRITE_BYTES,
    sync_every_bytes: SYNC_EVERY_BYTES,
};

/// A grain sixteen times finer, [`FINE_GRAIN_BYTES`] for each: the same rate in smaller bursts;
/// a paced catch-up's chunk (`logship_replicator::pacing::PACED_CHUNK_BYTES`; it keeps
/// `PACED_CHUNKS_IN_FLIGHT` of them in flight, the copy's reader reads ahead of its writer).
pub const FINE_GRAIN: Grain = Grain {
    read_bytes: FINE_GRAIN_BYTES,
    write_bytes: FINE_GRAIN_BYTES,
    sync_every_bytes: FINE_GRAIN_BYTES as u64,
};
/// See [`FINE_GRAIN`].
const FINE_GRAIN_BYTES: usize = logship_replicator::pacing::PACED_CHUNK_BYTES;

/// How a copy reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct CopyHow {
    /// Read around the page cache (`O_DIRECT`).
    pub uncached: bool,
    /// Write through `O_DIRECT`; otherwise buffered, each synced range's pages dropped.
    pub write_direct: bool,
    /// The sizes of its reads, writes and syncs.
    pub grain: Grain,
}

/// The new-file limit.
#[derive(Clone, Debug, Serialize)]
pub struct NewFileLimit {
    /// Bytes written by each way.
    pub bytes: u64,
    /// Buffered writes, MB/s (10^6 bytes).
    pub buffered_mb_per_s: f64,
    /// Buffered writes whose pages are dropped from the page cache after each fdatasync,
    /// MB/s.
    pub buffered_drop_behind_mb_per_s: f64,
    /// `O_DIRECT` writes, MB/s; `None` where the file system refuses `O_DIRECT`.
    pub direct_mb_per_s: Option<f64>,
    /// Copying the primary's log into new files (see the module docs), MB/s; `None` when it
    /// was not measured.
    pub copy_mb_per_s: Option<f64>,
    /// Whether the copy read around the page cache (`O_DIRECT`).
    pub copy_uncached_reads: bool,
}

impl NewFileLimit {
    /// The best of the three ways.
    pub fn best_mb_per_s(&self) -> f64 {
        self.best_buffered_mb_per_s()
            .max(self.direct_mb_per_s.unwrap_or(0.0))
    }

    /// The better of the two buffered ways.
    fn best_buffered_mb_per_s(&self) -> f64 {
        self.buffered_mb_per_s
            .max(self.buffered_drop_behind_mb_per_s)
    }
}

/// Measures both ways, `bytes` each (rounded up to whole writes), in new files under `dir`
/// (removed afterwards); then, with `copy_from` (a log's directory and whether its readers read
/// around the page cache), the copy of its first `bytes` of segments into new files.
///
/// # Errors
/// When a file cannot be created, read, written or synced (`O_DIRECT` refused is not an error).
pub fn measure(
    dir: &Path,
    bytes: u64,
    copy_from: Option<(&Path, bool)>,
) -> anyhow::Result<NewFileLimit> {
    let dir = dir.join("new-file-limit");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let buffered = write_files(&dir, "buffered", bytes, Way::Buffered)?
        .context("buffered writes are always possible")?;
    let drop_behind = write_files(&dir, "drop-behind", bytes, Way::BufferedDropBehind)?
        .context("buffered writes are always possible")?;
    let direct = write_files(&dir, "direct", bytes, Way::Direct)?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    let mut limit = NewFileLimit {
        bytes,
        buffered_mb_per_s: buffered,
        buffered_drop_behind_mb_per_s: drop_behind,
        direct_mb_per_s: direct,
        copy_mb_per_s: None,
        copy_uncached_reads: false,
    };
    if let Some((log_dir, uncached)) = copy_from {
        let how = CopyHow {
            uncached,
            write_direct: direct.is_some_and(|d| d > limit.best_buffered_mb_per_s()),
            grain: CATCH_UP_GRAIN,
        };
        limit.copy_mb_per_s = Some(copy_into(log_dir, &dir, bytes, how, None)?);
        limit.copy_uncached_reads = uncached;
    }
    Ok(limit)
}

/// A buffer of one read whose window `[start, start + size)` is aligned for `O_DIRECT`;
/// reused, so that its pages are touched once.
struct CopyBuf {
    backing: Vec<u8>,
    start: usize,
    size: usize,
    len: usize,
}

impl CopyBuf {
    fn new(size: usize) -> CopyBuf {
        let backing = vec![0u8; size + DIRECT_ALIGN];
        let start = backing.as_ptr().align_offset(DIRECT_ALIGN);
        CopyBuf {
            backing,
            start,
            size,
            len: 0,
        }
    }

    fn window(&mut self) -> &mut [u8] {
        &mut self.backing[self.start..self.start + self.size]
    }

    /// The bytes read, padded to whole blocks (an `O_DIRECT` write takes nothing less).
    fn filled(&self) -> &[u8] {
        let len = self.len.next_multiple_of(DIRECT_ALIGN);
        &self.backing[self.start..self.start + len]
    }
}

/// The segment files of the log in `log_dir`, in LSN order.
fn segment_files(log_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(log_dir).with_context(|| format!("listing {}", log_dir.display()))?;
    let mut files = Vec::new();
    for e in entries {
        let path = e
            .with_context(|| format!("listing {}", log_dir.display()))?
            .path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.ends_with(".seg") && n.starts_with(|c: char| c.is_ascii_digit()))
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Copies the first `bytes` of `log_dir`'s segments into new files under `dir` (made for the
/// copy and removed after it) as the copy limit does, but `how` (a follower on the
/// `io_uring_direct` backend reads around the page cache and writes through `O_DIRECT`) and no
/// faster than `mb_per_s`: each read starts no earlier than the bytes before it allow at that
/// rate. Returns the MB/s reached.
///
/// # Errors
/// As [`measure`]'s copy; also when `mb_per_s` is not positive.
pub fn copy_paced(
    log_dir: &Path,
    dir: &Path,
    bytes: u64,
    how: CopyHow,
    mb_per_s: f64,
) -> anyhow::Result<f64> {
    anyhow::ensure!(mb_per_s > 0.0, "a paced copy needs a positive rate");
    copy_into(log_dir, dir, bytes, how, Some(mb_per_s))
}

/// [`copy_files`] into `dir`, made for the copy and removed after it.
fn copy_into(
    log_dir: &Path,
    dir: &Path,
    bytes: u64,
    how: CopyHow,
    pace: Option<f64>,
) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let copied = copy_files(log_dir, dir, bytes, how, pace);
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    copied
}

/// Copies the first `bytes` of `log_dir`'s segments into new files under `dir`: a reading
/// thread (paced to `pace` MB/s when given) and this one writing, [`COPY_QUEUE`] reads apart
/// at most. Returns MB/s.
fn copy_files(
    log_dir: &Path,
    dir: &Path,
    bytes: u64,
    how: CopyHow,
    pace: Option<f64>,
) -> anyhow::Result<f64> {
    let files = segment_files(log_dir)?;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<CopyBuf>(COPY_QUEUE);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<CopyBuf>();
    for _ in 0..COPY_QUEUE + 2 {
        let _ = free_tx.send(CopyBuf::new(how.grain.read_bytes));
    }
    let t0 = Instant::now();
    let written = std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let pace = pace.map(|mb_per_s| (t0, mb_per_s));
            read_files(&files, (bytes, how.uncached, pace), &free_rx, &full_tx)
        });
        let written = write_copies(dir, how, &full_rx, &free_tx);
        // A writer that failed stops reading: the reader's next send then fails instead of
        // waiting for room forever.
        drop(full_rx);
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the copy's reader panicked"))?;
        read.and(written)
    })?;
    Ok(written as f64 / 1e6 / t0.elapsed().as_secs_f64())
}

/// The copy's reading side: reads `files` a buffer at a time until `bytes` were read, each read
/// no earlier than `pace` (start, MB/s) allows.
fn read_files(
    files: &[PathBuf],
    (bytes, uncached, pace): (u64, bool, Option<(Instant, f64)>),
    free: &std::sync::mpsc::Receiver<CopyBuf>,
    full: &std::sync::mpsc::SyncSender<CopyBuf>,
) -> anyhow::Result<()> {
    let (mut left, mut spare) = (bytes, None);
    for path in files {
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        let file = match direct {
            Ok(f) if uncached => f,
            _ => File::open(path).with_context(|| format!("opening {}", path.display()))?,
        };
        let mut at = 0u64;
        while left > 0 {
            let mut buf = match spare.take() {
                Some(b) => b,
                None => free.recv().context("the copy's writer stopped")?,
            };
            if let Some((t0, mb_per_s)) = pace {
                let due = t0 + Duration::from_secs_f64((bytes - left) as f64 / 1e6 / mb_per_s);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            let n = read_full(&file, buf.window(), at)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                spare = Some(buf);
                break;
            }
            buf.len = n.min(usize::try_from(left).unwrap_or(usize::MAX));
            (at, left) = (at + n as u64, left - buf.len as u64);
            let whole = n == buf.size;
            full.send(buf).context("the copy's writer stopped")?;
            if !whole {
                break;
            }
        }
    }
    Ok(())
}

/// Reads until `buf` is full or the file ends (an `O_DIRECT` read may return less).
fn read_full(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) if n.is_multiple_of(DIRECT_ALIGN) => done += n,
            Ok(n) => return Ok(done + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The copy's writing side: writes what the reader hands over into new files, as
/// `write_files` does; returns the bytes written.
fn write_copies(
    dir: &Path,
    how: CopyHow,
    full: &std::sync::mpsc::Receiver<CopyBuf>,
    free: &std::sync::mpsc::Sender<CopyBuf>,
) -> anyhow::Result<u64> {
    let (mut file, mut in_file, mut file_no, mut written) = (None::<File>, 0u64, 0, 0u64);
    for buf in full.iter() {
        if file.is_none() || in_file >= FILE_BYTES {
            if let Some(f) = file.take() {
                f.sync_data().context("fdatasync of a copy")?;
            }
            let path = dir.join(format!("copy.{file_no}"));
            let created = create(&path, how.write_direct)?;
            file = Some(created.context("O_DIRECT refused after it worked")?);
            (in_file, file_no) = (0, file_no + 1);
        }
        let f = file.as_ref().context("opened above")?;
        for piece in buf.filled().chunks(how.grain.write_bytes) {
            f.write_all_at(piece, in_file).context("writing a copy")?;
            in_file += piece.len() as u64;
            if in_file.is_multiple_of(how.grain.sync_every_bytes) {
                f.sync_data().context("fdatasync of a copy")?;
                if !how.write_direct {
                    drop_pages(f, in_file - how.grain.sync_every_bytes, in_file);
                }
            }
        }
        written += buf.len as u64;
        let _ = free.send(buf);
    }
    if let Some(f) = file {
        f.sync_data().context("fdatasync of a copy")?;
    }
    Ok(written)
}

/// One way of writing new files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Buffered,
    /// Buffered, each synced range's pages dropped from the page cache.
    BufferedDropBehind,
    Direct,
}

/// Asks the page cache to drop the (clean, just synced) pages of `[from, to)` of `file`. A
/// hint: a failure only leaves the pages cached.
fn drop_pages(file: &File, from: u64, to: u64) {
    let _ = logship_engine::io::std_fs::drop_cached_pages(file, from, to - from);
}

/// Writes `bytes` into new files named `name.N` the `way` given; returns MB/s, or `None` for
/// `Way::Direct` when the file system refuses `O_DIRECT`.
fn write_files(dir: &Path, name: &str, bytes: u64, way: Way) -> anyhow::Result<Option<f64>> {
    // An aligned window of an ordinary allocation: O_DIRECT wants the buffer's address aligned.
    let mut backing = vec![0u8; WRITE_BYTES + DIRECT_ALIGN];
    let start = backing.as_ptr().align_offset(DIRECT_ALIGN);
    let buf = &mut backing[start..start + WRITE_BYTES];
    buf.copy_from_slice(&crate::raw::pattern(WRITE_BYTES));
    let (t0, mut written, mut file_no) = (Instant::now(), 0u64, 0);
    while written < bytes {
        let path = dir.join(format!("{name}.{file_no}"));
        let Some(file) = create(&path, way == Way::Direct)? else {
            return Ok(None);
        };
        let in_file = FILE_BYTES.min(bytes - written).div_ceil(WRITE_BYTES as u64);
        let mut synced_to = 0;
        for i in 0..in_file {
            let at = i * WRITE_BYTES as u64;
            file.write_all_at(buf, at)
                .with_context(|| format!("writing {}", path.display()))?;
            let end = at + WRITE_BYTES as u64;
            if end.is_multiple_of(SYNC_EVERY_BYTES) || i + 1 == in_file {
                file.sync_data()
                    .with_context(|| format!("fdatasync of {}", path.display()))?;
                if way == Way::BufferedDropBehind {
                    drop_pages(&file, synced_to, end);
                }
                synced_to = end;
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
        let limit = measure(dir.path(), 3 << 20, None).expect("measure");
        assert_eq!(limit.bytes, 3 << 20);
        assert!(limit.buffered_mb_per_s > 0.0);
        assert!(limit.buffered_drop_behind_mb_per_s > 0.0);
        assert!(limit.best_mb_per_s() >= limit.buffered_mb_per_s);
        assert!(limit.best_mb_per_s() >= limit.buffered_drop_behind_mb_per_s);
        assert!(limit.copy_mb_per_s.is_none());
        assert!(!dir.path().join("new-file-limit").exists());
    }

    #[test]
    fn the_copy_reads_a_logs_segments_in_order_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        std::fs::create_dir_all(&log).expect("log dir");
        // More whole-read segments than the copy has buffers, then a shorter one: a buffer
        // that reads a segment's end empty must not be lost.
        let full = COPY_QUEUE as u64 + 4;
        for i in 0..full {
            let name = format!("{:020}.seg", i + 1);
            std::fs::write(log.join(name), vec![i as u8; READ_BYTES]).expect("segment");
        }
        std::fs::write(log.join(format!("{:020}.seg", 900)), vec![0xEE; 3 << 20]).expect("seg");
        std::fs::write(log.join("free-1.seg"), vec![1u8; 1 << 20]).expect("free segment");
        assert_eq!(segment_files(&log).expect("list").len(), full as usize + 1);
        let bytes = full * READ_BYTES as u64 + (2 << 20);
        for uncached in [false, true] {
            let limit = measure(dir.path(), bytes, Some((&log, uncached))).expect("measure");
            assert!(limit.copy_mb_per_s.is_some_and(|c| c > 0.0), "{limit:?}");
            assert_eq!(limit.copy_uncached_reads, uncached);
            assert!(!dir.path().join("new-file-limit").exists());
        }
        for grain in [CATCH_UP_GRAIN, FINE_GRAIN] {
            let out = tempfile::tempdir().expect("tempdir");
            let how = CopyHow {
                uncached: false,
                write_direct: false,
                grain,
            };
            let copied = copy_files(&log, out.path(), bytes, how, None).expect("copy");
            assert!(copied > 0.0);
            let first = std::fs::read(out.path().join("copy.0")).expect("copy.0");
            assert_eq!(first.len() as u64, bytes, "{grain:?}");
            for (i, block) in first.chunks(READ_BYTES).enumerate() {
                let want = if (i as u64) < full { i as u8 } else { 0xEE };
                assert!(block.iter().all(|&b| b == want), "{grain:?}: block {i}");
            }
        }
    }

    #[test]
    fn a_paced_copy_reads_no_faster_than_its_rate_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        std::fs::create_dir_all(&log).expect("log dir");
        for i in 0..4u8 {
            let name = format!("{:020}.seg", u64::from(i) + 1);
            std::fs::write(log.join(name), vec![i; READ_BYTES]).expect("segment");
        }
        let bytes = 4 * READ_BYTES as u64;
        let out = dir.path().join("paced");
        let rate = 40.0;
        for grain in [CATCH_UP_GRAIN, FINE_GRAIN] {
            let how = CopyHow {
                uncached: false,
                write_direct: false,
                grain,
            };
            let reached = copy_paced(&log, &out, bytes, how, rate).expect("paced copy");
            // The last read may not start before all but one read's bytes at the rate.
            let before_last = bytes - grain.read_bytes as u64;
            let earliest_last_read_s = before_last as f64 / 1e6 / rate;
            assert!(
                reached <= bytes as f64 / 1e6 / earliest_last_read_s,
                "{grain:?}: {reached} MB/s"
            );
            assert!(!out.exists());
            assert!(copy_paced(&log, &out, bytes, how, 0.0).is_err());
        }
    }
}
