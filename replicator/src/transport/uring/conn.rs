//! One connection as the ring thread sees it: its socket, the operations it has in flight, its
//! receive buffer and its send queue.
//!
//! Invariants:
//! - At most one operation of each kind ([`Op::Connect`], [`Op::ConnectTimeout`], [`Op::Recv`],
//!   [`Op::Send`]) is in flight; `InFlight` records which. Any number of cancels may be.
//! - The socket, the receive buffer, the queued `Bytes`, the gather `msghdr` and the connect
//!   address live in this struct (on the heap, so moving the struct moves no buffer) and the
//!   driver drops a `Conn` only when [`Conn::is_idle`]: the kernel is done with all of them.
//! - Once closing, nothing new is submitted except cancels, and no `Data` is reported.
//! - The connection's [`SendGate`] (shared with `send` callers) counts the bytes given to this
//!   thread and not yet taken by a completed send. It is opened when the connection comes up
//!   and closed when closing starts and, through [`GatedSocket`], before the descriptor closes:
//!   see `gate.rs` for why callers may write to the socket directly and why that is safe.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use io_uring::{opcode, squeue, types};

use super::gate::{GatedSocket, SendGate};
use super::ops::{token, Op, SqeQueue};
use super::sys::{empty_msghdr, SockAddr};
use crate::transport::recv_buf::RecvBuffer;
use crate::transport::{ConnId, NetEvent};

/// The most one receive takes in: one `Data` event carries at most this much, and where the
/// handler receives frames, at most this much again of a frame's first bytes held back from
/// the receive before (`transport::recv_buf`).
pub const RECV_BUFFER_BYTES: usize = crate::transport::recv_buf::RECV_BYTES;
/// Queued chunks one `SENDMSG` gathers at most.
pub(super) const MAX_GATHER_CHUNKS: usize = 64;
/// A gathering send stops adding chunks once it holds this many bytes; the socket's send buffer
/// rarely takes more in one go.
pub(super) const GATHER_TARGET_BYTES: usize = 4 << 20;

/// Longest connect timeout handed to the kernel; longer ones are clamped. (`Duration::MAX`
/// would overflow the kernel's signed seconds, fail the link timeout and so the connect.)
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(u32::MAX as u64);

const _: () = assert!(RECV_BUFFER_BYTES <= u32::MAX as usize);

/// What a connection is waiting for from the kernel.
#[derive(Debug, Default)]
struct InFlight {
    connect: bool,
    timeout: bool,
    recv: bool,
    send: bool,
    cancels: usize,
}

impl InFlight {
    fn flag(&mut self, op: Op) -> &mut bool {
        match op {
            Op::Connect => &mut self.connect,
            Op::ConnectTimeout => &mut self.timeout,
            Op::Recv => &mut self.recv,
            Op::Send => &mut self.send,
            other => panic!("{other:?} is not a connection operation"),
        }
    }
}

/// The target and time limit of a connect, kept until both of its completions arrive.
#[derive(Debug)]
struct ConnectArgs {
    addr: SockAddr,
    timeout: types::Timespec,
    limit: Duration,
}

/// A connection on the ring thread. See the module docs for its invariants.
#[derive(Debug)]
pub(super) struct Conn {
    id: ConnId,
    socket: GatedSocket,
    peer: SocketAddr,
    /// True once connected or accepted: decides between `Closed` and `ConnectFailed`.
    opened: bool,
    closing: bool,
    /// Why the connection ends; reported in its last event.
    end_error: Option<io::Error>,
    in_flight: InFlight,
    /// Receives land in its spare room and are delivered as slices of it (no copy; see
    /// `transport::recv_buf`). Never touched while a receive is in flight.
    recv_buf: RecvBuffer,
    send: SendQueue,
    connect: Option<Box<ConnectArgs>>,
}

impl Conn {
    /// A connection on `socket` with `peer`, neither connecting nor open: see
    /// [`Conn::connecting`] and [`Conn::accepted`]. `frames`: the handler receives logship
    /// frames (`NetHandler::receives_frames`).
    pub(super) fn new(
        id: ConnId,
        socket: TcpStream,
        peer: SocketAddr,
        gate: Arc<SendGate>,
        frames: bool,
    ) -> Conn {
        Conn {
            id,
            socket: GatedSocket::new(socket, gate),
            peer,
            opened: false,
            closing: false,
            end_error: None,
            in_flight: InFlight::default(),
            recv_buf: RecvBuffer::new(frames),
            send: SendQueue::default(),
            connect: None,
        }
    }

