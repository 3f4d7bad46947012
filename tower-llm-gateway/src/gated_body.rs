//! An answer's body that hyper polls only when the body's own waker fired: [`GatedBody`].
//!
//! hyper's server polls the response body every time the connection's task wakes up, whatever
//! woke it. For a streamed answer that is about three polls per event (callgrind: 14,928 polls of
//! the upstream body for 5,020 events), of which about one follows a wake-up that was not the
//! body's, and each poll runs through every layer's body wrapper (tower-http's trace body, the
//! fallback's, the resume watch, the bulkhead's permit, the stream guard, the replay body) down
//! to hyper's client channel. After a body first answers `Pending`, this wrapper polls it with a
//! [`WakeFlag`] of its own and, on the following polls, answers `Pending` at once unless that
//! flag fired.
//!
//! That is sound for bodies that keep the `poll_frame` contract: a body that answers `Pending`
//! has arranged for the waker of that call to be woken when it can make progress, so a wake-up
//! that did not come through the flag cannot be one it waits for. The first `Pending` is answered
//! with the task's own waker; the next poll always goes through, with the flag, so from then on
//! what the body waits for wakes the flag.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;

use crate::wake::WakeFlag;

/// A body polled only when it can have something new: see the [module docs](self).
#[pin_project]
pub(crate) struct GatedBody<B> {
    #[pin]
    inner: B,
    gate: Gate,
}

/// Where the body is in its polls.
enum Gate {
    /// Not `Pending` yet: poll it with the task's waker.
    Open,
    /// Its last poll, with the task's waker, was `Pending`: poll it again (with a flag from now on,
    /// made here: a body that never waits costs no allocation).
    Registered,
    /// Polled with the flag; `pending` when its last poll was `Pending`.
    Flagged {
        flag: Arc<WakeFlag>,
        waker: Waker,
        pending: bool,
    },
}

impl<B> GatedBody<B> {
    /// Wrap `inner`.
    pub(crate) fn new(inner: B) -> Self {
        GatedBody {
            inner,
            gate: Gate::Open,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for GatedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        match this.gate {
            Gate::Open => {
                let result = this.inner.poll_frame(cx);
                if result.is_pending() {
                    *this.gate = Gate::Registered;
                }
                result
            }
            Gate::Registered => {
                let flag = WakeFlag::new(false);
                flag.register(cx.waker());
                let waker = Waker::from(Arc::clone(&flag));
                let result = this.inner.poll_frame(&mut Context::from_waker(&waker));
                *this.gate = Gate::Flagged {
                    flag,
                    waker,
                    pending: result.is_pending(),
                };
                result
            }
            Gate::Flagged {
                flag,
                waker,
                pending,
            } => {
                // Registered before the flag is read: a wake-up in between still wakes the task.
                flag.register(cx.waker());
                let fired = flag.take_fired();
                if *pending && !fired {
                    return Poll::Pending;
                }
                let result = this.inner.poll_frame(&mut Context::from_waker(waker));
                *pending = result.is_pending();
                result
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::task::Wake;

    /// A body fed by hand: `push` hands it a frame and wakes whoever it last answered `Pending`.
    #[derive(Clone, Default)]
    struct Fed(Arc<FedInner>);

    #[derive(Default)]
    struct FedInner {
        frames: Mutex<(VecDeque<Option<Bytes>>, Option<Waker>)>,
        polls: AtomicUsize,
    }

    impl Fed {
        fn push(&self, frame: Option<&'static str>) {
            let mut state = self.0.frames.lock().unwrap();
            state
                .0
                .push_back(frame.map(|text| Bytes::from_static(text.as_bytes())));
            if let Some(waker) = state.1.take() {
                waker.wake();
            }
        }

        fn polls(&self) -> usize {
            self.0.polls.load(Ordering::Relaxed)
        }
    }

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.polls.fetch_add(1, Ordering::Relaxed);
            let mut state = self.0.frames.lock().unwrap();
            match state.0.pop_front() {
                Some(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Some(None) => Poll::Ready(None),
                None => {
                    state.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }

    /// The connection's task: counts its wake-ups.
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn poll(
        body: &mut Pin<Box<GatedBody<Fed>>>,
        task: &Arc<Task>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        let waker = Waker::from(Arc::clone(task));
        body.as_mut().poll_frame(&mut Context::from_waker(&waker))
    }

    fn data(polled: Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>>) -> Bytes {
        match polled {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap(),
            _ => panic!("not a data frame"),
        }
    }

    #[test]
    fn frames_pass_and_wake_ups_of_others_do_not_poll_the_body() {
        let fed = Fed::default();
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let mut body = Box::pin(GatedBody::new(fed.clone()));

        fed.push(Some("a"));
        assert_eq!(data(poll(&mut body, &task)), "a");
        // Nothing yet: the body waits with the task's waker, then (next poll) with the flag.
        assert!(poll(&mut body, &task).is_pending());
        assert!(poll(&mut body, &task).is_pending());
        assert_eq!(fed.polls(), 3);
        // Wake-ups that were not the body's: no poll reaches it.
        for _ in 0..10 {
            assert!(poll(&mut body, &task).is_pending());
        }
        assert_eq!(fed.polls(), 3);

        // The body's own wake-up wakes the task and lets the next poll through.
        fed.push(Some("b"));
        assert_eq!(task.0.load(Ordering::Relaxed), 1);
        assert_eq!(data(poll(&mut body, &task)), "b");
        // After a frame the body is polled again whatever woke the task (hyper asks for more).
        fed.push(Some("c"));
        assert_eq!(data(poll(&mut body, &task)), "c");
        assert!(poll(&mut body, &task).is_pending());
        fed.push(None);
        assert!(matches!(poll(&mut body, &task), Poll::Ready(None)));
        assert_eq!(fed.polls(), 7);
    }

    /// The first `Pending` registered the task's waker, not the flag: the poll after it goes
    /// through even though the flag never fired.
    #[test]
    fn the_poll_after_the_first_pending_goes_through() {
        let fed = Fed::default();
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let mut body = Box::pin(GatedBody::new(fed.clone()));
        assert!(poll(&mut body, &task).is_pending());
        // The frame wakes the task's own waker (registered by the first poll).
        fed.push(Some("a"));
        assert_eq!(task.0.load(Ordering::Relaxed), 1);
        assert_eq!(data(poll(&mut body, &task)), "a");
    }

    /// A body that never waits is polled straight through.
    #[test]
    fn a_ready_body_passes_as_it_is() {
        let fed = Fed::default();
        fed.push(Some("whole"));
        fed.push(None);
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let mut body = Box::pin(GatedBody::new(fed.clone()));
        assert_eq!(data(poll(&mut body, &task)), "whole");
        assert!(matches!(poll(&mut body, &task), Poll::Ready(None)));
        assert!(matches!(body.as_ref().get_ref().gate, Gate::Open));
    }
}
