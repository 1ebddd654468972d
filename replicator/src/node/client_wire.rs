//! The client port's byte stream: how one connection's bytes are read and written, plain TCP
//! or TLS over it. Frames are the client port's business; this file only turns socket bytes
//! into plaintext and back.
//!
//! A rustls connection cannot be split between the port's two threads (the reader and the
//! answerer), so it sits in a mutex held only for CPU work: the reader reads ciphertext from
//! the socket itself and feeds it in under the lock; the answerer encrypts under the lock and
//! writes the ciphertext after releasing it. TLS records must leave in the order rustls made
//! them, so every taking-out of ciphertext ([`Patient`]'s methods) happens while the caller
//! holds the connection's write buffer lock (the only way to a [`Patient`]), and the bytes are
//! written before that lock is released.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::{Connection, ServerConnection};

use crate::protocol::frame::FrameDecoder;
use crate::tls::{TlsFailures, TlsPort, TlsState};
use crate::transport::tls::{decrypt, Decrypted};

/// What the client port needs to serve TLS: the configurations and the failure log.
pub(crate) type PortTls = (Arc<TlsState>, Arc<TlsFailures>);

/// How one connection's bytes travel.
pub(super) enum Wire {
    /// As they are.
    Plain,
    /// TLS.
    Tls {
        conn: Box<Mutex<Connection>>,
        failures: Arc<TlsFailures>,
        peer: SocketAddr,
        /// Bytes arrived: a handshake is under way.
        began: AtomicBool,
    },
}

impl Wire {
    /// The wire of a connection from `peer`: TLS with the configuration in use now, when the
    /// port has TLS on.
    ///
    /// # Errors
    /// `InvalidData` when rustls refuses the configuration (counted as a TLS failure).
    pub(super) fn new(tls: Option<&PortTls>, peer: SocketAddr) -> std::io::Result<Wire> {
        let Some((state, failures)) = tls else {
            return Ok(Wire::Plain);
        };
        let mut conn = match ServerConnection::new(Arc::clone(&state.current().client_port)) {
            Ok(c) => c,
            Err(e) => {
                failures.note(TlsPort::Client, Some(peer), &e);
                return Err(invalid(e));
            }
        };
        // The port bounds what it queues (requests in flight, the write buffer).
        conn.set_buffer_limit(None);
        Ok(Wire::Tls {
            conn: Box::new(Mutex::new(conn.into())),
            failures: Arc::clone(failures),
            peer,
            began: AtomicBool::new(false),
        })
    }

    /// Hands bytes read from the socket to `decoder` as plaintext. `Ok(false)`: the client
    /// closed the TLS session (`close_notify`).
    ///
    /// # Errors
    /// `InvalidData` for a TLS failure (counted and logged as a summary). Either way, call
    /// [`Patient::send_tls_output`] next if [`Wire::wants_write`]: a handshake answer or the
    /// alert that tells the client why.
    pub(super) fn take_in(
        &self,
        mut raw: &[u8],
        decoder: &mut FrameDecoder,
    ) -> std::io::Result<bool> {
        let Wire::Tls {
            conn,
            failures,
            peer,
            began,
        } = self
        else {
            decoder.push(raw);
            return Ok(true);
        };
        began.store(true, Ordering::Relaxed);
        let mut plain = Vec::new();
        let outcome = decrypt(&mut conn.lock(), &mut raw, &mut plain);
        decoder.push(&plain);
        match outcome {
            Ok(Decrypted::Open) => Ok(true),
            Ok(Decrypted::PeerClosed) => Ok(false),
            Err(e) => {
                failures.note(TlsPort::Client, Some(*peer), &e);
                Err(invalid(e))
            }
        }
    }

    /// rustls has bytes to send that no answer will carry (handshake, alert).
    pub(super) fn wants_write(&self) -> bool {
        match self {
            Wire::Plain => false,
            Wire::Tls { conn, .. } => conn.lock().wants_write(),
        }
    }

    /// Bytes that arrived and are not yet a frame's: 1 once a TLS handshake has begun and
    /// until it ends, so that the request timeout (from the first byte) also bounds a
    /// handshake sent one byte at a time. A connection that sent nothing has none: the idle
    /// timeout closes it.
    pub(super) fn pending(&self) -> usize {
        match self {
            Wire::Plain => 0,
            Wire::Tls { conn, began, .. } => {
                usize::from(began.load(Ordering::Relaxed) && conn.lock().is_handshaking())
            }
        }
    }
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// The connection's writing end: a write that times out (the client reads slowly) is tried
/// again until the port stops, so that a client that stops reading holds its answerer only
/// until shutdown. With TLS, what it is given is encrypted first.
pub(super) struct Patient<'a> {
    pub(super) stream: &'a TcpStream,
    pub(super) stop: &'a AtomicBool,
    pub(super) wire: &'a Wire,
}

impl Patient<'_> {
    fn write_raw(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match (&mut &*self.stream).write(buf) {
                Err(e)
                    if super::client_port::is_timeout(&e) && !self.stop.load(Ordering::Acquire) => {
                }
                result => return result,
            }
        }
    }

    fn write_raw_all(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            match self.write_raw(buf) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Takes out what rustls has to send (after `also` ran under its lock) and writes it.
    fn send_tls(&mut self, also: impl FnOnce(&mut Connection)) -> std::io::Result<()> {
        let Wire::Tls { conn, .. } = self.wire else {
            return Ok(());
        };
        let mut out = Vec::new();
        {
            let mut c = conn.lock();
            also(&mut c);
            while c.wants_write() {
                c.write_tls(&mut out)?;
            }
        }
        self.write_raw_all(&out)
    }

    /// Writes what rustls has to send that no answer carries (handshake, alert).
    pub(super) fn send_tls_output(&mut self) -> std::io::Result<()> {
        self.send_tls(|_| {})
    }

    /// Ends a TLS session with `close_notify` (nothing on a plain connection).
    pub(super) fn close_notify(&mut self) -> std::io::Result<()> {
        self.send_tls(|c| c.send_close_notify())
    }
}

impl Write for Patient<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Wire::Plain = self.wire {
            return self.write_raw(buf);
        }
        // The buffer limit is off (`Wire::new`): rustls takes every byte.
        let mut wrote = Ok(());
        self.send_tls(|c| wrote = c.writer().write_all(buf))?;
        wrote.map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A connection before its requests: what the client handshake reads and writes through,
/// plaintext either way.
pub(super) struct Link<'s, 'p> {
    pub(super) stream: &'s TcpStream,
    pub(super) wire: &'s Wire,
    pub(super) out: &'s Mutex<std::io::BufWriter<Patient<'p>>>,
}

impl Link<'_, '_> {
    /// Reads once from the socket into `decoder` (through TLS when on). `Ok(false)`: the
    /// client closed.
    ///
    /// # Errors
    /// The socket's, and a TLS failure's (`InvalidData`).
    pub(super) fn read_into(
        &self,
        buf: &mut [u8],
        decoder: &mut FrameDecoder,
    ) -> std::io::Result<bool> {
        let n = std::io::Read::read(&mut &*self.stream, buf)?;
        if n == 0 {
            return Ok(false);
        }
        let open = self.wire.take_in(&buf[..n], decoder);
        if self.wire.wants_write() {
            self.out.lock().get_mut().send_tls_output()?;
        }
        open
    }

    /// Writes one frame and flushes it.
    ///
    /// # Errors
    /// The socket's.
    pub(super) fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let mut out = self.out.lock();
        out.write_all(frame)?;
        out.flush()
    }
}
