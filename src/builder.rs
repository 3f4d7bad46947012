//! [`ServiceBuilderExt`]: one `ServiceBuilder` method per tower-llm layer.

use tower::layer::util::Stack;
use tower::ServiceBuilder;
use tower_llm_breaker::{CircuitBreakerLayer, KeyedCircuitBreakerLayer};
use tower_llm_bulkhead::{BulkheadLayer, Partitioner};
use tower_llm_core::{BufferRequestBodyLayer, InspectErrorBodyLayer, StreamGuardLayer};
use tower_llm_fallback::FallbackLayer;
use tower_llm_retry::RetryLayer;

/// Adds a method per tower-llm layer to [`tower::ServiceBuilder`], in the manner of
/// tower-http's `ServiceBuilderExt`. Layers run top to bottom, as with `.layer(...)`.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_llm::breaker::CircuitBreakerLayer;
/// use tower_llm::bulkhead::BulkheadLayer;
/// use tower_llm::core::StreamGuardLayer;
/// use tower_llm::retry::RetryLayer;
/// use tower_llm::ServiceBuilderExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let upstream = service_fn(|_req: http::Request<_>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"{}"))))
/// });
/// let breaker = CircuitBreakerLayer::builder().name("openai").build().unwrap();
/// let handle = breaker.handle();
/// let client = ServiceBuilder::new()
///     .buffer_request_body(1024 * 1024)
///     .circuit_breaker(breaker)
///     .retry_with(RetryLayer::builder().max_attempts(2).seed(1).build().unwrap())
///     .bulkhead(BulkheadLayer::builder().max_concurrent(8).build().unwrap())
///     .stream_guard(StreamGuardLayer::builder().build().unwrap())
///     .inspect_error_body()
///     .service(upstream);
/// let res = client.oneshot(http::Request::new(Full::new(Bytes::from_static(b"{}")))).await.unwrap();
/// assert_eq!(res.status(), 200);
/// assert_eq!(handle.counts().calls, 1);
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// Buffer request bodies up to `limit` bytes so retry and fallback can replay them
    /// ([`BufferRequestBodyLayer`]).
    fn buffer_request_body(self, limit: usize) -> ServiceBuilder<Stack<BufferRequestBodyLayer, L>>;

    /// Read provider error bodies so classifiers see provider error codes
    /// ([`InspectErrorBodyLayer`]); put it innermost, around the client.
    fn inspect_error_body(self) -> ServiceBuilder<Stack<InspectErrorBodyLayer, L>>;

    /// A circuit breaker ([`CircuitBreakerLayer`]).
    fn circuit_breaker<C, R>(
        self,
        layer: CircuitBreakerLayer<C, R>,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer<C, R>, L>>;

    /// One circuit breaker per key, by default per [`Target`](tower_llm_core::Target)
    /// ([`KeyedCircuitBreakerLayer`]); put it below a fallback chain.
    fn keyed_circuit_breaker<K, F, C, R>(
        self,
        layer: KeyedCircuitBreakerLayer<K, F, C, R>,
    ) -> ServiceBuilder<Stack<KeyedCircuitBreakerLayer<K, F, C, R>, L>>;

    /// Retries on the same target ([`RetryLayer`]). (Not `retry`: tower's `ServiceBuilder` has
    /// an inherent `retry` method for its own policy-based layer, which would shadow it.)
    fn retry_with<C, R>(
        self,
        layer: RetryLayer<C, R>,
    ) -> ServiceBuilder<Stack<RetryLayer<C, R>, L>>;

    /// A fallback chain over targets ([`FallbackLayer`]).
    fn fallback<C>(self, layer: FallbackLayer<C>) -> ServiceBuilder<Stack<FallbackLayer<C>, L>>;

    /// Streaming integrity ([`StreamGuardLayer`]): commit to a stream at its first event, keep its
    /// time limits, end a broken one with an error event. Put it innermost, just above
    /// [`inspect_error_body`](Self::inspect_error_body).
    fn stream_guard(self, layer: StreamGuardLayer) -> ServiceBuilder<Stack<StreamGuardLayer, L>>;

    /// A bulkhead and client-side limits ([`BulkheadLayer`]).
    // The type is the layer's own, with its five parameters; an alias would only hide them.
    #[allow(clippy::type_complexity)]
    fn bulkhead<K: Partitioner, E, C, R, D>(
        self,
        layer: BulkheadLayer<K, E, C, R, D>,
    ) -> ServiceBuilder<Stack<BulkheadLayer<K, E, C, R, D>, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn buffer_request_body(self, limit: usize) -> ServiceBuilder<Stack<BufferRequestBodyLayer, L>> {
        self.layer(BufferRequestBodyLayer::new(limit))
    }

    fn inspect_error_body(self) -> ServiceBuilder<Stack<InspectErrorBodyLayer, L>> {
        self.layer(InspectErrorBodyLayer::new())
    }

    fn circuit_breaker<C, R>(
        self,
        layer: CircuitBreakerLayer<C, R>,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer<C, R>, L>> {
        self.layer(layer)
    }

    fn keyed_circuit_breaker<K, F, C, R>(
        self,
        layer: KeyedCircuitBreakerLayer<K, F, C, R>,
    ) -> ServiceBuilder<Stack<KeyedCircuitBreakerLayer<K, F, C, R>, L>> {
        self.layer(layer)
    }

    fn retry_with<C, R>(
        self,
        layer: RetryLayer<C, R>,
    ) -> ServiceBuilder<Stack<RetryLayer<C, R>, L>> {
        self.layer(layer)
    }

    fn fallback<C>(self, layer: FallbackLayer<C>) -> ServiceBuilder<Stack<FallbackLayer<C>, L>> {
        self.layer(layer)
    }

    fn stream_guard(self, layer: StreamGuardLayer) -> ServiceBuilder<Stack<StreamGuardLayer, L>> {
        self.layer(layer)
    }

    #[allow(clippy::type_complexity)]
    fn bulkhead<K: Partitioner, E, C, R, D>(
        self,
        layer: BulkheadLayer<K, E, C, R, D>,
    ) -> ServiceBuilder<Stack<BulkheadLayer<K, E, C, R, D>, L>> {
        self.layer(layer)
    }
}

mod sealed {
    pub trait Sealed<L> {}
    impl<L> Sealed<L> for tower::ServiceBuilder<L> {}
}
