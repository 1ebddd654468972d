//! Fuzz target: the record codec on arbitrary bytes (see `logship_engine::fuzzing::record_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| logship_engine::fuzzing::record_decode(data));
