//! The system calls around the ring: creating and probing it, the wake-up eventfd, the sockets of
//! outgoing connections, descriptors returned by accept, and socket addresses in the kernel's
//! layout.
//!
//! Every `unsafe` block of the transport that is not an SQE push lives here; each adopts a
//! descriptor the kernel has just created, so exactly one owner closes it.

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, IoUring};
use logship_engine::io::uring::{check_opcodes, describe_setup_error};

/// Submission queue entries. The driver keeps SQEs that do not fit in a backlog, so this bounds
/// one batch, not the number of operations in flight.
pub(super) const SQ_ENTRIES: u32 = 256;
/// Completion queue entries: room for a burst of completions from many connections between two
/// reaps. Kernels with `IORING_FEAT_NODROP` (5.5+) keep overflowing completions anyway.
pub(super) const CQ_ENTRIES: u32 = 4096;

/// Opcodes the transport submits, with their names for error messages.
const REQUIRED_OPCODES: [(u8, &str); 9] = [
    (opcode::Accept::CODE, "IORING_OP_ACCEPT"),
    (opcode::Connect::CODE, "IORING_OP_CONNECT"),
    (opcode::Send::CODE, "IORING_OP_SEND"),
    (opcode::SendMsg::CODE, "IORING_OP_SENDMSG"),
    (opcode::Recv::CODE, "IORING_OP_RECV"),
    (opcode::Read::CODE, "IORING_OP_READ"),
    (opcode::Timeout::CODE, "IORING_OP_TIMEOUT"),
    (opcode::LinkTimeout::CODE, "IORING_OP_LINK_TIMEOUT"),
    (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
];

/// Creates the ring and checks that it supports every opcode the transport submits.
///
/// # Errors
/// Ring creation failures, with the likely cause in the message (`EPERM`: a seccomp profile or
/// `kernel.io_uring_disabled`; `ENOSYS`: no io_uring in this kernel), and `Unsupported` naming
/// the first missing opcode.
pub(super) fn setup_ring() -> io::Result<IoUring> {
    let ring = IoUring::builder()
        .setup_cqsize(CQ_ENTRIES)
        .build(SQ_ENTRIES)
        .map_err(|e| io::Error::new(e.kind(), describe_setup_error(&e)))?;
    check_opcodes(&ring, &REQUIRED_OPCODES)?;
    if !ring.params().is_feature_fast_poll() {
        tracing::warn!("io_uring lacks IORING_FEAT_FAST_POLL (kernel < 5.7): socket operations block kernel workers");
    }
    Ok(ring)
}

/// A blocking eventfd: the ring reads it, other threads write it to wake the ring thread.
///
/// Blocking on purpose: io_uring returns `EAGAIN` for reads of an `O_NONBLOCK` file instead of
/// waiting for it to become readable.
#[allow(unsafe_code)]
pub(super) fn eventfd() -> io::Result<File> {
    // SAFETY: eventfd takes no pointers and only returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created by eventfd and nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A new TCP socket for connecting to `addr`, with `TCP_NODELAY`, bound to `source` when it is
/// given (`source` must be of `addr`'s family; port 0 lets the kernel pick the port).
///
/// The socket stays in blocking mode, like every socket the ring uses: io_uring answers
/// operations on an `O_NONBLOCK` socket with `EAGAIN` instead of arming a poll, while on a
/// blocking one it arms the poll itself. No thread ever blocks on these sockets; only the ring
/// operates them (`bind(2)` does not wait for the network).
///
/// # Errors
/// Socket creation, `TCP_NODELAY` and bind failures (the latter naming `source`).
#[allow(unsafe_code)]
pub(super) fn tcp_socket(addr: SocketAddr, source: Option<SocketAddr>) -> io::Result<TcpStream> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket takes no pointers and only returns a new descriptor or -1.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created by socket and nothing else owns it.
    let socket = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    socket.set_nodelay(true)?;
    if let Some(source) = source {
        bind(&socket, source)?;
    }
    Ok(socket)
}

/// `bind(2)` of `socket` to `source`; the error names the address.
#[allow(unsafe_code)]
fn bind(socket: &TcpStream, source: SocketAddr) -> io::Result<()> {
    let addr = SockAddr::new(source);
    // SAFETY: `addr` holds a sockaddr of `addr.len()` bytes and outlives the call; the
    // descriptor is owned by `socket`, alive here.
    let rc = unsafe { libc::bind(socket.as_raw_fd(), addr.as_ptr(), addr.len()) };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    let message = format!("binding the source address {source}: {error}");
    Err(io::Error::new(error.kind(), message))
}

/// Adopts the descriptor a successful accept completion returned.
///
/// # Panics
/// If `fd` is negative: callers only pass successful results.
#[allow(unsafe_code)]
pub(super) fn adopt_accepted(fd: RawFd) -> TcpStream {
    assert!(fd >= 0, "adopting a failed accept result: {fd}");
    // SAFETY: a non-negative accept result is a descriptor the kernel created for this ring's
    // request; its completion is reaped exactly once, so this is its only owner.
    TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The kernel layouts of an IPv4 and an IPv6 address, so a `sockaddr` pointer can name either.
#[repr(C)]
#[derive(Clone, Copy)]
union RawSockAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

/// A socket address in the kernel's layout, for `IORING_OP_CONNECT`.
#[derive(Clone, Copy)]
pub(super) struct SockAddr {
    raw: RawSockAddr,
    len: libc::socklen_t,
}

impl SockAddr {
    /// `addr` in the kernel's layout (ports and addresses in network byte order).
    pub(super) fn new(addr: SocketAddr) -> SockAddr {
        match addr {
            SocketAddr::V4(a) => SockAddr {
                raw: RawSockAddr {
                    v4: libc::sockaddr_in {
                        sin_family: libc::AF_INET as libc::sa_family_t,
                        sin_port: a.port().to_be(),
                        sin_addr: libc::in_addr {
                            s_addr: u32::from_ne_bytes(a.ip().octets()),
                        },
                        sin_zero: [0; 8],
                    },
                },
                len: socklen::<libc::sockaddr_in>(),
            },
            SocketAddr::V6(a) => SockAddr {
                raw: RawSockAddr {
                    v6: libc::sockaddr_in6 {
                        sin6_family: libc::AF_INET6 as libc::sa_family_t,
                        sin6_port: a.port().to_be(),
                        sin6_flowinfo: a.flowinfo(),
                        sin6_addr: libc::in6_addr {
                            s6_addr: a.ip().octets(),
                        },
                        sin6_scope_id: a.scope_id(),
                    },
                },
                len: socklen::<libc::sockaddr_in6>(),
            },
        }
    }

    /// The address for the kernel; valid as long as `self` does not move.
    pub(super) fn as_ptr(&self) -> *const libc::sockaddr {
        std::ptr::addr_of!(self.raw).cast()
    }

    /// The length of the address behind [`SockAddr::as_ptr`].
    pub(super) fn len(&self) -> libc::socklen_t {
        self.len
    }
}

impl fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SockAddr").field("len", &self.len).finish()
    }
}

fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).expect("socket addresses are small")
}

/// A zeroed `msghdr`: no name, no control data, no iovecs yet.
#[allow(unsafe_code)]
pub(super) fn empty_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain data (pointers, integers and, on some targets, padding) for which
    // all-zero bits are valid: null pointers and zero lengths.
    unsafe { std::mem::zeroed() }
}
