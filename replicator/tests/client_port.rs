//! The client port over real TCP on 127.0.0.1: pipelined appends, batches, answers in request
//! order, malformed requests, and appends that fail for want of a quorum. A primary and one sync
//! follower run as `Node`s in this process, each with its log in a temporary directory and
//! every port chosen by the system.
//!
//! Run: `cargo test --release -p logship-replicator --test client_port`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logship_engine::{Lsn, Record};
use logship_replicator::config::NodeConfig;
use logship_replicator::protocol::frame::{encode, FrameDecoder, DEFAULT_MAX_BODY_BYTES};
use logship_replicator::protocol::msg::kind;
use logship_replicator::protocol::{ClientStatus, Msg};
use logship_replicator::{Client, DurabilityLevel, Error, Node};

const KEY: &str = "0123456789abcdef0123456789abcdef";
/// Bound on every wait for an answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// The primary's commit timeout: short, so that a missing quorum is noticed quickly.
const COMMIT_MS: u64 = 500;

fn key_file(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("key");
    std::fs::write(&p, KEY).unwrap();
    p
}

/// The transport under test: `LOGSHIP_TEST_TRANSPORT` (`portable` by default, `io_uring`).
fn transport() -> String {
    std::env::var("LOGSHIP_TEST_TRANSPORT").unwrap_or_else(|_| "portable".into())
}

fn node_section(dir: &Path, name: &str, role: &str) -> String {
    format!(
        "[node]\ntransport = \"{}\"\nid = \"{name}\"\nrole = \"{role}\"\ncluster_id = \"test\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\nlisten_client = \"127.0.0.1:0\"\n",
        transport(),
        key_file(dir).display(),
        dir.join(name).display()
    )
}

fn follower(dir: &Path) -> Node {
    let text = format!(
        "{}listen_replication = \"127.0.0.1:0\"\n",
        node_section(dir, "a", "follower")
    );
    Node::start(NodeConfig::parse(&text).unwrap()).unwrap()
}

/// A primary whose one follower `a` at `follower` is its sync quorum.
fn primary(dir: &Path, follower: SocketAddr) -> Node {
    primary_with(dir, follower, "", "")
}

/// [`primary`], with more lines in its `[node]` and `[timeouts]` tables.
fn primary_with(dir: &Path, follower: SocketAddr, node: &str, timeouts: &str) -> Node {
    let text = format!(
        "{}{node}[replication]\nfollowers = [{{ name = \"a\", addr = \"{follower}\", mode = \"sync\" }}]\nquorum = \"ANY 1 (a)\"\n[timeouts]\ncommit_ms = {COMMIT_MS}\n{timeouts}",
        node_section(dir, "p", "primary")
    );
    Node::start(NodeConfig::parse(&text).unwrap()).unwrap()
}

/// A primary and its sync follower, the primary serving (its follower was heard).
fn cluster(dir: &Path) -> (Node, Node) {
    let a = follower(dir);
    let p = primary(dir, a.replication_addr().unwrap());
    let start = Instant::now();
    while !p.status().primary.is_some_and(|s| s.serving) {
        assert!(start.elapsed() < ANSWER_WITHIN, "the primary never served");
        std::thread::sleep(Duration::from_millis(10));
    }
    (p, a)
}

fn client(node: &Node) -> Client {
    Client::connect(node.client_addr().unwrap(), ANSWER_WITHIN).unwrap()
}

fn payloads(tag: &str, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("{tag} record {i}")))
        .collect()
}

/// The records `first..=last`, read through the client port.
fn read_range(c: &mut Client, first: Lsn, last: Lsn) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    while out.last().map_or(Lsn::ZERO, |r| r.lsn) < last {
        let from = out.last().map_or(first, |r| r.lsn.next());
        let got = c.read(from, 1 << 20).unwrap();
        assert!(!got.is_empty(), "nothing durable at {from}");
        out.extend(got.into_iter().filter(|r| r.lsn <= last));
    }
    out
}

