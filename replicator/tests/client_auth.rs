//! Client authentication on the client port over real TCP on 127.0.0.1: a lone primary `Node`
//! with `[clients]`, its log in a temporary directory, its port chosen by the system. Covers
//! admission with grants, the refusals (wrong key, unknown name, a request before the
//! handshake, a stalled handshake), `not_permitted` on a usable connection, and key reloads.
//!
//! Run: `cargo test -p logship-replicator --test client_auth`.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logship_engine::Lsn;
use logship_replicator::config::NodeConfig;
use logship_replicator::protocol::auth::ClusterKey;
use logship_replicator::protocol::client_auth::{ClientKey, ClientRefusal};
use logship_replicator::protocol::frame::FrameDecoder;
use logship_replicator::protocol::Msg;
use logship_replicator::{Client, DurabilityLevel, Error, Node};

/// Bound on every wait for an answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
const WRITER_KEY: &str = "writer-key-0123456789abcdef";
const WRITER_NEXT_KEY: &str = "writer-next-key-0123456789";
const READER_KEY: &str = "reader-key-0123456789abcdef";

fn clients_file(writer_keys: &[&str]) -> String {
    let mut text = String::from("# name grants key\n");
    for k in writer_keys {
        text.push_str(&format!("writer append,read {k}\n"));
    }
    text.push_str(&format!("reader read {READER_KEY}\n"));
    text
}

/// A lone primary with client authentication; `timeouts` go in its `[timeouts]` table.
fn node(dir: &Path, timeouts: &str) -> Node {
    std::fs::write(dir.join("cluster.key"), "cluster-key-0123456789abcdef\n").unwrap();
    std::fs::write(dir.join("clients.keys"), clients_file(&[WRITER_KEY])).unwrap();
    let text = format!(
        "[node]\ntransport = \"portable\"\nid = \"p\"\nrole = \"primary\"\ncluster_id = \"test\"\n\
         key_file = \"{}\"\ndata_dir = \"{}\"\nlisten_client = \"127.0.0.1:0\"\n\
         [clients]\nkeys_file = \"{}\"\n[timeouts]\n{timeouts}",
        dir.join("cluster.key").display(),
        dir.join("data").display(),
        dir.join("clients.keys").display(),
    );
    Node::start(NodeConfig::parse(&text).unwrap()).unwrap()
}

fn key(name: &str, text: &str) -> ClientKey {
    ClientKey::new(name, ClusterKey::from_bytes(text.as_bytes()).unwrap()).unwrap()
}

fn connect(node: &Node, k: &ClientKey) -> Result<Client, Error> {
    Client::connect_with_key(node.client_addr().unwrap(), ANSWER_WITHIN, k)
}

fn refusal(r: Result<Client, Error>) -> ClientRefusal {
    match r {
        Err(Error::Refused { code, .. }) => code,
        other => panic!("expected a refusal: {other:?}"),
    }
}

fn not_permitted<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::Remote { ref status, .. }) if status == "not_permitted")
}

#[test]
fn clients_are_admitted_with_their_grants_and_strangers_refused() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), "");
    let mut writer = connect(&n, &key("writer", WRITER_KEY)).unwrap();
    let lsn = writer
        .append(Bytes::from_static(b"w1"), DurabilityLevel::Local)
        .unwrap();
    assert_eq!(writer.read(lsn, 1 << 20).unwrap()[0].payload, &b"w1"[..]);

    let mut reader = connect(&n, &key("reader", READER_KEY)).unwrap();
    let refused = reader.append(Bytes::from_static(b"r1"), DurabilityLevel::Local);
    assert!(not_permitted(refused), "reader may not append");
    let batch = reader.append_batch(DurabilityLevel::Local, &[Bytes::from_static(b"b")]);
    assert!(not_permitted(batch), "nor append a batch");
    assert!(not_permitted(reader.promote("a")), "nor promote");
    // The connection stays usable: its grants still serve.
    let records = reader.read(Lsn::ZERO, 1 << 20).unwrap();
    assert_eq!(records.len(), 1, "nothing the reader sent was appended");
    assert_eq!(
        reader.status().unwrap().last_lsn,
        lsn.0,
        "status to anyone admitted"
    );

    let wrong = connect(&n, &key("writer", "not-the-writer-key-0123"));
    assert_eq!(refusal(wrong), ClientRefusal::AuthFailed);
    let stranger = connect(&n, &key("stranger", WRITER_KEY));
    assert_eq!(refusal(stranger), ClientRefusal::AuthFailed);
    let mut anonymous = Client::connect(n.client_addr().unwrap(), ANSWER_WITHIN).unwrap();
    match anonymous.append(Bytes::from_static(b"x"), DurabilityLevel::Local) {
        Err(Error::Refused { code, .. }) => assert_eq!(code, ClientRefusal::Protocol),
        other => panic!("a request before the handshake: {other:?}"),
    }
    assert_eq!(n.status().client_handshakes_refused, 3);
    assert_eq!(n.log().last_lsn(), lsn, "no refused client appended");
}

