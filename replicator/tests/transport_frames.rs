//! Both transports on real sockets (127.0.0.1 only), with a handler that receives frames: a
//! client writes frames of assorted sizes, and each frame must reach the handler as neighbouring
//! slices of one allocation (what lets the frame decoder join them without a copy), the stream
//! unchanged. io_uring's run says why it is skipped where the kernel refuses io_uring.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender};
use logship_replicator::protocol::frame::{encode, FrameDecoder, DEFAULT_MAX_BODY_BYTES};
use logship_replicator::transport::{self, NetBackend, NetEvent, NetHandler};

/// Longest the whole stream may take to arrive.
const WAIT: Duration = Duration::from_secs(10);

/// Forwards every `Data` to the test; says it receives frames.
struct Frames(Sender<BytesMut>);

impl NetHandler for Frames {
    fn on_event(&self, event: NetEvent) {
        if let NetEvent::Data { bytes, .. } = event {
            let _ = self.0.send(bytes);
        }
    }

    fn receives_frames(&self) -> bool {
        true
    }
}

/// Deliveries until `len` bytes came, or the wait ran out.
fn collect(data: &Receiver<BytesMut>, len: usize) -> Vec<BytesMut> {
    let (deadline, mut got, mut out) = (Instant::now() + WAIT, 0, Vec::new());
    while got < len {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(bytes) = data.recv_timeout(left) else {
            panic!("{got} of {len} bytes arrived within {WAIT:?}");
        };
        got += bytes.len();
        out.push(bytes);
    }
    out
}

/// Sends the frames through `backend` and checks what the handler got.
fn frames_arrive_whole(backend: NetBackend) {
    let (tx, data) = crossbeam_channel::unbounded();
    let t = match transport::start(backend, Arc::new(Frames(tx))) {
        Ok(t) => t,
        Err(e) => return println!("skipping {backend:?}: {e}"),
    };
    let addr: SocketAddr = t.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let sizes = [10, 300_000, 70_000, 1_000_000, 5, 2_000_000, 0, 150_000, 3];
    // Frame i's body is `sizes[i]` bytes of i.
    let wire: Vec<_> = (sizes.iter().enumerate())
        .map(|(i, &size)| encode(1, &vec![i as u8; size]))
        .collect();
    let stream = wire.concat();
    let spans: Vec<(usize, usize)> = (wire.iter())
        .scan(0, |at, f| {
            *at += f.len();
            Some((*at - f.len(), f.len()))
        })
        .collect();
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_nodelay(true).unwrap();
    // In pieces that split frames.
    for piece in stream.chunks(100_003) {
        client.write_all(piece).unwrap();
    }
    let deliveries = collect(&data, stream.len());
    t.shutdown();
    let joined: Vec<u8> = deliveries.iter().flat_map(|d| d.iter().copied()).collect();
    assert!(
        joined == stream,
        "{backend:?}: the stream changed on its way"
    );
    // Where each delivery starts and ends in the stream.
    let mut bounds = vec![0];
    for d in &deliveries {
        bounds.push(bounds.last().unwrap() + d.len());
    }
    let mut whole = 0;
    for &(start, len) in &spans {
        // A delivery that ends inside a length field: the field was split between receives,
        // and the frame is left unsized.
        if bounds.iter().any(|&b| b > start && b < start + 4) {
            continue;
        }
        let covering =
            (0..deliveries.len()).filter(|&i| bounds[i + 1] > start && bounds[i] < start + len);
        let ptrs: Vec<(usize, *const u8)> = covering.map(|i| (i, deliveries[i].as_ptr())).collect();
        for pair in ptrs.windows(2) {
            let (before, at) = (pair[0].0, pair[1]);
            let end = deliveries[before]
                .as_ptr()
                .wrapping_add(deliveries[before].len());
            assert_eq!(
                end, at.1,
                "{backend:?}: the frame at {start} is in separate allocations"
            );
        }
        whole += 1;
    }
    assert!(
        whole >= spans.len() - 1,
        "{backend:?}: {whole} frames checked"
    );
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_BODY_BYTES);
    for d in deliveries {
        decoder.push_owned(d);
    }
    for (i, &size) in sizes.iter().enumerate() {
        let f = decoder.next_frame().unwrap().expect("a whole frame");
        assert!(f.body.len() == size && f.body.iter().all(|&b| b == i as u8));
    }
}

#[test]
fn frames_arrive_whole_on_the_portable_transport() {
    frames_arrive_whole(NetBackend::Portable);
}

#[test]
fn frames_arrive_whole_on_the_io_uring_transport() {
    frames_arrive_whole(NetBackend::IoUring);
}
