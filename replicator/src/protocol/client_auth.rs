//! Authenticated clients: the client keys a node accepts, the grants each client holds, and the
//! challenge-response a client completes on the client port before any request.
//!
//! A client holds a name and a key; the node holds, per client name, its grants and a ring of
//! keys (any of them is accepted, so a client key rotates as the cluster key does). The
//! handshake, in frames (docs/protocol.md): the client sends `ClientHello { name,
//! client_nonce }`; the node answers `ClientChallenge { node_nonce, cluster_id }`; the client
//! sends `ClientProof { mac }`, its HMAC over the [`ClientTranscript`]; the node answers
//! `ClientWelcome { grants, mac }` with a proof of its own under the same key (so the client
//! knows the node holds its key), or `ClientRefused { code, message }` and closes. The node's
//! nonce is fresh per connection: a recorded proof is useless on another connection.
//!
//! # MAC input layout
//!
//! As the replication handshake's (`protocol::auth`): length-prefixed items (u32 LE length,
//! then the bytes), under a domain tag of its own, so no client proof verifies as a replication
//! or vote proof.
//!
//! | # | item           | length prefix | bytes                                   |
//! |---|----------------|---------------|-----------------------------------------|
//! | 1 | domain tag     | 22            | ASCII `logship-client-auth-v1`          |
//! | 2 | role tag       | 6 or 4        | ASCII `client` or `node` (the prover)   |
//! | 3 | `cluster_id`   | byte length   | UTF-8, as the node's challenge sent it  |
//! | 4 | `name`         | byte length   | UTF-8, the client's name                |
//! | 5 | `client_nonce` | 32            | the client's nonce                      |
//! | 6 | `node_nonce`   | 32            | the node's nonce                        |
//!
//! # Files
//!
//! The node's client keys file (`[clients] keys_file`) holds one line per key:
//! `<name> <grants> <key>`, fields separated by spaces or tabs; blank lines and lines starting
//! with `#` are skipped. `grants` is a comma list of `append` (appends and batches), `read`
//! (reads) and `admin` (promote); status is answered to any authenticated client. A client may
//! have several lines: its ring, every key accepted; its lines must grant the same. A client's
//! own key file (`--client-key`) holds the first such line, or `<name> <key>`; `logship keygen
//! --client NAME --grants LIST` writes a line that serves as both.
//!
//! Pure: the files are read by the node and the client, the nonces drawn by them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use hmac::Mac;

use super::auth::{item, ClusterKey, HmacSha256, KeyError, MAC_LEN, NONCE_LEN};
use super::msg::MAX_NAME_BYTES;
use super::Msg;

/// Domain-separation tag of the client handshake's proofs.
const CLIENT_DOMAIN_TAG: &[u8] = b"logship-client-auth-v1";
/// Role tag of the client's proof.
const CLIENT_TAG: &[u8] = b"client";
/// Role tag of the node's proof.
const NODE_TAG: &[u8] = b"node";
/// The most key lines a client keys file holds.
pub const MAX_CLIENT_KEY_LINES: usize = 4096;

/// What an authenticated client may ask for. Status is always allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Grants {
    bits: u8,
}

