//! Mid-stream failover through the facade's `Stack`, over loopback against chaos mocks: a
//! stream cut or stalled after its first event is finished on the secondary, in the same
//! response, and the caller reads the whole answer once, one `[DONE]`, no error event.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_llm::core::ErrorKind;
use tower_llm::StackConfig;
use tower_llm_chaos::{Answer, FaultProfile, MockUpstream, Prefill, CANONICAL_ANSWER};

mod two_providers;

use two_providers::{config_text, mock, TestStack};

const PRIMARY: &str = "primary/gpt-4o";
const SECONDARY: &str = "secondary/gpt-4o";

fn stack(primary: &MockUpstream, secondary: &MockUpstream, extra: &str) -> TestStack {
    let config = StackConfig::from_toml_str(&config_text(extra)).expect("config");
    two_providers::stack(&config, primary, secondary)
}

/// What a raw SSE reader makes of a streamed answer.
#[derive(Debug, Default)]
struct Read {
    /// The text of every content delta, in order.
    text: String,
    /// The `id` of every chunk.
    ids: Vec<String>,
    dones: usize,
    errors: Vec<serde_json::Value>,
    comments: Vec<String>,
    finish_reasons: Vec<String>,
    usage: usize,
    /// Events after `[DONE]`.
    after_done: usize,
}

fn read_sse(body: &[u8]) -> Read {
    let text = std::str::from_utf8(body).expect("utf-8");
    let mut read = Read::default();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        for line in block.lines() {
            if let Some(comment) = line.strip_prefix(':') {
                read.comments.push(comment.trim().to_owned());
                continue;
            }
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let data = data.trim_start();
            if read.dones > 0 {
                read.after_done += 1;
            }
            if data == "[DONE]" {
                read.dones += 1;
                continue;
            }
            let json: serde_json::Value = serde_json::from_str(data).expect("JSON event");
            if json.get("error").is_some() {
                read.errors.push(json);
                continue;
            }
            if let Some(id) = json["id"].as_str() {
                read.ids.push(id.to_owned());
            }
            if json.get("usage").is_some_and(|u| !u.is_null()) {
                read.usage += 1;
            }
            if let Some(choice) = json["choices"].get(0) {
                if let Some(content) = choice["delta"]["content"].as_str() {
                    read.text.push_str(content);
                }
                if let Some(reason) = choice["finish_reason"].as_str() {
                    read.finish_reasons.push(reason.to_owned());
                }
            }
        }
    }
    read
}

async fn stream(stack: &TestStack, body: &'static str) -> (String, Read) {
    let req = http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let res = stack.clone().oneshot(req).await.expect("an answer");
    assert_eq!(res.status(), 200);
    let target = res.headers()["x-llm-target"].to_str().unwrap().to_owned();
    let body = res
        .into_body()
        .collect()
        .await
        .expect("a whole body")
        .to_bytes();
    (target, read_sse(&body))
}

const STREAM: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// The whole answer, once, one `[DONE]` last, no error event, every chunk with the first
/// stream's id, and the comment naming the secondary.
fn assert_whole(read: &Read) {
    assert_eq!(read.text, CANONICAL_ANSWER, "{read:?}");
    assert_eq!(read.dones, 1, "{read:?}");
    assert_eq!(read.after_done, 0, "{read:?}");
    assert!(read.errors.is_empty(), "{read:?}");
    assert_eq!(read.finish_reasons, ["stop"], "{read:?}");
    assert_eq!(read.usage, 1, "{read:?}");
    assert!(read.ids.iter().all(|id| id == &read.ids[0]), "{read:?}");
    assert_eq!(
        read.comments,
        [format!("resumed on {SECONDARY}")],
        "{read:?}"
    );
}

fn last_error(stack: &TestStack, target: &str) -> Option<ErrorKind> {
    stack
        .health()
        .target(target)
        .and_then(|t| t.last_error.as_ref().map(|e| e.kind))
}

