//! Admission: a permit for a call, or a rejection; and the permit itself ([`CallPermit`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_llm_core::{BreakerOpen, BreakerOpenCause};

use super::types::{OpenReason, Outcome, State};
use super::word::{
    deadline_of, gen_of, pack_half_open, phase_of, reason_of, tag32, unpack_half_open,
};
use super::Breaker;
use crate::sync::{clock_check_due, stripe, Ordering, STRIPES};

/// The index of the "half-open and full" cause, after the seven [`OpenReason`]s.
const HALF_OPEN_FULL: usize = OpenReason::ALL.len();

/// A breaker that rejects calls right now, as seen by [`Breaker::open_now`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenNow {
    /// OPEN for `reason`, until the instant in ns since the breaker's creation.
    Open(OpenReason, u64),
    /// FORCED_OPEN for `reason`.
    Forced(OpenReason),
}

impl OpenNow {
    /// Whether a probe of the layer above may still be admitted (OPEN, not FORCED_OPEN).
    pub(crate) fn admits_probe(self) -> bool {
        matches!(self, OpenNow::Open(..))
    }
}

/// How a permit was admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PermitKind {
    /// CLOSED or METRICS_ONLY: the outcome goes to the window.
    Normal,
    /// A HALF_OPEN probe: holds one of the probe permits.
    Probe,
    /// A HALF_OPEN probe sent by the layer above (a fallback chain): holds one of the probe
    /// permits, and decides alone. Its success closes the breaker, since the layer above, which
    /// decides when the target is probed, has just put it back in service.
    ChainProbe,
    /// DISABLED: nothing is recorded.
    Untracked,
}

impl PermitKind {
    /// Whether the permit holds one of the half-open probe permits.
    pub(super) fn is_probe(self) -> bool {
        matches!(self, PermitKind::Probe | PermitKind::ChainProbe)
    }
}

impl Breaker {
    /// Whether a call right now would be rejected without any transition (OPEN before its
    /// deadline, or FORCED_OPEN), and until when. Used by `poll_ready` to fail fast without
    /// waiting for the inner service; nothing is counted until [`reject`](Self::reject) turns it
    /// into a rejection (a probe may still be admitted).
    pub(crate) fn open_now(&self) -> Option<OpenNow> {
        let s = self.state.load(Ordering::Acquire);
        match phase_of(s) {
            State::ForcedOpen => Some(OpenNow::Forced(reason_of(s))),
            State::Open => {
                let until =
                    deadline_of(self.deadline.load(Ordering::Acquire), gen_of(s)).ok()??;
                (self.clock_free(gen_of(s)) || self.now_ns() < until)
                    .then(|| OpenNow::Open(reason_of(s), until))
            }
            _ => None,
        }
    }

    /// The rejection of a call for what [`open_now`](Self::open_now) saw (counted as one).
    pub(crate) fn reject(&self, open: OpenNow) -> BreakerOpen {
        match open {
            OpenNow::Open(reason, until) => self.reject_until(reason, until),
            OpenNow::Forced(reason) => self.reject_forced(reason),
        }
    }

