//! A handler's future that hyper polls only when the future's own waker fired: [`GatedFuture`].
//!
//! hyper's server polls the in-flight handler future every time the connection's task is
//! polled, whatever woke it. A JSON answer's task is polled once more than the work needs: the
//! handler taking the request's body wakes hyper's side of the body channel, which polls the
//! connection again, and with it every layer of the handler's future down to the upstream
//! connection, though nothing the handler waits for has happened. This wrapper polls the future
//! with a [`WakeFlag`] and, after the first poll, answers `Pending` at once unless that flag
//! fired: the same argument as [`GatedBody`](crate::gated_body::GatedBody)'s, for the future
//! contract (a future that answers `Pending` has arranged for the waker of that call to be woken
//! when it can make progress). The flag is the connection's, made once: hyper serves one request
//! at a time on a connection, and a wake-up left over from the one before costs one poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use pin_project::pin_project;

use crate::wake::WakeFlag;

/// A future polled only when it can have something new: see the [module docs](self).
#[pin_project]
pub(crate) struct GatedFuture<F> {
    #[pin]
    inner: F,
    flag: Arc<WakeFlag>,
    /// `flag` as a waker.
    waker: Waker,
}

impl<F> GatedFuture<F> {
    /// `inner`, polled with `waker` (made from `flag`) and only after `flag` fired; its first poll
    /// always goes through.
    pub(crate) fn new(inner: F, flag: Arc<WakeFlag>, waker: Waker) -> Self {
        flag.fire();
        GatedFuture { inner, flag, waker }
    }
}

impl<F: Future> Future for GatedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the flag is read: a wake-up in between still wakes the task.
        this.flag.register(cx.waker());
        if !this.flag.take_fired() {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::task::Wake;

    /// A task waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether it was released, and the waker of its last poll.
    type Release = Mutex<(bool, Option<Waker>)>;

    /// Pending until `release` is called, which wakes the waker of its last poll; counts polls.
    #[derive(Clone, Default)]
    struct Held(Arc<(Release, AtomicUsize)>);

    impl Held {
        fn release(&self) {
            let waker = {
                let mut state = self.0 .0.lock().unwrap();
                state.0 = true;
                state.1.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }

        fn polls(&self) -> usize {
            self.0 .1.load(Ordering::SeqCst)
        }
    }

    impl Future for Held {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0 .1.fetch_add(1, Ordering::SeqCst);
            let mut state = self.0 .0.lock().unwrap();
            if state.0 {
                return Poll::Ready(());
            }
            state.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn poll(fut: &mut Pin<Box<GatedFuture<Held>>>, task: &Arc<Count>) -> Poll<()> {
        let waker = Waker::from(Arc::clone(task));
        fut.as_mut().poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn polls_through_only_after_its_own_wake_up() {
        let flag = WakeFlag::new(false);
        let waker = Waker::from(Arc::clone(&flag));
        let held = Held::default();
        let task = Arc::new(Count::default());
        let mut fut = Box::pin(GatedFuture::new(held.clone(), flag, waker));
        assert!(poll(&mut fut, &task).is_pending());
        assert_eq!(held.polls(), 1, "the first poll goes through");
        // The task polled again for something else: the future is not.
        assert!(poll(&mut fut, &task).is_pending());
        assert!(poll(&mut fut, &task).is_pending());
        assert_eq!(held.polls(), 1);
        // Its own wake-up wakes the task, and the next poll goes through.
        held.release();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut fut, &task), Poll::Ready(()));
        assert_eq!(held.polls(), 2);
    }

    #[test]
    fn a_connection_s_next_request_is_polled_at_once_with_the_same_flag() {
        let flag = WakeFlag::new(false);
        let waker = Waker::from(Arc::clone(&flag));
        let task = Arc::new(Count::default());
        let first = Held::default();
        first.release();
        let mut fut = Box::pin(GatedFuture::new(
            first.clone(),
            Arc::clone(&flag),
            waker.clone(),
        ));
        assert_eq!(poll(&mut fut, &task), Poll::Ready(()));
        let second = Held::default();
        let mut fut = Box::pin(GatedFuture::new(second.clone(), flag, waker));
        assert!(poll(&mut fut, &task).is_pending());
        assert_eq!(second.polls(), 1, "the first poll goes through");
    }
}
