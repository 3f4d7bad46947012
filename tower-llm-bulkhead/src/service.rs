//! The [`Bulkhead`] service.
//!
//! # Admission happens in `call`, not `poll_ready`
//!
//! tower's `ConcurrencyLimit` takes its permit in `poll_ready`. A bulkhead cannot: the partition
//! (and so the limit) depends on the request, which `poll_ready` does not see, and a wait inside
//! `poll_ready` has no per-call deadline (callers park in `ServiceExt::ready` or a `Buffer` for
//! as long as it takes). Here `poll_ready` reports only the inner service's readiness; `call`
//! picks the partition and admits the call at once when it can (no allocation, no lock). When the
//! call must wait, the already-ready inner service moves into the response future (a fresh clone
//! takes its place, as tower's `Retry` does) and the future waits — bounded by the queue size and
//! the maximum wait — before calling it. A call is therefore never waiting without a bound, and a
//! rejected call returns at once with [`BulkheadFull`](tower_llm_core::BulkheadFull).
//!
//! # The attempt's deadline
//!
//! When the request carries an [`AttemptBudget`](tower_llm_core::AttemptBudget) (read by the
//! service's [`ReadBudget`], [`HttpBudget`] by default), no wait goes past its deadline: the
//! queue wait ends at the earlier of the maximum wait and the deadline, and a call that could
//! only be admitted after the deadline is rejected at once. The budget is read only when the call
//! would wait.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_llm_core::{BoxError, Classification, Classify, HttpBudget, HttpClassifier, ReadBudget};
use tower_service::Service;

use crate::admission::{try_admit, Admit};
use crate::body::{HoldPermit, ReleaseOnBodyEnd};
use crate::future::ResponseFuture;
use crate::handle::BulkheadHandle;
use crate::key::{Global, PartitionBy, Partitioner};
use crate::partition::Shared;
use crate::tokens::{EstimateTokens, NoTokenEstimate};

/// Limits concurrent calls (with a bounded wait), request rate and tokens per partition; see the
/// [crate docs](crate).
///
/// Type parameters are those of [`BulkheadLayer`](crate::BulkheadLayer); `D` reads each request's
/// [`AttemptBudget`](tower_llm_core::AttemptBudget) ([`HttpBudget`] by default,
/// [`NoBudget`](tower_llm_core::NoBudget) for typed clients).
pub struct Bulkhead<
    S,
    K: Partitioner = Global,
    E = NoTokenEstimate,
    C = HttpClassifier,
    R = ReleaseOnBodyEnd,
    D = HttpBudget,
> {
    inner: S,
    shared: Arc<Shared<K::Key>>,
    partitioner: K,
    estimator: E,
    classifier: C,
    hold: R,
    budget: D,
}

impl<S, K: Partitioner, E, C, R, D> Bulkhead<S, K, E, C, R, D> {
    pub(crate) fn from_parts(
        inner: S,
        shared: Arc<Shared<K::Key>>,
        partitioner: K,
        estimator: E,
        classifier: C,
        hold: R,
        budget: D,
    ) -> Self {
        Bulkhead {
            inner,
            shared,
            partitioner,
            estimator,
            classifier,
            hold,
            budget,
        }
    }

    /// A handle on this bulkhead's state, shared by every clone of the service and by the
    /// [`BulkheadLayer`](crate::BulkheadLayer) that built it (the same as
    /// [`BulkheadLayer::handle`](crate::BulkheadLayer::handle)).
    pub fn handle(&self) -> BulkheadHandle<K::Key> {
        BulkheadHandle::new(Arc::clone(&self.shared))
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: Clone, K: Partitioner, E: Clone, C: Clone, R: Clone, D: Clone> Clone
    for Bulkhead<S, K, E, C, R, D>
{
    fn clone(&self) -> Self {
        Bulkhead {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            partitioner: self.partitioner.clone(),
            estimator: self.estimator.clone(),
            classifier: self.classifier.clone(),
            hold: self.hold.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl<S: fmt::Debug, K: Partitioner, E, C, R, D> fmt::Debug for Bulkhead<S, K, E, C, R, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.shared.name)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req, K, E, C, R, D> Service<Req> for Bulkhead<S, K, E, C, R, D>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: PartitionBy<Req>,
    E: EstimateTokens<Req>,
    C: Classify<S::Response>,
    R: HoldPermit<S::Response>,
    D: ReadBudget<Req>,
{
    type Response = R::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let partition = match self.shared.single() {
            Some(partition) => Arc::clone(partition),
            None => match self.shared.partition(self.partitioner.key(&request)) {
                Ok(partition) => partition,
                Err(full) => return ResponseFuture::rejected(full, self.hold.clone()),
            },
        };
        let tokens = if partition.has_tokens() {
            self.estimator.estimate(&request)
        } else {
            0
        };
        let classifier = partition.is_adaptive().then(|| self.classifier.clone());
        // The attempt's deadline is read only if the call would wait.
        let budget = &self.budget;
        let deadline = || budget.budget(&request).map(|b| b.deadline());
        match try_admit(partition, tokens, deadline) {
            Admit::Now(permit) => {
                let hold = self.hold.clone();
                ResponseFuture::called(&mut self.inner, request, permit, classifier, hold)
            }
            Admit::Rejected(full) => ResponseFuture::rejected(full, self.hold.clone()),
            Admit::Wait(pending) => {
                // Take the service that was driven ready; leave a fresh clone for the next call.
                let fresh = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, fresh);
                ResponseFuture::waiting(
                    pending.into_future(),
                    ready,
                    request,
                    classifier,
                    self.hold.clone(),
                )
            }
        }
    }
}

/// A classifier for adaptive concurrency over any response type: every response is a success,
/// errors are classified by [`tower_llm_core::classify_error`] (timeouts, transport errors, and
/// tower-llm's own errors). For a typed client that has no classifier of its own:
/// [`.classifier(ErrorsOnly)`](crate::BulkheadLayerBuilder::classifier).
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorsOnly;

impl<Res> Classify<Res> for ErrorsOnly {
    fn classify_response(&self, _response: &Res) -> Classification {
        Classification::Success
    }
}
