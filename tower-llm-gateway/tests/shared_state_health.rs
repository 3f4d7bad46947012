//! `/health` shows the shared state (`[shared_state]`): connected while Redis answers, `down`
//! when it is killed (the gateway keeps answering on local state), connected again when it is
//! back; the status line says the same; the Redis URL's password never appears.

mod gateway_support;

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use tower_llm_redis::testing::RedisServer;

use gateway_support::{chat, health, start};

fn config(redis_url: &str) -> String {
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"

[[providers]]
name = "primary"
mock = "healthy"

[[routes]]
match = "*"
targets = [{{ provider = "primary", model = "m" }}]

[shared_state]
redis_url = "{redis_url}"
key_prefix = "gw-health:"
"#
    )
}

async fn shared_status_becomes(gw: &tower_llm_gateway::Gateway, want: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let h = health(gw).await;
        if h["shared_state"]["status"] == want {
            return h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "shared_state never became {want}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn health_shows_the_shared_state_through_a_redis_outage() {
    let Some(redis) = RedisServer::start_or_skip("shared_state_health")
        .await
        .unwrap()
    else {
        return;
    };
    let port = redis.addr().port();
    let gw = start(&config(&redis.url())).await;
    let h = shared_status_becomes(&gw, "connected").await;
    assert_eq!(h["shared_state"]["key_prefix"], "gw-health:");
    assert_eq!(h["shared_state"]["redis_url"], redis.url());

    let line = |gw: &tower_llm_gateway::Gateway| {
        tower_llm_gateway::status::status_line(
            Duration::from_secs(1),
            Duration::from_secs(1),
            Default::default(),
            Default::default(),
            &gw.stack().health(),
        )
    };
    assert!(line(&gw).contains(" | shared"), "{}", line(&gw));

    redis.stop().await;
    let h = shared_status_becomes(&gw, "down").await;
    assert!(
        line(&gw).contains(" | shared state down (local decisions)"),
        "{}",
        line(&gw)
    );
    // Redis down is not the gateway down: it serves on local state.
    assert_eq!(h["status"], "healthy");
    assert_eq!(chat(&gw, "m").await.status, StatusCode::OK);

    let _redis = RedisServer::start_on(port).await.unwrap();
    shared_status_becomes(&gw, "connected").await;
    assert_eq!(chat(&gw, "m").await.status, StatusCode::OK);
}

#[tokio::test]
async fn health_never_shows_the_redis_password() {
    // Nothing listens on port 1: the state stays local, and says so.
    let gw = start(&config("redis://:s3cret-pass@127.0.0.1:1/0")).await;
    let h = health(&gw).await;
    assert_eq!(h["shared_state"]["status"], "connecting");
    assert_eq!(h["shared_state"]["redis_url"], "redis://***@127.0.0.1:1/0");
    assert!(!h.to_string().contains("s3cret"));
    assert_eq!(chat(&gw, "m").await.status, StatusCode::OK);
}
