//! The `failover` report: every round, then p50 and max of each figure beside the configured
//! heartbeat interval and election timeout bounds, the two targets as ratios with PASS/FAIL,
//! and the end-of-run check. Printed as a table and serialized as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::plan::{FailoverPlan, FIRST_COMMIT_SLACK_MS, SWITCHOVER_TARGET_MS};
use super::rounds::{KillRound, SwitchoverRound};
use super::RunResult;
use crate::machine::{self, Machine};
use crate::report::{utc_now, Target};

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The command line that produced it.
    pub command: String,
    /// UTC time at the end of the run, ISO 8601.
    pub date: String,
    /// The plan that ran.
    pub plan: FailoverPlan,
    /// The machine and directory.
    pub machine: Machine,
    /// Peak resident set size of the benchmark process (not the nodes'), KiB.
    pub peak_rss_kib: u64,
    /// Every measurement.
    pub run: RunResult,
    /// p50 and max of each figure.
    pub summary: Vec<Stat>,
    /// Time to the first commit after a kill, and switchover time, against their bounds.
    pub targets: Vec<Target>,
}

/// p50 and max of one figure over the rounds.
#[derive(Clone, Debug, Serialize)]
pub struct Stat {
    /// What is measured.
    pub name: String,
    /// Rounds.
    pub count: usize,
    /// Median (nearest rank), milliseconds.
    pub p50_ms: f64,
    /// Maximum, milliseconds.
    pub max_ms: f64,
    /// The configured timeouts or the bound it is read against.
    pub beside: String,
}

/// Nearest-rank p50 and the max of `values` (NaN when empty).
fn stat(name: &str, mut values: Vec<f64>, beside: &str) -> Stat {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Stat {
        name: name.to_string(),
        count: n,
        p50_ms: if n == 0 {
            f64::NAN
        } else {
            values[n.div_ceil(2) - 1]
        },
        max_ms: values.last().copied().unwrap_or(f64::NAN),
        beside: beside.to_string(),
    }
}

/// A figure of the summary: its name, how to read it from a round, what to print beside it.
type Figure<'a, R> = (&'a str, fn(&R) -> Option<f64>, &'a str);

fn summary(plan: &FailoverPlan, run: &RunResult) -> Vec<Stat> {
    let timeouts = format!(
        "election timeout {}..{} ms, heartbeat {} ms",
        plan.election_timeout_min_ms, plan.election_timeout_max_ms, plan.heartbeat_interval_ms
    );
    let bound = format!("bound {:.0} ms", plan.first_commit_bound_ms());
    let target = format!("target {SWITCHOVER_TARGET_MS:.0} ms");
    let steady = "steady state, for comparison";
    let kill: [Figure<'_, KillRound>; 7] = [
        ("kill: detect", |r| Some(r.detect_ms), &timeouts),
        ("kill: elected", |r| Some(r.elected_ms), &timeouts),
        ("kill: quorum", |r| r.quorum_ms, ""),
        ("kill: first commit", |r| Some(r.first_commit_ms), &bound),
        ("kill: append pause", |r| Some(r.append_pause_ms), ""),
        ("kill: gap before", |r| Some(r.gap_before_ms), steady),
        (
            "kill: rejoin",
            |r| Some(r.rejoin_ms),
            "restart to same last LSN",
        ),
    ];
    let switch: [Figure<'_, SwitchoverRound>; 6] = [
        ("switchover: handed over", |r| Some(r.handed_over_ms), ""),
        ("switchover: serving", |r| Some(r.serving_ms), &target),
        ("switchover: quorum", |r| r.quorum_ms, ""),
        ("switchover: first commit", |r| Some(r.first_commit_ms), ""),
        ("switchover: append pause", |r| Some(r.append_pause_ms), ""),
        ("switchover: gap before", |r| Some(r.gap_before_ms), steady),
    ];
    let kills = kill
        .iter()
        .map(|(name, f, beside)| stat(name, run.kills.iter().filter_map(f).collect(), beside));
    let switchovers = switch.iter().map(|(name, f, beside)| {
        stat(name, run.switchovers.iter().filter_map(f).collect(), beside)
    });
    kills.chain(switchovers).collect()
}

