//! [`Shared`]: the state the log's handle, its writer thread, readers, the scrubber, repair and
//! the preallocator share, and the appenders → writer queue inside it. Plain state: the code that
//! acts on it lives in `log.rs` (appenders) and `writer.rs` (the writer).
//!
//! Locks, always taken in this order when nested: `segments`, then `queue.state`, then the
//! watermark.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::completion::Watermark;
use crate::error::Result;
use crate::io::Vfs;
use crate::options::Options;
use crate::pool::FreePool;
use crate::record::RECORD_HEADER_BYTES;
use crate::segment_set::Segment;
use crate::types::{Epoch, Lsn};

/// An item for the writer thread, in LSN order.
pub(crate) enum Item {
    /// An encoded record: its 32-byte header and its payload.
    Record {
        header: [u8; RECORD_HEADER_BYTES],
        payload: Bytes,
        /// Queued by `Log::append_replicated` (and its siblings): its pages are dropped from
        /// the page cache once durable (`Options::drop_behind_replicated`).
        replicated: bool,
    },
    /// Drop every record after `cut`; reply when durable.
    Truncate {
        cut: Lsn,
        generation: u64,
        reply: crossbeam_channel::Sender<Result<()>>,
    },
    /// Seal the active segment (roll over) once everything before is durable.
    Seal {
        reply: crossbeam_channel::Sender<Result<()>>,
    },
}

/// Appenders → writer.
#[derive(Default)]
pub(crate) struct QueueState {
    /// LSN the next append gets.
    pub(crate) next_lsn: Lsn,
    /// The epoch local appends are stamped with when they get their LSN (under this lock, so
    /// epochs never decrease along their LSNs). Only ever raised.
    pub(crate) epoch: Epoch,
    pub(crate) items: Vec<Item>,
    /// Bytes of records queued or taken by the writer and not yet copied into a write buffer.
    pub(crate) queued_bytes: usize,
    /// Bumped by each truncation.
    pub(crate) generation: u64,
    pub(crate) poisoned: Option<String>,
    pub(crate) closing: bool,
    pub(crate) writer_waiting: bool,
    /// While the writer gathers a group commit: wake it only once `items` holds this many
    /// (0 otherwise: any item wakes it).
    pub(crate) writer_wants: usize,
    /// A waiting appender wrote (caller-runs) while the writer thread slept: the writer thread
    /// writes the idle marker that proves that write if nothing follows it.
    pub(crate) marker_due: bool,
    /// The writer thread waits at most its idle-marker delay (a marker is due): an append may
    /// leave it asleep for a waiting appender to write (`Log::wake_writer_unless_waited`).
    pub(crate) writer_timed: bool,
    /// The idle writer thread will gather a group for its next write: appends wake it.
    pub(crate) writer_gathers: bool,
    pub(crate) space_wakers: Vec<Waker>,
}

pub(crate) struct Queue {
    pub(crate) state: Mutex<QueueState>,
    /// The writer waits here for work.
    pub(crate) work: Condvar,
    /// Appenders wait here for room.
    pub(crate) space: Condvar,
}

impl Queue {
    /// Wakes the idle writer thread for queued items: at once, or while it gathers a group
    /// commit only once the queue holds what it waits for.
    pub(crate) fn wake_writer(&self, st: &mut QueueState) {
        if st.writer_waiting && !st.items.is_empty() && st.items.len() >= st.writer_wants {
            st.writer_waiting = false;
            self.work.notify_one();
        }
    }
}

/// Counters, readable at any time.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) records: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) rollovers: AtomicU64,
    pub(crate) recycled: AtomicU64,
    pub(crate) repairs: AtomicU64,
    /// Writes made by waiting appenders rather than the writer thread (caller-runs).
    pub(crate) caller_writes: AtomicU64,
    /// Zeros lone writes carried into unwritten blocks (`ZERO_AHEAD_BYTES` in writer.rs).
    pub(crate) zeroed_ahead_bytes: AtomicU64,
    /// Replicated bytes whose pages were dropped once durable (`DROP_BEHIND_GRAIN` in
    /// writer.rs).
    pub(crate) dropped_behind_bytes: AtomicU64,
    /// Bytes read around the page cache; shared with readers' window pools.
    pub(crate) uncached_read_bytes: Arc<AtomicU64>,
}

/// State shared by the handle, the writer, readers and the preallocator.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) vfs: Arc<dyn Vfs>,
    pub(crate) options: Options,
    pub(crate) queue: Queue,
    pub(crate) watermark: Arc<Watermark>,
    /// Sealed segments then the active one, in LSN order.
    pub(crate) segments: RwLock<Vec<Arc<Segment>>>,
    pub(crate) pool: Arc<FreePool>,
    /// Highest LSN handed to the kernel (page cache), for readers that accept unsynced data.
    pub(crate) written_lsn: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) backend: &'static str,
    /// Held until the last reference to the shared state goes.
    pub(crate) _lock: crate::io::LockGuard,
}

impl Shared {
    /// Whether waiting appenders may write their records themselves (caller-runs).
    pub(crate) fn caller_runs(&self) -> bool {
        self.options.caller_runs && self.options.observer.is_none()
    }

    pub(crate) fn first_lsn(&self) -> Lsn {
        self.segments
            .read()
            .first()
            .map(|s| s.base)
            .expect("a log always has an active segment")
    }
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Record { payload, .. } => write!(f, "Record({} bytes)", payload.len()),
            Item::Truncate { cut, .. } => write!(f, "Truncate({cut})"),
            Item::Seal { .. } => write!(f, "Seal"),
        }
    }
}
