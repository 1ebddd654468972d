//! The client port's side of the client handshake (`protocol::client_auth`), as a small state
//! machine the port feeds each frame of a new connection before any request: hello, challenge,
//! proof, then welcome or a typed refusal and the close. It does no I/O: it returns the frame
//! to send and whether the connection goes on.
//!
//! Bounds: the whole handshake must complete within `timeouts.client_request_ms` of the accept
//! (an unauthenticated connection cannot sit on a slot; the port's timer calls
//! [`Handshake::timed_out`]), and its frames are read with a decoder refusing bodies over
//! [`HANDSHAKE_MAX_BODY_BYTES`] (an unauthenticated peer cannot make the node buffer a
//! request-sized frame). Refusals are counted and logged as one summary line per
//! [`SUMMARY_INTERVAL`], with the last reason and address, never one line each.
//!
//! The keys are the node's as of the client's hello: a reload between hello and proof does not
//! change the outcome; sessions already admitted keep their grants across reloads.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::{random_nonce, Inner};
use crate::log_summary::{Summary, SUMMARY_INTERVAL};
use crate::protocol::auth::NONCE_LEN;
use crate::protocol::client_auth::{Challenge, ClientKeys, ClientRefusal, Grants, Refused};
use crate::protocol::Msg;

/// Largest handshake frame body: a hello is a nonce and a name of at most 255 bytes.
pub(crate) const HANDSHAKE_MAX_BODY_BYTES: usize = 512;

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

/// What the port does after a handshake frame (or its absence).
#[derive(Debug)]
pub(crate) enum Step {
    /// Send this frame and wait for the next.
    Reply(Msg),
    /// Send the welcome; requests follow, with these grants.
    Admitted(Grants, Msg),
    /// Send the refusal (already noted), then close.
    Refused(Msg),
    /// Close without a word (the node is going away).
    Close,
}

/// Where a handshake stands.
enum Stage {
    /// Waiting for the client's hello.
    Hello,
    /// The challenge went out; waiting for the proof.
    Proof {
        challenge: Challenge,
        keys: Arc<ClientKeys>,
        cluster_id: String,
    },
    /// Over (admitted or refused): nothing more is fed.
    Done,
}

/// One connection's handshake. See the module docs.
pub(crate) struct Handshake {
    ip: IpAddr,
    stage: Stage,
}

impl Handshake {
    /// A handshake with a client at `ip`, waiting for its hello.
    pub(crate) fn new(ip: IpAddr) -> Handshake {
        Handshake {
            ip,
            stage: Stage::Hello,
        }
    }

    /// The next frame arrived: `None` when it was malformed.
    pub(crate) fn on_frame(&mut self, node: &Inner, msg: Option<Msg>) -> Step {
        match (std::mem::replace(&mut self.stage, Stage::Done), msg) {
            (Stage::Hello, Some(Msg::ClientHello { nonce, name })) => {
                self.challenge(node, name, nonce)
            }
            (Stage::Hello, _) => self.refuse(node, ClientRefusal::Protocol, "", "no hello"),
            (
                Stage::Proof {
                    challenge,
                    keys,
                    cluster_id,
                },
                Some(Msg::ClientProof { mac }),
            ) => match challenge.check(&keys, &cluster_id, &mac) {
                Ok(w) => {
                    let (grants, mac) = (w.grants, w.mac);
                    tracing::debug!(client = challenge.name, %grants, "client admitted");
                    Step::Admitted(grants, Msg::ClientWelcome { grants, mac })
                }
                Err(Refused { code, reason }) => self.refuse(node, code, &challenge.name, reason),
            },
            (Stage::Proof { challenge, .. }, _) => {
                self.refuse(node, ClientRefusal::Protocol, &challenge.name, "no proof")
            }
            (Stage::Done, _) => Step::Close,
        }
    }

    /// The handshake's deadline passed before it ended.
    pub(crate) fn timed_out(&mut self, node: &Inner) -> Step {
        let name = match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Proof { challenge, .. } => challenge.name,
            Stage::Hello => String::new(),
            Stage::Done => return Step::Close,
        };
        self.refuse(node, ClientRefusal::TimedOut, &name, "timed out")
    }

    fn challenge(&mut self, node: &Inner, name: String, client_nonce: [u8; NONCE_LEN]) -> Step {
        let Some((keys, cluster_id)) = node.client_keys_now() else {
            return Step::Close;
        };
        let Ok(node_nonce) = random_nonce() else {
            return Step::Close;
        };
        let challenge = Challenge {
            name,
            client_nonce,
            node_nonce,
        };
        let reply = Msg::ClientChallenge {
            nonce: node_nonce,
            cluster_id: cluster_id.clone(),
        };
        self.stage = Stage::Proof {
            challenge,
            keys,
            cluster_id,
        };
        Step::Reply(reply)
    }

    fn refuse(&mut self, node: &Inner, code: ClientRefusal, name: &str, why: &'static str) -> Step {
        self.stage = Stage::Done;
        node.client_refusals.note(self.ip, name, why);
        let message = refusal_text(code).to_string();
        Step::Refused(Msg::ClientRefused { code, message })
    }
}

fn refusal_text(code: ClientRefusal) -> &'static str {
    match code {
        ClientRefusal::AuthFailed => "authentication failed: unknown client name or wrong key",
        ClientRefusal::Protocol => "the client handshake comes first: ClientHello, ClientProof",
        ClientRefusal::TimedOut => "the client handshake did not complete in time",
    }
}

/// The keys a new connection is checked against: `None` while `[clients]` is not configured
/// (the port is open).
pub(crate) type ClientKeysSlot = Mutex<Option<Arc<ClientKeys>>>;
