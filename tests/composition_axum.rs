//! Composition: an axum app whose handlers share ONE tower-llm stack — breaker → retry →
//! bulkhead around a hyper-util client pointed at the chaos mock upstream — cloned into the
//! router's state. Every clone shares the breaker, the retry budget and the bulkhead's permits:
//! what one route does to the upstream, every other route sees. Real loopback HTTP on both
//! sides (client → axum app → mock upstream), paused time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_llm::breaker::{
    BreakerHandle, BreakerSnapshot, CircuitBreakerLayer, OpenReason, State as BreakerState,
};
use tower_llm::bulkhead::{AllCalls, BulkheadHandle, BulkheadLayer};
use tower_llm::core::{BoxError, BreakerOpen, BulkheadFull, InspectErrorBodyLayer};
use tower_llm::retry::{Backoff, RetryAttempts, RetryBudget, RetryLayer};
use tower_llm::ServiceBuilderExt;
use tower_llm_chaos::{hold_auto_advance, Fault, MockUpstream, CANONICAL_ANSWER};

/// The one upstream stack every handler holds a clone of, type-erased as an app would store it.
type Upstream = BoxCloneSyncService<http::Request<Full<Bytes>>, http::Response<Body>, BoxError>;

#[derive(Clone)]
struct App {
    upstream: Upstream,
    completions: http::Uri,
    breaker: BreakerHandle,
}

/// `POST /v1/chat/completions`: a pass-through proxy to the upstream.
async fn proxy(State(app): State<App>, body: Bytes) -> Response {
    let req = upstream_request(&app, body);
    match app.upstream.oneshot(req).await {
        Ok(res) => {
            let attempts = attempt_headers(res.extensions().get::<RetryAttempts>());
            let (mut parts, body) = res.into_parts();
            parts.headers.extend(attempts);
            Response::from_parts(parts, body)
        }
        Err(err) => error_response(&err),
    }
}

/// `POST /summarize`: another handler with its own request shape, through the same stack.
async fn summarize(State(app): State<App>, text: String) -> Response {
    let chat = json!({
        "model": "summarizer",
        "messages": [{"role": "user", "content": format!("Summarize: {text}")}],
    });
    let req = upstream_request(&app, Bytes::from(chat.to_string()));
    let res = match app.upstream.oneshot(req).await {
        Ok(res) => res,
        Err(err) => return error_response(&err),
    };
    let attempts = attempt_headers(res.extensions().get::<RetryAttempts>());
    let status = res.status();
    let body = match res.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return (StatusCode::BAD_GATEWAY, "upstream body failed").into_response(),
    };
    if !status.is_success() {
        return (
            StatusCode::BAD_GATEWAY,
            attempts,
            format!("upstream answered {status}"),
        )
            .into_response();
    }
    let summary = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_owned)
    });
    match summary {
        Some(summary) => (attempts, summary).into_response(),
        None => (StatusCode::BAD_GATEWAY, "upstream answer unreadable").into_response(),
    }
}

/// `GET /breaker`: the shared breaker, as the app's health endpoint would show it.
async fn breaker_status(State(app): State<App>) -> Json<BreakerSnapshot> {
    Json(app.breaker.snapshot())
}

fn upstream_request(app: &App, body: Bytes) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::new(Full::new(body));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = app.completions.clone();
    req.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    req
}

/// `x-failed-attempts` and `x-retry-stopped` from the retry layer's log, when attempts failed.
fn attempt_headers(log: Option<&RetryAttempts>) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if let Some(log) = log {
        headers.insert("x-failed-attempts", HeaderValue::from(log.attempts().len()));
        if let Some(stopped) = log.stopped() {
            headers.insert(
                "x-retry-stopped",
                HeaderValue::from_static(stopped.as_str()),
            );
        }
    }
    headers
}

