//! Fetching a range of records from a peer over a streaming session, and answering a peer's
//! fetch: how a damaged segment is repaired from a replica, and how a primary that restarted
//! with fewer records than a follower takes them back.
//!
//! Pure. A [`Fetcher`] asks for `from..=to` one [`Msg::Fetch`] at a time and checks every
//! answer: it must continue exactly where the last one ended, hold whole records, and stay in
//! the range. The records' CRCs are checked again by the log that takes them. The responder's
//! side is [`FetchRequest::answer`]: it refuses to answer from another history (the asker's CRC of the record
//! before the range must match its own).

use std::time::Duration;

use bytes::Bytes;
use logship_engine::record::{FLAG_MARKER, RECORD_HEADER_BYTES};
use logship_engine::{Chunk, Epoch, Lsn, RangeDigest};

use crate::protocol::Msg;

/// Bytes asked for per fetch.
pub const FETCH_CHUNK_BYTES: u32 = 4 << 20;

/// What a fetch is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Repairing the damaged segment that starts at this LSN.
    Repair(Lsn),
    /// The primary taking back records only the follower holds.
    TakeBack,
}

/// What a repair or a peer's digests ask of the executor; the same from either role (carried
/// by the replica's `Action::Integrity`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntegrityAction {
    /// Replace the damaged segment starting at `base` with these records (fetched from a
    /// peer, whole and dense; the log checks their CRCs).
    Repair {
        /// The segment's first LSN.
        base: Lsn,
        /// The records, in order.
        chunks: Vec<Bytes>,
        /// The peer they came from.
        source: String,
    },
    /// A repair fetch failed (the caller may try again later).
    RepairFailed {
        /// The segment's first LSN.
        base: Lsn,
        /// Why.
        reason: String,
    },
    /// A peer's digests, to compare with this node's.
    PeerDigests {
        /// The peer's name.
        peer: String,
        /// Its ranges.
        ranges: Vec<RangeDigest>,
    },
}

/// One range being fetched.
#[derive(Debug)]
pub struct Fetcher {
    /// Why.
    pub purpose: Purpose,
    id: u64,
    next: Lsn,
    to: Lsn,
    prev_crc: Option<u32>,
    deadline: Duration,
    timeout: Duration,
    chunks: Vec<Bytes>,
}

/// What an answer did.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchProgress {
    /// Ask for the rest with this message. The chunk just received is handed over for
    /// [`Purpose::TakeBack`] (appended as it comes) and kept for [`Purpose::Repair`].
    More {
        /// The next request.
        request: Msg,
        /// The records received, for a take-back.
        received: Option<Bytes>,
    },
    /// The whole range arrived: the chunks (a repair's) or the last one (a take-back's).
    Done(Vec<Bytes>),
}

impl Fetcher {
    /// Starts fetching `from..=to`; returns the fetcher and its first request.
    ///
    /// # Panics
    /// If the range is empty or starts at LSN 0.
    pub fn start(
        purpose: Purpose,
        id: u64,
        (from, to): (Lsn, Lsn),
        prev_crc: Option<u32>,
        now: Duration,
        timeout: Duration,
    ) -> (Fetcher, Msg) {
        assert!(from > Lsn::ZERO && from <= to, "fetch of {from}..={to}");
        let f = Fetcher {
            purpose,
            id,
            next: from,
            to,
            prev_crc,
            deadline: now + timeout,
            timeout,
            chunks: Vec::new(),
        };
        let request = f.request();
        (f, request)
    }

    fn request(&self) -> Msg {
        Msg::Fetch {
            id: self.id,
            from: self.next,
            to: self.to,
            max_bytes: FETCH_CHUNK_BYTES,
            prev_crc: self.prev_crc,
        }
    }

    /// What the driver hears when this fetch fails: a repair's failure (a take-back's is the
    /// caller's to handle, so nothing).
    pub fn failed(&self, reason: String) -> Option<IntegrityAction> {
        match self.purpose {
            Purpose::Repair(base) => Some(IntegrityAction::RepairFailed { base, reason }),
            Purpose::TakeBack => None,
        }
    }

    /// The request id answers must carry.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// No answer came in time.
    pub fn expired(&self, now: Duration) -> bool {
        now >= self.deadline
    }

