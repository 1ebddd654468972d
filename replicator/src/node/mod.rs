//! The running node: the executor that connects the sans-I/O [`Replica`] to the log, the
//! transport, the clock and threads. It decides nothing about the protocol: it turns what
//! happens into [`Input`]s and carries out the [`Action`]s the replica returns.
//!
//! Threads: the log's writer (which calls `observer` with each batch, before its fdatasync,
//! and with each durable advance; on a follower whose writer is idle, the thread that brought
//! the records writes them and so makes those calls), the transport's threads (bytes in), a
//! ticker (the replica's
//! timers), a reader (catch-up chunks, peers' fetches, take-back, repairs: log work off the
//! network path), the client port and the HTTP endpoint. The replica sits behind one mutex;
//! whoever has an input locks it, steps it, and carries out the actions in order. Sends happen
//! under that lock, so frames of one connection leave in the order the replica made them
//! (`Transport::send` never blocks), up to the first follower log action: an append may wait
//! for queue space, which needs the writer, which reports durability through the same lock, so
//! log actions and every action after them run once the lock is released, still in order.

mod apply;
mod client_answers;
mod client_conn;
mod client_handshake;
mod client_port;
mod divergent;
pub mod election_file;
mod failover;
mod integrity;
mod keys;
mod metrics;
mod observer;
mod peer_slots;
mod status;
mod storage;
mod waiters;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender};
use logship_engine::io::OpenMode;
use logship_engine::{
    AppendBatch, Completion, Epoch, Log, LogReader, Lsn, Options, RecoveryMode, RecoveryReport,
};
use parking_lot::{Condvar, Mutex};

use self::client_answers::LoneAppends;
use crate::config::{NodeConfig, Role};
use crate::error::{Error, Result};
use crate::fetch::{FetchRequest, IntegrityAction, FETCH_CHUNK_BYTES};
use crate::http::{HttpResponse, HttpServer};
use crate::primary::Primary;
use crate::protocol::auth::KeyRing;
use crate::protocol::frame;
use crate::protocol::msg::{kind, RECORDS_PREFIX_BYTES};
use crate::protocol::{DurabilityLevel, Msg};
use crate::replica::Replica;
use crate::tls::{TlsFailures, TlsState};
use crate::transport::{self, NetEvent, NetHandler, Transport};
use crate::vocab::{
    Action, ConnId, EpochHistory, FollowerConfig, Input, NonceSource, PrimaryConfig, ReadError,
    ReplicaLog, Tail, WaitError, WaiterId,
};

pub use self::apply::ApplyStream;
pub use self::client_port::{
    MAX_CLIENT_CONNECTIONS, MAX_IN_FLIGHT_PER_CONNECTION, MAX_READ_BYTES, REQUEST_OVERHEAD_BYTES,
};
use self::integrity::Integrity;
pub use self::integrity::{DamagedStatus, IntegrityStatus, RepairEvent};
pub use self::keys::{
    generate_key_text, load_client_key, load_client_keys, load_key, load_key_ring, random_nonce,
};
pub use self::metrics::render_metrics;
use self::observer::NodeObserver;
use self::peer_slots::PeerSlots;
pub use self::peer_slots::{
    MAX_REPLICATION_CONNECTIONS, MAX_REPLICATION_CONNECTIONS_PER_ADDRESS, MAX_UNPROVEN_BYTES,
};
pub use self::status::{ElectionStatus, NodeStatus};
pub use self::waiters::Commit;
use self::waiters::{Admission, Waiters};

/// How often the ticker runs: heartbeats are 100 ms by default, so 10 ms keeps them on time.
const TICK: Duration = Duration::from_millis(10);
/// How long a closing connection may take to send what is queued on it.
const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// Catch-up read jobs queued for the reader thread.
const READ_JOBS_CAPACITY: usize = 256;
/// A follower writes the records its primary sent on the receiving thread, when its log's
/// writer is idle and they take at most this many bytes (`Log::append_replicated_here`): commit
/// traffic skips the hand-off to the writer thread, and a catch-up's multi-MiB chunks are left
/// to it, so that receiving the next chunk overlaps writing this one.
const WRITE_HERE_MAX_BYTES: usize = 256 << 10;

#[derive(Debug, Default)]
struct Counters {
    appends: [AtomicU64; 4],
    /// Records of divergent suffixes copied to side files before their cut.
    divergent_records: AtomicU64,
    /// Acknowledgements not sent because a newer one had covered them (`superseded_ack`).
    acks_superseded: AtomicU64,
    /// Client answers sent by the thread that delivered the acknowledgement completing them
    /// (`client_port::answering_here`).
    client_answers_on_ack: AtomicU64,
}

