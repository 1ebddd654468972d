//! The schedule of a random run: client appends and faults at times drawn from the seed.
//!
//! The schedule is drawn whole before the run, each operation's parameters included, and the
//! same seed always draws the same list. Shrinking relies on two properties: the first `n`
//! operations of a seed do not depend on how many follow (so `--steps n` keeps a prefix), and
//! disabling a fault class removes its operations without changing any other (so
//! `--no-crash` keeps the rest of the run as it was, up to what the removed faults changed).

use std::fmt;
use std::time::Duration;

use crate::protocol::DurabilityLevel;
use crate::vocab::Rng;

use super::spec::{sub_seed, ClusterSpec, Stream, PRIMARY};

/// Operations in a run's schedule, by default.
pub const DEFAULT_STEPS: usize = 200;
/// The mean time between two scheduled operations.
const MEAN_GAP: Duration = Duration::from_millis(40);

/// A kind of fault, which a run can leave out (`--no-<name>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultClass {
    /// Followers' crashes (and their restarts).
    Crash,
    /// The primary's crashes (and its restarts).
    PrimaryCrash,
    /// A torn last write at a crash (without it, crashes lose unsynced writes whole).
    Torn,
    /// Clean stops and restarts.
    CleanRestart,
    /// Partitions, one-way and both ways, and their heals.
    Partition,
    /// Connection resets, half-open connections included.
    Reset,
    /// Delay spikes on the network.
    Spike,
    /// A failing fdatasync (the node fail-stops and is restarted).
    Eio,
    /// A slow disk.
    SlowDisk,
    /// A node's clock jumping forward.
    Clock,
    /// A node paused (SIGSTOP) and resumed (failover clusters).
    Pause,
    /// A disk whose fdatasync stalls for seconds (failover clusters).
    Stall,
    /// A planned switchover to a follower (failover clusters).
    Promote,
}

impl FaultClass {
    /// Every class.
    pub const ALL: [FaultClass; 13] = [
        FaultClass::Crash,
        FaultClass::PrimaryCrash,
        FaultClass::Torn,
        FaultClass::CleanRestart,
        FaultClass::Partition,
        FaultClass::Reset,
        FaultClass::Spike,
        FaultClass::Eio,
        FaultClass::SlowDisk,
        FaultClass::Clock,
        FaultClass::Pause,
        FaultClass::Stall,
        FaultClass::Promote,
    ];

