//! Escalation: tell a person (or a pager) when the chain is in trouble.
//!
//! An [`Escalation`] hook is called with an [`EscalationEvent`] when
//! - every target failed for a request ([`EscalationReason::AllTargetsFailed`], also when the cache
//!   or static tier then answered: the event says which);
//! - one target fails with the same error kind N times in a row, with no success of that target
//!   in between ([`EscalationReason::RepeatedKind`], default N = 5; fires at N, 2N, ...; with
//!   cooldowns in between, that is a target down for a while, not a blip);
//! - more than M calls failed within a time window ([`EscalationReason::FailureBurst`], default
//!   more than 20 in 60 s; the window restarts after it fires).
//!
//! The default hook, [`LogEscalation`], emits one structured `tracing` error event.
//! [`JsonDirEscalation`] writes each event as a JSON file into a directory, atomically (a reader
//! never sees half a file). Hooks are called synchronously on the failing request's task: keep
//! them short (spawn work elsewhere if it may block for long).
//!
//! ```
//! use tower_llm_fallback::{EscalationPolicy, FallbackLayer, JsonDirEscalation, TargetConfig};
//!
//! let dir = std::env::temp_dir().join(format!("tower-llm-escalations-doc-{}", std::process::id()));
//! let layer = FallbackLayer::builder()
//!     .target(TargetConfig::new("openai", "gpt-4o-mini"))
//!     .escalation(JsonDirEscalation::new(&dir).unwrap())
//!     .escalation_policy(EscalationPolicy::new().repeated_kind(3).failure_burst(10, std::time::Duration::from_secs(30)))
//!     .build()
//!     .unwrap();
//! # let _ = layer;
//! # let _ = std::fs::remove_dir_all(dir);
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;
use tower_llm_core::{AttemptRecord, ConfigError, ErrorKind};

use crate::health::unix_ms;
use crate::report::FallbackKind;
use crate::store::write_atomic;

/// Why an escalation fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EscalationReason {
    /// Every target failed (or was benched) for one request.
    AllTargetsFailed,
    /// One target failed with the same error kind `count` times in a row.
    RepeatedKind {
        /// The kind that repeated.
        kind: ErrorKind,
        /// How many times in a row.
        count: u32,
    },
    /// `failures` calls failed within `window_ms`.
    FailureBurst {
        /// Failures counted in the window.
        failures: u32,
        /// The window, in milliseconds.
        window_ms: u64,
    },
}

impl EscalationReason {
    /// A stable `snake_case` name.
    pub const fn as_str(&self) -> &'static str {
        match self {
            EscalationReason::AllTargetsFailed => "all_targets_failed",
            EscalationReason::RepeatedKind { .. } => "repeated_kind",
            EscalationReason::FailureBurst { .. } => "failure_burst",
        }
    }
}

/// One escalation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EscalationEvent {
    /// Why it fired.
    pub reason: EscalationReason,
    /// When (wall clock, ms since the Unix epoch).
    pub at_unix_ms: u64,
    /// The target whose failure triggered it (for `RepeatedKind` and `FailureBurst`).
    pub target: Option<String>,
    /// The kind of the triggering failure (the last one, for `AllTargetsFailed`).
    pub kind: Option<ErrorKind>,
    /// For `AllTargetsFailed`: every attempt of the request, skipped targets included.
    pub attempts: Vec<AttemptRecord>,
    /// For `AllTargetsFailed`: the tier that answered anyway (`cache`, `static`), if any.
    pub served_by: Option<FallbackKind>,
}

/// A hook called when the chain needs a person's attention.
pub trait Escalation: Send + Sync + 'static {
    /// Handle one event. Called synchronously on the request's task; must not panic.
    fn escalate(&self, event: &EscalationEvent);
}

/// The default hook: one structured `tracing` event at `ERROR` level per escalation.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogEscalation;

impl Escalation for LogEscalation {
    fn escalate(&self, event: &EscalationEvent) {
        tracing::error!(
            target: "tower_llm_fallback::escalation",
            reason = event.reason.as_str(),
            target_name = event.target.as_deref(),
            kind = event.kind.map(ErrorKind::as_str),
            attempts = event.attempts.len(),
            served_by = event.served_by.map(FallbackKind::as_str),
            details = %serde_json::to_string(&event.reason).unwrap_or_default(),
            "fallback chain escalation"
        );
    }
}

