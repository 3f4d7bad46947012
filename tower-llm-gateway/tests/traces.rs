//! OTLP traces through a failover (issue 20): an OTLP/HTTP receiver on loopback decodes what the
//! gateway's exporter posts (`ExportTraceServiceRequest`, the OpenTelemetry protobuf types), for
//! a JSON and a streamed request, each with a client `traceparent`, each failing over from a
//! `503` primary to a healthy secondary. Asserted: the client's trace is continued, the attempt
//! spans are children of the request span, the GenAI attributes and token counts, the failed
//! attempt and the answering one, and each upstream call carried one `traceparent` naming its
//! own attempt span (not the client's, although `forward_request_headers` lets the client's
//! through). The subscriber is global to the process: this file holds a single test.

mod gateway_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtelStatus;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tower_llm::core::ErrorKind;
use tower_llm_gateway::telemetry::{OtlpTraces, TelemetrySection};
use tracing_subscriber::prelude::*;

use gateway_support::{chat_request, send, start};

/// Two routes, each failing over from its own `503` primary (so both requests meet a live
/// primary) to the same healthy secondary.
const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"
demo_requests_per_sec = 0
# The client's raw `traceparent` would go upstream too: the attempt's replaces it.
forward_request_headers = ["traceparent"]

[[providers]]
name = "primary-json"
mock = "status:503"

[[providers]]
name = "primary-sse"
mock = "status:503"

[[providers]]
name = "secondary"
mock = "healthy"

[[routes]]
match = "json-*"
targets = [{ provider = "primary-json" }, { provider = "secondary", model = "backup-model" }]

[[routes]]
match = "sse-*"
targets = [{ provider = "primary-sse" }, { provider = "secondary", model = "backup-model" }]
"#;

