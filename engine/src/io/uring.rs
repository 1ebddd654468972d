//! The io_uring write queue: the writer thread's own ring, fed with linked write + fdatasync pairs
//! from a pool of registered buffers.
//!
//! # Why the `io-uring` crate directly
//! `tokio-uring` is unmaintained and pinned to `io-uring` 0.6, and it would bring an async runtime
//! into an engine whose public API has none. The writer is a single thread running a synchronous
//! loop, so it owns a ring outright (the queue is `Send`, never shared) and drives it with
//! `submit` and `submit_and_wait`.
//!
//! # Linked write + fdatasync
//! Each [`WriteOp`] becomes a `WRITE` (or `WRITE_FIXED`) SQE flagged `IOSQE_IO_LINK` followed by an
//! `FSYNC` with `IORING_FSYNC_DATASYNC` (when `op.sync`). The kernel starts the fdatasync only
//! after the write has fully completed, and [`WriteQueue::submit`] enters the kernel at once, so
//! the disk works on one batch while the caller builds the next. A short write breaks the link:
//! the kernel cancels the fdatasync (`-ECANCELED`) and this queue resubmits the remainder with a
//! fresh fdatasync; only a negative result is reported as an error. A failed fdatasync is reported
//! once and never retried (the fsyncgate lesson: the caller poisons the log).
//!
//! # Registered buffers
//! The pool's buffers are registered once with `IORING_REGISTER_BUFFERS`, which pins their pages
//! and spares the kernel from mapping user memory on every write. Registration can fail (most
//! often on `RLIMIT_MEMLOCK`); the queue then uses plain `WRITE` from the same buffers.
//!
//! # In-flight ownership
//! The kernel owns a buffer from submission until every completion of its operation has arrived.
//! Until then the buffer stays in the slot table, with the `Arc` of its file (which keeps the
//! descriptor open), whatever happens: errors, short writes, or dropping the queue, whose `Drop`
//! waits for all outstanding completions before anything is freed.
//!
//! Invariants: slot `i` holds the operation whose buffer has pool index `i`; a slot's `pending`
//! counts its SQEs whose CQEs have not arrived; a slot leaves the table only with `pending == 0`.
//!
//! Not done here: `O_DIRECT`, SQPOLL, retrying a failed fdatasync.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

use super::{FailedStep, IoBuf, QueueConfig, VfsFile, WriteCompletion, WriteOp, WriteQueue};

/// SQEs per operation: the write and its linked fdatasync.
const SQES_PER_OP: usize = 2;
/// Largest queue depth: buffer indexes are `u16`, and `depth * SQES_PER_OP` must stay within the
/// kernel's largest ring (`IORING_MAX_ENTRIES`, 32768).
const MAX_DEPTH: usize = 1 << 14;
/// Entries of the throwaway ring that [`probe`] builds.
const PROBE_RING_ENTRIES: u32 = 2;
/// Times [`UringQueue`] submits to make room when the submission queue is full, before giving up.
const SQ_FULL_RETRIES: usize = 64;
/// `user_data` low bit: the CQE belongs to the write.
const STEP_WRITE: u64 = 0;
/// `user_data` low bit: the CQE belongs to the fdatasync.
const STEP_SYNC: u64 = 1;
/// Opcodes this queue submits, with their names for error messages.
const REQUIRED_OPCODES: [(u8, &str); 3] = [
    (opcode::Write::CODE, "IORING_OP_WRITE"),
    (opcode::WriteFixed::CODE, "IORING_OP_WRITE_FIXED"),
    (opcode::Fsync::CODE, "IORING_OP_FSYNC"),
];

const _: () = assert!(MAX_DEPTH <= u16::MAX as usize + 1);
const _: () = assert!(MAX_DEPTH * SQES_PER_OP <= 32768);

/// Checks that io_uring can be used here: a ring can be created and supports every opcode this
/// queue submits.
///
/// # Errors
/// A human-readable reason when it cannot: ring creation failed (`ENOSYS` on old kernels, `EPERM`
/// under seccomp profiles or the `kernel.io_uring_disabled` sysctl), the kernel cannot be probed
/// (older than 5.6), or an opcode is missing.
pub fn probe() -> Result<(), String> {
    let ring = IoUring::new(PROBE_RING_ENTRIES).map_err(|e| describe_setup_error(&e))?;
    check_opcodes(&ring, &REQUIRED_OPCODES).map_err(|e| e.to_string())
}