/// Cut after the first, a middle and the last content event: replayed on the secondary, the
/// text the caller already has swallowed, the rest handed on.
#[tokio::test(start_paused = true)]
async fn a_cut_stream_is_replayed_and_spliced_on_the_secondary() {
    let tokens = tower_llm_chaos::canonical_tokens().len();
    for n in [1, 2, tokens / 2, tokens - 1, tokens] {
        let primary = mock(&format!("cut-after:{n}")).await;
        let secondary = mock("healthy").await;
        let stack = stack(&primary, &secondary, "");
        let (target, read) = stream(&stack, STREAM).await;
        assert_eq!(target, PRIMARY, "committed to the primary first (n = {n})");
        assert_whole(&read);
        assert_eq!(read.ids[0], "chatcmpl-mock-1");
        assert_eq!(primary.attempt_count(), 1);
        assert_eq!(secondary.attempt_count(), 1);
        // A replay: the secondary got the caller's request as it was.
        let sent: serde_json::Value =
            serde_json::from_slice(&secondary.attempts()[0].body).unwrap();
        assert_eq!(sent["messages"].as_array().unwrap().len(), 1, "n = {n}");
        // The primary's breaker counted the cut; the secondary's saw none.
        let health = stack.health();
        let breaker = |name: &str| health.target(name).unwrap().breaker.clone().unwrap();
        assert_eq!(breaker(PRIMARY).failures, 1, "n = {n}");
        assert_eq!(breaker(SECONDARY).failures, 0, "n = {n}");
        // Health: the cut is the primary's failure; the continuation the secondary's success.
        assert_eq!(
            last_error(&stack, PRIMARY),
            Some(ErrorKind::InvalidResponse),
            "n = {n}"
        );
        let secondary_health = stack.health();
        let secondary_health = secondary_health.target(SECONDARY).unwrap();
        assert_eq!(secondary_health.last_error, None);
        assert_eq!(secondary_health.failures, 0, "{secondary_health:?}");
        assert!(secondary_health.requests >= 1, "{secondary_health:?}");
    }
}

/// A stall after N events: the guard's idle limit ends it, and the secondary finishes it.
#[tokio::test(start_paused = true)]
async fn a_stalled_stream_is_resumed_after_the_idle_limit() {
    for n in [1, 7, 25] {
        let primary = mock(&format!("stall-after:{n}")).await;
        let secondary = mock("healthy").await;
        let stack = stack(&primary, &secondary, "[stream]\nidle_ms = 1000\n");
        let start = tokio::time::Instant::now();
        let (_, read) = stream(&stack, STREAM).await;
        assert_whole(&read);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_millis(1200),
            "{took:?}"
        );
        assert_eq!(
            last_error(&stack, PRIMARY),
            Some(ErrorKind::Timeout),
            "n = {n}"
        );
    }
}

/// `resume = "off"`: the error event, as before.
#[tokio::test(start_paused = true)]
async fn resume_off_ends_with_the_error_event() {
    let primary = mock("cut-after:3").await;
    let secondary = mock("healthy").await;
    let routes_off = config_text("").replace("\n]\n", "\n]\nresume = \"off\"\n");
    let config = StackConfig::from_toml_str(&routes_off).expect("config");
    assert_eq!(
        config.routes[0].resume,
        tower_llm::config::ResumeSetting::Off
    );
    let stack = two_providers::stack(&config, &primary, &secondary);
    let (_, read) = stream(&stack, STREAM).await;
    assert_eq!(read.errors.len(), 1, "{read:?}");
    assert_eq!(read.dones, 0);
    assert!(CANONICAL_ANSWER.starts_with(&read.text) && read.text.len() < CANONICAL_ANSWER.len());
    assert_eq!(secondary.attempt_count(), 0);
}

