//! A library author's typed LLM client — `Service<ChatRequest, Response = ChatResponse, Error =
//! ChatError>`, no HTTP types in its interface — wrapped in tower-llm's circuit breaker, retry and
//! bulkhead.
//!
//! ```text
//! cargo run --example typed_client
//! ```
//!
//! The layers are generic over request and response types. All they need from a typed client is
//! a [`Classify`](tower_llm::core::Classify) implementation ([`chat::ChatClassifier`]) that says
//! which answers and which errors are failures, and of what
//! [`ErrorKind`](tower_llm::core::ErrorKind); retries copy the request with
//! [`CloneReplay`](tower_llm::retry::CloneReplay) and the bulkhead releases its permit when the
//! response is returned. The example runs offline against an embedded mock upstream
//! (`tower-llm-chaos`) scripted per model, and prints what each layer did.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_llm::breaker::{BreakerHandle, CircuitBreaker, CircuitBreakerLayer};
use tower_llm::bulkhead::{
    AllCalls, Bulkhead, BulkheadHandle, BulkheadLayer, ErrorsOnly, Global, NoTokenEstimate,
    ReleaseOnResponse,
};
use tower_llm::core::{
    BoxError, BreakerOpen, BulkheadFull, ConfigError, NoBudget, RetriesExhausted,
};
use tower_llm::retry::{Backoff, CloneReplay, Retry, RetryLayer};
use tower_llm::ServiceBuilderExt;
use tower_llm_chaos::{Fault, MockHandle, MockUpstream};

use chat::{ChatClassifier, ChatClient, ChatError, ChatRequest, ChatResponse};

