//! `logship demo`: three members `n1`, `n2`, `n3` on 127.0.0.1 that elect their primary, run
//! as child processes in a temporary directory, under load with a live view, in two acts: a
//! follower is killed with SIGKILL and restarted (it catches up from the primary's log), then
//! the primary is killed (the others notice, elect a new primary, and the load clients follow
//! the leader hints there) and restarted (it rejoins as a follower). It ends by checking that
//! every member holds the same records, every acknowledged append among them, and a summary.
//!
//! Keys: the demo writes the cluster key and one client key (`demo.key`, grants `append,read`),
//! whose line is every member's client keys file (`[clients]`): the load clients, the live view
//! and the final check all authenticate with it.
//!
//! Ports: the demo binds each member's replication listener itself (127.0.0.1, port 0), writes
//! the ports into every member's `[cluster]` table, and hands each node its listener as
//! descriptor 3 (`LOGSHIP_REPLICATION_FD`), again on each restart, so that no replication port
//! is ever free for something else to take before its node serves it. Client and HTTP ports are
//! picked by each node (port 0) and read from the line it prints once up; a restarted node
//! binds the client port it had, which the other members give clients as the leader hint.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use logship::replication::link::Phase;
use logship::replication::node::ElectionStatus;
use logship::replication::protocol::client_auth::ClientKey;
use logship::replication::status::FollowerStatus;
use logship::replication::transport::handover;
use logship::{Client, DurabilityLevel, NodeStatus};

use super::load::{start_clients, LoadArgs, LoadStats};
use super::node::REPLICATION_FD_ENV;
use super::status::bytes;

/// The members, in start order.
const MEMBERS: [&str; 3] = ["n1", "n2", "n3"];
/// The sync quorum: besides the primary, one member has an append on disk.
const QUORUM: &str = "ANY 1";
/// The shortest `--duration` that leaves room for every act.
const MIN_DURATION: f64 = 6.0;
/// How often the live view redraws on a terminal, and how often it is printed otherwise.
const FRAME: Duration = Duration::from_millis(500);
const PLAIN_FRAME: Duration = Duration::from_secs(2);
/// How often the members' status is read, which times what happens.
const POLL: Duration = Duration::from_millis(25);
/// A member counts as caught up this close to the primary (the live stream is never at 0).
const CAUGHT_UP_RECORDS: u64 = 100;
/// Bound on each wait for something to happen.
const WAIT_BOUND: Duration = Duration::from_secs(30);
/// The descriptor number a node's replication listener has in the node's process.
const CHILD_FD: RawFd = 3;
/// The demo client's key file (its line is also the nodes' client keys file).
const CLIENT_KEY_FILE: &str = "demo.key";
/// A port not chosen yet: the node binds port 0 and prints what it got.
const UNBOUND: &str = "127.0.0.1:0";
/// Columns that explanations are wrapped to.
const WIDTH: usize = 100;

/// Arguments of `logship demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Seconds of load, at least 6 (the acts need that long).
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    /// Load clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Record size in bytes (at least 16).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Keep the temporary directory (configs, logs, data) and print its path.
    #[arg(long)]
    keep: bool,
}

/// When each act begins, from the start of the load; everything scales with `--duration`.
#[derive(Debug)]
struct Schedule {
    kill_follower: Duration,
    restart_follower: Duration,
    kill_primary: Duration,
    /// How long the load runs on the new primary before the old one restarts.
    old_primary_down: Duration,
    end: Duration,
}

impl Schedule {
    /// At the shortest duration (6 s): a follower down from 0.75 s to 2 s, the primary killed
    /// at 2.5 s (or once the follower caught up), which leaves 3.5 s for the election (1-2 s),
    /// 0.5 s of load on the new primary, and the old primary's restart.
    fn new(duration: f64) -> Schedule {
        let u = |x: f64| Duration::from_secs_f64(x * duration / MIN_DURATION);
        Schedule {
            kill_follower: u(0.75),
            restart_follower: u(2.0),
            kill_primary: u(2.5),
            old_primary_down: u(0.5),
            end: u(6.0),
        }
    }
}

/// `text` wrapped to [`WIDTH`] columns after `first`, continuation lines indented as far.
fn wrap(first: &str, text: &str) -> String {
    wrap_hanging(first, first.chars().count(), text)
}

/// `text` wrapped to [`WIDTH`] columns after `first`, continuation lines indented by `indent`;
/// a number stays on the line of the unit after it.
fn wrap_hanging(first: &str, indent: usize, text: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for word in text.split(' ') {
        let unit = ["s", "ms", "B"].contains(&word.trim_end_matches([',', ';', ')', '.']));
        match words.last_mut() {
            Some(last) if unit && last.parse::<f64>().is_ok() => *last = format!("{last} {word}"),
            _ => words.push(word.to_string()),
        }
    }
    let mut out = first.to_string();
    let mut col = first.chars().count();
    for (i, word) in words.iter().enumerate() {
        let w = word.chars().count();
        if i > 0 && col + 1 + w > WIDTH {
            let _ = write!(out, "\n{}", " ".repeat(indent));
            col = indent;
        } else if i > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += w;
    }
    out
}

