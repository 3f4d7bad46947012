//! Hedging: when an attempt is slow, send another copy and take whichever answers first.
//!
//! With [`Hedging`] configured, the layer waits a hedge delay after each attempt starts; if no
//! answer came, it sends a hedge (a replay of the request, tagged with its own [`Attempt`]
//! number), then another after the same delay, up to [`Hedging::max_hedges`] per call. The first
//! successful answer wins and every other attempt in flight is dropped (cancelled). A failure of
//! a kind that is not retried (a 400, a 401) is the answer too; a retryable failure waits for the
//! attempts still in flight, and when all of them failed the layer retries as usual.
//!
//! Each hedge withdraws from the retry budget like a retry (no budget, no hedge), counts in
//! [`HEDGES_TOTAL`](crate::metrics::HEDGES_TOTAL) and [`RetryStats::hedges`](crate::RetryStats::hedges),
//! and does not count against `max_attempts`.
//!
//! The delay is fixed, or a percentile of the latencies of recent successful attempts (a
//! log-bucketed histogram of atomics that halves itself every 2048 samples, so it follows the
//! target). Until 20 samples exist the initial delay is used.
//!
//! [`Attempt`]: crate::Attempt
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_retry::{Hedging, RetryLayer};
//!
//! // Hedge once after the p95 latency (2 s until there is data).
//! let layer = RetryLayer::builder()
//!     .hedging(Hedging::percentile(0.95, Duration::from_secs(2)).with_max_hedges(1))
//!     .build()
//!     .unwrap();
//! # let _ = layer;
//! assert!(Hedging::fixed(Duration::ZERO).validate().is_err());
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tower_llm_core::ConfigError;

/// How the hedge delay is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HedgeDelay {
    /// Always this delay.
    Fixed(Duration),
    /// This percentile (0 < p ≤ 1) of recent successful attempt latencies, `initial` until
    /// enough samples exist.
    Percentile {
        /// The percentile, as a fraction (0.95 = p95).
        percentile: f64,
        /// The delay used before 20 samples were seen.
        initial: Duration,
    },
}

/// Hedging settings. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hedging {
    delay: HedgeDelay,
    max_hedges: u32,
}

impl Hedging {
    /// Send one hedge when an attempt has not answered after `delay`.
    pub const fn fixed(delay: Duration) -> Self {
        Hedging {
            delay: HedgeDelay::Fixed(delay),
            max_hedges: 1,
        }
    }

    /// Send one hedge when an attempt is slower than `percentile` (a fraction: 0.95 = p95) of
    /// recent successful attempts; `initial` is the delay until there is data.
    pub const fn percentile(percentile: f64, initial: Duration) -> Self {
        Hedging {
            delay: HedgeDelay::Percentile {
                percentile,
                initial,
            },
            max_hedges: 1,
        }
    }

    /// Send up to `max_hedges` extra attempts per call (1 to 10).
    pub const fn with_max_hedges(mut self, max_hedges: u32) -> Self {
        self.max_hedges = max_hedges;
        self
    }

    /// How the delay is chosen.
    pub const fn delay(&self) -> HedgeDelay {
        self.delay
    }

    /// The most extra attempts per call.
    pub const fn max_hedges(&self) -> u32 {
        self.max_hedges
    }

    /// Check the settings: a non-zero delay, a percentile in (0, 1], 1 to 10 hedges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10).contains(&self.max_hedges) {
            return Err(ConfigError::new(
                "hedging.max_hedges",
                format!("must be between 1 and 10, got {}", self.max_hedges),
            ));
        }
        match self.delay {
            HedgeDelay::Fixed(d) if d.is_zero() => Err(ConfigError::new(
                "hedging.delay",
                "a zero hedge delay would double every call; use a positive delay",
            )),
            HedgeDelay::Percentile { percentile, .. }
                if !(percentile > 0.0 && percentile <= 1.0) =>
            {
                Err(ConfigError::new(
                    "hedging.percentile",
                    format!("must be in (0, 1], got {percentile}"),
                ))
            }
            HedgeDelay::Percentile { initial, .. } if initial.is_zero() => Err(ConfigError::new(
                "hedging.initial",
                "a zero initial hedge delay would double every call; use a positive delay",
            )),
            _ => Ok(()),
        }
    }
}

/// Sub-buckets per power of two: 4 gives buckets about 19% wide.
const SUB_BITS: u32 = 2;
const BUCKETS: usize = 64 << SUB_BITS;
/// Samples before the histogram is trusted.
const MIN_SAMPLES: u32 = 20;
/// Every this many samples, halve all counts so old latencies fade.
const DECAY_EVERY: u32 = 2048;

/// A lock-free log-bucketed histogram of attempt latencies (microseconds).
pub(crate) struct LatencyTracker {
    buckets: Box<[AtomicU32]>,
    samples: AtomicU32,
}

impl LatencyTracker {
    pub(crate) fn new() -> Self {
        LatencyTracker {
            buckets: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            samples: AtomicU32::new(0),
        }
    }

