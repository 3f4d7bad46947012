//! The timer that tells an open breaker when rejections must read the clock again.
//!
//! While OPEN, a rejection is a hot path: a failing provider is called in a loop by every
//! client. It needs the clock only to notice that the open period is over. So when the breaker
//! opens inside a Tokio runtime it registers a timer with that runtime's time driver, due 1 ms
//! before the period ends, and sets the *clock-free* flag to the new generation; until the timer
//! fires, a rejection reads no clock. The timer's waker, not a task, clears the flag: the time
//! driver calls it while processing timers, before any task resumes, so a paused-time test that
//! advances to the deadline sees exactly the transitions it would see with a clock read on every
//! call. From then on every call compares the clock with the deadline.
//!
//! Without a runtime (or with one built without timers) no timer is armed and every rejection
//! reads the clock. If the runtime that armed the timer stops driving timers while the breaker is
//! still used from elsewhere, a rejection still reads the clock once every
//! [`CLOCK_CHECK_EVERY`](crate::sync::CLOCK_CHECK_EVERY) calls on each thread, so the breaker
//! cannot stay open for good.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use crate::sync::{AtomicU64, CachePadded, Ordering};

/// The generation whose rejections may skip the clock (0: none). Shared with the timer's waker.
pub(crate) type ClockFreeFlag = Arc<CachePadded<AtomicU64>>;

/// An armed timer; dropping it cancels it (the next transition replaces it).
pub(crate) struct OpenTimer {
    _sleep: Pin<Box<tokio::task::Unconstrained<tokio::time::Sleep>>>,
}

/// What [`arm`] did.
pub(crate) enum Armed {
    /// The timer is registered; rejections of this generation skip the clock until it fires.
    Timer(OpenTimer),
    /// Nothing: no runtime here, or the deadline is too close to be worth it.
    Skipped,
    /// The current runtime has no timers (built without `enable_time`): do not try again.
    TimersDisabled,
}

/// Clears the flag when the timer fires (or when the runtime shuts down with it pending).
struct ClearFlag {
    flag: ClockFreeFlag,
    gen: u64,
}

impl Wake for ClearFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self
            .flag
            .compare_exchange(self.gen, 0, Ordering::Release, Ordering::Relaxed);
    }
}

/// Set `flag` to `gen` and arm a timer that clears it at `at`. Called under the breaker's
/// transition lock, before generation `gen` is published.
pub(crate) fn arm(flag: &ClockFreeFlag, gen: u64, at: tokio::time::Instant) -> Armed {
    if cfg!(tower_llm_loom) || tokio::runtime::Handle::try_current().is_err() {
        return Armed::Skipped;
    }
    // Set first: the timer may fire on another thread as soon as it is registered.
    flag.store(gen, Ordering::Relaxed);
    let waker = Waker::from(Arc::new(ClearFlag {
        flag: Arc::clone(flag),
        gen,
    }));
    // `sleep_until` panics when the runtime has no time driver; there is no way to ask first.
    let registered = catch_unwind(AssertUnwindSafe(|| {
        let mut sleep = Box::pin(tokio::task::unconstrained(tokio::time::sleep_until(at)));
        let pending = sleep
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending();
        (sleep, pending)
    }));
    match registered {
        Ok((sleep, true)) => Armed::Timer(OpenTimer { _sleep: sleep }),
        Ok((_, false)) => {
            waker.wake();
            Armed::Skipped
        }
        Err(_) => {
            waker.wake();
            Armed::TimersDisabled
        }
    }
}

#[cfg(all(test, not(tower_llm_loom)))]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    fn flag() -> ClockFreeFlag {
        Arc::new(CachePadded(AtomicU64::new(0)))
    }

    fn runtime(time: bool) -> tokio::runtime::Runtime {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        if time {
            builder.enable_time().start_paused(true);
        }
        builder.build().unwrap()
    }

    #[test]
    fn without_a_runtime_nothing_is_armed() {
        let flag = flag();
        let armed = arm(&flag, 7, Instant::now() + Duration::from_secs(1));
        assert!(matches!(armed, Armed::Skipped));
        assert_eq!(flag.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_timer_clears_the_flag_when_it_fires() {
        let rt = runtime(true);
        rt.block_on(async {
            let flag = flag();
            let armed = arm(&flag, 7, Instant::now() + Duration::from_secs(5));
            assert!(matches!(armed, Armed::Timer(_)));
            assert_eq!(flag.load(Ordering::Relaxed), 7);
            tokio::time::advance(Duration::from_millis(4_999)).await;
            assert_eq!(flag.load(Ordering::Relaxed), 7);
            // The driver wakes the flag's waker before this task resumes.
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(flag.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn a_due_deadline_arms_nothing() {
        let rt = runtime(true);
        rt.block_on(async {
            let flag = flag();
            let armed = arm(&flag, 7, Instant::now());
            assert!(matches!(armed, Armed::Skipped));
            assert_eq!(flag.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn a_runtime_shutting_down_clears_the_flag() {
        let rt = runtime(true);
        let flag = flag();
        let armed = {
            let _entered = rt.enter();
            arm(&flag, 7, Instant::now() + Duration::from_secs(3600))
        };
        assert_eq!(flag.load(Ordering::Relaxed), 7);
        drop(rt);
        assert_eq!(flag.load(Ordering::Relaxed), 0);
        drop(armed);
    }

    #[test]
    fn a_runtime_without_timers_is_remembered_not_a_panic() {
        let rt = runtime(false);
        let flag = flag();
        let armed = rt.block_on(async { arm(&flag, 7, Instant::now() + Duration::from_secs(5)) });
        assert!(matches!(armed, Armed::TimersDisabled));
        assert_eq!(flag.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_stale_timer_leaves_a_newer_generation_alone() {
        let rt = runtime(true);
        rt.block_on(async {
            let flag = flag();
            let _old = arm(&flag, 7, Instant::now() + Duration::from_secs(1));
            let _new = arm(&flag, 9, Instant::now() + Duration::from_secs(5));
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!(flag.load(Ordering::Relaxed), 9);
            tokio::time::advance(Duration::from_secs(4)).await;
            assert_eq!(flag.load(Ordering::Relaxed), 0);
        });
    }
}
