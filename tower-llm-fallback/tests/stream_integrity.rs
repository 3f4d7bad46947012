//! Streaming integrity through the chain (issue 7): with core's `StreamGuardLayer` innermost, a
//! stream that never starts fails over within the TTFT limit, and a stream cut after commit ends
//! with an error event (never a silent truncation) and benches the target that cut it; with
//! resumption on (the default, issue 17) the cut stream is finished on the secondary instead,
//! and the primary is benched all the same.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::ServiceBuilder;
use tower_llm_chaos::{Fault, CANONICAL_ANSWER};
use tower_llm_core::{
    BufferRequestBodyLayer, ErrorKind, InspectErrorBodyLayer, ReplayBody, StreamGuardLayer,
};
use tower_llm_fallback::{
    FallbackKind, FallbackLayer, FallbackLayerBuilder, OverallHealth, ResumeConfig, TargetConfig,
};

/// The response's head, report and whole body, whatever the body type.
async fn read_any<B>(
    res: http::Response<B>,
) -> (
    http::response::Parts,
    tower_llm_fallback::FallbackReport,
    Bytes,
)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = res.into_parts();
    let report = parts.extensions.get().cloned().expect("a FallbackReport");
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    (parts, report, bytes)
}

fn layer(primary: &str, secondary: &str) -> FallbackLayer {
    layer_with(primary, secondary, ResumeConfig::default())
}

fn layer_with(primary: &str, secondary: &str, resume: ResumeConfig) -> FallbackLayer {
    chain(primary, secondary).resume(resume).build().unwrap()
}

/// Two targets, `primary` then `secondary`, to finish building.
fn chain(primary: &str, secondary: &str) -> FallbackLayerBuilder {
    FallbackLayer::builder()
        .target(
            TargetConfig::new("provider-a", "model-a")
                .name("primary")
                .base_url(primary),
        )
        .target(
            TargetConfig::new("provider-b", "model-b")
                .name("secondary")
                .base_url(secondary),
        )
}

/// A streamed chat request to `url`.
fn stream_request(url: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("alias", true))))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_cut_stream_ends_with_an_error_event_and_benches_its_target() {
    let a = mock(Fault::CutAfter(4)).await;
    let b = mock(Fault::Healthy).await;
    let fallback = layer_with(&a.base_url(), &b.base_url(), ResumeConfig::off());
    let handle = fallback.handle();
    let svc = guarded_stack(fallback);

    // Committed to the primary after its first event; then it is cut.
    let req = stream_request(&a.completions_url());
    let res = tower::ServiceExt::oneshot(svc.clone(), req).await.unwrap();
    assert_eq!(res.headers()["x-llm-target"], "primary");
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(
        !text.contains("[DONE]"),
        "a cut stream never ends like a whole one"
    );
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("data: {\"error\""), "{last}");
    // The four events that did arrive are the first four canonical tokens.
    let partial = sse_content(text.split("data: {\"error\"").next().unwrap().as_bytes());
    assert!(CANONICAL_ANSWER.starts_with(&partial) && partial.len() < CANONICAL_ANSWER.len());

    // The primary is benched for the cut: the next stream goes straight to the secondary.
    let health = handle.health();
    assert_eq!(health.status, OverallHealth::Degraded);
    let primary = health.target("primary").unwrap();
    assert!(!primary.available);
    assert_eq!(
        primary.last_error.as_ref().unwrap().kind,
        ErrorKind::InvalidResponse
    );
    let req = stream_request(&a.completions_url());
    let (parts, report, body) = read_any(tower::ServiceExt::oneshot(svc, req).await.unwrap()).await;
    assert_eq!(header(&parts, "x-llm-target"), "secondary");
    assert_eq!(report.fallback, FallbackKind::Target);
    assert_eq!(sse_content(&body), CANONICAL_ANSWER);
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(a.attempt_count(), 1, "the benched primary was skipped");
}

/// The same cut with resumption on: the caller reads the whole answer once (the replay on the
/// secondary spliced in), and the primary is benched for the cut all the same.
#[tokio::test(start_paused = true)]
async fn a_cut_stream_is_resumed_on_the_secondary_and_benches_its_target() {
    let a = mock(Fault::CutAfter(4)).await;
    let b = mock(Fault::Healthy).await;
    let fallback = layer(&a.base_url(), &b.base_url());
    let handle = fallback.handle();
    let svc = guarded_stack(fallback);
    let req = stream_request(&a.completions_url());
    let res = tower::ServiceExt::oneshot(svc, req).await.unwrap();
    assert_eq!(res.headers()["x-llm-target"], "primary");
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(sse_content(&body), CANONICAL_ANSWER);
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    let text = std::str::from_utf8(&body).unwrap();
    assert_eq!(text.matches("[DONE]").count(), 1);
    assert!(!text.contains("\"error\""), "{text}");
    assert!(text.contains(": resumed on secondary\n\n"), "{text}");
    let health = handle.health();
    let primary = health.target("primary").unwrap();
    assert!(!primary.available);
    assert_eq!(
        primary.last_error.as_ref().unwrap().kind,
        ErrorKind::InvalidResponse
    );
    assert_eq!(health.target("secondary").unwrap().failures, 0);
    assert_eq!((a.attempt_count(), b.attempt_count()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_token_fails_over_within_the_ttft_limit() {
    let a = mock(Fault::SlowFirstToken(Duration::from_secs(60))).await;
    let b = mock(Fault::Healthy).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    let svc = ServiceBuilder::new()
        .layer(BufferRequestBodyLayer::default())
        .layer(layer(&a.base_url(), &b.base_url()))
        .layer(
            StreamGuardLayer::builder()
                .ttft(Duration::from_secs(2))
                .build()
                .unwrap(),
        )
        .layer(InspectErrorBodyLayer::new())
        .service(client);
    let start = Instant::now();
    let req = stream_request(&a.completions_url());
    let (parts, report, body) = read_any(tower::ServiceExt::oneshot(svc, req).await.unwrap()).await;
    let took = start.elapsed();
    assert_eq!(header(&parts, "x-llm-target"), "secondary");
    assert_eq!(report.attempts[0].kind, ErrorKind::Timeout);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(sse_content(&body), CANONICAL_ANSWER);
    assert!(body.ends_with(b"data: [DONE]\n\n"));
}

/// A cut stream is resumed with the report turned off too: the continuation's target is named
/// from its `x-llm-target` header.
#[tokio::test(start_paused = true)]
async fn a_cut_stream_is_resumed_without_the_report() {
    let a = mock(Fault::CutAfter(4)).await;
    let b = mock(Fault::Healthy).await;
    let fallback = chain(&a.base_url(), &b.base_url())
        .report_extension(false)
        .build()
        .unwrap();
    let svc = guarded_stack(fallback);
    let req = stream_request(&a.completions_url());
    let res = tower::ServiceExt::oneshot(svc, req).await.unwrap();
    assert_eq!(res.headers()["x-llm-target"], "primary");
    assert!(res
        .extensions()
        .get::<tower_llm_fallback::FallbackReport>()
        .is_none());
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(sse_content(&body), CANONICAL_ANSWER);
    let text = std::str::from_utf8(&body).unwrap();
    assert_eq!(text.matches("[DONE]").count(), 1);
    assert!(text.contains(": resumed on secondary\n\n"), "{text}");
}
