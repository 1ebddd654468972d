//! Options for opening a log. Every field documents its meaning, default and bounds;
//! [`Options::validate`] names the bad field.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::{Backend, Vfs};
use crate::record::{MARKER_BYTES, MAX_PAYLOAD_BYTES, RECORD_HEADER_BYTES};
use crate::segment::SEGMENT_HEADER_BYTES;
use crate::types::Lsn;

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 << 20;
/// Default bound on bytes queued for the writer before appenders wait: 64 MiB.
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 64 << 20;
/// Default largest single write (group-commit batch): 4 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 << 20;
/// Default largest payload: 4 MiB (write buffers are sized to hold one, so a larger default
/// would pin more memory per log).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 4 << 20;
/// Default number of purged segment files kept for reuse.
pub const DEFAULT_MAX_FREE_SEGMENTS: usize = 4;
/// Batches at least this large on average make pre-zeroing a spare segment cost more than it
/// saves: a large write amortizes the metadata commit of writing into allocated-but-unwritten
/// blocks, while zero-filling first writes every byte twice. `logship-bench segment-fill`
/// measures where the two cross: filling a 64 MiB segment in 128 KiB batches took 307 ms into
/// fallocated blocks against 146 + 184 ms zero-filled then overwritten (buffered; with
/// `O_DIRECT` fallocated was cheaper from 64 KiB batches on). A paced catch-up's chunks (at
/// most 256 KiB) are above it, so a follower catching up beside commits writes each byte once
/// and never zero-fills a segment in one unpaced burst.
pub const PREZERO_MAX_AVG_BATCH_BYTES: u64 = 128 << 10;
/// Bytes the preallocator zeroes per write when it pre-zeroes a spare (one fdatasync at the
/// end).
pub const PREZERO_WRITE_BYTES: usize = 1 << 20;
/// Smallest segment size accepted: 64 KiB.
pub const MIN_SEGMENT_SIZE_BYTES: u64 = 64 << 10;
/// Write operations the writer has in flight at once: one flushing, one being written behind it.
pub(crate) const WRITES_IN_FLIGHT: usize = 2;
/// Room every segment keeps after its records: the last write's marker and one idle marker.
pub(crate) const SEGMENT_TAIL_RESERVE_BYTES: u64 = 2 * MARKER_BYTES as u64;

/// The largest payload one segment of `segment_size_bytes` can hold: its header, one record
/// header, and the room every segment keeps for write markers come off the top.
pub fn max_record_bytes_fitting(segment_size_bytes: u64) -> u64 {
    let overhead = (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES) as u64 + SEGMENT_TAIL_RESERVE_BYTES;
    segment_size_bytes.saturating_sub(overhead)
}

/// What recovery does with a checksum failure that a crash cannot explain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Refuse to open with [`Error::Corruption`] naming the file, offset and LSN. The default.
    #[default]
    Strict,
    /// Keep every record before the first corrupt one, cut the log there, and report what was
    /// cut in the [`crate::RecoveryReport`]. For salvaging a damaged log on purpose.
    TruncateAtCorruption,
    /// For a node whose replicas hold the records: open, and set the damage aside for repair.
    /// A damaged sealed segment stays, marked damaged (reads there fail with
    /// [`Error::Corruption`] until [`crate::Log::repair_segment`] replaces it); damage in the
    /// last segment's synced records is copied to a `quarantine-*.seg` file and the log is cut
    /// before it, so the records come back through replication. Never loses bytes: the
    /// quarantine keeps them. Reported in [`crate::RecoveryReport::salvaged`].
    Salvage,
}

/// When an append's completion resolves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// When the record is fdatasync'ed. The default.
    #[default]
    Durable,
    /// At once: the record is queued for the next group commit but not waited for.
    Buffered,
}