impl Grants {
    /// Nothing but status.
    pub const NONE: Grants = Grants { bits: 0 };
    /// Appends and batches of appends.
    pub const APPEND: Grants = Grants { bits: 1 };
    /// Reads.
    pub const READ: Grants = Grants { bits: 2 };
    /// Promote (planned switchover).
    pub const ADMIN: Grants = Grants { bits: 4 };
    /// Everything (the port without `[clients]`).
    pub const ALL: Grants = Grants { bits: 7 };
    const NAMES: [(Grants, &'static str); 3] = [
        (Grants::APPEND, "append"),
        (Grants::READ, "read"),
        (Grants::ADMIN, "admin"),
    ];

    /// Both sets of grants.
    pub fn union(self, other: Grants) -> Grants {
        Grants {
            bits: self.bits | other.bits,
        }
    }

    /// Whether every grant of `other` is in these.
    pub fn contains(self, other: Grants) -> bool {
        self.bits & other.bits == other.bits
    }

    /// The wire byte.
    pub fn bits(self) -> u8 {
        self.bits
    }

    /// From the wire byte; `None` when it has a bit no grant uses.
    pub fn from_bits(bits: u8) -> Option<Grants> {
        (bits & !Grants::ALL.bits == 0).then_some(Grants { bits })
    }

    /// Parses a comma list (`append,read`).
    ///
    /// # Errors
    /// [`LineError::UnknownGrant`], or [`LineError::NoGrants`] for an empty list.
    pub fn parse(text: &str) -> Result<Grants, LineError> {
        let mut grants = Grants::NONE;
        for word in text.split(',').filter(|w| !w.is_empty()) {
            let (g, _) = (Grants::NAMES.iter())
                .find(|(_, name)| *name == word)
                .ok_or_else(|| LineError::UnknownGrant(word.to_string()))?;
            grants = grants.union(*g);
        }
        if grants == Grants::NONE {
            return Err(LineError::NoGrants);
        }
        Ok(grants)
    }

    /// Whether a client holding these grants may send `request`: status always; appends with
    /// `append`, reads with `read`, promote with `admin`. Other messages are not client
    /// requests (the port closes the connection on them) and are not permitted.
    pub fn permits(self, request: &Msg) -> bool {
        let needed = match request {
            Msg::StatusRequest { .. } => Grants::NONE,
            Msg::AppendRequest { .. } | Msg::AppendBatchRequest { .. } => Grants::APPEND,
            Msg::ReadRequest { .. } => Grants::READ,
            Msg::PromoteRequest { .. } => Grants::ADMIN,
            _ => return false,
        };
        self.contains(needed)
    }
}

impl fmt::Display for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = (Grants::NAMES.iter())
            .filter(|(g, _)| self.contains(*g))
            .map(|(_, name)| *name)
            .collect();
        match names.is_empty() {
            true => f.write_str("status only"),
            false => f.write_str(&names.join(",")),
        }
    }
}

/// Why the node refused a client's handshake; travels in `Msg::ClientRefused`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientRefusal {
    /// The proof failed, or the name is not known (the two are not told apart on the wire:
    /// a stranger learns nothing of which names exist; the node's log tells them apart).
    AuthFailed = 1,
    /// A frame other than the handshake's, or out of order.
    Protocol = 2,
    /// The handshake did not complete within `timeouts.client_request_ms`.
    TimedOut = 3,
}

impl ClientRefusal {
    /// From the wire byte.
    pub fn from_u8(v: u8) -> Option<ClientRefusal> {
        [
            ClientRefusal::AuthFailed,
            ClientRefusal::Protocol,
            ClientRefusal::TimedOut,
        ]
        .into_iter()
        .find(|c| *c as u8 == v)
    }

    /// A short name for logs and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientRefusal::AuthFailed => "auth_failed",
            ClientRefusal::Protocol => "protocol",
            ClientRefusal::TimedOut => "timed_out",
        }
    }
}

/// What is wrong with one line of a client keys file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// Not `<name> <grants> <key>` (or `<name> <key>` in a client's own file).
    #[error("expected `<name> <grants> <key>`, found {found} fields")]
    Fields {
        /// The fields found.
        found: usize,
    },
    /// The name is longer than a name may be on the wire, or not printable ASCII.
    #[error("client name {0:?} is not 1 to 255 printable ASCII characters")]
    BadName(String),
    /// A grant that does not exist.
    #[error("unknown grant {0:?} (append, read, admin)")]
    UnknownGrant(String),
    /// An empty grant list.
    #[error("no grant (append, read, admin)")]
    NoGrants,
    /// The key is unusable.
    #[error(transparent)]
    Key(KeyError),
    /// Two lines of one client grant differently.
    #[error("client {name:?} is granted {first} on an earlier line and {here} here")]
    GrantsDiffer {
        /// The client.
        name: String,
        /// What its first line grants.
        first: Grants,
        /// What this line grants.
        here: Grants,
    },
}

/// Why a client keys file (the node's) or a client's key file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientKeyError {
    /// The file could not be read, or is too long.
    #[error(transparent)]
    File(KeyError),
    /// A line is malformed.
    #[error("client key file {path:?} line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        reason: LineError,
    },
    /// The file holds no key line.
    #[error("client key file {path:?} holds no key line")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// More key lines than [`MAX_CLIENT_KEY_LINES`].
    #[error("client keys file {path:?} holds more than {max} key lines")]
    TooManyLines {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
}

/// The key lines of a file: (line number from 1, fields), blank lines and comments skipped.
fn key_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, Vec<&str>)> + '_ {
    (bytes.split(|&b| b == b'\n').enumerate())
        .map(|(i, line)| (i + 1, line.trim_ascii()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with(b"#"))
        .map(|(n, line)| {
            // Non-UTF-8 bytes make a field no name or grant can match; the key takes them raw.
            let text = std::str::from_utf8(line).unwrap_or("\u{fffd}");
            (n, text.split_ascii_whitespace().collect())
        })
}

