//! Steered catch-up: foreground commits while an empty follower catches up, once unthrottled
//! and once with `replication.catch_up_latency_target_ms` set.
//!
//! The primary's log is filled first (as in `catch_up.rs`). A sync follower `f1` is seeded by
//! catching up from it (not measured). Then, with the primary and `f1` only, 64 in-process
//! clients commit 100 B records at `remote_durable` for a window: their p99 *alone*. Then
//! twice, on a primary restarted with `f1` (sync, the quorum) and an empty async follower `f2`,
//! the window runs from `f2`'s start until `f2` holds the filled log's last LSN durably. The
//! clients are already committing when `f2` starts (the primary was configured with it and
//! retries its link; this process holds `f2`'s port until then, bound and not listening, so the
//! primary's connects are refused and no other socket takes it), as when a replacement follower
//! joins a busy cluster. The first run is
//! unthrottled; the second sets the latency target to [`TARGET_OF_ALONE`] × the p99 alone
//! (to the microsecond), and its clients commit for one more window before `f2` starts, the
//! pacer judging them against that target with no catch-up running: the share of its control
//! intervals over the target then ([`PacerOver`]) is how often the clients' commits alone
//! would cut a paced catch-up. The figures: the clients' p99 during each catch-up over
//! their p99 alone (target [`P99_TARGET_RATIO`]), and the steered catch-up's MB/s over the
//! unthrottled one's (target [`SPEED_TARGET_RATIO`]).
//!
//! Every node writes to the same disk, so the catch-up competes with the commits' fdatasyncs
//! there as well as for CPU and the primary's reader and transport.
//!
//! What the disk alone allows is measured last: the clients once more with the primary and
//! `f1` only, while this process copies the filled log's segments into new files (no follower,
//! no network, no pacer: `new_file::copy_paced`, reading and writing as `f2` does, around the
//! page cache on `io_uring_direct`) at a fixed rate: first at [`SPEED_TARGET_RATIO`] × the
//! unthrottled catch-up's speed (the slowest catch-up (h) allows), then at half the rate before
//! while the clients' p99 is over [`P99_TARGET_RATIO`] of alone. It does so in the catch-up's
//! unthrottled grain (4 MiB reads, 1 MiB writes, an fdatasync per 4 MiB, [`RAW_COPY_STEPS`]
//! rates at most) and in a paced catch-up's, sixteen times finer (256 KiB each,
//! [`FINE_COPY_STEPS`]), and last at the steered catch-up's speed in the paced grain. Beside a
//! copy at (h)'s floor, the
//! clients' p99 over alone is what (g) comes to at the speed (h) demands when catch-up costs
//! them nothing but its reads and writes in that grain: above the bound in every grain, (g)
//! and (h) cannot both hold on this disk, whatever steers the catch-up. The fastest copy within
//! the bound is the disk's share of (h) at (g)'s bound; beside the last copy, the clients pay
//! what the steered run's reads and writes alone would cost them.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use logship_engine::io::Backend;
use logship_replicator::Node;
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::freed::settle_freed;
use crate::latency::Summary;
use crate::replicate::catch_up::{self, Fill};
use crate::replicate::check::CommitCheck;
use crate::replicate::clients::Clients;
use crate::replicate::cluster::{self, FollowerRef, NodeSettings, READY_TIMEOUT};
use crate::replicate::new_file::{self, CopyHow, Grain};
use crate::replicate::plan::{CaseSpec, ReplicatePlan, TargetFrom, Topology, MANY_CLIENTS};
use crate::replicate::run::settle;
use crate::replicate::watchdog::Watchdog;
use crate::workload::{PHASE_MEASURE, PHASE_STOP, PHASE_WARM};

