//! OpenAI-shaped JSON errors (`{"error": {"message", "type", "param", "code"}}`) with the right
//! status.
//!
//! | cause | status |
//! |---|---|
//! | body not JSON, no `model` | 400 `invalid_request_error` |
//! | missing or wrong client key | 401 `invalid_api_key` + `www-authenticate: Bearer` |
//! | no route for the model, unknown path | 404 `model_not_found`, `unknown_url` |
//! | known path, wrong method | 405 `method_not_allowed` + `allow` |
//! | body not received within `[gateway] body_timeout_ms` | 408 `request_timeout` |
//! | body over `[request] max_body_bytes` | 413 `request_too_large` |
//! | every target failed, the last because of a rate limit or quota | 429 + `retry-after` |
//! | every target failed, the last with an overload or a local rejection (breaker open, bulkhead full), or every target is benched | 503 (+ `retry-after` when known) |
//! | every target failed, the last by timing out; no answer within `[gateway] request_timeout_ms` | 504 |
//! | every target failed otherwise (5xx, transport, broken answer, auth) | 502 |
//!
//! Messages name targets and error kinds, never a key, a prompt or an answer.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use tower_llm::core::openai::ErrorBody;
use tower_llm::core::{AllTargetsFailed, BoxError, ErrorKind};
use tower_llm::fallback::is_skipped;
use tower_llm::{InvalidReason, InvalidRequest, NoRoute, TooManyModels};

/// An OpenAI-shaped error response.
pub fn error_response(
    status: StatusCode,
    ty: &str,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> Response {
    let body = ErrorBody::new(message, ty).with_code(code).to_json();
    json_error(status, body, retry_after)
}

/// `body` as the JSON of an error response with `status` (and `retry-after` when known).
fn json_error(status: StatusCode, body: Bytes, retry_after: Option<Duration>) -> Response {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(after) = retry_after {
        // Whole seconds, rounded up: a client must not come back too early.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    res
}

/// An error response for an upstream-style failure of `kind`.
pub fn kind_response(
    status: StatusCode,
    kind: ErrorKind,
    message: &str,
    retry_after: Option<Duration>,
) -> Response {
    let body = ErrorBody::for_kind(kind, message).to_json();
    json_error(status, body, retry_after)
}

/// 401: missing or wrong client key.
pub fn unauthorized() -> Response {
    let mut res = error_response(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "invalid_api_key",
        "missing or invalid API key: send `Authorization: Bearer <key>`",
        None,
    );
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

/// 413: the request body is over the limit.
pub fn too_large(limit: u64) -> Response {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "request_too_large",
        &format!("the request body is larger than {limit} bytes"),
        None,
    )
}

/// 408: the client did not send its request body in time.
pub fn body_timeout(limit: Duration) -> Response {
    error_response(
        StatusCode::REQUEST_TIMEOUT,
        "invalid_request_error",
        "request_timeout",
        &format!(
            "the request body was not received within {} ms",
            limit.as_millis()
        ),
        None,
    )
}

/// 504: no answer within the gateway's request timeout.
pub fn request_timeout(limit: Duration) -> Response {
    kind_response(
        StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Timeout,
        &format!("no answer within {} ms", limit.as_millis()),
        None,
    )
}

/// 400: a malformed request.
pub fn bad_request(message: &str) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
        message,
        None,
    )
}

/// 404: an unknown path or model.
pub fn not_found(code: &str, message: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        code,
        message,
        None,
    )
}

/// 405: a known path with a method it does not serve (the router adds the `allow` header).
pub fn method_not_allowed(method: &http::Method, path: &str) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        &format!("{path} does not accept {method}"),
        None,
    )
}

/// The response for an error the stack returned.
pub fn stack_error(err: &BoxError) -> Response {
    if let Some(no_route) = err.downcast_ref::<NoRoute>() {
        return not_found("model_not_found", &no_route.to_string());
    }
    if let Some(invalid) = err.downcast_ref::<InvalidRequest>() {
        return match invalid.reason() {
            InvalidReason::TooLarge(limit) => too_large(*limit as u64),
            _ => bad_request(&invalid.to_string()),
        };
    }
    if let Some(too_many) = err.downcast_ref::<TooManyModels>() {
        return bad_request(&too_many.to_string());
    }
    if let Some(all) = err.downcast_ref::<AllTargetsFailed>() {
        return all_failed(all);
    }
    // Anything else is a failure on the way to the providers.
    kind_response(
        StatusCode::BAD_GATEWAY,
        ErrorKind::Unknown,
        &format!("upstream call failed: {err}"),
        None,
    )
}

/// The response when no target answered.
pub fn all_failed(err: &AllTargetsFailed) -> Response {
    let attempts = err.attempts();
    let called: Vec<_> = attempts.iter().filter(|a| !is_skipped(a)).collect();
    let min_delay = |records: &mut dyn Iterator<Item = &tower_llm::core::AttemptRecord>| {
        records.filter_map(|a| a.retry_after).min()
    };
    let message = err.to_string();
    let Some(last) = called.last() else {
        // Every target is benched (cooldown) or was refused locally: come back at the next probe.
        let after = err.retry_after();
        return kind_response(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Overloaded,
            &message,
            after.or(Some(Duration::from_secs(1))),
        );
    };
    match last.kind {
        ErrorKind::RateLimited | ErrorKind::QuotaExhausted => kind_response(
            StatusCode::TOO_MANY_REQUESTS,
            last.kind,
            &message,
            min_delay(&mut called.iter().copied()).or(Some(Duration::from_secs(1))),
        ),
        ErrorKind::Timeout => kind_response(StatusCode::GATEWAY_TIMEOUT, last.kind, &message, None),
        ErrorKind::Overloaded => kind_response(
            StatusCode::SERVICE_UNAVAILABLE,
            last.kind,
            &message,
            min_delay(&mut called.iter().copied()),
        ),
        kind => kind_response(StatusCode::BAD_GATEWAY, kind, &message, None),
    }
}
