//! `logship node --config FILE.toml`: runs a primary or a follower until SIGINT or SIGTERM.
//! The config is checked before anything starts; a bad key is named in the one error line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use logship::NodeConfig;

/// Arguments of `logship node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The node's TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
}

/// Runs `logship node`.
pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let config = NodeConfig::load(&args.config)?;
    if args.check {
        println!("{}: ok", args.config.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing signal handlers")?;
    let id = config.node.id.clone();
    let node = logship::Node::start(config)?;
    eprintln!(
        "logship node {id} up: replication {}, client {}, http {}",
        node.replication_addr()
            .map_or("-".into(), |a| a.to_string()),
        node.client_addr().map_or("-".into(), |a| a.to_string()),
        node.http_addr().map_or("-".into(), |a| a.to_string()),
    );
    loop {
        if let Some(sig) = signals.pending().next() {
            tracing::info!(signal = sig, "stopping");
            break;
        }
        if let Some(cause) = node.failure() {
            node.shutdown();
            anyhow::bail!(
                "node {id} stopped: its log is poisoned ({cause}); restart it to recover from disk"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    node.shutdown();
    Ok(ExitCode::SUCCESS)
}
