//! What both ends of every harness share: the cluster's names and key, the handshake transcript
//! as the harness saw it, the oracle's reading of a peer's byte stream, and the configurations.

use std::net::{Ipv4Addr, SocketAddr};

use logship_engine::Epoch;

use crate::backoff::BackoffConfig;
use crate::breaker::BreakerConfig;
use crate::commit::QuorumPolicy;
use crate::protocol::auth::{self, ClusterKey, Role, Transcript, MAC_LEN, NONCE_LEN};
use crate::protocol::frame::{FrameDecoder, FrameError, DEFAULT_MAX_BODY_BYTES};
use crate::protocol::Msg;
use crate::vocab::FollowerConfig;
use crate::vocab::{FollowerLink, PrimaryConfig, Timeouts};

use super::input::Input;

/// The cluster key both honest sides hold.
pub(super) const KEY: &[u8] = b"logship-fuzz-cluster-key-0123456789";
/// A key of the right length that is not the cluster's.
pub(super) const WRONG_KEY: &[u8] = b"logship-fuzz-other-key-0123456789ab";
pub(super) const CLUSTER: &str = "fuzz-cluster";
pub(super) const PRIMARY_ID: &str = "p1";
pub(super) const FOLLOWER_ID: &str = "f1";
/// Records the harness lets a primary's log grow to.
pub(super) const MAX_LOG_RECORDS: usize = 96;
/// Proofs remembered for replay, at most.
pub(super) const MAX_SEEN_MACS: usize = 32;
/// The primary's window of unacknowledged bytes: small, so the window closes.
pub(super) const MAX_INFLIGHT_BYTES: u64 = 1024;
/// The operation number of both sides' fetches and digests, added when the harness came to
/// drive a `Replica`: a number the stored corpus, grown before, almost never uses, so that the
/// older operations keep their numbers and the corpus its meaning.
pub(super) const INTEGRITY_OP: u8 = 88;
/// The primary's catch-up chunk.
pub(super) const CATCH_UP_CHUNK_BYTES: usize = 512;

pub(super) fn cluster_key() -> ClusterKey {
    ClusterKey::from_bytes(KEY).expect("the harness key is long enough")
}

pub(super) fn other_role(role: Role) -> Role {
    match role {
        Role::Primary => Role::Follower,
        Role::Follower => Role::Primary,
    }
}

/// A handshake transcript as the harness saw it on one connection (owned).
#[derive(Clone, Debug)]
pub(super) struct Session {
    pub(super) version: u16,
    pub(super) primary_id: String,
    pub(super) epoch: u64,
    pub(super) primary_nonce: [u8; NONCE_LEN],
    pub(super) follower_nonce: [u8; NONCE_LEN],
}

impl Session {
    pub(super) fn transcript(&self) -> Transcript<'_> {
        Transcript {
            version: self.version,
            cluster_id: CLUSTER,
            primary_id: &self.primary_id,
            follower_id: FOLLOWER_ID,
            epoch: self.epoch,
            primary_nonce: &self.primary_nonce,
            follower_nonce: &self.follower_nonce,
        }
    }

    /// The proof an honest `role` sends on this connection.
    pub(super) fn honest(&self, role: Role) -> [u8; MAC_LEN] {
        auth::prove(&cluster_key(), role, &self.transcript())
    }

    /// The same transcript with one field changed.
    pub(super) fn tweaked(&self, input: &mut Input<'_>) -> Session {
        let mut t = self.clone();
        match input.pick(5) {
            0 => t.version = t.version.wrapping_add(1),
            1 => t.epoch ^= 1 << input.pick(64),
            2 => std::mem::swap(&mut t.primary_nonce, &mut t.follower_nonce),
            3 => t.primary_id.push('x'),
            _ => t.follower_nonce[input.pick(NONCE_LEN)] ^= 1 << input.pick(8),
        }
        t
    }
}

/// What a peer's bytes on one connection said, as the oracle reads them: the replica decodes its
/// own copy, and this copy tells the harness which messages the replica was given (to follow
/// each handshake) and whether a decoder error must end the connection.
#[derive(Debug)]
pub(super) struct PeerStream {
    /// `None` once the stream ended with a decoder error: later bytes say nothing.
    decoder: Option<FrameDecoder>,
}

/// What one piece of a peer's stream delivered.
#[derive(Debug, Default)]
pub(super) struct Delivered {
    /// Whole messages, in order.
    pub(super) msgs: Vec<Msg>,
    /// The decoder error that ended the stream in this piece.
    pub(super) error: Option<FrameError>,
    /// The stream had already ended: the replica reads nothing more from it.
    pub(super) ignored: bool,
}

impl PeerStream {
    pub(super) fn new() -> PeerStream {
        PeerStream {
            decoder: Some(FrameDecoder::new(DEFAULT_MAX_BODY_BYTES)),
        }
    }

    /// Every whole message `bytes` complete, then the first error, which ends the stream.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Delivered {
        let Some(d) = self.decoder.as_mut() else {
            return Delivered {
                ignored: true,
                ..Delivered::default()
            };
        };
        d.push(bytes);
        let mut said = Delivered::default();
        // Every frame takes at least a header off the buffer, so the bytes bound this loop.
        loop {
            match d
                .next_frame()
                .and_then(|f| f.map(|f| Msg::decode(&f)).transpose())
            {
                Ok(Some(m)) => said.msgs.push(m),
                Ok(None) => return said,
                Err(e) => {
                    self.decoder = None;
                    said.error = Some(e);
                    return said;
                }
            }
        }
    }
}

pub(super) fn header_crc(encoded: &[u8]) -> u32 {
    u32::from_le_bytes(
        encoded[4..8]
            .try_into()
            .expect("a record header holds a CRC"),
    )
}

pub(super) fn header_epoch(encoded: &[u8]) -> Epoch {
    Epoch(u64::from_le_bytes(
        encoded[16..24]
            .try_into()
            .expect("a record header holds an epoch"),
    ))
}

pub(super) fn follower_config(auto_apply: bool) -> FollowerConfig {
    FollowerConfig {
        cluster_id: CLUSTER.into(),
        node_id: FOLLOWER_ID.into(),
        key: cluster_key().into(),
        timeouts: Timeouts::default(),
        auto_apply,
    }
}

pub(super) fn primary_config(epoch: Epoch, quorum: bool, policy: QuorumPolicy) -> PrimaryConfig {
    PrimaryConfig {
        cluster_id: CLUSTER.into(),
        node_id: PRIMARY_ID.into(),
        key: cluster_key().into(),
        epoch,
        followers: vec![FollowerLink {
            name: FOLLOWER_ID.into(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 9)),
            sync: true,
        }],
        quorum: quorum.then(|| "ANY 1 (f1)".parse().expect("a valid quorum")),
        policy,
        timeouts: Timeouts::default(),
        backoff: BackoffConfig::default(),
        breaker: BreakerConfig::default(),
        max_inflight_bytes: MAX_INFLIGHT_BYTES,
        catch_up_chunk_bytes: CATCH_UP_CHUNK_BYTES,
        catch_up_pacing: None,
        max_retained_bytes: None,
        failover: false,
    }
}
