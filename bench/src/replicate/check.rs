//! The benchmark's own check of what it measures: when a commit at `remote_durable` resolves
//! with LSN `L`, the primary's log must be durable to `L` and so must the logs of at least `k`
//! sync followers (`k` from the quorum). Every node runs in this process, so the clients read
//! each log's durable watermark right after their commit resolves.
//!
//! Both reads are free of races: an engine publishes its watermark before it tells its observer
//! (which is how the primary, and through an acknowledgement the follower, learn of it), and
//! watermarks only rise. A commit that resolves before both hold is acknowledged early: the
//! figures would then not measure durability, and the report says so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use logship_engine::Lsn;
use logship_replicator::Node;

/// Checks commits against the nodes' durable watermarks.
#[derive(Debug)]
pub struct CommitCheck {
    primary: Arc<Node>,
    sync_followers: Vec<Arc<Node>>,
    quorum_size: usize,
    early: AtomicU64,
    first_early: Mutex<Option<String>>,
}

impl CommitCheck {
    /// Checks against `primary` and `sync_followers`, `quorum_size` of which must hold a
    /// commit.
    pub fn new(primary: Arc<Node>, sync_followers: Vec<Arc<Node>>, quorum_size: usize) -> Self {
        assert!(
            quorum_size <= sync_followers.len(),
            "quorum of {quorum_size} from {} sync followers",
            sync_followers.len()
        );
        CommitCheck {
            primary,
            sync_followers,
            quorum_size,
            early: AtomicU64::new(0),
            first_early: Mutex::new(None),
        }
    }

    /// A commit resolved with `lsn`: counts it if it was acknowledged early.
    pub fn commit_resolved(&self, lsn: Lsn) {
        let local = self.primary.log().durable_lsn();
        let holding = self
            .sync_followers
            .iter()
            .filter(|f| f.log().durable_lsn() >= lsn)
            .count();
        if local >= lsn && holding >= self.quorum_size {
            return;
        }
        if self.early.fetch_add(1, Ordering::Relaxed) == 0 {
            let followers: Vec<String> = self
                .sync_followers
                .iter()
                .map(|f| f.log().durable_lsn().to_string())
                .collect();
            let what = format!(
                "commit of LSN {lsn} resolved with the primary durable to {local} and sync \
                 followers durable to [{}] (quorum needs {})",
                followers.join(", "),
                self.quorum_size
            );
            if let Ok(mut first) = self.first_early.lock() {
                first.get_or_insert(what);
            }
        }
    }

    /// Commits acknowledged early so far, and the first of them; resets both.
    pub fn take(&self) -> (u64, Option<String>) {
        let n = self.early.swap(0, Ordering::Relaxed);
        let first = self.first_early.lock().ok().and_then(|mut f| f.take());
        (n, first)
    }
}
