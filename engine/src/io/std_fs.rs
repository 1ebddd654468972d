//! The real file system: std file I/O for the control path, and a choice of hot-path queue
//! (the portable `pwrite` + `fdatasync` queue, io_uring, or io_uring with `O_DIRECT`).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::{
    Backend, FailedStep, IoBuf, LockGuard, OpenMode, QueueConfig, Vfs, VfsFile, WriteCompletion,
    WriteOp, WriteQueue,
};

/// The operating system's file system.
#[derive(Debug, Clone, Default)]
pub struct StdVfs {
    backend: Backend,
}

impl StdVfs {
    /// A file system whose write queue uses `backend`.
    pub fn new(backend: Backend) -> StdVfs {
        StdVfs { backend }
    }
}

impl Vfs for StdVfs {
    fn name(&self) -> &'static str {
        "std"
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            // Names that are not UTF-8 are not ours; keep them visible as lossy strings so
            // callers can report them.
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let mut opts = OpenOptions::new();
        match mode {
            OpenMode::Read => opts.read(true),
            OpenMode::ReadWrite => opts.read(true).write(true),
            OpenMode::CreateNew => opts.read(true).write(true).create_new(true),
        };
        let file = opts.open(path)?;
        Ok(Arc::new(StdFile {
            file,
            path: path.to_path_buf(),
            uncached: OnceLock::new(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn lock_exclusive(&self, path: &Path) -> io::Result<LockGuard> {
        let file = File::open(path)?;
        #[allow(unsafe_code)]
        // SAFETY: flock on a descriptor we own; no pointers. The lock lives as long as `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LockGuard(Some(Box::new(file))))
    }

    fn write_queue(&self, config: &QueueConfig) -> io::Result<Box<dyn WriteQueue>> {
        match self.backend {
            Backend::Portable => Ok(Box::new(PortableQueue::new(config))),
            Backend::IoUring => {
                super::uring::probe()
                    .map_err(|reason| io::Error::new(io::ErrorKind::Unsupported, reason))?;
                Ok(Box::new(super::uring::UringQueue::new(config)?))
            }
            Backend::IoUringDirect => {
                super::uring::probe()
                    .map_err(|reason| io::Error::new(io::ErrorKind::Unsupported, reason))?;
                Ok(Box::new(super::direct::DirectQueue::new(config)?))
            }
            // Measured (docs/architecture.md): with buffered I/O the synchronous writer thread
            // is as fast as io_uring for small records and faster for large ones, because the
            // ring hands buffered writes and every fdatasync to kernel worker threads.
            Backend::Auto => {
                if let Err(reason) = super::uring::probe() {
                    tracing::debug!(%reason, "io_uring unavailable (not needed by the auto backend)");
                }
                Ok(Box::new(PortableQueue::new(config)))
            }
        }
    }
}

/// A real file.
#[derive(Debug)]
pub struct StdFile {
    file: File,
    path: PathBuf,
    /// A read-only `O_DIRECT` descriptor of the same inode, opened at the first uncached read;
    /// `None` where the file system refuses `O_DIRECT`.
    uncached: OnceLock<Option<File>>,
}

impl StdFile {
    fn uncached(&self) -> Option<&File> {
        self.uncached
            .get_or_init(|| {
                // /proc/self/fd/N opens the inode the descriptor names, wherever it was renamed.
                let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                let opened = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
                    .open(proc_path);
                match opened {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::debug!(path = %self.path.display(), error = %e, "no O_DIRECT reads; reading through the page cache");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// Reads `buf` at `offset` from `file` until it is full or the file ends, retrying interrupted
/// reads; with `aligned_steps`, also stops at a short read that is not a whole number of blocks
/// (the end of the file, for an `O_DIRECT` descriptor, which cannot resume mid-block).
fn read_full(file: &File, buf: &mut [u8], offset: u64, aligned_steps: bool) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                if aligned_steps && !n.is_multiple_of(super::aligned::BUFFER_ALIGN) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Asks the page cache to drop the clean pages of `[offset, offset + len)` of `file`
/// (`posix_fadvise(DONTNEED)`): what [`VfsFile::drop_cache`] does on this backend, and what a
/// benchmark writing plain files does to write as a follower's log does. A range past what
/// `off_t` holds is left alone.
///
/// # Errors
/// posix_fadvise's.
pub fn drop_cached_pages(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Ok(());
    };
    #[allow(unsafe_code)]
    // SAFETY: posix_fadvise on a descriptor `file` owns, with no pointers involved.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED) };
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

impl VfsFile for StdFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        read_full(&self.file, buf, offset, false)
    }

    fn read_uncached_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let align = super::aligned::BUFFER_ALIGN;
        let aligned = (buf.as_ptr() as usize).is_multiple_of(align)
            && buf.len().is_multiple_of(align)
            && offset.is_multiple_of(align as u64);
        match self.uncached() {
            Some(direct) if aligned => read_full(direct, buf, offset, true),
            _ => self.read_at(buf, offset),
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn drop_cache(&self, offset: u64, len: u64) -> io::Result<()> {
        drop_cached_pages(&self.file, offset, len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let Ok(len_off) = libc::off_t::try_from(len) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "length too large",
            ));
        };
        #[allow(unsafe_code)]
        // SAFETY: fallocate on a descriptor we own, with no pointers involved.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, len_off) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // File systems without fallocate (tmpfs on old kernels, some FUSE): extend instead.
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                if self.len()? < len {
                    self.file.set_len(len)?;
                }
                Ok(())
            }
            _ => Err(err),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn map(&self) -> Option<io::Result<memmap2::Mmap>> {
        #[allow(unsafe_code)]
        // SAFETY: the engine maps only sealed segments, which it never writes again and only
        // removes by unlinking (the mapping keeps the inode alive). A file shortened by another
        // process behind our back would fault; logship's files are not for other writers.
        let map = unsafe { memmap2::Mmap::map(&self.file) };
        Some(map)
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.file.as_raw_fd())
    }
}

/// The portable queue: each operation runs inline at submission, with `pwrite` then `fdatasync`.
/// Group commit still batches; what it gives up is overlapping one batch's write with the
/// previous batch's flush.
#[derive(Debug)]
pub struct PortableQueue {
    free: Vec<IoBuf>,
    done: Vec<WriteCompletion>,
}

impl PortableQueue {
    /// A queue with `config.depth` buffers of `config.buffer_bytes`.
    pub fn new(config: &QueueConfig) -> PortableQueue {
        let free = (0..config.depth)
            .map(|i| IoBuf::with_capacity(config.buffer_bytes, i as u16))
            .collect();
        PortableQueue {
            free,
            done: Vec::new(),
        }
    }
}

/// Runs one operation synchronously; shared by the portable and faulty queues.
pub(crate) fn run_inline(op: &WriteOp) -> Result<(), (FailedStep, io::Error)> {
    op.file
        .write_all_at(op.buf.as_slice(), op.offset)
        .map_err(|e| (FailedStep::Write, e))?;
    if op.sync {
        op.file.sync_data().map_err(|e| (FailedStep::Sync, e))?;
    }
    Ok(())
}

impl WriteQueue for PortableQueue {
    fn name(&self) -> &'static str {
        "portable"
    }

    fn take_buffer(&mut self) -> Option<IoBuf> {
        let mut buf = self.free.pop()?;
        buf.clear();
        Some(buf)
    }

    fn give_back(&mut self, buf: IoBuf) {
        self.free.push(buf);
    }

    fn submit(&mut self, op: WriteOp) -> io::Result<()> {
        let result = run_inline(&op);
        self.free.push(op.buf);
        self.done.push(WriteCompletion {
            token: op.token,
            result,
        });
        Ok(())
    }

    fn wait(&mut self, _min_complete: usize, out: &mut Vec<WriteCompletion>) -> io::Result<()> {
        out.append(&mut self.done);
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }
}
