//! Replays the fuzz corpus and the saved regressions through the replicator's fuzzing harnesses,
//! plus inputs generated here from fixed seeds, so that CI checks what the fuzzer learned
//! without running it.
//!
//! The corpus lives in `fuzz/corpus/<target>/` and crashing inputs in
//! `fuzz/regressions/<target>/` (see `fuzz/README.md`). An empty or missing corpus fails: a lost
//! corpus must not pass silently. Regressions of the engine's targets are replayed by
//! `engine/tests/fuzz_corpus.rs`; this test replays only the replicator's.
//!
//! Run: `cargo test --release -p logship-replicator --test fuzz_corpus`.

use std::path::PathBuf;

use bytes::Bytes;
use logship_engine::fuzzing::replay::{self, run_all, Harness, XorShift};
use logship_engine::{Epoch, Lsn};
use logship_replicator::fuzzing;
use logship_replicator::protocol::msg::PROTOCOL_VERSION;
use logship_replicator::protocol::{ClientStatus, DurabilityLevel, Msg, RejectCode};

/// The replicator's fuzz targets, by the directory name of their corpus.
const TARGETS: [(&str, Harness); 4] = [
    ("client_auth", fuzzing::client_auth),
    ("frame_decode", fuzzing::frame_decode),
    ("handshake", fuzzing::handshake),
    ("http_parse", fuzzing::http_parse),
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
fn corpus_frame_decode() {
    replay_corpus("frame_decode");
}

#[test]
fn corpus_handshake() {
    replay_corpus("handshake");
}

#[test]
fn corpus_http_parse() {
    replay_corpus("http_parse");
}

#[test]
fn corpus_client_auth() {
    replay_corpus("client_auth");
}

/// Every input that once crashed one of these targets still passes it.
#[test]
fn regressions() {
    replay::replay_regressions(&fuzz_dir(), &TARGETS);
}

/// One valid message of every kind, with fields from `rng`.
fn sample_messages(rng: &mut XorShift) -> Vec<Msg> {
    let lsn = Lsn(rng.below(1000) + 1);
    let mut all = replication_messages(rng, lsn);
    all.extend(client_messages(rng, lsn));
    all
}

fn replication_messages(rng: &mut XorShift, lsn: Lsn) -> Vec<Msg> {
    let mut record = Vec::new();
    logship_engine::record::encode_into(&mut record, lsn, Epoch(0), &rng.bytes_below(40));
    vec![
        Msg::Hello {
            version_min: 1,
            version_max: PROTOCOL_VERSION,
            epoch: Epoch(rng.below(3)),
            last_lsn: lsn,
            nonce: [rng.next_u64() as u8; 32],
            cluster_id: "c1".into(),
            node_id: "p1".into(),
        },
        Msg::HelloReply {
            version: PROTOCOL_VERSION,
            last_lsn: lsn,
            last_epoch: Epoch(0),
            last_crc: rng.next_u64() as u32,
            nonce: [rng.next_u64() as u8; 32],
            mac: [rng.next_u64() as u8; 32],
            cluster_id: "c1".into(),
            node_id: "f1".into(),
            history: vec![(Epoch(1), Lsn(1))],
        },
        Msg::Start {
            mac: [rng.next_u64() as u8; 32],
            truncate_after: (rng.below(2) == 0).then_some(lsn),
            start_lsn: lsn.next(),
            commit_lsn: lsn,
            cut_crc: 0,
            history: Vec::new(),
        },
        Msg::Reject {
            code: RejectCode::Purged,
            detail: lsn.0,
            message: "purged".into(),
        },
        Msg::Records {
            first: lsn,
            last: lsn,
            commit_lsn: lsn.prev(),
            records: Bytes::from(record),
        },
        Msg::Ack {
            write: lsn,
            durable: lsn.prev(),
            applied: Lsn::ZERO,
        },
        Msg::Heartbeat {
            commit_lsn: lsn.prev(),
            last_lsn: lsn,
        },
    ]
}

fn client_messages(rng: &mut XorShift, lsn: Lsn) -> Vec<Msg> {
    vec![
        Msg::AppendRequest {
            id: rng.next_u64(),
            level: DurabilityLevel::ALL[rng.below(4) as usize],
            payload: Bytes::from(rng.bytes_below(64)),
        },
        Msg::AppendResponse {
            id: rng.next_u64(),
            status: ClientStatus::Ok,
            lsn,
            message: String::new(),
        },
        Msg::ReadRequest {
            id: rng.next_u64(),
            from: lsn,
            max_bytes: 4096,
        },
        Msg::ReadResponse {
            id: rng.next_u64(),
            status: ClientStatus::Purged,
            detail: lsn.0,
            message: "gone".into(),
            records: Bytes::new(),
        },
        Msg::StatusRequest { id: rng.next_u64() },
        Msg::StatusResponse {
            id: rng.next_u64(),
            json: "{}".into(),
        },
        Msg::AppendBatchRequest {
            id: rng.next_u64(),
            level: DurabilityLevel::ALL[rng.below(4) as usize],
            payloads: (0..=rng.below(4))
                .map(|_| Bytes::from(rng.bytes_below(32)))
                .collect(),
        },
        Msg::AppendBatchResponse {
            id: rng.next_u64(),
            status: ClientStatus::Ok,
            first_lsn: lsn,
            last_lsn: Lsn(lsn.0 + rng.below(8)),
            message: String::new(),
        },
    ]
}

/// A few valid frames back to back, sometimes with a flipped bit, cut short or followed by
/// random bytes.
fn frame_input(rng: &mut XorShift) -> Vec<u8> {
    if rng.below(4) == 0 {
        return rng.bytes_below(200);
    }
    let messages = sample_messages(rng);
    let mut data = Vec::new();
    for _ in 0..=rng.below(4) {
        let m = &messages[rng.below(messages.len() as u64) as usize];
        data.extend_from_slice(&m.encode());
    }
    match rng.below(4) {
        0 => {
            let bit = rng.below(data.len() as u64 * 8) as usize;
            data[bit / 8] ^= 1 << (bit % 8);
        }
        1 => data.truncate(rng.below(data.len() as u64) as usize),
        2 => data.extend_from_slice(&rng.bytes_below(64)),
        _ => {}
    }
    data
}

#[test]
fn generated_inputs_frame_decode() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let inputs = (0..GENERATED_INPUTS).map(|i| (format!("generated #{i}"), frame_input(&mut rng)));
    assert_eq!(
        run_all(fuzzing::frame_decode, inputs),
        GENERATED_INPUTS as usize
    );
}

