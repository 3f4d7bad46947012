//! [`Retry`]: the service that retries, hedges and times out attempts.
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceExt};
//! use tower_llm_retry::Retry;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! let upstream = service_fn(move |_req: http::Request<Full<Bytes>>| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let status = if n == 0 { 502 } else { 200 };
//!         Ok::<_, std::convert::Infallible>(http::Response::builder().status(status).body(()).unwrap())
//!     }
//! });
//! let svc = Retry::new(upstream);
//! let res = svc.oneshot(http::Request::new(Full::new(Bytes::from_static(b"{}")))).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_llm_core::{BoxError, Classify, HttpClassifier};
use tower_service::Service;

use crate::future::{CallContext, ResponseFuture, TargetLabel};
use crate::handle::RetryHandle;
use crate::layer::{RetryLayer, Shared};
use crate::replay::{Attempt, HttpReplay, RecordResponse, ReplayRequest};

/// Retries failed calls to the inner service: see the [crate docs](crate).
pub struct Retry<S, C = HttpClassifier, R = HttpReplay> {
    inner: S,
    shared: Arc<Shared<C, R>>,
}

impl<S> Retry<S> {
    /// Wrap `inner` with the default settings (see [`RetryLayer::new`]) and a budget of its own,
    /// shared by its clones. To share one budget among several services, build them from one
    /// [`RetryLayer`] or pass one [`RetryBudget`](crate::RetryBudget) to each builder.
    pub fn new(inner: S) -> Self {
        tower_layer::Layer::layer(&RetryLayer::new(), inner)
    }
}

impl<S, C, R> Retry<S, C, R> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<C, R>>) -> Self {
        Retry { inner, shared }
    }

    /// A handle on the state this service shares with its layer and every service of it.
    pub fn handle(&self) -> RetryHandle {
        self.shared.handle()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Take the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C, R> Clone for Retry<S, C, R> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C, R> fmt::Debug for Retry<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S, Req, C, R> Service<Req> for Retry<S, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
    R: ReplayRequest<Req> + RecordResponse<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let shared = &*self.shared;
        let target = shared.replay.target(&req);
        let now = Instant::now();
        let budget = shared.budgets.for_target(target.as_ref());
        if let Some(budget) = &budget {
            budget.deposit_at(now);
        }
        // A chain above may have set a deadline for this target and, when another target remains
        // (or this is a probe), asked for a single call: then no copy is kept.
        let attempt_budget = shared.replay.budget(&req);
        let single = attempt_budget.is_some_and(|b| !b.allows_retries());
        let copy = (shared.keeps_copy && !single).then(|| shared.replay.replay(&req));
        shared.replay.tag(&mut req, Attempt(1));
        shared.counters.call();
        shared.counters_for(&target).first_attempt();
        tracing::trace!(attempt = 1, target = %TargetLabel(&target), "retry: sending attempt");
        // `self.inner` was driven to readiness by `poll_ready`: it takes the first attempt, a
        // clone (readied before each use) takes the others; without a copy there are none.
        let service = copy.is_some().then(|| self.inner.clone());
        let first = self.inner.call(req);
        ResponseFuture::start(
            first,
            service,
            Arc::clone(&self.shared),
            copy,
            CallContext {
                target,
                budget,
                attempt_budget,
            },
            now,
        )
    }
}
