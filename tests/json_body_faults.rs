//! A non-stream answer whose body stalls or is cut after its `200` headers: the target's stream
//! guard reads it whole under the `[stream]` limits, so the attempt fails (`timeout` /
//! `transport`) before anything reached the caller and the chain fails over to the secondary.
//! Before, a stalled body hung the request and a cut one reached the caller as a broken `200`.
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
