//! Allocations per `ready().call()` through the breaker, counted with a counting global
//! allocator (`stats_alloc`): none on the closed path (plain and keyed), exactly one (the boxed
//! `BreakerOpen`) per rejection, open or half-open and full. The criterion bench
//! (`benches-crate/benches/breaker.rs`) times the same calls with the plain system allocator, so
//! that the counting does not slow down the variants that allocate.
//!
//! One test function: the counter is global, so nothing else may run in this binary meanwhile.

use std::convert::Infallible;
use std::time::Duration;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_llm_breaker::{CircuitBreakerLayer, KeyedCircuitBreakerLayer};
use tower_llm_core::BreakerOpen;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const CALLS: usize = 1_000;

type Req = http::Request<()>;
type Res = http::Response<()>;

fn noop() -> impl Service<
    Req,
    Response = Res,
    Error = Infallible,
    Future = std::future::Ready<Result<Res, Infallible>>,
> + Clone {
    service_fn(|_: Req| std::future::ready(Ok(http::Response::new(()))))
}

/// The same settings on a layer builder or a keyed layer builder, built.
macro_rules! configured {
    ($builder:expr) => {
        $builder
            .name("allocs")
            .open_duration(Duration::from_secs(3600))
            .max_open_duration(Duration::from_secs(3600))
            .permitted_calls_in_half_open(1)
            .build()
            .unwrap()
    };
}

/// Mean allocations per call over `CALLS` calls (after a warm-up), and how many failed.
async fn per_call<S>(svc: &mut S, requests: impl Fn() -> Req) -> (f64, usize)
where
    S: Service<Req, Response = Res>,
    S::Error: Into<tower_llm_core::BoxError>,
{
    let mut rejected = 0;
    for _ in 0..10 {
        if let Ok(ready) = svc.ready().await {
            let _ = ready.call(requests()).await;
        }
    }
    // The counter is process-wide: an allocation of another thread (the test harness's) can
    // land in a round. The breaker's own count is the same every round, so the fewest of three
    // rounds is its count; noise only ever adds.
    let mut fewest = usize::MAX;
    for _ in 0..3 {
        rejected = 0;
        // The requests are built before counting: only the breaker's allocations are counted.
        let reqs: Vec<Req> = (0..CALLS).map(|_| requests()).collect();
        let region = Region::new(GLOBAL);
        for req in reqs {
            let ready = match svc.ready().await {
                Ok(ready) => ready,
                Err(_) => panic!("poll_ready failed"),
            };
            if ready.call(req).await.is_err() {
                rejected += 1;
            }
        }
        let change = region.change();
        fewest = fewest.min(change.allocations + change.reallocations);
    }
    (fewest as f64 / CALLS as f64, rejected)
}

#[tokio::test(flavor = "current_thread")]
async fn allocations_per_call() {
    let plain = || http::Request::new(());

    let layer = configured!(CircuitBreakerLayer::builder());
    let mut svc = layer.layer(noop());
    let (closed, rejected) = per_call(&mut svc, plain).await;
    println!("closed:              {closed:.2} allocations per call");
    assert_eq!((closed, rejected), (0.0, 0));

    layer.handle().trip();
    let (open, rejected) = per_call(&mut svc, plain).await;
    println!("open (rejected):     {open:.2} allocations per call");
    assert_eq!((open, rejected), (1.0, CALLS));
    let err = svc.ready().await.unwrap().call(plain()).await.unwrap_err();
    assert!(err.is::<BreakerOpen>(), "unexpected error: {err}");

    // Half-open with its one probe in flight: every other call is rejected.
    layer
        .handle()
        .transition_to(tower_llm_breaker::State::HalfOpen);
    let probe = layer.handle().try_acquire().expect("the probe");
    let (half_open, rejected) = per_call(&mut svc, plain).await;
    println!("half-open, full:     {half_open:.2} allocations per call");
    assert_eq!((half_open, rejected), (1.0, CALLS));
    drop(probe);

    // Keyed by target: the per-key breaker exists after the warm-up; a lookup allocates nothing.
    let keyed = configured!(KeyedCircuitBreakerLayer::builder());
    let mut svc = keyed.layer(noop());
    let target = || {
        let mut req = http::Request::new(());
        req.extensions_mut()
            .insert(tower_llm_core::Target::new("openai", "gpt-4o"));
        req
    };
    let (keyed_closed, rejected) = per_call(&mut svc, target).await;
    println!("keyed, closed:       {keyed_closed:.2} allocations per call");
    assert_eq!((keyed_closed, rejected), (0.0, 0));

    // The peer the bench compares with, for the record (not asserted).
    let peer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .name("allocs")
        .wait_duration_in_open(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut svc = peer.layer(noop());
    let (closed, _) = per_call(&mut svc, plain).await;
    println!("tower-resilience, closed: {closed:.2} allocations per call");
    svc.force_open().await;
    let (open, rejected) = per_call(&mut svc, plain).await;
    println!("tower-resilience, open:   {open:.2} allocations per call");
    assert_eq!(rejected, CALLS);
}
