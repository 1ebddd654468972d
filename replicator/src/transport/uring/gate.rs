//! The send gate of one connection, shared by the ring thread and every thread that calls
//! `Transport::send`: it decides whether bytes go straight to the socket from the caller's
//! thread or through the ring thread, counts the bytes the ring thread holds, and keeps the
//! socket's descriptor from being used once the ring thread may close it.
//!
//! # Why a direct write
//! A send handed to the ring thread costs a thread hop (a command, often an eventfd write and a
//! wake-up) before its SQE is even submitted. When nothing of the connection is queued, a
//! `send(2)` with `MSG_DONTWAIT` from the caller's thread does the same work without it, as the
//! portable transport does; only what the kernel refuses goes to the ring.
//!
//! # Rules, each under the gate's lock
//! 1. A direct write happens only while the phase is `Open` and `queued` is 0: nothing of the
//!    connection waits in the command queue, in the ring's send queue or in a send in flight,
//!    so the direct bytes are next in the stream. The lock is held across the `send(2)`, and
//!    whatever the kernel does not take is counted and its `Send` command pushed before the
//!    lock is released, so every later send, from any thread, sees `queued > 0` and queues
//!    behind it. The stream carries the bytes in the order their senders took the lock.
//! 2. `queued` counts every byte given to the ring thread until the completion of the send
//!    that takes it is reaped. The ring submits a send SQE only for such bytes, so no direct
//!    write runs while the kernel may be sending for the ring, and the ring's SQEs need not
//!    take the lock.
//! 3. The ring thread moves the phase to `Closed` when the connection starts closing, and again
//!    (through [`GatedSocket`]'s drop) right before the descriptor is closed; `Transport::close`
//!    moves it there at once, from any thread, so a send after `close` is dropped even before
//!    the ring thread runs the close (as the contract wants). A caller holds
//!    the lock from reading the descriptor to the end of its `send(2)`, so the close waits for
//!    it; a caller that comes later finds `Closed` and drops its bytes. A descriptor number the
//!    kernel reuses for another connection therefore never receives this connection's bytes.
//! 4. A direct write that fails (other than "try again") moves the phase to `Closed` and hands
//!    the error back; the transport then asks the ring thread to close the connection with it,
//!    so the error arrives in `Closed` as a failed ring send's would.
//!
//! The lock is never held while waiting for another lock except the command queue's (a send
//! pushes its command under it); the ring thread takes the command queue's lock alone.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::transport::socket;

/// Where a connection's socket stands, as far as senders are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not yet connected: every send is queued for the ring thread.
    Connecting,
    /// Connected; the descriptor is open and may be written while nothing is queued.
    Open(RawFd),
    /// Closing or closed (or a direct write failed): sends are dropped.
    Closed,
}

/// One connection's gate. See the module docs.
#[derive(Debug)]
pub(super) struct SendGate {
    phase: Mutex<Phase>,
    /// Bytes given to the ring thread whose send has not completed. Written only under `phase`'s
    /// lock (rule 1 reads it there); read without it by `queued_bytes`.
    queued: AtomicUsize,
}

impl SendGate {
    /// The gate of a connection not yet connected.
    pub(super) fn new() -> SendGate {
        SendGate {
            phase: Mutex::new(Phase::Connecting),
            queued: AtomicUsize::new(0),
        }
    }

