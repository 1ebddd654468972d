//! Where the microseconds of one client's commit go: a primary with one sync follower, both in
//! this process, one network client at `remote_durable` on the primary's client port, and
//! `perf trace` attached to this process recording every thread's socket, write and
//! fdatasync system calls with their times. Each commit is one pass through the same chain of
//! calls (the client's send, the port's receive, the primary's write and fdatasync, the send
//! to the follower, the follower's receive, write and fdatasync, its acknowledgement, the
//! primary's receive, the port's answer, the client's receive); the breakdown is the median
//! time between consecutive links of the chain, over every commit traced.
//!
//! Beside it, the same for the ideal commit (`replicate::ideal`, through the network with one
//! follower: a port thread and a follower thread doing the same system calls and nothing
//! else), as many commits right after logship's, under the same trace: what each span costs
//! logship over plain threads. And, without the trace, each thread's CPU per commit (its
//! on-CPU time from the scheduler over the untraced commits) for both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use logship_replicator::client::{Client, ClientTls};
use logship_replicator::protocol::DurabilityLevel;

use crate::machine::{threads_cpu, threads_cpu_since, ThreadCpu};
use crate::replicate::cluster::{Cluster, NodeSettings};
use crate::replicate::ideal::{IdealCommit, IdealHow};
use crate::replicate::plan::Topology;
use crate::scratch::Scratch;
use crate::stats::quantile;

/// Options of one run.
#[derive(Debug, Clone)]
pub struct BreakdownArgs {
    /// Commits traced.
    pub commits: usize,
    /// Record size.
    pub record_bytes: usize,
    /// Parent of the scratch directory.
    pub dir: PathBuf,
    /// Where the raw trace is kept (else it goes with the scratch directory).
    pub keep_trace: Option<PathBuf>,
    /// Node settings.
    pub settings: NodeSettings,
    /// TLS on both ports of both nodes (and the client's connection).
    pub tls: bool,
}

/// The client's thread name, by which the trace knows its calls.
const CLIENT_THREAD: &str = "bd-client";
/// How the ideal commit's threads' names begin.
const IDEAL_THREADS: &str = "bench-ideal";
/// Commits before anything is measured.
const WARM_UP: usize = 500;

/// What one run measured.
#[derive(Debug)]
pub struct Traced {
    /// The trace's text.
    pub text: String,
    /// Commit latencies (µs) of the client without the trace, then under it.
    pub untraced_us: Vec<f64>,
    /// Commit latencies (µs) under the trace.
    pub traced_us: Vec<f64>,
    /// The CPU each thread of the process used over the untraced commits.
    pub untraced_cpu: Vec<ThreadCpu>,
    /// The ideal commit (`replicate::ideal`, through the network with one follower) as many
    /// times, right after: its latencies (µs)...
    pub ideal_us: Vec<f64>,
    /// ...and the CPU each thread used over them...
    pub ideal_cpu: Vec<ThreadCpu>,
    /// ...and as many under the trace, after logship's.
    pub ideal_traced_us: Vec<f64>,
}

/// The client's two untraced measures, logship's commits and the ideal's.
#[derive(Debug, Default)]
struct Untraced {
    us: Vec<f64>,
    cpu: Vec<ThreadCpu>,
    ideal_us: Vec<f64>,
    ideal_cpu: Vec<ThreadCpu>,
}

/// Runs the cluster, then the client: `commits` commits untraced, then as many under
/// `perf trace`.
///
/// # Errors
/// When the cluster, the client or perf fails.
pub fn trace(args: &BreakdownArgs) -> anyhow::Result<Traced> {
    let scratch = Scratch::create(&args.dir)?;
    let cluster = Cluster::start(
        &scratch.path().join("cluster"),
        Topology::OneSync,
        args.settings,
        true,
        args.tls,
    )?;
    let tls = cluster.client_tls().cloned();
    let addr = cluster
        .primary()
        .client_addr()
        .ok_or_else(|| anyhow!("the primary has no client port"))?;
    let out = args
        .keep_trace
        .clone()
        .unwrap_or_else(|| scratch.path().join("perf.data"));
    let (commits, size) = (args.commits, args.record_bytes);
    let ideal_dir = scratch.path().to_path_buf();
    let client = std::thread::Builder::new()
        .name(CLIENT_THREAD.into())
        .spawn(move || {
            run_client((addr, tls.as_ref()), commits, size, (&out, &ideal_dir))
                .map(|(u, t)| (u, t, out))
        })
        .context("spawning the client")?;
    let joined = client
        .join()
        .map_err(|_| anyhow!("the client thread panicked"));
    cluster.shutdown()?;
    let (untraced, [traced_us, ideal_traced_us], out) = joined??;
    let text = script(&out)?;
    Ok(Traced {
        text,
        untraced_us: untraced.us,
        traced_us,
        untraced_cpu: untraced.cpu,
        ideal_us: untraced.ideal_us,
        ideal_cpu: untraced.ideal_cpu,
        ideal_traced_us,
    })
}

