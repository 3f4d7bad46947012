//! The first-attempt-succeeds path: the bare service, tower's `Retry` (with a policy that clones
//! the request, with and without tower's `TpsBudget`) and this crate's `Retry`, in one run.
//!
//! Every variant sends the same `http::Request<Full<Bytes>>` (method, URI, four headers, a
//! 200-byte JSON body) to an inner service that answers `200` at once. Layers are built outside
//! the timed loop; each timed iteration builds the request (the same cost for all variants),
//! waits for readiness and awaits the response on a current-thread runtime.
//!
//! Before timing, each variant's allocations per call are counted with `stats_alloc`'s
//! instrumented system allocator (its `unsafe impl GlobalAlloc` stays in that crate) and printed.
//!
//! `cargo bench -p tower-llm-benches --bench retry -- --warm-up-time 1 --measurement-time 3`

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::Full;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::Policy;
use tower::{Service, ServiceExt};
use tower_llm_benches::fixtures::BODY;
use tower_llm_retry::{RetryBudget, RetryLayer};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

fn request(body: &Bytes) -> Request<Full<Bytes>> {
    Request::post("http://127.0.0.1:8080/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench-0000000000000000")
        .header("accept", "application/json")
        .header("user-agent", "tower-llm-bench/0.1")
        .body(Full::new(body.clone()))
        .expect("valid request")
}

type Inner =
    tower::util::ServiceFn<fn(Request<Full<Bytes>>) -> Ready<Result<Response<()>, Infallible>>>;

fn inner() -> Inner {
    fn ok(_req: Request<Full<Bytes>>) -> Ready<Result<Response<()>, Infallible>> {
        ready(Ok(Response::new(())))
    }
    tower::service_fn(ok as fn(_) -> _)
}

/// tower's `Retry` policy: clone the request up front (as this crate does), retry errors,
/// optionally through tower's `TpsBudget`.
#[derive(Clone)]
struct ClonePolicy {
    budget: Option<Arc<TpsBudget>>,
}

impl<E> Policy<Request<Full<Bytes>>, Response<()>, E> for ClonePolicy {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<()>, E>,
    ) -> Option<Self::Future> {
        match (result, &self.budget) {
            (Ok(_), Some(budget)) => {
                budget.deposit();
                None
            }
            (Ok(_), None) => None,
            (Err(_), Some(budget)) => budget.withdraw().then(|| ready(())),
            (Err(_), None) => Some(ready(())),
        }
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut copy = Request::new(req.body().clone());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

/// One call: readiness, call, await.
async fn one<S>(svc: &mut S, body: &Bytes)
where
    S: Service<Request<Full<Bytes>>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let res = svc
        .ready()
        .await
        .expect("ready")
        .call(request(body))
        .await
        .expect("ok");
    black_box(res);
}

/// Allocations and allocated bytes per call, over `n` calls after a warm-up.
fn allocations<S>(rt: &tokio::runtime::Runtime, mut svc: S, body: &Bytes, n: usize) -> (f64, f64)
where
    S: Service<Request<Full<Bytes>>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        for _ in 0..100 {
            one(&mut svc, body).await;
        }
        let region = Region::new(GLOBAL);
        for _ in 0..n {
            one(&mut svc, body).await;
        }
        let change = region.change();
        (
            change.allocations as f64 / n as f64,
            change.bytes_allocated as f64 / n as f64,
        )
    })
}

