//! The retry layer against the chaos mock upstream over real loopback HTTP (hyper-util's legacy
//! client, core's `InspectErrorBodyLayer` directly around it), with a paused clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_llm_chaos::{hold_auto_advance, Fault, MockUpstream};
use tower_llm_core::{
    classify_error, BoxError, ErrorKind, InspectErrorBodyLayer, NotReplayable, ReplayBody,
    RetriesExhausted,
};
use tower_llm_retry::{
    Hedging, HttpReplay, Retry, RetryAttempts, RetryBudget, RetryLayer, RetryLayerBuilder,
    StopReason,
};

type Res = Response<ReplayBody<Incoming>>;

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn builder() -> RetryLayerBuilder {
    RetryLayer::builder()
        .seed(42)
        .replay(HttpReplay::new().with_retry_count_header(HeaderName::from_static("x-retry-count")))
}

/// Counts responses reaching the retry layer (the retry layer has classified a response and
/// scheduled its next step in the same poll in which this count moves).
#[derive(Clone)]
struct Seen(Arc<watch::Sender<usize>>);

impl Seen {
    fn new() -> Self {
        Seen(Arc::new(watch::channel(0).0))
    }

    fn bump(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    async fn wait_for(&self, n: usize) {
        let mut rx = self.0.subscribe();
        rx.wait_for(|seen| *seen >= n).await.unwrap();
    }
}

fn stack(
    layer: RetryLayer,
    seen: Seen,
) -> Retry<impl Service<Request<Full<Bytes>>, Response = Res, Error = BoxError, Future: Send> + Clone>
{
    let inner = ServiceBuilder::new()
        .map_result(move |r: Result<Res, BoxError>| {
            seen.bump();
            r
        })
        .layer(InspectErrorBodyLayer::new())
        .service(client());
    tower::Layer::layer(&layer, inner)
}

fn chat(upstream: &MockUpstream, model: &str, id: usize) -> Request<Full<Bytes>> {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    Request::post(upstream.completions_url())
        .header("content-type", "application/json")
        .header("x-request-id", id.to_string())
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn log(res: &Res) -> &RetryAttempts {
    res.extensions()
        .get::<RetryAttempts>()
        .expect("attempt log on the response")
}

/// Let real time pass (while the paused clock stands still) so that anything in flight on
/// loopback would have arrived.
async fn settle() {
    let _hold = hold_auto_advance();
    tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(100)))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn rate_limit_with_retry_after_is_retried_after_the_delay_and_not_before() {
    let upstream = MockUpstream::builder()
        .route("gpt-limited", Fault::status(429).retry_after_secs(2))
        .start()
        .await
        .unwrap();
    let seen = Seen::new();
    let svc = stack(builder().build().unwrap(), seen.clone());

    let hold = hold_auto_advance();
    let started = Instant::now();
    let call = tokio::spawn(svc.oneshot(chat(&upstream, "gpt-limited", 1)));
    seen.wait_for(1).await; // the 429 reached the retry layer, which is now backing off
    upstream.route_model("gpt-limited", Fault::Healthy);
    assert_eq!(upstream.attempt_count(), 1);

    tokio::time::advance(Duration::from_millis(1_900)).await;
    settle().await;
    assert_eq!(
        upstream.attempt_count(),
        1,
        "no retry before the server's 2 s"
    );

    tokio::time::advance(Duration::from_millis(100)).await;
    upstream.wait_for_attempts(2).await;
    drop(hold);
    let res = call.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert!(started.elapsed() >= Duration::from_secs(2));

    let attempts = upstream.attempts();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1].at - attempts[0].at, Duration::from_secs(2));
    assert_eq!(attempts[0].headers["x-retry-count"], "0");
    assert_eq!(attempts[1].headers["x-retry-count"], "1");
    assert_eq!(
        attempts[0].body, attempts[1].body,
        "the same body is replayed"
    );

    let log = log(&res);
    assert_eq!(log.stopped(), None);
    assert_eq!(log.attempts().len(), 1);
    assert_eq!(log.attempts()[0].kind, ErrorKind::RateLimited);
    assert_eq!(log.attempts()[0].status, Some(429));
    assert_eq!(log.attempts()[0].retry_after, Some(Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn rate_limit_without_delay_backs_off_with_jitter() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::status(429))
        .start()
        .await
        .unwrap();
    let layer = builder().max_attempts(8).build().unwrap();
    let svc = stack(layer, Seen::new());

    let calls: Vec<_> = (0..4)
        .map(|id| tokio::spawn(svc.clone().oneshot(chat(&upstream, "gpt-4o", id))))
        .collect();
    for call in calls {
        let res = call.await.unwrap().unwrap();
        assert_eq!(res.status(), 429, "the last 429 is returned as it is");
        assert_eq!(
            log(&res).stopped(),
            Some(StopReason::AttemptsExhausted { max: 8 })
        );
        assert_eq!(log(&res).attempts().len(), 8);
    }

    let mut by_request: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for a in upstream.attempts() {
        let id = a.headers["x-request-id"].to_str().unwrap().to_owned();
        by_request.entry(id).or_default().push(a.at);
    }
    assert_eq!(by_request.len(), 4);
    let mut gaps = Vec::new();
    for times in by_request.values() {
        assert_eq!(times.len(), 8);
        for w in times.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap >= Duration::from_millis(250),
                "backoff below the base: {gap:?}"
            );
            assert!(
                gap <= Duration::from_secs(8),
                "backoff above the cap: {gap:?}"
            );
            gaps.push(gap);
        }
        // Never more than a few attempts in any one second.
        for (i, start) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|t| **t - *start < Duration::from_secs(1))
                .count();
            assert!(in_window <= 4, "{in_window} attempts within one second");
        }
    }
    gaps.sort();
    gaps.dedup();
    assert!(
        gaps.len() > 20,
        "jittered delays differ: {} distinct of 28",
        gaps.len()
    );
}

