//! What happened to records over the whole run, for the invariants to judge the logs by:
//! every record the primary's log ever held at each LSN, every record acknowledged at a remote
//! durable level (and whether the primary was degraded then), and every record each follower
//! ever received.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use logship_engine::record;
use logship_engine::Lsn;

use crate::protocol::DurabilityLevel;

/// A record acknowledged at a remote durable level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedRecord {
    /// Its bytes, as the primary's log held them at the acknowledgement.
    pub bytes: Bytes,
    /// The strongest level it was acknowledged at.
    pub level: DurabilityLevel,
}

/// The run's record history; see the module documentation.
#[derive(Debug, Default)]
pub struct History {
    /// Every record the primary's log held at each LSN, ever (one per history it lived in).
    written: BTreeMap<Lsn, Vec<Bytes>>,
    /// Records acknowledged at `RemoteDurable` or `RemoteApplied` while not degraded.
    acked: BTreeMap<Lsn, AckedRecord>,
    /// The highest LSN acknowledged at `RemoteDurable` or `RemoteApplied` (degraded or not).
    max_acked: Lsn,
    /// Per node: `(lsn, crc)` of every record it ever appended.
    received: BTreeMap<usize, BTreeSet<(Lsn, u32)>>,
}

/// The CRC field of an encoded record (0 if it does not decode).
pub fn crc_of(bytes: &[u8]) -> u32 {
    record::decode(bytes).map_or(0, |r| r.header.crc)
}

impl History {
    /// The primary's log now holds `bytes` at `lsn`.
    pub fn primary_wrote(&mut self, lsn: Lsn, bytes: &Bytes) {
        let versions = self.written.entry(lsn).or_default();
        if !versions.contains(bytes) {
            versions.push(bytes.clone());
        }
    }

    /// Whether the primary's log ever held `bytes` at `lsn`.
    pub fn primary_ever_held(&self, lsn: Lsn, bytes: &[u8]) -> bool {
        self.written
            .get(&lsn)
            .is_some_and(|v| v.iter().any(|b| b[..] == *bytes))
    }

    /// Node `node` appended `bytes` at `lsn`.
    pub fn received(&mut self, node: usize, lsn: Lsn, bytes: &[u8]) {
        self.received
            .entry(node)
            .or_default()
            .insert((lsn, crc_of(bytes)));
    }

    /// Whether node `node` ever appended the record with this CRC at `lsn`.
    pub fn ever_received(&self, node: usize, lsn: Lsn, crc: u32) -> bool {
        self.received
            .get(&node)
            .is_some_and(|r| r.contains(&(lsn, crc)))
    }

    /// Record `lsn` (`bytes`) was acknowledged at `level`; `degraded`: the primary was in
    /// degraded mode, so the acknowledgement promised local durability only.
    pub fn acked(&mut self, lsn: Lsn, bytes: Bytes, level: DurabilityLevel, degraded: bool) {
        if level < DurabilityLevel::RemoteDurable {
            return;
        }
        self.max_acked = self.max_acked.max(lsn);
        if degraded {
            return;
        }
        let e = self
            .acked
            .entry(lsn)
            .or_insert(AckedRecord { bytes, level });
        e.level = e.level.max(level);
    }

    /// Records acknowledged at a remote durable level outside degraded mode.
    pub fn acked_records(&self) -> &BTreeMap<Lsn, AckedRecord> {
        &self.acked
    }

    /// The highest LSN ever acknowledged at a remote durable level.
    pub fn max_acked(&self) -> Lsn {
        self.max_acked
    }

    /// The highest LSN acknowledged at a remote durable level outside degraded mode (what
    /// survives a failover: a degraded acknowledgement promised local durability only).
    pub fn max_acked_on_quorum(&self) -> Lsn {
        self.acked.keys().next_back().copied().unwrap_or(Lsn::ZERO)
    }
}
