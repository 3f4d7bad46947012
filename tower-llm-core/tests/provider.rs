//! Provider error bodies, as each provider sends them, through `provider::parse_error_body`.

use std::time::Duration;

use http::StatusCode;
use proptest::prelude::*;
use tower_llm_core::provider::{self, MAX_MESSAGE_LEN};
use tower_llm_core::{ErrorKind, ProviderError};

fn parse(status: u16, body: &str) -> ProviderError {
    provider::parse_error_body(StatusCode::from_u16(status).unwrap(), body.as_bytes())
        .unwrap_or_else(|| panic!("not recognised: {body}"))
}

/// (status, body, kind the body adds, code)
fn check(status: u16, body: &str, kind: Option<ErrorKind>, code: Option<&str>) -> ProviderError {
    let found = parse(status, body);
    assert_eq!(found.kind, kind, "kind of {status} {body}");
    assert_eq!(found.code.as_deref(), code, "code of {status} {body}");
    found
}

#[test]
fn openai_shapes() {
    let quota = check(
        429,
        r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
        Some(ErrorKind::QuotaExhausted),
        Some("insufficient_quota"),
    );
    assert!(quota
        .message
        .unwrap()
        .starts_with("You exceeded your current quota"));

    let limited = check(
        429,
        r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        None,
        Some("rate_limit_exceeded"),
    );
    assert_eq!(limited.retry_after, Some(Duration::from_millis(120)));

    // One request over the per-minute token limit can never succeed on this target.
    check(
        429,
        r#"{"error":{"message":"Request too large for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Requested 36000. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
        Some(ErrorKind::ContextLength),
        Some("rate_limit_exceeded"),
    );

    check(
        400,
        r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        Some(ErrorKind::ContextLength),
        Some("context_length_exceeded"),
    );
    check(
        400,
        r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#,
        Some(ErrorKind::ContentPolicy),
        Some("content_policy_violation"),
    );
    check(
        401,
        r#"{"error":{"message":"Incorrect API key provided: sk-abc***. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        None,
        Some("invalid_api_key"),
    );
    check(
        404,
        r#"{"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
        None,
        Some("model_not_found"),
    );
    check(
        500,
        r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#,
        None,
        Some("server_error"),
    );
    // "server_error" on a 503 does not turn the overload into a plain server error.
    check(
        503,
        r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error","param":null,"code":null}}"#,
        None,
        Some("server_error"),
    );
    // A plain 400 the body says nothing more about.
    check(
        400,
        r#"{"error":{"message":"'messages' is a required property","type":"invalid_request_error","param":null,"code":null}}"#,
        None,
        Some("invalid_request_error"),
    );
}

