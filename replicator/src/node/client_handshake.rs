//! The client port's side of the client handshake (`protocol::client_auth`), on one blocking
//! connection, before any request is read: hello, challenge, proof, then welcome or a typed
//! refusal and the close.
//!
//! Bounds: the whole handshake must complete within `timeouts.client_request_ms` of the accept
//! (an unauthenticated connection cannot sit on a slot), and its frames are read with a
//! decoder refusing bodies over [`HANDSHAKE_MAX_BODY_BYTES`] (an unauthenticated peer cannot
//! make the node buffer a request-sized frame). Refusals are counted and logged as one summary
//! line per [`SUMMARY_INTERVAL`], with the last reason and address, never one line each.
//!
//! The keys are the node's as of the client's hello: a reload between hello and proof does not
//! change the outcome; sessions already admitted keep their grants across reloads.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;

use super::client_wire::Link;
use super::{random_nonce, Inner};
use crate::log_summary::{Summary, SUMMARY_INTERVAL};
use crate::protocol::client_auth::{Challenge, ClientKeys, ClientRefusal, Grants, Refused};
use crate::protocol::frame::FrameDecoder;
use crate::protocol::Msg;

/// Largest handshake frame body: a hello is a nonce and a name of at most 255 bytes.
pub(crate) const HANDSHAKE_MAX_BODY_BYTES: usize = 512;
/// Bytes read at once during the handshake.
const HANDSHAKE_READ_BYTES: usize = 1024;

/// Refused client handshakes: counted, and logged as one summary line per interval.
#[derive(Debug)]
pub(crate) struct Refusals {
    started: Instant,
    summary: Mutex<Summary>,
    total: AtomicU64,
}

impl Refusals {
    pub(crate) fn new() -> Refusals {
        Refusals {
            started: Instant::now(),
            summary: Mutex::new(Summary::default()),
            total: AtomicU64::new(0),
        }
    }

    /// Handshakes refused since the port started.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn note(&self, ip: IpAddr, name: &str, reason: &'static str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let logged = self.summary.lock().note(self.started.elapsed(), 1);
        if let Some(refused) = logged {
            tracing::warn!(
                refused,
                last_address = %ip,
                last_client = name,
                last_reason = reason,
                "client port: handshakes refused (at most one such line per {} s)",
                SUMMARY_INTERVAL.as_secs()
            );
        }
    }
}

/// How the handshake ended.
pub(crate) enum Outcome {
    /// Admitted with these grants; the decoder holds any bytes that followed the proof.
    Admitted(Grants, FrameDecoder),
    /// Refused (the refusal was sent and noted) or the client left: close the connection.
    Closed,
}

/// Runs the node's side of the handshake on `link`, the keys taken from `keys` at the hello.
///
/// # Errors
/// A read or write error of the socket.
pub(super) fn handshake(
    link: &Link<'_, '_>,
    inner: &Weak<Inner>,
    stop: &AtomicBool,
    deadline: Instant,
) -> std::io::Result<Outcome> {
    let Some(node) = inner.upgrade() else {
        return Ok(Outcome::Closed);
    };
    let refusals = &node.client_refusals;
    let ip = link
        .stream
        .peer_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let mut decoder = FrameDecoder::new(HANDSHAKE_MAX_BODY_BYTES);
    let mut reading = Reading {
        link,
        stop,
        deadline,
    };
    let refuse = |link: &Link<'_, '_>, code: ClientRefusal, name: &str, why| {
        refusals.note(ip, name, why);
        let message = refusal_text(code).to_string();
        link.send(&Msg::ClientRefused { code, message }.encode())
            .map(|()| Outcome::Closed)
    };
    let (name, client_nonce) = match reading.next(&mut decoder)? {
        Step::Msg(Msg::ClientHello { nonce, name }) => (name, nonce),
        Step::Msg(_) | Step::Malformed => {
            return refuse(link, ClientRefusal::Protocol, "", "no hello")
        }
        Step::TimedOut => return refuse(link, ClientRefusal::TimedOut, "", "timed out"),
        Step::Gone => return Ok(Outcome::Closed),
    };
    let Some((keys, cluster_id)) = node.client_keys_now() else {
        return Ok(Outcome::Closed);
    };
    let challenge = Challenge {
        name,
        client_nonce,
        node_nonce: random_nonce()?,
    };
    let nonce = challenge.node_nonce;
    link.send(
        &Msg::ClientChallenge {
            nonce,
            cluster_id: cluster_id.clone(),
        }
        .encode(),
    )?;
    let name = challenge.name.as_str();
    let mac = match reading.next(&mut decoder)? {
        Step::Msg(Msg::ClientProof { mac }) => mac,
        Step::Msg(_) | Step::Malformed => {
            return refuse(link, ClientRefusal::Protocol, name, "no proof")
        }
        Step::TimedOut => return refuse(link, ClientRefusal::TimedOut, name, "timed out"),
        Step::Gone => return Ok(Outcome::Closed),
    };
    match challenge.check(&keys, &cluster_id, &mac) {
        Ok(w) => {
            let (grants, mac) = (w.grants, w.mac);
            link.send(&Msg::ClientWelcome { grants, mac }.encode())?;
            tracing::debug!(client = name, %grants, "client admitted");
            Ok(Outcome::Admitted(grants, decoder))
        }
        Err(Refused { code, reason }) => refuse(link, code, name, reason),
    }
}

fn refusal_text(code: ClientRefusal) -> &'static str {
    match code {
        ClientRefusal::AuthFailed => "authentication failed: unknown client name or wrong key",
        ClientRefusal::Protocol => "the client handshake comes first: ClientHello, ClientProof",
        ClientRefusal::TimedOut => "the client handshake did not complete in time",
    }
}

/// What reading the next handshake frame gave.
enum Step {
    Msg(Msg),
    Malformed,
    TimedOut,
    /// The client closed, or the port stops.
    Gone,
}

struct Reading<'a, 'p> {
    link: &'a Link<'a, 'p>,
    stop: &'a AtomicBool,
    deadline: Instant,
}

impl Reading<'_, '_> {
    /// The next frame, read until the deadline (the socket's read timeout is the port's poll
    /// interval, so the deadline and the stop flag are looked at between reads).
    fn next(&mut self, decoder: &mut FrameDecoder) -> std::io::Result<Step> {
        let mut buf = [0u8; HANDSHAKE_READ_BYTES];
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => return Ok(Msg::decode(&f).map_or(Step::Malformed, Step::Msg)),
                Ok(None) => {}
                Err(_) => return Ok(Step::Malformed),
            }
            if self.stop.load(Ordering::Acquire) {
                return Ok(Step::Gone);
            }
            if Instant::now() >= self.deadline {
                return Ok(Step::TimedOut);
            }
            match self.link.read_into(&mut buf, decoder) {
                Ok(false) => return Ok(Step::Gone),
                Ok(true) => {}
                Err(e) if is_retry(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_retry(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
    matches!(e.kind(), WouldBlock | TimedOut | Interrupted)
}

/// The keys a new connection is checked against: `None` while `[clients]` is not configured
/// (the port is open).
pub(crate) type ClientKeysSlot = Mutex<Option<Arc<ClientKeys>>>;
