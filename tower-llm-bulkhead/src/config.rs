//! Limits of one partition, validated when built.
//!
//! A [`PartitionConfig`] is what every partition of a bulkhead enforces: a concurrency limit with
//! a bounded wait queue and a maximum wait, and optionally a [`RateLimit`], a [`TokenLimit`] and
//! [`AdaptiveConcurrency`]. The layer builder ([`BulkheadLayer::builder`]) sets the defaults;
//! [`BulkheadLayerBuilder::partition_config`] can give chosen partitions their own.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_bulkhead::{PartitionConfig, RateLimit, TokenLimit};
//!
//! let config = PartitionConfig::builder()
//!     .max_concurrent(8)
//!     .max_queued(16)
//!     .max_wait(Duration::from_millis(500))
//!     .rate_limit(RateLimit::per_minute(600).burst(20))
//!     .token_limit(TokenLimit::per_minute(200_000))
//!     .build()
//!     .unwrap();
//! assert_eq!(config.max_concurrent(), 8);
//!
//! // Invalid values are refused when built, never at call time.
//! let err = PartitionConfig::builder().max_concurrent(0).build().unwrap_err();
//! assert_eq!(err.field(), "max_concurrent");
//! ```
//!
//! [`BulkheadLayer::builder`]: crate::BulkheadLayer::builder
//! [`BulkheadLayerBuilder::partition_config`]: crate::BulkheadLayerBuilder::partition_config

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use tower_llm_core::ConfigError;

/// Default concurrency limit per partition (DESIGN.md: 64 in flight per target).
pub const DEFAULT_MAX_CONCURRENT: usize = 64;
/// Default bound on calls waiting for a permit per partition: the memory bound of the queue. The
/// time bound is the maximum wait, enforced on joining as well (a call the queue would not drain
/// in time is turned away at once), so a deep queue absorbs bursts without holding calls that
/// could not be served in time. (DESIGN.md starts from 128; a burst of 270 calls at once into
/// a 10 ms upstream, which drains in 50 ms, overflowed it in the gateway's soak.)
pub const DEFAULT_MAX_QUEUED: usize = 512;
/// Default longest wait for a concurrency permit.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(1);
/// Default bound on the number of partitions of a keyed bulkhead.
pub const DEFAULT_MAX_PARTITIONS: usize = 1024;

/// Largest concurrency limit or queue bound: the two counters share one 64-bit atomic word.
const MAX_COUNTER: usize = (u32::MAX >> 1) as usize;

/// The limits one partition enforces. Build with [`PartitionConfig::builder`].
#[derive(Clone, Debug)]
pub struct PartitionConfig {
    pub(crate) max_concurrent: usize,
    pub(crate) max_queued: usize,
    pub(crate) max_wait: Duration,
    pub(crate) rate: Option<ValidRate>,
    pub(crate) tokens: Option<TokenLimit>,
    pub(crate) adaptive: Option<ValidAdaptive>,
}

impl PartitionConfig {
    /// A builder starting from the defaults: 64 in flight, 512 queued, 1 s maximum wait, no rate
    /// or token limit, fixed concurrency.
    pub fn builder() -> PartitionConfigBuilder {
        PartitionConfigBuilder::default()
    }

    /// Calls allowed in flight at once (the starting limit when adaptive).
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// Calls allowed to wait for a permit at once.
    pub fn max_queued(&self) -> usize {
        self.max_queued
    }

    /// Longest wait for a concurrency permit.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The request-rate limit, if any.
    pub fn rate_limit(&self) -> Option<&RateLimit> {
        self.rate.as_ref().map(|r| &r.limit)
    }

    /// The token limit, if any.
    pub fn token_limit(&self) -> Option<&TokenLimit> {
        self.tokens.as_ref()
    }

    /// The adaptive-concurrency settings, if any.
    pub fn adaptive(&self) -> Option<&AdaptiveConcurrency> {
        self.adaptive.as_ref().map(|a| &a.config)
    }
}

impl Default for PartitionConfig {
    fn default() -> Self {
        PartitionConfig {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_queued: DEFAULT_MAX_QUEUED,
            max_wait: DEFAULT_MAX_WAIT,
            rate: None,
            tokens: None,
            adaptive: None,
        }
    }
}

/// Builds a [`PartitionConfig`]; [`build`](Self::build) validates every value.
#[derive(Clone, Debug)]
pub struct PartitionConfigBuilder {
    max_concurrent: usize,
    max_queued: usize,
    max_wait: Duration,
    rate: Option<RateLimit>,
    tokens: Option<TokenLimit>,
    adaptive: Option<AdaptiveConcurrency>,
}

impl Default for PartitionConfigBuilder {
    fn default() -> Self {
        PartitionConfigBuilder {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_queued: DEFAULT_MAX_QUEUED,
            max_wait: DEFAULT_MAX_WAIT,
            rate: None,
            tokens: None,
            adaptive: None,
        }
    }
}

