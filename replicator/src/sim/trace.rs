//! The run's trace: every input, action and fault, hashed in order (two runs of one seed must
//! give the same hash), and the last [`TRACE_KEPT`] of them kept for a failure's report.
//!
//! An event is a few static strings and numbers, so that recording one allocates nothing:
//! summaries name message kinds and LSNs, never payloads. Ticks that asked for nothing are
//! hashed but not kept (they would crowd out everything else).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::protocol::Msg;
use crate::vocab::{Action, Input};

/// Events kept for a failure's report.
pub const TRACE_KEPT: usize = 60;

/// One event of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Simulated (global) time.
    pub at: Duration,
    /// The node (`u8::MAX`: the whole cluster).
    pub node: u8,
    /// What happened: `in`, `out`, `fault`, ...
    pub dir: &'static str,
    /// Its kind (an input's, an action's, a message's).
    pub kind: &'static str,
    /// Names of the numbers (empty names are not printed).
    pub labels: [&'static str; 3],
    /// The numbers.
    pub args: [u64; 3],
    /// A word more (a refusal's reason).
    pub note: &'static str,
}

impl Event {
    fn new(at: Duration, node: usize, dir: &'static str, kind: &'static str) -> Event {
        Event {
            at,
            node: u8::try_from(node).unwrap_or(u8::MAX),
            dir,
            kind,
            labels: [""; 3],
            args: [0; 3],
            note: "",
        }
    }

    fn with(mut self, i: usize, label: &'static str, value: u64) -> Event {
        self.labels[i] = label;
        self.args[i] = value;
        self
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = match self.node {
            u8::MAX => "--".to_string(),
            n => format!("n{n}"),
        };
        write!(
            f,
            "{:>12.6}s {node:<3} {:<5} {}",
            self.at.as_secs_f64(),
            self.dir,
            self.kind
        )?;
        for (label, value) in self.labels.iter().zip(self.args) {
            if !label.is_empty() {
                write!(f, " {label}={value}")?;
            }
        }
        if !self.note.is_empty() {
            write!(f, " ({})", self.note)?;
        }
        Ok(())
    }
}

/// The trace: a running hash of every event and the last ones.
#[derive(Debug)]
pub struct Trace {
    hash: u64,
    events: u64,
    kept: VecDeque<Event>,
    /// Print every event as it happens (a verbose replay).
    pub echo: bool,
}

