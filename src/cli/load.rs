//! `logship load --addr HOST:PORT ...`: a load generator for a node's client port. Each client
//! is a connection with `--pipeline N` appends in flight (1 by default: send, wait, send), or
//! one `--batch M` request of M records at a time. A client runs on a thread of its own, or,
//! with `--drivers N`, the clients are dealt out among N threads that each poll their share
//! (a `ClientMux`, as pgbench's `-j`): on a machine with few cores, 64 client threads woken
//! once per commit cost more than the commits they wait for. Every acknowledged LSN is written with its
//! payload's CRC-32 to `--acked FILE` (one `LSN CRC` line each, CRC in hex), so a later check can
//! prove nothing acknowledged was lost. A record's latency runs from the send of its request to
//! its answer. Errors are counted by kind and the load goes on (reconnecting after a lost
//! connection; a client told `not_primary` first collects the answers still in flight).

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use logship::replication::client::{ClientMux, Credentials, MuxEvent};
use logship::{Bytes, Client, DurabilityLevel};
use parking_lot::Mutex;

/// Acknowledgements queued for the `--acked` writer.
const ACKED_QUEUE_CAPACITY: usize = 1 << 16;
/// Wait before reconnecting after a lost connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// An answer slower than this counts as a lost connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most appends in flight per client (the node's queue per connection).
const MAX_PIPELINE: usize = logship::replication::node::MAX_IN_FLIGHT_PER_CONNECTION;
/// Longest a driver thread waits for answers before it looks at its clients again.
const DRIVER_WAIT: Duration = Duration::from_millis(10);
/// Most records per batch request.
const MAX_BATCH: usize = logship::replication::protocol::msg::MAX_BATCH_RECORDS;

/// Arguments of `logship load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The node's client port; several, comma-separated, for a cluster that elects its
    /// primary: a client that hears `not_primary` goes to the primary named in the answer, or
    /// to the next address.
    #[arg(
        long,
        value_name = "HOST:PORT[,HOST:PORT...]",
        value_delimiter = ',',
        required = true
    )]
    pub addr: Vec<SocketAddr>,
    /// Total records per second across clients (default: as fast as acknowledgements allow).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Connections, each with `--pipeline` appends in flight.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Appends each client keeps in flight on its connection (1 to 1024): it sends the next as
    /// soon as one is answered. 1 sends one append and waits for its answer.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Records per append request (1 to 4096), sent as one batch request, one request at a
    /// time per client; 1 sends ordinary appends. Not with `--pipeline` above 1.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Threads that drive the clients, each polling its share of the connections (as
    /// pgbench's `-j`); 0: a thread per client. Not with `--batch` above 1.
    #[arg(long, default_value_t = 0)]
    pub drivers: usize,
    /// Payload bytes per record (at least 16).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Durability level to wait for: local, remote_write, remote_durable, remote_applied.
    #[arg(long, default_value = "remote_durable")]
    pub durability: DurabilityLevel,
    /// Write `LSN CRC32` of every acknowledged record to this file.
    #[arg(long, value_name = "FILE")]
    pub acked: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Client key file for a node with `[clients]` (a `<name> <key>` or `<name> <grants>
    /// <key>` line, as `logship keygen --client` writes it); read again at every connection,
    /// so a client key rotated in the file is taken up on the next reconnect.
    #[arg(long, value_name = "FILE")]
    pub client_key: Option<PathBuf>,
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

/// Counters shared by the clients; read live by `logship demo`.
pub struct LoadStats {
    /// Acknowledged appends.
    pub acked: AtomicU64,
    /// Errors by kind.
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// Commit latency of every acknowledged append, µs.
    pub total: Mutex<Histogram<u64>>,
    /// Commit latency since the last [`LoadStats::take_window`], µs.
    pub window: Mutex<Histogram<u64>>,
    /// Ask the clients to stop.
    pub stop: AtomicBool,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

impl LoadStats {
    /// Empty counters.
    pub fn new() -> Arc<LoadStats> {
        Arc::new(LoadStats {
            acked: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            total: Mutex::new(histogram()),
            window: Mutex::new(histogram()),
            stop: AtomicBool::new(false),
        })
    }

    /// The latencies since the last call, and resets them.
    pub fn take_window(&self) -> Histogram<u64> {
        std::mem::replace(&mut *self.window.lock(), histogram())
    }

