//! `logship keygen FILE`: writes a new random cluster key (64 hex characters), readable only by
//! its owner. Refuses to overwrite an existing file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `logship keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the key.
    file: PathBuf,
}

/// Writes a new key file.
pub fn write_key(path: &std::path::Path) -> anyhow::Result<()> {
    let key = logship::replication::node::generate_key_text().context("generating a key")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{key}")
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Runs `logship keygen`.
pub fn run(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    write_key(&args.file)?;
    println!("{}", args.file.display());
    Ok(ExitCode::SUCCESS)
}