/// What a library ships: typed requests and responses, a typed error, an HTTP-backed client,
/// and the classifier that explains its errors to tower-llm.
pub mod chat {
    use std::error::Error;
    use std::fmt;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, Limited};
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use serde::{Deserialize, Serialize};
    use tower::Service;
    use tower_llm::core::{
        classify_error, delay, BoxError, Classification, Classify, ErrorKind, Failure,
    };

    /// Longest response body the client reads (a chat answer is a few KiB).
    const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

    /// One message of a conversation.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Message {
        /// `system`, `user` or `assistant`.
        pub role: String,
        /// The text.
        pub content: String,
    }

    /// A chat completion request. `Clone` is all the retry layer needs to send it again.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    pub struct ChatRequest {
        /// The model to ask.
        pub model: String,
        /// The conversation so far.
        pub messages: Vec<Message>,
    }

    impl ChatRequest {
        /// A one-message conversation with `model`.
        pub fn user(model: impl Into<String>, prompt: impl Into<String>) -> Self {
            ChatRequest {
                model: model.into(),
                messages: vec![Message {
                    role: "user".into(),
                    content: prompt.into(),
                }],
            }
        }
    }

    /// Why the model stopped writing.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum FinishReason {
        /// The answer is complete.
        Stop,
        /// The token limit cut the answer.
        Length,
        /// The provider's content filter withheld (part of) the answer.
        ContentFilter,
        /// Anything else the provider said (empty when it said nothing).
        Other(String),
    }

    impl From<Option<String>> for FinishReason {
        fn from(reason: Option<String>) -> Self {
            match reason.as_deref() {
                Some("stop") => FinishReason::Stop,
                Some("length") => FinishReason::Length,
                Some("content_filter") => FinishReason::ContentFilter,
                Some(other) => FinishReason::Other(other.to_owned()),
                None => FinishReason::Other(String::new()),
            }
        }
    }

    /// A chat completion.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct ChatResponse {
        /// The model that answered.
        pub model: String,
        /// The answer's text.
        pub content: String,
        /// Why the answer ended.
        pub finish_reason: FinishReason,
        /// Tokens used (prompt and completion), when the provider said.
        pub total_tokens: Option<u64>,
    }

    /// Everything that can go wrong with one call.
    #[derive(Debug)]
    pub enum ChatError {
        /// 429: slow down, possibly for as long as the server said.
        RateLimited {
            /// The delay the server asked for.
            retry_after: Option<Duration>,
        },
        /// 503 / 529: the provider sheds load.
        Overloaded {
            /// The HTTP status.
            status: u16,
        },
        /// Another 5xx.
        Server {
            /// The HTTP status.
            status: u16,
        },
        /// 401 / 403: the key is wrong or lacks permission.
        Auth {
            /// The HTTP status.
            status: u16,
        },
        /// The conversation does not fit the model's context window.
        ContextLength,
        /// The provider refuses the content.
        ContentPolicy,
        /// Another 4xx: the request is wrong.
        BadRequest {
            /// The HTTP status.
            status: u16,
            /// The provider's error code, if any.
            code: Option<String>,
        },
        /// The request could not be encoded (nothing was sent).
        Encode(BoxError),
        /// A 2xx whose body is not a chat completion.
        InvalidResponse(String),
        /// The request never got an answer (connection refused or reset, ...).
        Transport(BoxError),
    }

    impl fmt::Display for ChatError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                ChatError::RateLimited {
                    retry_after: Some(after),
                } => write!(f, "rate limited; retry in {:.3}s", after.as_secs_f64()),
                ChatError::RateLimited { retry_after: None } => f.write_str("rate limited"),
                ChatError::Overloaded { status } => {
                    write!(f, "provider overloaded (HTTP {status})")
                }
                ChatError::Server { status } => write!(f, "provider error (HTTP {status})"),
                ChatError::Auth { status } => write!(f, "not authorized (HTTP {status})"),
                ChatError::ContextLength => {
                    f.write_str("the conversation is too long for the model")
                }
                ChatError::ContentPolicy => f.write_str("the provider refused the content"),
                ChatError::BadRequest { status, code } => {
                    write!(f, "bad request (HTTP {status}")?;
                    if let Some(code) = code {
                        write!(f, ", {code}")?;
                    }
                    f.write_str(")")
                }
                ChatError::Encode(e) => write!(f, "the request could not be encoded: {e}"),
                ChatError::InvalidResponse(why) => write!(f, "invalid response: {why}"),
                ChatError::Transport(e) => write!(f, "transport error: {e}"),
            }
        }
    }

    impl Error for ChatError {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            match self {
                ChatError::Transport(e) | ChatError::Encode(e) => Some(&**e),
                _ => None,
            }
        }
    }

    impl ChatError {
        /// The taxonomy row of this error, with the server's delay when it gave one.
        pub fn failure(&self) -> Failure {
            let kind = match self {
                ChatError::RateLimited { retry_after } => {
                    return Failure::new(ErrorKind::RateLimited).with_retry_after(*retry_after)
                }
                // hyper-util's errors say whether the connection was refused or timed out.
                ChatError::Transport(e) => return classify_error(&**e),
                ChatError::Overloaded { .. } => ErrorKind::Overloaded,
                ChatError::Server { .. } => ErrorKind::ServerError,
                ChatError::Auth { .. } => ErrorKind::Auth,
                ChatError::ContextLength => ErrorKind::ContextLength,
                ChatError::ContentPolicy => ErrorKind::ContentPolicy,
                ChatError::BadRequest { .. } | ChatError::Encode(_) => ErrorKind::BadRequest,
                ChatError::InvalidResponse(_) => ErrorKind::InvalidResponse,
            };
            Failure::new(kind)
        }
    }

    /// Tells tower-llm's layers what a [`ChatResponse`] or a [`ChatError`] means.
    ///
    /// - a response is a success, unless the content filter withheld the answer
    ///   (`ContentPolicy`: not retried, not counted by the breaker, returned as it is);
    /// - a [`ChatError`] anywhere in an error's `source()` chain (a retry layer wraps the last
    ///   error in `RetriesExhausted`) is classified by [`ChatError::failure`];
    /// - any other error (tower-llm's own rejections, timeouts) by core's
    ///   [`classify_error`].
    #[derive(Clone, Copy, Debug, Default)]
    pub struct ChatClassifier;

    impl Classify<ChatResponse> for ChatClassifier {
        fn classify_response(&self, res: &ChatResponse) -> Classification {
            match res.finish_reason {
                FinishReason::ContentFilter => {
                    Classification::Failure(Failure::new(ErrorKind::ContentPolicy))
                }
                _ => Classification::Success,
            }
        }

        fn classify_error(&self, err: &(dyn Error + 'static)) -> Failure {
            std::iter::successors(Some(err), |&e| e.source())
                .find_map(|e| e.downcast_ref::<ChatError>())
                .map_or_else(|| classify_error(err), ChatError::failure)
        }
    }

    /// An OpenAI-compatible chat client over plain HTTP (hyper-util), speaking JSON.
    #[derive(Clone, Debug)]
    pub struct ChatClient {
        http: Client<HttpConnector, Full<Bytes>>,
        url: Arc<http::Uri>,
    }

    impl ChatClient {
        /// A client for the API at `base_url` (`http://host:port/v1`).
        pub fn new(base_url: &str) -> Result<Self, http::uri::InvalidUri> {
            let url = format!("{}/chat/completions", base_url.trim_end_matches('/')).parse()?;
            Ok(ChatClient {
                http: Client::builder(TokioExecutor::new()).build_http(),
                url: Arc::new(url),
            })
        }
    }

    type CallFuture = Pin<Box<dyn Future<Output = Result<ChatResponse, ChatError>> + Send>>;

    impl Service<ChatRequest> for ChatClient {
        type Response = ChatResponse;
        type Error = ChatError;
        type Future = CallFuture;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ChatError>> {
            // hyper-util's pool connects on demand: the client is always ready.
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: ChatRequest) -> CallFuture {
            let http = self.http.clone();
            let url = Arc::clone(&self.url);
            Box::pin(async move {
                let body = serde_json::to_vec(&req).map_err(|e| ChatError::Encode(Box::new(e)))?;
                let request = http::Request::post(&*url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| ChatError::Encode(Box::new(e)))?;
                let response = http
                    .request(request)
                    .await
                    .map_err(|e| ChatError::Transport(Box::new(e)))?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map_err(ChatError::Transport)?
                    .to_bytes();
                if parts.status.is_success() {
                    parse_completion(&body)
                } else {
                    Err(error_from(parts.status, &parts.headers, &body))
                }
            })
        }
    }

    #[derive(Deserialize)]
    struct WireCompletion {
        model: String,
        choices: Vec<WireChoice>,
        usage: Option<WireUsage>,
    }

    #[derive(Deserialize)]
    struct WireChoice {
        message: WireMessage,
        finish_reason: Option<String>,
    }

    #[derive(Deserialize)]
    struct WireMessage {
        content: Option<String>,
    }

    #[derive(Deserialize)]
    struct WireUsage {
        total_tokens: u64,
    }

    #[derive(Deserialize)]
    struct WireError {
        error: WireErrorBody,
    }

    #[derive(Deserialize)]
    struct WireErrorBody {
        code: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
    }

    fn parse_completion(body: &[u8]) -> Result<ChatResponse, ChatError> {
        let wire: WireCompletion = serde_json::from_slice(body)
            .map_err(|e| ChatError::InvalidResponse(format!("not a chat completion: {e}")))?;
        let choice = wire
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ChatError::InvalidResponse("no choices".into()))?;
        Ok(ChatResponse {
            model: wire.model,
            content: choice.message.content.unwrap_or_default(),
            finish_reason: choice.finish_reason.into(),
            total_tokens: wire.usage.map(|u| u.total_tokens),
        })
    }

    fn error_from(status: http::StatusCode, headers: &http::HeaderMap, body: &[u8]) -> ChatError {
        let code = serde_json::from_slice::<WireError>(body)
            .ok()
            .and_then(|e| e.error.code.or(e.error.kind));
        let status = status.as_u16();
        match (status, code.as_deref()) {
            (400, Some("context_length_exceeded")) => ChatError::ContextLength,
            (400, Some("content_policy_violation")) => ChatError::ContentPolicy,
            (429, _) => ChatError::RateLimited {
                // `retry-after`, `retry-after-ms`, the rate-limit reset headers.
                retry_after: delay::server_delay(headers, SystemTime::now()),
            },
            (401 | 403, _) => ChatError::Auth { status },
            (503 | 529, _) => ChatError::Overloaded { status },
            (500..=599, _) => ChatError::Server { status },
            _ => ChatError::BadRequest { status, code },
        }
    }
}

