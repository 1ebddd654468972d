//! Many client connections driven from one thread.
//!
//! A load generator that gives each connection an OS thread of its own measures its own thread
//! switches: on a small machine, 64 threads woken once per commit cost more than the commit.
//! [`ClientMux`] drives any number of [`Client`] connections from the caller's thread with
//! `poll(2)`, as pgbench drives its clients from a few threads (`-j`):
//! - appends are queued on a connection ([`ClientMux::send_append`]), and each connection's
//!   queued requests are written together at the next [`ClientMux::wait`];
//! - `wait` returns the answers that came in as [`MuxEvent`]s, each with its latency (from the
//!   append's queueing to its answer's reading);
//! - a connection that fails (closed, a malformed answer, an append unanswered past the
//!   timeout) is reported once ([`MuxEvent::Failed`]) and dropped; [`ClientMux::replace`]
//!   puts a new connection in its place.
//!
//! The sockets are non-blocking while the mux holds them. Frames, request ids and the order of
//! answers are the client's own, over plain TCP or TLS.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logship_engine::Lsn;

use super::{append_outcome, io, Client};
use crate::error::{Error, Result};
use crate::node::MAX_IN_FLIGHT_PER_CONNECTION;
use crate::protocol::DurabilityLevel;

/// What [`ClientMux::wait`] saw on one connection.
#[derive(Debug)]
pub enum MuxEvent {
    /// The answer to append `id` on connection `conn`, answers of a connection in the order
    /// its appends were sent.
    Answered {
        /// The connection's index.
        conn: usize,
        /// The append's request id ([`ClientMux::send_append`]'s).
        id: u64,
        /// Its LSN, or why the node refused it (as [`Client::append`]).
        outcome: Result<Lsn>,
        /// From the append's queueing to its answer's reading.
        latency: Duration,
    },
    /// Connection `conn` failed and was dropped: its appends in flight have no answer (each may
    /// or may not have been committed).
    Failed {
        /// The connection's index.
        conn: usize,
        /// Why ([`Error::Io`], [`Error::Protocol`], [`Error::Refused`]).
        error: Error,
    },
}

/// One connection of a [`ClientMux`].
#[derive(Debug)]
struct Slot {
    /// `None` once failed, until replaced.
    client: Option<Client>,
    /// When each append in flight was queued, oldest first (beside the client's ids).
    queued: VecDeque<Instant>,
}

/// Client connections driven together from one thread (see the module docs).
#[derive(Debug)]
pub struct ClientMux {
    slots: Vec<Slot>,
    /// Longest an append may wait for its answer before its connection fails.
    timeout: Duration,
    /// The `poll` set of the last wait, and the slot of each entry.
    polls: Vec<libc::pollfd>,
    polled: Vec<usize>,
}

/// Why a connection can take no request.
fn not_usable(conn: usize, what: &str) -> Error {
    Error::InvalidRequest(format!("connection {conn} {what}"))
}

impl ClientMux {
    /// Drives `clients` (connected, authenticated where the node asks for it, with nothing in
    /// flight); connection `i` is `clients[i]`. An append unanswered after `timeout` fails its
    /// connection.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when a client has requests in flight; [`Error::Io`] when a
    /// socket cannot be made non-blocking.
    pub fn new(clients: Vec<Client>, timeout: Duration) -> Result<ClientMux> {
        let mut mux = ClientMux::closed(clients.len(), timeout);
        for (conn, client) in clients.into_iter().enumerate() {
            mux.replace(conn, client)?;
        }
        Ok(mux)
    }

    /// `conns` connections, none open yet: each is given with [`ClientMux::replace`].
    pub fn closed(conns: usize, timeout: Duration) -> ClientMux {
        ClientMux {
            slots: (0..conns)
                .map(|_| Slot {
                    client: None,
                    queued: VecDeque::new(),
                })
                .collect(),
            timeout,
            polls: Vec::with_capacity(conns),
            polled: Vec::with_capacity(conns),
        }
    }

    /// Closes connection `conn` (no event): its appends in flight get no answer.
    pub fn close(&mut self, conn: usize) {
        if let Some(slot) = self.slots.get_mut(conn) {
            slot.client = None;
            slot.queued.clear();
        }
    }

