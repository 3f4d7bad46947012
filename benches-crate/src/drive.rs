//! A minimal executor: poll the future; when it is pending, park the thread until woken.
//!
//! Every bench variant is driven by it, so they all pay the same (tiny) driving cost and no
//! runtime's scheduling is measured. Timers still work when a multi-thread tokio runtime is
//! entered on the calling thread: its workers run the timer driver and wake this thread.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the current thread. Make one per thread, outside timed loops.
pub fn thread_waker() -> Waker {
    Waker::from(Arc::new(Unpark(thread::current())))
}

/// Run `future` to completion on this thread; `waker` must come from [`thread_waker`] on this
/// same thread.
pub fn block_on<F: Future>(waker: &Waker, future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(waker);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_a_future_woken_from_another_thread() {
        let waker = thread_waker();
        let (tx, rx) = std::sync::mpsc::channel::<Waker>();
        let helper = thread::spawn(move || {
            let waker = rx.recv().expect("a waker");
            waker.wake();
        });
        let mut sent = Some(tx);
        let mut polls = 0;
        let out = block_on(
            &waker,
            std::future::poll_fn(|cx| {
                polls += 1;
                match sent.take() {
                    Some(tx) => {
                        tx.send(cx.waker().clone()).expect("helper alive");
                        Poll::Pending
                    }
                    None => Poll::Ready(polls),
                }
            }),
        );
        helper.join().expect("helper");
        assert_eq!(out, 2);
    }
}
