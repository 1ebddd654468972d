//! Mutual authentication of a replication connection: HMAC-SHA256 challenge-response over a
//! pre-shared cluster key; and the proofs that election messages (vote requests and their
//! answers) come from a member of the cluster.
//!
//! Each side contributes a fresh random nonce; both then prove knowledge of the [`ClusterKey`]
//! by sending an HMAC over the whole handshake [`Transcript`] (both nonces, both node ids, the
//! cluster id, the protocol version and the epoch). Because the transcript holds the peer's
//! fresh nonce, a recorded proof is useless on another connection; because the role is part of
//! the MAC input, the primary's proof can never be reflected back as the follower's (or the
//! other way round).
//!
//! This module owns the key (never printing it) and the MAC computation. It is pure: the key
//! file is read, and nonces' randomness drawn, by the node (`node::load_key`, the replica's
//! seeded nonce source).
//!
//! # MAC input layout
//!
//! The MAC is `HMAC-SHA256(key, input)`, 32 bytes. `input` is a sequence of items, each written
//! as its length in bytes (u32, little-endian) followed by the bytes themselves. Integers are
//! encoded as fixed-width little-endian bytes (so their length prefix is constant), strings as
//! their UTF-8 bytes. Every item is length-prefixed, so no two different transcripts (or roles)
//! produce the same input.
//!
//! | # | item             | length prefix (u32 LE) | bytes                                      |
//! |---|------------------|------------------------|--------------------------------------------|
//! | 1 | domain tag       | 15                     | ASCII `logship-auth-v1`                    |
//! | 2 | role tag         | 7 or 8                 | ASCII `primary` or `follower` (the prover) |
//! | 3 | `version`        | 2                      | u16 LE                                     |
//! | 4 | `cluster_id`     | byte length            | UTF-8                                      |
//! | 5 | `primary_id`     | byte length            | UTF-8                                      |
//! | 6 | `follower_id`    | byte length            | UTF-8                                      |
//! | 7 | `epoch`          | 8                      | u64 LE                                     |
//! | 8 | `primary_nonce`  | 32                     | the primary's nonce                        |
//! | 9 | `follower_nonce` | 32                     | the follower's nonce                       |
//!
//! # Vote proofs
//!
//! A vote request and its answer carry proofs of their own ([`prove_vote_request`],
//! [`prove_vote_response`]), built the same way (length-prefixed items) under their own domain
//! tags, so that no vote proof verifies as a handshake proof, nor a request's as an answer's.
//! The answer's input holds the request's nonce: a recorded answer does not answer another
//! request.
//!
//! | # | request item  | length prefix | bytes                          |
//! |---|---------------|---------------|--------------------------------|
//! | 1 | domain tag    | 23            | ASCII `logship-vote-request-v1` |
//! | 2 | `cluster_id`  | byte length   | UTF-8                          |
//! | 3 | `candidate`   | byte length   | UTF-8                          |
//! | 4 | `epoch`       | 8             | u64 LE                         |
//! | 5 | `last_epoch`  | 8             | u64 LE                         |
//! | 6 | `last_lsn`    | 8             | u64 LE                         |
//! | 7 | `pre_vote`    | 1             | 0 or 1                         |
//! | 8 | `transfer`    | 1             | 0 or 1                         |
//! | 9 | `nonce`       | 32            | the candidate's nonce          |
//!
//! | # | answer item     | length prefix | bytes                           |
//! |---|-----------------|---------------|---------------------------------|
//! | 1 | domain tag      | 24            | ASCII `logship-vote-response-v1` |
//! | 2 | `cluster_id`    | byte length   | UTF-8                           |
//! | 3 | `candidate`     | byte length   | UTF-8                           |
//! | 4 | `voter`         | byte length   | UTF-8                           |
//! | 5 | `epoch`         | 8             | u64 LE                          |
//! | 6 | `pre_vote`      | 1             | 0 or 1                          |
//! | 7 | `granted`       | 1             | 0 or 1                          |
//! | 8 | `request_nonce` | 32            | the request's nonce             |
//!
//! # The key file
//!
//! The key file holds a [`KeyRing`]: one key per line, as text (by convention 64 hex
//! characters from [`generate_key_text`](crate::node::generate_key_text)); blank lines and
//! lines starting with `#` are skipped. Whitespace around each key is trimmed; the remaining
//! bytes, as they are, are the HMAC key, and there must be at least [`MIN_KEY_BYTES`] of them.
//! The first key is the current one (this node proves with it); every key of the ring is
//! accepted in a peer's proof, which is how a key is rotated without downtime
//! (docs/operations.md). A file of one key is a ring of one.
//!
//! What this module does not do: framing, timeouts, or deciding what to do after a failed
//! verification (the handshake and the node driver own those). The key bytes are overwritten on
//! drop as a best effort only; copies made by the OS or the allocator are out of reach.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of each side's nonce, in bytes.
pub const NONCE_LEN: usize = 32;
/// Length of a proof (an HMAC-SHA256 tag), in bytes.
pub const MAC_LEN: usize = 32;
/// The shortest accepted cluster key, in bytes (128 bits).
pub const MIN_KEY_BYTES: usize = 16;

