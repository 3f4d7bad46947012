//! Cooldowns: how long a target is benched after a failure, by error kind, and how a benched
//! target is probed back into service.
//!
//! A benched target is skipped without being called. When its cooldown lifts, one request is let
//! through as a probe (marked with a [probe budget](tower_llm_core::AttemptBudget::probe), so a
//! circuit breaker below lets it through and a retry layer below makes it a single call); the
//! others keep skipping the target until the probe resolves. A successful probe returns the
//! target to service at once; a failed one benches it again. A probe whose future is dropped
//! frees its slot for the next request.
//!
//! | kind | default |
//! |---|---|
//! | `RateLimited` | exactly the server's delay (`retry-after` & co., capped at [`CooldownPolicy::max_server_delay`]), else 60 s |
//! | `QuotaExhausted` | the server's delay, else 1 h |
//! | `Auth` | until [`FallbackHandle::reset_target`](crate::FallbackHandle::reset_target) |
//! | `Overloaded`, `ServerError`, `Timeout`, `Transport`, `InvalidResponse`, `Unknown` | adaptive: a quarter of the time the target has been failing, at least 1 s, at most [`max_probe_interval`](CooldownPolicy::max_probe_interval) (5 s) |
//! | `ContextLength`, `ContentPolicy`, `BadRequest` | none (the request is at fault, not the target) |
//!
//! **Bounded recovery.** The transient kinds (everything but rate limits, quota and auth, whose
//! end the provider or a person decides) never bench a target for longer than
//! [`max_probe_interval`](CooldownPolicy::max_probe_interval), however long an outage lasts: a
//! provider that comes back is found within that time. The [`Adaptive`](Cooldown::Adaptive)
//! rule grows with the outage rather than with the number of failed calls, so the sixteen
//! requests in flight when a provider fails do not stretch its cooldown sixteen-fold: a 6 s
//! outage is probed once a second and costs at most ~1.5 s after it ends; a minute-long one is
//! probed every 5 s. A timed cooldown is stretched to the server's delay when the failure
//! named a longer one (a `503` with `retry-after: 30` benches the target for 30 s).
//!
//! **Sparse routes.** When a route's next request arrives in the last quarter of a cooldown the
//! chain chose itself, and no request was skipped since the cooldown began, that request probes
//! (a server's delay is waited for in full). On a route with a request every few seconds the
//! target is then found again one request after it recovers, not two; with steadier traffic a
//! request is skipped early in every cooldown and probes keep to the cooldown's pace.
//!
//! **Silent targets.** A probe of a target benched for a timeout may take the whole attempt
//! timeout to fail. The next probe does not wait for it: probes of a silent target start at the
//! cooldown's cadence, counted from the previous probe's start, so a target that stops hanging
//! is found within one cooldown rather than one attempt timeout.
//!
//! **Panic mode.** When no target of a chain can be called (all benched), requests do not fail
//! for the length of the longest cooldown: every target benched for a transient kind is probed
//! at most once per [`panic_probe_interval`](CooldownPolicy::panic_probe_interval) (500 ms),
//! at most one probe in flight per target, so answers resume within about that long of the
//! providers' recovery. The other requests get the cache or static tier when configured, or
//! [`AllTargetsFailed`](tower_llm_core::AllTargetsFailed) whose
//! [`retry_after`](tower_llm_core::AllTargetsFailed::retry_after) is the time to the next probe.
//!
//! Failures a local layer reports ([`Origin::Local`](tower_llm_core::Origin), e.g. a per-target
//! breaker or bulkhead below the chain) never count against a target. A breaker's rejection
//! ([`BreakerOpen`](tower_llm_core::BreakerOpen)) benches the target until the breaker's next
//! probe (at most the adaptive cooldown), so the chain, not the breaker's own clock, decides when
//! the target is probed, and its probe passes the breaker. A failure of an attempt that started
//! before the target's last recovery (a request in flight while it came back) is counted but does
//! not bench the target again.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_core::ErrorKind;
//! use tower_llm_fallback::{Cooldown, CooldownPolicy};
//!
//! let policy = CooldownPolicy::default()
//!     .with(ErrorKind::ServerError, Cooldown::Fixed(Duration::from_secs(10)))
//!     .with(ErrorKind::Auth, Cooldown::Fixed(Duration::from_secs(600)))
//!     .max_probe_interval(Duration::from_secs(3));
//! assert_eq!(policy.get(ErrorKind::ServerError), Cooldown::Fixed(Duration::from_secs(10)));
//! assert_eq!(
//!     policy.get(ErrorKind::Overloaded),
//!     Cooldown::Adaptive { min: Duration::from_secs(1), max: Duration::from_secs(5) }
//! );
//! // Failing for 8 s: the next probe in 2 s (a quarter of 8 s), within the 3 s cap.
//! assert_eq!(policy.interval(ErrorKind::Overloaded, Duration::from_secs(8)), Some(Duration::from_secs(2)));
//! // The fixed 10 s row is capped too: server errors are transient.
//! assert_eq!(policy.interval(ErrorKind::ServerError, Duration::ZERO), Some(Duration::from_secs(3)));
//! ```

