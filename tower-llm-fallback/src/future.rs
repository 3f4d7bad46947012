//! [`ResponseFuture`]: one request's walk down the chain.
//!
//! A hand-written state machine (no boxing on the path where the first target answers a JSON
//! request): select a target, wait for its service to be ready, call it, classify the answer,
//! and either commit to it or record the failure and select again. Streams are peeked until
//! their first event before committing; with a cache tier, JSON answers are read whole first.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, AGE, CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body::Body;
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};
use tower_llm_core::{
    classify_error, AllTargetsFailed, AttemptBudget, AttemptRecord, AttemptTimeout, BoxError,
    BreakerOpen, Classification, ClassifiedError, Classify, ErrorKind, Failure, Origin, ReplayBody,
    ReplayableBody, StreamEnd, StreamOutcome,
};
use tower_service::Service;

use crate::body::FallbackBody;
use crate::cache::{cache_key, is_json, Insert};
use crate::chain::{Shared, Step, Walk};
use crate::error::RewriteError;
use crate::health::{after, FailedCall, InFlight, ProbeSlot};
use crate::json::member_is_true;
use crate::peek::{is_event_stream, Peek, PeekOutcome};
use crate::report::{FallbackKind, FallbackReport, X_LLM_FALLBACK, X_LLM_TARGET};
use crate::rewrite::Parts;
use crate::service::Inner;
use crate::static_tier::completion_to_sse;

type BufferFuture<B> = Pin<Box<dyn Future<Output = Result<ReplayBody<B>, BoxError>> + Send>>;
type Output<B> = Result<Response<FallbackBody<B>>, BoxError>;

#[pin_project(project = PhaseProj)]
enum Phase<S, B, F, ResB> {
    /// Pick the next target.
    Select,
    /// Wait for the chosen target's service (a clone) to be ready, then send it `req`.
    Ready { svc: S, req: Option<Request<B>> },
    /// Wait for its response.
    Calling {
        #[pin]
        fut: F,
    },
    /// A stream: wait for its first answer event.
    /// (Boxed: the decoder is large and only streams need it.)
    Peeking {
        peek: Box<Peek<ResB>>,
        parts: Option<http::response::Parts>,
    },
    /// A JSON answer read whole for the cache (boxed: only with a cache tier).
    Buffering {
        fut: BufferFuture<ResB>,
        parts: Option<http::response::Parts>,
    },
    /// Finished.
    Done,
}

/// Response future of [`Fallback`](crate::Fallback).
#[pin_project]
pub struct ResponseFuture<S, B, ResB, C>
where
    S: Service<Request<B>>,
{
    #[pin]
    phase: Phase<S, B, S::Future, ResB>,
    /// The current attempt's timeout, created the first time an attempt has to wait.
    #[pin]
    timer: Option<Sleep>,
    ctx: Ctx<S, B, C>,
}

/// The attempt in progress.
struct Current {
    idx: usize,
    started: Instant,
    probe: Option<ProbeSlot>,
    _in_flight: InFlight,
}

/// What selecting a target led to.
enum Started<S, B, ResB> {
    /// Call this service (a clone of the target's) with this request.
    Attempt(S, Request<B>),
    /// The chain finished: a tier answered, or everything failed.
    Finished(Output<ResB>),
}

/// What to do after a state's verdict.
enum Next<ResB> {
    Select,
    Return(Output<ResB>),
    Peek(Box<Peek<ResB>>, http::response::Parts),
    Buffer(BufferFuture<ResB>, http::response::Parts),
}

struct Ctx<S, B, C> {
    inner: Arc<Inner<S, C>>,
    /// The caller's request, kept for later attempts (taken when it can be sent only once).
    original: Option<Request<B>>,
    current: Option<Current>,
    deadline: Option<Instant>,
    walk: Walk,
    attempts: Vec<AttemptRecord>,
    calls: u32,
    last_error: Option<BoxError>,
}

impl<S, B, ResB, C> ResponseFuture<S, B, ResB, C>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(inner: Arc<Inner<S, C>>, req: Request<B>) -> Self {
        ResponseFuture {
            phase: Phase::Select,
            timer: None,
            ctx: Ctx {
                inner,
                original: Some(req),
                current: None,
                deadline: None,
                walk: Walk::default(),
                attempts: Vec::new(),
                calls: 0,
                last_error: None,
            },
        }
    }
}

