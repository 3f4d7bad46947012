//! Metric names of the stream guard ([`StreamGuardLayer`](super::StreamGuardLayer)), recorded
//! through the `metrics` facade.
//!
//! The `target` label is the request's [`Target`] extension (`provider/model`, set
//! by a fallback chain above, or by the caller), empty when the request carries none; the
//! targets a chain is configured with bound its values. `kind` is an
//! [`ErrorKind::as_str`](crate::ErrorKind::as_str), `none` for a stream that did not fail.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | [`tower_llm_stream_ends_total`](ENDS_TOTAL) | counter | `target`, `outcome` (`complete`, `failed`, `abandoned`: [`StreamEnd::as_str`](super::StreamEnd::as_str); `rejected`: failed before its first event, the call returned an error), `kind` | streamed answers by how they ended |
//! | [`tower_llm_stream_first_event_seconds`](FIRST_EVENT_SECONDS) | histogram | `target` | time from the call to the first answer event of each stream that committed (time to first token) |
//! | [`tower_llm_stream_duration_seconds`](DURATION_SECONDS) | histogram | `target`, `outcome` (`complete`, `failed`, `abandoned`) | time from the call to the end of each stream that committed |
//! | [`tower_llm_tokens_total`](TOKENS_TOTAL) | counter | `target`, `direction` (`input`, `output`), `source` (`reported`, `estimated`) | tokens of the answers the guard saw, JSON and streamed |
//!
//! **Histograms.** The `metrics` facade leaves buckets to the exporter: give these histograms
//! [`LATENCY_BUCKETS`] (10 ms to 120 s), as the gateway does, or a Prometheus exporter renders
//! them as summaries.
//!
//! **Tokens.** `reported`: the `usage` the answer carries (`prompt_tokens` / `completion_tokens`,
//! or `input_tokens` / `output_tokens`, Gemini's `usageMetadata`, Groq's `x_groq.usage`): in a
//! JSON answer read whole (the same serde pass that judges it), or in a stream's usage chunk
//! (parsed only for the chunk that carries one; `stream_options.include_usage` asks OpenAI for
//! it). `estimated`: a stream that ended complete without a usage chunk counts one output token
//! per content chunk (servers flush about one token per chunk; a role-only first chunk counts
//! too), since counting characters would mean a second parse of every chunk. Input tokens are
//! never estimated (the guard does not read the request), and a JSON answer without `usage`
//! counts nothing.
//!
//! **Cost.** A guard registers its handles on its first call, for the target of that call (one
//! guard per target, as in the facade's stack): recording then builds no key and allocates
//! nothing. A guard that serves several targets registers on the spot for the others.
//!
//! ```
//! use tower_llm_core::stream::metrics;
//! use tower_llm_core::StreamGuardLayer;
//!
//! // The guard records these for each `text/event-stream` answer it watches.
//! let layer = StreamGuardLayer::builder().build().unwrap();
//! # let _ = layer;
//! assert_eq!(metrics::ENDS_TOTAL, "tower_llm_stream_ends_total");
//! assert_eq!(metrics::TARGET, "target");
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram};

use super::usage::Usage;
use super::StreamEnd;
use crate::Target;

/// Counter, labels `target`, `outcome` (`complete`, `failed`, `abandoned`, `rejected`), `kind`:
/// streamed answers by how they ended.
pub const ENDS_TOTAL: &str = "tower_llm_stream_ends_total";
/// Histogram (seconds), label `target`: time to the first answer event of a committed stream.
pub const FIRST_EVENT_SECONDS: &str = "tower_llm_stream_first_event_seconds";
/// Histogram (seconds), labels `target`, `outcome` (`complete`, `failed`, `abandoned`): time from
/// the call to the end of a committed stream.
pub const DURATION_SECONDS: &str = "tower_llm_stream_duration_seconds";
/// Counter (tokens), labels `target`, `direction` (`input`, `output`), `source` (`reported`,
/// `estimated`): tokens of the answers the guard saw.
pub const TOKENS_TOTAL: &str = "tower_llm_tokens_total";

/// Every metric name of the stream guard.
pub const ALL: [&str; 4] = [
    ENDS_TOTAL,
    FIRST_EVENT_SECONDS,
    DURATION_SECONDS,
    TOKENS_TOTAL,
];

/// The histograms of the stream guard (give them [`LATENCY_BUCKETS`]).
pub const HISTOGRAMS: [&str; 2] = [FIRST_EVENT_SECONDS, DURATION_SECONDS];

