//! An ordered provider chain for LLM HTTP calls that degrades gracefully and says what it did.
//!
//! [`FallbackLayer`] tries targets (provider + model) tier by tier until one answers:
//!
//! - **two shapes**: one client with a per-target rewrite (model, base URL, credential, caps on
//!   `max_tokens` / `temperature`; the chosen [`Target`](tower_llm_core::Target) set as a request
//!   extension so per-target layers below key by it), or one service per target
//!   ([`FallbackLayer::services`]);
//! - **tiers**: targets in one tier are picked by [`Selection`] (ordered, weighted, least loaded);
//!   tiers go in order;
//! - **cooldowns** per target and error kind ([`CooldownPolicy`]): benched targets are skipped
//!   without a call; when a cooldown lifts, exactly one probe decides whether the target returns;
//! - **capabilities**: after a `ContextLength` failure only targets with a larger context window
//!   are tried; `ContentPolicy` and `BadRequest` answers are returned unchanged;
//! - **cache and static tiers** ([`CacheConfig`], [`StaticAnswer`]) for when every live target
//!   failed;
//! - **reporting**: every response carries a [`FallbackReport`] extension (unless
//!   [turned off](FallbackLayerBuilder::report_extension)) and the
//!   [`X_LLM_TARGET`] / [`X_LLM_FALLBACK`] headers; when nothing answered the error is
//!   [`AllTargetsFailed`](tower_llm_core::AllTargetsFailed) listing every attempt, and an
//!   [`Escalation`] hook fires;
//! - **health**: a serde [`HealthSnapshot`], saved and restored through a [`HealthStore`] such as
//!   [`JsonFileStore`];
//! - **streams**: for an SSE answer the chain commits only after the first answer event
//!   ([`peek`] module docs), so a stream that never starts or starts with an error
//!   fails over; a stream cut or stalled after that is finished on the next target, by
//!   prefill or by replay and splice, in the same response ([`resume`] module docs).
//!
//! The chain's state (cooldowns, health, cache, escalation counters) lives in the layer: every
//! service it builds shares it, and [`FallbackLayer::handle`] returns an owned
//! [`FallbackHandle`] on it, to take before the layer moves into a `ServiceBuilder` chain.
//! Metrics are listed in [`metrics`] (label `target`: the target's name).
//!
//! Responses are the answering target's with a [`FallbackBody`] (its body, a peeked stream prefix
//! replayed in front of the rest, or a cached or static answer).
//!
//! Put [`BufferRequestBodyLayer`](tower_llm_core::BufferRequestBodyLayer) above the chain (the
//! request must be replayable and, for body rewrites and the cache, buffered), and
//! [`InspectErrorBodyLayer`](tower_llm_core::InspectErrorBodyLayer) below it, around the client,
//! so error bodies (`context_length_exceeded`, `insufficient_quota`) are classified.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_core::{BufferRequestBodyLayer, InspectErrorBodyLayer, ReplayBody, Target};
//! use tower_llm_fallback::{FallbackKind, FallbackLayer, FallbackReport, TargetConfig, X_LLM_FALLBACK};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // Stands in for hyper-util's client: the primary is down, the fallback answers.
//! let client = service_fn(|req: http::Request<ReplayBody<Full<Bytes>>>| async move {
//!     let target = req.extensions().get::<Target>().cloned().unwrap();
//!     let (status, body) = if target.provider() == "groq" {
//!         (503, r#"{"error":{"message":"over capacity","type":"server_error"}}"#.to_owned())
//!     } else {
//!         (200, format!(r#"{{"model":"{}","choices":[{{"message":{{"content":"hi"}}}}]}}"#, target.model()))
//!     };
//!     Ok::<_, std::convert::Infallible>(
//!         http::Response::builder().status(status).body(Full::new(Bytes::from(body))).unwrap(),
//!     )
//! });
//! let fallback = FallbackLayer::builder()
//!     .target(TargetConfig::new("groq", "llama-3.3-70b").attempt_timeout(Duration::from_secs(5)))
//!     .target(TargetConfig::new("gemini", "gemini-2.0-flash").base_url("http://gemini.example/v1beta/openai"))
//!     .build()
//!     .unwrap();
//! let handle = fallback.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(BufferRequestBodyLayer::default())
//!     .layer(fallback)
//!     .layer(InspectErrorBodyLayer::new())
//!     .service(client);
//!
//! let req = http::Request::post("http://gateway/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(br#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#)))
//!     .unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.headers()[X_LLM_FALLBACK], "target");
//! let report = res.extensions().get::<FallbackReport>().unwrap().clone();
//! assert_eq!(report.fallback, FallbackKind::Target);
//! assert_eq!(report.attempts.len(), 1); // groq: overloaded
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! assert!(body.starts_with(br#"{"model":"gemini-2.0-flash""#)); // the model that answered
//! // groq is cooling down now.
//! assert!(!handle.health().targets[0].available);
//! # }
//! ```

#![forbid(unsafe_code)]

/// The README's Rust examples, compiled and run as doc tests so they stay accurate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod body;
pub mod cache;
mod chain;
pub mod config;
pub mod cooldown;
pub mod error;
pub mod escalation;
pub mod future;
pub mod handle;
pub mod health;
mod json;
pub mod layer;
pub mod metrics;
pub mod peek;
pub mod report;
pub mod resume;
pub mod rewrite;
pub mod service;
pub mod shared;
pub mod static_tier;
pub mod store;
pub mod target;
pub mod trace;

pub use body::FallbackBody;
pub use cache::{CacheConfig, CacheScope};
pub use chain::MAX_TARGETS;
pub use config::{FallbackLayerBuilder, Selection};
pub use cooldown::{
    is_transient, Cooldown, CooldownPolicy, DEFAULT_MAX_PROBE_INTERVAL, DEFAULT_MAX_SERVER_DELAY,
    DEFAULT_MIN_COOLDOWN, DEFAULT_PANIC_PROBE_INTERVAL, DEFAULT_QUOTA_COOLDOWN,
    DEFAULT_RATE_LIMIT_COOLDOWN,
};
pub use error::RewriteError;
pub use escalation::{
    Escalation, EscalationEvent, EscalationPolicy, EscalationReason, JsonDirEscalation,
    JsonDirEscalationBuilder, LogEscalation, Suppressed, DEFAULT_BURST_FAILURES,
    DEFAULT_BURST_WINDOW, DEFAULT_RATE_LIMIT_WINDOW, DEFAULT_REPEATED_KIND,
};
pub use future::ResponseFuture;
pub use handle::FallbackHandle;
pub use health::{CooldownSnapshot, ErrorRecord, HealthSnapshot, OverallHealth, TargetHealth};
pub use layer::FallbackLayer;
pub use report::{is_skipped, FallbackKind, FallbackReport, X_LLM_FALLBACK, X_LLM_TARGET};
pub use resume::{ResumeConfig, ResumeMode};
pub use rewrite::Secret;
pub use service::Fallback;
pub use shared::{CooldownEvent, CooldownTarget, LocalCooldowns, SharedCooldowns};
pub use static_tier::StaticAnswer;
pub use store::{write_atomic, HealthStore, JsonFileStore};
pub use target::TargetConfig;
