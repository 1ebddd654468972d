//! What the io_uring transport's integration tests share: starting a transport (or saying why
//! the test is skipped), the loopback address, and waiting for an event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use logship_replicator::transport::uring::UringTransport;
use logship_replicator::transport::{NetEvent, NetHandler, Transport};

/// A transport delivering to `handler`, or `None` (said on stdout) when io_uring is
/// unavailable here.
pub fn start_uring(handler: Arc<dyn NetHandler>) -> Option<Arc<UringTransport>> {
    match UringTransport::start(handler) {
        Ok(t) => {
            assert_eq!(t.name(), "io_uring");
            Some(Arc::new(t))
        }
        Err(e) => {
            println!("skipping: io_uring unavailable: {e}");
            None
        }
    }
}

/// 127.0.0.1, port 0.
pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

/// Events until `pred` matches one within `wait`; returns it and the others before it.
///
/// # Panics
/// When none matches within `wait`, naming the events seen.
pub fn wait_for_within(
    events: &Receiver<NetEvent>,
    wait: Duration,
    mut pred: impl FnMut(&NetEvent) -> bool,
) -> (NetEvent, Vec<NetEvent>) {
    let deadline = Instant::now() + wait;
    let mut others = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("expected event did not come; saw {others:?}"));
        if pred(&event) {
            return (event, others);
        }
        others.push(event);
    }
}
