//! What a `replicate` run measures and for how long: the full plan (the figures in
//! `docs/benchmarks.md`) and the quick plan (a smoke run of under a minute). Both run every
//! topology, record size and client count; they differ in durations and the catch-up size.
//!
//! Besides the in-process commit cases ([`CaseSpec`]), the topologies of [`NET_TOPOLOGIES`] run
//! network-client cases ([`NetCaseSpec`]) on the same cluster: the clients are
//! `logship_replicator::Client` connections to the primary's client port.

use std::time::Duration;

use serde::Serialize;

/// Payload sizes of the commit cases.
pub const RECORD_SIZES: [usize; 2] = [100, 4096];
/// Client counts of the commit cases.
pub const CLIENT_COUNTS: [usize; 2] = [1, MANY_CLIENTS];
/// The client count of the throughput target.
pub const MANY_CLIENTS: usize = 64;
/// The record size the latency and throughput targets are judged on.
pub const TARGET_RECORD_BYTES: usize = 100;
/// Payload of each catch-up record.
pub const CATCH_UP_RECORD_BYTES: usize = 4096;
/// Records per `append_batch` while filling the catch-up primary's log (1 MiB).
pub const CATCH_UP_BATCH_RECORDS: usize = 256;
/// Bytes of each loopback ping and pong.
pub const RTT_MESSAGE_BYTES: usize = 64;
/// The topologies that also run network-client cases.
pub const NET_TOPOLOGIES: [Topology; 2] = [Topology::None, Topology::OneSync];
/// Appends in flight per network connection in every network case.
pub const NET_PIPELINE: usize = 1;
/// Appends in flight per connection in the extra pipelined case of [`MANY_CLIENTS`] clients.
pub const NET_MANY_PIPELINE: usize = 16;
/// Threads driving a network case's connections, as pgbench's `-j 2` drives its 64 clients
/// (each thread polls its share of the connections); 0: one OS thread per connection.
pub const NET_DRIVERS: usize = 2;
/// The record size whose network cases (1 and [`MANY_CLIENTS`] clients, not pipelined) run
/// again with TLS.
pub const TLS_RECORD_BYTES: usize = 100;

/// A cluster shape: the primary's followers and its sync quorum. Serialized as its name in case
/// names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Topology {
    /// The primary alone: `remote_durable` equals local durability.
    #[serde(rename = "none")]
    None,
    /// One sync follower (`FIRST 1 (f1)`).
    #[serde(rename = "1sync")]
    OneSync,
    /// Two sync followers, either acknowledges (`ANY 1 (f1, f2)`).
    #[serde(rename = "2sync_any1")]
    TwoSyncAny1,
    /// Two sync followers, both acknowledge (`ANY 2 (f1, f2)`).
    #[serde(rename = "2sync_any2")]
    TwoSyncAny2,
    /// One sync follower and one async follower (`FIRST 1 (f1)`).
    #[serde(rename = "1sync_1async")]
    OneSyncOneAsync,
}

impl Topology {
    /// Every topology, in run order.
    pub const ALL: [Topology; 5] = [
        Topology::None,
        Topology::OneSync,
        Topology::TwoSyncAny1,
        Topology::TwoSyncAny2,
        Topology::OneSyncOneAsync,
    ];

    /// The name in case names.
    pub fn name(self) -> &'static str {
        match self {
            Topology::None => "none",
            Topology::OneSync => "1sync",
            Topology::TwoSyncAny1 => "2sync_any1",
            Topology::TwoSyncAny2 => "2sync_any2",
            Topology::OneSyncOneAsync => "1sync_1async",
        }
    }

    /// The topology called `name` in case names.
    pub fn from_name(name: &str) -> Option<Topology> {
        Topology::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The followers as `(node id, sync)`.
    pub fn followers(self) -> &'static [(&'static str, bool)] {
        match self {
            Topology::None => &[],
            Topology::OneSync => &[("f1", true)],
            Topology::TwoSyncAny1 | Topology::TwoSyncAny2 => &[("f1", true), ("f2", true)],
            Topology::OneSyncOneAsync => &[("f1", true), ("f2", false)],
        }
    }

    /// `replication.quorum`, when not the default (`FIRST 1 (<sync followers>)`).
    pub fn quorum(self) -> Option<&'static str> {
        match self {
            Topology::TwoSyncAny1 => Some("ANY 1 (f1, f2)"),
            Topology::TwoSyncAny2 => Some("ANY 2 (f1, f2)"),
            _ => None,
        }
    }

    /// Nodes in the cluster: the primary and every follower.
    pub fn nodes(self) -> usize {
        1 + self.followers().len()
    }

    /// Sync followers that must hold a commit.
    pub fn quorum_size(self) -> usize {
        match self {
            Topology::None => 0,
            Topology::TwoSyncAny2 => 2,
            _ => 1,
        }
    }

    /// Whether a commit waits for a follower.
    pub fn has_sync_follower(self) -> bool {
        self.followers().iter().any(|(_, sync)| *sync)
    }
}

