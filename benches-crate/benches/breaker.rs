//! `ready().call()` through a circuit breaker around a no-op service, closed and open, on one
//! thread and on 2 threads sharing one breaker, side by side with the bare service and with
//! `tower-resilience`'s circuit breaker. Layers are built outside the timed loops.
//!
//! Allocations per call are counted by `tower-llm-breaker/tests/allocations.rs` (which asserts
//! ours and prints tower-resilience's), not here: a counting allocator adds shared atomic
//! increments to every allocation, which would slow down exactly the variants that allocate, most
//! of all on 2 threads. These timings use the plain system allocator.
//!
//! ```text
//! cargo bench -p tower-llm-benches --bench breaker -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Futures are driven by the minimal `block_on` of `tower_llm_benches::drive` (poll; park until
//! woken), the same for every variant, so no runtime's scheduling is measured.

#![allow(missing_docs)]

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::task::Waker;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_llm_benches::drive::{block_on, thread_waker};
use tower_llm_breaker::CircuitBreakerLayer;
use tower_llm_core::{HttpClassifier, NoBudget};

// ---- the variants ----

type Res = http::Response<()>;

fn noop() -> impl Service<
    (),
    Response = Res,
    Error = Infallible,
    Future = std::future::Ready<Result<Res, Infallible>>,
> + Clone
       + Send
       + 'static {
    service_fn(|()| std::future::ready(Ok(http::Response::new(()))))
}

/// One `ready().call()`; whether it succeeded.
fn one_call<S>(svc: &mut S, waker: &Waker) -> bool
where
    S: Service<()>,
{
    block_on(waker, async {
        match svc.ready().await {
            Ok(ready) => ready.call(()).await.is_ok(),
            Err(_) => false,
        }
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Closed,
    Open,
}

/// Every variant as a type-erased maker of `(name, a closure doing one call)` per thread.
trait Variant: Send + Sync {
    fn name(&self) -> &'static str;
    /// A fresh service clone for one thread (all clones share the breaker).
    fn clone_caller(&self) -> Box<dyn FnMut(&Waker) -> bool + Send>;
}

struct Bare;
impl Variant for Bare {
    fn name(&self) -> &'static str {
        "bare service"
    }
    fn clone_caller(&self) -> Box<dyn FnMut(&Waker) -> bool + Send> {
        let mut svc = noop();
        Box::new(move |w| one_call(&mut svc, w))
    }
}

struct Ours {
    /// `()` requests carry no attempt budget.
    layer: CircuitBreakerLayer<HttpClassifier, NoBudget>,
    name: &'static str,
    /// The runtime the breaker opened in: it holds the open period's timer (see
    /// `tower_llm_breaker`'s docs on rejections), so it lives as long as the variant. The
    /// calls themselves run on the bench's executor, as with every variant.
    _runtime: Option<tokio::runtime::Runtime>,
}
impl Ours {
    fn new(mode: Mode, in_runtime: bool) -> Self {
        let layer = CircuitBreakerLayer::builder()
            .name("bench")
            // Open stays open for the whole run.
            .open_duration(Duration::from_secs(3600))
            .max_open_duration(Duration::from_secs(3600))
            .read_budget(NoBudget)
            .build()
            .unwrap();
        let mut runtime = None;
        let mut name = "tower-llm-breaker";
        if mode == Mode::Open {
            if in_runtime {
                // As in a server: the breaker opens while a Tokio runtime is current.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                let _entered = rt.enter();
                layer.handle().trip();
                drop(_entered);
                runtime = Some(rt);
            } else {
                // Opened where no runtime is current: every rejection reads the clock.
                layer.handle().trip();
                name = "tower-llm-breaker, opened outside a runtime";
            }
        }
        Ours {
            layer,
            name,
            _runtime: runtime,
        }
    }
}
impl Variant for Ours {
    fn name(&self) -> &'static str {
        self.name
    }
    fn clone_caller(&self) -> Box<dyn FnMut(&Waker) -> bool + Send> {
        let mut svc = self.layer.layer(noop());
        Box::new(move |w| one_call(&mut svc, w))
    }
}

struct Resilience {
    layer: tower_resilience::circuitbreaker::CircuitBreakerLayer,
    mode: Mode,
}
impl Resilience {
    fn new(mode: Mode) -> Self {
        let layer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .name("bench")
            .wait_duration_in_open(Duration::from_secs(3600))
            .build()
            .unwrap();
        Resilience { layer, mode }
    }
}
impl Variant for Resilience {
    fn name(&self) -> &'static str {
        "tower-resilience"
    }
    fn clone_caller(&self) -> Box<dyn FnMut(&Waker) -> bool + Send> {
        let mut svc = self.layer.layer(noop());
        if self.mode == Mode::Open {
            // Layers share one circuit: forcing it open through any service opens it for all.
            block_on(&thread_waker(), svc.force_open());
        }
        Box::new(move |w| one_call(&mut svc, w))
    }
}

fn variants(mode: Mode) -> Vec<Box<dyn Variant>> {
    let mut v: Vec<Box<dyn Variant>> = Vec::new();
    if mode == Mode::Closed {
        v.push(Box::new(Bare));
    }
    v.push(Box::new(Ours::new(mode, true)));
    if mode == Mode::Open {
        v.push(Box::new(Ours::new(mode, false)));
    }
    v.push(Box::new(Resilience::new(mode)));
    v
}

// ---- timings ----

fn single_thread(c: &mut Criterion) {
    for (mode, group_name) in [
        (Mode::Closed, "closed/1 thread"),
        (Mode::Open, "open/1 thread"),
    ] {
        let mut group = c.benchmark_group(group_name);
        for variant in variants(mode) {
            let waker = thread_waker();
            let mut call = variant.clone_caller();
            group.bench_function(variant.name(), |b| b.iter(|| black_box(call(&waker))));
        }
        group.finish();
    }
}

/// Two threads, each with its own clone of the service (one shared breaker), each making
/// `iters` calls after a common start; the reported time per iteration is the wall time of
/// the slower thread divided by `iters`: the cost of one call while the other thread is
/// calling too.
fn two_threads(c: &mut Criterion) {
    for (mode, group_name) in [
        (Mode::Closed, "closed/2 threads"),
        (Mode::Open, "open/2 threads"),
    ] {
        let mut group = c.benchmark_group(group_name);
        for variant in variants(mode) {
            let variant: Arc<dyn Variant> = Arc::from(variant);
            group.bench_function(variant.name(), |b| {
                b.iter_custom(|iters| {
                    let start = Arc::new(Barrier::new(2));
                    thread::scope(|scope| {
                        let workers: Vec<_> = (0..2)
                            .map(|_| {
                                let mut call = variant.clone_caller();
                                let start = start.clone();
                                scope.spawn(move || {
                                    let waker = thread_waker();
                                    start.wait();
                                    let t0 = Instant::now();
                                    for _ in 0..iters {
                                        black_box(call(&waker));
                                    }
                                    t0.elapsed()
                                })
                            })
                            .collect();
                        workers
                            .into_iter()
                            .map(|w| w.join().unwrap())
                            .max()
                            .unwrap()
                    })
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, single_thread, two_threads);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
