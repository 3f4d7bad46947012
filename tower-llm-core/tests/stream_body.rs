//! `StreamGuard` over hand-built bodies: chunk splits at every byte, malformed events, the three
//! time limits on a paused clock, the outcome hook, and the pass-through path.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use proptest::prelude::*;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};
use tower_llm_core::openai::DONE_FRAME;
use tower_llm_core::{
    classify_error, ClassifiedError, ErrorKind, GuardedBody, MalformedPolicy, StreamEnd,
    StreamGuardLayer, StreamOutcome,
};

const DELTA_A: &str =
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n";
const DELTA_B: &str =
    "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\r\n\r\n";
const FINISH: &str = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n";
const DONE: &str = "data: [DONE]\n\n";
const GARBAGE: &str = "data: {\"choices\":[{\"delta\":{\"content\n\n";
const COMMENT: &str = ": keep-alive\n\n";

fn whole_stream() -> String {
    [DELTA_A, COMMENT, DELTA_B, FINISH, USAGE, DONE].concat()
}

/// A response body fed by the test through a channel, for exact control of timing.
struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Result<Bytes, io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

type Feed = mpsc::UnboundedSender<Result<Bytes, io::Error>>;

fn channel() -> (Feed, ChannelBody) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, ChannelBody { rx })
}

fn sse_response<B>(body: B) -> Response<B> {
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(body)
        .unwrap()
}

/// Run one call through a guard built by `layer` around an upstream answering `res`.
async fn call<B>(
    layer: StreamGuardLayer,
    res: Response<B>,
) -> Result<Response<GuardedBody<B>>, tower_llm_core::BoxError>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<tower_llm_core::BoxError>,
{
    let res = Arc::new(Mutex::new(Some(res)));
    let upstream = service_fn(move |_req: Request<()>| {
        let res = res.lock().unwrap().take().expect("called once");
        async move { Ok::<_, Infallible>(res) }
    });
    layer.layer(upstream).oneshot(Request::new(())).await
}

fn chunked(
    parts: Vec<Bytes>,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Unpin> {
    StreamBody::new(futures_util::stream::iter(
        parts.into_iter().map(|p| Ok(Frame::data(p))),
    ))
}

/// Split `text` at the given byte offsets.
fn split_at(text: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
    bounds.extend([0, text.len()]);
    bounds.sort_unstable();
    bounds.dedup();
    bounds
        .windows(2)
        .map(|w| Bytes::copy_from_slice(&text[w[0]..w[1]]))
        .collect()
}

async fn collect(
    body: GuardedBody<impl Body<Data = Bytes, Error = impl Into<tower_llm_core::BoxError>> + Unpin>,
) -> String {
    let bytes = body
        .collect()
        .await
        .expect("a guarded body never fails")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn outcome_of<B>(res: &Response<B>) -> StreamOutcome {
    res.extensions()
        .get::<StreamOutcome>()
        .expect("a committed stream carries its outcome")
        .clone()
}

fn error_kind(err: &tower_llm_core::BoxError) -> ErrorKind {
    classify_error(&**err).kind
}

/// The error event the guard ends a broken stream with.
fn is_error_event(tail: &str, code: &str) -> bool {
    tail.starts_with("data: {\"error\":{\"message\":")
        && tail.ends_with(&format!("\"code\":\"{code}\"}}}}\n\n"))
}

#[tokio::test]
async fn a_whole_stream_passes_byte_for_byte_at_every_split() {
    let text = whole_stream();
    for cut in 0..=text.len() {
        let parts = split_at(text.as_bytes(), &[cut]);
        let res = call(StreamGuardLayer::new(), sse_response(chunked(parts)))
            .await
            .unwrap();
        let outcome = outcome_of(&res);
        assert_eq!(collect(res.into_body()).await, text, "split at {cut}");
        assert_eq!(outcome.end(), Some(StreamEnd::Complete), "split at {cut}");
    }
}

#[tokio::test]
async fn a_whole_stream_passes_byte_for_byte_in_one_byte_chunks() {
    let text = whole_stream();
    let cuts: Vec<usize> = (0..text.len()).collect();
    let res = call(
        StreamGuardLayer::new(),
        sse_response(chunked(split_at(text.as_bytes(), &cuts))),
    )
    .await
    .unwrap();
    assert_eq!(collect(res.into_body()).await, text);
}

#[tokio::test]
async fn events_in_one_chunk_are_handed_on_as_one_slice() {
    let text = whole_stream();
    let res = call(
        StreamGuardLayer::new(),
        sse_response(Full::new(Bytes::from(text.clone()))),
    )
    .await
    .unwrap();
    let mut body = res.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        frames.push(frame.unwrap().into_data().unwrap());
    }
    // The first event is handed on as it was read, then the rest of the chunk in one piece.
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0], DELTA_A.as_bytes());
    assert_eq!(frames.concat(), text.as_bytes());
}

