//! Per-layer cost, in one run: the bare service; each tower-llm layer on its happy path; the full
//! tower-llm stack; tower's `Retry`, `ConcurrencyLimit` and `Timeout`; tower-resilience's circuit
//! breaker, retry, bulkhead and time limiter; failsafe's circuit breaker. Then the unhappy paths
//! (open-breaker rejection, full-bulkhead rejection, one retry with zero backoff, one fallback
//! hop), on one thread and with 2 threads sharing one layer.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/targets/benches cargo bench -p tower-llm-benches --bench layers -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! What one call is, for every variant: `ready().await`, `call(request).await`, read the status,
//! drop the response (unread: a bulkhead permit riding in the body is released by the drop),
//! driven by the same minimal `block_on` (`tower_llm_benches::drive`) inside an entered
//! 2-worker tokio runtime (its workers run the timer driver). Every service is built outside the
//! timed loops. **Request construction is excluded** everywhere: criterion's `iter_batched`
//! builds each request in its untimed setup; the 2-thread runs, the interleaved rounds and the
//! allocation counts build all their requests before starting the clock.
//!
//! Allocations per call are counted with `stats_alloc` as the global allocator (its
//! `unsafe impl GlobalAlloc` stays in that crate; this file has no `unsafe`). The counting adds a
//! few atomic increments to each allocation, paid only by variants that allocate, and with 2
//! threads those shared counters are contended: take timings without it too, with
//! `--no-default-features` (feature `count-allocs`, on by default), which skips the counts.
//!
//! Environment: `LAYERS_ONLY=<substring>` (`=<name>` exact, several joined by `|`) restricts every section to matching variants (for
//! profiling one variant with callgrind); `LAYERS_ROUNDS` sets the interleaved rounds (11);
//! `LAYERS_ALLOCS_ONLY=1` stops after the allocation counts (each row also gives the size of
//! the variant's response future: what every caller moves and pins).

#![allow(missing_docs)]

#[cfg(feature = "count-allocs")]
use std::alloc::System;
use std::any::Any;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use http::Response;
#[cfg(feature = "count-allocs")]
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_llm_benches::drive::{block_on, thread_waker};
use tower_llm_benches::fixtures::{request, Req, Res, Upstream, WIRE};
use tower_llm_breaker::CircuitBreakerLayer;
use tower_llm_bulkhead::BulkheadLayer;
use tower_llm_core::{ErrorKind, InspectErrorBodyLayer, StreamGuardLayer};
use tower_llm_fallback::{Cooldown, CooldownPolicy, FallbackLayer, TargetConfig};
use tower_llm_retry::{Backoff, HttpReplay, RetryLayer};

#[cfg(feature = "count-allocs")]
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

// ---------------------------------------------------------------------------------------------
// One call, and a variant as a maker of per-thread callers.

/// The status of the response, or `None` for an error (a rejection).
type Outcome = Option<u16>;

fn one_call<S, B>(svc: &mut S, waker: &Waker, req: Req) -> Outcome
where
    S: Service<Req, Response = Response<B>>,
{
    block_on(waker, async {
        match svc.ready().await {
            Ok(ready) => ready.call(req).await.ok().map(|res| res.status().as_u16()),
            Err(_) => None,
        }
    })
}

type Caller = Box<dyn FnMut(&Waker, Req) -> Outcome + Send>;

struct Variant {
    name: &'static str,
    /// What every call must return (checked while counting allocations).
    expect: Outcome,
    /// A caller holding a fresh clone of the service (clones share the layer's state).
    make: Box<dyn Fn() -> Caller + Send + Sync>,
    /// Whatever must stay alive while the variant runs (a call holding a bulkhead permit).
    _keep: Option<Box<dyn Any + Send + Sync>>,
    /// The size of the service's response future: what a caller moves and pins.
    future_bytes: usize,
}