fn target(name: String, p50: &Stat, bound_ms: f64, detail: String) -> Target {
    let ratio = p50.p50_ms / bound_ms;
    Target {
        name,
        ratio,
        bound: 1.0,
        at_most: true,
        pass: (p50.count > 0).then_some(ratio <= 1.0),
        detail,
    }
}

fn targets(plan: &FailoverPlan, summary: &[Stat]) -> Vec<Target> {
    let find = |name: &str| {
        summary
            .iter()
            .find(|s| s.name == name)
            .expect("named in summary()")
    };
    let first = find("kill: first commit");
    let bound = plan.first_commit_bound_ms();
    let serving = find("switchover: serving");
    vec![
        target(
            format!(
                "kill: first commit p50 / (election timeout max + 2 heartbeat intervals + \
                 {FIRST_COMMIT_SLACK_MS} ms)"
            ),
            first,
            bound,
            format!(
                "{:.1} ms against {} + 2 × {} + {FIRST_COMMIT_SLACK_MS} = {bound:.0} ms",
                first.p50_ms, plan.election_timeout_max_ms, plan.heartbeat_interval_ms
            ),
        ),
        target(
            format!("switchover: promote request to the target serving, p50 / {SWITCHOVER_TARGET_MS:.0} ms"),
            serving,
            SWITCHOVER_TARGET_MS,
            format!("{:.1} ms against {SWITCHOVER_TARGET_MS:.0} ms", serving.p50_ms),
        ),
    ]
}

impl Report {
    /// Computes the summary and the targets; reads the process's peak RSS now.
    pub fn new(command: String, plan: FailoverPlan, machine: Machine, run: RunResult) -> Report {
        let summary = summary(&plan, &run);
        let targets = targets(&plan, &summary);
        Report {
            command,
            date: utc_now(),
            plan,
            machine,
            peak_rss_kib: machine::peak_rss_kib(),
            run,
            summary,
            targets,
        }
    }

    /// What fails the run: rounds that did not complete, a check that could not run, and any
    /// acknowledged append lost or duplicated, or a member that differs from the primary.
    pub fn failures(&self) -> Vec<String> {
        let mut out = self.run.errors.clone();
        if let Some(v) = &self.run.verdict {
            if v.lost > 0 || v.duplicated > 0 || v.differing_on_others > 0 {
                out.push(format!(
                    "of {} acknowledged appends, {} lost and {} duplicated on the final primary \
                     {}; {} records differ on the other members",
                    v.acked, v.lost, v.duplicated, v.primary, v.differing_on_others
                ));
            }
        }
        out
    }

    /// The human-readable report.
    pub fn table(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        self.write_kills(&mut out);
        self.write_switchovers(&mut out);
        self.write_summary(&mut out);
        self.write_check(&mut out);
        self.write_targets(&mut out);
        out
    }

    fn write_header(&self, out: &mut String) {
        let p = &self.plan;
        let _ = writeln!(
            out,
            "logship failover benchmark ({} plan), {}",
            p.name, self.date
        );
        self.machine.write_description(out, &self.command);
        let _ = writeln!(
            out,
            "cluster: {} `logship node` processes (127.0.0.1-{} in a private network namespace), \
             quorum {}, transport portable",
            p.members, p.members, p.quorum
        );
        let _ = writeln!(
            out,
            "timeouts: heartbeat interval {} ms, peer {} ms, election timeout {}..{} ms",
            p.heartbeat_interval_ms,
            p.peer_timeout_ms,
            p.election_timeout_min_ms,
            p.election_timeout_max_ms
        );
        let _ = writeln!(
            out,
            "client: 1 thread, {} B appends at remote_durable, one at a time; status polled every \
             {} ms; {:.0} s in all",
            p.record_bytes, p.poll_interval_ms, self.run.seconds
        );
    }
}

/// A time that may not have been seen, `-` then.
fn opt_ms(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".into(), |ms| format!("{ms:.1}"))
}

