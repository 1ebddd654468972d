//! What a replica is told ([`Input`]) and what it asks its executor to do ([`Action`]).
//!
//! The executor carries out a step's actions in the order given. Where order matters the
//! replica says so by the order itself: a follower's acknowledgement of records comes after
//! the [`Action::Append`] that hands them to the log, so an executor that performs sends and
//! log work on different threads must not let a send overtake a log action before it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use logship_engine::{Chunk, Epoch, Lsn, RangeDigest};

use super::{ConnId, ElectionState};
use crate::fetch::{FetchRequest, IntegrityAction};
use crate::integrity::Damaged;
use crate::protocol::{DurabilityLevel, Msg};

/// One append waiting for its durability level, numbered by the executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaiterId(pub u64);

/// Why a catch-up read failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The records were purged; the log starts at `first`.
    Purged {
        /// First LSN held.
        first: Lsn,
    },
    /// Anything else (I/O, corruption), as text.
    Failed(String),
}

/// Why a waiting append failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// Its level did not hold within the commit timeout.
    QuorumUnavailable {
        /// The level it waited for.
        level: DurabilityLevel,
        /// Its LSN (0: it never got one, the start gate stayed closed).
        lsn: Lsn,
        /// How long it waited.
        waited: Duration,
        /// The quorum, as text, with why it did not hold.
        quorum: String,
    },
    /// This node is not (or no longer) the primary.
    NotPrimary,
    /// The log failed; nothing more is accepted until a restart.
    Poisoned {
        /// The log's failure.
        cause: String,
    },
}

/// The log's position, as a follower sees it when it starts or after a truncation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    /// Last LSN in the log.
    pub last: Lsn,
    /// Epoch of that record.
    pub last_epoch: Epoch,
    /// CRC field of that record (0 for an empty log).
    pub last_crc: u32,
    /// Durable LSN.
    pub durable: Lsn,
    /// Applied LSN.
    pub applied: Lsn,
}

