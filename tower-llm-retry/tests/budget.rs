//! The retry layer under a chain's [`AttemptBudget`]: it never waits past the deadline, reports
//! what the upstream did (not a timeout of its own making), and makes a single call when the
//! chain asks for one (a probe, or another target remains).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};
use tower_llm_chaos::{hold_auto_advance, Fault, MockUpstream};
use tower_llm_core::{
    classify_error, AttemptBudget, BoxError, ErrorKind, ReplayBody, RetriesExhausted,
};
use tower_llm_retry::{Backoff, RetryAttempts, RetryLayer, StopReason};

type Req = Request<Full<Bytes>>;

fn req(budget: Option<AttemptBudget>) -> Req {
    let mut req = Request::post("http://llm.test/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))
        .unwrap();
    if let Some(budget) = budget {
        req.extensions_mut().insert(budget);
    }
    req
}

fn layer() -> RetryLayer {
    RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(300)))
        .attempt_timeout(Duration::from_secs(30))
        .max_server_delay(Duration::from_secs(60))
        .seed(1)
        .build()
        .unwrap()
}

/// An upstream answering `status` (with `retry-after`, if any) after `delay`; counts calls.
fn upstream(
    status: u16,
    retry_after: Option<&'static str>,
    calls: Arc<AtomicU32>,
) -> impl tower::Service<Req, Response = Response<()>, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_req: Req| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut res = Response::builder().status(status);
            if let Some(after) = retry_after {
                res = res.header("retry-after", after);
            }
            Ok::<_, BoxError>(res.body(()).unwrap())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_server_delay_past_the_deadline_returns_the_failure_at_once_with_its_delay() {
    let calls = Arc::new(AtomicU32::new(0));
    let svc = layer().layer(upstream(429, Some("3"), calls.clone()));
    let start = Instant::now();
    let budget = AttemptBudget::until(start + Duration::from_secs(2));
    let res = svc.oneshot(req(Some(budget))).await.unwrap();
    // Not retried after 3 s (past the chain's 2 s): the 429 comes back now, retry-after intact,
    // so the chain benches the target for exactly 3 s and moves on.
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "3");
    let log = res.extensions().get::<RetryAttempts>().unwrap();
    assert_eq!(log.stopped(), Some(StopReason::DeadlineTooClose));
}

#[tokio::test(start_paused = true)]
async fn a_backoff_that_fits_is_waited_one_that_does_not_is_not() {
    let calls = Arc::new(AtomicU32::new(0));
    let svc = layer().layer(upstream(503, None, calls.clone()));
    let start = Instant::now();
    // 1 s: room for two 300 ms backoffs (three attempts), not for a fourth wait.
    let budget = AttemptBudget::until(start + Duration::from_secs(1));
    let res = svc.clone().oneshot(req(Some(budget))).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(600));
    // 500 ms: one backoff fits, the second would end at 600 ms > 500 ms.
    calls.store(0, Ordering::SeqCst);
    let start = Instant::now();
    let budget = AttemptBudget::until(start + Duration::from_millis(500));
    let res = svc.oneshot(req(Some(budget))).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    let log = res.extensions().get::<RetryAttempts>().unwrap();
    assert_eq!(log.stopped(), Some(StopReason::DeadlineTooClose));
}

#[tokio::test(start_paused = true)]
async fn a_single_call_budget_makes_one_attempt() {
    for budget in [
        AttemptBudget::until(Instant::now() + Duration::from_secs(2)).single_call(),
        AttemptBudget::until(Instant::now() + Duration::from_secs(2)).probe(),
    ] {
        let calls = Arc::new(AtomicU32::new(0));
        let svc = layer().layer(upstream(503, None, calls.clone()));
        let res = svc.oneshot(req(Some(budget))).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{budget:?}");
    }
    // Without a budget, the same failure is retried.
    let calls = Arc::new(AtomicU32::new(0));
    let svc = layer().layer(upstream(503, None, calls.clone()));
    let _ = svc.oneshot(req(None)).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_silent_upstream_is_cut_at_the_deadline_as_a_timeout() {
    let svc = layer().layer(service_fn(|_req: Req| async {
        std::future::pending::<Result<Response<()>, BoxError>>().await
    }));
    let start = Instant::now();
    let budget = AttemptBudget::until(start + Duration::from_secs(2));
    let err = svc.oneshot(req(Some(budget))).await.unwrap_err();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "not the 30 s attempt timeout"
    );
    assert_eq!(classify_error(&*err).kind, ErrorKind::Timeout);
}

#[tokio::test(start_paused = true)]
async fn a_cut_after_an_upstream_error_reports_that_error_not_a_timeout() {
    // First a 503 with `retry-after: 1`, then the upstream stops answering.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let svc = layer().layer(service_fn(move |_req: Req| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                let res = Response::builder()
                    .status(503)
                    .header("retry-after", "1")
                    .body(())
                    .unwrap();
                return Ok::<_, BoxError>(res);
            }
            std::future::pending().await
        }
    }));
    let start = Instant::now();
    let budget = AttemptBudget::until(start + Duration::from_secs(3));
    let err = svc.oneshot(req(Some(budget))).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The upstream answered 503 (overloaded, 1 s): that is what the chain must record.
    let failure = classify_error(&*err);
    assert_eq!(failure.kind, ErrorKind::Overloaded);
    assert_eq!(failure.retry_after, Some(Duration::from_secs(1)));
    // The log still says the second attempt timed out.
    let log = err.downcast_ref::<RetriesExhausted>().unwrap();
    let kinds: Vec<_> = log.attempts().iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [ErrorKind::Overloaded, ErrorKind::Timeout]);
}

#[tokio::test(start_paused = true)]
async fn over_loopback_a_rate_limited_upstream_is_called_once_under_a_short_budget() {
    let _hold = hold_auto_advance();
    let upstream = MockUpstream::builder()
        .default_fault(Fault::status(429).retry_after_secs(3))
        .start()
        .await
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<ReplayBody<Full<Bytes>>>();
    let svc = layer().layer(client);
    let mut request = Request::post(upstream.completions_url())
        .header("content-type", "application/json")
        .body(ReplayBody::from_bytes(Bytes::from_static(
            br#"{"model":"m","messages":[]}"#,
        )))
        .unwrap();
    let start = Instant::now();
    request
        .extensions_mut()
        .insert(AttemptBudget::until(start + Duration::from_secs(2)));
    let res = svc.oneshot(request).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "3");
    assert_eq!(upstream.attempt_count(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    upstream.shutdown().await;
}
