//! Every row of the taxonomy, through `InspectErrorBodyLayer` + `HttpClassifier`: a service
//! answers with a provider's status, headers and body; the classifier must say the right kind and
//! delay, and the body must still reach the caller whole.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_core::inspect::DEFAULT_ERROR_BODY_LIMIT;
use tower_llm_core::{
    Classification, Classify, ErrorKind, Failure, HttpClassifier, InspectErrorBodyLayer, Origin,
    ProviderError,
};

struct Case {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn case(status: u16, body: &str) -> Case {
    Case {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Serve `case` through `InspectErrorBodyLayer`, classify the response, and check the body
/// arrives unchanged.
async fn classify_with(classifier: &HttpClassifier, case: Case) -> Classification {
    let Case {
        status,
        headers,
        body,
    } = case;
    let expected_body = body.clone();
    let upstream = service_fn(move |_req: http::Request<()>| {
        let mut res = Response::builder().status(status);
        for (name, value) in &headers {
            res = res.header(*name, value.as_str());
        }
        let res = res.body(Full::new(Bytes::from(body.clone()))).unwrap();
        async move { Ok::<_, std::convert::Infallible>(res) }
    });
    let svc = ServiceBuilder::new()
        .layer(InspectErrorBodyLayer::new())
        .service(upstream);
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    let verdict = classifier.classify_response(&res);
    let received = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        received,
        expected_body.as_bytes(),
        "body passes through whole"
    );
    verdict
}

async fn classify(case: Case) -> Classification {
    classify_with(&HttpClassifier::default(), case).await
}

async fn failure(case: Case) -> Failure {
    let status = case.status;
    match classify(case).await {
        Classification::Failure(f) => {
            assert_eq!(f.origin, Origin::Upstream);
            f
        }
        Classification::Success => panic!("{status} classified as success"),
    }
}

async fn assert_kind(case: Case, kind: ErrorKind) {
    let status = case.status;
    let body = case.body.clone();
    assert_eq!(failure(case).await.kind, kind, "{status} {body}");
}

fn openai(ty: &str, code: &str, message: &str) -> String {
    serde_json::json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
        .to_string()
}

fn anthropic(ty: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "error": {"type": ty, "message": message}}).to_string()
}

fn gemini(code: u16, status: &str, message: &str, details: serde_json::Value) -> String {
    serde_json::json!({"error": {"code": code, "message": message, "status": status, "details": details}})
        .to_string()
}

#[tokio::test]
async fn successes() {
    for status in [200, 201, 204, 301, 304] {
        assert!(classify(case(status, "{}")).await.is_success(), "{status}");
    }
    // A 2xx body is not read: its content does not matter here.
    assert!(classify(case(200, &openai("server_error", "x", "y")))
        .await
        .is_success());
}