/// Writes each event as `<unix-ms>-<pid>-<seq>-<reason>.json` into a directory, atomically
/// (written to a temporary file, then renamed).
#[derive(Debug)]
pub struct JsonDirEscalation {
    dir: PathBuf,
    seq: AtomicU64,
}

impl JsonDirEscalation {
    /// Write events into `dir` (created if missing).
    pub fn new(dir: impl AsRef<Path>) -> std::io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        Ok(JsonDirEscalation {
            dir,
            seq: AtomicU64::new(0),
        })
    }

    /// The directory events are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Escalation for JsonDirEscalation {
    fn escalate(&self, event: &EscalationEvent) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}-{}-{seq:06}-{}.json",
            event.at_unix_ms,
            std::process::id(),
            event.reason.as_str()
        );
        let result = serde_json::to_vec_pretty(event)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomic(&self.dir.join(name), &bytes));
        if let Err(error) = result {
            tracing::warn!(target: "tower_llm_fallback::escalation", %error, dir = %self.dir.display(), "could not write escalation record");
        }
    }
}

/// The default [`EscalationPolicy::repeated_kind`]: the same kind this many times in a row.
pub const DEFAULT_REPEATED_KIND: u32 = 5;
/// The default [`EscalationPolicy::failure_burst`]: more than this many failures within
/// [`DEFAULT_BURST_WINDOW`].
pub const DEFAULT_BURST_FAILURES: u32 = 20;
/// The default window of [`EscalationPolicy::failure_burst`].
pub const DEFAULT_BURST_WINDOW: Duration = Duration::from_secs(60);

/// When escalations fire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscalationPolicy {
    all_failed: bool,
    repeated_kind: Option<u32>,
    burst: Option<(u32, Duration)>,
}

impl Default for EscalationPolicy {
    fn default() -> Self {
        EscalationPolicy {
            all_failed: true,
            repeated_kind: Some(DEFAULT_REPEATED_KIND),
            burst: Some((DEFAULT_BURST_FAILURES, DEFAULT_BURST_WINDOW)),
        }
    }
}

impl EscalationPolicy {
    /// All triggers on: every target failed; 5 in a row; more than 20 failures in 60 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to escalate when every target failed for a request (default on).
    pub fn all_targets_failed(mut self, on: bool) -> Self {
        self.all_failed = on;
        self
    }

    /// Escalate when a target fails with one kind `n` times in a row (0 turns it off).
    pub fn repeated_kind(mut self, n: u32) -> Self {
        self.repeated_kind = (n > 0).then_some(n);
        self
    }

    /// Escalate when more than `failures` calls fail within `window` (0 turns it off).
    pub fn failure_burst(mut self, failures: u32, window: Duration) -> Self {
        self.burst = (failures > 0).then_some((failures, window));
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some((_, window)) = self.burst {
            if window.is_zero() {
                return Err(ConfigError::new(
                    "escalation_policy",
                    "failure burst window must be > 0",
                ));
            }
        }
        Ok(())
    }
}

/// The hook plus its trigger state.
pub(crate) struct Escalator {
    hook: Box<dyn Escalation>,
    policy: EscalationPolicy,
    burst: Mutex<VecDeque<Instant>>,
}

