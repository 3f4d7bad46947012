//! Request-rate and token-budget decisions shared between replicas: the [`SharedLimiter`] trait.
//!
//! By default each bulkhead decides alone: its request rate is a [`governor`] GCRA limiter and its
//! token budget a lock-free GCRA over one atomic, both in the process. Several replicas behind a
//! load balancer then admit the limit once each (`limit × replicas` in all). A [`SharedLimiter`]
//! plugged in with [`BulkheadLayerBuilder::shared_limiter`](crate::BulkheadLayerBuilder::shared_limiter)
//! takes the rate and token decisions in a store every replica sees (`tower-llm-redis`'s
//! `RedisLimiter` runs them as one Lua script on Redis); the concurrency limit stays local.
//!
//! The local limiter stays the fallback: whenever the shared limiter answers
//! [`SharedUnavailable`] (its store is down, slow, or unreachable), the call is admitted by the
//! partition's own rate and token limits instead, so nothing fails because the store failed.
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_bulkhead::shared::{SharedAdmission, SharedAsk, SharedLimiter, SharedQuota, SharedUnavailable, SharedVerdict};
//! use tower_llm_bulkhead::{BulkheadLayer, ErrorsOnly, RateLimit};
//! use tower_llm_core::{BulkheadFull, LimitKind, NoBudget};
//!
//! /// A limiter whose store admits two calls and then is down.
//! struct TwoThenDown(AtomicU32);
//!
//! impl SharedLimiter for TwoThenDown {
//!     fn admit(&self, ask: SharedAsk<'_>) -> SharedAdmission {
//!         assert_eq!(ask.quota.rate.unwrap().burst, 1);
//!         let verdict = match self.0.fetch_add(1, Ordering::Relaxed) {
//!             0 | 1 => Ok(SharedVerdict::Admitted),
//!             _ => Err(SharedUnavailable),
//!         };
//!         Box::pin(std::future::ready(verdict))
//!     }
//!     fn adjust_tokens(&self, _scope: &str, _quota: &SharedQuota, _tokens: i64) {}
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = BulkheadLayer::builder()
//!     .rate_limit(RateLimit::per_second(1).burst(1))
//!     .shared_limiter(TwoThenDown(AtomicU32::new(0)))
//!     .release_on_response()
//!     .read_budget(NoBudget)
//!     .classifier(ErrorsOnly)
//!     .build()
//!     .unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) }));
//! // The store admits two calls in the same instant (a local limit of 1/s would not).
//! svc.clone().oneshot(()).await.unwrap();
//! svc.clone().oneshot(()).await.unwrap();
//! // Then it is down: the local limiter decides (one call, then 1/s).
//! svc.clone().oneshot(()).await.unwrap();
//! let err = svc.clone().oneshot(()).await.unwrap_err();
//! assert_eq!(err.downcast_ref::<BulkheadFull>().unwrap().limit(), LimitKind::Rate);
//! # }
//! ```
//!
//! # Cost
//!
//! A bulkhead without a shared limiter pays nothing for this: the local decision is not behind
//! the trait (no dynamic dispatch, no allocation; the admission's fast path is unchanged, see
//! `tests/allocations.rs`). A bulkhead with one takes the waiting path for every call of a
//! rate- or token-limited partition: one boxed admission future and the limiter's round trip.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tower_llm_core::LimitKind;

use crate::config::{PartitionConfig, TokenLimit, ValidRate};

/// Takes a bulkhead partition's request-rate and token-budget decisions in a store shared with
/// other processes.
///
/// Implementations must answer within a bounded time and answer [`SharedUnavailable`] rather
/// than fail: the bulkhead then decides with its local limits. Both limits of one admission are
/// decided together (a call turned away by the token budget spends no request-rate permit).
pub trait SharedLimiter: Send + Sync + 'static {
    /// Admit one call asking for `ask.tokens` tokens in `ask.scope`, under `ask.quota`.
    fn admit(&self, ask: SharedAsk<'_>) -> SharedAdmission;

    /// Add `tokens` to the shared token budget of `scope` (negative: give them back) — the
    /// correction of an estimate by the response's `usage`, or the refund of a call admitted but
    /// never sent. Best effort: it returns at once and may be lost while the store is down.
    fn adjust_tokens(&self, scope: &str, quota: &SharedQuota, tokens: i64);
}

