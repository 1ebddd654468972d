//! The network limit: a 64-byte ping-pong over one loopback TCP connection with `TCP_NODELAY`
//! on both ends, plain blocking std sockets, one thread each side. A replicated commit pays at
//! least one such round trip (records out, acknowledgement back) on top of the follower's
//! fdatasync.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use serde::Serialize;

use crate::latency::{Recorder, Summary};
use crate::replicate::plan::RTT_MESSAGE_BYTES;

/// Longest a single read or write may block before the loop fails instead of hanging.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The round-trip loop's figures.
#[derive(Clone, Debug, Serialize)]
pub struct RttResult {
    /// `raw::tcp_rtt/size=64,nodelay=1`.
    pub name: String,
    /// Bytes of each ping and of each pong.
    pub message_bytes: usize,
    /// Wall time of the loop in seconds.
    pub elapsed_s: f64,
    /// Round trips per second.
    pub ops_per_s: f64,
    /// Latency of one write + read of the echo.
    pub latency: Summary,
}

/// Runs the ping-pong for `duration`.
///
/// # Errors
/// On any socket failure or a read that times out.
pub fn measure(duration: Duration) -> anyhow::Result<RttResult> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the echo listener")?;
    let addr = listener.local_addr().context("echo listener address")?;
    let echo = std::thread::Builder::new()
        .name("bench-rtt-echo".into())
        .spawn(move || echo(&listener))
        .context("spawning the echo thread")?;
    let result = ping(addr, duration);
    // The client's socket is closed by now (also on error), so the echo thread sees EOF.
    let echoed = echo
        .join()
        .map_err(|_| anyhow!("the echo thread panicked"))?;
    let result = result?;
    echoed?;
    Ok(result)
}

/// `TCP_NODELAY` and [`IO_TIMEOUT`] on reads and writes.
pub(crate) fn configure(stream: &TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .context("read timeout")?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .context("write timeout")?;
    Ok(())
}

/// Accepts one connection and echoes whole messages until the client closes it.
fn echo(listener: &TcpListener) -> anyhow::Result<()> {
    let (mut stream, _) = listener.accept().context("accepting the ping connection")?;
    configure(&stream)?;
    let mut buf = [0u8; RTT_MESSAGE_BYTES];
    while read_message(&mut stream, &mut buf).context("echo read")? {
        stream.write_all(&buf).context("echo write")?;
    }
    Ok(())
}

/// Reads `buf` whole; `false` at a clean end of the stream before its first byte.
pub(crate) fn read_message(conn: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<bool> {
    match conn.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn ping(addr: std::net::SocketAddr, duration: Duration) -> anyhow::Result<RttResult> {
    let mut stream =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).context("connecting to the echo")?;
    configure(&stream)?;
    let out = [0x5au8; RTT_MESSAGE_BYTES];
    let mut back = [0u8; RTT_MESSAGE_BYTES];
    let mut recorder = Recorder::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let t0 = Instant::now();
        stream.write_all(&out).context("ping write")?;
        stream.read_exact(&mut back).context("pong read")?;
        recorder.record(t0.elapsed());
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    Ok(RttResult {
        name: format!("raw::tcp_rtt/size={RTT_MESSAGE_BYTES},nodelay=1"),
        message_bytes: RTT_MESSAGE_BYTES,
        elapsed_s,
        ops_per_s: recorder.len() as f64 / elapsed_s,
        latency: recorder.summary(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_ping_pong_records_round_trips() {
        let r = measure(Duration::from_millis(50)).unwrap();
        assert!(r.latency.count > 0);
        assert!(r.latency.p50_us > 0.0);
    }
}
