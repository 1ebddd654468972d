//! The report: every logship figure beside its ratio to the raw limit of the same run (and the
//! 64-appender cases beside their hand-off ceiling), the three targets with PASS/FAIL (the
//! scaling target once per appender mode), and the machine. Printed as a table and serialized as
//! JSON.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::append::{CaseResult, RunResult};
use crate::ceiling::CeilingResult;
use crate::machine::{self, Machine};
use crate::plan::{Mode, Plan, LARGE_RECORD_BYTES, MANY_APPENDERS, SMALL_RECORD_BYTES};
use crate::raw::RawResult;

/// Target 1: commit p50 of one 100 B appender over raw 4 KiB overwrite + fdatasync p50, at most.
pub const LATENCY_TARGET_RATIO: f64 = 1.15;
/// Target 2: records/s of 64 appenders (threads, and tasks) over 1 appender thread (100 B), at
/// least.
pub const SCALING_TARGET_RATIO: f64 = 30.0;
/// Target 3: best 64 KiB MB/s over raw sequential 1 MiB overwrite bandwidth, at least.
pub const BANDWIDTH_TARGET_RATIO: f64 = 0.85;
/// Target 4, on the `io_uring_direct` backend: commit p50 of one 100 B appender over the raw
/// *buffered* 4 KiB overwrite + fdatasync p50, at most.
pub const DIRECT_LATENCY_TARGET_RATIO: f64 = 0.9;
/// The backend target 4 is for, as `Log::backend` names it.
const DIRECT_BACKEND: &str = "io_uring_direct";

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The command line that produced it.
    pub command: String,
    /// UTC time at the end of the run, ISO 8601.
    pub date: String,
    /// The plan that ran.
    pub plan: Plan,
    /// The machine and directory.
    pub machine: Machine,
    /// Peak resident set size of the benchmark process, KiB.
    pub peak_rss_kib: u64,
    /// Every measurement.
    pub run: RunResult,
    /// Per-case ratios, in the order of `run.cases`.
    pub ratios: Vec<Ratios>,
    /// Each hand-off ceiling as a multiple of one appender, in the order of `run.ceilings`.
    pub ceiling_scaling: Vec<CeilingScaling>,
    /// The targets: latency, scaling with threads, scaling with tasks, bandwidth.
    pub targets: Vec<Target>,
}

/// One case's figures as ratios to the raw limits.
#[derive(Clone, Debug, Serialize)]
pub struct Ratios {
    /// The case's name.
    pub name: String,
    /// Commit p50 over raw 4 KiB overwrite + fdatasync p50 (lower is better, 1.0 is the limit).
    pub latency_p50: f64,
    /// Commit p50 over the paired raw p50 measured in the same moments (1-appender cases).
    pub latency_p50_paired: Option<f64>,
    /// Payload MB/s over raw sequential 1 MiB overwrite MB/s (1.0 is the limit).
    pub bandwidth: f64,
    /// Records/s over the 1-appender threads case of the same record size, if it ran (tasks
    /// cases too: one appender is the same loop in either mode, and threads is the paired one).
    pub scaling: Option<f64>,
    /// Records/s over the hand-off ceiling of the case's mode (for threads, the way of waking
    /// with the shorter hand-off), measured in the same run: 64-appender 100 B cases only. 1.0
    /// is the limit.
    pub ceiling: Option<f64>,
}

/// A hand-off ceiling as a multiple of one appender: how far 64 appenders could scale on this
/// machine with ideal hand-offs.
#[derive(Clone, Debug, Serialize)]
pub struct CeilingScaling {
    /// The ceiling's name.
    pub name: String,
    /// Its records/s.
    pub records_per_s: f64,
    /// Its records/s over the 1-appender 100 B threads case's, if that ran.
    pub over_one_appender: Option<f64>,
    /// The same multiple had the ceiling's disk been as fast as the lone appender's: appenders ×
    /// one commit's time ÷ (one commit's time + the ceiling's `handoff_us`). The disk of the
    /// project's machines changes speed between the two measurements; the hand-off time does not
    /// depend on it.
    pub over_one_appender_at_its_disk_speed: Option<f64>,
    /// Whether it is the ceiling the cases of its mode are divided by.
    pub used: bool,
}

