//! The shared limiter over real Redis (a `redis-server` child on a free port) and real loopback
//! HTTP to the chaos mock upstream: three replicas — three bulkheads, each with its own Redis
//! connection and HTTP client — share one request-rate limit and one token budget; Redis killed
//! mid-run or kept busy fails no admission, and sharing resumes when it is back.
//!
//! Redis decides on its own clock, so these tests run in real time. A minute per scenario is too
//! long for CI: the rate scenario runs the same quota shape scaled to 6 s (60 requests per 6 s,
//! burst 3: the 600/minute, burst 30 of the issue, ten times faster), whose bound is 63 where the
//! minute's is 630; `a_minute_of_600_per_minute` (ignored) runs the full minute.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tower_llm_bulkhead::{
    Bulkhead, BulkheadLayer, BulkheadLayerBuilder, JsonBodyEstimate, RateLimit, TokenLimit,
};
use tower_llm_chaos::{Fault, MockUpstream};
use tower_llm_core::{BoxError, BulkheadFull, LimitKind, ReplayBody};
use tower_llm_redis::limiter::RedisLimiter;
use tower_llm_redis::testing::RedisServer;
use tower_llm_redis::{RedisConfig, SharedState};

type Body = ReplayBody<Full<Bytes>>;
type HttpClient = Client<HttpConnector, Body>;
type Replica = Bulkhead<HttpClient, tower_llm_bulkhead::Global, JsonBodyEstimate>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A chat completion request asking for `max_tokens` (the bulkhead's estimate: body / 4 + that).
fn chat(upstream: &MockUpstream, max_tokens: u32, stream: bool) -> http::Request<Body> {
    let json = format!(
        r#"{{"model":"m","stream":{stream},"max_tokens":{max_tokens},"messages":[{{"role":"user","content":"Say hello."}}]}}"#
    );
    http::Request::post(upstream.completions_url())
        .header("content-type", "application/json")
        .body(Body::from_bytes(Bytes::from(json)))
        .unwrap()
}

/// A connection manager that gives up on a dead server quickly (so reconnection follows a
/// restarted server within a few hundred milliseconds).
async fn connect(server: &RedisServer) -> ConnectionManager {
    let client = redis::Client::open(server.url()).unwrap();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_millis(200))
        .set_number_of_retries(2)
        .set_factor(10)
        .set_max_delay(100);
    ConnectionManager::new_with_config(client, config)
        .await
        .unwrap()
}

/// A replica's limiter. Its timeout is 100 ms rather than the default 20 ms: on a loaded CI
/// machine a loopback round trip may take more than 20 ms, and a decision taken locally by
/// timeout would blur the counts these tests assert (a killed Redis refuses at once anyway).
async fn limiter(server: &RedisServer, prefix: &str) -> RedisLimiter {
    RedisLimiter::builder(connect(server).await)
        .key_prefix(prefix)
        .timeout(Duration::from_millis(100))
        .recheck(Duration::from_millis(100))
        .build()
}

fn builder(rate: RateLimit) -> BulkheadLayerBuilder<tower_llm_bulkhead::Global, JsonBodyEstimate> {
    BulkheadLayer::builder()
        .name("openai/gpt-4o-mini")
        .max_concurrent(64)
        .rate_limit(rate)
        .estimate_tokens(JsonBodyEstimate::new())
}

/// What one replica saw while sending as fast as it was let.
#[derive(Default)]
struct Tally {
    admitted: AtomicUsize,
    rate_limited: AtomicUsize,
    /// Anything else: an admission that failed.
    failed: AtomicUsize,
    /// The slowest answer of the bulkhead (admission and the mock's answer), in microseconds.
    slowest_us: AtomicU64,
}

