//! The `replicate` report: every figure beside its ratio to the raw limit of the same run, the
//! three targets of the replication issue with PASS/FAIL, the machine, and any cluster
//! failure. Printed as a table and serialized as JSON.
//!
//! The latency limit of a commit is `fdatasync p50` for the primary alone, and
//! `max(fdatasync p50, round trip p50 + fdatasync p50)` with a sync follower: the primary
//! sends a batch before its own fdatasync, so the two fdatasyncs overlap and the follower's
//! adds one round trip. Every node writes to the same disk, so the remote fdatasync is the same
//! raw figure as the local one, measured with one concurrent stream per node (on this
//! machine's virtual disk a lone fdatasync loop can be 20× slower than two or three concurrent
//! ones; see `probe.rs`). The figure used is the one measured in the case's own moments
//! (paired with a 1-client case's commits, around a 64-client case's window); the ratio to the
//! limit from the standalone raw loop with as many streams is kept too.
//!
//! The network-client cases and the PostgreSQL peer have their own part (`net_report.rs`); their
//! targets follow the three above.

use std::fmt::Write as _;

use serde::Serialize;

use crate::latency::Summary;
use crate::machine::{self, Machine};
use crate::replicate::commit::CaseResult;
use crate::replicate::net_report::{self, NetRatios};
use crate::replicate::new_file;
use crate::replicate::peer::PeerResult;
use crate::replicate::plan::{
    ReplicatePlan, TargetFrom, Topology, MANY_CLIENTS, RECORD_SIZES, TARGET_RECORD_BYTES,
};
use crate::replicate::run::RunResult;
use crate::replicate::steered::{self, SteeredResult, SteeredRun};
use crate::report::{utc_now, write_raw_row, Target};

/// Target (a): 1 sync follower, 1 client, 100 B: commit p50 over the latency limit, at most.
pub const LATENCY_TARGET_RATIO: f64 = 1.3;
/// Target (b): 64 clients with 1 sync follower over no follower, records/s (100 B), at least.
pub const THROUGHPUT_TARGET_RATIO: f64 = 0.70;
/// Target (c): catch-up MB/s over raw sequential 1 MiB overwrite MB/s, at least.
pub const CATCH_UP_TARGET_RATIO: f64 = 0.60;
/// Target (c'): catch-up at least this fraction of the raw new-file write bandwidth.
pub const CATCH_UP_NEW_FILE_TARGET_RATIO: f64 = 0.80;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The command line that produced it.
    pub command: String,
    /// UTC time at the end of the run, ISO 8601.
    pub date: String,
    /// The plan that ran.
    pub plan: ReplicatePlan,
    /// The machine and directory.
    pub machine: Machine,
    /// Peak resident set size of the benchmark process (every node included), KiB.
    pub peak_rss_kib: u64,
    /// Every measurement.
    pub run: RunResult,
    /// Per-case ratios, in the order of `run.cases`.
    pub ratios: Vec<Ratios>,
    /// 64-client records/s with 1 sync follower over no follower, per record size.
    pub throughput_vs_none: Vec<SizeRatio>,
    /// Catch-up MB/s over raw sequential 1 MiB overwrite MB/s.
    pub catch_up_bandwidth: Option<f64>,
    /// Per-network-case ratios, in the order of `run.net_cases`.
    pub net_ratios: Vec<NetRatios>,
    /// The peer run with `--peer`, with its figures or why it gave none.
    pub peer: Option<PeerResult>,
    /// The targets: (a) latency, (b) throughput, (c) catch-up, then (d) and (e), one per
    /// network case, (f), one per 64-client `1sync` network case beside the peer, and (g) and
    /// (h), the steered catch-up's (with the unthrottled run's p99 ratio beside (g)).
    pub targets: Vec<Target>,
}

