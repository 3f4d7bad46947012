//! A library author's typed, non-HTTP client (`Service<ChatRequest, Response = ChatResponse>`)
//! behind breaker → retry → bulkhead, with a custom classifier: the `typed_client` example's
//! stack, driven over real loopback HTTP against the chaos mock upstream. The layers only ever
//! see `ChatRequest`, `ChatResponse` and `ChatError`.

#[path = "../examples/typed_client.rs"]
#[allow(dead_code)]
mod typed_client;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::{service_fn, ServiceExt};
use tower_llm::breaker::{OpenReason, State};
use tower_llm::core::{
    BoxError, BreakerOpen, BulkheadFull, Classification, Classify, ErrorKind, LimitKind, Origin,
    RetriesExhausted,
};
use tower_llm_chaos::{hold_auto_advance, Fault, MockUpstream, CANONICAL_ANSWER};

use typed_client::chat::{
    ChatClassifier, ChatClient, ChatError, ChatRequest, ChatResponse, FinishReason,
};
use typed_client::{models, resilient, start_upstream, Handles, ResilientChat, Settings};

/// The example's upstream and a resilient client for it.
async fn setup(settings: &Settings) -> (MockUpstream, ResilientChat<ChatClient>, Handles) {
    let upstream = start_upstream().await.unwrap();
    let client = ChatClient::new(&upstream.base_url()).unwrap();
    let (chat, handles) = resilient(client, settings).unwrap();
    (upstream, chat, handles)
}

async fn ask(chat: &ResilientChat<ChatClient>, model: &str) -> Result<ChatResponse, BoxError> {
    chat.clone()
        .oneshot(ChatRequest::user(model, "Say hello."))
        .await
}

fn attempts_for(upstream: &MockUpstream, model: &str) -> usize {
    upstream
        .attempts()
        .iter()
        .filter(|a| a.model == model)
        .count()
}

/// The last upstream error inside a `RetriesExhausted`, and the number of attempts.
fn exhausted(err: &BoxError) -> (&ChatError, usize) {
    let exhausted = err
        .downcast_ref::<RetriesExhausted>()
        .unwrap_or_else(|| panic!("expected RetriesExhausted, got {err}"));
    let last = exhausted
        .last()
        .downcast_ref::<ChatError>()
        .unwrap_or_else(|| panic!("expected a ChatError, got {}", exhausted.last()));
    (last, exhausted.attempts().len())
}

#[tokio::test(start_paused = true)]
async fn the_example_runs_and_checks_itself() {
    let upstream = start_upstream().await.unwrap();
    typed_client::demo(&upstream).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_typed_transient_error_is_retried_until_the_answer() {
    let (upstream, chat, handles) = setup(&Settings::default()).await;
    let answer = ask(&chat, models::FLAKY).await.unwrap();
    assert_eq!(answer.model, models::FLAKY);
    assert_eq!(answer.content, CANONICAL_ANSWER);
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    assert!(answer.total_tokens.is_some_and(|t| t > 0));
    // Two 503s (ChatError::Overloaded), then the answer.
    let statuses: Vec<_> = upstream.attempts().iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(200)]);
    // The breaker above the retries saw one successful call.
    let counts = handles.breaker.counts();
    assert_eq!((counts.calls, counts.failures), (1, 0));
    assert_eq!(handles.bulkhead.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_typed_rate_limit_is_retried_after_the_servers_delay() {
    let (upstream, chat, handles) = setup(&Settings::default()).await;
    let started = Instant::now();
    let err = ask(&chat, models::LIMITED).await.unwrap_err();
    let (last, attempts) = exhausted(&err);
    assert!(
        matches!(last, ChatError::RateLimited { retry_after: Some(d) } if *d == Duration::from_millis(200)),
        "{last:?}"
    );
    assert_eq!(attempts, 3);
    assert_eq!(attempts_for(&upstream, models::LIMITED), 3);
    let records = err.downcast_ref::<RetriesExhausted>().unwrap().attempts();
    assert!(records
        .iter()
        .all(|r| r.kind == ErrorKind::RateLimited
            && r.retry_after == Some(Duration::from_millis(200))));
    // Exactly the server's delay before each retry, not the (20 ms) backoff.
    assert_eq!(started.elapsed(), Duration::from_millis(400));
    // A rate limit says nothing about the provider's health.
    assert_eq!(handles.breaker.state(), State::Closed);
    let snapshot = handles.breaker.snapshot();
    assert_eq!((snapshot.failures, snapshot.ignored), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn typed_fatal_errors_are_not_retried_nor_counted() {
    let (upstream, chat, handles) = setup(&Settings::default()).await;
    upstream.route_model("no-access", Fault::status(401));

    // Returned as they are, not wrapped: the caller matches on its own error type.
    let err = ask(&chat, models::SMALL_CONTEXT).await.unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<ChatError>(),
            Some(ChatError::ContextLength)
        ),
        "{err}"
    );
    let err = ask(&chat, "no-access").await.unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<ChatError>(),
            Some(ChatError::Auth { status: 401 })
        ),
        "{err}"
    );
    assert_eq!(attempts_for(&upstream, models::SMALL_CONTEXT), 1);
    assert_eq!(attempts_for(&upstream, "no-access"), 1);
    let snapshot = handles.breaker.snapshot();
    assert_eq!(snapshot.state, State::Closed);
    assert_eq!((snapshot.failures, snapshot.ignored), (0, 2));
}

