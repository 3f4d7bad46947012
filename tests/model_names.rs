//! Requested model names (issue 15, finding 1): checked before anything is created for them,
//! and a pass-through route evicts its least recently used idle model instead of locking new
//! ones out. Through the `Stack` over real loopback HTTP against the chaos mock.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_llm::stack::MAX_MODELS_PER_ROUTE;
use tower_llm::{
    InvalidReason, InvalidRequest, ModelNameError, Stack, StackBuilder, StackConfig, TooManyModels,
};
use tower_llm_chaos::{Fault, MockUpstream};

type TestStack = Stack<Full<Bytes>, tower_llm::client::UpstreamBody>;

/// One provider over `upstream`, one `*` route passing the requested model through.
fn stack(upstream: &MockUpstream) -> TestStack {
    let config = StackConfig::from_toml_str(
        r#"
[[providers]]
name = "p"

[[routes]]
match = "*"
targets = [{ provider = "p", attempt_timeout_ms = 600000 }]

[retry]
enabled = false
"#,
    )
    .unwrap();
    StackBuilder::new(&config)
        .provider_url("p", upstream.base_url())
        .build_http::<Full<Bytes>>()
        .unwrap()
}

async fn ask(stack: &TestStack, model: &str) -> Result<u16, tower_llm::core::BoxError> {
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
    });
    let req = http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let res = stack.clone().oneshot(req).await?;
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}

/// Seeded model names, printable and distinct.
fn random_names(n: usize, mut seed: u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            format!("rand-{seed:016x}-{i}")
        })
        .collect()
}

async fn healthy_mock() -> MockUpstream {
    MockUpstream::builder()
        .default_fault(Fault::Healthy)
        .max_logged_attempts(16)
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn after_three_hundred_random_models_a_new_one_is_still_served() {
    let upstream = healthy_mock().await;
    let stack = stack(&upstream);
    for name in random_names(300, 0x5eed) {
        assert_eq!(ask(&stack, &name).await.unwrap(), 200, "{name}");
    }
    // Before: `400 route '*' already serves 256 distinct models`, for every new model.
    assert_eq!(ask(&stack, "gpt-4o").await.unwrap(), 200);
    let models = stack.requested_models();
    assert_eq!(models.len(), MAX_MODELS_PER_ROUTE);
    assert!(models.iter().any(|m| m == "gpt-4o"));
    // The evicted models' targets went with their chains.
    assert_eq!(stack.health().targets.len(), MAX_MODELS_PER_ROUTE);
    assert!(stack.breaker("p/gpt-4o").is_some());
    let first = &random_names(1, 0x5eed)[0];
    assert!(stack.breaker(&format!("p/{first}")).is_none(), "LRU first");
}

#[tokio::test]
async fn an_invalid_model_name_is_refused_before_anything_is_created() {
    let upstream = healthy_mock().await;
    let stack = stack(&upstream);
    let too_long = "m".repeat(257);
    let cases = [
        ("gpt\u{1b}[31m", ModelNameError::NotPrintable(3)),
        ("a\nb", ModelNameError::NotPrintable(1)),
        ("x\u{7f}", ModelNameError::NotPrintable(1)),
        ("\u{202e}gpt", ModelNameError::NotPrintable(0)),
        (too_long.as_str(), ModelNameError::TooLong(257)),
    ];
    for (name, expected) in cases {
        let err = ask(&stack, name).await.unwrap_err();
        let invalid = err
            .downcast_ref::<InvalidRequest>()
            .unwrap_or_else(|| panic!("{err}"));
        assert_eq!(invalid.reason(), &InvalidReason::ModelName(expected));
        assert!(!err.to_string().contains('\u{1b}'), "{err}");
    }
    assert!(stack.health().targets.is_empty());
    assert!(stack.requested_models().is_empty());
    assert_eq!(upstream.attempt_count(), 0);
    // Printable Unicode and the longest allowed name are model names.
    assert_eq!(ask(&stack, "模型").await.unwrap(), 200);
    assert_eq!(ask(&stack, &"m".repeat(256)).await.unwrap(), 200);
    assert_eq!(stack.requested_models().len(), 2);
}

#[tokio::test]
async fn eviction_keeps_a_chain_with_a_request_in_flight() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::Healthy)
        .route("busy-model", Fault::Hang)
        .max_logged_attempts(16)
        .start()
        .await
        .unwrap();
    let stack = stack(&upstream);
    let hanging = tokio::spawn({
        let stack = stack.clone();
        async move { ask(&stack, "busy-model").await }
    });
    upstream.wait_for_attempts(1).await;
    // `busy-model` is the least recently used; 256 others come and go around it.
    for name in random_names(MAX_MODELS_PER_ROUTE, 7) {
        assert_eq!(ask(&stack, &name).await.unwrap(), 200, "{name}");
    }
    let models = stack.requested_models();
    assert_eq!(models.len(), MAX_MODELS_PER_ROUTE);
    assert!(models.iter().any(|m| m == "busy-model"), "busy chain kept");
    assert!(stack.breaker("p/busy-model").is_some());

    // Once its request is gone, it is the first to go.
    hanging.abort();
    let _ = hanging.await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(ask(&stack, "one-more").await.unwrap(), 200);
    let models = stack.requested_models();
    assert!(!models.iter().any(|m| m == "busy-model"));
    assert!(stack.breaker("p/busy-model").is_none());
}

