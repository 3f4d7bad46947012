//! Building a circuit breaker: [`CircuitBreakerLayer::builder`] gives a
//! [`CircuitBreakerLayerBuilder`] that holds every setting (trip conditions, sliding window, open
//! duration, half-open probes), the classifier, the [`KindSet`] of failures that count and the
//! budget reader; [`build`](CircuitBreakerLayerBuilder::build) validates the whole and returns a
//! [`ConfigError`] naming the setting instead of panicking on a bad value.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_breaker::{CircuitBreakerLayer, SlidingWindow};
//! use tower_llm_core::{ErrorKind, KindSet};
//!
//! let layer = CircuitBreakerLayer::builder()
//!     .name("openai/gpt-4o")
//!     .failure_rate_threshold(0.5)
//!     .sliding_window(SlidingWindow::Time(Duration::from_secs(30)))
//!     .minimum_calls(10)
//!     .consecutive_failures(5)
//!     .slow_calls(Duration::from_secs(20), 0.8)
//!     .open_duration(Duration::from_secs(5))
//!     .max_open_duration(Duration::from_secs(60))
//!     .jitter(0.2)
//!     .seed(7)
//!     // Count 429s too, for a provider whose rate limits mean it is struggling.
//!     .failures(KindSet::counts_against_breaker().with(ErrorKind::RateLimited))
//!     .build()
//!     .unwrap();
//! let config = layer.handle().config().clone();
//! assert_eq!(config.name(), "openai/gpt-4o");
//! assert_eq!(config.permitted_calls_in_half_open(), 2);
//!
//! // Validation errors name the builder method.
//! let err = CircuitBreakerLayer::builder().failure_rate_threshold(1.5).build().unwrap_err();
//! assert_eq!(err.field(), "failure_rate_threshold");
//! let err = CircuitBreakerLayer::builder()
//!     .sliding_window(SlidingWindow::Count(5))
//!     .minimum_calls(6)
//!     .build()
//!     .unwrap_err();
//! assert_eq!(err.field(), "minimum_calls");
//! ```
//!
//! [`CircuitBreakerConfig`] is the validated settings alone, for a breaker used outside a tower
//! stack ([`BreakerHandle::new`](crate::BreakerHandle::new)); [`CircuitBreakerConfig::builder`]
//! has the same settings methods as the layer builders.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_llm_core::{ConfigError, HttpBudget, HttpClassifier, KindSet};

use crate::handle::BreakerHandle;
use crate::layer::CircuitBreakerLayer;
use crate::shared::SharedBreakers;

#[cfg(test)]
mod tests;
mod validate;

use validate::{check_calls, check_half_open, check_open, check_rate, check_window};

/// The largest count-based window (calls) and time-based window (seconds) accepted.
pub const MAX_COUNT_WINDOW: u32 = 1 << 20;
/// The largest time-based window accepted, in seconds (one 1 s bucket per second).
pub const MAX_TIME_WINDOW_SECS: u64 = 3600;
/// The largest number of half-open probes accepted.
pub const MAX_HALF_OPEN_PROBES: u32 = 10_000;
/// The longest open duration accepted (also the cap of the exponential growth).
pub const MAX_OPEN_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The default failure rate (0..=1) at which the breaker trips.
pub const DEFAULT_FAILURE_RATE_THRESHOLD: f64 = 0.5;
/// The default window: the last this many calls ([`SlidingWindow::Count`]).
pub const DEFAULT_WINDOW_CALLS: u32 = 20;
/// The default number of calls the window must hold before a rate can trip the breaker.
pub const DEFAULT_MINIMUM_CALLS: u32 = 10;
/// The default number of consecutive failures that trip the breaker.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// The default first open duration.
pub const DEFAULT_OPEN_DURATION: Duration = Duration::from_secs(5);
/// The default cap of the growing open duration.
pub const DEFAULT_MAX_OPEN_DURATION: Duration = Duration::from_secs(60);
/// The default number of probes admitted when half-open.
pub const DEFAULT_HALF_OPEN_PROBES: u32 = 2;