/// Domain-separation tag: the first item of every MAC input. A new layout gets a new tag.
const DOMAIN_TAG: &[u8] = b"logship-auth-v1";
/// Role tag of a proof made by the primary.
const PRIMARY_TAG: &[u8] = b"primary";
/// Role tag of a proof made by the follower.
const FOLLOWER_TAG: &[u8] = b"follower";
/// Domain-separation tag of a vote request's proof (a handshake proof's tag differs).
const VOTE_REQUEST_TAG: &[u8] = b"logship-vote-request-v1";
/// Domain-separation tag of a vote answer's proof.
const VOTE_RESPONSE_TAG: &[u8] = b"logship-vote-response-v1";
/// The largest key file read; anything longer is not a key file (e.g. a path to a device).
pub const MAX_KEY_FILE_BYTES: usize = 64 * 1024;

pub(super) type HmacSha256 = Hmac<Sha256>;

/// Why a cluster key could not be loaded or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read cluster key file {path:?}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The key is shorter than [`MIN_KEY_BYTES`].
    #[error("cluster key{} is {len} bytes; at least {min} are required", describe_path(.path))]
    TooShort {
        /// The key file, when the key came from one.
        path: Option<PathBuf>,
        /// The key's length in bytes (after trimming).
        len: usize,
        /// The minimum, [`MIN_KEY_BYTES`].
        min: usize,
    },
    /// The key is empty (or, from a file, only whitespace).
    #[error("cluster key{} is empty", describe_path(.path))]
    Empty {
        /// The key file, when the key came from one.
        path: Option<PathBuf>,
    },
    /// The key file holds more keys than [`MAX_RING_KEYS`].
    #[error("cluster key ring{} holds {count} keys; at most {max} are allowed", describe_path(.path))]
    TooManyKeys {
        /// The key file, when the ring came from one.
        path: Option<PathBuf>,
        /// The keys found.
        count: usize,
        /// The limit, [`MAX_RING_KEYS`].
        max: usize,
    },
    /// The key file is longer than [`MAX_KEY_FILE_BYTES`].
    #[error("cluster key file {path:?} is longer than {max} bytes")]
    FileTooLong {
        /// The key file.
        path: PathBuf,
        /// The limit, [`MAX_KEY_FILE_BYTES`].
        max: usize,
    },
}

fn describe_path(path: &Option<PathBuf>) -> String {
    match path {
        Some(path) => format!(" in {path:?}"),
        None => String::new(),
    }
}

/// The pre-shared cluster key. `Debug` never shows the bytes.
#[derive(Clone)]
pub struct ClusterKey {
    bytes: Vec<u8>,
}

impl ClusterKey {
    /// Accepts `bytes` as the key, as they are (no trimming).
    ///
    /// # Errors
    /// [`KeyError::Empty`] for no bytes, [`KeyError::TooShort`] for fewer than
    /// [`MIN_KEY_BYTES`]; both with `path: None`.
    pub fn from_bytes(bytes: &[u8]) -> Result<ClusterKey, KeyError> {
        Self::checked(bytes, None)
    }

    /// Accepts `bytes`, read from the key file at `path`, as the key (the key file's reader
    /// is the node's: `node::load_key`).
    ///
    /// # Errors
    /// [`KeyError::Empty`] or [`KeyError::TooShort`], carrying the path.
    pub fn from_file_bytes(bytes: &[u8], path: &Path) -> Result<ClusterKey, KeyError> {
        Self::checked(bytes, Some(path))
    }

