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
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tower_llm_core::{ErrorKind, Target};

use crate::cooldown::{is_transient, Bench, CooldownPolicy};
use crate::shared::{remaining, CooldownEvent, Sharing};

mod snapshot;
#[cfg(test)]
mod tests;

pub use snapshot::{
    CooldownSnapshot, ErrorRecord, HealthSnapshot, OverallHealth, TargetHealth, RECENT_ERRORS,
};

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
    /// How long before `until` the first request of the cooldown may already probe: a quarter
    /// of a transient cooldown the chain chose itself (zero for a server's delay or a manual
    /// bench), so that sparse traffic — a request every few seconds — does not wait a whole
    /// extra gap after the cooldown ends before the target is tried again.
    slack: Duration,
    /// A request was skipped during this cooldown: traffic is not sparse, no early probe.
    skipped: bool,
}

impl Benched {
    fn new(kind: ErrorKind, until: Option<Instant>, slack: Duration) -> Self {
        Benched {
            kind,
            until,
            slack,
            skipped: false,
        }
    }

    /// When the next request may probe (`None`: only after a reset).
    fn probe_at(&self) -> Option<Instant> {
        let until = self.until?;
        if self.skipped {
            return Some(until);
        }
        Some(until.checked_sub(self.slack).unwrap_or(until))
    }
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
    /// Keep `record` among the recent errors; returns the length of the run of failures of its
    /// kind, this one included.
    fn record_error(&mut self, record: ErrorRecord) -> u32 {
        let kind = record.kind;
        if self.recent.len() >= RECENT_ERRORS {
            self.recent.pop_front();
        }
        self.recent.push_back(record.clone());
        self.last_error = Some(record);
        let streak = match self.streak {
            Some((k, n)) if k == kind => n.saturating_add(1),
            _ => 1,
        };
        self.streak = Some((kind, streak));
        streak
    }

    /// Bench the target for `d` after a failure of `kind` (a call started at `started`); how long
    /// it is benched from `now` (`None`: until reset).
    fn bench_for(
        &mut self,
        kind: ErrorKind,
        d: Duration,
        slack: Duration,
        probe: bool,
        started: Instant,
        now: Instant,
    ) -> Option<Duration> {
        // A silent probe's cooldown counts from its start: probes of a silent target keep
        // their cadence instead of waiting for each attempt timeout.
        let from = if probe && kind == ErrorKind::Timeout {
            started
        } else {
            now
        };
        let until = after(from, d);
        let bench = match self.bench {
            // A manual bench stays manual; a later end wins over an earlier one.
            Some(old @ Benched { until: None, .. }) => old,
            Some(
                old @ Benched {
                    until: Some(end), ..
                },
            ) if end > until && !probe => old,
            _ => Benched::new(kind, Some(until), slack),
        };
        let until = bench.until;
        self.bench = Some(Benched { kind, ..bench });
        self.benched_at = Some(now);
        until.map(|u| u.saturating_duration_since(now))
    }

