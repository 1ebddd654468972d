//! The rounds: kill the primary and time what follows, or hand over to a follower and time
//! that; and between rounds, bring the cluster back to three members at the same last LSN.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use logship_replicator::{Client, NodeStatus};
use serde::Serialize;

use super::cluster::Cluster;
use super::load::{Ack, Load};
use super::plan::{FailoverPlan, CONVERGE_BOUND, POLL_INTERVAL, ROUND_BOUND};

/// After the first commit, how long a round keeps polling for the new primary's quorum.
const QUORUM_WAIT: Duration = Duration::from_millis(500);

/// One kill of the primary. Times are milliseconds after the SIGKILL.
#[derive(Clone, Debug, Serialize)]
pub struct KillRound {
    /// The member killed.
    pub killed: String,
    /// Its epoch.
    pub old_epoch: u64,
    /// The member elected.
    pub elected: String,
    /// The new epoch.
    pub new_epoch: u64,
    /// A survivor's election counters rose (or it was campaigning).
    pub detect_ms: f64,
    /// A survivor served as primary in a newer epoch.
    pub elected_ms: f64,
    /// The new primary reported its quorum available (enough sync followers streaming and
    /// heard from); `None` if no poll saw it before the first commit's round ended.
    pub quorum_ms: Option<f64>,
    /// The client's first acknowledgement by another member than the killed one.
    pub first_commit_ms: f64,
    /// The longest time without an acknowledgement, from the last one before the kill to the
    /// first commit.
    pub append_pause_ms: f64,
    /// The longest time without an acknowledgement in the settle time before the kill, from
    /// the first acknowledgement in it (the steady state's, for comparison).
    pub gap_before_ms: f64,
    /// Pre-vote rounds the survivors began, until the round's last poll.
    pub pre_votes: u64,
    /// Elections the survivors began (pre-votes won), until the round's last poll.
    pub elections: u64,
    /// From the restart of the killed member to every member at the same last LSN (the client
    /// held meanwhile, once the restarted member answered).
    pub rejoin_ms: f64,
}

/// One planned switchover. Times are milliseconds after the promote request was sent.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchoverRound {
    /// The primary that handed over.
    pub from: String,
    /// The follower it handed over to.
    pub to: String,
    /// The new epoch.
    pub new_epoch: u64,
    /// The primary answered the promote request (it had handed over).
    pub handed_over_ms: f64,
    /// The target served as primary in a newer epoch.
    pub serving_ms: f64,
    /// The target, serving, reported its quorum available.
    pub quorum_ms: Option<f64>,
    /// The client's first acknowledgement by the target.
    pub first_commit_ms: f64,
    /// The longest time without an acknowledgement, from the last one before the request to
    /// the first commit by the target.
    pub append_pause_ms: f64,
    /// The longest time without an acknowledgement in the settle time before the request, from
    /// the first acknowledgement in it.
    pub gap_before_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What the polls of a kill round saw.
#[derive(Debug, Default)]
struct Seen {
    detect: Option<Instant>,
    elected: Option<(Instant, usize, u64)>,
    quorum: Option<Instant>,
    /// Pre-votes and elections the survivors began since the kill, as last seen.
    began: Vec<(u64, u64)>,
}

/// A survivor noticed the loss: it is campaigning, or began a pre-vote or an election since
/// `base` (its counters before the kill).
fn noticed(s: &NodeStatus, base: (u64, u64)) -> bool {
    s.election
        .as_ref()
        .is_some_and(|e| e.campaigning || e.pre_votes > base.0 || e.elections > base.1)
}

fn counters(s: Option<&NodeStatus>) -> (u64, u64) {
    s.and_then(|s| s.election.as_ref())
        .map_or((0, 0), |e| (e.pre_votes, e.elections))
}

fn serving_after(s: &NodeStatus, epoch: u64) -> bool {
    s.epoch > epoch && s.primary.as_ref().is_some_and(|p| p.serving)
}

fn quorum_available(s: &NodeStatus) -> bool {
    s.primary.as_ref().is_some_and(|p| p.quorum_available)
}

