//! Partitions: per-key limits, per-key overrides, the partition bound, overflow and eviction.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use common::settle;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_bulkhead::{
    partition_fn, BulkheadLayer, ByTarget, ErrorsOnly, PartitionConfig, PartitionOverflow,
    RateLimit,
};
use tower_llm_core::{BulkheadFull, LimitKind, NoBudget, Target};

fn targeted(provider: &str, model: &str) -> http::Request<()> {
    let mut req = http::Request::new(());
    req.extensions_mut().insert(Target::new(provider, model));
    req
}

fn upstream_sleeping(
    d: Duration,
) -> impl tower::Service<http::Request<()>, Response = (), Error = Infallible, Future = impl Send> + Clone
{
    service_fn(move |_req: http::Request<()>| async move {
        tokio::time::sleep(d).await;
        Ok::<_, Infallible>(())
    })
}

#[tokio::test(start_paused = true)]
async fn each_target_has_its_own_limits_and_overrides_apply() {
    let layer = BulkheadLayer::builder()
        .partition_by(ByTarget::new())
        .max_concurrent(1)
        .max_queued(0)
        .partition_config(|target: &Target| {
            (target.provider() == "big").then(|| {
                PartitionConfig::builder()
                    .max_concurrent(3)
                    .max_queued(0)
                    .build()
                    .unwrap()
            })
        })
        .release_on_response()
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(upstream_sleeping(Duration::from_secs(1)));
    let handle = svc.handle();
    let mut running = Vec::new();
    for req in [
        targeted("openai", "gpt-4o"),
        targeted("groq", "llama"),
        targeted("big", "m"),
        targeted("big", "m"),
        targeted("big", "m"),
    ] {
        running.push(tokio::spawn(svc.clone().oneshot(req)));
    }
    settle().await;
    // openai/gpt-4o is full; groq and big are not affected by it.
    let err = svc
        .clone()
        .oneshot(targeted("openai", "gpt-4o"))
        .await
        .unwrap_err();
    let full = err.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(
        (full.bulkhead(), full.limit(), full.in_flight()),
        ("openai/gpt-4o", LimitKind::Concurrency, 1)
    );
    let err = svc.clone().oneshot(targeted("big", "m")).await.unwrap_err();
    assert_eq!(err.downcast_ref::<BulkheadFull>().unwrap().in_flight(), 3);
    assert!(svc
        .clone()
        .oneshot(targeted("openai", "gpt-4o-mini"))
        .await
        .is_ok());
    let snap = handle.partition(&Target::new("big", "m")).unwrap();
    assert_eq!((snap.in_flight, snap.limit), (3, 3));
    for r in running {
        r.await.unwrap().unwrap();
    }
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(
        handle.snapshot().len(),
        5,
        "four targets + the overflow partition"
    );
}

#[tokio::test(start_paused = true)]
async fn partition_bound_rejects_new_keys() {
    let layer = BulkheadLayer::builder()
        .name("tenants")
        .partition_by(partition_fn(|tenant: &&'static str| *tenant))
        .max_partitions(2)
        .partition_overflow(PartitionOverflow::Reject)
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: &'static str| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, Infallible>(())
        }));
    let a = tokio::spawn(svc.clone().oneshot("a"));
    let b = tokio::spawn(svc.clone().oneshot("b"));
    settle().await;
    let err = svc.clone().oneshot("c").await.unwrap_err();
    let full = err.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(
        (full.bulkhead(), full.limit()),
        ("tenants", LimitKind::Partitions)
    );
    // Known keys still work.
    assert!(svc.clone().oneshot("a").await.is_ok());
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn keys_beyond_the_bound_share_the_overflow_partition() {
    let layer = BulkheadLayer::builder()
        .partition_by(partition_fn(|tenant: &u32| *tenant))
        .max_partitions(1)
        .max_concurrent(2)
        .max_queued(0)
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: u32| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, Infallible>(())
        }));
    let handle = svc.handle();
    let mut running = vec![tokio::spawn(svc.clone().oneshot(1))];
    settle().await;
    // Tenants 2 and 3 arrive while tenant 1 is busy: together they get one partition's share.
    running.push(tokio::spawn(svc.clone().oneshot(2)));
    running.push(tokio::spawn(svc.clone().oneshot(3)));
    settle().await;
    let err = svc.clone().oneshot(4).await.unwrap_err();
    let full = err.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(
        (full.bulkhead(), full.limit()),
        ("overflow", LimitKind::Concurrency)
    );
    let names: Vec<_> = handle
        .snapshot()
        .into_iter()
        .map(|s| (s.partition.to_string(), s.in_flight))
        .collect();
    assert_eq!(names, [("1".to_string(), 1), ("overflow".to_string(), 2)]);
    for r in running {
        r.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn idle_partitions_are_evicted_to_make_room() {
    let layer = BulkheadLayer::builder()
        .partition_by(partition_fn(|tenant: &u32| *tenant))
        .max_partitions(2)
        .rate_limit(RateLimit::per_second(1))
        .partition_overflow(PartitionOverflow::Reject)
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: u32| async { Ok::<_, Infallible>(()) }));
    let handle = svc.handle();
    svc.clone().oneshot(1).await.unwrap();
    svc.clone().oneshot(2).await.unwrap();
    // Both partitions just spent their rate permit: not idle, nothing to evict.
    let err = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BulkheadFull>().unwrap().limit(),
        LimitKind::Partitions
    );
    // A second later both limiters are full again: idle, evicted, and tenant 3 gets a partition.
    tokio::time::advance(Duration::from_secs(1)).await;
    svc.clone().oneshot(3).await.unwrap();
    let names: Vec<_> = handle
        .snapshot()
        .into_iter()
        .map(|s| s.partition.to_string())
        .collect();
    assert_eq!(names, ["3"]);
    // Eviction lost nothing: tenant 3's own rate limit still applies.
    let err = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BulkheadFull>().unwrap().limit(),
        LimitKind::Rate
    );
}

#[tokio::test(start_paused = true)]
async fn busy_partitions_are_never_evicted() {
    let layer = BulkheadLayer::builder()
        .partition_by(partition_fn(|tenant: &u32| *tenant))
        .max_partitions(1)
        .max_concurrent(1)
        .max_queued(0)
        .partition_overflow(PartitionOverflow::Reject)
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: u32| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, Infallible>(())
        }));
    let busy = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(2)).await;
        let err = svc.clone().oneshot(2).await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<BulkheadFull>().unwrap().limit(),
            LimitKind::Partitions
        );
    }
    // Tenant 1's limit still holds: its partition was not replaced by a fresh one.
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BulkheadFull>().unwrap().limit(),
        LimitKind::Concurrency
    );
    busy.await.unwrap().unwrap();
}
