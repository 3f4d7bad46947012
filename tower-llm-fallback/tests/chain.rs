//! Chain behaviour that needs precise control of the inner services: cancellation, pools,
//! local rejections, rewrites that cannot apply, readiness, custom classification.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_llm_core::{
    AllTargetsFailed, AttemptBudget, BoxError, BreakerOpen, BufferRequestBodyLayer, BulkheadFull,
    Classification, Classify, ErrorKind, Failure, HttpClassifier, LimitKind, ReplayBody, Target,
};
use tower_llm_fallback::{
    is_skipped, Cooldown, CooldownPolicy, Escalation, EscalationEvent, EscalationPolicy,
    EscalationReason, FallbackBody, FallbackKind, FallbackLayer, FallbackReport, RewriteError,
    Selection, TargetConfig,
};

type Req = Request<ReplayBody<Full<Bytes>>>;

/// What the scripted upstream does for one provider.
#[derive(Clone, Copy, Debug)]
enum Behave {
    Ok,
    Status(u16),
    /// Never answers.
    Hang,
    /// Refused by a (pretend) per-target breaker below the chain.
    BreakerOpen,
    /// Refused by a (pretend) full bulkhead below the chain.
    BulkheadFull,
}

/// A fake client: behaviour per provider (read from the `Target` extension), calls counted.
#[derive(Clone, Default)]
struct Scripted {
    behave: Arc<Mutex<HashMap<String, Behave>>>,
    calls: Arc<Mutex<Vec<(String, Bytes)>>>,
    budgets: Arc<Mutex<Vec<BudgetSeen>>>,
}

/// The budget the chain set on one call, by provider.
type BudgetSeen = (String, Option<AttemptBudget>);

impl Scripted {
    fn set(&self, provider: &str, b: Behave) {
        self.behave.lock().unwrap().insert(provider.to_owned(), b);
    }

    fn budgets_of(&self, provider: &str) -> Vec<Option<AttemptBudget>> {
        self.budgets
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == provider)
            .map(|(_, b)| *b)
            .collect()
    }

    fn calls_to(&self, provider: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == provider)
            .count()
    }
}

impl Service<Req> for Scripted {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let provider = req
            .extensions()
            .get::<Target>()
            .map(|t| t.provider().to_owned())
            .unwrap_or_default();
        let body = req.body().bytes().cloned().unwrap_or_default();
        self.calls.lock().unwrap().push((provider.clone(), body));
        let budget = req.extensions().get::<AttemptBudget>().copied();
        self.budgets
            .lock()
            .unwrap()
            .push((provider.clone(), budget));
        let behave = self
            .behave
            .lock()
            .unwrap()
            .get(&provider)
            .copied()
            .unwrap_or(Behave::Ok);
        Box::pin(async move {
            match behave {
                Behave::Ok => Ok(Response::new(Full::new(Bytes::from(format!(
                    r#"{{"model":"{provider}"}}"#
                ))))),
                Behave::Status(s) => Ok(Response::builder()
                    .status(s)
                    .body(Full::new(Bytes::new()))
                    .unwrap()),
                Behave::Hang => std::future::pending().await,
                Behave::BreakerOpen => Err(Box::new(BreakerOpen::new(
                    provider,
                    "test",
                    Duration::from_secs(5),
                )) as BoxError),
                Behave::BulkheadFull => Err(Box::new(BulkheadFull::new(
                    provider,
                    LimitKind::Concurrency,
                    64,
                    Duration::ZERO,
                )) as BoxError),
            }
        })
    }
}

