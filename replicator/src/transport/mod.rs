//! The network seam: a [`Transport`] moves bytes between TCP connections and an event handler.
//!
//! The replication state machines never touch sockets. A transport owns the sockets and calls
//! [`NetHandler::on_event`] for every connection event (connected, accepted, bytes received,
//! closed); the handler decodes frames, feeds the state machines and calls [`Transport::send`]
//! with the frames they return. Two transports implement the seam: [`portable`] (ordinary
//! sockets and threads) and [`uring`] (one io_uring ring on its own thread).
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

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub mod portable;
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
        /// The bytes, never empty.
        bytes: Bytes,
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
}

/// Bytes queued on one connection beyond which [`Transport::send`] still queues but
/// [`Transport::queued_bytes`] tells the caller to hold back.
pub const SEND_QUEUE_SOFT_LIMIT: usize = 32 << 20;

/// A TCP transport.
pub trait Transport: Send + Sync + 'static {
    /// `"io_uring"` or `"portable"`.
    fn name(&self) -> &'static str;

    /// Listens on `addr` (port 0 picks one); returns the bound address. Accepted connections
    /// arrive as [`NetEvent::Accepted`].
    fn listen(&self, addr: SocketAddr) -> io::Result<SocketAddr>;

    /// Starts connecting to `addr`; the outcome arrives as [`NetEvent::Connected`] or
    /// [`NetEvent::ConnectFailed`] (also when `timeout` passes first).
    fn connect(&self, addr: SocketAddr, timeout: Duration) -> ConnId;

    /// Queues `data` for `conn`, in order after everything sent before. Never blocks. Bytes for
    /// an unknown or closed connection are dropped.
    fn send(&self, conn: ConnId, data: Bytes);

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

/// Builds the chosen transport delivering events to `handler`.
///
/// # Errors
/// io_uring setup failures (for example `kernel.io_uring_disabled`), thread spawn failures.
pub fn start(backend: NetBackend, handler: Arc<dyn NetHandler>) -> io::Result<Arc<dyn Transport>> {
    match backend {
        NetBackend::Auto | NetBackend::Portable => {
            Ok(Arc::new(portable::PortableTransport::start(handler)?))
        }
        NetBackend::IoUring => Ok(Arc::new(uring::UringTransport::start(handler)?)),
    }
}
