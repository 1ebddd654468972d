//! The few system calls std does not offer: an interruptible connect from a chosen source
//! address, waiting for a socket to become writable, and waking a blocked `accept` (the send
//! that neither blocks nor raises `SIGPIPE` is shared with the io_uring transport, in
//! `transport::socket`). Linux only (`SOCK_NONBLOCK`), like the rest of the crate. Every item holding `unsafe` is as small as
//! the call it wraps.

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A non-blocking TCP socket with a connect to `addr` in progress (or done), bound to `source`
/// first when it is given (`source` must be of `addr`'s family).
///
/// # Errors
/// Socket creation, the bind (naming `source`, with the OS error's kind) and connect failures.
#[allow(unsafe_code)]
pub(super) fn start_connect(addr: SocketAddr, source: Option<SocketAddr>) -> io::Result<TcpStream> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(domain, kind, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    if let Some(source) = source {
        bind(&stream, source)?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a sockaddr of `len` bytes matching `domain` and outlives
    // the call; the descriptor is owned by `stream`.
    let rc = unsafe { libc::connect(stream.as_raw_fd(), std::ptr::from_ref(&storage).cast(), len) };
    if rc == 0 {
        return Ok(stream);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EINPROGRESS | libc::EINTR) => Ok(stream),
        _ => Err(error),
    }
}

/// `bind(2)` of `stream` to `source`; the error names the address.
#[allow(unsafe_code)]
fn bind(stream: &TcpStream, source: SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(source);
    // SAFETY: `storage` holds a sockaddr of `len` bytes and outlives the call; the descriptor
    // is owned by `stream`, alive here.
    let rc = unsafe { libc::bind(stream.as_raw_fd(), std::ptr::from_ref(&storage).cast(), len) };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    let message = format!("binding the source address {source}: {error}");
    Err(io::Error::new(error.kind(), message))
}

/// Waits up to `wait` for `stream` to become writable (or fail); false on timeout.
#[allow(unsafe_code)]
pub(super) fn poll_writable(stream: &TcpStream, wait: Duration) -> io::Result<bool> {
    let mut fds = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // Round up so a sub-millisecond wait does not spin.
    let millis = wait.as_micros().div_ceil(1000).min(i32::MAX as u128);
    let millis = libc::c_int::try_from(millis).expect("clamped to i32::MAX");
    // SAFETY: `fds` is one valid pollfd that outlives the call.
    let ready = unsafe { libc::poll(&mut fds, 1, millis) };
    if ready >= 0 {
        return Ok(ready > 0);
    }
    let error = io::Error::last_os_error();
    if error.kind() == io::ErrorKind::Interrupted {
        return Ok(false);
    }
    Err(error)
}

/// `recv(2)` from `stream` into `room` (the spare room of a connection's receive buffer, see
/// `transport::recv_buf`), which must not be empty: the bytes land where they are delivered
/// from, without a copy through a read buffer. Returns how many of `room`'s first bytes the
/// kernel wrote; `Ok(0)` at the end of the stream.
///
/// # Errors
/// recv's (`Interrupted` included: call again).
#[allow(unsafe_code)]
pub(super) fn recv_into(
    stream: &TcpStream,
    room: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<usize> {
    debug_assert!(!room.is_empty(), "recv into no room");
    // SAFETY: recv(2) writes at most `room.len()` bytes at `room`'s start, which the caller
    // lends for the call; the descriptor is owned by `stream`.
    let n = unsafe { libc::recv(stream.as_raw_fd(), room.as_mut_ptr().cast(), room.len(), 0) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `shutdown(2)` on a listening socket, which on Linux fails a blocked `accept`.
#[allow(unsafe_code)]
pub(super) fn shutdown_listener(listener: &TcpListener) -> io::Result<()> {
    // SAFETY: shutdown(2) takes no pointers; the descriptor is owned by `listener`.
    let rc = unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `addr` as a `sockaddr_storage` and the length of the sockaddr inside it.
#[allow(unsafe_code)]
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid (unspecified) address.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
            unsafe {
                std::ptr::from_mut(&mut storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
            unsafe {
                std::ptr::from_mut(&mut storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    let len = libc::socklen_t::try_from(len).expect("a sockaddr is a few dozen bytes");
    (storage, len)
}
