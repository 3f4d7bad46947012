//! Cooldowns shared between replicas: a pluggable [`SharedCooldowns`] the chain tells about its
//! benches and recoveries, which applies what other replicas learned back into the chain.
//!
//! Without one (or with [`LocalCooldowns`], the default) every process learns alone, as before.
//! With one (`tower-llm-redis` implements it on Redis), a target benched by one replica is
//! benched on all of them, and when the cooldown lifts a lease lets exactly one replica send the
//! probe; its result (back in service, or benched again) is shared the same way.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use tower_llm_fallback::shared::{CooldownEvent, CooldownTarget, SharedCooldowns};
//! use tower_llm_fallback::{FallbackLayer, TargetConfig};
//!
//! /// Records what the chain publishes (a real backend sends it to the other replicas).
//! #[derive(Debug, Default)]
//! struct Recorder {
//!     targets: Mutex<Vec<CooldownTarget>>,
//!     events: Mutex<Vec<(String, CooldownEvent)>>,
//! }
//!
//! impl SharedCooldowns for Recorder {
//!     fn attach(&self, target: CooldownTarget) {
//!         self.targets.lock().unwrap().push(target);
//!     }
//!     fn publish(&self, target: &str, event: CooldownEvent) {
//!         self.events.lock().unwrap().push((target.to_owned(), event));
//!     }
//!     fn may_probe(&self, _target: &str) -> bool {
//!         true
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let recorder = Arc::new(Recorder::default());
//! let layer = FallbackLayer::builder()
//!     .target(TargetConfig::new("openai", "gpt-4o-mini"))
//!     .shared_cooldowns(recorder.clone())
//!     .build()
//!     .unwrap();
//! // Another replica benched the target for a rate limit: apply it here.
//! let until = tower_llm_fallback::shared::unix_ms_now() + 5_000;
//! let target = recorder.targets.lock().unwrap()[0].clone();
//! assert_eq!(target.name(), "openai/gpt-4o-mini");
//! target.apply(CooldownEvent::Benched {
//!     kind: tower_llm_core::ErrorKind::RateLimited,
//!     until_unix_ms: Some(until),
//! });
//! assert!(!layer.handle().health().targets[0].available);
//! // Remote events are not published back.
//! assert!(recorder.events.lock().unwrap().is_empty());
//! # }
//! ```
//!
//! # What is shared, and what stays local
//!
//! Shared: the bench of a target (its kind and its end, as an absolute Unix time in ms, or
//! "until reset"), the end of a bench (a probe succeeded, or someone reset the target), and who
//! probes. Local: counters, recent errors, the failure streak and the outage length that the
//! adaptive cooldown grows with (each replica's own traffic decides its next cooldown; the
//! longest bench any replica publishes wins, since a later end replaces an earlier one).
//!
//! **Clocks.** Deadlines cross processes as Unix milliseconds, so replicas' clocks must agree to
//! well within a cooldown (NTP keeps them within a few ms): a replica whose clock runs ahead by
//! `d` lifts a shared bench `d` early.
//!
//! **Hot path.** Nothing here is consulted for a target in service: the chain calls
//! [`SharedCooldowns::publish`] on a transition (a bench, a recovery) and
//! [`SharedCooldowns::may_probe`] when a cooldown has lifted and a request would probe; both
//! must return at once (queue work for a background task).

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower_llm_core::ErrorKind;

use crate::health::TargetState;

/// A transition of one target's cooldown, as it crosses processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CooldownEvent {
    /// The target is benched for `kind` until `until_unix_ms` (`None`: until reset).
    Benched {
        /// The kind of failure that benched it.
        kind: ErrorKind,
        /// When the bench ends, in ms since the Unix epoch; `None` until reset by hand.
        until_unix_ms: Option<u64>,
    },
    /// The target is back in service (its probe succeeded, or it was reset).
    Recovered,
}