/// Checks that the log holds each of `payloads` at its LSN in `lsns`.
fn assert_logged(c: &mut Client, lsns: &[Lsn], payloads: &[Bytes]) {
    let (first, last) = (lsns[0], lsns[lsns.len() - 1]);
    let records = read_range(c, first, last);
    for (lsn, want) in lsns.iter().zip(payloads) {
        let r = records
            .iter()
            .find(|r| r.lsn == *lsn)
            .unwrap_or_else(|| panic!("no record {lsn}"));
        assert_eq!(&r.payload, want, "record {lsn}");
    }
}

#[test]
fn pipelined_appends_return_increasing_lsns_that_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _a) = cluster(dir.path());
    let mut c = client(&p);
    let data = payloads("pipelined", 1000);
    let lsns = c
        .append_pipelined(DurabilityLevel::RemoteDurable, &data, 64)
        .unwrap();
    assert_eq!(lsns.len(), data.len());
    assert!(
        lsns.windows(2).all(|w| w[0] < w[1]),
        "LSNs strictly increasing"
    );
    assert_logged(&mut c, &lsns, &data);
    // The connection serves ordinary requests again once the pipeline is drained.
    let lsn = c
        .append(Bytes::from_static(b"after"), DurabilityLevel::Local)
        .unwrap();
    assert!(lsn > lsns[lsns.len() - 1]);
}

/// One client, one append at a time: the port's delivering thread writes each record itself
/// while the log's writer idles (the connection's thread on the portable transport, the ring
/// on io_uring), at both levels, and every record reads back.
#[test]
fn a_lone_client_s_records_are_written_by_the_port_s_delivering_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _a) = cluster(dir.path());
    let mut c = client(&p);
    let data = payloads("lone", 200);
    let before = p.log().stats();
    let mut lsns = Vec::new();
    for (i, d) in data.iter().enumerate() {
        let level = [DurabilityLevel::Local, DurabilityLevel::RemoteDurable][i % 2];
        lsns.push(c.append(d.clone(), level).unwrap());
    }
    let after = p.log().stats();
    assert_logged(&mut c, &lsns, &data);
    // All but the first two (the rule's streak) and any that found the writer thread busy
    // (an idle marker, or a loaded machine's slow wake): at least a tenth, to stay clear of
    // the scheduler; the port never wrote one before.
    let here = after.caller_writes - before.caller_writes;
    assert!(
        here >= 20,
        "{here} of 200 lone appends written by the port's thread ({before:?} → {after:?})"
    );
}

/// A lone client's commit at `remote_durable` completes when the follower's acknowledgement is
/// delivered: that thread sends the answer itself, without waking the port's answering thread.
#[test]
fn a_lone_client_s_remote_durable_answer_is_sent_by_the_thread_that_read_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _a) = cluster(dir.path());
    let mut c = client(&p);
    let data = payloads("acked", 200);
    let before = p.status().client_answers_on_ack;
    let lsns: Vec<Lsn> = (data.iter())
        .map(|d| c.append(d.clone(), DurabilityLevel::RemoteDurable).unwrap())
        .collect();
    let on_ack = p.status().client_answers_on_ack - before;
    assert_logged(&mut c, &lsns, &data);
    // All but those whose local flush ended after the acknowledgement came (then the flush
    // completes the commit) and those that found a lock taken: at least a tenth, to stay clear
    // of the scheduler; before, the answering thread sent every one.
    assert!(
        on_ack >= 20,
        "{on_ack} of 200 answers sent by the thread that read the acknowledgement"
    );
    assert!(on_ack <= 200);
}

/// 32 clients at once, each with one append in flight: the port leaves their records to the
/// log's writer thread, which gathers them (a flush on the delivering thread would take one
/// record at a time).
#[test]
fn concurrent_clients_records_are_gathered_by_the_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _a) = cluster(dir.path());
    let before = p.log().stats();
    std::thread::scope(|s| {
        for t in 0..32 {
            let p = &p;
            s.spawn(move || {
                let mut c = client(p);
                for d in payloads(&format!("client {t}"), 40) {
                    c.append(d, DurabilityLevel::Local).unwrap();
                }
            });
        }
    });
    let after = p.log().stats();
    let (records, writes) = (after.records - before.records, after.writes - before.writes);
    let here = after.caller_writes - before.caller_writes;
    assert_eq!(records, 32 * 40);
    // Lone writes only where the clients happened to come one at a time (starting, ending).
    assert!(
        here * 4 < writes,
        "{here} of {writes} writes made by the port's thread for 32 concurrent clients"
    );
}

