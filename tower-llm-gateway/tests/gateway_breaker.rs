//! The breaker criteria through the gateway's `/health`: a target's breaker starts closed,
//! opens after N failures, half-opens after its wait, closes when the target recovers; the
//! overall status goes healthy → degraded → unhealthy → healthy.
//!
//! The clock is paused and held (`hold_auto_advance`): time moves only by `advance`, so the
//! breaker's open duration passes exactly when the test says.

mod gateway_support;

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use tower_llm_chaos::{hold_auto_advance, Fault};

use gateway_support::{chat, health, start, target};

/// `primary/gpt-4o` then `secondary/backup-model` for `gpt-*`; `backup-*` goes to the secondary
/// alone (the same target, so the same breaker). No retries and no cooldowns, so every request
/// reaches the breakers; 3 failures in a row open one for 5 s; 2 probes close it.
const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[[providers]]
name = "primary"
mock = "healthy"

[[providers]]
name = "secondary"
mock = "healthy"

[[routes]]
match = "gpt-*"
targets = [
  { provider = "primary", model = "gpt-4o" },
  { provider = "secondary", model = "backup-model" },
]

[[routes]]
match = "backup-*"
targets = [{ provider = "secondary", model = "backup-model" }]

[retry]
enabled = false

[cooldown]
transient_min_ms = 0

[breaker]
consecutive_failures = 3
open_ms = 5000
half_open_probes = 2
"#;

fn breaker(health: &Value, name: &str) -> (String, bool) {
    let t = target(health, name);
    (
        t["breaker"]["state"].as_str().unwrap().to_owned(),
        t["available"].as_bool().unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn breaker_states_and_overall_health_through_the_health_endpoint() {
    let _hold = hold_auto_advance();
    let gw = start(CONFIG).await;
    let primary = gw.mock("primary").unwrap();
    let secondary = gw.mock("secondary").unwrap();

    // Starts closed, everything healthy.
    let h = health(&gw).await;
    assert_eq!(h["status"], "healthy");
    assert_eq!(breaker(&h, "primary/gpt-4o"), ("closed".into(), true));
    assert_eq!(
        breaker(&h, "secondary/backup-model"),
        ("closed".into(), true)
    );

    // The primary fails: each request fails over; the third failure opens its breaker.
    primary.set_default_fault(Fault::status(500));
    for n in 1..=3 {
        let reply = chat(&gw, "gpt-4o").await;
        assert_eq!(reply.header("x-llm-target"), Some("secondary/backup-model"));
        let h = health(&gw).await;
        let t = target(&h, "primary/gpt-4o");
        assert_eq!(t["consecutive_failures"], n);
        assert_eq!(t["last_error_kind"], "server_error");
        if n < 3 {
            assert_eq!(breaker(&h, "primary/gpt-4o"), ("closed".into(), true));
        }
    }
    let h = health(&gw).await;
    assert_eq!(breaker(&h, "primary/gpt-4o"), ("open".into(), false));
    assert_eq!(
        target(&h, "primary/gpt-4o")["breaker"]["retry_after_ms"],
        5000
    );
    assert_eq!(target(&h, "primary/gpt-4o")["success_rate"], 0.0);
    assert_eq!(h["status"], "degraded");

    // Open: the primary is not called at all.
    assert_eq!(chat(&gw, "gpt-4o").await.status, StatusCode::OK);
    assert_eq!(primary.attempt_count(), 3);

    // The secondary fails too: its breaker opens as well and nothing can answer.
    secondary.set_default_fault(Fault::status(503));
    for _ in 0..3 {
        assert_eq!(
            chat(&gw, "backup-x").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let h = health(&gw).await;
    assert_eq!(
        breaker(&h, "secondary/backup-model"),
        ("open".into(), false)
    );
    assert_eq!(h["status"], "unhealthy");
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.header("retry-after").is_some());
    assert_eq!(
        gateway_support::get(&gw, "/health").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Both recover; once the open duration has passed, each breaker lets probes through.
    primary.set_default_fault(Fault::Healthy);
    secondary.set_default_fault(Fault::Healthy);
    tokio::time::advance(Duration::from_secs(5)).await;
    let h = health(&gw).await;
    assert_eq!(target(&h, "primary/gpt-4o")["breaker"]["retry_after_ms"], 0);
    assert_eq!(
        h["status"], "healthy",
        "both waits are over: probes are admitted"
    );

    // The chain benched each target until its breaker's probe, then sent its own probe: the
    // breaker lets it through, and its success closes the breaker at once (one health gate).
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.header("x-llm-target"), Some("primary/gpt-4o"));
    assert_eq!(
        breaker(&health(&gw).await, "primary/gpt-4o"),
        ("closed".into(), true)
    );
    assert_eq!(
        target(&health(&gw).await, "primary/gpt-4o")["breaker"]["reopens"],
        0
    );

    // The `backup-*` route never saw its breaker reject (its failures opened it): the breaker's
    // own half-open rule applies there, two probes.
    chat(&gw, "backup-x").await;
    assert_eq!(
        breaker(&health(&gw).await, "secondary/backup-model").0,
        "half_open"
    );
    chat(&gw, "backup-x").await;
    let h = health(&gw).await;
    assert_eq!(
        breaker(&h, "secondary/backup-model"),
        ("closed".into(), true)
    );
    assert_eq!(h["status"], "healthy");
    assert_eq!(target(&h, "primary/gpt-4o")["consecutive_failures"], 0);

    gw.shutdown().await.unwrap();
    drop(_hold);
}
