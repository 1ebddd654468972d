//! Comparing what replicas hold: the digests of LSN ranges each node's scrubber computes (the
//! engine's `RangeDigest`), this node's and its peers', matched range by range. A mismatch means
//! two nodes hold different records under the same LSNs although each record passes its own
//! CRC: an alarm a human must look at (neither side can tell by itself which one is right).
//!
//! Pure and bounded: the most recent [`KEPT_RANGES`] ranges of each source are kept.

use std::collections::{BTreeMap, VecDeque};

use logship_engine::record::{self, Frame};
use logship_engine::{DigestBuilder, Lsn, RangeDigest};

/// Ranges kept per source (this node, each peer).
pub const KEPT_RANGES: usize = 4096;
/// Mismatches kept for status.
const KEPT_MISMATCHES: usize = 64;

/// Two nodes disagree about a range.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mismatch {
    /// The peer.
    pub peer: String,
    /// First LSN of the range.
    pub first: u64,
    /// Last LSN of the range.
    pub last: u64,
    /// This node's digest, hex.
    pub here: String,
    /// The peer's, hex.
    pub there: String,
}

/// Local and peer digests, compared as they arrive.
#[derive(Debug, Default)]
pub struct DigestBook {
    local: BTreeMap<Lsn, RangeDigest>,
    peers: BTreeMap<String, BTreeMap<Lsn, RangeDigest>>,
    compared: BTreeMap<String, u64>,
    mismatches: VecDeque<Mismatch>,
    mismatches_total: BTreeMap<String, u64>,
}