/// Kills the primary (member `p`, epoch `epoch`) at T0 (returned), having read the survivors'
/// election counters; then polls the survivors every [`POLL_INTERVAL`] until one serves in a
/// newer epoch and the client has its first commit (and, for up to [`QUORUM_WAIT`] after that,
/// until the new primary reports its quorum).
fn kill_and_watch(
    c: &mut Cluster,
    load: &Load,
    p: usize,
    epoch: u64,
) -> anyhow::Result<(Instant, Seen, Ack)> {
    let survivors: Vec<usize> = (0..c.members.len()).filter(|i| *i != p).collect();
    let base: Vec<(u64, u64)> = survivors
        .iter()
        .map(|&i| counters(c.status(i).as_ref()))
        .collect();
    let t0 = Instant::now();
    c.kill(p);
    let mut seen = Seen {
        began: vec![(0, 0); survivors.len()],
        ..Seen::default()
    };
    loop {
        let tick = Instant::now();
        for (k, &i) in survivors.iter().enumerate() {
            let Some(s) = c.status(i) else { continue };
            let now = Instant::now();
            let now_counters = counters(Some(&s));
            seen.began[k] = (
                now_counters.0.saturating_sub(base[k].0),
                now_counters.1.saturating_sub(base[k].1),
            );
            if seen.detect.is_none() && noticed(&s, base[k]) {
                seen.detect = Some(now);
            }
            if seen.elected.is_none() && serving_after(&s, epoch) {
                seen.elected = Some((now, i, s.epoch));
            }
            let winner = seen.elected.is_some_and(|e| e.1 == i);
            if seen.quorum.is_none() && winner && quorum_available(&s) {
                seen.quorum = Some(now);
            }
        }
        let first = load.first_after(t0, |n| n != p);
        if let (Some(_), Some(first)) = (seen.elected, first) {
            if seen.quorum.is_some() || first.at.elapsed() > QUORUM_WAIT {
                return Ok((t0, seen, first));
            }
        }
        if t0.elapsed() > ROUND_BOUND {
            let since = |t: Option<Instant>| t.map(|t| t - t0);
            bail!(
                "after killing {}: detect {:?}, elected {:?}, first commit {:?} within {ROUND_BOUND:?}\n{}",
                c.members[p].id,
                since(seen.detect),
                since(seen.elected.map(|e| e.0)),
                since(first.map(|a| a.at)),
                c.logs()
            );
        }
        std::thread::sleep(POLL_INTERVAL.saturating_sub(tick.elapsed()));
    }
}

/// Kills the primary and times detection, election and the first commit; restarts the killed
/// member and waits until the cluster converges.
///
/// # Errors
/// When no primary serves, or a step does not happen within its bound.
pub fn kill_round(c: &mut Cluster, load: &Load, plan: &FailoverPlan) -> anyhow::Result<KillRound> {
    let (p, old_epoch) = c.wait_primary(ROUND_BOUND)?;
    let (t0, seen, first) = kill_and_watch(c, load, p, old_epoch)?;
    let (elected_at, winner, new_epoch) = seen.elected.expect("returned once elected");
    let detect = seen.detect.unwrap_or(elected_at);
    let pause = load.longest_gap(t0, first.at);
    let before = load.longest_gap_within(t0 - Duration::from_millis(plan.settle_ms), t0);
    let restarted = Instant::now();
    c.spawn(p)?;
    let converged = converge(c, load, plan)?;
    Ok(KillRound {
        killed: c.members[p].id.clone(),
        old_epoch,
        elected: c.members[winner].id.clone(),
        new_epoch,
        detect_ms: ms(detect - t0),
        elected_ms: ms(elected_at - t0),
        quorum_ms: seen.quorum.map(|q| ms(q - t0)),
        first_commit_ms: ms(first.at - t0),
        append_pause_ms: ms(pause),
        gap_before_ms: ms(before),
        pre_votes: seen.began.iter().map(|b| b.0).sum(),
        elections: seen.began.iter().map(|b| b.1).sum(),
        rejoin_ms: ms(converged - restarted),
    })
}

/// Hands over from the primary to the next member in id order (so that every member takes its
/// turn as primary) and times the switchover, then waits until the cluster converges.
///
/// # Errors
/// When the promote request fails, or a step does not happen within its bound.
pub fn switchover_round(
    c: &mut Cluster,
    load: &Load,
    plan: &FailoverPlan,
) -> anyhow::Result<SwitchoverRound> {
    let (p, old_epoch) = c.wait_primary(ROUND_BOUND)?;
    let target = (p + 1) % c.members.len();
    let (primary_addr, target_id) = (c.members[p].client, c.members[target].id.clone());
    let t0 = Instant::now();
    let (handed, serving) = std::thread::scope(|scope| {
        let promote = scope.spawn(|| -> anyhow::Result<Instant> {
            let mut client = Client::connect(primary_addr, ROUND_BOUND)?;
            client.set_timeout(ROUND_BOUND)?;
            client.promote(&target_id)?;
            Ok(Instant::now())
        });
        let serving = poll_serving(c, target, old_epoch, t0)
            .map(|(at, epoch)| (at, epoch, poll_quorum(c, target)));
        let handed = promote.join().expect("the promote thread does not panic");
        (handed, serving)
    });
    let handed = handed.with_context(|| format!("promoting {target_id}"))?;
    let (serving, new_epoch, quorum) = serving?;
    let first = wait_first(load, t0, target).with_context(|| {
        format!(
            "no acknowledgement by {target_id} after the switchover\n{}",
            c.logs()
        )
    })?;
    let pause = load.longest_gap(t0, first.at);
    let before = load.longest_gap_within(t0 - Duration::from_millis(plan.settle_ms), t0);
    converge(c, load, plan)?;
    Ok(SwitchoverRound {
        from: c.members[p].id.clone(),
        to: target_id,
        new_epoch,
        handed_over_ms: ms(handed - t0),
        serving_ms: ms(serving - t0),
        quorum_ms: quorum.map(|q| ms(q - t0)),
        first_commit_ms: ms(first.at - t0),
        append_pause_ms: ms(pause),
        gap_before_ms: ms(before),
    })
}

