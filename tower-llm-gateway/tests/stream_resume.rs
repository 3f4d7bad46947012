//! Mid-stream failover through the gateway, over loopback: the primary's stream is cut after
//! its first events and the secondary finishes it in the same response. Clients no one here
//! wrote (`async-openai`) and a raw SSE reader get the whole answer once, one `[DONE]`, no error
//! event; a secondary that continues prefills gets one, the others a replay.

mod gateway_support;

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
};
use async_openai::Client;
use futures_util::StreamExt;
use tower_llm_chaos::{FaultProfile, MockUpstream, Prefill, CANONICAL_ANSWER};

use gateway_support::{chat_request, config, get, send, start};

/// A raw read of an SSE answer: the content, the `[DONE]`s, error events, comments and ids.
fn read_sse(text: &str) -> (String, usize, usize, Vec<String>, Vec<String>) {
    let (mut content, mut dones, mut errors) = (String::new(), 0, 0);
    let (mut comments, mut ids) = (Vec::new(), Vec::new());
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            comments.push(comment.trim().to_owned());
        } else if let Some(data) = line.strip_prefix("data: ") {
            if data == "[DONE]" {
                dones += 1;
                continue;
            }
            let json: serde_json::Value = serde_json::from_str(data).expect("JSON event");
            if json.get("error").is_some() {
                errors += 1;
                continue;
            }
            ids.push(json["id"].as_str().unwrap_or_default().to_owned());
            if let Some(delta) = json["choices"][0]["delta"]["content"].as_str() {
                content.push_str(delta);
            }
        }
    }
    (content, dones, errors, comments, ids)
}

#[tokio::test]
async fn async_openai_reads_a_whole_answer_across_a_cut() {
    for n in [1, 12, 25] {
        let toml = config(
            &format!("cut-after:{n}"),
            "healthy",
            "[retry]\nenabled = false\n",
        );
        let gw = start(&toml).await;
        let client = Client::with_config(
            OpenAIConfig::new()
                .with_api_base(gw.base_url())
                .with_api_key("unused"),
        );
        let message = ChatCompletionRequestUserMessageArgs::default()
            .content("Say hello.")
            .build()
            .unwrap();
        let request = CreateChatCompletionRequestArgs::default()
            .model("gpt-4o-mini")
            .messages([message.into()])
            .stream(true)
            .build()
            .unwrap();
        let mut stream = client
            .chat()
            .create_stream(request)
            .await
            .expect("a stream");
        let mut text = String::new();
        let mut ids = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap_or_else(|e| panic!("n = {n}: a broken stream: {e}"));
            ids.push(chunk.id.clone());
            for choice in &chunk.choices {
                if let Some(delta) = &choice.delta.content {
                    text.push_str(delta);
                }
            }
        }
        assert_eq!(text, CANONICAL_ANSWER, "n = {n}");
        assert!(ids.iter().all(|id| id == &ids[0]), "one id: {ids:?}");
        gw.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn a_raw_reader_sees_one_done_and_the_resume_comment() {
    let toml = config("stall-after:6", "healthy", "[stream]\nidle_ms = 300\n");
    let gw = start(&toml).await;
    let reply = send(&gw, chat_request(&gw, "gpt-4o-mini", true, &[])).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-llm-target"), Some("primary/gpt-4o-mini"));
    let (content, dones, errors, comments, ids) = read_sse(reply.text());
    assert_eq!(content, CANONICAL_ANSWER);
    assert_eq!((dones, errors), (1, 0), "{}", reply.text());
    assert!(reply.text().ends_with("data: [DONE]\n\n"));
    assert_eq!(comments, ["resumed on secondary/backup-model"]);
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");

    // The resume is counted, by target and how (the recorder is the process's: other tests in
    // this file resume on the same target concurrently, so at least this one).
    let metrics = get(&gw, "/metrics").await;
    let line = metrics
        .text()
        .lines()
        .find(|l| l.starts_with("tower_llm_stream_resumed_total{") && l.contains("how=\"replay\""))
        .unwrap_or_else(|| panic!("no resume counter in {}", metrics.text()))
        .to_owned();
    assert!(line.contains("how=\"replay\""), "{line}");
    assert!(line.contains("target=\"secondary/backup-model\""), "{line}");
    let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1, "{line}");
    gw.shutdown().await.expect("clean shutdown");
}

/// The secondary is a vLLM-like server (a mock that continues prefills) declared with
/// `supports_prefill`: it receives the text already sent as a final assistant message.
#[tokio::test]
async fn a_provider_that_continues_prefills_gets_one() {
    let vllm = MockUpstream::builder()
        .profile(FaultProfile::parse("healthy").unwrap())
        .prefill(Prefill::Continue)
        .start()
        .await
        .expect("mock");
    let toml = config("cut-after:9", "healthy", "").replacen(
        "name = \"secondary\"\nmock = \"healthy\"",
        &format!(
            "name = \"secondary\"\nbase_url = \"{}\"\nsupports_prefill = true\n\
             prefill_params = {{ continue_final_message = true, add_generation_prompt = false }}",
            vllm.base_url()
        ),
        1,
    );
    // A real (non-mock) provider: the gateway wants client keys, or this loopback-only opt-out.
    let toml = toml.replacen(
        "demo_requests_per_sec = 0",
        "demo_requests_per_sec = 0\nallow_unauthenticated = true",
        1,
    );
    let gw = start(&toml).await;
    let reply = send(&gw, chat_request(&gw, "gpt-4o-mini", true, &[])).await;
    let (content, dones, errors, comments, _) = read_sse(reply.text());
    assert_eq!(content, CANONICAL_ANSWER, "{}", reply.text());
    assert_eq!((dones, errors), (1, 0));
    assert_eq!(comments, ["resumed on secondary/backup-model"]);
    let attempts = vllm.attempts();
    assert_eq!(attempts.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&attempts[0].body).unwrap();
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    let sent: String = tower_llm_chaos::canonical_tokens()[..9].concat();
    assert_eq!(
        last,
        serde_json::json!({ "role": "assistant", "content": sent })
    );
    assert_eq!(body["continue_final_message"], true);
    assert_eq!(body["model"], "backup-model");
    gw.shutdown().await.expect("clean shutdown");
}