/// Explains why `io_uring_setup` failed (also used by the replicator's io_uring transport).
pub fn describe_setup_error(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ENOSYS) => format!("io_uring_setup is not implemented by this kernel: {err}"),
        Some(libc::EPERM) => format!(
            "io_uring_setup is not permitted (seccomp profile or kernel.io_uring_disabled): {err}"
        ),
        _ => format!("io_uring_setup failed: {err}"),
    }
}

/// Fails with `Unsupported` naming the first opcode of `required` (code, name) that `ring` does
/// not support (also used by the replicator's io_uring transport).
pub fn check_opcodes(ring: &IoUring, required: &[(u8, &str)]) -> io::Result<()> {
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("IORING_REGISTER_PROBE failed (kernel older than 5.6?): {e}"),
        )
    })?;
    for &(code, name) in required {
        if !probe.is_supported(code) {
            let msg = format!("io_uring opcode {name} is not supported by this kernel");
            return Err(io::Error::new(io::ErrorKind::Unsupported, msg));
        }
    }
    Ok(())
}

/// One operation between submission and the arrival of its last completion.
struct Slot {
    token: u64,
    /// Keeps the descriptor open, and naming the same file, while the kernel uses it.
    file: Arc<dyn VfsFile>,
    fd: RawFd,
    offset: u64,
    buf: IoBuf,
    sync: bool,
    /// Bytes of `buf` written by finished rounds.
    written: usize,
    /// SQEs of the current round whose CQEs have not arrived.
    pending: usize,
    /// The current round's write result, once its CQE arrived.
    write_res: Option<i32>,
    /// The current round's fdatasync result, once its CQE arrived.
    sync_res: Option<i32>,
}

/// What to do once every CQE of a round has arrived.
enum Round {
    /// The operation is over.
    Done(Result<(), (FailedStep, io::Error)>),
    /// A short write: submit the rest (and a new fdatasync).
    Resubmit,
}

impl Slot {
    fn new(op: WriteOp, fd: RawFd) -> Slot {
        Slot {
            token: op.token,
            file: op.file,
            fd,
            offset: op.offset,
            buf: op.buf,
            sync: op.sync,
            written: 0,
            pending: 0,
            write_res: None,
            sync_res: None,
        }
    }

    /// Decides the outcome of the round that just finished. Errors win over a short write; a
    /// fdatasync cancelled (`-ECANCELED`) because its write was short or failed is not an error of
    /// its own.
    fn finish_round(&mut self) -> Round {
        let write_res = self
            .write_res
            .take()
            .expect("a round always includes a write");
        let sync_res = self.sync_res.take();
        if write_res < 0 {
            return Round::Done(Err((FailedStep::Write, errno(write_res))));
        }
        if let Some(res) = sync_res.filter(|&r| r < 0 && r != -libc::ECANCELED) {
            return Round::Done(Err((FailedStep::Sync, errno(res))));
        }
        let requested = self.buf.len() - self.written;
        let wrote = usize::try_from(write_res).expect("write_res is not negative");
        assert!(
            wrote <= requested,
            "kernel wrote more than asked: wrote={wrote} requested={requested}"
        );
        if wrote == 0 && requested > 0 {
            let err = io::Error::new(io::ErrorKind::WriteZero, "write returned 0 bytes");
            return Round::Done(Err((FailedStep::Write, err)));
        }
        self.written += wrote;
        if self.written < self.buf.len() {
            return Round::Resubmit;
        }
        match sync_res {
            // Cancelled although the write was complete: never reported as success.
            Some(res) if res < 0 => Round::Done(Err((FailedStep::Sync, errno(res)))),
            _ => Round::Done(Ok(())),
        }
    }
}