fn variant<S, B>(name: &'static str, expect: Outcome, svc: S) -> Variant
where
    S: Service<Req, Response = Response<B>> + Clone + Send + 'static,
{
    let proto = Mutex::new(svc);
    Variant {
        name,
        expect,
        make: Box::new(move || {
            let mut svc = proto
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            Box::new(move |waker: &Waker, req: Req| one_call(&mut svc, waker, req))
        }),
        _keep: None,
        future_bytes: std::mem::size_of::<S::Future>(),
    }
}

const OK: Outcome = Some(200);
const REJECTED: Outcome = None;

fn only() -> Option<String> {
    std::env::var("LAYERS_ONLY").ok()
}

/// `LAYERS_ONLY=<substring>` picks variants by substring, `LAYERS_ONLY==<name>` by exact name;
/// several patterns are separated by `|` (`LAYERS_ONLY="=bare service|etry"`).
fn selected(name: &str) -> bool {
    only().is_none_or(|o| {
        o.split('|').any(|o| match o.strip_prefix('=') {
            Some(exact) => name == exact,
            None => name.contains(o),
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Peers that need a few lines of glue.

/// tower's `retry::Policy` for the same job as ours: copy the request up front (method, URI,
/// version, headers, extensions, body: what `HttpReplay` copies), retry a 5xx at most
/// `retries` times, at once.
#[derive(Clone)]
struct TowerPolicy {
    retries: u32,
}

impl<E> tower::retry::Policy<Req, Res, E> for TowerPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Ready<()>> {
        match result {
            Ok(res) if res.status().is_server_error() && self.retries > 0 => {
                self.retries -= 1;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(copy_request(req))
    }
}

/// What the tower policies copy of a request: method, URI, version, headers, extensions, body.
fn copy_request(req: &Req) -> Req {
    let mut copy = http::Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    copy
}

/// [`TowerPolicy`] with what our retry's defaults do besides: a retry budget (tower's
/// `TpsBudget` with our defaults: 10 s window, 5 retries a second, 20 % of calls; a deposit per
/// answer, a withdrawal per retry, as tower's docs do it) and, from a `Timeout` below it, a 30 s
/// timeout per attempt. Like for like with `tower-llm retry (defaults)`, not counting what only
/// ours does (failure classification, `Retry-After`, the per-target counters).
#[derive(Clone)]
struct TowerBudgetPolicy {
    retries: u32,
    budget: std::sync::Arc<tower::retry::budget::TpsBudget>,
}

impl<E> tower::retry::Policy<Req, Res, E> for TowerBudgetPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Ready<()>> {
        use tower::retry::budget::Budget as _;
        match result {
            Ok(res) if !res.status().is_server_error() => {
                self.budget.deposit();
                None
            }
            _ if self.retries > 0 && self.budget.withdraw() => {
                self.retries -= 1;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(copy_request(req))
    }
}

/// failsafe's circuit breaker is not a tower layer: this service wraps each inner call's future
/// in `failsafe::futures::CircuitBreaker::call` (its `ResponseFuture` checks the breaker on
/// first poll and records the outcome; no allocation). Only inner errors count as failures, as
/// with failsafe's own API.
struct Failsafe<S, P> {
    breaker: failsafe::StateMachine<P, ()>,
    inner: S,
}

impl<S: Clone, P> Clone for Failsafe<S, P> {
    fn clone(&self) -> Self {
        Failsafe {
            breaker: self.breaker.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<S, P> Service<Req> for Failsafe<S, P>
where
    S: Service<Req>,
    P: failsafe::failure_policy::FailurePolicy + Send + Sync,
{
    type Response = S::Response;
    type Error = failsafe::Error<S::Error>;
    type Future = failsafe::futures::ResponseFuture<S::Future, P, (), failsafe::Any>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(failsafe::Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        failsafe::futures::CircuitBreaker::call(&self.breaker, self.inner.call(req))
    }
}

fn failsafe_default<S>(
    inner: S,
) -> Failsafe<S, impl failsafe::failure_policy::FailurePolicy + Send + Sync> {
    Failsafe {
        breaker: failsafe::Config::new().instrument(()).build(),
        inner,
    }
}

// ---------------------------------------------------------------------------------------------
// The variants.

fn breaker_layer(name: &str) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name(name)
        // An open breaker stays open for the whole run.
        .open_duration(Duration::from_secs(3600))
        .max_open_duration(Duration::from_secs(3600))
        .build()
        .expect("valid breaker config")
}

/// tower-llm's full stack, as the facade's `StackBuilder` builds it (without boxing): a fallback
/// chain of two targets, each with breaker, retry, bulkhead, stream guard and error-body
/// inspection, all with default settings.
/// `report`: whether answers carry the `FallbackReport` extension (the default: on).
fn full_stack(
    primary: Upstream,
    secondary: Upstream,
    report: bool,
) -> impl Service<Req, Response = Response<impl Sized>> + Clone + Send + 'static {
    let target = |name: &str, upstream: Upstream| {
        ServiceBuilder::new()
            .layer(breaker_layer(name))
            .layer(RetryLayer::new())
            .layer(BulkheadLayer::builder().build().expect("valid bulkhead"))
            .layer(StreamGuardLayer::new())
            .layer(InspectErrorBodyLayer::new())
            .service(upstream)
    };
    FallbackLayer::builder()
        .target(TargetConfig::new("openai", "").name("primary"))
        .target(TargetConfig::new("groq", "").name("secondary"))
        .report_extension(report)
        .build()
        .expect("valid chain")
        .services([
            ("primary", target("primary", primary)),
            ("secondary", target("secondary", secondary)),
        ])
        .expect("one service per target")
}

fn fallback_chain(
    primary: Upstream,
    secondary: Upstream,
    report: bool,
) -> impl Service<Req, Response = Response<impl Sized>> + Clone + Send + 'static {
    // Never bench the failing primary, so each call of the "one hop" variant makes the hop.
    let cooldowns = CooldownPolicy::default()
        .with(ErrorKind::Overloaded, Cooldown::None)
        .with(ErrorKind::ServerError, Cooldown::None);
    FallbackLayer::builder()
        .target(TargetConfig::new("openai", "").name("primary"))
        .target(TargetConfig::new("groq", "").name("secondary"))
        .cooldowns(cooldowns)
        .report_extension(report)
        .build()
        .expect("valid chain")
        .services([("primary", primary), ("secondary", secondary)])
        .expect("one service per target")
}

fn happy_variants() -> Vec<Variant> {
    let up = Upstream::healthy;
    let tr_breaker = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .name("bench")
        .build()
        .expect("valid");
    let tr_bulkhead = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(64)
        .max_wait_duration(Duration::from_secs(1))
        .build()
        .expect("valid");
    let tr_retry = tower_resilience::retry::RetryLayer::<Req, Res, Infallible>::builder()
        .max_attempts(3)
        .fixed_backoff(Duration::ZERO)
        .retry_on_response(|r: &Res| r.status().is_server_error())
        .build();
    let tr_time = tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(Duration::from_secs(30))
        .build();
    vec![
        variant("bare service", OK, up()),
        variant("tower-llm breaker", OK, breaker_layer("bench").layer(up())),
        variant(
            "tower-llm retry (defaults)",
            OK,
            RetryLayer::new().layer(up()),
        ),
        variant(
            "tower-llm retry (no attempt timeout)",
            OK,
            RetryLayer::builder()
                .no_attempt_timeout()
                .build()
                .expect("valid")
                .layer(up()),
        ),
        variant(
            "tower-llm bulkhead",
            OK,
            BulkheadLayer::builder().build().expect("valid").layer(up()),
        ),
        variant(
            "tower-llm fallback (2 targets)",
            OK,
            fallback_chain(up(), up(), true),
        ),
        variant(
            "tower-llm fallback (2 targets, no report)",
            OK,
            fallback_chain(up(), up(), false),
        ),
        variant(
            "tower-llm stream guard (JSON)",
            OK,
            StreamGuardLayer::new().layer(up()),
        ),
        variant(
            "tower-llm inspect error body (200)",
            OK,
            InspectErrorBodyLayer::new().layer(up()),
        ),
        variant("tower-llm full stack", OK, full_stack(up(), up(), true)),
        variant(
            "tower-llm full stack (no report)",
            OK,
            full_stack(up(), up(), false),
        ),
        variant(
            "tower Retry",
            OK,
            tower::retry::RetryLayer::new(TowerPolicy { retries: 2 }).layer(up()),
        ),
        variant(
            "tower Retry + TpsBudget + Timeout",
            OK,
            ServiceBuilder::new()
                .layer(tower::retry::RetryLayer::new(TowerBudgetPolicy {
                    retries: 2,
                    budget: std::sync::Arc::new(tower::retry::budget::TpsBudget::new(
                        Duration::from_secs(10),
                        5,
                        0.2,
                    )),
                }))
                .timeout(Duration::from_secs(30))
                .service(up()),
        ),
        variant(
            "tower ConcurrencyLimit",
            OK,
            tower::limit::ConcurrencyLimitLayer::new(64).layer(up()),
        ),
        variant(
            "tower Timeout",
            OK,
            tower::timeout::TimeoutLayer::new(Duration::from_secs(30)).layer(up()),
        ),
        variant(
            "tower stack (Timeout+Retry+ConcurrencyLimit)",
            OK,
            ServiceBuilder::new()
                .timeout(Duration::from_secs(30))
                .layer(tower::retry::RetryLayer::new(TowerPolicy { retries: 2 }))
                .concurrency_limit(64)
                .service(up()),
        ),
        variant(
            "tower-resilience circuit breaker",
            OK,
            tr_breaker.layer(up()),
        ),
        variant("tower-resilience retry", OK, tr_retry.layer(up())),
        variant("tower-resilience bulkhead", OK, tr_bulkhead.layer(up())),
        variant("tower-resilience time limiter", OK, tr_time.layer(up())),
        variant(
            "tower-resilience stack (4 layers)",
            OK,
            ServiceBuilder::new()
                .layer(tr_time)
                .layer(tr_breaker)
                .layer(tr_bulkhead)
                .layer(tr_retry)
                .service(up()),
        ),
        variant("failsafe circuit breaker", OK, failsafe_default(up())),
    ]
}

fn open_breaker_variants(rt: &tokio::runtime::Runtime) -> Vec<Variant> {
    let ours = breaker_layer("bench");
    ours.handle().trip();
    let tr = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .name("bench")
        .wait_duration_in_open(Duration::from_secs(3600))
        .build()
        .expect("valid")
        .layer(Upstream::healthy());
    rt.block_on(tr.force_open());
    let fs = Failsafe {
        breaker: failsafe::Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(
                1,
                failsafe::backoff::constant(Duration::from_secs(3600)),
            ))
            .instrument(())
            .build(),
        inner: Upstream::healthy(),
    };
    fs.breaker.on_error();
    vec![
        variant(
            "tower-llm breaker, open",
            REJECTED,
            ours.layer(Upstream::healthy()),
        ),
        variant("tower-resilience circuit breaker, open", REJECTED, tr),
        variant("failsafe circuit breaker, open", REJECTED, fs),
    ]
}

/// Start a call on a path the upstream never answers, and keep it in flight on the runtime:
/// it holds the bulkhead's only permit.
fn hold_permit<S>(rt: &tokio::runtime::Runtime, svc: S) -> Box<dyn Any + Send + Sync>
where
    S: Service<Req> + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    let mut req = request(&WIRE);
    *req.uri_mut() = http::Uri::from_static("http://127.0.0.1:8080/hold");
    let task = rt.spawn(svc.oneshot(req));
    // Let the runtime poll it: the permit is taken on its first poll.
    thread::sleep(Duration::from_millis(50));
    Box::new(AbortOnDrop(task))
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn full_bulkhead_variants(rt: &tokio::runtime::Runtime) -> Vec<Variant> {
    let upstream = Upstream::hang_on_path("/hold");
    let ours = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queued(0)
        .build()
        .expect("valid")
        .layer(upstream.clone());
    let ours_held = hold_permit(rt, ours.clone());
    assert_eq!(ours.handle().in_flight(), 1, "the held call has the permit");
    let tr = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(1)
        .reject_when_full()
        .build()
        .expect("valid")
        .layer(upstream);
    let tr_held = hold_permit(rt, tr.clone());
    let mut ours = variant("tower-llm bulkhead, full", REJECTED, ours);
    ours._keep = Some(ours_held);
    let mut tr = variant("tower-resilience bulkhead, full", REJECTED, tr);
    tr._keep = Some(tr_held);
    vec![ours, tr]
}

fn one_retry_variants() -> Vec<Variant> {
    vec![
        variant(
            "tower-llm retry, 1 retry (zero backoff)",
            OK,
            RetryLayer::builder()
                .backoff(Backoff::constant(Duration::ZERO))
                // A budget would (rightly) stop retrying half of a million calls a second.
                .no_budget()
                .build()
                .expect("valid")
                .layer(Upstream::fail_every_other()),
        ),
        variant(
            "tower-llm retry, 1 retry (zero backoff, no extensions)",
            OK,
            RetryLayer::builder()
                .backoff(Backoff::constant(Duration::ZERO))
                .no_budget()
                // Neither the `Attempt` tag nor the `RetryAttempts` log: what tower's `Retry`
                // leaves out too.
                .replay(HttpReplay::new().attempt_extensions(false))
                .build()
                .expect("valid")
                .layer(Upstream::fail_every_other()),
        ),
        variant(
            "tower Retry, 1 retry",
            OK,
            tower::retry::RetryLayer::new(TowerPolicy { retries: 2 })
                .layer(Upstream::fail_every_other()),
        ),
        variant(
            // Our retry's attempt timeout (30 s by default) has its like here; a budget has not:
            // at a million calls a second tower's `TpsBudget`, like ours, would refuse half the
            // retries.
            "tower Retry + Timeout, 1 retry",
            OK,
            ServiceBuilder::new()
                .layer(tower::retry::RetryLayer::new(TowerPolicy { retries: 2 }))
                .timeout(Duration::from_secs(30))
                .service(Upstream::fail_every_other()),
        ),
        variant(
            "tower-resilience retry, 1 retry (zero backoff)",
            OK,
            tower_resilience::retry::RetryLayer::<Req, Res, Infallible>::builder()
                .max_attempts(3)
                .fixed_backoff(Duration::ZERO)
                .retry_on_response(|r: &Res| r.status().is_server_error())
                .build()
                .layer(Upstream::fail_every_other()),
        ),
    ]
}

fn one_hop_variants() -> Vec<Variant> {
    vec![variant(
        "tower-llm fallback, 1 hop",
        OK,
        fallback_chain(Upstream::failing(), Upstream::healthy(), true),
    )]
}

// ---------------------------------------------------------------------------------------------
// Measurements.

#[cfg(feature = "count-allocs")]
const ALLOC_CALLS: usize = 10_000;

/// Allocations and bytes per call (request construction excluded), after checking outcomes.
#[cfg(feature = "count-allocs")]
fn allocations(v: &Variant) -> (f64, f64) {
    let waker = thread_waker();
    let mut call = (v.make)();
    for _ in 0..100 {
        let out = call(&waker, request(&WIRE));
        assert_eq!(out, v.expect, "{}: unexpected outcome", v.name);
    }
    let requests: Vec<Req> = (0..ALLOC_CALLS).map(|_| request(&WIRE)).collect();
    let mut outcomes = Vec::with_capacity(ALLOC_CALLS);
    let region = Region::new(GLOBAL);
    for req in requests {
        outcomes.push(call(&waker, req));
    }
    let change = region.change();
    assert!(
        outcomes.iter().all(|o| *o == v.expect),
        "{}: unexpected outcome",
        v.name
    );
    (
        (change.allocations + change.reallocations) as f64 / ALLOC_CALLS as f64,
        change.bytes_allocated as f64 / ALLOC_CALLS as f64,
    )
}

/// Prints each variant's allocations per call; with `baseline`, also the difference to the
/// variant named "bare service" (measured first).
#[cfg(feature = "count-allocs")]
fn print_allocations(title: &str, variants: &[Variant], baseline: bool) {
    println!("\nallocations per call, {title} (mean of {ALLOC_CALLS} calls; request construction excluded):");
    let mut bare: Option<f64> = None;
    for v in variants.iter().filter(|v| selected(v.name)) {
        let (allocs, bytes) = allocations(v);
        if baseline && v.name == "bare service" {
            bare = Some(allocs);
        }
        let baseline = bare;
        let beyond = baseline.map_or(String::new(), |b| format!("  ({:+.2} vs bare)", allocs - b));
        println!(
            "  {:<48} {allocs:>6.2} allocs {bytes:>8.1} bytes{beyond}  (future: {} bytes)",
            v.name, v.future_bytes
        );
    }
}

fn single_thread(c: &mut Criterion, group: &str, variants: &[Variant]) {
    let mut g = c.benchmark_group(format!("{group}/1 thread"));
    for v in variants.iter().filter(|v| selected(v.name)) {
        let waker = thread_waker();
        let mut call = (v.make)();
        g.bench_function(v.name, |b| {
            b.iter_batched(
                || request(&WIRE),
                |req| black_box(call(&waker, req)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Two threads, each with its own clone of the service (one shared layer state), each making
/// `iters` calls after a common start; time per iteration = the slower thread's wall time /
/// `iters`, i.e. the cost of one call while the other thread is calling too.
fn two_threads(c: &mut Criterion, group: &str, variants: &[Variant], rt: &tokio::runtime::Runtime) {
    let mut g = c.benchmark_group(format!("{group}/2 threads"));
    for v in variants.iter().filter(|v| selected(v.name)) {
        g.bench_function(v.name, |b| {
            b.iter_custom(|iters| {
                let start = Barrier::new(2);
                thread::scope(|scope| {
                    let workers: Vec<_> = (0..2)
                        .map(|_| {
                            let mut call = (v.make)();
                            let start = &start;
                            scope.spawn(move || {
                                let _rt = rt.enter();
                                let waker = thread_waker();
                                let requests: Vec<Req> =
                                    (0..iters).map(|_| request(&WIRE)).collect();
                                start.wait();
                                let t0 = Instant::now();
                                for req in requests {
                                    black_box(call(&waker, req));
                                }
                                t0.elapsed()
                            })
                        })
                        .collect();
                    workers
                        .into_iter()
                        .map(|w| w.join().expect("bench thread"))
                        .max()
                        .unwrap_or_default()
                })
            })
        });
    }
    g.finish();
}

/// The machine is shared: a preempted sample inflates criterion's mean. As a second figure, run
/// every variant in short interleaved rounds and keep each one's fastest round (preemption only
/// adds time; interleaving gives every variant the same conditions).
fn interleaved(title: &str, variants: &[Variant], bare: Option<f64>) -> Vec<(&'static str, f64)> {
    const CALLS: usize = 20_000;
    let rounds: usize = std::env::var("LAYERS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(11);
    let waker = thread_waker();
    let picked: Vec<&Variant> = variants.iter().filter(|v| selected(v.name)).collect();
    let mut callers: Vec<Caller> = picked.iter().map(|v| (v.make)()).collect();
    // Warm up, and check every variant does what its name says (untimed).
    for (v, call) in picked.iter().zip(callers.iter_mut()) {
        for _ in 0..100 {
            assert_eq!(
                call(&waker, request(&WIRE)),
                v.expect,
                "{}: unexpected outcome",
                v.name
            );
        }
    }
    let mut best = vec![f64::MAX; picked.len()];
    for _ in 0..rounds {
        for (i, call) in callers.iter_mut().enumerate() {
            let requests: Vec<Req> = (0..CALLS).map(|_| request(&WIRE)).collect();
            let mut made = 0usize;
            let t0 = Instant::now();
            for req in requests {
                black_box(call(&waker, req));
                made += 1;
                // Variants that wait for a timer tick (~1 ms a call) stop after 100 ms.
                if made % 64 == 0 && t0.elapsed() > Duration::from_millis(100) {
                    break;
                }
            }
            let ns = t0.elapsed().as_secs_f64() * 1e9 / made as f64;
            if let Some(b) = best.get_mut(i) {
                *b = b.min(ns);
            }
        }
    }
    println!(
        "\nfastest of {rounds} interleaved rounds of {CALLS} calls (or 100 ms), {title} (ns/call):"
    );
    let bare = bare.or_else(|| {
        picked
            .iter()
            .zip(&best)
            .find(|(v, _)| v.name == "bare service")
            .map(|(_, b)| *b)
    });
    let mut out = Vec::new();
    for (v, ns) in picked.iter().zip(best) {
        let vs_bare = bare.map_or(String::new(), |b| {
            format!("  {:>6.2}x bare  {:>+8.1} ns over bare", ns / b, ns - b)
        });
        println!("  {:<48} {ns:>8.1}{vs_bare}", v.name);
        out.push((v.name, ns));
    }
    out
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    // Two workers run the timer driver (retry attempt timeouts, tower's and tower-resilience's
    // timeouts) and the calls that hold a bulkhead's permit; bench threads enter it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let _rt = rt.enter();

    let happy = happy_variants();
    let open = open_breaker_variants(&rt);
    let full = full_bulkhead_variants(&rt);
    let retry = one_retry_variants();
    let hop = one_hop_variants();

    // `LAYERS_PROFILE=<calls>`: only make that many calls of each selected variant (for
    // `valgrind --tool=callgrind`), nothing else.
    if let Some(calls) = std::env::var("LAYERS_PROFILE")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        let waker = thread_waker();
        for v in happy
            .iter()
            .chain(&open)
            .chain(&full)
            .chain(&retry)
            .chain(&hop)
        {
            if !selected(v.name) {
                continue;
            }
            let mut call = (v.make)();
            for _ in 0..calls {
                black_box(call(&waker, request(&WIRE)));
            }
            println!("profiled {calls} calls of {}", v.name);
        }
        return;
    }

    // Allocations first (exact; independent of the machine's load).
    #[cfg(feature = "count-allocs")]
    {
        print_allocations("happy path", &happy, true);
        print_allocations("open-breaker rejection", &open, false);
        print_allocations("full-bulkhead rejection", &full, false);
        print_allocations("one retry", &retry, false);
        print_allocations("one fallback hop", &hop, false);
    }
    // `LAYERS_ALLOCS_ONLY=1`: stop after the allocation counts (no timing).
    if std::env::var_os("LAYERS_ALLOCS_ONLY").is_some() {
        return;
    }

    // Interleaved minima (robust to load spikes), then criterion's estimates.
    let mut unhappy: Vec<Variant> = Vec::new();
    unhappy.extend(open_breaker_variants(&rt));
    unhappy.extend(one_retry_variants());
    unhappy.extend(one_hop_variants());
    let happy_best = interleaved("happy path, 1 thread", &happy, None);
    let bare = happy_best
        .iter()
        .find(|(n, _)| *n == "bare service")
        .map(|(_, ns)| *ns);
    interleaved("unhappy paths, 1 thread", &unhappy, bare);
    interleaved("full bulkhead, 1 thread", &full, bare);

    single_thread(&mut c, "happy", &happy);
    single_thread(&mut c, "open breaker", &open);
    single_thread(&mut c, "full bulkhead", &full);
    single_thread(&mut c, "one retry", &retry);
    single_thread(&mut c, "one fallback hop", &hop);

    // Shared state under contention (the one-retry and one-hop upstreams count calls across
    // clones, so they stay single-threaded).
    two_threads(&mut c, "happy", &happy, &rt);
    two_threads(&mut c, "open breaker", &open, &rt);
    two_threads(&mut c, "full bulkhead", &full, &rt);

    c.final_summary();
    drop(unhappy);
}
