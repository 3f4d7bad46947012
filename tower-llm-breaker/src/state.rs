//! The breaker's state machine.
//!
//! # Layout
//!
//! Everything a call touches is an atomic; a mutex (`cold`) is taken only by transitions, which
//! are rare, and by the time-based window.
//!
//! | word | bits | written by |
//! |---|---|---|
//! | `state` | `[generation:58 \| reason:3 \| phase:3]` | transitions only, under `cold`, with `Release` |
//! | `deadline` | `[tag:24 \| ms since creation:40]` | transitions, before `state` is published |
//! | `half_open` | `[tag:32 \| in flight:16 \| successes:16]` | probe admission / completion (CAS) |
//! | `consecutive` | `[tag:32 \| failures:32]` | every recorded call in CLOSED / METRICS_ONLY |
//! | `clock_free` | the open generation whose rejections skip the clock, or 0 | the OPEN transition; cleared by its timer ([`crate::open_timer`]) |
//!
//! Every transition starts a new *generation*. A permit remembers the generation it was admitted
//! under, and its outcome is applied only if that generation is still current: a call admitted
//! before the breaker opened cannot count against the next CLOSED period, and a probe of a
//! finished HALF_OPEN period cannot close the breaker. Tagged words (`half_open`, `consecutive`,
//! the windows) are reset lazily by the generation change, so a transition never has to race a
//! completing call to clear them.
//!
//! A transition takes `cold`, re-reads `state`, checks it is still the state the caller decided
//! on (so of many callers racing to trip the breaker exactly one does), writes the auxiliary
//! words, and publishes the new `state` with `Release`; readers load `state` with `Acquire` and
//! so see the auxiliary words of that generation (their tags are checked anyway).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tower_llm_core::{BreakerOpen, BreakerOpenCause, Classification, ErrorKind, KindSet, Origin};

use crate::config::{CircuitBreakerConfig, SlidingWindow};
use crate::metrics::BreakerMetrics;
use crate::open_timer::{self, Armed, ClockFreeFlag, OpenTimer};
use crate::sync::{
    clock_check_due, lock, stripe, AtomicU64, CachePadded, Mutex, Ordering, StripedCounter, STRIPES,
};
use crate::window::{CountWindow, Sample, TimeWindow, Totals, Window};

/// The state of a circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls pass and their outcomes are recorded; a trip condition opens the breaker.
    Closed,
    /// Calls are rejected with [`BreakerOpen`] until the open duration has passed.
    Open,
    /// A limited number of probes pass; the breaker closes when they all succeed and re-opens
    /// when one fails.
    HalfOpen,
    /// Calls are rejected until the breaker is reset by hand.
    ForcedOpen,
    /// Calls pass and nothing is recorded.
    Disabled,
    /// Calls pass and outcomes are recorded (rates, metrics), but the breaker never opens.
    MetricsOnly,
}

