//! tower-llm: Tower middleware that keeps calls to LLM APIs alive when providers misbehave.
//!
//! This facade re-exports the pattern crates and turns a TOML configuration into a stack.
//!
//! ```
//! use tower_llm::core::ErrorKind;
//!
//! assert!(ErrorKind::Overloaded.is_retryable());
//! ```

#![forbid(unsafe_code)]

pub mod config;

pub use tower_llm_breaker as breaker;
pub use tower_llm_bulkhead as bulkhead;
pub use tower_llm_core as core;
pub use tower_llm_fallback as fallback;
pub use tower_llm_retry as retry;
