//! Label sets stay bounded under random model names (issue 20): on routes whose targets name
//! their models, no series of `/metrics` carries a model name a client sent, and the `route`
//! label is a configured pattern or `none`, whatever the clients send. The Prometheus recorder
//! is global to the process: this file holds a single test.

mod gateway_support;

use std::collections::BTreeSet;

use http::StatusCode;
use tower_llm_gateway::metrics::{REQUEST_DURATION_SECONDS, ROUTE_NONE};

use gateway_support::{chat_request, get, send, start};

const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"
demo_requests_per_sec = 0

[[providers]]
name = "primary"
mock = "status:503"

[[providers]]
name = "secondary"
mock = "healthy"

[[routes]]
match = "gpt-*"
targets = [
  { provider = "primary", model = "big" },
  { provider = "secondary", model = "small" },
]

[[routes]]
match = "claude-*"
targets = [{ provider = "secondary", model = "small" }]
"#;

/// Every `label="value"` pair of the Prometheus text, as `(label, value)`.
fn label_pairs(text: &str) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, _)) = rest.rsplit_once('}') else {
            continue;
        };
        for pair in labels.split("\",") {
            if let Some((k, v)) = pair.split_once('=') {
                pairs.insert((k.to_owned(), v.trim_matches('"').to_owned()));
            }
        }
    }
    pairs
}

#[tokio::test]
async fn no_series_is_labelled_with_a_client_s_model_name() {
    let gw = start(CONFIG).await;
    // Seeded, so a failure replays: names on both routes, and names no route serves.
    let mut seed: u64 = 0x5eed_2020;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut sent = Vec::new();
    for i in 0..60u64 {
        let prefix = ["gpt-", "claude-", "mistral-"][(i % 3) as usize];
        let model = format!("{prefix}rnd{:016x}", next());
        let stream = next() % 2 == 0;
        let reply = send(&gw, chat_request(&gw, &model, stream, &[])).await;
        let want = if prefix == "mistral-" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        assert_eq!(reply.status, want, "{model}: {}", reply.text());
        sent.push(model);
    }

    let metrics = get(&gw, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text();
    for model in &sent {
        let fragment = model.split_once("rnd").map_or(model.as_str(), |(_, r)| r);
        assert!(!text.contains(fragment), "{model} is in /metrics");
    }
    let pairs = label_pairs(text);
    let routes: BTreeSet<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "route")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        routes,
        BTreeSet::from(["gpt-*", "claude-*", ROUTE_NONE]),
        "route labels"
    );
    let targets: BTreeSet<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "target")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        targets,
        BTreeSet::from(["primary/big", "secondary/small"]),
        "target labels"
    );
    // Requests no route serves are timed under `none`.
    let none_count = text
        .lines()
        .find(|l| {
            l.starts_with(&format!("{REQUEST_DURATION_SECONDS}_count"))
                && l.contains("route=\"none\"")
                && l.contains("outcome=\"failure\"")
        })
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse::<f64>().expect("a count"));
    assert_eq!(none_count, Some(20.0));
    gw.shutdown().await.unwrap();
}