impl State {
    const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    /// A stable `snake_case` name (metrics labels, logs, snapshots).
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
        }
    }

    /// The value of the `tower_llm_breaker_state` gauge: 0 closed, 1 open, 2 half-open,
    /// 3 forced open, 4 disabled, 5 metrics only.
    pub const fn gauge_value(self) -> f64 {
        self as u8 as f64
    }

    /// Whether calls are rejected in this state (half-open rejects only beyond its probes).
    pub const fn rejects(self) -> bool {
        matches!(self, State::Open | State::ForcedOpen)
    }

    fn from_bits(bits: u64) -> State {
        State::ALL
            .get(usize::try_from(bits).unwrap_or(0))
            .copied()
            .unwrap_or(State::Closed)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a breaker opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenReason {
    /// The consecutive-failures condition.
    ConsecutiveFailures,
    /// The failure rate over the window reached its threshold.
    FailureRate,
    /// The slow-call rate over the window reached its threshold.
    SlowCallRate,
    /// A half-open probe failed (or was slow).
    ProbeFailed,
    /// The breaker stayed half-open longer than the configured maximum wait.
    HalfOpenTimeout,
    /// Opened by hand ([`BreakerHandle::trip`](crate::BreakerHandle::trip)).
    Manual,
    /// Forced open by hand ([`BreakerHandle::force_open`](crate::BreakerHandle::force_open)).
    Forced,
}

impl OpenReason {
    const ALL: [OpenReason; 7] = [
        OpenReason::ConsecutiveFailures,
        OpenReason::FailureRate,
        OpenReason::SlowCallRate,
        OpenReason::ProbeFailed,
        OpenReason::HalfOpenTimeout,
        OpenReason::Manual,
        OpenReason::Forced,
    ];

    /// A stable `snake_case` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            OpenReason::ConsecutiveFailures => "consecutive_failures",
            OpenReason::FailureRate => "failure_rate",
            OpenReason::SlowCallRate => "slow_call_rate",
            OpenReason::ProbeFailed => "probe_failed",
            OpenReason::HalfOpenTimeout => "half_open_timeout",
            OpenReason::Manual => "manual",
            OpenReason::Forced => "forced",
        }
    }

    fn from_bits(bits: u64) -> OpenReason {
        OpenReason::ALL
            .get(usize::try_from(bits).unwrap_or(0))
            .copied()
            .unwrap_or(OpenReason::Manual)
    }
}

impl fmt::Display for OpenReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a finished call means to the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed in a way that says the target is unhealthy.
    Failure(ErrorKind),
    /// The call says nothing about the target's health (a 400, a 429, a local rejection):
    /// not counted either way; a half-open probe gives its permit back.
    Ignored,
}

impl Outcome {
    /// What `classification` means to a breaker counting the upstream failures of `failures`
    /// (the rule of [`CircuitBreakerLayerBuilder::failures`](crate::CircuitBreakerLayerBuilder::failures)):
    /// a success is a success; a failure of a kind in `failures` that came from the upstream
    /// ([`Origin::Upstream`]) is a failure; anything else (another kind, a local rejection by a
    /// layer below) is ignored.
    ///
    /// ```
    /// use tower_llm_breaker::Outcome;
    /// use tower_llm_core::{Classification, ErrorKind, Failure, KindSet};
    ///
    /// let failures = KindSet::counts_against_breaker();
    /// let overloaded = Classification::Failure(Failure::new(ErrorKind::Overloaded));
    /// let limited = Classification::Failure(Failure::new(ErrorKind::RateLimited));
    /// let rejected = Classification::Failure(Failure::local(ErrorKind::Overloaded));
    /// assert_eq!(Outcome::classify(&overloaded, failures), Outcome::Failure(ErrorKind::Overloaded));
    /// assert_eq!(Outcome::classify(&limited, failures), Outcome::Ignored);
    /// assert_eq!(Outcome::classify(&rejected, failures), Outcome::Ignored);
    /// assert_eq!(Outcome::classify(&Classification::Success, failures), Outcome::Success);
    /// ```
    pub fn classify(classification: &Classification, failures: KindSet) -> Outcome {
        match classification {
            Classification::Success => Outcome::Success,
            Classification::Failure(f)
                if f.origin == Origin::Upstream && failures.contains(f.kind) =>
            {
                Outcome::Failure(f.kind)
            }
            Classification::Failure(_) => Outcome::Ignored,
        }
    }
}

/// A transition, as given to state-change listeners.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StateChange {
    /// The breaker's name (its key, for a keyed breaker).
    pub breaker: Arc<str>,
    /// The state it left.
    pub from: State,
    /// The state it entered.
    pub to: State,
    /// Why it opened (when `to` is open or forced open).
    pub reason: Option<OpenReason>,
    /// The reason in words, with the figures that tripped it.
    pub detail: Option<Arc<str>>,
    /// How long it stays open (when `to` is open).
    pub open_for: Option<Duration>,
    /// The generation entered: increases by one per transition.
    pub generation: u64,
}

