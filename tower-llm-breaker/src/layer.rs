//! [`CircuitBreakerLayer`]: wraps services in one shared [`CircuitBreaker`].
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_llm_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, State};
//! use tower_llm_core::BreakerOpen;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = CircuitBreakerLayer::new(
//!     CircuitBreakerConfig::builder()
//!         .name("anthropic")
//!         .consecutive_failures(3)
//!         .open_duration(Duration::from_secs(5))
//!         .build()
//!         .unwrap(),
//! );
//! let handle = layer.handle().clone();
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
use tower_llm_core::{HttpBudget, HttpClassifier};

use crate::config::CircuitBreakerConfig;
use crate::handle::BreakerHandle;
use crate::policy::DefaultPolicy;
use crate::service::CircuitBreaker;

/// Applies a circuit breaker. Every service this layer wraps, and every clone of the layer,
/// shares the one breaker; build another layer for an independent breaker.
///
/// `C` classifies responses, `P` says what each classification means to the breaker, and `R`
/// reads the [`AttemptBudget`](tower_llm_core::AttemptBudget) of a request: a call marked as a
/// fallback chain's probe is admitted even while the breaker is open, as its half-open trial
/// (see [Below a fallback chain](crate#below-a-fallback-chain)). For requests that are not
/// `http::Request`s, use [`read_budget`](Self::read_budget)`(`[`NoBudget`](tower_llm_core::NoBudget)`)`.
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = HttpClassifier, P = DefaultPolicy, R = HttpBudget> {
    handle: BreakerHandle,
    classifier: C,
    policy: P,
    reader: R,
}

impl CircuitBreakerLayer {
    /// A layer with a new breaker, classifying with [`HttpClassifier`] and [`DefaultPolicy`],
    /// reading budgets with [`HttpBudget`].
    pub fn new(config: CircuitBreakerConfig) -> Self {
        CircuitBreakerLayer::from_handle(BreakerHandle::new(config))
    }

    /// A layer using an existing breaker.
    pub fn from_handle(handle: BreakerHandle) -> Self {
        CircuitBreakerLayer {
            handle,
            classifier: HttpClassifier::default(),
            policy: DefaultPolicy,
            reader: HttpBudget,
        }
    }
}

impl<C, P, R> CircuitBreakerLayer<C, P, R> {
    /// Classify responses and errors with `classifier` (for a typed client, or to override rows
    /// of the HTTP taxonomy).
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2, P, R> {
        CircuitBreakerLayer {
            handle: self.handle,
            classifier,
            policy: self.policy,
            reader: self.reader,
        }
    }

    /// Decide what each classification means to the breaker with `policy`.
    pub fn policy<P2>(self, policy: P2) -> CircuitBreakerLayer<C, P2, R> {
        CircuitBreakerLayer {
            handle: self.handle,
            classifier: self.classifier,
            policy,
            reader: self.reader,
        }
    }

    /// Read the [`AttemptBudget`](tower_llm_core::AttemptBudget) of requests with `reader`, a
    /// [`ReadBudget`](tower_llm_core::ReadBudget): [`HttpBudget`] (the default) for
    /// `http::Request`s, [`NoBudget`](tower_llm_core::NoBudget) for a typed client's requests
    /// (which then are never probes).
    pub fn read_budget<R2>(self, reader: R2) -> CircuitBreakerLayer<C, P, R2> {
        CircuitBreakerLayer {
            handle: self.handle,
            classifier: self.classifier,
            policy: self.policy,
            reader,
        }
    }

    /// The breaker.
    pub fn handle(&self) -> &BreakerHandle {
        &self.handle
    }
}

impl<S, C: Clone, P: Clone, R: Clone> Layer<S> for CircuitBreakerLayer<C, P, R> {
    type Service = CircuitBreaker<S, C, P, R>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::with_parts(
            inner,
            self.handle.clone(),
            self.classifier.clone(),
            self.policy.clone(),
        )
        .read_budget(self.reader.clone())
    }
}

impl<C, P, R> fmt::Debug for CircuitBreakerLayer<C, P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}