    fn adopted(client: Client) -> Result<Client> {
        if !client.in_flight.is_empty() || !client.out.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "a client with {} appends in flight",
                client.in_flight.len()
            )));
        }
        (client.stream.socket().set_nonblocking(true)).map_err(|e| io("O_NONBLOCK", e))?;
        Ok(client)
    }

    /// How many connections (open or failed).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the mux has no connection.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether connection `conn` is open (not failed since it was given).
    pub fn is_open(&self, conn: usize) -> bool {
        self.slots.get(conn).is_some_and(|s| s.client.is_some())
    }

    /// Appends sent on connection `conn` and not yet answered.
    pub fn in_flight(&self, conn: usize) -> usize {
        self.slots.get(conn).map_or(0, |s| s.queued.len())
    }

    /// Puts `client` in connection `conn`'s place (after its failure, say); the connection it
    /// replaces is dropped with its appends in flight.
    ///
    /// # Errors
    /// As [`ClientMux::new`]; [`Error::InvalidRequest`] for an index out of range.
    pub fn replace(&mut self, conn: usize, client: Client) -> Result<()> {
        let client = Self::adopted(client)?;
        let slot = (self.slots.get_mut(conn)).ok_or_else(|| not_usable(conn, "does not exist"))?;
        slot.client = Some(client);
        slot.queued.clear();
        Ok(())
    }

    /// Queues an append on connection `conn`; it is written at the next [`ClientMux::wait`].
    /// Returns its request id.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when the connection does not exist, has failed, or already
    /// has [`MAX_IN_FLIGHT_PER_CONNECTION`] appends in flight.
    pub fn send_append(
        &mut self,
        conn: usize,
        payload: Bytes,
        level: DurabilityLevel,
    ) -> Result<u64> {
        let slot = (self.slots.get_mut(conn)).ok_or_else(|| not_usable(conn, "does not exist"))?;
        let client = (slot.client.as_mut()).ok_or_else(|| not_usable(conn, "has failed"))?;
        if client.in_flight.len() >= MAX_IN_FLIGHT_PER_CONNECTION {
            return Err(not_usable(conn, "has its most appends in flight"));
        }
        let id = client.queue_append(payload, level);
        slot.queued.push_back(Instant::now());
        Ok(id)
    }

    /// Writes the queued requests, then waits up to `max_wait` for answers (less when an
    /// append's timeout comes sooner) and adds what happened to `events`. Returns early when
    /// a signal interrupts the wait.
    ///
    /// # Errors
    /// [`Error::Io`] when `poll` itself fails; a connection's failure is an event instead.
    pub fn wait(&mut self, max_wait: Duration, events: &mut Vec<MuxEvent>) -> Result<()> {
        for conn in 0..self.slots.len() {
            self.flush(conn, events);
        }
        self.polls.clear();
        self.polled.clear();
        for (conn, slot) in self.slots.iter().enumerate() {
            let Some(client) = &slot.client else {
                continue;
            };
            let mut wanted = libc::POLLIN;
            if !client.out.is_empty() || client.stream.wants_write() {
                wanted |= libc::POLLOUT;
            }
            self.polls.push(libc::pollfd {
                fd: client.stream.socket().as_raw_fd(),
                events: wanted,
                revents: 0,
            });
            self.polled.push(conn);
        }
        let wait = self.poll_timeout(max_wait);
        poll(&mut self.polls, wait).map_err(|e| io("poll", e))?;
        for i in 0..self.polls.len() {
            let (revents, conn) = (self.polls[i].revents, self.polled[i]);
            if revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                self.receive(conn, events);
            }
            if revents & libc::POLLOUT != 0 {
                self.flush(conn, events);
            }
        }
        self.expire(events);
        Ok(())
    }

    /// `max_wait`, or less when the oldest append of a connection times out sooner.
    fn poll_timeout(&self, max_wait: Duration) -> Duration {
        let now = Instant::now();
        let due = (self.slots.iter())
            .filter_map(|s| s.queued.front())
            .map(|&queued| (queued + self.timeout).saturating_duration_since(now));
        due.fold(max_wait, Duration::min)
    }

    /// Drops connection `conn` with `error`, reported as an event.
    fn fail(&mut self, conn: usize, error: Error, events: &mut Vec<MuxEvent>) {
        let slot = &mut self.slots[conn];
        if slot.client.take().is_some() {
            slot.queued.clear();
            events.push(MuxEvent::Failed { conn, error });
        }
    }

    /// Writes what connection `conn` holds until it is all written or the socket is full.
    fn flush(&mut self, conn: usize, events: &mut Vec<MuxEvent>) {
        let Some(client) = self.slots[conn].client.as_mut() else {
            return;
        };
        if let Err(e) = write_some(client) {
            self.fail(conn, e, events);
        }
    }

    /// Reads what connection `conn` has and reports its answers.
    fn receive(&mut self, conn: usize, events: &mut Vec<MuxEvent>) {
        let slot = &mut self.slots[conn];
        let Some(client) = slot.client.as_mut() else {
            return;
        };
        let read = read_answers(client, &mut slot.queued, conn, events);
        if let Err(e) = read {
            let e = client.explained(e);
            self.fail(conn, e, events);
        }
    }

    /// Fails each connection whose oldest append has waited longer than the timeout.
    fn expire(&mut self, events: &mut Vec<MuxEvent>) {
        for conn in 0..self.slots.len() {
            let late = self.slots[conn].queued.front();
            if late.is_some_and(|q| q.elapsed() >= self.timeout) {
                let e = io("waiting for an answer", std::io::ErrorKind::TimedOut.into());
                self.fail(conn, e, events);
            }
        }
    }
}

