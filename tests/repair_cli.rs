//! `logship repair` end to end on real processes and real files: a primary and a sync follower
//! run as `logship node` children (tests/common/cluster.rs) with 64 KiB segments; the stopped
//! follower's log gets a byte flipped in a sealed segment and in the synced part of its last
//! segment, and `logship repair` brings it back from the primary's client port, byte for byte.
//! Cheaper cases on logs written in-process: a clean log exits 0 without contacting anyone, a
//! log open elsewhere and an unreachable remote are one error line each (exit 2).
//!
//! Every wait is bounded; every child is killed by its PID when its owner drops.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/logdir.rs"]
mod logdir;

use logdir::{quarantined, segments};

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cluster::{args, run, wait_until, Cluster, FollowerSpec, Spec, PRIMARY};
use logship::record::{self, Frame, MARKER_BYTES, RECORD_HEADER_BYTES};
use logship::segment::SEGMENT_HEADER_BYTES;
use logship::{Bytes, Client, DurabilityLevel, Log, Lsn, Options, Record, RecoveryMode};

/// Segment size of every log here: small, so that a few thousand records fill several.
const SEGMENT_BYTES: u64 = 64 << 10;
/// Largest record the nodes accept (their default, 4 MiB, does not fit a 64 KiB segment).
const MAX_RECORD_BYTES: usize = 16 << 10;
/// Concurrent clients appending to the primary, and records each.
const WRITERS: usize = 8;
const RECORDS_PER_WRITER: usize = 400;
/// Bound on the cluster settling and on each CLI run.
const BOUND: Duration = Duration::from_secs(20);
/// Nobody listens on port 1.
const NOBODY: &str = "127.0.0.1:1";

/// Prints how long a test took when it ends.
/// One test at a time, timed. Serial because a child process spawned by one test holds a copy
/// of every descriptor of this process until it execs, the lock of a log another test just
/// closed among them: that test's reopen would find the log "in use".
struct Timer {
    name: &'static str,
    start: Instant,
    _serial: MutexGuard<'static, ()>,
}

static SERIAL: Mutex<()> = Mutex::new(());

fn timer(name: &'static str) -> Timer {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Timer {
        name,
        start: Instant::now(),
        _serial,
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        println!("{}: {:.1} s", self.name, self.start.elapsed().as_secs_f64());
    }
}

fn payload(writer: usize, i: usize) -> Bytes {
    let filler = (writer * 131 + i * 37) % 380;
    let mut p = format!("w{writer}-{i:05}-").into_bytes();
    p.resize(p.len() + filler, b'x');
    Bytes::from(p)
}

/// A primary and one sync follower `a`, both with [`SEGMENT_BYTES`] segments, healthy.
fn start_cluster() -> Cluster {
    let mut c = Cluster::new(&Spec::new("ANY 1 (a)", vec![FollowerSpec::sync("a")]));
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    for name in &names {
        c.add_config(
            name,
            &format!("[log]\nsegment_size_bytes = {SEGMENT_BYTES}\nmax_record_bytes = {MAX_RECORD_BYTES}\n"),
        );
    }
    c.start_all();
    c.wait_healthy(BOUND);
    c
}

/// Appends `WRITERS * RECORDS_PER_WRITER` records at `remote_durable` from concurrent clients.
fn load(c: &Cluster) {
    let addr = c.node(PRIMARY).client;
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            s.spawn(move || {
                let mut client = Client::connect(addr, Duration::from_secs(5)).expect("connect");
                client
                    .set_timeout(Duration::from_secs(10))
                    .expect("client timeout");
                for i in 0..RECORDS_PER_WRITER {
                    client
                        .append(payload(w, i), DurabilityLevel::RemoteDurable)
                        .unwrap_or_else(|e| panic!("append {w}/{i}: {e}"));
                }
            });
        }
    });
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

