//! The answers of the client port: admitting an append or a batch (the record goes to the
//! log; its wait for the level is returned, not waited for), the `not_permitted` answer to a
//! request the client's grants do not cover, and carrying out a read, status or promote
//! request (these block: the port runs them on its workers, never on the transport's thread).
//! No I/O of its own beyond the node's calls.

use bytes::Bytes;
use logship_engine::Lsn;

use super::{Commit, Inner};
use crate::error::{Error, Result};
use crate::protocol::client_auth::Grants;
use crate::protocol::msg::{BATCH_RECORD_PREFIX_BYTES, MAX_BATCH_RECORDS};
use crate::protocol::{ClientStatus, Msg};

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

/// A request admitted and not yet answered, in the connection's request order.
#[derive(Debug)]
pub(super) enum Pending {
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

/// Admits an append or a batch (hands it to the log, does not wait for its level); leaves any
/// other client request for its turn.
///
/// # Errors
/// The name of a message that is not a client request (the connection ends).
pub(super) fn admit(inner: &Inner, msg: Msg) -> std::result::Result<Pending, String> {
    Ok(match msg {
        Msg::AppendRequest { id, level, payload } => match inner.append(payload, level) {
            Ok(commit) => Pending::Append { id, commit },
            Err(e) => Pending::Ready(append_answer(id, Err(e))),
        },
        Msg::AppendBatchRequest {
            id,
            level,
            payloads,
        } => match inner.append_batch(payloads, level) {
            Ok((first, commit)) => Pending::Batch { id, first, commit },
            Err(e) => Pending::Ready(batch_answer(id, Lsn::ZERO, Err(e))),
        },
        m @ (Msg::ReadRequest { .. } | Msg::StatusRequest { .. } | Msg::PromoteRequest { .. }) => {
            Pending::InTurn(m)
        }
        other => return Err(format!("{} is not a client request", other.name())),
    })
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
