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

use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};

use crate::fault::{ErrorReply, ErrorShape, Fault, RetryAfter};
use crate::profile::{FaultProfile, ScheduledFault};

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

pub(crate) fn parse_fault(text: &str) -> Result<Fault, ParseError> {
    parse_fault_at(text, 0)
}

fn parse_fault_at(text: &str, depth: usize) -> Result<Fault, ParseError> {
    let text = text.trim();
    let (name, args) = match text.split_once(':') {
        Some((name, args)) => (name.trim(), Some(args)),
        None => (text, None),
    };
    let fault = match name {
        "" => {
            return Err(ParseError::new(
                text,
                format!("expected a fault: one of {FAULTS}"),
            ))
        }
        "healthy" => no_args(name, args, Fault::Healthy)?,
        "hang" => no_args(name, args, Fault::Hang)?,
        "reset" => no_args(name, args, Fault::ResetBeforeHeaders)?,
        "no-done" => no_args(name, args, Fault::NoDone)?,
        "first-event-error" => no_args(name, args, Fault::FirstEventError)?,
        "context-length-exceeded" => no_args(name, args, Fault::ContextLengthExceeded)?,
        "content-policy-violation" => no_args(name, args, Fault::ContentPolicyViolation)?,
        "latency" => Fault::Latency(one_arg(name, args, "<duration>", parse_duration)?),
        "slow-first-token" => {
            Fault::SlowFirstToken(one_arg(name, args, "<duration>", parse_duration)?)
        }
        "cut-after" => Fault::CutAfter(one_arg(name, args, "<n>", parse_count)?),
        "stall-after" => Fault::Stall {
            after: one_arg(name, args, "<n>", parse_count)?,
        },
        "malformed-event" => Fault::MalformedEvent {
            at: one_arg(name, args, "<n>", parse_count)?,
        },
        "status" => Fault::Status(parse_status(args)?),
        "flapping" => {
            let usage = "expected `flapping:<duration>:<fault>`";
            let args = args.ok_or_else(|| ParseError::new(text, usage))?;
            let (down_for, inner) = args
                .split_once(':')
                .ok_or_else(|| ParseError::new(text, usage))?;
            if depth >= MAX_NESTING {
                return Err(ParseError::new(
                    text,
                    format!("`flapping` nested more than {MAX_NESTING} deep"),
                ));
            }
            Fault::flapping(parse_duration(down_for)?, parse_fault_at(inner, depth + 1)?)
        }
        "fraction" => {
            let usage = "expected `fraction:<rate>[:seed=<n>]:<fault>`";
            let args = args.ok_or_else(|| ParseError::new(text, usage))?;
            let (rate, rest) = args
                .split_once(':')
                .ok_or_else(|| ParseError::new(text, usage))?;
            let per_mille = parse_rate(rate)?;
            // No fault's name contains `=`, so `seed=` here cannot be the start of the fault.
            let (seed, inner) = match rest.trim_start().strip_prefix("seed") {
                Some(seed) if seed.trim_start().starts_with('=') => {
                    let (seed, inner) = seed
                        .trim_start()
                        .trim_start_matches('=')
                        .split_once(':')
                        .ok_or_else(|| ParseError::new(text, usage))?;
                    (parse_u64(seed, "seed")?, inner)
                }
                _ => (0, rest),
            };
            if depth >= MAX_NESTING {
                return Err(ParseError::new(
                    text,
                    format!("`fraction` nested more than {MAX_NESTING} deep"),
                ));
            }
            Fault::fraction(per_mille, parse_fault_at(inner, depth + 1)?).with_seed(seed)
        }
        other => {
            return Err(ParseError::new(
                other,
                format!("unknown fault; expected one of {FAULTS}"),
            ))
        }
    };
    Ok(fault)
}

fn no_args(name: &str, args: Option<&str>, fault: Fault) -> Result<Fault, ParseError> {
    match args {
        None => Ok(fault),
        Some(args) => Err(ParseError::new(
            args.trim(),
            format!("`{name}` takes no arguments"),
        )),
    }
}

