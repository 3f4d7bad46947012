//! `StreamGuard` on non-stream `2xx` answers: the body is read whole inside the response future,
//! under the guard's `ttft` / `idle` / `total` limits, so a stalled or broken body fails the call
//! (`Timeout` / `Transport`) instead of hanging or reaching the caller broken; a JSON answer read
//! whole that is not one JSON value fails it with `InvalidResponse`, and one that is a provider's
//! error object with the kind the object names.
//!
//! The upstream is a scripted body whose drop is observable; the clock is paused.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};
use tower::util::BoxCloneService;
use tower::{service_fn, Layer, ServiceExt};
use tower_llm_core::{BoxError, ClassifiedError, ErrorKind, StreamGuardLayer};

/// One step of a scripted body.
enum Step {
    Data(&'static str),
    Trailers(HeaderMap),
    Wait(Duration),
    Fail,
    /// Silence, forever.
    Stall,
}

/// A body that plays its steps and records when it is dropped.
struct Script {
    steps: VecDeque<Step>,
    wait: Option<Pin<Box<Sleep>>>,
    dropped: Arc<AtomicBool>,
}

impl Drop for Script {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl Body for Script {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(wait) = self.wait.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.wait = None;
            }
            return match self.steps.pop_front() {
                None => Poll::Ready(None),
                Some(Step::Data(s)) => {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(s.as_bytes())))))
                }
                Some(Step::Trailers(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                Some(Step::Wait(d)) => {
                    self.wait = Some(Box::pin(tokio::time::sleep(d)));
                    continue;
                }
                Some(Step::Fail) => Poll::Ready(Some(Err("connection reset by peer".into()))),
                Some(Step::Stall) => {
                    self.steps.push_front(Step::Stall);
                    Poll::Pending
                }
            };
        }
    }
}

type Upstream = BoxCloneService<Request<()>, Response<Script>, Infallible>;

/// A service answering once with `status`, `content-type: application/json` and the scripted
/// body; the flag tells when the body was dropped.
fn upstream(status: StatusCode, steps: Vec<Step>) -> (Upstream, Arc<AtomicBool>) {
    upstream_typed(status, Some("application/json"), steps)
}

/// [`upstream`] with another `content-type`, or none.
fn upstream_typed(
    status: StatusCode,
    content_type: Option<&str>,
    steps: Vec<Step>,
) -> (Upstream, Arc<AtomicBool>) {
    let dropped = Arc::new(AtomicBool::new(false));
    let body = Script {
        steps: steps.into(),
        wait: None,
        dropped: dropped.clone(),
    };
    let mut res = Response::builder().status(status);
    if let Some(content_type) = content_type {
        res = res.header("content-type", content_type);
    }
    let res = res.header("x-request-id", "req-1").body(body).unwrap();
    let res = Arc::new(Mutex::new(Some(res)));
    let svc = service_fn(move |_req: Request<()>| {
        let res = res.lock().unwrap().take().expect("called once");
        async move { Ok::<_, Infallible>(res) }
    });
    (BoxCloneService::new(svc), dropped)
}

fn kind(err: &BoxError) -> ErrorKind {
    err.downcast_ref::<ClassifiedError>()
        .expect("a classified error")
        .kind()
}

fn guard() -> StreamGuardLayer {
    StreamGuardLayer::builder()
        .ttft(Duration::from_secs(10))
        .idle(Duration::from_secs(30))
        .total(Duration::from_secs(120))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_json_body_that_stalls_after_one_chunk_fails_with_timeout_at_the_idle_limit() {
    let (svc, dropped) = upstream(StatusCode::OK, vec![Step::Data("{\"id\":"), Step::Stall]);
    let start = Instant::now();
    let err = guard()
        .layer(svc)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert!(dropped.load(Ordering::SeqCst), "the stalled body is let go");
}

#[tokio::test(start_paused = true)]
async fn a_json_body_with_no_byte_fails_with_timeout_at_ttft() {
    let (svc, dropped) = upstream(StatusCode::OK, vec![Step::Stall]);
    let start = Instant::now();
    let err = guard()
        .layer(svc)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_slow_trickle_is_cut_at_the_total_limit() {
    // A chunk every 20 s: never idle for 30 s, but past the 50 s total.
    let steps = (0..10)
        .flat_map(|_| [Step::Wait(Duration::from_secs(20)), Step::Data("x")])
        .collect();
    let (svc, _) = upstream(StatusCode::OK, steps);
    let layer = StreamGuardLayer::builder()
        .ttft(Duration::from_secs(25))
        .idle(Duration::from_secs(30))
        .total(Duration::from_secs(50))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = layer
        .layer(svc)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), Duration::from_secs(50));
}

