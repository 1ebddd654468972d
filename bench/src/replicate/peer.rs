//! `--peer postgres`: the PostgreSQL peer (`bench/peers/postgres.sh`: a primary and a
//! synchronous standby on this machine, pgbench one-INSERT transactions of the same record
//! sizes and client counts) run in the same invocation, after the logship cases, so that the
//! report can print each network case beside PostgreSQL's case of the same size and clients.
//!
//! The script is run as `bash <script> [--quick] --json <file>` with `TMPDIR` set to the
//! benchmark's `--dir`, so that PostgreSQL's clusters live on the file system logship was
//! measured on. Its progress (stderr) is passed through; its report (stdout) is kept for the
//! JSON. A peer that cannot run (not root, no apt, a failed case, bad JSON, too slow) is a
//! [`PeerResult`] with `error` set and no cases: it never fails the run.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _};
use serde::{Deserialize, Serialize};

/// The only peer so far.
pub const POSTGRES: &str = "postgresql";
/// Longest the script may run (it installs PostgreSQL with apt-get first) before it is sent
/// SIGTERM (its trap stops both servers and removes its directory).
const PEER_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long the script may take to clean up after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(60);
/// Lines of the script's stderr kept to explain a failure.
const STDERR_TAIL_LINES: usize = 5;
/// How often the script is polled for its end.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One case of the peer, as the script writes it in its JSON array.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerCase {
    /// `postgresql`.
    pub system: String,
    /// The server's version, e.g. `15.14`.
    pub version: String,
    /// Concurrent pgbench clients.
    pub clients: usize,
    /// Payload bytes per row.
    pub record_bytes: usize,
    /// Transactions (one INSERT each) per second, pgbench's figure.
    pub tps: f64,
    /// Transaction latency percentiles, µs (pgbench's per-transaction log).
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
}

impl PeerCase {
    /// `postgresql::insert/size=100,clients=64`, the script's name for the case.
    pub fn name(&self) -> String {
        format!(
            "{}::insert/size={},clients={}",
            self.system, self.record_bytes, self.clients
        )
    }
}

/// What the peer run gave.
#[derive(Clone, Debug, Serialize)]
pub struct PeerResult {
    /// `postgresql`.
    pub system: String,
    /// The command that ran.
    pub command: String,
    /// Wall time of the script, seconds (installing PostgreSQL included).
    pub elapsed_s: f64,
    /// Its cases; empty when it failed.
    pub cases: Vec<PeerCase>,
    /// Why it gave no figures, if it did not.
    pub error: Option<String>,
    /// Its report as printed (version, settings, its raw dd figures).
    pub output: String,
}

impl PeerResult {
    /// The peer's case of `record_bytes` and `clients`, if it ran.
    pub fn find(&self, record_bytes: usize, clients: usize) -> Option<&PeerCase> {
        (self.cases.iter()).find(|c| c.record_bytes == record_bytes && c.clients == clients)
    }

    /// A peer that gave no figures, because of `error`.
    pub fn failed(command: String, elapsed_s: f64, error: String, output: String) -> PeerResult {
        PeerResult {
            system: POSTGRES.into(),
            command,
            elapsed_s,
            cases: Vec::new(),
            error: Some(error),
            output,
        }
    }
}

/// Parses the script's JSON: an array of cases, at least one.
///
/// # Errors
/// When it is not such an array, or a case is not from PostgreSQL or has no transactions.
pub fn parse_cases(json: &str) -> anyhow::Result<Vec<PeerCase>> {
    let cases: Vec<PeerCase> = serde_json::from_str(json).context("the peer's JSON")?;
    ensure!(!cases.is_empty(), "the peer's JSON holds no case");
    for c in &cases {
        ensure!(c.system == POSTGRES, "{}: not a {POSTGRES} case", c.name());
        ensure!(
            c.tps > 0.0,
            "{}: {} transactions per second",
            c.name(),
            c.tps
        );
    }
    Ok(cases)
}

/// The PostgreSQL peer script, next to this crate's sources.
pub fn postgres_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/postgres.sh")
}

/// Runs `script` (`--quick` if `quick`) with its clusters under `tmp_dir`, and reads its JSON
/// (written into `tmp_dir` and removed after). Never fails: a peer that gives no figures says
/// why in [`PeerResult::error`], which is also printed.
pub fn run(script: &Path, quick: bool, tmp_dir: &Path) -> PeerResult {
    let json = tmp_dir.join(format!("peer-{POSTGRES}-{}.json", std::process::id()));
    let mut args = vec![script.display().to_string()];
    if quick {
        args.push("--quick".into());
    }
    args.extend(["--json".into(), json.display().to_string()]);
    let command = format!("bash {}", args.join(" "));
    eprintln!(
        "peer {POSTGRES}: {command} (TMPDIR={}) ...",
        tmp_dir.display()
    );
    let start = Instant::now();
    let ran = run_script(&args, tmp_dir);
    let elapsed_s = start.elapsed().as_secs_f64();
    let (cases, output) = match ran {
        Ok(output) => (read_cases(&json), output),
        Err(e) => (Err(e), String::new()),
    };
    let _ = std::fs::remove_file(&json);
    let result = match cases {
        Ok(cases) => PeerResult {
            system: POSTGRES.into(),
            command,
            elapsed_s,
            cases,
            error: None,
            output,
        },
        Err(e) => PeerResult::failed(command, elapsed_s, format!("{e:#}"), output),
    };
    if let Some(e) = &result.error {
        eprintln!("peer {POSTGRES} gave no figures: {e}");
    }
    result
}

