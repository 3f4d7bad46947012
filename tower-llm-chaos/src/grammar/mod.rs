//! The text form of faults and fault profiles, as written in config files
//! (`mock = "<fault profile>"`) and on the `mock-upstream` command line.
//!
//! # One fault
//!
//! ```text
//! fault    = "healthy"
//!          | "status:" CODE { ":" option }         CODE in 200..=999
//!          | "hang"                               accept, read the request, never answer
//!          | "reset"                              read the request, then reset the connection (RST)
//!          | "latency:" DURATION                  healthy answer after the delay
//!          | "slow-first-token:" DURATION
//!          | "cut-after:" N                       N content events, then the connection closes
//!          | "stall-after:" N                     N content events, then silence
//!          | "malformed-event:" N                 event N (0-based) is not JSON
//!          | "no-done"                            complete stream without `data: [DONE]`
//!          | "first-event-error"                  200, then an SSE `error` event
//!          | "context-length-exceeded"            400 `context_length_exceeded`
//!          | "content-policy-violation"           400 `content_policy_violation`
//!          | "flapping:" DURATION ":" fault       `fault` for DURATION after start, then healthy
//!          | "fraction:" RATE [":seed=" SEED] ":" fault
//!                                                 `fault` for a RATE share of the requests,
//!                                                 healthy for the others (see below)
//! option   = "retry-after=" SECONDS               `retry-after: 2`
//!          | "retry-after-ms=" MILLISECONDS       `retry-after-ms: 1500`
//!          | "retry-after-date=@" UNIX_SECONDS    `retry-after: <HTTP date>` for that moment
//!          | "retry-after-date=+" DURATION        `retry-after: <HTTP date>` of now + DURATION
//!          | "shape=" ("openai" | "anthropic" | "gemini" | "groq" | "openrouter")
//!          | "code=" TEXT                         error code / type / status in the body
//!          | "message=" TEXT                      error message in the body
//!          | "header=" NAME "=" TEXT              an extra response header (repeatable)
//! DURATION = { INTEGER UNIT }+                    UNIT: h, m, s, ms, us, ns — `3s`, `250ms`, `1m30s`
//! RATE     = INTEGER [ "." DIGITS ]               0 to 1, at most 3 decimals — `0.3`, `0.05`, `1`
//! SEED     = INTEGER                              0 to 2^64-1 (default 0)
//! ```
//!
//! `fraction` decides per request, from the seed and the request's sequence number at the mock
//! ([`fraction_hit`](crate::fault::fraction_hit)), so a run of requests gets the same faults
//! every time: `fraction:0.3:status:500` fails 30 % of the calls with 500,
//! `fraction:0.3:seed=7:status:500` a different 30 %. In a profile the requests it does not hit
//! fall through to the next clause (see below). `Display` writes the seed only when it is
//! not 0, and the rate with as few decimals as it needs.
//!
//! `TEXT` and `NAME` are percent-encoded where they contain `%`, `:`, `;`, `=`, spaces or
//! non-ASCII bytes (`message=rate%20limited`); `Display` writes that encoding, so printing a
//! fault and parsing it back gives the same fault. Whitespace around every part is ignored.
//! Each option other than `header` may appear once.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_chaos::{ErrorShape, Fault};
//!
//! let fault: Fault = "status:429:retry-after=2:header=x-ratelimit-reset-requests=6m0s".parse()?;
//! assert_eq!(
//!     fault,
//!     Fault::status(429).retry_after_secs(2).header("x-ratelimit-reset-requests", "6m0s")
//! );
//! assert_eq!(
//!     Fault::parse("status:529:shape=anthropic:code=overloaded_error")?,
//!     Fault::status(529).shape(ErrorShape::Anthropic).code("overloaded_error")
//! );
//! assert_eq!(Fault::parse("slow-first-token:3s")?, Fault::SlowFirstToken(Duration::from_secs(3)));
//! assert_eq!(Fault::parse("stall-after:4")?, Fault::Stall { after: 4 });
//! assert_eq!(
//!     Fault::parse("flapping:10s:status:503")?,
//!     Fault::flapping(Duration::from_secs(10), Fault::status(503))
//! );
//! assert_eq!(
//!     Fault::parse("fraction:0.3:seed=7:status:500")?,
//!     Fault::fraction(300, Fault::status(500)).with_seed(7)
//! );
//! assert_eq!(Fault::fraction(50, Fault::Hang).to_string(), "fraction:0.05:hang");
//!
//! // Errors name the part that is wrong.
//! let err = Fault::parse("status:429:retry-after=soon").unwrap_err();
//! assert_eq!(err.to_string(), "invalid fault: `soon`: expected a whole number of seconds");
//! assert_eq!(err.part(), "soon");
//! # Ok::<(), tower_llm_chaos::ParseError>(())
//! ```
//!
//! # A profile
//!
//! Clauses separated by `;` or new lines; empty clauses are ignored.
//!
//! ```text
//! clause   = [DURATION] "-" [DURATION] "=" fault  schedule window [from, until) since start;
//!                                                 no `from` is 0, no `until` is for ever
//!          | "model" SPACE NAME "=" fault         requests for model NAME (exact match)
//!          | "default=" fault                     everything else (once; default: healthy)
//!          | fault                                shorthand for "default=" fault
//! ```
//!
//! Windows are checked first (in order, the first that contains the current time wins), then
//! the model routes, then the default. A model may be routed once. A window or route whose
//! fault is a `fraction` that does not hit the request is passed over, so
//! `4s-10s=fraction:0.3:status:500; default=latency:50ms` answers the other 70 % after 50 ms.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_chaos::{Fault, FaultProfile};
//!
//! let profile = FaultProfile::parse(
//!     "0s-20s = status:503:retry-after=1
//!      model gpt-bad = status:500
//!      model gpt-slow = latency:2s
//!      40s- = flapping:5s:reset
//!      default = healthy",
//! )?;
//! assert_eq!(profile.pick("gpt-slow", Duration::from_secs(21)), &Fault::Latency(Duration::from_secs(2)));
//! assert_eq!(profile.pick("gpt-slow", Duration::from_secs(1)), &Fault::status(503).retry_after_secs(1));
//! assert_eq!(FaultProfile::parse("hang")?, FaultProfile::new(Fault::Hang));
//!
//! let err = FaultProfile::parse("default=healthy; model gpt-x=status:9999").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "invalid fault profile, clause 2 (`model gpt-x=status:9999`): `9999`: status must be in 200..=999"
//! );
//! assert_eq!(err.clause(), Some(2));
//! # Ok::<(), tower_llm_chaos::ParseError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::fault::Fault;
use crate::profile::FaultProfile;