pub(crate) type Listener = Arc<dyn Fn(&StateChange) + Send + Sync>;

// ---- word packing ----

const PHASE_BITS: u32 = 3;
const REASON_BITS: u32 = 3;
const GEN_SHIFT: u32 = PHASE_BITS + REASON_BITS;

fn pack_state(state: State, reason: OpenReason, gen: u64) -> u64 {
    (gen << GEN_SHIFT) | ((reason as u64) << PHASE_BITS) | state as u64
}

fn phase_of(w: u64) -> State {
    State::from_bits(w & ((1 << PHASE_BITS) - 1))
}

fn reason_of(w: u64) -> OpenReason {
    OpenReason::from_bits((w >> PHASE_BITS) & ((1 << REASON_BITS) - 1))
}

fn gen_of(w: u64) -> u64 {
    w >> GEN_SHIFT
}

const DEADLINE_MS_BITS: u32 = 40;
const DEADLINE_MS_MASK: u64 = (1 << DEADLINE_MS_BITS) - 1;
const NO_DEADLINE: u64 = DEADLINE_MS_MASK;

fn pack_deadline(gen: u64, ms: u64) -> u64 {
    ((gen & 0xFF_FFFF) << DEADLINE_MS_BITS) | ms.min(NO_DEADLINE)
}

/// The deadline in nanoseconds since creation, if the word belongs to `gen` and has one.
fn deadline_of(w: u64, gen: u64) -> Result<Option<u64>, ()> {
    if w >> DEADLINE_MS_BITS != gen & 0xFF_FFFF {
        return Err(());
    }
    let ms = w & DEADLINE_MS_MASK;
    Ok((ms != NO_DEADLINE).then(|| ms.saturating_mul(1_000_000)))
}

fn tag32(gen: u64) -> u64 {
    gen & 0xFFFF_FFFF
}

fn pack_half_open(gen: u64, in_flight: u64, successes: u64) -> u64 {
    (tag32(gen) << 32) | ((in_flight & 0xFFFF) << 16) | (successes & 0xFFFF)
}

fn unpack_half_open(w: u64) -> (u64, u64, u64) {
    (w >> 32, (w >> 16) & 0xFFFF, w & 0xFFFF)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

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
    fn is_probe(self) -> bool {
        matches!(self, PermitKind::Probe | PermitKind::ChainProbe)
    }
}

/// The data of transitions, behind the cold mutex.
struct Cold {
    /// Consecutive re-opens (the exponent of the open duration).
    reopens: u32,
    rng: u64,
    listeners: Vec<Listener>,
    last_open_reason: Option<Arc<str>>,
    last_transition_ns: u64,
    /// The timer of the current open period (see [`open_timer`]); replaced by every transition.
    open_timer: Option<OpenTimer>,
    /// The runtime that tried to arm a timer has none: rejections always read the clock.
    timers_disabled: bool,
}

/// One circuit breaker. Shared through `Arc` by every clone of the service and by its handles.
pub(crate) struct Breaker {
    pub(crate) config: CircuitBreakerConfig,
    base: Instant,
    /// Whether a CLOSED call must read the clock (slow calls or a time window).
    needs_clock: bool,
    slow_ns: Option<u64>,
    permitted: u64,
    state: CachePadded<AtomicU64>,
    deadline: CachePadded<AtomicU64>,
    half_open: CachePadded<AtomicU64>,
    consecutive: CachePadded<AtomicU64>,
    window: Window,
    /// Rejected calls: striped, because every rejection adds to it and rejections must stay cheap
    /// when many threads hit an open breaker.
    not_permitted: StripedCounter,
    ignored: CachePadded<AtomicU64>,
    cold: Mutex<Cold>,
    reasons: [Arc<str>; 7],
    /// What a rejection carries, per reason (index 7: half-open and full), one table per stripe:
    /// a rejection clones one `Arc` that the other threads' rejections do not touch.
    causes: [Vec<BreakerOpenCause>; STRIPES],
    /// The generation whose rejections need no clock read (see [`open_timer`]).
    clock_free: ClockFreeFlag,
    pub(crate) metrics: BreakerMetrics,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.load(Ordering::Acquire);
        f.debug_struct("Breaker")
            .field("name", &self.config.name())
            .field("state", &phase_of(s))
            .field("generation", &gen_of(s))
            .finish_non_exhaustive()
    }
}