/// The client: warms up, commits untraced (each thread's CPU counted over them), then as many
/// ideal commits (the same, counted), then both again under perf. Returns the untraced
/// measures and the traced latencies of both.
fn run_client(
    (addr, tls): (std::net::SocketAddr, Option<&ClientTls>),
    commits: usize,
    size: usize,
    (out, ideal_dir): (&Path, &Path),
) -> anyhow::Result<(Untraced, [Vec<f64>; 2])> {
    let mut client =
        Client::connect_with(addr, Duration::from_secs(10), tls).context("connecting")?;
    let payload = Bytes::from(crate::raw::pattern(size));
    let mut commit = || -> anyhow::Result<f64> {
        let t = Instant::now();
        client.append(payload.clone(), DurabilityLevel::RemoteDurable)?;
        Ok(t.elapsed().as_secs_f64() * 1e6)
    };
    let how = IdealHow {
        network: true,
        handoff: false,
    };
    let mut ideal = IdealCommit::start(ideal_dir, Topology::OneSync, size, how)?
        .context("the ideal commit of one sync follower")?;
    let mut ideal_commit = || -> anyhow::Result<f64> {
        let t = Instant::now();
        ideal.commit()?;
        Ok(t.elapsed().as_secs_f64() * 1e6)
    };
    for _ in 0..WARM_UP {
        commit()?;
        ideal_commit()?;
    }
    let mut untraced = Untraced::default();
    (untraced.us, untraced.cpu) = counted(commits, &mut commit)?;
    (untraced.ideal_us, untraced.ideal_cpu) = counted(commits, &mut ideal_commit)?;
    let mut perf = start_perf(out)?;
    // perf attaches to every thread of the process before it records; give it that time.
    std::thread::sleep(Duration::from_millis(1500));
    let traced = (|| {
        let ours = (0..commits)
            .map(|_| commit())
            .collect::<anyhow::Result<_>>()?;
        let ideal = (0..commits)
            .map(|_| ideal_commit())
            .collect::<anyhow::Result<_>>()?;
        anyhow::Ok([ours, ideal])
    })();
    stop_perf(&mut perf)?;
    Ok((untraced, traced?))
}

