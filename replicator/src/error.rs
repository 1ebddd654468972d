//! The replicator's error type. Variants carry what a caller branches on.

use std::path::PathBuf;
use std::time::Duration;

use logship_engine::Lsn;

use crate::protocol::auth::KeyError;
use crate::protocol::client_auth::{ClientKeyError, ClientRefusal};
use crate::protocol::DurabilityLevel;

/// Errors of the replicator and the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid; `key` names it (`replication.quorum`).
    #[error("invalid config {key}: {reason}")]
    InvalidConfig {
        /// The dotted key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The configuration file does not parse (unknown key, wrong type, bad TOML).
    #[error("config file {path}: {message}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// The cluster key file could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The client keys file (the node's) or a client's key file could not be used.
    #[error(transparent)]
    ClientKeys(#[from] ClientKeyError),
    /// The node refused this client's handshake (client side): a wrong key or an unknown name
    /// (`auth_failed`), a frame out of order, or a handshake too slow.
    #[error("the node refused this client ({}): {message}", code.as_str())]
    Refused {
        /// Why.
        code: ClientRefusal,
        /// The node's text.
        message: String,
    },
    /// TLS certificates, keys or CAs could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] logship_engine::Error),
    /// A network or thread operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was attempted.
        op: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The sync quorum did not acknowledge the append within the commit timeout. The record
    /// is in the primary's log (it may still reach the quorum later) but was not acknowledged
    /// at the level asked for.
    #[error("sync quorum {quorum} unavailable: LSN {lsn} not {} within {waited:?}", level.as_str())]
    QuorumUnavailable {
        /// The level waited for.
        level: DurabilityLevel,
        /// The record.
        lsn: Lsn,
        /// How long it waited.
        waited: Duration,
        /// The quorum.
        quorum: String,
    },
    /// This node is not the primary; `leader_hint` is the client address of the primary it
    /// follows, when it knows one.
    #[error("this node is not the primary{}", leader_hint.as_ref().map_or(String::new(), |h| format!("; the primary is at {h}")))]
    NotPrimary {
        /// The primary's client address (`HOST:PORT`), if known.
        leader_hint: Option<String>,
    },
    /// The node is shutting down.
    #[error("node is shutting down")]
    Closed,
    /// The client refused to send a request: an empty or oversized batch, or another request
    /// while answers to pipelined appends are still due.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A peer broke the protocol (client side).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server answered a client request with an error.
    #[error("server refused the request ({status}): {message}")]
    Remote {
        /// The status name.
        status: String,
        /// Its message.
        message: String,
        /// For `purged`, the first LSN held.
        detail: u64,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            op: op.into(),
            source,
        }
    }
    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidConfig {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
