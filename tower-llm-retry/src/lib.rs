//! Retries for LLM calls that never make an outage worse.
//!
//! [`RetryLayer`] retries what the classifier ([`HttpClassifier`](tower_llm_core::HttpClassifier)
//! by default) calls transient — rate limits, overload, server errors, transport failures, broken
//! responses, and a timeout once — and returns everything else at once: auth, quota, context
//! length, content policy and other 4xx (the set of kinds retried is a
//! [`KindSet`](tower_llm_core::KindSet), [`retry_on`](RetryLayerBuilder::retry_on)). It honours the server's requested delay (`Retry-After`
//! and every other signal core parses) up to a cap, and above the cap stops so a fallback layer
//! can move on. A shared [`RetryBudget`] lets retries add at most 20% of the first-attempt
//! traffic plus a small floor, so a total outage costs about 1.2 upstream calls per request, not
//! 3. Each attempt has a timeout, the call may have a deadline, and slow attempts can be
//! [hedged](hedge).
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_core::{BufferRequestBodyLayer, InspectErrorBodyLayer};
//! use tower_llm_retry::{RetryAttempts, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // An upstream that rate-limits the first call with `Retry-After: 2`.
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! let upstream = service_fn(move |_req: http::Request<_>| {
//!     let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
//!     async move {
//!         let res = if first {
//!             http::Response::builder().status(429).header("retry-after", "2")
//!         } else {
//!             http::Response::builder().status(200)
//!         };
//!         Ok::<_, std::convert::Infallible>(res.body(Full::new(Bytes::from_static(b"{}"))).unwrap())
//!     }
//! });
//!
//! let client = ServiceBuilder::new()
//!     // Any request body (hyper's `Incoming`, axum's `Body`) becomes replayable up to 1 MiB;
//!     // a larger one is sent once and not retried.
//!     .layer(BufferRequestBodyLayer::new(1024 * 1024))
//!     .layer(RetryLayer::builder().max_attempts(3).seed(7).build().unwrap())
//!     // Innermost: read error bodies so `insufficient_quota` is not mistaken for a rate limit.
//!     .layer(InspectErrorBodyLayer::new())
//!     .service(upstream);
//!
//! let started = tokio::time::Instant::now();
//! let req = http::Request::post("http://llm.test/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(br#"{"model":"gpt-4o","messages":[]}"#)))
//!     .unwrap();
//! let res = client.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! assert!(started.elapsed() >= Duration::from_secs(2), "waited as the server asked");
//! // The failed attempts ride along on the response.
//! let log = res.extensions().get::<RetryAttempts>().unwrap();
//! assert_eq!(log.attempts()[0].status, Some(429));
//! # }
//! ```
//!
//! # What comes back
//!
//! - A success is returned as soon as an attempt succeeds (with a [`RetryAttempts`] extension
//!   when earlier attempts failed).
//! - When the last attempt got an error **response** (a 503, a 401), that response is returned as
//!   it is, with a [`RetryAttempts`] extension listing every attempt and why the layer stopped:
//!   the caller (or a fallback layer) sees the provider's status, headers and body.
//! - When the last attempt failed with an **error**, the layer returns
//!   [`RetriesExhausted`](tower_llm_core::RetriesExhausted) with every
//!   [`AttemptRecord`](tower_llm_core::AttemptRecord), the reason it stopped, and the last
//!   error (which [`classify_error`](tower_llm_core::classify_error) still sees). An error the
//!   layer does not retry at all on the first attempt (a local rejection, a kind it never
//!   retries) is returned unchanged.
//!
//! # Observability
//!
//! `tracing` debug events for every failed attempt, backoff, hedge and stop, with the target and
//! the error kind (never request or response content); `metrics` counters, whose names are the
//! constants of the [`metrics`] module (with the table of their labels); and
//! [`RetryLayer::handle`], an owned [`RetryHandle`] on the layer's budget(s), configuration and
//! counters ([`RetryStats`]), taken before the layer goes into a `ServiceBuilder`.
//!
//! # Cost
//!
//! When the first attempt succeeds, the layer's only allocations are the copy of the request it
//! keeps for a replay (headers and extensions; the buffered body is shared, not copied). A call
//! that fails and is retried also copies the request for the next attempt and keeps its failures
//! in one box; the [`Attempt`] tag and the [`RetryAttempts`] log cost a map of extensions each
//! (when the message has none yet) and a box, and callers that read neither turn them off with
//! [`HttpReplay::attempt_extensions`]. See `benches-crate/benches/layers.rs` and `retry.rs` in
//! the repository.
//!
//! The layer needs a Tokio runtime with the time driver when an attempt timeout, a deadline,
//! backoff or hedging is in use, as `tower::timeout` does.

#![forbid(unsafe_code)]

/// The README's Rust examples, compiled and run as doc tests so they stay accurate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod backoff;
pub mod budget;
pub mod config;
pub mod future;
pub mod handle;
pub mod hedge;
pub mod layer;
pub mod metrics;
pub mod policy;
pub mod replay;
pub mod service;

pub use backoff::{Backoff, BackoffKind, Jitter};
pub use budget::RetryBudget;
pub use config::{RetryConfig, RetryLayerBuilder};
pub use future::ResponseFuture;
pub use handle::{RetryHandle, RetryStats};
pub use hedge::{HedgeDelay, Hedging};
pub use layer::RetryLayer;
pub use policy::{RetryAttempts, StopReason};
pub use replay::{Attempt, CloneReplay, HttpReplay, RecordResponse, ReplayRequest};
pub use service::Retry;
