//! [`ResponseFuture`]: waits for admission when it must, calls the inner service, and hands the
//! permit to the response.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tokio::time::Instant;
use tower_llm_core::{BoxError, BulkheadFull, Classify};
use tower_service::Service;

use crate::admission::Admission;
use crate::body::HoldPermit;
use crate::permit::Permit;

/// The response future of [`Bulkhead`](crate::Bulkhead).
///
/// Dropping it at any point releases whatever it holds: its place in a wait queue, its token
/// charge (if the call was not sent yet) and its permit (if the response was not produced yet).
#[pin_project]
pub struct ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    /// The inner call, once sent. A field of its own rather than a field of `State::Calling`:
    /// the inner future (most of this one's size in a stack) is then written where it lives
    /// instead of being built aside and copied in. Declared first: dropped before the permit.
    #[pin]
    future: Option<S::Future>,
    state: State<S, Req>,
    classifier: Option<C>,
    hold: R,
}

/// A call waiting for admission, with the (already ready) inner service and the request. Boxed,
/// so that the common case — a call admitted at once — keeps a small future.
struct Waiting<S, Req> {
    admission: Admission,
    service: S,
    request: Req,
}

enum State<S, Req> {
    /// Waiting for admission.
    Admitting {
        waiting: Option<Box<Waiting<S, Req>>>,
    },
    /// The inner service was called (its future is `ResponseFuture::future`).
    Calling {
        permit: Option<Permit>,
        started: Option<Instant>,
    },
    /// Rejected at once.
    Rejected { error: Option<BulkheadFull> },
    /// Finished.
    Done,
}

impl<S, Req, C, R> ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    /// A call admitted at once: `request` is sent on `inner` here, last, so that the inner
    /// future is written in place.
    #[inline(always)]
    pub(crate) fn called(
        inner: &mut S,
        request: Req,
        permit: Permit,
        classifier: Option<C>,
        hold: R,
    ) -> Self {
        let started = classifier.as_ref().map(|_| Instant::now());
        ResponseFuture {
            state: State::Calling {
                permit: Some(permit),
                started,
            },
            classifier,
            hold,
            future: Some(inner.call(request)),
        }
    }

    pub(crate) fn waiting(
        admission: Admission,
        service: S,
        request: Req,
        classifier: Option<C>,
        hold: R,
    ) -> Self {
        ResponseFuture {
            future: None,
            state: State::Admitting {
                waiting: Some(Box::new(Waiting {
                    admission,
                    service,
                    request,
                })),
            },
            classifier,
            hold,
        }
    }

    pub(crate) fn rejected(error: BulkheadFull, hold: R) -> Self {
        ResponseFuture {
            future: None,
            state: State::Rejected { error: Some(error) },
            classifier: None,
            hold,
        }
    }
}

fn polled_after_completion() -> BoxError {
    "bulkhead response future polled after completion".into()
}

impl<S, Req, C, R> Future for ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
    R: HoldPermit<S::Response>,
{
    type Output = Result<R::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state {
                State::Admitting { waiting } => {
                    let Some(admission) = waiting.as_mut().map(|w| w.admission.as_mut()) else {
                        *this.state = State::Done;
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let permit = match ready!(admission.poll(cx)) {
                        Ok(permit) => permit,
                        Err(full) => {
                            *this.state = State::Done;
                            return Poll::Ready(Err(Box::new(full)));
                        }
                    };
                    let Some(w) = waiting.take() else {
                        *this.state = State::Done;
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let Waiting {
                        mut service,
                        request,
                        ..
                    } = *w;
                    let started = this.classifier.as_ref().map(|_| Instant::now());
                    // `service` was driven to readiness before `call` moved it here.
                    this.future.set(Some(service.call(request)));
                    *this.state = State::Calling {
                        permit: Some(permit),
                        started,
                    };
                }
                State::Calling { permit, started } => {
                    let Some(future) = this.future.as_mut().as_pin_mut() else {
                        *this.state = State::Done;
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let result = ready!(future.poll(cx));
                    // The inner future goes first, then (below) the permit.
                    this.future.set(None);
                    let permit = permit.take();
                    let started = *started;
                    *this.state = State::Done;
                    let Some(permit) = permit else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let sample = this.classifier.as_ref().zip(started);
                    return Poll::Ready(match result {
                        Ok(response) => {
                            if let Some((classifier, started)) = sample {
                                let verdict = classifier.classify_response(&response);
                                permit.adapt(|aimd| aimd.signal(started.elapsed(), verdict));
                            }
                            Ok(this.hold.hold(response, permit))
                        }
                        Err(error) => {
                            let error: BoxError = error.into();
                            if let Some((classifier, started)) = sample {
                                let failure = classifier.classify_error(&*error);
                                permit
                                    .adapt(|aimd| aimd.failure_signal(started.elapsed(), failure));
                            }
                            drop(permit);
                            Err(error)
                        }
                    });
                }
                State::Rejected { error } => {
                    let error = error.take();
                    *this.state = State::Done;
                    return Poll::Ready(match error {
                        Some(full) => Err(Box::new(full)),
                        None => Err(polled_after_completion()),
                    });
                }
                State::Done => return Poll::Ready(Err(polled_after_completion())),
            }
        }
    }
}

impl<S, Req, C, R> fmt::Debug for ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Admitting { .. } => "admitting",
            State::Calling { .. } => "calling",
            State::Rejected { .. } => "rejected",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
