//! File names in a log directory.

use crate::types::Lsn;

use super::{FLOOR_FILE, META_FILE};

/// What a directory entry is to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// The marker file.
    Meta,
    /// A segment whose first LSN is given by its name.
    Segment(Lsn),
    /// A reusable file; the number is its id.
    Free(u64),
    /// The durable floor.
    Floor,
    /// A damaged segment's bytes, kept aside for forensics; never read by the log.
    Quarantine,
    /// State of the node that embeds the log (`logship.node-*`), left alone by the engine.
    NodeState,
    /// A file being prepared (safe to delete at open).
    Temp,
    /// Not logship's.
    Foreign,
}

/// `00000000000000000001.seg` for LSN 1.
pub fn segment_name(base: Lsn) -> String {
    format!("{:020}.seg", base.get())
}

/// `free-<id>.seg`.
pub fn free_name(id: u64) -> String {
    format!("free-{id}.seg")
}

/// `quarantine-<base, 20 digits>-<n>.seg`.
pub fn quarantine_name(base: Lsn, n: u64) -> String {
    format!("quarantine-{:020}-{n}.seg", base.get())
}

/// Classifies a directory entry by name.
pub fn classify(name: &str) -> EntryKind {
    if name == META_FILE {
        return EntryKind::Meta;
    }
    if name == FLOOR_FILE {
        return EntryKind::Floor;
    }
    if name.starts_with("quarantine-") && name.ends_with(".seg") {
        return EntryKind::Quarantine;
    }
    if name.starts_with("logship.node-") {
        return EntryKind::NodeState;
    }
    if let Some(stem) = name.strip_suffix(".seg") {
        if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = stem.parse::<u64>() {
                if n >= 1 {
                    return EntryKind::Segment(Lsn(n));
                }
            }
        }
        if let Some(id) = stem.strip_prefix("free-") {
            if let Ok(n) = id.parse::<u64>() {
                return EntryKind::Free(n);
            }
        }
        return EntryKind::Foreign;
    }
    if name.starts_with("logship-") && name.ends_with(".tmp") {
        return EntryKind::Temp;
    }
    EntryKind::Foreign
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_log_order_and_round_trip() {
        let a = segment_name(Lsn(9));
        let b = segment_name(Lsn(10));
        assert!(a < b);
        assert_eq!(classify(&a), EntryKind::Segment(Lsn(9)));
        assert_eq!(classify(&free_name(3)), EntryKind::Free(3));
        assert_eq!(classify("logship.meta"), EntryKind::Meta);
        assert_eq!(classify("notes.txt"), EntryKind::Foreign);
        assert_eq!(classify("00000000000000000000.seg"), EntryKind::Foreign);
        assert_eq!(classify("1.seg"), EntryKind::Foreign);
        assert_eq!(classify("logship-free-1.tmp"), EntryKind::Temp);
        assert_eq!(classify("logship.durable"), EntryKind::Floor);
        assert_eq!(classify(&quarantine_name(Lsn(5), 2)), EntryKind::Quarantine);
    }
}