#[tokio::test]
async fn rate_limited() {
    let f = failure(case(429, "").header("retry-after", "2")).await;
    assert_eq!(
        (f.kind, f.retry_after),
        (ErrorKind::RateLimited, Some(Duration::from_secs(2)))
    );

    let f = failure(
        case(429, "")
            .header("retry-after-ms", "1500")
            .header("retry-after", "2"),
    )
    .await;
    assert_eq!(f.retry_after, Some(Duration::from_millis(1500)));

    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let f = failure(case(429, "").header("retry-after", date)).await;
    let after = f.retry_after.unwrap();
    assert!(
        after > Duration::from_secs(110) && after <= Duration::from_secs(120),
        "{after:?}"
    );

    // OpenAI: code rate_limit_exceeded and the reset headers.
    let f = failure(
        case(
            429,
            &openai(
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for gpt-4o.",
            ),
        )
        .header("x-ratelimit-remaining-requests", "0")
        .header("x-ratelimit-reset-requests", "6m0s")
        .header("x-ratelimit-reset-tokens", "12ms"),
    )
    .await;
    assert_eq!(
        (f.kind, f.retry_after),
        (ErrorKind::RateLimited, Some(Duration::from_secs(360)))
    );

    // Anthropic: RFC 3339 resets.
    let reset =
        humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(30)).to_string();
    let f = failure(
        case(
            429,
            &anthropic(
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            ),
        )
        .header("anthropic-ratelimit-tokens-reset", reset),
    )
    .await;
    assert_eq!(f.kind, ErrorKind::RateLimited);
    let after = f.retry_after.unwrap();
    assert!(
        after > Duration::from_secs(25) && after <= Duration::from_secs(30),
        "{after:?}"
    );

    // Gemini: RetryInfo in the body, no headers.
    let f = failure(case(
        429,
        &gemini(
            429,
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted",
            serde_json::json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"}]),
        ),
    ))
    .await;
    assert_eq!(
        (f.kind, f.retry_after),
        (ErrorKind::RateLimited, Some(Duration::from_secs(13)))
    );

    // Groq: "Please try again in 7.66s." in the message.
    let f = failure(case(
        429,
        &openai("tokens", "rate_limit_exceeded", "Rate limit reached for model `llama-3.1-70b` on tokens per minute (TPM): Limit 6000, Used 5996, Requested 100. Please try again in 7.66s. Visit https://console.groq.com/docs/rate-limits"),
    ))
    .await;
    assert_eq!(
        (f.kind, f.retry_after),
        (ErrorKind::RateLimited, Some(Duration::from_millis(7660)))
    );

    // A header wins over the body.
    let f = failure(
        case(
            429,
            &openai(
                "tokens",
                "rate_limit_exceeded",
                "Please try again in 7.66s.",
            ),
        )
        .header("retry-after", "1"),
    )
    .await;
    assert_eq!(f.retry_after, Some(Duration::from_secs(1)));

    // Bare 429 with no delay anywhere.
    let f = failure(case(429, "Too Many Requests")).await;
    assert_eq!((f.kind, f.retry_after), (ErrorKind::RateLimited, None));

    // OpenRouter.
    assert_kind(
        case(
            429,
            r#"{"error":{"code":429,"message":"Rate limit exceeded: free-models-per-min."}}"#,
        ),
        ErrorKind::RateLimited,
    )
    .await;
    // A 503 whose body says it is a rate limit.
    assert_kind(
        case(503, &openai("requests", "rate_limit_exceeded", "slow down")),
        ErrorKind::RateLimited,
    )
    .await;
}