/// How the typed client is protected.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Failed calls in a row that open the breaker.
    pub failures_to_open: u32,
    /// How long the breaker stays open before a probe.
    pub open_for: Duration,
    /// Attempts per call (the first included).
    pub max_attempts: u32,
    /// Base delay of the retries' exponential backoff.
    pub backoff: Duration,
    /// Longest wait for one attempt.
    pub attempt_timeout: Duration,
    /// Attempts in flight at once; one more is turned away at once.
    pub max_concurrent: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            failures_to_open: 3,
            open_for: Duration::from_millis(500),
            max_attempts: 3,
            backoff: Duration::from_millis(20),
            attempt_timeout: Duration::from_secs(5),
            max_concurrent: 2,
        }
    }
}

/// The typed client behind breaker → retry → bulkhead: a nameable type a library can store.
pub type ResilientChat<S> = CircuitBreaker<
    Retry<
        Bulkhead<S, Global, NoTokenEstimate, ErrorsOnly, ReleaseOnResponse, NoBudget>,
        ChatClassifier,
        CloneReplay,
    >,
    ChatClassifier,
    // Typed requests carry no attempt budget.
    NoBudget,
>;

/// Handles on the shared state of a [`ResilientChat`] (every clone of it shares them).
#[derive(Clone, Debug)]
pub struct Handles {
    /// The breaker.
    pub breaker: BreakerHandle,
    /// The bulkhead.
    pub bulkhead: BulkheadHandle<AllCalls>,
}