impl Breaker {
    pub(crate) fn new(config: CircuitBreakerConfig) -> Self {
        let c = &config.inner;
        let (window, window_words) = match c.window {
            SlidingWindow::Count(n) => (
                Window::Count(CountWindow::new(n)),
                format!("the last {n} calls"),
            ),
            SlidingWindow::Time(d) => (
                Window::Time(TimeWindow::new(d.as_secs())),
                format!("the calls of the last {}s", d.as_secs()),
            ),
        };
        let pct = |r: f64| format!("{}%", (r * 1000.0).round() / 10.0);
        let reasons: [Arc<str>; 7] = [
            Arc::from(format!(
                "{} consecutive failures",
                c.consecutive_failures.unwrap_or(0)
            )),
            Arc::from(format!(
                "failure rate at or above {} of {window_words}",
                pct(c.failure_rate_threshold.unwrap_or(1.0))
            )),
            Arc::from(format!(
                "slow-call rate (calls slower than {:?}) at or above {} of {window_words}",
                c.slow_call_duration.unwrap_or_default(),
                pct(c.slow_call_rate_threshold)
            )),
            Arc::from("a half-open probe failed"),
            Arc::from(format!(
                "half-open probes did not succeed within {:?}",
                c.max_wait_in_half_open.unwrap_or_default()
            )),
            Arc::from("opened by hand"),
            Arc::from("forced open"),
        ];
        let half_open_full: Arc<str> = Arc::from(format!(
            "half-open: all {} probes are in flight",
            c.permitted_calls_in_half_open
        ));
        let causes = std::array::from_fn(|_| {
            BreakerOpenCause::for_reasons(
                Arc::clone(&c.name),
                reasons.iter().chain([&half_open_full]).cloned(),
            )
        });
        let seed = c.seed.unwrap_or_else(random_seed);
        let needs_clock =
            c.slow_call_duration.is_some() || matches!(c.window, SlidingWindow::Time(_));
        let metrics = BreakerMetrics::new(&c.name);
        metrics.set_state(State::Closed);
        Breaker {
            needs_clock,
            slow_ns: c.slow_call_duration.map(nanos),
            permitted: u64::from(c.permitted_calls_in_half_open),
            base: Instant::now(),
            state: CachePadded(AtomicU64::new(pack_state(
                State::Closed,
                OpenReason::Manual,
                1,
            ))),
            deadline: CachePadded(AtomicU64::new(pack_deadline(1, NO_DEADLINE))),
            half_open: CachePadded(AtomicU64::new(0)),
            consecutive: CachePadded(AtomicU64::new(0)),
            window,
            not_permitted: StripedCounter::default(),
            ignored: CachePadded(AtomicU64::new(0)),
            cold: Mutex::new(Cold {
                reopens: 0,
                rng: seed,
                listeners: Vec::new(),
                last_open_reason: None,
                last_transition_ns: 0,
                open_timer: None,
                timers_disabled: false,
            }),
            reasons,
            causes,
            clock_free: Arc::new(CachePadded(AtomicU64::new(0))),
            metrics,
            config,
        }
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.config.inner.name
    }

