//! The retry layer around in-process services: typed clients, tagging, deadlines, local
//! rejections, hedging, per-target budgets and cancellation.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_llm_core::{
    classify_error, BoxError, BreakerOpen, Classification, ClassifiedError, Classify, ErrorKind,
    Failure, RetriesExhausted, Target,
};
use tower_llm_retry::{
    Attempt, Backoff, CloneReplay, Hedging, HttpReplay, RetryAttempts, RetryBudget, RetryLayer,
    StopReason,
};

type Req = Request<Full<Bytes>>;
type Res = Response<()>;

fn req() -> Req {
    Request::post("http://llm.test/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))
        .unwrap()
}

fn status(code: u16) -> Res {
    Response::builder().status(code).body(()).unwrap()
}

fn with_retry_after(code: u16, secs: u64) -> Res {
    Response::builder()
        .status(code)
        .header("retry-after", secs.to_string())
        .body(())
        .unwrap()
}

/// What a scripted upstream does on one call.
#[derive(Clone)]
enum Step {
    Reply(Res),
    ReplyAfter(Duration, Res),
    Fail(fn() -> BoxError),
}

/// An upstream that plays `steps` in order (the last one repeats) and logs each call.
#[derive(Clone)]
struct Scripted {
    steps: Arc<Vec<Step>>,
    calls: Arc<Mutex<Vec<(Instant, Attempt)>>>,
    /// Calls whose future was dropped before it finished.
    cancelled: Arc<AtomicU32>,
}

impl Scripted {
    fn new(steps: Vec<Step>) -> Self {
        Scripted {
            steps: Arc::new(steps),
            calls: Arc::default(),
            cancelled: Arc::default(),
        }
    }

    fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().iter().map(|(t, _)| *t).collect()
    }

    fn attempts(&self) -> Vec<u32> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, a)| a.0)
            .collect()
    }
}

/// Counts a drop that happens before `done` is set.
struct DropGuard(Arc<AtomicU32>, bool);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Service<Req> for Scripted {
    type Response = Res;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Res, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((Instant::now(), Attempt::of(req.extensions())));
            calls.len() - 1
        };
        let step = self.steps.get(n).or(self.steps.last()).cloned().unwrap();
        let guard = DropGuard(self.cancelled.clone(), false);
        Box::pin(async move {
            // Move the whole guard in (a field assignment alone would capture only the field).
            let mut guard = guard;
            let out = match step {
                Step::Reply(res) => Ok(res),
                Step::ReplyAfter(delay, res) => {
                    tokio::time::sleep(delay).await;
                    Ok(res)
                }
                Step::Fail(make) => Err(make()),
            };
            guard.1 = true;
            out
        })
    }
}

/// Three attempts, each a transport failure, as [`exhausted_attempts`] lists them.
const THREE_TRANSPORT_FAILURES: [(u32, ErrorKind); 3] = [
    (1, ErrorKind::Transport),
    (2, ErrorKind::Transport),
    (3, ErrorKind::Transport),
];

/// The number and kind of every attempt listed by a `RetriesExhausted` error.
fn exhausted_attempts(err: &BoxError) -> Vec<(u32, ErrorKind)> {
    err.downcast_ref::<RetriesExhausted>()
        .expect("retries exhausted")
        .attempts()
        .iter()
        .map(|a| (a.attempt, a.kind))
        .collect()
}

fn layer() -> tower_llm_retry::RetryLayerBuilder {
    RetryLayer::builder().seed(1)
}

#[tokio::test(start_paused = true)]
async fn typed_clients_retry_through_clone_replay() {
    #[derive(Clone, Debug)]
    struct ChatRequest {
        prompt: &'static str,
    }
    #[derive(Debug)]
    struct ChatResponse {
        text: String,
        overloaded: bool,
    }
    #[derive(Clone)]
    struct ByFlag;
    impl Classify<ChatResponse> for ByFlag {
        fn classify_response(&self, res: &ChatResponse) -> Classification {
            if res.overloaded {
                Classification::Failure(Failure::new(ErrorKind::Overloaded))
            } else {
                Classification::Success
            }
        }
    }

    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let client = service_fn(move |req: ChatRequest| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                0 => Err::<ChatResponse, BoxError>(Box::new(ClassifiedError::new(
                    ErrorKind::Transport,
                    "reset",
                ))),
                1 => Ok(ChatResponse {
                    text: String::new(),
                    overloaded: true,
                }),
                _ => Ok(ChatResponse {
                    text: req.prompt.to_uppercase(),
                    overloaded: false,
                }),
            }
        }
    });
    let svc = layer()
        .classifier(ByFlag)
        .replay(CloneReplay)
        .max_attempts(3)
        .build()
        .unwrap()
        .layer(client);
    let res = svc.oneshot(ChatRequest { prompt: "hi" }).await.unwrap();
    assert_eq!(res.text, "HI");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn attempts_after_the_first_are_tagged() {
    let upstream = Scripted::new(vec![
        Step::Reply(status(502)),
        Step::Reply(status(502)),
        Step::Reply(status(200)),
    ]);
    let svc = layer().build().unwrap().layer(upstream.clone());
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.attempts(), [1, 2, 3]);
    let log = res.extensions().get::<RetryAttempts>().unwrap();
    assert_eq!(
        log.attempts().iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(log
        .attempts()
        .iter()
        .all(|a| a.status == Some(502) && a.kind == ErrorKind::ServerError));
}