#[test]
fn a_stalled_handshake_is_refused_within_the_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), "client_request_ms = 300\n");
    let mut s = TcpStream::connect(n.client_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    let started = Instant::now();
    let mut bytes = Vec::new();
    // The node sends its refusal, then closes: read to the end.
    s.read_to_end(&mut bytes).unwrap();
    assert!(started.elapsed() < ANSWER_WITHIN, "closed by the node");
    let mut d = FrameDecoder::new(1 << 10);
    d.push(&bytes);
    let f = d.next_frame().unwrap().expect("a whole frame");
    match Msg::decode(&f).unwrap() {
        Msg::ClientRefused { code, .. } => assert_eq!(code, ClientRefusal::TimedOut),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reloaded_client_keys_admit_new_connections_and_sessions_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), "");
    let (old, next) = (key("writer", WRITER_KEY), key("writer", WRITER_NEXT_KEY));
    let mut before = connect(&n, &old).unwrap();
    assert_eq!(refusal(connect(&n, &next)), ClientRefusal::AuthFailed);
    // Step 1: both keys in the writer's ring.
    let keys = dir.path().join("clients.keys");
    std::fs::write(&keys, clients_file(&[WRITER_KEY, WRITER_NEXT_KEY])).unwrap();
    let reloaded = n.reload_keys().unwrap();
    assert_eq!((reloaded.cluster_keys, reloaded.clients), (1, Some(2)));
    let mut after = connect(&n, &next).unwrap();
    assert!(
        connect(&n, &old).is_ok(),
        "the old key still works in the overlap"
    );
    // Step 3: the old key removed; the session it opened goes on.
    std::fs::write(&keys, clients_file(&[WRITER_NEXT_KEY])).unwrap();
    n.reload_keys().unwrap();
    assert_eq!(refusal(connect(&n, &old)), ClientRefusal::AuthFailed);
    for c in [&mut before, &mut after] {
        c.append(Bytes::from_static(b"x"), DurabilityLevel::Local)
            .unwrap();
    }
    // A bad file keeps every old key, and says why.
    std::fs::write(&keys, "writer append,bogus short\n").unwrap();
    assert!(matches!(n.reload_keys(), Err(Error::ClientKeys(_))));
    assert!(connect(&n, &next).is_ok(), "the old keys stay in use");
    std::fs::write(dir.path().join("cluster.key"), "# no key\n").unwrap();
    std::fs::write(&keys, clients_file(&[WRITER_NEXT_KEY])).unwrap();
    assert!(matches!(n.reload_keys(), Err(Error::Key(_))));
    assert!(connect(&n, &next).is_ok());
}

/// The next frame on `s`, decoded (bounded by the socket's read timeout).
fn next_msg(s: &mut TcpStream, d: &mut FrameDecoder) -> Msg {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = d.next_frame().unwrap() {
            return Msg::decode(&f).unwrap();
        }
        // A socket with a read timeout is not restarted after a signal (this process runs
        // io_uring rings, whose work can interrupt a blocking read).
        let n = match s.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        };
        assert!(n > 0, "the node closed the connection");
        d.push(&buf[..n]);
    }
}

#[test]
fn a_request_sent_with_the_proof_in_one_write_is_answered_after_the_welcome() {
    use logship_replicator::protocol::client_auth::{prove_client, ClientTranscript};
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), "");
    let mut s = TcpStream::connect(n.client_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    let mut d = FrameDecoder::new(1 << 20);
    let (k, client_nonce) = (key("writer", WRITER_KEY), [5u8; 32]);
    let hello = Msg::ClientHello {
        nonce: client_nonce,
        name: "writer".into(),
    };
    s.write_all(&hello.encode()).unwrap();
    let Msg::ClientChallenge { nonce, cluster_id } = next_msg(&mut s, &mut d) else {
        panic!("no challenge");
    };
    assert_eq!(cluster_id, "test");
    let t = ClientTranscript {
        cluster_id: &cluster_id,
        name: "writer",
        client_nonce: &client_nonce,
        node_nonce: &nonce,
    };
    let mut both = Msg::ClientProof {
        mac: prove_client(&k, &t),
    }
    .encode()
    .to_vec();
    let append = Msg::AppendRequest {
        id: 7,
        level: DurabilityLevel::Local,
        payload: Bytes::from_static(b"behind the proof"),
    };
    both.extend_from_slice(&append.encode());
    s.write_all(&both).unwrap();
    assert!(matches!(
        next_msg(&mut s, &mut d),
        Msg::ClientWelcome { .. }
    ));
    match next_msg(&mut s, &mut d) {
        Msg::AppendResponse { id: 7, lsn, .. } => assert!(lsn > Lsn::ZERO),
        other => panic!("{other:?}"),
    }
}