/// A target and its verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is compared.
    pub name: String,
    /// The measured ratio.
    pub ratio: f64,
    /// The bound it must meet.
    pub bound: f64,
    /// `true` if the ratio must be at most the bound, `false` if at least.
    pub at_most: bool,
    /// `None` when a case it needs did not run.
    pub pass: Option<bool>,
    /// The figures behind the ratio.
    pub detail: String,
}

impl Report {
    /// Computes ratios and targets; reads the process's peak RSS now.
    pub fn new(command: String, plan: Plan, machine: Machine, run: RunResult) -> Report {
        let ratios = run.cases.iter().map(|c| ratios(&run, c)).collect();
        let ceiling_scaling = ceiling_scaling(&run);
        let targets = targets(&run);
        Report {
            command,
            date: utc_now(),
            plan,
            machine,
            peak_rss_kib: machine::peak_rss_kib(),
            run,
            ratios,
            ceiling_scaling,
            targets,
        }
    }

    /// The human-readable report.
    pub fn table(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        self.write_raw(&mut out);
        self.write_ceilings(&mut out);
        self.write_cases(&mut out);
        self.write_targets(&mut out);
        out
    }

    fn write_header(&self, out: &mut String) {
        let m = &self.machine;
        let _ = writeln!(
            out,
            "logship append benchmark ({} plan), {}",
            self.plan.name, self.date
        );
        m.write_description(out, &self.command);
        let _ = writeln!(
            out,
            "engine backend: {}   caller-runs: {}   peak RSS: {:.1} MiB",
            self.run.backend,
            if self.run.caller_runs { "on" } else { "off" },
            self.peak_rss_kib as f64 / 1024.0
        );
        if let Some(w) = m.warning() {
            let _ = writeln!(out, "WARNING: {w}");
        }
    }

    fn write_raw(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nraw limits (pwrite + fdatasync per write, one thread):"
        );
        let _ = writeln!(
            out,
            "{:<50} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "case", "ops/s", "MB/s", "p50 µs", "p99 µs", "p99.9 µs"
        );
        let r = &self.run.raw;
        for (raw, note) in [
            (&r.overwrite_4k, "  <- latency limit"),
            (&r.append_4k, ""),
            (&r.overwrite_1m, "  <- bandwidth limit"),
            (&r.append_1m, ""),
            (
                &self.run.raw_overwrite_4k_after,
                "  (again, after the cases)",
            ),
        ] {
            write_raw_row(out, 50, raw, note);
        }
        for raw in [&r.odirect_dsync_4k, &r.odirect_fdatasync_4k]
            .into_iter()
            .flatten()
        {
            write_raw_row(out, 50, raw, "  (O_DIRECT, for io_uring_direct)");
        }
    }

    fn write_ceilings(&self, out: &mut String) {
        if self.ceiling_scaling.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\nhand-off ceilings (no log: every appender queues a token, one writer does a real \
             pwrite + fdatasync of the group's payload and wakes the group; each run right before \
             its case):"
        );
        let _ = writeln!(
            out,
            "{:<66} {:>9} {:>9} {:>10} {:>8} {:>8} {:>5} {:>7} {:>8}",
            "case",
            "rec/s",
            "rec/flush",
            "flush µs",
            "cycle µs",
            "wake µs",
            "CPUs",
            "xC/x1",
            "x@1disk"
        );
        for (c, s) in self.run.ceilings.all().zip(&self.ceiling_scaling) {
            let used = if s.used { "  <- ceiling" } else { "" };
            let _ = writeln!(
                out,
                "{:<66} {:>9.0} {:>9.1} {:>10.1} {:>8.1} {:>8.1} {:>5.2} {:>7} {:>8}{used}",
                c.name,
                c.records_per_s,
                c.records_per_flush,
                c.flush.mean_us,
                c.cycle_us,
                c.handoff_us,
                c.cpu_cores,
                opt(s.over_one_appender),
                opt(s.over_one_appender_at_its_disk_speed)
            );
        }
    }

    fn write_cases(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nlogship (durable appends; each appender loops on append + wait, as a thread or a tokio task):"
        );
        let _ = writeln!(
            out,
            "{:<55} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8} {:>9} {:>8} {:>7} {:>6} {:>9} {:>5}",
            "case",
            "rec/s",
            "MB/s",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "p50/raw",
            "p50/pair",
            "MB/s/raw",
            "xN/x1",
            "÷ceil",
            "rec/write",
            "CPUs"
        );
        for (c, r) in self.run.cases.iter().zip(&self.ratios) {
            let _ = writeln!(
                out,
                "{:<55} {:>9.0} {:>8.1} {:>9.1} {:>9.1} {:>9.1} {:>8.2} {:>9} {:>8.2} {:>7} {:>6} {:>9.1} {:>5.2}",
                c.name,
                c.records_per_s,
                c.mb_per_s,
                c.latency.p50_us,
                c.latency.p99_us,
                c.latency.p999_us,
                r.latency_p50,
                opt(r.latency_p50_paired),
                r.bandwidth,
                opt(r.scaling),
                opt(r.ceiling),
                c.engine.records_per_write,
                c.cpu_cores
            );
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
            let op = if t.at_most { "<=" } else { ">=" };
            let _ = writeln!(
                out,
                "  [{verdict}] {}: {:.2} {op} {:.2}  ({})",
                t.name, t.ratio, t.bound, t.detail
            );
        }
    }
}

