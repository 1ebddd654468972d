//! `logship demo`: a three-node cluster on loopback (primary `p`, sync follower `s1`, async
//! follower `a1`) as child processes in a temporary directory. It runs load with a live view,
//! kills `a1` with SIGKILL for a few seconds and shows it catching up, checks that every node
//! holds the same records, prints a summary and stops everything.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use logship::replication::link::Phase;
use logship::{Client, DurabilityLevel, NodeStatus};

use super::load::{start_clients, LoadArgs, LoadStats};
use super::status::bytes;

/// How often the live view redraws.
const FRAME: Duration = Duration::from_millis(500);
/// How long the async follower stays down.
const DOWN_FOR: Duration = Duration::from_secs(4);
/// How often a1 is looked at after its restart, to time its catch-up.
const CATCH_UP_POLL: Duration = Duration::from_millis(20);
/// a1 counts as caught up when this close to the primary (the live stream is never at 0).
const CAUGHT_UP_RECORDS: u64 = 100;
/// Bound on waiting for the cluster to come up or the follower to catch up.
const WAIT_BOUND: Duration = Duration::from_secs(30);

/// Arguments of `logship demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Seconds of load.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    /// Load clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Record size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Keep the temporary directory (configs, logs, data) and print its path.
    #[arg(long)]
    keep: bool,
}

struct Cluster {
    dir: PathBuf,
    nodes: Vec<(String, PathBuf, Option<Child>)>,
    primary_client: SocketAddr,
    clients: Vec<(String, SocketAddr)>,
}

/// Ports not chosen yet: every node binds port 0 and prints what it got.
const UNBOUND: &str = "127.0.0.1:0";
/// How long a node may take to print its ports.
const UP_BOUND: Duration = Duration::from_secs(15);

/// The addresses a node printed once up: replication (followers), client, HTTP.
type Bound = (Option<SocketAddr>, SocketAddr, SocketAddr);

fn follower_config(name: &str, (repl, client, http): (&str, &str, &str)) -> String {
    format!(
        "[node]\nid = \"{name}\"\nrole = \"follower\"\ncluster_id = \"demo\"\nkey_file = \"cluster.key\"\ndata_dir = \"data/{name}\"\nlisten_replication = \"{repl}\"\nlisten_client = \"{client}\"\nlisten_http = \"{http}\"\n"
    )
}