fn hex(d: &[u8; 16]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn keep(map: &mut BTreeMap<Lsn, RangeDigest>, d: RangeDigest) {
    map.insert(d.first, d);
    while map.len() > KEPT_RANGES {
        map.pop_first();
    }
}

impl DigestBook {
    /// This node's scrubber digested a range; returns the mismatches it reveals.
    pub fn add_local(&mut self, d: RangeDigest) -> Vec<Mismatch> {
        keep(&mut self.local, d);
        let peers: Vec<String> = self.peers.keys().cloned().collect();
        peers
            .into_iter()
            .filter_map(|p| self.compare(&p, d.first))
            .collect()
    }

    /// A peer sent its digests; returns the mismatches they reveal.
    pub fn add_peer(&mut self, peer: &str, ranges: &[RangeDigest]) -> Vec<Mismatch> {
        let mine = self.peers.entry(peer.to_string()).or_default();
        for d in ranges {
            keep(mine, *d);
        }
        ranges
            .iter()
            .filter_map(|d| self.compare(peer, d.first))
            .collect()
    }

    fn compare(&mut self, peer: &str, first: Lsn) -> Option<Mismatch> {
        let here = self.local.get(&first)?;
        let there = self.peers.get(peer)?.get(&first)?;
        if here.last != there.last {
            return None; // Another range size: not comparable.
        }
        *self.compared.entry(peer.to_string()).or_default() += 1;
        if here.digest == there.digest {
            // The range agrees now (one side was repaired): the alarm about it is over.
            let first = first.get();
            self.mismatches
                .retain(|m| !(m.peer == peer && m.first == first));
            return None;
        }
        let m = Mismatch {
            peer: peer.to_string(),
            first: first.get(),
            last: here.last.get(),
            here: hex(&here.digest),
            there: hex(&there.digest),
        };
        *self.mismatches_total.entry(peer.to_string()).or_default() += 1;
        self.mismatches.push_back(m.clone());
        while self.mismatches.len() > KEPT_MISMATCHES {
            self.mismatches.pop_front();
        }
        Some(m)
    }

    /// Ranges compared, per peer.
    pub fn compared(&self) -> &BTreeMap<String, u64> {
        &self.compared
    }

    /// Mismatches found, per peer.
    pub fn mismatches_total(&self) -> &BTreeMap<String, u64> {
        &self.mismatches_total
    }

    /// The most recent mismatches that no later comparison of the same range resolved.
    pub fn recent_mismatches(&self) -> Vec<Mismatch> {
        self.mismatches.iter().cloned().collect()
    }

    /// Checks records fetched from `source` for a repair against every other peer's digests of
    /// the whole ranges they cover (the second source, where there is one): `Err` names the
    /// first range that disagrees. Returns how many ranges were checked.
    pub fn check_fetched(
        &self,
        source: &str,
        chunks: &[bytes::Bytes],
        range_records: u64,
    ) -> Result<usize, String> {
        let computed = digest_run(chunks, range_records);
        let mut checked = 0;
        for (peer, theirs) in self.peers.iter().filter(|(p, _)| p.as_str() != source) {
            for d in &computed {
                if let Some(t) = theirs.get(&d.first).filter(|t| t.last == d.last) {
                    if t.digest != d.digest {
                        return Err(format!(
                            "LSNs {}..={} from {source} differ from {peer}'s digest",
                            d.first, d.last
                        ));
                    }
                    checked += 1;
                }
            }
        }
        Ok(checked)
    }
}

/// The digests of the whole aligned ranges in a run of records, as the engine's scrubber
/// computes them.
fn digest_run(chunks: &[bytes::Bytes], n: u64) -> Vec<RangeDigest> {
    let mut builder = DigestBuilder::new(n);
    let mut out = Vec::new();
    for chunk in chunks {
        let mut off = 0;
        while off < chunk.len() {
            let Ok(f) = record::decode_frame(&chunk[off..]) else {
                return out;
            };
            off += f.encoded_len();
            if let Frame::Record(r) = f {
                let h = &r.header;
                out.extend(builder.push(h.lsn, h.epoch.get(), h.crc, r.payload.len()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(first: u64, byte: u8) -> RangeDigest {
        RangeDigest {
            first: Lsn(first),
            last: Lsn(first + 99),
            digest: [byte; 16],
        }
    }

    #[test]
    fn ranges_are_compared_whichever_side_comes_first() {
        let mut b = DigestBook::default();
        assert!(b.add_peer("s1", &[d(1, 1), d(101, 2)]).is_empty());
        assert!(b.add_local(d(1, 1)).is_empty());
        let m = b.add_local(d(101, 9));
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].peer.as_str(), m[0].first, m[0].last),
            ("s1", 101, 200)
        );
        assert_eq!(b.compared()["s1"], 2);
        assert_eq!(b.mismatches_total()["s1"], 1);
        assert!(b.add_peer("s2", &[d(1, 1)]).is_empty());
        assert_eq!(b.recent_mismatches().len(), 1);
        assert!(
            b.add_peer("s1", &[d(101, 9)]).is_empty(),
            "the peer's copy was repaired"
        );
        assert!(b.recent_mismatches().is_empty(), "so the alarm is over");
        assert_eq!(b.mismatches_total()["s1"], 1, "and stays counted");
    }

    #[test]
    fn fetched_records_are_checked_against_another_peer_and_match_the_engine() {
        let dir = tempfile::tempdir().unwrap();
        let log = logship_engine::Log::open(
            dir.path(),
            logship_engine::Options {
                create_if_missing: true,
                ..logship_engine::Options::default()
            },
        )
        .unwrap();
        for i in 0..250u32 {
            drop(log.append(bytes::Bytes::from(format!("r{i}"))).unwrap());
        }
        log.sync().unwrap();
        let mut s = log.scrubber(logship_engine::ScrubOptions {
            digest_range_records: 100,
        });
        let mut engine = Vec::new();
        while !{
            let st = s.step(1 << 20).unwrap();
            engine.extend(st.digests);
            st.pass_finished
        } {}
        let mut r = log.read_from(Lsn(1)).unwrap();
        let chunk = r.next_chunk(1 << 20).unwrap().unwrap();
        assert_eq!(digest_run(std::slice::from_ref(&chunk.bytes), 100), engine);
        let mut b = DigestBook::default();
        b.add_peer("s2", &engine);
        assert_eq!(
            b.check_fetched("s1", std::slice::from_ref(&chunk.bytes), 100),
            Ok(2)
        );
        let mut wrong = engine.clone();
        wrong[1].digest[0] ^= 1;
        let mut b = DigestBook::default();
        b.add_peer("s2", &wrong);
        assert!(b.check_fetched("s1", &[chunk.bytes], 100).is_err());
    }
}
