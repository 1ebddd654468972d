//! The client: one thread appending 100-byte records at `remote_durable`, one at a time, to
//! whichever member is primary. It follows leader hints, tries the next member on connection
//! errors, and records every acknowledgement with its time, the member that gave it, the LSN,
//! the payload's sequence number and CRC. The measurements read these records; the final check
//! looks every one of them up on the final primary.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logship_replicator::{Client, DurabilityLevel, Error};

/// Wait before the next attempt after an error (connection refused, not primary without a
/// hint, quorum unavailable): short, so that the first commit after a failover is seen within
/// a few milliseconds, and long enough not to spin on 2 vCPUs.
const RETRY_DELAY: Duration = Duration::from_millis(2);
/// Connect timeout of the client (refused connections fail at once in the namespace).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an append may wait for its answer (longer than the nodes' commit timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One acknowledged append.
#[derive(Clone, Copy, Debug)]
pub struct Ack {
    /// When the acknowledgement arrived.
    pub at: Instant,
    /// The member that acknowledged it.
    pub node: usize,
    /// Its LSN.
    pub lsn: u64,
    /// The sequence number in its payload (unique per append).
    pub seq: u64,
    /// CRC-32 of its payload.
    pub crc: u32,
}

/// What the client thread and the benchmark share.
#[derive(Debug, Default)]
struct Shared {
    acks: Mutex<Vec<Ack>>,
    errors: Mutex<BTreeMap<String, u64>>,
    stop: AtomicBool,
    pause: AtomicBool,
    idle: AtomicBool,
}