/// How the 64-client cases run their clients (a 1-client case is always one thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientMode {
    /// One OS thread per client, looping on `append` + `wait()`.
    Threads,
    /// One tokio task per client on a multi-thread runtime with one worker per CPU, looping on
    /// `append` + `.await`.
    Tasks,
}

impl ClientMode {
    /// `threads` or `tasks`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientMode::Threads => "threads",
            ClientMode::Tasks => "tasks",
        }
    }
}

/// One commit case of a topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CaseSpec {
    /// The cluster shape.
    pub topology: Topology,
    /// Payload bytes per record.
    pub record_bytes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// How the clients run.
    pub mode: ClientMode,
}

impl CaseSpec {
    /// `replicate::commit/topology=1sync,size=100,clients=1`.
    pub fn name(&self) -> String {
        format!(
            "replicate::commit/topology={},size={},clients={}",
            self.topology.name(),
            self.record_bytes,
            self.clients
        )
    }
}

/// One network-client case of a topology: each client is one connection to the primary's
/// client port, appending at `remote_durable`; a 1-client case runs its connection on a thread
/// of its own, a many-client case on `drivers` threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NetCaseSpec {
    /// The cluster shape.
    pub topology: Topology,
    /// Payload bytes per record.
    pub record_bytes: usize,
    /// Concurrent connections.
    pub clients: usize,
    /// Appends in flight per connection ([`NET_PIPELINE`], or [`NET_MANY_PIPELINE`]).
    pub pipeline: usize,
    /// TLS on the client port and the replication link (a cluster of its own, started with
    /// certificates for the run).
    pub tls: bool,
    /// Threads that drive the connections of a case of more than one client, each polling its
    /// share ([`NET_DRIVERS`]); 0: one OS thread per connection.
    pub drivers: usize,
}

impl NetCaseSpec {
    /// `replicate::net/topology=1sync,size=100,clients=1`, with `,pipeline=N` once more than
    /// one append is in flight per connection, and `,tls` with TLS on.
    pub fn name(&self) -> String {
        let pipeline = if self.pipeline == 1 {
            String::new()
        } else {
            format!(",pipeline={}", self.pipeline)
        };
        let tls = if self.tls { ",tls" } else { "" };
        format!(
            "replicate::net/topology={},size={},clients={}{pipeline}{tls}",
            self.topology.name(),
            self.record_bytes,
            self.clients
        )
    }
}

