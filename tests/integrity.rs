//! Integrity on real processes: `logship node` children on 127.0.0.1 with small segments and a
//! fast scrubber. A stopped node's files are damaged (a byte flipped in a record a marker proves
//! synced, in a sealed segment, or a record rewritten with a valid CRC), the node restarts, and
//! the cluster must end with every acknowledged record on every node, byte for byte: the damage
//! repaired from a replica (logged, counted, shown in status) or, for records that differ but
//! pass their CRCs, an alarm on both sides.
//!
//! Every wait is bounded; every child is killed by its PID when the cluster drops.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/logdir.rs"]
mod logdir;

use logdir::{quarantined, segments};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cluster::{metric, wait_until, Cluster, FollowerSpec, Spec, PRIMARY};
use logship::record::{self, Frame};
use logship::segment::SEGMENT_HEADER_BYTES;
use logship::{Bytes, Client, DurabilityLevel, Lsn, Record};

const BOUND: Duration = Duration::from_secs(30);
/// Small segments (many sealed ones), a scrubber fast enough to pass over them in well under a
/// second, digests over 128 LSNs.
const CONFIG: &str = "[log]\nsegment_size_bytes = 65536\nmax_record_bytes = 16384\n\n[integrity]\nscrub_bytes_per_sec = 67108864\nscrub_pause_ms = 200\ndigest_range_records = 128\n";
const WRITERS: usize = 4;
const RECORDS_PER_WRITER: usize = 500;

fn start(followers: Vec<FollowerSpec>, quorum: &str) -> Cluster {
    let mut c = Cluster::new(&Spec::new(quorum, followers));
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    for name in &names {
        c.add_config(name, CONFIG);
    }
    c.start_all();
    c.wait_healthy(BOUND);
    c
}

fn payload(w: usize, i: usize) -> Bytes {
    let mut p = format!("w{w}-{i:05}-").into_bytes();
    p.resize(p.len() + (w * 131 + i * 37) % 300, b'a' + (i % 26) as u8);
    Bytes::from(p)
}

/// Appends from concurrent clients at `remote_durable`; returns what was acknowledged.
fn load(c: &Cluster, tag: usize) -> BTreeMap<Lsn, Bytes> {
    let addr = c.node(PRIMARY).client;
    let acked = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let acked = &acked;
            s.spawn(move || {
                let mut client = Client::connect(addr, Duration::from_secs(5)).expect("connect");
                client
                    .set_timeout(Duration::from_secs(10))
                    .expect("timeout");
                for i in 0..RECORDS_PER_WRITER {
                    let p = payload(w + tag * WRITERS, i);
                    let lsn = client
                        .append(p.clone(), DurabilityLevel::RemoteDurable)
                        .unwrap_or_else(|e| panic!("append {w}/{i}: {e}"));
                    acked.lock().expect("lock").insert(lsn, p);
                }
            });
        }
    });
    acked.into_inner().expect("lock")
}

/// Both loads' acknowledgements; an LSN acknowledged twice means a record was lost and its LSN
/// handed out again.
fn merged(mut acked: BTreeMap<Lsn, Bytes>, more: BTreeMap<Lsn, Bytes>) -> BTreeMap<Lsn, Bytes> {
    for (lsn, p) in more {
        if let Some(old) = acked.insert(lsn, p) {
            panic!("LSN {lsn} acknowledged twice: the record {old:?} was lost");
        }
    }
    acked
}

/// Every acknowledged record is on every node, and the nodes hold identical logs.
fn assert_converged(c: &Cluster, acked: &BTreeMap<Lsn, Bytes>, nodes: &[&str]) {
    let primary = c.records(PRIMARY);
    let by_lsn: BTreeMap<Lsn, &Record> = primary.iter().map(|r| (r.lsn, r)).collect();
    for (lsn, p) in acked {
        let r = by_lsn
            .get(lsn)
            .unwrap_or_else(|| panic!("acknowledged LSN {lsn} lost"));
        assert_eq!(&r.payload, p, "LSN {lsn} changed");
    }
    for n in nodes {
        let want_last = primary.last().map_or(Lsn(0), |r| r.lsn);
        wait_until(&format!("{n} at the primary's last LSN"), BOUND, || {
            c.status(n).is_ok_and(|s| s.durable_lsn >= want_last.0)
        });
        let theirs = c.records(n);
        assert_eq!(
            theirs.len(),
            primary.len(),
            "{n} holds another number of records"
        );
        for (a, b) in theirs.iter().zip(&primary) {
            assert_eq!(
                (a.lsn, a.crc, &a.payload),
                (b.lsn, b.crc, &b.payload),
                "{n} differs"
            );
        }
    }
}