/// The running client.
#[derive(Debug)]
pub struct Load {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The payload of append `seq`: its sequence number, padded to `size` bytes.
pub fn payload(seq: u64, size: usize) -> Bytes {
    let mut p = format!("failover-bench seq {seq:020} ").into_bytes();
    p.resize(size.max(p.len()), b'.');
    Bytes::from(p)
}

/// The sequence number in a payload made by [`payload`].
pub fn seq_of(payload: &[u8]) -> Option<u64> {
    let digits = payload.strip_prefix(b"failover-bench seq ")?.get(..20)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl Load {
    /// Starts the client over `addrs` (member `i` at `addrs[i]`).
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(addrs: Vec<SocketAddr>, record_bytes: usize) -> anyhow::Result<Load> {
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("failover-client".into())
            .spawn(move || client_loop(&addrs, record_bytes, &s))?;
        Ok(Load {
            shared,
            thread: Some(thread),
        })
    }

    /// Holds the client between appends; returns once no append is in flight.
    pub fn pause(&self) {
        self.shared.idle.store(false, Ordering::Release);
        self.shared.pause.store(true, Ordering::Release);
        while !self.shared.idle.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets the client go on.
    pub fn resume(&self) {
        self.shared.pause.store(false, Ordering::Release);
    }

    /// Stops the client and waits for it.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Every acknowledgement so far, in the order they arrived.
    pub fn acks(&self) -> Vec<Ack> {
        lock(&self.shared.acks).clone()
    }

    /// Acknowledgements so far.
    pub fn ack_count(&self) -> usize {
        lock(&self.shared.acks).len()
    }

    /// Errors the client saw, by kind.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.errors).clone()
    }

    /// The first acknowledgement after `t0` by a member `pick` accepts.
    pub fn first_after(&self, t0: Instant, pick: impl Fn(usize) -> bool) -> Option<Ack> {
        let acks = lock(&self.shared.acks);
        let start = acks.partition_point(|a| a.at <= t0);
        acks[start..].iter().find(|a| pick(a.node)).copied()
    }

    /// The longest time without an acknowledgement between the last one at or before `t0` and
    /// `end` (the time from the last one before `end` to `end` included).
    pub fn longest_gap(&self, t0: Instant, end: Instant) -> Duration {
        longest_gap(&lock(&self.shared.acks), t0, end)
    }

    /// The longest time without an acknowledgement from the first one after `from` to `end`
    /// (the steady state's, when `from` is after the client was held).
    pub fn longest_gap_within(&self, from: Instant, end: Instant) -> Duration {
        let acks = lock(&self.shared.acks);
        let start = acks.partition_point(|a| a.at <= from);
        match acks.get(start) {
            Some(first) if first.at <= end => longest_gap(&acks, first.at, end),
            _ => end.saturating_duration_since(from),
        }
    }
}

/// [`Load::longest_gap`] over `acks`, in the order they arrived.
fn longest_gap(acks: &[Ack], t0: Instant, end: Instant) -> Duration {
    let start = acks.partition_point(|a| a.at <= t0).saturating_sub(1);
    let mut prev = acks.get(start).map_or(t0, |a| a.at.min(t0));
    let mut gap = Duration::ZERO;
    for a in acks[start..].iter().filter(|a| a.at > t0 && a.at <= end) {
        gap = gap.max(a.at - prev);
        prev = a.at;
    }
    gap.max(end.saturating_duration_since(prev))
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The client's connection and where it goes.
struct Target<'a> {
    addrs: &'a [SocketAddr],
    node: usize,
    client: Option<Client>,
}

impl Target<'_> {
    fn next(&mut self) {
        self.client = None;
        self.node = (self.node + 1) % self.addrs.len();
    }

    fn connected(&mut self) -> Option<&mut Client> {
        if self.client.is_none() {
            let mut c = Client::connect(self.addrs[self.node], CONNECT_TIMEOUT).ok()?;
            c.set_timeout(REQUEST_TIMEOUT).ok()?;
            self.client = Some(c);
        }
        self.client.as_mut()
    }
}

fn client_loop(addrs: &[SocketAddr], record_bytes: usize, s: &Shared) {
    let mut t = Target {
        addrs,
        node: 0,
        client: None,
    };
    let mut seq = 0u64;
    while !s.stop.load(Ordering::Acquire) {
        if s.pause.load(Ordering::Acquire) {
            s.idle.store(true, Ordering::Release);
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        s.idle.store(false, Ordering::Release);
        let Some(c) = t.connected() else {
            error(s, "connect");
            t.next();
            std::thread::sleep(RETRY_DELAY);
            continue;
        };
        seq += 1;
        let p = payload(seq, record_bytes);
        let crc = crc32fast::hash(&p);
        match c.append(p, DurabilityLevel::RemoteDurable) {
            Ok(lsn) => {
                let at = Instant::now();
                let ack = Ack {
                    at,
                    node: t.node,
                    lsn: lsn.0,
                    seq,
                    crc,
                };
                lock(&s.acks).push(ack);
            }
            Err(e) => on_error(e, &mut t, s),
        }
    }
    s.idle.store(true, Ordering::Release);
}

fn on_error(e: Error, t: &mut Target<'_>, s: &Shared) {
    match e {
        Error::NotPrimary { leader_hint } => {
            error(s, "not_primary");
            let hinted = leader_hint
                .and_then(|h| h.parse::<SocketAddr>().ok())
                .and_then(|h| t.addrs.iter().position(|a| *a == h));
            match hinted {
                Some(i) if i != t.node => {
                    t.client = None;
                    t.node = i;
                }
                _ => {
                    t.next();
                    std::thread::sleep(RETRY_DELAY);
                }
            }
        }
        Error::Remote { status, .. } => {
            error(s, &status);
            std::thread::sleep(RETRY_DELAY);
        }
        _ => {
            error(s, "connection");
            t.next();
            std::thread::sleep(RETRY_DELAY);
        }
    }
}

fn error(s: &Shared, kind: &str) {
    *lock(&s.errors).entry(kind.to_string()).or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_sequence_number() {
        let p = payload(42, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(seq_of(&p), Some(42));
        assert_eq!(seq_of(&payload(u64::MAX, 16)), Some(u64::MAX));
        assert_eq!(seq_of(b"something else entirely, 40 bytes long.."), None);
    }

    #[test]
    fn the_longest_gap_spans_the_last_ack_before_t0_to_end() {
        let base = Instant::now();
        let at = |ms: u64| base + Duration::from_millis(ms);
        let ack = |ms: u64| Ack {
            at: at(ms),
            node: 0,
            lsn: ms,
            seq: ms,
            crc: 0,
        };
        let acks: Vec<Ack> = [0, 10, 20, 100, 105, 300].into_iter().map(ack).collect();
        let ms = |d: Duration| d.as_millis();
        // From the ack at 20 (the last before 50) to 100, then 100..105, 105..300.
        assert_eq!(ms(longest_gap(&acks, at(50), at(300))), 195);
        assert_eq!(ms(longest_gap(&acks, at(50), at(105))), 80);
        // No ack after 105 up to 250: the trailing 145 ms count.
        assert_eq!(ms(longest_gap(&acks, at(0), at(250))), 145);
    }
}
