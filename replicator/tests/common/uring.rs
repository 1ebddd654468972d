//! What the io_uring transport's integration tests share: starting a transport (or saying why
//! the test is skipped) wired to a test handler, the loopback address, and waiting for an event.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
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

/// What a test handler is wired to once its transport started: the channel its events go to,
/// and the transport itself (weakly: the transport owns the handler).
#[derive(Default)]
pub struct Wiring {
    tx: OnceLock<Sender<NetEvent>>,
    transport: OnceLock<Weak<UringTransport>>,
}

impl Wiring {
    /// The transport, while it lives.
    pub fn transport(&self) -> Option<Arc<UringTransport>> {
        self.transport.get().and_then(Weak::upgrade)
    }

    /// Hands `event` to the test.
    pub fn forward(&self, event: NetEvent) {
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(event);
        }
    }
}

/// Starts a transport delivering to `handler`, whose [`Wiring`] `wiring` returns, and wires
/// it; `None` (said) when io_uring is unavailable here.
pub fn start_wired<H: NetHandler + 'static>(
    handler: &Arc<H>,
    wiring: impl Fn(&H) -> &Wiring,
) -> Option<(Arc<UringTransport>, Receiver<NetEvent>)> {
    let (tx, events) = crossbeam_channel::unbounded();
    let w = wiring(handler);
    w.tx.set(tx).expect("a fresh handler");
    let transport = start_uring(handler.clone())?;
    let weak = Arc::downgrade(&transport);
    wiring(handler)
        .transport
        .set(weak)
        .expect("a fresh handler");
    Some((transport, events))
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
