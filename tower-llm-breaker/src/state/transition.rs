//! Transitions between states, and what they publish (listeners, metrics, traces).

use std::sync::Arc;
use std::time::Duration;

use super::types::{Listener, OpenReason, State, StateChange};
use super::word::{deadline_of, reason_of};
use super::word::{
    gen_of, nanos, pack_deadline, pack_half_open, pack_state, phase_of, NO_DEADLINE,
};
use super::{next_unit, Breaker, Cold};
use crate::open_timer::{self, Armed};
use crate::shared::{BreakerEvent, SharedBreaker};
use crate::sync::{lock, Ordering};

/// A transition another replica made, applied here (see [`crate::shared`]).
#[derive(Clone, Copy)]
pub(crate) struct Remote {
    /// For OPEN: the shared deadline, in ms since this breaker's creation.
    open_until_ms: Option<u64>,
}

impl Breaker {
    /// Move from (`from`, `gen`) to `to`; returns whether this caller made the transition
    /// (false if the breaker already left that state).
    pub(crate) fn transition(
        &self,
        from: State,
        gen: u64,
        to: State,
        reason: Option<(OpenReason, Arc<str>)>,
        now: u64,
    ) -> bool {
        self.transition_from(from, gen, to, reason, now, None)
    }

    /// [`transition`](Self::transition), made here (`remote: None`, published to the shared
    /// state if any) or applied from another replica (not published back).
    fn transition_from(
        &self,
        from: State,
        gen: u64,
        to: State,
        reason: Option<(OpenReason, Arc<str>)>,
        now: u64,
        remote: Option<Remote>,
    ) -> bool {
        let mut cold = lock(&self.cold);
        let cur = self.state.load(Ordering::Acquire);
        if phase_of(cur) != from || gen_of(cur) != gen {
            return false;
        }
        let next = gen + 1;
        let mut open_for = None;
        // The previous period's timer, if any, is of no use any more.
        cold.open_timer = None;
        match to {
            State::Open => {
                open_for = Some(match remote.and_then(|r| r.open_until_ms) {
                    Some(until_ms) => self.enter_open_until(&mut cold, next, now, until_ms),
                    None => self.enter_open(&mut cold, from, next, now),
                })
            }
            State::HalfOpen => {
                self.half_open
                    .store(pack_half_open(next, 0, 0), Ordering::Relaxed);
                let until_ms = match self.config.inner.max_wait_in_half_open {
                    Some(wait) => now.saturating_add(nanos(wait)).div_ceil(1_000_000),
                    None => NO_DEADLINE,
                };
                self.deadline
                    .store(pack_deadline(next, until_ms), Ordering::Relaxed);
            }
            State::Closed => cold.reopens = 0,
            State::ForcedOpen | State::Disabled | State::MetricsOnly => {}
        }
        let reason_code = reason.as_ref().map_or(OpenReason::Manual, |(r, _)| *r);
        self.state
            .store(pack_state(to, reason_code, next), Ordering::Release);
        if let Some((_, detail)) = &reason {
            cold.last_open_reason = Some(detail.clone());
        }
        cold.last_transition_ns = now;
        let listeners = if cold.listeners.is_empty() {
            Vec::new()
        } else {
            cold.listeners.clone()
        };
        drop(cold);

        let change = StateChange {
            breaker: Arc::clone(self.name()),
            from,
            to,
            reason: reason.as_ref().map(|(r, _)| *r),
            detail: reason.map(|(_, d)| d),
            open_for,
            generation: next,
        };
        self.publish(&change, listeners);
        if remote.is_none() {
            self.share(to, next, now);
        }
        true
    }

    /// Tell the shared state (if any) about a local transition into `to` (generation `gen`).
    fn share(&self, to: State, gen: u64, now: u64) {
        let Some(shared) = &self.config.inner.shared else {
            return;
        };
        let event = match to {
            State::Open => match deadline_of(self.deadline.load(Ordering::Acquire), gen) {
                Ok(Some(until)) => BreakerEvent::Opened {
                    until_unix_ms: crate::shared::unix_ms_now()
                        .saturating_add(until.saturating_sub(now).div_ceil(1_000_000)),
                    reason: reason_of(self.state.load(Ordering::Acquire)),
                },
                _ => return,
            },
            State::ForcedOpen => BreakerEvent::ForcedOpen,
            State::Closed => BreakerEvent::Closed,
            State::HalfOpen | State::Disabled | State::MetricsOnly => return,
        };
        shared.publish(self.name(), event);
    }

    /// Register with the shared state (if any): once, right after creation.
    pub(crate) fn attach_shared(self: &Arc<Self>) {
        if let Some(shared) = &self.config.inner.shared {
            shared.attach(SharedBreaker::new(self));
        }
    }

    /// Whether this process may turn its breaker half-open now that its open deadline passed
    /// (always, without a shared state).
    pub(crate) fn may_half_open(&self) -> bool {
        self.config
            .inner
            .shared
            .as_ref()
            .is_none_or(|shared| shared.may_half_open(self.name()))
    }

