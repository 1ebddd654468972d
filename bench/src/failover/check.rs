//! The end-of-run check: every acknowledged append, as (LSN, payload CRC), must be on the final
//! primary, and no acknowledged payload may be there twice; the other members must hold the
//! same records as the primary.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::Context as _;
use logship_engine::Lsn;
use logship_replicator::Client;
use serde::Serialize;

use super::cluster::Cluster;
use super::load::{seq_of, Ack};

/// What the check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    /// The final primary.
    pub primary: String,
    /// Records on it.
    pub records: usize,
    /// Acknowledged appends.
    pub acked: usize,
    /// Acknowledged (LSN, CRC) pairs not on the final primary: the LSN is missing, or holds
    /// other bytes.
    pub lost: usize,
    /// Acknowledged payloads found at more than one LSN on the final primary.
    pub duplicated: usize,
    /// Records of another member that differ from the primary's at the same LSN, or that one
    /// of the two lacks.
    pub differing_on_others: usize,
}

/// Every record of member `i`: LSN to (payload CRC, sequence number in the payload).
fn records(c: &Cluster, i: usize) -> anyhow::Result<BTreeMap<u64, (u32, Option<u64>)>> {
    let m = &c.members[i];
    let mut client = Client::connect(m.client, Duration::from_secs(2))
        .with_context(|| format!("connecting to {}", m.id))?;
    client.set_timeout(Duration::from_secs(30))?;
    let mut out = BTreeMap::new();
    let mut from = Lsn(1);
    loop {
        let batch = client
            .read(from, 1 << 20)
            .with_context(|| format!("reading {} from LSN {}", m.id, from.0))?;
        let Some(last) = batch.last().map(|r| r.lsn) else {
            break;
        };
        for r in batch {
            out.insert(r.lsn.0, (crc32fast::hash(&r.payload), seq_of(&r.payload)));
        }
        from = last.next();
    }
    Ok(out)
}

/// Checks `acks` against the records of member `primary`, and the other members' records
/// against the primary's.
///
/// # Errors
/// When a member cannot be read.
pub fn check(c: &Cluster, primary: usize, acks: &[Ack]) -> anyhow::Result<Verdict> {
    let on_primary = records(c, primary)?;
    let mut at: HashMap<u64, usize> = HashMap::new();
    for seq in on_primary.values().filter_map(|(_, s)| *s) {
        *at.entry(seq).or_default() += 1;
    }
    let mut v = Verdict {
        primary: c.members[primary].id.clone(),
        records: on_primary.len(),
        acked: acks.len(),
        ..Verdict::default()
    };
    for a in acks {
        if on_primary.get(&a.lsn).map(|r| r.0) != Some(a.crc) {
            v.lost += 1;
        }
        if at.get(&a.seq).is_some_and(|n| *n > 1) {
            v.duplicated += 1;
        }
    }
    for i in (0..c.members.len()).filter(|i| *i != primary) {
        let other = records(c, i)?;
        let keys: BTreeSet<&u64> = on_primary.keys().chain(other.keys()).collect();
        v.differing_on_others += keys
            .into_iter()
            .filter(|l| on_primary.get(l) != other.get(l))
            .count();
    }
    Ok(v)
}
