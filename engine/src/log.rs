//! [`Log`]: the public handle. Appenders assign LSNs and queue encoded records here; the writer
//! thread (`writer.rs`) turns the queue into group commits; readers and retention work on the
//! shared segment set.
//!
//! The lock order is in `state.rs`. Appenders hold `queue.state` only to assign LSNs and push;
//! CRCs are computed before.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use bytes::Bytes;

use crate::completion::{Append, AppendBatch, Completion};
use crate::error::{Error, Result};
use crate::io::{StdVfs, Vfs};
use crate::options::{Durability, Options};
use crate::reader::LogReader;
use crate::record::{encode_header, encoded_len, payload_crc, PayloadCrc, RECORD_HEADER_BYTES};
use crate::recovery::{self, RecoveryReport};
use crate::repair::{DamagedSegment, RepairReport};
use crate::retention::PurgeReport;
use crate::scrub::{ScrubOptions, Scrubber};
use crate::state::{Item, QueueState, Shared};
use crate::types::{Epoch, Lsn};

/// Each record of a replicated run: its LSN and byte range in the run.
type RecordRanges = Vec<(Lsn, usize, usize)>;

/// A snapshot of the log's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records made durable since open.
    pub records: u64,
    /// Bytes (headers included) made durable since open.
    pub bytes: u64,
    /// Write operations (group commits) submitted.
    pub writes: u64,
    /// fdatasync calls completed.
    pub syncs: u64,
    /// Segments rolled over.
    pub rollovers: u64,
    /// Segment files reused from the free pool.
    pub recycled: u64,
    /// Spare segments the preallocator zero-filled ahead of need (while batches average under
    /// [`crate::options::PREZERO_MAX_AVG_BATCH_BYTES`]): each is a segment's bytes written
    /// once more.
    pub prezeroed: u64,
    /// Damaged segments replaced by [`Log::repair_segment`].
    pub repairs: u64,
    /// Bytes readers read from sealed segments around the page cache (`O_DIRECT`), which they
    /// do when the log's backend writes around it (`io_uring_direct`).
    pub uncached_read_bytes: u64,
    /// Of `writes`, those made on another thread while the writer thread was idle: by an
    /// appender waiting for its record ([`crate::Options::caller_runs`]) or in
    /// [`Log::append_replicated_here`].
    pub caller_writes: u64,
    /// Zeros written after lone writes into a segment's unwritten (fallocated) blocks, so that
    /// the next lone writes overwrite written blocks (each fdatasync would otherwise also
    /// commit the blocks' conversion): at most a segment's bytes once, less a pre-zeroed one.
    pub zeroed_ahead_bytes: u64,
    /// Bytes of replicated records whose pages the page cache was asked to drop once durable
    /// ([`crate::Options::drop_behind_replicated`]); 0 on a backend that writes around it.
    pub dropped_behind_bytes: u64,
}

/// A durable segment log. `Send + Sync`: share it with `Arc` and append from any thread.
pub struct Log {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    preallocator: Option<JoinHandle<()>>,
    notifier: Option<JoinHandle<()>>,
    report: RecoveryReport,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared.dir)
            .field("backend", &self.shared.backend)
            .field("durable_lsn", &self.durable_lsn())
            .finish()
    }
}

impl Log {
    /// Opens (or with `create_if_missing`, creates) the log in `dir`, recovering it first: a torn
    /// record at the end of the last segment is cut and reported in [`Log::recovery_report`];
    /// corruption elsewhere is refused.
    ///
    /// # Errors
    /// [`Error::NotALog`] for a missing or foreign directory, [`Error::UnsupportedVersion`],
    /// [`Error::Corruption`] naming file, offset and LSN, [`Error::InvalidOptions`],
    /// [`Error::Io`], [`Error::BackendUnavailable`].
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Log> {
        options.validate()?;
        let vfs: Arc<dyn Vfs> = match &options.vfs {
            Some(v) => Arc::clone(v),
            None => Arc::new(StdVfs::new(options.backend)),
        };
        let dir = dir.as_ref().to_path_buf();
        let recovered = recovery::recover(&*vfs, &dir, &options)?;
        crate::writer::start(dir, vfs, options, recovered).map(
            |(shared, [writer, preallocator, notifier], report)| Log {
                shared,
                writer: Some(writer),
                preallocator: Some(preallocator),
                notifier: Some(notifier),
                report,
            },
        )
    }

