//! A waker that notes that it fired before it wakes the task: [`WakeFlag`].
//!
//! A connection's task is woken by many things: its socket, the answer's body, the drain signal.
//! A future or body polled by that task with a `WakeFlag` of its own instead of the task's waker
//! can tell, on the next poll, whether the wake-up was for it, and skip polling it when it was
//! not (as `FuturesUnordered` does for the futures it holds).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use futures_util::task::AtomicWaker;

/// The waker handed to what the task polls on someone's behalf: it notes that it fired, then
/// wakes the task registered last.
pub(crate) struct WakeFlag {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl WakeFlag {
    /// A flag, already fired when `fired` (so that the first poll goes through).
    pub(crate) fn new(fired: bool) -> Arc<WakeFlag> {
        Arc::new(WakeFlag {
            fired: AtomicBool::new(fired),
            task: AtomicWaker::new(),
        })
    }

    /// Whether the flag fired since the last call; clears it. Call [`register`](Self::register)
    /// first, so that a wake-up coming in between still wakes the task.
    pub(crate) fn take_fired(&self) -> bool {
        self.fired.swap(false, Ordering::AcqRel)
    }

    /// Fire the flag without waking anyone (the next poll goes through).
    pub(crate) fn fire(&self) {
        self.fired.store(true, Ordering::Release);
    }

    /// Wake `task` when the flag fires.
    pub(crate) fn register(&self, task: &Waker) {
        self.task.register(task);
    }
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A task waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_fired_flag_wakes_the_task_registered_last_and_reads_once() {
        let first = Arc::new(Count(AtomicUsize::new(0)));
        let last = Arc::new(Count(AtomicUsize::new(0)));
        let flag = WakeFlag::new(false);
        let waker = Waker::from(Arc::clone(&flag));
        flag.register(&Waker::from(Arc::clone(&first)));
        flag.register(&Waker::from(Arc::clone(&last)));
        assert!(!flag.take_fired());
        waker.wake_by_ref();
        assert_eq!(first.0.load(Ordering::Relaxed), 0);
        assert_eq!(last.0.load(Ordering::Relaxed), 1);
        assert!(flag.take_fired());
        assert!(!flag.take_fired(), "read once");
        assert!(WakeFlag::new(true).take_fired());
    }
}
