//! A rewritten request body goes out with its own `Content-Length` (issue 15, finding 7): over
//! real loopback HTTP, hyper-util's client against the chaos mock, with the caller's
//! `content-length` set for the caller's body.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use tower::ServiceExt;
use tower_llm_chaos::Fault;
use tower_llm_fallback::{FallbackLayer, TargetConfig};

/// Send `body` with a `content-length` that is right for it, as hyper's server and most
/// clients forward it.
async fn ask_with_length(svc: &Stack, url: &str, body: String) -> http::Response<Body> {
    let req = Request::post(url)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body)))
        .expect("valid request");
    svc.clone().oneshot(req).await.expect("an answer")
}

async fn rewritten_to(model: &str) {
    let upstream = mock(Fault::Healthy).await;
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("p", model).base_url(upstream.base_url()))
        .build()
        .unwrap();
    let svc = stack(layer);
    let sent = chat("client-alias-of-medium-length", false);
    let res = ask_with_length(&svc, &upstream.completions_url(), sent).await;
    let (parts, report, _body) = read(res).await;
    assert_eq!(parts.status, 200, "{report:?}");
    assert!(report.attempts.is_empty(), "no failed attempt: {report:?}");
    let attempts = upstream.attempts();
    assert_eq!(attempts.len(), 1);
    let got: serde_json::Value =
        serde_json::from_slice(&attempts[0].body).expect("the upstream got the whole body");
    assert_eq!(got["model"], model);
    assert_eq!(got["messages"][0]["content"], PROMPT);
    assert_eq!(got["user"], "u-1");
}

#[tokio::test]
async fn a_longer_model_name_is_sent_whole() {
    rewritten_to("a-target-model-name-much-longer-than-the-client-alias-it-replaces").await;
}

#[tokio::test]
async fn a_shorter_model_name_is_sent_whole() {
    rewritten_to("m").await;
}