fn checked_name(name: &str) -> Result<String, LineError> {
    let printable = name.bytes().all(|b| b.is_ascii_graphic());
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !printable {
        return Err(LineError::BadName(name.to_string()));
    }
    Ok(name.to_string())
}

fn line_key(text: &str, path: &Path) -> Result<ClusterKey, LineError> {
    ClusterKey::from_file_bytes(text.as_bytes(), path).map_err(LineError::Key)
}

/// One client's entry: its grants and its ring.
#[derive(Clone)]
struct Entry {
    grants: Grants,
    keys: Vec<ClusterKey>,
}

/// The clients a node accepts: per name, grants and a ring of keys. `Debug` shows names and
/// grants, never keys.
#[derive(Clone, Default)]
pub struct ClientKeys {
    clients: BTreeMap<String, Entry>,
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (name, e) in &self.clients {
            m.entry(name, &format_args!("{} ({} keys)", e.grants, e.keys.len()));
        }
        m.finish()
    }
}

impl ClientKeys {
    /// Parses the text of a client keys file read from `path` (format in the module doc).
    ///
    /// # Errors
    /// [`ClientKeyError::Line`] naming the first bad line, [`ClientKeyError::Empty`],
    /// [`ClientKeyError::TooManyLines`].
    pub fn from_file_bytes(bytes: &[u8], path: &Path) -> Result<ClientKeys, ClientKeyError> {
        let mut keys = ClientKeys::default();
        let mut count = 0;
        for (line, fields) in key_lines(bytes) {
            count += 1;
            if count > MAX_CLIENT_KEY_LINES {
                let (path, max) = (path.to_path_buf(), MAX_CLIENT_KEY_LINES);
                return Err(ClientKeyError::TooManyLines { path, max });
            }
            let bad = |reason| ClientKeyError::Line {
                path: path.to_path_buf(),
                line,
                reason,
            };
            keys.add_line(&fields, path).map_err(bad)?;
        }
        if keys.clients.is_empty() {
            let path = path.to_path_buf();
            return Err(ClientKeyError::Empty { path });
        }
        Ok(keys)
    }

    fn add_line(&mut self, fields: &[&str], path: &Path) -> Result<(), LineError> {
        let [name, grants, key] = fields else {
            return Err(LineError::Fields {
                found: fields.len(),
            });
        };
        let (name, grants) = (checked_name(name)?, Grants::parse(grants)?);
        let key = line_key(key, path)?;
        match self.clients.get_mut(&name) {
            Some(e) if e.grants != grants => Err(LineError::GrantsDiffer {
                name,
                first: e.grants,
                here: grants,
            }),
            Some(e) => {
                e.keys.push(key);
                Ok(())
            }
            None => {
                let keys = vec![key];
                self.clients.insert(name, Entry { grants, keys });
                Ok(())
            }
        }
    }

    /// How many clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client is known (never, for keys read from a file).
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The grants of client `name`, if it is known.
    pub fn grants(&self, name: &str) -> Option<Grants> {
        self.clients.get(name).map(|e| e.grants)
    }
}

/// A client's own key: its name and the key it proves with. `Debug` never shows the key.
#[derive(Clone)]
pub struct ClientKey {
    name: String,
    key: ClusterKey,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({:?}, <redacted>)", self.name)
    }
}

impl ClientKey {
    /// The key `key` of client `name`.
    ///
    /// # Errors
    /// [`LineError::BadName`].
    pub fn new(name: &str, key: ClusterKey) -> Result<ClientKey, LineError> {
        Ok(ClientKey {
            name: checked_name(name)?,
            key,
        })
    }

