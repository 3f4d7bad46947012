//! The error taxonomy shared by every tower-llm layer.
//!
//! ```
//! use tower_llm_core::ErrorKind;
//!
//! assert!(ErrorKind::Overloaded.is_retryable());
//! assert!(!ErrorKind::Auth.is_retryable());
//! assert!(ErrorKind::Auth.fails_over());
//! assert!(!ErrorKind::RateLimited.counts_against_breaker());
//! assert_eq!(ErrorKind::ContextLength.as_str(), "context_length");
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong with one call to an LLM provider.
///
/// The rows follow the taxonomy in `DESIGN.md`: each kind says whether the same target may be
/// retried, whether a fallback chain should move on, and whether a circuit breaker counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 429 with a rate-limit signal: the provider asks the caller to slow down.
    RateLimited,
    /// 429 `insufficient_quota`, 402: the account is out of credit; retrying will not help.
    QuotaExhausted,
    /// 503, 529 `overloaded_error`, 498: the provider sheds load.
    Overloaded,
    /// 500, 502, 504: the provider failed.
    ServerError,
    /// An attempt timeout, a 408, or no bytes in time.
    Timeout,
    /// Connection refused or reset, DNS failure, a connection closed before the headers.
    Transport,
    /// 401, 403: the credentials are wrong or lack permission.
    Auth,
    /// 400 `context_length_exceeded` / "prompt is too long": the request does not fit the model.
    ContextLength,
    /// 400 `content_policy_violation`: the provider refuses the content.
    ContentPolicy,
    /// Any other 4xx: the request itself is wrong.
    BadRequest,
    /// A 2xx whose body cannot be used: unparsable JSON, broken SSE, a stream cut before its end.
    InvalidResponse,
    /// Anything else.
    Unknown,
}

impl ErrorKind {
    /// Every kind, in taxonomy order.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::RateLimited,
        ErrorKind::QuotaExhausted,
        ErrorKind::Overloaded,
        ErrorKind::ServerError,
        ErrorKind::Timeout,
        ErrorKind::Transport,
        ErrorKind::Auth,
        ErrorKind::ContextLength,
        ErrorKind::ContentPolicy,
        ErrorKind::BadRequest,
        ErrorKind::InvalidResponse,
        ErrorKind::Unknown,
    ];

    /// A stable `snake_case` name, used as a `kind` label in metrics and in serialized snapshots.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaExhausted => "quota_exhausted",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Transport => "transport",
            ErrorKind::Auth => "auth",
            ErrorKind::ContextLength => "context_length",
            ErrorKind::ContentPolicy => "content_policy",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::Unknown => "unknown",
        }
    }

    /// Whether the same target may be tried again (after a delay).
    ///
    /// `Timeout` is retryable, but a retry layer should retry it at most once: a silent target is
    /// better failed over. `Unknown` is retried by default policy too.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Transport
                | ErrorKind::InvalidResponse
                | ErrorKind::Unknown
        )
    }

    /// Whether a fallback chain should move on to another target.
    ///
    /// `ContextLength` returns `true`, but only a target with a larger context window should be
    /// tried; `ContentPolicy` and `BadRequest` return `false`: the provider's answer is returned.
    pub const fn fails_over(self) -> bool {
        !matches!(self, ErrorKind::ContentPolicy | ErrorKind::BadRequest)
    }

    /// Whether a circuit breaker counts this kind as a failure of the target.
    ///
    /// Rate limits, quota, auth and request errors say nothing about the target's health.
    pub const fn counts_against_breaker(self) -> bool {
        matches!(
            self,
            ErrorKind::Overloaded
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Transport
                | ErrorKind::InvalidResponse
                | ErrorKind::Unknown
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taxonomy_rows_match_design() {
        use ErrorKind::*;
        // (kind, retry same target, fail over, counts against breaker)
        let rows = [
            (RateLimited, true, true, false),
            (QuotaExhausted, false, true, false),
            (Overloaded, true, true, true),
            (ServerError, true, true, true),
            (Timeout, true, true, true),
            (Transport, true, true, true),
            (Auth, false, true, false),
            (ContextLength, false, true, false),
            (ContentPolicy, false, false, false),
            (BadRequest, false, false, false),
            (InvalidResponse, true, true, true),
            (Unknown, true, true, true),
        ];
        assert_eq!(rows.len(), ErrorKind::ALL.len());
        for (kind, retry, over, breaker) in rows {
            assert_eq!(kind.is_retryable(), retry, "{kind} retry");
            assert_eq!(kind.fails_over(), over, "{kind} fail over");
            assert_eq!(kind.counts_against_breaker(), breaker, "{kind} breaker");
        }
    }

    #[test]
    fn names_round_trip_through_serde() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            let back: ErrorKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, kind);
        }
    }
}
