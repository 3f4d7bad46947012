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
//! | [`tower_llm_fallback_attempt_duration_seconds`](ATTEMPT_DURATION_SECONDS) | histogram | `target`, `outcome` (`success`, `failure`, `rejected`) | time from the call to a target until the chain committed to its answer (headers of a JSON answer read whole, first event of a stream) or recorded its failure |
//! | [`tower_llm_fallback_fallbacks_total`](FALLBACKS_TOTAL) | counter | `target` (who answered), `reason` (the [`ErrorKind`] of the first failed attempt) | requests a fallback target answered, by why the chain left its first choice |
//! | [`tower_llm_fallback_cooldown`](COOLDOWN) | gauge | `target`, `kind` (the kind that benched it) | 1 while the target is benched, 2 once its cooldown lifted and a probe decides, 0 back in service; set from health snapshots by [`CooldownGauges`] (the gateway does it at each scrape of `/metrics`) |
//!
//! The handles the request path records to (the attempt histogram, the attempt, response and
//! fallback counters of each target) are registered once per target, on first use; give the histogram
//! [`LATENCY_BUCKETS`](tower_llm_core::stream::metrics::LATENCY_BUCKETS) in the exporter (see
//! [`HISTOGRAMS`]). Cooldowns lift lazily (a target is probed by the next request), so no event
//! marks their end: [`CooldownGauges`] reads them from a [`HealthSnapshot`] when asked.
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

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use tower_llm_core::ErrorKind;

use crate::health::{CooldownSnapshot, HealthSnapshot};

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

/// Histogram (seconds), labels `target`, `outcome` (`success`, `failure`, `rejected`): time from
/// the call to a target until the chain committed to its answer or recorded its failure.
pub const ATTEMPT_DURATION_SECONDS: &str = "tower_llm_fallback_attempt_duration_seconds";
/// Counter, labels `target` (who answered), `reason` (the [`ErrorKind`] of the first failed
/// attempt): requests a fallback target answered.
pub const FALLBACKS_TOTAL: &str = "tower_llm_fallback_fallbacks_total";
/// Gauge, labels `target`, `kind`: 1 benched, 2 cooldown lifted (a probe decides), 0 in service.
pub const COOLDOWN: &str = "tower_llm_fallback_cooldown";

/// The histograms of the fallback chain (give them
/// [`LATENCY_BUCKETS`](tower_llm_core::stream::metrics::LATENCY_BUCKETS)).
pub const HISTOGRAMS: [&str; 1] = [ATTEMPT_DURATION_SECONDS];

/// Every metric name of this crate.
pub const ALL: [&str; 11] = [
    ATTEMPTS_TOTAL,
    SKIPPED_TOTAL,
    RESPONSES_TOTAL,
    ESCALATIONS_TOTAL,
    ESCALATIONS_SUPPRESSED_TOTAL,
    ESCALATION_RECORDS_DROPPED_TOTAL,
    STREAM_RESUMED_TOTAL,
    STREAM_RESUME_FAILED_TOTAL,
    ATTEMPT_DURATION_SECONDS,
    FALLBACKS_TOTAL,
    COOLDOWN,
];

/// Label: the target's name.
pub const TARGET: &str = "target";
/// Label: how an attempt ended, or what answered a request.
pub const OUTCOME: &str = "outcome";
/// Label: an [`ErrorKind`] (`none` for a success).
pub const KIND: &str = "kind";
/// Label of [`ESCALATIONS_TOTAL`]: why the escalation fired.
pub const REASON: &str = "reason";
/// Label of [`STREAM_RESUMED_TOTAL`]: how the stream was resumed (`prefill`, `replay`).
pub const HOW: &str = "how";

/// The per-target handles of the chain's hot path, registered on first use.
#[derive(Debug, Default)]
pub(crate) struct TargetMetrics {
    /// `success`, `failure`, `rejected`.
    attempt: OnceLock<[Histogram; 3]>,
    /// By the kind of the first failed attempt ([`ErrorKind::ALL`] order).
    fallbacks: [OnceLock<Counter>; ErrorKind::ALL.len()],
    /// [`ATTEMPTS_TOTAL`] of failed (`[0]`) and rejected (`[1]`) attempts, by kind.
    unsuccessful: [[OnceLock<Counter>; ErrorKind::ALL.len()]; 2],
    /// [`RESPONSES_TOTAL`] `outcome="target"`: requests this target answered after another
    /// failed.
    answered_after_fallback: OnceLock<Counter>,
}

impl TargetMetrics {
    /// Record how long an attempt of target `name` took, by how it ended.
    pub(crate) fn attempt(&self, name: &Arc<str>, outcome: AttemptOutcome, took: Duration) {
        let [success, failure, rejected] = self.attempt.get_or_init(|| {
            ["success", "failure", "rejected"].map(|outcome| {
                metrics::histogram!(
                    ATTEMPT_DURATION_SECONDS,
                    TARGET => Arc::clone(name),
                    OUTCOME => outcome
                )
            })
        });
        let histogram = match outcome {
            AttemptOutcome::Success => success,
            AttemptOutcome::Failure => failure,
            AttemptOutcome::Rejected => rejected,
        };
        histogram.record(took.as_secs_f64());
    }

