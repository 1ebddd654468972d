//! The mux against a scripted node: a listener on 127.0.0.1 whose connections answer each
//! append as a test says (answer, stay silent, close, or send bytes that are no frame).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::*;
use crate::protocol::frame::{FrameDecoder, DEFAULT_MAX_BODY_BYTES};
use crate::protocol::{ClientStatus, Msg};

/// What the scripted node does with append `id` on its connection number `conn`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    Answer,
    Silent,
    Close,
    Garbage,
    /// Answers twice: the second is an answer to no request.
    Twice,
}

type Script = Arc<dyn Fn(usize, u64) -> Act + Send + Sync>;

/// The LSN the scripted node gives append `id` on connection `conn`.
fn lsn_of(conn: usize, id: u64) -> Lsn {
    Lsn(conn as u64 * 1_000_000 + id)
}

/// A scripted node: accepts `conns` connections, each served by a thread of its own.
struct Scripted {
    addr: SocketAddr,
    accepter: JoinHandle<Vec<JoinHandle<()>>>,
}

impl Scripted {
    fn start(conns: usize, script: Script) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepter = std::thread::spawn(move || {
            (0..conns)
                .map(|conn| {
                    let (socket, _) = listener.accept().unwrap();
                    let script = Arc::clone(&script);
                    std::thread::spawn(move || serve(socket, conn, &*script))
                })
                .collect()
        });
        Scripted { addr, accepter }
    }

    /// `conns` clients connected in order, so client `i` is the node's connection `i`.
    fn clients(&self, conns: usize) -> Vec<Client> {
        (0..conns)
            // The listener's accept queue keeps the order of the connects.
            .map(|_| Client::connect(self.addr, Duration::from_secs(10)).unwrap())
            .collect()
    }

    fn join(self) {
        for t in self.accepter.join().unwrap() {
            t.join().unwrap();
        }
    }
}

/// The scripted node's answer to append `id` on its connection `conn`.
fn answer(conn: usize, id: u64) -> Bytes {
    Msg::AppendResponse {
        id,
        status: ClientStatus::Ok,
        lsn: lsn_of(conn, id),
        message: String::new(),
    }
    .encode()
}

fn serve(mut socket: TcpStream, conn: usize, script: &(dyn Fn(usize, u64) -> Act + Sync)) {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_BODY_BYTES);
    let mut buf = vec![0; 64 << 10];
    loop {
        let n = match socket.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        let mut out = Vec::new();
        while let Some(frame) = decoder.next_frame().unwrap() {
            let Ok(Msg::AppendRequest { id, .. }) = Msg::decode(&frame) else {
                panic!("the mux sent something other than an append");
            };
            match script(conn, id) {
                Act::Answer => out.extend_from_slice(&answer(conn, id)),
                Act::Twice => {
                    for _ in 0..2 {
                        out.extend_from_slice(&answer(conn, id));
                    }
                }
                Act::Silent => {}
                Act::Close => return,
                Act::Garbage => out.extend_from_slice(&[0xff; 64]),
            }
        }
        if socket.write_all(&out).is_err() {
            return;
        }
    }
}

/// Waits until `want` events came, or the mux has nothing in flight and nothing came for a
/// while (then the test's assertions say what is missing).
fn events_until(mux: &mut ClientMux, want: usize) -> Vec<MuxEvent> {
    let mut events = Vec::new();
    for _ in 0..2_000 {
        if events.len() >= want {
            break;
        }
        mux.wait(Duration::from_millis(10), &mut events).unwrap();
    }
    events
}

fn payload(i: usize) -> Bytes {
    Bytes::from(vec![i as u8; 100])
}

#[test]
fn answers_come_back_on_their_connection_in_request_order() {
    let node = Scripted::start(3, Arc::new(|_, _| Act::Answer));
    let mut mux = ClientMux::new(node.clients(3), Duration::from_secs(10)).unwrap();
    let mut sent = vec![Vec::new(); 3];
    for i in 0..5 {
        for (conn, ids) in sent.iter_mut().enumerate() {
            let level = DurabilityLevel::Local;
            ids.push(mux.send_append(conn, payload(i), level).unwrap());
        }
    }
    assert_eq!(mux.in_flight(1), 5);
    let events = events_until(&mut mux, 15);
    let mut answered = vec![Vec::new(); 3];
    for e in events {
        let MuxEvent::Answered {
            conn, id, outcome, ..
        } = e
        else {
            panic!("an unexpected event: {e:?}");
        };
        assert_eq!(outcome.unwrap(), lsn_of(conn, id));
        answered[conn].push(id);
    }
    assert_eq!(
        answered, sent,
        "each connection's answers, in its request order"
    );
    assert_eq!((0..3).map(|c| mux.in_flight(c)).sum::<usize>(), 0);
    drop(mux);
    node.join();
}

