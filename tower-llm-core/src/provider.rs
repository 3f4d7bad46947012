//! Provider error bodies (OpenAI, Anthropic, Gemini, Groq, OpenRouter) → [`ProviderError`].
//!
//! [`parse_error_body`] reads the JSON error body of a failed response and says what it means in
//! terms of the taxonomy: `insufficient_quota` on a 429 is [`ErrorKind::QuotaExhausted`],
//! `context_length_exceeded` or "prompt is too long" on a 400 is [`ErrorKind::ContextLength`].
//! [`InspectErrorBodyLayer`](crate::InspectErrorBodyLayer) calls it and leaves the result in the
//! response extensions, where [`HttpClassifier`](crate::HttpClassifier) finds it.
//!
//! | provider | shape |
//! |---|---|
//! | OpenAI, Groq, vLLM | `{"error":{"message","type","param","code"}}` |
//! | Anthropic | `{"type":"error","error":{"type":"rate_limit_error",...,"message"}}` |
//! | Gemini | `{"error":{"code":429,"message","status":"RESOURCE_EXHAUSTED","details":[...]}}`, also wrapped in a one-element array |
//! | OpenRouter | `{"error":{"code":402,"message","metadata":{"reasons":[...],"raw":"..."}}}` |
//! | local servers | `{"error":"..."}`, `{"message":"...","type":"...","code":400}`, `{"detail":"..."}` |
//!
//! How the body decides the kind, first match wins:
//! 1. structure: OpenRouter moderation metadata (`reasons`, `flagged_input`) → `ContentPolicy`;
//!    a Gemini `QuotaFailure` on a per-day quota → `QuotaExhausted`; a Gemini `ErrorInfo` with
//!    reason `API_KEY_INVALID` → `Auth`; the error OpenRouter relays from the upstream in
//!    `metadata.raw`, parsed the same way;
//! 2. "Request too large ... must be reduced" (OpenAI and Groq say this, with code
//!    `rate_limit_exceeded`, when one request exceeds the per-minute token limit: it can never
//!    succeed on this target, so it is `ContextLength`, not a rate limit);
//! 3. the provider's identifiers, `code` before `type` and `status` ([`kind_of_code`]);
//! 4. the message text ([`kind_of_message`]).
//!
//! Delays in the body are read too: Gemini's `RetryInfo.retryDelay`, and "Please try again in
//! 7.66s" in OpenAI and Groq messages.
//!
//! ```
//! use std::time::Duration;
//! use http::StatusCode;
//! use tower_llm_core::{provider, ErrorKind};
//!
//! let body = br#"{"type":"error","error":{"type":"invalid_request_error",
//!     "message":"prompt is too long: 250000 tokens > 200000 maximum"}}"#;
//! let found = provider::parse_error_body(StatusCode::BAD_REQUEST, body).unwrap();
//! assert_eq!(found.kind, Some(ErrorKind::ContextLength));
//! assert_eq!(found.code.as_deref(), Some("invalid_request_error"));
//!
//! let body = br#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED",
//!     "details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"13s"}]}}"#;
//! let found = provider::parse_error_body(StatusCode::TOO_MANY_REQUESTS, body).unwrap();
//! assert_eq!(found.kind, None); // the status already says RateLimited
//! assert_eq!(found.retry_after, Some(Duration::from_secs(13)));
//!
//! assert!(provider::parse_error_body(StatusCode::BAD_GATEWAY, b"<html>Bad Gateway</html>").is_none());
//! ```

use std::time::Duration;

use http::StatusCode;
use serde_json::{Map, Value};

use crate::classify::{refines, status_kind};
use crate::delay::{self, find_ascii_ci};
use crate::{ErrorKind, ProviderError};

/// Longest [`ProviderError::message`] kept, in bytes (cut on a character boundary).
pub const MAX_MESSAGE_LEN: usize = 512;

/// Longest [`ProviderError::code`] kept, in bytes.
pub const MAX_CODE_LEN: usize = 128;

/// How much of a message is searched for phrases: they come early, and the search stays bounded.
const MAX_SCANNED_TEXT: usize = 4096;

