//! Bulkheads and client-side limits for LLM calls: one hot path cannot sink the rest.
//!
//! [`BulkheadLayer`] wraps any `tower::Service` and, per partition of the traffic (one, or one
//! per target, tenant or model):
//!
//! - limits **concurrent calls**, with a bounded FIFO wait queue and a maximum wait; beyond either
//!   a call is rejected at once with [`BulkheadFull`] (which limit, how many in flight, how long it
//!   waited) — never an unbounded queue (anchors: resilience4j's `SemaphoreBulkhead`; tower's
//!   `ConcurrencyLimit` waits forever instead);
//! - limits the **request rate** (GCRA on [`governor`], over tokio's clock: [`TokioClock`]), waiting
//!   up to a bound or rejecting with the time until the next permit as `retry_after`;
//! - limits **tokens per minute**, charged at admission from an estimate ([`EstimateTokens`],
//!   default [`JsonBodyEstimate`]) and corrected from the response's `usage` (JSON, or the last
//!   SSE event); a request larger than the whole budget is rejected as `RequestTooLarge`;
//! - optionally **adapts** the concurrency limit (AIMD, [`AdaptiveConcurrency`]) to the target's
//!   latency and load shedding;
//! - optionally **shares** the rate and token decisions with other replicas through a
//!   [`SharedLimiter`] (such as `tower-llm-redis`'s, on Redis), falling back to the local limits
//!   whenever the shared store cannot decide (see [`shared`]);
//! - keeps each call's permit until its response — for HTTP, its response **body** — ends or is
//!   dropped, and releases it on every path: completion, error, cancellation, panic.
//!
//! The state (partitions, permits, budgets) lives in the layer: every service it wraps — each
//! route of an axum `Router::layer`, each clone — shares one bulkhead, and
//! [`BulkheadLayer::handle`] reads it without keeping a service around.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_bulkhead::BulkheadLayer;
//! use tower_llm_core::{classify_error, BulkheadFull, ErrorKind, LimitKind};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = BulkheadLayer::builder()
//!     .max_concurrent(2)
//!     .max_queued(1)
//!     .max_wait(Duration::from_millis(100))
//!     .build()
//!     .unwrap();
//! let upstream = service_fn(|_req: http::Request<()>| async {
//!     tokio::time::sleep(Duration::from_secs(1)).await; // a slow provider
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
//! });
//! let handle = layer.handle(); // the bulkhead's state lives in the layer
//! let client = ServiceBuilder::new().layer(layer).service(upstream);
//!
//! // Two calls run, a third waits in the queue, a fourth is turned away at once.
//! let running: Vec<_> = (0..3).map(|_| tokio::spawn(client.clone().oneshot(http::Request::new(())))).collect();
//! tokio::task::yield_now().await;
//! assert_eq!((handle.in_flight(), handle.queued()), (2, 1));
//! let err = client.clone().oneshot(http::Request::new(())).await.unwrap_err();
//! let full = err.downcast_ref::<BulkheadFull>().unwrap();
//! assert_eq!((full.limit(), full.in_flight()), (LimitKind::Queue, 2));
//! // Other layers understand the rejection: a local overload, not a failure of the target.
//! assert_eq!(classify_error(&*err).kind, ErrorKind::Overloaded);
//!
//! // The queued call gives up after its maximum wait.
//! let mut results: Vec<_> = futures_util::future::join_all(running).await;
//! let waited = results[2].as_ref().unwrap().as_ref().unwrap_err();
//! assert_eq!(waited.downcast_ref::<BulkheadFull>().unwrap().limit(), LimitKind::MaxWait);
//!
//! // A successful call holds its permit until its body is read.
//! let res = results.remove(0).unwrap().unwrap();
//! assert_eq!(handle.in_flight(), 2);
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
//! assert_eq!(handle.in_flight(), 1);
//! # }
//! ```
//!
//! # Where it goes
//!
//! Below a fallback layer, partitioned [`ByTarget`], each provider/model gets its own limits (the
//! fallback records the [`Target`](tower_llm_core::Target) of each attempt); in a
//! one-service-per-target stack, one bulkhead per target does the same. A rejection is a
//! [`BulkheadFull`] that `tower_llm_core::classify_error` maps to a *local* failure (it never
//! counts against a breaker): `Overloaded` for concurrency limits, `RateLimited` (with
//! `retry_after`) for rate and token limits, `BadRequest` for a request over the whole budget.
//!
//! # The attempt's deadline
//!
//! Time flows down: a fallback chain gives each attempt a deadline, an
//! [`AttemptBudget`](tower_llm_core::AttemptBudget) request extension, and the bulkhead never
//! queues past it. A call that has to wait for a concurrency slot waits until the earlier of
//! [`max_wait`](BulkheadLayerBuilder::max_wait) and the deadline, and is rejected with
//! [`BulkheadFull`] (`MaxWait`) the moment the deadline passes, leaving the queue. A call whose
//! deadline has already passed does not join the queue (`Concurrency`), and a call whose
//! request-rate or token permit comes only at or after the deadline is rejected at once (`Rate`
//! or `Tokens`, with the time to that permit as `retry_after`), so the chain can move on to the
//! next target without losing the attempt's time. A call without a budget waits as before, and
//! a call admitted at once never reads it.
//!
//! The budget is read by the bulkhead's [`ReadBudget`](tower_llm_core::ReadBudget): by default
//! [`HttpBudget`](tower_llm_core::HttpBudget), the extension of an `http::Request`. A typed client
//! (`Service<ChatRequest>`) opts out with
//! [`.read_budget(NoBudget)`](BulkheadLayerBuilder::read_budget), and replaces the two other
//! HTTP defaults as well: [`.release_on_response()`](BulkheadLayerBuilder::release_on_response)
//! (no body to hold the permit in) and [`.classifier(...)`](BulkheadLayerBuilder::classifier)
//! (its own classifier, or [`ErrorsOnly`], instead of
//! [`HttpClassifier`](tower_llm_core::HttpClassifier)):
//!
//! ```
//! use std::time::Duration;
//! use tokio::time::Instant;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_bulkhead::{BulkheadLayer, ErrorsOnly};
//! use tower_llm_core::{AttemptBudget, BulkheadFull, LimitKind, NoBudget};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // HTTP: one call in flight, the next may wait up to 10 s — but not past its attempt's deadline.
//! let layer = BulkheadLayer::builder()
//!     .max_concurrent(1)
//!     .max_wait(Duration::from_secs(10))
//!     .build()
//!     .unwrap();
//! let client = ServiceBuilder::new().layer(layer).service(service_fn(|_req: http::Request<()>| async {
//!     tokio::time::sleep(Duration::from_secs(60)).await;
//!     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//! }));
//! let _busy = tokio::spawn(client.clone().oneshot(http::Request::new(())));
//! tokio::task::yield_now().await;
//!
//! let start = Instant::now();
//! let mut req = http::Request::new(());
//! req.extensions_mut().insert(AttemptBudget::until(start + Duration::from_millis(300)));
//! let err = client.clone().oneshot(req).await.unwrap_err();
//! assert_eq!(err.downcast_ref::<BulkheadFull>().unwrap().limit(), LimitKind::MaxWait);
//! assert_eq!(start.elapsed(), Duration::from_millis(300));
//!
//! // A typed client: its requests carry no budget, its responses are no HTTP responses.
//! let typed = BulkheadLayer::builder()
//!     .release_on_response()
//!     .read_budget(NoBudget)
//!     .classifier(ErrorsOnly)
//!     .build()
//!     .unwrap();
//! let chat = ServiceBuilder::new()
//!     .layer(typed)
//!     .service(service_fn(|prompt: String| async move { Ok::<_, std::convert::Infallible>(prompt.len()) }));
//! assert_eq!(chat.oneshot("hello".to_string()).await.unwrap(), 5);
//! # }
//! ```
//!
//! # Cost
//!
//! An uncontended admission takes no lock and allocates nothing: an `Arc` clone and one
//! compare-and-swap on the partition's state word, and one more to release (measured against
//! tower's `ConcurrencyLimit` and tower-resilience's bulkhead in
//! `benches-crate/benches/bulkhead.rs`). A keyed bulkhead adds the key's extraction and clone, one
//! keyed hash and a read lock of one of 16 shards. A call that has to wait allocates its wait; a
//! token limit allocates the permit's charge per call (and reads the response's usage as it streams
//! by). A [shared limiter](shared) adds nothing to a bulkhead without one; with one, each
//! rate- or token-limited call takes the wait path (one boxed future) and the limiter's round trip.
//!
//! # Observability
//!
//! See [`metrics`] for the metric names and their `target` label (the bulkhead's name, or the
//! partition key); every rejection is a `tracing` event at `DEBUG`.