#[test]
fn anthropic_shapes() {
    let body = |ty: &str, message: &str| {
        format!(
            r#"{{"type":"error","error":{{"type":"{ty}","message":"{message}"}},"request_id":"req_1"}}"#
        )
    };
    check(
        400,
        &body(
            "invalid_request_error",
            "prompt is too long: 250000 tokens > 200000 maximum",
        ),
        Some(ErrorKind::ContextLength),
        Some("invalid_request_error"),
    );
    check(
        400,
        &body(
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
        ),
        Some(ErrorKind::QuotaExhausted),
        Some("invalid_request_error"),
    );
    check(
        429,
        &body(
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit (https://docs.anthropic.com/en/api/rate-limits); see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later.",
        ),
        None,
        Some("rate_limit_error"),
    );
    check(
        529,
        &body("overloaded_error", "Overloaded"),
        None,
        Some("overloaded_error"),
    );
    // Anthropic has sent overloaded_error with a 500 too: the body sharpens it.
    check(
        500,
        &body("overloaded_error", "Overloaded"),
        Some(ErrorKind::Overloaded),
        Some("overloaded_error"),
    );
    check(
        500,
        &body("api_error", "Internal server error"),
        None,
        Some("api_error"),
    );
    check(
        504,
        &body("timeout_error", "Request timed out"),
        None,
        Some("timeout_error"),
    );
    check(
        401,
        &body("authentication_error", "invalid x-api-key"),
        None,
        Some("authentication_error"),
    );
    check(
        403,
        &body(
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        None,
        Some("permission_error"),
    );
    check(
        404,
        &body("not_found_error", "model: claude-9"),
        None,
        Some("not_found_error"),
    );
    check(
        413,
        &body(
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        None,
        Some("request_too_large"),
    );
    check(
        402,
        &body("billing_error", "Payment required"),
        None,
        Some("billing_error"),
    );
    // request_too_large sharpens a plain 400.
    check(
        400,
        &body(
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        Some(ErrorKind::ContextLength),
        Some("request_too_large"),
    );
}

#[test]
fn gemini_shapes() {
    let limited = check(
        429,
        r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.0-flash"},"quotaValue":"15"}]},{"@type":"type.googleapis.com/google.rpc.Help","links":[{"description":"Learn more","url":"https://ai.google.dev/gemini-api/docs/rate-limits"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"13s"}]}}"#,
        None,
        Some("RESOURCE_EXHAUSTED"),
    );
    assert_eq!(limited.retry_after, Some(Duration::from_secs(13)));

    // A per-day quota will not come back in seconds.
    let daily = check(
        429,
        r#"{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"0.5s"}]}}"#,
        Some(ErrorKind::QuotaExhausted),
        Some("RESOURCE_EXHAUSTED"),
    );
    assert_eq!(daily.retry_after, Some(Duration::from_millis(500)));

    check(
        400,
        r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
        Some(ErrorKind::ContextLength),
        Some("INVALID_ARGUMENT"),
    );
    check(
        400,
        r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}]}}"#,
        Some(ErrorKind::Auth),
        Some("INVALID_ARGUMENT"),
    );
    check(
        400,
        r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#,
        Some(ErrorKind::Auth),
        Some("FAILED_PRECONDITION"),
    );
    check(
        503,
        r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
        None,
        Some("UNAVAILABLE"),
    );
    check(
        403,
        r#"{"error":{"code":403,"message":"Method doesn't allow unregistered callers.","status":"PERMISSION_DENIED"}}"#,
        None,
        Some("PERMISSION_DENIED"),
    );
    check(
        401,
        r#"{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}"#,
        None,
        Some("UNAUTHENTICATED"),
    );
    check(
        500,
        r#"{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}"#,
        None,
        Some("INTERNAL"),
    );
    check(
        504,
        r#"{"error":{"code":504,"message":"Deadline exceeded.","status":"DEADLINE_EXCEEDED"}}"#,
        None,
        Some("DEADLINE_EXCEEDED"),
    );
    // The streaming endpoint wraps the error in an array.
    let wrapped = check(
        429,
        r#"[{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2s"}]}}]"#,
        None,
        Some("RESOURCE_EXHAUSTED"),
    );
    assert_eq!(wrapped.retry_after, Some(Duration::from_secs(2)));
}

#[test]
fn groq_shapes() {
    let limited = check(
        429,
        r#"{"error":{"message":"Rate limit reached for model `llama-3.1-70b-versatile` in organization `org_01` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Used 5996, Requested 100. Please try again in 7.66s. Visit https://console.groq.com/docs/rate-limits for more information.","type":"tokens","code":"rate_limit_exceeded"}}"#,
        None,
        Some("rate_limit_exceeded"),
    );
    assert_eq!(limited.retry_after, Some(Duration::from_millis(7660)));
    let per_day = check(
        429,
        r#"{"error":{"message":"Rate limit reached for model `llama3-70b-8192` on requests per day (RPD): Limit 14400, Used 14400, Requested 1. Please try again in 1m26.4s.","type":"requests","code":"rate_limit_exceeded"}}"#,
        None,
        Some("rate_limit_exceeded"),
    );
    assert_eq!(per_day.retry_after, Some(Duration::from_millis(86_400)));
    check(
        400,
        r#"{"error":{"message":"Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        Some(ErrorKind::ContextLength),
        Some("context_length_exceeded"),
    );
    check(
        413,
        r#"{"error":{"message":"Request too large for model `llama3-8b-8192` in organization `org_01` on tokens per minute (TPM): Limit 6000, Requested 8000, please reduce your message size and try again.","type":"tokens","code":"rate_limit_exceeded"}}"#,
        None,
        Some("rate_limit_exceeded"),
    );
    check(
        404,
        r#"{"error":{"message":"The model `llama-9` does not exist or you do not have access to it.","type":"invalid_request_error","code":"model_not_found"}}"#,
        None,
        Some("model_not_found"),
    );
}

