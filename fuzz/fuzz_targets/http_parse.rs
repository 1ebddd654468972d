//! Fuzz target: the HTTP server's request parsing and dispatch, and the client's response
//! parsing, on arbitrary bytes (see `logship_replicator::fuzzing::http_parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| logship_replicator::fuzzing::http_parse(data));
