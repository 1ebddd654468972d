//! `logship promote --addr HOST:PORT`: planned switchover to the follower listening there.
//! The follower names its primary (its status's leader hint); the primary stops admitting
//! appends, waits until the follower holds every record durably, tells it to stand, and
//! becomes a follower; the follower is elected. Nothing acknowledged is lost. Prints each step
//! with its time.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use logship::Client;

/// Arguments of `logship promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The client port of the follower to make primary.
    #[arg(long, value_name = "HOST:PORT")]
    addr: SocketAddr,
    /// Seconds to wait for the whole switchover.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    #[command(flatten)]
    connect: super::ConnectArgs,
}

/// Runs `logship promote`.
pub fn run(args: PromoteArgs) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_secs_f64(args.timeout.max(0.001));
    let start = Instant::now();
    let held = args.connect.load()?;
    let connect = |addr| Client::connect_as(addr, timeout, held.credentials());
    let target = connect(args.addr)?.status()?;
    if target.primary.is_some() {
        println!(
            "{} is the primary already (epoch {})",
            target.node_id, target.epoch
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(primary) = target.leader_hint.as_deref() else {
        bail!("{} follows no primary now: nothing to hand over (an election is under way, or the cluster does not elect its primary)", target.node_id);
    };
    let primary: SocketAddr = primary
        .parse()
        .with_context(|| format!("the primary's address {primary:?}"))?;
    let mut c = connect(primary)?;
    c.set_timeout(timeout)?;
    let done = c.promote(&target.node_id)?;
    let handed = start.elapsed();
    println!("{done} ({:.1} ms)", handed.as_secs_f64() * 1e3);
    loop {
        if let Ok(s) = connect(args.addr).and_then(|mut c| c.status()) {
            if s.primary.as_ref().is_some_and(|p| p.serving) && s.epoch > target.epoch {
                let took = start.elapsed().as_secs_f64() * 1e3;
                println!(
                    "{} serves as the primary in epoch {} ({took:.1} ms after the request)",
                    s.node_id, s.epoch
                );
                return Ok(ExitCode::SUCCESS);
            }
        }
        if start.elapsed() > timeout {
            bail!("{} was not elected within {timeout:?}", target.node_id);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
