//! `UringTransport` over real sockets on 127.0.0.1. Every wait is bounded; every test prints why
//! it skips when io_uring is unavailable here.
//!
//! The latency comparison is ignored by default; run it by hand with
//! `cargo test --release -p logship-replicator --test transport_uring -- --ignored --nocapture`.

mod common;
#[path = "common/uring.rs"]
mod uring_common;

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use logship_replicator::transport::uring::UringTransport;
use logship_replicator::transport::{ConnId, NetEvent, NetHandler, Transport};
use uring_common::{localhost, start_wired, wait_for_within, Wiring};

/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(10);
/// How long to watch for events that must not come.
const QUIET: Duration = Duration::from_millis(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Forwards every event to a channel; optionally echoes data on accepted connections.
#[derive(Default)]
struct Recorder {
    wiring: Wiring,
    echo: bool,
    shutdown_on_data: bool,
    panic_on_data: bool,
    accepted: Mutex<HashSet<ConnId>>,
    /// Set by a test once `shutdown` has returned: every later event is a failure.
    after_shutdown: AtomicBool,
    late_events: AtomicUsize,
}

impl NetHandler for Recorder {
    fn on_event(&self, event: NetEvent) {
        if self.after_shutdown.load(Ordering::SeqCst) {
            self.late_events.fetch_add(1, Ordering::SeqCst);
        }
        let transport = self.wiring.transport();
        if let (Some(t), NetEvent::Data { conn, bytes }) = (&transport, &event) {
            assert!(!self.panic_on_data, "handler panics as the test asked");
            if self.shutdown_on_data {
                t.shutdown();
            } else if self.echo && self.accepted.lock().expect("lock").contains(conn) {
                t.send(*conn, bytes.clone().freeze());
            }
        }
        if let NetEvent::Accepted { conn, .. } = &event {
            self.accepted.lock().expect("lock").insert(*conn);
        }
        self.wiring.forward(event);
    }
}

struct Harness {
    transport: Arc<UringTransport>,
    recorder: Arc<Recorder>,
    events: Receiver<NetEvent>,
}

/// Starts a transport with `recorder`, or says why the test is skipped.
fn start(recorder: Recorder) -> Option<Harness> {
    let recorder = Arc::new(recorder);
    let (transport, events) = start_wired(&recorder, |r| &r.wiring)?;
    Some(Harness {
        transport,
        recorder,
        events,
    })
}

fn echo_recorder() -> Recorder {
    Recorder {
        echo: true,
        ..Recorder::default()
    }
}

fn next(events: &Receiver<NetEvent>) -> NetEvent {
    events.recv_timeout(WAIT).expect("an event within the wait")
}

/// Events until `pred` matches one, which is returned; the others are returned too.
fn wait_for(
    events: &Receiver<NetEvent>,
    pred: impl FnMut(&NetEvent) -> bool,
) -> (NetEvent, Vec<NetEvent>) {
    wait_for_within(events, WAIT, pred)
}

/// Collects `Data` of `conn` until `len` bytes arrived; other events must not be terminal for it.
fn read_data(events: &Receiver<NetEvent>, conn: ConnId, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let deadline = Instant::now() + WAIT;
    while out.len() < len {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left).expect("data within the wait") {
            NetEvent::Data { conn: c, bytes } if c == conn => {
                assert!(!bytes.is_empty());
                out.extend_from_slice(&bytes);
            }
            NetEvent::Closed { conn: c, error } if c == conn => {
                panic!("conn {conn} closed after {} bytes: {error:?}", out.len())
            }
            _ => {}
        }
    }
    assert_eq!(out.len(), len, "more bytes than sent");
    out
}

