//! `StackBuilder::fallback_reports`: answers carry the chain's `FallbackReport` extension by
//! default and not when it is turned off, with the same `x-llm-target` / `x-llm-fallback`
//! headers either way, on fixed and pass-through routes; `retry_attempt_extensions`: the same
//! for the retry's `RetryAttempts` log. Over real loopback HTTP against the chaos mock.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_llm::fallback::{FallbackKind, FallbackReport};
use tower_llm::retry::RetryAttempts;
use tower_llm::{Stack, StackBuilder, StackConfig};
use tower_llm_chaos::{Fault, MockUpstream};

type TestStack = Stack<Full<Bytes>, tower_llm::client::UpstreamBody>;

const CONFIG: &str = r#"
[[providers]]
name = "p"

[[routes]]
match = "gpt-*"
targets = [{ provider = "p", model = "fixed-model" }]

[[routes]]
match = "*"
targets = [{ provider = "p" }]
"#;

/// The stack of `toml` over `upstream`, its builder set up by `set`.
fn stack(
    upstream: &MockUpstream,
    toml: &str,
    set: impl FnOnce(StackBuilder<'_>) -> StackBuilder<'_>,
) -> TestStack {
    let config = StackConfig::from_toml_str(toml).unwrap();
    set(StackBuilder::new(&config).provider_url("p", upstream.base_url()))
        .build_http::<Full<Bytes>>()
        .unwrap()
}

/// A chat completion request for `model`.
fn chat(model: &str) -> http::Request<Full<Bytes>> {
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
    });
    http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// The answer's `x-llm-target`, `x-llm-fallback` and report for `model`, its body read whole.
async fn ask(stack: &TestStack, model: &str) -> (String, String, Option<FallbackReport>) {
    let res = stack.clone().oneshot(chat(model)).await.unwrap();
    assert_eq!(res.status(), 200);
    let (parts, body) = res.into_parts();
    let answer = body.collect().await.unwrap().to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert!(answer["choices"][0]["message"]["content"].is_string());
    let header = |name: &str| parts.headers[name].to_str().unwrap().to_owned();
    (
        header("x-llm-target"),
        header("x-llm-fallback"),
        parts.extensions.get::<FallbackReport>().cloned(),
    )
}

#[tokio::test]
async fn answers_carry_the_report_unless_it_is_turned_off() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::Healthy)
        .max_logged_attempts(16)
        .start()
        .await
        .unwrap();
    let with = stack(&upstream, CONFIG, |b| b.fallback_reports(true));
    let without = stack(&upstream, CONFIG, |b| b.fallback_reports(false));
    for (model, target) in [("gpt-4o", "p/fixed-model"), ("claude", "p/claude")] {
        let (name, kind, report) = ask(&with, model).await;
        assert_eq!((name.as_str(), kind.as_str()), (target, "none"));
        let report = report.expect("a report by default");
        assert_eq!(report.fallback, FallbackKind::None);
        assert_eq!(report.target.as_deref(), Some(target));

        let (name, kind, report) = ask(&without, model).await;
        assert_eq!((name.as_str(), kind.as_str()), (target, "none"));
        assert!(report.is_none(), "no report when turned off");
    }
    assert_eq!(upstream.attempt_count(), 4);
}

const RETRIED: &str = r#"
[[providers]]
name = "p"

[[routes]]
match = "*"
targets = [{ provider = "p" }]

[retry]
max_attempts = 3
base_ms = 1
max_delay_ms = 1
seed = 7
"#;

/// `StackBuilder::retry_attempt_extensions`: an answer that followed a failed attempt carries
/// the retry's `RetryAttempts` log by default and not when it is turned off; the upstream (half
/// of its answers a seeded 500) sees the same attempts either way.
#[tokio::test]
async fn answers_after_a_retry_carry_its_log_unless_it_is_turned_off() {
    let mut attempts = Vec::new();
    for extensions in [true, false] {
        // A mock each, so that both see the same sequence of faults.
        let upstream = MockUpstream::builder()
            .default_fault(Fault::fraction(500, Fault::status(500)).with_seed(3))
            .max_logged_attempts(64)
            .start()
            .await
            .unwrap();
        let stack = stack(&upstream, RETRIED, |b| {
            b.retry_attempt_extensions(extensions)
        });
        let mut logs = Vec::new();
        for _ in 0..8 {
            // Three 500s in a row fail the call: not an answer, no log to look at.
            if let Ok(res) = stack.clone().oneshot(chat("m")).await {
                assert_eq!(res.status(), 200);
                logs.push(res.extensions().get::<RetryAttempts>().cloned());
            }
        }
        attempts.push(upstream.attempt_count());
        let retried = logs.iter().flatten().count();
        if extensions {
            assert!(retried > 0, "some answers followed a 500: {logs:?}");
            assert!(logs
                .iter()
                .flatten()
                .flat_map(|log| log.attempts())
                .all(|a| a.status == Some(500)));
        } else {
            assert_eq!(retried, 0, "no log when turned off");
        }
    }
    assert!(attempts[0] > 8, "retries were made: {attempts:?}");
    assert_eq!(attempts[0], attempts[1], "the same attempts either way");
}
