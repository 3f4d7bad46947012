//! Configuration: [`RetryLayerBuilder`] validates every setting and builds a
//! [`RetryLayer`]; [`RetryConfig`] is the validated result.
//!
//! | setting | default |
//! |---|---|
//! | [`max_attempts`](RetryLayerBuilder::max_attempts) | 3 (first attempt included; hedges not) |
//! | [`backoff`](RetryLayerBuilder::backoff) | decorrelated jitter from 250 ms, capped at 8 s |
//! | [`max_server_delay`](RetryLayerBuilder::max_server_delay) | 60 s: longer server delays stop the layer |
//! | [`attempt_timeout`](RetryLayerBuilder::attempt_timeout) | 30 s per attempt (until the response headers) |
//! | [`deadline`](RetryLayerBuilder::deadline) | none: bound the whole call across attempts |
//! | [`retry_on`](RetryLayerBuilder::retry_on) | [`KindSet::retryable`]: the kinds [`ErrorKind::is_retryable`](tower_llm_core::ErrorKind::is_retryable) names |
//! | [`max_timeout_retries`](RetryLayerBuilder::max_timeout_retries) | 1 |
//! | [`retry_local_rejections`](RetryLayerBuilder::retry_local_rejections) | false |
//! | [`budget`](RetryLayerBuilder::budget) | 20% of first attempts + 5/s over 10 s, shared by the layer's services |
//! | [`hedging`](RetryLayerBuilder::hedging) | off |
//! | [`seed`](RetryLayerBuilder::seed) | random per layer |
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_core::{ErrorKind, KindSet};
//! use tower_llm_retry::{backoff::Backoff, RetryBudget, RetryLayer};
//!
//! let layer = RetryLayer::builder()
//!     .max_attempts(4)
//!     .backoff(Backoff::exponential(Duration::from_millis(200)).with_max_delay(Duration::from_secs(5)))
//!     .attempt_timeout(Duration::from_secs(20))
//!     .deadline(Duration::from_secs(60))
//!     .retry_on(KindSet::retryable().without(ErrorKind::Unknown))
//!     .budget_per_target(RetryBudget::new(Duration::from_secs(10), 2, 0.1).unwrap())
//!     .seed(7)
//!     .build()
//!     .unwrap();
//! assert_eq!(layer.config().max_attempts(), 4);
//!
//! let err = RetryLayer::builder().max_attempts(0).build().unwrap_err();
//! assert_eq!(err.field(), "max_attempts");
//! ```

use std::time::Duration;

use tower_llm_core::{ConfigError, HttpClassifier, KindSet};

use crate::backoff::Backoff;
use crate::budget::{Budgets, RetryBudget};
use crate::hedge::Hedging;
use crate::layer::RetryLayer;
use crate::policy::Rules;
use crate::replay::HttpReplay;

/// Default [`RetryConfig::max_attempts`]: 3.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default [`RetryConfig::max_server_delay`]: 60 s.
pub const DEFAULT_MAX_SERVER_DELAY: Duration = Duration::from_secs(60);
/// Default [`RetryConfig::attempt_timeout`]: 30 s.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most attempts a call may be allowed.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// A validated retry configuration (see the [module docs](self) for the defaults).
#[derive(Clone, Debug)]
pub struct RetryConfig {
    max_attempts: u32,
    backoff: Backoff,
    max_server_delay: Duration,
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
    retry_on: KindSet,
    max_timeout_retries: u32,
    retry_local_rejections: bool,
    hedging: Option<Hedging>,
    seed: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            max_server_delay: DEFAULT_MAX_SERVER_DELAY,
            attempt_timeout: Some(DEFAULT_ATTEMPT_TIMEOUT),
            deadline: None,
            retry_on: KindSet::retryable(),
            max_timeout_retries: 1,
            retry_local_rejections: false,
            hedging: None,
            seed: None,
        }
    }
}

impl RetryConfig {
    /// Attempts per call, the first included (hedges not included).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff between attempts when the server named no delay.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The longest server-requested delay the layer waits; above it, it stops.
    pub fn max_server_delay(&self) -> Duration {
        self.max_server_delay
    }

