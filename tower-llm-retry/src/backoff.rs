//! Backoff: how long to wait before retry number `n`.
//!
//! Five strategies, each with a base delay, a multiplier where it has one, a maximum delay and an
//! optional [`Jitter`]:
//!
//! | strategy | delay before retry `n` (1-based) | monotone |
//! |---|---|---|
//! | [`Backoff::constant`] | `base` | yes |
//! | [`Backoff::linear`] | `base × n` | yes |
//! | [`Backoff::exponential`] | `base × multiplier^(n-1)` (multiplier 2 by default) | yes |
//! | [`Backoff::fibonacci`] | `base × fib(n)` (1, 1, 2, 3, 5, 8, ...) | yes |
//! | [`Backoff::decorrelated_jitter`] | random in `[base, previous × multiplier]` (multiplier 3) | no |
//!
//! Every delay is capped at the maximum delay (8 s unless set), and the arithmetic saturates:
//! retry number 10 000 (or `u32::MAX`) gives the cap, never an overflow or a panic.
//!
//! Decorrelated jitter is the formula from AWS's "Exponential Backoff And Jitter" that Polly
//! ships as `DecorrelatedJitterBackoff`: `sleep = min(cap, random_between(base, sleep × 3))`. It
//! spreads clients that failed together across time better than exponential backoff with full
//! jitter while still growing. It is the default: from 250 ms, capped at 8 s.
//!
//! Randomness comes from a seedable [`SmallRng`], so a seeded retry layer
//! makes the same decisions on every run.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_retry::backoff::{Backoff, Jitter};
//!
//! let exp = Backoff::exponential(Duration::from_millis(100)).with_max_delay(Duration::from_secs(1));
//! let delays: Vec<_> = exp.delays(7).take(6).collect();
//! assert_eq!(
//!     delays,
//!     [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis)
//! );
//!
//! // Decorrelated jitter: random, never below the base, never above the cap.
//! let jitter = Backoff::default();
//! for delay in jitter.delays(42).take(50) {
//!     assert!(delay >= Duration::from_millis(250) && delay <= Duration::from_secs(8));
//! }
//!
//! // Full jitter on a Fibonacci backoff: anywhere in [0, computed delay].
//! let fib = Backoff::fibonacci(Duration::from_millis(10)).with_jitter(Jitter::Full);
//! assert!(fib.delays(1).take(5).all(|d| d <= Duration::from_millis(50)));
//! ```

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tower_llm_core::ConfigError;

/// Default base delay of [`Backoff::default`]: 250 ms.
pub const DEFAULT_BASE: Duration = Duration::from_millis(250);
/// Default maximum delay: 8 s.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(8);

/// Which formula a [`Backoff`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackoffKind {
    /// The same delay every time.
    Constant,
    /// `base × n`.
    Linear,
    /// `base × multiplier^(n-1)`.
    Exponential,
    /// `base × fib(n)`.
    Fibonacci,
    /// Random in `[base, previous × multiplier]` (AWS / Polly decorrelated jitter).
    DecorrelatedJitter,
}

/// Randomisation applied on top of a deterministic strategy (ignored by
/// [`BackoffKind::DecorrelatedJitter`], which is random by construction).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// No randomisation.
    #[default]
    None,
    /// Uniform in `[0, delay]` ("full jitter").
    Full,
    /// Uniform in `[delay / 2, delay]` ("equal jitter").
    Equal,
}

/// A backoff strategy: the delay before each retry. Cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    kind: BackoffKind,
    base: Duration,
    multiplier: f64,
    max_delay: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    /// Decorrelated jitter from 250 ms, capped at 8 s.
    fn default() -> Self {
        Backoff::decorrelated_jitter(DEFAULT_BASE)
    }
}

impl Backoff {
    const fn with_kind(kind: BackoffKind, base: Duration, multiplier: f64) -> Self {
        Backoff {
            kind,
            base,
            multiplier,
            max_delay: DEFAULT_MAX_DELAY,
            jitter: Jitter::None,
        }
    }

    /// The same `delay` before every retry.
    pub const fn constant(delay: Duration) -> Self {
        Self::with_kind(BackoffKind::Constant, delay, 1.0)
    }

    /// `base × n` before retry `n`.
    pub const fn linear(base: Duration) -> Self {
        Self::with_kind(BackoffKind::Linear, base, 1.0)
    }

    /// `base × 2^(n-1)` before retry `n` (change the factor with [`with_multiplier`](Self::with_multiplier)).
    pub const fn exponential(base: Duration) -> Self {
        Self::with_kind(BackoffKind::Exponential, base, 2.0)
    }

