//! Model-based property test: random sequences of calls, probes of a layer above
//! ([`BreakerHandle::try_acquire_probe`]), outcomes, time steps, cancellations and manual
//! operations, applied both to the breaker (through its public permit API, on a paused
//! tokio clock) and to a small reference model written independently of the implementation
//! (plain `VecDeque`s and integers, no atomics, no generations). After every step they must
//! agree on the decision, the state, the window, the counters and `retry_after`.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use tower_llm_breaker::{
    BreakerHandle, CallPermit, CircuitBreakerConfig, Outcome, SlidingWindow, State,
};
use tower_llm_core::ErrorKind;

#[derive(Clone, Debug)]
struct Cfg {
    /// `Ok(calls)` for a count window, `Err(seconds)` for a time window.
    window: Result<usize, u64>,
    min_calls: u64,
    failure_rate: Option<f64>,
    consecutive: Option<u64>,
    slow: Option<(u64, f64)>,
    open_ms: u64,
    multiplier: u64,
    max_open_ms: u64,
    probes: u64,
    max_wait_ms: Option<u64>,
}

impl Cfg {
    fn build(&self) -> CircuitBreakerConfig {
        let mut b = CircuitBreakerConfig::builder()
            .name("model")
            .sliding_window(match self.window {
                Ok(n) => SlidingWindow::Count(n as u32),
                Err(s) => SlidingWindow::Time(Duration::from_secs(s)),
            })
            .minimum_calls(self.min_calls as u32)
            .open_duration(Duration::from_millis(self.open_ms))
            .open_duration_multiplier(self.multiplier as f64)
            .max_open_duration(Duration::from_millis(self.max_open_ms))
            .permitted_calls_in_half_open(self.probes as u32);
        b = match self.failure_rate {
            Some(r) => b.failure_rate_threshold(r),
            None => b.no_failure_rate(),
        };
        b = match self.consecutive {
            Some(n) => b.consecutive_failures(n as u32),
            None => b.no_consecutive_failures(),
        };
        if let Some((ms, rate)) = self.slow {
            b = b.slow_calls(Duration::from_millis(ms), rate);
        }
        if let Some(ms) = self.max_wait_ms {
            b = b.max_wait_in_half_open(Duration::from_millis(ms));
        }
        b.build().expect("valid config")
    }
}

fn cfg() -> impl Strategy<Value = Cfg> {
    let window = prop_oneof![(1usize..=6).prop_map(Ok), (1u64..=4).prop_map(Err)];
    (
        window,
        any::<prop::sample::Index>(),
        prop::option::of(prop::sample::select(vec![0.0, 0.25, 0.5, 0.75, 1.0])),
        prop::option::of(1u64..=4),
        prop::option::of((
            prop::sample::select(vec![500u64, 1000, 2000]),
            prop::sample::select(vec![0.0, 0.5, 1.0]),
        )),
        prop::sample::select(vec![500u64, 1000, 1500, 5000]),
        1u64..=3,
        prop::sample::select(vec![1u64, 4, 10]),
        1u64..=3,
        prop::option::of(prop::sample::select(vec![1000u64, 4000])),
    )
        .prop_map(
            |(
                window,
                min,
                failure_rate,
                consecutive,
                slow,
                open_ms,
                multiplier,
                cap,
                probes,
                max_wait_ms,
            )| {
                let max_min = window.unwrap_or(8);
                Cfg {
                    window,
                    min_calls: 1 + min.index(max_min) as u64,
                    failure_rate,
                    consecutive,
                    slow,
                    open_ms,
                    multiplier,
                    max_open_ms: open_ms * cap,
                    probes,
                    max_wait_ms,
                }
            },
        )
}

#[derive(Clone, Copy, Debug)]
enum Done {
    Success,
    Failure,
    Ignored,
}

#[derive(Clone, Copy, Debug)]
enum Manual {
    Reset,
    Trip,
    ForceOpen,
    Disable,
    MetricsOnly,
    HalfOpen,
}

#[derive(Clone, Debug)]
enum Op {
    Acquire,
    /// A probe of the layer above (a fallback chain): admitted even while open.
    AcquireProbe,
    Complete(prop::sample::Index, Done),
    Cancel(prop::sample::Index),
    Advance(u64),
    Manual(Manual),
}

