//! The client port: append (with a durability level), append a batch, read from an LSN,
//! status, promote. Plain TCP, or TLS over it with a `[tls]` table that has `client_port` on.
//! Without `[clients]` in the config it is unauthenticated (or, with `client_auth =
//! "required"`, authenticated by client certificates only): bind it to loopback or a trusted
//! network (docs/operations.md). With `[clients]`, each connection first completes the client
//! handshake (`client_handshake`), and each request needs its grant: one not granted is
//! answered `not_permitted` and the connection goes on.
//!
//! Event-driven. The port is a [`NetHandler`] on a [`Transport`] of its own (its own listener
//! and sockets, apart from the replication transport), under [`TlsTransport`] when TLS is on.
//! No thread belongs to a connection:
//! - the transport's delivering thread decodes requests as they arrive and admits each append
//!   at once (the record goes to the log; its wait for the level is queued, not waited for);
//! - a connection keeps its admitted requests in request order ([`client_conn`]); the ready
//!   prefix is encoded and sent with one [`Transport::send`], so answers ready together leave
//!   together. An append's wait is polled with the connection's waker: the commit's
//!   completion (on the node's writer or notifier thread) only puts the connection on the
//!   port's ready list, and one port-wide answering thread sends its answers: one hand-off
//!   between the commit and the send. The first connection whose commit a follower's
//!   acknowledgement completes is answered by the thread that delivered the acknowledgement,
//!   without that hand-off, as soon as it has released the replica's lock ([`answering_here`];
//!   one per delivery, the rest to the answering thread);
//! - a lone client's append is written by its delivering thread when the log's writer idles
//!   ([`LoneAppends`]: the connection's own thread on the portable transport; on io_uring
//!   only an append that came while the ring was idle), which then sends the answer itself if
//!   the commit is complete: no hand-off to the writer thread and none back;
//! - read, status and promote requests may block (promote up to 30 s): when one becomes the
//!   oldest unanswered request of its connection (its turn: it sees the appends before it),
//!   it goes to one of [`CLIENT_WORKERS`] worker threads, which answers it and sends the
//!   connection's ready answers;
//! - one timer thread looks at every connection each [`TICK`] for its timeouts.
//!
//! So the port runs on [`CLIENT_WORKERS`] + 2 threads plus the transport's. The transport is
//! io_uring when the node's `transport` setting is `auto` or `io_uring` and the kernel gives
//! it, else the portable one (a reader thread per connection: correct, but the thread per
//! connection is back). Measured on a 2-vCPU machine shared with other work (`logship-bench
//! replicate --quick --topologies none,1sync`, `--transport auto` against `portable`, which
//! picks the port's transport too), the two commit about the same at 64 clients: topology
//! none, 100-byte records, one append in flight, 37,000-43,000 records/s with io_uring (5 runs)
//! and 39,000-52,000 with the portable one (2 runs), 0.20-0.31 of the in-process figure either
//! way; 16 in flight, 235,000-364,000 against 364,000-384,000. io_uring is chosen anyway
//! because it is the one whose threads stay bounded: with it, 200 connections add no thread
//! (`tests/client_port_threads.rs`), where the portable transport adds 200, so a flood of
//! connections cannot become a flood of threads. The answering thread's sends go straight to
//! the socket (the io_uring transport writes from the caller's thread while nothing of the
//! connection is queued, as the portable one does), so an answer no longer crosses to the ring
//! thread. Sending straight from the waker (on the log's writer thread) was tried, when sends
//! still crossed to the ring thread, and measured no better (the writer then encodes and sends
//! before its next batch); from the replication transport's delivering thread, for one
//! connection per delivery, it is a wake-up less on the lone client's remote-durable commit
//! (docs/benchmarks.md, "The ideal commit").
//!
//! Admission never waits for the replica on the delivering thread: an append a closed start
//! gate holds (a new primary that has not heard its quorum yet) stays queued on its
//! connection, woken through the connection's waker when the gate opens or the commit timeout
//! fails it, and every append behind it on that connection waits behind it, so the
//! connection's records keep their request order; other connections go on
//! (`an_append_held_by_the_start_gate_does_not_hold_other_connections`). What still waits on
//! the delivering thread is the log's own back-pressure: above `max_queue_bytes` queued and
//! unwritten, an append waits for the writer to make room, and with io_uring that holds every
//! connection of the port for as long (the disk's pace, which every client shares anyway).
//!
//! Bounds. At most [`MAX_CLIENT_CONNECTIONS`] connections; at most `per_address` from one
//! remote address (more are closed at accept, so one address cannot take the whole port). Per
//! connection at most [`MAX_IN_FLIGHT_PER_CONNECTION`] requests admitted and unanswered: the
//! transports cannot stop reading one connection, so a client that sends more is closed, with
//! the reason logged (the answers of the requests before are still sent). Request frames are
//! bounded by the port's request limit (`max_record_bytes` plus [`REQUEST_OVERHEAD_BYTES`] and
//! a batch's length prefixes), handshake frames by `HANDSHAKE_MAX_BODY_BYTES`. Each connection
//! holds at most one read answer ([`MAX_READ_BYTES`]) besides its queue, and while the
//! transport holds more than [`MAX_UNSENT_ANSWER_BYTES`] of its answers unsent, no more are
//! sent (a send may take it over by one answer, so the transport holds at most that bound plus
//! one read answer per connection); a client that leaves them unread for `idle` is closed (it
//! cannot hold memory or the port for longer). An admitted append's entry is a few dozen
//! bytes: its payload is in the log's queue from admission on, which the log bounds on its own
//! (`max_queue_bytes`, appends wait above it, and so does this port's delivering thread); an
//! append the start gate holds keeps its payload in its entry, within the connection's bound.
//!
//! Hostile or broken clients ([`ClientLimits`], from the config): a connection with no
//! request in flight and no bytes for `idle` is closed; a request whose first byte arrived
//! `request` ago and that is still incomplete closes its connection (a sender of one byte a
//! second cannot hold it), and so does a TLS handshake begun that long ago; the client
//! handshake must end within `request` of the accept. Refused connections are logged as one
//! summary line per remote address per [`SUMMARY_INTERVAL`](crate::log_summary::SUMMARY_INTERVAL), never one line each.
//!
//! A connection ends at the client's close, a transport error, a malformed frame or a frame
//! that is not a client request (the answers of the requests before it are still sent), a
//! timeout, or the node's shutdown, which stops the transport (closing every connection; the
//! records already admitted stay in the log) and joins the port's threads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Wake, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use super::client_answers::{
    admit, handle, max_request_bytes, not_permitted, LoneAppends, Pending,
};
pub use super::client_answers::{MAX_READ_BYTES, REQUEST_OVERHEAD_BYTES};
use super::client_conn::{Conn, ConnState, Deadlines, Ending};
use super::client_handshake::{Handshake, Step, HANDSHAKE_MAX_BODY_BYTES};
use super::Inner;
use crate::config::ClientLimits;
use crate::error::{Error, Result};
use crate::log_summary::PerAddress;
use crate::protocol::client_auth::Grants;
use crate::protocol::frame::FrameDecoder;
use crate::protocol::Msg;
use crate::slots::Slots;
use crate::tls::{ClientPortConfigs, TlsFailures, TlsPort, TlsState};
use crate::transport::tls::TlsTransport;
use crate::transport::{self, ConnId, NetBackend, NetEvent, NetHandler, Transport};