impl PartitionConfigBuilder {
    /// Calls allowed in flight at once (at least 1).
    pub fn max_concurrent(mut self, max: usize) -> Self {
        self.max_concurrent = max;
        self
    }

    /// Calls allowed to wait for a permit at once. Zero disables waiting: a full partition
    /// rejects at once with [`LimitKind::Concurrency`](tower_llm_core::LimitKind::Concurrency).
    pub fn max_queued(mut self, max: usize) -> Self {
        self.max_queued = max;
        self
    }

    /// Longest wait for a concurrency permit before the call is rejected with
    /// [`LimitKind::MaxWait`](tower_llm_core::LimitKind::MaxWait). Zero disables waiting.
    ///
    /// It also bounds joining the queue: a call that would wait behind more calls than the queue
    /// has been draining within this time (or within what is left of the attempt's deadline) is
    /// rejected at once with
    /// [`LimitKind::ExpectedWait`](tower_llm_core::LimitKind::ExpectedWait). The drain is measured
    /// between hand-overs while calls wait, and forgotten after a second without one; a queue
    /// that calls keep joining while it does not move (10 ms, and 8 measured intervals, of
    /// arrivals, each gap counting at most 1 ms so a pause of the process is not mistaken for
    /// it) counts as draining no faster than one call per that while: slots held by hung calls
    /// stop the queue from filling with calls that would only time out.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Limit the request rate (per partition).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate = Some(limit);
        self
    }

    /// Limit tokens per period (per partition). The layer's token estimator decides what each
    /// request costs.
    pub fn token_limit(mut self, limit: TokenLimit) -> Self {
        self.tokens = Some(limit);
        self
    }

    /// Let the concurrency limit adapt to the target's latency and load shedding.
    pub fn adaptive(mut self, adaptive: AdaptiveConcurrency) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<PartitionConfig, ConfigError> {
        if self.max_concurrent == 0 {
            return Err(ConfigError::new("max_concurrent", "must be at least 1"));
        }
        if self.max_concurrent > MAX_COUNTER {
            return Err(ConfigError::new(
                "max_concurrent",
                format!("must be at most {MAX_COUNTER}"),
            ));
        }
        if self.max_queued > MAX_COUNTER {
            return Err(ConfigError::new(
                "max_queued",
                format!("must be at most {MAX_COUNTER}"),
            ));
        }
        let rate = self.rate.map(RateLimit::validate).transpose()?;
        if let Some(tokens) = &self.tokens {
            tokens.validate()?;
        }
        let adaptive = self
            .adaptive
            .map(|a| a.validate(self.max_concurrent))
            .transpose()?;
        Ok(PartitionConfig {
            max_concurrent: self.max_concurrent,
            max_queued: self.max_queued,
            max_wait: self.max_wait,
            rate,
            tokens: self.tokens,
            adaptive,
        })
    }
}

/// A client-side request-rate limit (GCRA, via [`governor`]): `requests` per `period`, with
/// bursts of up to `burst` requests.
///
/// A call over the rate waits up to [`max_wait`](Self::max_wait) for its turn (default: zero,
/// it is rejected at once) and is otherwise rejected with
/// [`LimitKind::Rate`](tower_llm_core::LimitKind::Rate) and the time until the next permit as
/// `retry_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    requests: u32,
    period: Duration,
    burst: Option<u32>,
    max_wait: Duration,
}

impl RateLimit {
    /// `requests` per `period`, evenly spaced; the burst defaults to `requests`.
    pub const fn new(requests: u32, period: Duration) -> Self {
        RateLimit {
            requests,
            period,
            burst: None,
            max_wait: Duration::ZERO,
        }
    }

    /// `requests` per second.
    pub const fn per_second(requests: u32) -> Self {
        Self::new(requests, Duration::from_secs(1))
    }

    /// `requests` per minute.
    pub const fn per_minute(requests: u32) -> Self {
        Self::new(requests, Duration::from_secs(60))
    }

    /// Allow bursts of up to `burst` requests (at least 1).
    pub const fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Wait up to `max_wait` for a permit before rejecting.
    pub const fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Requests per period.
    pub const fn requests(&self) -> u32 {
        self.requests
    }

    /// The period.
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// The burst size.
    pub const fn burst_size(&self) -> u32 {
        match self.burst {
            Some(b) => b,
            None => self.requests,
        }
    }

    /// The longest wait for a permit.
    pub const fn wait_bound(&self) -> Duration {
        self.max_wait
    }

