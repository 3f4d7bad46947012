//! Committing to a stream with what it takes to resume it, and the resumed walk itself.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower_llm_core::{BoxError, Classify, ReplayBody, ReplayableBody, StreamOutcome};
use tower_service::Service;

use super::{Ctx, Next, Phase, ResponseFuture};
use crate::health::after;
use crate::report::{FallbackReport, X_LLM_TARGET};
use crate::resume::prefill::request_resumable;
use crate::resume::watch::Watch;
use crate::resume::{How, ResumeFuture, Resumed, Resumer};

/// A walk that resumes a cut stream: the text to continue, and by when.
pub(super) struct ResumeWalk {
    pub(super) sent: String,
    pub(super) deadline: Instant,
    /// How the current attempt asks for the rest (set when its request is made).
    pub(super) how: How,
}

impl<S, B, C> Ctx<S, B, C>
where
    S: Service<Request<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: ReplayableBody + Send + 'static,
    C: Send + Sync + 'static,
{
    /// Commit to a stream whose first event arrived; with resumption on, its body is watched
    /// and keeps the rest of the walk.
    pub(super) fn commit_stream<ResB>(&mut self, res: Response<ReplayBody<ResB>>) -> Next<ResB>
    where
        S: Service<Request<B>, Response = Response<ResB>>,
        ResB: Body<Data = Bytes> + Unpin + Send + 'static,
        ResB::Error: Into<BoxError>,
        C: Classify<Response<ResB>>,
    {
        let config = self.inner.shared.resume;
        let name = self
            .current
            .as_ref()
            .and_then(|c| self.inner.shared.targets.get(c.idx))
            .map(|t| Arc::clone(&t.name));
        let res = self.commit(res);
        let Some(name) = name.filter(|_| config.enabled()) else {
            return Next::Return(Ok(res));
        };
        if let Some(walk) = self.resume.take() {
            // A continuation: its watch hands the rest of the walk to the stream it resumes.
            let next = self.resumer();
            // (Its events are read by the first stream's watch, in splice mode, which reads
            // each one in full: no notes to ask the guard below for.)
            let watch = Watch::new(name, config.max_text_bytes, next, Some(walk.how), None);
            return Next::Return(Ok(attach(res, watch)));
        }
        let resumable = self
            .original
            .as_ref()
            .and_then(|r| r.body().buffered())
            .is_some_and(|b| request_resumable(b));
        if !resumable {
            return Next::Return(Ok(res));
        }
        match self.resumer() {
            Some(resumer) => {
                // The stream guard below, if any, notes its scans for the watch to read.
                let watch = Watch::new(name, config.max_text_bytes, Some(resumer), None, None)
                    .with_scans_of(res.extensions().get::<StreamOutcome>());
                Next::Return(Ok(attach(res, watch)))
            }
            // No target left to resume on: the stream is handed on untouched.
            None => Next::Return(Ok(res)),
        }
    }

    /// The rest of this request's walk, when a target is left to try and the request can be
    /// sent again.
    fn resumer<ResB>(&mut self) -> Option<Box<dyn Resumer<ResB>>>
    where
        S: Service<Request<B>, Response = Response<ResB>>,
        ResB: Body<Data = Bytes> + Unpin + Send + 'static,
        ResB::Error: Into<BoxError>,
        C: Classify<Response<ResB>>,
    {
        if !self.inner.shared.any_left(&self.walk) {
            return None;
        }
        let original = self.original.take()?;
        original.body().buffered()?;
        Some(Box::new(Ctx {
            inner: Arc::clone(&self.inner),
            original: Some(original),
            current: None,
            deadline: None,
            walk: self.walk.clone(),
            attempts: Vec::new(),
            calls: self.calls,
            last_error: None,
            started: self.started,
            resume: None,
            parent: self.parent.clone(),
        }))
    }
}

fn attach<ResB>(
    res: Response<crate::FallbackBody<ResB>>,
    watch: Watch<ResB>,
) -> Response<crate::FallbackBody<ResB>> {
    res.map(|body| {
        let (inner, _, span) = body.into_parts();
        crate::FallbackBody::watched(inner, watch, span)
    })
}

impl<S, B, ResB, C> Resumer<ResB> for Ctx<S, B, C>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: ReplayableBody + Send + 'static,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
    C: Classify<Response<ResB>> + Send + Sync + 'static,
{
    fn resume(mut self: Box<Self>, sent: &str) -> ResumeFuture<ResB> {
        let now = Instant::now();
        let budget = self.inner.shared.resume.budget;
        let deadline = after(self.started.unwrap_or(now), budget);
        if now >= deadline {
            let why = format!(
                "the resume budget of {:.3}s from the request's start is spent",
                budget.as_secs_f64()
            );
            return Box::pin(std::future::ready(Err(why)));
        }
        self.resume = Some(ResumeWalk {
            sent: sent.to_owned(),
            deadline,
            how: How::Replay,
        });
        let fut = ResponseFuture {
            phase: Phase::Select,
            timer: None,
            ctx: *self,
        };
        Box::pin(async move {
            let res = fut
                .await
                .map_err(|e| format!("every remaining target failed: {e}"))?;
            // The report when answers carry it, else the header every answer carries.
            let target = res
                .extensions()
                .get::<FallbackReport>()
                .and_then(|r| r.target.clone())
                .or_else(|| {
                    let name = res.headers().get(X_LLM_TARGET)?.to_str().ok()?;
                    Some(Arc::from(name))
                })
                .unwrap_or_else(|| Arc::from("?"));
            let (body, watch, span) = res.into_body().into_parts();
            let Some(watch) = watch else {
                return Err(format!("target `{target}` did not answer with a stream"));
            };
            let (next, how) = watch.into_handoff();
            Ok(Resumed {
                body,
                target,
                how: how.unwrap_or(How::Replay),
                next,
                span,
            })
        })
    }
}
