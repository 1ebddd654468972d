//! Listening sockets handed from a parent process to a child. The parent binds the socket and
//! starts the child with it as a chosen descriptor number ([`pass_fd`]), naming that number in
//! an environment variable; the child takes it ([`inherited_listener`]) and serves it with
//! [`Transport::listen_on`](super::Transport::listen_on). The port is never released between
//! the bind and the serving, so nothing else can take it meanwhile: `logship demo` starts its
//! nodes this way, and a supervisor can do the same.
//!
//! The `unsafe` here is the hook that places the descriptor in the child, the `getsockopt` and
//! `fcntl` calls that check it, and taking ownership of it once checked.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// Descriptors taken by [`inherited_listener`] so far, so that none gets two owners.
static TAKEN: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Arranges for `fd` to be descriptor `child_fd` of the child that `command` starts, open
/// across its `exec`: close-on-exec is cleared in the child only, while the parent's copy keeps
/// it (std opens every descriptor close-on-exec), so no other child inherits it. The parent's
/// copy lives in `command` and is closed when `command` is dropped. Pass one descriptor per
/// `Command`.
///
/// # Panics
/// If `child_fd` is a standard stream (0, 1 or 2), which `Command` sets up itself.
#[allow(unsafe_code)]
pub fn pass_fd(command: &mut Command, fd: OwnedFd, child_fd: RawFd) {
    assert!(child_fd > 2, "descriptor {child_fd} is a standard stream");
    let place = move || {
        let parent = fd.as_raw_fd();
        // SAFETY: fcntl and dup2 take no pointers. `parent` is open: `fd` owns it until the
        // hook is dropped. dup2 closes whatever the child had at `child_fd` (after `Command`
        // placed the standard streams) and leaves the new descriptor without close-on-exec.
        let rc = unsafe {
            if parent == child_fd {
                libc::fcntl(parent, libc::F_SETFD, 0)
            } else {
                libc::dup2(parent, child_fd)
            }
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: the hook runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: it makes one system call (fcntl or dup2), allocates nothing and takes
    // no lock.
    unsafe {
        command.pre_exec(place);
    }
}

/// The listening TCP socket a parent handed over as the descriptor named by the environment
/// variable `var` (set with [`pass_fd`], or by any supervisor), or `None` when `var` is unset.
///
/// The descriptor must be open, a TCP socket (IPv4 or IPv6) and listening; it is made
/// close-on-exec, so this process's own children do not inherit it. Each descriptor is taken at
/// most once per process. Call this at start-up, before the process opens listening sockets of
/// its own: the number comes from the environment, and a descriptor the process opened itself
/// would then have two owners.
///
/// # Errors
/// `InvalidInput` naming `var`, its value and what is wrong: not a descriptor number above 2,
/// not open, not a socket, not a TCP socket, not listening, or taken already.
#[allow(unsafe_code)]
pub fn inherited_listener(var: &str) -> io::Result<Option<TcpListener>> {
    let Some(value) = std::env::var_os(var) else {
        return Ok(None);
    };
    let shown = value.to_string_lossy().into_owned();
    let invalid =
        |why: String| io::Error::new(io::ErrorKind::InvalidInput, format!("{var}={shown}: {why}"));
    let fd: RawFd = (value.to_str())
        .and_then(|v| v.trim().parse().ok())
        .filter(|fd| *fd > 2)
        .ok_or_else(|| invalid("not a descriptor number above 2".into()))?;
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    if taken.contains(&fd) {
        return Err(invalid(format!("descriptor {fd} was taken already")));
    }
    check_listening_tcp(fd).map_err(|why| invalid(format!("descriptor {fd} {why}")))?;
    // SAFETY: fcntl takes no pointers; `fd` is open (checked above).
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open and a listening TCP socket (checked above). Nothing in this process
    // owns it: the parent handed it over and named it in `var`, and this function, which takes
    // each descriptor at most once (`TAKEN`, held across the checks), is what takes ownership.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    taken.push(fd);
    Ok(Some(listener))
}

/// `Ok` if `fd` is a listening TCP socket, else what it is instead.
fn check_listening_tcp(fd: RawFd) -> Result<(), String> {
    let domain = socket_option(fd, libc::SO_DOMAIN).map_err(|e| match e.raw_os_error() {
        Some(libc::EBADF) => "is not open".to_string(),
        Some(libc::ENOTSOCK) => "is not a socket".to_string(),
        _ => format!("cannot be inspected: {e}"),
    })?;
    let kind = socket_option(fd, libc::SO_TYPE).map_err(|e| e.to_string())?;
    let protocol = socket_option(fd, libc::SO_PROTOCOL).map_err(|e| e.to_string())?;
    let tcp = matches!(domain, libc::AF_INET | libc::AF_INET6)
        && kind == libc::SOCK_STREAM
        && protocol == libc::IPPROTO_TCP;
    if !tcp {
        return Err("is a socket, but not a TCP socket over IPv4 or IPv6".into());
    }
    if socket_option(fd, libc::SO_ACCEPTCONN).map_err(|e| e.to_string())? == 0 {
        return Err("is a TCP socket, but not listening".into());
    }
    Ok(())
}

/// An integer `SOL_SOCKET` option of `fd`.
#[allow(unsafe_code)]
fn socket_option(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; `len` holds the size of `value`, and
    // getsockopt writes at most that many bytes to it.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    //! The checks, on descriptors of this process (the child side of `pass_fd` is tested end
    //! to end by the CLI tests, with `logship node`).

    use std::net::TcpStream;

    use super::*;

    /// `check_listening_tcp` of the descriptor of `f`.
    fn check<T: AsRawFd>(f: &T) -> Result<(), String> {
        check_listening_tcp(f.as_raw_fd())
    }

    #[test]
    fn only_a_listening_tcp_socket_passes() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        assert_eq!(check(&listener), Ok(()));
        let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        assert_eq!(
            check(&stream),
            Err("is a TCP socket, but not listening".into())
        );
        let file = std::fs::File::open("/").expect("open /");
        assert_eq!(check(&file), Err("is not a socket".into()));
        let (unix, _) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        assert!(check(&unix).expect_err("unix").contains("not a TCP socket"));
        // Far above any descriptor limit, so never open (a closed one could be reused by a
        // test running alongside).
        assert_eq!(check_listening_tcp(RawFd::MAX), Err("is not open".into()));
    }
}
