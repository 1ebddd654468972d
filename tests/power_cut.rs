//! Power cuts on real file systems: `logship append` runs on ext4 (and xfs) on a loop device;
//! after a random 20–300 ms of acknowledged appends, or just around a segment rollover, the file
//! system is shut down without flushing (`xfs_io -x -c shutdown`), which drops everything not yet
//! durable as a power cut would. After a remount every acknowledged record must be there with
//! its payload, LSNs dense from 1, and the log must verify clean. The next run appends to the
//! same log.
//!
//! Needs root, `losetup`, `mkfs.ext4` and `xfs_io`; otherwise prints `SKIPPED power_cut: ...`.
//! `LOGSHIP_TEST_BACKEND` pins the child's `--backend` (default: io_uring, portable or
//! io_uring_direct, picked at random for each cut).
//! `LOGSHIP_POWER_CUT_ITERATIONS` sets the ext4 iterations (default 30; xfs runs a third as
//! many, at least 3); `LOGSHIP_SEED` replays a run.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::mount::LoopFs;
use common::{
    check_after_crash, check_options, expected_payloads, iterations, predicted_rollovers,
    AppendChild, Outcome, Rng,
};

const SEGMENT_SIZE_BYTES: u64 = 1 << 20;
/// The `--backend` values the children run with, one picked at random for each cut.
const BACKENDS: [&str; 3] = ["io_uring", "portable", "io_uring_direct"];
const MAX_RECORDS_PER_CHILD: u64 = 20_000;
/// A log that grows past this is replaced by a new one, so the file system never fills.
const MAX_LOG_BYTES: usize = 64 << 20;
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a rollover-timed cut waits for its rollover before cutting anyway.
const ROLLOVER_WAIT: Duration = Duration::from_millis(1500);

fn skip_reason(tools: &[&str]) -> Option<String> {
    if !common::is_root() {
        return Some("needs root".into());
    }
    common::missing_tool(tools).map(|t| format!("{t} not found"))
}

#[test]
fn power_cut_ext4_loses_no_acknowledged_record() {
    if let Some(reason) = skip_reason(&["losetup", "mkfs.ext4", "xfs_io", "mount", "umount"]) {
        println!("SKIPPED power_cut: {reason}");
        return;
    }
    let n = iterations("LOGSHIP_POWER_CUT_ITERATIONS", 30);
    run("ext4", 256 << 20, n);
}

#[test]
fn power_cut_xfs_loses_no_acknowledged_record() {
    if let Some(reason) = skip_reason(&["losetup", "mkfs.xfs", "xfs_io", "mount", "umount"]) {
        println!("SKIPPED power_cut (xfs): {reason}");
        return;
    }
    // mkfs.xfs refuses file systems below 300 MiB.
    let n = (iterations("LOGSHIP_POWER_CUT_ITERATIONS", 30) / 3).max(3);
    run("xfs", 512 << 20, n);
}

fn run(fstype: &'static str, image_bytes: u64, cuts: u64) {
    let seed = Rng::seed_from_env_or_time();
    println!("power_cut {fstype}: seed {seed} (replay with LOGSHIP_SEED={seed}), {cuts} cuts");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut fs = LoopFs::create(
        &tmp.path().join("image"),
        image_bytes,
        fstype,
        &tmp.path().join("mnt"),
    )
    .unwrap_or_else(|e| panic!("setting up {fstype}: {e:#}"));
    let (mut model, mut acked_total, mut create) = (Vec::new(), 0, true);
    let mut dir = fs.mountpoint.join("log-0");
    let started = Instant::now();
    for cut in 0..cuts {
        if model.iter().map(Vec::len).sum::<usize>() > MAX_LOG_BYTES {
            std::fs::remove_dir_all(&dir).expect("remove the full log");
            dir = fs.mountpoint.join(format!("log-{cut}"));
            (model, create) = (Vec::new(), true);
        }
        let at_rollover = cut % 2 == 1;
        let outcome = cut_once(&mut fs, &dir, &model, create, at_rollover, &mut rng)
            .unwrap_or_else(|e| panic!("{fstype} cut #{cut}: {e:#} (seed {seed})"));
        acked_total += outcome.acked.len();
        create = false;
        let before = model.len();
        let evidence = save_evidence(&dir, &tmp.path().join("evidence"));
        let check = check_after_crash(
            &dir,
            &mut model,
            &outcome,
            check_options(SEGMENT_SIZE_BYTES),
        );
        let files = list_dir(&dir);
        if let Err(e) = check {
            let kept = std::env::temp_dir().join(format!("logship-power-cut-{seed}"));
            let _ = std::fs::remove_dir_all(&kept);
            let _ = std::fs::rename(tmp.path().join("evidence"), &kept);
            let _ = evidence;
            eprintln!(
                "kept the raw last segments as found after remount in {}",
                kept.display()
            );
            panic!(
                "{fstype} cut #{cut} (at rollover: {at_rollover}): {e:#} (seed {seed}, {} sent, \
                 {} acked, files {files:?}, stderr {:?})",
                outcome.sent.len(),
                outcome.acked.len(),
                outcome.stderr
            );
        }
        let tail = &files[files.len().saturating_sub(3)..];
        println!(
            "  cut #{cut} ({}): {} sent, {} acked, {} new records survived; last files {tail:?}",
            if at_rollover {
                "at rollover"
            } else {
                "random time"
            },
            outcome.sent.len(),
            outcome.acked.len(),
            model.len() - before,
        );
    }
    println!(
        "power_cut {fstype}: survived {cuts} power cuts, {acked_total} acknowledged records, \
         {} in the log, in {:.1}s (seed {seed})",
        model.len(),
        started.elapsed().as_secs_f64()
    );
}

