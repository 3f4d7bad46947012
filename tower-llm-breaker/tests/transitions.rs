//! Every transition and trip condition, with paused time, through the tower service and the
//! permit API.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::{service_fn, Service, ServiceExt};
use tower_llm_breaker::{
    BreakerHandle, CircuitBreakerConfig, CircuitBreakerLayer, OpenReason, Outcome, SlidingWindow,
    State, StateChange,
};
use tower_llm_core::{BoxError, BreakerOpen, ErrorKind, KindSet};

type Req = http::Request<u16>;
type Res = http::Response<()>;

/// An upstream that answers each request with the status in its body, and counts calls.
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
    changes: Arc<Mutex<Vec<StateChange>>>,
}

fn harness(
    config: CircuitBreakerConfig,
) -> Harness<
    impl Service<
            Req,
            Response = Res,
            Error = BoxError,
            Future = impl Future<Output = Result<Res, BoxError>> + Send,
        > + Clone,
> {
    let layer = breaker_layer(config);
    let handle = layer.handle();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    handle.on_state_change(move |c| seen.lock().unwrap().push(c.clone()));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = tower::Layer::layer(&layer, upstream(calls.clone()));
    Harness {
        svc,
        handle,
        calls,
        changes,
    }
}

impl<S> Harness<S>
where
    S: Service<Req, Response = Res, Error = BoxError> + Clone,
{
    async fn send(&mut self, status: u16) -> Result<Res, BoxError> {
        self.svc
            .ready()
            .await?
            .call(http::Request::new(status))
            .await
    }

    async fn send_n(&mut self, status: u16, n: usize) {
        for _ in 0..n {
            self.send(status).await.expect("admitted");
        }
    }

    async fn rejected(&mut self) -> BreakerOpen {
        let before = self.calls.load(Ordering::SeqCst);
        let err = self.send(200).await.expect_err("rejected");
        assert_eq!(
            self.calls.load(Ordering::SeqCst),
            before,
            "an open breaker must not call the inner service"
        );
        err.downcast_ref::<BreakerOpen>()
            .expect("BreakerOpen")
            .clone()
    }

    fn transitions(&self) -> Vec<(State, State)> {
        self.changes
            .lock()
            .unwrap()
            .iter()
            .map(|c| (c.from, c.to))
            .collect()
    }
}

fn config() -> tower_llm_breaker::CircuitBreakerConfigBuilder {
    CircuitBreakerConfig::builder().name("t")
}

/// A layer over a new breaker with the settings of `config` (the HTTP defaults otherwise).
fn breaker_layer(config: CircuitBreakerConfig) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder().build_with_handle(BreakerHandle::new(config))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_and_a_success_restarts_the_count() {
    let mut h = harness(
        config()
            .no_failure_rate()
            .consecutive_failures(3)
            .build()
            .unwrap(),
    );
    h.send_n(500, 2).await;
    h.send_n(200, 1).await;
    h.send_n(502, 2).await;
    assert_eq!(h.handle.state(), State::Closed);
    assert_eq!(h.handle.snapshot().consecutive_failures, 2);
    h.send_n(504, 1).await;
    assert_eq!(h.handle.state(), State::Open);
    let open = h.rejected().await;
    assert_eq!(open.breaker(), "t");
    assert_eq!(open.reason(), "3 consecutive failures");
    assert_eq!(open.retry_after(), secs(5));
    let change = h.changes.lock().unwrap()[0].clone();
    assert_eq!(change.reason, Some(OpenReason::ConsecutiveFailures));
    assert_eq!(change.open_for, Some(secs(5)));
}