/// One run's plan.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicatePlan {
    /// `"full"` or `"quick"`.
    pub name: &'static str,
    /// Duration of each raw-limit loop.
    #[serde(serialize_with = "secs")]
    pub raw_duration: Duration,
    /// Unmeasured run of each case's workload before its window.
    #[serde(serialize_with = "secs")]
    pub case_warm_up: Duration,
    /// Each case's measured window.
    #[serde(serialize_with = "secs")]
    pub case_duration: Duration,
    /// Disk probing just before and just after a 64-client case's window, each.
    #[serde(serialize_with = "secs")]
    pub probe_duration: Duration,
    /// How the 64-client cases run their clients.
    pub many_client_mode: ClientMode,
    /// The topologies to run, in order (all of them unless `--topologies` says otherwise).
    pub topologies: Vec<Topology>,
    /// Whether the network-client cases run (on the topologies of [`NET_TOPOLOGIES`]).
    pub network: bool,
    /// Whether the network-client cases of [`TLS_RECORD_BYTES`] run again with TLS on both
    /// ports (with `network`), on a cluster of their own after the plain one.
    pub tls: bool,
    /// Whether the in-process ideal commit with a follower reads the acknowledgement on a
    /// thread of its own that wakes the committing thread (`ideal.rs`), as the node does.
    pub ideal_handoff: bool,
    /// Whether the catch-up runs.
    pub catch_up: bool,
    /// Bytes of 4 KiB records in the catch-up primary's log.
    pub catch_up_bytes: u64,
    /// Longest the catch-up may take before the run reports it as failed.
    #[serde(serialize_with = "secs")]
    pub catch_up_timeout: Duration,
    /// Threads driving each many-client network case ([`NET_DRIVERS`]; 0: a thread per
    /// connection).
    pub net_drivers: usize,
    /// Whether the steered catch-up runs (`steered.rs`).
    pub steered: bool,
    /// Bytes of 4 KiB records in the steered catch-up's log.
    pub steered_bytes: u64,
    /// The window of the steered catch-up's clients alone (no catch-up running).
    #[serde(serialize_with = "secs")]
    pub steered_alone: Duration,
    /// The steered run's latency target over the primary's commit p99 alone
    /// ([`TARGET_OF_ALONE`](crate::replicate::steered::TARGET_OF_ALONE) unless set).
    pub steered_target_of_alone: f64,
    /// Which of the primary's commit p99s alone the steered run's target multiplies.
    pub steered_target_from: TargetFrom,
}

/// The primary's commit p99 alone that the steered run's latency target is set from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetFrom {
    /// The p99 of every commit of the window alone (`commit_p99_ms` of the pacer's status):
    /// with the disk's slow stretches, as the clients' p99 alone that (g) divides by.
    Whole,
    /// The median of the p99s of its 400 ms stretches (`recent_commit_p99_ms`, sampled): a
    /// quiet moment's p99.
    Windows,
}

impl ReplicatePlan {
    /// 3 s raw loops, 3 s cases, 1 GiB catch-up, 2 GiB steered catch-up: about three minutes.
    pub fn full(many_client_mode: ClientMode) -> ReplicatePlan {
        ReplicatePlan {
            name: "full",
            raw_duration: Duration::from_secs(3),
            case_warm_up: Duration::from_millis(500),
            case_duration: Duration::from_secs(3),
            probe_duration: Duration::from_millis(250),
            many_client_mode,
            topologies: Topology::ALL.to_vec(),
            network: true,
            tls: true,
            ideal_handoff: false,
            catch_up: true,
            catch_up_bytes: 1 << 30,
            catch_up_timeout: Duration::from_secs(60),
            net_drivers: NET_DRIVERS,
            steered: true,
            steered_bytes: 2 << 30,
            steered_alone: Duration::from_secs(3),
            steered_target_of_alone: crate::replicate::steered::TARGET_OF_ALONE,
            steered_target_from: TargetFrom::Whole,
        }
    }

    /// 1 s raw loops and cases, 128 MiB catch-up, 256 MiB steered catch-up: about a minute.
    pub fn quick(many_client_mode: ClientMode) -> ReplicatePlan {
        ReplicatePlan {
            name: "quick",
            raw_duration: Duration::from_secs(1),
            case_warm_up: Duration::from_millis(250),
            case_duration: Duration::from_secs(1),
            probe_duration: Duration::from_millis(100),
            many_client_mode,
            topologies: Topology::ALL.to_vec(),
            network: true,
            tls: true,
            ideal_handoff: false,
            catch_up: true,
            catch_up_bytes: 128 << 20,
            catch_up_timeout: Duration::from_secs(20),
            net_drivers: NET_DRIVERS,
            steered: true,
            steered_bytes: 256 << 20,
            steered_alone: Duration::from_secs(2),
            steered_target_of_alone: crate::replicate::steered::TARGET_OF_ALONE,
            steered_target_from: TargetFrom::Whole,
        }
    }

    /// The cases of one topology, in run order.
    pub fn cases(&self, topology: Topology) -> Vec<CaseSpec> {
        let mut cases = Vec::new();
        for record_bytes in RECORD_SIZES {
            for clients in CLIENT_COUNTS {
                let mode = if clients == 1 {
                    ClientMode::Threads
                } else {
                    self.many_client_mode
                };
                cases.push(CaseSpec {
                    topology,
                    record_bytes,
                    clients,
                    mode,
                });
            }
        }
        cases
    }

