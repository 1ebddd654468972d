//! The network seam: a [`Transport`] moves bytes between TCP connections and an event handler.
//!
//! The replication state machines never touch sockets. A transport owns the sockets and calls
//! [`NetHandler::on_event`] for every connection event (connected, accepted, bytes received,
//! closed); the handler decodes frames, feeds the state machines and calls [`Transport::send`]
//! with the frames they return. Two transports implement the seam: [`portable`] (ordinary
//! sockets and threads) and [`uring`] (one io_uring ring on its own thread). [`tls`] is a layer
//! over either that runs TLS on every connection.
//!
//! Contract every transport keeps:
//! - `send` never blocks: bytes are written at once when the socket has room and queued in order
//!   otherwise. A handler may call any method from inside `on_event`.
//! - Events of one connection arrive in order, from one thread at a time; `Closed` is the last
//!   event of a connection and arrives exactly once, also after a local `close`. A connection
//!   closed before it was established ends with `ConnectFailed` instead. `shutdown` delivers
//!   no events at all, not even `Closed`.
//! - `close` drops bytes still queued; to send a last frame first, wait for `queued_bytes` to
//!   reach 0 (the node does, bounded by a linger time).
//! - Every socket has `TCP_NODELAY`.
//! - With [`TransportOptions::source`] set, outgoing connections of its address family leave
//!   from that address (see [`TransportOptions`]).

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

pub mod handover;
pub mod portable;
pub mod recv_buf;
pub(crate) mod socket;
pub mod tls;
pub mod uring;

/// Identifies one connection for the life of a transport; never reused.
pub use crate::vocab::ConnId;

/// What happened on the network.
#[derive(Debug)]
pub enum NetEvent {
    /// An outgoing connection from [`Transport::connect`] is established.
    Connected {
        /// The connection.
        conn: ConnId,
        /// The address connected to.
        peer: SocketAddr,
    },
    /// An outgoing connection failed or timed out; no `Closed` follows.
    ConnectFailed {
        /// The connection that never came up.
        conn: ConnId,
        /// Why.
        error: io::Error,
    },
    /// A listener accepted a connection.
    Accepted {
        /// The listening address that accepted it.
        listener: SocketAddr,
        /// The new connection.
        conn: ConnId,
        /// The remote address.
        peer: SocketAddr,
    },
    /// Bytes arrived, in order. Frame boundaries are not preserved.
    Data {
        /// The connection.
        conn: ConnId,
        /// The bytes, never empty: a slice of the connection's receive buffer, which a frame
        /// decoder joins to the slice before it without a copy where they are neighbours
        /// ([`BytesMut::unsplit`]).
        bytes: BytesMut,
    },
    /// The connection is gone: peer closed (`error` is `None`), an I/O error, or a local `close`.
    Closed {
        /// The connection.
        conn: ConnId,
        /// The error that ended it, if any.
        error: Option<io::Error>,
    },
}

/// Receives network events. Called from transport threads; must not block for long.
pub trait NetHandler: Send + Sync + 'static {
    /// One event.
    fn on_event(&self, event: NetEvent);

    /// Whether the bytes of every connection are logship frames in the clear
    /// ([`crate::protocol::frame`]). A transport then keeps each frame in one allocation as it
    /// arrives, holding back the first bytes of a frame that would not fit until the next
    /// receive (at most one receive's), so that a decoder joins its pieces without copying
    /// them. No by default: bytes go on as they come.
    fn receives_frames(&self) -> bool {
        false
    }
}

/// Bytes queued on one connection beyond which [`Transport::send`] still queues but
/// [`Transport::queued_bytes`] tells the caller to hold back.
pub const SEND_QUEUE_SOFT_LIMIT: usize = 32 << 20;

/// A TCP transport.
pub trait Transport: Send + Sync + 'static {
    /// `"io_uring"` or `"portable"`.
    fn name(&self) -> &'static str;

    /// Whether each connection's events come from a thread of its own, so that a handler
    /// that takes long over one connection's bytes holds no other connection (the portable
    /// transport); `false` for an event loop that serves every connection (io_uring).
    fn delivers_on_connection_threads(&self) -> bool {
        false
    }

    /// On an event-loop transport (io_uring), how many times its delivering thread has gone
    /// to sleep with nothing left to deliver: an event delivered after the count moved came
    /// alone, one delivered before it moved arrived while the thread was busy (behind other
    /// events, or behind a handler that took long). `None` where connections have threads of
    /// their own.
    fn idle_waits(&self) -> Option<u64> {
        None
    }

    /// Listens on `addr` (port 0 picks one); returns the bound address. Accepted connections
    /// arrive as [`NetEvent::Accepted`].
    fn listen(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        // std sets SO_REUSEADDR on Unix listeners.
        self.listen_on(socket::bind_listener(addr)?)
    }

    /// Serves `listener`, a socket already bound and listening (for example one inherited
    /// from a parent process, see [`handover`]), exactly as [`Transport::listen`] serves the
    /// one it binds; returns its address. The transport owns the socket from now on and puts
    /// it in blocking mode.
    fn listen_on(&self, listener: TcpListener) -> io::Result<SocketAddr>;

    /// Starts connecting to `addr`; the outcome arrives as [`NetEvent::Connected`] or
    /// [`NetEvent::ConnectFailed`] (also when `timeout` passes first).
    fn connect(&self, addr: SocketAddr, timeout: Duration) -> ConnId;

    /// Queues `data` for `conn`, in order after everything sent before. Never blocks. Bytes for
    /// an unknown or closed connection are dropped.
    fn send(&self, conn: ConnId, data: Bytes);

    /// Queues `parts` for `conn` as [`Transport::send`] queues each in turn, but in one write
    /// where the transport can: a frame built of a header and a body that live in separate
    /// buffers then reaches the peer whole.
    fn send_parts(&self, conn: ConnId, parts: &[Bytes]) {
        for part in parts {
            self.send(conn, part.clone());
        }
    }

    /// Bytes queued on `conn` or in flight (not yet accepted by the kernel).
    fn queued_bytes(&self, conn: ConnId) -> usize;

    /// Closes `conn`; a [`NetEvent::Closed`] follows.
    fn close(&self, conn: ConnId);

    /// Closes every connection and listener and stops the transport's threads. No events are
    /// delivered after it returns.
    fn shutdown(&self);
}

