//! Operation tokens and the submission backlog.
//!
//! Every SQE carries a token in `user_data`: the id of what it belongs to (a connection, a
//! listener index, or 0 for the wake-up read) in the high bits and its [`Op`] in the low
//! [`OP_BITS`]. A completion is routed by its token alone, so each (id, op) pair has at most one
//! operation in flight.
//!
//! SQEs first go to [`SqeQueue`]'s backlog and move into the ring's submission queue when the
//! driver flushes; an SQE that does not fit waits there, so building an operation never fails
//! or blocks. [`SqeQueue::in_flight`] counts operations from the push of their SQE until their
//! final completion, which is what the driver waits for before it frees anything.

use std::collections::VecDeque;
use std::fmt;

use io_uring::{opcode, squeue};

/// Low bits of a token that hold the [`Op`].
const OP_BITS: u32 = 4;
/// Largest id a token can carry.
pub(super) const MAX_TOKEN_ID: u64 = u64::MAX >> OP_BITS;

/// What an operation does, and so which handler its completion goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// The read of the wake-up eventfd.
    Wake = 0,
    /// A (multishot) accept on a listener.
    Accept = 1,
    /// The pause before re-arming a listener's accept after an error.
    AcceptBackoff = 2,
    /// An outgoing connection's connect.
    Connect = 3,
    /// The link timeout bounding a connect.
    ConnectTimeout = 4,
    /// A connection's receive.
    Recv = 5,
    /// A connection's send.
    Send = 6,
    /// An `ASYNC_CANCEL` aimed at a connection's operation.
    CancelConn = 7,
    /// An `ASYNC_CANCEL` aimed at a listener's or the wake-up operation.
    CancelOther = 8,
}

impl Op {
    const ALL: [Op; 9] = [
        Op::Wake,
        Op::Accept,
        Op::AcceptBackoff,
        Op::Connect,
        Op::ConnectTimeout,
        Op::Recv,
        Op::Send,
        Op::CancelConn,
        Op::CancelOther,
    ];
}

const _: () = assert!(Op::ALL.len() <= 1 << OP_BITS);

/// The `user_data` of operation `op` of `id`.
///
/// # Panics
/// If `id` exceeds [`MAX_TOKEN_ID`]: ids come from counters that never get near it.
pub(super) fn token(id: u64, op: Op) -> u64 {
    assert!(id <= MAX_TOKEN_ID, "token id out of range: {id}");
    (id << OP_BITS) | op as u64
}

/// The id and operation a completion's `user_data` names.
///
/// # Panics
/// If the low bits name no [`Op`]: the kernel returns `user_data` as submitted, and every SQE
/// gets its token from [`token`].
pub(super) fn parse_token(user_data: u64) -> (u64, Op) {
    let code = user_data & ((1 << OP_BITS) - 1);
    let op = Op::ALL
        .into_iter()
        .find(|op| *op as u64 == code)
        .unwrap_or_else(|| panic!("completion with a foreign user_data: {user_data:#x}"));
    (user_data >> OP_BITS, op)
}

/// SQEs that must reach the submission queue together.
pub(super) enum SqeGroup {
    /// A lone operation.
    One(squeue::Entry),
    /// An operation flagged `IO_LINK` and its link timeout: a link cannot span two submissions.
    Linked([squeue::Entry; 2]),
}

impl SqeGroup {
    pub(super) fn entries(&self) -> &[squeue::Entry] {
        match self {
            SqeGroup::One(e) => std::slice::from_ref(e),
            SqeGroup::Linked(pair) => pair,
        }
    }
}

/// SQEs not yet in the ring, and the count of operations whose final completion is outstanding.
#[derive(Default)]
pub(super) struct SqeQueue {
    backlog: VecDeque<SqeGroup>,
    in_flight: usize,
}

impl fmt::Debug for SqeQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqeQueue")
            .field("backlog", &self.backlog.len())
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl SqeQueue {
    /// Queues one operation.
    ///
    /// # Safety
    /// Every buffer, address and descriptor `entry` names must stay valid until its final
    /// completion has been reaped (the kernel owns them from submission to completion, even if
    /// the operation is cancelled).
    #[allow(unsafe_code)]
    pub(super) unsafe fn push(&mut self, entry: squeue::Entry) {
        self.backlog.push_back(SqeGroup::One(entry));
        self.in_flight += 1;
    }

    /// Queues `op` linked to `timeout`, an `IORING_OP_LINK_TIMEOUT` that bounds it.
    ///
    /// # Safety
    /// As for [`SqeQueue::push`], for both entries.
    #[allow(unsafe_code)]
    pub(super) unsafe fn push_linked(&mut self, op: squeue::Entry, timeout: squeue::Entry) {
        let op = op.flags(squeue::Flags::IO_LINK);
        self.backlog.push_back(SqeGroup::Linked([op, timeout]));
        self.in_flight += 2;
    }

    /// Queues an `ASYNC_CANCEL` of the operation whose token is `target`; its own completion
    /// carries `token`. The target's completion still arrives (`-ECANCELED`, or its result if it
    /// finished first), and only that completion ends the kernel's use of its buffers.
    pub(super) fn cancel(&mut self, target: u64, token: u64) {
        let entry = opcode::AsyncCancel::new(target).build().user_data(token);
        // Safe to queue: a cancel names no memory, only another operation's `user_data`.
        self.backlog.push_back(SqeGroup::One(entry));
        self.in_flight += 1;
    }

    /// Records the final completion of one operation.
    ///
    /// # Panics
    /// If no operation is in flight: a completion nobody submitted.
    pub(super) fn completed(&mut self) {
        assert!(self.in_flight > 0, "completion with no operation in flight");
        self.in_flight -= 1;
    }

    /// Operations submitted or queued whose final completion has not been reaped.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// True if SQEs wait for room in the submission queue.
    pub(super) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Moves whole groups from the backlog into `sq` while they fit, oldest first.
    #[allow(unsafe_code)]
    pub(super) fn move_into(&mut self, sq: &mut squeue::SubmissionQueue<'_>) {
        while let Some(group) = self.backlog.front() {
            // SAFETY: every group entered the backlog through `push` or `push_linked`, whose
            // callers guarantee the memory it names outlives the operation, or through `cancel`,
            // which names no memory.
            if unsafe { sq.push_multiple(group.entries()) }.is_err() {
                return;
            }
            self.backlog.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_for_every_op() {
        for op in Op::ALL {
            for id in [0, 1, 42, MAX_TOKEN_ID] {
                assert_eq!(parse_token(token(id, op)), (id, op), "id={id} op={op:?}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "token id out of range")]
    fn token_rejects_ids_that_would_lose_bits() {
        token(MAX_TOKEN_ID + 1, Op::Recv);
    }

    #[test]
    fn cancel_counts_as_in_flight_until_completed() {
        let mut q = SqeQueue::default();
        q.cancel(token(3, Op::Recv), token(3, Op::CancelConn));
        assert!(q.has_backlog());
        assert_eq!(q.in_flight(), 1);
        q.completed();
        assert_eq!(q.in_flight(), 0);
    }
}