    fn error(&self, kind: &str) {
        *self.errors.lock().entry(kind.to_string()).or_default() += 1;
    }
}

/// A payload that names its client and sequence number, filled with cheap pseudo-random bytes.
fn payload(client: u64, seq: u64, size: usize) -> Bytes {
    let mut v = Vec::with_capacity(size);
    v.extend_from_slice(&client.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    let mut x = client.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_add(1);
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(size.max(16));
    Bytes::from(v)
}

/// Starts the load's threads against `addr` (a thread per client, or `--drivers` threads);
/// they run until `deadline` or `stats.stop`.
pub fn start_clients(
    args: &LoadArgs,
    deadline: Instant,
    stats: &Arc<LoadStats>,
    acked: Option<crossbeam_channel::Sender<(u64, u32)>>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let interval = args
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(args.clients as f64 * args.batch as f64 / r));
    let tls = Arc::new(args.tls.client_tls()?);
    let mut clients = (0..args.clients as u64).map(|id| LoadClient {
        id,
        tls: Arc::clone(&tls),
        addrs: args.addr.clone(),
        addr: args.addr[id as usize % args.addr.len()],
        size: args.size,
        level: args.durability,
        interval,
        next_at: Instant::now(),
        deadline,
        stats: Arc::clone(stats),
        acked: acked.clone(),
        seq: 0,
        key_file: args.client_key.clone(),
    });
    let (pipeline, batch) = (args.pipeline, args.batch);
    let mut threads = Vec::new();
    if args.drivers > 0 {
        let drivers = args.drivers.min(args.clients);
        for d in 0..drivers {
            let share = args.clients / drivers + usize::from(d < args.clients % drivers);
            let conns: Vec<Driven> = clients.by_ref().take(share).map(Driven::new).collect();
            let t = std::thread::Builder::new()
                .name(format!("load-driver-{d}"))
                .spawn(move || drive(conns, pipeline))
                .context("spawning a load driver")?;
            threads.push(t);
        }
        return Ok(threads);
    }
    for mut client in clients {
        let t = std::thread::Builder::new()
            .name(format!("load-{}", client.id))
            .spawn(move || match (pipeline, batch) {
                (1, 1) => client.one_at_a_time(),
                (_, 1) => client.pipelined(pipeline),
                _ => client.batched(batch),
            })
            .context("spawning a load client")?;
        threads.push(t);
    }
    Ok(threads)
}

/// One load client: its connection's target, its pacing, and where its results go.
struct LoadClient {
    id: u64,
    /// TLS settings, with `--tls-ca`.
    tls: Arc<Option<logship::replication::client::ClientTls>>,
    addrs: Vec<SocketAddr>,
    /// Where it connects next. Clients start spread over the addresses; each moves on when its
    /// node is not the primary.
    addr: SocketAddr,
    size: usize,
    level: DurabilityLevel,
    /// Time between requests, with `--rate`.
    interval: Option<Duration>,
    next_at: Instant,
    deadline: Instant,
    stats: Arc<LoadStats>,
    acked: Option<crossbeam_channel::Sender<(u64, u32)>>,
    seq: u64,
    /// `--client-key`, read at each connection.
    key_file: Option<PathBuf>,
}

/// An append in flight: its payload's CRC and when it was sent.
struct Flight {
    crc: u32,
    sent: Instant,
}

impl LoadClient {
    fn running(&self) -> bool {
        Instant::now() < self.deadline && !self.stats.stop.load(Ordering::Acquire)
    }

    /// Whether `--rate` lets the next request go now; if not, the wait left.
    fn paced(&mut self) -> Option<Duration> {
        let i = self.interval?;
        let now = Instant::now();
        if self.next_at > now {
            return Some(self.next_at - now);
        }
        self.next_at = self.next_at.max(now - i) + i;
        None
    }

