//! Starting an attempt (which target, its request, its budget) and reading what it answered.

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower_llm_core::{
    classify_error, AttemptBudget, AttemptRecord, AttemptTimeout, BoxError, Classification,
    ClassifiedError, Classify, ErrorKind, Failure, ReplayBody, ReplayableBody, StreamOutcome,
};

use super::{Ctx, Current, Next, Started};
use crate::cache::{is_json, CacheScope, Insert};
use crate::chain::Step;
use crate::error::RewriteError;
use crate::health::{after, ProbeSlot};
use crate::peek::{Peek, PeekOutcome};
use crate::resume::prefill::prefill_body;
use crate::resume::{How, ResumeMode};
use crate::rewrite::Parts;
use tower_llm_core::content_type::is_event_stream;

/// A copy of `original`'s method, URI, version, headers and extensions.
fn copy_head(original: &http::request::Parts) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = original.method.clone();
    parts.uri = original.uri.clone();
    parts.version = original.version;
    parts.headers = original.headers.clone();
    parts.extensions = original.extensions.clone();
    parts
}

impl<S, B, C> Ctx<S, B, C>
where
    S: Clone,
    B: ReplayableBody,
{
    /// Start the next attempt (its service and request), or finish (`Err`): a tier answered or
    /// everything failed.
    pub(super) fn start_next<ResB>(&mut self) -> Started<S, B, ResB> {
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
            self.started.get_or_insert(now);
            let mut deadline = after(now, target.attempt_timeout);
            if let Some(walk) = &self.resume {
                // A resumed attempt also ends with the resume budget.
                deadline = deadline.min(walk.deadline);
            }
            let budget = self.attempt_budget(idx, deadline, probe.is_some(), now);
            match self.prepare(idx, budget) {
                Ok(req) => return self.begin(idx, probe, req, deadline, now),
                Err(err) => {
                    // Refused here, before any call: nothing learned about the target.
                    drop(probe);
                    self.skip_unsendable(idx, err);
                }
            }
        }
    }

    /// The budget of an attempt at target `idx` that ends at `deadline`. Time flows down: the
    /// layers below stop at this target's deadline, and make one call (no retry) for a probe or
    /// when another target could answer instead.
    fn attempt_budget(
        &self,
        idx: usize,
        deadline: Instant,
        probe: bool,
        now: Instant,
    ) -> AttemptBudget {
        let budget = AttemptBudget::until(deadline);
        if probe {
            budget.probe()
        } else if self.inner.shared.another_available(&self.walk, idx, now) {
            budget.single_call()
        } else {
            budget
        }
    }

    /// Send `req` to target `idx` (or finish, should the target be gone).
    fn begin<ResB>(
        &mut self,
        idx: usize,
        probe: Option<ProbeSlot>,
        req: Request<B>,
        deadline: Instant,
        now: Instant,
    ) -> Started<S, B, ResB> {
        let (Some(target), Some(svc)) = (
            self.inner.shared.targets.get(idx),
            self.inner.services.get(idx),
        ) else {
            return Started::Finished(self.exhausted(now));
        };
        let span =
            crate::trace::attempt_span(&self.parent, target, self.calls, self.resume.is_some());
        self.current = Some(Current {
            idx,
            started: now,
            probe,
            _in_flight: target.state.enter(),
            span,
        });
        self.deadline = Some(deadline);
        Started::Attempt(svc.clone(), req)
    }

    /// Target `idx` was skipped: its request could not be made.
    fn skip_unsendable(&mut self, idx: usize, err: RewriteError) {
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
        // A resumed walk asks a target that continues prefills for the rest of the text.
        let prefill = match (&mut self.resume, &target.prefill) {
            (Some(walk), Some(params)) if shared.resume.mode() == ResumeMode::Prefill => {
                let body = original
                    .body()
                    .buffered()
                    .and_then(|b| prefill_body(b, &walk.sent, params));
                walk.how = if body.is_some() {
                    How::Prefill
                } else {
                    How::Replay
                };
                body
            }
            (Some(walk), _) => {
                walk.how = How::Replay;
                None
            }
            (None, _) => None,
        };
        let source = prefill.as_ref().or(original.body().buffered());
        let edited = target
            .rewrite
            .apply_body(source)
            .map_err(|_| RewriteError::not_buffered(target.name.clone()))?
            .or(prefill);
        let new_length = edited.as_ref().map(Bytes::len);
        let body = match edited {
            Some(bytes) => Some(B::from_bytes(bytes)),
            None if shared.retains_request => original.body().try_clone(),
            None => None,
        };
        let (mut parts, body) = match (body, self.original.take()) {
            // The caller's head goes out and the copy stays: a copied header map has no room
            // left (a clone's capacity is its length), so the target's headers (`host`, a
            // credential) would grow it on every call, where the caller's, as parsed, has room
            // and an extension map already when the caller set extensions. The copy is only
            // read again on a failover.
            (Some(body), Some(original)) => {
                let (parts, kept_body) = original.into_parts();
                self.original = Some(Request::from_parts(copy_head(&parts), kept_body));
                (parts, body)
            }
            // Not replayable (or not needed again): send the request itself.
            (None, Some(original)) => original.into_parts(),
            (_, None) => return Err(RewriteError::not_replayable(target.name.clone())),
        };
        if let Some(length) = new_length {
            // The caller's `content-length` was for the caller's body: kept, hyper would cut a
            // longer body or wait for the rest of a shorter one.
            parts.headers.remove(http::header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
        }
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

    pub(super) fn on_error<ResB>(&mut self, error: BoxError) -> Next<ResB>
    where
        C: Classify<Response<ResB>>,
    {
        let failure = self.inner.classifier.classify_error(&*error);
        self.on_failure(failure, None, Some(error), None)
    }

    pub(super) fn on_timeout<ResB>(&mut self) -> Next<ResB> {
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

    pub(super) fn on_response<ResB>(&mut self, res: Response<ResB>) -> Next<ResB>
    where
        C: Classify<Response<ResB>>,
        ResB: Body<Data = Bytes> + Unpin + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        match self.inner.classifier.classify_response(&res) {
            Classification::Success if self.resume.is_some() && !is_event_stream(res.headers()) => {
                // A continuation must be a stream to be spliced into one.
                let kind = ErrorKind::InvalidResponse;
                let error =
                    ClassifiedError::new(kind, "a resumed stream was answered without a stream");
                self.on_failure(
                    Failure::new(kind),
                    Some(res.status()),
                    Some(Box::new(error)),
                    None,
                )
            }
            Classification::Success => {
                if is_event_stream(res.headers()) {
                    if res.extensions().get::<StreamOutcome>().is_some() {
                        // A stream guard below committed to this stream at its first answer
                        // event (it returns no stream before one, and fails on an error or
                        // `[DONE]` first): peeking again would read the same event to the same
                        // verdict.
                        return Next::Committed(res.map(ReplayBody::streaming));
                    }
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

    /// A stream's first answer event arrived (commit to it), or the stream failed before it.
    pub(super) fn on_peeked<ResB>(
        &mut self,
        outcome: PeekOutcome<ResB>,
        parts: &mut Option<http::response::Parts>,
    ) -> Next<ResB> {
        match outcome {
            PeekOutcome::Commit { prefix, rest } => match parts.take() {
                Some(parts) => {
                    let res = Response::from_parts(parts, ReplayBody::prefixed(prefix, rest));
                    Next::Return(Ok(self.commit(res)))
                }
                None => Next::Select,
            },
            PeekOutcome::Fail { failure, error } => {
                let status = parts.as_ref().map(|p| p.status);
                self.on_failure::<ResB>(failure, status, Some(error), None)
            }
        }
    }

    /// A JSON answer was read whole for the cache, or reading it failed.
    pub(super) fn on_buffer_done<ResB>(
        &mut self,
        body: Result<ReplayBody<ResB>, BoxError>,
        parts: &mut Option<http::response::Parts>,
    ) -> Next<ResB> {
        match body {
            Ok(body) => match parts.take() {
                Some(parts) => self.on_buffered(parts, body),
                None => Next::Select,
            },
            Err(error) => {
                let failure = classify_error(&*error);
                let status = parts.as_ref().map(|p| p.status);
                self.on_failure::<ResB>(failure, status, Some(error), None)
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
            let key = match (&shared.cache, self.original.as_ref()) {
                (Some(cache), Some(original)) => original
                    .body()
                    .buffered()
                    .and_then(|b| cache.key(b, original.extensions().get::<CacheScope>())),
                _ => None,
            };
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
}
