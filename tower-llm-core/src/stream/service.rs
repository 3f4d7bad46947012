//! [`StreamGuard`].

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::config::GuardConfig;
use super::metrics::MetricsCache;
use super::{GuardedBody, StreamGuardFuture, StreamGuardLayer};
use crate::{BoxError, Target};

/// Watches `2xx text/event-stream` responses: holds the response back until the first event
/// arrives (failing the call if it does not, or if it is an error), then enforces the stream's
/// idle and total limits and ends a broken stream with an SSE error event instead of passing it
/// off as whole. Other `2xx` answers are read whole (up to a cap) under the same time limits, so a
/// stalled or cut body fails the call; non-`2xx` responses pass through untouched. See the
/// [module docs](crate::stream).
///
/// Clones share the (copied) configuration and the metric handles of the target the guard
/// serves: the guard keeps no state between calls.
#[derive(Clone, Debug)]
pub struct StreamGuard<S> {
    inner: S,
    config: GuardConfig,
    metrics: Arc<MetricsCache>,
}

impl<S> StreamGuard<S> {
    /// Guard `inner` with the default limits.
    pub fn new(inner: S) -> Self {
        Self::from_config(inner, GuardConfig::default())
    }

    pub(crate) fn from_config(inner: S, config: GuardConfig) -> Self {
        StreamGuard {
            inner,
            config,
            metrics: Arc::default(),
        }
    }

    /// A [`StreamGuardLayer`] with the default limits.
    pub fn layer() -> StreamGuardLayer {
        StreamGuardLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for StreamGuard<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<GuardedBody<ResB>>;
    type Error = BoxError;
    type Future = StreamGuardFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // Read before the request moves on: metrics of a streamed answer are labelled by target.
        let target = req.extensions().get::<Target>().cloned();
        let started = Instant::now();
        let mut config = self.config;
        // The answer to a HEAD has no body: nothing to read whole, nothing to judge as JSON.
        if req.method() == http::Method::HEAD {
            config.max_buffered_body_bytes = 0;
        }
        let metrics = self.metrics.for_target(target.as_ref());
        StreamGuardFuture::new(self.inner.call(req), config, started, target, metrics)
    }
}