#[tokio::test]
async fn quota_exhausted() {
    let f = failure(
        case(
            429,
            &openai(
                "insufficient_quota",
                "insufficient_quota",
                "You exceeded your current quota, please check your plan and billing details.",
            ),
        )
        .header("x-ratelimit-reset-requests", "1s"),
    )
    .await;
    assert_eq!(
        (f.kind, f.retry_after),
        (ErrorKind::QuotaExhausted, Some(Duration::from_secs(1)))
    );
    assert_kind(
        case(402, r#"{"error":{"code":402,"message":"Insufficient credits. Add more using https://openrouter.ai/credits"}}"#),
        ErrorKind::QuotaExhausted,
    )
    .await;
    assert_kind(case(402, ""), ErrorKind::QuotaExhausted).await;
    assert_kind(
        case(
            400,
            &anthropic(
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API.",
            ),
        ),
        ErrorKind::QuotaExhausted,
    )
    .await;
    assert_kind(
        case(
            429,
            &gemini(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota.",
                serde_json::json!([{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]),
            ),
        ),
        ErrorKind::QuotaExhausted,
    )
    .await;
}

#[tokio::test]
async fn overloaded() {
    let f = failure(case(503, "").header("retry-after", "5")).await;
    assert_eq!(
        (f.kind, f.retry_after),
        (ErrorKind::Overloaded, Some(Duration::from_secs(5)))
    );
    assert_kind(
        case(529, &anthropic("overloaded_error", "Overloaded")),
        ErrorKind::Overloaded,
    )
    .await;
    assert_kind(
        case(
            498,
            r#"{"error":{"message":"Flex tier capacity exceeded","type":"capacity_exceeded"}}"#,
        ),
        ErrorKind::Overloaded,
    )
    .await;
    assert_kind(
        case(
            503,
            &gemini(
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
                serde_json::json!([]),
            ),
        ),
        ErrorKind::Overloaded,
    )
    .await;
    assert_kind(
        case(
            503,
            &openai("server_error", "", "The engine is currently overloaded"),
        ),
        ErrorKind::Overloaded,
    )
    .await;
    // A 500 whose body says overloaded.
    assert_kind(
        case(500, &anthropic("overloaded_error", "Overloaded")),
        ErrorKind::Overloaded,
    )
    .await;
    // A 429 whose body says overloaded.
    assert_kind(
        case(429, &anthropic("overloaded_error", "Overloaded")),
        ErrorKind::Overloaded,
    )
    .await;
}

#[tokio::test]
async fn server_error() {
    for status in [500, 502, 504, 505, 599] {
        assert_kind(case(status, "<html>oops</html>"), ErrorKind::ServerError).await;
    }
    assert_kind(
        case(500, &openai("server_error", "", "The server had an error")),
        ErrorKind::ServerError,
    )
    .await;
    assert_kind(
        case(500, &anthropic("api_error", "Internal server error")),
        ErrorKind::ServerError,
    )
    .await;
    assert_kind(
        case(504, &anthropic("timeout_error", "Request timed out")),
        ErrorKind::ServerError,
    )
    .await;
    assert_kind(
        case(
            500,
            &gemini(
                500,
                "INTERNAL",
                "An internal error has occurred.",
                serde_json::json!([]),
            ),
        ),
        ErrorKind::ServerError,
    )
    .await;
    // A body never turns a 5xx into a client error.
    assert_kind(
        case(
            500,
            &openai(
                "invalid_request_error",
                "context_length_exceeded",
                "maximum context length",
            ),
        ),
        ErrorKind::ServerError,
    )
    .await;
    let f = failure(case(502, "").header("retry-after", "3")).await;
    assert_eq!(f.retry_after, Some(Duration::from_secs(3)));
}

#[tokio::test]
async fn timeout() {
    let f = failure(
        case(408, r#"{"error":{"code":408,"message":"Timed out"}}"#).header("retry-after", "3"),
    )
    .await;
    // No server delay on a timeout.
    assert_eq!((f.kind, f.retry_after), (ErrorKind::Timeout, None));
}

#[tokio::test]
async fn auth() {
    assert_kind(
        case(
            401,
            &openai(
                "invalid_request_error",
                "invalid_api_key",
                "Incorrect API key provided",
            ),
        ),
        ErrorKind::Auth,
    )
    .await;
    assert_kind(
        case(401, &anthropic("authentication_error", "invalid x-api-key")),
        ErrorKind::Auth,
    )
    .await;
    assert_kind(
        case(403, &anthropic("permission_error", "no access")),
        ErrorKind::Auth,
    )
    .await;
    assert_kind(
        case(
            403,
            &gemini(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers.",
                serde_json::json!([]),
            ),
        ),
        ErrorKind::Auth,
    )
    .await;
    // 404: the model does not exist on this provider (or not for this key): fail over.
    assert_kind(
        case(
            404,
            &openai(
                "invalid_request_error",
                "model_not_found",
                "The model `gpt-9` does not exist or you do not have access to it.",
            ),
        ),
        ErrorKind::Auth,
    )
    .await;
    assert_kind(
        case(404, &anthropic("not_found_error", "model: claude-9")),
        ErrorKind::Auth,
    )
    .await;
    assert_kind(case(404, ""), ErrorKind::Auth).await;
    // Gemini says an invalid key with a 400.
    assert_kind(
        case(
            400,
            &gemini(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                serde_json::json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}])),
        ),
        ErrorKind::Auth,
    )
    .await;
    let f = failure(case(401, "").header("retry-after", "3")).await;
    assert_eq!(f.retry_after, None);
}

