//! [`Chaos`]: the service a [`ChaosLayer`](crate::ChaosLayer) wraps around another.
//!
//! ```
//! use tower::{service_fn, ServiceExt};
//! use tower_layer::Layer;
//! use tower_llm_chaos::ChaosLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_llm_core::BoxError> {
//! let layer = ChaosLayer::builder().response(1.0, || 42).seed(1).build()?;
//! let inner = service_fn(|x: i32| async move { Ok::<_, std::convert::Infallible>(x) });
//! let svc = layer.layer(inner);
//! assert_eq!(svc.clone().oneshot(7).await?, 42); // canned
//! svc.switch().disable();
//! assert_eq!(svc.oneshot(7).await?, 7); // forwarded
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_llm_core::BoxError;
use tower_service::Service;

use crate::config::{CannedResponse, NoResponse};
use crate::future::{Next, ResponseFuture};
use crate::layer::{Outcome, Shared};
use crate::ChaosSwitch;

/// Injects errors, latency and canned responses into calls to `S`.
///
/// Built by [`ChaosLayer`](crate::ChaosLayer); clones share its generator, switch and counters.
/// Injected errors and responses do not call `S` at all.
pub struct Chaos<S, F = NoResponse> {
    inner: S,
    shared: Arc<Shared<F>>,
    switch: ChaosSwitch,
}

impl<S, F> Chaos<S, F> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared<F>>, switch: ChaosSwitch) -> Self {
        Chaos {
            inner,
            shared,
            switch,
        }
    }

    /// The runtime on/off switch (shared with the layer and its other services).
    pub fn switch(&self) -> ChaosSwitch {
        self.switch.clone()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, F> Clone for Chaos<S, F> {
    fn clone(&self) -> Self {
        Chaos {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            switch: self.switch.clone(),
        }
    }
}

impl<S: fmt::Debug, F> fmt::Debug for Chaos<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("inner", &self.inner)
            .field("enabled", &self.switch.is_enabled())
            .finish()
    }
}

impl<S, F, Req> Service<Req> for Chaos<S, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: CannedResponse<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if !self.switch.is_enabled() {
            return ResponseFuture::forward(self.inner.call(req));
        }
        let (delay, outcome) = self.shared.decide();
        let (outcome, next) = match outcome {
            Outcome::Error => (
                Outcome::Error,
                Next::Ready(Err(Box::new(self.shared.error.clone()) as BoxError)),
            ),
            Outcome::Respond => match self.shared.response.canned_response() {
                Some(response) => (Outcome::Respond, Next::Ready(Ok(response))),
                None => (Outcome::Forward, Next::Forward(self.inner.call(req))),
            },
            Outcome::Forward => (Outcome::Forward, Next::Forward(self.inner.call(req))),
        };
        self.shared.note(outcome);
        ResponseFuture::new(delay, next)
    }
}
