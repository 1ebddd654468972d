//! Reading an input, and the messages a fuzzed peer sends, built from it.

use std::time::Duration;

use bytes::Bytes;
use logship_engine::record;
use logship_engine::{Epoch, Lsn, RangeDigest};

use crate::protocol::auth::{self, ClusterKey, Role, MAC_LEN, NONCE_LEN};
use crate::protocol::msg::PROTOCOL_VERSION;
use crate::protocol::{ClientStatus, DurabilityLevel, Msg, RejectCode};

use super::common::{
    other_role, Session, CLUSTER, FOLLOWER_ID, MAX_SEEN_MACS, PRIMARY_ID, WRONG_KEY,
};
use super::log_model::LogModel;

/// Entries of a history built from the input, at most.
const MAX_PICKED_HISTORY: usize = 4;

/// Reads an input front to back; reads past the end give zeros.
pub(super) struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub(super) fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(super) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A number below `n` (0 for `n == 0`).
    pub(super) fn pick(&mut self, n: usize) -> usize {
        match n {
            0 => 0,
            1..=256 => usize::from(self.byte()) % n,
            _ => usize::from(self.u16()) % n,
        }
    }

    pub(super) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub(super) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub(super) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    pub(super) fn array<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.byte())
    }

    /// Up to `max` bytes.
    pub(super) fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.pick(max + 1);
        (0..n).map(|_| self.byte()).collect()
    }

    pub(super) fn duration(&mut self) -> Duration {
        let ms = match self.pick(8) {
            0 => 0,
            1 => 1,
            2 | 3 => 10,
            4 => 100,
            5 => 500,
            6 => 1_100,
            _ => u64::from(self.u16()),
        };
        Duration::from_millis(ms)
    }

    pub(super) fn lsn_near(&mut self, near: Lsn) -> Lsn {
        match self.pick(8) {
            0 => Lsn::ZERO,
            1..=3 => near,
            4 => Lsn(near.0.saturating_add(1 + self.pick(4) as u64)),
            5 => Lsn(near.0.saturating_sub(1 + self.pick(4) as u64)),
            6 => Lsn(u64::MAX - self.pick(2) as u64),
            _ => Lsn(self.u64()),
        }
    }

    pub(super) fn version(&mut self) -> u16 {
        match self.pick(6) {
            0 => 0,
            1..=3 => PROTOCOL_VERSION,
            4 => PROTOCOL_VERSION + 1,
            _ => self.u16(),
        }
    }

    /// Usually `right`; sometimes empty, another name, or bytes (possibly too long for a name).
    pub(super) fn name(&mut self, right: &str) -> String {
        match self.pick(6) {
            0..=3 => right.to_string(),
            4 => String::new(),
            _ => String::from_utf8_lossy(&self.bytes(300)).into_owned(),
        }
    }

    /// A nonce from one byte: its value matters only for being equal or not to another.
    pub(super) fn nonce(&mut self) -> [u8; NONCE_LEN] {
        [self.byte(); NONCE_LEN]
    }

    /// An epoch history: usually well formed (epochs and LSNs rising, mostly at or before
    /// `last`), sometimes empty, sometimes out of order (which the decoder refuses).
    pub(super) fn history(&mut self, last: Lsn) -> Vec<(Epoch, Lsn)> {
        let n = self.pick(MAX_PICKED_HISTORY + 1);
        let step = usize::try_from(last.0 / 2)
            .unwrap_or(usize::MAX)
            .clamp(1, 255);
        let (mut epoch, mut lsn) = (0u64, 0u64);
        let mut entries: Vec<(Epoch, Lsn)> = (0..n)
            .map(|_| {
                epoch += 1 + self.pick(2) as u64;
                lsn = lsn.saturating_add(1 + self.pick(step) as u64);
                (Epoch(epoch), Lsn(lsn))
            })
            .collect();
        if self.pick(8) == 0 {
            entries.reverse();
        }
        entries
    }
}

/// A proof for `role` made one of the ways a peer without the key could try (random bytes,
/// another key, the other role's proof, a replay, a proof of another transcript, a key from
/// the input), or the honest one. `session` is the connection's transcript so far.
pub(super) fn pick_mac(
    input: &mut Input<'_>,
    role: Role,
    session: Option<&Session>,
    seen: &[[u8; MAC_LEN]],
) -> [u8; MAC_LEN] {
    let Some(s) = session else {
        return input.array();
    };
    match input.pick(8) {
        0 => input.array(),
        1 => {
            let wrong = ClusterKey::from_bytes(WRONG_KEY).expect("the harness key is long enough");
            auth::prove(&wrong, role, &s.transcript())
        }
        2 => s.honest(other_role(role)),
        3 if !seen.is_empty() => seen[input.pick(seen.len())],
        4 => s.tweaked(input).honest(role),
        5 => match ClusterKey::from_bytes(&input.bytes(48)) {
            Ok(k) => auth::prove(&k, role, &s.transcript()),
            Err(_) => input.array(),
        },
        _ => s.honest(role),
    }
}