/// Where a chain's cooldowns are shared (see the [module docs](self)).
///
/// A chain built with one calls [`attach`](Self::attach) once per target at build time, then
/// [`publish`](Self::publish) on each local transition and [`may_probe`](Self::may_probe) before
/// a probe. None of them may block: they run on a request's task.
pub trait SharedCooldowns: Send + Sync + fmt::Debug + 'static {
    /// The chain has a target named `target.name()`: events other replicas publish for that
    /// name are applied through `target` ([`CooldownTarget::apply`]).
    fn attach(&self, target: CooldownTarget);

    /// The target named `target` made a local transition (never called for an event applied
    /// through [`CooldownTarget::apply`]).
    fn publish(&self, target: &str, event: CooldownEvent);

    /// The cooldown of `target` lifted and a request would send its probe: whether this process
    /// may (`true` when it alone decides). A `false` skips the target for this request; the
    /// implementation answers `true` within a bounded time when its backend does not answer.
    fn may_probe(&self, target: &str) -> bool;
}

/// Nothing shared: each process learns alone (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalCooldowns;

impl SharedCooldowns for LocalCooldowns {
    fn attach(&self, _target: CooldownTarget) {}

    fn publish(&self, _target: &str, _event: CooldownEvent) {}

    fn may_probe(&self, _target: &str) -> bool {
        true
    }
}

/// One target of a chain, as a [`SharedCooldowns`] sees it: its name, its current bench, and
/// the way to apply another replica's events to it. Holds the chain weakly: once the chain is
/// dropped, applying does nothing.
#[derive(Clone)]
pub struct CooldownTarget {
    name: Arc<str>,
    state: Weak<TargetState>,
}

impl fmt::Debug for CooldownTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CooldownTarget")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CooldownTarget {
    pub(crate) fn new(name: Arc<str>, state: &Arc<TargetState>) -> Self {
        CooldownTarget {
            name,
            state: Arc::downgrade(state),
        }
    }

    /// The target's name in its chain.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the chain still exists.
    pub fn is_alive(&self) -> bool {
        self.state.strong_count() > 0
    }

    /// Apply another replica's event: a bench (a later end replaces an earlier one; a bench
    /// until reset stays until a reset or a recovery), or a recovery. Not published back.
    pub fn apply(&self, event: CooldownEvent) {
        if let Some(state) = self.state.upgrade() {
            state.apply_remote(event, unix_ms_now());
        }
    }

    /// The target's current bench, to republish (e.g. to a Redis that restarted empty):
    /// `None` when it is in service.
    pub fn current(&self) -> Option<CooldownEvent> {
        let state = self.state.upgrade()?;
        state.current_bench(unix_ms_now())
    }
}

/// Milliseconds since the Unix epoch: the clock deadlines cross processes in.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a target's state holds of its chain's sharing.
#[derive(Clone)]
pub(crate) struct Sharing {
    pub(crate) name: Arc<str>,
    pub(crate) shared: Arc<dyn SharedCooldowns>,
}

impl fmt::Debug for Sharing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sharing")
            .field("name", &self.name)
            .field("shared", &self.shared)
            .finish()
    }
}

impl Sharing {
    pub(crate) fn publish(&self, event: CooldownEvent) {
        self.shared.publish(&self.name, event);
    }
}