/// One run: start a child, cut the power, kill the child, remount.
fn cut_once(
    fs: &mut LoopFs,
    dir: &Path,
    model: &[Vec<u8>],
    create: bool,
    at_rollover: bool,
    rng: &mut Rng,
) -> anyhow::Result<Outcome> {
    let child_seed = rng.next_u64();
    let size = SEGMENT_SIZE_BYTES.to_string();
    // Every hot-path backend takes the cuts, picked at random, unless the environment pins one.
    let backend = std::env::var("LOGSHIP_TEST_BACKEND")
        .unwrap_or_else(|_| BACKENDS[rng.range(0, BACKENDS.len() as u64) as usize].into());
    println!("  next cut's child: --backend {backend}");
    let mut args = vec![
        "--segment-size",
        size.as_str(),
        "--backend",
        backend.as_str(),
    ];
    if create {
        args.push("--create");
    }
    let mut child = AppendChild::spawn(dir, &args, child_seed, MAX_RECORDS_PER_CHILD);
    child.wait_for_acks(1, FIRST_ACK_TIMEOUT)?;
    if at_rollover {
        wait_for_rollover(&mut child, dir, model, child_seed, rng);
    } else {
        std::thread::sleep(Duration::from_millis(rng.range(20, 301)));
    }
    // Stop the child first: an fdatasync still running when the file system shuts down can
    // return success for a commit the shutdown then drops (seen on ext4 with plain pwrite +
    // fdatasync too); in a real power cut nobody would see that success.
    child.freeze()?;
    fs.power_cut()?;
    let outcome = child.kill();
    anyhow::ensure!(
        !outcome.stderr.contains("panicked"),
        "logship append panicked: {}",
        outcome.stderr
    );
    fs.unmount()?;
    fs.mount()?;
    Ok(outcome)
}

/// Waits until just before the next rollover (by the acked LSN and the predicted layout) or
/// just after it (a new segment file appeared), alternately; at most `ROLLOVER_WAIT`.
fn wait_for_rollover(
    child: &mut AppendChild,
    dir: &Path,
    model: &[Vec<u8>],
    seed: u64,
    rng: &mut Rng,
) {
    let deadline = Instant::now() + ROLLOVER_WAIT;
    let keep_waiting = |child: &mut AppendChild| Instant::now() < deadline && !child.exited();
    if rng.chance(50) {
        let payloads = expected_payloads(seed, MAX_RECORDS_PER_CHILD);
        let rollovers = predicted_rollovers(dir, model, &payloads, SEGMENT_SIZE_BYTES);
        let target = rollovers
            .first()
            .map_or(u64::MAX, |r| r.saturating_sub(rng.range(0, 40)));
        while child.last_acked().unwrap_or(0) < target && keep_waiting(child) {
            std::thread::sleep(Duration::from_micros(200));
        }
    } else {
        let active = common::segment_bases(dir).last().copied();
        while common::segment_bases(dir).last().copied() == active && keep_waiting(child) {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(rng.range(0, 3000)));
    }
}

/// Copies the last two segment files (as found after the remount, before anything opens
/// them), for a failure to show.
fn save_evidence(dir: &Path, to: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to)?;
    let bases = common::segment_bases(dir);
    for base in &bases[bases.len().saturating_sub(2)..] {
        let name = format!("{base:020}.seg");
        std::fs::copy(dir.join(&name), to.join(&name))?;
    }
    Ok(())
}

/// The directory's entries with their sizes, sorted, for failure messages.
fn list_dir(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| {
                let e = e.ok()?;
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().ok()?.len(),
                ))
            })
            .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}