/// One raw-limit row, its name padded to `width`.
pub(crate) fn write_raw_row(out: &mut String, width: usize, raw: &RawResult, note: &str) {
    let _ = writeln!(
        out,
        "{:<width$} {:>9.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1}{note}",
        raw.name,
        raw.ops_per_s,
        raw.mb_per_s,
        raw.latency.p50_us,
        raw.latency.p99_us,
        raw.latency.p999_us
    );
}

/// `x` with two decimals, `-` for `None`.
fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"))
}

fn ratios(run: &RunResult, case: &CaseResult) -> Ratios {
    let single = find(run, case.record_bytes, 1, Mode::Threads);
    let bounded = case.appenders == MANY_APPENDERS && case.record_bytes == SMALL_RECORD_BYTES;
    let ceiling = bounded
        .then(|| run.ceilings.for_mode(case.mode))
        .flatten()
        .map(|c| case.records_per_s / c.records_per_s);
    Ratios {
        name: case.name.clone(),
        latency_p50: case.latency.p50_us / run.raw.overwrite_4k.latency.p50_us,
        latency_p50_paired: case.paired_raw.map(|r| case.latency.p50_us / r.p50_us),
        bandwidth: case.mb_per_s / run.raw.overwrite_1m.mb_per_s,
        scaling: single.map(|s| case.records_per_s / s.records_per_s),
        ceiling,
    }
}

fn ceiling_scaling(run: &RunResult) -> Vec<CeilingScaling> {
    let one = find(run, SMALL_RECORD_BYTES, 1, Mode::Threads);
    run.ceilings
        .all()
        .map(|c| CeilingScaling {
            name: c.name.clone(),
            records_per_s: c.records_per_s,
            over_one_appender: one.map(|o| c.records_per_s / o.records_per_s),
            over_one_appender_at_its_disk_speed: one.map(|o| at_disk_speed(c, o)),
            used: run
                .ceilings
                .for_mode(c.mode)
                .is_some_and(|u| std::ptr::eq(u, c)),
        })
        .collect()
}

fn find(run: &RunResult, size: usize, appenders: usize, mode: Mode) -> Option<&CaseResult> {
    run.cases
        .iter()
        .find(|c| c.record_bytes == size && c.appenders == appenders && c.mode == mode)
}

