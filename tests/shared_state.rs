//! Three replicas (three facade stacks, each with its own Redis connection) share cooldowns and
//! breaker state through one real `redis-server`, in front of chaos mock upstreams over
//! loopback: a rate limit seen by one benches the target on all and one probe follows; a
//! breaker opened on one is open on all within 100 ms; Redis killed mid-run fails no request,
//! and sharing resumes when it is back.
//!
//! The replicas wait 100 ms for Redis (`timeout_ms`, 20 ms by default) so that a loaded CI
//! machine does not turn a slow answer into a local decision (two probes) now and then.
//!
//! Redis pub/sub and TTLs run in real time: these tests use the real clock, each scenario a
//! few seconds. Skipped (with a message) when `redis-server` is not on the PATH, unless
//! `TOWER_LLM_REQUIRE_REDIS=1`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::{sleep, Instant};
use tower::ServiceExt;
use tower_llm::config::StackConfig;
use tower_llm::stack::{Stack, StackBuilder};
use tower_llm_breaker::State;
use tower_llm_chaos::{Fault, FaultProfile, MockUpstream};
use tower_llm_redis::testing::RedisServer;
use tower_llm_redis::SharedStateStatus;

type Replica = Stack<Full<Bytes>, tower_llm::client::UpstreamBody>;

const PRIMARY: &str = "primary/m";

fn replicas(
    redis: &str,
    prefix: &str,
    primary: &MockUpstream,
    secondary: &MockUpstream,
    extra: &str,
) -> Vec<Replica> {
    let toml = format!(
        r#"
[[providers]]
name = "primary"
base_url = "{primary}"

[[providers]]
name = "secondary"
base_url = "{secondary}"

[[routes]]
match = "*"
targets = [{{ provider = "primary", model = "m" }}, {{ provider = "secondary", model = "m" }}]

[shared_state]
redis_url = "{redis}"
key_prefix = "{prefix}"
timeout_ms = 100
{extra}
"#,
        primary = primary.base_url(),
        secondary = secondary.base_url(),
    );
    let config = StackConfig::from_toml_str(&toml).unwrap();
    (0..3)
        .map(|_| {
            StackBuilder::new(&config)
                .build_http::<Full<Bytes>>()
                .unwrap()
        })
        .collect()
}

/// One chat request; the status and the target that answered.
async fn call(stack: &Replica) -> (u16, String) {
    let req = http::Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let res = stack.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let target = res
        .headers()
        .get("x-llm-target")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    res.into_body().collect().await.unwrap();
    (status, target)
}

async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

async fn all_connected(stacks: &[Replica], within: Duration) {
    until("every replica connected to Redis", within, || {
        stacks
            .iter()
            .all(|s| s.shared_state().unwrap().status() == SharedStateStatus::Connected)
    })
    .await;
}

