//! `UringTransport`'s direct sends (a `send` from a thread other than the ring thread writes to
//! the socket itself while nothing of the connection is queued) over real sockets on
//! 127.0.0.1: order across threads and the ring thread, a send that the kernel takes only in
//! part, sends racing a close, and a failing direct write. Every wait is bounded; every test
//! prints why it skips when io_uring is unavailable here.

#[path = "common/uring.rs"]
mod uring_common;

use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use logship_replicator::transport::uring::UringTransport;
use logship_replicator::transport::{ConnId, NetEvent, NetHandler, Transport};
use uring_common::{localhost, start_wired, wait_for_within, Wiring};

/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);
/// How long to watch for events that must not come.
const QUIET: Duration = Duration::from_millis(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The tag of frames the handler sends from the ring thread.
const RING_TAG: u8 = 255;
/// Frame header: tag, sequence number, payload length.
const HEADER_BYTES: usize = 9;

/// Forwards every event to a channel; with `ring_frames`, answers every byte received on the
/// connection in `client` with one frame sent from the ring thread.
#[derive(Default)]
struct Handler {
    wiring: Wiring,
    ring_frames: bool,
    client: AtomicU64,
    ring_seq: AtomicU32,
}

impl NetHandler for Handler {
    fn on_event(&self, event: NetEvent) {
        if let NetEvent::Data { conn, bytes } = &event {
            let t = self.wiring.transport();
            if let (true, Some(t)) = (self.ring_frames, t) {
                if conn.0 == self.client.load(Ordering::SeqCst) {
                    for _ in 0..bytes.len() {
                        let seq = self.ring_seq.fetch_add(1, Ordering::SeqCst);
                        t.send(*conn, frame(RING_TAG, seq, 300 + seq as usize % 5_000));
                    }
                }
            }
        }
        self.wiring.forward(event);
    }
}

struct Harness {
    transport: Arc<UringTransport>,
    handler: Arc<Handler>,
    events: Receiver<NetEvent>,
}

/// Starts a transport with `handler`, or says why the test is skipped.
fn start(handler: Handler) -> Option<Harness> {
    let handler = Arc::new(handler);
    let (transport, events) = start_wired(&handler, |h| &h.wiring)?;
    Some(Harness {
        transport,
        handler,
        events,
    })
}

/// Events until `pred` matches one, which is returned.
fn wait_for(events: &Receiver<NetEvent>, pred: impl FnMut(&NetEvent) -> bool) -> NetEvent {
    wait_for_within(events, WAIT, pred).0
}

/// Connects the transport to a listener of its own on 127.0.0.1 (port 0); returns the
/// connection and the accepted peer socket.
fn connect(h: &Harness) -> (ConnId, TcpStream) {
    let listener = TcpListener::bind(localhost()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conn = h.transport.connect(addr, CONNECT_TIMEOUT);
    let (peer, _) = listener.accept().expect("accept");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    wait_for(
        &h.events,
        |e| matches!(e, NetEvent::Connected { conn: c, .. } if *c == conn),
    );
    (conn, peer)
}

/// The payload byte `i` of frame `seq` of `tag`.
fn payload_byte(tag: u8, seq: u32, i: usize) -> u8 {
    (u32::from(tag) * 31 + seq * 7 + i as u32) as u8
}

/// A frame: tag, sequence number and payload length, then the payload.
fn frame(tag: u8, seq: u32, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(HEADER_BYTES + len);
    out.push(tag);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&u32::try_from(len).expect("small").to_le_bytes());
    out.extend((0..len).map(|i| payload_byte(tag, seq, i)));
    Bytes::from(out)
}

/// Reads frames from `peer` until `expected` frames of each tag (by index) arrived; asserts
/// each is intact and each tag's sequence numbers count up from 0. Sleeps now and then, so
/// the sender's socket buffer fills and sends queue.
fn read_frames(peer: &mut TcpStream, expected: &[(u8, u32)]) {
    let mut next: Vec<(u8, u32)> = expected.iter().map(|&(tag, _)| (tag, 0)).collect();
    let mut header = [0; HEADER_BYTES];
    let mut frames = 0u64;
    while next.iter().zip(expected).any(|(n, e)| n.1 < e.1) {
        peer.read_exact(&mut header).expect("header");
        let tag = header[0];
        let seq = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(header[5..9].try_into().expect("4 bytes")) as usize;
        let slot = next.iter_mut().find(|n| n.0 == tag);
        let slot = slot.unwrap_or_else(|| panic!("frame of unknown tag {tag}: torn stream"));
        assert_eq!(seq, slot.1, "tag {tag}: out of order");
        slot.1 += 1;
        let mut payload = vec![0; len];
        peer.read_exact(&mut payload).expect("payload");
        let bad = (0..len).find(|&i| payload[i] != payload_byte(tag, seq, i));
        assert!(
            bad.is_none(),
            "tag {tag} seq {seq}: payload corrupt at {bad:?}"
        );
        frames += 1;
        if frames.is_multiple_of(997) {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits until the transport holds nothing for `conn`.
fn await_drained(t: &UringTransport, conn: ConnId) {
    let deadline = Instant::now() + WAIT;
    while t.queued_bytes(conn) > 0 {
        assert!(Instant::now() < deadline, "queued_bytes never drained");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Frames one sender thread sends.
const FRAMES_PER_THREAD: u32 = 1_500;
const SENDER_THREADS: u8 = 4;
/// Bytes the peer writes, each answered by one frame from the ring thread.
const TICKS: u32 = 400;

/// The payload length of frame `seq`: mostly small, every 50th up to about 1 MiB, so writes
/// fill the socket buffer and are taken only in part.
fn frame_len(seq: u32) -> usize {
    if seq % 50 == 49 {
        (200 << 10) + (seq as usize * 7919) % (800 << 10)
    } else {
        16 + (seq as usize * 131) % 2_000
    }
}

#[test]
fn sends_from_threads_and_the_ring_thread_keep_each_senders_order() {
    let handler = Handler {
        ring_frames: true,
        ..Handler::default()
    };
    let Some(h) = start(handler) else {
        return;
    };
    let (conn, mut peer) = connect(&h);
    h.handler.client.store(conn.0, Ordering::SeqCst);
    let mut ticker = peer.try_clone().expect("clone");
    let ticks = thread::spawn(move || {
        for _ in 0..TICKS {
            std::io::Write::write_all(&mut ticker, &[1]).expect("tick");
            thread::sleep(Duration::from_micros(500));
        }
    });
    let senders: Vec<_> = (0..SENDER_THREADS)
        .map(|tag| {
            let t = Arc::clone(&h.transport);
            thread::spawn(move || {
                for seq in 0..FRAMES_PER_THREAD {
                    t.send(conn, frame(tag, seq, frame_len(seq)));
                }
            })
        })
        .collect();
    let mut expected: Vec<(u8, u32)> = (0..SENDER_THREADS)
        .map(|tag| (tag, FRAMES_PER_THREAD))
        .collect();
    expected.push((RING_TAG, TICKS));
    read_frames(&mut peer, &expected);
    for s in senders {
        s.join().expect("sender");
    }
    ticks.join().expect("ticker");
    await_drained(&h.transport, conn);
    h.transport.shutdown();
}

#[test]
fn a_send_of_several_mib_taken_in_part_arrives_whole_and_before_later_sends() {
    let Some(h) = start(Handler::default()) else {
        return;
    };
    let (conn, mut peer) = connect(&h);
    let big = frame(0, 0, 12 << 20);
    h.transport.send(conn, big);
    // Nobody reads yet: loopback buffers hold a few MiB at most.
    let queued = h.transport.queued_bytes(conn);
    assert!(queued > 0, "the kernel took all of 12 MiB at once");
    for seq in 1..200 {
        h.transport.send(conn, frame(0, seq, 100));
    }
    read_frames(&mut peer, &[(0, 200)]);
    await_drained(&h.transport, conn);
    h.transport.shutdown();
}

/// Rounds of close-then-reconnect; each gives the new connection a chance at the old one's
/// descriptor number.
const REUSE_ROUNDS: usize = 30;

#[test]
fn sends_racing_a_close_never_reach_the_connection_that_reuses_its_descriptor() {
    let Some(h) = start(Handler::default()) else {
        return;
    };
    for round in 0..REUSE_ROUNDS {
        let (old, old_peer) = connect(&h);
        let drain = thread::spawn(move || {
            let mut old_peer = old_peer;
            let mut sink = vec![0; 64 << 10];
            while matches!(old_peer.read(&mut sink), Ok(n) if n > 0) {}
        });
        let stop = Arc::new(AtomicBool::new(false));
        let spammer = {
            let (t, stop) = (Arc::clone(&h.transport), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    t.send(old, Bytes::from_static(&[b'A'; 512]));
                }
            })
        };
        thread::sleep(Duration::from_millis(2));
        h.transport.close(old);
        wait_for(
            &h.events,
            |e| matches!(e, NetEvent::Closed { conn, .. } if *conn == old),
        );
        let (new, mut new_peer) = connect(&h);
        h.transport.send(new, Bytes::from_static(&[b'B'; 64]));
        let mut got = vec![0; 64];
        new_peer
            .read_exact(&mut got)
            .expect("the new connection's bytes");
        // Keep the old connection's sender going a little longer on the new descriptor.
        thread::sleep(Duration::from_millis(5));
        stop.store(true, Ordering::SeqCst);
        spammer.join().expect("spammer");
        h.transport.close(new);
        let mut rest = Vec::new();
        new_peer.read_to_end(&mut rest).expect("eof");
        got.extend_from_slice(&rest);
        let stray = got.iter().filter(|&&b| b != b'B').count();
        assert_eq!(
            stray, 0,
            "round {round}: {stray} bytes of the closed connection arrived"
        );
        assert_eq!(got.len(), 64, "round {round}");
        drain.join().expect("drain");
        wait_for(
            &h.events,
            |e| matches!(e, NetEvent::Closed { conn, .. } if *conn == new),
        );
        assert_eq!(h.transport.queued_bytes(old), 0);
    }
    h.transport.shutdown();
}

#[test]
fn direct_sends_into_a_reset_connection_end_it_with_one_closed() {
    let Some(h) = start(Handler::default()) else {
        return;
    };
    let (conn, peer) = connect(&h);
    // Closing a socket with unread bytes makes the kernel send a reset instead of a FIN.
    h.transport.send(conn, Bytes::from_static(b"unread"));
    assert_eq!(peer.peek(&mut [0; 1]).expect("peek"), 1);
    drop(peer);
    let deadline = Instant::now() + WAIT;
    let error = loop {
        assert!(Instant::now() < deadline, "no Closed after the reset");
        h.transport.send(conn, Bytes::from_static(b"into the void"));
        match h.events.recv_timeout(Duration::from_millis(1)) {
            Ok(NetEvent::Closed { conn: c, error }) if c == conn => break error,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
    };
    // Whichever saw the reset first, the receive or a direct write, reports it; a receive that
    // comes after a write consumed the error sees only the end of the stream.
    if let Some(error) = error {
        assert!(
            matches!(
                error.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ),
            "{error}"
        );
    }
    h.transport.send(conn, Bytes::from_static(b"after"));
    assert!(h.events.recv_timeout(QUIET).is_err(), "events after Closed");
    assert_eq!(h.transport.queued_bytes(conn), 0);
}
