//! logship's replication layer.
//!
//! - [`protocol`]: the wire protocol (frames, messages, the authenticated handshake);
//!   docs/protocol.md draws every byte.
//! - [`quorum`], [`commit`]: `FIRST k (...)` / `ANY k (...)` and the LSN each durability level
//!   has reached.
//! - [`primary`], [`follower`]: the sans-I/O state machines. They take events (frames, timer
//!   ticks, durability completions, connection changes) and return actions; no sockets, clocks
//!   or threads inside, so the simulator can drive them deterministically.
//! - [`backoff`], [`breaker`], [`lag`]: the pieces of fault handling those machines use.
//! - [`fetch`], [`digests`]: integrity: fetching a range from a peer (repair, take-back) and
//!   comparing replicas' digests.
//! - [`transport`]: the TCP transports (portable sockets, io_uring) behind one seam.
//! - [`node`], [`client`], [`config`], [`http`]: the running node, its client protocol, its
//!   configuration file, and its metrics and health endpoints.

#![deny(missing_docs)]

pub mod backoff;
pub mod breaker;
pub mod client;
pub mod commit;
pub mod config;
pub mod digests;
pub mod error;
pub mod fetch;
pub mod follower;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod lag;
pub mod link;
pub mod node;
pub mod primary;
pub mod protocol;
pub mod quorum;
pub mod status;
pub mod transport;

pub use crate::client::Client;
pub use crate::config::NodeConfig;
pub use crate::error::{Error, Result};
pub use crate::node::{ApplyStream, Commit, Node, NodeStatus};
pub use crate::protocol::DurabilityLevel;
