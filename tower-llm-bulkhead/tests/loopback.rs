//! Over real loopback HTTP against the chaos mock upstream (on the test's own runtime, so its
//! timers share the paused clock): hanging and slow targets hold permits, partitions isolate
//! models, streamed bodies keep their permit until dropped, and real `usage` corrects the token
//! budget.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_bulkhead::{BulkheadLayer, ByModel, JsonBodyEstimate, ModelKey, TokenLimit};
use tower_llm_chaos::{Fault, MockUpstream};
use tower_llm_core::{BulkheadFull, LimitKind, ReplayBody};

type Body = ReplayBody<Empty<Bytes>>;

fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn chat(upstream: &MockUpstream, model: &str, stream: bool) -> http::Request<Body> {
    let json = format!(
        r#"{{"model":"{model}","stream":{stream},"max_tokens":200,"messages":[{{"role":"user","content":"Say hello."}}]}}"#
    );
    http::Request::post(upstream.completions_url())
        .header("content-type", "application/json")
        .body(Body::from_bytes(Bytes::from(json)))
        .unwrap()
}

async fn mock() -> MockUpstream {
    MockUpstream::builder()
        .default_fault(Fault::Healthy)
        .route("gpt-hang", Fault::Hang)
        .route("gpt-slow", Fault::Latency(Duration::from_secs(2)))
        .route("gpt-stall", Fault::Stall { after: 2 })
        .start()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_hanging_model_fills_its_own_partition_only() {
    let upstream = mock().await;
    let layer = BulkheadLayer::builder()
        .partition_by(ByModel)
        .max_concurrent(2)
        .max_queued(1)
        .max_wait(Duration::from_millis(500))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(client());
    let handle = svc.handle();

    let hanging: Vec<_> = (0..2)
        .map(|_| tokio::spawn(svc.clone().oneshot(chat(&upstream, "gpt-hang", false))))
        .collect();
    upstream.wait_for_attempts(2).await;
    let hang = ModelKey::new("gpt-hang");
    assert_eq!(handle.partition(&hang).unwrap().in_flight, 2);

    // A third call to the hanging model waits its 500 ms and is turned away.
    let start = tokio::time::Instant::now();
    let err = svc
        .clone()
        .oneshot(chat(&upstream, "gpt-hang", false))
        .await
        .unwrap_err();
    let full = err.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(
        (full.bulkhead(), full.limit(), full.in_flight()),
        ("gpt-hang", LimitKind::MaxWait, 2)
    );
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(
        upstream.attempt_count(),
        2,
        "the rejected call never reached the upstream"
    );

    // Another model is not affected.
    let res = svc
        .clone()
        .oneshot(chat(&upstream, "gpt-4o", false))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();

    // The callers give up on the hanging calls (client disconnect): their permits come back.
    for h in hanging {
        h.abort();
        assert!(h.await.unwrap_err().is_cancelled());
    }
    assert_eq!(handle.partition(&hang).unwrap().in_flight, 0);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_slow_model_holds_its_permit_for_the_whole_call() {
    let upstream = mock().await;
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(client());
    let start = tokio::time::Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let svc = svc.clone();
            let req = chat(&upstream, "gpt-slow", false);
            tokio::spawn(async move {
                let res = svc.oneshot(req).await.unwrap();
                res.into_body().collect().await.unwrap();
                start.elapsed()
            })
        })
        .collect();
    let mut finished = Vec::new();
    for c in calls {
        finished.push(c.await.unwrap());
    }
    finished.sort();
    // One at a time, 2 s each.
    let secs: Vec<u64> = finished.iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, [2, 4, 6]);
    let starts: Vec<_> = upstream.attempts().iter().map(|a| a.at.as_secs()).collect();
    assert_eq!(starts, [0, 2, 4]);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_keeps_its_permit_until_dropped() {
    let upstream = mock().await;
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_wait(Duration::from_secs(30))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(client());
    let handle = svc.handle();

    // The stream sends two events, then stalls with the connection open.
    let res = svc
        .clone()
        .oneshot(chat(&upstream, "gpt-stall", true))
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let mut events = 0;
    while events < 2 {
        let frame = body.frame().await.unwrap().unwrap();
        if let Some(data) = frame.data_ref() {
            events += data.windows(5).filter(|w| w == b"data:").count();
        }
    }
    assert!(body.holds_permit());
    // A second call waits for the stalled stream's permit.
    let second = tokio::spawn(svc.clone().oneshot(chat(&upstream, "gpt-4o", true)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!((handle.in_flight(), handle.queued()), (1, 1));
    assert_eq!(upstream.attempt_count(), 1);

    drop(body); // the client walks away from the stalled stream
    let res = second.await.unwrap().unwrap();
    let sse = res.into_body().collect().await.unwrap().to_bytes();
    assert!(sse.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(handle.in_flight(), 0);
}

/// The `usage.total_tokens` of a JSON completion, or of the SSE event that carries one.
fn total_tokens(body: &[u8]) -> u64 {
    let text = std::str::from_utf8(body).unwrap();
    let json = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .rfind(|l| l.contains("\"usage\""))
        .unwrap_or(text);
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    value["usage"]["total_tokens"].as_u64().unwrap()
}

#[tokio::test(start_paused = true)]
async fn real_usage_replaces_the_estimate() {
    let upstream = mock().await;
    // Keep the clock still while the calls are on the wire, so the budget does not refill.
    let _still = tower_llm_chaos::hold_auto_advance();
    const BUDGET: u64 = 100_000;
    let layer = BulkheadLayer::builder()
        .token_limit(TokenLimit::per_minute(BUDGET), JsonBodyEstimate::new())
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(client());
    let handle = svc.handle();
    let available = || handle.snapshot()[0].tokens_available.unwrap();
    let estimate = JsonBodyEstimate::new()
        .estimate_json(chat(&upstream, "gpt-4o", false).body().bytes().unwrap());

    let res = svc
        .clone()
        .oneshot(chat(&upstream, "gpt-4o", false))
        .await
        .unwrap();
    assert_eq!(
        available(),
        BUDGET - estimate,
        "charged the estimate at admission"
    );
    let json = res.into_body().collect().await.unwrap().to_bytes();
    let used = total_tokens(&json);
    assert_ne!(used, estimate);
    // 100,000 tokens per minute is 0.6 ms per token: the clock did not move, so this is exact.
    assert_eq!(
        available(),
        BUDGET - used,
        "corrected to the real usage when the body ended"
    );

    let res = svc
        .clone()
        .oneshot(chat(&upstream, "gpt-4o", true))
        .await
        .unwrap();
    let sse = res.into_body().collect().await.unwrap().to_bytes();
    let streamed = total_tokens(&sse);
    assert_eq!(
        available(),
        BUDGET - used - streamed,
        "and from the final SSE event"
    );
}