    /// What recovery found and did at open.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The hot-path backend in use: `"io_uring"`, `"io_uring_direct"`, `"portable"` or `"faulty"`.
    pub fn backend(&self) -> &'static str {
        self.shared.backend
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Appends one record with [`Durability::Durable`]. Returns at once with the LSN; blocks only
    /// while the queue is full (backpressure).
    ///
    /// # Errors
    /// [`Error::RecordTooLarge`], [`Error::Poisoned`], [`Error::Closed`].
    pub fn append(&self, payload: Bytes) -> Result<Append> {
        self.append_with(payload, Durability::Durable)
    }

    /// Appends one record with the given durability.
    ///
    /// # Errors
    /// As [`Log::append`].
    pub fn append_with(&self, payload: Bytes, durability: Durability) -> Result<Append> {
        self.append_one(payload, durability, false)
    }

    /// Appends one record for the calling thread to write itself: as [`Log::append`], but an
    /// idle writer thread is left asleep (whatever [`Options::caller_runs`] says, and with an
    /// observer too) for [`Append::write_here`] to write the record, or to wake the writer
    /// thread if it cannot; dropping the append unwritten wakes it too. For a thread that
    /// serves a lone client and answers it later (a network port): it saves the hand-offs to
    /// the writer thread and back.
    ///
    /// # Errors
    /// As [`Log::append`].
    pub fn append_to_write_here(&self, payload: Bytes) -> Result<Append> {
        self.append_one(payload, Durability::Durable, true)
    }

    fn append_one(&self, payload: Bytes, durability: Durability, here: bool) -> Result<Append> {
        let hasher = self.check_and_hash(&payload)?;
        let need = encoded_len(payload.len());
        let mut st = self.lock_with_room(need)?;
        let was_empty = st.items.is_empty();
        let (lsn, generation) = push_record(&mut st, payload, &hasher);
        let owes_wake = self.wake_writer_unless_waited(&mut st, was_empty, durability, here);
        drop(st);
        let completion = self.completion(lsn, generation, durability);
        Ok(Append::new(completion.owing_wake(owes_wake)))
    }

    /// Appends records with dense LSNs; they become durable together.
    ///
    /// # Errors
    /// As [`Log::append`]; [`Error::InvalidOptions`] for an empty batch. Nothing is appended
    /// when any record is too large.
    pub fn append_batch<I>(&self, payloads: I) -> Result<AppendBatch>
    where
        I: IntoIterator<Item = Bytes>,
    {
        self.append_many(payloads, false)
    }

    /// [`Log::append_batch`] for the calling thread to write, as [`Log::append_to_write_here`]
    /// (with [`AppendBatch::write_here`]).
    ///
    /// # Errors
    /// As [`Log::append_batch`].
    pub fn append_batch_to_write_here<I>(&self, payloads: I) -> Result<AppendBatch>
    where
        I: IntoIterator<Item = Bytes>,
    {
        self.append_many(payloads, true)
    }

    fn append_many<I>(&self, payloads: I, here: bool) -> Result<AppendBatch>
    where
        I: IntoIterator<Item = Bytes>,
    {
        let records: Vec<(Bytes, PayloadCrc)> = payloads
            .into_iter()
            .map(|p| self.check_and_hash(&p).map(|h| (p, h)))
            .collect::<Result<_>>()?;
        if records.is_empty() {
            return Err(Error::InvalidOptions {
                key: "payloads",
                reason: "append_batch needs at least one record".into(),
            });
        }
        let need: usize = records.iter().map(|(p, _)| encoded_len(p.len())).sum();
        let mut st = self.lock_with_room(need)?;
        let was_empty = st.items.is_empty();
        let first = st.next_lsn;
        let mut last = (first, st.generation);
        for (payload, hasher) in records {
            last = push_record(&mut st, payload, &hasher);
        }
        let owes_wake =
            self.wake_writer_unless_waited(&mut st, was_empty, Durability::Durable, here);
        drop(st);
        let completion = self.completion(last.0, last.1, Durability::Durable);
        Ok(AppendBatch::new(first, completion.owing_wake(owes_wake)))
    }