    /// An answer arrived; `Err` says why it cannot be used (the fetch is over).
    pub fn on_fetched(
        &mut self,
        now: Duration,
        (first, last): (Lsn, Lsn),
        records: Bytes,
    ) -> Result<FetchProgress, String> {
        if first != self.next || last > self.to {
            return Err(format!(
                "records {first}..={last} where {}..={} was asked for",
                self.next, self.to
            ));
        }
        let Some((crc, _)) = last_record(&records, first, last) else {
            return Err(format!(
                "records {first}..={last} do not hold exactly those LSNs"
            ));
        };
        self.next = last.next();
        self.prev_crc = Some(crc);
        self.deadline = now + self.timeout;
        let received = match self.purpose {
            Purpose::TakeBack => Some(records),
            Purpose::Repair(_) => {
                self.chunks.push(records);
                None
            }
        };
        if last == self.to {
            let mut chunks = std::mem::take(&mut self.chunks);
            chunks.extend(received);
            return Ok(FetchProgress::Done(chunks));
        }
        Ok(FetchProgress::More {
            request: self.request(),
            received,
        })
    }
}

/// A peer's fetch as the driver serves it: records `range` from this log, at most
/// `max_bytes`, if the peer's record before the range (CRC `prev_crc`) is this log's too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// The request id the answer carries.
    pub id: u64,
    /// First and last LSN asked for.
    pub range: (Lsn, Lsn),
    /// Size bound.
    pub max_bytes: u32,
    /// The peer's CRC of the record before the range.
    pub prev_crc: Option<u32>,
}

impl FetchRequest {
    /// The answer: the records read from the range's start on (trimmed to its end), unless the
    /// peer's record before the range differs from ours (`prev_here`: our CRC of that record,
    /// `None` when we do not hold it), or the read failed.
    pub fn answer(&self, prev_here: Option<u32>, read: Result<Option<Chunk>, String>) -> Msg {
        let (id, (from, to)) = (self.id, self.range);
        let failed = |message: String| Msg::FetchFailed { id, message };
        if let Some(want) = self.prev_crc {
            if from > Lsn::FIRST && prev_here != Some(want) {
                return failed(format!(
                    "record {} here differs (CRC {}, asked {want:#010x}): another history",
                    from.prev(),
                    prev_here.map_or("none".into(), |c| format!("{c:#010x}"))
                ));
            }
        }
        match read {
            Ok(Some(chunk)) if chunk.first == from => match trim(&chunk.bytes, from, to) {
                Some((records, last)) => Msg::Fetched {
                    id,
                    first: from,
                    last,
                    records,
                },
                None => failed(format!("the records read from {from} are not whole")),
            },
            Ok(Some(chunk)) => failed(format!("a read from {from} returned {}", chunk.first)),
            Ok(None) => failed(format!("LSN {from} is not held here")),
            Err(e) => failed(e),
        }
    }
}

/// The run's bytes up to the end of record `to` (or all of it), and its last LSN.
fn trim(records: &Bytes, first: Lsn, to: Lsn) -> Option<(Bytes, Lsn)> {
    let mut offset = 0usize;
    let mut next = first;
    while offset < records.len() && next <= to {
        let h = records.get(offset..offset.checked_add(RECORD_HEADER_BYTES)?)?;
        let len = u32::from_le_bytes(h[0..4].try_into().ok()?) as usize;
        let flags = u32::from_le_bytes(h[24..28].try_into().ok()?);
        offset = offset.checked_add(RECORD_HEADER_BYTES)?.checked_add(len)?;
        if offset > records.len() {
            return None;
        }
        if flags & FLAG_MARKER == 0 {
            next = next.next();
        }
    }
    (next > first).then(|| (records.slice(..offset), next.prev()))
}

/// Walks the record headers of a run: `Some((crc, epoch))` of the last record if the run holds
/// exactly the records `first..=last`, back to back, with perhaps write markers between them (a
/// chunk read from a segment carries the markers of the log it came from; logs skip them).
/// CRCs are left to the log, which checks them.
pub fn last_record(records: &[u8], first: Lsn, last: Lsn) -> Option<(u32, Epoch)> {
    scan_records(records, (first, last), |_, _| {})
}

