//! The gateway's Prometheus recorder, its own metrics, and the overview of every series
//! `/metrics` shows.
//!
//! # Overview
//!
//! Labels are bounded: `target` is a configured target's name (`provider/model`; for a
//! pass-through route, one per requested model, at most 256 per route at a time), `route` a
//! route's `match` pattern from the configuration (`none` for a request no route serves),
//! `kind` an error kind, `outcome`/`reason`/`direction`/`source` fixed sets. No label carries a
//! raw client-supplied string beyond the bounded model set, and none carries a key. Every
//! `_seconds` series is a histogram with buckets from 10 ms to 120 s
//! ([`LATENCY_BUCKETS`]); `_total` series are counters.
//!
//! | series | type | labels | what for |
//! |---|---|---|---|
//! | [`tower_llm_gateway_requests_total`](REQUESTS_TOTAL) | counter | `outcome`, `fallback`, `status`, `client` | requests answered, by status, by what answered and by client key name |
//! | [`tower_llm_gateway_request_duration_seconds`](REQUEST_DURATION_SECONDS) | histogram | `route`, `outcome` (`success`, `failure`) | latency per route as the client sees it: from the request to the end of the answer's body (the whole stream for SSE) |
//! | [`tower_llm_fallback_attempt_duration_seconds`](tower_llm::fallback::metrics::ATTEMPT_DURATION_SECONDS) | histogram | `target`, `outcome` (`success`, `failure`, `rejected`) | latency per provider: each call from the chain to a target until it committed (JSON answer read whole, first SSE event) or failed |
//! | [`tower_llm_stream_first_event_seconds`](tower_llm::core::stream::metrics::FIRST_EVENT_SECONDS) | histogram | `target` | time to first token of each stream |
//! | [`tower_llm_stream_duration_seconds`](tower_llm::core::stream::metrics::DURATION_SECONDS) | histogram | `target`, `outcome` (`complete`, `failed`, `abandoned`) | length of each stream |
//! | [`tower_llm_tokens_total`](tower_llm::core::stream::metrics::TOKENS_TOTAL) | counter | `target`, `direction` (`input`, `output`), `source` (`reported`, `estimated`) | tokens from the answers' `usage` (JSON and SSE); a complete stream without usage counts an estimate of its output |
//! | [`tower_llm_stream_ends_total`](tower_llm::core::stream::metrics::ENDS_TOTAL) | counter | `target`, `outcome`, `kind` | how streams ended (cut, stalled, in-band error, ...) |
//! | [`tower_llm_fallback_attempts_total`](tower_llm::fallback::metrics::ATTEMPTS_TOTAL) | counter | `target`, `outcome`, `kind` | success rate per target |
//! | [`tower_llm_fallback_fallbacks_total`](tower_llm::fallback::metrics::FALLBACKS_TOTAL) | counter | `target` (who answered), `reason` (kind of the first failure) | fallbacks by reason |
//! | [`tower_llm_fallback_responses_total`](tower_llm::fallback::metrics::RESPONSES_TOTAL) | counter | `outcome`, `target` | what answered: first choice, fallback target, cache, static, nothing |
//! | [`tower_llm_fallback_skipped_total`](tower_llm::fallback::metrics::SKIPPED_TOTAL) | counter | `target`, `kind` | targets passed over while cooling down |
//! | [`tower_llm_fallback_cooldown`](tower_llm::fallback::metrics::COOLDOWN) | gauge | `target`, `kind` | cooldown state: 1 benched, 2 lifted (a probe decides), 0 in service; refreshed at each scrape from the stack's health |
//! | [`tower_llm_stream_resumed_total`](tower_llm::fallback::metrics::STREAM_RESUMED_TOTAL) | counter | `target`, `how` (`prefill`, `replay`) | streams resumed on another target after a cut |
//! | [`tower_llm_stream_resume_failed_total`](tower_llm::fallback::metrics::STREAM_RESUME_FAILED_TOTAL) | counter | `reason` | cut streams that could not be resumed |
//! | [`tower_llm_breaker_state`](tower_llm::breaker::metrics::STATE) | gauge | `target` | circuit breaker state (0 closed, 1 open, 2 half-open, ...) |
//! | [`tower_llm_breaker_calls_total`](tower_llm::breaker::metrics::CALLS_TOTAL), [`_rejections_total`](tower_llm::breaker::metrics::REJECTIONS_TOTAL), [`_transitions_total`](tower_llm::breaker::metrics::TRANSITIONS_TOTAL) | counter | `target`, ... | what the breakers saw and did |
//! | [`tower_llm_retry_attempts_total`](tower_llm::retry::metrics::ATTEMPTS_TOTAL) | counter | `target`, `attempt` (`first`, `retry`, `hedge`) | attempts sent, retries and hedges included |
//! | [`tower_llm_retry_retries_total`](tower_llm::retry::metrics::RETRIES_TOTAL), [`_stopped_total`](tower_llm::retry::metrics::STOPPED_TOTAL), ... | counter | `target`, `kind`, ... | retries and why they stopped |
//! | [`tower_llm_bulkhead_rejected_total`](tower_llm::bulkhead::metrics::REJECTED_TOTAL) | counter | `target`, `reason` (`concurrency`, `queue`, `expected_wait`, `max_wait`, `rate`, `tokens`, ...) | requests shed, by limit kind |
//! | [`tower_llm_bulkhead_wait_seconds`](tower_llm::bulkhead::metrics::WAIT_SECONDS) | histogram | `target`, `outcome` (`admitted`, `rejected`) | queueing for a concurrency permit |
//! | [`tower_llm_bulkhead_in_flight`](tower_llm::bulkhead::metrics::IN_FLIGHT), [`_queued`](tower_llm::bulkhead::metrics::QUEUED), [`_limit`](tower_llm::bulkhead::metrics::LIMIT) | gauge | `target` | load per target |
//! | [`tower_llm_redis_up`](tower_llm::redis::metrics::UP) | gauge | | with `[shared_state]`: 1 while replicas share state through Redis, 0 while every decision is local |
//! | [`tower_llm_redis_local_decisions_total`](tower_llm::redis::metrics::LOCAL_DECISIONS_TOTAL), [`_errors_total`](tower_llm::redis::metrics::ERRORS_TOTAL), [`_applied_total`](tower_llm::redis::metrics::APPLIED_TOTAL) | counter | `reason` / none / `component` | decisions taken alone because Redis was down or slow, failed Redis operations, other replicas' transitions applied here |
//! | [`tower_llm_redis_limiter_local_admissions_total`](tower_llm::redis::limiter::LOCAL_ADMISSIONS_TOTAL), [`tower_llm_redis_limiter_shared`](tower_llm::redis::limiter::SHARED) | counter / gauge | `reason` (`error`, `timeout`, `redis_down`) / none | with `[shared_state]` and a `requests_per_minute` or `tokens_per_minute`: admissions decided by the target's own limits because Redis failed or was slow; 1 while the rate and token decisions are shared |
//!
//! Each crate's `metrics` module has the full table of its series.
//!
//! # The gateway's own
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | [`REQUESTS_TOTAL`] `tower_llm_gateway_requests_total` | counter | `outcome` (`success`, `failure`), `fallback` (`none`, `target`, `cache`, `static`), `status`, `client` (the client key's name, `anonymous` without client keys; never a key) | chat requests answered, by HTTP status, by what answered them and by client |
//! | [`REQUEST_DURATION_SECONDS`] `tower_llm_gateway_request_duration_seconds` | histogram | `route` (the route's `match` pattern, `none` when no route serves the request), `outcome` (`success` for a 2xx status, else `failure`) | chat requests from their arrival to the end of the answer's body (or until the client went away) |
//!
//! The route of a request is found from its body's `model` (one serde pass that skips the rest;
//! the stack routes it again), with each route's histograms registered at start.
//!
//! **Install the recorder before building a stack.** The breaker registers its metric handles
//! when it is built, with the recorder installed at that moment: a stack built before the
//! recorder is installed keeps no-op handles, and its breakers never appear in `/metrics`.
//! [`Gateway::start`](crate::Gateway::start) calls [`prometheus_handle`] first, so the routes
//! built at start (those whose targets all name a model) are recorded like the others.
//!
//! **Idle series can be dropped** (`[gateway] metrics_idle_timeout_ms`, off by default): a
//! series not updated for that long leaves `/metrics` at the next render. The targets of a
//! pass-through route come and go with the models clients ask for (the library evicts idle
//! models past 256 per route), and the `metrics` facade cannot delete a series, so without it
//! the registry keeps the series of every model ever requested. It is off by default because a
//! series whose handle a live target holds does not come back once dropped: the layers register
//! their handles once (the breaker when it is built; the stream guard, fallback chain, retry,
//! bulkhead and the per-route histograms on first use) and keep recording into a dropped one,
//! so a target idle longer than the timeout loses those series for good; and the breaker sets
//! its state gauge only on transitions, so a healthy breaker's `tower_llm_breaker_state` would
//! vanish after the timeout even under traffic. Turn it on when untrusted clients can send
//! many distinct model names to a pass-through route, and alert on counters rather than on
//! the breaker's gauges then. (The gateway's own `requests_total` holds a handle for each
//! client's usual answer only while no idle timeout is set; with one, it looks its series up
//! on every request, so it never counts into a dropped series.)
//!
//! The recorder is process-global (the `metrics` facade has one global recorder): every
//! gateway in a process renders the same registry, with the idle timeout of the first. When another recorder was installed first,
//! `/metrics` stays empty (with a warning in the log).

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use pin_project::{pin_project, pinned_drop};
use tokio::time::Instant;
use tower_llm::config::ModelPattern;
pub use tower_llm::core::stream::metrics::LATENCY_BUCKETS;
use tower_llm::fallback::metrics::CooldownGauges;

use crate::server::GatewayStack;

/// Counter `tower_llm_gateway_requests_total{outcome, fallback, status, client}`: chat requests
/// answered.
pub const REQUESTS_TOTAL: &str = "tower_llm_gateway_requests_total";
/// Histogram (seconds) `tower_llm_gateway_request_duration_seconds{route, outcome}`: chat
/// requests from their arrival to the end of the answer's body.
pub const REQUEST_DURATION_SECONDS: &str = "tower_llm_gateway_request_duration_seconds";
/// The `route` of a request no route serves (no or an invalid `model`, no matching route, a body
/// that could not be read).
pub const ROUTE_NONE: &str = "none";

/// Every metric name of this crate.
pub const ALL: [&str; 2] = [REQUESTS_TOTAL, REQUEST_DURATION_SECONDS];

/// Every histogram `/metrics` shows, each exported with [`LATENCY_BUCKETS`].
pub const HISTOGRAMS: [&str; 5] = [
    REQUEST_DURATION_SECONDS,
    tower_llm::fallback::metrics::ATTEMPT_DURATION_SECONDS,
    tower_llm::core::stream::metrics::FIRST_EVENT_SECONDS,
    tower_llm::core::stream::metrics::DURATION_SECONDS,
    tower_llm::bulkhead::metrics::WAIT_SECONDS,
];

/// The process-wide Prometheus recorder, installed as the global `metrics` recorder on the first
/// call, keeping every series (the default of `[gateway] metrics_idle_timeout_ms`); later calls
/// return a handle to the same registry.
pub fn prometheus_handle() -> PrometheusHandle {
    prometheus_handle_with_idle_timeout(None)
}

/// As [`prometheus_handle`], with series not updated for `idle_timeout` dropped from the
/// registry (`None`: kept forever). Only the first call of the process installs the recorder:
/// later calls return its handle whatever their timeout.
pub fn prometheus_handle_with_idle_timeout(idle_timeout: Option<Duration>) -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let keeps = idle_timeout.is_none();
            let base = || PrometheusBuilder::new().idle_timeout(MetricKindMask::ALL, idle_timeout);
            let recorder = match with_buckets(base()) {
                Ok(builder) => builder,
                Err(err) => {
                    tracing::warn!(error = %err, "histogram buckets refused; exporting summaries");
                    base()
                }
            }
            .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            } else {
                let _ = KEEPS_EVERY_SERIES.set(keeps);
            }
            handle
        })
        .clone()
}

