//! logship: a write-ahead-log replication engine that databases embed.
//!
//! This crate is the facade: it re-exports the public API of [`logship_engine`] (the durable
//! segment log) and, under [`replication`], of `logship_replicator` (the replicated node:
//! [`Node`], its [`NodeConfig`], the network [`Client`], [`DurabilityLevel`]), so that an
//! embedding database depends on one crate. It also builds the `logship` command-line tool
//! (`src/main.rs`, `src/cli/`): `append`, `dump`, `verify` on log directories, and `node`,
//! `status`, `load`, `demo`, `keygen` for replicated clusters.
//!
//! Everything here is a re-export; the engine's own documentation describes the log (open,
//! append with group commit, read, truncate, purge, recovery) and its on-disk format.
//!
//! ```no_run
//! use logship::{Bytes, Log, Options};
//!
//! # fn main() -> logship::Result<()> {
//! let log = Log::open("/var/lib/mydb/wal", Options { create_if_missing: true, ..Options::default() })?;
//! let lsn = log.append(Bytes::from_static(b"hello"))?.wait()?;
//! for record in log.read_from(lsn)? {
//!     println!("{}: {:?}", record?.lsn, lsn);
//! }
//! log.close()
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use logship_engine::*;

/// Replication: the node that embeds a replicated log, its configuration, the client of its
/// network API, and the protocol. The embedding API ([`Node::append`]) and the network API
/// ([`Client::append`]) take the same [`DurabilityLevel`] and return the same LSNs.
pub mod replication {
    pub use logship_replicator::*;
}

pub use logship_replicator::{Client, Commit, DurabilityLevel, Node, NodeConfig, NodeStatus};

/// The engine crate itself, for paths such as `logship::engine::io::FaultyVfs`.
pub mod engine {
    pub use logship_engine::*;
}
