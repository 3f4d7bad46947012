//! [`BreakerHandle`]: look at a breaker and operate it by hand; [`BreakerSnapshot`]: its
//! serializable state (for a `/health` endpoint).
//!
//! ```
//! use tower_llm_breaker::{CircuitBreakerLayer, OpenReason, Outcome, State};
//! use tower_llm_core::ErrorKind;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = CircuitBreakerLayer::builder().name("groq").build().unwrap();
//! // An owned handle on the layer's breaker (shared by every service the layer wraps).
//! let breaker = layer.handle();
//! let changes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
//! let seen = changes.clone();
//! breaker.on_state_change(move |change| seen.lock().unwrap().push((change.from, change.to)));
//!
//! // Five consecutive failures open it (the default).
//! for _ in 0..5 {
//!     breaker.try_acquire().unwrap().record(Outcome::Failure(ErrorKind::ServerError));
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let open = breaker.try_acquire().unwrap_err();
//! assert_eq!(open.breaker(), "groq");
//! assert_eq!(open.retry_after().as_secs(), 5);
//!
//! let snapshot = breaker.snapshot();
//! assert_eq!(snapshot.state, State::Open);
//! assert_eq!(snapshot.reason, Some(OpenReason::ConsecutiveFailures));
//! assert_eq!(snapshot.retry_after_ms, Some(5000));
//! assert_eq!(snapshot.calls, 0); // each closed period starts with an empty window
//! let json = serde_json::to_value(&snapshot).unwrap();
//! assert_eq!(json["state"], "open");
//!
//! breaker.reset();
//! assert_eq!(breaker.state(), State::Closed);
//! assert_eq!(breaker.counts().calls, 0);
//! assert_eq!(*changes.lock().unwrap(), [(State::Closed, State::Open), (State::Open, State::Closed)]);
//! # }
//! ```
//!
//! A breaker used outside a tower stack is made from validated settings:
//! `BreakerHandle::new(CircuitBreakerConfig::builder().name("groq").build()?)`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tower_llm_core::BreakerOpen;

use crate::config::CircuitBreakerConfig;
use crate::state::{Breaker, CallPermit, OpenReason, State, StateChange};

/// A handle on one circuit breaker: every clone of the layer, of the service and of the handle
/// refers to the same breaker.
#[derive(Clone)]
pub struct BreakerHandle {
    pub(crate) breaker: Arc<Breaker>,
}

/// What the sliding window holds right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCounts {
    /// Calls recorded (successes and failures; ignored calls are not in the window).
    pub calls: u64,
    /// Failed calls.
    pub failures: u64,
    /// Slow calls (successful or not).
    pub slow_calls: u64,
}

impl WindowCounts {
    /// Successful calls.
    pub fn successes(&self) -> u64 {
        self.calls.saturating_sub(self.failures)
    }
}

/// A serializable picture of a breaker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    /// The breaker's name (its key, for a keyed breaker).
    pub name: String,
    /// Its state.
    pub state: State,
    /// Why it is open (open or forced open only).
    pub reason: Option<OpenReason>,
    /// The last reason it opened for, in words with the figures that tripped it.
    pub last_open_reason: Option<String>,
    /// Milliseconds until an open breaker admits a probe (open only).
    pub retry_after_ms: Option<u64>,
    /// Calls in the sliding window.
    pub calls: u64,
    /// Failures in the sliding window.
    pub failures: u64,
    /// Slow calls in the sliding window.
    pub slow_calls: u64,
    /// Failure rate over the window, once it holds the minimum number of calls.
    pub failure_rate: Option<f64>,
    /// Slow-call rate over the window, once it holds the minimum number of calls.
    pub slow_call_rate: Option<f64>,
    /// Consecutive failures (closed or metrics only).
    pub consecutive_failures: u64,
    /// Probes in flight (half-open only).
    pub half_open_in_flight: u64,
    /// Probes that succeeded (half-open only).
    pub half_open_successes: u64,
    /// Consecutive re-opens: the exponent of the open duration.
    pub reopens: u32,
    /// Calls rejected since the breaker was built.
    pub not_permitted: u64,
    /// Calls whose outcome was ignored since the breaker was built.
    pub ignored: u64,
    /// Milliseconds since the last transition (since creation if none).
    pub since_transition_ms: u64,
    /// Increases by one per transition.
    pub generation: u64,
}