/// One case's figures as ratios.
#[derive(Clone, Debug, Serialize)]
pub struct Ratios {
    /// The case's name.
    pub name: String,
    /// The commit latency limit of its topology from the case's own disk figure, µs (see the
    /// module docs).
    pub latency_limit_us: f64,
    /// Commit p50 over that limit (1.0 is the limit).
    pub latency_p50: f64,
    /// Commit p50 over the limit from the standalone raw loop.
    pub latency_p50_standalone: f64,
    /// Records/s over the `none` topology's with the same size and clients.
    pub vs_none: Option<f64>,
}

/// A 1-sync-follower over no-follower ratio at one record size.
#[derive(Clone, Debug, Serialize)]
pub struct SizeRatio {
    /// Payload bytes.
    pub record_bytes: usize,
    /// 1 sync follower, 64 clients, records/s.
    pub one_sync_records_per_s: f64,
    /// No follower, 64 clients, records/s.
    pub none_records_per_s: f64,
    /// The first over the second.
    pub ratio: f64,
}

impl Report {
    /// Computes ratios and targets; reads the process's peak RSS now.
    pub fn new(
        command: String,
        plan: ReplicatePlan,
        machine: Machine,
        run: RunResult,
        peer: Option<PeerResult>,
    ) -> Report {
        let ratios = run.cases.iter().map(|c| ratios(&run, c)).collect();
        let throughput_vs_none = RECORD_SIZES
            .iter()
            .filter_map(|&size| throughput_vs_none(&run, size))
            .collect();
        let catch_up_bandwidth = run
            .catch_up
            .as_ref()
            .map(|c| c.mb_per_s / run.raw.bandwidth_1m.mb_per_s);
        let net_ratios = net_report::net_ratios(&run, peer.as_ref(), machine.nproc);
        let mut targets = vec![
            latency_target(&run),
            throughput_target(&run),
            catch_up_target(&run, plan.catch_up),
            catch_up_new_file_target(&run, plan.catch_up),
        ];
        targets.extend(net_report::net_targets(&run, &net_ratios, peer.as_ref()));
        targets.extend(steered_targets(&run, plan.steered));
        Report {
            command,
            date: utc_now(),
            plan,
            machine,
            peak_rss_kib: machine::peak_rss_kib(),
            run,
            ratios,
            throughput_vs_none,
            catch_up_bandwidth,
            net_ratios,
            peer,
            targets,
        }
    }

    /// Failures: topologies or the catch-up that did not run, and cases with commits
    /// acknowledged before they were durable.
    pub fn failures(&self) -> Vec<String> {
        let net = self.run.net_cases.iter().map(|n| &n.case);
        let early = (self.run.cases.iter().chain(net))
            .filter(|c| c.early_acks > 0)
            .map(|c| {
                format!(
                "{}: {} of {} commits resolved before the primary and the quorum were durable; \
                 first: {}",
                c.name,
                c.early_acks,
                c.records,
                c.first_early_ack.as_deref().unwrap_or("?")
            )
            });
        self.run.errors.iter().cloned().chain(early).collect()
    }

    /// The human-readable report.
    pub fn table(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        self.write_raw(&mut out);
        self.write_cases(&mut out);
        net_report::write_net_cases(&mut out, &self.run, &self.net_ratios, self.peer.as_ref());
        self.write_catch_up(&mut out);
        self.write_steered(&mut out);
        self.write_ratios(&mut out);
        self.write_targets(&mut out);
        self.write_errors(&mut out);
        out
    }

    fn write_header(&self, out: &mut String) {
        let m = &self.machine;
        let _ = writeln!(
            out,
            "logship replicate benchmark ({} plan), {}",
            self.plan.name, self.date
        );
        m.write_description(out, &self.command);
        let b = &self.run.backends;
        let _ = writeln!(
            out,
            "transport: {}   log backend: {}   {MANY_CLIENTS} clients as: {}   peak RSS: {:.1} MiB \
             ({:.1} MiB before the catch-up)",
            b.transport,
            b.log_backend,
            self.plan.many_client_mode.as_str(),
            self.peak_rss_kib as f64 / 1024.0,
            self.run.peak_rss_kib_before_catch_up as f64 / 1024.0
        );
        if let Some(w) = m.warning() {
            let _ = writeln!(out, "WARNING: {w}");
        }
    }

