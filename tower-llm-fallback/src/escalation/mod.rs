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
//! **Rate limit.** A total outage fails every request, so escalations are rate-limited per chain,
//! reason and target ([`EscalationPolicy::rate_limit_window`], default 10 s): the first event of
//! a window reaches the hook at once; the rest of that window are counted, and when the window
//! ends one summary event ([`EscalationEvent::suppressed`] set, with the count) reaches the hook
//! (from a timer task on the tokio runtime; without a runtime, at the next event after the
//! window). 1000 failed requests in one window are one event and one summary with count 999.
//!
//! The default hook, [`LogEscalation`], emits one structured `tracing` event: `ERROR` for an
//! event, `WARN` for a summary. [`JsonDirEscalation`] writes each event as a JSON file into a
//! directory, atomically (a reader never sees half a file), on a writer thread of its own fed by
//! a bounded queue (a full queue drops the record and counts it), and keeps at most
//! [`DEFAULT_MAX_FILES`] files (the oldest go first). Hooks are called synchronously on the
//! failing request's task: keep them short and never block (hand work to a thread, as
//! [`JsonDirEscalation`] does).
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_fallback::{EscalationPolicy, FallbackLayer, JsonDirEscalation, TargetConfig};
//!
//! let dir = std::env::temp_dir().join(format!("tower-llm-escalations-doc-{}", std::process::id()));
//! let layer = FallbackLayer::builder()
//!     .target(TargetConfig::new("openai", "gpt-4o-mini"))
//!     .escalation(JsonDirEscalation::builder(&dir).max_files(100).build().unwrap())
//!     .escalation_policy(
//!         EscalationPolicy::new()
//!             .repeated_kind(3)
//!             .failure_burst(10, Duration::from_secs(30))
//!             .rate_limit_window(Duration::from_secs(60)),
//!     )
//!     .build()
//!     .unwrap();
//! # let _ = layer;
//! # let _ = std::fs::remove_dir_all(dir);
//! ```

mod dir;
mod limit;

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;
use tower_llm_core::{AttemptRecord, ConfigError, ErrorKind};

use crate::health::unix_ms;
use crate::report::FallbackKind;

pub use dir::{JsonDirEscalation, JsonDirEscalationBuilder, DEFAULT_MAX_FILES, DEFAULT_QUEUE};
use limit::Limiter;

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
    /// Set on a summary: how many events of this chain, reason and target the rate limit held
    /// back in the window that just ended. The other fields are those of the last one held
    /// back (without its `attempts`).
    pub suppressed: Option<Suppressed>,
}

/// The count of a rate-limit summary ([`EscalationEvent::suppressed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Suppressed {
    /// Events held back in the window.
    pub count: u64,
    /// When the window started (wall clock, ms since the Unix epoch).
    pub window_start_unix_ms: u64,
    /// The window's length, in milliseconds.
    pub window_ms: u64,
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
        if let Some(summary) = event.suppressed {
            tracing::warn!(
                target: "tower_llm_fallback::escalation",
                reason = event.reason.as_str(),
                target_name = event.target.as_deref(),
                kind = event.kind.map(ErrorKind::as_str),
                suppressed = summary.count,
                window_ms = summary.window_ms,
                "fallback chain escalations held back by the rate limit"
            );
            return;
        }
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

/// The default [`EscalationPolicy::repeated_kind`]: the same kind this many times in a row.
pub const DEFAULT_REPEATED_KIND: u32 = 5;
/// The default [`EscalationPolicy::failure_burst`]: more than this many failures within
/// [`DEFAULT_BURST_WINDOW`].
pub const DEFAULT_BURST_FAILURES: u32 = 20;
/// The default window of [`EscalationPolicy::failure_burst`].
pub const DEFAULT_BURST_WINDOW: Duration = Duration::from_secs(60);
/// The default [`EscalationPolicy::rate_limit_window`].
pub const DEFAULT_RATE_LIMIT_WINDOW: Duration = Duration::from_secs(10);

/// When escalations fire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscalationPolicy {
    all_failed: bool,
    repeated_kind: Option<u32>,
    burst: Option<(u32, Duration)>,
    rate_limit: Duration,
}

impl Default for EscalationPolicy {
    fn default() -> Self {
        EscalationPolicy {
            all_failed: true,
            repeated_kind: Some(DEFAULT_REPEATED_KIND),
            burst: Some((DEFAULT_BURST_FAILURES, DEFAULT_BURST_WINDOW)),
            rate_limit: DEFAULT_RATE_LIMIT_WINDOW,
        }
    }
}

