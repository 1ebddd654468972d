//! The client port with TLS over real TCP on 127.0.0.1: a primary alone as a `Node` in this
//! process. A TLS client appends and reads back; a plaintext client is told the port speaks
//! TLS; a connection that sends nothing is closed by the idle timeout, and one that starts a
//! handshake and never finishes it by the request timeout, as plain connections are.
//!
//! Run: `cargo test -p logship-replicator --test client_port_tls`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logship_engine::Lsn;
use logship_replicator::client::ClientTls;
use logship_replicator::config::NodeConfig;
use logship_replicator::tls::generate::{parse_subject, write_tls_dir};
use logship_replicator::{Client, DurabilityLevel, Node};

const KEY: &str = "0123456789abcdef0123456789abcdef";
/// Bound on every wait.
const WITHIN: Duration = Duration::from_secs(10);
/// The port's idle and request timeouts, short for the test.
const IDLE_MS: u64 = 600;
const REQUEST_MS: u64 = 400;

fn primary(dir: &Path) -> Node {
    std::fs::write(dir.join("key"), KEY).expect("key");
    let tls = dir.join("tls");
    write_tls_dir(&tls, &[parse_subject("p").expect("subject")], &[]).expect("certificates");
    let text = format!(
        "[node]\ntransport = \"portable\"\nid = \"p\"\nrole = \"primary\"\ncluster_id = \"test\"\n\
         key_file = \"{}\"\ndata_dir = \"{}\"\nlisten_client = \"127.0.0.1:0\"\n\
         [timeouts]\nclient_idle_ms = {IDLE_MS}\nclient_request_ms = {REQUEST_MS}\n\
         [tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
        dir.join("key").display(),
        dir.join("p").display(),
        tls.join("p.crt").display(),
        tls.join("p.key").display(),
        tls.join("ca.crt").display(),
    );
    Node::start(NodeConfig::parse(&text).expect("config")).expect("node")
}

/// Whether the port closes `s` within `bound` (EOF or reset), reading and dropping what it
/// sends first.
fn closed_within(s: &mut TcpStream, bound: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let deadline = Instant::now() + bound;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            _ => {}
        }
    }
    false
}

fn client(addr: SocketAddr, dir: &Path) -> Client {
    let tls = ClientTls::from_files(&dir.join("tls/ca.crt"), None).expect("client TLS");
    Client::connect_with(addr, WITHIN, Some(&tls)).expect("connect")
}

#[test]
fn tls_clients_are_served_and_silent_or_stalled_handshakes_time_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = primary(dir.path());
    let addr = p.client_addr().expect("client port");
    let mut c = client(addr, dir.path());
    let lsn = c
        .append(Bytes::from_static(b"over TLS"), DurabilityLevel::Local)
        .expect("append");
    let read = c.read(lsn, 1 << 20).expect("read");
    assert_eq!(read[0].payload.as_ref(), b"over TLS");
    assert!(lsn >= Lsn(1));

    let plain = Client::connect(addr, WITHIN).and_then(|mut c| c.status());
    let e = plain.expect_err("a plaintext client").to_string();
    assert!(e.contains("speaks TLS"), "{e}");

    // Nothing sent: closed by the idle timeout.
    let mut silent = TcpStream::connect(addr).expect("connect");
    assert!(
        closed_within(&mut silent, WITHIN),
        "a silent connection stayed"
    );
    // A TLS record header and then nothing: closed by the request timeout.
    let mut stalled = TcpStream::connect(addr).expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01])
        .expect("write");
    let started = Instant::now();
    assert!(
        closed_within(&mut stalled, WITHIN),
        "a stalled handshake stayed"
    );
    let held = started.elapsed();
    assert!(
        held < Duration::from_millis(IDLE_MS * 5),
        "held {held:?}: the request timeout ({REQUEST_MS} ms) bounds it"
    );
    // (`c` itself was idle meanwhile, and closed.)
    let mut again = client(addr, dir.path());
    assert!(again.status().is_ok(), "a TLS client is still served");
    assert!(p.tls_failures() >= 1, "the plaintext client was counted");
}