    fn write_raw(&self, out: &mut String) {
        const RAW_WIDTH: usize = 52;
        let _ = writeln!(
            out,
            "\nraw limits (one thread each; every node writes to this disk, so the fdatasync \
             figure is both the local and the remote limit):"
        );
        let _ = writeln!(
            out,
            "{:<52} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "case", "ops/s", "MB/s", "p50 µs", "p99 µs", "p99.9 µs"
        );
        let r = &self.run.raw;
        write_raw_row(
            out,
            RAW_WIDTH,
            &r.fdatasync_4k,
            "  <- fdatasync limit, 1 node",
        );
        for s in &r.fdatasync_4k_streams {
            let _ = writeln!(
                out,
                "{:<52} {:>9.0} {:>9} {:>9.1} {:>9.1} {:>9.1}  <- fdatasync limit, {} nodes",
                s.name,
                s.ops_per_s,
                "-",
                s.latency.p50_us,
                s.latency.p99_us,
                s.latency.p999_us,
                s.streams
            );
        }
        let t = &r.rtt;
        let _ = writeln!(
            out,
            "{:<52} {:>9.0} {:>9} {:>9.1} {:>9.1} {:>9.1}  <- round-trip limit",
            t.name, t.ops_per_s, "-", t.latency.p50_us, t.latency.p99_us, t.latency.p999_us
        );
        for c in &r.null_port {
            let _ = writeln!(
                out,
                "{:<52} {:>9.0} {:>9} {:>9.1} {:>9.1} {:>9.1}  <- network ceiling, {} clients, \
                 one in flight ({}), {:.2} CPUs busy ({:.2} the clients')",
                c.name,
                c.records_per_s,
                "-",
                c.latency.p50_us,
                c.latency.p99_us,
                c.latency.p999_us,
                c.clients,
                c.transport,
                c.cpu_cores,
                c.client_cpu_cores
            );
        }
        write_raw_row(out, RAW_WIDTH, &r.bandwidth_1m, "  <- bandwidth limit");
        write_raw_row(
            out,
            RAW_WIDTH,
            &r.fdatasync_4k_after,
            "  (again, after everything)",
        );
    }

    fn write_cases(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nreplicated commits (level remote_durable; each client loops on append + wait for the \
             commit; a fresh cluster per topology; disk = 4 KiB fdatasync p50 in the case's \
             moments, one concurrent stream per node; limit = disk, or max(disk, RTT + disk) \
             with a sync follower):"
        );
        let _ = writeln!(
            out,
            "{:<56} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>5}",
            "case",
            "rec/s",
            "MB/s",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "disk µs",
            "limit µs",
            "p50/limit",
            "x/none",
            "rec/write",
            "CPUs"
        );
        for (c, r) in self.run.cases.iter().zip(&self.ratios) {
            let vs_none = r.vs_none.map_or_else(|| "-".into(), |x| format!("{x:.2}"));
            let _ = writeln!(
                out,
                "{:<56} {:>9.0} {:>7.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>7} {:>9.1} {:>5.2}",
                c.name,
                c.records_per_s,
                c.mb_per_s,
                c.latency.p50_us,
                c.latency.p99_us,
                c.latency.p999_us,
                c.disk.p50_us,
                r.latency_limit_us,
                r.latency_p50,
                vs_none,
                c.primary_records_per_write,
                c.cpu_cores
            );
        }
    }

