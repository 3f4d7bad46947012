//! A non-stream answer whose body stalls or is cut after its `200` headers: the target's stream
//! guard reads it whole under the `[stream]` limits, so the attempt fails (`timeout` /
//! `transport`) before anything reached the caller and the chain fails over to the secondary.
//! Before, a stalled body hung the request and a cut one reached the caller as a broken `200`.
//! The same for a `200` whose body is garbled JSON (`invalid_response`) or a provider's error
//! object (the kind it names): before, both reached the caller as a `200`.
//! Through the facade's public API over loopback (chaos mocks, paused clock).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_llm::core::ErrorKind;
use tower_llm::StackConfig;
use tower_llm_chaos::MockUpstream;

mod two_providers;

use two_providers::{config_text, mock, TestStack};

const PRIMARY: &str = "primary/gpt-4o";
const SECONDARY: &str = "secondary/gpt-4o";

fn stack(primary: &MockUpstream, secondary: &MockUpstream, extra: &str) -> TestStack {
    let config = StackConfig::from_toml_str(&config_text(extra)).expect("config");
    two_providers::stack(&config, primary, secondary)
}

/// A non-stream completion: the answering target and the whole body, parsed.
async fn ask(stack: &TestStack) -> (String, serde_json::Value) {
    let req = http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let res = stack.clone().oneshot(req).await.expect("an answer");
    assert_eq!(res.status(), 200);
    let target = res
        .headers()
        .get("x-llm-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = res.into_body().collect().await.expect("a whole body");
    let json = serde_json::from_slice(&body.to_bytes()).expect("a whole JSON answer");
    (target, json)
}

fn primary_error(stack: &TestStack) -> ErrorKind {
    let health = stack.health();
    health
        .target(PRIMARY)
        .and_then(|p| p.last_error.as_ref().map(|e| e.kind))
        .expect("the primary's failure is recorded")
}

/// Under the chain, the attempt deadline (2 s) is shorter than the guard's idle limit (30 s):
/// the stalled attempt is cut at it, recorded as a timeout, and the secondary answers.
#[tokio::test(start_paused = true)]
async fn a_stalled_json_body_times_out_at_the_attempt_deadline_and_fails_over() {
    let primary = mock("stall-after:1").await;
    let secondary = mock("healthy").await;
    let stack = stack(&primary, &secondary, "");
    let start = Instant::now();
    let (target, json) = ask(&stack).await;
    let took = start.elapsed();
    assert_eq!(target, SECONDARY);
    assert_eq!(json["object"], "chat.completion");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(2100),
        "{took:?}"
    );
    assert_eq!(primary.attempt_count(), 1);
    assert_eq!(secondary.attempt_count(), 1);
    assert_eq!(primary_error(&stack), ErrorKind::Timeout);
}

/// With `[stream] idle_ms` shorter than the attempt deadline, the guard cuts it first.
#[tokio::test(start_paused = true)]
async fn a_stalled_json_body_times_out_at_the_idle_limit_and_fails_over() {
    let primary = mock("stall-after:1").await;
    let secondary = mock("healthy").await;
    let stack = stack(&primary, &secondary, "[stream]\nidle_ms = 500\n");
    let start = Instant::now();
    let (target, json) = ask(&stack).await;
    let took = start.elapsed();
    assert_eq!(target, SECONDARY);
    assert_eq!(json["object"], "chat.completion");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(600),
        "{took:?}"
    );
    assert_eq!(primary_error(&stack), ErrorKind::Timeout);
}

#[tokio::test(start_paused = true)]
async fn a_cut_json_body_is_a_transport_failure_and_fails_over() {
    let primary = mock("cut-after:1").await;
    let secondary = mock("healthy").await;
    let stack = stack(&primary, &secondary, "");
    let (target, json) = ask(&stack).await;
    assert_eq!(target, SECONDARY);
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(primary.attempt_count(), 1);
    assert_eq!(primary_error(&stack), ErrorKind::Transport);
}

/// `max_buffered_body_bytes` reaches the guard: at 0 non-stream answers are not read, and the
/// cut body reaches the caller as before (a body error after a `200`).
#[tokio::test(start_paused = true)]
async fn a_zero_max_buffered_body_bytes_turns_the_read_off() {
    let primary = mock("cut-after:1").await;
    let secondary = mock("healthy").await;
    let stack = stack(
        &primary,
        &secondary,
        "[stream]\nmax_buffered_body_bytes = 0\n",
    );
    let req = http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let res = stack.clone().oneshot(req).await.expect("the primary's 200");
    assert_eq!(res.headers()["x-llm-target"], PRIMARY);
    assert!(res.into_body().collect().await.is_err());
}

/// Issue 15 finding (a): `malformed-event` on a non-stream request answers `200` with half a
/// completion. The guard's whole-body read finds it is not JSON: the attempt fails with
/// `invalid_response` and the secondary answers (before, the client got the broken `200`).
#[tokio::test(start_paused = true)]
async fn a_garbled_json_body_is_an_invalid_response_and_fails_over() {
    let primary = mock("malformed-event:1").await;
    let secondary = mock("healthy").await;
    let stack = stack(&primary, &secondary, "");
    let (target, json) = ask(&stack).await;
    assert_eq!(target, SECONDARY);
    assert_eq!(json["object"], "chat.completion");
    assert!(
        json["choices"][0]["message"]["content"].is_string(),
        "{json}"
    );
    assert!(primary.attempt_count() >= 1);
    assert_eq!(secondary.attempt_count(), 1);
    assert_eq!(primary_error(&stack), ErrorKind::InvalidResponse);
}

/// Issue 15 finding (a): `first-event-error` on a non-stream request answers `200` with an
/// OpenAI error object (`server_error`). The attempt fails with the kind it names, the
/// provider's message is kept, and the secondary answers (before: a `200` error object).
#[tokio::test(start_paused = true)]
async fn an_error_object_with_a_200_fails_with_its_kind_and_fails_over() {
    let primary = mock("first-event-error").await;
    let secondary = mock("healthy").await;
    let stack = stack(&primary, &secondary, "");
    let (target, json) = ask(&stack).await;
    assert_eq!(target, SECONDARY);
    assert_eq!(json["object"], "chat.completion");
    assert!(json.get("error").is_none(), "{json}");
    assert_eq!(secondary.attempt_count(), 1);
    assert_eq!(primary_error(&stack), ErrorKind::ServerError);
}

/// With both targets answering `200` error objects, the caller gets an error (not a `200`) that
/// carries the provider's message.
#[tokio::test(start_paused = true)]
async fn error_objects_from_every_target_are_an_error_with_the_provider_s_message() {
    let primary = mock("first-event-error").await;
    let secondary = mock("first-event-error").await;
    let stack = stack(&primary, &secondary, "");
    let req = http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let err = stack
        .clone()
        .oneshot(req)
        .await
        .expect_err("no target gave an answer");
    let mut chain = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
    while let Some(e) = next {
        chain.push(e.to_string());
        next = e.source();
    }
    assert!(
        chain
            .iter()
            .any(|m| m.contains(tower_llm_chaos::canonical::ERROR_MESSAGE)),
        "{chain:?}"
    );
    assert_eq!(primary_error(&stack), ErrorKind::ServerError);
}
