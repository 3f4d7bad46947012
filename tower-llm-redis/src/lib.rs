//! Shared state for tower-llm replicas through Redis.
//!
//! Several gateway replicas (or many instances of an application using the tower-llm layers)
//! behind a load balancer each learn alone what a provider is doing. This crate implements the
//! pattern crates' shared-state traits on Redis so that what one replica learns — a cooldown, a
//! breaker transition, the spend of a rate or token budget — is applied by all of them.
//!
//! Redis is never on the failure path: every decision that waits on Redis falls back to the
//! process's local state after a bounded time, and sharing resumes when Redis answers again.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_breaker::CircuitBreakerLayer;
//! use tower_llm_fallback::{FallbackLayer, TargetConfig};
//! use tower_llm_redis::{RedisConfig, SharedState};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One handle per process; connecting never fails because Redis is down.
//! let shared = SharedState::connect(
//!     RedisConfig::new("redis://127.0.0.1:6379/0")
//!         .key_prefix("prod:")
//!         .timeout(Duration::from_millis(20)),
//! )?;
//! // A chain's cooldowns (scope: the chain's name, the same on every replica) …
//! let chain = FallbackLayer::builder()
//!     .target(TargetConfig::new("openai", "gpt-4o-mini"))
//!     .target(TargetConfig::new("groq", "llama-3.1-8b-instant"))
//!     .shared_cooldowns(shared.cooldowns("chat"))
//!     .build()?;
//! // … and a breaker's transitions.
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("openai/gpt-4o-mini")
//!     .shared(shared.breakers("chat"))
//!     .build()?;
//! # let _ = (chain, breaker);
//! # Ok(()) }
//! ```
//!
//! | module | shares |
//! |---|---|
//! | [`state`] | the per-process handle: connection, key prefix, timeout, status, background tasks |
//! | [`cooldowns`] | a fallback chain's benches, recoveries and probe leases |
//! | [`breakers`] | breakers' open (with the deadline) / forced-open / closed transitions and half-open leases |
//! | [`limiter`] | bulkheads' request-rate and token budgets, decided in Redis at each admission ([`limiter::RedisLimiter`]) |
//!
//! **Clock skew.** Deadlines cross processes as Unix milliseconds and key TTLs, so replicas'
//! clocks must agree to well within a cooldown or an open period (NTP keeps them within a few
//! ms); a replica whose clock is `d` ahead ends a shared bench `d` early.

#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod breakers;
pub mod cooldowns;
pub mod limiter;
pub mod metrics;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use breakers::RedisBreakers;
pub use cooldowns::RedisCooldowns;
pub use state::{
    redact, unix_ms_now, RedisConfig, SharedState, SharedStateHealth, SharedStateStatus,
    DEFAULT_KEY_PREFIX, DEFAULT_PROBE_LEASE, DEFAULT_TIMEOUT,
};
