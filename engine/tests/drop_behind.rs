//! Drop-behind: a follower's replicated records leave the page cache once durable
//! (`Options::drop_behind_replicated`), local appends keep theirs, and what was dropped reads
//! back whole from the device.

use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use logship_engine::io::Backend;
use logship_engine::{Log, Lsn, Options};

const PAGE: usize = 4096;
/// Records of 4 KiB, 1,280 of them: 5 MiB, several drop grains (1 MiB) in one segment.
const RECORDS: u64 = 1280;

fn options(backend: Backend, drop_behind_replicated: bool) -> Options {
    Options {
        create_if_missing: true,
        segment_size_bytes: 16 << 20,
        backend,
        drop_behind_replicated,
        ..Options::default()
    }
}

/// A directory on the file system the build writes to (the page cache of a tmpfs keeps its
/// pages whatever it is told).
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

fn payload(i: u64) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; 4096 - 32])
}

/// A primary's log of [`RECORDS`] records, synced.
fn primary(dir: &Path) -> Log {
    let log = Log::open(dir.join("p"), options(Backend::Portable, true)).unwrap();
    for i in 1..=RECORDS {
        drop(log.append(payload(i)).unwrap());
    }
    log.sync().unwrap();
    log
}

/// Copies every record of `from` into `to` in chunks of 512 KiB, as a follower appends what
/// its primary sends, each waited for.
fn replicate(from: &Log, to: &Log) {
    let mut reader = from.read_from(Lsn::ZERO).unwrap();
    while let Some(c) = reader.next_chunk(512 << 10) {
        let c = c.unwrap();
        to.append_replicated(c.bytes).unwrap().wait().unwrap();
    }
}

/// The payloads of every record of `log`.
fn payloads(log: &Log) -> Vec<Bytes> {
    let mut reader = log.read_from(Lsn::ZERO).unwrap();
    let mut out = Vec::new();
    for r in &mut reader {
        out.push(r.unwrap().payload);
    }
    out
}

/// The log's one segment file.
fn segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".seg") && name.starts_with(|c: char| c.is_ascii_digit())
        })
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "one segment: {segs:?}");
    segs.remove(0)
}

/// Of the first `bytes` of `path`, the pages the page cache holds (`mincore` on a map of it
/// that is never touched).
fn resident_pages(path: &Path, bytes: usize) -> usize {
    let file = std::fs::File::open(path).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: a read-only map of a file nothing truncates while the test looks at it, never
    // dereferenced: only its address goes to mincore.
    let map = unsafe { memmap2::MmapOptions::new().len(bytes).map(&file) }.unwrap();
    let mut vec = vec![0u8; bytes.div_ceil(PAGE)];
    #[allow(unsafe_code)]
    // SAFETY: `map` spans `bytes` bytes; `vec` holds one byte per page of them.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, bytes, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 == 1).count()
}

/// Whether the file system of `dir` is a tmpfs, whose pages have no device to come back from.
fn on_tmpfs(dir: &Path) -> bool {
    let file = std::fs::File::open(dir).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: fstatfs into a zeroed struct it fills.
    let st = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        assert_eq!(libc::fstatfs(file.as_raw_fd(), &mut st), 0);
        st
    };
    st.f_type == libc::TMPFS_MAGIC
}

#[test]
fn replicated_records_leave_the_page_cache_once_durable_and_read_back_whole() {
    let dir = scratch();
    let primary = primary(dir.path());
    let follower = Log::open(dir.path().join("f"), options(Backend::Portable, true)).unwrap();
    replicate(&primary, &follower);
    let dropped = follower.stats().dropped_behind_bytes;
    // 5 MiB of records in 2 MiB grains: the grain holding the end is kept.
    assert_eq!(dropped, 4 << 20, "dropped {dropped} bytes");
    if on_tmpfs(dir.path()) {
        eprintln!("page residency not checked: a tmpfs keeps its pages");
    } else {
        let path = segment(&dir.path().join("f"));
        let pages = usize::try_from(dropped).unwrap() / PAGE;
        let resident = resident_pages(&path, pages * PAGE);
        assert!(
            resident <= pages / 8,
            "{resident} of the {pages} dropped pages still cached"
        );
    }
    assert_eq!(payloads(&follower), payloads(&primary));
    follower.close().unwrap();
    let reopened = Log::open(dir.path().join("f"), options(Backend::Portable, true)).unwrap();
    assert_eq!(reopened.last_lsn(), Lsn(RECORDS));
    assert_eq!(payloads(&reopened), payloads(&primary));
}

#[test]
fn local_appends_and_a_log_told_not_to_keep_their_pages() {
    let dir = scratch();
    let primary = primary(dir.path());
    assert_eq!(primary.stats().dropped_behind_bytes, 0, "local appends");
    let keeping = Log::open(dir.path().join("k"), options(Backend::Portable, false)).unwrap();
    replicate(&primary, &keeping);
    assert_eq!(keeping.stats().dropped_behind_bytes, 0, "drop-behind off");
    assert_eq!(payloads(&keeping), payloads(&primary));
}

#[test]
fn a_log_written_around_the_page_cache_drops_nothing() {
    let dir = scratch();
    let primary = primary(dir.path());
    let direct = match Log::open(dir.path().join("d"), options(Backend::IoUringDirect, true)) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("io_uring_direct not available here, not checked: {e}");
            return;
        }
    };
    replicate(&primary, &direct);
    assert_eq!(direct.stats().dropped_behind_bytes, 0);
    assert_eq!(payloads(&direct), payloads(&primary));
}
