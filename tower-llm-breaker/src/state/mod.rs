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

use tokio::time::Instant;
use tower_llm_core::BreakerOpenCause;

use crate::config::{CircuitBreakerConfig, SlidingWindow};
use crate::metrics::BreakerMetrics;
use crate::open_timer::{ClockFreeFlag, OpenTimer};
use crate::sync::{lock, AtomicU64, CachePadded, Mutex, Ordering, StripedCounter, STRIPES};
use crate::window::{CountWindow, TimeWindow, Totals, Window};

mod admit;
mod record;
mod transition;
mod types;
mod word;

pub use admit::CallPermit;
pub(crate) use admit::OpenNow;
pub(crate) use types::Listener;
pub use types::{OpenReason, Outcome, State, StateChange};
use word::{
    deadline_of, gen_of, nanos, pack_deadline, pack_state, phase_of, reason_of, tag32,
    unpack_half_open, NO_DEADLINE,
};

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

    /// A new breaker, registered with the shared state if its configuration has one.
    pub(crate) fn new_arc(config: CircuitBreakerConfig) -> Arc<Self> {
        let breaker = Arc::new(Breaker::new(config));
        breaker.attach_shared();
        breaker
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
}

impl Breaker {
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
