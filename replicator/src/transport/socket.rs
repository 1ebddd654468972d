//! The system call both transports make on a connected socket from a caller's thread: a send
//! that never raises `SIGPIPE` (and, with `MSG_DONTWAIT`, never blocks). Linux only
//! (`MSG_NOSIGNAL`), like the rest of the crate. And the listeners' bind, with a deeper accept
//! queue than std's.
//!
//! The caller guarantees the descriptor is open for the call; how each transport keeps that
//! promise while another thread may close the socket is its own module's business.

use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, BorrowedFd};

use bytes::Bytes;

/// Connections the kernel completes and queues for a listener before its accept thread takes
/// them (std listens with 128; the kernel caps this at `net.core.somaxconn`). A flood of
/// connects from one address that the accept loop closes at once fills a short queue while
/// that thread waits for a CPU, and the kernel then drops the SYNs of everyone else, honest
/// clients and health probes, which retry only after a second. A hostile-input test saw one
/// health probe of sixteen time out so on the HTTP port, behind 10,000 such connects.
pub(crate) const LISTEN_BACKLOG: libc::c_int = 1024;

/// Binds a listener on `addr` (std's `TcpListener::bind`: `SO_REUSEADDR`, then `listen`)
/// and deepens its accept queue to [`LISTEN_BACKLOG`].
///
/// # Errors
/// Binding, or the second `listen(2)`, failed.
#[allow(unsafe_code)]
pub(crate) fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    // SAFETY: the descriptor is the listener's own, open for the call; on Linux `listen(2)` on
    // a listening socket only changes its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

/// `sendmsg(2)` of `bufs` on `fd` with `MSG_NOSIGNAL` plus `flags`; returns the bytes taken.
///
/// # Errors
/// The OS error: `WouldBlock` when a `MSG_DONTWAIT` send finds the socket buffer full, a
/// broken or reset connection, ...
#[allow(unsafe_code)]
pub(crate) fn send(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; all zeroes is a valid header with no name, no control
    // data and no buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix; the kernel only reads it.
    msg.msg_iov = bufs.as_ptr().cast_mut().cast::<libc::iovec>();
    msg.msg_iovlen = bufs.len() as _;
    // SAFETY: `msg` points at `bufs.len()` iovecs, each describing a live borrowed slice, for
    // the duration of the call; `fd` is borrowed, so its descriptor is open for the call.
    let sent = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, flags | libc::MSG_NOSIGNAL) };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// Most parts one vectored send of a frame takes: a frame is a header and a body (the slices
/// sit on the stack of every send, so a small bound keeps a lone send's cost what it was).
pub(crate) const SEND_PARTS_MAX: usize = 4;

/// [`send`] of `parts` (at most [`SEND_PARTS_MAX`]) in one `sendmsg(2)`.
///
/// # Errors
/// As [`send`].
///
/// # Panics
/// If there are more than [`SEND_PARTS_MAX`] parts.
pub(crate) fn send_parts(
    fd: BorrowedFd<'_>,
    parts: &[Bytes],
    flags: libc::c_int,
) -> io::Result<usize> {
    assert!(
        parts.len() <= SEND_PARTS_MAX,
        "{} buffers in one send",
        parts.len()
    );
    let mut slices = [IoSlice::new(&[]); SEND_PARTS_MAX];
    for (slice, part) in slices.iter_mut().zip(parts) {
        *slice = IoSlice::new(part);
    }
    send(fd, &slices[..parts.len()], flags)
}

/// What is left of `parts` once a send took `sent` bytes of them: the rest of the part it
/// stopped in, then every later part (empty parts are skipped).
pub(crate) fn unsent(parts: &[Bytes], sent: usize) -> impl Iterator<Item = Bytes> + '_ {
    let mut skip = sent;
    parts.iter().filter_map(move |part| {
        if skip >= part.len() {
            skip -= part.len();
            return None;
        }
        let rest = part.slice(skip..);
        skip = 0;
        Some(rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::time::Duration;

    /// The kernel completes connections into the queue while nobody accepts: with std's 128,
    /// the ones past it wait for a SYN retry and time out here; all 600 fit in 1024.
    #[test]
    fn a_listener_queues_many_more_connections_than_std_would() {
        let listener = bind_listener("127.0.0.1:0".parse().expect("an address")).expect("bind");
        let addr = listener.local_addr().expect("bound");
        let mut held = Vec::new();
        for i in 0..600 {
            let c = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
            held.push(c.unwrap_or_else(|e| panic!("connect {i} not queued: {e}")));
        }
        drop(listener);
    }
}
