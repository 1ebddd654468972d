//! A connection's receive buffer, shared by both transports: receives land in its spare room
//! and leave as slices of it ([`BytesMut::split`], no copy), and on a stream of logship frames
//! it keeps each frame whole in one allocation, so that the frame decoder joins the slices of a
//! frame without copying them ([`BytesMut::unsplit`] of neighbours is O(1)) and hands the frame
//! on as a slice of the same allocation.
//!
//! To do that it follows the frames' length fields as bytes arrive (each says where the next
//! frame starts). When a receive brings the start of a frame and its length, and the frame
//! will not fit in the room left, that frame's bytes are held back and moved into a new
//! allocation with room for all of it: a copy of at most one receive's bytes, where the decoder
//! used to copy every frame that arrived in more than one receive. Everything else goes on at
//! once, a frame's first bytes included (a client port times a request from its first byte), so
//! a length field split between two receives leaves its frame unsized, copied by the decoder
//! if it does not fit. A frame announcing more than [`MAX_SIZED_FRAME_BYTES`] is not sized for
//! either (the decoder refuses it, or copies it). Bytes held back are at most one receive's and
//! go on with the next receive; a receive is never larger than [`RECV_BYTES`]. With `framed`
//! off (TLS: the stream is ciphertext) it is a plain receive buffer.

use std::mem::MaybeUninit;

use bytes::BytesMut;

use crate::protocol::frame::{DEFAULT_MAX_BODY_BYTES, FRAME_HEADER_BYTES};

/// The most one receive takes in (and so one `Data` event carries, held-back bytes aside).
pub const RECV_BYTES: usize = 64 << 10;
/// The largest frame, header included, given an allocation of its own size.
pub const MAX_SIZED_FRAME_BYTES: usize = FRAME_HEADER_BYTES + DEFAULT_MAX_BODY_BYTES;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct RecvBuffer {
    /// Held-back bytes, then the spare room receives land in.
    buf: BytesMut,
    framed: bool,
    /// Stream offset of `buf`'s first byte (everything before it was delivered).
    held_from: u64,
    /// Stream offset of the first frame not yet wholly received.
    frame_start: u64,
    /// That frame's length, header included, once its length field is in.
    frame_len: Option<u64>,
    /// The bytes of that frame's length field seen so far, and how many.
    len_field: ([u8; 4], usize),
}

impl RecvBuffer {
    /// An empty buffer; `framed`: the stream carries logship frames in the clear.
    pub(crate) fn new(framed: bool) -> RecvBuffer {
        RecvBuffer {
            buf: BytesMut::with_capacity(RECV_BYTES),
            framed,
            held_from: 0,
            frame_start: 0,
            frame_len: None,
            len_field: ([0; 4], 0),
        }
    }

    /// Stream offset one past the last byte received.
    fn received_end(&self) -> u64 {
        self.held_from + self.buf.len() as u64
    }

    /// Bytes of the frame being received still to come, if it was sized for (its header is
    /// in and it is not too large to be).
    fn sized_rest(&self) -> Option<usize> {
        let len = self
            .frame_len
            .filter(|&l| l <= MAX_SIZED_FRAME_BYTES as u64)?;
        Some((self.frame_start + len - self.received_end()) as usize)
    }

    /// The room the next receive goes into, at most [`RECV_BYTES`] and never empty. The
    /// buffer must not be touched again until [`RecvBuffer::received`] says how much of it the
    /// receive filled.
    pub(crate) fn room(&mut self) -> &mut [MaybeUninit<u8>] {
        let spare = self.buf.capacity() - self.buf.len();
        match self.sized_rest() {
            // The rest of a frame sized for lands beside its first bytes.
            Some(rest) if rest <= spare => {}
            // A frame that does not fit, held back whole by `received` (`walk_frames`): its
            // bytes move to an allocation with room for all of it.
            Some(rest) => self.reallocate(rest + RECV_BYTES),
            None if spare < RECV_BYTES / 4 => self.reallocate(RECV_BYTES),
            None => {}
        }
        let spare = self.buf.spare_capacity_mut();
        let len = spare.len().min(RECV_BYTES);
        &mut spare[..len]
    }