    /// The limit on each attempt (until the inner service's response future resolves).
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// The limit on the whole call, across attempts and backoffs.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The failure kinds that are retried.
    pub fn retry_on(&self) -> KindSet {
        self.retry_on
    }

    /// How many timeouts one call may retry.
    pub fn max_timeout_retries(&self) -> u32 {
        self.max_timeout_retries
    }

    /// Whether local rejections (open breaker, full bulkhead below) are retried.
    pub fn retry_local_rejections(&self) -> bool {
        self.retry_local_rejections
    }

    /// The hedging settings, when hedging is on.
    pub fn hedging(&self) -> Option<Hedging> {
        self.hedging
    }

    /// The RNG seed, when one was set.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    pub(crate) fn rules(&self) -> Rules {
        Rules {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            max_server_delay: self.max_server_delay,
            retry_on: self.retry_on,
            max_timeout_retries: self.max_timeout_retries,
            retry_local_rejections: self.retry_local_rejections,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "max_attempts",
                format!(
                    "must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {}",
                    self.max_attempts
                ),
            ));
        }
        self.backoff.validate()?;
        if self.attempt_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "attempt_timeout",
                "must be positive (use no_attempt_timeout to disable it)",
            ));
        }
        if self.deadline.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("deadline", "must be positive"));
        }
        if let Some(hedging) = &self.hedging {
            hedging.validate()?;
        }
        Ok(())
    }
}

enum BudgetChoice {
    Shared(RetryBudget),
    PerTarget(RetryBudget),
    Unlimited,
}

/// Builds a [`RetryLayer`]: every setting is checked by [`build`](Self::build).
///
/// `C` classifies responses and errors ([`HttpClassifier`] by default; any
/// [`Classify`](tower_llm_core::Classify) for typed clients); `R` copies requests for replays and
/// records responses ([`HttpReplay`] by default, [`CloneReplay`](crate::CloneReplay) for typed
/// clients).
pub struct RetryLayerBuilder<C = HttpClassifier, R = HttpReplay> {
    config: RetryConfig,
    budget: BudgetChoice,
    classifier: C,
    replay: R,
}

impl Default for RetryLayerBuilder {
    fn default() -> Self {
        RetryLayerBuilder {
            config: RetryConfig::default(),
            budget: BudgetChoice::Shared(RetryBudget::default()),
            classifier: HttpClassifier::default(),
            replay: HttpReplay::default(),
        }
    }
}

impl RetryLayerBuilder {
    /// A builder with the defaults of the [module docs](self).
    pub fn new() -> Self {
        Self::default()
    }
}