    /// This connection as an outgoing one, not yet started: see [`Conn::arm_connect`].
    pub(super) fn connecting(mut self, limit: Duration) -> Conn {
        self.connect = Some(Box::new(ConnectArgs {
            addr: SockAddr::new(self.peer),
            timeout: types::Timespec::from(limit.min(MAX_CONNECT_TIMEOUT)),
            limit,
        }));
        self
    }

    /// This connection as an accepted one, open to direct sends; the caller arms its receive.
    pub(super) fn accepted(mut self) -> Conn {
        self.opened = true;
        self.socket.gate().open(self.socket.raw_fd());
        self
    }

    fn fd(&self) -> types::Fd {
        types::Fd(self.socket.raw_fd())
    }

    /// The gate `send` callers go through.
    pub(super) fn gate(&self) -> &SendGate {
        self.socket.gate()
    }

    /// True once connected or accepted.
    pub(super) fn is_opened(&self) -> bool {
        self.opened
    }

    /// True once closing started: nothing but cancels will be submitted.
    pub(super) fn is_closing(&self) -> bool {
        self.closing
    }

    /// True if no operation of this connection is in flight: the kernel holds none of its memory.
    pub(super) fn is_idle(&self) -> bool {
        let f = &self.in_flight;
        !(f.connect || f.timeout || f.recv || f.send) && f.cancels == 0
    }

    /// Records the completion of `op`, before its result is handled.
    ///
    /// # Panics
    /// If no such operation was in flight.
    pub(super) fn op_completed(&mut self, op: Op) {
        if op == Op::CancelConn {
            assert!(self.in_flight.cancels > 0, "conn {}: stray cancel", self.id);
            self.in_flight.cancels -= 1;
            return;
        }
        let flag = self.in_flight.flag(op);
        assert!(
            *flag,
            "conn {}: completion of {op:?}, none in flight",
            self.id
        );
        *flag = false;
    }

    /// Submits the connect, linked to a timeout of the connection's limit.
    #[allow(unsafe_code)]
    pub(super) fn arm_connect(&mut self, sqes: &mut SqeQueue) {
        let fd = self.fd();
        let args = self
            .connect
            .as_ref()
            .expect("arm_connect on a connecting conn");
        assert!(!self.in_flight.connect && !self.in_flight.timeout);
        let connect = opcode::Connect::new(fd, args.addr.as_ptr(), args.addr.len())
            .build()
            .user_data(token(self.id.0, Op::Connect));
        let timeout = opcode::LinkTimeout::new(&args.timeout)
            .build()
            .user_data(token(self.id.0, Op::ConnectTimeout));
        // SAFETY: the address and timespec live in the boxed `ConnectArgs` and the descriptor in
        // `socket`; this `Conn` is dropped only when idle, after both completions (the connect's
        // and the link timeout's, which always arrives) have been reaped.
        unsafe { sqes.push_linked(connect, timeout) };
        self.in_flight.connect = true;
        self.in_flight.timeout = true;
    }

    /// Submits a receive into the connection's buffer.
    #[allow(unsafe_code)]
    pub(super) fn arm_recv(&mut self, sqes: &mut SqeQueue) {
        assert!(!self.in_flight.recv, "conn {}: second recv", self.id);
        debug_assert!(!self.closing, "recv armed on a closing conn");
        let fd = self.fd();
        let room = self.recv_buf.room();
        let len = room.len() as u32; // bounded by RECV_BUFFER_BYTES
        let entry = opcode::Recv::new(fd, room.as_mut_ptr().cast(), len)
            .build()
            .user_data(token(self.id.0, Op::Recv));
        // SAFETY: the buffer is the room `recv_buf` lent (spare room of its allocation, which no
        // slice handed out covers), not touched (moved, grown or replaced) until this receive
        // completes and `received` takes its bytes, and
        // the descriptor `socket`, both owned by this `Conn`, which is dropped only when idle,
        // after this receive's completion.
        unsafe { sqes.push(entry) };
        self.in_flight.recv = true;
    }