/// The stream with `GARBAGE` before each event listed in `garbage_at`, and what the caller must
/// get from it (the same minus the garbage).
fn with_garbage(garbage_at: &[usize]) -> (String, String) {
    let events = [DELTA_A, COMMENT, DELTA_B, FINISH, USAGE, DONE];
    let mut sent = String::new();
    let mut want = String::new();
    for (i, event) in events.iter().enumerate() {
        for _ in garbage_at.iter().filter(|&&g| g == i) {
            sent.push_str(GARBAGE);
        }
        sent.push_str(event);
        want.push_str(event);
    }
    (sent, want)
}

#[tokio::test]
async fn a_malformed_event_is_left_out_at_every_split() {
    for at in 0..6 {
        let (sent, want) = with_garbage(&[at]);
        for cut in 0..=sent.len() {
            let parts = split_at(sent.as_bytes(), &[cut]);
            let res = call(StreamGuardLayer::new(), sse_response(chunked(parts)))
                .await
                .unwrap();
            let outcome = outcome_of(&res);
            assert_eq!(
                collect(res.into_body()).await,
                want,
                "garbage before event {at}, split at {cut}"
            );
            assert_eq!(outcome.end(), Some(StreamEnd::Complete));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Wherever the chunks split, the caller gets the stream minus exactly the malformed events.
    #[test]
    fn malformed_events_are_left_out_wherever_chunks_split(
        garbage_at in proptest::collection::vec(0usize..6, 0..4),
        cuts in proptest::collection::vec(0usize..2000, 0..8),
    ) {
        let (sent, want) = with_garbage(&garbage_at);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let got = rt.block_on(async {
            let res = call(StreamGuardLayer::new(), sse_response(chunked(split_at(sent.as_bytes(), &cuts))))
                .await
                .unwrap();
            let outcome = outcome_of(&res);
            let got = collect(res.into_body()).await;
            assert_eq!(outcome.end(), Some(StreamEnd::Complete));
            got
        });
        prop_assert_eq!(got, want);
    }
}

#[tokio::test]
async fn malformed_event_ends_the_stream_with_the_end_policy() {
    let layer = StreamGuardLayer::builder()
        .malformed(MalformedPolicy::End)
        .build()
        .unwrap();
    let sent = [DELTA_A, DELTA_B, GARBAGE, FINISH, DONE].concat();
    let res = call(layer, sse_response(Full::new(Bytes::from(sent))))
        .await
        .unwrap();
    let outcome = outcome_of(&res);
    let got = collect(res.into_body()).await;
    let prefix = [DELTA_A, DELTA_B].concat();
    assert!(got.starts_with(&prefix));
    assert!(
        is_error_event(&got[prefix.len()..], "invalid_response"),
        "{got}"
    );
    assert_eq!(
        outcome.end().and_then(|e| e.kind()),
        Some(ErrorKind::InvalidResponse)
    );
}

#[tokio::test]
async fn malformed_first_event_is_skipped_or_fails_the_attempt() {
    let sent = [GARBAGE, DELTA_A, FINISH, DONE].concat();
    let res = call(
        StreamGuardLayer::new(),
        sse_response(Full::new(Bytes::from(sent.clone()))),
    )
    .await
    .unwrap();
    assert_eq!(
        collect(res.into_body()).await,
        [DELTA_A, FINISH, DONE].concat()
    );

    let layer = StreamGuardLayer::builder()
        .malformed(MalformedPolicy::End)
        .build()
        .unwrap();
    let err = call(layer, sse_response(Full::new(Bytes::from(sent))))
        .await
        .unwrap_err();
    assert_eq!(error_kind(&err), ErrorKind::InvalidResponse);
}

#[tokio::test]
async fn comments_before_the_first_event_are_kept_but_do_not_commit() {
    let (feed, body) = channel();
    feed.send(Ok(Bytes::from_static(COMMENT.as_bytes())))
        .unwrap();
    feed.send(Ok(Bytes::from_static(
        b": still thinking\n\ndata: {\"type\":\"ping\"}\n\n",
    )))
    .unwrap();
    let pending = tokio::spawn(call(StreamGuardLayer::new(), sse_response(body)));
    tokio::task::yield_now().await;
    assert!(!pending.is_finished(), "comments and pings must not commit");
    feed.send(Ok(Bytes::from_static(DELTA_A.as_bytes())))
        .unwrap();
    let res = pending.await.unwrap().unwrap();
    feed.send(Ok(Bytes::from_static(FINISH.as_bytes())))
        .unwrap();
    feed.send(Ok(Bytes::from_static(DONE.as_bytes()))).unwrap();
    drop(feed);
    let want = [
        COMMENT,
        ": still thinking\n\ndata: {\"type\":\"ping\"}\n\n",
        DELTA_A,
        FINISH,
        DONE,
    ]
    .concat();
    assert_eq!(collect(res.into_body()).await, want);
}

#[tokio::test]
async fn first_event_error_fails_the_attempt_with_its_kind_and_delay() {
    let event = "data: {\"error\":{\"message\":\"Rate limit reached. Please try again in 7s.\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}\n\n";
    let err = call(
        StreamGuardLayer::new(),
        sse_response(Full::new(Bytes::from_static(event.as_bytes()))),
    )
    .await
    .unwrap_err();
    let classified = err
        .downcast_ref::<ClassifiedError>()
        .expect("a ClassifiedError");
    assert_eq!(classified.kind(), ErrorKind::RateLimited);
    assert_eq!(classified.retry_after(), Some(Duration::from_secs(7)));

    let anthropic = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let err = call(
        StreamGuardLayer::new(),
        sse_response(Full::new(Bytes::from_static(anthropic.as_bytes()))),
    )
    .await
    .unwrap_err();
    assert_eq!(error_kind(&err), ErrorKind::Overloaded);
}

#[tokio::test]
async fn a_stream_with_no_answer_fails_the_attempt() {
    for sent in [
        "",
        COMMENT,
        DONE,
        "data: {\"choices\":[{\"delta\":{\"content\":\"x",
    ] {
        let err = call(
            StreamGuardLayer::new(),
            sse_response(Full::new(Bytes::from_static(sent.as_bytes()))),
        )
        .await
        .unwrap_err();
        assert_eq!(error_kind(&err), ErrorKind::InvalidResponse, "{sent:?}");
    }
}

#[tokio::test]
async fn body_error_before_the_first_event_is_a_transport_failure() {
    let (feed, body) = channel();
    feed.send(Ok(Bytes::from_static(COMMENT.as_bytes())))
        .unwrap();
    feed.send(Err(io::Error::from(io::ErrorKind::ConnectionReset)))
        .unwrap();
    let err = call(StreamGuardLayer::new(), sse_response(body))
        .await
        .unwrap_err();
    assert_eq!(error_kind(&err), ErrorKind::Transport);
}

#[tokio::test]
async fn body_error_after_the_first_event_ends_with_an_error_event() {
    let (feed, body) = channel();
    feed.send(Ok(Bytes::from_static(DELTA_A.as_bytes())))
        .unwrap();
    let res = call(StreamGuardLayer::new(), sse_response(body))
        .await
        .unwrap();
    let outcome = outcome_of(&res);
    feed.send(Ok(Bytes::from_static(DELTA_B.as_bytes())))
        .unwrap();
    feed.send(Err(io::Error::from(io::ErrorKind::ConnectionReset)))
        .unwrap();
    let got = collect(res.into_body()).await;
    let prefix = [DELTA_A, DELTA_B].concat();
    assert!(got.starts_with(&prefix));
    assert!(
        is_error_event(&got[prefix.len()..], "invalid_response"),
        "{got}"
    );
    assert!(!got.contains("[DONE]"));
    let end = outcome.end().unwrap();
    assert_eq!(end.kind(), Some(ErrorKind::InvalidResponse));
    assert!(end.failure().unwrap().counts_against_breaker());
}

#[tokio::test]
async fn in_band_error_mid_stream_is_normalized_and_ends_the_stream() {
    let anthropic = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let sent = [DELTA_A, anthropic, DELTA_B, DONE].concat();
    let res = call(
        StreamGuardLayer::new(),
        sse_response(Full::new(Bytes::from(sent))),
    )
    .await
    .unwrap();
    let outcome = outcome_of(&res);
    let got = collect(res.into_body()).await;
    let tail = &got[DELTA_A.len()..];
    assert!(got.starts_with(DELTA_A));
    assert!(is_error_event(tail, "overloaded"), "{got}");
    assert!(tail.contains("upstream error: Overloaded"), "{tail}");
    assert_eq!(
        outcome.end().and_then(|e| e.kind()),
        Some(ErrorKind::Overloaded)
    );
}

#[tokio::test]
async fn a_cut_stream_ends_with_an_error_event_not_done() {
    let sent = [DELTA_A, DELTA_B].concat();
    let res = call(
        StreamGuardLayer::new(),
        sse_response(Full::new(Bytes::from(sent.clone()))),
    )
    .await
    .unwrap();
    let outcome = outcome_of(&res);
    let got = collect(res.into_body()).await;
    assert!(got.starts_with(&sent));
    assert!(
        is_error_event(&got[sent.len()..], "invalid_response"),
        "{got}"
    );
    assert_eq!(
        outcome.end().and_then(|e| e.kind()),
        Some(ErrorKind::InvalidResponse)
    );
}

#[tokio::test]
async fn a_finished_stream_without_done_gets_done_at_the_end_of_the_body() {
    let sent = [DELTA_A, FINISH, USAGE].concat();
    let res = call(
        StreamGuardLayer::new(),
        sse_response(Full::new(Bytes::from(sent.clone()))),
    )
    .await
    .unwrap();
    let outcome = outcome_of(&res);
    let got = collect(res.into_body()).await;
    assert_eq!(got, format!("{sent}{DONE}"));
    assert_eq!(outcome.end(), Some(StreamEnd::Complete));
}

#[tokio::test(start_paused = true)]
async fn a_finished_stream_left_open_gets_done_after_the_grace() {
    let (feed, body) = channel();
    let start = Instant::now();
    feed.send(Ok(Bytes::from_static(DELTA_A.as_bytes())))
        .unwrap();
    let res = call(StreamGuardLayer::new(), sse_response(body))
        .await
        .unwrap();
    let outcome = outcome_of(&res);
    feed.send(Ok(Bytes::from_static(FINISH.as_bytes())))
        .unwrap();
    let mut body = Box::pin(res.into_body());
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(body.frame().await.unwrap().unwrap().into_data().unwrap());
    }
    // A usage chunk within the grace still comes through and moves the grace on.
    tokio::time::sleep(Duration::from_millis(400)).await;
    feed.send(Ok(Bytes::from_static(USAGE.as_bytes()))).unwrap();
    got.push(body.frame().await.unwrap().unwrap().into_data().unwrap());
    let usage_at = start.elapsed();
    got.push(body.frame().await.unwrap().unwrap().into_data().unwrap());
    assert_eq!(start.elapsed() - usage_at, Duration::from_millis(500));
    assert!(body.frame().await.is_none());
    assert!(body.is_end_stream());
    assert_eq!(
        got.concat(),
        [DELTA_A, FINISH, USAGE, DONE].concat().as_bytes()
    );
    assert_eq!(outcome.end(), Some(StreamEnd::Complete));
    drop(feed);
}

#[tokio::test(start_paused = true)]
async fn pings_after_the_finish_reason_do_not_hold_the_stream_open() {
    let (feed, body) = channel();
    feed.send(Ok(Bytes::from([DELTA_A, FINISH].concat())))
        .unwrap();
    let res = call(StreamGuardLayer::new(), sse_response(body))
        .await
        .unwrap();
    let outcome = outcome_of(&res);
    let start = Instant::now();
    let pinger = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if feed
                .send(Ok(Bytes::from_static(COMMENT.as_bytes())))
                .is_err()
            {
                break;
            }
        }
    });
    let got = collect(res.into_body()).await;
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert!(got.starts_with(&[DELTA_A, FINISH, COMMENT].concat()));
    assert!(got.ends_with(&format!("{COMMENT}{DONE}")));
    assert_eq!(outcome.end(), Some(StreamEnd::Complete));
    pinger.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn no_first_event_within_ttft_is_a_timeout_at_the_limit() {
    let (feed, body) = channel();
    let start = Instant::now();
    feed.send(Ok(Bytes::from_static(COMMENT.as_bytes())))
        .unwrap();
    let layer = StreamGuardLayer::builder()
        .ttft(Duration::from_secs(3))
        .build()
        .unwrap();
    let err = call(layer, sse_response(body)).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(error_kind(&err), ErrorKind::Timeout);
    assert!(err.to_string().contains("time-to-first-event"), "{err}");
    drop(feed);
}