    fn write_catch_up(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\ncatch-up (an empty async follower copies the primary's log; timed from the primary \
             running to the follower's durable LSN reaching the primary's last):"
        );
        let Some(c) = &self.run.catch_up else {
            let _ = writeln!(out, "  {}", skipped_or_failed(self.plan.catch_up));
            return;
        };
        let _ = writeln!(
            out,
            "{:<56} {:>9} {:>9} {:>9} {:>9} {:>7} {:>5}",
            "case", "MB", "s", "MB/s", "MB/s/raw", "chunks", "CPUs"
        );
        let _ = writeln!(
            out,
            "{:<56} {:>9.1} {:>9.2} {:>9.1} {:>9.2} {:>7} {:>5.2}",
            c.name,
            c.log_bytes as f64 / 1e6,
            c.catch_up_s,
            c.mb_per_s,
            self.catch_up_bandwidth.unwrap_or(f64::NAN),
            c.chunks_sent,
            c.cpu_cores
        );
        let _ = writeln!(
            out,
            "  bytes written to storage during catch-up / log bytes: {:.2} (the follower's \
             appends and the zero-filling of its new segments)",
            c.write_amplification
        );
        let _ = writeln!(
            out,
            "  (fill: {:.2} s at {:.0} MB/s, written / log bytes {:.2}; the primary's start on \
             the filled log: {:.3} s, not counted)",
            c.fill_s, c.fill_mb_per_s, c.fill_write_amplification, c.primary_start_s
        );
        if let Some(l) = &c.new_file {
            let direct = l.direct_mb_per_s.map_or_else(
                || "refused by the file system".into(),
                |d| format!("{d:.1} MB/s"),
            );
            let _ = writeln!(
                out,
                "  raw limit into new files ({:.0} MB, 1 MiB writes, fdatasync every {} MiB): \
                 buffered {:.1} MB/s, buffered dropping synced pages {:.1} MB/s, O_DIRECT \
                 {direct}; catch-up / the best = {:.2}",
                l.bytes as f64 / 1e6,
                new_file::SYNC_EVERY_BYTES >> 20,
                l.buffered_mb_per_s,
                l.buffered_drop_behind_mb_per_s,
                c.mb_per_s / l.best_mb_per_s()
            );
            if let Some(copy) = l.copy_mb_per_s {
                let reads = if l.copy_uncached_reads {
                    "around the page cache (O_DIRECT), as the io_uring_direct log reads"
                } else {
                    "through the page cache"
                };
                let _ = writeln!(
                    out,
                    "  raw copy limit (the primary's segments read {reads}, 4 MiB reads at most \
                     8 ahead of the writes into new files the best way): {copy:.1} MB/s; \
                     catch-up / copy = {:.2}",
                    c.mb_per_s / copy
                );
            }
        }
    }

    fn write_steered(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nsteered catch-up ({MANY_CLIENTS} clients commit 100 B at remote_durable through a \
             sync follower while an empty async follower copies the primary's log; once \
             unthrottled, once with catch_up_latency_target_ms):"
        );
        let Some(st) = &self.run.steered else {
            let why = if self.plan.steered {
                "steered catch-up did not complete (see errors)"
            } else {
                "steered catch-up skipped"
            };
            let _ = writeln!(out, "  {why}");
            return;
        };
        let _ = writeln!(
            out,
            "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>11}",
            "run", "MB/s", "s", "p50 µs", "p99 µs", "p99.9 µs", "p99/alone", "throttled s"
        );
        write_steered_row(out, "clients alone", None, &st.alone, 1.0, None);
        for r in [&st.unthrottled, &st.steered] {
            let mut name = r
                .target_ms
                .map_or("unthrottled".into(), |t| format!("target {t:.3} ms"));
            if r.copied_share < 1.0 {
                name += &format!(" ({:.0} %)", r.copied_share * 100.0);
            }
            let speed = Some((r.mb_per_s, r.catch_up_s));
            write_steered_row(
                out,
                &name,
                speed,
                &r.during,
                r.p99_ratio,
                Some(r.throttled_s),
            );
        }
        for c in &st.raw_copies {
            let kib = c.grain.read_bytes >> 10;
            let name = format!("raw {kib} KiB, {:.2} of unthr.", c.of_unthrottled);
            let speed = Some((c.mb_per_s, c.bytes as f64 / 1e6 / c.mb_per_s));
            write_steered_row(out, &name, speed, &c.during, c.p99_ratio, None);
        }
        let _ = writeln!(
            out,
            "  {}: {:.0} MB copied; steered / unthrottled MB/s = {:.2}",
            st.name,
            st.log_bytes as f64 / 1e6,
            st.speed_ratio
        );
        if let Some(o) = st.steered.pacer_over {
            let _ = writeln!(
                out,
                "  the pacer's control intervals over its target: {} of {} ({:.0} %) with the \
                 clients alone, {} of {} ({:.0} %) during the catch-up",
                o.before_over,
                o.before,
                o.before_share() * 100.0,
                o.during_over,
                o.during,
                o.during_share() * 100.0
            );
        }
    }