#[tokio::test(start_paused = true)]
async fn without_attempt_extensions_nothing_is_tagged_and_errors_keep_their_records() {
    let replay = HttpReplay::new().attempt_extensions(false);
    assert!(!replay.sets_attempt_extensions());
    // Retried, then answered: no `Attempt` below, no log above.
    let upstream = Scripted::new(vec![
        Step::Reply(status(502)),
        Step::Reply(status(503)),
        Step::Reply(status(200)),
    ]);
    let svc = layer()
        .replay(replay.clone())
        .build()
        .unwrap()
        .layer(upstream.clone());
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.attempts(), [1, 1, 1], "no attempt tagged");
    assert_eq!(res.extensions().len(), 0, "no log on the answer");

    // Retries exhausted on a failed response: it comes back as it is, without a log.
    let upstream = Scripted::new(vec![Step::Reply(status(502))]);
    let svc = layer()
        .max_attempts(3)
        .replay(replay.clone())
        .build()
        .unwrap()
        .layer(upstream.clone());
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(upstream.count(), 3);
    assert!(res.extensions().get::<RetryAttempts>().is_none());

    // Retries exhausted on errors: the error still lists every attempt.
    let upstream = Scripted::new(vec![Step::Fail(|| {
        Box::new(ClassifiedError::new(ErrorKind::Transport, "refused"))
    })]);
    let svc = layer()
        .max_attempts(3)
        .replay(replay)
        .build()
        .unwrap()
        .layer(upstream.clone());
    let err = svc.oneshot(req()).await.unwrap_err();
    assert_eq!(exhausted_attempts(&err), THREE_TRANSPORT_FAILURES);
    assert_eq!(upstream.attempts(), [1, 1, 1]);
}