/// Histogram buckets (seconds) fit for LLM calls, from 10 ms to 120 s: every `_seconds`
/// histogram of the tower-llm crates is meant to be exported with them.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// Label: the request's target (`provider/model`; empty without a `Target` extension).
pub const TARGET: &str = "target";
/// Label of [`ENDS_TOTAL`] and [`DURATION_SECONDS`]: how the stream ended.
pub const OUTCOME: &str = "outcome";
/// Label of [`ENDS_TOTAL`]: the error kind of a failed stream (`none` otherwise).
pub const KIND: &str = "kind";
/// Label of [`TOKENS_TOTAL`]: `input` (the prompt) or `output` (the answer).
pub const DIRECTION: &str = "direction";
/// Label of [`TOKENS_TOTAL`]: `reported` (the answer's `usage`) or `estimated`.
pub const SOURCE: &str = "source";
/// The `outcome` of a stream that failed before its first event (the call returned an error).
pub const REJECTED: &str = "rejected";

/// The handles of one target, registered once and shared by the guard's calls.
pub(crate) struct TargetMetrics {
    label: Arc<str>,
    pub(crate) first_event: Histogram,
    duration_complete: Histogram,
    duration_failed: Histogram,
    duration_abandoned: Histogram,
    ends_complete: Counter,
    ends_abandoned: Counter,
    input_reported: Counter,
    output_reported: Counter,
    output_estimated: Counter,
}

impl TargetMetrics {
    #[cold]
    #[inline(never)]
    fn register(target: Option<&Target>) -> Self {
        let label: Arc<str> = target.map_or_else(|| Arc::from(""), |t| Arc::from(t.to_string()));
        let l = || Arc::clone(&label);
        let duration = |outcome: &'static str| metrics::histogram!(DURATION_SECONDS, TARGET => l(), OUTCOME => outcome);
        let ends = |outcome: &'static str| metrics::counter!(ENDS_TOTAL, TARGET => l(), OUTCOME => outcome, KIND => "none");
        let tokens = |direction: &'static str, source: &'static str| metrics::counter!(TOKENS_TOTAL, TARGET => l(), DIRECTION => direction, SOURCE => source);
        TargetMetrics {
            first_event: metrics::histogram!(FIRST_EVENT_SECONDS, TARGET => l()),
            duration_complete: duration("complete"),
            duration_failed: duration("failed"),
            duration_abandoned: duration("abandoned"),
            ends_complete: ends("complete"),
            ends_abandoned: ends("abandoned"),
            input_reported: tokens("input", "reported"),
            output_reported: tokens("output", "reported"),
            output_estimated: tokens("output", "estimated"),
            label,
        }
    }

    /// The `target` label.
    pub(crate) fn label(&self) -> Arc<str> {
        Arc::clone(&self.label)
    }

    /// A stream ended: its counter and its duration.
    pub(crate) fn ended(&self, end: StreamEnd, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        match end {
            StreamEnd::Complete => {
                self.ends_complete.increment(1);
                self.duration_complete.record(seconds);
            }
            StreamEnd::Abandoned => {
                self.ends_abandoned.increment(1);
                self.duration_abandoned.record(seconds);
            }
            StreamEnd::Failed(failure) => {
                // A failure: registered on the spot (one series per kind).
                metrics::counter!(
                    ENDS_TOTAL,
                    TARGET => self.label(),
                    OUTCOME => end.as_str(),
                    KIND => failure.kind.as_str(),
                )
                .increment(1);
                self.duration_failed.record(seconds);
            }
        }
    }

    /// Tokens an answer reported.
    pub(crate) fn reported(&self, usage: Usage) {
        if let Some(input) = usage.input {
            self.input_reported.increment(input);
        }
        if let Some(output) = usage.output {
            self.output_reported.increment(output);
        }
    }

    /// Output tokens estimated for an answer that reported none.
    pub(crate) fn estimated_output(&self, tokens: u64) {
        self.output_estimated.increment(tokens);
    }
}

/// Which handles a guard's calls record to: those of the first target it saw, registered on
/// its first call; another target's are registered on the spot.
#[derive(Default)]
pub(crate) struct MetricsCache {
    first: OnceLock<(Option<Target>, Arc<TargetMetrics>)>,
}

impl MetricsCache {
    pub(crate) fn for_target(&self, target: Option<&Target>) -> Arc<TargetMetrics> {
        let (first, handles) = self
            .first
            .get_or_init(|| (target.cloned(), Arc::new(TargetMetrics::register(target))));
        if first.as_ref() == target {
            Arc::clone(handles)
        } else {
            Arc::new(TargetMetrics::register(target))
        }
    }
}

impl std::fmt::Debug for MetricsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsCache")
            .field("target", &self.first.get().map(|(t, _)| t))
            .finish()
    }
}
