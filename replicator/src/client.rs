//! A client of a node's client port: append with a durability level, read from an LSN, status.
//!
//! Requests go one at a time ([`Client::append`], [`Client::read`], ...), except appends, which
//! may also be pipelined on one connection: [`Client::append_pipelined`] keeps a window of
//! appends in flight, [`Client::send_append`] and [`Client::recv_append`] let a caller keep its
//! own, and [`Client::append_batch`] sends many records in one request. The node answers in
//! request order (docs/protocol.md, client protocol).
//!
//! A node with `[clients]` configured admits only clients that prove they hold a client key:
//! [`Client::connect_with_key`] (or [`Client::authenticate`] on a fresh connection) runs the
//! client handshake (`protocol::client_auth`) before any request, and checks the node's proof
//! in return.
//!
//! With a [`ClientTls`] ([`Client::connect_with`]) the connection runs TLS: the client
//! verifies the node's certificate against its CA and, for a node that requires client
//! certificates, presents its own.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use logship_engine::record::{self, RECORD_HEADER_BYTES};
use logship_engine::{Lsn, Record};

use crate::error::{Error, Result};
use crate::node::{random_nonce, NodeStatus, MAX_IN_FLIGHT_PER_CONNECTION};
use crate::protocol::client_auth::{
    prove_client, verify_node, ClientKey, ClientTranscript, Grants,
};
use crate::protocol::frame::{FrameDecoder, DEFAULT_MAX_BODY_BYTES};
use crate::protocol::msg::MAX_BATCH_RECORDS;
use crate::protocol::{ClientStatus, DurabilityLevel, Msg};

mod mux;
mod stream;

pub use self::mux::{ClientMux, MuxEvent};
pub use self::stream::ClientTls;
use self::stream::Stream;

/// What a client shows a node: TLS (it checks the node's certificate, and presents its own
/// where the node requires one) and a client key for the client handshake, each when given.
#[derive(Clone, Copy, Debug, Default)]
pub struct Credentials<'a> {
    /// TLS settings; `None`: plain TCP.
    pub tls: Option<&'a ClientTls>,
    /// The client key; `None`: no client handshake (a node without `[clients]`).
    pub key: Option<&'a ClientKey>,
}

/// A connection to a node's client port.
#[derive(Debug)]
pub struct Client {
    stream: Stream,
    /// The first byte the node sent, to tell a node that speaks TLS to a plaintext client.
    first_byte: Option<u8>,
    decoder: FrameDecoder,
    next_id: u64,
    buf: Vec<u8>,
    /// Requests encoded and not yet written (pipelined appends gather here between writes).
    out: Vec<u8>,
    /// Ids of pipelined appends sent and not yet answered, oldest first.
    in_flight: VecDeque<u64>,
}

fn io(op: &str, e: std::io::Error) -> Error {
    Error::Io {
        op: op.to_string(),
        source: e,
    }
}

impl Client {
    /// Connects, waiting at most `timeout`; later requests wait at most `timeout` for each
    /// read of the answer unless it is changed with [`Client::set_timeout`].
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Client> {
        Client::connect_with(addr, timeout, None)
    }

    /// Like [`Client::connect`], over TLS when `tls` is given (the handshake happens with the
    /// first request, within the same timeout).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Tls`].
    pub fn connect_with(
        addr: SocketAddr,
        timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> Result<Client> {
        let socket = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| io(&format!("connecting to {addr}"), e))?;
        socket.set_nodelay(true).map_err(|e| io("TCP_NODELAY", e))?;
        socket
            .set_read_timeout(Some(timeout))
            .map_err(|e| io("read timeout", e))?;
        Ok(Client {
            stream: Stream::new(socket, addr, tls)?,
            first_byte: None,
            decoder: FrameDecoder::new(DEFAULT_MAX_BODY_BYTES),
            next_id: 1,
            buf: vec![0; 64 << 10],
            out: Vec::new(),
            in_flight: VecDeque::new(),
        })
    }

    /// Connects and completes the client handshake with `key` (a node with `[clients]`);
    /// returns the client, admitted with the grants the node holds for it.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Refused`] (`auth_failed`: unknown name or wrong key);
    /// [`Error::Protocol`] when the node's own proof fails (it does not hold this key) or it
    /// answers out of order.
    pub fn connect_with_key(
        addr: SocketAddr,
        timeout: Duration,
        key: &ClientKey,
    ) -> Result<Client> {
        let mut client = Client::connect(addr, timeout)?;
        client.authenticate(key)?;
        Ok(client)
    }