/// Flips one byte in the payload of the middle record of a segment file; returns its LSN.
fn flip_middle_record(path: &Path) -> Lsn {
    let bytes = std::fs::read(path).expect("read segment");
    let mut records = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at < bytes.len() {
        match record::decode_frame(&bytes[at..]) {
            Ok(Frame::Record(r)) => {
                records.push((at, r.header.lsn, r.payload.len()));
                at += r.encoded_len();
            }
            Ok(Frame::Marker(_)) => at += MARKER_BYTES,
            Err(_) => break,
        }
    }
    let (at, lsn, len) = *records
        .get(records.len() / 2)
        .unwrap_or_else(|| panic!("no record in {}", path.display()));
    assert!(len > 0, "record {lsn} has an empty payload");
    let offset = at + RECORD_HEADER_BYTES + len / 2;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open segment");
    file.write_all_at(&[bytes[offset] ^ 0x5a], offset as u64)
        .expect("flip a byte");
    file.sync_all().expect("sync segment");
    lsn
}

/// Every record of the log in `dir`, through the read-only scanner.
fn scan_all(dir: &Path) -> Vec<Record> {
    logship::scan(dir, Lsn::ZERO)
        .expect("scan the log")
        .map(|r| r.expect("a valid record"))
        .collect()
}

fn repair(dir: &Path, from: &str) -> (i32, String, String) {
    let dir = dir.to_string_lossy();
    run(&args(&["repair", &dir, "--from", from]), BOUND)
}

fn verify(dir: &Path) -> (i32, String, String) {
    run(&args(&["verify", &dir.to_string_lossy()]), BOUND)
}

#[test]
fn repair_restores_a_followers_damaged_sealed_segment_and_cut_tail_from_the_primary() {
    let _t = timer("repair_restores_damage_from_the_primary");
    let mut c = start_cluster();
    load(&c);
    let total = (WRITERS * RECORDS_PER_WRITER) as u64;
    wait_until("the follower to hold every record", BOUND, || {
        c.follower_seen("a").durable_lsn >= total
    });
    assert!(
        c.terminate("a").is_some_and(|s| s.success()),
        "the follower did not stop cleanly on SIGTERM"
    );
    let dir = c.node("a").data.clone();
    let segs = segments(&dir);
    assert!(segs.len() >= 3, "only {} segments: {segs:?}", segs.len());
    let sealed = &segs[1];
    let last = segs.last().expect("a last segment");
    let sealed_lsn = flip_middle_record(sealed);
    let tail_lsn = flip_middle_record(last);
    println!(
        "{} segments; flipped LSN {sealed_lsn} in {} and LSN {tail_lsn} in {}",
        segs.len(),
        file_name(sealed),
        file_name(last)
    );
    let (code, stdout, stderr) = verify(&dir);
    assert_eq!(code, 1, "verify before repair: {stdout} {stderr}");
    for seg in [sealed, last] {
        assert!(stdout.contains(&file_name(seg)), "verify: {stdout}");
    }

    let primary = c.node(PRIMARY).client.to_string();
    let started = Instant::now();
    let (code, stdout, stderr) = repair(&dir, &primary);
    println!(
        "repair took {:.2} s:\n{stdout}{stderr}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, 0, "repair: {stdout} {stderr}");
    let line = |tag: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(tag))
            .map(str::to_owned)
    };
    let repaired = line("repaired:").unwrap_or_else(|| panic!("no repaired line: {stdout}"));
    assert!(repaired.contains(&file_name(sealed)), "{repaired}");
    let restored = line("restored:").unwrap_or_else(|| panic!("no restored line: {stdout}"));
    assert!(restored.contains(&file_name(last)), "{restored}");
    assert!(
        restored.contains(&format!("LSN {tail_lsn}..={total}")),
        "{restored}"
    );

    let (code, stdout, stderr) = verify(&dir);
    assert_eq!(code, 0, "verify after repair: {stdout} {stderr}");
    assert_eq!(quarantined(&dir).len(), 2, "{:?}", quarantined(&dir));
    let want = c.records(PRIMARY);
    let got = scan_all(&dir);
    assert_eq!(want.len() as u64, total, "the primary's records");
    assert_eq!(got.len(), want.len(), "records in the repaired follower");
    for (g, w) in got.iter().zip(&want) {
        assert!(
            g.lsn == w.lsn && g.crc == w.crc && g.payload == w.payload,
            "LSN {}: the follower holds {g:?}, the primary {w:?}",
            w.lsn
        );
    }
    // The node takes its repaired log back.
    c.spawn("a");
    c.wait_up("a");
    c.wait_healthy(BOUND);

    refuses_a_diverged_log_and_names_a_range_the_remote_lacks(&primary, total);
}

