//! Below a fallback chain: a call marked as the chain's probe
//! ([`AttemptBudget::probe`]) is admitted by an open breaker as its half-open trial, through the
//! tower service (plain and keyed) and the permit API. Paused time throughout.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_llm_breaker::{
    BreakerHandle, CircuitBreakerConfig, CircuitBreakerConfigBuilder, CircuitBreakerLayer,
    KeyedCircuitBreakerLayer, OpenReason, State,
};
use tower_llm_core::{AttemptBudget, BoxError, BreakerOpen, Target};

type Req = http::Request<u16>;
type Res = http::Response<()>;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Opens on the first failure, for 5 s (10 s after one re-open), and closes after one probe.
fn config() -> CircuitBreakerConfigBuilder {
    CircuitBreakerConfig::builder()
        .name("probe")
        .consecutive_failures(1)
        .open_duration(secs(5))
        .open_duration_multiplier(2.0)
        .max_open_duration(secs(60))
        .permitted_calls_in_half_open(1)
}

/// A layer over a new breaker with the settings of `config` (the HTTP defaults otherwise).
fn breaker_layer(config: CircuitBreakerConfig) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder().build_with_handle(BreakerHandle::new(config))
}

/// A request answered with `status`, marked as the chain's probe.
fn probe(status: u16) -> Req {
    let mut req = http::Request::new(status);
    req.extensions_mut()
        .insert(AttemptBudget::until(Instant::now() + secs(10)).probe());
    req
}

