//! `StreamGuard` over real loopback HTTP against the chaos mock upstream's streaming faults.
//!
//! The stack is the one the guard is built for: hyper-util's client, `InspectErrorBodyLayer`
//! around it, the guard above. What the caller receives is compared byte for byte with the
//! mock's canonical stream.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_llm_chaos::canonical::{self, Usage};
use tower_llm_chaos::{canonical_tokens, Fault, MockUpstream, CANONICAL_ANSWER};
use tower_llm_core::{
    classify_error, BoxError, ClassifiedError, ErrorKind, GuardedBody, InspectErrorBodyLayer,
    MalformedPolicy, ReplayBody, StreamEnd, StreamGuardLayer, StreamOutcome,
};

const MODEL: &str = "gpt-4o";

type HttpClient = Client<HttpConnector, Full<Bytes>>;
type Guarded = Response<GuardedBody<ReplayBody<Incoming>>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn request_json(stream: bool) -> String {
    format!(
        r#"{{"model":"{MODEL}","stream":{stream},"messages":[{{"role":"user","content":"Say something resilient."}}]}}"#
    )
}

fn ask(upstream: &MockUpstream, stream: bool) -> Request<Full<Bytes>> {
    Request::post(upstream.completions_url())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(request_json(stream))))
        .unwrap()
}

fn usage() -> Usage {
    canonical::estimate_usage(&serde_json::from_str(&request_json(true)).unwrap())
}

async fn mock(fault: Fault) -> MockUpstream {
    MockUpstream::builder()
        .default_fault(fault)
        .start()
        .await
        .unwrap()
}

/// One call through `guard` → `InspectErrorBodyLayer` → the client.
async fn call(
    guard: StreamGuardLayer,
    client: &HttpClient,
    upstream: &MockUpstream,
    stream: bool,
) -> Result<Guarded, BoxError> {
    let svc = guard.layer(InspectErrorBodyLayer::new().layer(client.clone()));
    svc.oneshot(ask(upstream, stream)).await
}

/// The canonical stream of the upstream's last attempt.
fn canonical_stream(upstream: &MockUpstream) -> Vec<Bytes> {
    let seq = upstream.attempts().last().expect("one attempt").seq;
    canonical::sse_events(seq, MODEL, usage())
}

fn outcome_of<B>(res: &Response<B>) -> StreamOutcome {
    res.extensions()
        .get::<StreamOutcome>()
        .expect("a committed stream carries its outcome")
        .clone()
}

async fn read(res: Guarded) -> Bytes {
    res.into_body()
        .collect()
        .await
        .expect("a guarded body never fails")
        .to_bytes()
}

/// The data of every event of a stream.
fn events(body: &[u8]) -> Vec<String> {
    std::str::from_utf8(body)
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("a data event").to_owned())
        .collect()
}

/// The answer the content deltas of a stream spell.
fn reassemble(body: &[u8]) -> String {
    events(body)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The error event a broken stream ends with: its `code`.
fn error_code(event: &str) -> String {
    let json: Value = serde_json::from_str(event).expect("an error event is JSON");
    assert_eq!(json["error"]["type"], "server_error");
    json["error"]["code"].as_str().unwrap().to_owned()
}

fn kind(err: &BoxError) -> ErrorKind {
    classify_error(&**err).kind
}

#[tokio::test(start_paused = true)]
async fn a_healthy_stream_arrives_byte_for_byte() {
    let upstream = mock(Fault::Healthy).await;
    let client = client();
    let res = call(StreamGuardLayer::new(), &client, &upstream, true)
        .await
        .unwrap();
    let outcome = outcome_of(&res);
    let body = read(res).await;
    assert_eq!(body, canonical_stream(&upstream).concat());
    assert_eq!(reassemble(&body), CANONICAL_ANSWER);
    assert_eq!(outcome.end(), Some(StreamEnd::Complete));
}

#[tokio::test(start_paused = true)]
async fn a_json_answer_passes_through_untouched() {
    let upstream = mock(Fault::Healthy).await;
    let res = call(StreamGuardLayer::new(), &client(), &upstream, false)
        .await
        .unwrap();
    assert!(res.extensions().get::<StreamOutcome>().is_none());
    let body = read(res).await;
    let seq = upstream.attempts()[0].seq;
    assert_eq!(body, canonical::completion_json(seq, MODEL, usage()));
}

#[tokio::test(start_paused = true)]
async fn a_first_token_slower_than_ttft_fails_the_attempt_at_the_limit() {
    let upstream = mock(Fault::SlowFirstToken(Duration::from_secs(15))).await;
    let start = Instant::now();
    let err = call(StreamGuardLayer::new(), &client(), &upstream, true)
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ErrorKind::Timeout);
    assert!(err.is::<ClassifiedError>());
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_first_token_within_ttft_gives_the_whole_answer() {
    let upstream = mock(Fault::SlowFirstToken(Duration::from_secs(8))).await;
    let start = Instant::now();
    let res = call(StreamGuardLayer::new(), &client(), &upstream, true)
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(8));
    let outcome = outcome_of(&res);
    let body = read(res).await;
    assert_eq!(body, canonical_stream(&upstream).concat());
    assert_eq!(outcome.end(), Some(StreamEnd::Complete));
}