/// Runs `logship demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.duration >= MIN_DURATION,
        "--duration must be at least {MIN_DURATION} seconds: a follower is killed and restarted, \
         then the primary is killed, a new one elected and the old one restarted, all under load"
    );
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(
        args.size >= 16,
        "--size must be at least 16 (the payload names its client and sequence)"
    );
    let tmp = tempfile::Builder::new().prefix("logship-demo-").tempdir()?;
    let intro = format!(
        "three members, {}, on 127.0.0.1 elect their primary, with the quorum {QUORUM}: an \
         append is acknowledged once the primary and one other member have it on disk, so the \
         primary can die without losing anything acknowledged.",
        MEMBERS.join(", ")
    );
    println!("{}", wrap("logship demo: ", &intro));
    println!(
        "cluster directory: {} (configs, logs, data)",
        tmp.path().display()
    );
    let result = demo(&args, tmp.path());
    if args.keep || result.is_err() {
        // On failure too: the nodes' logs tell what went wrong.
        println!("kept {}", tmp.keep().display());
    }
    result.map(|()| ExitCode::SUCCESS)
}

fn demo(args: &DemoArgs, dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut cluster = Cluster::start(dir)?;
    let (p, epoch) = wait_elected(&mut cluster)?;
    let elected = format!(
        "{} elected primary in epoch {epoch}, {:.2} s after n1 started: every member starts as \
         a follower, and the first whose election timeout (random, 1-2 s) runs out without a \
         primary asks the others for their votes.",
        MEMBERS[p],
        started.elapsed().as_secs_f64()
    );
    println!("{}", wrap("", &elected));
    let load = format!(
        "{} clients append {} B records at remote_durable for {:.0} s. Each starts at some \
         member; one that is not the primary answers not_primary with the primary's client \
         address (the leader hint), and the client goes there.",
        args.clients, args.size, args.duration
    );
    println!("{}", wrap("", &load));
    let stats = LoadStats::new();
    let ran = run_load(args, &mut cluster, &stats)?;
    summary(&mut cluster, &stats, &ran)
}

/// What the load and the acts came to.
struct Ran {
    acts: Acts,
    /// Seconds the load ran.
    secs: f64,
    /// Every acknowledged append: (LSN, CRC-32 of its payload).
    acked: Vec<(u64, u32)>,
}

/// Runs the load and, meanwhile, the acts.
fn run_load(
    args: &DemoArgs,
    cluster: &mut Cluster,
    stats: &std::sync::Arc<LoadStats>,
) -> anyhow::Result<Ran> {
    let load = LoadArgs {
        addr: cluster.members.iter().map(|m| m.client).collect(),
        rate: None,
        duration: args.duration,
        clients: args.clients,
        pipeline: 1,
        batch: 1,
        drivers: 0,
        size: args.size,
        durability: DurabilityLevel::RemoteDurable,
        acked: None,
        json: false,
        client_key: Some(cluster.key_file.clone()),
        tls: super::TlsArgs::default(),
    };
    let (tx, acked) = crossbeam_channel::unbounded();
    let start = Instant::now();
    // The load stops once the acts are done and the duration has passed, so the deadline
    // only bounds it.
    let deadline = start + Duration::from_secs_f64(args.duration) + WAIT_BOUND * 4;
    let threads = start_clients(&load, deadline, stats, Some(tx))?;
    let acts = acts(
        &mut Live::new(cluster, stats, start),
        &Schedule::new(args.duration),
    );
    stats.stop.store(true, Ordering::Release);
    for t in threads {
        let _ = t.join();
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Ran {
        acts: acts?,
        secs,
        acked: acked.try_iter().collect(),
    })
}

/// One member: its files, its addresses, its process and a connection for its status.
struct Member {
    name: &'static str,
    config: PathBuf,
    log: PathBuf,
    replication: SocketAddr,
    client: SocketAddr,
    child: Option<Child>,
    conn: Option<Client>,
}

/// The members' processes; dropping it stops them.
struct Cluster {
    exe: PathBuf,
    members: Vec<Member>,
    /// The demo client's key (every node has `[clients]`), and its file.
    key: ClientKey,
    key_file: PathBuf,
}

/// A member's config: its client port, and the table of every member with the client
/// addresses known so far (the leader hints it gives clients).
fn member_config(
    name: &str,
    client: &str,
    table: &[(&str, SocketAddr, Option<SocketAddr>)],
) -> String {
    let mut rows = String::new();
    for (id, replication, client) in table {
        let client = client.map_or(String::new(), |c| format!(", client = \"{c}\""));
        let _ = writeln!(
            rows,
            "  {{ id = \"{id}\", replication = \"{replication}\"{client} }},"
        );
    }
    format!(
        "[node]\nid = \"{name}\"\ncluster_id = \"demo\"\nkey_file = \"cluster.key\"\n\
         data_dir = \"data/{name}\"\nlisten_client = \"{client}\"\nlisten_http = \"{UNBOUND}\"\n\
         \n[clients]\nkeys_file = \"clients.keys\"\n\
         \n[cluster]\nquorum = \"{QUORUM}\"\nmembers = [\n{rows}]\n\
         \n# Members come back within seconds here: try a failed link again soon.\n\
         [breaker]\nfailure_threshold = 3\nreset_timeout_ms = 500\n\n[backoff]\nmax_ms = 500\n"
    )
}