/// The clients' p99 during a steered catch-up over their p99 alone, at most.
pub const P99_TARGET_RATIO: f64 = 1.5;
/// Steered catch-up MB/s over unthrottled catch-up MB/s, at least.
pub const SPEED_TARGET_RATIO: f64 = 0.5;
/// The latency target the steered run configures, as a multiple of the primary's own commit
/// p99 alone: the pacer's measure (each append, from the log taking it to `remote_durable`),
/// read while the clients run alone. The measure once started at the batch's formation and
/// left out a client's wait for the batch its append joins, so a target set from the clients'
/// p99 let the primary's grow 1.6–1.8× and the clients' with it; set from the primary's, the
/// two grow alike, and since the measure counts appends from their taking, the two are close.
/// Which p99 of the primary's is the plan's [`TargetFrom`]: by default the p99 of every commit of the window (`commit_p99_ms`), as (g)
/// takes the clients' p99 over the whole window; the median of its 400 ms stretches'
/// (`recent_commit_p99_ms`) is a quiet moment's, without the disk's own slow stretches, and a
/// target from it held the pacer over its target in 12 % of its intervals with no catch-up at
/// all. The clients' p99 stands in when the primary reported none.
pub const TARGET_OF_ALONE: f64 = 1.25;
/// The primary's target while the clients run alone: the largest the key takes, never reached;
/// configured only so that the pacer measures (no catch-up runs then).
const SAMPLING_TARGET_MS: f64 = 60_000.0;
/// The steered run's target in ms: [`TARGET_OF_ALONE`] × the p99 alone given in µs, to the
/// microsecond (the key takes fractions; in whole ms, 1.25 × 1.2 ms had to be 2 ms, 1.7 × the
/// p99 alone, which let the clients' p99 reach twice it).
fn target_of(alone_p99_us: f64, times: f64) -> f64 {
    (alone_p99_us * times).round() / 1e3
}

/// Payload bytes of the clients' records.
const RECORD_BYTES: usize = 100;
/// The seeded sync follower's node id.
const SYNC_ID: &str = "f1";
/// The catching-up follower's node id.
const EMPTY_ID: &str = "f2";
/// Longest the clients may take to finish after the stop.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Seeding `f1` may take this many catch-up timeouts (a disk shared with other work).
const SEED_TIMEOUTS: u32 = 3;
/// Raw copies at (h)'s floor and halved rates, at most, in an unthrottled catch-up's grain...
const RAW_COPY_STEPS: usize = 4;
/// ...and in the fine grain.
const FINE_COPY_STEPS: usize = 2;
/// A raw copy beside the clients lasts at most this many of the plan's windows alone (it
/// copies fewer bytes than the log holds when its rate would take longer).
const RAW_COPY_WINDOWS: u32 = 4;
/// Where the raw copies write, under the case's directory (removed after each).
const RAW_COPY_DIR: &str = "raw-copy";

/// One catch-up with the clients running.
#[derive(Clone, Debug, Serialize)]
pub struct SteeredRun {
    /// The latency target configured, ms (`None`: unthrottled).
    pub target_ms: Option<f64>,
    /// Seconds from the primary running (its start on the filled log not counted) to `f2`
    /// holding the filled log durably.
    pub catch_up_s: f64,
    /// Log bytes per second of catch-up, MB/s.
    pub mb_per_s: f64,
    /// The clients' commit latency during the catch-up.
    pub during: Summary,
    /// `during.p99_us` over the p99 alone.
    pub p99_ratio: f64,
    /// Seconds catch-up reads waited for the pacing allowance (0 unthrottled).
    pub throttled_s: f64,
    /// Catch-up chunks sent to `f2`.
    pub chunks_sent: u64,
    /// Share of the log `f2` held durably when the run ended: 1 unless a steered run reached
    /// its time limit first (a target the disk cannot meet holds it near the floor); its rate
    /// is then over the part it copied.
    pub copied_share: f64,
    /// With a target: the pacer's control intervals over it, without catch-up (the clients
    /// committing for [`ReplicatePlan::steered_alone`] before `f2` starts, the target
    /// configured) and during it.
    pub pacer_over: Option<PacerOver>,
}

/// How often the pacer found its control interval over the target (`over_intervals` of
/// `control_intervals` in its status): the share of them before catch-up starts is how often
/// the clients' commits alone would cut a paced catch-up.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PacerOver {
    /// Intervals over the target before catch-up started.
    pub before_over: u64,
    /// Control intervals before catch-up started.
    pub before: u64,
    /// Intervals over the target from then to the end of the catch-up.
    pub during_over: u64,
    /// Control intervals from then to the end of the catch-up.
    pub during: u64,
}

impl PacerOver {
    /// The share of intervals over the target before catch-up.
    pub fn before_share(&self) -> f64 {
        self.before_over as f64 / self.before.max(1) as f64
    }

    /// The share of intervals over the target during catch-up.
    pub fn during_share(&self) -> f64 {
        self.during_over as f64 / self.during.max(1) as f64
    }

