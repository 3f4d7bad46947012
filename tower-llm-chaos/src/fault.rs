//! What the mock upstream does with one request: a [`Fault`].
//!
//! Faults are plain values: build them with the constructors and builder methods below, or parse
//! them from the text form documented in [`grammar`](crate::grammar) (`Display` prints that form
//! back).
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_chaos::{ErrorShape, Fault};
//!
//! let limited = Fault::status(429).retry_after_secs(2);
//! assert_eq!(limited.to_string(), "status:429:retry-after=2");
//! assert_eq!("status:429:retry-after=2".parse::<Fault>().unwrap(), limited);
//!
//! let overloaded = Fault::status(529).shape(ErrorShape::Anthropic).code("overloaded_error");
//! assert_eq!(overloaded.name(), "status");
//!
//! let flapping = Fault::flapping(Duration::from_secs(10), Fault::status(503));
//! assert_eq!(flapping.to_string(), "flapping:10s:status:503");
//! assert!(Fault::CutAfter(5).validate().is_ok());
//! assert!(Fault::status(42).validate().is_err());
//!
//! // 30 % of the requests get a 500, decided by the request's sequence number: reproducible.
//! let sometimes = Fault::fraction(300, Fault::status(500)).with_seed(7);
//! assert_eq!(sometimes.to_string(), "fraction:0.3:seed=7:status:500");
//! let failed = (1..=10_000).filter(|&seq| sometimes.resolve(Duration::ZERO, seq) != &Fault::Healthy);
//! assert!((2_800..3_200).contains(&failed.count()));
//! ```
//!
//! | fault | non-streamed request (`"stream"` absent or false) | streamed request (`"stream": true`) |
//! |---|---|---|
//! | [`Healthy`](Fault::Healthy) | 200, the canonical JSON answer | 200, the canonical SSE events and `[DONE]` |
//! | [`Status`](Fault::Status) | the status with a JSON error body in the chosen [`ErrorShape`] | the same |
//! | [`Hang`](Fault::Hang) | reads the request, never answers | the same |
//! | [`ResetBeforeHeaders`](Fault::ResetBeforeHeaders) | reads the request, then resets the TCP connection (RST) | the same |
//! | [`Latency`](Fault::Latency) | the healthy answer after the delay | the same |
//! | [`SlowFirstToken`](Fault::SlowFirstToken) | the healthy answer after the delay | headers at once, the first event after the delay |
//! | [`CutAfter`](Fault::CutAfter) | `content-length` of the whole answer, the body up to the N-th token, then the connection closes | N content events, then the connection closes (no `finish_reason`, no `[DONE]`) |
//! | [`Stall`](Fault::Stall) | as `CutAfter`, but the connection stays open and silent | N content events, then nothing, the connection open |
//! | [`MalformedEvent`](Fault::MalformedEvent) | 200 with an unparsable JSON body | the healthy stream with [`MALFORMED_EVENT`](crate::canonical::MALFORMED_EVENT) inserted as event number `at` |
//! | [`NoDone`](Fault::NoDone) | the healthy answer | the healthy stream without `data: [DONE]` |
//! | [`FirstEventError`](Fault::FirstEventError) | 200 whose body is an OpenAI `error` object | 200 whose first event is an OpenAI `error` event, then the end of the stream |
//! | [`ContextLengthExceeded`](Fault::ContextLengthExceeded) | 400, OpenAI code `context_length_exceeded` | the same |
//! | [`ContentPolicyViolation`](Fault::ContentPolicyViolation) | 400, OpenAI code `content_policy_violation` | the same |
//! | [`Flapping`](Fault::Flapping) | `while_down` until `down_for` has passed since the upstream started (or since [`reset_flap`](crate::MockUpstream::reset_flap)), then healthy | the same |
//! | [`Fraction`](Fault::Fraction) | `fault` for about `per_mille` in 1000 requests; which ones is decided by [`fraction_hit`] from `seed` and the request's [`seq`](crate::Attempt::seq), so a run is reproducible. The others fall through to the profile's next rule (a later window, the model route, the default: see [`FaultProfile`](crate::FaultProfile)), or are healthy when there is none | the same |

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};