    /// Admit a call or reject it.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Result<CallPermit, BreakerOpen> {
        self.acquire(|| false)
    }

    /// Admit a probe of the layer above (a fallback chain): like [`try_acquire`](Self::try_acquire),
    /// except that OPEN, before or after its deadline, turns HALF_OPEN at once and this call
    /// takes one of its probe permits.
    pub(crate) fn try_acquire_probe(self: &Arc<Self>) -> Result<CallPermit, BreakerOpen> {
        self.acquire(|| true)
    }

    /// Admit a call or reject it. `is_probe` says whether the call is a probe of the layer above;
    /// it is asked only when the breaker is OPEN (the only state where the answer matters), so a
    /// closed breaker never pays for it.
    #[inline]
    pub(crate) fn acquire(
        self: &Arc<Self>,
        is_probe: impl FnOnce() -> bool,
    ) -> Result<CallPermit, BreakerOpen> {
        let mut now: Option<u64> = None;
        let mut is_probe = Some(is_probe);
        let mut probe = false;
        loop {
            let s = self.state.load(Ordering::Acquire);
            let gen = gen_of(s);
            match phase_of(s) {
                State::Closed | State::MetricsOnly => {
                    let start_ns = if self.needs_clock {
                        *now.get_or_insert_with(|| self.now_ns())
                    } else {
                        0
                    };
                    return Ok(self.permit(gen, PermitKind::Normal, start_ns));
                }
                State::Disabled => return Ok(self.permit(gen, PermitKind::Untracked, 0)),
                State::ForcedOpen => return Err(self.reject_forced(reason_of(s))),
                State::Open => {
                    if let Some(ask) = is_probe.take() {
                        probe = ask();
                    }
                    if probe {
                        // The layer above decided this target is probed now: this call is the
                        // half-open trial, whatever is left of the open period. (If another
                        // thread made a transition first, this one fails and the loop re-reads.)
                        let now = *now.get_or_insert_with(|| self.now_ns());
                        self.transition(State::Open, gen, State::HalfOpen, None, now);
                        continue;
                    }
                    let until = match deadline_of(self.deadline.load(Ordering::Acquire), gen) {
                        Ok(until) => until.unwrap_or(u64::MAX),
                        // A newer transition happened between the two loads.
                        Err(()) => continue,
                    };
                    if self.clock_free(gen) {
                        return Err(self.reject_until(reason_of(s), until));
                    }
                    let now = *now.get_or_insert_with(|| self.now_ns());
                    if now < until || !self.may_half_open() {
                        // Before the deadline; or after it, while another replica probes.
                        return Err(self.reject_until(reason_of(s), until));
                    }
                    self.transition(State::Open, gen, State::HalfOpen, None, now);
                }
                State::HalfOpen => {
                    if let Some(ask) = is_probe.take() {
                        probe = ask();
                    }
                    let now = *now.get_or_insert_with(|| self.now_ns());
                    if let Some(admitted) = self.acquire_half_open(s, probe, now) {
                        return admitted;
                    }
                }
            }
        }
    }

    /// Admit a probe in the HALF_OPEN period read as `s` (or re-open it if its time is up), or
    /// reject the call when every probe permit is taken; `None` when the state changed in the
    /// meantime and must be read again.
    fn acquire_half_open(
        self: &Arc<Self>,
        s: u64,
        probe: bool,
        now: u64,
    ) -> Option<Result<CallPermit, BreakerOpen>> {
        let gen = gen_of(s);
        match deadline_of(self.deadline.load(Ordering::Acquire), gen) {
            Ok(Some(until)) if now >= until => {
                let detail = self.reasons[OpenReason::HalfOpenTimeout as usize].clone();
                self.transition(
                    State::HalfOpen,
                    gen,
                    State::Open,
                    Some((OpenReason::HalfOpenTimeout, detail)),
                    now,
                );
                return None;
            }
            Ok(_) => {}
            Err(()) => return None,
        }
        let tag = tag32(gen);
        let permitted = self.permitted;
        let taken = self
            .half_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let (t, in_flight, successes) = unpack_half_open(w);
                (t == tag && in_flight + successes < permitted)
                    .then(|| pack_half_open(gen, in_flight + 1, successes))
            });
        match taken {
            Ok(_) => {
                if self.state.load(Ordering::Acquire) != s {
                    // The period ended while we took the permit: give it back, retry.
                    self.release_probe(gen);
                    return None;
                }
                let kind = if probe {
                    PermitKind::ChainProbe
                } else {
                    PermitKind::Probe
                };
                Some(Ok(self.permit(gen, kind, now)))
            }
            Err(w) if unpack_half_open(w).0 != tag => None,
            Err(_) => Some(Err(self.reject_half_open_full())),
        }
    }

    fn permit(self: &Arc<Self>, gen: u64, kind: PermitKind, start_ns: u64) -> CallPermit {
        CallPermit {
            breaker: Arc::clone(self),
            gen,
            kind,
            start_ns,
            latency_ns: None,
            done: false,
        }
    }

    /// Whether a rejection in open generation `gen` may skip the clock: its timer has not
    /// fired (so the period is not over), and this is not the thread's periodic clock check.
    pub(super) fn clock_free(&self, gen: u64) -> bool {
        self.clock_free.load(Ordering::Acquire) == gen && !clock_check_due()
    }

    /// Count a rejection in `state` and take this thread's copy of the cause `index`.
    fn rejection(&self, state: State, index: usize) -> BreakerOpenCause {
        let stripe = stripe();
        self.not_permitted.increment(stripe);
        self.metrics.rejected(state);
        self.causes[stripe % STRIPES][index].clone()
    }

    /// Reject in OPEN, which lets a probe through at `until` (ns since `base`).
    fn reject_until(&self, reason: OpenReason, until: u64) -> BreakerOpen {
        let cause = self.rejection(State::Open, reason as usize);
        BreakerOpen::until(cause, self.base + Duration::from_nanos(until))
    }

    fn reject_forced(&self, reason: OpenReason) -> BreakerOpen {
        let cause = self.rejection(State::ForcedOpen, reason as usize);
        BreakerOpen::from_cause(cause, self.config.max_open_duration())
    }

    fn reject_half_open_full(&self) -> BreakerOpen {
        let cause = self.rejection(State::HalfOpen, HALF_OPEN_FULL);
        BreakerOpen::from_cause(cause, Duration::ZERO)
    }

    /// Give back a probe permit of generation `gen` (no-op if that period is over).
    pub(super) fn release_probe(&self, gen: u64) {
        let tag = tag32(gen);
        let _ = self
            .half_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let (t, in_flight, successes) = unpack_half_open(w);
                (t == tag && in_flight > 0).then(|| pack_half_open(gen, in_flight - 1, successes))
            });
    }
}