impl fmt::Debug for Escalator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Escalator")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Escalator {
    pub(crate) fn new(hook: Box<dyn Escalation>, policy: EscalationPolicy) -> Self {
        Escalator {
            hook,
            policy,
            burst: Mutex::default(),
        }
    }

    /// A call to `target` failed upstream with `kind`, its `streak`-th such failure in a row.
    pub(crate) fn on_failure(&self, target: &str, kind: ErrorKind, streak: u32, now: Instant) {
        if let Some(n) = self.policy.repeated_kind {
            if streak > 0 && streak % n == 0 {
                self.fire(EscalationEvent {
                    reason: EscalationReason::RepeatedKind {
                        kind,
                        count: streak,
                    },
                    at_unix_ms: unix_ms(SystemTime::now()),
                    target: Some(target.to_owned()),
                    kind: Some(kind),
                    attempts: Vec::new(),
                    served_by: None,
                });
            }
        }
        if let Some((max, window)) = self.policy.burst {
            let fired = {
                let mut times = self.burst.lock().unwrap_or_else(PoisonError::into_inner);
                while times
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) >= window)
                {
                    times.pop_front();
                }
                times.push_back(now);
                let count = times.len();
                if count > max as usize {
                    times.clear();
                    Some(count)
                } else {
                    None
                }
            };
            if let Some(failures) = fired {
                self.fire(EscalationEvent {
                    reason: EscalationReason::FailureBurst {
                        failures: u32::try_from(failures).unwrap_or(u32::MAX),
                        window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
                    },
                    at_unix_ms: unix_ms(SystemTime::now()),
                    target: Some(target.to_owned()),
                    kind: Some(kind),
                    attempts: Vec::new(),
                    served_by: None,
                });
            }
        }
    }

    /// Every target failed for one request.
    pub(crate) fn on_all_failed(
        &self,
        attempts: &[AttemptRecord],
        served_by: Option<FallbackKind>,
    ) {
        if !self.policy.all_failed {
            return;
        }
        self.fire(EscalationEvent {
            reason: EscalationReason::AllTargetsFailed,
            at_unix_ms: unix_ms(SystemTime::now()),
            target: None,
            kind: attempts.last().map(|a| a.kind),
            attempts: attempts.to_vec(),
            served_by,
        });
    }

    fn fire(&self, event: EscalationEvent) {
        metrics::counter!(
            crate::metrics::ESCALATIONS_TOTAL,
            crate::metrics::REASON => event.reason.as_str()
        )
        .increment(1);
        self.hook.escalate(&event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<EscalationEvent>>>);

    impl Escalation for Collect {
        fn escalate(&self, event: &EscalationEvent) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_kind_fires_every_n_in_a_row() {
        let seen = Collect::default();
        let esc = Escalator::new(
            Box::new(seen.clone()),
            EscalationPolicy::new()
                .repeated_kind(3)
                .failure_burst(0, Duration::from_secs(1)),
        );
        let now = Instant::now();
        for streak in [1, 2, 1, 2] {
            esc.on_failure("a", ErrorKind::Timeout, streak, now);
        }
        assert!(seen.0.lock().unwrap().is_empty());
        for streak in 1..=7 {
            esc.on_failure("b", ErrorKind::ServerError, streak, now);
        }
        let events = seen.0.lock().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].reason,
            EscalationReason::RepeatedKind {
                kind: ErrorKind::ServerError,
                count: 3
            }
        );
        assert_eq!(
            events[1].reason,
            EscalationReason::RepeatedKind {
                kind: ErrorKind::ServerError,
                count: 6
            }
        );
        assert_eq!(events[0].target.as_deref(), Some("b"));
    }

    #[tokio::test(start_paused = true)]
    async fn burst_counts_failures_in_the_window_only() {
        let seen = Collect::default();
        let esc = Escalator::new(
            Box::new(seen.clone()),
            EscalationPolicy::new()
                .repeated_kind(0)
                .failure_burst(3, Duration::from_secs(10)),
        );
        let t0 = Instant::now();
        for i in 0..3 {
            esc.on_failure(
                "a",
                ErrorKind::Overloaded,
                1,
                t0 + Duration::from_secs(i * 4),
            );
        }
        // t=12: the one at t=0 left the window.
        esc.on_failure("a", ErrorKind::Overloaded, 1, t0 + Duration::from_secs(12));
        assert!(seen.0.lock().unwrap().is_empty());
        esc.on_failure("a", ErrorKind::Overloaded, 1, t0 + Duration::from_secs(13));
        let events = seen.0.lock().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].reason,
            EscalationReason::FailureBurst {
                failures: 4,
                window_ms: 10_000
            }
        );
    }

    #[test]
    fn json_dir_writes_whole_files() {
        let dir = std::env::temp_dir().join(format!(
            "tower-llm-fallback-esc-unit-{}",
            std::process::id()
        ));
        let hook = JsonDirEscalation::new(&dir).unwrap();
        let event = EscalationEvent {
            reason: EscalationReason::AllTargetsFailed,
            at_unix_ms: 1,
            target: None,
            kind: Some(ErrorKind::ServerError),
            attempts: Vec::new(),
            served_by: Some(FallbackKind::Static),
        };
        hook.escalate(&event);
        hook.escalate(&event);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 2);
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        assert_eq!(v["reason"]["type"], "all_targets_failed");
        assert_eq!(v["served_by"], "static");
        assert!(files[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("all_targets_failed.json"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