    /// Apply another replica's transition (wall clock `wall_ms`), not published back.
    pub(crate) fn apply_remote(&self, event: BreakerEvent, wall_ms: u64) {
        let now = self.now_ns();
        loop {
            let s = self.state.load(Ordering::Acquire);
            let (phase, gen) = (phase_of(s), gen_of(s));
            let (to, reason, open_until_ms) = match event {
                BreakerEvent::Opened {
                    until_unix_ms,
                    reason,
                } => {
                    if until_unix_ms <= wall_ms
                        || matches!(
                            phase,
                            State::ForcedOpen | State::Disabled | State::MetricsOnly
                        )
                    {
                        return;
                    }
                    let until_ms = (now / 1_000_000).saturating_add(until_unix_ms - wall_ms);
                    if phase == State::Open {
                        if let Ok(Some(current)) =
                            deadline_of(self.deadline.load(Ordering::Acquire), gen)
                        {
                            if current >= until_ms.saturating_mul(1_000_000) {
                                return;
                            }
                        }
                    }
                    (State::Open, reason, Some(until_ms))
                }
                BreakerEvent::ForcedOpen => {
                    if matches!(
                        phase,
                        State::ForcedOpen | State::Disabled | State::MetricsOnly
                    ) {
                        return;
                    }
                    (State::ForcedOpen, OpenReason::Forced, None)
                }
                BreakerEvent::Closed => {
                    if !matches!(phase, State::Open | State::HalfOpen | State::ForcedOpen) {
                        return;
                    }
                    (State::Closed, OpenReason::Manual, None)
                }
            };
            let reason =
                (to != State::Closed).then(|| (reason, self.reasons[reason as usize].clone()));
            if self.transition_from(phase, gen, to, reason, now, Some(Remote { open_until_ms })) {
                return;
            }
        }
    }

    /// The state to republish: open (with its deadline) or forced open.
    pub(crate) fn current_event(&self, wall_ms: u64) -> Option<BreakerEvent> {
        let s = self.state.load(Ordering::Acquire);
        match phase_of(s) {
            State::ForcedOpen => Some(BreakerEvent::ForcedOpen),
            State::Open => {
                let until =
                    deadline_of(self.deadline.load(Ordering::Acquire), gen_of(s)).ok()??;
                let left = until.saturating_sub(self.now_ns());
                (left > 0).then(|| BreakerEvent::Opened {
                    until_unix_ms: wall_ms.saturating_add(left.div_ceil(1_000_000)),
                    reason: reason_of(s),
                })
            }
            _ => None,
        }
    }

    /// Enter OPEN as generation `next` until `until_ms` (ms since creation), a deadline another
    /// replica decided (the re-open exponent stays as it is). Returns the duration.
    fn enter_open_until(&self, cold: &mut Cold, next: u64, now: u64, until_ms: u64) -> Duration {
        self.deadline
            .store(pack_deadline(next, until_ms), Ordering::Relaxed);
        self.arm_open_timer(cold, next, now, until_ms);
        Duration::from_nanos(until_ms.saturating_mul(1_000_000).saturating_sub(now))
    }

    /// Enter OPEN as generation `next`: the open duration (grown by re-opens, jittered), its
    /// deadline, and the timer that lets rejections skip the clock. Returns the duration.
    fn enter_open(&self, cold: &mut Cold, from: State, next: u64, now: u64) -> Duration {
        cold.reopens = match from {
            State::HalfOpen => cold.reopens.saturating_add(1),
            State::Open => cold.reopens,
            _ => 0,
        };
        let base = self.config.open_duration_for(cold.reopens);
        let jitter = self.config.inner.jitter;
        let duration = if jitter > 0.0 {
            base.mul_f64(1.0 - jitter * next_unit(&mut cold.rng))
        } else {
            base
        };
        let until_ms = now.saturating_add(nanos(duration)).div_ceil(1_000_000);
        self.deadline
            .store(pack_deadline(next, until_ms), Ordering::Relaxed);
        self.arm_open_timer(cold, next, now, until_ms);
        duration
    }

    /// The timer that lets rejections of open generation `next` skip the clock.
    fn arm_open_timer(&self, cold: &mut Cold, next: u64, now: u64, until_ms: u64) {
        // Due 1 ms early: the runtime's timer wheel rounds deadlines up to its next tick.
        let due = Duration::from_millis(until_ms.saturating_sub(1));
        if !cold.timers_disabled && due > Duration::from_nanos(now) {
            match open_timer::arm(&self.clock_free, next, self.base + due) {
                Armed::Timer(timer) => cold.open_timer = Some(timer),
                Armed::Skipped => {}
                Armed::TimersDisabled => cold.timers_disabled = true,
            }
        }
    }

    /// Publish a transition: metrics, a trace, and every state-change listener.
    fn publish(&self, change: &StateChange, listeners: Vec<Listener>) {
        self.metrics.transition(change.from, change.to);
        crate::metrics::trace_transition(change);
        for listener in listeners {
            // A panicking listener must not unwind into the call that triggered the transition.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener(change))).is_err()
            {
                tracing::error!(breaker = %change.breaker, "a circuit-breaker state listener panicked");
            }
        }
    }

    /// Move to `to` from whatever state the breaker is in (manual operations).
    pub(crate) fn force(&self, to: State, reason: Option<OpenReason>) {
        let now = self.now_ns();
        loop {
            let s = self.state.load(Ordering::Acquire);
            let reason = reason.map(|r| (r, self.reasons[r as usize].clone()));
            if self.transition(phase_of(s), gen_of(s), to, reason, now) {
                return;
            }
        }
    }
}