    /// Appends one record with [`Durability::Durable`] in `epoch`, which first becomes the log's
    /// epoch if it is newer ([`Log::set_epoch`]). Check and append are one step under the queue
    /// lock: no other append or epoch change can come between them.
    ///
    /// # Errors
    /// [`Error::StaleEpoch`] when `epoch` is older than the log's epoch (nothing is appended and
    /// the epoch is unchanged); those of [`Log::append`].
    pub fn append_in_epoch(&self, epoch: Epoch, payload: Bytes) -> Result<Append> {
        let hasher = self.check_and_hash(&payload)?;
        let mut st = self.lock_with_room(encoded_len(payload.len()))?;
        raise_epoch(&mut st, epoch)?;
        let (lsn, generation) = push_record(&mut st, payload, &hasher);
        self.shared.queue.wake_writer(&mut st);
        drop(st);
        let completion = self.completion(lsn, generation, Durability::Durable);
        Ok(Append::new(completion))
    }

    /// Makes `epoch` the epoch local appends ([`Log::append`] and its variants) are written in.
    /// A record takes the epoch current when it is assigned its LSN, so every append that
    /// returns after this call is in `epoch` (or a newer one), and along the LSNs of local
    /// appends epochs never decrease. Setting the current epoch again does nothing.
    ///
    /// The epoch only rises: at open it is the epoch of the last record the log holds (0 when
    /// it holds none, or when that record cannot be read), and records appended with
    /// [`Log::append_replicated`] raise it to theirs. It is not stored apart from the records:
    /// a caller that must remember an epoch no record carries yet keeps it itself.
    ///
    /// # Errors
    /// [`Error::StaleEpoch`] when `epoch` is older than the current one, which is unchanged.
    pub fn set_epoch(&self, epoch: Epoch) -> Result<()> {
        raise_epoch(&mut self.shared.queue.state.lock(), epoch)
    }

    /// The epoch local appends are written in now (see [`Log::set_epoch`]).
    pub fn epoch(&self) -> Epoch {
        self.shared.queue.state.lock().epoch
    }

    /// Appends records that another log encoded (a follower appending what its primary sent),
    /// keeping their bytes exactly: LSN, epoch, flags and CRC. `records` is a run of whole
    /// encoded records whose LSNs must continue this log densely. Every record's CRC is checked
    /// before anything is queued; payloads are slices of `records`, not copies. The log's epoch
    /// ([`Log::epoch`]) rises to the newest epoch among them; older epochs are kept as given.
    ///
    /// # Errors
    /// [`Error::InvalidRecords`] for bytes that are not whole valid records or skip an LSN,
    /// [`Error::LsnMismatch`] if the first LSN is not the log's next one, and those of
    /// [`Log::append`]. Nothing is appended on error.
    pub fn append_replicated(&self, records: Bytes) -> Result<AppendBatch> {
        self.queue_replicated(records, Replicated::Wake)
    }

    /// [`Log::append_replicated`], then, if the writer thread is idle and the queue holds at
    /// most `max_bytes` (these records, or these and a few before them), the write and its
    /// fdatasync on the calling thread, the log's observer called on it; the writer thread is
    /// not even woken then. For an executor that would otherwise hand the records to the writer
    /// thread and wait for its wake-up (a follower appending what its primary sent): the write
    /// starts at once. When the writer is busy, or more is queued (a bulk write is better left
    /// to the writer thread while the caller goes on receiving the next), it takes them as
    /// after `append_replicated`. A failed write poisons the log as one on the writer thread
    /// does; the returned batch then completes with the error.
    ///
    /// # Errors
    /// As [`Log::append_replicated`].
    pub fn append_replicated_here(&self, records: Bytes, max_bytes: usize) -> Result<AppendBatch> {
        self.queue_replicated(records, Replicated::WriteHere { max_bytes })
    }

