//! How long a response holds its call's permit: [`HoldPermit`] policies and [`PermitBody`].
//!
//! An LLM call is not over when the response headers arrive: a streamed answer keeps the
//! connection (and the provider's capacity) busy until its last event. The default policy,
//! [`ReleaseOnBodyEnd`], moves the permit into the response body, which releases it when the body
//! ends, fails, or is dropped (a client that disconnects mid-stream). Non-HTTP responses use
//! [`ReleaseOnResponse`] or [`ReleaseWithUsage`].
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_bulkhead::BulkheadLayer;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(BulkheadLayer::new())
//!     .service(service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"hi"))))
//!     }));
//! let handle = svc.handle();
//! let res = svc.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(handle.in_flight(), 1, "the body holds the permit");
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body, "hi");
//! assert_eq!(handle.in_flight(), 0, "released when the body ended");
//! # }
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project::{pin_project, pinned_drop};

use crate::permit::Permit;
use crate::usage::UsageScanner;

/// Decides how long a response keeps its call's [`Permit`], and may read the response's token
/// usage.
pub trait HoldPermit<Res>: Clone + Send + Sync + 'static {
    /// The response handed to the caller.
    type Response;

    /// Attach (or drop) `permit` to `response`.
    fn hold(&self, response: Res, permit: Permit) -> Self::Response;
}

/// For `http::Response<B>` (the default): the permit lives in the body ([`PermitBody`]) until it
/// ends, fails or is dropped. With a token limit, the body's `usage` (JSON or the final SSE event)
/// corrects the charge.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReleaseOnBodyEnd;

impl<B: Body> HoldPermit<http::Response<B>> for ReleaseOnBodyEnd {
    type Response = http::Response<PermitBody<B>>;

    #[inline]
    fn hold(&self, response: http::Response<B>, mut permit: Permit) -> Self::Response {
        if permit.tracks_tokens() {
            let content_type = response.headers().get(http::header::CONTENT_TYPE);
            if let Some(scanner) = UsageScanner::for_content_type(content_type) {
                permit.watch_usage(scanner);
            }
        }
        response.map(|body| PermitBody::new(body, permit))
    }
}

/// For any response type: the permit is released as soon as the response is returned.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReleaseOnResponse;

impl<Res> HoldPermit<Res> for ReleaseOnResponse {
    type Response = Res;

    fn hold(&self, response: Res, permit: Permit) -> Res {
        drop(permit);
        response
    }
}

/// For a typed response that reports its token use: `usage(&response)` corrects the token
/// charge, then the permit is released.
#[derive(Clone, Copy)]
pub struct ReleaseWithUsage<F> {
    usage: F,
}

impl<F> ReleaseWithUsage<F> {
    /// Read usage with `usage`.
    pub fn new(usage: F) -> Self {
        ReleaseWithUsage { usage }
    }
}

impl<F> fmt::Debug for ReleaseWithUsage<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleaseWithUsage").finish_non_exhaustive()
    }
}

impl<F, Res> HoldPermit<Res> for ReleaseWithUsage<F>
where
    F: Fn(&Res) -> Option<u64> + Clone + Send + Sync + 'static,
{
    type Response = Res;

    fn hold(&self, response: Res, mut permit: Permit) -> Res {
        if permit.tracks_tokens() {
            if let Some(actual) = (self.usage)(&response) {
                permit.report_usage(actual);
            }
        }
        drop(permit);
        response
    }
}

/// A response body that holds its call's [`Permit`] until the body ends, fails, or is dropped.
///
/// It adds two words to the body (the permit), so that moving an `http::Response` of it stays
/// cheap.
#[pin_project(PinnedDrop)]
pub struct PermitBody<B> {
    #[pin]
    inner: B,
    permit: Option<Permit>,
}

impl<B: Body> PermitBody<B> {
    #[inline]
    fn new(inner: B, permit: Permit) -> Self {
        let mut body = PermitBody {
            permit: Some(permit),
            inner,
        };
        if body.inner.is_end_stream() {
            finish(&mut body.permit);
        }
        body
    }
}

impl<B> PermitBody<B> {
    /// Whether the body still holds its permit (it has not ended).
    pub fn holds_permit(&self) -> bool {
        self.permit.is_some()
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

/// The body is over: read its usage, then release the permit.
#[inline]
fn finish(permit: &mut Option<Permit>) {
    if let Some(mut permit) = permit.take() {
        let usage = permit.usage_mut().and_then(UsageScanner::finish);
        if let Some(actual) = usage.and_then(|u| u.total()) {
            permit.report_usage(actual);
        }
    }
}

impl<B: Body> Body for PermitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                let scanner = this.permit.as_mut().and_then(Permit::usage_mut);
                if let (Some(scanner), Some(data)) = (scanner, f.data_ref()) {
                    scanner.feed(data);
                }
                if this.inner.is_end_stream() {
                    finish(this.permit);
                }
            }
            Some(Err(_)) | None => finish(this.permit),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[pinned_drop]
impl<B> PinnedDrop for PermitBody<B> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        // Dropped before its end (a client went away): keep any usage a stream already reported.
        if let Some(mut permit) = this.permit.take() {
            let usage = permit.usage_mut().and_then(|s| s.seen());
            if let Some(actual) = usage.and_then(|u| u.total()) {
                permit.report_usage(actual);
            }
        }
    }
}

impl<B> fmt::Debug for PermitBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PermitBody")
            .field("holds_permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