/// Which transport to build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetBackend {
    /// The portable transport (chosen by measurement; see docs/architecture.md).
    #[default]
    Auto,
    /// io_uring; fails if the kernel refuses it.
    IoUring,
    /// Ordinary sockets and threads.
    Portable,
}

/// Settings a transport applies to every connection it makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportOptions {
    /// The local address outgoing connections leave from. Before connecting, the socket is
    /// bound to this address with port 0 (the kernel picks the port), so peers and packet
    /// filters see it as the source instead of whatever address the kernel would choose (on
    /// loopback, the destination's). A failed bind fails that connection with
    /// [`NetEvent::ConnectFailed`]. Ignored, letting the kernel choose, when it is unspecified
    /// (`0.0.0.0`, `::`) or of the other address family than the destination.
    pub source: Option<IpAddr>,
}

impl TransportOptions {
    /// The address to bind an outgoing connection to `dest` to, if any: the source address
    /// with port 0 when it is set, specified and of `dest`'s family.
    pub fn bind_addr_for(&self, dest: SocketAddr) -> Option<SocketAddr> {
        let ip = self.source?;
        (!ip.is_unspecified() && ip.is_ipv4() == dest.is_ipv4()).then(|| SocketAddr::new(ip, 0))
    }
}

/// Builds the chosen transport delivering events to `handler`, with default options.
///
/// # Errors
/// io_uring setup failures (for example `kernel.io_uring_disabled`), thread spawn failures.
pub fn start(backend: NetBackend, handler: Arc<dyn NetHandler>) -> io::Result<Arc<dyn Transport>> {
    start_with(backend, handler, TransportOptions::default())
}

/// Builds the transport of a port whose threads must stay bounded (the client port): for
/// `Auto`, io_uring, or the portable transport where the kernel refuses io_uring (said once at
/// info level, naming `what`); otherwise the chosen one.
///
/// # Errors
/// As [`start`].
pub fn start_uring_first(
    backend: NetBackend,
    handler: Arc<dyn NetHandler>,
    what: &str,
) -> io::Result<Arc<dyn Transport>> {
    match backend {
        NetBackend::Auto => start(NetBackend::IoUring, Arc::clone(&handler)).or_else(|e| {
            tracing::info!(error = %e, "{what}: io_uring unavailable, the portable transport serves it");
            start(NetBackend::Portable, handler)
        }),
        chosen => start(chosen, handler),
    }
}

/// Builds the chosen transport delivering events to `handler`, applying `options`.
///
/// # Errors
/// io_uring setup failures (for example `kernel.io_uring_disabled`), thread spawn failures.
pub fn start_with(
    backend: NetBackend,
    handler: Arc<dyn NetHandler>,
    options: TransportOptions,
) -> io::Result<Arc<dyn Transport>> {
    match backend {
        NetBackend::Auto | NetBackend::Portable => Ok(Arc::new(
            portable::PortableTransport::start_with(handler, options)?,
        )),
        NetBackend::IoUring => Ok(Arc::new(uring::UringTransport::start_with(
            handler, options,
        )?)),
    }
}

