//! The system call both transports make on a connected socket from a caller's thread: a send
//! that never raises `SIGPIPE` (and, with `MSG_DONTWAIT`, never blocks). Linux only
//! (`MSG_NOSIGNAL`), like the rest of the crate.
//!
//! The caller guarantees the descriptor is open for the call; how each transport keeps that
//! promise while another thread may close the socket is its own module's business.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};

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