#[tokio::test(start_paused = true)]
async fn ttft_counts_from_the_call_not_from_the_headers() {
    let (feed, body) = channel();
    let start = Instant::now();
    let layer = StreamGuardLayer::builder()
        .ttft(Duration::from_secs(3))
        .build()
        .unwrap();
    let body = Arc::new(Mutex::new(Some(body)));
    let upstream = service_fn(move |_req: Request<()>| {
        let body = body.lock().unwrap().take().expect("called once");
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, Infallible>(sse_response(body))
        }
    });
    let err = layer
        .layer(upstream)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(error_kind(&err), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    drop(feed);
}

#[tokio::test(start_paused = true)]
async fn an_event_already_there_when_late_headers_arrive_is_taken() {
    let (feed, body) = channel();
    feed.send(Ok(Bytes::from([DELTA_A, FINISH, DONE].concat())))
        .unwrap();
    drop(feed);
    let layer = StreamGuardLayer::builder()
        .ttft(Duration::from_secs(3))
        .build()
        .unwrap();
    let body = Arc::new(Mutex::new(Some(body)));
    let upstream = service_fn(move |_req: Request<()>| {
        let body = body.lock().unwrap().take().expect("called once");
        async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            Ok::<_, Infallible>(sse_response(body))
        }
    });
    let res = layer
        .layer(upstream)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(
        collect(res.into_body()).await,
        [DELTA_A, FINISH, DONE].concat()
    );
}