    fn write_ratios(&self, out: &mut String) {
        let _ = writeln!(out, "\nratios:");
        for r in &self.throughput_vs_none {
            let _ = writeln!(
                out,
                "  {MANY_CLIENTS} clients, size={}: 1sync / none records/s = {:.2}  ({:.0} vs {:.0} \
                 rec/s)",
                r.record_bytes, r.ratio, r.one_sync_records_per_s, r.none_records_per_s
            );
        }
        if let Some(x) = self.catch_up_bandwidth {
            let _ = writeln!(out, "  catch-up MB/s / raw 1 MiB overwrite MB/s = {x:.2}");
        }
        let r = &self.run.raw;
        let _ = writeln!(
            out,
            "  raw 4 KiB fdatasync p50 drift: {:.1} µs before, {:.1} µs after",
            r.fdatasync_4k.latency.p50_us, r.fdatasync_4k_after.latency.p50_us
        );
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

    fn write_errors(&self, out: &mut String) {
        let net = self.run.net_cases.iter().map(|n| &n.case);
        let reconnects: Vec<String> = (self.run.cases.iter().chain(net))
            .filter(|c| c.link_failures > 0)
            .map(|c| format!("{} ({})", c.name, c.link_failures))
            .collect();
        if !reconnects.is_empty() {
            let _ = writeln!(
                out,
                "\nfollower link failures (reconnects) during: {}",
                reconnects.join(", ")
            );
        }
        let failures = self.failures();
        if failures.is_empty() {
            let _ = writeln!(
                out,
                "\nevery commit was checked: none resolved before the primary and its quorum were durable"
            );
            return;
        }
        let _ = writeln!(out, "\nerrors:");
        for e in &failures {
            let _ = writeln!(out, "  {e}");
        }
    }
}

/// The commit latency limit of `topology` for a disk whose fdatasync p50 is `fdatasync`, µs.
pub(crate) fn latency_limit_us(run: &RunResult, topology: Topology, fdatasync: f64) -> f64 {
    if topology.has_sync_follower() {
        fdatasync.max(run.raw.rtt.latency.p50_us + fdatasync)
    } else {
        fdatasync
    }
}

fn ratios(run: &RunResult, case: &CaseResult) -> Ratios {
    let limit = latency_limit_us(run, case.topology, case.disk.p50_us);
    let standalone = latency_limit_us(
        run,
        case.topology,
        fdatasync_p50(run, case.topology.nodes()),
    );
    let none = find(run, Topology::None, case.record_bytes, case.clients);
    Ratios {
        name: case.name.clone(),
        latency_limit_us: limit,
        latency_p50: case.latency.p50_us / limit,
        latency_p50_standalone: case.latency.p50_us / standalone,
        vs_none: none.map(|n| case.records_per_s / n.records_per_s),
    }
}

/// The standalone raw fdatasync p50 with `streams` concurrent streams, µs.
pub(crate) fn fdatasync_p50(run: &RunResult, streams: usize) -> f64 {
    let r = &run.raw;
    if streams == 1 {
        return r.fdatasync_4k.latency.p50_us;
    }
    (r.fdatasync_4k_streams.iter())
        .find(|s| s.streams == streams)
        .map_or(f64::NAN, |s| s.latency.p50_us)
}

/// The in-process case of `topology`, `size` and `clients`, if it ran.
pub(crate) fn find(
    run: &RunResult,
    topology: Topology,
    size: usize,
    clients: usize,
) -> Option<&CaseResult> {
    run.cases
        .iter()
        .find(|c| c.topology == topology && c.record_bytes == size && c.clients == clients)
}

fn throughput_vs_none(run: &RunResult, size: usize) -> Option<SizeRatio> {
    let one = find(run, Topology::OneSync, size, MANY_CLIENTS)?;
    let none = find(run, Topology::None, size, MANY_CLIENTS)?;
    Some(SizeRatio {
        record_bytes: size,
        one_sync_records_per_s: one.records_per_s,
        none_records_per_s: none.records_per_s,
        ratio: one.records_per_s / none.records_per_s,
    })
}

fn latency_target(run: &RunResult) -> Target {
    let case = find(run, Topology::OneSync, TARGET_RECORD_BYTES, 1);
    let p50 = case.map_or(f64::NAN, |c| c.latency.p50_us);
    let paired = case.map_or(f64::NAN, |c| c.disk.p50_us);
    let limit = latency_limit_us(run, Topology::OneSync, paired);
    let standalone = fdatasync_p50(run, Topology::OneSync.nodes());
    let standalone_limit = latency_limit_us(run, Topology::OneSync, standalone);
    let rtt = run.raw.rtt.latency.p50_us;
    verdict(
        "(a) 1 sync follower, 1 client, 100 B: commit p50 / max(fdatasync p50, RTT p50 + \
         fdatasync p50) (paired)"
            .into(),
        p50 / limit,
        LATENCY_TARGET_RATIO,
        true,
        case.is_some(),
        format!(
            "commit p50 {p50:.1} µs, limit {limit:.1} µs = max({paired:.1}, {rtt:.1} + \
             {paired:.1}) with the paired fdatasync p50; with the standalone {standalone:.1} µs: \
             ratio {:.2}{}",
            p50 / standalone_limit,
            case.map_or_else(String::new, |c| against_ideal(c, limit))
        ),
    )
}

/// The case's p50 against its ideal commit's, and the ideal's against the limit, if it has one.
pub(crate) fn against_ideal(case: &CaseResult, limit: f64) -> String {
    case.ideal.as_ref().map_or_else(String::new, |i| {
        format!(
            "; the ideal commit (plain threads{}, same moments) p50 {:.1} µs: commit / ideal \
             {:.2}, ideal / limit {:.2}",
            if case.ideal_handoff {
                ", with the node's hand-off"
            } else {
                ""
            },
            i.p50_us,
            case.latency.p50_us / i.p50_us,
            i.p50_us / limit
        )
    })
}

fn throughput_target(run: &RunResult) -> Target {
    let r = throughput_vs_none(run, TARGET_RECORD_BYTES);
    let detail = r.as_ref().map_or_else(
        || "a case did not run".into(),
        |r| {
            format!(
                "{:.0} vs {:.0} rec/s",
                r.one_sync_records_per_s, r.none_records_per_s
            )
        },
    );
    verdict(
        format!(
            "(b) {MANY_CLIENTS} clients, 100 B: records/s with 1 sync follower / without followers"
        ),
        r.as_ref().map_or(f64::NAN, |r| r.ratio),
        THROUGHPUT_TARGET_RATIO,
        false,
        r.is_some(),
        detail,
    )
}

/// Why a run has no catch-up figure: `--no-catch-up`, or it failed.
fn skipped_or_failed(planned: bool) -> &'static str {
    if planned {
        "catch-up did not complete (see errors)"
    } else {
        "catch-up skipped (--no-catch-up)"
    }
}

