//! File names in a log directory.

use crate::types::Lsn;

use super::META_FILE;

/// What a directory entry is to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// The marker file.
    Meta,
    /// A segment whose first LSN is given by its name.
    Segment(Lsn),
    /// A reusable file; the number is its id.
    Free(u64),
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

/// Classifies a directory entry by name.
pub fn classify(name: &str) -> EntryKind {
    if name == META_FILE {
        return EntryKind::Meta;
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
    }
}