/// Which recent calls the failure and slow-call rates are computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlidingWindow {
    /// The last `n` recorded calls (lock-free ring of outcomes).
    Count(u32),
    /// The calls of the last `d` (whole seconds), in 1 s buckets. Reads the clock on every call.
    Time(Duration),
}

/// A validated circuit-breaker configuration. Cheap to clone.
///
/// Defaults (see `DESIGN.md`): trips at a 50 % failure rate over the last 20 calls once 10 were
/// recorded, or on 5 consecutive failures; stays open 5 s, doubling per consecutive re-open up to
/// 60 s, no jitter; admits 2 probes when half-open; no slow-call condition; no half-open max wait.
#[derive(Clone)]
pub struct CircuitBreakerConfig {
    pub(crate) inner: Arc<ConfigInner>,
}

#[derive(Clone, Debug)]
pub(crate) struct ConfigInner {
    pub(crate) name: Arc<str>,
    pub(crate) failure_rate_threshold: Option<f64>,
    pub(crate) window: SlidingWindow,
    pub(crate) minimum_calls: u32,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) open_duration: Duration,
    pub(crate) open_duration_multiplier: f64,
    pub(crate) max_open_duration: Duration,
    pub(crate) jitter: f64,
    pub(crate) seed: Option<u64>,
    pub(crate) permitted_calls_in_half_open: u32,
    pub(crate) max_wait_in_half_open: Option<Duration>,
    /// Where transitions are shared with other replicas (`None`: local only).
    pub(crate) shared: Option<Arc<dyn SharedBreakers>>,
}

impl CircuitBreakerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> CircuitBreakerConfigBuilder {
        CircuitBreakerConfigBuilder::default()
    }

    /// The breaker's name (the `target` label of its metrics; keyed breakers use the key).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The failure rate (0..=1) at or above which the breaker trips, if that condition is on.
    pub fn failure_rate_threshold(&self) -> Option<f64> {
        self.inner.failure_rate_threshold
    }

    /// The sliding window.
    pub fn sliding_window(&self) -> SlidingWindow {
        self.inner.window
    }

    /// How many calls the window must hold before a rate can trip the breaker.
    pub fn minimum_calls(&self) -> u32 {
        self.inner.minimum_calls
    }

    /// How many consecutive failures trip the breaker, if that condition is on.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.inner.consecutive_failures
    }

    /// Calls at least this slow are slow calls, if the slow-call condition is on.
    pub fn slow_call_duration(&self) -> Option<Duration> {
        self.inner.slow_call_duration
    }

    /// The slow-call rate (0..=1) at or above which the breaker trips (when slow calls are on).
    pub fn slow_call_rate_threshold(&self) -> f64 {
        self.inner.slow_call_rate_threshold
    }

    /// How long the breaker stays open the first time.
    pub fn open_duration(&self) -> Duration {
        self.inner.open_duration
    }

    /// The factor the open duration grows by per consecutive re-open.
    pub fn open_duration_multiplier(&self) -> f64 {
        self.inner.open_duration_multiplier
    }

    /// The cap of the open duration.
    pub fn max_open_duration(&self) -> Duration {
        self.inner.max_open_duration
    }

    /// The jitter fraction (0..=1) taken off the open duration at random.
    pub fn jitter(&self) -> f64 {
        self.inner.jitter
    }

    /// How many probes the breaker admits when half-open.
    pub fn permitted_calls_in_half_open(&self) -> u32 {
        self.inner.permitted_calls_in_half_open
    }

    /// The longest the breaker stays half-open before it re-opens, if bounded.
    pub fn max_wait_in_half_open(&self) -> Option<Duration> {
        self.inner.max_wait_in_half_open
    }

    /// The open duration after `reopens` consecutive re-opens, before jitter:
    /// `min(open_duration × multiplier^reopens, max_open_duration)`.
    pub fn open_duration_for(&self, reopens: u32) -> Duration {
        let c = &self.inner;
        let exp = i32::try_from(reopens).unwrap_or(i32::MAX);
        let secs = c.open_duration.as_secs_f64() * c.open_duration_multiplier.powi(exp);
        let max = c.max_open_duration.as_secs_f64();
        if !secs.is_finite() || secs >= max {
            c.max_open_duration
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The same configuration under another name (used for the breakers of a keyed layer).
    pub(crate) fn with_name(&self, name: Arc<str>) -> Self {
        let mut inner = (*self.inner).clone();
        inner.name = name;
        CircuitBreakerConfig {
            inner: Arc::new(inner),
        }
    }
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            inner: Arc::new(CircuitBreakerConfigBuilder::default().inner),
        }
    }
}