    /// Parses a client's key file read from `path`: its first key line, `<name> <key>` or
    /// `<name> <grants> <key>` (the grants are the node's to enforce; here they are only
    /// checked to be well-formed).
    ///
    /// # Errors
    /// [`ClientKeyError::Line`], [`ClientKeyError::Empty`].
    pub fn from_file_bytes(bytes: &[u8], path: &Path) -> Result<ClientKey, ClientKeyError> {
        let Some((line, fields)) = key_lines(bytes).next() else {
            let path = path.to_path_buf();
            return Err(ClientKeyError::Empty { path });
        };
        let parsed = match fields.as_slice() {
            [name, key] => line_key(key, path).and_then(|k| ClientKey::new(name, k)),
            [name, grants, key] => Grants::parse(grants)
                .and_then(|_| line_key(key, path))
                .and_then(|k| ClientKey::new(name, k)),
            other => Err(LineError::Fields { found: other.len() }),
        };
        parsed.map_err(|reason| ClientKeyError::Line {
            path: path.to_path_buf(),
            line,
            reason,
        })
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Everything a client handshake's proofs bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTranscript<'a> {
    /// The cluster id, as the node's challenge sent it.
    pub cluster_id: &'a str,
    /// The client's name.
    pub name: &'a str,
    /// The client's nonce.
    pub client_nonce: &'a [u8; NONCE_LEN],
    /// The node's nonce.
    pub node_nonce: &'a [u8; NONCE_LEN],
}

fn keyed(key: &ClusterKey, role: &[u8], t: &ClientTranscript<'_>) -> HmacSha256 {
    let mut mac = key.mac();
    item(&mut mac, CLIENT_DOMAIN_TAG);
    item(&mut mac, role);
    item(&mut mac, t.cluster_id.as_bytes());
    item(&mut mac, t.name.as_bytes());
    item(&mut mac, t.client_nonce);
    item(&mut mac, t.node_nonce);
    mac
}

fn client_mac(key: &ClusterKey, role: &[u8], t: &ClientTranscript<'_>) -> [u8; MAC_LEN] {
    keyed(key, role, t).finalize().into_bytes().into()
}

/// Whether `mac` is `role`'s proof over `t` under `key`, compared in constant time; a `mac` of
/// the wrong length is rejected.
fn same(key: &ClusterKey, role: &[u8], t: &ClientTranscript<'_>, mac: &[u8]) -> bool {
    keyed(key, role, t).verify_slice(mac).is_ok()
}

/// The client's proof of `key` over `t`.
pub fn prove_client(key: &ClientKey, t: &ClientTranscript<'_>) -> [u8; MAC_LEN] {
    client_mac(&key.key, CLIENT_TAG, t)
}

/// Whether `mac` is the node's proof over `t` under the client's key (checked by the client on
/// `ClientWelcome`).
pub fn verify_node(key: &ClientKey, t: &ClientTranscript<'_>, mac: &[u8]) -> bool {
    same(&key.key, NODE_TAG, t, mac)
}

/// The node's side of one handshake, after the client's hello: the client's name and nonce
/// and the nonce the node drew for this connection.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// The name the client gave.
    pub name: String,
    /// The client's nonce.
    pub client_nonce: [u8; NONCE_LEN],
    /// The node's nonce, fresh for this connection.
    pub node_nonce: [u8; NONCE_LEN],
}

/// A client the node admitted: what it may do, and the node's proof for `ClientWelcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// The client's grants.
    pub grants: Grants,
    /// The node's proof, under the key the client proved with.
    pub mac: [u8; MAC_LEN],
}

/// Why the node refused a proof: the code sent, and the reason logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// What the client is told.
    pub code: ClientRefusal,
    /// What the node's log says (`unknown_client`, `bad_proof`).
    pub reason: &'static str,
}

