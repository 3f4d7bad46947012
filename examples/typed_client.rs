//! A library author's typed, non-HTTP client — `Service<ChatRequest, Response = ChatResponse>` —
//! wrapped in breaker + retry + bulkhead from tower-llm, with a custom classifier that tells the
//! layers which answers are failures.
//!
//! ```text
//! cargo run --example typed_client
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_llm::breaker::{BreakerHandle, CircuitBreakerConfig, CircuitBreakerLayer};
use tower_llm::bulkhead::BulkheadLayer;
use tower_llm::core::{BoxError, Classification, Classify, ErrorKind, Failure};
use tower_llm::retry::{CloneReplay, RetryLayer};
use tower_llm::ServiceBuilderExt;

/// The library's request type.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    /// The model to ask.
    pub model: String,
    /// The prompt.
    pub prompt: String,
}

/// The library's response type: an answer, or the provider's refusal in typed form.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatResponse {
    /// The answer's text.
    Answer(String),
    /// The provider sheds load.
    Overloaded,
    /// The provider asks to wait.
    RateLimited {
        /// How long.
        retry_after: Duration,
    },
}

/// Which [`ChatResponse`]s are failures, and of what kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChatClassifier;

impl Classify<ChatResponse> for ChatClassifier {
    fn classify_response(&self, res: &ChatResponse) -> Classification {
        match res {
            ChatResponse::Answer(_) => Classification::Success,
            ChatResponse::Overloaded => {
                Classification::Failure(Failure::new(ErrorKind::Overloaded))
            }
            ChatResponse::RateLimited { retry_after } => Classification::Failure(
                Failure::new(ErrorKind::RateLimited).with_retry_after(Some(*retry_after)),
            ),
        }
    }
}

/// Wrap any typed client in breaker → retry → bulkhead; returns the client and its breaker.
pub fn resilient<S>(
    client: S,
) -> Result<
    (
        impl Service<ChatRequest, Response = ChatResponse, Error = BoxError> + Clone,
        BreakerHandle,
    ),
    BoxError,
>
where
    S: Service<ChatRequest, Response = ChatResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let breaker = CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder()
            .name("typed-provider")
            .consecutive_failures(3)
            .open_duration(Duration::from_secs(10))
            .build()?,
    )
    .classifier(ChatClassifier);
    let handle = breaker.handle().clone();
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .classifier(ChatClassifier)
        .replay(CloneReplay)
        .seed(7)
        .build()?;
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent(16)
        .max_queued(0)
        .release_on_response()
        .build()?;
    let svc = ServiceBuilder::new()
        .circuit_breaker(breaker)
        .retry_with(retry)
        .bulkhead(bulkhead)
        .service(client);
    Ok((svc, handle))
}

/// A stand-in provider: overloaded for its first `failures` calls, then answering.
pub fn flaky_provider(
    failures: u32,
    calls: Arc<AtomicU32>,
) -> impl Service<ChatRequest, Response = ChatResponse, Error = BoxError, Future: Send> + Clone + Send
{
    service_fn(move |req: ChatRequest| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < failures {
                Ok::<_, BoxError>(ChatResponse::Overloaded)
            } else {
                Ok(ChatResponse::Answer(format!(
                    "{}: hello ({} chars asked)",
                    req.model,
                    req.prompt.len()
                )))
            }
        }
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let calls = Arc::new(AtomicU32::new(0));
    let (client, breaker) = resilient(flaky_provider(2, Arc::clone(&calls)))?;
    let answer = client
        .oneshot(ChatRequest {
            model: "typed-model".into(),
            prompt: "Say hello.".into(),
        })
        .await?;
    println!("answer: {answer:?}");
    println!("provider calls: {}", calls.load(Ordering::SeqCst));
    println!("breaker: {}", breaker.state());
    Ok(())
}
