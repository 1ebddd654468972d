//! Messages: what each frame kind carries. docs/protocol.md draws each body byte by byte.
//!
//! Integers are little-endian. Strings are a u16 LE length then UTF-8 bytes (at most
//! [`MAX_NAME_BYTES`] for names). Record runs are engine records exactly as on disk (the
//! engine's record header carries its own CRC, checked again by the receiving log).
//! Epoch histories are a u16 LE count, then that many (epoch u64 LE, first LSN u64 LE) pairs.
//! Decoding is total: any body is either a message or a [`FrameError`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use logship_engine::{Epoch, Lsn, RangeDigest};

use super::auth::{MAC_LEN, NONCE_LEN};
use super::client_auth::{ClientRefusal, Grants};
use super::frame::{encode, Frame, FrameError};

/// The protocol version this build speaks. Hello offers a range; the follower picks. Version 2
/// added Fetch, Fetched, FetchFailed and Digests, and Records bodies that may carry write
/// markers (format version 2) between records. Version 3 added VoteRequest, VoteResponse and
/// epoch histories in HelloReply and Start.
pub const PROTOCOL_VERSION: u16 = 3;
/// Oldest version this build speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 3;
/// Most digest ranges in one Digests frame.
pub const MAX_DIGESTS_PER_FRAME: usize = 1024;
/// Bytes of one digest range on the wire: first, last, digest.
const DIGEST_ENTRY_BYTES: usize = 32;
/// Longest cluster id or node id.
pub const MAX_NAME_BYTES: usize = 255;
/// Most entries of an epoch history in one HelloReply or Start (the bound the replica's
/// epoch history keeps on the wire). The encoder sends the newest entries of a longer one.
pub const MAX_HISTORY_ENTRIES: usize = 4096;
/// Bytes of one epoch-history entry on the wire: epoch, first LSN.
const HISTORY_ENTRY_BYTES: usize = 16;
/// Most records in one [`Msg::AppendBatchRequest`].
pub const MAX_BATCH_RECORDS: usize = 4096;
/// Bytes of an [`Msg::AppendBatchRequest`] body before its records: id, level, count.
pub const BATCH_PREFIX_BYTES: usize = 11;
/// Bytes in front of each record of an [`Msg::AppendBatchRequest`]: its length.
pub const BATCH_RECORD_PREFIX_BYTES: usize = 4;
/// Flag bit of [`Msg::VoteRequest`] and [`Msg::VoteResponse`]: a pre-vote.
const FLAG_PRE_VOTE: u8 = 1;
/// Flag bit of [`Msg::VoteRequest`]: a planned switchover.
const FLAG_TRANSFER: u8 = 2;
/// Flag bit of [`Msg::VoteResponse`]: the vote is granted.
const FLAG_GRANTED: u8 = 2;

/// How durable an append must be before it is acknowledged.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityLevel {
    /// The primary has fdatasync'ed it.
    Local,
    /// The primary has fdatasync'ed it and the quorum has received it.
    RemoteWrite,
    /// The primary and the quorum have fdatasync'ed it.
    #[default]
    RemoteDurable,
    /// As `RemoteDurable`, and the quorum's application has applied it.
    RemoteApplied,
}

impl DurabilityLevel {
    /// All levels, weakest first.
    pub const ALL: [DurabilityLevel; 4] = [
        DurabilityLevel::Local,
        DurabilityLevel::RemoteWrite,
        DurabilityLevel::RemoteDurable,
        DurabilityLevel::RemoteApplied,
    ];
    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
    /// From the wire byte.
    pub fn from_u8(b: u8) -> Option<DurabilityLevel> {
        DurabilityLevel::ALL.get(usize::from(b)).copied()
    }
    /// The name used in config, flags and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DurabilityLevel::Local => "local",
            DurabilityLevel::RemoteWrite => "remote_write",
            DurabilityLevel::RemoteDurable => "remote_durable",
            DurabilityLevel::RemoteApplied => "remote_applied",
        }
    }
}

impl std::str::FromStr for DurabilityLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<DurabilityLevel, String> {
        DurabilityLevel::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                format!("unknown durability level {s:?} (local, remote_write, remote_durable, remote_applied)")
            })
    }
}

/// Why a peer refused a session; travels in [`Msg::Reject`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum RejectCode {
    /// No protocol version in common.
    Version = 1,
    /// Another cluster id.
    ClusterId = 2,
    /// The peer's proof of the cluster key failed.
    AuthFailed = 3,
    /// The node id is not configured here.
    UnknownNode = 4,
    /// The records the follower needs were purged; `detail` is the first LSN held.
    Purged = 5,
    /// The follower's log differs from the primary's at the same LSN; `detail` is that LSN.
    Diverged = 6,
    /// A frame out of order or malformed.
    Protocol = 7,
    /// This node is not in the role the peer expects.
    WrongRole = 8,
    /// The follower already streams from a primary of a newer epoch; `detail` is that epoch.
    StaleEpoch = 9,
}

impl RejectCode {
    fn from_u16(v: u16) -> Option<RejectCode> {
        use RejectCode::*;
        [
            Version,
            ClusterId,
            AuthFailed,
            UnknownNode,
            Purged,
            Diverged,
            Protocol,
            WrongRole,
            StaleEpoch,
        ]
        .into_iter()
        .find(|c| *c as u16 == v)
    }
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Version => "version",
            RejectCode::ClusterId => "cluster_id",
            RejectCode::AuthFailed => "auth_failed",
            RejectCode::UnknownNode => "unknown_node",
            RejectCode::Purged => "purged",
            RejectCode::Diverged => "diverged",
            RejectCode::Protocol => "protocol",
            RejectCode::WrongRole => "wrong_role",
            RejectCode::StaleEpoch => "stale_epoch",
        }
    }
}

/// Status of a client request's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientStatus {
    /// Done.
    Ok = 0,
    /// The sync quorum could not be met within the commit timeout.
    QuorumUnavailable = 1,
    /// The request was invalid (size, level, LSN range).
    Invalid = 2,
    /// The records asked for were purged.
    Purged = 3,
    /// This node does not take appends (a follower).
    NotPrimary = 4,
    /// The log failed (poisoned, closed) or another internal error.
    Failed = 5,
    /// The client's grants do not cover this request (`[clients]`); the connection stays
    /// usable.
    NotPermitted = 6,
}