#[cfg(test)]
mod tests {
    //! Source-address binding on real sockets, for each backend; io_uring tests print why they
    //! skip when io_uring is unavailable here.

    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener};

    use crossbeam_channel::{Receiver, Sender};

    use super::*;

    /// Longest any single wait in these tests may take.
    const WAIT: Duration = Duration::from_secs(10);

    /// Forwards every event to a channel.
    struct Forward(Sender<NetEvent>);

    impl NetHandler for Forward {
        fn on_event(&self, event: NetEvent) {
            let _ = self.0.send(event);
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    /// A transport of `backend` with `source`, or `None` (said why) when it cannot start here.
    fn start_backend(
        backend: NetBackend,
        source: Option<IpAddr>,
    ) -> Option<(Arc<dyn Transport>, Receiver<NetEvent>)> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let options = TransportOptions { source };
        match start_with(backend, Arc::new(Forward(tx)), options) {
            Ok(t) => Some((t, rx)),
            Err(e) if backend == NetBackend::IoUring => {
                println!("skipping io_uring: unavailable: {e}");
                None
            }
            Err(e) => panic!("starting {backend:?}: {e}"),
        }
    }

    /// Connects through a `backend` transport with `source` to a plain listener on 127.0.0.1
    /// and returns the peer address the listener saw, or `None` if `backend` is unavailable.
    fn accepted_peer_ip(backend: NetBackend, source: Option<IpAddr>) -> Option<IpAddr> {
        let (transport, events) = start_backend(backend, source)?;
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let addr = listener.local_addr().expect("local address");
        let conn = transport.connect(addr, WAIT);
        match events.recv_timeout(WAIT).expect("an event within the wait") {
            NetEvent::Connected { conn: c, peer } => assert_eq!((c, peer), (conn, addr)),
            other => panic!("{backend:?} source {source:?}: expected Connected, got {other:?}"),
        }
        // Connected: the connection waits in the backlog, so this returns at once.
        let (_stream, peer) = listener.accept().expect("accept");
        transport.shutdown();
        Some(peer.ip())
    }

    const BACKENDS: [NetBackend; 2] = [NetBackend::Portable, NetBackend::IoUring];

    #[test]
    fn outgoing_connections_leave_from_the_source_address() {
        for backend in BACKENDS {
            if let Some(peer) = accepted_peer_ip(backend, Some(ip("127.0.0.2"))) {
                assert_eq!(peer, ip("127.0.0.2"), "{backend:?}");
            }
        }
    }

    #[test]
    fn without_a_usable_source_the_kernel_picks_it() {
        // None, unspecified, and of the other family (ignored, not an error).
        let sources = [None, Some(ip("0.0.0.0")), Some(ip("::1"))];
        for backend in BACKENDS {
            for source in sources {
                if let Some(peer) = accepted_peer_ip(backend, source) {
                    // On loopback the kernel picks the destination's address.
                    assert_eq!(peer, ip("127.0.0.1"), "{backend:?} source {source:?}");
                }
            }
        }
    }

    #[test]
    fn a_source_that_cannot_be_bound_fails_the_connection() {
        // 192.0.2.1 (TEST-NET-1) is no local address: bind fails with EADDRNOTAVAIL.
        for backend in BACKENDS {
            let Some((transport, events)) = start_backend(backend, Some(ip("192.0.2.1"))) else {
                continue;
            };
            let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
            let addr = listener.local_addr().expect("local address");
            let conn = transport.connect(addr, WAIT);
            match events.recv_timeout(WAIT).expect("an event within the wait") {
                NetEvent::ConnectFailed { conn: c, error } => {
                    assert_eq!(c, conn, "{backend:?}");
                    assert_eq!(error.kind(), io::ErrorKind::AddrNotAvailable, "{backend:?}");
                    assert!(
                        error.to_string().contains("192.0.2.1"),
                        "{backend:?}: {error}"
                    );
                }
                other => panic!("{backend:?}: expected ConnectFailed, got {other:?}"),
            }
            transport.shutdown();
        }
    }

    #[test]
    fn an_already_bound_listener_is_served() {
        for backend in BACKENDS {
            let Some((transport, events)) = start_backend(backend, None) else {
                continue;
            };
            let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
            let addr = listener.local_addr().expect("local address");
            listener.set_nonblocking(true).expect("nonblocking");
            assert_eq!(transport.listen_on(listener).expect("listen_on"), addr);
            let _stream = std::net::TcpStream::connect(addr).expect("connect");
            match events.recv_timeout(WAIT).expect("an event within the wait") {
                NetEvent::Accepted { listener, .. } => assert_eq!(listener, addr, "{backend:?}"),
                other => panic!("{backend:?}: expected Accepted, got {other:?}"),
            }
            transport.shutdown();
        }
    }

    #[test]
    fn bind_address_is_the_source_of_the_destination_family_only() {
        let v4: SocketAddr = "127.0.0.1:7000".parse().expect("address");
        let v6: SocketAddr = "[::1]:7000".parse().expect("address");
        let with = |source: Option<IpAddr>| TransportOptions { source };
        let two = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(
            with(two).bind_addr_for(v4),
            Some("127.0.0.2:0".parse().expect("addr"))
        );
        assert_eq!(with(two).bind_addr_for(v6), None);
        assert_eq!(with(None).bind_addr_for(v4), None);
        assert_eq!(
            with(Some(Ipv4Addr::UNSPECIFIED.into())).bind_addr_for(v4),
            None
        );
        assert_eq!(
            with(Some(Ipv6Addr::UNSPECIFIED.into())).bind_addr_for(v6),
            None
        );
        let six = Some(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(
            with(six).bind_addr_for(v6),
            Some("[::1]:0".parse().expect("addr"))
        );
    }
}
