//! A log directory as the tests look at it: its segment files in LSN order, and the quarantine
//! files damage left (names as the engine classifies them).
#![allow(dead_code)] // each test uses a different subset

use std::path::{Path, PathBuf};

use logship::segment::{classify, EntryKind};

/// The segment files of the log in `dir`, in LSN order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .expect("list log directory")
        .map(|e| e.expect("directory entry"))
        .filter_map(|e| match classify(&e.file_name().to_string_lossy()) {
            EntryKind::Segment(base) => Some((base, e.path())),
            _ => None,
        })
        .collect();
    segs.sort();
    segs.into_iter().map(|(_, p)| p).collect()
}

/// The names of the quarantine files in `dir`.
pub fn quarantined(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list log directory")
        .map(|e| e.expect("directory entry").file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| classify(n) == EntryKind::Quarantine)
        .collect()
}
