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
    #[pin]
    state: State<S, Req, S::Future>,
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

#[pin_project(project = StateProj)]
enum State<S, Req, F> {
    /// Waiting for admission.
    Admitting {
        waiting: Option<Box<Waiting<S, Req>>>,
    },
    /// The inner service was called.
    Calling {
        #[pin]
        future: F,
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
    #[inline]
    pub(crate) fn called(
        future: S::Future,
        permit: Permit,
        classifier: Option<C>,
        hold: R,
    ) -> Self {
        let started = classifier.as_ref().map(|_| Instant::now());
        ResponseFuture {
            state: State::Calling {
                future,
                permit: Some(permit),
                started,
            },
            classifier,
            hold,
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
            match this.state.as_mut().project() {
                StateProj::Admitting { waiting } => {
                    let Some(admission) = waiting.as_mut().map(|w| w.admission.as_mut()) else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let permit = match ready!(admission.poll(cx)) {
                        Ok(permit) => permit,
                        Err(full) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(Box::new(full)));
                        }
                    };
                    let Some(w) = waiting.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let Waiting {
                        mut service,
                        request,
                        ..
                    } = *w;
                    let started = this.classifier.as_ref().map(|_| Instant::now());
                    // `service` was driven to readiness before `call` moved it here.
                    let future = service.call(request);
                    this.state.set(State::Calling {
                        future,
                        permit: Some(permit),
                        started,
                    });
                }
                StateProj::Calling {
                    future,
                    permit,
                    started,
                } => {
                    let result = ready!(future.poll(cx));
                    let permit = permit.take();
                    let started = *started;
                    this.state.set(State::Done);
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
                StateProj::Rejected { error } => {
                    let error = error.take();
                    this.state.set(State::Done);
                    return Poll::Ready(match error {
                        Some(full) => Err(Box::new(full)),
                        None => Err(polled_after_completion()),
                    });
                }
                StateProj::Done => return Poll::Ready(Err(polled_after_completion())),
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
