//! The gateway's HTTP endpoints (axum 0.8).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceExt;
use tower_llm::fallback::X_LLM_FALLBACK;
use tower_llm::OverallHealth;

use super::auth::ClientKeys;
use super::errors;
use super::headers::{client_response_headers, upstream_request_headers};
use super::server::GatewayStack;
use super::status::Counters;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The resilient stack (clones share every breaker, cooldown and cache).
    pub stack: GatewayStack,
    /// Client keys (empty: no client authentication).
    pub keys: Arc<ClientKeys>,
    /// Largest request body accepted.
    pub max_body_bytes: u64,
    /// Traffic counters for the status line.
    pub counters: Arc<Counters>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

/// The router: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`, `GET /metrics`,
/// and an OpenAI-shaped 404 for anything else.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(unknown_path)
        .with_state(state)
}

async fn chat_completions(State(state): State<AppState>, req: Request) -> Response {
    state.counters.requests.fetch_add(1, Ordering::Relaxed);
    let res = answer(&state, req).await;
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
    metrics::counter!(
        "tower_llm_gateway_requests_total",
        "outcome" => if status.is_success() { "success" } else { "failure" },
        "fallback" => fallback.to_owned(),
        "status" => status.as_str().to_owned()
    )
    .increment(1);
    res
}

async fn answer(state: &AppState, req: Request) -> Response {
    if !state.keys.allows(req.headers()) {
        return errors::unauthorized();
    }
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes) {
        return errors::too_large(state.max_body_bytes);
    }
    let limit = usize::try_from(state.max_body_bytes).unwrap_or(usize::MAX);
    let bytes: Bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return errors::too_large(state.max_body_bytes)
        }
        Err(_) => return errors::bad_request("the request body could not be read"),
    };
    let mut upstream = http::Request::new(Full::new(bytes));
    *upstream.method_mut() = Method::POST;
    *upstream.uri_mut() = http::Uri::from_static("/v1/chat/completions");
    *upstream.headers_mut() = upstream_request_headers(&parts.headers);
    match state.stack.clone().oneshot(upstream).await {
        Ok(res) => {
            let (mut parts, body) = res.into_parts();
            client_response_headers(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(err) => {
            tracing::debug!(error = %err, "no target answered");
            errors::stack_error(&err)
        }
    }
}

async fn models(State(state): State<AppState>, req: Request) -> Response {
    if !state.keys.allows(req.headers()) {
        return errors::unauthorized();
    }
    let data: Vec<serde_json::Value> = state
        .stack
        .route_patterns()
        .into_iter()
        .map(|id| serde_json::json!({ "id": id, "object": "model", "created": 0, "owned_by": "tower-llm" }))
        .collect();
    Json(serde_json::json!({ "object": "list", "data": data })).into_response()
}

/// `200` while at least one target can be called, `503` when none can.
async fn health(State(state): State<AppState>) -> Response {
    let health = state.stack.health();
    let status = match health.status {
        OverallHealth::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (status, Json(health)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut res = Response::new(Body::from(state.metrics.render()));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    res
}

async fn unknown_path(req: Request) -> Response {
    errors::not_found(
        "unknown_url",
        &format!("no endpoint {} {}", req.method(), req.uri().path()),
    )
}