    /// Queues `data` behind everything queued before; starts a send if none is in flight.
    pub(super) fn queue_send(&mut self, data: Bytes, sqes: &mut SqeQueue) {
        if self.closing {
            return;
        }
        self.send.push(data);
        self.start_send(sqes);
    }

    /// Submits a send of the queue's head, if the connection is up and none is in flight.
    #[allow(unsafe_code)]
    fn start_send(&mut self, sqes: &mut SqeQueue) {
        if !self.opened || self.closing || self.in_flight.send {
            return;
        }
        let fd = self.fd();
        debug_assert!(
            self.gate().queued_bytes() >= self.send.unsent_bytes(),
            "conn {}: the gate counts {} bytes, the ring holds {}",
            self.id,
            self.gate().queued_bytes(),
            self.send.unsent_bytes()
        );
        let Some(entry) = self.send.next_entry(fd) else {
            return;
        };
        let entry = entry.user_data(token(self.id.0, Op::Send));
        // SAFETY: the entry points into `Bytes` held by the send queue (and, for a gathering
        // send, into its boxed msghdr and iovecs); the queue drops no chunk the send covers until
        // `SendQueue::complete`, which runs on this send's completion. The descriptor is
        // `socket`. This `Conn` is dropped only when idle, after that completion. Direct writes
        // from other threads wait while the gate counts these bytes (gate.rs, rule 2).
        unsafe { sqes.push(entry) };
        self.in_flight.send = true;
    }

    /// Starts closing: cancels what is in flight and remembers `error` as the reason.
    pub(super) fn begin_close(&mut self, sqes: &mut SqeQueue, error: Option<io::Error>) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.gate().close();
        self.end_error = error;
        // Cancelling a connect also removes its link timeout.
        for op in [Op::Connect, Op::Recv, Op::Send] {
            if *self.in_flight.flag(op) {
                sqes.cancel(token(self.id.0, op), token(self.id.0, Op::CancelConn));
                self.in_flight.cancels += 1;
            }
        }
    }

    /// Handles the connect's result; returns `Connected` if the connection came up.
    pub(super) fn on_connect(&mut self, res: i32, sqes: &mut SqeQueue) -> Option<NetEvent> {
        if self.closing {
            return None;
        }
        if res < 0 {
            let error = self.connect_error(res);
            self.begin_close(sqes, Some(error));
            return None;
        }
        self.opened = true;
        self.gate().open(self.socket.raw_fd());
        self.arm_recv(sqes);
        self.start_send(sqes);
        Some(NetEvent::Connected {
            conn: self.id,
            peer: self.peer,
        })
    }

    /// The error a failed connect reports. `ECANCELED` here means the link timeout fired (a
    /// local close would have set `closing` first).
    fn connect_error(&self, res: i32) -> io::Error {
        if res == -libc::ECANCELED || res == -libc::ETIMEDOUT {
            let limit = self.connect.as_ref().map_or(Duration::ZERO, |a| a.limit);
            let msg = format!("connect to {} timed out after {limit:?}", self.peer);
            return io::Error::new(io::ErrorKind::TimedOut, msg);
        }
        errno(res)
    }

    /// Handles a receive's result; returns the bytes to report, if any.
    #[allow(unsafe_code)]
    pub(super) fn on_recv(&mut self, res: i32, sqes: &mut SqeQueue) -> Option<NetEvent> {
        if self.closing {
            return None;
        }
        match res {
            0 => self.begin_close(sqes, None),
            n if n > 0 => {
                let n = usize::try_from(n).expect("positive");
                // The kernel wrote the first `n` bytes of the room the receive was armed with.
                let bytes = self.recv_buf.received(n);
                self.arm_recv(sqes);
                return bytes.map(|bytes| NetEvent::Data {
                    conn: self.id,
                    bytes,
                });
            }
            e if is_transient(e) => self.arm_recv(sqes),
            e => self.begin_close(sqes, Some(errno(e))),
        }
        None
    }

    /// Handles a send's result: drops what the kernel took, submits the rest.
    pub(super) fn on_send(&mut self, res: i32, sqes: &mut SqeQueue) {
        let sent = match res {
            n if n > 0 => usize::try_from(n).expect("positive"),
            e if is_transient(e) => 0,
            0 => {
                let error = io::Error::new(io::ErrorKind::WriteZero, "send took no bytes");
                self.send.complete(0);
                self.begin_close(sqes, Some(error));
                return;
            }
            e => {
                self.send.complete(0);
                self.begin_close(sqes, Some(errno(e)));
                return;
            }
        };
        self.send.complete(sent);
        self.gate().sent(sent);
        self.start_send(sqes);
    }

    /// The connection's last event. Consumes it, closing the socket first.
    ///
    /// # Panics
    /// If an operation is still in flight.
    pub(super) fn into_last_event(self) -> NetEvent {
        assert!(
            self.is_idle(),
            "conn {} dropped with {:?}",
            self.id,
            self.in_flight
        );
        let Conn {
            id,
            socket,
            opened,
            end_error,
            ..
        } = self;
        // Closes the gate, then the descriptor.
        drop(socket);
        if opened {
            return NetEvent::Closed {
                conn: id,
                error: end_error,
            };
        }
        let error = end_error.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed locally before the connection was established",
            )
        });
        NetEvent::ConnectFailed { conn: id, error }
    }
}