/// Client connections served at once; more are closed at accept.
pub const MAX_CLIENT_CONNECTIONS: usize = 512;
/// Requests of one connection admitted and not yet answered, at most; a client that sends
/// more is closed.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 1024;
/// Answer bytes of one connection the transport may hold unsent before the port holds its
/// further answers back (more than one read answer, so one read always goes out whole).
pub const MAX_UNSENT_ANSWER_BYTES: usize = MAX_READ_BYTES + (1 << 20);
/// Threads carrying out read, status and promote requests for the whole port.
pub const CLIENT_WORKERS: usize = 4;
/// Read, status and promote requests handed to the workers and not yet taken, at most: each
/// connection has at most one in the workers' hands, so this never fills.
const JOB_QUEUE_CAPACITY: usize = MAX_CLIENT_CONNECTIONS;
/// How often the timer looks at the connections' timeouts (and retries answers held back).
const TICK: Duration = Duration::from_millis(50);
/// Longest a closing connection waits for its last answers to leave the transport.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

thread_local! {
    /// Whether a connection's waker may still send its answers on this thread (see
    /// [`answering_here`]).
    static ANSWER_HERE: Cell<bool> = const { Cell::new(false) };
    /// The connection whose answers this thread sends once the replica's lock is released.
    static DEFERRED: RefCell<Option<(Weak<Port>, ConnId)>> = const { RefCell::new(None) };
}