fn op() -> impl Strategy<Value = Op> {
    let done = prop_oneof![
        Just(Done::Success),
        Just(Done::Failure),
        Just(Done::Ignored)
    ];
    let manual = prop_oneof![
        Just(Manual::Reset),
        Just(Manual::Trip),
        Just(Manual::ForceOpen),
        Just(Manual::Disable),
        Just(Manual::MetricsOnly),
        Just(Manual::HalfOpen),
    ];
    prop_oneof![
        8 => Just(Op::Acquire),
        3 => Just(Op::AcquireProbe),
        8 => (any::<prop::sample::Index>(), done).prop_map(|(i, d)| Op::Complete(i, d)),
        2 => any::<prop::sample::Index>().prop_map(Op::Cancel),
        4 => prop_oneof![Just(0u64), 1u64..=700, Just(1000), 1001u64..=6000].prop_map(Op::Advance),
        1 => manual.prop_map(Op::Manual),
    ]
}

// ---------------- the reference model ----------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Closed,
    Open {
        until: u64,
    },
    HalfOpen {
        deadline: Option<u64>,
        in_flight: u64,
        successes: u64,
    },
    ForcedOpen,
    Disabled,
    MetricsOnly,
}

#[derive(Clone, Copy, Debug)]
struct Call {
    /// Which period admitted it (every transition starts a new period).
    period: u64,
    probe: bool,
    /// The layer above's probe: its success closes the breaker at once.
    decisive: bool,
    tracked: bool,
    start: u64,
}

#[derive(Debug)]
struct Model {
    cfg: Cfg,
    now: u64,
    phase: Phase,
    period: u64,
    reopens: u64,
    /// (second, failure, slow) of every call recorded in this period, oldest first.
    records: VecDeque<(u64, bool, bool)>,
    consecutive: u64,
}

#[derive(Debug, PartialEq)]
enum Decision {
    Admit { probe: bool },
    Reject { retry_after_ms: u64 },
}