/// Listens and connects on `h`'s transport; returns (client conn, server conn).
fn connected_pair(h: &Harness) -> (ConnId, ConnId) {
    let addr = h.transport.listen(localhost()).expect("listen");
    let client = h.transport.connect(addr, CONNECT_TIMEOUT);
    let (mut connected, mut server) = (false, None);
    while !connected || server.is_none() {
        match next(&h.events) {
            NetEvent::Connected { conn, peer } if conn == client => {
                assert_eq!(peer, addr);
                connected = true;
            }
            NetEvent::Accepted { listener, conn, .. } => {
                assert_eq!(listener, addr);
                server = Some(conn);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (client, server.expect("accepted"))
}

/// A connection of the transport to a plain listener on 127.0.0.1, once `Connected`; the peer.
fn connected_to_a_listener(h: &Harness) -> (ConnId, TcpStream) {
    let listener = TcpListener::bind(localhost()).expect("bind");
    let conn = h
        .transport
        .connect(listener.local_addr().expect("addr"), CONNECT_TIMEOUT);
    let (peer, _) = listener.accept().expect("accept");
    assert!(matches!(next(&h.events), NetEvent::Connected { conn: c, .. } if c == conn));
    (conn, peer)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every event seen until `QUIET` passes without one.
fn drain_quiet(events: &Receiver<NetEvent>) -> Vec<NetEvent> {
    let mut out = Vec::new();
    while let Ok(e) = events.recv_timeout(QUIET) {
        out.push(e);
    }
    out
}

#[test]
fn echo_round_trip() {
    let Some(h) = start(echo_recorder()) else {
        return;
    };
    let (client, _server) = connected_pair(&h);
    h.transport.send(client, Bytes::from_static(b"hello"));
    assert_eq!(read_data(&h.events, client, 5), b"hello");
    // Many chunks of odd sizes, so gathering sends and short receives both happen.
    let data = pattern(7, 3 << 20);
    for chunk in data.chunks(10_007) {
        h.transport.send(client, Bytes::copy_from_slice(chunk));
    }
    assert!(read_data(&h.events, client, data.len()) == data);
    h.transport.shutdown();
}

#[test]
fn large_send_arrives_in_order_while_the_peer_reads_slowly() {
    let Some(h) = start(Recorder::default()) else {
        return;
    };
    let (conn, mut peer) = connected_to_a_listener(&h);

    let (chunk, chunks) = (64 << 10, 1024);
    let data = pattern(3, chunk * chunks);
    let shared = Bytes::from(data.clone());
    let started = Instant::now();
    for i in 0..chunks {
        h.transport
            .send(conn, shared.slice(i * chunk..(i + 1) * chunk));
    }
    let send_time = started.elapsed();
    let queued = h.transport.queued_bytes(conn);
    assert!(
        send_time < Duration::from_secs(1),
        "64 MiB of sends took {send_time:?}"
    );
    assert!(queued > 0, "a slow peer must leave bytes queued");

    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut got = vec![0; data.len()];
    let mut buf = vec![0; chunk];
    let mut at = 0;
    std::thread::sleep(Duration::from_millis(50));
    while at < got.len() {
        let n = match peer.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.expect("read"),
        };
        assert!(n > 0, "eof after {at} bytes");
        got[at..at + n].copy_from_slice(&buf[..n]);
        at += n;
        if at % (1 << 20) < n {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(got == data, "bytes arrived out of order or corrupted");
    let deadline = Instant::now() + WAIT;
    while h.transport.queued_bytes(conn) > 0 {
        assert!(Instant::now() < deadline, "queued_bytes never drained");
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("64 MiB: sends took {send_time:?}, {queued} bytes queued right after");
    h.transport.shutdown();
}

#[test]
fn parts_sent_together_arrive_in_order_when_the_socket_takes_only_some() {
    let Some(h) = start(Recorder::default()) else {
        return;
    };
    let (conn, mut peer) = connected_to_a_listener(&h);
    let data = Bytes::from(pattern(5, 32 << 20));
    let t = &h.transport;
    common::send_in_frames(&data, |p| t.send_parts(conn, p), || t.queued_bytes(conn));
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut got = vec![0; data.len()];
    peer.read_exact(&mut got).expect("every byte");
    assert!(got == data[..], "bytes arrived out of order or corrupted");
    h.transport.shutdown();
}

#[test]
fn connect_refused_reports_connect_failed_and_nothing_else() {
    let Some(h) = start(Recorder::default()) else {
        return;
    };
    let (_held, addr) = common::refusing_addr();
    let conn = h.transport.connect(addr, CONNECT_TIMEOUT);
    match next(&h.events) {
        NetEvent::ConnectFailed { conn: c, error } => {
            assert_eq!(c, conn);
            assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "{error}");
        }
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    assert!(drain_quiet(&h.events).is_empty());
    assert_eq!(h.transport.queued_bytes(conn), 0);
}

/// Most connections `blackhole` opens looking for a full accept queue.
const BLACKHOLE_MAX_CONNECTIONS: usize = 10_000;

/// A listener whose accept queue is full, so the kernel drops new SYNs and connects to it hang,
/// with the connections that fill it. `None` (with the reason printed) if it never fills.
fn blackhole() -> Option<(TcpListener, Vec<TcpStream>)> {
    let listener = TcpListener::bind(localhost()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    while fillers.len() < BLACKHOLE_MAX_CONNECTIONS {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(stream) => fillers.push(stream),
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
                return Some((listener, fillers));
            }
            Err(e) => {
                println!("skipping: filling an accept queue failed: {e}");
                return None;
            }
        }
    }
    println!("skipping: the accept queue took {BLACKHOLE_MAX_CONNECTIONS} connections");
    None
}

#[test]
fn connect_timeout_reports_timed_out() {
    let Some(h) = start(Recorder::default()) else {
        return;
    };
    let Some((listener, _fillers)) = blackhole() else {
        return;
    };
    let addr = listener.local_addr().expect("addr");
    let limit = Duration::from_millis(200);
    let started = Instant::now();
    let conn = h.transport.connect(addr, limit);
    match next(&h.events) {
        NetEvent::ConnectFailed { conn: c, error } => {
            assert_eq!(c, conn);
            assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
            assert!(started.elapsed() >= limit, "timed out early");
            assert!(error.to_string().contains("timed out"), "{error}");
        }
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    assert!(drain_quiet(&h.events).is_empty());
}

#[test]
fn close_while_connecting_reports_one_connect_failed() {
    let Some(h) = start(Recorder::default()) else {
        return;
    };
    let Some((listener, _fillers)) = blackhole() else {
        return;
    };
    let conn = h
        .transport
        .connect(listener.local_addr().expect("addr"), CONNECT_TIMEOUT);
    std::thread::sleep(Duration::from_millis(50));
    h.transport.close(conn);
    let events = drain_quiet(&h.events);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        matches!(&events[0], NetEvent::ConnectFailed { conn: c, error }
            if *c == conn && error.kind() == ErrorKind::ConnectionAborted),
        "{events:?}"
    );
}

#[test]
fn close_right_after_connect_ends_with_one_terminal_event() {
    let Some(h) = start(Recorder::default()) else {
        return;
    };
    let listener = TcpListener::bind(localhost()).expect("bind");
    let conn = h
        .transport
        .connect(listener.local_addr().expect("addr"), CONNECT_TIMEOUT);
    h.transport.close(conn);
    // The close may reach the ring before or after the loopback connect completes.
    let events = drain_quiet(&h.events);
    let ok = match &events[..] {
        [NetEvent::ConnectFailed { conn: c, error }] => {
            *c == conn && error.kind() == ErrorKind::ConnectionAborted
        }
        [NetEvent::Connected { conn: a, .. }, NetEvent::Closed {
            conn: b,
            error: None,
        }] => *a == conn && *b == conn,
        _ => false,
    };
    assert!(ok, "{events:?}");
}

#[test]
fn close_delivers_exactly_one_closed() {
    let Some(h) = start(Recorder::default()) else {
        return;
    };
    let (client, server) = connected_pair(&h);
    h.transport.close(client);
    h.transport.close(client);
    h.transport.send(client, Bytes::from_static(b"dropped"));
    let mut closed = HashMap::new();
    for event in drain_quiet(&h.events) {
        match event {
            NetEvent::Closed { conn, error } => {
                assert!(error.is_none(), "conn {conn}: {error:?}");
                *closed.entry(conn).or_insert(0) += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The server side sees the peer close.
    assert_eq!(closed, HashMap::from([(client, 1), (server, 1)]));
    assert_eq!(h.transport.queued_bytes(client), 0);
}

#[test]
fn peer_reset_delivers_closed_with_the_error() {
    let Some(h) = start(Recorder::default()) else {
        return;
    };
    let addr = h.transport.listen(localhost()).expect("listen");
    let client = TcpStream::connect(addr).expect("connect");
    let NetEvent::Accepted { conn, peer, .. } = next(&h.events) else {
        panic!("expected Accepted");
    };
    assert_eq!(peer, client.local_addr().expect("addr"));
    // Closing a socket with unread bytes makes the kernel send a reset instead of a FIN.
    h.transport.send(conn, Bytes::from_static(b"unread"));
    let mut probe = [0; 1];
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    assert_eq!(client.peek(&mut probe).expect("peek"), 1);
    drop(client);
    match next(&h.events) {
        NetEvent::Closed { conn: c, error } => {
            assert_eq!(c, conn);
            let error = error.expect("a reset is an error");
            assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(drain_quiet(&h.events).is_empty());
}

#[test]
fn peer_half_close_delivers_data_then_closed() {
    let Some(h) = start(Recorder::default()) else {
        return;
    };
    let addr = h.transport.listen(localhost()).expect("listen");
    let mut client = TcpStream::connect(addr).expect("connect");
    let NetEvent::Accepted { conn, .. } = next(&h.events) else {
        panic!("expected Accepted");
    };
    client.write_all(b"last words").expect("write");
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_data(&h.events, conn, 10), b"last words");
    assert!(matches!(next(&h.events), NetEvent::Closed { conn: c, error: None } if c == conn));
    // The transport closed its side entirely.
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    assert_eq!(client.read(&mut [0; 8]).expect("eof"), 0);
}

#[test]
fn shutdown_joins_and_delivers_nothing_after() {
    let Some(h) = start(echo_recorder()) else {
        return;
    };
    let addr = h.transport.listen(localhost()).expect("listen");
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let mut stream = TcpStream::connect(addr).expect("connect");
            std::thread::spawn(move || {
                stream.set_read_timeout(Some(WAIT)).expect("timeout");
                let mut buf = [0; 4096];
                // Keep traffic flowing until the transport goes away under us.
                while !stop.load(Ordering::SeqCst) {
                    if stream.write_all(&[7; 512]).is_err() {
                        return true;
                    }
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return true,
                        Ok(_) => {}
                    }
                }
                false
            })
        })
        .collect();
    let client = h.transport.connect(addr, CONNECT_TIMEOUT);
    wait_for(
        &h.events,
        |e| matches!(e, NetEvent::Connected { conn, .. } if *conn == client),
    );
    std::thread::sleep(Duration::from_millis(50));
    h.transport.shutdown();
    h.recorder.after_shutdown.store(true, Ordering::SeqCst);
    for writer in writers {
        assert!(
            writer.join().expect("writer"),
            "the peer never saw the close"
        );
    }
    stop.store(true, Ordering::SeqCst);
    std::thread::sleep(QUIET);
    assert_eq!(h.recorder.late_events.load(Ordering::SeqCst), 0);
    // Calls after shutdown are harmless.
    assert!(h.transport.listen(localhost()).is_err());
    h.transport.send(client, Bytes::from_static(b"x"));
    h.transport.close(client);
    h.transport.shutdown();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(h.recorder.late_events.load(Ordering::SeqCst), 0);
}

#[test]
fn shutdown_from_the_handler_does_not_deadlock() {
    let recorder = Recorder {
        shutdown_on_data: true,
        ..Recorder::default()
    };
    let Some(h) = start(recorder) else {
        return;
    };
    let addr = h.transport.listen(localhost()).expect("listen");
    let mut client = TcpStream::connect(addr).expect("connect");
    client.write_all(b"bye").expect("write");
    wait_for(&h.events, |e| matches!(e, NetEvent::Data { .. }));
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(matches!(client.read(&mut [0; 8]), Ok(0) | Err(_)));
    assert!(drain_quiet(&h.events).is_empty());
    let Harness { transport, .. } = h;
    drop(transport); // joins the ring thread
}

#[test]
fn a_panicking_handler_stops_the_transport_cleanly() {
    let recorder = Recorder {
        panic_on_data: true,
        ..Recorder::default()
    };
    let Some(h) = start(recorder) else {
        return;
    };
    let addr = h.transport.listen(localhost()).expect("listen");
    let mut client = TcpStream::connect(addr).expect("connect");
    client.write_all(b"boom").expect("write");
    // The ring thread unwinds, cancels and reaps everything, and closes the sockets.
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(matches!(client.read(&mut [0; 8]), Ok(0) | Err(_)));
    h.transport.shutdown();
    h.transport.send(ConnId(1), Bytes::from_static(b"ignored"));
    assert!(h.transport.listen(localhost()).is_err());
}

#[test]
fn connect_with_an_unbounded_timeout_connects() {
    let Some(h) = start(Recorder::default()) else {
        return;
    };
    let listener = TcpListener::bind(localhost()).expect("bind");
    let conn = h
        .transport
        .connect(listener.local_addr().expect("addr"), Duration::MAX);
    assert!(matches!(next(&h.events), NetEvent::Connected { conn: c, .. } if c == conn));
}

#[test]
fn drop_joins_without_explicit_shutdown() {
    let Some(h) = start(echo_recorder()) else {
        return;
    };
    let (client, _) = connected_pair(&h);
    h.transport.send(client, Bytes::from_static(b"in flight"));
    let Harness {
        transport, events, ..
    } = h;
    drop(transport);
    // The handler's Weak cannot upgrade any more, and the thread is gone: the channel ends.
    let deadline = Instant::now() + WAIT;
    while events.recv_timeout(QUIET).is_ok() {
        assert!(Instant::now() < deadline);
    }
}

#[test]
fn fifty_concurrent_connections_echo_their_own_bytes() {
    let Some(h) = start(echo_recorder()) else {
        return;
    };
    let addr = h.transport.listen(localhost()).expect("listen");
    let clients: Vec<ConnId> = (0..50)
        .map(|_| h.transport.connect(addr, CONNECT_TIMEOUT))
        .collect();
    let mut expected: HashMap<ConnId, Vec<u8>> = HashMap::new();
    let mut got: HashMap<ConnId, Vec<u8>> = HashMap::new();
    let mut accepted = 0;
    let deadline = Instant::now() + WAIT;
    while accepted < 50 || expected.len() < 50 || got != expected {
        let left = deadline.saturating_duration_since(Instant::now());
        match h.events.recv_timeout(left).expect("progress") {
            NetEvent::Connected { conn, .. } => {
                assert!(clients.contains(&conn));
                let data = pattern(conn.0, 4096 + conn.0 as usize * 13);
                h.transport.send(conn, Bytes::from(data.clone()));
                expected.insert(conn, data);
                got.insert(conn, Vec::new());
            }
            NetEvent::Accepted { .. } => accepted += 1,
            NetEvent::Data { conn, bytes } if clients.contains(&conn) => {
                got.get_mut(&conn)
                    .expect("connected")
                    .extend_from_slice(&bytes);
            }
            NetEvent::Data { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    h.transport.shutdown();
}

#[test]
fn uring_listener_serves_a_std_client() {
    let Some(h) = start(echo_recorder()) else {
        return;
    };
    let addr = h.transport.listen(localhost()).expect("listen");
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    let data = pattern(11, 300_000);
    let writer = {
        let mut client = client.try_clone().expect("clone");
        let data = data.clone();
        std::thread::spawn(move || client.write_all(&data).expect("write"))
    };
    let mut back = vec![0; data.len()];
    client.read_exact(&mut back).expect("echo");
    writer.join().expect("writer");
    assert!(back == data);
    match next(&h.events) {
        NetEvent::Accepted { peer, .. } => assert_eq!(peer, client.local_addr().expect("addr")),
        other => panic!("expected Accepted, got {other:?}"),
    }
}

#[test]
fn uring_client_talks_to_a_std_listener() {
    let Some(h) = start(Recorder::default()) else {
        return;
    };
    let listener = TcpListener::bind(localhost()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conn = h.transport.connect(addr, CONNECT_TIMEOUT);
    // Queued before the connection is up: sent once it is.
    h.transport.send(conn, Bytes::from_static(b"early "));
    let (mut peer, _) = listener.accept().expect("accept");
    match next(&h.events) {
        NetEvent::Connected { conn: c, peer: p } => assert_eq!((c, p), (conn, addr)),
        other => panic!("expected Connected, got {other:?}"),
    }
    h.transport.send(conn, Bytes::from_static(b"ping"));
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = [0; 10];
    peer.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"early ping");
    peer.write_all(b"pong").expect("write");
    assert_eq!(read_data(&h.events, conn, 4), b"pong");
    drop(peer);
    assert!(matches!(next(&h.events), NetEvent::Closed { conn: c, error: None } if c == conn));
}

#[test]
fn unknown_connections_are_ignored() {
    let Some(h) = start(Recorder::default()) else {
        return;
    };
    h.transport
        .send(ConnId(12_345), Bytes::from_static(b"nobody"));
    h.transport.close(ConnId(12_345));
    assert_eq!(h.transport.queued_bytes(ConnId(12_345)), 0);
    assert!(drain_quiet(&h.events).is_empty());
}

// ---- latency comparison, by hand ----

/// Bytes per ping and per pong.
const PING_BYTES: usize = 64;
const ROUND_TRIPS: usize = 10_000;
const WARMUP_ROUND_TRIPS: usize = 1_000;

/// Ping-pong run entirely inside the handler, on the ring thread.
#[derive(Default)]
struct PingPong {
    transport: OnceLock<Weak<UringTransport>>,
    client: AtomicU64,
    state: Mutex<PingState>,
    done: OnceLock<Sender<Vec<Duration>>>,
}

#[derive(Default)]
struct PingState {
    server_pending: usize,
    client_pending: usize,
    sent_at: Option<Instant>,
    samples: Vec<Duration>,
}

impl PingPong {
    fn ping(&self, t: &UringTransport, conn: ConnId, state: &mut PingState) {
        state.sent_at = Some(Instant::now());
        t.send(conn, Bytes::from_static(&[1; PING_BYTES]));
    }
}

impl NetHandler for PingPong {
    fn on_event(&self, event: NetEvent) {
        let Some(t) = self.transport.get().and_then(Weak::upgrade) else {
            return;
        };
        let mut state = self.state.lock().expect("lock");
        match event {
            NetEvent::Connected { conn, .. } => {
                self.client.store(conn.0, Ordering::SeqCst);
                self.ping(&t, conn, &mut state);
            }
            NetEvent::Data { conn, bytes } if conn.0 == self.client.load(Ordering::SeqCst) => {
                state.client_pending += bytes.len();
                if state.client_pending < PING_BYTES {
                    return;
                }
                state.client_pending -= PING_BYTES;
                let rtt = state.sent_at.expect("ping sent").elapsed();
                state.samples.push(rtt);
                if state.samples.len() < WARMUP_ROUND_TRIPS + ROUND_TRIPS {
                    self.ping(&t, conn, &mut state);
                } else if let Some(done) = self.done.get() {
                    let _ = done.send(state.samples.split_off(WARMUP_ROUND_TRIPS));
                }
            }
            NetEvent::Data { conn, bytes } => {
                state.server_pending += bytes.len();
                while state.server_pending >= PING_BYTES {
                    state.server_pending -= PING_BYTES;
                    t.send(conn, Bytes::from_static(&[2; PING_BYTES]));
                }
            }
            _ => {}
        }
    }
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{label:<42} p50 {:>7.1} us   p99 {:>7.1} us   mean {:>7.1} us   ({} round trips)",
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
        samples.len()
    );
}

fn uring_in_handler() -> Option<Vec<Duration>> {
    let handler = Arc::new(PingPong::default());
    let (tx, rx) = crossbeam_channel::bounded(1);
    handler.done.set(tx).expect("fresh");
    let transport = match UringTransport::start(handler.clone()) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            println!("skipping io_uring: {e}");
            return None;
        }
    };
    handler
        .transport
        .set(Arc::downgrade(&transport))
        .expect("fresh");
    let addr = transport.listen(localhost()).expect("listen");
    transport.connect(addr, CONNECT_TIMEOUT);
    let samples = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("ping-pong finished");
    transport.shutdown();
    Some(samples)
}

fn uring_from_app_thread() -> Option<Vec<Duration>> {
    let h = start(echo_recorder())?;
    let (client, _) = connected_pair(&h);
    let ping = Bytes::from_static(&[1; PING_BYTES]);
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP_ROUND_TRIPS + ROUND_TRIPS {
        let started = Instant::now();
        h.transport.send(client, ping.clone());
        read_data(&h.events, client, PING_BYTES);
        if i >= WARMUP_ROUND_TRIPS {
            samples.push(started.elapsed());
        }
    }
    h.transport.shutdown();
    Some(samples)
}

fn std_blocking() -> Vec<Duration> {
    let listener = TcpListener::bind(localhost()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = [0; PING_BYTES];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf).expect("pong");
        }
    });
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let mut buf = [0; PING_BYTES];
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP_ROUND_TRIPS + ROUND_TRIPS {
        let started = Instant::now();
        c.write_all(&[1; PING_BYTES]).expect("ping");
        c.read_exact(&mut buf).expect("pong");
        if i >= WARMUP_ROUND_TRIPS {
            samples.push(started.elapsed());
        }
    }
    drop(c);
    server.join().expect("server");
    samples
}

#[test]
#[ignore = "latency comparison; run by hand with --release --ignored --nocapture"]
fn ping_pong_latency() {
    if let Some(samples) = uring_in_handler() {
        report("io_uring, both ends in the handler", samples);
    }
    if let Some(samples) = uring_from_app_thread() {
        report("io_uring, client on an application thread", samples);
    }
    report("std blocking sockets, two threads", std_blocking());
}
