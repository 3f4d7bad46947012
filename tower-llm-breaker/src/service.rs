//! [`CircuitBreaker`]: the service.
//!
//! # Where the breaker decides: `call`, with a fast path in `poll_ready`
//!
//! The admission decision (take a permit, maybe a half-open probe) is made in `call`, because
//! only there is it tied to a request: a permit taken in `poll_ready` could be held by a caller
//! that never calls, and an error from `poll_ready` means "this service is broken" to tower's
//! `Buffer` and `Balance`, which would drop it for good. A rejection in `call` is a ready
//! `Err(BreakerOpen)` future; the inner service is not called, so the readiness it reserved in
//! `poll_ready` stays reserved for this clone's next call (tower allows that).
//!
//! `poll_ready` has one shortcut: if the breaker is OPEN before its deadline, or FORCED_OPEN,
//! it returns `Ready` at once, whether the inner service is ready or not, and keeps the
//! rejection for the next `call` (which then does not touch the inner service). An open breaker
//! so answers immediately even when the inner service is not ready (a full bulkhead below it
//! would otherwise make callers queue only to be rejected). While OPEN it still polls the inner
//! service once, without waiting for it, so that a probe (below) can be let through: if the
//! inner service was ready, a probe `call` reaches it; if it was not, the probe is rejected like
//! any other call.
//!
//! # Below a fallback chain
//!
//! A fallback chain above per-target breakers benches a failing target itself and, when the
//! bench lifts, sends exactly one probe, marked with
//! [`AttemptBudget::probe`](tower_llm_core::AttemptBudget::probe). The chain decides *when* a
//! target is probed; the breaker does not add its own open period on top of the chain's
//! cooldown: **a call marked as a probe is admitted even while the breaker is OPEN**, as its
//! half-open trial ([`BreakerHandle::try_acquire_probe`]). The breaker still detects failures,
//! rejects ordinary calls while open, and its half-open logic decides when it closes; a
//! FORCED_OPEN breaker rejects probes too.
//!
//! The breaker reads the mark through its `R: `[`ReadBudget`] parameter: [`HttpBudget`] (the
//! default) reads the request extension of an `http::Request`; a typed client's requests carry
//! none, so give it [`NoBudget`](tower_llm_core::NoBudget) with
//! [`CircuitBreakerLayerBuilder::read_budget`](crate::CircuitBreakerLayerBuilder::read_budget).
//! The budget is read only while the breaker is OPEN: a closed breaker costs nothing more.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_llm_core::{BoxError, Classify, HttpBudget, HttpClassifier, KindSet, ReadBudget};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::handle::BreakerHandle;
use crate::state::{Breaker, OpenNow};

/// A service guarded by a circuit breaker. Built by [`CircuitBreakerLayer`](crate::CircuitBreakerLayer)
/// (whose builder sets the classifier, the failures that count and the budget reader).
///
/// Clones share the breaker.
///
/// **Below a fallback chain**, a call marked as the chain's probe
/// ([`AttemptBudget::probe`](tower_llm_core::AttemptBudget::probe)) is admitted even while the
/// breaker is open, as its half-open trial: the chain decides when a target is probed (see
/// [Below a fallback chain](crate#below-a-fallback-chain)). `R` reads that mark:
/// [`HttpBudget`] (the default) from an `http::Request`'s extensions; give a typed client's
/// layer [`NoBudget`](tower_llm_core::NoBudget) with
/// [`read_budget`](crate::CircuitBreakerLayerBuilder::read_budget).
///
/// While the breaker is open, `poll_ready` answers `Ready` at once (calls other than a probe are
/// rejected without waiting for the inner service) after polling the inner service once: a
/// probe reaches the inner service only if that poll found it ready, and is rejected otherwise.
pub struct CircuitBreaker<S, C = HttpClassifier, R = HttpBudget> {
    inner: S,
    breaker: Arc<Breaker>,
    classifier: C,
    failures: KindSet,
    reader: R,
    /// `poll_ready` saw the breaker open: the next call is rejected, unless it is a probe and
    /// `inner` was ready.
    rejected: Option<Rejected>,
}

/// What `poll_ready` saw while the breaker was open.
#[derive(Clone, Copy, Debug)]
struct Rejected {
    open: OpenNow,
    /// `inner` answered `Ready(Ok)`: a probe may call it.
    inner_ready: bool,
}

impl<S> CircuitBreaker<S> {
    /// Guard `inner` with the breaker behind `handle`, classifying with [`HttpClassifier`],
    /// counting [`KindSet::counts_against_breaker`] and reading budgets with [`HttpBudget`].
    /// Other choices are made on the layer's builder.
    pub fn new(inner: S, handle: BreakerHandle) -> Self {
        CircuitBreaker::from_parts(
            inner,
            &handle,
            HttpClassifier::default(),
            KindSet::counts_against_breaker(),
            HttpBudget,
        )
    }
}

impl<S, C, R> CircuitBreaker<S, C, R> {
    pub(crate) fn from_parts(
        inner: S,
        handle: &BreakerHandle,
        classifier: C,
        failures: KindSet,
        reader: R,
    ) -> Self {
        CircuitBreaker {
            inner,
            breaker: Arc::clone(&handle.breaker),
            classifier,
            failures,
            reader,
            rejected: None,
        }
    }

    /// A handle on the breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            breaker: Arc::clone(&self.breaker),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, C, R> Service<Req> for CircuitBreaker<S, C, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
    R: ReadBudget<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(rejected) = &mut self.rejected {
            if rejected.inner_ready || !rejected.open.admits_probe() {
                return Poll::Ready(Ok(()));
            }
            // Polled again before the call: the inner service may be ready by now.
            return match self.inner.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    rejected.inner_ready = true;
                    Poll::Ready(Ok(()))
                }
                Poll::Pending => Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => {
                    self.rejected = None;
                    Poll::Ready(Err(e.into()))
                }
            };
        }
        if let Some(open) = self.breaker.open_now() {
            // A probe may still come: poll the inner service once, but do not wait for it.
            let inner_ready = open.admits_probe()
                && match self.inner.poll_ready(cx) {
                    Poll::Ready(Ok(())) => true,
                    Poll::Pending => false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                };
            self.rejected = Some(Rejected { open, inner_ready });
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let reader = &self.reader;
        let is_probe = || reader.budget(&req).is_some_and(|b| b.is_probe());
        let admitted = match self.rejected.take() {
            // Only a probe passes, and only if the inner service is ready for it; a rejected
            // call leaves the readiness it reserved for this clone's next call.
            Some(Rejected { open, inner_ready }) => {
                if !(inner_ready && is_probe()) {
                    return ResponseFuture::rejected(self.breaker.reject(open));
                }
                self.breaker.try_acquire_probe()
            }
            None => self.breaker.acquire(is_probe),
        };
        match admitted {
            Ok(permit) => {
                let (classifier, failures) = (self.classifier.clone(), self.failures);
                ResponseFuture::called(&mut self.inner, req, permit, classifier, failures)
            }
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}

impl<S: Clone, C: Clone, R: Clone> Clone for CircuitBreaker<S, C, R> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            breaker: Arc::clone(&self.breaker),
            classifier: self.classifier.clone(),
            failures: self.failures,
            reader: self.reader.clone(),
            // Readiness belongs to one clone.
            rejected: None,
        }
    }
}

impl<S: fmt::Debug, C, R> fmt::Debug for CircuitBreaker<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}
