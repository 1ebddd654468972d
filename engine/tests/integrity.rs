//! Every position matters: damage to each record of a small log in turn (one flipped byte), and
//! to each 4 KiB block of it (zeroed, or overwritten with garbage), is either refused as
//! corruption naming the damaged record's LSN, or, only for records the log cannot prove were
//! synced, cut as a torn tail starting at that LSN. Never silently accepted, never cut when
//! synced.
//!
//! The log is written in known writes: each group of records is appended as one batch and waited
//! for before the next, so write k+1 is submitted after write k was synced, and its marker
//! proves write k. What proves the last write is the durable floor of a clean close, or the idle
//! marker the writer leaves when it falls idle; the "crash" cases remove both, so the last
//! write is exactly the records a crash may take back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use logship_engine::record::{decode_frame, Frame, MarkerKind};
use logship_engine::segment::{FLOOR_FILE, SEGMENT_HEADER_BYTES};
use logship_engine::{verify, Error, Log, Lsn, Options};

const BLOCK: usize = 4096;

fn options() -> Options {
    Options {
        create_if_missing: true,
        segment_size_bytes: 64 << 10,
        max_record_bytes: 4 << 10,
        max_batch_bytes: 16 << 10,
        max_queue_bytes: 256 << 10,
        ..Options::default()
    }
}