impl BreakerHandle {
    /// A new, closed breaker.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        BreakerHandle {
            breaker: Breaker::new_arc(config),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        self.breaker.name()
    }

    /// Its configuration.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.breaker.config
    }

    /// Its state. An open breaker turns half-open when the first call after its open duration
    /// arrives (there is no timer task), or earlier when a probe of the layer above arrives
    /// ([`try_acquire_probe`](Self::try_acquire_probe)); [`snapshot`](Self::snapshot)'s
    /// `retry_after_ms` shows when the open period ends.
    pub fn state(&self) -> State {
        self.breaker.state()
    }

    /// What the sliding window holds.
    pub fn counts(&self) -> WindowCounts {
        let t = self.breaker.view().totals;
        WindowCounts {
            calls: t.calls,
            failures: t.failures,
            slow_calls: t.slow,
        }
    }

    /// The failure rate over the window (0..=1), once it holds the minimum number of calls.
    pub fn failure_rate(&self) -> Option<f64> {
        self.snapshot().failure_rate
    }

    /// The slow-call rate over the window (0..=1), once it holds the minimum number of calls.
    pub fn slow_call_rate(&self) -> Option<f64> {
        self.snapshot().slow_call_rate
    }

    /// A serializable picture of the breaker.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let v = self.breaker.view();
        let enough =
            v.totals.calls >= u64::from(self.breaker.config.minimum_calls()) && v.totals.calls > 0;
        let rate = |n: u64| enough.then(|| n as f64 / v.totals.calls as f64);
        BreakerSnapshot {
            name: self.name().to_owned(),
            state: v.state,
            reason: v.reason,
            last_open_reason: v.last_open_reason.map(|r| r.to_string()),
            retry_after_ms: v
                .retry_after
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            calls: v.totals.calls,
            failures: v.totals.failures,
            slow_calls: v.totals.slow,
            failure_rate: rate(v.totals.failures),
            slow_call_rate: rate(v.totals.slow),
            consecutive_failures: v.consecutive,
            half_open_in_flight: v.half_open_in_flight,
            half_open_successes: v.half_open_successes,
            reopens: v.reopens,
            not_permitted: v.not_permitted,
            ignored: v.ignored,
            since_transition_ms: u64::try_from(v.since_transition.as_millis()).unwrap_or(u64::MAX),
            generation: v.generation,
        }
    }

    /// Ask for permission to make one call, outside any `tower` service: a rejected call gets
    /// the [`BreakerOpen`] error the layer would return. Record the outcome on the permit.
    pub fn try_acquire(&self) -> Result<CallPermit, BreakerOpen> {
        self.breaker.try_acquire()
    }

    /// Ask for permission to make one call that a layer above (a fallback chain) sends as its
    /// probe of this target (see [`AttemptBudget::is_probe`](tower_llm_core::AttemptBudget::is_probe)):
    /// the layer above decides *when* the target is probed, this breaker lets that probe reach it.
    ///
    /// * Closed, metrics-only, disabled: as [`try_acquire`](Self::try_acquire).
    /// * Open, whether its open period is over or not: the breaker turns half-open now and the
    ///   call takes one of the half-open probe permits. Its outcome counts as any half-open
    ///   probe's: enough successes close the breaker, a failure re-opens it (for a longer period).
    /// * Half-open: one of the probe permits, or a rejection (`retry_after` zero) when all are
    ///   in flight.
    /// * Forced open: rejected (an operator forced it).
    ///
    /// ```
    /// use tower_llm_breaker::{BreakerHandle, CircuitBreakerConfig, Outcome, State};
    /// use tower_llm_core::ErrorKind;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let config = CircuitBreakerConfig::builder().consecutive_failures(1).permitted_calls_in_half_open(1);
    /// let breaker = BreakerHandle::new(config.build().unwrap());
    /// breaker.try_acquire().unwrap().record(Outcome::Failure(ErrorKind::ServerError));
    /// assert!(breaker.try_acquire().is_err()); // open for 5 s
    ///
    /// let probe = breaker.try_acquire_probe().unwrap(); // at once
    /// assert!(probe.is_probe());
    /// assert_eq!(breaker.state(), State::HalfOpen);
    /// probe.record(Outcome::Success);
    /// assert_eq!(breaker.state(), State::Closed);
    /// # }
    /// ```
    pub fn try_acquire_probe(&self) -> Result<CallPermit, BreakerOpen> {
        self.breaker.try_acquire_probe()
    }

    /// Reject every call until [`reset`](Self::reset) (or another manual transition).
    pub fn force_open(&self) {
        self.breaker
            .force(State::ForcedOpen, Some(OpenReason::Forced));
    }

    /// Let every call through and record nothing, until another manual transition.
    pub fn disable(&self) {
        self.breaker.force(State::Disabled, None);
    }

    /// Let every call through and record outcomes (rates, metrics), but never open.
    pub fn metrics_only(&self) {
        self.breaker.force(State::MetricsOnly, None);
    }

    /// Close the breaker with an empty window and the open duration back at its base.
    pub fn reset(&self) {
        self.breaker.force(State::Closed, None);
    }

    /// Open the breaker now, as if a trip condition had been met; it will probe after the open
    /// duration as usual.
    pub fn trip(&self) {
        self.breaker.force(State::Open, Some(OpenReason::Manual));
    }

    /// Move to any state by hand (`Closed` is [`reset`](Self::reset), `Open` is
    /// [`trip`](Self::trip)). Entering `HalfOpen` admits a fresh set of probes.
    pub fn transition_to(&self, state: State) {
        match state {
            State::Closed => self.reset(),
            State::Open => self.trip(),
            State::ForcedOpen => self.force_open(),
            State::Disabled => self.disable(),
            State::MetricsOnly => self.metrics_only(),
            State::HalfOpen => self.breaker.force(State::HalfOpen, None),
        }
    }

    /// Call `listener` on every transition, after the transition took effect, on the thread
    /// that made it (listeners of racing transitions may run concurrently; `generation` orders
    /// them). A listener may use the handle, including to make another transition.
    pub fn on_state_change(&self, listener: impl Fn(&StateChange) + Send + Sync + 'static) {
        self.breaker.add_listener(Arc::new(listener));
    }
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BreakerHandle").field(&self.breaker).finish()
    }
}
