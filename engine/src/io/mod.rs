//! I/O backends: the only part of the engine that touches the operating system.
//!
//! Two traits split the work:
//! - [`Vfs`] and [`VfsFile`]: the control path (open, list, rename, read, preallocate, fsync a
//!   directory). Synchronous, used at open, rollover, truncation, purge and by readers.
//! - [`WriteQueue`]: the hot path. The writer thread submits "write this buffer at this offset,
//!   then fdatasync the file" operations and reaps their completions. On io_uring each operation is
//!   a linked write + fdatasync pair on the writer's own ring, from registered buffers; the portable
//!   queue runs `pwrite` + `fdatasync` inline; the faulty queue injects errors and crashes.
//!
//! A queue owns a fixed pool of buffers (one per in-flight operation). The kernel owns a buffer
//! from submission until its completion is reaped; the queue keeps it in its in-flight table until
//! then and hands it back only through [`WriteQueue::wait`].

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub mod aligned;
pub mod direct;
pub mod faulty;
pub mod std_fs;
pub mod uring;

pub use faulty::{FaultConfig, FaultyVfs};
pub use std_fs::StdVfs;

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file must not exist yet.
    CreateNew,
}

/// A file system, real or simulated.
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Short name for logs, e.g. `"std"` or `"faulty"`.
    fn name(&self) -> &'static str;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of a directory, in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// True if a directory exists at `path`.
    fn is_dir(&self, path: &Path) -> bool;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>>;
    /// Renames a file (atomically replacing `to`, as rename(2)).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Creates the hot-path write queue for the writer thread.
    fn write_queue(&self, config: &QueueConfig) -> io::Result<Box<dyn WriteQueue>>;
    /// Takes an exclusive advisory lock on the file at `path`, held until the returned guard is
    /// dropped; `ErrorKind::WouldBlock` if someone else holds it. The default (for file systems
    /// that live inside one process) takes no lock.
    fn lock_exclusive(&self, path: &Path) -> io::Result<LockGuard> {
        let _ = path;
        Ok(LockGuard(None))
    }
}

/// Holds a lock from [`Vfs::lock_exclusive`] until dropped.
pub struct LockGuard(pub Option<Box<dyn Send + Sync>>);

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LockGuard").field(&self.0.is_some()).finish()
    }
}

/// An open file.
pub trait VfsFile: Send + Sync + fmt::Debug {
    /// The path it was opened at, for error messages.
    fn path(&self) -> &Path;
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// fdatasync(2).
    fn sync_data(&self) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// True if the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reserves space so that writes below `len` cannot fail with ENOSPC (fallocate(2)),
    /// extending the file to at least `len` bytes.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Sets the length (ftruncate(2)).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Maps the whole file read-only, where the backend can. `None` means "use `read_at`".
    fn map(&self) -> Option<io::Result<memmap2::Mmap>>;
    /// Asks the OS to drop cached pages of `[offset, offset + len)`, so that the next read
    /// comes from the device: the scrubber's way of checking what is on disk rather than what
    /// the page cache remembers. Only clean pages are dropped; a hint, never an error that
    /// matters (the default does nothing).
    fn drop_cache(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// The raw descriptor, for backends that submit to the kernel directly.
    fn raw_fd(&self) -> Option<std::os::fd::RawFd>;
    /// Reads like [`VfsFile::read_at`], around the page cache where the backend can
    /// (`O_DIRECT`): for files that were written around it, whose pages are not cached, so that a
    /// read neither fills the cache nor pays for allocating its pages. Only a read whose buffer
    /// address, length and offset are multiples of [`aligned::BUFFER_ALIGN`] can go around the
    /// cache; any other read, or a file system without `O_DIRECT`, reads through it (the
    /// default). The bytes are the same either way.
    fn read_uncached_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.read_at(buf, offset)
    }
}

/// Sizing of a write queue.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Operations in flight at once (and buffers in the pool). The writer pipelines two batches.
    pub depth: usize,
    /// Capacity of each buffer: the largest single write.
    pub buffer_bytes: usize,
    /// The directory whose files the queue writes, for backends that must check that its file
    /// system supports them (`O_DIRECT`). `None`: nothing to check.
    pub dir: Option<std::path::PathBuf>,
}

/// A buffer owned by a [`WriteQueue`]'s pool, aligned to [`aligned::BUFFER_ALIGN`] so that any
/// queue may write it with `O_DIRECT`.
pub struct IoBuf {
    data: aligned::AlignedBytes,
    /// Index in the queue's pool (the registered-buffer index on io_uring).
    pub index: u16,
}

impl fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoBuf")
            .field("index", &self.index)
            .field("len", &self.data.len())
            .field("capacity", &self.data.capacity())
            .finish()
    }
}

