//! The gateway's endpoints (axum 0.8 handlers).
//!
//! | endpoint | answer |
//! |---|---|
//! | `POST /v1/chat/completions` | the stack's answer (JSON or SSE), routed by the body's `model`, with `x-llm-target` and `x-llm-fallback`; OpenAI-shaped errors |
//! | `GET /v1/models` | the models a client may send, in OpenAI's list shape (see [`model_ids`]) |
//! | `GET /health` | [`StackHealth`](tower_llm::StackHealth) as JSON: 200 while a target can be called, 503 when none can; with admin keys set and none presented, only `{"status": ...}` (same status code, for load balancers) |
//! | `GET /metrics` | Prometheus text; with admin keys set, 401 without one |
//! | a known path with another method | OpenAI-shaped 405 `method_not_allowed`, with `allow` |
//! | anything else | OpenAI-shaped 404 `unknown_url` |

use std::borrow::Cow;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_llm::fallback::{CacheScope, X_LLM_FALLBACK};
use tower_llm::OverallHealth;

use crate::auth::{ClientName, KeyStore};
use crate::body_limit::{BodyTimeout, BodyTooLarge};
use crate::errors;
use crate::headers::HeaderPolicy;
use crate::metrics::{
    answered_counter, requested_model, AnsweredCounter, RouteHistograms, Telemetry, TimedBody,
};
use crate::server::GatewayStack;
use crate::status::Counters;
use crate::telemetry::{self, TracedBody};
use futures_util::FutureExt;
use tracing::Instrument;

/// What every handler shares, behind one `Arc`: axum clones the state for every request it
/// routes (several times per request), which is then one reference count, not a clone of every
/// field.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The resilient stack (clones share every breaker, cooldown and cache).
    pub(crate) stack: GatewayStack,
    /// Largest request body accepted (`[request] max_body_bytes`).
    pub(crate) max_body_bytes: u64,
    /// Longest pause while a client sends its body (`[gateway] body_timeout_ms`).
    pub(crate) body_timeout: Duration,
    /// Traffic counters for the status line.
    pub(crate) counters: Arc<Counters>,
    /// Renders `/metrics`; the per-route request histograms.
    pub(crate) metrics: Telemetry,
    /// Which headers cross the gateway.
    pub(crate) headers: HeaderPolicy,
    /// Admin keys for `/health` details and `/metrics` (empty: open).
    pub(crate) admin: Arc<KeyStore>,
    /// When the gateway started (Unix seconds): the `created` of `/v1/models` entries.
    pub(crate) started_unix: u64,
    /// The usual answer's `requests_total` series when client keys are off.
    pub(crate) anonymous_answered: Arc<AnsweredCounter>,
}

/// The upstream request's path before the fallback rewrites it per target: parsed once (a
/// clone shares its static bytes).
static CHAT_COMPLETIONS: LazyLock<http::Uri> =
    LazyLock::new(|| http::Uri::from_static("/v1/chat/completions"));

/// `POST /v1/chat/completions`.
///
/// Not an `async fn`: what can be done before the first await is done here, so the future
/// holds neither the request nor a copy of it besides what the answer needs.
pub(crate) fn chat_completions(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> impl Future<Output = Response> + Send + 'static {
    let started = tokio::time::Instant::now();
    state.counters.requests.fetch_add(1, Ordering::Relaxed);
    // The key's name (never the key), or `anonymous` when client keys are off.
    let client = req.extensions().get::<ClientName>().cloned();
    // Open until the answer's body ends (or the client goes away); the chain's attempt spans
    // are its children.
    let span = telemetry::request_span(
        req.headers(),
        client.as_ref().map_or(ANONYMOUS, ClientName::as_str),
    );
    let (parts, body) = req.into_parts();
    // Boxed: every layer above, and hyper, move the handler's future whole on its way out (a
    // dozen copies per request, measured), and the answer's is the large part of it. A `map`,
    // not an `async` block awaiting it: that would hold the future twice.
    Box::pin(answer(state, parts, body, started, span.clone()))
        .instrument(span.clone())
        .map(move |(res, state)| finish(&state, client, span, started, res))
}

