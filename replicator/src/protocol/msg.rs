//! Messages: what each frame kind carries. docs/protocol.md draws each body byte by byte.
//!
//! Integers are little-endian. Strings are a u16 LE length then UTF-8 bytes (at most
//! [`MAX_NAME_BYTES`] for names). Record runs are engine records exactly as on disk (the
//! engine's record header carries its own CRC, checked again by the receiving log).
//! Decoding is total: any body is either a message or a [`FrameError`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use logship_engine::{Epoch, Lsn, RangeDigest};

use super::auth::{MAC_LEN, NONCE_LEN};
use super::frame::{encode, Frame, FrameError};

/// The protocol version this build speaks. Hello offers a range; the follower picks. Version 2
/// added Fetch, Fetched, FetchFailed and Digests, and Records bodies that may carry write
/// markers (format version 2) between records.
pub const PROTOCOL_VERSION: u16 = 2;
/// Oldest version this build speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 2;
/// Most digest ranges in one Digests frame.
pub const MAX_DIGESTS_PER_FRAME: usize = 1024;
/// Bytes of one digest range on the wire: first, last, digest.
const DIGEST_ENTRY_BYTES: usize = 32;
/// Longest cluster id or node id.
pub const MAX_NAME_BYTES: usize = 255;

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
}

impl ClientStatus {
    fn from_u8(v: u8) -> Option<ClientStatus> {
        use ClientStatus::*;
        [Ok, QuorumUnavailable, Invalid, Purged, NotPrimary, Failed]
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
            Msg::AppendRequest { .. } => kind::APPEND_REQUEST,
            Msg::AppendResponse { .. } => kind::APPEND_RESPONSE,
            Msg::ReadRequest { .. } => kind::READ_REQUEST,
            Msg::ReadResponse { .. } => kind::READ_RESPONSE,
            Msg::StatusRequest { .. } => kind::STATUS_REQUEST,
            Msg::StatusResponse { .. } => kind::STATUS_RESPONSE,
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
            Msg::AppendRequest { .. }
            | Msg::AppendResponse { .. }
            | Msg::ReadRequest { .. }
            | Msg::ReadResponse { .. }
            | Msg::StatusRequest { .. }
            | Msg::StatusResponse { .. } => self.put_client(&mut b),
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
            Msg::HelloReply {
                version,
                last_lsn,
                last_epoch,
                last_crc,
                nonce,
                mac,
                cluster_id,
                node_id,
            } => {
                b.put_u16_le(*version);
                b.put_u64_le(last_lsn.0);
                b.put_u64_le(last_epoch.0);
                b.put_u32_le(*last_crc);
                b.put_slice(nonce);
                b.put_slice(mac);
                put_str(b, cluster_id);
                put_str(b, node_id);
            }
            Msg::Start {
                mac,
                truncate_after,
                start_lsn,
                commit_lsn,
                cut_crc,
            } => {
                b.put_slice(mac);
                b.put_u8(u8::from(truncate_after.is_some()));
                b.put_u64_le(truncate_after.map_or(0, |l| l.0));
                b.put_u64_le(start_lsn.0);
                b.put_u64_le(commit_lsn.0);
                b.put_u32_le(*cut_crc);
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
            other => unreachable!("{} is not a client message", other.name()),
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
        kind::APPEND_REQUEST => "append_request",
        kind::APPEND_RESPONSE => "append_response",
        kind::READ_REQUEST => "read_request",
        kind::READ_RESPONSE => "read_response",
        kind::STATUS_REQUEST => "status_request",
        kind::STATUS_RESPONSE => "status_response",
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
            },
            kind::START => {
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
                Msg::Start {
                    mac,
                    truncate_after,
                    start_lsn,
                    commit_lsn,
                    cut_crc,
                }
            }
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

    /// The client's requests and their answers.
    fn client(&mut self, k: u8) -> Result<Msg, FrameError> {
        Ok(match k {
            kind::APPEND_REQUEST => {
                let id = self.u64()?;
                let v = self.u8()?;
                let level = DurabilityLevel::from_u8(v)
                    .ok_or_else(|| self.bad(format!("unknown level {v}")))?;
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
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    fn message(&mut self, k: u8) -> Result<Msg, FrameError> {
        let msg = match k {
            kind::HELLO..=kind::REJECT => self.session(k)?,
            kind::RECORDS..=kind::HEARTBEAT => self.stream(k)?,
            kind::FETCH..=kind::DIGESTS => self.integrity(k)?,
            kind::APPEND_REQUEST..=kind::STATUS_RESPONSE => self.client(k)?,
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

    fn samples() -> Vec<Msg> {
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
            },
            Msg::Start {
                mac: [3; 32],
                truncate_after: Some(Lsn(4)),
                cut_crc: 0x1234_5678,
                start_lsn: Lsn(5),
                commit_lsn: Lsn(4),
            },
            Msg::Start {
                mac: [3; 32],
                truncate_after: None,
                cut_crc: 0,
                start_lsn: Lsn(1),
                commit_lsn: Lsn(0),
            },
            Msg::Reject {
                code: RejectCode::Purged,
                detail: 1000,
                message: "gone".into(),
            },
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
            Msg::StatusResponse {
                id: 3,
                json: "{}".into(),
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

    #[test]
    fn levels_parse_and_print() {
        for l in DurabilityLevel::ALL {
            assert_eq!(l.as_str().parse::<DurabilityLevel>().unwrap(), l);
            assert_eq!(DurabilityLevel::from_u8(l.as_u8()), Some(l));
        }
        assert!("fsync".parse::<DurabilityLevel>().is_err());
    }
}
