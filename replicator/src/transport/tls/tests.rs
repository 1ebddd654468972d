//! The TLS layer over the portable transport on real sockets: bytes both ways, and peers that
//! must be refused (another CA, a wrong name, plaintext).

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use rustls::{ClientConfig, ServerConfig};

use super::*;
use crate::tls::generate::{parse_subject, write_tls_dir};
use crate::tls::{ClientAuth, NodeTls, TlsFiles};
use crate::transport::NetBackend;

/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(10);

struct Forward(Sender<NetEvent>);

impl NetHandler for Forward {
    fn on_event(&self, event: NetEvent) {
        let _ = self.0.send(event);
    }
}

struct Fixed(Arc<NodeTls>);

impl TlsConfigs for Fixed {
    fn server(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.0.replication_server)
    }
    fn client(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.0.replication_client)
    }
}

/// A CA in `dir` with node certificates for `n1` and `n2`.
fn ca(dir: &Path) {
    let nodes = ["n1", "n2"].map(|n| parse_subject(n).expect("subject"));
    write_tls_dir(dir, &nodes, &[]).expect("certificates");
}

fn node_tls(dir: &Path, node: &str) -> Arc<NodeTls> {
    let files = TlsFiles {
        cert_file: dir.join(format!("{node}.crt")),
        key_file: dir.join(format!("{node}.key")),
        ca_file: dir.join("ca.crt"),
        client_auth: ClientAuth::None,
    };
    Arc::new(NodeTls::load(&files).expect("configurations"))
}

struct End {
    t: TlsTransport,
    events: Receiver<NetEvent>,
    failures: Arc<TlsFailures>,
}

/// A TLS transport over `backend`, or `None` (said why) when io_uring is unavailable here.
fn try_end(backend: NetBackend, tls: Arc<NodeTls>, names: &[(SocketAddr, &str)]) -> Option<End> {
    let (tx, events) = crossbeam_channel::unbounded();
    let names = (names.iter())
        .map(|(a, n)| (*a, crate::tls::server_name(n).expect("name")))
        .collect();
    let failures = Arc::new(TlsFailures::default());
    let t = TlsTransport::start(
        |h| crate::transport::start(backend, h),
        Arc::new(Forward(tx)),
        Arc::new(Fixed(tls)),
        names,
        Arc::clone(&failures),
    );
    match t {
        Ok(t) => Some(End {
            t,
            events,
            failures,
        }),
        Err(e) if backend == NetBackend::IoUring => {
            println!("skipping io_uring: unavailable: {e}");
            None
        }
        Err(e) => panic!("starting {backend:?}: {e}"),
    }
}

fn end(backend: NetBackend, tls: Arc<NodeTls>, names: &[(SocketAddr, &str)]) -> End {
    try_end(backend, tls, names).expect("a portable transport starts")
}

/// Node `n1` over the portable transport, listening on 127.0.0.1 (port 0); its address.
fn listening_n1(dir: &Path) -> (End, SocketAddr) {
    let server = end(NetBackend::Portable, node_tls(dir, "n1"), &[]);
    let addr = server
        .t
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    (server, addr)
}

fn next(e: &End) -> NetEvent {
    e.events
        .recv_timeout(WAIT)
        .expect("an event within the wait")
}

/// Reads `conn`'s data on `e` until `n` bytes came; panics on any other event.
fn receive(e: &End, conn: ConnId, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        match next(e) {
            NetEvent::Data { conn: c, bytes } if c == conn => got.extend_from_slice(&bytes),
            other => panic!("expected data on {conn:?}, got {other:?}"),
        }
    }
    got
}

/// The error `conn` closed with on `e`, skipping its data.
fn closed_error(e: &End, conn: ConnId) -> Option<io::Error> {
    loop {
        match next(e) {
            NetEvent::Closed { conn: c, error } if c == conn => return error,
            NetEvent::ConnectFailed { conn: c, error } if c == conn => return Some(error),
            NetEvent::Data { .. } => {}
            other => panic!("expected {conn:?} to close, got {other:?}"),
        }
    }
}