/// Logs of another history than the primary's: the record before the cut differs (exit 1),
/// or lies past the primary's end (exit 2, naming it).
fn refuses_a_diverged_log_and_names_a_range_the_remote_lacks(primary: &str, total: u64) {
    let other = write_log(2000);
    let last = segments(other.path()).pop().expect("a segment");
    let cut = flip_middle_record(&last);
    assert!(cut.get() <= total, "LSN {cut} is past the primary's end");
    let (code, stdout, stderr) = repair(other.path(), primary);
    println!("diverged:\n{stdout}{stderr}");
    assert_eq!(code, 1, "repair of a diverged log: {stdout} {stderr}");
    let refused = stdout.lines().find(|l| l.starts_with("refused:"));
    let refused = refused.unwrap_or_else(|| panic!("no refused line: {stdout}"));
    assert!(refused.contains("diverged"), "{refused}");

    let longer = write_log(total as usize + 500);
    let last = segments(longer.path()).pop().expect("a segment");
    let cut = flip_middle_record(&last);
    assert!(
        cut.get() > total + 1,
        "LSN {cut} is not past the primary's end"
    );
    let (code, stdout, stderr) = repair(longer.path(), primary);
    println!("past the remote's end:\n{stdout}{stderr}");
    assert_eq!(code, 2, "repair past the remote's end: {stdout} {stderr}");
    let line = error_line(&stderr);
    assert!(line.contains(&format!("LSN {}", cut.get() - 1)), "{line}");
}

/// Options of the in-process logs: small segments, records that fit them.
fn small_log_options() -> Options {
    Options {
        create_if_missing: true,
        segment_size_bytes: SEGMENT_BYTES,
        max_record_bytes: MAX_RECORD_BYTES,
        prezero_segments: false,
        ..Options::default()
    }
}

/// A log of `n` records in a new temporary directory.
fn write_log(n: usize) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("logship-repair-")
        .tempdir()
        .expect("temp dir");
    let log = Log::open(dir.path(), small_log_options()).expect("create log");
    let batch = log
        .append_batch((0..n).map(|i| payload(0, i)))
        .expect("append");
    batch.wait().expect("durable");
    log.close().expect("close");
    dir
}

#[test]
fn repair_of_a_clean_log_exits_0_without_contacting_the_remote() {
    let _t = timer("repair_of_a_clean_log");
    let dir = write_log(100);
    let (code, stdout, stderr) = repair(dir.path(), NOBODY);
    assert_eq!(code, 0, "repair of a clean log: {stdout} {stderr}");
    assert!(stdout.contains("nothing to repair"), "{stdout}");
    assert!(quarantined(dir.path()).is_empty());
}

/// The one `logship: error:` line of `stderr` (the engine's warnings may precede it).
fn error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("logship: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr:?}");
    errors[0]
}

#[test]
fn repair_refuses_a_log_open_elsewhere_and_an_unreachable_remote_in_one_line() {
    let _t = timer("repair_refuses_locked_and_unreachable");
    let dir = write_log(2000);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "only {} segments", segs.len());
    flip_middle_record(&segs[1]);
    let held = Log::open(
        dir.path(),
        Options {
            create_if_missing: false,
            recovery: RecoveryMode::Salvage,
            full_scan_on_open: true,
            ..small_log_options()
        },
    )
    .expect("open the damaged log in salvage mode");
    let (code, stdout, stderr) = repair(dir.path(), NOBODY);
    assert_eq!(code, 2, "repair of a log open elsewhere: {stdout} {stderr}");
    assert!(error_line(&stderr).contains("in use"), "{stderr}");
    drop(held);

    let (code, stdout, stderr) = repair(dir.path(), NOBODY);
    assert_eq!(code, 2, "repair from nobody: {stdout} {stderr}");
    assert!(error_line(&stderr).contains(NOBODY), "{stderr}");
    let (code, stdout, _) = verify(dir.path());
    assert_eq!(code, 1, "the damage stays: {stdout}");
}
