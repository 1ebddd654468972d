//! A per-link circuit breaker: stop hammering a peer that keeps failing, and probe it now and
//! then to notice when it is back (Nygard, "Release It!", ch. 5).
//!
//! ```text
//!            failure_threshold consecutive failures
//!   Closed ───────────────────────────────────────────▶ Open
//!     ▲                                                 │  ▲
//!     │ success_threshold                  reset_timeout│  │ any failure
//!     │ consecutive successes                 elapsed,  │  │ (fresh timer)
//!     │                                     allow() ──▶ ▼  │
//!     └──────────────────────────────────────────── HalfOpen
//! ```
//!
//! - Closed: every attempt is allowed; a success clears the failure count.
//! - Open: nothing is allowed until `reset_timeout` has passed since opening; the first
//!   [`CircuitBreaker::allow`] after that moves to HalfOpen and lets one probe through.
//! - HalfOpen: one probe at a time. A success settles the probe (the next `allow` may send
//!   another); `success_threshold` successes in a row close the breaker; any failure re-opens it
//!   with a fresh timer.
//! - Results that arrive while Open come from attempts allowed before it opened: a late success
//!   is ignored (the breaker keeps waiting out its timer) and a late failure only counts.
//!
//! Pure: time is a [`Duration`] since an arbitrary start, passed in by the caller; it must not
//! go backwards (asserted). No clock reads, no randomness.

use std::time::Duration;

/// Default [`BreakerConfig::failure_threshold`].
pub const DEFAULT_BREAKER_FAILURE_THRESHOLD: u32 = 5;
/// Default [`BreakerConfig::reset_timeout`].
pub const DEFAULT_BREAKER_RESET_TIMEOUT: Duration = Duration::from_secs(2);
/// Default [`BreakerConfig::success_threshold`].
pub const DEFAULT_BREAKER_SUCCESS_THRESHOLD: u32 = 3;

/// When a breaker opens and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Open after this many consecutive failures. Default 5; at least 1.
    pub failure_threshold: u32,
    /// How long an open breaker refuses before letting a probe through. Default 2 s; above zero.
    pub reset_timeout: Duration,
    /// Close after this many consecutive successful probes in half-open. Default 3; at least 1.
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: DEFAULT_BREAKER_FAILURE_THRESHOLD,
            reset_timeout: DEFAULT_BREAKER_RESET_TIMEOUT,
            success_threshold: DEFAULT_BREAKER_SUCCESS_THRESHOLD,
        }
    }
}

impl BreakerConfig {
    /// Checks the bounds given on each field.
    ///
    /// # Errors
    /// A sentence naming the bad field and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.failure_threshold == 0 {
            return Err("breaker.failure_threshold must be at least 1".to_owned());
        }
        if self.reset_timeout.is_zero() {
            return Err("breaker.reset_timeout must be above zero".to_owned());
        }
        if self.success_threshold == 0 {
            return Err("breaker.success_threshold must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Attempts flow.
    Closed,
    /// Attempts are refused until the reset timeout passes.
    Open,
    /// One probe at a time decides between Closed and Open.
    HalfOpen,
}

impl BreakerState {
    /// The name used in logs and status output: `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of the state gauge: 0 closed, 1 open, 2 half-open.
    pub fn as_metric(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// The state together with the data only that state has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open {
        opened_at: Duration,
    },
    HalfOpen {
        probe_outstanding: bool,
        successes: u32,
    },
}

/// One link's circuit breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    phase: Phase,
    consecutive_failures: u32,
    times_opened: u64,
    last_now: Duration,
}

impl CircuitBreaker {
    /// A closed breaker.
    ///
    /// # Panics
    /// If `config` fails [`BreakerConfig::validate`]; configs are validated when loaded.
    pub fn new(config: BreakerConfig) -> Self {
        if let Err(why) = config.validate() {
            panic!("invalid breaker config: {why}");
        }
        CircuitBreaker {
            config,
            phase: Phase::Closed,
            consecutive_failures: 0,
            times_opened: 0,
            last_now: Duration::ZERO,
        }
    }

    /// Whether an attempt may start now. In HalfOpen a `true` is the probe: the caller must
    /// report its result with [`on_success`](Self::on_success) or
    /// [`on_failure`](Self::on_failure).
    ///
    /// # Panics
    /// If `now` is earlier than a time passed before.
    pub fn allow(&mut self, now: Duration) -> bool {
        self.advance_clock(now);
        match self.phase {
            Phase::Closed => true,
            Phase::Open { opened_at } => {
                if now.saturating_sub(opened_at) < self.config.reset_timeout {
                    return false;
                }
                self.phase = Phase::HalfOpen {
                    probe_outstanding: true,
                    successes: 0,
                };
                true
            }
            Phase::HalfOpen {
                probe_outstanding: true,
                ..
            } => false,
            Phase::HalfOpen {
                probe_outstanding: false,
                successes,
            } => {
                self.phase = Phase::HalfOpen {
                    probe_outstanding: true,
                    successes,
                };
                true
            }
        }
    }

