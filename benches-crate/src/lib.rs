//! Shared pieces of tower-llm's benchmarks (not published).
//!
//! - [`fixtures`]: the request every per-layer bench sends, and [`fixtures::Upstream`], the
//!   in-memory service standing in for an LLM provider (answers at once, fails, or hangs);
//! - [`drive`]: the minimal executor every variant is driven by, so no runtime scheduling is
//!   measured and every variant pays the same driving cost;
//! - [`latency`]: latency percentiles of the gateway load generator;
//! - [`bare_proxy`]: the bare pass-through proxy the gateway load bench measures the gateway
//!   against (hyper server, hyper-util client, streaming bodies, no layers);
//! - [`inline_proxy`]: the same proxy with its upstream connections driven by the answer's
//!   reader, as the gateway's client drives HTTP/1.1 ones (`BARE_PROXY_INLINE`).
//!
//! The benches themselves: `benches/layers.rs` (per-layer cost, allocations per call, every
//! layer and peer in one run); `benches/breaker.rs`, `benches/bulkhead.rs`, `benches/fallback.rs`
//! and `benches/retry.rs` (one layer each against its peers: tower-resilience's breaker and
//! bulkhead, tower's `ConcurrencyLimit` and `Retry`); `benches/gateway_load.rs` (the gateway under
//! load) and `benches/gateway_scenarios.rs` (the outage scenarios against the gateway binary).
//! See `BENCHMARKS.md` at the repository root for commands and figures.
//!
//! ```
//! use tower::ServiceExt;
//! use tower_llm_benches::drive::{block_on, thread_waker};
//! use tower_llm_benches::fixtures::{request, Upstream, WIRE};
//!
//! let waker = thread_waker();
//! let res = block_on(&waker, Upstream::healthy().oneshot(request(&WIRE))).unwrap();
//! assert_eq!(res.status(), 200);
//! ```

#![forbid(unsafe_code)]

pub mod bare_proxy;
pub mod drive;
pub mod fixtures;
pub mod inline_proxy;
pub mod latency;
