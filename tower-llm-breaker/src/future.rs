//! [`ResponseFuture`]: the future of a call through the breaker. It records the call's outcome
//! when the inner future completes; if it is dropped first (the caller gave up, a timeout above
//! fired), nothing is recorded and a half-open probe permit is given back.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tower_llm_core::{BoxError, BreakerOpen, Classification, Classify, KindSet, StreamEnd};

use crate::state::{CallPermit, Outcome};

/// The future returned by [`CircuitBreaker`](crate::CircuitBreaker) and
/// [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker).
#[pin_project]
pub struct ResponseFuture<F, C> {
    #[pin]
    kind: Kind<F, C>,
}

#[pin_project(project = KindProj)]
enum Kind<F, C> {
    Called {
        #[pin]
        future: F,
        permit: Option<CallPermit>,
        classifier: C,
        failures: KindSet,
    },
    Rejected {
        error: Option<BreakerOpen>,
    },
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn called(future: F, permit: CallPermit, classifier: C, failures: KindSet) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                classifier,
                failures,
            },
        }
    }

    pub(crate) fn rejected(error: BreakerOpen) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, Res, E, C> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Classify<Res>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                classifier,
                failures,
            } => {
                let result = ready!(future.poll(cx));
                let (result, classification) = match result {
                    Ok(res) => {
                        let c = classifier.classify_response(&res);
                        if c.is_success() {
                            if let Some(stream) = classifier.stream_outcome(&res) {
                                // A committed stream can still be cut: the verdict waits for
                                // its end. A body dropped by the client says nothing about the
                                // target, so `Abandoned` drops the permit unrecorded.
                                if let Some(mut permit) = permit.take() {
                                    permit.freeze_latency();
                                    let failures = *failures;
                                    stream.on_end(move |end| match end {
                                        StreamEnd::Complete => permit.record(Outcome::Success),
                                        StreamEnd::Failed(f) => permit.record(Outcome::classify(
                                            &Classification::Failure(f),
                                            failures,
                                        )),
                                        StreamEnd::Abandoned => drop(permit),
                                    });
                                }
                                return Poll::Ready(Ok(res));
                            }
                        }
                        (Ok(res), c)
                    }
                    Err(e) => {
                        let e: BoxError = e.into();
                        let failure = classifier.classify_error(&*e);
                        (Err(e), Classification::Failure(failure))
                    }
                };
                if let Some(permit) = permit.take() {
                    permit.record(Outcome::classify(&classification, *failures));
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { error } => Poll::Ready(Err(match error.take() {
                Some(open) => Box::new(open),
                None => "circuit-breaker future polled after completion".into(),
            })),
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Called { permit, .. } => f
                .debug_struct("ResponseFuture::Called")
                .field("permit", permit)
                .finish(),
            Kind::Rejected { error } => f
                .debug_struct("ResponseFuture::Rejected")
                .field("error", error)
                .finish(),
        }
    }
}