    /// [`Log::append_replicated`] for records that more will follow at once, from the same
    /// caller (the second of two frames that arrived together): they are queued without waking
    /// an idle writer thread, so that the caller's next [`Log::append_replicated_here`] writes
    /// them with its own in one write and one fdatasync. If that call does not write them, or
    /// never comes, the returned batch owes the writer thread its wake and pays it when it is
    /// waited on, polled or dropped: hold it until the next call has returned.
    ///
    /// # Errors
    /// As [`Log::append_replicated`].
    pub fn append_replicated_before_more(&self, records: Bytes) -> Result<AppendBatch> {
        self.queue_replicated(records, Replicated::MoreFollow)
    }

    /// Queues replicated records, then wakes the writer thread, writes them here, or leaves
    /// the wake owing, as `how` says.
    fn queue_replicated(&self, records: Bytes, how: Replicated) -> Result<AppendBatch> {
        let (parsed, newest) = self.parse_replicated(&records)?;
        let Some(&(first, _, _)) = parsed.first() else {
            return Err(Error::InvalidRecords {
                offset: 0,
                reason: "no records".into(),
            });
        };
        let need = records.len();
        let mut st = self.lock_with_room(need)?;
        if st.next_lsn != first {
            return Err(Error::LsnMismatch {
                expected: st.next_lsn,
                found: first,
            });
        }
        for &(lsn, start, end) in &parsed {
            let mut header = [0u8; RECORD_HEADER_BYTES];
            header.copy_from_slice(&records[start..start + RECORD_HEADER_BYTES]);
            st.queued_bytes += end - start;
            st.items.push(Item::Record {
                header,
                payload: records.slice(start + RECORD_HEADER_BYTES..end),
                replicated: true,
            });
            st.next_lsn = lsn.next();
        }
        st.epoch = st.epoch.max(newest);
        let last = st.next_lsn.prev();
        let generation = st.generation;
        let max_here = match how {
            Replicated::WriteHere { max_bytes } => {
                Some(max_bytes).filter(|&max| st.writer_waiting && st.queued_bytes <= max)
            }
            Replicated::Wake | Replicated::MoreFollow => None,
        };
        let owes_wake = how == Replicated::MoreFollow;
        if max_here.is_none() && !owes_wake {
            self.shared.queue.wake_writer(&mut st);
        }
        drop(st);
        if let Some(max_bytes) = max_here {
            // The wake skipped above is owed unless this thread wrote.
            if !self.shared.watermark.write_queued_here(max_bytes) {
                self.shared.watermark.wake_writer_thread();
            }
        }
        let completion = self.completion(last, generation, Durability::Durable);
        Ok(AppendBatch::new(first, completion.owing_wake(owes_wake)))
    }

    /// Checks a run of encoded records: whole, CRCs good, LSNs dense, sizes within bounds.
    /// Returns each record's LSN and byte range, and the newest epoch among them.
    fn parse_replicated(&self, records: &[u8]) -> Result<(RecordRanges, Epoch)> {
        let max = self.shared.options.max_record_bytes;
        let mut out = Vec::new();
        let mut newest = Epoch(0);
        for item in crate::record::run(records) {
            let (offset, r) = item.map_err(|(offset, e)| Error::InvalidRecords {
                offset,
                reason: e.to_string(),
            })?;
            let bad = |reason: String| Error::InvalidRecords { offset, reason };
            if r.payload.len() > max {
                return Err(bad(format!(
                    "payload of {} bytes exceeds {max}",
                    r.payload.len()
                )));
            }
            if let Some(&(prev, _, _)) = out.last() {
                if r.header.lsn != Lsn::next(prev) {
                    return Err(bad(format!("LSN {} follows {prev}", r.header.lsn)));
                }
            }
            let end = offset + RECORD_HEADER_BYTES + r.payload.len();
            out.push((r.header.lsn, offset, end));
            newest = newest.max(r.header.epoch);
        }
        Ok((out, newest))
    }