pub(crate) struct Inner {
    config: NodeConfig,
    start: Instant,
    log: Log,
    replica: Mutex<Replica>,
    transport: OnceLock<Arc<dyn Transport>>,
    waiters: Waiters,
    /// Log work for the reader thread: the replica's `ReadChunk`, `LookupCrc`, `ServeFetch`,
    /// `AppendTakenBack` and checked repairs (`Integrity(Repair)`), in order.
    read_jobs: Sender<Action>,
    durable: (Mutex<Lsn>, Condvar),
    stop: AtomicBool,
    counters: Counters,
    /// Connections to close once their queued bytes (a Reject frame, say) have left, or at the
    /// deadline: `Transport::close` drops what is still queued.
    closing: Mutex<Vec<(ConnId, Instant)>>,
    /// Inputs for the ticker to feed: a transport may report a failed connect from inside
    /// `connect`, which the executor calls with the replica locked.
    deferred: Mutex<Vec<Input>>,
    /// Why the log was poisoned, once it is: the node then only answers status.
    failure: OnceLock<String>,
    /// Scrubbing, digests, repair.
    integrity: Integrity,
    /// [`GATE_FILE`] exists: this primary's start gate was closed.
    gate_marked: AtomicBool,
    /// The client address of the primary this node follows, as of the last step (the hint
    /// in `NotPrimary`).
    leader_hint: Mutex<(Option<String>, Option<String>)>,
    /// The disk-stall watchdog: since when the durable LSN has not moved while records wait
    /// (and at which LSN), and whether the replica was told the disk stalled.
    stall: Mutex<(Option<(Instant, Lsn)>, bool)>,
    /// The number of the last election state stored (see [`Action::Persist`]).
    persist_seq: Mutex<u64>,
    /// The last acknowledgement sent, and how many were sent: see [`Inner::superseded_ack`].
    last_ack: Mutex<SentAck>,
    /// Where the answer of the switchover under way goes.
    promote: Mutex<Option<crossbeam_channel::Sender<std::result::Result<String, String>>>>,
    /// The client keys new client connections are checked against (`None` without
    /// `[clients]`: the port is open); replaced by [`Node::reload_keys`].
    client_keys: client_handshake::ClientKeysSlot,
    /// Client handshakes refused: counted, logged as one line per interval.
    client_refusals: client_handshake::Refusals,
    /// The TLS configurations (with a `[tls]` table), swapped by [`Node::reload_tls`].
    tls: Option<Arc<TlsState>>,
    /// TLS failures on either port.
    tls_failures: Arc<TlsFailures>,
    /// The replication listener's bounds on accepted connections.
    peer_slots: PeerSlots,
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
        Role::Elected => true,
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
fn primary_of(config: &NodeConfig, key: KeyRing, log: &Log) -> Result<Primary> {
    let pc = PrimaryConfig {
        cluster_id: config.node.cluster_id.clone(),
        node_id: config.node.id.as_str().into(),
        key,
        epoch: fixed_epoch(config, log)?,
        followers: config.follower_links(),
        quorum: config.quorum()?,
        policy: config.policy(),
        timeouts: config.timeouts()?,
        backoff: config.backoff()?,
        breaker: config.breaker()?,
        max_inflight_bytes: config.replication.max_inflight_bytes,
        catch_up_chunk_bytes: config.replication.catch_up_chunk_bytes,
        catch_up_pacing: config.replication.catch_up_pacing(),
        max_retained_bytes: config.replication.max_retained_bytes,
        failover: false,
    };
    let seed = os_seed()?;
    let seed = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes"));
    let mut p = Primary::new(pc, log.first_lsn(), log.last_lsn(), log.durable_lsn(), seed);
    if !log.recovery_report().created {
        p.mark_recovered_log();
    }
    // A gate closed by an earlier start stays closed until it opened: that start's log may have
    // lost records, and a restart with a clean close in between must not forget it.
    if gate_marked(config) || may_have_lost_records(log.recovery_report()) {
        p.close_gate();
        if !p.serving() {
            mark_gate(config, true)?;
        }
    }
    Ok(p.with_history(log_history(log)))
}

/// A fixed primary writes each start's records in a newer epoch than any before it: one past
/// the newest it persisted or its log holds, persisted (with the rest of the election state
/// kept) before it serves. The epochs tell which of two histories is newer after crashes.
fn fixed_epoch(config: &NodeConfig, log: &Log) -> Result<Epoch> {
    let (vfs, dir) = (state_vfs(config), &config.node.data_dir);
    let state_error = |e| match e {
        election_file::ElectionFileError::Io { op, path, source } => {
            Error::io(format!("{op} {}", path.display()), source)
        }
        corrupt => Error::config("node.data_dir", format!("the election state: {corrupt}")),
    };
    let mut state = (election_file::load_in(&*vfs, dir).map_err(state_error)?).unwrap_or_default();
    // The log's epoch is its last record's at open (`Log::epoch`).
    state.epoch = Epoch(state.epoch.max(log.epoch()).0 + 1);
    election_file::store_in(&*vfs, dir, &state).map_err(state_error)?;
    log.set_epoch(state.epoch)?;
    tracing::info!(epoch = %state.epoch, "writing this start's records in a new epoch");
    Ok(state.epoch)
}

/// The log's epoch history, read from its records' headers (a few reads per epoch). A record
/// that cannot be read leaves the history empty (every record taken as epoch 0): sessions are
/// then planned by CRC comparison alone, as before epochs.
fn log_history(log: &Log) -> EpochHistory {
    let range = (log.first_lsn(), log.last_lsn());
    let read = |l| log.record_meta(l).ok().flatten().map(|(_, e)| e);
    EpochHistory::rebuild(range, read).unwrap_or_else(|| {
        tracing::warn!("the log's epochs could not be read: planning sessions by CRC alone");
        EpochHistory::default()
    })
}

/// 32 bytes from the operating system, to seed the replica's randomness.
fn os_seed() -> Result<[u8; 32]> {
    random_nonce().map_err(|e| Error::io("drawing a random seed", e))
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
    let (last_crc, last_epoch) = (log.record_meta(last))
        .map_err(|e| Error::Protocol(format!("reading the log's last record: {e}")))?
        .unwrap_or((0, Epoch(0)));
    Ok(Tail {
        last,
        last_epoch,
        last_crc,
        durable: log.durable_lsn(),
        applied,
    })
}

/// The CRC field of record `lsn`, if the log holds it and it reads whole.
fn crc_at(log: &Log, lsn: Lsn) -> Option<u32> {
    log.record_meta(lsn).ok().flatten().map(|(crc, _)| crc)
}

/// The client keys of `[clients]`, read from its file; `None` without `[clients]`.
fn client_keys_of(
    config: &NodeConfig,
) -> Result<Option<Arc<crate::protocol::client_auth::ClientKeys>>> {
    let Some(clients) = &config.clients else {
        return Ok(None);
    };
    Ok(Some(Arc::new(load_client_keys(&clients.keys_file)?)))
}

impl Node {
    /// Starts a node from its configuration: opens (or creates) the log, starts the
    /// transport, the state machine's threads, and the client and HTTP ports.
    ///
    /// # Errors
    /// [`Error::Key`], [`Error::Log`], [`Error::Io`] (ports in use, threads, io_uring).
    pub fn start(config: NodeConfig) -> Result<Node> {
        config.validate()?;
        let key = load_key_ring(&config.node.key_file)?;
        let client_keys = client_keys_of(&config)?;
        let tls = (config.tls.as_ref())
            .map(|t| TlsState::load(t.files()).map(Arc::new))
            .transpose()?;
        let observer = Arc::new(NodeObserver::default());
        let log = Log::open(
            &config.node.data_dir,
            log_options(&config, Arc::clone(&observer)),
        )?;
        let nonces = NonceSource::new(os_seed()?);
        let replica = match config.node.role {
            Role::Primary => Replica::primary(primary_of(&config, key, &log)?, nonces),
            Role::Follower => {
                let fc = FollowerConfig {
                    cluster_id: config.node.cluster_id.clone(),
                    node_id: config.node.id.as_str().into(),
                    key,
                    timeouts: config.timeouts()?,
                    auto_apply: config.follower.auto_apply,
                };
                Replica::new_follower(fc, tail_of(&log, Lsn::ZERO)?, nonces)
                    .with_history(log_history(&log))
            }
            Role::Elected => {
                let settings = config.failover().ok_or_else(|| {
                    Error::config(
                        "node.role",
                        "an elected node needs a [cluster] table with failover",
                    )
                })?;
                failover::elected_replica(&config, settings, key, &log, nonces)?
            }
        };
        let (tx, rx) = crossbeam_channel::bounded(READ_JOBS_CAPACITY);
        let durable = log.durable_lsn();
        let committed = replica.committed();
        let inner = Arc::new(Inner {
            start: Instant::now(),
            replica: Mutex::new(replica),
            transport: OnceLock::new(),
            waiters: Waiters::default(),
            read_jobs: tx,
            durable: (Mutex::new(durable), Condvar::new()),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            closing: Mutex::new(Vec::new()),
            deferred: Mutex::new(Vec::new()),
            failure: OnceLock::new(),
            integrity: Integrity::new(config.integrity.clone(), log.recovery_report()),
            gate_marked: AtomicBool::new(gate_marked(&config)),
            leader_hint: Mutex::new((None, None)),
            promote: Mutex::new(None),
            persist_seq: Mutex::new(0),
            last_ack: Mutex::new(SentAck::default()),
            stall: Mutex::new((None, false)),
            client_keys: Mutex::new(client_keys),
            client_refusals: client_handshake::Refusals::new(),
            tls,
            tls_failures: Arc::default(),
            peer_slots: PeerSlots::new(),
            log,
            config,
        });
        inner.waiters.advance(committed);
        observer.attach(Arc::downgrade(&inner));
        Node::run(inner, rx)
    }

