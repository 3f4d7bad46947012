//! Cooldowns: how long a target is benched after a failure, by error kind.
//!
//! A benched target is skipped without being called. When its cooldown lifts, exactly one request
//! is let through as a probe (the others keep skipping it until the probe resolves); a successful
//! probe clears the cooldown at once, a failed one benches the target again (longer, for the
//! exponential rows). A probe whose future is dropped frees the probe slot for the next request.
//!
//! | kind | default |
//! |---|---|
//! | `RateLimited` | the server's delay (`retry-after` & co., capped at [`CooldownPolicy::max_server_delay`]), else 60 s |
//! | `QuotaExhausted` | the server's delay, else 1 h |
//! | `Timeout` | 30 s |
//! | `Auth` | until [`FallbackHandle::reset_target`](crate::FallbackHandle::reset_target) |
//! | `Unknown` | exponential: 5 s, 10 s, 20 s, 40 s, 80 s (cap) per consecutive failure |
//! | `Overloaded`, `ServerError`, `Transport`, `InvalidResponse` | adaptive: 1 s doubling per consecutive failure, cap 60 s |
//! | `ContextLength`, `ContentPolicy`, `BadRequest` | none (the request is at fault, not the target) |
//!
//! A fixed or exponential cooldown is stretched to the server's delay when the failure named a
//! longer one (a `503` with `retry-after: 30` benches the target for 30 s, not 1 s).
//!
//! Failures a local layer reports ([`Origin::Local`](tower_llm_core::Origin), e.g. a per-target
//! breaker or bulkhead below the chain) never bench a target: the chain just moves on.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_core::ErrorKind;
//! use tower_llm_fallback::{Cooldown, CooldownPolicy};
//!
//! let policy = CooldownPolicy::default()
//!     .with(ErrorKind::ServerError, Cooldown::Fixed(Duration::from_secs(10)))
//!     .with(ErrorKind::Auth, Cooldown::Fixed(Duration::from_secs(600)));
//! assert_eq!(policy.get(ErrorKind::ServerError), Cooldown::Fixed(Duration::from_secs(10)));
//! assert_eq!(
//!     policy.get(ErrorKind::Unknown),
//!     Cooldown::Exponential { base: Duration::from_secs(5), max: Duration::from_secs(80) }
//! );
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
}

const SECOND: Duration = Duration::from_secs(1);
const ADAPTIVE: Cooldown = Cooldown::Exponential {
    base: SECOND,
    max: Duration::from_secs(60),
};

impl Default for CooldownPolicy {
    fn default() -> Self {
        let mut policy = CooldownPolicy {
            rows: [ADAPTIVE; 12],
            max_server_delay: Duration::from_secs(3600),
        };
        policy.rows[index(ErrorKind::RateLimited)] =
            Cooldown::ServerDelayOr(Duration::from_secs(60));
        policy.rows[index(ErrorKind::QuotaExhausted)] =
            Cooldown::ServerDelayOr(Duration::from_secs(3600));
        policy.rows[index(ErrorKind::Timeout)] = Cooldown::Fixed(Duration::from_secs(30));
        policy.rows[index(ErrorKind::Auth)] = Cooldown::UntilReset;
        policy.rows[index(ErrorKind::ContextLength)] = Cooldown::None;
        policy.rows[index(ErrorKind::ContentPolicy)] = Cooldown::None;
        policy.rows[index(ErrorKind::BadRequest)] = Cooldown::None;
        policy.rows[index(ErrorKind::Unknown)] = Cooldown::Exponential {
            base: Duration::from_secs(5),
            max: Duration::from_secs(80),
        };
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

    /// The cooldown for `kind`.
    pub fn get(&self, kind: ErrorKind) -> Cooldown {
        self.rows[index(kind)]
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (kind, row) in ErrorKind::ALL.iter().zip(self.rows.iter()) {
            if let Cooldown::Exponential { base, max } = row {
                if base.is_zero() || max < base {
                    return Err(ConfigError::new(
                        "cooldowns",
                        format!("{kind}: exponential cooldown needs 0 < base ≤ max"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The bench for the `consecutive`-th consecutive failure (1-based) of `kind`.
    pub(crate) fn bench(
        &self,
        kind: ErrorKind,
        retry_after: Option<Duration>,
        consecutive: u32,
    ) -> Bench {
        let server = retry_after.map(|r| r.min(self.max_server_delay));
        match self.get(kind) {
            Cooldown::None => Bench::No,
            Cooldown::Fixed(d) => Bench::For(d.max(server.unwrap_or_default())),
            Cooldown::ServerDelayOr(d) => Bench::For(server.unwrap_or(d)),
            Cooldown::Exponential { base, max } => {
                let doublings = consecutive.saturating_sub(1).min(31);
                let d = base.checked_mul(1u32 << doublings).unwrap_or(max).min(max);
                Bench::For(d.max(server.unwrap_or_default()))
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
        assert_eq!(
            p.bench(ErrorKind::RateLimited, Some(s(3)), 1),
            Bench::For(s(3))
        );
        assert_eq!(p.bench(ErrorKind::RateLimited, None, 1), Bench::For(s(60)));
        assert_eq!(
            p.bench(ErrorKind::RateLimited, Some(s(86_400)), 1),
            Bench::For(s(3600))
        );
        assert_eq!(p.bench(ErrorKind::Timeout, None, 7), Bench::For(s(30)));
        assert_eq!(p.bench(ErrorKind::Auth, None, 1), Bench::UntilReset);
        assert_eq!(p.bench(ErrorKind::ContentPolicy, None, 1), Bench::No);
        assert_eq!(p.bench(ErrorKind::ContextLength, None, 1), Bench::No);
        let unknown: Vec<_> = (1..=6)
            .map(|n| p.bench(ErrorKind::Unknown, None, n))
            .collect();
        assert_eq!(
            unknown,
            [5, 10, 20, 40, 80, 80].map(|n| Bench::For(s(n))).to_vec()
        );
        let adaptive: Vec<_> = [1, 2, 3, 7, 8, 1000]
            .iter()
            .map(|n| p.bench(ErrorKind::ServerError, None, *n))
            .collect();
        assert_eq!(
            adaptive,
            [1, 2, 4, 60, 60, 60].map(|n| Bench::For(s(n))).to_vec()
        );
        // A longer server delay stretches timed rows.
        assert_eq!(
            p.bench(ErrorKind::Overloaded, Some(s(30)), 1),
            Bench::For(s(30))
        );
        assert_eq!(
            p.bench(ErrorKind::Overloaded, Some(s(30)), 7),
            Bench::For(s(60))
        );
        assert_eq!(
            p.bench(ErrorKind::Timeout, Some(s(45)), 1),
            Bench::For(s(45))
        );
        assert!(p.validate().is_ok());
    }

    #[test]
    fn invalid_exponential_rows_are_rejected() {
        let bad = CooldownPolicy::default().with(
            ErrorKind::Overloaded,
            Cooldown::Exponential {
                base: Duration::ZERO,
                max: SECOND,
            },
        );
        assert_eq!(bad.validate().unwrap_err().field(), "cooldowns");
    }
}