/// Wrap any typed chat service in breaker → retry → bulkhead.
///
/// The breaker is outermost: it sees one outcome per call, after the retries. The bulkhead is
/// innermost: it bounds attempts in flight, and a retry waiting for its backoff holds no permit.
pub fn resilient<S>(
    client: S,
    settings: &Settings,
) -> Result<(ResilientChat<S>, Handles), ConfigError>
where
    S: tower::Service<ChatRequest, Response = ChatResponse> + Clone,
    S::Error: Into<BoxError>,
{
    let breaker = CircuitBreakerLayer::builder()
        .name("typed-chat")
        .consecutive_failures(settings.failures_to_open)
        .open_duration(settings.open_for)
        .permitted_calls_in_half_open(1)
        .classifier(ChatClassifier)
        .read_budget(NoBudget)
        .build()?;
    let retry = RetryLayer::builder()
        .max_attempts(settings.max_attempts)
        .backoff(Backoff::exponential(settings.backoff))
        .attempt_timeout(settings.attempt_timeout)
        .classifier(ChatClassifier)
        .replay(CloneReplay)
        .seed(7)
        .build()?;
    let bulkhead = BulkheadLayer::builder()
        .name("typed-chat")
        .max_concurrent(settings.max_concurrent)
        .max_queued(0)
        .release_on_response()
        .read_budget(NoBudget)
        .classifier(ErrorsOnly) // not adaptive: no response needs judging
        .build()?
        .layer(client);
    let handles = Handles {
        breaker: breaker.handle(),
        bulkhead: bulkhead.handle(),
    };
    let svc = ServiceBuilder::new()
        .circuit_breaker(breaker)
        .retry_with(retry)
        .service(bulkhead);
    Ok((svc, handles))
}