fn accepted(e: &End) -> ConnId {
    match next(e) {
        NetEvent::Accepted { conn, .. } => conn,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

fn connected(e: &End, conn: ConnId) {
    match next(e) {
        NetEvent::Connected { conn: c, .. } => assert_eq!(c, conn),
        other => panic!("expected Connected, got {other:?}"),
    }
}

#[test]
fn bytes_cross_both_ways_over_either_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    ca(dir.path());
    for backend in [NetBackend::Portable, NetBackend::IoUring] {
        let Some(server) = try_end(backend, node_tls(dir.path(), "n1"), &[]) else {
            continue;
        };
        let addr = server
            .t
            .listen("127.0.0.1:0".parse().expect("addr"))
            .expect("listen");
        let client = end(backend, node_tls(dir.path(), "n2"), &[(addr, "n1")]);
        let conn = client.t.connect(addr, WAIT);
        connected(&client, conn);
        let there = accepted(&server);
        for round in 0..3u8 {
            let up: Vec<u8> = (0..100_000u32).map(|i| (i as u8) ^ round).collect();
            client.t.send(conn, Bytes::from(up.clone()));
            assert_eq!(receive(&server, there, up.len()), up, "{backend:?}");
            server.t.send(there, Bytes::from(vec![round; 7]));
            assert_eq!(receive(&client, conn, 7), vec![round; 7], "{backend:?}");
        }
        client.t.close(conn);
        assert!(closed_error(&client, conn).is_none(), "{backend:?}");
        assert!(
            closed_error(&server, there).is_none(),
            "{backend:?}: a clean close"
        );
        assert_eq!(server.failures.count() + client.failures.count(), 0);
        server.t.shutdown();
        client.t.shutdown();
    }
}

/// The transport under a TLS layer, counting the sends the layer makes through it.
struct CountSends {
    inner: Arc<dyn Transport>,
    sends: AtomicUsize,
}

impl Transport for CountSends {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn listen_on(&self, listener: TcpListener) -> io::Result<SocketAddr> {
        self.inner.listen_on(listener)
    }
    fn connect(&self, addr: SocketAddr, timeout: Duration) -> ConnId {
        self.inner.connect(addr, timeout)
    }
    fn send(&self, conn: ConnId, data: Bytes) {
        self.sends.fetch_add(1, Ordering::SeqCst);
        self.inner.send(conn, data);
    }
    fn send_parts(&self, conn: ConnId, parts: &[Bytes]) {
        self.sends.fetch_add(1, Ordering::SeqCst);
        self.inner.send_parts(conn, parts);
    }
    fn queued_bytes(&self, conn: ConnId) -> usize {
        self.inner.queued_bytes(conn)
    }
    fn close(&self, conn: ConnId) {
        self.inner.close(conn);
    }
    fn shutdown(&self) {
        self.inner.shutdown();
    }
}

#[test]
fn parts_sent_together_are_encrypted_together_and_leave_in_one_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    ca(dir.path());
    let (server, addr) = listening_n1(dir.path());
    let (tx, events) = crossbeam_channel::unbounded();
    let counted = Arc::new(OnceLock::<Arc<CountSends>>::new());
    let slot = Arc::clone(&counted);
    let start_inner = move |h| {
        let inner = crate::transport::start(NetBackend::Portable, h)?;
        let c = Arc::new(CountSends {
            inner,
            sends: AtomicUsize::new(0),
        });
        let _ = slot.set(Arc::clone(&c));
        Ok(c as Arc<dyn Transport>)
    };
    let names = [(addr, crate::tls::server_name("n1").expect("name"))];
    let failures = Arc::new(TlsFailures::default());
    let t = TlsTransport::start(
        start_inner,
        Arc::new(Forward(tx)),
        Arc::new(Fixed(node_tls(dir.path(), "n2"))),
        names.into_iter().collect(),
        Arc::clone(&failures),
    )
    .expect("a TLS transport");
    let client = End {
        t,
        events,
        failures,
    };
    let conn = client.t.connect(addr, WAIT);
    connected(&client, conn);
    let there = accepted(&server);
    // A round trip first: plaintext sent before the handshake ends waits in rustls and leaves
    // with the handshake's last flight, which would not be the send counted below.
    client.t.send(conn, Bytes::from_static(b"hello"));
    assert_eq!(receive(&server, there, 5), b"hello");
    server.t.send(there, Bytes::from_static(b"!"));
    assert_eq!(receive(&client, conn, 1), b"!");
    let sends = &counted.get().expect("the inner transport started").sends;
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let data = Bytes::from(data);
    let before = sends.load(Ordering::SeqCst);
    let parts = [
        data.slice(..13),
        Bytes::new(),
        data.slice(13..40_000),
        data.slice(40_000..),
    ];
    client.t.send_parts(conn, &parts);
    assert_eq!(sends.load(Ordering::SeqCst) - before, 1, "one send below");
    assert_eq!(receive(&server, there, data.len()), data);
    client.t.shutdown();
    server.t.shutdown();
}