/// The boxed answer of [`SharedLimiter::admit`].
pub type SharedAdmission =
    Pin<Box<dyn Future<Output = Result<SharedVerdict, SharedUnavailable>> + Send + 'static>>;

/// One admission asked of a [`SharedLimiter`].
#[derive(Clone, Copy, Debug)]
pub struct SharedAsk<'a> {
    /// The shared state's name: the bulkhead's name, and for a partitioned bulkhead
    /// `name/partition` (the same in every replica configured alike).
    pub scope: &'a str,
    /// The partition's limits.
    pub quota: &'a SharedQuota,
    /// The call's estimated tokens (zero without a token limit).
    pub tokens: u64,
}

/// The limits a shared decision applies: the partition's own [`RateLimit`](crate::RateLimit) and
/// [`TokenLimit`], as GCRA parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedQuota {
    /// The request-rate limit, if any.
    pub rate: Option<RateQuota>,
    /// The token budget, if any.
    pub tokens: Option<TokenQuota>,
}

/// A request rate: one request per `interval`, bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateQuota {
    /// Time between two requests at the steady rate (`period / requests`).
    pub interval: Duration,
    /// Requests allowed at once from idle.
    pub burst: u32,
}

/// A token budget: `capacity` tokens per `period`, refilled continuously.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenQuota {
    /// Tokens per period (the whole budget is available as a burst).
    pub capacity: u64,
    /// The period.
    pub period: Duration,
}

/// A shared limiter's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedVerdict {
    /// Admitted: the request-rate permit and the tokens are spent.
    Admitted,
    /// Not now: the `limit` ([`LimitKind::Rate`] or [`LimitKind::Tokens`]) allows the call
    /// after `wait`. The bulkhead waits (within the limit's `max_wait` and the attempt's
    /// deadline) and asks again, or rejects the call with `wait` as `retry_after`.
    Wait {
        /// The limit that is spent.
        limit: LimitKind,
        /// Time until it allows the call.
        wait: Duration,
    },
    /// The call asks for more tokens than the whole budget.
    TooLarge,
}

/// The shared store cannot decide now (down, slow or unreachable): decide locally.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedUnavailable;

impl fmt::Display for SharedUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the shared limiter cannot decide now; the local limits apply")
    }
}

impl std::error::Error for SharedUnavailable {}

/// A partition's link to the shared limiter.
pub(crate) struct SharedLimits {
    pub(crate) limiter: Arc<dyn SharedLimiter>,
    pub(crate) scope: Arc<str>,
    pub(crate) quota: SharedQuota,
}

impl SharedLimits {
    /// The shared limits of a partition configured by `config`, or `None` when it has neither a
    /// rate nor a token limit (only those are shared).
    pub(crate) fn new(
        limiter: &Arc<dyn SharedLimiter>,
        scope: Arc<str>,
        config: &PartitionConfig,
    ) -> Option<Self> {
        let quota = SharedQuota {
            rate: config.rate.as_ref().map(rate_quota),
            tokens: config.tokens.as_ref().map(token_quota),
        };
        (quota.rate.is_some() || quota.tokens.is_some()).then(|| SharedLimits {
            limiter: Arc::clone(limiter),
            scope,
            quota,
        })
    }

    pub(crate) fn admit(&self, tokens: u64) -> SharedAdmission {
        self.limiter.admit(SharedAsk {
            scope: &self.scope,
            quota: &self.quota,
            tokens,
        })
    }

    pub(crate) fn adjust(&self, tokens: i64) {
        if tokens != 0 && self.quota.tokens.is_some() {
            self.limiter.adjust_tokens(&self.scope, &self.quota, tokens);
        }
    }
}

fn rate_quota(rate: &ValidRate) -> RateQuota {
    RateQuota {
        interval: rate.quota.replenish_interval(),
        burst: rate.quota.burst_size().get(),
    }
}

fn token_quota(limit: &TokenLimit) -> TokenQuota {
    TokenQuota {
        capacity: limit.tokens().max(1),
        period: limit.period(),
    }
}

/// `tokens` as a signed amount (saturating).
pub(crate) fn signed(tokens: u64) -> i64 {
    i64::try_from(tokens).unwrap_or(i64::MAX)
}