use std::time::Duration;

use tower_llm_core::{ConfigError, ErrorKind};

/// How long one kind of failure benches a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cooldown {
    /// Not benched: the next request may call the target again.
    None,
    /// Benched for a fixed time (or the server's delay, when longer).
    Fixed(Duration),
    /// Benched for the delay the server asked for (capped), or this long when it named none.
    ServerDelayOr(Duration),
    /// `base × 2^(n−1)` for the n-th consecutive failure of the target, capped at `max` (or the
    /// server's delay, when longer).
    Exponential {
        /// The first cooldown.
        base: Duration,
        /// The longest cooldown.
        max: Duration,
    },
    /// A quarter of the time the target has been failing (since the first failure after its
    /// last success), between `min` and `max` (or the server's delay, when longer). It grows with
    /// the outage, not with the number of calls that failed in it.
    Adaptive {
        /// The shortest cooldown.
        min: Duration,
        /// The longest cooldown.
        max: Duration,
    },
    /// Benched until [`FallbackHandle::reset_target`](crate::FallbackHandle::reset_target) is called.
    UntilReset,
}

/// How long a failure benches a target, decided for one failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bench {
    /// Not benched.
    No,
    /// Benched for this long.
    For(Duration),
    /// Benched until reset by hand.
    UntilReset,
}

/// The cooldown for each [`ErrorKind`] (defaults in the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CooldownPolicy {
    rows: [Cooldown; 12],
    max_server_delay: Duration,
    max_probe_interval: Duration,
    panic_probe_interval: Duration,
}

/// The default shortest adaptive cooldown.
pub const DEFAULT_MIN_COOLDOWN: Duration = Duration::from_secs(1);
/// The default [`CooldownPolicy::max_probe_interval`].
pub const DEFAULT_MAX_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// The default [`CooldownPolicy::panic_probe_interval`].
pub const DEFAULT_PANIC_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// The default cooldown after a rate limit whose answer named no delay
/// ([`Cooldown::ServerDelayOr`] this long).
pub const DEFAULT_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(60);
/// The default cooldown after an exhausted quota whose answer named no delay.
pub const DEFAULT_QUOTA_COOLDOWN: Duration = Duration::from_secs(3600);
/// The default [`CooldownPolicy::max_server_delay`].
pub const DEFAULT_MAX_SERVER_DELAY: Duration = Duration::from_secs(3600);

const ADAPTIVE: Cooldown = Cooldown::Adaptive {
    min: DEFAULT_MIN_COOLDOWN,
    max: DEFAULT_MAX_PROBE_INTERVAL,
};

impl Default for CooldownPolicy {
    fn default() -> Self {
        let mut policy = CooldownPolicy {
            rows: [ADAPTIVE; 12],
            max_server_delay: DEFAULT_MAX_SERVER_DELAY,
            max_probe_interval: DEFAULT_MAX_PROBE_INTERVAL,
            panic_probe_interval: DEFAULT_PANIC_PROBE_INTERVAL,
        };
        policy.rows[index(ErrorKind::RateLimited)] =
            Cooldown::ServerDelayOr(DEFAULT_RATE_LIMIT_COOLDOWN);
        policy.rows[index(ErrorKind::QuotaExhausted)] =
            Cooldown::ServerDelayOr(DEFAULT_QUOTA_COOLDOWN);
        policy.rows[index(ErrorKind::Auth)] = Cooldown::UntilReset;
        policy.rows[index(ErrorKind::ContextLength)] = Cooldown::None;
        policy.rows[index(ErrorKind::ContentPolicy)] = Cooldown::None;
        policy.rows[index(ErrorKind::BadRequest)] = Cooldown::None;
        policy
    }
}

