//! [`UringTransport`]: raw TCP on one io_uring ring, driven by one dedicated thread.
//!
//! # Threads
//! The ring thread owns the ring, every socket and every buffer the kernel may touch, and is
//! the only thread that calls the handler and the only one that closes a socket. Other threads
//! (and the handler itself) talk to it through a command queue: `listen` binds the socket on the
//! caller's thread (`listen_on` takes one already bound), so it can return the address at once,
//! and hands it over; `connect` and `close` only queue a command. `send` from another thread
//! writes to the socket itself when nothing of the connection is queued (see Send below) and
//! queues a command otherwise. A caller wakes the ring thread by writing an eventfd
//! that the ring keeps a read armed on, and only when the thread announced it is about to sleep
//! in the kernel (`Shared::park`); calls made while it is busy, which includes every call from
//! inside the handler, skip that write and are picked up by the very next turn of the loop, so a
//! frame sent from `on_event` is submitted before the thread sleeps again.
//!
//! # Operations
//! - Accept: one multishot accept per listener (single-shot re-armed on kernels before 5.19);
//!   accepted sockets get `TCP_NODELAY` and a receive.
//! - Connect: `IORING_OP_CONNECT` linked to an `IORING_OP_LINK_TIMEOUT`; a fired timeout
//!   cancels the connect, which is reported as `ConnectFailed` with `ErrorKind::TimedOut`.
//!   A source address from [`TransportOptions`] is bound with a plain `bind(2)` on the ring
//!   thread when the socket is created, before the connect is submitted; a bind failure is
//!   that connection's `ConnectFailed`.
//! - Receive: one receive per connection, of at most [`RECV_BUFFER_BYTES`], into the spare room
//!   of its own buffer, delivered as a slice of it (no copy; frames kept whole in one
//!   allocation where the handler receives frames, see `transport::recv_buf`) and re-armed
//!   after each completion; 0 bytes means the peer closed (also after a half-close).
//! - Send: from a thread other than the ring thread, while the connection is up and nothing of
//!   it is queued or in flight, `send` writes at once with `send(2)` and `MSG_DONTWAIT` (as the
//!   portable transport does, saving the hop to the ring thread), and queues for the ring
//!   thread only what the kernel refuses; a failed write closes the connection through the ring
//!   thread with its error. The ring thread's own sends (from the handler) are always queued.
//!   Each connection's send gate (`gate.rs`) decides under its lock, keeps the bytes in order
//!   and keeps a caller from writing to a descriptor the ring thread has closed (whose number
//!   another connection may have by then). The ring thread keeps a per-connection queue of
//!   [`Bytes`] with at most one send in flight, which keeps the order. A lone chunk goes out
//!   with `SEND`, several with one gathering `SENDMSG`; short sends resubmit the rest.
//!   `MSG_NOSIGNAL` throughout.
//! - Close: `ASYNC_CANCEL` of every operation in flight; the socket is closed, and `Closed`
//!   reported, only after the last of their completions.
//!
//! # Buffer ownership
//! The kernel owns a buffer from submission until its completion arrives, even when the
//! operation is cancelled. Buffers therefore live in the connection's slot (`conn::Conn`),
//! which leaves the table only when no operation of it is in flight; shutdown and a panicking
//! handler wait for all completions first, and leak the buffers if the kernel never delivers.
//!
//! # Events
//! As the seam's contract says, with these precisions: a connection closed locally before it
//! was established reports `ConnectFailed` (`ConnectionAborted`), not `Closed`; shutdown
//! delivers nothing once it has begun, so connections it closes report no `Closed`.
//!
//! Not done here: registered files and buffers, provided-buffer rings and multishot receive,
//! zero-copy send, SQPOLL, flushing queued bytes before a local close.

mod conn;
mod driver;
mod gate;
mod ops;
mod sys;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

pub use self::conn::RECV_BUFFER_BYTES;
use self::gate::SendGate;
use super::{socket, ConnId, NetHandler, Transport, TransportOptions};

/// Name of the ring thread.
const THREAD_NAME: &str = "logship-uring";

/// A request for the ring thread.
enum Command {
    /// Accept on an already listening socket.
    Listen {
        socket: TcpListener,
        addr: SocketAddr,
    },
    /// Connect `conn` to `addr` within `timeout`.
    Connect {
        conn: ConnId,
        addr: SocketAddr,
        timeout: Duration,
        gate: Arc<SendGate>,
    },
    /// Queue `data` on `conn`.
    Send { conn: ConnId, data: Bytes },
    /// Close `conn`.
    Close { conn: ConnId },
    /// Close `conn` with `error`, which a direct write from another thread met.
    Fail { conn: ConnId, error: io::Error },
    /// Close everything and end the thread.
    Shutdown,
}