    fn index(micros: u64) -> usize {
        let micros = micros.max(1);
        let log = 63 - micros.leading_zeros();
        // Below 2^SUB_BITS µs a bucket is a whole power of two.
        let sub = if log >= SUB_BITS {
            (micros >> (log - SUB_BITS)) & ((1 << SUB_BITS) - 1)
        } else {
            0
        };
        ((log as usize) << SUB_BITS | sub as usize).min(BUCKETS - 1)
    }

    /// The upper bound of bucket `index`, in microseconds.
    fn upper(index: usize) -> u64 {
        let log = (index >> SUB_BITS) as u32;
        let sub = (index & ((1 << SUB_BITS) - 1)) as u64;
        if log >= SUB_BITS {
            let step = 1u64 << (log - SUB_BITS);
            (1u64 << log).saturating_add((sub + 1).saturating_mul(step))
        } else {
            1u64 << (log + 1)
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(bucket) = self.buckets.get(Self::index(micros)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let seen = self.samples.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if seen >= DECAY_EVERY
            && self
                .samples
                .compare_exchange(seen, seen / 2, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            for bucket in self.buckets.iter() {
                // Halve; a concurrent increment may be lost, which a histogram can afford.
                let v = bucket.load(Ordering::Relaxed);
                bucket.store(v / 2, Ordering::Relaxed);
            }
        }
    }

    /// The `percentile` latency, or `None` with too few samples.
    pub(crate) fn percentile(&self, percentile: f64) -> Option<Duration> {
        let total: u64 = self
            .buckets
            .iter()
            .map(|b| u64::from(b.load(Ordering::Relaxed)))
            .sum();
        if total < u64::from(MIN_SAMPLES) {
            return None;
        }
        let rank = ((total as f64) * percentile.clamp(0.0, 1.0))
            .ceil()
            .max(1.0) as u64;
        let mut seen = 0u64;
        for (index, bucket) in self.buckets.iter().enumerate() {
            seen += u64::from(bucket.load(Ordering::Relaxed));
            if seen >= rank {
                return Some(Duration::from_micros(Self::upper(index)));
            }
        }
        None
    }

    /// The hedge delay under `hedging` now.
    pub(crate) fn hedge_delay(&self, hedging: &Hedging) -> Duration {
        match hedging.delay {
            HedgeDelay::Fixed(d) => d,
            HedgeDelay::Percentile {
                percentile,
                initial,
            } => self.percentile(percentile).unwrap_or(initial),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_values() {
        for micros in [
            1u64,
            2,
            3,
            5,
            7,
            8,
            100,
            1_000,
            12_345,
            1_000_000,
            86_400_000_000,
            u64::MAX / 4,
        ] {
            let i = LatencyTracker::index(micros);
            assert!(
                LatencyTracker::upper(i) >= micros,
                "{micros} -> {i} -> {}",
                LatencyTracker::upper(i)
            );
            if i > 0 {
                assert!(
                    LatencyTracker::upper(i - 1) <= micros,
                    "{micros} above the previous bucket"
                );
            }
        }
    }

    #[test]
    fn percentile_tracks_the_distribution() {
        let t = LatencyTracker::new();
        assert_eq!(t.percentile(0.5), None);
        for i in 1..=100u64 {
            t.record(Duration::from_millis(i * 10));
        }
        let p50 = t.percentile(0.5).unwrap();
        assert!(
            p50 >= Duration::from_millis(500) && p50 <= Duration::from_millis(620),
            "{p50:?}"
        );
        let p95 = t.percentile(0.95).unwrap();
        assert!(
            p95 >= Duration::from_millis(950) && p95 <= Duration::from_millis(1_200),
            "{p95:?}"
        );
        let hedging = Hedging::percentile(0.5, Duration::from_secs(9));
        assert_eq!(t.hedge_delay(&hedging), p50);
        assert_eq!(
            LatencyTracker::new().hedge_delay(&hedging),
            Duration::from_secs(9)
        );
    }

    #[test]
    fn old_samples_fade() {
        let t = LatencyTracker::new();
        for _ in 0..DECAY_EVERY {
            t.record(Duration::from_secs(5));
        }
        for _ in 0..(DECAY_EVERY * 2) {
            t.record(Duration::from_millis(10));
        }
        let p50 = t.percentile(0.5).unwrap();
        assert!(p50 < Duration::from_millis(20), "{p50:?}");
    }

    #[test]
    fn validation() {
        assert!(Hedging::fixed(Duration::from_millis(1)).validate().is_ok());
        assert_eq!(
            Hedging::fixed(Duration::from_millis(1))
                .with_max_hedges(0)
                .validate()
                .unwrap_err()
                .field(),
            "hedging.max_hedges"
        );
        assert_eq!(
            Hedging::percentile(1.5, Duration::from_secs(1))
                .validate()
                .unwrap_err()
                .field(),
            "hedging.percentile"
        );
        assert_eq!(
            Hedging::percentile(f64::NAN, Duration::from_secs(1))
                .validate()
                .unwrap_err()
                .field(),
            "hedging.percentile"
        );
        assert_eq!(
            Hedging::percentile(0.9, Duration::ZERO)
                .validate()
                .unwrap_err()
                .field(),
            "hedging.initial"
        );
    }
}
