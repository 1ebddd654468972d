//! The client port: append (with a durability level), read from an LSN, status. Ordinary
//! sockets, one thread per connection, requests answered in order. Unauthenticated: bind it to
//! loopback or a trusted network (docs/operations.md).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use logship_engine::Lsn;
use parking_lot::Mutex;

use super::Inner;
use crate::error::{Error, Result};
use crate::protocol::frame::FrameDecoder;
use crate::protocol::{ClientStatus, Msg};

/// Client connections served at once; more are closed at accept.
pub const MAX_CLIENT_CONNECTIONS: usize = 512;
/// Largest read response.
pub const MAX_READ_BYTES: usize = 8 << 20;
/// Room in a request frame beyond the record itself.
const REQUEST_OVERHEAD_BYTES: usize = 4096;
/// How often idle connection threads look at the stop flag.
const POLL: Duration = Duration::from_millis(200);

pub(crate) struct ClientPort {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl ClientPort {
    pub(crate) fn start(addr: SocketAddr, inner: Weak<Inner>) -> Result<ClientPort> {
        let listener =
            TcpListener::bind(addr).map_err(|e| Error::io(format!("client port {addr}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("client port address", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (Arc::clone(&stop), Arc::clone(&conns));
        let accept = std::thread::Builder::new()
            .name("logship-clients".into())
            .spawn(move || accept_loop(&listener, &inner, &s, &c))
            .map_err(|e| Error::io("spawning the client port", e))?;
        Ok(ClientPort {
            addr,
            stop,
            accept: Some(accept),
            conns,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        let threads: Vec<_> = self.conns.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    inner: &Weak<Inner>,
    stop: &Arc<AtomicBool>,
    conns: &Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if active.load(Ordering::Acquire) >= MAX_CLIENT_CONNECTIONS {
            tracing::warn!("client port full ({MAX_CLIENT_CONNECTIONS} connections): refusing one");
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let (inner, stop, active) = (inner.clone(), Arc::clone(stop), Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("logship-client".into())
            .spawn(move || {
                let max_request = inner
                    .upgrade()
                    .map_or(0, |i| i.config.log_options().max_record_bytes)
                    + REQUEST_OVERHEAD_BYTES;
                if let Err(e) = serve(stream, &inner, &stop, max_request) {
                    tracing::debug!(error = %e, "client connection ended");
                }
                active.fetch_sub(1, Ordering::AcqRel);
            });
        let mut c = conns.lock();
        c.retain(|t| !t.is_finished());
        if let Ok(t) = spawned {
            c.push(t);
        }
    }
}

fn serve(
    mut stream: TcpStream,
    inner: &Weak<Inner>,
    stop: &AtomicBool,
    max_request: usize,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL))?;
    let mut decoder = FrameDecoder::new(max_request);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        decoder.push(&buf[..n]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            };
            let msg = Msg::decode(&frame)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let Some(inner) = inner.upgrade() else {
                return Ok(());
            };
            let reply = handle(&inner, msg)?;
            drop(inner);
            stream.write_all(&reply.encode())?;
        }
    }
}

/// How long a promote request waits for the handover (the primary gives up by itself after
/// the longest election timeout).
const PROMOTE_ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

fn status_of(e: &Error) -> ClientStatus {
    match e {
        Error::QuorumUnavailable { .. } => ClientStatus::QuorumUnavailable,
        Error::NotPrimary { .. } => ClientStatus::NotPrimary,
        Error::Log(logship_engine::Error::RecordTooLarge { .. }) => ClientStatus::Invalid,
        Error::Log(logship_engine::Error::Purged { .. }) => ClientStatus::Purged,
        _ => ClientStatus::Failed,
    }
}

fn handle(inner: &Inner, msg: Msg) -> std::io::Result<Msg> {
    Ok(match msg {
        Msg::AppendRequest { id, level, payload } => {
            match inner.append(payload, level).and_then(super::Commit::wait) {
                Ok(lsn) => Msg::AppendResponse {
                    id,
                    status: ClientStatus::Ok,
                    lsn,
                    message: String::new(),
                },
                Err(e) => Msg::AppendResponse {
                    id,
                    status: status_of(&e),
                    lsn: Lsn::ZERO,
                    message: match e {
                        // The message of `not_primary` is the primary's client address (or
                        // empty): clients follow it (docs/protocol.md).
                        Error::NotPrimary { leader_hint } => leader_hint.unwrap_or_default(),
                        e => e.to_string(),
                    },
                },
            }
        }
        Msg::ReadRequest {
            id,
            from,
            max_bytes,
        } => read(inner, id, from, max_bytes),
        Msg::PromoteRequest { id, target } => {
            let (status, message) = match inner.promote(&target, PROMOTE_ANSWER_WITHIN) {
                Ok(done) => (ClientStatus::Ok, done),
                Err(e @ Error::Protocol(_)) => (ClientStatus::Failed, e.to_string()),
                Err(e) => (status_of(&e), e.to_string()),
            };
            Msg::PromoteResponse {
                id,
                status,
                message,
            }
        }
        Msg::StatusRequest { id } => {
            let json = serde_json::to_string(&inner.status())
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            Msg::StatusResponse { id, json }
        }
        other => {
            let m = format!("{} is not a client request", other.name());
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, m));
        }
    })
}

fn read(inner: &Inner, id: u64, from: Lsn, max_bytes: u32) -> Msg {
    let max = (max_bytes as usize).clamp(1, MAX_READ_BYTES);
    let fail = |e: logship_engine::Error| {
        let (status, detail) = match &e {
            logship_engine::Error::Purged { first, .. } => (ClientStatus::Purged, first.0),
            _ => (ClientStatus::Failed, 0),
        };
        Msg::ReadResponse {
            id,
            status,
            detail,
            message: e.to_string(),
            records: Bytes::new(),
        }
    };
    let mut reader = match inner.log.read_from(from) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    match reader.next_chunk(max) {
        None => Msg::ReadResponse {
            id,
            status: ClientStatus::Ok,
            detail: 0,
            message: String::new(),
            records: Bytes::new(),
        },
        Some(Ok(c)) => Msg::ReadResponse {
            id,
            status: ClientStatus::Ok,
            detail: 0,
            message: String::new(),
            records: c.bytes,
        },
        Some(Err(e)) => fail(e),
    }
}