/// What the ring thread and the callers share.
struct Shared {
    /// Commands for the ring thread, in call order. Unbounded on purpose: `send` never blocks,
    /// and callers hold back by `queued_bytes`.
    commands: Mutex<Vec<Command>>,
    /// The eventfd that wakes the ring thread.
    waker: File,
    /// True while the ring thread is (about to be) asleep in the kernel and needs the eventfd.
    parked: AtomicBool,
    /// Set when shutdown begins: no more events, no more commands.
    stopping: AtomicBool,
    /// Times the ring thread went to sleep with nothing to deliver ([`Transport::idle_waits`]).
    idle_waits: AtomicU64,
    ring_thread: OnceLock<ThreadId>,
    next_conn: AtomicU64,
    /// Send gates of the live connections, for `send` and `queued_bytes`.
    gates: RwLock<HashMap<ConnId, Arc<SendGate>>>,
    /// What the transport was started with; the ring thread reads it for every connect.
    options: TransportOptions,
}

impl Shared {
    fn new(waker: File, options: TransportOptions) -> Shared {
        Shared {
            commands: Mutex::new(Vec::new()),
            waker,
            parked: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            idle_waits: AtomicU64::new(0),
            ring_thread: OnceLock::new(),
            next_conn: AtomicU64::new(1),
            gates: RwLock::new(HashMap::new()),
            options,
        }
    }

    /// Queues `command` and wakes the ring thread if it sleeps.
    ///
    /// The ring thread sets `parked` and then checks the queue under its lock; a caller pushes
    /// under that lock and then clears `parked`. Whichever takes the lock second sees the
    /// other's write, so a command is never left behind a sleeping thread.
    fn push(&self, command: Command) {
        self.commands.lock().push(command);
        if self.parked.swap(false, Ordering::SeqCst) {
            self.wake();
        }
    }

    fn wake(&self) {
        if let Err(error) = (&self.waker).write_all(&1u64.to_ne_bytes()) {
            tracing::warn!(%error, "waking the io_uring thread failed");
        }
    }

    /// Ring thread: announces it is going to sleep. False (and not parked) if commands wait.
    fn park(&self) -> bool {
        self.parked.store(true, Ordering::SeqCst);
        if self.commands.lock().is_empty() {
            return true;
        }
        self.parked.store(false, Ordering::SeqCst);
        false
    }

    /// Ring thread: about to sleep with no completion waiting to be delivered.
    fn note_idle(&self) {
        self.idle_waits.fetch_add(1, Ordering::Release);
    }

    /// Ring thread: awake again.
    fn unpark(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }

    /// Ring thread: moves every queued command to `out`.
    fn take_commands(&self, out: &mut Vec<Command>) {
        std::mem::swap(&mut *self.commands.lock(), out);
    }

    fn waker_fd(&self) -> RawFd {
        self.waker.as_raw_fd()
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn on_ring_thread(&self) -> bool {
        self.ring_thread.get() == Some(&std::thread::current().id())
    }

    fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Makes the send gate of `conn`, a new connection.
    fn register(&self, conn: ConnId) -> Arc<SendGate> {
        let gate = Arc::new(SendGate::new());
        self.gates.write().insert(conn, Arc::clone(&gate));
        gate
    }

    /// The send gate of `conn`, if it is live.
    fn gate(&self, conn: ConnId) -> Option<Arc<SendGate>> {
        self.gates.read().get(&conn).cloned()
    }

    /// `conn` is gone: `send` drops its bytes from now on.
    fn forget(&self, conn: ConnId) {
        self.gates.write().remove(&conn);
    }
}

/// TCP on one io_uring ring and one thread. See the module docs.
pub struct UringTransport {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for UringTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringTransport")
            .field("stopping", &self.shared.is_stopping())
            .field("connections", &self.shared.gates.read().len())
            .finish()
    }
}

