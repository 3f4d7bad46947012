//! What an [`ErrorReply`] sends: its headers and its body in each provider's error format.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::{ErrorReply, ErrorShape};

impl ErrorReply {
    /// The message sent when none was set.
    fn default_message(&self) -> String {
        let known = self.code.as_deref().and_then(KnownCode::from_code);
        match (known, self.shape) {
            (Some(KnownCode::ContextLength), ErrorShape::Anthropic) => {
                "prompt is too long: 9001 tokens > 8192 maximum".to_owned()
            }
            (Some(KnownCode::ContextLength), ErrorShape::Gemini) => {
                "The input token count (9001) exceeds the maximum number of tokens allowed (8192)."
                    .to_owned()
            }
            (Some(KnownCode::ContextLength), _) => {
                "This model's maximum context length is 8192 tokens. \
However, your messages resulted in 9001 tokens. Please reduce the length of the messages."
                    .to_owned()
            }
            (Some(KnownCode::ContentPolicy), _) => "Your request was rejected as a result of our \
safety system. Your prompt may contain text that is not allowed by our safety system."
                .to_owned(),
            (None, _) => {
                let reason = StatusCode::from_u16(self.status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or(match self.status {
                        529 => "Overloaded",
                        498 => "Capacity Exceeded",
                        _ => "Error",
                    });
                format!("mock upstream: {reason} (HTTP {})", self.status)
            }
        }
    }

    /// The response headers of this reply at `now` (content type, delay, extras).
    pub(crate) fn response_headers(&self, now: SystemTime) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::with_capacity(self.headers.len() + 2);
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        if let Some(retry_after) = &self.retry_after {
            // Gemini states its delay in the body only, as the real API does.
            if self.shape != ErrorShape::Gemini {
                headers.push(retry_after.header_at(now));
            }
        }
        headers.extend(self.headers.iter().cloned());
        headers
    }

    /// The JSON body of this reply at `now`.
    pub(crate) fn body(&self, now: SystemTime) -> Bytes {
        let message = self
            .message
            .clone()
            .unwrap_or_else(|| self.default_message());
        let known = self.code.as_deref().and_then(KnownCode::from_code);
        let value = match self.shape {
            ErrorShape::OpenAi => {
                openai_body(self.status, self.code.as_deref(), known, &message, true)
            }
            ErrorShape::Groq => {
                openai_body(self.status, self.code.as_deref(), known, &message, false)
            }
            ErrorShape::Anthropic => {
                let kind = match (known, self.code.as_deref()) {
                    (Some(_), _) => "invalid_request_error",
                    (None, Some(code)) => code,
                    (None, None) => anthropic_type(self.status),
                };
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
            ErrorShape::Gemini => {
                let status = match (known, self.code.as_deref()) {
                    (Some(_), _) => "INVALID_ARGUMENT",
                    (None, Some(code)) => code,
                    (None, None) => gemini_status(self.status),
                };
                let mut error = json!({"code": self.status, "message": message, "status": status});
                if let Some(retry_after) = &self.retry_after {
                    let delay = retry_after.delay_at(now);
                    error["details"] = json!([{
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": proto_duration(delay),
                    }]);
                }
                json!({ "error": error })
            }
            ErrorShape::OpenRouter => {
                let raw = openai_body(self.status, self.code.as_deref(), known, &message, true);
                json!({"error": {
                    "code": self.status,
                    "message": message,
                    "metadata": {"provider_name": "mock", "raw": raw.to_string()},
                }})
            }
        };
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    }
}

/// OpenAI codes whose provider equivalents differ from the code itself.
#[derive(Clone, Copy)]
enum KnownCode {
    ContextLength,
    ContentPolicy,
}

impl KnownCode {
    fn from_code(code: &str) -> Option<KnownCode> {
        match code {
            "context_length_exceeded" => Some(KnownCode::ContextLength),
            "content_policy_violation" => Some(KnownCode::ContentPolicy),
            _ => None,
        }
    }
}

fn openai_body(
    status: u16,
    code: Option<&str>,
    known: Option<KnownCode>,
    message: &str,
    param: bool,
) -> Value {
    let (kind, code) = match (known, code) {
        (Some(KnownCode::ContextLength), Some(code)) => ("invalid_request_error", Some(code)),
        (Some(KnownCode::ContentPolicy), Some(code)) => ("invalid_request_error", Some(code)),
        (_, Some(code)) => (code, Some(code)),
        (_, None) => openai_defaults(status),
    };
    let mut error = json!({"message": message, "type": kind});
    if param {
        error["param"] = match known {
            Some(KnownCode::ContextLength) => json!("messages"),
            _ => Value::Null,
        };
    }
    error["code"] = code.map_or(Value::Null, |c| json!(c));
    json!({ "error": error })
}

fn openai_defaults(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        402 => ("insufficient_quota", Some("insufficient_quota")),
        404 => ("invalid_request_error", Some("model_not_found")),
        408 => ("timeout", None),
        413 => ("invalid_request_error", Some("request_too_large")),
        429 => ("requests", Some("rate_limit_exceeded")),
        498 => ("capacity_exceeded", Some("capacity_exceeded")),
        s if (400..500).contains(&s) => ("invalid_request_error", None),
        _ => ("server_error", None),
    }
}

fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        s if (400..500).contains(&s) => "invalid_request_error",
        _ => "api_error",
    }
}

fn gemini_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        s if (400..500).contains(&s) => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    }
}

/// A protobuf JSON duration: `13s`, `1.500s`.
fn proto_duration(d: Duration) -> String {
    let millis = d.subsec_millis();
    if millis == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}.{:03}s", d.as_secs(), millis)
    }
}