#[tokio::test(start_paused = true)]
async fn the_first_attempt_is_sent_untouched() {
    let seen = Arc::new(Mutex::new(None));
    let slot = seen.clone();
    let svc = layer().build().unwrap().layer(service_fn(move |req: Req| {
        *slot.lock().unwrap() = Some(req.extensions().len());
        async { Ok::<_, BoxError>(status(200)) }
    }));
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        Some(0),
        "no extension added on the first attempt"
    );
    assert!(res.extensions().get::<RetryAttempts>().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_backoff_that_would_pass_the_deadline_stops_early() {
    let upstream = Scripted::new(vec![Step::Reply(with_retry_after(503, 3))]);
    let svc = layer()
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap()
        .layer(upstream.clone());
    let started = Instant::now();
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(3),
        "stopped at once instead of sleeping past the deadline"
    );
    assert_eq!(upstream.count(), 2);
    let log = res.extensions().get::<RetryAttempts>().unwrap();
    assert_eq!(log.stopped(), Some(StopReason::DeadlineTooClose));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_an_attempt_short() {
    let upstream = Scripted::new(vec![Step::ReplyAfter(
        Duration::from_secs(100),
        status(200),
    )]);
    let svc = layer()
        .deadline(Duration::from_secs(2))
        .build()
        .unwrap()
        .layer(upstream.clone());
    let started = Instant::now();
    let err = svc.oneshot(req()).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    let exhausted = err.downcast_ref::<RetriesExhausted>().unwrap();
    assert_eq!(exhausted.attempts().len(), 1);
    assert_eq!(exhausted.attempts()[0].kind, ErrorKind::Timeout);
    assert_eq!(exhausted.attempts()[0].elapsed, Duration::from_secs(2));
    assert_eq!(
        exhausted.reason(),
        Some("the next attempt would miss the deadline")
    );
    assert_eq!(
        upstream.cancelled.load(Ordering::SeqCst),
        1,
        "the timed-out attempt was dropped"
    );
    assert!(
        err.to_string().contains("attempt timed out after 2.000s"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn local_rejections_pass_through_unchanged() {
    fn open() -> BoxError {
        Box::new(BreakerOpen::new(
            "openai/gpt-4o",
            "5 consecutive failures",
            Duration::from_secs(1),
        ))
    }
    let upstream = Scripted::new(vec![Step::Fail(open)]);
    let svc = layer().build().unwrap().layer(upstream.clone());
    let err = svc.oneshot(req()).await.unwrap_err();
    assert!(
        err.downcast_ref::<BreakerOpen>().is_some(),
        "returned as it is: {err}"
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn local_rejections_can_be_retried_after_their_retry_after() {
    fn open() -> BoxError {
        Box::new(BreakerOpen::new("b", "open", Duration::from_secs(1)))
    }
    let upstream = Scripted::new(vec![Step::Fail(open), Step::Reply(status(200))]);
    let svc = layer()
        .retry_local_rejections(true)
        .build()
        .unwrap()
        .layer(upstream.clone());
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    let times = upstream.times();
    assert_eq!(
        times[1] - times[0],
        Duration::from_secs(1),
        "not before the breaker's probe"
    );
}

#[tokio::test(start_paused = true)]
async fn errors_of_kinds_never_retried_pass_through() {
    fn auth() -> BoxError {
        Box::new(ClassifiedError::new(ErrorKind::Auth, "bad key"))
    }
    let upstream = Scripted::new(vec![Step::Fail(auth)]);
    let svc = layer().build().unwrap().layer(upstream.clone());
    let err = svc.oneshot(req()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<ClassifiedError>().unwrap().kind(),
        ErrorKind::Auth
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_service_that_fails_readiness_ends_the_call() {
    #[derive(Clone)]
    struct BreaksAfterFirst(Arc<AtomicU32>);
    impl Service<Req> for BreaksAfterFirst {
        type Response = Res;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Res, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                Poll::Ready(Ok(()))
            } else {
                Poll::Ready(Err("connection pool closed".into()))
            }
        }
        fn call(&mut self, _: Req) -> Self::Future {
            std::future::ready(Ok(status(503)))
        }
    }
    let svc = layer()
        .build()
        .unwrap()
        .layer(BreaksAfterFirst(Arc::default()));
    let err = svc.oneshot(req()).await.unwrap_err();
    let exhausted = err.downcast_ref::<RetriesExhausted>().unwrap();
    assert_eq!(exhausted.attempts().len(), 1);
    assert_eq!(
        exhausted.reason(),
        Some("the inner service failed to become ready")
    );
    assert_eq!(exhausted.last().to_string(), "connection pool closed");
}

#[tokio::test(start_paused = true)]
async fn the_first_good_answer_wins_and_the_others_are_cancelled() {
    let upstream = Scripted::new(vec![
        Step::ReplyAfter(Duration::from_secs(10), status(200)),
        Step::ReplyAfter(Duration::from_millis(100), status(200)),
    ]);
    let svc = layer()
        .hedging(Hedging::fixed(Duration::from_secs(1)))
        .build()
        .unwrap()
        .layer(upstream.clone());
    let started = Instant::now();
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(started.elapsed(), Duration::from_millis(1_100));
    assert_eq!(upstream.attempts(), [1, 2]);
    assert_eq!(
        upstream.cancelled.load(Ordering::SeqCst),
        1,
        "the slow attempt was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hedge_answer_that_is_not_retried_ends_the_call() {
    let upstream = Scripted::new(vec![
        Step::ReplyAfter(Duration::from_secs(10), status(200)),
        Step::Reply(status(400)),
    ]);
    let svc = layer()
        .hedging(Hedging::fixed(Duration::from_secs(1)))
        .build()
        .unwrap()
        .layer(upstream.clone());
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(upstream.cancelled.load(Ordering::SeqCst), 1);
    let log = res.extensions().get::<RetryAttempts>().unwrap();
    assert_eq!(
        log.stopped(),
        Some(StopReason::NotRetryable(ErrorKind::BadRequest))
    );
    assert_eq!(log.attempts()[0].attempt, 2);
}

#[tokio::test(start_paused = true)]
async fn a_retryable_hedge_failure_waits_for_the_attempt_in_flight() {
    let upstream = Scripted::new(vec![
        Step::ReplyAfter(Duration::from_secs(2), status(200)),
        Step::Reply(status(503)),
    ]);
    let svc = layer()
        .hedging(Hedging::fixed(Duration::from_secs(1)).with_max_hedges(1))
        .build()
        .unwrap()
        .layer(upstream.clone());
    let started = Instant::now();
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(upstream.count(), 2);
    let log = res.extensions().get::<RetryAttempts>().unwrap();
    assert_eq!(log.attempts().len(), 1);
    assert_eq!(
        (log.attempts()[0].attempt, log.attempts()[0].status),
        (2, Some(503))
    );
}

#[tokio::test(start_paused = true)]
async fn percentile_hedging_follows_observed_latency() {
    let mut steps = vec![Step::ReplyAfter(Duration::from_millis(100), status(200)); 30];
    steps.push(Step::ReplyAfter(Duration::from_secs(5), status(200)));
    steps.push(Step::ReplyAfter(Duration::from_millis(100), status(200)));
    let upstream = Scripted::new(steps);
    let svc = layer()
        .hedging(Hedging::percentile(0.9, Duration::from_secs(3)))
        .build()
        .unwrap()
        .layer(upstream.clone());
    for _ in 0..30 {
        svc.clone().oneshot(req()).await.unwrap();
    }
    let started = Instant::now();
    svc.oneshot(req()).await.unwrap();
    let times = upstream.times();
    let hedge_after = times[31] - times[30];
    assert!(
        hedge_after >= Duration::from_millis(100) && hedge_after <= Duration::from_millis(130),
        "hedged after about the p90 of 100 ms, not the initial 3 s: {hedge_after:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn hedges_are_paid_from_the_budget() {
    let upstream = Scripted::new(vec![Step::ReplyAfter(Duration::from_secs(2), status(200))]);
    let broke = RetryBudget::new(Duration::from_secs(10), 0, 0.0).unwrap();
    let svc = layer()
        .hedging(Hedging::fixed(Duration::from_millis(500)).with_max_hedges(3))
        .budget(broke)
        .build()
        .unwrap()
        .layer(upstream.clone());
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.count(), 1, "no budget, no hedge");
}

#[tokio::test(start_paused = true)]
async fn several_hedges_are_spaced_by_the_hedge_delay() {
    let upstream = Scripted::new(vec![
        Step::ReplyAfter(Duration::from_secs(10), status(200)),
        Step::ReplyAfter(Duration::from_secs(10), status(200)),
        Step::ReplyAfter(Duration::from_millis(10), status(200)),
    ]);
    let svc = layer()
        .hedging(Hedging::fixed(Duration::from_millis(500)).with_max_hedges(2))
        .build()
        .unwrap()
        .layer(upstream.clone());
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    let times = upstream.times();
    assert_eq!(times[1] - times[0], Duration::from_millis(500));
    assert_eq!(times[2] - times[1], Duration::from_millis(500));
    assert_eq!(upstream.attempts(), [1, 2, 3]);
    assert_eq!(upstream.cancelled.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn per_target_budgets_keep_one_outage_from_starving_another_target() {
    fn to(target: &Target) -> Req {
        let mut r = req();
        r.extensions_mut().insert(target.clone());
        r
    }
    let down = Target::new("groq", "llama");
    let up = Target::new("openai", "gpt-4o");
    let upstream = Scripted::new(vec![Step::Reply(status(503))]);
    // No ratio, 1 retry/s floor over 10 s: each target may retry 10 times per 10 s.
    let template = RetryBudget::new(Duration::from_secs(10), 1, 0.0).unwrap();
    let svc = layer()
        .no_attempt_timeout()
        // Short backoffs: the whole test stays inside one budget window.
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .budget_per_target(template)
        .build()
        .unwrap()
        .layer(upstream.clone());
    let mut retries = 0;
    for _ in 0..20 {
        let res = svc.clone().oneshot(to(&down)).await.unwrap();
        let log = res.extensions().get::<RetryAttempts>().unwrap();
        retries += log.attempts().len() - 1;
        assert_eq!(log.attempts()[0].target.as_ref(), Some(&down));
    }
    assert_eq!(retries, 10, "the floor of the failing target");
    let res = svc.oneshot(to(&up)).await.unwrap();
    let log = res.extensions().get::<RetryAttempts>().unwrap();
    assert_eq!(
        log.attempts().len(),
        3,
        "the other target still has its own budget"
    );
    assert_eq!(
        log.stopped(),
        Some(StopReason::AttemptsExhausted { max: 3 })
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_cancels_the_attempt_in_flight() {
    let upstream = Scripted::new(vec![Step::ReplyAfter(Duration::from_secs(60), status(200))]);
    let mut svc = layer().build().unwrap().layer(upstream.clone());
    let fut = svc.ready().await.unwrap().call(req());
    let _ = tokio::time::timeout(Duration::from_secs(1), fut)
        .await
        .unwrap_err();
    assert_eq!(upstream.cancelled.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_mid_backoff_sends_nothing_more() {
    let upstream = Scripted::new(vec![Step::Reply(with_retry_after(503, 10))]);
    let mut svc = layer().build().unwrap().layer(upstream.clone());
    let fut = svc.ready().await.unwrap().call(req());
    let _ = tokio::time::timeout(Duration::from_secs(1), fut)
        .await
        .unwrap_err();
    assert_eq!(upstream.count(), 1);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(upstream.count(), 1, "the backoff died with the future");
}

#[tokio::test(start_paused = true)]
async fn a_finished_future_polled_again_errs_instead_of_panicking() {
    let upstream = Scripted::new(vec![Step::Reply(status(200))]);
    let mut svc = layer().build().unwrap().layer(upstream);
    let mut fut = Box::pin(svc.ready().await.unwrap().call(req()));
    assert!(fut.as_mut().await.is_ok());
    let again = std::future::poll_fn(|cx| fut.as_mut().poll(cx)).await;
    assert!(again
        .unwrap_err()
        .to_string()
        .contains("polled after completion"));
}

#[tokio::test(start_paused = true)]
async fn the_final_error_lists_every_attempt() {
    fn reset() -> BoxError {
        Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }
    let upstream = Scripted::new(vec![Step::Fail(reset)]);
    let svc = layer().build().unwrap().layer(upstream.clone());
    let err = svc.oneshot(req()).await.unwrap_err();
    assert_eq!(exhausted_attempts(&err), THREE_TRANSPORT_FAILURES);
    assert_eq!(classify_error(&*err).kind, ErrorKind::Transport);
    let text = err.to_string();
    assert!(
        text.starts_with(
            "gave up after 3 attempt(s) (all 3 attempt(s) used): #1: transport after 0ms"
        ),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn one_attempt_still_gets_a_timeout() {
    let upstream = Scripted::new(vec![Step::ReplyAfter(Duration::from_secs(60), status(200))]);
    let svc = layer()
        .max_attempts(1)
        .attempt_timeout(Duration::from_secs(3))
        .build()
        .unwrap()
        .layer(upstream.clone());
    let started = Instant::now();
    let err = svc.oneshot(req()).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    let exhausted = err.downcast_ref::<RetriesExhausted>().unwrap();
    assert_eq!(exhausted.reason(), Some("all 1 attempt(s) used"));
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_huge_server_delay_under_a_huge_cap_waits_instead_of_overflowing() {
    // Core clamps parsed delays to a day; a custom classifier can still report any delay.
    #[derive(Clone)]
    struct Forever;
    impl Classify<Res> for Forever {
        fn classify_response(&self, res: &Res) -> Classification {
            if res.status().is_success() {
                Classification::Success
            } else {
                Classification::Failure(
                    Failure::new(ErrorKind::Overloaded).with_retry_after(Some(Duration::MAX)),
                )
            }
        }
    }
    let upstream = Scripted::new(vec![Step::Reply(status(503)), Step::Reply(status(200))]);
    let mut svc = layer()
        .classifier(Forever)
        .max_server_delay(Duration::MAX)
        .no_attempt_timeout()
        .build()
        .unwrap()
        .layer(upstream.clone());
    let fut = svc.ready().await.unwrap().call(req());
    let waited = tokio::time::timeout(Duration::from_secs(365 * 24 * 3600), fut).await;
    assert!(waited.is_err(), "still waiting a year later");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn server_delays_are_honoured_to_the_millisecond() {
    let upstream = Scripted::new(vec![
        Step::Reply(
            Response::builder()
                .status(429)
                .header("retry-after-ms", "1234")
                .body(())
                .unwrap(),
        ),
        Step::Reply(status(200)),
    ]);
    let svc = layer().build().unwrap().layer(upstream.clone());
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    let times = upstream.times();
    assert_eq!(times[1] - times[0], Duration::from_millis(1_234));
}
