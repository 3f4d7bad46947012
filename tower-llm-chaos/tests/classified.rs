//! The mock's error replies read the way tower-llm-core's classifier expects real providers'
//! to: status, delay headers and provider-shaped bodies, over real loopback HTTP.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::chat_json;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_chaos::{ErrorShape, Fault, MockUpstream};
use tower_llm_core::{Classification, Classify, ErrorKind, HttpClassifier, InspectErrorBodyLayer};

async fn classify(upstream: &MockUpstream, fault: Fault) -> Classification {
    upstream.set_default_fault(fault);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let svc = ServiceBuilder::new()
        .layer(InspectErrorBodyLayer::new())
        .service(client);
    let req = http::Request::post(upstream.completions_url())
        .body(Full::from(chat_json("m", false).to_string()))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    HttpClassifier::default().classify_response(&res)
}

#[tokio::test]
async fn every_error_reply_classifies_as_its_provider_would() {
    let upstream = MockUpstream::builder().start().await.unwrap();
    let secs = Duration::from_secs;
    let cases: Vec<(Fault, ErrorKind, Option<Duration>)> = vec![
        (
            Fault::status(429).retry_after_secs(2),
            ErrorKind::RateLimited,
            Some(secs(2)),
        ),
        (
            Fault::status(429).code("insufficient_quota"),
            ErrorKind::QuotaExhausted,
            None,
        ),
        (
            Fault::status(503).retry_after_ms(1500),
            ErrorKind::Overloaded,
            Some(Duration::from_millis(1500)),
        ),
        (
            Fault::status(529).shape(ErrorShape::Anthropic),
            ErrorKind::Overloaded,
            None,
        ),
        (
            Fault::status(429)
                .shape(ErrorShape::Anthropic)
                .retry_after_secs(9),
            ErrorKind::RateLimited,
            Some(secs(9)),
        ),
        (
            Fault::status(429)
                .shape(ErrorShape::Gemini)
                .retry_after_secs(13),
            ErrorKind::RateLimited,
            Some(secs(13)),
        ),
        (
            Fault::status(498).shape(ErrorShape::Groq),
            ErrorKind::Overloaded,
            None,
        ),
        (
            Fault::status(502).shape(ErrorShape::OpenRouter),
            ErrorKind::ServerError,
            None,
        ),
        (Fault::status(500), ErrorKind::ServerError, None),
        (Fault::status(401), ErrorKind::Auth, None),
        (Fault::ContextLengthExceeded, ErrorKind::ContextLength, None),
        (
            Fault::ContextLengthExceeded.shape(ErrorShape::Anthropic),
            ErrorKind::ContextLength,
            None,
        ),
        (
            Fault::ContextLengthExceeded.shape(ErrorShape::Groq),
            ErrorKind::ContextLength,
            None,
        ),
        (
            Fault::ContentPolicyViolation,
            ErrorKind::ContentPolicy,
            None,
        ),
    ];
    for (fault, kind, retry_after) in cases {
        let text = fault.to_string();
        match classify(&upstream, fault).await {
            Classification::Failure(failure) => {
                assert_eq!(failure.kind, kind, "{text}");
                assert_eq!(failure.retry_after, retry_after, "{text}");
            }
            Classification::Success => panic!("{text}: classified as a success"),
        }
    }
    assert!(classify(&upstream, Fault::Healthy).await.is_success());
}
