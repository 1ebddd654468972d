//! One client connection's state in the event-driven client port: its seat, its handshake
//! (while one runs), its grants, its request decoder, its timeouts, and the queue of its
//! admitted requests in request order. The port's threads lock it only for CPU work (decoding,
//! polling a commit, encoding answers): admitting an append and carrying out a read happen
//! with it unlocked.
//!
//! [`Conn::take_answers`] turns the ready prefix of the queue into answer bytes, in request
//! order: an append's answer is ready once its commit completed (polled with the connection's
//! waker, so a completion wakes the port's answering thread), a read, status or promote
//! request is handed to a worker once every request before it is answered (its "turn", as
//! before the port was event-driven: it sees the appends before it).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use super::client_answers::{append_answer, batch_answer, Pending};
use super::client_handshake::Handshake;
use super::Inner;
use crate::config::ClientLimits;
use crate::protocol::client_auth::Grants;
use crate::protocol::frame::FrameDecoder;
use crate::protocol::Msg;
use crate::slots::Slot;
use crate::transport::ConnId;

/// One connection of the port.
pub(super) struct Conn {
    pub(super) id: ConnId,
    pub(super) peer: SocketAddr,
    /// Wakes the port's answering thread for this connection when a commit completes.
    pub(super) waker: Waker,
    pub(super) state: Mutex<ConnState>,
}

/// What [`Conn::take_answers`] found besides the answers.
#[derive(Debug, Default)]
pub(super) struct Taken {
    /// Encoded answers, in request order.
    pub(super) bytes: Option<Bytes>,
    /// A read, status or promote request whose turn came: hand it to a worker.
    pub(super) job: Option<Msg>,
}

impl Conn {
    /// Hands the appends the replica has admitted since they were queued to the log, in
    /// request order: up to the first that still waits (whose admission then wakes the
    /// connection).
    pub(super) fn append_admitted(&self, node: &Inner, st: &mut ConnState) {
        let mut cx = Context::from_waker(&self.waker);
        for p in st.pending.iter_mut() {
            let Pending::Admitting(waiting) = p else {
                continue;
            };
            let Poll::Ready(admitted) = waiting.poll(&mut cx) else {
                return;
            };
            let Pending::Admitting(waiting) = std::mem::replace(p, Pending::Running) else {
                unreachable!("matched as Admitting just above");
            };
            *p = waiting.finish(node, admitted, None);
            st.admitting -= 1;
        }
    }

    /// Takes the ready prefix of the queue, up to about `max_bytes` of answers.
    pub(super) fn take_answers(&self, st: &mut ConnState, max_bytes: usize) -> Taken {
        let mut cx = Context::from_waker(&self.waker);
        let mut out = BytesMut::new();
        let mut job = None;
        while out.len() < max_bytes {
            let Some(front) = st.pending.front_mut() else {
                break;
            };
            let answer = match front {
                Pending::Append { id, commit } => match Pin::new(commit).poll(&mut cx) {
                    Poll::Ready(o) => append_answer(*id, o),
                    Poll::Pending => break,
                },
                Pending::Batch { id, first, commit } => match Pin::new(commit).poll(&mut cx) {
                    Poll::Ready(o) => batch_answer(*id, *first, o),
                    Poll::Pending => break,
                },
                Pending::Ready(_) | Pending::InTurn(_) => {
                    match std::mem::replace(front, Pending::Running) {
                        Pending::Ready(m) => m,
                        Pending::InTurn(m) => {
                            job = Some(m);
                            break;
                        }
                        _ => unreachable!("matched as Ready or InTurn just above"),
                    }
                }
                Pending::Running | Pending::Admitting(_) => break,
            };
            st.pending.pop_front();
            out.extend_from_slice(&answer.encode());
        }
        Taken {
            bytes: (!out.is_empty()).then(|| out.freeze()),
            job,
        }
    }
}

/// Why a connection is being closed, once its last answers are out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// The handshake refused it (the refusal is on its way).
    Refused,
    /// A malformed frame or a message that is not a client request.
    Malformed,
    /// More than `MAX_IN_FLIGHT_PER_CONNECTION` requests unanswered.
    TooManyInFlight,
    /// A timeout of [`Deadlines`] ran out.
    TimedOut,
}