/// A stream under a guard with a 5 s idle limit, fed through a channel, its first event
/// (`DELTA_A`) read: the feed, the outcome and the rest of the body.
async fn committed_with_idle_5s() -> (Feed, StreamOutcome, Pin<Box<GuardedBody<ChannelBody>>>) {
    let (feed, body) = channel();
    feed.send(Ok(Bytes::from_static(DELTA_A.as_bytes())))
        .unwrap();
    let layer = StreamGuardLayer::builder()
        .idle(Duration::from_secs(5))
        .build()
        .unwrap();
    let res = call(layer, sse_response(body)).await.unwrap();
    let outcome = outcome_of(&res);
    let mut body = Box::pin(res.into_body());
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        DELTA_A.as_bytes()
    );
    (feed, outcome, body)
}

#[tokio::test(start_paused = true)]
async fn a_stall_after_the_first_event_ends_with_a_timeout_event_at_the_idle_limit() {
    let (feed, outcome, mut body) = committed_with_idle_5s().await;
    // Events keep the stream alive; each moves the idle deadline on.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        feed.send(Ok(Bytes::from_static(DELTA_B.as_bytes())))
            .unwrap();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            DELTA_B.as_bytes()
        );
    }
    let silent_from = Instant::now();
    let last = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(silent_from.elapsed(), Duration::from_secs(5));
    assert!(is_error_event(
        std::str::from_utf8(&last).unwrap(),
        "timeout"
    ));
    assert!(body.frame().await.is_none());
    assert_eq!(
        outcome.end().and_then(|e| e.kind()),
        Some(ErrorKind::Timeout)
    );
    // The upstream body was dropped: the guard let go of the connection.
    assert!(feed.is_closed());
}