#[tokio::test]
async fn context_length() {
    let cases = [
        case(400, &openai("invalid_request_error", "context_length_exceeded", "This model's maximum context length is 128000 tokens.")),
        case(400, &anthropic("invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum")),
        case(400, &gemini(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).", serde_json::json!([]))),
        case(400, &openai("invalid_request_error", "context_length_exceeded", "Please reduce the length of the messages or completion.")),
        case(400, r#"{"error":{"code":400,"message":"Provider returned error","metadata":{"raw":"{\"error\":{\"message\":\"too many tokens\",\"code\":\"context_length_exceeded\"}}"}}}"#),
        case(400, r#"{"object":"error","message":"This model's maximum context length is 4096 tokens.","type":"BadRequestError","param":null,"code":400}"#),
        case(413, &anthropic("request_too_large", "Request exceeds the maximum allowed number of bytes.")),
        case(413, &openai("tokens", "rate_limit_exceeded", "Request too large for model `llama3-8b-8192` on tokens per minute (TPM): Limit 6000, Requested 8000, please reduce your message size and try again.")),
        case(413, "Payload Too Large"),
        case(429, &openai("tokens", "rate_limit_exceeded", "Request too large for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Requested 36000. The input or output tokens must be reduced in order to run successfully.")),
    ];
    for c in cases {
        assert_kind(c, ErrorKind::ContextLength).await;
    }
    let f = failure(
        case(
            400,
            &openai(
                "invalid_request_error",
                "context_length_exceeded",
                "too long",
            ),
        )
        .header("retry-after", "3"),
    )
    .await;
    assert_eq!(f.retry_after, None);
}

#[tokio::test]
async fn content_policy() {
    assert_kind(
        case(
            400,
            &openai(
                "invalid_request_error",
                "content_policy_violation",
                "Your request was rejected as a result of our safety system.",
            ),
        ),
        ErrorKind::ContentPolicy,
    )
    .await;
    assert_kind(
        case(400, &openai("invalid_request_error", "content_filter", "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.")),
        ErrorKind::ContentPolicy,
    )
    .await;
    // OpenRouter moderation: a 403 with the flagged reasons.
    assert_kind(
        case(403, r#"{"error":{"code":403,"message":"Your input was flagged","metadata":{"reasons":["violence"],"flagged_input":"...","provider_name":"OpenAI","model_slug":"openai/gpt-4o"}}}"#),
        ErrorKind::ContentPolicy,
    )
    .await;
}

#[tokio::test]
async fn bad_request() {
    assert_kind(
        case(
            400,
            &openai(
                "invalid_request_error",
                "",
                "'messages' is a required property",
            ),
        ),
        ErrorKind::BadRequest,
    )
    .await;
    assert_kind(
        case(
            400,
            &anthropic("invalid_request_error", "max_tokens: Field required"),
        ),
        ErrorKind::BadRequest,
    )
    .await;
    assert_kind(
        case(
            400,
            &gemini(
                400,
                "INVALID_ARGUMENT",
                "Invalid JSON payload received.",
                serde_json::json!([]),
            ),
        ),
        ErrorKind::BadRequest,
    )
    .await;
    for status in [405, 409, 415, 422, 499] {
        assert_kind(case(status, "nope"), ErrorKind::BadRequest).await;
    }
}

#[tokio::test]
async fn unknown() {
    assert_kind(case(999, ""), ErrorKind::Unknown).await;
    assert_kind(
        case(600, &openai("server_error", "", "odd")),
        ErrorKind::Unknown,
    )
    .await;
}

#[tokio::test]
async fn transport_timeout_and_invalid_response_come_from_errors() {
    // These rows have no status: the classifier's error side decides them.
    let classifier = HttpClassifier::default();
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert_eq!(
        Classify::<Response<()>>::classify_error(&classifier, &refused).kind,
        ErrorKind::Transport
    );
    let timed_out = tower_llm_core::AttemptTimeout::new(Duration::from_secs(30));
    assert_eq!(
        Classify::<Response<()>>::classify_error(&classifier, &timed_out).kind,
        ErrorKind::Timeout
    );
    let broken = tower_llm_core::sse::SseError::EventTooLarge { limit: 10 };
    assert_eq!(
        Classify::<Response<()>>::classify_error(&classifier, &broken).kind,
        ErrorKind::InvalidResponse
    );
}

#[tokio::test]
async fn overrides_take_precedence() {
    let classifier = HttpClassifier::default()
        .with_status(StatusCode::NOT_FOUND, ErrorKind::BadRequest)
        .with_status(StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Overloaded)
        .with_success(StatusCode::CONFLICT);
    let f = classify_with(
        &classifier,
        case(
            404,
            &openai("invalid_request_error", "model_not_found", "no"),
        ),
    )
    .await;
    assert_eq!(f.kind(), Some(ErrorKind::BadRequest));
    let f = classify_with(&classifier, case(500, "").header("retry-after", "4")).await;
    assert_eq!(
        f,
        Classification::Failure(
            Failure::new(ErrorKind::Overloaded).with_retry_after(Some(Duration::from_secs(4)))
        )
    );
    assert!(classify_with(&classifier, case(409, "")).await.is_success());
    // Overriding the same status twice keeps the last row.
    let classifier = classifier.with_status(StatusCode::CONFLICT, ErrorKind::Unknown);
    assert_eq!(
        classify_with(&classifier, case(409, "")).await.kind(),
        Some(ErrorKind::Unknown)
    );
}

#[tokio::test]
async fn the_extension_is_left_for_every_layer_above() {
    let upstream = service_fn(|_req: http::Request<()>| async {
        let body = openai(
            "insufficient_quota",
            "insufficient_quota",
            "You exceeded your current quota",
        );
        Ok::<_, std::convert::Infallible>(
            Response::builder()
                .status(429)
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
    });
    let res = ServiceBuilder::new()
        .layer(InspectErrorBodyLayer::new())
        .service(upstream)
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    let found = res.extensions().get::<ProviderError>().unwrap();
    assert_eq!(found.kind, Some(ErrorKind::QuotaExhausted));
    assert_eq!(found.code.as_deref(), Some("insufficient_quota"));
    assert_eq!(
        found.message.as_deref(),
        Some("You exceeded your current quota")
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_passed_on_whole_but_not_parsed() {
    let mut body = openai("insufficient_quota", "insufficient_quota", "quota").into_bytes();
    body.extend(std::iter::repeat_n(b' ', 100));
    let expected = Bytes::from(body.clone());
    let upstream = service_fn(move |_req: http::Request<()>| {
        // Two frames, no size hint: the limit is hit while reading.
        let frames = vec![
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(
                body[..20].to_vec(),
            ))),
            Ok(http_body::Frame::data(Bytes::from(body[20..].to_vec()))),
        ];
        async move {
            let body = StreamBody::new(futures_util::stream::iter(frames));
            Ok::<_, std::convert::Infallible>(Response::builder().status(429).body(body).unwrap())
        }
    });
    assert!(expected.len() > 64 && expected.len() < DEFAULT_ERROR_BODY_LIMIT);
    let res = ServiceBuilder::new()
        .layer(InspectErrorBodyLayer::with_limit(64))
        .service(upstream)
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    assert!(res.extensions().get::<ProviderError>().is_none());
    assert_eq!(
        HttpClassifier::default().classify_response(&res).kind(),
        Some(ErrorKind::RateLimited)
    );
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        expected
    );
}