    /// The receive filled the first `n` bytes of [`RecvBuffer::room`]; returns what goes to
    /// the handler now (`None`: nothing yet, the bytes are held back for the next receive).
    ///
    /// # Panics
    /// If `n` is more than the room given.
    pub(crate) fn received(&mut self, n: usize) -> Option<BytesMut> {
        let spare = self.buf.capacity() - self.buf.len();
        assert!(
            n <= spare.min(RECV_BYTES),
            "received {n} bytes into {spare}"
        );
        // SAFETY: the receive wrote the first `n` bytes of the spare room `room` gave it
        // (checked above to be within it).
        #[allow(unsafe_code)]
        unsafe {
            self.buf.set_len(self.buf.len() + n)
        };
        let hold_from = self.walk_frames(self.received_end() - n as u64);
        let deliver = (hold_from - self.held_from) as usize;
        let out = (deliver > 0).then(|| self.buf.split_to(deliver));
        self.held_from = hold_from;
        out
    }

    /// Follows the frames' length fields through the bytes received since `scanned` (a stream
    /// offset); returns the stream offset from which bytes are held back (the end of what was
    /// received: none are).
    fn walk_frames(&mut self, scanned: u64) -> u64 {
        let end = self.received_end();
        if !self.framed {
            return end;
        }
        loop {
            match self.frame_len {
                Some(len) if self.frame_start + len <= end => {
                    self.frame_start += len;
                    (self.frame_len, self.len_field.1) = (None, 0);
                }
                Some(_) => break,
                None => {
                    let (field, have) = &mut self.len_field;
                    // The field's bytes before `scanned` were taken in by an earlier walk.
                    while *have < 4 && self.frame_start + (*have as u64) < end {
                        let at = self.frame_start + *have as u64;
                        debug_assert!(at >= scanned && at >= self.held_from);
                        field[*have] = self.buf[(at - self.held_from) as usize];
                        *have += 1;
                    }
                    if *have < 4 {
                        return end;
                    }
                    let body = u32::from_le_bytes(*field);
                    self.frame_len = Some(FRAME_HEADER_BYTES as u64 + u64::from(body));
                }
            }
        }
        let spare = (self.buf.capacity() - self.buf.len()) as u64;
        match self.sized_rest() {
            // A frame that does not fit, all of whose bytes came in this receive: held back.
            Some(rest) if rest as u64 > spare && self.frame_start >= scanned => self.frame_start,
            _ => end,
        }
    }