    fn validate(self) -> Result<ValidRate, ConfigError> {
        let requests = NonZeroU32::new(self.requests).ok_or_else(|| {
            ConfigError::new("rate_limit", "requests per period must be at least 1")
        })?;
        let burst = NonZeroU32::new(self.burst_size())
            .ok_or_else(|| ConfigError::new("rate_limit", "burst must be at least 1"))?;
        let interval = self.period / requests.get();
        let quota = Quota::with_period(interval)
            .ok_or_else(|| {
                ConfigError::new("rate_limit", "period / requests must be at least 1ns")
            })?
            .allow_burst(burst);
        Ok(ValidRate { limit: self, quota })
    }
}

/// A [`RateLimit`] with its governor quota.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ValidRate {
    pub(crate) limit: RateLimit,
    pub(crate) quota: Quota,
}

/// A client-side token budget: `tokens` per `period` (LiteLLM's tpm, Envoy AI Gateway's
/// token-based limit), charged at admission from an estimate and corrected from the response's
/// `usage` when it arrives.
///
/// The whole budget is available as a burst and refills continuously. A call whose estimate does
/// not fit waits up to [`max_wait`](Self::max_wait) (default zero) and is otherwise rejected with
/// [`LimitKind::Tokens`](tower_llm_core::LimitKind::Tokens) and `retry_after`; a call whose
/// estimate exceeds the whole budget is rejected with
/// [`LimitKind::RequestTooLarge`](tower_llm_core::LimitKind::RequestTooLarge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLimit {
    tokens: u64,
    period: Duration,
    max_wait: Duration,
}

impl TokenLimit {
    /// `tokens` per `period`.
    pub const fn new(tokens: u64, period: Duration) -> Self {
        TokenLimit {
            tokens,
            period,
            max_wait: Duration::ZERO,
        }
    }

    /// `tokens` per minute.
    pub const fn per_minute(tokens: u64) -> Self {
        Self::new(tokens, Duration::from_secs(60))
    }

    /// Wait up to `max_wait` for budget before rejecting.
    pub const fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Tokens per period.
    pub const fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The period.
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// The longest wait for budget.
    pub const fn wait_bound(&self) -> Duration {
        self.max_wait
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.tokens == 0 {
            return Err(ConfigError::new(
                "token_limit",
                "tokens per period must be at least 1",
            ));
        }
        if self.period.is_zero() {
            return Err(ConfigError::new("token_limit", "period must be positive"));
        }
        if u64::try_from(self.period.as_nanos()).is_err() {
            return Err(ConfigError::new("token_limit", "period is too long"));
        }
        Ok(())
    }
}

/// Adaptive concurrency (AIMD, as in Netflix's concurrency-limits): the limit starts at the
/// partition's `max_concurrent`, drops multiplicatively when a call is slower than
/// `latency_threshold` or the target sheds load (rate limited, overloaded, timed out, as the
/// layer's classifier says), and grows by one for each fast, successful call while the partition
/// is busy (at least half the limit in flight), always within `[min, max]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveConcurrency {
    pub(crate) min: usize,
    pub(crate) max: Option<usize>,
    pub(crate) latency_threshold: Duration,
    pub(crate) backoff: f64,
    pub(crate) cooldown: Duration,
}

impl AdaptiveConcurrency {
    /// Adapt with calls slower than `latency_threshold` counting as overload; limit between 1 and
    /// the partition's `max_concurrent`, backoff ratio 0.9, at most one decrease per threshold.
    pub const fn new(latency_threshold: Duration) -> Self {
        AdaptiveConcurrency {
            min: 1,
            max: None,
            latency_threshold,
            backoff: 0.9,
            cooldown: latency_threshold,
        }
    }

    /// The lowest limit (at least 1).
    pub const fn min_limit(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// The highest limit (default: the partition's `max_concurrent`).
    pub const fn max_limit(mut self, max: usize) -> Self {
        self.max = Some(max);
        self
    }

    /// The factor applied on overload, in `(0, 1)` (default 0.9).
    pub const fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff = ratio;
        self
    }

    /// The shortest time between two decreases (default: the latency threshold), so that one
    /// burst of slow calls lowers the limit once rather than once per call.
    pub const fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Calls slower than this count as overload.
    pub const fn latency_threshold(&self) -> Duration {
        self.latency_threshold
    }

    fn validate(self, max_concurrent: usize) -> Result<ValidAdaptive, ConfigError> {
        let max = self.max.unwrap_or(max_concurrent);
        if self.min == 0 {
            return Err(ConfigError::new("adaptive", "min_limit must be at least 1"));
        }
        if self.min > max_concurrent || max < max_concurrent {
            return Err(ConfigError::new(
                "adaptive",
                format!(
                    "max_concurrent ({max_concurrent}) must lie within min_limit ({}) and max_limit ({max})",
                    self.min
                ),
            ));
        }
        if max > MAX_COUNTER {
            return Err(ConfigError::new(
                "adaptive",
                format!("max_limit must be at most {MAX_COUNTER}"),
            ));
        }
        if !(self.backoff > 0.0 && self.backoff < 1.0) {
            return Err(ConfigError::new(
                "adaptive",
                "backoff_ratio must lie in (0, 1)",
            ));
        }
        if self.latency_threshold.is_zero() {
            return Err(ConfigError::new(
                "adaptive",
                "latency_threshold must be positive",
            ));
        }
        Ok(ValidAdaptive {
            config: self,
            min: self.min,
            max,
        })
    }
}

