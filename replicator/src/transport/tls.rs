//! TLS as a layer at the transport seam: [`TlsTransport`] wraps any inner [`Transport`]
//! (portable or io_uring) and the [`NetHandler`] above it, so the node and the replica see
//! plaintext and the sockets carry TLS.
//!
//! Each connection has its own rustls connection: the client side for connections made with
//! [`Transport::connect`], the server side for accepted ones. Ciphertext the inner transport
//! receives goes into it, and the plaintext it yields goes on to the handler as
//! [`NetEvent::Data`]; plaintext the handler sends is encrypted and passed to the inner
//! transport. Everything a rustls connection writes is taken out and handed to the inner
//! `send` under that connection's lock, so TLS records leave in the order rustls made them.
//!
//! Verification: the connecting side verifies the peer's certificate against the CA for the
//! peer's node id (the server name found for the address in [`TlsTransport::start`]'s
//! table, else the address's IP); the accepting side requires a certificate issued by the CA
//! (who the peer is, the cluster key's handshake proves next, inside TLS).
//!
//! The seam's contract holds through the layer: `send` never blocks (encryption is CPU work;
//! the inner `send` queues), events of a connection come in order from the inner transport's
//! delivering thread, and `Closed` comes exactly once (from the inner transport). Choices made
//! here:
//! - `Connected` and `Accepted` are delivered when TCP is up, before the TLS handshake ends;
//!   plaintext sent meanwhile waits inside rustls and leaves once the handshake is done.
//! - Bytes sent on a connection before its `Connected` event are dropped, like bytes for an
//!   unknown connection (the node sends only after `Connected`).
//! - A TLS failure (a certificate the CA did not issue, a wrong name, a plaintext peer, a
//!   corrupt record) sends rustls' alert, closes the connection, and is counted and logged as
//!   a summary ([`TlsFailures`]); the connection's `Closed` carries the TLS error.
//! - A peer's `close_notify` closes the connection like a TCP close.
//! - `queued_bytes` counts the inner transport's queue (ciphertext).

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};

use super::{ConnId, NetEvent, NetHandler, Transport};
use crate::tls::{TlsConfigs, TlsFailures, TlsPort};

/// A transport that runs TLS over an inner one. See the module docs.
pub struct TlsTransport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport")
            .field("inner", &self.shared.inner().name())
            .field("connections", &self.shared.conns.lock().len())
            .finish_non_exhaustive()
    }
}

/// One connection's TLS state.
struct TlsConn {
    tls: Connection,
    peer: SocketAddr,
    /// The TLS error that ended it, reported with its `Closed`.
    failed: Option<rustls::Error>,
    /// Bytes arrived from the peer.
    began: bool,
}

struct Shared {
    inner: OnceLock<Arc<dyn Transport>>,
    handler: Arc<dyn NetHandler>,
    configs: Arc<dyn TlsConfigs>,
    names: HashMap<SocketAddr, ServerName<'static>>,
    failures: Arc<TlsFailures>,
    /// Where failures are counted.
    port: TlsPort,
    conns: Mutex<HashMap<ConnId, Arc<Mutex<TlsConn>>>>,
}

/// The handler the inner transport calls; weak, so the inner transport (which the layer
/// owns) does not keep the layer alive.
struct Below(Weak<Shared>);

impl NetHandler for Below {
    fn on_event(&self, event: NetEvent) {
        if let Some(shared) = self.0.upgrade() {
            shared.on_event(event);
        }
    }
}

impl TlsTransport {
    /// Starts the inner transport with `start_inner` (given the layer's handler) and wraps it.
    /// `names` maps a peer's replication address to the name its certificate must carry (its
    /// node id); `failures` counts and logs TLS failures.
    ///
    /// # Errors
    /// Whatever `start_inner` returns.
    pub fn start(
        start_inner: impl FnOnce(Arc<dyn NetHandler>) -> io::Result<Arc<dyn Transport>>,
        handler: Arc<dyn NetHandler>,
        configs: Arc<dyn TlsConfigs>,
        names: HashMap<SocketAddr, ServerName<'static>>,
        failures: Arc<TlsFailures>,
    ) -> io::Result<TlsTransport> {
        Self::start_for(
            TlsPort::Replication,
            start_inner,
            handler,
            configs,
            names,
            failures,
        )
    }

