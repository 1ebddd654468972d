//! Helpers shared by the integration tests: a seeded RNG, a `logship append` child process fed
//! by a generator thread, and the check that compares a reopened log with what was sent and
//! acknowledged.
//!
//! Every child process is killed and reaped by `AppendChild`'s `Drop`, so a failing assertion
//! never leaves one behind.
#![allow(dead_code)] // each test binary uses a different subset

pub mod mount;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context};
use logship::{Log, Lsn, Options};

/// Path of the `logship` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_logship")
}

/// xorshift64*: small, seedable, good enough to pick sizes and delays.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A seed from `LOGSHIP_SEED`, or else from the clock.
    pub fn seed_from_env_or_time() -> u64 {
        if let Ok(s) = std::env::var("LOGSHIP_SEED") {
            return s.parse().expect("LOGSHIP_SEED must be a u64");
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo < hi, "empty range {lo}..{hi}");
        lo + self.next_u64() % (hi - lo)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

/// Iteration count from an environment variable, else `default`.
pub fn iterations(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{var} must be a number")),
        Err(_) => default,
    }
}

/// A payload without newlines: `rec-<tag>-<n>-` then filler, of varied length (mostly short,
/// some kilobytes, a few tens of kilobytes).
pub fn payload(rng: &mut Rng, tag: u64, n: u64) -> Vec<u8> {
    const FILLER: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:";
    let len = match rng.range(0, 100) {
        0..=69 => rng.range(0, 64),
        70..=97 => rng.range(64, 2048),
        _ => rng.range(2048, 40_000),
    } as usize;
    let mut p = format!("rec-{tag}-{n}-").into_bytes();
    let x = rng.next_u64();
    p.extend((0..len).map(|i| FILLER[((x >> (i % 58)) as usize + i) % FILLER.len()]));
    p
}

/// What a finished child sent and acknowledged.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every payload handed to the child's stdin (or about to be), in order.
    pub sent: Vec<Vec<u8>>,
    /// Every LSN the child printed on a complete line, in order.
    pub acked: Vec<u64>,
    /// The child's stderr.
    pub stderr: String,
}