    fn checked(bytes: &[u8], path: Option<&Path>) -> Result<ClusterKey, KeyError> {
        let path = || path.map(Path::to_path_buf);
        if bytes.is_empty() {
            return Err(KeyError::Empty { path: path() });
        }
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                path: path(),
                len: bytes.len(),
                min: MIN_KEY_BYTES,
            });
        }
        Ok(ClusterKey {
            bytes: bytes.to_vec(),
        })
    }

    pub(super) fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.bytes).expect("HMAC-SHA256 accepts keys of any length")
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

impl Drop for ClusterKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// The keys a node holds: the first is the current key, which this node proves with; every
/// key is accepted when verifying a peer's proof. A rotation moves a new key through the ring
/// (docs/operations.md), so at every moment two nodes share a key one proves with and the other
/// accepts. `Debug` shows the number of keys, never their bytes.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<ClusterKey>,
}

/// The most keys a ring holds (a rotation needs two; a few more leave room for an operator's
/// overlap of two rotations).
pub const MAX_RING_KEYS: usize = 8;

impl KeyRing {
    /// A ring of `keys`, the first current.
    ///
    /// # Errors
    /// [`KeyError::Empty`] for no key, [`KeyError::TooManyKeys`] past [`MAX_RING_KEYS`]; both
    /// with `path: None`.
    pub fn new(keys: Vec<ClusterKey>) -> Result<KeyRing, KeyError> {
        Self::checked(keys, None)
    }

    pub(crate) fn checked(keys: Vec<ClusterKey>, path: Option<&Path>) -> Result<KeyRing, KeyError> {
        let path = || path.map(Path::to_path_buf);
        if keys.is_empty() {
            return Err(KeyError::Empty { path: path() });
        }
        if keys.len() > MAX_RING_KEYS {
            return Err(KeyError::TooManyKeys {
                path: path(),
                count: keys.len(),
                max: MAX_RING_KEYS,
            });
        }
        Ok(KeyRing { keys })
    }

    /// Parses the text of a key file read from `path` (the reader is the node's:
    /// `node::load_key_ring`): one key per line, blank lines and `#` comments skipped, each key
    /// trimmed of surrounding whitespace.
    ///
    /// # Errors
    /// [`KeyError::Empty`] when no line holds a key, [`KeyError::TooShort`] for a short key,
    /// [`KeyError::TooManyKeys`]; all carrying the path.
    pub fn from_file_bytes(bytes: &[u8], path: &Path) -> Result<KeyRing, KeyError> {
        let keys = (bytes.split(|&b| b == b'\n'))
            .map(<[u8]>::trim_ascii)
            .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
            .map(|line| ClusterKey::from_file_bytes(line, path))
            .collect::<Result<Vec<_>, _>>()?;
        Self::checked(keys, Some(path))
    }

    /// The key this node proves with.
    pub fn current(&self) -> &ClusterKey {
        &self.keys[0]
    }

    /// How many keys the ring holds (at least one).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always `false`: a ring holds at least one key.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `check` accepts the proof under some key of the ring. Every key is tried, even
    /// after one matched, so the time taken does not tell which key did.
    pub fn accepts(&self, check: impl Fn(&ClusterKey) -> bool) -> bool {
        self.keys.iter().fold(false, |ok, key| check(key) | ok)
    }
}

impl From<ClusterKey> for KeyRing {
    fn from(key: ClusterKey) -> KeyRing {
        KeyRing { keys: vec![key] }
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRing({} keys, <redacted>)", self.keys.len())
    }
}

/// Overwrites secret bytes; `black_box` keeps the compiler from dropping the dead store.
pub(crate) fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

/// Which side of the handshake made a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The node sending the log.
    Primary,
    /// The node receiving the log.
    Follower,
}

impl Role {
    fn tag(self) -> &'static [u8] {
        match self {
            Role::Primary => PRIMARY_TAG,
            Role::Follower => FOLLOWER_TAG,
        }
    }
}

/// Everything a proof binds: the handshake as both sides saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transcript<'a> {
    /// The protocol version both sides agreed on.
    pub version: u16,
    /// The cluster's id, so a key shared by two clusters cannot splice them.
    pub cluster_id: &'a str,
    /// The primary's node id.
    pub primary_id: &'a str,
    /// The follower's node id.
    pub follower_id: &'a str,
    /// The primary's epoch.
    pub epoch: u64,
    /// The nonce the primary sent.
    pub primary_nonce: &'a [u8; NONCE_LEN],
    /// The nonce the follower sent.
    pub follower_nonce: &'a [u8; NONCE_LEN],
}