fn index(kind: ErrorKind) -> usize {
    match kind {
        ErrorKind::RateLimited => 0,
        ErrorKind::QuotaExhausted => 1,
        ErrorKind::Overloaded => 2,
        ErrorKind::ServerError => 3,
        ErrorKind::Timeout => 4,
        ErrorKind::Transport => 5,
        ErrorKind::Auth => 6,
        ErrorKind::ContextLength => 7,
        ErrorKind::ContentPolicy => 8,
        ErrorKind::BadRequest => 9,
        ErrorKind::InvalidResponse => 10,
        ErrorKind::Unknown => 11,
    }
}

/// Whether `kind` is a transient failure of the target (overload, 5xx, timeout, transport, a
/// broken answer, or unknown): its cooldown is capped by [`CooldownPolicy::max_probe_interval`]
/// and it may be probed early in panic mode. Rate limits, quota and auth are not (the provider or
/// a person says when they end), nor are the kinds where the request is at fault.
pub fn is_transient(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Overloaded
            | ErrorKind::ServerError
            | ErrorKind::Timeout
            | ErrorKind::Transport
            | ErrorKind::InvalidResponse
            | ErrorKind::Unknown
    )
}

impl CooldownPolicy {
    /// Set the cooldown for `kind`.
    pub fn with(mut self, kind: ErrorKind, cooldown: Cooldown) -> Self {
        self.rows[index(kind)] = cooldown;
        self
    }

    /// The longest server-requested delay honoured as a cooldown (default 1 h); a longer one is
    /// capped, so a misconfigured upstream cannot bench a target for days.
    pub fn max_server_delay(mut self, max: Duration) -> Self {
        self.max_server_delay = max;
        self
    }

    /// The longest a [transient](is_transient) failure benches a target (default 5 s): the bound
    /// on the time to the next probe, however long an outage lasts. A server's explicit longer
    /// delay still wins.
    pub fn max_probe_interval(mut self, max: Duration) -> Self {
        self.max_probe_interval = max;
        self
    }

    /// In panic mode (no target of the chain can be called), how often each target benched for a
    /// [transient](is_transient) failure is probed (default 500 ms; at most one probe in flight
    /// per target).
    pub fn panic_probe_interval(mut self, interval: Duration) -> Self {
        self.panic_probe_interval = interval;
        self
    }

    /// The cooldown for `kind`.
    pub fn get(&self, kind: ErrorKind) -> Cooldown {
        self.rows[index(kind)]
    }

    /// The configured [`max_probe_interval`](Self::max_probe_interval).
    pub fn probe_interval_cap(&self) -> Duration {
        self.max_probe_interval
    }

    /// The configured [`panic_probe_interval`](Self::panic_probe_interval).
    pub fn panic_interval(&self) -> Duration {
        self.panic_probe_interval
    }