#[test]
fn generated_inputs_handshake() {
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let inputs = (0..GENERATED_INPUTS).map(|i| {
        let max_len = [64, 512, 4096][rng.below(3) as usize];
        (format!("generated #{i}"), rng.bytes_below(max_len))
    });
    assert_eq!(
        run_all(fuzzing::handshake, inputs),
        GENERATED_INPUTS as usize
    );
}

/// A client keys file of one to three lines (names, grants and keys from `rng`, one line in
/// eight malformed), `0xFF`, then a client's hello and proofs.
fn client_auth_input(rng: &mut XorShift) -> Vec<u8> {
    const GRANTS: [&str; 4] = ["append", "read", "append,read", "admin"];
    let names = ["writer", "reader", "ops"];
    let mut file = String::new();
    for _ in 0..=rng.below(3) {
        let name = names[rng.below(3) as usize];
        let grants = GRANTS[rng.below(4) as usize];
        let key: String = (0..32).map(|_| format!("{:x}", rng.below(16))).collect();
        match rng.below(8) {
            0 => file.push_str(&format!("{name} {key}\n")),
            _ => file.push_str(&format!("{name} {grants} {key}\n")),
        }
    }
    let mut data = file.into_bytes();
    data.push(0xFF);
    let mut nonce = [0u8; 32];
    nonce.iter_mut().for_each(|b| *b = rng.below(256) as u8);
    let name = names[rng.below(3) as usize].to_string();
    data.extend_from_slice(&Msg::ClientHello { nonce, name }.encode());
    for _ in 0..=rng.below(2) {
        let mut mac = [0u8; 32];
        mac.iter_mut().for_each(|b| *b = rng.below(256) as u8);
        data.extend_from_slice(&Msg::ClientProof { mac }.encode());
    }
    data
}

#[test]
fn generated_inputs_client_auth() {
    let mut rng = XorShift(0xA076_1D64_78BD_642F);
    let inputs =
        (0..GENERATED_INPUTS).map(|i| (format!("generated #{i}"), client_auth_input(&mut rng)));
    assert_eq!(
        run_all(fuzzing::client_auth, inputs),
        GENERATED_INPUTS as usize
    );
}
