//! What the simulated network tells a node, and why a connection ended.

use std::fmt;

use bytes::Bytes;

use crate::vocab::ConnId;

/// Why an end's connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CloseReason {
    /// This end closed it ([`Net::close`](super::Net::close)).
    LocalClose,
    /// The other end closed it, after everything it sent arrived.
    PeerClosed,
    /// A reset (a fault, or the other end's RST).
    Reset,
    /// The peer's node crashed ([`Net::reset_node`](super::Net::reset_node)).
    PeerCrashed,
    /// Nobody listens at the node dialed.
    Refused,
    /// The dial did not complete within its timeout.
    ConnectTimeout,
    /// Items stayed undelivered across a partition for
    /// [`stall_reset_after`](super::NetConfig::stall_reset_after).
    Stalled,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::LocalClose => "closed locally",
            CloseReason::PeerClosed => "closed by the peer",
            CloseReason::Reset => "connection reset",
            CloseReason::PeerCrashed => "connection reset: the peer crashed",
            CloseReason::Refused => "connection refused",
            CloseReason::ConnectTimeout => "connect timed out",
            CloseReason::Stalled => "connection reset: no acknowledgement across a partition",
        })
    }
}

/// What the network delivers to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// A dial of `node` is established.
    Connected {
        /// The dialer.
        node: usize,
        /// The connection.
        conn: ConnId,
    },
    /// A connection from `peer` reached `node`.
    Accepted {
        /// The acceptor.
        node: usize,
        /// The connection.
        conn: ConnId,
        /// The dialer.
        peer: usize,
    },
    /// Bytes arrived at `node`, in order (hostile faults aside); never empty.
    Deliver {
        /// The receiver.
        node: usize,
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Bytes,
    },
    /// `node`'s end of the connection is gone: its last event.
    Closed {
        /// The node.
        node: usize,
        /// The connection.
        conn: ConnId,
        /// Why.
        why: CloseReason,
    },
}

impl NetEvent {
    /// The node the event is for.
    pub fn node(&self) -> usize {
        match self {
            NetEvent::Connected { node, .. }
            | NetEvent::Accepted { node, .. }
            | NetEvent::Deliver { node, .. }
            | NetEvent::Closed { node, .. } => *node,
        }
    }

    /// The connection the event is about.
    pub fn conn(&self) -> ConnId {
        match self {
            NetEvent::Connected { conn, .. }
            | NetEvent::Accepted { conn, .. }
            | NetEvent::Deliver { conn, .. }
            | NetEvent::Closed { conn, .. } => *conn,
        }
    }
}