    /// An attempt succeeded.
    ///
    /// # Panics
    /// If `now` is earlier than a time passed before.
    pub fn on_success(&mut self, now: Duration) {
        self.advance_clock(now);
        match self.phase {
            Phase::Closed => self.consecutive_failures = 0,
            // A late result of an attempt allowed before the breaker opened.
            Phase::Open { .. } => {}
            Phase::HalfOpen { successes, .. } => {
                self.consecutive_failures = 0;
                let successes = successes.saturating_add(1);
                self.phase = if successes >= self.config.success_threshold {
                    Phase::Closed
                } else {
                    Phase::HalfOpen {
                        probe_outstanding: false,
                        successes,
                    }
                };
            }
        }
    }

    /// An attempt was withdrawn by its caller, neither a success nor a failure (the peer was
    /// fine, but the session had to wait): a half-open breaker may probe again.
    pub fn on_abandoned(&mut self) {
        if let Phase::HalfOpen { successes, .. } = self.phase {
            self.phase = Phase::HalfOpen {
                probe_outstanding: false,
                successes,
            };
        }
    }

    /// An attempt failed.
    ///
    /// # Panics
    /// If `now` is earlier than a time passed before.
    pub fn on_failure(&mut self, now: Duration) {
        self.advance_clock(now);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.phase {
            Phase::Closed if self.consecutive_failures >= self.config.failure_threshold => {
                self.open(now)
            }
            Phase::Closed | Phase::Open { .. } => {}
            Phase::HalfOpen { .. } => self.open(now),
        }
    }

    fn open(&mut self, now: Duration) {
        self.phase = Phase::Open { opened_at: now };
        self.times_opened = self.times_opened.saturating_add(1);
    }

    fn advance_clock(&mut self, now: Duration) {
        assert!(
            now >= self.last_now,
            "breaker clock went backwards: last={:?} now={now:?}",
            self.last_now
        );
        self.last_now = now;
    }

    /// Where the breaker is.
    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Failures since the last success that counted (saturating).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// How many times the breaker has opened, for the metric (saturating).
    pub fn times_opened(&self) -> u64 {
        self.times_opened
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// One step of a scenario and what must hold after it.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// `allow(at)` must return the bool.
        Allow(u64, bool),
        Success(u64),
        Failure(u64),
    }
    use Step::{Allow, Failure, Success};

    struct Case {
        name: &'static str,
        steps: &'static [Step],
        state: BreakerState,
        failures: u32,
        opened: u64,
    }

