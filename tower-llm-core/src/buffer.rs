//! [`BufferRequestBodyLayer`]: make any request body replayable, up to a size limit.
//!
//! Retry and fallback layers take requests whose body implements
//! [`ReplayableBody`](crate::ReplayableBody). Put this layer above them to turn any body (hyper's
//! `Incoming`, axum's `Body`) into a [`ReplayBody`]: a body that ends within the limit can be sent
//! again; a longer one is sent once, whole, and says why it cannot be replayed.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_core::{BufferRequestBodyLayer, ReplayBody, ReplayableBody};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(BufferRequestBodyLayer::new(1024 * 1024))
//!     .service(service_fn(|req: http::Request<ReplayBody<Full<Bytes>>>| async move {
//!         Ok::<_, std::convert::Infallible>(req.body().try_clone().is_some())
//!     }));
//! let req = http::Request::new(Full::new(Bytes::from_static(b"{}")));
//! assert!(svc.oneshot(req).await.unwrap());
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::{BoxError, ReplayBody};

/// Default replay limit for request bodies: 4 MiB holds any chat request with room to spare.
pub const DEFAULT_REQUEST_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Layer that applies [`BufferRequestBody`].
#[derive(Clone, Copy, Debug)]
pub struct BufferRequestBodyLayer {
    limit: usize,
}

impl BufferRequestBodyLayer {
    /// Buffer request bodies up to `limit` bytes.
    pub const fn new(limit: usize) -> Self {
        BufferRequestBodyLayer { limit }
    }
}

impl Default for BufferRequestBodyLayer {
    fn default() -> Self {
        Self::new(DEFAULT_REQUEST_BODY_LIMIT)
    }
}

impl<S> Layer<S> for BufferRequestBodyLayer {
    type Service = BufferRequestBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BufferRequestBody {
            inner,
            limit: self.limit,
        }
    }
}

/// Reads request bodies into a [`ReplayBody`] before calling the inner service.
#[derive(Clone, Debug)]
pub struct BufferRequestBody<S> {
    inner: S,
    limit: usize,
}

impl<S, B> Service<Request<B>> for BufferRequestBody<S>
where
    S: Service<Request<ReplayBody<B>>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The inner service was made ready for this call: take it, leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.limit;
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = ReplayBody::buffer(body, limit).await?;
            inner
                .call(Request::from_parts(parts, body))
                .await
                .map_err(Into::into)
        })
    }
}
