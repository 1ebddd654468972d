//! A private network namespace for the benchmark's cluster: its members listen on fixed
//! addresses (127.0.0.1-3, fixed ports), which must not collide with anything else on the
//! machine. The process moves itself into a new network namespace before it starts any thread
//! or child; every thread and child it starts afterwards inherits it, and the namespace goes
//! away with the last of them.

// unshare(2) and geteuid(2) have no safe wrapper in the benchmark's dependencies.
#![allow(unsafe_code)]

use std::process::Command;

use anyhow::{bail, Context as _};

/// Moves the calling thread, and every thread and child it starts from now on, into a new
/// network namespace with its loopback interface up. Call it from the main thread before any
/// other thread or child exists.
///
/// # Errors
/// Without root (a new network namespace needs `CAP_SYS_ADMIN`), when `unshare` fails, or when
/// `ip link set lo up` cannot run.
pub fn enter() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!(
            "the failover benchmark needs root: it runs its three nodes on fixed addresses \
             (127.0.0.1-3) inside a private network namespace, and creating one needs root \
             (run it with sudo, or as root)"
        );
    }
    // SAFETY: unshare only changes the calling thread's namespaces; no memory is involved.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!("unshare(CLONE_NEWNET) for a private network namespace: {e}");
    }
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context(
            "running `ip link set lo up` in the new network namespace (is iproute2 installed?)",
        )?;
    if !status.success() {
        bail!("`ip link set lo up` in the new network namespace: {status}");
    }
    Ok(())
}
