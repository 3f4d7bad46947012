//! `x-request-id` on every request and its answer: [`RequestIdLayer`].
//!
//! A request without the header gets a fresh random (version 4) UUID before anything else sees
//! it, so the request span, the upstream request and the logs all carry it; the answer carries
//! the request's id unless it has one already (the gateway's response allow-list drops an
//! upstream's own `x-request-id`, so the client gets its request's).
//!
//! It does what tower-http's `SetRequestIdLayer` and `PropagateRequestIdLayer` do together, for
//! one header, without their `RequestId` extensions (one map insert on the request and one on
//! the response, which nothing here reads) and without formatting the UUID into a `String`
//! first: about 2,500 instructions less per request (callgrind, `BENCHMARKS.md`).
//!
//! ```
//! # use std::convert::Infallible;
//! # use http::{Request, Response};
//! # use tower::{service_fn, Layer, ServiceExt};
//! # use tower_llm_gateway::request_id::{RequestIdLayer, X_REQUEST_ID};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = RequestIdLayer.layer(service_fn(|req: Request<()>| async move {
//!     // The inner service sees the id the layer set.
//!     assert!(req.headers().contains_key(X_REQUEST_ID));
//!     Ok::<_, Infallible>(Response::new(()))
//! }));
//! let res = svc.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(res.headers()[X_REQUEST_ID].len(), 36);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderValue, Request, Response};
use pin_project::pin_project;
use tower::{Layer, Service};
use uuid::Uuid;

/// The header: `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Sets `x-request-id` on requests without one and returns the request's id on the answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Clone, Debug)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for RequestIdService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        // One lookup for both the read and the insert (a `get` then an `insert` hash and probe
        // the map twice).
        let id = req
            .headers_mut()
            .entry(X_REQUEST_ID)
            .or_insert_with(new_id)
            .clone();
        RequestIdFuture {
            inner: self.inner.call(req),
            id: Some(id),
        }
    }
}

/// A fresh random UUID, hyphenated, lower case.
fn new_id() -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Uuid::new_v4().hyphenated().encode_lower(&mut text);
    // Owned by a shared `Bytes`: one allocation, which the request's copy and the answer's share.
    // (A value copied from a slice is a plain buffer, which the first clone allocates again to
    // share.) Hex digits and hyphens: always a valid header value.
    HeaderValue::from_maybe_shared(Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The response future of [`RequestIdService`].
#[pin_project]
#[derive(Debug)]
pub struct RequestIdFuture<F> {
    #[pin]
    inner: F,
    id: Option<HeaderValue>,
}

impl<F, ResB, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take() {
            // Kept when the answer carries one already; one lookup either way.
            res.headers_mut().entry(X_REQUEST_ID).or_insert(id);
        }
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{service_fn, ServiceExt};

    use super::*;

    /// A service answering with the request's headers' `x-request-id` seen, and `answer_id` as
    /// its own when given.
    async fn call(
        req: Request<()>,
        answer_id: Option<&'static str>,
    ) -> (Option<HeaderValue>, Response<()>) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let inner = {
            let seen = std::sync::Arc::clone(&seen);
            service_fn(move |req: Request<()>| {
                *seen.lock().unwrap() = req.headers().get(X_REQUEST_ID).cloned();
                let mut res = Response::new(());
                if let Some(id) = answer_id {
                    res.headers_mut()
                        .insert(X_REQUEST_ID, HeaderValue::from_static(id));
                }
                async move { Ok::<_, Infallible>(res) }
            })
        };
        let res = RequestIdLayer.layer(inner).oneshot(req).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        (seen, res)
    }

    #[tokio::test]
    async fn a_request_without_an_id_gets_a_uuid_that_comes_back() {
        let (seen, res) = call(Request::new(()), None).await;
        let seen = seen.expect("the inner service saw an id");
        assert_eq!(res.headers()[X_REQUEST_ID], seen);
        let id = Uuid::parse_str(seen.to_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(seen.to_str().unwrap(), id.hyphenated().to_string());
        let (other, _) = call(Request::new(()), None).await;
        assert_ne!(other.unwrap(), seen, "each request its own");
    }

    #[tokio::test]
    async fn a_client_s_id_is_kept_and_an_answer_s_own_is_left_alone() {
        let req = || {
            Request::builder()
                .header(X_REQUEST_ID, "req-42")
                .body(())
                .unwrap()
        };
        let (seen, res) = call(req(), None).await;
        assert_eq!(seen.unwrap(), "req-42");
        assert_eq!(res.headers()[X_REQUEST_ID], "req-42");
        let (_, res) = call(req(), Some("answer-7")).await;
        assert_eq!(res.headers()[X_REQUEST_ID], "answer-7");
        assert_eq!(res.headers().get_all(X_REQUEST_ID).iter().count(), 1);
    }
}
