//! Synchronisation primitives: `std` normally, `loom`'s models under `--cfg tower_llm_loom` so the
//! transition races can be checked exhaustively (`tests/loom.rs`).

#[cfg(tower_llm_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(tower_llm_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(not(tower_llm_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(not(tower_llm_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Lock a mutex, recovering the data from a poisoned lock: every critical section in this crate
/// leaves its data consistent before it can panic (it only calls user code outside the locks).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Read-lock, recovering from poisoning (see [`lock`]).
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match l.read() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Write-lock, recovering from poisoning (see [`lock`]).
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    match l.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A value alone on its cache lines (128 bytes: two lines, for adjacent-line prefetchers), so
/// that writing it does not slow down threads reading its neighbours, and vice versa: the
/// per-call words (the window's sequence, the `Arc` reference count) stay off the line of the
/// state word every call reads.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// How many stripes striped data has: enough that a few busy threads rarely share one.
pub(crate) const STRIPES: usize = 4;

/// What this thread remembers: its stripe, and a countdown to its next forced clock check.
struct ThreadSlot {
    stripe: std::cell::Cell<usize>,
    countdown: std::cell::Cell<u32>,
}

thread_local! {
    static SLOT: ThreadSlot = const {
        ThreadSlot {
            stripe: std::cell::Cell::new(usize::MAX),
            countdown: std::cell::Cell::new(CLOCK_CHECK_EVERY - 1),
        }
    };
}

/// This thread's stripe (`0..STRIPES`), taken round-robin the first time the thread asks.
pub(crate) fn stripe() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    SLOT.try_with(|slot| {
        if slot.stripe.get() == usize::MAX {
            let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            slot.stripe.set(next % STRIPES);
        }
        slot.stripe.get()
    })
    // During thread teardown: any stripe is correct, only slower.
    .unwrap_or(0)
}

/// A rejection reads the clock at least once per this many rejections on a thread, whether or
/// not the open period's timer is armed (see `open_timer`).
pub(crate) const CLOCK_CHECK_EVERY: u32 = 256;

/// True once every [`CLOCK_CHECK_EVERY`] calls on this thread (and when thread-locals are gone).
pub(crate) fn clock_check_due() -> bool {
    SLOT.try_with(|slot| {
        let left = slot.countdown.get();
        if left == 0 {
            slot.countdown.set(CLOCK_CHECK_EVERY - 1);
            true
        } else {
            slot.countdown.set(left - 1);
            false
        }
    })
    .unwrap_or(true)
}

/// A counter that threads add to without fighting over one cache line: each thread adds to its
/// own stripe; a read sums the stripes.
#[derive(Debug, Default)]
pub(crate) struct StripedCounter {
    stripes: [CachePadded<AtomicU64>; STRIPES],
}

impl StripedCounter {
    /// Add one on `stripe` (this thread's: [`stripe()`]).
    pub(crate) fn increment(&self, stripe: usize) {
        self.stripes[stripe % STRIPES].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

#[cfg(all(test, not(tower_llm_loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_clock_check_comes_once_per_period_on_each_thread() {
        let due: Vec<usize> = (0..3 * CLOCK_CHECK_EVERY as usize)
            .filter(|_| clock_check_due())
            .collect();
        assert_eq!(due.len(), 3);
        assert_eq!(due[1] - due[0], CLOCK_CHECK_EVERY as usize);
        // Another thread has its own countdown.
        let other =
            std::thread::spawn(|| (0..CLOCK_CHECK_EVERY).filter(|_| clock_check_due()).count());
        assert_eq!(other.join().unwrap(), 1);
    }

    #[test]
    fn threads_take_stripes_round_robin_and_counts_add_up() {
        let counter = StripedCounter::default();
        let stripes: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..STRIPES)
                .map(|_| {
                    scope.spawn(|| {
                        for _ in 0..1000 {
                            counter.increment(stripe());
                        }
                        stripe()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(stripes.iter().all(|s| *s < STRIPES));
        assert_eq!(counter.sum(), 1000 * STRIPES as u64);
    }
}