impl IoBuf {
    /// A new empty buffer with a fixed capacity; it never reallocates, so its address is stable
    /// (registered buffers rely on that).
    pub fn with_capacity(capacity: usize, index: u16) -> IoBuf {
        IoBuf {
            data: aligned::AlignedBytes::with_capacity(capacity),
            index,
        }
    }
    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        self.data.as_slice()
    }
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Fixed capacity.
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }
    /// Room left.
    pub fn remaining(&self) -> usize {
        self.data.capacity() - self.data.len()
    }
    /// Appends bytes.
    ///
    /// # Panics
    /// If they do not fit: the buffer must never reallocate.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        assert!(
            bytes.len() <= self.remaining(),
            "IoBuf overflow: {} bytes into {} remaining",
            bytes.len(),
            self.remaining()
        );
        self.data.extend_from_slice(bytes);
    }
    /// Appends `count` zero bytes.
    ///
    /// # Panics
    /// If they do not fit.
    pub fn extend_zeros(&mut self, count: usize) {
        self.data.extend_zeros(count);
    }
    /// Empties the buffer, keeping its allocation.
    pub fn clear(&mut self) {
        self.data.clear();
    }
    /// Start of the allocation (for buffer registration).
    pub fn base_ptr(&mut self) -> *mut u8 {
        self.data.base_ptr()
    }
}

/// One operation: write `buf` at `offset` of `file`, then (if `sync`) fdatasync the file.
#[derive(Debug)]
pub struct WriteOp {
    /// Caller's tag, returned in the completion.
    pub token: u64,
    /// The file.
    pub file: Arc<dyn VfsFile>,
    /// Byte offset.
    pub offset: u64,
    /// The bytes; must come from this queue's [`WriteQueue::take_buffer`].
    pub buf: IoBuf,
    /// fdatasync after the write.
    pub sync: bool,
}

/// Which step of an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailedStep {
    /// The write (including a short write that could not be completed).
    Write,
    /// The fdatasync.
    Sync,
}

/// The result of one [`WriteOp`].
#[derive(Debug)]
pub struct WriteCompletion {
    /// The operation's token.
    pub token: u64,
    /// `Ok` when all bytes were written and (if asked) synced.
    pub result: Result<(), (FailedStep, io::Error)>,
}

/// The writer thread's hot path. Not shared between threads.
pub trait WriteQueue: Send + fmt::Debug {
    /// `"io_uring"`, `"io_uring_direct"`, `"portable"` or `"faulty"`.
    fn name(&self) -> &'static str;
    /// A free buffer from the pool, emptied; `None` when every buffer is in flight.
    fn take_buffer(&mut self) -> Option<IoBuf>;
    /// Returns a buffer that will not be submitted after all.
    fn give_back(&mut self, buf: IoBuf);
    /// Submits an operation. Operations may run concurrently; completions may come in any order.
    fn submit(&mut self, op: WriteOp) -> io::Result<()>;
    /// Appends completions to `out`, blocking until at least `min_complete` are available
    /// (0: never block). Buffers of completed operations return to the pool.
    fn wait(&mut self, min_complete: usize, out: &mut Vec<WriteCompletion>) -> io::Result<()>;
    /// Operations submitted and not yet returned by `wait`.
    fn in_flight(&self) -> usize;
    /// Whether the writer may also write into the file this queue writes through the file's
    /// ordinary (buffered) descriptor between operations, as it does for idle markers. A
    /// queue writing around the page cache (`O_DIRECT`) says no: a page the kernel kept across
    /// a direct write holds the block as it was before it, and a buffered write into that page
    /// writes the stale block back, over records a direct write made durable.
    fn buffered_writes_between_ops(&self) -> bool {
        true
    }
    /// Runs one operation to completion on the calling thread (`pwrite` + `fdatasync`),
    /// bypassing the queue; `buf` returns to the pool. The writer uses it for a lone batch when
    /// nothing is in flight: on io_uring an fdatasync always runs on a kernel worker thread, and
    /// the hand-off costs more than pipelining gains when there is nothing to pipeline.
    fn run_now(&mut self, op: WriteOp) -> WriteCompletion {
        let result = std_fs::run_inline(&op);
        self.give_back(op.buf);
        WriteCompletion {
            token: op.token,
            result,
        }
    }
}

/// Which hot-path backend the standard file system uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The backend measured fastest for buffered I/O: today the portable one (see
    /// `docs/architecture.md`, "What io_uring buys on this machine, measured").
    #[default]
    Auto,
    /// io_uring (linked write + fdatasync from registered buffers), or fail to open with
    /// `Error::BackendUnavailable` where the host blocks it.
    IoUring,
    /// `pwrite` + `fdatasync` on the writer thread.
    Portable,
    /// io_uring with `O_DIRECT | O_DSYNC` writes from aligned, registered buffers, the queue
    /// rewriting the file's last partial block itself (see [`direct`]); fails to open with
    /// `Error::BackendUnavailable` where io_uring is blocked or the file system refuses
    /// `O_DIRECT` (tmpfs before Linux 6.6, some FUSE and network file systems).
    IoUringDirect,
}

impl Backend {
    /// Parses `auto`, `io_uring`/`uring`, `portable`, `io_uring_direct`/`direct`.
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "auto" => Some(Backend::Auto),
            "io_uring" | "uring" | "io-uring" => Some(Backend::IoUring),
            "portable" | "std" => Some(Backend::Portable),
            "io_uring_direct" | "io-uring-direct" | "direct" => Some(Backend::IoUringDirect),
            _ => None,
        }
    }

    /// The name [`crate::Log::backend`] reports for a queue of this backend; for [`Backend::Auto`]
    /// the name of what it picks.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto | Backend::Portable => "portable",
            Backend::IoUring => "io_uring",
            Backend::IoUringDirect => "io_uring_direct",
        }
    }
}
