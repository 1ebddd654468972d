//! The deterministic simulator: several replicas on one thread, in virtual time, every choice
//! drawn from one seed, so that a failing run replays exactly from its seed.
//!
//! - [`model_log`]: each replica's log, in memory, in the engine's record encoding, with a
//!   disk's faults (lost and torn unsynced writes, failing syncs, silent corruption).
//! - [`net`]: the network between the replicas: TCP connections as ordered byte streams with
//!   delays, resets, half-open connections and partitions, and opt-in faults that break the
//!   stream on purpose (duplication, reordering, loss) for runs that only check safety.
//!
//! Nothing here touches the operating system: no sockets, files, clocks or threads. Time is a
//! `Duration` since the simulation started, and randomness comes from [`crate::vocab::Rng`].

pub mod model_log;
pub mod net;

pub use self::model_log::ModelLog;
pub use self::net::{CloseReason, HostileFaults, Net, NetConfig, NetEvent};