    /// Like [`TlsTransport::start`], for the connections of `port`: its failures are counted
    /// and logged under that port (the client port serves accepted connections only, with its
    /// own server configuration from `configs`).
    ///
    /// # Errors
    /// Whatever `start_inner` returns.
    pub fn start_for(
        port: TlsPort,
        start_inner: impl FnOnce(Arc<dyn NetHandler>) -> io::Result<Arc<dyn Transport>>,
        handler: Arc<dyn NetHandler>,
        configs: Arc<dyn TlsConfigs>,
        names: HashMap<SocketAddr, ServerName<'static>>,
        failures: Arc<TlsFailures>,
    ) -> io::Result<TlsTransport> {
        let shared = Arc::new(Shared {
            inner: OnceLock::new(),
            handler,
            configs,
            names,
            failures,
            port,
            conns: Mutex::new(HashMap::new()),
        });
        let inner = start_inner(Arc::new(Below(Arc::downgrade(&shared))))?;
        let _ = shared.inner.set(inner);
        Ok(TlsTransport { shared })
    }

    /// Whether `conn`'s peer has sent bytes and the TLS handshake is not over yet (the client
    /// port bounds such a connection by its request timeout: a handshake sent one byte at a
    /// time must not hold a slot). `false` for an unknown connection.
    pub fn handshake_begun_and_unfinished(&self, conn: ConnId) -> bool {
        self.shared.conn(conn).is_some_and(|c| {
            let c = c.lock();
            c.began && c.tls.is_handshaking()
        })
    }
}

impl Transport for TlsTransport {
    fn name(&self) -> &'static str {
        match self.shared.inner().name() {
            "portable" => "portable+tls",
            "io_uring" => "io_uring+tls",
            _ => "tls",
        }
    }

    /// The layer runs in the inner transport's delivering threads.
    fn delivers_on_connection_threads(&self) -> bool {
        self.shared.inner().delivers_on_connection_threads()
    }

    fn idle_waits(&self) -> Option<u64> {
        self.shared.inner().idle_waits()
    }

    fn listen_on(&self, listener: TcpListener) -> io::Result<SocketAddr> {
        self.shared.inner().listen_on(listener)
    }

    fn connect(&self, addr: SocketAddr, timeout: Duration) -> ConnId {
        self.shared.inner().connect(addr, timeout)
    }

    fn send(&self, conn: ConnId, data: Bytes) {
        self.send_parts(conn, std::slice::from_ref(&data));
    }

    /// The parts are encrypted together and leave as one buffer: one send of the transport
    /// underneath, not one per part.
    fn send_parts(&self, conn: ConnId, parts: &[Bytes]) {
        let Some(c) = self.shared.conn(conn) else {
            return;
        };
        let mut c = c.lock();
        if c.failed.is_some() {
            return;
        }
        for part in parts {
            // The buffer limit is off (see `Shared::open`): rustls takes every byte.
            let wrote = io::Write::write_all(&mut c.tls.writer(), part);
            debug_assert!(wrote.is_ok(), "rustls refused plaintext: {wrote:?}");
        }
        self.shared.flush(conn, &mut c);
    }

    fn queued_bytes(&self, conn: ConnId) -> usize {
        self.shared.inner().queued_bytes(conn)
    }

    fn close(&self, conn: ConnId) {
        self.shared.inner().close(conn);
    }

    fn shutdown(&self) {
        self.shared.inner().shutdown();
        self.shared.conns.lock().clear();
    }
}

