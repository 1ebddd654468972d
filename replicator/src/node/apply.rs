//! The apply stream: a follower's embedding application reads durable records in order and
//! reports what it applied with `Node::report_applied`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logship_engine::{LogReader, Record};

use super::Inner;
use crate::error::{Error, Result};

/// Durable records in order, blocking for more; from [`Node::apply_stream`](super::Node::apply_stream).
pub struct ApplyStream {
    pub(super) inner: Arc<Inner>,
    pub(super) reader: LogReader,
}

impl std::fmt::Debug for ApplyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyStream")
            .field("next", &self.reader.next_lsn())
            .finish()
    }
}

impl ApplyStream {
    /// The next record, waiting up to `timeout` for one to become durable. `None` on timeout
    /// or shutdown.
    ///
    /// # Errors
    /// [`Error::Log`] (corruption, truncation under the reader).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<Record>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.reader.next() {
                return Some(r.map_err(Error::from));
            }
            let want = self.reader.next_lsn();
            let now = Instant::now();
            if now >= deadline || self.inner.stop.load(Ordering::Acquire) {
                return None;
            }
            self.inner.wait_durable(want, deadline - now);
        }
    }
}
