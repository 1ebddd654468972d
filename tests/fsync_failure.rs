//! A failed fdatasync poisons the log: the append whose sync failed and every later append fail,
//! nothing acknowledged is lost, and reopening recovers from what is on disk (the fsyncgate
//! lesson: never retry an fsync, <https://lwn.net/Articles/752063/>).
//!
//! Two setups: the engine's fault-injecting file system (no root needed), and, as root, ext4 on a
//! loop device whose backing file lives on a tiny tmpfs, so that the loop device's writes fail
//! once the backing store runs out: at writeback for the buffered backends, at the write itself
//! for `io_uring_direct`; a log on each of the three backends in turn. The second asserts the
//! poisoning and that the log reopens consistent, not that every acknowledged record survived:
//! on a full loop backing store the kernel itself loses some of the last writes that were
//! acknowledged durable (shown for buffered writes with a plain pwrite + fdatasync loop; the
//! `O_DIRECT` + `O_DSYNC` log loses some too), so only the fault-injecting file system can test
//! that.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mount::{LoopFs, Tmpfs};
use common::Rng;
use logship::io::{Backend, FaultConfig, FaultyVfs};
use logship::{Bytes, Completion, Error, Log, Lsn, Options};

fn payload(rng: &mut Rng, n: u64) -> Bytes {
    let len = rng.range(0, 3000) as usize;
    let mut p = format!("rec-{n}-").into_bytes();
    p.resize(p.len() + len, b'a' + (n % 26) as u8);
    Bytes::from(p)
}

fn faulty_options(vfs: &FaultyVfs) -> Options {
    Options {
        create_if_missing: true,
        segment_size_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
        max_queue_bytes: 1 << 20,
        vfs: Some(Arc::new(vfs.clone())),
        ..Options::default()
    }
}

#[track_caller]
fn assert_poisoned<T: std::fmt::Debug>(r: logship::Result<T>, what: &str) {
    assert!(
        matches!(r, Err(Error::Poisoned { .. })),
        "{what}: expected Poisoned, got {r:?}"
    );
}

/// Acknowledgements seen so far: they must form a prefix of the LSNs, and once one completion
/// fails every later one must fail too.
#[derive(Debug)]
struct Acks {
    last: u64,
    failed: bool,
}

impl Acks {
    fn settle(&mut self, c: Completion) {
        let lsn = c.lsn();
        match c.wait() {
            Ok(l) => {
                assert!(
                    !self.failed,
                    "LSN {l} acknowledged after an earlier one failed"
                );
                assert_eq!(l.get(), self.last + 1, "acks out of order");
                self.last = l.get();
            }
            Err(e) => {
                assert!(matches!(e, Error::Poisoned { .. }), "LSN {lsn}: {e:?}");
                self.failed = true;
            }
        }
    }
}

/// Appends until one fails, up to 50 in flight at once (pipelined) or one at a time; returns the
/// last LSN whose wait returned `Ok`, checking that acks form a prefix continuing from
/// `acked_before` and that every failure is `Poisoned`.
fn append_until_failure(
    log: &Log,
    sent: &mut Vec<Bytes>,
    rng: &mut Rng,
    pipelined: bool,
    acked_before: u64,
) -> u64 {
    let mut acks = Acks {
        last: acked_before,
        failed: false,
    };
    let mut pending: Vec<Completion> = Vec::new();
    for n in 0..400u64 {
        let p = payload(rng, n);
        match log.append(p.clone()) {
            Ok(a) => {
                sent.push(p);
                pending.push(a.into_completion());
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::Poisoned { .. }),
                    "append failed with {e:?}"
                );
                acks.failed = true;
                break;
            }
        }
        if !pipelined || pending.len() >= 50 {
            pending.drain(..).for_each(|c| acks.settle(c));
        }
        if acks.failed {
            break;
        }
    }
    // Records appended before the failure may still complete, in order, up to the failed batch.
    let was_failed = acks.failed;
    acks.failed = false;
    pending.into_iter().for_each(|c| acks.settle(c));
    assert!(was_failed || acks.failed, "no append failed");
    acks.last
}

