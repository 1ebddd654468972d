//! `logship status --addr HOST:PORT [--json]`: a node's replication status from its client
//! port, as a table (like `pg_stat_replication`) or as JSON.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use logship::replication::link::Phase;
use logship::replication::node::IntegrityStatus;
use logship::replication::status::{FollowerSideStatus, FollowerStatus, PrimaryStatus};
use logship::{Client, NodeStatus};

/// Arguments of `logship status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The node's client port.
    #[arg(long, value_name = "HOST:PORT")]
    addr: SocketAddr,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the node.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    #[command(flatten)]
    connect: super::ConnectArgs,
}

/// Runs `logship status`.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_secs_f64(args.timeout.max(0.001));
    let held = args.connect.load()?;
    let status = Client::connect_as(args.addr, timeout, held.credentials())?.status()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

/// Bytes in a short human form.
pub fn bytes(b: u64) -> String {
    match b {
        0..=9_999 => format!("{b} B"),
        10_000..=9_999_999 => format!("{:.1} KiB", b as f64 / 1024.0),
        10_000_000..=9_999_999_999 => format!("{:.1} MiB", b as f64 / 1048576.0),
        _ => format!("{:.2} GiB", b as f64 / 1073741824.0),
    }
}

fn phase(p: Phase) -> &'static str {
    match p {
        Phase::Idle => "down",
        Phase::Connecting => "connecting",
        Phase::Handshake => "handshake",
        Phase::CatchingUp => "catching-up",
        Phase::Streaming => "streaming",
    }
}

/// The status as text.
pub fn render(s: &NodeStatus) -> String {
    let mut out = String::new();
    let role = match (
        &s.primary,
        s.election.as_ref().is_some_and(|e| e.campaigning),
    ) {
        (Some(_), _) => "primary",
        (None, true) => "candidate",
        (None, false) => "follower",
    };
    let _ = writeln!(
        out,
        "node {} ({role}, epoch {}, cluster {}): last LSN {}, durable {}, first {}; log {}, transport {}, up {:.0} s",
        s.node_id, s.epoch, s.cluster_id, s.last_lsn, s.durable_lsn, s.first_lsn, s.log_backend, s.transport, s.uptime_s
    );
    if !s.divergent_files.is_empty() {
        let _ = writeln!(
            out,
            "divergent suffixes cut ({} records since start), kept in the data directory: {}",
            s.divergent_records,
            s.divergent_files.join(", ")
        );
    }
    if let Some(e) = &s.election {
        let _ = writeln!(
            out,
            "elections: voted for {} in this epoch; pre-votes {}, elections {} (won {}), votes granted {} refused {}, step-downs {}",
            e.voted_for.as_deref().unwrap_or("nobody"),
            e.pre_votes, e.elections, e.won, e.votes_granted, e.votes_refused, e.step_downs
        );
    }
    if let Some(p) = &s.primary {
        primary(&mut out, s, p);
    }
    if let Some(f) = &s.follower {
        follower(&mut out, f);
    }
    integrity(&mut out, &s.integrity);
    out
}

/// The primary's commit positions, quorum, and a row per follower.
fn primary(out: &mut String, s: &NodeStatus, p: &PrimaryStatus) {
    let c = p.commit;
    let _ = writeln!(
        out,
        "commit LSN: local {} remote_write {} remote_durable {} remote_applied {}",
        c.local, c.remote_write, c.remote_durable, c.remote_applied
    );
    let _ = writeln!(
        out,
        "quorum {}: {}{}{}; retention from LSN {}; appends waiting {}; quorum timeouts {}",
        p.quorum,
        if p.quorum_available {
            "available"
        } else {
            "UNAVAILABLE"
        },
        if p.degraded {
            " (DEGRADED: acknowledging at local durability)"
        } else {
            ""
        },
        if p.serving {
            ""
        } else {
            "; NOT SERVING yet: hearing from the sync followers and taking back what they hold"
        },
        p.retention_lsn,
        s.waiting_appends,
        s.quorum_timeouts
    );
    followers(out, &p.followers);
    rpo(out, &p.followers);
}

/// What failing over to each follower now would lose, per level.
fn rpo(out: &mut String, followers: &[FollowerStatus]) {
    if followers.iter().all(|f| f.rpo.is_empty()) {
        return;
    }
    let _ = writeln!(out, "RPO of failing over to a follower now (acknowledged records it lacks: records / bytes / age of the oldest):");
    for f in followers {
        let levels: Vec<String> = (f.rpo.iter())
            .map(|r| {
                let age = r.seconds.map_or("-".to_string(), |s| format!("{:.3} s", s));
                format!("{} {} / {} / {age}", r.level, r.records, bytes(r.bytes))
            })
            .collect();
        let _ = writeln!(out, "  {:<10} {}", f.name, levels.join("; "));
    }
}