impl fmt::Debug for CircuitBreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.inner, f)
    }
}

/// Builder of a [`CircuitBreakerConfig`]; every setter may be called in any order, and
/// [`build`](Self::build) validates the whole. To build a layer, use
/// [`CircuitBreakerLayer::builder`], which has the same settings methods.
#[derive(Clone, Debug)]
pub struct CircuitBreakerConfigBuilder {
    inner: ConfigInner,
    /// Whether `max_open_duration` was set; if not, it is at least `open_duration`.
    max_open_set: bool,
}

impl Default for CircuitBreakerConfigBuilder {
    fn default() -> Self {
        CircuitBreakerConfigBuilder {
            inner: ConfigInner {
                name: Arc::from("default"),
                failure_rate_threshold: Some(DEFAULT_FAILURE_RATE_THRESHOLD),
                window: SlidingWindow::Count(DEFAULT_WINDOW_CALLS),
                minimum_calls: DEFAULT_MINIMUM_CALLS,
                consecutive_failures: Some(DEFAULT_CONSECUTIVE_FAILURES),
                slow_call_duration: None,
                slow_call_rate_threshold: 1.0,
                open_duration: DEFAULT_OPEN_DURATION,
                open_duration_multiplier: 2.0,
                max_open_duration: DEFAULT_MAX_OPEN_DURATION,
                jitter: 0.0,
                seed: None,
                permitted_calls_in_half_open: DEFAULT_HALF_OPEN_PROBES,
                max_wait_in_half_open: None,
                shared: None,
            },
            max_open_set: false,
        }
    }
}