    /// A connection, made now if there is none; `None` (counted, after a pause) if it fails.
    fn connect<'c>(&mut self, client: &'c mut Option<Client>) -> Option<&'c mut Client> {
        if client.is_none() {
            match self.try_connect() {
                Ok(c) => *client = Some(c),
                Err(pause) => std::thread::sleep(pause),
            }
        }
        client.as_mut()
    }

    /// A new connection; on failure (counted, and the next address chosen), the pause
    /// before the next try.
    fn try_connect(&mut self) -> Result<Client, Duration> {
        // A key file being rewritten may read badly once: counted, and tried again.
        let Ok(key) = super::client_key(self.key_file.as_deref()) else {
            self.stats.error("client_key");
            return Err(RECONNECT_DELAY);
        };
        let credentials = Credentials {
            tls: (*self.tls).as_ref(),
            key: key.as_ref(),
        };
        match Client::connect_as(self.addr, Duration::from_secs(2), credentials) {
            Ok(mut c) => {
                let _ = c.set_timeout(REQUEST_TIMEOUT);
                Ok(c)
            }
            Err(_) => {
                self.stats.error("connect");
                self.addr = next_addr(&self.addrs, self.addr);
                Err(RECONNECT_DELAY)
            }
        }
    }

    /// The next payload and its CRC.
    fn next_payload(&mut self) -> (Bytes, u32) {
        self.seq += 1;
        let p = payload(self.id, self.seq, self.size);
        let crc = crc32fast::hash(&p);
        (p, crc)
    }

    /// Counts an acknowledged record and queues it for `--acked`.
    fn acknowledged(&self, lsn: u64, crc: u32, sent: Instant) {
        let us = sent.elapsed().as_micros().max(1) as u64;
        self.stats.acked.fetch_add(1, Ordering::Relaxed);
        let _ = self.stats.total.lock().record(us);
        let _ = self.stats.window.lock().record(us);
        if let Some(tx) = &self.acked {
            let _ = tx.send((lsn, crc));
        }
    }

    /// Counts a failure; true when the connection is to be dropped (then `addr` is where to go,
    /// after the pause this waits).
    fn failed(&mut self, e: logship::replication::Error) -> bool {
        match self.failed_then(e) {
            Some(pause) => {
                std::thread::sleep(pause);
                true
            }
            None => false,
        }
    }

    /// Counts a failure; when the connection is to be dropped, moves `addr` to where to go
    /// and returns the pause before connecting there.
    fn failed_then(&mut self, e: logship::replication::Error) -> Option<Duration> {
        let (next, pause) = after_error(e, &self.stats, &self.addrs, self.addr)?;
        self.addr = next;
        Some(pause)
    }

    /// One append in flight: send, wait for the answer, send the next.
    fn one_at_a_time(&mut self) {
        let mut client = None;
        while self.running() {
            if let Some(wait) = self.paced() {
                std::thread::sleep(wait);
                continue;
            }
            let Some(c) = self.connect(&mut client) else {
                continue;
            };
            let (p, crc) = self.next_payload();
            let sent = Instant::now();
            match c.append(p, self.level) {
                Ok(lsn) => self.acknowledged(lsn.0, crc, sent),
                Err(e) => {
                    if self.failed(e) {
                        client = None;
                    }
                }
            }
        }
    }

    /// `window` appends in flight: a new one goes as soon as one is answered (or as `--rate`
    /// allows). After a failure that moves the client elsewhere it sends nothing more on the
    /// connection, collects what is in flight there, then reconnects.
    fn pipelined(&mut self, window: usize) {
        let mut client = None;
        let mut flights: VecDeque<Flight> = VecDeque::new();
        let mut leaving = false;
        while self.running() || !flights.is_empty() {
            let Some(c) = self.connect(&mut client) else {
                continue;
            };
            let mut wait = None;
            while !leaving && flights.len() < window && self.running() {
                wait = self.paced();
                if wait.is_some() {
                    break;
                }
                let (p, crc) = self.next_payload();
                let sent = Instant::now();
                if let Err(e) = c.send_append(p, self.level) {
                    self.failed(e);
                    (client, leaving) = (None, false);
                    flights.clear();
                    break;
                }
                flights.push_back(Flight { crc, sent });
            }
            let Some(c) = client.as_mut() else { continue };
            if flights.is_empty() {
                if let Some(w) = wait {
                    std::thread::sleep(w);
                }
                if leaving {
                    (client, leaving) = (None, false);
                }
                continue;
            }
            match c.recv_append() {
                Ok((_, outcome)) => {
                    let f = flights
                        .pop_front()
                        .expect("an answer comes for an append in flight");
                    match outcome {
                        Ok(lsn) => self.acknowledged(lsn.0, f.crc, f.sent),
                        Err(e) => leaving |= self.failed(e),
                    }
                }
                Err(e) => {
                    self.failed(e);
                    (client, leaving) = (None, false);
                    flights.clear();
                }
            }
        }
    }

    /// One batch request of `batch` records at a time.
    fn batched(&mut self, batch: usize) {
        let mut client = None;
        while self.running() {
            if let Some(wait) = self.paced() {
                std::thread::sleep(wait);
                continue;
            }
            let Some(c) = self.connect(&mut client) else {
                continue;
            };
            let (mut payloads, mut crcs) = (Vec::with_capacity(batch), Vec::with_capacity(batch));
            for _ in 0..batch {
                self.seq += 1;
                let p = payload(self.id, self.seq, self.size);
                crcs.push(crc32fast::hash(&p));
                payloads.push(p);
            }
            let sent = Instant::now();
            match c.append_batch(self.level, &payloads) {
                Ok((first, _)) => {
                    for (i, crc) in crcs.into_iter().enumerate() {
                        self.acknowledged(first.0 + i as u64, crc, sent);
                    }
                }
                Err(e) => {
                    if self.failed(e) {
                        client = None;
                    }
                }
            }
        }
    }
}

