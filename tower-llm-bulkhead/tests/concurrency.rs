//! Concurrency limit, wait queue and maximum wait, with paused time.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{settle, slow_upstream, Probe};
use http_body_util::BodyExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_llm_bulkhead::{BulkheadLayer, ErrorsOnly};
use tower_llm_core::{BulkheadFull, LimitKind, NoBudget};

fn full(err: &tower_llm_core::BoxError) -> &BulkheadFull {
    err.downcast_ref::<BulkheadFull>()
        .unwrap_or_else(|| panic!("expected BulkheadFull, got {err}"))
}

#[tokio::test(start_paused = true)]
async fn limit_holds_under_1000_concurrent_callers() {
    const LIMIT: usize = 16;
    let probe = Probe::default();
    let layer = BulkheadLayer::builder()
        .max_concurrent(LIMIT)
        .max_queued(1000)
        .max_wait(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let latencies: Vec<Duration> = (0..1000)
        .map(|_| Duration::from_millis(rng.random_range(1..200)))
        .collect();
    let probe_in = probe.clone();
    let upstream = service_fn(move |req: http::Request<Duration>| {
        let probe = probe_in.clone();
        async move {
            let _inside = probe.enter();
            tokio::time::sleep(*req.body()).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        }
    });
    let svc = ServiceBuilder::new().layer(layer).service(upstream);
    let handle = svc.handle();
    let max_seen_by_handle = Arc::new(Mutex::new(0usize));

    let mut tasks = Vec::new();
    for latency in latencies {
        let svc = svc.clone();
        let handle = handle.clone();
        let max_seen = Arc::clone(&max_seen_by_handle);
        tasks.push(tokio::spawn(async move {
            let res = svc.oneshot(http::Request::new(latency)).await?;
            {
                let mut m = max_seen.lock().unwrap();
                *m = (*m).max(handle.in_flight());
            }
            // Reading the body is part of the call: the permit is held until it ends.
            res.into_body().collect().await?;
            Ok::<_, tower_llm_core::BoxError>(())
        }));
    }
    settle().await;
    assert_eq!(handle.in_flight(), LIMIT);
    assert_eq!(handle.queued(), 1000 - LIMIT);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(probe.calls(), 1000);
    assert_eq!(
        probe.max(),
        LIMIT,
        "the upstream never saw more than the limit"
    );
    assert!(*max_seen_by_handle.lock().unwrap() <= LIMIT);
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limit_holds_across_threads() {
    // No timing assertions: only invariants that must hold under any interleaving.
    const LIMIT: usize = 8;
    let probe = Probe::default();
    let layer = BulkheadLayer::builder()
        .max_concurrent(LIMIT)
        .max_queued(2000)
        .max_wait(Duration::from_secs(3600))
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let probe_in = probe.clone();
    let upstream = service_fn(move |_req: ()| {
        let probe = probe_in.clone();
        async move {
            let _inside = probe.enter();
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            Ok::<_, std::convert::Infallible>(())
        }
    });
    let svc = ServiceBuilder::new().layer(layer).service(upstream);
    let handle = svc.handle();
    let tasks: Vec<_> = (0..2000)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(()).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(probe.calls(), 2000);
    assert!(probe.max() <= LIMIT, "max {} > {LIMIT}", probe.max());
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hand_offs_racing_timeouts_and_cancellations_lose_nothing() {
    // Real time on four threads: waiters time out (1 ms) and callers cancel (random) while slots
    // are being handed over. Only invariants are checked.
    const LIMIT: usize = 4;
    let probe = Probe::default();
    let layer = BulkheadLayer::builder()
        .max_concurrent(LIMIT)
        .max_queued(16)
        .max_wait(Duration::from_millis(1))
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let probe_in = probe.clone();
    let upstream = service_fn(move |spins: u32| {
        let probe = probe_in.clone();
        async move {
            let _inside = probe.enter();
            for _ in 0..spins {
                tokio::task::yield_now().await;
            }
            Ok::<_, std::convert::Infallible>(())
        }
    });
    let svc = ServiceBuilder::new().layer(layer).service(upstream);
    let handle = svc.handle();
    let mut rng = SmallRng::seed_from_u64(11);
    let tasks: Vec<_> = (0..4000)
        .map(|_| {
            let svc = svc.clone();
            let spins = rng.random_range(0..20);
            let cancel_after = Duration::from_micros(rng.random_range(0..2000));
            tokio::spawn(async move {
                let _ = tokio::time::timeout(cancel_after, svc.oneshot(spins)).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(probe.max() <= LIMIT, "max {} > {LIMIT}", probe.max());
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
    assert_eq!(probe.current(), 0);
}

#[tokio::test(start_paused = true)]
async fn queue_is_bounded_and_overflow_is_rejected_at_once() {
    let probe = Probe::default();
    let layer = BulkheadLayer::builder()
        .name("openai")
        .max_concurrent(2)
        .max_queued(3)
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_upstream(probe.clone(), Duration::from_secs(1)));
    let handle = svc.handle();
    let running: Vec<_> = (0..5)
        .map(|_| tokio::spawn(svc.clone().oneshot(http::Request::new(()))))
        .collect();
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (2, 3));

    let start = tokio::time::Instant::now();
    let err = svc
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "rejected without waiting");
    let f = full(&err);
    assert_eq!(f.bulkhead(), "openai");
    assert_eq!(f.limit(), LimitKind::Queue);
    assert_eq!(f.in_flight(), 2);
    assert_eq!(f.waited(), Duration::ZERO);
    assert_eq!(f.retry_after(), None);

    // Every queued call runs once a slot frees (1 s each, two at a time).
    for t in running {
        let res = t.await.unwrap().unwrap();
        drop(res);
    }
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(probe.calls(), 5);
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn wait_is_bounded_by_max_wait() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queued(10)
        .max_wait(Duration::from_millis(250))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_upstream(Probe::default(), Duration::from_secs(1)));
    let handle = svc.handle();
    let first = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    settle().await;

    let start = tokio::time::Instant::now();
    let err = svc
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    let f = full(&err);
    assert_eq!(f.limit(), LimitKind::MaxWait);
    assert_eq!(f.waited(), Duration::from_millis(250));
    assert_eq!(f.in_flight(), 1);
    assert_eq!(handle.queued(), 0, "the expired waiter left the queue");
    drop(first.await.unwrap().unwrap());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn waiter_is_admitted_when_a_slot_frees_within_the_bound() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_upstream(Probe::default(), Duration::from_millis(400)));
    let first = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    settle().await;
    let start = tokio::time::Instant::now();
    let first_res = first.await.unwrap().unwrap();
    // The first call's body still holds the slot: the second waits until it is dropped.
    let second = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    settle().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(first_res);
    let res = second.await.unwrap().unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(900),
        "400 ms first call + 100 ms body + 400 ms second call"
    );
    drop(res);
}

#[tokio::test(start_paused = true)]
async fn no_queue_means_immediate_concurrency_rejection() {
    for layer in [
        BulkheadLayer::builder()
            .max_concurrent(1)
            .max_queued(0)
            .build()
            .unwrap(),
        BulkheadLayer::builder()
            .max_concurrent(1)
            .max_wait(Duration::ZERO)
            .build()
            .unwrap(),
    ] {
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service(slow_upstream(Probe::default(), Duration::from_secs(1)));
        let first = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
        settle().await;
        let err = svc
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .unwrap_err();
        assert_eq!(full(&err).limit(), LimitKind::Concurrency);
        drop(first.await.unwrap().unwrap());
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let order_in = Arc::clone(&order);
    let upstream = service_fn(move |req: usize| {
        let order = Arc::clone(&order_in);
        async move {
            order.lock().unwrap().push(req);
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, std::convert::Infallible>(req)
        }
    });
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queued(100)
        .max_wait(Duration::from_secs(60))
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new().layer(layer).service(upstream);
    let mut futures = Vec::new();
    for i in 0..20 {
        // Call in a known order; the futures are then driven concurrently.
        svc.ready().await.unwrap();
        futures.push(svc.call(i));
    }
    let results = futures_util::future::join_all(futures).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn newcomers_do_not_barge_past_waiters() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_wait(Duration::from_secs(60))
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let upstream = service_fn(|d: Duration| async move {
        tokio::time::sleep(d).await;
        Ok::<_, std::convert::Infallible>(())
    });
    let svc = ServiceBuilder::new().layer(layer).service(upstream);
    let handle = svc.handle();
    let a = tokio::spawn(svc.clone().oneshot(Duration::from_millis(100)));
    settle().await;
    let b = tokio::spawn(svc.clone().oneshot(Duration::from_millis(100)));
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (1, 1));
    a.await.unwrap().unwrap();
    // The slot went straight to the waiter: a newcomer now has to queue.
    assert_eq!((handle.in_flight(), handle.queued()), (1, 0));
    let c = tokio::spawn(svc.clone().oneshot(Duration::from_millis(100)));
    settle().await;
    assert_eq!(handle.queued(), 1);
    b.await.unwrap().unwrap();
    c.await.unwrap().unwrap();
}
