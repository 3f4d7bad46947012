//! `[bulkhead] requests_per_minute` with `[shared_state]`: three replicas (three facade stacks,
//! each with its own Redis connection) share one request-rate limit through a real
//! `redis-server`, in front of a chaos mock upstream over loopback; three replicas without
//! `[shared_state]` each spend the limit on their own.
//!
//! Skipped (with a message) when `redis-server` is not on the PATH, unless
//! `TOWER_LLM_REQUIRE_REDIS=1`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::{sleep, Instant};
use tower::ServiceExt;
use tower_llm::config::StackConfig;
use tower_llm::stack::{Stack, StackBuilder};
use tower_llm_chaos::{Fault, MockUpstream};
use tower_llm_core::{classify_error, ErrorKind};
use tower_llm_redis::testing::RedisServer;
use tower_llm_redis::SharedStateStatus;

type Replica = Stack<Full<Bytes>, tower_llm::client::UpstreamBody>;

/// Three stacks limited to 30 requests a minute each (the burst is the whole minute's quota);
/// `shared_state`: the `[shared_state]` section, or nothing.
fn replicas(upstream: &MockUpstream, shared_state: &str) -> Vec<Replica> {
    let toml = format!(
        r#"
[[providers]]
name = "primary"
base_url = "{upstream}"

[[routes]]
match = "*"
targets = [{{ provider = "primary", model = "m" }}]

[retry]
enabled = false

[bulkhead]
requests_per_minute = 30

{shared_state}
"#,
        upstream = upstream.base_url(),
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

/// One chat request; its status, or 429 when the stack turned it away for the rate limit (any
/// other error fails the test).
async fn call(stack: &Replica) -> u16 {
    let req = http::Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    match stack.clone().oneshot(req).await {
        Ok(res) => {
            let status = res.status().as_u16();
            res.into_body().collect().await.unwrap();
            status
        }
        Err(err) => {
            assert_eq!(
                classify_error(&*err).kind,
                ErrorKind::RateLimited,
                "only the rate limit turns calls away: {err}"
            );
            429
        }
    }
}

/// Each replica sends 40 requests, the three side by side; the answers that were 200.
async fn send(stacks: &[Replica]) -> usize {
    let tasks: Vec<_> = stacks
        .iter()
        .cloned()
        .map(|stack| {
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..40 {
                    if call(&stack).await == 200 {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        ok += task.await.unwrap();
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_requests_per_minute_through_shared_state() {
    let Some(redis) = RedisServer::start_or_skip("shared request rate")
        .await
        .unwrap()
    else {
        return;
    };
    let shared_upstream = MockUpstream::builder()
        .default_fault(Fault::Healthy)
        .start()
        .await
        .unwrap();
    let local_upstream = MockUpstream::builder()
        .default_fault(Fault::Healthy)
        .start()
        .await
        .unwrap();
    let section = format!(
        "[shared_state]\nredis_url = \"{}\"\nkey_prefix = \"limits-test:\"\ntimeout_ms = 100\n",
        redis.url()
    );
    let shared = replicas(&shared_upstream, &section);
    let local = replicas(&local_upstream, "");
    let connected = Instant::now() + Duration::from_secs(10);
    while !shared
        .iter()
        .all(|s| s.shared_state().unwrap().status() == SharedStateStatus::Connected)
    {
        assert!(
            Instant::now() < connected,
            "every replica connected to Redis"
        );
        sleep(Duration::from_millis(5)).await;
    }

    let start = Instant::now();
    let (shared_ok, local_ok) = tokio::join!(send(&shared), send(&local));
    let elapsed = start.elapsed();
    // 30 a minute, shared: the burst of 30 plus one more every 2 s of the run.
    let refill = usize::try_from(elapsed.as_secs() / 2).unwrap_or(usize::MAX) + 1;
    assert_eq!(shared_ok, shared_upstream.attempt_count());
    assert!(
        (30..=30 + refill).contains(&shared_ok),
        "shared: {shared_ok} answered in {elapsed:?}"
    );
    // Without sharing each replica spends its own 30.
    assert_eq!(local_ok, local_upstream.attempt_count());
    assert!(local_ok >= 90, "local: {local_ok} answered");
    let health = shared[0].shared_state().unwrap().health();
    assert_eq!(
        health.local_decisions, 0,
        "every admission decided in Redis"
    );
}