/// Options for [`crate::Log::open`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Create the log if the directory is empty or missing. Default `false`.
    pub create_if_missing: bool,
    /// Size of each segment file. Default 64 MiB; at least 64 KiB and large enough for one
    /// maximum record. Applies to segments created from now on.
    pub segment_size_bytes: u64,
    /// Bytes of queued, unwritten records before appenders wait (backpressure). Default 64 MiB;
    /// at least `max_record_bytes` plus one header.
    pub max_queue_bytes: usize,
    /// Largest group-commit write. Default 4 MiB; at least 4 KiB. A single record larger than
    /// this is written alone.
    pub max_batch_bytes: usize,
    /// Largest payload accepted. Default 4 MiB; at most 256 MiB and what fits in a segment.
    pub max_record_bytes: usize,
    /// Purged segment files kept for reuse, so that steady-state writes overwrite allocated
    /// blocks instead of extending files. Default 4.
    pub max_free_segments: usize,
    /// Fill new segment files with zeros before use (in a background thread, ahead of need), so
    /// that writes into them are overwrites. Default `true`. Either way, a lone small write
    /// into a segment's unwritten blocks carries zeros up to 64 KiB ahead of it
    /// ([`crate::LogStats::zeroed_ahead_bytes`]).
    pub prezero_segments: bool,
    /// Hot-path backend on the real file system. Default [`Backend::Auto`].
    pub backend: Backend,
    /// A file system to use instead of the real one (the fault-injecting one in tests).
    pub vfs: Option<Arc<dyn Vfs>>,
    /// What recovery does with corruption. Default [`RecoveryMode::Strict`].
    pub recovery: RecoveryMode,
    /// Check every record of every segment at open, not only the last segment's (where crashes
    /// leave damage). Sealed segments' records are always checked by their CRCs when read.
    /// Default `false`.
    pub full_scan_on_open: bool,
    /// Told of every batch the writer forms and of every advance of the durable watermark, on
    /// the writer thread (replication uses it to send a batch before its fdatasync completes).
    /// A log with an observer writes only on the writer thread, in
    /// [`crate::Log::append_replicated_here`] and in [`crate::Completion::write_here`] (the
    /// calls that ask for it): `caller_runs` does not apply.
    pub observer: Option<Arc<dyn LogObserver>>,
    /// Caller-runs: a thread that waits for its record ([`crate::Completion::wait`], and so
    /// `append(..)?.wait()` and [`crate::Log::sync`]) while the writer thread is idle writes
    /// and syncs the queued records itself, instead of waking the writer and being woken by
    /// it: two thread hand-offs fewer on a lone commit. Async waiters never do (they must not
    /// block their executor). Default `true`.
    pub caller_runs: bool,
    /// Drop-behind for replicated records: once records appended by
    /// [`crate::Log::append_replicated`] (and its siblings) are durable, the page cache is
    /// asked to drop their whole pages, a MiB at a time. Nothing reads a follower's log back
    /// in normal operation (the database reads its primary; catch-up reads the primary's log),
    /// so keeping those pages only makes every catch-up write allocate fresh page-cache
    /// memory; dropped, the pages are reused. Records appended locally keep their pages (a
    /// primary's catch-up reads them back). Only clean pages are dropped, and a later read
    /// comes from the device. Backends that write around the page cache have nothing to drop.
    /// Default `true`.
    pub drop_behind_replicated: bool,
}

