//! A committed stream is judged by how it ends, not by its 200: streams cut mid-answer open the
//! breaker, complete streams keep it closed, and a body the client drops counts for nothing.
//! Real loopback HTTP against the chaos mock upstream, with core's `StreamGuardLayer` below.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_llm_breaker::{BreakerHandle, CircuitBreakerLayer, State};
use tower_llm_chaos::{Fault, MockUpstream};
use tower_llm_core::{BoxError, InspectErrorBodyLayer, StreamGuardLayer};

type Body = Full<Bytes>;

fn stream_request(upstream: &MockUpstream, model: &str) -> http::Request<Body> {
    http::Request::post(upstream.completions_url())
        .header("content-type", "application/json")
        .body(Full::from(format!(
            r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#
        )))
        .unwrap()
}

/// Breaker (3 consecutive failures) → stream guard → error-body inspection → hyper-util client.
fn guarded_breaker() -> (
    BreakerHandle,
    impl Service<
        http::Request<Body>,
        Response = http::Response<impl hyper::body::Body<Data = Bytes, Error = BoxError>>,
        Error = BoxError,
    >,
) {
    let layer = CircuitBreakerLayer::builder()
        .name("mock/stream")
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(5))
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .layer(StreamGuardLayer::new())
        .layer(InspectErrorBodyLayer::new())
        .service(client);
    (handle, svc)
}

#[tokio::test(start_paused = true)]
async fn cut_streams_open_the_breaker_complete_ones_do_not() {
    let upstream = MockUpstream::builder()
        .route("cut", Fault::CutAfter(3))
        .start()
        .await
        .unwrap();
    let (handle, mut svc) = guarded_breaker();

    // Complete streams: recorded as successes once they end.
    for _ in 0..3 {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(stream_request(&upstream, "ok"))
            .await
            .unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.ends_with(b"data: [DONE]\n\n"));
    }
    assert_eq!(handle.counts().successes(), 3);
    assert_eq!(handle.state(), State::Closed);

    // Cut streams: the 200 arrives, then the stream dies; each is one failure.
    for i in 0..3 {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(stream_request(&upstream, "cut"))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        // Until the body ends, nothing is recorded for this call.
        assert_eq!(handle.state(), State::Closed, "call {i}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("\"error\""), "{text}");
        assert!(!text.contains("[DONE]"));
    }
    assert_eq!(handle.state(), State::Open);
    assert_eq!(upstream.attempt_count(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_stream_the_client_drops_counts_for_nothing() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::Stall { after: 2 })
        .start()
        .await
        .unwrap();
    let (handle, mut svc) = guarded_breaker();

    for _ in 0..5 {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(stream_request(&upstream, "m"))
            .await
            .unwrap();
        let mut body = res.into_body();
        // Read the first event, then walk away.
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(body);
    }
    let counts = handle.counts();
    assert_eq!(counts.successes(), 0);
    assert_eq!(counts.failures, 0);
    assert_eq!(handle.state(), State::Closed);
}