impl CircuitBreakerConfigBuilder {
    /// The breaker's name: the `target` label of its metrics and the name in [`tower_llm_core::BreakerOpen`].
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.inner.name = name.into();
        self
    }

    /// Trip when the failure rate over the window reaches `rate` (0..=1) once
    /// [`minimum_calls`](Self::minimum_calls) were recorded. Default 0.5.
    pub fn failure_rate_threshold(mut self, rate: f64) -> Self {
        self.inner.failure_rate_threshold = Some(rate);
        self
    }

    /// Turn the failure-rate condition off.
    pub fn no_failure_rate(mut self) -> Self {
        self.inner.failure_rate_threshold = None;
        self
    }

    /// The window the rates are computed over. Default: the last 20 calls.
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.inner.window = window;
        self
    }

    /// How many calls the window must hold before a rate can trip the breaker. Default 10.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.inner.minimum_calls = calls;
        self
    }

    /// Trip after `n` consecutive failures, whatever the window says. Default 5.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.inner.consecutive_failures = Some(n);
        self
    }

    /// Turn the consecutive-failures condition off.
    pub fn no_consecutive_failures(mut self) -> Self {
        self.inner.consecutive_failures = None;
        self
    }

    /// Count calls that take at least `threshold` as slow, and trip when the slow-call rate over
    /// the window reaches `rate` (0..=1). Off by default. Turning it on makes every call read the
    /// clock twice. A slow probe in half-open counts as a failing probe.
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.inner.slow_call_duration = Some(threshold);
        self.inner.slow_call_rate_threshold = rate;
        self
    }

    /// How long the breaker stays open the first time. Default 5 s.
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.inner.open_duration = duration;
        self
    }

    /// The factor the open duration grows by per consecutive re-open (a failing half-open
    /// probe); 1.0 keeps it constant. Default 2.0.
    pub fn open_duration_multiplier(mut self, multiplier: f64) -> Self {
        self.inner.open_duration_multiplier = multiplier;
        self
    }

    /// The cap of the growing open duration. Default 60 s, or `open_duration` if that is longer.
    pub fn max_open_duration(mut self, duration: Duration) -> Self {
        self.inner.max_open_duration = duration;
        self.max_open_set = true;
        self
    }

    /// Take up to this fraction (0..=1) off each open duration at random, so breakers that opened
    /// together do not all probe at the same instant. Default 0 (no jitter).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.inner.jitter = fraction;
        self
    }

    /// Seed the jitter's random numbers (deterministic tests). Default: a random seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.inner.seed = Some(seed);
        self
    }

    /// How many probes the breaker admits when half-open; it closes once that many succeed.
    /// Default 2.
    pub fn permitted_calls_in_half_open(mut self, probes: u32) -> Self {
        self.inner.permitted_calls_in_half_open = probes;
        self
    }

    /// Re-open a breaker that stayed half-open this long without closing (probes that hang
    /// without being cancelled). Off by default.
    pub fn max_wait_in_half_open(mut self, wait: Duration) -> Self {
        self.inner.max_wait_in_half_open = Some(wait);
        self
    }

    /// Share the breaker's transitions (open with its deadline, forced open, closed) with other
    /// replicas through `shared` (e.g. Redis, with `tower-llm-redis`); counts stay local. See
    /// [`shared`](crate::shared). Default: not shared.
    pub fn shared(mut self, shared: Arc<dyn SharedBreakers>) -> Self {
        self.inner.shared = Some(shared);
        self
    }

    /// Validate and build.
    pub fn build(mut self) -> Result<CircuitBreakerConfig, ConfigError> {
        if !self.max_open_set {
            self.inner.max_open_duration =
                self.inner.max_open_duration.max(self.inner.open_duration);
        }
        let c = &self.inner;
        if c.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if let Some(rate) = c.failure_rate_threshold {
            check_rate("failure_rate_threshold", rate)?;
        }
        let count_window = check_window(c.window)?;
        check_calls(c, count_window)?;
        check_open(c)?;
        check_half_open(c)?;
        Ok(CircuitBreakerConfig {
            inner: Arc::new(self.inner),
        })
    }
}