/// `until - now` in ms as a duration (zero when past).
pub(crate) fn remaining(until_unix_ms: u64, now_unix_ms: u64) -> Duration {
    Duration::from_millis(until_unix_ms.saturating_sub(now_unix_ms))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;
    use crate::cooldown::CooldownPolicy;
    use crate::health::{Admission, FailedCall};

    #[derive(Debug, Default)]
    struct Recorder {
        events: Mutex<Vec<(String, CooldownEvent)>>,
        refuse_probe: AtomicBool,
    }

    impl SharedCooldowns for Recorder {
        fn attach(&self, _target: CooldownTarget) {}
        fn publish(&self, target: &str, event: CooldownEvent) {
            self.events.lock().unwrap().push((target.to_owned(), event));
        }
        fn may_probe(&self, _target: &str) -> bool {
            !self.refuse_probe.load(Ordering::Relaxed)
        }
    }

    fn shared_state() -> (Arc<TargetState>, Arc<Recorder>, CooldownTarget) {
        let state = Arc::new(TargetState::default());
        let recorder = Arc::new(Recorder::default());
        state.share(Sharing {
            name: Arc::from("a/m"),
            shared: recorder.clone(),
        });
        let target = CooldownTarget::new(Arc::from("a/m"), &state);
        (state, recorder, target)
    }

    fn rate_limited(started: Instant) -> FailedCall {
        FailedCall {
            kind: ErrorKind::RateLimited,
            retry_after: Some(Duration::from_secs(5)),
            status: Some(429),
            probe: false,
            started,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_local_bench_and_recovery_are_published_once_each() {
        let (state, recorder, _) = shared_state();
        let policy = CooldownPolicy::default();
        let t0 = Instant::now();
        let before = unix_ms_now();
        state.on_failure(rate_limited(t0), &policy, t0);
        // The same bench again (another request in flight): nothing new to publish.
        state.on_failure(rate_limited(t0), &policy, t0);
        let events = recorder.events.lock().unwrap().clone();
        assert_eq!(events.len(), 1, "{events:?}");
        let (
            name,
            CooldownEvent::Benched {
                kind,
                until_unix_ms,
            },
        ) = &events[0]
        else {
            panic!("{events:?}")
        };
        assert_eq!((name.as_str(), *kind), ("a/m", ErrorKind::RateLimited));
        let until = until_unix_ms.unwrap();
        assert!(
            (before + 4_990..=unix_ms_now() + 5_010).contains(&until),
            "{until}"
        );

        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        assert!(matches!(state.admit(now, &policy), Admission::Probe));
        state.on_success(true, now);
        let events = recorder.events.lock().unwrap().clone();
        assert_eq!(events.last().unwrap().1, CooldownEvent::Recovered);
        assert_eq!(events.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_remote_bench_skips_the_target_until_its_end_and_is_not_published_back() {
        let (state, recorder, target) = shared_state();
        let policy = CooldownPolicy::default();
        target.apply(CooldownEvent::Benched {
            kind: ErrorKind::RateLimited,
            until_unix_ms: Some(unix_ms_now() + 5_000),
        });
        let skipped = state.admit(Instant::now(), &policy);
        assert!(
            matches!(
                skipped,
                Admission::Skip {
                    kind: ErrorKind::RateLimited,
                    ..
                }
            ),
            "{skipped:?}"
        );
        assert!(matches!(
            target.current(),
            Some(CooldownEvent::Benched {
                kind: ErrorKind::RateLimited,
                until_unix_ms: Some(_)
            })
        ));
        // An earlier end does not shorten it; a bench in the past is ignored.
        target.apply(CooldownEvent::Benched {
            kind: ErrorKind::Overloaded,
            until_unix_ms: Some(unix_ms_now() + 1_000),
        });
        target.apply(CooldownEvent::Benched {
            kind: ErrorKind::Overloaded,
            until_unix_ms: Some(1),
        });
        tokio::time::advance(Duration::from_millis(4_900)).await;
        assert!(matches!(
            state.admit(Instant::now(), &policy),
            Admission::Skip { .. }
        ));
        // The paused tokio clock does not move the wall clock: the remote end was mapped
        // onto the tokio clock when it was applied.
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(matches!(
            state.admit(Instant::now(), &policy),
            Admission::Probe
        ));
        state.release_probe();
        // Another replica's probe succeeded.
        target.apply(CooldownEvent::Recovered);
        assert!(matches!(
            state.admit(Instant::now(), &policy),
            Admission::Open
        ));
        assert!(target.current().is_none());
        assert!(recorder.events.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_the_shared_state_refuses_is_a_skip() {
        let (state, recorder, _) = shared_state();
        let policy = CooldownPolicy::default();
        let t0 = Instant::now();
        state.on_failure(rate_limited(t0), &policy, t0);
        tokio::time::advance(Duration::from_secs(5)).await;
        recorder.refuse_probe.store(true, Ordering::Relaxed);
        assert!(matches!(
            state.admit(Instant::now(), &policy),
            Admission::Skip {
                kind: ErrorKind::RateLimited,
                retry_after: None
            }
        ));
        recorder.refuse_probe.store(false, Ordering::Relaxed);
        assert!(matches!(
            state.admit(Instant::now(), &policy),
            Admission::Probe
        ));
    }

    #[test]
    fn a_dropped_chain_ignores_remote_events() {
        let (state, _, target) = shared_state();
        drop(state);
        assert!(!target.is_alive());
        target.apply(CooldownEvent::Recovered);
        assert!(target.current().is_none());
        assert!(LocalCooldowns.may_probe("x"));
    }
}
