//! The log observer: the engine's writer calls it with each batch (before the batch's
//! fdatasync) and each durable advance, on the writer thread or, on a follower, on the thread
//! that brought the records and wrote them (`Log::append_replicated_here`); it hands both to the
//! node without blocking the writer for longer than one lock and a non-blocking send.

use std::sync::{OnceLock, Weak};

use logship_engine::{LogObserver, Lsn};

use super::Inner;

/// Forwards the writer's events to the node once it exists.
#[derive(Default)]
pub(crate) struct NodeObserver {
    inner: OnceLock<Weak<Inner>>,
}

impl std::fmt::Debug for NodeObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeObserver")
    }
}

impl NodeObserver {
    pub(crate) fn attach(&self, inner: Weak<Inner>) {
        let _ = self.inner.set(inner);
    }
}

impl LogObserver for NodeObserver {
    fn on_batch(&self, first: Lsn, last: Lsn, records: &[u8]) {
        if let Some(i) = self.inner.get().and_then(Weak::upgrade) {
            i.on_batch(first, last, records);
        }
    }

    fn on_durable(&self, durable: Lsn) {
        if let Some(i) = self.inner.get().and_then(Weak::upgrade) {
            i.on_durable(durable);
        }
    }

    fn on_failure(&self, cause: &str) {
        if let Some(i) = self.inner.get().and_then(Weak::upgrade) {
            i.on_failure(cause);
        }
    }

    fn on_truncate(&self, last: Lsn) {
        if let Some(i) = self.inner.get().and_then(Weak::upgrade) {
            i.on_truncate(last);
        }
    }
}
