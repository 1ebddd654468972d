//! Fuzz target: a follower and a primary driven by fuzzed frames, then an honest session (see
//! `logship_replicator::fuzzing::handshake`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| logship_replicator::fuzzing::handshake(data));
