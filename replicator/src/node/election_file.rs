//! The node's durable election state ([`ElectionState`]: its epoch, its vote in that epoch,
//! its log's epoch history), one small self-checking file next to the log's segments.
//!
//! The name starts with `logship.node-`, which the engine leaves alone in its directory (a
//! foreign name would be warned about at every open, and would stop a new log from being
//! created in a directory that already holds it).
//!
//! Format (version 1), integers little-endian:
//! ```text
//! offset  size  field
//!      0     8  magic      "LSHIPELE"
//!      8     4  version    u32, 1
//!     12     4  length     u32, bytes of the whole file, this header and the CRC included
//!     16     8  epoch      u64, the newest epoch the node has seen
//!     24     1  voted      u8, 1 when the node voted in that epoch, else 0
//!     25     1  id_len     u8, bytes of the voted-for node id (0 when it did not vote)
//!     26     n  voted_for  UTF-8, the node id
//!   26+n     4  entries    u32, epoch history entries
//!   30+n  16*k  history    per entry: epoch u64, first LSN u64, oldest first
//!  end-4     4  crc32      CRC-32 (IEEE) of every byte before it
//! ```
//! A file that fails any check is [`ElectionFileError::Corrupt`], naming the file and why:
//! never a panic, and never read as "no state" (which would let the node vote twice).
//!
//! [`store`] writes a temporary file, fdatasyncs it, renames it over the old one and fsyncs
//! the directory, so a crash leaves the old state or the new one. A temporary file left by a
//! crash is ignored by [`load`] and replaced by the next [`store`]. Stores are not meant to
//! run concurrently in one directory (the node persists from behind its replica's lock).

use std::io;
use std::path::{Path, PathBuf};

use logship_engine::io::{OpenMode, StdVfs, Vfs};
use logship_engine::{Epoch, Lsn};

use crate::vocab::{ElectionState, EpochHistory, NodeId};

/// The file's name inside the node's data directory (the log's directory).
pub const ELECTION_FILE: &str = "logship.node-election";
/// The temporary file [`store`] writes before renaming it to [`ELECTION_FILE`].
pub const ELECTION_TEMP_FILE: &str = "logship.node-election.tmp";
/// The largest election file read or written.
pub const MAX_ELECTION_FILE_BYTES: usize = 1 << 20;
/// The longest voted-for node id stored, in bytes.
pub const MAX_NODE_ID_BYTES: usize = 255;

const MAGIC: [u8; 8] = *b"LSHIPELE";
const VERSION: u32 = 1;
/// Bytes of a file with no vote and no history: everything but the id and the entries.
const FIXED_BYTES: usize = 8 + 4 + 4 + 8 + 1 + 1 + 4 + 4;
/// Bytes of one history entry.
const ENTRY_BYTES: usize = 16;

/// Why the election state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ElectionFileError {
    /// A file-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, for example `"open"` or `"fdatasync"`.
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file exists but is not a whole, valid election file (torn, truncated, damaged).
    #[error("election state {path} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A whole, valid file in a format version this build does not read.
    #[error(
        "election state {path}: format version {found} is not supported \
         (this build reads {supported})"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The voted-for node id is too long to store.
    #[error("node id of {len} bytes is longer than the {max} bytes an election file holds")]
    NodeIdTooLong {
        /// Its length in bytes.
        len: usize,
        /// [`MAX_NODE_ID_BYTES`].
        max: usize,
    },
    /// The state (its history, in practice) does not fit in [`MAX_ELECTION_FILE_BYTES`].
    #[error(
        "election state of {bytes} bytes ({entries} history entries) exceeds the {max}-byte limit"
    )]
    TooLarge {
        /// The encoded size.
        bytes: usize,
        /// History entries.
        entries: usize,
        /// [`MAX_ELECTION_FILE_BYTES`].
        max: usize,
    },
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ElectionFileError {
    let path = path.to_path_buf();
    move |source| ElectionFileError::Io { op, path, source }
}

