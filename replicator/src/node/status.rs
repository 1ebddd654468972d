//! The node's status (the API's, `logship status`'s, the client port's) and its HTTP answers.

use std::sync::atomic::Ordering;

use crate::config::Role;
use crate::http::HttpResponse;
use crate::protocol::DurabilityLevel;
use crate::status::{FollowerSideStatus, PrimaryStatus};

use super::{render_metrics, Inner, IntegrityStatus};

/// The node's whole status, as `logship status` and the client port's status request show it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// This node's id.
    pub node_id: String,
    /// The cluster id.
    pub cluster_id: String,
    /// `primary` or `follower` now (with failover, the role this node was elected to or not).
    pub role: Role,
    /// The newest epoch this node knows.
    #[serde(default)]
    pub epoch: u64,
    /// Elections, when the cluster elects its primary.
    #[serde(default)]
    pub election: Option<ElectionStatus>,
    /// The client address of the primary this node follows, when known.
    #[serde(default)]
    pub leader_hint: Option<String>,
    /// Records of divergent suffixes cut since start (copied to side files first).
    #[serde(default)]
    pub divergent_records: u64,
    /// The side files holding cut divergent suffixes, in the data directory.
    #[serde(default)]
    pub divergent_files: Vec<String>,
    /// Acknowledgements this follower did not send because a newer one it had just sent
    /// covered them (the written one behind a write made durable on the reading thread).
    #[serde(default)]
    pub acks_superseded: u64,
    /// Client-port answers sent by the thread that delivered the follower's acknowledgement
    /// completing their commits, instead of the port's answering thread (one per delivery).
    #[serde(default)]
    pub client_answers_on_ack: u64,
    /// The log's hot-path backend.
    pub log_backend: String,
    /// The replication transport.
    pub transport: String,
    /// Seconds since start.
    pub uptime_s: f64,
    /// First LSN held.
    pub first_lsn: u64,
    /// Last LSN written.
    pub last_lsn: u64,
    /// Last LSN durable.
    pub durable_lsn: u64,
    /// Appends waiting for their level.
    pub waiting_appends: usize,
    /// Appends acknowledged, by level.
    pub appends: Vec<(String, u64)>,
    /// Appends that failed with `QuorumUnavailable`.
    pub quorum_timeouts: u64,
    /// Frames refused as malformed.
    pub malformed_frames: u64,
    /// Connections closed by a TLS failure (bad certificate, unknown CA, plaintext peer),
    /// on either port.
    #[serde(default)]
    pub tls_failures: u64,
    /// Replication connections seen.
    pub connections: u64,
    /// Client handshakes refused (wrong key, unknown name, out of order, too slow).
    #[serde(default)]
    pub client_handshakes_refused: u64,
    /// The primary's replication state.
    pub primary: Option<PrimaryStatus>,
    /// The follower's replication state.
    pub follower: Option<FollowerSideStatus>,
    /// Scrubbing, digest comparison, repairs.
    #[serde(default)]
    pub integrity: IntegrityStatus,
}

/// A node's part in elections.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ElectionStatus {
    /// It is asking for votes now.
    pub campaigning: bool,
    /// Whom it voted for in its epoch.
    pub voted_for: Option<String>,
    /// Pre-vote rounds it began.
    pub pre_votes: u64,
    /// Elections it began (pre-votes won).
    pub elections: u64,
    /// Elections it won.
    pub won: u64,
    /// Votes it granted.
    pub votes_granted: u64,
    /// Vote requests it refused.
    pub votes_refused: u64,
    /// Times it stepped down as primary without hearing a majority.
    pub step_downs: u64,
}

fn election_status(r: &crate::replica::Replica) -> Option<ElectionStatus> {
    let e = r.elector()?;
    let c = e.counters();
    Some(ElectionStatus {
        campaigning: e.campaigning(),
        voted_for: e.voted_for().map(|v| v.to_string()),
        pre_votes: c.pre_votes,
        elections: c.elections,
        won: c.won,
        votes_granted: c.votes_granted,
        votes_refused: c.votes_refused,
        step_downs: r.counters().step_downs,
    })
}

