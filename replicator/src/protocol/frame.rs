//! Frames: the unit on the wire. Every message travels in one frame.
//!
//! ```text
//! offset size field
//!      0    4 body_len  u32 LE, bytes of body after this 12-byte header
//!      4    1 kind      u8, the message type (see `msg`)
//!      5    1 flags     u8, must be 0 (no frame flag is defined)
//!      6    2 reserved  u16, must be 0
//!      8    4 crc32     u32 LE, CRC-32 (IEEE) of bytes 0..8 and the body
//!     12    n body
//! ```
//! The decoder is incremental (bytes arrive in any split) and never panics or allocates more
//! than `max_body_bytes` plus one read on hostile input: an oversized length is refused from
//! the header alone, before the body is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Size of the frame header.
pub const FRAME_HEADER_BYTES: usize = 12;
/// Default largest body accepted: room for one maximum record (4 MiB) or a catch-up chunk.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;

/// Why bytes are not a valid frame or message. Any of these closes the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length field exceeds the maximum.
    #[error("frame body of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Length from the header.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The CRC does not match.
    #[error("frame CRC mismatch: header says {stored:#010x}, bytes give {computed:#010x}")]
    BadCrc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// Flags or reserved bits set.
    #[error("frame has unknown flags {flags:#x} or reserved bits {reserved:#x}")]
    BadFlags {
        /// The flags byte.
        flags: u8,
        /// The reserved field.
        reserved: u16,
    },
    /// The kind byte names no message.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The body does not parse as its message.
    #[error("malformed {kind} body: {reason}")]
    Malformed {
        /// The message type.
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// One frame: its kind and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The message type byte.
    pub kind: u8,
    /// The body (a slice of the receive buffer, not a copy).
    pub body: Bytes,
}

/// Encodes a frame header for `body` of `kind`. The body follows it on the wire.
pub fn encode_header(kind: u8, body: &[u8]) -> [u8; FRAME_HEADER_BYTES] {
    encode_header_parts(kind, &[body])
}

/// Encodes a frame header for a body made of `parts`, back to back (so a large body need not
/// be copied into one buffer).
pub fn encode_header_parts(kind: u8, parts: &[&[u8]]) -> [u8; FRAME_HEADER_BYTES] {
    let mut h = [0u8; FRAME_HEADER_BYTES];
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(total).expect("frame bodies are far below 4 GiB");
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4] = kind;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[0..8]);
    for p in parts {
        crc.update(p);
    }
    h[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// Encodes a whole frame into one buffer.
pub fn encode(kind: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(FRAME_HEADER_BYTES + body.len());
    out.put_slice(&encode_header(kind, body));
    out.put_slice(body);
    out.freeze()
}

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_body_bytes: usize,
}

impl FrameDecoder {
    /// A decoder refusing bodies larger than `max_body_bytes`.
    pub fn new(max_body_bytes: usize) -> FrameDecoder {
        FrameDecoder {
            buf: BytesMut::new(),
            max_body_bytes,
        }
    }

    /// Changes the largest body accepted from the next frame on (the client port reads its
    /// handshake with a small limit, then requests with the request limit); bytes already
    /// buffered are kept.
    pub fn set_max_body_bytes(&mut self, max_body_bytes: usize) {
        self.max_body_bytes = max_body_bytes;
    }

    /// Adds received bytes (a copy).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Adds received bytes without copying them where they continue the bytes buffered in the
    /// same allocation (a transport's receive buffer delivers neighbouring slices of one; see
    /// `transport::recv_buf`), or where nothing is buffered: frames are then slices of it.
    pub fn push_owned(&mut self, bytes: BytesMut) {
        self.buf.unsplit(bytes);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `None` if more bytes are needed.
    ///
    /// # Errors
    /// Any [`FrameError`]; the stream is unusable afterwards (close the connection).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let h = &self.buf[..FRAME_HEADER_BYTES];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let (kind, flags, reserved) = (h[4], h[5], u16::from_le_bytes([h[6], h[7]]));
        let stored = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if len > self.max_body_bytes {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_body_bytes,
            });
        }
        if flags != 0 || reserved != 0 {
            return Err(FrameError::BadFlags { flags, reserved });
        }
        if self.buf.len() < FRAME_HEADER_BYTES + len {
            // No reserve: it would copy a buffer shared with the transport's (`push_owned`).
            return Ok(None);
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.buf[0..8]);
        crc.update(&self.buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len]);
        let computed = crc.finalize();
        if computed != stored {
            return Err(FrameError::BadCrc { stored, computed });
        }
        self.buf.advance(FRAME_HEADER_BYTES);
        let body = self.buf.split_to(len).freeze();
        Ok(Some(Frame { kind, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split() {
        let mut wire = Vec::new();
        for i in 0..50u8 {
            wire.extend_from_slice(&encode(i % 7 + 1, &vec![i; i as usize * 13]));
        }
        for step in [1usize, 2, 5, 12, 13, 64, 4096] {
            let mut d = FrameDecoder::new(1 << 20);
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 50, "step {step}");
            for (i, f) in got.iter().enumerate() {
                assert_eq!(f.kind, i as u8 % 7 + 1);
                assert_eq!(f.body.len(), i * 13);
            }
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn neighbouring_pieces_make_a_frame_without_a_copy() {
        let wire = encode(3, &[9u8; 1000]);
        let mut all = BytesMut::from(&wire[..]);
        let start = all.as_ptr();
        let mut d = FrameDecoder::new(1 << 20);
        while !all.is_empty() {
            d.push_owned(all.split_to(all.len().min(100)));
        }
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.body.as_ptr(), start.wrapping_add(FRAME_HEADER_BYTES));
        assert_eq!(&f.body[..], &[9u8; 1000][..]);
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        let mut d = FrameDecoder::new(100);
        let mut h = encode_header(1, &[0; 101]).to_vec();
        h.truncate(FRAME_HEADER_BYTES);
        d.push(&h);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let frame = encode(5, b"some body bytes");
        for byte in 0..frame.len() {
            for bit in 0..8 {
                let mut bad = frame.to_vec();
                bad[byte] ^= 1 << bit;
                let mut d = FrameDecoder::new(1 << 20);
                d.push(&bad);
                match d.next_frame() {
                    Ok(None) => assert!(byte < 4, "only a longer length waits for more"),
                    Ok(Some(f)) => panic!("flip at {byte}.{bit} accepted: {f:?}"),
                    Err(_) => {}
                }
            }
        }
    }
}
