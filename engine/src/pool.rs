//! The free pool: segment files kept for reuse, and the preallocator thread that zero-fills a
//! spare ahead of need.
//!
//! Why: on ext4 and xfs an fdatasync after writing into blocks that are already written is about
//! half as slow as one after extending a file or writing into fallocated ("unwritten") extents,
//! because the latter also commits metadata. Reused and pre-zeroed files make steady-state writes
//! overwrites.
//!
//! A pooled file may still hold records of the purged segment it was. Those LSNs are all below the
//! base of any segment it becomes (purge only removes the oldest segments, and truncation deletes
//! files instead of pooling them), which is what lets recovery tell stale records from live ones.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::io::{OpenMode, Vfs, VfsFile};
use crate::options::PREZERO_WRITE_BYTES as ZERO_CHUNK_BYTES;
use crate::segment::free_name;

#[derive(Debug, Default)]
struct PoolState {
    free: Vec<u64>,
    next_id: u64,
    want_spare: bool,
    stopping: bool,
}

/// Reusable segment files.
#[derive(Debug)]
pub(crate) struct FreePool {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    segment_size: u64,
    prezero: bool,
    max_free: usize,
    state: Mutex<PoolState>,
    cond: Condvar,
    /// Spares zero-filled and published.
    prepared: AtomicU64,
}

impl FreePool {
    pub(crate) fn new(
        dir: PathBuf,
        vfs: Arc<dyn Vfs>,
        segment_size: u64,
        prezero: bool,
        max_free: usize,
        existing: Vec<u64>,
    ) -> FreePool {
        let next_id = existing.iter().max().map_or(0, |m| m + 1);
        FreePool {
            dir,
            vfs,
            segment_size,
            prezero,
            max_free,
            state: Mutex::new(PoolState {
                free: existing,
                next_id,
                ..PoolState::default()
            }),
            cond: Condvar::new(),
            prepared: AtomicU64::new(0),
        }
    }

    /// Spares the preallocator zero-filled and published since open.
    pub(crate) fn prepared(&self) -> u64 {
        self.prepared.load(Ordering::Relaxed)
    }

    /// A free file's path, if any.
    pub(crate) fn take(&self) -> Option<PathBuf> {
        let id = self.state.lock().free.pop()?;
        Some(self.dir.join(free_name(id)))
    }

    /// A fresh name for a file the caller creates itself.
    pub(crate) fn fresh_path(&self) -> PathBuf {
        let mut st = self.state.lock();
        let id = st.next_id;
        st.next_id += 1;
        self.dir.join(format!("logship-free-{id}.tmp"))
    }

    /// Asks the preallocator to prepare a spare if the pool is empty.
    pub(crate) fn request_spare(&self) {
        if !self.prezero || self.max_free == 0 {
            return;
        }
        let mut st = self.state.lock();
        if st.free.is_empty() && !st.want_spare {
            st.want_spare = true;
            self.cond.notify_one();
        }
    }

    /// Moves a purged segment into the pool if there is room, else deletes it. Returns whether it
    /// was kept. The caller syncs the directory.
    pub(crate) fn recycle(&self, path: &Path) -> io::Result<bool> {
        let id = {
            let mut st = self.state.lock();
            if st.free.len() >= self.max_free {
                None
            } else {
                st.next_id += 1;
                Some(st.next_id - 1)
            }
        };
        let Some(id) = id else {
            self.vfs.remove_file(path)?;
            return Ok(false);
        };
        self.vfs.rename(path, &self.dir.join(free_name(id)))?;
        self.state.lock().free.push(id);
        Ok(true)
    }

    pub(crate) fn stop(&self) {
        self.state.lock().stopping = true;
        self.cond.notify_all();
    }

    /// The preallocator thread: waits for a request, zero-fills one file, publishes it.
    pub(crate) fn run(&self) {
        loop {
            let id = {
                let mut st = self.state.lock();
                while !st.stopping && !st.want_spare {
                    self.cond.wait(&mut st);
                }
                if st.stopping {
                    return;
                }
                st.next_id += 1;
                st.next_id - 1
            };
            match self.prepare_spare(id) {
                Ok(true) => {
                    let mut st = self.state.lock();
                    st.free.push(id);
                    st.want_spare = false;
                    self.prepared.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "could not pre-zero a spare segment; new segments will be fallocated");
                    self.state.lock().want_spare = false;
                }
            }
        }
    }

    /// Zero-fills `free-<id>.seg` through a temporary name. `Ok(false)` if asked to stop midway.
    fn prepare_spare(&self, id: u64) -> io::Result<bool> {
        let tmp = self.dir.join(format!("logship-free-{id}.tmp"));
        let file = self.vfs.open(&tmp, OpenMode::CreateNew)?;
        let stopping = || self.state.lock().stopping;
        if write_zeros(&*file, 0, self.segment_size, None, &stopping)?.is_none() {
            drop(file);
            self.vfs.remove_file(&tmp)?;
            return Ok(false);
        }
        file.sync_data()?;
        self.vfs.rename(&tmp, &self.dir.join(free_name(id)))?;
        Ok(true)
    }
}

/// Creates a new segment-sized file at `path`: zero-filled when `zero`, else only allocated.
pub(crate) fn create_file(
    vfs: &dyn Vfs,
    path: &Path,
    size: u64,
    zero: bool,
) -> io::Result<Arc<dyn VfsFile>> {
    let file = vfs.open(path, OpenMode::CreateNew)?;
    if zero {
        write_zeros(&*file, 0, size, None, &|| false)?;
    } else {
        file.allocate(size)?;
    }
    Ok(file)
}

/// Writes zeros over `[from, to)` in `ZERO_CHUNK_BYTES` chunks, skipping chunks that `current`
/// (the file's bytes from offset 0, when the caller has them) shows are zero already. Checks
/// `stop` before each chunk and returns `None` if it said stop; else the bytes written. Does not
/// sync: callers decide when.
pub(crate) fn write_zeros(
    file: &dyn VfsFile,
    from: u64,
    to: u64,
    current: Option<&[u8]>,
    stop: &dyn Fn() -> bool,
) -> io::Result<Option<u64>> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES.min(to.saturating_sub(from) as usize)];
    let mut written = 0u64;
    let mut off = from;
    while off < to {
        if stop() {
            return Ok(None);
        }
        let n = ((to - off) as usize).min(ZERO_CHUNK_BYTES);
        let already_zero = current
            .and_then(|c| c.get(off as usize..off as usize + n))
            .is_some_and(|c| c.iter().all(|&b| b == 0));
        if !already_zero {
            file.write_all_at(&zeros[..n], off)?;
            written += n as u64;
        }
        off += n as u64;
    }
    Ok(Some(written))
}
