//! Segment files: naming, the segment header, and the log directory's marker file.
//!
//! A log directory holds:
//! - `logship.meta`: the marker that makes a directory a logship log (written last at creation);
//! - `<base LSN, 20 digits>.seg`: segments, named by their first LSN so a listing sorts in log order;
//! - `free-<n>.seg`: purged or pre-zeroed segment files waiting to be reused;
//! - `logship.durable`: the durable floor written at a clean close (format version 2);
//! - `quarantine-<base>-<n>.seg`: a damaged segment's original bytes, kept for forensics when
//!   a node cut its log at the damage to fetch the rest from a replica;
//! - `*.tmp`: files being prepared; removed at open.
//!
//! Every other name is foreign: the engine never touches it.

mod floor;
mod header;
mod meta;
mod name;
mod small;

pub use floor::{DurableFloor, FLOOR_BYTES, FLOOR_FILE, FLOOR_MAGIC};
pub use header::{HeaderError, SegmentHeader, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC};
pub use meta::{LogMeta, META_BYTES, META_FILE, META_MAGIC};
pub use name::{classify, free_name, quarantine_name, segment_name, EntryKind};

/// The on-disk format version this build writes (and reads).
pub const FORMAT_VERSION: u32 = 2;
/// The older format version this build still reads: segments without write markers, whose torn
/// tails are told from corruption by distance (`max_unsynced_bytes`).
pub const LEGACY_FORMAT_VERSION: u32 = 1;
