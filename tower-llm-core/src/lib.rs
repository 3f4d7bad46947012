//! Shared vocabulary of tower-llm.
//!
//! Every pattern crate (breaker, retry, fallback, bulkhead) depends on this crate and on nothing
//! else of the workspace. It holds:
//!
//! - the error taxonomy ([`ErrorKind`], sets of kinds: [`KindSet`]) and classification ([`Classify`], [`HttpClassifier`],
//!   [`classify_error`]);
//! - parsing of every server-delay signal ([`delay`]) and of provider error bodies ([`provider`]);
//! - [`InspectErrorBodyLayer`], which reads error bodies so the classifier sees provider codes;
//! - replayable bodies ([`ReplayBody`], [`ReplayableBody`], [`BufferRequestBodyLayer`]);
//! - the media type of a `Content-Type` header ([`content_type`]: stream or JSON);
//! - SSE framing helpers ([`sse`]) and the OpenAI chat-completions wire format ([`openai`]:
//!   completions, chunks, usage, error bodies, `[DONE]`);
//! - streaming integrity ([`stream`]): [`StreamGuardLayer`] commits to a stream at its first event
//!   and keeps its time limits; [`StreamOutcome`] reports how a streamed body ended;
//! - the [`Target`] and [`AttemptBudget`] request extensions (which target an attempt goes to,
//!   and the deadline and role the chain gives it) and the errors every layer shares ([`error`]).
//!
//! Feature `hyper` (default): [`classify_error`] recognises `hyper` and `hyper-util` client
//! errors. A client not built on hyper turns default features off (here and in the pattern
//! crates, which forward the feature) and does not compile hyper-util.
//!
//! ```
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_core::{Classify, HttpClassifier, InspectErrorBodyLayer};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let client = service_fn(|_req: http::Request<()>| async {
//!     let res = http::Response::builder()
//!         .status(503)
//!         .header("retry-after", "1")
//!         .body(http_body_util::Full::new(bytes::Bytes::new()))
//!         .unwrap();
//!     Ok::<_, std::convert::Infallible>(res)
//! });
//! let svc = ServiceBuilder::new().layer(InspectErrorBodyLayer::new()).service(client);
//! let res = svc.oneshot(http::Request::new(())).await.unwrap();
//! let verdict = HttpClassifier::default().classify_response(&res);
//! assert_eq!(verdict.kind(), Some(tower_llm_core::ErrorKind::Overloaded));
//! # }
//! ```

#![forbid(unsafe_code)]

/// The README's Rust examples, compiled and run as doc tests so they stay accurate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod body;
pub mod budget;
pub mod buffer;
pub mod classify;
pub mod content_type;
pub mod delay;
pub mod error;
pub mod inspect;
pub mod kind;
pub mod openai;
pub mod provider;
pub mod sse;
pub mod stream;
pub mod target;

pub use body::{NotReplayable, ReplayBody, ReplayableBody};
pub use budget::{AttemptBudget, HttpBudget, NoBudget, ReadBudget};
pub use buffer::{BufferRequestBody, BufferRequestBodyLayer};
pub use classify::{
    classify_error, Classification, Classify, Failure, HttpClassifier, Origin, ProviderError,
};
pub use error::{
    AllTargetsFailed, AttemptRecord, AttemptTimeout, BoxError, BreakerOpen, BreakerOpenCause,
    BulkheadFull, ClassifiedError, ConfigError, LimitKind, RetriesExhausted,
};
pub use inspect::{InspectErrorBody, InspectErrorBodyLayer};
pub use kind::{ErrorKind, KindSet};
pub use stream::{
    GuardedBody, MalformedPolicy, StreamEnd, StreamGuard, StreamGuardFuture, StreamGuardLayer,
    StreamGuardLayerBuilder, StreamLimits, StreamOutcome,
};
pub use target::Target;
