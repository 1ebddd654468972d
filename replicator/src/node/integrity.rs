//! The node's integrity work, as the replica's executor: the scrubber thread (a rate-bounded
//! pass over the whole log, again and again, whose digests go to the replica), reporting the
//! log's damaged segments to the replica, and carrying out the repairs it asks for (sealing
//! the active segment, replacing a range with records it fetched and checked). Which range is
//! repaired when, and whether fetched records are trusted, are the replica's rules
//! (`crate::integrity`). Repairs done and failed are kept here for status.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use logship_engine::{Lsn, RecoveryReport, SalvageAction, ScrubOptions, Scrubber};
use parking_lot::Mutex;

use crate::config::IntegritySection;
use crate::digests::Mismatch;
use crate::fetch::IntegrityAction;
use crate::integrity::Damaged;
use crate::vocab::Input;

use super::{crc_at, Inner};
use crate::vocab::Action;

/// Repairs remembered for status.
const KEPT_REPAIRS: usize = 16;
/// How often the scrubber thread looks for damaged segments to repair.
const REPAIR_POLL: Duration = Duration::from_millis(200);
/// The scrubber thread sleeps at most this long at once, so that it stops promptly.
const MAX_NAP: Duration = Duration::from_millis(100);

/// Counters of the integrity work.
#[derive(Debug, Default)]
pub(crate) struct IntegrityCounters {
    pub(crate) scrub_bytes: AtomicU64,
    pub(crate) scrub_passes: AtomicU64,
    pub(crate) corruptions_scrub: AtomicU64,
    pub(crate) corruptions_open: AtomicU64,
    pub(crate) repairs: AtomicU64,
    pub(crate) repairs_failed: AtomicU64,
    pub(crate) taken_back: AtomicU64,
}

/// One repair, for status.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RepairEvent {
    /// Seconds since the Unix epoch.
    pub at_unix_s: f64,
    /// First LSN of the segment.
    pub first: u64,
    /// Last LSN of the segment.
    pub last: u64,
    /// The peer the records came from.
    pub source: String,
    /// `repaired` or `failed`.
    pub outcome: String,
    /// The quarantine file (repaired) or the reason (failed).
    pub detail: String,
}

/// A damaged segment waiting for repair, for status.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DamagedStatus {
    /// The segment file.
    pub segment: String,
    /// Its first LSN.
    pub first: u64,
    /// Its last LSN.
    pub last: u64,
    /// The first damaged LSN.
    pub lsn: u64,
    /// The offset of the damage.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

/// The integrity part of the node's status.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct IntegrityStatus {
    /// Bytes the scrubber has checked since start.
    pub scrub_bytes: u64,
    /// Full passes completed.
    pub scrub_passes: u64,
    /// When the last full pass ended (seconds since the Unix epoch).
    pub last_pass_end_unix_s: Option<f64>,
    /// How long the last full pass took.
    pub last_pass_seconds: Option<f64>,
    /// The scrubber's rate (0: off).
    pub scrub_bytes_per_sec: u64,
    /// Damage found by the scrubber since start.
    pub corruptions_found_by_scrub: u64,
    /// Damage set aside at open (salvage).
    pub corruptions_found_at_open: u64,
    /// Segments known damaged now (reads of their range fail until repaired).
    pub damaged: Vec<DamagedStatus>,
    /// What salvage set aside at open.
    pub salvaged_at_open: Vec<String>,
    /// Repairs done.
    pub repairs: u64,
    /// Repairs that failed (they are retried).
    pub repairs_failed: u64,
    /// The most recent repairs.
    pub recent_repairs: Vec<RepairEvent>,
    /// Records a primary took back from a follower at start.
    pub taken_back_records: u64,
    /// Digest ranges compared, per peer.
    pub digests_compared: Vec<(String, u64)>,
    /// Digest mismatches, per peer.
    pub digest_mismatches: Vec<(String, u64)>,
    /// The most recent mismatches.
    pub recent_mismatches: Vec<Mismatch>,
}

#[derive(Debug, Default)]
struct Repairs {
    history: VecDeque<RepairEvent>,
}