/// The answer's span, metrics and counters.
fn finish(
    state: &AppState,
    client: Option<ClientName>,
    span: tracing::Span,
    started: tokio::time::Instant,
    res: Response,
) -> Response {
    let client_label = client.as_ref().map_or(ANONYMOUS, ClientName::as_str);
    telemetry::record_answer(&span, res.status(), res.headers());
    // The event tower-http's trace layer logs for the router's requests (its fields are read
    // only when debug events are on).
    tracing::debug!(
        parent: &span,
        latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        status = res.status().as_u16(),
        "finished processing request"
    );
    // Without a subscriber recording the span, no second box around the body.
    let res = if span.is_disabled() {
        res
    } else {
        res.map(|body| Body::new(TracedBody::new(body, span)))
    };
    let status = res.status();
    let fallback = res
        .headers()
        .get(&X_LLM_FALLBACK)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if fallback != "none" {
        state.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
    }
    if status.is_client_error() || status.is_server_error() {
        state.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    if status == StatusCode::OK && fallback == "none" {
        // The usual answer: a held counter (see `AnsweredCounter`).
        let answered = client
            .as_ref()
            .map_or(&*state.anonymous_answered, ClientName::answered);
        answered.increment(client_label);
    } else {
        let outcome = if status.is_success() {
            "success"
        } else {
            "failure"
        };
        answered_counter(client_label, outcome, fallback, status.as_str()).increment(1);
    }
    res
}

/// The `client` label of a request when client keys are off.
pub const ANONYMOUS: &str = "anonymous";

/// Read the body (bounded in size and pauses by the body limit), call the stack, shape the
/// answer; its body records the request's duration in its route's histogram when it ends.
/// Gives the state back for [`finish`].
// Not an `async fn`: its future would hold every argument twice (as passed, and moved into
// the body), the request's head among them.
#[allow(clippy::manual_async_fn)]
fn answer(
    state: Arc<AppState>,
    parts: http::request::Parts,
    body: Body,
    started: tokio::time::Instant,
    span: tracing::Span,
) -> impl Future<Output = (Response, Arc<AppState>)> + Send + 'static {
    async move {
        let bytes = match read_whole(body).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let res = unread(&state, &e);
                state
                    .metrics
                    .routes()
                    .none()
                    .record(res.status(), started.elapsed());
                return (res, state);
            }
        };
        let (upstream, model, route) = upstream_request(&state, parts, bytes, &span);
        // Each call awaited where it is made: its future is written in place.
        let answered = match model {
            Some(model) => state.stack.call_buffered(model, upstream).await,
            // A body without a readable model goes to the stack as it is, which reads it and
            // says why it cannot be routed.
            None => {
                let upstream = upstream.map(Full::new);
                state.stack.clone().oneshot(upstream).await
            }
        };
        let res = match answered {
            Ok(res) => {
                let (mut parts, body) = res.into_parts();
                state.headers.client_response_headers(&mut parts.headers);
                let body = TimedBody::new(body, route, parts.status, started);
                Response::from_parts(parts, Body::new(body))
            }
            Err(err) => {
                tracing::debug!(error = %err, "no target answered");
                let res = errors::stack_error(&err);
                route.record(res.status(), started.elapsed());
                res
            }
        };
        (res, state)
    }
}

/// The answer to a request whose body could not be read.
fn unread(state: &AppState, e: &axum::Error) -> Response {
    if caused_by::<BodyTooLarge>(e) {
        // The body limit drains the rest and adds `connection: close`.
        errors::too_large(state.max_body_bytes)
    } else if caused_by::<BodyTimeout>(e) {
        errors::body_timeout(state.body_timeout)
    } else {
        errors::bad_request("the request body could not be read")
    }
}

/// The upstream request, its `model` (read from `bytes`) and the route it is counted under.
fn upstream_request(
    state: &AppState,
    mut parts: http::request::Parts,
    bytes: Bytes,
    span: &tracing::Span,
) -> (http::Request<Bytes>, Option<String>, RouteHistograms) {
    // Read once: the route metrics, the span and the stack's routing all take it from here.
    let model = requested_model(&bytes).map(Cow::into_owned);
    let route = state.metrics.routes().for_model(model.as_deref()).clone();
    telemetry::record_request(span, model.as_deref(), route.name());
    let body_len = bytes.len();
    let mut upstream = http::Request::new(bytes);
    *upstream.method_mut() = Method::POST;
    *upstream.uri_mut() = CHAT_COMPLETIONS.clone();
    // The client's header map itself, less what does not go upstream (no copy of the rest).
    let mut headers = std::mem::take(&mut parts.headers);
    state
        .headers
        .retain_upstream_request_headers_for_body(&mut headers, body_len);
    *upstream.headers_mut() = headers;
    // The cache tier keys answers per client: the key's name (unique within the key set; never
    // the key). Without client keys every client shares one scope.
    if let Some(client) = parts.extensions.get::<ClientName>() {
        upstream
            .extensions_mut()
            .insert(CacheScope::new(client.as_str()));
    }
    (upstream, model, route)
}