/// Parse a provider's JSON error body. `None` when the body is not a recognisable error (not
/// JSON, not UTF-8, no `error` object or message).
///
/// [`ProviderError::kind`] is set only when the body sharpens what the status says, following
/// the [`HttpClassifier`](crate::HttpClassifier) table: a 429 whose body says
/// `rate_limit_exceeded` leaves it `None`, one that says `insufficient_quota` sets it to
/// `QuotaExhausted`; a 503 whose body says `server_error` leaves it `None` (a body never turns an
/// overload into another 5xx, or a 5xx into a client error). Use [`parse_error_slice`] for what the
/// body says on its own.
///
/// The work is bounded by the body, which the caller bounds; `serde_json`'s recursion limit stops
/// deeply nested input.
pub fn parse_error_body(status: StatusCode, body: &[u8]) -> Option<ProviderError> {
    let mut found = parse_error_slice(body)?;
    if let (Some(from_body), Some(from_status)) = (found.kind, status_kind(status)) {
        if !refines(from_status, from_body) {
            found.kind = None;
        }
    }
    Some(found)
}

/// Parse a JSON error body without a status: `kind` is whatever the body implies (`None` when it
/// implies nothing). Used for in-band stream errors, which have no status of their own.
pub fn parse_error_slice(body: &[u8]) -> Option<ProviderError> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if !matches!(body.get(start), Some(b'{' | b'[')) {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    parse_error_value(&value)
}

/// [`parse_error_slice`] on an already parsed JSON value.
pub fn parse_error_value(value: &Value) -> Option<ProviderError> {
    extract(value, true)
}