#[test]
fn bytes_cross_both_ways_and_a_peer_of_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (good, other) = (dir.path().join("good"), dir.path().join("other"));
    ca(&good);
    ca(&other);
    let server = end(NetBackend::Portable, node_tls(&good, "n1"), &[]);
    let addr = server
        .t
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let client = end(NetBackend::Portable, node_tls(&good, "n2"), &[(addr, "n1")]);

    let conn = client.t.connect(addr, WAIT);
    connected(&client, conn);
    // Sent before the handshake ends: it waits in rustls and leaves afterwards.
    client.t.send(conn, Bytes::from_static(b"hello"));
    let there = accepted(&server);
    assert_eq!(receive(&server, there, 5), b"hello");
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    server.t.send(there, Bytes::from(big.clone()));
    assert_eq!(receive(&client, conn, big.len()), big);
    assert_eq!(server.failures.count() + client.failures.count(), 0);

    // A node whose certificate another CA issued: both ends refuse each other.
    let stranger = end(
        NetBackend::Portable,
        node_tls(&other, "n2"),
        &[(addr, "n1")],
    );
    let c = stranger.t.connect(addr, WAIT);
    connected(&stranger, c);
    let e = closed_error(&stranger, c).expect("a TLS error");
    assert!(e.to_string().contains("certificate"), "{e}");
    let refused = accepted(&server);
    assert!(closed_error(&server, refused).is_some());
    assert_eq!(stranger.failures.count(), 1);
    assert_eq!(server.failures.count(), 1);
    for e in [&server, &client, &stranger] {
        e.t.shutdown();
    }
}

#[test]
fn a_certificate_for_another_node_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    ca(dir.path());
    let (server, addr) = listening_n1(dir.path());
    // The client expects n2 at this address; n1 answers.
    let client = end(
        NetBackend::Portable,
        node_tls(dir.path(), "n2"),
        &[(addr, "n2")],
    );
    let conn = client.t.connect(addr, WAIT);
    connected(&client, conn);
    let e = closed_error(&client, conn).expect("a TLS error");
    assert!(e.to_string().contains("certificate"), "{e}");
    assert_eq!(client.failures.count(), 1);
    server.t.shutdown();
    client.t.shutdown();
}

#[test]
fn a_plaintext_peer_is_closed_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    ca(dir.path());
    let (server, addr) = listening_n1(dir.path());
    let mut plain = TcpStream::connect(addr).expect("connect");
    plain
        .write_all(b"LSHP not a TLS record at all, a frame header")
        .expect("write");
    let conn = accepted(&server);
    let deadline = Instant::now() + WAIT;
    let e = closed_error(&server, conn).expect("a TLS error");
    assert!(Instant::now() < deadline);
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert_eq!(server.failures.count(), 1);
    server.t.shutdown();
}
