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

#![forbid(unsafe_code)]

mod builder;
pub mod config;
pub mod error;
pub mod health;
pub mod stack;

pub use builder::ServiceBuilderExt;
pub use config::{ConfigFileError, StackConfig};
pub use error::{InvalidReason, InvalidRequest, NoRoute, TooManyModels};
pub use health::{Overall, StackHealth, TargetStatus};
pub use stack::{Stack, StackBuilder};

pub use tower_llm_breaker as breaker;

/// The README's Rust examples, compiled and run as doc tests so they stay accurate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use tower_llm_bulkhead as bulkhead;
pub use tower_llm_core as core;
pub use tower_llm_fallback as fallback;
pub use tower_llm_retry as retry;
