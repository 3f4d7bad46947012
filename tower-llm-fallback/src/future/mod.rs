//! [`ResponseFuture`]: one request's walk down the chain.
//!
//! A hand-written state machine (no boxing on the path where the first target answers a JSON
//! request): select a target, wait for its service to be ready, call it, classify the answer,
//! and either commit to it or record the failure and select again. Streams are peeked until
//! their first event before committing; with a cache tier, JSON answers are read whole first.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};
use tower_llm_core::{
    AttemptRecord, BoxError, ClassifiedError, Classify, ErrorKind, ReplayBody, ReplayableBody,
};
use tower_service::Service;
use tracing::Span;

use crate::body::FallbackBody;
use crate::chain::Walk;
use crate::health::{InFlight, ProbeSlot};
use crate::peek::{Peek, PeekOutcome};
use crate::service::Inner;

mod attempt;
mod outcome;
mod resume;
mod tiers;

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
    /// The attempt's span (disabled when no subscriber wants it).
    span: Span,
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
    /// A stream a guard below already committed to: commit to it without peeking.
    Committed(Response<ReplayBody<ResB>>),
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
    /// When the first attempt started (the resume budget counts from it).
    started: Option<Instant>,
    /// Set when this walk resumes a cut stream.
    resume: Option<resume::ResumeWalk>,
    /// The span current when the request entered the chain: the attempts' parent.
    parent: Span,
}

impl<S, B, ResB, C> ResponseFuture<S, B, ResB, C>
where
    S: Service<Request<B>>,
{
    #[inline]
    pub(crate) fn new(inner: Arc<Inner<S, C>>, req: Request<B>) -> Self {
        let ctx = Ctx {
            inner,
            original: Some(req),
            current: None,
            deadline: None,
            walk: Walk::default(),
            attempts: Vec::new(),
            calls: 0,
            last_error: None,
            started: None,
            resume: None,
            parent: Span::current(),
        };
        ResponseFuture {
            phase: Phase::Select,
            timer: None,
            ctx,
        }
    }
}

impl<S, B, C> Ctx<S, B, C> {
    /// The current attempt's span (a cheap handle; disabled when there is no attempt).
    fn attempt_span(&self) -> Span {
        self.current
            .as_ref()
            .map_or_else(Span::none, |c| c.span.clone())
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
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: ReplayableBody + Send + 'static,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
    C: Classify<Response<ResB>> + Send + Sync + 'static,
{
    type Output = Output<ResB>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // What the current phase led to; `Pending` while the attempt waits.
            let step = match this.phase.as_mut().project() {
                PhaseProj::Select => match this.ctx.start_next() {
                    // A service ready at once is called from here: parking it and its request
                    // in `Ready` first would copy both into the phase for nothing.
                    Started::Attempt(mut svc, req) => {
                        // The layers below see the attempt's span as the current one.
                        let span = this.ctx.attempt_span();
                        let _entered = span.enter();
                        match svc.poll_ready(cx) {
                            Poll::Ready(Ok(())) => {
                                let fut = svc.call(req);
                                this.phase.set(Phase::Calling { fut });
                                continue;
                            }
                            Poll::Ready(Err(err)) => Poll::Ready(this.ctx.on_error(err.into())),
                            Poll::Pending => {
                                this.phase.set(Phase::Ready {
                                    svc,
                                    req: Some(req),
                                });
                                // Polled again there: its timer starts with the wait.
                                continue;
                            }
                        }
                    }
                    Started::Finished(out) => Poll::Ready(Next::Return(out)),
                },
                PhaseProj::Ready { svc, req } => {
                    let span = this.ctx.attempt_span();
                    let _entered = span.enter();
                    match svc.poll_ready(cx) {
                        Poll::Ready(Ok(())) => match req.take() {
                            Some(req) => {
                                let fut = svc.call(req);
                                this.phase.set(Phase::Calling { fut });
                                continue;
                            }
                            None => Poll::Ready(Next::Select),
                        },
                        Poll::Ready(Err(err)) => Poll::Ready(this.ctx.on_error(err.into())),
                        Poll::Pending => Poll::Pending,
                    }
                }
                PhaseProj::Calling { fut } => {
                    let span = this.ctx.attempt_span();
                    let _entered = span.enter();
                    match fut.poll(cx) {
                        Poll::Ready(Ok(res)) => match this.ctx.on_response(res) {
                            // The common end, returned from here: the answer is not moved
                            // through the steps below.
                            Next::Return(out) => {
                                this.phase.set(Phase::Done);
                                return Poll::Ready(out);
                            }
                            Next::Committed(res) => Poll::Ready(this.ctx.commit_stream(res)),
                            next => Poll::Ready(next),
                        },
                        Poll::Ready(Err(err)) => Poll::Ready(this.ctx.on_error(err.into())),
                        Poll::Pending => Poll::Pending,
                    }
                }
                PhaseProj::Peeking { peek, parts } => {
                    let span = this.ctx.attempt_span();
                    let _entered = span.enter();
                    peek.poll_peek(cx)
                        .map(|outcome| match (outcome, parts.take()) {
                            (PeekOutcome::Commit { prefix, rest }, Some(head)) => {
                                this.ctx.commit_stream(Response::from_parts(
                                    head,
                                    ReplayBody::prefixed(prefix, rest),
                                ))
                            }
                            (outcome, head) => {
                                *parts = head;
                                this.ctx.on_peeked(outcome, parts)
                            }
                        })
                }
                PhaseProj::Buffering { fut, parts } => {
                    let span = this.ctx.attempt_span();
                    let _entered = span.enter();
                    fut.as_mut()
                        .poll(cx)
                        .map(|body| this.ctx.on_buffer_done(body, parts))
                }
                PhaseProj::Done => {
                    return Poll::Ready(Err(Box::new(ClassifiedError::new(
                        ErrorKind::Unknown,
                        "fallback response future polled after completion",
                    ))))
                }
            };
            let next = match step {
                Poll::Ready(next) => next,
                Poll::Pending if expired(this.timer.as_mut(), this.ctx.deadline, cx) => {
                    this.ctx.on_timeout()
                }
                Poll::Pending => return Poll::Pending,
            };
            if let Some(out) = advance(this.phase.as_mut(), next) {
                return Poll::Ready(out);
            }
        }
    }
}

/// Move to the phase `next` calls for; the output once the future is finished.
fn advance<S, B, F, ResB>(
    mut phase: Pin<&mut Phase<S, B, F, ResB>>,
    next: Next<ResB>,
) -> Option<Output<ResB>> {
    match next {
        Next::Select => phase.set(Phase::Select),
        Next::Return(out) => {
            phase.set(Phase::Done);
            return Some(out);
        }
        Next::Peek(peek, parts) => phase.set(Phase::Peeking {
            peek,
            parts: Some(parts),
        }),
        // Turned into `commit_stream`'s step where it is made (that needs the context); kept
        // total without a panic.
        Next::Committed(_) => {
            phase.set(Phase::Done);
            return Some(Err(Box::new(ClassifiedError::new(
                ErrorKind::Unknown,
                "fallback: a committed stream was not handed to the resume watch",
            ))));
        }
        Next::Buffer(fut, parts) => phase.set(Phase::Buffering {
            fut,
            parts: Some(parts),
        }),
    }
    None
}