/// Converts a negative CQE result to the error it stands for.
fn errno(res: i32) -> io::Error {
    io::Error::from_raw_os_error(-res)
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The descriptor an operation writes to.
///
/// # Errors
/// `InvalidInput` if the file has none, or the write would end beyond `i64::MAX` (`off_t`).
fn target_fd(op: &WriteOp) -> io::Result<RawFd> {
    let Some(fd) = op.file.raw_fd() else {
        let path = op.file.path().display();
        return Err(invalid_input(format!(
            "{path} has no raw descriptor; io_uring needs one"
        )));
    };
    let end = op.offset.checked_add(op.buf.len() as u64);
    if end.and_then(|end| i64::try_from(end).ok()).is_none() {
        let path = op.file.path().display();
        let msg = format!("write to {path} at offset {} overflows off_t", op.offset);
        return Err(invalid_input(msg));
    }
    Ok(fd)
}

/// Packs a slot id and a step into a CQE's `user_data`.
fn user_data(slot_id: usize, step: u64) -> u64 {
    let slot = u64::try_from(slot_id).expect("slot ids are below MAX_DEPTH");
    (slot << 1) | step
}

/// The io_uring hot path. See the module docs.
pub struct UringQueue {
    // Declared first so that it is dropped first: by then `Drop::drop` has waited for every
    // completion, and closing the ring unregisters the buffers before they are freed.
    ring: IoUring,
    /// In-flight operations, indexed by buffer index.
    slots: Vec<Option<Slot>>,
    /// Occupied entries of `slots`.
    active: usize,
    free: Vec<IoBuf>,
    /// Start address of each pool buffer by index, to recognise the pool's own buffers.
    bases: Vec<usize>,
    buffer_bytes: usize,
    /// True when the pool is registered and writes use `WRITE_FIXED`.
    fixed: bool,
    /// Finished operations not yet returned by `wait`.
    done: Vec<WriteCompletion>,
    /// Reused storage for reaped CQEs: `(user_data, result)`.
    reaped: Vec<(u64, i32)>,
}

impl fmt::Debug for UringQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringQueue")
            .field("depth", &self.slots.len())
            .field("buffer_bytes", &self.buffer_bytes)
            .field("registered_buffers", &self.fixed)
            .field("active", &self.active)
            .field("done", &self.done.len())
            .field("free", &self.free.len())
            .finish()
    }
}

impl UringQueue {
    /// A queue with its own ring and `config.depth` buffers of `config.buffer_bytes`, registered
    /// with the kernel when it allows.
    ///
    /// # Errors
    /// `InvalidInput` if `config.depth` is 0 or above 16384; the ring's creation error; and
    /// `Unsupported` if the kernel lacks an opcode this queue needs.
    pub fn new(config: &QueueConfig) -> io::Result<UringQueue> {
        UringQueue::build(config, true)
    }

    /// [`UringQueue::new`], with buffer registration only attempted if `register`.
    fn build(config: &QueueConfig, register: bool) -> io::Result<UringQueue> {
        let depth = config.depth;
        if depth == 0 || depth > MAX_DEPTH {
            let msg = format!("queue depth {depth} is outside 1..={MAX_DEPTH}");
            return Err(invalid_input(msg));
        }
        let entries =
            u32::try_from((depth * SQES_PER_OP).next_power_of_two()).expect("bounded by MAX_DEPTH");
        let ring = IoUring::new(entries)?;
        check_opcodes(&ring, &REQUIRED_OPCODES)?;
        let mut free: Vec<IoBuf> = (0..depth)
            .map(|i| {
                let index = u16::try_from(i).expect("bounded by MAX_DEPTH");
                IoBuf::with_capacity(config.buffer_bytes, index)
            })
            .collect();
        let bases = free.iter_mut().map(|b| b.base_ptr() as usize).collect();
        let fixed = register && register_pool(&ring, &mut free);
        Ok(UringQueue {
            ring,
            slots: (0..depth).map(|_| None).collect(),
            active: 0,
            free,
            bases,
            buffer_bytes: config.buffer_bytes,
            fixed,
            done: Vec::with_capacity(depth),
            reaped: Vec::with_capacity(depth * SQES_PER_OP),
        })
    }

    /// True if `buf` is one of this pool's buffers (the very allocation that was registered).
    fn owns(&self, buf: &mut IoBuf) -> bool {
        let index = usize::from(buf.index);
        index < self.bases.len()
            && self.bases[index] == buf.base_ptr() as usize
            && buf.capacity() == self.buffer_bytes
    }

