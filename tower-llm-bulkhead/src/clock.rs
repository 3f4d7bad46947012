//! [`TokioClock`]: a [`governor`] clock that reads `tokio::time`, so rate limits follow a paused
//! test clock (`tokio::time::pause`, `advance`) like every other timer in tower-llm.
//!
//! governor's default clock reads the system's monotonic clock, which a paused tokio runtime does
//! not control; rate-limit tests would then depend on wall time.
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use governor::{Quota, RateLimiter};
//! use tower_llm_bulkhead::TokioClock;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let clock = TokioClock::new();
//! let limiter = RateLimiter::direct_with_clock(Quota::per_second(NonZeroU32::MIN), clock.clone());
//! assert!(limiter.check().is_ok());
//! let not_until = limiter.check().unwrap_err();
//! assert_eq!(not_until.wait_time_from(governor::clock::Clock::now(&clock)), Duration::from_secs(1));
//! tokio::time::advance(Duration::from_secs(1)).await;
//! assert!(limiter.check().is_ok());
//! # }
//! ```

use std::time::Duration;

use governor::clock::{Clock, ReasonablyRealtime};
use governor::nanos::Nanos;
use tokio::time::Instant;

/// A [`governor::clock::Clock`] over `tokio::time::Instant`: its instants are the time elapsed
/// since the clock was created, as governor [`Nanos`].
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        TokioClock {
            origin: Instant::now(),
        }
    }

    /// A clock whose zero is `origin`.
    pub fn starting_at(origin: Instant) -> Self {
        TokioClock { origin }
    }

    /// The tokio instant this clock counts from.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Time since the origin (zero if the origin is in the future).
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }

    /// Time since the origin in nanoseconds, saturating at `u64::MAX` (about 584 years).
    pub(crate) fn elapsed_nanos(&self) -> u64 {
        saturating_nanos(self.elapsed())
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::new(self.elapsed_nanos())
    }
}

impl ReasonablyRealtime for TokioClock {}

/// A duration in nanoseconds, saturating at `u64::MAX`.
pub(crate) fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
