//! The `client_auth` harness: the client keys file parsers and the node's check of a client's
//! proof, on arbitrary bytes.
//!
//! The input is a keys file (up to the first `0xFF` byte, which no key line holds) and the
//! frames of a client (the rest). Properties:
//! - parsing never panics, as the node's keys file ([`ClientKeys`]) or a client's own file
//!   ([`ClientKey`]);
//! - when both parse, the client's honest proof is admitted with exactly the grants the node's
//!   file gives its name, and the node's proof in the welcome verifies under the client's key;
//!   the same proof with any one bit flipped, or for another cluster, is refused `auth_failed`;
//! - every `ClientProof` the frames carry, after each `ClientHello`, is checked without a
//!   panic, and one that is admitted names a client of the file with its grants.

use std::path::Path;

use crate::protocol::auth::NONCE_LEN;
use crate::protocol::client_auth::{
    prove_client, verify_node, Challenge, ClientKey, ClientKeys, ClientRefusal, ClientTranscript,
};
use crate::protocol::frame::FrameDecoder;
use crate::protocol::Msg;

/// The cluster id the node checks against.
const CLUSTER: &str = "fuzz";
/// The node's nonce in every challenge (the harness has no randomness; freshness is not what
/// is checked here).
const NODE_NONCE: [u8; NONCE_LEN] = [0x5a; NONCE_LEN];
/// Body limit of the client's frames, as the node reads handshake frames.
const MAX_BODY_BYTES: usize = 512;
/// Frames looked at, at most.
const MAX_FRAMES: usize = 256;

/// Runs the harness on `data` (already cut to the harness input limit).
///
/// # Panics
/// When a property fails: that is a finding.
pub(super) fn run(data: &[u8]) {
    let split = data.iter().position(|&b| b == 0xFF).unwrap_or(data.len());
    let (file, frames) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let path = Path::new("fuzz.keys");
    let node = ClientKeys::from_file_bytes(file, path).ok();
    let client = ClientKey::from_file_bytes(file, path).ok();
    if let (Some(node), Some(client)) = (&node, &client) {
        honest_proof(node, client);
    }
    if let Some(node) = &node {
        client_frames(node, frames);
    }
}

/// The client's honest proof is admitted with its grants; altered ones are refused.
fn honest_proof(node: &ClientKeys, client: &ClientKey) {
    let challenge = Challenge {
        name: client.name().to_string(),
        client_nonce: [0xa5; NONCE_LEN],
        node_nonce: NODE_NONCE,
    };
    let t = ClientTranscript {
        cluster_id: CLUSTER,
        name: client.name(),
        client_nonce: &challenge.client_nonce,
        node_nonce: &challenge.node_nonce,
    };
    let mac = prove_client(client, &t);
    let Some(grants) = node.grants(client.name()) else {
        let refused = challenge
            .check(node, CLUSTER, &mac)
            .expect_err("unknown name admitted");
        assert_eq!(refused.code, ClientRefusal::AuthFailed);
        return;
    };
    // The client's file may hold a key the node's file does not (its first line names the
    // client, but the node's ring for that name is made of every line's key): admitted only
    // when the node holds this key, and then with the node's grants.
    if let Ok(welcome) = challenge.check(node, CLUSTER, &mac) {
        assert_eq!(
            welcome.grants, grants,
            "admitted with other grants than the file's"
        );
        assert!(
            verify_node(client, &t, &welcome.mac),
            "the node's proof does not verify under the client's key"
        );
        for bit in 0..mac.len() * 8 {
            let mut bad = mac;
            bad[bit / 8] ^= 1 << (bit % 8);
            let refused = challenge.check(node, CLUSTER, &bad);
            assert!(
                refused.is_err(),
                "a proof with bit {bit} flipped was admitted"
            );
        }
        let other = challenge.check(node, "another-cluster", &mac);
        assert!(
            other.is_err(),
            "a proof for {CLUSTER} admitted in another cluster"
        );
    }
}

/// Every proof the client's frames carry is checked against the challenge of the hello before.
fn client_frames(node: &ClientKeys, frames: &[u8]) {
    let mut decoder = FrameDecoder::new(MAX_BODY_BYTES);
    decoder.push(frames);
    let mut challenge: Option<Challenge> = None;
    for _ in 0..MAX_FRAMES {
        let Ok(Some(frame)) = decoder.next_frame() else {
            return;
        };
        match Msg::decode(&frame) {
            Ok(Msg::ClientHello { nonce, name }) => {
                challenge = Some(Challenge {
                    name,
                    client_nonce: nonce,
                    node_nonce: NODE_NONCE,
                });
            }
            Ok(Msg::ClientProof { mac }) => {
                let Some(c) = &challenge else { continue };
                if let Ok(welcome) = c.check(node, CLUSTER, &mac) {
                    assert_eq!(
                        Some(welcome.grants),
                        node.grants(&c.name),
                        "admitted a name the file does not give those grants"
                    );
                }
            }
            _ => {}
        }
    }
}
