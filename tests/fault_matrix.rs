//! The on-disk fault matrix on real processes, after CORDS (Ganesan et al., "Redundancy Does Not
//! Imply Fault Tolerance: Analysis of Distributed Storage Reactions to Single Errors and
//! Corruptions", FAST'17): one cluster shape (`p` primary, `a` sync follower, `b` async follower,
//! quorum `ANY 1 (a)`), and for every node role x file kind x damage, one cell on its own
//! cluster of `logship node` children on 127.0.0.1 (45 cells, one at a time):
//!
//! 1. load at `remote_durable` from concurrent clients, remembering what was acknowledged;
//! 2. SIGTERM the target node, damage one file of it, and, for a follower, keep loading while
//!    it is down (with `a` down, `ANY 1 (a)` refuses every append with `quorum_unavailable`);
//! 3. restart it and keep loading;
//! 4. check the end state: no acknowledged record lost (each on the primary with its payload),
//!    every node that is up holds exactly the primary's records (LSN, CRC, payload), no node
//!    panicked, and the outcome is the cell's expected one, either an automatic repair the node
//!    logged (a warning naming the file), counts (`IntegrityStatus`) and set bytes aside for
//!    (a `quarantine-*.seg` file), or a fail-stop: the node exits non-zero with exactly one
//!    `logship: error:` line that names the file (for a record also its offset and LSN), and
//!    the rest of the cluster holds every acknowledged record (and commits, unless the stopped
//!    node is `a`).
//!
//! File kinds: the header of a sealed segment (the second segment file), the header of the last
//! segment, a record in the middle of a sealed segment, a durable record of the last segment (the
//! latest record, not one of the last two, that a later write marker proves synced), and
//! `logship.meta`. Damage: `flip` flips bit 2 of one byte (a header's `base_lsn`, a record's
//! fifth payload byte, the meta file's `created_unix_nanos`: bytes only a CRC guards); `zero`
//! zeroes the aligned 4 KiB block holding the target; `garbage` writes 4 KiB of deterministic
//! pseudo-random bytes there (seeded by the cell name); for the 32-byte `logship.meta` both
//! overwrite the whole file.
//!
//! Expected: damage to a segment is repaired (a sealed segment is marked damaged at open or found
//! by the scrubber, then fetched from a replica; the last segment is quarantined and cut at open,
//! then refetched from the primary or, on the primary, taken back from `a`); a damaged
//! `logship.meta` stops the node (without it the node cannot know the directory is its log).
//! SIGTERM is a clean close, which writes the durable floor (`logship.durable`): a zeroed block
//! that wipes the last records and the write markers that proved them is still caught, by the
//! floor. Not in the matrix: a flip in a segment header's version field (bytes 8..12) is refused
//! as an unsupported version before the CRC is checked, which stops the node.
//!
//! Cells are named `<node>.<file kind>.<damage>`, e.g. `a.last_record.zero`. Each prints one
//! table line when it ends; the test then prints the whole table (markdown) and fails, naming
//! them, if any cell failed. Cells run on to the end after one fails; a failed cell prints the
//! tail of each node's log.
//!
//! Run (about 80 s on 2 cores): `cargo test --release -p logship --test fault_matrix --
//! --nocapture`. One cell or a few: `FAULT_MATRIX_CELLS=a.last_record.zero,p.meta` (names or
//! prefixes); `FAULT_MATRIX_LOGS=1` also prints the restarted node's log.
//!
//! Every wait is bounded; every child is killed by its PID when its cluster drops.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/logdir.rs"]
mod logdir;

use logdir::{quarantined, segments};

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use cluster::{wait_until, Cluster, FollowerSpec, Spec, PRIMARY, START_BOUND};
use logship::record::{self, Frame, RECORD_HEADER_BYTES};
use logship::replication::node::IntegrityStatus;
use logship::replication::Error;
use logship::segment::SEGMENT_HEADER_BYTES;
use logship::{Bytes, Client, DurabilityLevel, Lsn, Record};

