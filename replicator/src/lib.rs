//! logship's replication layer.
//!
//! - [`protocol`]: the wire protocol (frames, messages, the authenticated handshake);
//!   docs/protocol.md draws every byte.
//! - [`quorum`], [`commit`]: `FIRST k (...)` / `ANY k (...)` and the LSN each durability level
//!   has reached.
//! - [`vocab`]: the shared vocabulary (node and connection ids, timeouts, configurations, the
//!   inputs a replica takes and the actions it returns, its view of storage, its randomness).
//! - [`replica`]: one sans-I/O replica, whose role is a value: `step(now, input) -> actions`.
//!   No sockets, clocks, threads, files or OS randomness inside, so the node and the simulator
//!   drive it the same way. [`primary`] and [`follower`] are its two roles' machines.
//! - [`backoff`], [`breaker`], [`lag`]: the pieces of fault handling those machines use;
//!   [`pacing`]: catch-up steered by a latency target for foreground commits.
//! - [`fetch`], [`digests`]: integrity: fetching a range from a peer (repair, take-back) and
//!   comparing replicas' digests.
//! - [`transport`]: the TCP transports (portable sockets, io_uring) behind one seam, and a TLS
//!   layer over either; [`tls`]: certificates, keys and their reload.
//! - [`node`], [`client`], [`config`], [`http`]: the running node (the executor that feeds the
//!   replica), its client protocol, its configuration file, and its metrics and health
//!   endpoints.
//!
//! Modules read top-down: `vocab` and the pieces below it import nothing above them.

#![deny(missing_docs)]

pub mod backoff;
pub mod breaker;
pub mod client;
pub mod commit;
pub mod config;
pub mod digests;
pub mod election;
pub mod error;
pub mod fetch;
pub mod follower;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod integrity;
pub mod lag;
pub mod link;
pub mod log_summary;
pub mod node;
pub mod pacing;
pub mod primary;
pub mod protocol;
pub mod quorum;
pub mod replica;
pub mod sim;
pub mod slots;
pub mod status;
pub mod tls;
pub mod transport;
pub mod vocab;

pub use crate::client::Client;
pub use crate::config::NodeConfig;
pub use crate::error::{Error, Result};
pub use crate::node::{ApplyStream, Commit, Node, NodeStatus};
pub use crate::protocol::DurabilityLevel;