impl ClientStatus {
    fn from_u8(v: u8) -> Option<ClientStatus> {
        use ClientStatus::*;
        [
            Ok,
            QuorumUnavailable,
            Invalid,
            Purged,
            NotPrimary,
            Failed,
            NotPermitted,
        ]
        .into_iter()
        .find(|c| *c as u8 == v)
    }
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Primary → follower, first frame of a replication session.
    Hello {
        /// Oldest version the primary speaks.
        version_min: u16,
        /// Newest version the primary speaks.
        version_max: u16,
        /// The primary's epoch.
        epoch: Epoch,
        /// The primary's last LSN.
        last_lsn: Lsn,
        /// The primary's challenge.
        nonce: [u8; NONCE_LEN],
        /// The cluster id.
        cluster_id: String,
        /// The primary's node id.
        node_id: String,
    },
    /// Follower → primary: its position, its challenge, and its proof of the key.
    HelloReply {
        /// The version chosen.
        version: u16,
        /// The follower's last LSN.
        last_lsn: Lsn,
        /// Epoch of the follower's last record.
        last_epoch: Epoch,
        /// CRC field of the follower's last record (0 for an empty log).
        last_crc: u32,
        /// The follower's challenge.
        nonce: [u8; NONCE_LEN],
        /// HMAC proof of the key by the follower.
        mac: [u8; MAC_LEN],
        /// The cluster id.
        cluster_id: String,
        /// The follower's node id.
        node_id: String,
        /// The follower's epoch history: the first LSN of each epoch it holds records of,
        /// oldest first (at most [`MAX_HISTORY_ENTRIES`] go on the wire: the newest).
        history: Vec<(Epoch, Lsn)>,
    },
    /// Primary → follower: the primary's proof, and where streaming starts.
    Start {
        /// HMAC proof of the key by the primary.
        mac: [u8; MAC_LEN],
        /// Truncate the follower's log after this LSN before appending (`None`: keep it).
        truncate_after: Option<Lsn>,
        /// The first LSN the primary will send.
        start_lsn: Lsn,
        /// The primary's commit LSN.
        commit_lsn: Lsn,
        /// With `truncate_after`: the CRC field of the primary's record at that LSN (0 for LSN
        /// 0). The follower truncates only if its own record there has the same CRC, and
        /// refuses the session as diverged otherwise.
        cut_crc: u32,
        /// The primary's epoch history: the first LSN of each epoch its log holds records of,
        /// oldest first (at most [`MAX_HISTORY_ENTRIES`] go on the wire: the newest).
        history: Vec<(Epoch, Lsn)>,
    },
    /// Either side: the session is refused; the connection closes after it.
    Reject {
        /// Why.
        code: RejectCode,
        /// An LSN or epoch that goes with the code (see [`RejectCode`]), else 0.
        detail: u64,
        /// Human-readable reason.
        message: String,
    },
    /// Primary → follower: a run of whole records.
    Records {
        /// LSN of the first record.
        first: Lsn,
        /// LSN of the last record.
        last: Lsn,
        /// The primary's commit LSN.
        commit_lsn: Lsn,
        /// The records as the engine encodes them.
        records: Bytes,
    },
    /// Follower → primary: how far it has come; also its heartbeat.
    Ack {
        /// Last LSN received and handed to its log.
        write: Lsn,
        /// Last LSN fdatasync'ed.
        durable: Lsn,
        /// Last LSN its application applied.
        applied: Lsn,
    },
    /// Primary → follower when idle.
    Heartbeat {
        /// The primary's commit LSN.
        commit_lsn: Lsn,
        /// The primary's last LSN.
        last_lsn: Lsn,
    },
    /// Either side of a streaming session: send me records `from..=to` (a repair, or the
    /// primary taking back records only a follower holds). The answer is one [`Msg::Fetched`]
    /// of at most `max_bytes` (at least one record) or a [`Msg::FetchFailed`].
    Fetch {
        /// Request id, echoed.
        id: u64,
        /// First LSN wanted.
        from: Lsn,
        /// Last LSN wanted.
        to: Lsn,
        /// Size bound of the answer.
        max_bytes: u32,
        /// The asker's CRC of record `from - 1`: the answer must come from the same history,
        /// so the responder refuses when its record there differs. `None`: no check.
        prev_crc: Option<u32>,
    },
    /// Answer to [`Msg::Fetch`]: whole records `first..=last` (perhaps with write markers).
    Fetched {
        /// The request id.
        id: u64,
        /// First LSN.
        first: Lsn,
        /// Last LSN.
        last: Lsn,
        /// The records as the responder's log holds them.
        records: Bytes,
    },
    /// Answer to [`Msg::Fetch`]: the responder cannot serve it.
    FetchFailed {
        /// The request id.
        id: u64,
        /// Why (purged, diverged, damaged here too, ...).
        message: String,
    },
    /// Either side of a streaming session: digests of ranges of LSNs the sender has scrubbed.
    Digests {
        /// At most [`MAX_DIGESTS_PER_FRAME`] ranges.
        ranges: Vec<RangeDigest>,
    },
    /// Candidate → voter, on a connection the candidate opened: vote for me in `epoch`.
    VoteRequest {
        /// A pre-vote (etcd's): would you vote, without changing anything?
        pre_vote: bool,
        /// A planned switchover: the voter grants even though it heard from the primary recently.
        transfer: bool,
        /// The epoch asked for.
        epoch: Epoch,
        /// Epoch of the candidate's last record.
        last_epoch: Epoch,
        /// The candidate's last LSN.
        last_lsn: Lsn,
        /// The candidate's nonce, which the answer's proof covers.
        nonce: [u8; NONCE_LEN],
        /// HMAC proof of the cluster key over all of the above.
        mac: [u8; MAC_LEN],
        /// The cluster id.
        cluster_id: String,
        /// The candidate's node id.
        candidate: String,
    },
    /// Voter → candidate: the answer; the connection closes after it.
    VoteResponse {
        /// Answers a pre-vote.
        pre_vote: bool,
        /// Whether the vote is granted.
        granted: bool,
        /// The voter's current epoch (a candidate behind it adopts it).
        epoch: Epoch,
        /// HMAC proof of the cluster key over the answer and the request's nonce.
        mac: [u8; MAC_LEN],
        /// The voter's node id.
        voter: String,
    },
    /// Client → node: append one record.
    AppendRequest {
        /// Client's request id, echoed.
        id: u64,
        /// Durability to wait for.
        level: DurabilityLevel,
        /// The record.
        payload: Bytes,
    },
    /// Node → client.
    AppendResponse {
        /// The request id.
        id: u64,
        /// Outcome.
        status: ClientStatus,
        /// The record's LSN (0 when not `Ok`).
        lsn: Lsn,
        /// Error text when not `Ok`.
        message: String,
    },
    /// Client → node: append several records, in order, answered once.
    ///
    /// The node appends them as one batch of the log: their LSNs are contiguous,
    /// `first_lsn..=last_lsn` of the answer, and no other client's record comes between them.
    AppendBatchRequest {
        /// Client's request id, echoed.
        id: u64,
        /// Durability to wait for, for every record of the batch.
        level: DurabilityLevel,
        /// The records, 1 to [`MAX_BATCH_RECORDS`] of them.
        payloads: Vec<Bytes>,
    },
    /// Node → client: the outcome of an [`Msg::AppendBatchRequest`], sent once its last record
    /// reached the level asked for (commits complete in LSN order, so every record has).
    AppendBatchResponse {
        /// The request id.
        id: u64,
        /// Outcome, for the whole batch.
        status: ClientStatus,
        /// LSN of the batch's first record (0 when not `Ok`).
        first_lsn: Lsn,
        /// LSN of the batch's last record (0 when not `Ok`).
        last_lsn: Lsn,
        /// Error text when not `Ok`.
        message: String,
    },
    /// Client → node: read durable records from an LSN.
    ReadRequest {
        /// Client's request id.
        id: u64,
        /// First LSN wanted (0: the first held).
        from: Lsn,
        /// At most this many bytes of records (at least one record is returned).
        max_bytes: u32,
    },
    /// Node → client: encoded records (possibly none).
    ReadResponse {
        /// The request id.
        id: u64,
        /// Outcome.
        status: ClientStatus,
        /// For `Purged`, the first LSN held; else 0.
        detail: u64,
        /// Error text when not `Ok`.
        message: String,
        /// Whole engine records.
        records: Bytes,
    },
    /// Client → node: the node's status.
    StatusRequest {
        /// Client's request id.
        id: u64,
    },
    /// Node → client: the status as JSON (the node's `NodeStatus`).
    StatusResponse {
        /// The request id.
        id: u64,
        /// JSON text.
        json: String,
    },
    /// Client → primary: hand over to follower `target` with no loss (planned switchover).
    PromoteRequest {
        /// Client's request id.
        id: u64,
        /// The follower's node id.
        target: String,
    },
    /// Primary → client: the switchover's outcome.
    PromoteResponse {
        /// The request id.
        id: u64,
        /// `Ok` once the target was elected; else why not.
        status: ClientStatus,
        /// What happened, as text.
        message: String,
    },
    /// Client → node, the first frame on a client port with `[clients]`: who the client is.
    ClientHello {
        /// The client's nonce.
        nonce: [u8; NONCE_LEN],
        /// The client's name.
        name: String,
    },
    /// Node → client: the challenge.
    ClientChallenge {
        /// The node's nonce, fresh for this connection.
        nonce: [u8; NONCE_LEN],
        /// The cluster id, which the proofs cover.
        cluster_id: String,
    },
    /// Client → node: the client's proof of its key over the handshake.
    ClientProof {
        /// HMAC-SHA256 over the client transcript (`protocol::client_auth`).
        mac: [u8; MAC_LEN],
    },
    /// Node → client: the client is admitted; requests may follow.
    ClientWelcome {
        /// What the client may ask for.
        grants: Grants,
        /// The node's proof under the client's key.
        mac: [u8; MAC_LEN],
    },
    /// Node → client: the handshake is refused; the node closes the connection after it.
    ClientRefused {
        /// Why.
        code: ClientRefusal,
        /// Text for the operator (never which part of the proof failed).
        message: String,
    },
    /// Primary → follower on a streaming session: you have every record; stand for election
    /// in `epoch` now (a planned switchover; voters grant though they hear the primary).
    TimeoutNow {
        /// The epoch to stand in (the primary's + 1).
        epoch: Epoch,
    },
}

/// Frame kind bytes.
pub mod kind {
    /// [`super::Msg::Hello`].
    pub const HELLO: u8 = 1;
    /// [`super::Msg::HelloReply`].
    pub const HELLO_REPLY: u8 = 2;
    /// [`super::Msg::Start`].
    pub const START: u8 = 3;
    /// [`super::Msg::Reject`].
    pub const REJECT: u8 = 4;
    /// [`super::Msg::Records`].
    pub const RECORDS: u8 = 5;
    /// [`super::Msg::Ack`].
    pub const ACK: u8 = 6;
    /// [`super::Msg::Heartbeat`].
    pub const HEARTBEAT: u8 = 7;
    /// [`super::Msg::Fetch`].
    pub const FETCH: u8 = 8;
    /// [`super::Msg::Fetched`].
    pub const FETCHED: u8 = 9;
    /// [`super::Msg::FetchFailed`].
    pub const FETCH_FAILED: u8 = 10;
    /// [`super::Msg::Digests`].
    pub const DIGESTS: u8 = 11;
    /// [`super::Msg::VoteRequest`].
    pub const VOTE_REQUEST: u8 = 12;
    /// [`super::Msg::VoteResponse`].
    pub const VOTE_RESPONSE: u8 = 13;
    /// [`super::Msg::TimeoutNow`].
    pub const TIMEOUT_NOW: u8 = 14;
    /// [`super::Msg::AppendRequest`].
    pub const APPEND_REQUEST: u8 = 16;
    /// [`super::Msg::AppendResponse`].
    pub const APPEND_RESPONSE: u8 = 17;
    /// [`super::Msg::ReadRequest`].
    pub const READ_REQUEST: u8 = 18;
    /// [`super::Msg::ReadResponse`].
    pub const READ_RESPONSE: u8 = 19;
    /// [`super::Msg::StatusRequest`].
    pub const STATUS_REQUEST: u8 = 20;
    /// [`super::Msg::StatusResponse`].
    pub const STATUS_RESPONSE: u8 = 21;
    /// [`super::Msg::PromoteRequest`].
    pub const PROMOTE_REQUEST: u8 = 22;
    /// [`super::Msg::PromoteResponse`].
    pub const PROMOTE_RESPONSE: u8 = 23;
    /// [`super::Msg::AppendBatchRequest`].
    pub const APPEND_BATCH_REQUEST: u8 = 24;
    /// [`super::Msg::AppendBatchResponse`].
    pub const APPEND_BATCH_RESPONSE: u8 = 25;
    /// [`super::Msg::ClientHello`].
    pub const CLIENT_HELLO: u8 = 26;
    /// [`super::Msg::ClientChallenge`].
    pub const CLIENT_CHALLENGE: u8 = 27;
    /// [`super::Msg::ClientProof`].
    pub const CLIENT_PROOF: u8 = 28;
    /// [`super::Msg::ClientWelcome`].
    pub const CLIENT_WELCOME: u8 = 29;
    /// [`super::Msg::ClientRefused`].
    pub const CLIENT_REFUSED: u8 = 30;
}

