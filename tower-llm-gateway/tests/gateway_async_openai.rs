//! A client no one here wrote: the `async-openai` crate drives the gateway, a JSON and a
//! streaming chat completion, while the primary provider fails over to the secondary.

mod gateway_support;

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use async_openai::Client;
use futures_util::StreamExt;
use tower_llm_chaos::CANONICAL_ANSWER;

use gateway_support::{config, start};

fn request(stream: bool) -> CreateChatCompletionRequest {
    let message = ChatCompletionRequestUserMessageArgs::default()
        .content("Say hello.")
        .build()
        .expect("valid message");
    let mut args = CreateChatCompletionRequestArgs::default();
    args.model("gpt-4o-mini").messages([message.into()]);
    if stream {
        args.stream(true);
    }
    args.build().expect("valid request")
}

#[tokio::test]
async fn async_openai_gets_json_and_streamed_answers_while_the_primary_fails_over() {
    std::env::set_var("TOWER_LLM_TEST_ASYNC_OPENAI_KEYS", "sk-gateway-client");
    let toml = config("status:503", "healthy", "[retry]\nenabled = false\n").replace(
        "demo_requests_per_sec = 0",
        "demo_requests_per_sec = 0\napi_keys_env = \"TOWER_LLM_TEST_ASYNC_OPENAI_KEYS\"",
    );
    let gw = start(&toml).await;
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(gw.base_url())
            .with_api_key("sk-gateway-client"),
    );

    // JSON.
    let response = client
        .chat()
        .create(request(false))
        .await
        .expect("an answer");
    assert_eq!(
        response.model, "backup-model",
        "the model of the target that answered"
    );
    let content = response.choices[0]
        .message
        .content
        .clone()
        .unwrap_or_default();
    assert_eq!(content, CANONICAL_ANSWER);
    assert!(response.usage.expect("usage").total_tokens > 0);

    // Streamed.
    let mut stream = client
        .chat()
        .create_stream(request(true))
        .await
        .expect("a stream");
    let mut streamed = String::new();
    let mut models = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("a well-formed chunk");
        models.push(chunk.model.clone());
        for choice in &chunk.choices {
            if let Some(delta) = &choice.delta.content {
                streamed.push_str(delta);
            }
        }
    }
    assert_eq!(streamed, CANONICAL_ANSWER);
    assert!(models.iter().all(|m| m == "backup-model"), "{models:?}");

    // The primary failed the first request and was benched (cooldown), so the stream skipped it;
    // the secondary answered both.
    let primary = gw.mock("primary").unwrap().attempts();
    assert_eq!(primary.len(), 1);
    assert!(primary.iter().all(|a| a.status == Some(503)));
    assert_eq!(gw.mock("secondary").unwrap().attempt_count(), 2);
    // The client's key stayed at the gateway.
    assert!(primary
        .iter()
        .all(|a| !a.headers.contains_key("authorization")));

    // A wrong key is refused in the OpenAI shape async-openai understands.
    let intruder = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(gw.base_url())
            .with_api_key("sk-wrong"),
    );
    let err = intruder.chat().create(request(false)).await.unwrap_err();
    assert!(err.to_string().contains("invalid API key"), "{err}");
    gw.shutdown().await.unwrap();
}
