//! The bulkhead's side of a [`SharedLimiter`]: what it asks, what it does with each verdict, and
//! that every token charged to the shared budget is refunded there when the call is not sent —
//! rejected by the concurrency limit, or cancelled while it waits — and corrected there from the
//! response's usage. (`tower-llm-redis`'s tests run the Redis implementation over real Redis.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_llm_bulkhead::shared::{
    SharedAdmission, SharedAsk, SharedLimiter, SharedQuota, SharedUnavailable, SharedVerdict,
    TokenQuota,
};
use tower_llm_bulkhead::{BulkheadLayer, RateLimit, TokenLimit};
use tower_llm_core::{BulkheadFull, LimitKind};

/// A shared limiter that answers what the test scripted and records what it was asked.
#[derive(Clone, Default)]
struct Scripted {
    verdicts: Arc<Mutex<Vec<Result<SharedVerdict, SharedUnavailable>>>>,
    /// How long each answer takes (the store's round trip).
    latency: Duration,
    asked: Arc<Mutex<Vec<(String, SharedQuota, u64)>>>,
    adjusted: Arc<Mutex<Vec<i64>>>,
}

impl Scripted {
    fn answering(verdicts: Vec<Result<SharedVerdict, SharedUnavailable>>) -> Self {
        let mut verdicts = verdicts;
        verdicts.reverse();
        Scripted {
            verdicts: Arc::new(Mutex::new(verdicts)),
            ..Scripted::default()
        }
    }

    fn adjusted(&self) -> Vec<i64> {
        self.adjusted.lock().unwrap().clone()
    }
}

impl SharedLimiter for Scripted {
    fn admit(&self, ask: SharedAsk<'_>) -> SharedAdmission {
        self.asked
            .lock()
            .unwrap()
            .push((ask.scope.to_owned(), *ask.quota, ask.tokens));
        let verdict = self
            .verdicts
            .lock()
            .unwrap()
            .pop()
            .unwrap_or(Err(SharedUnavailable));
        let latency = self.latency;
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            verdict
        })
    }

    fn adjust_tokens(&self, _scope: &str, _quota: &SharedQuota, tokens: i64) {
        self.adjusted.lock().unwrap().push(tokens);
    }
}

/// 100 tokens per request (the estimate), usage 30 in the answer.
fn request() -> http::Request<()> {
    http::Request::new(())
}

fn upstream(
    latency: Duration,
) -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<Full<Bytes>>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |_req: http::Request<()>| async move {
        tokio::time::sleep(latency).await;
        let mut response = http::Response::new(Full::new(Bytes::from_static(
            br#"{"choices":[],"usage":{"total_tokens":30}}"#,
        )));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    })
}

const ESTIMATE: u64 = 100;

