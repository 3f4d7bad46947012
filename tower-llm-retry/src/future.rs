//! [`ResponseFuture`]: the state machine of one call through [`Retry`](crate::Retry).
//!
//! ```text
//!            ┌────────────── retryable failure, no attempt in flight ──────────────┐
//!            ▼                                                                     │
//!   Backoff(Sleep) ──► Ready (poll_ready the service clone) ──► Waiting (attempt + hedges in flight)
//!                                                                 │ success / not retried / stop
//!                                                                 ▼
//!                                                               Done
//! ```
//!
//! The attempt in flight with its timeout, or the backoff sleep (one slot: never both), live
//! inline in the future (pinned, no `Box`); hedges, which run side by side with the attempt, and
//! the hedge timer are boxed, and only when hedging is on. Dropping the future drops whatever is
//! pending: a backoff never wakes into another attempt, an attempt in flight is cancelled.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};
use tower_llm_core::{
    AttemptBudget, AttemptRecord, AttemptTimeout, BoxError, Classification, ClassifiedError,
    Classify, ErrorKind, Failure, NotReplayable, RetriesExhausted, Target,
};
use tower_service::Service;

use crate::budget::RetryBudget;
use crate::layer::Shared;
use crate::policy::{admissible, decide, CallState, Decision, Limits, RetryAttempts, StopReason};
use crate::replay::{Attempt, RecordResponse, ReplayRequest};

/// What a call is about: its target, the retry budget it draws on, and the budget of time and
/// role a layer above gave it.
pub(crate) struct CallContext {
    pub(crate) target: Option<Target>,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) attempt_budget: Option<AttemptBudget>,
}

/// One attempt, with its timeout.
#[pin_project]
pub(crate) struct TimedCall<F> {
    #[pin]
    fut: F,
    /// Created the first time the attempt has to wait: an attempt answered on its first poll
    /// never touches the runtime's timer (no handle lookup, no registration).
    #[pin]
    timer: Option<Sleep>,
    /// When the attempt times out (`None`: never); the limit reported is this less `started`.
    expires: Option<Instant>,
    /// The timer is the deadline (a layer above's, or the configured one), not the attempt timeout.
    by_deadline: bool,
    attempt: u32,
    started: Instant,
}

/// A finished attempt.
pub(crate) struct Finished<T> {
    result: Result<T, BoxError>,
    /// The attempt was cut by the deadline.
    cut: bool,
    attempt: u32,
    started: Instant,
}