impl Model {
    fn new(cfg: Cfg) -> Self {
        Model {
            cfg,
            now: 0,
            phase: Phase::Closed,
            period: 0,
            reopens: 0,
            records: VecDeque::new(),
            consecutive: 0,
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.period += 1;
        self.records.clear();
        self.consecutive = 0;
        self.phase = phase;
    }

    fn open(&mut self) {
        self.reopens = match self.phase {
            Phase::HalfOpen { .. } => self.reopens + 1,
            Phase::Open { .. } => self.reopens,
            _ => 0,
        };
        let mut ms = self.cfg.open_ms as u128;
        for _ in 0..self.reopens {
            ms = (ms * self.cfg.multiplier as u128).min(self.cfg.max_open_ms as u128);
        }
        let ms = ms.min(self.cfg.max_open_ms as u128) as u64;
        self.enter(Phase::Open {
            until: self.now + ms,
        });
    }

    fn half_open(&mut self) {
        let deadline = self.cfg.max_wait_ms.map(|w| self.now + w);
        self.enter(Phase::HalfOpen {
            deadline,
            in_flight: 0,
            successes: 0,
        });
    }

    fn close(&mut self) {
        self.reopens = 0;
        self.enter(Phase::Closed);
    }

    /// A call (`chain_probe`: the layer above marked it as its probe).
    fn acquire(&mut self, chain_probe: bool) -> (Decision, Option<Call>) {
        loop {
            match self.phase {
                Phase::Closed | Phase::MetricsOnly => {
                    let call = Call {
                        period: self.period,
                        probe: false,
                        decisive: false,
                        tracked: true,
                        start: self.now,
                    };
                    return (Decision::Admit { probe: false }, Some(call));
                }
                Phase::Disabled => {
                    let call = Call {
                        period: self.period,
                        probe: false,
                        decisive: false,
                        tracked: false,
                        start: self.now,
                    };
                    return (Decision::Admit { probe: false }, Some(call));
                }
                Phase::ForcedOpen => {
                    return (
                        Decision::Reject {
                            retry_after_ms: self.cfg.max_open_ms,
                        },
                        None,
                    )
                }
                Phase::Open { until } if self.now < until && !chain_probe => {
                    return (
                        Decision::Reject {
                            retry_after_ms: until - self.now,
                        },
                        None,
                    )
                }
                Phase::Open { .. } => self.half_open(),
                Phase::HalfOpen {
                    deadline: Some(d), ..
                } if self.now >= d => self.open(),
                Phase::HalfOpen {
                    deadline,
                    in_flight,
                    successes,
                } => {
                    if in_flight + successes < self.cfg.probes {
                        self.phase = Phase::HalfOpen {
                            deadline,
                            in_flight: in_flight + 1,
                            successes,
                        };
                        let call = Call {
                            period: self.period,
                            probe: true,
                            decisive: chain_probe,
                            tracked: true,
                            start: self.now,
                        };
                        return (Decision::Admit { probe: true }, Some(call));
                    }
                    return (Decision::Reject { retry_after_ms: 0 }, None);
                }
            }
        }
    }

    /// A probe of the current period gives its permit back.
    fn release(&mut self, call: &Call) {
        if let Phase::HalfOpen {
            deadline,
            in_flight,
            successes,
        } = self.phase
        {
            if call.period == self.period && in_flight > 0 {
                self.phase = Phase::HalfOpen {
                    deadline,
                    in_flight: in_flight - 1,
                    successes,
                };
            }
        }
    }

    fn cancel(&mut self, call: Call) {
        if call.probe {
            self.release(&call);
        }
    }

    fn totals(&self) -> (u64, u64, u64) {
        let recent: Vec<_> = match self.cfg.window {
            Ok(n) => self.records.iter().rev().take(n).collect(),
            Err(secs) => {
                let now_sec = self.now / 1000;
                self.records
                    .iter()
                    .filter(|(sec, _, _)| sec + secs > now_sec)
                    .collect()
            }
        };
        let calls = recent.len() as u64;
        let failures = recent.iter().filter(|r| r.1).count() as u64;
        let slow = recent.iter().filter(|r| r.2).count() as u64;
        (calls, failures, slow)
    }

    fn complete(&mut self, call: Call, done: Done) {
        if !call.tracked {
            return;
        }
        let failure = match done {
            Done::Ignored => {
                if call.probe {
                    self.release(&call);
                }
                return;
            }
            Done::Success => false,
            Done::Failure => true,
        };
        let slow = self
            .cfg
            .slow
            .is_some_and(|(ms, _)| self.now - call.start >= ms);
        if call.period != self.period {
            return;
        }
        if call.probe {
            let Phase::HalfOpen {
                deadline,
                in_flight,
                successes,
            } = self.phase
            else {
                return;
            };
            if failure || slow {
                self.open();
            } else if in_flight > 0 {
                self.phase = Phase::HalfOpen {
                    deadline,
                    in_flight: in_flight - 1,
                    successes: successes + 1,
                };
                if successes + 1 >= self.cfg.probes || call.decisive {
                    self.close();
                }
            }
            return;
        }
        self.records.push_back((self.now / 1000, failure, slow));
        if let Ok(n) = self.cfg.window {
            while self.records.len() > n {
                self.records.pop_front();
            }
        }
        self.consecutive = if failure { self.consecutive + 1 } else { 0 };
        if self.phase != Phase::Closed {
            return;
        }
        let (calls, failures, slow_calls) = self.totals();
        let trips = self.cfg.consecutive.is_some_and(|n| self.consecutive >= n)
            || (calls >= self.cfg.min_calls
                && (self
                    .cfg
                    .failure_rate
                    .is_some_and(|r| failures > 0 && failures as f64 / calls as f64 >= r)
                    || self.cfg.slow.is_some_and(|(_, r)| {
                        slow_calls > 0 && slow_calls as f64 / calls as f64 >= r
                    })));
        if trips {
            self.open();
        }
    }

    fn manual(&mut self, m: Manual) {
        match m {
            Manual::Reset => self.close(),
            Manual::Trip => self.open(),
            Manual::ForceOpen => self.enter(Phase::ForcedOpen),
            Manual::Disable => self.enter(Phase::Disabled),
            Manual::MetricsOnly => self.enter(Phase::MetricsOnly),
            Manual::HalfOpen => self.half_open(),
        }
    }

    fn state(&self) -> State {
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
            Phase::ForcedOpen => State::ForcedOpen,
            Phase::Disabled => State::Disabled,
            Phase::MetricsOnly => State::MetricsOnly,
        }
    }
}