#[tokio::test(start_paused = true)]
async fn server_error_once_then_healthy_succeeds_on_the_same_target() {
    let upstream = MockUpstream::builder()
        .route(
            "gpt-flaky",
            Fault::flapping(Duration::from_millis(100), Fault::status(500)),
        )
        .start()
        .await
        .unwrap();
    let svc = stack(builder().build().unwrap(), Seen::new());
    let res = svc.oneshot(chat(&upstream, "gpt-flaky", 1)).await.unwrap();
    assert_eq!(res.status(), 200);
    let attempts = upstream.attempts();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].status, Some(500));
    assert_eq!(attempts[1].status, Some(200));
    assert!(attempts.iter().all(|a| a.model == "gpt-flaky"));
    assert_eq!(log(&res).attempts()[0].kind, ErrorKind::ServerError);
}

#[tokio::test(start_paused = true)]
async fn unauthorized_is_one_attempt() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::status(401))
        .start()
        .await
        .unwrap();
    let svc = stack(builder().build().unwrap(), Seen::new());
    let res = svc.oneshot(chat(&upstream, "gpt-4o", 1)).await.unwrap();
    assert_eq!(res.status(), 401);
    settle().await;
    assert_eq!(upstream.attempt_count(), 1);
    assert_eq!(
        log(&res).stopped(),
        Some(StopReason::NotRetryable(ErrorKind::Auth))
    );
}

#[tokio::test(start_paused = true)]
async fn context_length_is_one_attempt() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::ContextLengthExceeded)
        .start()
        .await
        .unwrap();
    let svc = stack(builder().build().unwrap(), Seen::new());
    let res = svc.oneshot(chat(&upstream, "gpt-4o", 1)).await.unwrap();
    assert_eq!(res.status(), 400);
    settle().await;
    assert_eq!(upstream.attempt_count(), 1);
    let log = log(&res);
    assert_eq!(
        log.attempts()[0].kind,
        ErrorKind::ContextLength,
        "the body's code was read"
    );
    assert_eq!(
        log.stopped(),
        Some(StopReason::NotRetryable(ErrorKind::ContextLength))
    );
}