/// `commits` runs of `commit` (each returning its latency in µs), with the CPU each thread of
/// the process used over them.
fn counted(
    commits: usize,
    mut commit: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<(Vec<f64>, Vec<ThreadCpu>)> {
    let before = threads_cpu();
    let us = (0..commits)
        .map(|_| commit())
        .collect::<anyhow::Result<_>>()?;
    Ok((us, threads_cpu_since(&before, &threads_cpu())))
}

/// System calls the chain is made of, by number (x86-64), and their names; and `io_uring_enter`,
/// counted beside them (an io_uring transport's sends and receives are ring operations).
const TRACED: [(u32, &str); 11] = [
    (0, "read"),
    (1, "write"),
    (18, "pwrite64"),
    (20, "writev"),
    (44, "sendto"),
    (45, "recvfrom"),
    (46, "sendmsg"),
    (47, "recvmsg"),
    (75, "fdatasync"),
    (296, "pwritev"),
    (426, "io_uring_enter"),
];

/// `perf record` of the entries and exits of [`TRACED`] calls of this process, into `out`
/// (kernel ring buffers, read by perf on its own: lighter on the traced threads than
/// `perf trace`, which decodes as it goes).
fn start_perf(out: &Path) -> anyhow::Result<Child> {
    let filter = TRACED
        .iter()
        .map(|(nr, _)| format!("id == {nr}"))
        .collect::<Vec<_>>()
        .join(" || ");
    Command::new("perf")
        .args(["record", "-q", "-m", "1024", "-o"])
        .arg(out)
        .args(["-e", "raw_syscalls:sys_enter", "--filter", &filter])
        .args(["-e", "raw_syscalls:sys_exit", "--filter", &filter])
        .args(["-p", &std::process::id().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting `perf record` (is perf installed, and are we root?)")
}

fn stop_perf(perf: &mut Child) -> anyhow::Result<()> {
    // perf writes out what it buffered when interrupted.
    let status = Command::new("kill")
        .args(["-INT", &perf.id().to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -INT of perf failed: {status}");
    }
    perf.wait().context("waiting for perf")?;
    Ok(())
}

/// The recorded calls as text, one event per line.
fn script(data: &Path) -> anyhow::Result<String> {
    let out = Command::new("perf")
        .args(["script", "-i"])
        .arg(data)
        .stderr(Stdio::inherit())
        .output()
        .context("running `perf script`")?;
    if !out.status.success() {
        bail!("perf script failed: {}", out.status);
    }
    String::from_utf8(out.stdout).context("perf script's output")
}

/// One completed system call from the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Start, µs from the trace's start.
    pub start: f64,
    /// End, µs.
    pub end: f64,
    /// Thread name (as the kernel keeps it: 15 bytes at most).
    pub comm: String,
    /// Thread id.
    pub tid: u32,
    /// System call name.
    pub name: String,
    /// Return value (bytes for reads and writes), or -1 for an error.
    pub ret: i64,
}

/// One line of `perf script`: a call's entry or exit.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    comm: String,
    tid: u32,
    /// µs.
    time: f64,
    nr: u32,
    /// `None` for an entry; the return value for an exit.
    ret: Option<i64>,
}

/// Parses `comm tid [cpu] secs.micros: raw_syscalls:sys_enter: NR n (...)` or
/// `... raw_syscalls:sys_exit: NR n = ret`.
pub fn parse_event(line: &str) -> Option<Event> {
    let (head, trace) = line.split_once("raw_syscalls:sys_")?;
    let mut head = head
        .split_whitespace()
        .rev()
        .filter(|t| !t.starts_with('['));
    let time: f64 = head.next()?.trim_end_matches(':').parse().ok()?;
    let tid = head.next()?.parse().ok()?;
    let comm = head.rev().collect::<Vec<_>>().join(" ");
    let (kind, rest) = trace.split_once(": NR ")?;
    let nr_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let nr = rest[..nr_end].parse().ok()?;
    let ret = match kind {
        "enter" => None,
        "exit" => Some(rest.rsplit_once("= ")?.1.trim().parse().ok()?),
        _ => return None,
    };
    Some(Event {
        comm,
        tid,
        time: time * 1e6,
        nr,
        ret,
    })
}

/// Pairs each thread's entries with their exits into calls.
pub fn calls(text: &str) -> Vec<Call> {
    let mut open: std::collections::HashMap<u32, Event> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for e in text.lines().filter_map(parse_event) {
        match e.ret {
            None => {
                open.insert(e.tid, e);
            }
            Some(ret) => {
                let Some(start) = open.remove(&e.tid).filter(|s| s.nr == e.nr) else {
                    continue;
                };
                let Some((_, name)) = TRACED.iter().find(|(nr, _)| *nr == e.nr) else {
                    continue;
                };
                out.push(Call {
                    start: start.time,
                    end: e.time,
                    comm: e.comm,
                    tid: e.tid,
                    name: (*name).to_owned(),
                    ret,
                });
            }
        }
    }
    out
}

/// What each span between two links is made of.
pub const SPANS: [&str; 9] = [
    "client → port: loopback send, the port reader's wake-up and read",
    "port → record frame sent: admission, the log queue (+ writer hand-off)",
    "primary → follower: loopback, the follower transport thread's wake-up and read",
    "follower read → its pwrite: checks, the replica, the log queue (+ writer hand-off)",
    "follower pwrite + fdatasync",
    "follower fdatasync → durable ack sent (by the thread that wrote)",
    "follower → primary: loopback, the primary transport thread's wake-up and read",
    "ack → answer: the quorum commit (+ the answering thread's wake-up, if not answered on the ack's)",
    "port → client: loopback, the client's wake-up and read",
];

/// One commit's chain: the time of each link (µs), and the primary's own write and
/// fdatasync (start, end), which run beside the follower's.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// Times of the links: the client sends; the port has read the request; the primary's
    /// writer sends the record; the follower has read it; the follower starts its write; its
    /// fdatasync returns; it sends its durable ack; the primary has read the ack; the port
    /// sends the answer; the client has read it.
    pub links: [f64; 10],
    /// The primary's pwrite start and fdatasync end.
    pub local: (f64, f64),
    /// The primary wrote on the port's thread that read the request (the lone client's
    /// write, `Completion::write_here`), not on its log's writer thread.
    pub primary_wrote_on_read: bool,
    /// The follower wrote on the thread that read the record (`Log::append_replicated_here`), not
    /// on its log's writer thread.
    pub follower_wrote_on_read: bool,
    /// The primary's thread that read the ack sent the answer (`client_port::answering_here`),
    /// not the port's answering thread.
    pub answered_on_ack: bool,
    /// The threads that read the request (the port's), the record (the follower's) and the
    /// acknowledgement (the primary's replication reader), by thread id.
    pub readers: [u32; 3],
    /// An ideal commit's chain (`replicate::ideal`: its port thread reads the request, sends
    /// the record, writes, reads the acknowledgement and answers), not logship's.
    pub ideal: bool,
}

fn is_recv(c: &Call) -> bool {
    matches!(c.name.as_str(), "recvfrom" | "read" | "recvmsg") && c.ret > 0
}

fn is_send(c: &Call) -> bool {
    matches!(c.name.as_str(), "sendto" | "write" | "writev" | "sendmsg") && c.ret > 0
}

fn is_write(c: &Call) -> bool {
    matches!(c.name.as_str(), "pwrite64" | "pwritev")
}

/// The thread roles, by name: the benchmark's client, the client port's answering thread
/// (`logship-client-…`; the trace keeps 15 bytes of a name), the log writers. The port's and
/// the nodes' connection readers are all `ls-rd-*`: the chain tells them apart by thread id
/// and by what they read.
fn role(c: &Call) -> &'static str {
    match c.comm.as_str() {
        CLIENT_THREAD => "client",
        "logship-writer" => "writer",
        name if name.starts_with("logship-client") => "port",
        _ => "other",
    }
}

