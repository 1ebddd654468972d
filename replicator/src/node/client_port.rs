//! The client port: append (with a durability level), append a batch, read from an LSN,
//! status, promote. Ordinary sockets, or TLS over them with a `[tls]` table (the byte stream
//! is [`super::client_wire`]'s). Without `[clients]` in the config it is unauthenticated (or,
//! with `client_auth = "required"`, authenticated by client certificates only): bind it to
//! loopback or a trusted network (docs/operations.md). With `[clients]`, each connection first
//! completes the client handshake (`client_handshake`), and each request needs its grant: one
//! not granted is answered `not_permitted` and the connection goes on.
//!
//! Each connection has two threads, so that a client may keep many requests in flight on it
//! (pipelining). The reader decodes requests as they arrive and admits each append at once:
//! the record goes to the log, and its wait for the durability level asked for is queued
//! without being waited for. Reads, status and promote requests are queued as they are, to be
//! carried out in their turn. The answerer takes the queue in request order: it waits for each
//! append's level (commits complete in LSN order, so waiting in order costs nothing), carries
//! out the other requests, and writes every answer in request order through a write buffer
//! that it flushes whenever it would otherwise wait, so answers that are ready together leave
//! in one write. A read that brings a lone request while nothing is waiting is answered by the
//! reader itself, without the hand-off: a client with one request in flight pays no thread
//! switch for the second thread (while it waits, requests that arrive stay in the socket).
//!
//! Bounds. At most [`MAX_CLIENT_CONNECTIONS`] connections; per connection at most
//! [`MAX_IN_FLIGHT_PER_CONNECTION`] requests queued between the two threads. When the queue is
//! full the reader stops reading, and TCP pushes back on the client. Each queued entry holds at
//! most one request (at most the port's request limit, `max_record_bytes` plus
//! [`REQUEST_OVERHEAD_BYTES`] and a batch's length prefixes), so the port holds at most
//! connections × in-flight × largest request, plus per connection one request being decoded, a
//! read buffer, one read answer ([`MAX_READ_BYTES`]) and the write buffer. In practice an
//! admitted append's entry is a few dozen bytes: its payload is in the log's queue from
//! admission on, which the log bounds on its own (`max_queue_bytes`, appenders wait above it).
//!
//! A connection ends, both threads with it, at the client's close, a read or write error, a
//! malformed frame or a frame that is not a client request (the answers of the requests before
//! it are still sent), or the node's shutdown; shutdown joins every connection's threads.
//!
//! Hostile or broken clients ([`ClientLimits`], from the config): at most `per_address`
//! connections from one remote address (more are closed at accept, so one address cannot take
//! the whole port); a connection with no request in flight and no bytes for `idle` is closed;
//! a request whose first byte arrived `request` ago and that is still incomplete closes its
//! connection (a sender of one byte a second cannot hold it). Refused connections are logged
//! as one summary line per remote address per [`SUMMARY_INTERVAL`], never one line each.

use std::io::{BufWriter, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TryRecvError};
use logship_engine::Lsn;
use parking_lot::Mutex;

use super::client_handshake::{handshake, Outcome};
use super::client_wire::{Link, Patient, PortTls, Wire};
use super::{Commit, Inner};
use crate::config::ClientLimits;
use crate::error::{Error, Result};
use crate::log_summary::{PerAddress, SUMMARY_INTERVAL};
use crate::protocol::client_auth::Grants;
use crate::protocol::frame::FrameDecoder;
use crate::protocol::msg::{BATCH_RECORD_PREFIX_BYTES, MAX_BATCH_RECORDS};
use crate::protocol::{ClientStatus, Msg};
use crate::slots::{Slot, Slots};

/// Client connections served at once; more are closed at accept.
pub const MAX_CLIENT_CONNECTIONS: usize = 512;
/// Largest read response.
pub const MAX_READ_BYTES: usize = 8 << 20;
/// Requests of one connection admitted and not yet answered, at most; the reader stops
/// reading while this many wait.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 1024;
/// Room in a request frame beyond the record itself (a batch also gets its length prefixes:
/// a batch's records together may be as large as one maximum record).
pub const REQUEST_OVERHEAD_BYTES: usize = 4096;
/// Bytes read from a connection at once.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// Bytes of answers gathered before a write (a flush comes sooner whenever the answerer would
/// wait).
const WRITE_BUFFER_BYTES: usize = 64 << 10;
/// How often idle connection threads look at the stop flag and their timeouts.
const POLL: Duration = Duration::from_millis(200);

