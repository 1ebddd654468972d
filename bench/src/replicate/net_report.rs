//! The network-client cases in the `replicate` report: their ratios, their targets, their
//! table, and the PostgreSQL peer beside them when `--peer postgres` ran.
//!
//! A network commit pays what an in-process one pays plus one round trip between the client
//! and the primary (the request out, the answer back), so its latency limit is the in-process
//! limit of its topology plus the loopback RTT: `fdatasync + RTT` without followers, and
//! `max(fdatasync, RTT + fdatasync) + RTT` with a sync follower, from the fdatasync p50
//! measured in the case's own moments and the RTT p50 of the same run. A 1-client case is
//! judged on its p50 over that limit; a 64-client case on its records/s over the in-process
//! case of the same topology and size (the cost of the client port when the disk is shared by
//! many commits).
//!
//! Beside PostgreSQL (a primary and one synchronous standby, pgbench one-INSERT
//! transactions): records/s over tps and p50 over p50 for the case of the same record size and
//! client count; the throughput target is judged on the `1sync` topology only, the one that
//! matches the peer's.

use std::fmt::Write as _;

use serde::Serialize;

use crate::replicate::net::NetCaseResult;
use crate::replicate::null_port::PortCeiling;
use crate::replicate::peer::{PeerCase, PeerResult};
use crate::replicate::plan::{Topology, MANY_CLIENTS};
use crate::replicate::report::{against_ideal, fdatasync_p50, find, latency_limit_us, verdict};
use crate::replicate::run::RunResult;
use crate::report::Target;

/// A 1-client network case: commit p50 over the latency limit plus one RTT, at most.
pub const NET_LATENCY_TARGET_RATIO: f64 = 1.15;
/// A 64-client network case: records/s over the in-process case's, at least.
pub const NET_THROUGHPUT_TARGET_RATIO: f64 = 0.70;
/// A 64-client `1sync` network case: records/s over PostgreSQL's tps, at least.
pub const PEER_THROUGHPUT_TARGET_RATIO: f64 = 5.0;

/// One network case's figures as ratios.
#[derive(Clone, Debug, Serialize)]
pub struct NetRatios {
    /// The case's name.
    pub name: String,
    /// The commit latency limit of a network client, µs: the in-process limit of the topology
    /// from the case's own disk figure, plus the RTT p50.
    pub latency_limit_us: f64,
    /// Commit p50 over that limit (1.0 is the limit).
    pub latency_p50: f64,
    /// Commit p50 over the limit from the standalone raw fdatasync loop.
    pub latency_p50_standalone: f64,
    /// Records/s over the in-process case's of the same topology, size and clients.
    pub vs_in_process: Option<f64>,
    /// A many-client, one-in-flight case: records/s over the null port's of the same size
    /// (`null_port.rs`), the share of what the network path can carry here.
    pub vs_ceiling: Option<f64>,
    /// The same case: the null port's records/s over the in-process case's, the most
    /// `vs_in_process` can reach on this machine.
    pub ceiling_vs_in_process: Option<f64>,
    /// CPU time per record of the whole process (clients and nodes), µs.
    pub cpu_us_per_record: f64,
    /// The clients' share of it, µs.
    pub client_cpu_us_per_record: f64,
    /// A many-client case: the records/s every CPU of the machine would carry at this case's
    /// CPU time per record (the utilization law, at the cost measured at this load), over the
    /// in-process case's records/s: how far CPU alone lets the case go here.
    pub cpu_bound_vs_in_process: Option<f64>,
    /// The same without the clients' CPU: how far the nodes alone could go with the machine
    /// to themselves (clients elsewhere).
    pub nodes_cpu_bound_vs_in_process: Option<f64>,
    /// Beside the peer's case of the same size and clients, if the peer ran.
    pub vs_peer: Option<PeerRatio>,
}

/// A network case beside the peer's case of the same record size and client count.
#[derive(Clone, Debug, Serialize)]
pub struct PeerRatio {
    /// The peer's case, `postgresql::insert/size=100,clients=64`.
    pub peer_case: String,
    /// Records/s over the peer's tps (higher is better).
    pub records_per_s: f64,
    /// Commit p50 over the peer's p50 (lower is better).
    pub p50: f64,
}

