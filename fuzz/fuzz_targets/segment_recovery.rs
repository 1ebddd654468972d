//! Fuzz target: opening a log whose segment holds fuzzed bytes, then reading, verifying,
//! appending and reopening (see `logship_engine::fuzzing::segment_recovery`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| logship_engine::fuzzing::segment_recovery(data));
