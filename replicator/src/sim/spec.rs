//! What a simulated cluster is: its nodes, their roles and configuration, the quorum and its
//! policy, the network's and the disks' behaviour. [`ClusterSpec::from_seed`] draws one from a
//! seed; scenario tests build one by hand.
//!
//! Nodes are named `n0`, `n1`, ... and listen for replication at `127.0.0.1:(10000 + i)`.
//! Without failover node 0 is the primary and nodes `1..=n` its followers. With failover
//! ([`ClusterSpec::failover`]) every node is a member of the cluster table (node 0 a sync
//! one), every sync node votes, all start as followers, and an election picks the primary.
//!
//! Also here: [`sub_seed`], which splits the run's one seed into independent streams (the
//! schedule, the network, the disks, the crashes, each replica), so that turning one kind of
//! fault off does not shift the choices of the others.

use std::net::SocketAddr;
use std::time::Duration;

use crate::backoff::BackoffConfig;
use crate::breaker::BreakerConfig;
use crate::commit::QuorumPolicy;
use crate::pacing::PacingConfig;
use crate::protocol::auth::{ClusterKey, KeyRing};
use crate::quorum::QuorumSpec;
use crate::vocab::{
    ElectionConfig, FollowerConfig, FollowerLink, Member, NodeId, PrimaryConfig, Rng, Timeouts,
};

use super::net::NetConfig;

/// The cluster id every simulated node shares.
pub const CLUSTER_ID: &str = "sim";
/// The key every simulated node shares.
const CLUSTER_KEY: &[u8] = b"the simulator's cluster key, long enough";
/// The key a run may be rotating to ([`ClusterSpec::key_ring`]).
const NEXT_CLUSTER_KEY: &[u8] = b"the simulator's next cluster key, as long";
/// The first follower's replication port; follower `i` listens at `BASE_PORT + i`.
const BASE_PORT: u16 = 10_000;
/// The primary's index.
pub const PRIMARY: usize = 0;

/// Independent random streams drawn from one run seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The cluster's shape.
    Spec = 1,
    /// The schedule of faults and client operations.
    Schedule = 2,
    /// The network's delays and faults.
    Net = 3,
    /// Disk latencies.
    Disk = 4,
    /// What a crash keeps of unsynced writes.
    Crash = 5,
    /// Executor choices: how frames are split, the order of concurrent completions.
    Exec = 6,
    /// Client payloads.
    Payload = 7,
    /// Replicas' seeds (backoff jitter, nonces), mixed with the node and its incarnation.
    Replica = 8,
}

/// A seed for `stream` of the run seeded `seed` (SplitMix64 of both: nearby seeds and streams
/// give unrelated sequences).
pub fn sub_seed(seed: u64, stream: Stream, extra: u64) -> u64 {
    let mut r = Rng::new(seed ^ (stream as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let a = r.next_u64();
    Rng::new(a ^ extra.wrapping_mul(0xd1b5_4a32_d192_ed03)).next_u64()
}

/// One follower's role in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerSpec {
    /// A sync follower (a member of the quorum) or an async one.
    pub sync: bool,
    /// Applied follows durable; otherwise the simulator reports applied LSNs itself, late.
    pub auto_apply: bool,
}

/// Disk latencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// Bounds of an fdatasync's latency.
    pub sync_latency: (Duration, Duration),
    /// Upper bound of an fdatasync's latency while the disk is slow.
    pub slow_sync_max: Duration,
    /// Bounds of a read job's latency (catch-up chunks, CRC lookups, fetches, take-back).
    pub read_latency: (Duration, Duration),
}

impl Default for DiskConfig {
    fn default() -> DiskConfig {
        DiskConfig {
            sync_latency: (Duration::from_micros(50), Duration::from_micros(300)),
            slow_sync_max: Duration::from_millis(50),
            read_latency: (Duration::from_micros(10), Duration::from_micros(200)),
        }
    }
}

