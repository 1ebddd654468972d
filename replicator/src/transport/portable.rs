//! The portable transport: blocking std sockets, one reader thread per connection, a writer
//! thread per connection only once its socket buffer fills.
//!
//! Owns every socket it creates and the threads that serve them:
//! - an accept thread per listener, which never calls the handler;
//! - a reader thread per connection, the only thread that delivers that connection's events
//!   (`Accepted` or `Connected`, every `Data`, then `Closed`). For an outgoing connection the
//!   same thread first waits for the connect, then delivers `Connected` or `ConnectFailed`.
//!   One delivering thread per connection is what makes the seam's ordering and "exactly one
//!   `Closed`, last" promises hold: every other thread that wants a connection gone (a local
//!   `close`, a failed write, `shutdown`) records why and shuts the socket down, which wakes
//!   the reader, and the reader reports it;
//! - a writer thread per connection, spawned the first time a `send` cannot hand all its bytes
//!   to the kernel at once; it drains the connection's queue with blocking writes.
//!
//! The send path adds no thread hop: while nothing is queued for a connection, `send` writes from
//! the caller's thread with `MSG_DONTWAIT`, and only what the kernel refuses is queued. Writes
//! happen under the connection's lock, so concurrent senders never interleave partial writes.
//!
//! Choices the seam leaves open, made here:
//! - `close` on a connection that is still connecting aborts the connect; the outcome is
//!   `ConnectFailed` with [`io::ErrorKind::ConnectionAborted`], not `Closed`.
//! - Bytes sent while a connection is still connecting are queued and go out once it is up.
//! - Once `shutdown` has begun no new event is delivered, so the connections it closes get no
//!   `Closed`; events already being delivered finish before `shutdown` returns, except on
//!   threads that are themselves inside `shutdown` (a handler that called it, even
//!   concurrently with another caller: waiting for each other would deadlock).
//! - If the OS refuses a thread for an outgoing connection, its `ConnectFailed` is delivered
//!   from the caller's thread before `connect` returns.
//! - A peer's half-close ends the connection like a full close (queued bytes are dropped).
//! - A source address from [`TransportOptions`] is bound on the connecting thread, right
//!   before the connect; a bind failure is that connection's `ConnectFailed`.
//!
//! It does not frame, retry or reconnect: bytes in, bytes out.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tracing::{debug, warn};

use self::conn::{Conn, Phase, SendOutcome};
use super::recv_buf::RecvBuffer;
use super::{ConnId, NetEvent, NetHandler, Transport, TransportOptions};

mod conn;
mod sys;

/// The most one receive of a reader thread takes in: one `Data` event carries at most this much,
/// and where the handler receives frames, at most this much again of a frame's first bytes held
/// back from the receive before (`recv_buf`).
pub const READ_BUFFER_BYTES: usize = super::recv_buf::RECV_BYTES;

/// Longest a connecting thread waits before it rechecks for a local `close` or `shutdown`.
/// On Linux shutting the socket down wakes it at once; this bounds the wait elsewhere.
const CONNECT_POLL_SLICE: Duration = Duration::from_millis(50);

/// Pause after an accept error such as `EMFILE`, so a persistent error does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// A transport on blocking std sockets and threads. See the module docs.
pub struct PortableTransport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PortableTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortableTransport")
            .field("connections", &self.shared.conns.lock().len())
            .field("stopping", &self.shared.is_stopping())
            .finish_non_exhaustive()
    }
}

impl PortableTransport {
    /// Starts a transport that delivers events to `handler`, with default options. Threads
    /// start only with listeners and connections.
    ///
    /// # Errors
    /// None today; the `Result` keeps the shape every transport's `start` has.
    pub fn start(handler: Arc<dyn NetHandler>) -> io::Result<PortableTransport> {
        PortableTransport::start_with(handler, TransportOptions::default())
    }

    /// Like [`PortableTransport::start`], applying `options` to every outgoing connection.
    ///
    /// # Errors
    /// None today; the `Result` keeps the shape every transport's `start` has.
    pub fn start_with(
        handler: Arc<dyn NetHandler>,
        options: TransportOptions,
    ) -> io::Result<PortableTransport> {
        Ok(PortableTransport {
            shared: Arc::new(Shared {
                handler,
                options,
                next_conn: AtomicU64::new(1),
                stopping: AtomicBool::new(false),
                conns: Mutex::new(HashMap::new()),
                listeners: Mutex::new(Vec::new()),
                threads: Mutex::new(Threads::default()),
                thread_exited: Condvar::new(),
            }),
        })
    }
}

