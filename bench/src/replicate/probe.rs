//! The disk's fdatasync latency in the same moments as a case, at the same concurrency as the
//! case's cluster: `streams` threads at once, each doing 4 KiB overwrite + fdatasync on its own
//! prewritten file (the raw latency loop's operation), one stream per node.
//!
//! Why the moments: the project's disk changes speed from one second to the next, so a raw
//! limit measured a minute earlier can be far off. A 1-client case therefore alternates its
//! commits with probe slices in the same thread (the append benchmark's pairing); a 64-client
//! case probes just before and just after its window (probing during it would add writers to
//! the disk it measures).
//!
//! Why the concurrency: on this machine's virtual disk a lone pwrite + fdatasync loop can take
//! ~4 ms per operation (one 250 Hz tick) while two or three concurrent loops take ~0.2 ms each.
//! A cluster of N nodes has N writers flushing at once, so its limit is the N-stream figure.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};

use crate::latency::Recorder;
use crate::plan::RAW_BLOCK_BYTES;
use crate::raw;
use crate::workload::{PHASE_MEASURE, PHASE_STOP};

/// Most concurrent streams: a primary and two followers.
pub const MAX_STREAMS: usize = 3;
/// Size of each probe file (offsets wrap within it).
const PROBE_FILE_BYTES: u64 = 16 << 20;

/// One stream's prewritten file.
#[derive(Debug)]
struct Stream {
    file: File,
    block: Vec<u8>,
    offset: u64,
}

impl Stream {
    /// One 4 KiB overwrite + fdatasync at the next offset; returns its latency.
    fn op(&mut self) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        self.file
            .write_all_at(&self.block, self.offset)
            .context("probe pwrite")?;
        self.file.sync_data().context("probe fdatasync")?;
        self.offset = (self.offset + RAW_BLOCK_BYTES as u64) % PROBE_FILE_BYTES;
        Ok(t0.elapsed())
    }

    /// Operations for `duration` (or until the stop phase), recording those that started and
    /// ended in the measure phase (every one, without a phase).
    fn run(&mut self, duration: Duration, phase: Option<&AtomicU8>) -> anyhow::Result<Recorder> {
        let mut recorder = Recorder::new();
        let start = Instant::now();
        while start.elapsed() < duration {
            let before = phase.map_or(PHASE_MEASURE, |p| p.load(Ordering::Relaxed));
            if before == PHASE_STOP {
                break;
            }
            let latency = self.op()?;
            let after = phase.map_or(PHASE_MEASURE, |p| p.load(Ordering::Relaxed));
            if before == PHASE_MEASURE && after == PHASE_MEASURE {
                recorder.record(latency);
            }
        }
        Ok(recorder)
    }
}

/// [`MAX_STREAMS`] prewritten files for probe operations.
#[derive(Debug)]
pub struct DiskProbe {
    streams: Vec<Stream>,
}

impl DiskProbe {
    /// Prewrites `dir/disk-probe-<i>` for each stream.
    ///
    /// # Errors
    /// On any I/O failure.
    pub fn create(dir: &Path) -> anyhow::Result<DiskProbe> {
        let streams = (0..MAX_STREAMS)
            .map(|i| {
                Ok(Stream {
                    file: raw::prewrite(&dir.join(format!("disk-probe-{i}")), PROBE_FILE_BYTES)?,
                    block: raw::pattern(RAW_BLOCK_BYTES),
                    offset: 0,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(DiskProbe { streams })
    }

    /// Runs `streams` concurrent loops for `duration`, or until the stop phase with `phase`
    /// (then recording only operations inside the measure phase), into `into`.
    ///
    /// # Errors
    /// On any I/O failure.
    pub fn run(
        &mut self,
        streams: usize,
        duration: Duration,
        phase: Option<&AtomicU8>,
        into: &mut Recorder,
    ) -> anyhow::Result<()> {
        assert!(
            (1..=MAX_STREAMS).contains(&streams),
            "{streams} probe streams, expected 1..={MAX_STREAMS}"
        );
        let (first, rest) = self.streams[..streams]
            .split_first_mut()
            .expect("at least one stream");
        let results = std::thread::scope(|s| {
            let helpers: Vec<_> = rest
                .iter_mut()
                .map(|stream| s.spawn(move || stream.run(duration, phase)))
                .collect();
            let mut results = vec![first.run(duration, phase)];
            for h in helpers {
                results.push(h.join().map_err(|_| anyhow!("a probe thread panicked"))?);
            }
            Ok::<_, anyhow::Error>(results)
        })?;
        for r in results {
            into.merge(&r?);
        }
        Ok(())
    }
}