#[tokio::test(start_paused = true)]
async fn an_unparsable_typed_answer_is_retried_and_counted() {
    let (upstream, chat, handles) = setup(&Settings::default()).await;
    // A 200 whose body is not JSON: the client's `ChatError::InvalidResponse`.
    upstream.route_model("garbled", Fault::MalformedEvent { at: 0 });
    let err = ask(&chat, "garbled").await.unwrap_err();
    let (last, attempts) = exhausted(&err);
    assert!(matches!(last, ChatError::InvalidResponse(_)), "{last:?}");
    assert_eq!(attempts, 3);
    assert_eq!(attempts_for(&upstream, "garbled"), 3);
    let counts = handles.breaker.counts();
    assert_eq!((counts.calls, counts.failures), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_after_n_typed_failures_and_recovers() {
    let settings = Settings {
        failures_to_open: 3,
        open_for: Duration::from_secs(10),
        ..Settings::default()
    };
    let (upstream, chat, handles) = setup(&settings).await;
    upstream.set_default_fault(Fault::status(503));

    for call in 1..=3u64 {
        assert_eq!(handles.breaker.state(), State::Closed, "before call {call}");
        let err = ask(&chat, models::HEALTHY).await.unwrap_err();
        let (last, attempts) = exhausted(&err);
        assert!(
            matches!(last, ChatError::Overloaded { status: 503 }),
            "{last:?}"
        );
        assert_eq!(attempts, 3);
        if call < 3 {
            // One failed call per exhausted retry sequence, not one per attempt.
            assert_eq!(handles.breaker.snapshot().consecutive_failures, call);
        }
    }
    assert_eq!(handles.breaker.state(), State::Open);
    assert_eq!(upstream.attempt_count(), 9);
    let snapshot = handles.breaker.snapshot();
    assert_eq!(snapshot.reason, Some(OpenReason::ConsecutiveFailures));
    assert_eq!(snapshot.retry_after_ms, Some(10_000));

    // Open: rejected at once, typed as BreakerOpen, and the provider is not called.
    let err = ask(&chat, models::HEALTHY).await.unwrap_err();
    let open = err
        .downcast_ref::<BreakerOpen>()
        .expect("rejected by the breaker");
    assert_eq!(open.breaker(), "typed-chat");
    assert_eq!(open.retry_after(), Duration::from_secs(10));
    assert_eq!(upstream.attempt_count(), 9);
    assert_eq!(handles.breaker.snapshot().not_permitted, 1);

    // The provider recovers; after the open duration one probe closes the breaker.
    upstream.set_default_fault(Fault::Healthy);
    tokio::time::advance(Duration::from_secs(10)).await;
    let answer = ask(&chat, models::HEALTHY).await.unwrap();
    assert_eq!(answer.content, CANONICAL_ANSWER);
    assert_eq!(handles.breaker.state(), State::Closed);
    assert_eq!(upstream.attempt_count(), 10);
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_rejects_beyond_its_limit_and_releases_every_permit() {
    let settings = Settings {
        max_concurrent: 2,
        ..Settings::default()
    };
    let (upstream, chat, handles) = setup(&settings).await;
    // The slow model answers after 300 ms; hold the paused clock so it does not jump there
    // while the calls are on the wire.
    let hold = hold_auto_advance();
    let first = tokio::spawn({
        let chat = chat.clone();
        async move { ask(&chat, models::SLOW).await }
    });
    let second = tokio::spawn({
        let chat = chat.clone();
        async move { ask(&chat, models::SLOW).await }
    });
    upstream.wait_for_attempts(2).await;
    assert_eq!(handles.bulkhead.in_flight(), 2);

    let err = ask(&chat, models::SLOW).await.unwrap_err();
    let full = err
        .downcast_ref::<BulkheadFull>()
        .expect("rejected by the bulkhead");
    assert_eq!(full.limit(), LimitKind::Concurrency);
    assert_eq!(full.in_flight(), 2);
    assert_eq!(full.bulkhead(), "typed-chat");
    // A local rejection: neither retried (the provider saw two calls) nor held against it.
    let failure = ChatClassifier.classify_error(&*err);
    assert_eq!(
        (failure.kind, failure.origin),
        (ErrorKind::Overloaded, Origin::Local)
    );
    assert_eq!(upstream.attempt_count(), 2);
    let snapshot = handles.breaker.snapshot();
    assert_eq!((snapshot.calls, snapshot.ignored), (0, 1));

    // A caller that gives up releases its permit at once.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(handles.bulkhead.in_flight(), 1);

    // The other answers after the upstream's 300 ms and releases its permit too.
    tokio::time::advance(Duration::from_millis(300)).await;
    let answer = second.await.unwrap().unwrap();
    assert_eq!(answer.model, models::SLOW);
    drop(hold);
    assert_eq!(handles.bulkhead.in_flight(), 0);
    assert_eq!(handles.bulkhead.queued(), 0);

    // The freed permits admit new calls.
    ask(&chat, models::HEALTHY).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_content_filtered_answer_is_a_typed_failure_returned_as_it_is() {
    // Any typed service works, here an in-memory one whose answers the content filter withheld.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let filtered = service_fn(move |req: ChatRequest| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, ChatError>(ChatResponse {
                model: req.model,
                content: String::new(),
                finish_reason: FinishReason::ContentFilter,
                total_tokens: Some(12),
            })
        }
    });
    let (chat, handles) = resilient(filtered, &Settings::default()).unwrap();
    let res = chat
        .oneshot(ChatRequest::user("any-model", "..."))
        .await
        .unwrap();
    assert_eq!(res.finish_reason, FinishReason::ContentFilter);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a content-policy failure is not retried"
    );
    let snapshot = handles.breaker.snapshot();
    assert_eq!((snapshot.calls, snapshot.ignored), (0, 1));
}

