//! The deterministic simulator: several replicas on one thread, in virtual time, every choice
//! drawn from one seed, so that a failing run replays exactly from its seed.
//!
//! - [`model_log`]: each replica's log, in memory, in the engine's record encoding, with a
//!   disk's faults (lost and torn unsynced writes, failing syncs, silent corruption).
//! - [`net`]: the network between the replicas: TCP connections as ordered byte streams with
//!   delays, resets, half-open connections and partitions, and opt-in faults that break the
//!   stream on purpose (duplication, reordering, loss) for runs that only check safety.
//! - [`spec`]: what a cluster is (drawn from a seed, or built by a test); [`schedule`]: the
//!   faults and client appends of a random run.
//! - [`cluster`]: the cluster and its event loop, with a scripted API for scenario tests;
//!   `exec` carries out the replicas' actions with the node's semantics; [`node`] and
//!   [`disk`] are a node's state and its disk in time; [`clients`] the appends and their ends.
//! - [`invariants`]: the properties checked, one per file; `checks` decides when;
//!   [`history`] keeps what they judge by; [`trace`] the events, hashed and the last kept.
//! - [`runner`]: random runs of one seed, their failures' replay commands, and shrinking.
//!
//! Nothing here touches the operating system: no sockets, files, clocks or threads. Time is a
//! `Duration` since the simulation started, and randomness comes from [`crate::vocab::Rng`].

mod checks;
pub mod clients;
pub mod cluster;
pub mod disk;
mod exec;
pub mod history;
pub mod invariants;
pub mod model_log;
pub mod net;
pub mod node;
pub mod runner;
pub mod schedule;
pub mod spec;
pub mod trace;

pub use self::clients::{ClientOutcome, ClientRef};
pub use self::cluster::Cluster;
pub use self::invariants::Violation;
pub use self::model_log::ModelLog;
pub use self::net::{CloseReason, HostileFaults, Net, NetConfig, NetEvent};
pub use self::runner::{replay_command, run_seed, shrink, Failure, RunOptions, RunReport};
pub use self::schedule::{FaultClass, FaultSet, Op, Schedule};
pub use self::spec::{ClusterSpec, FollowerSpec, PRIMARY};
