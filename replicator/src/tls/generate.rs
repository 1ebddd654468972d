//! Writes a private CA and certificates signed by it, for nodes and clients, as PEM files
//! (`logship keygen --tls-dir`). Meant to turn TLS on in minutes; an organisation with its own
//! CA issues the same kind of certificates with its own tools instead.
//!
//! Layout of the directory: `ca.crt`, `ca.key`; for each node `NAME.crt`, `NAME.key`; for each
//! client `NAME.crt`, `NAME.key`. Keys are ECDSA P-256, written readable by their owner only.
//! A node's certificate names its node id (the name peers verify it for) and any extra names
//! and addresses given, plus `localhost` and `127.0.0.1`; it serves both as a server and as a
//! client certificate, since replication peers present theirs on connections they make. A
//! client's certificate is a client certificate only.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::TlsError;

/// One certificate to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// The node id or client name; also the files' stem.
    pub name: String,
    /// More DNS names or IP addresses for a node's certificate.
    pub extra_names: Vec<String>,
}

/// The files written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Every file, in the order written.
    pub files: Vec<PathBuf>,
}

fn gen_error(e: impl ToString) -> TlsError {
    TlsError::Setup(e.to_string())
}

/// Writes `contents` to a new file `path` (never over an existing one) with `mode`.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    let io = |e: std::io::Error| TlsError::File {
        what: "output",
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io)
}

/// Writes a new CA and a certificate for each node and client into `dir` (created if
/// missing). Refuses to overwrite any file.
///
/// # Errors
/// [`TlsError::File`] for a file that exists or cannot be written, [`TlsError::Setup`] for a
/// name rcgen refuses.
pub fn write_tls_dir(
    dir: &Path,
    nodes: &[Subject],
    clients: &[Subject],
) -> Result<Written, TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| TlsError::File {
        what: "directory",
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut written = Written::default();
    let mut put = |name: &str, contents: &str, mode: u32| -> Result<(), TlsError> {
        let path = dir.join(name);
        write_new(&path, contents, mode)?;
        written.files.push(path);
        Ok(())
    };
    let ca_key = KeyPair::generate().map_err(gen_error)?;
    // A name of its own: two CAs of one name would make a certificate of one look issued by
    // the other (refused only at its signature, with a less telling error).
    let mut tag = [0u8; 4];
    getrandom::getrandom(&mut tag).map_err(gen_error)?;
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let ca_params = ca_params(&format!("logship CA {tag}"))?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_error)?;
    put("ca.crt", &ca_cert.pem(), 0o644)?;
    put("ca.key", &ca_key.serialize_pem(), 0o600)?;
    let issuer = Issuer::new(ca_params, ca_key);
    for (subjects, node) in [(nodes, true), (clients, false)] {
        for s in subjects {
            let (cert, key) = issue(&issuer, s, node)?;
            put(&format!("{}.crt", s.name), &cert, 0o644)?;
            put(&format!("{}.key", s.name), &key, 0o600)?;
        }
    }
    Ok(written)
}

fn ca_params(common_name: &str) -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen_error)?;
    p.distinguished_name
        .push(DnType::CommonName, common_name.to_string());
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

/// Issues one certificate; returns its PEM and its key's PEM.
fn issue(
    issuer: &Issuer<'_, KeyPair>,
    s: &Subject,
    node: bool,
) -> Result<(String, String), TlsError> {
    let mut names = vec![s.name.clone()];
    if node {
        names.extend(s.extra_names.iter().cloned());
        for local in ["localhost", "127.0.0.1"] {
            if !names.iter().any(|n| n == local) {
                names.push(local.to_string());
            }
        }
    }
    let mut p = CertificateParams::new(names).map_err(gen_error)?;
    p.distinguished_name
        .push(DnType::CommonName, s.name.clone());
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = if node {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    let key = KeyPair::generate().map_err(gen_error)?;
    let cert = p.signed_by(&key, issuer).map_err(gen_error)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Parses `NAME[=EXTRA[=EXTRA...]]` (a node id and more names or addresses for its
/// certificate) as a [`Subject`].
///
/// # Errors
/// A message for an empty name.
pub fn parse_subject(text: &str) -> Result<Subject, String> {
    let mut parts = text.split('=').map(str::trim);
    let name = parts.next().unwrap_or_default().to_string();
    let extra_names: Vec<String> = parts.map(str::to_string).collect();
    if name.is_empty() || extra_names.iter().any(String::is_empty) {
        return Err(format!("{text:?}: expected NAME or NAME=EXTRA_NAME[=...]"));
    }
    Ok(Subject { name, extra_names })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{ClientAuth, NodeTls, TlsFiles};

    #[test]
    fn written_files_load_as_node_and_client_configurations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = [parse_subject("n1=10.1.2.3=db1.example").expect("subject")];
        let clients = [parse_subject("c1").expect("subject")];
        let written = write_tls_dir(dir.path(), &nodes, &clients).expect("written");
        assert_eq!(written.files.len(), 6);
        let files = TlsFiles {
            cert_file: dir.path().join("n1.crt"),
            key_file: dir.path().join("n1.key"),
            ca_file: dir.path().join("ca.crt"),
            client_auth: ClientAuth::Required,
        };
        NodeTls::load(&files).expect("node configurations");
        let c1 = (dir.path().join("c1.crt"), dir.path().join("c1.key"));
        crate::tls::client_config(&files.ca_file, Some((&c1.0, &c1.1))).expect("client config");
        let again = write_tls_dir(dir.path(), &nodes, &[]).expect_err("no overwrite");
        assert!(again.to_string().contains("ca.crt"), "{again}");
    }

    #[test]
    fn a_subject_is_a_name_with_optional_extra_names() {
        assert_eq!(
            parse_subject("n2=10.0.0.2").expect("subject"),
            Subject {
                name: "n2".into(),
                extra_names: vec!["10.0.0.2".into()]
            }
        );
        assert!(parse_subject("").is_err());
        assert!(parse_subject("n1=").is_err());
    }
}