    /// Appends one record, awaiting room in the queue instead of blocking the thread. The
    /// returned [`Append`] is itself awaitable for durability.
    ///
    /// # Cancel safety
    /// Dropping the future before it resolves appends nothing.
    pub fn append_async(&self, payload: Bytes) -> AppendFuture<'_> {
        AppendFuture {
            log: self,
            payload: Some(payload),
        }
    }

    /// Blocks until every record appended so far is durable; returns the last LSN.
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::Closed`].
    pub fn sync(&self) -> Result<Lsn> {
        let (last, generation) = {
            let st = self.shared.queue.state.lock();
            (st.next_lsn.prev(), st.generation)
        };
        Completion::new(last, generation, Arc::clone(&self.shared.watermark)).wait()
    }

    /// Reads durable records from `from` on. The iterator ends when it reaches the durable end;
    /// calling `next` again later continues as the log grows.
    ///
    /// # Errors
    /// [`Error::Purged`] if `from` is below the first LSN held.
    pub fn read_from(&self, from: Lsn) -> Result<LogReader> {
        LogReader::new(Arc::clone(&self.shared), from, false)
    }

    /// Like [`Log::read_from`] but also returns records written to the file system and not yet
    /// fdatasync'ed (they may vanish in a crash).
    ///
    /// # Errors
    /// As [`Log::read_from`].
    pub fn read_from_unsynced(&self, from: Lsn) -> Result<LogReader> {
        LogReader::new(Arc::clone(&self.shared), from, true)
    }

    /// Removes every record after `cut`, durably, before returning. Appends queued before this
    /// call are written first (and then removed if above `cut`); the next append gets `cut + 1`.
    /// The observer hears of the cut ([`LogObserver::on_truncate`](crate::LogObserver)) before
    /// this returns. Stop appending from other threads around the call: an append made while it
    /// runs may take an LSN after the cut before the observer has heard of the cut.
    ///
    /// # Errors
    /// [`Error::LsnOutOfRange`] if `cut` is past the last LSN, [`Error::Purged`] if it is below
    /// the first LSN minus one, [`Error::Poisoned`], [`Error::Io`].
    pub fn truncate_after(&self, cut: Lsn) -> Result<()> {
        let first = self.shared.first_lsn();
        let (tx, rx) = crossbeam_channel::bounded(1);
        {
            let mut st = self.shared.queue.state.lock();
            admit(&st)?;
            let last = st.next_lsn.prev();
            if cut > last {
                return Err(Error::LsnOutOfRange {
                    lsn: cut,
                    first,
                    last,
                });
            }
            if cut.next() < first {
                return Err(Error::Purged { lsn: cut, first });
            }
            st.generation += 1;
            let generation = st.generation;
            st.items.push(Item::Truncate {
                cut,
                generation,
                reply: tx,
            });
            st.next_lsn = cut.next();
            st.writer_wants = 0;
            self.shared.queue.wake_writer(&mut st);
        }
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Seals the active segment: once every record appended so far is durable, the writer rolls
    /// over to a new segment (nothing happens to an empty one). A damaged record found in the
    /// active segment is repaired this way: sealed, then [`Log::repair_segment`].
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::Closed`], [`Error::Io`].
    pub fn seal_active(&self) -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        {
            let mut st = self.shared.queue.state.lock();
            admit(&st)?;
            st.items.push(Item::Seal { reply: tx });
            st.writer_wants = 0;
            self.shared.queue.wake_writer(&mut st);
        }
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// A reader of the whole log a step at a time, checking every frame: see [`Scrubber`].
    pub fn scrubber(&self, options: ScrubOptions) -> Scrubber {
        Scrubber::new(Arc::clone(&self.shared), options)
    }

    /// Sealed segments known to be damaged (found at open under [`crate::RecoveryMode::Salvage`],
    /// by the scrubber, or by a reader): their range reads as [`Error::Corruption`] until
    /// [`Log::repair_segment`] replaces them. The active segment is listed too when damage was
    /// found in its durable part (seal it to repair it).
    pub fn damaged_segments(&self) -> Vec<DamagedSegment> {
        let segs = self.shared.segments.read();
        segs.iter()
            .filter_map(|s| {
                s.damage().map(|corruption| DamagedSegment {
                    sealed: s.is_sealed(),
                    first: s.base,
                    last: s.last_lsn(),
                    corruption,
                })
            })
            .collect()
    }

    /// Replaces the damaged sealed segment that starts at `base` with `records` (runs of encoded
    /// records, in order), which must be exactly its LSNs (for example fetched from a replica),
    /// each with a valid CRC. The damaged
    /// file's bytes are kept in a `quarantine-*.seg` file; the new one is written under a
    /// temporary name, synced, read back and checked, then renamed into place.
    ///
    /// # Errors
    /// [`Error::InvalidRecords`] for records that are not exactly the segment's,
    /// [`Error::InvalidOptions`] when no sealed segment starts at `base`, [`Error::Io`].
    pub fn repair_segment(&self, base: Lsn, records: &[Bytes]) -> Result<RepairReport> {
        let report = crate::repair::repair_segment(&self.shared, base, records)?;
        self.shared.counters.repairs.fetch_add(1, Ordering::Relaxed);
        Ok(report)
    }

    /// Deletes (or keeps for reuse) every whole segment whose records are all below `lsn`.
    /// The active segment is never removed.
    ///
    /// # Errors
    /// [`Error::Io`] on a failed delete or rename; the segments before it are gone.
    pub fn purge_before(&self, lsn: Lsn) -> Result<PurgeReport> {
        crate::retention::purge_before(&self.shared, lsn)
    }

    /// First LSN held (the next LSN to be appended, if the log is empty).
    pub fn first_lsn(&self) -> Lsn {
        self.shared.first_lsn()
    }

    /// Last LSN assigned to an append (durable or not); `Lsn::ZERO` in a new log.
    pub fn last_lsn(&self) -> Lsn {
        self.shared.queue.state.lock().next_lsn.prev()
    }

    /// Highest LSN that is durable along with every record before it.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.watermark.durable()
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        let c = &self.shared.counters;
        LogStats {
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            rollovers: c.rollovers.load(Ordering::Relaxed),
            recycled: c.recycled.load(Ordering::Relaxed),
            prezeroed: self.shared.pool.prepared(),
            repairs: c.repairs.load(Ordering::Relaxed),
            caller_writes: c.caller_writes.load(Ordering::Relaxed),
            zeroed_ahead_bytes: c.zeroed_ahead_bytes.load(Ordering::Relaxed),
            dropped_behind_bytes: c.dropped_behind_bytes.load(Ordering::Relaxed),
            uncached_read_bytes: c.uncached_read_bytes.load(Ordering::Relaxed),
        }
    }

    /// Writes everything queued, waits for it, and stops the log's threads.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if the final writes failed.
    pub fn close(mut self) -> Result<()> {
        let result = self.sync().map(|_| ());
        self.shutdown();
        match result {
            Err(Error::Closed) => Ok(()),
            other => other,
        }
    }

    fn shutdown(&mut self) {
        {
            let mut st = self.shared.queue.state.lock();
            st.closing = true;
            self.shared.queue.work.notify_all();
            self.shared.queue.space.notify_all();
            for w in st.space_wakers.drain(..) {
                w.wake();
            }
        }
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                tracing::error!("log writer thread panicked");
            }
        }
        self.shared.pool.stop();
        if let Some(p) = self.preallocator.take() {
            if p.join().is_err() {
                tracing::error!("segment preallocator thread panicked");
            }
        }
        self.shared.watermark.stop_notifier();
        if let Some(n) = self.notifier.take() {
            if n.join().is_err() {
                tracing::error!("completion notifier thread panicked");
            }
        }
    }

    fn check_and_hash(&self, payload: &[u8]) -> Result<PayloadCrc> {
        let max = self.shared.options.max_record_bytes;
        if payload.len() > max {
            return Err(Error::RecordTooLarge {
                len: payload.len(),
                max,
            });
        }
        Ok(payload_crc(payload))
    }

    /// Locks the queue once it has room for `need` bytes (backpressure), or fails if the log
    /// no longer takes appends.
    fn lock_with_room(&self, need: usize) -> Result<parking_lot::MutexGuard<'_, QueueState>> {
        let mut st = self.shared.queue.state.lock();
        loop {
            admit(&st)?;
            if has_room(&st, need, self.shared.options.max_queue_bytes) {
                return Ok(st);
            }
            self.shared.queue.space.wait(&mut st);
        }
    }

    /// Caller-runs: an append into an empty queue while the writer thread idles in its
    /// idle-marker wait does not wake it, because the appender will most likely wait for the
    /// record and then write it itself (`Completion::wait`), or is to write it (`here`:
    /// `Completion::write_here`); the completion owes the wake instead, and pays it if it is
    /// dropped, polled, or finds the writer busy. A record nobody waits for is taken when that
    /// wait ends, within the writer's `IDLE_MARKER_MAX_DELAY`. Returns whether the wake is
    /// owed.
    fn wake_writer_unless_waited(
        &self,
        st: &mut QueueState,
        was_empty: bool,
        durability: Durability,
        here: bool,
    ) -> bool {
        let defer = was_empty
            && durability == Durability::Durable
            && st.writer_waiting
            && st.writer_timed
            && !st.writer_gathers
            && (here || self.shared.caller_runs());
        if !defer {
            self.shared.queue.wake_writer(st);
        }
        defer
    }

    fn completion(&self, lsn: Lsn, generation: u64, durability: Durability) -> Completion {
        match durability {
            Durability::Durable => {
                Completion::new(lsn, generation, Arc::clone(&self.shared.watermark))
            }
            Durability::Buffered => Completion::ready(lsn),
        }
    }
}