fn one_arg<T>(
    name: &str,
    args: Option<&str>,
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<T, ParseError> {
    let args = args.ok_or_else(|| ParseError::new(name, format!("expected `{name}:{what}`")))?;
    if let Some((_, extra)) = args.split_once(':') {
        return Err(ParseError::new(
            extra.trim(),
            format!("unexpected argument; `{name}` takes one: `{name}:{what}`"),
        ));
    }
    parse(args)
}

/// Parse a rate in `0..=1` with at most three decimals, as thousandths.
fn parse_rate(text: &str) -> Result<u16, ParseError> {
    let text = text.trim();
    let usage = "expected a rate from 0 to 1 with at most 3 decimals, like `0.3` or `0.05`";
    let (whole, decimals) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(decimals)
        || decimals.len() > 3
        || (text.contains('.') && decimals.is_empty())
    {
        return Err(ParseError::new(text, usage));
    }
    let whole: u16 = match whole.trim_start_matches('0') {
        "" => 0,
        "1" => 1,
        _ => return Err(ParseError::new(text, "a rate must be at most 1")),
    };
    let mut thousandths: u16 = 0;
    for (i, b) in decimals.bytes().enumerate() {
        // At most 3 digits: i is 0, 1 or 2.
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    let per_mille = whole * 1000 + thousandths;
    if per_mille > 1000 {
        return Err(ParseError::new(text, "a rate must be at most 1"));
    }
    Ok(per_mille)
}

/// Displays a per-mille rate as the grammar's decimal: `0.3`, `0.05`, `1`.
struct DisplayRate(u16);

impl fmt::Display for DisplayRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, thousandths) = (self.0 / 1000, self.0 % 1000);
        write!(f, "{whole}")?;
        if thousandths != 0 {
            let decimals = format!("{thousandths:03}");
            write!(f, ".{}", decimals.trim_end_matches('0'))?;
        }
        Ok(())
    }
}

fn parse_count(text: &str) -> Result<usize, ParseError> {
    let text = text.trim();
    text.parse()
        .map_err(|_| ParseError::new(text, "expected a count (a whole number)"))
}

fn parse_u64(text: &str, what: &str) -> Result<u64, ParseError> {
    let text = text.trim();
    text.parse()
        .map_err(|_| ParseError::new(text, format!("expected a whole number of {what}")))
}

fn parse_status(args: Option<&str>) -> Result<ErrorReply, ParseError> {
    let args = args.ok_or_else(|| ParseError::new("status", "expected `status:<code>`"))?;
    let mut parts = args.split(':');
    let code_text = parts.next().unwrap_or_default().trim();
    let code: u16 = code_text
        .parse()
        .map_err(|_| ParseError::new(code_text, "expected an HTTP status code"))?;
    if !(200..=999).contains(&code) {
        return Err(ParseError::new(code_text, "status must be in 200..=999"));
    }
    let mut reply = ErrorReply::new(code);
    let (mut delay_seen, mut shape_seen, mut code_seen, mut message_seen) =
        (false, false, false, false);
    for option in parts {
        let option = option.trim();
        let (key, value) = option.split_once('=').ok_or_else(|| {
            ParseError::new(
                option,
                format!("expected `<option>=<value>` with one of {OPTIONS}"),
            )
        })?;
        let key = key.trim();
        let once = |seen: &mut bool| {
            if std::mem::replace(seen, true) {
                Err(ParseError::new(option, "given twice"))
            } else {
                Ok(())
            }
        };
        match key {
            "retry-after" => {
                once(&mut delay_seen)?;
                reply = reply.retry_after(RetryAfter::Seconds(parse_u64(value, "seconds")?));
            }
            "retry-after-ms" => {
                once(&mut delay_seen)?;
                reply = reply.retry_after(RetryAfter::Millis(parse_u64(value, "milliseconds")?));
            }
            "retry-after-date" => {
                once(&mut delay_seen)?;
                reply = reply.retry_after(parse_date(value)?);
            }
            "shape" => {
                once(&mut shape_seen)?;
                let value = value.trim();
                let shape = ErrorShape::ALL
                    .into_iter()
                    .find(|s| s.as_str() == value)
                    .ok_or_else(|| {
                        ParseError::new(
                            value,
                            "unknown shape; expected openai, anthropic, gemini, groq or openrouter",
                        )
                    })?;
                reply = reply.shape(shape);
            }
            "code" => {
                once(&mut code_seen)?;
                reply = reply.code(decode_text(value)?);
            }
            "message" => {
                once(&mut message_seen)?;
                reply = reply.message(decode_text(value)?);
            }
            "header" => {
                let (name, value) = value
                    .split_once('=')
                    .ok_or_else(|| ParseError::new(option, "expected `header=<name>=<value>`"))?;
                let name_bytes = decode(name.trim())?;
                let name = HeaderName::from_bytes(&name_bytes)
                    .map_err(|_| ParseError::new(name.trim(), "not a valid header name"))?;
                let value_bytes = decode(value.trim())?;
                let value = HeaderValue::from_bytes(&value_bytes)
                    .map_err(|_| ParseError::new(value.trim(), "not a valid header value"))?;
                reply = reply.header(name, value);
            }
            other => {
                return Err(ParseError::new(
                    other,
                    format!("unknown status option; expected one of {OPTIONS}"),
                ))
            }
        }
    }
    Ok(reply)
}