/// The settings methods of a builder holding a `settings: CircuitBreakerConfigBuilder` field,
/// forwarded to it (one set of docs for the layer builders). `$name_doc` documents `name`.
macro_rules! forward_settings {
    ($name_doc:literal) => {
        #[doc = $name_doc]
        pub fn name(mut self, name: impl Into<std::sync::Arc<str>>) -> Self {
            self.settings = self.settings.name(name);
            self
        }

        /// Share the breakers' transitions (open with its deadline, forced open, closed) with
        /// other replicas through `shared` (e.g. Redis, with `tower-llm-redis`); counts stay
        /// local. See [`shared`](crate::shared). Default: not shared.
        pub fn shared(
            mut self,
            shared: std::sync::Arc<dyn $crate::shared::SharedBreakers>,
        ) -> Self {
            self.settings = self.settings.shared(shared);
            self
        }

        /// Trip when the failure rate over the window reaches `rate` (0..=1) once
        /// [`minimum_calls`](Self::minimum_calls) were recorded. Default 0.5.
        pub fn failure_rate_threshold(mut self, rate: f64) -> Self {
            self.settings = self.settings.failure_rate_threshold(rate);
            self
        }

        /// Turn the failure-rate condition off.
        pub fn no_failure_rate(mut self) -> Self {
            self.settings = self.settings.no_failure_rate();
            self
        }

        /// The window the rates are computed over. Default: the last 20 calls.
        pub fn sliding_window(mut self, window: $crate::SlidingWindow) -> Self {
            self.settings = self.settings.sliding_window(window);
            self
        }

        /// How many calls the window must hold before a rate can trip the breaker. Default 10.
        pub fn minimum_calls(mut self, calls: u32) -> Self {
            self.settings = self.settings.minimum_calls(calls);
            self
        }

        /// Trip after `n` consecutive failures, whatever the window says. Default 5.
        pub fn consecutive_failures(mut self, n: u32) -> Self {
            self.settings = self.settings.consecutive_failures(n);
            self
        }

        /// Turn the consecutive-failures condition off.
        pub fn no_consecutive_failures(mut self) -> Self {
            self.settings = self.settings.no_consecutive_failures();
            self
        }

        /// Count calls that take at least `threshold` as slow, and trip when the slow-call rate
        /// over the window reaches `rate` (0..=1). Off by default. Turning it on makes every
        /// call read the clock twice. A slow probe in half-open counts as a failing probe.
        pub fn slow_calls(mut self, threshold: std::time::Duration, rate: f64) -> Self {
            self.settings = self.settings.slow_calls(threshold, rate);
            self
        }

        /// How long the breaker stays open the first time. Default 5 s.
        pub fn open_duration(mut self, duration: std::time::Duration) -> Self {
            self.settings = self.settings.open_duration(duration);
            self
        }

        /// The factor the open duration grows by per consecutive re-open (a failing half-open
        /// probe); 1.0 keeps it constant. Default 2.0.
        pub fn open_duration_multiplier(mut self, multiplier: f64) -> Self {
            self.settings = self.settings.open_duration_multiplier(multiplier);
            self
        }

        /// The cap of the growing open duration. Default 60 s, or `open_duration` if that is
        /// longer.
        pub fn max_open_duration(mut self, duration: std::time::Duration) -> Self {
            self.settings = self.settings.max_open_duration(duration);
            self
        }

        /// Take up to this fraction (0..=1) off each open duration at random, so breakers that
        /// opened together do not all probe at the same instant. Default 0 (no jitter).
        pub fn jitter(mut self, fraction: f64) -> Self {
            self.settings = self.settings.jitter(fraction);
            self
        }

        /// Seed the jitter's random numbers (deterministic tests). Default: a random seed.
        pub fn seed(mut self, seed: u64) -> Self {
            self.settings = self.settings.seed(seed);
            self
        }

        /// How many probes the breaker admits when half-open; it closes once that many
        /// succeed. Default 2.
        pub fn permitted_calls_in_half_open(mut self, probes: u32) -> Self {
            self.settings = self.settings.permitted_calls_in_half_open(probes);
            self
        }

        /// Re-open a breaker that stayed half-open this long without closing (probes that hang
        /// without being cancelled). Off by default.
        pub fn max_wait_in_half_open(mut self, wait: std::time::Duration) -> Self {
            self.settings = self.settings.max_wait_in_half_open(wait);
            self
        }
    };
}

pub(crate) use forward_settings;

/// Builds a [`CircuitBreakerLayer`]: the breaker's settings, how calls are classified and
/// counted, and how requests are read; [`build`](Self::build) validates every setting.
///
/// `C` classifies responses and errors ([`HttpClassifier`] by default; any
/// [`Classify`](tower_llm_core::Classify) for a typed client); `R` reads the
/// [`AttemptBudget`](tower_llm_core::AttemptBudget) of a request ([`HttpBudget`] by default;
/// [`NoBudget`](tower_llm_core::NoBudget) for requests that are not `http::Request`s), so that a
/// fallback chain's probe is admitted even while the breaker is open (see
/// [Below a fallback chain](crate#below-a-fallback-chain)).
///
/// ```
/// use tower_llm_breaker::{BreakerHandle, CircuitBreakerConfig, CircuitBreakerLayer};
/// use tower_llm_core::NoBudget;
///
/// // Two layers over one breaker (here: one for HTTP requests, one for a typed client's).
/// let breaker = BreakerHandle::new(CircuitBreakerConfig::builder().name("shared").build().unwrap());
/// let http = CircuitBreakerLayer::builder().build_with_handle(breaker.clone());
/// let typed = CircuitBreakerLayer::builder().read_budget(NoBudget).build_with_handle(breaker.clone());
/// http.handle().trip();
/// assert_eq!(typed.handle().state(), tower_llm_breaker::State::Open);
/// ```
pub struct CircuitBreakerLayerBuilder<C = HttpClassifier, R = HttpBudget> {
    settings: CircuitBreakerConfigBuilder,
    classifier: C,
    failures: KindSet,
    reader: R,
}