/// A simulated cluster; see the module documentation.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The run's seed: every random choice of the run derives from it.
    pub seed: u64,
    /// Followers, nodes `1..=followers.len()`.
    pub followers: Vec<FollowerSpec>,
    /// The sync quorum over the sync followers' names (`None` without sync followers).
    pub quorum: Option<QuorumSpec>,
    /// What happens without a quorum.
    pub policy: QuorumPolicy,
    /// Every node's timeouts.
    pub timeouts: Timeouts,
    /// The primary's flow-control window per follower.
    pub max_inflight_bytes: u64,
    /// The primary's catch-up chunk size.
    pub catch_up_chunk_bytes: usize,
    /// The primary's catch-up pacing (`None`: unpaced).
    pub catch_up_pacing: Option<PacingConfig>,
    /// The network's behaviour (the fault phase's; healing returns to plain delays).
    pub net: NetConfig,
    /// Disk latencies.
    pub disk: DiskConfig,
    /// How long a node whose log failed keeps running before it is restarted.
    pub fail_stop_restart_after: Duration,
    /// Automatic failover: every sync node votes and may be elected; the quorum is over every
    /// sync node (the primary leaves itself out).
    pub failover: bool,
    /// Bounds of the randomized election timeout.
    pub election_timeout: (Duration, Duration),
    /// An fdatasync in flight this long makes its node report a stalled disk.
    pub stall_limit: Duration,
}

impl ClusterSpec {
    /// A cluster of one primary and these followers, with every sync follower in
    /// `quorum_text` (`"ANY 1"`, `"FIRST 2"`; ignored without sync followers), healthy network
    /// and disks, default timeouts.
    ///
    /// # Panics
    /// If `quorum_text` with the member list does not parse (a bug of the caller).
    pub fn new(
        seed: u64,
        followers: Vec<FollowerSpec>,
        quorum_text: &str,
        policy: QuorumPolicy,
    ) -> ClusterSpec {
        let members: Vec<String> = (followers.iter().enumerate())
            .filter(|(_, f)| f.sync)
            .map(|(i, _)| node_name(i + 1))
            .collect();
        let quorum = (!members.is_empty()).then(|| {
            let text = format!("{quorum_text} ({})", members.join(", "));
            text.parse::<QuorumSpec>()
                .unwrap_or_else(|e| panic!("quorum {text:?}: {e}"))
        });
        ClusterSpec {
            seed,
            followers,
            quorum,
            policy,
            timeouts: Timeouts::default(),
            max_inflight_bytes: 64 << 10,
            catch_up_chunk_bytes: 4 << 10,
            catch_up_pacing: None,
            net: NetConfig::default(),
            disk: DiskConfig::default(),
            fail_stop_restart_after: Duration::from_millis(300),
            failover: false,
            election_timeout: (Duration::from_secs(1), Duration::from_secs(2)),
            stall_limit: Duration::from_secs(1),
        }
    }

    /// A cluster with failover: node 0 and these followers are all members; the sync ones
    /// (node 0 among them) vote, and `quorum_text` is over all of them.
    ///
    /// # Panics
    /// If `quorum_text` with the member list does not parse (a bug of the caller).
    pub fn new_failover(
        seed: u64,
        followers: Vec<FollowerSpec>,
        quorum_text: &str,
        policy: QuorumPolicy,
    ) -> ClusterSpec {
        let mut spec = ClusterSpec::new(seed, followers, quorum_text, policy);
        spec.failover = true;
        let members: Vec<String> = (0..spec.nodes())
            .filter(|&i| spec.sync(i))
            .map(node_name)
            .collect();
        let text = format!("{quorum_text} ({})", members.join(", "));
        spec.quorum = Some(
            text.parse()
                .unwrap_or_else(|e| panic!("quorum {text:?}: {e}")),
        );
        spec
    }