#[tokio::test(start_paused = true)]
async fn a_cut_stream_ends_with_an_error_event_after_exactly_the_tokens_sent() {
    const N: usize = 5;
    let upstream = mock(Fault::CutAfter(N)).await;
    let res = call(StreamGuardLayer::new(), &client(), &upstream, true)
        .await
        .unwrap();
    let outcome = outcome_of(&res);
    let body = read(res).await;

    let sent: Vec<Bytes> = canonical_stream(&upstream).into_iter().take(N).collect();
    let sent = sent.concat();
    assert_eq!(
        &body[..sent.len()],
        &sent[..],
        "the first {N} events as sent"
    );
    let rest = events(&body[sent.len()..]);
    assert_eq!(rest.len(), 1, "one error event, nothing else: {rest:?}");
    assert_eq!(error_code(&rest[0]), "invalid_response");
    assert!(!body.windows(6).any(|w| w == b"[DONE]"));
    assert_eq!(reassemble(&body), canonical_tokens()[..N].concat());
    assert_ne!(reassemble(&body), CANONICAL_ANSWER);
    assert_eq!(
        outcome.end().and_then(|e| e.kind()),
        Some(ErrorKind::InvalidResponse)
    );
}

#[tokio::test(start_paused = true)]
async fn a_stall_is_ended_at_the_idle_limit_and_the_next_request_succeeds() {
    const N: usize = 3;
    let upstream = mock(Fault::Stall { after: N }).await;
    let client = client();
    let guard = StreamGuardLayer::builder()
        .idle(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::now();
    let res = call(guard, &client, &upstream, true).await.unwrap();
    let outcome = outcome_of(&res);
    let body = read(res).await;
    assert_eq!(start.elapsed(), Duration::from_secs(5));

    let sent = canonical_stream(&upstream)
        .into_iter()
        .take(N)
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(&body[..sent.len()], &sent[..]);
    let rest = events(&body[sent.len()..]);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(error_code(&rest[0]), "timeout");
    assert_eq!(
        outcome.end().and_then(|e| e.kind()),
        Some(ErrorKind::Timeout)
    );

    // The stalled connection was let go; the same client gets a whole answer next.
    upstream.set_default_fault(Fault::Healthy);
    let res = call(guard, &client, &upstream, true).await.unwrap();
    let outcome = outcome_of(&res);
    let body = read(res).await;
    assert_eq!(body, canonical_stream(&upstream).concat());
    assert_eq!(outcome.end(), Some(StreamEnd::Complete));
    assert_eq!(upstream.attempt_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_malformed_event_is_left_out_and_nothing_else() {
    for at in [0, 3, 30] {
        let upstream = mock(Fault::MalformedEvent { at }).await;
        let res = call(StreamGuardLayer::new(), &client(), &upstream, true)
            .await
            .unwrap();
        let outcome = outcome_of(&res);
        let body = read(res).await;
        assert_eq!(
            body,
            canonical_stream(&upstream).concat(),
            "garbage at {at}"
        );
        assert_eq!(reassemble(&body), CANONICAL_ANSWER);
        assert_eq!(outcome.end(), Some(StreamEnd::Complete));
    }
}

#[tokio::test(start_paused = true)]
async fn a_malformed_event_ends_the_stream_with_the_end_policy() {
    const AT: usize = 3;
    let guard = StreamGuardLayer::builder()
        .malformed(MalformedPolicy::End)
        .build()
        .unwrap();
    let upstream = mock(Fault::MalformedEvent { at: AT }).await;
    let res = call(guard, &client(), &upstream, true).await.unwrap();
    let outcome = outcome_of(&res);
    let body = read(res).await;
    let sent = canonical_stream(&upstream)
        .into_iter()
        .take(AT)
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(&body[..sent.len()], &sent[..]);
    let rest = events(&body[sent.len()..]);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(error_code(&rest[0]), "invalid_response");
    assert_eq!(
        outcome.end().and_then(|e| e.kind()),
        Some(ErrorKind::InvalidResponse)
    );

    // As the very first event it fails the attempt, before anything reached the caller.
    let upstream = mock(Fault::MalformedEvent { at: 0 }).await;
    let err = call(guard, &client(), &upstream, true).await.unwrap_err();
    assert_eq!(kind(&err), ErrorKind::InvalidResponse);
}

#[tokio::test(start_paused = true)]
async fn a_stream_without_done_is_finished_promptly_with_its_usage() {
    let upstream = mock(Fault::NoDone).await;
    let start = Instant::now();
    let res = call(StreamGuardLayer::new(), &client(), &upstream, true)
        .await
        .unwrap();
    let outcome = outcome_of(&res);
    let body = read(res).await;
    assert!(start.elapsed() < Duration::from_secs(1));
    // Byte for byte the healthy stream: `[DONE]` appended, the usage chunk kept.
    assert_eq!(body, canonical_stream(&upstream).concat());
    let data = events(&body);
    let finish: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(
        finish["usage"]["completion_tokens"],
        canonical_tokens().len() as u64
    );
    assert_eq!(outcome.end(), Some(StreamEnd::Complete));
}

#[tokio::test(start_paused = true)]
async fn a_first_event_error_fails_the_attempt_with_its_kind() {
    let upstream = mock(Fault::FirstEventError).await;
    let err = call(StreamGuardLayer::new(), &client(), &upstream, true)
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ErrorKind::ServerError);
    assert!(
        err.to_string()
            .contains("the model failed before its first token"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_error_status_passes_through_for_the_classifier() {
    let upstream = mock(Fault::status(429).retry_after_secs(2)).await;
    let res = call(StreamGuardLayer::new(), &client(), &upstream, true)
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.extensions().get::<StreamOutcome>().is_none());
}

#[test]
fn the_guarded_body_and_future_can_cross_threads() {
    fn send<T: Send + 'static>() {}
    fn unpin<T: Unpin>() {}
    send::<GuardedBody<ReplayBody<Incoming>>>();
    send::<StreamOutcome>();
    send::<
        tower_llm_core::StreamGuardFuture<
            hyper_util::client::legacy::ResponseFuture,
            ReplayBody<Incoming>,
        >,
    >();
    // Layers above (fallback, retry) read bodies that are `Unpin`.
    unpin::<GuardedBody<ReplayBody<Incoming>>>();
}

#[tokio::test(start_paused = true)]
async fn a_json_answer_that_stalls_fails_the_attempt_with_timeout() {
    let upstream = mock(Fault::Stall { after: 1 }).await;
    let client = client();
    let guard = StreamGuardLayer::builder()
        .idle(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = call(guard, &client, &upstream, false).await.unwrap_err();
    assert_eq!(kind(&err), ErrorKind::Timeout);
    assert!(err.is::<ClassifiedError>());
    // The headers and the first bytes came at once; then the idle limit.
    assert_eq!(start.elapsed(), Duration::from_secs(5));

    // The stalled connection was let go; the same client gets a whole answer next.
    upstream.set_default_fault(Fault::Healthy);
    let res = call(guard, &client, &upstream, false).await.unwrap();
    assert!(res.body().is_buffered());
    let body = read(res).await;
    let seq = upstream.attempts().last().unwrap().seq;
    assert_eq!(body, canonical::completion_json(seq, MODEL, usage()));
}

#[tokio::test(start_paused = true)]
async fn a_cut_json_answer_fails_the_attempt_with_transport() {
    let upstream = mock(Fault::CutAfter(1)).await;
    let err = call(StreamGuardLayer::new(), &client(), &upstream, false)
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ErrorKind::Transport);
}
