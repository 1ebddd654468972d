//! The ideal commit of a 1-client case: the same durable commit done by plain blocking threads
//! and nothing else, measured in the case's own moments (a third slice beside the commits and
//! the disk probe's, `clients::client_loop`).
//!
//! The latency limit the targets divide by is a formula over two separate loops, the
//! fdatasync probe and the loopback ping-pong. The ideal commit runs the commit itself, with
//! the fewest threads and wake-ups the scheme allows, so that what a case pays over it is
//! logship's and what the ideal pays over the formula is the machine's:
//!
//! - in process, one sync follower: the committing thread sends the record to the follower (one
//!   frame of the record's size over loopback TCP), writes it into its own file with
//!   `fdatasync`, and reads the follower's 8-byte acknowledgement; the follower's thread reads
//!   the frame, writes it into its own file with `fdatasync`, and acknowledges. Without a
//!   follower: the write and `fdatasync` alone.
//! - through the network: a client thread sends the record to a port thread, which commits as
//!   above and answers with 8 bytes.
//! - with `--ideal-handoff`, in process with a follower: the acknowledgement is read by a
//!   thread of its own, which wakes the committing thread, as the node's transport thread wakes
//!   the thread waiting in `Commit::wait`: the cost of that one wake-up, measured apart.
//!
//! Each write is the bytes a lone commit puts on disk in the log (the record with its 32-byte
//! header, and the batch's write marker) at the next offset of a prewritten file, as the log
//! appends into a recycled segment: the disk's work is the case's, only the software differs.
//! The frame to the follower is the record with its header.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _};
use logship_engine::record::{MARKER_BYTES, RECORD_HEADER_BYTES};

use crate::latency::Recorder;
use crate::raw;
use crate::replicate::plan::Topology;
use crate::replicate::rtt::{configure, read_message, IO_TIMEOUT};
use crate::workload::{PHASE_MEASURE, PHASE_STOP};

/// Size of each node's file (offsets wrap within it).
const FILE_BYTES: u64 = 16 << 20;
/// The follower's acknowledgement and the port's answer.
const ACK_BYTES: usize = 8;

/// An ideal commit shared by the case's paired client.
pub type SharedIdeal = Arc<Mutex<IdealCommit>>;

/// The ideal commit's threads, sockets and files, for the life of one case.
#[derive(Debug)]
pub struct IdealCommit {
    /// The measuring thread's side; `None` once dropped.
    side: Option<Side>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
    files: Vec<PathBuf>,
    /// Whether its acknowledgements go through the hand-off ([`IdealHow::handoff`], where it
    /// applies).
    handoff: bool,
}

#[derive(Debug)]
enum Side {
    /// In process: the measuring thread commits.
    Commit(Committer),
    /// Through the network: the measuring thread is the client of the port thread.
    Client { conn: TcpStream, request: Vec<u8> },
}

/// How the ideal commit runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdealHow {
    /// Through a client thread and a port thread (a network case); else the measuring thread
    /// commits.
    pub network: bool,
    /// In process with a follower: the acknowledgement is read by a thread of its own, which
    /// wakes the committing thread (the node's hand-off), not by the committing thread.
    pub handoff: bool,
}

/// The primary's part: its file, and a connection to each follower.
#[derive(Debug)]
struct Committer {
    node: Node,
    followers: Vec<TcpStream>,
    /// With the hand-off: the acknowledgements its thread has read.
    acks: Option<Arc<AckSignal>>,
    /// Acknowledgements asked for so far (with the hand-off).
    asked: u64,
}

/// The hand-off: acknowledgements counted by their reading thread, which wakes the committing
/// thread.
#[derive(Debug, Default)]
struct AckSignal {
    read: AtomicU64,
    waiter: Mutex<Option<Thread>>,
}

