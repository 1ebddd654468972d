//! Crash, tear, corruption and model-based tests on the fault-injecting file system.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use logship_engine::io::{Backend, FaultConfig, FaultyVfs};
use logship_engine::segment::segment_name;
use logship_engine::{Error, Log, Lsn, Options, RecoveryMode};
use proptest::prelude::*;

fn opts(vfs: &FaultyVfs) -> Options {
    Options {
        create_if_missing: true,
        segment_size_bytes: 64 << 10,
        max_record_bytes: 4 << 10,
        max_batch_bytes: 8 << 10,
        max_queue_bytes: 64 << 10,
        max_free_segments: 2,
        backend: Backend::Portable,
        vfs: Some(Arc::new(vfs.process())),
        ..Options::default()
    }
}

fn payload(seed: u64, i: u64) -> Bytes {
    let len = ((seed ^ i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize; // 0..1023
    let mut v = format!("{seed}:{i}:").into_bytes();
    v.resize(v.len() + len, (i % 251) as u8);
    Bytes::from(v)
}

fn read_all(log: &Log) -> Vec<(Lsn, Bytes)> {
    log.read_from(Lsn::ZERO)
        .expect("reader")
        .map(|r| r.map(|r| (r.lsn, r.payload)).expect("record"))
        .collect()
}

fn dir() -> PathBuf {
    PathBuf::from("/mem/log")
}

/// Appends from two threads while the "power" is cut at a random moment; after each crash every
/// acknowledged record must be there, byte for byte, with dense LSNs, and the log must reopen.
fn crash_round(seed: u64, torn: bool, reorder: bool) {
    let vfs = FaultyVfs::new(seed);
    let mut expected: Vec<Bytes> = Vec::new();
    for round in 0..6u64 {
        vfs.set_faults(FaultConfig {
            torn_crash: torn,
            reorder_crash: reorder,
            seed: seed ^ round,
            ..FaultConfig::default()
        });
        let log = Arc::new(Log::open(dir(), opts(&vfs)).expect("reopen after crash"));
        let got = read_all(&log);
        assert!(
            got.len() >= expected.len(),
            "seed {seed} round {round}: lost acknowledged records"
        );
        for (i, (lsn, p)) in got.iter().enumerate() {
            assert_eq!(*lsn, Lsn(i as u64 + 1), "seed {seed}: LSNs not dense");
            if i < expected.len() {
                assert_eq!(
                    *p, expected[i],
                    "seed {seed}: acknowledged record {lsn} changed"
                );
            }
        }
        // Records past the acknowledged ones survived too: keep them as the new baseline.
        expected = got.into_iter().map(|(_, p)| p).collect();
        let acked = Arc::new(parking_lot::Mutex::new(Vec::<(Lsn, Bytes)>::new()));
        let workers: Vec<_> = (0..2u64)
            .map(|t| {
                let log = Arc::clone(&log);
                let acked = Arc::clone(&acked);
                std::thread::spawn(move || {
                    for i in 0.. {
                        let p = payload(seed ^ t, round * 100_000 + i);
                        let Ok(a) = log.append(p.clone()) else { return };
                        match a.wait() {
                            Ok(lsn) => acked.lock().push((lsn, p)),
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(5 + (seed + round) % 20));
        vfs.crash();
        for w in workers {
            w.join().expect("worker");
        }
        drop(log);
        let mut acked = acked.lock().clone();
        acked.sort_by_key(|a| a.0);
        for (lsn, p) in acked {
            let i = lsn.get() as usize - 1;
            if i >= expected.len() {
                expected.resize(i + 1, Bytes::new());
            }
            expected[i] = p;
        }
        let last_acked = expected.len();
        // The acknowledged prefix must survive; what follows it may or may not.
        vfs.set_faults(FaultConfig::default());
        let log = Log::open(dir(), opts(&vfs)).expect("reopen after crash");
        let got = read_all(&log);
        assert!(
            got.len() >= last_acked,
            "seed {seed} round {round}: {} records after crash, {last_acked} acknowledged",
            got.len()
        );
        for (i, p) in expected.iter().enumerate() {
            assert_eq!(
                &got[i].1,
                p,
                "seed {seed} round {round}: record {} differs",
                i + 1
            );
        }
        expected = got.into_iter().map(|(_, p)| p).collect();
        drop(log);
    }
}

#[test]
fn crashes_keep_every_acknowledged_record() {
    for seed in 0..12 {
        crash_round(seed, false, false);
    }
}

#[test]
fn torn_crashes_keep_every_acknowledged_record() {
    for seed in 100..112 {
        crash_round(seed, true, false);
    }
}

#[test]
fn reordered_sector_crashes_keep_every_acknowledged_record() {
    for seed in 200..212 {
        crash_round(seed, false, true);
    }
}

fn fill(vfs: &FaultyVfs, n: u64) -> Log {
    let log = Log::open(dir(), opts(vfs)).unwrap();
    for i in 1..=n {
        let _ = log.append(payload(1, i)).unwrap();
    }
    log.sync().unwrap();
    log
}

fn seg_path(base: u64) -> PathBuf {
    dir().join(segment_name(Lsn(base)))
}

#[test]
fn corruption_in_the_middle_of_the_last_segment_is_refused_with_its_location() {
    let vfs = FaultyVfs::new(1);
    let log = fill(&vfs, 40);
    log.close().unwrap();
    vfs.corrupt(seg_path(1), 200, 0x10);
    match Log::open(dir(), opts(&vfs)) {
        Err(Error::Corruption {
            segment,
            offset,
            lsn,
            ..
        }) => {
            assert_eq!(segment, seg_path(1));
            assert!(offset <= 200, "offset {offset}");
            assert!(lsn.get() >= 1 && lsn.get() <= 3, "lsn {lsn}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let v = logship_engine::verify_with(&vfs, &dir()).unwrap();
    assert_eq!(v.corruptions.len(), 1, "{v:?}");
    // Salvage mode keeps what precedes the damage and reports the cut.
    let salvage = Options {
        recovery: RecoveryMode::TruncateAtCorruption,
        ..opts(&vfs)
    };
    let log = Log::open(dir(), salvage).unwrap();
    let cut = log
        .recovery_report()
        .corruption_cut
        .clone()
        .expect("reported");
    assert_eq!(log.last_lsn(), cut.lsn.prev());
    assert_eq!(read_all(&log).len() as u64, cut.lsn.get() - 1);
}

#[test]
fn corruption_in_a_sealed_segment_is_found_by_full_scan_and_by_readers() {
    let vfs = FaultyVfs::new(2);
    let log = fill(&vfs, 400);
    assert!(log.stats().rollovers >= 2);
    log.close().unwrap();
    vfs.corrupt(seg_path(1), 5000, 0x01);
    let full = Options {
        full_scan_on_open: true,
        ..opts(&vfs)
    };
    assert!(matches!(
        Log::open(dir(), full),
        Err(Error::Corruption { .. })
    ));
    let log = Log::open(dir(), opts(&vfs)).unwrap();
    let err = log
        .read_from(Lsn::ZERO)
        .unwrap()
        .find_map(|r| r.err())
        .expect("the reader reports the damaged record");
    assert!(matches!(err, Error::Corruption { .. }), "{err:?}");
}

#[test]
fn torn_final_write_is_cut_and_reported() {
    let vfs = FaultyVfs::new(3);
    let log = fill(&vfs, 30);
    // A write that tears (half lands, then EIO) poisons; after a crash the half record is cut.
    vfs.set_faults(FaultConfig {
        short_write_once: true,
        ..FaultConfig::default()
    });
    let r = log.append(payload(1, 31)).unwrap().wait();
    assert!(matches!(r, Err(Error::Poisoned { .. })), "{r:?}");
    drop(log);
    vfs.set_faults(FaultConfig {
        torn_crash: true,
        ..FaultConfig::default()
    });
    // Make the half-written record durable so recovery must deal with it.
    let half = vfs.durable_len(seg_path(1));
    assert!(half.is_some());
    vfs.crash();
    let log = Log::open(dir(), opts(&vfs)).unwrap();
    assert_eq!(log.last_lsn(), Lsn(30));
    assert_eq!(log.append(payload(1, 31)).unwrap().wait().unwrap(), Lsn(31));
}

/// A lone write into fallocated blocks carries zeros ahead of the record. A write that tears
/// (half of it lands, then EIO) has put the whole record and its marker down, and a crash keeps
/// a random prefix of it: recovery opens whatever the prefix, with the record whole or without
/// it, never refusing zeros after a marker as damage; and with most prefixes it is whole.
#[test]
fn a_write_torn_in_its_zeros_ahead_keeps_its_record_or_nothing() {
    let record = Bytes::from_static(b"the first record");
    let mut kept = 0;
    for seed in 0..8 {
        let vfs = FaultyVfs::new(100 + seed);
        let options = || Options {
            // The first segment is fallocated, not zero-filled.
            prezero_segments: false,
            ..opts(&vfs)
        };
        let log = Log::open(dir(), options()).unwrap();
        vfs.set_faults(FaultConfig {
            short_write_once: true,
            ..FaultConfig::default()
        });
        let r = log.append(record.clone()).unwrap().wait();
        assert!(matches!(r, Err(Error::Poisoned { .. })), "{r:?}");
        let zeroed = log.stats().zeroed_ahead_bytes;
        assert!(zeroed > 1024, "the write carried zeros ahead: {zeroed}");
        drop(log);
        vfs.set_faults(FaultConfig {
            torn_crash: true,
            seed,
            ..FaultConfig::default()
        });
        vfs.crash();
        let log = Log::open(dir(), options()).unwrap();
        let all = read_all(&log);
        assert!(
            all.is_empty() || all == vec![(Lsn(1), record.clone())],
            "{all:?}"
        );
        kept += all.len();
        let next = Lsn(all.len() as u64 + 1);
        assert_eq!(log.append(payload(1, 2)).unwrap().wait().unwrap(), next);
    }
    assert!(kept >= 4, "the record survived {kept} of 8 crashes");
}

#[test]
fn garbage_after_the_last_record_is_a_torn_tail_not_corruption() {
    let vfs = FaultyVfs::new(4);
    let log = fill(&vfs, 10);
    let end = log.stats().bytes + 64;
    log.close().unwrap();
    for i in 0..20 {
        vfs.corrupt(seg_path(1), end + i, 0xA5);
    }
    let log = Log::open(dir(), opts(&vfs)).unwrap();
    let torn = log
        .recovery_report()
        .torn_tail
        .clone()
        .expect("torn tail reported");
    assert_eq!(torn.lsn, Lsn(11));
    assert_eq!(torn.offset, end);
    assert!(torn.bytes_zeroed > 0);
    assert_eq!(log.last_lsn(), Lsn(10));
    drop(log);
    let again = Log::open(dir(), opts(&vfs)).unwrap();
    assert!(
        again.recovery_report().torn_tail.is_none(),
        "the cut is durable"
    );
}

#[test]
fn enospc_poisons_without_acknowledging() {
    let vfs = FaultyVfs::new(5);
    let log = fill(&vfs, 5);
    vfs.set_faults(FaultConfig {
        enospc_after_bytes: Some(0),
        ..FaultConfig::default()
    });
    let mut failures = 0;
    for i in 0..200 {
        match log.append(payload(5, i)).and_then(|a| a.wait()) {
            Ok(_) => {}
            Err(Error::Poisoned { .. }) => failures += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(failures > 0);
    assert!(matches!(
        log.append(payload(5, 999)),
        Err(Error::Poisoned { .. })
    ));
}

#[test]
fn foreign_and_missing_directories_are_refused_untouched() {
    let vfs = FaultyVfs::new(6);
    let no_create = Options {
        create_if_missing: false,
        ..opts(&vfs)
    };
    assert!(matches!(
        Log::open(dir(), no_create.clone()),
        Err(Error::NotALog { .. })
    ));
    use logship_engine::io::{OpenMode, Vfs};
    vfs.create_dir_all(Path::new("/mem/other")).unwrap();
    let f = vfs
        .open(Path::new("/mem/other/notes.txt"), OpenMode::CreateNew)
        .unwrap();
    f.write_all_at(b"mine", 0).unwrap();
    let err = Log::open("/mem/other", opts(&vfs)).unwrap_err();
    assert!(matches!(err, Error::NotALog { .. }), "{err:?}");
    assert_eq!(
        vfs.list_dir(Path::new("/mem/other")).unwrap(),
        vec!["notes.txt".to_string()]
    );
}

#[derive(Clone, Debug)]
enum Op {
    Append(u8),
    Truncate(u16),
    Purge(u16),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..40).prop_map(Op::Append),
        1 => any::<u16>().prop_map(Op::Truncate),
        1 => any::<u16>().prop_map(Op::Purge),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any sequence of appends, truncations, purges and reopens matches a Vec model.
    #[test]
    fn log_matches_a_vec_model(ops in proptest::collection::vec(op(), 1..40), seed: u64) {
        let vfs = FaultyVfs::new(seed);
        let mut log = Log::open(dir(), opts(&vfs)).unwrap();
        let mut first = 1u64;
        let mut model: Vec<Bytes> = Vec::new(); // model[i] has LSN first + i
        let mut n = 0u64;
        for op in ops {
            match op {
                Op::Append(k) => {
                    for _ in 0..k {
                        n += 1;
                        let p = payload(seed, n);
                        let a = log.append(p.clone()).unwrap();
                        prop_assert_eq!(a.lsn().get(), first + model.len() as u64);
                        model.push(p);
                    }
                    log.sync().unwrap();
                }
                Op::Truncate(x) => {
                    let last = first + model.len() as u64 - 1;
                    let cut = (first - 1) + u64::from(x) % (model.len() as u64 + 1);
                    log.truncate_after(Lsn(cut)).unwrap();
                    model.truncate((cut + 1 - first) as usize);
                    prop_assert_eq!(log.last_lsn(), Lsn(cut));
                    prop_assert!(cut <= last);
                }
                Op::Purge(x) => {
                    let target = first + u64::from(x) % (model.len() as u64 + 1);
                    log.purge_before(Lsn(target)).unwrap();
                    let new_first = log.first_lsn().get();
                    prop_assert!(new_first >= first && new_first <= target.max(first));
                    model.drain(..(new_first - first) as usize);
                    first = new_first;
                }
                Op::Reopen => {
                    log.close().unwrap();
                    log = Log::open(dir(), opts(&vfs)).unwrap();
                }
            }
            let got = read_all(&log);
            prop_assert_eq!(got.len(), model.len());
            for (i, (lsn, p)) in got.iter().enumerate() {
                prop_assert_eq!(lsn.get(), first + i as u64);
                prop_assert_eq!(p, &model[i]);
            }
            prop_assert_eq!(log.first_lsn().get(), first);
        }
    }
}

#[test]
fn an_interrupted_creation_is_refused_then_finished_by_create() {
    use logship_engine::io::{OpenMode, Vfs};
    use logship_engine::segment::{LogMeta, META_FILE};
    let vfs = FaultyVfs::new(8);
    vfs.create_dir_all(&dir()).unwrap();
    let meta = vfs
        .open(&dir().join(META_FILE), OpenMode::CreateNew)
        .unwrap();
    meta.write_all_at(
        &LogMeta {
            format_version: logship_engine::segment::FORMAT_VERSION,
            created_unix_nanos: 1,
        }
        .encode(),
        0,
    )
    .unwrap();
    let no_create = Options {
        create_if_missing: false,
        ..opts(&vfs)
    };
    assert!(matches!(
        Log::open(dir(), no_create),
        Err(Error::Corruption { .. })
    ));
    let log = Log::open(dir(), opts(&vfs)).unwrap();
    assert!(log.recovery_report().created);
    assert_eq!(log.append(payload(8, 1)).unwrap().wait().unwrap(), Lsn(1));
}

/// A failed fdatasync in a write the waiting appender made itself (caller-runs, the writer
/// thread idle) poisons the log as one on the writer thread does: the appender gets
/// `Poisoned`, later appends are refused, nothing more is durable, and the log still closes
/// (the writer thread ends). The writer thread, which the append wakes, may win the race to
/// write; the test repeats until the appender made the failed write (at most 20 tries).
#[test]
fn a_failed_sync_in_an_appenders_own_write_poisons_the_log() {
    for seed in 0..20u64 {
        let vfs = FaultyVfs::new(seed);
        let log = fill(&vfs, 11);
        let before = log.stats();
        vfs.set_faults(FaultConfig {
            fail_sync_after: Some(0),
            ..FaultConfig::default()
        });
        let first = log.append(payload(11, 1000)).and_then(|a| a.wait());
        assert!(matches!(first, Err(Error::Poisoned { .. })), "{first:?}");
        assert!(matches!(
            log.append(payload(11, 1001)),
            Err(Error::Poisoned { .. })
        ));
        assert!(matches!(log.sync(), Err(Error::Poisoned { .. })));
        let after = log.stats();
        assert_eq!(after.records, before.records, "nothing more is durable");
        drop(log);
        if after.caller_writes > before.caller_writes {
            return;
        }
        println!("try {seed}: the writer thread made the write");
    }
    panic!("in 20 tries the appender never made its own write");
}
