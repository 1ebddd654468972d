//! The portable transport on real sockets, 127.0.0.1 only: every test waits on events with a
//! timeout, so a lost event fails the test instead of hanging it.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use logship_replicator::transport::portable::{PortableTransport, READ_BUFFER_BYTES};
use logship_replicator::transport::{ConnId, NetEvent, NetHandler, Transport};

/// Longest any single expected event may take.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to watch for events that must not come.
const QUIET_PERIOD: Duration = Duration::from_millis(300);
const LOCALHOST: &str = "127.0.0.1:0";

/// What a test handler does besides recording.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Record,
    /// Sends every `Data` back on its connection.
    Echo,
    /// Closes a connection on its first `Data`.
    CloseOnData,
    /// Calls `shutdown` on the first `Data`.
    ShutdownOnData,
}

struct TestHandler {
    events: Sender<NetEvent>,
    behaviour: Behaviour,
    transport: OnceLock<Weak<PortableTransport>>,
    /// Set by the test once `shutdown` returned; events after that are counted in `late`.
    shut_down: AtomicBool,
    late: AtomicUsize,
    /// Set by `ShutdownOnData` once `shutdown` returned inside the handler.
    shutdown_returned: AtomicBool,
}

impl NetHandler for TestHandler {
    fn on_event(&self, event: NetEvent) {
        if self.shut_down.load(Ordering::SeqCst) {
            self.late.fetch_add(1, Ordering::SeqCst);
        }
        if let NetEvent::Data { conn, bytes } = &event {
            if let Some(transport) = self.transport.get().and_then(Weak::upgrade) {
                match self.behaviour {
                    Behaviour::Record => {}
                    Behaviour::Echo => transport.send(*conn, bytes.clone().freeze()),
                    Behaviour::CloseOnData => transport.close(*conn),
                    Behaviour::ShutdownOnData => {
                        transport.shutdown();
                        self.shutdown_returned.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
        let _ = self.events.send(event);
    }
}

struct Node {
    transport: Arc<PortableTransport>,
    handler: Arc<TestHandler>,
    events: Receiver<NetEvent>,
}

impl Node {
    fn start(behaviour: Behaviour) -> Node {
        let (tx, events) = crossbeam_channel::unbounded();
        let handler = Arc::new(TestHandler {
            events: tx,
            behaviour,
            transport: OnceLock::new(),
            shut_down: AtomicBool::new(false),
            late: AtomicUsize::new(0),
            shutdown_returned: AtomicBool::new(false),
        });
        let transport = Arc::new(
            PortableTransport::start(Arc::clone(&handler) as Arc<dyn NetHandler>)
                .expect("start transport"),
        );
        let _ = handler.transport.set(Arc::downgrade(&transport));
        Node {
            transport,
            handler,
            events,
        }
    }

    fn next(&self) -> NetEvent {
        self.events
            .recv_timeout(EVENT_TIMEOUT)
            .expect("an event within the timeout")
    }

    fn expect_quiet(&self) {
        if let Ok(event) = self.events.recv_timeout(QUIET_PERIOD) {
            panic!("unexpected event: {event:?}");
        }
    }

    fn listen(&self) -> SocketAddr {
        self.transport
            .listen(LOCALHOST.parse().expect("address"))
            .expect("listen")
    }

    fn connect(&self, addr: SocketAddr) -> ConnId {
        let conn = self.transport.connect(addr, EVENT_TIMEOUT);
        match self.next() {
            NetEvent::Connected { conn: c, peer } => {
                assert_eq!((c, peer), (conn, addr));
            }
            other => panic!("expected Connected, got {other:?}"),
        }
        conn
    }

    fn accepted(&self, listener: SocketAddr) -> ConnId {
        match self.next() {
            NetEvent::Accepted {
                listener: l, conn, ..
            } => {
                assert_eq!(l, listener);
                conn
            }
            other => panic!("expected Accepted, got {other:?}"),
        }
    }

    /// Collects `Data` of `conn` until `len` bytes arrived.
    fn receive(&self, conn: ConnId, len: usize) -> Vec<u8> {
        let mut got = Vec::with_capacity(len);
        while got.len() < len {
            match self.next() {
                NetEvent::Data { conn: c, bytes } if c == conn => {
                    assert!(!bytes.is_empty() && bytes.len() <= READ_BUFFER_BYTES);
                    got.extend_from_slice(&bytes);
                }
                other => panic!("expected Data of {conn}, got {other:?}"),
            }
        }
        got
    }

    fn closed(&self, conn: ConnId) -> Option<std::io::Error> {
        match self.next() {
            NetEvent::Closed { conn: c, error } if c == conn => error,
            other => panic!("expected Closed of {conn}, got {other:?}"),
        }
    }

    /// Shuts down and records that every later event is late.
    fn shutdown(&self) {
        self.transport.shutdown();
        self.handler.shut_down.store(true, Ordering::SeqCst);
    }
}

/// Deterministic bytes that differ at every offset of a long run, so a lost, repeated or
/// reordered chunk shows.
fn pattern(len: usize) -> Bytes {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect::<Vec<u8>>()
        .into()
}

/// A listener whose accept queue is full, so a connect to it hangs in SYN_SENT; `None` where
/// the host does not behave that way.
#[allow(unsafe_code)]
fn full_backlog_listener() -> Option<(TcpListener, Vec<TcpStream>)> {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind(LOCALHOST).expect("bind");
    // SAFETY: listen(2) on a descriptor `listener` owns; no pointers. It lowers the backlog.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
    assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
    let addr = listener.local_addr().expect("local addr");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Some((listener, fillers)),
            Err(e) => panic!("filling the backlog: {e}"),
        }
    }
    None
}

/// A peer that accepts one connection, reads nothing for 300 ms (so the sender's socket
/// buffers fill and the rest queues), then reads `expected.len()` bytes.
struct SlowReader {
    addr: SocketAddr,
    done: Receiver<Result<bool, String>>,
    thread: thread::JoinHandle<()>,
}

impl SlowReader {
    fn start(expected: Bytes) -> SlowReader {
        let listener = TcpListener::bind(LOCALHOST).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let thread = thread::spawn(move || {
            let (mut peer, _) = listener.accept().expect("accept");
            peer.set_read_timeout(Some(EVENT_TIMEOUT))
                .expect("read timeout");
            thread::sleep(Duration::from_millis(300));
            let mut got = vec![0u8; expected.len()];
            let result = peer.read_exact(&mut got).map(|()| got == expected[..]);
            let _ = done_tx.send(result.map_err(|e| e.to_string()));
        });
        SlowReader { addr, done, thread }
    }

    /// Asserts that every byte arrived, in order.
    fn check(self) {
        let outcome = (self.done.recv_timeout(Duration::from_secs(60))).expect("reader finished");
        assert_eq!(outcome, Ok(true), "bytes arrived complete and in order");
        self.thread.join().expect("reader thread");
    }
}

#[test]
fn echo_round_trip() {
    let server = Node::start(Behaviour::Echo);
    let client = Node::start(Behaviour::Record);
    let addr = server.listen();
    let conn = client.connect(addr);
    let accepted = server.accepted(addr);

    client.transport.send(conn, Bytes::from_static(b"hello, "));
    client.transport.send(conn, Bytes::from_static(b"world"));
    assert_eq!(client.receive(conn, 12), b"hello, world");
    assert_eq!(server.receive(accepted, 12), b"hello, world");
    assert_eq!(client.transport.queued_bytes(conn), 0);
    assert_eq!(client.transport.name(), "portable");
}

#[test]
fn large_send_arrives_complete_and_in_order_without_blocking_the_caller() {
    const TOTAL: usize = 64 << 20;
    let client = Node::start(Behaviour::Record);
    let data = pattern(TOTAL);
    let reader = SlowReader::start(data.clone());
    let conn = client.connect(reader.addr);
    // One huge buffer, then many small ones that must queue behind it.
    let split = TOTAL - (4 << 20);
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    client.transport.send(conn, data.slice(..split));
    slowest = slowest.max(started.elapsed());
    assert!(
        client.transport.queued_bytes(conn) > 0,
        "64 MiB cannot fit in socket buffers"
    );
    for start in (split..TOTAL).step_by(4096) {
        let started = Instant::now();
        client
            .transport
            .send(conn, data.slice(start..TOTAL.min(start + 4096)));
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a send blocked for {slowest:?}"
    );

    reader.check();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while client.transport.queued_bytes(conn) > 0 {
        assert!(Instant::now() < deadline, "queue never drained");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn parts_sent_together_arrive_in_order_when_the_socket_takes_only_some() {
    const TOTAL: usize = 32 << 20;
    let client = Node::start(Behaviour::Record);
    let data = pattern(TOTAL);
    // Nothing read at first: the first write takes only part of the parts.
    let reader = SlowReader::start(data.clone());
    let conn = client.connect(reader.addr);
    let t = &client.transport;
    common::send_in_frames(&data, |p| t.send_parts(conn, p), || t.queued_bytes(conn));

    reader.check();
}

#[test]
fn large_receive_arrives_complete_in_bounded_chunks() {
    const TOTAL: usize = 8 << 20;
    let node = Node::start(Behaviour::Record);
    let addr = node.listen();
    let data = pattern(TOTAL);
    let to_send = data.clone();
    let writer = thread::spawn(move || {
        let mut peer = TcpStream::connect(addr).expect("connect");
        peer.write_all(&to_send).expect("write");
        peer
    });
    let conn = node.accepted(addr);
    assert_eq!(node.receive(conn, TOTAL), data[..]);
    drop(writer.join().expect("writer"));
    assert!(node.closed(conn).is_none(), "peer's FIN is a clean close");
}

#[test]
fn sends_before_connected_go_out_once_connected() {
    let client = Node::start(Behaviour::Record);
    let server = Node::start(Behaviour::Record);
    let addr = server.listen();
    let conn = client.transport.connect(addr, EVENT_TIMEOUT);
    client.transport.send(conn, Bytes::from_static(b"early"));
    assert!(matches!(client.next(), NetEvent::Connected { conn: c, .. } if c == conn));
    client.transport.send(conn, Bytes::from_static(b" late"));
    let accepted = server.accepted(addr);
    assert_eq!(server.receive(accepted, 10), b"early late");
}

#[test]
fn connect_to_closed_port_fails() {
    let client = Node::start(Behaviour::Record);
    let (_held, addr) = common::refusing_addr();
    let conn = client.transport.connect(addr, EVENT_TIMEOUT);
    match client.next() {
        NetEvent::ConnectFailed { conn: c, error } => {
            assert_eq!(c, conn);
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    client.transport.send(conn, Bytes::from_static(b"dropped"));
    assert_eq!(client.transport.queued_bytes(conn), 0);
    client.expect_quiet();
}

#[test]
fn connect_times_out() {
    let Some((listener, _fillers)) = full_backlog_listener() else {
        eprintln!("skipped: this host completes connects to a full accept queue");
        return;
    };
    let client = Node::start(Behaviour::Record);
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let conn = client
        .transport
        .connect(listener.local_addr().expect("addr"), timeout);
    match client.next() {
        NetEvent::ConnectFailed { conn: c, error } => {
            assert_eq!(c, conn);
            assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
        }
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(1),
        "{elapsed:?}"
    );
    client.expect_quiet();
}

#[test]
fn close_while_connecting_aborts_the_connect() {
    let Some((listener, _fillers)) = full_backlog_listener() else {
        eprintln!("skipped: this host completes connects to a full accept queue");
        return;
    };
    let client = Node::start(Behaviour::Record);
    let conn = client
        .transport
        .connect(listener.local_addr().expect("addr"), EVENT_TIMEOUT);
    client
        .transport
        .send(conn, Bytes::from_static(b"never sent"));
    thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    client.transport.close(conn);
    match client.next() {
        NetEvent::ConnectFailed { conn: c, error } => {
            assert_eq!(c, conn);
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::ConnectionAborted,
                "{error}"
            );
        }
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    client.expect_quiet();
}

#[test]
fn close_gives_exactly_one_closed() {
    let server = Node::start(Behaviour::Record);
    let client = Node::start(Behaviour::Record);
    let addr = server.listen();
    let conn = client.connect(addr);
    let accepted = server.accepted(addr);

    client.transport.close(conn);
    client.transport.close(conn);
    assert!(
        client.closed(conn).is_none(),
        "a local close reports no error"
    );
    client.transport.close(conn);
    client.transport.send(conn, Bytes::from_static(b"dropped"));
    assert_eq!(client.transport.queued_bytes(conn), 0);
    assert!(
        server.closed(accepted).is_none(),
        "the peer sees a clean close"
    );
    client.expect_quiet();
    server.expect_quiet();
}

#[test]
fn close_from_inside_the_handler() {
    let server = Node::start(Behaviour::CloseOnData);
    let client = Node::start(Behaviour::Record);
    let addr = server.listen();
    let conn = client.connect(addr);
    let accepted = server.accepted(addr);
    client.transport.send(conn, Bytes::from_static(b"bye"));
    assert_eq!(server.receive(accepted, 3), b"bye");
    assert!(server.closed(accepted).is_none());
    assert!(client.closed(conn).is_none());
    server.expect_quiet();
}

#[test]
fn peer_reset_gives_one_closed_and_later_sends_are_dropped() {
    let client = Node::start(Behaviour::Record);
    let listener = TcpListener::bind(LOCALHOST).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conn = client.connect(addr);
    let (peer, _) = listener.accept().expect("accept");
    client.transport.send(conn, Bytes::from_static(b"unread"));
    thread::sleep(Duration::from_millis(50));
    // Closing with unread bytes makes the kernel answer with a reset instead of a FIN.
    drop(peer);
    let error = client.closed(conn).expect("a reset is an error");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    for _ in 0..10 {
        client
            .transport
            .send(conn, Bytes::from_static(b"into the void"));
    }
    client.expect_quiet();
}

#[test]
fn write_error_gives_one_closed() {
    let client = Node::start(Behaviour::Record);
    let listener = TcpListener::bind(LOCALHOST).expect("bind");
    let conn = client.connect(listener.local_addr().expect("addr"));
    let (peer, _) = listener.accept().expect("accept");
    client.transport.send(conn, Bytes::from_static(b"unread"));
    thread::sleep(Duration::from_millis(50));
    drop(peer);
    // Race the reset: sends from this thread may hit EPIPE/ECONNRESET first, or the reader may.
    for _ in 0..1000 {
        client
            .transport
            .send(conn, Bytes::from_static(&[7u8; 1024]));
    }
    assert!(client.closed(conn).is_some());
    client.expect_quiet();
}

#[test]
fn peer_half_close_gives_closed() {
    let node = Node::start(Behaviour::Record);
    let addr = node.listen();
    let mut peer = TcpStream::connect(addr).expect("connect");
    let conn = node.accepted(addr);
    peer.write_all(b"last words").expect("write");
    peer.shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    assert_eq!(node.receive(conn, 10), b"last words");
    assert!(node.closed(conn).is_none());
    node.expect_quiet();
}

#[test]
fn garbage_and_abrupt_peers_do_not_disturb_others() {
    let node = Node::start(Behaviour::Echo);
    let addr = node.listen();
    for _ in 0..20 {
        let mut peer = TcpStream::connect(addr).expect("connect");
        peer.write_all(&pattern(10_000)).expect("write");
        // Dropped without reading the echo: the kernel resets, or closes cleanly.
    }
    let mut events: HashMap<ConnId, usize> = HashMap::new();
    let mut closed = 0;
    while closed < 20 {
        match node.next() {
            NetEvent::Accepted { conn, .. } => assert!(events.insert(conn, 0).is_none()),
            NetEvent::Data { conn, bytes } => {
                *events.get_mut(&conn).expect("Data after Accepted") += bytes.len();
            }
            NetEvent::Closed { conn, .. } => {
                assert!(events.remove(&conn).is_some(), "one Closed after Accepted");
                closed += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    node.expect_quiet();
    let client = Node::start(Behaviour::Record);
    let conn = client.connect(addr);
    client
        .transport
        .send(conn, Bytes::from_static(b"still serving"));
    assert_eq!(client.receive(conn, 13), b"still serving");
}

#[test]
fn many_concurrent_connections() {
    const CONNS: usize = 50;
    let server = Node::start(Behaviour::Echo);
    let client = Node::start(Behaviour::Record);
    let addr = server.listen();
    let conns: Vec<ConnId> = (0..CONNS)
        .map(|_| client.transport.connect(addr, EVENT_TIMEOUT))
        .collect();
    let message = |conn: ConnId| format!("message for connection {conn}").into_bytes();
    let mut received: HashMap<ConnId, Vec<u8>> = HashMap::new();
    let mut connected = 0;
    let total: usize = conns.iter().map(|&c| message(c).len()).sum();
    let mut got = 0;
    while connected < CONNS || got < total {
        match client.next() {
            NetEvent::Connected { conn, .. } => {
                connected += 1;
                client.transport.send(conn, message(conn).into());
            }
            NetEvent::Data { conn, bytes } => {
                got += bytes.len();
                received.entry(conn).or_default().extend_from_slice(&bytes);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for conn in conns {
        assert_eq!(received[&conn], message(conn), "connection {conn}");
    }
}

#[test]
fn shutdown_joins_and_delivers_nothing_after() {
    let node = Node::start(Behaviour::Echo);
    let addr = node.listen();
    // Peers that keep writing, so readers are busy delivering when shutdown starts.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let mut peer = TcpStream::connect(addr).expect("connect");
            thread::spawn(move || {
                let chunk = [1u8; 4096];
                while !stop.load(Ordering::SeqCst) && peer.write_all(&chunk).is_ok() {}
            })
        })
        .collect();
    // An outgoing connection whose writer blocks on a peer that never reads.
    let sink = TcpListener::bind(LOCALHOST).expect("bind");
    let stuck = node
        .transport
        .connect(sink.local_addr().expect("addr"), EVENT_TIMEOUT);
    let (_sink_peer, _) = sink.accept().expect("accept");
    node.transport.send(stuck, pattern(32 << 20));
    // And a connect that hangs, where the host lets one.
    let backlog = full_backlog_listener();
    if let Some((listener, _)) = &backlog {
        node.transport
            .connect(listener.local_addr().expect("addr"), EVENT_TIMEOUT);
    }
    thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    node.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    thread::sleep(QUIET_PERIOD);
    assert_eq!(
        node.handler.late.load(Ordering::SeqCst),
        0,
        "events after shutdown returned"
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "listener closed"
    );
    node.transport.send(stuck, Bytes::from_static(b"after"));
    assert!(
        node.transport.connect(addr, EVENT_TIMEOUT) > stuck,
        "ids keep counting"
    );
    assert!(node
        .transport
        .listen(LOCALHOST.parse().expect("addr"))
        .is_err());
    thread::sleep(QUIET_PERIOD);
    assert_eq!(
        node.handler.late.load(Ordering::SeqCst),
        0,
        "events after shutdown returned"
    );
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().expect("writer");
    }
}

#[test]
fn shutdown_from_inside_the_handler() {
    let node = Node::start(Behaviour::ShutdownOnData);
    let addr = node.listen();
    let mut peers: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    for peer in &mut peers {
        peer.write_all(b"x").expect("write");
    }
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !node.handler.shutdown_returned.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "shutdown inside the handler never returned"
        );
        thread::sleep(Duration::from_millis(5));
    }
    node.handler.shut_down.store(true, Ordering::SeqCst);
    thread::sleep(QUIET_PERIOD);
    assert_eq!(node.handler.late.load(Ordering::SeqCst), 0);
}

#[test]
fn concurrent_shutdowns_from_handlers_and_outside() {
    let node = Node::start(Behaviour::ShutdownOnData);
    let addr = node.listen();
    let stop = Arc::new(AtomicBool::new(false));
    // All connect before any writes: the first Data closes the listener.
    let peers: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let writers: Vec<_> = peers
        .into_iter()
        .map(|mut peer| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) && peer.write_all(b"x").is_ok() {
                    thread::sleep(Duration::from_micros(100));
                }
            })
        })
        .collect();
    // Every reader's first Data calls shutdown; this thread calls it too, once they have begun.
    loop {
        if let NetEvent::Data { .. } = node.next() {
            break;
        }
    }
    let started = Instant::now();
    node.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    thread::sleep(QUIET_PERIOD);
    assert_eq!(
        node.handler.late.load(Ordering::SeqCst),
        0,
        "events after shutdown returned"
    );
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().expect("writer");
    }
}

#[test]
fn drop_shuts_down() {
    let node = Node::start(Behaviour::Record);
    let addr = node.listen();
    let _peer = TcpStream::connect(addr).expect("connect");
    let _ = node.accepted(addr);
    let Node {
        transport,
        handler,
        events,
    } = node;
    drop(transport);
    handler.shut_down.store(true, Ordering::SeqCst);
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "listener closed"
    );
    assert!(events.recv_timeout(QUIET_PERIOD).is_err());
    assert_eq!(handler.late.load(Ordering::SeqCst), 0);
}

#[test]
fn unknown_connections_are_ignored() {
    let node = Node::start(Behaviour::Record);
    node.transport
        .send(ConnId(12345), Bytes::from_static(b"nobody"));
    node.transport.close(ConnId(12345));
    assert_eq!(node.transport.queued_bytes(ConnId(12345)), 0);
    node.transport.send(ConnId(0), Bytes::new());
    node.expect_quiet();
}

#[test]
fn ipv6_loopback_round_trip() {
    let server = Node::start(Behaviour::Echo);
    let client = Node::start(Behaviour::Record);
    let Ok(addr) = server.transport.listen("[::1]:0".parse().expect("addr")) else {
        eprintln!("skipped: no IPv6 loopback on this host");
        return;
    };
    let conn = client.connect(addr);
    client.transport.send(conn, Bytes::from_static(b"v6"));
    assert_eq!(client.receive(conn, 2), b"v6");
}
