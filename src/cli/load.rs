//! `logship load --addr HOST:PORT ...`: a load generator for a node's client port. Each client
//! is a connection with one append in flight; every acknowledged LSN is written with its
//! payload's CRC-32 to `--acked FILE` (one `LSN CRC` line each, CRC in hex), so a later check can
//! prove nothing acknowledged was lost. Errors are counted by kind and the load goes on
//! (reconnecting after a lost connection).

use std::collections::BTreeMap;
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
use logship::{Bytes, Client, DurabilityLevel};
use parking_lot::Mutex;

/// Acknowledgements queued for the `--acked` writer.
const ACKED_QUEUE_CAPACITY: usize = 1 << 16;
/// Wait before reconnecting after a lost connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// An answer slower than this counts as a lost connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Total appends per second across clients (default: as fast as acknowledgements allow).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Connections, each with one append in flight.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
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

/// Starts `clients` load threads against `addr`; they run until `deadline` or `stats.stop`.
pub fn start_clients(
    args: &LoadArgs,
    deadline: Instant,
    stats: &Arc<LoadStats>,
    acked: Option<crossbeam_channel::Sender<(u64, u32)>>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let interval = args
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(args.clients as f64 / r));
    let mut threads = Vec::new();
    for id in 0..args.clients as u64 {
        let (stats, acked, addrs, size, level) = (
            Arc::clone(stats),
            acked.clone(),
            args.addr.clone(),
            args.size,
            args.durability,
        );
        let t = std::thread::Builder::new()
            .name(format!("load-{id}"))
            .spawn(move || {
                client_loop(
                    id,
                    &addrs,
                    size,
                    level,
                    interval,
                    deadline,
                    &stats,
                    acked.as_ref(),
                )
            })
            .context("spawning a load client")?;
        threads.push(t);
    }
    Ok(threads)
}

#[allow(clippy::too_many_arguments)]
fn client_loop(
    id: u64,
    addrs: &[SocketAddr],
    size: usize,
    level: DurabilityLevel,
    interval: Option<Duration>,
    deadline: Instant,
    stats: &LoadStats,
    acked: Option<&crossbeam_channel::Sender<(u64, u32)>>,
) {
    let mut client = None;
    // Clients start spread over the addresses; each moves on when its node is not the primary.
    let mut addr = addrs[id as usize % addrs.len()];
    let mut next_at = Instant::now();
    let mut seq = 0u64;
    while Instant::now() < deadline && !stats.stop.load(Ordering::Acquire) {
        if let Some(i) = interval {
            let now = Instant::now();
            if next_at > now {
                std::thread::sleep(next_at - now);
            }
            next_at = next_at.max(now - i) + i;
        }
        let c = match &mut client {
            Some(c) => c,
            None => match Client::connect(addr, Duration::from_secs(2)) {
                Ok(mut c) => {
                    let _ = c.set_timeout(REQUEST_TIMEOUT);
                    client.insert(c)
                }
                Err(_) => {
                    stats.error("connect");
                    addr = next_addr(addrs, addr);
                    std::thread::sleep(RECONNECT_DELAY);
                    continue;
                }
            },
        };
        seq += 1;
        let p = payload(id, seq, size);
        let crc = crc32fast::hash(&p);
        let t0 = Instant::now();
        match c.append(p, level) {
            Ok(lsn) => {
                let us = t0.elapsed().as_micros().max(1) as u64;
                stats.acked.fetch_add(1, Ordering::Relaxed);
                let _ = stats.total.lock().record(us);
                let _ = stats.window.lock().record(us);
                if let Some(tx) = acked {
                    let _ = tx.send((lsn.0, crc));
                }
            }
            Err(e) => {
                if let Some(next) = after_error(e, stats, addrs, addr) {
                    client = None;
                    addr = next;
                }
            }
        }
    }
}

/// Counts a failed append; returns where to connect next when the connection is to be
/// dropped: the primary a `not_primary` answer names, or the next address.
fn after_error(
    e: logship::replication::Error,
    stats: &LoadStats,
    addrs: &[SocketAddr],
    addr: SocketAddr,
) -> Option<SocketAddr> {
    match e {
        logship::replication::Error::NotPrimary { leader_hint } => {
            stats.error("not_primary");
            let hinted = leader_hint.and_then(|h| h.parse().ok());
            if hinted.is_none() {
                std::thread::sleep(RECONNECT_DELAY);
            }
            Some(hinted.unwrap_or_else(|| next_addr(addrs, addr)))
        }
        logship::replication::Error::Remote { status, .. } => {
            stats.error(&status);
            None
        }
        _ => {
            stats.error("connection");
            std::thread::sleep(RECONNECT_DELAY);
            Some(next_addr(addrs, addr))
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

/// Runs `logship load`.
pub fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(
        args.size >= 16,
        "--size must be at least 16 (the payload names its client and sequence)"
    );
    anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
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
            "seconds": elapsed, "clients": args.clients, "size": args.size,
            "durability": args.durability.as_str(), "acknowledged": acked,
            "per_second": acked as f64 / elapsed, "errors": errors,
            "latency_us": { "p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99),
                            "p999": h.value_at_quantile(0.999), "max": h.max() },
        });
        println!("{v}");
    } else {
        println!(
            "load: {elapsed:.1} s, {} clients, {} B records, {}",
            args.clients,
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
