//! Health of each target: cooldowns, counters, recent errors, and a serde snapshot of it all.
//!
//! The hot path (a target with no cooldown succeeding) only touches atomics; the per-target lock
//! is taken when a target fails, is benched, probed or reset.
//!
//! ```
//! use tower_llm_fallback::{FallbackLayer, OverallHealth, TargetConfig};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = FallbackLayer::builder()
//!     .target(TargetConfig::new("openai", "gpt-4o-mini"))
//!     .target(TargetConfig::new("groq", "llama-3.1-8b-instant"))
//!     .build()
//!     .unwrap();
//! let health = layer.handle().health();
//! assert_eq!(health.status, OverallHealth::Healthy);
//! assert_eq!(health.targets.len(), 2);
//! assert!(health.targets[0].available);
//! println!("{}", serde_json::to_string_pretty(&health).unwrap());
//! # }
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tower_llm_core::{ErrorKind, Target};

use crate::cooldown::{is_transient, Bench, CooldownPolicy};

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

/// `now + d`, saturating far in the future instead of panicking on an absurd duration
/// (`Duration::MAX` in a configuration, a bogus saved timestamp).
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    now.checked_add(d.min(FAR))
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What recording a failure did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Failed {
    /// How long the target is benched (`None`: not benched, or until reset).
    pub(crate) benched_for: Option<Duration>,
    /// How many failures of this kind in a row the target has now.
    pub(crate) streak: u32,
}

/// One failed call, as the chain saw it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FailedCall {
    pub(crate) kind: ErrorKind,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) status: Option<u16>,
    /// The call was the target's probe.
    pub(crate) probe: bool,
    /// When the call started.
    pub(crate) started: Instant,
}

/// Whether a target may be called now.
#[derive(Debug)]
pub(crate) enum Admission {
    /// No cooldown: call it.
    Open,
    /// The cooldown lifted and this request is the probe.
    Probe,
    /// Benched (or another request is probing): skip it.
    Skip {
        kind: ErrorKind,
        retry_after: Option<Duration>,
    },
}