/// Counts its wakes.
#[derive(Default)]
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn the_idle_limit_wakes_whoever_polled_last() {
    // The guard does not register its timer again when polled again by the same waker; a poll
    // by another waker must still move the timer's wake-up to it.
    let (feed, _outcome, mut body) = committed_with_idle_5s().await;
    let (first, second) = (
        Arc::new(CountingWaker::default()),
        Arc::new(CountingWaker::default()),
    );
    let (first_waker, second_waker) = (
        std::task::Waker::from(first.clone()),
        std::task::Waker::from(second.clone()),
    );
    for _ in 0..2 {
        let mut cx = Context::from_waker(&first_waker);
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
    }
    let mut cx = Context::from_waker(&second_waker);
    assert!(body.as_mut().poll_frame(&mut cx).is_pending());
    assert!(body.as_mut().poll_frame(&mut cx).is_pending());
    tokio::time::advance(Duration::from_secs(5)).await;
    let woken = |w: &CountingWaker| w.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        woken(&second) > 0,
        "the last poll's waker is woken at the limit"
    );
    let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) else {
        panic!("the timeout event is ready");
    };
    assert!(is_error_event(
        std::str::from_utf8(frame.data_ref().unwrap()).unwrap(),
        "timeout"
    ));
    drop(feed);
}