fn layer(
    limiter: Scripted,
    max_concurrent: usize,
    max_queued: usize,
) -> BulkheadLayer<tower_llm_bulkhead::Global, fn(&http::Request<()>) -> u64> {
    BulkheadLayer::builder()
        .name("gpt")
        .max_concurrent(max_concurrent)
        .max_queued(max_queued)
        .max_wait(Duration::from_secs(10))
        .rate_limit(RateLimit::per_second(10).burst(2))
        .token_limit(
            TokenLimit::per_minute(1_000),
            (|_: &http::Request<()>| ESTIMATE) as fn(&http::Request<()>) -> u64,
        )
        .shared_limiter(limiter)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_shared_budget_is_asked_charged_and_corrected_from_usage() {
    let limiter = Scripted::answering(vec![Ok(SharedVerdict::Admitted)]);
    let layer = layer(limiter.clone(), 4, 0);
    let handle = layer.handle();
    let svc = layer.layer(upstream(Duration::ZERO));

    let response = svc.oneshot(request()).await.unwrap();
    let asked = limiter.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    let (scope, quota, tokens) = &asked[0];
    assert_eq!((scope.as_str(), *tokens), ("gpt", ESTIMATE));
    assert_eq!(quota.rate.unwrap().interval, Duration::from_millis(100));
    assert_eq!(quota.rate.unwrap().burst, 2);
    assert_eq!(
        quota.tokens,
        Some(TokenQuota {
            capacity: 1_000,
            period: Duration::from_secs(60)
        })
    );
    // The usage (30 of 100) is refunded to the shared budget; the local one was never charged.
    response.into_body().collect().await.unwrap();
    assert_eq!(limiter.adjusted(), vec![-70]);
    assert_eq!(handle.snapshot()[0].tokens_available, Some(1_000));
}

#[tokio::test(start_paused = true)]
async fn a_call_the_concurrency_limit_turns_away_is_refunded_to_the_shared_budget() {
    let limiter = Scripted::answering(vec![
        Ok(SharedVerdict::Admitted),
        Ok(SharedVerdict::Admitted),
    ]);
    let svc = layer(limiter.clone(), 1, 0).layer(upstream(Duration::from_secs(1)));
    let busy = tokio::spawn(svc.clone().oneshot(request()));
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(request()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BulkheadFull>().unwrap().limit(),
        LimitKind::Concurrency
    );
    assert_eq!(limiter.adjusted(), vec![-(ESTIMATE as i64)]);
    busy.await
        .unwrap()
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(limiter.adjusted(), vec![-(ESTIMATE as i64), -70]);
}

#[tokio::test(start_paused = true)]
async fn a_call_cancelled_while_asking_or_queued_holds_nothing_and_is_refunded() {
    let limiter = Scripted {
        latency: Duration::from_millis(5),
        ..Scripted::answering(vec![Ok(SharedVerdict::Admitted); 3])
    };
    let layer = layer(limiter.clone(), 1, 1);
    let handle = layer.handle();
    let svc = layer.layer(upstream(Duration::from_secs(1)));

    // Cancelled during the round trip: nothing was charged, nothing is held.
    let asking = svc.clone().oneshot(request());
    assert!(tokio::time::timeout(Duration::from_millis(1), asking)
        .await
        .is_err());
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
    assert!(limiter.adjusted().is_empty());

    // Admitted by the shared limiter, then cancelled in the concurrency queue: refunded there.
    let busy = tokio::spawn(svc.clone().oneshot(request()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(handle.in_flight(), 1);
    let queued = tokio::spawn(svc.clone().oneshot(request()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(handle.queued(), 1);
    queued.abort();
    let _ = queued.await;
    assert_eq!(handle.queued(), 0);
    assert_eq!(limiter.adjusted(), vec![-(ESTIMATE as i64)]);
    busy.await
        .unwrap()
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_shared_wait_within_the_bound_is_waited_and_beyond_it_rejected() {
    let wait = |ms| {
        Ok(SharedVerdict::Wait {
            limit: LimitKind::Rate,
            wait: Duration::from_millis(ms),
        })
    };
    let limiter = Scripted::answering(vec![wait(300), Ok(SharedVerdict::Admitted), wait(2_000)]);
    let svc = BulkheadLayer::builder()
        .rate_limit(RateLimit::per_second(10).max_wait(Duration::from_secs(1)))
        .shared_limiter(limiter.clone())
        .build()
        .unwrap()
        .layer(upstream(Duration::ZERO));

    let start = tokio::time::Instant::now();
    svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(300));

    let err = svc.clone().oneshot(request()).await.unwrap_err();
    let full = err.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(
        (full.limit(), full.retry_after()),
        (LimitKind::Rate, Some(Duration::from_secs(2)))
    );
}

#[tokio::test(start_paused = true)]
async fn when_the_shared_limiter_cannot_decide_the_local_limits_do() {
    // Unavailable every time: the local token budget (1,000 per minute, 100 per call) decides.
    let limiter = Scripted::answering(vec![]);
    let layer = layer(limiter.clone(), 64, 0);
    let handle = layer.handle();
    let svc = layer.layer(upstream(Duration::ZERO));
    // The local rate limit (burst 2, then 10/s) and budget apply.
    for _ in 0..2 {
        svc.clone().oneshot(request()).await.unwrap();
    }
    let err = svc.clone().oneshot(request()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BulkheadFull>().unwrap().limit(),
        LimitKind::Rate
    );
    // Charged locally (the bodies were not read: the estimates stay charged), so corrections go
    // to the local budget, never to the shared one.
    assert_eq!(handle.snapshot()[0].tokens_available, Some(800));
    assert!(limiter.adjusted().is_empty());
}