/// Payload bytes are never zero, so zeroing any byte of a record changes it.
fn payload(i: u64) -> Bytes {
    let len = 1 + (i * 37 % 700) as usize;
    Bytes::from(
        (0..len)
            .map(|k| b'a' + ((i as usize + k) % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// Writes about 400 records in groups of 1 to 5, each group one write, waited for.
fn build(dir: &Path) -> Log {
    let log = Log::open(dir, options()).unwrap();
    let mut lsn = 1u64;
    let mut group = 0u64;
    while lsn <= 400 {
        let n = group % 5 + 1;
        let batch: Vec<Bytes> = (lsn..lsn + n).map(payload).collect();
        log.append_batch(batch).unwrap().wait().unwrap();
        lsn += n;
        group += 1;
    }
    log
}

/// One frame of a segment file: where it lies, and what it is.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
    /// A record's LSN, or the LSN that follows a marker.
    lsn: Lsn,
    marker: Option<MarkerKind>,
    /// A marker's claim: bytes before this offset were synced.
    synced: usize,
}

struct SegmentFile {
    path: PathBuf,
    base: Lsn,
    sealed: bool,
    frames: Vec<Span>,
}

fn segments(dir: &Path) -> Vec<SegmentFile> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 24 && n.ends_with(".seg"))
        .collect();
    names.sort();
    let count = names.len();
    names
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let path = dir.join(&n);
            let base = Lsn(n[..20].parse().unwrap());
            let bytes = std::fs::read(&path).unwrap();
            let mut frames = Vec::new();
            let mut off = SEGMENT_HEADER_BYTES;
            while let Ok(f) = decode_frame(&bytes[off..]) {
                let (lsn, marker, synced) = match f {
                    Frame::Record(r) => (r.header.lsn, None, 0),
                    Frame::Marker(m) => (m.next_lsn, Some(m.kind), m.synced_offset as usize),
                };
                if lsn < base {
                    break;
                }
                frames.push(Span {
                    start: off,
                    end: off + f.encoded_len(),
                    lsn,
                    marker,
                    synced,
                });
                off += f.encoded_len();
            }
            SegmentFile {
                path,
                base,
                sealed: i + 1 < count,
                frames,
            }
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// What must happen to a log damaged first at `lsn` (the LSN expected at the first damaged
/// frame): corruption, or a torn tail cut at `lsn`.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Corrupt(Lsn),
    Torn(Lsn),
}

/// Checks `verify`, a full-scan open and a default open (plus a read) against `expect`.
fn check(dir: &Path, expect: &Expect, what: &str) {
    let report = verify(dir).unwrap();
    match expect {
        Expect::Corrupt(lsn) => {
            let c = report.corruptions.first();
            assert_eq!(c.map(|c| c.lsn), Some(*lsn), "{what}: verify {report:?}");
        }
        Expect::Torn(lsn) => {
            // A torn tail, or (when the damage zeroed everything after it) a clean end there:
            // a write that never reached the disk looks the same.
            assert!(report.is_clean(), "{what}: verify {report:?}");
            let torn = report.torn_tail.as_ref().map(|t| t.lsn);
            assert!(
                torn == Some(*lsn) || torn.is_none() && report.last_lsn == lsn.prev(),
                "{what}: {report:?}"
            );
        }
    }
    let full = Options {
        full_scan_on_open: true,
        create_if_missing: false,
        ..options()
    };
    let scratch = dir.with_extension("open");
    let _ = std::fs::remove_dir_all(&scratch);
    copy_dir(dir, &scratch);
    match (Log::open(&scratch, full), expect) {
        (Err(Error::Corruption { lsn, .. }), Expect::Corrupt(want)) => {
            assert_eq!(lsn, *want, "{what}: open names the wrong LSN")
        }
        (Ok(log), Expect::Torn(want)) => {
            let t = log.recovery_report().torn_tail.clone();
            assert!(t.as_ref().is_none_or(|t| t.lsn == *want), "{what}: {t:?}");
            assert_eq!(log.last_lsn(), want.prev(), "{what}: cut elsewhere");
        }
        (got, _) => panic!(
            "{what}: expected {expect:?}, open gave {:?}",
            got.map(|l| l.last_lsn())
        ),
    }
    std::fs::remove_dir_all(&scratch).unwrap();
}

/// Where the damage starts: the segment, the LSN expected at the first damaged frame, and
/// whether a marker that survived the damage proves that frame was synced.
struct Damage {
    seg: usize,
    lsn: Lsn,
    /// The segment header is damaged: never a torn write (headers are synced before use).
    header: bool,
    proven_by_survivor: bool,
}

fn first_damage(segs: &[SegmentFile], dir: &Path, original: &Path) -> Option<Damage> {
    for (i, s) in segs.iter().enumerate() {
        let now = std::fs::read(dir.join(s.path.file_name().unwrap())).unwrap();
        let was = std::fs::read(original.join(s.path.file_name().unwrap())).unwrap();
        let intact = |f: &Span| now[f.start..f.end] == was[f.start..f.end];
        let (lsn, at) = if now[..SEGMENT_HEADER_BYTES] != was[..SEGMENT_HEADER_BYTES] {
            (s.base, 0)
        } else if let Some(f) = s.frames.iter().find(|f| !intact(f)) {
            (f.lsn, f.start)
        } else {
            continue;
        };
        let proven_by_survivor = s
            .frames
            .iter()
            .any(|f| f.marker.is_some() && intact(f) && f.synced > at);
        return Some(Damage {
            seg: i,
            lsn,
            header: at == 0,
            proven_by_survivor,
        });
    }
    None
}

/// The records of the last write: after the last marker that precedes a record.
fn last_write_first_lsn(segs: &[SegmentFile]) -> Lsn {
    let last = segs.last().unwrap();
    let frames = &last.frames;
    let end = frames.iter().rposition(|f| f.marker.is_none()).unwrap();
    let start = frames[..end]
        .iter()
        .rposition(|f| f.marker.is_some())
        .map_or(0, |i| i + 1);
    frames[start].lsn
}

/// What the log can prove about the damaged frame: a sealed segment was synced whole; in the
/// last one, a clean close's floor proves everything, and otherwise a marker that survived.
fn expect_for(segs: &[SegmentFile], d: &Damage, closed: bool) -> Expect {
    if segs[d.seg].sealed || closed || d.header || d.proven_by_survivor {
        Expect::Corrupt(d.lsn)
    } else {
        Expect::Torn(d.lsn)
    }
}

/// Every record flipped in turn, then every block zeroed and every block overwritten. Flipped
/// records before `unproven_from` (every write but the last, whose successor proves it) must be
/// corruption whatever else happens.
fn every_position(original: &Path, unproven_from: Lsn, closed: bool, label: &str) {
    let segs = segments(original);
    assert!(segs.len() >= 3, "several segments: {}", segs.len());
    let work = original.with_extension("work");
    let mut cases = 0;
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    let mut run = |damage: &dyn Fn(&mut Vec<u8>), file: &Path, what: String| {
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(original, &work);
        let target = work.join(file.file_name().unwrap());
        let mut bytes = std::fs::read(&target).unwrap();
        damage(&mut bytes);
        std::fs::write(&target, &bytes).unwrap();
        let Some(d) = first_damage(&segs, &work, original) else {
            // Damage past the records changes no record: open and verify must keep them all.
            let r = verify(&work).unwrap();
            assert!(r.is_clean(), "{what}: {r:?}");
            assert_eq!(r.last_lsn, Lsn(400), "{what}: {r:?}");
            *outcomes.entry("no record touched").or_default() += 1;
            return;
        };
        let expect = expect_for(&segs, &d, closed);
        if what.contains("byte") && d.lsn < unproven_from {
            assert_eq!(
                expect,
                Expect::Corrupt(d.lsn),
                "{what}: the test's own model"
            );
        }
        *outcomes
            .entry(match expect {
                Expect::Corrupt(_) => "corruption",
                Expect::Torn(_) => "torn tail",
            })
            .or_default() += 1;
        check(&work, &expect, &what);
        cases += 1;
    };
    for s in &segs {
        for f in s.frames.iter().filter(|f| f.marker.is_none()) {
            let at = f.start + (f.lsn.get() as usize * 13) % (f.end - f.start);
            run(
                &|b| b[at] ^= 0x5a,
                &s.path,
                format!("{label}: byte {at} of LSN {}", f.lsn),
            );
        }
        let written = s.frames.last().map_or(SEGMENT_HEADER_BYTES, |f| f.end);
        let len = std::fs::metadata(&s.path).unwrap().len() as usize;
        for block in (0..written + BLOCK)
            .step_by(BLOCK)
            .filter(|b| b + BLOCK <= len)
        {
            let name = s.path.file_name().unwrap().to_string_lossy().into_owned();
            run(
                &|b| b[block..block + BLOCK].fill(0),
                &s.path,
                format!("{label}: zeroed block {block} of {name}"),
            );
            let garbage = |b: &mut Vec<u8>| {
                for (k, x) in b[block..block + BLOCK].iter_mut().enumerate() {
                    *x = (k as u8).wrapping_mul(151).wrapping_add(block as u8) | 1;
                }
            };
            run(
                &garbage,
                &s.path,
                format!("{label}: garbage block {block} of {name}"),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    println!("{label}: {cases} damaged logs checked: {outcomes:?}");
    assert!(cases > 400, "{cases}");
}

#[test]
fn a_cleanly_closed_log_refuses_damage_to_any_record_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("log");
    build(&original).close().unwrap();
    assert!(
        original.join(FLOOR_FILE).exists(),
        "a clean close writes the durable floor"
    );
    // Nothing is unproven: every damaged record is corruption.
    every_position(&original, Lsn(u64::MAX), true, "closed");
}

#[test]
fn after_a_crash_only_the_last_write_may_be_cut_as_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let log = build(&live);
    // A crash: no close, no floor. Let the writer leave its idle marker, then take a copy and
    // remove that marker, as a power cut before it reached the disk would.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let original = dir.path().join("log");
    copy_dir(&live, &original);
    std::mem::forget(log);
    assert!(!original.join(FLOOR_FILE).exists());
    let segs = segments(&original);
    let last = segs.last().unwrap();
    let idle = last.frames.last().unwrap();
    assert_eq!(
        idle.marker,
        Some(MarkerKind::Idle),
        "the writer left an idle marker"
    );
    let mut bytes = std::fs::read(&last.path).unwrap();
    bytes[idle.start..idle.end].fill(0);
    std::fs::write(&last.path, &bytes).unwrap();
    let unproven = last_write_first_lsn(&segments(&original));
    println!("the last write starts at LSN {unproven}");
    every_position(&original, unproven, false, "crashed");
}

/// A log written by a version-1 build: a version-1 marker file and segment (records only, no
/// write markers), as that build left them.
fn version_1_log(dir: &Path, records: u64) {
    use logship_engine::record::encode_into;
    use logship_engine::segment::{
        segment_name, LogMeta, SegmentHeader, LEGACY_FORMAT_VERSION, META_FILE,
    };
    std::fs::create_dir_all(dir).unwrap();
    let meta = LogMeta {
        format_version: LEGACY_FORMAT_VERSION,
        created_unix_nanos: 0,
    };
    std::fs::write(dir.join(META_FILE), meta.encode()).unwrap();
    let mut seg = SegmentHeader {
        format_version: LEGACY_FORMAT_VERSION,
        base_lsn: Lsn(1),
        created_unix_nanos: 0,
        segment_size_bytes: 64 << 10,
        max_unsynced_bytes: 8 << 10,
        epoch: logship_engine::Epoch(0),
    }
    .encode()
    .to_vec();
    for i in 1..=records {
        encode_into(&mut seg, Lsn(i), logship_engine::Epoch(0), &payload(i));
    }
    seg.resize(64 << 10, 0);
    std::fs::write(dir.join(segment_name(Lsn(1))), seg).unwrap();
}

#[test]
fn a_version_1_log_opens_keeps_its_tail_rule_and_continues_in_version_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1");
    version_1_log(&path, 60);
    // Damage near the end of a version-1 segment is judged by the version-1 rule (a torn write
    // within max_unsynced_bytes of the end), and verify says which rule it used.
    let copy = dir.path().join("v1-damaged");
    copy_dir(&path, &copy);
    let seg = copy.join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = segments(&path)[0].frames[58].start + 40;
    bytes[at] ^= 1;
    std::fs::write(&seg, bytes).unwrap();
    let r = verify(&copy).unwrap();
    assert_eq!(r.legacy_segments, 1);
    assert_eq!(r.torn_tail.map(|t| t.lsn), Some(Lsn(59)));

    let log = Log::open(&path, options()).unwrap();
    assert_eq!(log.last_lsn(), Lsn(60));
    let got: Vec<Bytes> = log
        .read_from(Lsn(1))
        .unwrap()
        .map(|r| r.unwrap().payload)
        .collect();
    assert_eq!(got, (1..=60).map(payload).collect::<Vec<_>>());
    // The first append rolls over to a version-2 segment: markers never mix with version 1.
    log.append(payload(61)).unwrap().wait().unwrap();
    log.close().unwrap();
    let segs = segments(&path);
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[1].base, Lsn(61));
    assert!(segs[1].frames.iter().any(|f| f.marker.is_some()));
    assert!(segs[0].frames.iter().all(|f| f.marker.is_none()));
    let r = verify(&path).unwrap();
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(
        (r.legacy_segments, r.last_lsn, r.durable_floor),
        (1, Lsn(61), Lsn(61))
    );
    let log = Log::open(&path, options()).unwrap();
    assert_eq!(log.read_from(Lsn(1)).unwrap().count(), 61);
}

