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

use crate::cooldown::{Bench, CooldownPolicy};

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

/// The health of the whole chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverallHealth {
    /// Every target is available.
    Healthy,
    /// Some targets are benched, at least one is available.
    Degraded,
    /// No target is available: only the cache or static tier (if any) can answer.
    Unhealthy,
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
        let status = if available == targets.len() {
            OverallHealth::Healthy
        } else if available > 0 {
            OverallHealth::Degraded
        } else {
            OverallHealth::Unhealthy
        };
        HealthSnapshot {
            status,
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
    probe_in_flight: bool,
    /// The kind of the current run of failures and its length (reset by a success).
    streak: Option<(ErrorKind, u32)>,
    last_error: Option<ErrorRecord>,
    recent: VecDeque<ErrorRecord>,
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
        let detail = self.lock();
        match detail.bench {
            None => true,
            Some(Benched { until: None, .. }) => false,
            Some(Benched {
                until: Some(until), ..
            }) => now >= until && !detail.probe_in_flight,
        }
    }

    /// Decide whether a request may call the target; claims the probe slot when the cooldown lifted.
    pub(crate) fn admit(&self, now: Instant) -> Admission {
        if !self.benched.load(Ordering::Acquire) {
            return Admission::Open;
        }
        let mut detail = self.lock();
        let Some(bench) = detail.bench else {
            return Admission::Open;
        };
        match bench.until {
            None => Admission::Skip {
                kind: bench.kind,
                retry_after: None,
            },
            Some(until) if now < until => Admission::Skip {
                kind: bench.kind,
                retry_after: Some(until - now),
            },
            Some(_) if detail.probe_in_flight => Admission::Skip {
                kind: bench.kind,
                retry_after: None,
            },
            Some(_) => {
                detail.probe_in_flight = true;
                Admission::Probe
            }
        }
    }

    /// Release a probe slot whose request never reached a verdict (dropped, or refused locally).
    pub(crate) fn release_probe(&self) {
        self.lock().probe_in_flight = false;
    }

    /// The target answered (or refused the request for the request's own fault).
    pub(crate) fn on_success(&self, probe: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !probe
            && self.consecutive.load(Ordering::Relaxed) == 0
            && !self.benched.load(Ordering::Acquire)
        {
            return;
        }
        let mut detail = self.lock();
        self.consecutive.store(0, Ordering::Relaxed);
        detail.streak = None;
        if probe {
            detail.probe_in_flight = false;
        }
        // Any success proves the target works, except against a cooldown only a person may lift
        // (a request sent before the key was revoked can still succeed).
        let manual = matches!(detail.bench, Some(Benched { until: None, .. }));
        if probe || !manual {
            detail.bench = None;
            self.benched.store(false, Ordering::Release);
        }
    }

    /// The target failed with `kind`: count it and bench the target per `policy`.
    pub(crate) fn on_failure(
        &self,
        kind: ErrorKind,
        retry_after: Option<Duration>,
        status: Option<u16>,
        probe: bool,
        policy: &CooldownPolicy,
        now: Instant,
    ) -> Failed {
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
            detail.probe_in_flight = false;
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
        let bench = policy.bench(kind, retry_after, consecutive);
        let benched_for = match bench {
            Bench::No => {
                return Failed {
                    benched_for: None,
                    streak,
                }
            }
            Bench::For(d) => {
                let until = after(now, d);
                let until = match detail.bench {
                    // A manual bench stays manual; a later end wins over an earlier one.
                    Some(Benched { until: None, .. }) => None,
                    Some(Benched {
                        until: Some(old), ..
                    }) if old > until && !probe => Some(old),
                    _ => Some(until),
                };
                detail.bench = Some(Benched { kind, until });
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

    /// Clear any cooldown and the consecutive failure count.
    pub(crate) fn reset(&self) {
        let mut detail = self.lock();
        detail.bench = None;
        detail.probe_in_flight = false;
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
        let available = match detail.bench {
            None => true,
            Some(Benched { until: None, .. }) => false,
            Some(Benched {
                until: Some(until), ..
            }) => now >= until && !detail.probe_in_flight,
        };
        let cooldown = detail.bench.map(|b| CooldownSnapshot {
            kind: b.kind,
            until_unix_ms: b
                .until
                .map(|u| unix_ms(wall + u.saturating_duration_since(now))),
            probing: detail.probe_in_flight,
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
        detail.probe_in_flight = false;
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

    fn policy() -> CooldownPolicy {
        CooldownPolicy::default()
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_after_cooldown_and_success_clears() {
        let s = TargetState::default();
        let t0 = Instant::now();
        assert!(matches!(s.admit(t0), Admission::Open));
        s.on_failure(
            ErrorKind::RateLimited,
            Some(Duration::from_secs(3)),
            Some(429),
            false,
            &policy(),
            t0,
        );
        match s.admit(t0 + Duration::from_secs(1)) {
            Admission::Skip { kind, retry_after } => {
                assert_eq!(kind, ErrorKind::RateLimited);
                assert_eq!(retry_after, Some(Duration::from_secs(2)));
            }
            other => panic!("{other:?}"),
        }
        let t3 = t0 + Duration::from_secs(3);
        assert!(s.is_available(t3));
        assert!(matches!(s.admit(t3), Admission::Probe));
        assert!(!s.is_available(t3));
        assert!(matches!(
            s.admit(t3),
            Admission::Skip {
                retry_after: None,
                ..
            }
        ));
        s.on_success(true);
        assert!(matches!(s.admit(t3), Admission::Open));
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
        let now = Instant::now();
        s.on_failure(ErrorKind::Auth, None, Some(401), false, &policy(), now);
        s.on_success(false);
        assert!(matches!(
            s.admit(now + Duration::from_secs(86_400)),
            Admission::Skip {
                retry_after: None,
                ..
            }
        ));
        s.reset();
        assert!(matches!(s.admit(now), Admission::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn released_probe_lets_the_next_request_probe() {
        let s = TargetState::default();
        let now = Instant::now();
        s.on_failure(ErrorKind::Timeout, None, None, false, &policy(), now);
        let later = now + Duration::from_secs(30);
        assert!(matches!(s.admit(later), Admission::Probe));
        s.release_probe();
        assert!(matches!(s.admit(later), Admission::Probe));
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_restore_round_trip_maps_times() {
        let s = TargetState::default();
        let now = Instant::now();
        let wall = SystemTime::now();
        for _ in 0..60 {
            s.on_failure(
                ErrorKind::ServerError,
                None,
                Some(500),
                false,
                &policy(),
                now,
            );
        }
        let snap = s.snapshot("a", &Target::new("p", "m"), 0, now, wall);
        assert_eq!(snap.recent_errors.len(), RECENT_ERRORS);
        let until = snap.cooldown.as_ref().unwrap().until_unix_ms.unwrap();
        assert_eq!(until, unix_ms(wall) + 60_000);
        let json = serde_json::to_string(&snap).unwrap();
        let back: TargetHealth = serde_json::from_str(&json).unwrap();
        let restored = TargetState::default();
        let later = now + Duration::from_secs(5);
        restored.restore(&back, later, wall + Duration::from_secs(20));
        assert!(matches!(
            restored.admit(later),
            Admission::Skip { retry_after: Some(d), .. } if d == Duration::from_secs(40)
        ));
        assert!(matches!(
            restored.admit(later + Duration::from_secs(40)),
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
        Success,
        Failure(usize, Option<u64>),
        Release,
        Reset,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..120).prop_map(Op::Admit),
            Just(Op::Success),
            (0usize..12, proptest::option::of(0u64..100)).prop_map(|(k, r)| Op::Failure(k, r)),
            Just(Op::Release),
            Just(Op::Reset),
        ]
    }

    proptest! {
        // At most one probe is ever outstanding, a skip always names a kind that benched the
        // target, and an unbenched target is always admitted.
        #[test]
        fn at_most_one_probe(ops in prop::collection::vec(op(), 1..80)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let s = TargetState::default();
                let p = policy();
                let mut now = Instant::now();
                let mut probes = 0u32;
                for op in ops {
                    match op {
                        Op::Admit(secs) => {
                            now += Duration::from_secs(secs);
                            match s.admit(now) {
                                Admission::Probe => {
                                    probes += 1;
                                    prop_assert_eq!(probes, 1);
                                }
                                Admission::Open => prop_assert!(s.snapshot("a", &Target::new("p", "m"), 0, now, SystemTime::now()).cooldown.is_none()),
                                Admission::Skip { .. } => prop_assert!(s.benched.load(Ordering::Acquire)),
                            }
                        }
                        Op::Success => {
                            s.on_success(probes > 0);
                            probes = 0;
                        }
                        Op::Failure(k, r) => {
                            s.on_failure(ErrorKind::ALL[k], r.map(Duration::from_secs), None, probes > 0, &p, now);
                            probes = 0;
                        }
                        Op::Release => {
                            if probes > 0 {
                                s.release_probe();
                                probes = 0;
                            }
                        }
                        Op::Reset => {
                            s.reset();
                            probes = 0;
                        }
                    }
                }
                Ok(())
            })?;
        }
    }
}