/// Runs `f` letting the first connection whose commit it completes send its answers on this
/// thread instead of waking the answering thread: for the replication transport's delivery of
/// a follower's acknowledgement, whose step completes the commits it makes remote-durable. One
/// answer, so that a lone client's is not a wake-up away and an acknowledgement that completes
/// 64 clients' commits still leaves 63 to the answering thread. The waker runs under the
/// replica's lock, so it only names the connection; the answers leave when the node releases
/// the lock ([`answer_deferred`], called by the executor right after it), or when `f` returns.
pub(crate) fn answering_here<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ANSWER_HERE.set(false);
            answer_deferred();
        }
    }
    ANSWER_HERE.set(true);
    let _reset = Reset;
    f()
}

/// Takes this thread's one answer, if it still has it.
fn take_answer_here() -> bool {
    ANSWER_HERE.replace(false)
}

/// Sends the answers of the connection this thread's [`answering_here`] named, if any: on this
/// thread when [`Port::answer_here`] can, else by the answering thread. Call it with no lock
/// held: the replica's lock is released before (the answer's system call, and the client's
/// wake-up it causes, no longer hold up the next request's step).
pub(crate) fn answer_deferred() {
    let Some((port, conn)) = DEFERRED.take() else {
        return;
    };
    if let Some(port) = port.upgrade() {
        if !port.answer_here(conn) {
            port.ready.lock().push(conn);
            port.ready_cv.notify_one();
        }
    }
}

/// What the client port needs to serve TLS: the configurations and the failure log.
pub(crate) type PortTls = (Arc<TlsState>, Arc<TlsFailures>);

/// The running port.
pub(crate) struct ClientPort {
    addr: SocketAddr,
    port: Arc<Port>,
    threads: Vec<JoinHandle<()>>,
}

/// A read, status or promote request for the workers.
struct Job {
    conn: ConnId,
    msg: Msg,
}

/// The port's state, shared by its threads and the transport's.
struct Port {
    inner: Weak<Inner>,
    limits: ClientLimits,
    max_request: usize,
    transport: OnceLock<Arc<dyn Transport>>,
    /// The TLS layer, when on (the timer asks it about handshakes under way).
    tls: OnceLock<Arc<TlsTransport>>,
    conns: Mutex<HashMap<ConnId, Arc<Conn>>>,
    slots: Arc<Mutex<Slots>>,
    refusals: Mutex<PerAddress>,
    started: Instant,
    stop: AtomicBool,
    /// The caller-runs rule for lone appends, when the transport can tell what it needs.
    lone: OnceLock<LoneAppends>,
    /// Connections whose commits completed: the answering thread sends their answers.
    ready: Mutex<Vec<ConnId>>,
    ready_cv: Condvar,
    jobs: (Sender<Job>, Receiver<Job>),
}

/// One read's requests, to be admitted with the connection unlocked.
struct Decoded {
    requests: Vec<Msg>,
    /// A malformed frame came after them: the connection ends once they are answered.
    malformed: bool,
    grants: Grants,
    /// Requests the connection may still have unanswered
    /// ([`MAX_IN_FLIGHT_PER_CONNECTION`]; only the delivering thread adds to the queue).
    room: usize,
    /// An append of the connection waits for the replica's admission: the appends decoded
    /// now wait behind it (see [`admit`]).
    holding: bool,
}

