//! Breaker state shared between replicas: a pluggable [`SharedBreakers`] the breaker tells about
//! its transitions, which applies what other replicas' breakers did back into it.
//!
//! Without one (or with [`LocalBreakers`], the default) each process's breaker opens on its own
//! failures only, as before. With one (`tower-llm-redis` implements it on Redis), a breaker that
//! opens on one replica is open on all of them until the same deadline; when the deadline
//! passes, one replica (the one that takes the lease) turns half-open and probes, the others
//! keep rejecting until its result — closed, or open again with a new deadline — is shared.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use tower_llm_breaker::shared::{BreakerEvent, SharedBreaker, SharedBreakers};
//! use tower_llm_breaker::{BreakerHandle, CircuitBreakerConfig, OpenReason, State};
//!
//! /// Keeps the breakers it is given (a real backend applies other replicas' events to them).
//! #[derive(Debug, Default)]
//! struct Keep(Mutex<Vec<SharedBreaker>>);
//!
//! impl SharedBreakers for Keep {
//!     fn attach(&self, breaker: SharedBreaker) {
//!         self.0.lock().unwrap().push(breaker);
//!     }
//!     fn publish(&self, _breaker: &str, _event: BreakerEvent) {}
//!     fn may_half_open(&self, _breaker: &str) -> bool {
//!         true
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let keep = Arc::new(Keep::default());
//! let config = CircuitBreakerConfig::builder()
//!     .name("openai")
//!     .shared(keep.clone())
//!     .build()
//!     .unwrap();
//! let handle = BreakerHandle::new(config);
//! // Another replica's breaker opened for 5 s: this one is open too, until the same instant.
//! let until = tower_llm_breaker::shared::unix_ms_now() + 5_000;
//! keep.0.lock().unwrap()[0].apply(BreakerEvent::Opened {
//!     until_unix_ms: until,
//!     reason: OpenReason::ConsecutiveFailures,
//! });
//! assert_eq!(handle.state(), State::Open);
//! # }
//! ```
//!
//! # What is shared, and what stays local
//!
//! Shared: the transitions to open (with the open deadline, as an absolute Unix time in ms),
//! forced open and closed, and who probes when the deadline passes. Local: the counts (the
//! sliding window, consecutive failures, the half-open successes) and the re-open exponent.
//! Counting locally keeps the closed hot path free of any round trip; the cost is that each
//! replica trips on its own traffic's failures — but the first replica to trip opens the
//! breaker for all, which is what stops N replicas from each hammering a failing provider
//! until their own breaker opens. A replica that was closed when another replica's breaker
//! opened takes that open period (the later deadline wins when two open at once).
//!
//! **Clocks.** The deadline crosses processes as Unix milliseconds: replicas' clocks must agree
//! to well within an open period (NTP keeps them within a few ms).
//!
//! **Hot path.** A closed breaker never consults this: [`SharedBreakers::publish`] is called
//! on a transition and [`SharedBreakers::may_half_open`] when an open deadline has passed and a
//! call would turn the breaker half-open. Neither may block.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::state::{Breaker, OpenReason, State};

/// A breaker transition, as it crosses processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerEvent {
    /// Opened (or re-opened) until `until_unix_ms` (ms since the Unix epoch).
    Opened {
        /// When the open period ends.
        until_unix_ms: u64,
        /// Why it opened.
        reason: OpenReason,
    },
    /// Forced open by hand: open until reset.
    ForcedOpen,
    /// Closed: a probe succeeded, or the breaker was reset.
    Closed,
}

/// Where breakers share their state (see the [module docs](self)).
pub trait SharedBreakers: Send + Sync + fmt::Debug + 'static {
    /// A breaker named `breaker.name()` was created (a keyed breaker: one per key, on first
    /// use): other replicas' events for that name are applied through it.
    fn attach(&self, breaker: SharedBreaker);

    /// The breaker named `breaker` made a local transition (never called for an event applied
    /// through [`SharedBreaker::apply`]).
    fn publish(&self, breaker: &str, event: BreakerEvent);

    /// The open deadline of `breaker` passed and a call would turn it half-open and probe:
    /// whether this process may (`true` when it alone decides). A `false` rejects the call as
    /// if the breaker were still open; the implementation answers `true` within a bounded time
    /// when its backend does not answer.
    fn may_half_open(&self, breaker: &str) -> bool;
}

/// Nothing shared: each breaker decides alone (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalBreakers;

impl SharedBreakers for LocalBreakers {
    fn attach(&self, _breaker: SharedBreaker) {}

    fn publish(&self, _breaker: &str, _event: BreakerEvent) {}

    fn may_half_open(&self, _breaker: &str) -> bool {
        true
    }
}

/// One breaker, as a [`SharedBreakers`] sees it. Holds it weakly: once the breaker is dropped
/// (a keyed breaker evicted), applying does nothing.
#[derive(Clone)]
pub struct SharedBreaker {
    name: Arc<str>,
    breaker: Weak<Breaker>,
}

impl fmt::Debug for SharedBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBreaker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SharedBreaker {
    pub(crate) fn new(breaker: &Arc<Breaker>) -> Self {
        SharedBreaker {
            name: Arc::clone(breaker.name()),
            breaker: Arc::downgrade(breaker),
        }
    }

    /// The breaker's name (its key, for a keyed breaker).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the breaker still exists.
    pub fn is_alive(&self) -> bool {
        self.breaker.strong_count() > 0
    }

