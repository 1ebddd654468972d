//! A client of a node's client port: append with a durability level, read from an LSN, status.
//! One request at a time per connection; open several connections for concurrency.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use logship_engine::record::{self, RECORD_HEADER_BYTES};
use logship_engine::{Lsn, Record};

use crate::error::{Error, Result};
use crate::node::NodeStatus;
use crate::protocol::frame::{FrameDecoder, DEFAULT_MAX_BODY_BYTES};
use crate::protocol::{ClientStatus, DurabilityLevel, Msg};

/// A connection to a node's client port.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
    next_id: u64,
    buf: Vec<u8>,
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
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| io(&format!("connecting to {addr}"), e))?;
        stream.set_nodelay(true).map_err(|e| io("TCP_NODELAY", e))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| io("read timeout", e))?;
        Ok(Client {
            stream,
            decoder: FrameDecoder::new(DEFAULT_MAX_BODY_BYTES),
            next_id: 1,
            buf: vec![0; 64 << 10],
        })
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
        let mut last = Error::NotPrimary { leader_hint: None };
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut todo: Vec<SocketAddr> = addrs.iter().rev().copied().collect();
        while let Some(addr) = todo.pop() {
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr);
            let status =
                Client::connect(addr, timeout).and_then(|mut c| c.status().map(|s| (c, s)));
            match status {
                Ok((c, s)) if s.primary.as_ref().is_some_and(|p| p.serving) => {
                    return Ok((c, addr))
                }
                Ok((_, s)) => {
                    if let Some(hint) = s.leader_hint.and_then(|h| h.parse().ok()) {
                        todo.push(hint);
                    }
                }
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
            .set_read_timeout(Some(timeout))
            .map_err(|e| io("read timeout", e))
    }

    fn call(&mut self, req: Msg) -> Result<Msg> {
        self.stream
            .write_all(&req.encode())
            .map_err(|e| io("sending a request", e))?;
        loop {
            if let Some(f) = self
                .decoder
                .next_frame()
                .map_err(|e| Error::Protocol(e.to_string()))?
            {
                return Msg::decode(&f).map_err(|e| Error::Protocol(e.to_string()));
            }
            let n = self
                .stream
                .read(&mut self.buf)
                .map_err(|e| io("reading an answer", e))?;
            if n == 0 {
                return Err(io(
                    "reading an answer",
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            self.decoder.push(&self.buf[..n]);
        }
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
    /// `failed`), [`Error::Io`], [`Error::Protocol`].
    pub fn append(&mut self, payload: Bytes, level: DurabilityLevel) -> Result<Lsn> {
        let id = self.id();
        match self.call(Msg::AppendRequest { id, level, payload })? {
            Msg::AppendResponse {
                id: got,
                status,
                lsn,
                message,
            } if got == id => match status {
                ClientStatus::Ok => Ok(lsn),
                ClientStatus::NotPrimary => Err(Error::NotPrimary {
                    leader_hint: (!message.is_empty()).then_some(message),
                }),
                s => Err(remote(s, message, 0)),
            },
            other => Err(Error::Protocol(format!(
                "{} in answer to an append",
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

fn remote(status: ClientStatus, message: String, detail: u64) -> Error {
    let name = match status {
        ClientStatus::Ok => "ok",
        ClientStatus::QuorumUnavailable => "quorum_unavailable",
        ClientStatus::Invalid => "invalid",
        ClientStatus::Purged => "purged",
        ClientStatus::NotPrimary => "not_primary",
        ClientStatus::Failed => "failed",
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
