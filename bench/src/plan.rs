//! What a run measures and for how long: the full plan (the figures in `docs/benchmarks.md`) and
//! the quick plan (a smoke run that finishes in under a minute).

use std::time::Duration;

use serde::Serialize;

/// Segment size of every log the benchmark opens: the engine's default.
pub const SEGMENT_SIZE_BYTES: u64 = 64 << 20;
/// Size of each prewritten raw-limit file: one segment, as the log overwrites segment by segment.
pub const RAW_FILE_BYTES: u64 = SEGMENT_SIZE_BYTES;
/// Size of the hand-off ceiling's prewritten scratch file (its flushes overwrite it in turn):
/// small, so that prewriting it costs a quick run little.
pub const CEILING_FILE_BYTES: u64 = 8 << 20;
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

/// How a case drives its appenders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One OS thread per appender, looping on `append` + `wait` (blocking).
    Threads,
    /// One tokio task per appender on a multi-thread runtime with one worker per CPU, looping on
    /// `append_async().await` + `.await` (durable).
    Tasks,
}

impl Mode {
    /// `threads` or `tasks`, as in `--cases` and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Threads => "threads",
            Mode::Tasks => "tasks",
        }
    }
}

/// One logship case: record size, appender count and mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Case {
    /// Payload bytes per record.
    pub record_bytes: usize,
    /// Appenders (threads or tasks).
    pub appenders: usize,
    /// How the appenders run.
    pub mode: Mode,
}

impl Case {
    /// A threads-mode case.
    pub const fn threads(record_bytes: usize, appenders: usize) -> Case {
        Case {
            record_bytes,
            appenders,
            mode: Mode::Threads,
        }
    }

    /// A tasks-mode case.
    pub const fn tasks(record_bytes: usize, appenders: usize) -> Case {
        Case {
            record_bytes,
            appenders,
            mode: Mode::Tasks,
        }
    }

    /// `logship::append/size=S,appenders=N` for threads (the names of earlier reports, kept so
    /// that old JSON stays comparable), `...,mode=tasks` for tasks.
    pub fn name(&self) -> String {
        let base = format!(
            "logship::append/size={},appenders={}",
            self.record_bytes, self.appenders
        );
        match self.mode {
            Mode::Threads => base,
            Mode::Tasks => base + ",mode=tasks",
        }
    }
}

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
    /// The cases, in run order (the raw bandwidth limit runs before the first 64 KiB case).
    pub cases: Vec<Case>,
}

impl Plan {
    /// Every record size against 1, 4, 16 and 64 appender threads, and 100 B and 4 KiB records
    /// against 16 and 64 appender tasks (right after the threads cases of the same size), for
    /// 3 s each.
    pub fn full() -> Plan {
        let mut cases = Vec::new();
        for size in [SMALL_RECORD_BYTES, 4 << 10, LARGE_RECORD_BYTES] {
            for appenders in [1, 4, 16, MANY_APPENDERS] {
                cases.push(Case::threads(size, appenders));
            }
            if size < LARGE_RECORD_BYTES {
                for appenders in [16, MANY_APPENDERS] {
                    cases.push(Case::tasks(size, appenders));
                }
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

    /// The cases the targets need (both modes of the scaling target), plus a few, for 1 s each.
    pub fn quick() -> Plan {
        Plan {
            name: "quick",
            raw_duration: Duration::from_secs(1),
            case_duration: Duration::from_secs(1),
            case_warm_up: Duration::from_millis(200),
            cases: vec![
                Case::threads(SMALL_RECORD_BYTES, 1),
                Case::threads(SMALL_RECORD_BYTES, 16),
                Case::threads(SMALL_RECORD_BYTES, MANY_APPENDERS),
                Case::tasks(SMALL_RECORD_BYTES, MANY_APPENDERS),
                Case::threads(4 << 10, 1),
                Case::threads(4 << 10, MANY_APPENDERS),
                Case::threads(LARGE_RECORD_BYTES, 1),
                Case::threads(LARGE_RECORD_BYTES, 16),
                Case::threads(LARGE_RECORD_BYTES, MANY_APPENDERS),
            ],
        }
    }
}

/// Serializes a duration as fractional seconds.
pub fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_the_threads_form_and_mark_tasks() {
        assert_eq!(
            Case::threads(100, 64).name(),
            "logship::append/size=100,appenders=64"
        );
        assert_eq!(
            Case::tasks(100, 64).name(),
            "logship::append/size=100,appenders=64,mode=tasks"
        );
    }

    #[test]
    fn both_plans_hold_the_scaling_cases_of_both_modes() {
        for plan in [Plan::full(), Plan::quick()] {
            for case in [
                Case::threads(SMALL_RECORD_BYTES, 1),
                Case::threads(SMALL_RECORD_BYTES, MANY_APPENDERS),
                Case::tasks(SMALL_RECORD_BYTES, MANY_APPENDERS),
            ] {
                assert!(plan.cases.contains(&case), "{} lacks {case:?}", plan.name);
            }
        }
    }
}