    fn run(inner: Arc<Inner>, read_jobs: Receiver<Action>) -> Result<Node> {
        let handler: Arc<dyn NetHandler> = Arc::new(Handler(Arc::downgrade(&inner)));
        // Cluster members leave from their own replication address, so peers and packet
        // filters can tell them apart (on loopback the kernel would use the destination's).
        let source = match inner.config.cluster {
            Some(_) => (inner.config.listen_replication())
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified()),
            None => None,
        };
        let options = transport::TransportOptions { source };
        let t = inner
            .start_transport(handler, options)
            .map_err(|e| Error::io("starting the transport", e))?;
        let _ = inner.transport.set(Arc::clone(&t));
        let mut node = Node {
            inner: Arc::clone(&inner),
            threads: Vec::new(),
            http: None,
            client: None,
            replication_addr: None,
        };
        if let Some(addr) = inner.config.listen_replication() {
            // A listener handed over (bound to `addr`) is served as it is, else `addr` is bound.
            let bound = match &inner.config.replication_listener {
                Some(l) => l.try_clone().and_then(|l| t.listen_on(l)),
                None => t.listen(addr),
            };
            node.replication_addr =
                Some(bound.map_err(|e| Error::io(format!("listening on {addr}"), e))?);
        }
        let (i, j, k) = (Arc::clone(&inner), Arc::clone(&inner), Arc::clone(&inner));
        let threads = [
            (
                "logship-ticker",
                Box::new(move || i.run_ticker()) as Box<dyn FnOnce() + Send>,
            ),
            ("logship-reader", Box::new(move || j.run_reader(read_jobs))),
            ("logship-scrub", Box::new(move || k.run_scrubber())),
        ];
        for (name, f) in threads {
            let thread = std::thread::Builder::new().name(name.into()).spawn(f);
            node.threads
                .push(thread.map_err(|e| Error::io("spawning a thread", e))?);
        }
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
            node.client = Some(Inner::start_client_port(&inner, addr)?);
        }
        tracing::info!(
            node = %inner.config.node.id, role = ?inner.config.node.role, transport = t.name(),
            log_backend = inner.log.backend(), last_lsn = %inner.log.last_lsn(), "node started"
        );
        Ok(node)
    }

    /// Appends one record and returns its wait for `level`.
    ///
    /// Caller-runs: if the log's writer idles, the append does not wake it, and the commit's
    /// `wait()` writes the record on the waiting thread (two thread hand-offs fewer on a lone
    /// commit); awaiting the commit, or dropping it, hands the record to the writer thread
    /// instead. A commit held without waiting leaves its record for the writer thread to
    /// take when its idle wait ends (about a millisecond): wait, await or drop it promptly.
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
        let allowed =
            (self.inner.replica.lock().as_primary()).map_or(lsn, |p| lsn.min(p.retention_lsn()));
        let report = self.inner.log.purge_before(allowed)?;
        self.inner.step(Input::Purged(report.first_lsn));
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

    /// Planned switchover: this primary stops admitting appends, waits until follower
    /// `target` holds every record durably, tells it to stand for election and becomes a
    /// follower. Returns what happened once handed over (the target's election follows).
    ///
    /// # Errors
    /// [`Error::Protocol`] with the reason (not the primary, no such sync voter, the target
    /// did not catch up within the election timeout, or `timeout` passed).
    pub fn promote(&self, target: &str, timeout: Duration) -> Result<String> {
        self.inner.promote(target, timeout)
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

    /// The client port's transport: `io_uring` or `portable`, with `+tls` under TLS.
    pub fn client_transport(&self) -> Option<&'static str> {
        self.client
            .as_ref()
            .map(client_port::ClientPort::transport_name)
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// Reads the `[tls]` files again and uses them for new connections on both ports;
    /// connections already up keep what they started with. `Ok(false)`: the node has no
    /// `[tls]` table, nothing to reload.
    ///
    /// # Errors
    /// [`Error::Tls`] naming the file that could not be used; the configurations in use stay.
    pub fn reload_tls(&self) -> Result<bool> {
        match &self.inner.tls {
            Some(state) => state.reload().map(|()| true).map_err(Error::from),
            None => Ok(false),
        }
    }

    /// TLS failures (bad certificates, plaintext peers, ...) on either port since start.
    pub fn tls_failures(&self) -> u64 {
        self.inner.tls_failures.count()
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

    /// Reads the cluster key file and (with `[clients]`) the client keys file again, and puts
    /// them in use: replication sessions and vote proofs from now on prove with the ring's
    /// first key and accept any of its keys; new client connections are checked against the
    /// new client keys. Sessions and client connections already authenticated go on. Both
    /// files are read before either is put in use: when one is bad, the node keeps every old
    /// key and returns why.
    ///
    /// # Errors
    /// [`Error::Key`] or [`Error::ClientKeys`], naming the file and what is wrong.
    pub fn reload_keys(&self) -> Result<KeysReloaded> {
        self.inner.reload_keys()
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

/// What [`Node::reload_keys`] put in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeysReloaded {
    /// Keys in the cluster key ring.
    pub cluster_keys: usize,
    /// Clients in the client keys file (`None` without `[clients]`).
    pub clients: Option<usize>,
}

struct Handler(Weak<Inner>);

impl NetHandler for Handler {
    fn on_event(&self, event: NetEvent) {
        if let Some(inner) = self.0.upgrade() {
            inner.on_net(event);
        }
    }

    fn receives_frames(&self) -> bool {
        true
    }
}

impl Inner {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn reload_keys(&self) -> Result<KeysReloaded> {
        let ring = load_key_ring(&self.config.node.key_file)?;
        let clients = client_keys_of(&self.config)?;
        let reloaded = KeysReloaded {
            cluster_keys: ring.len(),
            clients: clients.as_ref().map(|c| c.len()),
        };
        self.step(Input::KeyRing(ring));
        *self.client_keys.lock() = clients;
        Ok(reloaded)
    }

    /// The client keys and the cluster id a client handshake starting now is checked against;
    /// `None` without `[clients]`.
    fn client_keys_now(&self) -> Option<(Arc<crate::protocol::client_auth::ClientKeys>, String)> {
        let keys = self.client_keys.lock().clone()?;
        Some((keys, self.config.node.cluster_id.clone()))
    }

    /// Starts the client port on `addr`, with TLS when `[tls]` has `client_port` on.
    fn start_client_port(inner: &Arc<Inner>, addr: SocketAddr) -> Result<client_port::ClientPort> {
        let tls = (inner.tls.as_ref())
            .filter(|_| inner.config.tls.as_ref().is_some_and(|t| t.client_port))
            .map(|s| (Arc::clone(s), Arc::clone(&inner.tls_failures)));
        let limits = inner.config.client_limits()?;
        client_port::ClientPort::start(addr, limits, Arc::downgrade(inner), tls)
    }

    /// Starts the configured transport, under the TLS layer when `[tls]` has `replication`
    /// on: each peer's certificate is verified for its node id.
    fn start_transport(
        &self,
        handler: Arc<dyn NetHandler>,
        options: transport::TransportOptions,
    ) -> std::io::Result<Arc<dyn Transport>> {
        let backend = self.config.node.transport;
        let on = self.config.tls.as_ref().is_some_and(|t| t.replication);
        let Some(state) = self.tls.as_ref().filter(|_| on) else {
            return transport::start_with(backend, handler, options);
        };
        let names = (self.config.peer_names().into_iter())
            .filter_map(|(addr, id)| Some((addr, crate::tls::server_name(&id).ok()?)))
            .collect();
        let layer = transport::tls::TlsTransport::start(
            |below| transport::start_with(backend, below, options),
            handler,
            Arc::clone(state) as Arc<dyn crate::tls::TlsConfigs>,
            names,
            Arc::clone(&self.tls_failures),
        )?;
        Ok(Arc::new(layer))
    }

    fn transport(&self) -> &Arc<dyn Transport> {
        self.transport
            .get()
            .expect("the transport starts before any event")
    }

    /// Steps the replica with `input` and carries out what it returns.
    fn step(&self, input: Input) {
        let mut r = self.replica.lock();
        let out = r.step(self.now(), input);
        self.execute(r, out);
    }

    /// Carries out `out` in order: under the replica's lock up to the first log action, the
    /// rest after releasing it (a log action may wait for the writer, which reports through
    /// the same lock).
    fn execute(&self, mut r: parking_lot::MutexGuard<'_, Replica>, out: Vec<Action>) {
        let peer_role = match r.as_primary() {
            Some(_) => "a follower",
            None => "the primary",
        };
        self.note_leader(&r);
        let mut todo = VecDeque::from(out);
        while let Some(a) = todo.pop_front() {
            match a {
                a @ (Action::Connect { .. } | Action::ConnectVoter { .. }) => {
                    todo.extend(self.dial(&mut r, a));
                }
                Action::Persist { seq, state } => {
                    // Under the lock: nothing that depends on it may leave before it is durable.
                    if let Err(cause) = self.persist(seq, &state) {
                        todo = r.step(self.now(), Input::LogFailed { cause }).into();
                    }
                }
                a @ (Action::Append { .. }
                | Action::Truncate { .. }
                | Action::SealActive
                | Action::AppendMarker { .. }
                | Action::ReadTail) => {
                    todo.push_front(a);
                    break;
                }
                a => self.carry_out(a, peer_role),
            }
        }
        drop(r);
        client_port::answer_deferred();
        self.execute_unlocked(todo, peer_role);
    }

    /// The part of [`Inner::execute`] after the replica's lock: the log actions and what
    /// follows them, in order; stops at a log action that failed (the replica was told).
    fn execute_unlocked(&self, mut todo: VecDeque<Action>, peer_role: &str) {
        // Batches of frames that arrived together, queued for the last one's write.
        let mut held = Vec::new();
        // Acknowledgements sent before the first append of this run.
        let mut acks_before_append = None;
        while let Some(a) = todo.pop_front() {
            let done = match a {
                Action::Append { records, .. } => {
                    let more = (todo.iter().find(|a| !matches!(a, Action::Send { .. })))
                        .is_some_and(|a| matches!(a, Action::Append { .. }));
                    acks_before_append.get_or_insert_with(|| self.last_ack.lock().count);
                    self.append_replicated(records, more, &mut held)
                }
                Action::Send { conn, msg }
                    if self.superseded_ack(acks_before_append, conn, &msg) =>
                {
                    self.counters
                        .acks_superseded
                        .fetch_add(1, Ordering::Relaxed);
                    true
                }
                Action::Truncate { after, expect_crc } => self.truncate(after, expect_crc),
                Action::SealActive => {
                    self.seal_active();
                    true
                }
                Action::AppendMarker { epoch } => self.append_marker(epoch),
                Action::ReadTail => {
                    self.read_tail();
                    true
                }
                Action::Persist { seq, state } => match self.persist(seq, &state) {
                    Ok(()) => true,
                    Err(cause) => {
                        self.step(Input::LogFailed { cause });
                        false
                    }
                },
                Action::Connect { .. } | Action::ConnectVoter { .. } => {
                    // Only the lock's part makes connections; an executor bug if one got here.
                    tracing::error!("a connect after a log action was dropped");
                    true
                }
                a => {
                    self.carry_out(a, peer_role);
                    true
                }
            };
            if !done {
                return;
            }
        }
    }

    /// Starts the connection a `Connect` or `ConnectVoter` asks for and tells the replica its
    /// number; returns what the replica does next.
    fn dial(&self, r: &mut Replica, a: Action) -> Vec<Action> {
        match a {
            Action::Connect {
                link,
                addr,
                timeout,
            } => {
                let conn = self.transport().connect(addr, timeout);
                r.step(self.now(), Input::Dialed { link, conn })
            }
            Action::ConnectVoter {
                member,
                addr,
                timeout,
            } => {
                let conn = self.transport().connect(addr, timeout);
                r.step(self.now(), Input::DialedVoter { member, conn })
            }
            _ => Vec::new(),
        }
    }

    /// Carries out an action that needs neither the replica nor the log's append path.
    fn carry_out(&self, a: Action, peer_role: &str) {
        match a {
            Action::Send { conn, msg } => self.send(conn, &msg),
            Action::Close { conn, reason } => self.close(conn, &reason),
            Action::Committed(levels) => self.waiters.advance(levels),
            Action::RestartCommitted(levels) => self.waiters.restart_levels(levels),
            Action::PromoteAnswer(result) => {
                if let Some(tx) = self.promote.lock().take() {
                    let _ = tx.send(result);
                }
            }
            Action::Admit { waiter } => self.waiters.admit(waiter),
            Action::FailWait { waiter, error } => self
                .waiters
                .fail(waiter, wait_error(error, self.leader_hint())),
            Action::FailAll { cause } => self.fail_all(&cause),
            Action::FailWaiting { error } => {
                let hint = self.leader_hint();
                self.waiters
                    .fail_all(|| wait_error(error.clone(), hint.clone()))
            }
            a @ (Action::ReadChunk { .. }
            | Action::LookupCrc { .. }
            | Action::ServeFetch { .. }
            | Action::AppendTakenBack { .. }) => self.queue(a),
            Action::Integrity(a) => self.on_integrity_action(a, peer_role),
            Action::Connect { .. }
            | Action::ConnectVoter { .. }
            | Action::Persist { .. }
            | Action::AppendMarker { .. }
            | Action::ReadTail
            | Action::Append { .. }
            | Action::Truncate { .. }
            | Action::SealActive => {
                unreachable!("handled by execute")
            }
        }
    }

    /// See [`Node::promote`].
    fn promote(&self, target: &str, timeout: Duration) -> Result<String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.promote.lock().replace(tx).is_some() {
            return Err(Error::Protocol("a switchover is under way already".into()));
        }
        self.step(Input::Promote {
            target: target.into(),
        });
        let answer = rx.recv_timeout(timeout);
        self.promote.lock().take();
        match answer {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(why)) => Err(Error::Protocol(why)),
            Err(_) => Err(Error::Protocol(format!("no answer within {timeout:?}"))),
        }
    }

    /// Remembers the client address of the primary `r` follows, for `NotPrimary`.
    fn note_leader(&self, r: &Replica) {
        let id = r.as_follower().and_then(|f| f.primary());
        let mut cached = self.leader_hint.lock();
        if cached.0.as_deref() == id {
            return;
        }
        let hint = id.and_then(|id| {
            (self.config.member_clients().into_iter())
                .find(|(m, _)| m == id)
                .and_then(|(_, a)| a)
                .map(|a| a.to_string())
        });
        *cached = (id.map(str::to_string), hint);
    }

    fn leader_hint(&self) -> Option<String> {
        self.leader_hint.lock().1.clone()
    }

    /// Stores the election state durably next to the log, unless a later one was stored
    /// already (see [`Action::Persist`]).
    fn persist(
        &self,
        seq: u64,
        state: &crate::vocab::ElectionState,
    ) -> std::result::Result<(), String> {
        let mut last = self.persist_seq.lock();
        if seq <= *last {
            return Ok(());
        }
        election_file::store(self.log.dir(), state).map_err(|e| e.to_string())?;
        *last = seq;
        Ok(())
    }

    /// Writes new appends in `epoch` and appends its marker; false (the replica told) if the
    /// log refused.
    fn append_marker(&self, epoch: Epoch) -> bool {
        match crate::vocab::ReplicaLog::append(&self.log, epoch, Bytes::new()) {
            Ok(_) => true,
            Err(e) => {
                self.step(Input::LogFailed {
                    cause: format!("appending the marker of epoch {epoch}: {e}"),
                });
                false
            }
        }
    }

    /// Reads the log's tail for a replica that stopped being the primary.
    fn read_tail(&self) {
        match tail_of(&self.log, Lsn::ZERO) {
            Ok(tail) => self.step(Input::Tail(tail)),
            Err(e) => self.step(Input::LogFailed {
                cause: format!("reading the log's tail: {e}"),
            }),
        }
    }

    /// Queues log work for the reader thread; a full queue fails the work as the replica
    /// expects from a failed read (take-back: its answer; the rest: its own timeout).
    fn queue(&self, job: Action) {
        if let Err(e) = self.read_jobs.try_send(job) {
            if let Action::AppendTakenBack { link, conn, .. } = e.into_inner() {
                let why = "the node's work queue is full".to_string();
                let input = Input::TakenBack {
                    link,
                    conn,
                    result: Err(why),
                };
                // Called with the replica locked: hand the answer to the reader thread's
                // successor, the ticker.
                self.deferred.lock().push(input);
            }
        }
    }

    /// Appends a follower's replicated records; false (and the replica told) if it failed.
    /// With `more` (another frame's records follow in the same step), they are only queued and
    /// their batch `held` until the last one's write, which takes them all.
    fn append_replicated(&self, records: Bytes, more: bool, held: &mut Vec<AppendBatch>) -> bool {
        // The write starts here, on the thread that brought the records, unless the writer
        // thread is busy or the records are many: no hand-off to it on an idle follower,
        // while a catch-up's chunks still overlap their writes.
        let appended = if more {
            self.log.append_replicated_before_more(records)
        } else {
            (self.log).append_replicated_here(records, WRITE_HERE_MAX_BYTES)
        };
        match appended {
            Ok(batch) if more => {
                held.push(batch);
                true
            }
            Ok(batch) => {
                // The held batches' wake is paid now, if this write did not take them.
                drop(batch);
                held.clear();
                true
            }
            Err(e) => {
                let applied = self
                    .replica
                    .lock()
                    .as_follower()
                    .map_or(Lsn::ZERO, |f| f.applied());
                let tail = tail_of(&self.log, applied).unwrap_or(Tail {
                    last: self.log.last_lsn(),
                    durable: self.log.durable_lsn(),
                    applied,
                    ..Tail::default()
                });
                self.step(Input::AppendFailed {
                    reason: e.to_string(),
                    tail,
                });
                false
            }
        }
    }

    /// Cuts the log after `after` if its record there has the CRC `expect_crc` (not checked
    /// at LSN 0); tells the replica either way. False if nothing was cut.
    fn truncate(&self, after: Lsn, expect_crc: u32) -> bool {
        let found = (self.log.record_meta(after)).map(|r| r.map_or(0, |(crc, _)| crc));
        let result = found.and_then(|found_crc| {
            let done = after == Lsn::ZERO || found_crc == expect_crc;
            if done {
                self.save_divergent(after)
                    .map_err(crate::vocab::StorageError::Refused)?;
                ReplicaLog::truncate_after(&self.log, after)?;
            }
            Ok((found_crc, done))
        });
        let applied = self
            .replica
            .lock()
            .as_follower()
            .map_or(Lsn::ZERO, |f| f.applied());
        let tail = tail_of(&self.log, applied).map_err(|e| e.to_string());
        let result = result.map_err(|e| e.to_string());
        match (result, tail) {
            (Ok((found_crc, done)), Ok(tail)) => {
                self.step(Input::Truncated {
                    after,
                    found_crc,
                    done,
                    tail,
                });
                done
            }
            (Err(e), _) | (_, Err(e)) => {
                let tail = Tail {
                    last: self.log.last_lsn(),
                    durable: self.log.durable_lsn(),
                    applied,
                    ..Tail::default()
                };
                self.step(Input::AppendFailed {
                    reason: format!("truncating after {after}: {e}"),
                    tail,
                });
                false
            }
        }
    }

    /// Copies the records after `after` to a side file before they are cut (nothing is cut if
    /// that fails).
    fn save_divergent(&self, after: Lsn) -> std::result::Result<(), String> {
        let Some((path, records)) = divergent::save(&self.log, self.log.dir(), after)? else {
            return Ok(());
        };
        self.counters
            .divergent_records
            .fetch_add(records, Ordering::Relaxed);
        tracing::warn!(after = %after, records, file = %path.display(), "cutting a divergent suffix; its records are kept in a side file");
        Ok(())
    }

    fn append(&self, payload: Bytes, level: DurabilityLevel) -> Result<Commit> {
        let (waiter, admission) = self.begin_append(level);
        admission.wait()?;
        self.append_one(waiter, level, payload, WriteHere::ByWaiter)
    }

    /// The record of the admitted append `waiter`: to the log, and its wait registered.
    /// With `lone`, the calling thread writes the record itself when the rule says so.
    fn append_admitted(
        &self,
        waiter: WaiterId,
        level: DurabilityLevel,
        payload: Bytes,
        lone: Option<&LoneAppends>,
    ) -> Result<Commit> {
        let how = lone.map_or(WriteHere::No, WriteHere::IfLone);
        self.append_one(waiter, level, payload, how)
    }

    fn append_one(
        &self,
        waiter: WaiterId,
        level: DurabilityLevel,
        payload: Bytes,
        how: WriteHere<'_>,
    ) -> Result<Commit> {
        let (_, commit) = self.finish_append(waiter, level, how, |here| {
            let append = if here {
                self.log.append_to_write_here(payload)?
            } else {
                self.log.append(payload)?
            };
            Ok((append.lsn(), append.into_completion()))
        })?;
        Ok(commit)
    }

    /// The batch of the admitted append `waiter`: to the log as one batch (contiguous LSNs,
    /// no other record between them, one admission and one wait); its first LSN and the wait
    /// of its last record. `lone` as for [`Inner::append_admitted`].
    fn append_batch_admitted(
        &self,
        waiter: WaiterId,
        level: DurabilityLevel,
        payloads: Vec<Bytes>,
        lone: Option<&LoneAppends>,
    ) -> Result<(Lsn, Commit)> {
        let how = lone.map_or(WriteHere::No, WriteHere::IfLone);
        self.finish_append(waiter, level, how, |here| {
            let batch = if here {
                self.log.append_batch_to_write_here(payloads)?
            } else {
                self.log.append_batch(payloads)?
            };
            Ok((batch.first_lsn(), batch.into_completion()))
        })
    }

    /// Asks the replica to admit an append at `level`; returns its number and the wait for
    /// the admission (done at once while the start gate is open). For callers that must not
    /// block on a closed gate (the client port): once admitted, [`Inner::finish_append`].
    fn begin_append(&self, level: DurabilityLevel) -> (WaiterId, Admission) {
        let (waiter, admission) = self.waiters.admission();
        self.step(Input::ClientAppend { waiter, level });
        (waiter, admission)
    }

    /// The admitted append `waiter`: runs `append` (which returns the first LSN it took and
    /// the log's completion of the last; told whether a thread other than the log's writer may
    /// write them) and registers the wait for the last LSN. Then, as `how` says, this thread
    /// writes the records itself if the log's writer is idle ([`Completion::write_here`]), or
    /// the commit's `wait()` will; else the writer thread takes them. Returns the first LSN
    /// and the wait.
    fn finish_append(
        &self,
        waiter: WaiterId,
        level: DurabilityLevel,
        how: WriteHere<'_>,
        append: impl FnOnce(bool) -> Result<(Lsn, Completion)>,
    ) -> Result<(Lsn, Commit)> {
        let (first, completion) = append(!matches!(how, WriteHere::No))?;
        let lsn = completion.lsn();
        // Kept only to write; dropped now otherwise, it wakes the writer thread if the append
        // left that to it.
        let (now, by_waiter) = match how {
            WriteHere::IfLone(l) if l.note(self.alone(first)) => (Some(completion), None),
            WriteHere::ByWaiter => (None, Some(completion)),
            WriteHere::No | WriteHere::IfLone(_) => (None, None),
        };
        let records = lsn.get() + 1 - first.get();
        self.counters.appends[level as usize].fetch_add(records, Ordering::Relaxed);
        let mut commit = self.waiters.register(waiter, level, lsn);
        if level != DurabilityLevel::Local {
            self.step(Input::Appended { waiter, level, lsn });
        }
        if let Some(mut completion) = now {
            completion.write_here();
        }
        if let Some(completion) = by_waiter {
            commit = commit.written_by_waiter(completion);
        }
        if let Some(cause) = self.failure.get() {
            // Poisoned after the append was taken: its waiter may have missed `fail_all`.
            self.fail_all(&cause.clone());
        }
        Ok((first, commit))
    }

    /// Whether an append whose first record is `first` came alone: every record before it is
    /// durable, and no other append waits for its commit (or for its admission).
    fn alone(&self, first: Lsn) -> bool {
        self.log.durable_lsn() >= first.prev() && self.waiters.len() == 0
    }

    /// The log failed: every waiting and later append fails with the cause.
    fn fail_all(&self, cause: &str) {
        let _ = self.failure.set(cause.to_string());
        self.waiters.fail_all(|| {
            Error::Log(logship_engine::Error::Poisoned {
                cause: cause.to_string(),
            })
        });
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

    fn report_applied(&self, lsn: Lsn) {
        self.step(Input::Applied(lsn));
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
        let mut r = self.replica.lock();
        if r.as_primary().is_none() {
            return;
        }
        let records = Bytes::copy_from_slice(records);
        let out = r.step(
            self.now(),
            Input::Written {
                first,
                last,
                records,
            },
        );
        self.execute(r, out);
    }

    /// The log was poisoned.
    pub(crate) fn on_failure(&self, cause: &str) {
        self.step(Input::LogFailed {
            cause: cause.to_string(),
        });
    }

    /// The log was cut after `last` (by its owner, or for a follower's session). The engine's
    /// writer calls this, as it calls [`Inner::on_batch`], before any batch after the cut.
    pub(crate) fn on_truncate(&self, last: Lsn) {
        self.step(Input::LogCut { last });
    }

    /// The log is durable up to `lsn`.
    pub(crate) fn on_durable(&self, lsn: Lsn) {
        {
            let mut d = self.durable.0.lock();
            *d = (*d).max(lsn);
        }
        self.durable.1.notify_all();
        self.step(Input::Durable(lsn));
    }

    fn on_net(&self, event: NetEvent) {
        match event {
            NetEvent::Connected { conn, .. } => self.step(Input::Connected { conn }),
            NetEvent::Accepted { conn, peer, .. } => self.on_accepted(conn, peer),
            NetEvent::ConnectFailed { conn, error } => {
                let why = format!("connect failed: {error}");
                self.deferred.lock().push(Input::Closed { conn, why });
            }
            NetEvent::Closed { conn, error } => {
                if self.peer_slots.closed(conn) {
                    return;
                }
                let why = error.map_or("connection closed by peer".to_string(), |e| {
                    format!("connection lost: {e}")
                });
                self.step(Input::Closed { conn, why });
            }
            NetEvent::Data { conn, bytes } => self.on_data(conn, bytes),
        }
    }

    /// Bytes from a peer: to the replica, unless the connection was refused at accept; an
    /// accepted connection whose session does not stream yet is closed past
    /// [`peer_slots::MAX_UNPROVEN_BYTES`].
    fn on_data(&self, conn: ConnId, bytes: BytesMut) {
        if self.peer_slots.is_refused(conn) {
            return;
        }
        let n = bytes.len();
        // A follower's acknowledgement completes commits here: the first client connection it
        // completes is answered on this thread, a wake-up sooner.
        client_port::answering_here(|| self.step(Input::Data { conn, bytes }));
        if !self.peer_slots.is_unproven(conn) {
            return;
        }
        let streams = (self.replica.lock().as_follower()).is_some_and(|f| f.is_streaming(conn));
        if self.peer_slots.received(self.now(), conn, n, streams) {
            self.transport().close(conn);
        }
    }

    /// A peer connected to the replication listener: the replica hears of it if it gets a
    /// slot ([`PeerSlots`]); otherwise it is closed at once.
    fn on_accepted(&self, conn: ConnId, peer: SocketAddr) {
        if self.peer_slots.admit(self.now(), conn, peer) {
            self.step(Input::Accepted { conn, peer });
        } else {
            self.transport().close(conn);
        }
    }

    /// Whether `msg`, queued behind an append of this executor run (`acks_before` is the count
    /// of acknowledgements sent before it), is an acknowledgement that a newer one sent on
    /// `conn` since covers. A follower that writes what it received on the reading thread makes
    /// it durable inside the append, and the durable acknowledgement it sends from there carries
    /// the written LSN too: the one its replica queued behind the append says nothing new.
    /// Heartbeats are never behind an append, so they always go.
    fn superseded_ack(&self, acks_before: Option<u64>, conn: ConnId, msg: &Msg) -> bool {
        let (
            Some(before),
            Msg::Ack {
                write,
                durable,
                applied,
            },
        ) = (acks_before, msg)
        else {
            return false;
        };
        let last = self.last_ack.lock();
        last.count > before
            && last.conn == Some(conn)
            && last.write >= *write
            && last.durable >= *durable
            && last.applied >= *applied
    }

    fn send(&self, conn: ConnId, msg: &Msg) {
        if let Msg::Ack {
            write,
            durable,
            applied,
        } = *msg
        {
            let mut last = self.last_ack.lock();
            *last = SentAck {
                count: last.count + 1,
                conn: Some(conn),
                write,
                durable,
                applied,
            };
        }
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
            t.send_parts(conn, &[Bytes::from(h), records.clone()]);
        } else {
            t.send(conn, msg.encode());
        }
    }

    /// Closes `conn` once what is queued on it has been sent (bounded by [`CLOSE_LINGER`]).
    fn close(&self, conn: ConnId, reason: &str) {
        tracing::debug!(conn = conn.0, %reason, "closing a replication connection");
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

    fn run_ticker(&self) {
        while !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(TICK);
            self.finish_closes();
            let deferred: Vec<_> = self.deferred.lock().drain(..).collect();
            for input in deferred {
                self.step(input);
            }
            if let Some(input) = self.watch_disk() {
                self.step(input);
            }
            let mut r = self.replica.lock();
            let out = r.step(self.now(), Input::Tick);
            let serving = r.serving();
            self.execute(r, out);
            self.note_gate_opened(serving);
        }
    }

    /// The disk-stall watchdog, once a tick: written records that waited past
    /// `timeouts.disk_stall_ms` for an fdatasync while the durable LSN did not move make the
    /// disk stalled; any progress ends it.
    fn watch_disk(&self) -> Option<Input> {
        let (last, durable) = (self.log.last_lsn(), self.log.durable_lsn());
        let limit = self
            .config
            .disk_stall()
            .unwrap_or(Duration::from_millis(5_000));
        let mut st = self.stall.lock();
        let (since, reported) = &mut *st;
        if last <= durable || since.is_some_and(|(_, d)| d != durable) {
            *since = None;
            if std::mem::take(reported) {
                return Some(Input::DiskStalled(false));
            }
        }
        if last <= durable {
            return None;
        }
        let (t, _) = *since.get_or_insert((Instant::now(), durable));
        if t.elapsed() >= limit && !*reported {
            *reported = true;
            tracing::warn!(durable = %durable, last = %last, waited = ?t.elapsed(), "fdatasync stalled past timeouts.disk_stall_ms");
            return Some(Input::DiskStalled(true));
        }
        None
    }

    /// The reader thread: catch-up chunks and CRC lookups for the primary's links, answers to
    /// peers' fetches, appends of taken-back records, repairs. Off the network path, in order.
    fn run_reader(&self, jobs: Receiver<Action>) {
        let mut readers: HashMap<usize, LogReader> = HashMap::new();
        while !self.stop.load(Ordering::Acquire) {
            let Ok(job) = jobs.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            if let Some(input) = self.read_job(&mut readers, job) {
                self.step(input);
            }
        }
    }

    /// Does one job of the reader thread; returns its answer for the replica.
    fn read_job(&self, readers: &mut HashMap<usize, LogReader>, job: Action) -> Option<Input> {
        let input = match job {
            Action::ReadChunk {
                link,
                conn,
                from,
                max_bytes,
            } => {
                let result = self.read_chunk(readers, link, from, max_bytes);
                Input::Chunk {
                    link,
                    conn,
                    from,
                    result,
                }
            }
            Action::LookupCrc { link, conn, lsn } => {
                let crc = crc_at(&self.log, lsn);
                Input::Crc { link, conn, crc }
            }
            Action::AppendTakenBack {
                link,
                conn,
                records,
            } => {
                let result = self.log.append_replicated(records).map(|b| {
                    let n = b.last_lsn().0 + 1 - b.first_lsn().0;
                    (self.integrity.counters.taken_back).fetch_add(n, Ordering::Relaxed);
                    b.last_lsn()
                });
                let result = result.map_err(|e| e.to_string());
                Input::TakenBack { link, conn, result }
            }
            Action::ServeFetch {
                link,
                conn,
                request,
            } => self.serve_fetch(link, conn, request),
            Action::Integrity(IntegrityAction::Repair {
                base,
                chunks,
                source,
            }) => self.apply_repair(base, &chunks, &source),
            other => {
                tracing::error!(action = ?other, "not work for the reader thread");
                return None;
            }
        };
        Some(input)
    }

    /// Reads what a peer's fetch asks for from the durable part of the log.
    fn serve_fetch(&self, link: Option<usize>, conn: ConnId, request: FetchRequest) -> Input {
        let from = request.range.0;
        let prev_crc = match request.prev_crc {
            Some(_) => crc_at(&self.log, from.prev()),
            None => None,
        };
        let bound = (request.max_bytes as usize).clamp(1, FETCH_CHUNK_BYTES as usize);
        let read = (self.log.read_chunk(from, bound, false)).map_err(|e| e.to_string());
        Input::FetchRead {
            link,
            conn,
            request,
            prev_crc,
            read,
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

/// The last acknowledgement a follower sent (see [`Inner::superseded_ack`]).
#[derive(Debug, Default)]
struct SentAck {
    /// Acknowledgements sent so far.
    count: u64,
    conn: Option<ConnId>,
    write: Lsn,
    durable: Lsn,
    applied: Lsn,
}

/// The API's error for a replica's [`WaitError`].
fn wait_error(e: WaitError, leader_hint: Option<String>) -> Error {
    match e {
        WaitError::QuorumUnavailable {
            level,
            lsn,
            waited,
            quorum,
        } => Error::QuorumUnavailable {
            level,
            lsn,
            waited,
            quorum,
        },
        WaitError::NotPrimary => Error::NotPrimary { leader_hint },
        WaitError::Poisoned { cause } => Error::Log(logship_engine::Error::Poisoned { cause }),
    }
}

/// Who writes an append's records when the log's writer idles (caller-runs).
#[derive(Clone, Copy)]
enum WriteHere<'a> {
    /// The log's writer thread, always.
    No,
    /// The calling thread (a client port's), when the port's rule says the append came alone.
    IfLone(&'a LoneAppends),
    /// The thread that waits for the commit (`Commit::wait`); an async waiter never does.
    ByWaiter,
}