    /// Connects with `credentials`: over TLS when they hold a [`ClientTls`], then through the
    /// client handshake when they hold a [`ClientKey`] (see [`Client::connect_with_key`]).
    ///
    /// # Errors
    /// As [`Client::connect_with`] and [`Client::connect_with_key`].
    pub fn connect_as(
        addr: SocketAddr,
        timeout: Duration,
        credentials: Credentials<'_>,
    ) -> Result<Client> {
        let mut client = Client::connect_with(addr, timeout, credentials.tls)?;
        if let Some(key) = credentials.key {
            client.authenticate(key)?;
        }
        Ok(client)
    }

    /// Runs the client handshake on this connection, before any request: hello, the node's
    /// challenge, this client's proof, the node's welcome (whose proof is checked). Returns the
    /// grants the node admitted this client with.
    ///
    /// # Errors
    /// As [`Client::connect_with_key`].
    pub fn authenticate(&mut self, key: &ClientKey) -> Result<Grants> {
        let client_nonce = random_nonce().map_err(|e| io("drawing a nonce", e))?;
        let name = key.name().to_string();
        let hello = Msg::ClientHello {
            nonce: client_nonce,
            name,
        };
        let (node_nonce, cluster_id) = match self.call(hello)? {
            Msg::ClientChallenge { nonce, cluster_id } => (nonce, cluster_id),
            other => return Err(handshake_answer(other, "a challenge")),
        };
        let t = ClientTranscript {
            cluster_id: &cluster_id,
            name: key.name(),
            client_nonce: &client_nonce,
            node_nonce: &node_nonce,
        };
        let mac = prove_client(key, &t);
        match self.call(Msg::ClientProof { mac })? {
            Msg::ClientWelcome { grants, mac } if verify_node(key, &t, &mac) => Ok(grants),
            Msg::ClientWelcome { .. } => Err(Error::Protocol(
                "the node's proof failed: it does not hold this client's key".into(),
            )),
            other => Err(handshake_answer(other, "a welcome")),
        }
    }

    /// Connects to the primary of a cluster that elects it: tries `addrs` in order, and a
    /// member that is not the primary sends the client to the primary it names (its leader
    /// hint). Returns the client and the primary's address.
    ///
    /// An append that failed with [`Error::NotPrimary`] may or may not have been written by
    /// the deposed primary (it failed while waiting for its level): whether to append it again
    /// is the caller's decision; connect again with this and go on.
    ///
    /// # Errors
    /// [`Error::NotPrimary`] (no hint) when no member is the primary now (an election is under
    /// way), or the last [`Error::Io`].
    pub fn connect_primary(
        addrs: &[SocketAddr],
        timeout: Duration,
    ) -> Result<(Client, SocketAddr)> {
        Client::connect_primary_as(addrs, timeout, Credentials::default())
    }

