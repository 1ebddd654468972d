//! Replays the fuzz corpus and the saved regressions through the fuzzing harnesses, plus inputs
//! generated here from fixed seeds, so that CI checks what the fuzzer learned without running it.
//!
//! The corpus lives in `fuzz/corpus/<target>/` and crashing inputs in
//! `fuzz/regressions/<target>/` (see `fuzz/README.md`). An empty or missing corpus fails: a lost
//! corpus must not pass silently.
//!
//! Run: `cargo test --release -p logship-engine --test fuzz_corpus`.

use std::path::PathBuf;

use logship_engine::fuzzing::replay::{run_all, Harness, XorShift};
use logship_engine::fuzzing::{self, replay};
use logship_engine::record::encode_into;
use logship_engine::{Epoch, Lsn};

/// The fuzz targets, by the directory name of their corpus.
const TARGETS: [(&str, Harness); 2] = [
    ("record_decode", fuzzing::record_decode),
    ("segment_recovery", fuzzing::segment_recovery),
];

/// Inputs generated per target.
const GENERATED_INPUTS: u64 = 100;

fn fuzz_dir() -> PathBuf {
    replay::fuzz_dir(env!("CARGO_MANIFEST_DIR"))
}

fn harness(target: &str) -> Option<Harness> {
    TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, h)| h)
}

fn replay_corpus(target: &str) {
    let h = harness(target).expect("one of this crate's targets");
    replay::replay_corpus(&fuzz_dir(), target, h);
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
    replay::replay_regressions(&fuzz_dir(), &TARGETS);
}

/// Valid records, sometimes with a flipped bit, truncated or followed by random bytes.
fn record_input(rng: &mut XorShift) -> Vec<u8> {
    let mut data = Vec::new();
    if rng.below(4) == 0 {
        return rng.bytes_below(200);
    }
    for _ in 0..=rng.below(5) {
        let payload = rng.bytes_below(300);
        let lsn = Lsn(rng.next_u64().max(1));
        encode_into(&mut data, lsn, Epoch(rng.next_u64()), &payload);
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