    /// Bytes given to the ring thread and not yet taken by the kernel.
    pub(super) fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Sends `parts` (at most [`socket::SEND_PARTS_MAX`]) one after another: writes them at
    /// once, in one `sendmsg`, when `direct` and the gate allows (rule 1), hands what is left to
    /// `queue` part by part (which must queue each for the ring thread, in order), and drops them
    /// once closed.
    ///
    /// # Errors
    /// The error of a direct write that failed; the gate is closed and the connection must be
    /// closed with that error.
    #[allow(unsafe_code)]
    pub(super) fn send(
        &self,
        parts: &[Bytes],
        direct: bool,
        queue: impl FnMut(Bytes),
    ) -> io::Result<()> {
        let total: usize = parts.iter().map(Bytes::len).sum();
        let mut phase = self.phase.lock();
        let raw = match *phase {
            Phase::Closed => return Ok(()),
            Phase::Open(raw) if direct && self.queued_bytes() == 0 => raw,
            Phase::Connecting | Phase::Open(_) => {
                self.add_queued(total);
                socket::unsent(parts, 0).for_each(queue);
                return Ok(());
            }
        };
        // SAFETY: the phase is `Open`, so the ring thread has not closed the descriptor, and it
        // closes it only after setting `Closed` under this lock (rule 3), which is held until
        // `fd` is gone at the end of this function.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let sent = match socket::send_parts(fd, parts, libc::MSG_DONTWAIT) {
            Ok(n) if n == total => return Ok(()),
            Ok(n) => {
                assert!(n < total, "send took {n} of {total} bytes");
                n
            }
            Err(error) if is_transient(&error) => 0,
            Err(error) => {
                *phase = Phase::Closed;
                return Err(error);
            }
        };
        self.add_queued(total - sent);
        socket::unsent(parts, sent).for_each(queue);
        Ok(())
    }

    /// Ring thread: the connection is up on descriptor `fd`. A gate closed meanwhile (by
    /// `close` while connecting) stays closed.
    ///
    /// # Panics
    /// If it was already open: a connection opens once.
    pub(super) fn open(&self, fd: RawFd) {
        let mut phase = self.phase.lock();
        assert!(
            !matches!(*phase, Phase::Open(_)),
            "gate opened twice (fd {fd})"
        );
        if *phase == Phase::Connecting {
            *phase = Phase::Open(fd);
        }
    }

    /// No more sends, direct or queued; waits for a direct write in progress to end. Final.
    pub(super) fn close(&self) {
        *self.phase.lock() = Phase::Closed;
    }

    /// Ring thread: a send completion took `sent` of the queued bytes.
    ///
    /// # Panics
    /// If more bytes were sent than queued.
    pub(super) fn sent(&self, sent: usize) {
        let _phase = self.phase.lock();
        let queued = self.queued_bytes();
        assert!(sent <= queued, "sent {sent} bytes of {queued} queued");
        self.queued.store(queued - sent, Ordering::Relaxed);
    }

    /// Counts `len` more queued bytes; the caller holds the lock.
    fn add_queued(&self, len: usize) {
        self.queued.fetch_add(len, Ordering::Relaxed);
    }
}

/// A connection's socket, which closes the gate before its descriptor closes (rule 3), however
/// it is dropped.
#[derive(Debug)]
pub(super) struct GatedSocket {
    // Dropped after `drop` below has run.
    stream: TcpStream,
    gate: Arc<SendGate>,
}