#[derive(Clone, Copy, Debug)]
struct Benched {
    kind: ErrorKind,
    /// `None`: until reset.
    until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Detail {
    bench: Option<Benched>,
    /// Probes in flight (more than one only for a silent target, see `next_silent_probe`).
    probes: u32,
    /// When the latest probe started.
    last_probe: Option<Instant>,
    /// When the target was last benched (by a failure or an open breaker below).
    benched_at: Option<Instant>,
    /// For a target benched for a timeout: when another probe may start although one is still
    /// in flight (a silent probe does not hold back the next one).
    next_silent_probe: Option<Instant>,
    /// When the current outage began: the start of the first call that failed since the last
    /// success (what the adaptive cooldown grows with).
    outage_since: Option<Instant>,
    /// When a success last cleared a cooldown or a failure streak: calls that started earlier
    /// and fail later do not bench the target again.
    recovered_at: Option<Instant>,
    /// The kind of the current run of failures and its length (reset by a success).
    streak: Option<(ErrorKind, u32)>,
    last_error: Option<ErrorRecord>,
    recent: VecDeque<ErrorRecord>,
}

/// What a request arriving at `now` may do, decided on the locked detail.
enum Decision {
    Open,
    Probe,
    Skip(ErrorKind, Option<Duration>),
}

impl Detail {
    fn outage(&self, now: Instant) -> Duration {
        self.outage_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// The normal admission rule (see the cooldown module docs).
    fn decide(&self, now: Instant) -> Decision {
        let Some(bench) = self.bench else {
            return Decision::Open;
        };
        let Some(until) = bench.until else {
            return Decision::Skip(bench.kind, None);
        };
        if now < until {
            return Decision::Skip(bench.kind, Some(until - now));
        }
        if self.probes == 0 {
            return Decision::Probe;
        }
        // Only a target benched for a timeout (silent) has probes overlap.
        match self.next_silent_probe {
            Some(_) if bench.kind != ErrorKind::Timeout => Decision::Skip(bench.kind, None),
            Some(next) if now >= next => Decision::Probe,
            Some(next) => Decision::Skip(bench.kind, Some(next - now)),
            None => Decision::Skip(bench.kind, None),
        }
    }

    /// The panic-mode rule: a target benched for a transient kind is probed every `interval`,
    /// one probe at a time, whatever its cooldown says.
    fn decide_in_panic(&self, now: Instant, interval: Duration) -> Decision {
        let Some(Benched {
            kind,
            until: Some(until),
        }) = self.bench
        else {
            return self.decide(now);
        };
        if !is_transient(kind) {
            return self.decide(now);
        }
        if self.probes > 0 {
            return Decision::Skip(kind, None);
        }
        // One probe per interval, counted from the last probe or the failure that benched it.
        let next = self
            .last_probe
            .max(self.benched_at)
            .map_or(now, |last| after(last, interval))
            .min(until);
        if now >= next {
            Decision::Probe
        } else {
            Decision::Skip(kind, Some(next - now))
        }
    }

    fn claim_probe(&mut self, now: Instant, policy: &CooldownPolicy) {
        self.probes = self.probes.saturating_add(1);
        self.last_probe = Some(now);
        let silent = self.bench.is_some_and(|b| b.kind == ErrorKind::Timeout);
        self.next_silent_probe = if silent {
            policy
                .interval(ErrorKind::Timeout, self.outage(now))
                .map(|d| after(now, d))
        } else {
            None
        };
    }

    fn settle_probe(&mut self) {
        self.probes = self.probes.saturating_sub(1);
        if self.probes == 0 {
            self.next_silent_probe = None;
        }
    }

    fn admission(
        &mut self,
        decision: Decision,
        now: Instant,
        policy: &CooldownPolicy,
    ) -> Admission {
        match decision {
            Decision::Open => Admission::Open,
            Decision::Probe => {
                self.claim_probe(now, policy);
                Admission::Probe
            }
            Decision::Skip(kind, retry_after) => Admission::Skip { kind, retry_after },
        }
    }
}

/// The live state of one target, shared by every clone of the chain.
#[derive(Debug, Default)]
pub(crate) struct TargetState {
    /// Mirrors `detail.bench.is_some()` so an unbenched target is admitted without the lock.
    benched: AtomicBool,
    /// Mirrors the consecutive failure count so a success after a success skips the lock.
    consecutive: AtomicU32,
    requests: AtomicU64,
    failures: AtomicU64,
    in_flight: AtomicUsize,
    detail: Mutex<Detail>,
}

impl TargetState {
    fn lock(&self) -> MutexGuard<'_, Detail> {
        // The state stays consistent across a panic (plain field writes): keep using it.
        self.detail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the target would be admitted now, without claiming a probe.
    pub(crate) fn is_available(&self, now: Instant) -> bool {
        if !self.benched.load(Ordering::Acquire) {
            return true;
        }
        !matches!(self.lock().decide(now), Decision::Skip(..))
    }

    /// Decide whether a request may call the target; claims a probe slot when the cooldown lifted.
    pub(crate) fn admit(&self, now: Instant, policy: &CooldownPolicy) -> Admission {
        if !self.benched.load(Ordering::Acquire) {
            return Admission::Open;
        }
        let mut detail = self.lock();
        let decision = detail.decide(now);
        detail.admission(decision, now, policy)
    }

    /// [`admit`](Self::admit) in panic mode (no target of the chain can be called): a target
    /// benched for a transient kind is probed every `policy.panic_interval()`.
    pub(crate) fn admit_in_panic(&self, now: Instant, policy: &CooldownPolicy) -> Admission {
        if !self.benched.load(Ordering::Acquire) {
            return Admission::Open;
        }
        let mut detail = self.lock();
        let decision = detail.decide_in_panic(now, policy.panic_interval());
        detail.admission(decision, now, policy)
    }

    /// Release a probe slot whose request never reached a verdict (dropped, or refused locally).
    pub(crate) fn release_probe(&self) {
        self.lock().settle_probe();
    }

    /// The target answered (or refused the request for the request's own fault) a call that
    /// started at `started`.
    pub(crate) fn on_success(&self, probe: bool, started: Instant) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !probe
            && self.consecutive.load(Ordering::Relaxed) == 0
            && !self.benched.load(Ordering::Acquire)
        {
            return;
        }
        let now = Instant::now();
        let mut detail = self.lock();
        self.consecutive.store(0, Ordering::Relaxed);
        detail.streak = None;
        if probe {
            detail.settle_probe();
        }
        // A success proves the target works, except against a cooldown only a person may lift
        // (a request sent before the key was revoked can still succeed), and except when the
        // call was sent before the failure that benched the target (it was in flight while the
        // target went down: it says nothing about the target now).
        let manual = matches!(detail.bench, Some(Benched { until: None, .. }));
        let stale = detail.benched_at.is_some_and(|at| started < at);
        if probe || (!manual && !stale) {
            detail.bench = None;
            detail.outage_since = None;
            detail.recovered_at = Some(now);
            self.benched.store(false, Ordering::Release);
        }
    }

