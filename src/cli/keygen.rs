//! `logship keygen FILE`: writes a new random cluster key (64 hex characters), readable only by
//! its owner. Refuses to overwrite an existing file.
//!
//! `logship keygen --client NAME [--grants LIST] FILE` writes a client key line instead,
//! `NAME GRANTS KEY`: the line is both the client's `--client-key` file and the line to add to
//! the nodes' client keys file (`[clients] keys_file`).
//! `logship keygen --tls-dir DIR --nodes n1,n2,n3 [--clients c1]`: writes a new CA and a
//! certificate and key for each node (named for its node id, plus `localhost` and `127.0.0.1`,
//! plus extra names given as `n1=10.0.0.1=db1.example`) and for each client, for the `[tls]`
//! table (docs/operations.md, "TLS"). Refuses to overwrite any file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use logship::replication::protocol::client_auth::{ClientKey, Grants};
use logship::replication::tls::generate::{self, Subject};

/// Arguments of `logship keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the key (a cluster key, or with `--client` a client key line).
    #[arg(required_unless_present = "tls_dir")]
    file: Option<PathBuf>,
    /// Write a client key line for this client name instead of a cluster key.
    #[arg(long, value_name = "NAME")]
    client: Option<String>,
    /// The client's grants, a comma list of append, read, admin (with `--client`).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "append,read",
        requires = "client"
    )]
    grants: String,
    /// Write a CA and TLS certificates into this directory (with --nodes, --clients).
    #[arg(long, value_name = "DIR", requires = "nodes")]
    tls_dir: Option<PathBuf>,
    /// Node ids to issue certificates for; `ID=NAME_OR_IP[=...]` adds names to one.
    #[arg(long, value_name = "ID[,ID...]", value_delimiter = ',', value_parser = generate::parse_subject)]
    nodes: Vec<Subject>,
    /// Client names to issue client certificates for (mutual TLS).
    #[arg(long, value_name = "NAME[,NAME...]", value_delimiter = ',', value_parser = generate::parse_subject)]
    clients: Vec<Subject>,
}

/// Creates `path` (never over an existing file), readable only by its owner, holding `line`.
fn write_secret(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{line}")
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn new_key() -> anyhow::Result<String> {
    logship::replication::node::generate_key_text().context("generating a key")
}

/// Writes a new key file.
pub fn write_key(path: &Path) -> anyhow::Result<()> {
    write_secret(path, &new_key()?)
}

/// Writes a new client key line, `name grants key`, to a new file at `path`; returns the line
/// (for the nodes' client keys file).
pub fn write_client_key(path: &Path, name: &str, grants: &str) -> anyhow::Result<String> {
    let grants = Grants::parse(grants).context("--grants")?;
    let line = format!("{name} {grants} {}", new_key()?);
    // The line must read back as a client key (the name's characters, above all).
    ClientKey::from_file_bytes(line.as_bytes(), path).context("--client")?;
    write_secret(path, &line)?;
    Ok(line)
}

/// Runs `logship keygen`.
pub fn run(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    if let Some(file) = &args.file {
        match &args.client {
            Some(name) => {
                write_client_key(file, name, &args.grants)?;
            }
            None => write_key(file)?,
        }
        println!("{}", file.display());
    }
    if let Some(dir) = &args.tls_dir {
        let written = generate::write_tls_dir(dir, &args.nodes, &args.clients)?;
        for f in written.files {
            println!("{}", f.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