/// Watches the writer. Every call runs on the thread that writes, in LSN order: the writer
/// thread, or one in [`Log::append_replicated_here`](crate::Log::append_replicated_here) or
/// [`Completion::write_here`](crate::Completion::write_here), the calls that ask for it (a
/// waiter in [`Completion::wait`](crate::Completion::wait) never does: a log with an observer
/// has no caller-runs). Keep them short and never block in them (queue work elsewhere), or
/// every append waits.
pub trait LogObserver: std::fmt::Debug + Send + Sync + 'static {
    /// A batch of encoded records (headers and payloads, exactly the bytes written to the
    /// segment) is about to be written; its fdatasync has not started.
    fn on_batch(&self, first: Lsn, last: Lsn, records: &[u8]);
    /// Every record up to `durable` is on stable storage.
    fn on_durable(&self, durable: Lsn);
    /// The log was poisoned by a failed write or fdatasync: nothing more becomes durable until
    /// it is reopened.
    fn on_failure(&self, cause: &str) {
        let _ = cause;
    }
    /// The log was cut after `last` by [`Log::truncate_after`](crate::Log::truncate_after):
    /// the LSNs after it will name new records. Called by the writer once the cut is done, in
    /// order with [`LogObserver::on_batch`] (before the batch of any record after the cut) and
    /// before `truncate_after` returns, so that whatever the observer derives from the old
    /// records is taken back before it hears of a new one.
    fn on_truncate(&self, last: Lsn) {
        let _ = last;
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            create_if_missing: false,
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_free_segments: DEFAULT_MAX_FREE_SEGMENTS,
            prezero_segments: true,
            backend: Backend::Auto,
            vfs: None,
            recovery: RecoveryMode::Strict,
            full_scan_on_open: false,
            observer: None,
            caller_runs: true,
            drop_behind_replicated: true,
        }
    }
}

impl Options {
    /// Checks every bound; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |key, reason: String| Err(Error::InvalidOptions { key, reason });
        if self.max_record_bytes == 0 || self.max_record_bytes > MAX_PAYLOAD_BYTES {
            return bad(
                "max_record_bytes",
                format!(
                    "{} is not in 1..={MAX_PAYLOAD_BYTES}",
                    self.max_record_bytes
                ),
            );
        }
        if self.segment_size_bytes < MIN_SEGMENT_SIZE_BYTES {
            return bad(
                "segment_size_bytes",
                format!(
                    "{} is below {MIN_SEGMENT_SIZE_BYTES}",
                    self.segment_size_bytes
                ),
            );
        }
        if (self.max_record_bytes as u64) > max_record_bytes_fitting(self.segment_size_bytes) {
            let needed = self.segment_size_bytes
                - max_record_bytes_fitting(self.segment_size_bytes)
                + self.max_record_bytes as u64;
            return bad(
                "segment_size_bytes",
                format!(
                    "{} cannot hold one record of max_record_bytes={} (needs {needed})",
                    self.segment_size_bytes, self.max_record_bytes
                ),
            );
        }
        if self.backend == Backend::IoUringDirect
            && !self
                .segment_size_bytes
                .is_multiple_of(crate::io::direct::BLOCK_BYTES)
        {
            // Direct writes cover whole blocks: a segment that ends mid-block would grow.
            return bad(
                "segment_size_bytes",
                format!(
                    "{} is not a multiple of {} (needed by the io_uring_direct backend)",
                    self.segment_size_bytes,
                    crate::io::direct::BLOCK_BYTES
                ),
            );
        }
        if self.max_batch_bytes < 4096 {
            return bad(
                "max_batch_bytes",
                format!("{} is below 4096", self.max_batch_bytes),
            );
        }
        if self.max_queue_bytes < self.max_record_bytes + RECORD_HEADER_BYTES {
            return bad(
                "max_queue_bytes",
                format!(
                    "{} cannot hold one record of max_record_bytes={}",
                    self.max_queue_bytes, self.max_record_bytes
                ),
            );
        }
        Ok(())
    }

    /// Capacity of each writer buffer: a full batch, or one maximum record, and its marker.
    pub(crate) fn write_buffer_bytes(&self) -> usize {
        self.max_batch_bytes
            .max(self.max_record_bytes + RECORD_HEADER_BYTES)
            + MARKER_BYTES
    }

    /// The most bytes the writer can have written and not synced in a segment: the writes in
    /// flight and one idle marker. Stored in each segment header; recovery zeroes this far past
    /// a torn write.
    pub(crate) fn unsynced_window_bytes(&self) -> u64 {
        (WRITES_IN_FLIGHT * self.write_buffer_bytes() + MARKER_BYTES) as u64
    }
}
