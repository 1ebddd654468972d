//! TLS material: certificates, keys and CAs read from PEM files into rustls configurations
//! (ring provider, no OpenSSL), swapped whole on reload, and the failure log both TLS users
//! (the replication layer in [`crate::transport::tls`] and the client port) share.
//!
//! What TLS adds and what it does not (docs/architecture.md, "TLS"): TLS gives the bytes
//! confidentiality and integrity and, with client certificates, the peer's identity. The
//! cluster key's handshake stays inside TLS as the membership check: it still proves that a
//! peer holds the key and which node id it speaks for, so the sans-I/O replica is the same with
//! TLS on or off.
//!
//! Reload: [`TlsState::reload`] reads every file again and, only if all of them make valid
//! configurations, swaps them in at once. Connections made before keep the configuration they
//! started with; new ones take the new one. A failed reload changes nothing.
//!
//! [`generate`] writes a CA and certificates for nodes and clients (`logship keygen --tls-dir`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::log_summary::{Summary, SUMMARY_INTERVAL};

pub mod generate;

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate, key or CA file could not be read or holds nothing usable.
    #[error("TLS {what} {path}: {reason}")]
    File {
        /// `certificate`, `key` or `CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The files read, but rustls refused them together (a key that does not match the
    /// certificate, a CA that is not a certificate authority, ...).
    #[error("TLS configuration: {0}")]
    Setup(String),
    /// A server name that is neither a DNS name nor an IP address.
    #[error("TLS server name {0:?} is neither a DNS name nor an IP address")]
    ServerName(String),
}

/// Whether the client port asks clients for a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Clients verify the node; the node does not verify clients (the default).
    #[default]
    None,
    /// Mutual TLS: a client must present a certificate issued by `ca_file`.
    Required,
}

/// The files of one node's TLS identity and trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The node's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The CA certificates (PEM) that peers' and clients' certificates must chain to.
    pub ca_file: PathBuf,
    /// Whether the client port requires client certificates.
    pub client_auth: ClientAuth,
}

/// The rustls configurations of a node, built from one reading of its files.
#[derive(Debug)]
pub struct NodeTls {
    /// Accepting replication connections: presents the node's certificate and requires the
    /// peer's, issued by the CA.
    pub replication_server: Arc<ServerConfig>,
    /// Making replication connections: verifies the peer's certificate for its node id and
    /// presents the node's own.
    pub replication_client: Arc<ClientConfig>,
    /// The client port: presents the node's certificate; asks for a client certificate only
    /// with [`ClientAuth::Required`].
    pub client_port: Arc<ServerConfig>,
}

/// The crypto provider every configuration here uses: rustls' ring provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Every certificate in the PEM file `path`, in order.
///
/// # Errors
/// [`TlsError::File`]: unreadable, not PEM, or no certificate in it.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter =
        CertificateDer::pem_file_iter(path).map_err(|e| file_error("certificate", path, e))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("certificate", path, e))?;
    if certs.is_empty() {
        return Err(file_error(
            "certificate",
            path,
            "no CERTIFICATE block in it",
        ));
    }
    Ok(certs)
}

/// The first private key in the PEM file `path`.
///
/// # Errors
/// [`TlsError::File`]: unreadable, or no private key in it.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error("key", path, e))
}

/// The CA certificates in `path` as a root store.
///
/// # Errors
/// [`TlsError::File`]: unreadable, no certificate, or one webpki cannot use as a trust anchor.
pub fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path).map_err(|e| match e {
        TlsError::File { path, reason, .. } => TlsError::File {
            what: "CA",
            path,
            reason,
        },
        other => other,
    })? {
        roots.add(cert).map_err(|e| file_error("CA", path, e))?;
    }
    Ok(Arc::new(roots))
}

fn setup(e: impl ToString) -> TlsError {
    TlsError::Setup(e.to_string())
}

/// A client configuration trusting the CAs in `ca_file`, presenting `identity` (certificate
/// and key files) when given (mutual TLS).
///
/// # Errors
/// [`TlsError`] for a file that cannot be used or a key that does not match its certificate.
pub fn client_config(
    ca_file: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(setup)?
        .with_root_certificates(read_roots(ca_file)?);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(setup)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A server configuration presenting `certs` and `key`, requiring client certificates issued
/// by `roots` when `roots` is given.
fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Option<Arc<RootCertStore>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(setup)?;
    let builder = match roots {
        Some(roots) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(setup)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(
        builder.with_single_cert(certs, key).map_err(setup)?,
    ))
}

impl NodeTls {
    /// Reads `files` and builds every configuration.
    ///
    /// # Errors
    /// [`TlsError`] naming the file or the mismatch.
    pub fn load(files: &TlsFiles) -> Result<NodeTls, TlsError> {
        NodeTls::build(files).map_err(|e| match e {
            TlsError::Setup(reason) => TlsError::Setup(format!(
                "{reason} (certificate {}, key {}, CA {})",
                files.cert_file.display(),
                files.key_file.display(),
                files.ca_file.display()
            )),
            other => other,
        })
    }

    fn build(files: &TlsFiles) -> Result<NodeTls, TlsError> {
        let certs = read_certs(&files.cert_file)?;
        let key = read_key(&files.key_file)?;
        let roots = read_roots(&files.ca_file)?;
        let replication_server =
            server_config(certs.clone(), key.clone_key(), Some(Arc::clone(&roots)))?;
        let client_roots = (files.client_auth == ClientAuth::Required).then(|| Arc::clone(&roots));
        let client_port = server_config(certs.clone(), key.clone_key(), client_roots)?;
        let replication_client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(setup)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(setup)?;
        Ok(NodeTls {
            replication_server,
            replication_client: Arc::new(replication_client),
            client_port,
        })
    }
}