/// Size of the fixed part of a Records body, before the records.
pub const RECORDS_PREFIX_BYTES: usize = 24;

fn put_str(b: &mut BytesMut, s: &str) {
    let mut n = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    b.put_u16_le(n as u16);
    b.put_slice(&s.as_bytes()[..n]);
}

/// An epoch history: a u16 count, then (epoch, first LSN) pairs; the newest
/// [`MAX_HISTORY_ENTRIES`] of a longer one.
fn put_history(b: &mut BytesMut, history: &[(Epoch, Lsn)]) {
    let sent = &history[history.len().saturating_sub(MAX_HISTORY_ENTRIES)..];
    b.reserve(2 + sent.len() * HISTORY_ENTRY_BYTES);
    b.put_u16_le(sent.len() as u16);
    for (epoch, first) in sent {
        b.put_u64_le(epoch.0);
        b.put_u64_le(first.0);
    }
}

/// `bit` if `set`, else no bit.
fn flag(set: bool, bit: u8) -> u8 {
    if set {
        bit
    } else {
        0
    }
}

/// Whether history entries are well formed: epochs and LSNs both strictly rising, no epoch 0
/// and no LSN 0 (the rule of the replica's epoch history, checked here without it).
fn valid_history(entries: &[(Epoch, Lsn)]) -> bool {
    let rising = entries
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
    rising && entries.iter().all(|&(e, l)| e > Epoch(0) && l > Lsn::ZERO)
}

impl Msg {
    /// The frame kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Msg::Hello { .. } => kind::HELLO,
            Msg::HelloReply { .. } => kind::HELLO_REPLY,
            Msg::Start { .. } => kind::START,
            Msg::Reject { .. } => kind::REJECT,
            Msg::Records { .. } => kind::RECORDS,
            Msg::Ack { .. } => kind::ACK,
            Msg::Heartbeat { .. } => kind::HEARTBEAT,
            Msg::Fetch { .. } => kind::FETCH,
            Msg::Fetched { .. } => kind::FETCHED,
            Msg::FetchFailed { .. } => kind::FETCH_FAILED,
            Msg::Digests { .. } => kind::DIGESTS,
            Msg::VoteRequest { .. } => kind::VOTE_REQUEST,
            Msg::VoteResponse { .. } => kind::VOTE_RESPONSE,
            Msg::AppendRequest { .. } => kind::APPEND_REQUEST,
            Msg::AppendResponse { .. } => kind::APPEND_RESPONSE,
            Msg::ReadRequest { .. } => kind::READ_REQUEST,
            Msg::ReadResponse { .. } => kind::READ_RESPONSE,
            Msg::StatusRequest { .. } => kind::STATUS_REQUEST,
            Msg::StatusResponse { .. } => kind::STATUS_RESPONSE,
            Msg::TimeoutNow { .. } => kind::TIMEOUT_NOW,
            Msg::PromoteRequest { .. } => kind::PROMOTE_REQUEST,
            Msg::PromoteResponse { .. } => kind::PROMOTE_RESPONSE,
            Msg::AppendBatchRequest { .. } => kind::APPEND_BATCH_REQUEST,
            Msg::AppendBatchResponse { .. } => kind::APPEND_BATCH_RESPONSE,
            Msg::ClientHello { .. } => kind::CLIENT_HELLO,
            Msg::ClientChallenge { .. } => kind::CLIENT_CHALLENGE,
            Msg::ClientProof { .. } => kind::CLIENT_PROOF,
            Msg::ClientWelcome { .. } => kind::CLIENT_WELCOME,
            Msg::ClientRefused { .. } => kind::CLIENT_REFUSED,
        }
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind())
    }

    /// Encodes the whole frame.
    pub fn encode(&self) -> Bytes {
        encode(self.kind(), &self.body())
    }

    fn body(&self) -> BytesMut {
        let mut b = BytesMut::with_capacity(64);
        match self {
            Msg::Hello { .. } | Msg::HelloReply { .. } | Msg::Start { .. } | Msg::Reject { .. } => {
                self.put_session(&mut b)
            }
            Msg::Records { .. } | Msg::Ack { .. } | Msg::Heartbeat { .. } => {
                self.put_stream(&mut b)
            }
            Msg::Fetch { .. }
            | Msg::Fetched { .. }
            | Msg::FetchFailed { .. }
            | Msg::Digests { .. } => self.put_integrity(&mut b),
            Msg::VoteRequest { .. } | Msg::VoteResponse { .. } | Msg::TimeoutNow { .. } => {
                self.put_election(&mut b)
            }
            Msg::AppendRequest { .. }
            | Msg::AppendResponse { .. }
            | Msg::ReadRequest { .. }
            | Msg::ReadResponse { .. }
            | Msg::StatusRequest { .. }
            | Msg::StatusResponse { .. }
            | Msg::PromoteRequest { .. }
            | Msg::PromoteResponse { .. } => self.put_client(&mut b),
            Msg::AppendBatchRequest { .. } | Msg::AppendBatchResponse { .. } => {
                self.put_batch(&mut b)
            }
            Msg::ClientHello { .. }
            | Msg::ClientChallenge { .. }
            | Msg::ClientProof { .. }
            | Msg::ClientWelcome { .. }
            | Msg::ClientRefused { .. } => self.put_client_auth(&mut b),
        }
        b
    }

    /// The handshake: hello, its reply, start, reject.
    fn put_session(&self, b: &mut BytesMut) {
        match self {
            Msg::Hello {
                version_min,
                version_max,
                epoch,
                last_lsn,
                nonce,
                cluster_id,
                node_id,
            } => {
                b.put_u16_le(*version_min);
                b.put_u16_le(*version_max);
                b.put_u64_le(epoch.0);
                b.put_u64_le(last_lsn.0);
                b.put_slice(nonce);
                put_str(b, cluster_id);
                put_str(b, node_id);
            }
            Msg::HelloReply { .. } => self.put_hello_reply(b),
            Msg::Start {
                mac,
                truncate_after,
                start_lsn,
                commit_lsn,
                cut_crc,
                history,
            } => {
                b.put_slice(mac);
                b.put_u8(u8::from(truncate_after.is_some()));
                b.put_u64_le(truncate_after.map_or(0, |l| l.0));
                b.put_u64_le(start_lsn.0);
                b.put_u64_le(commit_lsn.0);
                b.put_u32_le(*cut_crc);
                put_history(b, history);
            }
            Msg::Reject {
                code,
                detail,
                message,
            } => {
                b.put_u16_le(*code as u16);
                b.put_u64_le(*detail);
                put_str(b, message);
            }
            other => unreachable!("{} is not a handshake message", other.name()),
        }
    }

    /// The follower's answer to a Hello.
    fn put_hello_reply(&self, b: &mut BytesMut) {
        let Msg::HelloReply {
            version,
            last_lsn,
            last_epoch,
            last_crc,
            nonce,
            mac,
            cluster_id,
            node_id,
            history,
        } = self
        else {
            unreachable!("{} is not a hello reply", self.name())
        };
        b.put_u16_le(*version);
        b.put_u64_le(last_lsn.0);
        b.put_u64_le(last_epoch.0);
        b.put_u32_le(*last_crc);
        b.put_slice(nonce);
        b.put_slice(mac);
        put_str(b, cluster_id);
        put_str(b, node_id);
        put_history(b, history);
    }

    /// Streaming: records, acks, heartbeats.
    fn put_stream(&self, b: &mut BytesMut) {
        match self {
            Msg::Records {
                first,
                last,
                commit_lsn,
                records,
            } => {
                b.reserve(records.len() + RECORDS_PREFIX_BYTES);
                b.put_u64_le(first.0);
                b.put_u64_le(last.0);
                b.put_u64_le(commit_lsn.0);
                b.put_slice(records);
            }
            Msg::Ack {
                write,
                durable,
                applied,
            } => {
                b.put_u64_le(write.0);
                b.put_u64_le(durable.0);
                b.put_u64_le(applied.0);
            }
            Msg::Heartbeat {
                commit_lsn,
                last_lsn,
            } => {
                b.put_u64_le(commit_lsn.0);
                b.put_u64_le(last_lsn.0);
            }
            other => unreachable!("{} is not a streaming message", other.name()),
        }
    }

    /// Repair and take-back: fetches, their answers, digests.
    fn put_integrity(&self, b: &mut BytesMut) {
        match self {
            Msg::Fetch {
                id,
                from,
                to,
                max_bytes,
                prev_crc,
            } => {
                b.put_u64_le(*id);
                b.put_u64_le(from.0);
                b.put_u64_le(to.0);
                b.put_u32_le(*max_bytes);
                b.put_u8(u8::from(prev_crc.is_some()));
                b.put_u32_le(prev_crc.unwrap_or(0));
            }
            Msg::Fetched {
                id,
                first,
                last,
                records,
            } => {
                b.reserve(records.len() + 24);
                b.put_u64_le(*id);
                b.put_u64_le(first.0);
                b.put_u64_le(last.0);
                b.put_slice(records);
            }
            Msg::FetchFailed { id, message } => {
                b.put_u64_le(*id);
                put_str(b, message);
            }
            Msg::Digests { ranges } => {
                assert!(
                    ranges.len() <= MAX_DIGESTS_PER_FRAME,
                    "{} digests in one frame",
                    ranges.len()
                );
                b.put_u16_le(ranges.len() as u16);
                for r in ranges {
                    b.put_u64_le(r.first.0);
                    b.put_u64_le(r.last.0);
                    b.put_slice(&r.digest);
                }
            }
            other => unreachable!("{} is not an integrity message", other.name()),
        }
    }

    /// Elections: vote requests and their answers.
    fn put_election(&self, b: &mut BytesMut) {
        match self {
            Msg::VoteRequest {
                pre_vote,
                transfer,
                epoch,
                last_epoch,
                last_lsn,
                nonce,
                mac,
                cluster_id,
                candidate,
            } => {
                b.put_u8(flag(*pre_vote, FLAG_PRE_VOTE) | flag(*transfer, FLAG_TRANSFER));
                b.put_u64_le(epoch.0);
                b.put_u64_le(last_epoch.0);
                b.put_u64_le(last_lsn.0);
                b.put_slice(nonce);
                b.put_slice(mac);
                put_str(b, cluster_id);
                put_str(b, candidate);
            }
            Msg::VoteResponse {
                pre_vote,
                granted,
                epoch,
                mac,
                voter,
            } => {
                b.put_u8(flag(*pre_vote, FLAG_PRE_VOTE) | flag(*granted, FLAG_GRANTED));
                b.put_u64_le(epoch.0);
                b.put_slice(mac);
                put_str(b, voter);
            }
            Msg::TimeoutNow { epoch } => b.put_u64_le(epoch.0),
            other => unreachable!("{} is not an election message", other.name()),
        }
    }

    /// The client's requests and their answers.
    fn put_client(&self, b: &mut BytesMut) {
        match self {
            Msg::AppendRequest { id, level, payload } => {
                b.put_u64_le(*id);
                b.put_u8(level.as_u8());
                b.put_slice(payload);
            }
            Msg::AppendResponse {
                id,
                status,
                lsn,
                message,
            } => {
                b.put_u64_le(*id);
                b.put_u8(*status as u8);
                b.put_u64_le(lsn.0);
                put_str(b, message);
            }
            Msg::ReadRequest {
                id,
                from,
                max_bytes,
            } => {
                b.put_u64_le(*id);
                b.put_u64_le(from.0);
                b.put_u32_le(*max_bytes);
            }
            Msg::ReadResponse {
                id,
                status,
                detail,
                message,
                records,
            } => {
                b.put_u64_le(*id);
                b.put_u8(*status as u8);
                b.put_u64_le(*detail);
                put_str(b, message);
                b.put_slice(records);
            }
            Msg::StatusRequest { id } => b.put_u64_le(*id),
            Msg::StatusResponse { id, json } => {
                b.put_u64_le(*id);
                b.put_slice(json.as_bytes());
            }
            Msg::PromoteRequest { id, target } => {
                b.put_u64_le(*id);
                put_str(b, target);
            }
            Msg::PromoteResponse {
                id,
                status,
                message,
            } => {
                b.put_u64_le(*id);
                b.put_u8(*status as u8);
                put_str(b, message);
            }
            other => unreachable!("{} is not a client message", other.name()),
        }
    }

    /// The client handshake.
    fn put_client_auth(&self, b: &mut BytesMut) {
        match self {
            Msg::ClientHello { nonce, name } => {
                b.put_slice(nonce);
                put_str(b, name);
            }
            Msg::ClientChallenge { nonce, cluster_id } => {
                b.put_slice(nonce);
                put_str(b, cluster_id);
            }
            Msg::ClientProof { mac } => b.put_slice(mac),
            Msg::ClientWelcome { grants, mac } => {
                b.put_u8(grants.bits());
                b.put_slice(mac);
            }
            Msg::ClientRefused { code, message } => {
                b.put_u8(*code as u8);
                put_str(b, message);
            }
            other => unreachable!("{} is not a client handshake message", other.name()),
        }
    }

    /// A batch of appends and its answer.
    fn put_batch(&self, b: &mut BytesMut) {
        match self {
            Msg::AppendBatchRequest {
                id,
                level,
                payloads,
            } => {
                assert!(
                    (1..=MAX_BATCH_RECORDS).contains(&payloads.len()),
                    "a batch of {} records (1..={MAX_BATCH_RECORDS})",
                    payloads.len()
                );
                let bytes: usize = payloads.iter().map(|p| p.len()).sum();
                b.reserve(BATCH_PREFIX_BYTES + payloads.len() * BATCH_RECORD_PREFIX_BYTES + bytes);
                b.put_u64_le(*id);
                b.put_u8(level.as_u8());
                b.put_u16_le(payloads.len() as u16);
                for p in payloads {
                    let len = u32::try_from(p.len()).expect("a record is far below 4 GiB");
                    b.put_u32_le(len);
                    b.put_slice(p);
                }
            }
            Msg::AppendBatchResponse {
                id,
                status,
                first_lsn,
                last_lsn,
                message,
            } => {
                b.put_u64_le(*id);
                b.put_u8(*status as u8);
                b.put_u64_le(first_lsn.0);
                b.put_u64_le(last_lsn.0);
                put_str(b, message);
            }
            other => unreachable!("{} is not a batch message", other.name()),
        }
    }

    /// Decodes a frame's body.
    ///
    /// # Errors
    /// [`FrameError::UnknownKind`], [`FrameError::Malformed`] (short body, trailing bytes,
    /// bad enum value, bad UTF-8, LSN range that does not fit the records).
    pub fn decode(frame: &Frame) -> Result<Msg, FrameError> {
        let name = kind_name(frame.kind);
        if name == "unknown" {
            return Err(FrameError::UnknownKind(frame.kind));
        }
        let mut r = Reader {
            body: frame.body.clone(),
            kind: name,
        };
        let msg = r.message(frame.kind)?;
        Ok(msg)
    }
}