/// Whether the attempt deadline passed; arms (or re-arms) the timer so the task is woken then.
fn expired(
    mut timer: Pin<&mut Option<Sleep>>,
    deadline: Option<Instant>,
    cx: &mut Context<'_>,
) -> bool {
    let Some(deadline) = deadline else {
        return false;
    };
    if timer.is_none() {
        timer.set(Some(tokio::time::sleep_until(deadline)));
    }
    match timer.as_pin_mut() {
        Some(mut sleep) => {
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            sleep.poll(cx).is_ready()
        }
        None => false,
    }
}

impl<S, B, ResB, C> Future for ResponseFuture<S, B, ResB, C>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: ReplayableBody,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
    C: Classify<Response<ResB>>,
{
    type Output = Output<ResB>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.phase.as_mut().project() {
                PhaseProj::Select => match this.ctx.start_next() {
                    Started::Attempt(svc, req) => {
                        this.phase.set(Phase::Ready {
                            svc,
                            req: Some(req),
                        });
                        continue;
                    }
                    Started::Finished(out) => Next::Return(out),
                },
                PhaseProj::Ready { svc, req } => match svc.poll_ready(cx) {
                    Poll::Ready(Ok(())) => match req.take() {
                        Some(req) => {
                            let fut = svc.call(req);
                            this.phase.set(Phase::Calling { fut });
                            continue;
                        }
                        None => Next::Select,
                    },
                    Poll::Ready(Err(err)) => this.ctx.on_error(err.into()),
                    Poll::Pending if expired(this.timer.as_mut(), this.ctx.deadline, cx) => {
                        this.ctx.on_timeout()
                    }
                    Poll::Pending => return Poll::Pending,
                },
                PhaseProj::Calling { fut } => match fut.poll(cx) {
                    Poll::Ready(Ok(res)) => this.ctx.on_response(res),
                    Poll::Ready(Err(err)) => this.ctx.on_error(err.into()),
                    Poll::Pending if expired(this.timer.as_mut(), this.ctx.deadline, cx) => {
                        this.ctx.on_timeout()
                    }
                    Poll::Pending => return Poll::Pending,
                },
                PhaseProj::Peeking { peek, parts } => match peek.poll_peek(cx) {
                    Poll::Ready(PeekOutcome::Commit { prefix, rest }) => match parts.take() {
                        Some(parts) => {
                            let res =
                                Response::from_parts(parts, ReplayBody::prefixed(prefix, rest));
                            Next::Return(Ok(this.ctx.commit(res)))
                        }
                        None => Next::Select,
                    },
                    Poll::Ready(PeekOutcome::Fail { failure, error }) => {
                        let status = parts.as_ref().map(|p| p.status);
                        this.ctx
                            .on_failure::<ResB>(failure, status, Some(error), None)
                    }
                    Poll::Pending if expired(this.timer.as_mut(), this.ctx.deadline, cx) => {
                        this.ctx.on_timeout()
                    }
                    Poll::Pending => return Poll::Pending,
                },
                PhaseProj::Buffering { fut, parts } => match fut.as_mut().poll(cx) {
                    Poll::Ready(Ok(body)) => match parts.take() {
                        Some(parts) => this.ctx.on_buffered(parts, body),
                        None => Next::Select,
                    },
                    Poll::Ready(Err(error)) => {
                        let failure = classify_error(&*error);
                        let status = parts.as_ref().map(|p| p.status);
                        this.ctx
                            .on_failure::<ResB>(failure, status, Some(error), None)
                    }
                    Poll::Pending if expired(this.timer.as_mut(), this.ctx.deadline, cx) => {
                        this.ctx.on_timeout()
                    }
                    Poll::Pending => return Poll::Pending,
                },
                PhaseProj::Done => {
                    return Poll::Ready(Err(Box::new(ClassifiedError::new(
                        ErrorKind::Unknown,
                        "fallback response future polled after completion",
                    ))))
                }
            };
            match next {
                Next::Select => this.phase.set(Phase::Select),
                Next::Return(out) => {
                    this.phase.set(Phase::Done);
                    return Poll::Ready(out);
                }
                Next::Peek(peek, parts) => this.phase.set(Phase::Peeking {
                    peek,
                    parts: Some(parts),
                }),
                Next::Buffer(fut, parts) => this.phase.set(Phase::Buffering {
                    fut,
                    parts: Some(parts),
                }),
            }
        }
    }
}

