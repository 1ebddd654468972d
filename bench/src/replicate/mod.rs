//! `logship-bench replicate`: commit latency and throughput of replicated appends, and catch-up
//! bandwidth, each next to the raw limit it is bounded by, measured in the same run.
//!
//! - [`plan`]: what runs and for how long; the topologies.
//! - [`rtt`]: the loopback TCP round-trip limit (the fdatasync and bandwidth limits are the
//!   append benchmark's, in `crate::raw`).
//! - [`cluster`]: an in-process cluster of `Node`s on 127.0.0.1 in one scratch directory.
//! - [`clients`]: the appenders (one thread, or N threads, or N tokio tasks).
//! - [`net`]: the network clients (one thread and one client-port connection each).
//! - [`check`]: every commit checked against the nodes' durable watermarks.
//! - [`probe`]: the disk's fdatasync latency in the same moments as each case; [`ideal`]: the
//!   same commit by plain blocking threads, in the same moments as each 1-client case.
//! - [`commit`]: one topology's cases; [`catch_up`]: the catch-up measurement; [`steered`]:
//!   commits while an empty follower catches up, unthrottled and steered by a latency target.
//! - [`run()`]: the order of a run; [`report`]: ratios, targets, the table and the JSON;
//!   [`net_report`]: the network cases' part of it, beside the peer.
//! - [`peer`]: `--peer postgres`, the PostgreSQL peer script run after the logship cases.
//! - [`watchdog`]: a bound on every stage, so that a stuck cluster ends the run with a message
//!   instead of hanging it.

pub mod catch_up;
pub mod check;
pub mod clients;
pub mod cluster;
pub mod commit;
pub mod ideal;
pub mod net;
pub mod net_report;
pub mod new_file;
pub mod null_port;
pub mod peer;
pub mod plan;
pub mod probe;
pub mod report;
pub mod rtt;
pub mod run;
pub mod steered;
pub mod watchdog;

pub use self::plan::{ClientMode, ReplicatePlan};
pub use self::report::Report;
pub use self::run::{run, RunOptions};
