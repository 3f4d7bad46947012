//! Uncontended admission: the bare service, tower-llm-bulkhead, tower's `ConcurrencyLimit` and
//! tower-resilience's bulkhead, side by side, plus allocations per call.
//!
//! Every variant answers at once, so one call is `poll_ready` + `call` + one poll of the response
//! future + dropping the response (which releases the permit), driven by hand with a no-op waker:
//! no executor cost is mixed in. Services are built outside the timed loop; requests are built in
//! the (untimed) setup of `iter_batched`.
//!
//! Allocations are counted with `stats_alloc` as the global allocator (a safe wrapper, so this
//! file needs no `unsafe`), over 10,000 calls per variant, and printed before the timings.
//!
//! Run: `cargo bench -p tower-llm-benches --bench bulkhead -- --warm-up-time 1 --measurement-time 3`

use std::alloc::System;
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion};
use http_body_util::Empty;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{service_fn, Layer, Service};
use tower_llm_bulkhead::{BulkheadLayer, ByTarget, RateLimit, TokenLimit};
use tower_llm_core::Target;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

type Req = http::Request<()>;
type Res = http::Response<Empty<Bytes>>;

fn bare() -> impl Service<
    Req,
    Response = Res,
    Error = Infallible,
    Future = std::future::Ready<Result<Res, Infallible>>,
> + Clone
       + Send
       + 'static {
    service_fn(|_req: Req| {
        std::future::ready(Ok::<_, Infallible>(http::Response::new(Empty::new())))
    })
}

fn request() -> Req {
    http::Request::new(())
}

/// A request already routed to a target (the extension is inserted in the untimed setup).
fn targeted_request() -> Req {
    let mut req = http::Request::new(());
    req.extensions_mut().insert(Target::new("openai", "gpt-4o"));
    req
}

/// One uncontended call, driven to completion without an executor; the response is dropped.
fn call_once<S>(svc: &mut S, cx: &mut Context<'_>, req: Req)
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        other => panic!(
            "uncontended poll_ready must be ready: {:?}",
            other.map(|r| r.is_ok())
        ),
    }
    let fut = pin!(svc.call(req));
    match fut.poll(cx) {
        Poll::Ready(Ok(res)) => drop(black_box(res)),
        Poll::Ready(Err(e)) => panic!("uncontended call failed: {e:?}"),
        Poll::Pending => panic!("uncontended call must complete at once"),
    }
}

/// Allocations and bytes per call over `n` calls.
fn allocations_per_call<S>(svc: &mut S, make: fn() -> Req, n: usize) -> (f64, f64)
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let requests: Vec<Req> = (0..n).map(|_| make()).collect();
    // Warm up (first-call registrations, lazily created state).
    call_once(svc, &mut cx, make());
    let region = Region::new(GLOBAL);
    for req in requests {
        call_once(svc, &mut cx, req);
    }
    let stats = region.change();
    (
        stats.allocations as f64 / n as f64,
        stats.bytes_allocated as f64 / n as f64,
    )
}

/// One variant: its name, and a closure making one call (request built inside, as for all).
type Variant = (&'static str, Box<dyn FnMut(&mut Context<'_>)>);

fn bench_variant<S>(
    c: &mut Criterion,
    variants: &mut Vec<Variant>,
    name: &'static str,
    mut svc: S,
    make: fn() -> Req,
) where
    S: Service<Req> + Clone + 'static,
    S::Error: std::fmt::Debug,
{
    let (allocs, bytes) = allocations_per_call(&mut svc, make, 10_000);
    println!("allocations per call  {name:<40} {allocs:>6.2} allocs  {bytes:>8.1} bytes");
    let mut cx = Context::from_waker(Waker::noop());
    let mut timed = svc.clone();
    c.bench_function(name, |b| {
        b.iter_batched(
            make,
            |req| call_once(&mut timed, &mut cx, req),
            BatchSize::SmallInput,
        )
    });
    variants.push((name, Box::new(move |cx| call_once(&mut svc, cx, make()))));
}