impl UringTransport {
    /// Creates the ring (on its own thread, which then runs it) and delivers every event to
    /// `handler` from that thread. Default options.
    ///
    /// # Errors
    /// The ring's setup error (`PermissionDenied` when a seccomp profile or
    /// `kernel.io_uring_disabled` forbids io_uring), `Unsupported` naming an opcode this kernel
    /// lacks, and eventfd or thread creation failures.
    pub fn start(handler: Arc<dyn NetHandler>) -> io::Result<UringTransport> {
        UringTransport::start_with(handler, TransportOptions::default())
    }

    /// Like [`UringTransport::start`], applying `options` to every outgoing connection.
    ///
    /// # Errors
    /// As [`UringTransport::start`].
    pub fn start_with(
        handler: Arc<dyn NetHandler>,
        options: TransportOptions,
    ) -> io::Result<UringTransport> {
        let shared = Arc::new(Shared::new(sys::eventfd()?, options));
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let ring_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_string())
            .spawn(move || {
                let id = std::thread::current().id();
                ring_shared.ring_thread.get_or_init(|| id);
                driver::run(ring_shared, handler, ready_tx);
            })?;
        let ready = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("io_uring thread exited during setup")));
        if let Err(e) = ready {
            // The thread returns right after reporting the failure.
            let _ = thread.join();
            return Err(e);
        }
        tracing::info!("network transport: io_uring");
        Ok(UringTransport {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl Transport for UringTransport {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn idle_waits(&self) -> Option<u64> {
        Some(self.shared.idle_waits.load(Ordering::Acquire))
    }

    /// Hands the listening socket to the ring on the calling thread (`listen` binds it here
    /// first), so the address is known at once.
    fn listen_on(&self, socket: TcpListener) -> io::Result<SocketAddr> {
        if self.shared.is_stopping() {
            return Err(io::Error::other("io_uring transport is shut down"));
        }
        // Like every socket the ring uses (see `sys::tcp_socket`): the ring arms the poll.
        socket.set_nonblocking(false)?;
        let addr = socket.local_addr()?;
        self.shared.push(Command::Listen { socket, addr });
        Ok(addr)
    }

    fn connect(&self, addr: SocketAddr, timeout: Duration) -> ConnId {
        let conn = self.shared.next_conn_id();
        if self.shared.is_stopping() {
            return conn;
        }
        let gate = self.shared.register(conn);
        self.shared.push(Command::Connect {
            conn,
            addr,
            timeout,
            gate,
        });
        conn
    }

    /// Off the ring thread, writes at once when nothing of `conn` is queued; see `gate.rs`.
    fn send(&self, conn: ConnId, data: Bytes) {
        self.send_parts(conn, std::slice::from_ref(&data));
    }

    /// As `send`, with the parts of a group written by one `sendmsg`.
    fn send_parts(&self, conn: ConnId, parts: &[Bytes]) {
        if parts.iter().all(Bytes::is_empty) || self.shared.is_stopping() {
            return;
        }
        let Some(gate) = self.shared.gate(conn) else {
            return;
        };
        let direct = !self.shared.on_ring_thread();
        for group in parts.chunks(socket::SEND_PARTS_MAX) {
            let queue = |data| self.shared.push(Command::Send { conn, data });
            if let Err(error) = gate.send(group, direct, queue) {
                // Logged by the ring thread with the close it causes.
                self.shared.push(Command::Fail { conn, error });
                return;
            }
        }
    }

    /// Bytes given to the ring thread that no completed send has taken yet (queued or in
    /// flight); bytes a direct write handed the kernel at once never count.
    fn queued_bytes(&self, conn: ConnId) -> usize {
        let gates = self.shared.gates.read();
        gates.get(&conn).map_or(0, |g| g.queued_bytes())
    }

    /// Closes the send gate at once, so that a send after `close` is dropped even before the
    /// ring thread runs the close.
    fn close(&self, conn: ConnId) {
        if let Some(gate) = self.shared.gate(conn) {
            gate.close();
        }
        if !self.shared.is_stopping() {
            self.shared.push(Command::Close { conn });
        }
    }

    /// Called from inside the handler, it stops event delivery and returns at once; the ring
    /// thread finishes after the handler returns, and dropping the transport joins it.
    fn shutdown(&self) {
        self.shared.set_stopping();
        self.shared.push(Command::Shutdown);
        if self.shared.on_ring_thread() {
            return;
        }
        // Held while joining, so a concurrent second call also returns only after the thread.
        let mut thread = self.thread.lock();
        if let Some(handle) = thread.take() {
            if handle.join().is_err() {
                tracing::error!("the io_uring transport thread panicked");
            }
        }
    }
}

impl Drop for UringTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}
