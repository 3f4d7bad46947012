//! Retries commit only after the first SSE event (issue 7): with core's `StreamGuardLayer`
//! innermost, a 200 whose stream starts with an error event, or never starts within the TTFT
//! limit, is an attempt failure the retry layer acts on; once an event arrived, it never retries.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_chaos::{Fault, MockUpstream, CANONICAL_ANSWER};
use tower_llm_core::{InspectErrorBodyLayer, StreamGuardLayer};
use tower_llm_retry::RetryLayer;

fn stream_request(upstream: &MockUpstream) -> Request<Full<Bytes>> {
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    Request::post(upstream.completions_url())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn content(body: &[u8]) -> String {
    let text = std::str::from_utf8(body).unwrap();
    let mut out = String::new();
    for data in text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(data) {
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                out.push_str(c);
            }
        }
    }
    out
}

async fn run(first: Fault, ttft: Duration) -> (MockUpstream, Bytes) {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::Healthy)
        .start()
        .await
        .unwrap();
    // The first attempt gets `first`; every later one is healthy.
    upstream.set_default_fault(first);
    let handle = upstream.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::builder().seed(7).build().unwrap())
        .map_result(move |r| {
            handle.set_default_fault(Fault::Healthy);
            r
        })
        .layer(StreamGuardLayer::builder().ttft(ttft).build().unwrap())
        .layer(InspectErrorBodyLayer::new())
        .service(client);
    let res = svc.oneshot(stream_request(&upstream)).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (upstream, body)
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_starts_with_an_error_event_is_retried() {
    let (upstream, body) = run(Fault::FirstEventError, Duration::from_secs(10)).await;
    assert_eq!(upstream.attempt_count(), 2);
    assert_eq!(content(&body), CANONICAL_ANSWER);
    assert!(body.ends_with(b"data: [DONE]\n\n"));
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_never_starts_is_retried_after_the_ttft_limit() {
    let (upstream, body) = run(
        Fault::SlowFirstToken(Duration::from_secs(60)),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(upstream.attempt_count(), 2);
    let attempts = upstream.attempts();
    assert!(attempts[1].at - attempts[0].at >= Duration::from_secs(2));
    assert_eq!(content(&body), CANONICAL_ANSWER);
}

#[tokio::test(start_paused = true)]
async fn a_committed_stream_is_never_retried_even_when_cut() {
    let (upstream, body) = run(Fault::CutAfter(3), Duration::from_secs(10)).await;
    assert_eq!(
        upstream.attempt_count(),
        1,
        "after the first event there is no retry"
    );
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains("data: {\"error\""));
    assert!(!text.contains("[DONE]"));
}