/// The network commit latency limit, µs: the in-process limit plus one client round trip.
pub fn net_latency_limit_us(run: &RunResult, topology: Topology, fdatasync: f64) -> f64 {
    latency_limit_us(run, topology, fdatasync) + run.raw.rtt.latency.p50_us
}

/// The ratios of every network case, in run order, on a machine of `cpus` CPUs.
pub fn net_ratios(run: &RunResult, peer: Option<&PeerResult>, cpus: usize) -> Vec<NetRatios> {
    (run.net_cases.iter())
        .map(|n| {
            let c = &n.case;
            let limit = net_latency_limit_us(run, c.topology, c.disk.p50_us);
            let standalone_fdatasync = fdatasync_p50(run, c.topology.nodes());
            let standalone = net_latency_limit_us(run, c.topology, standalone_fdatasync);
            let in_process = find(run, c.topology, c.record_bytes, c.clients);
            let peer_case = peer.and_then(|p| p.find(c.record_bytes, c.clients));
            let ceiling = ceiling_of(run, n).map(|p| p.records_per_s);
            let per_record = |cores: f64| cores / c.records_per_s * 1e6;
            let (cpu_us, client_us) = (per_record(c.cpu_cores), per_record(n.client_cpu_cores));
            // The most `cpus` CPUs carry at `us` of CPU per record, over the in-process figure.
            let bound = |us: f64| {
                let many = c.clients == MANY_CLIENTS && us > 0.0;
                let i = in_process.filter(|_| many)?;
                Some(cpus as f64 / us * 1e6 / i.records_per_s)
            };
            NetRatios {
                name: c.name.clone(),
                latency_limit_us: limit,
                latency_p50: c.latency.p50_us / limit,
                latency_p50_standalone: c.latency.p50_us / standalone,
                vs_in_process: in_process.map(|i| c.records_per_s / i.records_per_s),
                vs_ceiling: ceiling.map(|p| c.records_per_s / p),
                ceiling_vs_in_process: ceiling.zip(in_process).map(|(p, i)| p / i.records_per_s),
                cpu_us_per_record: cpu_us,
                client_cpu_us_per_record: client_us,
                cpu_bound_vs_in_process: bound(cpu_us),
                nodes_cpu_bound_vs_in_process: bound(cpu_us - client_us),
                vs_peer: peer_case.map(|p| peer_ratio(n, p)),
            }
        })
        .collect()
}

/// The null-port ceiling of a many-client, one-in-flight case (of its record size), if any.
fn ceiling_of<'r>(run: &'r RunResult, n: &NetCaseResult) -> Option<&'r PortCeiling> {
    let c = &n.case;
    if n.pipeline != 1 || c.clients != MANY_CLIENTS {
        return None;
    }
    (run.raw.null_port.iter()).find(|p| p.record_bytes == c.record_bytes && p.clients == c.clients)
}

fn peer_ratio(n: &NetCaseResult, p: &PeerCase) -> PeerRatio {
    PeerRatio {
        peer_case: p.name(),
        records_per_s: n.case.records_per_s / p.tps,
        p50: n.case.latency.p50_us / p.p50_us,
    }
}

/// The targets of the network cases, one per case: (d) latency with 1 client, (e) throughput
/// against in-process with 64; then (f) the peer's (64 clients, `1sync`), if it ran.
pub fn net_targets(
    run: &RunResult,
    ratios: &[NetRatios],
    peer: Option<&PeerResult>,
) -> Vec<Target> {
    let mut targets = Vec::new();
    for (n, r) in run.net_cases.iter().zip(ratios) {
        targets.push(case_target(run, n, r));
    }
    let Some(peer) = peer else {
        return targets;
    };
    for (n, r) in run.net_cases.iter().zip(ratios) {
        let c = &n.case;
        if c.topology == Topology::OneSync && c.clients == MANY_CLIENTS && !n.tls {
            targets.push(peer_target(n, r, peer));
        }
    }
    targets
}