/// The connection threads of the port.
type Connections = Arc<Mutex<Vec<JoinHandle<()>>>>;

pub(crate) struct ClientPort {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl ClientPort {
    pub(crate) fn start(
        addr: SocketAddr,
        limits: ClientLimits,
        inner: Weak<Inner>,
        tls: Option<PortTls>,
    ) -> Result<ClientPort> {
        let listener =
            TcpListener::bind(addr).map_err(|e| Error::io(format!("client port {addr}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("client port address", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (Arc::clone(&stop), Arc::clone(&conns));
        let accept = std::thread::Builder::new()
            .name("logship-clients".into())
            .spawn(move || accept_loop(&listener, &inner, (&s, &c), limits, tls.as_ref()))
            .map_err(|e| Error::io("spawning the client port", e))?;
        Ok(ClientPort {
            addr,
            stop,
            accept: Some(accept),
            conns,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        let threads: Vec<_> = self.conns.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    inner: &Weak<Inner>,
    (stop, conns): (&Arc<AtomicBool>, &Connections),
    limits: ClientLimits,
    tls: Option<&PortTls>,
) {
    let slots = Slots::new(MAX_CLIENT_CONNECTIONS, limits.per_address);
    let (mut refusals, started) = (PerAddress::default(), Instant::now());
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let seat = match Slots::take(&slots, peer.ip()) {
            Ok(seat) => seat,
            Err(why) => {
                note_refusal(&mut refusals, started, peer.ip(), why.reason());
                continue;
            }
        };
        let (inner, stop, tls) = (inner.clone(), Arc::clone(stop), tls.cloned());
        let accepted = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("logship-client".into())
            .spawn(move || {
                let max_record = inner
                    .upgrade()
                    .map_or(0, |i| i.config.log_options().max_record_bytes);
                let bounds = (max_request_bytes(max_record), limits);
                let deadline = accepted + limits.request;
                if let Err(e) = serve(
                    stream,
                    &inner,
                    &stop,
                    bounds,
                    (deadline, tls.as_ref(), seat),
                ) {
                    tracing::debug!(error = %e, "client connection ended");
                }
            });
        let mut c = conns.lock();
        c.retain(|t| !t.is_finished());
        if let Ok(t) = spawned {
            c.push(t);
        }
    }
}

/// Notes a refused connection: one summary line per remote address per [`SUMMARY_INTERVAL`]
/// at most, with the count since the last and the last reason (a flood of connections must not
/// become a flood of log lines).
fn note_refusal(refusals: &mut PerAddress, started: Instant, ip: IpAddr, why: &'static str) {
    if let Some(line) = refusals.note(started.elapsed(), ip, why) {
        tracing::warn!(
            refused = line.count,
            address = %line.address_text(),
            last_reason = %line.last_reason,
            "client port: connections refused (at most one such line per {} s per remote address)",
            SUMMARY_INTERVAL.as_secs()
        );
    }
}

/// The largest request frame the port reads: one maximum record, or a batch whose records
/// together are as large, with room for the rest of the request.
fn max_request_bytes(max_record_bytes: usize) -> usize {
    max_record_bytes + REQUEST_OVERHEAD_BYTES + MAX_BATCH_RECORDS * BATCH_RECORD_PREFIX_BYTES
}

/// The grants of a new connection and its request decoder: after the client handshake when
/// `[clients]` is configured (`None`: refused, or the client left), else everything.
fn admit_connection(
    link: &Link<'_, '_>,
    inner: &Weak<Inner>,
    stop: &AtomicBool,
    max_request: usize,
    handshake_deadline: Instant,
) -> std::io::Result<Option<(Grants, FrameDecoder)>> {
    let required = inner.upgrade().is_some_and(|i| i.config.clients.is_some());
    if !required {
        return Ok(Some((Grants::ALL, FrameDecoder::new(max_request))));
    }
    Ok(match handshake(link, inner, stop, handshake_deadline)? {
        Outcome::Admitted(grants, mut decoder) => {
            decoder.set_max_body_bytes(max_request);
            Some((grants, decoder))
        }
        Outcome::Closed => None,
    })
}

fn serve(
    stream: TcpStream,
    inner: &Weak<Inner>,
    stop: &AtomicBool,
    bounds: (usize, ClientLimits),
    (handshake_deadline, tls, seat): (Instant, Option<&PortTls>, Slot),
) -> std::io::Result<()> {
    let wire = Wire::new(tls, stream.peer_addr()?)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(POLL))?;
    let writer = stream.try_clone()?;
    let out = Answers {
        out: Mutex::new(BufWriter::with_capacity(
            WRITE_BUFFER_BYTES,
            Patient {
                stream: &writer,
                stop,
                wire: &wire,
            },
        )),
        queued: AtomicUsize::new(0),
        seat: Mutex::new(Some(seat)),
    };
    let link = Link {
        stream: &stream,
        wire: &wire,
        out: &out.out,
    };
    let admitted = admit_connection(&link, inner, stop, bounds.0, handshake_deadline);
    if !matches!(admitted, Ok(Some(_))) {
        // Refused, gone or failed: the socket closes when this returns.
        out.release_seat();
    }
    let Some(admitted) = admitted? else {
        return Ok(());
    };
    let (tx, rx) = crossbeam_channel::bounded(MAX_IN_FLIGHT_PER_CONNECTION);
    std::thread::scope(|s| {
        let answers = &out;
        let answerer = std::thread::Builder::new()
            .name("logship-client-answers".into())
            .spawn_scoped(s, move || answer_requests(&rx, answers, inner, stop))?;
        let read = read_requests(&link, inner, (stop, bounds), admitted, (&tx, &out));
        drop(tx);
        let answered = answerer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the answering thread panicked")));
        read.and(answered)
    })
}

/// Where a connection's answers go, in request order: the write buffer, and how many
/// requests wait in the queue or in the answerer's hands. With none waiting, the reader
/// answers a lone request itself (no hand-off to the answerer: a client with one request in
/// flight pays no thread switch for the port's two threads).
struct Answers<'a> {
    out: Mutex<BufWriter<Patient<'a>>>,
    queued: AtomicUsize,
    /// The connection's seat in the port's bounds, given back just before the socket is shut
    /// down: a client that sees its connection closed may connect again at once and find the
    /// seat free.
    seat: Mutex<Option<Slot>>,
}

impl Answers<'_> {
    /// Gives the connection's seat back (before the socket closes: see [`Answers::seat`]).
    fn release_seat(&self) {
        drop(self.seat.lock().take());
    }
}

/// A request between the reader and the answerer.
enum Pending {
    /// An admitted append: its wait for the level.
    Append { id: u64, commit: Commit },
    /// An admitted batch: its first LSN and the wait of its last record.
    Batch { id: u64, first: Lsn, commit: Commit },
    /// An answer known at admission (a refused append).
    Ready(Msg),
    /// A read, status or promote request, carried out in its turn.
    InTurn(Msg),
}

impl Pending {
    /// Whether its answer can be had without waiting for the log or the quorum.
    fn is_ready(&self) -> bool {
        match self {
            Pending::Append { commit, .. } | Pending::Batch { commit, .. } => commit.is_ready(),
            Pending::Ready(_) => true,
            Pending::InTurn(_) => false,
        }
    }
}

/// The reader: decodes requests, admits appends, queues everything in order. Returns at the
/// client's close or the port's stop, or with the error that ends the connection (a
/// timeout of [`Deadlines`] among them).
fn read_requests(
    link: &Link<'_, '_>,
    inner: &Weak<Inner>,
    (stop, (_, limits)): (&AtomicBool, (usize, ClientLimits)),
    (grants, mut decoder): (Grants, FrameDecoder),
    (queue, answers): (&Sender<Pending>, &Answers<'_>),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let mut requests = Vec::new();
    let mut deadlines = Deadlines::new(limits, Instant::now());
    // Bytes that came right behind the handshake's proof are decoded before the first read.
    let mut buffered = decoder.buffered() > 0;
    let mut open = true;
    loop {
        if !std::mem::take(&mut buffered) {
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            match link.read_into(&mut buf, &mut decoder) {
                Ok(more) => open = more,
                Err(e) if is_timeout(&e) || e.kind() == std::io::ErrorKind::Interrupted => {
                    let in_flight = answers.queued.load(Ordering::Acquire);
                    let buffered = decoder.buffered() + link.wire.pending();
                    deadlines.check(Instant::now(), buffered, in_flight)?;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let malformed = decode_frames(&mut decoder, &mut requests);
        let buffered = decoder.buffered() + link.wire.pending();
        deadlines.on_read(Instant::now(), !requests.is_empty(), buffered);
        let Some(inner) = inner.upgrade() else {
            return Ok(());
        };
        take_requests(&inner, grants, &mut requests, (queue, answers), stop)?;
        if !open {
            return Ok(());
        }
        if let Some(e) = malformed {
            return Err(e);
        }
        deadlines.check(Instant::now(), decoder.buffered() + link.wire.pending(), 1)?;
    }
}

/// Takes every whole frame off `decoder` into `requests`. A malformed frame stops it, and is
/// returned: the requests before it are still answered.
fn decode_frames(decoder: &mut FrameDecoder, requests: &mut Vec<Msg>) -> Option<std::io::Error> {
    loop {
        match decoder.next_frame().map_err(invalid) {
            Ok(Some(frame)) => match Msg::decode(&frame) {
                Ok(msg) => requests.push(msg),
                Err(e) => return Some(invalid(e)),
            },
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

/// A connection's timeouts: idle (no request in flight and no bytes) and request (a frame
/// begun and not finished).
#[derive(Debug)]
struct Deadlines {
    limits: ClientLimits,
    last_bytes: Instant,
    /// When the first byte of the frame still incomplete arrived (at the latest).
    partial_since: Option<Instant>,
}

impl Deadlines {
    fn new(limits: ClientLimits, now: Instant) -> Deadlines {
        Deadlines {
            limits,
            last_bytes: now,
            partial_since: None,
        }
    }

    /// Bytes arrived; `completed`: they finished at least one frame; `buffered`: bytes of an
    /// unfinished frame left.
    fn on_read(&mut self, now: Instant, completed: bool, buffered: usize) {
        self.last_bytes = now;
        self.partial_since = match (buffered, completed) {
            (0, _) => None,
            (_, true) => Some(now),
            (_, false) => Some(self.partial_since.unwrap_or(now)),
        };
    }

    /// Fails with `TimedOut` when a timeout has run out.
    fn check(&self, now: Instant, buffered: usize, in_flight: usize) -> std::io::Result<()> {
        let timed_out = |what: &str| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, what));
        if self
            .partial_since
            .is_some_and(|t| now.duration_since(t) >= self.limits.request)
        {
            return timed_out("a request did not arrive whole within timeouts.client_request_ms");
        }
        let idle = now.duration_since(self.last_bytes) >= self.limits.idle;
        if buffered == 0 && in_flight == 0 && idle {
            return timed_out("idle for timeouts.client_idle_ms");
        }
        Ok(())
    }
}

/// Admits one read's requests in order: a lone request with nothing waiting is answered here
/// (see [`Answers`]); the others go to the answerer.
fn take_requests(
    inner: &Inner,
    grants: Grants,
    requests: &mut Vec<Msg>,
    (queue, answers): (&Sender<Pending>, &Answers<'_>),
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let lone = requests.len() == 1;
    for msg in requests.drain(..) {
        let pending = match not_permitted(&msg, grants) {
            Some(answer) => Pending::Ready(answer),
            None => admit(inner, msg)?,
        };
        if lone && answers.queued.load(Ordering::Acquire) == 0 {
            let answer = resolve(inner, pending);
            let mut out = answers.out.lock();
            out.write_all(&answer.encode())?;
            out.flush()?;
        } else {
            answers.queued.fetch_add(1, Ordering::AcqRel);
            enqueue(queue, pending, stop)?;
        }
    }
    Ok(())
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

pub(super) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Queues `pending`, waiting while the queue is full (the reader reads nothing meanwhile:
/// back-pressure on the client) unless the port stops or the answerer is gone.
fn enqueue(
    queue: &Sender<Pending>,
    mut pending: Pending,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    loop {
        match queue.send_timeout(pending, POLL) {
            Ok(()) => return Ok(()),
            Err(SendTimeoutError::Timeout(back)) if !stop.load(Ordering::Acquire) => {
                pending = back;
            }
            Err(_) => {
                let why = "the connection stopped answering";
                return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, why));
            }
        }
    }
}

/// The `not_permitted` answer to a client request `grants` do not cover; `None` when they do,
/// or when `msg` is no client request (which [`admit`] refuses by closing).
fn not_permitted(msg: &Msg, grants: Grants) -> Option<Msg> {
    if grants.permits(msg) {
        return None;
    }
    let status = ClientStatus::NotPermitted;
    let message = format!(
        "{} is not granted to this client (it holds: {grants})",
        msg.name()
    );
    Some(match *msg {
        Msg::AppendRequest { id, .. } => Msg::AppendResponse {
            id,
            status,
            lsn: Lsn::ZERO,
            message,
        },
        Msg::AppendBatchRequest { id, .. } => Msg::AppendBatchResponse {
            id,
            status,
            first_lsn: Lsn::ZERO,
            last_lsn: Lsn::ZERO,
            message,
        },
        Msg::ReadRequest { id, .. } => Msg::ReadResponse {
            id,
            status,
            detail: 0,
            message,
            records: Bytes::new(),
        },
        Msg::PromoteRequest { id, .. } => Msg::PromoteResponse {
            id,
            status,
            message,
        },
        _ => return None,
    })
}

/// Admits an append or a batch (hands it to the log, does not wait for its level); leaves any
/// other client request for its turn.
///
/// # Errors
/// `InvalidData` for a message that is not a client request (the connection ends).
fn admit(inner: &Inner, msg: Msg) -> std::io::Result<Pending> {
    Ok(match msg {
        Msg::AppendRequest { id, level, payload } => match inner.append(payload, level) {
            Ok(commit) => Pending::Append { id, commit },
            Err(e) => Pending::Ready(append_answer(id, Err(e))),
        },
        Msg::AppendBatchRequest {
            id,
            level,
            payloads,
        } => match inner.append_batch(payloads, level) {
            Ok((first, commit)) => Pending::Batch { id, first, commit },
            Err(e) => Pending::Ready(batch_answer(id, Lsn::ZERO, Err(e))),
        },
        m @ (Msg::ReadRequest { .. } | Msg::StatusRequest { .. } | Msg::PromoteRequest { .. }) => {
            Pending::InTurn(m)
        }
        other => {
            let m = format!("{} is not a client request", other.name());
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, m));
        }
    })
}

/// The answerer: answers the queue in order until the reader is done (and the queue empty),
/// the port stops, or a write fails; then closes the connection, which also ends a reader
/// still waiting for bytes.
fn answer_requests(
    queue: &Receiver<Pending>,
    answers: &Answers<'_>,
    inner: &Weak<Inner>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let result = answer_in_order(queue, answers, inner, stop);
    let mut out = answers.out.lock();
    let flushed = out.flush();
    let _ = out.get_mut().close_notify();
    answers.release_seat();
    let _ = out.get_ref().stream.shutdown(Shutdown::Both);
    result.and(flushed)
}

fn answer_in_order(
    queue: &Receiver<Pending>,
    answers: &Answers<'_>,
    inner: &Weak<Inner>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    loop {
        let pending = match queue.try_recv() {
            Ok(p) => p,
            Err(TryRecvError::Empty) => {
                answers.out.lock().flush()?;
                match queue.recv() {
                    Ok(p) => p,
                    Err(_) => return Ok(()),
                }
            }
            Err(TryRecvError::Disconnected) => return Ok(()),
        };
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        if !pending.is_ready() {
            answers.out.lock().flush()?;
        }
        let Some(inner) = inner.upgrade() else {
            return Ok(());
        };
        let answer = resolve(&inner, pending);
        drop(inner);
        answers.out.lock().write_all(&answer.encode())?;
        answers.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer to an admitted request: waits for an append's level, or carries out a read,
/// status or promote request.
fn resolve(inner: &Inner, pending: Pending) -> Msg {
    match pending {
        Pending::Append { id, commit } => append_answer(id, commit.wait()),
        Pending::Batch { id, first, commit } => batch_answer(id, first, commit.wait()),
        Pending::Ready(answer) => answer,
        Pending::InTurn(request) => handle(inner, request),
    }
}

/// How long a promote request waits for the handover (the primary gives up by itself after
/// the longest election timeout).
const PROMOTE_ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

fn status_of(e: &Error) -> ClientStatus {
    match e {
        Error::QuorumUnavailable { .. } => ClientStatus::QuorumUnavailable,
        Error::NotPrimary { .. } => ClientStatus::NotPrimary,
        Error::Log(logship_engine::Error::RecordTooLarge { .. }) => ClientStatus::Invalid,
        Error::Log(logship_engine::Error::Purged { .. }) => ClientStatus::Purged,
        _ => ClientStatus::Failed,
    }
}

/// The message of a failed append: for `not_primary`, the primary's client address (or
/// empty), which clients follow (docs/protocol.md).
fn failure_message(e: Error) -> String {
    match e {
        Error::NotPrimary { leader_hint } => leader_hint.unwrap_or_default(),
        e => e.to_string(),
    }
}

fn append_answer(id: u64, outcome: Result<Lsn>) -> Msg {
    match outcome {
        Ok(lsn) => Msg::AppendResponse {
            id,
            status: ClientStatus::Ok,
            lsn,
            message: String::new(),
        },
        Err(e) => Msg::AppendResponse {
            id,
            status: status_of(&e),
            lsn: Lsn::ZERO,
            message: failure_message(e),
        },
    }
}

/// The answer to a batch whose first record is `first`, once its last record's wait ended.
fn batch_answer(id: u64, first: Lsn, outcome: Result<Lsn>) -> Msg {
    match outcome {
        Ok(last) => {
            assert!(
                first > Lsn::ZERO && first <= last,
                "a batch from {first} acknowledged at {last}"
            );
            Msg::AppendBatchResponse {
                id,
                status: ClientStatus::Ok,
                first_lsn: first,
                last_lsn: last,
                message: String::new(),
            }
        }
        Err(e) => Msg::AppendBatchResponse {
            id,
            status: status_of(&e),
            first_lsn: Lsn::ZERO,
            last_lsn: Lsn::ZERO,
            message: failure_message(e),
        },
    }
}

/// Carries out a read, status or promote request in its turn.
fn handle(inner: &Inner, msg: Msg) -> Msg {
    match msg {
        Msg::ReadRequest {
            id,
            from,
            max_bytes,
        } => read(inner, id, from, max_bytes),
        Msg::PromoteRequest { id, target } => {
            let (status, message) = match inner.promote(&target, PROMOTE_ANSWER_WITHIN) {
                Ok(done) => (ClientStatus::Ok, done),
                Err(e @ Error::Protocol(_)) => (ClientStatus::Failed, e.to_string()),
                Err(e) => (status_of(&e), e.to_string()),
            };
            Msg::PromoteResponse {
                id,
                status,
                message,
            }
        }
        Msg::StatusRequest { id } => {
            let json = serde_json::to_string(&inner.status())
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            Msg::StatusResponse { id, json }
        }
        other => unreachable!("{} is admitted only as an append", other.name()),
    }
}

fn read(inner: &Inner, id: u64, from: Lsn, max_bytes: u32) -> Msg {
    let max = (max_bytes as usize).clamp(1, MAX_READ_BYTES);
    let fail = |e: logship_engine::Error| {
        let (status, detail) = match &e {
            logship_engine::Error::Purged { first, .. } => (ClientStatus::Purged, first.0),
            _ => (ClientStatus::Failed, 0),
        };
        Msg::ReadResponse {
            id,
            status,
            detail,
            message: e.to_string(),
            records: Bytes::new(),
        }
    };
    let mut reader = match inner.log.read_from(from) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    match reader.next_chunk(max) {
        None => Msg::ReadResponse {
            id,
            status: ClientStatus::Ok,
            detail: 0,
            message: String::new(),
            records: Bytes::new(),
        },
        Some(Ok(c)) => Msg::ReadResponse {
            id,
            status: ClientStatus::Ok,
            detail: 0,
            message: String::new(),
            records: c.bytes,
        },
        Some(Err(e)) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ClientLimits = ClientLimits {
        per_address: 2,
        idle: Duration::from_secs(60),
        request: Duration::from_secs(10),
    };

    #[test]
    fn an_unfinished_request_times_out_from_its_first_byte() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        d.on_read(t0, false, 3);
        // One more byte a second keeps the connection busy but does not restart the clock.
        for s in 1..10 {
            d.on_read(t0 + Duration::from_secs(s), false, 3 + s as usize);
            assert!(d.check(t0 + Duration::from_secs(s), 4, 0).is_ok());
        }
        let e = d.check(t0 + LIMITS.request, 12, 0).expect_err("timed out");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        // A finished frame restarts the clock for the next one.
        d.on_read(t0 + LIMITS.request, true, 2);
        assert!(d.check(t0 + LIMITS.request, 2, 0).is_ok());
    }

    #[test]
    fn an_idle_connection_times_out_unless_a_request_is_in_flight() {
        let t0 = Instant::now();
        let d = Deadlines::new(LIMITS, t0);
        let later = t0 + LIMITS.idle;
        assert!(d.check(later - Duration::from_millis(1), 0, 0).is_ok());
        assert!(d.check(later, 0, 1).is_ok(), "an answer is still owed");
        assert_eq!(
            d.check(later, 0, 0).expect_err("idle").kind(),
            std::io::ErrorKind::TimedOut
        );
    }
}