    /// failure_threshold 3, reset_timeout 100 ms, success_threshold 2; times in ms.
    fn small_config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            reset_timeout: 100 * MS,
            success_threshold: 2,
        }
    }

    /// Three failures at t=0 open the breaker (opened_at = 0).
    const OPEN: [Step; 3] = [Failure(0), Failure(0), Failure(0)];

    const CASES: &[Case] = &[
        Case {
            name: "new breaker is closed and allows",
            steps: &[Allow(0, true)],
            state: BreakerState::Closed,
            failures: 0,
            opened: 0,
        },
        Case {
            name: "failures below the threshold stay closed",
            steps: &[Failure(0), Failure(1), Allow(2, true)],
            state: BreakerState::Closed,
            failures: 2,
            opened: 0,
        },
        Case {
            name: "a success in closed clears the count",
            steps: &[
                Failure(0),
                Failure(1),
                Success(2),
                Failure(3),
                Failure(4),
                Allow(5, true),
            ],
            state: BreakerState::Closed,
            failures: 2,
            opened: 0,
        },
        Case {
            name: "threshold consecutive failures open",
            steps: &[OPEN[0], OPEN[1], OPEN[2], Allow(0, false), Allow(99, false)],
            state: BreakerState::Open,
            failures: 3,
            opened: 1,
        },
        Case {
            name: "late success while open is ignored",
            steps: &[OPEN[0], OPEN[1], OPEN[2], Success(50), Allow(60, false)],
            state: BreakerState::Open,
            failures: 3,
            opened: 1,
        },
        Case {
            name: "late failure while open counts but keeps the timer",
            steps: &[OPEN[0], OPEN[1], OPEN[2], Failure(90), Allow(100, true)],
            state: BreakerState::HalfOpen,
            failures: 4,
            opened: 1,
        },
        Case {
            name: "reset timeout elapsed: one probe",
            steps: &[
                OPEN[0],
                OPEN[1],
                OPEN[2],
                Allow(100, true),
                Allow(100, false),
                Allow(500, false),
            ],
            state: BreakerState::HalfOpen,
            failures: 3,
            opened: 1,
        },
        Case {
            name: "a successful probe allows the next probe",
            steps: &[
                OPEN[0],
                OPEN[1],
                OPEN[2],
                Allow(100, true),
                Success(110),
                Allow(120, true),
                Allow(121, false),
            ],
            state: BreakerState::HalfOpen,
            failures: 0,
            opened: 1,
        },
        Case {
            name: "success threshold closes",
            steps: &[
                OPEN[0],
                OPEN[1],
                OPEN[2],
                Allow(100, true),
                Success(110),
                Allow(120, true),
                Success(130),
                Allow(131, true),
                Allow(131, true),
            ],
            state: BreakerState::Closed,
            failures: 0,
            opened: 1,
        },
        Case {
            name: "a failed probe re-opens with a fresh timer",
            steps: &[
                OPEN[0],
                OPEN[1],
                OPEN[2],
                Allow(100, true),
                Failure(150),
                Allow(200, false),
                Allow(249, false),
                Allow(250, true),
            ],
            state: BreakerState::HalfOpen,
            failures: 4,
            opened: 2,
        },
        Case {
            name: "a failure after some successful probes re-opens",
            steps: &[
                OPEN[0],
                OPEN[1],
                OPEN[2],
                Allow(100, true),
                Success(110),
                Allow(120, true),
                Failure(130),
                Allow(131, false),
            ],
            state: BreakerState::Open,
            failures: 1,
            opened: 2,
        },
        Case {
            name: "after closing, the full failure threshold is needed again",
            steps: &[
                OPEN[0],
                OPEN[1],
                OPEN[2],
                Allow(100, true),
                Success(100),
                Allow(100, true),
                Success(100),
                Failure(101),
                Failure(102),
                Allow(103, true),
                Failure(104),
                Allow(104, false),
            ],
            state: BreakerState::Open,
            failures: 3,
            opened: 2,
        },
    ];

    #[test]
    fn an_abandoned_probe_lets_a_half_open_breaker_probe_again() {
        let ms = Duration::from_millis;
        let mut b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 1,
            reset_timeout: ms(1000),
            success_threshold: 2,
        });
        assert!(b.allow(ms(0)));
        b.on_failure(ms(0));
        assert!(b.allow(ms(1000)), "half-open: one probe");
        assert!(!b.allow(ms(1001)), "the probe is outstanding");
        b.on_abandoned();
        assert!(b.allow(ms(1002)), "withdrawn: another probe may go");
    }

    #[test]
    fn transitions() {
        for case in CASES {
            let mut breaker = CircuitBreaker::new(small_config());
            for (i, step) in case.steps.iter().enumerate() {
                match *step {
                    Allow(at, expected) => {
                        assert_eq!(
                            breaker.allow(Duration::from_millis(at)),
                            expected,
                            "{}: step {i} {step:?}",
                            case.name
                        );
                    }
                    Success(at) => breaker.on_success(Duration::from_millis(at)),
                    Failure(at) => breaker.on_failure(Duration::from_millis(at)),
                }
            }
            assert_eq!(breaker.state(), case.state, "{}", case.name);
            assert_eq!(
                breaker.consecutive_failures(),
                case.failures,
                "{}",
                case.name
            );
            assert_eq!(breaker.times_opened(), case.opened, "{}", case.name);
        }
    }

    #[test]
    fn defaults_open_after_five_and_probe_after_two_seconds() {
        let mut breaker = CircuitBreaker::new(BreakerConfig::default());
        for _ in 0..4 {
            breaker.on_failure(Duration::ZERO);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.on_failure(Duration::ZERO);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allow(1999 * MS));
        assert!(breaker.allow(2000 * MS));
        for _ in 0..3 {
            breaker.on_success(2000 * MS);
            assert!(breaker.state() == BreakerState::Closed || breaker.allow(2000 * MS));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn state_names_and_metrics() {
        let cases = [
            (BreakerState::Closed, "closed", 0),
            (BreakerState::Open, "open", 1),
            (BreakerState::HalfOpen, "half_open", 2),
        ];
        for (state, name, metric) in cases {
            assert_eq!(state.as_str(), name);
            assert_eq!(state.as_metric(), metric);
        }
    }

    #[test]
    fn validate() {
        let base = BreakerConfig::default();
        let cases: &[(&str, BreakerConfig, Option<&str>)] = &[
            ("defaults", base, None),
            (
                "zero failures",
                BreakerConfig {
                    failure_threshold: 0,
                    ..base
                },
                Some("failure_threshold"),
            ),
            (
                "zero timeout",
                BreakerConfig {
                    reset_timeout: Duration::ZERO,
                    ..base
                },
                Some("reset_timeout"),
            ),
            (
                "zero successes",
                BreakerConfig {
                    success_threshold: 0,
                    ..base
                },
                Some("success_threshold"),
            ),
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
    #[should_panic(expected = "clock went backwards")]
    fn time_going_backwards_panics() {
        let mut breaker = CircuitBreaker::new(BreakerConfig::default());
        breaker.on_failure(10 * MS);
        breaker.allow(5 * MS);
    }

    #[test]
    #[should_panic(expected = "invalid breaker config")]
    fn new_rejects_invalid_config() {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 0,
            ..BreakerConfig::default()
        });
    }
}