    /// A failover cluster drawn from `seed`: 3 to 5 nodes, at least 3 of them sync voters;
    /// `FIRST k` or `ANY k` with k large enough that every acknowledged record is on a
    /// majority's member (`k + 1 + majority > voters`); otherwise as [`ClusterSpec::from_seed`].
    pub fn failover_from_seed(seed: u64) -> ClusterSpec {
        let mut rng = Rng::new(sub_seed(seed, Stream::Spec, 2));
        let n = 2 + rng.below(3) as usize;
        let mut followers: Vec<FollowerSpec> = (0..n)
            .map(|_| FollowerSpec {
                sync: rng.below(4) != 0,
                auto_apply: rng.below(4) != 0,
            })
            .collect();
        for f in followers.iter_mut().take(2) {
            f.sync = true;
        }
        let voters = 1 + followers.iter().filter(|f| f.sync).count();
        let majority = voters / 2 + 1;
        let min_k = voters - majority;
        let k = min_k + rng.below((voters - min_k) as u64) as usize;
        let mode = if rng.below(2) == 0 { "FIRST" } else { "ANY" };
        let policy = draw_policy(&mut rng);
        let mut spec = ClusterSpec::new_failover(seed, followers, &format!("{mode} {k}"), policy);
        spec.draw_tuning(&mut rng);
        spec.catch_up_pacing = draw_pacing(seed);
        spec
    }

    /// Whether node `i` is a sync replica (node 0 always is).
    pub fn sync(&self, i: usize) -> bool {
        i == PRIMARY || self.followers[i - 1].sync
    }

    /// Node `node`'s election configuration (failover clusters).
    pub fn election_config(&self, node: usize) -> ElectionConfig {
        let members = (0..self.nodes())
            .map(|i| Member {
                id: NodeId::from(node_name(i)),
                addr: follower_addr(i),
                voter: self.sync(i),
                sync: self.sync(i),
            })
            .collect();
        let mut primary = self.primary_config();
        primary.node_id = NodeId::from(node_name(node));
        primary.key = self.key_ring(node);
        ElectionConfig {
            members,
            me: node,
            timeout: self.election_timeout,
            primary,
            quorum: self.quorum.clone(),
            follower: self.follower_config(node),
        }
    }

    /// A cluster drawn from `seed`: 2 to 4 followers, each sync or async, applying by itself
    /// or not; `FIRST k` or `ANY k` over the sync followers; `block` or `degrade`; small
    /// windows and chunks so that flow control and catch-up are exercised; network faults at
    /// rates drawn here (the schedule decides whether they are on).
    pub fn from_seed(seed: u64) -> ClusterSpec {
        let mut rng = Rng::new(sub_seed(seed, Stream::Spec, 0));
        let n = 2 + rng.below(3) as usize;
        let followers: Vec<FollowerSpec> = (0..n)
            .map(|_| FollowerSpec {
                sync: rng.below(3) != 0,
                auto_apply: rng.below(4) != 0,
            })
            .collect();
        let sync = followers.iter().filter(|f| f.sync).count().max(1);
        let mode = if rng.below(2) == 0 { "FIRST" } else { "ANY" };
        let k = 1 + rng.below(sync as u64);
        let policy = draw_policy(&mut rng);
        let mut spec = ClusterSpec::new(seed, followers, &format!("{mode} {k}"), policy);
        spec.draw_tuning(&mut rng);
        spec.catch_up_pacing = draw_pacing(seed);
        spec
    }

    /// Nodes in the cluster (the primary and its followers).
    pub fn nodes(&self) -> usize {
        1 + self.followers.len()
    }

    /// The quorum's k (0 without a quorum: remote levels then follow local durability).
    pub fn quorum_k(&self) -> usize {
        self.quorum.as_ref().map_or(0, |q| q.k)
    }

    /// Indices of the nodes in the quorum (with failover, node 0 too).
    pub fn quorum_members(&self) -> Vec<usize> {
        let Some(q) = &self.quorum else {
            return Vec::new();
        };
        (0..self.nodes())
            .filter(|&i| q.is_member(&node_name(i)))
            .collect()
    }

