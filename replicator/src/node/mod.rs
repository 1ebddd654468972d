//! The running node: the driver that connects the sans-I/O state machines to the log, the
//! transport, the clock and threads.
//!
//! Threads: the log's writer (which calls [`observer`] with each batch, before its fdatasync,
//! and with each durable advance), the transport's threads (frames in), a ticker (timeouts,
//! heartbeats, commit deadlines), a catch-up reader (primary: chunks from the log, off the
//! network path), the client port and the HTTP endpoint. The state machine sits behind one
//! mutex; whoever has an event locks it, feeds the event, and carries out the actions. Sends
//! happen under that lock so frames of one connection leave in the order the machine made them;
//! `Transport::send` never blocks. Log appends on a follower happen after the lock is released,
//! because an append may wait for queue space, which needs the writer, which reports durability
//! through the same lock.

mod apply;
mod client_port;
mod integrity;
mod metrics;
mod observer;
mod status;
mod waiters;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use logship_engine::io::OpenMode;
use logship_engine::{Epoch, Log, LogReader, Lsn, Options, Record, RecoveryMode, RecoveryReport};
use parking_lot::{Condvar, Mutex};

use crate::config::{NodeConfig, Role};
use crate::error::{Error, Result};
use crate::fetch::{FetchRequest, FETCH_CHUNK_BYTES};
use crate::follower::{Follower, FollowerAction, FollowerConfig, Tail};
use crate::http::{HttpResponse, HttpServer};
use crate::primary::{Action, Primary, PrimaryConfig, ReadError};
use crate::protocol::auth::{random_nonce, ClusterKey, NONCE_LEN};
use crate::protocol::frame::{self, FrameDecoder, DEFAULT_MAX_BODY_BYTES};
use crate::protocol::msg::{kind, RECORDS_PREFIX_BYTES};
use crate::protocol::{DurabilityLevel, FrameError, Msg};
use crate::transport::{self, ConnId, NetEvent, NetHandler, Transport};

pub use self::apply::ApplyStream;
use self::integrity::Integrity;
pub use self::integrity::{DamagedStatus, IntegrityStatus, RepairEvent};
pub use self::metrics::render_metrics;
use self::observer::NodeObserver;
pub use self::status::NodeStatus;
pub use self::waiters::Commit;
use self::waiters::Waiters;

/// How often the ticker runs: heartbeats are 100 ms by default, so 10 ms keeps them on time.
const TICK: Duration = Duration::from_millis(10);
/// How long a closing connection may take to send what is queued on it.
const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// Catch-up read jobs queued for the reader thread.
const READ_JOBS_CAPACITY: usize = 256;

enum Core {
    Primary(Box<Mutex<Primary>>),
    Follower(Box<Mutex<Follower>>),
}

enum ReadJob {
    Chunk {
        link: usize,
        conn: ConnId,
        from: Lsn,
        max_bytes: usize,
    },
    Crc {
        link: usize,
        conn: ConnId,
        lsn: Lsn,
    },
    /// A peer's fetch (`link`: the primary's link it came on; `None` on a follower).
    ServeFetch {
        link: Option<usize>,
        conn: ConnId,
        request: FetchRequest,
    },
    /// Records a primary takes back from a follower, appended in order.
    TakeBack {
        link: usize,
        conn: ConnId,
        records: Bytes,
    },
    /// A damaged segment's records, fetched from a peer.
    Repair {
        base: Lsn,
        chunks: Vec<Bytes>,
        source: String,
    },
}

#[derive(Debug, Default)]
struct Counters {
    appends: [AtomicU64; 4],
    quorum_timeouts: AtomicU64,
    malformed_frames: AtomicU64,
    connections: AtomicU64,
}

pub(crate) struct Inner {
    config: NodeConfig,
    start: Instant,
    log: Log,
    core: Core,
    transport: OnceLock<Arc<dyn Transport>>,
    decoders: Mutex<HashMap<ConnId, FrameDecoder>>,
    waiters: Waiters,
    read_jobs: Sender<ReadJob>,
    durable: (Mutex<Lsn>, Condvar),
    stop: AtomicBool,
    counters: Counters,
    commit_timeout: Duration,
    /// Connections to close once their queued bytes (a Reject frame, say) have left, or at the
    /// deadline: `Transport::close` drops what is still queued.
    closing: Mutex<Vec<(ConnId, Instant)>>,
    /// Failed connects, handled by the ticker: a transport may report one from inside
    /// `connect`, which the driver calls with the state machine locked.
    failed_connects: Mutex<Vec<(ConnId, String)>>,
    /// Why the log was poisoned, once it is: the node then only answers status.
    failure: OnceLock<String>,
    /// Scrubbing, digests, repair.
    integrity: Integrity,
    /// [`GATE_FILE`] exists: this primary's start gate was closed.
    gate_marked: AtomicBool,
}