/// Set when this module installs the global recorder: whether it keeps every series (no idle
/// timeout), so that a handle held across idle periods keeps counting into `/metrics`.
static KEEPS_EVERY_SERIES: OnceLock<bool> = OnceLock::new();

/// One client's `requests_total{outcome="success",fallback="none",status="200",client}`, the
/// series nearly every request counts into: registered on its first use, then held, so the usual
/// answer costs an atomic add instead of building the series' key and looking it up in the
/// registry. Held only when this module's recorder keeps every series: with an idle timeout a
/// held handle would go on counting into a series dropped from `/metrics`, so then every request
/// looks its series up as the other outcomes do.
#[derive(Default)]
pub(crate) struct AnsweredCounter(OnceLock<Option<Counter>>);

impl AnsweredCounter {
    /// Count one plain success of `client` (whose counter this is).
    pub(crate) fn increment(&self, client: &str) {
        let held = self.0.get_or_init(|| {
            KEEPS_EVERY_SERIES
                .get()
                .copied()
                .unwrap_or(false)
                .then(|| answered_counter(client, "success", "none", "200"))
        });
        match held {
            Some(counter) => counter.increment(1),
            None => answered_counter(client, "success", "none", "200").increment(1),
        }
    }
}

/// The `requests_total` series of one outcome (looked up in the registry on each call).
pub(crate) fn answered_counter(
    client: &str,
    outcome: &'static str,
    fallback: &str,
    status: &str,
) -> Counter {
    metrics::counter!(
        REQUESTS_TOTAL,
        "outcome" => outcome,
        "fallback" => fallback.to_owned(),
        "status" => status.to_owned(),
        "client" => client.to_owned()
    )
}

