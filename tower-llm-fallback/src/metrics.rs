//! Metric names of the fallback chain, recorded through the `metrics` facade.
//!
//! The `target` label is the target's [name](crate::TargetConfig::name) (by default
//! `provider/model`): one value per configured target, so label values stay bounded. `kind` is an
//! [`ErrorKind::as_str`](tower_llm_core::ErrorKind::as_str) (`none` for a success), `outcome` one
//! of the values listed per metric.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | [`tower_llm_fallback_attempts_total`](ATTEMPTS_TOTAL) | counter | `target`, `outcome` (`success`, `failure`, `rejected`), `kind` | calls the chain made to a target, by how they ended; `rejected` is a local refusal below the chain (an open breaker, a full bulkhead), not a failure of the target |
//! | [`tower_llm_fallback_skipped_total`](SKIPPED_TOTAL) | counter | `target`, `kind` | targets passed over without a call because they are cooling down, by the kind that benched them |
//! | [`tower_llm_fallback_responses_total`](RESPONSES_TOTAL) | counter | `outcome` ([`FallbackKind::as_str`](crate::FallbackKind::as_str): `none`, `target`, `cache`, `static`; or `failed`), `target` (for `none` and `target` only: who answered) | requests the chain finished, by what answered: the first target tried (`none`), a fallback target, the cache or static tier, or nothing (`failed`, an [`AllTargetsFailed`](tower_llm_core::AllTargetsFailed) error) |
//! | [`tower_llm_fallback_escalations_total`](ESCALATIONS_TOTAL) | counter | `reason` ([`EscalationReason::as_str`](crate::EscalationReason::as_str)) | escalations fired, those the rate limit held back included |
//! | [`tower_llm_fallback_escalations_suppressed_total`](ESCALATIONS_SUPPRESSED_TOTAL) | counter | `reason` | escalations the rate limit held back (counted into a summary instead of reaching the [`Escalation`](crate::Escalation) hook) |
//! | [`tower_llm_stream_resumed_total`](STREAM_RESUMED_TOTAL) | counter | `target`, `how` (`prefill`, `replay`) | committed streams that failed and were resumed on `target` (see [`resume`](crate::resume)) |
//! | [`tower_llm_stream_resume_failed_total`](STREAM_RESUME_FAILED_TOTAL) | counter | `reason` (`unresumable`, `no_target`, `diverged`) | committed streams that failed and were not resumed: not resumable (tool calls, `n > 1`, over the cap, ...), no target left or every one failed, or a replay that answered differently |
//! | [`tower_llm_fallback_escalation_records_dropped_total`](ESCALATION_RECORDS_DROPPED_TOTAL) | counter | none | escalation records a [`JsonDirEscalation`](crate::JsonDirEscalation) dropped because its writer's queue was full |
//!
//! ```
//! use tower_llm_fallback::{metrics, FallbackLayer, TargetConfig};
//!
//! let layer = FallbackLayer::builder()
//!     .target(TargetConfig::new("openai", "gpt-4o-mini")) // `target` = "openai/gpt-4o-mini"
//!     .build()
//!     .unwrap();
//! assert_eq!(layer.handle().health().targets[0].name, "openai/gpt-4o-mini");
//! assert_eq!(metrics::ATTEMPTS_TOTAL, "tower_llm_fallback_attempts_total");
//! ```

/// Counter, labels `target`, `outcome` (`success`, `failure`, `rejected`), `kind`: calls made to
/// each target.
pub const ATTEMPTS_TOTAL: &str = "tower_llm_fallback_attempts_total";
/// Counter, labels `target`, `kind`: targets skipped without a call while cooling down.
pub const SKIPPED_TOTAL: &str = "tower_llm_fallback_skipped_total";
/// Counter, labels `outcome` (`none`, `target`, `cache`, `static`, `failed`) and, for `none` and
/// `target`, `target`: finished requests by what answered.
pub const RESPONSES_TOTAL: &str = "tower_llm_fallback_responses_total";
/// Counter, label `reason` (`all_targets_failed`, `repeated_kind`, `failure_burst`): escalations
/// fired (those the rate limit held back included).
pub const ESCALATIONS_TOTAL: &str = "tower_llm_fallback_escalations_total";
/// Counter, label `reason`: escalations the rate limit held back.
pub const ESCALATIONS_SUPPRESSED_TOTAL: &str = "tower_llm_fallback_escalations_suppressed_total";
/// Counter, no label: escalation records dropped because the directory writer's queue was full.
pub const ESCALATION_RECORDS_DROPPED_TOTAL: &str =
    "tower_llm_fallback_escalation_records_dropped_total";
/// Counter, labels `target`, `how` (`prefill`, `replay`): committed streams resumed on another
/// target after a cut.
pub const STREAM_RESUMED_TOTAL: &str = "tower_llm_stream_resumed_total";
/// Counter, label `reason` (`unresumable`, `no_target`, `diverged`): committed streams that
/// failed and were not resumed.
pub const STREAM_RESUME_FAILED_TOTAL: &str = "tower_llm_stream_resume_failed_total";

/// Label: the target's name.
pub const TARGET: &str = "target";
/// Label: how an attempt ended, or what answered a request.
pub const OUTCOME: &str = "outcome";
/// Label: an [`ErrorKind`](tower_llm_core::ErrorKind) (`none` for a success).
pub const KIND: &str = "kind";
/// Label of [`ESCALATIONS_TOTAL`]: why the escalation fired.
pub const REASON: &str = "reason";
/// Label of [`STREAM_RESUMED_TOTAL`]: how the stream was resumed (`prefill`, `replay`).
pub const HOW: &str = "how";
