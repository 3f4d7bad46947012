//! [`ResponseFuture`]: the future of a call through the breaker. It records the call's outcome
//! when the inner future completes; if it is dropped first (the caller gave up, a timeout above
//! fired), nothing is recorded and a half-open probe permit is given back.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tower_llm_core::{BoxError, BreakerOpen, Classification, Classify, KindSet, StreamEnd};
use tower_service::Service;

use crate::state::{CallPermit, Outcome};

/// The future returned by [`CircuitBreaker`](crate::CircuitBreaker) and
/// [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker).
#[pin_project]
pub struct ResponseFuture<F, C> {
    /// The inner call; `None` when the breaker rejected it. A plain field rather than an enum
    /// variant's: the inner future (most of this one's size in a stack) is then written where it
    /// lives instead of being built aside and copied in.
    #[pin]
    future: Option<F>,
    verdict: Verdict<C>,
}

/// What the breaker does with the call's outcome, or the rejection to return.
enum Verdict<C> {
    Record {
        permit: Option<CallPermit>,
        classifier: C,
        failures: KindSet,
    },
    Rejected(Option<BreakerOpen>),
}

impl<F, C> ResponseFuture<F, C> {
    /// A call admitted: `req` is sent on `inner` here, last, so that the inner future is
    /// written in place.
    #[inline(always)]
    pub(crate) fn called<S, Req>(
        inner: &mut S,
        req: Req,
        permit: CallPermit,
        classifier: C,
        failures: KindSet,
    ) -> Self
    where
        S: Service<Req, Future = F>,
    {
        ResponseFuture {
            verdict: Verdict::Record {
                permit: Some(permit),
                classifier,
                failures,
            },
            future: Some(inner.call(req)),
        }
    }

    pub(crate) fn rejected(error: BreakerOpen) -> Self {
        ResponseFuture {
            future: None,
            verdict: Verdict::Rejected(Some(error)),
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
        let this = self.project();
        let (permit, classifier, failures) = match this.verdict {
            Verdict::Record {
                permit,
                classifier,
                failures,
            } => (permit, classifier, failures),
            Verdict::Rejected(error) => {
                return Poll::Ready(Err(match error.take() {
                    Some(open) => Box::new(open),
                    None => "circuit-breaker future polled after completion".into(),
                }))
            }
        };
        let Some(future) = this.future.as_pin_mut() else {
            return Poll::Ready(Err(
                "circuit-breaker future polled without an inner call".into()
            ));
        };
        let result = ready!(future.poll(cx)).map_err(Into::into);
        // Judged by reference: the answer goes out as it came, not moved through the verdict.
        let classification = match &result {
            Ok(res) => {
                let c = classifier.classify_response(res);
                if c.is_success() {
                    if let Some(stream) = classifier.stream_outcome(res) {
                        // A committed stream can still be cut: the verdict waits for its end. A
                        // body dropped by the client says nothing about the target, so
                        // `Abandoned` drops the permit unrecorded.
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
                        return Poll::Ready(result);
                    }
                }
                c
            }
            Err(e) => Classification::Failure(classifier.classify_error(&**e)),
        };
        if let Some(permit) = permit.take() {
            permit.record(Outcome::classify(&classification, *failures));
        }
        Poll::Ready(result)
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verdict {
            Verdict::Record { permit, .. } => f
                .debug_struct("ResponseFuture::Called")
                .field("permit", permit)
                .finish(),
            Verdict::Rejected(error) => f
                .debug_struct("ResponseFuture::Rejected")
                .field("error", error)
                .finish(),
        }
    }
}