/// Buckets for every histogram of [`HISTOGRAMS`] (without them the exporter renders summaries,
/// which cannot be aggregated across replicas).
fn with_buckets(mut builder: PrometheusBuilder) -> Result<PrometheusBuilder, BuildError> {
    for name in HISTOGRAMS {
        builder =
            builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), &LATENCY_BUCKETS)?;
    }
    Ok(builder)
}

/// The gateway's metrics state: the Prometheus handle, the per-route histograms, and the
/// cooldown gauges refreshed from the stack's health at each render. One `Arc`: cloned with the
/// handlers' state on every request.
#[derive(Clone)]
pub(crate) struct Telemetry(Arc<TelemetryInner>);

struct TelemetryInner {
    handle: PrometheusHandle,
    stack: GatewayStack,
    routes: RouteMetrics,
    cooldowns: Mutex<CooldownGauges>,
}

impl Telemetry {
    /// Register the route histograms of `stack`'s routes (the recorder must be installed).
    pub(crate) fn new(handle: PrometheusHandle, stack: &GatewayStack) -> Self {
        Telemetry(Arc::new(TelemetryInner {
            handle,
            routes: RouteMetrics::new(&stack.route_patterns()),
            stack: stack.clone(),
            cooldowns: Mutex::default(),
        }))
    }