/// What a continuation cannot reproduce is not resumed: `n = 2`.
#[tokio::test(start_paused = true)]
async fn several_choices_are_not_resumed() {
    let primary = mock("cut-after:3").await;
    let secondary = mock("healthy").await;
    let stack = stack(&primary, &secondary, "");
    let (_, read) = stream(
        &stack,
        r#"{"model":"gpt-4o","stream":true,"n":2,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(read.errors.len(), 1, "{read:?}");
    assert_eq!(read.dones, 0);
    assert_eq!(secondary.attempt_count(), 0);
}

/// When every other target fails too, the caller gets the first failure's error event, saying
/// why the resume failed, and never the secondary's own error.
#[tokio::test(start_paused = true)]
async fn a_failed_resume_ends_with_the_first_failure_and_why() {
    let primary = mock("cut-after:3").await;
    let secondary = mock("status:503").await;
    let stack = stack(&primary, &secondary, "");
    let (_, read) = stream(&stack, STREAM).await;
    assert_eq!(read.dones, 0, "{read:?}");
    assert_eq!(read.errors.len(), 1, "{read:?}");
    let error = &read.errors[0]["error"];
    assert_eq!(error["code"], "invalid_response", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("not resumed: every remaining target failed"),
        "{message}"
    );
    assert_eq!(read.text, CANONICAL_ANSWER[..read.text.len()]);
    assert!(secondary.attempt_count() >= 1);
}

/// Past the resume budget (counted from the request's start) nothing is resumed.
#[tokio::test(start_paused = true)]
async fn no_resume_past_the_budget() {
    let primary = mock("stall-after:2").await;
    let secondary = mock("healthy").await;
    let stack = stack(
        &primary,
        &secondary,
        "[stream]\nidle_ms = 2000\nresume_budget_ms = 1000\n",
    );
    let (_, read) = stream(&stack, STREAM).await;
    assert_eq!(read.errors.len(), 1, "{read:?}");
    let message = read.errors[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("resume budget"), "{message}");
    assert_eq!(secondary.attempt_count(), 0);
}

/// Dropping the body while a resume is in flight releases everything (no task left behind).
#[tokio::test(start_paused = true)]
async fn dropping_the_body_mid_resume_cancels_it() {
    let primary = mock("cut-after:2").await;
    let secondary = mock("slow-first-token:60s").await;
    let stack = stack(&primary, &secondary, "");
    let req = http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(STREAM.as_bytes())))
        .unwrap();
    let res = stack.clone().oneshot(req).await.expect("an answer");
    let mut body = res.into_body();
    // Read the two events, then wait for the resume to reach the secondary.
    let mut got = Vec::new();
    while got.len() < 2 {
        let frame = body.frame().await.unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            got.push(data);
        }
    }
    let pending = tokio::spawn(async move {
        let _ = body.frame().await;
    });
    secondary.wait_for_attempts(1).await;
    pending.abort();
    let _ = pending.await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = stack.health();
    let secondary_health = health.target(SECONDARY).unwrap();
    assert_eq!(secondary_health.in_flight, 0, "{secondary_health:?}");
}

/// A mock with `profile` that handles a final assistant message as `prefill` says, answering
/// `answer`.
async fn mock_with(profile: &str, prefill: Prefill, answer: Answer) -> MockUpstream {
    MockUpstream::builder()
        .profile(FaultProfile::parse(profile).expect("profile"))
        .prefill(prefill)
        .answer(answer)
        .max_logged_attempts(1000)
        .start()
        .await
        .expect("mock upstream")
}

/// The two providers' config with the secondary declaring prefill support (vLLM's flags).
fn prefill_config(extra: &str) -> String {
    config_text(extra).replacen(
        "name = \"secondary\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
        "name = \"secondary\"\nbase_url = \"http://127.0.0.1:9/v1\"\nsupports_prefill = true\n\
         prefill_params = { continue_final_message = true, add_generation_prompt = false }\n",
        1,
    )
}

/// The last message of a request the mock received.
fn last_message(mock: &MockUpstream, index: usize) -> serde_json::Value {
    let body: serde_json::Value =
        serde_json::from_slice(&mock.attempts()[index].body).expect("JSON request");
    body["messages"].as_array().unwrap().last().unwrap().clone()
}

/// A secondary that continues prefills gets the text already sent as a final assistant message
/// (and its server flags), and only the rest of the answer comes back.
#[tokio::test(start_paused = true)]
async fn a_cut_stream_is_continued_by_prefill_where_declared() {
    let tokens = tower_llm_chaos::canonical_tokens();
    for n in [1, tokens.len() / 2, tokens.len() - 1, tokens.len()] {
        let primary = mock(&format!("cut-after:{n}")).await;
        let secondary = mock_with("healthy", Prefill::Continue, Answer::Canonical).await;
        let config = StackConfig::from_toml_str(&prefill_config("")).expect("config");
        let stack = two_providers::stack(&config, &primary, &secondary);
        let (_, read) = stream(&stack, STREAM).await;
        assert_whole(&read);
        let sent: String = tokens[..n].concat();
        assert_eq!(
            last_message(&secondary, 0),
            serde_json::json!({ "role": "assistant", "content": sent }),
            "n = {n}"
        );
        let body: serde_json::Value =
            serde_json::from_slice(&secondary.attempts()[0].body).unwrap();
        assert_eq!(body["continue_final_message"], true);
        assert_eq!(body["add_generation_prompt"], false);
        assert_eq!(body["stream"], true);
    }
}