// ---------------- the comparison ----------------

fn check(model: &Model, handle: &BreakerHandle, step: usize, op: &Op) -> Result<(), TestCaseError> {
    let s = handle.snapshot();
    let ctx = || {
        format!(
            "step {step} ({op:?}) at {} ms; model {model:?}; snapshot {s:?}",
            model.now
        )
    };
    prop_assert_eq!(s.state, model.state(), "state: {}", ctx());
    let (calls, failures, slow) = model.totals();
    prop_assert_eq!(
        (s.calls, s.failures, s.slow_calls),
        (calls, failures, slow),
        "window: {}",
        ctx()
    );
    prop_assert_eq!(
        s.consecutive_failures,
        model.consecutive,
        "consecutive: {}",
        ctx()
    );
    prop_assert_eq!(s.reopens as u64, model.reopens, "reopens: {}", ctx());
    let (in_flight, successes) = match model.phase {
        Phase::HalfOpen {
            in_flight,
            successes,
            ..
        } => (in_flight, successes),
        _ => (0, 0),
    };
    prop_assert_eq!(
        (s.half_open_in_flight, s.half_open_successes),
        (in_flight, successes),
        "half-open: {}",
        ctx()
    );
    let retry = match model.phase {
        Phase::Open { until } => Some(until.saturating_sub(model.now)),
        _ => None,
    };
    prop_assert_eq!(s.retry_after_ms, retry, "retry_after: {}", ctx());
    Ok(())
}

fn run(cfg: Cfg, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let handle = BreakerHandle::new(cfg.build());
        let mut model = Model::new(cfg);
        let mut outstanding: Vec<(CallPermit, Call)> = Vec::new();
        for (step, op) in ops.iter().enumerate() {
            match op {
                Op::Acquire | Op::AcquireProbe => {
                    let chain_probe = matches!(op, Op::AcquireProbe);
                    let (expected, call) = model.acquire(chain_probe);
                    let admitted = if chain_probe {
                        handle.try_acquire_probe()
                    } else {
                        handle.try_acquire()
                    };
                    let actual = match admitted {
                        Ok(permit) => {
                            let probe = permit.is_probe();
                            if let Some(call) = call {
                                outstanding.push((permit, call));
                            }
                            Decision::Admit { probe }
                        }
                        Err(open) => Decision::Reject {
                            retry_after_ms: open.retry_after().as_millis() as u64,
                        },
                    };
                    prop_assert_eq!(actual, expected, "decision at step {}", step);
                }
                Op::Complete(i, done) if !outstanding.is_empty() => {
                    let (permit, call) = outstanding.remove(i.index(outstanding.len()));
                    model.complete(call, *done);
                    permit.record(match done {
                        Done::Success => Outcome::Success,
                        Done::Failure => Outcome::Failure(ErrorKind::ServerError),
                        Done::Ignored => Outcome::Ignored,
                    });
                }
                Op::Cancel(i) if !outstanding.is_empty() => {
                    let (permit, call) = outstanding.remove(i.index(outstanding.len()));
                    model.cancel(call);
                    drop(permit);
                }
                Op::Complete(..) | Op::Cancel(_) => {}
                Op::Advance(ms) => {
                    model.now += ms;
                    tokio::time::advance(Duration::from_millis(*ms)).await;
                }
                Op::Manual(m) => {
                    model.manual(*m);
                    match m {
                        Manual::Reset => handle.reset(),
                        Manual::Trip => handle.trip(),
                        Manual::ForceOpen => handle.force_open(),
                        Manual::Disable => handle.disable(),
                        Manual::MetricsOnly => handle.metrics_only(),
                        Manual::HalfOpen => handle.transition_to(State::HalfOpen),
                    }
                }
            }
            check(&model, &handle, step, op)?;
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn breaker_agrees_with_the_model(cfg in cfg(), ops in prop::collection::vec(op(), 1..160)) {
        run(cfg, ops)?;
    }
}
