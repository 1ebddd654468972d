//! What a measurement writes into, where that decides the figure: memory and blocks freed a
//! moment before, or memory and blocks the host has taken back.
//!
//! On a virtual machine whose balloon device reports free pages (virtio-balloon's
//! `VIRTIO_BALLOON_F_REPORTING`), memory the guest frees (the page cache of a deleted file) is
//! handed back to the host within seconds; a page cache that grows into it again pays a host
//! fault per page. Measured on such a machine (ext4, 1 MiB buffered `pwrite`s into new files,
//! an `fdatasync` every 4 MiB, 256 MiB): right after another such run, the `pwrite`s took
//! 0.06 s in all and the run reached 1,274 MB/s; after 8 s of quiet, the `pwrite`s took 0.67 s
//! and the run 329 MB/s, and over 1 GiB it settles near 120–140 MB/s. The `fdatasync`s took
//! the same time in both (0.14–0.15 s). `O_DIRECT` writes, which bypass the page cache, and
//! overwrites of cached pages do not pay it (1,350–1,900 MB/s and about 3,000 MB/s).
//! A file system mounted with `discard` likewise trims freed blocks at its next journal commit.
//!
//! So a figure of "writes into new files" depends on how long ago the previous stage freed what
//! it used, a tenfold difference no code under test controls. [`settle_freed`] waits until what
//! was freed before the call has been handed back, so that a limit and the case compared to it
//! start from the same state.

use std::path::Path;
use std::time::Duration;

/// Free page reporting's delay before it hands freed memory back (the kernel's
/// `PAGE_REPORTING_DELAY` is 2 s), with a margin.
const REPORTING_WAIT: Duration = Duration::from_secs(4);
/// `VIRTIO_BALLOON_F_REPORTING`: the balloon reports free pages to the host.
const BALLOON_F_REPORTING: usize = 5;
/// The journal commit interval ext4 and xfs use when the mount names none.
const DEFAULT_COMMIT: Duration = Duration::from_secs(5);
/// Beyond the commit interval: the trim itself.
const TRIM_MARGIN: Duration = Duration::from_secs(1);

/// Flushes the file system under `dir` ([`crate::append::settle`]) and waits until what was
/// freed before the call has been handed back: one journal commit interval and a margin when
/// the file system is mounted with `discard`, free page reporting's delay when the balloon
/// reports free pages. Returns the time waited (zero when neither applies).
pub fn settle_freed(dir: &Path) -> Duration {
    crate::append::settle(dir);
    let trim = mount_options(dir)
        .and_then(|o| trim_wait(&o))
        .unwrap_or(Duration::ZERO);
    let reporting = if balloon_reports_free_pages() {
        REPORTING_WAIT
    } else {
        Duration::ZERO
    };
    let wait = trim.max(reporting);
    if !wait.is_zero() {
        std::thread::sleep(wait);
        crate::append::settle(dir);
    }
    wait
}

/// Whether a virtio balloon of this machine reports free pages to the host (its feature bits,
/// one character each, in `/sys/bus/virtio/drivers/virtio_balloon/*/features`).
fn balloon_reports_free_pages() -> bool {
    let Ok(devices) = std::fs::read_dir("/sys/bus/virtio/drivers/virtio_balloon") else {
        return false;
    };
    devices.flatten().any(|d| {
        std::fs::read_to_string(d.path().join("features"))
            .is_ok_and(|bits| bits.as_bytes().get(BALLOON_F_REPORTING) == Some(&b'1'))
    })
}

/// How long freed blocks take to be trimmed under these mount options; `None` without
/// `discard`.
fn trim_wait(options: &str) -> Option<Duration> {
    let mut discard = false;
    let mut commit = DEFAULT_COMMIT;
    for option in options.split(',') {
        match option.split_once('=') {
            None if option == "discard" => discard = true,
            Some(("commit", secs)) => {
                if let Ok(secs) = secs.parse::<u64>() {
                    commit = Duration::from_secs(secs.max(1));
                }
            }
            _ => {}
        }
    }
    discard.then_some(commit + TRIM_MARGIN)
}

/// The mount options of the file system holding `dir`: the `/proc/mounts` entry whose mount
/// point is the longest prefix of `dir`'s canonical path.
fn mount_options(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let point = fields.nth(1)?;
            let options = fields.nth(1)?;
            dir.starts_with(point)
                .then(|| (point.len(), options.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, options)| options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_only_under_discard_and_follows_the_commit_interval() {
        assert_eq!(trim_wait("rw,relatime"), None);
        assert_eq!(trim_wait("rw,nodiscard"), None);
        assert_eq!(
            trim_wait("rw,relatime,discard,resv_strict"),
            Some(DEFAULT_COMMIT + TRIM_MARGIN)
        );
        assert_eq!(
            trim_wait("rw,commit=30,discard"),
            Some(Duration::from_secs(30) + TRIM_MARGIN)
        );
        assert_eq!(
            trim_wait("discard,commit=bad"),
            Some(DEFAULT_COMMIT + TRIM_MARGIN)
        );
    }

    #[test]
    fn the_root_file_system_has_options() {
        assert!(mount_options(Path::new("/")).is_some_and(|o| !o.is_empty()));
    }
}
