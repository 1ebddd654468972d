//! Prometheus text for `/metrics`, rendered from [`NodeStatus`]. Names follow Prometheus
//! conventions (`_total` counters, base units: seconds, bytes); every family's samples are
//! written together, after its `# HELP` and `# TYPE` lines.

use crate::http::PromText;
use crate::link::Phase;
use crate::protocol::DurabilityLevel;
use crate::status::{FollowerSideStatus, FollowerStatus, PacingStatus, PrimaryStatus};

use super::{IntegrityStatus, NodeStatus};

fn flag(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// One gauge or counter with a single sample labelled by node.
fn single(p: &mut PromText, node: &str, name: &str, help: &str, kind: &str, value: f64) {
    p.family(name, help, kind);
    p.sample(name, &[("node", node)], value);
}

/// One family with a sample per `(label value, value)`.
fn labelled(
    p: &mut PromText,
    node: &str,
    name: &str,
    help: &str,
    kind: &str,
    label: &str,
    samples: &[(&str, f64)],
) {
    p.family(name, help, kind);
    for (v, x) in samples {
        p.sample(name, &[("node", node), (label, v)], *x);
    }
}

/// Renders the node's metrics.
pub fn render_metrics(s: &NodeStatus) -> String {
    let mut p = PromText::new();
    let n = s.node_id.as_str();
    log_and_appends(&mut p, n, s);
    connections(&mut p, n, s);
    if let Some(pr) = &s.primary {
        primary(&mut p, n, pr);
        if let Some(pc) = &pr.catch_up_pacing {
            pacing(&mut p, n, pc);
        }
    }
    if let Some(f) = &s.follower {
        follower(&mut p, n, f);
    }
    integrity(&mut p, n, &s.integrity);
    election(&mut p, n, s);
    counters(&mut p, n, s);
    p.finish()
}

/// The epoch, and elections when the cluster elects its primary.
fn election(p: &mut PromText, n: &str, s: &NodeStatus) {
    single(
        p,
        n,
        "logship_epoch",
        "The newest epoch this node knows.",
        "gauge",
        s.epoch as f64,
    );
    let Some(e) = &s.election else { return };
    single(
        p,
        n,
        "logship_election_campaigning",
        "1 while this node asks for votes.",
        "gauge",
        flag(e.campaigning),
    );
    let rounds = [
        ("pre_vote", e.pre_votes as f64),
        ("election", e.elections as f64),
        ("won", e.won as f64),
    ];
    labelled(
        p,
        n,
        "logship_election_rounds_total",
        "Pre-vote rounds begun, elections begun (pre-votes won), elections won.",
        "counter",
        "kind",
        &rounds,
    );
    let votes = [
        ("granted", e.votes_granted as f64),
        ("refused", e.votes_refused as f64),
    ];
    labelled(
        p,
        n,
        "logship_votes_total",
        "Vote requests answered, by outcome.",
        "counter",
        "outcome",
        &votes,
    );
    single(
        p,
        n,
        "logship_step_downs_total",
        "Times this primary stepped down without hearing a majority of voters.",
        "counter",
        e.step_downs as f64,
    );
}

/// Counters of the node's own work: divergent suffixes cut, acknowledgements superseded,
/// client answers sent on the acknowledgement's thread.
fn counters(p: &mut PromText, n: &str, s: &NodeStatus) {
    single(
        p,
        n,
        "logship_divergent_records_total",
        "Records of divergent suffixes cut (copied to side files first).",
        "counter",
        s.divergent_records as f64,
    );
    single(
        p,
        n,
        "logship_acks_superseded_total",
        "Acknowledgements not sent because a newer one just sent covered them.",
        "counter",
        s.acks_superseded as f64,
    );
    single(
        p,
        n,
        "logship_client_answers_on_ack_total",
        "Client-port answers sent by the thread that delivered the acknowledgement completing \
         them.",
        "counter",
        s.client_answers_on_ack as f64,
    );
}

/// The node's role, its log's positions, appends.
fn log_and_appends(p: &mut PromText, n: &str, s: &NodeStatus) {
    single(p, n, "logship_up", "1 while the node runs.", "gauge", 1.0);
    single(
        p,
        n,
        "logship_is_primary",
        "1 on the primary, 0 on a follower.",
        "gauge",
        flag(s.primary.is_some()),
    );
    single(
        p,
        n,
        "logship_log_last_lsn",
        "Last LSN written to the local log.",
        "gauge",
        s.last_lsn as f64,
    );
    single(
        p,
        n,
        "logship_log_durable_lsn",
        "Last LSN durable in the local log.",
        "gauge",
        s.durable_lsn as f64,
    );
    single(
        p,
        n,
        "logship_log_first_lsn",
        "First LSN held by the local log.",
        "gauge",
        s.first_lsn as f64,
    );
    let appends: Vec<(&str, f64)> = s
        .appends
        .iter()
        .map(|(l, v)| (l.as_str(), *v as f64))
        .collect();
    labelled(
        p,
        n,
        "logship_appends_total",
        "Appends accepted, by durability level.",
        "counter",
        "level",
        &appends,
    );
    single(
        p,
        n,
        "logship_appends_waiting",
        "Appends waiting for their durability level.",
        "gauge",
        s.waiting_appends as f64,
    );
    single(
        p,
        n,
        "logship_quorum_timeouts_total",
        "Appends failed with QuorumUnavailable.",
        "counter",
        s.quorum_timeouts as f64,
    );
}

/// Replication connections and sessions refused, on either side.
fn connections(p: &mut PromText, n: &str, s: &NodeStatus) {
    single(
        p,
        n,
        "logship_malformed_frames_total",
        "Connections closed for a malformed frame.",
        "counter",
        s.malformed_frames as f64,
    );
    single(
        p,
        n,
        "logship_tls_failures_total",
        "Connections closed by a TLS failure (bad certificate, unknown CA, plaintext peer).",
        "counter",
        s.tls_failures as f64,
    );
    single(
        p,
        n,
        "logship_replication_connections_total",
        "Replication connections established.",
        "counter",
        s.connections as f64,
    );
    single(
        p,
        n,
        "logship_client_handshakes_refused_total",
        "Client handshakes refused: unknown name, wrong key, out of order or too slow.",
        "counter",
        s.client_handshakes_refused as f64,
    );
    p.family(
        "logship_sessions_rejected_total",
        "Replication sessions refused, by reason and by which side refused (self or peer).",
        "counter",
    );
    let refused = [
        (
            "self",
            s.primary.as_ref().map_or(&[][..], |x| &x.rejected[..]),
        ),
        (
            "peer",
            s.primary
                .as_ref()
                .map_or(&[][..], |x| &x.refused_by_peer[..]),
        ),
        (
            "self",
            s.follower.as_ref().map_or(&[][..], |x| &x.rejected[..]),
        ),
    ];
    for (by, list) in refused {
        for (reason, v) in list {
            p.sample(
                "logship_sessions_rejected_total",
                &[("node", n), ("reason", reason), ("by", by)],
                *v as f64,
            );
        }
    }
}

fn integrity(p: &mut PromText, n: &str, i: &IntegrityStatus) {
    let singles = [
        (
            "logship_scrub_bytes_total",
            "Bytes the scrubber read and checked.",
            "counter",
            Some(i.scrub_bytes as f64),
        ),
        (
            "logship_scrub_passes_total",
            "Full scrubber passes over the log.",
            "counter",
            Some(i.scrub_passes as f64),
        ),
        (
            "logship_scrub_last_pass_end_timestamp_seconds",
            "When the last full scrubber pass ended.",
            "gauge",
            i.last_pass_end_unix_s,
        ),
        (
            "logship_scrub_last_pass_duration_seconds",
            "How long the last full scrubber pass took.",
            "gauge",
            i.last_pass_seconds,
        ),
        (
            "logship_damaged_segments",
            "Segments known damaged and not yet repaired.",
            "gauge",
            Some(i.damaged.len() as f64),
        ),
        (
            "logship_taken_back_records_total",
            "Records a restarted primary took back from its followers.",
            "counter",
            Some(i.taken_back_records as f64),
        ),
    ];
    for (name, help, kind, value) in singles {
        if let Some(v) = value {
            single(p, n, name, help, kind, v);
        }
    }
    integrity_outcomes(p, n, i);
}

/// Damage found, repairs, and the digest comparison with peers.
fn integrity_outcomes(p: &mut PromText, n: &str, i: &IntegrityStatus) {
    let found = [
        ("scrub", i.corruptions_found_by_scrub as f64),
        ("open", i.corruptions_found_at_open as f64),
    ];
    labelled(
        p,
        n,
        "logship_corruptions_found_total",
        "Damage found, by who found it.",
        "counter",
        "found_by",
        &found,
    );
    let repairs = [
        ("repaired", i.repairs as f64),
        ("failed", i.repairs_failed as f64),
    ];
    labelled(
        p,
        n,
        "logship_repairs_total",
        "Repairs of damaged segments from a replica, by outcome.",
        "counter",
        "outcome",
        &repairs,
    );
    let per_peer = |v: &[(String, u64)]| -> Vec<(String, f64)> {
        v.iter().map(|(k, x)| (k.clone(), *x as f64)).collect()
    };
    let families = [
        (
            "logship_digest_ranges_compared_total",
            "LSN ranges whose digests were compared with a peer's.",
            per_peer(&i.digests_compared),
        ),
        (
            "logship_digest_mismatches_total",
            "LSN ranges whose digests differ from a peer's.",
            per_peer(&i.digest_mismatches),
        ),
    ];
    for (name, help, samples) in &families {
        let samples: Vec<(&str, f64)> = samples.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        labelled(p, n, name, help, "counter", "peer", &samples);
    }
}

/// Catch-up pacing, when a latency target is configured.
fn pacing(p: &mut PromText, n: &str, s: &PacingStatus) {
    let ms = |v: Option<f64>| v.map(|ms| ms / 1e3);
    let families: [(&str, &str, &str, Option<f64>); 8] = [
        (
            "logship_catch_up_throttled",
            "1 while catch-up is paced to keep foreground commits under their latency target.",
            "gauge",
            Some(flag(s.allowance_bytes_per_sec.is_some())),
        ),
        (
            "logship_catch_up_allowance_bytes_per_second",
            "Catch-up bytes per second allowed while paced (0 while unthrottled).",
            "gauge",
            Some(s.allowance_bytes_per_sec.unwrap_or(0) as f64),
        ),
        (
            "logship_catch_up_throttled_seconds_total",
            "Time catch-up reads waited for the pacing allowance.",
            "counter",
            Some(s.throttled_seconds),
        ),
        (
            "logship_catch_up_latency_target_seconds",
            "The foreground commit p99 catch-up is paced to keep under.",
            "gauge",
            Some(s.latency_target_ms / 1e3),
        ),
        (
            "logship_catch_up_commit_p99_seconds",
            "The p99 of foreground commits (append to remote_durable) over the last 400 ms, \
             as the pacer measures it against its target.",
            "gauge",
            ms(s.recent_commit_p99_ms),
        ),
        (
            "logship_catch_up_commit_p99_since_start_seconds",
            "The p99 of every foreground commit the pacer measured while no catch-up ran, \
             since this node became primary: the figure to set its target from.",
            "gauge",
            ms(s.commit_p99_ms),
        ),
        (
            "logship_catch_up_control_intervals_total",
            "Pacing control intervals closed with foreground commits.",
            "counter",
            Some(s.control_intervals as f64),
        ),
        (
            "logship_catch_up_over_target_intervals_total",
            "Pacing control intervals whose commit p99 was over the target, on their own and \
             over the last 2 s: each cuts the allowance while catch-up is paced.",
            "counter",
            Some(s.over_intervals as f64),
        ),
    ];
    for (name, help, kind, value) in families {
        if let Some(v) = value {
            single(p, n, name, help, kind, v);
        }
    }
}

fn primary(p: &mut PromText, n: &str, s: &PrimaryStatus) {
    let c = s.commit;
    let commit = [
        ("local", c.local as f64),
        ("remote_write", c.remote_write as f64),
        ("remote_durable", c.remote_durable as f64),
        ("remote_applied", c.remote_applied as f64),
    ];
    labelled(
        p,
        n,
        "logship_commit_lsn",
        "Commit LSN per durability level.",
        "gauge",
        "level",
        &commit,
    );
    single(
        p,
        n,
        "logship_quorum_available",
        "1 when enough sync followers are healthy.",
        "gauge",
        flag(s.quorum_available),
    );
    single(
        p,
        n,
        "logship_degraded",
        "1 while remote levels are acknowledged at local durability.",
        "gauge",
        flag(s.degraded),
    );
    single(
        p,
        n,
        "logship_degraded_entered_total",
        "Times degraded mode was entered.",
        "counter",
        s.degraded_entered as f64,
    );
    single(
        p,
        n,
        "logship_retention_lsn",
        "Records from this LSN on are kept for followers.",
        "gauge",
        s.retention_lsn as f64,
    );
    for (name, help, kind, values) in FOLLOWER_FAMILIES {
        p.family(name, help, kind);
        for f in &s.followers {
            for (level, v) in values(f) {
                let mut labels = vec![
                    ("node", n),
                    ("follower", f.name.as_str()),
                    ("mode", f.mode.as_str()),
                ];
                if let Some(level) = level {
                    labels.push(("level", level));
                }
                if let Some(v) = v {
                    p.sample(name, &labels, v);
                }
            }
        }
    }
}

type Values = fn(&FollowerStatus) -> Vec<(Option<&'static str>, Option<f64>)>;

fn one(v: f64) -> Vec<(Option<&'static str>, Option<f64>)> {
    vec![(None, Some(v))]
}

fn levels(w: f64, d: f64, a: f64) -> Vec<(Option<&'static str>, Option<f64>)> {
    vec![
        (Some("write"), Some(w)),
        (Some("durable"), Some(d)),
        (Some("applied"), Some(a)),
    ]
}

/// One value per durability level from the follower's RPO.
fn rpo(
    f: &FollowerStatus,
    v: fn(&crate::status::LevelRpo) -> Option<f64>,
) -> Vec<(Option<&'static str>, Option<f64>)> {
    (f.rpo.iter())
        .filter_map(|r| {
            let level = DurabilityLevel::ALL
                .iter()
                .find(|l| l.as_str() == r.level)?;
            Some((Some(level.as_str()), v(r)))
        })
        .collect()
}

const FOLLOWER_FAMILIES: [(&str, &str, &str, Values); 17] = [
    ("logship_follower_healthy", "1 when the follower streams and was heard within the peer timeout.", "gauge", |f| one(flag(f.healthy))),
    ("logship_follower_streaming", "1 while the link streams (live or catching up).", "gauge", |f| {
        one(flag(matches!(f.phase, Phase::Streaming | Phase::CatchingUp)))
    }),
    ("logship_follower_breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open.", "gauge", |f| {
        one(match f.breaker.as_str() {
            "open" => 1.0,
            "half_open" => 2.0,
            _ => 0.0,
        })
    }),
    ("logship_follower_breaker_opened_total", "Times the breaker opened.", "counter", |f| one(f.breaker_opened as f64)),
    ("logship_follower_lsn", "LSN the follower acknowledged, by level.", "gauge", |f| {
        levels(f.write_lsn as f64, f.durable_lsn as f64, f.applied_lsn as f64)
    }),
    ("logship_follower_lag_records", "Records behind the primary's last LSN, by level.", "gauge", |f| {
        levels(f.write_behind.records as f64, f.durable_behind.records as f64, f.applied_behind.records as f64)
    }),
    ("logship_follower_lag_bytes", "Bytes behind the primary's last LSN, by level.", "gauge", |f| {
        levels(f.write_behind.bytes as f64, f.durable_behind.bytes as f64, f.applied_behind.bytes as f64)
    }),
    (
        "logship_follower_lag_seconds",
        "Last measured time from sending to acknowledgement, by level (write, flush and replay lag).",
        "gauge",
        |f| {
            let s = |ms: Option<f64>| ms.map(|v| v / 1e3);
            vec![(Some("write"), s(f.write_lag_ms)), (Some("durable"), s(f.flush_lag_ms)), (Some("applied"), s(f.replay_lag_ms))]
        },
    ),
    ("logship_follower_retained", "1 while the follower holds back purging.", "gauge", |f| one(flag(f.retained))),
    ("logship_follower_purged", "1 when the follower needs records that were purged.", "gauge", |f| one(flag(f.purged))),
    ("logship_follower_sessions_total", "Sessions that reached streaming.", "counter", |f| one(f.counters.sessions as f64)),
    ("logship_follower_failures_total", "Connect failures, timeouts and lost connections.", "counter", |f| {
        one(f.counters.failures as f64)
    }),
    ("logship_follower_sent_bytes_total", "Record bytes sent.", "counter", |f| one(f.counters.bytes_sent as f64)),
    ("logship_follower_catch_up_chunks_total", "Catch-up chunks sent from the log.", "counter", |f| {
        one(f.counters.chunks_sent as f64)
    }),
    ("logship_follower_rpo_records", "Records acknowledged at each level that failing over to this follower now would lose.", "gauge", |f| {
        rpo(f, |r| Some(r.records as f64))
    }),
    ("logship_follower_rpo_bytes", "Bytes of those records.", "gauge", |f| rpo(f, |r| Some(r.bytes as f64))),
    ("logship_follower_rpo_seconds", "How long ago the oldest of those records was sent to the follower.", "gauge", |f| {
        rpo(f, |r| r.seconds)
    }),
];

fn follower(p: &mut PromText, n: &str, f: &FollowerSideStatus) {
    single(
        p,
        n,
        "logship_replica_connected",
        "1 while streaming from a primary.",
        "gauge",
        flag(f.connected),
    );
    let lsns = [
        ("write", f.write_lsn as f64),
        ("durable", f.durable_lsn as f64),
        ("applied", f.applied_lsn as f64),
    ];
    labelled(
        p,
        n,
        "logship_replica_lsn",
        "This follower's positions, by level.",
        "gauge",
        "level",
        &lsns,
    );
    single(
        p,
        n,
        "logship_replica_primary_commit_lsn",
        "The primary's commit LSN as last heard.",
        "gauge",
        f.primary_commit_lsn as f64,
    );
    let behind = f.primary_last_lsn.saturating_sub(f.write_lsn) as f64;
    single(
        p,
        n,
        "logship_replica_lag_records",
        "Records behind the primary's last LSN as last heard.",
        "gauge",
        behind,
    );
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::link::LinkCounters;
    use crate::status::{Behind, CommitLsns};

    fn follower_status(name: &str) -> FollowerStatus {
        FollowerStatus {
            name: name.into(),
            addr: "127.0.0.1:1".into(),
            mode: "sync".into(),
            phase: Phase::Streaming,
            healthy: true,
            breaker: "closed".into(),
            breaker_opened: 0,
            write_lsn: 3,
            durable_lsn: 2,
            applied_lsn: 1,
            write_behind: Behind::default(),
            durable_behind: Behind::default(),
            applied_behind: Behind::default(),
            write_lag_ms: Some(0.2),
            flush_lag_ms: None,
            replay_lag_ms: None,
            retained: true,
            purged: false,
            last_error: None,
            counters: LinkCounters::default(),
            rpo: vec![crate::status::LevelRpo {
                level: "remote_durable".into(),
                records: 3,
                bytes: 300,
                seconds: Some(0.5),
            }],
        }
    }

    #[test]
    fn every_family_is_one_contiguous_group() {
        let s = NodeStatus {
            node_id: "p".into(),
            cluster_id: "c".into(),
            role: crate::config::Role::Primary,
            epoch: 2,
            election: Some(Default::default()),
            leader_hint: None,
            divergent_records: 0,
            divergent_files: Vec::new(),
            acks_superseded: 0,
            client_answers_on_ack: 0,
            log_backend: "portable".into(),
            transport: "portable".into(),
            uptime_s: 1.0,
            first_lsn: 1,
            last_lsn: 3,
            durable_lsn: 3,
            waiting_appends: 0,
            appends: vec![("local".into(), 1)],
            quorum_timeouts: 0,
            malformed_frames: 0,
            tls_failures: 0,
            connections: 2,
            client_handshakes_refused: 0,
            primary: Some(PrimaryStatus {
                last_lsn: 3,
                first_lsn: 1,
                commit: CommitLsns::default(),
                quorum: "ANY 1 (a, b)".into(),
                quorum_available: true,
                degraded: false,
                serving: true,
                catch_up_pacing: Some(PacingStatus {
                    latency_target_ms: 5.0,
                    allowance_bytes_per_sec: Some(8 << 20),
                    throttled_seconds: 1.5,
                    window_commits: 100,
                    window_over_target: 3,
                    recent_commit_p99_ms: Some(4.5),
                    commit_p99_ms: Some(6.0),
                    control_intervals: 40,
                    over_intervals: 2,
                }),
                degraded_entered: 0,
                retention_lsn: 1,
                rejected: vec![("auth_failed".into(), 1)],
                refused_by_peer: vec![("cluster_id".into(), 2)],
                followers: vec![follower_status("a"), follower_status("b")],
            }),
            follower: None,
            integrity: IntegrityStatus {
                digests_compared: vec![("a".into(), 3), ("b".into(), 2)],
                digest_mismatches: vec![("b".into(), 1)],
                last_pass_end_unix_s: Some(1.0),
                ..IntegrityStatus::default()
            },
        };
        let text = render_metrics(&s);
        let mut seen = HashSet::new();
        let mut current = String::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap().to_string();
            if name != current {
                assert!(
                    seen.insert(name.clone()),
                    "{name} appears in two groups:\n{text}"
                );
                current = name;
            }
        }
        assert!(
            text.contains(
                "logship_sessions_rejected_total{node=\"p\",reason=\"cluster_id\",by=\"peer\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("logship_follower_lag_seconds{node=\"p\",follower=\"a\",mode=\"sync\",level=\"write\"} 0.0002"), "{text}");
        let allowance = "logship_catch_up_allowance_bytes_per_second{node=\"p\"} 8388608";
        assert!(text.contains(allowance), "{text}");
        let throttled = "logship_catch_up_throttled_seconds_total{node=\"p\"} 1.5";
        let over = "logship_catch_up_over_target_intervals_total{node=\"p\"} 2";
        assert!(text.contains(throttled), "{text}");
        assert!(text.contains(over), "{text}");
        let since_start = "logship_catch_up_commit_p99_since_start_seconds{node=\"p\"} 0.006";
        assert!(text.contains(since_start), "{text}");
    }
}