/// Admits `decoded`'s requests in order, at most its room of them; returns them and why the
/// connection ends, if it does (requests past the room or a bad one are not admitted). With
/// `lone`, a request that came alone in its read may be written on this thread
/// ([`LoneAppends`]).
fn admit_all(
    node: &Inner,
    c: &Conn,
    decoded: Decoded,
    lone: Option<&LoneAppends>,
) -> (Vec<Pending>, Option<Ending>) {
    let mut ending = decoded.malformed.then_some(Ending::Malformed);
    let mut holding = decoded.holding;
    let mut cx = Context::from_waker(&c.waker);
    let lone = lone.filter(|_| decoded.requests.len() == 1);
    let mut admitted = Vec::with_capacity(decoded.requests.len().min(decoded.room));
    for msg in decoded.requests {
        if admitted.len() == decoded.room {
            ending = Some(Ending::TooManyInFlight);
            break;
        }
        match not_permitted(&msg, decoded.grants) {
            Some(answer) => admitted.push(Pending::Ready(answer)),
            None => match admit(node, msg, &mut holding, &mut cx, lone) {
                Ok(p) => admitted.push(p),
                Err(why) => {
                    tracing::debug!(why, "client port: not a client request");
                    ending = Some(Ending::Malformed);
                    break;
                }
            },
        }
    }
    (admitted, ending)
}

/// The handler the transport calls; weak, so the transport (which the port owns) does not
/// keep the port alive.
struct Events(Weak<Port>);

impl NetHandler for Events {
    fn on_event(&self, event: NetEvent) {
        if let Some(port) = self.0.upgrade() {
            port.on_event(event);
        }
    }

    fn receives_frames(&self) -> bool {
        true
    }
}

/// A connection's waker: puts it on the port's ready list (it runs on the thread that
/// completed the commit, the node's writer or notifier: it only takes a short lock).
struct ConnWake {
    conn: ConnId,
    port: Weak<Port>,
}

impl Wake for ConnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if take_answer_here() {
            DEFERRED.set(Some((self.port.clone(), self.conn)));
            return;
        }
        if let Some(port) = self.port.upgrade() {
            port.ready.lock().push(self.conn);
            port.ready_cv.notify_one();
        }
    }
}

impl ClientPort {
    pub(crate) fn start(
        addr: SocketAddr,
        limits: ClientLimits,
        inner: Weak<Inner>,
        tls: Option<PortTls>,
    ) -> Result<ClientPort> {
        let (backend, max_record) = inner.upgrade().map_or((NetBackend::Auto, 0), |i| {
            (
                i.config.node.transport,
                i.config.log_options().max_record_bytes,
            )
        });
        let port = Arc::new(Port {
            inner,
            limits,
            max_request: max_request_bytes(max_record),
            transport: OnceLock::new(),
            tls: OnceLock::new(),
            conns: Mutex::new(HashMap::new()),
            slots: Slots::new(MAX_CLIENT_CONNECTIONS, limits.per_address),
            refusals: Mutex::new(PerAddress::default()),
            started: Instant::now(),
            stop: AtomicBool::new(false),
            lone: OnceLock::new(),
            ready: Mutex::new(Vec::new()),
            ready_cv: Condvar::new(),
            jobs: crossbeam_channel::bounded(JOB_QUEUE_CAPACITY),
        });
        let started = port.start_transport(backend, tls);
        let addr = started
            .and_then(|t| t.listen(addr))
            .map_err(|e| Error::io(format!("client port {addr}"), e))?;
        let mut threads = Vec::new();
        let spawned = port.spawn_threads(&mut threads);
        let client_port = ClientPort {
            addr,
            port,
            threads,
        };
        // On a failed spawn the port stops what it started.
        spawned.map_err(|e| Error::io("spawning the client port's threads", e))?;
        tracing::debug!(%addr, transport = client_port.transport_name(), "client port started");
        Ok(client_port)
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name of the port's transport (`io_uring`, `portable`, with `+tls` under TLS).
    pub(crate) fn transport_name(&self) -> &'static str {
        self.port.transport.get().map_or("none", |t| t.name())
    }

    pub(crate) fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.port.stop.store(true, Ordering::Release);
        if let Some(t) = self.port.transport.get() {
            t.shutdown();
        }
        self.port.ready_cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let conns: Vec<_> = self.port.conns.lock().drain().collect();
        if !conns.is_empty() {
            tracing::debug!(
                connections = conns.len(),
                "client port stopped: its connections are closed"
            );
        }
    }
}