    /// From the pacer's (over-target, control) counts at the catch-up's start and its end.
    fn between(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<PacerOver> {
        let ((before_over, before), (over, all)) = before.zip(after)?;
        Some(PacerOver {
            before_over,
            before,
            during_over: over.saturating_sub(before_over),
            during: all.saturating_sub(before),
        })
    }
}

/// The pacer's (over-target, control) interval counts from `node`'s status.
fn pacer_counts(node: &Node) -> Option<(u64, u64)> {
    let p = node.status().primary?.catch_up_pacing?;
    Some((p.over_intervals, p.control_intervals))
}

/// The steered catch-up's figures.
#[derive(Clone, Debug, Serialize)]
pub struct SteeredResult {
    /// `replicate::steered_catch_up/clients=64,size=100,bytes=268435456`.
    pub name: String,
    /// Bytes of the filled log as written: what `f2` copies.
    pub log_bytes: u64,
    /// The clients' commit latency with no catch-up running.
    pub alone: Summary,
    /// The primary's own commit p99 meanwhile, ms, the one the target is set from (the plan's
    /// [`TargetFrom`]).
    pub alone_primary_p99_ms: Option<f64>,
    /// Which one that is.
    pub target_from: TargetFrom,
    /// The primary's p99s alone, both ways.
    pub alone_primary: AlonePrimary,
    /// The steered run's target over that p99 (the plan's, [`TARGET_OF_ALONE`] unless set).
    pub target_of_alone: f64,
    /// The catch-up unthrottled.
    pub unthrottled: SteeredRun,
    /// The catch-up steered by the latency target.
    pub steered: SteeredRun,
    /// Steered MB/s over unthrottled MB/s.
    pub speed_ratio: f64,
    /// The clients beside raw copies of the log: in an unthrottled catch-up's grain at (h)'s floor, then
    /// at half the rate before while the p99 is over its bound (at most [`RAW_COPY_STEPS`]);
    /// the same in the fine grain (at most [`FINE_COPY_STEPS`]); last in the fine grain, a
    /// paced catch-up's, at the steered catch-up's speed.
    pub raw_copies: Vec<RawCopyBeside>,
}

impl SteeredResult {
    /// The copies at (h)'s floor, one per grain.
    pub fn floor_copies(&self) -> impl Iterator<Item = &RawCopyBeside> {
        let mut grains = Vec::new();
        self.raw_copies.iter().filter(move |c| {
            let first = !grains.contains(&c.grain);
            grains.push(c.grain);
            first
        })
    }

