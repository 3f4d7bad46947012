//! A circuit breaker for Tower services, as complete as resilience4j's and as cheap as a few
//! atomics on the happy path.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_llm_breaker::{CircuitBreakerLayer, State};
//! use tower_llm_core::BreakerOpen;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // Defaults: 50 % failures over the last 20 calls (at least 10), or 5 in a row; open 5 s,
//! // doubling per re-open up to 60 s; 2 half-open probes.
//! let breaker = CircuitBreakerLayer::builder().name("openai").build().unwrap();
//! let handle = breaker.handle(); // owned, and shared with every service the layer wraps
//! let upstream = service_fn(|req: http::Request<u16>| async move {
//!     let status = *req.body();
//!     Ok::<_, std::convert::Infallible>(http::Response::builder().status(status).body(()).unwrap())
//! });
//! let mut client = ServiceBuilder::new().layer(breaker).service(upstream);
//!
//! // 429s and 400s say nothing about the provider's health: they are not counted.
//! for _ in 0..10 {
//!     client.ready().await.unwrap().call(http::Request::new(429)).await.unwrap();
//! }
//! assert_eq!(handle.state(), State::Closed);
//!
//! // 5xx are: five in a row open the breaker.
//! for _ in 0..5 {
//!     client.ready().await.unwrap().call(http::Request::new(503)).await.unwrap();
//! }
//! assert_eq!(handle.state(), State::Open);
//! let err = client.ready().await.unwrap().call(http::Request::new(200)).await.unwrap_err();
//! let open = err.downcast_ref::<BreakerOpen>().expect("rejected by the breaker");
//! assert_eq!(open.breaker(), "openai");
//! assert_eq!(open.retry_after(), Duration::from_secs(5));
//!
//! // After the open duration, two probes are let through; two successes close it.
//! tokio::time::advance(Duration::from_secs(5)).await;
//! client.ready().await.unwrap().call(http::Request::new(200)).await.unwrap();
//! assert_eq!(handle.state(), State::HalfOpen);
//! client.ready().await.unwrap().call(http::Request::new(200)).await.unwrap();
//! assert_eq!(handle.state(), State::Closed);
//! # }
//! ```
//!
//! # Behaviour
//!
//! * **States**: [`State::Closed`], [`State::Open`], [`State::HalfOpen`], and the manual
//!   [`State::ForcedOpen`], [`State::Disabled`] and [`State::MetricsOnly`]
//!   ([`BreakerHandle::force_open`], [`disable`](BreakerHandle::disable),
//!   [`metrics_only`](BreakerHandle::metrics_only), [`reset`](BreakerHandle::reset)).
//! * **Built** with [`CircuitBreakerLayer::builder`] ([`CircuitBreakerLayerBuilder`]): settings,
//!   classifier, failures that count, budget reader; `build()` validates and returns a
//!   [`ConfigError`](tower_llm_core::ConfigError) naming the setting.
//! * **Trip conditions** (any combination, see [`CircuitBreakerConfig`]): consecutive failures;
//!   failure rate over a count-based or time-based [`SlidingWindow`] once a minimum number of calls
//!   is recorded; slow-call rate over the same window.
//! * **Open** rejects with [`BreakerOpen`](tower_llm_core::BreakerOpen) (breaker name, reason,
//!   `retry_after`) without calling the inner service. The open duration grows by a multiplier
//!   per consecutive re-open, up to a cap, with optional seeded jitter.
//! * **Half-open** admits exactly `permitted_calls_in_half_open` probes and rejects the others
//!   (`retry_after` zero). It closes once that many probes succeeded and re-opens on a failing
//!   (or slow) probe. A probe that is dropped (cancelled) or whose outcome is ignored gives its
//!   permit back; an optional maximum wait re-opens a half-open breaker whose probes hang.
//! * **What counts** comes from a [`Classify`](tower_llm_core::Classify) implementation
//!   ([`HttpClassifier`](tower_llm_core::HttpClassifier) by default) and a
//!   [`KindSet`](tower_llm_core::KindSet) of failures
//!   ([`failures`](CircuitBreakerLayerBuilder::failures), default
//!   [`KindSet::counts_against_breaker`](tower_llm_core::KindSet::counts_against_breaker): 5xx,
//!   529, timeouts, transport errors count; 4xx, 429 and local rejections are ignored; see
//!   [`Outcome::classify`]).
//! * **Keyed** breakers ([`KeyedCircuitBreakerLayer`]): one per key (default: the
//!   [`Target`](tower_llm_core::Target) extension), bounded.
//! * **Probes of a fallback chain** are admitted even while open (see below).
//! * **Outside tower**: [`BreakerHandle::try_acquire`] (and
//!   [`try_acquire_probe`](BreakerHandle::try_acquire_probe)) gives a [`CallPermit`] to record an
//!   outcome on, now or later (a streamed response can hold it until its end).
//! * **Observability**: [`BreakerHandle::snapshot`] (serde), state-change listeners, `metrics`
//!   and `tracing` (see the [`metrics`] module for the names, as constants, and their labels).
//!
//! # Below a fallback chain
//!
//! A fallback chain above per-target breakers benches a failing target itself (cooldowns) and,
//! when the bench lifts, sends it exactly one probe, marked with
//! [`AttemptBudget::probe`](tower_llm_core::AttemptBudget::probe). If the breaker rejected that
//! probe because its own open period (5 s, doubling up to 60 s) is not over, the two health
//! gates would compound and a short outage would cost a minute. So the rule is: **a breaker
//! admits a call marked as a probe even while open, as its half-open trial** — the chain decides
//! *when* a target is probed. The breaker turns half-open at once and the probe decides alone:
//! its success closes the breaker (the chain has just put the target back in service), its
//! failure re-opens it for a longer period. The breaker still detects failures, rejects ordinary
//! calls while open, and a forced-open breaker rejects probes too.
//!
//! The layers read the mark with a [`ReadBudget`](tower_llm_core::ReadBudget), their last type
//! parameter: [`HttpBudget`](tower_llm_core::HttpBudget) (the default) reads the request
//! extension of an `http::Request`. A typed client's requests carry none: give its layer
//! [`.read_budget(`](CircuitBreakerLayerBuilder::read_budget)[`NoBudget`](tower_llm_core::NoBudget)`)`.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_llm_breaker::{CircuitBreakerLayer, State};
//! use tower_llm_core::{AttemptBudget, NoBudget};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let breaker = CircuitBreakerLayer::builder()
//!     .consecutive_failures(1)
//!     .permitted_calls_in_half_open(1)
//!     .build()
//!     .unwrap();
//! let handle = breaker.handle();
//! let upstream = service_fn(|req: http::Request<u16>| async move {
//!     Ok::<_, std::convert::Infallible>(http::Response::builder().status(*req.body()).body(()).unwrap())
//! });
//! let mut client = ServiceBuilder::new().layer(breaker).service(upstream);
//! client.ready().await.unwrap().call(http::Request::new(500)).await.unwrap();
//! assert_eq!(handle.state(), State::Open); // for 5 s
//! assert!(client.ready().await.unwrap().call(http::Request::new(200)).await.is_err());
//!
//! // The chain's probe, one second later: it reaches the upstream, and its success closes the breaker.
//! tokio::time::advance(Duration::from_secs(1)).await;
//! let mut probe = http::Request::new(200);
//! let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
//! probe.extensions_mut().insert(AttemptBudget::until(deadline).probe());
//! client.ready().await.unwrap().call(probe).await.unwrap();
//! assert_eq!(handle.state(), State::Closed);
//!
//! // A typed client: its requests are not `http::Request`s and carry no budget.
//! // (With a `.classifier(...)` for its responses, too.)
//! let _typed = CircuitBreakerLayer::builder().read_budget(NoBudget).build().unwrap();
//! # }
//! ```
//!
//! # Cost
//!
//! A call through a closed breaker with the default count-based window does one atomic load to
//! admit, and on completion one compare-and-swap on the window's sequence word plus a load or
//! CAS of one ring slot; the aggregate is written only when the evicted outcome differs from the
//! new one. No lock, no allocation, no clock read (unless slow calls or a time-based window are
//! configured). A rejection allocates only the boxed error and is cheaper than a successful call:
//!
//! * it reads no clock while the open period is certainly not over. When the breaker opens
//!   inside a Tokio runtime, it registers a timer with that runtime, due 1 ms before the period
//!   ends; until it fires, rejections skip the clock. Opened where no runtime is current (or in
//!   one built without timers), every rejection reads the clock. Either way the first call at or
//!   after the deadline is a probe, paused time included; if the runtime that armed the timer
//!   stops driving it, each thread still reads the clock once per 256 rejections.
//! * [`BreakerOpen::retry_after`](tower_llm_core::BreakerOpen::retry_after) is computed when read,
//!   from the instant of the next probe.
//! * Its name and reason are one `Arc` per breaker and thread stripe: threads rejecting at once do
//!   not share a reference count, nor the rejection counter.
//! * While open, `poll_ready` polls the inner service once without waiting for it (so that a
//!   chain's probe can be let through), and the request's budget is read only then: a closed
//!   breaker never looks at it.
//!
//! See `benches-crate/benches/breaker.rs` in the repository (timings) and this crate's
//! `tests/allocations.rs` (allocations per call).

