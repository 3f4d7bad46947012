//! Adaptive concurrency moves down under injected latency or load shedding, and back up after.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::Probe;
use http_body_util::{BodyExt, Full};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_bulkhead::{AdaptiveConcurrency, BulkheadLayer};

/// An upstream whose latency and status can be changed while the test runs.
#[derive(Clone)]
struct Knobs {
    latency_ms: Arc<AtomicU64>,
    status: Arc<AtomicU64>,
}

impl Knobs {
    fn new() -> Self {
        Knobs {
            latency_ms: Arc::new(AtomicU64::new(10)),
            status: Arc::new(AtomicU64::new(200)),
        }
    }
}

/// Run `callers` closed-loop callers until `stop` is set.
fn load<S>(svc: S, callers: usize, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>>
where
    S: tower::Service<
            http::Request<()>,
            Response = http::Response<tower_llm_bulkhead::PermitBody<Full<Bytes>>>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
{
    (0..callers)
        .map(|_| {
            let svc = svc.clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(res) = svc.clone().oneshot(http::Request::new(())).await {
                        let _ = res.into_body().collect().await;
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn limit_falls_under_latency_and_recovers_after() {
    let knobs = Knobs::new();
    let probe = Probe::default();
    let (k, p) = (knobs.clone(), probe.clone());
    let upstream = service_fn(move |_req: http::Request<()>| {
        let (k, p) = (k.clone(), p.clone());
        async move {
            let _inside = p.enter();
            tokio::time::sleep(Duration::from_millis(k.latency_ms.load(Ordering::SeqCst))).await;
            let status = k.status.load(Ordering::SeqCst) as u16;
            Ok::<_, Infallible>(
                http::Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .unwrap(),
            )
        }
    });
    let layer = BulkheadLayer::builder()
        .max_concurrent(20)
        .max_queued(100)
        .max_wait(Duration::from_secs(60))
        .adaptive(AdaptiveConcurrency::new(Duration::from_millis(200)).min_limit(2))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(upstream);
    let handle = svc.handle();
    let limit = || handle.snapshot()[0].limit;
    let stop = Arc::new(AtomicBool::new(false));
    let callers = load(svc.clone(), 30, Arc::clone(&stop));

    // Healthy: the limit stays at its maximum.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(limit(), 20);
    assert_eq!(probe.max(), 20);

    // The target slows down to 1 s per call: the limit backs off to its floor.
    knobs.latency_ms.store(1000, Ordering::SeqCst);
    let mut seen = vec![limit()];
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        seen.push(limit());
    }
    assert!(
        seen.windows(2).all(|w| w[1] <= w[0]),
        "only decreases while slow: {seen:?}"
    );
    assert_eq!(limit(), 2, "{seen:?}");
    assert!(probe.current() <= 2);

    // It recovers: once the slow calls still in flight are done (within 1 s), the limit climbs
    // back, one step per fast call.
    knobs.latency_ms.store(10, Ordering::SeqCst);
    let mut rising = vec![limit()];
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rising.push(limit());
    }
    assert_eq!(limit(), 20, "{rising:?}");
    assert_eq!(probe.max(), 20);

    stop.store(true, Ordering::SeqCst);
    for c in callers {
        c.await.unwrap();
    }
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn limit_falls_when_the_target_sheds_load() {
    let knobs = Knobs::new();
    let k = knobs.clone();
    let upstream = service_fn(move |_req: http::Request<()>| {
        let k = k.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let status = k.status.load(Ordering::SeqCst) as u16;
            Ok::<_, Infallible>(
                http::Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
        }
    });
    let layer = BulkheadLayer::builder()
        .max_concurrent(10)
        .adaptive(
            AdaptiveConcurrency::new(Duration::from_secs(1))
                .backoff_ratio(0.5)
                .cooldown(Duration::from_millis(50)),
        )
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(upstream);
    let handle = svc.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let callers = load(svc.clone(), 10, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.snapshot()[0].limit, 10);
    // Fast 503s: latency is fine but the target says it is overloaded.
    knobs.status.store(503, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let after_shedding = handle.snapshot()[0].limit;
    assert!(
        after_shedding <= 2,
        "halved at most every 50 ms: {after_shedding}"
    );
    // Client errors say nothing about load: no change.
    knobs.status.store(400, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.snapshot()[0].limit, after_shedding);
    knobs.status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.snapshot()[0].limit, 10);
    stop.store(true, Ordering::SeqCst);
    for c in callers {
        c.await.unwrap();
    }
}

/// A typed client's own classifier, set with `.classifier(...)`, decides what counts as load
/// shedding for the adaptive limit; `.adaptive(...)` only sets its parameters.
#[tokio::test(start_paused = true)]
async fn a_typed_clients_classifier_drives_the_adaptive_limit() {
    use tower_llm_core::{Classification, Classify, ErrorKind, Failure, NoBudget};

    /// A typed answer: `busy` is the provider saying it shed the call.
    struct Answer {
        busy: bool,
    }

    #[derive(Clone)]
    struct Busy;
    impl Classify<Answer> for Busy {
        fn classify_response(&self, answer: &Answer) -> Classification {
            if answer.busy {
                Classification::Failure(Failure::new(ErrorKind::Overloaded))
            } else {
                Classification::Success
            }
        }
    }

    let layer = BulkheadLayer::builder()
        .max_concurrent(8)
        .adaptive(AdaptiveConcurrency::new(Duration::from_secs(5)).cooldown(Duration::ZERO))
        .classifier(Busy)
        .release_on_response()
        .read_budget(NoBudget)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|busy: bool| async move {
            Ok::<_, Infallible>(Answer { busy })
        }));
    let limit = || handle.snapshot()[0].limit;

    // Fast answers never lower it; a shed call does, at once.
    svc.clone().oneshot(false).await.unwrap();
    assert_eq!(limit(), 8);
    svc.clone().oneshot(true).await.unwrap();
    assert!(limit() < 8, "limit {}", limit());
}
