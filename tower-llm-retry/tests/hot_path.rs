//! What a call costs the layer on its happy path: a call that cannot retry (a single call asked
//! by a chain above) clones nothing of the inner service; a call that may retry keeps exactly
//! one clone for its later attempts, and still retries with it.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_llm_core::AttemptBudget;
use tower_llm_retry::{Backoff, RetryLayer};

type Req = http::Request<Full<Bytes>>;

/// Answers `503` to its first `failures` calls (over all clones), then `200`; counts its clones.
struct Counting {
    clones: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    failures: usize,
}

impl Clone for Counting {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Counting {
            clones: Arc::clone(&self.clones),
            calls: Arc::clone(&self.calls),
            failures: self.failures,
        }
    }
}

impl Service<Req> for Counting {
    type Response = http::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let status = if n < self.failures { 503 } else { 200 };
        let mut res = http::Response::new(Full::new(Bytes::from_static(b"{}")));
        *res.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
        ready(Ok(res))
    }
}

fn counting(failures: usize) -> (Counting, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let clones = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = Counting {
        clones: Arc::clone(&clones),
        calls: Arc::clone(&calls),
        failures,
    };
    (svc, clones, calls)
}

fn layer() -> RetryLayer {
    RetryLayer::builder()
        .backoff(Backoff::constant(Duration::ZERO))
        .no_budget()
        .build()
        .expect("valid retry config")
}

fn request() -> Req {
    http::Request::new(Full::new(Bytes::from_static(b"{}")))
}

#[tokio::test(start_paused = true)]
async fn a_single_call_clones_nothing_of_the_inner_service() {
    let (svc, clones, calls) = counting(0);
    let retry = tower::Layer::layer(&layer(), svc);
    let mut req = request();
    req.extensions_mut()
        .insert(AttemptBudget::until(Instant::now() + Duration::from_secs(30)).single_call());
    let res = retry.oneshot(req).await.expect("answered");
    assert_eq!(res.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        clones.load(Ordering::SeqCst),
        0,
        "no clone for a call that cannot retry"
    );
}

#[tokio::test(start_paused = true)]
async fn a_single_call_that_fails_is_returned_as_it_failed() {
    let (svc, clones, calls) = counting(1);
    let retry = tower::Layer::layer(&layer(), svc);
    let mut req = request();
    req.extensions_mut()
        .insert(AttemptBudget::until(Instant::now() + Duration::from_secs(30)).single_call());
    let res = retry.oneshot(req).await.expect("the 503 is passed on");
    assert_eq!(res.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one call, no retry");
    assert_eq!(clones.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_may_retry_keeps_one_clone_and_retries_with_it() {
    let (svc, clones, calls) = counting(1);
    let retry = tower::Layer::layer(&layer(), svc);
    let res = retry.oneshot(request()).await.expect("answered");
    assert_eq!(res.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the 503, then the retry");
    assert_eq!(clones.load(Ordering::SeqCst), 1);
}