/// Models the embedded upstream is scripted for.
pub mod models {
    /// Always answers.
    pub const HEALTHY: &str = "gpt-4o-mini";
    /// Overloaded (503) for its first [`FLAKY_FAILURES`] requests, then answers.
    pub const FLAKY: &str = "flaky-model";
    /// How many requests for [`FLAKY`] fail.
    pub const FLAKY_FAILURES: usize = 2;
    /// Always 429 with `retry-after-ms: 200`.
    pub const LIMITED: &str = "limited-model";
    /// Always 400 `context_length_exceeded`.
    pub const SMALL_CONTEXT: &str = "small-context-model";
    /// Answers after 300 ms.
    pub const SLOW: &str = "slow-model";
}

/// Start the embedded mock upstream, scripted per model (see [`models`]).
pub async fn start_upstream() -> std::io::Result<MockUpstream> {
    // The hook heals the flaky model once it has failed enough; it needs the running mock's
    // handle, which exists only after `start`.
    let mock: Arc<OnceLock<MockHandle>> = Arc::default();
    let flaky_seen = Arc::new(AtomicUsize::new(0));
    let hook_mock = Arc::clone(&mock);
    let upstream = MockUpstream::builder()
        .route(models::FLAKY, Fault::status(503))
        .route(models::LIMITED, Fault::status(429).retry_after_ms(200))
        .route(models::SMALL_CONTEXT, Fault::ContextLengthExceeded)
        .route(models::SLOW, Fault::Latency(Duration::from_millis(300)))
        .on_attempt(move |attempt| {
            if attempt.model == models::FLAKY
                && flaky_seen.fetch_add(1, Ordering::SeqCst) + 1 == models::FLAKY_FAILURES
            {
                if let Some(mock) = hook_mock.get() {
                    mock.route_model(models::FLAKY, Fault::Healthy);
                }
            }
        })
        .start()
        .await?;
    // Set once, right after start: no request has reached the mock yet.
    let _ = mock.set(upstream.handle());
    Ok(upstream)
}

/// What a call came to, in words.
fn outcome(result: &Result<ChatResponse, BoxError>) -> String {
    match result {
        Ok(res) => format!(
            "answered by {} ({} chars, {:?}, {} tokens)",
            res.model,
            res.content.len(),
            res.finish_reason,
            res.total_tokens
                .map_or_else(|| "?".to_owned(), |t| t.to_string())
        ),
        Err(err) => {
            if let Some(open) = err.downcast_ref::<BreakerOpen>() {
                format!("rejected by the breaker: {open}")
            } else if let Some(full) = err.downcast_ref::<BulkheadFull>() {
                format!("rejected by the bulkhead: {full}")
            } else if let Some(exhausted) = err.downcast_ref::<RetriesExhausted>() {
                format!(
                    "failed after {} attempts ({}): {}",
                    exhausted.attempts().len(),
                    exhausted.reason().unwrap_or("no reason given"),
                    exhausted.last()
                )
            } else if let Some(chat) = err.downcast_ref::<ChatError>() {
                format!("failed at once, not retried: {chat}")
            } else {
                let source = err.source().map(|s| format!(" ({s})")).unwrap_or_default();
                format!("failed: {err}{source}")
            }
        }
    }
}