#[test]
fn a_closed_connection_fails_once_and_the_others_go_on() {
    let node = Scripted::start(2, Arc::new(|conn, _| [Act::Answer, Act::Close][conn]));
    let mut mux = ClientMux::new(node.clients(2), Duration::from_secs(10)).unwrap();
    let level = DurabilityLevel::Local;
    mux.send_append(0, payload(0), level).unwrap();
    mux.send_append(1, payload(1), level).unwrap();
    let events = events_until(&mut mux, 2);
    assert_eq!(events.len(), 2, "{events:?}");
    let failed: Vec<_> = (events.iter())
        .filter_map(|e| match e {
            MuxEvent::Failed { conn, error } => Some((*conn, error.to_string())),
            MuxEvent::Answered { conn, .. } => {
                assert_eq!(*conn, 0);
                None
            }
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, 1);
    assert!(!mux.is_open(1) && mux.is_open(0));
    assert_eq!(mux.in_flight(1), 0);
    let refused = mux.send_append(1, payload(2), level);
    assert!(
        matches!(refused, Err(Error::InvalidRequest(_))),
        "{refused:?}"
    );
    let mut more = Vec::new();
    mux.wait(Duration::from_millis(50), &mut more).unwrap();
    assert!(more.is_empty(), "one failure, reported once: {more:?}");
    mux.close(0);
    assert!(!mux.is_open(0));
    mux.wait(Duration::from_millis(50), &mut more).unwrap();
    assert!(more.is_empty(), "a close is no event: {more:?}");
    drop(mux);
    node.join();
}

#[test]
fn an_unanswered_append_fails_its_connection_after_the_timeout() {
    let node = Scripted::start(2, Arc::new(|conn, _| [Act::Answer, Act::Silent][conn]));
    let mut mux = ClientMux::new(node.clients(2), Duration::from_millis(200)).unwrap();
    let level = DurabilityLevel::Local;
    mux.send_append(1, payload(0), level).unwrap();
    mux.send_append(0, payload(1), level).unwrap();
    let events = events_until(&mut mux, 2);
    let timed_out = events.iter().any(|e| {
        matches!(e, MuxEvent::Failed { conn: 1, error: Error::Io { source, .. } }
            if source.kind() == std::io::ErrorKind::TimedOut)
    });
    assert!(timed_out, "{events:?}");
    assert!(mux.is_open(0));
    drop(mux);
    node.join();
}

#[test]
fn an_answer_that_is_no_frame_fails_its_connection() {
    let node = Scripted::start(1, Arc::new(|_, _| Act::Garbage));
    let mut mux = ClientMux::new(node.clients(1), Duration::from_secs(10)).unwrap();
    mux.send_append(0, payload(0), DurabilityLevel::Local)
        .unwrap();
    let events = events_until(&mut mux, 1);
    assert!(
        matches!(
            &events[..],
            [MuxEvent::Failed {
                conn: 0,
                error: Error::Protocol(_)
            }]
        ),
        "{events:?}"
    );
    drop(mux);
    node.join();
}

#[test]
fn an_answer_to_no_request_fails_its_connection_after_the_answers_due() {
    let node = Scripted::start(1, Arc::new(|_, _| Act::Twice));
    let mut mux = ClientMux::new(node.clients(1), Duration::from_secs(10)).unwrap();
    let id = (mux.send_append(0, payload(0), DurabilityLevel::Local)).unwrap();
    let events = events_until(&mut mux, 2);
    assert!(
        matches!(
            &events[..],
            [
                MuxEvent::Answered { id: got, outcome: Ok(_), .. },
                MuxEvent::Failed { conn: 0, error: Error::Protocol(_) },
            ] if *got == id
        ),
        "{events:?}"
    );
    drop(mux);
    node.join();
}

#[test]
fn a_replaced_connection_takes_appends_again() {
    let node = Scripted::start(2, Arc::new(|conn, _| [Act::Close, Act::Answer][conn]));
    let mut clients = node.clients(2);
    let spare = clients.pop().unwrap();
    let mut mux = ClientMux::closed(1, Duration::from_secs(10));
    let level = DurabilityLevel::Local;
    let refused = mux.send_append(0, payload(0), level);
    assert!(
        matches!(refused, Err(Error::InvalidRequest(_))),
        "none open yet"
    );
    mux.replace(0, clients.pop().unwrap()).unwrap();
    mux.send_append(0, payload(0), level).unwrap();
    let events = events_until(&mut mux, 1);
    assert!(matches!(events[..], [MuxEvent::Failed { conn: 0, .. }]));
    mux.replace(0, spare).unwrap();
    let id = mux.send_append(0, payload(1), level).unwrap();
    let events = events_until(&mut mux, 1);
    assert!(
        matches!(&events[..], [MuxEvent::Answered { conn: 0, id: got, outcome: Ok(lsn), .. }]
            if *got == id && *lsn == lsn_of(1, id)),
        "{events:?}"
    );
    drop(mux);
    node.join();
}

#[test]
fn more_appends_than_the_socket_takes_at_once_go_out_whole_and_in_order() {
    // 1,024 appends of 16 KiB: 16 MiB queued at once, more than the socket buffers take,
    // so the writes stop on a full socket and go on when it drains.
    let node = Scripted::start(1, Arc::new(|_, _| Act::Answer));
    let mut mux = ClientMux::new(node.clients(1), Duration::from_secs(30)).unwrap();
    let big = Bytes::from(vec![7u8; 16 << 10]);
    let level = DurabilityLevel::Local;
    let ids: Vec<u64> = (0..MAX_IN_FLIGHT_PER_CONNECTION)
        .map(|_| mux.send_append(0, big.clone(), level).unwrap())
        .collect();
    let refused = mux.send_append(0, big.clone(), level);
    assert!(
        matches!(refused, Err(Error::InvalidRequest(_))),
        "{refused:?}"
    );
    let events = events_until(&mut mux, ids.len());
    let answered: Vec<u64> = (events.iter())
        .map(|e| match e {
            MuxEvent::Answered { id, outcome, .. } => {
                assert_eq!(*outcome.as_ref().unwrap(), lsn_of(0, *id));
                *id
            }
            MuxEvent::Failed { error, .. } => panic!("failed: {error}"),
        })
        .collect();
    assert_eq!(answered, ids);
    drop(mux);
    node.join();
}