fn targets(run: &RunResult) -> Vec<Target> {
    vec![
        latency_target(run),
        scaling_target(run, Mode::Threads),
        scaling_target(run, Mode::Tasks),
        bandwidth_target(run),
        direct_latency_target(run),
    ]
}

/// The lone appender's case, its commit p50, and the buffered raw 4 KiB p50 it is held to: the
/// one paired with it when measured, else the standalone one. The paired raw p50 was measured
/// in the same moments as the appends; the standalone one, seconds earlier, on a disk whose
/// speed may since have changed.
fn lone_commit(run: &RunResult) -> (Option<&CaseResult>, f64, Option<f64>, f64) {
    let case = find(run, SMALL_RECORD_BYTES, 1, Mode::Threads);
    let p50 = case.map_or(f64::NAN, |c| c.latency.p50_us);
    let paired_p50 = case.and_then(|c| c.paired_raw).map(|r| r.p50_us);
    let limit = paired_p50.unwrap_or(run.raw.overwrite_4k.latency.p50_us);
    (case, p50, paired_p50, limit)
}

fn latency_target(run: &RunResult) -> Target {
    let raw_p50 = run.raw.overwrite_4k.latency.p50_us;
    let (case, p50, paired_p50, limit) = lone_commit(run);
    let paired = paired_p50.map_or_else(|| "not measured".into(), |p| format!("{p:.1} µs"));
    verdict(
        "1 appender, 100 B: commit p50 / raw 4 KiB overwrite+fdatasync p50 (paired)".into(),
        p50 / limit,
        LATENCY_TARGET_RATIO,
        true,
        case.is_some(),
        format!(
            "commit p50 {p50:.1} µs, paired raw p50 {paired}, standalone raw p50 {raw_p50:.1} µs \
             (ratio {:.2})",
            p50 / raw_p50
        ),
    )
}

/// The direct backend's lone commit against the buffered limit (paired, as target 1), with the
/// raw `O_DIRECT | O_DSYNC` write's p50 over the same buffered p50 beside it: the least the
/// ratio can be on this disk.
fn direct_latency_target(run: &RunResult) -> Target {
    let (case, p50, _, limit) = lone_commit(run);
    let buffered = run.raw.overwrite_4k.latency.p50_us;
    let direct = run.raw.odirect_dsync_4k.as_ref().map(|r| r.latency.p50_us);
    let floor = direct.map_or_else(
        || "O_DIRECT refused here".into(),
        |d| {
            format!(
                "raw O_DIRECT|O_DSYNC 4 KiB p50 {d:.1} µs = {:.2} of the standalone buffered \
                 p50, the least this ratio can be here",
                d / buffered
            )
        },
    );
    let on_direct = run.backend == DIRECT_BACKEND;
    let detail = if on_direct {
        format!("commit p50 {p50:.1} µs, paired buffered raw p50 {limit:.1} µs; {floor}")
    } else {
        format!(
            "for {DIRECT_BACKEND} (--backend {DIRECT_BACKEND}), this run: {}",
            run.backend
        )
    };
    verdict(
        format!(
            "{DIRECT_BACKEND}, 1 appender, 100 B: commit p50 / raw buffered 4 KiB \
             overwrite+fdatasync p50 (paired)"
        ),
        if on_direct { p50 / limit } else { f64::NAN },
        DIRECT_LATENCY_TARGET_RATIO,
        true,
        on_direct && case.is_some(),
        detail,
    )
}

