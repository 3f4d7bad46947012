//! Issue 20: every metric the Grafana dashboard (`dashboards/tower-llm.json`) queries exists.
//!
//! A gateway on embedded mocks serves JSON and SSE traffic through a failover, a bulkhead that
//! sheds, a stream cut and resumed on the secondary, a cut stream no target could resume, and a
//! 429; then `/metrics` is scraped, every PromQL expression of the dashboard (panels and
//! template variables) is parsed, and each metric name and label it references must appear in
//! the scrape (a `_bucket` name only for a histogram; every base name one of the crates'
//! `metrics` constants). The Prometheus recorder is global to the process: this file holds a
//! single test.

mod gateway_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use tower_llm::breaker::metrics as breaker;
use tower_llm::bulkhead::metrics as bulkhead;
use tower_llm::core::stream::metrics as stream;
use tower_llm::fallback::metrics as fallback;
use tower_llm::retry::metrics as retry;
use tower_llm_gateway::metrics as gateway;

use gateway_support::{chat_request, get, send, start};

/// `primary` answers per model: slowly (`gpt-slow`, so a second call finds its bulkhead full),
/// with a stream cut after three events (`gpt-cut`, `solo-cut`), with a 429 (`gpt-limited`), or
/// healthily. `secondary` fails model `broken` with a 500, so a `solo-*` stream cut on the
/// primary finds no target to be resumed on.
/// One call in flight per target, none queued: the second concurrent call is shed.
const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"
demo_requests_per_sec = 0

[[providers]]
name = "primary"
mock = "model gpt-slow = latency:400ms; model gpt-cut = cut-after:3; model solo-cut = cut-after:3; model gpt-limited = status:429; default = healthy"

[[providers]]
name = "secondary"
mock = "model broken = status:500; default = healthy"

[[routes]]
match = "solo-*"
targets = [
  { provider = "primary" },
  { provider = "secondary", model = "broken" },
]

[[routes]]
match = "*"
targets = [
  { provider = "primary" },
  { provider = "secondary", model = "backup-model" },
]

[bulkhead]
max_in_flight = 1
max_queued = 0

[retry]
enabled = false
"#;

const DASHBOARD: &str = include_str!("../../dashboards/tower-llm.json");

/// PromQL functions and aggregations the dashboard may call.
const FUNCTIONS: &[&str] = &[
    "abs",
    "avg",
    "avg_over_time",
    "ceil",
    "clamp_max",
    "clamp_min",
    "count",
    "delta",
    "deriv",
    "floor",
    "histogram_quantile",
    "increase",
    "irate",
    "label_replace",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "quantile",
    "rate",
    "round",
    "sum",
    "sum_over_time",
    "topk",
    "bottomk",
    "vector",
];
/// Keywords that take a parenthesized list of labels.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Keywords that stand alone.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "group_left",
    "group_right",
];

/// What one PromQL expression references.
#[derive(Debug, Default, PartialEq)]
struct Refs {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
    functions: BTreeSet<String>,
}

