//! The chaos layer's `metrics` output. Every metric name is a constant of this module.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | [`INJECTED_TOTAL`] `tower_llm_chaos_injected_total` | counter | `outcome` (`latency`, `error`, `response`), `kind` (errors only: an [`ErrorKind::as_str`](tower_llm_core::ErrorKind::as_str)) | what the [`ChaosLayer`](crate::ChaosLayer) injected: a delay before the call, an error instead of it, a canned response instead of it |
//!
//! The same counts, without labels, are the layer's [`ChaosStats`](crate::ChaosStats). The
//! [`MockUpstream`](crate::MockUpstream) records no metrics: its
//! [`attempts`](crate::MockUpstream::attempts) log says what it answered.
//!
//! ```
//! use tower_llm_chaos::metrics;
//!
//! assert_eq!(metrics::INJECTED_TOTAL, "tower_llm_chaos_injected_total");
//! assert!(metrics::ALL.iter().all(|name| name.starts_with("tower_llm_chaos_")));
//! ```

/// Counter `tower_llm_chaos_injected_total{outcome, kind}`: faults the chaos layer injected;
/// `outcome` is `latency`, `error` or `response`, `kind` (errors only) the injected error's kind.
pub const INJECTED_TOTAL: &str = "tower_llm_chaos_injected_total";

/// Label: what was injected (`latency`, `error`, `response`).
pub const OUTCOME: &str = "outcome";
/// Label: the kind of an injected error.
pub const KIND: &str = "kind";

/// Every metric name of this crate.
pub const ALL: [&str; 1] = [INJECTED_TOTAL];
