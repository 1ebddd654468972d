//! Replays the fuzz corpus and the saved regressions through the fuzzing harnesses, plus inputs
//! generated here from fixed seeds, so that CI checks what the fuzzer learned without running it.
//!
//! The corpus lives in `fuzz/corpus/<target>/` and crashing inputs in
//! `fuzz/regressions/<target>/` (see `fuzz/README.md`). An empty or missing corpus fails: a lost
//! corpus must not pass silently.
//!
//! Run: `cargo test --release -p logship-engine --test fuzz_corpus`.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use logship_engine::fuzzing;
use logship_engine::record::encode_into;
use logship_engine::{Epoch, Lsn};

/// A harness: one fuzz target.
type Harness = fn(&[u8]);

/// The fuzz targets, by the directory name of their corpus.
const TARGETS: [(&str, Harness); 2] = [
    ("record_decode", fuzzing::record_decode),
    ("segment_recovery", fuzzing::segment_recovery),
];

/// Inputs generated per target.
const GENERATED_INPUTS: u64 = 100;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn harness(target: &str) -> Harness {
    TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, h)| h)
        .unwrap_or_else(|| panic!("no harness for fuzz target {target:?}"))
}

/// Files of a directory, sorted; none when it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
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

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-string panic".into())
}

/// Runs every input through `harness`; fails naming every input that panicked.
fn run_all(harness: Harness, inputs: impl IntoIterator<Item = (String, Vec<u8>)>) -> usize {
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

fn read_inputs(files: &[PathBuf]) -> Vec<(String, Vec<u8>)> {
    files
        .iter()
        .map(|p| {
            let data = fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            (p.display().to_string(), data)
        })
        .collect()
}

fn replay_corpus(target: &str) {
    let dir = fuzz_dir().join("corpus").join(target);
    let files = files_in(&dir);
    assert!(
        !files.is_empty(),
        "the fuzz corpus {} is empty or missing; rebuild it as fuzz/README.md says",
        dir.display()
    );
    run_all(harness(target), read_inputs(&files));
}

#[test]
fn corpus_record_decode() {
    replay_corpus("record_decode");
}

#[test]
fn corpus_segment_recovery() {
    replay_corpus("segment_recovery");
}

/// Every input that once crashed a target still passes it.
#[test]
fn regressions() {
    let Ok(dirs) = fs::read_dir(fuzz_dir().join("regressions")) else {
        return;
    };
    for dir in dirs {
        let dir = dir.expect("directory entry").path();
        if !dir.is_dir() {
            continue;
        }
        let target = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 target name")
            .to_string();
        if !TARGETS.iter().any(|(name, _)| *name == target) {
            // Another crate's target (the replicator replays its own).
            continue;
        }
        let inputs = read_inputs(&files_in(&dir));
        let outcome = panic::catch_unwind(|| run_all(harness(&target), inputs));
        if let Err(p) = outcome {
            panic!(
                "fuzz regressions of {target} fail; each file is named for the bug it guards \
                 (fix the engine, not the input): {}",
                panic_message(&*p)
            );
        }
    }
}

/// xorshift64: a fixed seed gives the same inputs on every machine.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Random bytes, fewer than `max_len` of them.
    fn bytes_below(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.below(max_len);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Valid records, sometimes with a flipped bit, truncated or followed by random bytes.
fn record_input(rng: &mut XorShift) -> Vec<u8> {
    let mut data = Vec::new();
    if rng.below(4) == 0 {
        return rng.bytes_below(200);
    }
    for _ in 0..=rng.below(5) {
        let payload = rng.bytes_below(300);
        let lsn = Lsn(rng.next().max(1));
        encode_into(&mut data, lsn, Epoch(rng.next()), &payload);
    }
    match rng.below(4) {
        0 => {
            let bit = rng.below(data.len() as u64 * 8) as usize;
            data[bit / 8] ^= 1 << (bit % 8);
        }
        1 => data.truncate(rng.below(data.len() as u64) as usize),
        2 => {
            let tail = rng.bytes_below(64);
            data.extend_from_slice(&tail);
        }
        _ => {}
    }
    data
}

/// A shape selector byte then random bytes: every shape, window and mutation is reached.
fn segment_input(rng: &mut XorShift, i: u64) -> Vec<u8> {
    let mut data = vec![i as u8];
    let max_len = [64, 1024, 8192][rng.below(3) as usize];
    data.extend_from_slice(&rng.bytes_below(max_len));
    data
}

#[test]
fn generated_inputs_record_decode() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let inputs = (0..GENERATED_INPUTS).map(|i| (format!("generated #{i}"), record_input(&mut rng)));
    assert_eq!(
        run_all(fuzzing::record_decode, inputs),
        GENERATED_INPUTS as usize
    );
}

#[test]
fn generated_inputs_segment_recovery() {
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let inputs = (0..GENERATED_INPUTS).map(|i| {
        let data = segment_input(&mut rng, i);
        (format!("generated #{i}"), data)
    });
    assert_eq!(
        run_all(fuzzing::segment_recovery, inputs),
        GENERATED_INPUTS as usize
    );
}