#[test]
fn a_batch_is_acknowledged_with_contiguous_lsns_that_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _a) = cluster(dir.path());
    let mut c = client(&p);
    let before = c
        .append(
            Bytes::from_static(b"before"),
            DurabilityLevel::RemoteDurable,
        )
        .unwrap();
    let data = payloads("batch", 100);
    let (first, last) = c
        .append_batch(DurabilityLevel::RemoteDurable, &data)
        .unwrap();
    assert_eq!(first, before.next());
    assert_eq!(last.0 - first.0 + 1, 100);
    let lsns: Vec<Lsn> = (first.0..=last.0).map(Lsn).collect();
    assert_logged(&mut c, &lsns, &data);
    let e = c.append_batch(DurabilityLevel::Local, &[]).unwrap_err();
    assert!(matches!(e, Error::InvalidRequest(_)), "{e}");
}

/// Connects a raw socket that reads with a bound.
fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    s
}

/// Reads answers until `n` arrived or the connection ended; whether it ended.
fn read_answers(s: &mut TcpStream, n: usize) -> (Vec<Msg>, bool) {
    let mut d = FrameDecoder::new(DEFAULT_MAX_BODY_BYTES);
    let (mut answers, mut buf) = (Vec::new(), vec![0u8; 1 << 16]);
    loop {
        while let Some(f) = d.next_frame().unwrap() {
            answers.push(Msg::decode(&f).unwrap());
        }
        if answers.len() >= n {
            return (answers, false);
        }
        match s.read(&mut buf) {
            Ok(0) => return (answers, true),
            Ok(k) => d.push(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (answers, true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("no answer and no close: {e}"),
        }
    }
}

#[test]
fn a_malformed_batch_closes_its_connection_and_a_new_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _a) = cluster(dir.path());
    let addr = p.client_addr().unwrap();
    let mut s = raw(addr);
    // A good append, then a batch that counts three records and carries two.
    let mut wire = Msg::AppendRequest {
        id: 1,
        level: DurabilityLevel::Local,
        payload: Bytes::from_static(b"good"),
    }
    .encode()
    .to_vec();
    let mut body = 2u64.to_le_bytes().to_vec();
    body.push(DurabilityLevel::Local.as_u8());
    body.extend_from_slice(&3u16.to_le_bytes());
    for r in [&b"x"[..], b"y"] {
        body.extend_from_slice(&(r.len() as u32).to_le_bytes());
        body.extend_from_slice(r);
    }
    wire.extend_from_slice(&encode(kind::APPEND_BATCH_REQUEST, &body));
    s.write_all(&wire).unwrap();
    let (answers, closed) = read_answers(&mut s, 2);
    assert!(closed, "the connection stays open after {answers:?}");
    assert!(
        matches!(
            answers.as_slice(),
            [Msg::AppendResponse {
                id: 1,
                status: ClientStatus::Ok,
                ..
            }]
        ),
        "the append before the bad frame is answered: {answers:?}"
    );
    let mut c = client(&p);
    c.append_batch(DurabilityLevel::Local, &payloads("next", 3))
        .unwrap();
}

#[test]
fn answers_come_in_request_order_whatever_their_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _a) = cluster(dir.path());
    let mut s = raw(p.client_addr().unwrap());
    let level = DurabilityLevel::RemoteDurable;
    let requests = [
        Msg::AppendRequest {
            id: 1,
            level,
            payload: Bytes::from_static(b"one"),
        },
        Msg::ReadRequest {
            id: 2,
            from: Lsn::ZERO,
            max_bytes: 1 << 20,
        },
        Msg::StatusRequest { id: 3 },
        Msg::AppendBatchRequest {
            id: 4,
            level,
            payloads: payloads("ordered", 5),
        },
        Msg::AppendRequest {
            id: 5,
            level,
            payload: Bytes::from_static(b"five"),
        },
    ];
    let wire: Vec<u8> = requests.iter().flat_map(|m| m.encode().to_vec()).collect();
    s.write_all(&wire).unwrap();
    let (answers, _) = read_answers(&mut s, requests.len());
    let ids: Vec<u64> = answers.iter().map(answer_id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    // The read was carried out in its turn, after the append before it had its level.
    let Msg::ReadResponse { records, .. } = &answers[1] else {
        panic!("{:?}", answers[1]);
    };
    let read = logship_replicator::client::decode_records(records).unwrap();
    assert!(read.iter().any(|r| r.payload == "one"), "{read:?}");
}