impl Cluster {
    /// Binds the replication listeners, then starts the members one after another, each with
    /// the client addresses of those started before it (a node's client port is known once it
    /// is up), and rewrites every config with all of them and the member's own client port,
    /// for restarts.
    fn start(dir: &Path) -> anyhow::Result<Cluster> {
        super::keygen::write_key(&dir.join("cluster.key"))?;
        // One client key for the load, the live view and the final check; the nodes' client
        // keys file holds the same line.
        let line =
            super::keygen::write_client_key(&dir.join(CLIENT_KEY_FILE), "demo", "append,read")?;
        std::fs::write(dir.join("clients.keys"), format!("{line}\n"))
            .context("writing clients.keys")?;
        let key = super::client_key(Some(&dir.join(CLIENT_KEY_FILE)))?
            .context("the demo's client key")?;
        let listeners = (MEMBERS.iter())
            .map(|_| TcpListener::bind(UNBOUND).context("binding a replication listener"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut c = Cluster {
            exe: std::env::current_exe().context("finding the logship binary")?,
            members: Vec::new(),
            key,
            key_file: dir.join(CLIENT_KEY_FILE),
        };
        for (&name, l) in MEMBERS.iter().zip(&listeners) {
            c.members.push(Member {
                name,
                config: dir.join(format!("{name}.toml")),
                log: dir.join(format!("{name}.log")),
                replication: l.local_addr()?,
                client: UNBOUND.parse()?,
                child: None,
                conn: None,
            });
        }
        for (i, listener) in listeners.into_iter().enumerate() {
            c.write_config(i, UNBOUND, i)?;
            let from = log_len(&c.members[i].log);
            c.spawn(i, listener)?;
            c.members[i].client = c.wait_up(i, from)?;
        }
        for i in 0..c.members.len() {
            let client = c.members[i].client.to_string();
            c.write_config(i, &client, c.members.len())?;
        }
        c.print_members();
        Ok(c)
    }

    fn print_members(&self) {
        let how = format!(
            "members up (replication ports bound by the demo and handed to each node as \
             descriptor {CHILD_FD}, so none is ever free for another program to take; client \
             ports picked by the nodes):"
        );
        println!("{}", wrap("", &how));
        for m in &self.members {
            println!(
                "  {}  replication {}  client {}",
                m.name, m.replication, m.client
            );
        }
    }

    /// Writes member `i`'s config with the client addresses of the first `known` members.
    fn write_config(&self, i: usize, client: &str, known: usize) -> anyhow::Result<()> {
        let table: Vec<_> = (self.members.iter().enumerate())
            .map(|(j, m)| (m.name, m.replication, (j < known).then_some(m.client)))
            .collect();
        let m = &self.members[i];
        std::fs::write(&m.config, member_config(m.name, client, &table))
            .with_context(|| format!("writing {}", m.config.display()))
    }

    /// Starts member `i` with `listener` as its descriptor [`CHILD_FD`].
    fn spawn(&mut self, i: usize, listener: TcpListener) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .with_context(|| format!("opening {}", m.log.display()))?;
        let mut command = Command::new(&self.exe);
        command
            .args(["node", "--config"])
            .arg(&m.config)
            .env("RUST_LOG", "info")
            .env(REPLICATION_FD_ENV, CHILD_FD.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        handover::pass_fd(&mut command, listener.into(), CHILD_FD);
        let child = command.spawn();
        // `command` holds the demo's copy of the listener: from here on the node's is the
        // only one, and the port closes when the node dies.
        drop(command);
        m.child = Some(child.with_context(|| format!("starting node {}", m.name))?);
        Ok(())
    }

    /// Starts member `i` again, on a listener bound to its replication address again (a
    /// killed node's socket can outlive its process briefly, while the kernel tears down an
    /// io_uring ring).
    fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let (name, addr) = (self.members[i].name, self.members[i].replication);
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(addr) {
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                bound => break bound,
            }
        };
        let listener = listener
            .with_context(|| format!("binding {name}'s replication address {addr} again"))?;
        self.spawn(i, listener)
    }

