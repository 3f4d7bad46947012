//! Traces: a span per request and per attempt, the W3C trace context, and the optional OTLP
//! exporter (`[telemetry]`).
//!
//! ```
//! use tower_llm_gateway::GatewayConfig;
//!
//! let config = GatewayConfig::from_toml_str(r#"
//! [telemetry]
//! otlp_endpoint = "http://127.0.0.1:4318"   # an OpenTelemetry collector's OTLP/HTTP port
//! service_name = "llm-gateway"
//! sampling_ratio = 0.25                     # of new traces; a client's sampled flag is followed
//!
//! [[providers]]
//! name = "local"
//! mock = "healthy"
//!
//! [[routes]]
//! match = "*"
//! targets = [{ provider = "local" }]
//! "#).unwrap();
//! assert_eq!(
//!     config.telemetry.traces_endpoint().as_deref(),
//!     Some("http://127.0.0.1:4318/v1/traces")
//! );
//!
//! // Checked when the file is read, naming the key.
//! let err = GatewayConfig::from_toml_str("[telemetry]\nsampling_ratio = 1.5\n").unwrap_err();
//! assert_eq!(err.key(), "telemetry.sampling_ratio");
//! ```
//!
//! **Spans.** Each `POST /v1/chat/completions` runs in a `gateway.request` span (target
//! `tower_llm_gateway::request`, OpenTelemetry kind `server`), open until the answer's body
//! ends or the client goes away. The fallback chain opens one `llm.attempt` span per attempt
//! under it (see [`tower_llm::fallback::trace`]), a continuation of a cut stream included. Both
//! carry the OpenTelemetry GenAI attributes; the request span gets the answering attempt's
//! `gen_ai.response.model` and `gen_ai.usage.*` too ([`GenAiRollup`]).
//!
//! | `gateway.request` field | value |
//! |---|---|
//! | `gen_ai.operation.name` | `chat` |
//! | `gen_ai.request.model` | the `model` the client sent |
//! | `gen_ai.response.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` | from the answering attempt |
//! | `llm.route` | the route pattern that served the request (`none` when none did) |
//! | `llm.client` | the client key's name (`anonymous` without client keys; never the key) |
//! | `llm.target`, `llm.fallback` | who answered, and `none` / `target` / `cache` / `static` |
//! | `http.response.status_code` | the gateway's status; `otel.status_code` = `error` for a 5xx |
//! | `request_id` | the request's `x-request-id` (the client's, or the one the gateway gave it) |
//!
//! It is the chat request's only span (tower-http's `request` span wraps the other routes), and
//! the handler logs tower-http's `finished processing request` event (status, latency) under
//! it at `debug`.
//!
//! **Trace context.** With the exporter on, a client's `traceparent` (and `tracestate`) is
//! continued: the request span is its child. Each upstream attempt carries a `traceparent`
//! naming its own attempt span (set by [`InjectTraceContext`] on the upstream client; it
//! replaces a client's `traceparent` forwarded by `[gateway] forward_request_headers`, so the
//! header is never sent twice). Without the exporter nothing is extracted or injected.
//!
//! **Export.** `[telemetry] otlp_endpoint` turns on OTLP over HTTP/protobuf (the collector's
//! port 4318, plain `http`; `/v1/traces` is appended unless the URL ends with it) through
//! `tracing-opentelemetry`, batched (every `export_interval_ms`, default 5000), sampled
//! parent-based with `sampling_ratio` (default 1.0) for traces that start here. The binary
//! installs it next to its logs ([`cli`](crate::cli)) and flushes it on shutdown; an embedder
//! builds an [`OtlpTraces`] and adds [`OtlpTraces::layer`] to its own subscriber. Unset (the
//! default), there is no exporter, and the spans cost nothing (no subscriber wants them).

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use serde::Deserialize;
use tower::Service;
use tracing::field::Empty;
use tracing::Span;

#[cfg(feature = "otlp")]
mod otlp;
#[cfg(feature = "otlp")]
pub use otlp::{GenAiRollup, OtlpTraces};

/// The `tracing` target of the request spans.
pub const REQUEST_TARGET: &str = "tower_llm_gateway::request";

/// The name of the request spans.
pub const REQUEST_SPAN: &str = "gateway.request";

/// Default `[telemetry] service_name`.
pub const DEFAULT_SERVICE_NAME: &str = "tower-llm-gateway";

/// `[telemetry]`: the optional OTLP trace exporter (off unless `otlp_endpoint` is set).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TelemetrySection {
    /// The collector's OTLP/HTTP URL (`http://host:4318`, or the full `.../v1/traces`); unset
    /// (the default): no exporter. Plain `http` only: a local collector or agent forwards over
    /// TLS.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute (default `tower-llm-gateway`).
    pub service_name: String,
    /// Share of the traces that start at the gateway that are sampled, 0.0 to 1.0 (default
    /// 1.0). A client's `traceparent` decides for its own trace (parent-based).
    pub sampling_ratio: f64,
    /// How often finished spans are sent, in milliseconds (default 5000; at least 1).
    pub export_interval_ms: u64,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            otlp_endpoint: None,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            sampling_ratio: 1.0,
            export_interval_ms: 5000,
        }
    }
}