/// The earliest call of `window` that satisfies `pred` at or after `t`, by its start (or, with
/// `at_end`, by its end: a receive counts when it returns).
fn earliest<'a>(
    window: &[&'a Call],
    t: f64,
    at_end: bool,
    pred: impl Fn(&Call) -> bool,
) -> Option<&'a Call> {
    let key = |c: &Call| if at_end { c.end } else { c.start };
    window
        .iter()
        .copied()
        .filter(|c| key(c) >= t && pred(c))
        .min_by(|a, b| key(a).total_cmp(&key(b)))
}

/// Follows one commit's chain from the client's send `send` to its next send at `until`.
fn chain(calls: &[Call], send: &Call, until: f64, record: i64) -> Option<Chain> {
    let window: Vec<&Call> = calls
        .iter()
        .filter(|c| c.end >= send.start && c.start <= until)
        .collect();
    let w = &window;
    let t0 = send.start;
    // The port's reader: the first to read a whole request after the client's send.
    let port = earliest(w, t0, true, |c| {
        role(c) == "other" && is_recv(c) && c.ret >= record
    })?;
    // The primary's writer thread sends the record frame, or the port's reader does when it
    // writes the lone client's record itself.
    let sent = earliest(w, port.end, false, |c| {
        (role(c) == "writer" || c.tid == port.tid) && is_send(c) && c.ret >= record
    })?;
    let pw = sent.tid;
    let side = |c: &Call| {
        c.tid != port.tid && (role(c) == "other" || (role(c) == "writer" && c.tid != pw))
    };
    let f_recv = earliest(w, sent.start, true, |c| {
        side(c) && is_recv(c) && c.ret >= record
    })?;
    // The follower's log writer thread, or the thread that read the record.
    let f_write = earliest(w, f_recv.end, false, |c| c.tid != pw && is_write(c))?;
    let f_sync = earliest(w, f_write.start, false, |c| {
        c.tid == f_write.tid && c.name == "fdatasync"
    })?;
    let ack = earliest(w, f_sync.end, false, |c| {
        (c.tid == f_write.tid || c.tid == f_recv.tid) && is_send(c)
    })?;
    // The ideal's port thread reads the acknowledgement itself (shorter than a request).
    let ideal = port.comm.starts_with(IDEAL_THREADS);
    let p_ack = earliest(w, ack.start, true, |c| {
        let reader = c.tid != port.tid || (ideal && c.ret < record);
        role(c) == "other" && c.tid != f_recv.tid && reader && is_recv(c)
    })?;
    let answer = earliest(w, p_ack.end, false, |c| {
        (role(c) == "port" || c.tid == port.tid || c.tid == p_ack.tid) && is_send(c)
    })?;
    let done = earliest(w, answer.start, true, |c| role(c) == "client" && is_recv(c))?;
    let p_write = earliest(w, port.end, false, |c| c.tid == pw && is_write(c))?;
    let p_sync = earliest(w, p_write.start, false, |c| {
        c.tid == pw && c.name == "fdatasync"
    })?;
    Some(Chain {
        links: [
            t0,
            port.end,
            sent.start,
            f_recv.end,
            f_write.start,
            f_sync.end,
            ack.start,
            p_ack.end,
            answer.start,
            done.end,
        ],
        local: (p_write.start, p_sync.end),
        primary_wrote_on_read: pw == port.tid,
        follower_wrote_on_read: f_write.tid == f_recv.tid,
        answered_on_ack: answer.tid == p_ack.tid,
        readers: [port.tid, f_recv.tid, p_ack.tid],
        ideal,
    })
}