/// What the app answers when the stack refused or failed the call.
fn error_response(err: &BoxError) -> Response {
    let (status, kind, retry_after) = if let Some(open) = err.downcast_ref::<BreakerOpen>() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "breaker_open",
            Some(open.retry_after()),
        )
    } else if let Some(full) = err.downcast_ref::<BulkheadFull>() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "bulkhead_full",
            full.retry_after(),
        )
    } else {
        (StatusCode::BAD_GATEWAY, "upstream_error", None)
    };
    let mut res = (
        status,
        Json(json!({"error": {"type": kind, "message": err.to_string()}})),
    )
        .into_response();
    if let Some(after) = retry_after {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        res.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

/// The shared stack's settings per test.
struct Setup {
    failures_to_open: u32,
    max_attempts: u32,
    budget: Option<RetryBudget>,
    max_concurrent: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            failures_to_open: 3,
            max_attempts: 2,
            budget: None,
            max_concurrent: 8,
        }
    }
}

struct Harness {
    upstream: MockUpstream,
    app: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    breaker: BreakerHandle,
    bulkhead: BulkheadHandle<AllCalls>,
}

impl Harness {
    /// Start the mock upstream, build the one stack, serve the app on 127.0.0.1:0.
    async fn start(setup: Setup) -> Harness {
        let upstream = MockUpstream::builder()
            .route("slow-model", Fault::Latency(Duration::from_secs(1)))
            .start()
            .await
            .unwrap();

        let breaker = CircuitBreakerLayer::builder()
            .name("upstream")
            .consecutive_failures(setup.failures_to_open)
            .no_failure_rate()
            .open_duration(Duration::from_secs(5))
            .permitted_calls_in_half_open(1)
            .build()
            .unwrap();
        let retry = RetryLayer::builder()
            .max_attempts(setup.max_attempts)
            .backoff(Backoff::constant(Duration::from_millis(100)))
            .attempt_timeout(Duration::from_secs(10))
            .seed(11);
        let retry = match setup.budget {
            Some(budget) => retry.budget(budget),
            None => retry.no_budget(),
        }
        .build()
        .unwrap();
        let bulkhead = BulkheadLayer::builder()
            .name("upstream")
            .max_concurrent(setup.max_concurrent)
            .max_queued(0)
            .build()
            .unwrap()
            // Innermost: one permit per attempt, held until the response body is read.
            .layer(
                InspectErrorBodyLayer::new()
                    .layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>()),
            );
        let breaker_handle = breaker.handle();
        let bulkhead_handle = bulkhead.handle();
        let stack = ServiceBuilder::new()
            .circuit_breaker(breaker)
            .retry_with(retry)
            .service(bulkhead)
            .map_response(|res| res.map(Body::new));

        let state = App {
            upstream: BoxCloneSyncService::new(stack),
            completions: upstream.completions_url().parse().unwrap(),
            breaker: breaker_handle.clone(),
        };
        let router = Router::new()
            .route("/v1/chat/completions", post(proxy))
            .route("/summarize", post(summarize))
            .route("/breaker", get(breaker_status))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });

        Harness {
            upstream,
            app,
            client: Client::builder(TokioExecutor::new()).build_http(),
            breaker: breaker_handle,
            bulkhead: bulkhead_handle,
        }
    }

    /// `POST path` on the app; the status, headers and whole body.
    async fn post(&self, path: &str, body: String) -> (StatusCode, http::HeaderMap, Bytes) {
        let req = http::Request::post(format!("http://{}{path}", self.app))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let res = self.client.request(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, body)
    }

    async fn chat(&self, model: &str) -> (StatusCode, http::HeaderMap, Bytes) {
        let chat = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        self.post("/v1/chat/completions", chat.to_string()).await
    }

    async fn summarize(&self) -> (StatusCode, http::HeaderMap, Bytes) {
        self.post("/summarize", "a long text".into()).await
    }

    async fn breaker_json(&self) -> Value {
        let req = http::Request::get(format!("http://{}/breaker", self.app))
            .body(Full::default())
            .unwrap();
        let res = self.client.request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn error_type(body: &Bytes) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["error"]["type"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(start_paused = true)]
async fn failures_through_one_route_open_the_breaker_for_every_route() {
    let h = Harness::start(Setup::default()).await;
    h.upstream.set_default_fault(Fault::status(500));

    // Route A: each call is two upstream attempts (one retry), returned as the provider's 500.
    for call in 1..=3u64 {
        let (status, headers, _) = h.chat("gpt-4o").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "call {call}");
        assert_eq!(header(&headers, "x-failed-attempts"), Some("2"));
        assert_eq!(
            header(&headers, "x-retry-stopped"),
            Some("attempts_exhausted")
        );
    }
    assert_eq!(h.upstream.attempt_count(), 6);
    assert_eq!(h.breaker.state(), BreakerState::Open);

    // Route B holds its own clone of the stack, and the same breaker: rejected without a call.
    let (status, headers, body) = h.summarize().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_type(&body), "breaker_open");
    assert_eq!(header(&headers, "retry-after"), Some("5"));
    assert_eq!(
        h.upstream.attempt_count(),
        6,
        "the upstream never saw route B's call"
    );

    // The app's view of the breaker (through its own clone of the handle) agrees.
    let seen = h.breaker_json().await;
    let snapshot = h.breaker.snapshot();
    assert_eq!(snapshot.state, BreakerState::Open);
    assert_eq!(snapshot.reason, Some(OpenReason::ConsecutiveFailures));
    assert_eq!(snapshot.not_permitted, 1);
    assert_eq!(seen["state"], "open");
    assert_eq!(seen["reason"], "consecutive_failures");
    assert_eq!(seen["not_permitted"], 1);
    assert_eq!(seen["generation"], snapshot.generation);
    assert_eq!(seen["name"], "upstream");

    // The upstream recovers: after the open duration, route B's probe closes it for route A.
    h.upstream.set_default_fault(Fault::Healthy);
    tokio::time::advance(Duration::from_secs(5)).await;
    let (status, _, body) = h.summarize().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, CANONICAL_ANSWER);
    assert_eq!(h.breaker.state(), BreakerState::Closed);
    let (status, headers, _) = h.chat("gpt-4o").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "x-failed-attempts"),
        None,
        "first attempt answered"
    );
    assert_eq!(h.upstream.attempt_count(), 8);
    assert_eq!(h.breaker_json().await["state"], "closed");
}