    /// The Prometheus text, with the cooldown gauges set from the stack's health now.
    pub(crate) fn render(&self) -> String {
        let health = self.0.stack.health();
        self.0
            .cooldowns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(
                health
                    .targets
                    .iter()
                    .map(|t| (t.name.as_str(), t.available, t.cooldown.as_ref())),
            );
        self.0.handle.render()
    }

    /// The exporter's periodic upkeep.
    pub(crate) fn run_upkeep(&self) {
        self.0.handle.run_upkeep();
    }

    pub(crate) fn routes(&self) -> &RouteMetrics {
        &self.0.routes
    }
}

/// The request-duration histograms of each route, registered once.
pub(crate) struct RouteMetrics {
    routes: Vec<(ModelPattern, RouteHistograms)>,
    none: RouteHistograms,
}

/// One route's `success` and `failure` histograms.
#[derive(Clone)]
pub(crate) struct RouteHistograms {
    success: Histogram,
    failure: Histogram,
    /// The route's pattern (`none` for requests no route serves), for the request's span.
    name: Arc<str>,
}

impl RouteHistograms {
    fn register(route: &str) -> Self {
        let route: Arc<str> = Arc::from(route);
        let histogram = |outcome: &'static str| {
            metrics::histogram!(
                REQUEST_DURATION_SECONDS,
                "route" => Arc::clone(&route),
                "outcome" => outcome
            )
        };
        RouteHistograms {
            success: histogram("success"),
            failure: histogram("failure"),
            name: route,
        }
    }

    /// The route's pattern, or `none`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Record a request answered with `status` that took `took`.
    pub(crate) fn record(&self, status: StatusCode, took: Duration) {
        let histogram = if status.is_success() {
            &self.success
        } else {
            &self.failure
        };
        histogram.record(took.as_secs_f64());
    }
}