fn answer_id(m: &Msg) -> u64 {
    match m {
        Msg::AppendResponse { id, .. }
        | Msg::ReadResponse { id, .. }
        | Msg::StatusResponse { id, .. }
        | Msg::AppendBatchResponse { id, .. } => *id,
        other => panic!("not an answer: {other:?}"),
    }
}

#[test]
fn pipelined_appends_without_a_quorum_fail_and_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (p, a) = cluster(dir.path());
    let mut c = client(&p);
    let level = DurabilityLevel::RemoteDurable;
    let acked_data = payloads("acknowledged", 200);
    let acked = c.append_pipelined(level, &acked_data, 32).unwrap();
    a.shutdown();
    let e = c
        .append_pipelined(level, &payloads("unacknowledged", 100), 16)
        .unwrap_err();
    assert!(
        matches!(&e, Error::Remote { status, .. } if status == "quorum_unavailable"),
        "{e}"
    );
    // The pipeline was drained: the connection takes requests again.
    let e = c.append_batch(level, &payloads("batch", 4)).unwrap_err();
    assert!(
        matches!(&e, Error::Remote { status, .. } if status == "quorum_unavailable"),
        "{e}"
    );
    assert_logged(&mut c, &acked, &acked_data);
    let local = c
        .append(Bytes::from_static(b"local"), DurabilityLevel::Local)
        .unwrap();
    assert!(local > acked[acked.len() - 1]);
}

#[test]
fn a_follower_refuses_pipelined_appends_and_batches_as_not_primary() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, a) = cluster(dir.path());
    let mut c = client(&a);
    let level = DurabilityLevel::RemoteDurable;
    let e = c
        .append_pipelined(level, &payloads("refused", 50), 8)
        .unwrap_err();
    assert!(matches!(e, Error::NotPrimary { .. }), "{e}");
    let e = c.append_batch(level, &payloads("refused", 2)).unwrap_err();
    assert!(matches!(e, Error::NotPrimary { .. }), "{e}");
    for _ in 0..3 {
        c.send_append(Bytes::from_static(b"x"), level).unwrap();
    }
    assert!(matches!(c.status(), Err(Error::InvalidRequest(_))));
    for _ in 0..3 {
        let (_, outcome) = c.recv_append().unwrap();
        assert!(matches!(outcome, Err(Error::NotPrimary { .. })));
    }
    assert_eq!(c.appends_in_flight(), 0);
    assert!(c.status().unwrap().primary.is_none());
}

/// Whether the port closes `s` within `bound` (EOF or reset), reading and dropping anything
/// it sends first.
fn closed_within(s: &mut TcpStream, bound: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + bound;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {}
        }
    }
    false
}