/// Reads the state from `dir`; `Ok(None)` when the file does not exist (a new node, or a log
/// written before failover).
///
/// # Errors
/// [`ElectionFileError::Corrupt`] for a file that fails its checks,
/// [`ElectionFileError::UnsupportedVersion`], [`ElectionFileError::Io`].
pub fn load(dir: &Path) -> Result<Option<ElectionState>, ElectionFileError> {
    load_in(&StdVfs::default(), dir)
}

/// Replaces the state in `dir` (which must exist) durably: writes a temporary file,
/// fdatasyncs it, renames it over the old one, fsyncs the directory. On error the old state
/// is still the one [`load`] returns, unless the error came from the final directory fsync
/// (the new state may then be read, or may be lost in a crash).
///
/// # Errors
/// [`ElectionFileError::NodeIdTooLong`], [`ElectionFileError::TooLarge`] (nothing written),
/// [`ElectionFileError::Io`].
pub fn store(dir: &Path, state: &ElectionState) -> Result<(), ElectionFileError> {
    store_in(&StdVfs::default(), dir, state)
}

/// [`load`] on the file system `vfs` (the node's log file system).
///
/// # Errors
/// As [`load`].
pub fn load_in(vfs: &dyn Vfs, dir: &Path) -> Result<Option<ElectionState>, ElectionFileError> {
    let path = dir.join(ELECTION_FILE);
    let Some(bytes) = read_file(vfs, &path)? else {
        return Ok(None);
    };
    match decode(&bytes) {
        Ok(state) => Ok(Some(state)),
        Err(Damage::Corrupt(reason)) => Err(ElectionFileError::Corrupt { path, reason }),
        Err(Damage::Version(found)) => Err(ElectionFileError::UnsupportedVersion {
            path,
            found,
            supported: VERSION,
        }),
    }
}

/// [`store`] on the file system `vfs` (the node's log file system).
///
/// # Errors
/// As [`store`].
pub fn store_in(vfs: &dyn Vfs, dir: &Path, state: &ElectionState) -> Result<(), ElectionFileError> {
    let bytes = encode(state)?;
    let tmp = dir.join(ELECTION_TEMP_FILE);
    if let Err(e) = vfs.remove_file(&tmp) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(io_error("remove stale temporary file", &tmp)(e));
        }
    }
    let file = (vfs.open(&tmp, OpenMode::CreateNew)).map_err(io_error("create", &tmp))?;
    (file.write_all_at(&bytes, 0)).map_err(io_error("write", &tmp))?;
    file.sync_data().map_err(io_error("fdatasync", &tmp))?;
    drop(file);
    let path = dir.join(ELECTION_FILE);
    vfs.rename(&tmp, &path).map_err(io_error("rename", &tmp))?;
    vfs.sync_dir(dir).map_err(io_error("fsync directory", dir))
}

/// The file's bytes; `None` when it does not exist. Refuses to read more than the limit.
fn read_file(vfs: &dyn Vfs, path: &Path) -> Result<Option<Vec<u8>>, ElectionFileError> {
    let file = match vfs.open(path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open", path)(e)),
    };
    let len = file.len().map_err(io_error("stat", path))?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n <= MAX_ELECTION_FILE_BYTES)
        .ok_or_else(|| ElectionFileError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "{len} bytes, more than the {MAX_ELECTION_FILE_BYTES} an election file may hold"
            ),
        })?;
    let mut buf = vec![0u8; len];
    let n = file.read_at(&mut buf, 0).map_err(io_error("read", path))?;
    buf.truncate(n);
    Ok(Some(buf))
}

