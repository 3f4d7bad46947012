//! The axum router and the tower-http layers around it.
//!
//! From the outside in, every request passes:
//!
//! | layer | what it does |
//! |---|---|
//! | [`RequestIdLayer`] | gives a request without `x-request-id` a fresh UUID (the id is forwarded upstream with the other end-to-end headers), and puts the request's id on its answer |
//! | OpenAI-shaped errors | turns the plain 504 of the layer below into an OpenAI-shaped JSON error |
//! | [`TimeoutLayer`] | `[gateway] request_timeout_ms`: no answer by then is a 504 |
//! | [`BodyLimitLayer`] | `[request] max_body_bytes`: a larger `content-length`, or a longer chunked body, is an OpenAI-shaped 413 with `connection: close`, sent after the rest of the body was read and discarded (bounded; see [`body_limit`](crate::body_limit)) so that a client still sending reads it; `[gateway] body_timeout_ms`: a client pausing longer while sending its body gets a 408 (the pause's timer is made only when the reader has to wait: most bodies arrive with their head) |
//! | [`ValidateRequestHeaderLayer`] with [`ClientAuth`] | on `/v1/*` only: client keys, 401 otherwise (`/health` and `/metrics` check admin keys themselves) |
//!
//! Below them, [`HotRoute`] answers `POST /v1/chat/completions` itself (the same client auth, the
//! same handler; the handler's `gateway.request` span carries the request id and the client
//! key's name) and hands every other request to axum's router, inside a [`TraceLayer`]: a
//! `request` span per request (method, path, request id, the client key's name; no headers, no
//! body) and `debug` events for the response.
//!
//! [`ValidateRequestHeaderLayer`]: tower_http::validate_request::ValidateRequestHeaderLayer

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::response::Response;
use axum::routing::{get, post};
use axum::BoxError;
use axum::Router;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use tower::{Service, ServiceBuilder};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{Level, Span};

use crate::auth::{ClientAuth, KeyStore};
use crate::body_limit::BodyLimitLayer;
use crate::errors;
use crate::handlers::{self, AppState};
use crate::hot_route::{HotRoute, CHAT_COMPLETIONS};
use crate::request_id::RequestIdLayer;

/// The limits the layers apply.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_body_bytes: u64,
    pub(crate) request_timeout: Duration,
    pub(crate) body_timeout: Duration,
}

/// Marks a response produced by the router (a handler, the 404 and 405 fallbacks), so that
/// the error mapping leaves it alone and reshapes only what the tower-http layers answered
/// themselves. A response extension: never sent.
#[derive(Clone, Copy, Debug)]
struct Routed;

/// The whole application: routes, client auth on `/v1/*`, and the tower-http layers around
/// the router.
///
/// The layers wrap the router as one service rather than through [`Router::layer`], which
/// wraps every route (and the fallbacks) in a boxed, cloned-per-request service of its own:
/// the same layers in the same order for every request, without the per-request clones and
/// boxed futures of each wrapped route.
pub(crate) fn router(
    state: AppState,
    keys: Arc<KeyStore>,
    limits: Limits,
) -> impl Service<
    Request<Incoming>,
    Response = Response<impl HttpBody<Data = Bytes, Error = impl Into<BoxError>> + Send + 'static>,
    Error = Infallible,
    Future = impl Future + Send + 'static,
> + Clone
       + Send
       + Sync
       + 'static {
    let state = Arc::new(state);
    let api = Router::new()
        .route(CHAT_COMPLETIONS, post(handlers::chat_completions))
        .route("/v1/models", get(handlers::models))
        .route_layer(ClientAuth::layer(Arc::clone(&keys)));
    let operators = Router::new()
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics));
    let routes = api
        .merge(operators)
        .fallback(handlers::unknown_path)
        .method_not_allowed_fallback(handlers::wrong_method)
        .with_state(Arc::clone(&state));
    // tower-http's `request` span and its debug events for the router's requests. The chat
    // route's span is the handler's own (`gateway.request`, with the request id and the
    // client's name): a second span around it, with its future and body wrappers, cost ~1,600
    // instructions per answer (BENCHMARKS "2026-12-07 (closing)").
    let routes = ServiceBuilder::new()
        .map_response(|res: http::Response<_>| res.map(Body::new))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // The gateway's own 5xx are counted (status line, metrics) and the stack logs
                // upstream failures: no error log per failed request.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .service(routes);
    // The chat route, nearly every request, answered without the router's per-request work;
    // the router keeps the route too (same handler, same auth) and serves everything else.
    let routes = HotRoute::new(
        state,
        ClientAuth::new(keys),
        handlers::chat_completions,
        routes,
    );
    ServiceBuilder::new()
        .map_request(|req: Request<Incoming>| req.map(Body::new))
        .layer(RequestIdLayer)
        .map_response(move |res| openai_shaped(limits, res))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(BodyLimitLayer::new(
            limits.max_body_bytes,
            limits.body_timeout,
        ))
        .map_response(mark_routed)
        .service(routes)
}

fn mark_routed(mut res: Response) -> Response {
    res.extensions_mut().insert(Routed);
    res
}

/// The 504 of [`TimeoutLayer`] as an OpenAI-shaped error; every other response as it is (the
/// body limit's 413 is OpenAI-shaped already, and keeps its `connection: close`).
fn openai_shaped(limits: Limits, res: Response) -> Response {
    if res.extensions().get::<Routed>().is_some() {
        return res;
    }
    match res.status() {
        StatusCode::GATEWAY_TIMEOUT => errors::request_timeout(limits.request_timeout),
        _ => res,
    }
}

/// The span of one request: method, path, request id and, once [`ClientAuth`] let it in, the
/// client key's name (never a header value, a key or the body).
fn request_span<B>(req: &Request<B>) -> Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = req.uri().path(),
        request_id = id,
        client = tracing::field::Empty,
    )
}
