//! What sharing the rate and token limits through Redis adds to an admission.
//!
//! One bulkhead (request-rate and token limits set far above what the bench sends, so every call
//! is admitted) around a service that answers at once, called sequentially on a current-thread
//! runtime: `local` decides in the process, `redis` asks a `redis-server` on loopback (started by
//! the bench on a free port) through `RedisLimiter`. Prints p50/p99/max of the admission-and-call
//! latency over 20,000 calls of each and the limiter's round trips per call, then criterion's
//! timing of the same calls.
//!
//! `cargo bench -p tower-llm-redis --bench limiter`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_llm_bulkhead::{BulkheadLayer, ErrorsOnly, RateLimit, TokenLimit};
use tower_llm_core::NoBudget;
use tower_llm_redis::limiter::RedisLimiter;
use tower_llm_redis::testing::RedisServer;

const CALLS: usize = 20_000;

type Svc = tower::util::BoxCloneService<(), (), tower_llm_core::BoxError>;

fn bulkhead(limiter: Option<RedisLimiter>) -> Svc {
    let mut builder = BulkheadLayer::builder()
        .name("bench/model")
        .max_concurrent(1_024)
        .rate_limit(RateLimit::per_second(1_000_000_000))
        .token_limit(TokenLimit::per_minute(1_000_000_000_000), |_: &()| 100u64)
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly);
    if let Some(limiter) = limiter {
        builder = builder.shared_limiter(limiter);
    }
    let layer = builder.build().expect("valid bulkhead");
    tower::util::BoxCloneService::new(layer.layer(service_fn(|()| async {
        Ok::<_, std::convert::Infallible>(())
    })))
}

async fn call(svc: &mut Svc) {
    svc.ready()
        .await
        .expect("ready")
        .call(())
        .await
        .expect("admitted");
}

/// p50, p99 and max of `CALLS` sequential calls, in microseconds.
async fn percentiles(svc: &mut Svc) -> (f64, f64, f64) {
    let mut took = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let start = Instant::now();
        call(svc).await;
        took.push(start.elapsed());
    }
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(at(0.50)), us(at(0.99)), us(took[took.len() - 1]))
}

fn limiter(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some((server, redis)) = runtime.block_on(start()) else {
        return;
    };
    let mut local = bulkhead(None);
    let mut shared = bulkhead(Some(redis.clone()));

    runtime.block_on(async {
        // Warm up (connection, script load).
        for _ in 0..1_000 {
            call(&mut local).await;
            call(&mut shared).await;
        }
        let (p50, p99, max) = percentiles(&mut local).await;
        println!("local admission: p50 {p50:.1} µs, p99 {p99:.1} µs, max {max:.1} µs ({CALLS} calls)");
        let trips = redis.round_trips();
        let (p50, p99, max) = percentiles(&mut shared).await;
        let per_call = (redis.round_trips() - trips) as f64 / CALLS as f64;
        println!(
            "redis admission: p50 {p50:.1} µs, p99 {p99:.1} µs, max {max:.1} µs, {per_call:.3} round trips per call, {} decided locally ({CALLS} calls)",
            redis.local_admissions()
        );
    });

    let mut group = c.benchmark_group("shared_limiter");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("local", |b| b.iter(|| runtime.block_on(call(&mut local))));
    group.bench_function("redis", |b| b.iter(|| runtime.block_on(call(&mut shared))));
    group.finish();
    drop(server);
}

async fn start() -> Option<(RedisServer, RedisLimiter)> {
    let server = RedisServer::start_or_skip("limiter bench")
        .await
        .expect("redis-server")?;
    let client = redis::Client::open(server.url()).expect("url");
    let connection = redis::aio::ConnectionManager::new(client)
        .await
        .expect("connect");
    // A generous timeout: the bench measures Redis's answers, not the fallback.
    let limiter = RedisLimiter::builder(connection)
        .key_prefix("bench:")
        .timeout(Duration::from_secs(1))
        .build();
    Some((server, limiter))
}

criterion_group!(benches, limiter);
criterion_main!(benches);