/// Bound on a repair, a catch-up, a take-back.
const BOUND: Duration = Duration::from_secs(30);
/// The config snippet of tests/integrity.rs: small segments (many sealed ones), a scrubber fast
/// enough to pass over them in well under a second, digests over 128 LSNs.
const CONFIG: &str = "[log]\nsegment_size_bytes = 65536\nmax_record_bytes = 16384\n\n[integrity]\nscrub_bytes_per_sec = 67108864\nscrub_pause_ms = 200\ndigest_range_records = 128\n";
const WRITERS: usize = 4;
/// Records per writer before the fault: about 6 segments of 64 KiB.
const RECORDS_BEFORE: usize = 400;
/// Records per writer while a follower is down (the async one; the sync one is tried once).
const RECORDS_WHILE_DOWN: usize = 100;
/// Records per writer after the restart.
const RECORDS_AFTER: usize = 200;
/// A writer gives up after this many failed appends.
const MAX_ERRORS_PER_WRITER: usize = 5;
/// Damage blocks: a file system block, aligned.
const BLOCK_BYTES: usize = 4096;
/// The last segment holds at least this much before the fault, so that a block around its
/// durable record does not reach the header.
const LAST_SEGMENT_MIN_BYTES: usize = 3 * BLOCK_BYTES;
/// `logship.meta`'s size (docs/format.md).
const META_BYTES: usize = 32;
/// Byte flipped in a segment header: the low byte of `base_lsn` (checked by the header CRC).
const HEADER_FLIP_BYTE: usize = 16;
/// Byte flipped in `logship.meta`: the low byte of `created_unix_nanos` (checked by its CRC).
const META_FLIP_BYTE: usize = 16;
/// Byte flipped in a record, after its 32-byte header: a payload byte.
const RECORD_FLIP_BYTE: usize = RECORD_HEADER_BYTES + 4;
/// The bit flipped.
const FLIP_MASK: u8 = 0x04;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Primary,
    SyncFollower,
    AsyncFollower,
}

impl Role {
    const ALL: [Role; 3] = [Role::Primary, Role::SyncFollower, Role::AsyncFollower];

    fn node(self) -> &'static str {
        match self {
            Role::Primary => PRIMARY,
            Role::SyncFollower => "a",
            Role::AsyncFollower => "b",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    SealedHeader,
    LastHeader,
    SealedRecord,
    LastRecord,
    Meta,
}

impl FileKind {
    const ALL: [FileKind; 5] = [
        FileKind::SealedHeader,
        FileKind::LastHeader,
        FileKind::SealedRecord,
        FileKind::LastRecord,
        FileKind::Meta,
    ];

    fn name(self) -> &'static str {
        match self {
            FileKind::SealedHeader => "sealed_header",
            FileKind::LastHeader => "last_header",
            FileKind::SealedRecord => "sealed_record",
            FileKind::LastRecord => "last_record",
            FileKind::Meta => "meta",
        }
    }

    fn sealed(self) -> bool {
        matches!(self, FileKind::SealedHeader | FileKind::SealedRecord)
    }

    fn record(self) -> bool {
        matches!(self, FileKind::SealedRecord | FileKind::LastRecord)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    BitFlip,
    ZeroBlock,
    GarbageBlock,
}

impl Damage {
    const ALL: [Damage; 3] = [Damage::BitFlip, Damage::ZeroBlock, Damage::GarbageBlock];

    fn name(self) -> &'static str {
        match self {
            Damage::BitFlip => "flip",
            Damage::ZeroBlock => "zero",
            Damage::GarbageBlock => "garbage",
        }
    }
}

/// What a cell is expected to end in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The node comes up, finds the damage (at open or by scrubbing) and repairs it or gets the
    /// records again from a replica.
    Repair,
    /// The node refuses to start, with one error line naming the file.
    FailStop,
}

#[derive(Clone, Copy, Debug)]
struct Cell {
    role: Role,
    kind: FileKind,
    damage: Damage,
}

impl Cell {
    fn name(&self) -> String {
        format!(
            "{}.{}.{}",
            self.role.node(),
            self.kind.name(),
            self.damage.name()
        )
    }

    /// Segment damage is repaired from a replica; without `logship.meta` a node cannot know its
    /// directory is a log, so it stops.
    fn expected(&self) -> Expect {
        match self.kind {
            FileKind::Meta => Expect::FailStop,
            _ => Expect::Repair,
        }
    }
}

fn all_cells() -> Vec<Cell> {
    let mut cells = Vec::new();
    for role in Role::ALL {
        for kind in FileKind::ALL {
            for damage in Damage::ALL {
                cells.push(Cell { role, kind, damage });
            }
        }
    }
    cells
}

