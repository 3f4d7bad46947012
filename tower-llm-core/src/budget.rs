//! [`AttemptBudget`]: the time and the role that the layer owning an attempt gives it.
//!
//! Time flows down. The layer that decides how long a target may take (a fallback chain, from
//! the target's attempt timeout) sets an `AttemptBudget` as a request extension on each attempt;
//! every layer below that waits honours it:
//!
//! - a retry layer never starts a backoff, nor waits for a server's delay, that would end at or
//!   after the deadline: it returns the failure at once, with its kind and the server's delay, so
//!   the chain can move on and bench the target for exactly that delay; and when the budget says
//!   [`allows_retries`](AttemptBudget::allows_retries) is false (another target remains, or the
//!   attempt is a probe) it makes one call and no retry;
//! - a bulkhead never queues past the deadline;
//! - a circuit breaker admits a call marked as the chain's [probe](AttemptBudget::is_probe) even
//!   while open, as its half-open trial, so one health gate decides when a target is probed.
//!
//! Layers read the budget through a [`ReadBudget`] implementation: [`HttpBudget`] (the default)
//! reads the extension of an `http::Request`; [`NoBudget`] is for requests of other types (a
//! typed client's `ChatRequest`), which carry none.
//!
//! ```
//! use std::time::Duration;
//! use tokio::time::Instant;
//! use tower_llm_core::{AttemptBudget, HttpBudget, ReadBudget};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let now = Instant::now();
//! let mut req = http::Request::new(());
//! // The chain: 2 s for this target; another target remains, so fail over rather than retry.
//! req.extensions_mut()
//!     .insert(AttemptBudget::until(now + Duration::from_secs(2)).single_call());
//!
//! let budget = HttpBudget.budget(&req).unwrap();
//! assert_eq!(budget.remaining(now), Duration::from_secs(2));
//! assert!(!budget.allows_retries());
//! assert!(!budget.is_probe());
//! // A backoff of 2.5 s would end past the deadline: a retry layer returns the failure at once.
//! assert!(!budget.fits(now, Duration::from_millis(2500)));
//! assert!(budget.fits(now, Duration::from_millis(300)));
//! # }
//! ```

use std::time::Duration;

use tokio::time::Instant;

/// The time and role of one attempt, set by the layer that owns the attempt's time (see the
/// [module docs](self)). Copy, 24 bytes: inserting it costs one extension entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptBudget {
    deadline: Instant,
    probe: bool,
    retries: bool,
}

impl AttemptBudget {
    /// An attempt that must be over by `deadline`; retries on the same target are allowed
    /// within it.
    pub fn until(deadline: Instant) -> Self {
        AttemptBudget {
            deadline,
            probe: false,
            retries: true,
        }
    }

    /// The same budget for an attempt that is one call: no retry on the same target (another
    /// target remains, and failing over is faster than backing off).
    pub fn single_call(mut self) -> Self {
        self.retries = false;
        self
    }

    /// The same budget for a probe: the one call that decides whether a benched target is back.
    /// A probe is a single call; a circuit breaker below lets it through even while open.
    pub fn probe(mut self) -> Self {
        self.probe = true;
        self.retries = false;
        self
    }

    /// When the attempt must be over.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left at `now` (zero once the deadline has passed).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    /// Whether waiting `delay` from `now` ends strictly before the deadline.
    pub fn fits(&self, now: Instant, delay: Duration) -> bool {
        now.checked_add(delay)
            .is_some_and(|end| end < self.deadline)
    }

    /// Whether this attempt is a probe of a benched target.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Whether a layer below may retry this attempt on the same target.
    pub fn allows_retries(&self) -> bool {
        self.retries
    }
}

/// How a layer reads the [`AttemptBudget`] of a request.
pub trait ReadBudget<Req>: Clone + Send + Sync + 'static {
    /// The budget a layer above set on `req`, if any.
    fn budget(&self, req: &Req) -> Option<AttemptBudget>;
}

/// Reads the [`AttemptBudget`] extension of an `http::Request` (the default of every layer).
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpBudget;

impl<B> ReadBudget<http::Request<B>> for HttpBudget {
    fn budget(&self, req: &http::Request<B>) -> Option<AttemptBudget> {
        req.extensions().get::<AttemptBudget>().copied()
    }
}

/// For requests that carry no budget (typed clients): every request has none.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBudget;

impl<Req> ReadBudget<Req> for NoBudget {
    fn budget(&self, _req: &Req) -> Option<AttemptBudget> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn roles_and_fit() {
        let now = Instant::now();
        let b = AttemptBudget::until(now + Duration::from_secs(1));
        assert!(b.allows_retries() && !b.is_probe());
        assert!(b.fits(now, Duration::from_millis(999)));
        assert!(!b.fits(now, Duration::from_secs(1)));
        assert!(!b.fits(now, Duration::MAX));
        let p = b.probe();
        assert!(p.is_probe() && !p.allows_retries());
        assert_eq!(p.deadline(), b.deadline());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.remaining(Instant::now()), Duration::ZERO);
        assert_eq!(NoBudget.budget(&()), None);
        assert_eq!(HttpBudget.budget(&http::Request::new(())), None);
    }
}
