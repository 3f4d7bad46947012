//! Classification: turning a response or an error into success or a [`Failure`] of some
//! [`ErrorKind`].
//!
//! Every layer decides through a [`Classify`] implementation. [`HttpClassifier`] is the default
//! for `http::Response<B>`: it maps the status and headers, and, when an
//! [`InspectErrorBodyLayer`](crate::InspectErrorBodyLayer) below has read the error body, the
//! provider's error code (`insufficient_quota`, `context_length_exceeded`, ...) that it left in a
//! [`ProviderError`] extension.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_core::{Classification, Classify, ErrorKind, HttpClassifier};
//!
//! let classifier = HttpClassifier::default();
//! let res = http::Response::builder()
//!     .status(429)
//!     .header("retry-after", "2")
//!     .body(())
//!     .unwrap();
//! match classifier.classify_response(&res) {
//!     Classification::Failure(failure) => {
//!         assert_eq!(failure.kind, ErrorKind::RateLimited);
//!         assert_eq!(failure.retry_after, Some(Duration::from_secs(2)));
//!     }
//!     Classification::Success => unreachable!(),
//! }
//!
//! // A custom row: treat 404 from this provider as an overloaded deployment.
//! let classifier = HttpClassifier::default().with_status(http::StatusCode::NOT_FOUND, ErrorKind::Overloaded);
//! let res = http::Response::builder().status(404).body(()).unwrap();
//! assert_eq!(classifier.classify_response(&res).kind(), Some(ErrorKind::Overloaded));
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Response, StatusCode};

use crate::error::{
    AllTargetsFailed, AttemptTimeout, BreakerOpen, BulkheadFull, ClassifiedError, RetriesExhausted,
};
use crate::sse::SseError;
use crate::StreamOutcome;
use crate::{delay, ErrorKind, LimitKind};

/// Where a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The target (or the network to it) failed.
    Upstream,
    /// A local layer (breaker, bulkhead, limiter) refused the call without calling the target; it
    /// says nothing new about the target's health.
    Local,
}

/// A failed call: what kind of failure, and how long the server asked us to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Failure {
    /// What went wrong.
    pub kind: ErrorKind,
    /// The server-requested delay (or, for a local rejection, when a permit is expected).
    pub retry_after: Option<Duration>,
    /// Whether the target failed or a local layer refused the call.
    pub origin: Origin,
}

impl Failure {
    /// An upstream failure of `kind` with no requested delay.
    pub const fn new(kind: ErrorKind) -> Self {
        Failure {
            kind,
            retry_after: None,
            origin: Origin::Upstream,
        }
    }

    /// A local rejection of `kind` (see [`Origin::Local`]).
    pub const fn local(kind: ErrorKind) -> Self {
        Failure {
            kind,
            retry_after: None,
            origin: Origin::Local,
        }
    }

    /// Attach a requested delay.
    pub const fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Whether a breaker should count this failure against the target: an upstream failure of a
    /// kind that [`ErrorKind::counts_against_breaker`].
    pub const fn counts_against_breaker(&self) -> bool {
        matches!(self.origin, Origin::Upstream) && self.kind.counts_against_breaker()
    }
}

/// The verdict on one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Classification {
    /// The call succeeded.
    Success,
    /// The call failed.
    Failure(Failure),
}

impl Classification {
    /// The failure kind, or `None` on success.
    pub const fn kind(&self) -> Option<ErrorKind> {
        match self {
            Classification::Success => None,
            Classification::Failure(f) => Some(f.kind),
        }
    }

    /// Whether this is a success.
    pub const fn is_success(&self) -> bool {
        matches!(self, Classification::Success)
    }
}