    /// The SQEs of the next round of slot `slot_id`: the rest of the buffer, then the fdatasync.
    fn round_entries(&self, slot_id: usize) -> (squeue::Entry, Option<squeue::Entry>) {
        let slot = self.slots[slot_id]
            .as_ref()
            .expect("round of an empty slot");
        let rest = &slot.buf.as_slice()[slot.written..];
        // Longer writes come back short (Linux caps one write below 2 GiB) and are resubmitted.
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let offset = slot.offset + slot.written as u64;
        let fd = types::Fd(slot.fd);
        let write = if self.fixed {
            opcode::WriteFixed::new(fd, rest.as_ptr(), len, slot.buf.index)
                .offset(offset)
                .build()
        } else {
            opcode::Write::new(fd, rest.as_ptr(), len)
                .offset(offset)
                .build()
        };
        let write = write.user_data(user_data(slot_id, STEP_WRITE));
        if !slot.sync {
            return (write, None);
        }
        let fsync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(user_data(slot_id, STEP_SYNC));
        (write.flags(squeue::Flags::IO_LINK), Some(fsync))
    }

    /// Queues the next round of slot `slot_id`, making room in the submission queue if needed.
    fn push_round(&mut self, slot_id: usize) -> io::Result<()> {
        let (write, fsync) = self.round_entries(slot_id);
        let pair;
        let entries: &[squeue::Entry] = match fsync {
            Some(fsync) => {
                pair = [write, fsync];
                &pair
            }
            None => std::slice::from_ref(&write),
        };
        for _ in 0..SQ_FULL_RETRIES {
            if self.push_entries(slot_id, entries) {
                let slot = self.slots[slot_id].as_mut().expect("slot filled above");
                slot.pending = entries.len();
                return Ok(());
            }
            self.enter(0)?;
        }
        Err(io::Error::other("io_uring submission queue stayed full"))
    }

    /// Pushes a round's SQEs, all or none (a lone linked write would link to a stranger's SQE).
    #[allow(unsafe_code)]
    fn push_entries(&mut self, slot_id: usize, entries: &[squeue::Entry]) -> bool {
        debug_assert!(
            self.slots[slot_id].is_some(),
            "SQEs for empty slot {slot_id}"
        );
        let mut sq = self.ring.submission();
        // SAFETY: the entries point into the buffer of `slots[slot_id]` and name the descriptor
        // of the file whose `Arc` that slot holds. The slot leaves the table only once the CQEs
        // of these entries have arrived (`pending` counts them), its `IoBuf` never reallocates,
        // and `Drop` waits for every pending CQE, so buffer and descriptor outlive the operation.
        let pushed = unsafe { sq.push_multiple(entries) };
        pushed.is_ok()
    }

    /// Enters the kernel: submits queued SQEs and waits for `want` CQEs. Interruptions and
    /// transient refusals (`EINTR`, `EBUSY` on a full completion queue, `EAGAIN`) return `Ok`:
    /// every caller reaps and tries again.
    fn enter(&mut self, want: usize) -> io::Result<()> {
        match self.ring.submit_and_wait(want) {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Submits SQEs queued by resubmissions, without waiting.
    fn flush(&mut self) -> io::Result<()> {
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        self.enter(0)
    }

    /// Drains the completion queue and advances the operations it concerns.
    fn reap(&mut self) {
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.extend(
            self.ring
                .completion()
                .map(|cqe: cqueue::Entry| (cqe.user_data(), cqe.result())),
        );
        for &(data, res) in &reaped {
            self.on_cqe(data, res);
        }
        reaped.clear();
        self.reaped = reaped;
    }

    /// Records one CQE; when it is the round's last, decides what follows.
    fn on_cqe(&mut self, data: u64, res: i32) {
        let slot_id = usize::try_from(data >> 1).unwrap_or(usize::MAX);
        let slot = self.slots.get_mut(slot_id).and_then(Option::as_mut);
        let Some(slot) = slot else {
            panic!("CQE for no in-flight operation: user_data={data} result={res}");
        };
        assert!(
            slot.pending > 0,
            "unexpected CQE: slot={slot_id} result={res}"
        );
        let step = if data & 1 == STEP_WRITE {
            &mut slot.write_res
        } else {
            &mut slot.sync_res
        };
        assert!(
            step.is_none(),
            "duplicate CQE: user_data={data} result={res}"
        );
        *step = Some(res);
        slot.pending -= 1;
        if slot.pending > 0 {
            return;
        }
        match slot.finish_round() {
            Round::Done(result) => self.complete(slot_id, result),
            Round::Resubmit => {
                if let Err(e) = self.push_round(slot_id) {
                    self.complete(slot_id, Err((FailedStep::Write, e)));
                }
            }
        }
    }

    /// Ends an operation whose SQEs have all completed: its buffer returns to the pool.
    fn complete(&mut self, slot_id: usize, result: Result<(), (FailedStep, io::Error)>) {
        let slot = self.slots[slot_id]
            .take()
            .expect("completing an empty slot");
        assert_eq!(
            slot.pending, 0,
            "slot {slot_id} completed with SQEs in flight"
        );
        self.active -= 1;
        self.free.push(slot.buf);
        self.done.push(WriteCompletion {
            token: slot.token,
            result,
        });
        // Only now may the descriptor close: the kernel is done with it.
        drop(slot.file);
    }

    /// The fewest CQEs that can finish `ops` more operations: each needs at least the CQEs
    /// still pending in its current round, so take the operations closest to done first.
    fn cqes_needed(&self, ops: usize) -> usize {
        let (mut one, mut two) = (0, 0);
        for slot in self.slots.iter().flatten() {
            match slot.pending {
                1 => one += 1,
                _ => two += 1,
            }
        }
        let from_one = ops.min(one);
        let from_two = (ops - from_one).min(two);
        (from_one + SQES_PER_OP * from_two).max(1)
    }
}

/// Registers the pool's buffers; on failure logs why and returns false (plain writes are used).
#[allow(unsafe_code)]
fn register_pool(ring: &IoUring, pool: &mut [IoBuf]) -> bool {
    let iovecs: Vec<libc::iovec> = pool
        .iter_mut()
        .map(|buf| libc::iovec {
            iov_base: buf.base_ptr().cast(),
            iov_len: buf.capacity(),
        })
        .collect();
    // SAFETY: each iovec spans exactly the allocation of one pool buffer, which never reallocates.
    // The queue keeps its buffers (free, in flight, or lent to the writer, which must submit or
    // give them back), and its ring is dropped, unregistering them, before its buffers. The kernel
    // pins the registered pages, and `WRITE_FIXED` is only issued with a buffer whose address is
    // the registered one (`UringQueue::owns`).
    let registered = unsafe { ring.submitter().register_buffers(&iovecs) };
    match registered {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(%error, "io_uring buffer registration failed; using plain writes");
            false
        }
    }
}

impl WriteQueue for UringQueue {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn take_buffer(&mut self) -> Option<IoBuf> {
        let mut buf = self.free.pop()?;
        buf.clear();
        Some(buf)
    }

