//! The breaker's `metrics` and `tracing` output. Every metric name is a constant of this module.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | [`STATE`] `tower_llm_breaker_state` | gauge | `target` | the state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics only |
//! | [`CALLS_TOTAL`] `tower_llm_breaker_calls_total` | counter | `target`, `outcome` (`success`, `failure`, `ignored`), `kind` (failures only) | calls that went through the breaker, by what they meant to it |
//! | [`SLOW_CALLS_TOTAL`] `tower_llm_breaker_slow_calls_total` | counter | `target` | calls at least as slow as the slow-call threshold (when slow calls are on) |
//! | [`REJECTIONS_TOTAL`] `tower_llm_breaker_rejections_total` | counter | `target`, `state` (`open`, `half_open`, `forced_open`) | calls rejected without calling the inner service |
//! | [`TRANSITIONS_TOTAL`] `tower_llm_breaker_transitions_total` | counter | `target`, `from`, `to` | state transitions |
//! | [`KEY_OVERFLOW_TOTAL`] `tower_llm_breaker_key_overflow_total` | counter | `target` (the keyed layer's name) | calls of a keyed layer that went through its overflow breaker because the key bound was reached |
//!
//! `target` is the breaker's name ([`CircuitBreakerLayerBuilder::name`](crate::CircuitBreakerLayerBuilder::name));
//! a keyed breaker is named after its key (a [`Target`](tower_llm_core::Target) displays as
//! `provider/model`).
//!
//! Per-call handles are registered once, when the breaker is built, so a call only increments
//! them (no key building, no allocation): install the `metrics` recorder before building layers.
//! Every transition is a `tracing` event (`warn` when the breaker opens, `info` otherwise) with
//! the breaker's name, both states, the reason and the open duration.
//!
//! ```
//! use tower_llm_breaker::metrics;
//!
//! assert_eq!(metrics::STATE, "tower_llm_breaker_state");
//! assert!(metrics::ALL.iter().all(|name| name.starts_with("tower_llm_breaker_")));
//! ```

use ::metrics::{counter, gauge, Counter, Gauge};
use tower_llm_core::ErrorKind;

use crate::state::{Outcome, State, StateChange};

/// Gauge `tower_llm_breaker_state{target}`: the breaker's state (0 closed, 1 open, 2 half-open,
/// 3 forced open, 4 disabled, 5 metrics only).
pub const STATE: &str = "tower_llm_breaker_state";
/// Counter `tower_llm_breaker_calls_total{target, outcome, kind}`: calls that went through the
/// breaker; `outcome` is `success`, `failure` or `ignored`, `kind` (failures only) the
/// [`ErrorKind`].
pub const CALLS_TOTAL: &str = "tower_llm_breaker_calls_total";
/// Counter `tower_llm_breaker_slow_calls_total{target}`: calls at least as slow as the
/// slow-call threshold.
pub const SLOW_CALLS_TOTAL: &str = "tower_llm_breaker_slow_calls_total";
/// Counter `tower_llm_breaker_rejections_total{target, state}`: calls rejected without calling
/// the inner service, by the state that rejected them (`open`, `half_open`, `forced_open`).
pub const REJECTIONS_TOTAL: &str = "tower_llm_breaker_rejections_total";
/// Counter `tower_llm_breaker_transitions_total{target, from, to}`: state transitions.
pub const TRANSITIONS_TOTAL: &str = "tower_llm_breaker_transitions_total";
/// Counter `tower_llm_breaker_key_overflow_total{target}`: calls of a keyed layer (`target` is
/// its name) that went through its shared overflow breaker because every breaker was busy at
/// the key bound.
pub const KEY_OVERFLOW_TOTAL: &str = "tower_llm_breaker_key_overflow_total";

/// Every metric name of this crate.
pub const ALL: [&str; 6] = [
    STATE,
    CALLS_TOTAL,
    SLOW_CALLS_TOTAL,
    REJECTIONS_TOTAL,
    TRANSITIONS_TOTAL,
    KEY_OVERFLOW_TOTAL,
];

pub(crate) struct BreakerMetrics {
    target: String,
    success: Counter,
    ignored: Counter,
    failures: [Counter; ErrorKind::ALL.len()],
    slow: Counter,
    rejected_open: Counter,
    rejected_half_open: Counter,
    rejected_forced: Counter,
    state: Gauge,
}

impl BreakerMetrics {
    pub(crate) fn new(target: &str) -> Self {
        let calls = |outcome: &'static str| counter!(CALLS_TOTAL, "target" => target.to_owned(), "outcome" => outcome);
        let rejected = |state: State| counter!(REJECTIONS_TOTAL, "target" => target.to_owned(), "state" => state.as_str());
        BreakerMetrics {
            target: target.to_owned(),
            success: calls("success"),
            ignored: calls("ignored"),
            failures: ErrorKind::ALL.map(|kind| {
                counter!(
                    CALLS_TOTAL,
                    "target" => target.to_owned(),
                    "outcome" => "failure",
                    "kind" => kind.as_str()
                )
            }),
            slow: counter!(SLOW_CALLS_TOTAL, "target" => target.to_owned()),
            rejected_open: rejected(State::Open),
            rejected_half_open: rejected(State::HalfOpen),
            rejected_forced: rejected(State::ForcedOpen),
            state: gauge!(STATE, "target" => target.to_owned()),
        }
    }

    pub(crate) fn outcome(&self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.success.increment(1),
            Outcome::Ignored => self.ignored.increment(1),
            Outcome::Failure(kind) => {
                let index = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
                if let Some(counter) = self.failures.get(index) {
                    counter.increment(1);
                }
            }
        }
    }

    pub(crate) fn slow(&self) {
        self.slow.increment(1);
    }

    pub(crate) fn rejected(&self, state: State) {
        match state {
            State::HalfOpen => self.rejected_half_open.increment(1),
            State::ForcedOpen => self.rejected_forced.increment(1),
            _ => self.rejected_open.increment(1),
        }
    }

    pub(crate) fn set_state(&self, state: State) {
        self.state.set(state.gauge_value());
    }

    pub(crate) fn transition(&self, from: State, to: State) {
        self.set_state(to);
        counter!(
            TRANSITIONS_TOTAL,
            "target" => self.target.clone(),
            "from" => from.as_str(),
            "to" => to.as_str()
        )
        .increment(1);
    }
}

pub(crate) fn trace_transition(change: &StateChange) {
    let reason = change.reason.map(|r| r.as_str());
    let detail = change.detail.as_deref();
    let open_for_ms = change.open_for.map(|d| d.as_millis());
    if matches!(change.to, State::Open | State::ForcedOpen) {
        tracing::warn!(
            breaker = %change.breaker,
            from = change.from.as_str(),
            to = change.to.as_str(),
            reason,
            detail,
            open_for_ms,
            generation = change.generation,
            "circuit breaker opened"
        );
    } else {
        tracing::info!(
            breaker = %change.breaker,
            from = change.from.as_str(),
            to = change.to.as_str(),
            generation = change.generation,
            "circuit breaker changed state"
        );
    }
}