impl Default for Trace {
    fn default() -> Trace {
        Trace {
            hash: FNV_OFFSET,
            events: 0,
            kept: VecDeque::with_capacity(TRACE_KEPT),
            echo: false,
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

impl Trace {
    /// Records `e`; `keep` false hashes it only.
    pub fn record(&mut self, e: Event, keep: bool) {
        let mut h = fnv(self.hash, &(e.at.as_nanos() as u64).to_le_bytes());
        h = fnv(h, &[e.node]);
        h = fnv(h, e.dir.as_bytes());
        h = fnv(h, e.kind.as_bytes());
        h = fnv(h, e.note.as_bytes());
        for a in e.args {
            h = fnv(h, &a.to_le_bytes());
        }
        self.hash = h;
        self.events += 1;
        if self.echo {
            println!("{e}");
        }
        if keep {
            if self.kept.len() == TRACE_KEPT {
                self.kept.pop_front();
            }
            self.kept.push_back(e);
        }
    }

    /// The hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Events so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The last events, oldest first.
    pub fn last(&self) -> impl Iterator<Item = &Event> {
        self.kept.iter()
    }

    /// The event for an input stepped into `node`'s replica (to [`Trace::record`] once its
    /// actions are known: an idle tick is not kept).
    pub fn input_event(&self, at: Duration, node: usize, input: &Input) -> Event {
        input_event(Event::new(at, node, "in", ""), input)
    }

    /// An action `node`'s replica asked for.
    pub fn action(&mut self, at: Duration, node: usize, action: &Action) {
        self.record(action_event(Event::new(at, node, "out", ""), action), true);
    }

    /// Something the simulator did (a fault, a restart, a client's append).
    pub fn note(
        &mut self,
        at: Duration,
        node: usize,
        kind: &'static str,
        args: &[(&'static str, u64)],
    ) {
        let mut e = Event::new(at, node, "sim", kind);
        for (i, (label, value)) in args.iter().take(3).enumerate() {
            e = e.with(i, label, *value);
        }
        self.record(e, true);
    }
}

/// `e` as a `kind` event with these numbers.
fn of(e: Event, kind: &'static str, args: &[(&'static str, u64)]) -> Event {
    let mut e = Event { kind, ..e };
    for (i, (label, value)) in args.iter().take(3).enumerate() {
        e = e.with(i, label, *value);
    }
    e
}

fn input_event(e: Event, input: &Input) -> Event {
    match input {
        Input::Tick => of(e, "Tick", &[]),
        Input::Dialed { link, conn } => {
            of(e, "Dialed", &[("link", *link as u64), ("conn", conn.0)])
        }
        Input::Connected { conn } => of(e, "Connected", &[("conn", conn.0)]),
        Input::Accepted { conn, .. } => of(e, "Accepted", &[("conn", conn.0)]),
        Input::Closed { conn, .. } => of(e, "Closed", &[("conn", conn.0)]),
        Input::Data { conn, bytes } => of(
            e,
            "Data",
            &[("conn", conn.0), ("bytes", bytes.len() as u64)],
        ),
        Input::ClientAppend { waiter, level } => of(
            e,
            "ClientAppend",
            &[("waiter", waiter.0), ("level", *level as u64)],
        ),
        Input::Appended { waiter, lsn, .. } => {
            of(e, "Appended", &[("waiter", waiter.0), ("lsn", lsn.0)])
        }
        Input::LogFailed { .. } => of(e, "LogFailed", &[]),
        input => log_input_event(e, input),
    }
}

/// The log's inputs: its progress and the answers to the replica's log work.
fn log_input_event(e: Event, input: &Input) -> Event {
    match input {
        Input::Written { first, last, .. } => {
            of(e, "Written", &[("first", first.0), ("last", last.0)])
        }
        Input::Durable(l) => of(e, "Durable", &[("lsn", l.0)]),
        Input::Applied(l) => of(e, "Applied", &[("lsn", l.0)]),
        Input::Chunk {
            conn, from, result, ..
        } => of(
            e,
            "Chunk",
            &[
                ("conn", conn.0),
                ("from", from.0),
                ("last", chunk_last(result)),
            ],
        ),
        Input::Crc { conn, crc, .. } => of(
            e,
            "Crc",
            &[("conn", conn.0), ("found", u64::from(crc.is_some()))],
        ),
        Input::FetchRead { conn, request, .. } => of(
            e,
            "FetchRead",
            &[
                ("conn", conn.0),
                ("from", request.range.0 .0),
                ("to", request.range.1 .0),
            ],
        ),
        Input::TakenBack { conn, result, .. } => of(
            e,
            "TakenBack",
            &[
                ("conn", conn.0),
                ("last", result.as_ref().map_or(0, |l| l.0)),
            ],
        ),
        Input::Truncated { after, done, .. } => of(
            e,
            "Truncated",
            &[("after", after.0), ("done", u64::from(*done))],
        ),
        Input::AppendFailed { tail, .. } => of(e, "AppendFailed", &[("last", tail.last.0)]),
        _ => of(e, "other", &[]),
    }
}

fn chunk_last<E>(result: &Result<Option<logship_engine::Chunk>, E>) -> u64 {
    match result {
        Ok(Some(c)) => c.last.0,
        _ => 0,
    }
}

fn action_event(e: Event, action: &Action) -> Event {
    match action {
        Action::Connect { link, .. } => of(e, "Connect", &[("link", *link as u64)]),
        Action::Send { conn, msg } => msg_event(of(e, msg.name(), &[("conn", conn.0)]), msg),
        Action::Close { conn, .. } => of(e, "Close", &[("conn", conn.0)]),
        Action::Append { first, last, .. } => {
            of(e, "Append", &[("first", first.0), ("last", last.0)])
        }
        Action::Truncate { after, .. } => of(e, "Truncate", &[("after", after.0)]),
        Action::ReadChunk { conn, from, .. } => {
            of(e, "ReadChunk", &[("conn", conn.0), ("from", from.0)])
        }
        Action::LookupCrc { conn, lsn, .. } => {
            of(e, "LookupCrc", &[("conn", conn.0), ("lsn", lsn.0)])
        }
        Action::ServeFetch { conn, request, .. } => of(
            e,
            "ServeFetch",
            &[
                ("conn", conn.0),
                ("from", request.range.0 .0),
                ("to", request.range.1 .0),
            ],
        ),
        Action::AppendTakenBack { conn, records, .. } => of(
            e,
            "AppendTakenBack",
            &[("conn", conn.0), ("bytes", records.len() as u64)],
        ),
        Action::Admit { waiter } => of(e, "Admit", &[("waiter", waiter.0)]),
        Action::Committed(l) => of(
            e,
            "Committed",
            &[("local", l[0].0), ("write", l[1].0), ("durable", l[2].0)],
        ),
        Action::FailWait { waiter, .. } => of(e, "FailWait", &[("waiter", waiter.0)]),
        Action::FailAll { .. } => of(e, "FailAll", &[]),
        _ => of(e, "other", &[]),
    }
}

/// A sent message: its kind (already set) and its LSNs.
fn msg_event(e: Event, msg: &Msg) -> Event {
    match msg {
        Msg::Records { first, last, .. } => e.with(1, "first", first.0).with(2, "last", last.0),
        Msg::Ack { write, durable, .. } => {
            e.with(1, "write", write.0).with(2, "durable", durable.0)
        }
        Msg::Heartbeat {
            commit_lsn,
            last_lsn,
        } => e
            .with(1, "commit", commit_lsn.0)
            .with(2, "last", last_lsn.0),
        Msg::Start {
            start_lsn,
            truncate_after,
            ..
        } => {
            e.with(1, "start", start_lsn.0)
                .with(2, "cut", truncate_after.map_or(u64::MAX, |l| l.0))
        }
        Msg::Hello { last_lsn, .. } | Msg::HelloReply { last_lsn, .. } => {
            e.with(1, "last", last_lsn.0)
        }
        Msg::Fetch { from, to, .. } => e.with(1, "from", from.0).with(2, "to", to.0),
        Msg::Fetched { first, last, .. } => e.with(1, "first", first.0).with(2, "last", last.0),
        Msg::Reject { detail, code, .. } => Event {
            note: code.as_str(),
            ..e.with(1, "detail", *detail)
        },
        _ => e,
    }
}