/// A running node.
pub struct Node {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
    http: Option<HttpServer>,
    client: Option<client_port::ClientPort>,
    replication_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.config.node.id)
            .finish()
    }
}

fn log_options(config: &NodeConfig, observer: Arc<NodeObserver>) -> Options {
    // With replicas that hold every acknowledged record, damage is set aside for repair instead
    // of stopping the node: a follower (its primary), a primary with a sync quorum (which it
    // takes back from). A primary with async followers only would cut records acknowledged at
    // `local` that nobody is sure to hold: it refuses to start instead.
    let has_replicas = match config.node.role {
        Role::Primary => matches!(config.quorum(), Ok(Some(_))),
        Role::Follower => true,
    };
    let recovery = if config.integrity.salvage && has_replicas {
        RecoveryMode::Salvage
    } else {
        RecoveryMode::Strict
    };
    Options {
        observer: Some(observer),
        recovery,
        ..config.log_options()
    }
}

/// Whether the log may lack records the quorum acknowledged. Only a log closed cleanly (its
/// durable floor is its last LSN) with nothing cut or set aside since is known whole: after a
/// crash, the end of the log is vouched for by write markers alone, and a crash combined with a
/// lost block can take the last writes and their proof together. A primary then takes back what
/// its followers hold before serving (FAST'18, "protocol-aware recovery": local recovery must
/// not decide alone what the cluster acknowledged).
fn may_have_lost_records(r: &RecoveryReport) -> bool {
    let closed_cleanly = r.durable_floor == r.last_lsn;
    r.created
        || !closed_cleanly
        || r.durable_floor_removed
        || r.torn_tail.is_some()
        || !r.salvaged.is_empty()
}

/// The primary's state machine for `log`; its start gate is closed when recovery may have lost
/// records the quorum acknowledged.
fn primary_of(config: &NodeConfig, key: ClusterKey, log: &Log) -> Result<Primary> {
    let pc = PrimaryConfig {
        cluster_id: config.node.cluster_id.clone(),
        node_id: config.node.id.clone(),
        key,
        epoch: Epoch(0),
        followers: config.follower_links(),
        quorum: config.quorum()?,
        policy: config.policy(),
        timeouts: config.timeouts()?,
        backoff: config.backoff()?,
        breaker: config.breaker()?,
        max_inflight_bytes: config.replication.max_inflight_bytes,
        catch_up_chunk_bytes: config.replication.catch_up_chunk_bytes,
        max_retained_bytes: config.replication.max_retained_bytes,
    };
    let seed = u64::from_le_bytes(
        random_nonce().map_err(|e| Error::io("random seed", e))?[..8]
            .try_into()
            .expect("8 bytes"),
    );
    let mut p = Primary::new(pc, log.first_lsn(), log.last_lsn(), log.durable_lsn(), seed);
    // A gate closed by an earlier start stays closed until it opened: that start's log may have
    // lost records, and a restart with a clean close in between must not forget it.
    if gate_marked(config) || may_have_lost_records(log.recovery_report()) {
        p.close_gate();
        if !p.serving() {
            mark_gate(config, true)?;
        }
    }
    Ok(p)
}

/// Present while a primary's start gate is closed (in the log's directory).
const GATE_FILE: &str = "logship.node-take-back-pending";

/// The file system the node's log (and its node state) lives on.
fn state_vfs(config: &NodeConfig) -> Arc<dyn logship_engine::io::Vfs> {
    config
        .log_vfs
        .clone()
        .unwrap_or_else(|| Arc::new(logship_engine::io::StdVfs::default()))
}

/// Whether [`GATE_FILE`] exists in the log's directory.
fn gate_marked(config: &NodeConfig) -> bool {
    let path = config.node.data_dir.join(GATE_FILE);
    state_vfs(config).open(&path, OpenMode::Read).is_ok()
}

/// Creates (`present`) or removes [`GATE_FILE`], then syncs the directory.
fn mark_gate(config: &NodeConfig, present: bool) -> Result<()> {
    let vfs = state_vfs(config);
    let dir = &config.node.data_dir;
    let path = dir.join(GATE_FILE);
    let io = |e| Error::io(format!("marking {}", path.display()), e);
    if present && !gate_marked(config) {
        vfs.open(&path, OpenMode::CreateNew)
            .and_then(|f| f.sync_data())
            .map_err(io)?;
    } else if !present {
        if let Err(e) = vfs.remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(io(e));
            }
        }
    }
    vfs.sync_dir(dir).map_err(io)
}

fn tail_of(log: &Log, applied: Lsn) -> Result<Tail> {
    let last = log.last_lsn();
    let (last_crc, last_epoch) = record_at(log, last)?.map_or((0, Epoch(0)), |r| (r.crc, r.epoch));
    Ok(Tail {
        last,
        last_epoch,
        last_crc,
        durable: log.durable_lsn(),
        applied,
    })
}

