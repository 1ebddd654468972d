//! logship: a write-ahead-log engine that databases embed.
//!
//! This crate is the facade: it re-exports the public API of [`logship_engine`] so that an
//! embedding database depends on one crate, and it builds the `logship` command-line tool
//! (`src/main.rs`, `src/cli/`), which appends, dumps and verifies log directories.
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

/// The engine crate itself, for paths such as `logship::engine::io::FaultyVfs`.
pub mod engine {
    pub use logship_engine::*;
}
