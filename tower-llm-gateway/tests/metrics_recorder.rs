//! The Prometheus recorder is installed before any stack is built.
//!
//! A route whose targets all name their model is built when the gateway starts, and the breaker
//! registers its metric handles when it is built, with the recorder installed at that moment. So
//! if the gateway installed its recorder after building the stack, such a route's breaker metrics
//! would never appear in `/metrics`.
//!
//! The recorder is process-global: this file is a test binary of its own with a single test, so
//! the gateway it starts is the first in the process and installs the recorder itself (in a
//! binary shared with other tests, an earlier gateway would have installed it already and the
//! test would pass whatever the order).

mod gateway_support;

use http::StatusCode;
use tower_llm::breaker::metrics::{CALLS_TOTAL, STATE};

use gateway_support::{chat, get, start};

#[tokio::test(start_paused = true)]
async fn breaker_metrics_of_a_route_built_at_start_appear_in_metrics() {
    let gw = start(
        r#"
[gateway]
listen = "127.0.0.1:0"

[[providers]]
name = "recorder-test"
mock = "healthy"

[[routes]]
match = "*"
targets = [{ provider = "recorder-test", model = "fixed-model" }]
"#,
    )
    .await;
    assert!(
        gw.stack().breaker("recorder-test/fixed-model").is_some(),
        "the route's target is built at start"
    );

    let reply = chat(&gw, "anything").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("x-llm-target"),
        Some("recorder-test/fixed-model")
    );

    let metrics = get(&gw, "/metrics").await;
    let text = metrics.text();
    let calls = text
        .lines()
        .find(|l| {
            l.starts_with(CALLS_TOTAL)
                && l.contains("target=\"recorder-test/fixed-model\"")
                && l.contains("outcome=\"success\"")
        })
        .unwrap_or_else(|| panic!("no {CALLS_TOTAL} for the fixed-model target in:\n{text}"));
    assert!(calls.ends_with(" 1"), "{calls}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(STATE) && l.contains("target=\"recorder-test/fixed-model\"")),
        "{text}"
    );
    gw.shutdown().await.unwrap();
}
