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
//! it returns `Ready` at once *without* polling the inner service, and keeps the rejection for
//! the next `call` (which then does not touch the inner service either). An open breaker so answers immediately even when the inner service is not ready
//! (a full bulkhead below it would otherwise make callers queue only to be rejected).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_llm_core::{BoxError, BreakerOpen, Classify, HttpClassifier};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::handle::BreakerHandle;
use crate::policy::{DefaultPolicy, OutcomePolicy};
use crate::state::Breaker;

/// A service guarded by a circuit breaker. Built by [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
///
/// Clones share the breaker.
pub struct CircuitBreaker<S, C = HttpClassifier, P = DefaultPolicy> {
    inner: S,
    breaker: Arc<Breaker>,
    classifier: C,
    policy: P,
    /// `poll_ready` saw the breaker open and did not poll `inner`: the next call is rejected.
    rejected: Option<BreakerOpen>,
}

impl<S> CircuitBreaker<S> {
    /// Guard `inner` with the breaker behind `handle`, classifying with [`HttpClassifier`].
    pub fn new(inner: S, handle: BreakerHandle) -> Self {
        CircuitBreaker::with_parts(inner, handle, HttpClassifier::default(), DefaultPolicy)
    }
}

impl<S, C, P> CircuitBreaker<S, C, P> {
    /// Guard `inner` with the breaker behind `handle`, a classifier and a policy.
    pub fn with_parts(inner: S, handle: BreakerHandle, classifier: C, policy: P) -> Self {
        CircuitBreaker {
            inner,
            breaker: handle.breaker,
            classifier,
            policy,
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

impl<S, Req, C, P> Service<Req> for CircuitBreaker<S, C, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
    P: OutcomePolicy,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.rejected.is_some() {
            return Poll::Ready(Ok(()));
        }
        if let Some(open) = self.breaker.reject_if_open() {
            self.rejected = Some(open);
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(open) = self.rejected.take() {
            return ResponseFuture::rejected(open);
        }
        match self.breaker.try_acquire() {
            Ok(permit) => ResponseFuture::called(
                self.inner.call(req),
                permit,
                self.classifier.clone(),
                self.policy.clone(),
            ),
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}

impl<S: Clone, C: Clone, P: Clone> Clone for CircuitBreaker<S, C, P> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            breaker: Arc::clone(&self.breaker),
            classifier: self.classifier.clone(),
            policy: self.policy.clone(),
            // Readiness belongs to one clone.
            rejected: None,
        }
    }
}

impl<S: fmt::Debug, C, P> fmt::Debug for CircuitBreaker<S, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}
