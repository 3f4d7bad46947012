//! `StackBuilder::fallback_reports`: answers carry the chain's `FallbackReport` extension by
//! default and not when it is turned off, with the same `x-llm-target` / `x-llm-fallback`
//! headers either way, on fixed and pass-through routes. Over real loopback HTTP against the
//! chaos mock.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_llm::fallback::{FallbackKind, FallbackReport};
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

fn stack(upstream: &MockUpstream, reports: bool) -> TestStack {
    let config = StackConfig::from_toml_str(CONFIG).unwrap();
    StackBuilder::new(&config)
        .provider_url("p", upstream.base_url())
        .fallback_reports(reports)
        .build_http::<Full<Bytes>>()
        .unwrap()
}

/// The answer's `x-llm-target`, `x-llm-fallback` and report for `model`, its body read whole.
async fn ask(stack: &TestStack, model: &str) -> (String, String, Option<FallbackReport>) {
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
    });
    let req = http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let res = stack.clone().oneshot(req).await.unwrap();
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
    let with = stack(&upstream, true);
    let without = stack(&upstream, false);
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