#[test]
fn openrouter_shapes() {
    check(
        402,
        r#"{"error":{"code":402,"message":"Insufficient credits. Add more using https://openrouter.ai/credits"}}"#,
        None,
        Some("402"),
    );
    let flagged = check(
        403,
        r#"{"error":{"code":403,"message":"openai/gpt-4o requires moderation on OpenRouter. Your input was flagged for \"violence\".","metadata":{"reasons":["violence"],"flagged_input":"...","provider_name":"OpenAI","model_slug":"openai/gpt-4o"}}}"#,
        Some(ErrorKind::ContentPolicy),
        Some("403"),
    );
    assert!(flagged.message.unwrap().contains("flagged"));
    // The upstream's error, relayed as a JSON string in metadata.raw.
    let relayed = check(
        400,
        r#"{"error":{"code":400,"message":"Provider returned error","metadata":{"raw":"{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"prompt is too long: 210000 tokens > 200000 maximum\"}}","provider_name":"Anthropic"}}}"#,
        Some(ErrorKind::ContextLength),
        Some("invalid_request_error"),
    );
    assert_eq!(relayed.message.as_deref(), Some("Provider returned error"));
    // metadata.raw as plain text.
    check(
        400,
        r#"{"error":{"code":400,"message":"Provider returned error","metadata":{"raw":"This model's maximum context length is 8192 tokens.","provider_name":"Together"}}}"#,
        Some(ErrorKind::ContextLength),
        Some("400"),
    );
    check(
        429,
        r#"{"error":{"code":429,"message":"Rate limit exceeded: free-models-per-min.","metadata":{"headers":{"X-RateLimit-Limit":"20","X-RateLimit-Remaining":"0"}}}}"#,
        None,
        Some("429"),
    );
    check(
        408,
        r#"{"error":{"code":408,"message":"Timed out"}}"#,
        None,
        Some("408"),
    );
    check(
        502,
        r#"{"error":{"code":502,"message":"Your chosen model is down or we received an invalid response from it"}}"#,
        None,
        Some("502"),
    );
}

#[test]
fn local_server_shapes() {
    // vLLM.
    check(
        400,
        r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#,
        Some(ErrorKind::ContextLength),
        Some("BadRequestError"),
    );
    // Ollama, llama.cpp.
    check(
        404,
        r#"{"error":"model \"llama9\" not found, try pulling it first"}"#,
        None,
        None,
    );
    check(
        400,
        r#"{"error":"the request exceeds the available context size, try increasing it (too many tokens)"}"#,
        Some(ErrorKind::ContextLength),
        None,
    );
    // FastAPI.
    check(422, r#"{"detail":"Unprocessable"}"#, None, None);
}

#[test]
fn message_phrases() {
    let cases = [
        ("maximum context length is 8192 tokens", ErrorKind::ContextLength),
        ("Prompt is too long", ErrorKind::ContextLength),
        ("context_length_exceeded", ErrorKind::ContextLength),
        ("Too many tokens in the request", ErrorKind::ContextLength),
        ("please reduce the length of the messages", ErrorKind::ContextLength),
        ("Your prompt violates our content policy", ErrorKind::ContentPolicy),
        ("The response was filtered due to the prompt triggering Azure OpenAI's content management policy.", ErrorKind::ContentPolicy),
        ("Input was flagged by moderation", ErrorKind::ContentPolicy),
        ("Request blocked by safety filters", ErrorKind::ContentPolicy),
        ("Insufficient credits", ErrorKind::QuotaExhausted),
        ("Rate limit exceeded", ErrorKind::RateLimited),
        ("Service overloaded", ErrorKind::Overloaded),
        ("Invalid API key", ErrorKind::Auth),
        ("model 'x' not found", ErrorKind::Auth),
    ];
    for (message, kind) in cases {
        assert_eq!(provider::kind_of_message(message), Some(kind), "{message}");
    }
    assert_eq!(
        provider::kind_of_message("Invalid value for 'temperature'"),
        None
    );
    assert_eq!(
        provider::kind_of_message("Invalid safety_settings value"),
        None
    );
}

#[test]
fn codes_are_case_insensitive() {
    assert_eq!(
        provider::kind_of_code("RESOURCE_EXHAUSTED"),
        Some(ErrorKind::RateLimited)
    );
    assert_eq!(
        provider::kind_of_code("Insufficient_Quota"),
        Some(ErrorKind::QuotaExhausted)
    );
    assert_eq!(provider::kind_of_code("invalid_request_error"), None);
    assert_eq!(provider::kind_of_code("INVALID_ARGUMENT"), None);
}

#[test]
fn openai_error_bodies_read_back() {
    for kind in ErrorKind::ALL {
        let body = tower_llm_core::openai::error_body(kind, "line one\nline \"two\"");
        assert!(!body.contains(&b'\n'), "one line");
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"]["message"], "line one\nline \"two\"");
        assert_eq!(
            value["error"]["type"],
            tower_llm_core::openai::error_type(kind)
        );
        assert_eq!(
            value["error"]["code"],
            tower_llm_core::openai::error_code(kind)
        );
        assert!(value["error"]["param"].is_null());
        let found = provider::parse_error_slice(&body).unwrap();
        assert_eq!(found.kind, Some(kind));
    }
}

