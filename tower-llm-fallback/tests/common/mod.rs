//! Shared plumbing of the loopback tests: the real client stack and small request helpers.
#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_chaos::canonical;
use tower_llm_chaos::{Attempt, MockUpstream};
use tower_llm_core::{
    BoxError, BufferRequestBody, BufferRequestBodyLayer, InspectErrorBody, InspectErrorBodyLayer,
    ReplayBody, StreamGuard, StreamGuardLayer,
};
use tower_llm_fallback::{Fallback, FallbackBody, FallbackLayer, FallbackReport};

/// The client every test uses: hyper-util's legacy client.
pub type HttpClient = Client<HttpConnector, ReplayBody<Full<Bytes>>>;

/// Buffer → fallback → inspect error bodies → client: the stack the crate docs recommend.
pub type Stack = BufferRequestBody<Fallback<InspectErrorBody<HttpClient>>>;

/// The response body the stack returns.
pub type Body = FallbackBody<ReplayBody<Incoming>>;

pub fn stack(layer: FallbackLayer) -> Stack {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    ServiceBuilder::new()
        .layer(BufferRequestBodyLayer::default())
        .layer(layer)
        .layer(InspectErrorBodyLayer::new())
        .service(client)
}

/// Buffer → fallback → core's stream guard (its defaults) → inspect error bodies → client.
pub type GuardedStack = BufferRequestBody<Fallback<StreamGuard<InspectErrorBody<HttpClient>>>>;

/// [`stack`] with the stream guard below the chain (it checks answers and records their usage
/// on the attempt's span).
pub fn guarded_stack(layer: FallbackLayer) -> GuardedStack {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    ServiceBuilder::new()
        .layer(BufferRequestBodyLayer::default())
        .layer(layer)
        .layer(StreamGuardLayer::new())
        .layer(InspectErrorBodyLayer::new())
        .service(client)
}

pub const PROMPT: &str = "Say something reassuring about fallbacks.";

/// A chat request body for `model`.
pub fn chat(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"{PROMPT}"}}],"temperature":0.2,"stream":{stream},"user":"u-1"}}"#
    )
}

/// Send `body` to `url` through `svc`.
pub async fn ask(svc: &Stack, url: &str, body: String) -> Result<Response<Body>, BoxError> {
    let req = Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer caller-key")
        .body(Full::new(Bytes::from(body)))
        .expect("valid request");
    svc.clone().oneshot(req).await
}

/// The response's head, report and whole body.
pub async fn read(res: Response<Body>) -> (http::response::Parts, FallbackReport, Bytes) {
    let (parts, body) = res.into_parts();
    let report = parts
        .extensions
        .get::<FallbackReport>()
        .cloned()
        .expect("every response carries a FallbackReport");
    let bytes = body.collect().await.expect("body reads").to_bytes();
    (parts, report, bytes)
}

/// Header `name` as text.
pub fn header<'a>(parts: &'a http::response::Parts, name: &str) -> &'a str {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The JSON the mock sends for a healthy, non-streaming `attempt` on `model`.
pub fn expected_json(attempt: &Attempt, model: &str) -> Bytes {
    let request: serde_json::Value = serde_json::from_slice(&attempt.body).expect("request JSON");
    canonical::completion_json(attempt.seq, model, canonical::estimate_usage(&request))
}

/// The SSE bytes the mock sends for a healthy, streaming `attempt` on `model`.
pub fn expected_sse(attempt: &Attempt, model: &str) -> Bytes {
    let request: serde_json::Value = serde_json::from_slice(&attempt.body).expect("request JSON");
    let events = canonical::sse_events(attempt.seq, model, canonical::estimate_usage(&request));
    Bytes::from(events.concat())
}

/// The content of an SSE answer, joined.
pub fn sse_content(body: &[u8]) -> String {
    let text = std::str::from_utf8(body).expect("utf-8");
    let mut out = String::new();
    for event in text.split("\n\n") {
        let Some(data) = event.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(data).expect("event JSON");
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            out.push_str(c);
        }
    }
    out
}

/// A mock upstream with every request answered by `fault` unless routed otherwise.
pub async fn mock(fault: tower_llm_chaos::Fault) -> MockUpstream {
    MockUpstream::builder()
        .default_fault(fault)
        .start()
        .await
        .expect("mock upstream starts")
}

/// A unique scratch directory.
pub fn scratch(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tower-llm-fallback-{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
