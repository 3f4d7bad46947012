//! `metrics` and `tracing` output.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `tower_llm_breaker_state` | gauge (0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics only) | `target` |
//! | `tower_llm_breaker_calls_total` | counter | `target`, `outcome` (`success`, `failure`, `ignored`), `kind` (failures) |
//! | `tower_llm_breaker_slow_calls_total` | counter | `target` |
//! | `tower_llm_breaker_rejections_total` | counter | `target`, `state` (`open`, `half_open`, `forced_open`) |
//! | `tower_llm_breaker_transitions_total` | counter | `target`, `from`, `to` |
//!
//! Per-call handles are registered once, when the breaker is built, so a call only increments
//! them (no key building, no allocation): install the `metrics` recorder before building layers.
//! Every transition is a `tracing` event (`warn` when the breaker opens, `info` otherwise) with
//! the breaker's name, both states, the reason and the open duration.

use metrics::{counter, gauge, Counter, Gauge};
use tower_llm_core::ErrorKind;

use crate::state::{Outcome, State, StateChange};

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
        let calls = |outcome: &'static str| counter!("tower_llm_breaker_calls_total", "target" => target.to_owned(), "outcome" => outcome);
        let rejected = |state: State| counter!("tower_llm_breaker_rejections_total", "target" => target.to_owned(), "state" => state.as_str());
        BreakerMetrics {
            target: target.to_owned(),
            success: calls("success"),
            ignored: calls("ignored"),
            failures: ErrorKind::ALL.map(|kind| {
                counter!(
                    "tower_llm_breaker_calls_total",
                    "target" => target.to_owned(),
                    "outcome" => "failure",
                    "kind" => kind.as_str()
                )
            }),
            slow: counter!("tower_llm_breaker_slow_calls_total", "target" => target.to_owned()),
            rejected_open: rejected(State::Open),
            rejected_half_open: rejected(State::HalfOpen),
            rejected_forced: rejected(State::ForcedOpen),
            state: gauge!("tower_llm_breaker_state", "target" => target.to_owned()),
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
            "tower_llm_breaker_transitions_total",
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
