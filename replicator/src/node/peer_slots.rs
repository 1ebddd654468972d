//! The replication listener's bounds: at most [`MAX_REPLICATION_CONNECTIONS`] accepted
//! connections at once, at most [`MAX_REPLICATION_CONNECTIONS_PER_ADDRESS`] of them from one
//! remote address. A connection beyond either is closed as soon as the transport reports it,
//! and the replica never hears of it (its bytes and its close are dropped here), so a peer
//! without the cluster key that opens connections in a loop holds a bounded number of
//! sockets, threads and frame decoders.
//!
//! How long an admitted connection may hold its slot without proving the key is the
//! replica's handshake deadline (`timeouts.handshake_ms`): a follower closes a connection that
//! has not finished its handshake by then, an elected primary one that asked nothing. How much
//! it may send meanwhile is [`MAX_UNPROVEN_BYTES`]: the replica's frame decoder takes frames of
//! up to 16 MiB (a catch-up chunk), and buffers a frame whole before checking its CRC, so a peer
//! without the key could otherwise make the node hold 16 MiB per connection; past the bound,
//! a connection whose session does not stream is closed.
//! Refusals are logged as one line per remote address per [`SUMMARY_INTERVAL`](crate::log_summary::SUMMARY_INTERVAL) at most,
//! with the count and the last reason ([`PerAddress`]).
//!
//! Outgoing connections (a primary dialing its followers) take no slot.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::log_summary::PerAddress;
use crate::slots::{Slot, Slots};
use crate::vocab::ConnId;

/// Accepted replication connections at once. A cluster needs a handful (each member's
/// session and vote requests); the rest of the room absorbs reconnects that overlap the close
/// of the connection they replace.
pub const MAX_REPLICATION_CONNECTIONS: usize = 128;
/// Accepted replication connections from one remote address at once: a member's session, a
/// reconnect overlapping its predecessor's close, and vote requests.
pub const MAX_REPLICATION_CONNECTIONS_PER_ADDRESS: usize = 8;
/// Bytes an accepted replication connection may send before its session streams (its peer
/// proved the cluster key): a Hello and a Start with the longest epoch history take under
/// 70 KiB, a vote request a few hundred bytes.
pub const MAX_UNPROVEN_BYTES: usize = 256 << 10;

/// The slots of the replication listener. See the module documentation.
#[derive(Debug)]
pub(crate) struct PeerSlots {
    slots: Arc<Mutex<Slots>>,
    /// Each admitted connection's slot, given back at its close.
    seats: Mutex<HashMap<ConnId, Slot>>,
    /// Connections closed at accept: their remaining events are not the replica's.
    refused: Mutex<HashSet<ConnId>>,
    /// Admitted connections whose session does not stream yet: their address and the bytes
    /// they sent.
    unproven: Mutex<HashMap<ConnId, (IpAddr, usize)>>,
    refusals: Mutex<PerAddress>,
}

impl PeerSlots {
    pub(crate) fn new() -> PeerSlots {
        PeerSlots::with_bounds(
            MAX_REPLICATION_CONNECTIONS,
            MAX_REPLICATION_CONNECTIONS_PER_ADDRESS,
        )
    }