fn record_at(log: &Log, lsn: Lsn) -> Result<Option<Record>> {
    if lsn == Lsn::ZERO || lsn < log.first_lsn() {
        return Ok(None);
    }
    let mut r = log.read_from_unsynced(lsn)?;
    Ok(r.next().transpose()?.filter(|rec| rec.lsn == lsn))
}

impl Node {
    /// Starts a node from its configuration: opens (or creates) the log, starts the
    /// transport, the state machine's threads, and the client and HTTP ports.
    ///
    /// # Errors
    /// [`Error::Key`], [`Error::Log`], [`Error::Io`] (ports in use, threads, io_uring).
    pub fn start(config: NodeConfig) -> Result<Node> {
        config.validate()?;
        let key = ClusterKey::load(&config.node.key_file)?;
        let observer = Arc::new(NodeObserver::default());
        let log = Log::open(
            &config.node.data_dir,
            log_options(&config, Arc::clone(&observer)),
        )?;
        let timeouts = config.timeouts()?;
        let core = match config.node.role {
            Role::Primary => Core::Primary(Box::new(Mutex::new(primary_of(&config, key, &log)?))),
            Role::Follower => {
                let fc = FollowerConfig {
                    cluster_id: config.node.cluster_id.clone(),
                    node_id: config.node.id.clone(),
                    key,
                    timeouts,
                    auto_apply: config.follower.auto_apply,
                };
                let tail = tail_of(&log, Lsn::ZERO)?;
                Core::Follower(Box::new(Mutex::new(Follower::new(fc, tail))))
            }
        };
        let (tx, rx) = crossbeam_channel::bounded(READ_JOBS_CAPACITY);
        let durable = log.durable_lsn();
        let inner = Arc::new(Inner {
            start: Instant::now(),
            core,
            transport: OnceLock::new(),
            decoders: Mutex::new(HashMap::new()),
            waiters: Waiters::default(),
            read_jobs: tx,
            durable: (Mutex::new(durable), Condvar::new()),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            commit_timeout: timeouts.commit,
            closing: Mutex::new(Vec::new()),
            failed_connects: Mutex::new(Vec::new()),
            failure: OnceLock::new(),
            integrity: Integrity::new(config.integrity.clone(), log.recovery_report()),
            gate_marked: AtomicBool::new(gate_marked(&config)),
            log,
            config,
        });
        if let Core::Primary(p) = &inner.core {
            inner.waiters.advance(p.lock().committed());
        }
        observer.attach(Arc::downgrade(&inner));
        Node::run(inner, rx)
    }