/// Decides whether a response or an error is a success or a failure of some kind.
///
/// Implement it to override rows of the taxonomy or to classify a typed (non-HTTP) client's
/// responses. Classification is synchronous and must be cheap: it runs on every call.
pub trait Classify<Res>: Clone + Send + Sync + 'static {
    /// Classify a response the inner service returned.
    fn classify_response(&self, res: &Res) -> Classification;

    /// Classify an error the inner service returned. The default is [`classify_error`].
    fn classify_error(&self, err: &(dyn Error + 'static)) -> Failure {
        classify_error(err)
    }

    /// The [`StreamOutcome`] of a response whose verdict is not known yet: a committed stream
    /// whose body may still be cut. Layers that keep health (breakers, fallback chains) wait for
    /// it before recording success. The default is `None` (every response is final); the HTTP
    /// classifier returns the one a [`StreamGuardLayer`](crate::StreamGuardLayer) below left in
    /// the response extensions.
    fn stream_outcome(&self, res: &Res) -> Option<StreamOutcome> {
        let _ = res;
        None
    }
}

/// The default classification of an error: walks the `source()` chain and recognises tower-llm's
/// own errors, timeouts (`tokio`, `tower`), `hyper`/`hyper-util` client errors (with the `hyper`
/// feature, on by default) and `std::io` errors. Anything else is [`ErrorKind::Unknown`].
pub fn classify_error(err: &(dyn Error + 'static)) -> Failure {
    let mut current: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(f) = classify_known(e) {
            return f;
        }
        current = e.source();
    }
    Failure::new(ErrorKind::Unknown)
}

/// `e` and its sources, outermost first.
#[cfg(feature = "hyper")]
fn source_chain<'a>(
    e: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(e), |&e| e.source())
}

