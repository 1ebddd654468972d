//! Fuzzing harnesses, shared by the cargo-fuzz targets in `fuzz/` and the corpus replay test
//! `replicator/tests/fuzz_corpus.rs`. Hidden from the docs and not part of the API.
//!
//! Each harness takes arbitrary bytes and asserts properties of the wire protocol and of the
//! sans-I/O replication state machines. A harness never panics on bad input: a panic is a
//! finding, either a bug or a wrong property. Inputs are cut to [`MAX_INPUT_BYTES`] and every
//! loop is bounded, so one run costs a bounded amount.
//!
//! - [`frame_decode`]: the frame decoder and the message codec. A stream decodes the same whole,
//!   split at data-derived points and byte by byte; errors are sticky and say why; every decoded
//!   message re-encodes to exactly the frame it came from and decodes back to itself; a flipped
//!   bit past the length field is refused.
//! - [`handshake`]: a follower and a primary (one link, its connection up), each a
//!   [`Replica`](crate::replica::Replica) that the harness executes the way the node does
//!   (`node::Inner::execute`): connections through their lifecycle, the peer's bytes in
//!   `Input::Data` (messages built from the input, with proofs made every way a peer without
//!   the key could try and the honest one, and raw bytes), ticks, the log's batches and
//!   durability, and the answers to the replica's log work (truncations and appends on a model
//!   log, catch-up reads, CRC lookups, peers' fetches). The harness reads each peer's bytes with
//!   a decoder of its own to know what the replica was told, follows every handshake, and
//!   asserts that the follower never appends, truncates, acknowledges or serves a fetch for a
//!   connection that has not proven the cluster key, that the primary never sends `Start`,
//!   `Records` or `Heartbeat` to a follower that has not proven it, and that neither sends a
//!   `VoteResponse` on a connection that asked for no vote. After every step the
//!   replica's invariants hold ([`Replica::check_invariants`](crate::replica::Replica::check_invariants)),
//!   the nonce it drew for a new connection is the one predicted, and its malformed-frame
//!   counter has risen exactly when a decoder error ended a connection. Honest sessions, with
//!   faults, are the simulator's (`crate::sim`).
//!
//! - `client_auth`: the client keys file parsers and the node's check of a client's proof
//!   (see `client_auth.rs` for its properties).
//!
//! Layout: `input` reads the input and builds the messages a fuzzed peer sends, `common` holds
//! the names, key, transcript, configurations and the oracle's decoder both ends share,
//! `log_model` the logs the harness keeps for each node, `executor` runs a replica and checks
//! it after every step, and `follower_side` and `primary_side` the two parts of `handshake`.

mod client_auth;
mod common;
mod executor;
mod follower_side;
mod input;
mod log_model;
mod primary_side;

use crate::protocol::frame::{self, Frame, FrameDecoder, FrameError, DEFAULT_MAX_BODY_BYTES};
use crate::protocol::msg::kind_name;
use crate::protocol::Msg;

use self::follower_side::FollowerUnderTest;
use self::input::Input;
use self::primary_side::PrimaryUnderTest;

/// Inputs are cut to this many bytes.
pub const MAX_INPUT_BYTES: usize = 64 << 10;

/// Largest body the `frame_decode` decoder accepts: small, so that inputs reach the limit.
const SMALL_MAX_BODY_BYTES: usize = 1024;
/// Inputs up to this size are also decoded one byte at a time.
const BYTEWISE_MAX_INPUT_BYTES: usize = 4096;
/// Data-derived split points of the split decode.
const SPLITS: usize = 3;

/// Steps of the adversarial part of a `handshake` run, at most.
const MAX_STEPS: usize = 512;

// ---------------------------------------------------------------------------------------------
// frame_decode

/// Decodes arbitrary bytes as a stream of frames and messages and checks the codec's properties.
///
/// # Panics
/// When a property fails: that is a finding.
pub fn frame_decode(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT_BYTES)];
    let whole = decode_pieces(&[data]);
    let split = decode_pieces(&split_points(data));
    assert_eq!(
        whole, split,
        "a split stream decodes differently from the whole stream"
    );
    if data.len() <= BYTEWISE_MAX_INPUT_BYTES {
        let bytewise: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(
            whole,
            decode_pieces(&bytewise),
            "a stream fed byte by byte decodes differently"
        );
    }
    for f in &whole.frames {
        check_frame_message(f);
    }
}

/// What a decoder made of a stream.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    frames: Vec<Frame>,
    /// The error that ended the stream.
    error: Option<FrameError>,
    /// Bytes buffered at the end, without an error: an incomplete frame.
    leftover: usize,
}

fn decode_pieces(pieces: &[&[u8]]) -> Decoded {
    let mut d = FrameDecoder::new(SMALL_MAX_BODY_BYTES);
    let mut frames = Vec::new();
    for piece in pieces {
        d.push(piece);
        // Every frame takes at least a header off the buffer, so the input bounds this loop.
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    let len = f.body.len();
                    assert!(
                        len <= SMALL_MAX_BODY_BYTES,
                        "a {len}-byte body passed the limit"
                    );
                    frames.push(f);
                }
                Ok(None) => break,
                Err(e) => {
                    check_frame_error(&e);
                    assert_eq!(
                        d.next_frame(),
                        Err(e.clone()),
                        "a decoder error is not sticky"
                    );
                    return Decoded {
                        frames,
                        error: Some(e),
                        leftover: 0,
                    };
                }
            }
        }
    }
    Decoded {
        frames,
        error: None,
        leftover: d.buffered(),
    }
}