/// A node's TLS configurations, swapped whole by [`TlsState::reload`].
#[derive(Debug)]
pub struct TlsState {
    files: TlsFiles,
    current: RwLock<Arc<NodeTls>>,
}

impl TlsState {
    /// Reads `files` once.
    ///
    /// # Errors
    /// [`TlsError`] naming the file or the mismatch.
    pub fn load(files: TlsFiles) -> Result<TlsState, TlsError> {
        let current = RwLock::new(Arc::new(NodeTls::load(&files)?));
        Ok(TlsState { files, current })
    }

    /// The configurations new connections use now.
    pub fn current(&self) -> Arc<NodeTls> {
        Arc::clone(&self.current.read())
    }

    /// Reads the files again and swaps the new configurations in for new connections.
    ///
    /// # Errors
    /// [`TlsError`]; the configurations in use stay as they were.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = NodeTls::load(&self.files)?;
        *self.current.write() = Arc::new(fresh);
        Ok(())
    }
}

/// Where a TLS layer gets the configurations for each new connection.
pub trait TlsConfigs: Send + Sync + 'static {
    /// For a connection accepted.
    fn server(&self) -> Arc<ServerConfig>;
    /// For a connection made.
    fn client(&self) -> Arc<ClientConfig>;
}

impl TlsConfigs for TlsState {
    fn server(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current().replication_server)
    }

    fn client(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.current().replication_client)
    }
}

/// The client port's configurations: its server side (`client_auth` none or required, see
/// [`NodeTls::client_port`]) for accepted connections; the port makes no connections, so
/// `client` gives the replication one only to complete the trait.
#[derive(Debug)]
pub struct ClientPortConfigs(pub Arc<TlsState>);

impl TlsConfigs for ClientPortConfigs {
    fn server(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.0.current().client_port)
    }

    fn client(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.0.current().replication_client)
    }
}

/// Parses a server name to verify a certificate for: an IP address, or else a DNS name.
///
/// # Errors
/// [`TlsError::ServerName`].
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName(name.to_string()))
}

/// TLS failures (bad certificate, unknown CA, a plaintext peer, ...): counted, and logged as
/// one summary line per [`SUMMARY_INTERVAL`] at most per place, never one line each (a
/// scanner must not fill the disk with logs).
#[derive(Debug)]
pub struct TlsFailures {
    count: AtomicU64,
    started: Instant,
    logs: Mutex<[Summary; 2]>,
}

impl Default for TlsFailures {
    fn default() -> TlsFailures {
        TlsFailures {
            count: AtomicU64::new(0),
            started: Instant::now(),
            logs: Mutex::new([Summary::default(), Summary::default()]),
        }
    }
}

/// Where a TLS failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsPort {
    /// A replication connection.
    Replication,
    /// A client port connection.
    Client,
}

impl TlsFailures {
    /// Counts one failure and logs a summary line when one is due.
    pub fn note(&self, port: TlsPort, peer: Option<SocketAddr>, error: &rustls::Error) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let now = self.started.elapsed();
        let (i, name) = match port {
            TlsPort::Replication => (0, "replication"),
            TlsPort::Client => (1, "client port"),
        };
        let due = self.logs.lock()[i].note(now, 1);
        if let Some(failures) = due {
            let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
            tracing::warn!(
                failures,
                last_peer = %peer,
                last_error = %error,
                "{name}: TLS failures closed connections (at most one such line per {} s)",
                SUMMARY_INTERVAL.as_secs()
            );
        }
    }

    /// Failures counted since start.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::generate::{parse_subject, write_tls_dir};
    use super::*;

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles {
            cert_file: dir.join("n1.crt"),
            key_file: dir.join("n1.key"),
            ca_file: dir.join("ca.crt"),
            client_auth: ClientAuth::None,
        }
    }

    #[test]
    fn a_reload_swaps_whole_configurations_and_a_failed_one_keeps_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (live, next) = (dir.path().join("live"), dir.path().join("next"));
        for d in [&live, &next] {
            write_tls_dir(d, &[parse_subject("n1").expect("subject")], &[]).expect("files");
        }
        let state = TlsState::load(files(&live)).expect("load");
        let before = state.current();
        for f in ["n1.crt", "n1.key", "ca.crt"] {
            std::fs::copy(next.join(f), live.join(f)).expect("replace");
        }
        state.reload().expect("reload");
        let after = state.current();
        assert!(
            !Arc::ptr_eq(&before, &after),
            "new connections get new configurations"
        );
        assert!(!Arc::ptr_eq(
            &before.replication_server,
            &after.replication_server
        ));

        std::fs::write(live.join("n1.key"), "-----BEGIN PRIVATE KEY-----\nbroken\n")
            .expect("break");
        let e = state.reload().expect_err("a broken key");
        assert!(e.to_string().contains("n1.key"), "{e}");
        assert!(
            Arc::ptr_eq(&after, &state.current()),
            "the configurations in use stay"
        );

        // A key of another certificate: every file reads, rustls refuses the pair.
        std::fs::copy(dir.path().join("next/ca.crt"), live.join("n1.crt")).expect("copy");
        std::fs::copy(next.join("n1.key"), live.join("n1.key")).expect("copy");
        let mismatched = TlsState::load(files(&live));
        assert!(
            mismatched.is_err(),
            "a certificate without its key is refused"
        );
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = TlsState::load(files(dir.path())).expect_err("no files");
        assert!(e.to_string().contains("n1.crt"), "{e}");
        std::fs::write(dir.path().join("n1.crt"), "no PEM here\n").expect("write");
        let e = read_certs(&dir.path().join("n1.crt")).expect_err("no certificate");
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    }
}