    fn run(inner: Arc<Inner>, read_jobs: Receiver<ReadJob>) -> Result<Node> {
        let handler: Arc<dyn NetHandler> = Arc::new(Handler(Arc::downgrade(&inner)));
        let t = transport::start(inner.config.node.transport, handler)
            .map_err(|e| Error::io("starting the transport", e))?;
        let _ = inner.transport.set(Arc::clone(&t));
        let mut node = Node {
            inner: Arc::clone(&inner),
            threads: Vec::new(),
            http: None,
            client: None,
            replication_addr: None,
        };
        if let Some(addr) = inner.config.node.listen_replication {
            let bound = t
                .listen(addr)
                .map_err(|e| Error::io(format!("listening on {addr}"), e))?;
            node.replication_addr = Some(bound);
        }
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| Error::io("spawning a thread", e))
        };
        let i = Arc::clone(&inner);
        node.threads
            .push(spawn("logship-ticker", Box::new(move || i.run_ticker()))?);
        let i = Arc::clone(&inner);
        node.threads.push(spawn(
            "logship-reader",
            Box::new(move || i.run_reader(read_jobs)),
        )?);
        let i = Arc::clone(&inner);
        node.threads
            .push(spawn("logship-scrub", Box::new(move || i.run_scrubber()))?);
        if let Some(addr) = inner.config.node.listen_http {
            let weak = Arc::downgrade(&inner);
            let h = Arc::new(move |path: &str| match weak.upgrade() {
                Some(i) => i.http(path),
                None => HttpResponse::service_unavailable("shutting down\n"),
            });
            node.http = Some(
                HttpServer::start(addr, h).map_err(|e| Error::io(format!("HTTP on {addr}"), e))?,
            );
        }
        if let Some(addr) = inner.config.node.listen_client {
            node.client = Some(client_port::ClientPort::start(
                addr,
                Arc::downgrade(&inner),
            )?);
        }
        tracing::info!(
            node = %inner.config.node.id, role = ?inner.config.node.role, transport = t.name(),
            log_backend = inner.log.backend(), last_lsn = %inner.log.last_lsn(), "node started"
        );
        Ok(node)
    }

    /// Appends one record and returns its wait for `level`.
    ///
    /// # Errors
    /// [`Error::NotPrimary`] on a follower; [`Error::Log`] if the log refuses it.
    pub fn append(&self, payload: Bytes, level: DurabilityLevel) -> Result<Commit> {
        self.inner.append(payload, level)
    }

    /// Records from `from` on, up to the durable end, for serving reads (on a follower: the
    /// apply stream's source).
    ///
    /// # Errors
    /// [`Error::Log`] (`Purged`).
    pub fn read_from(&self, from: Lsn) -> Result<LogReader> {
        Ok(self.inner.log.read_from(from)?)
    }

    /// A blocking iterator over durable records from `from` on, for the embedding application
    /// to apply in order; report progress with [`Node::report_applied`].
    ///
    /// # Errors
    /// [`Error::Log`] (`Purged`).
    pub fn apply_stream(&self, from: Lsn) -> Result<ApplyStream> {
        Ok(ApplyStream {
            inner: Arc::clone(&self.inner),
            reader: self.inner.log.read_from(from)?,
        })
    }

    /// Purges whole segments below `lsn`, as far as retention allows: on a primary, records
    /// some retained follower has not made durable yet are kept (like a replication slot).
    /// Returns what was removed; `first_lsn` in it is where the log now starts.
    ///
    /// # Errors
    /// [`Error::Log`].
    pub fn purge_before(&self, lsn: Lsn) -> Result<logship_engine::PurgeReport> {
        let allowed = match &self.inner.core {
            Core::Primary(p) => lsn.min(p.lock().retention_lsn()),
            Core::Follower(_) => lsn,
        };
        let report = self.inner.log.purge_before(allowed)?;
        if let Core::Primary(p) = &self.inner.core {
            p.lock().on_purged(report.first_lsn);
        }
        Ok(report)
    }

    /// The application applied records up to `lsn` (follower; counts for `remote_applied`).
    pub fn report_applied(&self, lsn: Lsn) {
        self.inner.report_applied(lsn);
    }

    /// Status.
    pub fn status(&self) -> NodeStatus {
        self.inner.status()
    }

    /// Blocks until the log is durable up to `lsn` or `timeout` passes; returns the durable LSN.
    pub fn wait_durable(&self, lsn: Lsn, timeout: Duration) -> Lsn {
        self.inner.wait_durable(lsn, timeout)
    }

    /// The address followers' primaries connect to (with port 0 resolved).
    pub fn replication_addr(&self) -> Option<SocketAddr> {
        self.replication_addr
    }

    /// The client port's address.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client
            .as_ref()
            .map(client_port::ClientPort::local_addr)
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// Why the node stopped accepting work (its log was poisoned by an I/O failure), if it
    /// did. Restarting the node reopens the log from disk.
    pub fn failure(&self) -> Option<String> {
        self.inner.failure.get().cloned()
    }

    /// The underlying log.
    pub fn log(&self) -> &Log {
        &self.inner.log
    }

    /// Stops everything; waiting appends fail with [`Error::Closed`].
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.inner.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(c) = self.client.take() {
            c.shutdown();
        }
        if let Some(h) = self.http.take() {
            h.shutdown();
        }
        if let Some(t) = self.inner.transport.get() {
            t.shutdown();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.inner.waiters.fail_all(|| Error::Closed);
        self.inner.durable.1.notify_all();
        // The writer thread may hold a short-lived reference (in the observer); let it go so
        // the log closes here and not on the writer thread itself.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.inner) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Handler(Weak<Inner>);

impl NetHandler for Handler {
    fn on_event(&self, event: NetEvent) {
        if let Some(inner) = self.0.upgrade() {
            inner.on_net(event);
        }
    }
}

impl Inner {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn transport(&self) -> &Arc<dyn Transport> {
        self.transport
            .get()
            .expect("the transport starts before any event")
    }

    fn append(&self, payload: Bytes, level: DurabilityLevel) -> Result<Commit> {
        let Core::Primary(p) = &self.core else {
            return Err(Error::NotPrimary);
        };
        if !p.lock().serving() {
            self.wait_for_gate(p, level)?;
        }
        let a = self.log.append(payload)?;
        let lsn = a.lsn();
        let deadline = match level {
            DurabilityLevel::Local => None,
            _ => waiters::deadline(self.commit_timeout),
        };
        self.counters.appends[level as usize].fetch_add(1, Ordering::Relaxed);
        let commit = self.waiters.register(level, lsn, deadline);
        if let Some(cause) = self.failure.get() {
            // Poisoned after the append was taken: its waiter may have missed `fail_all`.
            let cause = cause.clone();
            self.waiters.fail_all(|| {
                Error::Log(logship_engine::Error::Poisoned {
                    cause: cause.clone(),
                })
            });
        }
        Ok(commit)
    }

    /// Once the start gate opened, forgets that it was closed (removes [`GATE_FILE`]).
    fn note_gate_opened(&self, serving: bool) {
        if !serving || !self.gate_marked.load(Ordering::Acquire) {
            return;
        }
        match mark_gate(&self.config, false) {
            Ok(()) => self.gate_marked.store(false, Ordering::Release),
            Err(e) => tracing::warn!(error = %e, "could not remove the start gate's mark"),
        }
    }

    /// Waits (up to the commit timeout) for the start gate: a primary that may have lost
    /// records takes back what its followers hold before it assigns a new LSN.
    fn wait_for_gate(&self, p: &Mutex<Primary>, level: DurabilityLevel) -> Result<()> {
        const POLL: Duration = Duration::from_millis(5);
        let started = Instant::now();
        while started.elapsed() < self.commit_timeout {
            if self.stop.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            std::thread::sleep(POLL);
            if p.lock().serving() {
                return Ok(());
            }
        }
        self.counters
            .quorum_timeouts
            .fetch_add(1, Ordering::Relaxed);
        Err(Error::QuorumUnavailable {
            level,
            lsn: Lsn::ZERO,
            waited: started.elapsed(),
            quorum: format!(
                "{} (not serving yet: taking back records from the sync followers first)",
                p.lock().quorum_text()
            ),
        })
    }

    fn report_applied(&self, lsn: Lsn) {
        if let Core::Follower(f) = &self.core {
            let mut out = Vec::new();
            let mut f = f.lock();
            f.on_applied(self.now(), lsn, &mut out);
            self.run_follower_sends(&mut out);
        }
    }

    fn wait_durable(&self, lsn: Lsn, timeout: Duration) -> Lsn {
        let deadline = Instant::now() + timeout;
        let mut d = self.durable.0.lock();
        while *d < lsn && !self.stop.load(Ordering::Acquire) {
            if self.durable.1.wait_until(&mut d, deadline).timed_out() {
                break;
            }
        }
        *d
    }

    /// The writer formed a batch (primary: send it before its fdatasync finishes).
    pub(crate) fn on_batch(&self, first: Lsn, last: Lsn, records: &[u8]) {
        if let Core::Primary(p) = &self.core {
            let mut out = Vec::new();
            let mut p = p.lock();
            p.on_batch(self.now(), first, last, records, &mut out);
            self.run_primary(&mut p, out);
        }
    }

    /// The log was poisoned: every waiting and later append fails with the cause.
    pub(crate) fn on_failure(&self, cause: &str) {
        let _ = self.failure.set(cause.to_string());
        tracing::error!(%cause, "the log is poisoned: this node accepts nothing until it is restarted");
        let cause = cause.to_string();
        self.waiters.fail_all(|| {
            Error::Log(logship_engine::Error::Poisoned {
                cause: cause.clone(),
            })
        });
    }

    /// The log is durable up to `lsn`.
    pub(crate) fn on_durable(&self, lsn: Lsn) {
        {
            let mut d = self.durable.0.lock();
            *d = (*d).max(lsn);
        }
        self.durable.1.notify_all();
        match &self.core {
            Core::Primary(p) => {
                let mut p = p.lock();
                p.on_local_durable(self.now(), lsn);
                self.waiters.advance(p.committed());
            }
            Core::Follower(f) => {
                let mut out = Vec::new();
                let mut f = f.lock();
                f.on_durable(self.now(), lsn, &mut out);
                self.run_follower_sends(&mut out);
            }
        }
    }

    fn on_net(&self, event: NetEvent) {
        let now = self.now();
        match event {
            NetEvent::Connected { conn, .. } | NetEvent::Accepted { conn, .. } => {
                self.counters.connections.fetch_add(1, Ordering::Relaxed);
                self.decoders
                    .lock()
                    .insert(conn, FrameDecoder::new(DEFAULT_MAX_BODY_BYTES));
                let nonce = match random_nonce() {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(error = %e, "no randomness for a handshake nonce");
                        return self.transport().close(conn);
                    }
                };
                self.on_connection(now, conn, nonce);
            }
            NetEvent::ConnectFailed { conn, error } => {
                self.on_conn_closed(now, conn, format!("connect failed: {error}"))
            }
            NetEvent::Closed { conn, error } => {
                self.decoders.lock().remove(&conn);
                let why = error.map_or("connection closed by peer".to_string(), |e| {
                    format!("connection lost: {e}")
                });
                self.on_conn_closed(now, conn, why);
            }
            NetEvent::Data { conn, bytes } => self.on_data(now, conn, &bytes),
        }
    }

    fn on_connection(&self, now: Duration, conn: ConnId, nonce: [u8; NONCE_LEN]) {
        match &self.core {
            Core::Primary(p) => {
                let mut out = Vec::new();
                let mut p = p.lock();
                p.on_connected(now, conn, nonce, &mut out);
                self.run_primary(&mut p, out);
            }
            Core::Follower(f) => f.lock().on_accepted(now, conn, nonce),
        }
    }

    fn on_conn_closed(&self, now: Duration, conn: ConnId, why: String) {
        match &self.core {
            Core::Primary(p) => {
                let mut out = Vec::new();
                let mut p = p.lock();
                p.on_closed(now, conn, why, &mut out);
                self.run_primary(&mut p, out);
                self.waiters.advance(p.committed());
            }
            Core::Follower(f) => f.lock().on_closed(conn),
        }
    }

    fn on_data(&self, now: Duration, conn: ConnId, bytes: &[u8]) {
        let Some((frames, failure)) = self.decode(conn, bytes) else {
            return;
        };
        if let Some(e) = &failure {
            self.counters
                .malformed_frames
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(conn, error = %e, "malformed frame: closing the connection");
        }
        match &self.core {
            Core::Primary(p) => {
                let mut out = Vec::new();
                let mut p = p.lock();
                for m in frames {
                    p.on_frame(now, conn, m, &mut out);
                }
                if let Some(e) = failure {
                    p.on_frame_error(now, conn, &e, &mut out);
                }
                self.run_primary(&mut p, out);
                self.waiters.advance(p.committed());
            }
            Core::Follower(f) => self.follower_frames(f, now, conn, frames, failure),
        }
    }

    /// The messages `bytes` complete on `conn`, and the error that ends the connection if one
    /// came (its decoder is dropped then); `None` if the connection is gone.
    fn decode(&self, conn: ConnId, bytes: &[u8]) -> Option<(Vec<Msg>, Option<FrameError>)> {
        let mut decoders = self.decoders.lock();
        let d = decoders.get_mut(&conn)?;
        d.push(bytes);
        let mut frames = Vec::new();
        let failure = loop {
            match d
                .next_frame()
                .and_then(|f| f.map(|f| Msg::decode(&f)).transpose())
            {
                Ok(Some(m)) => frames.push(m),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        if failure.is_some() {
            decoders.remove(&conn);
        }
        Some((frames, failure))
    }

    /// A follower's frames: records go to the log before their acks go out.
    fn follower_frames(
        &self,
        f: &Mutex<Follower>,
        now: Duration,
        conn: ConnId,
        frames: Vec<Msg>,
        failure: Option<FrameError>,
    ) {
        let mut out = Vec::new();
        let acks = {
            let mut f = f.lock();
            for m in frames {
                f.on_frame(now, conn, m, &mut out);
            }
            if let Some(e) = failure {
                f.on_frame_error(conn, &e, &mut out);
            }
            // Acks wait until the records are handed to the log: the hand-off to the
            // writer (whose fdatasync the commit waits for) goes first. Acks carry
            // absolute positions and the primary keeps the maximum, so one overtaking
            // another changes nothing.
            let (acks, rest): (Vec<_>, Vec<_>) = out.drain(..).partition(|a| {
                matches!(
                    a,
                    FollowerAction::Send {
                        msg: Msg::Ack { .. },
                        ..
                    }
                )
            });
            out = rest;
            self.run_follower_sends(&mut out);
            acks
        };
        self.run_follower_log(out);
        for a in acks {
            if let FollowerAction::Send { conn, msg } = a {
                self.send(conn, &msg);
            }
        }
    }

    fn send(&self, conn: ConnId, msg: &Msg) {
        let t = self.transport();
        if let Msg::Records {
            first,
            last,
            commit_lsn,
            records,
        } = msg
        {
            // Header and prefix in one buffer, records as they are (zero-copy from the map).
            let mut prefix = [0u8; RECORDS_PREFIX_BYTES];
            prefix[0..8].copy_from_slice(&first.0.to_le_bytes());
            prefix[8..16].copy_from_slice(&last.0.to_le_bytes());
            prefix[16..24].copy_from_slice(&commit_lsn.0.to_le_bytes());
            let head = frame::encode_header_parts(kind::RECORDS, &[&prefix, records]);
            let mut h = Vec::with_capacity(head.len() + prefix.len());
            h.extend_from_slice(&head);
            h.extend_from_slice(&prefix);
            t.send(conn, Bytes::from(h));
            t.send(conn, records.clone());
        } else {
            t.send(conn, msg.encode());
        }
    }

    /// Closes `conn` once what is queued on it has been sent (bounded by [`CLOSE_LINGER`]).
    fn close(&self, conn: ConnId, reason: &str) {
        tracing::debug!(conn, %reason, "closing a replication connection");
        if self.transport().queued_bytes(conn) == 0 {
            self.transport().close(conn);
        } else {
            self.closing
                .lock()
                .push((conn, Instant::now() + CLOSE_LINGER));
        }
    }

    fn finish_closes(&self) {
        let now = Instant::now();
        let t = self.transport();
        self.closing.lock().retain(|&(conn, deadline)| {
            let done = now >= deadline || t.queued_bytes(conn) == 0;
            if done {
                t.close(conn);
            }
            !done
        });
    }

    fn run_primary(&self, p: &mut Primary, out: Vec<Action>) {
        for a in out {
            match a {
                Action::Connect {
                    link,
                    addr,
                    timeout,
                } => {
                    let conn = self.transport().connect(addr, timeout);
                    p.connect_started(link, conn);
                }
                Action::Send { conn, msg } => self.send(conn, &msg),
                Action::Close { conn, reason } => self.close(conn, &reason),
                Action::ReadChunk {
                    link,
                    conn,
                    from,
                    max_bytes,
                } => {
                    let _ = self.read_jobs.try_send(ReadJob::Chunk {
                        link,
                        conn,
                        from,
                        max_bytes,
                    });
                }
                Action::LookupCrc { link, conn, lsn } => {
                    let _ = self.read_jobs.try_send(ReadJob::Crc { link, conn, lsn });
                }
                other => self.run_primary_integrity(p, other),
            }
        }
    }

    /// Carries out sends and closes (under the lock, in order); leaves log work in `out`.
    fn run_follower_sends(&self, out: &mut Vec<FollowerAction>) {
        out.retain(|a| match a {
            FollowerAction::Send { conn, msg } => {
                self.send(*conn, msg);
                false
            }
            FollowerAction::Close { conn, reason } => {
                self.close(*conn, reason);
                false
            }
            _ => true,
        });
    }

    /// Appends and truncations, outside the lock.
    fn run_follower_log(&self, out: Vec<FollowerAction>) {
        let Core::Follower(f) = &self.core else {
            return;
        };
        for a in out {
            if let Err(e) = self.follower_log_action(f, a) {
                tracing::warn!(error = %e, "appending replicated records failed");
                let mut more = Vec::new();
                let mut f = f.lock();
                let applied = f.applied();
                let tail = tail_of(&self.log, applied).unwrap_or(Tail {
                    last: self.log.last_lsn(),
                    durable: self.log.durable_lsn(),
                    applied,
                    ..Tail::default()
                });
                f.on_append_failed(e.to_string(), tail, &mut more);
                self.run_follower_sends(&mut more);
                return;
            }
        }
    }

    fn follower_log_action(&self, f: &Mutex<Follower>, a: FollowerAction) -> Result<()> {
        match a {
            FollowerAction::Append { records, .. } => {
                drop(self.log.append_replicated(records)?);
            }
            FollowerAction::Truncate { after, expect_crc } => {
                let have = record_at(&self.log, after)?.map_or(0, |r| r.crc);
                if after > Lsn::ZERO && have != expect_crc {
                    let mut more = Vec::new();
                    let mut f = f.lock();
                    let tail = tail_of(&self.log, f.applied())?;
                    let m = format!(
                        "record {after} here has CRC {have:#010x}, the primary's {expect_crc:#010x}: the logs diverged before it"
                    );
                    tracing::error!("{m}; refusing to truncate");
                    f.on_truncate_refused(after, m, tail, &mut more);
                    self.run_follower_sends(&mut more);
                    return Err(Error::Protocol("diverged".into()));
                }
                self.log.truncate_after(after)?;
                let t = tail_of(&self.log, Lsn::ZERO)?;
                f.lock().on_truncated(t.last_crc, t.last_epoch);
            }
            FollowerAction::ServeFetch { conn, request } => {
                let job = ReadJob::ServeFetch {
                    link: None,
                    conn,
                    request,
                };
                let _ = self.read_jobs.try_send(job);
            }
            FollowerAction::Integrity(a) => self.on_integrity_action(a, "the primary"),
            FollowerAction::Send { .. } | FollowerAction::Close { .. } => {}
        }
        Ok(())
    }

    fn run_ticker(&self) {
        while !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(TICK);
            self.finish_closes();
            let failed: Vec<_> = self.failed_connects.lock().drain(..).collect();
            for (conn, why) in failed {
                self.on_conn_closed(self.now(), conn, why);
            }
            let now = self.now();
            match &self.core {
                Core::Primary(p) => {
                    let mut out = Vec::new();
                    let mut p = p.lock();
                    p.tick(now, &mut out);
                    self.run_primary(&mut p, out);
                    self.waiters.advance(p.committed());
                    self.note_gate_opened(p.serving());
                    let expired = self.waiters.expire(Instant::now(), p.quorum_text());
                    drop(p);
                    self.counters
                        .quorum_timeouts
                        .fetch_add(expired as u64, Ordering::Relaxed);
                }
                Core::Follower(f) => {
                    let mut out = Vec::new();
                    let mut f = f.lock();
                    f.tick(now, &mut out);
                    self.run_follower_sends(&mut out);
                }
            }
        }
    }

    /// The reader thread: catch-up chunks and CRC lookups for the primary's links, answers to
    /// peers' fetches, appends of taken-back records, repairs. Off the network path, in order.
    fn run_reader(&self, jobs: Receiver<ReadJob>) {
        let mut readers: HashMap<usize, LogReader> = HashMap::new();
        while !self.stop.load(Ordering::Acquire) {
            let Ok(job) = jobs.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            match job {
                ReadJob::ServeFetch {
                    link,
                    conn,
                    request,
                } => self.serve_fetch(link, conn, request),
                ReadJob::Repair {
                    base,
                    chunks,
                    source,
                } => self.apply_repair(base, &chunks, &source),
                job => self.primary_job(&mut readers, job),
            }
        }
    }

    fn primary_job(&self, readers: &mut HashMap<usize, LogReader>, job: ReadJob) {
        let Core::Primary(p) = &self.core else {
            return;
        };
        let mut out = Vec::new();
        match job {
            ReadJob::Chunk {
                link,
                conn,
                from,
                max_bytes,
            } => {
                let result = self.read_chunk(readers, link, from, max_bytes);
                p.lock()
                    .on_chunk(self.now(), link, conn, from, result, &mut out);
            }
            ReadJob::Crc { link, conn, lsn } => {
                let crc = record_at(&self.log, lsn).ok().flatten().map(|r| r.crc);
                p.lock().on_crc(self.now(), link, conn, crc, &mut out);
            }
            ReadJob::TakeBack {
                link,
                conn,
                records,
            } => {
                let result = self.log.append_replicated(records).map(|b| {
                    let n = b.last_lsn().0 + 1 - b.first_lsn().0;
                    self.integrity
                        .counters
                        .taken_back
                        .fetch_add(n, Ordering::Relaxed);
                    b.last_lsn()
                });
                let result = result.map_err(|e| e.to_string());
                p.lock()
                    .on_taken_back(self.now(), link, conn, result, &mut out);
            }
            ReadJob::ServeFetch { .. } | ReadJob::Repair { .. } => unreachable!("handled above"),
        }
        let mut p = p.lock();
        self.run_primary(&mut p, out);
        self.waiters.advance(p.committed());
    }

    /// Answers a peer's fetch from the durable part of the log.
    fn serve_fetch(&self, link: Option<usize>, conn: ConnId, request: FetchRequest) {
        let from = request.range.0;
        let prev_here = match request.prev_crc {
            Some(_) => record_at(&self.log, from.prev())
                .ok()
                .flatten()
                .map(|r| r.crc),
            None => None,
        };
        let bound = (request.max_bytes as usize).clamp(1, FETCH_CHUNK_BYTES as usize);
        let read = match self.log.read_from(from) {
            Ok(mut r) => r.next_chunk(bound).transpose().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let answer = request.answer(prev_here, read);
        let mut out = Vec::new();
        match (&self.core, link) {
            (Core::Primary(p), Some(link)) => {
                let mut p = p.lock();
                p.send_answer(link, conn, answer, &mut out);
                self.run_primary(&mut p, out);
            }
            (Core::Follower(f), None) => {
                let mut fo = Vec::new();
                let mut f = f.lock();
                f.send_answer(conn, answer, &mut fo);
                self.run_follower_sends(&mut fo);
            }
            _ => {}
        }
    }

    fn read_chunk(
        &self,
        readers: &mut HashMap<usize, LogReader>,
        link: usize,
        from: Lsn,
        max_bytes: usize,
    ) -> std::result::Result<Option<logship_engine::Chunk>, ReadError> {
        let fresh = !matches!(readers.get(&link), Some(r) if r.next_lsn() == from);
        if fresh {
            match self.log.read_from_unsynced(from) {
                Ok(r) => {
                    readers.insert(link, r);
                }
                Err(logship_engine::Error::Purged { first, .. }) => {
                    return Err(ReadError::Purged { first })
                }
                Err(e) => return Err(ReadError::Failed(e.to_string())),
            }
        }
        let r = readers.get_mut(&link).expect("inserted above");
        match r.next_chunk(max_bytes) {
            None => Ok(None),
            Some(Ok(c)) => Ok(Some(c)),
            Some(Err(logship_engine::Error::Purged { first, .. })) => {
                readers.remove(&link);
                Err(ReadError::Purged { first })
            }
            Some(Err(e)) => {
                readers.remove(&link);
                Err(ReadError::Failed(e.to_string()))
            }
        }
    }
}