/// Nanoseconds per call of `calls` sequential calls.
fn time_calls<S>(rt: &tokio::runtime::Runtime, svc: &mut S, body: &Bytes, calls: u32) -> f64
where
    S: Service<Request<Full<Bytes>>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..calls {
            one(svc, body).await;
        }
        start.elapsed().as_nanos() as f64 / f64::from(calls)
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let body = Bytes::from_static(BODY);

    // Every layer is built here, outside the timed loops.
    let bare = inner();
    let tower_retry = tower::retry::Retry::new(ClonePolicy { budget: None }, inner());
    let tower_retry_budget = tower::retry::Retry::new(
        ClonePolicy {
            budget: Some(Arc::new(TpsBudget::new(Duration::from_secs(10), 5, 0.2))),
        },
        inner(),
    );
    let ours_plain = {
        let _guard = rt.enter();
        tower::Layer::layer(
            &RetryLayer::builder()
                .no_attempt_timeout()
                .no_budget()
                .build()
                .expect("valid"),
            inner(),
        )
    };
    let ours_budget = {
        let _guard = rt.enter();
        tower::Layer::layer(
            &RetryLayer::builder()
                .no_attempt_timeout()
                .budget(RetryBudget::default())
                .build()
                .expect("valid"),
            inner(),
        )
    };
    let ours_default = {
        let _guard = rt.enter();
        tower::Layer::layer(&RetryLayer::new(), inner())
    };

    const N: usize = 10_000;
    println!("allocations per call (first attempt succeeds; request construction included):");
    let rows = [
        ("bare service", allocations(&rt, bare, &body, N)),
        (
            "tower Retry (clone policy)",
            allocations(&rt, tower_retry.clone(), &body, N),
        ),
        (
            "tower Retry (clone policy + TpsBudget)",
            allocations(&rt, tower_retry_budget.clone(), &body, N),
        ),
        (
            "tower-llm Retry (no timeout, no budget)",
            allocations(&rt, ours_plain.clone(), &body, N),
        ),
        (
            "tower-llm Retry (no timeout, budget)",
            allocations(&rt, ours_budget.clone(), &body, N),
        ),
        (
            "tower-llm Retry (defaults: 30 s attempt timeout + budget)",
            allocations(&rt, ours_default.clone(), &body, N),
        ),
    ];
    for (name, (allocs, bytes)) in rows {
        println!("  {name:<58} {allocs:>5.2} allocs  {bytes:>7.1} bytes");
    }

    // On a shared, loaded machine criterion's per-variant samples drift with the load. This
    // comparison interleaves the variants round by round and keeps each one's best round, so
    // load spikes hit every variant alike.
    {
        let (mut a, mut b, mut c2, mut d, mut e, mut f) = (
            bare,
            tower_retry.clone(),
            tower_retry_budget.clone(),
            ours_plain.clone(),
            ours_budget.clone(),
            ours_default.clone(),
        );
        let mut best = [f64::MAX; 6];
        for _ in 0..40 {
            let round = [
                time_calls(&rt, &mut a, &body, 2_000),
                time_calls(&rt, &mut b, &body, 2_000),
                time_calls(&rt, &mut c2, &body, 2_000),
                time_calls(&rt, &mut d, &body, 2_000),
                time_calls(&rt, &mut e, &body, 2_000),
                time_calls(&rt, &mut f, &body, 2_000),
            ];
            for (best, now) in best.iter_mut().zip(round) {
                *best = best.min(now);
            }
        }
        let names = [
            "bare service",
            "tower Retry (clone policy)",
            "tower Retry (clone policy + TpsBudget)",
            "tower-llm Retry (no timeout, no budget)",
            "tower-llm Retry (no timeout, budget)",
            "tower-llm Retry (defaults: 30 s attempt timeout + budget)",
        ];
        println!(
            "interleaved, best of 40 rounds of 2000 calls (ns per call; ratio to tower Retry):"
        );
        for (name, ns) in names.iter().zip(best) {
            println!("  {name:<58} {ns:>7.0} ns  {:>5.2}x", ns / best[1]);
        }
    }

    let mut group = c.benchmark_group("first_attempt_succeeds");
    macro_rules! variant {
        ($name:expr, $svc:expr) => {{
            let mut svc = $svc;
            group.bench_function($name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            one(&mut svc, &body).await;
                        }
                        start.elapsed()
                    })
                })
            });
        }};
    }
    variant!("bare", bare);
    variant!("tower_retry_clone", tower_retry);
    variant!("tower_retry_clone_tps_budget", tower_retry_budget);
    variant!("tower_llm_retry_plain", ours_plain);
    variant!("tower_llm_retry_budget", ours_budget);
    variant!("tower_llm_retry_default", ours_default);
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