    /// [`Client::connect_primary`] with `credentials` on each member tried: over TLS when
    /// they hold a [`ClientTls`], authenticating when they hold a [`ClientKey`].
    ///
    /// # Errors
    /// As [`Client::connect_primary`], and [`Error::Tls`]; a refusal ([`Error::Refused`]) ends
    /// the search at once.
    pub fn connect_primary_as(
        addrs: &[SocketAddr],
        timeout: Duration,
        credentials: Credentials<'_>,
    ) -> Result<(Client, SocketAddr)> {
        let mut last = Error::NotPrimary { leader_hint: None };
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut todo: Vec<SocketAddr> = addrs.iter().rev().copied().collect();
        while let Some(addr) = todo.pop() {
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr);
            let status = Client::connect_as(addr, timeout, credentials)
                .and_then(|mut c| c.status().map(|s| (c, s)));
            match status {
                Ok((c, s)) if s.primary.as_ref().is_some_and(|p| p.serving) => {
                    return Ok((c, addr))
                }
                Ok((_, s)) => {
                    if let Some(hint) = s.leader_hint.and_then(|h| h.parse().ok()) {
                        todo.push(hint);
                    }
                }
                Err(e @ Error::Refused { .. }) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// How long to wait for an answer.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.stream
            .socket()
            .set_read_timeout(Some(timeout))
            .map_err(|e| io("read timeout", e))
    }

    fn call(&mut self, req: Msg) -> Result<Msg> {
        if !self.in_flight.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "{} while {} pipelined appends await their answers",
                req.name(),
                self.in_flight.len()
            )));
        }
        self.stream
            .write_all(&req.encode())
            .map_err(|e| io("sending a request", e))?;
        self.next_answer()
    }

    /// Writes the requests gathered in `out`.
    fn flush_out(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.stream
                .write_all(&self.out)
                .map_err(|e| io("sending requests", e))?;
            self.out.clear();
        }
        Ok(())
    }

    /// The next answer on the connection, read as needed.
    fn next_answer(&mut self) -> Result<Msg> {
        let answer = self.read_answer();
        answer.map_err(|e| self.explained(e))
    }

    /// `e`, a failure to read an answer, explained when the node spoke TLS to this plaintext
    /// client.
    fn explained(&self, e: Error) -> Error {
        if !self.stream.is_tls() && stream::looks_like_tls(self.first_byte) {
            return Error::Protocol(
                "the node's client port speaks TLS: connect with TLS (--tls-ca)".into(),
            );
        }
        e
    }

    fn read_answer(&mut self) -> Result<Msg> {
        loop {
            if let Some(answer) = self.decoded()? {
                return answer;
            }
            // A socket with a read timeout is not restarted after a signal (signal(7)).
            match self.read_some() {
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::Interrupted => {}
                r => {
                    r?;
                }
            }
        }
    }

    /// The next whole answer already read, if any: the outer error when the bytes are not a
    /// frame, the inner one when the frame is a refusal or not a message.
    fn decoded(&mut self) -> Result<Option<Result<Msg>>> {
        let Some(f) = (self.decoder.next_frame()).map_err(|e| Error::Protocol(e.to_string()))?
        else {
            return Ok(None);
        };
        Ok(Some(match Msg::decode(&f) {
            // A node with `[clients]` refuses a request before the handshake so.
            Ok(Msg::ClientRefused { code, message }) => Err(Error::Refused { code, message }),
            Ok(msg) => Ok(msg),
            Err(e) => Err(Error::Protocol(e.to_string())),
        }))
    }

    /// One read from the socket into the decoder; returns the bytes read.
    ///
    /// # Errors
    /// [`Error::Io`]: the read's (`WouldBlock` on a non-blocking socket with nothing to read),
    /// or `UnexpectedEof` when the node closed the connection.
    fn read_some(&mut self) -> Result<usize> {
        let n = (self.stream.read(&mut self.buf)).map_err(|e| io("reading an answer", e))?;
        if n == 0 {
            return Err(io(
                "reading an answer",
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        self.first_byte = self.first_byte.or(Some(self.buf[0]));
        self.decoder.push(&self.buf[..n]);
        Ok(n)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Appends a record; returns its LSN once `level` holds.
    ///
    /// # Errors
    /// [`Error::NotPrimary`] with the primary's client address when the node knows it (connect
    /// there and append again), [`Error::Remote`] (status `quorum_unavailable`, `invalid`,
    /// `failed`), [`Error::Io`], [`Error::Protocol`], [`Error::InvalidRequest`] while
    /// pipelined appends await their answers.
    pub fn append(&mut self, payload: Bytes, level: DurabilityLevel) -> Result<Lsn> {
        let id = self.id();
        let answer = self.call(Msg::AppendRequest { id, level, payload })?;
        append_outcome(id, answer)?
    }

    /// Sends an append without waiting for its answer; returns its request id. Collect the
    /// answers, in the order sent, with [`Client::recv_append`]; no other request may be sent
    /// until they are all in. Keep at most [`MAX_IN_FLIGHT_PER_CONNECTION`] in flight: more
    /// only wait in TCP buffers, and a client that sends without reading can fill them both
    /// ways and stall.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn send_append(&mut self, payload: Bytes, level: DurabilityLevel) -> Result<u64> {
        let id = self.queue_append(payload, level);
        self.flush_out()?;
        Ok(id)
    }

    /// Appends sent with [`Client::send_append`] and not yet answered.
    pub fn appends_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn queue_append(&mut self, payload: Bytes, level: DurabilityLevel) -> u64 {
        let id = self.id();
        let frame = Msg::AppendRequest { id, level, payload }.encode();
        self.out.extend_from_slice(&frame);
        self.in_flight.push_back(id);
        id
    }

    /// The answer to the oldest append in flight: its request id and its outcome (the LSN, or
    /// why the node refused it). Waits at most the client's timeout for each read.
    ///
    /// # Errors
    /// The outer error means the connection is unusable (or the read timed out: the answer may
    /// still come): [`Error::Io`], [`Error::Protocol`] (an answer to another request), and
    /// [`Error::InvalidRequest`] when no append is in flight. The inner one is the append's:
    /// as [`Client::append`].
    pub fn recv_append(&mut self) -> Result<(u64, Result<Lsn>)> {
        let Some(&id) = self.in_flight.front() else {
            return Err(Error::InvalidRequest("no append in flight".into()));
        };
        self.flush_out()?;
        let answer = self.next_answer()?;
        let outcome = append_outcome(id, answer)?;
        self.in_flight.pop_front();
        Ok((id, outcome))
    }

    /// Appends `payloads` in order with up to `window` appends in flight (clamped to
    /// 1..=[`MAX_IN_FLIGHT_PER_CONNECTION`]); returns their LSNs in payload order, strictly
    /// increasing. Other clients' records may come between them.
    ///
    /// # Errors
    /// The first append's failure (as [`Client::append`]), once the appends in flight were
    /// answered: nothing more is sent after it. Appends acknowledged before it stay committed;
    /// a caller that must know which ones uses [`Client::send_append`] and
    /// [`Client::recv_append`]. [`Error::Io`] or [`Error::Protocol`] at once when the
    /// connection fails; [`Error::InvalidRequest`] when other appends are in flight.
    pub fn append_pipelined(
        &mut self,
        level: DurabilityLevel,
        payloads: &[Bytes],
        window: usize,
    ) -> Result<Vec<Lsn>> {
        if !self.in_flight.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "{} appends of another pipeline await their answers",
                self.in_flight.len()
            )));
        }
        let window = window.clamp(1, MAX_IN_FLIGHT_PER_CONNECTION);
        let mut lsns = Vec::with_capacity(payloads.len());
        let (mut next, mut failure) = (0, None);
        loop {
            while failure.is_none() && next < payloads.len() && self.in_flight.len() < window {
                self.queue_append(payloads[next].clone(), level);
                next += 1;
            }
            if self.in_flight.is_empty() {
                break;
            }
            match self.recv_append()?.1 {
                Ok(lsn) => lsns.push(lsn),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(lsns),
        }
    }

    /// Appends `payloads` (1 to [`MAX_BATCH_RECORDS`]) in one request, as one batch of the
    /// node's log; returns the first and last LSN once the last record (so every record)
    /// reached `level`. The LSNs are contiguous: record *i* has `first + i`. The records
    /// together may be at most as large as one maximum record (`log.max_record_bytes`); a larger
    /// request is refused by closing the connection.
    ///
    /// # Errors
    /// As [`Client::append`], for the whole batch; [`Error::InvalidRequest`] for an empty or
    /// oversized batch.
    pub fn append_batch(
        &mut self,
        level: DurabilityLevel,
        payloads: &[Bytes],
    ) -> Result<(Lsn, Lsn)> {
        if !(1..=MAX_BATCH_RECORDS).contains(&payloads.len()) {
            return Err(Error::InvalidRequest(format!(
                "a batch of {} records (1..={MAX_BATCH_RECORDS})",
                payloads.len()
            )));
        }
        let id = self.id();
        let payloads = payloads.to_vec();
        let count = payloads.len() as u64;
        match self.call(Msg::AppendBatchRequest {
            id,
            level,
            payloads,
        })? {
            Msg::AppendBatchResponse {
                id: got,
                status,
                first_lsn,
                last_lsn,
                message,
            } if got == id => match status {
                ClientStatus::Ok if last_lsn.0 - first_lsn.0 + 1 == count => {
                    Ok((first_lsn, last_lsn))
                }
                ClientStatus::Ok => Err(Error::Protocol(format!(
                    "a batch of {count} records acknowledged as {first_lsn}..={last_lsn}"
                ))),
                s => Err(refused(s, message)),
            },
            other => Err(Error::Protocol(format!(
                "{} in answer to an append batch",
                other.name()
            ))),
        }
    }

    /// Reads durable records from `from` (0: the first held), at most about `max_bytes`.
    /// Empty when there is nothing at or after `from` yet.
    ///
    /// # Errors
    /// [`Error::Remote`] (`purged` with the first LSN held in `detail`), [`Error::Io`],
    /// [`Error::Protocol`] (including records that fail their CRC).
    pub fn read(&mut self, from: Lsn, max_bytes: u32) -> Result<Vec<Record>> {
        let id = self.id();
        match self.call(Msg::ReadRequest {
            id,
            from,
            max_bytes,
        })? {
            Msg::ReadResponse {
                id: got,
                status,
                detail,
                message,
                records,
            } if got == id => match status {
                ClientStatus::Ok => decode_records(&records),
                s => Err(remote(s, message, detail)),
            },
            other => Err(Error::Protocol(format!(
                "{} in answer to a read",
                other.name()
            ))),
        }
    }

    /// Asks this node (the primary) to hand over to follower `target` (planned switchover);
    /// returns what happened once it handed over.
    ///
    /// # Errors
    /// [`Error::Remote`] with the reason, [`Error::Io`], [`Error::Protocol`].
    pub fn promote(&mut self, target: &str) -> Result<String> {
        let id = self.id();
        let target = target.to_string();
        match self.call(Msg::PromoteRequest { id, target })? {
            Msg::PromoteResponse {
                id: got,
                status,
                message,
            } if got == id => match status {
                ClientStatus::Ok => Ok(message),
                s => Err(remote(s, message, 0)),
            },
            other => Err(Error::Protocol(format!(
                "{} in answer to a promote request",
                other.name()
            ))),
        }
    }

    /// The node's status.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Protocol`].
    pub fn status(&mut self) -> Result<NodeStatus> {
        let id = self.id();
        match self.call(Msg::StatusRequest { id })? {
            Msg::StatusResponse { id: got, json } if got == id => serde_json::from_str(&json)
                .map_err(|e| Error::Protocol(format!("status JSON: {e}"))),
            other => Err(Error::Protocol(format!(
                "{} in answer to a status request",
                other.name()
            ))),
        }
    }
}

