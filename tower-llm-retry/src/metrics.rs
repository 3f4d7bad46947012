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
//! `target` is the request's [`Target`](tower_llm_core::Target) (`provider/model`), `-` for a
//! request without one. [`ATTEMPTS_TOTAL`] is counted on the first attempt of every call, which
//! must not build a key: the layer registers the counter of the first target it sees once (the
//! facade builds one retry layer per target) and registers on the spot only for a layer shared
//! by several targets. A failure the layer does not retry at
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
/// [`ErrorKind`](tower_llm_core::ErrorKind) of the failure retried.
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