fn parse_date(value: &str) -> Result<RetryAfter, ParseError> {
    let value = value.trim();
    let usage = "expected `@<unix seconds>` or `+<duration>`";
    if let Some(delay) = value.strip_prefix('+') {
        return Ok(RetryAfter::DateIn(parse_duration(delay)?));
    }
    let secs = value
        .strip_prefix('@')
        .ok_or_else(|| ParseError::new(value, usage))?;
    let secs: i64 = secs
        .trim()
        .parse()
        .map_err(|_| ParseError::new(value, usage))?;
    let at = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    at.map(RetryAfter::date)
        .ok_or_else(|| ParseError::new(value, "date out of range"))
}

/// Parse a duration: one or more `<integer><unit>` with units h, m, s, ms, us, ns.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, ParseError> {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let text = text.trim();
    let usage = "expected a duration like `3s`, `250ms` or `1m30s` (units h, m, s, ms, us, ns)";
    if text.is_empty() {
        return Err(ParseError::new(text, usage));
    }
    let bytes = text.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return Err(ParseError::new(text, usage));
        }
        // Only ASCII was skipped, so these slices fall on character boundaries.
        let number: u128 = text[start..i]
            .parse()
            .map_err(|_| ParseError::new(text, "duration too large"))?;
        let unit_start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_alphabetic) {
            i += 1;
        }
        let scale: u128 = match &text[unit_start..i] {
            "h" => 3_600 * NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "s" => NANOS_PER_SEC,
            "ms" => 1_000_000,
            "us" => 1_000,
            "ns" => 1,
            _ => return Err(ParseError::new(text, usage)),
        };
        total = number
            .checked_mul(scale)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| ParseError::new(text, "duration too large"))?;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC)
        .map_err(|_| ParseError::new(text, "duration too large"))?;
    // The remainder is below 10^9, so it fits a u32.
    let nanos = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Displays a duration in the grammar's form, exactly: the largest unit that divides it.
pub(crate) struct DisplayDuration(pub(crate) Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        const UNITS: [(&str, u128); 6] = [
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
            ("ns", 1),
        ];
        for (unit, scale) in UNITS {
            if nanos % scale == 0 {
                return write!(f, "{}{unit}", nanos / scale);
            }
        }
        write!(f, "{nanos}ns")
    }
}

fn keep_raw(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'%' | b':' | b';' | b'=')
}

/// Percent-encodes bytes that would break the grammar.
struct Encoded<'a>(&'a [u8]);