/// Catch-up against the best raw way to write the same bytes into new files.
fn catch_up_new_file_target(run: &RunResult, planned: bool) -> Target {
    let c = run.catch_up.as_ref();
    let limit = c.and_then(|c| c.new_file.as_ref());
    let detail = match (c, limit) {
        (Some(c), Some(l)) => format!(
            "{:.1} MB/s, new-file limit {:.1} MB/s (buffered {:.1}, dropping synced pages {:.1}, \
             O_DIRECT {})",
            c.mb_per_s,
            l.best_mb_per_s(),
            l.buffered_mb_per_s,
            l.buffered_drop_behind_mb_per_s,
            l.direct_mb_per_s
                .map_or_else(|| "refused".into(), |d| format!("{d:.1}"))
        ),
        (Some(_), None) => "the new-file limit was not measured (see errors)".into(),
        (None, _) => skipped_or_failed(planned).into(),
    };
    verdict(
        "(c') catch-up MB/s / raw write into new files MB/s (the best of buffered, buffered \
         dropping synced pages, and O_DIRECT)"
            .into(),
        match (c, limit) {
            (Some(c), Some(l)) => c.mb_per_s / l.best_mb_per_s(),
            _ => f64::NAN,
        },
        CATCH_UP_NEW_FILE_TARGET_RATIO,
        false,
        c.is_some() && limit.is_some(),
        detail,
    )
}

