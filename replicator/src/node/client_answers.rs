//! The answers of the client port: admitting an append or a batch (the record goes to the
//! log; its wait for the level is returned, not waited for), the `not_permitted` answer to a
//! request the client's grants do not cover, and carrying out a read, status or promote
//! request (these block: the port runs them on its workers, never on the transport's thread).
//! No I/O of its own beyond the node's calls.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use logship_engine::Lsn;

use super::waiters::Admission;
use super::{Commit, Inner};
use crate::error::{Error, Result};
use crate::protocol::client_auth::Grants;
use crate::protocol::msg::{BATCH_RECORD_PREFIX_BYTES, MAX_BATCH_RECORDS};
use crate::protocol::{ClientStatus, DurabilityLevel, Msg};
use crate::transport::Transport;
use crate::vocab::WaiterId;

/// Largest read response.
pub const MAX_READ_BYTES: usize = 8 << 20;
/// Room in a request frame beyond the record itself (a batch also gets its length prefixes:
/// a batch's records together may be as large as one maximum record).
pub const REQUEST_OVERHEAD_BYTES: usize = 4096;

/// The largest request frame the port reads: one maximum record, or a batch whose records
/// together are as large, with room for the rest of the request.
pub(super) fn max_request_bytes(max_record_bytes: usize) -> usize {
    max_record_bytes + REQUEST_OVERHEAD_BYTES + MAX_BATCH_RECORDS * BATCH_RECORD_PREFIX_BYTES
}

/// Appends in a row that [`LoneAppends`] must see alone before the delivering thread writes
/// one itself: two, so that under concurrent clients (where the first request read after a
/// group commit finds nothing else in flight, and the second does not) it never does.
const LONE_STREAK: u32 = 2;

/// The port's caller-runs rule. A lone client's commit crosses two threads besides the
/// network: the connection's delivering thread hands the record to the log's writer thread,
/// whose completion wakes the answering thread. When the appends come one at a time (each
/// found every record before it durable and no other append waiting for its commit,
/// [`LONE_STREAK`] in a row) and the request came alone in its read, the delivering thread
/// writes the record itself, with its fdatasync, when the log's writer is idle and nothing
/// else is queued
/// ([`Completion::write_here`](logship_engine::Completion::write_here)), and sends the answer
/// itself once the commit is complete.
///
/// On the portable transport the delivering thread is the connection's own: a flush holds
/// only the connection that waits for it anyway. On io_uring one thread delivers every
/// connection, so the rule also asks that the event came alone: the ring went idle before it
/// ([`Transport::idle_waits`] moved since the append before). A request that arrived while
/// the ring was busy (with another client's flush, say) goes to the writer thread, which
/// gathers it with the others that arrived meanwhile: the flush on the ring thread never
/// turns a burst into a series of lone flushes.
pub(super) struct LoneAppends {
    streak: AtomicU32,
    transport: Arc<dyn Transport>,
    /// [`Transport::idle_waits`] at the last append.
    last_turn: AtomicU64,
}

impl LoneAppends {
    /// The rule for a port on `transport`; `None` for a transport that can tell neither
    /// (a flush on its delivering thread could hold other connections).
    pub(super) fn on(transport: &Arc<dyn Transport>) -> Option<LoneAppends> {
        let fits = transport.delivers_on_connection_threads() || transport.idle_waits().is_some();
        fits.then(|| LoneAppends {
            streak: AtomicU32::new(0),
            transport: Arc::clone(transport),
            last_turn: AtomicU64::new(u64::MAX),
        })
    }

