//! The simulated network: TCP connections between nodes `0..n`, in virtual time.
//!
//! A connection has two ends, the dialer's and the acceptor's, and one ordered stream of items
//! toward each end: the handshake (SYN toward the acceptor, SYN-ACK toward the dialer), byte
//! chunks, and last the end's `Closed`. Each chunk gets a random delay, but an item never
//! overtakes an earlier one of the same stream, so each direction is a FIFO byte stream as TCP
//! makes it; different connections are independent.
//!
//! Contract toward each end, the transport's (see `crate::transport`): `Connected` or `Accepted`
//! comes before any data; `Closed` is the last event of an end and comes exactly once, also after
//! a local [`Net::close`] and for a dial that never connected. The acceptor hears of a connection
//! only when its SYN arrives. An end that vanishes with its node ([`Net::reset_node`]) gets no
//! events at all.
//!
//! Faults, every choice drawn from the [`Rng`](crate::vocab::Rng) the network is given:
//! - delay per chunk, with occasional spikes ([`NetConfig`]);
//! - resets: both ends get `Closed`, or only one (half-open: the other end hears nothing more
//!   and what it sends vanishes, until it gives up by itself);
//! - partitions, one-way or both ways: a blocked direction holds its items (TCP retransmits);
//!   a heal delivers them in order; a connection holding items longer than
//!   [`NetConfig::stall_reset_after`] is reset. A dial across a partition times out. An idle
//!   connection across a partition is not reset: nothing is waiting to be retransmitted.
//! - opt-in [`HostileFaults`] that break the TCP model on purpose, for runs that check safety
//!   only: a chunk duplicated, two adjacent chunks swapped, a chunk lost.
//!
//! Ordering is total and fixed by the seed: every scheduled item has a key `(time, sequence)`,
//! the sequence number breaking ties in the order items were scheduled.
//!
//! Files: [`config`] (the behaviour and its faults), [`event`] (what nodes hear), `stream`
//! (connections, their ends and the schedule), [`network`] (the network itself).

pub mod config;
pub mod event;
pub mod network;
mod stream;

#[cfg(test)]
mod tests;

pub use self::config::{
    HostileFaults, NetConfig, DEFAULT_LATENCY_MAX, DEFAULT_LATENCY_MIN, DEFAULT_SPIKE_MAX,
    DEFAULT_STALL_RESET_AFTER,
};
pub use self::event::{CloseReason, NetEvent};
pub use self::network::Net;