/// Records of a segment file: (offset, LSN, length), markers skipped.
fn records_of(path: &Path) -> Vec<(usize, Lsn, usize)> {
    let bytes = std::fs::read(path).expect("read segment");
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER_BYTES;
    while let Ok(f) = record::decode_frame(&bytes[off..]) {
        if let Frame::Record(r) = &f {
            out.push((off, r.header.lsn, f.encoded_len()));
        }
        off += f.encoded_len();
    }
    out
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).expect("write");
}

/// Flips a payload byte of the `nth` record (from the start) of segment `seg` of `node`;
/// returns its LSN.
fn damage_record(c: &Cluster, node: &str, seg: usize, nth: usize) -> Lsn {
    let segs = segments(&c.node(node).data);
    let path = &segs[seg];
    let recs = records_of(path);
    let (off, lsn, _) = recs[nth.min(recs.len() - 1)];
    flip(path, off + 36);
    lsn
}

fn integrity(c: &Cluster, node: &str) -> logship::replication::node::IntegrityStatus {
    c.status(node).expect("status").integrity
}

#[test]
fn a_follower_with_synced_records_damaged_in_its_last_segment_fetches_them_again() {
    let mut c = start(vec![FollowerSpec::sync("a")], "ANY 1 (a)");
    let acked = load(&c, 0);
    c.terminate("a");
    let segs = segments(&c.node("a").data);
    let lsn = damage_record(&c, "a", segs.len() - 1, 3);
    c.spawn("a");
    c.wait_up("a");
    let i = integrity(&c, "a");
    assert_eq!(i.corruptions_found_at_open, 1, "{i:?}");
    assert!(
        i.salvaged_at_open[0].contains(&format!("LSN {lsn}")),
        "{:?}",
        i.salvaged_at_open
    );
    assert_eq!(quarantined(&c.node("a").data).len(), 1);
    let more = load(&c, 1);
    assert_converged(&c, &merged(acked, more), &["a"]);
}

#[test]
fn the_scrubber_finds_rot_in_a_sealed_segment_and_a_replica_repairs_it() {
    let mut c = start(vec![FollowerSpec::sync("a")], "ANY 1 (a)");
    let acked = load(&c, 0);
    for node in ["a", PRIMARY] {
        c.terminate(node);
        let lsn = damage_record(&c, node, 1, 5);
        let started = Instant::now();
        c.spawn(node);
        c.wait_up(node);
        c.wait_healthy(BOUND);
        let took = wait_until(&format!("{node} repairs LSN {lsn}"), BOUND, || {
            integrity(&c, node).repairs >= 1
        });
        let i = integrity(&c, node);
        println!("{node}: LSN {lsn} damaged in a sealed segment, repaired {took:?} after start ({:?} since restart): {:?}", took, started.elapsed());
        assert_eq!(i.corruptions_found_by_scrub, 1, "{i:?}");
        assert!(i.damaged.is_empty(), "{:?}", i.damaged);
        assert_eq!(
            i.recent_repairs.last().map(|r| r.outcome.as_str()),
            Some("repaired")
        );
        let m = c.metrics(node);
        assert_eq!(
            metric(&m, "logship_repairs_total", &[("outcome", "repaired")]),
            Some(1.0),
            "{m}"
        );
        assert_eq!(quarantined(&c.node(node).data).len(), 1);
    }
    assert_converged(&c, &acked, &["a"]);
}

#[test]
fn a_primary_that_lost_acknowledged_records_takes_them_back_from_its_follower() {
    let mut c = start(
        vec![FollowerSpec::sync("a"), FollowerSpec::asynchronous("b")],
        "ANY 1 (a)",
    );
    let acked = load(&c, 0);
    c.terminate(PRIMARY);
    let segs = segments(&c.node(PRIMARY).data);
    let lsn = damage_record(&c, PRIMARY, segs.len() - 1, 2);
    c.spawn(PRIMARY);
    c.wait_up(PRIMARY);
    c.wait_healthy(BOUND);
    let i = integrity(&c, PRIMARY);
    println!(
        "primary: cut at LSN {lsn}, took back {} records",
        i.taken_back_records
    );
    assert!(i.taken_back_records > 0, "{i:?}");
    let more = load(&c, 1);
    assert_converged(&c, &merged(acked, more), &["a", "b"]);
}