    pub(crate) fn now_ns(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.base))
    }

    /// The current state (no time-based transition is applied: OPEN turns HALF_OPEN when the
    /// next call arrives after the open duration).
    pub(crate) fn state(&self) -> State {
        phase_of(self.state.load(Ordering::Acquire))
    }

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
                    if now < until {
                        return Err(self.reject_until(reason_of(s), until));
                    }
                    self.transition(State::Open, gen, State::HalfOpen, None, now);
                }
                State::HalfOpen => {
                    if let Some(ask) = is_probe.take() {
                        probe = ask();
                    }
                    let now = *now.get_or_insert_with(|| self.now_ns());
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
                            continue;
                        }
                        Ok(_) => {}
                        Err(()) => continue,
                    }
                    let tag = tag32(gen);
                    let permitted = self.permitted;
                    let taken =
                        self.half_open
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
                                continue;
                            }
                            let kind = if probe {
                                PermitKind::ChainProbe
                            } else {
                                PermitKind::Probe
                            };
                            return Ok(self.permit(gen, kind, now));
                        }
                        Err(w) if unpack_half_open(w).0 != tag => continue,
                        Err(_) => return Err(self.reject_half_open_full()),
                    }
                }
            }
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
    fn clock_free(&self, gen: u64) -> bool {
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
    fn release_probe(&self, gen: u64) {
        let tag = tag32(gen);
        let _ = self
            .half_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let (t, in_flight, successes) = unpack_half_open(w);
                (t == tag && in_flight > 0).then(|| pack_half_open(gen, in_flight - 1, successes))
            });
    }

    /// Apply the outcome of a permit.
    fn complete(
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
            State::Open => {
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
                open_for = Some(duration);
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
        self.metrics.transition(from, to);
        crate::metrics::trace_transition(&change);
        for listener in listeners {
            // A panicking listener must not unwind into the call that triggered the transition.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener(&change))).is_err()
            {
                tracing::error!(breaker = %change.breaker, "a circuit-breaker state listener panicked");
            }
        }
        true
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

    pub(crate) fn add_listener(&self, listener: Listener) {
        lock(&self.cold).listeners.push(listener);
    }

    /// A consistent-enough view for handles and snapshots.
    pub(crate) fn view(&self) -> View {
        let now = self.now_ns();
        let s = self.state.load(Ordering::Acquire);
        let (state, gen) = (phase_of(s), gen_of(s));
        let totals = self.window.totals(gen, now);
        let w = self.consecutive.load(Ordering::Acquire);
        let consecutive = if w >> 32 == tag32(gen) {
            w & 0xFFFF_FFFF
        } else {
            0
        };
        let (t, in_flight, successes) = unpack_half_open(self.half_open.load(Ordering::Acquire));
        let (in_flight, successes) = if state == State::HalfOpen && t == tag32(gen) {
            (in_flight, successes)
        } else {
            (0, 0)
        };
        let retry_after = match state {
            State::Open => match deadline_of(self.deadline.load(Ordering::Acquire), gen) {
                Ok(Some(until)) => Some(Duration::from_nanos(until.saturating_sub(now))),
                _ => None,
            },
            _ => None,
        };
        let cold = lock(&self.cold);
        View {
            state,
            generation: gen,
            totals,
            consecutive,
            half_open_in_flight: in_flight,
            half_open_successes: successes,
            retry_after,
            reason: matches!(state, State::Open | State::ForcedOpen).then(|| reason_of(s)),
            reopens: cold.reopens,
            last_open_reason: cold.last_open_reason.clone(),
            since_transition: Duration::from_nanos(now.saturating_sub(cold.last_transition_ns)),
            not_permitted: self.not_permitted.sum(),
            ignored: self.ignored.load(Ordering::Relaxed),
        }
    }
}

/// What [`Breaker::view`] reads.
pub(crate) struct View {
    pub(crate) state: State,
    pub(crate) generation: u64,
    pub(crate) totals: Totals,
    pub(crate) consecutive: u64,
    pub(crate) half_open_in_flight: u64,
    pub(crate) half_open_successes: u64,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) reason: Option<OpenReason>,
    pub(crate) reopens: u32,
    pub(crate) last_open_reason: Option<Arc<str>>,
    pub(crate) since_transition: Duration,
    pub(crate) not_permitted: u64,
    pub(crate) ignored: u64,
}

/// splitmix64: a uniform number in `[0, 1)`.
fn next_unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0x5EED_u64)
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