/// What the mock upstream does with a request. See the [module docs](self) for what each fault
/// sends for non-streamed and streamed requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The canonical answer, as JSON or as SSE depending on the request.
    #[default]
    Healthy,
    /// An error status with a provider-shaped JSON body (see [`Fault::status`]).
    Status(ErrorReply),
    /// Accept the connection, read the request, never answer.
    Hang,
    /// Read the request, then reset the TCP connection (RST) without sending anything.
    ResetBeforeHeaders,
    /// The healthy answer after this delay (before the response headers).
    Latency(Duration),
    /// SSE: headers at once, the first event after this delay. JSON: the delay before the headers.
    SlowFirstToken(Duration),
    /// SSE: this many content events, then the connection closes with no `finish_reason` and no
    /// `[DONE]`.
    CutAfter(usize),
    /// SSE: `after` content events, then nothing; the connection stays open.
    Stall {
        /// How many content events are sent before the stream goes silent.
        after: usize,
    },
    /// SSE: the event at index `at` (0-based, counting every event of the stream) is
    /// [`MALFORMED_EVENT`](crate::canonical::MALFORMED_EVENT); every normal event still follows,
    /// so skipping the bad one yields the whole answer. An `at` past the end puts the bad event
    /// just before `[DONE]`.
    MalformedEvent {
        /// Index of the malformed event in the stream.
        at: usize,
    },
    /// SSE: the complete answer with `finish_reason` and `usage`, but no `data: [DONE]`.
    NoDone,
    /// SSE: 200, then an OpenAI-shaped `error` event as the first event, then the end.
    FirstEventError,
    /// 400 with OpenAI code `context_length_exceeded`.
    ContextLengthExceeded,
    /// 400 with OpenAI code `content_policy_violation`.
    ContentPolicyViolation,
    /// `while_down` for `down_for` after the upstream started (or after
    /// [`reset_flap`](crate::MockUpstream::reset_flap)), then [`Fault::Healthy`].
    Flapping {
        /// How long the target is down.
        down_for: Duration,
        /// What it does while down.
        while_down: Box<Fault>,
    },
    /// `fault` for about `per_mille` in 1000 requests. Whether a request is hit is a pure
    /// function of `seed` and the request's sequence number ([`fraction_hit`]), so the same run
    /// of requests gets the same faults every time. In a [`FaultProfile`](crate::FaultProfile)
    /// a request that is not hit falls through to the next rule (a later window, the model
    /// route, the default), so `4s-10s=fraction:0.3:status:500; default=latency:50ms` keeps the
    /// 50 ms latency for the other 70 %; on its own (or as the default) it is healthy.
    Fraction {
        /// The share of requests that get `fault`, in thousandths: `0..=1000` (300 = 30 %).
        per_mille: u16,
        /// Picks which requests are hit; change it to hit a different set of the same size.
        seed: u64,
        /// What the hit requests get.
        fault: Box<Fault>,
    },
}

/// Whether request number `seq` is one of the `per_mille` in 1000 hit by a
/// [`Fault::Fraction`] with `seed`: a splitmix64 hash of `seed ^ seq`, reduced modulo 1000, is
/// below `per_mille`. Deterministic, and uniform enough that any 10 000 consecutive `seq`s are
/// hit within a few percent of the rate.
///
/// ```
/// use tower_llm_chaos::fault::fraction_hit;
///
/// assert!(!fraction_hit(0, 42, 1));
/// assert!(fraction_hit(1000, 42, 1));
/// assert_eq!(fraction_hit(500, 7, 123), fraction_hit(500, 7, 123));
/// ```
pub fn fraction_hit(per_mille: u16, seed: u64, seq: u64) -> bool {
    splitmix64(seed ^ seq) % 1000 < u64::from(per_mille)
}