fn catch_up_target(run: &RunResult, planned: bool) -> Target {
    let raw = run.raw.bandwidth_1m.mb_per_s;
    let c = run.catch_up.as_ref();
    let detail = c.map_or_else(
        || skipped_or_failed(planned).into(),
        |c| {
            format!(
                "{:.1} MB/s over {:.0} MB in {:.2} s, raw {raw:.1} MB/s",
                c.mb_per_s,
                c.log_bytes as f64 / 1e6,
                c.catch_up_s
            )
        },
    );
    verdict(
        "(c) catch-up MB/s / raw 1 MiB sequential overwrite MB/s".into(),
        c.map_or(f64::NAN, |c| c.mb_per_s / raw),
        CATCH_UP_TARGET_RATIO,
        false,
        c.is_some(),
        detail,
    )
}

/// One row of the steered table: the clients' latency beside what ran (MB/s and seconds of a
/// catch-up or a copy; the pacer's throttled seconds), blank where nothing did.
fn write_steered_row(
    out: &mut String,
    name: &str,
    speed: Option<(f64, f64)>,
    d: &Summary,
    p99_ratio: f64,
    throttled_s: Option<f64>,
) {
    let cell =
        |x: Option<f64>, decimals: usize| x.map_or(String::new(), |v| format!("{v:.decimals$}"));
    let _ = writeln!(
        out,
        "{name:<28} {:>9} {:>9} {:>9.0} {:>9.0} {:>9.0} {p99_ratio:>10.2} {:>11}",
        cell(speed.map(|s| s.0), 1),
        cell(speed.map(|s| s.1), 2),
        d.p50_us,
        d.p99_us,
        d.p999_us,
        cell(throttled_s, 2),
    );
}

/// (g) the clients' p99 during the steered catch-up over alone; (h) steered over unthrottled
/// catch-up MB/s; and, for comparison, the unthrottled run's p99 ratio against (g)'s bound.
fn steered_targets(run: &RunResult, planned: bool) -> Vec<Target> {
    let st = run.steered.as_ref();
    let missing = || -> String {
        if planned {
            "steered catch-up did not complete (see errors)".into()
        } else {
            "steered catch-up skipped".into()
        }
    };
    let p99 = |r: &SteeredRun| {
        format!(
            "p99 {:.0} µs during, {:.0} µs alone",
            r.during.p99_us,
            st.map_or(f64::NAN, |s| s.alone.p99_us)
        )
    };
    let (steered, unthrottled) = (st.map(|s| &s.steered), st.map(|s| &s.unthrottled));
    let mut targets = vec![
        verdict(
            "(g) steered catch-up: clients' p99 during / alone".into(),
            steered.map_or(f64::NAN, |r| r.p99_ratio),
            steered::P99_TARGET_RATIO,
            true,
            st.is_some(),
            steered.map_or_else(missing, |r| {
                let of = st.and_then(|s| s.alone_primary_p99_ms).map_or_else(
                    || "the clients' p99 alone".to_string(),
                    |ms| {
                        let how = match st.map(|s| s.target_from) {
                            Some(TargetFrom::Windows) => "median of 400 ms",
                            _ => "whole window",
                        };
                        format!("the primary's commit p99 alone ({how}), {ms:.3} ms")
                    },
                );
                let times = st.map_or(steered::TARGET_OF_ALONE, |s| s.target_of_alone);
                let target = r.target_ms.unwrap_or(0.0);
                format!("{}, target {target:.3} ms = {times} × {of}", p99(r))
            }),
        ),
        verdict(
            "(h) steered / unthrottled catch-up MB/s".into(),
            st.map_or(f64::NAN, |s| s.speed_ratio),
            steered::SPEED_TARGET_RATIO,
            false,
            st.is_some(),
            st.map_or_else(missing, |s| {
                format!(
                    "{:.1} MB/s steered, {:.1} MB/s unthrottled",
                    s.steered.mb_per_s, s.unthrottled.mb_per_s
                )
            }),
        ),
        verdict(
            "(g') unthrottled catch-up, for comparison: p99 during / alone".into(),
            unthrottled.map_or(f64::NAN, |r| r.p99_ratio),
            steered::P99_TARGET_RATIO,
            true,
            st.is_some(),
            unthrottled.map_or_else(missing, p99),
        ),
    ];
    targets.extend(disk_share_targets(st, &missing));
    targets
}