/// The decoder's error says what is wrong, and only frame-level things are wrong with frames.
fn check_frame_error(e: &FrameError) {
    match e {
        FrameError::TooLarge { len, max } => {
            assert!(*max == SMALL_MAX_BODY_BYTES && len > max, "{e}");
        }
        FrameError::BadFlags { flags, reserved } => assert!(*flags != 0 || *reserved != 0, "{e}"),
        FrameError::BadCrc { stored, computed } => assert_ne!(stored, computed, "{e}"),
        other => panic!("the frame decoder returned a message-level error: {other:?}"),
    }
}

/// Up to [`SPLITS`] cut points derived from the data's CRC, in order.
fn split_points(data: &[u8]) -> Vec<&[u8]> {
    let mut h = crc32fast::hash(data);
    let mut cuts: Vec<usize> = (0..SPLITS)
        .map(|_| {
            h = h.rotate_left(13) ^ 0x9e37_79b9;
            h as usize % (data.len() + 1)
        })
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::with_capacity(SPLITS + 1);
    let mut at = 0;
    for cut in cuts {
        pieces.push(&data[at..cut]);
        at = cut;
    }
    pieces.push(&data[at..]);
    pieces
}

/// Decodes one frame's message: refused for the right reason, or canonical and round-tripping.
fn check_frame_message(frame: &Frame) {
    let msg = match Msg::decode(frame) {
        Ok(m) => m,
        Err(FrameError::UnknownKind(k)) => {
            assert_eq!(k, frame.kind, "UnknownKind names another kind");
            assert_eq!(
                kind_name(k),
                "unknown",
                "kind {k} has a name but was refused as unknown"
            );
            return;
        }
        Err(FrameError::Malformed { kind, .. }) => {
            assert_eq!(kind, kind_name(frame.kind), "Malformed names another kind");
            assert_ne!(kind, "unknown", "an unknown kind was refused as malformed");
            return;
        }
        Err(e) => panic!("Msg::decode returned a frame-level error: {e:?}"),
    };
    assert_eq!(
        msg.kind(),
        frame.kind,
        "{} decoded from kind {}",
        msg.name(),
        frame.kind
    );
    let original = frame::encode(frame.kind, &frame.body);
    let wire = msg.encode();
    assert!(
        wire == original,
        "{} re-encodes to other bytes:\n decoded {:02x?}\n encoded {:02x?}",
        msg.name(),
        &original[..original.len().min(96)],
        &wire[..wire.len().min(96)]
    );
    let mut d = FrameDecoder::new(DEFAULT_MAX_BODY_BYTES);
    d.push(&wire);
    let again = d
        .next_frame()
        .expect("a re-encoded frame decodes")
        .expect("and is whole");
    assert_eq!(d.buffered(), 0, "a re-encoded frame leaves bytes behind");
    assert_eq!(
        Msg::decode(&again).as_ref(),
        Ok(&msg),
        "a re-encoded message decodes differently"
    );
    check_flip(&wire);
}

/// CRC-32 detects every single-bit error in a message of fixed length; a bit past the length
/// field leaves the length alone, so the frame must be refused.
fn check_flip(wire: &[u8]) {
    let bits = (wire.len() - 4) * 8;
    let bit = 32 + crc32fast::hash(wire) as usize % bits;
    let mut bad = wire.to_vec();
    bad[bit / 8] ^= 1 << (bit % 8);
    let mut d = FrameDecoder::new(DEFAULT_MAX_BODY_BYTES);
    d.push(&bad);
    assert!(
        d.next_frame().is_err(),
        "a frame with bit {bit} flipped is accepted"
    );
}

// ---------------------------------------------------------------------------------------------
// handshake

/// The HTTP server's request parsing and dispatch, and the client's response parsing, on
/// arbitrary bytes: never a panic, only the statuses the input allows (`400` for a malformed
/// request line, `405` for a method other than `GET`/`HEAD`, else the handler's answer), and a
/// parsed path that starts with `/` and holds no control byte.
///
/// # Panics
/// When a property fails: that is a finding.
pub fn http_parse(data: &[u8]) {
    crate::http::fuzz_parsers(data);
}

/// Parses a client keys file and checks client proofs carved from `data`; see
/// `fuzzing/client_auth.rs` for the properties.
///
/// # Panics
/// When a property fails: that is a finding.
pub fn client_auth(data: &[u8]) {
    client_auth::run(&data[..data.len().min(MAX_INPUT_BYTES)]);
}

/// Drives a follower and a primary with frames carved from `data`; see the module doc for the
/// properties.
///
/// # Panics
/// When a property fails: that is a finding.
pub fn handshake(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT_BYTES)];
    let mut input = Input::new(data);
    let mut follower = FollowerUnderTest::new(&mut input);
    let mut primary = PrimaryUnderTest::new(&mut input);
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let op = input.byte();
        if op & 1 == 0 {
            follower.step(op >> 1, &mut input);
        } else {
            primary.step(op >> 1, &mut input);
        }
    }
    follower.finish();
    primary.finish();
}
