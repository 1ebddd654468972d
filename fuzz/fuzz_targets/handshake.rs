//! Fuzz target: a follower replica and a primary replica driven by fuzzed frames as the node
//! drives them (see `logship_replicator::fuzzing::handshake`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| logship_replicator::fuzzing::handshake(data));