/// 64 appenders of `mode` over the 1-appender threads case: the baseline is the same for both
/// modes, so that their ratios compare.
fn scaling_target(run: &RunResult, mode: Mode) -> Target {
    let one = find(run, SMALL_RECORD_BYTES, 1, Mode::Threads);
    let many = find(run, SMALL_RECORD_BYTES, MANY_APPENDERS, mode);
    let rate = |c: Option<&CaseResult>| c.map_or(f64::NAN, |c| c.records_per_s);
    let batch = many.map_or(f64::NAN, |c| c.engine.records_per_write);
    let ceiling = run.ceilings.for_mode(mode).map_or_else(
        || "no ceiling measured".into(),
        |c| ceiling_detail(c, one, many),
    );
    verdict(
        format!(
            "{MANY_APPENDERS} appender {}, 100 B: records/s / 1-appender (thread) records/s",
            mode.as_str()
        ),
        rate(many) / rate(one),
        SCALING_TARGET_RATIO,
        false,
        one.is_some() && many.is_some(),
        format!(
            "{:.0} vs {:.0} rec/s, {batch:.1} records per write, {:.2} CPUs busy; {ceiling}",
            rate(many),
            rate(one),
            many.map_or(f64::NAN, |c| c.cpu_cores)
        ),
    )
}

/// `ceiling`'s multiple of `one` had it flushed at the speed `one` saw: each of its groups of
/// `appenders` records then takes one lone commit's time plus the ceiling's hand-off time.
fn at_disk_speed(ceiling: &CeilingResult, one: &CaseResult) -> f64 {
    let commit_us = 1e6 / one.records_per_s;
    ceiling.appenders as f64 * commit_us / (commit_us + ceiling.handoff_us)
}

/// The ceiling of a scaling target: its rate, its multiple of one appender, the case's share.
fn ceiling_detail(
    ceiling: &CeilingResult,
    one: Option<&CaseResult>,
    many: Option<&CaseResult>,
) -> String {
    let rate = |c: Option<&CaseResult>| c.map_or(f64::NAN, |c| c.records_per_s);
    format!(
        "hand-off ceiling ({}) {:.0} rec/s = {:.1}x one appender ({:.1}x at its disk speed), \
         case at {:.2} of it",
        ceiling.wake.name(),
        ceiling.records_per_s,
        ceiling.records_per_s / rate(one),
        one.map_or(f64::NAN, |o| at_disk_speed(ceiling, o)),
        rate(many) / ceiling.records_per_s
    )
}

fn bandwidth_target(run: &RunResult) -> Target {
    let raw = run.raw.overwrite_1m.mb_per_s;
    let best = run
        .cases
        .iter()
        .filter(|c| c.record_bytes == LARGE_RECORD_BYTES)
        .max_by(|a, b| a.mb_per_s.total_cmp(&b.mb_per_s));
    let (mbps, detail) = match best {
        Some(c) => (
            c.mb_per_s,
            format!(
                "{:.1} MB/s with {} appender {}, raw {raw:.1} MB/s, {:.0} KiB per write",
                c.mb_per_s,
                c.appenders,
                c.mode.as_str(),
                c.engine.bytes_per_write / 1024.0
            ),
        ),
        None => (f64::NAN, "no 64 KiB case ran".into()),
    };
    verdict(
        "64 KiB records, best appender count: MB/s / raw 1 MiB sequential overwrite MB/s".into(),
        mbps / raw,
        BANDWIDTH_TARGET_RATIO,
        false,
        best.is_some(),
        detail,
    )
}

fn verdict(
    name: String,
    ratio: f64,
    bound: f64,
    at_most: bool,
    ran: bool,
    detail: String,
) -> Target {
    let met = if at_most {
        ratio <= bound
    } else {
        ratio >= bound
    };
    let pass = ran.then_some(met);
    Target {
        name,
        ratio,
        bound,
        at_most,
        pass,
        detail,
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats seconds since the Unix epoch (civil-from-days, H. Hinnant's algorithm).
pub(crate) fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_format() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn verdicts_respect_direction_and_missing_cases() {
        assert_eq!(
            verdict("a".into(), 1.1, 1.15, true, true, String::new()).pass,
            Some(true)
        );
        assert_eq!(
            verdict("a".into(), 1.2, 1.15, true, true, String::new()).pass,
            Some(false)
        );
        assert_eq!(
            verdict("a".into(), 31.0, 30.0, false, true, String::new()).pass,
            Some(true)
        );
        assert_eq!(
            verdict("a".into(), f64::NAN, 30.0, false, false, String::new()).pass,
            None
        );
    }
}