    /// The client address member `i` printed once up, in its log after byte `from`.
    fn wait_up(&mut self, i: usize, from: usize) -> anyhow::Result<SocketAddr> {
        let deadline = Instant::now() + WAIT_BOUND;
        let (name, log) = (self.members[i].name, self.members[i].log.clone());
        loop {
            if let Some(addr) = printed_client(&log, from, name) {
                return Ok(addr);
            }
            self.check_running()?;
            if Instant::now() >= deadline {
                bail!("node {name} did not start within {WAIT_BOUND:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs member `i`.
    fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.conn = None;
        if let Some(mut child) = m.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An error naming a member that exited by itself.
    fn check_running(&mut self) -> anyhow::Result<()> {
        for m in &mut self.members {
            if let Some(Ok(Some(status))) = m.child.as_mut().map(Child::try_wait) {
                m.child = None;
                bail!("node {} exited ({status}); see {}", m.name, m.log.display());
            }
        }
        Ok(())
    }

    /// Stops every member with SIGTERM (SIGKILL after 5 s).
    fn stop_all(&mut self) {
        for m in &mut self.members {
            m.conn = None;
            if let Some(mut c) = m.child.take() {
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

    /// Member `i`'s status, through a connection kept open; `None` if it is down or silent.
    fn status(&mut self, i: usize) -> Option<NodeStatus> {
        let m = &mut self.members[i];
        m.child.as_ref()?;
        if m.conn.is_none() {
            let timeout = Duration::from_millis(500);
            let mut c = Client::connect_with_key(m.client, timeout, &self.key).ok()?;
            c.set_timeout(Duration::from_secs(1)).ok()?;
            m.conn = Some(c);
        }
        let status = m.conn.as_mut()?.status();
        if status.is_err() {
            m.conn = None;
        }
        status.ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn log_len(log: &Path) -> usize {
    std::fs::metadata(log).map_or(0, |m| m.len() as usize)
}

/// The client address in the "up" line `name` printed in its log after byte `from`.
fn printed_client(log: &Path, from: usize, name: &str) -> Option<SocketAddr> {
    let text = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(text.get(from..)?);
    let prefix = format!("logship node {name} up: ");
    let line = text.lines().find_map(|l| l.strip_prefix(&prefix))?;
    let client = line.split(", ").find_map(|f| f.strip_prefix("client "))?;
    client.parse().ok()
}

/// Waits for the members' first election: a primary that serves, every follower streaming.
fn wait_elected(c: &mut Cluster) -> anyhow::Result<(usize, u64)> {
    let start = Instant::now();
    loop {
        for i in 0..c.members.len() {
            let Some(s) = c.status(i) else { continue };
            let ready = s.primary.as_ref().is_some_and(|p| {
                p.serving
                    && p.followers.len() == c.members.len() - 1
                    && (p.followers.iter()).all(|f| f.healthy && f.phase == Phase::Streaming)
            });
            if ready {
                return Ok((i, s.epoch));
            }
        }
        c.check_running()?;
        if start.elapsed() > WAIT_BOUND {
            bail!("the members did not elect a primary within {WAIT_BOUND:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// The live view: polls every member, redraws a status frame, prints events as they happen.
struct Live<'a> {
    cluster: &'a mut Cluster,
    stats: &'a LoadStats,
    start: Instant,
    tty: bool,
    /// Lines of the frame on screen (terminal only), erased before anything else is printed.
    drawn: usize,
    next_frame: Duration,
    /// When the last frame was drawn and the acknowledgements then, for its rate.
    last: (Instant, u64),
    /// The last status read from each member.
    seen: Vec<Option<NodeStatus>>,
}

impl<'a> Live<'a> {
    fn new(cluster: &'a mut Cluster, stats: &'a LoadStats, start: Instant) -> Live<'a> {
        let seen = vec![None; cluster.members.len()];
        Live {
            cluster,
            stats,
            start,
            tty: std::io::stdout().is_terminal(),
            drawn: 0,
            next_frame: FRAME,
            last: (start, 0),
            seen,
        }
    }

    /// Time since the load started.
    fn t(&self) -> Duration {
        self.start.elapsed()
    }

    /// Prints lines that stay (above the live frame, on a terminal).
    fn say(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn);
            self.drawn = 0;
            self.next_frame = Duration::ZERO;
        }
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// Prints what just happened, after the time since the load started.
    fn event(&mut self, what: &str) {
        let text = wrap(&format!("[{:5.1} s] ", self.t().as_secs_f64()), what);
        self.say(&text);
    }

    /// Reads every member's status, stops at a member that exited, redraws when due.
    fn poll(&mut self) -> anyhow::Result<()> {
        self.cluster.check_running()?;
        for i in 0..self.seen.len() {
            self.seen[i] = self.cluster.status(i);
        }
        let t = self.t();
        if t >= self.next_frame {
            let frame = self.frame(t);
            let mut out = std::io::stdout().lock();
            if self.drawn > 0 {
                write!(out, "\x1b[{}A\x1b[J", self.drawn)?;
            }
            write!(out, "{frame}")?;
            out.flush()?;
            self.drawn = if self.tty { frame.lines().count() } else { 0 };
            self.next_frame = t + if self.tty { FRAME } else { PLAIN_FRAME };
        }
        Ok(())
    }

    /// Polls until `done` returns something; an error naming `what` after [`WAIT_BOUND`].
    fn wait_for<T>(
        &mut self,
        what: &str,
        mut done: impl FnMut(&mut Live<'a>) -> Option<T>,
    ) -> anyhow::Result<T> {
        let since = Instant::now();
        loop {
            self.poll()?;
            if let Some(v) = done(self) {
                return Ok(v);
            }
            if since.elapsed() > WAIT_BOUND {
                bail!("{what} did not happen within {WAIT_BOUND:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Polls (and redraws) until `t` from the start of the load.
    fn run_until(&mut self, t: Duration) -> anyhow::Result<()> {
        loop {
            self.poll()?;
            if self.t() >= t {
                return Ok(());
            }
            std::thread::sleep(POLL.min(t.saturating_sub(self.t())));
        }
    }

    /// The member that is primary (of the newest epoch, if two think so), and its status.
    fn primary(&self) -> Option<(usize, &NodeStatus)> {
        (self.seen.iter().enumerate())
            .filter_map(|(i, s)| Some((i, s.as_ref()?)))
            .filter(|(_, s)| s.primary.is_some())
            .max_by_key(|(_, s)| s.epoch)
    }

    /// How primary `p` sees follower `f`.
    fn link(&self, p: usize, f: usize) -> Option<&FollowerStatus> {
        let followers = &self.seen[p].as_ref()?.primary.as_ref()?.followers;
        followers.iter().find(|x| x.name == MEMBERS[f])
    }

    /// Whether primary `p` sees follower `f` streaming and within [`CAUGHT_UP_RECORDS`].
    fn caught_up(&self, p: usize, f: usize) -> bool {
        self.link(p, f).is_some_and(|l| {
            l.healthy
                && l.phase == Phase::Streaming
                && l.durable_behind.records <= CAUGHT_UP_RECORDS
        })
    }

    /// The load clients' errors by kind so far.
    fn errors(&self) -> BTreeMap<String, u64> {
        self.stats.errors.lock().clone()
    }
}

impl Live<'_> {
    fn frame(&mut self, t: Duration) -> String {
        let acked = self.stats.acked.load(Ordering::Relaxed);
        let dt = self.last.0.elapsed().as_secs_f64().max(1e-3);
        let rate = (acked - self.last.1) as f64 / dt;
        self.last = (Instant::now(), acked);
        let w = self.stats.take_window();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "t {:5.1} s   {:>8.0} records/s   commit p50 {:>6.2} ms  p99 {:>6.2} ms   acknowledged {acked}",
            t.as_secs_f64(),
            rate,
            w.value_at_quantile(0.5) as f64 / 1e3,
            w.value_at_quantile(0.99) as f64 / 1e3,
        );
        let primary = self.primary().map(|(i, _)| i);
        for (i, name) in MEMBERS.iter().enumerate() {
            let line = self.member_line(i, primary);
            let _ = writeln!(out, "  {name:<3} {line}");
        }
        out
    }

    /// Member `i` as the primary sees it, or as it tells itself when it is not followed.
    fn member_line(&self, i: usize, primary: Option<usize>) -> String {
        if self.cluster.members[i].child.is_none() {
            return "down".into();
        }
        let Some(s) = &self.seen[i] else {
            return "not answering".into();
        };
        if let Some(p) = &s.primary {
            let quorum = if p.quorum_available {
                "available"
            } else {
                "UNAVAILABLE"
            };
            return format!(
                "primary   epoch {}  commit LSN {}  quorum {} {quorum}",
                s.epoch, p.commit.remote_durable, p.quorum,
            );
        }
        match primary.and_then(|p| self.link(p, i)) {
            Some(f) => follower_line(f),
            None if s.election.as_ref().is_some_and(|e| e.campaigning) => {
                format!("follower  epoch {}  asking for votes", s.epoch)
            }
            None => format!("follower  epoch {}  waiting for a primary", s.epoch),
        }
    }
}

fn follower_line(f: &FollowerStatus) -> String {
    let state = match f.phase {
        Phase::Idle => "no link",
        Phase::Connecting => "connecting",
        Phase::Handshake => "handshake",
        Phase::CatchingUp => "catching-up",
        Phase::Streaming => "streaming",
    };
    let lag = f
        .flush_lag_ms
        .map_or("-".to_string(), |v| format!("{v:.2} ms"));
    format!(
        "follower  {state:<11} {:<9} breaker {:<9} behind {:>9} rec {:>10}   flush lag {lag}",
        if f.healthy { "healthy" } else { "unhealthy" },
        f.breaker,
        f.durable_behind.records,
        bytes(f.durable_behind.bytes),
    )
}

/// What the acts found, for the summary.
struct Acts {
    follower: FollowerAct,
    failover: FailoverAct,
    /// How long the load ran past `--duration` for the last act to finish.
    overran: Duration,
}

fn acts(live: &mut Live<'_>, s: &Schedule) -> anyhow::Result<Acts> {
    let follower = follower_act(live, s)?;
    let failover = failover_act(live, s)?;
    let overran = live.t().saturating_sub(s.end);
    live.run_until(s.end)?;
    live.drawn = 0; // the last frame stays
    println!();
    Ok(Acts {
        follower,
        failover,
        overran,
    })
}

/// What act 1 found.
struct FollowerAct {
    name: &'static str,
    down: Duration,
    behind: u64,
    caught_up: Duration,
}

/// Act 1: a follower is killed, restarted a while later, and catches up under load.
fn follower_act(live: &mut Live<'_>, s: &Schedule) -> anyhow::Result<FollowerAct> {
    live.run_until(s.kill_follower)?;
    let p = live.primary().context("no primary before act 1")?.0;
    // The first follower started: its table has the fewest client addresses (leader hints),
    // and its restart gives it all of them, so both survivors of act 2 know each other's.
    let v = (0..MEMBERS.len())
        .find(|i| *i != p)
        .context("no follower")?;
    let o = (0..MEMBERS.len())
        .find(|i| *i != p && *i != v)
        .context("one follower")?;
    let (pn, vn, on) = (MEMBERS[p], MEMBERS[v], MEMBERS[o]);
    live.say("\nact 1: a follower dies and comes back");
    live.cluster.kill(v);
    let killed = Instant::now();
    live.event(&format!(
        "{vn} (a follower) killed with SIGKILL. {pn}'s link to it fails and its breaker \
         opens; appends go on, as {on} alone completes the quorum."
    ));
    live.run_until(s.restart_follower)?;
    let behind = live.link(p, v).map_or(0, |f| f.durable_behind.records);
    live.cluster.restart(v)?;
    let restarted = Instant::now();
    let down = killed.elapsed();
    live.event(&format!(
        "{vn} restarted after {:.1} s down, {behind} records behind: it reconnects and \
         catches up from {pn}'s log while the load goes on.",
        down.as_secs_f64()
    ));
    live.wait_for(&format!("{vn} catching up"), |l| {
        l.caught_up(p, v).then_some(())
    })?;
    let caught_up = restarted.elapsed();
    live.event(&format!(
        "{vn} caught up (within {CAUGHT_UP_RECORDS} records of {pn}) {:.2} s after its restart.",
        caught_up.as_secs_f64()
    ));
    Ok(FollowerAct {
        name: vn,
        down,
        behind,
        caught_up,
    })
}

/// What act 2 found; times are from the kill, `rejoined` from the old primary's restart.
struct FailoverAct {
    old: &'static str,
    new: &'static str,
    epoch: u64,
    noticed: Vec<(&'static str, Duration)>,
    elected: Duration,
    resumed: Duration,
    rejoined: Duration,
    divergent: u64,
    /// The load clients' errors from the kill until the load went on.
    errors: BTreeMap<String, u64>,
}

/// Watches the survivors of the primary's kill: who noticed, who was elected, when the load
/// went on.
struct Failover {
    killed: Instant,
    old: usize,
    old_epoch: u64,
    before: Vec<Option<ElectionStatus>>,
    errors_before: BTreeMap<String, u64>,
    noticed: Vec<(&'static str, Duration)>,
    /// How the last survivor noticed, so the next one that noticed the same way says so.
    told: String,
    /// The new primary, its epoch, when, and the acknowledgements then.
    elected: Option<(usize, u64, Duration, u64)>,
    resumed: Option<(Duration, BTreeMap<String, u64>)>,
}

impl Failover {
    /// Tells what changed since the last poll; `Some` once every survivor noticed and the load
    /// goes on at the new primary.
    fn step(&mut self, live: &mut Live<'_>) -> Option<()> {
        let since = self.killed.elapsed();
        let mut news = Vec::new();
        for i in (0..MEMBERS.len()).filter(|i| *i != self.old) {
            let Some(s) = &live.seen[i] else { continue };
            if !self.noticed.iter().any(|(n, _)| *n == MEMBERS[i]) {
                news.extend(noticed(self.before[i].as_ref(), s, self.old_epoch).map(|n| (n, i)));
            }
        }
        // Seen in the same poll: the one that asked for votes first, then those that voted.
        news.sort();
        for ((_, how), i) in news {
            self.noticed.push((MEMBERS[i], since));
            let told = std::mem::replace(&mut self.told, how.clone());
            let how = if told == how { "the same.".into() } else { how };
            let at = since.as_secs_f64();
            live.event(&format!(
                "{} noticed, {at:.2} s after the kill: {how}",
                MEMBERS[i]
            ));
        }
        if self.elected.is_none() {
            self.elected = Some(self.elected_now(live, since)?);
        }
        let (new, _, _, acked_then) = self.elected?;
        if self.resumed.is_none() && live.stats.acked.load(Ordering::Relaxed) > acked_then {
            let errors = since_kill(&self.errors_before, &live.errors());
            let (old, new) = (MEMBERS[self.old], MEMBERS[new]);
            live.event(&format!(
                "the load goes on at {new}, {:.2} s after the kill. Since the kill the clients \
                 had {}: a client whose connection to {old} failed tried the next member, and \
                 not_primary answers sent it on to the primary.",
                since.as_secs_f64(),
                kinds(&errors)
            ));
            self.resumed = Some((since, errors));
        }
        (self.resumed.is_some() && self.noticed.len() == MEMBERS.len() - 1).then_some(())
    }

    /// The new primary, once there is one, told as an event.
    fn elected_now(
        &self,
        live: &mut Live<'_>,
        since: Duration,
    ) -> Option<(usize, u64, Duration, u64)> {
        let (i, epoch) = (live.primary())
            .filter(|(_, s)| s.epoch > self.old_epoch)
            .map(|(i, s)| (i, s.epoch))?;
        let acked = live.stats.acked.load(Ordering::Relaxed);
        let other = (0..MEMBERS.len()).find(|j| *j != i && *j != self.old)?;
        live.event(&format!(
            "{} elected primary in epoch {epoch}, {:.2} s after the kill, with its own vote and \
             {}'s (two of three); it writes the epoch's marker record and streams to {}.",
            MEMBERS[i],
            since.as_secs_f64(),
            MEMBERS[other],
            MEMBERS[other]
        ));
        Some((i, epoch, since, acked))
    }
}

/// How a survivor shows it noticed the primary is gone: its election counters or epoch moved.
fn noticed(
    before: Option<&ElectionStatus>,
    now: &NodeStatus,
    old_epoch: u64,
) -> Option<(u8, String)> {
    let e = now.election.as_ref()?;
    let b = before.cloned().unwrap_or_default();
    if e.pre_votes > b.pre_votes {
        let how = "no heartbeat within its election timeout, so it asked the others for a \
                   pre-vote (would they vote for it?).";
        return Some((0, how.into()));
    }
    if e.votes_granted > b.votes_granted {
        let whom = e.voted_for.as_deref().unwrap_or("a candidate");
        return Some((1, format!("it voted for {whom}.")));
    }
    let how = format!("it heard of epoch {} from the new primary.", now.epoch);
    (now.epoch > old_epoch).then_some((2, how))
}

/// The counts in `now` above those in `before`.
fn since_kill(
    before: &BTreeMap<String, u64>,
    now: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    (now.iter())
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// `n` and `what`, in the plural unless `n` is 1.
fn count(n: u64, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// Error counts as words: "12 connect errors, 30 not_primary answers".
fn kinds(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "no errors".into();
    }
    let words: Vec<String> = (errors.iter())
        .map(|(k, v)| match k.as_str() {
            "not_primary" => format!("{v} not_primary answers"),
            "connect" => format!("{v} failed connects"),
            "connection" => format!("{v} lost connections"),
            other => format!("{v} {other} errors"),
        })
        .collect();
    words.join(", ")
}

/// Act 2: the primary is killed; the others elect a new one, the load follows it there, and
/// the old primary, restarted, rejoins as a follower.
fn failover_act(live: &mut Live<'_>, s: &Schedule) -> anyhow::Result<FailoverAct> {
    live.run_until(s.kill_primary)?;
    let (p, epoch) = (live.primary())
        .map(|(i, s)| (i, s.epoch))
        .context("no primary before act 2")?;
    live.say("\nact 2: the primary dies");
    let before = (live.seen.iter())
        .map(|s| s.as_ref().and_then(|s| s.election.clone()))
        .collect();
    let errors_before = live.errors();
    live.cluster.kill(p);
    let mut watch = Failover {
        killed: Instant::now(),
        old: p,
        old_epoch: epoch,
        before,
        errors_before,
        noticed: Vec::new(),
        told: String::new(),
        elected: None,
        resumed: None,
    };
    live.event(&format!(
        "{} (the primary) killed with SIGKILL. No append is acknowledged until the others \
         notice, by hearing no heartbeat within their election timeout, and elect a new primary.",
        MEMBERS[p]
    ));
    live.wait_for("a new primary", |l| watch.step(l))?;
    let (new, new_epoch, elected, _) = watch.elected.context("elected")?;
    let (resumed, errors) = watch.resumed.context("resumed")?;
    let until = live.t() + s.old_primary_down;
    live.run_until(until)?;
    let (rejoined, divergent) = rejoin(live, p, new, epoch, new_epoch)?;
    Ok(FailoverAct {
        old: MEMBERS[p],
        new: MEMBERS[new],
        epoch: new_epoch,
        noticed: watch.noticed,
        elected,
        resumed,
        rejoined,
        divergent,
        errors,
    })
}

/// Restarts the old primary `old` and waits until it follows `new` in `epoch` and caught up;
/// returns the time that took and the records it cut (written in `old_epoch`, never
/// acknowledged).
fn rejoin(
    live: &mut Live<'_>,
    old: usize,
    new: usize,
    old_epoch: u64,
    epoch: u64,
) -> anyhow::Result<(Duration, u64)> {
    let (on, nn) = (MEMBERS[old], MEMBERS[new]);
    live.cluster.restart(old)?;
    let restarted = Instant::now();
    live.event(&format!(
        "{on} restarted: it hears of epoch {epoch} from {nn}, cuts any records it wrote that \
         no quorum acknowledged, and follows {nn}."
    ));
    let what = format!("{on} rejoining as a follower");
    let divergent = live.wait_for(&what, |l| {
        let s = l.seen[old].as_ref()?;
        let follows = s.primary.is_none()
            && s.epoch >= epoch
            && s.follower.as_ref().is_some_and(|f| f.connected);
        (follows && l.caught_up(new, old)).then_some(s.divergent_records)
    })?;
    let took = restarted.elapsed();
    let cut = match divergent {
        0 => "it had no records to cut".to_string(),
        n => format!(
            "it cut {} of epoch {old_epoch} that no quorum acknowledged (kept in a side file in \
             its data directory)",
            count(n, "record")
        ),
    };
    live.event(&format!(
        "{on} rejoined as a follower of {nn} in epoch {epoch} and caught up, {:.2} s after its \
         restart; {cut}.",
        took.as_secs_f64()
    ));
    Ok((took, divergent))
}

/// Waits until every follower holds the primary's last LSN; returns the primary, its last
/// LSN and the wait.
fn converge(c: &mut Cluster) -> anyhow::Result<(usize, u64, Duration)> {
    let start = Instant::now();
    while start.elapsed() < WAIT_BOUND {
        for i in 0..c.members.len() {
            let Some(p) = c.status(i).and_then(|s| s.primary) else {
                continue;
            };
            let done = p.followers.len() == c.members.len() - 1
                && (p.followers.iter()).all(|f| f.healthy && f.durable_lsn >= p.last_lsn);
            if done {
                return Ok((i, p.last_lsn, start.elapsed()));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the followers did not reach the primary's last LSN within {WAIT_BOUND:?} after the load")
}

/// One record as compared across members: LSN, epoch, the record's CRC, the CRC-32 of its
/// payload (what the load clients noted for each acknowledged append), payload length.
type Rec = (u64, u64, u32, u32, usize);

/// Every record of a member, through its client port.
fn records(addr: SocketAddr, key: &ClientKey) -> anyhow::Result<Vec<Rec>> {
    let mut c = Client::connect_with_key(addr, Duration::from_secs(5), key)?;
    let mut out = Vec::new();
    let mut from = logship::Lsn(1);
    loop {
        let batch = c.read(from, 4 << 20)?;
        let Some(last) = batch.last() else {
            return Ok(out);
        };
        from = last.lsn.next();
        out.extend(batch.iter().map(|r| {
            let payload_crc = crc32fast::hash(&r.payload);
            (r.lsn.0, r.epoch.0, r.crc, payload_crc, r.payload.len())
        }));
    }
}

/// Every member holds the same records as the primary `p`, and every acknowledged append is
/// among them at its LSN with its CRC; returns the lines that say so.
fn check_records(c: &Cluster, p: usize, acked: &[(u64, u32)]) -> anyhow::Result<Vec<String>> {
    let want =
        records(c.members[p].client, &c.key).with_context(|| format!("reading {}", MEMBERS[p]))?;
    for m in c.members.iter().filter(|m| m.name != MEMBERS[p]) {
        let got = records(m.client, &c.key).with_context(|| format!("reading {}", m.name))?;
        if got != want {
            let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
            bail!(
                "{} holds different records from {} ({} records, {} there): they differ from \
                 LSN {}",
                m.name,
                MEMBERS[p],
                got.len(),
                want.len(),
                same + 1
            );
        }
    }
    let crc_at = |lsn: u64| (want.binary_search_by_key(&lsn, |r| r.0).ok()).map(|i| want[i].3);
    let missing = (acked.iter())
        .filter(|(lsn, crc)| crc_at(*lsn) != Some(*crc))
        .count();
    let mut lsns: Vec<u64> = acked.iter().map(|a| a.0).collect();
    lsns.sort_unstable();
    lsns.dedup();
    let twice = acked.len() - lsns.len();
    if missing > 0 || twice > 0 {
        bail!("{missing} acknowledged appends are missing or different, {twice} LSNs were acknowledged twice");
    }
    let markers = want.iter().filter(|r| r.4 == 0).count();
    let other = want.len() - acked.len() - markers;
    Ok(vec![
        format!(
            "{}: {} records each, identical (LSN, epoch and CRC of every record)",
            MEMBERS.join(", "),
            want.len()
        ),
        format!(
            "every acknowledged append is on every member: {} LSNs, each with the CRC-32 of \
             what was sent",
            acked.len()
        ),
        format!(
            "the other {}: {}, {} whose acknowledgement was lost with the killed primary",
            count((markers + other) as u64, "record"),
            count(markers as u64, "epoch marker"),
            count(other as u64, "append")
        ),
    ])
}

fn summary(c: &mut Cluster, stats: &LoadStats, ran: &Ran) -> anyhow::Result<()> {
    let (acts, secs, acked) = (&ran.acts, ran.secs, &ran.acked);
    let (p, last_lsn, converged) = converge(c)?;
    if let Some(s) = c.status(p) {
        let addr = c.members[p].client;
        println!(
            "logship status --addr {addr} --client-key {CLIENT_KEY_FILE}\n{}",
            super::status::render(&s)
        );
    }
    let ms = |us: u64| us as f64 / 1e3;
    let h = stats.total.lock().clone();
    let mut lines = vec![
        format!(
            "load: {secs:.1} s, {} appends acknowledged at remote_durable, {:.0} per second",
            acked.len(),
            acked.len() as f64 / secs
        ),
        format!(
            "commit latency: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max())
        ),
    ];
    if !acts.overran.is_zero() {
        let over = acts.overran.as_secs_f64();
        lines.push(format!(
            "the load ran {over:.1} s past --duration for the last act to finish"
        ));
    }
    lines.extend(act_lines(acts));
    lines.push(format!(
        "after the load: every member at {}'s last LSN, {last_lsn}, within {:.2} s",
        MEMBERS[p],
        converged.as_secs_f64()
    ));
    lines.extend(check_records(c, p, acked)?);
    println!("summary");
    for line in lines {
        println!("{}", wrap_hanging("  ", 4, &line));
    }
    c.stop_all();
    Ok(())
}

/// The summary's lines about the acts.
fn act_lines(acts: &Acts) -> Vec<String> {
    let (f, o) = (&acts.follower, &acts.failover);
    let secs = |d: Duration| d.as_secs_f64();
    let noticed: Vec<String> = (o.noticed.iter())
        .map(|(n, d)| format!("{n} after {:.2} s", secs(*d)))
        .collect();
    vec![
        format!(
            "act 1: {} down {:.1} s, {} records behind at its restart, caught up {:.2} s later",
            f.name,
            secs(f.down),
            f.behind,
            secs(f.caught_up)
        ),
        format!(
            "act 2: {} killed; noticed by {}; {} elected in epoch {} after {:.2} s; the load on \
             {} after {:.2} s ({} meanwhile); {} rejoined as a follower {:.2} s after its \
             restart, cutting {}",
            o.old,
            noticed.join(" and "),
            o.new,
            o.epoch,
            secs(o.elected),
            o.new,
            secs(o.resumed),
            kinds(&o.errors),
            o.old,
            secs(o.rejoined),
            count(o.divergent, "record")
        ),
    ]
}