impl TelemetrySection {
    /// The URL spans are posted to: `otlp_endpoint` with `/v1/traces` appended unless it ends
    /// with it; `None` when the exporter is off.
    pub fn traces_endpoint(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?;
        let base = base.trim_end_matches('/');
        Some(if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        })
    }

    /// The key at fault and why, if the section is not usable.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(endpoint) = &self.otlp_endpoint {
            let uri: http::Uri = endpoint.parse().map_err(|e| {
                (
                    "telemetry.otlp_endpoint",
                    format!("`{endpoint}` is not a URL: {e}"),
                )
            })?;
            if uri.scheme_str() == Some("https") {
                // The exporter's client is plain hyper (no TLS stack of its own).
                return Err((
                    "telemetry.otlp_endpoint",
                    format!(
                        "`{endpoint}`: https is not supported; send to a collector on http:// \
                         (a local OpenTelemetry collector or agent forwards over TLS)"
                    ),
                ));
            }
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err((
                    "telemetry.otlp_endpoint",
                    format!("`{endpoint}` is not an http:// URL with a host"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err((
                "telemetry.sampling_ratio",
                format!("{} is not between 0.0 and 1.0", self.sampling_ratio),
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(("telemetry.service_name", "must not be empty".to_owned()));
        }
        if self.export_interval_ms == 0 {
            return Err((
                "telemetry.export_interval_ms",
                "must be at least 1 (milliseconds)".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A request's span, continuing the client's trace context when the exporter is on; the
/// request id is a field of it, for the log lines of the request.
pub(crate) fn request_span(headers: &HeaderMap, client: &str) -> Span {
    let span = tracing::info_span!(
        target: "tower_llm_gateway::request",
        "gateway.request",
        otel.name = "chat",
        otel.kind = "server",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.request.model = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        http.request.method = "POST",
        http.route = "/v1/chat/completions",
        http.response.status_code = Empty,
        llm.route = Empty,
        llm.client = client,
        llm.target = Empty,
        llm.fallback = Empty,
        // Read only when the span is recorded (the request id layer has set it by now).
        request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    );
    #[cfg(feature = "otlp")]
    otlp::continue_trace(&span, headers);
    #[cfg(not(feature = "otlp"))]
    let _ = headers;
    span
}

/// Record what the request asks for: its model and the route that serves it.
pub(crate) fn record_request(span: &Span, model: Option<&str>, route: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("llm.route", route);
    if let Some(model) = model {
        span.record("gen_ai.request.model", model);
    }
}

/// Record the answer's status and who answered (the `x-llm-target` / `x-llm-fallback` headers).
pub(crate) fn record_answer(span: &Span, status: StatusCode, headers: &HeaderMap) {
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    for (field, header) in [
        ("llm.target", "x-llm-target"),
        ("llm.fallback", "x-llm-fallback"),
    ] {
        if let Some(value) = headers.get(header).and_then(|v| v.to_str().ok()) {
            span.record(field, value);
        }
    }
}

/// A response body read within its request's span, which closes when the body is dropped (at
/// its end, or when the client goes away).
#[pin_project]
pub(crate) struct TracedBody<B> {
    #[pin]
    inner: B,
    span: Span,
}

impl<B> TracedBody<B> {
    pub(crate) fn new(inner: B, span: Span) -> Self {
        TracedBody { inner, span }
    }
}

impl<B: Body> Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The upstream client with a `traceparent` (and `tracestate`) naming the current span (the
/// fallback chain's attempt span) on every request, when the OTLP exporter is on; otherwise
/// the requests pass untouched.
#[derive(Clone, Debug)]
pub struct InjectTraceContext<S> {
    inner: S,
}

impl<S> InjectTraceContext<S> {
    /// Wrap the client `inner`.
    pub fn new(inner: S) -> Self {
        InjectTraceContext { inner }
    }
}

impl<S, B> Service<Request<B>> for InjectTraceContext<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        #[cfg(feature = "otlp")]
        otlp::inject(req.headers_mut());
        #[cfg(not(feature = "otlp"))]
        let _ = &mut req;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path_once() {
        let mut section = TelemetrySection::default();
        assert_eq!(section.traces_endpoint(), None);
        for (given, expected) in [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("http://c/otlp/v1/traces", "http://c/otlp/v1/traces"),
        ] {
            section.otlp_endpoint = Some(given.to_owned());
            assert_eq!(section.traces_endpoint().as_deref(), Some(expected));
            assert!(section.check().is_ok());
        }
    }

    #[test]
    fn bad_sections_name_their_key() {
        let bad = |edit: fn(&mut TelemetrySection)| {
            let mut section = TelemetrySection::default();
            edit(&mut section);
            section.check().unwrap_err().0
        };
        assert_eq!(
            bad(|s| s.otlp_endpoint = Some("collector:4318".into())),
            "telemetry.otlp_endpoint"
        );
        assert_eq!(
            bad(|s| s.otlp_endpoint = Some("ftp://c/".into())),
            "telemetry.otlp_endpoint"
        );
        assert_eq!(
            bad(|s| s.otlp_endpoint = Some("https://collector.example:4318".into())),
            "telemetry.otlp_endpoint"
        );
        assert_eq!(
            bad(|s| s.otlp_endpoint = Some("http://bad host/".into())),
            "telemetry.otlp_endpoint"
        );
        assert_eq!(bad(|s| s.sampling_ratio = -0.1), "telemetry.sampling_ratio");
        assert_eq!(
            bad(|s| s.sampling_ratio = f64::NAN),
            "telemetry.sampling_ratio"
        );
        assert_eq!(
            bad(|s| s.service_name = " ".into()),
            "telemetry.service_name"
        );
        assert_eq!(
            bad(|s| s.export_interval_ms = 0),
            "telemetry.export_interval_ms"
        );
    }
}