impl Drop for TlsTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    fn inner(&self) -> &Arc<dyn Transport> {
        self.inner
            .get()
            .expect("the inner transport is set before the layer is returned")
    }

    fn conn(&self, conn: ConnId) -> Option<Arc<Mutex<TlsConn>>> {
        self.conns.lock().get(&conn).cloned()
    }

    fn on_event(&self, event: NetEvent) {
        match event {
            NetEvent::Connected { conn, peer } => {
                let name = (self.names.get(&peer).cloned())
                    .unwrap_or_else(|| ServerName::IpAddress(peer.ip().into()));
                let made = ClientConnection::new(self.configs.client(), name);
                // Open first: the handler may send from inside `Connected`.
                self.open(conn, peer, made.map(Connection::from));
                self.handler.on_event(NetEvent::Connected { conn, peer });
            }
            NetEvent::Accepted {
                listener,
                conn,
                peer,
            } => {
                let made = ServerConnection::new(self.configs.server());
                let accepted = NetEvent::Accepted {
                    listener,
                    conn,
                    peer,
                };
                self.open(conn, peer, made.map(Connection::from));
                self.handler.on_event(accepted);
            }
            NetEvent::Data { conn, bytes } => self.on_data(conn, &bytes),
            NetEvent::ConnectFailed { conn, error } => {
                self.conns.lock().remove(&conn);
                self.handler
                    .on_event(NetEvent::ConnectFailed { conn, error });
            }
            NetEvent::Closed { conn, error } => {
                let removed = self.conns.lock().remove(&conn);
                let failed = removed.and_then(|c| c.lock().failed.take());
                let error = match failed {
                    Some(e) => Some(io::Error::new(io::ErrorKind::InvalidData, e)),
                    None => error,
                };
                self.handler.on_event(NetEvent::Closed { conn, error });
            }
        }
    }

    /// Registers a new connection's TLS state and sends what rustls has to say first (a
    /// client's hello). A state rustls could not even make (a configuration it refuses for
    /// this peer) is a TLS failure: the connection is closed, and its `Closed` follows.
    fn open(&self, conn: ConnId, peer: SocketAddr, made: Result<Connection, rustls::Error>) {
        let mut tls = match made {
            Ok(tls) => tls,
            Err(e) => {
                self.failures.note(self.port, Some(peer), &e);
                return self.inner().close(conn);
            }
        };
        // The node bounds what it queues per connection (`queued_bytes`); rustls must not
        // refuse bytes on top of that.
        tls.set_buffer_limit(None);
        let c = Arc::new(Mutex::new(TlsConn {
            tls,
            peer,
            failed: None,
            began: false,
        }));
        let mut guard = c.lock();
        self.conns.lock().insert(conn, Arc::clone(&c));
        self.flush(conn, &mut guard);
    }

    /// Ciphertext in: plaintext out to the handler, anything rustls answers back to the peer.
    fn on_data(&self, conn: ConnId, mut bytes: &[u8]) {
        let Some(c) = self.conn(conn) else {
            return;
        };
        let mut plain = Vec::new();
        let outcome = {
            let mut c = c.lock();
            if c.failed.is_some() {
                return;
            }
            c.began = true;
            let outcome = decrypt(&mut c.tls, &mut bytes, &mut plain);
            if let Err(e) = &outcome {
                self.failures.note(self.port, Some(c.peer), e);
                c.failed = Some(e.clone());
            }
            // The answer to a handshake message, or the alert that tells the peer why.
            self.flush(conn, &mut c);
            outcome
        };
        if !plain.is_empty() {
            let bytes = BytesMut::from(Bytes::from(plain));
            self.handler.on_event(NetEvent::Data { conn, bytes });
        }
        match outcome {
            Ok(Decrypted::Open) => {}
            Ok(Decrypted::PeerClosed) | Err(_) => self.inner().close(conn),
        }
    }

    /// Hands everything rustls has to send on `conn` to the inner transport, in order.
    fn flush(&self, conn: ConnId, c: &mut TlsConn) {
        if !c.tls.wants_write() {
            return;
        }
        let mut out = Vec::new();
        while c.tls.wants_write() {
            // Writing into a Vec cannot fail.
            if c.tls.write_tls(&mut out).is_err() {
                break;
            }
        }
        self.inner().send(conn, Bytes::from(out));
    }
}

/// What a connection is after its latest bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decrypted {
    /// Still open.
    Open,
    /// The peer sent `close_notify`.
    PeerClosed,
}

/// Feeds all of `bytes` to `tls`, appending the plaintext they complete to `plain`.
///
/// # Errors
/// The TLS error that ends the connection (rustls has queued its alert).
pub(crate) fn decrypt(
    tls: &mut Connection,
    bytes: &mut &[u8],
    plain: &mut Vec<u8>,
) -> Result<Decrypted, rustls::Error> {
    let mut closed = false;
    while !bytes.is_empty() && !closed {
        // From a slice read_tls fails only when its plaintext buffer is full, which the
        // draining below prevents; it returns 0 once close_notify has arrived.
        match tls.read_tls(bytes) {
            Ok(0) => closed = true,
            Ok(_) => {}
            Err(e) => return Err(rustls::Error::General(e.to_string())),
        }
        closed |= tls.process_new_packets()?.peer_has_closed();
        // Appends what there is; `WouldBlock` once it is all out, `Ok` at close_notify.
        match tls.reader().read_to_end(plain) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => closed = true,
        }
    }
    Ok(if closed {
        Decrypted::PeerClosed
    } else {
        Decrypted::Open
    })
}

#[cfg(test)]
mod tests;
