//! Starting a node whose cluster elects its primary: the replica with failover, its election
//! configuration from the `[cluster]` table, its persisted election state, and the check that
//! the table is the one this log was written under.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use logship_engine::{Epoch, Log, Lsn};

use super::election_file;
use super::{os_seed, tail_of};
use crate::config::{FailoverSettings, NodeConfig};
use crate::error::{Error, Result};
use crate::protocol::auth::KeyRing;
use crate::replica::Replica;
use crate::vocab::{ElectionConfig, FollowerConfig, Member, NonceSource, PrimaryConfig};

/// The cluster table this log was first started under, next to the log's segments.
pub const MEMBERS_FILE: &str = "logship.node-cluster-members";
const MEMBERS_TEMP_FILE: &str = "logship.node-cluster-members.tmp";
const MEMBERS_HEADER: &str = "logship cluster members, version 1";

/// The replica of a node in a cluster that elects its primary: a follower at first.
pub(super) fn elected_replica(
    config: &NodeConfig,
    settings: FailoverSettings,
    key: KeyRing,
    log: &Log,
    nonces: NonceSource,
) -> Result<Replica> {
    check_members(&config.node.data_dir, &settings.members)?;
    let election = election_config(config, settings, key)?;
    let state = election_file::load(&config.node.data_dir)
        .map_err(|e| Error::config("cluster", format!("reading the election state: {e}")))?
        .unwrap_or_default();
    let seed = os_seed()?;
    let seed = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes"));
    let tail = tail_of(log, Lsn::ZERO)?;
    tracing::info!(epoch = %state.epoch, voted_for = ?state.voted_for, last = %tail.last, "starting as a follower of an elected primary");
    Ok(Replica::with_failover(
        election,
        (log.first_lsn(), tail),
        state,
        (seed, nonces),
        Duration::ZERO,
    ))
}

fn election_config(
    config: &NodeConfig,
    s: FailoverSettings,
    key: KeyRing,
) -> Result<ElectionConfig> {
    let primary = PrimaryConfig {
        cluster_id: config.node.cluster_id.clone(),
        node_id: config.node.id.as_str().into(),
        key: key.clone(),
        epoch: Epoch(0),
        followers: Vec::new(),
        quorum: None,
        policy: s.policy,
        timeouts: config.timeouts()?,
        backoff: config.backoff()?,
        breaker: config.breaker()?,
        max_inflight_bytes: config.replication.max_inflight_bytes,
        catch_up_chunk_bytes: config.replication.catch_up_chunk_bytes,
        catch_up_pacing: config.replication.catch_up_pacing(),
        max_retained_bytes: config.replication.max_retained_bytes,
        failover: true,
    };
    let follower = FollowerConfig {
        cluster_id: config.node.cluster_id.clone(),
        node_id: config.node.id.as_str().into(),
        key,
        timeouts: config.timeouts()?,
        auto_apply: config.follower.auto_apply,
    };
    Ok(ElectionConfig {
        members: s.members,
        me: s.me,
        timeout: s.timeout,
        primary,
        quorum: s.quorum,
        follower,
    })
}

fn describe(m: &Member) -> String {
    let mode = if m.sync { "sync" } else { "async" };
    let vote = if m.voter { "voter" } else { "non-voter" };
    format!("{} {} {mode} {vote}", m.id, m.addr)
}

/// Refuses to start when the table differs from the one this log was first started under
/// (one line naming the difference); records it on the first start.
fn check_members(dir: &Path, members: &[Member]) -> Result<()> {
    let path = dir.join(MEMBERS_FILE);
    let now: Vec<String> = members.iter().map(describe).collect();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut lines = text.lines();
            if lines.next() != Some(MEMBERS_HEADER) {
                let m = format!(
                    "{} is not a member table this version reads",
                    path.display()
                );
                return Err(Error::config("cluster.members", m));
            }
            let recorded: Vec<&str> = lines.collect();
            match first_difference(&recorded, &now) {
                None => Ok(()),
                Some(d) => Err(Error::config(
                    "cluster.members",
                    format!("differs from the table this log was written under: {d} (a membership change needs every node's table changed together; see docs/operations.md)"),
                )),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => record_members(dir, &now),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

fn first_difference(recorded: &[&str], now: &[String]) -> Option<String> {
    for i in 0..recorded.len().max(now.len()) {
        match (recorded.get(i), now.get(i)) {
            (Some(a), Some(b)) if *a == b.as_str() => {}
            (Some(a), Some(b)) => return Some(format!("member {} was \"{a}\", is \"{b}\"", i + 1)),
            (Some(a), None) => return Some(format!("member \"{a}\" is gone")),
            (None, Some(b)) => return Some(format!("member \"{b}\" is new")),
            (None, None) => {}
        }
    }
    None
}

fn record_members(dir: &Path, lines: &[String]) -> Result<()> {
    let (tmp, path) = (dir.join(MEMBERS_TEMP_FILE), dir.join(MEMBERS_FILE));
    let io = |op: &str, e| Error::io(format!("{op} {}", tmp.display()), e);
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
    let text = format!("{MEMBERS_HEADER}\n{}\n", lines.join("\n"));
    f.write_all(text.as_bytes()).map_err(|e| io("writing", e))?;
    f.sync_data().map_err(|e| io("syncing", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io("renaming", e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, port: u16) -> Member {
        Member {
            id: id.into(),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            voter: true,
            sync: true,
        }
    }

    #[test]
    fn the_table_is_recorded_then_a_different_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let table = vec![member("a", 1), member("b", 2), member("c", 3)];
        check_members(dir.path(), &table).unwrap();
        check_members(dir.path(), &table).unwrap();
        let mut moved = table.clone();
        moved[1].addr.set_port(9);
        let e = check_members(dir.path(), &moved).unwrap_err().to_string();
        assert!(
            e.contains(
                "member 2 was \"b 127.0.0.1:2 sync voter\", is \"b 127.0.0.1:9 sync voter\""
            ),
            "{e}"
        );
        let e = check_members(dir.path(), &table[..2])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("member \"c 127.0.0.1:3 sync voter\" is gone"),
            "{e}"
        );
    }
}