#[test]
fn salvage_sets_damage_aside_without_losing_a_byte() {
    use logship_engine::{RecoveryMode, SalvageAction};
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("log");
    build(&original).close().unwrap();
    let segs = segments(&original);
    let salvage = Options {
        recovery: RecoveryMode::Salvage,
        create_if_missing: false,
        ..options()
    };

    // Synced records damaged in the last segment: the bytes go to a quarantine file, the log is
    // cut before the damage (a replica supplies the rest), and the floor follows the cut.
    let work = dir.path().join("last");
    copy_dir(&original, &work);
    let last = segs.last().unwrap();
    let victim = last
        .frames
        .iter()
        .filter(|f| f.marker.is_none())
        .nth(3)
        .unwrap();
    let path = work.join(last.path.file_name().unwrap());
    let before = std::fs::read(&path).unwrap();
    let mut bytes = before.clone();
    bytes[victim.start + 40] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let log = Log::open(&work, salvage.clone()).unwrap();
    assert_eq!(log.last_lsn(), victim.lsn.prev());
    let s = &log.recovery_report().salvaged[0];
    assert_eq!(s.corruption.lsn, victim.lsn);
    let SalvageAction::CutAndQuarantined {
        quarantine,
        records_cut,
    } = &s.action
    else {
        panic!("{s:?}")
    };
    assert_eq!(
        std::fs::read(quarantine).unwrap(),
        bytes,
        "the quarantine keeps every byte"
    );
    assert_eq!(*records_cut, 400 - victim.lsn.get());
    drop(log);
    let r = verify(&work).unwrap();
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.quarantined.len(), 1);
    assert_eq!(r.durable_floor, victim.lsn.prev());

    // A sealed segment whose header is damaged stays, marked damaged: its range reads as
    // corruption, the rest of the log reads as before.
    let work = dir.path().join("sealed");
    copy_dir(&original, &work);
    let sealed = &segs[1];
    let path = work.join(sealed.path.file_name().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        Log::open(
            &work,
            Options {
                create_if_missing: false,
                ..options()
            }
        ),
        Err(Error::Corruption { .. })
    ));
    let log = Log::open(&work, salvage).unwrap();
    assert_eq!(log.last_lsn(), Lsn(400));
    assert_eq!(
        log.recovery_report().salvaged[0].action,
        SalvageAction::MarkedDamaged
    );
    let mut r = log.read_from(sealed.base).unwrap();
    assert!(matches!(r.next(), Some(Err(Error::Corruption { lsn, .. })) if lsn == sealed.base));
    assert_eq!(
        log.read_from(Lsn(1))
            .unwrap()
            .take_while(|r| r.is_ok())
            .count() as u64,
        sealed.base.get() - 1
    );
    let after = segs[2].base;
    assert_eq!(
        log.read_from(after).unwrap().count() as u64,
        401 - after.get()
    );
    drop(log);

    // A sealed segment's damaged record, found by a full scan at open: the segment keeps its
    // whole range (up to its successor's base), marked damaged from the record.
    let work = dir.path().join("sealed-record");
    copy_dir(&original, &work);
    let victim = segs[1]
        .frames
        .iter()
        .filter(|f| f.marker.is_none())
        .nth(2)
        .unwrap();
    let path = work.join(segs[1].path.file_name().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[victim.start + 35] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let full = Options {
        recovery: RecoveryMode::Salvage,
        full_scan_on_open: true,
        create_if_missing: false,
        ..options()
    };
    let log = Log::open(&work, full).unwrap();
    let d = log.damaged_segments();
    assert_eq!(d.len(), 1);
    let want = (segs[1].base, segs[2].base.prev(), victim.lsn);
    assert_eq!((d[0].first, d[0].last, d[0].corruption.lsn), want);
}