/// As [`last_record`], calling `each(lsn, epoch)` for every record on the way.
pub fn scan_records(
    records: &[u8],
    (first, last): (Lsn, Lsn),
    mut each: impl FnMut(Lsn, Epoch),
) -> Option<(u32, Epoch)> {
    let mut offset = 0usize;
    let mut expect = first;
    let mut found = None;
    while offset < records.len() {
        let h = records.get(offset..offset.checked_add(RECORD_HEADER_BYTES)?)?;
        let len = u32::from_le_bytes(h[0..4].try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(h[4..8].try_into().ok()?);
        let lsn = u64::from_le_bytes(h[8..16].try_into().ok()?);
        let epoch = u64::from_le_bytes(h[16..24].try_into().ok()?);
        let flags = u32::from_le_bytes(h[24..28].try_into().ok()?);
        offset = offset.checked_add(RECORD_HEADER_BYTES)?.checked_add(len)?;
        if flags & FLAG_MARKER != 0 {
            continue;
        }
        if Lsn(lsn) != expect || expect > last {
            return None;
        }
        found = Some((crc, Epoch(epoch)));
        each(expect, Epoch(epoch));
        expect = expect.next();
    }
    (offset == records.len() && expect == last.next())
        .then_some(found)
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use logship_engine::record::encode_into;

    fn run(lsns: std::ops::RangeInclusive<u64>) -> Bytes {
        let mut b = Vec::new();
        for l in lsns {
            encode_into(&mut b, Lsn(l), Epoch(0), format!("r{l}").as_bytes());
        }
        Bytes::from(b)
    }

    const T: Duration = Duration::from_secs(5);

    /// A fetch of 5..=7, request id 1.
    fn fetch(prev_crc: Option<u32>) -> FetchRequest {
        FetchRequest {
            id: 1,
            range: (Lsn(5), Lsn(7)),
            max_bytes: FETCH_CHUNK_BYTES,
            prev_crc,
        }
    }

    #[test]
    fn a_repair_fetch_asks_until_the_range_is_whole() {
        let (mut f, first) = Fetcher::start(
            Purpose::Repair(Lsn(10)),
            7,
            (Lsn(10), Lsn(19)),
            Some(3),
            Duration::ZERO,
            T,
        );
        assert!(matches!(
            first,
            Msg::Fetch {
                id: 7,
                from: Lsn(10),
                to: Lsn(19),
                prev_crc: Some(3),
                ..
            }
        ));
        let p = f
            .on_fetched(Duration::ZERO, (Lsn(10), Lsn(14)), run(10..=14))
            .unwrap();
        assert!(matches!(
            p,
            FetchProgress::More {
                request: Msg::Fetch { from: Lsn(15), .. },
                received: None
            }
        ));
        assert!(f
            .on_fetched(Duration::ZERO, (Lsn(16), Lsn(19)), run(16..=19))
            .is_err());
        let (mut f, _) = Fetcher::start(
            Purpose::Repair(Lsn(10)),
            7,
            (Lsn(10), Lsn(19)),
            None,
            Duration::ZERO,
            T,
        );
        f.on_fetched(Duration::ZERO, (Lsn(10), Lsn(14)), run(10..=14))
            .unwrap();
        let FetchProgress::Done(chunks) = f
            .on_fetched(Duration::ZERO, (Lsn(15), Lsn(19)), run(15..=19))
            .unwrap()
        else {
            panic!("not done")
        };
        assert_eq!(chunks.len(), 2);
    }

    #[test]
    fn answers_refuse_another_history_and_trim_to_the_range() {
        let chunk = |a, b| {
            Ok(Some(Chunk {
                first: Lsn(a),
                last: Lsn(b),
                bytes: run(a..=b),
            }))
        };
        let m = fetch(Some(9)).answer(Some(8), chunk(5, 10));
        assert!(matches!(m, Msg::FetchFailed { id: 1, .. }), "{m:?}");
        let m = fetch(Some(9)).answer(Some(9), chunk(5, 10));
        let Msg::Fetched {
            first,
            last,
            records,
            ..
        } = m
        else {
            panic!("{m:?}")
        };
        assert_eq!((first, last), (Lsn(5), Lsn(7)));
        assert_eq!(records, run(5..=7));
        assert!(matches!(
            fetch(None).answer(None, Ok(None)),
            Msg::FetchFailed { .. }
        ));
    }
}
