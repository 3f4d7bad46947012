//! `[gateway] metrics_idle_timeout_ms`: the series of a pass-through target evicted from its
//! route (beyond 256 models) leave `/metrics` once idle for the timeout, so random model names
//! do not grow the registry for good.
//!
//! The recorder is process-global and installed by the first gateway of the process with that
//! gateway's timeout: this file is a test binary of its own with a single test. The exporter
//! measures idleness with its own clock (not tokio's), so this test runs in real time, with the
//! shortest timeout allowed (1 s) and a bounded wait.

mod gateway_support;

use std::time::{Duration, Instant};

use http::StatusCode;
use tower_llm::breaker::metrics::CALLS_TOTAL;

use gateway_support::{chat, get, start};

fn has_series(text: &str, target: &str) -> bool {
    let label = format!("target=\"{target}\"");
    text.lines()
        .any(|l| l.starts_with(CALLS_TOTAL) && l.contains(&label))
}

#[tokio::test]
async fn series_of_an_evicted_target_leave_metrics_after_the_idle_timeout() {
    let gw = start(
        r#"
[gateway]
listen = "127.0.0.1:0"
metrics_idle_timeout_ms = 1000

[[providers]]
name = "idle-test"
mock = "healthy"

[[routes]]
match = "*"
targets = [{ provider = "idle-test" }]

[retry]
enabled = false
"#,
    )
    .await;

    assert_eq!(chat(&gw, "first-model").await.status, StatusCode::OK);
    let text = get(&gw, "/metrics").await.text().to_owned();
    assert!(has_series(&text, "idle-test/first-model"), "{text}");

    // Evict it: the route keeps at most 256 models.
    for i in 0..300 {
        let reply = chat(&gw, &format!("other-{i}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    assert!(!gw
        .stack()
        .requested_models()
        .iter()
        .any(|m| m == "first-model"));

    // Render until the idle series is gone (idle removal happens on render), while new
    // targets keep appearing.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut round = 0;
    loop {
        round += 1;
        let fresh = format!("fresh-{round}");
        assert_eq!(chat(&gw, &fresh).await.status, StatusCode::OK);
        let text = get(&gw, "/metrics").await.text().to_owned();
        assert!(
            has_series(&text, &format!("idle-test/{fresh}")),
            "a series just updated is kept: {text}"
        );
        if !has_series(&text, "idle-test/first-model") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the evicted target's series is still in /metrics after 15 s: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.shutdown().await.unwrap();
}
