//! Recording outcomes: the probe and closed-state bookkeeping and the trip conditions.

use std::sync::Arc;

use super::admit::PermitKind;
use super::types::{OpenReason, Outcome, State};
use super::word::{gen_of, pack_half_open, phase_of, tag32, unpack_half_open};
use super::Breaker;
use crate::sync::Ordering;
use crate::window::{Sample, Totals};

impl Breaker {
    /// Apply the outcome of a permit.
    pub(super) fn complete(
        &self,
        gen: u64,
        kind: PermitKind,
        start_ns: u64,
        latency_ns: Option<u64>,
        outcome: Outcome,
    ) {
        self.metrics.outcome(outcome);
        if kind == PermitKind::Untracked {
            return;
        }
        let failure = match outcome {
            Outcome::Ignored => {
                self.ignored.fetch_add(1, Ordering::Relaxed);
                if kind.is_probe() {
                    self.release_probe(gen);
                }
                return;
            }
            Outcome::Success => false,
            Outcome::Failure(_) => true,
        };
        let now = if self.needs_clock { self.now_ns() } else { 0 };
        let slow = self.slow_ns.is_some_and(|threshold| {
            latency_ns.unwrap_or(now.saturating_sub(start_ns)) >= threshold
        });
        if slow {
            self.metrics.slow();
        }
        match kind {
            PermitKind::Probe => self.complete_probe(gen, failure || slow, false, now),
            PermitKind::ChainProbe => self.complete_probe(gen, failure || slow, true, now),
            _ => self.complete_normal(gen, Sample { failure, slow }, now),
        }
    }

    /// A probe finished: a failure re-opens; a success closes once every permitted probe
    /// succeeded, or at once when `decisive` (the chain's probe).
    fn complete_probe(&self, gen: u64, failed: bool, decisive: bool, now: u64) {
        if failed {
            let detail = self.reasons[OpenReason::ProbeFailed as usize].clone();
            self.transition(
                State::HalfOpen,
                gen,
                State::Open,
                Some((OpenReason::ProbeFailed, detail)),
                self.clock_or(now),
            );
            // After the transition, so no other caller can take this permit in the dying period.
            self.release_probe(gen);
            return;
        }
        let tag = tag32(gen);
        let after = self
            .half_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let (t, in_flight, successes) = unpack_half_open(w);
                (t == tag && in_flight > 0)
                    .then(|| pack_half_open(gen, in_flight - 1, successes + 1))
            });
        if let Ok(prev) = after {
            if decisive || unpack_half_open(prev).2 + 1 >= self.permitted {
                self.transition(
                    State::HalfOpen,
                    gen,
                    State::Closed,
                    None,
                    self.clock_or(now),
                );
            }
        }
    }

    fn complete_normal(&self, gen: u64, sample: Sample, now: u64) {
        let s = self.state.load(Ordering::Acquire);
        if gen_of(s) != gen {
            return;
        }
        let Some(totals) = self.window.record(gen, sample, now) else {
            return;
        };
        let tag = tag32(gen);
        let consecutive = if sample.failure {
            let prev = self
                .consecutive
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                    let n = if w >> 32 == tag { w & 0xFFFF_FFFF } else { 0 };
                    Some((tag << 32) | (n + 1).min(0xFFFF_FFFF))
                })
                .unwrap_or(0);
            if prev >> 32 == tag {
                (prev & 0xFFFF_FFFF) + 1
            } else {
                1
            }
        } else {
            let w = self.consecutive.load(Ordering::Acquire);
            if w >> 32 == tag && w & 0xFFFF_FFFF != 0 {
                let _ = self.consecutive.compare_exchange(
                    w,
                    tag << 32,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            0
        };
        if phase_of(s) != State::Closed {
            return;
        }
        if let Some(trip) = self.trip_condition(totals, consecutive) {
            self.transition(
                State::Closed,
                gen,
                State::Open,
                Some(trip),
                self.clock_or(now),
            );
        }
    }

    fn clock_or(&self, now: u64) -> u64 {
        if self.needs_clock {
            now
        } else {
            self.now_ns()
        }
    }

    /// Which trip condition, if any, the window and the consecutive count meet.
    fn trip_condition(&self, t: Totals, consecutive: u64) -> Option<(OpenReason, Arc<str>)> {
        let c = &self.config.inner;
        if let Some(n) = c.consecutive_failures {
            if consecutive >= u64::from(n) {
                return Some((
                    OpenReason::ConsecutiveFailures,
                    self.reasons[OpenReason::ConsecutiveFailures as usize].clone(),
                ));
            }
        }
        if t.calls < u64::from(c.minimum_calls) || (t.failures == 0 && t.slow == 0) {
            return None;
        }
        let calls = t.calls as f64;
        if let Some(threshold) = c.failure_rate_threshold {
            let rate = t.failures as f64 / calls;
            if t.failures > 0 && rate >= threshold {
                return Some((
                    OpenReason::FailureRate,
                    Arc::from(format!(
                        "failure rate {:.1}% >= {:.1}% over {} calls",
                        rate * 100.0,
                        threshold * 100.0,
                        t.calls
                    )),
                ));
            }
        }
        if c.slow_call_duration.is_some() {
            let rate = t.slow as f64 / calls;
            if t.slow > 0 && rate >= c.slow_call_rate_threshold {
                return Some((
                    OpenReason::SlowCallRate,
                    Arc::from(format!(
                        "slow-call rate {:.1}% >= {:.1}% over {} calls",
                        rate * 100.0,
                        c.slow_call_rate_threshold * 100.0,
                        t.calls
                    )),
                ));
            }
        }
        None
    }
}
