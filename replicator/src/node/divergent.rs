//! The divergent suffix of a log: records a node holds after the last LSN it shares with its
//! primary (it was a primary whose last writes never reached a quorum, or it followed one).
//! Before the log is cut, they are copied to a side file next to the log's segments, for
//! forensics: never silently discarded. Each file holds the records as the log held them (the
//! engine's encoding, write markers included), named by their LSNs.

use std::io::Write;
use std::path::{Path, PathBuf};

use logship_engine::{Log, Lsn};

/// The side files' name prefix (the engine leaves `logship.node-` files alone).
pub const DIVERGENT_PREFIX: &str = "logship.node-divergent-";
/// Bytes read per chunk while copying.
const CHUNK_BYTES: usize = 4 << 20;

/// Copies the records after `after` to a new side file in `dir`, durably (temporary file,
/// fdatasync, rename, directory fsync). Returns the file and how many records it holds;
/// `None` when there is nothing after `after`.
///
/// # Errors
/// A sentence: reading the records or writing the file failed (the log must not be cut then).
pub fn save(log: &Log, dir: &Path, after: Lsn) -> Result<Option<(PathBuf, u64)>, String> {
    let last = log.last_lsn();
    if last <= after {
        return Ok(None);
    }
    let name = format!("{DIVERGENT_PREFIX}{}-{}.records", after.next(), last);
    let (tmp, path) = (dir.join(format!("{name}.tmp")), dir.join(&name));
    let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
    let mut reader = log
        .read_from_unsynced(after.next())
        .map_err(|e| format!("reading the records after {after}: {e}"))?;
    let mut copied = Lsn::ZERO;
    while let Some(chunk) = reader.next_chunk(CHUNK_BYTES) {
        let chunk = chunk.map_err(|e| format!("reading the records after {after}: {e}"))?;
        f.write_all(&chunk.bytes).map_err(|e| io("writing", e))?;
        copied = chunk.last;
    }
    f.sync_data().map_err(|e| io("syncing", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io("renaming", e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing {}: {e}", dir.display()))?;
    Ok(Some((path, copied.0.saturating_sub(after.0))))
}

/// The side files in `dir`, by name.
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(DIVERGENT_PREFIX) && n.ends_with(".records"))
        .collect();
    names.sort();
    names
}