impl<C, R> RetryLayerBuilder<C, R> {
    /// Attempts per call, the first included (1 to 100; 1 disables retries but keeps the
    /// attempt timeout, the deadline and hedging).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.config.max_attempts = max_attempts;
        self
    }

    /// The backoff used when the server named no delay.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// The longest server-requested delay to wait (60 s by default). A longer one stops the
    /// layer, which returns the failure with the delay attached for a fallback layer above.
    pub fn max_server_delay(mut self, max: Duration) -> Self {
        self.config.max_server_delay = max;
        self
    }

    /// Abandon an attempt after `timeout` (an [`AttemptTimeout`](tower_llm_core::AttemptTimeout)
    /// error, kind `Timeout`). Covers the inner service's response future: for a streaming
    /// response, until the headers.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.config.attempt_timeout = Some(timeout);
        self
    }

    /// No per-attempt timeout.
    pub fn no_attempt_timeout(mut self) -> Self {
        self.config.attempt_timeout = None;
        self
    }

    /// Bound the whole call: no attempt runs past `deadline` after the call started, and no
    /// retry is scheduled whose backoff would end at or after it.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.config.deadline = Some(deadline);
        self
    }

    /// The failure kinds to retry (default [`KindSet::retryable`]); any other kind is returned
    /// at once ([`StopReason::NotRetryable`](crate::StopReason::NotRetryable)). See
    /// [`policy`](crate::policy) for the other rules (local rejections, timeouts, budget).
    pub fn retry_on(mut self, retry_on: KindSet) -> Self {
        self.config.retry_on = retry_on;
        self
    }

    /// How many timeouts one call may retry (1 by default: a silent target is better failed over).
    pub fn max_timeout_retries(mut self, max: u32) -> Self {
        self.config.max_timeout_retries = max;
        self
    }

    /// Retry local rejections (a breaker or bulkhead below refused the call), waiting at least
    /// their `retry_after`. Off by default: see [`policy`](crate::policy).
    pub fn retry_local_rejections(mut self, retry: bool) -> Self {
        self.config.retry_local_rejections = retry;
        self
    }

    /// Send hedges: see [`hedge`](crate::hedge).
    pub fn hedging(mut self, hedging: Hedging) -> Self {
        self.config.hedging = Some(hedging);
        self
    }

    /// Seed the RNG of the backoff jitter: a seeded layer makes the same choices on every run
    /// (per call, in call order).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Use `budget` for every call (pass a clone of one budget to several layers to share it).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = BudgetChoice::Shared(budget);
        self
    }

    /// Give each [`Target`](tower_llm_core::Target) its own budget with the settings of
    /// `template` (calls without a target use `template` itself).
    pub fn budget_per_target(mut self, template: RetryBudget) -> Self {
        self.budget = BudgetChoice::PerTarget(template);
        self
    }

    /// No retry budget: every retry the other rules allow is made. An outage then multiplies
    /// the upstream traffic by `max_attempts`.
    pub fn no_budget(mut self) -> Self {
        self.budget = BudgetChoice::Unlimited;
        self
    }

    /// Classify with `classifier`.
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayerBuilder<C2, R> {
        RetryLayerBuilder {
            config: self.config,
            budget: self.budget,
            classifier,
            replay: self.replay,
        }
    }

    /// Copy requests and record responses with `replay`.
    pub fn replay<R2>(self, replay: R2) -> RetryLayerBuilder<C, R2> {
        RetryLayerBuilder {
            config: self.config,
            budget: self.budget,
            classifier: self.classifier,
            replay,
        }
    }

    /// Check every setting and build the layer.
    pub fn build(self) -> Result<RetryLayer<C, R>, ConfigError> {
        self.config.validate()?;
        let budgets = match self.budget {
            BudgetChoice::Shared(b) => Budgets::Shared(b),
            BudgetChoice::PerTarget(template) => Budgets::per_target(template),
            BudgetChoice::Unlimited => Budgets::Unlimited,
        };
        Ok(RetryLayer::from_parts(
            self.config,
            budgets,
            self.classifier,
            self.replay,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_validated() {
        let field = |b: RetryLayerBuilder| b.build().map(|_| ()).unwrap_err().field();
        assert_eq!(
            field(RetryLayerBuilder::new().max_attempts(0)),
            "max_attempts"
        );
        assert_eq!(
            field(RetryLayerBuilder::new().max_attempts(101)),
            "max_attempts"
        );
        assert_eq!(
            field(RetryLayerBuilder::new().attempt_timeout(Duration::ZERO)),
            "attempt_timeout"
        );
        assert_eq!(
            field(RetryLayerBuilder::new().deadline(Duration::ZERO)),
            "deadline"
        );
        assert_eq!(
            field(
                RetryLayerBuilder::new()
                    .backoff(Backoff::exponential(Duration::from_millis(1)).with_multiplier(0.0))
            ),
            "backoff.multiplier"
        );
        assert_eq!(
            field(
                RetryLayerBuilder::new()
                    .hedging(Hedging::fixed(Duration::from_millis(5)).with_max_hedges(11))
            ),
            "hedging.max_hedges"
        );
        assert!(RetryLayerBuilder::new().build().is_ok());
    }

    #[test]
    fn defaults_follow_the_design() {
        let c = RetryConfig::default();
        assert_eq!(c.max_attempts(), 3);
        assert_eq!(
            c.backoff(),
            Backoff::decorrelated_jitter(Duration::from_millis(250))
        );
        assert_eq!(c.backoff().max_delay(), Duration::from_secs(8));
        assert_eq!(c.max_server_delay(), Duration::from_secs(60));
        assert_eq!(c.attempt_timeout(), Some(Duration::from_secs(30)));
        assert_eq!(c.max_timeout_retries(), 1);
        assert!(!c.retry_local_rejections());
        assert!(c.hedging().is_none());
    }
}