/// Counts a failed append; returns where to connect next when the connection is to be
/// dropped (the primary a `not_primary` answer names, or the next address), and the pause
/// before.
fn after_error(
    e: logship::replication::Error,
    stats: &LoadStats,
    addrs: &[SocketAddr],
    addr: SocketAddr,
) -> Option<(SocketAddr, Duration)> {
    match e {
        logship::replication::Error::NotPrimary { leader_hint } => {
            stats.error("not_primary");
            match leader_hint.and_then(|h| h.parse().ok()) {
                Some(hinted) => Some((hinted, Duration::ZERO)),
                None => Some((next_addr(addrs, addr), RECONNECT_DELAY)),
            }
        }
        logship::replication::Error::Remote { status, .. } => {
            stats.error(&status);
            None
        }
        _ => {
            stats.error("connection");
            Some((next_addr(addrs, addr), RECONNECT_DELAY))
        }
    }
}

/// One connection of a driver thread: its client, its appends in flight, whether it is leaving
/// (told `not_primary`: it collects the answers in flight, then reconnects), and when it may
/// connect again.
struct Driven {
    client: LoadClient,
    flights: VecDeque<Flight>,
    leaving: bool,
    retry_at: Instant,
}

impl Driven {
    fn new(client: LoadClient) -> Driven {
        Driven {
            client,
            flights: VecDeque::new(),
            leaving: false,
            retry_at: Instant::now(),
        }
    }

    /// Connects connection `conn` of `mux` if it is closed and may, and queues appends up to
    /// `window` in flight as `--rate` allows, shortening `wait` to the next moment it has
    /// something to do. False once it is done: the load's end, and nothing in flight.
    fn fill(
        &mut self,
        mux: &mut ClientMux,
        conn: usize,
        window: usize,
        wait: &mut Duration,
    ) -> bool {
        let running = self.client.running();
        if !mux.is_open(conn) {
            // Appends in flight on a failed connection have no answer to wait for.
            self.flights.clear();
            if !running {
                return false;
            }
            let now = Instant::now();
            if now < self.retry_at {
                *wait = (*wait).min(self.retry_at - now);
                return true;
            }
            let connected = self.client.try_connect().map(|c| mux.replace(conn, c));
            if !matches!(connected, Ok(Ok(()))) {
                self.retry_at = now + RECONNECT_DELAY;
                return true;
            }
            self.leaving = false;
        }
        if self.leaving {
            if self.flights.is_empty() {
                mux.close(conn);
            }
            return true;
        }
        while running && self.flights.len() < window {
            if let Some(w) = self.client.paced() {
                *wait = (*wait).min(w);
                break;
            }
            let (p, crc) = self.client.next_payload();
            if mux.send_append(conn, p, self.client.level).is_err() {
                self.client.stats.error("connection");
                mux.close(conn);
                break;
            }
            let sent = Instant::now();
            self.flights.push_back(Flight { crc, sent });
        }
        running || !self.flights.is_empty()
    }

    /// Takes what `mux` reported for this connection.
    fn take(&mut self, event: MuxEvent) {
        match event {
            MuxEvent::Answered { outcome, .. } => {
                let Some(f) = self.flights.pop_front() else {
                    return;
                };
                match outcome {
                    Ok(lsn) => self.client.acknowledged(lsn.0, f.crc, f.sent),
                    Err(e) => {
                        if let Some(pause) = self.client.failed_then(e) {
                            self.leaving = true;
                            self.retry_at = Instant::now() + pause;
                        }
                    }
                }
            }
            MuxEvent::Failed { error, .. } => {
                self.flights.clear();
                let pause = self.client.failed_then(error).unwrap_or(RECONNECT_DELAY);
                self.retry_at = Instant::now() + pause;
            }
        }
    }
}

