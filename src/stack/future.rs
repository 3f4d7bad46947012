//! [`StackFuture`]: buffer the request body, read its `model`, pick the route's chain, then run
//! the chain's future inline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project::pin_project;
use tower::Service;
use tower_llm_core::{BoxError, ReplayBody};

use super::route::InUse;
use super::{Inner, RouteService, StackBody, TargetBody, TargetService};
use crate::error::{InvalidReason, InvalidRequest};

/// The future of a routing step: the buffered request and the chain that serves it.
type Prepare<ReqB, ResB> =
    Pin<Box<dyn Future<Output = Result<Routed<ReqB, ResB>, BoxError>> + Send>>;

/// The chain that serves a request, the request's in-use mark on it, and the buffered request.
type Routed<ReqB, ResB> = (
    RouteService<ReqB, ResB>,
    Option<InUse>,
    Request<ReplayBody<ReqB>>,
);

type ChainFuture<ReqB, ResB> = tower_llm_fallback::ResponseFuture<
    TargetService<ReqB, ResB>,
    ReplayBody<ReqB>,
    TargetBody<ResB>,
    tower_llm_core::HttpClassifier,
>;

/// Response future of [`Stack`](super::Stack): buffers the body and picks the route, then runs
/// the chain.
#[pin_project]
pub struct StackFuture<ReqB, ResB> {
    #[pin]
    state: StackState<ReqB, ResB>,
}

// The chain's future is stored inline, not boxed: one allocation fewer per call.
#[allow(clippy::large_enum_variant)]
#[pin_project(project = StackStateProj)]
enum StackState<ReqB, ResB> {
    Preparing {
        prepare: Prepare<ReqB, ResB>,
    },
    Calling {
        #[pin]
        call: ChainFuture<ReqB, ResB>,
        /// Keeps a pass-through model's chain from being evicted while the call runs.
        _in_use: Option<InUse>,
    },
    /// Routed before the first poll (a request handed over in memory): called from there.
    Routed {
        chain: RouteService<ReqB, ResB>,
        in_use: Option<InUse>,
        /// `None` once called.
        req: Option<Request<ReplayBody<ReqB>>>,
    },
    /// Refused before any call (a request handed over in memory); `None` once returned.
    Refused {
        error: Option<BoxError>,
    },
}

impl<ReqB, ResB> StackFuture<ReqB, ResB>
where
    ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    /// Routes by `model` when the caller has read it from the body already, by the body's
    /// `model` otherwise.
    pub(super) fn new(
        inner: Arc<Inner<ReqB, ResB>>,
        req: Request<ReqB>,
        model: Option<String>,
    ) -> Self {
        StackFuture {
            state: StackState::Preparing {
                prepare: Box::pin(prepare(inner, req, model)),
            },
        }
    }

    /// Routes a request whose body is in memory already, now; its chain is called at the first
    /// poll. No buffering step (its boxed future, its polls and the request's moves through it).
    pub(super) fn buffered(inner: &Inner<ReqB, ResB>, req: Request<Bytes>, model: String) -> Self {
        let (parts, bytes) = req.into_parts();
        let limit = inner.body_limit;
        let routed = if bytes.len() > limit {
            Err(InvalidRequest::new(InvalidReason::TooLarge(limit)).into())
        } else {
            routed(inner, parts, ReplayBody::from_bytes(bytes), Some(model))
        };
        // Called at the first poll, where its future is written in place (built here and
        // returned, it would be copied whole on its way into the caller's future).
        let state = match routed {
            Ok((chain, in_use, req)) => StackState::Routed {
                chain,
                in_use,
                req: Some(req),
            },
            Err(error) => StackState::Refused { error: Some(error) },
        };
        StackFuture { state }
    }
}

impl<ReqB, ResB> fmt::Debug for StackFuture<ReqB, ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackFuture").finish_non_exhaustive()
    }
}

impl<ReqB, ResB> Future for StackFuture<ReqB, ResB>
where
    ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Output = Result<Response<StackBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StackStateProj::Preparing { prepare } => {
                    let (mut chain, in_use, req) = match prepare.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(ready)) => ready,
                    };
                    // A chain is always ready (see `Fallback::poll_ready`).
                    let call = chain.call(req);
                    this.state.set(StackState::Calling {
                        call,
                        _in_use: in_use,
                    });
                }
                StackStateProj::Routed { chain, in_use, req } => {
                    let Some(req) = req.take() else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    // A chain is always ready (see `Fallback::poll_ready`).
                    let call = chain.call(req);
                    let in_use = in_use.take();
                    this.state.set(StackState::Calling {
                        call,
                        _in_use: in_use,
                    });
                }
                StackStateProj::Calling { call, .. } => return call.poll(cx),
                StackStateProj::Refused { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(polled_after_completion)))
                }
            }
        }
    }
}

/// The error of a stack future polled again after it answered.
fn polled_after_completion() -> BoxError {
    "stack future polled after completion".into()
}

/// Buffer the body, read its `model` (unless the caller did), and find the chain of the first
/// matching route.
async fn prepare<ReqB, ResB>(
    inner: Arc<Inner<ReqB, ResB>>,
    req: Request<ReqB>,
    read: Option<String>,
) -> Result<Routed<ReqB, ResB>, BoxError>
where
    ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
    ReqB::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let body = ReplayBody::buffer(body, inner.body_limit).await?;
    routed(&inner, parts, body, read)
}

/// The chain of the first route matching the body's `model` (read from `body` unless the caller
/// did), and the request for it; an error for a body over the limit or a request without a
/// usable model.
fn routed<ReqB, ResB>(
    inner: &Inner<ReqB, ResB>,
    parts: http::request::Parts,
    body: ReplayBody<ReqB>,
    read: Option<String>,
) -> Result<Routed<ReqB, ResB>, BoxError>
where
    ReqB: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
    ReqB::Error: Into<BoxError>,
{
    let limit = inner.body_limit;
    let model = match (body.bytes(), read) {
        (None, _) => return Err(InvalidRequest::new(InvalidReason::TooLarge(limit)).into()),
        (Some(_), Some(model)) if model.is_empty() => {
            return Err(InvalidRequest::new(InvalidReason::NoModel).into())
        }
        (Some(_), Some(model)) => model,
        (Some(bytes), None) => requested_model(bytes)?,
    };
    let (chain, in_use) = inner.chains.service_for(&model)?;
    Ok((chain, in_use, Request::from_parts(parts, body)))
}

/// The `model` of a JSON chat request.
fn requested_model(body: &[u8]) -> Result<String, InvalidRequest> {
    let model = tower_llm_core::openai::request_model(body)
        .map_err(|_| InvalidRequest::new(InvalidReason::NotJson))?;
    match model {
        Some(model) if !model.is_empty() => Ok(model.into_owned()),
        _ => Err(InvalidRequest::new(InvalidReason::NoModel)),
    }
}