/// The splitmix64 finaliser (Steele, Lea and Flood): a cheap, well-mixed 64-bit hash.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Fault {
    /// An error response with `status` and an OpenAI-shaped body; refine it with
    /// [`retry_after_secs`](Fault::retry_after_secs), [`header`](Fault::header),
    /// [`shape`](Fault::shape), [`code`](Fault::code) and [`message`](Fault::message).
    ///
    /// The status must be in `200..=999` ([`Fault::validate`] says so; the mock answers an invalid
    /// fault with a 500 explaining it).
    pub fn status(status: u16) -> Fault {
        Fault::Status(ErrorReply::new(status))
    }

    /// [`Fault::Flapping`]: `while_down` for `down_for`, then healthy.
    pub fn flapping(down_for: Duration, while_down: Fault) -> Fault {
        Fault::Flapping {
            down_for,
            while_down: Box::new(while_down),
        }
    }

    /// [`Fault::Fraction`]: `fault` for `per_mille` in 1000 requests (300 = 30 %), healthy for
    /// the others, with seed 0 (pick another with [`with_seed`](Fault::with_seed)).
    ///
    /// `per_mille` must be at most 1000 ([`Fault::validate`] says so).
    pub fn fraction(per_mille: u16, fault: Fault) -> Fault {
        Fault::Fraction {
            per_mille,
            seed: 0,
            fault: Box::new(fault),
        }
    }

    /// Set the seed of a [`Fault::Fraction`] (of the `while_down` fault of a
    /// [`Fault::Flapping`] that wraps one); every other fault is returned unchanged.
    pub fn with_seed(self, seed: u64) -> Fault {
        match self {
            Fault::Fraction {
                per_mille, fault, ..
            } => Fault::Fraction {
                per_mille,
                seed,
                fault,
            },
            Fault::Flapping {
                down_for,
                while_down,
            } => Fault::Flapping {
                down_for,
                while_down: Box::new(while_down.with_seed(seed)),
            },
            other => other,
        }
    }

    /// Parse the text form of a fault (see [`grammar`](crate::grammar)); same as `str::parse`.
    pub fn parse(text: &str) -> Result<Fault, crate::ParseError> {
        crate::grammar::parse_fault(text)
    }

    /// The fault's name as logged in [`Attempt::fault`](crate::Attempt::fault):
    /// `healthy`, `status`, `hang`, `reset`, `latency`, `slow_first_token`, `cut_after`, `stall`,
    /// `malformed_event`, `no_done`, `first_event_error`, `context_length_exceeded`,
    /// `content_policy_violation`, `flapping`, `fraction`.
    ///
    /// The attempt log never shows `flapping` or `fraction`: it names the fault that was applied
    /// (the `while_down` / inner fault or `healthy`).
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Healthy => "healthy",
            Fault::Status(_) => "status",
            Fault::Hang => "hang",
            Fault::ResetBeforeHeaders => "reset",
            Fault::Latency(_) => "latency",
            Fault::SlowFirstToken(_) => "slow_first_token",
            Fault::CutAfter(_) => "cut_after",
            Fault::Stall { .. } => "stall",
            Fault::MalformedEvent { .. } => "malformed_event",
            Fault::NoDone => "no_done",
            Fault::FirstEventError => "first_event_error",
            Fault::ContextLengthExceeded => "context_length_exceeded",
            Fault::ContentPolicyViolation => "content_policy_violation",
            Fault::Flapping { .. } => "flapping",
            Fault::Fraction { .. } => "fraction",
        }
    }

    /// Check that the mock can send this fault: a status in `200..=999`, valid extra headers and
    /// a [`Fault::Fraction`] rate of at most 1000 per mille.
    pub fn validate(&self) -> Result<(), InvalidFault> {
        match self {
            Fault::Status(reply) => reply.validate(),
            Fault::Flapping { while_down, .. } => while_down.validate(),
            Fault::Fraction {
                per_mille, fault, ..
            } => {
                if *per_mille > 1000 {
                    return Err(InvalidFault::new(format!(
                        "fraction of {per_mille} per mille is more than 1000"
                    )));
                }
                fault.validate()
            }
            _ => Ok(()),
        }
    }

    /// Whether this is a [`Fault::Fraction`] that does not hit request number `seq` (nested
    /// fractions must all hit): in a [`FaultProfile`](crate::FaultProfile) such a request falls
    /// through to the next rule.
    pub(crate) fn misses(&self, seq: u64) -> bool {
        match self {
            Fault::Fraction {
                per_mille,
                seed,
                fault,
            } => !fraction_hit(*per_mille, *seed, seq) || fault.misses(seq),
            _ => false,
        }
    }

    /// The fault applied to request number `seq` (the mock's 1-based [`Attempt::seq`]) arriving
    /// `since_flap` after the flap epoch: a [`Fault::Flapping`] resolves to its `while_down`
    /// fault while down and to [`Fault::Healthy`] after; a [`Fault::Fraction`] to its fault when
    /// [`fraction_hit`] says the request is hit and to [`Fault::Healthy`] otherwise; every other
    /// fault to itself.
    ///
    /// [`Attempt::seq`]: crate::Attempt::seq
    pub fn resolve(&self, since_flap: Duration, seq: u64) -> &Fault {
        let mut fault = self;
        loop {
            match fault {
                Fault::Flapping {
                    down_for,
                    while_down,
                } => {
                    if since_flap < *down_for {
                        fault = while_down;
                    } else {
                        return &Fault::Healthy;
                    }
                }
                Fault::Fraction {
                    per_mille,
                    seed,
                    fault: inner,
                } => {
                    if fraction_hit(*per_mille, *seed, seq) {
                        fault = inner;
                    } else {
                        return &Fault::Healthy;
                    }
                }
                other => return other,
            }
        }
    }

    /// Apply `f` to the error reply of this fault. `ContextLengthExceeded` and
    /// `ContentPolicyViolation` become the equivalent [`Fault::Status`] first; a `Flapping`
    /// fault applies `f` to its `while_down` fault and a `Fraction` to its inner fault; other
    /// faults are returned unchanged.
    fn map_reply(self, f: impl FnOnce(ErrorReply) -> ErrorReply) -> Fault {
        match self {
            Fault::Status(reply) => Fault::Status(f(reply)),
            Fault::ContextLengthExceeded => Fault::Status(f(ErrorReply::context_length_exceeded())),
            Fault::ContentPolicyViolation => {
                Fault::Status(f(ErrorReply::content_policy_violation()))
            }
            Fault::Flapping {
                down_for,
                while_down,
            } => Fault::Flapping {
                down_for,
                while_down: Box::new(while_down.map_reply(f)),
            },
            Fault::Fraction {
                per_mille,
                seed,
                fault,
            } => Fault::Fraction {
                per_mille,
                seed,
                fault: Box::new(fault.map_reply(f)),
            },
            other => other,
        }
    }

    /// Send `retry-after: <secs>` (for [`ErrorShape::Gemini`]: `RetryInfo.retryDelay` in the body).
    ///
    /// This and the other error-reply builders ([`retry_after_ms`](Fault::retry_after_ms),
    /// [`retry_after_date`](Fault::retry_after_date), [`header`](Fault::header),
    /// [`shape`](Fault::shape), [`code`](Fault::code), [`message`](Fault::message)) refine a
    /// [`Fault::Status`]; on `ContextLengthExceeded` / `ContentPolicyViolation` they turn it into
    /// the equivalent `Status` (logged as `status`); on `Flapping` they refine the `while_down`
    /// fault and on `Fraction` the inner fault; every other fault sends no error body and is returned unchanged.
    pub fn retry_after_secs(self, secs: u64) -> Fault {
        self.map_reply(|r| r.retry_after(RetryAfter::Seconds(secs)))
    }

    /// Send `retry-after-ms: <ms>` (for [`ErrorShape::Gemini`]: `RetryInfo.retryDelay`).
    pub fn retry_after_ms(self, ms: u64) -> Fault {
        self.map_reply(|r| r.retry_after(RetryAfter::Millis(ms)))
    }

    /// Send `retry-after: <HTTP date>` for `at` (truncated to whole seconds, as HTTP dates are).
    pub fn retry_after_date(self, at: SystemTime) -> Fault {
        self.map_reply(|r| r.retry_after(RetryAfter::date(at)))
    }

    /// Send `retry-after: <HTTP date>` for the moment the response is sent plus `delay`.
    pub fn retry_after_date_in(self, delay: Duration) -> Fault {
        self.map_reply(|r| r.retry_after(RetryAfter::DateIn(delay)))
    }

    /// Send an extra response header (`x-ratelimit-reset-requests`, `anthropic-ratelimit-...`).
    /// An invalid name or value makes the fault invalid (see [`Fault::validate`]).
    pub fn header<K, V>(self, name: K, value: V) -> Fault
    where
        HeaderName: TryFrom<K>,
        HeaderValue: TryFrom<V>,
        <HeaderName as TryFrom<K>>::Error: fmt::Display,
        <HeaderValue as TryFrom<V>>::Error: fmt::Display,
    {
        self.map_reply(|r| r.header(name, value))
    }

    /// Write the error body in `shape`.
    pub fn shape(self, shape: ErrorShape) -> Fault {
        self.map_reply(|r| r.shape(shape))
    }

    /// Put this error code in the body (`insufficient_quota`, `overloaded_error`,
    /// `RESOURCE_EXHAUSTED`; see [`ErrorReply::code`] for where each shape puts it).
    pub fn code(self, code: impl Into<String>) -> Fault {
        self.map_reply(|r| r.code(code))
    }

    /// Use this error message instead of the default one.
    pub fn message(self, message: impl Into<String>) -> Fault {
        self.map_reply(|r| r.message(message))
    }
}

