//! Where the microseconds of one client's commit go: a primary with one sync follower, both in
//! this process, one network client at `remote_durable` on the primary's client port, and
//! `perf trace` attached to this process recording every thread's socket, write and
//! fdatasync system calls with their times. Each commit is one pass through the same chain of
//! calls (the client's send, the port's receive, the primary's write and fdatasync, the send
//! to the follower, the follower's receive, write and fdatasync, its acknowledgement, the
//! primary's receive, the port's answer, the client's receive); the breakdown is the median
//! time between consecutive links of the chain, over every commit traced.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use logship_replicator::client::{Client, ClientTls};
use logship_replicator::protocol::DurabilityLevel;

use crate::replicate::cluster::{Cluster, NodeSettings};
use crate::replicate::plan::Topology;
use crate::scratch::Scratch;

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
    let client = std::thread::Builder::new()
        .name(CLIENT_THREAD.into())
        .spawn(move || {
            run_client((addr, tls.as_ref()), commits, size, &out).map(|(u, t)| (u, t, out))
        })
        .context("spawning the client")?;
    let joined = client
        .join()
        .map_err(|_| anyhow!("the client thread panicked"));
    cluster.shutdown()?;
    let (untraced_us, traced_us, out) = joined??;
    let text = script(&out)?;
    Ok(Traced {
        text,
        untraced_us,
        traced_us,
    })
}

/// The client: warms up, commits untraced, then under perf. Returns both latency lists.
fn run_client(
    (addr, tls): (std::net::SocketAddr, Option<&ClientTls>),
    commits: usize,
    size: usize,
    out: &Path,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut client =
        Client::connect_with(addr, Duration::from_secs(10), tls).context("connecting")?;
    let payload = Bytes::from(crate::raw::pattern(size));
    let mut commit = || -> anyhow::Result<f64> {
        let t = Instant::now();
        client.append(payload.clone(), DurabilityLevel::RemoteDurable)?;
        Ok(t.elapsed().as_secs_f64() * 1e6)
    };
    for _ in 0..WARM_UP {
        commit()?;
    }
    let untraced = (0..commits)
        .map(|_| commit())
        .collect::<anyhow::Result<_>>()?;
    let mut perf = start_perf(out)?;
    // perf attaches to every thread of the process before it records; give it that time.
    std::thread::sleep(Duration::from_millis(1500));
    let traced = (0..commits)
        .map(|_| commit())
        .collect::<anyhow::Result<Vec<f64>>>();
    stop_perf(&mut perf)?;
    Ok((untraced, traced?))
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
    let p_ack = earliest(w, ack.start, true, |c| {
        role(c) == "other" && c.tid != f_recv.tid && c.tid != port.tid && is_recv(c)
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
    })
}

/// Every commit's chain in a trace; and how many commits could not be followed.
pub fn chains(text: &str, record: usize) -> (Vec<Chain>, usize) {
    let mut calls = calls(text);
    calls.sort_by(|a, b| a.start.total_cmp(&b.start));
    let sends: Vec<&Call> = calls
        .iter()
        .filter(|c| role(c) == "client" && is_send(c))
        .collect();
    let record = i64::try_from(record).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    let mut lost = 0;
    for (i, send) in sends.iter().enumerate() {
        let until = sends.get(i + 1).map_or(f64::INFINITY, |n| n.start);
        match chain(&calls, send, until, record) {
            Some(c) => out.push(c),
            None => lost += 1,
        }
    }
    (out, lost)
}

/// The `q` quantile (0..=1) of `v`, sorted in place; NaN when empty.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

/// Each traced call's count divided by `commits`, in [`TRACED`]'s order, as `name n.nn`.
fn per_commit(text: &str, commits: usize) -> String {
    let calls = calls(text);
    let commits = commits.max(1) as f64;
    TRACED
        .iter()
        .map(|(_, name)| {
            let n = calls.iter().filter(|c| c.name == *name).count();
            format!("{name} {:.2}", n as f64 / commits)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The printed breakdown of a run.
pub fn report(run: &Traced, record: usize) -> String {
    use std::fmt::Write as _;
    let (chains, lost) = chains(&run.text, record);
    let mut s = String::new();
    let (mut untraced, mut traced) = (run.untraced_us.clone(), run.traced_us.clone());
    let _ = writeln!(
        s,
        "one client, remote_durable, 1 sync follower, {record} B records: commit p50 {:.1} µs \
         untraced, {:.1} µs under perf trace; {} commits followed through the trace, {lost} not",
        quantile(&mut untraced, 0.5),
        quantile(&mut traced, 0.5),
        chains.len(),
    );
    let _ = writeln!(s, "{:<92} {:>8} {:>8}", "span", "p50 µs", "p90 µs");
    let mut sum = 0.0;
    for (i, span) in SPANS.iter().enumerate() {
        let mut d: Vec<f64> = chains.iter().map(|c| c.links[i + 1] - c.links[i]).collect();
        let p50 = quantile(&mut d, 0.5);
        sum += p50;
        let _ = writeln!(s, "{span:<92} {p50:>8.1} {:>8.1}", quantile(&mut d, 0.9));
    }
    let mut total: Vec<f64> = chains.iter().map(|c| c.links[9] - c.links[0]).collect();
    let _ = writeln!(
        s,
        "{:<92} {:>8.1} {:>8.1}   (sum of the p50s: {sum:.1})",
        "client send → client read (the whole commit)",
        quantile(&mut total, 0.5),
        quantile(&mut total, 0.9)
    );
    let mut local: Vec<f64> = chains.iter().map(|c| c.local.1 - c.local.0).collect();
    let hidden = chains.iter().filter(|c| c.local.1 <= c.links[7]).count();
    let _ = writeln!(
        s,
        "beside them, the primary's own pwrite + fdatasync: p50 {:.1} µs, over before the ack \
         was read in {hidden} of {} commits",
        quantile(&mut local, 0.5),
        chains.len()
    );
    let _ = writeln!(
        s,
        "system calls per commit, every thread of the process, over the {} traced: {}",
        run.traced_us.len(),
        per_commit(&run.text, run.traced_us.len())
    );
    let here = |f: fn(&Chain) -> bool| chains.iter().filter(|c| f(c)).count();
    let _ = writeln!(
        s,
        "the primary wrote on the port's thread that read the request in {} of {} commits, the \
         follower on the thread that read the record in {} (else each on its log's writer \
         thread); the answer was sent by the thread that read the ack in {} (else by the port's \
         answering thread)",
        here(|c| c.primary_wrote_on_read),
        chains.len(),
        here(|c| c.follower_wrote_on_read),
        here(|c| c.answered_on_ack),
    );
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

    #[test]
    fn a_commit_is_followed_link_by_link() {
        for on_read in [false, true] {
            let text = [commit(1_000, on_read), commit(2_000, on_read)]
                .concat()
                .join("\n");
            let (chains, lost) = chains(&text, 100);
            assert_eq!((chains.len(), lost), (2, 0));
            let spans: Vec<f64> = chains[0]
                .links
                .windows(2)
                .map(|w| (w[1] - w[0]).round())
                .collect();
            assert_eq!(
                spans,
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

    #[test]
    fn a_commit_missing_a_link_is_counted_not_guessed() {
        let mut lines = commit(1_000, false);
        // The follower's fdatasync never returns in the trace.
        lines.retain(|l| !(l.contains(" 5 [") && l.contains("NR 75 =")));
        let (chains, lost) = chains(&lines.join("\n"), 100);
        assert_eq!((chains.len(), lost), (0, 1));
    }
}
