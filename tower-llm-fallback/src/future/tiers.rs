//! When every target failed or was skipped: the cache tier, the static tier, or the error.

use std::mem;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, AGE, CACHE_CONTROL, CONTENT_TYPE};
use http::Response;
use tokio::time::Instant;
use tower_llm_core::{AllTargetsFailed, AttemptRecord, ReplayBody, ReplayableBody};

use super::{Ctx, Output};
use crate::body::FallbackBody;
use crate::cache::CacheScope;
use crate::chain::Shared;
use crate::json::member_is_true;
use crate::report::{FallbackKind, FallbackReport, X_LLM_FALLBACK, X_LLM_TARGET};
use crate::static_tier::completion_to_sse;

impl<S, B, C> Ctx<S, B, C>
where
    B: ReplayableBody,
{
    /// Every target failed or was skipped: the cache tier, the static tier, or the error.
    pub(super) fn exhausted<ResB>(&mut self, now: Instant) -> Output<ResB> {
        if self.resume.is_some() {
            // A resumed walk splices only a target's stream: no tier, no escalation.
            return Err(Box::new(AllTargetsFailed::new(
                mem::take(&mut self.attempts),
                self.last_error.take(),
            )));
        }
        let inner = Arc::clone(&self.inner);
        let shared = &inner.shared;
        let body = self.original.as_ref().and_then(|r| r.body().buffered());
        let stream = body.is_some_and(|b| member_is_true(b, "stream"));
        let scope = self
            .original
            .as_ref()
            .and_then(|r| r.extensions().get::<CacheScope>());
        if let Some(body) = body {
            if let Some(res) = cache_answer(shared, &mut self.attempts, body, scope, stream, now) {
                return Ok(res);
            }
        }
        if let Some(res) = static_answer(shared, &mut self.attempts, stream) {
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

/// The cache tier's answer to `body`, if it holds one.
fn cache_answer<ResB>(
    shared: &Shared,
    attempts: &mut Vec<AttemptRecord>,
    body: &Bytes,
    scope: Option<&CacheScope>,
    stream: bool,
    now: Instant,
) -> Option<Response<FallbackBody<ResB>>> {
    let cache = shared.cache.as_ref()?;
    let hit = cache.key(body, scope).and_then(|key| cache.get(key, now))?;
    let content = if stream {
        completion_to_sse(&hit.body)
    } else {
        Some(hit.body.clone())
    }?;
    shared
        .escalator
        .on_all_failed(attempts, Some(FallbackKind::Cache));
    let age = now.saturating_duration_since(hit.stored_at);
    let name = HeaderValue::from_str(&hit.target_name).unwrap_or(HeaderValue::from_static("cache"));
    let mut res = tier_response(content, stream, name, FallbackKind::Cache);
    res.headers_mut()
        .insert(AGE, HeaderValue::from(age.as_secs()));
    if shared.report {
        res.extensions_mut().insert(FallbackReport {
            fallback: FallbackKind::Cache,
            target: Some(hit.target_name),
            upstream: Some(hit.target),
            tier: None,
            attempts: mem::take(attempts),
            cache_age: Some(age),
        });
    }
    count_tier(FallbackKind::Cache);
    Some(res)
}

/// The static tier's answer, if one is configured.
fn static_answer<ResB>(
    shared: &Shared,
    attempts: &mut Vec<AttemptRecord>,
    stream: bool,
) -> Option<Response<FallbackBody<ResB>>> {
    let answer = shared.static_answer.as_ref()?;
    shared
        .escalator
        .on_all_failed(attempts, Some(FallbackKind::Static));
    let mut res = tier_response(
        answer.render(stream),
        stream,
        HeaderValue::from_static("static"),
        FallbackKind::Static,
    );
    if shared.report {
        res.extensions_mut().insert(FallbackReport {
            fallback: FallbackKind::Static,
            target: None,
            upstream: None,
            tier: None,
            attempts: mem::take(attempts),
            cache_age: None,
        });
    }
    count_tier(FallbackKind::Static);
    Some(res)
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
