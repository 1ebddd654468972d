//! Argument parsing, logging setup and error reporting for the `logship` binary. Each
//! subcommand lives in its own file and returns the process's exit code.
//!
//! Errors are reported once, by `main`, as one line: the message of each error in the chain
//! joined by `: `, skipping a cause whose text the message already contains (engine errors
//! print their source inline).

mod append;
mod demo;
mod dump;
mod keygen;
mod load;
mod node;
mod promote;
mod repair;
mod status;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use logship::replication::protocol::client_auth::ClientKey;

/// Exit code of a usage, I/O or not-a-log error (clap uses 2 for usage errors too).
pub const EXIT_ERROR: u8 = 2;
/// Exit code of `verify` when it finds corruption.
pub const EXIT_CORRUPT: u8 = 1;

/// logship: a write-ahead log for databases to embed.
#[derive(Debug, Parser)]
#[command(name = "logship", version, about)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append each line of stdin as one record; print each record's LSN once it is durable.
    Append(append::AppendArgs),
    /// Print records of a log, as text or JSON lines.
    Dump(dump::DumpArgs),
    /// Check every segment of a log without changing it; exit 1 on corruption.
    Verify(verify::VerifyArgs),
    /// Repair a damaged log (its node stopped) with records from a healthy node's client port.
    Repair(repair::RepairArgs),
    /// Run a primary or follower node from a TOML config file.
    Node(node::NodeArgs),
    /// Show a node's replication status (from its client port).
    Status(status::StatusArgs),
    /// Planned switchover: make the follower at this client port the primary, losing nothing
    Promote(promote::PromoteArgs),
    /// Generate load against a node's client port; optionally record every acknowledged LSN.
    Load(load::LoadArgs),
    /// Start a three-member cluster on loopback that elects its primary, run load with a live
    /// view, kill and restart a follower, then the primary, and check every node holds the same
    /// records.
    Demo(demo::DemoArgs),
    /// Write a new random cluster key file.
    Keygen(keygen::KeygenArgs),
}

/// `--backend`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BackendArg {
    /// io_uring where the kernel allows it, else pwrite + fdatasync.
    Auto,
    /// io_uring, or fail.
    #[value(name = "io_uring", alias = "uring")]
    IoUring,
    /// pwrite + fdatasync.
    Portable,
    /// io_uring with O_DIRECT | O_DSYNC writes, or fail (tmpfs, file systems without O_DIRECT).
    #[value(name = "io_uring_direct", alias = "direct")]
    IoUringDirect,
}

impl BackendArg {
    fn to_backend(self) -> logship::io::Backend {
        match self {
            BackendArg::Auto => logship::io::Backend::Auto,
            BackendArg::IoUring => logship::io::Backend::IoUring,
            BackendArg::Portable => logship::io::Backend::Portable,
            BackendArg::IoUringDirect => logship::io::Backend::IoUringDirect,
        }
    }
}

/// TLS options of the commands that connect to a node's client port (`[tls]` with
/// `client_port = true` on the node).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// Connect with TLS, trusting the CA certificates in FILE (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a node with `client_auth = "required"`; needs --tls-key.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Verify the node's certificate for NAME (a DNS name such as its node id) instead of the
    /// IP address connected to.
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

impl TlsArgs {
    /// The client's TLS settings, or `None` without `--tls-ca`.
    pub fn client_tls(&self) -> anyhow::Result<Option<logship::replication::client::ClientTls>> {
        use logship::replication::client::ClientTls;
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        let mut tls = ClientTls::from_files(ca, identity)?;
        if let Some(name) = &self.tls_server_name {
            tls = tls.with_server_name(name)?;
        }
        Ok(Some(tls))
    }
}

/// A log directory argument.
#[derive(Debug, clap::Args)]
pub struct DirArg {
    /// The log directory.
    dir: PathBuf,
}

/// How a command that talks to a node's client port shows itself: TLS and a client key.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    tls: TlsArgs,
    /// Client key file for a node with `[clients]`: a `<name> <key>` or `<name> <grants> <key>`
    /// line, as `logship keygen --client` writes it.
    #[arg(long, value_name = "FILE")]
    client_key: Option<PathBuf>,
}

impl ConnectArgs {
    /// Reads the files named: the TLS settings and the client key.
    pub fn load(&self) -> anyhow::Result<Held> {
        Ok(Held {
            tls: self.tls.client_tls()?,
            key: client_key(self.client_key.as_deref())?,
        })
    }
}

/// What [`ConnectArgs::load`] read.
#[derive(Debug)]
pub struct Held {
    tls: Option<logship::replication::client::ClientTls>,
    key: Option<ClientKey>,
}

impl Held {
    /// The credentials to connect with.
    pub fn credentials(&self) -> logship::replication::client::Credentials<'_> {
        logship::replication::client::Credentials {
            tls: self.tls.as_ref(),
            key: self.key.as_ref(),
        }
    }
}

/// Reads the client key file of `--client-key`, if one was given.
pub fn client_key(path: Option<&std::path::Path>) -> anyhow::Result<Option<ClientKey>> {
    let read = |p: &std::path::Path| {
        logship::replication::node::load_client_key(p)
            .with_context(|| format!("--client-key {}", p.display()))
    };
    path.map(read).transpose()
}

/// Parses the command line; exits with clap's message and code 2 on a usage error.
pub fn parse() -> Args {
    Args::parse()
}

/// Runs the chosen subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Append(a) => append::run(a),
        Command::Dump(a) => dump::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Repair(a) => repair::run(a),
        Command::Node(a) => node::run(a),
        Command::Status(a) => status::run(a),
        Command::Promote(a) => promote::run(a),
        Command::Load(a) => load::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Keygen(a) => keygen::run(a),
    }
}

/// Logs to stderr; `RUST_LOG` chooses the filter, default `warn` (`info` for `logship node`).
pub fn init_tracing() {
    let default = if std::env::args().nth(1).as_deref() == Some("node") {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Prints `logship: error: <message>` as one line on stderr.
pub fn print_error(e: &anyhow::Error) {
    eprintln!("logship: error: {}", one_line(e));
}

fn one_line(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_is_one_line_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::from(logship::Error::io("open", "/x", io)).context("opening log");
        assert_eq!(one_line(&e), "opening log: open /x: no such file");
        let e = anyhow::anyhow!("two\nlines");
        assert_eq!(one_line(&e), "two lines");
    }
}
