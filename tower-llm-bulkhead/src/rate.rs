//! The request-rate limit of one partition: a [`governor`] GCRA limiter on [`TokioClock`].
//!
//! Each partition owns a direct (unkeyed) governor limiter; the partition table is the keyed,
//! bounded map, so one bound covers every per-key state and idle keys are evicted together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::RateLimiter;

use crate::clock::{saturating_nanos, TokioClock};
use crate::config::ValidRate;

/// `last_admitted` of a limiter that never admitted anything.
const NEVER: u64 = u64::MAX;

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// A partition's request-rate limiter.
pub(crate) struct RequestRate {
    limiter: Limiter,
    clock: TokioClock,
    max_wait: Duration,
    /// When the last request was admitted (nanoseconds on `clock`), to tell an idle partition.
    last_admitted: AtomicU64,
    /// How long an idle limiter takes to refill its whole burst.
    refill: u64,
}

impl RequestRate {
    pub(crate) fn new(rate: &ValidRate, clock: TokioClock) -> Self {
        RequestRate {
            limiter: RateLimiter::direct_with_clock(rate.quota, clock),
            clock,
            max_wait: rate.limit.wait_bound(),
            last_admitted: AtomicU64::new(NEVER),
            refill: saturating_nanos(rate.quota.burst_size_replenished_in()),
        }
    }

    /// Take one permit now, or say how long until one is available.
    pub(crate) fn check(&self) -> Result<(), Duration> {
        match self.limiter.check() {
            Ok(()) => {
                self.last_admitted
                    .store(self.clock.elapsed_nanos(), Ordering::Relaxed);
                Ok(())
            }
            Err(not_until) => Err(not_until.wait_time_from(self.clock.now())),
        }
    }

    /// The longest a call may wait for a permit.
    pub(crate) fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Whether the limiter is back to a full burst (so dropping it loses nothing).
    pub(crate) fn is_idle(&self, now_nanos: u64) -> bool {
        let last = self.last_admitted.load(Ordering::Relaxed);
        last == NEVER || now_nanos.saturating_sub(last) >= self.refill
    }
}