#[tokio::test]
async fn a_full_route_of_busy_models_refuses_a_new_one_and_says_why() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::Hang)
        .max_logged_attempts(16)
        .start()
        .await
        .unwrap();
    let stack = stack(&upstream);
    let names = random_names(MAX_MODELS_PER_ROUTE, 11);
    let mut calls = Vec::new();
    for name in &names {
        let stack = stack.clone();
        let name = name.clone();
        calls.push(tokio::spawn(async move { ask(&stack, &name).await }));
    }
    upstream.wait_for_attempts(MAX_MODELS_PER_ROUTE).await;
    let err = ask(&stack, "gpt-4o").await.unwrap_err();
    let full = err
        .downcast_ref::<TooManyModels>()
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(full.limit(), MAX_MODELS_PER_ROUTE);
    assert!(err.to_string().contains("in flight"), "{err}");
    for call in calls {
        call.abort();
    }
}

/// A request whose body carries `body`.
fn request(body: &'static str) -> http::Request<Full<Bytes>> {
    http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn reason(err: &tower_llm::core::BoxError) -> &InvalidReason {
    err.downcast_ref::<InvalidRequest>()
        .unwrap_or_else(|| panic!("{err}"))
        .reason()
}

#[tokio::test]
async fn a_model_read_by_the_caller_routes_without_a_second_parse_and_is_checked_the_same() {
    let upstream = healthy_mock().await;
    let stack = stack(&upstream);
    // The body has no model: `call` reads it and refuses.
    const NO_MODEL: &str = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let err = stack.clone().oneshot(request(NO_MODEL)).await.unwrap_err();
    assert!(matches!(reason(&err), InvalidReason::NoModel), "{err}");
    // `call_with_model` routes by the model given and does not parse the body for it (a caller
    // must pass the body's own; a different one here shows which is used).
    const BODY_MODEL: &str =
        r#"{"model":"body-model","messages":[{"role":"user","content":"hi"}]}"#;
    let res = stack
        .call_with_model("given-model", request(BODY_MODEL))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    assert_eq!(upstream.attempt_count(), 1);
    assert!(
        stack.breaker("p/given-model").is_some(),
        "routed by the given model"
    );
    assert!(stack.breaker("p/body-model").is_none());

    // The same checks as `call`: an empty model, an invalid name, a body over the limit.
    let err = stack
        .call_with_model("", request(NO_MODEL))
        .await
        .unwrap_err();
    assert!(matches!(reason(&err), InvalidReason::NoModel), "{err}");
    let err = stack
        .call_with_model("bad\nname", request(NO_MODEL))
        .await
        .unwrap_err();
    assert!(matches!(reason(&err), InvalidReason::ModelName(_)), "{err}");
    let big = "x".repeat(tower_llm::core::buffer::DEFAULT_REQUEST_BODY_LIMIT + 1);
    let req = http::Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(big)))
        .unwrap();
    let err = stack.call_with_model("m", req).await.unwrap_err();
    assert!(matches!(reason(&err), InvalidReason::TooLarge(_)), "{err}");
    // Nothing of those reached the upstream.
    assert_eq!(upstream.attempt_count(), 1);
}

#[tokio::test]
async fn a_body_in_memory_routes_by_the_given_model_with_the_same_checks() {
    let upstream = healthy_mock().await;
    let stack = stack(&upstream);
    let request = |body: &'static str| {
        http::Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Bytes::from_static(body.as_bytes()))
            .unwrap()
    };
    const NO_MODEL: &str = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    const BODY_MODEL: &str =
        r#"{"model":"body-model","messages":[{"role":"user","content":"hi"}]}"#;
    // Routed by the model given; the body goes upstream as it is.
    let res = stack
        .call_buffered("given-model", request(BODY_MODEL))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.into_body().collect().await.unwrap().to_bytes();
    assert!(!text.is_empty());
    assert_eq!(upstream.attempt_count(), 1);
    assert!(stack.breaker("p/given-model").is_some());
    assert!(stack.breaker("p/body-model").is_none());

    // A future dropped before its first poll sends nothing.
    drop(stack.call_buffered("given-model", request(BODY_MODEL)));
    assert_eq!(upstream.attempt_count(), 1);

    // The same refusals as `call_with_model`, from the future, before anything is sent.
    let err = stack
        .call_buffered("", request(NO_MODEL))
        .await
        .unwrap_err();
    assert!(matches!(reason(&err), InvalidReason::NoModel), "{err}");
    let err = stack
        .call_buffered("bad\nname", request(NO_MODEL))
        .await
        .unwrap_err();
    assert!(matches!(reason(&err), InvalidReason::ModelName(_)), "{err}");
    let big = "x".repeat(tower_llm::core::buffer::DEFAULT_REQUEST_BODY_LIMIT + 1);
    let req = http::Request::post("/v1/chat/completions")
        .body(Bytes::from(big))
        .unwrap();
    let err = stack.call_buffered("m", req).await.unwrap_err();
    assert!(matches!(reason(&err), InvalidReason::TooLarge(_)), "{err}");
    // A body exactly at the limit is not refused for its size (the upstream refuses it as
    // JSON: what matters is that it was sent).
    let at_limit = "x".repeat(tower_llm::core::buffer::DEFAULT_REQUEST_BODY_LIMIT);
    let req = http::Request::post("/v1/chat/completions")
        .body(Bytes::from(at_limit))
        .unwrap();
    let _ = stack.call_buffered("m", req).await;
    assert_eq!(upstream.attempt_count(), 2);
}