    /// Notes an append, on its delivering thread, that found nothing else in flight (`alone`)
    /// or not; returns whether this thread writes it.
    pub(super) fn note(&self, alone: bool) -> bool {
        let fresh = self
            .transport
            .idle_waits()
            .is_none_or(|turn| self.last_turn.swap(turn, Ordering::Relaxed) != turn);
        if !(alone && fresh) {
            // Read first: under load every append lands here, and a store each time would
            // bounce the line between the delivering threads.
            if self.streak.load(Ordering::Relaxed) != 0 {
                self.streak.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let seen = self.streak.load(Ordering::Relaxed);
        if seen < LONE_STREAK {
            self.streak.store(seen + 1, Ordering::Relaxed);
        }
        seen + 1 >= LONE_STREAK
    }
}

/// A request admitted and not yet answered, in the connection's request order.
#[derive(Debug)]
pub(super) enum Pending {
    /// An append or batch the replica has not admitted yet (its start gate is closed), or one
    /// admitted behind such a one: it goes to the log, in request order, once admitted.
    Admitting(Box<Admitting>),
    /// An admitted append: its wait for the level.
    Append { id: u64, commit: Commit },
    /// An admitted batch: its first LSN and the wait of its last record.
    Batch { id: u64, first: Lsn, commit: Commit },
    /// An answer known (a refused append, a finished read, status or promote).
    Ready(Msg),
    /// A read, status or promote request, carried out when it is the oldest unanswered one.
    InTurn(Msg),
    /// A read, status or promote request a worker is carrying out.
    Running,
}

/// An append or batch waiting for the replica's admission.
#[derive(Debug)]
pub(super) struct Admitting {
    id: u64,
    waiter: WaiterId,
    level: DurabilityLevel,
    admission: Admission,
    body: Body,
}

#[derive(Debug)]
enum Body {
    One(Bytes),
    Batch(Vec<Bytes>),
}

impl Admitting {
    /// Whether the replica admitted (or refused) it; registers `cx`'s waker if not.
    pub(super) fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.admission.poll(cx)
    }

    /// Once [`Admitting::poll`] is ready with `admitted`: the append goes to the log (or is
    /// answered with the refusal).
    pub(super) fn finish(
        self,
        inner: &Inner,
        admitted: Result<()>,
        lone: Option<&LoneAppends>,
    ) -> Pending {
        let Admitting {
            id,
            waiter,
            level,
            body,
            ..
        } = self;
        match (admitted, body) {
            (Err(e), Body::One(_)) => Pending::Ready(append_answer(id, Err(e))),
            (Err(e), Body::Batch(_)) => Pending::Ready(batch_answer(id, Lsn::ZERO, Err(e))),
            (Ok(()), Body::One(payload)) => {
                match inner.append_admitted(waiter, level, payload, lone) {
                    Ok(commit) => Pending::Append { id, commit },
                    Err(e) => Pending::Ready(append_answer(id, Err(e))),
                }
            }
            (Ok(()), Body::Batch(payloads)) => {
                match inner.append_batch_admitted(waiter, level, payloads, lone) {
                    Ok((first, commit)) => Pending::Batch { id, first, commit },
                    Err(e) => Pending::Ready(batch_answer(id, Lsn::ZERO, Err(e))),
                }
            }
        }
    }
}

/// Admits an append or a batch: asks the replica, and while its start gate is open (it
/// admits at once) hands the record to the log without waiting for its level. Never waits for
/// the gate: an append it does not admit at once, and every append after it on the connection
/// (`holding` is then set), stays [`Pending::Admitting`], woken through `cx`, so that the
/// connection's records keep their request order and the transport's thread never blocks on a
/// closed gate. Leaves any other client request for its turn.
///
/// # Errors
/// The name of a message that is not a client request (the connection ends).
pub(super) fn admit(
    inner: &Inner,
    msg: Msg,
    holding: &mut bool,
    cx: &mut Context<'_>,
    lone: Option<&LoneAppends>,
) -> std::result::Result<Pending, String> {
    let (id, level, body) = match msg {
        Msg::AppendRequest { id, level, payload } => (id, level, Body::One(payload)),
        Msg::AppendBatchRequest {
            id,
            level,
            payloads,
        } => (id, level, Body::Batch(payloads)),
        m @ (Msg::ReadRequest { .. } | Msg::StatusRequest { .. } | Msg::PromoteRequest { .. }) => {
            return Ok(Pending::InTurn(m))
        }
        other => return Err(format!("{} is not a client request", other.name())),
    };
    let (waiter, admission) = inner.begin_append(level);
    let waiting = Admitting {
        id,
        waiter,
        level,
        admission,
        body,
    };
    if !*holding {
        if let Poll::Ready(admitted) = waiting.poll(cx) {
            return Ok(waiting.finish(inner, admitted, lone));
        }
    }
    *holding = true;
    Ok(Pending::Admitting(Box::new(waiting)))
}

/// The `not_permitted` answer to a client request `grants` do not cover; `None` when they do,
/// or when `msg` is no client request (which [`admit`] refuses by closing).
pub(super) fn not_permitted(msg: &Msg, grants: Grants) -> Option<Msg> {
    if grants.permits(msg) {
        return None;
    }
    let status = ClientStatus::NotPermitted;
    let message = format!(
        "{} is not granted to this client (it holds: {grants})",
        msg.name()
    );
    Some(match *msg {
        Msg::AppendRequest { id, .. } => Msg::AppendResponse {
            id,
            status,
            lsn: Lsn::ZERO,
            message,
        },
        Msg::AppendBatchRequest { id, .. } => Msg::AppendBatchResponse {
            id,
            status,
            first_lsn: Lsn::ZERO,
            last_lsn: Lsn::ZERO,
            message,
        },
        Msg::ReadRequest { id, .. } => Msg::ReadResponse {
            id,
            status,
            detail: 0,
            message,
            records: Bytes::new(),
        },
        Msg::PromoteRequest { id, .. } => Msg::PromoteResponse {
            id,
            status,
            message,
        },
        _ => return None,
    })
}

/// How long a promote request waits for the handover (the primary gives up by itself after
/// the longest election timeout).
const PROMOTE_ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

fn status_of(e: &Error) -> ClientStatus {
    match e {
        Error::QuorumUnavailable { .. } => ClientStatus::QuorumUnavailable,
        Error::NotPrimary { .. } => ClientStatus::NotPrimary,
        Error::Log(logship_engine::Error::RecordTooLarge { .. }) => ClientStatus::Invalid,
        Error::Log(logship_engine::Error::Purged { .. }) => ClientStatus::Purged,
        _ => ClientStatus::Failed,
    }
}

/// The message of a failed append: for `not_primary`, the primary's client address (or
/// empty), which clients follow (docs/protocol.md).
fn failure_message(e: Error) -> String {
    match e {
        Error::NotPrimary { leader_hint } => leader_hint.unwrap_or_default(),
        e => e.to_string(),
    }
}

pub(super) fn append_answer(id: u64, outcome: Result<Lsn>) -> Msg {
    match outcome {
        Ok(lsn) => Msg::AppendResponse {
            id,
            status: ClientStatus::Ok,
            lsn,
            message: String::new(),
        },
        Err(e) => Msg::AppendResponse {
            id,
            status: status_of(&e),
            lsn: Lsn::ZERO,
            message: failure_message(e),
        },
    }
}

/// The answer to a batch whose first record is `first`, once its last record's wait ended.
pub(super) fn batch_answer(id: u64, first: Lsn, outcome: Result<Lsn>) -> Msg {
    match outcome {
        Ok(last) => {
            assert!(
                first > Lsn::ZERO && first <= last,
                "a batch from {first} acknowledged at {last}"
            );
            Msg::AppendBatchResponse {
                id,
                status: ClientStatus::Ok,
                first_lsn: first,
                last_lsn: last,
                message: String::new(),
            }
        }
        Err(e) => Msg::AppendBatchResponse {
            id,
            status: status_of(&e),
            first_lsn: Lsn::ZERO,
            last_lsn: Lsn::ZERO,
            message: failure_message(e),
        },
    }
}

/// Carries out a read, status or promote request in its turn.
pub(super) fn handle(inner: &Inner, msg: Msg) -> Msg {
    match msg {
        Msg::ReadRequest {
            id,
            from,
            max_bytes,
        } => read(inner, id, from, max_bytes),
        Msg::PromoteRequest { id, target } => {
            let (status, message) = match inner.promote(&target, PROMOTE_ANSWER_WITHIN) {
                Ok(done) => (ClientStatus::Ok, done),
                Err(e @ Error::Protocol(_)) => (ClientStatus::Failed, e.to_string()),
                Err(e) => (status_of(&e), e.to_string()),
            };
            Msg::PromoteResponse {
                id,
                status,
                message,
            }
        }
        Msg::StatusRequest { id } => {
            let json = serde_json::to_string(&inner.status())
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            Msg::StatusResponse { id, json }
        }
        other => unreachable!("{} is admitted only as an append", other.name()),
    }
}

fn read(inner: &Inner, id: u64, from: Lsn, max_bytes: u32) -> Msg {
    let max = (max_bytes as usize).clamp(1, MAX_READ_BYTES);
    let fail = |e: logship_engine::Error| {
        let (status, detail) = match &e {
            logship_engine::Error::Purged { first, .. } => (ClientStatus::Purged, first.0),
            _ => (ClientStatus::Failed, 0),
        };
        Msg::ReadResponse {
            id,
            status,
            detail,
            message: e.to_string(),
            records: Bytes::new(),
        }
    };
    let mut reader = match inner.log.read_from(from) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    match reader.next_chunk(max) {
        None => Msg::ReadResponse {
            id,
            status: ClientStatus::Ok,
            detail: 0,
            message: String::new(),
            records: Bytes::new(),
        },
        Some(Ok(c)) => Msg::ReadResponse {
            id,
            status: ClientStatus::Ok,
            detail: 0,
            message: String::new(),
            records: c.bytes,
        },
        Some(Err(e)) => fail(e),
    }
}
