//! `loom` checks of the transitions that race: every interleaving of two threads is explored.
//!
//! Run with
//!
//! ```text
//! RUSTFLAGS="--cfg tower_llm_loom" CARGO_TARGET_DIR=target/loom cargo test -p tower-llm-breaker --release --test loom
//! ```
//!
//! Under `--cfg tower_llm_loom` the crate's atomics and mutexes are loom's models
//! (`src/sync.rs`); without it this file compiles to nothing. The cfg is not the customary
//! `loom`: tokio compiles `tokio::net` out under `cfg(loom)`, which breaks hyper-util, a
//! dependency of `tower-llm-core`.
#![cfg(tower_llm_loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use tower_llm_breaker::{BreakerHandle, CircuitBreakerConfig, Outcome, SlidingWindow, State};
use tower_llm_core::ErrorKind;

const FAIL: Outcome = Outcome::Failure(ErrorKind::ServerError);

fn model(f: impl Fn() + Sync + Send + 'static) {
    // Every interleaving unless LOOM_MAX_PREEMPTIONS bounds the search.
    loom::model::Builder::new().check(f);
}

fn counting(handle: &BreakerHandle) -> Arc<AtomicUsize> {
    let transitions = Arc::new(AtomicUsize::new(0));
    let seen = transitions.clone();
    handle.on_state_change(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    transitions
}

fn config() -> tower_llm_breaker::CircuitBreakerConfigBuilder {
    CircuitBreakerConfig::builder()
        .name("loom")
        .sliding_window(SlidingWindow::Count(4))
        .minimum_calls(2)
}

/// Two failures complete at once and both meet the trip condition: exactly one opens it.
#[test]
fn racing_failures_open_the_breaker_exactly_once() {
    model(|| {
        let handle = BreakerHandle::new(
            config()
                .consecutive_failures(2)
                .no_failure_rate()
                .build()
                .unwrap(),
        );
        let transitions = counting(&handle);
        let a = handle.try_acquire().unwrap();
        let b = handle.try_acquire().unwrap();
        let t = thread::spawn(move || a.record(FAIL));
        b.record(FAIL);
        t.join().unwrap();
        assert_eq!(handle.state(), State::Open);
        assert_eq!(transitions.load(Ordering::SeqCst), 1);
    });
}

/// A success and a failure recorded at once: the window holds exactly both.
#[test]
fn racing_records_keep_the_window_exact() {
    model(|| {
        let handle = BreakerHandle::new(
            config()
                .no_consecutive_failures()
                .failure_rate_threshold(1.0)
                .build()
                .unwrap(),
        );
        let a = handle.try_acquire().unwrap();
        let b = handle.try_acquire().unwrap();
        let t = thread::spawn(move || a.record(Outcome::Success));
        b.record(FAIL);
        t.join().unwrap();
        let counts = handle.counts();
        assert_eq!((counts.calls, counts.failures), (2, 1));
        assert_eq!(handle.state(), State::Closed);
    });
}

/// Two callers race for the only half-open probe permit: exactly one gets it.
#[test]
fn half_open_admits_one_of_two_racing_callers() {
    model(|| {
        let handle = BreakerHandle::new(config().permitted_calls_in_half_open(1).build().unwrap());
        handle.transition_to(State::HalfOpen);
        let other = handle.clone();
        // Both keep their permits until the end: a dropped permit would be given back.
        let t = thread::spawn(move || other.try_acquire());
        let mine = handle.try_acquire();
        let theirs = t.join().unwrap();
        assert_eq!(
            usize::from(mine.is_ok()) + usize::from(theirs.is_ok()),
            1,
            "{mine:?} {theirs:?}"
        );
        let winner = mine.or(theirs).unwrap();
        assert!(winner.is_probe());
        assert_eq!(handle.snapshot().half_open_in_flight, 1);
    });
}

/// A probe is cancelled while another caller asks for a permit: the permit is either still
/// taken (rejected) or given back (admitted), never lost and never double-counted.
#[test]
fn a_cancelled_probe_and_a_new_caller_race() {
    model(|| {
        let handle = BreakerHandle::new(config().permitted_calls_in_half_open(1).build().unwrap());
        handle.transition_to(State::HalfOpen);
        let probe = handle.try_acquire().unwrap();
        let t = thread::spawn(move || drop(probe));
        let second = handle.try_acquire();
        t.join().unwrap();
        let in_flight = handle.snapshot().half_open_in_flight;
        match second {
            Ok(permit) => {
                assert!(permit.is_probe());
                assert_eq!(in_flight, 1);
                permit.record(Outcome::Success);
                assert_eq!(handle.state(), State::Closed);
            }
            Err(open) => {
                assert_eq!(open.retry_after(), std::time::Duration::ZERO);
                assert_eq!(in_flight, 0, "the cancelled probe's permit came back");
                handle.try_acquire().unwrap().record(Outcome::Success);
                assert_eq!(handle.state(), State::Closed);
            }
        }
    });
}

/// One probe succeeds while the other fails: the breaker re-opens exactly once and never closes.
#[test]
fn a_failing_probe_wins_over_a_racing_success() {
    model(|| {
        let handle = BreakerHandle::new(config().permitted_calls_in_half_open(2).build().unwrap());
        handle.transition_to(State::HalfOpen);
        let transitions = counting(&handle);
        let ok = handle.try_acquire().unwrap();
        let bad = handle.try_acquire().unwrap();
        let t = thread::spawn(move || ok.record(Outcome::Success));
        bad.record(FAIL);
        t.join().unwrap();
        assert_eq!(handle.state(), State::Open);
        assert_eq!(transitions.load(Ordering::SeqCst), 1);
        assert_eq!(handle.snapshot().reopens, 1);
    });
}

/// A manual reset races with a failure that trips the breaker: whichever wins, the state is
/// consistent and a closed breaker's window holds at most that one call.
#[test]
fn reset_races_with_a_trip() {
    model(|| {
        let handle = BreakerHandle::new(config().consecutive_failures(1).build().unwrap());
        let permit = handle.try_acquire().unwrap();
        let other = handle.clone();
        let t = thread::spawn(move || other.reset());
        permit.record(FAIL);
        t.join().unwrap();
        match handle.state() {
            State::Open => assert_eq!(handle.counts().calls, 0),
            State::Closed => assert_eq!(
                handle.counts().calls,
                0,
                "the failure belonged to the old period"
            ),
            other => panic!("unexpected state {other:?}"),
        }
    });
}

/// Two probes of a layer above race on an open breaker (open period not over): it turns
/// half-open exactly once, and exactly one of them gets the only probe permit.
#[test]
fn racing_chain_probes_open_one_half_open_period() {
    model(|| {
        let handle = BreakerHandle::new(config().permitted_calls_in_half_open(1).build().unwrap());
        handle.trip();
        let transitions = counting(&handle);
        let other = handle.clone();
        let t = thread::spawn(move || other.try_acquire_probe());
        let mine = handle.try_acquire_probe();
        let theirs = t.join().unwrap();
        assert_eq!(
            usize::from(mine.is_ok()) + usize::from(theirs.is_ok()),
            1,
            "{mine:?} {theirs:?}"
        );
        assert_eq!(
            transitions.load(Ordering::SeqCst),
            1,
            "open -> half-open once"
        );
        assert_eq!(handle.state(), State::HalfOpen);
        let winner = mine.or(theirs).unwrap();
        assert!(winner.is_probe());
        winner.record(Outcome::Success);
        assert_eq!(handle.state(), State::Closed);
    });
}