/// A record header in a sealed segment whose length was damaged after the log was opened (and
/// checked) makes a chunk read reach past the end of the segment's map: refused as corruption,
/// never a panic.
#[test]
fn a_damaged_length_in_a_mapped_segment_is_corruption_for_a_chunk_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = build(dir.path());
    let segs = segments(dir.path());
    let first = segs.iter().find(|s| s.sealed).expect("a sealed segment");
    let last = first
        .frames
        .iter()
        .rev()
        .find(|f| f.marker.is_none())
        .expect("a record");
    let mut bytes = std::fs::read(&first.path).unwrap();
    bytes[last.start..last.start + 4].copy_from_slice(&0x00F0_0000u32.to_le_bytes());
    std::fs::write(&first.path, &bytes).unwrap();
    let mut reader = log.read_from(first.base).unwrap();
    let mut read_to = first.base.prev();
    let error = loop {
        match reader.next_chunk(1 << 20).expect("a chunk or an error") {
            Ok(chunk) => read_to = chunk.last,
            Err(e) => break e,
        }
    };
    assert_eq!(
        read_to,
        last.lsn.prev(),
        "every record before the damaged one"
    );
    match error {
        Error::Corruption { lsn, offset, .. } => {
            assert_eq!((lsn, offset), (last.lsn, last.start as u64));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}