/// Run the demonstration against `upstream`, printing each step. Fails if a layer does not do
/// what the step says it does.
pub async fn demo(upstream: &MockUpstream) -> Result<(), BoxError> {
    let settings = Settings::default();
    let client = ChatClient::new(&upstream.base_url())?;
    let (chat, handles) = resilient(client, &settings)?;
    let ask = |model: &str| {
        chat.clone()
            .oneshot(ChatRequest::user(model, "Say hello in one word."))
    };
    let step = |name: &str, result: &Result<ChatResponse, BoxError>, attempts: usize| {
        println!(
            "{name:<26} {} [{attempts} upstream attempt(s)]",
            outcome(result)
        );
    };
    let mut seen = 0;
    let mut upstream_calls = || {
        let now = upstream.attempt_count();
        let new = now - seen;
        seen = now;
        new
    };

    let result = ask(models::HEALTHY).await;
    step("healthy model:", &result, upstream_calls());
    result?;

    let result = ask(models::FLAKY).await;
    let calls = upstream_calls();
    step("flaky model (503, 503):", &result, calls);
    ensure(
        result.is_ok() && calls == 3,
        "the flaky model answers on the third attempt",
    )?;

    let started = tokio::time::Instant::now();
    let result = ask(models::LIMITED).await;
    let calls = upstream_calls();
    step("rate-limited model:", &result, calls);
    println!(
        "{:<26} waited {} ms in all, as the server asked (200 ms per retry)",
        "",
        started.elapsed().as_millis()
    );
    ensure(
        calls == 3 && started.elapsed() >= Duration::from_millis(400),
        "a rate limit is retried after the server's delay",
    )?;

    let result = ask(models::SMALL_CONTEXT).await;
    let calls = upstream_calls();
    step("context too long:", &result, calls);
    ensure(calls == 1, "a context-length error is not retried")?;
    println!(
        "breaker after rate limits and request errors: {} (they say nothing about the provider's health)",
        handles.breaker.state()
    );

    // Three concurrent calls to a slow model: two permits, the third is turned away at once.
    let (a, b, c) = tokio::join!(ask(models::SLOW), ask(models::SLOW), ask(models::SLOW));
    let calls = upstream_calls();
    for (i, result) in [&a, &b, &c].into_iter().enumerate() {
        println!(
            "{:<26} {}",
            format!("slow model, call {}:", i + 1),
            outcome(result)
        );
    }
    println!("{:<26} {calls} upstream attempt(s) for the three calls", "");
    let rejected = [&a, &b, &c]
        .iter()
        .filter(|r| matches!(r, Err(e) if e.is::<BulkheadFull>()))
        .count();
    ensure(
        rejected == 1 && calls == 2,
        "the bulkhead admits two calls and rejects the third",
    )?;

    // The provider goes down: every call fails after its retries; three such calls open the breaker.
    upstream.set_default_fault(Fault::status(503));
    for i in 1..=settings.failures_to_open {
        let result = ask(models::HEALTHY).await;
        step(&format!("outage, call {i}:"), &result, upstream_calls());
    }
    println!("breaker: {}", handles.breaker.state());
    let result = ask(models::HEALTHY).await;
    let calls = upstream_calls();
    step("outage, next call:", &result, calls);
    ensure(
        calls == 0 && matches!(&result, Err(e) if e.is::<BreakerOpen>()),
        "an open breaker rejects without calling the provider",
    )?;

    // The provider recovers; after its open duration the breaker lets one probe through.
    upstream.set_default_fault(Fault::Healthy);
    tokio::time::sleep(settings.open_for).await;
    let result = ask(models::HEALTHY).await;
    step("recovered, probe:", &result, upstream_calls());
    println!("breaker: {}", handles.breaker.state());
    result?;
    let snapshot = handles.breaker.snapshot();
    println!(
        "breaker totals: {} call(s) rejected while open, {} ignored (rate limits, bad requests, bulkhead)",
        snapshot.not_permitted, snapshot.ignored
    );
    Ok(())
}

fn ensure(ok: bool, what: &str) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("expected: {what}").into())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let upstream = start_upstream().await?;
    println!("embedded mock upstream at {}", upstream.base_url());
    demo(&upstream).await
}