#[tokio::test(start_paused = true)]
async fn failure_rate_trips_once_the_minimum_is_reached() {
    let mut h = harness(
        config()
            .no_consecutive_failures()
            .failure_rate_threshold(0.5)
            .sliding_window(SlidingWindow::Count(10))
            .minimum_calls(6)
            .build()
            .unwrap(),
    );
    // 3 failures of 5 calls: 60 %, but below the minimum of 6 calls.
    for status in [500, 200, 500, 200, 500] {
        h.send_n(status, 1).await;
    }
    assert_eq!(h.handle.state(), State::Closed);
    assert_eq!(h.handle.failure_rate(), None);
    // The sixth call is a success: 3/6 = 50 % >= 50 %, and it trips.
    h.send_n(200, 1).await;
    assert_eq!(h.handle.state(), State::Open);
    assert_eq!(
        h.changes.lock().unwrap()[0].reason,
        Some(OpenReason::FailureRate)
    );
    assert!(h
        .handle
        .snapshot()
        .last_open_reason
        .unwrap()
        .contains("50.0%"));
}

#[tokio::test(start_paused = true)]
async fn count_window_forgets_old_failures() {
    let mut h = harness(
        config()
            .no_consecutive_failures()
            .failure_rate_threshold(0.5)
            .sliding_window(SlidingWindow::Count(4))
            .minimum_calls(4)
            .build()
            .unwrap(),
    );
    // F S S S: 25 %; then S evicts the F: 0 %; then F S: 25 %... never 50 %.
    for status in [500, 200, 200, 200, 200, 500, 200, 200, 200, 500, 200, 200] {
        h.send_n(status, 1).await;
        assert_eq!(h.handle.state(), State::Closed);
    }
    let counts = h.handle.counts();
    assert_eq!((counts.calls, counts.failures), (4, 1));
    assert_eq!(h.handle.failure_rate(), Some(0.25));
    // F F in the last four: 50 %.
    h.send_n(500, 1).await;
    assert_eq!(h.handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_counts_only_the_last_seconds() {
    let mut h = harness(
        config()
            .no_consecutive_failures()
            .failure_rate_threshold(0.5)
            .sliding_window(SlidingWindow::Time(secs(10)))
            .minimum_calls(4)
            .build()
            .unwrap(),
    );
    h.send_n(500, 3).await;
    tokio::time::advance(secs(10)).await;
    // The three failures are 10 s old: out of the window.
    h.send_n(200, 3).await;
    h.send_n(500, 1).await;
    assert_eq!(h.handle.state(), State::Closed);
    let c = h.handle.counts();
    assert_eq!((c.calls, c.failures), (4, 1));
    tokio::time::advance(secs(3)).await;
    h.send_n(500, 2).await;
    // 3 failures of 6 within 10 s.
    assert_eq!(h.handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_trips_even_when_every_call_succeeds() {
    let calls = Arc::new(AtomicUsize::new(0));
    let slow = service_fn({
        let calls = calls.clone();
        move |req: http::Request<u64>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let ms = *req.body();
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, Infallible>(http::Response::new(()))
            }
        }
    });
    let layer = breaker_layer(
        config()
            .no_consecutive_failures()
            .no_failure_rate()
            .slow_calls(secs(2), 0.5)
            .sliding_window(SlidingWindow::Count(4))
            .minimum_calls(4)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let mut svc = tower::Layer::layer(&layer, slow);
    for ms in [100, 2500, 100] {
        svc.ready()
            .await
            .unwrap()
            .call(http::Request::new(ms))
            .await
            .unwrap();
    }
    assert_eq!(handle.counts().slow_calls, 1);
    // Exactly at the threshold is slow.
    svc.ready()
        .await
        .unwrap()
        .call(http::Request::new(2000))
        .await
        .unwrap();
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.snapshot().reason, Some(OpenReason::SlowCallRate));
    assert_eq!(
        handle.slow_call_rate(),
        None,
        "a new period starts empty after it opens"
    );
}

#[tokio::test(start_paused = true)]
async fn open_turns_half_open_after_the_duration_and_closes_after_the_probes() {
    let mut h = harness(config().consecutive_failures(2).build().unwrap());
    h.send_n(500, 2).await;
    assert_eq!(h.rejected().await.retry_after(), secs(5));
    tokio::time::advance(Duration::from_millis(3500)).await;
    assert_eq!(
        h.rejected().await.retry_after(),
        Duration::from_millis(1500)
    );
    tokio::time::advance(Duration::from_millis(1500)).await;
    h.send_n(200, 1).await;
    assert_eq!(h.handle.state(), State::HalfOpen);
    assert_eq!(h.handle.snapshot().half_open_successes, 1);
    h.send_n(200, 1).await;
    assert_eq!(h.handle.state(), State::Closed);
    assert_eq!(
        h.transitions(),
        [
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
    // The new closed period starts with an empty window.
    assert_eq!(h.handle.counts().calls, 0);
    assert_eq!(h.handle.snapshot().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn open_duration_doubles_per_reopen_up_to_the_cap_and_resets_on_close() {
    let mut h = harness(
        config()
            .consecutive_failures(1)
            .open_duration(secs(5))
            .max_open_duration(secs(60))
            .permitted_calls_in_half_open(1)
            .build()
            .unwrap(),
    );
    h.send_n(500, 1).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let wait = h.rejected().await.retry_after();
        seen.push(wait.as_secs());
        tokio::time::advance(wait).await;
        h.send_n(503, 1).await; // the probe fails: re-open
    }
    assert_eq!(seen, [5, 10, 20, 40, 60, 60]);
    assert_eq!(h.handle.snapshot().reopens, 6);
    let wait = h.rejected().await.retry_after();
    tokio::time::advance(wait).await;
    h.send_n(200, 1).await;
    assert_eq!(h.handle.state(), State::Closed);
    h.send_n(500, 1).await;
    assert_eq!(
        h.rejected().await.retry_after(),
        secs(5),
        "closing resets the growth"
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_is_seeded_and_only_shortens() {
    let run = |seed: u64| async move {
        let mut h = harness(
            config()
                .consecutive_failures(1)
                .permitted_calls_in_half_open(1)
                .jitter(0.5)
                .seed(seed)
                .build()
                .unwrap(),
        );
        h.send_n(500, 1).await;
        let mut waits = Vec::new();
        for reopens in 0..4u32 {
            let wait = h.rejected().await.retry_after();
            let full = h.handle.config().open_duration_for(reopens);
            assert!(
                wait <= full && wait >= full / 2,
                "{wait:?} not within [{:?}, {full:?}]",
                full / 2
            );
            waits.push(wait);
            tokio::time::advance(wait).await;
            h.send_n(500, 1).await;
        }
        waits
    };
    let a = run(1).await;
    assert_eq!(a, run(1).await, "same seed, same durations");
    assert_ne!(a, run(2).await);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_permitted_probes() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = service_fn({
        let (gate, calls) = (gate.clone(), calls.clone());
        move |req: Req| {
            calls.fetch_add(1, Ordering::SeqCst);
            let gate = gate.clone();
            async move {
                let status = *req.body();
                if status == 200 {
                    gate.acquire().await.unwrap().forget();
                }
                Ok::<_, Infallible>(http::Response::builder().status(status).body(()).unwrap())
            }
        }
    });
    let layer = breaker_layer(
        config()
            .consecutive_failures(1)
            .permitted_calls_in_half_open(2)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let svc = tower::Layer::layer(&layer, svc);
    svc.clone().oneshot(http::Request::new(500)).await.unwrap();
    tokio::time::advance(secs(5)).await;

    let p1 = tokio::spawn(svc.clone().oneshot(http::Request::new(200)));
    let p2 = tokio::spawn(svc.clone().oneshot(http::Request::new(200)));
    tokio::task::yield_now().await;
    assert_eq!(handle.snapshot().half_open_in_flight, 2);
    let third = svc
        .clone()
        .oneshot(http::Request::new(200))
        .await
        .unwrap_err();
    let third = third.downcast_ref::<BreakerOpen>().unwrap();
    assert_eq!(third.retry_after(), Duration::ZERO);
    assert!(third.reason().contains("2 probes"));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "the rejected call never reached the upstream"
    );

    gate.add_permits(2);
    p1.await.unwrap().unwrap();
    p2.await.unwrap().unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_gives_its_permit_back() {
    let hang = service_fn(|req: Req| async move {
        if *req.body() == 0 {
            std::future::pending::<()>().await;
        }
        Ok::<_, Infallible>(
            http::Response::builder()
                .status(*req.body())
                .body(())
                .unwrap(),
        )
    });
    let layer = breaker_layer(
        config()
            .consecutive_failures(1)
            .permitted_calls_in_half_open(1)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let mut svc = tower::Layer::layer(&layer, hang);
    svc.ready()
        .await
        .unwrap()
        .call(http::Request::new(500))
        .await
        .unwrap();
    tokio::time::advance(secs(5)).await;

    // The only probe hangs; a timeout above the breaker drops it.
    let probe = svc.ready().await.unwrap().call(http::Request::new(0));
    let timed_out = tokio::time::timeout(secs(1), probe).await;
    assert!(timed_out.is_err());
    assert_eq!(handle.state(), State::HalfOpen);
    assert_eq!(
        handle.snapshot().half_open_in_flight,
        0,
        "the dropped probe released its permit"
    );

    // An ignored outcome (429) also gives the permit back without closing.
    svc.ready()
        .await
        .unwrap()
        .call(http::Request::new(429))
        .await
        .unwrap();
    assert_eq!(handle.state(), State::HalfOpen);
    assert_eq!(handle.snapshot().half_open_in_flight, 0);

    svc.ready()
        .await
        .unwrap()
        .call(http::Request::new(200))
        .await
        .unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn max_wait_in_half_open_reopens_when_probes_hang() {
    let hang = service_fn(|req: Req| async move {
        if *req.body() == 0 {
            std::future::pending::<()>().await;
        }
        Ok::<_, Infallible>(
            http::Response::builder()
                .status(*req.body())
                .body(())
                .unwrap(),
        )
    });
    let layer = breaker_layer(
        config()
            .consecutive_failures(1)
            .permitted_calls_in_half_open(1)
            .max_wait_in_half_open(secs(30))
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let svc = tower::Layer::layer(&layer, hang);
    svc.clone().oneshot(http::Request::new(500)).await.unwrap();
    tokio::time::advance(secs(5)).await;
    // A probe that hangs and is never cancelled holds the only permit.
    let hung = tokio::spawn(svc.clone().oneshot(http::Request::new(0)));
    tokio::task::yield_now().await;
    assert!(svc.clone().oneshot(http::Request::new(200)).await.is_err());
    tokio::time::advance(secs(30)).await;
    let err = svc
        .clone()
        .oneshot(http::Request::new(200))
        .await
        .unwrap_err();
    let open = err.downcast_ref::<BreakerOpen>().unwrap();
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.snapshot().reason, Some(OpenReason::HalfOpenTimeout));
    assert_eq!(
        open.retry_after(),
        secs(10),
        "a re-open: the duration doubled"
    );
    tokio::time::advance(secs(10)).await;
    svc.clone().oneshot(http::Request::new(200)).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    hung.abort();
}

#[tokio::test(start_paused = true)]
async fn four_hundreds_rate_limits_and_local_rejections_are_ignored() {
    let mut h = harness(
        config()
            .consecutive_failures(2)
            .minimum_calls(2)
            .build()
            .unwrap(),
    );
    for status in [400, 401, 403, 404, 429, 402, 413] {
        h.send_n(status, 3).await;
    }
    assert_eq!(h.handle.state(), State::Closed);
    assert_eq!(h.handle.counts().calls, 0);
    assert_eq!(h.handle.snapshot().ignored, 21);

    // A lower breaker's rejection is a local failure: it says nothing about the target.
    let inner = service_fn(|_req: Req| async {
        Err::<Res, BoxError>(Box::new(BreakerOpen::new("lower", "test", secs(1))))
    });
    let layer = breaker_layer(config().consecutive_failures(1).build().unwrap());
    let mut svc = tower::Layer::layer(&layer, inner);
    for _ in 0..5 {
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(0))
            .await
            .unwrap_err();
        assert_eq!(
            err.downcast_ref::<BreakerOpen>().unwrap().breaker(),
            "lower"
        );
    }
    assert_eq!(layer.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn transport_errors_and_timeouts_count() {
    let layer = breaker_layer(config().consecutive_failures(2).build().unwrap());
    let failing = service_fn(|req: Req| async move {
        match *req.body() {
            0 => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "refused",
            )),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            )),
        }
        .map(|()| http::Response::new(()))
    });
    let mut svc = tower::Layer::layer(&layer, failing);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(0))
        .await
        .unwrap_err();
    assert!(
        err.downcast_ref::<std::io::Error>().is_some(),
        "the inner error is passed through"
    );
    svc.ready()
        .await
        .unwrap()
        .call(http::Request::new(1))
        .await
        .unwrap_err();
    assert_eq!(layer.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn failures_and_a_classifier_for_a_typed_client() {
    #[derive(Clone)]
    struct ChatClassifier;
    impl tower_llm_core::Classify<Result<String, String>> for ChatClassifier {
        fn classify_response(
            &self,
            res: &Result<String, String>,
        ) -> tower_llm_core::Classification {
            match res {
                Ok(_) => tower_llm_core::Classification::Success,
                Err(_) => tower_llm_core::Classification::Failure(tower_llm_core::Failure::new(
                    ErrorKind::RateLimited,
                )),
            }
        }
    }
    let typed = service_fn(|prompt: &'static str| async move {
        Ok::<_, Infallible>(if prompt.is_empty() {
            Err("limited".to_owned())
        } else {
            Ok(prompt.to_owned())
        })
    });
    // Count rate limits for this provider.
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .classifier(ChatClassifier)
        .failures(KindSet::counts_against_breaker().with(ErrorKind::RateLimited))
        .read_budget(tower_llm_core::NoBudget)
        .build()
        .unwrap();
    assert!(layer.failures().contains(ErrorKind::RateLimited));
    let mut svc = tower::Layer::layer(&layer, typed);
    assert_eq!(
        svc.ready().await.unwrap().call("hi").await.unwrap(),
        Ok("hi".to_owned())
    );
    svc.ready()
        .await
        .unwrap()
        .call("")
        .await
        .unwrap()
        .unwrap_err();
    svc.ready()
        .await
        .unwrap()
        .call("")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(layer.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn manual_states() {
    let mut h = harness(config().consecutive_failures(1).build().unwrap());
    h.handle.force_open();
    let open = h.rejected().await;
    assert_eq!(open.reason(), "forced open");
    tokio::time::advance(secs(3600)).await;
    h.rejected().await;
    assert_eq!(h.handle.state(), State::ForcedOpen);

    h.handle.disable();
    h.send_n(500, 10).await;
    assert_eq!(h.handle.state(), State::Disabled);
    assert_eq!(h.handle.counts().calls, 0, "disabled records nothing");

    h.handle.metrics_only();
    h.send_n(500, 10).await;
    assert_eq!(h.handle.state(), State::MetricsOnly);
    assert_eq!(
        h.handle.counts().failures,
        10,
        "metrics-only records but never opens"
    );
    assert_eq!(h.handle.snapshot().consecutive_failures, 10);

    h.handle.reset();
    assert_eq!(h.handle.counts().calls, 0);
    h.handle.trip();
    assert_eq!(h.rejected().await.reason(), "opened by hand");
    h.handle.transition_to(State::HalfOpen);
    h.send_n(200, 2).await;
    assert_eq!(h.handle.state(), State::Closed);
    assert_eq!(
        h.transitions(),
        [
            (State::Closed, State::ForcedOpen),
            (State::ForcedOpen, State::Disabled),
            (State::Disabled, State::MetricsOnly),
            (State::MetricsOnly, State::Closed),
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed),
        ]
    );
    let gens: Vec<u64> = h
        .changes
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.generation)
        .collect();
    assert!(gens.windows(2).all(|w| w[1] == w[0] + 1));
}

#[tokio::test(start_paused = true)]
async fn a_listener_may_operate_the_breaker() {
    let handle = BreakerHandle::new(config().consecutive_failures(1).build().unwrap());
    let inner = handle.clone();
    // Force-open whenever it opens on its own: the listener runs outside the breaker's lock.
    handle.on_state_change(move |c| {
        if c.to == State::Open {
            inner.force_open();
        }
    });
    handle
        .try_acquire()
        .unwrap()
        .record(Outcome::Failure(ErrorKind::ServerError));
    assert_eq!(handle.state(), State::ForcedOpen);
}

#[tokio::test(start_paused = true)]
async fn a_call_admitted_before_a_transition_does_not_count_after_it() {
    let handle = BreakerHandle::new(config().consecutive_failures(2).build().unwrap());
    let early = handle.try_acquire().unwrap();
    let f = || Outcome::Failure(ErrorKind::ServerError);
    handle.try_acquire().unwrap().record(f());
    handle.try_acquire().unwrap().record(f());
    assert_eq!(handle.state(), State::Open);
    tokio::time::advance(secs(5)).await;
    let probe = handle.try_acquire().unwrap();
    assert!(probe.is_probe());
    // The early call fails now: it was admitted while closed, so it cannot fail the probe period.
    early.record(f());
    assert_eq!(handle.state(), State::HalfOpen);
    probe.record(Outcome::Success);
    handle.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_answers_without_waiting_for_the_inner_service() {
    struct NeverReady(Arc<AtomicUsize>);
    impl Service<Req> for NeverReady {
        type Response = Res;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Res, Infallible>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::task::Poll::Pending
        }
        fn call(&mut self, _: Req) -> Self::Future {
            unreachable!("never ready")
        }
    }
    let polls = Arc::new(AtomicUsize::new(0));
    let layer = breaker_layer(config().build().unwrap());
    layer.handle().force_open();
    let mut svc = tower::Layer::layer(&layer, NeverReady(polls.clone()));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(200))
        .await
        .unwrap_err();
    assert!(err.is::<BreakerOpen>());
    assert_eq!(polls.load(Ordering::SeqCst), 0);
    assert_eq!(layer.handle().snapshot().not_permitted, 1);
}

#[tokio::test(start_paused = true)]
async fn snapshot_serializes() {
    let mut h = harness(
        config()
            .consecutive_failures(3)
            .minimum_calls(2)
            .failure_rate_threshold(0.75)
            .build()
            .unwrap(),
    );
    h.send_n(500, 1).await;
    h.send_n(200, 1).await;
    let json = serde_json::to_value(h.handle.snapshot()).unwrap();
    assert_eq!(json["name"], "t");
    assert_eq!(json["state"], "closed");
    assert_eq!(json["calls"], 2);
    assert_eq!(json["failures"], 1);
    assert_eq!(json["failure_rate"], 0.5);
    let back: tower_llm_breaker::BreakerSnapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back, h.handle.snapshot());
    let event = serde_json::to_value(StateChange {
        breaker: "t".into(),
        from: State::Closed,
        to: State::Open,
        reason: Some(OpenReason::FailureRate),
        detail: None,
        open_for: Some(secs(5)),
        generation: 2,
    })
    .unwrap();
    assert_eq!(event["to"], "open");
    assert_eq!(event["reason"], "failure_rate");
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_breaker() {
    let mut h = harness(config().consecutive_failures(4).build().unwrap());
    let mut other = h.svc.clone();
    h.send_n(500, 2).await;
    for _ in 0..2 {
        other
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(500))
            .await
            .unwrap();
    }
    assert_eq!(h.handle.state(), State::Open);
    assert!(other
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(200))
        .await
        .is_err());
}
