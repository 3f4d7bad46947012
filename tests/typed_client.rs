//! A typed, non-HTTP client (`Service<ChatRequest, Response = ChatResponse>`) wrapped in
//! breaker + retry + bulkhead with a custom classifier (the `typed_client` example).

#[path = "../examples/typed_client.rs"]
#[allow(dead_code)]
mod typed_client;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tower::ServiceExt;
use tower_llm::breaker::State;
use tower_llm::core::BreakerOpen;

use typed_client::{flaky_provider, resilient, ChatRequest, ChatResponse};

fn ask() -> ChatRequest {
    ChatRequest {
        model: "typed-model".into(),
        prompt: "Say hello.".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn retries_typed_failures_and_answers() {
    let calls = Arc::new(AtomicU32::new(0));
    let (client, breaker) = resilient(flaky_provider(2, Arc::clone(&calls))).unwrap();
    let answer = client.oneshot(ask()).await.unwrap();
    assert!(matches!(answer, ChatResponse::Answer(ref text) if text.starts_with("typed-model")));
    // Two overloaded answers were retried; the breaker saw one successful call.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.counts().calls, 1);
}

#[tokio::test(start_paused = true)]
async fn the_custom_classifier_opens_the_breaker() {
    let calls = Arc::new(AtomicU32::new(0));
    let (client, breaker) = resilient(flaky_provider(u32::MAX, Arc::clone(&calls))).unwrap();
    for _ in 0..3 {
        let res = client.clone().oneshot(ask()).await.unwrap();
        assert_eq!(
            res,
            ChatResponse::Overloaded,
            "the last failed answer is returned"
        );
    }
    assert_eq!(breaker.state(), State::Open);
    let before = calls.load(Ordering::SeqCst);
    let err = client.clone().oneshot(ask()).await.unwrap_err();
    assert!(err.downcast_ref::<BreakerOpen>().is_some(), "{err}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "an open breaker does not call the provider"
    );
}
