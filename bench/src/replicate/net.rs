//! The clients of a network-client case: `logship_replicator::Client` connections to the
//! primary's client port, looping on "append at `remote_durable`, wait for the answer" until
//! the stop phase. What an application outside the primary's process pays on top of the
//! in-process cases: a client-port round trip (the request to the primary, the answer back) and
//! the client port's thread hand-offs.
//!
//! Who drives the connections:
//! - a 1-client case (and every case with `drivers` 0): one OS thread per connection, in
//!   [`client_loop`], which pairs the 1-client case with disk probes;
//! - a many-client case: `drivers` threads, each polling its share of the connections with a
//!   [`ClientMux`], as pgbench's `-j 2` drives its 64 clients from two threads. 64 client
//!   threads on a 2-vCPU machine, each woken once per commit, cost the machine more than the
//!   commits they wait for, and that cost is the load generator's, not the port's.
//!
//! The phases and the check of every commit against the nodes' durable watermarks are the
//! in-process thread clients' (`clients.rs`); the answer carries the commit's LSN, and every
//! node runs in this process, so the check reads the same watermarks.
//!
//! Pipelining: a case with `pipeline` N > 1 keeps N appends in flight per connection. A thread
//! per connection sends rounds of N ([`Client::append_pipelined`]) and records each of the
//! round's records with the round's latency (from the first request sent to the last answer
//! read); a driver sends the next append as each answer comes and records each record's own
//! latency. Its name carries `pipeline=N`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use logship_engine::Lsn;
use logship_replicator::client::ClientTls;
use logship_replicator::client::{ClientMux, MuxEvent};
use logship_replicator::Client;
use serde::Serialize;

use crate::replicate::check::CommitCheck;
use crate::replicate::clients::{client_loop, measured, ClientResult, Clients, Paired, LEVEL};
use crate::replicate::commit::CaseResult;
use crate::replicate::plan::NetCaseSpec;
use crate::workload::PHASE_STOP;

/// Longest a connection may take, and longest an answer may take: above the node's commit
/// timeout (5 s, after which the answer is `quorum_unavailable`), so a slow commit fails with
/// the node's reason rather than a read timeout.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One network-client case's figures: the in-process case's, with `mode` `threads` and
/// `client_threads` the threads that drive the connections (one per connection, or the
/// case's drivers; the client port is event-driven: no thread of the primary per connection
/// with io_uring).
#[derive(Clone, Debug, Serialize)]
pub struct NetCaseResult {
    /// The figures, named `replicate::net/...`; the latency runs from sending the request to
    /// reading its answer.
    #[serde(flatten)]
    pub case: CaseResult,
    /// Appends in flight per connection.
    pub pipeline: usize,
    /// TLS on the client port and the replication link.
    pub tls: bool,
    /// CPU time of the clients' own threads (this benchmark's load generator, which a real
    /// deployment runs elsewhere) per second of the window: part of `case.cpu_cores`.
    pub client_cpu_cores: f64,
}

/// Names of the network clients' threads, which [`NetCaseResult::client_cpu_cores`] counts.
pub const CLIENT_THREAD_PREFIX: &str = "bench-net-cli-";

/// What every network client of a case shares.
#[derive(Clone, Debug)]
struct NetCtx {
    addr: SocketAddr,
    /// The client's TLS settings, for a TLS case.
    tls: Option<ClientTls>,
    phase: Arc<AtomicU8>,
    started: Arc<AtomicUsize>,
    /// The check of each commit; `None` against a port with no log (`null_port.rs`).
    check: Option<Arc<CommitCheck>>,
    /// The payloads of one round: `pipeline` copies of the record.
    window: Vec<Bytes>,
}

/// Starts `spec.clients` connections to the client port at `addr`, on a thread each or on
/// `spec.drivers` threads (see the module docs), and returns once all of them are connected and
/// running (in the current phase, which should be warm). With `paired`, the first pairs its
/// commits with probe slices (a thread of its own).
///
/// # Errors
/// When a thread cannot start, or the clients do not start in time.
pub fn spawn(
    (addr, tls): (SocketAddr, Option<&ClientTls>),
    phase: &Arc<AtomicU8>,
    spec: NetCaseSpec,
    check: Option<&Arc<CommitCheck>>,
    mut paired: Option<Paired>,
) -> anyhow::Result<Clients> {
    let payload = Bytes::from(crate::raw::pattern(spec.record_bytes));
    let ctx = NetCtx {
        addr,
        tls: tls.cloned(),
        phase: Arc::clone(phase),
        started: Arc::new(AtomicUsize::new(0)),
        check: check.cloned(),
        window: vec![payload; spec.pipeline],
    };
    let drivers = if spec.clients == 1 || paired.is_some() {
        0
    } else {
        spec.drivers.min(spec.clients)
    };
    // Each thread's connections: one each, or the clients dealt out among the drivers.
    let shares: Vec<usize> = match drivers {
        0 => vec![1; spec.clients],
        d => (0..d)
            .map(|i| spec.clients / d + usize::from(i < spec.clients % d))
            .collect(),
    };
    let mut threads = Vec::with_capacity(shares.len());
    for (i, conns) in shares.into_iter().enumerate() {
        let (client, probe) = (ctx.clone(), paired.take());
        let spawned = std::thread::Builder::new()
            .name(format!("{CLIENT_THREAD_PREFIX}{i}"))
            .spawn(move || match drivers {
                0 => run_net_client(&client, probe.as_ref()),
                _ => run_net_driver(&client, conns),
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                phase.store(PHASE_STOP, Ordering::SeqCst);
                return Err(e).context("spawning a network client thread");
            }
        }
    }
    Clients::Threads(threads).wait_started(&ctx.started, spec.clients, phase)
}