/// One line of the table.
#[derive(Debug)]
struct Row {
    name: String,
    cell: Cell,
    /// The bytes the damage hit.
    hit: String,
    outcome: String,
    evidence: String,
    seconds: f64,
    failure: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The cluster and its load.

fn start() -> Cluster {
    let followers = vec![FollowerSpec::sync("a"), FollowerSpec::asynchronous("b")];
    let mut c = Cluster::new(&Spec::new("ANY 1 (a)", followers));
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    for name in &names {
        c.add_config(name, CONFIG);
    }
    c.start_all();
    c.wait_healthy(BOUND);
    c
}

fn payload(tag: usize, w: usize, i: usize) -> Bytes {
    let mut p = format!("t{tag}-w{w}-{i:05}-").into_bytes();
    p.resize(p.len() + (w * 131 + i * 37) % 300, b'a' + (i % 26) as u8);
    Bytes::from(p)
}

/// What a load got acknowledged, and its failures by kind.
#[derive(Debug, Default)]
struct Loaded {
    acked: BTreeMap<Lsn, Bytes>,
    errors: BTreeMap<String, usize>,
}

impl Loaded {
    /// Errors other than `quorum_unavailable`, which even a healthy cluster returns after a
    /// stall longer than the commit timeout (an fdatasync behind another process's heavy
    /// writes, a starved CPU). Such appends acknowledge nothing, so they lose nothing; the
    /// acknowledged records are checked all the same.
    fn errors_beyond_stalls(&self) -> BTreeMap<&str, usize> {
        (self.errors.iter())
            .filter(|(k, _)| k.as_str() != "quorum_unavailable")
            .map(|(k, n)| (k.as_str(), *n))
            .collect()
    }

    fn errors_text(&self) -> String {
        let parts: Vec<String> = (self.errors.iter())
            .map(|(k, n)| format!("{k} x{n}"))
            .collect();
        parts.join(", ")
    }
}

fn error_kind(e: &Error) -> String {
    match e {
        Error::Remote { status, .. } => status.clone(),
        other => {
            let text = other.to_string();
            text.chars().take(48).collect()
        }
    }
}

/// Appends from `WRITERS` concurrent clients at `remote_durable`, `per_writer` each; a writer
/// stops after `max_errors` failed appends.
fn load(c: &Cluster, tag: usize, per_writer: usize, max_errors: usize) -> Loaded {
    let addr = c.node(PRIMARY).client;
    let out = std::sync::Mutex::new(Loaded::default());
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let out = &out;
            s.spawn(move || {
                let mut client = None;
                let mut errors = 0;
                for i in 0..per_writer {
                    if errors >= max_errors {
                        return;
                    }
                    let p = payload(tag, w, i);
                    match append(&mut client, addr, p.clone()) {
                        Ok(lsn) => {
                            let old = out.lock().expect("lock").acked.insert(lsn, p);
                            assert!(old.is_none(), "LSN {lsn} acknowledged twice in one load");
                        }
                        Err(e) => {
                            errors += 1;
                            *out.lock().expect("lock").errors.entry(e).or_default() += 1;
                        }
                    }
                }
            });
        }
    });
    out.into_inner().expect("lock")
}

/// One append on a (re)connected client; a client whose connection failed is dropped.
fn append(
    client: &mut Option<Client>,
    addr: std::net::SocketAddr,
    p: Bytes,
) -> Result<Lsn, String> {
    if client.is_none() {
        let mut cl = Client::connect(addr, Duration::from_secs(2)).map_err(|e| error_kind(&e))?;
        cl.set_timeout(Duration::from_secs(10))
            .map_err(|e| error_kind(&e))?;
        *client = Some(cl);
    }
    let cl = client.as_mut().expect("connected above");
    cl.append(p, DurabilityLevel::RemoteDurable).map_err(|e| {
        if !matches!(e, Error::Remote { .. }) {
            *client = None;
        }
        error_kind(&e)
    })
}

/// Adds a load's acknowledged records to `acked`. An LSN acknowledged twice means the first
/// record was lost and its LSN given to another.
fn merge(acked: &mut BTreeMap<Lsn, Bytes>, more: Loaded) -> Loaded {
    for (lsn, p) in &more.acked {
        if let Some(old) = acked.insert(*lsn, p.clone()) {
            panic!(
                "acknowledged LSN {lsn} lost: acknowledged again for another record ({:?}, then {:?})",
                String::from_utf8_lossy(&old[..old.len().min(16)]),
                String::from_utf8_lossy(&p[..p.len().min(16)])
            );
        }
    }
    more
}

/// Waits until every follower in `nodes` is durable up to the primary's last LSN.
fn wait_caught_up(c: &Cluster, nodes: &[&str]) {
    let last = c.status(PRIMARY).expect("primary status").last_lsn;
    for n in nodes {
        wait_until(&format!("{n} durable at LSN {last}"), BOUND, || {
            c.status(n).is_ok_and(|s| s.durable_lsn >= last)
        });
    }
}