mod display;
mod parse;
#[cfg(test)]
mod tests;
mod values;

pub(crate) use parse::{parse_fault, parse_profile};

/// How deeply `flapping:` and `fraction:` faults may nest in text.
const MAX_NESTING: usize = 8;
/// Longest excerpt of the input quoted in an error message.
const MAX_QUOTE: usize = 80;

const FAULTS: &str = "healthy, status:<code>, hang, reset, latency:<duration>, \
slow-first-token:<duration>, cut-after:<n>, stall-after:<n>, malformed-event:<n>, no-done, \
first-event-error, context-length-exceeded, content-policy-violation, flapping:<duration>:<fault>, \
fraction:<rate>[:seed=<n>]:<fault>";

const OPTIONS: &str = "retry-after, retry-after-ms, retry-after-date, shape, code, message, header";

/// The text form of a fault or profile was rejected; the message names the offending part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    clause: Option<(usize, String)>,
    part: String,
    reason: String,
}

fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

impl ParseError {
    fn new(part: &str, reason: impl Into<String>) -> Self {
        ParseError {
            clause: None,
            part: quote(part),
            reason: reason.into(),
        }
    }

    fn in_clause(mut self, number: usize, clause: &str) -> Self {
        self.clause = Some((number, quote(clause)));
        self
    }

    /// The offending part of the input (quoted in the message; long parts are shortened).
    pub fn part(&self) -> &str {
        &self.part
    }

    /// Why it was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// For a profile, the 1-based number of the clause that was rejected.
    pub fn clause(&self) -> Option<usize> {
        self.clause.as_ref().map(|(n, _)| *n)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.clause {
            Some((n, clause)) => write!(f, "invalid fault profile, clause {n} (`{clause}`): ")?,
            None => f.write_str("invalid fault: ")?,
        }
        write!(f, "`{}`: {}", self.part, self.reason)
    }
}

impl std::error::Error for ParseError {}

impl FromStr for Fault {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_fault(s)
    }
}

impl FromStr for FaultProfile {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_profile(s)
    }
}
