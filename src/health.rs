//! The health of a whole [`Stack`](crate::stack::Stack): one entry per target (provider +
//! upstream model) with its breaker, cooldown and counters, and an overall status.
//!
//! A target that appears in several routes (or, for a pass-through target, under several
//! requested models) has one breaker, one bulkhead and one retry budget, but each fallback chain
//! keeps its own cooldown and counters for it; the entry here merges them: the longest cooldown,
//! summed counters, the latest error.

use std::collections::BTreeMap;

use serde::Serialize;
use tower_llm_breaker::{BreakerSnapshot, State};
use tower_llm_fallback::{CooldownSnapshot, ErrorRecord, HealthSnapshot, TargetHealth};

pub use tower_llm_fallback::OverallHealth;

/// The health of one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TargetStatus {
    /// `provider/model`: the `x-llm-target` value.
    pub name: String,
    /// The provider's name.
    pub provider: String,
    /// The upstream model.
    pub model: String,
    /// Whether a request arriving now may call it (no cooldown, breaker not rejecting).
    pub available: bool,
    /// Its circuit breaker (absent when breakers are off).
    pub breaker: Option<BreakerSnapshot>,
    /// Its cooldown, when benched.
    pub cooldown: Option<CooldownSnapshot>,
    /// Failures since its last success.
    pub consecutive_failures: u32,
    /// Calls made to it (local rejections excluded).
    pub requests: u64,
    /// Calls that failed.
    pub failures: u64,
    /// `(requests − failures) / requests`, 1 with no requests yet.
    pub success_rate: f64,
    /// The kind of its last error (`server_error`, `timeout`, ...).
    pub last_error_kind: Option<String>,
    /// Its last error.
    pub last_error: Option<ErrorRecord>,
    /// Calls in flight now (from its bulkhead; 0 when bulkheads are off).
    pub in_flight: usize,
    /// Calls waiting for a bulkhead slot.
    pub queued: usize,
}

/// The health of every target, as served on a gateway's `/health`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StackHealth {
    /// Healthy (every target can be called), degraded (some are benched or their breaker is
    /// open, at least one can be called) or unhealthy (none can: only cache or static tiers
    /// answer).
    pub status: OverallHealth,
    /// One entry per target, sorted by name.
    pub targets: Vec<TargetStatus>,
    /// With `[shared_state]`: whether what replicas learn is shared right now (`connected`),
    /// or every decision is local because Redis is unreachable or slow (`connecting`, `down`),
    /// and how many decisions were taken locally. Redis down does not change `status`: the
    /// stack serves on local state. Absent when sharing is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_state: Option<tower_llm_redis::SharedStateHealth>,
}

impl StackHealth {
    /// The entry of the target named `name` (`provider/model`).
    pub fn target(&self, name: &str) -> Option<&TargetStatus> {
        self.targets.iter().find(|t| t.name == name)
    }
}

/// What the stack knows of one target, outside the fallback chains.
pub(crate) struct TargetParts {
    pub(crate) provider: String,
    pub(crate) model: String,
    pub(crate) breaker: Option<BreakerSnapshot>,
    pub(crate) in_flight: usize,
    pub(crate) queued: usize,
}

/// Merge the chains' views of each target with its breaker and bulkhead.
pub(crate) fn merge(
    parts: BTreeMap<String, TargetParts>,
    chains: &[HealthSnapshot],
) -> StackHealth {
    let mut targets = Vec::with_capacity(parts.len());
    for (name, part) in parts {
        let views: Vec<&TargetHealth> = chains.iter().filter_map(|c| c.target(&name)).collect();
        let requests: u64 = views.iter().map(|v| v.requests).sum();
        let failures: u64 = views.iter().map(|v| v.failures).sum();
        let cooldown = views
            .iter()
            .filter_map(|v| v.cooldown.clone())
            .max_by_key(|c| c.until_unix_ms.unwrap_or(u64::MAX));
        let last_error = views
            .iter()
            .filter_map(|v| v.last_error.clone())
            .max_by_key(|e| e.at_unix_ms);
        let benched = views.iter().any(|v| !v.available);
        let breaker_rejects = part.breaker.as_ref().is_some_and(|b| match b.state {
            State::ForcedOpen => true,
            // An open breaker whose wait is over admits the next call as a probe.
            State::Open => b.retry_after_ms.is_some_and(|ms| ms > 0),
            _ => false,
        });
        targets.push(TargetStatus {
            available: !benched && !breaker_rejects,
            breaker: part.breaker,
            cooldown,
            consecutive_failures: views
                .iter()
                .map(|v| v.consecutive_failures)
                .max()
                .unwrap_or(0),
            requests,
            failures,
            success_rate: if requests == 0 {
                1.0
            } else {
                requests.saturating_sub(failures) as f64 / requests as f64
            },
            last_error_kind: last_error.as_ref().map(|e| e.kind.as_str().to_owned()),
            last_error,
            in_flight: part.in_flight,
            queued: part.queued,
            provider: part.provider,
            model: part.model,
            name,
        });
    }
    let available = targets.iter().filter(|t| t.available).count();
    StackHealth {
        status: OverallHealth::from_available(available, targets.len()),
        targets,
        shared_state: None,
    }
}