impl<F, T, E> Future for TimedCall<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Finished<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Finished<T>> {
        let this = self.project();
        let (result, cut) = match this.fut.poll(cx) {
            Poll::Ready(result) => (result.map_err(Into::into), false),
            Poll::Pending => {
                let mut timer = this.timer;
                if timer.is_none() {
                    if let Some(at) = *this.expires {
                        timer.set(Some(sleep_until(at)));
                    }
                }
                let expired = timer
                    .as_pin_mut()
                    .is_some_and(|timer| timer.poll(cx).is_ready());
                if !expired {
                    return Poll::Pending;
                }
                let limit = this.expires.map_or(Duration::ZERO, |at| {
                    at.saturating_duration_since(*this.started)
                });
                let timeout = Box::new(AttemptTimeout::new(limit)) as BoxError;
                (Err(timeout), *this.by_deadline)
            }
        };
        Poll::Ready(Finished {
            result,
            cut,
            attempt: *this.attempt,
            started: *this.started,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Attempts are in flight (the primary slot and/or hedges).
    Waiting,
    /// Sleeping before the next attempt.
    Backoff,
    /// Waiting for the service clone to be ready for the next attempt.
    Ready,
    /// The output was returned.
    Done,
}

/// What the future's one pinned slot holds: the primary attempt (`Phase::Waiting`), the backoff
/// sleep (`Phase::Backoff`), or nothing. Never both at once, so they share the room.
#[pin_project(project = SlotProj)]
enum Slot<F> {
    Empty,
    Attempt(#[pin] TimedCall<F>),
    Backoff(#[pin] Sleep),
}

/// Response future of [`Retry`](crate::Retry).
#[pin_project]
pub struct ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    #[pin]
    slot: Slot<S::Future>,
    hedges: Vec<Pin<Box<TimedCall<S::Future>>>>,
    call: Call<S, Req, C, R>,
}

/// Everything about the call that need not be pinned.
struct Call<S, Req, C, R>
where
    S: Service<Req>,
{
    phase: Phase,
    /// A clone of the inner service for the attempts after the first: `None` when the call
    /// cannot make another (no copy of the request kept), so a single call clones nothing.
    service: Option<S>,
    shared: Arc<Shared<C, R>>,
    /// The copy replays are made from (`None` when the layer cannot retry or hedge).
    request: Option<Result<Req, NotReplayable>>,
    state: CallState,
    /// Attempt numbers handed out so far (hedges included).
    attempts: u32,
    hedges_sent: u32,
    /// The hedge timer fired; waiting for the service to be ready to send the hedge.
    hedge_due: bool,
    /// When the next hedge is sent (boxed: only hedging fills it, and inline it would make every
    /// call's future larger by a timer, which each layer above moves).
    hedge_timer: Option<Pin<Box<Sleep>>>,
    /// What the failed attempts left, made on the first failure. (Boxed: a call whose first
    /// attempt answers never needs it, and inline it would make every call's future larger by a
    /// response, which each layer above moves.)
    failures: Option<Box<Failures<S::Response>>>,
    target: Option<Target>,
    budget: Option<RetryBudget>,
    deadline: Option<Instant>,
    /// The layer above asked for one call (a probe, or another target remains).
    single_call: bool,
    /// The latest failure in which the upstream answered (not a timeout): what a cut by the
    /// deadline reports, since the upstream was not silent.
    answered_failure: Option<Failure>,
}

/// The failed attempts of a call: their records and the latest retryable failure.
struct Failures<T> {
    /// The latest retryable failure, kept until every attempt of the round has finished.
    last: Option<(Result<T, BoxError>, Failure)>,
    /// When the latest failure was recorded. The round ends in the poll that records its last
    /// failure, so deciding on the next attempt reads the clock no more.
    at: Instant,
    /// The first record, inline: a call that fails once and then succeeds allocates no list
    /// unless the log is kept.
    first: Option<AttemptRecord>,
    /// The records after the first.
    more: Vec<AttemptRecord>,
}

impl<T> Failures<T> {
    fn new(first: AttemptRecord, at: Instant) -> Box<Self> {
        Box::new(Failures {
            last: None,
            at,
            first: Some(first),
            more: Vec::new(),
        })
    }

    fn push(&mut self, record: AttemptRecord) {
        match self.first {
            None => self.first = Some(record),
            Some(_) => self.more.push(record),
        }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    /// The records, in order (the call keeps none).
    fn take_records(&mut self) -> Vec<AttemptRecord> {
        let Some(first) = self.first.take() else {
            return Vec::new();
        };
        let mut records = Vec::with_capacity(1 + self.more.len());
        records.push(first);
        records.append(&mut self.more);
        records
    }
}

/// `target` as a label: the target's name or `-`.
pub(crate) struct TargetLabel<'a>(pub(crate) &'a Option<Target>);

impl fmt::Display for TargetLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(t) => fmt::Display::fmt(t, f),
            None => f.write_str("-"),
        }
    }
}

