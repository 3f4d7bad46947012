//! [`InspectErrorBodyLayer`]: read the (small) body of an error response so the classifier can
//! tell `insufficient_quota` from a rate limit, or `context_length_exceeded` from another 400.
//!
//! Put it innermost, directly around the HTTP client: every layer above then classifies with the
//! provider's own error code, through the [`ProviderError`](crate::ProviderError) extension it leaves on the response.
//! Successful responses pass through untouched (their bodies are not read); error bodies are read
//! up to a limit and handed on whole.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_core::{Classify, ErrorKind, HttpClassifier, InspectErrorBodyLayer};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let upstream = service_fn(|_req: http::Request<()>| async {
//!     let body = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
//!     Ok::<_, std::convert::Infallible>(
//!         http::Response::builder().status(429).body(Full::new(Bytes::from(body))).unwrap(),
//!     )
//! });
//! let svc = ServiceBuilder::new().layer(InspectErrorBodyLayer::new()).service(upstream);
//! let res = svc.oneshot(http::Request::new(())).await.unwrap();
//! let kind = HttpClassifier::default().classify_response(&res).kind();
//! assert_eq!(kind, Some(ErrorKind::QuotaExhausted));
//! // The body is still there for the caller.
//! assert!(res.into_body().collect().await.unwrap().to_bytes().starts_with(b"{\"error\""));
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::Body;
use pin_project::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::provider::parse_error_body;
use crate::{BoxError, ReplayBody};

/// Default bound on how much of an error body is read: provider error bodies are a few hundred bytes.
pub const DEFAULT_ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Layer that applies [`InspectErrorBody`].
#[derive(Clone, Copy, Debug)]
pub struct InspectErrorBodyLayer {
    limit: usize,
}

impl InspectErrorBodyLayer {
    /// Read error bodies up to [`DEFAULT_ERROR_BODY_LIMIT`] bytes.
    pub const fn new() -> Self {
        InspectErrorBodyLayer {
            limit: DEFAULT_ERROR_BODY_LIMIT,
        }
    }

    /// Read error bodies up to `limit` bytes; a longer body is passed on whole but not parsed.
    pub const fn with_limit(limit: usize) -> Self {
        InspectErrorBodyLayer { limit }
    }
}

impl Default for InspectErrorBodyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for InspectErrorBodyLayer {
    type Service = InspectErrorBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InspectErrorBody {
            inner,
            limit: self.limit,
        }
    }
}

/// Reads error response bodies (status ≥ 400) up to a limit and records what the provider said
/// in a [`ProviderError`](crate::ProviderError) response extension.
#[derive(Clone, Debug)]
pub struct InspectErrorBody<S> {
    inner: S,
    limit: usize,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for InspectErrorBody<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<ReplayBody<ResB>>;
    type Error = BoxError;
    type Future = InspectFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        InspectFuture {
            state: State::Calling {
                fut: self.inner.call(req),
            },
            limit: self.limit,
        }
    }
}

type ReadFuture<B> =
    Pin<Box<dyn Future<Output = Result<Response<ReplayBody<B>>, BoxError>> + Send>>;

/// Response future of [`InspectErrorBody`].
#[pin_project]
pub struct InspectFuture<F, B> {
    #[pin]
    state: State<F, B>,
    limit: usize,
}

#[pin_project(project = StateProj)]
enum State<F, B> {
    Calling {
        #[pin]
        fut: F,
    },
    // Boxed: only error responses get here, and their bodies are read once.
    Reading {
        fut: ReadFuture<B>,
    },
}

impl<F, B, E> Future for InspectFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ReplayBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let res = ready!(fut.poll(cx)).map_err(Into::into)?;
                    if res.status().as_u16() < 400 {
                        return Poll::Ready(Ok(res.map(ReplayBody::streaming)));
                    }
                    let limit = *this.limit;
                    let read: ReadFuture<B> = Box::pin(async move {
                        let (mut parts, body) = res.into_parts();
                        let body = ReplayBody::buffer(body, limit).await?;
                        if let Some(bytes) = body.bytes() {
                            if let Some(found) = parse_error_body(parts.status, bytes) {
                                parts.extensions.insert(found);
                            }
                        }
                        Ok(Response::from_parts(parts, body))
                    });
                    this.state.set(State::Reading { fut: read });
                }
                StateProj::Reading { fut } => return fut.as_mut().poll(cx),
            }
        }
    }
}