impl Challenge {
    /// Checks the client's proof `mac` against every key of its ring (each compared in
    /// constant time, all of them tried); admits it with its grants and the node's proof, or
    /// refuses it.
    ///
    /// # Errors
    /// [`Refused`] with [`ClientRefusal::AuthFailed`]: an unknown name (`unknown_client`) or a
    /// proof no key of the ring made (`bad_proof`).
    pub fn check(
        &self,
        keys: &ClientKeys,
        cluster_id: &str,
        mac: &[u8],
    ) -> Result<Welcome, Refused> {
        let refused = |reason| Refused {
            code: ClientRefusal::AuthFailed,
            reason,
        };
        let t = ClientTranscript {
            cluster_id,
            name: &self.name,
            client_nonce: &self.client_nonce,
            node_nonce: &self.node_nonce,
        };
        let Some(entry) = keys.clients.get(&self.name) else {
            // The work of one wrong key, so the time taken does not tell which names exist.
            let stand_in = ClusterKey::from_bytes(&[0; MAC_LEN]).expect("32 bytes are enough");
            std::hint::black_box(same(&stand_in, CLIENT_TAG, &t, mac));
            return Err(refused("unknown_client"));
        };
        let matched = (entry.keys.iter()).fold(None, |found, key| {
            let ok = same(key, CLIENT_TAG, &t, mac);
            found.or(ok.then_some(key))
        });
        let key = matched.ok_or(refused("bad_proof"))?;
        Ok(Welcome {
            grants: entry.grants,
            mac: client_mac(key, NODE_TAG, &t),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DurabilityLevel;
    use bytes::Bytes;
    use logship_engine::Lsn;

    const FILE: &str = "\
# client keys
writer append,read writer-key-0123456789abcdef

reader read reader-key-0123456789abcdef
writer append,read writer-next-key-0123456789
ops admin ops-key-0123456789abcdef0123
";

    fn keys() -> ClientKeys {
        ClientKeys::from_file_bytes(FILE.as_bytes(), Path::new("clients.keys")).expect("valid")
    }

    fn client(name: &str, key: &str) -> ClientKey {
        ClientKey::new(
            name,
            ClusterKey::from_bytes(key.as_bytes()).expect("long enough"),
        )
        .expect("a valid name")
    }

    /// One handshake: the client proves with `key`, the node checks against `keys`.
    fn handshake(key: &ClientKey, node_nonce: [u8; NONCE_LEN]) -> (Challenge, [u8; MAC_LEN]) {
        let c = Challenge {
            name: key.name().to_string(),
            client_nonce: [7; NONCE_LEN],
            node_nonce,
        };
        let t = ClientTranscript {
            cluster_id: "c1",
            name: key.name(),
            client_nonce: &c.client_nonce,
            node_nonce: &c.node_nonce,
        };
        let mac = prove_client(key, &t);
        (c, mac)
    }

    #[test]
    fn a_good_key_is_welcomed_with_its_grants_and_the_node_proves_back() {
        let keys = keys();
        for (name, key, grants) in [
            ("writer", "writer-key-0123456789abcdef", "append,read"),
            ("writer", "writer-next-key-0123456789", "append,read"),
            ("reader", "reader-key-0123456789abcdef", "read"),
        ] {
            let k = client(name, key);
            let (c, mac) = handshake(&k, [9; NONCE_LEN]);
            let w = c.check(&keys, "c1", &mac).expect("welcomed");
            assert_eq!(w.grants.to_string(), grants);
            let t = ClientTranscript {
                cluster_id: "c1",
                name,
                client_nonce: &c.client_nonce,
                node_nonce: &c.node_nonce,
            };
            assert!(verify_node(&k, &t, &w.mac), "{name}: the node's proof");
            assert!(
                !verify_node(&k, &t, &mac),
                "{name}: the client's is not the node's"
            );
        }
    }

    #[test]
    fn a_wrong_key_an_unknown_name_and_a_replayed_proof_are_refused() {
        let keys = keys();
        let (c, mac) = handshake(&client("writer", "not-the-writer-key-0123"), [9; NONCE_LEN]);
        let bad_proof = c.check(&keys, "c1", &mac).expect_err("wrong key");
        assert_eq!(
            (bad_proof.code, bad_proof.reason),
            (ClientRefusal::AuthFailed, "bad_proof")
        );
        let (c, mac) = handshake(&client("stranger", "writer-key-0123456789abcdef"), [9; 32]);
        let unknown = c.check(&keys, "c1", &mac).expect_err("unknown name");
        assert_eq!(
            (unknown.code, unknown.reason),
            (ClientRefusal::AuthFailed, "unknown_client")
        );
        // A proof recorded on one connection, sent on another (another node nonce).
        let writer = client("writer", "writer-key-0123456789abcdef");
        let (_, recorded) = handshake(&writer, [1; NONCE_LEN]);
        let (replay, _) = handshake(&writer, [2; NONCE_LEN]);
        assert!(
            replay.check(&keys, "c1", &recorded).is_err(),
            "replayed proof"
        );
        // Another cluster id, and a truncated proof.
        let (c, mac) = handshake(&writer, [3; NONCE_LEN]);
        assert!(c.check(&keys, "c2", &mac).is_err(), "another cluster");
        assert!(
            c.check(&keys, "c1", &mac[..MAC_LEN - 1]).is_err(),
            "truncated"
        );
        assert!(c.check(&keys, "c1", &mac).is_ok());
    }

    #[test]
    fn grants_permit_only_their_requests_and_status_to_all() {
        let append = Msg::AppendRequest {
            id: 1,
            level: DurabilityLevel::Local,
            payload: Bytes::new(),
        };
        let batch = Msg::AppendBatchRequest {
            id: 1,
            level: DurabilityLevel::Local,
            payloads: vec![Bytes::new()],
        };
        let read = Msg::ReadRequest {
            id: 2,
            from: Lsn::ZERO,
            max_bytes: 1,
        };
        let promote = Msg::PromoteRequest {
            id: 3,
            target: "b".into(),
        };
        let status = Msg::StatusRequest { id: 4 };
        let heartbeat = Msg::Heartbeat {
            commit_lsn: Lsn::ZERO,
            last_lsn: Lsn::ZERO,
        };
        let table: [(Grants, [bool; 6]); 5] = [
            (Grants::NONE, [false, false, false, false, true, false]),
            (Grants::APPEND, [true, true, false, false, true, false]),
            (Grants::READ, [false, false, true, false, true, false]),
            (Grants::ADMIN, [false, false, false, true, true, false]),
            (Grants::ALL, [true, true, true, true, true, false]),
        ];
        let requests = [&append, &batch, &read, &promote, &status, &heartbeat];
        for (grants, expected) in table {
            let got: Vec<bool> = requests.iter().map(|r| grants.permits(r)).collect();
            assert_eq!(got, expected, "{grants}");
        }
    }

    #[test]
    fn bad_lines_are_typed_errors_naming_the_line() {
        let path = Path::new("clients.keys");
        type Case = (&'static str, usize, fn(&LineError) -> bool);
        let cases: [Case; 6] = [
            ("a append\n", 1, |e| {
                matches!(e, LineError::Fields { found: 2 })
            }),
            (
                "# c\na write k-0123456789abcdef\n",
                2,
                |e| matches!(e, LineError::UnknownGrant(g) if g == "write"),
            ),
            ("a , k-0123456789abcdef\n", 1, |e| {
                matches!(e, LineError::NoGrants)
            }),
            ("a read short\n", 1, |e| {
                matches!(e, LineError::Key(KeyError::TooShort { .. }))
            }),
            (
                "a read k-0123456789abcdef\na append k-0123456789abcdeg\n",
                2,
                |e| matches!(e, LineError::GrantsDiffer { name, .. } if name == "a"),
            ),
            ("a\u{7f} read k-0123456789abcdef\n", 1, |e| {
                matches!(e, LineError::BadName(_))
            }),
        ];
        for (text, want_line, check) in cases {
            match ClientKeys::from_file_bytes(text.as_bytes(), path) {
                Err(ClientKeyError::Line { line, reason, .. }) => {
                    assert_eq!(line, want_line, "{text:?}");
                    assert!(check(&reason), "{text:?}: {reason}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(matches!(
            ClientKeys::from_file_bytes(b"# none\n", path),
            Err(ClientKeyError::Empty { .. })
        ));
    }

    #[test]
    fn a_client_key_file_takes_its_first_line_in_either_form() {
        let path = Path::new("me.key");
        let two = ClientKey::from_file_bytes(b"# me\nme k-0123456789abcdef\n", path).expect("ok");
        let three =
            ClientKey::from_file_bytes(b"me read,append k-0123456789abcdef\n", path).expect("ok");
        assert_eq!((two.name(), three.name()), ("me", "me"));
        assert_eq!(format!("{two:?}"), "ClientKey(\"me\", <redacted>)");
        let t = ClientTranscript {
            cluster_id: "c",
            name: "me",
            client_nonce: &[1; NONCE_LEN],
            node_nonce: &[2; NONCE_LEN],
        };
        assert_eq!(
            prove_client(&two, &t),
            prove_client(&three, &t),
            "the same key"
        );
        assert!(matches!(
            ClientKey::from_file_bytes(b"me read,bogus k-0123456789abcdef\n", path),
            Err(ClientKeyError::Line {
                line: 1,
                reason: LineError::UnknownGrant(_),
                ..
            })
        ));
        assert!(matches!(
            ClientKey::from_file_bytes(b"\n\n", path),
            Err(ClientKeyError::Empty { .. })
        ));
    }

    #[test]
    fn grant_bits_round_trip_and_unknown_bits_are_refused() {
        for bits in 0..=7u8 {
            assert_eq!(Grants::from_bits(bits).map(Grants::bits), Some(bits));
        }
        assert_eq!(Grants::from_bits(8), None);
        assert_eq!(
            Grants::parse("read,,append").expect("ok").to_string(),
            "append,read"
        );
    }
}