#[tokio::test(start_paused = true)]
async fn every_route_draws_on_one_retry_budget() {
    // No deposits count (ratio 0): only the reserve of 1 retry/s over 3 s, i.e. three retries
    // in all, for every clone of the stack.
    let budget = RetryBudget::new(Duration::from_secs(3), 1, 0.0).unwrap();
    let h = Harness::start(Setup {
        max_attempts: 3,
        failures_to_open: 100,
        budget: Some(budget.clone()),
        ..Setup::default()
    })
    .await;
    h.upstream.set_default_fault(Fault::status(503));
    assert_eq!(budget.balance(), 3.0);

    // Route A: three attempts (two retries).
    let (status, headers, _) = h.chat("gpt-4o").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&headers, "x-failed-attempts"), Some("3"));
    assert_eq!(h.upstream.attempt_count(), 3);
    assert_eq!(budget.balance(), 1.0);

    // Route B: one retry left in the shared budget.
    let (status, headers, _) = h.summarize().await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(header(&headers, "x-failed-attempts"), Some("2"));
    assert_eq!(
        header(&headers, "x-retry-stopped"),
        Some("budget_exhausted")
    );
    assert_eq!(h.upstream.attempt_count(), 5);

    // Route A again: no retry at all.
    let (_, headers, _) = h.chat("gpt-4o").await;
    assert_eq!(header(&headers, "x-failed-attempts"), Some("1"));
    assert_eq!(
        header(&headers, "x-retry-stopped"),
        Some("budget_exhausted")
    );
    assert_eq!(h.upstream.attempt_count(), 6);
    assert!(budget.balance() <= 0.0);

    // Retries the budget paid for expire after its ttl: retrying works again, on any route.
    tokio::time::advance(Duration::from_secs(4)).await;
    let (_, headers, _) = h.summarize().await;
    assert_eq!(header(&headers, "x-failed-attempts"), Some("3"));
    assert_eq!(h.upstream.attempt_count(), 9);
}