/// An upstream answering each request with the status in its body, counting calls.
fn upstream(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Req,
    Response = Res,
    Error = Infallible,
    Future = impl Future<Output = Result<Res, Infallible>> + Send,
> + Clone {
    service_fn(move |req: Req| {
        calls.fetch_add(1, Ordering::SeqCst);
        let status = *req.body();
        async move { Ok::<_, Infallible>(http::Response::builder().status(status).body(()).unwrap()) }
    })
}

struct Harness<S> {
    svc: S,
    handle: BreakerHandle,
    calls: Arc<AtomicUsize>,
    changes: Arc<Mutex<Vec<(State, State)>>>,
}

fn harness(
    config: CircuitBreakerConfig,
) -> Harness<impl Service<Req, Response = Res, Error = BoxError> + Clone> {
    let layer = breaker_layer(config);
    let handle = layer.handle();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    handle.on_state_change(move |c| seen.lock().unwrap().push((c.from, c.to)));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer.layer(upstream(calls.clone()));
    Harness {
        svc,
        handle,
        calls,
        changes,
    }
}

impl<S> Harness<S>
where
    S: Service<Req, Response = Res, Error = BoxError>,
{
    async fn send(&mut self, req: Req) -> Result<Res, BoxError> {
        self.svc.ready().await?.call(req).await
    }

    /// Open the breaker with one failing call.
    async fn open(&mut self) {
        self.send(http::Request::new(500)).await.unwrap();
        assert_eq!(self.handle.state(), State::Open);
    }

    /// `req` is rejected by the breaker without reaching the upstream.
    async fn rejected(&mut self, req: Req) -> BreakerOpen {
        let before = self.calls();
        let err = self.send(req).await.expect_err("rejected");
        assert_eq!(
            self.calls(),
            before,
            "a rejected call must not reach the upstream"
        );
        err.downcast_ref::<BreakerOpen>()
            .expect("BreakerOpen")
            .clone()
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn transitions(&self) -> Vec<(State, State)> {
        self.changes.lock().unwrap().clone()
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_lets_a_chain_probe_through_and_its_success_closes_it() {
    let mut h = harness(config().build().unwrap());
    h.open().await;
    assert_eq!(h.calls(), 1);
    // One second into a five-second open period: the chain decides the target is probed now.
    tokio::time::advance(secs(1)).await;
    assert_eq!(h.handle.snapshot().retry_after_ms, Some(4000));
    let res = h
        .send(probe(200))
        .await
        .expect("the probe reaches the upstream");
    assert_eq!(res.status(), 200);
    assert_eq!(h.calls(), 2);
    assert_eq!(h.handle.state(), State::Closed);
    assert_eq!(
        h.transitions(),
        [
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed),
        ]
    );
    let s = h.handle.snapshot();
    assert_eq!((s.reopens, s.not_permitted), (0, 0));
    // Closed: ordinary traffic flows again.
    h.send(http::Request::new(200)).await.unwrap();
    assert_eq!(h.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_successful_chain_probe_closes_the_breaker_alone() {
    // Two half-open probes configured: the chain's probe alone decides. Its success closes the
    // breaker at once, so a silent earlier probe that fails late cannot re-open it.
    let mut h = harness(config().permitted_calls_in_half_open(2).build().unwrap());
    h.open().await;
    h.send(probe(200)).await.unwrap();
    assert_eq!(h.handle.state(), State::Closed);
    // An ordinary half-open probe still needs its peers: open again, then a plain call after
    // the open period counts one success of two.
    h.handle.trip();
    tokio::time::advance(secs(60)).await;
    h.send(http::Request::new(200)).await.unwrap();
    let s = h.handle.snapshot();
    assert_eq!(s.state, State::HalfOpen);
    assert_eq!((s.half_open_in_flight, s.half_open_successes), (0, 1));
    h.send(http::Request::new(200)).await.unwrap();
    assert_eq!(h.handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failing_chain_probe_reopens_it_for_longer() {
    let mut h = harness(config().build().unwrap());
    h.open().await;
    tokio::time::advance(secs(2)).await;
    let res = h
        .send(probe(503))
        .await
        .expect("the probe reaches the upstream");
    assert_eq!(res.status(), 503);
    assert_eq!(h.calls(), 2);
    let s = h.handle.snapshot();
    assert_eq!(s.state, State::Open);
    assert_eq!(s.reason, Some(OpenReason::ProbeFailed));
    assert_eq!(s.reopens, 1);
    assert_eq!(s.retry_after_ms, Some(10_000), "5 s doubled");
    assert_eq!(
        h.transitions(),
        [
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Open),
        ]
    );
    let open = h.rejected(http::Request::new(200)).await;
    assert_eq!(open.retry_after(), secs(10));
    // The next chain probe is let through too; a second failure doubles again.
    h.send(probe(503)).await.unwrap();
    let s = h.handle.snapshot();
    assert_eq!((s.reopens, s.retry_after_ms), (2, Some(20_000)));
}

#[tokio::test(start_paused = true)]
async fn ordinary_requests_are_still_rejected_while_open() {
    let mut h = harness(config().build().unwrap());
    h.open().await;
    let open = h.rejected(http::Request::new(200)).await;
    assert_eq!(open.retry_after(), secs(5));
    // A budget that is not a probe (an ordinary attempt of the chain) changes nothing.
    for budget in [
        AttemptBudget::until(Instant::now() + secs(10)),
        AttemptBudget::until(Instant::now() + secs(10)).single_call(),
    ] {
        let mut req = http::Request::new(200);
        req.extensions_mut().insert(budget);
        h.rejected(req).await;
    }
    assert_eq!(h.handle.state(), State::Open);
    assert_eq!(h.handle.snapshot().not_permitted, 3);
}

#[tokio::test(start_paused = true)]
async fn a_forced_open_breaker_rejects_probes() {
    let mut h = harness(config().build().unwrap());
    h.handle.force_open();
    let open = h.rejected(probe(200)).await;
    assert_eq!(open.reason(), "forced open");
    assert!(h.handle.try_acquire_probe().is_err());
    assert_eq!(h.handle.state(), State::ForcedOpen);
    assert_eq!(h.handle.snapshot().not_permitted, 2);
}

#[tokio::test(start_paused = true)]
async fn a_half_open_breaker_with_every_permit_taken_rejects_a_probe() {
    let mut h = harness(config().build().unwrap());
    h.open().await;
    // Another caller (a probe of the permit API) holds the only half-open permit.
    let held = h.handle.try_acquire_probe().expect("admitted while open");
    assert!(held.is_probe());
    assert_eq!(h.handle.state(), State::HalfOpen);
    let open = h.rejected(probe(200)).await;
    assert_eq!(open.retry_after(), Duration::ZERO);
    assert_eq!(open.reason(), "half-open: all 1 probes are in flight");
    assert_eq!(h.handle.state(), State::HalfOpen);
    // Given back (cancelled): the next probe gets it.
    drop(held);
    h.send(probe(200)).await.unwrap();
    assert_eq!(h.handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_permit_api_admits_probes_in_every_state() {
    let handle = BreakerHandle::new(config().build().unwrap());
    // Closed: a normal permit.
    let p = handle.try_acquire_probe().unwrap();
    assert!(!p.is_probe());
    p.record(tower_llm_breaker::Outcome::Failure(
        tower_llm_core::ErrorKind::ServerError,
    ));
    assert_eq!(handle.state(), State::Open);
    // Open past its deadline: as try_acquire, a half-open probe.
    tokio::time::advance(secs(6)).await;
    let p = handle.try_acquire_probe().unwrap();
    assert!(p.is_probe());
    assert_eq!(handle.state(), State::HalfOpen);
    drop(p);
    handle.disable();
    assert!(!handle.try_acquire_probe().unwrap().is_probe());
    handle.metrics_only();
    assert!(!handle.try_acquire_probe().unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_budget_behave_as_before() {
    let mut h = harness(config().build().unwrap());
    h.open().await;
    tokio::time::advance(Duration::from_millis(4999)).await;
    let open = h.rejected(http::Request::new(200)).await;
    assert_eq!(open.retry_after(), Duration::from_millis(1));
    tokio::time::advance(Duration::from_millis(1)).await;
    // The open period is over: the next call is the breaker's own probe.
    h.send(http::Request::new(200)).await.unwrap();
    assert_eq!(h.handle.state(), State::Closed);
    assert_eq!(
        h.transitions(),
        [
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed),
        ]
    );
}

// ---- poll_ready while open ----

/// An inner service that is ready only when told, and that panics when called without a
/// successful `poll_ready` (as tower's `Buffer` does).
#[derive(Clone)]
struct Strict {
    ready: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    polls: Arc<AtomicUsize>,
    /// This clone's reserved readiness.
    reserved: bool,
}

impl Strict {
    fn new() -> Self {
        Strict {
            ready: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicUsize::new(0)),
            polls: Arc::new(AtomicUsize::new(0)),
            reserved: false,
        }
    }
}

impl Service<Req> for Strict {
    type Response = Res;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Res, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.reserved || self.ready.load(Ordering::SeqCst) {
            self.reserved = true;
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        assert!(self.reserved, "called without a successful poll_ready");
        self.reserved = false;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let status = *req.body();
        Box::pin(async move { Ok(http::Response::builder().status(status).body(()).unwrap()) })
    }
}

/// `poll_ready` once (it must not wait), then `call`.
async fn ready_now_then_call<S>(svc: &mut S, req: Req) -> Result<Res, BoxError>
where
    S: Service<Req, Response = Res, Error = BoxError>,
{
    tokio::time::timeout(Duration::from_millis(1), svc.ready())
        .await
        .expect("an open breaker is ready at once")?;
    svc.call(req).await
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_over_an_unready_inner_service_rejects_probes_without_calling_it() {
    let inner = Strict::new();
    let layer = breaker_layer(config().build().unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(inner.clone());
    handle.trip();

    // Non-probe: rejected at once, although the inner service is not ready.
    let err = ready_now_then_call(&mut svc, http::Request::new(200))
        .await
        .unwrap_err();
    assert!(err.is::<BreakerOpen>());
    // Probe: the inner service was not ready, so it is rejected too and not called.
    let err = ready_now_then_call(&mut svc, probe(200)).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().unwrap().retry_after(),
        secs(5)
    );
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        handle.state(),
        State::Open,
        "a rejected probe changes nothing"
    );
    assert!(
        inner.polls.load(Ordering::SeqCst) >= 2,
        "polled once per poll_ready"
    );

    // Once the inner service is ready, the probe reaches it (after a successful poll_ready).
    inner.ready.store(true, Ordering::SeqCst);
    let res = ready_now_then_call(&mut svc, probe(200)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_call_keeps_the_inner_readiness_for_the_next_probe() {
    let inner = Strict::new();
    inner.ready.store(true, Ordering::SeqCst);
    let layer = breaker_layer(config().build().unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(inner.clone());
    handle.trip();

    // Ready, then a non-probe call: rejected; the inner service keeps its reserved readiness.
    let err = ready_now_then_call(&mut svc, http::Request::new(200))
        .await
        .unwrap_err();
    assert!(err.is::<BreakerOpen>());
    assert!(svc.get_ref().reserved, "the readiness stays reserved");
    // The inner service stops being ready for newcomers; this clone's reservation still holds.
    inner.ready.store(false, Ordering::SeqCst);
    let res = ready_now_then_call(&mut svc, probe(503)).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    let s = handle.snapshot();
    assert_eq!((s.state, s.reopens), (State::Open, 1));
}

#[tokio::test(start_paused = true)]
async fn a_forced_open_breaker_does_not_poll_the_inner_service() {
    let inner = Strict::new();
    let layer = breaker_layer(config().build().unwrap());
    layer.handle().force_open();
    let mut svc = layer.layer(inner.clone());
    let err = ready_now_then_call(&mut svc, probe(200)).await.unwrap_err();
    assert!(err.is::<BreakerOpen>());
    assert_eq!(inner.polls.load(Ordering::SeqCst), 0);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0);
}

// ---- keyed ----

async fn send<S>(svc: &mut S, req: Req) -> Result<Res, BoxError>
where
    S: Service<Req, Response = Res, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

fn keyed(req: Req, provider: &str) -> Req {
    let mut req = req;
    req.extensions_mut().insert(Target::new(provider, "m"));
    req
}

#[tokio::test(start_paused = true)]
async fn the_keyed_breaker_admits_probes_per_key() {
    // The settings of `config()`, for every key.
    let layer = KeyedCircuitBreakerLayer::builder()
        .name("probe")
        .consecutive_failures(1)
        .open_duration(secs(5))
        .open_duration_multiplier(2.0)
        .max_open_duration(secs(60))
        .permitted_calls_in_half_open(1)
        .build()
        .unwrap();
    let breakers = layer.handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = layer.layer(upstream(calls.clone()));
    // Both targets fail once: both open.
    for provider in ["a", "b"] {
        send(&mut svc, keyed(http::Request::new(500), provider))
            .await
            .unwrap();
    }
    let key = |p: &str| Target::new(p, "m");
    assert_eq!(breakers.get(&key("a")).unwrap().state(), State::Open);
    assert_eq!(breakers.get(&key("b")).unwrap().state(), State::Open);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // An ordinary call to "a" is rejected; the chain's probe of "a" reaches it and closes it.
    let err = send(&mut svc, keyed(http::Request::new(200), "a"))
        .await
        .unwrap_err();
    assert!(err.is::<BreakerOpen>());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    send(&mut svc, keyed(probe(200), "a")).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(breakers.get(&key("a")).unwrap().state(), State::Closed);
    // "b" is untouched: still open, still rejecting ordinary calls.
    assert_eq!(breakers.get(&key("b")).unwrap().state(), State::Open);
    let err = send(&mut svc, keyed(http::Request::new(200), "b"))
        .await
        .unwrap_err();
    assert!(err.is::<BreakerOpen>());
    // A failing probe of "b" re-opens it for longer.
    send(&mut svc, keyed(probe(500), "b")).await.unwrap();
    let s = breakers.get(&key("b")).unwrap().snapshot();
    assert_eq!(
        (s.state, s.reopens, s.retry_after_ms),
        (State::Open, 1, Some(10_000))
    );
    // Forced open rejects probes per key too.
    breakers.get(&key("a")).unwrap().force_open();
    let err = send(&mut svc, keyed(probe(200), "a")).await.unwrap_err();
    assert!(err.is::<BreakerOpen>());
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}