/// Results that only mean "try again".
fn is_transient(res: i32) -> bool {
    res == -libc::EINTR || res == -libc::EAGAIN || res == -libc::ENOBUFS
}

/// The error a negative completion result stands for.
pub(super) fn errno(res: i32) -> io::Error {
    io::Error::from_raw_os_error(-res)
}

/// The `msghdr` and iovecs of a gathering send; boxed so their addresses stay put.
struct Gather {
    hdr: libc::msghdr,
    iov: [libc::iovec; MAX_GATHER_CHUNKS],
}

/// A connection's outgoing bytes, in order: the head may be partly sent.
#[derive(Default)]
struct SendQueue {
    chunks: VecDeque<Bytes>,
    /// Bytes of the head chunk already taken by the kernel.
    head_sent: usize,
    /// Bytes the send in flight covers; `None` when no send is in flight.
    in_flight: Option<usize>,
    gather: Option<Box<Gather>>,
}

impl std::fmt::Debug for SendQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendQueue")
            .field("chunks", &self.chunks.len())
            .field("head_sent", &self.head_sent)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl SendQueue {
    fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.chunks.push_back(data);
        }
    }

    /// Bytes queued and not yet taken by a completed send; O(chunks).
    fn unsent_bytes(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum::<usize>() - self.head_sent
    }

    /// The SQE sending the queue's head: a `SEND` of the head's unsent part when it is alone, a
    /// `SENDMSG` gathering up to [`MAX_GATHER_CHUNKS`] chunks otherwise. `None` if empty.
    ///
    /// # Panics
    /// If a send is already in flight.
    fn next_entry(&mut self, fd: types::Fd) -> Option<squeue::Entry> {
        assert!(self.in_flight.is_none(), "second send in flight");
        let head = self.chunks.front()?;
        if self.chunks.len() == 1 {
            let rest = &head[self.head_sent..];
            // Longer sends come back short and the rest is resubmitted.
            let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
            self.in_flight = Some(len as usize);
            let send = opcode::Send::new(fd, rest.as_ptr(), len).flags(libc::MSG_NOSIGNAL);
            return Some(send.build());
        }
        let gather = self.gather.get_or_insert_with(|| {
            Box::new(Gather {
                hdr: empty_msghdr(),
                iov: [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; MAX_GATHER_CHUNKS],
            })
        });
        let (mut count, mut total) = (0, 0);
        for (i, chunk) in self.chunks.iter().take(MAX_GATHER_CHUNKS).enumerate() {
            let part = if i == 0 {
                &chunk[self.head_sent..]
            } else {
                &chunk[..]
            };
            gather.iov[i] = libc::iovec {
                iov_base: part.as_ptr().cast_mut().cast(),
                iov_len: part.len(),
            };
            count += 1;
            total += part.len();
            if total >= GATHER_TARGET_BYTES {
                break;
            }
        }
        gather.hdr.msg_iov = gather.iov.as_mut_ptr();
        gather.hdr.msg_iovlen = count as _; // at most MAX_GATHER_CHUNKS
        self.in_flight = Some(total);
        let flags = libc::MSG_NOSIGNAL as u32;
        Some(
            opcode::SendMsg::new(fd, std::ptr::addr_of!(gather.hdr))
                .flags(flags)
                .build(),
        )
    }

    /// Ends the send in flight, which took `sent` bytes: drops the chunks it finished.
    ///
    /// # Panics
    /// If no send is in flight or `sent` exceeds what it covered.
    fn complete(&mut self, sent: usize) {
        let covered = self
            .in_flight
            .take()
            .expect("send completion with none in flight");
        assert!(sent <= covered, "kernel sent {sent} of {covered} bytes");
        let mut left = sent;
        while left > 0 {
            let head_len = self.chunks.front().expect("sent bytes are queued").len();
            let rest = head_len - self.head_sent;
            if left < rest {
                self.head_sent += left;
                return;
            }
            left -= rest;
            self.head_sent = 0;
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(lens: &[usize]) -> SendQueue {
        let mut q = SendQueue::default();
        for (i, &len) in lens.iter().enumerate() {
            q.push(Bytes::from(vec![i as u8; len]));
        }
        q
    }

    fn remaining(q: &SendQueue) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, chunk) in q.chunks.iter().enumerate() {
            let from = if i == 0 { q.head_sent } else { 0 };
            out.extend_from_slice(&chunk[from..]);
        }
        out
    }

    #[test]
    fn send_completions_advance_through_chunks_in_order() {
        // (chunk lengths, bytes sent per completion, expected remaining length)
        let cases: [(&[usize], &[usize], usize); 5] = [
            (&[10], &[10], 0),
            (&[10], &[3, 7], 0),
            (&[10, 5, 7], &[12], 10),
            (&[10, 5, 7], &[15, 7], 0),
            (&[10, 5, 7], &[0, 9, 1, 1], 11),
        ];
        for (lens, sends, left) in cases {
            let mut q = queue(lens);
            let all = remaining(&q);
            let mut done = 0;
            for &sent in sends {
                let entry = q.next_entry(types::Fd(-1));
                assert!(entry.is_some(), "lens={lens:?} sends={sends:?}");
                q.complete(sent);
                done += sent;
                assert_eq!(remaining(&q), all[done..], "lens={lens:?} sends={sends:?}");
            }
            assert_eq!(remaining(&q).len(), left, "lens={lens:?} sends={sends:?}");
            assert_eq!(q.next_entry(types::Fd(-1)).is_none(), left == 0);
        }
    }

    #[test]
    fn gathering_send_covers_at_most_the_chunk_limit() {
        let mut q = queue(&[3; MAX_GATHER_CHUNKS + 10]);
        q.head_sent = 1;
        q.next_entry(types::Fd(-1)).expect("entry");
        assert_eq!(q.in_flight, Some(MAX_GATHER_CHUNKS * 3 - 1));
        let gather = q.gather.as_ref().expect("gather");
        #[allow(clippy::unnecessary_cast)] // `msg_iovlen` is `size_t` on glibc, `c_int` on musl
        let iovlen = gather.hdr.msg_iovlen as usize;
        assert_eq!(iovlen, MAX_GATHER_CHUNKS);
        assert_eq!(gather.iov[0].iov_len, 2);
        assert_eq!(
            gather.iov[0].iov_base as usize,
            q.chunks[0].as_ptr() as usize + 1
        );
    }

    #[test]
    fn gathering_send_stops_at_the_target_size() {
        let mut q = queue(&[GATHER_TARGET_BYTES / 2; 5]);
        q.next_entry(types::Fd(-1)).expect("entry");
        assert_eq!(q.in_flight, Some(GATHER_TARGET_BYTES));
    }

    #[test]
    fn single_chunk_send_covers_the_unsent_part() {
        let mut q = queue(&[100]);
        q.head_sent = 40;
        q.next_entry(types::Fd(-1)).expect("entry");
        assert_eq!(q.in_flight, Some(60));
    }

    #[test]
    #[should_panic(expected = "kernel sent 11 of 10 bytes")]
    fn completion_beyond_the_send_is_an_invariant_violation() {
        let mut q = queue(&[10]);
        q.next_entry(types::Fd(-1)).expect("entry");
        q.complete(11);
    }

    #[test]
    fn empty_bytes_are_not_queued() {
        let mut q = SendQueue::default();
        q.push(Bytes::new());
        assert!(q.next_entry(types::Fd(-1)).is_none());
    }
}