/// A connection's mutable state.
pub(super) struct ConnState {
    /// Its seat in the port's bounds, given back before the socket closes (a client that saw
    /// its connection closed may connect again at once and find the seat free).
    pub(super) seat: Option<Slot>,
    /// The client handshake while it runs (`[clients]` configured).
    pub(super) handshake: Option<Handshake>,
    /// The handshake must end by then.
    pub(super) handshake_deadline: Instant,
    pub(super) grants: Grants,
    pub(super) decoder: FrameDecoder,
    /// Admitted requests not yet answered, in request order.
    pub(super) pending: VecDeque<Pending>,
    /// How many of `pending` are [`Pending::Admitting`]: while none are (a start gate that
    /// admits at once), nothing on the answer path looks for them.
    pub(super) admitting: usize,
    pub(super) deadlines: Deadlines,
    /// Set once the connection is to close: no more requests are read; it closes when its
    /// answers are out.
    pub(super) ending: Option<(Ending, Instant)>,
    /// Since when the transport holds more than the port's bound of unsent answer bytes.
    pub(super) backlog_since: Option<Instant>,
    /// Since when (at the latest) a TLS handshake that began is unfinished.
    pub(super) tls_handshake_since: Option<Instant>,
}

impl ConnState {
    /// Marks the connection to close once its answers are out (the first reason stays).
    pub(super) fn end(&mut self, why: Ending, now: Instant) {
        self.ending.get_or_insert((why, now));
    }

    /// The seat, given back (see [`ConnState::seat`]).
    pub(super) fn release_seat(&mut self) {
        drop(self.seat.take());
    }
}

/// A connection's timeouts: idle (no request in flight and no bytes) and request (a frame
/// begun and not finished).
#[derive(Debug)]
pub(super) struct Deadlines {
    limits: ClientLimits,
    last_bytes: Instant,
    /// When the first byte of the frame still incomplete arrived (at the latest).
    partial_since: Option<Instant>,
}

impl Deadlines {
    pub(super) fn new(limits: ClientLimits, now: Instant) -> Deadlines {
        Deadlines {
            limits,
            last_bytes: now,
            partial_since: None,
        }
    }

    /// Bytes arrived; `completed`: they finished at least one frame; `buffered`: bytes of an
    /// unfinished frame left.
    pub(super) fn on_read(&mut self, now: Instant, completed: bool, buffered: usize) {
        self.last_bytes = now;
        self.partial_since = match (buffered, completed) {
            (0, _) => None,
            (_, true) => Some(now),
            (_, false) => Some(self.partial_since.unwrap_or(now)),
        };
    }

    /// The timeout that has run out, if one has.
    pub(super) fn check(
        &self,
        now: Instant,
        buffered: usize,
        in_flight: usize,
    ) -> Option<&'static str> {
        if self
            .partial_since
            .is_some_and(|t| now.duration_since(t) >= self.limits.request)
        {
            return Some("a request did not arrive whole within timeouts.client_request_ms");
        }
        let idle = now.duration_since(self.last_bytes) >= self.limits.idle;
        if buffered == 0 && in_flight == 0 && idle {
            return Some("idle for timeouts.client_idle_ms");
        }
        None
    }

    /// The request timeout.
    pub(super) fn request(&self) -> Duration {
        self.limits.request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ClientLimits = ClientLimits {
        per_address: 2,
        idle: Duration::from_secs(60),
        request: Duration::from_secs(10),
    };

    #[test]
    fn an_unfinished_request_times_out_from_its_first_byte() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        d.on_read(t0, false, 3);
        // One more byte a second keeps the connection busy but does not restart the clock.
        for s in 1..10 {
            d.on_read(t0 + Duration::from_secs(s), false, 3 + s as usize);
            assert!(d.check(t0 + Duration::from_secs(s), 4, 0).is_none());
        }
        let why = d.check(t0 + LIMITS.request, 12, 0).expect("timed out");
        assert!(why.contains("client_request_ms"), "{why}");
        // A finished frame restarts the clock for the next one.
        d.on_read(t0 + LIMITS.request, true, 2);
        assert!(d.check(t0 + LIMITS.request, 2, 0).is_none());
    }

    #[test]
    fn an_idle_connection_times_out_unless_a_request_is_in_flight() {
        let t0 = Instant::now();
        let d = Deadlines::new(LIMITS, t0);
        let later = t0 + LIMITS.idle;
        assert!(d.check(later - Duration::from_millis(1), 0, 0).is_none());
        assert!(d.check(later, 0, 1).is_none(), "an answer is still owed");
        let why = d.check(later, 0, 0).expect("idle");
        assert!(why.contains("client_idle_ms"), "{why}");
    }
}