impl EscalationPolicy {
    /// All triggers on: every target failed; 5 in a row; more than 20 failures in 60 s; at most
    /// one event per reason and target every 10 s, then a summary.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most one event per reason and target reaches the hook per `window`; the others are
    /// counted into one summary event when the window ends (`Duration::ZERO`: every event
    /// reaches the hook). Default [`DEFAULT_RATE_LIMIT_WINDOW`].
    pub fn rate_limit_window(mut self, window: Duration) -> Self {
        self.rate_limit = window;
        self
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
    limiter: Arc<Limiter>,
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
            limiter: Arc::new(Limiter::new(hook, policy.rate_limit)),
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
                    suppressed: None,
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
                    suppressed: None,
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
            suppressed: None,
        });
    }

    fn fire(&self, event: EscalationEvent) {
        metrics::counter!(
            crate::metrics::ESCALATIONS_TOTAL,
            crate::metrics::REASON => event.reason.as_str()
        )
        .increment(1);
        Limiter::fire(&self.limiter, event, Instant::now());
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
                .failure_burst(0, Duration::from_secs(1))
                .rate_limit_window(Duration::ZERO),
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

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_one_event_then_one_summary_per_window() {
        let seen = Collect::default();
        let esc = Escalator::new(
            Box::new(seen.clone()),
            EscalationPolicy::new()
                .repeated_kind(0)
                .failure_burst(0, Duration::from_secs(1)),
        );
        for _ in 0..1000 {
            esc.on_all_failed(&[], None);
        }
        {
            let events = seen.0.lock().unwrap();
            assert_eq!(events.len(), 1, "the first goes out at once");
            assert_eq!(events[0].suppressed, None);
        }
        // The window ends: one summary, from the timer.
        tokio::time::sleep(DEFAULT_RATE_LIMIT_WINDOW).await;
        tokio::task::yield_now().await;
        {
            let events = seen.0.lock().unwrap();
            assert_eq!(events.len(), 2);
            let summary = events[1].suppressed.expect("a summary");
            assert_eq!(summary.count, 999);
            assert_eq!(summary.window_ms, 10_000);
            assert_eq!(events[1].reason, EscalationReason::AllTargetsFailed);
        }
        // A new window: the next event goes out at once, and a quiet window sends no summary.
        esc.on_all_failed(&[], None);
        tokio::time::sleep(DEFAULT_RATE_LIMIT_WINDOW * 2).await;
        tokio::task::yield_now().await;
        let events = seen.0.lock().unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].suppressed, None);
    }

    #[tokio::test(start_paused = true)]
    async fn reasons_and_targets_have_windows_of_their_own() {
        let seen = Collect::default();
        let esc = Escalator::new(
            Box::new(seen.clone()),
            EscalationPolicy::new()
                .repeated_kind(1)
                .failure_burst(0, Duration::from_secs(1)),
        );
        let now = Instant::now();
        for _ in 0..10 {
            esc.on_failure("a", ErrorKind::Timeout, 1, now);
            esc.on_failure("b", ErrorKind::Timeout, 1, now);
            esc.on_all_failed(&[], None);
        }
        let events = seen.0.lock().unwrap();
        let firsts: Vec<_> = events
            .iter()
            .map(|e| (e.reason.as_str(), e.target.clone()))
            .collect();
        assert_eq!(
            firsts,
            [
                ("repeated_kind", Some("a".to_owned())),
                ("repeated_kind", Some("b".to_owned())),
                ("all_targets_failed", None),
            ]
        );
    }

    #[test]
    fn without_a_runtime_the_summary_comes_with_the_next_event() {
        let seen = Collect::default();
        let esc = Escalator::new(
            Box::new(seen.clone()),
            EscalationPolicy::new().rate_limit_window(Duration::from_millis(20)),
        );
        for _ in 0..5 {
            esc.on_all_failed(&[], None);
        }
        assert_eq!(seen.0.lock().unwrap().len(), 1);
        std::thread::sleep(Duration::from_millis(30));
        esc.on_all_failed(&[], None);
        let events = seen.0.lock().unwrap();
        assert_eq!(events.len(), 3, "summary, then the new window's first");
        assert_eq!(events[1].suppressed.map(|s| s.count), Some(4));
        assert_eq!(events[2].suppressed, None);
    }

    #[test]
    fn a_zero_window_lets_every_event_through() {
        let seen = Collect::default();
        let esc = Escalator::new(
            Box::new(seen.clone()),
            EscalationPolicy::new().rate_limit_window(Duration::ZERO),
        );
        for _ in 0..5 {
            esc.on_all_failed(&[], None);
        }
        assert_eq!(seen.0.lock().unwrap().len(), 5);
    }
}
