//! A node's disk, in time: the fdatasync in flight and the queue of read jobs, each with the
//! time it completes. What they do to the log happens at completion (the executor's, in
//! `exec`), as on the node, whose reader thread and writer work on the log as it is then.
//!
//! One sync at a time: a sync covers what was written when it started (its `target`); a
//! truncation while it is in flight lowers the target, since the records past the cut that it
//! would have covered are gone. Read jobs complete in order, as on the node's single reader
//! thread.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use logship_engine::Lsn;

use crate::fetch::FetchRequest;
use crate::vocab::{ConnId, Rng};

use super::spec::DiskConfig;

/// Read jobs a node's reader holds at most (the node's `READ_JOBS_CAPACITY`).
pub const READ_JOBS_CAPACITY: usize = 256;

/// Log work off the replica's path, as the node's reader thread does it.
#[derive(Clone, Debug)]
pub enum ReadJob {
    /// A catch-up chunk.
    Chunk {
        /// The link.
        link: usize,
        /// Its connection.
        conn: ConnId,
        /// First LSN.
        from: Lsn,
        /// Size bound.
        max_bytes: usize,
    },
    /// A record's CRC.
    Crc {
        /// The link.
        link: usize,
        /// Its connection.
        conn: ConnId,
        /// The record.
        lsn: Lsn,
    },
    /// A peer's fetch.
    ServeFetch {
        /// The primary's link (`None` on a follower).
        link: Option<usize>,
        /// Its connection.
        conn: ConnId,
        /// The request.
        request: FetchRequest,
    },
    /// Records taken back from a follower, appended to the primary's log.
    TakeBack {
        /// The link.
        link: usize,
        /// Its connection.
        conn: ConnId,
        /// The records.
        records: Bytes,
    },
}

/// An fdatasync in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncInFlight {
    /// The last LSN written when it started: what it makes durable.
    pub target: Lsn,
    /// When it started.
    pub started_at: Duration,
    /// When it completes.
    pub done_at: Duration,
}

/// A node's disk; see the module documentation.
#[derive(Debug)]
pub struct Disk {
    config: DiskConfig,
    sync: Option<SyncInFlight>,
    jobs: VecDeque<(Duration, ReadJob)>,
    /// The disk is slow until then.
    pub slow_until: Duration,
    /// No fdatasync completes before then (a stalled disk).
    pub stalled_until: Duration,
}

impl Disk {
    /// An idle disk.
    pub fn new(config: DiskConfig) -> Disk {
        Disk {
            config,
            sync: None,
            jobs: VecDeque::new(),
            slow_until: Duration::ZERO,
            stalled_until: Duration::ZERO,
        }
    }

    /// Forgets everything in flight (the node stopped).
    pub fn clear(&mut self) {
        self.sync = None;
        self.jobs.clear();
    }

    /// When the next sync or job completes.
    pub fn next_due(&self) -> Option<Duration> {
        let job = self.jobs.front().map(|(t, _)| *t);
        let sync = self.sync.map(|s| s.done_at);
        match (job, sync) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The sync in flight.
    pub fn sync(&self) -> Option<SyncInFlight> {
        self.sync
    }

    /// Starts a sync of everything up to `target`.
    ///
    /// # Panics
    /// If one is in flight.
    pub fn start_sync(&mut self, now: Duration, target: Lsn, rng: &mut Rng) {
        assert!(self.sync.is_none(), "two syncs in flight");
        let (lo, mut hi) = self.config.sync_latency;
        if now < self.slow_until {
            hi = self.config.slow_sync_max;
        }
        let done_at = (now + between(rng, lo, hi)).max(self.stalled_until);
        self.sync = Some(SyncInFlight {
            target,
            started_at: now,
            done_at,
        });
    }

    /// The sync in flight, if it is done by `now`.
    pub fn take_done_sync(&mut self, now: Duration) -> Option<SyncInFlight> {
        match self.sync {
            Some(s) if s.done_at <= now => self.sync.take(),
            _ => None,
        }
    }

    /// The log was cut after `after`: a sync in flight covers nothing past it.
    pub fn truncated(&mut self, after: Lsn) {
        if let Some(s) = &mut self.sync {
            s.target = s.target.min(after);
        }
    }

    /// Queues a read job; it completes after the ones before it.
    pub fn queue(&mut self, now: Duration, job: ReadJob, rng: &mut Rng) {
        let (lo, mut hi) = self.config.read_latency;
        if now < self.slow_until {
            hi = hi.max(self.config.slow_sync_max / 4);
        }
        let after = self.jobs.back().map_or(now, |(t, _)| *t).max(now);
        self.jobs.push_back((after + between(rng, lo, hi), job));
    }

    /// The next job, if it is done by `now`.
    pub fn take_done_job(&mut self, now: Duration) -> Option<ReadJob> {
        match self.jobs.front() {
            Some((t, _)) if *t <= now => self.jobs.pop_front().map(|(_, j)| j),
            _ => None,
        }
    }

    /// Read jobs queued.
    pub fn queued_jobs(&self) -> usize {
        self.jobs.len()
    }
}

/// A duration in `lo..=hi`.
pub fn between(rng: &mut Rng, lo: Duration, hi: Duration) -> Duration {
    let span = u64::try_from(hi.saturating_sub(lo).as_nanos()).unwrap_or(u64::MAX);
    lo + Duration::from_nanos(rng.below(span.saturating_add(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn jobs_complete_in_order_and_a_cut_lowers_the_sync_in_flight() {
        let mut rng = Rng::new(1);
        let mut d = Disk::new(DiskConfig::default());
        let crc = |lsn| ReadJob::Crc {
            link: 0,
            conn: ConnId(1),
            lsn: Lsn(lsn),
        };
        d.queue(Duration::ZERO, crc(1), &mut rng);
        d.queue(Duration::ZERO, crc(2), &mut rng);
        let far = Duration::from_secs(1);
        assert!(matches!(
            d.take_done_job(far),
            Some(ReadJob::Crc { lsn: Lsn(1), .. })
        ));
        assert!(matches!(
            d.take_done_job(far),
            Some(ReadJob::Crc { lsn: Lsn(2), .. })
        ));
        d.start_sync(Duration::ZERO, Lsn(9), &mut rng);
        d.truncated(Lsn(4));
        assert_eq!(d.take_done_sync(US).map(|s| s.target), None, "not done yet");
        assert_eq!(d.take_done_sync(far).map(|s| s.target), Some(Lsn(4)));
    }
}