impl<S, Req, C, R> ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
    R: ReplayRequest<Req> + RecordResponse<S::Response>,
{
    /// The future of a call whose first attempt is `first`. Built as one literal, the attempt
    /// and the call's state written in place rather than assembled aside and moved in (every
    /// layer above moves this future).
    #[inline]
    pub(crate) fn start(
        first: S::Future,
        service: Option<S>,
        shared: Arc<Shared<C, R>>,
        request: Option<Result<Req, NotReplayable>>,
        about: CallContext,
        now: Instant,
    ) -> Self {
        let CallContext {
            target,
            budget,
            attempt_budget,
        } = about;
        let own = shared.config.deadline().and_then(|d| now.checked_add(d));
        let above = attempt_budget.map(|b| b.deadline());
        let deadline = match (own, above) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let limit = AttemptLimit::new(&shared, deadline, now);
        let hedge_timer = hedge_at(&shared, 0, &request, now).map(|at| Box::pin(sleep_until(at)));
        ResponseFuture {
            hedges: Vec::new(),
            call: Call {
                phase: Phase::Waiting,
                service,
                shared,
                request,
                state: CallState {
                    sequential: 1,
                    ..CallState::default()
                },
                attempts: 1,
                hedges_sent: 0,
                hedge_due: false,
                hedge_timer,
                failures: None,
                target,
                budget,
                deadline,
                single_call: attempt_budget.is_some_and(|b| !b.allows_retries()),
                answered_failure: None,
            },
            slot: Slot::Attempt(limit.timed(first, 1, now)),
        }
    }
}

/// When an attempt started at a given time times out.
struct AttemptLimit {
    expires: Option<Instant>,
    by_deadline: bool,
}

impl AttemptLimit {
    /// The attempt timeout, or what is left before the deadline, whichever ends first.
    #[inline]
    fn new<C, R>(shared: &Shared<C, R>, deadline: Option<Instant>, now: Instant) -> Self {
        let by_timeout = shared
            .config
            .attempt_timeout()
            .and_then(|t| now.checked_add(t));
        let (expires, by_deadline) = match (by_timeout, deadline) {
            (Some(a), Some(b)) if b < a => (Some(b), true),
            (Some(a), _) => (Some(a), false),
            (None, b) => (b, b.is_some()),
        };
        AttemptLimit {
            expires,
            by_deadline,
        }
    }

    /// `fut` with this limit.
    #[inline]
    fn timed<F>(self, fut: F, attempt: u32, now: Instant) -> TimedCall<F> {
        TimedCall {
            timer: None,
            expires: self.expires,
            by_deadline: self.by_deadline,
            attempt,
            started: now,
            fut,
        }
    }
}

/// When the next hedge should be sent, `sent` hedges in, if hedging is on, one may still be
/// sent and the request can be replayed.
fn hedge_at<C, R, Req>(
    shared: &Shared<C, R>,
    sent: u32,
    request: &Option<Result<Req, NotReplayable>>,
    now: Instant,
) -> Option<Instant> {
    let hedging = shared.config.hedging()?;
    if sent >= hedging.max_hedges() || !matches!(request, Some(Ok(_))) {
        return None;
    }
    let delay = shared.latency.as_ref()?.hedge_delay(&hedging);
    now.checked_add(delay)
}