fn case_target(run: &RunResult, n: &NetCaseResult, r: &NetRatios) -> Target {
    let c = &n.case;
    let rtt = run.raw.rtt.latency.p50_us;
    if c.clients == 1 {
        let formula = if c.topology.has_sync_follower() {
            "(max(fdatasync, RTT + fdatasync) + RTT)"
        } else {
            "(fdatasync + RTT)"
        };
        return verdict(
            format!("(d) {}: commit p50 / {formula} (paired)", c.name),
            r.latency_p50,
            NET_LATENCY_TARGET_RATIO,
            true,
            c.latency.count > 0,
            format!(
                "commit p50 {:.1} µs, limit {:.1} µs from fdatasync p50 {:.1} µs and RTT p50 \
                 {rtt:.1} µs; with the standalone fdatasync: ratio {:.2}{}",
                c.latency.p50_us,
                r.latency_limit_us,
                c.disk.p50_us,
                r.latency_p50_standalone,
                against_ideal(c, r.latency_limit_us)
            ),
        );
    }
    let in_process = find(run, c.topology, c.record_bytes, c.clients);
    verdict(
        format!("(e) {}: records/s / the in-process case's", c.name),
        r.vs_in_process.unwrap_or(f64::NAN),
        NET_THROUGHPUT_TARGET_RATIO,
        false,
        in_process.is_some(),
        in_process.map_or_else(
            || "the in-process case did not run".into(),
            |i| {
                let ceiling = match (ceiling_of(run, n), r.vs_ceiling, r.ceiling_vs_in_process) {
                    (Some(p), Some(share), Some(most)) => format!(
                        "; null-port ceiling {:.0} rec/s: this case {share:.2} of it, the \
                         ceiling {most:.2} of in-process",
                        p.records_per_s
                    ),
                    _ => String::new(),
                };
                let cpu = match (r.cpu_bound_vs_in_process, r.nodes_cpu_bound_vs_in_process) {
                    (Some(all), Some(nodes)) => format!(
                        "; CPU per record {:.1} µs, {:.1} of it the clients' (in process {:.1} \
                         µs): every CPU busy at that cost carries {all:.2} of in-process, \
                         {nodes:.2} without the clients",
                        r.cpu_us_per_record,
                        r.client_cpu_us_per_record,
                        i.cpu_cores / i.records_per_s * 1e6
                    ),
                    _ => String::new(),
                };
                format!(
                    "{:.0} vs {:.0} rec/s ({}){ceiling}{cpu}",
                    c.records_per_s, i.records_per_s, i.name
                )
            },
        ),
    )
}

fn peer_target(n: &NetCaseResult, r: &NetRatios, peer: &PeerResult) -> Target {
    let c = &n.case;
    let p = peer.find(c.record_bytes, c.clients);
    let detail = match (p, &peer.error) {
        (Some(p), _) => format!(
            "{:.0} rec/s vs {:.0} tps ({})",
            c.records_per_s,
            p.tps,
            p.name()
        ),
        (None, Some(e)) => format!("the peer gave no figures: {e}"),
        (None, None) => "the peer has no case of this size and client count".into(),
    };
    verdict(
        format!("(f) {}: records/s / PostgreSQL tps", c.name),
        r.vs_peer.as_ref().map_or(f64::NAN, |v| v.records_per_s),
        PEER_THROUGHPUT_TARGET_RATIO,
        false,
        p.is_some(),
        detail,
    )
}

/// The network cases' table, and the peer's figures under it.
pub fn write_net_cases(
    out: &mut String,
    run: &RunResult,
    ratios: &[NetRatios],
    peer: Option<&PeerResult>,
) {
    if run.net_cases.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nnetwork clients (level remote_durable; each client is one connection to the primary's \
         client port, one append in flight unless the name says pipeline=N; 1 client on a \
         thread of its own, 64 on the driver threads; same cluster as the in-process cases; \
         limit = the in-process limit + RTT; x/in-proc = records/s over the in-process case's; \
         ÷ceil = records/s over the null-port ceiling of the size; /pg = beside PostgreSQL's \
         case of the same size and clients):"
    );
    let _ = writeln!(
        out,
        "{:<56} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>9} {:>8} {:>5}",
        "case",
        "rec/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "disk µs",
        "limit µs",
        "p50/limit",
        "x/in-proc",
        "÷ceil",
        "rec/s/pg",
        "p50/pg",
        "CPUs"
    );
    let opt = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"));
    for (n, r) in run.net_cases.iter().zip(ratios) {
        let c = &n.case;
        let _ = writeln!(
            out,
            "{:<56} {:>9.0} {:>7.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>9} {:>6} {:>9} {:>8} {:>5.2}",
            c.name,
            c.records_per_s,
            c.mb_per_s,
            c.latency.p50_us,
            c.latency.p99_us,
            c.latency.p999_us,
            c.disk.p50_us,
            r.latency_limit_us,
            r.latency_p50,
            opt(r.vs_in_process),
            opt(r.vs_ceiling),
            opt(r.vs_peer.as_ref().map(|v| v.records_per_s)),
            opt(r.vs_peer.as_ref().map(|v| v.p50)),
            c.cpu_cores
        );
    }
    if let Some(peer) = peer {
        write_peer(out, peer);
    }
}

