//! [`RetryHandle`]: the state a retry layer shares with every service it wraps — its
//! configuration, its retry budget(s) and its counters — reachable from the layer before it goes
//! into a `ServiceBuilder`.
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_retry::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = RetryLayer::builder().max_attempts(3).seed(7).build().unwrap();
//! let retries = layer.handle(); // owned: the layer moves into the chain below
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! let client = ServiceBuilder::new().layer(layer).service(service_fn(move |_req: http::Request<Full<Bytes>>| {
//!     let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
//!     async move {
//!         let status = if first { 502 } else { 200 };
//!         Ok::<_, std::convert::Infallible>(http::Response::builder().status(status).body(()).unwrap())
//!     }
//! }));
//! let res = client.oneshot(http::Request::new(Full::new(Bytes::from_static(b"{}")))).await.unwrap();
//! assert_eq!(res.status(), 200);
//!
//! let stats = retries.stats();
//! assert_eq!((stats.calls, stats.retries, stats.recovered), (1, 1, 1));
//! assert_eq!(stats.attempts(), 2);
//! assert_eq!(retries.config().max_attempts(), 3);
//! // The default budget is shared by every call: one first attempt deposited, one retry paid.
//! assert!(retries.budget().is_some());
//! # }
//! ```

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tower_llm_core::Target;

use crate::budget::{Budgets, RetryBudget};
use crate::config::RetryConfig;

/// A handle on a retry layer's shared state: every service the layer wraps, and every clone of
/// them, counts into and draws on the same state. Cheap to clone.
#[derive(Clone)]
pub struct RetryHandle {
    pub(crate) config: RetryConfig,
    pub(crate) budgets: Budgets,
    pub(crate) counters: Arc<Counters>,
}

impl RetryHandle {
    /// The layer's validated configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// The budget shared by every call, or, with
    /// [`budget_per_target`](crate::RetryLayerBuilder::budget_per_target), the budget of calls
    /// without a target (and the settings each target's budget is made with); `None` without a
    /// budget.
    pub fn budget(&self) -> Option<RetryBudget> {
        self.budgets.template().cloned()
    }

    /// The budget calls to `target` draw on: the shared budget, or the target's own budget once
    /// a call to it made one (`None` before that, and without a budget).
    pub fn budget_for(&self, target: &Target) -> Option<RetryBudget> {
        self.budgets.peek(target)
    }

    /// The targets with a budget of their own, and their budgets (empty unless budgets are per
    /// target).
    pub fn target_budgets(&self) -> Vec<(Target, RetryBudget)> {
        self.budgets.by_target()
    }

    /// The layer's counters since it was built.
    pub fn stats(&self) -> RetryStats {
        self.counters.snapshot()
    }
}

impl fmt::Debug for RetryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryHandle")
            .field("config", &self.config)
            .field("budget", &self.budgets.describe())
            .field("stats", &self.stats())
            .finish()
    }
}

/// What a retry layer did since it was built (a serializable picture, from
/// [`RetryHandle::stats`]). The `metrics` counters of the [`metrics`](crate::metrics) module
/// count the same events with labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryStats {
    /// Calls made through the layer (first attempts).
    pub calls: u64,
    /// Retries sent (sequential attempts after the first).
    pub retries: u64,
    /// Hedges sent.
    pub hedges: u64,
    /// Retries and hedges the retry budget refused.
    pub budget_exhausted: u64,
    /// Calls the layer gave up on after a failure it retries
    /// ([`metrics::STOPPED_TOTAL`](crate::metrics::STOPPED_TOTAL)): attempts used up, budget,
    /// deadline, a server delay over the cap... Failures it does not retry at all are not
    /// counted.
    pub gave_up: u64,
    /// Calls that succeeded after at least one failed attempt.
    pub recovered: u64,
}

impl RetryStats {
    /// Attempts sent to the inner service: first attempts, retries and hedges.
    pub fn attempts(&self) -> u64 {
        self.calls + self.retries + self.hedges
    }
}

/// How many stripes the per-call counter has.
const STRIPES: usize = 8;

/// A counter alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

/// The counters behind [`RetryStats`]. `calls` is bumped by every call and striped by thread,
/// so that callers on many threads do not share one cache line; the others count rarer events.
#[derive(Default)]
pub(crate) struct Counters {
    calls: [Padded; STRIPES],
    retries: AtomicU64,
    hedges: AtomicU64,
    budget_exhausted: AtomicU64,
    gave_up: AtomicU64,
    recovered: AtomicU64,
}

/// This thread's stripe, taken round-robin the first time the thread asks.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
            }
            s.get()
        })
        .unwrap_or(0)
}

impl Counters {
    pub(crate) fn call(&self) {
        self.calls[stripe() % STRIPES]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn hedge(&self) {
        self.hedges.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn budget_exhausted(&self) {
        self.budget_exhausted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn gave_up(&self) {
        self.gave_up.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn recovered(&self) {
        self.recovered.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RetryStats {
        RetryStats {
            calls: self.calls.iter().map(|c| c.0.load(Ordering::Relaxed)).sum(),
            retries: self.retries.load(Ordering::Relaxed),
            hedges: self.hedges.load(Ordering::Relaxed),
            budget_exhausted: self.budget_exhausted.load(Ordering::Relaxed),
            gave_up: self.gave_up.load(Ordering::Relaxed),
            recovered: self.recovered.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn striped_calls_add_up_across_threads() {
        let counters = Counters::default();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        counters.call();
                    }
                });
            }
        });
        counters.retry();
        counters.hedge();
        let stats = counters.snapshot();
        assert_eq!(stats.calls, 4000);
        assert_eq!(stats.attempts(), 4002);
    }
}
