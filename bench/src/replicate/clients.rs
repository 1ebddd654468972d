//! The clients of a commit case: each loops on "append at `remote_durable`, wait for the
//! commit" against the primary, as OS threads (`Commit::wait`) or as tokio tasks (`.await` on
//! the `Commit`), until the stop phase.
//!
//! Phases are the append benchmark's (`crate::workload`): warm (run, do not record), measure,
//! stop. A commit is recorded only if it both started and finished in the measure phase. A
//! failed append or commit (`QuorumUnavailable` after the commit timeout, `Closed`) ends that
//! client with the error, and the case reports it.
//!
//! A paired client (the 1-client cases) alternates [`PAIR_SLICE`] of commits with
//! [`PAIR_SLICE`] of disk probes (`probe.rs`), and then of the ideal commit (`ideal.rs`) where
//! the topology has one, so that its latency compares with the disk's and the ideal's in the
//! same moments; its rate is then over the time it spent committing.
//!
//! The thread clients' loop, [`client_loop`], is shared with the network clients (`net.rs`),
//! which differ only in how they commit.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use logship_engine::Lsn;
use logship_replicator::{DurabilityLevel, Node};

use crate::latency::Recorder;
use crate::plan::PAIR_SLICE;
use crate::replicate::check::CommitCheck;
use crate::replicate::ideal::SharedIdeal;
use crate::replicate::plan::{CaseSpec, ClientMode};
use crate::replicate::probe::DiskProbe;
use crate::workload::{PHASE_MEASURE, PHASE_STOP};

/// The durability level every commit case waits for.
pub const LEVEL: DurabilityLevel = DurabilityLevel::RemoteDurable;
/// Longest the clients may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A shared disk probe (used by one paired client at a time).
pub type SharedProbe = Arc<Mutex<DiskProbe>>;

/// What a paired client probes between its slices of commits.
#[derive(Clone, Debug)]
pub struct Paired {
    /// The probe.
    pub probe: SharedProbe,
    /// Concurrent probe streams (the cluster's node count).
    pub streams: usize,
    /// The ideal commit of the case, a slice of its own after each probe slice (for the
    /// topologies it models).
    pub ideal: Option<SharedIdeal>,
}

/// What the clients of a case measured, merged.
#[derive(Debug, Default)]
pub struct ClientResult {
    /// Latency of each recorded commit.
    pub commits: Recorder,
    /// Sum of the recorded commits' latencies: the time spent committing.
    pub busy: Duration,
    /// Latency of each recorded probe operation (paired clients only).
    pub probe: Recorder,
    /// Latency of each recorded ideal commit (paired clients only).
    pub ideal: Recorder,
}

impl ClientResult {
    fn merge(&mut self, other: &ClientResult) {
        self.commits.merge(&other.commits);
        self.busy += other.busy;
        self.probe.merge(&other.probe);
        self.ideal.merge(&other.ideal);
    }
}

/// What every client of a case shares.
#[derive(Clone, Debug)]
struct Ctx {
    node: Arc<Node>,
    phase: Arc<AtomicU8>,
    started: Arc<AtomicUsize>,
    check: Arc<CommitCheck>,
    payload: Bytes,
}

/// A case's running clients.
#[derive(Debug)]
pub enum Clients {
    /// One OS thread each.
    Threads(Vec<JoinHandle<anyhow::Result<ClientResult>>>),
    /// Tokio tasks on their own multi-thread runtime.
    Tasks {
        /// The runtime, shut down after the join.
        runtime: tokio::runtime::Runtime,
        /// Its worker threads.
        workers: usize,
        /// One per client.
        tasks: Vec<tokio::task::JoinHandle<anyhow::Result<ClientResult>>>,
    },
}

