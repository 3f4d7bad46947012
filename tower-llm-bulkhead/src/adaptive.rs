//! Adaptive concurrency: additive increase, multiplicative decrease (AIMD), after Netflix's
//! concurrency-limits `AIMDLimit`.
//!
//! Each completed call is a sample: its latency (admission to response) and its classification.
//! A call slower than the threshold, or one the target shed (rate limited, overloaded, timed
//! out), lowers the limit to `limit * backoff` (at least one less, never under the minimum), at
//! most once per cooldown so one burst of slow calls counts once. A fast, successful call while
//! the partition is busy (at least half the limit in flight) raises it by one, up to the maximum.
//! Local rejections (an open breaker, another bulkhead) say nothing about the target and are
//! ignored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tower_llm_core::{Classification, ErrorKind, Failure, Origin};

use crate::clock::{saturating_nanos, TokioClock};
use crate::config::ValidAdaptive;

/// What one sample says about the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Fast and successful: room to grow.
    Good,
    /// Slow, or shed by the target: back off.
    Overload,
    /// Says nothing about load.
    Ignore,
}

/// The AIMD state of one partition (the limit itself lives in the partition).
pub(crate) struct Aimd {
    pub(crate) min: usize,
    pub(crate) max: usize,
    latency_threshold: Duration,
    backoff: f64,
    cooldown: u64,
    last_decrease: AtomicU64,
    clock: TokioClock,
}

const NEVER: u64 = u64::MAX;

impl Aimd {
    pub(crate) fn new(config: &ValidAdaptive, clock: TokioClock) -> Self {
        Aimd {
            min: config.min,
            max: config.max,
            latency_threshold: config.config.latency_threshold,
            backoff: config.config.backoff,
            cooldown: saturating_nanos(config.config.cooldown),
            last_decrease: AtomicU64::new(NEVER),
            clock,
        }
    }

    /// The signal of a call that returned a response classified as `verdict` after `latency`.
    pub(crate) fn signal(&self, latency: Duration, verdict: Classification) -> Signal {
        match verdict {
            Classification::Success if latency > self.latency_threshold => Signal::Overload,
            Classification::Success => Signal::Good,
            Classification::Failure(failure) => self.failure_signal(latency, failure),
        }
    }

    /// The signal of a call that failed with `failure` after `latency`.
    pub(crate) fn failure_signal(&self, latency: Duration, failure: Failure) -> Signal {
        if failure.origin == Origin::Local {
            return Signal::Ignore;
        }
        match failure.kind {
            ErrorKind::RateLimited | ErrorKind::Overloaded | ErrorKind::Timeout => Signal::Overload,
            _ if latency > self.latency_threshold => Signal::Overload,
            _ => Signal::Ignore,
        }
    }

    /// The limit after a sample with `signal`, given the current limit and the calls in flight
    /// when the sample completed; `None` to keep it.
    pub(crate) fn next_limit(
        &self,
        signal: Signal,
        limit: usize,
        in_flight: usize,
    ) -> Option<usize> {
        match signal {
            Signal::Ignore => None,
            Signal::Good => {
                (limit < self.max && in_flight.saturating_mul(2) >= limit).then_some(limit + 1)
            }
            Signal::Overload => {
                if limit <= self.min || !self.claim_decrease() {
                    return None;
                }
                // Float rounding is fine here: the result is clamped to [min, limit - 1].
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                let lowered = (limit as f64 * self.backoff).floor() as usize;
                Some(lowered.min(limit - 1).max(self.min))
            }
        }
    }

    /// Whether this decrease may happen now (outside the cooldown of the last one); claims it.
    fn claim_decrease(&self) -> bool {
        let now = self.clock.elapsed_nanos();
        let last = self.last_decrease.load(Ordering::Acquire);
        if last != NEVER && now.saturating_sub(last) < self.cooldown {
            return false;
        }
        self.last_decrease
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdaptiveConcurrency, PartitionConfig};

    fn aimd(cfg: AdaptiveConcurrency, max_concurrent: usize) -> Aimd {
        let config = PartitionConfig::builder()
            .max_concurrent(max_concurrent)
            .adaptive(cfg)
            .build()
            .unwrap();
        Aimd::new(config.adaptive.as_ref().unwrap(), TokioClock::new())
    }

    #[tokio::test(start_paused = true)]
    async fn decreases_once_per_cooldown_and_increases_when_busy() {
        let a = aimd(
            AdaptiveConcurrency::new(Duration::from_millis(100)).min_limit(2),
            10,
        );
        let slow = a.signal(Duration::from_millis(150), Classification::Success);
        assert_eq!(slow, Signal::Overload);
        assert_eq!(a.next_limit(slow, 10, 10), Some(9));
        // Within the cooldown: no second decrease.
        assert_eq!(a.next_limit(slow, 9, 9), None);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(a.next_limit(slow, 9, 9), Some(8));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(a.next_limit(slow, 2, 2), None, "never under the minimum");
        let fast = a.signal(Duration::from_millis(10), Classification::Success);
        assert_eq!(fast, Signal::Good);
        assert_eq!(a.next_limit(fast, 8, 4), Some(9));
        assert_eq!(a.next_limit(fast, 8, 3), None, "not busy: no growth");
        assert_eq!(a.next_limit(fast, 10, 10), None, "never over the maximum");
    }

    #[test]
    fn shed_load_backs_off_and_local_rejections_are_ignored() {
        let a = aimd(
            AdaptiveConcurrency::new(Duration::from_secs(1)).backoff_ratio(0.5),
            40,
        );
        let shed = Classification::Failure(Failure::new(ErrorKind::Overloaded));
        assert_eq!(a.signal(Duration::ZERO, shed), Signal::Overload);
        let limited = Failure::new(ErrorKind::RateLimited);
        assert_eq!(a.failure_signal(Duration::ZERO, limited), Signal::Overload);
        let local = Failure::local(ErrorKind::Overloaded);
        assert_eq!(a.failure_signal(Duration::ZERO, local), Signal::Ignore);
        let bad = Failure::new(ErrorKind::BadRequest);
        assert_eq!(a.failure_signal(Duration::ZERO, bad), Signal::Ignore);
        assert_eq!(a.next_limit(Signal::Overload, 40, 40), Some(20));
    }
}
