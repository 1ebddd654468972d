//! Prometheus text for `/metrics`, rendered from [`NodeStatus`]. Names follow Prometheus
//! conventions (`_total` counters, base units: seconds, bytes).

use crate::http::PromText;
use crate::link::Phase;

use super::NodeStatus;

/// Renders the node's metrics.
pub fn render_metrics(s: &NodeStatus) -> String {
    let mut p = PromText::new();
    let node = [("node", s.node_id.as_str())];
    p.family("logship_up", "1 while the node runs.", "gauge");
    p.sample("logship_up", &node, 1.0);
    p.family(
        "logship_is_primary",
        "1 on the primary, 0 on a follower.",
        "gauge",
    );
    p.sample(
        "logship_is_primary",
        &node,
        f64::from(u8::from(s.primary.is_some())),
    );
    p.family(
        "logship_log_last_lsn",
        "Last LSN written to the local log.",
        "gauge",
    );
    p.sample("logship_log_last_lsn", &node, s.last_lsn as f64);
    p.family(
        "logship_log_durable_lsn",
        "Last LSN durable in the local log.",
        "gauge",
    );
    p.sample("logship_log_durable_lsn", &node, s.durable_lsn as f64);
    p.family(
        "logship_log_first_lsn",
        "First LSN held by the local log.",
        "gauge",
    );
    p.sample("logship_log_first_lsn", &node, s.first_lsn as f64);
    p.family(
        "logship_appends_total",
        "Appends accepted, by durability level.",
        "counter",
    );
    for (level, n) in &s.appends {
        p.sample(
            "logship_appends_total",
            &[("node", &s.node_id), ("level", level)],
            *n as f64,
        );
    }
    p.family(
        "logship_appends_waiting",
        "Appends waiting for their durability level.",
        "gauge",
    );
    p.sample("logship_appends_waiting", &node, s.waiting_appends as f64);
    p.family(
        "logship_quorum_timeouts_total",
        "Appends failed with QuorumUnavailable.",
        "counter",
    );
    p.sample(
        "logship_quorum_timeouts_total",
        &node,
        s.quorum_timeouts as f64,
    );
    p.family(
        "logship_malformed_frames_total",
        "Connections closed for a malformed frame.",
        "counter",
    );
    p.sample(
        "logship_malformed_frames_total",
        &node,
        s.malformed_frames as f64,
    );
    p.family(
        "logship_replication_connections_total",
        "Replication connections established.",
        "counter",
    );
    p.sample(
        "logship_replication_connections_total",
        &node,
        s.connections as f64,
    );
    if let Some(pr) = &s.primary {
        primary(&mut p, &s.node_id, pr);
    }
    if let Some(f) = &s.follower {
        follower(&mut p, &s.node_id, f);
    }
    p.finish()
}

fn primary(p: &mut PromText, node: &str, s: &crate::status::PrimaryStatus) {
    p.family(
        "logship_commit_lsn",
        "Commit LSN per durability level.",
        "gauge",
    );
    let c = s.commit;
    for (level, v) in [
        ("local", c.local),
        ("remote_write", c.remote_write),
        ("remote_durable", c.remote_durable),
        ("remote_applied", c.remote_applied),
    ] {
        p.sample(
            "logship_commit_lsn",
            &[("node", node), ("level", level)],
            v as f64,
        );
    }
    let n = [("node", node)];
    p.family(
        "logship_quorum_available",
        "1 when enough sync followers are healthy.",
        "gauge",
    );
    p.sample(
        "logship_quorum_available",
        &n,
        f64::from(u8::from(s.quorum_available)),
    );
    p.family(
        "logship_degraded",
        "1 while remote levels are acknowledged at local durability.",
        "gauge",
    );
    p.sample("logship_degraded", &n, f64::from(u8::from(s.degraded)));
    p.family(
        "logship_degraded_entered_total",
        "Times degraded mode was entered.",
        "counter",
    );
    p.sample(
        "logship_degraded_entered_total",
        &n,
        s.degraded_entered as f64,
    );
    p.family(
        "logship_retention_lsn",
        "Records from this LSN on are kept for followers.",
        "gauge",
    );
    p.sample("logship_retention_lsn", &n, s.retention_lsn as f64);
    p.family(
        "logship_sessions_rejected_total",
        "Replication sessions refused, by reason.",
        "counter",
    );
    for (reason, v) in &s.rejected {
        p.sample(
            "logship_sessions_rejected_total",
            &[("node", node), ("reason", reason)],
            *v as f64,
        );
    }
    for (name, help, kind) in FOLLOWER_FAMILIES {
        p.family(name, help, kind);
    }
    for f in &s.followers {
        let l = [
            ("node", node),
            ("follower", f.name.as_str()),
            ("mode", f.mode.as_str()),
        ];
        let with = |level: &'static str| [l[0], l[1], l[2], ("level", level)];
        p.sample(
            "logship_follower_healthy",
            &l,
            f64::from(u8::from(f.healthy)),
        );
        p.sample(
            "logship_follower_streaming",
            &l,
            f64::from(u8::from(matches!(
                f.phase,
                Phase::Streaming | Phase::CatchingUp
            ))),
        );
        let breaker = match f.breaker.as_str() {
            "open" => 1.0,
            "half_open" => 2.0,
            _ => 0.0,
        };
        p.sample("logship_follower_breaker_state", &l, breaker);
        p.sample(
            "logship_follower_breaker_opened_total",
            &l,
            f.breaker_opened as f64,
        );
        for (level, lsn, behind, lag) in [
            ("write", f.write_lsn, f.write_behind, f.write_lag_ms),
            ("durable", f.durable_lsn, f.durable_behind, f.flush_lag_ms),
            ("applied", f.applied_lsn, f.applied_behind, f.replay_lag_ms),
        ] {
            p.sample("logship_follower_lsn", &with(level), lsn as f64);
            p.sample(
                "logship_follower_lag_records",
                &with(level),
                behind.records as f64,
            );
            p.sample(
                "logship_follower_lag_bytes",
                &with(level),
                behind.bytes as f64,
            );
            if let Some(ms) = lag {
                p.sample("logship_follower_lag_seconds", &with(level), ms / 1e3);
            }
        }
        p.sample(
            "logship_follower_retained",
            &l,
            f64::from(u8::from(f.retained)),
        );
        p.sample("logship_follower_purged", &l, f64::from(u8::from(f.purged)));
        p.sample(
            "logship_follower_sessions_total",
            &l,
            f.counters.sessions as f64,
        );
        p.sample(
            "logship_follower_failures_total",
            &l,
            f.counters.failures as f64,
        );
        p.sample(
            "logship_follower_sent_bytes_total",
            &l,
            f.counters.bytes_sent as f64,
        );
        p.sample(
            "logship_follower_catch_up_chunks_total",
            &l,
            f.counters.chunks_sent as f64,
        );
    }
}

