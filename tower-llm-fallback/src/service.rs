//! [`Fallback`]: the chain as a tower service.
//!
//! One service per target (heterogeneous stacks boxed as `BoxCloneSyncService`):
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::util::BoxCloneSyncService;
//! use tower::{service_fn, ServiceExt};
//! use tower_llm_core::{BoxError, ReplayBody};
//! use tower_llm_fallback::{FallbackKind, FallbackLayer, FallbackReport, TargetConfig};
//!
//! type Req = http::Request<ReplayBody<Full<Bytes>>>;
//! type Svc = BoxCloneSyncService<Req, http::Response<Full<Bytes>>, BoxError>;
//!
//! fn provider(status: u16, model: &'static str) -> Svc {
//!     BoxCloneSyncService::new(service_fn(move |_req: Req| async move {
//!         let body = format!(r#"{{"model":"{model}","choices":[]}}"#);
//!         Ok::<_, BoxError>(http::Response::builder().status(status).body(Full::new(Bytes::from(body))).unwrap())
//!     }))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let chain = FallbackLayer::builder()
//!     .target(TargetConfig::new("groq", "llama-3.1-70b"))
//!     .target(TargetConfig::new("gemini", "gemini-2.0-flash"))
//!     .build()
//!     .unwrap()
//!     .services([
//!         ("groq/llama-3.1-70b", provider(500, "llama-3.1-70b")),
//!         ("gemini/gemini-2.0-flash", provider(200, "gemini-2.0-flash")),
//!     ])
//!     .unwrap();
//! let req = http::Request::post("http://gateway/v1/chat/completions")
//!     .body(ReplayBody::from_bytes(Bytes::from_static(br#"{"model":"chat","messages":[]}"#)))
//!     .unwrap();
//! let res = chain.oneshot(req).await.unwrap();
//! let report = res.extensions().get::<FallbackReport>().unwrap();
//! assert_eq!(report.fallback, FallbackKind::Target);
//! assert_eq!(report.attempts[0].status, Some(500));
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_llm_core::{BoxError, Classify, HttpClassifier, ReplayableBody};
use tower_service::Service;

use crate::body::FallbackBody;
use crate::chain::Shared;
use crate::future::ResponseFuture;
use crate::handle::FallbackHandle;

/// What every clone of a [`Fallback`] shares.
pub(crate) struct Inner<S, C> {
    pub(crate) shared: Arc<Shared>,
    /// One service per target, by target index (clones of one client, or distinct stacks).
    pub(crate) services: Box<[S]>,
    pub(crate) classifier: C,
}

/// A fallback chain over targets; built by [`FallbackLayer`](crate::FallbackLayer).
///
/// Requests are `http::Request<B>` with a replayable, buffered body (put
/// [`BufferRequestBodyLayer`](tower_llm_core::BufferRequestBodyLayer) above); responses are the
/// answering target's, with its body as a [`FallbackBody`] (a peeked stream prefix in front of the
/// rest, or a cached or static answer). The chain is always ready: each attempt waits for its
/// target's service to be ready, within that target's attempt timeout. Futures need a tokio
/// runtime with time enabled. Services, their futures and the classifier must be `Send` and
/// `'static`: a committed stream's body keeps the rest of the walk, to
/// [resume](crate::resume) the stream on another target if it is cut.
pub struct Fallback<S, C = HttpClassifier> {
    inner: Arc<Inner<S, C>>,
}

impl<S, C> Fallback<S, C> {
    pub(crate) fn new(shared: Arc<Shared>, services: Box<[S]>, classifier: C) -> Self {
        Fallback {
            inner: Arc::new(Inner {
                shared,
                services,
                classifier,
            }),
        }
    }

    /// A handle on the chain's health, cooldowns and saved state.
    pub fn handle(&self) -> FallbackHandle {
        FallbackHandle::new(Arc::clone(&self.inner.shared))
    }
}

impl<S, C> Clone for Fallback<S, C> {
    fn clone(&self) -> Self {
        Fallback {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S, C> fmt::Debug for Fallback<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("targets", &self.inner.shared.targets.len())
            .finish_non_exhaustive()
    }
}

impl<S, B, ResB, C> Service<Request<B>> for Fallback<S, C>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: ReplayableBody + Send + 'static,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
    C: Classify<Response<ResB>> + Send + Sync + 'static,
{
    type Response = Response<FallbackBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, ResB, C>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ResponseFuture::new(Arc::clone(&self.inner), req)
    }
}