fn read_cases(json: &Path) -> anyhow::Result<Vec<PeerCase>> {
    let text = std::fs::read_to_string(json)
        .with_context(|| format!("reading the peer's JSON {}", json.display()))?;
    parse_cases(&text)
}

/// Runs `bash args...` with `TMPDIR=tmp_dir`, passing its stderr through; returns its stdout.
///
/// # Errors
/// When it cannot start, fails (with the last lines of its stderr), or outlives
/// [`PEER_TIMEOUT`].
fn run_script(args: &[String], tmp_dir: &Path) -> anyhow::Result<String> {
    let mut child = Command::new("bash")
        .args(args)
        .env("TMPDIR", tmp_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting bash")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut text);
        text
    });
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let err = pass_through(stderr, Arc::clone(&tail));
    let status = wait_bounded(&mut child);
    let output = out.join().unwrap_or_default();
    let _ = err.join();
    let status = status?;
    if !status.success() {
        let tail = tail
            .lock()
            .map(|t| Vec::from(t.clone()))
            .unwrap_or_default();
        bail!("the script failed ({status}): {}", tail.join(" / "));
    }
    Ok(output)
}

/// Copies `stderr` to this process's stderr, line by line, keeping the last
/// [`STDERR_TAIL_LINES`] in `tail`.
fn pass_through(
    stderr: std::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            eprintln!("  [{POSTGRES}] {line}");
            if let Ok(mut t) = tail.lock() {
                if t.len() == STDERR_TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    })
}

/// Waits for `child` up to [`PEER_TIMEOUT`]; then sends it SIGTERM (its trap stops the
/// servers), and after [`TERM_GRACE`] kills it.
///
/// # Errors
/// When waiting fails, or it ran out of time.
fn wait_bounded(child: &mut Child) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + PEER_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().context("waiting for the script")? {
            return Ok(status);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let grace = Instant::now() + TERM_GRACE;
    while Instant::now() < grace {
        if child
            .try_wait()
            .context("waiting for the script")?
            .is_some()
        {
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(anyhow!("the script did not finish within {PEER_TIMEOUT:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the script writes (its `JSON_ITEMS`, joined as it joins them).
    const SAMPLE: &str = r#"[
  {"system":"postgresql","version":"15.14","clients":1,"record_bytes":100,"tps":1519,"p50_us":636,"p99_us":1057,"p999_us":2210},
  {"system":"postgresql","version":"15.14","clients":64,"record_bytes":100,"tps":14757,"p50_us":3612,"p99_us":9318,"p999_us":15020},
  {"system":"postgresql","version":"15.14","clients":1,"record_bytes":4096,"tps":1402,"p50_us":676,"p99_us":1348,"p999_us":3001},
  {"system":"postgresql","version":"15.14","clients":64,"record_bytes":4096,"tps":6716,"p50_us":7360,"p99_us":35811,"p999_us":60123}
]
"#;

    #[test]
    fn the_scripts_json_parses_into_its_four_cases() {
        let cases = parse_cases(SAMPLE).unwrap();
        assert_eq!(cases.len(), 4);
        let r = PeerResult {
            system: POSTGRES.into(),
            command: String::new(),
            elapsed_s: 0.0,
            cases,
            error: None,
            output: String::new(),
        };
        let c = r.find(100, 64).unwrap();
        assert_eq!(c.name(), "postgresql::insert/size=100,clients=64");
        assert_eq!((c.tps, c.p50_us, c.p99_us), (14757.0, 3612.0, 9318.0));
        assert_eq!(r.find(4096, 1).unwrap().p50_us, 676.0);
        assert!(r.find(65536, 1).is_none());
    }

    #[test]
    fn bad_json_is_an_error_not_a_panic() {
        assert!(parse_cases("").is_err());
        assert!(parse_cases("[]").is_err());
        // What the script writes if a percentile came out empty.
        assert!(parse_cases(r#"[{"system":"postgresql","version":"15","clients":1,"record_bytes":100,"tps":10,"p50_us":,"p99_us":1,"p999_us":1}]"#).is_err());
        let zero = SAMPLE.replace("\"tps\":1519", "\"tps\":0");
        assert!(parse_cases(&zero).is_err());
    }

    #[test]
    fn a_failing_script_is_a_result_with_its_reason() {
        let dir = crate::scratch::Scratch::create(&std::env::temp_dir()).unwrap();
        let script = dir.path().join("peer.sh");
        std::fs::write(&script, "echo 'this script needs root' >&2\nexit 1\n").unwrap();
        let r = run(&script, true, dir.path());
        assert!(r.cases.is_empty());
        let e = r.error.unwrap();
        assert!(e.contains("this script needs root"), "{e}");
        let missing = run(&dir.path().join("absent.sh"), false, dir.path());
        assert!(missing.error.is_some());
        dir.remove().unwrap();
    }

    #[test]
    fn a_script_that_writes_its_json_gives_its_cases() {
        let dir = crate::scratch::Scratch::create(&std::env::temp_dir()).unwrap();
        let script = dir.path().join("peer.sh");
        let body = format!(
            "[ \"$1\" = --quick ] || exit 9\necho report\ncat > \"$3\" <<'EOF'\n{SAMPLE}EOF\n"
        );
        std::fs::write(&script, body).unwrap();
        let r = run(&script, true, dir.path());
        assert_eq!(r.error, None);
        assert_eq!(r.cases.len(), 4);
        assert_eq!(r.output, "report\n");
        dir.remove().unwrap();
    }
}