impl Report {
    fn write_kills(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nkills of the primary (SIGKILL), ms after the kill (gap before: the longest time \
             without an ack in the {} ms before it; pv/el: pre-votes/elections the survivors began):",
            self.plan.settle_ms
        );
        let _ = writeln!(
            out,
            "{:>5}  {:<6} {:<7} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "round",
            "killed",
            "elected",
            "epochs",
            "pv/el",
            "detect",
            "elected",
            "quorum",
            "commit",
            "pause",
            "gap bef",
            "rejoin"
        );
        for (i, r) in self.run.kills.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:>5}  {:<6} {:<7} {:>7} {:>6} {:>8.1} {:>8.1} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>7.0}",
                i + 1,
                r.killed,
                r.elected,
                format!("{}->{}", r.old_epoch, r.new_epoch),
                format!("{}/{}", r.pre_votes, r.elections),
                r.detect_ms,
                r.elected_ms,
                opt_ms(r.quorum_ms),
                r.first_commit_ms,
                r.append_pause_ms,
                r.gap_before_ms,
                r.rejoin_ms
            );
        }
    }

    fn write_switchovers(&self, out: &mut String) {
        let _ = writeln!(out, "\nswitchovers (promote), ms after the request:");
        let _ = writeln!(
            out,
            "{:>5}  {:<6} {:<6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "round",
            "from",
            "to",
            "epoch",
            "handed",
            "serving",
            "quorum",
            "commit",
            "pause",
            "gap bef"
        );
        for (i, r) in self.run.switchovers.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:>5}  {:<6} {:<6} {:>6} {:>8.1} {:>8.1} {:>8} {:>8.1} {:>8.1} {:>8.1}",
                i + 1,
                r.from,
                r.to,
                r.new_epoch,
                r.handed_over_ms,
                r.serving_ms,
                opt_ms(r.quorum_ms),
                r.first_commit_ms,
                r.append_pause_ms,
                r.gap_before_ms
            );
        }
    }

    fn write_summary(&self, out: &mut String) {
        let _ = writeln!(out, "\nsummary:");
        let _ = writeln!(
            out,
            "{:<28} {:>6} {:>9} {:>9}  beside",
            "figure", "rounds", "p50 ms", "max ms"
        );
        for s in &self.summary {
            let _ = writeln!(
                out,
                "{:<28} {:>6} {:>9.1} {:>9.1}  {}",
                s.name, s.count, s.p50_ms, s.max_ms, s.beside
            );
        }
    }

    fn write_check(&self, out: &mut String) {
        let _ = writeln!(out, "\ncheck:");
        match &self.run.verdict {
            Some(v) => {
                let _ = writeln!(
                    out,
                    "  {} appends acknowledged; final primary {} holds {} records: lost {}, \
                     duplicated {}; records differing on the other members: {}",
                    v.acked, v.primary, v.records, v.lost, v.duplicated, v.differing_on_others
                );
            }
            None => {
                let _ = writeln!(out, "  not run (see errors)");
            }
        }
        let errors: Vec<String> = (self.run.client_errors.iter())
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(out, "  client errors (retried): {}", errors.join(", "));
        for e in &self.run.errors {
            let _ = writeln!(out, "  ERROR: {}", e.lines().next().unwrap_or_default());
        }
    }

    fn write_targets(&self, out: &mut String) {
        let _ = writeln!(out, "\ntargets:");
        for t in &self.targets {
            let verdict = match t.pass {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "N/A ",
            };
            let _ = writeln!(
                out,
                "  [{verdict}] {}: {:.2} <= {:.2}  ({})",
                t.name, t.ratio, t.bound, t.detail
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p50_is_the_nearest_rank_and_max_the_largest() {
        let s = stat("x", vec![3.0, 1.0, 2.0, 10.0], "");
        assert_eq!((s.p50_ms, s.max_ms, s.count), (2.0, 10.0, 4));
        let s = stat("x", vec![5.0, 1.0, 9.0], "");
        assert_eq!((s.p50_ms, s.max_ms), (5.0, 9.0));
        assert!(stat("x", Vec::new(), "").p50_ms.is_nan());
    }
}