fn write_peer(out: &mut String, peer: &PeerResult) {
    let version = peer.cases.first().map_or("", |c| c.version.as_str());
    let _ = writeln!(
        out,
        "\nPostgreSQL {version} peer (primary + synchronous standby, pgbench one-INSERT \
         transactions; `{}`, {:.0} s):",
        peer.command, peer.elapsed_s
    );
    if let Some(e) = &peer.error {
        let _ = writeln!(out, "  gave no figures, so no ratios: {e}");
        return;
    }
    let _ = writeln!(
        out,
        "{:<56} {:>9} {:>9} {:>9} {:>9}",
        "case", "tps", "p50 µs", "p99 µs", "p99.9 µs"
    );
    for c in &peer.cases {
        let _ = writeln!(
            out,
            "{:<56} {:>9.0} {:>9.1} {:>9.1} {:>9.1}",
            c.name(),
            c.tps,
            c.p50_us,
            c.p99_us,
            c.p999_us
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::Summary;
    use crate::raw::{FileKind, RawResult};
    use crate::replicate::commit::{Backends, CaseResult};
    use crate::replicate::peer::{PeerCase, POSTGRES};
    use crate::replicate::plan::ClientMode;
    use crate::replicate::rtt::RttResult;
    use crate::replicate::run::{RawLimits, StreamsResult};

    const RTT_US: f64 = 80.0;

    fn summary(p50_us: f64) -> Summary {
        Summary {
            count: 100,
            p50_us,
            ..Summary::default()
        }
    }

    fn raw(p50_us: f64) -> RawResult {
        RawResult {
            name: "raw".into(),
            block_bytes: 4096,
            file: FileKind::Prewritten,
            bytes: 0,
            elapsed_s: 1.0,
            mb_per_s: 1.0,
            ops_per_s: 1.0,
            latency: summary(p50_us),
        }
    }

    /// A case of `topology`, 100 B, `clients`, at `rate` records/s with commit p50 `p50` and
    /// disk p50 `disk`.
    fn case(topology: Topology, clients: usize, rate: f64, p50: f64, disk: f64) -> CaseResult {
        CaseResult {
            name: format!("{}/{clients}", topology.name()),
            topology,
            record_bytes: 100,
            clients,
            mode: ClientMode::Threads,
            client_threads: clients,
            records: 1,
            elapsed_s: 1.0,
            records_per_s: rate,
            mb_per_s: 0.0,
            latency: summary(p50),
            disk: summary(disk),
            disk_paired: clients == 1,
            ideal: None,
            ideal_handoff: false,
            cpu_cores: 1.0,
            early_acks: 0,
            first_early_ack: None,
            link_failures: 0,
            primary_writes: 1,
            primary_records_per_write: 1.0,
            primary_caller_writes: 0,
        }
    }

    fn net(case: CaseResult) -> NetCaseResult {
        NetCaseResult {
            case,
            pipeline: 1,
            tls: false,
            client_cpu_cores: 0.25,
        }
    }

    fn run(cases: Vec<CaseResult>, net_cases: Vec<NetCaseResult>) -> RunResult {
        let streams = |streams, p50| StreamsResult {
            name: format!("streams={streams}"),
            streams,
            ops_per_s: 1.0,
            latency: summary(p50),
        };
        RunResult {
            backends: Backends::default(),
            raw: RawLimits {
                fdatasync_4k: raw(100.0),
                fdatasync_4k_streams: vec![streams(2, 200.0), streams(3, 300.0)],
                null_port: Vec::new(),
                rtt: RttResult {
                    name: "rtt".into(),
                    message_bytes: 64,
                    elapsed_s: 1.0,
                    ops_per_s: 1.0,
                    latency: summary(RTT_US),
                },
                bandwidth_1m: raw(1000.0),
                fdatasync_4k_after: raw(100.0),
            },
            cases,
            net_cases,
            peak_rss_kib_before_catch_up: 0,
            catch_up: None,
            steered: None,
            errors: Vec::new(),
        }
    }

    fn peer(cases: Vec<PeerCase>, error: Option<&str>) -> PeerResult {
        PeerResult {
            system: POSTGRES.into(),
            command: "bash peers/postgres.sh".into(),
            elapsed_s: 1.0,
            cases,
            error: error.map(str::to_string),
            output: String::new(),
        }
    }

    fn pg(clients: usize, tps: f64, p50_us: f64) -> PeerCase {
        PeerCase {
            system: POSTGRES.into(),
            version: "15.14".into(),
            clients,
            record_bytes: 100,
            tps,
            p50_us,
            p99_us: 2.0 * p50_us,
            p999_us: 3.0 * p50_us,
        }
    }

    fn near(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_network_commit_is_allowed_one_more_round_trip() {
        // 1sync: max(200, 80 + 200) + 80 = 360 µs; none: 150 + 80 = 230 µs.
        let r = run(
            Vec::new(),
            vec![
                net(case(Topology::OneSync, 1, 2000.0, 396.0, 200.0)),
                net(case(Topology::None, 1, 4000.0, 276.0, 150.0)),
            ],
        );
        let ratios = net_ratios(&r, None, 2);
        assert!(near(ratios[0].latency_limit_us, 360.0));
        assert!(near(ratios[0].latency_p50, 1.1));
        // Standalone: two streams at 200 µs.
        assert!(near(ratios[0].latency_p50_standalone, 1.1));
        assert!(near(ratios[1].latency_limit_us, 230.0));
        assert!(near(ratios[1].latency_p50, 1.2));
        assert!(near(ratios[1].latency_p50_standalone, 276.0 / 180.0));
        let targets = net_targets(&r, &ratios, None);
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].pass, Some(true));
        assert_eq!(targets[1].pass, Some(false));
        assert!(targets[0]
            .name
            .contains("max(fdatasync, RTT + fdatasync) + RTT"));
        assert!(targets[1].name.contains("(fdatasync + RTT)"));
    }

    #[test]
    fn many_network_clients_are_judged_against_the_in_process_case() {
        let r = run(
            vec![case(
                Topology::OneSync,
                MANY_CLIENTS,
                10_000.0,
                900.0,
                200.0,
            )],
            vec![
                net(case(
                    Topology::OneSync,
                    MANY_CLIENTS,
                    7_000.0,
                    1000.0,
                    200.0,
                )),
                net(case(Topology::None, MANY_CLIENTS, 9_000.0, 600.0, 150.0)),
            ],
        );
        let ratios = net_ratios(&r, None, 2);
        assert!(near(ratios[0].vs_in_process.unwrap(), 0.7));
        assert_eq!(ratios[1].vs_in_process, None);
        // 1 CPU busy at 7,000 records/s, a quarter of it the clients': 142.9 µs a record, of
        // which 35.7 the clients'; 2 CPUs carry 14,000 (1.4 of in-process), 18,667 without
        // the clients (1.87).
        assert!(near(ratios[0].cpu_us_per_record, 1e6 / 7_000.0));
        assert!(near(ratios[0].client_cpu_us_per_record, 0.25e6 / 7_000.0));
        assert!(near(ratios[0].cpu_bound_vs_in_process.unwrap(), 1.4));
        assert!(near(
            ratios[0].nodes_cpu_bound_vs_in_process.unwrap(),
            2.0 / 0.75 * 0.7
        ));
        assert_eq!(ratios[1].cpu_bound_vs_in_process, None);
        let targets = net_targets(&r, &ratios, None);
        assert_eq!(targets[0].pass, Some(true));
        assert!(
            targets[0]
                .detail
                .contains("carries 1.40 of in-process, 1.87 without"),
            "{:?}",
            targets[0]
        );
        // The in-process `none` case did not run: no verdict.
        assert_eq!(targets[1].pass, None);
    }

    #[test]
    fn a_one_in_flight_case_is_also_set_against_the_null_port_of_its_size() {
        let in_process = case(Topology::OneSync, MANY_CLIENTS, 10_000.0, 900.0, 200.0);
        let one = net(case(
            Topology::OneSync,
            MANY_CLIENTS,
            3_000.0,
            1000.0,
            200.0,
        ));
        let pipelined = NetCaseResult {
            pipeline: 16,
            ..net(one.case.clone())
        };
        let mut r = run(vec![in_process], vec![one, pipelined]);
        let ceiling = |record_bytes, records_per_s| PortCeiling {
            name: format!("raw::null_port/size={record_bytes},clients={MANY_CLIENTS}"),
            record_bytes,
            clients: MANY_CLIENTS,
            transport: "portable",
            records_per_s,
            latency: summary(100.0),
            cpu_cores: 1.0,
            client_cpu_cores: 0.5,
        };
        r.raw.null_port = vec![ceiling(4096, 1_000.0), ceiling(100, 5_000.0)];
        let ratios = net_ratios(&r, None, 2);
        assert!(near(ratios[0].vs_ceiling.unwrap(), 0.6));
        assert!(near(ratios[0].ceiling_vs_in_process.unwrap(), 0.5));
        assert_eq!(
            ratios[1].vs_ceiling, None,
            "pipelined: no one-in-flight ceiling"
        );
        let targets = net_targets(&r, &ratios, None);
        assert!(
            targets[0].detail.contains("null-port ceiling 5000 rec/s"),
            "{:?}",
            targets[0]
        );
    }

    #[test]
    fn the_peer_is_compared_by_size_and_clients_and_judged_on_1sync() {
        let r = run(
            Vec::new(),
            vec![
                net(case(Topology::OneSync, 1, 2000.0, 400.0, 200.0)),
                net(case(
                    Topology::OneSync,
                    MANY_CLIENTS,
                    75_000.0,
                    800.0,
                    200.0,
                )),
                net(case(Topology::None, MANY_CLIENTS, 150_000.0, 400.0, 150.0)),
            ],
        );
        let p = peer(
            vec![pg(1, 1500.0, 640.0), pg(MANY_CLIENTS, 15_000.0, 3600.0)],
            None,
        );
        let ratios = net_ratios(&r, Some(&p), 2);
        let single = ratios[0].vs_peer.as_ref().unwrap();
        assert!(near(single.p50, 400.0 / 640.0));
        assert_eq!(single.peer_case, "postgresql::insert/size=100,clients=1");
        assert!(near(ratios[1].vs_peer.as_ref().unwrap().records_per_s, 5.0));
        assert!(near(
            ratios[2].vs_peer.as_ref().unwrap().records_per_s,
            10.0
        ));
        let targets = net_targets(&r, &ratios, Some(&p));
        // One per network case, and the peer's for the 64-client 1sync case only.
        assert_eq!(targets.len(), 4);
        assert!(
            targets[3].name.contains("PostgreSQL tps"),
            "{}",
            targets[3].name
        );
        assert_eq!(targets[3].pass, Some(true));
        let mut table = String::new();
        write_net_cases(&mut table, &r, &ratios, Some(&p));
        assert!(
            table.contains("postgresql::insert/size=100,clients=64"),
            "{table}"
        );
        assert!(table.contains("PostgreSQL 15.14 peer"), "{table}");
    }

    #[test]
    fn a_failed_peer_leaves_no_ratio_and_says_why() {
        let r = run(
            Vec::new(),
            vec![net(case(
                Topology::OneSync,
                MANY_CLIENTS,
                75_000.0,
                800.0,
                200.0,
            ))],
        );
        let p = peer(
            Vec::new(),
            Some("the script failed: this script needs root"),
        );
        let ratios = net_ratios(&r, Some(&p), 2);
        assert!(ratios[0].vs_peer.is_none());
        let targets = net_targets(&r, &ratios, Some(&p));
        let last = targets.last().unwrap();
        assert_eq!(last.pass, None);
        assert!(last.detail.contains("needs root"), "{}", last.detail);
        let mut table = String::new();
        write_net_cases(&mut table, &r, &ratios, Some(&p));
        assert!(table.contains("gave no figures, so no ratios"), "{table}");
        let json = serde_json::to_value(&ratios).unwrap();
        assert!(json[0]["vs_peer"].is_null());
    }

    #[test]
    fn a_network_case_serializes_as_a_commit_case_with_its_pipeline() {
        let json = serde_json::to_value(net(case(Topology::None, 1, 1.0, 1.0, 1.0))).unwrap();
        assert_eq!(json["name"], "none/1");
        assert_eq!(json["records_per_s"], 1.0);
        assert_eq!(json["pipeline"], 1);
    }
}
