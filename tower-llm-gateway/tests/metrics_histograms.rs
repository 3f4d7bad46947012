//! `/metrics` after JSON and SSE traffic through a failover (issue 20): the latency histograms
//! have buckets (10 ms to 120 s) and the right counts, and the token counters hold the usage the
//! answering mock reported. The Prometheus recorder is global to the process: this file holds a
//! single test, so every count below is this test's.

mod gateway_support;

use std::collections::BTreeMap;

use http::StatusCode;
use tower_llm::core::stream::metrics::{
    DURATION_SECONDS, FIRST_EVENT_SECONDS, LATENCY_BUCKETS, TOKENS_TOTAL,
};
use tower_llm::fallback::metrics::{ATTEMPT_DURATION_SECONDS, COOLDOWN, FALLBACKS_TOTAL};
use tower_llm_chaos::canonical;
use tower_llm_gateway::metrics::REQUEST_DURATION_SECONDS;

use gateway_support::{chat_request, get, send, start};

/// `primary` answers every call with a 429 (no delay: benched for `[cooldown] rate_limited_ms`,
/// a minute, so every later request skips it); `secondary` answers, reporting its usage.
const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"
demo_requests_per_sec = 0

[[providers]]
name = "primary"
mock = "status:429"

[[providers]]
name = "secondary"
mock = "healthy"

[[routes]]
match = "gpt-*"
targets = [
  { provider = "primary" },
  { provider = "secondary", model = "backup-model" },
]

[[routes]]
match = "*"
targets = [{ provider = "secondary", model = "backup-model" }]
"#;

/// One sample line of the Prometheus text: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').expect("label=value");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The value of the one series `name` with (at least) `labels`; 0 when absent.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {labels:?} is ambiguous: {found:?}"
    );
    found.first().map_or(0.0, |s| s.value)
}

/// Assert that histogram `name{labels}` has `count` samples: its buckets are ours, cumulative,
/// and end at `count`.
fn assert_histogram(samples: &[Sample], name: &str, labels: &[(&str, &str)], count: u64) {
    let bucket = format!("{name}_bucket");
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == bucket)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| {
            let le = &s.labels["le"];
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("le")
            };
            (le, s.value)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let bounds: Vec<f64> = buckets.iter().map(|b| b.0).collect();
    let mut want = LATENCY_BUCKETS.to_vec();
    want.push(f64::INFINITY);
    assert_eq!(bounds, want, "{name} {labels:?}: buckets");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "{name} {labels:?}: not cumulative: {buckets:?}"
    );
    let count = count as f64;
    assert_eq!(
        buckets.last().map(|b| b.1),
        Some(count),
        "{name} {labels:?}: +Inf"
    );
    assert_eq!(
        value(samples, &format!("{name}_count"), labels),
        count,
        "{name} {labels:?}"
    );
    let sum = value(samples, &format!("{name}_sum"), labels);
    assert!(
        if count > 0.0 { sum > 0.0 } else { sum == 0.0 },
        "{name} {labels:?}: sum {sum}"
    );
}

#[tokio::test]
async fn histograms_and_token_counters_after_json_and_sse_through_a_failover() {
    let gw = start(CONFIG).await;
    for stream in [false, true, false, true, true] {
        let reply = send(&gw, chat_request(&gw, "gpt-4o", stream, &[])).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("x-llm-target"), Some("secondary/backup-model"));
        assert_eq!(reply.header("x-llm-fallback"), Some("target"));
        if stream {
            assert!(
                reply.text().ends_with("data: [DONE]\n\n"),
                "{}",
                reply.text()
            );
        }
    }
    // A request on the other route, answered first time.
    let reply = send(&gw, chat_request(&gw, "llama-3", false, &[])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let metrics = get(&gw, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let samples = parse(metrics.text());
    let secondary = "secondary/backup-model";
    let primary = "primary/gpt-4o";

    // Per route, as the client saw it.
    assert_histogram(
        &samples,
        REQUEST_DURATION_SECONDS,
        &[("route", "gpt-*"), ("outcome", "success")],
        5,
    );
    assert_histogram(
        &samples,
        REQUEST_DURATION_SECONDS,
        &[("route", "*"), ("outcome", "success")],
        1,
    );
    // Per target attempt: the primary's one failure (then benched and skipped), the
    // secondary's six answers.
    assert_histogram(
        &samples,
        ATTEMPT_DURATION_SECONDS,
        &[("target", primary), ("outcome", "failure")],
        1,
    );
    assert_histogram(
        &samples,
        ATTEMPT_DURATION_SECONDS,
        &[("target", secondary), ("outcome", "success")],
        6,
    );
    // Time to first token and stream duration of the three streams.
    assert_histogram(&samples, FIRST_EVENT_SECONDS, &[("target", secondary)], 3);
    assert_histogram(
        &samples,
        DURATION_SECONDS,
        &[("target", secondary), ("outcome", "complete")],
        3,
    );

    // Tokens: the mock's usage, JSON and SSE alike (the other route's request included). The
    // mock counts the prompt of `chat_request`'s messages as its `estimate_usage` says.
    let prompt = canonical::estimate_usage(&serde_json::json!({
        "messages": [{ "role": "user", "content": "Say hello." }],
    }))
    .prompt_tokens;
    let completion = canonical::usage(0).completion_tokens;
    let tokens = |direction: &str, source: &str| {
        value(
            &samples,
            TOKENS_TOTAL,
            &[
                ("target", secondary),
                ("direction", direction),
                ("source", source),
            ],
        )
    };
    assert_eq!(tokens("input", "reported"), (6 * prompt) as f64);
    assert_eq!(tokens("output", "reported"), (6 * completion) as f64);
    assert_eq!(tokens("output", "estimated"), 0.0, "the mock reports usage");
    let primary_tokens: f64 = samples
        .iter()
        .filter(|s| s.name == TOKENS_TOTAL && s.labels["target"] == primary)
        .map(|s| s.value)
        .sum();
    assert_eq!(primary_tokens, 0.0, "the primary answered nothing");

    // Fallbacks by reason: all five left the primary for its 429 (then its cooldown).
    assert_eq!(
        value(
            &samples,
            FALLBACKS_TOTAL,
            &[("target", secondary), ("reason", "rate_limited")]
        ),
        5.0
    );
    // The primary's cooldown, read from the stack's health at the scrape.
    assert_eq!(
        value(
            &samples,
            COOLDOWN,
            &[("target", primary), ("kind", "rate_limited")]
        ),
        1.0
    );

    // After a reset the next scrape shows it back in service.
    assert!(gw.stack().reset_target(primary));
    let samples = parse(get(&gw, "/metrics").await.text());
    assert_eq!(
        value(
            &samples,
            COOLDOWN,
            &[("target", primary), ("kind", "rate_limited")]
        ),
        0.0
    );
    gw.shutdown().await.unwrap();
}