impl Inner {
    pub(super) fn status(&self) -> NodeStatus {
        let now = self.now();
        let (primary, follower, rc, (role, epoch, election)) = {
            let r = self.replica.lock();
            let primary = r.as_primary().map(|p| p.status());
            let role = if primary.is_some() {
                Role::Primary
            } else {
                Role::Follower
            };
            let election = (role, r.epoch().0, election_status(&r));
            (
                primary,
                r.as_follower().map(|f| f.status(now)),
                r.counters(),
                election,
            )
        };
        let c = &self.counters;
        NodeStatus {
            node_id: self.config.node.id.clone(),
            cluster_id: self.config.node.cluster_id.clone(),
            role,
            epoch,
            election,
            leader_hint: self.leader_hint(),
            divergent_records: c.divergent_records.load(Ordering::Relaxed),
            divergent_files: super::divergent::list(self.log.dir()),
            acks_superseded: c.acks_superseded.load(Ordering::Relaxed),
            client_answers_on_ack: c.client_answers_on_ack.load(Ordering::Relaxed),
            log_backend: self.log.backend().to_string(),
            transport: self
                .transport
                .get()
                .map_or("none", |t| t.name())
                .to_string(),
            uptime_s: now.as_secs_f64(),
            first_lsn: self.log.first_lsn().0,
            last_lsn: self.log.last_lsn().0,
            durable_lsn: self.log.durable_lsn().0,
            waiting_appends: self.waiters.len(),
            appends: (DurabilityLevel::ALL.iter())
                .map(|l| {
                    (
                        l.as_str().to_string(),
                        c.appends[*l as usize].load(Ordering::Relaxed),
                    )
                })
                .collect(),
            quorum_timeouts: rc.quorum_timeouts,
            malformed_frames: rc.malformed_frames,
            tls_failures: self.tls_failures.count(),
            connections: rc.connections,
            client_handshakes_refused: self.client_refusals.total(),
            primary,
            follower,
            integrity: self.integrity_status(),
        }
    }

    pub(super) fn http(&self, path: &str) -> HttpResponse {
        match path {
            "/metrics" => HttpResponse::ok_prometheus(render_metrics(&self.status())),
            "/health/live" => match self.failure.get() {
                None => HttpResponse::ok_text("live\n"),
                Some(cause) => {
                    HttpResponse::service_unavailable(format!("log poisoned: {cause}\n"))
                }
            },
            "/health/ready" => self.ready(),
            "/status" => HttpResponse::ok_json(
                serde_json::to_string_pretty(&self.status()).unwrap_or_default(),
            ),
            _ => HttpResponse::not_found(),
        }
    }

    /// Ready to serve: a primary with its quorum (or degraded) and serving, a follower
    /// streaming; and no replica disagrees with this one (a digest mismatch is an alarm).
    fn ready(&self) -> HttpResponse {
        let s = self.status();
        let ready = match (&s.primary, &s.follower) {
            (Some(p), _) => (p.quorum_available || p.degraded) && p.serving,
            (_, Some(f)) => f.connected,
            _ => false,
        };
        if let Some(m) = s.integrity.recent_mismatches.last() {
            return HttpResponse::service_unavailable(format!(
                "not ready: digest mismatch with {} at LSNs {}..={} (here {}, there {}): the replicas hold different records\n",
                m.peer, m.first, m.last, m.here, m.there
            ));
        }
        let damaged: String = (s.integrity.damaged.iter())
            .map(|d| {
                format!(
                    "damaged: {} LSNs {}..={} (from LSN {}), awaiting repair\n",
                    d.segment, d.first, d.last, d.lsn
                )
            })
            .collect();
        if ready {
            HttpResponse::ok_text(format!("ready\n{damaged}"))
        } else {
            HttpResponse::service_unavailable(format!(
                "not ready: no sync quorum or not serving yet (primary), or no primary (follower)\n{damaged}"
            ))
        }
    }
}
