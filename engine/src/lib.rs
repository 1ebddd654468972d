//! logship-engine: a durable segment log with group commit, for databases to embed as their
//! write-ahead log.
//!
//! [`Log::open`] recovers a log directory (cutting a torn tail, refusing corruption), then
//! [`Log::append`] assigns dense LSNs at once and returns a [`Completion`] that resolves when the
//! record is fdatasync'ed. One writer thread drains every queued append into one write and one
//! fdatasync (group commit), pipelining the next write behind the previous flush. Completions can
//! be awaited from any async runtime or waited on synchronously. Readers iterate from any LSN.
//!
//! The engine has no async runtime of its own and spawns three threads per log: the writer, the
//! segment preallocator and the completion notifier.
#![deny(missing_docs)]

mod completion;
mod corruption;
mod crc_shift;
pub mod error;
mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
mod log;
#[cfg(test)]
mod log_epoch_tests;
pub mod options;
mod pool;
mod reader;
pub mod record;
mod recovery;
mod repair;
mod retention;
mod scan;
mod scrub;
pub mod segment;
mod segment_file;
mod segment_scan;
mod segment_set;
mod state;
pub mod types;
mod verify;
mod writer;

pub use crate::completion::{Append, AppendBatch, Completion};
pub use crate::corruption::Corruption;
pub use crate::error::{Error, Result};
pub use crate::files::repair_meta;
pub use crate::log::{AppendFuture, Log, LogStats};
pub use crate::options::{Durability, LogObserver, Options, RecoveryMode};
pub use crate::reader::{Chunk, LogReader};
pub use crate::record::Record;
pub use crate::recovery::{RecoveryReport, SalvageAction, Salvaged, TornTail};
pub use crate::repair::{DamagedSegment, RepairReport};
pub use crate::retention::PurgeReport;
pub use crate::scan::{scan, scan_with, Scanner};
pub use crate::scrub::{
    DigestBuilder, RangeDigest, ScrubOptions, ScrubStep, Scrubber, DEFAULT_DIGEST_RANGE_RECORDS,
};
pub use crate::types::{Epoch, Lsn};
pub use crate::verify::{verify, verify_with, VerifyReport};
pub use bytes::Bytes;
