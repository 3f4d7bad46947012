//! The request every per-layer bench sends and the in-memory upstream that answers it.
//!
//! The request is what a gateway hands its stack after reading one chat completion: `POST`, an
//! absolute URI and four headers whose bytes are slices of one shared buffer (as hyper's server
//! builds them, so cloning them is a reference count, not a copy), and a 199-byte JSON body
//! already buffered ([`Full`], replayable). The upstream answers `200` with a small JSON
//! completion and `content-type: application/json` (or `503`, or never), at once.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use tower::Service;

/// The request type of every per-layer bench.
pub type Req = Request<Full<Bytes>>;
/// The response type of [`Upstream`].
pub type Res = Response<Full<Bytes>>;

/// The request body: a short chat completion request.
pub const BODY: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words, and nothing else at all, please."}],"max_tokens":32,"temperature":0}"#;

/// The answer body: a short chat completion.
pub const ANSWER: &[u8] = br#"{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how are you?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":7,"total_tokens":37}}"#;

/// The bytes a server read off the wire: the request's URI and header values are slices of them.
pub static WIRE: Bytes = Bytes::from_static(
    b"http://127.0.0.1:8080/v1/chat/completionsapplication/jsonBearer sk-bench-0000000000000000tower-llm-bench/0.1",
);

/// The bench request (see the [module docs](self)); `wire` is normally [`WIRE`].
pub fn request(wire: &Bytes) -> Req {
    request_with(wire, Full::new(Bytes::from_static(BODY)))
}

/// The bench request with `body` (normally [`BODY`] in another body type, such as a
/// `ReplayBody`); `wire` is normally [`WIRE`].
pub fn request_with<B>(wire: &Bytes, body: B) -> Request<B> {
    let value = |from: usize, to: usize| {
        HeaderValue::from_maybe_shared(wire.slice(from..to)).unwrap_or(HeaderValue::from_static(""))
    };
    let mut req = Request::new(body);
    *req.method_mut() = Method::POST;
    *req.uri_mut() = Uri::from_maybe_shared(wire.slice(0..41)).unwrap_or_default();
    let headers = req.headers_mut();
    headers.insert(header::CONTENT_TYPE, value(41, 57));
    headers.insert(header::AUTHORIZATION, value(57, 89));
    headers.insert(header::ACCEPT, value(41, 57));
    headers.insert(header::USER_AGENT, value(89, 108));
    req
}

#[derive(Clone, Debug)]
enum Behaviour {
    Healthy,
    Failing,
    FailEveryOther(Arc<AtomicU64>),
    HangOnPath(&'static str),
}

/// The in-memory upstream: answers at once (or never, see [`Upstream::hang_on_path`]).
#[derive(Clone, Debug)]
pub struct Upstream {
    behaviour: Behaviour,
}

impl Upstream {
    /// Always `200` with [`ANSWER`].
    pub fn healthy() -> Self {
        Upstream {
            behaviour: Behaviour::Healthy,
        }
    }

    /// Always `503` (an OpenAI-shaped overload error body).
    pub fn failing() -> Self {
        Upstream {
            behaviour: Behaviour::Failing,
        }
    }

    /// `503` on the 1st, 3rd, 5th... call (counted over all clones), `200` on the others: with
    /// one retry, every call fails once and succeeds on its retry.
    pub fn fail_every_other() -> Self {
        Upstream {
            behaviour: Behaviour::FailEveryOther(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Never answers requests whose URI path is `path`; answers others like [`healthy`](Self::healthy).
    /// Used to hold a bulkhead's only permit.
    pub fn hang_on_path(path: &'static str) -> Self {
        Upstream {
            behaviour: Behaviour::HangOnPath(path),
        }
    }
}

fn answer(status: StatusCode) -> Res {
    let body = if status.is_success() {
        Bytes::from_static(ANSWER)
    } else {
        Bytes::from_static(
            br#"{"error":{"message":"overloaded","type":"server_error","code":null}}"#,
        )
    };
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Any request body: the upstream reads only the request's path.
impl<B> Service<Request<B>> for Upstream {
    type Response = Res;
    type Error = Infallible;
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let status = match &self.behaviour {
            Behaviour::Healthy => StatusCode::OK,
            Behaviour::Failing => StatusCode::SERVICE_UNAVAILABLE,
            Behaviour::FailEveryOther(calls) => {
                if calls.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
            Behaviour::HangOnPath(path) => {
                if req.uri().path() == *path {
                    return UpstreamFuture(None);
                }
                StatusCode::OK
            }
        };
        drop(req);
        UpstreamFuture(Some(answer(status)))
    }
}

/// [`Upstream`]'s response future: ready at once, or pending forever.
#[derive(Debug)]
pub struct UpstreamFuture(Option<Res>);

impl Future for UpstreamFuture {
    type Output = Result<Res, Infallible>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.take() {
            Some(res) => Poll::Ready(Ok(res)),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::{block_on, thread_waker};
    use tower::ServiceExt;

    #[test]
    fn the_request_is_what_a_server_hands_over() {
        let req = request(&WIRE);
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().to_string(),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
        assert_eq!(req.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            req.headers()[header::AUTHORIZATION],
            "Bearer sk-bench-0000000000000000"
        );
        assert_eq!(req.headers()[header::USER_AGENT], "tower-llm-bench/0.1");
        assert_eq!(BODY.len(), 199);
    }

    #[test]
    fn upstreams_answer_as_named() {
        let waker = thread_waker();
        let status = |svc: Upstream| {
            block_on(&waker, svc.oneshot(request(&WIRE)))
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        };
        assert_eq!(status(Upstream::healthy()), 200);
        assert_eq!(status(Upstream::failing()), 503);
        let alternating = Upstream::fail_every_other();
        assert_eq!(status(alternating.clone()), 503);
        assert_eq!(status(alternating.clone()), 200);
        assert_eq!(status(alternating), 503);
        assert_eq!(status(Upstream::hang_on_path("/hang")), 200);
        let mut hang = Upstream::hang_on_path("/v1/chat/completions");
        let mut fut = std::pin::pin!(hang.call(request(&WIRE)));
        let mut cx = Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
}
