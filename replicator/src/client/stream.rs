//! The client's byte stream: plain TCP, or TLS over it ([`ClientTls`]). The client reads and
//! writes frames through it the same way either way.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::error::{Error, Result};
use crate::tls;

/// TLS settings of a client: the CAs it trusts, its certificate for mutual TLS, and the name
/// it verifies the node's certificate for.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// Trusts the CA certificates in `ca_file`; presents `identity` (certificate and key
    /// files, PEM) when the node asks for a client certificate (`client_auth = "required"`).
    /// Verifies the node's certificate for the IP address connected to, unless
    /// [`ClientTls::with_server_name`] names another.
    ///
    /// # Errors
    /// [`Error::Tls`] naming the file that could not be used.
    pub fn from_files(ca_file: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls> {
        Ok(ClientTls::from_config(tls::client_config(
            ca_file, identity,
        )?))
    }

    /// Uses a rustls configuration made elsewhere.
    pub fn from_config(config: Arc<ClientConfig>) -> ClientTls {
        ClientTls {
            config,
            server_name: None,
        }
    }

    /// Verifies the node's certificate for `name` (a DNS name, such as the node id, or an IP
    /// address) instead of the address connected to.
    ///
    /// # Errors
    /// [`Error::Tls`] for a name that is neither.
    pub fn with_server_name(mut self, name: &str) -> Result<ClientTls> {
        self.server_name = Some(tls::server_name(name)?);
        Ok(self)
    }

    fn connection(&self, addr: SocketAddr) -> Result<ClientConnection> {
        let name = (self.server_name.clone()).unwrap_or(ServerName::IpAddress(addr.ip().into()));
        ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|e| Error::Tls(tls::TlsError::Setup(e.to_string())))
    }
}

/// A connection's byte stream.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            Stream::Tls(s) => f.debug_tuple("Tls").field(&s.sock).finish(),
        }
    }
}

impl Stream {
    /// Wraps `socket`, connected to `addr`, in TLS when `tls` is given. The handshake happens
    /// with the first request.
    pub(crate) fn new(
        socket: TcpStream,
        addr: SocketAddr,
        tls: Option<&ClientTls>,
    ) -> Result<Stream> {
        Ok(match tls {
            None => Stream::Plain(socket),
            Some(t) => Stream::Tls(Box::new(StreamOwned::new(t.connection(addr)?, socket))),
        })
    }

    pub(crate) fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Whether TLS holds records written to it and not yet to the socket.
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.conn.wants_write(),
        }
    }

    /// Writes to the socket what TLS holds, until it holds nothing or the socket takes no
    /// more (a non-blocking socket's `WouldBlock` is not an error here).
    ///
    /// # Errors
    /// The socket's.
    pub(crate) fn write_pending(&mut self) -> std::io::Result<()> {
        let Stream::Tls(s) = self else {
            return Ok(());
        };
        while s.conn.wants_write() {
            match s.conn.write_tls(&mut s.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Whether `first`, the first byte a node sent, starts a TLS record (a handshake or an alert):
/// the node speaks TLS to a client that does not.
pub(crate) fn looks_like_tls(first: Option<u8>) -> bool {
    matches!(first, Some(0x15 | 0x16))
}