/// `original`'s method, URI, version, headers and extensions with `body`.
fn copy_request<B>(original: &Request<B>, body: B) -> Request<B> {
    let mut req = Request::new(body);
    *req.method_mut() = original.method().clone();
    *req.uri_mut() = original.uri().clone();
    *req.version_mut() = original.version();
    *req.headers_mut() = original.headers().clone();
    *req.extensions_mut() = original.extensions().clone();
    req
}

impl<S, B, C> Ctx<S, B, C>
where
    S: Clone,
    B: ReplayableBody,
{
    /// Start the next attempt (its service and request), or finish (`Err`): a tier answered or
    /// everything failed.
    fn start_next<ResB>(&mut self) -> Started<S, B, ResB> {
        let now = Instant::now();
        loop {
            if self.original.is_none() {
                // The request went out once and cannot be sent again.
                return Started::Finished(self.exhausted(now));
            }
            let step = self.inner.shared.next(&mut self.walk, now);
            let (idx, probe) = match step {
                Step::Skip(record) => {
                    self.attempts.push(record);
                    continue;
                }
                Step::End => return Started::Finished(self.exhausted(now)),
                Step::Call { idx, probe } => (idx, probe),
            };
            let Some(target) = self.inner.shared.targets.get(idx) else {
                return Started::Finished(self.exhausted(now));
            };
            let probe = probe.then(|| ProbeSlot::new(&target.state));
            self.calls += 1;
            // Time flows down: the layers below stop at this target's deadline, and make one
            // call (no retry) for a probe or when another target could answer instead.
            let deadline = after(now, target.attempt_timeout);
            let budget = AttemptBudget::until(deadline);
            let budget = if probe.is_some() {
                budget.probe()
            } else if self.inner.shared.another_available(&self.walk, idx, now) {
                budget.single_call()
            } else {
                budget
            };
            match self.prepare(idx, budget) {
                Ok(req) => {
                    let (Some(target), Some(svc)) = (
                        self.inner.shared.targets.get(idx),
                        self.inner.services.get(idx),
                    ) else {
                        return Started::Finished(self.exhausted(now));
                    };
                    self.current = Some(Current {
                        idx,
                        started: now,
                        probe,
                        _in_flight: target.state.enter(),
                    });
                    self.deadline = Some(deadline);
                    return Started::Attempt(svc.clone(), req);
                }
                Err(err) => {
                    // Refused here, before any call: nothing learned about the target.
                    drop(probe);
                    tracing::warn!(
                        target_name = err.target(),
                        reason = err.reason(),
                        "fallback target skipped"
                    );
                    self.attempts.push(AttemptRecord {
                        attempt: self.calls,
                        target: self.inner.shared.targets.get(idx).map(|t| t.target.clone()),
                        kind: ErrorKind::BadRequest,
                        status: None,
                        elapsed: std::time::Duration::ZERO,
                        retry_after: None,
                    });
                    self.last_error = Some(Box::new(err));
                }
            }
        }
    }

    /// The request for target `idx`: a copy of the caller's (or the request itself when it can
    /// go out only once), rewritten for the target, with the `Target` and `AttemptBudget`
    /// extensions set.
    fn prepare(&mut self, idx: usize, budget: AttemptBudget) -> Result<Request<B>, RewriteError> {
        let shared = &self.inner.shared;
        let Some(target) = shared.targets.get(idx) else {
            return Err(RewriteError::uri("?".into()));
        };
        let Some(original) = self.original.as_ref() else {
            return Err(RewriteError::not_replayable(target.name.clone()));
        };
        let edited = target
            .rewrite
            .apply_body(original.body().buffered())
            .map_err(|_| RewriteError::not_buffered(target.name.clone()))?;
        let body = match edited {
            Some(bytes) => Some(B::from_bytes(bytes)),
            None if shared.retains_request => original.body().try_clone(),
            None => None,
        };
        let req = match (body, self.original.take()) {
            (Some(body), Some(original)) => {
                let req = copy_request(&original, body);
                self.original = Some(original);
                req
            }
            // Not replayable (or not needed again): send the request itself.
            (None, Some(original)) => original,
            (_, None) => return Err(RewriteError::not_replayable(target.name.clone())),
        };
        let (mut parts, body) = req.into_parts();
        target
            .rewrite
            .apply_parts(
                Parts {
                    uri: &mut parts.uri,
                    headers: &mut parts.headers,
                },
                &shared.request_base_path,
            )
            .map_err(|_| RewriteError::uri(target.name.clone()))?;
        parts.extensions.insert(target.target.clone());
        parts.extensions.insert(budget);
        Ok(Request::from_parts(parts, body))
    }

    fn on_error<ResB>(&mut self, error: BoxError) -> Next<ResB>
    where
        C: Classify<Response<ResB>>,
    {
        let failure = self.inner.classifier.classify_error(&*error);
        self.on_failure(failure, None, Some(error), None)
    }

    fn on_timeout<ResB>(&mut self) -> Next<ResB> {
        let timeout = self
            .current
            .as_ref()
            .and_then(|c| self.inner.shared.targets.get(c.idx))
            .map(|t| t.attempt_timeout)
            .unwrap_or_default();
        self.on_failure(
            Failure::new(ErrorKind::Timeout),
            None,
            Some(Box::new(AttemptTimeout::new(timeout))),
            None,
        )
    }

    fn on_response<ResB>(&mut self, res: Response<ResB>) -> Next<ResB>
    where
        C: Classify<Response<ResB>>,
        ResB: Body<Data = Bytes> + Unpin + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        match self.inner.classifier.classify_response(&res) {
            Classification::Success => {
                if is_event_stream(res.headers()) {
                    let (parts, body) = res.into_parts();
                    return Next::Peek(Box::new(Peek::new(body)), parts);
                }
                if let Some(cache) = &self.inner.shared.cache {
                    if self
                        .original
                        .as_ref()
                        .is_some_and(|r| r.body().buffered().is_some())
                    {
                        let limit = cache.config().entry_limit();
                        let (parts, body) = res.into_parts();
                        return Next::Buffer(Box::pin(ReplayBody::buffer(body, limit)), parts);
                    }
                }
                Next::Return(Ok(self.commit(res.map(ReplayBody::streaming))))
            }
            Classification::Failure(failure) => {
                let status = Some(res.status());
                self.on_failure(failure, status, None, Some(res))
            }
        }
    }

    /// A JSON answer read whole: store it in the cache, or fail over when it is not JSON.
    fn on_buffered<ResB>(
        &mut self,
        parts: http::response::Parts,
        body: ReplayBody<ResB>,
    ) -> Next<ResB> {
        if let (Some(bytes), Some(current)) = (body.bytes(), self.current.as_ref()) {
            let shared = &self.inner.shared;
            let key = self
                .original
                .as_ref()
                .and_then(|r| r.body().buffered())
                .and_then(|b| cache_key(b));
            let verdict = match (&shared.cache, key, shared.targets.get(current.idx)) {
                (Some(cache), Some(key), Some(target)) => cache.insert(
                    key,
                    bytes,
                    target.name.clone(),
                    target.target.clone(),
                    Instant::now(),
                ),
                _ if is_json(bytes) => Insert::Skipped,
                _ => Insert::NotJson,
            };
            if verdict == Insert::NotJson {
                let kind = ErrorKind::InvalidResponse;
                let error = ClassifiedError::new(kind, "2xx answer whose body is not JSON");
                return self.on_failure::<ResB>(
                    Failure::new(kind),
                    Some(parts.status),
                    Some(Box::new(error)),
                    None,
                );
            }
        }
        Next::Return(Ok(self.commit(Response::from_parts(parts, body))))
    }

    /// Commit to the current target's answer.
    fn commit<ResB>(&mut self, res: Response<ReplayBody<ResB>>) -> Response<FallbackBody<ResB>> {
        let Some(current) = self.current.take() else {
            return res.map(FallbackBody::new);
        };
        let Some(target) = self.inner.shared.targets.get(current.idx) else {
            return res.map(FallbackBody::new);
        };
        if let Some(stream) = res.extensions().get::<StreamOutcome>().cloned() {
            // A committed stream can still be cut: the target's health waits for its end.
            let shared = Arc::clone(&self.inner.shared);
            let (idx, probe, started) = (current.idx, current.probe, current.started);
            stream.on_end(move |end| record_stream_end(&shared, idx, probe, started, end));
            return self.answered_by(current.idx, res);
        }
        let probe = current.probe.is_some_and(ProbeSlot::settle);
        target.state.on_success(probe, current.started);
        target.count_success();
        if probe {
            tracing::info!(target_name = %target.name, "probe succeeded: target back in service");
        }
        self.answered_by(current.idx, res)
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
        let fallback = if self.attempts.is_empty() {
            target.count_served_first();
            FallbackKind::None
        } else {
            metrics::counter!(
                crate::metrics::RESPONSES_TOTAL,
                crate::metrics::TARGET => target.name.clone(),
                crate::metrics::OUTCOME => FallbackKind::Target.as_str()
            )
            .increment(1);
            tracing::debug!(target_name = %target.name, attempts = self.attempts.len(), "answered by a fallback target");
            FallbackKind::Target
        };
        let headers = res.headers_mut();
        headers.insert(X_LLM_TARGET, target.name_header.clone());
        headers.insert(X_LLM_FALLBACK, fallback.header_value());
        res.extensions_mut().insert(FallbackReport {
            fallback,
            target: Some(target.name.clone()),
            upstream: Some(target.target.clone()),
            tier: Some(target.tier),
            attempts: mem::take(&mut self.attempts),
            cache_age: None,
        });
        res
    }

    /// Record a failed attempt; decide whether the chain moves on.
    fn on_failure<ResB>(
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
        metrics::counter!(
            crate::metrics::ATTEMPTS_TOTAL,
            crate::metrics::TARGET => target.name.clone(),
            crate::metrics::OUTCOME => if local { "rejected" } else { "failure" },
            crate::metrics::KIND => kind.as_str()
        )
        .increment(1);
        let record = AttemptRecord {
            attempt: self.calls,
            target: Some(target.target.clone()),
            kind,
            status,
            elapsed: now.saturating_duration_since(started),
            retry_after: failure.retry_after,
        };
        if local {
            // A layer below refused without calling the target: skip it, count nothing. An open
            // breaker below benches the target until its next probe, which the chain then sends
            // (and the breaker lets through).
            drop(probe);
            if let Some(open) = error.as_deref().and_then(find_breaker_open) {
                target
                    .state
                    .on_breaker_open(open.retry_after(), &inner.shared.cooldowns, now);
            }
            tracing::debug!(target_name = %target.name, kind = kind.as_str(), "fallback target refused locally; moving on");
        } else if !kind.fails_over() || kind == ErrorKind::ContextLength {
            // The target answered; the request is at fault. It stays in service.
            target
                .state
                .on_success(probe.is_some_and(ProbeSlot::settle), started);
            let stop = kind != ErrorKind::ContextLength || {
                self.walk.raise_floor(target.context_window);
                !inner.shared.any_left(&self.walk)
            };
            if stop {
                tracing::debug!(target_name = %target.name, kind = kind.as_str(), "returning the provider's answer unchanged");
                return Next::Return(match (res, error) {
                    (Some(res), _) => Ok(self.answered_by(idx, res.map(ReplayBody::streaming))),
                    (None, Some(error)) => Err(error),
                    (None, None) => Err(Box::new(ClassifiedError::new(
                        kind,
                        "request refused by the provider",
                    ))),
                });
            }
        } else {
            let probe = probe.is_some_and(ProbeSlot::settle);
            let failed = target.state.on_failure(
                FailedCall {
                    kind,
                    retry_after: failure.retry_after,
                    status,
                    probe,
                    started,
                },
                &inner.shared.cooldowns,
                now,
            );
            inner
                .shared
                .escalator
                .on_failure(&target.name, kind, failed.streak, now);
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
        self.last_error = Some(error.unwrap_or_else(|| {
            let message = match status {
                Some(status) => format!("target `{}` answered HTTP {status}", target.name),
                None => format!("target `{}` failed", target.name),
            };
            let mut error = ClassifiedError::new(kind, message);
            if let Some(after) = failure.retry_after {
                error = error.with_retry_after(after);
            }
            Box::new(error)
        }));
        Next::Select
    }

    /// Every target failed or was skipped: the cache tier, the static tier, or the error.
    fn exhausted<ResB>(&mut self, now: Instant) -> Output<ResB> {
        let inner = Arc::clone(&self.inner);
        let shared = &inner.shared;
        let body = self.original.as_ref().and_then(|r| r.body().buffered());
        let stream = body.is_some_and(|b| member_is_true(b, "stream"));
        if let (Some(cache), Some(body)) = (&shared.cache, body) {
            if let Some(hit) = cache_key(body).and_then(|key| cache.get(&key, now)) {
                let content = if stream {
                    completion_to_sse(&hit.body)
                } else {
                    Some(hit.body.clone())
                };
                if let Some(content) = content {
                    shared
                        .escalator
                        .on_all_failed(&self.attempts, Some(FallbackKind::Cache));
                    let age = now.saturating_duration_since(hit.stored_at);
                    let name = HeaderValue::from_str(&hit.target_name)
                        .unwrap_or(HeaderValue::from_static("cache"));
                    let mut res = tier_response(content, stream, name, FallbackKind::Cache);
                    res.headers_mut()
                        .insert(AGE, HeaderValue::from(age.as_secs()));
                    res.extensions_mut().insert(FallbackReport {
                        fallback: FallbackKind::Cache,
                        target: Some(hit.target_name),
                        upstream: Some(hit.target),
                        tier: None,
                        attempts: mem::take(&mut self.attempts),
                        cache_age: Some(age),
                    });
                    count_tier(FallbackKind::Cache);
                    return Ok(res);
                }
            }
        }
        if let Some(answer) = &shared.static_answer {
            shared
                .escalator
                .on_all_failed(&self.attempts, Some(FallbackKind::Static));
            let mut res = tier_response(
                answer.render(stream),
                stream,
                HeaderValue::from_static("static"),
                FallbackKind::Static,
            );
            res.extensions_mut().insert(FallbackReport {
                fallback: FallbackKind::Static,
                target: None,
                upstream: None,
                tier: None,
                attempts: mem::take(&mut self.attempts),
                cache_age: None,
            });
            count_tier(FallbackKind::Static);
            return Ok(res);
        }
        shared.escalator.on_all_failed(&self.attempts, None);
        metrics::counter!(crate::metrics::RESPONSES_TOTAL, crate::metrics::OUTCOME => "failed")
            .increment(1);
        Err(Box::new(AllTargetsFailed::new(
            mem::take(&mut self.attempts),
            self.last_error.take(),
        )))
    }
}

fn count_tier(kind: FallbackKind) {
    metrics::counter!(crate::metrics::RESPONSES_TOTAL, crate::metrics::OUTCOME => kind.as_str())
        .increment(1);
}

/// A cache or static answer.
fn tier_response<ResB>(
    content: Bytes,
    stream: bool,
    target: HeaderValue,
    fallback: FallbackKind,
) -> Response<FallbackBody<ResB>> {
    let mut res = Response::new(FallbackBody::new(ReplayBody::from_bytes(content)));
    let headers = res.headers_mut();
    if stream {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    } else {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    headers.insert(X_LLM_TARGET, target);
    headers.insert(X_LLM_FALLBACK, fallback.header_value());
    res
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
            let failed = target.state.on_failure(
                FailedCall {
                    kind: failure.kind,
                    retry_after: failure.retry_after,
                    status: None,
                    probe,
                    started,
                },
                &shared.cooldowns,
                now,
            );
            shared
                .escalator
                .on_failure(&target.name, failure.kind, failed.streak, now);
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