    /// The fastest raw copy that kept the clients' p99 within [`P99_TARGET_RATIO`] of alone,
    /// over the unthrottled catch-up's MB/s: the most of (h) this disk leaves at (g)'s bound.
    pub fn disk_share_at_bound(&self) -> Option<f64> {
        self.raw_copies
            .iter()
            .filter(|c| c.p99_ratio <= P99_TARGET_RATIO)
            .map(|c| c.share(self.unthrottled.mb_per_s))
            .reduce(f64::max)
    }
}

/// The clients' commits while the benchmark itself copies the filled log into new files at a
/// fixed rate: what the disk charges them for a catch-up of that speed.
#[derive(Clone, Debug, Serialize)]
pub struct RawCopyBeside {
    /// The sizes the copy read, wrote and synced in.
    pub grain: Grain,
    /// The rate the copy was paced to over the unthrottled catch-up's MB/s.
    pub of_unthrottled: f64,
    /// The rate the copy was paced to, MB/s.
    pub target_mb_per_s: f64,
    /// The rate it reached, MB/s.
    pub mb_per_s: f64,
    /// Bytes copied.
    pub bytes: u64,
    /// The clients' commit latency during the copy.
    pub during: Summary,
    /// `during.p99_us` over the p99 alone.
    pub p99_ratio: f64,
}

/// A paced copy's last read starts one read before its end at the rate, so a copy that kept
/// its pace reaches a little less than the rate; one that reached this much of it kept it.
const KEPT_PACE: f64 = 0.95;

impl RawCopyBeside {
    /// The rate the copy ran at over `unthrottled` MB/s: the rate it was paced to when it kept
    /// that pace, else the rate it reached.
    pub fn share(&self, unthrottled: f64) -> f64 {
        if self.mb_per_s >= self.target_mb_per_s * KEPT_PACE {
            self.of_unthrottled
        } else {
            self.mb_per_s / unthrottled
        }
    }
}

/// Runs the steered catch-up in `dir/steered-catch-up`.
///
/// # Errors
/// On any failure, or when a catch-up does not finish within `plan.catch_up_timeout`.
pub fn run(
    plan: &ReplicatePlan,
    dir: &Path,
    settings: NodeSettings,
    backend: Backend,
    watchdog: &Watchdog,
) -> anyhow::Result<SteeredResult> {
    let case_dir = dir.join("steered-catch-up");
    let (fill, _) = catch_up::fill_primary(&case_dir, plan.steered_bytes, backend, watchdog)?;
    let raw_copy = READY_TIMEOUT + plan.case_warm_up + plan.steered_alone * RAW_COPY_WINDOWS;
    watchdog.stage(
        "steered catch-up",
        READY_TIMEOUT * 8
            + plan.steered_alone
            + plan.catch_up_timeout * (SEED_TIMEOUTS * 2 + 2)
            + (raw_copy + JOIN_TIMEOUT) * (RAW_COPY_STEPS + FINE_COPY_STEPS + 1) as u32,
    );
    settle(dir);
    let result = measure(plan, &case_dir, &fill, (settings, backend));
    watchdog.idle();
    let result = result?;
    std::fs::remove_dir_all(&case_dir)
        .with_context(|| format!("removing {}", case_dir.display()))?;
    Ok(result)
}

/// Seeds `f1`, measures the clients alone, then both catch-ups, then both raw copies.
fn measure(
    plan: &ReplicatePlan,
    dir: &Path,
    fill: &Fill,
    (settings, backend): (NodeSettings, Backend),
) -> anyhow::Result<SteeredResult> {
    let sync = Arc::new(cluster::start_follower(dir, SYNC_ID, settings)?);
    let addr = sync
        .replication_addr()
        .context("f1 has no replication address")?;
    let f1 = FollowerRef {
        name: SYNC_ID,
        addr,
        sync: true,
    };
    let primary = start_primary(dir, &[f1], Some(SAMPLING_TARGET_MS), settings)?;
    eprintln!("steered catch-up: seeding the sync follower ...");
    let seeding = plan.catch_up_timeout * SEED_TIMEOUTS;
    cluster::wait_durable(&sync, fill.last, seeding).context("seeding f1")?;
    cluster::wait_streaming(&primary, READY_TIMEOUT)?;
    let (alone, alone_primary) = clients_alone(plan, &primary, &sync)?;
    shutdown(primary)?;
    eprintln!(
        "steered catch-up: clients alone p99 {:.1} us, the primary's commit p99 {:?} ms \
         (whole window), {:?} ms (median of 400 ms)",
        alone.p99_us, alone_primary.whole_ms, alone_primary.windows_median_ms
    );
    let alone_primary_p99_ms = alone_primary.get(plan.steered_target_from);
    let alone_us = alone_primary_p99_ms.map_or(alone.p99_us, |ms| ms * 1e3);
    let target_ms = target_of(alone_us, plan.steered_target_of_alone);
    let unthrottled = catch_up_run(plan, dir, fill, settings, (&sync, f1), None, &alone)?;
    let steered = catch_up_run(
        plan,
        dir,
        fill,
        settings,
        (&sync, f1),
        Some(target_ms),
        &alone,
    )?;
    let direct = backend == Backend::IoUringDirect;
    let cluster = (settings, &sync, f1);
    let runs = (&unthrottled, &steered);
    let raw_copies = raw_copies(plan, (dir, fill), cluster, direct, runs, &alone)?;
    shutdown(sync)?;
    Ok(SteeredResult {
        name: format!(
            "replicate::steered_catch_up/clients={MANY_CLIENTS},size={RECORD_BYTES},bytes={}",
            plan.steered_bytes
        ),
        log_bytes: fill.log_bytes,
        alone,
        alone_primary_p99_ms,
        target_from: plan.steered_target_from,
        alone_primary,
        target_of_alone: plan.steered_target_of_alone,
        speed_ratio: speed_ratio(&steered, &unthrottled),
        unthrottled,
        steered,
        raw_copies,
    })
}

/// The raw copies beside the clients (see the module docs): in each grain from (h)'s floor
/// down, then at the steered run's speed.
fn raw_copies(
    plan: &ReplicatePlan,
    (dir, fill): (&Path, &Fill),
    cluster: (NodeSettings, &Arc<Node>, FollowerRef<'_>),
    direct: bool,
    (unthrottled, steered): (&SteeredRun, &SteeredRun),
    alone: &Summary,
) -> anyhow::Result<Vec<RawCopyBeside>> {
    let how = |grain| CopyHow {
        uncached: direct,
        write_direct: direct,
        grain,
    };
    let mut copies = Vec::new();
    for (grain, steps) in [
        (new_file::CATCH_UP_GRAIN, RAW_COPY_STEPS),
        (new_file::FINE_GRAIN, FINE_COPY_STEPS),
    ] {
        let mut share = SPEED_TARGET_RATIO;
        for _ in 0..steps {
            let rate = (share, unthrottled.mb_per_s * share);
            let copy = raw_copy_beside(plan, dir, fill, cluster, how(grain), rate, alone)?;
            let within = copy.p99_ratio <= P99_TARGET_RATIO;
            copies.push(copy);
            if within {
                break;
            }
            share /= 2.0;
        }
    }
    let rate = (speed_ratio(steered, unthrottled), steered.mb_per_s);
    // The steered catch-up reads and writes in the paced grain.
    let how = how(new_file::FINE_GRAIN);
    copies.push(raw_copy_beside(plan, dir, fill, cluster, how, rate, alone)?);
    Ok(copies)
}

fn speed_ratio(run: &SteeredRun, unthrottled: &SteeredRun) -> f64 {
    run.mb_per_s / unthrottled.mb_per_s
}

/// The clients through the primary and `f1` while this thread copies the filled log's
/// segments into new files at `rate` MB/s (see the module docs), for at most
/// [`RAW_COPY_WINDOWS`] windows alone.
fn raw_copy_beside(
    plan: &ReplicatePlan,
    dir: &Path,
    fill: &Fill,
    (settings, sync, f1): (NodeSettings, &Arc<Node>, FollowerRef<'_>),
    how: CopyHow,
    (of_unthrottled, rate): (f64, f64),
    alone: &Summary,
) -> anyhow::Result<RawCopyBeside> {
    eprintln!(
        "steered catch-up: clients beside a raw copy at {rate:.1} MB/s \
         ({of_unthrottled:.2} of unthrottled, {} KiB reads) ...",
        how.grain.read_bytes >> 10
    );
    catch_up::report_settle_wait(settle_freed(dir));
    let longest = (plan.steered_alone * RAW_COPY_WINDOWS).as_secs_f64();
    let bytes = fill.log_bytes.min((rate * 1e6 * longest) as u64);
    let primary = start_primary(dir, &[f1], None, settings)?;
    wait_link(&primary, SYNC_ID)?;
    let (check, phase, clients) = measuring_clients(plan, &primary, sync, plan.case_warm_up)?;
    let log_dir = dir.join(cluster::PRIMARY_ID);
    let copied = new_file::copy_paced(&log_dir, &dir.join(RAW_COPY_DIR), bytes, how, rate);
    phase.store(PHASE_STOP, Ordering::SeqCst);
    let result = clients.join(JOIN_TIMEOUT);
    check_early(&check)?;
    drop(check);
    shutdown(primary)?;
    let mb_per_s = copied.context("the raw copy beside the clients")?;
    let during = result?.commits.summary();
    let copy = RawCopyBeside {
        grain: how.grain,
        of_unthrottled,
        target_mb_per_s: rate,
        mb_per_s,
        bytes,
        p99_ratio: during.p99_us / alone.p99_us,
        during,
    };
    eprintln!(
        "steered catch-up: raw copy at {mb_per_s:.0} MB/s: clients p99 {:.1} us ({:.2} x alone)",
        copy.during.p99_us, copy.p99_ratio
    );
    Ok(copy)
}

/// The clients' shape: 64 of them, 100 B, as the plan runs many clients.
fn spec(plan: &ReplicatePlan) -> CaseSpec {
    CaseSpec {
        topology: Topology::OneSyncOneAsync,
        record_bytes: RECORD_BYTES,
        clients: MANY_CLIENTS,
        mode: plan.many_client_mode,
    }
}

/// How often the primary's commit p99 is read while the clients run alone: the span it covers.
const SAMPLE_EVERY: Duration = Duration::from_millis(400);

/// The primary's own commit p99 while the clients run alone, ms.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct AlonePrimary {
    /// The p99 of all its commits (the warm-up's included): `commit_p99_ms` at the end.
    pub whole_ms: Option<f64>,
    /// The median of `recent_commit_p99_ms`, read every [`SAMPLE_EVERY`].
    pub windows_median_ms: Option<f64>,
}

impl AlonePrimary {
    /// The one `from` names.
    pub fn get(&self, from: TargetFrom) -> Option<f64> {
        match from {
            TargetFrom::Whole => self.whole_ms,
            TargetFrom::Windows => self.windows_median_ms,
        }
    }
}

/// The clients against the primary and `f1` only: warm-up, then the plan's case window; with
/// the primary's own commit p99 meanwhile.
fn clients_alone(
    plan: &ReplicatePlan,
    primary: &Arc<Node>,
    sync: &Arc<Node>,
) -> anyhow::Result<(Summary, AlonePrimary)> {
    let (check, phase, clients) = measuring_clients(plan, primary, sync, plan.case_warm_up)?;
    let end = Instant::now() + plan.steered_alone;
    let mut samples = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        std::thread::sleep(left.min(SAMPLE_EVERY));
        let pacing = primary.status().primary.and_then(|p| p.catch_up_pacing);
        samples.extend(pacing.and_then(|p| p.recent_commit_p99_ms));
    }
    let pacing = primary.status().primary.and_then(|p| p.catch_up_pacing);
    let whole_ms = pacing.and_then(|p| p.commit_p99_ms);
    phase.store(PHASE_STOP, Ordering::SeqCst);
    let result = clients.join(JOIN_TIMEOUT)?;
    check_early(&check)?;
    samples.sort_by(f64::total_cmp);
    let windows_median_ms = samples.get(samples.len() / 2).copied();
    let primary = AlonePrimary {
        whole_ms,
        windows_median_ms,
    };
    Ok((result.commits.summary(), primary))
}

/// The clients through `primary`, checked against `sync`, warmed up for `warm` and measuring.
fn measuring_clients(
    plan: &ReplicatePlan,
    primary: &Arc<Node>,
    sync: &Arc<Node>,
    warm: Duration,
) -> anyhow::Result<(Arc<CommitCheck>, Arc<AtomicU8>, Clients)> {
    let check = Arc::new(CommitCheck::new(
        Arc::clone(primary),
        vec![Arc::clone(sync)],
        1,
    ));
    let phase = Arc::new(AtomicU8::new(PHASE_WARM));
    let clients = Clients::spawn(primary, &phase, spec(plan), &check, None)?;
    std::thread::sleep(warm);
    phase.store(PHASE_MEASURE, Ordering::SeqCst);
    Ok((check, phase, clients))
}

fn check_early(check: &CommitCheck) -> anyhow::Result<()> {
    let (early, first) = check.take();
    if early > 0 {
        bail!(
            "{early} commits resolved before they were durable; first: {}",
            first.unwrap_or_default()
        );
    }
    Ok(())
}

/// One catch-up of an empty `f2` with the clients committing through `f1`: the primary starts
/// with both configured, the clients warm up while `f2` is not running yet, and the window
/// runs from `f2`'s start to `f2` holding the filled log (the catch-up is timed from its link
/// streaming).
fn catch_up_run(
    plan: &ReplicatePlan,
    dir: &Path,
    fill: &Fill,
    settings: NodeSettings,
    (sync, f1): (&Arc<Node>, FollowerRef<'_>),
    target_ms: Option<f64>,
    alone: &Summary,
) -> anyhow::Result<SteeredRun> {
    let what = target_ms.map_or("unthrottled".to_string(), |t| format!("target {t:.3} ms"));
    eprintln!("steered catch-up: {what} ...");
    let (primary, port) = primary_before_f2(dir, settings, f1, target_ms)?;
    // With a target, the clients commit for a window alone first, the pacer judging them.
    let baseline = if target_ms.is_some() {
        plan.steered_alone
    } else {
        Duration::ZERO
    };
    let (check, phase, clients) =
        measuring_clients(plan, &primary, sync, plan.case_warm_up + baseline)?;
    let before = pacer_counts(&primary);
    let empty = cluster::start_follower_on(dir, EMPTY_ID, port.listen()?, settings)?;
    let streaming = wait_link(&primary, EMPTY_ID);
    let t0 = Instant::now();
    let timeout = run_timeout(plan, target_ms);
    let durable = streaming.map(|()| empty.wait_durable(fill.last, timeout));
    let catch_up = t0.elapsed();
    phase.store(PHASE_STOP, Ordering::SeqCst);
    let result = clients.join(JOIN_TIMEOUT);
    let after = pacer_counts(&primary);
    let status = primary.status().primary;
    drop(check);
    shutdown(primary)?;
    empty.shutdown();
    let status = status.context("the primary reported no primary status")?;
    let describe = || format!("catch-up: {}", cluster::describe(&status.followers));
    let share = checked_share(fill, durable.with_context(describe)?, target_ms, timeout)
        .with_context(describe)?;
    let during = result?.commits.summary();
    let f2_status = status.followers.iter().find(|f| f.name == EMPTY_ID);
    let run = SteeredRun {
        target_ms,
        catch_up_s: catch_up.as_secs_f64(),
        mb_per_s: fill.log_bytes as f64 * share / 1e6 / catch_up.as_secs_f64(),
        p99_ratio: during.p99_us / alone.p99_us,
        during,
        throttled_s: status.catch_up_pacing.map_or(0.0, |p| p.throttled_seconds),
        chunks_sent: f2_status.map_or(0, |f| f.counters.chunks_sent),
        copied_share: share,
        pacer_over: target_ms.and(PacerOver::between(before, after)),
    };
    eprintln!(
        "steered catch-up: {what}: {:.2} s ({:.0} MB/s), clients p99 {:.1} us ({:.2} x alone)",
        run.catch_up_s, run.mb_per_s, run.during.p99_us, run.p99_ratio
    );
    Ok(run)
}

/// The primary on the filled log, streaming to `f1`, with an empty `f2` configured at a port
/// this process holds, bound and not listening yet (it is returned, for `f2` to serve).
fn primary_before_f2(
    dir: &Path,
    settings: NodeSettings,
    f1: FollowerRef<'_>,
    target_ms: Option<f64>,
) -> anyhow::Result<(Arc<Node>, HeldPort)> {
    let empty_dir = dir.join(EMPTY_ID);
    if empty_dir.exists() {
        std::fs::remove_dir_all(&empty_dir)?;
    }
    catch_up::report_settle_wait(settle_freed(dir));
    let port = HeldPort::bind()?;
    let f2 = FollowerRef {
        name: EMPTY_ID,
        addr: port.addr,
        sync: false,
    };
    let primary = start_primary(dir, &[f1, f2], target_ms, settings)?;
    wait_link(&primary, SYNC_ID)?;
    Ok((primary, port))
}

/// [`copied_share`] of a run that ended with `f2` durable to `durable`: a steered run may run out
/// of `timeout` (it is measured over the part it copied, and says so); an unthrottled one, or
/// one that copied nothing, fails.
fn checked_share(
    fill: &Fill,
    durable: logship_engine::Lsn,
    target_ms: Option<f64>,
    timeout: Duration,
) -> anyhow::Result<f64> {
    let share = copied_share(fill, durable);
    if share < 1.0 && (target_ms.is_none() || share == 0.0) {
        bail!("durable to {durable} of {} after {timeout:?}", fill.last);
    }
    if share < 1.0 {
        eprintln!(
            "steered catch-up: {:.0} % copied when its {timeout:?} ran out; its rate is over \
             that part",
            share * 100.0
        );
    }
    Ok(share)
}

/// The share of the filled log (records `last - records + 1 ..= last`, all of one size) that a
/// follower durable to `durable` holds.
fn copied_share(fill: &Fill, durable: logship_engine::Lsn) -> f64 {
    let first = (fill.last.get() + 1).saturating_sub(fill.records);
    let held = (durable.get() + 1).saturating_sub(first).min(fill.records);
    if fill.records == 0 {
        1.0
    } else {
        held as f64 / fill.records as f64
    }
}

/// Longest a catch-up may take: the plan's, and [`SEED_TIMEOUTS`] times that steered (a
/// target the disk cannot meet holds it near the floor).
fn run_timeout(plan: &ReplicatePlan, target_ms: Option<f64>) -> Duration {
    let times = if target_ms.is_some() {
        SEED_TIMEOUTS
    } else {
        1
    };
    plan.catch_up_timeout * times
}

/// A loopback port held for a follower the primary is configured with before it starts:
/// bound, so no other socket takes it meanwhile, and not listening, so the primary's connects
/// are refused until then, as by a node that is down.
struct HeldPort {
    socket: Socket,
    addr: SocketAddr,
}

impl HeldPort {
    fn bind() -> anyhow::Result<HeldPort> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .context("a loopback socket")?;
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        socket
            .bind(&any_port.into())
            .context("binding a loopback port")?;
        let addr = (socket.local_addr()?.as_socket()).context("the bound port's address")?;
        Ok(HeldPort { socket, addr })
    }

    /// Starts listening: the follower serves the returned listener.
    fn listen(self) -> anyhow::Result<TcpListener> {
        (self.socket.listen(HELD_PORT_BACKLOG))
            .with_context(|| format!("listening on {}", self.addr))?;
        Ok(self.socket.into())
    }
}

/// The held port's accept queue once it listens (a follower's peers: the primary).
const HELD_PORT_BACKLOG: i32 = 16;

/// Waits until the primary's link to `name` streams and is healthy.
fn wait_link(primary: &Node, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let followers = primary
            .status()
            .primary
            .map(|p| p.followers)
            .unwrap_or_default();
        if followers.iter().any(|f| f.name == name && f.healthy) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{name} not streaming after {READY_TIMEOUT:?}: {}",
                cluster::describe(&followers)
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Starts the primary on the filled log with these followers (the first one sync, its
/// quorum) and, with `target_ms`, catch-up steered by that latency target.
fn start_primary(
    dir: &Path,
    followers: &[FollowerRef<'_>],
    target_ms: Option<f64>,
    settings: NodeSettings,
) -> anyhow::Result<Arc<Node>> {
    let data = dir.join(cluster::PRIMARY_ID);
    let node =
        cluster::start_primary_with(dir, &data, followers, None, settings, false, target_ms)?;
    Ok(Arc::new(node))
}

fn shutdown(node: Arc<Node>) -> anyhow::Result<()> {
    match Arc::try_unwrap(node) {
        Ok(n) => {
            n.shutdown();
            Ok(())
        }
        Err(_) => bail!("a client still holds a node at shutdown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mb_per_s: f64) -> SteeredRun {
        SteeredRun {
            target_ms: None,
            catch_up_s: 1.0,
            mb_per_s,
            during: Summary::default(),
            p99_ratio: 1.0,
            throttled_s: 0.0,
            chunks_sent: 0,
            pacer_over: None,
            copied_share: 1.0,
        }
    }

    #[test]
    fn a_run_that_ran_out_of_time_counts_the_part_it_copied() {
        let fill = Fill {
            records: 400,
            last: logship_engine::Lsn(400),
            log_bytes: 400 << 12,
            written: 400 << 12,
            elapsed: Duration::ZERO,
        };
        let share = |lsn| copied_share(&fill, logship_engine::Lsn(lsn));
        assert_eq!(share(400), 1.0);
        assert_eq!(share(100), 0.25);
        assert_eq!(share(0), 0.0);
        assert_eq!(share(900), 1.0);
    }

    fn copy(grain: Grain, of_unthrottled: f64, reached: f64, p99_ratio: f64) -> RawCopyBeside {
        RawCopyBeside {
            grain,
            of_unthrottled,
            target_mb_per_s: 400.0 * of_unthrottled,
            mb_per_s: reached,
            bytes: 1 << 20,
            during: Summary::default(),
            p99_ratio,
        }
    }

    #[test]
    fn the_disks_share_is_the_fastest_copy_within_the_bound_and_the_floor_one_per_grain() {
        let (coarse, fine) = (new_file::CATCH_UP_GRAIN, new_file::FINE_GRAIN);
        let mut result = SteeredResult {
            name: String::new(),
            log_bytes: 1 << 30,
            alone: Summary::default(),
            alone_primary_p99_ms: None,
            target_from: TargetFrom::Whole,
            alone_primary: AlonePrimary::default(),
            target_of_alone: TARGET_OF_ALONE,
            unthrottled: run(400.0),
            steered: run(40.0),
            speed_ratio: 0.1,
            raw_copies: vec![
                copy(coarse, 0.5, 199.0, 4.0),
                copy(coarse, 0.25, 99.0, 2.0),
                copy(coarse, 0.125, 49.5, 1.4),
                // Paced to 200 MB/s, reached 150: it did not keep its pace.
                copy(fine, 0.5, 150.0, 1.1),
                copy(fine, 0.1, 39.9, 1.6),
            ],
        };
        let floors: Vec<f64> = result.floor_copies().map(|c| c.p99_ratio).collect();
        assert_eq!(
            floors,
            [4.0, 1.1],
            "the first copy of each grain, the floor's"
        );
        assert_eq!(result.disk_share_at_bound(), Some(150.0 / 400.0));
        result.raw_copies[3].mb_per_s = 198.0;
        assert_eq!(result.disk_share_at_bound(), Some(0.5), "kept its pace");
        result.raw_copies.retain(|c| c.p99_ratio > P99_TARGET_RATIO);
        assert_eq!(result.disk_share_at_bound(), None);
    }

    #[test]
    fn the_intervals_during_catch_up_are_those_after_its_start() {
        let o = PacerOver::between(Some((4, 33)), Some((540, 1384))).unwrap();
        assert_eq!(
            (o.before_over, o.before, o.during_over, o.during),
            (4, 33, 536, 1351)
        );
        assert!((o.before_share() - 4.0 / 33.0).abs() < 1e-12);
        assert!((o.during_share() - 536.0 / 1351.0).abs() < 1e-12);
        assert!(PacerOver::between(None, Some((1, 2))).is_none());
        assert_eq!(PacerOver::default().during_share(), 0.0);
    }

    #[test]
    fn the_target_is_a_multiple_of_the_p99_alone_to_the_microsecond() {
        assert_eq!(target_of(1_438.0, TARGET_OF_ALONE), 1.798);
        assert_eq!(target_of(7_844.0, TARGET_OF_ALONE), 9.805);
        assert_eq!(target_of(1_050.0, TARGET_OF_ALONE), 1.313);
        assert_eq!(target_of(1_050.0, 2.0), 2.1);
    }
}
