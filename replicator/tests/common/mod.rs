//! Helpers shared by the replicator's integration tests.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use bytes::Bytes;
use std::os::fd::{FromRawFd, OwnedFd};

/// An address that refuses connections for as long as the returned descriptor lives: a TCP
/// socket bound to a port on 127.0.0.1 and never listening. Holding it keeps the port from
/// being taken by anything else (a port bound and released could be).
#[allow(unsafe_code)]
pub fn refusing_addr() -> (OwnedFd, SocketAddr) {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor this function owns from here on.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sin` is a valid sockaddr_in of `len` bytes, alive for the call.
    let rc = unsafe { libc::bind(fd, std::ptr::addr_of!(sin).cast(), len) };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    let mut got = len;
    // SAFETY: `sin` is writable for `got` bytes; the kernel writes at most that many.
    let rc = unsafe { libc::getsockname(fd, std::ptr::addr_of_mut!(sin).cast(), &mut got) };
    assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
    let port = u16::from_be(sin.sin_port);
    (
        owned,
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
    )
}

/// Sends `data` with `send_parts`, cut into frames of parts: a header, a body far larger than
/// socket buffers and a trailer first (so that the first write takes only some of it, which
/// `queued_bytes` must then show), then smaller frames of three parts each, one of them empty,
/// that must queue behind.
#[allow(dead_code)] // each test binary compiles this module; not all of them use this
pub fn send_in_frames(
    data: &Bytes,
    send_parts: impl Fn(&[Bytes]),
    queued_bytes: impl Fn() -> usize,
) {
    let total = data.len();
    let (head, body_end) = (13, total - (1 << 20));
    send_parts(&[
        data.slice(..head),
        data.slice(head..body_end),
        data.slice(body_end..body_end + 100),
    ]);
    assert!(
        queued_bytes() > 0,
        "{total} bytes cannot fit in socket buffers"
    );
    for start in (body_end + 100..total).step_by(3000) {
        let end = total.min(start + 3000);
        let mid = start + (end - start) / 2;
        send_parts(&[data.slice(start..mid), Bytes::new(), data.slice(mid..end)]);
    }
}