    /// The name in `--no-<name>`.
    pub fn name(self) -> &'static str {
        match self {
            FaultClass::Crash => "crash",
            FaultClass::PrimaryCrash => "primary-crash",
            FaultClass::Torn => "torn",
            FaultClass::CleanRestart => "clean-restart",
            FaultClass::Partition => "partition",
            FaultClass::Reset => "reset",
            FaultClass::Spike => "spike",
            FaultClass::Eio => "eio",
            FaultClass::SlowDisk => "slow-disk",
            FaultClass::Clock => "clock",
            FaultClass::Pause => "pause",
            FaultClass::Stall => "stall",
            FaultClass::Promote => "promote",
        }
    }

    /// The class called `name`.
    pub fn from_name(name: &str) -> Option<FaultClass> {
        FaultClass::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// A set of fault classes (a bit per class).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FaultSet(u16);

impl FaultSet {
    /// Whether `class` is in the set.
    pub fn contains(self, class: FaultClass) -> bool {
        self.0 & (1 << class as u16) != 0
    }

    /// The set with `class` added.
    pub fn with(self, class: FaultClass) -> FaultSet {
        FaultSet(self.0 | (1 << class as u16))
    }

    /// The classes in the set, in [`FaultClass::ALL`] order.
    pub fn classes(self) -> Vec<FaultClass> {
        FaultClass::ALL
            .into_iter()
            .filter(|c| self.contains(*c))
            .collect()
    }
}

/// One scheduled operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `count` client appends at `level`, at once.
    Append {
        /// Their level.
        level: DurabilityLevel,
        /// How many.
        count: u8,
    },
    /// A node crashes, and restarts after `down_for`.
    Crash {
        /// The node.
        node: usize,
        /// Whether its last write is torn.
        torn: bool,
        /// How long it stays down.
        down_for: Duration,
    },
    /// A node stops cleanly, and restarts after `down_for`.
    CleanRestart {
        /// The node.
        node: usize,
        /// How long it stays down.
        down_for: Duration,
    },
    /// `a` → `b` blocked (and `b` → `a` unless `one_way`).
    Partition {
        /// One side.
        a: usize,
        /// The other side.
        b: usize,
        /// Only `a` → `b`.
        one_way: bool,
    },
    /// Every partition heals.
    HealAll,
    /// Every connection of `node` resets (half-open: one end only).
    ResetConnections {
        /// The node.
        node: usize,
        /// Whether the resets are half-open.
        half_open: bool,
    },
    /// The node's next fdatasync fails.
    FailNextSync {
        /// The node.
        node: usize,
    },
    /// The node's disk is slow for a while.
    SlowDisk {
        /// The node.
        node: usize,
        /// For how long.
        lasting: Duration,
    },
    /// The node's clock jumps forward (a paused process).
    ClockJump {
        /// The node.
        node: usize,
        /// By how much.
        by: Duration,
    },
    /// The node stops running for a while (SIGSTOP), then goes on where it was (SIGCONT):
    /// what reaches it meanwhile waits, and its clock jumps.
    Pause {
        /// The node (with failover, node 0 is whoever is primary then).
        node: usize,
        /// For how long.
        lasting: Duration,
    },
    /// The node's fdatasyncs do not complete for a while.
    StallDisk {
        /// The node.
        node: usize,
        /// For how long.
        lasting: Duration,
    },
    /// The primary hands over to `node` (planned switchover).
    Promote {
        /// The target.
        node: usize,
    },
}

impl Op {
    /// The fault class the operation belongs to (client appends belong to none).
    pub fn class(&self) -> Option<FaultClass> {
        match self {
            Op::Append { .. } => None,
            Op::Crash { node: PRIMARY, .. } => Some(FaultClass::PrimaryCrash),
            Op::Crash { .. } => Some(FaultClass::Crash),
            Op::CleanRestart { .. } => Some(FaultClass::CleanRestart),
            Op::Partition { .. } | Op::HealAll => Some(FaultClass::Partition),
            Op::ResetConnections { .. } => Some(FaultClass::Reset),
            Op::FailNextSync { .. } => Some(FaultClass::Eio),
            Op::SlowDisk { .. } => Some(FaultClass::SlowDisk),
            Op::ClockJump { .. } => Some(FaultClass::Clock),
            Op::Pause { .. } => Some(FaultClass::Pause),
            Op::StallDisk { .. } => Some(FaultClass::Stall),
            Op::Promote { .. } => Some(FaultClass::Promote),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Append { level, count } => write!(f, "append x{count} at {level:?}"),
            Op::Crash {
                node,
                torn,
                down_for,
            } => write!(f, "crash n{node} torn={torn} down for {down_for:?}"),
            Op::CleanRestart { node, down_for } => {
                write!(f, "clean stop n{node} for {down_for:?}")
            }
            Op::Partition { a, b, one_way } => {
                let arrow = if *one_way { "->" } else { "<->" };
                write!(f, "partition n{a} {arrow} n{b}")
            }
            Op::HealAll => write!(f, "heal all"),
            Op::ResetConnections { node, half_open } => {
                write!(f, "reset connections of n{node} half_open={half_open}")
            }
            Op::FailNextSync { node } => write!(f, "fail next fdatasync of n{node}"),
            Op::SlowDisk { node, lasting } => write!(f, "slow disk on n{node} for {lasting:?}"),
            Op::ClockJump { node, by } => write!(f, "clock of n{node} jumps {by:?}"),
            Op::Pause { node, lasting } => write!(f, "pause n{node} for {lasting:?}"),
            Op::StallDisk { node, lasting } => {
                write!(f, "stall the disk of n{node} for {lasting:?}")
            }
            Op::Promote { node } => write!(f, "promote n{node}"),
        }
    }
}

