//! The network's bookkeeping: a connection's two ends, the stream of items toward each, and
//! the schedule of everything in flight, keyed by `(time, sequence)` so that the order is total.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use super::CloseReason;
use crate::vocab::ConnId;

/// One end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Side {
    Dialer,
    Acceptor,
}

impl Side {
    pub(super) fn index(self) -> usize {
        self as usize
    }

    pub(super) fn other(self) -> Side {
        match self {
            Side::Dialer => Side::Acceptor,
            Side::Acceptor => Side::Dialer,
        }
    }
}

/// Where an end is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EndState {
    /// Dialer: waiting for the SYN-ACK. Acceptor: its node does not know the connection yet.
    Pending,
    /// Established.
    Open,
    /// Its `Closed` is scheduled; nothing else will reach it.
    Closing,
    /// Its `Closed` was delivered, or it vanished with its node.
    Gone,
}

/// What travels toward an end.
#[derive(Clone, Debug)]
pub(super) enum Item {
    Syn,
    SynAck,
    Data(Bytes),
    Close(CloseReason),
}

/// The stream toward one end.
#[derive(Debug, Default)]
pub(super) struct Inbound {
    /// Delivery time of the latest item scheduled: nothing later may be delivered before it.
    pub(super) tail_at: Duration,
    /// The key of the latest item scheduled (to swap with, under the reorder fault).
    pub(super) last_key: Option<Key>,
    /// Items held by a partition, in order.
    pub(super) held: VecDeque<Item>,
    /// Since when `held` is not empty.
    pub(super) held_since: Option<Duration>,
}

/// One end of a connection: whose it is, where it is in its life, and the stream toward it.
#[derive(Debug)]
pub(super) struct End {
    pub(super) node: usize,
    pub(super) state: EndState,
    pub(super) inbound: Inbound,
}

impl End {
    pub(super) fn new(node: usize) -> End {
        End {
            node,
            state: EndState::Pending,
            inbound: Inbound::default(),
        }
    }

    /// Whether the end still expects a `Closed` (its node knows of the connection, or is
    /// waiting for its dial).
    pub(super) fn live(&self, side: Side) -> bool {
        match self.state {
            EndState::Open => true,
            EndState::Pending => side == Side::Dialer,
            EndState::Closing | EndState::Gone => false,
        }
    }
}

/// A connection: its dialer's end and its acceptor's, indexed by [`Side`].
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) ends: [End; 2],
}

impl Conn {
    pub(super) fn end(&self, side: Side) -> &End {
        &self.ends[side.index()]
    }

    pub(super) fn end_mut(&mut self, side: Side) -> &mut End {
        &mut self.ends[side.index()]
    }

    /// The side `node` is on, if it is on one.
    pub(super) fn side_of(&self, node: usize) -> Option<Side> {
        [Side::Dialer, Side::Acceptor]
            .into_iter()
            .find(|&s| self.end(s).node == node)
    }
}

/// A scheduled entry's key: delivery time, then the order of scheduling.
pub(super) type Key = (Duration, u64);

/// What the schedule holds.
#[derive(Debug)]
pub(super) enum Entry {
    /// An item reaches an end.
    Item {
        conn: ConnId,
        toward: Side,
        item: Item,
    },
    /// A dial's deadline.
    ConnectDeadline { conn: ConnId },
    /// Is the connection still holding items across a partition?
    StallCheck { conn: ConnId },
}

impl Entry {
    pub(super) fn conn(&self) -> ConnId {
        match self {
            Entry::Item { conn, .. }
            | Entry::ConnectDeadline { conn }
            | Entry::StallCheck { conn } => *conn,
        }
    }
}

/// The schedule: every entry in delivery order.
#[derive(Debug, Default)]
pub(super) struct Timeline {
    pub(super) entries: BTreeMap<Key, Entry>,
    next_seq: u64,
}

impl Timeline {
    pub(super) fn schedule(&mut self, at: Duration, entry: Entry) -> Key {
        let key = (at, self.next_seq);
        self.next_seq += 1;
        self.entries.insert(key, entry);
        key
    }

    /// Removes and returns, in order, the items scheduled toward one end.
    pub(super) fn take_stream(&mut self, conn: ConnId, side: Side) -> Vec<Item> {
        let toward_end = |e: &Entry| match e {
            Entry::Item {
                conn: c, toward, ..
            } => *c == conn && *toward == side,
            _ => false,
        };
        let keys: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| toward_end(e))
            .map(|(k, _)| *k)
            .collect();
        keys.iter()
            .filter_map(|k| match self.entries.remove(k) {
                Some(Entry::Item { item, .. }) => Some(item),
                _ => None,
            })
            .collect()
    }

    pub(super) fn forget(&mut self, conn: ConnId) {
        self.entries.retain(|_, e| e.conn() != conn);
    }
}
