//! The shared-state handle against a real `redis-server`: status through a connection, an
//! outage and a restart on the same port.

use std::time::Duration;

use tower_llm_redis::testing::RedisServer;
use tower_llm_redis::{RedisConfig, SharedState, SharedStateStatus};

async fn wait_for(shared: &SharedState, want: SharedStateStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while shared.status() != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "status stayed {} instead of {want}",
            shared.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn status_follows_redis_down_and_back() {
    let Some(server) = RedisServer::start_or_skip("status_follows_redis_down_and_back")
        .await
        .unwrap()
    else {
        return;
    };
    let port = server.addr().port();
    let shared = SharedState::connect(RedisConfig::new(server.url()).key_prefix("t:")).unwrap();
    wait_for(&shared, SharedStateStatus::Connected).await;
    let mut conn = shared.connection().expect("a connection once connected");
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(
        shared.key(&["cooldown", "chat", "openai/gpt"]),
        "t:cooldown:chat:openai/gpt"
    );

    server.stop().await;
    wait_for(&shared, SharedStateStatus::Down).await;
    assert_eq!(shared.health().status, SharedStateStatus::Down);

    let _server = RedisServer::start_on(port).await.unwrap();
    wait_for(&shared, SharedStateStatus::Connected).await;
}

#[tokio::test]
async fn a_bad_configuration_names_its_key_and_hides_the_password() {
    let err = SharedState::connect(RedisConfig::new("http://user:secret@host/0")).unwrap_err();
    assert_eq!(err.field(), "redis_url");
    assert!(!err.to_string().contains("secret"), "{err}");
    let err = SharedState::connect(RedisConfig::new("redis://127.0.0.1/0").timeout(Duration::ZERO))
        .unwrap_err();
    assert_eq!(err.field(), "timeout_ms");
    let config = RedisConfig::new("redis://user:secret@127.0.0.1:1/0");
    assert!(!format!("{config:?}").contains("secret"));
}

#[tokio::test]
async fn redis_missing_at_start_is_not_an_error() {
    let shared = SharedState::connect(RedisConfig::new("redis://127.0.0.1:1/0")).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_ne!(shared.status(), SharedStateStatus::Connected);
    assert!(shared.connection().is_none());
}

#[tokio::test]
async fn a_probe_waits_for_a_slow_redis_at_most_the_timeout_then_is_decided_locally() {
    use tower_llm_fallback::shared::SharedCooldowns;

    let Some(server) = RedisServer::start_or_skip("slow redis").await.unwrap() else {
        return;
    };
    let timeout = Duration::from_millis(20);
    let shared = SharedState::connect(
        RedisConfig::new(server.url())
            .key_prefix("slow:")
            .timeout(timeout),
    )
    .unwrap();
    wait_for(&shared, SharedStateStatus::Connected).await;
    let cooldowns = shared.cooldowns("chat");

    // Connected and quick: the first ask takes the lease, the next one uses it.
    assert!(!cooldowns.may_probe("a/m"), "asking Redis: skip meanwhile");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !cooldowns.may_probe("a/m") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never came"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(shared.health().local_decisions, 0);

    // Redis stops answering (every client paused for 2 s): a new ask gets no answer, and
    // after the timeout the decision is local.
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2_000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let asked = tokio::time::Instant::now();
    assert!(!cooldowns.may_probe("b/m"));
    tokio::time::sleep(timeout + Duration::from_millis(5)).await;
    assert!(
        cooldowns.may_probe("b/m"),
        "decided locally after the timeout"
    );
    assert!(asked.elapsed() < Duration::from_millis(500));
    assert!(shared.health().local_decisions >= 1);
    // The lease request timed out: the state says Redis is not answering.
    wait_for(&shared, SharedStateStatus::Down).await;
    assert!(
        cooldowns.may_probe("c/m"),
        "down: every decision is local at once"
    );
}