/// The `model` of a chat request `body` (escapes decoded; the rest skipped,
/// [`request_model`](tower_llm::core::openai::request_model)): `None` when the body is not a
/// JSON object with a string `model`. Read once per request: the route metrics, the request span
/// and the stack ([`call_buffered`](tower_llm::Stack::call_buffered)) all use it.
pub(crate) fn requested_model(body: &[u8]) -> Option<Cow<'_, str>> {
    tower_llm::core::openai::request_model(body).ok().flatten()
}

impl RouteMetrics {
    fn new(patterns: &[String]) -> Self {
        RouteMetrics {
            // The configuration was validated: every pattern compiles.
            routes: patterns
                .iter()
                .filter_map(|p| Some((ModelPattern::new(p).ok()?, RouteHistograms::register(p))))
                .collect(),
            none: RouteHistograms::register(ROUTE_NONE),
        }
    }

    /// The histograms of the route that serves `model` (the first whose pattern matches it, as
    /// the stack routes), or of requests no route serves.
    pub(crate) fn for_model(&self, model: Option<&str>) -> &RouteHistograms {
        model
            .and_then(|model| {
                self.routes
                    .iter()
                    .find(|(pattern, _)| pattern.matches(model))
            })
            .map_or(&self.none, |(_, histograms)| histograms)
    }

    /// The histograms of requests no route serves.
    pub(crate) fn none(&self) -> &RouteHistograms {
        &self.none
    }
}

/// A response body that records its request's duration when it is dropped: at its end, or when
/// the client goes away.
#[pin_project(PinnedDrop)]
pub(crate) struct TimedBody<B> {
    #[pin]
    inner: B,
    histograms: RouteHistograms,
    status: StatusCode,
    started: Instant,
}

impl<B> TimedBody<B> {
    pub(crate) fn new(
        inner: B,
        histograms: RouteHistograms,
        status: StatusCode,
        started: Instant,
    ) -> Self {
        TimedBody {
            inner,
            histograms,
            status,
            started,
        }
    }
}

#[pinned_drop]
impl<B> PinnedDrop for TimedBody<B> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        this.histograms.record(
            *this.status,
            Instant::now().saturating_duration_since(*this.started),
        );
    }
}

impl<B: Body<Data = Bytes>> Body for TimedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_s_model_picks_the_first_matching_route_or_none() {
        let routes = RouteMetrics::new(&["gpt-4o*".to_owned(), "*".to_owned()]);
        let first: *const RouteHistograms = &routes.routes[0].1;
        let catch_all: *const RouteHistograms = &routes.routes[1].1;
        let none: *const RouteHistograms = routes.none();
        let of = |body: &[u8]| {
            routes.for_model(requested_model(body).as_deref()) as *const RouteHistograms
        };
        assert_eq!(of(br#"{"messages":[],"model":"gpt-4o-mini"}"#), first);
        assert_eq!(of(br#"{"model":"gpt-4\u006f"}"#), first, "escaped");
        assert_eq!(of(br#"{"model":"llama"}"#), catch_all);
        assert_eq!(of(br#"{"messages":[]}"#), none);
        assert_eq!(of(br#"{"model":7}"#), none);
        assert_eq!(of(b"not json"), none);
    }
}