fn req(body: &'static str) -> Req {
    Request::post("http://gateway/v1/chat/completions")
        .body(ReplayBody::from_bytes(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// Poll `fut` once.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

const BODY: &str = r#"{"model":"alias","messages":[]}"#;

fn report(res: &Response<FallbackBody<Full<Bytes>>>) -> FallbackReport {
    res.extensions().get::<FallbackReport>().cloned().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_releases_the_probe_slot() {
    let upstream = Scripted::default();
    upstream.set("a", Behave::Status(500));
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("a", "m"))
        .target(TargetConfig::new("b", "m"))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new().layer(layer).service(upstream.clone());
    svc.clone().oneshot(req(BODY)).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;

    // The probe hangs, and its caller gives up (drops the future).
    upstream.set("a", Behave::Hang);
    let mut probe = Box::pin(svc.clone().oneshot(req(BODY)));
    assert!(poll_once(&mut probe).await.is_pending());
    assert_eq!(upstream.calls_to("a"), 2);
    assert_eq!(handle.health().targets[0].in_flight, 1);
    assert!(
        handle.health().targets[0]
            .cooldown
            .as_ref()
            .unwrap()
            .probing
    );
    // While it is out, others skip the target.
    let res = svc.clone().oneshot(req(BODY)).await.unwrap();
    assert!(is_skipped(&report(&res).attempts[0]));
    drop(probe);
    assert_eq!(handle.health().targets[0].in_flight, 0);
    assert!(
        !handle.health().targets[0]
            .cooldown
            .as_ref()
            .unwrap()
            .probing
    );

    // The next request probes again, and a success clears the cooldown at once.
    upstream.set("a", Behave::Ok);
    let res = svc.clone().oneshot(req(BODY)).await.unwrap();
    assert_eq!(report(&res).fallback, FallbackKind::None);
    assert_eq!(upstream.calls_to("a"), 3);
    assert!(handle.health().targets[0].cooldown.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_skips_the_target_without_a_cooldown() {
    let upstream = Scripted::default();
    upstream.set("a", Behave::BulkheadFull);
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("a", "m"))
        .target(TargetConfig::new("b", "m"))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new().layer(layer).service(upstream.clone());
    for _ in 0..3 {
        let res = svc.clone().oneshot(req(BODY)).await.unwrap();
        let report = report(&res);
        assert_eq!(report.target.as_deref(), Some("b/m"));
        assert_eq!(report.attempts[0].kind, ErrorKind::Overloaded);
        assert!(!is_skipped(&report.attempts[0]));
    }
    // Called every time (its bulkhead decides), never benched, not counted as its failure.
    assert_eq!(upstream.calls_to("a"), 3);
    let a = handle.health().targets[0].clone();
    assert!(a.available && a.cooldown.is_none());
    assert_eq!((a.requests, a.failures), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_below_is_benched_until_the_chains_probe_which_is_marked() {
    let upstream = Scripted::default();
    upstream.set("a", Behave::BreakerOpen);
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("a", "m"))
        .target(TargetConfig::new("b", "m"))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new().layer(layer).service(upstream.clone());
    let res = svc.clone().oneshot(req(BODY)).await.unwrap();
    assert_eq!(report(&res).target.as_deref(), Some("b/m"));
    // The breaker says 5 s; the chain benches the target for its own adaptive cooldown (1 s)
    // without counting a failure, then probes: the breaker lets a marked probe through.
    let a = handle.health().targets[0].clone();
    assert!(!a.available);
    assert_eq!(a.cooldown.as_ref().unwrap().kind, ErrorKind::Overloaded);
    assert_eq!((a.requests, a.failures), (0, 0));
    let res = svc.clone().oneshot(req(BODY)).await.unwrap();
    assert!(is_skipped(&report(&res).attempts[0]));
    assert_eq!(upstream.calls_to("a"), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    upstream.set("a", Behave::Ok);
    let res = svc.clone().oneshot(req(BODY)).await.unwrap();
    assert_eq!(report(&res).target.as_deref(), Some("a/m"));
    let budgets = upstream.budgets_of("a");
    assert!(!budgets[0].unwrap().is_probe());
    assert!(budgets[1].unwrap().is_probe());
    assert!(handle.health().targets[0].cooldown.is_none());
}

#[tokio::test(start_paused = true)]
async fn every_attempt_carries_its_targets_deadline_and_role() {
    let upstream = Scripted::default();
    upstream.set("a", Behave::Status(503));
    upstream.set("b", Behave::Status(503));
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("a", "m").attempt_timeout(Duration::from_secs(2)))
        .target(TargetConfig::new("b", "m").attempt_timeout(Duration::from_secs(7)))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(upstream.clone());
    let start = tokio::time::Instant::now();
    let _ = svc.clone().oneshot(req(BODY)).await;
    // `a`: another target remains, so one call (fail over rather than retry); `b` is the last
    // one: retries below are allowed within its 7 s.
    let a = upstream.budgets_of("a")[0].unwrap();
    assert_eq!(a.deadline(), start + Duration::from_secs(2));
    assert!(!a.allows_retries() && !a.is_probe());
    let b = upstream.budgets_of("b")[0].unwrap();
    assert_eq!(b.deadline(), start + Duration::from_secs(7));
    assert!(b.allows_retries() && !b.is_probe());
}

#[tokio::test(start_paused = true)]
async fn when_every_target_is_benched_probes_go_at_a_bounded_rate() {
    let upstream = Scripted::default();
    upstream.set("a", Behave::Status(503));
    upstream.set("b", Behave::Status(503));
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("a", "m"))
        .target(TargetConfig::new("b", "m"))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(upstream.clone());
    // Both fail for a minute, probed by the cooldown: by then each is benched for 5 s.
    for _ in 0..600 {
        let _ = svc.clone().oneshot(req(BODY)).await;
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    let calls = |u: &Scripted| u.calls_to("a") + u.calls_to("b");
    let before = calls(&upstream);
    // Panic mode: a 500 ms cadence per target instead of 5 s, one probe at a time, and the
    // other requests fail at once with the time to the next probe.
    let mut last = None;
    for _ in 0..100 {
        let err = svc.clone().oneshot(req(BODY)).await.unwrap_err();
        last = err.downcast::<AllTargetsFailed>().ok();
        tokio::time::advance(Duration::from_millis(50)).await;
    }
    let probes = calls(&upstream) - before;
    assert!((18..=22).contains(&probes), "{probes} probes in 5 s");
    let retry_after = last.unwrap().retry_after().unwrap();
    assert!(retry_after <= Duration::from_millis(500), "{retry_after:?}");
    // Recovery: answers resume within one panic interval.
    upstream.set("a", Behave::Ok);
    let back = tokio::time::Instant::now();
    loop {
        if svc.clone().oneshot(req(BODY)).await.is_ok() {
            break;
        }
        tokio::time::advance(Duration::from_millis(50)).await;
    }
    assert!(
        back.elapsed() <= Duration::from_millis(500),
        "{:?}",
        back.elapsed()
    );
    assert!(upstream.budgets_of("a").last().unwrap().unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn weighted_pools_follow_weights_reproducibly_and_fail_over_inside_the_tier() {
    async fn run(seed: u64) -> (HashMap<String, usize>, Scripted) {
        let upstream = Scripted::default();
        let layer = FallbackLayer::builder()
            .pool(
                Selection::Weighted,
                [
                    TargetConfig::new("east", "m").weight(3),
                    TargetConfig::new("west", "m").weight(1),
                ],
            )
            .target(TargetConfig::new("backup", "m"))
            .seed(seed)
            .build()
            .unwrap();
        let svc = ServiceBuilder::new().layer(layer).service(upstream.clone());
        let mut counts = HashMap::new();
        for _ in 0..400 {
            let res = svc.clone().oneshot(req(BODY)).await.unwrap();
            *counts
                .entry(report(&res).target.unwrap().to_string())
                .or_default() += 1;
        }
        (counts, upstream)
    }
    let (counts, _) = run(42).await;
    let (again, _) = run(42).await;
    assert_eq!(counts, again, "same seed, same choices");
    let east = counts["east/m"];
    assert!((260..=340).contains(&east), "east got {east} of 400");
    assert_eq!(east + counts["west/m"], 400);

    // One member down: its tier-mate answers (not the next tier), and the report says so.
    let upstream = Scripted::default();
    upstream.set("east", Behave::Status(503));
    let layer = FallbackLayer::builder()
        .pool(
            Selection::Weighted,
            [
                TargetConfig::new("east", "m").weight(1000),
                TargetConfig::new("west", "m"),
            ],
        )
        .target(TargetConfig::new("backup", "m"))
        .seed(1)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(upstream.clone());
    let res = svc.clone().oneshot(req(BODY)).await.unwrap();
    let r = report(&res);
    assert_eq!(r.target.as_deref(), Some("west/m"));
    assert_eq!((r.fallback, r.tier), (FallbackKind::Target, Some(0)));
    // Benched east is simply not picked next time: a pool serving from a healthy member is no fallback.
    let res = svc.clone().oneshot(req(BODY)).await.unwrap();
    assert_eq!(report(&res).fallback, FallbackKind::None);
    assert_eq!(upstream.calls_to("backup"), 0);
}

#[tokio::test(start_paused = true)]
async fn least_loaded_pools_pick_the_idlest_target() {
    let upstream = Scripted::default();
    upstream.set("one", Behave::Hang);
    let layer = FallbackLayer::builder()
        .pool(
            Selection::LeastLoaded,
            [TargetConfig::new("one", "m"), TargetConfig::new("two", "m")],
        )
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new().layer(layer).service(upstream.clone());
    let mut stuck = Box::pin(svc.clone().oneshot(req(BODY)));
    assert!(poll_once(&mut stuck).await.is_pending());
    assert_eq!(handle.health().targets[0].in_flight, 1);
    for _ in 0..3 {
        let res = svc.clone().oneshot(req(BODY)).await.unwrap();
        assert_eq!(report(&res).target.as_deref(), Some("two/m"));
    }
    drop(stuck);
    assert_eq!(
        handle
            .health()
            .targets
            .iter()
            .map(|t| t.in_flight)
            .sum::<usize>(),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn an_unready_service_times_out_and_the_chain_moves_on() {
    #[derive(Clone)]
    struct NeverReady;
    impl Service<Req> for NeverReady {
        type Response = Response<Full<Bytes>>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Self::Response, BoxError>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Pending
        }
        fn call(&mut self, _req: Req) -> Self::Future {
            unreachable!("never ready")
        }
    }
    let slow = tower::util::BoxCloneSyncService::new(NeverReady);
    let fine = tower::util::BoxCloneSyncService::new(tower::service_fn(|_req: Req| async {
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    }));
    let svc = FallbackLayer::builder()
        .target(TargetConfig::new("slow", "").attempt_timeout(Duration::from_millis(250)))
        .target(TargetConfig::new("fine", ""))
        .build()
        .unwrap()
        .services([("slow", slow), ("fine", fine)])
        .unwrap();
    let start = tokio::time::Instant::now();
    let res = svc.oneshot(req(BODY)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    let r = report(&res);
    assert_eq!(r.target.as_deref(), Some("fine"));
    assert_eq!(
        (r.attempts[0].kind, r.attempts[0].elapsed),
        (ErrorKind::Timeout, Duration::from_millis(250))
    );
}

#[tokio::test(start_paused = true)]
async fn services_must_match_targets() {
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("a", "m"))
        .target(TargetConfig::new("b", "m"))
        .build()
        .unwrap();
    let s = Scripted::default();
    assert_eq!(
        layer.services([("a/m", s.clone())]).unwrap_err().message(),
        "no service for target `b/m`"
    );
    assert!(layer
        .services([("a/m", s.clone()), ("a/m", s.clone())])
        .is_err());
    assert!(layer.services([("x", s.clone())]).is_err());
    assert!(layer.services([("b/m", s.clone()), ("a/m", s)]).is_ok());
}

#[tokio::test(start_paused = true)]
async fn bodies_that_cannot_be_rewritten_or_replayed() {
    // A rewrite needs the buffered body; `Full` is replayable but not buffered: the target is
    // refused locally and the chain moves on to one that needs no rewrite.
    let svc = ServiceBuilder::new()
        .layer(
            FallbackLayer::builder()
                .target(TargetConfig::new("rewrites", "other-model"))
                .target(TargetConfig::new("passes", ""))
                .build()
                .unwrap(),
        )
        .service(tower::service_fn(|req: Request<Full<Bytes>>| async move {
            let provider = req
                .extensions()
                .get::<Target>()
                .unwrap()
                .provider()
                .to_owned();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(provider))))
        }));
    let res = svc
        .oneshot(Request::new(Full::new(Bytes::from_static(BODY.as_bytes()))))
        .await
        .unwrap();
    let r = res.extensions().get::<FallbackReport>().cloned().unwrap();
    assert_eq!(r.target.as_deref(), Some("passes"));
    assert_eq!(r.attempts[0].kind, ErrorKind::BadRequest);

    // Over the replay limit: sent once, whole; when that target fails there is no second attempt.
    let upstream = Scripted::default();
    upstream.set("first", Behave::Status(500));
    let svc = ServiceBuilder::new()
        .layer(BufferRequestBodyLayer::new(8))
        .layer(
            FallbackLayer::builder()
                .target(TargetConfig::new("first", "").keep_request_model())
                .target(TargetConfig::new("second", "").keep_request_model())
                .build()
                .unwrap(),
        )
        .service(upstream.clone());
    let err = svc
        .oneshot(Request::new(Full::new(Bytes::from_static(BODY.as_bytes()))))
        .await
        .unwrap_err();
    let all = err.downcast_ref::<AllTargetsFailed>().unwrap();
    assert_eq!(all.attempts().len(), 1);
    assert_eq!(upstream.calls_to("second"), 0);
    assert_eq!(
        upstream.calls.lock().unwrap()[0].1.len(),
        0,
        "streamed through, not buffered"
    );
    let _ = RewriteError::target; // the error type is public for callers that match on it
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_decides_what_fails() {
    /// Treats 404 from a deployment as overloaded (the model is being redeployed).
    #[derive(Clone)]
    struct Redeploying;
    impl<B> Classify<Response<B>> for Redeploying {
        fn classify_response(&self, res: &Response<B>) -> Classification {
            if res.status() == StatusCode::NOT_FOUND {
                Classification::Failure(Failure::new(ErrorKind::Overloaded))
            } else {
                HttpClassifier::default().classify_response(res)
            }
        }
    }
    let upstream = Scripted::default();
    upstream.set("a", Behave::Status(404));
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("a", "m"))
        .target(TargetConfig::new("b", "m"))
        .classifier(Redeploying)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(upstream);
    let res = svc.oneshot(req(BODY)).await.unwrap();
    assert_eq!(report(&res).attempts[0].kind, ErrorKind::Overloaded);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, r#"{"model":"b"}"#);
}

#[tokio::test(start_paused = true)]
async fn escalation_fires_on_a_repeated_kind_and_on_a_burst() {
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<EscalationEvent>>>);
    impl Escalation for Collect {
        fn escalate(&self, event: &EscalationEvent) {
            self.0.lock().unwrap().push(event.clone());
        }
    }
    let seen = Collect::default();
    let upstream = Scripted::default();
    upstream.set("a", Behave::Status(500));
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("a", "m"))
        .target(TargetConfig::new("b", "m"))
        .escalation(seen.clone())
        .escalation_policy(
            EscalationPolicy::new()
                .all_targets_failed(false)
                .repeated_kind(3)
                .failure_burst(4, Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(upstream.clone());
    for _ in 0..5 {
        svc.clone().oneshot(req(BODY)).await.unwrap();
        tokio::time::advance(Duration::from_secs(100)).await; // past any cooldown: a is called each time
    }
    let reasons: Vec<_> = seen.0.lock().unwrap().iter().map(|e| e.reason).collect();
    assert_eq!(
        reasons,
        [EscalationReason::RepeatedKind {
            kind: ErrorKind::ServerError,
            count: 3
        }]
    );
    assert_eq!(upstream.calls_to("a"), 5);

    // A burst: more than 4 failures within a minute, across targets (no cooldowns here, so
    // every request calls both).
    let seen = Collect::default();
    let upstream = Scripted::default();
    upstream.set("a", Behave::Status(500));
    upstream.set("b", Behave::Status(500));
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("a", "m"))
        .target(TargetConfig::new("b", "m"))
        .cooldowns(CooldownPolicy::default().with(ErrorKind::ServerError, Cooldown::None))
        .escalation(seen.clone())
        .escalation_policy(
            EscalationPolicy::new()
                .all_targets_failed(false)
                .repeated_kind(0)
                .failure_burst(4, Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(upstream.clone());
    for _ in 0..3 {
        let err = svc.clone().oneshot(req(BODY)).await.unwrap_err();
        assert!(err.is::<AllTargetsFailed>());
        tokio::time::advance(Duration::from_secs(2)).await;
    }
    assert_eq!(upstream.calls.lock().unwrap().len(), 6);
    let reasons: Vec<_> = seen.0.lock().unwrap().iter().map(|e| e.reason).collect();
    assert_eq!(
        reasons,
        [EscalationReason::FailureBurst {
            failures: 5,
            window_ms: 60_000
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn absurd_durations_saturate_instead_of_panicking() {
    let upstream = Scripted::default();
    upstream.set("a", Behave::Status(500));
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("a", "m").attempt_timeout(Duration::MAX))
        .target(TargetConfig::new("b", "m").attempt_timeout(Duration::MAX))
        .cooldowns(
            CooldownPolicy::default()
                .with(ErrorKind::ServerError, Cooldown::Fixed(Duration::MAX))
                .max_probe_interval(Duration::MAX)
                .max_server_delay(Duration::MAX),
        )
        .cache(tower_llm_fallback::CacheConfig::new().ttl(Duration::MAX))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new().layer(layer).service(upstream);
    let res = svc.clone().oneshot(req(BODY)).await.unwrap();
    assert_eq!(report(&res).target.as_deref(), Some("b/m"));
    let health = handle.health();
    let until = health.targets[0]
        .cooldown
        .as_ref()
        .unwrap()
        .until_unix_ms
        .unwrap();
    assert!(until > health.at_unix_ms + 20 * 365 * 24 * 3600 * 1000);
    // The snapshot round-trips too.
    assert_eq!(handle.restore_snapshot(&health), 2);
}

#[tokio::test(start_paused = true)]
async fn a_total_outage_escalates_once_per_window_then_sends_a_summary() {
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<EscalationEvent>>>);
    impl Escalation for Collect {
        fn escalate(&self, event: &EscalationEvent) {
            self.0.lock().unwrap().push(event.clone());
        }
    }
    let seen = Collect::default();
    let upstream = Scripted::default();
    upstream.set("a", Behave::Status(500));
    let layer = FallbackLayer::builder()
        .target(TargetConfig::new("a", "m"))
        .cooldowns(CooldownPolicy::default().with(ErrorKind::ServerError, Cooldown::None))
        .escalation(seen.clone())
        .escalation_policy(
            EscalationPolicy::new()
                .repeated_kind(0)
                .failure_burst(0, Duration::from_secs(60))
                .rate_limit_window(Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(upstream.clone());
    for _ in 0..1000 {
        let err = svc.clone().oneshot(req(BODY)).await.unwrap_err();
        assert!(err.is::<AllTargetsFailed>());
    }
    assert_eq!(upstream.calls_to("a"), 1000);
    assert_eq!(seen.0.lock().unwrap().len(), 1, "one event in the window");
    tokio::time::sleep(Duration::from_secs(10)).await;
    tokio::task::yield_now().await;
    let events = seen.0.lock().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].reason, EscalationReason::AllTargetsFailed);
    assert_eq!(events[0].suppressed, None);
    assert_eq!(events[0].attempts.len(), 1);
    let summary = events[1].suppressed.expect("a summary");
    assert_eq!((summary.count, summary.window_ms), (999, 10_000));
    assert_eq!(events[1].reason, EscalationReason::AllTargetsFailed);
}