/// Permission for one call, from [`BreakerHandle::try_acquire`](crate::BreakerHandle::try_acquire).
///
/// Report how the call went with [`record`](Self::record). Dropping the permit without recording
/// (the call was cancelled) records nothing and gives a half-open probe permit back.
///
/// Holding a permit while the outcome is not known yet (for a streamed response, until the
/// stream ends) is how a layer records an outcome late.
#[must_use = "a permit records nothing unless `record` is called"]
pub struct CallPermit {
    breaker: Arc<Breaker>,
    gen: u64,
    kind: PermitKind,
    start_ns: u64,
    latency_ns: Option<u64>,
    done: bool,
}

impl CallPermit {
    /// Record the outcome of the call.
    pub fn record(mut self, outcome: Outcome) {
        self.done = true;
        self.breaker
            .complete(self.gen, self.kind, self.start_ns, self.latency_ns, outcome);
    }

    /// Fix the call's latency (for the slow-call rule) at now, before its outcome is known: a
    /// streamed answer is judged slow by its time to first event, not by how long it streams.
    pub fn freeze_latency(&mut self) {
        if self.breaker.needs_clock {
            self.latency_ns = Some(self.breaker.now_ns().saturating_sub(self.start_ns));
        }
    }

    /// Whether this permit is one of the half-open probes.
    pub fn is_probe(&self) -> bool {
        self.kind.is_probe()
    }

    /// The breaker's name.
    pub fn breaker(&self) -> &str {
        self.breaker.name()
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        if !self.done && self.kind.is_probe() {
            self.breaker.release_probe(self.gen);
        }
    }
}

impl fmt::Debug for CallPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPermit")
            .field("breaker", &self.breaker.name())
            .field("generation", &self.gen)
            .field("probe", &self.is_probe())
            .finish()
    }
}
