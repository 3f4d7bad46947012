//! [`StreamGuardFuture`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::response::Parts;
use http::Response;
use http_body::Body;
use pin_project::pin_project;
use tokio::time::Instant;

use super::config::GuardConfig;
use super::engine::{Engine, Next};
use super::metrics::TargetMetrics;
use super::whole::{Check, Read, WholeRead};
use super::{GuardedBody, StreamOutcome};
use crate::content_type::is_media_type;
use crate::{BoxError, ClassifiedError, ErrorKind, Target};

/// Response future of [`StreamGuard`](super::StreamGuard): the inner call, then, for an event
/// stream, the wait for its first answer event, and for any other `2xx` answer, the read of its
/// whole body (up to the cap). Dropping it drops the inner body.
#[pin_project]
pub struct StreamGuardFuture<F, B> {
    #[pin]
    state: State<F, B>,
    config: GuardConfig,
    started: Instant,
    target: Option<Target>,
    metrics: Arc<TargetMetrics>,
}

// `Reading` holds its timer inline: boxing it would cost an allocation per non-stream answer,
// and the future is pinned where it is polled anyway.
#[allow(clippy::large_enum_variant)]
#[pin_project(project = StateProj)]
enum State<F, B> {
    Calling {
        #[pin]
        fut: F,
    },
    FirstEvent {
        parts: Option<Parts>,
        engine: Option<Pin<Box<Engine<B>>>>,
    },
    Reading {
        parts: Option<Parts>,
        #[pin]
        read: WholeRead<B>,
    },
    Done,
}

impl<F, B> StreamGuardFuture<F, B> {
    #[inline]
    pub(crate) fn new(
        fut: F,
        config: GuardConfig,
        started: Instant,
        target: Option<Target>,
        metrics: Arc<TargetMetrics>,
    ) -> Self {
        StreamGuardFuture {
            state: State::Calling { fut },
            config,
            started,
            target,
            metrics,
        }
    }
}

impl<F, B, E> Future for StreamGuardFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<GuardedBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let res = match ready!(fut.poll(cx)) {
                        Ok(res) => res,
                        Err(err) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(err.into()));
                        }
                    };
                    // One look at `content-type` for both questions: a successful event
                    // stream, or else how to judge the body read whole.
                    let content_type = res.headers().get(CONTENT_TYPE);
                    let event_stream = res.status().is_success()
                        && content_type.is_some_and(|v| is_media_type(v, "text/event-stream"));
                    if !event_stream {
                        let check = Check::for_content_type(res.status(), content_type);
                        let cap = this.config.max_buffered_body_bytes;
                        // Error bodies are bounded elsewhere; an announced length over the cap is
                        // not worth reading into memory.
                        if !res.status().is_success()
                            || cap == 0
                            || res.body().size_hint().lower() > cap as u64
                        {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(res.map(GuardedBody::pass_through)));
                        }
                        let (parts, body) = res.into_parts();
                        let read = WholeRead::new(body, &this.config.limits, *this.started, check);
                        this.state.set(State::Reading {
                            parts: Some(parts),
                            read,
                        });
                        continue;
                    }
                    let (parts, body) = res.into_parts();
                    let engine = Engine::new(
                        body,
                        *this.config,
                        *this.started,
                        this.target.take(),
                        Arc::clone(this.metrics),
                    );
                    this.state.set(State::FirstEvent {
                        parts: Some(parts),
                        engine: Some(Box::pin(engine)),
                    });
                }
                StateProj::FirstEvent { parts, engine } => {
                    let next = match engine.as_mut() {
                        Some(engine) => ready!(engine.as_mut().poll_next(cx)),
                        None => Next::End,
                    };
                    let result = match next {
                        Next::Committed => match (parts.take(), engine.take()) {
                            (Some(mut parts), Some(mut engine)) => {
                                let outcome = StreamOutcome::new();
                                engine.as_mut().attach(outcome.clone());
                                parts.extensions.insert(outcome);
                                // The guard may leave events out or add one: the length changes.
                                parts.headers.remove(CONTENT_LENGTH);
                                Ok(Response::from_parts(parts, GuardedBody::guarded(engine)))
                            }
                            _ => Err(polled_after_completion()),
                        },
                        Next::Rejected(err) => Err(err.into()),
                        // Not produced before the first event; kept total for safety.
                        Next::Data(_) | Next::End => Err(polled_after_completion()),
                    };
                    this.state.set(State::Done);
                    return Poll::Ready(result);
                }
                StateProj::Reading { parts, read } => {
                    let result = ready!(read.poll_read(
                        cx,
                        &this.config.limits,
                        this.config.max_buffered_body_bytes,
                        *this.started,
                    ));
                    let parts = parts.take();
                    this.state.set(State::Done);
                    let Some(parts) = parts else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let body = match result {
                        Ok(Read::Whole {
                            data,
                            trailers,
                            usage,
                        }) => {
                            if let Some(usage) = usage {
                                this.metrics.reported(usage);
                                super::usage::record_on_span(usage);
                            }
                            GuardedBody::buffered(data, trailers)
                        }
                        Ok(Read::OverCap { prefix, rest }) => GuardedBody::prefixed(prefix, rest),
                        Err(err) => return Poll::Ready(Err(Box::new(err))),
                    };
                    return Poll::Ready(Ok(Response::from_parts(parts, body)));
                }
                StateProj::Done => return Poll::Ready(Err(polled_after_completion())),
            }
        }
    }
}

fn polled_after_completion() -> BoxError {
    Box::new(ClassifiedError::new(
        ErrorKind::Unknown,
        "StreamGuardFuture polled after completion",
    ))
}