/// A `logship append` child process fed by a generator thread; its acks are collected by a
/// reader thread.
pub struct AppendChild {
    child: Child,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    acked: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

impl AppendChild {
    /// Starts `logship append <dir> <extra...>` and feeds it up to `max_records` payloads.
    pub fn spawn(dir: &Path, extra: &[&str], seed: u64, max_records: u64) -> AppendChild {
        let mut child = Command::new(bin())
            .arg("append")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn logship append");
        let sent = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let generator = {
            let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
            std::thread::spawn(move || generate(stdin, &sent, &stop, seed, max_records))
        };
        let reader = {
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || collect_acks(stdout, &acked))
        };
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr_pipe.read_to_string(&mut s);
            s
        });
        AppendChild {
            child,
            sent,
            acked,
            stop,
            threads: vec![generator, reader],
            stderr: Some(stderr),
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Acks seen so far.
    pub fn acked_count(&self) -> usize {
        self.acked.lock().expect("acks lock").len()
    }

    /// The last LSN acked so far, if any.
    pub fn last_acked(&self) -> Option<u64> {
        self.acked.lock().expect("acks lock").last().copied()
    }

    /// Payloads sent so far.
    pub fn sent_snapshot(&self) -> Vec<Vec<u8>> {
        self.sent.lock().expect("sent lock").clone()
    }

    /// True once the child has exited by itself.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits until at least `n` acks arrived; fails if the child exits or `timeout` passes.
    pub fn wait_for_acks(&mut self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.acked_count() < n {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reap();
                let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
                anyhow::bail!("logship append exited with {status} before {n} acks: {stderr:?}");
            }
            ensure!(Instant::now() < deadline, "no {n} acks within {timeout:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// SIGSTOPs the child and waits until every thread of it has stopped: from then on it
    /// prints no ack, so every ack printed so far came from an fdatasync that returned before
    /// whatever the test does next (a power cut stops everything at the same instant).
    pub fn freeze(&mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        sh("kill", &["-STOP", &pid])?;
        // A thread inside an fdatasync (state D) stops only when the I/O returns, which on a
        // busy machine's loop device can take seconds.
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        loop {
            if all_threads_stopped(&pid) || self.exited() {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "logship append {pid} did not stop within {FREEZE_TIMEOUT:?} (thread states: {})",
                thread_states(&pid)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGKILLs the child (if still running), reaps it, stops the generator and returns what
    /// was sent and acknowledged.
    pub fn kill(mut self) -> Outcome {
        self.reap();
        Outcome {
            sent: std::mem::take(&mut *self.sent.lock().expect("sent lock")),
            acked: std::mem::take(&mut *self.acked.lock().expect("acks lock")),
            stderr: self
                .stderr
                .take()
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default(),
        }
    }

    /// Closes stdin by stopping the generator and waits for the child to exit by itself.
    pub fn finish(
        mut self,
        timeout: Duration,
    ) -> anyhow::Result<(std::process::ExitStatus, Outcome)> {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            ensure!(
                Instant::now() < deadline,
                "logship append did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        Ok((status, self.kill()))
    }

    fn reap(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for AppendChild {
    fn drop(&mut self) {
        self.reap();
    }
}

/// True when every thread of `pid` is stopped (`T`) or gone.
/// Longest a SIGSTOPped child may take until every thread stopped.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(30);

/// Each thread's state letter, for the message of a child that did not stop.
fn thread_states(pid: &str) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "gone".into();
    };
    tasks
        .filter_map(Result::ok)
        .map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            format!(
                "{}:{}",
                t.file_name().to_string_lossy(),
                state.unwrap_or('?')
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn all_threads_stopped(pid: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.filter_map(Result::ok).all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        matches!(state, None | Some(Some('T' | 't' | 'Z' | 'X')))
    })
}

fn generate(
    stdin: std::process::ChildStdin,
    sent: &Mutex<Vec<Vec<u8>>>,
    stop: &AtomicBool,
    seed: u64,
    max_records: u64,
) {
    let mut rng = Rng::new(seed);
    let mut out = std::io::BufWriter::with_capacity(16 * 1024, stdin);
    for n in 0..max_records {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut p = payload(&mut rng, seed, n);
        sent.lock().expect("sent lock").push(p.clone());
        p.push(b'\n');
        if out.write_all(&p).is_err() {
            return;
        }
    }
    let _ = out.flush();
    // Keep stdin open until told to stop, so the child waits for more input instead of
    // finishing: the test decides when it ends.
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn collect_acks(stdout: std::process::ChildStdout, acked: &Mutex<Vec<u64>>) {
    let mut input = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // A line cut short by the kill has no newline: it was never fully printed.
        let Some(text) = line.strip_suffix('\n') else {
            return;
        };
        let lsn: u64 = text
            .parse()
            .unwrap_or_else(|_| panic!("logship append printed {text:?}, not an LSN"));
        acked.lock().expect("acks lock").push(lsn);
    }
}

/// Options for opening a test log in-process without preparing large segments.
pub fn check_options(segment_size_bytes: u64) -> Options {
    Options {
        segment_size_bytes,
        // What `logship append --segment-size` allows.
        max_record_bytes: logship::options::max_record_bytes_fitting(segment_size_bytes) as usize,
        prezero_segments: false,
        ..Options::default()
    }
}

/// Reads every record of the log at `dir` (which must exist), checking LSNs are dense from 1.
pub fn read_all(dir: &Path, options: Options) -> anyhow::Result<Vec<Vec<u8>>> {
    let log = Log::open(dir, options).with_context(|| format!("reopening {}", dir.display()))?;
    ensure!(
        log.first_lsn() == Lsn(1),
        "first LSN is {}, not 1",
        log.first_lsn()
    );
    let mut records = Vec::new();
    for r in log.read_from(Lsn(1))? {
        let r = r?;
        let want = records.len() as u64 + 1;
        ensure!(
            r.lsn == Lsn(want),
            "LSN {} where {want} was expected",
            r.lsn
        );
        records.push(r.payload.to_vec());
    }
    ensure!(
        log.last_lsn() == Lsn(records.len() as u64),
        "last LSN {} but {} records read",
        log.last_lsn(),
        records.len()
    );
    log.close()?;
    Ok(records)
}

/// After a crash of a child that appended `outcome.sent` to a log holding `model`: the log
/// verifies clean (a torn tail allowed), reopens, keeps every earlier record, holds a prefix of
/// what was sent after them, and every acknowledged LSN. Then `model` becomes the log.
pub fn check_after_crash(
    dir: &Path,
    model: &mut Vec<Vec<u8>>,
    outcome: &Outcome,
    options: Options,
) -> anyhow::Result<()> {
    let report = logship::verify(dir).with_context(|| format!("verify {}", dir.display()))?;
    ensure!(
        report.corruptions.is_empty(),
        "verify found corruption: {report:?}"
    );
    let records = read_all(dir, options)?;
    let base = model.len();
    ensure!(
        records.len() >= base,
        "log shrank from {base} to {} records",
        records.len()
    );
    for (i, (got, want)) in records.iter().zip(model.iter()).enumerate() {
        ensure!(got == want, "LSN {} changed after reopen", i + 1);
    }
    let new = &records[base..];
    ensure!(
        new.len() <= outcome.sent.len(),
        "{} new records but only {} sent",
        new.len(),
        outcome.sent.len()
    );
    for (i, got) in new.iter().enumerate() {
        ensure!(
            *got == outcome.sent[i],
            "LSN {} holds a payload other than the one sent",
            base + i + 1
        );
    }
    for (i, &lsn) in outcome.acked.iter().enumerate() {
        let want = (base + i + 1) as u64;
        ensure!(lsn == want, "ack #{i} is LSN {lsn}, expected {want}");
        ensure!(
            lsn as usize <= records.len(),
            "acknowledged LSN {lsn} is missing: the log ends at {}",
            records.len()
        );
    }
    *model = records;
    Ok(())
}

/// Runs `logship` with `args`; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run logship");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// True when running as root.
pub fn is_root() -> bool {
    // Reading our own status avoids an unsafe geteuid call.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// The first of `names` not found on PATH (or in /sbin, /usr/sbin), if any.
pub fn missing_tool(names: &[&str]) -> Option<String> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/sbin", "/usr/sbin", "/usr/local/sbin"].map(PathBuf::from));
    names
        .iter()
        .find(|n| !dirs.iter().any(|d| d.join(n).is_file()))
        .map(|n| (*n).to_string())
}

/// Runs a system command, failing with its stderr if it exits non-zero; returns stdout.
pub fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The payloads a child spawned with `seed` is fed, in order (the generator is deterministic).
pub fn expected_payloads(seed: u64, count: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..count).map(|n| payload(&mut rng, seed, n)).collect()
}

/// Segment header and record header sizes from docs/format.md.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
pub const RECORD_HEADER_BYTES: u64 = 32;

/// Base LSNs of the segment files in `dir`, ascending.
pub fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".seg")?;
                (stem.len() == 20).then(|| stem.parse().ok()).flatten()
            })
            .collect()
        })
        .unwrap_or_default();
    bases.sort_unstable();
    bases
}

/// LSNs at which the writer will start a new segment while appending `next` after `model`, if
/// it fills the last segment in `dir` before rolling over.
pub fn predicted_rollovers(
    dir: &Path,
    model: &[Vec<u8>],
    next: &[Vec<u8>],
    segment_size_bytes: u64,
) -> Vec<u64> {
    let base = segment_bases(dir).last().copied().unwrap_or(1);
    let record = |p: &Vec<u8>| RECORD_HEADER_BYTES + p.len() as u64;
    let start = (base as usize).saturating_sub(1).min(model.len());
    let mut offset = SEGMENT_HEADER_BYTES + model[start..].iter().map(record).sum::<u64>();
    let mut rollovers = Vec::new();
    for (i, p) in next.iter().enumerate() {
        if offset + record(p) > segment_size_bytes {
            rollovers.push((model.len() + i + 1) as u64);
            offset = SEGMENT_HEADER_BYTES;
        }
        offset += record(p);
    }
    rollovers
}
