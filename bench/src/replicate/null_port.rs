//! The ceiling of a many-client network case: the same drivers, connections, frames and
//! transport as the case, against a port that answers each append at once on the transport's
//! own thread, with no log, no commit and no answering thread behind it.
//!
//! What it measures is what the machine's TCP stack and the two ends' threads can carry with
//! one append in flight per connection: each record costs a request and an answer through
//! loopback TCP (a send, a receive and a wake-up on each side), and on a small machine that
//! CPU is the same the nodes commit with. The network case's records/s over this ceiling is
//! how much of the possible the client port delivers; the ceiling over the in-process case's
//! records/s is the most the throughput target (network over in-process) can reach here.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use logship_engine::Lsn;
use logship_replicator::protocol::frame::{FrameDecoder, DEFAULT_MAX_BODY_BYTES};
use logship_replicator::protocol::{ClientStatus, Msg};
use logship_replicator::transport::{self, ConnId, NetBackend, NetEvent, NetHandler, Transport};
use serde::Serialize;
use std::sync::Mutex;

use crate::latency::Summary;
use crate::machine::{process_cpu_time, threads_cpu_time};
use crate::replicate::net::{self, ANSWER_TIMEOUT};
use crate::replicate::plan::{NetCaseSpec, ReplicatePlan, Topology, MANY_CLIENTS, RECORD_SIZES};
use crate::workload::{PHASE_MEASURE, PHASE_STOP, PHASE_WARM};

/// One null-port ceiling.
#[derive(Clone, Debug, Serialize)]
pub struct PortCeiling {
    /// `raw::null_port/size=100,clients=64`.
    pub name: String,
    /// Payload bytes per record.
    pub record_bytes: usize,
    /// Connections, one append in flight each.
    pub clients: usize,
    /// The transport the port ran on (the client port's).
    pub transport: &'static str,
    /// Answers per second.
    pub records_per_s: f64,
    /// From sending an append to reading its answer.
    pub latency: Summary,
    /// CPU time of the whole process per second of the window: the clients and the port.
    pub cpu_cores: f64,
    /// The clients' threads' share of it.
    pub client_cpu_cores: f64,
}

/// The port's handler: a frame decoder per connection; every append is answered at once.
struct Answerer {
    transport: OnceLock<Arc<dyn Transport>>,
    decoders: Mutex<HashMap<ConnId, FrameDecoder>>,
    next_lsn: AtomicU64,
}

impl Answerer {
    /// The answers to the whole frames of `bytes`; `None` when a frame is malformed or not an
    /// append (the connection is then closed).
    fn answers(&self, conn: ConnId, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut decoders = self.decoders.lock().ok()?;
        let decoder = decoders
            .entry(conn)
            .or_insert_with(|| FrameDecoder::new(DEFAULT_MAX_BODY_BYTES));
        decoder.push(bytes);
        let mut out = Vec::new();
        while let Some(frame) = decoder.next_frame().ok()? {
            let Ok(Msg::AppendRequest { id, .. }) = Msg::decode(&frame) else {
                return None;
            };
            let lsn = Lsn(self.next_lsn.fetch_add(1, Ordering::Relaxed) + 1);
            let answer = Msg::AppendResponse {
                id,
                status: ClientStatus::Ok,
                lsn,
                message: String::new(),
            };
            out.extend_from_slice(&answer.encode());
        }
        Some(out)
    }
}

impl NetHandler for Answerer {
    fn on_event(&self, event: NetEvent) {
        let Some(transport) = self.transport.get() else {
            return;
        };
        match event {
            NetEvent::Data { conn, bytes } => match self.answers(conn, &bytes) {
                Some(out) if !out.is_empty() => transport.send(conn, out.into()),
                Some(_) => {}
                None => transport.close(conn),
            },
            NetEvent::Closed { conn, .. } => {
                if let Ok(mut decoders) = self.decoders.lock() {
                    decoders.remove(&conn);
                }
            }
            _ => {}
        }
    }
}

/// The nodes' `node.transport` value as the client port reads it.
fn port_backend(transport: &str) -> NetBackend {
    match transport {
        "portable" => NetBackend::Portable,
        "io_uring" => NetBackend::IoUring,
        _ => NetBackend::Auto,
    }
}