impl Clients {
    /// Starts `spec.clients` clients in `spec.mode` and returns once all of them run (in the
    /// current phase, which should be warm). With `paired`, the first thread client pairs its
    /// commits with probe slices.
    ///
    /// # Errors
    /// When a thread or the runtime cannot start, or a client fails or stalls while starting.
    pub fn spawn(
        primary: &Arc<Node>,
        phase: &Arc<AtomicU8>,
        spec: CaseSpec,
        check: &Arc<CommitCheck>,
        paired: Option<Paired>,
    ) -> anyhow::Result<Clients> {
        let ctx = Ctx {
            node: Arc::clone(primary),
            phase: Arc::clone(phase),
            started: Arc::new(AtomicUsize::new(0)),
            check: Arc::clone(check),
            payload: Bytes::from(crate::raw::pattern(spec.record_bytes)),
        };
        let clients = match spec.mode {
            ClientMode::Threads => spawn_threads(&ctx, spec.clients, paired)?,
            ClientMode::Tasks => spawn_tasks(&ctx, spec.clients)?,
        };
        clients.wait_started(&ctx.started, spec.clients, phase)
    }

    /// Returns once `expected` clients counted themselves in `started`, or one of them ended
    /// (it failed before the others started, and [`Clients::join`] says why).
    ///
    /// # Errors
    /// When they have not started within [`START_TIMEOUT`] (the phase is then set to stop).
    pub fn wait_started(
        self,
        started: &AtomicUsize,
        expected: usize,
        phase: &AtomicU8,
    ) -> anyhow::Result<Clients> {
        let deadline = Instant::now() + START_TIMEOUT;
        while started.load(Ordering::SeqCst) < expected {
            if self.any_finished() {
                break;
            }
            if Instant::now() >= deadline {
                phase.store(PHASE_STOP, Ordering::SeqCst);
                bail!("clients did not start within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(self)
    }

    /// OS threads running the clients.
    pub fn os_threads(&self) -> usize {
        match self {
            Clients::Threads(threads) => threads.len(),
            Clients::Tasks { workers, .. } => *workers,
        }
    }

    fn any_finished(&self) -> bool {
        match self {
            Clients::Threads(t) => t.iter().any(JoinHandle::is_finished),
            Clients::Tasks { tasks, .. } => tasks.iter().any(tokio::task::JoinHandle::is_finished),
        }
    }

    /// Waits (after the stop phase) up to `timeout` for every client and merges what they
    /// recorded; the first failure wins.
    ///
    /// # Errors
    /// A client's error, or clients still blocked in a commit at `timeout`.
    pub fn join(self, timeout: Duration) -> anyhow::Result<ClientResult> {
        let results = match self {
            Clients::Threads(threads) => join_threads(threads, timeout)?,
            Clients::Tasks { runtime, tasks, .. } => {
                let n = tasks.len();
                let joined = runtime.block_on(async {
                    let all = async {
                        let mut out = Vec::with_capacity(n);
                        for t in tasks {
                            out.push(t.await.map_err(|e| anyhow!("client task: {e}"))?);
                        }
                        Ok::<_, anyhow::Error>(out)
                    };
                    tokio::time::timeout(timeout, all).await
                });
                runtime.shutdown_background();
                joined.map_err(|_| {
                    anyhow!("client tasks still waiting for a commit {timeout:?} after the stop")
                })??
            }
        };
        let mut merged = ClientResult::default();
        for r in results {
            merged.merge(&r?);
        }
        Ok(merged)
    }
}

fn join_threads(
    threads: Vec<JoinHandle<anyhow::Result<ClientResult>>>,
    timeout: Duration,
) -> anyhow::Result<Vec<anyhow::Result<ClientResult>>> {
    let deadline = Instant::now() + timeout;
    while !threads.iter().all(JoinHandle::is_finished) {
        if Instant::now() >= deadline {
            let stuck = threads.iter().filter(|t| !t.is_finished()).count();
            // The stuck threads are left running: a thread cannot be cancelled.
            bail!(
                "{stuck} of {} client threads still waiting for a commit {timeout:?} after the stop",
                threads.len()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    threads
        .into_iter()
        .map(|t| t.join().map_err(|_| anyhow!("client thread panicked")))
        .collect()
}

fn spawn_threads(ctx: &Ctx, n: usize, mut paired: Option<Paired>) -> anyhow::Result<Clients> {
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let (client, probe) = (ctx.clone(), paired.take());
        let spawned = std::thread::Builder::new()
            .name(format!("bench-client-{i}"))
            .spawn(move || thread_client(&client, probe.as_ref()));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                ctx.phase.store(PHASE_STOP, Ordering::SeqCst);
                return Err(e).context("spawning a client thread");
            }
        }
    }
    Ok(Clients::Threads(threads))
}

fn spawn_tasks(ctx: &Ctx, n: usize) -> anyhow::Result<Clients> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("bench-client-worker")
        .enable_time()
        .build()
        .context("starting the tokio runtime")?;
    let tasks = (0..n)
        .map(|_| runtime.spawn(task_client(ctx.clone())))
        .collect();
    Ok(Clients::Tasks {
        runtime,
        workers,
        tasks,
    })
}

/// Whether a commit that began in phase `before` and ends now counts.
pub fn measured(before: u8, phase: &AtomicU8) -> bool {
    before == PHASE_MEASURE && phase.load(Ordering::Relaxed) == PHASE_MEASURE
}

/// A thread client: `append` + `Commit::wait`, until the stop phase; with `probe`, in
/// [`PAIR_SLICE`]s alternating with probe slices.
fn thread_client(ctx: &Ctx, probe: Option<&Paired>) -> anyhow::Result<ClientResult> {
    ctx.started.fetch_add(1, Ordering::SeqCst);
    client_loop(&ctx.phase, Some(&ctx.check), probe, || {
        let lsn = (ctx.node.append(ctx.payload.clone(), LEVEL))
            .and_then(logship_replicator::Commit::wait)?;
        Ok((lsn, 1))
    })
}

/// The loop of every thread client, in-process or over the network: `commit` until the stop
/// phase; with `probe`, in [`PAIR_SLICE`]s alternating with probe slices.
///
/// `commit` is one round: it appends one or more records (more once a connection keeps several
/// in flight), waits until all of them are committed, and returns the highest LSN and how many
/// records the round committed. Each of those records is recorded with the round's latency
/// (exact for a round of one), and the highest LSN is checked (the durable watermarks only
/// rise, so it covers the round's other records).
///
/// # Errors
/// The first failed round's, or a probe's.
pub fn client_loop(
    phase: &AtomicU8,
    check: Option<&CommitCheck>,
    probe: Option<&Paired>,
    mut commit: impl FnMut() -> anyhow::Result<(Lsn, usize)>,
) -> anyhow::Result<ClientResult> {
    let mut result = ClientResult::default();
    let mut commits = 0u64;
    while phase.load(Ordering::Relaxed) != PHASE_STOP {
        let slice = Instant::now();
        while probe.is_none() || slice.elapsed() < PAIR_SLICE {
            let before = phase.load(Ordering::Relaxed);
            if before == PHASE_STOP {
                break;
            }
            let t0 = Instant::now();
            let (lsn, records) = commit()
                .with_context(|| format!("commit after {commits} commits of this client"))?;
            let latency = t0.elapsed();
            if let Some(check) = check {
                check.commit_resolved(lsn);
            }
            commits += records as u64;
            if measured(before, phase) {
                for _ in 0..records {
                    result.commits.record(latency);
                }
                result.busy += latency;
            }
        }
        if let Some(paired) = probe {
            let mut probe =
                (paired.probe.lock()).map_err(|_| anyhow!("the disk probe is poisoned"))?;
            probe.run(paired.streams, PAIR_SLICE, Some(phase), &mut result.probe)?;
            drop(probe);
            if let Some(ideal) = &paired.ideal {
                (ideal.lock())
                    .map_err(|_| anyhow!("the ideal commit is poisoned"))?
                    .run(PAIR_SLICE, phase, &mut result.ideal)?;
            }
        }
    }
    Ok(result)
}

/// A task client: `append` + `.await` on the `Commit`, until the stop phase.
async fn task_client(ctx: Ctx) -> anyhow::Result<ClientResult> {
    let mut result = ClientResult::default();
    ctx.started.fetch_add(1, Ordering::SeqCst);
    for commits in 0u64.. {
        let before = ctx.phase.load(Ordering::Relaxed);
        if before == PHASE_STOP {
            break;
        }
        let t0 = Instant::now();
        let done = match ctx.node.append(ctx.payload.clone(), LEVEL) {
            Ok(c) => c.await,
            Err(e) => Err(e),
        };
        let lsn = done.with_context(|| format!("commit after {commits} commits of this client"))?;
        let latency = t0.elapsed();
        ctx.check.commit_resolved(lsn);
        if measured(before, &ctx.phase) {
            result.commits.record(latency);
            result.busy += latency;
        }
    }
    Ok(result)
}
