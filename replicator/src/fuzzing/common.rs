//! What both ends of every harness share: the cluster's names and key, the handshake transcript
//! as the harness saw it, the node driver's way of draining a decoder, and the configurations.

use std::net::{Ipv4Addr, SocketAddr};

use logship_engine::Epoch;

use crate::backoff::BackoffConfig;
use crate::breaker::BreakerConfig;
use crate::commit::QuorumPolicy;
use crate::protocol::auth::{self, ClusterKey, Role, Transcript, MAC_LEN, NONCE_LEN};
use crate::protocol::frame::{FrameDecoder, FrameError};
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

/// Frames out of a decoder as the node's driver takes them: every whole message, then the
/// first error (after which the driver drops the decoder and closes the connection).
pub(super) fn drain(d: &mut FrameDecoder) -> (Vec<Msg>, Option<FrameError>) {
    let mut msgs = Vec::new();
    loop {
        match d.next_frame() {
            Ok(Some(f)) => match Msg::decode(&f) {
                Ok(m) => msgs.push(m),
                Err(e) => return (msgs, Some(e)),
            },
            Ok(None) => return (msgs, None),
            Err(e) => return (msgs, Some(e)),
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
        key: cluster_key(),
        timeouts: Timeouts::default(),
        auto_apply,
    }
}

pub(super) fn primary_config(epoch: Epoch, quorum: bool, policy: QuorumPolicy) -> PrimaryConfig {
    PrimaryConfig {
        cluster_id: CLUSTER.into(),
        node_id: PRIMARY_ID.into(),
        key: cluster_key(),
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
        max_retained_bytes: None,
    }
}

/// A nonce the driver would draw: distinct for every connection.
pub(super) fn fresh_nonce(counter: &mut u64, tag: u8) -> [u8; NONCE_LEN] {
    *counter += 1;
    let mut n = [tag; NONCE_LEN];
    n[..8].copy_from_slice(&counter.to_le_bytes());
    n
}