/// The file's bytes for `state`.
fn encode(state: &ElectionState) -> Result<Vec<u8>, ElectionFileError> {
    let id = state
        .voted_for
        .as_ref()
        .map_or(&[][..], |id| id.as_str().as_bytes());
    let id_len = u8::try_from(id.len()).map_err(|_| ElectionFileError::NodeIdTooLong {
        len: id.len(),
        max: MAX_NODE_ID_BYTES,
    })?;
    let entries = state.history.entries();
    let len = FIXED_BYTES + id.len() + ENTRY_BYTES * entries.len();
    // The limit fits in a u32, so both counts written below do too.
    if len > MAX_ELECTION_FILE_BYTES {
        return Err(ElectionFileError::TooLarge {
            bytes: len,
            entries: entries.len(),
            max: MAX_ELECTION_FILE_BYTES,
        });
    }
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&(len as u32).to_le_bytes());
    b.extend_from_slice(&state.epoch.get().to_le_bytes());
    b.push(u8::from(state.voted_for.is_some()));
    b.push(id_len);
    b.extend_from_slice(id);
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for &(epoch, first) in entries {
        b.extend_from_slice(&epoch.get().to_le_bytes());
        b.extend_from_slice(&first.get().to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(b.len(), len);
    Ok(b)
}

/// Why bytes are not an election state.
#[derive(Debug, PartialEq, Eq)]
enum Damage {
    Corrupt(String),
    Version(u32),
}

/// Checks the frame (size, magic, length, CRC, version), then reads the fields.
fn decode(bytes: &[u8]) -> Result<ElectionState, Damage> {
    let corrupt = |reason: String| Err(Damage::Corrupt(reason));
    if bytes.len() < FIXED_BYTES {
        let n = bytes.len();
        return corrupt(format!(
            "{n} bytes, fewer than the {FIXED_BYTES} of the smallest election file (truncated)"
        ));
    }
    let mut r = Fields { bytes, at: 0 };
    if r.take(8) != Some(&MAGIC[..]) {
        return corrupt("wrong magic: not an election file, or its start is damaged".into());
    }
    let version = r.u32().unwrap_or_default();
    let stated = r.u32().unwrap_or_default();
    if usize::try_from(stated).ok() != Some(bytes.len()) {
        let n = bytes.len();
        return corrupt(format!(
            "its header says {stated} bytes but it holds {n} (torn, truncated or damaged)"
        ));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return corrupt(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    if version != VERSION {
        return Err(Damage::Version(version));
    }
    r.bytes = body;
    decode_fields(&mut r).map_err(Damage::Corrupt)
}

/// The fields after the header of a file whose frame checked out; `r.bytes` ends before the CRC.
fn decode_fields(r: &mut Fields<'_>) -> Result<ElectionState, String> {
    let epoch = Epoch(r.u64().ok_or("it ends inside the epoch")?);
    let voted_for = decode_vote(r)?;
    let count = r.u32().ok_or("it ends inside the history's entry count")?;
    let count = usize::try_from(count).map_err(|_| "the history's entry count overflows")?;
    if r.remaining() != count.saturating_mul(ENTRY_BYTES) {
        let left = r.remaining();
        return Err(format!(
            "{count} history entries do not fill the {left} bytes left"
        ));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let (epoch, first) = (r.u64(), r.u64());
        let entry = epoch.zip(first).ok_or("it ends inside a history entry")?;
        entries.push((Epoch(entry.0), Lsn(entry.1)));
    }
    let history = EpochHistory::from_entries(entries)
        .ok_or("the epoch history does not rise strictly, or holds epoch 0 or LSN 0")?;
    Ok(ElectionState {
        epoch,
        voted_for,
        history,
    })
}

/// The vote: its flag, its length and the node id.
fn decode_vote(r: &mut Fields<'_>) -> Result<Option<NodeId>, String> {
    let voted = r.u8().ok_or("it ends inside the vote")?;
    let len = r.u8().ok_or("it ends inside the vote")?;
    let id = r
        .take(usize::from(len))
        .ok_or("it ends inside the voted-for node id")?;
    match (voted, len) {
        (0, 0) => Ok(None),
        (0, _) => Err(format!("no vote, yet a {len}-byte node id")),
        (1, _) => std::str::from_utf8(id)
            .map(|s| Some(NodeId::from(s)))
            .map_err(|e| format!("the voted-for node id is not UTF-8: {e}")),
        (flag, _) => Err(format!("vote flag {flag} is neither 0 nor 1")),
    }
}

/// A cursor over the file's bytes; every read is bounds-checked.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let mut field = [0u8; 8];
        field.copy_from_slice(self.take(8)?);
        Some(u64::from_le_bytes(field))
    }
}

#[cfg(test)]
mod tests {
    use logship_engine::io::{FaultConfig, FaultyVfs};

    use super::*;

    fn state(epoch: u64, vote: Option<&str>, history: &[(u64, u64)]) -> ElectionState {
        let entries = history.iter().map(|&(e, l)| (Epoch(e), Lsn(l))).collect();
        ElectionState {
            epoch: Epoch(epoch),
            voted_for: vote.map(NodeId::from),
            history: EpochHistory::from_entries(entries).expect("a valid history"),
        }
    }

    fn samples() -> Vec<ElectionState> {
        vec![
            ElectionState::default(),
            state(3, None, &[]),
            state(4, Some("node-b"), &[]),
            state(9, Some("n"), &[(1, 1), (4, 17), (9, 1000)]),
            state(u64::MAX, Some(&"x".repeat(MAX_NODE_ID_BYTES)), &[(2, 5)]),
        ]
    }

    fn is_corrupt(r: &Result<Option<ElectionState>, ElectionFileError>, dir: &Path) -> bool {
        let file = dir.join(ELECTION_FILE);
        matches!(r, Err(ElectionFileError::Corrupt { path, .. }) if *path == file)
    }

    #[test]
    fn states_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        for s in samples() {
            store(dir.path(), &s).expect("store");
            assert_eq!(load(dir.path()).expect("load"), Some(s));
        }
    }

    #[test]
    fn a_missing_file_is_no_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("load"), None);
    }

    #[test]
    fn every_flipped_byte_is_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(ELECTION_FILE);
        store(dir.path(), &samples()[3]).expect("store");
        let good = std::fs::read(&path).expect("read");
        for at in 0..good.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] ^= mask;
                std::fs::write(&path, &bad).expect("write");
                let r = load(dir.path());
                assert!(is_corrupt(&r, dir.path()), "byte {at} ^ {mask:#x}: {r:?}");
            }
        }
    }

    #[test]
    fn every_truncation_is_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(ELECTION_FILE);
        store(dir.path(), &samples()[3]).expect("store");
        let good = std::fs::read(&path).expect("read");
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).expect("write");
            let r = load(dir.path());
            assert!(is_corrupt(&r, dir.path()), "{len} bytes: {r:?}");
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&path, &longer).expect("write");
        assert!(is_corrupt(&load(dir.path()), dir.path()));
    }

    #[test]
    fn an_oversized_file_is_refused_unread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(ELECTION_FILE);
        std::fs::write(&path, vec![0u8; MAX_ELECTION_FILE_BYTES + 1]).expect("write");
        assert!(is_corrupt(&load(dir.path()), dir.path()));
    }

    #[test]
    fn a_valid_file_of_another_version_is_unsupported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(ELECTION_FILE);
        let mut bytes = encode(&samples()[2]).expect("encode");
        bytes[8] = 2;
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).expect("write");
        let r = load(dir.path());
        assert!(
            matches!(
                r,
                Err(ElectionFileError::UnsupportedVersion { found: 2, .. })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn checked_fields_are_refused_even_with_a_good_crc() {
        let mut bytes = encode(&samples()[2]).expect("encode");
        bytes[24] = 2;
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode(&bytes), Err(Damage::Corrupt(_))));
    }

    #[test]
    fn what_cannot_be_stored_is_refused_and_nothing_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        store(dir.path(), &samples()[2]).expect("store");
        let long = state(5, Some(&"x".repeat(MAX_NODE_ID_BYTES + 1)), &[]);
        let r = store(dir.path(), &long);
        assert!(
            matches!(r, Err(ElectionFileError::NodeIdTooLong { len: 256, .. })),
            "{r:?}"
        );
        let entries = (1..=70_000).map(|i| (i, i)).collect::<Vec<_>>();
        let r = store(dir.path(), &state(70_000, None, &entries));
        assert!(
            matches!(r, Err(ElectionFileError::TooLarge { .. })),
            "{r:?}"
        );
        assert_eq!(load(dir.path()).expect("load"), Some(samples()[2].clone()));
    }

    #[test]
    fn a_leftover_temporary_file_is_ignored_then_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tmp = dir.path().join(ELECTION_TEMP_FILE);
        std::fs::write(&tmp, b"half a file").expect("write");
        assert_eq!(load(dir.path()).expect("load"), None);
        store(dir.path(), &samples()[2]).expect("store");
        std::fs::write(&tmp, b"half a file").expect("write");
        assert_eq!(load(dir.path()).expect("load"), Some(samples()[2].clone()));
        store(dir.path(), &samples()[3]).expect("store");
        assert_eq!(load(dir.path()).expect("load"), Some(samples()[3].clone()));
        assert!(!tmp.exists(), "the temporary file was renamed into place");
    }

    /// A file system holding state `old` durably, in directory `dir`.
    fn faulty_with(old: &ElectionState) -> (FaultyVfs, PathBuf) {
        let vfs = FaultyVfs::new(7);
        let dir = PathBuf::from("/node");
        vfs.create_dir_all(&dir).expect("mkdir");
        store_in(&vfs, &dir, old).expect("store");
        (vfs, dir)
    }

    #[test]
    fn a_store_that_fails_before_the_rename_leaves_the_old_state() {
        let (old, new) = (samples()[2].clone(), samples()[3].clone());
        let faults = [
            FaultConfig {
                fail_write_after: Some(1),
                ..FaultConfig::default()
            },
            FaultConfig {
                short_write_once: true,
                ..FaultConfig::default()
            },
            FaultConfig {
                fail_sync_after: Some(1),
                ..FaultConfig::default()
            },
        ];
        for fault in faults {
            let (vfs, dir) = faulty_with(&old);
            vfs.set_faults(FaultConfig {
                torn_crash: true,
                ..fault.clone()
            });
            assert!(store_in(&vfs, &dir, &new).is_err(), "{fault:?}");
            assert_eq!(load_in(&vfs, &dir).expect("load"), Some(old.clone()));
            vfs.set_faults(FaultConfig::default());
            vfs.crash();
            assert_eq!(load_in(&vfs, &dir).expect("load"), Some(old.clone()));
        }
    }

    #[test]
    fn a_completed_store_survives_a_crash() {
        let (old, new) = (samples()[2].clone(), samples()[3].clone());
        let (vfs, dir) = faulty_with(&old);
        vfs.set_faults(FaultConfig {
            torn_crash: true,
            ..FaultConfig::default()
        });
        store_in(&vfs, &dir, &new).expect("store");
        vfs.crash();
        assert_eq!(load_in(&vfs, &dir).expect("load"), Some(new));
        let names = vfs.list_dir(&dir).expect("list");
        assert_eq!(names, vec![ELECTION_FILE.to_string()]);
    }

    #[test]
    fn the_names_are_node_state_to_the_engine() {
        use logship_engine::segment::{classify, EntryKind};
        assert_eq!(classify(ELECTION_FILE), EntryKind::NodeState);
        assert_eq!(classify(ELECTION_TEMP_FILE), EntryKind::NodeState);
    }
}