const FOLLOWER_FAMILIES: [(&str, &str, &str); 14] = [
    (
        "logship_follower_healthy",
        "1 when the follower streams and was heard within the peer timeout.",
        "gauge",
    ),
    (
        "logship_follower_streaming",
        "1 while the link streams (live or catching up).",
        "gauge",
    ),
    (
        "logship_follower_breaker_state",
        "Circuit breaker: 0 closed, 1 open, 2 half-open.",
        "gauge",
    ),
    (
        "logship_follower_breaker_opened_total",
        "Times the breaker opened.",
        "counter",
    ),
    (
        "logship_follower_lsn",
        "LSN the follower acknowledged, by level.",
        "gauge",
    ),
    (
        "logship_follower_lag_records",
        "Records behind the primary's last LSN, by level.",
        "gauge",
    ),
    (
        "logship_follower_lag_bytes",
        "Bytes behind the primary's last LSN, by level.",
        "gauge",
    ),
    (
        "logship_follower_lag_seconds",
        "Last measured time from sending to acknowledgement, by level (write/flush/replay lag).",
        "gauge",
    ),
    (
        "logship_follower_retained",
        "1 while the follower holds back purging.",
        "gauge",
    ),
    (
        "logship_follower_purged",
        "1 when the follower needs records that were purged.",
        "gauge",
    ),
    (
        "logship_follower_sessions_total",
        "Sessions that reached streaming.",
        "counter",
    ),
    (
        "logship_follower_failures_total",
        "Connect failures, timeouts and lost connections.",
        "counter",
    ),
    (
        "logship_follower_sent_bytes_total",
        "Record bytes sent.",
        "counter",
    ),
    (
        "logship_follower_catch_up_chunks_total",
        "Catch-up chunks sent from the log.",
        "counter",
    ),
];

fn follower(p: &mut PromText, node: &str, f: &crate::status::FollowerSideStatus) {
    let n = [("node", node)];
    p.family(
        "logship_replica_connected",
        "1 while streaming from a primary.",
        "gauge",
    );
    p.sample(
        "logship_replica_connected",
        &n,
        f64::from(u8::from(f.connected)),
    );
    p.family(
        "logship_replica_lsn",
        "This follower's positions, by level.",
        "gauge",
    );
    for (level, v) in [
        ("write", f.write_lsn),
        ("durable", f.durable_lsn),
        ("applied", f.applied_lsn),
    ] {
        p.sample(
            "logship_replica_lsn",
            &[("node", node), ("level", level)],
            v as f64,
        );
    }
    p.family(
        "logship_replica_primary_commit_lsn",
        "The primary's commit LSN as last heard.",
        "gauge",
    );
    p.sample(
        "logship_replica_primary_commit_lsn",
        &n,
        f.primary_commit_lsn as f64,
    );
    p.family(
        "logship_replica_lag_records",
        "Records behind the primary's last LSN as last heard.",
        "gauge",
    );
    p.sample(
        "logship_replica_lag_records",
        &n,
        f.primary_last_lsn.saturating_sub(f.write_lsn) as f64,
    );
    p.family(
        "logship_sessions_rejected_total",
        "Replication sessions refused, by reason.",
        "counter",
    );
    for (reason, v) in &f.rejected {
        p.sample(
            "logship_sessions_rejected_total",
            &[("node", node), ("reason", reason)],
            *v as f64,
        );
    }
}
