//! The clients of a network-client case: each is one OS thread with one
//! `logship_replicator::Client` connection to the primary's client port, looping on "append at
//! `remote_durable`, wait for the answer" until the stop phase. What an application outside the
//! primary's process pays on top of the in-process cases: a client-port round trip (the request
//! to the primary, the answer back) and the client port's thread hand-offs.
//!
//! The phases, the pairing of a 1-client case with disk probes, and the check of every commit
//! against the nodes' durable watermarks are the in-process thread clients' (`clients.rs`,
//! [`client_loop`]); the answer carries the commit's LSN, and every node runs in this process,
//! so the check reads the same watermarks.
//!
//! Pipelining: a case with `pipeline` N > 1 sends rounds of N appends with all N in flight
//! ([`Client::append_pipelined`]), and records each of the round's records with the round's
//! latency (from the first request sent to the last answer read); its name carries
//! `pipeline=N`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use logship_engine::Lsn;
use logship_replicator::client::ClientTls;
use logship_replicator::Client;
use serde::Serialize;

use crate::replicate::check::CommitCheck;
use crate::replicate::clients::{client_loop, ClientResult, Clients, Paired, LEVEL};
use crate::replicate::commit::CaseResult;
use crate::replicate::plan::NetCaseSpec;
use crate::workload::PHASE_STOP;

/// Longest a connection may take, and longest an answer may take: above the node's commit
/// timeout (5 s, after which the answer is `quorum_unavailable`), so a slow commit fails with
/// the node's reason rather than a read timeout.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One network-client case's figures: the in-process case's, with `mode` `threads` (one OS
/// thread per connection) and `client_threads` the connections' threads (the client port is
/// event-driven: no thread of the primary per connection with io_uring).
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
}

/// What every network client of a case shares.
#[derive(Clone, Debug)]
struct NetCtx {
    addr: SocketAddr,
    /// The client's TLS settings, for a TLS case.
    tls: Option<ClientTls>,
    phase: Arc<AtomicU8>,
    started: Arc<AtomicUsize>,
    check: Arc<CommitCheck>,
    /// The payloads of one round: `pipeline` copies of the record.
    window: Vec<Bytes>,
}

/// Starts `spec.clients` connection threads to the client port at `addr` and returns once all
/// of them are connected and running (in the current phase, which should be warm). With
/// `paired`, the first pairs its commits with probe slices.
///
/// # Errors
/// When a thread cannot start, or the clients do not start in time.
pub fn spawn(
    (addr, tls): (SocketAddr, Option<&ClientTls>),
    phase: &Arc<AtomicU8>,
    spec: NetCaseSpec,
    check: &Arc<CommitCheck>,
    mut paired: Option<Paired>,
) -> anyhow::Result<Clients> {
    let payload = Bytes::from(crate::raw::pattern(spec.record_bytes));
    let ctx = NetCtx {
        addr,
        tls: tls.cloned(),
        phase: Arc::clone(phase),
        started: Arc::new(AtomicUsize::new(0)),
        check: Arc::clone(check),
        window: vec![payload; spec.pipeline],
    };
    let mut threads = Vec::with_capacity(spec.clients);
    for i in 0..spec.clients {
        let (client, probe) = (ctx.clone(), paired.take());
        let spawned = std::thread::Builder::new()
            .name(format!("bench-net-client-{i}"))
            .spawn(move || run_net_client(&client, probe.as_ref()));
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
    client_loop(&ctx.phase, &ctx.check, probe, || {
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
        NetCaseSpec {
            topology: Topology::OneSync,
            record_bytes: 100,
            clients,
            pipeline,
            tls: false,
        }
    }

    #[test]
    fn network_clients_commit_through_the_client_port_and_are_checked() {
        let scratch = Scratch::create(&std::env::temp_dir()).unwrap();
        let cluster = Cluster::start(scratch.path(), Topology::OneSync, SETTINGS, true).unwrap();
        let addr = cluster.primary().client_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let check = Arc::new(cluster.commit_check());
        let phase = Arc::new(AtomicU8::new(PHASE_WARM));
        let clients = spawn((addr, None), &phase, spec(3, 1), &check, None).unwrap();
        assert_eq!(clients.os_threads(), 3);
        phase.store(PHASE_MEASURE, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        phase.store(PHASE_STOP, Ordering::SeqCst);
        let result = clients.join(ANSWER_TIMEOUT).unwrap();
        assert!(result.commits.len() > 0);
        assert_eq!(check.take(), (0, None));
        drop(check);
        cluster.shutdown().unwrap();
        scratch.remove().unwrap();
    }

    #[test]
    fn a_tls_cluster_commits_for_tls_clients_only() {
        let scratch = Scratch::create(&std::env::temp_dir()).unwrap();
        let cluster =
            Cluster::start_with(scratch.path(), Topology::OneSync, SETTINGS, true, true).unwrap();
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
        cluster.shutdown().unwrap();
        scratch.remove().unwrap();
    }

    #[test]
    fn a_pipelined_round_commits_its_whole_window() {
        let scratch = Scratch::create(&std::env::temp_dir()).unwrap();
        let cluster = Cluster::start(scratch.path(), Topology::None, SETTINGS, true).unwrap();
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