/// Every span the receiver decoded.
type Received = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP receiver on a free loopback port: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(|State(received): State<Received>, body: Bytes| async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(export) => {
                        let spans = export
                            .resource_spans
                            .into_iter()
                            .flat_map(|r| r.scope_spans)
                            .flat_map(|s| s.spans);
                        received.lock().unwrap().extend(spans);
                        (
                            StatusCode::OK,
                            [("content-type", "application/x-protobuf")],
                            Vec::new(),
                        )
                    }
                    Err(_) => (
                        StatusCode::BAD_REQUEST,
                        [("content-type", "text/plain")],
                        b"not an ExportTraceServiceRequest".to_vec(),
                    ),
                }
            }),
        )
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text<'a>(span: &'a Span, key: &str) -> &'a str {
    match attr(span, key) {
        Some(AnyValue::StringValue(s)) => s,
        other => panic!("{}: {key} is {other:?}", span.name),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(AnyValue::IntValue(n)) => *n,
        other => panic!("{}: {key} is {other:?}", span.name),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of trace `trace_id`, once the request span and `attempts` attempt spans are in.
async fn trace(
    traces: &OtlpTraces,
    received: &Received,
    trace_id: &str,
    attempts: usize,
) -> Vec<Span> {
    for _ in 0..100 {
        traces.flush().await.expect("flush");
        let spans: Vec<Span> = received
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect();
        if spans.len() > attempts {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("trace {trace_id}: the request span and {attempts} attempts never arrived");
}

/// The `traceparent` an upstream attempt carried.
fn sent_traceparent(attempt: &tower_llm_chaos::Attempt) -> String {
    let all: Vec<_> = attempt.headers.get_all("traceparent").iter().collect();
    assert_eq!(all.len(), 1, "one traceparent upstream: {all:?}");
    all[0].to_str().unwrap().to_owned()
}

/// What one request through the failover must have left: returns nothing, asserts everything.
#[allow(clippy::too_many_arguments)]
fn assert_failover_trace(
    spans: &[Span],
    client_trace: &str,
    client_parent: &str,
    model: &str,
    primary: &str,
    stream: bool,
    usage: (i64, i64),
    primary_sent: &str,
    secondary_sent: &str,
) {
    let requests: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(requests.len(), 1, "one request span: {spans:#?}");
    let request = requests[0];
    // The client's trace, continued.
    assert_eq!(hex(&request.trace_id), client_trace);
    assert_eq!(hex(&request.parent_span_id), client_parent);
    assert_eq!(request.name, "chat");
    assert_eq!(text(request, "gen_ai.operation.name"), "chat");
    assert_eq!(text(request, "gen_ai.request.model"), model);
    assert_eq!(text(request, "gen_ai.response.model"), "backup-model");
    assert_eq!(int(request, "gen_ai.usage.input_tokens"), usage.0);
    assert_eq!(int(request, "gen_ai.usage.output_tokens"), usage.1);
    assert_eq!(int(request, "http.response.status_code"), 200);
    assert_eq!(text(request, "llm.target"), "secondary/backup-model");
    assert_eq!(text(request, "llm.fallback"), "target");

    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(attempts.len(), 2, "two attempts: {spans:#?}");
    attempts.sort_by_key(|s| int(s, "llm.attempt"));
    for attempt in &attempts {
        // Children of the request span.
        assert_eq!(attempt.parent_span_id, request.span_id, "{attempt:#?}");
        assert_eq!(text(attempt, "gen_ai.operation.name"), "chat");
        assert_eq!(
            text(attempt, "gen_ai.system"),
            text(attempt, "gen_ai.provider.name")
        );
    }
    let (failed, answered) = (attempts[0], attempts[1]);
    assert_eq!(int(failed, "llm.attempt"), 1);
    assert_eq!(text(failed, "gen_ai.provider.name"), primary);
    assert_eq!(text(failed, "llm.target"), format!("{primary}/{model}"));
    assert_eq!(text(failed, "llm.outcome"), "failure");
    assert_eq!(text(failed, "error.type"), ErrorKind::Overloaded.as_str());
    assert_eq!(int(failed, "http.response.status_code"), 503);
    assert_eq!(
        failed.status.as_ref().map(|s| s.code),
        Some(OtelStatus::Error as i32)
    );
    assert!(attr(failed, "gen_ai.usage.output_tokens").is_none());

    assert_eq!(int(answered, "llm.attempt"), 2);
    assert_eq!(answered.name, "chat backup-model");
    assert_eq!(text(answered, "gen_ai.provider.name"), "secondary");
    assert_eq!(text(answered, "gen_ai.request.model"), "backup-model");
    assert_eq!(text(answered, "gen_ai.response.model"), "backup-model");
    assert_eq!(text(answered, "llm.outcome"), "success");
    assert_eq!(
        text(answered, "llm.fallback.reason"),
        ErrorKind::Overloaded.as_str()
    );
    assert_eq!(int(answered, "gen_ai.usage.input_tokens"), usage.0);
    assert_eq!(int(answered, "gen_ai.usage.output_tokens"), usage.1);
    assert_eq!(attr(answered, "llm.ttft_ms").is_some(), stream);
    // The answering attempt stays open until the body ends: it ends after its first token.
    assert!(answered.end_time_unix_nano >= answered.start_time_unix_nano);
    assert!(request.end_time_unix_nano >= answered.end_time_unix_nano);

    // Each upstream call named its own attempt span, in the client's trace.
    assert_eq!(
        primary_sent,
        format!("00-{client_trace}-{}-01", hex(&failed.span_id))
    );
    assert_eq!(
        secondary_sent,
        format!("00-{client_trace}-{}-01", hex(&answered.span_id))
    );
}

/// The usage the mock reported in an answer: a JSON body's, or a stream's usage chunk's.
fn usage_of(body: &str) -> (i64, i64) {
    let json: serde_json::Value = if body.starts_with('{') {
        serde_json::from_str(body).unwrap()
    } else {
        body.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .find(|v| v["usage"].is_object())
            .expect("a usage chunk")
    };
    (
        json["usage"]["prompt_tokens"].as_i64().unwrap(),
        json["usage"]["completion_tokens"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_streamed_failovers_are_exported_as_one_trace_each_with_genai_attributes() {
    let (endpoint, received) = receiver().await;
    let mut section = TelemetrySection::default();
    section.otlp_endpoint = Some(endpoint);
    section.service_name = "gateway-under-test".to_owned();
    section.export_interval_ms = 50;
    let traces = OtlpTraces::start(&section).unwrap().expect("an exporter");
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(traces.layer()))
        .unwrap();

    let gw = start(CONFIG).await;
    let cases = [
        (
            "json-model",
            "primary-json",
            false,
            "0af7651916cd43dd8448eb211c80319c",
            "b7ad6b7169203331",
        ),
        (
            "sse-model",
            "primary-sse",
            true,
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
        ),
    ];
    for (model, primary, stream, trace_id, parent) in cases {
        let traceparent = format!("00-{trace_id}-{parent}-01");
        let headers = [
            ("traceparent", traceparent.as_str()),
            ("tracestate", "vendor=abc"),
        ];
        let reply = send(&gw, chat_request(&gw, model, stream, &headers)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("x-llm-fallback"), Some("target"));
        let usage = usage_of(reply.text());

        let spans = trace(&traces, &received, trace_id, 2).await;
        let primary_attempts = gw.mock(primary).unwrap().attempts();
        assert_eq!(primary_attempts.len(), 1);
        let secondary_attempts = gw.mock("secondary").unwrap().attempts();
        let secondary = secondary_attempts.last().expect("the secondary answered");
        // The client's tracestate goes on with the trace (not forwarded raw: injected).
        assert_eq!(
            secondary
                .headers
                .get("tracestate")
                .map(|v| v.to_str().unwrap()),
            Some("vendor=abc")
        );
        assert_failover_trace(
            &spans,
            trace_id,
            parent,
            model,
            primary,
            stream,
            usage,
            &sent_traceparent(&primary_attempts[0]),
            &sent_traceparent(secondary),
        );
    }
    traces.shutdown().await.expect("shutdown flushes");
    gw.shutdown().await.unwrap();
}
