//! Reconnection delays: capped exponential backoff with full jitter, and the seeded generator
//! the sans-I/O machines draw their randomness from.
//!
//! After the n-th consecutive failure (counting from 0) the delay is drawn uniformly from
//! `[0, min(max, initial * multiplier^n)]` ("full jitter" in Marc Brooker's "Exponential Backoff
//! And Jitter", AWS Architecture Blog, 2015). Full jitter spreads the retries of many followers
//! that lost the same primary at the same moment, instead of having them reconnect in lockstep.
//!
//! Invariants: a delay is never above `max`; the attempt counter saturates instead of
//! overflowing, and huge attempt counts give `max` as the ceiling. This module is pure: the
//! random draw comes from the caller (normally [`Rng`], seeded), so the simulator replays every
//! delay exactly. [`Rng`] is not cryptographic: nonces come from
//! the node's `random_nonce`.

use std::time::Duration;

/// Default [`BackoffConfig::initial`]: 50 ms.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// Default [`BackoffConfig::multiplier`]: each ceiling is twice the previous one.
pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
/// Default [`BackoffConfig::max`]: 5 s.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The largest accepted [`BackoffConfig::multiplier`].
pub const MAX_BACKOFF_MULTIPLIER: f64 = 1000.0;

/// How reconnection delays grow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// The ceiling of the first delay. Default 50 ms; must be above zero and at most `max`.
    pub initial: Duration,
    /// The factor each ceiling grows by. Default 2.0; finite, in `[1.0, 1000.0]`.
    pub multiplier: f64,
    /// The largest ceiling. Default 5 s; at least `initial`.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: DEFAULT_BACKOFF_INITIAL,
            multiplier: DEFAULT_BACKOFF_MULTIPLIER,
            max: DEFAULT_BACKOFF_MAX,
        }
    }
}

impl BackoffConfig {
    /// Checks the bounds given on each field.
    ///
    /// # Errors
    /// A sentence naming the bad field and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.initial.is_zero() {
            return Err("backoff.initial must be above zero".to_owned());
        }
        if !(self.multiplier.is_finite()
            && (1.0..=MAX_BACKOFF_MULTIPLIER).contains(&self.multiplier))
        {
            return Err(format!(
                "backoff.multiplier = {} must be between 1.0 and {MAX_BACKOFF_MULTIPLIER}",
                self.multiplier
            ));
        }
        if self.max < self.initial {
            return Err(format!(
                "backoff.max = {:?} must be at least backoff.initial = {:?}",
                self.max, self.initial
            ));
        }
        Ok(())
    }
}

/// The delays of one link's reconnection attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    /// A backoff at attempt 0.
    ///
    /// # Panics
    /// If `config` fails [`BackoffConfig::validate`]; configs are validated when loaded.
    pub fn new(config: BackoffConfig) -> Self {
        if let Err(why) = config.validate() {
            panic!("invalid backoff config: {why}");
        }
        Backoff { config, attempt: 0 }
    }

    /// The delay before the next attempt, then counts the attempt.
    ///
    /// `random` is a uniform 64-bit draw from the caller's seeded generator; the delay is
    /// `random` scaled onto `[0, ceiling]`, where `ceiling = min(max, initial * multiplier^attempt)`.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling_nanos();
        // Multiply-shift maps the 64-bit draw onto [0, ceiling] without modulo bias worth
        // mentioning; the product fits in u128 because both factors are at most 2^64.
        let nanos = (u128::from(random) * (u128::from(ceiling) + 1)) >> 64;
        let nanos = u64::try_from(nanos).expect("the scaled draw is at most the ceiling");
        assert!(
            nanos <= ceiling,
            "jittered delay {nanos} above ceiling {ceiling}"
        );
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_nanos(nanos)
    }

    /// `min(max, initial * multiplier^attempt)` in nanoseconds.
    fn ceiling_nanos(&self) -> u64 {
        let max = saturating_nanos(self.config.max);
        let exponent = i32::try_from(self.attempt).unwrap_or(i32::MAX);
        let grown = self.config.initial.as_nanos() as f64 * self.config.multiplier.powi(exponent);
        // `as` saturates (and infinity becomes u64::MAX), so the comparison is exact enough.
        if grown >= max as f64 {
            max
        } else {
            (grown as u64).min(max)
        }
    }

    /// Back to attempt 0, after a connection succeeded.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset (saturating).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The configuration.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }
}