/// Starts a null port on 127.0.0.1 (port 0) on `backend`, chosen as the client port chooses
/// its transport.
fn start(backend: NetBackend) -> anyhow::Result<(Arc<dyn Transport>, SocketAddr)> {
    let answerer = Arc::new(Answerer {
        transport: OnceLock::new(),
        decoders: Mutex::new(HashMap::new()),
        next_lsn: AtomicU64::new(0),
    });
    let handler: Arc<dyn NetHandler> = Arc::clone(&answerer) as Arc<dyn NetHandler>;
    let t = transport::start_uring_first(backend, handler, "null port")
        .context("starting the null port's transport")?;
    let _ = answerer.transport.set(Arc::clone(&t));
    let addr = (t.listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
        .context("the null port's listener")?;
    Ok((t, addr))
}

/// Measures the ceiling of each record size's many-client, one-in-flight network case: the
/// plan's drivers, warm-up and duration, against a null port on the client port's transport.
///
/// # Errors
/// When the port or the clients cannot start, or an answer fails.
pub fn measure(plan: &ReplicatePlan, transport: &str) -> anyhow::Result<Vec<PortCeiling>> {
    let (t, addr) = start(port_backend(transport))?;
    let result = RECORD_SIZES
        .iter()
        .map(|&record_bytes| measure_one(plan, addr, record_bytes, t.name()))
        .collect();
    t.shutdown();
    result
}

fn measure_one(
    plan: &ReplicatePlan,
    addr: SocketAddr,
    record_bytes: usize,
    transport: &'static str,
) -> anyhow::Result<PortCeiling> {
    let spec = NetCaseSpec {
        topology: Topology::None,
        record_bytes,
        clients: MANY_CLIENTS,
        pipeline: 1,
        tls: false,
        drivers: plan.net_drivers,
    };
    let phase = Arc::new(AtomicU8::new(PHASE_WARM));
    let clients = net::spawn((addr, None), &phase, spec, None, None)?;
    std::thread::sleep(plan.case_warm_up);
    let (start, cpu_before) = (Instant::now(), process_cpu_time());
    let client_cpu_before = threads_cpu_time(net::CLIENT_THREAD_PREFIX);
    phase.store(PHASE_MEASURE, Ordering::SeqCst);
    std::thread::sleep(plan.case_duration);
    // Read before the stop: a client thread's time is not counted once it has ended.
    let client_cpu = threads_cpu_time(net::CLIENT_THREAD_PREFIX).saturating_sub(client_cpu_before);
    phase.store(PHASE_STOP, Ordering::SeqCst);
    let elapsed = start.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu_before);
    let result = clients.join(ANSWER_TIMEOUT + Duration::from_secs(5))?;
    Ok(PortCeiling {
        name: format!("raw::null_port/size={record_bytes},clients={MANY_CLIENTS}"),
        record_bytes,
        clients: MANY_CLIENTS,
        transport,
        records_per_s: result.commits.len() as f64 / elapsed.as_secs_f64(),
        latency: result.commits.summary(),
        cpu_cores: cpu.as_secs_f64() / elapsed.as_secs_f64(),
        client_cpu_cores: client_cpu.as_secs_f64() / elapsed.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use logship_replicator::protocol::DurabilityLevel;
    use logship_replicator::Client;

    #[test]
    fn the_null_port_answers_every_append_in_order_and_closes_on_a_bad_frame() {
        let (t, addr) = start(NetBackend::Portable).unwrap();
        let mut client = Client::connect(addr, ANSWER_TIMEOUT).unwrap();
        let level = DurabilityLevel::RemoteDurable;
        let lsns: Vec<Lsn> = (0..3)
            .map(|_| {
                client
                    .append(bytes::Bytes::from_static(b"x"), level)
                    .unwrap()
            })
            .collect();
        assert!(lsns.windows(2).all(|w| w[0] < w[1]), "{lsns:?}");
        let status = client.status();
        assert!(
            status.is_err(),
            "a request other than an append closes: {status:?}"
        );
        t.shutdown();
    }

    #[test]
    fn a_ceiling_counts_the_answers_of_its_window() {
        let mut plan = ReplicatePlan::quick(crate::replicate::plan::ClientMode::Tasks);
        plan.case_warm_up = Duration::from_millis(50);
        plan.case_duration = Duration::from_millis(200);
        let ceilings = measure(&plan, "portable").unwrap();
        assert_eq!(ceilings.len(), RECORD_SIZES.len());
        for c in &ceilings {
            assert!(c.records_per_s > 0.0, "{c:?}");
            assert_eq!(c.transport, "portable");
        }
    }
}