impl Drop for PortableTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Transport for PortableTransport {
    fn name(&self) -> &'static str {
        "portable"
    }

    fn delivers_on_connection_threads(&self) -> bool {
        true
    }

    fn listen_on(&self, listener: TcpListener) -> io::Result<SocketAddr> {
        // The accept thread blocks in `accept`.
        listener.set_nonblocking(false)?;
        let listener = Arc::new(listener);
        let local = listener.local_addr()?;
        {
            let mut listeners = self.shared.listeners.lock();
            if self.shared.is_stopping() {
                return Err(stopped_error());
            }
            listeners.push(Arc::clone(&listener));
        }
        let shared = Arc::clone(&self.shared);
        let registered = Arc::clone(&listener);
        let accept = move || shared.accept_loop(&listener, local);
        if let Err(error) = self
            .shared
            .spawn(format!("ls-accept-{}", local.port()), accept)
        {
            self.shared
                .listeners
                .lock()
                .retain(|l| !Arc::ptr_eq(l, &registered));
            return Err(error);
        }
        debug!(%local, "listening");
        Ok(local)
    }

    fn connect(&self, addr: SocketAddr, timeout: Duration) -> ConnId {
        let id = self.shared.next_id();
        let conn = Arc::new(Conn::new(id, Phase::Connecting, None));
        if !self.shared.insert_conn(&conn) {
            return id;
        }
        let shared = Arc::clone(&self.shared);
        let run = move || shared.connect_and_read(&conn, addr, timeout);
        if let Err(error) = self.shared.spawn(format!("ls-conn-{id}"), run) {
            self.shared.remove_conn(id);
            if !self.shared.is_stopping() {
                // No thread to deliver it from: the outcome must still arrive, so it arrives
                // from the caller's thread before `connect` returns.
                warn!(conn = id.0, %error, "no thread for an outgoing connection");
                self.shared
                    .deliver(NetEvent::ConnectFailed { conn: id, error });
            }
        }
        id
    }

    fn send(&self, conn: ConnId, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let Some(conn) = self.shared.conn(conn) else {
            return;
        };
        if conn.send(data) == SendOutcome::StartWriter {
            self.shared.spawn_writer(&conn);
        }
    }

    fn send_parts(&self, conn: ConnId, parts: &[Bytes]) {
        let Some(conn) = self.shared.conn(conn) else {
            return;
        };
        for group in parts.chunks(super::socket::SEND_PARTS_MAX) {
            if conn.send_parts(group) == SendOutcome::StartWriter {
                self.shared.spawn_writer(&conn);
            }
        }
    }

    fn queued_bytes(&self, conn: ConnId) -> usize {
        self.shared.conn(conn).map_or(0, |c| c.queued_bytes())
    }

    fn close(&self, conn: ConnId) {
        if let Some(conn) = self.shared.conn(conn) {
            conn.close(None);
        }
    }

    fn shutdown(&self) {
        self.shared.shutdown();
    }
}

/// State shared by the transport handle and all its threads.
struct Shared {
    handler: Arc<dyn NetHandler>,
    options: TransportOptions,
    next_conn: AtomicU64,
    /// Set once, by `shutdown`, while holding `conns`. Insertions into `conns`, `listeners` and
    /// `threads` check it under their lock, so nothing registered after it goes unclosed or
    /// unwaited.
    stopping: AtomicBool,
    conns: Mutex<HashMap<ConnId, Arc<Conn>>>,
    listeners: Mutex<Vec<Arc<TcpListener>>>,
    threads: Mutex<Threads>,
    /// Signalled when a thread leaves `Threads::live` or enters `Threads::in_shutdown`.
    thread_exited: Condvar,
}

/// The transport's threads. `shutdown` waits on `live` rather than on joins alone: a thread
/// inside `shutdown` (called from a handler) cannot be joined by a concurrent `shutdown` without
/// the two waiting on each other.
#[derive(Default)]
struct Threads {
    /// Not yet joined; those that finished are pruned at each spawn.
    handles: Vec<JoinHandle<()>>,
    /// Threads that may still call the handler.
    live: HashSet<ThreadId>,
    /// Threads inside `shutdown` right now. Their current event is the one that called it;
    /// they deliver nothing after it, so no `shutdown` waits for them.
    in_shutdown: HashSet<ThreadId>,
}

/// Removes its thread from `Threads::live` when the thread's work ends, also by a panic in
/// the handler.
struct LiveGuard(Arc<Shared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.threads.lock().live.remove(&thread::current().id());
        self.0.thread_exited.notify_all();
    }
}