/// Every acknowledged record is on the primary with its payload; every node of `nodes` holds
/// exactly the primary's records (LSN, CRC, payload), once caught up.
fn assert_converged(c: &Cluster, acked: &BTreeMap<Lsn, Bytes>, nodes: &[&str]) {
    let primary = c.records(PRIMARY);
    assert_holds_acked(PRIMARY, &primary, acked);
    let want_last = primary.last().map_or(0, |r| r.lsn.0);
    for n in nodes {
        wait_until(
            &format!("{n} at the primary's last LSN {want_last}"),
            BOUND,
            || c.status(n).is_ok_and(|s| s.durable_lsn >= want_last),
        );
        assert_same(n, &c.records(n), PRIMARY, &primary);
    }
}

fn assert_holds_acked(name: &str, records: &[Record], acked: &BTreeMap<Lsn, Bytes>) {
    let by_lsn: BTreeMap<Lsn, &Record> = records.iter().map(|r| (r.lsn, r)).collect();
    for (lsn, p) in acked {
        let r = (by_lsn.get(lsn))
            .unwrap_or_else(|| panic!("acknowledged LSN {lsn} lost: {name} does not hold it"));
        assert_eq!(&r.payload, p, "acknowledged LSN {lsn} changed on {name}");
    }
}

fn assert_same(name: &str, theirs: &[Record], other: &str, ours: &[Record]) {
    assert_eq!(
        theirs.len(),
        ours.len(),
        "{name} holds {} records, {other} {}",
        theirs.len(),
        ours.len()
    );
    for (a, b) in theirs.iter().zip(ours) {
        assert_eq!(
            (a.lsn, a.crc, &a.payload),
            (b.lsn, b.crc, &b.payload),
            "{name} differs from {other}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Files and damage.

/// The frames of a segment file, walked from offset 64 as recovery does. The cells' logs are
/// fresh (nothing purged, no file reused), so every valid frame is the segment's own.
#[derive(Debug, Default)]
struct Frames {
    /// (offset, LSN, encoded length).
    records: Vec<(usize, Lsn, usize)>,
    /// (offset, synced_offset) of this segment's write markers.
    markers: Vec<(usize, u64)>,
    /// Offset after the last valid frame.
    end: usize,
}

fn frames_of(path: &Path) -> Frames {
    let bytes = std::fs::read(path).expect("read segment");
    let mut f = Frames {
        end: SEGMENT_HEADER_BYTES,
        ..Frames::default()
    };
    while let Ok(frame) = record::decode_frame(&bytes[f.end.min(bytes.len())..]) {
        match &frame {
            Frame::Record(r) => f.records.push((f.end, r.header.lsn, frame.encoded_len())),
            Frame::Marker(m) => f.markers.push((f.end, m.synced_offset)),
        }
        f.end += frame.encoded_len();
    }
    f
}

/// The latest record of a segment, not one of its last two, that a later write marker proves
/// synced: (offset, LSN).
fn proven_record(f: &Frames) -> Option<(usize, Lsn)> {
    let candidates = &f.records[..f.records.len().saturating_sub(2)];
    (candidates.iter().rev())
        .find(|(off, _, len)| {
            (f.markers.iter()).any(|(m, synced)| m > off && *synced >= (off + len) as u64)
        })
        .map(|(off, lsn, _)| (*off, *lsn))
}

/// What a damaged range of a segment covered: records, markers, the end of the data.
fn hit_of(f: &Frames, (from, to): (usize, usize)) -> String {
    let overlaps = |off: usize, len: usize| off < to && from < off + len;
    let records = (f.records.iter())
        .filter(|(off, _, len)| overlaps(*off, *len))
        .count();
    let markers = (f.markers.iter())
        .filter(|(off, _)| overlaps(*off, record::MARKER_BYTES))
        .count();
    let header = if from < SEGMENT_HEADER_BYTES {
        "header, "
    } else {
        ""
    };
    let tail = if to >= f.end { ", to the end" } else { "" };
    format!("{from}..{to}: {header}{records} rec, {markers} markers{tail}")
}

/// Where the damage goes.
#[derive(Debug)]
struct Target {
    path: PathBuf,
    /// The byte the target starts at (a flip goes to a byte chosen from it).
    at: usize,
    /// The LSN of the damaged record, for record kinds.
    lsn: Option<Lsn>,
}

fn target(c: &Cluster, node: &str, kind: FileKind) -> Target {
    let dir = &c.node(node).data;
    let segs = segments(dir);
    assert!(
        segs.len() >= 3,
        "{node} has {} segments, fewer than 3",
        segs.len()
    );
    let last = segs.last().expect("segments").clone();
    let at = |path: &PathBuf, at, lsn| Target {
        path: path.clone(),
        at,
        lsn,
    };
    match kind {
        FileKind::SealedHeader => at(&segs[1], 0, None),
        FileKind::LastHeader => at(&last, 0, None),
        FileKind::SealedRecord => {
            let f = frames_of(&segs[1]);
            let (off, lsn, _) = f.records[f.records.len() / 2];
            at(&segs[1], off, Some(lsn))
        }
        FileKind::LastRecord => {
            let (off, lsn) = proven_record(&frames_of(&last))
                .unwrap_or_else(|| panic!("no proven record in {}", last.display()));
            at(&last, off, Some(lsn))
        }
        FileKind::Meta => at(&dir.join("logship.meta"), 0, None),
    }
}

/// FNV-1a of the cell name: the seed of its garbage.
fn seed_of(name: &str) -> u64 {
    (name.bytes()).fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// xorshift64* bytes.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// Damages the target in place (and syncs it); returns the byte range changed.
fn apply_damage(t: &Target, kind: FileKind, damage: Damage, seed: u64) -> (usize, usize) {
    let len = std::fs::metadata(&t.path).expect("stat").len() as usize;
    let flip_at = t.at
        + match kind {
            FileKind::Meta => META_FLIP_BYTE,
            FileKind::SealedHeader | FileKind::LastHeader => HEADER_FLIP_BYTE,
            FileKind::SealedRecord | FileKind::LastRecord => RECORD_FLIP_BYTE,
        };
    let block = if kind == FileKind::Meta {
        META_BYTES
    } else {
        BLOCK_BYTES
    };
    let from = t.at / block * block;
    let to = (from + block).min(len);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&t.path)
        .expect("open target");
    let (range, bytes) = match damage {
        Damage::BitFlip => {
            let mut b = [0u8; 1];
            file.read_exact_at(&mut b, flip_at as u64).expect("read");
            b[0] ^= FLIP_MASK;
            ((flip_at, flip_at + 1), b.to_vec())
        }
        Damage::ZeroBlock => ((from, to), vec![0u8; to - from]),
        Damage::GarbageBlock => ((from, to), garbage(seed, to - from)),
    };
    file.write_all_at(&bytes, range.0 as u64).expect("write");
    file.sync_all().expect("sync");
    range
}

/// Appends until the target's last segment holds `LAST_SEGMENT_MIN_BYTES` (a rollover may
/// have just left it nearly empty), then waits until the followers have everything.
fn top_up(c: &Cluster, node: &str, acked: &mut BTreeMap<Lsn, Bytes>) {
    for round in 0..20 {
        wait_caught_up(c, &["a", "b"]);
        let segs = segments(&c.node(node).data);
        let last = segs.last().expect("a segment");
        if frames_of(last).end >= LAST_SEGMENT_MIN_BYTES {
            return;
        }
        merge(acked, load(c, 100 + round, 16, MAX_ERRORS_PER_WRITER));
    }
    panic!("{node}'s last segment stays under {LAST_SEGMENT_MIN_BYTES} bytes");
}

// ---------------------------------------------------------------------------------------------
// Restart and outcome.

/// How a restarted node came back.
enum Came {
    Up,
    Exited(ExitStatus),
}

fn is_zombie_or_gone(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
    matches!(state, None | Some('Z' | 'X'))
}

/// Starts `node` and waits (bounded) until it answers or exits.
fn restart(c: &mut Cluster, node: &str) -> Came {
    c.spawn(node);
    let pid = c.pid(node);
    let deadline = Instant::now() + START_BOUND;
    loop {
        if c.is_up(node) {
            return Came::Up;
        }
        if is_zombie_or_gone(pid) {
            let status = c
                .terminate(node)
                .expect("an exited child is reaped at once");
            return Came::Exited(status);
        }
        assert!(
            Instant::now() < deadline,
            "{node} neither came up nor exited within {START_BOUND:?} (hang)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// When a node was restarted: the length of its log file, the wall clock.
#[derive(Clone, Copy, Debug)]
struct Since {
    log_bytes: u64,
    unix_s: f64,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn log_len(c: &Cluster, node: &str) -> u64 {
    std::fs::metadata(&c.node(node).log).map_or(0, |m| m.len())
}

/// The node's log from byte `from` on.
fn log_since(c: &Cluster, node: &str, from: u64) -> String {
    let bytes = std::fs::read(&c.node(node).log).unwrap_or_default();
    String::from_utf8_lossy(&bytes[(from as usize).min(bytes.len())..]).into_owned()
}

fn detected(i: &IntegrityStatus) -> u64 {
    i.corruptions_found_at_open + i.corruptions_found_by_scrub
}

/// Waits until the node found the damage, has no damaged segment left, and (for a sealed
/// segment) repaired one from a replica.
fn wait_settled(c: &Cluster, node: &str, kind: FileKind) -> IntegrityStatus {
    let mut last = IntegrityStatus::default();
    let settled = cluster::poll_until(BOUND, || {
        let Ok(s) = c.status(node) else {
            return false;
        };
        last = s.integrity;
        detected(&last) >= 1 && last.damaged.is_empty() && (!kind.sealed() || last.repairs >= 1)
    });
    assert!(
        settled.is_some(),
        "{node} did not find and repair the damage within {BOUND:?}: {last:?}"
    );
    last
}

/// What was wrong and what proved it, in a few words, from a salvage or scrubber message.
fn why(text: &str) -> String {
    const FAULTS: [(&str, &str); 10] = [
        ("header checksum", "header crc"),
        ("wrong magic", "header magic"),
        ("bad header length", "header fields"),
        ("reserved bits", "reserved bits"),
        ("checksum mismatch", "record crc"),
        ("incomplete record", "incomplete frame"),
        ("payload length", "length"),
        ("LSN 0", "lsn 0"),
        ("was expected", "lsn out of sequence"),
        ("the log ends at LSN", "log ends early"),
    ];
    const PROOFS: [(&str, &str); 4] = [
        ("logship.durable", "durable floor"),
        ("write marker at offset", "write marker"),
        ("beyond what a crash", "unsynced window"),
        ("sealed segment must hold", "seal"),
    ];
    let find = |table: &[(&str, &'static str)]| {
        (table.iter())
            .find(|(k, _)| text.contains(k))
            .map(|(_, v)| *v)
    };
    let fault = find(&FAULTS).unwrap_or("?");
    match find(&PROOFS) {
        Some(proof) => format!("{fault}, proven by the {proof}"),
        None => fault.to_string(),
    }
}

/// The message that says why: what salvage set aside, else the scrubber's log line.
fn why_of(i: &IntegrityStatus, log: &str) -> String {
    let text = (i.salvaged_at_open.first().cloned())
        .or_else(|| {
            (log.lines())
                .find(|l| l.contains("scrubber found damage"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    why(&text)
}

/// The outcome and evidence of a repair, in a few words.
fn describe_repair(i: &IntegrityStatus, quarantine: usize) -> (String, String) {
    let cut = i
        .salvaged_at_open
        .iter()
        .any(|s| s.contains("cut before it"));
    let marked = (i.salvaged_at_open.iter()).any(|s| s.contains("marked damaged"));
    let how = if i.corruptions_found_by_scrub > 0 && i.repairs > 0 {
        "found by the scrubber, repaired from a replica".to_string()
    } else if marked && i.repairs > 0 {
        "marked damaged at open, repaired from a replica".to_string()
    } else if cut && i.taken_back_records > 0 {
        "quarantined and cut at open, taken back from a".to_string()
    } else if cut {
        "quarantined and cut at open, refetched from p".to_string()
    } else {
        format!("other: {:?}", i.salvaged_at_open)
    };
    let evidence = format!(
        "at_open={} by_scrub={} repairs={} failed={} taken_back={} quarantine={quarantine}",
        i.corruptions_found_at_open,
        i.corruptions_found_by_scrub,
        i.repairs,
        i.repairs_failed,
        i.taken_back_records
    );
    (how, evidence)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned()
}

/// Up after the damage: keep loading, wait for the repair, check it was logged, counted and
/// set bytes aside, and that the cluster converged.
fn after_repair(
    c: &Cluster,
    cell: &Cell,
    t: &Target,
    acked: &mut BTreeMap<Lsn, Bytes>,
    since: Since,
) -> (String, String) {
    let node = cell.role.node();
    if cell.role == Role::Primary {
        c.wait_healthy(BOUND);
    }
    let more = merge(acked, load(c, 3, RECORDS_AFTER, MAX_ERRORS_PER_WRITER));
    let i = wait_settled(c, node, cell.kind);
    assert_converged(c, acked, &["a", "b"]);
    let q = quarantined(&c.node(node).data).len();
    assert!(
        q >= 1,
        "{node} set no bytes aside in a quarantine file: {i:?}"
    );
    let log = log_since(c, node, since.log_bytes);
    if std::env::var_os("FAULT_MATRIX_LOGS").is_some() {
        println!("----- {node}'s log since its restart -----\n{log}");
    }
    let name = file_name(&t.path);
    assert!(
        (log.lines()).any(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && l.contains(&name)),
        "{node} logged no warning naming {name}"
    );
    let (how, mut evidence) = describe_repair(&i, q);
    evidence = format!("{}; {evidence}", why_of(&i, &log));
    if let Some(r) = i.recent_repairs.iter().rfind(|r| r.outcome == "repaired") {
        let after = r.at_unix_s - since.unix_s;
        evidence.push_str(&format!("; repaired {after:.1} s after the restart"));
    }
    if !more.errors.is_empty() {
        evidence.push_str(&format!("; load after: {}", more.errors_text()));
    }
    (how, evidence)
}

/// Exited after the damage: one error line naming the file (for a record its offset and LSN),
/// a non-zero exit, and the rest of the cluster as the role allows.
fn after_fail_stop(
    c: &Cluster,
    cell: &Cell,
    t: &Target,
    status: ExitStatus,
    acked: &mut BTreeMap<Lsn, Bytes>,
    since: Since,
) -> (String, String) {
    let node = cell.role.node();
    assert!(!status.success(), "{node} exited with {status}");
    let log = log_since(c, node, since.log_bytes);
    let errors: Vec<&str> = (log.lines())
        .filter(|l| l.starts_with("logship: error:"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{node} printed {} error lines: {log}",
        errors.len()
    );
    let line = errors[0];
    let name = file_name(&t.path);
    assert!(
        line.contains(&name),
        "the error line does not name {name}: {line}"
    );
    if cell.kind.record() {
        assert!(
            line.contains("offset ") && line.contains("LSN "),
            "the error line names no offset and LSN: {line}"
        );
    }
    let rest = after_fail_stop_cluster(c, cell.role, acked);
    let dir = c.dir.path().display().to_string();
    let shown = line.replace(&dir, "$DIR");
    let how = format!("fail-stop (exit {}); {rest}", status.code().unwrap_or(-1));
    (how, shown)
}

/// The rest of the cluster after a fail-stop of `role`.
fn after_fail_stop_cluster(c: &Cluster, role: Role, acked: &mut BTreeMap<Lsn, Bytes>) -> String {
    match role {
        Role::Primary => {
            let a = c.records("a");
            let b = c.records("b");
            assert_holds_acked("a", &a, acked);
            assert_holds_acked("b", &b, acked);
            assert_same("b", &b, "a", &a);
            "a and b hold every acknowledged record".into()
        }
        Role::SyncFollower => {
            let more = merge(acked, load(c, 3, 1, 1));
            let refused = more.errors.get("quorum_unavailable").copied().unwrap_or(0);
            assert_eq!(
                (more.acked.len(), refused),
                (0, WRITERS),
                "with a down, ANY 1 (a) cannot commit: {more:?}"
            );
            assert_converged(c, acked, &["b"]);
            "p serves reads, appends refused (quorum_unavailable), b converged".into()
        }
        Role::AsyncFollower => {
            let more = merge(acked, load(c, 3, RECORDS_AFTER, MAX_ERRORS_PER_WRITER));
            assert!(
                more.errors_beyond_stalls().is_empty() && !more.acked.is_empty(),
                "with b down, p and a commit: {more:?}"
            );
            assert_converged(c, acked, &["a"]);
            format!("p and a keep committing ({} more)", more.acked.len())
        }
    }
}

fn assert_no_panic(c: &Cluster) {
    for n in &c.nodes {
        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
        assert!(
            !log.contains("panicked"),
            "{} panicked: {}",
            n.name,
            cluster::tail(&n.log, 20)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// One cell.

/// A cluster whose target node is stopped and damaged, with what was acknowledged so far.
struct Damaged {
    c: Cluster,
    acked: BTreeMap<Lsn, Bytes>,
    target: Target,
    /// The bytes hit, in a few words.
    hit: String,
}

/// Starts the cluster, loads it, stops the target node with SIGTERM and damages its file.
fn damaged(cell: &Cell) -> Damaged {
    let node = cell.role.node();
    let mut c = start();
    let mut acked = BTreeMap::new();
    let first = load(&c, 1, RECORDS_BEFORE, MAX_ERRORS_PER_WRITER);
    let first = merge(&mut acked, first);
    assert!(
        first.errors_beyond_stalls().is_empty() && !first.acked.is_empty(),
        "load before: {}",
        first.errors_text()
    );
    top_up(&c, node, &mut acked);
    let stopped = c.terminate(node).expect("it was running");
    assert!(stopped.success(), "{node} exited with {stopped} on SIGTERM");
    let target = target(&c, node, cell.kind);
    let before = (cell.kind != FileKind::Meta).then(|| frames_of(&target.path));
    let range = apply_damage(&target, cell.kind, cell.damage, seed_of(&cell.name()));
    let hit = match (before, cell.damage) {
        (_, Damage::BitFlip) => format!("byte {}", range.0),
        (Some(f), _) => hit_of(&f, range),
        (None, _) => format!("{}..{}: the whole file", range.0, range.1),
    };
    println!(
        "{}: damaged {} bytes {}..{} (target at {}, LSN {:?}): {hit}",
        cell.name(),
        target.path.display(),
        range.0,
        range.1,
        target.at,
        target.lsn
    );
    Damaged {
        c,
        acked,
        target,
        hit,
    }
}

/// Runs one cell: (outcome, evidence, bytes hit).
fn run_cell(cell: &Cell) -> (String, String, String) {
    let node = cell.role.node();
    let Damaged {
        mut c,
        mut acked,
        target: t,
        hit,
    } = damaged(cell);
    let down = match cell.role {
        Role::Primary => Loaded::default(),
        Role::SyncFollower => merge(&mut acked, load(&c, 2, 1, 1)),
        Role::AsyncFollower => merge(&mut acked, load(&c, 2, RECORDS_WHILE_DOWN, 1)),
    };
    let since = Since {
        log_bytes: log_len(&c, node),
        unix_s: unix_now(),
    };
    let (got, (how, mut evidence)) = match restart(&mut c, node) {
        Came::Up => (
            Expect::Repair,
            after_repair(&c, cell, &t, &mut acked, since),
        ),
        Came::Exited(s) => (
            Expect::FailStop,
            after_fail_stop(&c, cell, &t, s, &mut acked, since),
        ),
    };
    assert_no_panic(&c);
    if !down.errors.is_empty() {
        evidence.push_str(&format!("; load while down: {}", down.errors_text()));
    }
    assert_eq!(got, cell.expected(), "{}: {how}: {evidence}", cell.name());
    (how, evidence, hit)
}

fn run_row(cell: Cell) -> Row {
    let started = Instant::now();
    let result = std::panic::catch_unwind(|| run_cell(&cell));
    let seconds = started.elapsed().as_secs_f64();
    let (outcome, evidence, hit, failure) = match result {
        Ok((o, e, h)) => (o, e, h, None),
        Err(p) => {
            let msg = (p.downcast_ref::<String>().cloned())
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            ("FAILED".into(), String::new(), String::new(), Some(msg))
        }
    };
    let row = Row {
        name: cell.name(),
        cell,
        hit,
        outcome,
        evidence,
        seconds,
        failure,
    };
    println!("{}", table_line(&row));
    row
}

fn table_line(r: &Row) -> String {
    let evidence = match &r.failure {
        Some(f) => format!("FAILED: {}", f.replace('\n', " ")),
        None => r.evidence.clone(),
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {:.1} |",
        r.name,
        r.cell.role.node(),
        r.cell.kind.name(),
        r.cell.damage.name(),
        r.hit,
        r.outcome,
        evidence.replace('|', "/"),
        r.seconds
    )
}

fn selected(cells: Vec<Cell>) -> Vec<Cell> {
    let Ok(filter) = std::env::var("FAULT_MATRIX_CELLS") else {
        return cells;
    };
    let wanted: Vec<&str> = filter.split(',').map(str::trim).collect();
    (cells.into_iter())
        .filter(|c| wanted.iter().any(|w| c.name().starts_with(w)))
        .collect()
}

fn run_matrix(cells: Vec<Cell>) {
    let started = Instant::now();
    let rows: Vec<Row> = selected(cells).into_iter().map(run_row).collect();
    println!("\n| cell | node | file | damage | bytes hit | outcome | evidence | s |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{}", table_line(r));
    }
    println!(
        "\n{} cells in {:.1} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<&str> = (rows.iter())
        .filter(|r| r.failure.is_some())
        .map(|r| r.name.as_str())
        .collect();
    assert!(failed.is_empty(), "cells failed: {failed:?}");
}

#[test]
fn fault_matrix() {
    run_matrix(all_cells());
}