#[test]
fn failed_fsync_poisons_the_log_and_loses_nothing_acknowledged() {
    let seed = Rng::seed_from_env_or_time();
    println!("fsync_failure (faulty vfs): seed {seed}");
    let mut rng = Rng::new(seed);
    let mut violations = Vec::new();
    for round in 0..24u64 {
        let vfs = FaultyVfs::new(rng.next_u64());
        let dir = PathBuf::from("/faulty/log");
        let log = Log::open(&dir, faulty_options(&vfs)).expect("open on faulty vfs");
        let mut sent = Vec::new();
        for n in 0..rng.range(0, 200) {
            let p = payload(&mut rng, n);
            log.append(p.clone()).unwrap().wait().unwrap();
            sent.push(p);
        }
        let healthy = sent.len() as u64;
        vfs.set_faults(FaultConfig {
            fail_sync_after: Some(rng.range(1, 6)),
            torn_crash: round % 3 == 1,
            reorder_crash: round % 3 == 2,
            seed: rng.next_u64(),
            ..FaultConfig::default()
        });
        let pipelined = round % 2 == 0;
        let acked = append_until_failure(&log, &mut sent, &mut rng, pipelined, healthy);
        if let Some(v) = later_appends_fail(&log) {
            violations.push(format!("round {round}: {v}"));
        }
        assert_poisoned(log.sync(), "sync after poison");
        assert!(log.close().is_err(), "close of a poisoned log succeeded");
        vfs.crash();
        vfs.set_faults(FaultConfig::default());
        check_recovered(&dir, faulty_options(&vfs), &sent, acked).unwrap_or_else(|e| {
            panic!("round {round} (seed {seed}, pipelined {pipelined}): {e:#}")
        });
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

/// After a failure has been reported, every append must fail with `Poisoned`. Returns how that
/// was violated, if it was, after checking the weaker property that keeps data safe: an append
/// accepted anyway never completes `Ok`.
fn later_appends_fail(log: &Log) -> Option<String> {
    let mut violation = None;
    for i in 0..5 {
        match log.append(Bytes::from_static(b"later")) {
            Err(Error::Poisoned { .. }) => {}
            Err(e) => panic!("later append #{i} failed with {e:?}, not Poisoned"),
            Ok(a) => {
                let lsn = a.lsn();
                assert_poisoned(
                    a.wait(),
                    "completion of an append accepted after the failure",
                );
                violation.get_or_insert(format!(
                    "append #{i} after a completion failed with Poisoned was accepted (LSN {lsn}) \
                     instead of returning Poisoned"
                ));
            }
        }
    }
    violation
}

/// Reopens: LSNs dense from 1, every record present is what was sent, and the log holds at least
/// the first `must_hold` records; then appending continues after the recovered end. Returns how
/// many records the log holds.
fn check_recovered(
    dir: &Path,
    options: Options,
    sent: &[Bytes],
    must_hold: u64,
) -> anyhow::Result<u64> {
    let log = Log::open(dir, options)?;
    let mut n = 0u64;
    for r in log.read_from(Lsn::ZERO)? {
        let r = r?;
        n += 1;
        anyhow::ensure!(r.lsn == Lsn(n), "LSN {} where {n} was expected", r.lsn);
        let want = sent.get(n as usize - 1);
        anyhow::ensure!(
            want == Some(&r.payload),
            "LSN {n} holds a payload that was not sent"
        );
    }
    anyhow::ensure!(
        n >= must_hold,
        "acknowledged LSN {must_hold} missing: recovered up to {n}"
    );
    let next = log.append(Bytes::from_static(b"after reopen"))?.wait()?;
    anyhow::ensure!(
        next == Lsn(n + 1),
        "append after reopen got LSN {next}, expected {}",
        n + 1
    );
    log.close()?;
    Ok(n)
}

/// How long the ext4 test appends before giving up waiting for the backing store to fill.
const FILL_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn writeback_failure_on_real_ext4_poisons_the_log() {
    if !common::is_root() {
        println!("SKIPPED fsync_failure (ext4): needs root");
        return;
    }
    if let Some(t) = common::missing_tool(&["losetup", "mkfs.ext4", "e2fsck", "mount"]) {
        println!("SKIPPED fsync_failure (ext4): {t} not found");
        return;
    }
    let seed = Rng::seed_from_env_or_time();
    println!("fsync_failure (ext4): seed {seed}");
    let mut rng = Rng::new(seed);
    for backend in [Backend::Portable, Backend::IoUring, Backend::IoUringDirect] {
        writeback_failure_on_ext4(backend, &mut rng);
    }
}

/// Fills ext4 on a loop device over a tiny tmpfs through a log on `backend` until a write or
/// sync fails; see the test above.
fn writeback_failure_on_ext4(backend: Backend, rng: &mut Rng) {
    let name = backend.name();
    let tmp = tempfile::tempdir().unwrap();
    let backing = Tmpfs::mount(&tmp.path().join("backing"), 24 << 20).expect("mount tmpfs");
    let mut fs = LoopFs::create(
        &backing.path.join("image"),
        64 << 20,
        "ext4",
        &tmp.path().join("mnt"),
    )
    .expect("ext4 on a loop device over tmpfs");
    let dir = fs.mountpoint.join("log");
    let options = Options {
        create_if_missing: true,
        segment_size_bytes: 1 << 20,
        max_record_bytes: 64 << 10,
        backend,
        ..Options::default()
    };
    let log = Log::open(&dir, options.clone()).expect("open log on ext4");
    assert_eq!(log.backend(), name);
    let mut sent = Vec::new();
    let started = Instant::now();
    let acked = append_until_failure_bounded(&log, &mut sent, rng, started);
    println!(
        "ext4, {name}: {acked} records acknowledged before the first failure, {} sent",
        sent.len()
    );
    let violation = later_appends_fail(&log);
    assert!(log.sync().is_err(), "sync after a failure succeeded");
    let _ = log.close();

    // Give the backing store room again and see whether the file system comes back.
    fs.unmount().expect("umount after the failure");
    backing.resize(256 << 20).expect("grow tmpfs");
    let remounted = fs.fsck().and_then(|()| fs.mount());
    match remounted {
        Ok(()) => {
            let options = Options {
                create_if_missing: false,
                ..options
            };
            // Only the log's consistency is asserted here, not that every acknowledged record
            // survived: when a loop device's backing store runs out, the kernel can lose the
            // last writes that fdatasync reported durable. A plain pwrite + fdatasync loop loses
            // its last acknowledged record the same way, so that is not the engine's to fix.
            let report = logship::verify(&dir)
                .unwrap_or_else(|e| panic!("{name}: verify after remount: {e}"));
            assert!(
                report.corruptions.is_empty(),
                "{name}: corruption after remount: {report:?}"
            );
            let held = check_recovered(&dir, options, &sent, 0)
                .unwrap_or_else(|e| panic!("{name}: reopening after remount: {e:#}"));
            println!(
                "ext4, {name}: remounted; the log holds {held} records, {} acknowledged ones \
                 are missing (kernel limitation, see above)",
                acked.saturating_sub(held)
            );
        }
        Err(e) => {
            println!("ext4, {name}: did not remount ({e:#}); checked the poison behaviour only")
        }
    }
    assert!(violation.is_none(), "{name}: {violation:?}");
}

/// Like `append_until_failure` (pipelined), but keeps going for as long as the disk takes to
/// fill, up to `FILL_TIMEOUT`.
fn append_until_failure_bounded(
    log: &Log,
    sent: &mut Vec<Bytes>,
    rng: &mut Rng,
    started: Instant,
) -> u64 {
    let mut acks = Acks {
        last: sent.len() as u64,
        failed: false,
    };
    loop {
        assert!(
            started.elapsed() < FILL_TIMEOUT,
            "no write failed within {FILL_TIMEOUT:?}"
        );
        let mut pending = Vec::new();
        let mut append_failed = false;
        for _ in 0..64 {
            let p = payload(rng, sent.len() as u64);
            match log.append(p.clone()) {
                Ok(a) => {
                    sent.push(p);
                    pending.push(a.into_completion());
                }
                Err(e) => {
                    assert!(
                        matches!(e, Error::Poisoned { .. }),
                        "append failed with {e:?}"
                    );
                    append_failed = true;
                    break;
                }
            }
        }
        pending.into_iter().for_each(|c| acks.settle(c));
        if append_failed || acks.failed {
            return acks.last;
        }
    }
}
