//! The retry layer's `metrics` output. Every metric name is a constant of this module.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | [`ATTEMPTS_TOTAL`] `tower_llm_retry_attempts_total` | counter | `target`, `attempt` (`first`, `retry`, `hedge`) | attempts sent to the inner service |
//! | [`RETRIES_TOTAL`] `tower_llm_retry_retries_total` | counter | `target`, `kind` | retries decided, by the kind of failure retried |
//! | [`HEDGES_TOTAL`] `tower_llm_retry_hedges_total` | counter | `target` | hedges sent |
//! | [`BUDGET_EXHAUSTED_TOTAL`] `tower_llm_retry_budget_exhausted_total` | counter | `target` | retries and hedges the retry budget refused |
//! | [`STOPPED_TOTAL`] `tower_llm_retry_stopped_total` | counter | `target`, `reason`, `kind` | calls the layer gave up on, by [`StopReason`](crate::StopReason) (`reason` is [`StopReason::as_str`](crate::StopReason::as_str)) and the last failure's kind |
//!
//! `target` is the request's [`Target`] (`provider/model`), `-` for a
//! request without one. No count builds a metric key on the way (label strings, a registry
//! lookup): the layer holds the counters of the first target it sees (the facade builds one
//! retry layer per target), each registered on its first use, and registers on the spot only
//! for the other targets of a layer shared by several. A failure the layer does not retry at
//! all (a kind outside [`retry_on`](crate::RetryLayerBuilder::retry_on), a local rejection) is
//! passed through and not counted in [`STOPPED_TOTAL`].
//!
//! The same counts, without labels, are read from the layer's
//! [`RetryHandle::stats`](crate::RetryHandle::stats). `tracing` debug events go with every
//! failed attempt, backoff, hedge and stop, with the target and the error kind (never request or
//! response content).
//!
//! ```
//! use tower_llm_retry::metrics;
//!
//! assert_eq!(metrics::ATTEMPTS_TOTAL, "tower_llm_retry_attempts_total");
//! assert!(metrics::ALL.iter().all(|name| name.starts_with("tower_llm_retry_")));
//! ```

/// Counter `tower_llm_retry_attempts_total{target, attempt}`: attempts sent to the inner
/// service; `attempt` is `first`, `retry` or `hedge`.
pub const ATTEMPTS_TOTAL: &str = "tower_llm_retry_attempts_total";
/// Counter `tower_llm_retry_retries_total{target, kind}`: retries decided, by the
/// [`ErrorKind`] of the failure retried.
pub const RETRIES_TOTAL: &str = "tower_llm_retry_retries_total";
/// Counter `tower_llm_retry_hedges_total{target}`: hedges sent.
pub const HEDGES_TOTAL: &str = "tower_llm_retry_hedges_total";
/// Counter `tower_llm_retry_budget_exhausted_total{target}`: retries and hedges the retry
/// budget refused.
pub const BUDGET_EXHAUSTED_TOTAL: &str = "tower_llm_retry_budget_exhausted_total";
/// Counter `tower_llm_retry_stopped_total{target, reason, kind}`: calls the layer gave up on,
/// by [`StopReason`](crate::StopReason) and the kind of the last failure.
pub const STOPPED_TOTAL: &str = "tower_llm_retry_stopped_total";

/// Every metric name of this crate.
pub const ALL: [&str; 5] = [
    ATTEMPTS_TOTAL,
    RETRIES_TOTAL,
    HEDGES_TOTAL,
    BUDGET_EXHAUSTED_TOTAL,
    STOPPED_TOTAL,
];

use std::sync::{Arc, OnceLock};

use ::metrics::Counter;
use tower_llm_core::{ErrorKind, Target};

use crate::future::TargetLabel;

/// The counters of one target, each registered the first time it counts and then held, so
/// neither a first attempt nor a retry or hedge builds a metric key (label strings, a registry
/// lookup). [`STOPPED_TOTAL`], once per call given up on with one series per reason and kind,
/// is registered on the spot with the held label.
#[derive(Clone)]
pub(crate) struct TargetCounters {
    label: Arc<str>,
    first_attempts: Counter,
    retry_attempts: OnceLock<Counter>,
    hedge_attempts: OnceLock<Counter>,
    hedges: OnceLock<Counter>,
    budget_exhausted: OnceLock<Counter>,
    /// [`RETRIES_TOTAL`] by the kind retried, indexed by `ErrorKind as usize`.
    retries: [OnceLock<Counter>; ErrorKind::ALL.len()],
}

impl TargetCounters {
    /// The counters of `target`; only the first attempts' is registered now (every call counts
    /// one).
    #[cold]
    #[inline(never)]
    pub(crate) fn register(target: &Option<Target>) -> Self {
        let label: Arc<str> = Arc::from(TargetLabel(target).to_string());
        TargetCounters {
            first_attempts: ::metrics::counter!(ATTEMPTS_TOTAL, "target" => Arc::clone(&label), "attempt" => "first"),
            retry_attempts: OnceLock::new(),
            hedge_attempts: OnceLock::new(),
            hedges: OnceLock::new(),
            budget_exhausted: OnceLock::new(),
            retries: std::array::from_fn(|_| OnceLock::new()),
            label,
        }
    }

    fn label(&self) -> Arc<str> {
        Arc::clone(&self.label)
    }

    /// A call's first attempt.
    pub(crate) fn first_attempt(&self) {
        self.first_attempts.increment(1);
    }

    /// A retry sent.
    pub(crate) fn retry_attempt(&self) {
        self.retry_attempts
            .get_or_init(|| ::metrics::counter!(ATTEMPTS_TOTAL, "target" => self.label(), "attempt" => "retry"))
            .increment(1);
    }

    /// A hedge sent: an attempt and a hedge.
    pub(crate) fn hedge(&self) {
        self.hedge_attempts
            .get_or_init(|| ::metrics::counter!(ATTEMPTS_TOTAL, "target" => self.label(), "attempt" => "hedge"))
            .increment(1);
        self.hedges
            .get_or_init(|| ::metrics::counter!(HEDGES_TOTAL, "target" => self.label()))
            .increment(1);
    }

    /// A retry or hedge the budget refused.
    pub(crate) fn budget_exhausted(&self) {
        self.budget_exhausted
            .get_or_init(|| ::metrics::counter!(BUDGET_EXHAUSTED_TOTAL, "target" => self.label()))
            .increment(1);
    }

    /// A retry decided after a failure of `kind`.
    pub(crate) fn retry(&self, kind: ErrorKind) {
        let register = || ::metrics::counter!(RETRIES_TOTAL, "kind" => kind.as_str(), "target" => self.label());
        match self.retries.get(kind as usize) {
            Some(held) => held.get_or_init(register).increment(1),
            None => register().increment(1),
        }
    }

    /// A call given up on for `reason`, the last failure being of `kind`.
    pub(crate) fn stopped(&self, reason: &'static str, kind: &'static str) {
        ::metrics::counter!(STOPPED_TOTAL, "reason" => reason, "kind" => kind, "target" => self.label())
            .increment(1);
    }
}