    /// # Panics
    /// If `buf` is not one of this queue's buffers.
    fn give_back(&mut self, mut buf: IoBuf) {
        assert!(
            self.owns(&mut buf),
            "give_back of a buffer not from this pool: index={}",
            buf.index
        );
        self.free.push(buf);
    }

    /// Queues the operation's SQEs and enters the kernel at once.
    ///
    /// # Errors
    /// `InvalidInput` if the buffer is not from this pool (it is dropped), or (the buffer returns
    /// to the pool) if the file has no raw descriptor or the write would end beyond `i64::MAX`.
    /// Errors from `io_uring_enter` leave the operation in flight: it completes through `wait`.
    /// If the submission queue stays full, the error comes back with the buffer in the pool.
    fn submit(&mut self, mut op: WriteOp) -> io::Result<()> {
        if !self.owns(&mut op.buf) {
            let msg = format!(
                "buffer index {} is not from this queue's pool",
                op.buf.index
            );
            return Err(invalid_input(msg));
        }
        let slot_id = usize::from(op.buf.index);
        assert!(
            self.slots[slot_id].is_none(),
            "buffer {slot_id} submitted while its slot is in flight"
        );
        let fd = match target_fd(&op) {
            Ok(fd) => fd,
            Err(e) => {
                self.free.push(op.buf);
                return Err(e);
            }
        };
        self.slots[slot_id] = Some(Slot::new(op, fd));
        self.active += 1;
        if let Err(e) = self.push_round(slot_id) {
            // Nothing of this operation reached the ring: the buffer is free again.
            let slot = self.slots[slot_id].take().expect("slot filled above");
            self.active -= 1;
            self.free.push(slot.buf);
            return Err(e);
        }
        self.enter(0)
    }

