//! `Duration::MAX` for each configured wait means "no deadline", never an `Instant` overflow
//! (issue 15, finding 7), with paused time.

mod common;

use std::time::Duration;

use common::{settle, slow_upstream, Probe};
use futures_util::FutureExt;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_bulkhead::{BulkheadLayer, RateLimit, TokenLimit};

#[tokio::test(start_paused = true)]
async fn an_unbounded_queue_wait_waits_until_a_slot_frees() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_wait(Duration::MAX)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_upstream(Probe::default(), Duration::from_secs(3600)));
    let handle = svc.handle();
    let first = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    settle().await;
    let mut second = Box::pin(svc.clone().oneshot(http::Request::new(())));
    assert!(second.as_mut().now_or_never().is_none());
    assert_eq!((handle.in_flight(), handle.queued()), (1, 1));
    // Far past any finite default, still queued.
    tokio::time::advance(Duration::from_secs(3599)).await;
    assert!(second.as_mut().now_or_never().is_none());
    // The first call ends: the waiter gets its slot.
    drop(first.await.unwrap().unwrap());
    let res = second.await.unwrap();
    assert_eq!(res.status(), 200);
    drop(res);
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn unbounded_rate_and_token_waits_wait_for_the_budget() {
    let layer = BulkheadLayer::builder()
        .max_wait(Duration::MAX)
        .rate_limit(RateLimit::per_second(1).max_wait(Duration::MAX))
        .token_limit(
            TokenLimit::per_minute(1_000_000).max_wait(Duration::MAX),
            |_: &http::Request<()>| 1,
        )
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_upstream(Probe::default(), Duration::ZERO));
    let start = tokio::time::Instant::now();
    for _ in 0..3 {
        let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    // One request per second: the third waited about two seconds for its turn.
    assert!(
        start.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        start.elapsed()
    );
}