    /// How long a failure of `kind`, without a server delay, benches a target that has been
    /// failing for `outage` (its first failure of the current streak): `None` when the kind is
    /// not benched, or is benched until reset.
    pub fn interval(&self, kind: ErrorKind, outage: Duration) -> Option<Duration> {
        match self.bench(kind, None, 1, outage) {
            Bench::For(d) => Some(d),
            Bench::No | Bench::UntilReset => None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (kind, row) in ErrorKind::ALL.iter().zip(self.rows.iter()) {
            match row {
                Cooldown::Exponential { base, max } if base.is_zero() || max < base => {
                    return Err(ConfigError::new(
                        "cooldowns",
                        format!("{kind}: exponential cooldown needs 0 < base ≤ max"),
                    ));
                }
                Cooldown::Adaptive { min, max } if min.is_zero() || max < min => {
                    return Err(ConfigError::new(
                        "cooldowns",
                        format!("{kind}: adaptive cooldown needs 0 < min ≤ max"),
                    ));
                }
                _ => {}
            }
        }
        if self.max_probe_interval.is_zero() {
            return Err(ConfigError::new("max_probe_interval", "must be > 0"));
        }
        if self.panic_probe_interval.is_zero() {
            return Err(ConfigError::new("panic_probe_interval", "must be > 0"));
        }
        Ok(())
    }

    /// The bench for the `consecutive`-th consecutive failure (1-based) of `kind`, for a target
    /// failing for `outage`.
    pub(crate) fn bench(
        &self,
        kind: ErrorKind,
        retry_after: Option<Duration>,
        consecutive: u32,
        outage: Duration,
    ) -> Bench {
        let server = retry_after.map(|r| r.min(self.max_server_delay));
        let cap = |d: Duration| {
            if is_transient(kind) {
                d.min(self.max_probe_interval)
            } else {
                d
            }
        };
        match self.get(kind) {
            Cooldown::None => Bench::No,
            Cooldown::Fixed(d) => Bench::For(cap(d).max(server.unwrap_or_default())),
            Cooldown::ServerDelayOr(d) => Bench::For(server.unwrap_or_else(|| cap(d))),
            Cooldown::Exponential { base, max } => {
                let doublings = consecutive.saturating_sub(1).min(31);
                let d = base.checked_mul(1u32 << doublings).unwrap_or(max).min(max);
                Bench::For(cap(d).max(server.unwrap_or_default()))
            }
            Cooldown::Adaptive { min, max } => {
                let d = (outage / 4).clamp(min, max);
                Bench::For(cap(d).max(server.unwrap_or_default()))
            }
            Cooldown::UntilReset => Bench::UntilReset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design_table() {
        let p = CooldownPolicy::default();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let z = Duration::ZERO;
        assert_eq!(
            p.bench(ErrorKind::RateLimited, Some(s(3)), 1, z),
            Bench::For(s(3))
        );
        assert_eq!(
            p.bench(ErrorKind::RateLimited, None, 1, z),
            Bench::For(s(60))
        );
        assert_eq!(
            p.bench(ErrorKind::RateLimited, Some(s(86_400)), 1, z),
            Bench::For(s(3600))
        );
        assert_eq!(p.bench(ErrorKind::Auth, None, 1, z), Bench::UntilReset);
        assert_eq!(p.bench(ErrorKind::ContentPolicy, None, 1, z), Bench::No);
        assert_eq!(p.bench(ErrorKind::ContextLength, None, 1, z), Bench::No);
        // Adaptive: a quarter of the outage, 1 s to 5 s, whatever the failure count.
        for kind in [
            ErrorKind::Overloaded,
            ErrorKind::ServerError,
            ErrorKind::Timeout,
            ErrorKind::Transport,
            ErrorKind::InvalidResponse,
            ErrorKind::Unknown,
        ] {
            let at: Vec<_> = [0, 1, 2, 4, 6, 20, 60, 3600]
                .iter()
                .map(|o| p.bench(kind, None, 16, s(*o)))
                .collect();
            let want = [1000, 1000, 1000, 1000, 1500, 5000, 5000, 5000]
                .map(|n| Bench::For(ms(n)))
                .to_vec();
            assert_eq!(at, want, "{kind}");
        }
        // A longer server delay stretches timed rows.
        assert_eq!(
            p.bench(ErrorKind::Overloaded, Some(s(30)), 1, z),
            Bench::For(s(30))
        );
        assert_eq!(
            p.bench(ErrorKind::Timeout, Some(s(45)), 1, s(100)),
            Bench::For(s(45))
        );
        assert!(p.validate().is_ok());
    }

    #[test]
    fn the_probe_cap_bounds_every_transient_row() {
        let s = Duration::from_secs;
        let p = CooldownPolicy::default()
            .with(ErrorKind::Timeout, Cooldown::Fixed(s(30)))
            .with(
                ErrorKind::Unknown,
                Cooldown::Exponential {
                    base: s(5),
                    max: s(80),
                },
            )
            .with(ErrorKind::QuotaExhausted, Cooldown::Fixed(s(600)));
        assert_eq!(p.bench(ErrorKind::Timeout, None, 1, s(0)), Bench::For(s(5)));
        assert_eq!(p.bench(ErrorKind::Unknown, None, 9, s(0)), Bench::For(s(5)));
        // Not transient: not capped.
        assert_eq!(
            p.bench(ErrorKind::QuotaExhausted, None, 1, s(0)),
            Bench::For(s(600))
        );
        let p = p.max_probe_interval(s(2));
        assert_eq!(p.interval(ErrorKind::Overloaded, s(60)), Some(s(2)));
        assert_eq!(p.interval(ErrorKind::Auth, s(60)), None);
    }

    #[test]
    fn invalid_rows_are_rejected() {
        let bad = CooldownPolicy::default().with(
            ErrorKind::Overloaded,
            Cooldown::Exponential {
                base: Duration::ZERO,
                max: SECOND,
            },
        );
        assert_eq!(bad.validate().unwrap_err().field(), "cooldowns");
        let bad = CooldownPolicy::default().with(
            ErrorKind::Overloaded,
            Cooldown::Adaptive {
                min: SECOND * 2,
                max: SECOND,
            },
        );
        assert_eq!(bad.validate().unwrap_err().field(), "cooldowns");
        let bad = CooldownPolicy::default().max_probe_interval(Duration::ZERO);
        assert_eq!(bad.validate().unwrap_err().field(), "max_probe_interval");
    }

    const SECOND: Duration = Duration::from_secs(1);
}