#[tokio::test(start_paused = true)]
async fn reset_before_headers_is_retried() {
    let upstream = MockUpstream::builder()
        .route(
            "gpt-reset",
            Fault::flapping(Duration::from_millis(100), Fault::ResetBeforeHeaders),
        )
        .route("gpt-dead", Fault::ResetBeforeHeaders)
        .start()
        .await
        .unwrap();
    let svc = stack(builder().build().unwrap(), Seen::new());
    let res = svc
        .clone()
        .oneshot(chat(&upstream, "gpt-reset", 1))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.attempt_count(), 2);
    let record = &log(&res).attempts()[0];
    assert_eq!(record.kind, ErrorKind::Transport);
    assert_eq!(record.status, None);

    // Always reset: every attempt is used and the error says so.
    upstream.clear_attempts();
    let err = svc
        .oneshot(chat(&upstream, "gpt-dead", 2))
        .await
        .unwrap_err();
    assert_eq!(upstream.attempt_count(), 3);
    let exhausted = err
        .downcast_ref::<RetriesExhausted>()
        .expect("RetriesExhausted");
    assert_eq!(exhausted.attempts().len(), 3);
    assert!(exhausted
        .attempts()
        .iter()
        .all(|a| a.kind == ErrorKind::Transport));
    assert_eq!(
        exhausted.reason(),
        Some(
            StopReason::AttemptsExhausted { max: 3 }
                .to_string()
                .as_str()
        )
    );
    assert_eq!(classify_error(&*err).kind, ErrorKind::Transport);
    assert!(err
        .to_string()
        .starts_with("gave up after 3 attempt(s) (all 3 attempt(s) used): #1: transport"));
}

#[tokio::test(start_paused = true)]
async fn hanging_target_costs_one_timeout_and_at_most_one_retry() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::Hang)
        .start()
        .await
        .unwrap();
    let layer = builder()
        .max_attempts(5)
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = stack(layer, Seen::new());
    let started = Instant::now();
    let err = svc.oneshot(chat(&upstream, "gpt-4o", 1)).await.unwrap_err();
    let elapsed = started.elapsed();
    settle().await;
    assert_eq!(
        upstream.attempt_count(),
        2,
        "one retry after the timeout, no more"
    );
    let exhausted = err
        .downcast_ref::<RetriesExhausted>()
        .expect("RetriesExhausted");
    assert_eq!(exhausted.attempts().len(), 2);
    assert!(exhausted
        .attempts()
        .iter()
        .all(|a| a.kind == ErrorKind::Timeout));
    assert!(exhausted
        .attempts()
        .iter()
        .all(|a| a.elapsed == Duration::from_secs(5)));
    assert_eq!(
        exhausted.reason(),
        Some(StopReason::TimeoutLimit { max: 1 }.to_string().as_str())
    );
    // Two attempt timeouts plus one decorrelated-jitter backoff (250 ms to 750 ms).
    assert!(
        elapsed >= Duration::from_millis(10_250) && elapsed <= Duration::from_millis(10_750),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn total_outage_under_load_stays_within_the_budget() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::status(503))
        .start()
        .await
        .unwrap();
    // The default budget: 20% of first attempts + 5/s, over 10 s.
    let layer = builder().build().unwrap();
    let svc = stack(layer, Seen::new());

    // 1000 requests at 100 per second for 10 s.
    const REQUESTS: usize = 1_000;
    let started = Instant::now();
    let calls: Vec<_> = (0..REQUESTS)
        .map(|id| {
            let svc = svc.clone();
            let req = chat(&upstream, "gpt-4o", id);
            tokio::spawn(async move {
                tokio::time::sleep_until(started + Duration::from_millis(10 * id as u64)).await;
                svc.oneshot(req).await
            })
        })
        .collect();
    for call in calls {
        let res = call.await.unwrap().unwrap();
        assert_eq!(res.status(), 503);
    }

    let mut per_request: BTreeMap<String, usize> = BTreeMap::new();
    for a in upstream.attempts() {
        *per_request
            .entry(a.headers["x-request-id"].to_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_request.len(), REQUESTS);
    assert!(per_request.values().all(|n| (1..=3).contains(n)));
    let total: usize = per_request.values().sum();
    let elapsed = started.elapsed().as_secs_f64();
    let ratio = total as f64 / REQUESTS as f64;
    eprintln!("total outage: {total} upstream calls for {REQUESTS} requests ({ratio:.3} per request) in {elapsed:.1}s");
    // Retries: at most 20% of the first attempts, plus the 5/s floor for the length of the run
    // (a withdrawal is forgotten after 9 to 10 s: the budget's ten 1 s slots).
    let floor = 5.0 * elapsed.ceil() * 10.0 / 9.0;
    let bound = REQUESTS as f64 * 1.2 + floor;
    assert!(
        total as f64 <= bound,
        "{total} upstream calls for {REQUESTS} requests (bound {bound:.0})"
    );
    assert!(
        ratio < 1.3,
        "about 1.2 upstream calls per request, not 3: {ratio:.3}"
    );
    assert!(total > REQUESTS, "the budget still allows some retries");
}

