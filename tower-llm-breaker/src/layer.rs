//! [`CircuitBreakerLayer`]: wraps services in one shared [`CircuitBreaker`].
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_llm_breaker::{CircuitBreakerLayer, State};
//! use tower_llm_core::BreakerOpen;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = CircuitBreakerLayer::builder()
//!     .name("anthropic")
//!     .consecutive_failures(3)
//!     .open_duration(Duration::from_secs(5))
//!     .build()
//!     .unwrap();
//! // An owned handle, taken before the layer goes into the `ServiceBuilder`.
//! let handle = layer.handle();
//! let mut client = ServiceBuilder::new().layer(layer).service(service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::builder().status(529).body(()).unwrap())
//! }));
//!
//! for _ in 0..3 {
//!     let res = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//!     assert_eq!(res.status(), 529); // responses pass through; the breaker counts them
//! }
//! assert_eq!(handle.state(), State::Open);
//! let err = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
//! let open = err.downcast_ref::<BreakerOpen>().unwrap();
//! assert_eq!(open.retry_after(), Duration::from_secs(5));
//!
//! tokio::time::advance(Duration::from_secs(5)).await;
//! let _probe = client.ready().await.unwrap().call(http::Request::new(())).await;
//! assert_eq!(handle.state(), State::Open); // the probe got a 529 too: open again, for 10 s
//! assert_eq!(handle.snapshot().reopens, 1);
//! # }
//! ```

use std::fmt;

use tower_layer::Layer;
use tower_llm_core::{HttpBudget, HttpClassifier, KindSet};

use crate::config::CircuitBreakerLayerBuilder;
use crate::handle::BreakerHandle;
use crate::service::CircuitBreaker;

/// Applies a circuit breaker. Every service this layer wraps (each call of
/// [`Layer::layer`], as axum's `Router::layer` makes per route), and every clone of the layer
/// and of those services, shares the one breaker; build another layer for an independent
/// breaker.
///
/// Built with [`CircuitBreakerLayer::builder`]. `C` classifies responses, and `R` reads the
/// [`AttemptBudget`](tower_llm_core::AttemptBudget) of a request: a call marked as a fallback
/// chain's probe is admitted even while the breaker is open, as its half-open trial (see
/// [Below a fallback chain](crate#below-a-fallback-chain)).
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = HttpClassifier, R = HttpBudget> {
    handle: BreakerHandle,
    classifier: C,
    failures: KindSet,
    reader: R,
}

impl CircuitBreakerLayer {
    /// A builder, starting from the defaults (see [`CircuitBreakerConfig`](crate::CircuitBreakerConfig)),
    /// classifying with [`HttpClassifier`], counting [`KindSet::counts_against_breaker`],
    /// reading budgets with [`HttpBudget`].
    pub fn builder() -> CircuitBreakerLayerBuilder {
        CircuitBreakerLayerBuilder::new()
    }

    /// A layer with a new breaker with the defaults (named `default`): 50 % failures over the
    /// last 20 calls (at least 10), or 5 in a row; open 5 s, doubling per re-open up to 60 s;
    /// 2 half-open probes.
    pub fn new() -> Self {
        CircuitBreakerLayer::from_parts(
            BreakerHandle::new(crate::CircuitBreakerConfig::default()),
            HttpClassifier::default(),
            KindSet::counts_against_breaker(),
            HttpBudget,
        )
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C, R> CircuitBreakerLayer<C, R> {
    pub(crate) fn from_parts(
        handle: BreakerHandle,
        classifier: C,
        failures: KindSet,
        reader: R,
    ) -> Self {
        CircuitBreakerLayer {
            handle,
            classifier,
            failures,
            reader,
        }
    }

    /// A handle on the breaker (owned: take it before the layer goes into a `ServiceBuilder`).
    pub fn handle(&self) -> BreakerHandle {
        self.handle.clone()
    }

    /// The kinds of failure that count against the breaker.
    pub fn failures(&self) -> KindSet {
        self.failures
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for CircuitBreakerLayer<C, R> {
    type Service = CircuitBreaker<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::from_parts(
            inner,
            &self.handle,
            self.classifier.clone(),
            self.failures,
            self.reader.clone(),
        )
    }
}

impl<C, R> fmt::Debug for CircuitBreakerLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("handle", &self.handle)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::State;

    #[test]
    fn services_of_one_layer_share_the_breaker() {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .build()
            .unwrap();
        // As axum's `Router::layer` does: one call of `layer` per route.
        let a = layer.layer(());
        let b = layer.clone().layer(());
        a.handle().trip();
        assert_eq!(b.handle().state(), State::Open);
        assert_eq!(layer.handle().state(), State::Open);
    }
}
