//! [`HotRoute`]: `POST /v1/chat/completions` served without a trip through axum's router.
//!
//! Nearly every request a gateway serves is a chat completion. Through [`axum::Router`] each one
//! pays the route lookup, the `MatchedPath`, `OriginalUri` and URL-parameter extensions, a clone
//! of the boxed route service, its boxed future and the `Oneshot` around it, and a
//! `content-length` computed again for hyper, which sets it from the body anyway. `HotRoute`
//! sits where the router sat: it answers that one method and path itself, with the same client
//! authentication the router's route layer applies and the same handler, and hands every other
//! request to the router unchanged (other paths, other methods, a trailing slash: the router's
//! 404s and 405s stay the router's).
//!
//! `router::router` builds axum's router as before, the chat route included (a wrong method on
//! that path still gets the router's 405 with `allow`), and wraps it:
//! `HotRoute::new(state, ClientAuth::new(keys), handlers::chat_completions, routes)`. The
//! gateway's `chat_route` tests hold both sides to the router's answers.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request as AxumRequest, State};
use axum::response::Response;
use http::{Method, Request};
use pin_project::pin_project;
use tower::Service;
use tower_http::validate_request::ValidateRequest;

use crate::auth::ClientAuth;
use crate::body_limit::LimitedBody;
use crate::handlers::AppState;

/// The path served here; every other path goes to the router (which declares its chat route
/// with this same constant, for its 405 on the path).
pub(crate) const CHAT_COMPLETIONS: &str = "/v1/chat/completions";

/// Serves `POST /v1/chat/completions` with `handler` behind `auth`, and every other request
/// with `router` (see the [module docs](self)).
pub(crate) struct HotRoute<R, H, F> {
    state: Arc<AppState>,
    auth: ClientAuth,
    handler: H,
    router: R,
    _future: PhantomData<fn() -> F>,
}

impl<R, H, F> HotRoute<R, H, F>
where
    H: Fn(State<Arc<AppState>>, AxumRequest) -> F,
{
    /// `handler` for the chat route, `router` for the rest.
    pub(crate) fn new(state: Arc<AppState>, auth: ClientAuth, handler: H, router: R) -> Self {
        HotRoute {
            state,
            auth,
            handler,
            router,
            _future: PhantomData,
        }
    }
}

impl<R: Clone, H: Clone, F> Clone for HotRoute<R, H, F> {
    fn clone(&self) -> Self {
        HotRoute {
            state: Arc::clone(&self.state),
            auth: self.auth.clone(),
            handler: self.handler.clone(),
            router: self.router.clone(),
            _future: PhantomData,
        }
    }
}

/// Whether `req` is the route served here.
fn is_chat_completions<B>(req: &Request<B>) -> bool {
    req.method() == Method::POST && req.uri().path() == CHAT_COMPLETIONS
}

impl<R, H, F> Service<Request<LimitedBody>> for HotRoute<R, H, F>
where
    R: Service<Request<LimitedBody>, Response = Response, Error = Infallible>,
    H: Fn(State<Arc<AppState>>, AxumRequest) -> F,
    F: Future<Output = Response>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = HotFuture<F, R::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router's readiness (axum's is always ready); the handler needs none.
        self.router.poll_ready(cx)
    }

    fn call(&mut self, req: Request<LimitedBody>) -> Self::Future {
        if !is_chat_completions(&req) {
            return HotFuture::Routed {
                fut: Box::pin(self.router.call(req)),
            };
        }
        let mut req = req.map(Body::new);
        // The router's `route_layer` on `/v1/*`: a refused key never reaches the handler.
        match self.auth.validate(&mut req) {
            Ok(()) => HotFuture::Chat {
                fut: (self.handler)(State(Arc::clone(&self.state)), req),
            },
            Err(refused) => HotFuture::Refused { res: Some(refused) },
        }
    }
}

/// Response future of [`HotRoute`].
#[pin_project(project = HotProj)]
pub(crate) enum HotFuture<F, RF> {
    /// The chat handler's answer.
    Chat {
        #[pin]
        fut: F,
    },
    /// The client key was refused.
    Refused { res: Option<Response> },
    /// Any other request: the router's answer. Boxed: the router's future (its trace layer's
    /// included) is several times the chat handler's, and inline it would make every chat
    /// request's future that much larger, which hyper and the layers around move whole.
    Routed { fut: Pin<Box<RF>> },
}

impl<F, RF> Future for HotFuture<F, RF>
where
    F: Future<Output = Response>,
    RF: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HotProj::Chat { fut } => fut.poll(cx).map(Ok),
            HotProj::Refused { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                // Polled again after it answered: a caller's bug, answered rather than panicking.
                None => Poll::Ready(Ok(crate::errors::error_response(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "polled_after_completion",
                    "the answer was already taken",
                    None,
                ))),
            },
            HotProj::Routed { fut } => fut.as_mut().poll(cx),
        }
    }
}
