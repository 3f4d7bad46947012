//! The primary-succeeds path (non-streaming): the bare service against the fallback chain in its
//! two shapes, in one run.
//!
//! Every variant sends the same `http::Request<ReplayBody<Full<Bytes>>>` (method, URI, four
//! headers whose values, like the URI, are slices of one shared buffer as hyper's server builds
//! them, a 200-byte JSON body already buffered as `BufferRequestBodyLayer` leaves it) to an
//! inner service that answers `200` with a small JSON body and a `content-type` header at once.
//! Chains have two targets (the primary answers). Layers are built outside the timed loop; each
//! timed iteration builds the request and the response (the same cost for all variants), waits
//! for readiness and awaits the response on a current-thread runtime.
//!
//! Before timing, each variant's allocations per call are counted with `stats_alloc`'s
//! instrumented system allocator (its `unsafe impl GlobalAlloc` stays in that crate) and printed.
//!
//! `cargo bench -p tower-llm-benches --bench fallback -- --warm-up-time 1 --measurement-time 3`
//!
//! The request and the upstream are the shared fixtures of `tower_llm_benches::fixtures`
//! (`request_with`, `Upstream::healthy`).

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::time::Instant;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::Full;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{Layer, Service, ServiceExt};
use tower_llm_benches::fixtures::{request_with, Upstream, BODY, WIRE};
use tower_llm_core::ReplayBody;
use tower_llm_fallback::{CacheConfig, FallbackLayer, Secret, TargetConfig};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

type Req = Request<ReplayBody<Full<Bytes>>>;

fn request(wire: &Bytes) -> Req {
    request_with(wire, ReplayBody::from_bytes(Bytes::from_static(BODY)))
}

fn inner() -> Upstream {
    Upstream::healthy()
}

/// One call: readiness, call, await.
async fn one<S, B>(svc: &mut S, wire: &Bytes)
where
    S: Service<Req, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let res = svc
        .ready()
        .await
        .expect("ready")
        .call(request(wire))
        .await
        .expect("ok");
    assert_eq!(res.status(), 200);
    black_box(res);
}

/// Allocations and allocated bytes per call, over `n` calls after a warm-up.
fn allocations<S, B>(rt: &tokio::runtime::Runtime, mut svc: S, wire: &Bytes, n: usize) -> (f64, f64)
where
    S: Service<Req, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        for _ in 0..100 {
            one(&mut svc, wire).await;
        }
        let region = Region::new(GLOBAL);
        for _ in 0..n {
            one(&mut svc, wire).await;
        }
        let change = region.change();
        (
            change.allocations as f64 / n as f64,
            change.bytes_allocated as f64 / n as f64,
        )
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let wire = WIRE.clone();

    // Every layer is built here, outside the timed loops.
    let bare = inner();
    // One service per target, nothing to rewrite.
    let per_service = FallbackLayer::builder()
        .target(TargetConfig::new("openai", "").name("primary"))
        .target(TargetConfig::new("groq", "").name("secondary"))
        .build()
        .expect("valid")
        .services([("primary", inner()), ("secondary", inner())])
        .expect("one service per target");
    // One client, per-target rewrite: the primary's model is the requested one (no body copy),
    // its credential replaces the caller's.
    let one_client = FallbackLayer::builder()
        .target(
            TargetConfig::new("openai", "gpt-4o-mini")
                .base_url("http://127.0.0.1:8080/v1")
                .bearer(Secret::new("sk-primary").expect("valid")),
        )
        .target(
            TargetConfig::new("groq", "llama-3.1-8b-instant")
                .base_url("http://127.0.0.1:8081/openai/v1")
                .bearer(Secret::new("sk-secondary").expect("valid")),
        )
        .build()
        .expect("valid")
        .layer(inner());
    // The same, but the primary's model differs from the requested alias: the body is rewritten.
    let model_rewrite = FallbackLayer::builder()
        .target(
            TargetConfig::new("openai", "gpt-4o-mini-2024-07-18")
                .base_url("http://127.0.0.1:8080/v1")
                .bearer(Secret::new("sk-primary").expect("valid")),
        )
        .target(
            TargetConfig::new("groq", "llama-3.1-8b-instant")
                .base_url("http://127.0.0.1:8081/openai/v1"),
        )
        .build()
        .expect("valid")
        .layer(inner());
    // With the cache tier: every answer is read whole, validated and stored.
    let with_cache = FallbackLayer::builder()
        .target(TargetConfig::new("openai", "").name("primary"))
        .target(TargetConfig::new("groq", "").name("secondary"))
        .cache(CacheConfig::new())
        .build()
        .expect("valid")
        .layer(inner());

    const N: usize = 10_000;
    println!(
        "allocations per call (primary succeeds; request and response construction included):"
    );
    let rows = [
        ("bare service", allocations(&rt, bare.clone(), &wire, N)),
        (
            "fallback, one service per target",
            allocations(&rt, per_service.clone(), &wire, N),
        ),
        (
            "fallback, one client + rewrite (same model)",
            allocations(&rt, one_client.clone(), &wire, N),
        ),
        (
            "fallback, one client + model rewrite (body copy)",
            allocations(&rt, model_rewrite.clone(), &wire, N),
        ),
        (
            "fallback, one service per target + cache tier",
            allocations(&rt, with_cache.clone(), &wire, N),
        ),
    ];
    for (name, (allocs, bytes)) in rows {
        println!("  {name:<50} {allocs:>6.2} allocs  {bytes:>8.1} bytes");
    }

    let mut group = c.benchmark_group("primary_succeeds");
    macro_rules! variant {
        ($name:expr, $svc:expr) => {{
            let mut svc = $svc;
            group.bench_function($name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            one(&mut svc, &wire).await;
                        }
                        start.elapsed()
                    })
                })
            });
        }};
    }
    variant!("bare", bare);
    variant!("fallback_per_service", per_service);
    variant!("fallback_one_client_rewrite", one_client);
    variant!("fallback_model_rewrite", model_rewrite);
    variant!("fallback_with_cache", with_cache);
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