impl AckSignal {
    /// Parks this thread until `n` acknowledgements were read.
    fn wait_for(&self, n: u64) -> anyhow::Result<()> {
        *self
            .waiter
            .lock()
            .map_err(|_| anyhow!("the hand-off is poisoned"))? = Some(std::thread::current());
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.read.load(Ordering::Acquire) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(!left.is_zero(), "no acknowledgement within {IO_TIMEOUT:?}");
            std::thread::park_timeout(left);
        }
        Ok(())
    }

    /// The reading thread: counts each acknowledgement and wakes the committing thread.
    fn read_acks(&self, mut conn: TcpStream) -> anyhow::Result<()> {
        let mut ack = [0u8; ACK_BYTES];
        while read_message(&mut conn, &mut ack).context("the hand-off's read")? {
            self.read.fetch_add(1, Ordering::Release);
            let waiter = self.waiter.lock().map_err(|_| anyhow!("poisoned"))?;
            if let Some(t) = waiter.as_ref() {
                t.unpark();
            }
        }
        Ok(())
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Ends the follower's thread and the hand-off's, which reads a clone of the socket.
        for f in &self.followers {
            let _ = f.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// One node's log file.
#[derive(Debug)]
struct Node {
    file: File,
    offset: u64,
    /// The record as framed: header and payload.
    record: Vec<u8>,
    /// What one commit writes: the record and a write marker.
    write: Vec<u8>,
}

impl Node {
    fn create(path: &Path, record_bytes: usize) -> anyhow::Result<Node> {
        let record = RECORD_HEADER_BYTES + record_bytes;
        Ok(Node {
            file: raw::prewrite(path, FILE_BYTES)?,
            offset: 0,
            record: raw::pattern(record),
            write: raw::pattern(record + MARKER_BYTES),
        })
    }

    /// Writes the record and its marker at the next offset and makes them durable.
    fn write_durable(&mut self) -> anyhow::Result<()> {
        let len = self.write.len() as u64;
        if self.offset + len > FILE_BYTES {
            self.offset = 0;
        }
        (self.file.write_all_at(&self.write, self.offset)).context("ideal commit's pwrite")?;
        self.file.sync_data().context("ideal commit's fdatasync")?;
        self.offset += len;
        Ok(())
    }
}

impl Committer {
    /// Sends the record to every follower, makes it durable here, and waits for every
    /// follower's acknowledgement.
    fn commit(&mut self) -> anyhow::Result<()> {
        for f in &mut self.followers {
            f.write_all(&self.node.record)
                .context("sending to the follower")?;
        }
        self.node.write_durable()?;
        if let Some(acks) = &self.acks {
            self.asked += self.followers.len() as u64;
            return acks.wait_for(self.asked);
        }
        let mut ack = [0u8; ACK_BYTES];
        for f in &mut self.followers {
            f.read_exact(&mut ack)
                .context("the follower's acknowledgement")?;
        }
        Ok(())
    }
}

impl IdealCommit {
    /// The ideal commit of `topology`'s 1-client cases of `record_bytes`, in process or
    /// through the network (`how`), with its files in `dir`; `None` for a topology other than
    /// `none` and `1sync` (a quorum of several followers is not modelled).
    ///
    /// # Errors
    /// When a file, a socket or a thread cannot be made.
    pub fn start(
        dir: &Path,
        topology: Topology,
        record_bytes: usize,
        how: IdealHow,
    ) -> anyhow::Result<Option<IdealCommit>> {
        let followers = match topology {
            Topology::None => 0,
            Topology::OneSync => 1,
            _ => return Ok(None),
        };
        let handoff = how.handoff && !how.network && followers > 0;
        let mut ideal = IdealCommit {
            side: None,
            threads: Vec::new(),
            files: Vec::new(),
            handoff,
        };
        let primary = ideal.node(dir, "primary", record_bytes)?;
        let mut committer = Committer {
            node: primary,
            followers: Vec::new(),
            acks: handoff.then(Arc::default),
            asked: 0,
        };
        for i in 0..followers {
            let node = ideal.node(dir, &format!("follower-{i}"), record_bytes)?;
            let (ours, theirs) = connected_pair()?;
            ideal.spawn("bench-ideal-follower", move || follow(theirs, node))?;
            if let Some(acks) = &committer.acks {
                let (acks, conn) = (Arc::clone(acks), ours.try_clone().context("cloning")?);
                conn.set_read_timeout(None).context("read timeout")?;
                ideal.spawn("bench-ideal-acks", move || acks.read_acks(conn))?;
            }
            committer.followers.push(ours);
        }
        let side = if how.network {
            // The request: the record and a header's worth, as the client's frame.
            let request = committer.node.record.clone();
            let (ours, theirs) = connected_pair()?;
            ideal.spawn("bench-ideal-port", move || serve(theirs, committer))?;
            Side::Client {
                conn: ours,
                request,
            }
        } else {
            Side::Commit(committer)
        };
        ideal.side = Some(side);
        Ok(Some(ideal))
    }

    fn node(&mut self, dir: &Path, name: &str, record_bytes: usize) -> anyhow::Result<Node> {
        let path = dir.join(format!("ideal-commit-{name}"));
        let node = Node::create(&path, record_bytes);
        // Removed on drop even if the prewrite failed half-way.
        self.files.push(path);
        node
    }

    fn spawn(
        &mut self,
        name: &str,
        f: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .context("spawning an ideal commit thread")?;
        self.threads.push(thread);
        Ok(())
    }

    /// Whether the committing thread's acknowledgements come through the hand-off.
    pub fn has_handoff(&self) -> bool {
        self.handoff
    }

    /// One commit, on this thread (the measuring side's part of it).
    ///
    /// # Errors
    /// On any I/O failure of the commit, here or in one of its threads.
    pub fn commit(&mut self) -> anyhow::Result<()> {
        let side = self.side.as_mut().context("the ideal commit was stopped")?;
        side.commit()
    }

    /// Commits for `duration` (or until the stop phase), recording those that started and
    /// ended in the measure phase into `into`.
    ///
    /// # Errors
    /// On any I/O failure of the commit, here or in one of its threads.
    pub fn run(
        &mut self,
        duration: Duration,
        phase: &AtomicU8,
        into: &mut Recorder,
    ) -> anyhow::Result<()> {
        let side = self.side.as_mut().context("the ideal commit was stopped")?;
        let start = Instant::now();
        while start.elapsed() < duration {
            let before = phase.load(Ordering::Relaxed);
            if before == PHASE_STOP {
                break;
            }
            let t0 = Instant::now();
            side.commit()?;
            let latency = t0.elapsed();
            if before == PHASE_MEASURE && phase.load(Ordering::Relaxed) == PHASE_MEASURE {
                into.record(latency);
            }
        }
        Ok(())
    }
}

impl Side {
    fn commit(&mut self) -> anyhow::Result<()> {
        match self {
            Side::Commit(c) => c.commit(),
            Side::Client { conn, request } => {
                conn.write_all(request).context("sending to the port")?;
                let mut answer = [0u8; ACK_BYTES];
                conn.read_exact(&mut answer).context("the port's answer")
            }
        }
    }
}

impl Drop for IdealCommit {
    fn drop(&mut self) {
        // Closing the measuring side's sockets ends the port thread, whose committer's
        // sockets end the followers'.
        self.side = None;
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("ideal commit: {e:#}"),
                Err(_) => eprintln!("ideal commit: a thread panicked"),
            }
        }
        for path in &self.files {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Two ends of one loopback TCP connection with `TCP_NODELAY`; the first has the measuring
/// side's timeouts, the second (a thread's, which waits between slices) none.
fn connected_pair() -> anyhow::Result<(TcpStream, TcpStream)> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding an ideal commit listener")?;
    let addr = listener
        .local_addr()
        .context("ideal commit listener address")?;
    let ours = TcpStream::connect_timeout(&addr, IO_TIMEOUT).context("connecting")?;
    // The connection is in the listener's backlog already: this accept does not wait.
    let (theirs, peer) = listener.accept().context("accepting")?;
    ensure!(
        peer == ours.local_addr().context("local address")?,
        "an unexpected connection to the ideal commit's listener from {peer}"
    );
    configure(&ours)?;
    theirs.set_nodelay(true).context("TCP_NODELAY")?;
    Ok((ours, theirs))
}

/// The follower: each frame written durably, then acknowledged.
fn follow(mut conn: TcpStream, mut node: Node) -> anyhow::Result<()> {
    let mut frame = vec![0u8; node.record.len()];
    while read_message(&mut conn, &mut frame).context("the follower's read")? {
        node.write_durable()?;
        conn.write_all(&[0u8; ACK_BYTES])
            .context("the follower's acknowledgement")?;
    }
    Ok(())
}

/// The port: each request committed, then answered.
fn serve(mut conn: TcpStream, mut committer: Committer) -> anyhow::Result<()> {
    let mut request = vec![0u8; committer.node.record.len()];
    while read_message(&mut conn, &mut request).context("the port's read")? {
        committer.commit()?;
        conn.write_all(&[0u8; ACK_BYTES])
            .context("the port's answer")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::PHASE_WARM;

    fn commits(topology: Topology, how: IdealHow) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut ideal = IdealCommit::start(dir.path(), topology, 100, how)
            .unwrap()
            .unwrap();
        let phase = AtomicU8::new(PHASE_WARM);
        let mut warm = Recorder::new();
        ideal
            .run(Duration::from_millis(20), &phase, &mut warm)
            .unwrap();
        phase.store(PHASE_MEASURE, Ordering::Relaxed);
        let mut measured = Recorder::new();
        ideal
            .run(Duration::from_millis(50), &phase, &mut measured)
            .unwrap();
        assert_eq!(warm.len(), 0, "commits of the warm phase are not recorded");
        drop(ideal);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the ideal commit's files are removed"
        );
        measured.len()
    }

    #[test]
    fn the_ideal_commit_runs_in_process_and_through_a_port() {
        for network in [false, true] {
            for handoff in [false, true] {
                let how = IdealHow { network, handoff };
                assert!(commits(Topology::None, how) > 0);
                assert!(commits(Topology::OneSync, how) > 0);
            }
        }
    }

    #[test]
    fn a_quorum_of_several_followers_has_no_ideal_commit() {
        let dir = tempfile::tempdir().unwrap();
        let how = IdealHow::default();
        let ideal = IdealCommit::start(dir.path(), Topology::TwoSyncAny2, 100, how).unwrap();
        assert!(ideal.is_none());
    }
}