#![forbid(unsafe_code)]

/// The README's Rust examples, compiled and run as doc tests so they stay accurate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod adaptive;
mod admission;
pub mod body;
mod clock;
pub mod config;
mod future;
pub mod handle;
pub mod key;
pub mod layer;
pub mod metrics;
mod partition;
mod permit;
mod rate;
mod service;
pub mod shared;
pub mod tokens;
pub mod usage;

pub use body::{HoldPermit, PermitBody, ReleaseOnBodyEnd, ReleaseOnResponse, ReleaseWithUsage};
pub use clock::TokioClock;
pub use config::{
    AdaptiveConcurrency, PartitionConfig, PartitionConfigBuilder, PartitionOverflow, RateLimit,
    TargetLabel, TokenLimit,
};
pub use future::ResponseFuture;
pub use handle::BulkheadHandle;
pub use key::{
    partition_fn, AllCalls, ByHeader, ByModel, ByTarget, Global, HeaderKey, ModelKey, PartitionBy,
    PartitionFn, PartitionKey, Partitioner,
};
pub use layer::{BulkheadLayer, BulkheadLayerBuilder};
pub use partition::PartitionSnapshot;
pub use permit::Permit;
pub use service::{Bulkhead, ErrorsOnly};
pub use shared::SharedLimiter;
pub use tokens::{EstimateTokens, JsonBodyEstimate, NoTokenEstimate};
pub use tower_llm_core::{BulkheadFull, LimitKind};