/// What happens to a replica; fed to `Replica::step` with the time it happened.
#[derive(Clone, Debug)]
pub enum Input {
    /// Time passed (timeouts, heartbeats, retries, commit deadlines).
    Tick,
    /// The executor started the connection an [`Action::Connect`] asked for.
    Dialed {
        /// The link it is for.
        link: usize,
        /// The connection's number.
        conn: ConnId,
    },
    /// The executor started the connection an [`Action::ConnectVoter`] asked for.
    DialedVoter {
        /// The member it is for.
        member: usize,
        /// The connection's number.
        conn: ConnId,
    },
    /// The log's tail, as [`Action::ReadTail`] asked (a primary that stepped down).
    Tail(Tail),
    /// An operator asks this primary to hand over to follower `target` (planned switchover);
    /// answered by [`Action::PromoteAnswer`].
    Promote {
        /// The follower's node id.
        target: super::NodeId,
    },
    /// The log's fdatasync has been stalled past the configured limit (`true`), or completed
    /// again (`false`): a stalled node does not vote or stand, and a primary steps down.
    DiskStalled(bool),
    /// An outgoing connection is established.
    Connected {
        /// The connection.
        conn: ConnId,
    },
    /// A peer connected to this node.
    Accepted {
        /// The connection.
        conn: ConnId,
        /// The remote address (data: it names the peer in log lines).
        peer: SocketAddr,
    },
    /// A connection ended (or never connected); `why` is logged.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why.
        why: String,
    },
    /// Bytes arrived on a connection.
    Data {
        /// The connection.
        conn: ConnId,
        /// The bytes, as the stream delivered them (any split).
        bytes: BytesMut,
    },
    /// Primary: the log formed a batch of new records (before its sync).
    Written {
        /// First LSN.
        first: Lsn,
        /// Last LSN.
        last: Lsn,
        /// The encoded records.
        records: Bytes,
    },
    /// The log is durable up to this LSN.
    Durable(Lsn),
    /// The log failed (a sync or write error): the replica stops.
    LogFailed {
        /// Why.
        cause: String,
    },
    /// The log was cut after this LSN: by its owner (a primary's records past it are gone,
    /// and the LSNs after it will name new records), or for a follower's session (which the
    /// follower asked for, and learns of by [`Input::Truncated`]).
    LogCut {
        /// The last LSN kept.
        last: Lsn,
    },
    /// The application applied records up to this LSN (follower).
    Applied(Lsn),
    /// Records below this LSN were purged.
    Purged(Lsn),
    /// A client wants to append at `level`; answered by [`Action::Admit`] or
    /// [`Action::FailWait`].
    ClientAppend {
        /// Its number.
        waiter: WaiterId,
        /// The level it will wait for.
        level: DurabilityLevel,
    },
    /// The log took an admitted append as record `lsn`; it now waits for its level.
    Appended {
        /// Its number.
        waiter: WaiterId,
        /// The level.
        level: DurabilityLevel,
        /// Its LSN.
        lsn: Lsn,
    },
    /// The answer to [`Action::ReadChunk`].
    Chunk {
        /// The link.
        link: usize,
        /// Its connection.
        conn: ConnId,
        /// The first LSN asked for.
        from: Lsn,
        /// What was read.
        result: Result<Option<Chunk>, ReadError>,
    },
    /// The answer to [`Action::LookupCrc`].
    Crc {
        /// The link.
        link: usize,
        /// Its connection.
        conn: ConnId,
        /// The CRC field of the record, if the log holds it.
        crc: Option<u32>,
    },
    /// What the log holds for a peer's fetch ([`Action::ServeFetch`]).
    FetchRead {
        /// The primary's link it came on (`None` on a follower).
        link: Option<usize>,
        /// Its connection.
        conn: ConnId,
        /// The request.
        request: FetchRequest,
        /// The CRC of the record before the range here, if asked for and held.
        prev_crc: Option<u32>,
        /// The records read.
        read: Result<Option<Chunk>, String>,
    },
    /// The answer to [`Action::AppendTakenBack`]: the log's new last LSN, or why not.
    TakenBack {
        /// The link.
        link: usize,
        /// Its connection.
        conn: ConnId,
        /// The result.
        result: Result<Lsn, String>,
    },
    /// The answer to [`Action::Truncate`].
    Truncated {
        /// Where the cut was asked for.
        after: Lsn,
        /// The CRC the log holds at `after` (0 for LSN 0 or a record it lacks).
        found_crc: u32,
        /// Whether the log was cut (only when `found_crc` matched).
        done: bool,
        /// The log's tail now.
        tail: Tail,
    },
    /// An [`Action::Append`] failed; the log really ends at `tail`.
    AppendFailed {
        /// Why.
        reason: String,
        /// The log's tail now.
        tail: Tail,
    },
    /// The scrubber produced digests of this node's log, to send to the peers.
    LocalDigests(Vec<RangeDigest>),
    /// The ranges the log knows damaged now (reported periodically; empty when none).
    Damaged(Vec<Damaged>),
    /// The operator reloaded the cluster key file: sessions and vote proofs from now on use
    /// this ring (the current key proves, any key is accepted); sessions already
    /// authenticated go on.
    KeyRing(crate::protocol::auth::KeyRing),
    /// The executor replaced a damaged range ([`Action::Integrity`] with a repair), or could
    /// not.
    Repaired {
        /// The range's first LSN.
        first: Lsn,
        /// Why it failed, if it did.
        result: Result<(), String>,
    },
}