impl Cluster {
    /// Starts the followers on ports they pick, then the primary, configured with the
    /// followers' ports. A follower's config is then rewritten with the ports it got, so that a
    /// restart binds the same ones (the primary dials the one it was told).
    fn start(dir: &Path) -> anyhow::Result<Cluster> {
        super::keygen::write_key(&dir.join("cluster.key"))?;
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            nodes: Vec::new(),
            primary_client: UNBOUND.parse()?,
            clients: Vec::new(),
        };
        let mut repl = Vec::new();
        for name in ["s1", "a1"] {
            let (r, client, http) =
                c.start_node(name, &follower_config(name, (UNBOUND, UNBOUND, UNBOUND)))?;
            let r = r.context("a follower prints its replication address")?;
            let fixed = follower_config(
                name,
                (&r.to_string(), &client.to_string(), &http.to_string()),
            );
            std::fs::write(dir.join(format!("{name}.toml")), fixed)?;
            repl.push(r);
            c.clients.push((name.to_string(), client));
        }
        let primary = format!(
            "[node]\nid = \"p\"\nrole = \"primary\"\ncluster_id = \"demo\"\nkey_file = \"cluster.key\"\ndata_dir = \"data/p\"\nlisten_client = \"{UNBOUND}\"\nlisten_http = \"{UNBOUND}\"\n\n[replication]\nquorum = \"FIRST 1 (s1)\"\npolicy = \"block\"\nfollowers = [\n  {{ name = \"s1\", addr = \"{}\", mode = \"sync\" }},\n  {{ name = \"a1\", addr = \"{}\", mode = \"async\" }},\n]\n\n[breaker]\nfailure_threshold = 3\nreset_timeout_ms = 1000\n",
            repl[0], repl[1]
        );
        let (_, client, _) = c.start_node("p", &primary)?;
        c.primary_client = client;
        c.clients.push(("p".to_string(), client));
        Ok(c)
    }

    /// Writes `name`'s config, starts it, and reads the addresses it bound.
    fn start_node(&mut self, name: &str, config: &str) -> anyhow::Result<Bound> {
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        self.nodes.push((name.to_string(), path, None));
        self.spawn(name)?;
        let log = self.dir.join(format!("{name}.log"));
        let deadline = Instant::now() + UP_BOUND;
        loop {
            if let Some(b) = bound_addresses(&log, name) {
                return Ok(b);
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {name} did not print its addresses within {UP_BOUND:?} (see {})",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(&mut self, name: &str) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("finding the logship binary")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        let entry = self
            .nodes
            .iter_mut()
            .find(|(n, _, _)| n == name)
            .context("unknown node")?;
        let child = Command::new(exe)
            .args(["node", "--config"])
            .arg(&entry.1)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {name}"))?;
        entry.2 = Some(child);
        Ok(())
    }

    fn kill(&mut self, name: &str) {
        if let Some((_, _, Some(mut child))) = self
            .nodes
            .iter_mut()
            .find(|(n, _, _)| n == name)
            .map(|e| (e.0.clone(), (), e.2.take()))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn stop_all(&mut self) {
        for (_, _, child) in &mut self.nodes {
            if let Some(mut c) = child.take() {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    fn status(&self, name: &str) -> Option<NodeStatus> {
        let addr = self.clients.iter().find(|(n, _)| n == name)?.1;
        Client::connect(addr, Duration::from_millis(500))
            .ok()?
            .status()
            .ok()
    }
}

/// The addresses in the "up" line `name` printed in its log, if it did.
fn bound_addresses(log: &Path, name: &str) -> Option<Bound> {
    let text = std::fs::read_to_string(log).ok()?;
    let prefix = format!("logship node {name} up: ");
    let line = text.lines().find_map(|l| l.strip_prefix(&prefix))?;
    let mut fields = line
        .split(", ")
        .map(|f| f.split_once(' ').map_or("-", |x| x.1));
    let repl = fields.next()?.parse().ok();
    Some((
        repl,
        fields.next()?.parse().ok()?,
        fields.next()?.parse().ok()?,
    ))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn follower_line(out: &mut String, f: &logship::replication::status::FollowerStatus) {
    let state = match f.phase {
        Phase::Idle => "down",
        Phase::Connecting => "connecting",
        Phase::Handshake => "handshake",
        Phase::CatchingUp => "catching-up",
        Phase::Streaming => "streaming",
    };
    let lag = f
        .flush_lag_ms
        .map_or("-".to_string(), |v| format!("{v:.2} ms"));
    let _ = writeln!(
        out,
        "  {:<3} {:<5} {:<11} {:<9} breaker {:<9} behind {:>9} rec {:>10}   flush lag {lag}",
        f.name,
        f.mode,
        state,
        if f.healthy { "healthy" } else { "unhealthy" },
        f.breaker,
        f.durable_behind.records,
        bytes(f.durable_behind.bytes),
    );
}

/// Runs `logship demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.duration >= 3.0,
        "--duration must be at least 3 seconds"
    );
    let tmp = tempfile::Builder::new().prefix("logship-demo-").tempdir()?;
    let dir = tmp.path().to_path_buf();
    println!("logship demo: primary p, sync follower s1, async follower a1 on 127.0.0.1; quorum FIRST 1 (s1)");
    println!("cluster directory: {}", dir.display());
    let mut cluster = Cluster::start(&dir)?;
    wait_ready(&cluster)?;
    println!(
        "cluster up; {} clients append {} B records at remote_durable for {:.0} s\n",
        args.clients, args.size, args.duration
    );
    let load = LoadArgs {
        addr: cluster.primary_client,
        rate: None,
        duration: args.duration,
        clients: args.clients,
        size: args.size,
        durability: DurabilityLevel::RemoteDurable,
        acked: None,
        json: false,
    };
    let stats = LoadStats::new();
    let start = Instant::now();
    let threads = start_clients(
        &load,
        start + Duration::from_secs_f64(args.duration),
        &stats,
        None,
    )?;
    let kill_at = Duration::from_secs_f64(args.duration / 3.0);
    let result = live(&mut cluster, &stats, start, args.duration, kill_at);
    let catch_up_after_restart = result.as_ref().ok().copied().flatten();
    stats.stop.store(true, Ordering::Release);
    for t in threads {
        let _ = t.join();
    }
    result?;
    let caught_up = catch_up(&cluster)?;
    summary(&cluster, &stats, start, caught_up, catch_up_after_restart)?;
    cluster.stop_all();
    if args.keep {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn wait_ready(cluster: &Cluster) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Some(s) = cluster.status("p") {
            if s.primary
                .as_ref()
                .is_some_and(|p| p.followers.iter().all(|f| f.healthy))
            {
                return Ok(());
            }
        }
        if start.elapsed() > WAIT_BOUND {
            bail!(
                "the cluster did not come up within {WAIT_BOUND:?}; see the *.log files in {}",
                cluster.dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn live(
    cluster: &mut Cluster,
    stats: &LoadStats,
    start: Instant,
    duration: f64,
    kill_at: Duration,
) -> anyhow::Result<Option<(Duration, u64)>> {
    let tty = std::io::stdout().is_terminal();
    let mut restart: Option<(Duration, u64)> = None;
    let mut caught: Option<(Duration, u64)> = None;
    let mut events: Vec<String> = Vec::new();
    let (mut killed, mut restarted) = (false, false);
    let mut last = (Instant::now(), 0u64);
    let mut drawn = 0usize;
    let mut next_plain = Duration::ZERO;
    while start.elapsed().as_secs_f64() < duration {
        let frame_end = start.elapsed() + FRAME;
        while start.elapsed() < frame_end {
            std::thread::sleep(CATCH_UP_POLL);
            if let (Some((at, behind)), None) = (restart, caught) {
                if a1_behind(cluster)
                    .is_some_and(|(streaming, b)| streaming && b <= CAUGHT_UP_RECORDS)
                {
                    caught = Some((start.elapsed().saturating_sub(at), behind));
                    events.push(format!(
                        "[{:5.1} s] a1 caught up: {behind} records behind at its restart, within {CAUGHT_UP_RECORDS} of the primary {:.2} s later",
                        start.elapsed().as_secs_f64(),
                        start.elapsed().saturating_sub(at).as_secs_f64()
                    ));
                }
            }
        }
        let t = start.elapsed();
        if !killed && t >= kill_at {
            cluster.kill("a1");
            killed = true;
            events.push(format!(
                "[{:5.1} s] a1 killed with SIGKILL",
                t.as_secs_f64()
            ));
        }
        if killed && !restarted && t >= kill_at + DOWN_FOR {
            let behind = a1_behind(cluster).map_or(0, |(_, b)| b);
            cluster.spawn("a1")?;
            restart = Some((start.elapsed(), behind));
            restarted = true;
            events.push(format!(
                "[{:5.1} s] a1 restarted: it reconnects and catches up from the primary's log",
                t.as_secs_f64()
            ));
        }
        let frame = render(cluster, stats, t, &mut last, &events);
        let mut out = std::io::stdout().lock();
        if tty {
            if drawn > 0 {
                write!(out, "\x1b[{drawn}A\x1b[J")?;
            }
            write!(out, "{frame}")?;
            drawn = frame.lines().count();
        } else if t >= next_plain {
            writeln!(out, "{frame}")?;
            next_plain = t + Duration::from_secs(2);
        }
        out.flush()?;
    }
    Ok(caught)
}

/// Whether a1 streams, and how many records it is behind (durable), as the primary sees it.
fn a1_behind(cluster: &Cluster) -> Option<(bool, u64)> {
    let p = cluster.status("p")?.primary?;
    let f = p.followers.iter().find(|f| f.name == "a1")?;
    Some((
        matches!(f.phase, Phase::Streaming | Phase::CatchingUp) && f.healthy,
        f.durable_behind.records,
    ))
}

fn render(
    cluster: &Cluster,
    stats: &LoadStats,
    t: Duration,
    last: &mut (Instant, u64),
    events: &[String],
) -> String {
    let acked = stats.acked.load(Ordering::Relaxed);
    let dt = last.0.elapsed().as_secs_f64().max(1e-3);
    let rate = (acked - last.1) as f64 / dt;
    *last = (Instant::now(), acked);
    let w = stats.take_window();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "t {:5.1} s   {:>8.0} records/s   commit p50 {:>6.2} ms  p99 {:>6.2} ms   acknowledged {acked}",
        t.as_secs_f64(),
        rate,
        w.value_at_quantile(0.5) as f64 / 1e3,
        w.value_at_quantile(0.99) as f64 / 1e3,
    );
    match cluster.status("p").and_then(|s| s.primary) {
        Some(p) => {
            let _ = writeln!(
                out,
                "  primary p: commit LSN {}  quorum {} {}",
                p.commit.remote_durable,
                p.quorum,
                if p.quorum_available {
                    "available"
                } else {
                    "UNAVAILABLE"
                }
            );
            for f in &p.followers {
                follower_line(&mut out, f);
            }
        }
        None => out.push_str("  primary p: not answering\n"),
    }
    for e in events {
        let _ = writeln!(out, "{e}");
    }
    out
}

fn catch_up(cluster: &Cluster) -> anyhow::Result<Option<Duration>> {
    let start = Instant::now();
    while start.elapsed() < WAIT_BOUND {
        if let Some(p) = cluster.status("p").and_then(|s| s.primary) {
            if p.followers
                .iter()
                .all(|f| f.healthy && f.durable_lsn >= p.last_lsn)
            {
                return Ok(Some(start.elapsed()));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(None)
}

/// Every record of a node as (LSN, CRC), through its client port.
fn records(addr: SocketAddr) -> anyhow::Result<Vec<(u64, u32)>> {
    let mut c = Client::connect(addr, Duration::from_secs(5))?;
    let mut out = Vec::new();
    let mut from = logship::Lsn(1);
    loop {
        let batch = c.read(from, 4 << 20)?;
        let Some(last) = batch.last() else {
            return Ok(out);
        };
        from = last.lsn.next();
        out.extend(batch.iter().map(|r| (r.lsn.0, r.crc)));
    }
}

fn summary(
    cluster: &Cluster,
    stats: &LoadStats,
    start: Instant,
    caught_up: Option<Duration>,
    after_restart: Option<(Duration, u64)>,
) -> anyhow::Result<()> {
    let h = stats.total.lock().clone();
    let acked = stats.acked.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    println!("\nsummary");
    println!(
        "  acknowledged at remote_durable: {acked} records, {:.0} records/s",
        acked as f64 / secs
    );
    println!(
        "  commit latency: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
        h.max() as f64 / 1e3
    );
    let errors = stats.errors.lock().clone();
    if !errors.is_empty() {
        println!("  errors: {errors:?}");
    }
    if let Some((d, behind)) = after_restart {
        println!(
            "  a1 after its restart: {behind} records behind, caught up (within {CAUGHT_UP_RECORDS}) in {:.2} s while the load went on",
            d.as_secs_f64()
        );
    }
    match caught_up {
        Some(d) => println!(
            "  after the load: every follower at the primary's last LSN within {:.2} s",
            d.as_secs_f64()
        ),
        None => println!("  a1 did NOT catch up within {WAIT_BOUND:?}"),
    }
    let want = records(cluster.primary_client)?;
    for (name, addr) in cluster.clients.iter().filter(|(n, _)| n != "p") {
        let got = records(*addr)?;
        let same = got == want;
        println!(
            "  {name}: {} records, {}",
            got.len(),
            if same {
                "identical to the primary's (LSN and CRC of every record)"
            } else {
                "DIFFERENT from the primary's"
            }
        );
        if !same {
            bail!("{name} does not hold the primary's records");
        }
    }
    if let Some(s) = cluster.status("p") {
        println!(
            "\nlogship status --addr {}\n{}",
            cluster.primary_client,
            super::status::render(&s)
        );
    }
    Ok(())
}
