//! The breaker around a real hyper-util client, over loopback HTTP, against the chaos mock
//! upstream (run on the test's own paused runtime; the clock is held still and moved by hand).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_llm_breaker::{CircuitBreakerLayer, KeyedCircuitBreakerLayer, OpenReason, State};
use tower_llm_chaos::{hold_auto_advance, Fault, MockUpstream, CANONICAL_ANSWER};
use tower_llm_core::{BoxError, BreakerOpen, Target};

type Body = Full<Bytes>;

fn chat(upstream: &MockUpstream, model: &str) -> http::Request<Body> {
    http::Request::post(upstream.completions_url())
        .header("content-type", "application/json")
        .body(Full::from(format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#
        )))
        .unwrap()
}

async fn status<S>(svc: &mut S, req: http::Request<Body>) -> Result<u16, BoxError>
where
    S: Service<
        http::Request<Body>,
        Response = http::Response<hyper::body::Incoming>,
        Error = BoxError,
    >,
{
    let res = svc.ready().await?.call(req).await?;
    let status = res.status().as_u16();
    // Read the body so the connection goes back to the pool.
    let body = res.into_body().collect().await?.to_bytes();
    if status == 200 {
        assert!(String::from_utf8_lossy(&body).contains(CANONICAL_ANSWER));
    }
    Ok(status)
}

#[tokio::test(start_paused = true)]
async fn a_failing_upstream_opens_the_breaker_and_a_recovered_one_closes_it() {
    let _clock = hold_auto_advance();
    let upstream = MockUpstream::builder()
        .default_fault(Fault::status(500))
        .start()
        .await
        .unwrap();
    let layer = CircuitBreakerLayer::builder()
        .name("mock/gpt")
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(5))
        .permitted_calls_in_half_open(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let mut svc = ServiceBuilder::new().layer(layer).service(client);

    for _ in 0..3 {
        assert_eq!(status(&mut svc, chat(&upstream, "gpt")).await.unwrap(), 500);
    }
    assert_eq!(handle.state(), State::Open);
    assert_eq!(upstream.attempt_count(), 3);

    // Open: rejected without reaching the upstream.
    for _ in 0..5 {
        let err = status(&mut svc, chat(&upstream, "gpt")).await.unwrap_err();
        let open = err.downcast_ref::<BreakerOpen>().expect("BreakerOpen");
        assert_eq!(open.breaker(), "mock/gpt");
        assert_eq!(open.retry_after(), Duration::from_secs(5));
    }
    assert_eq!(
        upstream.attempt_count(),
        3,
        "no request reached the upstream while open"
    );

    // Still failing when the breaker probes: it re-opens for twice as long.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(status(&mut svc, chat(&upstream, "gpt")).await.unwrap(), 500);
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.snapshot().reason, Some(OpenReason::ProbeFailed));
    assert_eq!(upstream.attempt_count(), 4);
    let err = status(&mut svc, chat(&upstream, "gpt")).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().unwrap().retry_after(),
        Duration::from_secs(10)
    );

    // The upstream recovers; after the open duration two probes close the breaker.
    upstream.set_default_fault(Fault::Healthy);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(status(&mut svc, chat(&upstream, "gpt")).await.unwrap(), 200);
    assert_eq!(handle.state(), State::HalfOpen);
    assert_eq!(status(&mut svc, chat(&upstream, "gpt")).await.unwrap(), 200);
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(status(&mut svc, chat(&upstream, "gpt")).await.unwrap(), 200);
    assert_eq!(upstream.attempt_count(), 7);
    let faults: Vec<&str> = upstream.attempts().iter().map(|a| a.fault).collect();
    assert_eq!(
        faults,
        ["status", "status", "status", "status", "healthy", "healthy", "healthy"]
    );
}

#[tokio::test(start_paused = true)]
async fn connection_resets_count_and_rate_limits_do_not() {
    let _clock = hold_auto_advance();
    let upstream = MockUpstream::builder()
        .route("gpt-limited", Fault::status(429).retry_after_secs(2))
        .route("gpt-reset", Fault::ResetBeforeHeaders)
        .start()
        .await
        .unwrap();
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let mut svc = ServiceBuilder::new().layer(layer).service(client);

    for _ in 0..6 {
        assert_eq!(
            status(&mut svc, chat(&upstream, "gpt-limited"))
                .await
                .unwrap(),
            429
        );
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.snapshot().ignored, 6);

    for _ in 0..2 {
        let err = status(&mut svc, chat(&upstream, "gpt-reset"))
            .await
            .unwrap_err();
        assert!(
            err.downcast_ref::<hyper_util::client::legacy::Error>()
                .is_some(),
            "{err}"
        );
    }
    assert_eq!(handle.state(), State::Open);
    assert_eq!(
        handle.snapshot().reason,
        Some(OpenReason::ConsecutiveFailures)
    );
    assert_eq!(upstream.attempt_count(), 8);
    assert!(status(&mut svc, chat(&upstream, "gpt-4o")).await.is_err());
    assert_eq!(upstream.attempt_count(), 8);
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_isolate_targets() {
    let _clock = hold_auto_advance();
    let upstream = MockUpstream::builder()
        .route("gpt-bad", Fault::status(503))
        .start()
        .await
        .unwrap();
    let layer = KeyedCircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .build()
        .unwrap();
    let breakers = layer.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let mut svc = ServiceBuilder::new().layer(layer).service(client);
    let request = |model: &str| {
        let mut req = chat(&upstream, model);
        req.extensions_mut().insert(Target::new("mock", model));
        req
    };

    for _ in 0..2 {
        assert_eq!(status(&mut svc, request("gpt-bad")).await.unwrap(), 503);
        assert_eq!(status(&mut svc, request("gpt-good")).await.unwrap(), 200);
    }
    let err = status(&mut svc, request("gpt-bad")).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().unwrap().breaker(),
        "mock/gpt-bad"
    );
    assert_eq!(status(&mut svc, request("gpt-good")).await.unwrap(), 200);
    assert_eq!(upstream.attempt_count(), 5);
    let states: Vec<(String, State)> = breakers
        .snapshots()
        .into_iter()
        .map(|s| (s.name, s.state))
        .collect();
    assert_eq!(
        states,
        [
            ("mock/gpt-bad".to_owned(), State::Open),
            ("mock/gpt-good".to_owned(), State::Closed)
        ]
    );
}