#[test]
fn idle_slow_and_excess_connections_are_closed_and_a_new_client_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let a = follower(dir.path());
    let p = primary_with(
        dir.path(),
        a.replication_addr().unwrap(),
        "max_client_connections_per_address = 3\n",
        "client_idle_ms = 600\nclient_request_ms = 400\n",
    );
    let addr = p.client_addr().unwrap();
    // Three idle connections take every seat of 127.0.0.1; a fourth is closed at accept.
    let mut idle: Vec<TcpStream> = (0..3).map(|_| raw(addr)).collect();
    let mut excess = raw(addr);
    // A served connection would answer this; a refused one ends without an answer.
    let _ = excess.write_all(&encode(kind::STATUS_REQUEST, &[]));
    let (answers, ended) = read_answers(&mut excess, 1);
    assert!(
        answers.is_empty() && ended,
        "the fourth connection was served"
    );
    // The idle ones are closed once idle for client_idle_ms, and their seats come back.
    for s in &mut idle {
        assert!(
            closed_within(s, ANSWER_WITHIN),
            "an idle connection stayed open"
        );
    }
    let mut c = client(&p);
    assert!(
        c.status().is_ok(),
        "a new client is served once the idle ones are gone"
    );
    // A request sent one byte at a time is closed client_request_ms after its first byte,
    // though bytes keep coming.
    let mut slow = raw(addr);
    let frame = encode(kind::STATUS_REQUEST, &[0u8; 200]);
    let started = Instant::now();
    let mut closed = false;
    // Never the last byte: the frame stays incomplete (200 bytes at 50 ms each: 10 s).
    for b in &frame[..frame.len() - 1] {
        if slow.write_all(&[*b]).is_err() || closed_within(&mut slow, Duration::from_millis(50)) {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a slow request held its connection for {:?}",
        started.elapsed()
    );
    assert!(c.status().is_ok(), "the honest client is still served");
}

#[test]
fn many_interleaved_appends_and_reads_are_answered_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _a) = cluster(dir.path());
    let mut s = raw(p.client_addr().unwrap());
    // 300 requests in one write: appends at every level, reads and status between them, so
    // answers complete out of order inside the port and must still leave in request order.
    let levels = [
        DurabilityLevel::Local,
        DurabilityLevel::RemoteWrite,
        DurabilityLevel::RemoteDurable,
    ];
    let requests: Vec<Msg> = (1..=300u64)
        .map(|id| match id % 5 {
            0 => Msg::ReadRequest {
                id,
                from: Lsn::ZERO,
                max_bytes: 4096,
            },
            3 => Msg::StatusRequest { id },
            _ => Msg::AppendRequest {
                id,
                level: levels[id as usize % levels.len()],
                payload: Bytes::from(format!("interleaved {id}")),
            },
        })
        .collect();
    let wire: Vec<u8> = requests.iter().flat_map(|m| m.encode().to_vec()).collect();
    s.write_all(&wire).unwrap();
    let (answers, ended) = read_answers(&mut s, requests.len());
    assert!(
        !ended,
        "the connection ended after {} answers",
        answers.len()
    );
    let ids: Vec<u64> = answers.iter().map(answer_id).collect();
    assert_eq!(ids, (1..=300).collect::<Vec<u64>>());
    let lsns: Vec<Lsn> = answers
        .iter()
        .filter_map(|m| match m {
            Msg::AppendResponse { status, lsn, .. } => {
                assert_eq!(*status, ClientStatus::Ok, "{m:?}");
                Some(*lsn)
            }
            _ => None,
        })
        .collect();
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "{lsns:?}");
}

#[test]
fn a_client_with_too_many_requests_unanswered_is_closed_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (p, a) = cluster(dir.path());
    // Without the follower, an append at remote_durable waits for the commit timeout, and the
    // status requests behind it wait for their turn: twice the bound sent at once leaves more
    // than the bound unanswered.
    a.shutdown();
    let mut s = raw(p.client_addr().unwrap());
    let n = 2 * logship_replicator::node::MAX_IN_FLIGHT_PER_CONNECTION as u64;
    let first = Msg::AppendRequest {
        id: 1,
        level: DurabilityLevel::RemoteDurable,
        payload: Bytes::from_static(b"unanswered"),
    };
    let wire: Vec<u8> = std::iter::once(first)
        .chain((2..=n).map(|id| Msg::StatusRequest { id }))
        .flat_map(|m| m.encode().to_vec())
        .collect();
    s.write_all(&wire).unwrap();
    let (answers, ended) = read_answers(&mut s, n as usize);
    assert!(ended, "{} answers and the connection stayed", answers.len());
    assert!((answers.len() as u64) < n, "every request was answered");
    let ids: Vec<u64> = answers.iter().map(answer_id).collect();
    assert_eq!(ids, (1..=answers.len() as u64).collect::<Vec<u64>>());
    assert!(client(&p).status().is_ok(), "a new client is served");
}

