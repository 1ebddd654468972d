//! Fuzz target: the client keys file parsers and the node's check of client proofs (see
//! `logship_replicator::fuzzing::client_auth`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| logship_replicator::fuzzing::client_auth(data));
