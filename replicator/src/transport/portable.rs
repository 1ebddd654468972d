//! Placeholder until the transport lands.
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{ConnId, NetHandler, Transport};

/// Not built yet.
#[derive(Debug)]
pub struct PortableTransport;

impl PortableTransport {
    /// Not built yet.
    pub fn start(_handler: Arc<dyn NetHandler>) -> io::Result<PortableTransport> {
        Err(io::Error::other("transport not built yet"))
    }
}

impl Transport for PortableTransport {
    fn name(&self) -> &'static str { "portable" }
    fn listen(&self, _addr: SocketAddr) -> io::Result<SocketAddr> { Err(io::Error::other("no")) }
    fn connect(&self, _addr: SocketAddr, _timeout: Duration) -> ConnId { 0 }
    fn send(&self, _conn: ConnId, _data: Bytes) {}
    fn queued_bytes(&self, _conn: ConnId) -> usize { 0 }
    fn close(&self, _conn: ConnId) {}
    fn shutdown(&self) {}
}
