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

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use logship_engine::{Epoch, Lsn};
use logship_replicator::fuzzing;
use logship_replicator::protocol::msg::PROTOCOL_VERSION;
use logship_replicator::protocol::{ClientStatus, DurabilityLevel, Msg, RejectCode};

/// A harness: one fuzz target.
type Harness = fn(&[u8]);

/// The replicator's fuzz targets, by the directory name of their corpus.
const TARGETS: [(&str, Harness); 2] = [
    ("frame_decode", fuzzing::frame_decode),
    ("handshake", fuzzing::handshake),
];

/// Inputs generated per target.
const GENERATED_INPUTS: u64 = 100;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn harness(target: &str) -> Option<Harness> {
    TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, h)| h)
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
    let h = harness(target).expect("a replicator target");
    run_all(h, read_inputs(&files));
}

#[test]
fn corpus_frame_decode() {
    replay_corpus("frame_decode");
}

#[test]
fn corpus_handshake() {
    replay_corpus("handshake");
}

/// Every input that once crashed one of these targets still passes it.
#[test]
fn regressions() {
    let mut failed = Vec::new();
    for (target, h) in TARGETS {
        let inputs = read_inputs(&files_in(&fuzz_dir().join("regressions").join(target)));
        if let Err(p) = panic::catch_unwind(|| run_all(h, inputs)) {
            failed.push(format!("{target}: {}", panic_message(&*p)));
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz regressions fail; each file is named for the bug it guards (fix the code, not the \
         input):\n{}",
        failed.join("\n")
    );
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
            nonce: [rng.next() as u8; 32],
            cluster_id: "c1".into(),
            node_id: "p1".into(),
        },
        Msg::HelloReply {
            version: PROTOCOL_VERSION,
            last_lsn: lsn,
            last_epoch: Epoch(0),
            last_crc: rng.next() as u32,
            nonce: [rng.next() as u8; 32],
            mac: [rng.next() as u8; 32],
            cluster_id: "c1".into(),
            node_id: "f1".into(),
        },
        Msg::Start {
            mac: [rng.next() as u8; 32],
            truncate_after: (rng.below(2) == 0).then_some(lsn),
            start_lsn: lsn.next(),
            commit_lsn: lsn,
            cut_crc: 0,
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
            id: rng.next(),
            level: DurabilityLevel::ALL[rng.below(4) as usize],
            payload: Bytes::from(rng.bytes_below(64)),
        },
        Msg::AppendResponse {
            id: rng.next(),
            status: ClientStatus::Ok,
            lsn,
            message: String::new(),
        },
        Msg::ReadRequest {
            id: rng.next(),
            from: lsn,
            max_bytes: 4096,
        },
        Msg::ReadResponse {
            id: rng.next(),
            status: ClientStatus::Purged,
            detail: lsn.0,
            message: "gone".into(),
            records: Bytes::new(),
        },
        Msg::StatusRequest { id: rng.next() },
        Msg::StatusResponse {
            id: rng.next(),
            json: "{}".into(),
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
