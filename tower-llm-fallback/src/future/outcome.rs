//! What an attempt led to: commit to an answer, or record a failure and move on.

use std::mem;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};
use tokio::time::Instant;
use tower_llm_core::{
    AttemptRecord, BoxError, BreakerOpen, ClassifiedError, ErrorKind, Failure, Origin, ReplayBody,
    ReplayableBody, StreamEnd, StreamOutcome,
};
use tracing::Span;

use super::{Ctx, Current, Next, Output};
use crate::body::FallbackBody;
use crate::chain::Shared;
use crate::health::{Failed, FailedCall, ProbeSlot};
use crate::metrics::AttemptOutcome;
use crate::report::{FallbackKind, FallbackReport, X_LLM_FALLBACK, X_LLM_TARGET};
use crate::target::TargetRuntime;
use crate::trace;
use tower_llm_core::content_type::is_event_stream;

impl<S, B, C> Ctx<S, B, C>
where
    S: Clone,
    B: ReplayableBody,
{
    /// Commit to the current target's answer.
    pub(super) fn commit<ResB>(
        &mut self,
        res: Response<ReplayBody<ResB>>,
    ) -> Response<FallbackBody<ResB>> {
        let Some(mut current) = self.current.take() else {
            return res.map(FallbackBody::new);
        };
        let Some(target) = self.inner.shared.targets.get(current.idx) else {
            return res.map(FallbackBody::new);
        };
        let took = Instant::now().saturating_duration_since(current.started);
        target
            .metrics
            .attempt(&target.name, AttemptOutcome::Success, took);
        // The attempt's span goes with the answer's body: usage and the end arrive with it.
        let span = mem::replace(&mut current.span, Span::none());
        self.answering(&span, res.status(), res.headers(), took);
        if let Some(stream) = res.extensions().get::<StreamOutcome>().cloned() {
            // A committed stream can still be cut: the target's health waits for its end.
            let shared = Arc::clone(&self.inner.shared);
            let (idx, probe, started) = (current.idx, current.probe, current.started);
            let end_span = (!span.is_disabled()).then(|| span.clone());
            stream.on_end(move |end| {
                if let (Some(span), Some(failure)) = (end_span, end.failure()) {
                    trace::stream_failed(&span, failure.kind);
                }
                record_stream_end(&shared, idx, probe, started, end)
            });
            let mut res = self.answered_by(current.idx, res);
            res.body_mut().set_span(span);
            return res;
        }
        let probe = current.probe.is_some_and(ProbeSlot::settle);
        target.state.on_success(probe, current.started);
        target.count_success();
        if probe {
            tracing::info!(target_name = %target.name, "probe succeeded: target back in service");
        }
        let mut res = self.answered_by(current.idx, res);
        res.body_mut().set_span(span);
        res
    }

    /// Record the answering attempt on its span: outcome, status, why the chain got here, and
    /// for a stream the time to its first answer event.
    fn answering(&self, span: &Span, status: StatusCode, headers: &HeaderMap, took: Duration) {
        if span.is_disabled() {
            return;
        }
        // Read here, past the check: most answers have no span to record it on.
        let stream = is_event_stream(headers);
        span.record("llm.outcome", "success");
        span.record("http.response.status_code", i64::from(status.as_u16()));
        if let Some(first) = self.attempts.first() {
            span.record("llm.fallback.reason", first.kind.as_str());
        }
        if stream {
            span.record("llm.ttft_ms", trace::millis(took));
        }
    }

    /// Mark `res` as target `idx`'s answer.
    fn answered_by<ResB>(
        &mut self,
        idx: usize,
        res: Response<ReplayBody<ResB>>,
    ) -> Response<FallbackBody<ResB>> {
        let mut res = res.map(FallbackBody::new);
        let Some(target) = self.inner.shared.targets.get(idx) else {
            return res;
        };
        let fallback = if self.resume.is_some() {
            // A continuation of a stream already counted.
            FallbackKind::Target
        } else if self.attempts.is_empty() {
            target.count_served_first();
            FallbackKind::None
        } else {
            target.metrics.answered_after_fallback(&target.name);
            if let Some(first) = self.attempts.first() {
                target.metrics.fell_back(&target.name, first.kind);
            }
            tracing::debug!(target_name = %target.name, attempts = self.attempts.len(), "answered by a fallback target");
            FallbackKind::Target
        };
        let headers = res.headers_mut();
        headers.insert(X_LLM_TARGET, target.name_header.clone());
        headers.insert(X_LLM_FALLBACK, fallback.header_value());
        if self.inner.shared.report {
            res.extensions_mut().insert(FallbackReport {
                fallback,
                target: Some(target.name.clone()),
                upstream: Some(target.target.clone()),
                tier: Some(target.tier),
                attempts: mem::take(&mut self.attempts),
                cache_age: None,
            });
        }
        res
    }

    /// Record a failed attempt; decide whether the chain moves on.
    pub(super) fn on_failure<ResB>(
        &mut self,
        failure: Failure,
        status: Option<StatusCode>,
        error: Option<BoxError>,
        res: Option<Response<ResB>>,
    ) -> Next<ResB> {
        let now = Instant::now();
        let Some(Current {
            idx,
            started,
            probe,
            span,
            ..
        }) = self.current.take()
        else {
            return Next::Select;
        };
        let inner = Arc::clone(&self.inner);
        let Some(target) = inner.shared.targets.get(idx) else {
            return Next::Select;
        };
        let kind = failure.kind;
        let status = status.map(|s| s.as_u16());
        let local = failure.origin == Origin::Local;
        target.metrics.unsuccessful(&target.name, local, kind);
        let outcome = if local {
            AttemptOutcome::Rejected
        } else {
            AttemptOutcome::Failure
        };
        let took = now.saturating_duration_since(started);
        target.metrics.attempt(&target.name, outcome, took);
        let record = AttemptRecord {
            attempt: self.calls,
            target: Some(target.target.clone()),
            kind,
            status,
            elapsed: took,
            retry_after: failure.retry_after,
        };
        let refused = !kind.fails_over() || kind == ErrorKind::ContextLength;
        let traced = match (local, refused) {
            (true, _) => "rejected",
            (false, true) => "refused",
            (false, false) => "failure",
        };
        trace::failed(&span, traced, kind, status, failure.retry_after);
        drop(span);
        if local {
            // A layer below refused without calling the target: skip it, count nothing.
            drop(probe);
            refused_locally(target, &inner.shared, error.as_deref(), kind, now);
        } else if self.resume.is_some() && (!kind.fails_over() || kind == ErrorKind::ContextLength)
        {
            // A continuation refused (a prefill it does not take, say): the target is fine, and
            // this refusal is not what the caller should see; walk on.
            target
                .state
                .on_success(probe.is_some_and(ProbeSlot::settle), started);
            tracing::debug!(target_name = %target.name, kind = kind.as_str(), status, "continuation refused; moving on");
        } else if !kind.fails_over() || kind == ErrorKind::ContextLength {
            // The target answered; the request is at fault. It stays in service.
            target
                .state
                .on_success(probe.is_some_and(ProbeSlot::settle), started);
            if self.stops_at_request_error(kind, target.context_window) {
                tracing::debug!(target_name = %target.name, kind = kind.as_str(), "returning the provider's answer unchanged");
                return Next::Return(self.provider_answer(idx, kind, res, error));
            }
        } else {
            let probe = probe.is_some_and(ProbeSlot::settle);
            let call = FailedCall {
                kind,
                retry_after: failure.retry_after,
                status,
                probe,
                started,
            };
            let failed = bench(target, &inner.shared, call, now);
            tracing::warn!(
                target_name = %target.name,
                kind = kind.as_str(),
                status,
                probe,
                cooldown_ms = failed.benched_for.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                "fallback target failed; moving on"
            );
        }
        drop(res);
        self.attempts.push(record);
        self.last_error =
            Some(error.unwrap_or_else(|| attempt_error(&target.name, &failure, status)));
        Next::Select
    }

    /// After an error of the request (not of the target): whether the chain stops here. A
    /// context-length error moves on to a target with a larger context window, if one is left.
    fn stops_at_request_error(&mut self, kind: ErrorKind, context_window: Option<u64>) -> bool {
        kind != ErrorKind::ContextLength || {
            self.walk.raise_floor(context_window);
            !self.inner.shared.any_left(&self.walk)
        }
    }

    /// The provider's answer to a request it refused, unchanged (or its error).
    fn provider_answer<ResB>(
        &mut self,
        idx: usize,
        kind: ErrorKind,
        res: Option<Response<ResB>>,
        error: Option<BoxError>,
    ) -> Output<ResB> {
        match (res, error) {
            (Some(res), _) => Ok(self.answered_by(idx, res.map(ReplayBody::streaming))),
            (None, Some(error)) => Err(error),
            (None, None) => Err(Box::new(ClassifiedError::new(
                kind,
                "request refused by the provider",
            ))),
        }
    }
}