/// One connection's thread: connects, counts itself as started, then appends rounds of
/// `ctx.window` until the stop phase.
///
/// # Errors
/// When the connection fails, or an append fails or is refused (`quorum_unavailable` after the
/// commit timeout, `not_primary`).
fn run_net_client(ctx: &NetCtx, probe: Option<&Paired>) -> anyhow::Result<ClientResult> {
    let mut client = Client::connect_with(ctx.addr, ANSWER_TIMEOUT, ctx.tls.as_ref())
        .with_context(|| format!("connecting to the client port {}", ctx.addr))?;
    ctx.started.fetch_add(1, Ordering::SeqCst);
    client_loop(&ctx.phase, ctx.check.as_deref(), probe, || {
        append_window(&mut client, &ctx.window)
    })
}

/// Appends `window` at [`LEVEL`] and returns the highest LSN once every record of it holds,
/// and how many records it committed.
///
/// # Errors
/// The client's.
fn append_window(client: &mut Client, window: &[Bytes]) -> anyhow::Result<(Lsn, usize)> {
    if let [payload] = window {
        return Ok((client.append(payload.clone(), LEVEL)?, 1));
    }
    let lsns = client.append_pipelined(LEVEL, window, window.len())?;
    let last = lsns.last().copied().context("a round of no records")?;
    Ok((last, lsns.len()))
}