impl<S, Req, C, R> Call<S, Req, C, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
    R: ReplayRequest<Req> + RecordResponse<S::Response>,
{
    /// Wrap an attempt's future with its timeout: the attempt timeout, or what is left before
    /// the deadline, whichever ends first.
    #[inline]
    fn timed(&self, fut: S::Future, attempt: u32, now: Instant) -> TimedCall<S::Future> {
        AttemptLimit::new(&self.shared, self.deadline, now).timed(fut, attempt, now)
    }

    /// When the next hedge should be sent, if hedging is on and one may still be sent.
    fn next_hedge_at(&self, now: Instant) -> Option<Instant> {
        hedge_at(&self.shared, self.hedges_sent, &self.request, now)
    }

    fn replayable(&self) -> Result<(), NotReplayable> {
        match &self.request {
            Some(Err(why)) => Err(*why),
            _ => Ok(()),
        }
    }

    /// Send the next attempt on the (ready) service clone.
    fn launch(&mut self, hedge: bool) -> Result<TimedCall<S::Future>, NotReplayable> {
        if self.service.is_none() {
            return Err(NotReplayable::Streaming);
        }
        let mut req = match &self.request {
            Some(Ok(copy)) => self.shared.replay.replay(copy)?,
            Some(Err(why)) => return Err(*why),
            None => return Err(NotReplayable::Streaming),
        };
        self.attempts = self.attempts.saturating_add(1);
        let attempt = self.attempts;
        self.shared.replay.tag(&mut req, Attempt(attempt));
        if hedge {
            self.hedges_sent += 1;
            self.shared.counters.hedge();
            self.shared.counters_for(&self.target).hedge();
            tracing::debug!(attempt, target = %TargetLabel(&self.target), "retry: sending a hedge");
        } else {
            self.state.sequential = self.state.sequential.saturating_add(1);
            self.shared.counters.retry();
            self.shared.counters_for(&self.target).retry_attempt();
            tracing::debug!(attempt, target = %TargetLabel(&self.target), "retry: sending attempt");
        }
        let fut = match self.service.as_mut() {
            Some(service) => service.call(req),
            None => return Err(NotReplayable::Streaming),
        };
        Ok(self.timed(fut, attempt, Instant::now()))
    }

    /// Whether a hedge may be sent now (withdraws its budget).
    fn may_hedge(&mut self) -> bool {
        let Some(hedging) = self.shared.config.hedging() else {
            return false;
        };
        if self.hedges_sent >= hedging.max_hedges() || !matches!(self.request, Some(Ok(_))) {
            return false;
        }
        if let Some(budget) = &self.budget {
            if !budget.withdraw() {
                self.shared.counters.budget_exhausted();
                self.shared.counters_for(&self.target).budget_exhausted();
                tracing::debug!(target = %TargetLabel(&self.target), "retry: budget exhausted, no hedge");
                return false;
            }
        }
        true
    }

    /// Handle a finished attempt: `Some(output)` ends the call.
    fn on_finished(
        &mut self,
        done: Finished<S::Response>,
    ) -> Option<Result<S::Response, BoxError>> {
        let Finished {
            mut result,
            cut,
            attempt,
            started,
        } = done;
        let failure = match &result {
            Ok(res) => match self.shared.classifier.classify_response(res) {
                Classification::Success => None,
                Classification::Failure(f) => Some(f),
            },
            Err(e) => Some(self.shared.classifier.classify_error(&**e)),
        };
        let mut reported = None;
        if let Some(f) = failure {
            if f.kind != ErrorKind::Timeout {
                self.answered_failure = Some(f);
            } else if let (true, Some(answered)) = (cut, self.answered_failure) {
                // Cut by the deadline after the upstream had answered with an error: the call
                // failed with that error, not with a silent upstream (the record below still
                // says this attempt timed out).
                reported = Some(answered);
            }
        }
        let Some(mut failure) = failure else {
            // In place: the response is not moved through a closure on its way out.
            self.succeeded(&mut result, attempt, started);
            return Some(result);
        };
        self.record_failure(&result, failure, attempt, started);
        if let Some(answered) = reported {
            result = Err(cut_after_answer(answered));
            failure = answered;
        }
        if let Err(reason) = admissible(&self.shared.rules, &failure) {
            return Some(self.finish(result, Some(failure), reason));
        }
        if let Some(failures) = self.failures.as_mut() {
            failures.last = Some((result, failure));
        }
        None
    }

    /// An attempt succeeded: the failed attempts before it are attached to its response.
    fn succeeded(
        &mut self,
        result: &mut Result<S::Response, BoxError>,
        attempt: u32,
        started: Instant,
    ) {
        if let Some(latency) = &self.shared.latency {
            latency.record(started.elapsed());
        }
        if let (Ok(res), Some(failures)) = (result, self.failures.as_mut()) {
            self.shared.counters.recovered();
            tracing::debug!(
                attempt,
                failed = failures.len(),
                target = %TargetLabel(&self.target),
                "retry: succeeded after failed attempts"
            );
            if self.shared.replay.keeps_attempts() {
                let records = failures.take_records();
                self.shared
                    .replay
                    .attach(res, RetryAttempts::new(records, None));
            }
        }
    }

    /// Log a failed attempt and add it to the call's records.
    fn record_failure(
        &mut self,
        result: &Result<S::Response, BoxError>,
        failure: Failure,
        attempt: u32,
        started: Instant,
    ) {
        let status = result
            .as_ref()
            .ok()
            .and_then(|res| self.shared.replay.status(res));
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(started);
        tracing::debug!(
            attempt,
            kind = failure.kind.as_str(),
            status,
            elapsed_ms = elapsed.as_millis() as u64,
            retry_after_ms = failure.retry_after.map(|d| d.as_millis() as u64),
            target = %TargetLabel(&self.target),
            "retry: attempt failed"
        );
        let record = AttemptRecord {
            attempt,
            target: self.target.clone(),
            kind: failure.kind,
            status,
            elapsed,
            retry_after: failure.retry_after,
        };
        match self.failures.as_mut() {
            Some(failures) => {
                failures.push(record);
                failures.at = now;
            }
            None => self.failures = Some(Failures::new(record, now)),
        }
    }

    /// Every attempt of the round failed: retry after a delay, or stop with the last failure.
    fn end_round(&mut self) -> Result<Duration, Result<S::Response, BoxError>> {
        let Some((result, failure, now)) = self.failures.as_mut().and_then(|f| {
            f.last
                .take()
                .map(|(result, failure)| (result, failure, f.at))
        }) else {
            self.phase = Phase::Done;
            return Err(Err(
                "retry: no attempt in flight and no failure to report".into()
            ));
        };
        let shared = Arc::clone(&self.shared);
        let limits = Limits {
            replayable: self.replayable(),
            deadline: self.deadline,
            now,
            budget: self.budget.as_ref(),
        };
        let decision = if self.single_call {
            match admissible(&shared.rules, &failure) {
                Err(reason) => Decision::Stop(reason),
                Ok(()) => Decision::Stop(StopReason::SingleCall),
            }
        } else {
            decide(&shared.rules, &failure, &mut self.state, limits, || {
                shared.call_seed()
            })
        };
        match decision {
            Decision::Retry(delay) => {
                shared.counters_for(&self.target).retry(failure.kind);
                tracing::debug!(
                    kind = failure.kind.as_str(),
                    delay_ms = delay.as_millis() as u64,
                    server_delay = failure.retry_after.is_some(),
                    target = %TargetLabel(&self.target),
                    "retry: backing off"
                );
                // On the fallback chain's attempt span, when one is current and recorded (none
                // can be before any subscriber was ever set).
                if tracing::dispatcher::has_been_set() {
                    let span = tracing::Span::current();
                    if !span.is_disabled() {
                        let ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                        span.record("llm.retry.delay_ms", ms);
                    }
                }
                Ok(delay)
            }
            Decision::Stop(reason) => Err(self.finish(result, Some(failure), reason)),
        }
    }

    /// The request could not be replayed for the next attempt: stop with the last failure.
    /// Only reachable with a `ReplayRequest` whose copies stop replaying.
    fn not_replayable(&mut self, why: NotReplayable) -> Result<S::Response, BoxError> {
        let (result, failure) = match self.failures.as_mut().and_then(|f| f.last.take()) {
            Some((result, failure)) => (result, Some(failure)),
            None => (Err("retry: the request could not be replayed".into()), None),
        };
        self.finish(result, failure, StopReason::NotReplayable(why))
    }

    /// The call's output after the layer stopped for `reason`.
    fn finish(
        &mut self,
        result: Result<S::Response, BoxError>,
        failure: Option<Failure>,
        reason: StopReason,
    ) -> Result<S::Response, BoxError> {
        self.phase = Phase::Done;
        let kind = failure.map_or("unknown", |f| f.kind.as_str());
        let failed = self.failures.as_ref().map_or(0, |f| f.len());
        let pass_through = reason.is_pass_through() && failed <= 1;
        if !pass_through {
            self.shared.counters.gave_up();
            self.shared
                .counters_for(&self.target)
                .stopped(reason.as_str(), kind);
        }
        if reason == StopReason::BudgetExhausted {
            self.shared.counters.budget_exhausted();
            self.shared.counters_for(&self.target).budget_exhausted();
        }
        tracing::debug!(
            attempts = failed,
            reason = reason.as_str(),
            kind,
            target = %TargetLabel(&self.target),
            "retry: giving up: {reason}"
        );
        let mut records = || {
            self.failures
                .as_mut()
                .map_or_else(Vec::new, |f| f.take_records())
        };
        match result {
            Ok(mut res) => {
                if self.shared.replay.keeps_attempts() {
                    self.shared
                        .replay
                        .attach(&mut res, RetryAttempts::new(records(), Some(reason)));
                }
                Ok(res)
            }
            Err(e) if pass_through => Err(e),
            Err(e) => Err(Box::new(
                RetriesExhausted::new(records(), e).with_reason(reason.to_string()),
            )),
        }
    }
}