/// The error of an answer that is not the handshake's next step: the node's refusal, or a
/// protocol error.
fn handshake_answer(answer: Msg, wanted: &str) -> Error {
    match answer {
        Msg::ClientRefused { code, message } => Error::Refused { code, message },
        other => Error::Protocol(format!(
            "{} in the client handshake, where {wanted} was due",
            other.name()
        )),
    }
}

/// The outcome an answer to append `id` carries; the outer error when it is not one.
fn append_outcome(id: u64, answer: Msg) -> Result<Result<Lsn>> {
    match answer {
        Msg::AppendResponse {
            id: got,
            status,
            lsn,
            message,
        } if got == id => Ok(match status {
            ClientStatus::Ok => Ok(lsn),
            s => Err(refused(s, message)),
        }),
        other => Err(Error::Protocol(format!(
            "{} in answer to append {id}",
            other.name()
        ))),
    }
}

/// The error of a refused append: `not_primary` with its hint, else [`Error::Remote`].
fn refused(status: ClientStatus, message: String) -> Error {
    match status {
        ClientStatus::NotPrimary => Error::NotPrimary {
            leader_hint: (!message.is_empty()).then_some(message),
        },
        s => remote(s, message, 0),
    }
}

fn remote(status: ClientStatus, message: String, detail: u64) -> Error {
    let name = match status {
        ClientStatus::Ok => "ok",
        ClientStatus::QuorumUnavailable => "quorum_unavailable",
        ClientStatus::Invalid => "invalid",
        ClientStatus::Purged => "purged",
        ClientStatus::NotPrimary => "not_primary",
        ClientStatus::Failed => "failed",
        ClientStatus::NotPermitted => "not_permitted",
    };
    Error::Remote {
        status: name.to_string(),
        message,
        detail,
    }
}

/// Decodes a run of encoded records, checking each CRC.
///
/// # Errors
/// [`Error::Protocol`] naming the offset of a bad record.
pub fn decode_records(bytes: &Bytes) -> Result<Vec<Record>> {
    record::run(bytes)
        .map(|item| {
            let (off, r) =
                item.map_err(|(off, e)| Error::Protocol(format!("record at byte {off}: {e}")))?;
            let start = off + RECORD_HEADER_BYTES;
            Ok(Record {
                lsn: r.header.lsn,
                epoch: r.header.epoch,
                crc: r.header.crc,
                payload: bytes.slice(start..start + r.payload.len()),
            })
        })
        .collect()
}