impl Shared {
    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn next_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Calls the handler unless `shutdown` has begun. Callers hold no lock.
    fn deliver(&self, event: NetEvent) {
        if !self.is_stopping() {
            self.handler.on_event(event);
        }
    }

    fn conn(&self, id: ConnId) -> Option<Arc<Conn>> {
        self.conns.lock().get(&id).cloned()
    }

    /// Adds `conn` to the table; false once `shutdown` has begun.
    fn insert_conn(&self, conn: &Arc<Conn>) -> bool {
        let mut conns = self.conns.lock();
        if self.is_stopping() {
            return false;
        }
        let previous = conns.insert(conn.id, Arc::clone(conn));
        assert!(previous.is_none(), "connection id reused: {}", conn.id);
        true
    }

    fn remove_conn(&self, id: ConnId) {
        self.conns.lock().remove(&id);
    }

    /// Spawns a registered thread, so `shutdown` waits for it and joins it.
    ///
    /// # Errors
    /// The OS refused a thread, or `shutdown` has begun.
    fn spawn(
        self: &Arc<Self>,
        name: String,
        run: impl FnOnce() + Send + 'static,
    ) -> io::Result<()> {
        let shared = Arc::clone(self);
        // The guard is made inside the thread: a closure the OS never ran must not touch
        // `live` (it is dropped under the `threads` lock).
        let body = move || {
            let _guard = LiveGuard(shared);
            run();
        };
        // Holding the lock across the spawn: the thread's guard cannot leave `live` before it
        // entered it.
        let mut threads = self.threads.lock();
        if self.is_stopping() {
            return Err(stopped_error());
        }
        threads.handles.retain(|t| !t.is_finished());
        let handle = thread::Builder::new().name(name).spawn(body)?;
        threads.live.insert(handle.thread().id());
        threads.handles.push(handle);
        Ok(())
    }

    fn spawn_writer(self: &Arc<Self>, conn: &Arc<Conn>) {
        let Some(stream) = conn.stream() else {
            // Closed in the meantime; there is nothing left to write.
            return;
        };
        let writer_conn = Arc::clone(conn);
        let run = move || writer_conn.write_loop(&stream);
        if let Err(error) = self.spawn(format!("ls-wr-{}", conn.id), run) {
            conn.close(Some(error));
        }
    }

    fn accept_loop(self: &Arc<Self>, listener: &TcpListener, local: SocketAddr) {
        let mut failing = false;
        loop {
            let accepted = listener.accept();
            if self.is_stopping() {
                return;
            }
            match accepted {
                Ok((stream, peer)) => {
                    failing = false;
                    self.adopt(stream, local, peer);
                }
                Err(error) if is_transient_accept_error(&error) => {}
                Err(error) => {
                    // Once per run of failures: EMFILE can last, and retries come every few ms.
                    if !std::mem::replace(&mut failing, true) {
                        warn!(%local, %error, "accept failing; retrying until it succeeds");
                    }
                    thread::sleep(ACCEPT_ERROR_BACKOFF);
                }
            }
        }
    }

