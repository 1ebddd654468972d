//! The simulated network's behaviour: latency, spikes, stalls, resets, and the hostile faults
//! that break the TCP model. Plain data; [`super::Net`] draws the faults.

use std::time::Duration;

/// Default lower bound of a chunk's one-way delay.
pub const DEFAULT_LATENCY_MIN: Duration = Duration::from_micros(50);
/// Default upper bound of a chunk's one-way delay, spikes aside.
pub const DEFAULT_LATENCY_MAX: Duration = Duration::from_millis(2);
/// Default upper bound of the extra delay of a spike.
pub const DEFAULT_SPIKE_MAX: Duration = Duration::from_millis(300);
/// Default time a connection holds items across a partition before it is reset: longer than
/// the replicas' peer timeout, so that they usually notice first, as they must with real TCP.
pub const DEFAULT_STALL_RESET_AFTER: Duration = Duration::from_secs(5);

/// Faults that break the TCP model; all off by default. With any of them on, a receiver's
/// frame decoder sees garbage, so only safety can be checked, not progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostileFaults {
    /// Chance, per million chunks sent, that the chunk arrives twice.
    pub duplicate_per_million: u32,
    /// Chance, per million chunks sent, that it overtakes the chunk before it (if that one
    /// is still in flight).
    pub reorder_per_million: u32,
    /// Chance, per million chunks sent, that it is lost.
    pub drop_per_million: u32,
}

impl HostileFaults {
    /// Whether every hostile fault is off.
    pub fn is_none(&self) -> bool {
        *self == HostileFaults::default()
    }
}

/// The network's behaviour. Defaults: a healthy LAN (no faults), with the latency constants
/// above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Lower bound of a chunk's one-way delay. Default [`DEFAULT_LATENCY_MIN`].
    pub latency_min: Duration,
    /// Upper bound of a chunk's one-way delay, spikes aside; at least `latency_min`. Default
    /// [`DEFAULT_LATENCY_MAX`].
    pub latency_max: Duration,
    /// Chance, per million items, of a spike: up to `spike_max` more delay. Default 0.
    pub spike_per_million: u32,
    /// Upper bound of a spike's extra delay. Default [`DEFAULT_SPIKE_MAX`].
    pub spike_max: Duration,
    /// How long a connection may hold items across a partition before it is reset. Default
    /// [`DEFAULT_STALL_RESET_AFTER`].
    pub stall_reset_after: Duration,
    /// Chance, per million chunks sent, that the connection resets instead. Default 0.
    pub reset_per_million: u32,
    /// Chance, per million resets, that a reset is half-open (one end never hears). Default 0.
    pub half_open_per_million: u32,
    /// Faults outside the TCP model. Default: none.
    pub hostile: HostileFaults,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            latency_min: DEFAULT_LATENCY_MIN,
            latency_max: DEFAULT_LATENCY_MAX,
            spike_per_million: 0,
            spike_max: DEFAULT_SPIKE_MAX,
            stall_reset_after: DEFAULT_STALL_RESET_AFTER,
            reset_per_million: 0,
            half_open_per_million: 0,
            hostile: HostileFaults::default(),
        }
    }
}

pub(super) fn check_config(config: &NetConfig) {
    assert!(
        config.latency_min <= config.latency_max,
        "latency_min {:?} exceeds latency_max {:?}",
        config.latency_min,
        config.latency_max
    );
}
