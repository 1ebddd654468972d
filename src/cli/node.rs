//! `logship node --config FILE.toml`: runs a primary or a follower until SIGINT or SIGTERM.
//! The config is checked before anything starts; a bad key is named in the one error line.
//! SIGHUP reloads the keys (the cluster key ring and the client keys file) and rereads the
//! `[tls]` certificate, key and CA files for new connections: a file that cannot be used keeps
//! what is in use, and is named in a warning (docs/operations.md, key rotation and TLS).
//!
//! With `LOGSHIP_REPLICATION_FD=N` in its environment the node serves replication on the
//! listening socket it inherited as descriptor N instead of binding its replication address
//! (`logship demo` starts its nodes so); that socket must be bound to that very address.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use logship::replication::transport::handover;
use logship::NodeConfig;

/// The environment variable naming the descriptor of an inherited replication listener.
pub const REPLICATION_FD_ENV: &str = "LOGSHIP_REPLICATION_FD";

/// Arguments of `logship node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The node's TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Check the configuration and the files it names (keys; `[tls]` certificates), and exit.
    #[arg(long)]
    check: bool,
}

/// Runs `logship node`.
pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let mut config = NodeConfig::load(&args.config)?;
    config.replication_listener = inherited_listener(&config)?.map(Arc::new);
    if args.check {
        check_keys(&config)?;
        if let Some(t) = &config.tls {
            logship::replication::tls::TlsState::load(t.files())?;
        }
        println!("{}: ok", args.config.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
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
    'run: loop {
        for sig in signals.pending() {
            if sig == signal_hook::consts::SIGHUP {
                on_sighup(&node);
                continue;
            }
            tracing::info!(signal = sig, "stopping");
            break 'run;
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

/// `--check`: the key files read as the node would read them at start.
fn check_keys(config: &NodeConfig) -> anyhow::Result<()> {
    use logship::replication::node::{load_client_keys, load_key_ring};
    load_key_ring(&config.node.key_file)?;
    if let Some(clients) = &config.clients {
        load_client_keys(&clients.keys_file)?;
    }
    Ok(())
}

/// SIGHUP: the node reads again what it reads from files while it runs: its key files
/// (`Node::reload_keys`) and its TLS files (`Node::reload_tls`).
fn on_sighup(node: &logship::Node) {
    match node.reload_keys() {
        Ok(r) => tracing::info!(
            cluster_keys = r.cluster_keys,
            clients = r.clients,
            "SIGHUP: keys reloaded"
        ),
        Err(e) => tracing::warn!(error = %e, "SIGHUP: keys not reloaded; the old keys stay in use"),
    }
    match node.reload_tls() {
        Ok(true) => tracing::info!("SIGHUP: TLS certificates reloaded: new connections use them"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP: TLS reload failed: the certificates in use stay")
        }
    }
}

/// The replication listener named by [`REPLICATION_FD_ENV`], if set, once it is checked to be a
/// listening TCP socket bound to the node's replication address: peers dial that address, so a
/// listener anywhere else would leave them dialing a port nobody serves.
fn inherited_listener(config: &NodeConfig) -> anyhow::Result<Option<std::net::TcpListener>> {
    let Some(listener) = handover::inherited_listener(REPLICATION_FD_ENV)? else {
        return Ok(None);
    };
    let id = &config.node.id;
    let got = listener
        .local_addr()
        .with_context(|| format!("{REPLICATION_FD_ENV}: reading the listener's address"))?;
    let Some(want) = config.listen_replication() else {
        anyhow::bail!(
            "{REPLICATION_FD_ENV} hands node {id} a replication listener on {got}, but it has no \
             replication address (node.listen_replication, or its entry in cluster.members)"
        );
    };
    anyhow::ensure!(
        got == want,
        "{REPLICATION_FD_ENV} hands node {id} a replication listener on {got}, but its \
         replication address is {want} (node.listen_replication, or its entry in \
         cluster.members): peers dial that address"
    );
    Ok(Some(listener))
}