/// [`AdaptiveConcurrency`] with its bounds resolved.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ValidAdaptive {
    pub(crate) config: AdaptiveConcurrency,
    pub(crate) min: usize,
    pub(crate) max: usize,
}

/// What a keyed bulkhead does with a new key once it holds
/// [`max_partitions`](crate::BulkheadLayerBuilder::max_partitions) partitions (after evicting idle
/// ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PartitionOverflow {
    /// Send calls of every key beyond the bound to one shared `overflow` partition with the
    /// default limits. New tenants still get service, and together they cannot take more than one
    /// partition's share, so existing partitions stay isolated (the default).
    #[default]
    Shared,
    /// Reject calls of keys beyond the bound with
    /// [`LimitKind::Partitions`](tower_llm_core::LimitKind::Partitions).
    Reject,
}

/// What the `target` label of a bulkhead's [metrics](crate::metrics) names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TargetLabel {
    /// Each partition's key (the default): one series per partition, so each target below a
    /// fallback chain ([`ByTarget`](crate::ByTarget)) has its own. An unpartitioned bulkhead's
    /// one partition is its name.
    #[default]
    Partition,
    /// The bulkhead's [name](crate::BulkheadLayerBuilder::name), for every partition: one series
    /// per bulkhead, whatever the keys. For keys that clients choose (a tenant header, the
    /// request's `model`), whose values would otherwise add series without bound. Gauges add up
    /// over the partitions.
    Name,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_design() {
        let c = PartitionConfig::builder().build().unwrap();
        assert_eq!(c.max_concurrent(), 64);
        assert_eq!(c.max_queued(), 512);
        assert_eq!(c.max_wait(), Duration::from_secs(1));
        assert!(c.rate_limit().is_none() && c.token_limit().is_none() && c.adaptive().is_none());
    }

    #[test]
    fn invalid_values_are_rejected() {
        let b = PartitionConfig::builder;
        assert_eq!(
            b().max_concurrent(0).build().unwrap_err().field(),
            "max_concurrent"
        );
        assert_eq!(
            b().max_concurrent(usize::MAX).build().unwrap_err().field(),
            "max_concurrent"
        );
        assert_eq!(
            b().max_queued(usize::MAX).build().unwrap_err().field(),
            "max_queued"
        );
        assert_eq!(
            b().rate_limit(RateLimit::per_second(0))
                .build()
                .unwrap_err()
                .field(),
            "rate_limit"
        );
        assert_eq!(
            b().rate_limit(RateLimit::per_second(5).burst(0))
                .build()
                .unwrap_err()
                .field(),
            "rate_limit"
        );
        assert_eq!(
            b().rate_limit(RateLimit::new(10, Duration::from_nanos(5)))
                .build()
                .unwrap_err()
                .field(),
            "rate_limit"
        );
        assert_eq!(
            b().token_limit(TokenLimit::per_minute(0))
                .build()
                .unwrap_err()
                .field(),
            "token_limit"
        );
        assert_eq!(
            b().token_limit(TokenLimit::new(5, Duration::ZERO))
                .build()
                .unwrap_err()
                .field(),
            "token_limit"
        );
        let adaptive = AdaptiveConcurrency::new(Duration::from_millis(100));
        assert!(b().adaptive(adaptive).build().is_ok());
        assert_eq!(
            b().adaptive(adaptive.min_limit(0))
                .build()
                .unwrap_err()
                .field(),
            "adaptive"
        );
        assert_eq!(
            b().adaptive(adaptive.min_limit(65))
                .build()
                .unwrap_err()
                .field(),
            "adaptive"
        );
        assert_eq!(
            b().adaptive(adaptive.max_limit(10))
                .build()
                .unwrap_err()
                .field(),
            "adaptive"
        );
        assert_eq!(
            b().adaptive(adaptive.backoff_ratio(1.0))
                .build()
                .unwrap_err()
                .field(),
            "adaptive"
        );
        assert_eq!(
            b().adaptive(AdaptiveConcurrency::new(Duration::ZERO))
                .build()
                .unwrap_err()
                .field(),
            "adaptive"
        );
    }

    #[test]
    fn error_messages_name_the_problem() {
        let err = PartitionConfig::builder()
            .max_concurrent(0)
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `max_concurrent`: must be at least 1"
        );
    }
}
