//! Composition: an axum app whose handlers share one tower-llm stack. Clones share breaker
//! state: failures seen through one handler open the breaker for the other.

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_llm::breaker::{CircuitBreakerConfig, CircuitBreakerLayer, State as BreakerState};
use tower_llm::core::{BoxError, BreakerOpen, ReplayBody};
use tower_llm::ServiceBuilderExt;
use tower_llm_chaos::{Fault, FaultProfile, MockUpstream};

async fn call<S>(State((stack, url)): State<(S, String)>, body: Bytes) -> StatusCode
where
    S: Service<
            http::Request<Full<Bytes>>,
            Response = http::Response<ReplayBody<hyper::body::Incoming>>,
            Error = BoxError,
        > + Clone,
{
    let req = http::Request::post(url).body(Full::new(body)).unwrap();
    match stack.oneshot(req).await {
        Ok(res) => res.status(),
        Err(e) if e.downcast_ref::<BreakerOpen>().is_some() => StatusCode::SERVICE_UNAVAILABLE,
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

#[tokio::test]
async fn handlers_share_one_breaker() {
    let upstream = MockUpstream::start(FaultProfile::new(Fault::status(503)))
        .await
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    let breaker = CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder()
            .name("upstream")
            .consecutive_failures(3)
            .build()
            .unwrap(),
    );
    let handle = breaker.handle().clone();
    let stack = ServiceBuilder::new()
        .buffer_request_body(1 << 20)
        .circuit_breaker(breaker)
        .inspect_error_body()
        .service(client);
    let state = (stack, upstream.completions_url());
    let app = Router::new()
        .route("/a", post(call))
        .route("/b", post(call))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let post = |path: &str| {
        http::Request::post(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::from_static(
                br#"{"model":"gpt-4o","messages":[]}"#,
            )))
            .unwrap()
    };
    for _ in 0..3 {
        let res = http.request(post("/a")).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let _ = res.into_body().collect().await;
    }
    assert_eq!(handle.state(), BreakerState::Open);
    assert_eq!(upstream.attempt_count(), 3);

    // Handler b has its own clone of the stack, and the same breaker: rejected without a call.
    let res = http.request(post("/b")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.attempt_count(), 3);
    assert_eq!(handle.snapshot().not_permitted, 1);
    server.abort();
}
