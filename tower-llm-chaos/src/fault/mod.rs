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
//!
//! "The canonical answer" is the mock's answer text: [`CANONICAL_ANSWER`](crate::CANONICAL_ANSWER),
//! or [`ALTERNATE_ANSWER`](crate::ALTERNATE_ANSWER) on a mock built with
//! [`Answer::Alternate`](crate::Answer::Alternate), or only the rest of that text after an
//! assistant prefill on a mock that continues one ([`Prefill::Continue`](crate::Prefill::Continue)):
//! `N` then counts the events of that continuation.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue};

mod reply;
#[cfg(test)]
mod tests;
mod wire;

pub use reply::{ErrorReply, ErrorShape, RetryAfter};

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