/// Sends requests through `replica` until `until`, one every `gap` (bodies read to the end).
async fn drive(
    replica: Replica,
    upstream: Arc<MockUpstream>,
    until: Instant,
    gap: Duration,
    tally: Arc<Tally>,
) {
    while Instant::now() < until {
        let start = Instant::now();
        match replica.clone().oneshot(chat(&upstream, 16, false)).await {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap();
                tally.admitted.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => match error.downcast_ref::<BulkheadFull>() {
                Some(full) if full.limit() == LimitKind::Rate => {
                    tally.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    eprintln!("admission failed: {error}");
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
        let took = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        tally.slowest_us.fetch_max(took, Ordering::Relaxed);
        tokio::time::sleep(gap).await;
    }
}

/// Runs `replicas` for `window` from now; the tallies.
async fn run(
    replicas: Vec<Replica>,
    upstream: &Arc<MockUpstream>,
    window: Duration,
    gap: Duration,
) -> Vec<Arc<Tally>> {
    let until = Instant::now() + window;
    let tallies: Vec<_> = replicas
        .iter()
        .map(|_| Arc::new(Tally::default()))
        .collect();
    let tasks: Vec<_> = replicas
        .into_iter()
        .zip(&tallies)
        .map(|(replica, tally)| {
            tokio::spawn(drive(
                replica,
                Arc::clone(upstream),
                until,
                gap,
                Arc::clone(tally),
            ))
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    tallies
}

fn admitted(tallies: &[Arc<Tally>]) -> usize {
    tallies
        .iter()
        .map(|t| t.admitted.load(Ordering::Relaxed))
        .sum()
}

async fn upstream() -> Arc<MockUpstream> {
    Arc::new(
        MockUpstream::builder()
            .default_fault(Fault::Healthy)
            .start()
            .await
            .unwrap(),
    )
}

/// Three replicas with `rate` each, shared through Redis or not; sends for `window`, returns
/// (admitted with sharing, admitted without, requests the upstreams received).
async fn three_replicas(
    server: &RedisServer,
    prefix: &str,
    rate: RateLimit,
    window: Duration,
) -> (usize, usize, usize) {
    let (shared_upstream, local_upstream) = (upstream().await, upstream().await);
    let mut shared = Vec::new();
    let mut local = Vec::new();
    for _ in 0..3 {
        let limiter = limiter(server, prefix).await;
        shared.push(
            builder(rate)
                .shared_limiter(limiter)
                .build()
                .unwrap()
                .layer(client()),
        );
        local.push(builder(rate).build().unwrap().layer(client()));
    }
    let gap = Duration::from_millis(5);
    let (with, without) = tokio::join!(
        run(shared, &shared_upstream, window, gap),
        run(local, &local_upstream, window, gap),
    );
    for tally in with.iter().chain(&without) {
        assert_eq!(
            tally.failed.load(Ordering::Relaxed),
            0,
            "no admission fails"
        );
    }
    assert_eq!(admitted(&with), shared_upstream.attempt_count());
    assert_eq!(admitted(&without), local_upstream.attempt_count());
    (
        admitted(&with),
        admitted(&without),
        shared_upstream.attempt_count(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_rate_limit() {
    let Some(server) = RedisServer::start_or_skip("three_replicas_share_one_rate_limit")
        .await
        .unwrap()
    else {
        return;
    };
    // 600/minute with a burst of 30, ten times faster: 60 per 6 s, burst 3. In 6 s one limiter
    // admits at most 3 + 60 = 63 (the minute's 630): the three replicas together too.
    let rate = RateLimit::new(60, Duration::from_secs(6)).burst(3);
    let (shared, unshared, _) =
        three_replicas(&server, "rate-test:", rate, Duration::from_secs(6)).await;
    eprintln!(
        "60 per 6 s (burst 3), 3 replicas, 6 s: {shared} admitted with sharing, {unshared} without"
    );
    assert!(
        shared <= 63,
        "shared: {shared} admitted, at most 63 allowed"
    );
    assert!(
        shared >= 50,
        "shared: {shared} admitted, the limit should be nearly used"
    );
    assert!(
        unshared > 3 * 50,
        "unshared: {unshared} admitted, each replica its own limit"
    );
}

/// The issue's scenario at full length: 600 requests/minute (burst 30) shared by three replicas
/// over a real minute. `cargo test -p tower-llm-redis --test limiter -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute of real time; the 6 s scaled scenario runs in CI"]
async fn a_minute_of_600_per_minute() {
    let Some(server) = RedisServer::start_or_skip("a_minute_of_600_per_minute")
        .await
        .unwrap()
    else {
        return;
    };
    let rate = RateLimit::per_minute(600).burst(30);
    let (shared, unshared, _) =
        three_replicas(&server, "minute-test:", rate, Duration::from_secs(60)).await;
    eprintln!("600/minute (burst 30), 3 replicas, 60 s: {shared} admitted with sharing, {unshared} without");
    assert!(
        shared <= 630,
        "shared: {shared} admitted, at most 630 allowed"
    );
    assert!(unshared > 1_500, "unshared: {unshared}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_corrections_are_shared_from_json_and_sse_usage() {
    let Some(server) =
        RedisServer::start_or_skip("token_corrections_are_shared_from_json_and_sse_usage")
            .await
            .unwrap()
    else {
        return;
    };
    // The mock answers 8 completion tokens by default; the heavy one 2,500 (in a stream).
    let light = upstream().await;
    let heavy = Arc::new(
        MockUpstream::builder()
            .default_fault(Fault::Healthy)
            .answer_tokens(2_500)
            .start()
            .await
            .unwrap(),
    );
    let budget = TokenLimit::per_minute(3_000);
    let mut replicas = Vec::new();
    let mut limiters = Vec::new();
    for _ in 0..3 {
        let limiter = limiter(&server, "token-test:").await;
        limiters.push(limiter.clone());
        let layer = BulkheadLayer::builder()
            .name("openai/gpt-4o-mini")
            .token_limit(budget, JsonBodyEstimate::new())
            .shared_limiter(limiter)
            .build()
            .unwrap();
        replicas.push(layer.layer(client()));
    }
    let key = limiters[0].token_key("openai/gpt-4o-mini");
    let mut redis = connect(&server).await;
    let used = |redis: &mut ConnectionManager| {
        let mut redis = redis.clone();
        let key = key.clone();
        async move {
            // The budget's GCRA state: microseconds of refill ahead of Redis's clock.
            let tat: Option<f64> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .unwrap();
            let (secs, micros): (u64, u64) =
                redis::cmd("TIME").query_async(&mut redis).await.unwrap();
            let now = (secs * 1_000_000 + micros) as f64;
            // Tokens in use: the state's lead over now, in tokens (60 s per 3,000 tokens).
            tat.map_or(0.0, |tat| ((tat - now) / 20_000.0).max(0.0))
        }
    };

    // Replica 0 sends two calls estimated at about 1,030 tokens each: about 2,060 of 3,000 charged.
    let call = |i: usize, upstream: &MockUpstream, max_tokens: u32, stream: bool| {
        replicas[i]
            .clone()
            .oneshot(chat(upstream, max_tokens, stream))
    };
    let first = call(0, &light, 1_000, false).await.unwrap();
    let second = call(0, &light, 1_000, false).await.unwrap();
    let charged = used(&mut redis).await;
    assert!((2_000.0..2_100.0).contains(&charged), "charged {charged}");
    // Replica 1 is turned away: the budget is spent in Redis, not in its own process.
    let err = call(1, &light, 1_000, false).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BulkheadFull>().unwrap().limit(),
        LimitKind::Tokens
    );

    // The JSON answers report their usage (about 12 tokens each): replica 0 refunds the rest of
    // its estimates to the shared budget as it reads the bodies.
    first.into_body().collect().await.unwrap();
    second.into_body().collect().await.unwrap();
    let refunded = wait_for(|| used(&mut redis), |used| used < 100.0).await;
    assert!(
        refunded < 100.0,
        "after the refunds {refunded} tokens in use"
    );
    // Now replicas 1 and 2 are admitted.
    for i in [1, 2] {
        let response = call(i, &light, 1_000, false).await.unwrap();
        response.into_body().collect().await.unwrap();
    }

    // A stream that uses far more than its estimate (max_tokens 10: about 40 estimated; the SSE
    // usage says 2,500 + the prompt): replica 2 debits the shared budget when it reads the usage
    // event, and replica 0 is turned away (replica 0 alone never used it).
    wait_for(|| used(&mut redis), |used| used < 100.0).await;
    let stream = call(2, &heavy, 10, true).await.unwrap();
    let bytes = stream.into_body().collect().await.unwrap().to_bytes();
    assert!(bytes.windows(6).any(|w| w == b"[DONE]"));
    let debited = wait_for(|| used(&mut redis), |used| used > 2_400.0).await;
    assert!(debited > 2_400.0, "after the debit {debited} tokens in use");
    let err = call(0, &light, 1_000, false).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BulkheadFull>().unwrap().limit(),
        LimitKind::Tokens
    );
    assert!(limiters.iter().all(|l| l.local_admissions() == 0));
}

/// Polls `read` (every 10 ms, up to 2 s) until `done` holds; the last value.
async fn wait_for<F, Fut>(mut read: F, done: impl Fn(f64) -> bool) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let value = read().await;
        if done(value) || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_fails_no_admission_and_sharing_resumes() {
    let Some(server) =
        RedisServer::start_or_skip("redis_killed_mid_run_fails_no_admission_and_sharing_resumes")
            .await
            .unwrap()
    else {
        return;
    };
    let port = server.addr().port();
    let upstream = upstream().await;
    // 20 per second, burst 2: in a second the three replicas share 22; alone each has its own.
    let rate = RateLimit::per_second(20).burst(2);
    let mut replicas = Vec::new();
    let mut limiters = Vec::new();
    for _ in 0..3 {
        let limiter = limiter(&server, "kill-test:").await;
        limiters.push(limiter.clone());
        replicas.push(
            builder(rate)
                .shared_limiter(limiter)
                .build()
                .unwrap()
                .layer(client()),
        );
    }
    let gap = Duration::from_millis(5);
    let second = Duration::from_secs(1);

    // Shared: at most 2 + 20 admitted in the first second.
    let before = run(replicas.clone(), &upstream, second, gap).await;
    assert!(admitted(&before) <= 22, "shared: {}", admitted(&before));
    assert!(limiters.iter().all(RedisLimiter::is_shared));

    // Redis killed: every replica falls back to its own 20/s; no admission fails, none waits
    // long for the dead server.
    server.stop().await;
    let down = run(replicas.clone(), &upstream, second, gap).await;
    let total_down = admitted(&down);
    assert!(
        down.iter().all(|t| t.failed.load(Ordering::Relaxed) == 0),
        "no admission fails"
    );
    assert!(
        total_down > 22,
        "local: {total_down} admitted, each replica its own limit"
    );
    assert!(limiters.iter().all(|l| l.local_admissions() > 0));
    let slowest = down
        .iter()
        .map(|t| t.slowest_us.load(Ordering::Relaxed))
        .max()
        .unwrap();
    assert!(
        slowest < 500_000,
        "an admission took {slowest} µs while Redis was down"
    );

    // Redis back on the same port (empty): the replicas share again.
    let server = RedisServer::start_on(port).await.unwrap();
    let shared_again = Instant::now() + Duration::from_secs(5);
    while !limiters.iter().all(RedisLimiter::is_shared) && Instant::now() < shared_again {
        // Admissions probe Redis after each recheck interval.
        let _ = run(replicas.clone(), &upstream, Duration::from_millis(50), gap).await;
    }
    assert!(
        limiters.iter().all(RedisLimiter::is_shared),
        "sharing resumed"
    );
    let local_before = limiters
        .iter()
        .map(RedisLimiter::local_admissions)
        .sum::<u64>();
    tokio::time::sleep(Duration::from_millis(200)).await; // the bursts refill
    let after = run(replicas.clone(), &upstream, second, gap).await;
    assert!(after.iter().all(|t| t.failed.load(Ordering::Relaxed) == 0));
    assert!(admitted(&after) <= 22, "shared again: {}", admitted(&after));
    assert_eq!(
        limiters
            .iter()
            .map(RedisLimiter::local_admissions)
            .sum::<u64>(),
        local_before,
        "every admission decided in Redis again"
    );
    drop(server);
}

/// A replica whose bulkhead has a shared limiter but no rate or token limit asks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulkhead_without_rate_or_token_limits_makes_no_round_trip() {
    let Some(server) =
        RedisServer::start_or_skip("a_bulkhead_without_rate_or_token_limits_makes_no_round_trip")
            .await
            .unwrap()
    else {
        return;
    };
    let upstream = upstream().await;
    let limiter = limiter(&server, "none-test:").await;
    let mut svc = BulkheadLayer::builder()
        .shared_limiter(limiter.clone())
        .build()
        .unwrap()
        .layer(client());
    for _ in 0..5 {
        let response: Result<_, BoxError> = svc
            .ready()
            .await
            .unwrap()
            .call(chat(&upstream, 16, false))
            .await;
        response.unwrap().into_body().collect().await.unwrap();
    }
    assert_eq!(limiter.round_trips(), 0);
}

/// Built on the process's `SharedState` (the facade's `[shared_state]`): local until it has
/// connected, then shared, and every local admission counted in its health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limiter_on_the_shared_state_shares_once_connected() {
    let Some(server) =
        RedisServer::start_or_skip("a_limiter_on_the_shared_state_shares_once_connected")
            .await
            .unwrap()
    else {
        return;
    };
    let upstream = upstream().await;
    let rate = RateLimit::per_second(10).burst(1);
    let mut replicas = Vec::new();
    let mut states = Vec::new();
    for _ in 0..2 {
        let state = SharedState::connect(
            RedisConfig::new(server.url())
                .key_prefix("state-test:")
                .timeout(Duration::from_millis(100)),
        )
        .unwrap();
        let limiter = RedisLimiter::from_shared_state(&state);
        replicas.push(
            builder(rate)
                .shared_limiter(limiter)
                .build()
                .unwrap()
                .layer(client()),
        );
        states.push(state);
    }
    let connected = Instant::now() + Duration::from_secs(5);
    while states.iter().any(|s| s.connection().is_none()) && Instant::now() < connected {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let locals_before: u64 = states.iter().map(|s| s.health().local_decisions).sum();
    // One burst between the two replicas: the first call is admitted, the second (on the other
    // replica, within the same 100 ms) is not.
    let first = replicas[0]
        .clone()
        .oneshot(chat(&upstream, 16, false))
        .await
        .unwrap();
    first.into_body().collect().await.unwrap();
    let err = replicas[1]
        .clone()
        .oneshot(chat(&upstream, 16, false))
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<BulkheadFull>().unwrap().limit(),
        LimitKind::Rate
    );
    let locals_after: u64 = states.iter().map(|s| s.health().local_decisions).sum();
    assert_eq!(locals_before, locals_after, "both decided in Redis");
}

/// A Redis busy with a long script (a slow Redis): admissions wait at most the limiter's
/// timeout, are decided locally, and sharing resumes once Redis answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_costs_at_most_the_timeout_and_sharing_resumes() {
    let Some(server) =
        RedisServer::start_or_skip("a_slow_redis_costs_at_most_the_timeout_and_sharing_resumes")
            .await
            .unwrap()
    else {
        return;
    };
    let upstream = upstream().await;
    let limiter = RedisLimiter::builder(connect(&server).await)
        .key_prefix("slow-test:")
        .timeout(Duration::from_millis(50))
        .recheck(Duration::from_millis(50))
        .build();
    let replica = builder(RateLimit::per_second(1_000))
        .shared_limiter(limiter.clone())
        .build()
        .unwrap()
        .layer(client());
    let ok = replica
        .clone()
        .oneshot(chat(&upstream, 16, false))
        .await
        .unwrap();
    ok.into_body().collect().await.unwrap();
    assert!(limiter.is_shared());

    // Another client keeps Redis busy with a script that loops (about a second).
    let mut busy = connect(&server).await;
    let script = tokio::spawn(async move {
        let _: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg("local n = 0 for i = 1, 150000000 do n = n + 1 end return n")
            .arg(0)
            .query_async(&mut busy)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let start = Instant::now();
    let answer = replica.clone().oneshot(chat(&upstream, 16, false)).await;
    let took = start.elapsed();
    answer.unwrap().into_body().collect().await.unwrap();
    assert!(
        !script.is_finished(),
        "Redis was still busy when the call was answered"
    );
    // Decided locally after the 50 ms timeout (plus the mock's answer), not after the script.
    assert_eq!(limiter.local_admissions(), 1);
    assert!(!limiter.is_shared());
    assert!(took < Duration::from_millis(400), "took {took:?}");
    script.await.unwrap();

    // Redis answers again: the next probe makes the limiter shared.
    let shared_again = Instant::now() + Duration::from_secs(5);
    while !limiter.is_shared() && Instant::now() < shared_again {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let answer = replica.clone().oneshot(chat(&upstream, 16, false)).await;
        answer.unwrap().into_body().collect().await.unwrap();
    }
    assert!(limiter.is_shared(), "sharing resumed");
}

/// `quota_scale(3)`: each replica's own limit is a third of the shared quota (its share while
/// Redis is down); Redis applies the whole quota to all of them together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaled_quota_shares_three_times_the_local_limit() {
    let Some(server) =
        RedisServer::start_or_skip("a_scaled_quota_shares_three_times_the_local_limit")
            .await
            .unwrap()
    else {
        return;
    };
    let upstream = upstream().await;
    // Locally 1 per 10 s with a burst of 1; shared: 3 per 10 s with a burst of 3.
    let rate = RateLimit::new(1, Duration::from_secs(10)).burst(1);
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let limiter = RedisLimiter::builder(connect(&server).await)
            .key_prefix("scale-test:")
            .timeout(Duration::from_millis(100))
            .quota_scale(3)
            .build();
        replicas.push(
            builder(rate)
                .shared_limiter(limiter)
                .build()
                .unwrap()
                .layer(client()),
        );
    }
    let mut admitted = 0;
    for i in 0..6 {
        match replicas[i % 2]
            .clone()
            .oneshot(chat(&upstream, 16, false))
            .await
        {
            Ok(response) => {
                response.into_body().collect().await.unwrap();
                admitted += 1;
            }
            Err(err) => {
                assert_eq!(
                    err.downcast_ref::<BulkheadFull>().unwrap().limit(),
                    LimitKind::Rate
                )
            }
        }
    }
    assert_eq!(admitted, 3, "the shared burst of 3, across both replicas");
}