    /// Blocks until at least `min_complete` operations, capped at [`WriteQueue::in_flight`], are
    /// complete; `0` never blocks.
    fn wait(&mut self, min_complete: usize, out: &mut Vec<WriteCompletion>) -> io::Result<()> {
        let target = min_complete.min(self.in_flight());
        self.flush()?;
        self.reap();
        while self.done.len() < target {
            let want = self.cqes_needed(target - self.done.len());
            self.enter(want)?;
            self.reap();
        }
        self.flush()?;
        out.append(&mut self.done);
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.active + self.done.len()
    }
}

impl Drop for UringQueue {
    /// Waits for every in-flight operation, because the kernel may still read their buffers and
    /// those are freed right after. If waiting fails, the in-flight buffers and files are leaked
    /// instead: leaking is safe, freeing memory the kernel may read is not.
    fn drop(&mut self) {
        let mut discarded = Vec::new();
        let all = self.in_flight();
        if let Err(error) = self.wait(all, &mut discarded) {
            tracing::error!(
                %error,
                "io_uring queue dropped with operations in flight; leaking their buffers"
            );
            for slot in self.slots.iter_mut().filter_map(Option::take) {
                std::mem::forget(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Backend, OpenMode, StdVfs, Vfs};
    use std::path::Path;

    /// True when io_uring works here; otherwise says why the test is skipped.
    fn uring_available() -> bool {
        match probe() {
            Ok(()) => true,
            Err(reason) => {
                println!("skipping: io_uring unavailable: {reason}");
                false
            }
        }
    }

    fn open(path: &Path, mode: OpenMode) -> Arc<dyn VfsFile> {
        StdVfs::new(Backend::IoUring)
            .open(path, mode)
            .expect("open test file")
    }

    fn pattern(seed: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + seed * 7) as u8).collect()
    }

    /// Submits `ops` synced writes of `chunk` bytes back to back with at most `depth` in flight.
    fn pipelined_write(register: bool) {
        let (depth, chunk, ops) = (2, 64 * 1024, 7);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg");
        let file = open(&path, OpenMode::CreateNew);
        let config = QueueConfig {
            depth,
            buffer_bytes: chunk,
            dir: None,
        };
        let mut queue = UringQueue::build(&config, register).expect("queue");
        assert_eq!(queue.fixed, register);
        let mut done = Vec::new();
        for i in 0..ops {
            let mut buf = loop {
                match queue.take_buffer() {
                    Some(buf) => break buf,
                    None => queue.wait(1, &mut done).expect("wait"),
                }
            };
            buf.extend_from_slice(&pattern(i, chunk));
            let offset = (i * chunk) as u64;
            let op = WriteOp {
                token: i as u64,
                file: file.clone(),
                offset,
                buf,
                sync: true,
            };
            queue.submit(op).expect("submit");
            assert!(queue.in_flight() <= depth);
        }
        queue.wait(queue.in_flight(), &mut done).expect("wait all");
        assert_eq!(queue.in_flight(), 0);
        let mut tokens: Vec<u64> = done.iter().map(|c| c.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, (0..ops as u64).collect::<Vec<_>>());
        assert!(done.iter().all(|c| c.result.is_ok()), "{done:?}");
        let expected: Vec<u8> = (0..ops).flat_map(|i| pattern(i, chunk)).collect();
        assert!(std::fs::read(&path).expect("read back") == expected);
    }

    #[test]
    fn pipelined_synced_writes_read_back_with_registered_buffers() {
        if uring_available() {
            pipelined_write(true);
        }
    }

    #[test]
    fn pipelined_synced_writes_read_back_with_plain_writes() {
        if uring_available() {
            pipelined_write(false);
        }
    }

    #[test]
    fn large_buffer_is_written_whole() {
        if !uring_available() {
            return;
        }
        let len = 8 << 20;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        let file = open(&path, OpenMode::CreateNew);
        let config = QueueConfig {
            depth: 1,
            buffer_bytes: len,
            dir: None,
        };
        let mut queue = UringQueue::new(&config).expect("queue");
        let mut buf = queue.take_buffer().expect("buffer");
        let data = pattern(3, len);
        buf.extend_from_slice(&data);
        let op = WriteOp {
            token: 9,
            file,
            offset: 4096,
            buf,
            sync: true,
        };
        queue.submit(op).expect("submit");
        let mut done = Vec::new();
        queue.wait(1, &mut done).expect("wait");
        assert_eq!(done.len(), 1);
        assert!(done[0].result.is_ok(), "{done:?}");
        let on_disk = std::fs::read(&path).expect("read back");
        assert_eq!(on_disk.len(), 4096 + len);
        assert!(on_disk[4096..] == data[..]);
    }

    #[test]
    fn write_to_read_only_file_fails_with_ebadf_and_returns_buffer() {
        if !uring_available() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ro");
        std::fs::write(&path, b"x").expect("create");
        let file = open(&path, OpenMode::Read);
        let config = QueueConfig {
            depth: 1,
            buffer_bytes: 4096,
            dir: None,
        };
        let mut queue = UringQueue::new(&config).expect("queue");
        let mut buf = queue.take_buffer().expect("buffer");
        buf.extend_from_slice(b"hello");
        queue
            .submit(WriteOp {
                token: 1,
                file,
                offset: 0,
                buf,
                sync: true,
            })
            .expect("submit");
        assert!(queue.take_buffer().is_none());
        let mut done = Vec::new();
        queue.wait(1, &mut done).expect("wait");
        assert_eq!(done.len(), 1);
        match &done[0].result {
            Err((FailedStep::Write, e)) => assert_eq!(e.raw_os_error(), Some(libc::EBADF)),
            other => panic!("expected a write error with EBADF, got {other:?}"),
        }
        assert_eq!(queue.in_flight(), 0);
        assert!(queue.take_buffer().is_some());
    }

    #[test]
    fn wait_zero_never_blocks_and_drop_waits_for_in_flight_writes() {
        if !uring_available() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("drop");
        let file = open(&path, OpenMode::CreateNew);
        let config = QueueConfig {
            depth: 2,
            buffer_bytes: 1 << 20,
            dir: None,
        };
        let mut queue = UringQueue::new(&config).expect("queue");
        let data = pattern(5, 1 << 20);
        let mut buf = queue.take_buffer().expect("buffer");
        buf.extend_from_slice(&data);
        queue
            .submit(WriteOp {
                token: 1,
                file,
                offset: 0,
                buf,
                sync: true,
            })
            .expect("submit");
        let mut done = Vec::new();
        queue.wait(0, &mut done).expect("wait(0)");
        assert_eq!(queue.in_flight() + done.len(), 1);
        drop(queue);
        assert!(std::fs::read(&path).expect("read back") == data);
    }

    #[test]
    fn file_without_descriptor_is_invalid_input_and_buffer_returns() {
        if !uring_available() {
            return;
        }
        let config = QueueConfig {
            depth: 1,
            buffer_bytes: 16,
            dir: None,
        };
        let mut queue = UringQueue::new(&config).expect("queue");
        let buf = queue.take_buffer().expect("buffer");
        let file: Arc<dyn VfsFile> = Arc::new(NoFd);
        let err = queue
            .submit(WriteOp {
                token: 1,
                file,
                offset: 0,
                buf,
                sync: false,
            })
            .expect_err("no descriptor");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(queue.in_flight(), 0);
        assert!(queue.take_buffer().is_some());
    }

    /// Set in the child process of `short_write_is_resubmitted`: the directory to write in.
    const SHORT_WRITE_CHILD_DIR: &str = "LOGSHIP_URING_SHORT_WRITE_DIR";
    /// `RLIMIT_FSIZE` of that child: writes crossing it come back short.
    const SHORT_WRITE_LIMIT_BYTES: usize = 1000;

    /// Forces a short write: the file size limit stops the first write after 1000 of 3000 bytes.
    /// The kernel cancels the linked fdatasync; the queue must resubmit the rest at offset 1000,
    /// which fails with EFBIG. `Ok` would mean the short write passed as success, a `Sync` error
    /// that the cancellation was reported. Runs in a child process because the limit is
    /// process-wide.
    #[test]
    fn short_write_is_resubmitted() {
        if !uring_available() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, m)| m);
        let test = format!("{module}::short_write_child");
        // Output goes through pipes: the file size limit would also hit a stdout redirected to
        // a file (as CI's is), failing the child for the wrong reason.
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", &test, "--nocapture", "--test-threads=1"])
            .env(SHORT_WRITE_CHILD_DIR, dir.path())
            .output()
            .expect("run child");
        assert!(
            out.status.success(),
            "child test failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The child half of `short_write_is_resubmitted`; does nothing in a normal run.
    #[test]
    #[allow(unsafe_code)]
    fn short_write_child() {
        let Some(dir) = std::env::var_os(SHORT_WRITE_CHILD_DIR) else {
            return;
        };
        let limit = libc::rlimit {
            rlim_cur: SHORT_WRITE_LIMIT_BYTES as libc::rlim_t,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: plain system calls on this child process; `limit` outlives the call. Ignoring
        // SIGXFSZ turns the write beyond the limit into EFBIG instead of killing the process.
        let rc = unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit)
        };
        assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
        let path = Path::new(&dir).join("short");
        let file = open(&path, OpenMode::CreateNew);
        let config = QueueConfig {
            depth: 1,
            buffer_bytes: 3 * SHORT_WRITE_LIMIT_BYTES,
            dir: None,
        };
        let mut queue = UringQueue::new(&config).expect("queue");
        let mut buf = queue.take_buffer().expect("buffer");
        buf.extend_from_slice(&pattern(1, 3 * SHORT_WRITE_LIMIT_BYTES));
        queue
            .submit(WriteOp {
                token: 1,
                file,
                offset: 0,
                buf,
                sync: true,
            })
            .expect("submit");
        let mut done = Vec::new();
        queue.wait(1, &mut done).expect("wait");
        match &done[..] {
            [WriteCompletion {
                result: Err((FailedStep::Write, e)),
                ..
            }] => {
                assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "{e}");
            }
            other => panic!("expected one write error with EFBIG, got {other:?}"),
        }
        let len = std::fs::metadata(&path).expect("stat").len();
        assert_eq!(len, SHORT_WRITE_LIMIT_BYTES as u64);
        assert!(queue.take_buffer().is_some());
    }

