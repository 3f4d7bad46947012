//! An error response ([`ErrorReply`]): its status, server delay ([`RetryAfter`]), extra headers and
//! body shape ([`ErrorShape`]).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};

use super::InvalidFault;

/// The shape of an error body, after a provider's documented format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ErrorShape {
    /// `{"error":{"message","type","param","code"}}`
    #[default]
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}`
    Anthropic,
    /// `{"error":{"code":<status>,"message","status","details":[RetryInfo]}}`
    Gemini,
    /// `{"error":{"message","type","code"}}`
    Groq,
    /// `{"error":{"code":<status>,"message","metadata":{"provider_name","raw"}}}`
    OpenRouter,
}

impl ErrorShape {
    /// Every shape.
    pub const ALL: [ErrorShape; 5] = [
        ErrorShape::OpenAi,
        ErrorShape::Anthropic,
        ErrorShape::Gemini,
        ErrorShape::Groq,
        ErrorShape::OpenRouter,
    ];

    /// The name used in the text form: `openai`, `anthropic`, `gemini`, `groq`, `openrouter`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorShape::OpenAi => "openai",
            ErrorShape::Anthropic => "anthropic",
            ErrorShape::Gemini => "gemini",
            ErrorShape::Groq => "groq",
            ErrorShape::OpenRouter => "openrouter",
        }
    }
}

impl fmt::Display for ErrorShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server-requested delay attached to an error reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryAfter {
    /// `retry-after: <seconds>`.
    Seconds(u64),
    /// `retry-after-ms: <milliseconds>`.
    Millis(u64),
    /// `retry-after: <HTTP date>` for this moment (whole seconds; build it with [`RetryAfter::date`]).
    Date(SystemTime),
    /// `retry-after: <HTTP date>` for the moment the response is sent plus this delay.
    DateIn(Duration),
}

impl RetryAfter {
    /// [`RetryAfter::Date`] for `at`, truncated to whole seconds (an HTTP date's resolution).
    pub fn date(at: SystemTime) -> RetryAfter {
        let truncated = match at.duration_since(UNIX_EPOCH) {
            Ok(since) => UNIX_EPOCH + Duration::from_secs(since.as_secs()),
            // Before 1970: round towards the epoch to whole seconds.
            Err(before) => UNIX_EPOCH
                .checked_sub(Duration::from_secs(before.duration().as_secs()))
                .unwrap_or(at),
        };
        RetryAfter::Date(truncated)
    }

    /// The delay this signal stands for when the response is sent at `now`.
    pub fn delay_at(&self, now: SystemTime) -> Duration {
        match *self {
            RetryAfter::Seconds(s) => Duration::from_secs(s),
            RetryAfter::Millis(ms) => Duration::from_millis(ms),
            RetryAfter::Date(at) => at.duration_since(now).unwrap_or(Duration::ZERO),
            RetryAfter::DateIn(delay) => delay,
        }
    }

    /// The header this signal is sent as at `now` (name and value).
    pub fn header_at(&self, now: SystemTime) -> (HeaderName, HeaderValue) {
        match *self {
            RetryAfter::Seconds(s) => (http::header::RETRY_AFTER, HeaderValue::from(s)),
            RetryAfter::Millis(ms) => (
                HeaderName::from_static("retry-after-ms"),
                HeaderValue::from(ms),
            ),
            RetryAfter::Date(at) => (http::header::RETRY_AFTER, http_date(at)),
            RetryAfter::DateIn(delay) => (
                http::header::RETRY_AFTER,
                http_date(now.checked_add(delay).unwrap_or(now)),
            ),
        }
    }
}

fn http_date(at: SystemTime) -> HeaderValue {
    // httpdate only formats dates from 1970 to 9999; clamp instead of panicking.
    let max = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    let at = at.clamp(UNIX_EPOCH, max);
    HeaderValue::from_str(&httpdate::fmt_http_date(at)).unwrap_or(HeaderValue::from_static("0"))
}

/// An error response: status, optional server delay, extra headers and a provider-shaped body.
///
/// ```
/// use tower_llm_chaos::{ErrorReply, ErrorShape, Fault};
///
/// let reply = ErrorReply::new(429).code("insufficient_quota").shape(ErrorShape::Groq);
/// assert_eq!(reply.status(), 429);
/// let fault: Fault = reply.into();
/// assert_eq!(fault.to_string(), "status:429:shape=groq:code=insufficient_quota");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    pub(super) status: u16,
    pub(super) retry_after: Option<RetryAfter>,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) shape: ErrorShape,
    pub(super) code: Option<String>,
    pub(super) message: Option<String>,
    invalid: Option<String>,
}

impl ErrorReply {
    /// An error response with `status` and a default OpenAI-shaped body.
    pub fn new(status: u16) -> Self {
        ErrorReply {
            status,
            retry_after: None,
            headers: Vec::new(),
            shape: ErrorShape::OpenAi,
            code: None,
            message: None,
            invalid: None,
        }
    }

    /// What [`Fault::ContextLengthExceeded`](super::Fault::ContextLengthExceeded) sends: 400,
    /// code `context_length_exceeded`.
    pub fn context_length_exceeded() -> Self {
        ErrorReply::new(400).code("context_length_exceeded")
    }

    /// What [`Fault::ContentPolicyViolation`](super::Fault::ContentPolicyViolation) sends: 400,
    /// code `content_policy_violation`.
    pub fn content_policy_violation() -> Self {
        ErrorReply::new(400).code("content_policy_violation")
    }

    /// Attach a server delay (replaces an earlier one).
    pub fn retry_after(mut self, retry_after: RetryAfter) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Add an extra response header. An invalid name or value makes the reply invalid.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        HeaderValue: TryFrom<V>,
        <HeaderName as TryFrom<K>>::Error: fmt::Display,
        <HeaderValue as TryFrom<V>>::Error: fmt::Display,
    {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(name), Ok(value)) => self.headers.push((name, value)),
            (Err(e), _) => {
                self.invalid
                    .get_or_insert_with(|| format!("invalid header name: {e}"));
            }
            (_, Err(e)) => {
                self.invalid
                    .get_or_insert_with(|| format!("invalid header value: {e}"));
            }
        }
        self
    }

    /// Write the body in `shape`.
    pub fn shape(mut self, shape: ErrorShape) -> Self {
        self.shape = shape;
        self
    }

    /// The error code. OpenAI and Groq put it in `error.code` (and, unless it is a known OpenAI
    /// code with its own type, in `error.type`); Anthropic in `error.type`; Gemini in
    /// `error.status`; OpenRouter in the OpenAI-shaped `metadata.raw` of its body. The known
    /// OpenAI codes `context_length_exceeded` and `content_policy_violation` are translated to
    /// each provider's equivalent (`invalid_request_error`, `INVALID_ARGUMENT`).
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Use this message instead of the default one.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The server delay, if any.
    pub fn retry_after_signal(&self) -> Option<RetryAfter> {
        self.retry_after
    }

    /// The extra headers, in order.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The body's shape.
    pub fn error_shape(&self) -> ErrorShape {
        self.shape
    }

    /// The error code, if set.
    pub fn error_code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The custom message, if set.
    pub fn error_message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// Check that the mock can send this reply.
    pub fn validate(&self) -> Result<(), InvalidFault> {
        if let Some(reason) = &self.invalid {
            return Err(InvalidFault::new(reason.clone()));
        }
        if !(200..=999).contains(&self.status) {
            return Err(InvalidFault::new(format!(
                "status {} is not in 200..=999",
                self.status
            )));
        }
        Ok(())
    }
}