#[test]
fn a_client_that_never_reads_its_answers_is_closed_and_does_not_block_others() {
    let dir = tempfile::tempdir().unwrap();
    let a = follower(dir.path());
    let p = primary_with(
        dir.path(),
        a.replication_addr().unwrap(),
        "",
        "client_idle_ms = 600\n",
    );
    let mut c = client(&p);
    let record = Bytes::from(vec![7u8; 64 << 10]);
    for _ in 0..64 {
        c.append(record.clone(), DurabilityLevel::Local).unwrap();
    }
    // 64 reads of the whole 4 MiB log, never read back: far more than the port keeps unsent.
    let mut deaf = raw(p.client_addr().unwrap());
    let reads = 64u64;
    let wire: Vec<u8> = (1..=reads)
        .flat_map(|id| {
            let m = Msg::ReadRequest {
                id,
                from: Lsn::ZERO,
                max_bytes: 8 << 20,
            };
            m.encode().to_vec()
        })
        .collect();
    deaf.write_all(&wire).unwrap();
    // Others are served meanwhile.
    for _ in 0..10 {
        assert!(c.status().is_ok(), "an honest client was held up");
        c.append(Bytes::from_static(b"meanwhile"), DurabilityLevel::Local)
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    // Closed: what the kernel buffered arrives, then the end, long before 64 answers.
    deaf.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    let (mut got, mut buf) = (0usize, vec![0u8; 1 << 16]);
    loop {
        match deaf.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("after {got} bytes, neither more answers nor the close: {e}"),
        }
    }
    assert!(
        got < (reads as usize) * (4 << 20) / 2,
        "{got} bytes arrived: the deaf client was answered on"
    );
    assert!(client(&p).status().is_ok(), "a new client is served");
}

/// An append held by a closed start gate (a new primary that has not heard its quorum yet)
/// waits on its own connection: other clients are accepted and answered meanwhile (the port's
/// network thread never blocks on the gate), and the requests behind it on its connection
/// wait their turn.
#[test]
fn an_append_held_by_the_start_gate_does_not_hold_other_connections() {
    let dir = tempfile::tempdir().unwrap();
    // The follower's address takes TCP connections and never answers: the gate stays shut.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = format!(
        "{}[replication]\nfollowers = [{{ name = \"a\", addr = \"{}\", mode = \"sync\" }}]\nquorum = \"ANY 1 (a)\"\n[timeouts]\ncommit_ms = 60000\n",
        node_section(dir.path(), "p", "primary"),
        silent.local_addr().unwrap()
    );
    let p = Node::start(NodeConfig::parse(&text).unwrap()).unwrap();
    assert!(!p.status().primary.is_some_and(|s| s.serving));
    let addr = p.client_addr().unwrap();
    let last = p.status().last_lsn;
    let mut held = raw(addr);
    let append = Msg::AppendRequest {
        id: 1,
        level: DurabilityLevel::RemoteDurable,
        payload: Bytes::from_static(b"held by the gate"),
    };
    let behind = Msg::AppendRequest {
        id: 2,
        level: DurabilityLevel::Local,
        payload: Bytes::from_static(b"behind it"),
    };
    let status = Msg::StatusRequest { id: 3 };
    let mut wire = append.encode().to_vec();
    wire.extend_from_slice(&behind.encode());
    wire.extend_from_slice(&status.encode());
    held.write_all(&wire).unwrap();
    for i in 0..3 {
        let mut other = raw(addr);
        other
            .write_all(&Msg::StatusRequest { id: 7 + i }.encode())
            .unwrap();
        let (answers, closed) = read_answers(&mut other, 1);
        assert!(!closed, "the other client's connection was closed");
        assert!(
            matches!(answers[..], [Msg::StatusResponse { id, .. }] if id == 7 + i),
            "{answers:?}"
        );
    }
    held.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match held.read(&mut byte) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the held connection got something while its append waits: {other:?}"),
    }
    assert_eq!(
        p.status().last_lsn,
        last,
        "nothing was appended past the gate"
    );
    p.shutdown();
}