    fn outage(&self, now: Instant) -> Duration {
        self.outage_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// The normal admission rule (see the cooldown module docs).
    fn decide(&self, now: Instant) -> Decision {
        let Some(bench) = self.bench else {
            return Decision::Open;
        };
        let (Some(due), Some(until)) = (bench.probe_at(), bench.until) else {
            return Decision::Skip(bench.kind, None);
        };
        if now < due {
            // What a client is told: the end of the cooldown (the early probe is a chance for
            // the first request of a sparse route, not a promise).
            return Decision::Skip(bench.kind, Some(until.saturating_duration_since(now)));
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
            ..
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
            Decision::Skip(kind, retry_after) => {
                if let Some(bench) = self.bench.as_mut() {
                    bench.skipped = true;
                }
                Admission::Skip { kind, retry_after }
            }
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
    /// Where transitions are published and probes asked for, when the chain shares its
    /// cooldowns (set once, at build time; read only off the hot path).
    sharing: OnceLock<Sharing>,
}

impl TargetState {
    /// Share this target's transitions through `sharing` (once, at build time).
    pub(crate) fn share(&self, sharing: Sharing) {
        let _ = self.sharing.set(sharing);
    }

    fn publish(&self, event: Option<CooldownEvent>) {
        if let (Some(sharing), Some(event)) = (self.sharing.get(), event) {
            sharing.publish(event);
        }
    }

    /// A probe the local rule allows: also allowed by the shared state (a lease)?
    fn gate(&self, decision: Decision, kind: Option<ErrorKind>) -> Decision {
        match (decision, self.sharing.get()) {
            (Decision::Probe, Some(sharing)) if !sharing.shared.may_probe(&sharing.name) => {
                // Another replica probes (or we are asking who does): skip for now.
                Decision::Skip(kind.unwrap_or(ErrorKind::Unknown), None)
            }
            (decision, _) => decision,
        }
    }

    /// The bench as it crosses processes (`None`: in service).
    fn bench_event(detail: &Detail, now: Instant, wall_ms: u64) -> Option<CooldownEvent> {
        let bench = detail.bench?;
        Some(CooldownEvent::Benched {
            kind: bench.kind,
            until_unix_ms: bench.until.map(|u| {
                let left = u.saturating_duration_since(now);
                wall_ms.saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
            }),
        })
    }

    /// The current bench, for a republication.
    pub(crate) fn current_bench(&self, wall_ms: u64) -> Option<CooldownEvent> {
        Self::bench_event(&self.lock(), Instant::now(), wall_ms)
    }

    /// Apply another replica's transition (never published back).
    pub(crate) fn apply_remote(&self, event: CooldownEvent, wall_ms: u64) {
        let now = Instant::now();
        let mut detail = self.lock();
        match event {
            CooldownEvent::Benched {
                kind,
                until_unix_ms,
            } => {
                let until = match until_unix_ms {
                    Some(ms) if ms <= wall_ms => return,
                    Some(ms) => Some(after(now, remaining(ms, wall_ms))),
                    None => None,
                };
                match (detail.bench, until) {
                    // A manual bench stays; a later end wins over an earlier one.
                    (Some(Benched { until: None, .. }), _) => return,
                    (
                        Some(Benched {
                            until: Some(old), ..
                        }),
                        Some(new),
                    ) if old >= new => return,
                    _ => {}
                }
                // No early probe for a bench another replica decided: its end is shared.
                detail.bench = Some(Benched::new(kind, until, Duration::ZERO));
                detail.benched_at = Some(now);
                self.benched.store(true, Ordering::Release);
            }
            CooldownEvent::Recovered => {
                if detail.bench.is_none() {
                    return;
                }
                detail.bench = None;
                detail.outage_since = None;
                detail.streak = None;
                detail.next_silent_probe = None;
                detail.recovered_at = Some(now);
                self.consecutive.store(0, Ordering::Relaxed);
                self.benched.store(false, Ordering::Release);
            }
        }
    }

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
        let decision = self.gate(detail.decide(now), detail.bench.map(|b| b.kind));
        detail.admission(decision, now, policy)
    }

    /// [`admit`](Self::admit) in panic mode (no target of the chain can be called): a target
    /// benched for a transient kind is probed every `policy.panic_interval()`.
    pub(crate) fn admit_in_panic(&self, now: Instant, policy: &CooldownPolicy) -> Admission {
        if !self.benched.load(Ordering::Acquire) {
            return Admission::Open;
        }
        let mut detail = self.lock();
        let decision = self.gate(
            detail.decide_in_panic(now, policy.panic_interval()),
            detail.bench.map(|b| b.kind),
        );
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
            let was_benched = detail.bench.take().is_some();
            detail.outage_since = None;
            detail.recovered_at = Some(now);
            self.benched.store(false, Ordering::Release);
            drop(detail);
            self.publish(was_benched.then_some(CooldownEvent::Recovered));
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
        let streak = detail.record_error(record);
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
        let before = detail.bench.map(|b| (b.kind, b.until));
        let benched_for = match policy.bench(kind, retry_after, consecutive, outage) {
            Bench::No => return not_benched,
            Bench::For(d) => {
                // The chain's own cooldown may be cut short by a quarter; a server's delay not.
                let server_set = retry_after.is_some_and(|r| r >= d);
                let slack = if is_transient(kind) && !server_set {
                    d / 4
                } else {
                    Duration::ZERO
                };
                detail.bench_for(kind, d, slack, probe, started, now)
            }
            Bench::UntilReset => {
                detail.bench = Some(Benched::new(kind, None, Duration::ZERO));
                None
            }
        };
        self.benched.store(true, Ordering::Release);
        let event = (detail.bench.map(|b| (b.kind, b.until)) != before)
            .then(|| Self::bench_event(&detail, now, unix_ms(SystemTime::now())))
            .flatten();
        drop(detail);
        self.publish(event);
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
        detail.bench = Some(Benched::new(ErrorKind::Overloaded, Some(until), d / 4));
        detail.benched_at = Some(now);
        self.benched.store(true, Ordering::Release);
        let event = Self::bench_event(&detail, now, unix_ms(SystemTime::now()));
        drop(detail);
        self.publish(event);
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
        drop(detail);
        // A reset by hand lifts the bench on every replica.
        self.publish(Some(CooldownEvent::Recovered));
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
        detail.bench = saved.cooldown.as_ref().map(|c| {
            let until = c.until_unix_ms.map(|ms| {
                let left = Duration::from_millis(ms.saturating_sub(unix_ms(wall)));
                after(now, left)
            });
            Benched::new(c.kind, until, Duration::ZERO)
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