/// The node's integrity state.
#[derive(Debug)]
pub(crate) struct Integrity {
    pub(crate) config: IntegritySection,
    pub(crate) counters: IntegrityCounters,
    repairs: Mutex<Repairs>,
    salvaged: Vec<String>,
    last_pass: Mutex<Option<(f64, f64)>>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Integrity {
    /// From the config and what recovery found at open.
    pub(crate) fn new(config: IntegritySection, report: &RecoveryReport) -> Integrity {
        let salvaged: Vec<String> = (report.salvaged.iter())
            .map(|s| {
                let c = &s.corruption;
                let what = match &s.action {
                    SalvageAction::MarkedDamaged => "marked damaged, to repair from a replica".to_string(),
                    SalvageAction::CutAndQuarantined { quarantine, records_cut } => format!(
                        "cut before it ({records_cut} intact records after it cut too), bytes kept in {}",
                        quarantine.display()
                    ),
                };
                format!("{} offset {} LSN {}: {}; {what}", c.segment.display(), c.offset, c.lsn, c.reason)
            })
            .collect();
        let mut salvaged = salvaged;
        if report.durable_floor_removed {
            salvaged.push(
                "logship.durable was damaged: removed (the replicas vouch for the end of the log; a primary takes back what they hold)".into(),
            );
        }
        let counters = IntegrityCounters::default();
        counters
            .corruptions_open
            .store(salvaged.len() as u64, Ordering::Relaxed);
        Integrity {
            config,
            counters,
            repairs: Mutex::new(Repairs::default()),
            salvaged,
            last_pass: Mutex::new(None),
        }
    }

    fn note_repair(&self, event: RepairEvent) {
        let mut r = self.repairs.lock();
        r.history.push_back(event);
        while r.history.len() > KEPT_REPAIRS {
            r.history.pop_front();
        }
    }

    /// A repair could not be done now; it is retried later.
    pub(crate) fn repair_failed(&self, base: Lsn, source: &str, reason: String) {
        tracing::warn!(first = %base, %source, %reason, "repairing a damaged segment failed; retrying later");
        self.counters.repairs_failed.fetch_add(1, Ordering::Relaxed);
        self.note_repair(RepairEvent {
            at_unix_s: unix_now(),
            first: base.0,
            last: 0,
            source: source.to_string(),
            outcome: "failed".into(),
            detail: reason,
        });
    }
}

impl Inner {
    /// The scrubber thread: a step, then a nap that keeps the configured rate; damaged
    /// segments are sent for repair between steps.
    pub(super) fn run_scrubber(&self) {
        let cfg = self.integrity.config.clone();
        let mut scrubber = self.log.scrubber(ScrubOptions {
            digest_range_records: cfg.digest_range_records,
        });
        let mut pass_start = Instant::now();
        let mut next_repair_check = Instant::now();
        let mut resume_at = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            if Instant::now() >= next_repair_check {
                next_repair_check = Instant::now() + REPAIR_POLL;
                self.drive_repairs();
            }
            let now = Instant::now();
            if cfg.scrub_bytes_per_sec == 0 || now < resume_at {
                std::thread::sleep(
                    MAX_NAP
                        .min(resume_at.saturating_duration_since(now))
                        .max(Duration::from_millis(1)),
                );
                continue;
            }
            let started = Instant::now();
            match self.scrub_step(&mut scrubber, cfg.scrub_step_bytes as usize) {
                Ok((bytes, finished)) => {
                    let budget =
                        Duration::from_secs_f64(bytes as f64 / cfg.scrub_bytes_per_sec as f64);
                    resume_at = started + budget;
                    if finished {
                        let took = pass_start.elapsed().as_secs_f64();
                        *self.integrity.last_pass.lock() = Some((unix_now(), took));
                        self.integrity
                            .counters
                            .scrub_passes
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(seconds = took, "scrubber pass done");
                        resume_at = resume_at
                            .max(Instant::now() + Duration::from_millis(cfg.scrub_pause_ms));
                        pass_start = resume_at;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scrubber read failed; trying again in a second");
                    resume_at = Instant::now() + Duration::from_secs(1);
                }
            }
        }
    }

    fn scrub_step(
        &self,
        scrubber: &mut Scrubber,
        bytes: usize,
    ) -> logship_engine::Result<(u64, bool)> {
        let step = scrubber.step(bytes)?;
        let c = &self.integrity.counters;
        c.scrub_bytes.fetch_add(step.bytes, Ordering::Relaxed);
        if step.corruption.is_some() {
            c.corruptions_scrub.fetch_add(1, Ordering::Relaxed);
        }
        if !step.digests.is_empty() {
            self.step(Input::LocalDigests(step.digests));
        }
        Ok((step.bytes, step.pass_finished))
    }