impl Drop for ClientPort {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Port {
    /// Starts the port's transport (see the module docs for the choice), under TLS when on.
    fn start_transport(
        self: &Arc<Self>,
        backend: NetBackend,
        tls: Option<PortTls>,
    ) -> std::io::Result<Arc<dyn Transport>> {
        let handler: Arc<dyn NetHandler> = Arc::new(Events(Arc::downgrade(self)));
        let start_inner =
            move |h: Arc<dyn NetHandler>| transport::start_uring_first(backend, h, "client port");
        let t: Arc<dyn Transport> = match tls {
            None => start_inner(handler)?,
            Some((state, failures)) => {
                let layer = Arc::new(TlsTransport::start_for(
                    TlsPort::Client,
                    start_inner,
                    handler,
                    Arc::new(ClientPortConfigs(state)),
                    HashMap::new(),
                    failures,
                )?);
                let _ = self.tls.set(Arc::clone(&layer));
                layer
            }
        };
        if let Some(lone) = LoneAppends::on(&t) {
            let _ = self.lone.set(lone);
        }
        let _ = self.transport.set(Arc::clone(&t));
        Ok(t)
    }

    fn spawn_threads(self: &Arc<Self>, threads: &mut Vec<JoinHandle<()>>) -> std::io::Result<()> {
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f)
        };
        let p = Arc::clone(self);
        threads.push(spawn(
            "logship-client-answers",
            Box::new(move || p.answer_loop()),
        )?);
        let p = Arc::clone(self);
        threads.push(spawn(
            "logship-client-timer",
            Box::new(move || p.timer_loop()),
        )?);
        for _ in 0..CLIENT_WORKERS {
            let p = Arc::clone(self);
            threads.push(spawn(
                "logship-client-worker",
                Box::new(move || p.work_loop()),
            )?);
        }
        Ok(())
    }

    fn transport(&self) -> &Arc<dyn Transport> {
        self.transport
            .get()
            .expect("the transport is set before it can deliver an event")
    }

    fn conn(&self, id: ConnId) -> Option<Arc<Conn>> {
        self.conns.lock().get(&id).cloned()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn on_event(self: &Arc<Self>, event: NetEvent) {
        match event {
            NetEvent::Accepted { conn, peer, .. } => self.on_accepted(conn, peer),
            NetEvent::Data { conn, bytes } => self.on_data(conn, bytes),
            NetEvent::Closed { conn, error } => {
                if let Some(c) = self.conns.lock().remove(&conn) {
                    c.state.lock().release_seat();
                    if let Some(e) = error {
                        tracing::debug!(peer = %c.peer, error = %e, "client connection ended");
                    }
                }
            }
            // The port makes no connections.
            NetEvent::Connected { .. } | NetEvent::ConnectFailed { .. } => {}
        }
    }

    fn on_accepted(self: &Arc<Self>, id: ConnId, peer: SocketAddr) {
        if self.stopping() {
            return self.transport().close(id);
        }
        let seat = match Slots::take(&self.slots, peer.ip()) {
            Ok(seat) => seat,
            Err(why) => {
                self.note_refusal(peer.ip(), why.reason());
                return self.transport().close(id);
            }
        };
        let required = self
            .inner
            .upgrade()
            .is_some_and(|i| i.config.clients.is_some());
        let now = Instant::now();
        let (handshake, decoder) = match required {
            true => (
                Some(Handshake::new(peer.ip())),
                FrameDecoder::new(HANDSHAKE_MAX_BODY_BYTES),
            ),
            false => (None, FrameDecoder::new(self.max_request)),
        };
        let state = ConnState {
            seat: Some(seat),
            handshake,
            handshake_deadline: now + self.limits.request,
            grants: if required { Grants::NONE } else { Grants::ALL },
            decoder,
            pending: Default::default(),
            admitting: 0,
            deadlines: Deadlines::new(self.limits, now),
            ending: None,
            backlog_since: None,
            tls_handshake_since: None,
        };
        let waker = Waker::from(Arc::new(ConnWake {
            conn: id,
            port: Arc::downgrade(self),
        }));
        let conn = Conn {
            id,
            peer,
            waker,
            state: Mutex::new(state),
        };
        self.conns.lock().insert(id, Arc::new(conn));
    }

    /// Notes a refused connection: one summary line per remote address per
    /// [`SUMMARY_INTERVAL`](crate::log_summary::SUMMARY_INTERVAL) at most, with the count since the last and the last reason (a
    /// flood of connections must not become a flood of log lines).
    fn note_refusal(&self, ip: IpAddr, why: &'static str) {
        let line = self.refusals.lock().note(self.started.elapsed(), ip, why);
        if let Some(line) = line {
            line.warn_refused("client port");
        }
    }

    /// Bytes arrived: the handshake's frames are answered, requests admitted in order (with
    /// the connection unlocked: an append may wait for the log's room), then the ready
    /// answers sent.
    fn on_data(self: &Arc<Self>, id: ConnId, bytes: BytesMut) {
        let Some(c) = self.conn(id) else { return };
        let Some(node) = self.inner.upgrade() else {
            return self.transport().close(id);
        };
        let Some(decoded) = self.decode(&node, &c, bytes) else {
            return self.settle(&c);
        };
        let (admitted, ending) = admit_all(&node, &c, decoded, self.lone.get());
        drop(node);
        {
            let mut st = c.state.lock();
            st.admitting += admitted
                .iter()
                .filter(|p| matches!(p, Pending::Admitting(_)))
                .count();
            st.pending.extend(admitted);
            match ending {
                Some(Ending::TooManyInFlight) => tracing::info!(
                    peer = %c.peer,
                    "client connection closed: more than {MAX_IN_FLIGHT_PER_CONNECTION} requests unanswered (MAX_IN_FLIGHT_PER_CONNECTION)"
                ),
                Some(_) => {
                    tracing::debug!(peer = %c.peer, "client connection closes: malformed request")
                }
                None => {}
            }
            if let Some(why) = ending {
                st.end(why, Instant::now());
            }
        }
        self.settle(&c);
    }

    /// Takes the frames out of `bytes`: the handshake's are answered here; the requests are
    /// returned to be admitted. `None`: nothing to admit (the connection is ending or still in
    /// its handshake).
    fn decode(&self, node: &Inner, c: &Conn, bytes: BytesMut) -> Option<Decoded> {
        let mut st = c.state.lock();
        if st.ending.is_some() {
            return None;
        }
        st.decoder.push_owned(bytes);
        let (mut requests, mut replies, mut malformed) = (Vec::new(), Vec::new(), None);
        let mut completed = false;
        while st.ending.is_none() {
            let frame = match st.decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(f)) => Msg::decode(&f).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            completed = true;
            if st.handshake.is_some() {
                self.handshake_step(node, &mut st, frame.ok(), &mut replies);
                continue;
            }
            match frame {
                Ok(m) => requests.push(m),
                Err(e) => {
                    malformed = Some(e);
                    break;
                }
            }
        }
        let buffered = st.decoder.buffered();
        st.deadlines.on_read(Instant::now(), completed, buffered);
        if !replies.is_empty() {
            // Under the connection's lock: the handshake's frames leave before any answer.
            self.transport().send(c.id, Bytes::from(replies));
        }
        let decoded = Decoded {
            requests,
            malformed: malformed.is_some(),
            grants: st.grants,
            room: MAX_IN_FLIGHT_PER_CONNECTION.saturating_sub(st.pending.len()),
            holding: st.admitting > 0,
        };
        if let Some(e) = malformed {
            tracing::debug!(peer = %c.peer, error = %e, "client port: malformed frame");
        }
        (st.handshake.is_none() && (!decoded.requests.is_empty() || decoded.malformed))
            .then_some(decoded)
    }

    /// Feeds one handshake frame (`None`: malformed), queueing its reply in `replies`.
    fn handshake_step(
        &self,
        node: &Inner,
        st: &mut ConnState,
        frame: Option<Msg>,
        replies: &mut Vec<u8>,
    ) {
        let Some(hs) = st.handshake.as_mut() else {
            return;
        };
        let step = hs.on_frame(node, frame);
        self.apply_step(st, step, replies);
    }

    fn apply_step(&self, st: &mut ConnState, step: Step, replies: &mut Vec<u8>) {
        let now = Instant::now();
        match step {
            Step::Reply(m) => replies.extend_from_slice(&m.encode()),
            Step::Admitted(grants, m) => {
                replies.extend_from_slice(&m.encode());
                st.grants = grants;
                st.handshake = None;
                st.decoder.set_max_body_bytes(self.max_request);
                st.deadlines = Deadlines::new(self.limits, now);
            }
            Step::Refused(m) => {
                replies.extend_from_slice(&m.encode());
                st.end(Ending::Refused, now);
            }
            Step::Close => st.end(Ending::Refused, now),
        }
    }

    /// Sends `c`'s ready answers, hands its next read, status or promote request to the
    /// workers when its turn came, and closes it when it is ending and all is out.
    fn settle(&self, c: &Conn) {
        let mut st = c.state.lock();
        if st.admitting > 0 {
            if let Some(node) = self.inner.upgrade() {
                c.append_admitted(&node, &mut st);
            }
        }
        self.send_ready(c, &mut st);
    }

    /// Settles connection `id` on this thread (the replication transport's, which delivered
    /// the acknowledgement that completed its commit; [`answer_deferred`]), when that waits for
    /// nothing: only without TLS (whose layer locks a session around its deliveries), only while
    /// the answering thread has nothing waiting (it would send this connection's answers as
    /// soon), and only with the connections' table and the connection's state free at once
    /// (`try_lock`: the port's threads hold them while they admit) and no append of it half
    /// admitted; returns whether it did, else the answering thread is woken as before.
    fn answer_here(&self, id: ConnId) -> bool {
        if self.tls.get().is_some() || !self.ready.lock().is_empty() {
            return false;
        }
        let Some(conns) = self.conns.try_lock() else {
            return false;
        };
        let Some(c) = conns.get(&id).cloned() else {
            // Gone: nothing to answer.
            return true;
        };
        drop(conns);
        let Some(mut st) = c.state.try_lock() else {
            return false;
        };
        if st.admitting > 0 {
            return false;
        }
        self.send_ready(&c, &mut st);
        if let Some(node) = self.inner.upgrade() {
            node.counters
                .client_answers_on_ack
                .fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// The part of [`Port::settle`] after admission: answers out, a job handed on, a close.
    fn send_ready(&self, c: &Conn, st: &mut ConnState) {
        let t = self.transport();
        let unsent = t.queued_bytes(c.id);
        if unsent <= MAX_UNSENT_ANSWER_BYTES {
            let taken = c.take_answers(st, MAX_UNSENT_ANSWER_BYTES - unsent + 1);
            if let Some(bytes) = taken.bytes {
                t.send(c.id, bytes);
            }
            if let Some(msg) = taken.job {
                if self.jobs.0.try_send(Job { conn: c.id, msg }).is_err() {
                    // Cannot happen (one job per connection at most); the connection cannot
                    // be answered in order any more.
                    st.end(Ending::Malformed, Instant::now());
                    st.pending.clear();
                    st.admitting = 0;
                }
            }
        }
        self.close_if_done(c, st, Instant::now());
    }

    /// Closes an ending connection once its answers are out (or it waited [`CLOSE_LINGER`]
    /// for the transport to send them), its seat given back first.
    fn close_if_done(&self, c: &Conn, st: &mut ConnState, now: Instant) {
        let Some((_, since)) = st.ending else {
            return;
        };
        if st.seat.is_none() {
            // Closed already; its `Closed` is on its way.
            return;
        }
        let unsent = self.transport().queued_bytes(c.id);
        let answered = st.pending.is_empty();
        if answered && (unsent == 0 || now.duration_since(since) >= CLOSE_LINGER) {
            st.release_seat();
            self.transport().close(c.id);
        }
    }

    /// The answering thread: sends the answers of connections whose commits completed.
    fn answer_loop(&self) {
        let mut woken = Vec::new();
        loop {
            {
                let mut ready = self.ready.lock();
                while ready.is_empty() && !self.stopping() {
                    self.ready_cv.wait_for(&mut ready, TICK);
                }
                std::mem::swap(&mut *ready, &mut woken);
            }
            if self.stopping() {
                return;
            }
            woken.sort_unstable();
            woken.dedup();
            for id in woken.drain(..) {
                if let Some(c) = self.conn(id) {
                    self.settle(&c);
                }
            }
        }
    }

    /// A worker: carries out read, status and promote requests, then sends the connection's
    /// ready answers itself.
    fn work_loop(&self) {
        while !self.stopping() {
            let Ok(job) = self.jobs.1.recv_timeout(TICK) else {
                continue;
            };
            let Some(node) = self.inner.upgrade() else {
                continue;
            };
            let answer = handle(&node, job.msg);
            drop(node);
            let Some(c) = self.conn(job.conn) else {
                continue;
            };
            {
                let mut st = c.state.lock();
                if let Some(front @ Pending::Running) = st.pending.front_mut() {
                    *front = Pending::Ready(answer);
                }
            }
            self.settle(&c);
        }
    }

    /// The timer: every [`TICK`], each connection's timeouts, answers held back, and closes
    /// due.
    fn timer_loop(&self) {
        while !self.stopping() {
            std::thread::sleep(TICK);
            let conns: Vec<Arc<Conn>> = self.conns.lock().values().cloned().collect();
            let Some(node) = self.inner.upgrade() else {
                continue;
            };
            for c in conns {
                if self.stopping() {
                    return;
                }
                self.check(&node, &c, Instant::now());
            }
        }
    }

    /// One connection's look by the timer.
    fn check(&self, node: &Inner, c: &Conn, now: Instant) {
        let mut st = c.state.lock();
        if st.ending.is_none() {
            if let Some(why) = self.timed_out(node, c, &mut st, now) {
                tracing::debug!(peer = %c.peer, why, "client connection timed out");
            }
        }
        if st.seat.is_some() && self.unread_too_long(c, &mut st, now) {
            tracing::info!(
                peer = %c.peer,
                "client connection closed: it left more than {MAX_UNSENT_ANSWER_BYTES} bytes of answers unread for timeouts.client_idle_ms"
            );
            st.release_seat();
            return self.transport().close(c.id);
        }
        // Answers held back, a turn that came, or a close due; an idle connection has none.
        let due = st.ending.is_some() || !st.pending.is_empty();
        drop(st);
        if due {
            self.settle(c);
        }
    }

    /// Ends `c` when a timeout ran out; returns which.
    fn timed_out(
        &self,
        node: &Inner,
        c: &Conn,
        st: &mut ConnState,
        now: Instant,
    ) -> Option<&'static str> {
        if st.handshake.is_some() {
            if now < st.handshake_deadline {
                return None;
            }
            let mut replies = Vec::new();
            let step = st.handshake.as_mut().map(|hs| hs.timed_out(node))?;
            self.apply_step(st, step, &mut replies);
            if !replies.is_empty() {
                self.transport().send(c.id, Bytes::from(replies));
            }
            return Some("the client handshake did not complete within client_request_ms");
        }
        let tls_pending = self
            .tls
            .get()
            .is_some_and(|t| t.handshake_begun_and_unfinished(c.id));
        st.tls_handshake_since = tls_pending.then(|| st.tls_handshake_since.unwrap_or(now));
        let why = match st.tls_handshake_since {
            Some(t) if now.duration_since(t) >= st.deadlines.request() => {
                Some("a TLS handshake did not complete within timeouts.client_request_ms")
            }
            _ => st.deadlines.check(
                now,
                st.decoder.buffered() + usize::from(tls_pending),
                st.pending.len(),
            ),
        };
        if why.is_some() {
            st.end(Ending::TimedOut, now);
        }
        why
    }

    /// Whether `c` has left more than [`MAX_UNSENT_ANSWER_BYTES`] of answers unread for the
    /// idle timeout.
    fn unread_too_long(&self, c: &Conn, st: &mut ConnState, now: Instant) -> bool {
        if self.transport().queued_bytes(c.id) <= MAX_UNSENT_ANSWER_BYTES {
            st.backlog_since = None;
            return false;
        }
        let since = *st.backlog_since.get_or_insert(now);
        now.duration_since(since) >= self.limits.idle
    }
}