    /// The target failed: count it and bench the target per `policy`.
    pub(crate) fn on_failure(
        &self,
        call: FailedCall,
        policy: &CooldownPolicy,
        now: Instant,
    ) -> Failed {
        let FailedCall {
            kind,
            retry_after,
            status,
            probe,
            started,
        } = call;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        let consecutive = self
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let record = ErrorRecord {
            kind,
            at_unix_ms: unix_ms(SystemTime::now()),
            status,
        };
        let mut detail = self.lock();
        if probe {
            detail.settle_probe();
        }
        if detail.recent.len() >= RECENT_ERRORS {
            detail.recent.pop_front();
        }
        detail.recent.push_back(record.clone());
        detail.last_error = Some(record);
        let streak = match detail.streak {
            Some((k, n)) if k == kind => n.saturating_add(1),
            _ => 1,
        };
        detail.streak = Some((kind, streak));
        let not_benched = Failed {
            benched_for: None,
            streak,
        };
        // In flight while the target came back: it says nothing about the target now.
        if detail.recovered_at.is_some_and(|at| started < at) {
            return not_benched;
        }
        if is_transient(kind) && detail.outage_since.is_none() {
            detail.outage_since = Some(started);
        }
        let outage = detail.outage(now);
        let benched_for = match policy.bench(kind, retry_after, consecutive, outage) {
            Bench::No => return not_benched,
            Bench::For(d) => {
                // A silent probe's cooldown counts from its start: probes of a silent target keep
                // their cadence instead of waiting for each attempt timeout.
                let from = if probe && kind == ErrorKind::Timeout {
                    started
                } else {
                    now
                };
                let until = after(from, d);
                let until = match detail.bench {
                    // A manual bench stays manual; a later end wins over an earlier one.
                    Some(Benched { until: None, .. }) => None,
                    Some(Benched {
                        until: Some(old), ..
                    }) if old > until && !probe => Some(old),
                    _ => Some(until),
                };
                detail.bench = Some(Benched { kind, until });
                detail.benched_at = Some(now);
                until.map(|u| u.saturating_duration_since(now))
            }
            Bench::UntilReset => {
                detail.bench = Some(Benched { kind, until: None });
                None
            }
        };
        self.benched.store(true, Ordering::Release);
        Failed {
            benched_for,
            streak,
        }
    }

    /// A circuit breaker below the chain rejected a call: it opened on its own count of failures.
    /// Bench the target (without counting a failure) until the breaker's next probe, at most the
    /// adaptive cooldown, so that the chain's probe — which the breaker lets through — decides
    /// when the target returns.
    pub(crate) fn on_breaker_open(
        &self,
        retry_after: Duration,
        policy: &CooldownPolicy,
        now: Instant,
    ) {
        let mut detail = self.lock();
        let outage = detail.outage(now);
        let interval = policy
            .interval(ErrorKind::Overloaded, outage)
            .unwrap_or(retry_after);
        let d = retry_after.min(interval);
        if d.is_zero() {
            return;
        }
        let until = after(now, d);
        match detail.bench {
            Some(Benched { until: None, .. }) => return,
            Some(Benched {
                until: Some(old), ..
            }) if old >= until => return,
            _ => {}
        }
        detail.bench = Some(Benched {
            kind: ErrorKind::Overloaded,
            until: Some(until),
        });
        detail.benched_at = Some(now);
        self.benched.store(true, Ordering::Release);
    }

    /// Clear any cooldown and the consecutive failure count.
    pub(crate) fn reset(&self) {
        let mut detail = self.lock();
        detail.bench = None;
        detail.probes = 0;
        detail.next_silent_probe = None;
        detail.outage_since = None;
        detail.streak = None;
        self.consecutive.store(0, Ordering::Relaxed);
        self.benched.store(false, Ordering::Release);
    }