    /// Moves the held-back bytes into a new allocation with room for `room` more bytes.
    fn reallocate(&mut self, room: usize) {
        let mut new = BytesMut::with_capacity(self.buf.len() + room);
        new.extend_from_slice(&self.buf);
        self.buf = new;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::frame::{encode, FrameDecoder};

    /// Receives `stream` through a buffer, each receive taking at most the next of `sizes`
    /// (cycled); returns the deliveries and the stream offset each receive ended at.
    fn receive(framed: bool, stream: &[u8], sizes: &[usize]) -> (Vec<BytesMut>, Vec<usize>) {
        let mut buf = RecvBuffer::new(framed);
        let (mut at, mut out, mut ends) = (0, Vec::new(), Vec::new());
        for &size in sizes.iter().cycle() {
            if at == stream.len() {
                break;
            }
            let room = buf.room();
            assert!(!room.is_empty() && room.len() <= RECV_BYTES);
            let n = size.clamp(1, room.len()).min(stream.len() - at);
            for (slot, &b) in room.iter_mut().zip(&stream[at..at + n]) {
                slot.write(b);
            }
            at += n;
            ends.push(at);
            out.extend(buf.received(n));
        }
        (out, ends)
    }

    /// Frames of these body sizes, each body filled with its index; the stream and each
    /// frame's (offset, length).
    fn frames(sizes: &[usize]) -> (Vec<u8>, Vec<(usize, usize)>) {
        let (mut stream, mut spans) = (Vec::new(), Vec::new());
        for (i, &size) in sizes.iter().enumerate() {
            let frame = encode(1, &vec![i as u8; size]);
            spans.push((stream.len(), frame.len()));
            stream.extend_from_slice(&frame);
        }
        (stream, spans)
    }

    /// Whether the deliveries covering `start..start + len` of the stream are neighbours in
    /// memory (the decoder joins them without a copy).
    fn contiguous(deliveries: &[BytesMut], (start, len): (usize, usize)) -> bool {
        let mut offset = 0;
        let mut end_of_last: Option<*const u8> = None;
        for d in deliveries {
            let (from, to) = (offset, offset + d.len());
            offset = to;
            if to <= start || from >= start + len {
                continue;
            }
            if end_of_last.is_some_and(|p| p != d.as_ptr()) {
                return false;
            }
            end_of_last = Some(d.as_ptr().wrapping_add(d.len()));
        }
        true
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn frames_arrive_in_one_allocation_and_the_stream_whole(
            bodies in prop::collection::vec(
                prop_oneof![0usize..200, 60_000usize..70_000, 200_000usize..700_000], 1..10),
            sizes in prop::collection::vec(1usize..=RECV_BYTES, 1..8),
        ) {
            let (stream, spans) = frames(&bodies);
            let (deliveries, ends) = receive(true, &stream, &sizes);
            let joined: Vec<u8> = deliveries.iter().flat_map(|d| d.iter().copied()).collect();
            prop_assert!(joined == stream, "the stream changed on its way");
            for d in &deliveries {
                prop_assert!(d.len() <= 2 * RECV_BYTES, "{} bytes", d.len());
            }
            for (i, &(start, len)) in spans.iter().enumerate() {
                // A length field split between two receives leaves its frame unsized.
                let split = ends.iter().any(|&e| e > start && e < start + 4);
                prop_assert!(split || contiguous(&deliveries, (start, len)), "frame {i} in pieces");
            }
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_BODY_BYTES);
            for d in deliveries {
                decoder.push_owned(d);
            }
            for (i, &size) in bodies.iter().enumerate() {
                let frame = decoder.next_frame().expect("valid").expect("whole");
                prop_assert!(frame.body.len() == size && frame.body.iter().all(|&b| b == i as u8));
            }
            prop_assert!(decoder.next_frame().expect("valid").is_none());
        }
    }

    #[test]
    fn without_frames_every_byte_goes_on_at_once() {
        let (deliveries, _) = receive(false, b"hello", &[3]);
        let got: Vec<&[u8]> = deliveries.iter().map(|d| &d[..]).collect();
        assert_eq!(got, [&b"hel"[..], &b"lo"[..]]);
    }

    #[test]
    fn a_frame_that_does_not_fit_waits_for_the_next_receive_and_lands_whole() {
        // A small frame, then one of 100 KiB whose length comes in the same receive.
        let (stream, spans) = frames(&[10, 100 << 10]);
        let first = spans[1].0 + 4 + 1000;
        let (deliveries, _) = receive(true, &stream, &[first, RECV_BYTES]);
        assert_eq!(
            deliveries[0].len(),
            spans[1].0,
            "only the small frame went on"
        );
        assert!(contiguous(&deliveries, spans[1]));
        // A partial length field goes on at once (a request is timed from its first byte).
        let (deliveries, _) = receive(true, &stream[..spans[1].0 + 2], &[RECV_BYTES]);
        assert_eq!(
            deliveries.iter().map(|d| d.len()).sum::<usize>(),
            spans[1].0 + 2
        );
    }

    #[test]
    fn a_frame_too_large_to_size_goes_on_as_it_comes() {
        let mut buf = RecvBuffer::new(true);
        // A header announcing a body one byte over the bound, and three bytes of the body.
        let mut bytes = (MAX_SIZED_FRAME_BYTES as u32 - 11).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 7, 7, 7]);
        for (slot, &b) in buf.room().iter_mut().zip(&bytes) {
            slot.write(b);
        }
        let got = buf.received(bytes.len()).expect("delivered");
        assert_eq!(&got[..], &bytes[..]);
    }
}