#[tokio::test(start_paused = true)]
async fn without_a_budget_an_outage_triples_the_traffic() {
    // The contrast to the test above: this is what the budget prevents.
    let upstream = MockUpstream::builder()
        .default_fault(Fault::status(503))
        .start()
        .await
        .unwrap();
    let svc = stack(builder().no_budget().build().unwrap(), Seen::new());
    let calls: Vec<_> = (0..50)
        .map(|id| tokio::spawn(svc.clone().oneshot(chat(&upstream, "gpt-4o", id))))
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(upstream.attempt_count(), 150);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_mid_backoff_sends_nothing_more() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::status(503).retry_after_secs(5))
        .start()
        .await
        .unwrap();
    let seen = Seen::new();
    let svc = stack(builder().build().unwrap(), seen.clone());
    let call = tokio::spawn(svc.oneshot(chat(&upstream, "gpt-4o", 1)));
    seen.wait_for(1).await; // backing off for 5 s now
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle().await;
    assert_eq!(upstream.attempt_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_mid_attempt_closes_the_attempt() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::Hang)
        .start()
        .await
        .unwrap();
    let svc = stack(builder().build().unwrap(), Seen::new());
    let call = tokio::spawn(svc.oneshot(chat(&upstream, "gpt-4o", 1)));
    upstream.wait_for_attempts(1).await;
    call.abort();
    let _ = call.await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    settle().await;
    assert_eq!(
        upstream.attempt_count(),
        1,
        "no attempt after the caller left"
    );
}

#[tokio::test(start_paused = true)]
async fn server_delay_above_the_cap_returns_the_response_for_a_fallback() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::status(429).retry_after_secs(120))
        .start()
        .await
        .unwrap();
    let svc = stack(builder().build().unwrap(), Seen::new());
    let started = Instant::now();
    let res = svc.oneshot(chat(&upstream, "gpt-4o", 1)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "no waiting");
    assert_eq!(res.status(), 429);
    assert_eq!(
        res.headers()["retry-after"],
        "120",
        "the delay stays attached"
    );
    assert_eq!(upstream.attempt_count(), 1);
    assert_eq!(
        log(&res).stopped(),
        Some(StopReason::ServerDelayTooLong {
            requested: Duration::from_secs(120),
            cap: Duration::from_secs(60)
        })
    );
}