impl fmt::Display for Encoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if keep_raw(b) {
                f.write_char(char::from(b))?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

fn decode(text: &str) -> Result<Vec<u8>, ParseError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ParseError::new(text, "bad percent escape (expected `%` and two hex digits)")
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

fn decode_text(text: &str) -> Result<String, ParseError> {
    let text = text.trim();
    let decoded = decode(text)?;
    if decoded.is_empty() {
        return Err(ParseError::new(text, "empty value"));
    }
    String::from_utf8(decoded).map_err(|_| ParseError::new(text, "percent escapes are not UTF-8"))
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status:{}", self.status())?;
        match self.retry_after_signal() {
            None => {}
            Some(RetryAfter::Seconds(s)) => write!(f, ":retry-after={s}")?,
            Some(RetryAfter::Millis(ms)) => write!(f, ":retry-after-ms={ms}")?,
            Some(RetryAfter::Date(at)) => match at.duration_since(UNIX_EPOCH) {
                Ok(since) => write!(f, ":retry-after-date=@{}", since.as_secs())?,
                Err(before) => write!(f, ":retry-after-date=@-{}", before.duration().as_secs())?,
            },
            Some(RetryAfter::DateIn(delay)) => {
                write!(f, ":retry-after-date=+{}", DisplayDuration(delay))?
            }
        }
        if self.error_shape() != ErrorShape::OpenAi {
            write!(f, ":shape={}", self.error_shape())?;
        }
        if let Some(code) = self.error_code() {
            write!(f, ":code={}", Encoded(code.as_bytes()))?;
        }
        if let Some(message) = self.error_message() {
            write!(f, ":message={}", Encoded(message.as_bytes()))?;
        }
        for (name, value) in self.headers() {
            write!(
                f,
                ":header={}={}",
                Encoded(name.as_str().as_bytes()),
                Encoded(value.as_bytes())
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Healthy => f.write_str("healthy"),
            Fault::Status(reply) => reply.fmt(f),
            Fault::Hang => f.write_str("hang"),
            Fault::ResetBeforeHeaders => f.write_str("reset"),
            Fault::Latency(d) => write!(f, "latency:{}", DisplayDuration(*d)),
            Fault::SlowFirstToken(d) => write!(f, "slow-first-token:{}", DisplayDuration(*d)),
            Fault::CutAfter(n) => write!(f, "cut-after:{n}"),
            Fault::Stall { after } => write!(f, "stall-after:{after}"),
            Fault::MalformedEvent { at } => write!(f, "malformed-event:{at}"),
            Fault::NoDone => f.write_str("no-done"),
            Fault::FirstEventError => f.write_str("first-event-error"),
            Fault::ContextLengthExceeded => f.write_str("context-length-exceeded"),
            Fault::ContentPolicyViolation => f.write_str("content-policy-violation"),
            Fault::Flapping {
                down_for,
                while_down,
            } => write!(f, "flapping:{}:{while_down}", DisplayDuration(*down_for)),
            Fault::Fraction {
                per_mille,
                seed,
                fault,
            } => {
                write!(f, "fraction:{}:", DisplayRate(*per_mille))?;
                if *seed != 0 {
                    write!(f, "seed={seed}:")?;
                }
                write!(f, "{fault}")
            }
        }
    }
}

impl fmt::Display for ScheduledFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-", DisplayDuration(self.from))?;
        if let Some(until) = self.until {
            write!(f, "{}", DisplayDuration(until))?;
        }
        write!(f, "={}", self.fault)
    }
}

impl fmt::Display for FaultProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for window in self.schedule() {
            write!(f, "{window}; ")?;
        }
        for (model, fault) in self.routes() {
            write!(f, "model {}={fault}; ", Encoded(model.as_bytes()))?;
        }
        write!(f, "default={}", self.default_fault())
    }
}

enum Clause {
    Window(ScheduledFault),
    Route(String, Fault),
    Default(Fault),
}

pub(crate) fn parse_profile(text: &str) -> Result<FaultProfile, ParseError> {
    let mut profile = FaultProfile::default();
    let mut default_seen = false;
    for (index, clause) in text.split([';', '\n']).enumerate() {
        let clause = clause.trim();
        if clause.is_empty() {
            continue;
        }
        let number = index + 1;
        match parse_clause(clause).map_err(|e| e.in_clause(number, clause))? {
            Clause::Window(window) => profile.schedule.push(window),
            Clause::Route(model, fault) => {
                if profile.routes.iter().any(|(m, _)| *m == model) {
                    return Err(
                        ParseError::new(&model, "model routed twice").in_clause(number, clause)
                    );
                }
                profile.routes.push((model, fault));
            }
            Clause::Default(fault) => {
                if std::mem::replace(&mut default_seen, true) {
                    return Err(
                        ParseError::new(clause, "default given twice").in_clause(number, clause)
                    );
                }
                profile.default = fault;
            }
        }
    }
    Ok(profile)
}

