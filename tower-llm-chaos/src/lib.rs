//! Fault injection for tower-llm: a scriptable mock OpenAI-compatible upstream, and a layer that
//! injects errors, latency and canned responses into any tower service.
//!
//! ```
//! use std::time::Duration;
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower_llm_chaos::{Fault, MockUpstream, CANONICAL_ANSWER};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The first 10 s the upstream answers 503; the model `gpt-bad` always fails.
//! let upstream = MockUpstream::start("0s-10s=status:503; model gpt-bad=status:500".parse()?).await?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
//! let ask = |model: &str| {
//!     http::Request::post(upstream.completions_url())
//!         .body(Full::from(format!(r#"{{"model":"{model}","stream":true}}"#)))
//!         .unwrap()
//! };
//!
//! assert_eq!(client.request(ask("gpt-4o")).await?.status(), 503);
//!
//! upstream.set_profile("model gpt-bad=status:500".parse()?); // the outage is over
//! let res = client.request(ask("gpt-4o")).await?;
//! assert_eq!(res.headers()["content-type"], "text/event-stream");
//! let sse = String::from_utf8(res.into_body().collect().await?.to_bytes().to_vec())?;
//! assert!(sse.ends_with("data: [DONE]\n\n"));
//!
//! let faults: Vec<_> = upstream.attempts().iter().map(|a| a.fault).collect();
//! assert_eq!(faults, ["status", "healthy"]);
//! # Ok(())
//! # }
//! ```
//!
//! # Contents
//!
//! - [`MockUpstream`] ([`upstream`]): `POST /v1/chat/completions` on `127.0.0.1:0`, JSON and SSE,
//!   with faults per time window, per model and by default, and a log of every [`Attempt`].
//!   Also a binary: `cargo run -p tower-llm-chaos --bin mock-upstream -- --listen 127.0.0.1:9101
//!   --profile "0s-20s=status:503; default=healthy"`.
//! - [`Fault`] ([`fault`]) and [`FaultProfile`] ([`profile`]), with a text form ([`grammar`]) for
//!   config files.
//! - [`CANONICAL_ANSWER`] ([`canonical`]): the text of every healthy answer, so a truncated
//!   answer can always be told from a whole one. [`MockUpstreamBuilder::answer`] with
//!   [`Answer::Alternate`] makes a mock answer [`ALTERNATE_ANSWER`] instead: the same first three
//!   tokens, then other words, so a replayed request diverges mid-text.
//! - [`Prefill`] ([`MockUpstreamBuilder::prefill`], [`MockHandle::set_prefill`]): what a mock
//!   does with an assistant prefill (a final `{"role":"assistant"}` message holding the text so
//!   far) — ignore it like OpenAI (the default), continue the answer text after it like vLLM
//!   with `continue_final_message` or Anthropic, or reject it with an OpenAI-shaped 400.
//! - [`ChaosLayer`] ([`layer`], [`config`], [`service`], [`future`], [`switch`]): seeded error,
//!   latency and canned-response injection for any service, with a runtime on/off switch.
//! - [`hold_auto_advance`] ([`clock`]): keep a paused test clock still while real IO is under way.
//! - [`metrics`]: the names of the chaos layer's metrics, as constants.
//! - [`scenario`]: outage scenarios — closed-loop or paced clients drive any resilient service
//!   while the mocks fail on a timeline, and a [`ScenarioReport`](scenario::ScenarioReport) says
//!   what the users lived through (answers, latency during the fault, upstream calls, recovery).

#![forbid(unsafe_code)]

/// The README's Rust examples, compiled and run as doc tests so they stay accurate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod canonical;
pub mod clock;
pub mod config;
pub mod fault;
pub mod future;
pub mod grammar;
pub mod layer;
pub mod metrics;
pub mod profile;
pub mod scenario;
pub mod service;
pub mod switch;
pub mod upstream;

pub use canonical::{
    alternate_tokens, canonical_tokens, Answer, ALTERNATE_ANSWER, CANONICAL_ANSWER,
};
pub use clock::{hold_auto_advance, AutoAdvanceGuard};
pub use config::{CannedResponse, ChaosLayerBuilder, NoResponse};
pub use fault::{ErrorReply, ErrorShape, Fault, InvalidFault, RetryAfter};
pub use grammar::ParseError;
pub use layer::{ChaosLayer, ChaosStats};
pub use profile::{FaultProfile, ScheduledFault};
pub use service::Chaos;
pub use switch::ChaosSwitch;
#[cfg(feature = "tls")]
pub use upstream::MockTls;
pub use upstream::{Attempt, MockHandle, MockUpstream, MockUpstreamBuilder, Prefill};