/// A driver thread: `conns` clients on one [`ClientMux`], each with `window` appends in flight,
/// until the load's end and the answers still in flight (each waited for at most
/// [`REQUEST_TIMEOUT`]).
fn drive(mut conns: Vec<Driven>, window: usize) {
    let mut mux = ClientMux::closed(conns.len(), REQUEST_TIMEOUT);
    let mut events = Vec::new();
    loop {
        let mut wait = DRIVER_WAIT;
        let mut busy = false;
        for (conn, d) in conns.iter_mut().enumerate() {
            busy |= d.fill(&mut mux, conn, window, &mut wait);
        }
        if !busy {
            return;
        }
        if mux.wait(wait, &mut events).is_err() {
            if let Some(d) = conns.first() {
                d.client.stats.error("poll");
            }
            std::thread::sleep(RECONNECT_DELAY);
        }
        for event in events.drain(..) {
            let conn = match &event {
                MuxEvent::Answered { conn, .. } | MuxEvent::Failed { conn, .. } => *conn,
            };
            if let Some(d) = conns.get_mut(conn) {
                d.take(event);
            }
        }
    }
}

/// The address after `addr` in `addrs` (the first if `addr` is not among them).
fn next_addr(addrs: &[SocketAddr], addr: SocketAddr) -> SocketAddr {
    let i = addrs.iter().position(|a| *a == addr).map_or(0, |i| i + 1);
    addrs[i % addrs.len()]
}

/// The `--acked` writer: where to send `(LSN, CRC)`, and its thread (returns the lines written).
type AckedWriter = (
    crossbeam_channel::Sender<(u64, u32)>,
    JoinHandle<anyhow::Result<u64>>,
);

/// Writes `LSN CRC` lines until the channel closes.
pub fn start_acked_writer(path: PathBuf) -> anyhow::Result<AckedWriter> {
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let (tx, rx) = crossbeam_channel::bounded::<(u64, u32)>(ACKED_QUEUE_CAPACITY);
    let t = std::thread::Builder::new()
        .name("load-acked".into())
        .spawn(move || {
            let mut w = BufWriter::new(file);
            let mut n = 0u64;
            for (lsn, crc) in rx {
                writeln!(w, "{lsn} {crc:08x}")
                    .with_context(|| format!("writing {}", path.display()))?;
                n += 1;
            }
            w.flush()?;
            w.get_ref().sync_all()?;
            Ok(n)
        })?;
    Ok((tx, t))
}

/// Refuses arguments out of their bounds, naming the flag.
fn check_args(args: &LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(
        args.size >= 16,
        "--size must be at least 16 (the payload names its client and sequence)"
    );
    anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
    anyhow::ensure!(
        (1..=MAX_PIPELINE).contains(&args.pipeline),
        "--pipeline must be 1 to {MAX_PIPELINE}"
    );
    anyhow::ensure!(
        (1..=MAX_BATCH).contains(&args.batch),
        "--batch must be 1 to {MAX_BATCH}"
    );
    anyhow::ensure!(
        args.pipeline == 1 || args.batch == 1,
        "--pipeline and --batch do not go together: choose one"
    );
    anyhow::ensure!(
        args.drivers == 0 || args.batch == 1,
        "--drivers and --batch do not go together: drivers send single appends"
    );
    Ok(())
}

/// Runs `logship load`.
pub fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    check_args(&args)?;
    // A bad key file fails here, once, rather than as a count of failed connections.
    super::client_key(args.client_key.as_deref())?;
    let (tx, writer) = match &args.acked {
        Some(p) => {
            let (tx, t) = start_acked_writer(p.clone())?;
            (Some(tx), Some(t))
        }
        None => (None, None),
    };
    let stats = LoadStats::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let threads = start_clients(&args, deadline, &stats, tx)?;
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(w) = writer {
        w.join()
            .map_err(|_| anyhow::anyhow!("the --acked writer panicked"))??;
    }
    let h = stats.total.lock().clone();
    let acked = stats.acked.load(Ordering::Relaxed);
    let errors = stats.errors.lock().clone();
    if args.json {
        let v = serde_json::json!({
            "seconds": elapsed, "clients": args.clients, "drivers": args.drivers,
            "pipeline": args.pipeline,
            "batch": args.batch, "size": args.size,
            "durability": args.durability.as_str(), "acknowledged": acked,
            "per_second": acked as f64 / elapsed, "errors": errors,
            "latency_us": { "p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99),
                            "p999": h.value_at_quantile(0.999), "max": h.max() },
        });
        println!("{v}");
    } else {
        println!(
            "load: {elapsed:.1} s, {} clients, pipeline {}, batch {}, {} B records, {}",
            args.clients,
            args.pipeline,
            args.batch,
            args.size,
            args.durability.as_str()
        );
        println!(
            "acknowledged: {acked} ({:.0} records/s)",
            acked as f64 / elapsed
        );
        println!(
            "commit latency µs: p50 {} p99 {} p99.9 {} max {}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
        let e: Vec<String> = errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "errors: {}",
            if e.is_empty() {
                "none".to_string()
            } else {
                e.join(", ")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