/// `poll(2)` on `fds` for up to `wait` (rounded up to a millisecond, so a short wait does not
/// spin); a signal ends the wait early, with no entry ready.
///
/// # Errors
/// `poll`'s.
#[allow(unsafe_code)]
fn poll(fds: &mut [libc::pollfd], wait: Duration) -> std::io::Result<()> {
    let ms = libc::c_int::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
    let n = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` is a live, initialized array of `n` pollfds for the whole call.
    if unsafe { libc::poll(fds.as_mut_ptr(), n, ms) } >= 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::Interrupted {
        fds.iter_mut().for_each(|f| f.revents = 0);
        return Ok(());
    }
    Err(e)
}

/// Writes `client`'s queued requests until none is left or the socket takes no more.
///
/// # Errors
/// [`Error::Io`].
fn write_some(client: &mut Client) -> Result<()> {
    while !client.out.is_empty() {
        match client.stream.write(&client.out) {
            // TLS with its buffer full: what it holds goes first.
            Ok(0) if client.stream.is_tls() => break,
            Ok(0) => {
                let e = std::io::ErrorKind::WriteZero.into();
                return Err(io("sending requests", e));
            }
            Ok(n) => drop(client.out.drain(..n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io("sending requests", e)),
        }
    }
    (client.stream.write_pending()).map_err(|e| io("sending requests", e))
}

/// Reads until the socket has nothing more, and reports each whole answer (for connection
/// `conn`) with the latency since its entry in `queued`.
///
/// # Errors
/// The connection's failure: closed, a read error, a malformed answer or one to no append.
fn read_answers(
    client: &mut Client,
    queued: &mut VecDeque<Instant>,
    conn: usize,
    events: &mut Vec<MuxEvent>,
) -> Result<()> {
    // A short read of a plain socket took everything it had: the next `poll` says when more
    // comes (saving a read that would only say `WouldBlock`). TLS may hold records back, so
    // it is read until it says so.
    let mut drained = false;
    while !drained {
        match client.read_some() {
            Ok(n) => drained = n < client.buf.len() && !client.stream.is_tls(),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok(())
            }
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        while let Some(answer) = client.decoded()? {
            let (Some(&id), Some(&sent)) = (client.in_flight.front(), queued.front()) else {
                return Err(Error::Protocol("an answer to no request".into()));
            };
            let outcome = append_outcome(id, answer?)?;
            client.in_flight.pop_front();
            queued.pop_front();
            events.push(MuxEvent::Answered {
                conn,
                id,
                outcome,
                latency: sent.elapsed(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
