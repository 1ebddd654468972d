//! The randomness a replica is given: a seeded generator for jitter, and a seeded source of
//! handshake nonces. The executor seeds both (the node from the operating system, the
//! simulator from its run's seed); nothing inside the replica draws randomness of its own.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::protocol::auth::NONCE_LEN;

/// Handshake nonces: HMAC-SHA256 of a counter under a 32-byte seed (a deterministic random
/// bit generator in the manner of NIST SP 800-90A's HMAC_DRBG, without reseeding). With a
/// seed drawn from the operating system the nonces are unpredictable to anyone without the
/// seed; with a seed from a simulation they replay exactly.
pub struct NonceSource {
    mac: Hmac<Sha256>,
    counter: u64,
}

impl std::fmt::Debug for NonceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceSource")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl NonceSource {
    /// A source keyed by `seed`.
    pub fn new(seed: [u8; 32]) -> NonceSource {
        NonceSource {
            mac: Hmac::<Sha256>::new_from_slice(&seed).expect("HMAC takes any key length"),
            counter: 0,
        }
    }

    /// A source keyed by a 64-bit seed (the simulator's).
    pub fn from_u64(seed: u64) -> NonceSource {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        NonceSource::new(s)
    }

    /// The next nonce.
    pub fn next_nonce(&mut self) -> [u8; NONCE_LEN] {
        self.counter += 1;
        let mut m = self.mac.clone();
        m.update(&self.counter.to_le_bytes());
        let out = m.finalize().into_bytes();
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&out[..NONCE_LEN]);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_differ_and_replay_from_the_same_seed() {
        let mut a = NonceSource::from_u64(7);
        let mut b = NonceSource::from_u64(7);
        let (a1, a2) = (a.next_nonce(), a.next_nonce());
        assert_ne!(a1, a2);
        assert_eq!(a1, b.next_nonce());
        assert_ne!(a1, NonceSource::from_u64(8).next_nonce());
    }
}