#[test]
fn unrecognised_bodies() {
    for body in [
        &b""[..],
        b"   ",
        b"<html><body>502 Bad Gateway</body></html>",
        b"upstream connect error or disconnect/reset before headers",
        b"null",
        b"42",
        b"\"error\"",
        b"{}",
        b"{\"error\":null}",
        b"{\"error\":42}",
        b"{\"detail\":[{\"loc\":[\"body\"],\"msg\":\"field required\"}]}",
        b"[]",
        b"{\"error\":{\"message\":\"trunc",
        b"{\"error\":{\"message\":\"\xff\xfe\"}}",
        b"\xef\xbb\xbf{\"error\":\"bom\"}",
    ] {
        assert_eq!(
            provider::parse_error_body(StatusCode::BAD_REQUEST, body),
            None,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn an_error_object_without_message_is_still_recognised() {
    let found = parse(429, r#"{"error":{"type":"insufficient_quota"}}"#);
    assert_eq!(found.kind, Some(ErrorKind::QuotaExhausted));
    assert_eq!(found.message, None);
}

#[test]
fn messages_and_codes_are_bounded() {
    let long = "é".repeat(10_000);
    let body = format!(
        r#"{{"error":{{"message":"{long}","code":"{}"}}}}"#,
        "x".repeat(10_000)
    );
    let found = parse(400, &body);
    let message = found.message.unwrap();
    assert!(message.len() <= MAX_MESSAGE_LEN);
    assert!(message.len() > MAX_MESSAGE_LEN - 4);
    assert!(message.chars().all(|c| c == 'é'));
    assert!(found.code.unwrap().len() <= provider::MAX_CODE_LEN);
}

#[test]
fn deep_json_does_not_overflow_the_stack() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(
        provider::parse_error_body(StatusCode::BAD_REQUEST, deep.as_bytes()),
        None
    );
    let deep = format!(
        r#"{{"error":{{"message":"m","metadata":{}{}}}}}"#,
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    assert_eq!(
        provider::parse_error_body(StatusCode::BAD_REQUEST, deep.as_bytes()),
        None
    );
}

#[test]
fn body_retry_after_helper() {
    assert_eq!(
        provider::body_retry_after(br#"{"error":{"message":"Please try again in 2s."}}"#),
        Some(Duration::from_secs(2))
    );
    assert_eq!(provider::body_retry_after(b"nope"), None);
}

proptest! {
    // XorShift: the default ChaCha generator dominates run time in unoptimised test builds.
    #![proptest_config(ProptestConfig {
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(status in 400u16..600, bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let status = StatusCode::from_u16(status).unwrap();
        if let Some(found) = provider::parse_error_body(status, &bytes) {
            prop_assert!(found.message.map_or(0, |m| m.len()) <= MAX_MESSAGE_LEN);
        }
    }

    #[test]
    fn arbitrary_error_objects_never_panic(
        message in any::<String>(),
        code in any::<String>(),
        ty in any::<String>(),
        numeric in any::<i64>(),
        raw in any::<String>(),
    ) {
        let body = serde_json::json!({"error": {
            "message": message, "code": code, "type": ty, "status": numeric,
            "metadata": {"raw": raw, "reasons": [code]},
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": message}],
        }});
        let bytes = serde_json::to_vec(&body).unwrap();
        let found = provider::parse_error_body(StatusCode::BAD_REQUEST, &bytes);
        prop_assert!(found.is_some());
        let found = found.unwrap();
        prop_assert!(found.message.map_or(0, |m| m.len()) <= MAX_MESSAGE_LEN);
        prop_assert!(found.code.map_or(0, |c| c.len()) <= provider::MAX_CODE_LEN);
    }
}