/// A run's schedule: operations at increasing times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// `(when, what)`, in time order.
    pub ops: Vec<(Duration, Op)>,
}

impl Schedule {
    /// The first `steps` operations drawn for `spec`'s seed, without those of the `disabled`
    /// classes (a torn crash loses its tear when `Torn` is disabled).
    pub fn generate(spec: &ClusterSpec, steps: usize, disabled: FaultSet) -> Schedule {
        let mut rng = Rng::new(sub_seed(spec.seed, Stream::Schedule, 0));
        let mut at = Duration::ZERO;
        let mut ops = Vec::with_capacity(steps);
        for _ in 0..steps {
            let gap = rng.below(2 * MEAN_GAP.as_micros() as u64);
            at += Duration::from_micros(gap);
            let op = draw(&mut rng, spec.nodes(), spec.failover);
            let kept = match op.class() {
                Some(c) => !disabled.contains(c),
                None => true,
            };
            if kept {
                ops.push((at, without_tear(op, disabled)));
            }
        }
        Schedule { ops }
    }

    /// When the last operation happens.
    pub fn end(&self) -> Duration {
        self.ops.last().map_or(Duration::ZERO, |(t, _)| *t)
    }
}

fn without_tear(op: Op, disabled: FaultSet) -> Op {
    match op {
        Op::Crash { node, down_for, .. } if disabled.contains(FaultClass::Torn) => Op::Crash {
            node,
            torn: false,
            down_for,
        },
        op => op,
    }
}

fn millis(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo + rng.below(hi - lo + 1))
}

/// One operation; every parameter is drawn whatever the kind, so that the stream stays aligned.
/// Failover clusters turn part of the clock jumps into pauses, disk stalls and switchovers.
fn draw(rng: &mut Rng, nodes: usize, failover: bool) -> Op {
    let kind = rng.below(100);
    let node = rng.below(nodes as u64) as usize;
    let other = (node + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
    let flag = rng.below(2) == 0;
    let span = millis(rng, 50, 2_500);
    let level = match rng.below(4) {
        0 => DurabilityLevel::Local,
        1 => DurabilityLevel::RemoteWrite,
        2 => DurabilityLevel::RemoteDurable,
        _ => DurabilityLevel::RemoteApplied,
    };
    let count = 1 + rng.below(4) as u8;
    match kind {
        0..=59 => Op::Append { level, count },
        60..=65 => Op::Crash {
            node: if rng.below(4) == 0 { PRIMARY } else { node },
            torn: flag,
            down_for: span,
        },
        66..=67 => Op::CleanRestart {
            node,
            down_for: span / 4,
        },
        68..=75 => Op::Partition {
            a: node,
            b: other,
            one_way: flag,
        },
        76..=79 => Op::HealAll,
        80..=84 => Op::ResetConnections {
            node,
            half_open: flag,
        },
        85..=88 => Op::FailNextSync { node },
        89..=93 => Op::SlowDisk {
            node,
            lasting: span,
        },
        96..=97 if failover => Op::Pause {
            node: if flag { PRIMARY } else { node },
            lasting: span,
        },
        98 if failover => Op::StallDisk {
            node,
            lasting: span * 2,
        },
        99 if failover => Op::Promote { node },
        _ => Op::ClockJump { node, by: span / 2 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_schedule_is_a_prefix_and_disabling_a_class_keeps_the_rest() {
        let spec = ClusterSpec::from_seed(42);
        let long = Schedule::generate(&spec, 200, FaultSet::default());
        let short = Schedule::generate(&spec, 50, FaultSet::default());
        assert_eq!(short.ops[..], long.ops[..short.ops.len()]);
        let no_crash = Schedule::generate(&spec, 200, FaultSet::default().with(FaultClass::Crash));
        let expected: Vec<_> = (long.ops.iter())
            .filter(|(_, op)| op.class() != Some(FaultClass::Crash))
            .copied()
            .collect();
        assert_eq!(no_crash.ops, expected);
    }

    #[test]
    fn every_class_has_a_name_that_parses_back() {
        for c in FaultClass::ALL {
            assert_eq!(FaultClass::from_name(c.name()), Some(c));
        }
    }
}