    /// The primary's configuration.
    pub fn primary_config(&self) -> PrimaryConfig {
        PrimaryConfig {
            cluster_id: CLUSTER_ID.into(),
            node_id: node_name(PRIMARY).into(),
            key: self.key_ring(PRIMARY),
            epoch: logship_engine::Epoch(0),
            followers: (self.followers.iter().enumerate())
                .map(|(i, f)| FollowerLink {
                    name: NodeId::from(node_name(i + 1)),
                    addr: follower_addr(i + 1),
                    sync: f.sync,
                })
                .collect(),
            quorum: self.quorum.clone(),
            policy: self.policy,
            timeouts: self.timeouts,
            backoff: BackoffConfig::default(),
            breaker: BreakerConfig::default(),
            max_inflight_bytes: self.max_inflight_bytes,
            catch_up_chunk_bytes: self.catch_up_chunk_bytes,
            catch_up_pacing: self.catch_up_pacing,
            max_retained_bytes: None,
            failover: false,
        }
    }

    /// Follower `node`'s configuration.
    ///
    /// # Panics
    /// If `node` is not a follower.
    pub fn follower_config(&self, node: usize) -> FollowerConfig {
        assert!(
            (self.failover || node != PRIMARY) && node < self.nodes(),
            "node {node} is not a follower"
        );
        FollowerConfig {
            cluster_id: CLUSTER_ID.into(),
            node_id: node_name(node).into(),
            key: self.key_ring(node),
            timeouts: self.timeouts,
            auto_apply: self.auto_apply(node),
        }
    }

    /// Node `node`'s cluster key ring. Most runs catch a key rotation (docs/operations.md) in
    /// the middle of one of its three steps, each node on either side of it, drawn from the
    /// seed (a stream of its own, so no other draw moves): step 1 (`[old]` or `[old, new]`),
    /// step 2 (`[old, new]` or `[new, old]`) or step 3 (`[new, old]` or `[new]`). Any two
    /// nodes then share a key one proves with and the other accepts, so every session and
    /// vote must succeed as with one key.
    pub fn key_ring(&self, node: usize) -> KeyRing {
        let (old, new) = (cluster_key(), next_cluster_key());
        let states = [
            vec![old.clone()],
            vec![old.clone(), new.clone()],
            vec![new.clone(), old],
            vec![new],
        ];
        let step = sub_seed(self.seed, Stream::Spec, 1000) % 4;
        let side = sub_seed(self.seed, Stream::Spec, 1001 + node as u64) % 2;
        // Step 3 of the draw stands for a run with no rotation under way: one key.
        let state = match step {
            3 => 0,
            s => (s + side) as usize,
        };
        KeyRing::new(states[state].clone()).expect("one or two keys")
    }

    /// Whether follower `node` applies by itself (the primary: true).
    pub fn auto_apply(&self, node: usize) -> bool {
        node == PRIMARY || self.followers[node - 1].auto_apply
    }

    /// A one-line description, for reports.
    pub fn describe(&self) -> String {
        let followers: Vec<String> = (self.followers.iter().enumerate())
            .map(|(i, f)| {
                let mode = if f.sync { "sync" } else { "async" };
                let apply = if f.auto_apply { "" } else { ",app-applies" };
                format!("{}:{mode}{apply}", node_name(i + 1))
            })
            .collect();
        let quorum = self
            .quorum
            .as_ref()
            .map_or("none".to_string(), |q| q.to_string());
        let failover = if self.failover { "failover " } else { "" };
        let pacing = self.catch_up_pacing.map_or(String::new(), |p| {
            format!(
                " paced to {:?} (floor {}B/s)",
                p.latency_target, p.min_bytes_per_sec
            )
        });
        format!(
            "{failover}followers [{}] quorum {quorum} policy {:?} window {}B chunk {}B commit timeout {:?}{pacing}",
            followers.join(" "),
            self.policy,
            self.max_inflight_bytes,
            self.catch_up_chunk_bytes,
            self.timeouts.commit
        )
    }
}