    /// The network-client cases of one topology, in run order (none unless `network` and the
    /// topology is one of [`NET_TOPOLOGIES`]).
    pub fn net_cases(&self, topology: Topology) -> Vec<NetCaseSpec> {
        if !self.network || !NET_TOPOLOGIES.contains(&topology) {
            return Vec::new();
        }
        let mut cases = Vec::new();
        for record_bytes in RECORD_SIZES {
            for clients in CLIENT_COUNTS {
                let spec = NetCaseSpec {
                    topology,
                    record_bytes,
                    clients,
                    pipeline: NET_PIPELINE,
                    tls: false,
                    drivers: self.net_drivers,
                };
                cases.push(spec);
                if clients == MANY_CLIENTS {
                    cases.push(NetCaseSpec {
                        pipeline: NET_MANY_PIPELINE,
                        ..spec
                    });
                }
            }
        }
        if self.tls {
            let plain: Vec<NetCaseSpec> = (cases.iter())
                .filter(|c| c.record_bytes == TLS_RECORD_BYTES && c.pipeline == NET_PIPELINE)
                .copied()
                .collect();
            cases.extend(plain.into_iter().map(|c| NetCaseSpec { tls: true, ..c }));
        }
        cases
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topology_runs_every_size_and_client_count() {
        let plan = ReplicatePlan::quick(ClientMode::Tasks);
        for t in Topology::ALL {
            let cases = plan.cases(t);
            assert_eq!(cases.len(), RECORD_SIZES.len() * CLIENT_COUNTS.len());
            assert!(cases
                .iter()
                .all(|c| (c.clients == 1) == (c.mode == ClientMode::Threads)));
        }
        let name = plan.cases(Topology::OneSync)[0].name();
        assert_eq!(name, "replicate::commit/topology=1sync,size=100,clients=1");
        for t in Topology::ALL {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
            assert_eq!(Topology::from_name(t.name()), Some(t));
        }
        assert_eq!(Topology::from_name("3sync"), None);
    }

    #[test]
    fn network_cases_run_on_their_topologies_only() {
        let mut plan = ReplicatePlan::quick(ClientMode::Tasks);
        let names: Vec<String> = (plan.net_cases(Topology::OneSync).iter())
            .map(NetCaseSpec::name)
            .collect();
        assert_eq!(
            names,
            [
                "replicate::net/topology=1sync,size=100,clients=1",
                "replicate::net/topology=1sync,size=100,clients=64",
                "replicate::net/topology=1sync,size=100,clients=64,pipeline=16",
                "replicate::net/topology=1sync,size=4096,clients=1",
                "replicate::net/topology=1sync,size=4096,clients=64",
                "replicate::net/topology=1sync,size=4096,clients=64,pipeline=16",
                "replicate::net/topology=1sync,size=100,clients=1,tls",
                "replicate::net/topology=1sync,size=100,clients=64,tls",
            ]
        );
        assert_eq!(plan.net_cases(Topology::None).len(), 8);
        assert!(plan.net_cases(Topology::TwoSyncAny1).is_empty());
        assert!((plan.net_cases(Topology::None).iter())
            .all(|c| c.pipeline == NET_PIPELINE || c.clients == MANY_CLIENTS));
        plan.network = false;
        assert!(plan.net_cases(Topology::OneSync).is_empty());
    }

    #[test]
    fn a_pipelined_network_case_says_so_in_its_name() {
        let spec = NetCaseSpec {
            topology: Topology::None,
            record_bytes: 4096,
            clients: 64,
            pipeline: 8,
            tls: false,
            drivers: NET_DRIVERS,
        };
        assert_eq!(
            spec.name(),
            "replicate::net/topology=none,size=4096,clients=64,pipeline=8"
        );
    }

    #[test]
    fn quorums_name_only_sync_followers() {
        for t in Topology::ALL {
            let Some(q) = t.quorum() else { continue };
            for (name, sync) in t.followers() {
                assert!(!q.contains(name) || *sync, "{q} names async {name}");
            }
        }
        assert!(!Topology::None.has_sync_follower());
        assert!(Topology::OneSyncOneAsync.has_sync_follower());
    }
}