/// The metric names, label names and functions of a PromQL expression. Strings and range
/// selectors (`[$__rate_interval]`) are skipped, `{...}` matchers give label names (and the
/// metric of `__name__="..."`), `by (...)`-like lists give label names, an identifier before `(`
/// is a function, Grafana's `$variables` are skipped, and every other identifier is a metric.
fn promql_refs(expr: &str) -> Refs {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = Refs::default();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let read_ident = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && ident_char(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    let skip_string = |i: &mut usize| {
        let quote = chars[*i];
        *i += 1;
        let start = *i;
        while *i < chars.len() && chars[*i] != quote {
            if chars[*i] == '\\' {
                *i += 1;
            }
            *i += 1;
        }
        let value: String = chars[start..(*i).min(chars.len())].iter().collect();
        *i += 1;
        value
    };
    let next_non_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            skip_string(&mut i);
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // Matchers: `label op "value"`, comma-separated.
            i += 1;
            loop {
                i = next_non_space(i);
                if i >= chars.len() || chars[i] == '}' {
                    i += 1;
                    break;
                }
                if chars[i] == ',' {
                    i += 1;
                    continue;
                }
                let label = read_ident(&mut i);
                assert!(!label.is_empty(), "a matcher without a label in `{expr}`");
                i = next_non_space(i);
                while i < chars.len() && matches!(chars[i], '=' | '!' | '~') {
                    i += 1;
                }
                i = next_non_space(i);
                let value = skip_string(&mut i);
                if label == "__name__" {
                    refs.metrics.insert(value);
                } else {
                    refs.labels.insert(label);
                }
            }
        } else if c == '$' {
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                read_ident(&mut i);
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (`5m`, `1.5e3`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if ident_start(c) {
            let ident = read_ident(&mut i);
            let next = next_non_space(i);
            // `sum by (le) (...)`: an aggregation with its grouping first is a call too.
            let grouping_next = {
                let mut j = next;
                let word = read_ident(&mut j);
                word == "by" || word == "without"
            };
            let call = chars.get(next) == Some(&'(')
                || (grouping_next && !GROUPING.contains(&ident.as_str()));
            if call && GROUPING.contains(&ident.as_str()) {
                i = next + 1;
                loop {
                    i = next_non_space(i);
                    match chars.get(i) {
                        None => break,
                        Some(')') => {
                            i += 1;
                            break;
                        }
                        Some(',') => i += 1,
                        Some(_) => {
                            let label = read_ident(&mut i);
                            assert!(!label.is_empty(), "a bad label list in `{expr}`");
                            refs.labels.insert(label);
                        }
                    }
                }
            } else if call {
                assert!(
                    FUNCTIONS.contains(&ident.as_str()),
                    "`{ident}(` is not a known PromQL function, in `{expr}`"
                );
                refs.functions.insert(ident);
            } else if !KEYWORDS.contains(&ident.as_str()) && !GROUPING.contains(&ident.as_str()) {
                refs.metrics.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    refs
}

/// The metric and label a Grafana `label_values(metric, label)` variable query references.
fn label_values_refs(query: &str) -> Refs {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a label_values query: {query}"));
    let (metric, label) = inner.rsplit_once(',').expect("label_values(metric, label)");
    let mut refs = promql_refs(metric);
    refs.labels.insert(label.trim().to_owned());
    refs
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut todo: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = todo.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            todo.extend(nested);
        }
        out.push(panel);
    }
    out
}

/// Metric name -> the label names of its samples in a Prometheus text scrape.
fn scrape(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, _value) = line.rsplit_once(' ').expect("a value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let entry = out.entry(name.to_owned()).or_default();
        for label in labels.split("\",").filter(|l| !l.is_empty()) {
            let (key, _) = label.split_once('=').expect("label=value");
            entry.insert(key.to_owned());
        }
    }
    out
}

#[tokio::test]
async fn every_metric_and_label_the_dashboard_queries_is_exported() {
    // The parser first: names, labels and functions, none of strings, ranges or variables.
    let refs = promql_refs(
        r#"histogram_quantile(0.9, sum by (le, target) (rate(a_seconds_bucket{target=~"$target", x!="b{c}"}[$__rate_interval]))) / on(target) group_left b_total * 60 + {__name__="c"} offset 5m"#,
    );
    assert_eq!(
        refs.metrics,
        BTreeSet::from(["a_seconds_bucket".into(), "b_total".into(), "c".into()])
    );
    assert_eq!(
        refs.labels,
        BTreeSet::from(["le".into(), "target".into(), "x".into()])
    );
    assert_eq!(
        refs.functions,
        BTreeSet::from(["histogram_quantile".into(), "sum".into(), "rate".into()])
    );

    // The dashboard imports anywhere: a Prometheus data source input, Grafana 10's schema.
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    assert!(
        dashboard["__inputs"]
            .as_array()
            .expect("__inputs")
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS input"
    );
    assert!(dashboard["schemaVersion"].as_u64().expect("schemaVersion") >= 38);
    let panels = panels(&dashboard);
    let ids: BTreeSet<u64> = panels
        .iter()
        .map(|p| p["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");

    // Every query, with where it comes from.
    let mut queries: Vec<(String, Refs, Vec<String>)> = Vec::new();
    for panel in &panels {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("title");
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = target["expr"].as_str().expect("expr");
            // `{{label}}` in the legend must be a label of the result.
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            let legend_labels = legend
                .split("{{")
                .skip(1)
                .filter_map(|part| part.split_once("}}"))
                .map(|(label, _)| label.trim().to_owned())
                .collect();
            queries.push((format!("{title}: {expr}"), promql_refs(expr), legend_labels));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .expect("a variable query");
        queries.push((
            format!("variable {}: {query}", variable["name"]),
            label_values_refs(query),
            Vec::new(),
        ));
    }

    // Traffic that makes every series appear.
    let gw = start(CONFIG).await;
    let reply = send(&gw, chat_request(&gw, "gpt-4o", false, &[])).await;
    assert_eq!(reply.header("x-llm-target"), Some("primary/gpt-4o"));
    let reply = send(&gw, chat_request(&gw, "gpt-4o", true, &[])).await;
    assert_eq!(reply.header("x-llm-target"), Some("primary/gpt-4o"));
    assert!(
        reply.text().ends_with("data: [DONE]\n\n"),
        "{}",
        reply.text()
    );

    // Shed: a slow call holds the primary's only slot, the next one goes to the secondary.
    let primary = gw.mock("primary").expect("embedded primary");
    let before = primary.attempt_count();
    let slow = {
        let req = chat_request(&gw, "gpt-slow", false, &[]);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        tokio::spawn(async move { client.request(req).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while primary.attempt_count() == before {
        assert!(
            Instant::now() < deadline,
            "the slow call never reached the primary"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shed = send(&gw, chat_request(&gw, "gpt-slow", false, &[])).await;
    assert_eq!(shed.status, StatusCode::OK, "{}", shed.text());
    assert_eq!(shed.header("x-llm-target"), Some("secondary/backup-model"));
    let slow = slow.await.unwrap().expect("the slow call answers");
    assert_eq!(slow.status(), StatusCode::OK);

    // A stream cut after three events, resumed on the secondary.
    let resumed = send(&gw, chat_request(&gw, "gpt-cut", true, &[])).await;
    assert_eq!(resumed.status, StatusCode::OK);
    assert!(
        resumed
            .text()
            .contains(": resumed on secondary/backup-model")
            && resumed.text().ends_with("data: [DONE]\n\n"),
        "{}",
        resumed.text()
    );
    // A cut stream whose only other target fails: not resumed, the client reads an error
    // event.
    let unresumed = send(&gw, chat_request(&gw, "solo-cut", true, &[])).await;
    assert_eq!(unresumed.status, StatusCode::OK);
    assert!(
        unresumed.text().contains("\"error\""),
        "{}",
        unresumed.text()
    );
    // A 429: a fallback by reason, the primary's target benched.
    let limited = send(&gw, chat_request(&gw, "gpt-limited", false, &[])).await;
    assert_eq!(limited.status, StatusCode::OK);
    assert_eq!(limited.header("x-llm-fallback"), Some("target"));

    let metrics = get(&gw, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let exported = scrape(metrics.text());
    gw.shutdown().await.unwrap();

    // The crates' metric constants, and which of them are histograms.
    let constants: BTreeSet<&str> = gateway::ALL
        .iter()
        .chain(&fallback::ALL)
        .chain(&stream::ALL)
        .chain(&breaker::ALL)
        .chain(&bulkhead::ALL)
        .chain(&retry::ALL)
        .copied()
        .collect();
    let histograms: BTreeSet<&str> = gateway::HISTOGRAMS.into_iter().collect();

    let mut used = BTreeSet::new();
    for (what, refs, legend_labels) in &queries {
        assert!(!refs.metrics.is_empty(), "{what}: no metric");
        let mut labels_there = BTreeSet::new();
        for metric in &refs.metrics {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    metric
                        .strip_suffix(suffix)
                        .filter(|base| histograms.contains(base))
                })
                .unwrap_or(metric);
            assert!(
                constants.contains(base),
                "{what}: `{metric}` is none of the crates' metric constants"
            );
            assert!(
                base != metric || !histograms.contains(base),
                "{what}: `{metric}` is a histogram: query its _bucket, _sum or _count"
            );
            let labels = exported.get(metric).unwrap_or_else(|| {
                panic!("{what}: `{metric}` is not in /metrics:\n{}", metrics.text())
            });
            labels_there.extend(labels.iter().cloned());
            used.insert(base.to_owned());
        }
        if refs.functions.contains("histogram_quantile") {
            assert!(
                refs.metrics.iter().all(|m| m.ends_with("_bucket")),
                "{what}: histogram_quantile over a non-bucket series"
            );
        }
        for label in refs.labels.iter().chain(legend_labels) {
            assert!(
                labels_there.contains(label),
                "{what}: no series of {:?} has the label `{label}` (it has {labels_there:?})",
                refs.metrics
            );
        }
    }

    // The panels issue 20 asks for are there.
    for wanted in [
        fallback::ATTEMPTS_TOTAL,
        gateway::REQUEST_DURATION_SECONDS,
        fallback::ATTEMPT_DURATION_SECONDS,
        stream::FIRST_EVENT_SECONDS,
        stream::DURATION_SECONDS,
        breaker::STATE,
        fallback::COOLDOWN,
        fallback::FALLBACKS_TOTAL,
        fallback::STREAM_RESUMED_TOTAL,
        stream::TOKENS_TOTAL,
        bulkhead::IN_FLIGHT,
        bulkhead::QUEUED,
        bulkhead::REJECTED_TOTAL,
    ] {
        assert!(
            used.contains(wanted),
            "the dashboard does not query {wanted}"
        );
    }
}