impl From<ErrorReply> for Fault {
    fn from(reply: ErrorReply) -> Self {
        Fault::Status(reply)
    }
}

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

/// A fault was built with a value the mock cannot send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidFault {
    reason: String,
}

impl InvalidFault {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        InvalidFault {
            reason: reason.into(),
        }
    }

    /// Why the fault is invalid.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for InvalidFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid mock fault: {}", self.reason)
    }
}

impl std::error::Error for InvalidFault {}

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
    status: u16,
    retry_after: Option<RetryAfter>,
    headers: Vec<(HeaderName, HeaderValue)>,
    shape: ErrorShape,
    code: Option<String>,
    message: Option<String>,
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

    /// What [`Fault::ContextLengthExceeded`] sends: 400, code `context_length_exceeded`.
    pub fn context_length_exceeded() -> Self {
        ErrorReply::new(400).code("context_length_exceeded")
    }

    /// What [`Fault::ContentPolicyViolation`] sends: 400, code `content_policy_violation`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_refine_only_error_replies() {
        assert_eq!(Fault::Hang.retry_after_secs(3), Fault::Hang);
        let converted = Fault::ContextLengthExceeded.shape(ErrorShape::Anthropic);
        assert_eq!(
            converted,
            Fault::Status(ErrorReply::context_length_exceeded().shape(ErrorShape::Anthropic))
        );
        let flapping =
            Fault::flapping(Duration::from_secs(1), Fault::status(503)).retry_after_secs(1);
        assert_eq!(
            flapping,
            Fault::flapping(
                Duration::from_secs(1),
                Fault::status(503).retry_after_secs(1)
            )
        );
    }

    #[test]
    fn invalid_headers_make_the_fault_invalid() {
        let fault = Fault::status(429).header("bad header", "x");
        assert!(fault
            .validate()
            .unwrap_err()
            .reason()
            .contains("header name"));
        let fault = Fault::status(429).header("x-ok", "bad\nvalue");
        assert!(fault
            .validate()
            .unwrap_err()
            .reason()
            .contains("header value"));
        assert!(Fault::status(1000).validate().is_err());
        assert!(Fault::flapping(Duration::ZERO, Fault::status(99))
            .validate()
            .is_err());
    }

    #[test]
    fn flapping_resolves_by_time() {
        let f = Fault::flapping(Duration::from_secs(10), Fault::Hang);
        assert_eq!(f.resolve(Duration::from_secs(9), 1), &Fault::Hang);
        assert_eq!(f.resolve(Duration::from_secs(10), 1), &Fault::Healthy);
    }

    fn hits(fault: &Fault, seqs: std::ops::RangeInclusive<u64>) -> usize {
        seqs.filter(|&seq| fault.resolve(Duration::ZERO, seq) != &Fault::Healthy)
            .count()
    }

    #[test]
    fn fraction_hits_its_rate_over_10_000_requests() {
        for (per_mille, seed) in [(300, 0), (300, 1), (50, 9), (500, u64::MAX), (950, 3)] {
            let fault = Fault::fraction(per_mille, Fault::status(500)).with_seed(seed);
            let n = hits(&fault, 1..=10_000);
            let expected = usize::from(per_mille) * 10;
            // Binomial sd at 10 000 draws is at most 50; allow a little over 3 sd.
            assert!(n.abs_diff(expected) <= 170, "{per_mille}‰ seed {seed}: {n}");
        }
        assert_eq!(hits(&Fault::fraction(0, Fault::Hang), 1..=10_000), 0);
        assert_eq!(
            hits(&Fault::fraction(1000, Fault::Hang), 1..=10_000),
            10_000
        );
    }

    #[test]
    fn fraction_is_reproducible_and_seeded() {
        let a = Fault::fraction(300, Fault::status(500)).with_seed(11);
        let b = Fault::fraction(300, Fault::status(500)).with_seed(11);
        let c = Fault::fraction(300, Fault::status(500)).with_seed(12);
        let pick = |f: &Fault| -> Vec<bool> {
            (1..=1_000)
                .map(|seq| f.resolve(Duration::ZERO, seq) != &Fault::Healthy)
                .collect()
        };
        assert_eq!(pick(&a), pick(&b));
        assert_ne!(pick(&a), pick(&c));
        // Hit requests get the inner fault itself.
        let hit = (1..).find(|&seq| fraction_hit(300, 11, seq)).unwrap_or(0);
        assert_eq!(a.resolve(Duration::ZERO, hit), &Fault::status(500));
    }

    #[test]
    fn fraction_nests_with_flapping_and_validates() {
        let f = Fault::flapping(
            Duration::from_secs(5),
            Fault::fraction(1000, Fault::status(503)),
        );
        assert_eq!(f.resolve(Duration::from_secs(1), 4), &Fault::status(503));
        assert_eq!(f.resolve(Duration::from_secs(5), 4), &Fault::Healthy);
        let f = Fault::fraction(1000, Fault::flapping(Duration::from_secs(5), Fault::Hang));
        assert_eq!(f.resolve(Duration::from_secs(1), 4), &Fault::Hang);
        assert!(Fault::fraction(1001, Fault::Hang).validate().is_err());
        assert!(Fault::fraction(10, Fault::status(99)).validate().is_err());
        assert!(Fault::fraction(1000, Fault::Hang).validate().is_ok());
        assert_eq!(
            Fault::fraction(300, Fault::status(429)).retry_after_secs(1),
            Fault::fraction(300, Fault::status(429).retry_after_secs(1))
        );
        assert_eq!(
            Fault::flapping(Duration::ZERO, Fault::fraction(1, Fault::Hang)).with_seed(3),
            Fault::flapping(Duration::ZERO, Fault::fraction(1, Fault::Hang).with_seed(3))
        );
        assert_eq!(Fault::Hang.with_seed(3), Fault::Hang);
    }

    #[test]
    fn gemini_delay_in_body() {
        let reply = ErrorReply::new(429)
            .shape(ErrorShape::Gemini)
            .retry_after(RetryAfter::Millis(1500));
        let body: Value = serde_json::from_slice(&reply.body(SystemTime::now())).unwrap();
        assert_eq!(body["error"]["details"][0]["retryDelay"], "1.500s");
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
        assert!(reply
            .response_headers(SystemTime::now())
            .iter()
            .all(|(n, _)| n.as_str() != "retry-after-ms"));
    }

    #[test]
    fn dates_are_whole_seconds_and_clamped() {
        let at = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(
            RetryAfter::date(at),
            RetryAfter::Date(UNIX_EPOCH + Duration::from_secs(1))
        );
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        let (_, value) = RetryAfter::Date(far).header_at(SystemTime::now());
        assert_eq!(value, "Fri, 31 Dec 9999 23:59:59 GMT");
    }
}