/// The machine these benches run on is shared: a call preempted mid-sample inflates the mean.
/// As a second figure, run every variant in short interleaved rounds and keep each one's fastest
/// round (preemption only ever adds time), so all variants see the same conditions.
///
/// `BULKHEAD_BENCH_ONLY=<substring>` restricts this to matching variants (for `perf record`).
fn interleaved_minimum(variants: &mut [Variant]) {
    const ROUNDS: usize = 15;
    const CALLS: u32 = 100_000;
    let only = std::env::var("BULKHEAD_BENCH_ONLY").ok();
    let mut cx = Context::from_waker(Waker::noop());
    let mut best = vec![Duration::MAX; variants.len()];
    for _ in 0..ROUNDS {
        for (i, (name, call)) in variants.iter_mut().enumerate() {
            if only.as_deref().is_some_and(|only| !name.contains(only)) {
                continue;
            }
            let start = std::time::Instant::now();
            for _ in 0..CALLS {
                call(&mut cx);
            }
            best[i] = best[i].min(start.elapsed() / CALLS);
        }
    }
    println!(
        "\nfastest of {ROUNDS} interleaved rounds of {CALLS} calls (request built in the loop):"
    );
    for ((name, _), t) in variants
        .iter()
        .zip(best)
        .filter(|(_, t)| *t != Duration::MAX)
    {
        println!("  {name:<42} {:>7.1} ns/call", t.as_secs_f64() * 1e9);
    }
}

fn uncontended_admission(c: &mut Criterion) {
    // tower-resilience's bounded-wait mode builds a tokio timeout: it needs a runtime context
    // (it never waits here, so no timer fires).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _enter = rt.enter();

    let mut v = Vec::new();
    bench_variant(c, &mut v, "bare service", bare(), request);
    bench_variant(
        c,
        &mut v,
        "bare service, routed request",
        bare(),
        targeted_request,
    );

    let ours = BulkheadLayer::builder()
        .max_concurrent(64)
        .max_queued(128)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    bench_variant(c, &mut v, "tower-llm-bulkhead", ours.layer(bare()), request);

    let keyed = BulkheadLayer::builder()
        .partition_by(ByTarget::new())
        .build()
        .unwrap();
    bench_variant(
        c,
        &mut v,
        "tower-llm-bulkhead by target",
        keyed.layer(bare()),
        targeted_request,
    );

    let on_response = BulkheadLayer::builder()
        .release_on_response()
        .build()
        .unwrap();
    bench_variant(
        c,
        &mut v,
        "tower-llm-bulkhead release on response",
        on_response.layer(bare()),
        request,
    );

    // With a request-rate limit (governor, on tokio's clock) that never bites.
    let rated = BulkheadLayer::builder()
        .rate_limit(RateLimit::new(1_000_000_000, Duration::from_secs(1)))
        .build()
        .unwrap();
    bench_variant(
        c,
        &mut v,
        "tower-llm-bulkhead + rate limit",
        rated.layer(bare()),
        request,
    );

    // With a token budget that never runs out (each call estimated at 100 tokens).
    let budgeted = BulkheadLayer::builder()
        .token_limit(TokenLimit::per_minute(u64::MAX / 2), |_: &Req| 100)
        .build()
        .unwrap();
    bench_variant(
        c,
        &mut v,
        "tower-llm-bulkhead + token limit",
        budgeted.layer(bare()),
        request,
    );

    let tower_limit = tower::limit::ConcurrencyLimitLayer::new(64);
    bench_variant(
        c,
        &mut v,
        "tower ConcurrencyLimit",
        tower_limit.layer(bare()),
        request,
    );

    let resilience = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(64)
        .max_wait_duration(Duration::from_secs(1))
        .build()
        .unwrap();
    bench_variant(
        c,
        &mut v,
        "tower-resilience bulkhead (bounded wait)",
        resilience.layer(bare()),
        request,
    );

    let backpressure = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(64)
        .backpressure()
        .build()
        .unwrap();
    bench_variant(
        c,
        &mut v,
        "tower-resilience bulkhead (backpressure)",
        backpressure.layer(bare()),
        request,
    );

    interleaved_minimum(&mut v);
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    uncontended_admission(&mut c);
    c.final_summary();
}