#[test]
fn the_classifier_maps_every_typed_outcome() {
    let c = ChatClassifier;
    let answer = |finish_reason| ChatResponse {
        model: "m".into(),
        content: "hi".into(),
        finish_reason,
        total_tokens: None,
    };
    assert_eq!(
        c.classify_response(&answer(FinishReason::Stop)),
        Classification::Success
    );
    assert_eq!(
        c.classify_response(&answer(FinishReason::Length)),
        Classification::Success
    );
    assert_eq!(
        c.classify_response(&answer(FinishReason::ContentFilter))
            .kind(),
        Some(ErrorKind::ContentPolicy)
    );

    let rows = [
        (
            ChatError::RateLimited {
                retry_after: Some(Duration::from_secs(3)),
            },
            ErrorKind::RateLimited,
        ),
        (ChatError::Overloaded { status: 529 }, ErrorKind::Overloaded),
        (ChatError::Server { status: 502 }, ErrorKind::ServerError),
        (ChatError::Auth { status: 403 }, ErrorKind::Auth),
        (ChatError::ContextLength, ErrorKind::ContextLength),
        (ChatError::ContentPolicy, ErrorKind::ContentPolicy),
        (
            ChatError::BadRequest {
                status: 422,
                code: None,
            },
            ErrorKind::BadRequest,
        ),
        (
            ChatError::InvalidResponse("x".into()),
            ErrorKind::InvalidResponse,
        ),
        (
            ChatError::Encode("bad header".into()),
            ErrorKind::BadRequest,
        ),
        (
            ChatError::Transport(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            ))),
            ErrorKind::Transport,
        ),
        (
            ChatError::Transport(Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut))),
            ErrorKind::Timeout,
        ),
    ];
    for (err, kind) in rows {
        let failure = c.classify_error(&err);
        assert_eq!(failure.kind, kind, "{err}");
        assert_eq!(failure.origin, Origin::Upstream, "{err}");
        // Wrapped by a retry layer, the typed error still decides.
        let wrapped = RetriesExhausted::new(Vec::new(), Box::new(err));
        assert_eq!(c.classify_error(&wrapped).kind, kind);
    }
    let limited = ChatError::RateLimited {
        retry_after: Some(Duration::from_secs(3)),
    };
    assert_eq!(
        c.classify_error(&limited).retry_after,
        Some(Duration::from_secs(3))
    );
    // tower-llm's own rejections are local failures.
    let open = BreakerOpen::new("b", "test", Duration::from_secs(1));
    assert_eq!(c.classify_error(&open).origin, Origin::Local);
}