/// Polls member `i` every [`POLL_INTERVAL`] until it serves in an epoch after `epoch`.
fn poll_serving(
    c: &mut Cluster,
    i: usize,
    epoch: u64,
    t0: Instant,
) -> anyhow::Result<(Instant, u64)> {
    loop {
        let tick = Instant::now();
        if let Some(s) = c.status(i).filter(|s| serving_after(s, epoch)) {
            return Ok((Instant::now(), s.epoch));
        }
        if t0.elapsed() > ROUND_BOUND {
            bail!(
                "{} did not serve as primary within {ROUND_BOUND:?}\n{}",
                c.members[i].id,
                c.logs()
            );
        }
        std::thread::sleep(POLL_INTERVAL.saturating_sub(tick.elapsed()));
    }
}

/// Polls member `i` every [`POLL_INTERVAL`] for up to [`QUORUM_WAIT`] until it reports its
/// quorum available.
fn poll_quorum(c: &mut Cluster, i: usize) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < QUORUM_WAIT {
        let tick = Instant::now();
        if c.status(i).is_some_and(|s| quorum_available(&s)) {
            return Some(Instant::now());
        }
        std::thread::sleep(POLL_INTERVAL.saturating_sub(tick.elapsed()));
    }
    None
}

/// Waits for the client's first acknowledgement by member `i` after `t0`.
fn wait_first(load: &Load, t0: Instant, i: usize) -> Option<Ack> {
    while t0.elapsed() < ROUND_BOUND {
        if let Some(a) = load.first_after(t0, |n| n == i) {
            return Some(a);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Waits until every member answers, then holds the client and waits until every member is at
/// the same last LSN, durable; lets the client go on and lets the load run for the plan's
/// settle time, and at least until it has one acknowledgement. Returns when the members were
/// at the same LSN.
///
/// # Errors
/// When that does not happen within [`CONVERGE_BOUND`], or nothing is acknowledged afterwards.
pub fn converge(c: &mut Cluster, load: &Load, plan: &FailoverPlan) -> anyhow::Result<Instant> {
    let start = Instant::now();
    while (0..c.members.len()).any(|i| c.status(i).is_none()) {
        if start.elapsed() > CONVERGE_BOUND {
            bail!(
                "a member did not answer within {CONVERGE_BOUND:?}\n{}",
                c.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    load.pause();
    let same = wait_same_lsn(c, CONVERGE_BOUND.saturating_sub(start.elapsed()));
    let converged = Instant::now();
    load.resume();
    same?;
    let acked = load.ack_count();
    std::thread::sleep(Duration::from_millis(plan.settle_ms));
    // A disk stall can hold every commit for a second or more on a shared disk: wait for one.
    while load.ack_count() == acked {
        if converged.elapsed() > ROUND_BOUND {
            bail!(
                "nothing was acknowledged in the {ROUND_BOUND:?} after the cluster converged\n{}",
                c.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if converged.elapsed() > Duration::from_millis(plan.settle_ms + 50) {
        eprintln!(
            "note: the first acknowledgement after the cluster converged took {:.0} ms",
            converged.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(converged)
}

/// Waits until every member reports the same last LSN, and that LSN durable.
///
/// # Errors
/// When that does not happen within `bound`.
pub fn wait_same_lsn(c: &mut Cluster, bound: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let lsns: Vec<Option<(u64, u64)>> = (0..c.members.len())
            .map(|i| c.status(i).map(|s| (s.last_lsn, s.durable_lsn)))
            .collect();
        let same = lsns.iter().all(|l| *l == lsns[0]);
        if same && lsns[0].is_some_and(|(last, durable)| last == durable) {
            return Ok(());
        }
        if start.elapsed() > bound {
            bail!(
                "the members did not reach the same last LSN within {bound:?} \
                 (last, durable LSN per member: {lsns:?})\n{}",
                c.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