/// `body` read whole, as `collect().to_bytes()` reads it (data frames joined, trailers dropped),
/// without its list of frames: a request that arrived in one read is one data frame, kept as it
/// is (neither copied nor put in a list, which costs an allocation per request).
async fn read_whole(mut body: Body) -> Result<Bytes, axum::Error> {
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        match &mut joined {
            Some(buf) => buf.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut buf = BytesMut::with_capacity(first.len() + data.len());
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
                joined = Some(buf);
            }
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

/// Whether `err`, or an error it wraps, is an `E` (axum wraps the body's boxed error).
fn caused_by<E: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<E>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The `model` values `GET /v1/models` lists: every route pattern without glob characters
/// (`*`, `?`, `[`), which is a name a client sends as is (an alias such as `fast`, or a model
/// name), then the models a route with pass-through targets holds now (a glob route that
/// forwards the requested model: each has routed at least once, and the route keeps at most
/// [`MAX_MODELS_PER_ROUTE`](tower_llm::stack::MAX_MODELS_PER_ROUTE), evicting the least recently used idle one, so the list
/// stays bounded however many names clients send). Upstream model names of
/// targets are not listed: a client cannot ask for them unless a route matches them, and then
/// they are listed as a route or once requested. In order, without duplicates.
pub fn model_ids(route_patterns: &[String], requested: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let literal = route_patterns
        .iter()
        .filter(|p| !p.contains(['*', '?', '[']));
    for id in literal.chain(requested) {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ids
}

/// `GET /v1/models`: `{"object":"list","data":[{"id","object":"model","created","owned_by"}]}`.
pub(crate) async fn models(State(state): State<Arc<AppState>>) -> Response {
    let ids = model_ids(
        &state.stack.route_patterns(),
        &state.stack.requested_models(),
    );
    let data: Vec<serde_json::Value> = ids
        .into_iter()
        .map(|id| {
            serde_json::json!({
                "id": id,
                "object": "model",
                "created": state.started_unix,
                "owned_by": "tower-llm",
            })
        })
        .collect();
    Json(serde_json::json!({ "object": "list", "data": data })).into_response()
}

/// `GET /health`: `200` while at least one target can be called, `503` when none can. With
/// admin keys set, a request without one gets the overall status only (`{"status":"degraded"}`),
/// not the targets (they name every model clients asked for).
pub(crate) async fn health(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let health = state.stack.health();
    let status = match health.status {
        OverallHealth::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    if !state.admin.current().allows(&headers) {
        let overall = serde_json::json!({ "status": health.status.as_str() });
        return (status, Json(overall)).into_response();
    }
    (status, Json(health)).into_response()
}

/// `GET /metrics`: Prometheus text; 401 without an admin key when admin keys are set.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !state.admin.current().allows(&headers) {
        return errors::unauthorized();
    }
    let mut res = Response::new(Body::from(state.metrics.render()));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    res
}

/// Anything else: an OpenAI-shaped 404.
pub(crate) async fn unknown_path(req: Request) -> Response {
    errors::not_found(
        "unknown_url",
        &format!("no endpoint {} {}", req.method(), req.uri().path()),
    )
}

/// A known path with a method it does not serve: an OpenAI-shaped 405 (axum adds `allow`).
pub(crate) async fn wrong_method(req: Request) -> Response {
    errors::method_not_allowed(req.method(), req.uri().path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_literal_routes_then_requested_models() {
        let routes = ["fast", "gpt-*", "claude-?", "o[13]", "*", "fast"].map(String::from);
        let requested = ["gpt-4o", "fast", "llama3"].map(String::from);
        assert_eq!(model_ids(&routes, &requested), ["fast", "gpt-4o", "llama3"]);
        assert!(model_ids(&["*".to_owned()], &[]).is_empty());
    }

    /// A body of `chunks` as data frames, then trailers.
    fn framed(chunks: &[&'static str]) -> Body {
        let mut frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        frames.push(Ok(http_body::Frame::trailers(HeaderMap::new())));
        Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn a_body_is_read_whole_as_collect_reads_it() {
        for chunks in [
            &[][..],
            &[""],
            &["{\"model\":\"m\"}"],
            &["", "{\"model\":", "", "\"m\"}"],
            &["a", "b", "c", "d"],
        ] {
            let expected = framed(chunks).collect().await.unwrap().to_bytes();
            let read = read_whole(framed(chunks)).await.unwrap();
            assert_eq!(read, expected, "{chunks:?}");
        }
        // One frame is kept as it is: the same bytes, not a copy.
        let one = Bytes::from_static(b"{}");
        let read = read_whole(Body::from(one.clone())).await.unwrap();
        assert_eq!(read.as_ptr(), one.as_ptr());
    }

    #[tokio::test]
    async fn errors_are_found_through_wrappers() {
        use http_body_util::LengthLimitError;

        let limited = http_body_util::Limited::new(Full::new(Bytes::from_static(b"abc")), 1);
        let wrapped = Body::new(limited).collect().await.unwrap_err();
        assert!(caused_by::<LengthLimitError>(&wrapped));
        assert!(!caused_by::<BodyTimeout>(&wrapped));
    }
}