/// The name of a frame kind (`"unknown"` for none).
pub fn kind_name(k: u8) -> &'static str {
    match k {
        kind::HELLO => "hello",
        kind::HELLO_REPLY => "hello_reply",
        kind::START => "start",
        kind::REJECT => "reject",
        kind::RECORDS => "records",
        kind::ACK => "ack",
        kind::HEARTBEAT => "heartbeat",
        kind::FETCH => "fetch",
        kind::FETCHED => "fetched",
        kind::FETCH_FAILED => "fetch_failed",
        kind::DIGESTS => "digests",
        kind::VOTE_REQUEST => "vote_request",
        kind::VOTE_RESPONSE => "vote_response",
        kind::TIMEOUT_NOW => "timeout_now",
        kind::APPEND_REQUEST => "append_request",
        kind::APPEND_RESPONSE => "append_response",
        kind::READ_REQUEST => "read_request",
        kind::READ_RESPONSE => "read_response",
        kind::STATUS_REQUEST => "status_request",
        kind::STATUS_RESPONSE => "status_response",
        kind::PROMOTE_REQUEST => "promote_request",
        kind::PROMOTE_RESPONSE => "promote_response",
        kind::APPEND_BATCH_REQUEST => "append_batch_request",
        kind::APPEND_BATCH_RESPONSE => "append_batch_response",
        kind::CLIENT_HELLO => "client_hello",
        kind::CLIENT_CHALLENGE => "client_challenge",
        kind::CLIENT_PROOF => "client_proof",
        kind::CLIENT_WELCOME => "client_welcome",
        kind::CLIENT_REFUSED => "client_refused",
        _ => "unknown",
    }
}

struct Reader {
    body: Bytes,
    kind: &'static str,
}