/// The trace's calls by start time.
fn sorted_calls(text: &str) -> Vec<Call> {
    let mut calls = calls(text);
    calls.sort_by(|a, b| a.start.total_cmp(&b.start));
    calls
}

/// Every commit's chain in `calls` (sorted by start time); and how many commits could not be
/// followed.
pub fn chains(calls: &[Call], record: usize) -> (Vec<Chain>, usize) {
    let sends: Vec<&Call> = calls
        .iter()
        .filter(|c| role(c) == "client" && is_send(c))
        .collect();
    let record = i64::try_from(record).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    let mut lost = 0;
    for (i, send) in sends.iter().enumerate() {
        let until = sends.get(i + 1).map_or(f64::INFINITY, |n| n.start);
        match chain(calls, send, until, record) {
            Some(c) => out.push(c),
            None => lost += 1,
        }
    }
    (out, lost)
}

/// Each traced call's count between the first of `chains` and the end of the last, divided by
/// the chains, in [`TRACED`]'s order, as `name n.nn`.
fn per_commit(calls: &[Call], chains: &[&Chain]) -> String {
    let from = chains
        .iter()
        .map(|c| c.links[0])
        .fold(f64::INFINITY, f64::min);
    let to = chains
        .iter()
        .map(|c| c.links[9])
        .fold(f64::NEG_INFINITY, f64::max);
    let commits = chains.len().max(1) as f64;
    TRACED
        .iter()
        .map(|(_, name)| {
            let n = (calls.iter())
                .filter(|c| c.name == *name && c.start >= from && c.end <= to)
                .count();
            format!("{name} {:.2}", n as f64 / commits)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The printed breakdown of a run: logship's commits span by span beside the ideal's.
pub fn report(run: &Traced, record: usize) -> String {
    use std::fmt::Write as _;
    let calls = sorted_calls(&run.text);
    let (chains, lost) = chains(&calls, record);
    let (ideal, ours): (Vec<&Chain>, Vec<&Chain>) = chains.iter().partition(|c| c.ideal);
    let mut s = String::new();
    let p50 = |v: &[f64]| quantile(&mut v.to_vec(), 0.5);
    let _ = writeln!(
        s,
        "one client, remote_durable, 1 sync follower, {record} B records: commit p50 {:.1} µs \
         untraced, {:.1} µs under perf trace; {} commits followed through the trace, and {} \
         of the ideal commit's (p50 {:.1} µs under the trace); {lost} not",
        p50(&run.untraced_us),
        p50(&run.traced_us),
        ours.len(),
        ideal.len(),
        p50(&run.ideal_traced_us),
    );
    s.push_str(&spans_table(&ours, &ideal));
    let _ = writeln!(
        s,
        "system calls per commit, every thread of the process: logship {}; the ideal {}",
        per_commit(&calls, &ours),
        per_commit(&calls, &ideal),
    );
    s.push_str(&cpu_report(run, &ours));
    let here = |f: fn(&Chain) -> bool| ours.iter().filter(|c| f(c)).count();
    let _ = writeln!(
        s,
        "the primary wrote on the port's thread that read the request in {} of {} commits, the \
         follower on the thread that read the record in {} (else each on its log's writer \
         thread); the answer was sent by the thread that read the ack in {} (else by the port's \
         answering thread)",
        here(|c| c.primary_wrote_on_read),
        ours.len(),
        here(|c| c.follower_wrote_on_read),
        here(|c| c.answered_on_ack),
    );
    s
}

/// The spans' p50 and p90 of logship's chains beside the ideal commit's, the whole commit, and
/// the primary's own write beside them.
fn spans_table(ours: &[&Chain], ideal: &[&Chain]) -> String {
    use std::fmt::Write as _;
    let q = |chains: &[&Chain], f: &dyn Fn(&Chain) -> f64, p: f64| {
        quantile(&mut chains.iter().map(|c| f(c)).collect::<Vec<_>>(), p)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<92} {:>17} {:>17}",
        "span (p50 / p90 µs)", "logship", "the ideal"
    );
    let mut sums = [0.0, 0.0];
    let mut row = |what: &str, f: &dyn Fn(&Chain) -> f64, add: bool| {
        let (a, b) = (q(ours, f, 0.5), q(ideal, f, 0.5));
        if add {
            sums[0] += a;
            sums[1] += b;
        }
        let _ = writeln!(
            s,
            "{what:<92} {:>17} {:>17}",
            format!("{a:.1} / {:.1}", q(ours, f, 0.9)),
            format!("{b:.1} / {:.1}", q(ideal, f, 0.9)),
        );
    };
    for (i, span) in SPANS.iter().enumerate() {
        row(span, &|c: &Chain| c.links[i + 1] - c.links[i], true);
    }
    row(
        "client send → client read (the whole commit)",
        &|c: &Chain| c.links[9] - c.links[0],
        false,
    );
    row(
        "beside them, the primary's own pwrite + fdatasync",
        &|c: &Chain| c.local.1 - c.local.0,
        false,
    );
    let hidden = |chains: &[&Chain]| chains.iter().filter(|c| c.local.1 <= c.links[7]).count();
    let _ = writeln!(
        s,
        "(sums of the spans' p50s: {:.1} and {:.1} µs; the primary's fdatasync was over before \
         the ack was read in {} of {} and {} of {} commits)",
        sums[0],
        sums[1],
        hidden(ours),
        ours.len(),
        hidden(ideal),
        ideal.len(),
    );
    s
}

/// The thread most of `chains` name for reader `i` of [`Chain::readers`].
fn usual_reader(chains: &[&Chain], i: usize) -> Option<u32> {
    let mut tids: Vec<u32> = chains.iter().map(|c| c.readers[i]).collect();
    tids.sort_unstable();
    tids.chunk_by(|a, b| a == b)
        .max_by_key(|run| run.len())
        .map(|run| run[0])
}

/// Rows of the CPU table: (what, threads of logship's commit, threads of the ideal's).
type CpuRow = (
    &'static str,
    fn(&ThreadCpu, &[Option<u32>; 3]) -> bool,
    &'static [&'static str],
);

const CPU_ROWS: [CpuRow; 6] = [
    (
        "the client",
        |t, _| t.name == CLIENT_THREAD,
        &[CLIENT_THREAD],
    ),
    (
        "the port's reader: reads the request, sends the record, writes (ideal: and reads the ack)",
        |t, r| Some(t.tid) == r[0],
        &["bench-ideal-por"],
    ),
    (
        "the follower's reader: reads the record, writes, acknowledges",
        |t, r| Some(t.tid) == r[1],
        &["bench-ideal-fol"],
    ),
    (
        "the primary's replication reader: reads the ack, answers",
        |t, r| Some(t.tid) == r[2],
        &[],
    ),
    (
        "the logs' writer threads",
        |t, _| t.name == "logship-writer",
        &[],
    ),
    ("every other thread", |_, _| true, &[]),
];

/// `threads`' on-CPU, user and system time over `commits`, in µs per commit.
fn per_commit_cpu<'a>(
    threads: impl IntoIterator<Item = &'a ThreadCpu>,
    commits: usize,
) -> (f64, f64, f64) {
    let us = |d: Duration| d.as_secs_f64() * 1e6 / commits.max(1) as f64;
    let (run, user, system) = threads.into_iter().fold(Default::default(), |acc, t| {
        let (r, u, s): (Duration, Duration, Duration) = acc;
        (r + t.run, u + t.user, s + t.system)
    });
    (us(run), us(user), us(system))
}

