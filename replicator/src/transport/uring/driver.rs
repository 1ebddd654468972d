//! The ring thread: owns the ring, every socket and every in-flight buffer, runs the commands
//! other threads queue, reaps completions and calls the handler.
//!
//! One turn of the loop: run queued commands (they queue SQEs), move the SQE backlog into the
//! ring, enter the kernel (submitting, and waiting for one completion only when there is nothing
//! else to do), reap every completion (the handler runs here, and what it asks for is queued as
//! commands that the next turn submits without sleeping in between).
//!
//! Shutdown and thread exit (also by a panicking handler) go through [`Driver::wind_down`]:
//! everything in flight is cancelled and its completion awaited before any buffer is freed; if
//! the kernel does not deliver them within [`WIND_DOWN_LIMIT`], the buffers are leaked instead.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::{cqueue, opcode, types, IoUring};

use super::conn::{errno, Conn};
use super::gate::SendGate;
use super::ops::{parse_token, token, Op, SqeQueue};
use super::{sys, Command, Shared};
use crate::transport::{ConnId, NetEvent, NetHandler};

/// How long a listener waits before accepting again after an error such as `EMFILE`, which
/// would otherwise fail at once, forever, while the connection waits in the backlog.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// How long shutdown waits for cancelled operations to complete before leaking their buffers.
const WIND_DOWN_LIMIT: Duration = Duration::from_secs(5);

/// A listening socket and its accept.
struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
    accept_armed: bool,
    backoff_armed: bool,
    /// The timespec of the accept backoff; boxed so it stays put while the kernel reads it.
    backoff: Box<types::Timespec>,
    /// True once a multishot accept on it has succeeded: a later `EINVAL` is a real error.
    accepted_once: bool,
}

/// Everything the ring thread owns. See the module docs.
pub(super) struct Driver {
    // Declared first so it is dropped first, after `Drop` has waited for every completion.
    ring: IoUring,
    sqes: SqeQueue,
    shared: Arc<Shared>,
    handler: Arc<dyn NetHandler>,
    conns: HashMap<ConnId, Conn>,
    /// Indexed by listener id; listeners live until shutdown.
    listeners: Vec<Listener>,
    /// Where the wake-up read puts the eventfd counter; boxed so it stays put.
    wake_buf: Box<[u8; 8]>,
    wake_armed: bool,
    /// False once the kernel rejected a multishot accept (before 5.19): single-shot from then.
    multishot_accept: bool,
    /// Commands taken from the shared queue; reused.
    commands: Vec<Command>,
    /// Completions taken from the ring: `(user_data, result, flags)`; reused.
    cqes: Vec<(u64, i32, u32)>,
    /// A shutdown command arrived or the ring failed.
    stop: bool,
    wound_down: bool,
}

