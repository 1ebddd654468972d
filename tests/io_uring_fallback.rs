//! io_uring blocked by the host: `Backend::Auto` (the portable backend) still opens and writes;
//! `Backend::IoUring` and `Backend::IoUringDirect` refuse with a typed error naming the reason.
//! Blocks io_uring for real with the `kernel.io_uring_disabled` sysctl (root only; restored by a guard), the way some hosts and the
//! default seccomp profiles of Docker and containerd block it.

use std::path::Path;
use std::process::Command;

use logship::io::Backend;
use logship::{Bytes, Error, Log, Lsn, Options};

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// Restores the sysctl's old value when dropped, even if the test fails.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(SYSCTL, &self.0) {
            eprintln!("could not restore {SYSCTL} to {}: {e}", self.0.trim());
        }
    }
}

fn options(backend: Backend) -> Options {
    Options {
        create_if_missing: true,
        segment_size_bytes: 1 << 20,
        max_record_bytes: 64 << 10,
        backend,
        ..Options::default()
    }
}

#[test]
fn blocked_io_uring_falls_back_to_portable_or_is_refused() {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new(SYSCTL).exists() {
        println!("SKIPPED io_uring_fallback: needs root and {SYSCTL} to block io_uring for real");
        return;
    }
    let old = std::fs::read_to_string(SYSCTL).expect("read sysctl");
    let _restore = Restore(old);
    std::fs::write(SYSCTL, "2").expect("disable io_uring");
    let dir = tempfile::tempdir().expect("tempdir");

    let log = Log::open(dir.path().join("auto"), options(Backend::Auto)).expect("auto opens");
    assert_eq!(log.backend(), "portable", "Auto does not need io_uring");
    let lsn = log
        .append(Bytes::from_static(b"x"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(lsn, Lsn(1));
    drop(log);

    match Log::open(dir.path().join("uring"), options(Backend::IoUring)) {
        Err(Error::BackendUnavailable { backend, .. }) => assert_eq!(backend, "io_uring"),
        other => panic!("expected BackendUnavailable, got {other:?}"),
    }
    match Log::open(dir.path().join("direct"), options(Backend::IoUringDirect)) {
        Err(Error::BackendUnavailable { backend, .. }) => assert_eq!(backend, "io_uring_direct"),
        other => panic!("expected BackendUnavailable, got {other:?}"),
    }

    let out = Command::new(env!("CARGO_BIN_EXE_logship"))
        .args(["append", "--create", "--backend", "io_uring"])
        .arg(dir.path().join("cli"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run logship");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("io_uring"), "stderr: {stderr}");
    println!(
        "io_uring_fallback: Auto fell back to portable; IoUring refused: {}",
        stderr.trim()
    );
}
