//! `logship-bench failover`: how long a three-member cluster that elects its primary is without
//! one after the primary is killed, and how long a planned switchover takes, with a client
//! appending at `remote_durable` throughout; and that nothing acknowledged is lost.
//!
//! The members are `logship node` processes (the `logship` binary next to this one) on
//! 127.0.0.1-3 inside a private network namespace ([`netns`]), with `ANY 1` and the nodes'
//! default timeouts written into their configs ([`plan`], [`cluster`]). One client thread
//! appends 100-byte records one at a time, following leader hints, and records the time, the
//! member and the LSN of every acknowledgement ([`load`]).
//!
//! - Kill rounds ([`rounds::kill_round`]): SIGKILL the primary at T0; poll the survivors'
//!   status every 2 ms for the first sign that one noticed (its pre-vote or election counter
//!   rose, or it campaigns) and for the first that serves as primary in a newer epoch; the
//!   first commit is the client's first acknowledgement after T0 by another member. Then
//!   restart the killed member and wait until all three hold the same last LSN.
//! - Switchover rounds ([`rounds::switchover_round`]): send `promote` for a follower to the
//!   primary and poll the follower every 2 ms until it serves; the append pause is the longest
//!   time without an acknowledgement around it.
//! - At the end ([`check`]): every acknowledged (LSN, payload CRC) must be on the final
//!   primary, once; a loss fails the run. [`report`]: the table, the targets, the JSON.

pub mod check;
pub mod cluster;
pub mod load;
pub mod netns;
pub mod plan;
pub mod report;
pub mod rounds;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub use self::plan::FailoverPlan;
pub use self::report::Report;

use self::cluster::Cluster;
use self::load::Load;
use self::plan::{CONVERGE_BOUND, ROUND_BOUND};
use self::rounds::{KillRound, SwitchoverRound};

/// Every measurement of a run.
#[derive(Debug, Default, Serialize)]
pub struct RunResult {
    /// The kill rounds that completed.
    pub kills: Vec<KillRound>,
    /// The switchover rounds that completed.
    pub switchovers: Vec<SwitchoverRound>,
    /// The end-of-run check, if the cluster could be read.
    pub verdict: Option<check::Verdict>,
    /// Errors the client saw (expected during failovers), by kind.
    pub client_errors: BTreeMap<String, u64>,
    /// Seconds the whole run took.
    pub seconds: f64,
    /// What went wrong: a round that did not complete, a check that could not run.
    pub errors: Vec<String>,
}

/// Runs the plan with the cluster's files in `dir` and `bin` ([`cluster::logship_binary`]) as
/// the nodes' program; copies the nodes' logs into `keep_logs` at the end. Must run inside the
/// private network namespace ([`netns::enter`]).
///
/// # Errors
/// When the cluster cannot be started or never elects a first primary. Failures after that
/// are collected in [`RunResult::errors`].
pub fn run(
    plan: &FailoverPlan,
    dir: &Path,
    bin: PathBuf,
    keep_logs: Option<&Path>,
) -> anyhow::Result<RunResult> {
    let start = Instant::now();
    let mut c = Cluster::start(dir, plan, bin)?;
    let (first, epoch) = c.wait_primary(ROUND_BOUND)?;
    eprintln!(
        "{} elected in epoch {epoch} after {:.2} s",
        c.members[first].id,
        start.elapsed().as_secs_f64()
    );
    let addrs = c.members.iter().map(|m| m.client).collect();
    let mut load = Load::start(addrs, plan.record_bytes)?;
    let mut result = RunResult::default();
    if let Err(e) = rounds::converge(&mut c, &load, plan) {
        result.errors.push(format!("before the first round: {e:#}"));
    }
    if result.errors.is_empty() {
        kills(&mut c, &load, plan, &mut result);
    }
    if result.errors.is_empty() {
        switchovers(&mut c, &load, plan, &mut result);
    }
    load.stop();
    result.client_errors = load.errors();
    match finish(&mut c, &load) {
        Ok(v) => result.verdict = Some(v),
        Err(e) => result.errors.push(format!("the final check: {e:#}")),
    }
    if let Some(to) = keep_logs {
        if let Err(e) = c.copy_logs(to) {
            result.errors.push(format!("keeping the logs: {e:#}"));
        }
    }
    result.seconds = start.elapsed().as_secs_f64();
    Ok(result)
}

fn kills(c: &mut Cluster, load: &Load, plan: &FailoverPlan, result: &mut RunResult) {
    for r in 0..plan.kills {
        match rounds::kill_round(c, load, plan) {
            Ok(k) => {
                eprintln!(
                    "kill {}/{}: {} killed, {} elected in epoch {}: detect {:.1} ms, elected \
                     {:.1} ms, first commit {:.1} ms; rejoined in {:.0} ms",
                    r + 1,
                    plan.kills,
                    k.killed,
                    k.elected,
                    k.new_epoch,
                    k.detect_ms,
                    k.elected_ms,
                    k.first_commit_ms,
                    k.rejoin_ms
                );
                result.kills.push(k);
            }
            Err(e) => {
                result.errors.push(format!("kill round {}: {e:#}", r + 1));
                return;
            }
        }
    }
}

fn switchovers(c: &mut Cluster, load: &Load, plan: &FailoverPlan, result: &mut RunResult) {
    for r in 0..plan.switchovers {
        match rounds::switchover_round(c, load, plan) {
            Ok(s) => {
                eprintln!(
                    "switchover {}/{}: {} -> {} in epoch {}: handed over {:.1} ms, serving \
                     {:.1} ms, append pause {:.1} ms",
                    r + 1,
                    plan.switchovers,
                    s.from,
                    s.to,
                    s.new_epoch,
                    s.handed_over_ms,
                    s.serving_ms,
                    s.append_pause_ms
                );
                result.switchovers.push(s);
            }
            Err(e) => {
                result
                    .errors
                    .push(format!("switchover round {}: {e:#}", r + 1));
                return;
            }
        }
    }
}

/// With the client stopped: waits for a primary and for every member at its last LSN, then
/// checks every acknowledgement against it.
fn finish(c: &mut Cluster, load: &Load) -> anyhow::Result<check::Verdict> {
    let (p, _) = c.wait_primary(ROUND_BOUND)?;
    rounds::wait_same_lsn(c, CONVERGE_BOUND)?;
    let v = check::check(c, p, &load.acks())?;
    eprintln!(
        "check: {} acknowledged, {} records on the final primary {}: lost {}, duplicated {}, differing on the others {}",
        v.acked, v.records, v.primary, v.lost, v.duplicated, v.differing_on_others
    );
    Ok(v)
}
