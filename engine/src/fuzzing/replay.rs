//! Replaying fuzz inputs on stable, for the `fuzz_corpus` tests of every crate that has fuzz
//! targets: the saved corpus (which must not be empty: a lost corpus must not pass silently),
//! the regressions (each file named for the bug it guards), and inputs generated from fixed
//! seeds. A failing replay names every input that panicked.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// A harness: one fuzz target.
pub type Harness = fn(&[u8]);

/// The `fuzz/` directory of the repository, seen from a crate's manifest directory.
pub fn fuzz_dir(manifest_dir: &str) -> PathBuf {
    Path::new(manifest_dir).join("../fuzz")
}

/// Files of a directory, sorted; none when it does not exist.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// A panic's message.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-string panic".into())
}

/// Runs every input through `harness`; fails naming every input that panicked. Returns how
/// many ran.
pub fn run_all(harness: Harness, inputs: impl IntoIterator<Item = (String, Vec<u8>)>) -> usize {
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, data) in inputs {
        count += 1;
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| harness(&data))) {
            failures.push(format!("{name}: {}", panic_message(&*p)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    count
}

/// The files' contents, named by path.
pub fn read_inputs(files: &[PathBuf]) -> Vec<(String, Vec<u8>)> {
    files
        .iter()
        .map(|p| {
            let data = fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            (p.display().to_string(), data)
        })
        .collect()
}

/// Replays `fuzz/corpus/<target>/`, which must hold at least one input.
pub fn replay_corpus(fuzz: &Path, target: &str, harness: Harness) {
    let dir = fuzz.join("corpus").join(target);
    let files = files_in(&dir);
    assert!(
        !files.is_empty(),
        "the fuzz corpus {} is empty or missing; rebuild it as fuzz/README.md says",
        dir.display()
    );
    run_all(harness, read_inputs(&files));
}

/// Replays `fuzz/regressions/<target>/` of each target (missing directories are empty).
pub fn replay_regressions(fuzz: &Path, targets: &[(&str, Harness)]) {
    let mut failed = Vec::new();
    for &(target, h) in targets {
        let inputs = read_inputs(&files_in(&fuzz.join("regressions").join(target)));
        if let Err(p) = panic::catch_unwind(|| run_all(h, inputs)) {
            failed.push(format!("{target}: {}", panic_message(&*p)));
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz regressions fail; each file is named for the bug it guards (fix the code, not the \
         input):\n{}",
        failed.join("\n")
    );
}

/// xorshift64: a fixed seed gives the same generated inputs on every machine.
#[derive(Debug)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next draw.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A draw below `n` (which must not be 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Random bytes, fewer than `max_len` of them.
    pub fn bytes_below(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.below(max_len);
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