    /// Registers an accepted socket and starts its reader, which delivers `Accepted` first.
    fn adopt(self: &Arc<Self>, stream: TcpStream, listener: SocketAddr, peer: SocketAddr) {
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "dropping accepted connection: TCP_NODELAY failed");
            return;
        }
        let id = self.next_id();
        let stream = Arc::new(stream);
        let conn = Arc::new(Conn::new(id, Phase::Open, Some(Arc::clone(&stream))));
        if !self.insert_conn(&conn) {
            return;
        }
        let shared = Arc::clone(self);
        let run = move || {
            shared.deliver(NetEvent::Accepted {
                listener,
                conn: id,
                peer,
            });
            shared.read_loop(&conn, &stream);
        };
        if let Err(error) = self.spawn(format!("ls-rd-{id}"), run) {
            self.remove_conn(id);
            if !self.is_stopping() {
                warn!(%peer, %error, "dropping accepted connection: no reader thread");
            }
        }
    }

    /// The life of an outgoing connection's thread: connect, then read until closed.
    fn connect_and_read(self: &Arc<Self>, conn: &Arc<Conn>, addr: SocketAddr, timeout: Duration) {
        match self.establish(conn, addr, timeout) {
            Ok((stream, outcome)) => {
                if outcome == SendOutcome::StartWriter {
                    self.spawn_writer(conn);
                }
                self.deliver(NetEvent::Connected {
                    conn: conn.id,
                    peer: addr,
                });
                self.read_loop(conn, &stream);
            }
            Err(error) => {
                conn.close(None);
                self.remove_conn(conn.id);
                self.deliver(NetEvent::ConnectFailed {
                    conn: conn.id,
                    error,
                });
            }
        }
    }

    /// Connects with a deadline, giving up early on a local `close` or `shutdown`.
    fn establish(
        &self,
        conn: &Conn,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<(Arc<TcpStream>, SendOutcome)> {
        let deadline = Instant::now().checked_add(timeout);
        let source = self.options.bind_addr_for(addr);
        let stream = Arc::new(sys::start_connect(addr, source)?);
        if !conn.attach_socket(&stream) {
            return Err(aborted_error());
        }
        loop {
            if conn.is_closed() || self.is_stopping() {
                return Err(aborted_error());
            }
            let wait = match deadline {
                None => CONNECT_POLL_SLICE,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(CONNECT_POLL_SLICE),
                    _ => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
                },
            };
            if sys::poll_writable(&stream, wait)? {
                break;
            }
        }
        let connected = match stream.take_error() {
            Ok(None) => stream.peer_addr().map(drop),
            Ok(Some(error)) | Err(error) => Err(error),
        };
        // A local close shuts the connecting socket down, which fails it with ECONNRESET:
        // that is the close, reported as aborted.
        if conn.is_closed() || self.is_stopping() {
            return Err(aborted_error());
        }
        connected?;
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        let outcome = conn.mark_open().ok_or_else(aborted_error)?;
        Ok((stream, outcome))
    }

    /// Delivers `Data` until the connection ends, then `Closed`, exactly once.
    fn read_loop(&self, conn: &Conn, stream: &TcpStream) {
        let mut buf = RecvBuffer::new(self.handler.receives_frames());
        let read_error = loop {
            match sys::recv_into(stream, buf.room()) {
                Ok(0) => break None,
                Ok(n) => {
                    // Bytes that arrive after a local close are not the handler's any more.
                    if conn.is_closed() || self.is_stopping() {
                        break None;
                    }
                    if let Some(bytes) = buf.received(n) {
                        self.deliver(NetEvent::Data {
                            conn: conn.id,
                            bytes,
                        });
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => break Some(error),
            }
        };
        let error = conn.finish(read_error);
        self.remove_conn(conn.id);
        debug!(conn = conn.id.0, error = ?error, "connection closed");
        self.deliver(NetEvent::Closed {
            conn: conn.id,
            error,
        });
    }

    fn shutdown(&self) {
        let conns: Vec<Arc<Conn>> = {
            let conns = self.conns.lock();
            self.stopping.store(true, Ordering::SeqCst);
            conns.values().cloned().collect()
        };
        let listeners = std::mem::take(&mut *self.listeners.lock());
        for listener in &listeners {
            wake_accept(listener);
        }
        for conn in &conns {
            conn.close(None);
        }
        self.join_threads();
        self.conns.lock().clear();
    }

    /// Waits until no thread can call the handler any more (apart from those inside
    /// `shutdown`, this one included when a handler called it), then joins the threads that
    /// finished.
    fn join_threads(&self) {
        let me = thread::current().id();
        let finished = {
            let mut threads = self.threads.lock();
            threads.in_shutdown.insert(me);
            self.thread_exited.notify_all();
            while threads
                .live
                .iter()
                .any(|t| !threads.in_shutdown.contains(t))
            {
                self.thread_exited.wait(&mut threads);
            }
            threads.in_shutdown.remove(&me);
            let (running, finished) = std::mem::take(&mut threads.handles)
                .into_iter()
                .partition(|h| threads.live.contains(&h.thread().id()));
            // Threads still inside a handler's `shutdown` are joined by a later `shutdown`
            // (such as the one in `Drop`), or never.
            threads.handles = running;
            finished
        };
        for thread in finished {
            let name = thread.thread().name().unwrap_or("?").to_owned();
            if thread.join().is_err() {
                warn!(thread = %name, "transport thread panicked (in the event handler?)");
            }
        }
    }
}

/// Unblocks the accept thread of `listener`: shutting a listening socket down makes a blocked
/// `accept` fail on Linux; where that is refused, a connection to it wakes it instead.
fn wake_accept(listener: &TcpListener) {
    if sys::shutdown_listener(listener).is_ok() {
        return;
    }
    if let Ok(mut addr) = listener.local_addr() {
        if addr.ip().is_unspecified() {
            let loopback = match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            };
            addr.set_ip(loopback);
        }
        // The accept thread sees `stopping` and drops this connection.
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    }
}

fn is_transient_accept_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

fn stopped_error() -> io::Error {
    io::Error::other("transport is shut down")
}

fn aborted_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed before the connection was established",
    )
}