#[tokio::test(start_paused = true)]
async fn the_total_limit_ends_a_stream_that_never_pauses() {
    let (feed, body) = channel();
    let start = Instant::now();
    feed.send(Ok(Bytes::from_static(DELTA_A.as_bytes())))
        .unwrap();
    let layer = StreamGuardLayer::builder()
        .idle(Duration::from_secs(2))
        .total(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = call(layer, sse_response(body)).await.unwrap();
    let outcome = outcome_of(&res);
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if feed
                .send(Ok(Bytes::from_static(DELTA_B.as_bytes())))
                .is_err()
            {
                break;
            }
        }
    });
    let got = collect(res.into_body()).await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    let tail = &got[got.rfind("data: {\"error\"").unwrap()..];
    assert!(is_error_event(tail, "timeout"));
    assert!(tail.contains("total limit"));
    assert_eq!(
        outcome.end().and_then(|e| e.kind()),
        Some(ErrorKind::Timeout)
    );
    writer.await.unwrap();
}

#[tokio::test]
async fn dropping_the_body_reports_abandoned_once() {
    let (feed, body) = channel();
    feed.send(Ok(Bytes::from_static(DELTA_A.as_bytes())))
        .unwrap();
    let res = call(StreamGuardLayer::new(), sse_response(body))
        .await
        .unwrap();
    let outcome = outcome_of(&res);
    let ends = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&ends);
    outcome.on_end(move |end| log.lock().unwrap().push(end));
    let mut body = Box::pin(res.into_body());
    body.frame().await.unwrap().unwrap();
    assert!(ends.lock().unwrap().is_empty());
    drop(body);
    assert_eq!(*ends.lock().unwrap(), [StreamEnd::Abandoned]);
    assert!(feed.is_closed());
}