/// Feeds one length-prefixed item into the MAC.
///
/// # Panics
/// If an item is 4 GiB or longer; ids that long never come off the wire.
pub(super) fn item(mac: &mut HmacSha256, bytes: &[u8]) {
    let Ok(len) = u32::try_from(bytes.len()) else {
        panic!("auth item too long: {} bytes", bytes.len());
    };
    mac.update(&len.to_le_bytes());
    mac.update(bytes);
}

fn keyed_transcript(key: &ClusterKey, role: Role, t: &Transcript<'_>) -> HmacSha256 {
    let mut mac = key.mac();
    item(&mut mac, DOMAIN_TAG);
    item(&mut mac, role.tag());
    item(&mut mac, &t.version.to_le_bytes());
    item(&mut mac, t.cluster_id.as_bytes());
    item(&mut mac, t.primary_id.as_bytes());
    item(&mut mac, t.follower_id.as_bytes());
    item(&mut mac, &t.epoch.to_le_bytes());
    item(&mut mac, t.primary_nonce);
    item(&mut mac, t.follower_nonce);
    mac
}

/// The proof that `role` knows `key`, bound to the transcript `t` (layout in the module doc).
///
/// # Panics
/// If an id is 4 GiB or longer.
pub fn prove(key: &ClusterKey, role: Role, t: &Transcript<'_>) -> [u8; MAC_LEN] {
    keyed_transcript(key, role, t)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `mac` is `role`'s proof over `t` under `key`. The comparison takes the same time
/// wherever the bytes differ; a `mac` of the wrong length is rejected.
///
/// # Panics
/// If an id is 4 GiB or longer.
pub fn verify(key: &ClusterKey, role: Role, t: &Transcript<'_>, mac: &[u8]) -> bool {
    keyed_transcript(key, role, t).verify_slice(mac).is_ok()
}

/// The fields a vote request's proof covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteRequestTranscript<'a> {
    /// The cluster's id.
    pub cluster_id: &'a str,
    /// The candidate's node id.
    pub candidate: &'a str,
    /// The epoch asked for.
    pub epoch: u64,
    /// Epoch of the candidate's last record.
    pub last_epoch: u64,
    /// The candidate's last LSN.
    pub last_lsn: u64,
    /// A pre-vote.
    pub pre_vote: bool,
    /// A planned switchover.
    pub transfer: bool,
    /// The candidate's nonce.
    pub nonce: &'a [u8; NONCE_LEN],
}

/// The fields a vote answer's proof covers (the request's nonce binds it to that request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteResponseTranscript<'a> {
    /// The cluster's id.
    pub cluster_id: &'a str,
    /// The candidate's node id (the request's).
    pub candidate: &'a str,
    /// The voter's node id.
    pub voter: &'a str,
    /// The voter's current epoch.
    pub epoch: u64,
    /// The answer is to a pre-vote.
    pub pre_vote: bool,
    /// The vote is granted.
    pub granted: bool,
    /// The nonce of the request answered.
    pub request_nonce: &'a [u8; NONCE_LEN],
}

fn keyed_vote_request(key: &ClusterKey, t: &VoteRequestTranscript<'_>) -> HmacSha256 {
    let mut mac = key.mac();
    item(&mut mac, VOTE_REQUEST_TAG);
    item(&mut mac, t.cluster_id.as_bytes());
    item(&mut mac, t.candidate.as_bytes());
    item(&mut mac, &t.epoch.to_le_bytes());
    item(&mut mac, &t.last_epoch.to_le_bytes());
    item(&mut mac, &t.last_lsn.to_le_bytes());
    item(&mut mac, &[u8::from(t.pre_vote)]);
    item(&mut mac, &[u8::from(t.transfer)]);
    item(&mut mac, t.nonce);
    mac
}

fn keyed_vote_response(key: &ClusterKey, t: &VoteResponseTranscript<'_>) -> HmacSha256 {
    let mut mac = key.mac();
    item(&mut mac, VOTE_RESPONSE_TAG);
    item(&mut mac, t.cluster_id.as_bytes());
    item(&mut mac, t.candidate.as_bytes());
    item(&mut mac, t.voter.as_bytes());
    item(&mut mac, &t.epoch.to_le_bytes());
    item(&mut mac, &[u8::from(t.pre_vote)]);
    item(&mut mac, &[u8::from(t.granted)]);
    item(&mut mac, t.request_nonce);
    mac
}

