//! Owned handles reachable from a built `ServiceBuilder` chain: each handle is taken from its
//! layer before `.service(...)`, calls are driven through the chain, and the state is read (and
//! steered) through the handles alone.
//!
//! The stream guard has no handle: it keeps no state between calls.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm::bulkhead::{BulkheadLayer, ByTarget};
use tower_llm::core::{AllTargetsFailed, ReplayBody, StreamGuardLayer, Target};
use tower_llm::fallback::{FallbackLayer, TargetConfig, X_LLM_TARGET};
use tower_llm::ServiceBuilderExt;

#[tokio::test(start_paused = true)]
async fn fallback_and_bulkhead_handles_observe_a_built_chain() {
    let fallback = FallbackLayer::builder()
        .target(TargetConfig::new("primary", "big"))
        .target(TargetConfig::new("secondary", "small"))
        .build()
        .unwrap();
    let bulkhead = BulkheadLayer::builder()
        .name("per-target")
        .partition_by(ByTarget::new())
        .max_concurrent(1)
        .max_queued(0)
        .build()
        .unwrap();
    // The handles, taken before the layers move into the chain.
    let (chain, limits) = (fallback.handle(), bulkhead.handle());

    // The primary is overloaded; the secondary answers once released.
    let entered = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Semaphore::new(0));
    let client = {
        let (entered, release) = (Arc::clone(&entered), Arc::clone(&release));
        service_fn(move |req: http::Request<ReplayBody<Full<Bytes>>>| {
            let (entered, release) = (Arc::clone(&entered), Arc::clone(&release));
            async move {
                let target = req.extensions().get::<Target>().cloned().unwrap();
                let status = if target.provider() == "primary" {
                    503
                } else {
                    entered.fetch_add(1, Ordering::SeqCst);
                    release.acquire().await.unwrap().forget();
                    200
                };
                let body = Full::new(Bytes::from_static(br#"{"choices":[]}"#));
                Ok::<_, Infallible>(http::Response::builder().status(status).body(body).unwrap())
            }
        })
    };
    let svc = ServiceBuilder::new()
        .buffer_request_body(64 * 1024)
        .fallback(fallback)
        .bulkhead(bulkhead)
        .stream_guard(StreamGuardLayer::builder().build().unwrap())
        .inspect_error_body()
        .service(client);
    let request = || {
        http::Request::post("http://gateway/v1/chat/completions")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"m","messages":[]}"#,
            )))
            .unwrap()
    };

    // Call 1: the primary fails and is benched; the secondary takes its one permit.
    let first = tokio::spawn(svc.clone().oneshot(request()));
    while entered.load(Ordering::SeqCst) < 1 {
        tokio::task::yield_now().await;
    }
    let health = chain.health();
    assert!(!health.targets[0].available, "the primary cools down");
    assert!(health.targets[1].available);
    let secondary = limits
        .partition(&Target::new("secondary", "small"))
        .unwrap();
    let primary = limits.partition(&Target::new("primary", "big")).unwrap();
    assert_eq!((secondary.in_flight, primary.in_flight), (1, 0));

    // Call 2: the primary is skipped, the secondary's bulkhead is full: nothing answers, and a
    // local rejection benches nobody.
    let err = svc.clone().oneshot(request()).await.unwrap_err();
    assert!(err.downcast_ref::<AllTargetsFailed>().is_some(), "{err}");
    assert!(chain.health().targets[1].available);
    assert_eq!(limits.in_flight(), 1);

    // Call 1 answers from the secondary; its permit goes back with the body.
    release.add_permits(1);
    let res = first.await.unwrap().unwrap();
    assert_eq!(res.headers()[X_LLM_TARGET], "secondary/small");
    res.into_body().collect().await.unwrap();
    assert_eq!(limits.in_flight(), 0);

    // Steer through the handle: the primary is back in service at once.
    assert!(chain.reset_target("primary/big"));
    assert!(chain.health().targets[0].available);
}
