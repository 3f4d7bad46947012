//! Permits are released on every path: completion, error, body end, body drop, cancellation,
//! panic.

mod common;

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::{drip, settle, slow_upstream, Probe};
use futures_util::FutureExt;
use http_body_util::BodyExt;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_bulkhead::BulkheadLayer;
use tower_llm_core::{BulkheadFull, LimitKind};

fn layer(max_concurrent: usize) -> BulkheadLayer {
    BulkheadLayer::builder()
        .max_concurrent(max_concurrent)
        .max_wait(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn released_when_the_inner_future_panics_in_a_task() {
    let upstream = service_fn(|_req: http::Request<()>| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if true {
            panic!("upstream bug");
        }
        Ok::<http::Response<common::Body>, Infallible>(http::Response::new(Default::default()))
    });
    let svc = ServiceBuilder::new().layer(layer(1)).service(upstream);
    let handle = svc.handle();
    let join = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    settle().await;
    assert_eq!(handle.in_flight(), 1);
    let err = join.await.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn released_when_the_inner_future_panics_under_catch_unwind() {
    let upstream = service_fn(|_req: http::Request<()>| async {
        if true {
            panic!("upstream bug");
        }
        Ok::<http::Response<common::Body>, Infallible>(http::Response::new(Default::default()))
    });
    let svc = ServiceBuilder::new().layer(layer(1)).service(upstream);
    let handle = svc.handle();
    for _ in 0..3 {
        let caught = AssertUnwindSafe(svc.clone().oneshot(http::Request::new(())))
            .catch_unwind()
            .await;
        assert!(caught.is_err());
        assert_eq!(handle.in_flight(), 0, "the single slot is free again");
    }
}

#[tokio::test(start_paused = true)]
async fn released_when_the_inner_service_panics_in_call() {
    #[derive(Clone)]
    struct PanicsInCall;
    impl tower::Service<http::Request<()>> for PanicsInCall {
        type Response = http::Response<common::Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            panic!("bug in call")
        }
    }
    let svc = ServiceBuilder::new().layer(layer(1)).service(PanicsInCall);
    let handle = svc.handle();
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut svc = svc.clone();
        drop(tower::Service::call(&mut svc, http::Request::new(())));
    }));
    assert!(caught.is_err());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn released_on_inner_error() {
    let upstream = service_fn(|_req: http::Request<()>| async {
        Err::<http::Response<common::Body>, _>(std::io::Error::other("connection reset"))
    });
    let svc = ServiceBuilder::new().layer(layer(1)).service(upstream);
    let handle = svc.handle();
    let err = svc
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap_err();
    assert!(
        err.downcast_ref::<std::io::Error>().is_some(),
        "inner errors pass through unchanged"
    );
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn streaming_body_holds_its_permit_until_it_ends() {
    let upstream = service_fn(|_req: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(drip(3, Duration::from_millis(100))))
    });
    let svc = ServiceBuilder::new().layer(layer(1)).service(upstream);
    let handle = svc.handle();
    let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    let mut body = res.into_body();
    assert!(body.holds_permit());
    let mut chunks = 0;
    while let Some(frame) = body.frame().await {
        frame.unwrap();
        chunks += 1;
        if chunks < 3 {
            assert_eq!(handle.in_flight(), 1, "mid-stream: still held");
        }
    }
    assert_eq!(chunks, 3);
    assert!(!body.holds_permit());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_body_mid_stream_releases_and_admits_the_next_waiter() {
    let upstream = service_fn(|_req: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(drip(100, Duration::from_secs(1))))
    });
    let svc = ServiceBuilder::new().layer(layer(1)).service(upstream);
    let handle = svc.handle();
    let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    let waiter = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (1, 1));
    drop(body); // the client went away
    let next = waiter.await.unwrap().unwrap();
    assert_eq!((handle.in_flight(), handle.queued()), (1, 0));
    drop(next);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn empty_body_releases_at_once() {
    let upstream = service_fn(|_req: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
        ))
    });
    let svc = ServiceBuilder::new().layer(layer(1)).service(upstream);
    let handle = svc.handle();
    let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    assert!(!res.body().holds_permit());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_running_call_releases_its_permit() {
    let probe = Probe::default();
    let svc = ServiceBuilder::new()
        .layer(layer(1))
        .service(slow_upstream(probe.clone(), Duration::from_secs(10)));
    let handle = svc.handle();
    let timed_out = tokio::time::timeout(
        Duration::from_secs(1),
        svc.clone().oneshot(http::Request::new(())),
    )
    .await;
    assert!(timed_out.is_err());
    assert_eq!(probe.current(), 0, "the inner future was dropped");
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_waiting_call_leaves_the_queue() {
    let svc = ServiceBuilder::new()
        .layer(layer(1))
        .service(slow_upstream(Probe::default(), Duration::from_secs(2)));
    let handle = svc.handle();
    let running = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    settle().await;
    let waited = tokio::time::timeout(
        Duration::from_secs(1),
        svc.clone().oneshot(http::Request::new(())),
    )
    .await;
    assert!(waited.is_err());
    assert_eq!((handle.in_flight(), handle.queued()), (1, 0));
    drop(running.await.unwrap().unwrap());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_slot_handed_to_a_cancelled_waiter_is_passed_on() {
    // The slot is handed over, then the waiter's future is dropped before it runs again.
    let svc = ServiceBuilder::new()
        .layer(layer(1))
        .service(slow_upstream(Probe::default(), Duration::from_millis(10)));
    let handle = svc.handle();
    let first = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    let mut second = Box::pin(svc.clone().oneshot(http::Request::new(())));
    assert!(futures_util::poll!(second.as_mut()).is_pending());
    let third = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (1, 2));
    drop(first); // hands the slot to `second`
    assert_eq!((handle.in_flight(), handle.queued()), (1, 1));
    drop(second); // never used it: passes it to `third`
    assert_eq!((handle.in_flight(), handle.queued()), (1, 0));
    drop(third.await.unwrap().unwrap());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_future_dropped_before_its_first_poll_holds_nothing() {
    let svc = ServiceBuilder::new()
        .layer(layer(1))
        .service(slow_upstream(Probe::default(), Duration::from_millis(10)));
    let handle = svc.handle();
    let held = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    let mut s = svc.clone();
    s.ready().await.unwrap();
    let waiting = tower::Service::call(&mut s, http::Request::new(()));
    drop(waiting);
    assert_eq!((handle.in_flight(), handle.queued()), (1, 0));
    drop(held);
    assert_eq!(handle.in_flight(), 0);
    let err = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queued(0)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(err)
        .service(slow_upstream(Probe::default(), Duration::from_millis(10)));
    let held = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    let rejected = svc
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(
        rejected.downcast_ref::<BulkheadFull>().unwrap().limit(),
        LimitKind::Concurrency
    );
    drop(held);
}