    pub(crate) fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(
        &self,
        name: &str,
        target: &Target,
        tier: usize,
        now: Instant,
        wall: SystemTime,
    ) -> TargetHealth {
        let detail = self.lock();
        let requests = self.requests.load(Ordering::Relaxed);
        let failures = self.failures.load(Ordering::Relaxed).min(requests);
        let available = !matches!(detail.decide(now), Decision::Skip(..));
        let cooldown = detail.bench.map(|b| CooldownSnapshot {
            kind: b.kind,
            until_unix_ms: b
                .until
                .map(|u| unix_ms(wall + u.saturating_duration_since(now))),
            probing: detail.probes > 0,
        });
        TargetHealth {
            name: name.to_owned(),
            target: target.clone(),
            tier,
            available,
            in_flight: self.in_flight(),
            cooldown,
            consecutive_failures: self.consecutive.load(Ordering::Relaxed),
            requests,
            failures,
            success_rate: if requests == 0 {
                1.0
            } else {
                (requests - failures) as f64 / requests as f64
            },
            last_error: detail.last_error.clone(),
            recent_errors: detail.recent.iter().cloned().collect(),
        }
    }

    /// Take over a saved state: counters, recent errors and the cooldown (wall-clock times mapped
    /// onto the tokio clock; a cooldown that ended while the process was down awaits its probe).
    pub(crate) fn restore(&self, saved: &TargetHealth, now: Instant, wall: SystemTime) {
        let mut detail = self.lock();
        self.requests.store(saved.requests, Ordering::Relaxed);
        self.failures
            .store(saved.failures.min(saved.requests), Ordering::Relaxed);
        self.consecutive
            .store(saved.consecutive_failures, Ordering::Relaxed);
        let skip = saved.recent_errors.len().saturating_sub(RECENT_ERRORS);
        detail.recent = saved.recent_errors.iter().skip(skip).cloned().collect();
        detail.last_error = saved.last_error.clone();
        detail.probes = 0;
        detail.next_silent_probe = None;
        detail.bench = saved.cooldown.as_ref().map(|c| Benched {
            kind: c.kind,
            until: c.until_unix_ms.map(|ms| {
                let left = Duration::from_millis(ms.saturating_sub(unix_ms(wall)));
                after(now, left)
            }),
        });
        self.benched
            .store(detail.bench.is_some(), Ordering::Release);
    }
}

/// The probe slot a request claimed: released when dropped unless [`settle`](Self::settle)d by
/// a verdict (so a dropped probe future never blocks the target forever).
#[derive(Debug)]
pub(crate) struct ProbeSlot(Option<Arc<TargetState>>);

impl ProbeSlot {
    pub(crate) fn new(state: &Arc<TargetState>) -> Self {
        ProbeSlot(Some(Arc::clone(state)))
    }

    /// The probe reached a verdict that the state recorded itself; returns `true` (it was a probe).
    pub(crate) fn settle(mut self) -> bool {
        self.0.take().is_some()
    }
}

impl Drop for ProbeSlot {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            state.release_probe();
        }
    }
}