/// One driver thread: connects `conns` connections, counts them as started, then keeps
/// `ctx.window.len()` appends in flight on each until the stop phase, and waits for the
/// answers of those in flight at the stop (so each sent append is checked).
///
/// # Errors
/// When a connection fails, or an append fails or is refused.
fn run_net_driver(ctx: &NetCtx, conns: usize) -> anyhow::Result<ClientResult> {
    let clients = (0..conns)
        .map(|_| Client::connect_with(ctx.addr, ANSWER_TIMEOUT, ctx.tls.as_ref()))
        .collect::<Result<Vec<Client>, _>>()
        .with_context(|| format!("connecting to the client port {}", ctx.addr))?;
    let mut mux = ClientMux::new(clients, ANSWER_TIMEOUT)?;
    ctx.started.fetch_add(conns, Ordering::SeqCst);
    let payload = ctx.window.first().context("a window of no records")?;
    // The phase each append in flight was sent in, per connection, oldest first.
    let mut sent_in: Vec<VecDeque<u8>> = vec![VecDeque::new(); conns];
    let (mut result, mut events) = (ClientResult::default(), Vec::new());
    let mut stopping = false;
    while !stopping || sent_in.iter().any(|s| !s.is_empty()) {
        let phase = ctx.phase.load(Ordering::Relaxed);
        stopping = phase == PHASE_STOP;
        for (conn, sent) in sent_in.iter_mut().enumerate() {
            while !stopping && sent.len() < ctx.window.len() {
                mux.send_append(conn, payload.clone(), LEVEL)?;
                sent.push_back(phase);
            }
        }
        mux.wait(Duration::from_millis(100), &mut events)?;
        for event in events.drain(..) {
            let (conn, outcome, latency) = match event {
                MuxEvent::Answered {
                    conn,
                    outcome,
                    latency,
                    ..
                } => (conn, outcome, latency),
                MuxEvent::Failed { conn, error } => {
                    return Err(error).with_context(|| format!("connection {conn} failed"))
                }
            };
            let before = sent_in[conn]
                .pop_front()
                .context("an answer to no append")?;
            let lsn = outcome.with_context(|| format!("an append on connection {conn}"))?;
            if let Some(check) = &ctx.check {
                check.commit_resolved(lsn);
            }
            if measured(before, &ctx.phase) {
                result.commits.record(latency);
                result.busy += latency;
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicate::cluster::{Cluster, NodeSettings};
    use crate::replicate::plan::Topology;
    use crate::scratch::Scratch;
    use crate::workload::{PHASE_MEASURE, PHASE_WARM};

    const SETTINGS: NodeSettings = NodeSettings {
        scrub_bytes_per_sec: None,
        transport: "portable",
        log_backend: "portable",
    };

    fn spec(clients: usize, pipeline: usize) -> NetCaseSpec {
        driven(clients, pipeline, 0)
    }

    /// Runs `spec`'s clients on `addr` for 300 ms of measure phase, checking each commit;
    /// returns what they recorded and the clients' threads.
    fn run_checked(
        cluster: &Cluster,
        (addr, tls): (SocketAddr, Option<&ClientTls>),
        spec: NetCaseSpec,
    ) -> (ClientResult, usize) {
        let check = Arc::new(cluster.commit_check());
        let phase = Arc::new(AtomicU8::new(PHASE_WARM));
        let clients = spawn((addr, tls), &phase, spec, Some(&check), None).unwrap();
        let threads = clients.os_threads();
        phase.store(PHASE_MEASURE, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        phase.store(PHASE_STOP, Ordering::SeqCst);
        let result = clients.join(ANSWER_TIMEOUT).unwrap();
        assert!(result.commits.len() > 0);
        assert_eq!(check.take(), (0, None), "every answered commit was durable");
        (result, threads)
    }

    fn driven(clients: usize, pipeline: usize, drivers: usize) -> NetCaseSpec {
        NetCaseSpec {
            topology: Topology::OneSync,
            record_bytes: 100,
            clients,
            pipeline,
            tls: false,
            drivers,
        }
    }

    #[test]
    fn network_clients_commit_through_the_client_port_and_are_checked() {
        let scratch = Scratch::create(&std::env::temp_dir()).unwrap();
        let cluster =
            Cluster::start(scratch.path(), Topology::OneSync, SETTINGS, true, false).unwrap();
        let addr = cluster.primary().client_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let (_, threads) = run_checked(&cluster, (addr, None), spec(3, 1));
        assert_eq!(threads, 3);
        cluster.shutdown().unwrap();
        scratch.remove().unwrap();
    }

    #[test]
    fn driver_threads_keep_their_connections_appends_in_flight_and_are_checked() {
        let scratch = Scratch::create(&std::env::temp_dir()).unwrap();
        let cluster =
            Cluster::start(scratch.path(), Topology::OneSync, SETTINGS, true, false).unwrap();
        let addr = cluster.primary().client_addr().unwrap();
        let (result, threads) = run_checked(&cluster, (addr, None), driven(5, 3, 2));
        assert_eq!(threads, 2, "5 connections on 2 drivers");
        let status = cluster.primary().status();
        assert!(
            status.last_lsn >= result.commits.len(),
            "the recorded commits are in the log"
        );
        cluster.shutdown().unwrap();
        scratch.remove().unwrap();
    }

    #[test]
    fn a_tls_cluster_commits_for_tls_clients_only() {
        let scratch = Scratch::create(&std::env::temp_dir()).unwrap();
        let cluster =
            Cluster::start(scratch.path(), Topology::OneSync, SETTINGS, true, true).unwrap();
        assert_eq!(cluster.primary().status().transport, "portable+tls");
        let addr = cluster.primary().client_addr().unwrap();
        let tls = cluster
            .client_tls()
            .expect("a TLS cluster's client settings");
        let mut client = Client::connect_with(addr, ANSWER_TIMEOUT, Some(tls)).unwrap();
        let (lsn, n) = append_window(&mut client, &[Bytes::from_static(b"over TLS")]).unwrap();
        assert_eq!(n, 1);
        assert!(cluster.primary().wait_durable(lsn, ANSWER_TIMEOUT) >= lsn);
        let plain = Client::connect(addr, ANSWER_TIMEOUT).and_then(|mut c| c.status());
        assert!(plain.is_err(), "a plaintext client is refused");
        drop(client);
        // Driven connections run TLS on non-blocking sockets.
        let spec = NetCaseSpec {
            tls: true,
            ..driven(4, 16, 2)
        };
        run_checked(&cluster, (addr, Some(tls)), spec);
        cluster.shutdown().unwrap();
        scratch.remove().unwrap();
    }

    #[test]
    fn a_pipelined_round_commits_its_whole_window() {
        let scratch = Scratch::create(&std::env::temp_dir()).unwrap();
        let cluster =
            Cluster::start(scratch.path(), Topology::None, SETTINGS, true, false).unwrap();
        let addr = cluster.primary().client_addr().unwrap();
        let mut client = Client::connect(addr, ANSWER_TIMEOUT).unwrap();
        let window = vec![Bytes::from_static(b"pipelined"); 4];
        let (first, n) = append_window(&mut client, &window).unwrap();
        let (second, m) = append_window(&mut client, &window).unwrap();
        assert_eq!((n, m), (4, 4));
        assert_eq!(second.get(), first.get() + 4, "rounds of 4 contiguous LSNs");
        drop(client);
        cluster.shutdown().unwrap();
        scratch.remove().unwrap();
    }
}