fn saturating_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A small seeded deterministic generator: SplitMix64 (Steele, Lea and Flood, "Fast Splittable
/// Pseudorandom Number Generators", OOPSLA 2014). Not for secrets.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`; the bias of the modulo is below 2^-32 for the small `n`
    /// used here).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n.max(1)
    }

    /// True with probability `per_million` / 1,000,000.
    pub fn chance(&mut self, per_million: u32) -> bool {
        self.below(1_000_000) < u64::from(per_million)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn config(initial_ms: u64, multiplier: f64, max_ms: u64) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(initial_ms),
            multiplier,
            max: Duration::from_millis(max_ms),
        }
    }

    /// With `random = u64::MAX` the delay is the ceiling itself.
    fn ceilings(config: BackoffConfig, n: usize) -> Vec<Duration> {
        let mut backoff = Backoff::new(config);
        (0..n).map(|_| backoff.next_delay(u64::MAX)).collect()
    }

    #[test]
    fn ceilings_grow_by_the_multiplier_and_cap_at_max() {
        let cases: &[(&str, BackoffConfig, &[u64])] = &[
            (
                "defaults",
                BackoffConfig::default(),
                &[50, 100, 200, 400, 800, 1600, 3200, 5000, 5000],
            ),
            (
                "triple",
                config(10, 3.0, 1000),
                &[10, 30, 90, 270, 810, 1000, 1000],
            ),
            ("constant", config(20, 1.0, 20), &[20, 20, 20]),
            ("max equals initial", config(100, 2.0, 100), &[100, 100]),
            (
                "fractional",
                config(100, 1.5, 400),
                &[100, 150, 225, 337, 400],
            ),
        ];
        for (name, config, expected_ms) in cases {
            let got: Vec<u64> = ceilings(*config, expected_ms.len())
                .iter()
                .map(|d| u64::try_from(d.as_millis()).expect("small"))
                .collect();
            assert_eq!(&got, expected_ms, "{name}");
        }
    }

    #[test]
    fn draws_scale_onto_the_range() {
        let cases: &[(&str, u64, Duration)] = &[
            ("zero draw", 0, Duration::ZERO),
            ("max draw", u64::MAX, 50 * MS),
            ("half draw", 1 << 63, 25 * MS),
        ];
        for &(name, random, expected) in cases {
            let mut backoff = Backoff::new(BackoffConfig::default());
            let got = backoff.next_delay(random);
            let diff = got.abs_diff(expected);
            assert!(
                diff <= Duration::from_nanos(1),
                "{name}: {got:?} vs {expected:?}"
            );
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(BackoffConfig::default());
        for _ in 0..5 {
            backoff.next_delay(u64::MAX);
        }
        assert_eq!(backoff.attempt(), 5);
        backoff.reset();
        assert_eq!(backoff.attempt(), 0);
        assert_eq!(backoff.next_delay(u64::MAX), DEFAULT_BACKOFF_INITIAL);
        assert_eq!(backoff.attempt(), 1);
    }

    #[test]
    fn jitter_spans_the_range() {
        let mut backoff = Backoff::new(config(1000, 1.0, 1000));
        let mut rng = Rng::new(42);
        let mut buckets = [0u32; 10];
        let draws = 10_000;
        for _ in 0..draws {
            let delay = backoff.next_delay(rng.next_u64());
            assert!(delay <= 1000 * MS, "{delay:?}");
            let bucket = usize::try_from(delay.as_millis() / 100)
                .expect("small")
                .min(9);
            buckets[bucket] += 1;
        }
        // Each tenth of the range gets close to a tenth of the draws.
        for (i, &count) in buckets.iter().enumerate() {
            assert!(
                (800..=1200).contains(&count),
                "bucket {i}: {count} of {draws}"
            );
        }
    }

    #[test]
    fn huge_attempt_counts_saturate() {
        let cases: &[(&str, BackoffConfig)] = &[
            ("defaults", BackoffConfig::default()),
            (
                "largest multiplier",
                config(1, MAX_BACKOFF_MULTIPLIER, 60_000),
            ),
            (
                "huge max",
                BackoffConfig {
                    initial: MS,
                    multiplier: 2.0,
                    max: Duration::MAX,
                },
            ),
        ];
        for (name, config) in cases {
            let mut backoff = Backoff {
                config: *config,
                attempt: u32::MAX - 1,
            };
            let max = Duration::from_nanos(saturating_nanos(config.max));
            assert_eq!(backoff.next_delay(u64::MAX), max, "{name}");
            assert_eq!(backoff.attempt(), u32::MAX, "{name}");
            assert_eq!(
                backoff.next_delay(u64::MAX),
                max,
                "{name}: after saturation"
            );
            assert_eq!(backoff.attempt(), u32::MAX, "{name}: stays saturated");
        }
    }

    #[test]
    fn validate() {
        let cases: &[(&str, BackoffConfig, Option<&str>)] = &[
            ("defaults", BackoffConfig::default(), None),
            ("zero initial", config(0, 2.0, 10), Some("backoff.initial")),
            (
                "multiplier below one",
                config(1, 0.5, 10),
                Some("backoff.multiplier"),
            ),
            (
                "multiplier NaN",
                config(1, f64::NAN, 10),
                Some("backoff.multiplier"),
            ),
            (
                "multiplier infinite",
                config(1, f64::INFINITY, 10),
                Some("backoff.multiplier"),
            ),
            (
                "multiplier too large",
                config(1, 1e6, 10),
                Some("backoff.multiplier"),
            ),
            ("max below initial", config(10, 2.0, 5), Some("backoff.max")),
        ];
        for (name, config, expected) in cases {
            match (config.validate(), expected) {
                (Ok(()), None) => {}
                (Err(why), Some(field)) => assert!(why.contains(field), "{name}: {why}"),
                (got, _) => panic!("{name}: {got:?}"),
            }
        }
    }

    #[test]
    #[should_panic(expected = "invalid backoff config")]
    fn new_rejects_invalid_config() {
        Backoff::new(config(0, 2.0, 10));
    }

    #[test]
    fn rng_is_deterministic_splitmix64() {
        // Reference values of SplitMix64 seeded with 1234567 (from the published C code).
        let mut rng = Rng::new(1_234_567);
        let expected = [
            6_457_827_717_110_365_317,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
            4_593_380_528_125_082_431,
            16_408_922_859_458_223_821,
        ];
        for value in expected {
            assert_eq!(rng.next_u64(), value);
        }
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let mut c = Rng::new(8);
        let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
    }
}