#[test]
fn records_that_differ_between_replicas_but_pass_their_crcs_raise_an_alarm() {
    let mut c = start(vec![FollowerSpec::sync("a")], "ANY 1 (a)");
    load(&c, 0);
    c.terminate("a");
    // Rewrite one record of a sealed segment with another payload of the same length and a
    // valid CRC: nothing local can tell; only comparing with the primary can.
    let segs = segments(&c.node("a").data);
    let path = &segs[1];
    let (off, lsn, len) = records_of(path)[4];
    let mut bytes = std::fs::read(path).expect("read");
    let old = record::decode(&bytes[off..off + len]).expect("record");
    let mut forged = Vec::new();
    let other: Vec<u8> = old.payload.iter().map(|b| b.wrapping_add(1)).collect();
    record::encode_into(&mut forged, lsn, old.header.epoch, &other);
    bytes[off..off + len].copy_from_slice(&forged);
    std::fs::write(path, bytes).expect("write");
    c.spawn("a");
    c.wait_up("a");
    for node in ["a", PRIMARY] {
        wait_until(&format!("{node} notices the mismatch"), BOUND, || {
            !integrity(&c, node).recent_mismatches.is_empty()
        });
        let i = integrity(&c, node);
        let m = &i.recent_mismatches[0];
        assert!(
            m.first <= lsn.0 && lsn.0 <= m.last,
            "{m:?} does not hold {lsn}"
        );
        let (code, body) = c.http(node, "/health/ready");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("digest mismatch"), "{body}");
        let metrics = c.metrics(node);
        let total: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("logship_digest_mismatches_total"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        assert!(total >= 1.0, "{metrics}");
    }
}

/// Where the last record of a segment starts, and where its written data ends (`None`: the
/// segment holds no record, only markers: a rollover just happened).
fn last_record_and_end(path: &Path) -> Option<(usize, usize)> {
    let bytes = std::fs::read(path).expect("read segment");
    let (mut off, mut last) = (SEGMENT_HEADER_BYTES, None);
    while let Ok(f) = record::decode_frame(&bytes[off..]) {
        if matches!(f, record::Frame::Record(_)) {
            last = Some(off);
        }
        off += f.encoded_len();
    }
    last.map(|l| (l, off))
}

/// Zeroes the 4 KiB blocks from the one that holds the primary's last record to the end of the
/// written data of its segment: the last writes and every marker after them that proved them
/// (the log's end alone may hold nothing but markers, whose loss loses no record).
fn lose_last_block(c: &Cluster) {
    let (path, (last, end)) = (segments(&c.node(PRIMARY).data).into_iter().rev())
        .find_map(|p| last_record_and_end(&p).map(|r| (p, r)))
        .expect("a segment with a record");
    let from = (last / 4096 * 4096).max(SEGMENT_HEADER_BYTES);
    let mut bytes = std::fs::read(&path).expect("read");
    let to = (end.div_ceil(4096) * 4096).min(bytes.len());
    bytes[from..to].fill(0);
    std::fs::write(&path, bytes).expect("write");
}

#[test]
fn a_primary_that_crashed_and_lost_its_last_block_takes_back_what_its_followers_hold() {
    // Two faults at once: a crash (no durable floor) and the loss of the block holding the last
    // writes and the markers that proved them. Nothing local can tell; the followers can.
    for clean_stop_then_floor_lost in [false, true] {
        let mut c = start(
            vec![FollowerSpec::sync("a"), FollowerSpec::asynchronous("b")],
            "ANY 1 (a)",
        );
        let acked = load(&c, 0);
        if clean_stop_then_floor_lost {
            c.terminate(PRIMARY);
            std::fs::write(c.node(PRIMARY).data.join("logship.durable"), [0u8; 32]).expect("floor");
        } else {
            c.kill(PRIMARY);
        }
        lose_last_block(&c);
        c.spawn(PRIMARY);
        c.wait_up(PRIMARY);
        c.wait_healthy(BOUND);
        let i = integrity(&c, PRIMARY);
        println!(
            "floor lost: {clean_stop_then_floor_lost}; took back {} records",
            i.taken_back_records
        );
        assert!(i.taken_back_records > 0, "{i:?}");
        let more = load(&c, 1);
        assert_converged(&c, &merged(acked, more), &["a", "b"]);
    }
}

#[test]
fn a_closed_start_gate_survives_a_clean_restart_until_the_records_are_taken_back() {
    let mut c = start(vec![FollowerSpec::sync("a")], "ANY 1 (a)");
    let acked = load(&c, 0);
    c.terminate("a");
    c.terminate(PRIMARY);
    let segs = segments(&c.node(PRIMARY).data);
    damage_record(&c, PRIMARY, segs.len() - 1, 2);
    // The primary cut its log before the damage and waits for `a`, which is down.
    c.spawn(PRIMARY);
    c.wait_up(PRIMARY);
    assert!(!c.primary_status().serving);
    // A clean restart in between: the log now closes cleanly at the cut, but the primary must
    // remember that it still owes the take-back.
    c.terminate(PRIMARY);
    c.spawn(PRIMARY);
    c.wait_up(PRIMARY);
    assert!(
        !c.primary_status().serving,
        "the gate was forgotten across a clean restart"
    );
    c.spawn("a");
    c.wait_up("a");
    c.wait_healthy(BOUND);
    wait_until("the primary serves", BOUND, || c.primary_status().serving);
    assert!(integrity(&c, PRIMARY).taken_back_records > 0);
    let more = load(&c, 1);
    assert_converged(&c, &merged(acked, more), &["a"]);
}
