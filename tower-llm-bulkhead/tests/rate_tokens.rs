//! Request-rate and token limits against known sequences, with paused time.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use common::settle;
use http_body_util::{BodyExt, Full};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_bulkhead::{BulkheadLayer, ErrorsOnly, JsonBodyEstimate, RateLimit, TokenLimit};
use tower_llm_core::{
    classify_error, BoxError, BulkheadFull, ErrorKind, LimitKind, NoBudget, ReplayBody,
};

/// The outcome of one call: admitted, or rejected on a limit with a retry-after.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Admitted,
    Rejected(LimitKind, Option<Duration>),
}

fn outcome<T>(result: Result<T, BoxError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Admitted,
        Err(err) => {
            let full = err
                .downcast_ref::<BulkheadFull>()
                .expect("a bulkhead rejection");
            Outcome::Rejected(full.limit(), full.retry_after())
        }
    }
}

fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

async fn at(start: tokio::time::Instant, offset_ms: u64) {
    tokio::time::sleep_until(start + Duration::from_millis(offset_ms)).await;
}

#[tokio::test(start_paused = true)]
async fn rate_limit_follows_gcra_exactly() {
    use Outcome::*;
    let layer = BulkheadLayer::builder()
        .rate_limit(RateLimit::per_second(2))
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: ()| async { Ok::<_, Infallible>(()) }));
    let start = tokio::time::Instant::now();
    // (time in ms, expected outcome): 2 per second, bursts of 2, one permit every 500 ms.
    let script = [
        (0, Admitted),
        (0, Admitted),
        (0, Rejected(LimitKind::Rate, ms(500))),
        (100, Rejected(LimitKind::Rate, ms(400))),
        (500, Admitted),
        (500, Rejected(LimitKind::Rate, ms(500))),
        (1000, Admitted),
        (1000, Rejected(LimitKind::Rate, ms(500))),
        (1250, Rejected(LimitKind::Rate, ms(250))),
        (2500, Admitted),
        (2500, Admitted),
        (2500, Rejected(LimitKind::Rate, ms(500))),
        (2999, Rejected(LimitKind::Rate, ms(1))),
        (3000, Admitted),
    ];
    for (when, expected) in script {
        at(start, when).await;
        assert_eq!(
            outcome(svc.clone().oneshot(()).await),
            expected,
            "at {when} ms"
        );
    }
    // A rejection is a local rate limit whose retry-after a retry layer can honour.
    let err = svc.clone().oneshot(()).await.unwrap_err();
    let failure = classify_error(&*err);
    assert_eq!(failure.kind, ErrorKind::RateLimited);
    assert_eq!(failure.retry_after, ms(500));
    assert!(!failure.counts_against_breaker());
}

#[tokio::test(start_paused = true)]
async fn rate_limit_waits_up_to_its_bound() {
    let layer = BulkheadLayer::builder()
        .rate_limit(RateLimit::per_second(2).max_wait(Duration::from_secs(1)))
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |_: ()| async move {
            Ok::<_, Infallible>(start.elapsed())
        }));
    let calls: Vec<_> = (0..5)
        .map(|_| tokio::spawn(svc.clone().oneshot(())))
        .collect();
    let mut admitted = Vec::new();
    let mut rejected = Vec::new();
    for c in calls {
        match c.await.unwrap() {
            Ok(at) => admitted.push(at),
            Err(err) => {
                let full = err.downcast_ref::<BulkheadFull>().unwrap();
                rejected.push((full.limit(), full.waited(), full.retry_after()));
            }
        }
    }
    admitted.sort();
    assert_eq!(admitted, [0, 0, 500, 1000].map(Duration::from_millis));
    assert_eq!(
        rejected,
        [(LimitKind::Rate, Duration::from_secs(1), ms(500))]
    );
}

#[tokio::test(start_paused = true)]
async fn token_limit_follows_a_known_sequence() {
    use Outcome::*;
    let layer = BulkheadLayer::builder()
        .token_limit(TokenLimit::per_minute(1000), |estimate: &u64| *estimate)
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: u64| async { Ok::<_, Infallible>(()) }));
    let handle = svc.handle();
    let start = tokio::time::Instant::now();
    // 1000 tokens per minute: one token every 60 ms.
    let script = [
        (0, 600, Admitted),
        (0, 500, Rejected(LimitKind::Tokens, ms(6_000))),
        (0, 400, Admitted),
        (0, 1, Rejected(LimitKind::Tokens, ms(60))),
        (0, 1001, Rejected(LimitKind::RequestTooLarge, None)),
        (30_000, 600, Rejected(LimitKind::Tokens, ms(6_000))),
        (30_000, 500, Admitted),
        (36_000, 100, Admitted),
        (96_000, 1000, Admitted),
    ];
    for (when, tokens, expected) in script {
        at(start, when).await;
        assert_eq!(
            outcome(svc.clone().oneshot(tokens).await),
            expected,
            "{tokens} tokens at {when} ms"
        );
    }
    assert_eq!(handle.snapshot()[0].tokens_available, Some(0));
    let too_large = svc.clone().oneshot(5000).await.unwrap_err();
    assert_eq!(classify_error(&*too_large).kind, ErrorKind::BadRequest);
    assert!(
        too_large.to_string().contains("request_too_large"),
        "{too_large}"
    );
}