/// A secondary that did not declare prefill support never receives one, even where the route
/// asks for prefill: it is replayed (and this mock would have refused a prefill).
#[tokio::test(start_paused = true)]
async fn a_prefill_is_never_sent_to_a_target_that_did_not_declare_it() {
    let primary = mock("cut-after:5").await;
    let secondary = mock_with("healthy", Prefill::Reject, Answer::Canonical).await;
    let stack = stack(&primary, &secondary, "");
    let (_, read) = stream(&stack, STREAM).await;
    assert_whole(&read);
    for i in 0..secondary.attempt_count() {
        assert_eq!(last_message(&secondary, i)["role"], "user");
    }
}

/// A declared target that refuses the prefill (a 400) is passed over; its refusal is never what
/// the caller sees: here a third provider finishes the answer by replay.
#[tokio::test(start_paused = true)]
async fn a_refused_prefill_moves_on_and_is_never_the_error_shown() {
    let primary = mock("cut-after:4").await;
    let secondary = mock_with("healthy", Prefill::Reject, Answer::Canonical).await;
    let third = mock("healthy").await;
    let text = prefill_config("").replacen(
        "[[routes]]",
        "[[providers]]\nname = \"third\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n[[routes]]",
        1,
    );
    let text = text.replacen(
        "  { provider = \"secondary\", attempt_timeout_ms = 2000 },\n",
        "  { provider = \"secondary\", attempt_timeout_ms = 2000 },\n  { provider = \"third\", attempt_timeout_ms = 2000 },\n",
        1,
    );
    let config = StackConfig::from_toml_str(&text).expect("config");
    let stack = tower_llm::StackBuilder::new(&config)
        .provider_url("primary", primary.base_url())
        .provider_url("secondary", secondary.base_url())
        .provider_url("third", third.base_url())
        .build_http::<Full<Bytes>>()
        .expect("stack");
    let (_, read) = stream(&stack, STREAM).await;
    assert_eq!(read.text, CANONICAL_ANSWER, "{read:?}");
    assert_eq!(read.dones, 1);
    assert!(read.errors.is_empty(), "{read:?}");
    assert_eq!(read.comments, ["resumed on third/gpt-4o"]);
    assert_eq!(secondary.attempts()[0].status, Some(400));
    assert_eq!(last_message(&third, 0)["role"], "user", "the third replays");
    // The refusal does not bench the secondary: the request was at fault, not the target.
    assert_eq!(last_error(&stack, SECONDARY), None);

    // With no third provider, the caller gets the cut (not the 400), and why the resume failed.
    let primary = mock("cut-after:4").await;
    let secondary = mock_with("healthy", Prefill::Reject, Answer::Canonical).await;
    let config = StackConfig::from_toml_str(&prefill_config("")).expect("config");
    let stack = two_providers::stack(&config, &primary, &secondary);
    let (_, read) = stream(&stack, STREAM).await;
    assert_eq!(read.errors.len(), 1, "{read:?}");
    let error = &read.errors[0]["error"];
    assert_eq!(error["code"], "invalid_response", "{error}");
    assert!(
        !error.to_string().contains("prefill is not supported"),
        "{error}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("not resumed"),
        "{error}"
    );
}

/// A secondary that answers differently cannot be spliced: the error event, saying why, and
/// not one character of the other answer.
#[tokio::test(start_paused = true)]
async fn a_replay_that_answers_differently_ends_with_the_error_event() {
    let tokens = tower_llm_chaos::canonical_tokens();
    // Cut after 5 tokens: the alternate answer shares the first 3, then differs.
    let primary = mock("cut-after:5").await;
    let secondary = mock_with("healthy", Prefill::Ignore, Answer::Alternate).await;
    let chain = stack(&primary, &secondary, "");
    let (_, read) = stream(&chain, STREAM).await;
    assert_eq!(read.text, tokens[..5].concat(), "only the primary's text");
    assert_eq!(read.dones, 0);
    assert_eq!(read.errors.len(), 1, "{read:?}");
    let message = read.errors[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.ends_with(
            "; not resumed: the replay answered differently \
             (after 17 of the 24 characters already sent)"
        ),
        "{message}"
    );
    // Cut after 2 tokens: the alternate answer reproduces them, then goes its own way; the
    // splice cannot know it differs from what the primary would have said, so it hands on
    // the alternate rest (a replay is only as faithful as the secondary is deterministic).
    let primary = mock("cut-after:2").await;
    let secondary = mock_with("healthy", Prefill::Ignore, Answer::Alternate).await;
    let chain = stack(&primary, &secondary, "");
    let (_, read) = stream(&chain, STREAM).await;
    assert_eq!(read.text, tower_llm_chaos::ALTERNATE_ANSWER);
    assert_eq!(read.dones, 1);
}