fn extract(root: &Value, follow_raw: bool) -> Option<ProviderError> {
    let root = match root {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let obj = root.as_object()?;
    let (error, message): (Option<&Map<String, Value>>, Option<&str>) = match obj.get("error") {
        Some(Value::Object(e)) => (Some(e), e.get("message").and_then(Value::as_str)),
        Some(Value::String(s)) => (None, Some(s.as_str())),
        _ => {
            // vLLM's top-level shape, FastAPI's `detail`.
            let message = obj
                .get("message")
                .or_else(|| obj.get("detail"))
                .and_then(Value::as_str)?;
            (Some(obj), Some(message))
        }
    };
    let field = |name: &str| error.and_then(|e| e.get(name));
    let str_field = |name: &str| {
        field(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };

    let metadata = field("metadata").and_then(Value::as_object);
    let raw = metadata.and_then(|m| m.get("raw"));
    // OpenRouter relays the upstream's own error body in `metadata.raw` (a JSON string or object).
    let relayed = match raw {
        Some(Value::String(text)) if follow_raw => serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| extract(&v, false)),
        Some(v @ Value::Object(_)) if follow_raw => extract(v, false),
        _ => None,
    };
    let raw_text = raw.and_then(Value::as_str);

    let code_num = field("code").and_then(Value::as_i64);
    let code = str_field("status")
        .or_else(|| str_field("code"))
        .or_else(|| str_field("type"))
        .map(|c| truncate(c, MAX_CODE_LEN).to_owned())
        .or_else(|| relayed.as_ref().and_then(|r| r.code.clone()))
        .or_else(|| code_num.map(|n| n.to_string()));

    let texts = [message, raw_text];
    let kind = structural_kind(error, metadata)
        .or_else(|| relayed.as_ref().and_then(|r| r.kind))
        .or_else(|| texts.iter().flatten().find_map(|t| too_large_for_target(t)))
        .or_else(|| {
            ["code", "type", "status"]
                .iter()
                .filter_map(|name| str_field(name))
                .find_map(kind_of_code)
        })
        .or_else(|| texts.iter().flatten().find_map(|t| kind_of_message(t)));

    let retry_after = delay::gemini_retry_delay(root)
        .or_else(|| relayed.as_ref().and_then(|r| r.retry_after))
        .or_else(|| {
            texts
                .iter()
                .flatten()
                .find_map(|t| delay::delay_in_message(scanned(t)))
        });

    let message = message
        .map(|m| truncate(m, MAX_MESSAGE_LEN).to_owned())
        .or_else(|| relayed.and_then(|r| r.message));

    Some(ProviderError {
        kind,
        code,
        message,
        retry_after,
    })
}

/// Kinds only the structure of the body shows.
fn structural_kind(
    error: Option<&Map<String, Value>>,
    metadata: Option<&Map<String, Value>>,
) -> Option<ErrorKind> {
    if let Some(m) = metadata {
        let flagged = m.get("flagged_input").is_some_and(|v| !v.is_null())
            || m.get("reasons")
                .and_then(Value::as_array)
                .is_some_and(|r| !r.is_empty());
        if flagged {
            return Some(ErrorKind::ContentPolicy);
        }
    }
    let details = error?.get("details")?.as_array()?;
    for detail in details {
        let Some(ty) = detail.get("@type").and_then(Value::as_str) else {
            continue;
        };
        if ty.ends_with("google.rpc.QuotaFailure") {
            let per_day = detail
                .get("violations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|v| ["quotaId", "quotaMetric"].map(|k| v.get(k).and_then(Value::as_str)))
                .flatten()
                .any(|id| find_ascii_ci(id, "perday").is_some());
            if per_day {
                return Some(ErrorKind::QuotaExhausted);
            }
        } else if ty.ends_with("google.rpc.ErrorInfo") {
            let reason = detail.get("reason").and_then(Value::as_str).unwrap_or("");
            if reason.eq_ignore_ascii_case("API_KEY_INVALID")
                || reason.eq_ignore_ascii_case("API_KEY_EXPIRED")
                || reason.eq_ignore_ascii_case("API_KEY_SERVICE_BLOCKED")
            {
                return Some(ErrorKind::Auth);
            }
        }
    }
    None
}

/// "Request too large for gpt-4o ... on tokens per min (TPM): Limit 30000, Requested 36000. The
/// input or output tokens must be reduced": one request over a per-minute limit never fits.
fn too_large_for_target(text: &str) -> Option<ErrorKind> {
    let text = scanned(text);
    (find_ascii_ci(text, "request too large").is_some()
        || (find_ascii_ci(text, "must be reduced").is_some()
            && find_ascii_ci(text, "token").is_some()))
    .then_some(ErrorKind::ContextLength)
}

/// The kind a provider error code, type or status names, case-insensitively; `None` for generic
/// ones (`invalid_request_error`, `INVALID_ARGUMENT`) that say no more than the HTTP status.
///
/// Every [`ErrorKind::as_str`] name is recognised too, so the bodies
/// [`openai::error_body`](crate::openai::error_body) writes read back as the kind they were
/// written for.
pub fn kind_of_code(code: &str) -> Option<ErrorKind> {
    const TABLE: &[(&str, ErrorKind)] = &[
        // Quota and billing.
        ("insufficient_quota", ErrorKind::QuotaExhausted),
        ("billing_error", ErrorKind::QuotaExhausted),
        ("billing_hard_limit_reached", ErrorKind::QuotaExhausted),
        ("billing_not_active", ErrorKind::QuotaExhausted),
        ("insufficient_credits", ErrorKind::QuotaExhausted),
        ("payment_required", ErrorKind::QuotaExhausted),
        ("quota_exhausted", ErrorKind::QuotaExhausted),
        // Rate limits (Gemini's RESOURCE_EXHAUSTED too, unless a per-day quota says otherwise).
        ("rate_limit_exceeded", ErrorKind::RateLimited),
        ("rate_limit_error", ErrorKind::RateLimited),
        ("rate_limited", ErrorKind::RateLimited),
        ("too_many_requests", ErrorKind::RateLimited),
        ("resource_exhausted", ErrorKind::RateLimited),
        // Load shedding.
        ("overloaded_error", ErrorKind::Overloaded),
        ("overloaded", ErrorKind::Overloaded),
        ("engine_overloaded", ErrorKind::Overloaded),
        ("service_unavailable", ErrorKind::Overloaded),
        ("unavailable", ErrorKind::Overloaded),
        // Provider failures.
        ("server_error", ErrorKind::ServerError),
        ("api_error", ErrorKind::ServerError),
        ("internal", ErrorKind::ServerError),
        ("internal_error", ErrorKind::ServerError),
        ("internal_server_error", ErrorKind::ServerError),
        ("timeout_error", ErrorKind::Timeout),
        ("deadline_exceeded", ErrorKind::Timeout),
        ("timeout", ErrorKind::Timeout),
        ("transport", ErrorKind::Transport),
        ("invalid_response", ErrorKind::InvalidResponse),
        // The target is not usable with these credentials: wrong key, no permission, or a model
        // this provider does not have (see `HttpClassifier`: 404 fails over like 401/403).
        ("invalid_api_key", ErrorKind::Auth),
        ("invalid_authentication", ErrorKind::Auth),
        ("authentication_error", ErrorKind::Auth),
        ("permission_error", ErrorKind::Auth),
        ("unauthenticated", ErrorKind::Auth),
        ("permission_denied", ErrorKind::Auth),
        ("account_deactivated", ErrorKind::Auth),
        ("auth", ErrorKind::Auth),
        ("model_not_found", ErrorKind::Auth),
        ("not_found_error", ErrorKind::Auth),
        ("not_found", ErrorKind::Auth),
        ("failed_precondition", ErrorKind::Auth),
        // The request does not fit the model.
        ("context_length_exceeded", ErrorKind::ContextLength),
        ("context_length", ErrorKind::ContextLength),
        ("request_too_large", ErrorKind::ContextLength),
        // The provider refuses the content.
        ("content_policy_violation", ErrorKind::ContentPolicy),
        ("content_policy", ErrorKind::ContentPolicy),
        ("content_filter", ErrorKind::ContentPolicy),
        ("moderation_blocked", ErrorKind::ContentPolicy),
        ("bad_request", ErrorKind::BadRequest),
        ("unknown", ErrorKind::Unknown),
    ];
    let code = code.trim();
    TABLE
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(code))
        .map(|&(_, kind)| kind)
}

/// The kind a provider's message text implies, searching (case-insensitively) for the phrases
/// providers use: "maximum context length", "prompt is too long", "too many tokens", "reduce the
/// length", "input token count ... exceeds the maximum" (context length); "content policy",
/// "safety system", "flagged", "moderation" (content policy); "exceeded your current quota",
/// "insufficient credits", "credit balance is too low" (quota); "rate limit"; "overloaded"; "API
/// key", "model ... not found / does not exist" (auth).
pub fn kind_of_message(message: &str) -> Option<ErrorKind> {
    let text = scanned(message);
    let has = |needle: &str| find_ascii_ci(text, needle).is_some();
    const CONTEXT: &[&str] = &[
        "maximum context length",
        "context length",
        "context_length_exceeded",
        "context window",
        "prompt is too long",
        "too many tokens",
        "reduce the length",
        "input token count",
        "maximum number of tokens",
    ];
    const POLICY: &[&str] = &[
        "content policy",
        "content_policy",
        "content management policy",
        "safety system",
        "flagged",
        "moderation",
        "usage policies",
    ];
    const QUOTA: &[&str] = &[
        "insufficient_quota",
        "exceeded your current quota",
        "insufficient credits",
        "credit balance is too low",
        "out of credits",
        "payment required",
    ];
    if CONTEXT.iter().any(|p| has(p)) {
        return Some(ErrorKind::ContextLength);
    }
    if POLICY.iter().any(|p| has(p))
        || (has("safety") && (has("block") || has("violat") || has("flag") || has("reject")))
    {
        return Some(ErrorKind::ContentPolicy);
    }
    if QUOTA.iter().any(|p| has(p)) {
        return Some(ErrorKind::QuotaExhausted);
    }
    if has("rate limit") {
        return Some(ErrorKind::RateLimited);
    }
    if has("overloaded") {
        return Some(ErrorKind::Overloaded);
    }
    if has("api key")
        || has("api_key")
        || (has("model") && (has("not found") || has("does not exist") || has("not a valid model")))
    {
        return Some(ErrorKind::Auth);
    }
    None
}

/// The first [`MAX_SCANNED_TEXT`] bytes of `text`, on a character boundary.
fn scanned(text: &str) -> &str {
    truncate(text, MAX_SCANNED_TEXT)
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The delay a body names, without classifying it: Gemini's `retryDelay` or a "try again in"
/// message. A convenience over [`parse_error_slice`].
pub fn body_retry_after(body: &[u8]) -> Option<Duration> {
    parse_error_slice(body)?.retry_after
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        let s = "é".repeat(300); // 600 bytes
        let t = truncate(&s, MAX_MESSAGE_LEN);
        assert!(t.len() <= MAX_MESSAGE_LEN);
        assert_eq!(t.len() % 2, 0);
        assert_eq!(truncate("abc", 2), "ab");
    }

    #[test]
    fn every_kind_round_trips_through_its_code() {
        for kind in ErrorKind::ALL {
            assert_eq!(
                kind_of_code(crate::openai::error_code(kind)),
                Some(kind),
                "{kind}"
            );
        }
    }
}