/// The candidate's proof of `key` over its vote request `t` (layout in the module doc).
///
/// # Panics
/// If an id is 4 GiB or longer.
pub fn prove_vote_request(key: &ClusterKey, t: &VoteRequestTranscript<'_>) -> [u8; MAC_LEN] {
    keyed_vote_request(key, t).finalize().into_bytes().into()
}

/// Whether `mac` is the proof of `key` over the vote request `t`, compared in constant time; a
/// `mac` of the wrong length is rejected.
///
/// # Panics
/// If an id is 4 GiB or longer.
pub fn verify_vote_request(key: &ClusterKey, t: &VoteRequestTranscript<'_>, mac: &[u8]) -> bool {
    keyed_vote_request(key, t).verify_slice(mac).is_ok()
}

/// The voter's proof of `key` over its answer `t` (layout in the module doc).
///
/// # Panics
/// If an id is 4 GiB or longer.
pub fn prove_vote_response(key: &ClusterKey, t: &VoteResponseTranscript<'_>) -> [u8; MAC_LEN] {
    keyed_vote_response(key, t).finalize().into_bytes().into()
}

/// Whether `mac` is the proof of `key` over the vote answer `t`, compared in constant time; a
/// `mac` of the wrong length is rejected.
///
/// # Panics
/// If an id is 4 GiB or longer.
pub fn verify_vote_response(key: &ClusterKey, t: &VoteResponseTranscript<'_>, mac: &[u8]) -> bool {
    keyed_vote_response(key, t).verify_slice(mac).is_ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const PRIMARY_NONCE: [u8; NONCE_LEN] = [0x11; NONCE_LEN];
    const FOLLOWER_NONCE: [u8; NONCE_LEN] = [0x22; NONCE_LEN];
    const OTHER_NONCE: [u8; NONCE_LEN] = [0x33; NONCE_LEN];

    pub(crate) fn key(text: &str) -> ClusterKey {
        ClusterKey::from_bytes(text.as_bytes()).expect("test key is long enough")
    }

    pub(crate) fn transcript() -> Transcript<'static> {
        Transcript {
            version: 1,
            cluster_id: "c1",
            primary_id: "node-a",
            follower_id: "node-b",
            epoch: 7,
            primary_nonce: &PRIMARY_NONCE,
            follower_nonce: &FOLLOWER_NONCE,
        }
    }

    #[test]
    fn round_trip_for_both_roles() {
        let k = key("0123456789abcdef0123");
        let t = transcript();
        for role in [Role::Primary, Role::Follower] {
            let mac = prove(&k, role, &t);
            assert!(verify(&k, role, &t, &mac), "{role:?}");
        }
    }

    #[test]
    fn wrong_key_fails() {
        let t = transcript();
        let mac = prove(&key("0123456789abcdef"), Role::Primary, &t);
        assert!(!verify(&key("0123456789abcdeF"), Role::Primary, &t, &mac));
    }

    #[test]
    fn proof_of_one_role_does_not_verify_as_the_other() {
        let k = key("0123456789abcdef");
        let t = transcript();
        let primary = prove(&k, Role::Primary, &t);
        let follower = prove(&k, Role::Follower, &t);
        assert_ne!(primary, follower);
        assert!(!verify(&k, Role::Follower, &t, &primary));
        assert!(!verify(&k, Role::Primary, &t, &follower));
    }

    #[test]
    fn changing_any_transcript_field_fails() {
        let k = key("0123456789abcdef");
        let base = transcript();
        let mac = prove(&k, Role::Follower, &base);
        let cases: [(&str, Transcript<'_>); 9] = [
            ("version", Transcript { version: 2, ..base }),
            (
                "cluster_id",
                Transcript {
                    cluster_id: "c2",
                    ..base
                },
            ),
            (
                "primary_id",
                Transcript {
                    primary_id: "node-x",
                    ..base
                },
            ),
            (
                "follower_id",
                Transcript {
                    follower_id: "node-x",
                    ..base
                },
            ),
            ("epoch", Transcript { epoch: 8, ..base }),
            (
                "primary_nonce",
                Transcript {
                    primary_nonce: &OTHER_NONCE,
                    ..base
                },
            ),
            (
                "follower_nonce",
                Transcript {
                    follower_nonce: &OTHER_NONCE,
                    ..base
                },
            ),
            (
                "nonces swapped",
                Transcript {
                    primary_nonce: &FOLLOWER_NONCE,
                    follower_nonce: &PRIMARY_NONCE,
                    ..base
                },
            ),
            // Moving a byte across the boundary of two adjacent strings must change the input.
            (
                "id boundary",
                Transcript {
                    primary_id: "node-an",
                    follower_id: "ode-b",
                    ..base
                },
            ),
        ];
        for (name, changed) in cases {
            assert_ne!(changed, base, "{name}: case does not change anything");
            assert!(!verify(&k, Role::Follower, &changed, &mac), "{name}");
        }
    }

    #[test]
    fn truncated_or_extended_mac_fails() {
        let k = key("0123456789abcdef");
        let t = transcript();
        let mac = prove(&k, Role::Primary, &t);
        let mut longer = mac.to_vec();
        longer.push(0);
        for (name, candidate) in [
            ("truncated", &mac[..MAC_LEN - 1]),
            ("extended", &longer[..]),
            ("empty", &[][..]),
        ] {
            assert!(!verify(&k, Role::Primary, &t, candidate), "{name}");
        }
    }

    /// Pins the documented layout: the input is built here by hand, byte by byte.
    #[test]
    fn known_answer() {
        let key_bytes = b"logship-test-key-0123456789";
        let t = transcript();
        let mut input = Vec::new();
        input.extend_from_slice(&[15, 0, 0, 0]);
        input.extend_from_slice(b"logship-auth-v1");
        input.extend_from_slice(&[8, 0, 0, 0]);
        input.extend_from_slice(b"follower");
        input.extend_from_slice(&[2, 0, 0, 0, 1, 0]);
        input.extend_from_slice(&[2, 0, 0, 0]);
        input.extend_from_slice(b"c1");
        input.extend_from_slice(&[6, 0, 0, 0]);
        input.extend_from_slice(b"node-a");
        input.extend_from_slice(&[6, 0, 0, 0]);
        input.extend_from_slice(b"node-b");
        input.extend_from_slice(&[8, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
        input.extend_from_slice(&[32, 0, 0, 0]);
        input.extend_from_slice(&[0x11; 32]);
        input.extend_from_slice(&[32, 0, 0, 0]);
        input.extend_from_slice(&[0x22; 32]);

        let mut by_hand = HmacSha256::new_from_slice(key_bytes).expect("any key length");
        by_hand.update(&input);
        let expected: [u8; MAC_LEN] = by_hand.finalize().into_bytes().into();

        let k = ClusterKey::from_bytes(key_bytes).expect("long enough");
        assert_eq!(prove(&k, Role::Follower, &t), expected);
        assert_eq!(hex(&expected), KNOWN_FOLLOWER_MAC_HEX);
    }

    /// HMAC-SHA256 of the input in `known_answer` (cross-checked with Python's `hmac` module);
    /// a change here is a wire format change.
    const KNOWN_FOLLOWER_MAC_HEX: &str =
        "b2d6b25f458ae13375ad4356fbf193a577a10261e19a9ba3c1bce96911554dd3";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    const CANDIDATE_NONCE: [u8; NONCE_LEN] = [0x44; NONCE_LEN];

    fn vote_request() -> VoteRequestTranscript<'static> {
        VoteRequestTranscript {
            cluster_id: "c1",
            candidate: "node-a",
            epoch: 8,
            last_epoch: 7,
            last_lsn: 1234,
            pre_vote: true,
            transfer: false,
            nonce: &CANDIDATE_NONCE,
        }
    }

    fn vote_response() -> VoteResponseTranscript<'static> {
        VoteResponseTranscript {
            cluster_id: "c1",
            candidate: "node-a",
            voter: "node-b",
            epoch: 8,
            pre_vote: true,
            granted: true,
            request_nonce: &CANDIDATE_NONCE,
        }
    }

    #[test]
    fn vote_proofs_round_trip() {
        let k = key("0123456789abcdef0123");
        let (req, resp) = (vote_request(), vote_response());
        assert!(verify_vote_request(&k, &req, &prove_vote_request(&k, &req)));
        assert!(verify_vote_response(
            &k,
            &resp,
            &prove_vote_response(&k, &resp)
        ));
        let other = key("0123456789abcdef0124");
        assert!(!verify_vote_request(
            &other,
            &req,
            &prove_vote_request(&k, &req)
        ));
        assert!(!verify_vote_response(
            &other,
            &resp,
            &prove_vote_response(&k, &resp)
        ));
    }

    fn vote_request_changes(
        base: VoteRequestTranscript<'_>,
    ) -> Vec<(&str, VoteRequestTranscript<'_>)> {
        type T<'a> = VoteRequestTranscript<'a>;
        vec![
            (
                "cluster_id",
                T {
                    cluster_id: "c2",
                    ..base
                },
            ),
            (
                "candidate",
                T {
                    candidate: "node-x",
                    ..base
                },
            ),
            ("epoch", T { epoch: 9, ..base }),
            (
                "last_epoch",
                T {
                    last_epoch: 6,
                    ..base
                },
            ),
            (
                "last_lsn",
                T {
                    last_lsn: 1235,
                    ..base
                },
            ),
            (
                "pre_vote",
                T {
                    pre_vote: false,
                    ..base
                },
            ),
            (
                "transfer",
                T {
                    transfer: true,
                    ..base
                },
            ),
            (
                "nonce",
                T {
                    nonce: &OTHER_NONCE,
                    ..base
                },
            ),
            // Moving a byte across the boundary of two adjacent strings must change the input.
            (
                "id boundary",
                T {
                    cluster_id: "c1n",
                    candidate: "ode-a",
                    ..base
                },
            ),
        ]
    }

    #[test]
    fn changing_any_vote_request_field_fails() {
        let k = key("0123456789abcdef");
        let base = vote_request();
        let mac = prove_vote_request(&k, &base);
        for (name, changed) in vote_request_changes(base) {
            assert_ne!(changed, base, "{name}: case does not change anything");
            assert!(!verify_vote_request(&k, &changed, &mac), "{name}");
        }
        assert!(
            !verify_vote_request(&k, &base, &mac[..MAC_LEN - 1]),
            "truncated"
        );
    }

    fn vote_response_changes(
        base: VoteResponseTranscript<'_>,
    ) -> Vec<(&str, VoteResponseTranscript<'_>)> {
        type T<'a> = VoteResponseTranscript<'a>;
        vec![
            (
                "cluster_id",
                T {
                    cluster_id: "c2",
                    ..base
                },
            ),
            (
                "candidate",
                T {
                    candidate: "node-x",
                    ..base
                },
            ),
            (
                "voter",
                T {
                    voter: "node-x",
                    ..base
                },
            ),
            ("epoch", T { epoch: 9, ..base }),
            (
                "pre_vote",
                T {
                    pre_vote: false,
                    ..base
                },
            ),
            (
                "granted",
                T {
                    granted: false,
                    ..base
                },
            ),
            (
                "request_nonce",
                T {
                    request_nonce: &OTHER_NONCE,
                    ..base
                },
            ),
            (
                "ids swapped",
                T {
                    candidate: "node-b",
                    voter: "node-a",
                    ..base
                },
            ),
            (
                "id boundary",
                T {
                    candidate: "node-an",
                    voter: "ode-b",
                    ..base
                },
            ),
        ]
    }

    #[test]
    fn changing_any_vote_response_field_fails() {
        let k = key("0123456789abcdef");
        let base = vote_response();
        let mac = prove_vote_response(&k, &base);
        for (name, changed) in vote_response_changes(base) {
            assert_ne!(changed, base, "{name}: case does not change anything");
            assert!(!verify_vote_response(&k, &changed, &mac), "{name}");
        }
        assert!(!verify_vote_response(&k, &base, &[]), "empty");
    }

    #[test]
    fn proofs_of_one_kind_do_not_verify_as_another() {
        let k = key("0123456789abcdef");
        let (req, resp, hs) = (vote_request(), vote_response(), transcript());
        let req_mac = prove_vote_request(&k, &req);
        let resp_mac = prove_vote_response(&k, &resp);
        assert!(!verify_vote_response(&k, &resp, &req_mac));
        assert!(!verify_vote_request(&k, &req, &resp_mac));
        for role in [Role::Primary, Role::Follower] {
            let hs_mac = prove(&k, role, &hs);
            assert!(!verify(&k, role, &hs, &req_mac), "{role:?}");
            assert!(!verify(&k, role, &hs, &resp_mac), "{role:?}");
            assert!(!verify_vote_request(&k, &req, &hs_mac), "{role:?}");
            assert!(!verify_vote_response(&k, &resp, &hs_mac), "{role:?}");
        }
        let tags = [DOMAIN_TAG, VOTE_REQUEST_TAG, VOTE_RESPONSE_TAG];
        for (i, a) in tags.iter().enumerate() {
            assert!(tags[i + 1..].iter().all(|b| a != b), "tags must differ");
        }
    }

    /// Pins the documented vote layouts (cross-checked with Python's `hmac` module, as in
    /// docs/protocol.md); a change here is a wire format change.
    #[test]
    fn vote_known_answers() {
        let k = ClusterKey::from_bytes(b"logship-test-key-0123456789").expect("long enough");
        assert_eq!(
            hex(&prove_vote_request(&k, &vote_request())),
            "716da1ec880c82ba48c775475c336d708061a5a420f114ddad46b90eccab7a03"
        );
        assert_eq!(
            hex(&prove_vote_response(&k, &vote_response())),
            "6a9da541cdef959c7a24a572271b7de20455644e59c35bfe773beb1b8da0e0cd"
        );
    }

    #[test]
    fn a_ring_parses_one_key_a_line_and_accepts_any() {
        let path = Path::new("cluster.key");
        let text = b"# rotation step 1\n\n  new-key-0123456789abcdef \r\n#old below\nold-key-0123456789abcdef\n";
        let ring = KeyRing::from_file_bytes(text, path).expect("a ring of two");
        assert_eq!(ring.len(), 2);
        let t = transcript();
        let (new, old) = (
            key("new-key-0123456789abcdef"),
            key("old-key-0123456789abcdef"),
        );
        let by_current = prove(ring.current(), Role::Primary, &t);
        assert_eq!(
            by_current,
            prove(&new, Role::Primary, &t),
            "the first line proves"
        );
        for k in [&new, &old] {
            let mac = prove(k, Role::Follower, &t);
            assert!(ring.accepts(|rk| verify(rk, Role::Follower, &t, &mac)));
        }
        let stranger = prove(&key("another-key-0123456789ab"), Role::Follower, &t);
        assert!(!ring.accepts(|rk| verify(rk, Role::Follower, &t, &stranger)));
        assert_eq!(format!("{ring:?}"), "KeyRing(2 keys, <redacted>)");
    }

    #[test]
    fn a_bad_ring_is_a_typed_error() {
        let path = Path::new("cluster.key");
        let only_comments = KeyRing::from_file_bytes(b"# nothing\n\n   \n", path);
        assert!(matches!(
            only_comments,
            Err(KeyError::Empty { path: Some(_) })
        ));
        let short_second = KeyRing::from_file_bytes(b"0123456789abcdef0123\nshort\n", path);
        assert!(matches!(
            short_second,
            Err(KeyError::TooShort {
                len: 5,
                min: MIN_KEY_BYTES,
                ..
            })
        ));
        let many: String = (0..=MAX_RING_KEYS)
            .map(|i| format!("key-number-{i:08}\n"))
            .collect();
        assert!(matches!(
            KeyRing::from_file_bytes(many.as_bytes(), path),
            Err(KeyError::TooManyKeys { count, max: MAX_RING_KEYS, .. }) if count == MAX_RING_KEYS + 1
        ));
        assert!(matches!(
            KeyRing::new(Vec::new()),
            Err(KeyError::Empty { path: None })
        ));
    }

    #[test]
    fn debug_redacts_the_key() {
        let k = key("super-secret-key-bytes");
        assert_eq!(format!("{k:?}"), "ClusterKey(<redacted>)");
        assert_eq!(format!("{:?}", k.clone()), "ClusterKey(<redacted>)");
    }

    #[test]
    fn from_bytes_checks_length() {
        assert!(matches!(
            ClusterKey::from_bytes(b""),
            Err(KeyError::Empty { path: None })
        ));
        assert!(matches!(
            ClusterKey::from_bytes(&[7; MIN_KEY_BYTES - 1]),
            Err(KeyError::TooShort {
                path: None,
                len: 15,
                min: MIN_KEY_BYTES
            })
        ));
        assert!(ClusterKey::from_bytes(&[7; MIN_KEY_BYTES]).is_ok());
    }
}