pub(super) fn remember(seen: &mut Vec<[u8; MAC_LEN]>, mac: [u8; MAC_LEN]) {
    if seen.len() < MAX_SEEN_MACS {
        seen.push(mac);
    }
}

/// A run of records from the input: usually whole records continuing at `next`, sometimes
/// elsewhere, damaged, or with a range that does not match them.
pub(super) fn pick_records(input: &mut Input<'_>, next: Lsn) -> Msg {
    let first = match input.pick(6) {
        0 => Lsn(input.u64().max(1)),
        1 => Lsn(next.0.saturating_add(1)),
        _ => next.max(Lsn::FIRST),
    };
    let n = 1 + input.pick(4) as u64;
    let mut bytes = Vec::new();
    for i in 0..n {
        let payload = input.bytes(48);
        let epoch = Epoch(input.pick(3) as u64);
        record::encode_into(&mut bytes, Lsn(first.0.saturating_add(i)), epoch, &payload);
    }
    let mut last = Lsn(first.0.saturating_add(n - 1));
    match input.pick(10) {
        0 => {
            let bit = input.pick(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        1 => bytes.truncate(bytes.len().saturating_sub(1 + input.pick(40))),
        2 => bytes.extend_from_slice(&input.bytes(40)),
        3 => last = Lsn(last.0.saturating_add(1)),
        4 => last = input.lsn_near(last),
        _ => {}
    }
    Msg::Records {
        first,
        last,
        commit_lsn: Lsn(input.u64()),
        records: Bytes::from(bytes),
    }
}

/// Every reject code, for messages built from the input.
const REJECT_CODES: [RejectCode; 9] = [
    RejectCode::Version,
    RejectCode::ClusterId,
    RejectCode::AuthFailed,
    RejectCode::UnknownNode,
    RejectCode::Purged,
    RejectCode::Diverged,
    RejectCode::Protocol,
    RejectCode::WrongRole,
    RejectCode::StaleEpoch,
];

/// Every client status, for messages built from the input.
const CLIENT_STATUSES: [ClientStatus; 6] = [
    ClientStatus::Ok,
    ClientStatus::QuorumUnavailable,
    ClientStatus::Invalid,
    ClientStatus::Purged,
    ClientStatus::NotPrimary,
    ClientStatus::Failed,
];

/// Any message at all, of either direction and either protocol, with fields from the input.
pub(super) fn pick_any_msg(input: &mut Input<'_>, near: Lsn) -> Msg {
    match input.pick(15) {
        0 => pick_hello(input, near),
        1 => Msg::HelloReply {
            version: input.version(),
            last_lsn: input.lsn_near(near),
            last_epoch: Epoch(input.u64()),
            last_crc: input.u32(),
            nonce: input.nonce(),
            mac: input.array(),
            cluster_id: input.name(CLUSTER),
            node_id: input.name(FOLLOWER_ID),
            history: input.history(near),
        },
        2 => Msg::Start {
            mac: input.array(),
            truncate_after: (input.byte() & 1 == 1).then(|| input.lsn_near(near)),
            start_lsn: input.lsn_near(near.next()),
            commit_lsn: input.lsn_near(near),
            cut_crc: 0,
            history: input.history(near),
        },
        3 => Msg::Reject {
            code: REJECT_CODES[input.pick(REJECT_CODES.len())],
            detail: input.u64(),
            message: input.name("refused"),
        },
        4 => pick_records(input, near.next()),
        5 => pick_ack(input, near),
        6 => Msg::Heartbeat {
            commit_lsn: input.lsn_near(near),
            last_lsn: input.lsn_near(near),
        },
        7 | 8 => pick_election_msg(input, near),
        _ => pick_client_msg(input, near),
    }
}

/// A fetch, an answer to one, or digests, with fields from the input.
pub(super) fn pick_integrity_msg(input: &mut Input<'_>, near: Lsn) -> Msg {
    let id = u64::from(input.byte());
    match input.pick(4) {
        0 => Msg::Fetch {
            id,
            from: input.lsn_near(near),
            to: input.lsn_near(near),
            max_bytes: input.u32(),
            prev_crc: (input.byte() & 1 == 1).then(|| input.u32()),
        },
        1 => match pick_records(input, near) {
            Msg::Records {
                first,
                last,
                records,
                ..
            } => Msg::Fetched {
                id,
                first,
                last,
                records,
            },
            other => unreachable!("pick_records made {}", other.name()),
        },
        2 => Msg::FetchFailed {
            id,
            message: input.name("failed"),
        },
        _ => Msg::Digests {
            ranges: (0..input.pick(4))
                .map(|_| RangeDigest {
                    first: input.lsn_near(near),
                    last: input.lsn_near(near),
                    digest: input.array(),
                })
                .collect(),
        },
    }
}

/// A peer's fetch of records its node's log holds (usually), with the CRC of the record
/// before them as the log has it (usually).
pub(super) fn pick_fetch(input: &mut Input<'_>, log: &LogModel) -> Msg {
    let from = input.lsn_near(log.first.max(Lsn::FIRST));
    let to = Lsn(from.0.saturating_add(input.pick(8) as u64));
    let prev_crc = match input.pick(4) {
        0 => None,
        1 => Some(input.u32()),
        _ => Some(log.crc(from.prev()).unwrap_or(0)),
    };
    let max_bytes = match input.pick(4) {
        0 => 0,
        1 => input.u32(),
        _ => 1 + input.pick(512) as u32,
    };
    Msg::Fetch {
        id: u64::from(input.byte()),
        from,
        to,
        max_bytes,
        prev_crc,
    }
}

/// A vote request or its answer, with fields from the input (proofs are random bytes: the
/// harness has no honest candidate).
fn pick_election_msg(input: &mut Input<'_>, near: Lsn) -> Msg {
    let (pre_vote, flag) = (input.byte() & 1 == 1, input.byte() & 1 == 1);
    let epoch = Epoch(input.pick(4) as u64);
    match input.pick(2) {
        0 => Msg::VoteRequest {
            pre_vote,
            transfer: flag,
            epoch,
            last_epoch: Epoch(input.pick(4) as u64),
            last_lsn: input.lsn_near(near),
            nonce: input.nonce(),
            mac: input.array(),
            cluster_id: input.name(CLUSTER),
            candidate: input.name(PRIMARY_ID),
        },
        _ => Msg::VoteResponse {
            pre_vote,
            granted: flag,
            epoch,
            mac: input.array(),
            voter: input.name(FOLLOWER_ID),
        },
    }
}

/// A client request or response, with fields from the input.
fn pick_client_msg(input: &mut Input<'_>, near: Lsn) -> Msg {
    let id = u64::from(input.byte());
    match input.pick(8) {
        0 => Msg::AppendRequest {
            id,
            level: DurabilityLevel::ALL[input.pick(4)],
            payload: Bytes::from(input.bytes(32)),
        },
        1 => Msg::AppendResponse {
            id,
            status: CLIENT_STATUSES[input.pick(CLIENT_STATUSES.len())],
            lsn: input.lsn_near(near),
            message: input.name(""),
        },
        2 => Msg::ReadRequest {
            id,
            from: input.lsn_near(near),
            max_bytes: input.u32(),
        },
        3 => Msg::ReadResponse {
            id,
            status: CLIENT_STATUSES[input.pick(CLIENT_STATUSES.len())],
            detail: input.u64(),
            message: input.name(""),
            records: Bytes::from(input.bytes(64)),
        },
        4 => Msg::StatusRequest { id },
        5 => Msg::StatusResponse {
            id,
            json: input.name("{}"),
        },
        6 => Msg::AppendBatchRequest {
            id,
            level: DurabilityLevel::ALL[input.pick(4)],
            payloads: (0..=input.pick(4))
                .map(|_| Bytes::from(input.bytes(16)))
                .collect(),
        },
        _ => {
            let first_lsn = input.lsn_near(near);
            Msg::AppendBatchResponse {
                id,
                status: CLIENT_STATUSES[input.pick(CLIENT_STATUSES.len())],
                first_lsn,
                last_lsn: input.lsn_near(first_lsn),
                message: input.name(""),
            }
        }
    }
}

pub(super) fn pick_hello(input: &mut Input<'_>, near: Lsn) -> Msg {
    Msg::Hello {
        version_min: input.version(),
        version_max: input.version(),
        epoch: Epoch(input.pick(3) as u64),
        last_lsn: input.lsn_near(near),
        nonce: input.nonce(),
        cluster_id: input.name(CLUSTER),
        node_id: input.name(PRIMARY_ID),
    }
}

pub(super) fn pick_ack(input: &mut Input<'_>, sent: Lsn) -> Msg {
    let write = input.lsn_near(sent);
    let durable = input.lsn_near(write);
    let applied = input.lsn_near(durable);
    Msg::Ack {
        write,
        durable,
        applied,
    }
}