fn parse_clause(clause: &str) -> Result<Clause, ParseError> {
    if let Some(rest) = clause.strip_prefix("default") {
        if let Some(fault) = rest.trim_start().strip_prefix('=') {
            return Ok(Clause::Default(parse_fault(fault)?));
        }
    }
    if let Some(rest) = clause.strip_prefix("model") {
        if rest.starts_with(char::is_whitespace) {
            let (model, fault) = rest
                .split_once('=')
                .ok_or_else(|| ParseError::new(clause, "expected `model <name>=<fault>`"))?;
            let model = model.trim();
            let name = String::from_utf8(decode(model)?)
                .map_err(|_| ParseError::new(model, "percent escapes are not UTF-8"))?;
            if name.is_empty() {
                return Err(ParseError::new(clause, "expected `model <name>=<fault>`"));
            }
            return Ok(Clause::Route(name, parse_fault(fault)?));
        }
    }
    if let Some((head, fault)) = clause.split_once('=') {
        if !head.contains(':') && head.contains('-') {
            let (from, until) = head.split_once('-').unwrap_or((head, ""));
            let from = match from.trim() {
                "" => Duration::ZERO,
                from => parse_duration(from)?,
            };
            let until = match until.trim() {
                "" => None,
                until => Some(parse_duration(until)?),
            };
            if until.is_some_and(|until| until <= from) {
                return Err(ParseError::new(
                    head.trim(),
                    "the window ends before it starts",
                ));
            }
            let fault = parse_fault(fault)?;
            return Ok(Clause::Window(ScheduledFault { from, until, fault }));
        }
    }
    Ok(Clause::Default(parse_fault(clause)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_exactly() {
        for (text, d) in [
            ("3s", Duration::from_secs(3)),
            ("250ms", Duration::from_millis(250)),
            ("1m30s", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            ("7ns", Duration::from_nanos(7)),
            ("1s500ms", Duration::from_millis(1500)),
        ] {
            assert_eq!(parse_duration(text).unwrap(), d, "{text}");
            assert_eq!(parse_duration(&DisplayDuration(d).to_string()).unwrap(), d);
        }
        assert_eq!(DisplayDuration(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(
            DisplayDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(
            DisplayDuration(Duration::MAX).to_string(),
            "18446744073709551615999999999ns"
        );
        assert_eq!(
            parse_duration("18446744073709551615999999999ns").unwrap(),
            Duration::MAX
        );
        for bad in [
            "",
            "3",
            "s",
            "3x",
            "-3s",
            "3 s",
            "99999999999999999999999h",
            "1.5s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percent_codec() {
        let text = Encoded("a:b;c=d%e f\u{e9}".as_bytes()).to_string();
        assert_eq!(text, "a%3Ab%3Bc%3Dd%25e%20f%C3%A9");
        assert_eq!(decode(&text).unwrap(), "a:b;c=d%e f\u{e9}".as_bytes());
        assert!(decode("%4").is_err());
        assert!(decode("%zz").is_err());
    }

    #[test]
    fn errors_name_the_part() {
        let cases = [
            ("nope", "nope"),
            ("latency", "latency"),
            ("latency:3", "3"),
            ("latency:3s:4s", "4s"),
            ("hang:1", "1"),
            ("status:abc", "abc"),
            ("status:100", "100"),
            ("status:429:shape=azure", "azure"),
            ("status:429:speed=1", "speed"),
            ("status:429:retry-after", "retry-after"),
            (
                "status:429:retry-after=1:retry-after-ms=5",
                "retry-after-ms=5",
            ),
            ("status:429:header=bad name=1", "bad name"),
            ("status:429:retry-after-date=tomorrow", "tomorrow"),
            ("cut-after:-1", "-1"),
            ("flapping:10s", "flapping:10s"),
            ("fraction:0.3", "fraction:0.3"),
            ("fraction:1.5:hang", "1.5"),
            ("fraction:2:hang", "2"),
            ("fraction:0.3333:hang", "0.3333"),
            ("fraction:.3:hang", ".3"),
            ("fraction:0.:hang", "0."),
            ("fraction:-0.1:hang", "-0.1"),
            ("fraction:0.3:seed=x:hang", "x"),
            ("fraction:0.3:seed=1", "fraction:0.3:seed=1"),
            ("fraction:0.3:nope", "nope"),
        ];
        for (input, part) in cases {
            let err = parse_fault(input).unwrap_err();
            assert_eq!(err.part(), part, "{input}: {err}");
        }
        let err = parse_profile("hang; 20s-10s=healthy").unwrap_err();
        assert_eq!((err.clause(), err.part()), (Some(2), "20s-10s"));
        let err = parse_profile("model a=hang; model a=reset").unwrap_err();
        assert_eq!(err.reason(), "model routed twice");
        let err = parse_profile("hang; default=healthy").unwrap_err();
        assert_eq!(err.reason(), "default given twice");
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "flapping:1s:".repeat(MAX_NESTING + 1) + "hang";
        assert!(parse_fault(&deep).unwrap_err().reason().contains("nested"));
        let ok = "flapping:1s:".repeat(MAX_NESTING) + "hang";
        assert!(parse_fault(&ok).is_ok());
        let deep = "fraction:0.5:flapping:1s:".repeat(MAX_NESTING / 2 + 1) + "hang";
        assert!(parse_fault(&deep).unwrap_err().reason().contains("nested"));
    }

    #[test]
    fn fractions_parse_and_print() {
        for (text, per_mille, seed, printed) in [
            ("fraction:0.3:status:500", 300, 0, "fraction:0.3:status:500"),
            (
                "fraction:0.30:status:500",
                300,
                0,
                "fraction:0.3:status:500",
            ),
            (
                "fraction: 0.05 : seed = 7 : status:500",
                50,
                7,
                "fraction:0.05:seed=7:status:500",
            ),
            (
                "fraction:0.001:status:500",
                1,
                0,
                "fraction:0.001:status:500",
            ),
            ("fraction:1:status:500", 1000, 0, "fraction:1:status:500"),
            (
                "fraction:1.000:status:500",
                1000,
                0,
                "fraction:1:status:500",
            ),
            ("fraction:0:status:500", 0, 0, "fraction:0:status:500"),
            (
                "fraction:00.5:status:500",
                500,
                0,
                "fraction:0.5:status:500",
            ),
            (
                "fraction:0.5:seed=18446744073709551615:status:500",
                500,
                u64::MAX,
                "fraction:0.5:seed=18446744073709551615:status:500",
            ),
        ] {
            let fault = parse_fault(text).unwrap();
            assert_eq!(
                fault,
                Fault::fraction(per_mille, Fault::status(500)).with_seed(seed),
                "{text}"
            );
            assert_eq!(fault.to_string(), printed);
            assert_eq!(parse_fault(printed).unwrap(), fault);
        }
        let nested = parse_fault("fraction:0.3:status:429:retry-after=1:code=a%3Ab").unwrap();
        assert_eq!(
            nested,
            Fault::fraction(300, Fault::status(429).retry_after_secs(1).code("a:b"))
        );
        assert_eq!(parse_fault(&nested.to_string()).unwrap(), nested);
        let p = parse_profile("4s-10s=fraction:0.3:status:500; default=latency:50ms").unwrap();
        assert_eq!(
            p.to_string(),
            "4s-10s=fraction:0.3:status:500; default=latency:50ms"
        );
    }

    #[test]
    fn windows_and_dates() {
        let p = parse_profile("-5s=hang; 5s-=reset").unwrap();
        assert_eq!(p.schedule()[0].from, Duration::ZERO);
        assert_eq!(p.schedule()[1].until, None);
        assert_eq!(p.to_string(), "0s-5s=hang; 5s-=reset; default=healthy");
        let f = parse_fault("status:503:retry-after-date=@-5").unwrap();
        assert_eq!(f.to_string(), "status:503:retry-after-date=@-5");
        let f = parse_fault("status:503:retry-after-date=+1m").unwrap();
        assert_eq!(
            f,
            Fault::status(503).retry_after_date_in(Duration::from_secs(60))
        );
    }
}