/// The body of the ring thread: sets up the ring, reports the outcome through `ready`, then runs
/// until shutdown.
pub(super) fn run(
    shared: Arc<Shared>,
    handler: Arc<dyn NetHandler>,
    ready: crossbeam_channel::Sender<io::Result<()>>,
) {
    let ring = match sys::setup_ring() {
        Ok(ring) => ring,
        Err(e) => {
            // The receiver waits in `start`; if it is gone there is nobody left to tell.
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut driver = Driver::new(ring, shared, handler);
    driver.arm_wake();
    if ready.send(Ok(())).is_err() {
        return;
    }
    drop(ready);
    driver.run();
}

impl Driver {
    fn new(ring: IoUring, shared: Arc<Shared>, handler: Arc<dyn NetHandler>) -> Driver {
        Driver {
            ring,
            sqes: SqeQueue::default(),
            shared,
            handler,
            conns: HashMap::new(),
            listeners: Vec::new(),
            wake_buf: Box::new([0; 8]),
            wake_armed: false,
            multishot_accept: true,
            commands: Vec::new(),
            cqes: Vec::new(),
            stop: false,
            wound_down: false,
        }
    }

    fn run(&mut self) {
        while !self.stop {
            if let Err(e) = self.turn() {
                self.fail(&e);
            }
        }
        self.wind_down();
    }

    /// One turn of the loop; see the module docs.
    fn turn(&mut self) -> io::Result<()> {
        self.run_commands();
        if self.stop {
            return Ok(());
        }
        self.flush()?;
        let wait = !self.sqes.has_backlog() && self.shared.park();
        if wait && self.ring.completion().is_empty() {
            self.shared.note_idle();
        }
        let entered = self.enter(usize::from(wait));
        self.shared.unpark();
        entered?;
        self.reap();
        Ok(())
    }

    /// Calls the handler, unless shutdown has begun.
    fn emit(&self, event: NetEvent) {
        if !self.shared.is_stopping() {
            self.handler.on_event(event);
        }
    }

    /// Submits queued SQEs and waits for `want` completions. Interruptions and transient
    /// refusals (`EINTR`; `EBUSY`/`EAGAIN` while completions must be reaped first) return `Ok`.
    fn enter(&mut self, want: usize) -> io::Result<()> {
        match self.ring.submit_and_wait(want) {
            Ok(_) => Ok(()),
            Err(e) if is_transient_enter_error(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves the SQE backlog into the ring, submitting whenever the submission queue fills.
    fn flush(&mut self) -> io::Result<()> {
        loop {
            self.sqes.move_into(&mut self.ring.submission());
            if !self.sqes.has_backlog() {
                return Ok(());
            }
            match self.ring.submit() {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if is_transient_enter_error(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs every command queued so far.
    fn run_commands(&mut self) {
        let mut commands = std::mem::take(&mut self.commands);
        self.shared.take_commands(&mut commands);
        for command in commands.drain(..) {
            match command {
                Command::Listen { socket, addr } => self.listen(socket, addr),
                Command::Connect {
                    conn,
                    addr,
                    timeout,
                    gate,
                } => self.connect(conn, addr, timeout, gate),
                Command::Send { conn, data } => self.send(conn, data),
                Command::Close { conn } => self.close(conn, None),
                Command::Fail { conn, error } => self.close(conn, Some(error)),
                Command::Shutdown => self.stop = true,
            }
        }
        self.commands = commands;
    }

    fn listen(&mut self, socket: TcpListener, addr: SocketAddr) {
        let id = self.listeners.len();
        self.listeners.push(Listener {
            socket,
            addr,
            accept_armed: false,
            backoff_armed: false,
            backoff: Box::new(types::Timespec::from(ACCEPT_RETRY_DELAY)),
            accepted_once: false,
        });
        self.arm_accept(id);
    }

    fn connect(&mut self, id: ConnId, addr: SocketAddr, timeout: Duration, gate: Arc<SendGate>) {
        let source = self.shared.options.bind_addr_for(addr);
        match sys::tcp_socket(addr, source) {
            Ok(socket) => {
                let frames = self.handler.receives_frames();
                let mut conn = Conn::new(id, socket, addr, gate, frames).connecting(timeout);
                conn.arm_connect(&mut self.sqes);
                self.conns.insert(id, conn);
            }
            Err(error) => {
                self.shared.forget(id);
                self.emit(NetEvent::ConnectFailed { conn: id, error });
            }
        }
    }

    fn send(&mut self, id: ConnId, data: Bytes) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.queue_send(data, &mut self.sqes);
        }
    }

    /// Closes `id`; `error`, if any, is reported in its `Closed` (unless it was closing already).
    fn close(&mut self, id: ConnId, error: Option<io::Error>) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.begin_close(&mut self.sqes, error);
            self.finish_if_idle(id);
        }
    }

    /// Removes a closing connection whose operations have all completed, closes its socket and
    /// reports its last event.
    fn finish_if_idle(&mut self, id: ConnId) {
        let done = self
            .conns
            .get(&id)
            .is_some_and(|c| c.is_closing() && c.is_idle());
        if !done {
            return;
        }
        let conn = self.conns.remove(&id).expect("checked above");
        self.shared.forget(id);
        let event = conn.into_last_event();
        if let NetEvent::Closed { error: Some(e), .. } = &event {
            tracing::info!(conn = id.0, error = %e, "connection closed by an error");
        }
        self.emit(event);
    }

    /// Submits the wake-up read of the eventfd.
    #[allow(unsafe_code)]
    fn arm_wake(&mut self) {
        let fd = types::Fd(self.shared.waker_fd());
        let entry = opcode::Read::new(fd, self.wake_buf.as_mut_ptr(), 8)
            .build()
            .user_data(token(0, Op::Wake));
        // SAFETY: the buffer is the boxed `wake_buf`, freed only after `wind_down` has reaped
        // every completion (or leaked); the eventfd belongs to `shared`, which this driver keeps
        // alive.
        unsafe { self.sqes.push(entry) };
        self.wake_armed = true;
    }

    /// Submits the accept of listener `id`: multishot when the kernel takes it.
    #[allow(unsafe_code)]
    fn arm_accept(&mut self, id: usize) {
        let listener = &mut self.listeners[id];
        let fd = types::Fd(listener.socket.as_raw_fd());
        let entry = if self.multishot_accept {
            opcode::AcceptMulti::new(fd)
                .flags(libc::SOCK_CLOEXEC)
                .build()
        } else {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        };
        let entry = entry.user_data(token(id as u64, Op::Accept));
        // SAFETY: the accept names no buffer (peer addresses are read with getpeername), only
        // the listener's descriptor, which lives until `wind_down` has reaped every completion.
        unsafe { self.sqes.push(entry) };
        listener.accept_armed = true;
    }

    /// Waits [`ACCEPT_RETRY_DELAY`] before listener `id` accepts again.
    #[allow(unsafe_code)]
    fn arm_accept_backoff(&mut self, id: usize) {
        let listener = &mut self.listeners[id];
        let entry = opcode::Timeout::new(&*listener.backoff)
            .build()
            .user_data(token(id as u64, Op::AcceptBackoff));
        // SAFETY: the timespec is the listener's boxed `backoff`, which lives until `wind_down`
        // has reaped every completion.
        unsafe { self.sqes.push(entry) };
        listener.backoff_armed = true;
    }

    /// Drains the completion queue and handles each completion.
    fn reap(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(
            self.ring
                .completion()
                .map(|cqe: cqueue::Entry| (cqe.user_data(), cqe.result(), cqe.flags())),
        );
        for &(user_data, res, flags) in &cqes {
            self.on_cqe(user_data, res, flags);
        }
        cqes.clear();
        self.cqes = cqes;
    }

    fn on_cqe(&mut self, user_data: u64, res: i32, flags: u32) {
        let (id, op) = parse_token(user_data);
        if !cqueue::more(flags) {
            self.sqes.completed();
        }
        match op {
            Op::Wake => self.on_wake(res),
            Op::Accept => self.on_accept(listener_index(id), res, flags),
            Op::AcceptBackoff => self.on_accept_backoff(listener_index(id)),
            Op::CancelOther => {}
            Op::Connect | Op::ConnectTimeout | Op::Recv | Op::Send | Op::CancelConn => {
                self.on_conn_cqe(ConnId(id), op, res);
            }
        }
    }

    fn on_wake(&mut self, res: i32) {
        self.wake_armed = false;
        if res < 0 && res != -libc::ECANCELED && res != -libc::EINTR {
            tracing::warn!(error = %errno(res), "reading the io_uring wake-up eventfd failed");
        }
        if !self.stop {
            self.arm_wake();
        }
    }

    fn on_conn_cqe(&mut self, id: ConnId, op: Op, res: i32) {
        let conn = self.conns.get_mut(&id);
        let conn = conn.unwrap_or_else(|| panic!("{op:?} completion for unknown conn {id}"));
        conn.op_completed(op);
        let event = match op {
            Op::Connect => conn.on_connect(res, &mut self.sqes),
            Op::Recv => conn.on_recv(res, &mut self.sqes),
            Op::Send => {
                conn.on_send(res, &mut self.sqes);
                None
            }
            _ => None,
        };
        if let Some(event) = event {
            self.emit(event);
        }
        self.finish_if_idle(id);
    }

    fn on_accept(&mut self, id: usize, res: i32, flags: u32) {
        let listener = &mut self.listeners[id];
        if !cqueue::more(flags) {
            listener.accept_armed = false;
        }
        let mut backoff = false;
        if res >= 0 {
            listener.accepted_once = true;
            self.accepted(id, sys::adopt_accepted(res));
        } else if res == -libc::EINVAL && self.multishot_accept && !listener.accepted_once {
            tracing::debug!(
                "multishot accept unsupported (kernel < 5.19); accepting one at a time"
            );
            self.multishot_accept = false;
        } else if res != -libc::ECANCELED && res != -libc::ECONNABORTED && res != -libc::EINTR {
            let addr = listener.addr;
            tracing::warn!(%addr, error = %errno(res), "accept failed; retrying shortly");
            backoff = true;
        }
        let listener = &self.listeners[id];
        if self.stop || listener.accept_armed || listener.backoff_armed {
            return;
        }
        if backoff {
            self.arm_accept_backoff(id);
        } else {
            self.arm_accept(id);
        }
    }

    fn on_accept_backoff(&mut self, id: usize) {
        self.listeners[id].backoff_armed = false;
        if !self.stop && !self.listeners[id].accept_armed {
            self.arm_accept(id);
        }
    }

    /// Registers an accepted socket and reports it. A socket whose peer is already gone is
    /// closed without an event.
    fn accepted(&mut self, listener: usize, socket: std::net::TcpStream) {
        if self.stop {
            return;
        }
        let peer = match socket.set_nodelay(true).and_then(|()| socket.peer_addr()) {
            Ok(peer) => peer,
            Err(error) => {
                tracing::info!(%error, "accepted connection vanished before setup");
                return;
            }
        };
        let id = self.shared.next_conn_id();
        let gate = self.shared.register(id);
        let frames = self.handler.receives_frames();
        let mut conn = Conn::new(id, socket, peer, gate, frames).accepted();
        conn.arm_recv(&mut self.sqes);
        self.conns.insert(id, conn);
        self.emit(NetEvent::Accepted {
            listener: self.listeners[listener].addr,
            conn: id,
            peer,
        });
    }

    /// The ring itself failed: reports every connection closed with the error and stops.
    fn fail(&mut self, error: &io::Error) {
        tracing::error!(%error, "io_uring transport failed; closing every connection");
        let mut ids: Vec<(ConnId, bool)> = self
            .conns
            .iter()
            .map(|(&id, c)| (id, c.is_opened()))
            .collect();
        ids.sort_unstable();
        for (conn, opened) in ids {
            let error = io::Error::new(error.kind(), format!("io_uring transport failed: {error}"));
            self.emit(if opened {
                NetEvent::Closed {
                    conn,
                    error: Some(error),
                }
            } else {
                NetEvent::ConnectFailed { conn, error }
            });
        }
        self.shared.set_stopping();
        self.stop = true;
    }

    /// Cancels everything in flight, waits for it to complete and frees it. No events.
    fn wind_down(&mut self) {
        if self.wound_down {
            return;
        }
        self.wound_down = true;
        self.stop = true;
        self.shared.set_stopping();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id, None);
        }
        for (id, listener) in self.listeners.iter().enumerate() {
            let other = token(id as u64, Op::CancelOther);
            if listener.accept_armed {
                self.sqes.cancel(token(id as u64, Op::Accept), other);
            }
            if listener.backoff_armed {
                self.sqes.cancel(token(id as u64, Op::AcceptBackoff), other);
            }
        }
        if self.wake_armed {
            self.sqes
                .cancel(token(0, Op::Wake), token(0, Op::CancelOther));
        }
        if let Err(error) = self.await_all(Instant::now() + WIND_DOWN_LIMIT) {
            tracing::error!(%error, in_flight = self.sqes.in_flight(),
                "io_uring operations outlived shutdown; leaking their buffers");
            self.leak();
        }
    }

    /// Reaps until nothing is in flight, or fails at `deadline`.
    fn await_all(&mut self, deadline: Instant) -> io::Result<()> {
        let ext_arg = self.ring.params().is_feature_ext_arg();
        while self.sqes.in_flight() > 0 {
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "completions overdue",
                ));
            }
            self.flush()?;
            if ext_arg {
                let ts = types::Timespec::from(deadline - now);
                let args = types::SubmitArgs::new().timespec(&ts);
                match self.ring.submitter().submit_with_args(1, &args) {
                    Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                    Err(e) if !is_transient_enter_error(&e) => return Err(e),
                    _ => {}
                }
            } else {
                self.enter(1)?;
            }
            self.reap();
        }
        Ok(())
    }

    /// Gives up on memory the kernel may still use: forgets it instead of freeing it.
    fn leak(&mut self) {
        for (_, conn) in self.conns.drain() {
            // Its socket stays open, but no other thread writes to it any more.
            conn.gate().close();
            std::mem::forget(conn);
        }
        for listener in self.listeners.drain(..) {
            std::mem::forget(listener);
        }
        std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new([0; 8])));
    }
}

impl Drop for Driver {
    /// Also runs when the handler panics on this thread: in-flight buffers are never freed
    /// before their completion.
    fn drop(&mut self) {
        self.wind_down();
    }
}

/// `io_uring_enter` failures after which reaping and entering again is the remedy.
fn is_transient_enter_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
    )
}

fn listener_index(id: u64) -> usize {
    usize::try_from(id).expect("listener ids are vector indexes")
}