impl Default for CircuitBreakerLayerBuilder {
    fn default() -> Self {
        CircuitBreakerLayerBuilder {
            settings: CircuitBreakerConfigBuilder::default(),
            classifier: HttpClassifier::default(),
            failures: KindSet::counts_against_breaker(),
            reader: HttpBudget,
        }
    }
}

impl CircuitBreakerLayerBuilder {
    /// A builder with the defaults (see [`CircuitBreakerConfig`]), [`HttpClassifier`],
    /// [`KindSet::counts_against_breaker`] and [`HttpBudget`].
    pub fn new() -> Self {
        Self::default()
    }
}

impl<C, R> CircuitBreakerLayerBuilder<C, R> {
    forward_settings!("The breaker's name: the `target` label of its metrics and the name in [`BreakerOpen`](tower_llm_core::BreakerOpen). Default `default`.");

    /// Classify responses and errors with `classifier` (for a typed client, or to override rows
    /// of the HTTP taxonomy).
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayerBuilder<C2, R> {
        CircuitBreakerLayerBuilder {
            settings: self.settings,
            classifier,
            failures: self.failures,
            reader: self.reader,
        }
    }

    /// The kinds of failure that count against the breaker. The rule: a call classified as a
    /// success is a success; a failure of a kind in `failures` that came from the upstream
    /// ([`Origin::Upstream`](tower_llm_core::Origin::Upstream)) is a failure; anything else
    /// (another kind, a local rejection by a breaker or bulkhead below) is ignored: not in the
    /// window, and a half-open probe gives its permit back (see [`Outcome::classify`](crate::Outcome::classify)).
    /// Default: [`KindSet::counts_against_breaker`] (5xx, 529, timeouts, transport errors,
    /// invalid responses, unknown failures; not 4xx, 429 or quota).
    pub fn failures(mut self, failures: KindSet) -> Self {
        self.failures = failures;
        self
    }

    /// Read the [`AttemptBudget`](tower_llm_core::AttemptBudget) of requests with `reader`, a
    /// [`ReadBudget`](tower_llm_core::ReadBudget): [`HttpBudget`] (the default) for
    /// `http::Request`s, [`NoBudget`](tower_llm_core::NoBudget) for a typed client's requests
    /// (which then are never probes).
    pub fn read_budget<R2>(self, reader: R2) -> CircuitBreakerLayerBuilder<C, R2> {
        CircuitBreakerLayerBuilder {
            settings: self.settings,
            classifier: self.classifier,
            failures: self.failures,
            reader,
        }
    }

    /// Validate every setting and build the layer, with a new breaker.
    pub fn build(self) -> Result<CircuitBreakerLayer<C, R>, ConfigError> {
        let config = self.settings.build()?;
        Ok(CircuitBreakerLayer::from_parts(
            BreakerHandle::new(config),
            self.classifier,
            self.failures,
            self.reader,
        ))
    }

    /// Build the layer over an existing breaker (shared with other layers, or made outside a
    /// stack). The settings methods of this builder are not used: the breaker keeps its own
    /// configuration; the classifier, the failures and the budget reader are this builder's.
    pub fn build_with_handle(self, handle: BreakerHandle) -> CircuitBreakerLayer<C, R> {
        CircuitBreakerLayer::from_parts(handle, self.classifier, self.failures, self.reader)
    }
}

impl<C, R> fmt::Debug for CircuitBreakerLayerBuilder<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayerBuilder")
            .field("settings", &self.settings.inner)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}
