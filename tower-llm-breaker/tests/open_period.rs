//! How an open breaker notices the end of its open period in every kind of runtime: the
//! clock-free rejection armed by a timer of the current runtime, a runtime without timers, no
//! runtime, and a runtime that stops driving its timers. Paused time throughout.

use std::time::Duration;

use tower_llm_breaker::{BreakerHandle, CircuitBreakerConfig, State};
use tower_llm_core::BreakerOpen;

fn handle() -> BreakerHandle {
    BreakerHandle::new(
        CircuitBreakerConfig::builder()
            .name("open-period")
            .open_duration(Duration::from_secs(5))
            .build()
            .unwrap(),
    )
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn rejected(handle: &BreakerHandle) -> BreakerOpen {
    match handle.try_acquire() {
        Ok(permit) => panic!("admitted while open: {permit:?}"),
        Err(open) => open,
    }
}

#[test]
fn rejections_end_exactly_at_the_deadline() {
    paused_runtime().block_on(async {
        let handle = handle();
        handle.trip();
        let open = rejected(&handle);
        assert_eq!(open.retry_after(), Duration::from_secs(5));
        tokio::time::advance(Duration::from_millis(4_999)).await;
        // `retry_after` is computed when read: the error made before counts down too.
        assert_eq!(open.retry_after(), Duration::from_millis(1));
        assert_eq!(rejected(&handle).retry_after(), Duration::from_millis(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        let probe = handle.try_acquire().expect("a probe at the deadline");
        assert!(probe.is_probe());
        assert_eq!(handle.state(), State::HalfOpen);
    });
}

#[test]
fn a_runtime_without_timers_still_rejects_and_reads_the_clock() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let handle = handle();
        // Arming the timer fails here (the runtime has no time driver); that must not panic.
        handle.trip();
        let open = rejected(&handle);
        assert!(open.retry_after() > Duration::from_secs(4));
        assert!(open.retry_after() <= Duration::from_secs(5));
        handle.reset();
        handle.trip();
        assert_eq!(rejected(&handle).breaker(), "open-period");
    });
}

#[test]
fn opened_outside_any_runtime_it_reads_the_clock() {
    let handle = handle();
    handle.trip();
    let open = rejected(&handle);
    assert!(open.retry_after() > Duration::from_secs(4));
    assert_eq!(handle.state(), State::Open);
}

/// The runtime that opened the breaker stays alive but is never driven again, while another
/// runtime's callers go on: its timer never fires, yet the breaker reads the clock at least once
/// per 256 rejections on a thread and so lets a probe through.
#[test]
fn a_timer_that_never_fires_cannot_keep_the_breaker_open() {
    let opener = paused_runtime();
    let handle = handle();
    {
        let _entered = opener.enter();
        handle.trip();
    }
    let callers = paused_runtime();
    callers.block_on(async {
        // Well past the deadline on any clock the breaker could be reading.
        tokio::time::advance(Duration::from_secs(3600)).await;
        let mut rejections = 0;
        let probe = loop {
            match handle.try_acquire() {
                Ok(permit) => break permit,
                Err(_) => rejections += 1,
            }
            assert!(rejections < 256, "still open after {rejections} rejections");
        };
        assert!(probe.is_probe());
    });
    drop(opener);
}

#[test]
fn runtime_shutdown_with_a_pending_timer_hands_over_to_the_clock() {
    let handle = handle();
    let first = paused_runtime();
    first.block_on(async { handle.trip() });
    drop(first);
    paused_runtime().block_on(async {
        tokio::time::advance(Duration::from_secs(3600)).await;
        let probe = handle
            .try_acquire()
            .expect("the first call after the deadline probes");
        assert!(probe.is_probe());
    });
}