/// What [`Log::queue_replicated`] does once the records are queued.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replicated {
    /// Wakes the idle writer thread ([`Log::append_replicated`]).
    Wake,
    /// Writes on this thread when it can ([`Log::append_replicated_here`]).
    WriteHere { max_bytes: usize },
    /// Leaves the wake owing ([`Log::append_replicated_before_more`]).
    MoreFollow,
}

impl Drop for Log {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn admit(st: &QueueState) -> Result<()> {
    if let Some(cause) = &st.poisoned {
        return Err(Error::Poisoned {
            cause: cause.clone(),
        });
    }
    if st.closing {
        return Err(Error::Closed);
    }
    Ok(())
}

/// A record larger than the whole queue bound is admitted alone into an empty queue.
fn has_room(st: &QueueState, need: usize, max: usize) -> bool {
    st.queued_bytes == 0 || st.queued_bytes + need <= max
}

/// Makes `epoch` the queue's epoch unless it is older (refused, nothing changed).
fn raise_epoch(st: &mut QueueState, epoch: Epoch) -> Result<()> {
    if epoch < st.epoch {
        return Err(Error::StaleEpoch {
            current: st.epoch,
            requested: epoch,
        });
    }
    st.epoch = epoch;
    Ok(())
}

/// Queues one record stamped with the queue's epoch; returns its LSN and generation.
fn push_record(st: &mut QueueState, payload: Bytes, crc: &PayloadCrc) -> (Lsn, u64) {
    let lsn = st.next_lsn;
    let header = encode_header(lsn, st.epoch, crc);
    st.queued_bytes += encoded_len(payload.len());
    st.items.push(Item::Record {
        header,
        payload,
        replicated: false,
    });
    st.next_lsn = lsn.next();
    (lsn, st.generation)
}

/// Future of [`Log::append_async`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct AppendFuture<'a> {
    log: &'a Log,
    payload: Option<Bytes>,
}

impl Future for AppendFuture<'_> {
    type Output = Result<Append>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Append>> {
        let Some(payload) = self.payload.take() else {
            return Poll::Ready(Err(Error::Closed));
        };
        let log = self.log;
        let hasher = match log.check_and_hash(&payload) {
            Ok(h) => h,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let mut st = log.shared.queue.state.lock();
        if let Err(e) = admit(&st) {
            return Poll::Ready(Err(e));
        }
        let need = encoded_len(payload.len());
        if !has_room(&st, need, log.shared.options.max_queue_bytes) {
            st.space_wakers.push(cx.waker().clone());
            drop(st);
            self.payload = Some(payload);
            return Poll::Pending;
        }
        let (lsn, generation) = push_record(&mut st, payload, &hasher);
        log.shared.queue.wake_writer(&mut st);
        drop(st);
        Poll::Ready(Ok(Append::new(log.completion(
            lsn,
            generation,
            Durability::Durable,
        ))))
    }
}
