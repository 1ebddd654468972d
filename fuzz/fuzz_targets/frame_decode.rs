//! Fuzz target: the frame decoder and the message codec on arbitrary bytes (see
//! `logship_replicator::fuzzing::frame_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| logship_replicator::fuzzing::frame_decode(data));
