//! tower-llm: Tower middleware that keeps calls to LLM APIs alive when providers misbehave.
//!
//! This facade re-exports the pattern crates ([`core`], [`breaker`], [`retry`], [`fallback`],
//! [`bulkhead`]), adds [`ServiceBuilderExt`] (one `ServiceBuilder` method per layer), and turns
//! a TOML [`config::StackConfig`] into a ready per-route [`stack::Stack`].
//!
//! ```
//! use tower_llm::config::StackConfig;
//! use tower_llm::core::ErrorKind;
//!
//! assert!(ErrorKind::Overloaded.is_retryable());
//! // DESIGN.md's defaults around one provider, with a fallback model elsewhere.
//! let config = StackConfig::standard(
//!     "http://127.0.0.1:11434/v1",
//!     Some(("http://127.0.0.1:9102/v1", "llama3.2:3b")),
//! ).unwrap();
//! assert_eq!(config.retry.max_attempts, 3);
//! ```
//!
//! # How the layers behave together
//!
//! Each layer is right on its own; stacked, they follow six rules so that an outage costs what
//! it lasts, not a minute more (measured in `RESILIENCE.md`, guarded by `tests/scenarios.rs`):
//!
//! 1. **Time flows down.** The fallback chain gives each attempt a deadline (the target's
//!    `attempt_timeout_ms`) in a [`core::AttemptBudget`] request extension. Retry never starts a
//!    backoff, nor waits for a server's `retry-after`, that would end past it: it hands the
//!    failure back at once, with its kind and delay. The bulkhead never queues past it.
//! 2. **Record what happened.** A target is recorded with the kind its upstream showed (a 503
//!    is `overloaded`, a 429 is `rate_limited` with its delay); `timeout` only when the upstream
//!    was silent until the deadline.
//! 3. **Fail over rather than retry.** While another target could answer, an attempt is a single
//!    call: a failure (a silent target included) moves the request on at once. Retries are for
//!    the last target standing. A probe is always one call.
//! 4. **One health gate per target: the chain decides when a target is called.** It benches a
//!    failing target and sends one probe when the cooldown lifts. The per-target circuit breaker
//!    below still counts failures and rejects ordinary calls while open, but it lets the chain's
//!    probe through (as its half-open trial), and its open state is mirrored as a bench of the
//!    chain (until the breaker's next probe, at most the chain's own cooldown). So a recovered
//!    provider is never kept out by two clocks in a row. The chain is the authority because it
//!    is the one layer that sees every target of the route: it knows when failing over is
//!    possible and when every target is down.
//! 5. **Recovery is bounded.** After a transient failure (5xx, 529, timeout, reset) a target is
//!    benched for a quarter of the time it has been failing, between 1 s and
//!    `max_probe_interval_ms` (5 s): a 6 s outage is probed about once a second, a long one every
//!    5 s. Rate limits bench for exactly the server's delay; auth failures until reset.
//! 6. **Panic mode.** When every target of a route is benched, each is probed every 500 ms (one
//!    probe at a time); the other requests get the cache or static answer when configured, or
//!    [`core::AllTargetsFailed`] with the time to the next probe (a gateway's 503 `retry-after`).

#![forbid(unsafe_code)]

mod builder;
pub mod client;
pub mod config;
pub mod error;
pub mod health;
pub mod stack;

pub use builder::ServiceBuilderExt;
pub use config::{ConfigDocument, ConfigFileError, StackConfig};
pub use error::{
    check_model_name, InvalidReason, InvalidRequest, ModelNameError, NoRoute, TooManyModels,
    MAX_MODEL_NAME_BYTES,
};
pub use health::{OverallHealth, StackHealth, TargetStatus};
pub use stack::{Stack, StackBuilder};

pub use tower_llm_breaker as breaker;

/// The README's Rust examples, compiled and run as doc tests so they stay accurate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use tower_llm_bulkhead as bulkhead;
pub use tower_llm_core as core;
pub use tower_llm_fallback as fallback;
pub use tower_llm_redis as redis;
pub use tower_llm_retry as retry;