    /// Reports the log's damaged segments to the replica, which decides what to repair.
    fn drive_repairs(&self) {
        let damaged: Vec<Damaged> = (self.log.damaged_segments().into_iter())
            .map(|d| Damaged {
                first: d.first,
                last: d.last,
                sealed: d.sealed,
                prev_crc: crc_at(&self.log, d.first.prev()),
            })
            .collect();
        if !damaged.is_empty() {
            self.step(Input::Damaged(damaged));
        }
    }

    /// Seals the active segment, whose damage the replica repairs once it is sealed.
    pub(super) fn seal_active(&self) {
        if let Err(e) = self.log.seal_active() {
            tracing::warn!(error = %e, "could not seal the active segment for its repair");
        }
    }

    /// Replaces a damaged segment with records fetched from `source` and checked by the
    /// replica (on the reader thread); returns what the replica is told.
    pub(super) fn apply_repair(&self, base: Lsn, chunks: &[Bytes], source: &str) -> Input {
        let result = match self.log.repair_segment(base, chunks) {
            Ok(r) => {
                (self.integrity.counters.repairs).fetch_add(1, Ordering::Relaxed);
                self.integrity.note_repair(RepairEvent {
                    at_unix_s: unix_now(),
                    first: r.first.0,
                    last: r.last.0,
                    source: source.to_string(),
                    outcome: "repaired".into(),
                    detail: r.quarantine.display().to_string(),
                });
                Ok(())
            }
            Err(e) => {
                self.integrity.repair_failed(base, source, e.to_string());
                Err(e.to_string())
            }
        };
        Input::Repaired {
            first: base,
            result,
        }
    }

    /// A checked repair to apply (queued for the reader thread), or a failed one to note;
    /// `peer_role` names where a failed repair fetched from.
    pub(super) fn on_integrity_action(&self, a: IntegrityAction, peer_role: &str) {
        match a {
            IntegrityAction::Repair {
                base,
                chunks,
                source,
            } => {
                let job = Action::Integrity(IntegrityAction::Repair {
                    base,
                    chunks,
                    source: source.clone(),
                });
                if self.read_jobs.try_send(job).is_err() {
                    let why = "the node's work queue is full".to_string();
                    self.integrity.repair_failed(base, &source, why.clone());
                    self.deferred.lock().push(Input::Repaired {
                        first: base,
                        result: Err(why),
                    });
                }
            }
            IntegrityAction::RepairFailed { base, reason } => {
                self.integrity.repair_failed(base, peer_role, reason)
            }
            // Compared by the replica; none reach here.
            IntegrityAction::PeerDigests { .. } => {}
        }
    }

    /// The integrity part of the status.
    pub(super) fn integrity_status(&self) -> IntegrityStatus {
        let c = &self.integrity.counters;
        let replica = self.replica.lock();
        let book = replica.integrity().book();
        let pass = *self.integrity.last_pass.lock();
        IntegrityStatus {
            scrub_bytes: c.scrub_bytes.load(Ordering::Relaxed),
            scrub_passes: c.scrub_passes.load(Ordering::Relaxed),
            last_pass_end_unix_s: pass.map(|p| p.0),
            last_pass_seconds: pass.map(|p| p.1),
            scrub_bytes_per_sec: self.integrity.config.scrub_bytes_per_sec,
            corruptions_found_by_scrub: c.corruptions_scrub.load(Ordering::Relaxed),
            corruptions_found_at_open: c.corruptions_open.load(Ordering::Relaxed),
            damaged: (self.log.damaged_segments().into_iter())
                .map(|d| DamagedStatus {
                    segment: d.corruption.segment.display().to_string(),
                    first: d.first.0,
                    last: d.last.0,
                    lsn: d.corruption.lsn.0,
                    offset: d.corruption.offset,
                    reason: d.corruption.reason,
                })
                .collect(),
            salvaged_at_open: self.integrity.salvaged.clone(),
            repairs: c.repairs.load(Ordering::Relaxed),
            repairs_failed: c.repairs_failed.load(Ordering::Relaxed),
            recent_repairs: self
                .integrity
                .repairs
                .lock()
                .history
                .iter()
                .cloned()
                .collect(),
            taken_back_records: c.taken_back.load(Ordering::Relaxed),
            digests_compared: book
                .compared()
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            digest_mismatches: (book.mismatches_total().iter())
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            recent_mismatches: book.recent_mismatches(),
        }
    }
}
