//! The serde snapshot of the chain's health: [`HealthSnapshot`] and what it holds.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tower_llm_core::{ErrorKind, Target};

use super::unix_ms;

/// How many recent errors a target keeps.
pub const RECENT_ERRORS: usize = 50;

/// One error a target returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorRecord {
    /// What went wrong.
    pub kind: ErrorKind,
    /// When (wall clock, milliseconds since the Unix epoch).
    pub at_unix_ms: u64,
    /// The HTTP status, when the target answered with one.
    pub status: Option<u16>,
}

/// A target's cooldown, as seen in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CooldownSnapshot {
    /// The kind of failure that benched the target.
    pub kind: ErrorKind,
    /// When the cooldown lifts (wall clock, ms since the Unix epoch); `None` means "until reset".
    pub until_unix_ms: Option<u64>,
    /// Whether the cooldown has lifted and a probe request is deciding whether the target returns.
    pub probing: bool,
}

/// The health of one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TargetHealth {
    /// The target's name (unique in the chain).
    pub name: String,
    /// Provider and upstream model.
    pub target: Target,
    /// The tier the target belongs to (0 = first).
    pub tier: usize,
    /// Whether a request arriving now may call the target (no cooldown, or a lifted cooldown with
    /// no probe in flight).
    pub available: bool,
    /// Calls to the target in flight now.
    #[serde(default)]
    pub in_flight: usize,
    /// The cooldown, if the target is benched (or being probed).
    pub cooldown: Option<CooldownSnapshot>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Calls made to the target (local rejections excluded).
    pub requests: u64,
    /// Calls that failed.
    pub failures: u64,
    /// `(requests − failures) / requests`, or 1 with no requests yet.
    pub success_rate: f64,
    /// The most recent error.
    pub last_error: Option<ErrorRecord>,
    /// The last [`RECENT_ERRORS`] errors, oldest first.
    pub recent_errors: Vec<ErrorRecord>,
}

/// Healthy, degraded or unhealthy: the health of a chain, or of every target of a stack (the
/// facade's `StackHealth` uses it too). Serialized as `healthy`, `degraded`, `unhealthy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverallHealth {
    /// Every target is available.
    Healthy,
    /// Some targets are benched, at least one is available.
    Degraded,
    /// No target is available: only the cache or static tier (if any) can answer.
    Unhealthy,
}

impl OverallHealth {
    /// The health of `total` targets of which `available` can be called: healthy when all can
    /// (or there are none), degraded when some can, unhealthy when none can.
    pub const fn from_available(available: usize, total: usize) -> Self {
        if available >= total {
            OverallHealth::Healthy
        } else if available > 0 {
            OverallHealth::Degraded
        } else {
            OverallHealth::Unhealthy
        }
    }

    /// `healthy`, `degraded` or `unhealthy`, as serialized.
    pub const fn as_str(self) -> &'static str {
        match self {
            OverallHealth::Healthy => "healthy",
            OverallHealth::Degraded => "degraded",
            OverallHealth::Unhealthy => "unhealthy",
        }
    }
}

/// A serde snapshot of the chain's health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthSnapshot {
    /// Healthy, degraded or unhealthy.
    pub status: OverallHealth,
    /// When the snapshot was taken (wall clock, ms since the Unix epoch).
    pub at_unix_ms: u64,
    /// One entry per target, in chain order.
    pub targets: Vec<TargetHealth>,
}

impl HealthSnapshot {
    pub(crate) fn new(targets: Vec<TargetHealth>) -> Self {
        let available = targets.iter().filter(|t| t.available).count();
        HealthSnapshot {
            status: OverallHealth::from_available(available, targets.len()),
            at_unix_ms: unix_ms(SystemTime::now()),
            targets,
        }
    }

    /// The entry for the target named `name`.
    pub fn target(&self, name: &str) -> Option<&TargetHealth> {
        self.targets.iter().find(|t| t.name == name)
    }
}
