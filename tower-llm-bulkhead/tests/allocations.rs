//! The hot path allocates nothing: an uncontended call through a bulkhead, with or without an
//! attempt deadline on the request (the deadline is read only when a call would wait).
//!
//! One test in this binary, so no other test allocates while it counts.

use std::alloc::System;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{service_fn, Layer, Service};
use tower_llm_bulkhead::BulkheadLayer;
use tower_llm_core::AttemptBudget;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

type Req = http::Request<()>;

fn call_once<S: Service<Req>>(svc: &mut S, cx: &mut Context<'_>, req: Req) {
    assert!(matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))));
    let fut = pin!(svc.call(req));
    match fut.poll(cx) {
        Poll::Ready(Ok(res)) => drop(res),
        _ => panic!("an uncontended call completes at once"),
    }
}

/// Allocations made while `svc` serves 1,000 requests from `request` (built before counting).
/// The counter is process-wide, and the test harness's main thread allocates once right after it
/// starts the test's thread (its bookkeeping of the running test, and the channel it waits on):
/// under load that can land in a round (CI: 4 allocations in about one run in eight). The
/// bulkhead's own count is the same every round, so the fewest of three rounds is its count.
fn allocations<S: Service<Req>>(svc: &mut S, request: impl Fn() -> Req) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    call_once(svc, &mut cx, http::Request::new(()));
    (0..3)
        .map(|_| {
            let requests: Vec<Req> = (0..1_000).map(|_| request()).collect();
            let region = Region::new(GLOBAL);
            for req in requests {
                call_once(svc, &mut cx, req);
            }
            region.change().allocations
        })
        .min()
        .unwrap_or(usize::MAX)
}

#[test]
fn an_uncontended_call_allocates_nothing_with_or_without_a_deadline() {
    let mut svc = BulkheadLayer::builder()
        .max_concurrent(4)
        .build()
        .unwrap()
        .layer(service_fn(|_req: Req| {
            std::future::ready(Ok::<_, Infallible>(http::Response::new(
                Empty::<Bytes>::new(),
            )))
        }));

    assert_eq!(
        allocations(&mut svc, || http::Request::new(())),
        0,
        "no budget"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let budgeted = || {
        let mut req = http::Request::new(());
        req.extensions_mut()
            .insert(AttemptBudget::until(deadline).single_call());
        req
    };
    assert_eq!(allocations(&mut svc, budgeted), 0, "with a budget");
}
