//! One connection's socket and send queue, and the writer thread that drains the queue.
//!
//! Invariants, all under the connection's lock:
//! - while the phase is `Open` and the queue is non-empty, a writer thread exists (or is being
//!   spawned by the caller that saw [`SendOutcome::StartWriter`]), and every `send` appends to
//!   the queue instead of writing, so bytes leave in the order they were sent;
//! - `queued_bytes` is the sum of the queue's lengths;
//! - `Closed` is final: the queue is empty, the socket shut down, sends are dropped.
//!
//! It delivers no events: the reader thread reports the close this records.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use bytes::{Buf, Bytes};
use parking_lot::{Condvar, Mutex};

use crate::transport::{socket, ConnId};

/// Most buffers one blocking write of a writer thread gathers.
const WRITE_BATCH_MAX_BUFFERS: usize = 64;

/// Most bytes one blocking write of a writer thread hands the kernel, so that
/// [`Transport::queued_bytes`](crate::transport::Transport::queued_bytes) falls steadily while a
/// large buffer drains.
const WRITE_BATCH_MAX_BYTES: usize = 1 << 20;

/// What a `send` asks of its caller once the connection's lock is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SendOutcome {
    Done,
    /// The queue became non-empty and no writer thread exists yet.
    StartWriter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Outgoing and not yet established: sends are queued.
    Connecting,
    Open,
    /// Closed locally, by a write error, or by its reader; sends are dropped.
    Closed,
}

/// One connection: its socket and its send queue.
pub(super) struct Conn {
    pub(super) id: ConnId,
    /// Mirrors `phase == Closed`, so the reader can check it per read without taking `state`,
    /// which a sender holds across its `sendmsg` (on loopback that call runs the receiver's
    /// TCP stack; a reader parking on the lock meanwhile cost an extra futex wake per reply).
    closed: AtomicBool,
    state: Mutex<ConnState>,
    /// Wakes the writer thread when the queue becomes non-empty or the connection closes.
    writer_wake: Condvar,
}

struct ConnState {
    phase: Phase,
    /// Present from socket creation on; shared with the reader and writer threads, so the
    /// descriptor stays valid (and is not reused) while any of them may still use it.
    stream: Option<Arc<TcpStream>>,
    /// Bytes not yet handed to the kernel, in order. While it is non-empty in `Open`, a writer
    /// thread exists and every send appends here.
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    writer_started: bool,
    /// The write error that closed the connection; reported in its `Closed`.
    error: Option<io::Error>,
    /// `close` was called (or `shutdown`); the reader reports no read error then.
    closed_locally: bool,
}

