//! Transitions between states, and what they publish (listeners, metrics, traces).

use std::sync::Arc;
use std::time::Duration;

use super::types::{Listener, OpenReason, State, StateChange};
use super::word::{
    gen_of, nanos, pack_deadline, pack_half_open, pack_state, phase_of, NO_DEADLINE,
};
use super::{next_unit, Breaker, Cold};
use crate::open_timer::{self, Armed};
use crate::sync::{lock, Ordering};

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
            State::Open => open_for = Some(self.enter_open(&mut cold, from, next, now)),
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
        true
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
        // Due 1 ms early: the runtime's timer wheel rounds deadlines up to its next tick.
        let due = Duration::from_millis(until_ms.saturating_sub(1));
        if !cold.timers_disabled && due > Duration::from_nanos(now) {
            match open_timer::arm(&self.clock_free, next, self.base + due) {
                Armed::Timer(timer) => cold.open_timer = Some(timer),
                Armed::Skipped => {}
                Armed::TimersDisabled => cold.timers_disabled = true,
            }
        }
        duration
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
