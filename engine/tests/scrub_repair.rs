//! The scrubber finds rot that nobody reads, replicas' digests agree range by range, and a
//! damaged segment is repaired from another copy's records without losing a byte.

use std::path::Path;

use bytes::Bytes;
use logship_engine::{verify, Error, Log, Lsn, Options, RangeDigest, ScrubOptions, Scrubber};

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

const SCRUB: ScrubOptions = ScrubOptions {
    digest_range_records: 100,
};

fn payload(i: u64) -> Bytes {
    Bytes::from(format!("record {i} {}", "y".repeat((i * 7 % 300) as usize)))
}

/// A primary-like log of `n` records, and a copy of it made the way a follower makes one.
fn two_copies(dir: &Path, n: u64) -> (Log, Log) {
    let a = Log::open(dir.join("a"), options()).unwrap();
    for i in 1..=n {
        let c = a.append(payload(i)).unwrap();
        if i % 50 == 0 {
            c.wait().unwrap();
        }
    }
    a.sync().unwrap();
    let b = Log::open(dir.join("b"), options()).unwrap();
    let mut r = a.read_from(Lsn(1)).unwrap();
    while let Some(c) = r.next_chunk(10_000) {
        drop(b.append_replicated(c.unwrap().bytes).unwrap());
    }
    b.sync().unwrap();
    (a, b)
}

/// Runs whole passes; returns the corruptions found and the digests made.
fn scrub_pass(s: &mut Scrubber) -> (Vec<logship_engine::Corruption>, Vec<RangeDigest>, u64) {
    let (mut found, mut digests, mut bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..100_000 {
        let step = s.step(8 << 10).unwrap();
        bytes += step.bytes;
        found.extend(step.corruption);
        digests.extend(step.digests);
        if step.pass_finished {
            return (found, digests, bytes);
        }
    }
    panic!("a pass did not end");
}

#[test]
fn the_scrubber_finds_a_flipped_byte_in_a_sealed_segment_and_a_replica_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_copies(dir.path(), 2000);
    assert!(a.stats().rollovers >= 4, "{:?}", a.stats());

    // A clean pass checks every byte and makes the same digests on both copies, although the
    // copies cut their segments at different LSNs.
    let mut sa = a.scrubber(SCRUB);
    let mut sb = b.scrubber(SCRUB);
    let (found, da, bytes) = scrub_pass(&mut sa);
    assert!(found.is_empty(), "{found:?}");
    assert!(bytes > 2000 * 32, "{bytes}");
    let (_, db, _) = scrub_pass(&mut sb);
    assert_eq!(da.len(), 20, "{da:?}");
    assert_eq!(da, db);

    // Rot in a sealed segment: open checks headers only, so nothing notices until the
    // scrubber's next pass.
    let victim = Lsn(777);
    let (seg_path, offset) = locate(&dir.path().join("a"), victim);
    let mut bytes = std::fs::read(&seg_path).unwrap();
    bytes[offset + 40] ^= 0x10;
    std::fs::write(&seg_path, &bytes).unwrap();
    let (found, digests, _) = scrub_pass(&mut sa);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].lsn, victim);
    assert_eq!(found[0].segment, seg_path);
    assert!(digests.len() < da.len(), "the damaged range has no digest");
    let damaged = a.damaged_segments();
    assert_eq!(damaged.len(), 1);
    let d = &damaged[0];
    assert!(d.first <= victim && victim <= d.last);
    // Readers refuse the damaged range instead of returning the rotten record.
    let mut r = a.read_from(victim).unwrap();
    assert!(matches!(r.next(), Some(Err(Error::Corruption { lsn, .. })) if lsn >= d.first));

    // Repair from the copy: exactly the segment's records, CRCs checked.
    let mut records = Vec::new();
    for rec in b.read_from(d.first).unwrap() {
        let rec = rec.unwrap();
        if rec.lsn > d.last {
            break;
        }
        logship_engine::record::encode_into(&mut records, rec.lsn, rec.epoch, &rec.payload);
    }
    let short = Bytes::copy_from_slice(&records[..records.len() - 10]);
    assert!(matches!(
        a.repair_segment(d.first, &[short]),
        Err(Error::InvalidRecords { .. })
    ));
    let report = a.repair_segment(d.first, &[Bytes::from(records)]).unwrap();
    assert_eq!(
        std::fs::read(&report.quarantine).unwrap(),
        bytes,
        "the damaged bytes are kept"
    );
    assert!(a.damaged_segments().is_empty());
    assert_eq!(a.stats().repairs, 1);
    let got: Vec<Bytes> = a
        .read_from(Lsn(1))
        .unwrap()
        .map(|r| r.unwrap().payload)
        .collect();
    assert_eq!(got, (1..=2000).map(payload).collect::<Vec<_>>());
    let (found, again, _) = scrub_pass(&mut sa);
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(again, da);
    // Appends go on, and the repaired log reopens clean.
    a.append(payload(2001)).unwrap().wait().unwrap();
    a.close().unwrap();
    let v = verify(&dir.path().join("a")).unwrap();
    assert!(v.is_clean(), "{v:?}");
    assert_eq!(v.last_lsn, Lsn(2001));
}

#[test]
fn damage_in_the_active_segment_is_repaired_by_sealing_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_copies(dir.path(), 300);
    let last_seg_base = {
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.len() == 24 && n.ends_with(".seg"))
            .collect();
        names.sort();
        Lsn(names.last().unwrap()[..20].parse().unwrap())
    };
    let victim = Lsn(last_seg_base.get() + 5);
    let (path, offset) = locate(&dir.path().join("a"), victim);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offset + 33] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let mut s = a.scrubber(SCRUB);
    let (found, _, _) = scrub_pass(&mut s);
    assert_eq!(
        found.iter().map(|c| c.lsn).collect::<Vec<_>>(),
        vec![victim]
    );
    a.seal_active().unwrap();
    let d = a.damaged_segments().pop().unwrap();
    assert_eq!((d.first, d.last), (last_seg_base, Lsn(300)));
    let mut records = Vec::new();
    for rec in b.read_from(d.first).unwrap() {
        let rec = rec.unwrap();
        logship_engine::record::encode_into(&mut records, rec.lsn, rec.epoch, &rec.payload);
    }
    a.repair_segment(d.first, &[Bytes::from(records)]).unwrap();
    a.append(payload(301)).unwrap().wait().unwrap();
    assert_eq!(
        a.read_from(Lsn(1)).unwrap().filter(|r| r.is_ok()).count(),
        301
    );
}

/// The segment file holding `lsn` and the record's offset in it.
fn locate(dir: &Path, lsn: Lsn) -> (std::path::PathBuf, usize) {
    use logship_engine::record::{decode_frame, Frame};
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 24 && n.ends_with(".seg"))
        .collect();
    names.sort();
    let name = names
        .iter()
        .rev()
        .find(|n| n[..20].parse::<u64>().unwrap() <= lsn.get())
        .unwrap();
    let path = dir.join(name);
    let bytes = std::fs::read(&path).unwrap();
    let mut off = 64;
    loop {
        match decode_frame(&bytes[off..]).unwrap() {
            Frame::Record(r) if r.header.lsn == lsn => return (path, off),
            f => off += f.encoded_len(),
        }
    }
}