#[tokio::test(start_paused = true)]
async fn every_route_shares_the_bulkheads_permits() {
    let h = Harness::start(Setup {
        max_concurrent: 2,
        ..Setup::default()
    })
    .await;
    // `slow-model` answers after 1 s. Keep the paused clock still while calls are on the wire.
    let hold = hold_auto_advance();
    let h = Arc::new(h);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let h = Arc::clone(&h);
            tokio::spawn(async move { h.chat("slow-model").await })
        })
        .collect();
    h.upstream.wait_for_attempts(2).await;
    assert_eq!(h.bulkhead.in_flight(), 2);

    // Route B finds both permits taken by route A's calls: turned away without a call.
    let (status, _, body) = h.summarize().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_type(&body), "bulkhead_full");
    assert_eq!(h.upstream.attempt_count(), 2);
    // A local rejection says nothing about the upstream: the breaker ignored it.
    let snapshot = h.breaker.snapshot();
    assert_eq!(
        (snapshot.state, snapshot.ignored),
        (BreakerState::Closed, 1)
    );

    // The slow answers arrive; each permit is released once its body has been streamed out.
    tokio::time::advance(Duration::from_secs(1)).await;
    for call in slow {
        let (status, _, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["choices"][0]["message"]["content"], CANONICAL_ANSWER);
    }
    drop(hold);
    assert_eq!(h.bulkhead.in_flight(), 0);

    let (status, _, body) = h.summarize().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, CANONICAL_ANSWER);
    assert_eq!(h.breaker.counts().calls, 3);
}

/// axum's `Router::layer` wraps every route (and the fallback route) on its own, calling
/// `Layer::layer` once each: the bulkhead lives in the layer, so all routes still draw on one
/// pool of permits, and the layer's handle sees them all.
#[tokio::test]
async fn router_layer_gives_every_route_one_bulkhead() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::error_handling::HandleErrorLayer;
    use tokio::sync::Semaphore;

    /// Handlers hold their call until released, counting who is inside.
    #[derive(Clone)]
    struct Gate {
        entered: Arc<AtomicUsize>,
        release: Arc<Semaphore>,
    }
    impl Gate {
        async fn pass(&self, answer: &'static str) -> &'static str {
            self.entered.fetch_add(1, Ordering::SeqCst);
            self.release.acquire().await.unwrap().forget();
            answer
        }
        async fn until_entered(&self, n: usize) {
            while self.entered.load(Ordering::SeqCst) < n {
                tokio::task::yield_now().await;
            }
        }
    }

    let bulkhead = BulkheadLayer::builder()
        .name("app")
        .max_concurrent(2)
        .max_queued(0)
        .build()
        .unwrap();
    let handle = bulkhead.handle();
    let gate = Gate {
        entered: Arc::new(AtomicUsize::new(0)),
        release: Arc::new(Semaphore::new(0)),
    };
    let (a, b) = (gate.clone(), gate.clone());
    let router = Router::new()
        .route("/a", get(move || async move { a.pass("a").await }))
        .route("/b", get(move || async move { b.pass("b").await }))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|err: BoxError| async move {
                    match err.downcast_ref::<BulkheadFull>() {
                        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "bulkhead_full"),
                        None => (StatusCode::INTERNAL_SERVER_ERROR, "error"),
                    }
                }))
                .layer(bulkhead),
        );
    let get = |path: &str| {
        let req = http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        router.clone().oneshot(req)
    };
    let read = |res: Response| async move {
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    };

    // One call on each route takes the two permits.
    let on_a = tokio::spawn(get("/a"));
    let on_b = tokio::spawn(get("/b"));
    tokio::time::timeout(Duration::from_secs(5), gate.until_entered(2))
        .await
        .expect("both calls reach their handlers");
    assert_eq!(handle.in_flight(), 2);
    assert_eq!(handle.snapshot().len(), 1, "one partition for every route");

    // Either route is now turned away before its handler runs: the pool is shared.
    for path in ["/a", "/b"] {
        let (status, body) = read(get(path).await.unwrap()).await;
        assert_eq!(
            (status, body.as_ref()),
            (StatusCode::SERVICE_UNAVAILABLE, &b"bulkhead_full"[..])
        );
    }
    assert_eq!(gate.entered.load(Ordering::SeqCst), 2);

    // Released, both answer; their permits go back once the bodies are read.
    gate.release.add_permits(3);
    let (status, body) = read(on_a.await.unwrap().unwrap()).await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"a"[..]));
    let (status, body) = read(on_b.await.unwrap().unwrap()).await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"b"[..]));
    assert_eq!(handle.in_flight(), 0);
    let (status, _) = read(get("/b").await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}