impl Conn {
    pub(super) fn new(id: ConnId, phase: Phase, stream: Option<Arc<TcpStream>>) -> Conn {
        Conn {
            id,
            closed: AtomicBool::new(phase == Phase::Closed),
            state: Mutex::new(ConnState {
                phase,
                stream,
                queue: VecDeque::new(),
                queued_bytes: 0,
                writer_started: false,
                error: None,
                closed_locally: false,
            }),
            writer_wake: Condvar::new(),
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(super) fn queued_bytes(&self) -> usize {
        self.state.lock().queued_bytes
    }

    pub(super) fn stream(&self) -> Option<Arc<TcpStream>> {
        self.state.lock().stream.clone()
    }

    /// Publishes the connecting socket so `close` can abort it; false if already closed.
    pub(super) fn attach_socket(&self, stream: &Arc<TcpStream>) -> bool {
        let mut state = self.state.lock();
        if state.phase == Phase::Closed {
            return false;
        }
        state.stream = Some(Arc::clone(stream));
        true
    }

    /// Connecting -> Open. `None` if closed meanwhile.
    pub(super) fn mark_open(&self) -> Option<SendOutcome> {
        let mut state = self.state.lock();
        if state.phase != Phase::Connecting {
            return None;
        }
        state.phase = Phase::Open;
        if state.queue.is_empty() {
            return Some(SendOutcome::Done);
        }
        state.writer_started = true;
        state.check_invariants();
        Some(SendOutcome::StartWriter)
    }

    /// Writes `data` now if nothing is queued, and queues what the kernel does not take.
    pub(super) fn send(&self, data: Bytes) -> SendOutcome {
        self.send_parts(std::slice::from_ref(&data))
    }

    /// Sends `parts` (at most [`socket::SEND_PARTS_MAX`]) one after another, with one
    /// `sendmsg` while the queue is empty: a frame
    /// whose header and body are separate buffers reaches the peer whole, rather than header
    /// first (on loopback each call runs the receiver's side, which may wake for the header
    /// alone).
    pub(super) fn send_parts(&self, parts: &[Bytes]) -> SendOutcome {
        let total: usize = parts.iter().map(Bytes::len).sum();
        if total == 0 {
            return SendOutcome::Done;
        }
        let mut state = self.state.lock();
        match state.phase {
            Phase::Closed => return SendOutcome::Done,
            Phase::Connecting => {
                state.push_parts(parts);
                return SendOutcome::Done;
            }
            Phase::Open if !state.queue.is_empty() => {
                state.push_parts(parts);
                return SendOutcome::Done;
            }
            Phase::Open => {}
        }
        let stream = state
            .stream
            .as_ref()
            .expect("an open connection has a socket");
        let sent = match socket::send_parts(stream.as_fd(), parts, libc::MSG_DONTWAIT) {
            Ok(n) if n == total => return SendOutcome::Done,
            Ok(n) => n,
            Err(error) if is_retryable(&error) => 0,
            Err(error) => {
                self.close_locked(&mut state, Some(error));
                return SendOutcome::Done;
            }
        };
        socket::unsent(parts, sent).for_each(|rest| state.push(rest));
        self.writer_wake.notify_one();
        let started = std::mem::replace(&mut state.writer_started, true);
        state.check_invariants();
        if started {
            SendOutcome::Done
        } else {
            SendOutcome::StartWriter
        }
    }

    /// Closes the connection (idempotent); `error` is a write error to report in `Closed`.
    pub(super) fn close(&self, error: Option<io::Error>) {
        let mut state = self.state.lock();
        if error.is_none() {
            state.closed_locally = true;
        }
        self.close_locked(&mut state, error);
    }

    /// Moves to `Closed` once: keeps the first error, drops the queue and shuts the socket
    /// down, which wakes the reader (and a connect or write blocked on it).
    fn close_locked(&self, state: &mut ConnState, error: Option<io::Error>) {
        if state.phase != Phase::Closed {
            state.phase = Phase::Closed;
            state.error = error;
            state.queue.clear();
            state.queued_bytes = 0;
            // Published before the shutdown: a connect woken by it (its socket now carries
            // ECONNRESET) must see the close and report it as aborted, not as a reset.
            self.closed.store(true, Ordering::Release);
            if let Some(stream) = &state.stream {
                // ENOTCONN when the peer is already gone or a connect never started; either
                // way the reader wakes or was never blocked.
                let _ = stream.shutdown(Shutdown::Both);
            }
            state.check_invariants();
        }
        self.writer_wake.notify_one();
    }

    /// Called by the reader as it exits: closes the connection and returns the error its
    /// `Closed` reports: a write error first, then the read error unless closed locally.
    pub(super) fn finish(&self, read_error: Option<io::Error>) -> Option<io::Error> {
        let mut state = self.state.lock();
        self.close_locked(&mut state, None);
        match state.error.take() {
            Some(error) => Some(error),
            None if state.closed_locally => None,
            None => read_error,
        }
    }

    /// The writer thread: drains the queue with blocking writes until the connection closes.
    pub(super) fn write_loop(&self, stream: &TcpStream) {
        let mut batch: Vec<Bytes> = Vec::with_capacity(WRITE_BATCH_MAX_BUFFERS);
        while self.next_batch(&mut batch) {
            let mut slices = [IoSlice::new(&[]); WRITE_BATCH_MAX_BUFFERS];
            for (slice, bytes) in slices.iter_mut().zip(&batch) {
                *slice = IoSlice::new(bytes);
            }
            let written = socket::send(stream.as_fd(), &slices[..batch.len()], 0);
            batch.clear();
            match written {
                Ok(0) => self.close(Some(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.consume(n),
                // A blocking socket does not return EAGAIN; yield rather than spin if it does.
                Err(error) if is_retryable(&error) => thread::yield_now(),
                Err(error) => self.close(Some(error)),
            }
        }
    }

    /// Waits for queued bytes and fills `batch` with (clones of) the first of them; false once
    /// the connection is closed. The bytes stay queued until `consume`.
    fn next_batch(&self, batch: &mut Vec<Bytes>) -> bool {
        let mut state = self.state.lock();
        loop {
            if state.phase == Phase::Closed {
                return false;
            }
            if !state.queue.is_empty() {
                break;
            }
            self.writer_wake.wait(&mut state);
        }
        let mut room = WRITE_BATCH_MAX_BYTES;
        for bytes in state.queue.iter().take(WRITE_BATCH_MAX_BUFFERS) {
            if room == 0 {
                break;
            }
            let take = bytes.len().min(room);
            batch.push(bytes.slice(..take));
            room -= take;
        }
        true
    }

    /// Drops the first `n` queued bytes, which the kernel has taken.
    fn consume(&self, mut n: usize) {
        let mut state = self.state.lock();
        if state.phase == Phase::Closed {
            return;
        }
        assert!(
            n <= state.queued_bytes,
            "wrote {n} bytes of {} queued",
            state.queued_bytes
        );
        state.queued_bytes -= n;
        while n > 0 {
            let front = state
                .queue
                .front_mut()
                .expect("queue holds the bytes just written");
            if front.len() > n {
                front.advance(n);
                break;
            }
            n -= front.len();
            state.queue.pop_front();
        }
        state.check_invariants();
    }
}

impl ConnState {
    fn push(&mut self, data: Bytes) {
        self.queued_bytes += data.len();
        self.queue.push_back(data);
    }

    /// Queues the non-empty ones of `parts`.
    fn push_parts(&mut self, parts: &[Bytes]) {
        socket::unsent(parts, 0).for_each(|part| self.push(part));
    }

    /// The module's invariants; O(queue length), so only in debug builds.
    fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let sum: usize = self.queue.iter().map(Bytes::len).sum();
        assert_eq!(
            sum, self.queued_bytes,
            "queued_bytes out of step with the queue"
        );
        assert!(
            self.queue.iter().all(|b| !b.is_empty()),
            "empty buffer queued"
        );
        match self.phase {
            Phase::Connecting => {}
            Phase::Open => {
                assert!(self.stream.is_some(), "open connection without a socket");
                assert!(
                    self.queue.is_empty() || self.writer_started,
                    "{} bytes queued and no writer",
                    self.queued_bytes
                );
            }
            Phase::Closed => assert!(self.queue.is_empty(), "closed connection with a queue"),
        }
    }
}

fn is_retryable(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}