/// (g'') and (h''): what the raw copies beside the clients say the disk allows.
fn disk_share_targets(st: Option<&SteeredResult>, missing: &dyn Fn() -> String) -> [Target; 2] {
    let floor = st.and_then(|s| {
        s.floor_copies()
            .min_by(|a, b| a.p99_ratio.total_cmp(&b.p99_ratio))
    });
    [
        verdict(
            "(g'') the disk's share: best raw copy at (h)'s floor speed, p99 during / alone".into(),
            floor.map_or(f64::NAN, |c| c.p99_ratio),
            steered::P99_TARGET_RATIO,
            true,
            floor.is_some(),
            st.map_or_else(missing, |s| {
                let each: Vec<String> = s
                    .floor_copies()
                    .map(|c| {
                        format!(
                            "{} KiB grain: p99 {:.0} µs ({:.2})",
                            c.grain.read_bytes >> 10,
                            c.during.p99_us,
                            c.p99_ratio
                        )
                    })
                    .collect();
                let verdict = match floor {
                    Some(c) if c.p99_ratio <= steered::P99_TARGET_RATIO => format!(
                        "within the bound, this disk allows (g) and (h) together in the {} KiB \
                         grain",
                        c.grain.read_bytes >> 10
                    ),
                    _ => "above the bound in every grain, (g) and (h) cannot both hold on this \
                          disk"
                        .to_string(),
                };
                format!(
                    "beside {:.1} MB/s of reads and new-file writes, no follower: {}; {verdict}",
                    floor.map_or(f64::NAN, |c| c.mb_per_s),
                    each.join(", ")
                )
            }),
        ),
        verdict(
            "(h'') the disk's share: fastest raw copy within (g)'s bound / unthrottled MB/s".into(),
            st.and_then(SteeredResult::disk_share_at_bound)
                .unwrap_or(0.0),
            steered::SPEED_TARGET_RATIO,
            false,
            floor.is_some(),
            st.map_or_else(missing, |s| {
                let rates: Vec<String> = s
                    .raw_copies
                    .iter()
                    .map(|c| {
                        let kib = c.grain.read_bytes >> 10;
                        format!("{:.1} MB/s ({kib} KiB): {:.2}", c.mb_per_s, c.p99_ratio)
                    })
                    .collect();
                format!("p99 / alone beside raw copies at {}", rates.join(", "))
            }),
        ),
    ]
}

pub(crate) fn verdict(
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
    Target {
        name,
        ratio,
        bound,
        at_most,
        pass: ran.then_some(met),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_respect_direction_and_missing_cases() {
        assert_eq!(
            verdict("a".into(), 1.2, 1.3, true, true, String::new()).pass,
            Some(true)
        );
        assert_eq!(
            verdict("a".into(), 0.6, 0.7, false, true, String::new()).pass,
            Some(false)
        );
        assert_eq!(
            verdict("a".into(), f64::NAN, 0.7, false, false, String::new()).pass,
            None
        );
    }
}
