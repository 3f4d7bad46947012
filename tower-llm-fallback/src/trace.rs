//! Tracing: one span per attempt, named `llm.attempt`, with the OpenTelemetry GenAI attributes.
//!
//! Each attempt the chain makes (a call to one target, a continuation of a cut stream included)
//! runs in its own `tracing` span, a child of the span that was current when the request entered
//! the chain (the caller's request span, if any). The span is entered while the attempt is
//! called and polled, and while its answer's body is read, so the layers below see it as the
//! current span (the stream guard records the answer's token usage on it, the retry layer its
//! delays). It stays open until the answer's body ends or is dropped; a failed attempt's span
//! closes when the chain moves on. Without a subscriber interested in target
//! `tower_llm_fallback::attempt`, the spans are disabled and cost no allocation.
//!
//! | field | value |
//! |---|---|
//! | `gen_ai.operation.name` | `chat` |
//! | `gen_ai.provider.name`, `gen_ai.system` | the target's provider, as configured |
//! | `gen_ai.request.model` | the target's model (absent when the requested model passes through) |
//! | `gen_ai.response.model` | the `model` the answer names (recorded by the stream guard) |
//! | `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` | the answer's `usage` (stream guard; for a stream, at its end) |
//! | `llm.target` | the target's name |
//! | `llm.attempt` | the attempt's number in the request (1 for the first call) |
//! | `llm.resume` | whether the attempt continues a cut stream |
//! | `llm.outcome` | `success`, `failure` (of the target), `refused` (the request is at fault), `rejected` (a layer below refused without calling) |
//! | `error.type`, `llm.error.kind` | the `ErrorKind` ([`tower_llm_core::ErrorKind`]) of a failed attempt or of a stream that failed after commit |
//! | `http.response.status_code` | the upstream's status, when it answered |
//! | `llm.fallback.reason` | on the answering attempt after failed ones: the first failure's kind |
//! | `llm.retry.delay_ms` | the server's delay (`retry-after`) of a failed attempt; the retry layer's last backoff |
//! | `llm.ttft_ms` | for a stream: milliseconds from the attempt's call to its first answer event |
//! | `otel.name`, `otel.kind`, `otel.status_code` | `chat {model}`, `client`, `error` on failure (for `tracing-opentelemetry`) |
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceExt};
//! use tower_llm_core::ReplayBody;
//! use tower_llm_fallback::{FallbackLayer, TargetConfig};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let client = service_fn(|_req: http::Request<ReplayBody<Full<Bytes>>>| async {
//!     // The attempt's span is current here: a client can inject a `traceparent` from it.
//!     let current = tracing::Span::current();
//!     let name = current.metadata().map(|m| m.name());
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
//!         format!("{name:?}"),
//!     ))))
//! });
//! let svc = FallbackLayer::builder()
//!     .target(TargetConfig::new("local", "llama3"))
//!     .build()
//!     .unwrap()
//!     .services([("local/llama3", client)])
//!     .unwrap();
//! // Any subscriber (the gateway's: tracing-opentelemetry's layer on a registry).
//! let _guard = tracing::subscriber::set_default(tracing_subscriber::registry());
//! let req = http::Request::new(ReplayBody::from_bytes(Bytes::from_static(b"{}")));
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "Some(\"llm.attempt\")");
//! # }
//! ```

use std::time::Duration;

use tower_llm_core::ErrorKind;
use tracing::field::Empty;
use tracing::Span;

use crate::target::TargetRuntime;

/// The `tracing` target of the attempt spans (filter on it to turn them on or off).
pub const ATTEMPT_TARGET: &str = "tower_llm_fallback::attempt";

/// The name of the attempt spans.
pub const ATTEMPT_SPAN: &str = "llm.attempt";

/// A new attempt's span: a child of `parent` (or a root when `parent` is disabled).
pub(crate) fn attempt_span(
    parent: &Span,
    target: &TargetRuntime,
    attempt: u32,
    resume: bool,
) -> Span {
    let provider = target.target.provider();
    let model = target.target.model();
    let span = tracing::info_span!(
        target: "tower_llm_fallback::attempt",
        parent: parent,
        "llm.attempt",
        otel.name = Empty,
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = provider,
        gen_ai.system = provider,
        gen_ai.request.model = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        llm.target = &*target.name,
        llm.attempt = i64::from(attempt),
        llm.resume = resume,
        llm.outcome = Empty,
        error.type = Empty,
        llm.error.kind = Empty,
        http.response.status_code = Empty,
        llm.fallback.reason = Empty,
        llm.retry.delay_ms = Empty,
        llm.ttft_ms = Empty,
    );
    if !span.is_disabled() {
        // Formatted only for a span someone records.
        if model.is_empty() {
            span.record("otel.name", "chat");
        } else {
            span.record("gen_ai.request.model", model);
            span.record("otel.name", format!("chat {model}"));
        }
    }
    span
}

/// Record a failed attempt on its span.
pub(crate) fn failed(
    span: &Span,
    outcome: &'static str,
    kind: ErrorKind,
    status: Option<u16>,
    retry_after: Option<Duration>,
) {
    if span.is_disabled() {
        return;
    }
    span.record("llm.outcome", outcome);
    span.record("llm.error.kind", kind.as_str());
    span.record("error.type", kind.as_str());
    if outcome == "failure" {
        span.record("otel.status_code", "error");
    }
    if let Some(status) = status {
        span.record("http.response.status_code", i64::from(status));
    }
    if let Some(delay) = retry_after {
        span.record("llm.retry.delay_ms", millis(delay));
    }
}

/// Record a failure of a committed stream (cut, stalled, in-band error) on its attempt's span.
pub(crate) fn stream_failed(span: &Span, kind: ErrorKind) {
    if span.is_disabled() {
        return;
    }
    span.record("llm.outcome", "failure");
    span.record("llm.error.kind", kind.as_str());
    span.record("error.type", kind.as_str());
    span.record("otel.status_code", "error");
}

/// Whole milliseconds, saturating; signed, as OpenTelemetry integers are (tracing-opentelemetry
/// records a `u64` as a string).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
