//! The public vocabulary of the state machine: states, open reasons, outcomes, transitions.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tower_llm_core::{Classification, ErrorKind, KindSet, Origin};

/// The state of a circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls pass and their outcomes are recorded; a trip condition opens the breaker.
    Closed,
    /// Calls are rejected with [`BreakerOpen`](tower_llm_core::BreakerOpen) until the open
    /// duration has passed.
    Open,
    /// A limited number of probes pass; the breaker closes when they all succeed and re-opens
    /// when one fails.
    HalfOpen,
    /// Calls are rejected until the breaker is reset by hand.
    ForcedOpen,
    /// Calls pass and nothing is recorded.
    Disabled,
    /// Calls pass and outcomes are recorded (rates, metrics), but the breaker never opens.
    MetricsOnly,
}

impl State {
    const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    /// A stable `snake_case` name (metrics labels, logs, snapshots).
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
        }
    }

    /// The value of the `tower_llm_breaker_state` gauge: 0 closed, 1 open, 2 half-open,
    /// 3 forced open, 4 disabled, 5 metrics only.
    pub const fn gauge_value(self) -> f64 {
        self as u8 as f64
    }

    /// Whether calls are rejected in this state (half-open rejects only beyond its probes).
    pub const fn rejects(self) -> bool {
        matches!(self, State::Open | State::ForcedOpen)
    }

    pub(super) fn from_bits(bits: u64) -> State {
        State::ALL
            .get(usize::try_from(bits).unwrap_or(0))
            .copied()
            .unwrap_or(State::Closed)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a breaker opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenReason {
    /// The consecutive-failures condition.
    ConsecutiveFailures,
    /// The failure rate over the window reached its threshold.
    FailureRate,
    /// The slow-call rate over the window reached its threshold.
    SlowCallRate,
    /// A half-open probe failed (or was slow).
    ProbeFailed,
    /// The breaker stayed half-open longer than the configured maximum wait.
    HalfOpenTimeout,
    /// Opened by hand ([`BreakerHandle::trip`](crate::BreakerHandle::trip)).
    Manual,
    /// Forced open by hand ([`BreakerHandle::force_open`](crate::BreakerHandle::force_open)).
    Forced,
}

impl OpenReason {
    pub(super) const ALL: [OpenReason; 7] = [
        OpenReason::ConsecutiveFailures,
        OpenReason::FailureRate,
        OpenReason::SlowCallRate,
        OpenReason::ProbeFailed,
        OpenReason::HalfOpenTimeout,
        OpenReason::Manual,
        OpenReason::Forced,
    ];

    /// A stable `snake_case` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            OpenReason::ConsecutiveFailures => "consecutive_failures",
            OpenReason::FailureRate => "failure_rate",
            OpenReason::SlowCallRate => "slow_call_rate",
            OpenReason::ProbeFailed => "probe_failed",
            OpenReason::HalfOpenTimeout => "half_open_timeout",
            OpenReason::Manual => "manual",
            OpenReason::Forced => "forced",
        }
    }

    pub(super) fn from_bits(bits: u64) -> OpenReason {
        OpenReason::ALL
            .get(usize::try_from(bits).unwrap_or(0))
            .copied()
            .unwrap_or(OpenReason::Manual)
    }
}

impl fmt::Display for OpenReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a finished call means to the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed in a way that says the target is unhealthy.
    Failure(ErrorKind),
    /// The call says nothing about the target's health (a 400, a 429, a local rejection):
    /// not counted either way; a half-open probe gives its permit back.
    Ignored,
}

impl Outcome {
    /// What `classification` means to a breaker counting the upstream failures of `failures`
    /// (the rule of [`CircuitBreakerLayerBuilder::failures`](crate::CircuitBreakerLayerBuilder::failures)):
    /// a success is a success; a failure of a kind in `failures` that came from the upstream
    /// ([`Origin::Upstream`]) is a failure; anything else (another kind, a local rejection by a
    /// layer below) is ignored.
    ///
    /// ```
    /// use tower_llm_breaker::Outcome;
    /// use tower_llm_core::{Classification, ErrorKind, Failure, KindSet};
    ///
    /// let failures = KindSet::counts_against_breaker();
    /// let overloaded = Classification::Failure(Failure::new(ErrorKind::Overloaded));
    /// let limited = Classification::Failure(Failure::new(ErrorKind::RateLimited));
    /// let rejected = Classification::Failure(Failure::local(ErrorKind::Overloaded));
    /// assert_eq!(Outcome::classify(&overloaded, failures), Outcome::Failure(ErrorKind::Overloaded));
    /// assert_eq!(Outcome::classify(&limited, failures), Outcome::Ignored);
    /// assert_eq!(Outcome::classify(&rejected, failures), Outcome::Ignored);
    /// assert_eq!(Outcome::classify(&Classification::Success, failures), Outcome::Success);
    /// ```
    pub fn classify(classification: &Classification, failures: KindSet) -> Outcome {
        match classification {
            Classification::Success => Outcome::Success,
            Classification::Failure(f)
                if f.origin == Origin::Upstream && failures.contains(f.kind) =>
            {
                Outcome::Failure(f.kind)
            }
            Classification::Failure(_) => Outcome::Ignored,
        }
    }
}

/// A transition, as given to state-change listeners.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StateChange {
    /// The breaker's name (its key, for a keyed breaker).
    pub breaker: Arc<str>,
    /// The state it left.
    pub from: State,
    /// The state it entered.
    pub to: State,
    /// Why it opened (when `to` is open or forced open).
    pub reason: Option<OpenReason>,
    /// The reason in words, with the figures that tripped it.
    pub detail: Option<Arc<str>>,
    /// How long it stays open (when `to` is open).
    pub open_for: Option<Duration>,
    /// The generation entered: increases by one per transition.
    pub generation: u64,
}

pub(crate) type Listener = Arc<dyn Fn(&StateChange) + Send + Sync>;