#[tokio::test(start_paused = true)]
async fn token_charge_is_corrected_from_reported_usage() {
    let layer = BulkheadLayer::builder()
        .token_limit(TokenLimit::per_minute(1000), |estimate: &u64| *estimate)
        .release_with_usage(|used: &u64| Some(*used))
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    // A typed upstream whose response is the number of tokens the call used: a tenth of its estimate.
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|estimate: u64| async move {
            Ok::<_, Infallible>(estimate / 10)
        }));
    // Estimated 900, used 90: 810 come back at once.
    assert_eq!(svc.clone().oneshot(900).await.unwrap(), 90);
    let err = svc.clone().oneshot(950).await.unwrap_err();
    let full = err.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(full.retry_after(), ms(40 * 60), "910 available, 40 missing");
    assert!(svc.clone().oneshot(910).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn token_limit_waits_up_to_its_bound() {
    let layer = BulkheadLayer::builder()
        .token_limit(
            TokenLimit::per_minute(1000).max_wait(Duration::from_secs(10)),
            |e: &u64| *e,
        )
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |_: u64| async move {
            Ok::<_, Infallible>(start.elapsed())
        }));
    assert_eq!(svc.clone().oneshot(1000).await.unwrap(), Duration::ZERO);
    // 500 tokens need 30 s: beyond the bound, rejected at once.
    let err = svc.clone().oneshot(500).await.unwrap_err();
    let full = err.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(
        (full.limit(), full.retry_after(), full.waited()),
        (LimitKind::Tokens, ms(30_000), Duration::ZERO)
    );
    // 100 tokens need 6 s: waited for.
    assert_eq!(
        svc.clone().oneshot(100).await.unwrap(),
        Duration::from_secs(6)
    );
}

#[tokio::test(start_paused = true)]
async fn token_charge_is_refunded_when_the_call_is_never_sent() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_wait(Duration::from_secs(1))
        .token_limit(TokenLimit::per_minute(1000), |e: &u64| *e)
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: u64| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, Infallible>(())
        }));
    let handle = svc.handle();
    let running = tokio::spawn(svc.clone().oneshot(100));
    settle().await;
    assert_eq!(handle.snapshot()[0].tokens_available, Some(900));
    // Charged, then waits for a slot, then gives up: the charge comes back.
    let err = svc.clone().oneshot(300).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BulkheadFull>().unwrap().limit(),
        LimitKind::MaxWait
    );
    // Charged, waiting, then cancelled: the charge comes back too.
    let cancelled =
        tokio::time::timeout(Duration::from_millis(100), svc.clone().oneshot(300)).await;
    assert!(cancelled.is_err());
    // 1.1 s passed: 100 spent minus 18 refilled.
    assert_eq!(handle.snapshot()[0].tokens_available, Some(918));
    running.await.unwrap().unwrap();
}

type Replay = ReplayBody<http_body_util::Empty<Bytes>>;

fn chat_request(max_tokens: u64) -> http::Request<Replay> {
    let body = format!(
        r#"{{"model":"gpt-4o","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"hello there"}}]}}"#
    );
    http::Request::new(Replay::from_bytes(Bytes::from(body)))
}

fn estimate(max_tokens: u64) -> u64 {
    JsonBodyEstimate::new().estimate_json(chat_request(max_tokens).body().bytes().unwrap())
}

#[tokio::test(start_paused = true)]
async fn json_response_usage_corrects_the_charge_when_the_body_ends() {
    let layer = BulkheadLayer::builder()
        .token_limit(TokenLimit::per_minute(10_000), JsonBodyEstimate::new())
        .build()
        .unwrap();
    let upstream = service_fn(|_req: http::Request<Replay>| async {
        let body = r#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":20,"completion_tokens":30,"total_tokens":50}}"#;
        Ok::<_, Infallible>(
            http::Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
    });
    let svc = ServiceBuilder::new().layer(layer).service(upstream);
    let handle = svc.handle();
    let charged = estimate(2000);
    let res = svc.clone().oneshot(chat_request(2000)).await.unwrap();
    assert_eq!(
        handle.snapshot()[0].tokens_available,
        Some(10_000 - charged)
    );
    res.into_body().collect().await.unwrap();
    assert_eq!(handle.snapshot()[0].tokens_available, Some(10_000 - 50));
}

#[tokio::test(start_paused = true)]
async fn sse_usage_corrects_the_charge_even_if_the_stream_is_dropped_after_it() {
    let layer = BulkheadLayer::builder()
        .token_limit(TokenLimit::per_minute(10_000), JsonBodyEstimate::new())
        .build()
        .unwrap();
    let upstream = service_fn(|_req: http::Request<Replay>| async {
        let events = [
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":3000,\"total_tokens\":3020}}\n\n",
            "data: [DONE]\n\n",
        ];
        let frames = events
            .map(|e| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(e.as_bytes()))));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        Ok::<_, Infallible>(
            http::Response::builder()
                .header("content-type", "text/event-stream")
                .body(body)
                .unwrap(),
        )
    });
    let svc = ServiceBuilder::new().layer(layer).service(upstream);
    let handle = svc.handle();
    let charged = estimate(100);
    let res = svc.clone().oneshot(chat_request(100)).await.unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    body.frame().await.unwrap().unwrap();
    assert_eq!(
        handle.snapshot()[0].tokens_available,
        Some(10_000 - charged)
    );
    drop(body); // before [DONE]: the usage event was already seen
                // Used more than estimated: the difference is debited.
    assert_eq!(handle.snapshot()[0].tokens_available, Some(10_000 - 3020));
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn handle_corrects_tokens_for_layers_that_read_usage_themselves() {
    let layer = BulkheadLayer::builder()
        .token_limit(TokenLimit::per_minute(1000), |e: &u64| *e)
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: u64| async { Ok::<_, Infallible>(()) }));
    let handle = svc.handle();
    svc.clone().oneshot(800).await.unwrap();
    assert_eq!(handle.snapshot()[0].tokens_available, Some(200));
    assert!(handle.correct_tokens(&tower_llm_bulkhead::AllCalls, 800, 300));
    assert_eq!(handle.snapshot()[0].tokens_available, Some(700));
}