    /// Apply another replica's transition (not published back): open until its deadline (a
    /// later deadline replaces an earlier one; ignored when already past), forced open, or
    /// closed. A disabled or metrics-only breaker ignores them.
    pub fn apply(&self, event: BreakerEvent) {
        if let Some(breaker) = self.breaker.upgrade() {
            breaker.apply_remote(event, unix_ms_now());
        }
    }

    /// What to republish of the breaker (e.g. to a Redis that restarted empty): `None` unless
    /// it is open or forced open.
    pub fn current(&self) -> Option<BreakerEvent> {
        self.breaker.upgrade()?.current_event(unix_ms_now())
    }

    /// The breaker's state now.
    pub fn state(&self) -> Option<State> {
        Some(self.breaker.upgrade()?.state())
    }
}

/// Milliseconds since the Unix epoch: the clock deadlines cross processes in.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use tower_llm_core::ErrorKind;

    use super::*;
    use crate::{BreakerHandle, CircuitBreakerConfig, Outcome};

    #[derive(Debug, Default)]
    struct Recorder {
        attached: Mutex<Vec<SharedBreaker>>,
        events: Mutex<Vec<(String, BreakerEvent)>>,
        refuse: AtomicBool,
    }

    impl SharedBreakers for Recorder {
        fn attach(&self, breaker: SharedBreaker) {
            self.attached.lock().unwrap().push(breaker);
        }
        fn publish(&self, breaker: &str, event: BreakerEvent) {
            self.events
                .lock()
                .unwrap()
                .push((breaker.to_owned(), event));
        }
        fn may_half_open(&self, _breaker: &str) -> bool {
            !self.refuse.load(Ordering::Relaxed)
        }
    }

    fn breaker() -> (BreakerHandle, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let config = CircuitBreakerConfig::builder()
            .name("t")
            .consecutive_failures(2)
            .open_duration(Duration::from_secs(5))
            .permitted_calls_in_half_open(1)
            .shared(recorder.clone())
            .build()
            .unwrap();
        (BreakerHandle::new(config), recorder)
    }

    fn events(r: &Recorder) -> Vec<BreakerEvent> {
        r.events.lock().unwrap().iter().map(|(_, e)| *e).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn local_transitions_are_published_and_half_open_waits_for_the_lease() {
        let (handle, recorder) = breaker();
        assert_eq!(recorder.attached.lock().unwrap()[0].name(), "t");
        let before = unix_ms_now();
        for _ in 0..2 {
            handle
                .try_acquire()
                .unwrap()
                .record(Outcome::Failure(ErrorKind::ServerError));
        }
        assert_eq!(handle.state(), State::Open);
        let [BreakerEvent::Opened {
            until_unix_ms,
            reason: OpenReason::ConsecutiveFailures,
        }] = events(&recorder)[..]
        else {
            panic!("{:?}", events(&recorder))
        };
        assert!((before + 4_990..=unix_ms_now() + 5_010).contains(&until_unix_ms));

        // Past the deadline, another replica holds the lease: still rejected, not half-open.
        tokio::time::advance(Duration::from_secs(5)).await;
        recorder.refuse.store(true, Ordering::Relaxed);
        assert!(handle.try_acquire().is_err());
        assert_eq!(handle.state(), State::Open);
        // Ours: half-open, and its successful probe closes it on every replica.
        recorder.refuse.store(false, Ordering::Relaxed);
        handle.try_acquire().unwrap().record(Outcome::Success);
        assert_eq!(handle.state(), State::Closed);
        assert_eq!(events(&recorder).last(), Some(&BreakerEvent::Closed));
        assert_eq!(events(&recorder).len(), 2, "half-open is not published");
    }

    #[tokio::test(start_paused = true)]
    async fn remote_transitions_are_applied_and_not_published_back() {
        let (handle, recorder) = breaker();
        let remote = recorder.attached.lock().unwrap()[0].clone();
        remote.apply(BreakerEvent::Opened {
            until_unix_ms: unix_ms_now() + 3_000,
            reason: OpenReason::FailureRate,
        });
        assert_eq!(handle.state(), State::Open);
        let err = handle.try_acquire().unwrap_err();
        assert!(err.retry_after() <= Duration::from_secs(3));
        assert!(matches!(
            remote.current(),
            Some(BreakerEvent::Opened {
                reason: OpenReason::FailureRate,
                ..
            })
        ));
        // An earlier deadline does not shorten it; one in the past is ignored.
        let gen = handle.snapshot().generation;
        remote.apply(BreakerEvent::Opened {
            until_unix_ms: unix_ms_now() + 1_000,
            reason: OpenReason::FailureRate,
        });
        remote.apply(BreakerEvent::Opened {
            until_unix_ms: 1,
            reason: OpenReason::FailureRate,
        });
        assert_eq!(handle.snapshot().generation, gen);
        tokio::time::advance(Duration::from_millis(2_900)).await;
        assert!(handle.try_acquire().is_err());
        remote.apply(BreakerEvent::Closed);
        assert_eq!(handle.state(), State::Closed);
        assert!(handle.try_acquire().is_ok());
        remote.apply(BreakerEvent::ForcedOpen);
        assert_eq!(handle.state(), State::ForcedOpen);
        assert_eq!(remote.current(), Some(BreakerEvent::ForcedOpen));
        assert!(events(&recorder).is_empty(), "{:?}", events(&recorder));
        // A reset by hand is shared.
        handle.reset();
        assert_eq!(events(&recorder), [BreakerEvent::Closed]);
        drop(handle);
        assert!(!remote.is_alive());
        remote.apply(BreakerEvent::Closed);
        assert!(LocalBreakers.may_half_open("t"));
    }
}
