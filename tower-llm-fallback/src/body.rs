//! [`FallbackBody`]: the body of every response the chain returns.
//!
//! It is the answering target's body (after a streamed answer's peeked first event, which it
//! replays in front of the rest), or a cached or static answer held in memory. The type is opaque
//! so the chain can watch a stream after it committed to it (stream integrity) without changing
//! its public signature; it is a plain `http_body::Body` of `Bytes`.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceExt};
//! use tower_llm_core::ReplayBody;
//! use tower_llm_fallback::{FallbackBody, FallbackLayer, TargetConfig};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let client = service_fn(|_req: http::Request<ReplayBody<Full<Bytes>>>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"{}"))))
//! });
//! let svc = FallbackLayer::builder()
//!     .target(TargetConfig::new("local", ""))
//!     .build()
//!     .unwrap()
//!     .services([("local", client)])
//!     .unwrap();
//! let req = http::Request::new(ReplayBody::from_bytes(Bytes::from_static(b"{}")));
//! let res: http::Response<FallbackBody<Full<Bytes>>> = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "{}");
//! # }
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use tower_llm_core::{BoxError, ReplayBody};
use tracing::Span;

use crate::resume::watch::Watch;

/// The body of a response from [`Fallback`](crate::Fallback).
///
/// A committed stream's body also watches what it hands on, so that a stream cut after its
/// first event can be finished on another target ([`resume`](crate::resume)). It holds the
/// answering attempt's span ([`trace`](crate::trace)), entered while the body is read and closed
/// when the body is dropped.
#[pin_project]
pub struct FallbackBody<B> {
    #[pin]
    inner: ReplayBody<B>,
    watch: Option<Box<Watch<B>>>,
    span: Span,
}

impl<B> FallbackBody<B> {
    pub(crate) fn new(inner: ReplayBody<B>) -> Self {
        FallbackBody {
            inner,
            watch: None,
            span: Span::none(),
        }
    }

    /// A committed stream, watched for resumption, read within the attempt's `span`.
    pub(crate) fn watched(inner: ReplayBody<B>, watch: Watch<B>, span: Span) -> Self {
        FallbackBody {
            inner,
            watch: Some(Box::new(watch)),
            span,
        }
    }

    /// Read this body within `span` (the attempt that answered). In place: the response
    /// around it is not moved for it.
    pub(crate) fn set_span(&mut self, span: Span) {
        self.span = span;
    }

    /// The body, its watch and its span, taken apart (a continuation handed to the stream it
    /// resumes).
    pub(crate) fn into_parts(self) -> (ReplayBody<B>, Option<Box<Watch<B>>>, Span) {
        (self.inner, self.watch, self.span)
    }

    /// The whole body, when it is held in memory (a cached, static or buffered answer).
    pub fn bytes(&self) -> Option<&Bytes> {
        self.inner.bytes()
    }
}

impl<B> fmt::Debug for FallbackBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the bytes: they hold completions.
        f.debug_struct("FallbackBody")
            .field("inner", &self.inner)
            .field("watched", &self.watch.is_some())
            .finish()
    }
}

impl<B> Body for FallbackBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.watch {
            Some(watch) => watch.poll_frame(this.inner, this.span, cx),
            None => {
                let _entered = this.span.enter();
                this.inner.poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // A watched stream may still be resumed, or owe an error event.
        self.watch.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.watch.is_some() {
            // A resumed stream's length is not the first stream's.
            return SizeHint::default();
        }
        self.inner.size_hint()
    }
}