impl Reader {
    fn bad(&self, reason: impl Into<String>) -> FrameError {
        FrameError::Malformed {
            kind: self.kind,
            reason: reason.into(),
        }
    }
    fn need(&self, n: usize) -> Result<(), FrameError> {
        if self.body.remaining() < n {
            return Err(self.bad(format!("{} bytes left, {n} needed", self.body.remaining())));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        self.need(1)?;
        Ok(self.body.get_u8())
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        self.need(2)?;
        Ok(self.body.get_u16_le())
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        self.need(4)?;
        Ok(self.body.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        self.need(8)?;
        Ok(self.body.get_u64_le())
    }
    fn lsn(&mut self) -> Result<Lsn, FrameError> {
        self.u64().map(Lsn)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        self.need(N)?;
        let mut a = [0u8; N];
        self.body.copy_to_slice(&mut a);
        Ok(a)
    }
    fn string(&mut self, max: usize) -> Result<String, FrameError> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(self.bad(format!("string of {n} bytes exceeds {max}")));
        }
        self.need(n)?;
        let s = self.body.split_to(n);
        String::from_utf8(s.to_vec()).map_err(|_| self.bad("string is not UTF-8"))
    }
    fn name(&mut self) -> Result<String, FrameError> {
        self.string(MAX_NAME_BYTES)
    }
    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }
    fn end(&self) -> Result<(), FrameError> {
        if self.body.has_remaining() {
            return Err(self.bad(format!("{} trailing bytes", self.body.remaining())));
        }
        Ok(())
    }
    fn status(&mut self) -> Result<ClientStatus, FrameError> {
        let v = self.u8()?;
        ClientStatus::from_u8(v).ok_or_else(|| self.bad(format!("unknown status {v}")))
    }

    /// A flags byte with no bit outside `known`.
    fn flags(&mut self, known: u8) -> Result<u8, FrameError> {
        let f = self.u8()?;
        if f & !known != 0 {
            return Err(self.bad(format!("unknown flag bits {:#04x}", f & !known)));
        }
        Ok(f)
    }

    /// An epoch history: a count of at most [`MAX_HISTORY_ENTRIES`], then that many entries,
    /// epochs and LSNs strictly rising, none 0.
    fn history(&mut self) -> Result<Vec<(Epoch, Lsn)>, FrameError> {
        let n = usize::from(self.u16()?);
        if n > MAX_HISTORY_ENTRIES {
            return Err(self.bad(format!("{n} history entries exceed {MAX_HISTORY_ENTRIES}")));
        }
        self.need(n * HISTORY_ENTRY_BYTES)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push((Epoch(self.u64()?), self.lsn()?));
        }
        if !valid_history(&entries) {
            return Err(self.bad(
                "epoch history not strictly rising in epoch and LSN, or with an epoch or LSN 0",
            ));
        }
        Ok(entries)
    }

    /// The rest of the body: a run of records `first..=last` (at least 32 bytes each).
    fn records_for(&mut self, first: Lsn, last: Lsn) -> Result<Bytes, FrameError> {
        if first == Lsn::ZERO || last < first {
            return Err(self.bad(format!("LSN range {first}..={last}")));
        }
        let records = self.rest();
        let min = (last.0 - first.0).saturating_add(1).saturating_mul(32);
        if (records.len() as u64) < min {
            return Err(self.bad(format!(
                "{} bytes cannot hold {first}..={last}",
                records.len()
            )));
        }
        Ok(records)
    }

    /// The handshake: hello, its reply, start, reject.
    fn session(&mut self, k: u8) -> Result<Msg, FrameError> {
        Ok(match k {
            kind::HELLO => Msg::Hello {
                version_min: self.u16()?,
                version_max: self.u16()?,
                epoch: Epoch(self.u64()?),
                last_lsn: self.lsn()?,
                nonce: self.array()?,
                cluster_id: self.name()?,
                node_id: self.name()?,
            },
            kind::HELLO_REPLY => Msg::HelloReply {
                version: self.u16()?,
                last_lsn: self.lsn()?,
                last_epoch: Epoch(self.u64()?),
                last_crc: self.u32()?,
                nonce: self.array()?,
                mac: self.array()?,
                cluster_id: self.name()?,
                node_id: self.name()?,
                history: self.history()?,
            },
            kind::START => self.start()?,
            kind::REJECT => {
                let v = self.u16()?;
                let code = RejectCode::from_u16(v)
                    .ok_or_else(|| self.bad(format!("unknown reject code {v}")))?;
                Msg::Reject {
                    code,
                    detail: self.u64()?,
                    message: self.string(usize::from(u16::MAX))?,
                }
            }
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    /// The primary's proof and where streaming starts.
    fn start(&mut self) -> Result<Msg, FrameError> {
        let mac = self.array()?;
        let has_cut = self.u8()?;
        let cut = self.lsn()?;
        let truncate_after = match has_cut {
            0 if cut == Lsn::ZERO => None,
            1 => Some(cut),
            _ => return Err(self.bad("bad truncate flag")),
        };
        let (start_lsn, commit_lsn, cut_crc) = (self.lsn()?, self.lsn()?, self.u32()?);
        if truncate_after.is_none() && cut_crc != 0 {
            return Err(self.bad("a cut CRC without a cut"));
        }
        Ok(Msg::Start {
            mac,
            truncate_after,
            start_lsn,
            commit_lsn,
            cut_crc,
            history: self.history()?,
        })
    }

    /// Streaming: records, acks, heartbeats.
    fn stream(&mut self, k: u8) -> Result<Msg, FrameError> {
        Ok(match k {
            kind::RECORDS => {
                let (first, last, commit_lsn) = (self.lsn()?, self.lsn()?, self.lsn()?);
                let records = self.records_for(first, last)?;
                Msg::Records {
                    first,
                    last,
                    commit_lsn,
                    records,
                }
            }
            kind::ACK => Msg::Ack {
                write: self.lsn()?,
                durable: self.lsn()?,
                applied: self.lsn()?,
            },
            kind::HEARTBEAT => Msg::Heartbeat {
                commit_lsn: self.lsn()?,
                last_lsn: self.lsn()?,
            },
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    /// Repair and take-back: fetches, their answers, digests.
    fn integrity(&mut self, k: u8) -> Result<Msg, FrameError> {
        Ok(match k {
            kind::FETCH => {
                let (id, from, to, max_bytes) =
                    (self.u64()?, self.lsn()?, self.lsn()?, self.u32()?);
                if from == Lsn::ZERO || to < from {
                    return Err(self.bad(format!("LSN range {from}..={to}")));
                }
                let prev_crc = match (self.u8()?, self.u32()?) {
                    (0, 0) => None,
                    (1, crc) => Some(crc),
                    _ => return Err(self.bad("bad previous-CRC flag")),
                };
                Msg::Fetch {
                    id,
                    from,
                    to,
                    max_bytes,
                    prev_crc,
                }
            }
            kind::FETCHED => {
                let (id, first, last) = (self.u64()?, self.lsn()?, self.lsn()?);
                let records = self.records_for(first, last)?;
                Msg::Fetched {
                    id,
                    first,
                    last,
                    records,
                }
            }
            kind::FETCH_FAILED => Msg::FetchFailed {
                id: self.u64()?,
                message: self.string(usize::from(u16::MAX))?,
            },
            kind::DIGESTS => {
                let n = usize::from(self.u16()?);
                if n > MAX_DIGESTS_PER_FRAME {
                    return Err(self.bad(format!("{n} digests exceed {MAX_DIGESTS_PER_FRAME}")));
                }
                self.need(n * DIGEST_ENTRY_BYTES)?;
                let mut ranges = Vec::with_capacity(n);
                for _ in 0..n {
                    let (first, last, digest) = (self.lsn()?, self.lsn()?, self.array()?);
                    if first == Lsn::ZERO || last < first {
                        return Err(self.bad(format!("digest range {first}..={last}")));
                    }
                    ranges.push(RangeDigest {
                        first,
                        last,
                        digest,
                    });
                }
                Msg::Digests { ranges }
            }
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    /// Elections: vote requests and their answers.
    fn election(&mut self, k: u8) -> Result<Msg, FrameError> {
        Ok(match k {
            kind::VOTE_REQUEST => {
                let f = self.flags(FLAG_PRE_VOTE | FLAG_TRANSFER)?;
                Msg::VoteRequest {
                    pre_vote: f & FLAG_PRE_VOTE != 0,
                    transfer: f & FLAG_TRANSFER != 0,
                    epoch: Epoch(self.u64()?),
                    last_epoch: Epoch(self.u64()?),
                    last_lsn: self.lsn()?,
                    nonce: self.array()?,
                    mac: self.array()?,
                    cluster_id: self.name()?,
                    candidate: self.name()?,
                }
            }
            kind::VOTE_RESPONSE => {
                let f = self.flags(FLAG_PRE_VOTE | FLAG_GRANTED)?;
                Msg::VoteResponse {
                    pre_vote: f & FLAG_PRE_VOTE != 0,
                    granted: f & FLAG_GRANTED != 0,
                    epoch: Epoch(self.u64()?),
                    mac: self.array()?,
                    voter: self.name()?,
                }
            }
            kind::TIMEOUT_NOW => Msg::TimeoutNow {
                epoch: Epoch(self.u64()?),
            },
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    /// The client's requests and their answers.
    fn client(&mut self, k: u8) -> Result<Msg, FrameError> {
        Ok(match k {
            kind::APPEND_REQUEST => {
                let (id, level) = (self.u64()?, self.level()?);
                Msg::AppendRequest {
                    id,
                    level,
                    payload: self.rest(),
                }
            }
            kind::APPEND_RESPONSE => Msg::AppendResponse {
                id: self.u64()?,
                status: self.status()?,
                lsn: self.lsn()?,
                message: self.string(usize::from(u16::MAX))?,
            },
            kind::READ_REQUEST => Msg::ReadRequest {
                id: self.u64()?,
                from: self.lsn()?,
                max_bytes: self.u32()?,
            },
            kind::READ_RESPONSE => Msg::ReadResponse {
                id: self.u64()?,
                status: self.status()?,
                detail: self.u64()?,
                message: self.string(usize::from(u16::MAX))?,
                records: self.rest(),
            },
            kind::STATUS_REQUEST => Msg::StatusRequest { id: self.u64()? },
            kind::STATUS_RESPONSE => {
                let id = self.u64()?;
                let json = String::from_utf8(self.rest().to_vec())
                    .map_err(|_| self.bad("status is not UTF-8"))?;
                Msg::StatusResponse { id, json }
            }
            kind::PROMOTE_REQUEST => Msg::PromoteRequest {
                id: self.u64()?,
                target: self.name()?,
            },
            kind::PROMOTE_RESPONSE => Msg::PromoteResponse {
                id: self.u64()?,
                status: self.status()?,
                message: self.string(usize::from(u16::MAX))?,
            },
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    /// A batch of appends and its answer.
    fn batch(&mut self, k: u8) -> Result<Msg, FrameError> {
        Ok(match k {
            kind::APPEND_BATCH_REQUEST => {
                let (id, level) = (self.u64()?, self.level()?);
                Msg::AppendBatchRequest {
                    id,
                    level,
                    payloads: self.payloads()?,
                }
            }
            kind::APPEND_BATCH_RESPONSE => {
                let (id, status) = (self.u64()?, self.status()?);
                let (first_lsn, last_lsn) = (self.lsn()?, self.lsn()?);
                if first_lsn > last_lsn || (status == ClientStatus::Ok && first_lsn == Lsn::ZERO) {
                    return Err(self.bad(format!("LSN range {first_lsn}..={last_lsn}")));
                }
                Msg::AppendBatchResponse {
                    id,
                    status,
                    first_lsn,
                    last_lsn,
                    message: self.string(usize::from(u16::MAX))?,
                }
            }
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    /// The client handshake.
    fn client_auth(&mut self, k: u8) -> Result<Msg, FrameError> {
        Ok(match k {
            kind::CLIENT_HELLO => Msg::ClientHello {
                nonce: self.array()?,
                name: self.name()?,
            },
            kind::CLIENT_CHALLENGE => Msg::ClientChallenge {
                nonce: self.array()?,
                cluster_id: self.name()?,
            },
            kind::CLIENT_PROOF => Msg::ClientProof { mac: self.array()? },
            kind::CLIENT_WELCOME => {
                let bits = self.u8()?;
                let grants = Grants::from_bits(bits)
                    .ok_or_else(|| self.bad(format!("unknown grant bits {bits:#04x}")))?;
                Msg::ClientWelcome {
                    grants,
                    mac: self.array()?,
                }
            }
            kind::CLIENT_REFUSED => {
                let v = self.u8()?;
                let code = ClientRefusal::from_u8(v)
                    .ok_or_else(|| self.bad(format!("unknown refusal code {v}")))?;
                Msg::ClientRefused {
                    code,
                    message: self.string(usize::from(u16::MAX))?,
                }
            }
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    fn level(&mut self) -> Result<DurabilityLevel, FrameError> {
        let v = self.u8()?;
        DurabilityLevel::from_u8(v).ok_or_else(|| self.bad(format!("unknown level {v}")))
    }

    /// A batch's records: a count of 1 to [`MAX_BATCH_RECORDS`], then that many (u32 length,
    /// bytes) pairs, each length within what is left of the body. The payloads are slices of
    /// the body, not copies.
    fn payloads(&mut self) -> Result<Vec<Bytes>, FrameError> {
        let n = usize::from(self.u16()?);
        if !(1..=MAX_BATCH_RECORDS).contains(&n) {
            return Err(self.bad(format!("{n} records (1..={MAX_BATCH_RECORDS})")));
        }
        // Every record takes its length prefix: a count the body cannot hold fails here,
        // before anything is allocated for it.
        self.need(n * BATCH_RECORD_PREFIX_BYTES)?;
        let mut payloads = Vec::with_capacity(n);
        for i in 0..n {
            let len = self.u32()? as usize;
            if len > self.body.remaining() {
                return Err(self.bad(format!(
                    "record {i} of {len} bytes, {} left",
                    self.body.remaining()
                )));
            }
            payloads.push(self.body.split_to(len));
        }
        Ok(payloads)
    }

    fn message(&mut self, k: u8) -> Result<Msg, FrameError> {
        let msg = match k {
            kind::HELLO..=kind::REJECT => self.session(k)?,
            kind::RECORDS..=kind::HEARTBEAT => self.stream(k)?,
            kind::FETCH..=kind::DIGESTS => self.integrity(k)?,
            kind::VOTE_REQUEST..=kind::TIMEOUT_NOW => self.election(k)?,
            kind::APPEND_REQUEST..=kind::PROMOTE_RESPONSE => self.client(k)?,
            kind::APPEND_BATCH_REQUEST..=kind::APPEND_BATCH_RESPONSE => self.batch(k)?,
            kind::CLIENT_HELLO..=kind::CLIENT_REFUSED => self.client_auth(k)?,
            other => return Err(FrameError::UnknownKind(other)),
        };
        self.end()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::FrameDecoder;
    use proptest::prelude::*;

    fn history(entries: &[(u64, u64)]) -> Vec<(Epoch, Lsn)> {
        entries.iter().map(|&(e, l)| (Epoch(e), Lsn(l))).collect()
    }

    fn vote_request(pre_vote: bool, transfer: bool) -> Msg {
        Msg::VoteRequest {
            pre_vote,
            transfer,
            epoch: Epoch(5),
            last_epoch: Epoch(4),
            last_lsn: Lsn(77),
            nonce: [8; 32],
            mac: [9; 32],
            cluster_id: "c1".into(),
            candidate: "n2".into(),
        }
    }

    fn vote_response(pre_vote: bool, granted: bool) -> Msg {
        Msg::VoteResponse {
            pre_vote,
            granted,
            epoch: Epoch(5),
            mac: [10; 32],
            voter: "n3".into(),
        }
    }

    /// One or more of each message, the handshake's first.
    fn samples() -> Vec<Msg> {
        let mut all = handshake_samples();
        all.extend(stream_samples());
        all.extend(election_and_client_samples());
        all.extend(batch_samples());
        all
    }

    fn batch_samples() -> Vec<Msg> {
        vec![
            Msg::AppendBatchRequest {
                id: 5,
                level: DurabilityLevel::RemoteDurable,
                payloads: vec![
                    Bytes::from_static(b"one"),
                    Bytes::new(),
                    Bytes::from_static(b"3"),
                ],
            },
            Msg::AppendBatchRequest {
                id: 6,
                level: DurabilityLevel::Local,
                payloads: vec![Bytes::from_static(b"solo")],
            },
            Msg::AppendBatchResponse {
                id: 5,
                status: ClientStatus::Ok,
                first_lsn: Lsn(10),
                last_lsn: Lsn(12),
                message: String::new(),
            },
            Msg::AppendBatchResponse {
                id: 6,
                status: ClientStatus::QuorumUnavailable,
                first_lsn: Lsn::ZERO,
                last_lsn: Lsn::ZERO,
                message: "no quorum".into(),
            },
        ]
    }

    /// An AppendBatchRequest body: id 1, level `local`, the count `count`, then `records` as
    /// (length field, bytes actually present).
    fn batch_body(count: u16, records: &[(u32, &[u8])]) -> Vec<u8> {
        let mut body = 1u64.to_le_bytes().to_vec();
        body.push(DurabilityLevel::Local.as_u8());
        body.extend_from_slice(&count.to_le_bytes());
        for (len, bytes) in records {
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(bytes);
        }
        body
    }

    #[test]
    fn batch_bodies_are_laid_out_as_documented() {
        let m = Msg::AppendBatchRequest {
            id: 1,
            level: DurabilityLevel::Local,
            payloads: vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")],
        };
        let body = m.body().to_vec();
        assert_eq!(body, batch_body(2, &[(2, b"ab"), (1, b"c")]));
        assert_eq!(
            body.len(),
            BATCH_PREFIX_BYTES + 2 * BATCH_RECORD_PREFIX_BYTES + 3
        );
        let r = Msg::AppendBatchResponse {
            id: 7,
            status: ClientStatus::Ok,
            first_lsn: Lsn(3),
            last_lsn: Lsn(4),
            message: "m".into(),
        }
        .body()
        .to_vec();
        assert_eq!(r.len(), 25 + 2 + 1);
        assert_eq!(r[0..8], 7u64.to_le_bytes());
        assert_eq!(r[8], 0);
        assert_eq!(r[9..17], 3u64.to_le_bytes());
        assert_eq!(r[17..25], 4u64.to_le_bytes());
        assert_eq!(r[25..], [1, 0, b'm']);
        assert_eq!(
            kind_name(kind::APPEND_BATCH_REQUEST),
            "append_batch_request"
        );
        assert_eq!(
            kind_name(kind::APPEND_BATCH_RESPONSE),
            "append_batch_response"
        );
    }

    #[test]
    fn the_largest_batch_round_trips() {
        let payloads: Vec<Bytes> = (0..MAX_BATCH_RECORDS)
            .map(|i| Bytes::from(vec![i as u8; i % 7]))
            .collect();
        let m = Msg::AppendBatchRequest {
            id: 9,
            level: DurabilityLevel::RemoteApplied,
            payloads,
        };
        let got =
            decode_body(kind::APPEND_BATCH_REQUEST, m.body().to_vec()).expect("a valid batch");
        assert_eq!(got, m);
    }

    #[test]
    fn malformed_batches_are_refused() {
        let malformed = |body: Vec<u8>, why: &str| {
            let got = decode_body(kind::APPEND_BATCH_REQUEST, body);
            assert!(
                matches!(
                    got,
                    Err(FrameError::Malformed {
                        kind: "append_batch_request",
                        ..
                    })
                ),
                "{why}: {got:?}"
            );
        };
        malformed(batch_body(0, &[]), "an empty batch");
        malformed(
            batch_body(3, &[(1, b"a"), (1, b"b")]),
            "count above the records",
        );
        malformed(
            batch_body(1, &[(1, b"a"), (1, b"b")]),
            "count below the records",
        );
        malformed(batch_body(u16::MAX, &[(1, b"a")]), "a huge count");
        let over = MAX_BATCH_RECORDS as u16 + 1;
        let many: Vec<(u32, &[u8])> = (0..over).map(|_| (0, &[][..])).collect();
        malformed(batch_body(over, &many), "more records than a batch holds");
        malformed(batch_body(1, &[(5, b"abc")]), "a length past the body");
        malformed(batch_body(1, &[(u32::MAX, b"abc")]), "a huge length");
        let mut cut = batch_body(1, &[(3, b"abc")]);
        cut.truncate(BATCH_PREFIX_BYTES + 2);
        malformed(cut, "a length prefix cut short");
        let mut bad_level = batch_body(1, &[(1, b"a")]);
        bad_level[8] = 4;
        malformed(bad_level, "an unknown level");
        malformed(batch_body(1, &[(1, b"a")])[..10].to_vec(), "no count");
    }

    #[test]
    fn batch_answers_with_impossible_ranges_are_refused() {
        for (status, first, last) in [
            (ClientStatus::Ok, 5, 4),
            (ClientStatus::Ok, 0, 0),
            (ClientStatus::Failed, 2, 1),
        ] {
            let body = Msg::AppendBatchResponse {
                id: 1,
                status,
                first_lsn: Lsn(first),
                last_lsn: Lsn(last),
                message: String::new(),
            }
            .body()
            .to_vec();
            let got = decode_body(kind::APPEND_BATCH_RESPONSE, body);
            assert!(
                matches!(
                    got,
                    Err(FrameError::Malformed {
                        kind: "append_batch_response",
                        ..
                    })
                ),
                "{status:?} {first}..={last}: {got:?}"
            );
        }
    }

    fn handshake_samples() -> Vec<Msg> {
        vec![
            Msg::Hello {
                version_min: 1,
                version_max: 1,
                epoch: Epoch(3),
                last_lsn: Lsn(99),
                nonce: [7; 32],
                cluster_id: "c1".into(),
                node_id: "p".into(),
            },
            Msg::HelloReply {
                version: 1,
                last_lsn: Lsn(5),
                last_epoch: Epoch(2),
                last_crc: 0xdead_beef,
                nonce: [1; 32],
                mac: [2; 32],
                cluster_id: "c1".into(),
                node_id: "f1".into(),
                history: history(&[(1, 1), (2, 4)]),
            },
            Msg::HelloReply {
                version: 3,
                last_lsn: Lsn(0),
                last_epoch: Epoch(0),
                last_crc: 0,
                nonce: [1; 32],
                mac: [2; 32],
                cluster_id: "c1".into(),
                node_id: "f1".into(),
                history: Vec::new(),
            },
            Msg::Start {
                mac: [3; 32],
                truncate_after: Some(Lsn(4)),
                cut_crc: 0x1234_5678,
                start_lsn: Lsn(5),
                commit_lsn: Lsn(4),
                history: history(&[(1, 1), (3, 3), (7, 90)]),
            },
            Msg::Start {
                mac: [3; 32],
                truncate_after: None,
                cut_crc: 0,
                start_lsn: Lsn(1),
                commit_lsn: Lsn(0),
                history: Vec::new(),
            },
            Msg::Reject {
                code: RejectCode::Purged,
                detail: 1000,
                message: "gone".into(),
            },
        ]
    }

    fn stream_samples() -> Vec<Msg> {
        vec![
            Msg::Records {
                first: Lsn(1),
                last: Lsn(1),
                commit_lsn: Lsn(0),
                records: Bytes::from(vec![0u8; 40]),
            },
            Msg::Ack {
                write: Lsn(3),
                durable: Lsn(2),
                applied: Lsn(1),
            },
            Msg::Heartbeat {
                commit_lsn: Lsn(8),
                last_lsn: Lsn(9),
            },
            Msg::Fetch {
                id: 9,
                from: Lsn(10),
                to: Lsn(20),
                max_bytes: 4096,
                prev_crc: Some(0xabcd),
            },
            Msg::Fetch {
                id: 9,
                from: Lsn(1),
                to: Lsn(1),
                max_bytes: 1,
                prev_crc: None,
            },
            Msg::Fetched {
                id: 9,
                first: Lsn(10),
                last: Lsn(10),
                records: Bytes::from(vec![1u8; 40]),
            },
            Msg::FetchFailed {
                id: 9,
                message: "purged".into(),
            },
            Msg::Digests {
                ranges: vec![
                    RangeDigest {
                        first: Lsn(1),
                        last: Lsn(100),
                        digest: [5; 16],
                    },
                    RangeDigest {
                        first: Lsn(101),
                        last: Lsn(200),
                        digest: [6; 16],
                    },
                ],
            },
        ]
    }

    fn election_and_client_samples() -> Vec<Msg> {
        vec![
            vote_request(true, false),
            vote_request(false, true),
            vote_response(true, true),
            vote_response(false, false),
            Msg::AppendRequest {
                id: 1,
                level: DurabilityLevel::RemoteApplied,
                payload: Bytes::from_static(b"x"),
            },
            Msg::AppendResponse {
                id: 1,
                status: ClientStatus::QuorumUnavailable,
                lsn: Lsn(0),
                message: "no quorum".into(),
            },
            Msg::ReadRequest {
                id: 2,
                from: Lsn(1),
                max_bytes: 4096,
            },
            Msg::ReadResponse {
                id: 2,
                status: ClientStatus::Ok,
                detail: 0,
                message: String::new(),
                records: Bytes::from_static(b"rr"),
            },
            Msg::StatusRequest { id: 3 },
            Msg::TimeoutNow { epoch: Epoch(7) },
            Msg::PromoteRequest {
                id: 4,
                target: "f2".into(),
            },
            Msg::PromoteResponse {
                id: 4,
                status: ClientStatus::NotPrimary,
                message: "127.0.0.2:7100".into(),
            },
            Msg::StatusResponse {
                id: 3,
                json: "{}".into(),
            },
            Msg::AppendResponse {
                id: 5,
                status: ClientStatus::NotPermitted,
                lsn: Lsn(0),
                message: "client \"r\" may not append".into(),
            },
            Msg::ClientHello {
                nonce: [0x31; NONCE_LEN],
                name: "loader".into(),
            },
            Msg::ClientChallenge {
                nonce: [0x32; NONCE_LEN],
                cluster_id: "c1".into(),
            },
            Msg::ClientProof {
                mac: [0x33; MAC_LEN],
            },
            Msg::ClientWelcome {
                grants: Grants::APPEND.union(Grants::READ),
                mac: [0x34; MAC_LEN],
            },
            Msg::ClientRefused {
                code: ClientRefusal::AuthFailed,
                message: "authentication failed".into(),
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let wire = m.encode();
            let mut d = FrameDecoder::new(1 << 20);
            d.push(&wire);
            let f = d.next_frame().unwrap().unwrap();
            assert_eq!(Msg::decode(&f).unwrap(), m);
        }
    }

    #[test]
    fn truncated_or_padded_bodies_are_malformed() {
        for m in samples() {
            let body = m.body();
            for cut in 0..body.len() {
                let f = Frame {
                    kind: m.kind(),
                    body: Bytes::copy_from_slice(&body[..cut]),
                };
                if let Ok(got) = Msg::decode(&f) {
                    // Only messages ending in an open-ended byte run may decode shorter.
                    assert!(
                        matches!(
                            got,
                            Msg::AppendRequest { .. }
                                | Msg::ReadResponse { .. }
                                | Msg::StatusResponse { .. }
                                | Msg::Records { .. }
                                | Msg::Fetched { .. }
                        ),
                        "{m:?} cut at {cut}"
                    );
                }
            }
            let mut padded = body.to_vec();
            padded.push(0);
            let f = Frame {
                kind: m.kind(),
                body: Bytes::from(padded),
            };
            if !matches!(
                m,
                Msg::AppendRequest { .. }
                    | Msg::ReadResponse { .. }
                    | Msg::StatusResponse { .. }
                    | Msg::Records { .. }
                    | Msg::Fetched { .. }
            ) {
                assert!(Msg::decode(&f).is_err(), "{m:?} padded");
            }
        }
    }

    #[test]
    fn client_handshake_bodies_are_laid_out_as_documented_and_bad_values_refused() {
        let hello = Msg::ClientHello {
            nonce: [0xaa; NONCE_LEN],
            name: "ab".into(),
        };
        let mut want = vec![0xaa; NONCE_LEN];
        want.extend_from_slice(&[2, 0, b'a', b'b']);
        assert_eq!(hello.body().to_vec(), want);
        let welcome = Msg::ClientWelcome {
            grants: Grants::ALL,
            mac: [0xbb; MAC_LEN],
        };
        let body = welcome.body().to_vec();
        assert_eq!((body.len(), body[0]), (1 + MAC_LEN, 7));
        let mut unknown_grant = body.clone();
        unknown_grant[0] = 0x08;
        assert!(decode_body(kind::CLIENT_WELCOME, unknown_grant).is_err());
        assert!(
            decode_body(kind::CLIENT_REFUSED, vec![0, 0, 0]).is_err(),
            "code 0"
        );
        assert!(
            decode_body(kind::CLIENT_REFUSED, vec![4, 0, 0]).is_err(),
            "code 4"
        );
        let long_name = Msg::ClientHello {
            nonce: [0; NONCE_LEN],
            name: "n".repeat(MAX_NAME_BYTES + 1),
        };
        assert!(decode_body(kind::CLIENT_HELLO, long_name.body().to_vec()).is_err());
        let mut status = Msg::AppendResponse {
            id: 1,
            status: ClientStatus::NotPermitted,
            lsn: Lsn(0),
            message: String::new(),
        }
        .body()
        .to_vec();
        status[8] = 7;
        assert!(
            decode_body(kind::APPEND_RESPONSE, status).is_err(),
            "status 7"
        );
    }

    #[test]
    fn unknown_kinds_and_values_are_refused() {
        assert_eq!(
            Msg::decode(&Frame {
                kind: 99,
                body: Bytes::new()
            }),
            Err(FrameError::UnknownKind(99))
        );
        let f = Frame {
            kind: kind::APPEND_REQUEST,
            body: Bytes::from(vec![0, 0, 0, 0, 0, 0, 0, 0, 9]),
        };
        assert!(Msg::decode(&f).is_err());
        let mut rec = Msg::Records {
            first: Lsn(5),
            last: Lsn(4),
            commit_lsn: Lsn(0),
            records: Bytes::new(),
        }
        .body();
        let f = Frame {
            kind: kind::RECORDS,
            body: rec.split().freeze(),
        };
        assert!(Msg::decode(&f).is_err());
    }

    fn decode_body(kind: u8, body: Vec<u8>) -> Result<Msg, FrameError> {
        Msg::decode(&Frame {
            kind,
            body: Bytes::from(body),
        })
    }

    /// A Start body without a cut, ending in the history `entries` under the count `count`.
    fn start_body(count: u16, entries: &[(u64, u64)]) -> Vec<u8> {
        let mut body = Msg::Start {
            mac: [3; 32],
            truncate_after: None,
            cut_crc: 0,
            start_lsn: Lsn(1),
            commit_lsn: Lsn(0),
            history: Vec::new(),
        }
        .body()
        .to_vec();
        body.truncate(body.len() - 2);
        body.extend_from_slice(&count.to_le_bytes());
        for &(e, l) in entries {
            body.extend_from_slice(&e.to_le_bytes());
            body.extend_from_slice(&l.to_le_bytes());
        }
        body
    }

    #[test]
    fn histories_round_trip_in_hello_reply_and_start() {
        let long: Vec<(u64, u64)> = (1..=MAX_HISTORY_ENTRIES as u64)
            .map(|i| (i * 2, i * 10))
            .collect();
        for h in [vec![], vec![(1, 1)], vec![(1, 1), (2, 9), (5, 10)], long] {
            let body = start_body(h.len() as u16, &h);
            let m = decode_body(kind::START, body.clone()).expect("a valid history");
            assert!(matches!(&m, Msg::Start { history: got, .. } if *got == history(&h)));
            assert_eq!(m.body().to_vec(), body);
            let reply = Msg::HelloReply {
                version: PROTOCOL_VERSION,
                last_lsn: Lsn(10),
                last_epoch: Epoch(5),
                last_crc: 1,
                nonce: [1; 32],
                mac: [2; 32],
                cluster_id: "c1".into(),
                node_id: "f1".into(),
                history: history(&h),
            };
            assert_eq!(
                decode_body(kind::HELLO_REPLY, reply.body().to_vec()),
                Ok(reply)
            );
        }
    }

    #[test]
    fn a_longer_history_sends_its_newest_entries() {
        let all: Vec<(u64, u64)> = (1..=MAX_HISTORY_ENTRIES as u64 + 3)
            .map(|i| (i, i))
            .collect();
        let m = Msg::Start {
            mac: [3; 32],
            truncate_after: None,
            cut_crc: 0,
            start_lsn: Lsn(1),
            commit_lsn: Lsn(0),
            history: history(&all),
        };
        let Ok(Msg::Start { history: sent, .. }) = decode_body(kind::START, m.body().to_vec())
        else {
            panic!("a long history encodes as a valid one");
        };
        assert_eq!(sent, history(&all[3..]));
    }

    #[test]
    fn bad_histories_are_refused() {
        let malformed = |body: Vec<u8>, why: &str| {
            let got = decode_body(kind::START, body);
            assert!(
                matches!(got, Err(FrameError::Malformed { kind: "start", .. })),
                "{why}: {got:?}"
            );
        };
        malformed(start_body(2, &[(2, 5), (1, 9)]), "epochs falling");
        malformed(start_body(2, &[(1, 5), (1, 9)]), "epochs repeated");
        malformed(start_body(2, &[(1, 9), (2, 5)]), "LSNs falling");
        malformed(start_body(2, &[(1, 5), (2, 5)]), "LSNs repeated");
        malformed(start_body(1, &[(0, 5)]), "epoch 0");
        malformed(start_body(1, &[(1, 0)]), "LSN 0");
        malformed(start_body(2, &[(1, 5)]), "count above the entries");
        malformed(start_body(0, &[(1, 5)]), "count below the entries");
        let too_many: Vec<(u64, u64)> = (1..=MAX_HISTORY_ENTRIES as u64 + 1)
            .map(|i| (i, i))
            .collect();
        malformed(start_body(too_many.len() as u16, &too_many), "too many");
        malformed(start_body(u16::MAX, &[]), "a huge count");
        let mut reply = Msg::HelloReply {
            version: PROTOCOL_VERSION,
            last_lsn: Lsn(10),
            last_epoch: Epoch(5),
            last_crc: 1,
            nonce: [1; 32],
            mac: [2; 32],
            cluster_id: "c1".into(),
            node_id: "f1".into(),
            history: history(&[(2, 5), (1, 9)]),
        }
        .body()
        .to_vec();
        assert!(decode_body(kind::HELLO_REPLY, reply.clone()).is_err());
        reply.truncate(reply.len() - 2 * HISTORY_ENTRY_BYTES - 2);
        assert!(decode_body(kind::HELLO_REPLY, reply).is_err(), "no count");
    }

    #[test]
    fn unknown_vote_flag_bits_are_refused() {
        for (m, kind) in [
            (vote_request(true, true), "vote_request"),
            (vote_response(true, true), "vote_response"),
        ] {
            let body = m.body().to_vec();
            assert_eq!(body[0], 0b11, "{kind}: both flags set");
            for bit in 2..8 {
                let mut bad = body.clone();
                bad[0] |= 1 << bit;
                let got = decode_body(m.kind(), bad);
                assert!(
                    matches!(&got, Err(FrameError::Malformed { kind: k, .. }) if *k == kind),
                    "{kind} bit {bit}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn vote_bodies_are_laid_out_as_documented() {
        let req = vote_request(true, false).body().to_vec();
        assert_eq!(req.len(), 93 + 2 + 2);
        assert_eq!(req[0], 1);
        assert_eq!(req[1..9], 5u64.to_le_bytes());
        assert_eq!(req[9..17], 4u64.to_le_bytes());
        assert_eq!(req[17..25], 77u64.to_le_bytes());
        assert_eq!(req[25..57], [8; 32]);
        assert_eq!(req[57..89], [9; 32]);
        assert_eq!(req[89..], [2, 0, b'c', b'1', 2, 0, b'n', b'2']);
        let resp = vote_response(false, true).body().to_vec();
        assert_eq!(resp.len(), 43 + 2);
        assert_eq!(resp[0], 2);
        assert_eq!(resp[1..9], 5u64.to_le_bytes());
        assert_eq!(resp[9..41], [10; 32]);
        assert_eq!(resp[41..], [2, 0, b'n', b'3']);
        assert_eq!(kind_name(kind::VOTE_REQUEST), "vote_request");
        assert_eq!(kind_name(kind::VOTE_RESPONSE), "vote_response");
    }

    #[test]
    fn vote_names_are_bounded() {
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let mut m = vote_request(false, false);
        if let Msg::VoteRequest { candidate, .. } = &mut m {
            candidate.clone_from(&long);
        }
        assert!(decode_body(kind::VOTE_REQUEST, m.body().to_vec()).is_err());
        let mut m = vote_response(false, false);
        if let Msg::VoteResponse { voter, .. } = &mut m {
            voter.clone_from(&long);
        }
        assert!(decode_body(kind::VOTE_RESPONSE, m.body().to_vec()).is_err());
    }

    /// A history rising by `steps` from (0, 0).
    fn rising(steps: &[(u64, u64)]) -> Vec<(Epoch, Lsn)> {
        let (mut e, mut l) = (0, 0);
        let mut entries = Vec::with_capacity(steps.len());
        for &(de, dl) in steps {
            (e, l) = (e + de, l + dl);
            entries.push((Epoch(e), Lsn(l)));
        }
        entries
    }

    proptest! {
        #[test]
        fn election_messages_and_histories_round_trip(
            flags in 0u8..4,
            epoch in any::<u64>(),
            last_epoch in any::<u64>(),
            last_lsn in any::<u64>(),
            bytes in any::<[u8; 2]>(),
            name in "[a-z0-9._-]{0,40}",
            steps in proptest::collection::vec((1u64..1000, 1u64..1000), 0..40),
        ) {
            let msgs = [
                Msg::VoteRequest {
                    pre_vote: flags & 1 != 0,
                    transfer: flags & 2 != 0,
                    epoch: Epoch(epoch),
                    last_epoch: Epoch(last_epoch),
                    last_lsn: Lsn(last_lsn),
                    nonce: [bytes[0]; 32],
                    mac: [bytes[1]; 32],
                    cluster_id: name.clone(),
                    candidate: name.clone(),
                },
                Msg::VoteResponse {
                    pre_vote: flags & 1 != 0,
                    granted: flags & 2 != 0,
                    epoch: Epoch(epoch),
                    mac: [bytes[1]; 32],
                    voter: name.clone(),
                },
                Msg::Start {
                    mac: [bytes[1]; 32],
                    truncate_after: Some(Lsn(last_lsn)),
                    start_lsn: Lsn(last_lsn.wrapping_add(1)),
                    commit_lsn: Lsn(epoch),
                    cut_crc: last_epoch as u32,
                    history: rising(&steps),
                },
            ];
            for m in msgs {
                let f = Frame { kind: m.kind(), body: m.body().freeze() };
                prop_assert_eq!(Msg::decode(&f), Ok(m));
            }
        }
    }

    proptest! {
        #[test]
        fn batches_round_trip_and_refuse_any_cut(
            id in any::<u64>(),
            level in 0u8..4,
            payloads in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..40), 1..20),
            cut in any::<prop::sample::Index>(),
        ) {
            let m = Msg::AppendBatchRequest {
                id,
                level: DurabilityLevel::ALL[usize::from(level)],
                payloads: payloads.into_iter().map(Bytes::from).collect(),
            };
            let body = m.body().to_vec();
            prop_assert_eq!(decode_body(kind::APPEND_BATCH_REQUEST, body.clone()), Ok(m));
            let short = body[..cut.index(body.len())].to_vec();
            prop_assert!(decode_body(kind::APPEND_BATCH_REQUEST, short).is_err());
        }
    }

    #[test]
    fn levels_parse_and_print() {
        for l in DurabilityLevel::ALL {
            assert_eq!(l.as_str().parse::<DurabilityLevel>().unwrap(), l);
            assert_eq!(DurabilityLevel::from_u8(l.as_u8()), Some(l));
        }
        assert!("fsync".parse::<DurabilityLevel>().is_err());
    }
}