/// `block` or `degrade` (after 0.2 to 3 s), drawn.
fn draw_policy(rng: &mut Rng) -> QuorumPolicy {
    if rng.below(2) == 0 {
        QuorumPolicy::Block
    } else {
        let after = Duration::from_millis(200 + rng.below(2_800));
        QuorumPolicy::Degrade { after }
    }
}

impl ClusterSpec {
    /// Small windows and chunks (flow control and catch-up exercised), the commit timeout, the
    /// restart delay after a failed log, and the network's fault rates, drawn.
    fn draw_tuning(&mut self, rng: &mut Rng) {
        self.max_inflight_bytes = 1 << (10 + rng.below(11));
        self.catch_up_chunk_bytes = 1 << (8 + rng.below(9));
        self.timeouts.commit = Duration::from_millis(1_000 + rng.below(4_000));
        self.fail_stop_restart_after = Duration::from_millis(50 + rng.below(1_000));
        self.net = fault_rates(rng);
    }
}

/// Catch-up pacing for half the seeds: a latency target of 2 to 100 ms and a floor of 1 to
/// 16 KiB/s, small enough against the simulator's logs that the allowance binds (some 11,000
/// refused reads in 300 seeds). Drawn from
/// a stream of its own, so that the other draws of a seed stay what they were before pacing.
fn draw_pacing(seed: u64) -> Option<PacingConfig> {
    let mut rng = Rng::new(sub_seed(seed, Stream::Spec, 3));
    (rng.below(2) == 0).then(|| PacingConfig {
        latency_target: Duration::from_millis(2 + rng.below(99)),
        min_bytes_per_sec: (1 + rng.below(16)) << 10,
    })
}

/// Network fault rates for the fault phase.
fn fault_rates(rng: &mut Rng) -> NetConfig {
    NetConfig {
        spike_per_million: 5_000 + rng.below(30_000) as u32,
        reset_per_million: 200 + rng.below(3_000) as u32,
        half_open_per_million: rng.below(500_000) as u32,
        ..NetConfig::default()
    }
}

/// Node `i`'s name.
pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

/// Follower `i`'s replication address.
pub fn follower_addr(i: usize) -> SocketAddr {
    let port = BASE_PORT + u16::try_from(i).expect("few nodes");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The node listening at `addr`, if any.
pub fn node_at(addr: SocketAddr, nodes: usize) -> Option<usize> {
    let i = usize::from(addr.port().checked_sub(BASE_PORT)?);
    (i < nodes && follower_addr(i) == addr).then_some(i)
}

fn cluster_key() -> ClusterKey {
    ClusterKey::from_bytes(CLUSTER_KEY).expect("the simulator's key is long enough")
}

fn next_cluster_key() -> ClusterKey {
    ClusterKey::from_bytes(NEXT_CLUSTER_KEY).expect("the simulator's key is long enough")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_give_valid_clusters_whose_addresses_map_back() {
        for seed in 0..500 {
            let spec = ClusterSpec::from_seed(seed);
            assert!((3..=5).contains(&spec.nodes()));
            if let Some(q) = &spec.quorum {
                assert!(q.validate().is_ok(), "seed {seed}: {q}");
                assert_eq!(spec.quorum_members().len(), q.members.len());
            }
            for i in 1..spec.nodes() {
                assert_eq!(node_at(follower_addr(i), spec.nodes()), Some(i));
            }
            assert_eq!(node_at(follower_addr(spec.nodes()), spec.nodes()), None);
            let f = ClusterSpec::failover_from_seed(seed);
            let voters = (0..f.nodes()).filter(|&i| f.sync(i)).count();
            assert!(voters >= 3, "seed {seed}: {voters} voters");
            assert!(
                f.quorum_k() + 1 + voters / 2 + 1 > voters,
                "seed {seed}: {}",
                f.describe()
            );
        }
    }
}
