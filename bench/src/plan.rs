//! What a run measures and for how long: the full plan (the figures in `docs/benchmarks.md`) and
//! the quick plan (a smoke run that finishes in under a minute).

use std::time::Duration;

use serde::Serialize;

/// Segment size of every log the benchmark opens: the engine's default.
pub const SEGMENT_SIZE_BYTES: u64 = 64 << 20;
/// Size of each prewritten raw-limit file: one segment, as the log overwrites segment by segment.
pub const RAW_FILE_BYTES: u64 = SEGMENT_SIZE_BYTES;
/// Block written by the raw latency loops.
pub const RAW_BLOCK_BYTES: usize = 4096;
/// Block written by the raw bandwidth loops.
pub const RAW_STREAM_BYTES: usize = 1 << 20;
/// Most bytes the fresh-file bandwidth loop writes, so that a fast disk does not fill up.
pub const RAW_FRESH_CAP_BYTES: u64 = 2 << 30;
/// Payload of each warm-up append: large, so that a few segments fill quickly.
pub const WARM_UP_RECORD_BYTES: usize = 1 << 20;
/// Purged segments the engine keeps for reuse (its default), which the warm-up fills.
pub const MAX_FREE_SEGMENTS: usize = 4;
/// Segments written (and purged) before measuring: enough to put three files in the free pool
/// (the checkpointer keeps it supplied after that) without spending a throttled disk's budget.
pub const WARM_UP_SEGMENTS: u64 = 3;
/// How often the checkpointer looks for a rollover to purge behind.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(10);
/// Length of each slice of appends, and of raw operations, in a paired (1-appender) case: short
/// next to the seconds over which a throttled disk changes speed, long next to one operation.
pub const PAIR_SLICE: Duration = Duration::from_millis(25);

/// Record sizes the target figures need: 100 B (latency, scaling) and 64 KiB (bandwidth).
pub const SMALL_RECORD_BYTES: usize = 100;
/// The record size of the bandwidth target.
pub const LARGE_RECORD_BYTES: usize = 64 << 10;
/// The appender count of the scaling target.
pub const MANY_APPENDERS: usize = 64;

/// One run's plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// `"full"` or `"quick"`.
    pub name: &'static str,
    /// Duration of each raw-limit loop.
    #[serde(serialize_with = "secs")]
    pub raw_duration: Duration,
    /// Duration of each measured logship case.
    #[serde(serialize_with = "secs")]
    pub case_duration: Duration,
    /// Unmeasured run of a case's own workload after the segment warm-up.
    #[serde(serialize_with = "secs")]
    pub case_warm_up: Duration,
    /// The cases: (payload bytes, appender threads), in run order.
    pub cases: Vec<(usize, usize)>,
}

impl Plan {
    /// Every record size against 1, 4, 16 and 64 appenders, for 3 s each.
    pub fn full() -> Plan {
        let mut cases = Vec::new();
        for size in [SMALL_RECORD_BYTES, 4 << 10, LARGE_RECORD_BYTES] {
            for appenders in [1, 4, 16, MANY_APPENDERS] {
                cases.push((size, appenders));
            }
        }
        Plan {
            name: "full",
            raw_duration: Duration::from_secs(3),
            case_duration: Duration::from_secs(3),
            case_warm_up: Duration::from_millis(500),
            cases,
        }
    }

    /// The cases the three targets need, plus a few, for 1 s each.
    pub fn quick() -> Plan {
        Plan {
            name: "quick",
            raw_duration: Duration::from_secs(1),
            case_duration: Duration::from_secs(1),
            case_warm_up: Duration::from_millis(200),
            cases: vec![
                (SMALL_RECORD_BYTES, 1),
                (SMALL_RECORD_BYTES, 16),
                (SMALL_RECORD_BYTES, MANY_APPENDERS),
                (4 << 10, 1),
                (4 << 10, MANY_APPENDERS),
                (LARGE_RECORD_BYTES, 1),
                (LARGE_RECORD_BYTES, 16),
                (LARGE_RECORD_BYTES, MANY_APPENDERS),
            ],
        }
    }
}

/// Serializes a duration as fractional seconds.
pub fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