/// What a replica asks its executor to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Connect to a follower; report the connection's number with [`Input::Dialed`], then
    /// [`Input::Connected`] or [`Input::Closed`].
    Connect {
        /// The link.
        link: usize,
        /// Where.
        addr: SocketAddr,
        /// Connect timeout.
        timeout: Duration,
    },
    /// Connect to a voter to ask for its vote; report the connection's number with
    /// [`Input::DialedVoter`], then [`Input::Connected`] or [`Input::Closed`].
    ConnectVoter {
        /// The member's index in the cluster table.
        member: usize,
        /// Where.
        addr: SocketAddr,
        /// Connect timeout.
        timeout: Duration,
    },
    /// Persist the election state durably (temporary file, fdatasync, rename, directory
    /// fsync) before carrying out any later action: a vote or an epoch must not be acted on
    /// and then forgotten in a crash. A failure is a failed log ([`Input::LogFailed`]).
    /// `seq` rises with every `Persist`: one older than the last carried out is skipped (an
    /// action list can hold a `Persist` that a step nested inside it, for a log action's
    /// completion, has already superseded).
    Persist {
        /// Its number.
        seq: u64,
        /// The state.
        state: ElectionState,
    },
    /// Write new appends in `epoch` from now on, and append the epoch's marker (an empty
    /// record) first; it is reported like any record ([`Input::Written`], [`Input::Durable`]).
    AppendMarker {
        /// The new epoch.
        epoch: Epoch,
    },
    /// Report the log's tail with [`Input::Tail`] (a primary stepped down: the follower it
    /// became needs its last record's CRC and epoch). Appends admitted before must not land
    /// after the read (fail them, or read after they land).
    ReadTail,
    /// The answer to [`Input::Promote`]: handed over (with what happened), or why not.
    PromoteAnswer(Result<String, String>),
    /// Send a message.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: Msg,
    },
    /// Close a connection once what is queued on it has left.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why (logged).
        reason: String,
    },
    /// Append these records (whole, encoded, dense from `first`) to the log (follower).
    Append {
        /// First LSN.
        first: Lsn,
        /// Last LSN.
        last: Lsn,
        /// The records.
        records: Bytes,
    },
    /// Cut the log after `after`, before anything else is appended, but only if the record
    /// at `after` has the CRC `expect_crc` (not checked for LSN 0); report with
    /// [`Input::Truncated`].
    Truncate {
        /// Keep records up to and including this LSN.
        after: Lsn,
        /// The primary's CRC of record `after`.
        expect_crc: u32,
    },
    /// Read whole records from `from` (written, not necessarily durable), at most
    /// `max_bytes`; report with [`Input::Chunk`].
    ReadChunk {
        /// The link.
        link: usize,
        /// Its connection.
        conn: ConnId,
        /// First LSN.
        from: Lsn,
        /// Size bound.
        max_bytes: usize,
    },
    /// Look up the CRC field of record `lsn`; report with [`Input::Crc`].
    LookupCrc {
        /// The link.
        link: usize,
        /// Its connection.
        conn: ConnId,
        /// The record.
        lsn: Lsn,
    },
    /// Read what a peer's fetch asks for (durable records only) and the CRC of the record
    /// before them; report with [`Input::FetchRead`].
    ServeFetch {
        /// The primary's link (`None` on a follower).
        link: Option<usize>,
        /// Its connection.
        conn: ConnId,
        /// What it asks for.
        request: FetchRequest,
    },
    /// Append records taken back from a follower to the primary's log (they continue it),
    /// in order; report with [`Input::TakenBack`].
    AppendTakenBack {
        /// The link.
        link: usize,
        /// Its connection.
        conn: ConnId,
        /// The records.
        records: Bytes,
    },
    /// Replace a damaged range with records fetched from a peer and checked (`Repair`; report
    /// with [`Input::Repaired`]), or note a repair that failed (`RepairFailed`, for status).
    Integrity(IntegrityAction),
    /// Seal the active segment (its damage is repaired once it is sealed).
    SealActive,
    /// The client's append may go to the log now.
    Admit {
        /// The waiter.
        waiter: WaiterId,
    },
    /// Each level has reached this LSN (indexed by `DurabilityLevel as usize`): appends
    /// waiting for a level up to its LSN are done.
    Committed([Lsn; 4]),
    /// This node became primary, or its owner cut its log: its commit LSNs start again from
    /// these (those of an earlier reign, or of the records cut, say nothing of the records
    /// written since); later appends compare against them.
    RestartCommitted([Lsn; 4]),
    /// A waiting append failed.
    FailWait {
        /// The waiter.
        waiter: WaiterId,
        /// Why.
        error: WaitError,
    },
    /// The log failed: fail every waiting and later append with the cause.
    FailAll {
        /// Why.
        cause: String,
    },
    /// The replica stopped being the primary: fail every append still waiting (admitted or
    /// not, at any level) with this error; later appends are refused by the replica itself.
    FailWaiting {
        /// Why (`NotPrimary`).
        error: WaitError,
    },
}
