//! Shared state for tower-llm replicas through Redis.
//!
//! Several gateway replicas (or many instances of an application using the tower-llm layers)
//! behind a load balancer each learn alone what a provider is doing. This crate implements the
//! pattern crates' shared-state traits on Redis so that what one replica learns — a cooldown, a
//! breaker transition, the spend of a rate or token budget — is applied by all of them.
//!
//! Redis is never on the failure path: every decision that waits on Redis falls back to the
//! process's local state after a bounded time, and sharing resumes when Redis answers again.

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