/// Counts a call in flight until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<TargetState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The names a gateway's `/health` serves: stable, and what `as_str` says.
    #[test]
    fn overall_health_names_and_counts() {
        for (status, name) in [
            (OverallHealth::Healthy, "healthy"),
            (OverallHealth::Degraded, "degraded"),
            (OverallHealth::Unhealthy, "unhealthy"),
        ] {
            assert_eq!(status.as_str(), name);
            assert_eq!(serde_json::to_value(status).unwrap(), name);
            assert_eq!(
                serde_json::from_value::<OverallHealth>(name.into()).unwrap(),
                status
            );
        }
        assert_eq!(OverallHealth::from_available(0, 0), OverallHealth::Healthy);
        assert_eq!(OverallHealth::from_available(3, 3), OverallHealth::Healthy);
        assert_eq!(OverallHealth::from_available(1, 3), OverallHealth::Degraded);
        assert_eq!(
            OverallHealth::from_available(0, 3),
            OverallHealth::Unhealthy
        );
    }

    fn policy() -> CooldownPolicy {
        CooldownPolicy::default()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fail(
        s: &TargetState,
        kind: ErrorKind,
        retry_after: Option<Duration>,
        probe: bool,
        started: Instant,
        now: Instant,
    ) -> Failed {
        s.on_failure(
            FailedCall {
                kind,
                retry_after,
                status: None,
                probe,
                started,
            },
            &policy(),
            now,
        )
    }

    fn skip_after(a: Admission) -> Option<Duration> {
        match a {
            Admission::Skip { retry_after, .. } => retry_after,
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_after_cooldown_and_success_clears() {
        let s = TargetState::default();
        let p = policy();
        let t0 = Instant::now();
        assert!(matches!(s.admit(t0, &p), Admission::Open));
        fail(&s, ErrorKind::RateLimited, Some(secs(3)), false, t0, t0);
        match s.admit(t0 + secs(1), &p) {
            Admission::Skip { kind, retry_after } => {
                assert_eq!(kind, ErrorKind::RateLimited);
                assert_eq!(retry_after, Some(secs(2)));
            }
            other => panic!("{other:?}"),
        }
        let t3 = t0 + secs(3);
        assert!(s.is_available(t3));
        assert!(matches!(s.admit(t3, &p), Admission::Probe));
        assert!(!s.is_available(t3));
        assert_eq!(skip_after(s.admit(t3, &p)), None);
        s.on_success(true, Instant::now());
        assert!(matches!(s.admit(t3, &p), Admission::Open));
        let snap = s.snapshot("a", &Target::new("p", "m"), 0, t3, SystemTime::now());
        assert_eq!(snap.requests, 2);
        assert_eq!(snap.failures, 1);
        assert_eq!(snap.consecutive_failures, 0);
        assert!(snap.cooldown.is_none());
        assert_eq!(snap.recent_errors.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn auth_stays_benched_until_reset_even_after_a_late_success() {
        let s = TargetState::default();
        let p = policy();
        let now = Instant::now();
        fail(&s, ErrorKind::Auth, None, false, now, now);
        s.on_success(false, Instant::now());
        assert_eq!(skip_after(s.admit(now + secs(86_400), &p)), None);
        // Not even panic mode probes it.
        assert_eq!(skip_after(s.admit_in_panic(now + secs(86_400), &p)), None);
        s.reset();
        assert!(matches!(s.admit(now, &p), Admission::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn released_probe_lets_the_next_request_probe() {
        let s = TargetState::default();
        let p = policy();
        let now = Instant::now();
        fail(&s, ErrorKind::ServerError, None, false, now, now);
        let later = now + secs(30);
        assert!(matches!(s.admit(later, &p), Admission::Probe));
        s.release_probe();
        assert!(matches!(s.admit(later, &p), Admission::Probe));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cooldown_grows_with_the_outage_not_with_the_failed_calls() {
        let s = TargetState::default();
        let p = policy();
        let t0 = Instant::now();
        // Sixteen calls in flight fail at once: one outage, a 1 s cooldown, not 2^15 × base.
        for _ in 0..16 {
            let failed = fail(&s, ErrorKind::Overloaded, None, false, t0, t0);
            assert_eq!(failed.benched_for, Some(secs(1)));
        }
        // Probes keep failing: the cooldown is a quarter of the outage, capped at 5 s.
        let mut now = t0;
        let mut gaps = Vec::new();
        for _ in 0..12 {
            let wait = skip_after(s.admit(now, &p)).unwrap_or_default();
            now += wait;
            assert!(matches!(s.admit(now, &p), Admission::Probe));
            gaps.push(wait.as_millis());
            fail(&s, ErrorKind::Overloaded, None, true, now, now);
        }
        assert_eq!(
            gaps,
            [1000, 1000, 1000, 1000, 1000, 1250, 1562, 1953, 2441, 3051, 3814, 4768]
        );
        now += secs(600);
        assert!(matches!(s.admit(now, &p), Admission::Probe));
        let failed = fail(&s, ErrorKind::Timeout, None, true, now, now);
        assert_eq!(failed.benched_for, Some(secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_probe_does_not_hold_back_the_next_one() {
        let s = TargetState::default();
        let p = policy();
        let t0 = Instant::now();
        // Calls started at 0 time out at 2 s: benched 1 s from then.
        fail(&s, ErrorKind::Timeout, None, false, t0, t0 + secs(2));
        let t = t0 + secs(3);
        assert!(matches!(s.admit(t - ms(1), &p), Admission::Skip { .. }));
        assert!(matches!(s.admit(t, &p), Admission::Probe));
        // The probe hangs; the next one may start a quarter of the outage (3 s), at least 1 s,
        // after it.
        assert_eq!(skip_after(s.admit(t + ms(100), &p)), Some(ms(900)));
        assert!(matches!(s.admit(t + secs(1), &p), Admission::Probe));
        // Not more often than that.
        assert!(matches!(s.admit(t + ms(1001), &p), Admission::Skip { .. }));
        // The first probe fails at its attempt timeout: its cooldown counts from its start.
        fail(&s, ErrorKind::Timeout, None, true, t, t + secs(2));
        // In panic mode, one probe at a time.
        assert_eq!(skip_after(s.admit_in_panic(t + secs(2), &p)), None);
        // A fast failure (503) is probed one at a time.
        let s = TargetState::default();
        fail(&s, ErrorKind::Overloaded, None, false, t0, t0);
        assert!(matches!(s.admit(t0 + secs(1), &p), Admission::Probe));
        assert_eq!(skip_after(s.admit(t0 + secs(9), &p)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_of_calls_sent_before_the_recovery_do_not_bench_again() {
        let s = TargetState::default();
        let p = policy();
        let t0 = Instant::now();
        fail(&s, ErrorKind::Overloaded, None, false, t0, t0);
        let back = t0 + secs(1);
        assert!(matches!(s.admit(back, &p), Admission::Probe));
        tokio::time::advance(secs(1)).await;
        s.on_success(true, Instant::now());
        // A call sent at 0.5 s fails now: counted, not benched.
        let late = fail(
            &s,
            ErrorKind::Timeout,
            None,
            false,
            t0 + ms(500),
            back + ms(10),
        );
        assert_eq!(late.benched_for, None);
        assert!(matches!(s.admit(back + ms(10), &p), Admission::Open));
        let snap = s.snapshot("a", &Target::new("p", "m"), 0, back, SystemTime::now());
        assert_eq!(snap.failures, 2);
        // A call sent after the recovery does bench.
        let fresh = fail(
            &s,
            ErrorKind::Overloaded,
            None,
            false,
            back + ms(20),
            back + ms(30),
        );
        assert_eq!(fresh.benched_for, Some(secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn successes_of_calls_sent_before_the_failure_do_not_lift_the_bench() {
        let s = TargetState::default();
        let t0 = Instant::now();
        // Sixteen calls in flight; the first to come back failed, the others come back healthy.
        tokio::time::advance(ms(50)).await;
        fail(
            &s,
            ErrorKind::Overloaded,
            None,
            false,
            t0 + ms(49),
            t0 + ms(50),
        );
        for _ in 0..15 {
            s.on_success(false, t0);
        }
        assert!(!s.is_available(t0 + ms(60)), "still benched");
        // A call sent after the failure that succeeds does lift it.
        s.on_success(false, t0 + ms(51));
        assert!(s.is_available(t0 + ms(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn panic_mode_probes_every_interval_one_at_a_time() {
        let s = TargetState::default();
        let p = policy();
        let t0 = Instant::now();
        // Failing for a minute: a 5 s cooldown.
        fail(&s, ErrorKind::Overloaded, None, false, t0, t0);
        let t = t0 + secs(60);
        assert!(matches!(s.admit(t, &p), Admission::Probe));
        fail(&s, ErrorKind::Overloaded, None, true, t, t);
        assert_eq!(skip_after(s.admit(t, &p)), Some(secs(5)));
        // In panic, the next probe 500 ms after the last one.
        assert_eq!(skip_after(s.admit_in_panic(t + ms(100), &p)), Some(ms(400)));
        assert!(matches!(
            s.admit_in_panic(t + ms(500), &p),
            Admission::Probe
        ));
        assert_eq!(skip_after(s.admit_in_panic(t + ms(1500), &p)), None);
        // Rate limits keep the server's delay, panic or not.
        let s = TargetState::default();
        fail(&s, ErrorKind::RateLimited, Some(secs(3)), false, t0, t0);
        assert_eq!(
            skip_after(s.admit_in_panic(t0 + secs(1), &p)),
            Some(secs(2))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_below_benches_until_its_probe_within_the_cap() {
        let s = TargetState::default();
        let p = policy();
        let t0 = Instant::now();
        s.on_breaker_open(secs(40), &p, t0);
        // Capped by the adaptive cooldown (no outage recorded by the chain yet: 1 s).
        assert_eq!(skip_after(s.admit(t0, &p)), Some(secs(1)));
        assert!(matches!(s.admit(t0 + secs(1), &p), Admission::Probe));
        let snap = s.snapshot("a", &Target::new("p", "m"), 0, t0, SystemTime::now());
        assert_eq!(snap.requests, 0);
        // A breaker that is about to let a probe through: nothing to bench.
        let s = TargetState::default();
        s.on_breaker_open(Duration::ZERO, &p, t0);
        assert!(matches!(s.admit(t0, &p), Admission::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_restore_round_trip_maps_times() {
        let s = TargetState::default();
        let p = policy();
        let now = Instant::now();
        let wall = SystemTime::now();
        for _ in 0..60 {
            fail(&s, ErrorKind::ServerError, Some(secs(60)), false, now, now);
        }
        let snap = s.snapshot("a", &Target::new("p", "m"), 0, now, wall);
        assert_eq!(snap.recent_errors.len(), RECENT_ERRORS);
        let until = snap.cooldown.as_ref().unwrap().until_unix_ms.unwrap();
        assert_eq!(until, unix_ms(wall) + 60_000);
        let json = serde_json::to_string(&snap).unwrap();
        let back: TargetHealth = serde_json::from_str(&json).unwrap();
        let restored = TargetState::default();
        let later = now + secs(5);
        restored.restore(&back, later, wall + secs(20));
        assert!(matches!(
            restored.admit(later, &p),
            Admission::Skip { retry_after: Some(d), .. } if d == secs(40)
        ));
        assert!(matches!(
            restored.admit(later + secs(40), &p),
            Admission::Probe
        ));
        assert_eq!(
            restored
                .snapshot("a", &back.target, 0, later, wall)
                .failures,
            60
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit(u64),
        Panic(u64),
        Success,
        Failure(usize, Option<u64>),
        Release,
        Reset,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..12_000).prop_map(Op::Admit),
            (0u64..12_000).prop_map(Op::Panic),
            Just(Op::Success),
            (0usize..12, proptest::option::of(0u64..100)).prop_map(|(k, r)| Op::Failure(k, r)),
            Just(Op::Release),
            Just(Op::Reset),
        ]
    }

    proptest! {
        // Probes overlap only for a target benched for a timeout, a skip always names a kind
        // that benched the target, an unbenched target is always admitted, and no bench of a
        // transient kind without a server delay outlasts the probe cap.
        #[test]
        fn probes_and_caps(ops in prop::collection::vec(op(), 1..80)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let s = TargetState::default();
                let p = policy();
                let mut now = Instant::now();
                let mut probes = 0u32;
                // A server delay or a non-transient bench may legitimately outlast the cap.
                let mut long_bench = false;
                for op in ops {
                    match op {
                        Op::Admit(step) | Op::Panic(step) => {
                            now += Duration::from_millis(step);
                            let panic = matches!(op, Op::Panic(_));
                            let silent = s.lock().bench.is_some_and(|b| b.kind == ErrorKind::Timeout);
                            let admission = if panic { s.admit_in_panic(now, &p) } else { s.admit(now, &p) };
                            match admission {
                                Admission::Probe => {
                                    probes += 1;
                                    prop_assert!(probes == 1 || (silent && !panic), "{probes} probes");
                                }
                                Admission::Open => prop_assert!(s.snapshot("a", &Target::new("p", "m"), 0, now, SystemTime::now()).cooldown.is_none()),
                                Admission::Skip { retry_after, .. } => {
                                    prop_assert!(s.benched.load(Ordering::Acquire));
                                    if let Some(d) = retry_after {
                                        prop_assert!(d <= Duration::from_secs(3600));
                                    }
                                }
                            }
                        }
                        Op::Success => {
                            s.on_success(probes > 0, now);
                            probes = probes.saturating_sub(1);
                        }
                        Op::Failure(k, r) => {
                            let kind = ErrorKind::ALL[k];
                            let failed = fail(&s, kind, r.map(Duration::from_secs), probes > 0, now, now);
                            probes = probes.saturating_sub(1);
                            long_bench |= r.is_some() || !is_transient(kind);
                            if !long_bench {
                                if let Some(d) = failed.benched_for {
                                    prop_assert!(d <= p.probe_interval_cap(), "{kind}: {d:?}");
                                }
                            }
                        }
                        Op::Release => {
                            if probes > 0 {
                                s.release_probe();
                                probes -= 1;
                            }
                        }
                        Op::Reset => {
                            s.reset();
                            probes = 0;
                            long_bench = false;
                        }
                    }
                }
                Ok(())
            })?;
        }
    }
}