    /// A slot for `finish_round`, with `len` bytes of which `written` are already written.
    fn slot(len: usize, written: usize) -> Slot {
        let mut buf = IoBuf::with_capacity(len, 0);
        buf.extend_from_slice(&vec![1; len]);
        let op = WriteOp {
            token: 1,
            file: Arc::new(NoFd),
            offset: 0,
            buf,
            sync: true,
        };
        let mut slot = Slot::new(op, -1);
        slot.written = written;
        slot
    }

    /// Outcome of a round as `(step, errno)`, `"resubmit"` or `"ok"`, for table comparisons.
    fn outcome(round: Round) -> String {
        match round {
            Round::Resubmit => "resubmit".to_string(),
            Round::Done(Ok(())) => "ok".to_string(),
            Round::Done(Err((step, e))) => format!("{step:?} {:?}", e.raw_os_error()),
        }
    }

    #[test]
    fn round_outcomes_cover_short_writes_and_cancelled_fsyncs() {
        let canceled = -libc::ECANCELED;
        let cases: [(usize, usize, i32, Option<i32>, &str); 9] = [
            (100, 0, 100, Some(0), "ok"),
            (100, 0, 100, None, "ok"),
            (100, 0, 40, Some(canceled), "resubmit"),
            (100, 0, 40, Some(0), "resubmit"),
            (100, 60, 40, Some(0), "ok"),
            (100, 0, -libc::EBADF, Some(canceled), "Write Some(9)"),
            (100, 0, 100, Some(-libc::EIO), "Sync Some(5)"),
            (100, 0, 40, Some(-libc::EIO), "Sync Some(5)"),
            (100, 0, 100, Some(canceled), "Sync Some(125)"),
        ];
        for (len, written, write_res, sync_res, expected) in cases {
            let mut slot = slot(len, written);
            slot.write_res = Some(write_res);
            slot.sync_res = sync_res;
            let got = outcome(slot.finish_round());
            assert_eq!(
                got, expected,
                "len={len} written={written} write={write_res} sync={sync_res:?}"
            );
            if got == "resubmit" {
                assert_eq!(
                    slot.written,
                    written + usize::try_from(write_res).expect("short")
                );
            }
        }
        let mut zero = slot(100, 0);
        zero.write_res = Some(0);
        let Round::Done(Err((FailedStep::Write, e))) = zero.finish_round() else {
            panic!("a zero-byte write of a non-empty buffer must fail");
        };
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }

    /// A file with no descriptor, like a simulated one.
    #[derive(Debug)]
    struct NoFd;

    impl VfsFile for NoFd {
        fn path(&self) -> &Path {
            Path::new("nofd")
        }
        fn read_at(&self, _: &mut [u8], _: u64) -> io::Result<usize> {
            Ok(0)
        }
        fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
            Ok(())
        }
        fn sync_data(&self) -> io::Result<()> {
            Ok(())
        }
        fn len(&self) -> io::Result<u64> {
            Ok(0)
        }
        fn allocate(&self, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn set_len(&self, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn map(&self) -> Option<io::Result<memmap2::Mmap>> {
            None
        }
        fn raw_fd(&self) -> Option<RawFd> {
            None
        }
    }
}