/// CPU per commit: each thread's on-CPU time over the untraced commits, and over the ideal's,
/// divided by the commits, by what the thread does.
fn cpu_report(run: &Traced, chains: &[&Chain]) -> String {
    use std::fmt::Write as _;
    let readers = [0, 1, 2].map(|i| usual_reader(chains, i));
    let (n, ni) = (run.untraced_us.len(), run.ideal_us.len());
    let mut taken: Vec<u32> = Vec::new();
    let mut rows = String::new();
    for (what, ours, ideal_names) in CPU_ROWS {
        let mine: Vec<ThreadCpu> = (run.untraced_cpu.iter())
            .filter(|t| !taken.contains(&t.tid) && ours(t, &readers))
            .cloned()
            .collect();
        taken.extend(mine.iter().map(|t| t.tid));
        let (r, u, y) = per_commit_cpu(&mine, n);
        let (ir, iu, iy) = per_commit_cpu(
            run.ideal_cpu
                .iter()
                .filter(|t| ideal_names.contains(&t.name.as_str())),
            ni,
        );
        let ideal = if ideal_names.is_empty() {
            "-".to_string()
        } else {
            format!("{ir:.1} ({iu:.0} / {iy:.0})")
        };
        let _ = writeln!(
            rows,
            "  {what:<90} {:>18} {ideal:>18}",
            format!("{r:.1} ({u:.0} / {y:.0})")
        );
    }
    let ideal_threads = |t: &ThreadCpu| {
        CPU_ROWS
            .iter()
            .any(|(_, _, names)| names.contains(&t.name.as_str()))
    };
    let (r, u, y) = per_commit_cpu(&run.untraced_cpu, n);
    let (ir, iu, iy) = per_commit_cpu(run.ideal_cpu.iter().filter(|t| ideal_threads(t)), ni);
    let (mut ours, mut ideal) = (run.untraced_us.clone(), run.ideal_us.clone());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "CPU per commit, untraced (on-CPU time from the scheduler; user / system from /proc, 10 ms \
         ticks): logship {r:.1} µs ({u:.0} / {y:.0}), commit p50 {:.1} µs; the ideal commit \
         (plain threads, one port and one follower thread, {ni} right after) {ir:.1} µs \
         ({iu:.0} / {iy:.0}), p50 {:.1} µs",
        quantile(&mut ours, 0.5),
        quantile(&mut ideal, 0.5),
    );
    let _ = writeln!(
        s,
        "  {:<90} {:>18} {:>18}",
        "thread", "logship µs", "ideal µs"
    );
    s.push_str(&rows);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trace line as `perf script` prints it.
    fn line(comm: &str, tid: u32, us: u64, nr: u32, ret: Option<i64>) -> String {
        let t = format!("{}.{:06}", 100 + us / 1_000_000, us % 1_000_000);
        match ret {
            None => format!("  {comm} {tid} [001] {t}: raw_syscalls:sys_enter: NR {nr} (4, 0, 0)"),
            Some(r) => format!("  {comm} {tid} [000] {t}:  raw_syscalls:sys_exit: NR {nr} = {r}"),
        }
    }

    /// One call: entry at `at`, exit `dur` µs later.
    fn call(comm: &str, tid: u32, at: u64, dur: u64, nr: u32, ret: i64) -> Vec<String> {
        vec![
            line(comm, tid, at, nr, None),
            line(comm, tid, at + dur, nr, Some(ret)),
        ]
    }

    /// One commit's calls, starting at `t`, every span 10 µs apart except the follower's
    /// write and fdatasync (100 µs); the follower writes on its log's writer thread (tid 5)
    /// or, `on_read`, on the thread that read the record (tid 4), and so does the primary
    /// (tid 3, or the port's reader, tid 7); the answer is sent by the port's answering thread
    /// (tid 2) or, `on_read`, by the thread that read the ack (tid 6).
    fn commit(t: u64, on_read: bool) -> Vec<String> {
        let (fw, pw, answer) = if on_read {
            (("ls-rd-1", 4), ("ls-rd-2", 7), ("ls-conn-1", 6))
        } else {
            (
                ("logship-writer", 5),
                ("logship-writer", 3),
                ("logship-client-", 2),
            )
        };
        [
            call("bd-client", 1, t, 1, 44, 121),
            call("ls-rd-2", 7, t - 50, 60, 45, 121),
            call(pw.0, pw.1, t + 20, 1, 46, 132),
            call(pw.0, pw.1, t + 22, 1, 18, 196),
            call(pw.0, pw.1, t + 24, 150, 75, 0),
            call("ls-rd-1", 4, t - 40, 70, 45, 168),
            call(fw.0, fw.1, t + 40, 5, 18, 196),
            call(fw.0, fw.1, t + 46, 94, 75, 0),
            call(fw.0, fw.1, t + 150, 1, 46, 36),
            call("ls-conn-1", 6, t - 30, 190, 45, 36),
            call(answer.0, answer.1, t + 170, 1, 44, 31),
            call("bd-client", 1, t + 2, 178, 45, 31),
        ]
        .concat()
    }

    #[test]
    fn events_parse_and_pair_into_calls() {
        let e = parse_event(&line("ls-rd-1", 7, 5, 45, Some(-11))).expect("exit parses");
        assert_eq!((e.tid, e.nr, e.ret), (7, 45, Some(-11)));
        assert!((e.time - 100_000_005.0).abs() < 0.5, "{}", e.time);
        assert!(parse_event("  perf 9 [000] 1.0: sched:sched_switch: x").is_none());
        let text = call("logship-writer", 3, 1000, 150, 75, 0).join("\n");
        let calls = calls(&text);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "fdatasync");
        assert!((calls[0].end - calls[0].start - 150.0).abs() < 0.5);
    }

    /// The time between consecutive links of `chain`, rounded to the µs.
    fn spans(chain: &Chain) -> Vec<f64> {
        chain
            .links
            .windows(2)
            .map(|w| (w[1] - w[0]).round())
            .collect()
    }

    #[test]
    fn a_commit_is_followed_link_by_link() {
        for on_read in [false, true] {
            let text = [commit(1_000, on_read), commit(2_000, on_read)]
                .concat()
                .join("\n");
            let (chains, lost) = chains(&sorted_calls(&text), 100);
            assert_eq!((chains.len(), lost), (2, 0));
            assert_eq!(
                spans(&chains[0]),
                [10.0, 10.0, 10.0, 10.0, 100.0, 10.0, 10.0, 10.0, 10.0]
            );
            let t0 = chains[0].links[0];
            let local = (chains[0].local.0 - t0, chains[0].local.1 - t0);
            assert_eq!((local.0.round(), local.1.round()), (22.0, 174.0));
            assert_eq!(chains[0].follower_wrote_on_read, on_read);
            assert_eq!(chains[0].primary_wrote_on_read, on_read);
            assert_eq!(chains[0].answered_on_ack, on_read);
        }
    }

    /// The ideal commit's calls, starting at `t`: its port thread (tid 10) reads the request,
    /// sends the record, writes, and reads the acknowledgement itself before it answers; its
    /// follower thread is tid 11.
    fn ideal_commit(t: u64) -> Vec<String> {
        let (port, follower) = (("bench-ideal-por", 10), ("bench-ideal-fol", 11));
        [
            call("bd-client", 1, t, 1, 44, 196),
            call(port.0, port.1, t - 50, 60, 45, 196),
            call(port.0, port.1, t + 20, 1, 44, 132),
            call(port.0, port.1, t + 22, 1, 18, 196),
            call(port.0, port.1, t + 24, 150, 75, 0),
            call(follower.0, follower.1, t - 40, 70, 45, 132),
            call(follower.0, follower.1, t + 40, 5, 18, 196),
            call(follower.0, follower.1, t + 46, 94, 75, 0),
            call(follower.0, follower.1, t + 150, 1, 44, 8),
            call(port.0, port.1, t + 175, 5, 45, 8),
            call(port.0, port.1, t + 190, 1, 44, 8),
            call("bd-client", 1, t + 2, 198, 45, 8),
        ]
        .concat()
    }

    #[test]
    fn an_ideal_commit_is_followed_and_told_apart_from_logship_s() {
        let text = [
            commit(1_000, true),
            ideal_commit(2_000),
            ideal_commit(3_000),
        ]
        .concat()
        .join("\n");
        let (chains, lost) = chains(&sorted_calls(&text), 100);
        assert_eq!((chains.len(), lost), (3, 0));
        let ideal: Vec<bool> = chains.iter().map(|c| c.ideal).collect();
        assert_eq!(ideal, [false, true, true]);
        assert_eq!(
            spans(&chains[1]),
            [10.0, 10.0, 10.0, 10.0, 100.0, 10.0, 30.0, 10.0, 10.0]
        );
        assert_eq!(chains[1].readers, [10, 11, 10]);
        assert_eq!(chains[0].readers, [7, 4, 6]);
        let report = spans_table(&[&chains[0]], &[&chains[1], &chains[2]]);
        assert!(report.contains("30.0 / 30.0"), "{report}");
    }

    #[test]
    fn a_commit_missing_a_link_is_counted_not_guessed() {
        let mut lines = commit(1_000, false);
        // The follower's fdatasync never returns in the trace.
        lines.retain(|l| !(l.contains(" 5 [") && l.contains("NR 75 =")));
        let (chains, lost) = chains(&sorted_calls(&lines.join("\n")), 100);
        assert_eq!((chains.len(), lost), (0, 1));
    }
}