/// The primary's followers, one row each.
fn followers(out: &mut String, followers: &[FollowerStatus]) {
    const HEAD: [[&str; 13]; 2] = [
        [
            "follower",
            "mode",
            "state",
            "healthy",
            "breaker",
            "write",
            "durable",
            "applied",
            "behind",
            "behind",
            "write_lag",
            "flush_lag",
            "replay_lag",
        ],
        [
            "", "", "", "", "", "LSN", "LSN", "LSN", "records", "bytes", "ms", "ms", "ms",
        ],
    ];
    for line in &HEAD {
        row(out, line.each_ref().map(|c| c as &dyn std::fmt::Display));
    }
    for f in followers {
        row(
            out,
            [
                &f.name,
                &f.mode,
                &phase(f.phase),
                &if f.healthy { "yes" } else { "no" },
                &f.breaker,
                &f.write_lsn,
                &f.durable_lsn,
                &f.applied_lsn,
                &f.durable_behind.records,
                &bytes(f.durable_behind.bytes),
                &ms(f.write_lag_ms),
                &ms(f.flush_lag_ms),
                &ms(f.replay_lag_ms),
            ],
        );
        if let Some(e) = &f.last_error {
            if !f.healthy {
                let _ = writeln!(out, "  {}: {e}", f.name);
            }
        }
    }
}

/// One row of the followers table: five text columns aligned left, then numbers aligned right.
fn row(out: &mut String, cells: [&dyn std::fmt::Display; 13]) {
    const WIDTHS: [usize; 13] = [10, 5, 11, 7, 9, 10, 10, 10, 9, 10, 9, 9, 9];
    for (i, (cell, width)) in cells.into_iter().zip(WIDTHS).enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = if i < 5 {
            write!(out, "{sep}{cell:<width$}")
        } else {
            write!(out, "{sep}{cell:>width$}")
        };
    }
    out.push('\n');
}

/// Where a follower streams from.
fn follower(out: &mut String, f: &FollowerSideStatus) {
    let _ = writeln!(
        out,
        "primary {}: {}; written {}, durable {}, applied {}; primary commit {}, last {}; heard {} ms ago",
        f.primary.as_deref().unwrap_or("-"),
        if f.connected { "streaming" } else { "NOT CONNECTED" },
        f.write_lsn,
        f.durable_lsn,
        f.applied_lsn,
        f.primary_commit_lsn,
        f.primary_last_lsn,
        ms(f.last_heard_ms)
    );
}

/// The scrubber, damage, repairs and the digest comparison.
fn integrity(out: &mut String, i: &IntegrityStatus) {
    let last_pass = match (i.last_pass_end_unix_s, i.last_pass_seconds) {
        (Some(end), Some(took)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            format!(
                "last full pass ended {:.0} s ago, took {took:.1} s",
                now - end
            )
        }
        _ => "no full pass yet".into(),
    };
    let compared: u64 = i.digests_compared.iter().map(|(_, n)| n).sum();
    let mismatched: u64 = i.digest_mismatches.iter().map(|(_, n)| n).sum();
    let _ = writeln!(
        out,
        "integrity: scrubbed {} in {} passes at {}/s ({last_pass}); damage found by scrub {}, at open {}; repairs {} (failed {}); digests compared {compared}, MISMATCHED {mismatched}; taken back {}",
        bytes(i.scrub_bytes),
        i.scrub_passes,
        bytes(i.scrub_bytes_per_sec),
        i.corruptions_found_by_scrub,
        i.corruptions_found_at_open,
        i.repairs,
        i.repairs_failed,
        i.taken_back_records
    );
    for d in &i.damaged {
        let _ = writeln!(
            out,
            "  DAMAGED {} LSNs {}..={} from LSN {} (offset {}): {}; reads there fail until it is repaired",
            d.segment, d.first, d.last, d.lsn, d.offset, d.reason
        );
    }
    for line in &i.salvaged_at_open {
        let _ = writeln!(out, "  set aside at open: {line}");
    }
    for r in &i.recent_repairs {
        let _ = writeln!(
            out,
            "  repair of LSNs {}..={} from {}: {} ({})",
            r.first, r.last, r.source, r.outcome, r.detail
        );
    }
    for m in &i.recent_mismatches {
        let _ = writeln!(
            out,
            "  MISMATCH with {} at LSNs {}..={}: here {}, there {}",
            m.peer, m.first, m.last, m.here, m.there
        );
    }
}