fn classify_known(e: &(dyn Error + 'static)) -> Option<Failure> {
    if let Some(open) = e.downcast_ref::<BreakerOpen>() {
        return Some(
            Failure::local(ErrorKind::Overloaded).with_retry_after(Some(open.retry_after())),
        );
    }
    if let Some(full) = e.downcast_ref::<BulkheadFull>() {
        let kind = match full.limit() {
            LimitKind::Rate | LimitKind::Tokens => ErrorKind::RateLimited,
            LimitKind::RequestTooLarge => ErrorKind::BadRequest,
            _ => ErrorKind::Overloaded,
        };
        return Some(Failure::local(kind).with_retry_after(full.retry_after()));
    }
    if let Some(c) = e.downcast_ref::<ClassifiedError>() {
        return Some(Failure::new(c.kind()).with_retry_after(c.retry_after()));
    }
    if e.is::<SseError>() {
        return Some(Failure::new(ErrorKind::InvalidResponse));
    }
    if e.is::<AttemptTimeout>()
        || e.is::<tokio::time::error::Elapsed>()
        || e.is::<tower::timeout::error::Elapsed>()
    {
        return Some(Failure::new(ErrorKind::Timeout));
    }
    if let Some(r) = e.downcast_ref::<RetriesExhausted>() {
        return Some(classify_error(r.last()));
    }
    if let Some(a) = e.downcast_ref::<AllTargetsFailed>() {
        return Some(match (a.last(), a.attempts().last()) {
            (Some(last), _) => classify_error(last),
            (None, Some(rec)) => Failure::new(rec.kind).with_retry_after(rec.retry_after),
            (None, None) => Failure::new(ErrorKind::Unknown),
        });
    }
    #[cfg(feature = "hyper")]
    if let Some(verdict) = classify_hyper(e) {
        return verdict;
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        // `io::Error::other(inner)` hides `inner` from `source()`: look at it directly, so a
        // body error wrapping a tower-llm error (or a timeout) keeps its kind.
        if let Some(inner) = io.get_ref() {
            if let Some(f) = classify_known(inner) {
                return Some(f);
            }
        }
        return Some(Failure::new(match io.kind() {
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            std::io::ErrorKind::InvalidData => ErrorKind::InvalidResponse,
            _ => ErrorKind::Transport,
        }));
    }
    None
}

/// `Some(verdict)` when `e` is a hyper or hyper-util error: the verdict is `None` when the error
/// itself says nothing and its source decides.
#[cfg(feature = "hyper")]
fn classify_hyper(e: &(dyn Error + 'static)) -> Option<Option<Failure>> {
    if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
        if !client.is_connect() {
            // Not a connect error: look at the source (a hyper::Error or io::Error).
            return Some(None);
        }
        // A connect timeout (hyper-util's `connect_timeout`) is a silent target, not a refusal.
        let timed_out = source_chain(e).any(|s| {
            s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
        return Some(Some(Failure::new(if timed_out {
            ErrorKind::Timeout
        } else {
            ErrorKind::Transport
        })));
    }
    let h = e.downcast_ref::<hyper::Error>()?;
    let kind = if h.is_timeout() {
        ErrorKind::Timeout
    } else if h.is_parse() || h.is_parse_status() {
        ErrorKind::InvalidResponse
    } else if h.is_incomplete_message()
        || h.is_closed()
        || h.is_canceled()
        || h.is_body_write_aborted()
    {
        ErrorKind::Transport
    } else {
        return Some(None);
    };
    Some(Some(Failure::new(kind)))
}

/// What a provider's error body said, left in the response extensions by
/// [`InspectErrorBodyLayer`](crate::InspectErrorBodyLayer) and read by [`HttpClassifier`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderError {
    /// The kind the body implies, when it is more precise than the status
    /// (`insufficient_quota` on a 429, `context_length_exceeded` on a 400).
    pub kind: Option<ErrorKind>,
    /// The provider's error code or type (`rate_limit_exceeded`, `overloaded_error`, `RESOURCE_EXHAUSTED`).
    pub code: Option<String>,
    /// The provider's message, truncated to a bounded length.
    pub message: Option<String>,
    /// A delay named in the body (Gemini's `RetryInfo.retryDelay`, "Please try again in 7.66s").
    pub retry_after: Option<Duration>,
}

/// One overridden status row: `None` means success.
type StatusRow = (StatusCode, Option<ErrorKind>);

/// The default [`Classify`] for `http::Response<B>`: status, headers, and the [`ProviderError`]
/// extension when present.
///
/// | status | kind | the body may make it |
/// |---|---|---|
/// | 1xx, 2xx, 3xx | success | |
/// | 429 | `RateLimited` | `QuotaExhausted` (`insufficient_quota`, a Gemini per-day quota), `Overloaded`, `ContextLength` ("Request too large": one request over the per-minute limit) |
/// | 402 | `QuotaExhausted` | |
/// | 503, 529, 498 | `Overloaded` | `RateLimited` |
/// | 408 | `Timeout` | |
/// | 401, 403 | `Auth` | `ContentPolicy` (OpenRouter moderation), `QuotaExhausted` |
/// | 404 | `Auth` | |
/// | 413 | `ContextLength` | |
/// | 400 and other 4xx | `BadRequest` | `ContextLength`, `ContentPolicy`, `QuotaExhausted`, `Auth`, `RateLimited` |
/// | 500, 502, 504 and other 5xx | `ServerError` | `Overloaded` |
/// | anything else | `Unknown` | |
///
/// Two rows are choices, not HTTP semantics:
/// - **404 is `Auth`**: for an LLM API a 404 means the target cannot serve this call (the model
///   does not exist on this provider, or not for this key: OpenAI's `model_not_found` says "does
///   not exist or you do not have access to it"; or a wrong base URL), not that the request is
///   malformed. Like a 401/403 it is not retried, does not trip the breaker, and a fallback moves
///   on to the next target. Override it with [`with_status`](Self::with_status).
/// - **413 is `ContextLength`**: the request is larger than this target accepts (Anthropic's
///   `request_too_large`, Groq's "Request Entity Too Large" for a request over the per-minute
///   token limit). Retrying cannot help; a target that takes larger requests can.
///
/// A body-derived kind replaces the status's only where the table allows it: a body never turns
/// a 5xx into a client error or the reverse.
///
/// Server delays come from [`delay::server_delay`] (headers) and from the body's
/// `retryDelay` or "try again in" message, whichever is present (headers first). They are
/// attached to `RateLimited`, `QuotaExhausted`, `Overloaded` and `ServerError` failures.
#[derive(Clone, Debug, Default)]
pub struct HttpClassifier {
    overrides: Option<Arc<[StatusRow]>>,
}

impl HttpClassifier {
    /// The default classifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// Override one status row: responses with `status` are failures of `kind`.
    pub fn with_status(self, status: StatusCode, kind: ErrorKind) -> Self {
        self.push_override(status, Some(kind))
    }

    /// Override one status row: responses with `status` are successes.
    pub fn with_success(self, status: StatusCode) -> Self {
        self.push_override(status, None)
    }

    fn push_override(self, status: StatusCode, kind: Option<ErrorKind>) -> Self {
        let mut rows: Vec<_> = self
            .overrides
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|(s, _)| *s != status)
            .copied()
            .collect();
        rows.push((status, kind));
        HttpClassifier {
            overrides: Some(rows.into()),
        }
    }

    /// Classify a status and headers alone (no body information).
    pub fn classify_parts(&self, status: StatusCode, headers: &HeaderMap) -> Classification {
        self.classify_with(status, headers, None)
    }

    fn classify_with(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Option<&ProviderError>,
    ) -> Classification {
        if let Some(rows) = &self.overrides {
            if let Some((_, kind)) = rows.iter().find(|(s, _)| *s == status) {
                return match kind {
                    None => Classification::Success,
                    Some(kind) => Classification::Failure(
                        Failure::new(*kind).with_retry_after(self.delay(headers, body)),
                    ),
                };
            }
        }
        let kind = match status_kind(status) {
            None => return Classification::Success,
            Some(kind) => kind,
        };
        let kind = match body.and_then(|b| b.kind) {
            Some(refined) if refines(kind, refined) => refined,
            _ => kind,
        };
        let retry_after = match kind {
            ErrorKind::RateLimited
            | ErrorKind::QuotaExhausted
            | ErrorKind::Overloaded
            | ErrorKind::ServerError => self.delay(headers, body),
            _ => None,
        };
        Classification::Failure(Failure::new(kind).with_retry_after(retry_after))
    }

    fn delay(&self, headers: &HeaderMap, body: Option<&ProviderError>) -> Option<Duration> {
        delay::server_delay(headers, SystemTime::now()).or(body.and_then(|b| b.retry_after))
    }
}

/// The kind a status implies on its own, or `None` for a success (the first two columns of the
/// [`HttpClassifier`] table).
pub fn status_kind(status: StatusCode) -> Option<ErrorKind> {
    let code = status.as_u16();
    Some(match code {
        100..=399 => return None,
        429 => ErrorKind::RateLimited,
        402 => ErrorKind::QuotaExhausted,
        503 | 529 | 498 => ErrorKind::Overloaded,
        408 => ErrorKind::Timeout,
        401 | 403 | 404 => ErrorKind::Auth,
        413 => ErrorKind::ContextLength,
        400..=499 => ErrorKind::BadRequest,
        500..=599 => ErrorKind::ServerError,
        _ => ErrorKind::Unknown,
    })
}

/// Whether a body-derived kind may replace the status-derived one. A body may sharpen a status
/// (429 → quota, 400 → context length) but never turn a 5xx into a client error or the reverse.
pub(crate) fn refines(from_status: ErrorKind, from_body: ErrorKind) -> bool {
    use ErrorKind::*;
    matches!(
        (from_status, from_body),
        (RateLimited, QuotaExhausted)
            | (RateLimited, Overloaded)
            | (RateLimited, ContextLength)
            | (Auth, ContentPolicy)
            | (Auth, QuotaExhausted)
            | (BadRequest, ContextLength)
            | (BadRequest, ContentPolicy)
            | (BadRequest, QuotaExhausted)
            | (BadRequest, Auth)
            | (BadRequest, RateLimited)
            | (ServerError, Overloaded)
            | (Overloaded, RateLimited)
    )
}

impl<B> Classify<Response<B>> for HttpClassifier {
    fn classify_response(&self, res: &Response<B>) -> Classification {
        self.classify_with(
            res.status(),
            res.headers(),
            res.extensions().get::<ProviderError>(),
        )
    }

    fn stream_outcome(&self, res: &Response<B>) -> Option<StreamOutcome> {
        res.extensions().get::<StreamOutcome>().cloned()
    }
}