/// The error of an attempt cut by the deadline after an earlier attempt of the call had failed
/// with `answered`: the call failed with that error, not with a silent upstream (the attempt's
/// record still says it timed out).
fn cut_after_answer(answered: Failure) -> BoxError {
    let mut error = ClassifiedError::new(
        answered.kind,
        format!(
            "no answer before the deadline; the previous attempt failed with {}",
            answered.kind
        ),
    );
    if let Some(after) = answered.retry_after {
        error = error.with_retry_after(after);
    }
    Box::new(error)
}

impl<S, Req, C, R> Future for ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
    R: ReplayRequest<Req> + RecordResponse<S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.call.phase {
                Phase::Done => {
                    return Poll::Ready(
                        Err("retry response future polled after completion".into()),
                    );
                }
                Phase::Backoff => {
                    if let SlotProj::Backoff(sleep) = this.slot.as_mut().project() {
                        ready!(sleep.poll(cx));
                    }
                    this.slot.set(Slot::Empty);
                    this.call.phase = Phase::Ready;
                }
                Phase::Ready => match ready!(match this.call.service.as_mut() {
                    Some(service) => service.poll_ready(cx),
                    // No copy was kept: nothing to send again.
                    None => return Poll::Ready(this.call.not_replayable(NotReplayable::Streaming)),
                }) {
                    Err(e) => {
                        let out =
                            this.call
                                .finish(Err(e.into()), None, StopReason::ServiceNotReady);
                        return Poll::Ready(out);
                    }
                    Ok(()) => match this.call.launch(false) {
                        Ok(timed) => {
                            this.slot.set(Slot::Attempt(timed));
                            if this.call.shared.config.hedging().is_some() {
                                let next = this.call.next_hedge_at(Instant::now());
                                this.call.hedge_timer = next.map(|at| Box::pin(sleep_until(at)));
                            }
                            this.call.phase = Phase::Waiting;
                        }
                        Err(why) => return Poll::Ready(this.call.not_replayable(why)),
                    },
                },
                Phase::Waiting => {
                    if let Some(out) = poll_attempts(this.slot.as_mut(), this.hedges, this.call, cx)
                    {
                        return Poll::Ready(out);
                    }
                    if poll_hedge(this.hedges, this.call, cx) {
                        // A hedge was sent: poll it once so it registers its waker.
                        continue;
                    }
                    if matches!(*this.slot, Slot::Empty) && this.hedges.is_empty() {
                        if let Err(out) = next_round(this.slot.as_mut(), this.call) {
                            return Poll::Ready(out);
                        }
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Poll the attempts in flight (the primary slot, then the hedges); the call's output once a
/// finished attempt ends it.
fn poll_attempts<S, Req, C, R>(
    mut slot: Pin<&mut Slot<S::Future>>,
    hedges: &mut Vec<Pin<Box<TimedCall<S::Future>>>>,
    call: &mut Call<S, Req, C, R>,
    cx: &mut Context<'_>,
) -> Option<Result<S::Response, BoxError>>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
    R: ReplayRequest<Req> + RecordResponse<S::Response>,
{
    if let SlotProj::Attempt(attempt) = slot.as_mut().project() {
        if let Poll::Ready(done) = attempt.poll(cx) {
            slot.set(Slot::Empty);
            if let Some(out) = call.on_finished(done) {
                call.phase = Phase::Done;
                hedges.clear();
                return Some(out);
            }
        }
    }
    let mut i = 0;
    while let Some(hedge) = hedges.get_mut(i) {
        match hedge.as_mut().poll(cx) {
            Poll::Pending => i += 1,
            Poll::Ready(done) => {
                drop(hedges.swap_remove(i));
                if let Some(out) = call.on_finished(done) {
                    call.phase = Phase::Done;
                    slot.set(Slot::Empty);
                    hedges.clear();
                    return Some(out);
                }
            }
        }
    }
    None
}

/// Every attempt of the round has finished: back off before the next one (`Ok`), or stop with
/// the call's output (`Err`).
fn next_round<S, Req, C, R>(
    mut slot: Pin<&mut Slot<S::Future>>,
    call: &mut Call<S, Req, C, R>,
) -> Result<(), Result<S::Response, BoxError>>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
    R: ReplayRequest<Req> + RecordResponse<S::Response>,
{
    call.hedge_timer = None;
    call.hedge_due = false;
    match call.end_round() {
        Err(out) => return Err(out),
        Ok(delay) if delay.is_zero() => call.phase = Phase::Ready,
        Ok(delay) => {
            // `sleep` clamps an overflowing deadline to its far future.
            slot.set(Slot::Backoff(tokio::time::sleep(delay)));
            call.phase = Phase::Backoff;
        }
    }
    Ok(())
}

/// Drive the hedge timer; `true` when a hedge was sent.
fn poll_hedge<S, Req, C, R>(
    hedges: &mut Vec<Pin<Box<TimedCall<S::Future>>>>,
    call: &mut Call<S, Req, C, R>,
    cx: &mut Context<'_>,
) -> bool
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
    R: ReplayRequest<Req> + RecordResponse<S::Response>,
{
    let Some(sleep) = call.hedge_timer.as_mut() else {
        return false;
    };
    if !call.hedge_due {
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        if !call.may_hedge() {
            call.hedge_timer = None;
            return false;
        }
        call.hedge_due = true;
    }
    let Some(service) = call.service.as_mut() else {
        // Hedges need the copy of the request, kept only with a service clone.
        call.hedge_timer = None;
        return false;
    };
    match service.poll_ready(cx) {
        Poll::Pending => false,
        Poll::Ready(Err(e)) => {
            // The service cannot take a hedge; the attempts in flight carry on.
            let e: BoxError = e.into();
            tracing::debug!(error = %e, "retry: service not ready for a hedge");
            call.hedge_due = false;
            call.hedge_timer = None;
            false
        }
        Poll::Ready(Ok(())) => {
            call.hedge_due = false;
            match call.launch(true) {
                Ok(timed) => hedges.push(Box::pin(timed)),
                Err(_) => {
                    call.hedge_timer = None;
                    return false;
                }
            }
            let now = Instant::now();
            match call.next_hedge_at(now) {
                Some(at) => {
                    if let Some(sleep) = call.hedge_timer.as_mut() {
                        sleep.as_mut().reset(at);
                    }
                }
                None => call.hedge_timer = None,
            }
            true
        }
    }
}

impl<S, Req, C, R> fmt::Debug for ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("phase", &self.call.phase)
            .field("attempts", &self.call.attempts)
            .field("hedges_in_flight", &self.hedges.len())
            .finish()
    }
}