#![forbid(unsafe_code)]

/// The README's Rust examples, compiled and run as doc tests so they stay accurate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod config;
mod future;
mod handle;
mod keyed;
mod layer;
pub mod metrics;
mod open_timer;
mod service;
pub mod shared;
mod state;
mod sync;
mod window;

pub use config::{
    CircuitBreakerConfig, CircuitBreakerConfigBuilder, CircuitBreakerLayerBuilder, SlidingWindow,
    DEFAULT_CONSECUTIVE_FAILURES, DEFAULT_FAILURE_RATE_THRESHOLD, DEFAULT_HALF_OPEN_PROBES,
    DEFAULT_MAX_OPEN_DURATION, DEFAULT_MINIMUM_CALLS, DEFAULT_OPEN_DURATION, DEFAULT_WINDOW_CALLS,
    MAX_COUNT_WINDOW, MAX_HALF_OPEN_PROBES, MAX_OPEN_DURATION, MAX_TIME_WINDOW_SECS,
};
pub use future::ResponseFuture;
pub use handle::{BreakerHandle, BreakerSnapshot, WindowCounts};
pub use keyed::{
    BreakerKey, KeyFn, KeyedBreakerHandle, KeyedCircuitBreaker, KeyedCircuitBreakerLayer,
    KeyedCircuitBreakerLayerBuilder, TargetKey, DEFAULT_MAX_KEYS,
};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
pub use state::{CallPermit, OpenReason, Outcome, State, StateChange};