    fn with_bounds(total: usize, per_address: usize) -> PeerSlots {
        assert!(
            per_address >= 1 && per_address <= total,
            "replication slots: {per_address} per address, {total} in all"
        );
        PeerSlots {
            slots: Slots::new(total, per_address),
            seats: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashSet::new()),
            unproven: Mutex::new(HashMap::new()),
            refusals: Mutex::new(PerAddress::default()),
        }
    }

    /// A connection from `peer` was accepted at `now`: true if it has a slot (the replica
    /// may hear of it), false if the caller must close it.
    pub(crate) fn admit(&self, now: Duration, conn: ConnId, peer: SocketAddr) -> bool {
        match Slots::take(&self.slots, peer.ip()) {
            Ok(slot) => {
                let previous = self.seats.lock().insert(conn, slot);
                assert!(previous.is_none(), "connection {conn} admitted twice");
                self.unproven.lock().insert(conn, (peer.ip(), 0));
                true
            }
            Err(why) => {
                self.refused.lock().insert(conn);
                self.note_refusal(now, peer.ip(), why.reason());
                false
            }
        }
    }

    /// Whether `conn` is admitted and its session does not stream yet (its bytes are counted).
    pub(crate) fn is_unproven(&self, conn: ConnId) -> bool {
        self.unproven.lock().contains_key(&conn)
    }

    /// `n` bytes arrived on `conn` (already given to the replica); `streams`: its session
    /// streams now, which ends the count. True when it must be closed: past
    /// [`MAX_UNPROVEN_BYTES`] without streaming.
    pub(crate) fn received(&self, now: Duration, conn: ConnId, n: usize, streams: bool) -> bool {
        let mut unproven = self.unproven.lock();
        let Some((ip, sent)) = unproven.get_mut(&conn) else {
            return false;
        };
        if streams {
            unproven.remove(&conn);
            return false;
        }
        *sent += n;
        if *sent <= MAX_UNPROVEN_BYTES {
            return false;
        }
        let ip = *ip;
        unproven.remove(&conn);
        drop(unproven);
        self.note_refusal(
            now,
            ip,
            "sent too many bytes without finishing the handshake",
        );
        true
    }

    /// One summary line per remote address per interval at most.
    fn note_refusal(&self, now: Duration, ip: IpAddr, reason: &str) {
        let line = self.refusals.lock().note(now, ip, reason);
        if let Some(line) = line {
            line.warn_refused("replication port");
        }
    }

    /// Whether `conn` was closed at accept (its events are dropped).
    pub(crate) fn is_refused(&self, conn: ConnId) -> bool {
        self.refused.lock().contains(&conn)
    }

    /// `conn` closed: its slot is given back. True if it had been refused (the replica never
    /// heard of it, so it must not hear of its close either).
    pub(crate) fn closed(&self, conn: ConnId) -> bool {
        if self.refused.lock().remove(&conn) {
            return true;
        }
        self.unproven.lock().remove(&conn);
        self.seats.lock().remove(&conn);
        false
    }

    /// Admitted connections now.
    #[cfg(test)]
    fn taken(&self) -> usize {
        self.seats.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 5000))
    }

    #[test]
    fn connections_are_bounded_per_address_and_in_all_and_slots_come_back_at_close() {
        let s = PeerSlots::with_bounds(4, 2);
        let now = Duration::ZERO;
        assert!(s.admit(now, ConnId(1), from(1)));
        assert!(s.admit(now, ConnId(2), from(1)));
        assert!(
            !s.admit(now, ConnId(3), from(1)),
            "a third from one address"
        );
        assert!(s.is_refused(ConnId(3)));
        assert!(s.admit(now, ConnId(4), from(2)));
        assert!(s.admit(now, ConnId(5), from(3)));
        assert!(!s.admit(now, ConnId(6), from(4)), "every slot taken");
        assert_eq!(s.taken(), 4);
        assert!(
            s.closed(ConnId(3)),
            "a refused connection's close is not the replica's"
        );
        assert!(!s.is_refused(ConnId(3)));
        assert!(!s.closed(ConnId(1)), "an admitted connection's close is");
        assert!(s.admit(now, ConnId(7), from(1)), "its slot came back");
        assert!(s.closed(ConnId(6)));
        assert_eq!(s.taken(), 4);
    }

    #[test]
    fn an_unproven_connection_is_closed_past_its_byte_bound_and_a_streaming_one_never() {
        let s = PeerSlots::new();
        let now = Duration::ZERO;
        assert!(s.admit(now, ConnId(1), from(1)));
        assert!(s.admit(now, ConnId(2), from(1)));
        assert!(s.is_unproven(ConnId(1)));
        assert!(
            !s.received(now, ConnId(1), MAX_UNPROVEN_BYTES, false),
            "at the bound"
        );
        assert!(s.received(now, ConnId(1), 1, false), "one byte past it");
        assert!(!s.is_unproven(ConnId(1)), "counted once");
        assert!(
            !s.received(now, ConnId(2), 70 << 10, true),
            "its session streams"
        );
        assert!(!s.is_unproven(ConnId(2)));
        assert!(
            !s.received(now, ConnId(2), 16 << 20, false),
            "a streaming session's bytes are not counted"
        );
        assert!(!s.closed(ConnId(1)));
        assert_eq!(s.taken(), 1, "the closed connection's slot came back");
    }

    #[test]
    fn the_default_bounds_leave_room_for_a_cluster_of_members() {
        const _: () = assert!(MAX_UNPROVEN_BYTES >= 2 * (4096 * 16 + 4096));
        const _: () = assert!(MAX_REPLICATION_CONNECTIONS_PER_ADDRESS >= 2);
        const _: () =
            assert!(MAX_REPLICATION_CONNECTIONS >= 8 * MAX_REPLICATION_CONNECTIONS_PER_ADDRESS);
        let s = PeerSlots::new();
        let now = Duration::ZERO;
        for i in 0..MAX_REPLICATION_CONNECTIONS_PER_ADDRESS as u64 {
            assert!(s.admit(now, ConnId(i), from(1)));
        }
        assert!(!s.admit(now, ConnId(1000), from(1)));
        assert!(
            s.admit(now, ConnId(1001), from(2)),
            "another address still gets in"
        );
    }
}
