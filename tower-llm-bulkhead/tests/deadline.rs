//! The attempt's deadline ([`AttemptBudget`]): the bulkhead never waits past it, with paused time.
//!
//! Each wait is driven by hand (`poll!` after each `advance`) so the tests see the exact moment
//! a call gives up.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use common::{settle, slow_upstream, Probe};
use futures_util::FutureExt;
use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_bulkhead::{BulkheadLayer, ErrorsOnly, RateLimit, TokenLimit};
use tower_llm_core::{
    classify_error, AttemptBudget, BoxError, BulkheadFull, ErrorKind, LimitKind, ReadBudget,
};

fn full(err: &BoxError) -> &BulkheadFull {
    err.downcast_ref::<BulkheadFull>()
        .unwrap_or_else(|| panic!("expected BulkheadFull, got {err}"))
}

/// The error of a call that must have been rejected by now (`None`: still waiting).
fn refused<T>(outcome: Option<Result<T, BoxError>>) -> BoxError {
    match outcome {
        Some(Err(err)) => err,
        Some(Ok(_)) => panic!("admitted, expected a rejection"),
        None => panic!("still waiting, expected a rejection"),
    }
}

/// A request whose attempt must be over `within` from now.
fn budgeted<B>(body: B, within: Duration) -> http::Request<B> {
    let mut req = http::Request::new(body);
    req.extensions_mut()
        .insert(AttemptBudget::until(Instant::now() + within).single_call());
    req
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A bulkhead of one slot with a 10 s maximum wait and `max_queued` queue places, in front of
/// a 60 s upstream, with a first call holding the slot: `(service, handle)`.
macro_rules! one_busy_slot {
    ($max_queued:expr) => {{
        let layer = BulkheadLayer::builder()
            .max_concurrent(1)
            .max_queued($max_queued)
            .max_wait(Duration::from_secs(10))
            .build()
            .unwrap();
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service(slow_upstream(Probe::default(), Duration::from_secs(60)));
        let handle = svc.handle();
        tokio::spawn(svc.clone().oneshot(http::Request::new(())));
        settle().await;
        assert_eq!((handle.in_flight(), handle.queued()), (1, 0));
        (svc, handle)
    }};
}

/// Advance the clock 1 ms at a time for `steps` ms, checking that `call` is still waiting.
async fn still_waiting_for<F: Future>(call: &mut Pin<Box<F>>, steps: u64) {
    for step in 1..=steps {
        tokio::time::advance(ms(1)).await;
        assert!(
            futures_util::poll!(call.as_mut()).is_pending(),
            "gave up {step} ms early"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_queue_wait_ends_exactly_at_the_attempt_deadline() {
    let (svc, handle) = one_busy_slot!(1);
    let start = Instant::now();
    let mut call = Box::pin(svc.clone().oneshot(budgeted((), ms(300))));
    assert!(futures_util::poll!(call.as_mut()).is_pending());
    assert_eq!(handle.queued(), 1);

    still_waiting_for(&mut call, 299).await;
    assert_eq!(handle.queued(), 1);
    tokio::time::advance(ms(1)).await;
    let err = match futures_util::poll!(call.as_mut()) {
        std::task::Poll::Ready(result) => refused(Some(result)),
        std::task::Poll::Pending => panic!("still waiting at the deadline"),
    };
    assert_eq!(start.elapsed(), ms(300));
    let f = full(&err);
    assert_eq!(
        (f.limit(), f.waited(), f.in_flight()),
        (LimitKind::MaxWait, ms(300), 1)
    );
    // A local overload: the chain moves on, nothing counts against the target.
    assert_eq!(classify_error(&*err).kind, ErrorKind::Overloaded);

    // Its queue place is free: the next caller queues rather than being turned away.
    assert_eq!(handle.queued(), 0);
    let mut next = Box::pin(svc.clone().oneshot(http::Request::new(())));
    assert!(futures_util::poll!(next.as_mut()).is_pending());
    assert_eq!((handle.in_flight(), handle.queued()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn an_expired_attempt_is_rejected_without_queueing() {
    let (svc, handle) = one_busy_slot!(4);
    // The deadline is now: no time left to wait.
    let err = refused(
        svc.clone()
            .oneshot(budgeted((), Duration::ZERO))
            .now_or_never(),
    );
    let f = full(&err);
    assert_eq!(
        (f.limit(), f.waited(), f.in_flight()),
        (LimitKind::Concurrency, Duration::ZERO, 1)
    );
    assert_eq!(handle.queued(), 0, "never joined the queue");

    // Past the deadline: the same.
    let req = budgeted((), ms(5));
    tokio::time::advance(ms(10)).await;
    let err = refused(svc.clone().oneshot(req).now_or_never());
    assert_eq!(full(&err).limit(), LimitKind::Concurrency);
    assert_eq!(handle.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn without_a_budget_the_wait_is_the_full_max_wait() {
    let (svc, handle) = one_busy_slot!(1);
    let start = Instant::now();
    let mut call = Box::pin(svc.clone().oneshot(http::Request::new(())));
    assert!(futures_util::poll!(call.as_mut()).is_pending());
    tokio::time::advance(ms(9_990)).await;
    still_waiting_for(&mut call, 9).await;
    tokio::time::advance(ms(1)).await;
    let err = refused(call.as_mut().now_or_never());
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(
        (full(&err).limit(), full(&err).waited()),
        (LimitKind::MaxWait, Duration::from_secs(10))
    );
    assert_eq!(handle.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_later_than_max_wait_changes_nothing() {
    let (svc, handle) = one_busy_slot!(1);
    let start = Instant::now();
    let err = svc
        .clone()
        .oneshot(budgeted((), Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(full(&err).limit(), LimitKind::MaxWait);
    assert_eq!(handle.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_within_its_deadline_is_admitted_when_a_slot_frees() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_wait(Duration::from_secs(10))
        .release_on_response()
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_upstream(Probe::default(), ms(200)));
    let handle = svc.handle();
    let first = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    settle().await;
    let start = Instant::now();
    let res = svc.clone().oneshot(budgeted((), ms(300))).await.unwrap();
    // Admitted when the first call answered (200 ms), answered 200 ms later.
    assert_eq!(start.elapsed(), ms(400));
    drop(first.await.unwrap().unwrap());
    drop(res);
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_free_slot_admits_at_once_whatever_the_deadline() {
    // The deadline bounds waits only: a call that needs none goes through (the layer above owns
    // the attempt's time and cuts the call itself).
    let layer = BulkheadLayer::builder().build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_upstream(Probe::default(), Duration::ZERO));
    let req = budgeted((), ms(1));
    tokio::time::advance(ms(5)).await;
    assert!(svc.oneshot(req).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_rate_permit_past_the_deadline_is_refused_at_once_with_retry_after() {
    let layer = BulkheadLayer::builder()
        .rate_limit(RateLimit::per_second(1).max_wait(Duration::from_secs(5)))
        .release_on_response()
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let start = Instant::now();
    let svc = ServiceBuilder::new().layer(layer).service(service_fn(
        move |_: http::Request<()>| async move { Ok::<_, Infallible>(start.elapsed()) },
    ));
    assert_eq!(
        svc.clone().oneshot(http::Request::new(())).await.unwrap(),
        ms(0)
    );

    // The next permit is 1 s away; the attempt has 300 ms.
    let err = refused(svc.clone().oneshot(budgeted((), ms(300))).now_or_never());
    let f = full(&err);
    assert_eq!(
        (f.limit(), f.waited(), f.retry_after()),
        (
            LimitKind::Rate,
            Duration::ZERO,
            Some(Duration::from_secs(1))
        )
    );
    let failure = classify_error(&*err);
    assert_eq!(
        (failure.kind, failure.retry_after),
        (ErrorKind::RateLimited, Some(Duration::from_secs(1)))
    );
    // A permit that comes exactly at the deadline is too late as well.
    let err = refused(
        svc.clone()
            .oneshot(budgeted((), Duration::from_secs(1)))
            .now_or_never(),
    );
    assert_eq!(full(&err).limit(), LimitKind::Rate);

    // With time for it, the call waits for its permit as before.
    let admitted_at = svc.clone().oneshot(budgeted((), ms(1_500))).await.unwrap();
    assert_eq!(admitted_at, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_token_budget_past_the_deadline_is_refused_at_once_with_retry_after() {
    let layer = BulkheadLayer::builder()
        .token_limit(
            TokenLimit::per_minute(1000).max_wait(Duration::from_secs(60)),
            |req: &http::Request<u64>| *req.body(),
        )
        .release_on_response()
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let start = Instant::now();
    let svc = ServiceBuilder::new().layer(layer).service(service_fn(
        move |_: http::Request<u64>| async move { Ok::<_, Infallible>(start.elapsed()) },
    ));
    let handle = svc.handle();
    svc.clone().oneshot(http::Request::new(1000)).await.unwrap();
    assert_eq!(handle.snapshot()[0].tokens_available, Some(0));

    // 500 tokens refill in 30 s; the attempt has 10 s.
    let err = refused(
        svc.clone()
            .oneshot(budgeted(500, Duration::from_secs(10)))
            .now_or_never(),
    );
    let f = full(&err);
    assert_eq!(
        (f.limit(), f.waited(), f.retry_after()),
        (
            LimitKind::Tokens,
            Duration::ZERO,
            Some(Duration::from_secs(30))
        )
    );
    assert_eq!(
        handle.snapshot()[0].tokens_available,
        Some(0),
        "nothing charged"
    );

    // With time for it, the call waits for its tokens as before.
    let admitted_at = svc
        .clone()
        .oneshot(budgeted(500, Duration::from_secs(40)))
        .await
        .unwrap();
    assert_eq!(admitted_at, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_rate_wait_then_a_queue_wait_both_end_by_the_deadline_and_refund_the_tokens() {
    // Rate first, then tokens, then a concurrency slot: the rate wait fits the deadline, the queue
    // wait after it is cut at the deadline, and the token charge taken in between comes back.
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queued(1)
        .max_wait(Duration::from_secs(10))
        .rate_limit(RateLimit::per_second(1).max_wait(Duration::from_secs(5)))
        .token_limit(
            TokenLimit::new(1000, Duration::from_secs(1_000_000)),
            |req: &http::Request<u64>| *req.body(),
        )
        .release_on_response()
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(|_: http::Request<u64>| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, Infallible>(())
            }));
    let handle = svc.handle();
    tokio::spawn(svc.clone().oneshot(http::Request::new(100)));
    settle().await;
    assert_eq!(handle.snapshot()[0].tokens_available, Some(900));

    let start = Instant::now();
    let mut call = Box::pin(svc.clone().oneshot(budgeted(100, ms(1_500))));
    assert!(futures_util::poll!(call.as_mut()).is_pending());
    // Waiting for the rate permit: nothing charged, no queue place.
    assert_eq!(handle.queued(), 0);
    tokio::time::advance(ms(1_000)).await;
    assert!(futures_util::poll!(call.as_mut()).is_pending());
    // Permit at 1 s; tokens charged; queued for the slot.
    assert_eq!(handle.queued(), 1);
    assert_eq!(handle.snapshot()[0].tokens_available, Some(800));
    still_waiting_for(&mut call, 499).await;
    tokio::time::advance(ms(1)).await;
    let err = refused(call.as_mut().now_or_never());
    assert_eq!(start.elapsed(), ms(1_500));
    assert_eq!(
        (full(&err).limit(), full(&err).waited()),
        (LimitKind::MaxWait, ms(1_500))
    );
    assert_eq!(handle.queued(), 0);
    assert_eq!(
        handle.snapshot()[0].tokens_available,
        Some(900),
        "charge refunded"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_wait_followed_by_an_expired_deadline_does_not_queue() {
    // The rate wait fits, but while it sleeps the call's time runs out (its task ran late): it
    // then takes no queue place.
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queued(1)
        .max_wait(Duration::from_secs(10))
        .rate_limit(RateLimit::per_second(1).max_wait(Duration::from_secs(5)))
        .release_on_response()
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(|_: http::Request<()>| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, Infallible>(())
            }));
    let handle = svc.handle();
    tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    settle().await;
    let mut call = Box::pin(svc.clone().oneshot(budgeted((), ms(1_200))));
    assert!(futures_util::poll!(call.as_mut()).is_pending());
    // Not polled again until well after the deadline.
    tokio::time::advance(ms(2_000)).await;
    let err = refused(call.as_mut().now_or_never());
    assert_eq!(full(&err).limit(), LimitKind::Concurrency);
    assert_eq!((handle.in_flight(), handle.queued()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn dropping_a_budgeted_waiter_frees_its_queue_place_and_tokens() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queued(1)
        .max_wait(Duration::from_secs(10))
        .token_limit(
            TokenLimit::new(1000, Duration::from_secs(1_000_000)),
            |req: &http::Request<u64>| *req.body(),
        )
        .release_on_response()
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(|_: http::Request<u64>| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, Infallible>(())
            }));
    let handle = svc.handle();
    tokio::spawn(svc.clone().oneshot(http::Request::new(100)));
    settle().await;

    let mut call = Box::pin(svc.clone().oneshot(budgeted(100, Duration::from_secs(5))));
    assert!(futures_util::poll!(call.as_mut()).is_pending());
    assert_eq!(handle.queued(), 1);
    assert_eq!(handle.snapshot()[0].tokens_available, Some(800));
    tokio::time::advance(ms(100)).await;
    drop(call);
    assert_eq!((handle.in_flight(), handle.queued()), (1, 0));
    assert_eq!(handle.snapshot()[0].tokens_available, Some(900));

    // The place is free for the next caller.
    let mut next = Box::pin(svc.clone().oneshot(budgeted(100, Duration::from_secs(5))));
    assert!(futures_util::poll!(next.as_mut()).is_pending());
    assert_eq!(handle.queued(), 1);
}

/// A typed request that carries its own deadline, read by a custom [`ReadBudget`].
#[derive(Clone, Debug)]
struct Chat {
    deadline: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct ChatBudget;

impl ReadBudget<Chat> for ChatBudget {
    fn budget(&self, req: &Chat) -> Option<AttemptBudget> {
        req.deadline.map(AttemptBudget::until)
    }
}

#[tokio::test(start_paused = true)]
async fn a_typed_client_reads_its_deadline_with_its_own_reader() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_wait(Duration::from_secs(10))
        .release_on_response()
        .classifier(ErrorsOnly)
        .read_budget(ChatBudget)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: Chat| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Infallible>(())
        }));
    let handle = svc.handle();
    tokio::spawn(svc.clone().oneshot(Chat { deadline: None }));
    settle().await;
    let start = Instant::now();
    let err = svc
        .clone()
        .oneshot(Chat {
            deadline: Some(start + ms(250)),
        })
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), ms(250));
    assert_eq!(full(&err).limit(), LimitKind::MaxWait);
    assert_eq!(handle.queued(), 0);
}
