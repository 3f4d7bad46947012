//! The layer owns the bulkhead: every service it wraps, every clone of the layer and of those
//! services, and every handle see one set of partitions and permits.

mod common;

use std::time::Duration;

use common::{settle, slow_upstream, Probe};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_llm_bulkhead::{BulkheadLayer, ByTarget};
use tower_llm_core::{BulkheadFull, LimitKind, Target};

#[tokio::test(start_paused = true)]
async fn services_wrapped_by_one_layer_share_its_permits() {
    let layer = BulkheadLayer::builder()
        .name("shared")
        .max_concurrent(2)
        .max_queued(0)
        .build()
        .unwrap();
    let handle = layer.handle();
    let (probe_a, probe_b) = (Probe::default(), Probe::default());
    // Two inner services, wrapped separately (as axum's `Router::layer` does per route), one
    // through a clone of the layer.
    let a = layer.layer(slow_upstream(probe_a.clone(), Duration::from_secs(1)));
    let b = layer
        .clone()
        .layer(slow_upstream(probe_b.clone(), Duration::from_secs(1)));

    let first = tokio::spawn(a.clone().oneshot(http::Request::new(())));
    let second = tokio::spawn(b.clone().oneshot(http::Request::new(())));
    settle().await;
    assert_eq!((probe_a.current(), probe_b.current()), (1, 1));
    assert_eq!(handle.in_flight(), 2);
    assert_eq!(
        a.handle().in_flight(),
        2,
        "the service's handle is the layer's"
    );

    // Both permits are taken: either service turns the next call away.
    for svc in [a.clone(), b.clone()] {
        let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
        let full = err.downcast_ref::<BulkheadFull>().unwrap();
        assert_eq!(
            (full.limit(), full.in_flight()),
            (LimitKind::Concurrency, 2)
        );
    }
    assert_eq!(probe_a.calls() + probe_b.calls(), 2);

    tokio::time::advance(Duration::from_secs(1)).await;
    drop(first.await.unwrap().unwrap());
    drop(second.await.unwrap().unwrap());
    assert_eq!(handle.in_flight(), 0);
    assert!(a.oneshot(http::Request::new(())).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_layers_handle_reaches_into_a_built_chain() {
    let layer = BulkheadLayer::builder()
        .partition_by(ByTarget::new())
        .max_concurrent(3)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow_upstream(Probe::default(), Duration::from_secs(1)));
    // No target has called yet: only the shared overflow partition exists.
    let names: Vec<_> = handle.snapshot().into_iter().map(|s| s.partition).collect();
    assert_eq!(names, [std::sync::Arc::from("overflow")]);

    let mut req = http::Request::new(());
    req.extensions_mut().insert(Target::new("openai", "gpt-4o"));
    let running = tokio::spawn(svc.clone().oneshot(req));
    settle().await;
    let snap = handle.partition(&Target::new("openai", "gpt-4o")).unwrap();
    assert_eq!((snap.in_flight, snap.limit), (1, 3));
    assert_eq!(snap.partition.as_ref(), "openai/gpt-4o");

    tokio::time::advance(Duration::from_secs(1)).await;
    drop(running.await.unwrap().unwrap());
    assert_eq!(handle.in_flight(), 0);
}