#[tokio::test]
async fn dropping_the_body_after_finish_reason_is_complete() {
    let (feed, body) = channel();
    feed.send(Ok(Bytes::from([DELTA_A, FINISH].concat())))
        .unwrap();
    let res = call(StreamGuardLayer::new(), sse_response(body))
        .await
        .unwrap();
    let outcome = outcome_of(&res);
    let mut body = Box::pin(res.into_body());
    body.frame().await.unwrap().unwrap();
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert_eq!(outcome.end(), Some(StreamEnd::Complete));
    drop(feed);
}

#[tokio::test]
async fn dropping_the_response_before_reading_is_abandoned() {
    let res = call(
        StreamGuardLayer::new(),
        sse_response(Full::new(Bytes::from(whole_stream()))),
    )
    .await
    .unwrap();
    let outcome = outcome_of(&res);
    drop(res);
    assert_eq!(outcome.end(), Some(StreamEnd::Abandoned));
}

#[tokio::test]
async fn other_responses_pass_through_untouched() {
    let json = Response::builder()
        .header("content-type", "application/json")
        .header("content-length", "2")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let res = call(StreamGuardLayer::new(), json).await.unwrap();
    assert!(res.extensions().get::<StreamOutcome>().is_none());
    assert_eq!(res.headers()["content-length"], "2");
    assert!(!res.body().is_guarded());
    assert_eq!(collect(res.into_body()).await, "{}");

    // An error status is not guarded either, even with an event-stream type: the classifier above
    // reads its status.
    let mut failed = sse_response(Full::new(Bytes::from_static(b"not an event")));
    *failed.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    let res = call(StreamGuardLayer::new(), failed).await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(!res.body().is_guarded());
    assert_eq!(collect(res.into_body()).await, "not an event");
}

#[tokio::test]
async fn a_guarded_response_loses_its_content_length() {
    let text = whole_stream();
    let mut res = sse_response(Full::new(Bytes::from(text.clone())));
    res.headers_mut()
        .insert("content-length", text.len().to_string().parse().unwrap());
    let res = call(StreamGuardLayer::new(), res).await.unwrap();
    assert!(res.headers().get("content-length").is_none());
    assert!(res.body().is_guarded());
}

#[tokio::test]
async fn an_oversized_event_is_an_invalid_response() {
    let layer = StreamGuardLayer::builder()
        .max_event_size(64)
        .build()
        .unwrap();
    let big = format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
        "x".repeat(100)
    );
    let err = call(layer, sse_response(Full::new(Bytes::from(big.clone()))))
        .await
        .unwrap_err();
    assert_eq!(error_kind(&err), ErrorKind::InvalidResponse);

    let sent = format!("{DELTA_A}{big}");
    let layer = StreamGuardLayer::builder()
        .max_event_size(DELTA_A.len())
        .build()
        .unwrap();
    let res = call(layer, sse_response(Full::new(Bytes::from(sent))))
        .await
        .unwrap();
    let got = collect(res.into_body()).await;
    assert!(
        is_error_event(&got[DELTA_A.len()..], "invalid_response"),
        "{got}"
    );
}

#[test]
fn limits_are_validated() {
    for (field, builder) in [
        ("ttft", StreamGuardLayer::builder().ttft(Duration::ZERO)),
        ("idle", StreamGuardLayer::builder().idle(Duration::ZERO)),
        ("total", StreamGuardLayer::builder().total(Duration::ZERO)),
        (
            "max_event_size",
            StreamGuardLayer::builder().max_event_size(0),
        ),
    ] {
        assert_eq!(builder.build().unwrap_err().field(), field);
    }
    let layer = StreamGuardLayer::new();
    assert_eq!(layer.limits().ttft, Duration::from_secs(10));
    assert_eq!(layer.limits().idle, Duration::from_secs(30));
    assert_eq!(layer.limits().total, Duration::from_secs(120));
    assert_eq!(layer.finish_grace(), Duration::from_millis(500));
    assert_eq!(layer.malformed_policy(), MalformedPolicy::Skip);
    assert_eq!(DONE_FRAME, DONE.as_bytes());
}