impl GatedSocket {
    pub(super) fn new(stream: TcpStream, gate: Arc<SendGate>) -> GatedSocket {
        GatedSocket { stream, gate }
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    pub(super) fn gate(&self) -> &SendGate {
        &self.gate
    }
}

impl Drop for GatedSocket {
    fn drop(&mut self) {
        self.gate.close();
    }
}

/// Direct-write failures that only mean "the ring thread should send it".
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EAGAIN | libc::EINTR | libc::ENOBUFS)
    )
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{Shutdown, TcpListener};
    use std::time::Duration;

    use super::*;

    /// A connected pair on 127.0.0.1: (our side, the peer's).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        theirs
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        (ours, theirs)
    }

    fn read_exactly(peer: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        peer.read_exact(&mut got).expect("read");
        got
    }

    /// Sends `data` through `gate` and returns what it queued for the ring.
    fn send(gate: &SendGate, data: &'static [u8], direct: bool) -> (io::Result<()>, Vec<Bytes>) {
        let mut queued = Vec::new();
        let result = gate.send(&[Bytes::from_static(data)], direct, |b| queued.push(b));
        (result, queued)
    }

    #[test]
    fn connecting_queues_everything() {
        let gate = SendGate::new();
        let (result, queued) = send(&gate, b"early", true);
        result.expect("queued");
        assert_eq!(queued, [Bytes::from_static(b"early")]);
        assert_eq!(gate.queued_bytes(), 5);
    }

    #[test]
    fn open_and_idle_writes_directly_unless_on_the_ring_thread() {
        let (ours, mut theirs) = pair();
        let gate = SendGate::new();
        gate.open(ours.as_raw_fd());
        let (result, queued) = send(&gate, b"direct", true);
        result.expect("sent");
        assert!(queued.is_empty());
        assert_eq!(gate.queued_bytes(), 0);
        assert_eq!(read_exactly(&mut theirs, 6), b"direct");
        let (_, queued) = send(&gate, b"ring", false);
        assert_eq!(queued, [Bytes::from_static(b"ring")]);
        assert_eq!(gate.queued_bytes(), 4);
    }

    #[test]
    fn queued_bytes_keep_later_sends_behind_them_until_sent() {
        let (ours, mut theirs) = pair();
        let gate = SendGate::new();
        send(&gate, b"first", true).0.expect("queued");
        gate.open(ours.as_raw_fd());
        let (_, queued) = send(&gate, b"second", true);
        assert_eq!(queued, [Bytes::from_static(b"second")], "jumped the queue");
        assert_eq!(gate.queued_bytes(), 11);
        gate.sent(11);
        let (_, queued) = send(&gate, b"third", true);
        assert!(queued.is_empty());
        assert_eq!(read_exactly(&mut theirs, 5), b"third");
    }

    #[test]
    fn closed_drops_sends() {
        let (ours, mut theirs) = pair();
        let gate = SendGate::new();
        gate.open(ours.as_raw_fd());
        gate.close();
        let (result, queued) = send(&gate, b"dropped", true);
        result.expect("dropped quietly");
        assert!(queued.is_empty());
        assert_eq!(gate.queued_bytes(), 0);
        drop(ours);
        let mut rest = Vec::new();
        theirs.read_to_end(&mut rest).expect("eof");
        assert!(rest.is_empty(), "a closed gate wrote {rest:?}");
    }

    #[test]
    fn a_gate_closed_while_connecting_stays_closed_when_the_connect_completes() {
        let (ours, _theirs) = pair();
        let gate = SendGate::new();
        gate.close();
        gate.open(ours.as_raw_fd());
        let (result, queued) = send(&gate, b"dropped", true);
        result.expect("dropped quietly");
        assert!(queued.is_empty());
        assert_eq!(*gate.phase.lock(), Phase::Closed);
    }

    #[test]
    fn what_the_kernel_refuses_is_queued_in_order() {
        let (ours, mut theirs) = pair();
        let gate = SendGate::new();
        gate.open(ours.as_raw_fd());
        // Far more than loopback socket buffers hold with nobody reading.
        let data: Vec<u8> = (0..32 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut queued = Vec::new();
        let data = Bytes::from(data);
        gate.send(std::slice::from_ref(&data), true, |b| queued.push(b))
            .expect("sent");
        assert_eq!(queued.len(), 1);
        let rest = &queued[0];
        assert!(
            !rest.is_empty() && rest.len() < data.len(),
            "{}",
            rest.len()
        );
        assert_eq!(gate.queued_bytes(), rest.len());
        let taken = data.len() - rest.len();
        assert!(read_exactly(&mut theirs, taken) == data[..taken]);
        assert_eq!(*rest, data.slice(taken..));
    }

    #[test]
    fn parts_leave_in_one_write_and_what_the_kernel_refuses_queues_part_by_part() {
        let (ours, mut theirs) = pair();
        let gate = SendGate::new();
        gate.open(ours.as_raw_fd());
        let (result, queued) = {
            let mut queued = Vec::new();
            let parts = [&b"head"[..], b"", b"body"].map(Bytes::from_static);
            (gate.send(&parts, true, |b| queued.push(b)), queued)
        };
        result.expect("sent");
        assert!(queued.is_empty());
        assert_eq!(read_exactly(&mut theirs, 8), b"headbody");
        // A middle part far larger than loopback socket buffers hold with nobody reading.
        let data: Vec<u8> = (0..32 << 20).map(|i: u32| (i % 251) as u8).collect();
        let data = Bytes::from(data);
        let (head, tail) = (7, data.len() - 5);
        let parts = [
            data.slice(..head),
            data.slice(head..tail),
            data.slice(tail..),
        ];
        let mut queued = Vec::new();
        gate.send(&parts, true, |b| queued.push(b)).expect("sent");
        assert_eq!(queued.len(), 2, "the rest of the body, then the tail");
        let taken = data.len() - queued[0].len() - queued[1].len();
        assert!(taken > head && taken < tail, "{taken}");
        assert_eq!(queued[0], data.slice(taken..tail));
        assert_eq!(queued[1], data.slice(tail..));
        assert_eq!(gate.queued_bytes(), data.len() - taken);
        assert!(read_exactly(&mut theirs, taken) == data[..taken]);
    }

    #[test]
    fn a_failed_direct_write_closes_the_gate_with_its_error() {
        let (ours, _theirs) = pair();
        ours.shutdown(Shutdown::Write).expect("shutdown");
        let gate = SendGate::new();
        gate.open(ours.as_raw_fd());
        let (result, queued) = send(&gate, b"late", true);
        let error = result.expect_err("writing after shutdown fails");
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe, "{error}");
        assert!(queued.is_empty());
        let (result, queued) = send(&gate, b"later", true);
        result.expect("dropped quietly");
        assert!(queued.is_empty());
    }

    #[test]
    fn dropping_the_socket_closes_the_gate() {
        let (ours, _theirs) = pair();
        let gate = Arc::new(SendGate::new());
        let socket = GatedSocket::new(ours, Arc::clone(&gate));
        gate.open(socket.raw_fd());
        drop(socket);
        let (_, queued) = send(&gate, b"x", true);
        assert!(queued.is_empty());
        assert_eq!(*gate.phase.lock(), Phase::Closed);
    }

    #[test]
    #[should_panic(expected = "sent 3 bytes of 2 queued")]
    fn completing_more_than_was_queued_is_an_invariant_violation() {
        let gate = SendGate::new();
        send(&gate, b"ab", true).0.expect("queued");
        gate.sent(3);
    }
}