    /// An attempt of target `name` failed (or was `rejected` below the chain) with `kind`.
    pub(crate) fn unsuccessful(&self, name: &Arc<str>, rejected: bool, kind: ErrorKind) {
        let register = || {
            metrics::counter!(
                ATTEMPTS_TOTAL,
                TARGET => Arc::clone(name),
                OUTCOME => if rejected { "rejected" } else { "failure" },
                KIND => kind.as_str()
            )
        };
        match self.unsuccessful[usize::from(rejected)].get(kind_index(kind)) {
            Some(slot) => slot.get_or_init(register).increment(1),
            None => register().increment(1),
        }
    }

    /// Target `name` answered a request another target failed first.
    pub(crate) fn answered_after_fallback(&self, name: &Arc<str>) {
        self.answered_after_fallback
            .get_or_init(|| {
                metrics::counter!(
                    RESPONSES_TOTAL,
                    TARGET => Arc::clone(name),
                    OUTCOME => crate::FallbackKind::Target.as_str()
                )
            })
            .increment(1);
    }

    /// Target `name` answered a request whose first attempt failed with `reason`.
    pub(crate) fn fell_back(&self, name: &Arc<str>, reason: ErrorKind) {
        if let Some(slot) = self.fallbacks.get(kind_index(reason)) {
            slot.get_or_init(|| {
                metrics::counter!(
                    FALLBACKS_TOTAL,
                    TARGET => Arc::clone(name),
                    REASON => reason.as_str()
                )
            })
            .increment(1);
        }
    }
}

/// `kind`'s place in [`ErrorKind::ALL`] (past the end for none: never, the list is complete).
fn kind_index(kind: ErrorKind) -> usize {
    ErrorKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(usize::MAX)
}

/// How an attempt ended, for [`ATTEMPT_DURATION_SECONDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttemptOutcome {
    Success,
    Failure,
    Rejected,
}

/// Sets the [`COOLDOWN`] gauge of each target from health snapshots: 1 while benched, 2 once
/// its cooldown lifted and a probe decides, 0 in service. Keeps the kind it last set per target,
/// so a target benched for another kind, back in service, or gone from the snapshot (an evicted
/// pass-through model) has its old series set to 0; it holds no more entries than the last
/// snapshot had benched targets.
///
/// ```
/// use tower_llm_fallback::{metrics::CooldownGauges, FallbackLayer, TargetConfig};
///
/// let layer = FallbackLayer::builder()
///     .target(TargetConfig::new("openai", "gpt-4o-mini"))
///     .build()
///     .unwrap();
/// let mut gauges = CooldownGauges::new();
/// // Call it when metrics are scraped (or on a timer).
/// gauges.update_from(&layer.handle().health());
/// assert_eq!(gauges.benched(), 0);
/// ```
#[derive(Debug, Default)]
pub struct CooldownGauges {
    /// Target name -> the kind whose series was last set non-zero, and its gauge.
    set: HashMap<String, (ErrorKind, Gauge)>,
}

impl CooldownGauges {
    /// No gauge set yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the gauges from a chain's health.
    pub fn update_from(&mut self, health: &HealthSnapshot) {
        self.update(
            health
                .targets
                .iter()
                .map(|t| (t.name.as_str(), t.available, t.cooldown.as_ref())),
        );
    }

    /// Set the gauges from `(name, available, cooldown)` of every target (a stack's health
    /// lists the same fields). Targets missing from `targets` count as in service.
    pub fn update<'a>(
        &mut self,
        targets: impl IntoIterator<Item = (&'a str, bool, Option<&'a CooldownSnapshot>)>,
    ) {
        let mut previous = std::mem::take(&mut self.set);
        for (name, available, cooldown) in targets {
            let Some(cooldown) = cooldown else {
                continue;
            };
            let value = if available || cooldown.probing {
                2.0
            } else {
                1.0
            };
            let entry = match previous.remove(name) {
                Some((kind, gauge)) if kind == cooldown.kind => (kind, gauge),
                Some((_, old)) => {
                    old.set(0.0);
                    (cooldown.kind, cooldown_gauge(name, cooldown.kind))
                }
                None => (cooldown.kind, cooldown_gauge(name, cooldown.kind)),
            };
            entry.1.set(value);
            self.set.insert(name.to_owned(), entry);
        }
        // Back in service, or gone.
        for (_, (_, gauge)) in previous {
            gauge.set(0.0);
        }
    }

    /// How many targets the last update found benched (or being probed).
    pub fn benched(&self) -> usize {
        self.set.len()
    }
}

fn cooldown_gauge(name: &str, kind: ErrorKind) -> Gauge {
    metrics::gauge!(COOLDOWN, TARGET => name.to_owned(), KIND => kind.as_str())
}