#[tokio::test(start_paused = true)]
async fn body_over_the_replay_limit_is_sent_once() {
    use http_body_util::StreamBody;
    use tower_llm_core::BufferRequestBodyLayer;

    type Streamed = StreamBody<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<http_body::Frame<Bytes>, std::io::Error>>,
        >,
    >;

    let upstream = MockUpstream::builder()
        .default_fault(Fault::status(500))
        .start()
        .await
        .unwrap();
    let client: Client<HttpConnector, ReplayBody<Streamed>> =
        Client::builder(TokioExecutor::new()).build_http();
    let svc = ServiceBuilder::new()
        .layer(BufferRequestBodyLayer::new(16))
        .layer(builder().build().unwrap())
        .layer(InspectErrorBodyLayer::new())
        .service(client);
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"a long prompt"}]}"#;
    let frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = body
        .chunks(8)
        .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let req = Request::post(upstream.completions_url())
        .header("content-type", "application/json")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let res: Res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 500);
    settle().await;
    assert_eq!(upstream.attempt_count(), 1);
    assert_eq!(upstream.attempts()[0].body, &body[..], "sent whole, once");
    assert_eq!(
        log(&res).stopped(),
        Some(StopReason::NotReplayable(NotReplayable::OverLimit {
            limit: 16
        }))
    );
}

#[tokio::test(start_paused = true)]
async fn a_hedge_overtakes_a_slow_attempt() {
    // The first attempt lands in a 10 s stall; the hedge, 1.5 s later, is answered at once.
    let upstream = MockUpstream::builder()
        .default_fault(Fault::flapping(
            Duration::from_secs(1),
            Fault::Latency(Duration::from_secs(10)),
        ))
        .start()
        .await
        .unwrap();
    let layer = builder()
        .hedging(Hedging::fixed(Duration::from_millis(1_500)))
        .build()
        .unwrap();
    let budget = layer.handle().budget().unwrap();
    let before = budget.balance();
    let svc = stack(layer, Seen::new());

    let hold = hold_auto_advance();
    let started = Instant::now();
    let call = tokio::spawn(svc.oneshot(chat(&upstream, "gpt-4o", 1)));
    upstream.wait_for_attempts(1).await;
    tokio::time::advance(Duration::from_millis(1_499)).await;
    settle().await;
    assert_eq!(
        upstream.attempt_count(),
        1,
        "no hedge before the hedge delay"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let res = call.await.unwrap().unwrap();
    drop(hold);
    assert_eq!(res.status(), 200);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(1_500),
        "answered by the hedge"
    );
    let attempts = upstream.attempts();
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts[1].at - attempts[0].at,
        Duration::from_millis(1_500)
    );
    assert_eq!(attempts[1].headers["x-retry-count"], "1");
    assert!(
        res.extensions().get::<RetryAttempts>().is_none(),
        "no attempt failed"
    );
    // One deposit (0.2 retries) and one hedge withdrawn.
    let after = budget.balance();
    assert!(
        (after - (before + 0.2 - 1.0)).abs() < 1e-6,
        "{before} -> {after}"
    );
    // The slow attempt was dropped: nothing else reaches the upstream.
    tokio::time::sleep(Duration::from_secs(30)).await;
    settle().await;
    assert_eq!(upstream.attempt_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_budget() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::status(503))
        .start()
        .await
        .unwrap();
    // No floor, 50%: two first attempts pay for one retry, whichever clone makes them.
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
    let layer = builder().budget(budget.clone()).build().unwrap();
    let a = stack(layer.clone(), Seen::new());
    let b = stack(layer, Seen::new());
    let first = a.oneshot(chat(&upstream, "gpt-4o", 1)).await.unwrap();
    assert_eq!(log(&first).stopped(), Some(StopReason::BudgetExhausted));
    let second = b.oneshot(chat(&upstream, "gpt-4o", 2)).await.unwrap();
    assert_eq!(
        log(&second).attempts().len(),
        2,
        "the second call's deposit paid for one retry"
    );
    assert_eq!(log(&second).stopped(), Some(StopReason::BudgetExhausted));
    assert_eq!(upstream.attempt_count(), 3);
}