/// A layer below refused without calling the target. An open breaker below benches the target
/// until its next probe, which the chain then sends (and the breaker lets through).
fn refused_locally(
    target: &TargetRuntime,
    shared: &Shared,
    error: Option<&(dyn std::error::Error + Send + Sync + 'static)>,
    kind: ErrorKind,
    now: Instant,
) {
    if let Some(open) = error.and_then(find_breaker_open) {
        target
            .state
            .on_breaker_open(open.retry_after(), &shared.cooldowns, now);
    }
    tracing::debug!(target_name = %target.name, kind = kind.as_str(), "fallback target refused locally; moving on");
}

/// Record a failure of the target itself: its health (cooldown, streak) and the escalation hook.
fn bench(target: &TargetRuntime, shared: &Shared, call: FailedCall, now: Instant) -> Failed {
    let kind = call.kind;
    let failed = target.state.on_failure(call, &shared.cooldowns, now);
    shared
        .escalator
        .on_failure(&target.name, kind, failed.streak, now);
    failed
}

/// The error of a failed attempt that brought none of its own.
fn attempt_error(name: &str, failure: &Failure, status: Option<u16>) -> BoxError {
    let message = match status {
        Some(status) => format!("target `{name}` answered HTTP {status}"),
        None => format!("target `{name}` failed"),
    };
    let mut error = ClassifiedError::new(failure.kind, message);
    if let Some(after) = failure.retry_after {
        error = error.with_retry_after(after);
    }
    Box::new(error)
}

/// The verdict on a committed stream, once its body ended: a stream cut mid-answer (or ended by
/// an in-band error or a stall) is a failure of the target that answered, with the cooldown its
/// kind calls for; a complete stream is a success; a stream the client abandoned counts as a
/// success of the target (it was answering) but settles nothing else.
fn record_stream_end(
    shared: &Shared,
    idx: usize,
    probe: Option<ProbeSlot>,
    started: Instant,
    end: StreamEnd,
) {
    let Some(target) = shared.targets.get(idx) else {
        return;
    };
    match end.failure() {
        Some(failure) if failure.kind.fails_over() && failure.origin == Origin::Upstream => {
            let now = Instant::now();
            let probe = probe.is_some_and(ProbeSlot::settle);
            let call = FailedCall {
                kind: failure.kind,
                retry_after: failure.retry_after,
                status: None,
                probe,
                started,
            };
            bench(target, shared, call, now);
            tracing::warn!(
                target_name = %target.name,
                kind = failure.kind.as_str(),
                "stream failed after commit"
            );
        }
        _ => {
            let probe = probe.is_some_and(ProbeSlot::settle);
            target.state.on_success(probe, started);
            target.count_success();
        }
    }
}

/// The breaker rejection in `error`'s source chain, if any.
fn find_breaker_open<'a>(
    error: &'a (dyn std::error::Error + Send + Sync + 'static),
) -> Option<&'a BreakerOpen> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(open) = e.downcast_ref::<BreakerOpen>() {
            return Some(open);
        }
        current = e.source();
    }
    None
}