    /// `base × fib(n)` before retry `n`: 1, 1, 2, 3, 5, 8, ... times `base`.
    pub const fn fibonacci(base: Duration) -> Self {
        Self::with_kind(BackoffKind::Fibonacci, base, 1.0)
    }

    /// Decorrelated jitter: random in `[base, previous × 3]`, the first previous being `base`
    /// (change the factor with [`with_multiplier`](Self::with_multiplier)).
    pub const fn decorrelated_jitter(base: Duration) -> Self {
        Self::with_kind(BackoffKind::DecorrelatedJitter, base, 3.0)
    }

    /// The growth factor of [`exponential`](Self::exponential) and
    /// [`decorrelated_jitter`](Self::decorrelated_jitter) (ignored by the other strategies).
    /// Must be finite and at least 1.
    pub const fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Cap every delay at `max_delay` (default 8 s).
    pub const fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Randomise the delays of a deterministic strategy.
    pub const fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The formula.
    pub const fn kind(&self) -> BackoffKind {
        self.kind
    }

    /// The base delay.
    pub const fn base(&self) -> Duration {
        self.base
    }

    /// The growth factor.
    pub const fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The cap on every delay.
    pub const fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The jitter applied on top of a deterministic strategy.
    pub const fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// Check the configuration: a finite multiplier of at least 1, and a base no larger than
    /// the maximum delay.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(ConfigError::new(
                "backoff.multiplier",
                format!(
                    "must be a finite number of at least 1, got {}",
                    self.multiplier
                ),
            ));
        }
        if self.base > self.max_delay {
            return Err(ConfigError::new(
                "backoff.base",
                format!(
                    "base delay {:?} is larger than the maximum delay {:?}",
                    self.base, self.max_delay
                ),
            ));
        }
        Ok(())
    }

    /// The delay before retry number `retry` (1 = the first retry).
    ///
    /// `previous` is the delay used before the previous retry (decorrelated jitter grows from
    /// it; `None` for the first retry). Total for every input: never panics, never exceeds
    /// [`max_delay`](Self::max_delay), even for a configuration that [`validate`](Self::validate)
    /// would reject.
    pub fn delay<G: Rng + ?Sized>(
        &self,
        retry: u32,
        previous: Option<Duration>,
        rng: &mut G,
    ) -> Duration {
        let retry = retry.max(1);
        let cap = self.max_delay;
        let raw = match self.kind {
            BackoffKind::Constant => self.base,
            BackoffKind::Linear => self.base.saturating_mul(retry),
            BackoffKind::Exponential => {
                // powi takes an i32; beyond that the result is the cap anyway.
                let exp = i32::try_from(retry - 1).unwrap_or(i32::MAX);
                scale(self.base, self.multiplier.powi(exp), cap)
            }
            BackoffKind::Fibonacci => fibonacci_delay(self.base, retry, cap),
            BackoffKind::DecorrelatedJitter => {
                let lower = self.base.min(cap);
                let previous = previous.unwrap_or(self.base).max(lower);
                let upper = scale(previous, self.multiplier, cap);
                return random_between(lower, upper, rng);
            }
        };
        let capped = raw.min(cap);
        match self.jitter {
            Jitter::None => capped,
            Jitter::Full => random_between(Duration::ZERO, capped, rng),
            Jitter::Equal => random_between(capped / 2, capped, rng),
        }
    }

    /// The infinite sequence of delays before retries 1, 2, 3, ..., drawn with an RNG seeded
    /// from `seed`.
    pub fn delays(&self, seed: u64) -> Delays {
        Delays {
            backoff: *self,
            retry: 0,
            previous: None,
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

/// `d × factor`, capped at `cap`; a factor that is not finite or not positive gives the cap
/// (or zero for a non-positive factor).
fn scale(d: Duration, factor: f64, cap: Duration) -> Duration {
    if factor.is_nan() {
        return cap;
    }
    if factor <= 0.0 {
        return Duration::ZERO;
    }
    let secs = d.as_secs_f64() * factor;
    if !secs.is_finite() || secs >= cap.as_secs_f64() {
        return cap;
    }
    Duration::try_from_secs_f64(secs).map_or(cap, |v| v.min(cap))
}

/// `base × fib(retry)`, stopping as soon as the product reaches `cap` (at most ~50 steps).
fn fibonacci_delay(base: Duration, retry: u32, cap: Duration) -> Duration {
    if base.is_zero() {
        return Duration::ZERO;
    }
    let (mut current, mut next) = (1u32, 1u32);
    for _ in 1..retry {
        let delay = base.saturating_mul(current);
        if delay >= cap {
            return cap;
        }
        match current.checked_add(next) {
            Some(sum) => {
                current = next;
                next = sum;
            }
            // fib no longer fits in a u32: far beyond any cap.
            None => return cap,
        }
    }
    base.saturating_mul(current).min(cap)
}

/// Uniform in `[lower, upper]` at nanosecond resolution (`lower` when the range is empty).
fn random_between<G: Rng + ?Sized>(lower: Duration, upper: Duration, rng: &mut G) -> Duration {
    let lo = u64::try_from(lower.as_nanos()).unwrap_or(u64::MAX);
    let hi = u64::try_from(upper.as_nanos()).unwrap_or(u64::MAX);
    if hi <= lo {
        return lower;
    }
    Duration::from_nanos(rng.random_range(lo..=hi))
}

/// The delays of a [`Backoff`], one per retry, with a seeded RNG: see [`Backoff::delays`].
#[derive(Clone, Debug)]
pub struct Delays {
    backoff: Backoff,
    retry: u32,
    previous: Option<Duration>,
    rng: SmallRng,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.retry = self.retry.saturating_add(1);
        let delay = self.backoff.delay(self.retry, self.previous, &mut self.rng);
        self.previous = Some(delay);
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn deterministic_sequences() {
        let cap = ms(1_000);
        let take = |b: Backoff| b.with_max_delay(cap).delays(0).take(7).collect::<Vec<_>>();
        assert_eq!(take(Backoff::constant(ms(100))), [100; 7].map(ms));
        assert_eq!(
            take(Backoff::linear(ms(100))),
            [100, 200, 300, 400, 500, 600, 700].map(ms)
        );
        assert_eq!(
            take(Backoff::exponential(ms(100))),
            [100, 200, 400, 800, 1000, 1000, 1000].map(ms)
        );
        let got = take(Backoff::exponential(ms(100)).with_multiplier(1.5));
        let want = [100.0, 150.0, 225.0, 337.5, 506.25, 759.375, 1000.0];
        for (got, want) in got.iter().zip(want) {
            assert!(
                (got.as_secs_f64() * 1000.0 - want).abs() < 1e-6,
                "{got:?} vs {want}ms"
            );
        }
        assert_eq!(
            take(Backoff::fibonacci(ms(100))),
            [100, 100, 200, 300, 500, 800, 1000].map(ms)
        );
    }

    #[test]
    fn huge_retry_numbers_give_the_cap() {
        let mut rng = SmallRng::seed_from_u64(1);
        for b in [
            Backoff::linear(ms(1)),
            Backoff::exponential(ms(1)),
            Backoff::fibonacci(ms(1)),
            Backoff::constant(ms(8_000)),
        ] {
            for retry in [10_000, u32::MAX] {
                assert_eq!(
                    b.delay(retry, None, &mut rng),
                    DEFAULT_MAX_DELAY,
                    "{b:?} at {retry}"
                );
            }
        }
        let d = Backoff::default().delay(u32::MAX, Some(Duration::MAX), &mut rng);
        assert!(d <= DEFAULT_MAX_DELAY && d >= DEFAULT_BASE);
    }

    #[test]
    fn decorrelated_jitter_is_random_and_bounded() {
        let delays: Vec<_> = Backoff::default().delays(3).take(200).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= DEFAULT_BASE && *d <= DEFAULT_MAX_DELAY));
        let first = delays[0];
        assert!(
            first <= ms(750),
            "first delay is within [base, 3 x base]: {first:?}"
        );
        assert!(delays.windows(2).any(|w| w[0] != w[1]));
        // Same seed, same sequence.
        assert_eq!(
            delays,
            Backoff::default().delays(3).take(200).collect::<Vec<_>>()
        );
        assert_ne!(
            delays,
            Backoff::default().delays(4).take(200).collect::<Vec<_>>()
        );
    }

    #[test]
    fn jitter_stays_below_the_computed_delay() {
        let full: Vec<_> = Backoff::constant(ms(100))
            .with_jitter(Jitter::Full)
            .delays(9)
            .take(100)
            .collect();
        assert!(full.iter().all(|d| *d <= ms(100)));
        assert!(full.windows(2).any(|w| w[0] != w[1]));
        let equal = Backoff::constant(ms(100))
            .with_jitter(Jitter::Equal)
            .delays(9)
            .take(100);
        assert!(equal.into_iter().all(|d| d >= ms(50) && d <= ms(100)));
    }

    #[test]
    fn validation() {
        assert!(Backoff::default().validate().is_ok());
        let err = Backoff::exponential(ms(1))
            .with_multiplier(0.5)
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "backoff.multiplier");
        assert!(Backoff::exponential(ms(1))
            .with_multiplier(f64::NAN)
            .validate()
            .is_err());
        let err = Backoff::constant(Duration::from_secs(10))
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "backoff.base");
        assert!(Backoff::constant(Duration::from_secs(10))
            .with_max_delay(Duration::from_secs(10))
            .validate()
            .is_ok());
    }
}