#[tokio::test(start_paused = true)]
async fn a_json_body_that_fails_mid_way_fails_with_transport() {
    let (svc, dropped) = upstream(
        StatusCode::OK,
        vec![Step::Data("{\"id\":"), Step::Data("\"c1\","), Step::Fail],
    );
    let err = guard()
        .layer(svc)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ErrorKind::Transport);
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_whole_json_body_arrives_with_the_same_bytes_headers_and_trailers() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let (svc, dropped) = upstream(
        StatusCode::OK,
        vec![
            Step::Data("{\"id\":"),
            Step::Wait(Duration::from_secs(5)),
            Step::Data("\"c1\","),
            Step::Data("\"object\":\"chat.completion\"}"),
            Step::Trailers(trailers.clone()),
        ],
    );
    let res = guard().layer(svc).oneshot(Request::new(())).await.unwrap();
    // Read whole before the future resolved: the upstream body is already gone.
    assert!(dropped.load(Ordering::SeqCst));
    assert!(res.body().is_buffered());
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["x-request-id"], "req-1");
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers(), Some(&trailers));
    assert_eq!(
        collected.to_bytes(),
        Bytes::from_static(b"{\"id\":\"c1\",\"object\":\"chat.completion\"}")
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_cap_passes_through_with_all_its_bytes() {
    let (svc, dropped) = upstream(
        StatusCode::OK,
        vec![
            Step::Data("12345678"),
            Step::Data("abcdefgh"),
            Step::Data("ABCDEFGH"),
        ],
    );
    let layer = StreamGuardLayer::builder()
        .max_buffered_body_bytes(10)
        .build()
        .unwrap();
    let res = layer.layer(svc).oneshot(Request::new(())).await.unwrap();
    assert!(!res.body().is_buffered());
    assert!(!dropped.load(Ordering::SeqCst), "the rest streams through");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, Bytes::from_static(b"12345678abcdefghABCDEFGH"));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_mid_read_drops_the_body() {
    let (svc, dropped) = upstream(StatusCode::OK, vec![Step::Data("{\"id\":"), Step::Stall]);
    let mut fut = Box::pin(guard().layer(svc).oneshot(Request::new(())));
    assert!(futures_util::FutureExt::now_or_never(&mut fut).is_none());
    assert!(!dropped.load(Ordering::SeqCst), "still reading");
    drop(fut);
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn an_error_status_is_not_read() {
    let (svc, dropped) = upstream(StatusCode::SERVICE_UNAVAILABLE, vec![Step::Stall]);
    let res = guard().layer(svc).oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!res.body().is_buffered());
    assert!(!dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_zero_cap_passes_non_stream_answers_through_unread() {
    let (svc, dropped) = upstream(StatusCode::OK, vec![Step::Data("{}"), Step::Stall]);
    let layer = StreamGuardLayer::builder()
        .max_buffered_body_bytes(0)
        .build()
        .unwrap();
    let res = layer.layer(svc).oneshot(Request::new(())).await.unwrap();
    assert!(!res.body().is_buffered());
    assert!(!dropped.load(Ordering::SeqCst));
}

fn classified(err: &BoxError) -> &ClassifiedError {
    err.downcast_ref::<ClassifiedError>()
        .expect("a classified error")
}

/// A completion cut in half, as the chaos mock's `malformed-event` sends it on a non-stream
/// request (issue 15 finding (a): it used to reach the caller as a `200`).
#[tokio::test(start_paused = true)]
async fn a_garbled_json_body_fails_with_invalid_response() {
    let (svc, dropped) = upstream(
        StatusCode::OK,
        vec![
            Step::Data("{\"id\":\"c1\",\"object\":\"chat.completion\","),
            Step::Data("\"choices\":[{\"index\":0,\"message\":{\"role\":\"assis"),
        ],
    );
    let err = guard()
        .layer(svc)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ErrorKind::InvalidResponse);
    assert!(
        classified(&err).message().contains("not valid JSON"),
        "{err}"
    );
    assert!(dropped.load(Ordering::SeqCst));
}

/// The chaos mock's `first-event-error` on a non-stream request: an OpenAI error object with a
/// `200`.
#[tokio::test(start_paused = true)]
async fn an_error_object_with_a_200_fails_with_the_kind_it_names_and_its_message() {
    let (svc, _) = upstream(
        StatusCode::OK,
        vec![Step::Data(
            r#"{"error":{"message":"the model failed","type":"server_error","param":null,"code":"server_error"}}"#,
        )],
    );
    let err = guard()
        .layer(svc)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ErrorKind::ServerError);
    assert!(
        classified(&err).message().contains("the model failed"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_error_object_with_a_200_is_rate_limited_with_its_delay() {
    let (svc, _) = upstream(
        StatusCode::OK,
        vec![
            Step::Data(r#"{"error":{"message":"Rate limit reached. Please try again in 1.5s.","#),
            Step::Data(r#""type":"requests","code":"rate_limit_exceeded"}}"#),
        ],
    );
    let err = guard()
        .layer(svc)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ErrorKind::RateLimited);
    assert_eq!(
        classified(&err).retry_after(),
        Some(Duration::from_millis(1500))
    );
    assert!(classified(&err).message().contains("Rate limit reached"));
}

/// An error object that names no kind is a `ServerError`.
#[tokio::test(start_paused = true)]
async fn an_error_string_with_a_200_is_a_server_error() {
    let (svc, _) = upstream(
        StatusCode::OK,
        vec![Step::Data(r#"{"error":"upstream died"}"#)],
    );
    let err = guard()
        .layer(svc)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ErrorKind::ServerError);
    assert!(classified(&err).message().contains("upstream died"));
}

const COMPLETION: &str = concat!(
    r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o","#,
    r#""choices":[{"index":0,"message":{"role":"assistant","content":"Hello \u00e9 \"there\""},"#,
    r#""finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7},"#,
    r#""error":null}"#,
    "\n"
);

/// A valid completion (here with `"error": null`, as OpenAI's Responses API sends on success)
/// passes byte for byte, however it was chunked.
#[tokio::test(start_paused = true)]
async fn a_valid_completion_passes_byte_identical() {
    for split in [1, 7, 40, COMPLETION.len()] {
        let steps = COMPLETION
            .as_bytes()
            .chunks(split)
            .map(|c| {
                let s: &'static str = Box::leak(std::str::from_utf8(c).unwrap().into());
                Step::Data(s)
            })
            .collect();
        let (svc, _) = upstream(StatusCode::OK, steps);
        let res = guard().layer(svc).oneshot(Request::new(())).await.unwrap();
        assert!(res.body().is_buffered());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            Bytes::from_static(COMPLETION.as_bytes()),
            "split {split}"
        );
    }
}

/// Other content types are not judged: a text or binary answer passes as it is.
#[tokio::test(start_paused = true)]
async fn a_non_json_content_type_passes_untouched() {
    for content_type in [
        "text/plain; charset=utf-8",
        "audio/mpeg",
        "application/x-ndjson",
    ] {
        let (svc, _) = upstream_typed(
            StatusCode::OK,
            Some(content_type),
            vec![Step::Data(
                "{\"error\":{\"message\":\"not judged\"}} and {not json",
            )],
        );
        let res = guard().layer(svc).oneshot(Request::new(())).await.unwrap();
        assert_eq!(res.headers()["content-type"], content_type);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            Bytes::from_static(b"{\"error\":{\"message\":\"not judged\"}} and {not json")
        );
    }
}

/// Without a `content-type` the body is judged as JSON; an empty one passes (nothing claimed
/// JSON), as does any answer to a `HEAD`.
#[tokio::test(start_paused = true)]
async fn without_a_content_type_a_body_must_be_json_unless_empty() {
    let (svc, _) = upstream_typed(StatusCode::OK, None, vec![Step::Data("<html>oops</html>")]);
    let err = guard()
        .layer(svc)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ErrorKind::InvalidResponse);

    let (svc, _) = upstream_typed(StatusCode::OK, None, vec![]);
    let res = guard().layer(svc).oneshot(Request::new(())).await.unwrap();
    assert!(res
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());

    let (svc, _) = upstream(StatusCode::OK, vec![]);
    let head = Request::head("/v1/models").body(()).unwrap();
    let res = guard().layer(svc).oneshot(head).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // An empty body that says it is JSON is not a JSON answer.
    let (svc, _) = upstream(StatusCode::OK, vec![]);
    let err = guard()
        .layer(svc)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), ErrorKind::InvalidResponse);
}

/// Past `max_buffered_body_bytes` the body is not judged (it is not in memory): prefix and rest
/// reach the caller as sent.
#[tokio::test(start_paused = true)]
async fn a_garbled_body_over_the_cap_is_not_judged() {
    let (svc, _) = upstream(
        StatusCode::OK,
        vec![Step::Data("{\"id\":\"c1\","), Step::Data("\"choi")],
    );
    let layer = StreamGuardLayer::builder()
        .max_buffered_body_bytes(8)
        .build()
        .unwrap();
    let res = layer.layer(svc).oneshot(Request::new(())).await.unwrap();
    assert!(!res.body().is_buffered());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, Bytes::from_static(b"{\"id\":\"c1\",\"choi"));
}