fn available(stack: &Replica, name: &str) -> bool {
    stack
        .health()
        .targets
        .iter()
        .any(|t| t.name == name && t.available)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_seen_by_one_replica_benches_the_target_on_all_and_one_probes_after() {
    let Some(redis) = RedisServer::start_or_skip("shared_state rate limit")
        .await
        .unwrap()
    else {
        return;
    };
    let primary = MockUpstream::start(FaultProfile::parse("status:429:retry-after=5").unwrap())
        .await
        .unwrap();
    let secondary = MockUpstream::start(FaultProfile::parse("healthy").unwrap())
        .await
        .unwrap();
    let stacks = replicas(&redis.url(), "rl:", &primary, &secondary, "");
    all_connected(&stacks, Duration::from_secs(5)).await;

    // Replica 0 meets the 429 and fails over.
    assert_eq!(call(&stacks[0]).await, (200, "secondary/m".to_owned()));
    let benched_at = Instant::now();
    assert_eq!(primary.attempt_count(), 1);
    let took = until(
        "the bench reaches replicas 1 and 2",
        Duration::from_millis(100),
        || !available(&stacks[1], PRIMARY) && !available(&stacks[2], PRIMARY),
    )
    .await;
    eprintln!("bench shared in {took:?}");

    // During the 5 s nobody calls the primary.
    while benched_at.elapsed() < Duration::from_millis(4_800) {
        for stack in &stacks {
            assert_eq!(call(stack).await, (200, "secondary/m".to_owned()));
        }
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        primary.attempt_count(),
        1,
        "a replica called a benched target"
    );

    // After it: exactly one probe among the three, whose failure (a new 1 s rate limit)
    // benches the target on all again.
    primary
        .handle()
        .set_default_fault(Fault::parse("status:429:retry-after=1").unwrap());
    while benched_at.elapsed() < Duration::from_millis(5_700) {
        for stack in &stacks {
            assert_eq!(call(stack).await.0, 200);
        }
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(primary.attempt_count(), 2, "one probe after the cooldown");

    // The primary recovers: one probe again, and its success puts it back in service on all.
    primary.handle().set_default_fault(Fault::Healthy);
    let probe_due = Instant::now() + Duration::from_millis(1_100);
    while Instant::now() < probe_due {
        for stack in &stacks {
            assert_eq!(call(stack).await.0, 200);
        }
        sleep(Duration::from_millis(10)).await;
    }
    until(
        "every replica back on the primary",
        Duration::from_secs(2),
        || stacks.iter().all(|s| available(s, PRIMARY)),
    )
    .await;
    for stack in &stacks {
        assert_eq!(call(stack).await, (200, PRIMARY.to_owned()));
    }
    redis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opened_on_one_replica_is_open_on_all_within_100_ms() {
    let Some(redis) = RedisServer::start_or_skip("shared_state breaker")
        .await
        .unwrap()
    else {
        return;
    };
    let primary = MockUpstream::start(FaultProfile::parse("status:500").unwrap())
        .await
        .unwrap();
    let secondary = MockUpstream::start(FaultProfile::parse("healthy").unwrap())
        .await
        .unwrap();
    let extra = "[breaker]\nconsecutive_failures = 1\nopen_ms = 3000\n[retry]\nenabled = false\n";
    let stacks = replicas(&redis.url(), "br:", &primary, &secondary, extra);
    all_connected(&stacks, Duration::from_secs(5)).await;
    let breakers: Vec<_> = stacks.iter().map(|s| s.breaker(PRIMARY).unwrap()).collect();

    assert_eq!(call(&stacks[0]).await, (200, "secondary/m".to_owned()));
    assert_eq!(breakers[0].state(), State::Open);
    let took = until(
        "the open state reaches replicas 1 and 2",
        Duration::from_millis(100),
        || breakers[1].state() == State::Open && breakers[2].state() == State::Open,
    )
    .await;
    eprintln!("breaker state shared in {took:?}");
    // The same deadline (to the ms of the wire format), not a fresh open period.
    let left = |i: usize| {
        breakers[i]
            .snapshot()
            .retry_after_ms
            .expect("an open breaker has a deadline")
    };
    assert!(
        left(1).abs_diff(left(0)) <= 150,
        "{} vs {}",
        left(1),
        left(0)
    );
    // Replicas 1 and 2 never called the failing primary.
    assert_eq!(primary.attempt_count(), 1);
    redis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_fails_no_request_and_sharing_resumes_when_it_is_back() {
    let Some(redis) = RedisServer::start_or_skip("shared_state redis outage")
        .await
        .unwrap()
    else {
        return;
    };
    let port = redis.addr().port();
    let primary = MockUpstream::start(FaultProfile::parse("healthy").unwrap())
        .await
        .unwrap();
    let secondary = MockUpstream::start(FaultProfile::parse("healthy").unwrap())
        .await
        .unwrap();
    let stacks = replicas(&redis.url(), "down:", &primary, &secondary, "");
    all_connected(&stacks, Duration::from_secs(5)).await;
    let mut served = 0;
    for stack in &stacks {
        assert_eq!(call(stack).await, (200, PRIMARY.to_owned()));
        served += 1;
    }

    // Redis dies while requests flow: every one is answered, and the replicas say so.
    redis.stop().await;
    let down_since = Instant::now();
    while down_since.elapsed() < Duration::from_millis(600) {
        for stack in &stacks {
            let (status, _) = call(stack).await;
            assert_eq!(status, 200, "a request failed while Redis was down");
            served += 1;
        }
    }
    until(
        "every replica reports Redis down",
        Duration::from_secs(3),
        || {
            stacks
                .iter()
                .all(|s| s.shared_state().unwrap().status() != SharedStateStatus::Connected)
        },
    )
    .await;
    // Decisions are local: a rate limit benches the target on replica 0 only, and probes
    // are decided locally (no lease to wait for).
    primary
        .handle()
        .set_default_fault(Fault::parse("status:429:retry-after=4").unwrap());
    assert_eq!(call(&stacks[0]).await, (200, "secondary/m".to_owned()));
    assert!(!available(&stacks[0], PRIMARY));
    assert!(available(&stacks[1], PRIMARY));
    primary.handle().set_default_fault(Fault::Healthy);
    for stack in &stacks[1..] {
        assert_eq!(call(stack).await, (200, PRIMARY.to_owned()));
        served += 1;
    }
    let health = stacks[0].shared_state().unwrap().health();
    assert_ne!(health.status, SharedStateStatus::Connected);

    // Redis is back (empty): the replicas reconnect, replica 0 republishes its bench, and the
    // others apply it.
    let _redis = RedisServer::start_on(port).await.unwrap();
    all_connected(&stacks, Duration::from_secs(5)).await;
    until(
        "the bench republished reaches replicas 1 and 2",
        Duration::from_secs(1),
        || !available(&stacks[1], PRIMARY) && !available(&stacks[2], PRIMARY),
    )
    .await;
    // And new transitions are shared again.
    let breakers: Vec<_> = stacks.iter().map(|s| s.breaker(PRIMARY).unwrap()).collect();
    breakers[2].trip();
    until(
        "a breaker tripped after the outage is open on all",
        Duration::from_millis(100),
        || breakers.iter().all(|b| b.state() == State::Open),
    )
    .await;
    for stack in &stacks {
        assert_eq!(call(stack).await, (200, "secondary/m".to_owned()));
        served += 1;
    }
    eprintln!("{served} requests answered through the outage");
}
