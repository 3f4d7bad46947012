//! Server-requested delays: every signal a provider uses to say "come back later".
//!
//! | signal | where | format | parser |
//! |---|---|---|---|
//! | `retry-after-ms` | OpenAI, Azure | milliseconds, may be fractional (`1500`, `20.5`) | [`parse_retry_after_ms`] |
//! | `retry-after` | everyone | seconds (`2`, also `1.5`) or an HTTP-date | [`parse_retry_after`] |
//! | `x-ratelimit-reset-requests` / `-tokens` | OpenAI, Groq | Go durations (`6m0s`, `12ms`, `1h2m3.5s`) | [`parse_go_duration`] |
//! | `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset` | Anthropic | RFC 3339 timestamps | [`parse_rfc3339`], [`until`] |
//! | `RetryInfo.retryDelay` | Gemini, in the JSON error body | protobuf JSON durations (`13s`, `0.5s`) | [`gemini_retry_delay`] |
//! | "Please try again in 7.66s." | OpenAI, Groq, in the error message | text | [`delay_in_message`] |
//!
//! [`server_delay`] combines the headers. Every parser returns `None` for input it does not
//! understand (garbage, non-UTF-8, negative values, `NaN`, exponents) and never panics; a valid
//! but absurd delay is clamped to [`MAX_SERVER_DELAY`] instead of overflowing. A date or timestamp
//! in the past is a delay of zero.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::HeaderMap;
//! use tower_llm_core::delay;
//!
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let mut headers = HeaderMap::new();
//! headers.insert("x-ratelimit-reset-requests", "1s".parse().unwrap());
//! headers.insert("x-ratelimit-reset-tokens", "6m0s".parse().unwrap());
//! // Without a `remaining` header saying which limit was hit, the longest reset is the safe wait.
//! assert_eq!(delay::server_delay(&headers, now), Some(Duration::from_secs(360)));
//!
//! // `retry-after` wins over the reset headers.
//! headers.insert("retry-after", "2".parse().unwrap());
//! assert_eq!(delay::server_delay(&headers, now), Some(Duration::from_secs(2)));
//!
//! assert_eq!(delay::parse_go_duration("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
//! assert_eq!(delay::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::ZERO));
//! assert_eq!(delay::parse_retry_after("soon", now), None);
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The longest delay any parser returns: one day. A server asking for more is clamped to this,
/// so arithmetic on the result (`Instant + delay`) cannot overflow and a garbled value cannot park
/// a target for years. Layers apply their own, much smaller caps on top.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

/// `retry-after-ms`: milliseconds (OpenAI, Azure OpenAI).
pub const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

/// The rate-limit reset headers [`server_delay`] reads, each paired with the header that says how
/// much of that limit is left.
///
/// OpenAI and Groq send Go durations, Anthropic RFC 3339 timestamps; [`parse_reset`] accepts
/// either form in any of them.
pub const RESET_HEADERS: [(HeaderName, HeaderName); 6] = [
    (
        HeaderName::from_static("x-ratelimit-reset-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
    ),
    (
        HeaderName::from_static("x-ratelimit-reset-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
    ),
    (
        HeaderName::from_static("anthropic-ratelimit-requests-reset"),
        HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
    ),
    (
        HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
        HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
    ),
    (
        HeaderName::from_static("anthropic-ratelimit-input-tokens-reset"),
        HeaderName::from_static("anthropic-ratelimit-input-tokens-remaining"),
    ),
    (
        HeaderName::from_static("anthropic-ratelimit-output-tokens-reset"),
        HeaderName::from_static("anthropic-ratelimit-output-tokens-remaining"),
    ),
];

/// The delay the server asked for in `headers`, relative to `now`, if any.
///
/// Precedence: `retry-after-ms`, then `retry-after` (both are explicit answers to "when may I
/// retry"), then the rate-limit reset headers ([`reset_delay`]). A header that does not parse is
/// skipped, so a garbled `retry-after-ms` falls back to `retry-after`.
pub fn server_delay(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let found = DelayHeaders::read(headers);
    if let Some(d) = header_str(found.retry_after_ms).and_then(parse_retry_after_ms) {
        return Some(d);
    }
    if let Some(d) = header_str(found.retry_after).and_then(|v| parse_retry_after(v, now)) {
        return Some(d);
    }
    found.reset_delay(now)
}

/// The delay implied by the rate-limit reset headers ([`RESET_HEADERS`]), relative to `now`.
///
/// A rejected request does not say which limit it hit. When some limit reports `remaining: 0`,
/// that limit certainly blocks the next request: the longest reset among the exhausted limits is
/// returned. Otherwise any of them may be the one, and the longest of all present resets is the
/// safe wait (waiting for a shorter one risks another rejection). Resets are "time until the limit
/// is fully restored", so the longest one over-estimates; retry layers cap the delay anyway.
pub fn reset_delay(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    DelayHeaders::read(headers).reset_delay(now)
}

/// The first value of each header [`server_delay`] reads, found in one pass over the map.
///
/// Looking them up by name (eight lookups when none is there, up to fourteen; all but
/// `retry-after` are custom names, hashed byte by byte) cost ~2,800 instructions per failed
/// answer. A pass compares the few names an answer has, most of them rejected at their first
/// bytes. The first value of a repeated header is the one kept, as `get` returns it.
struct DelayHeaders<'a> {
    retry_after_ms: Option<&'a HeaderValue>,
    retry_after: Option<&'a HeaderValue>,
    /// For each entry of [`RESET_HEADERS`]: its reset and its remaining header.
    limits: [(Option<&'a HeaderValue>, Option<&'a HeaderValue>); LIMITS],
}

/// How many limits [`RESET_HEADERS`] names.
const LIMITS: usize = 6;

/// [`RESET_HEADERS`] in a static: a `const` of header names is built, and dropped, where it is
/// used (the lengths must agree to compile).
static RESET_HEADER_NAMES: [(HeaderName, HeaderName); LIMITS] = RESET_HEADERS;

impl<'a> DelayHeaders<'a> {
    fn read(headers: &'a HeaderMap) -> Self {
        let mut found = DelayHeaders {
            retry_after_ms: None,
            retry_after: None,
            limits: [(None, None); LIMITS],
        };
        // Values in order, each name's first value first.
        for (name, value) in headers {
            let name = name.as_str();
            let slot = if name.starts_with("retry-after") {
                match name {
                    "retry-after" => &mut found.retry_after,
                    "retry-after-ms" => &mut found.retry_after_ms,
                    _ => continue,
                }
            } else if name.starts_with("x-ratelimit-") || name.starts_with("anthropic-ratelimit-") {
                let limit = RESET_HEADER_NAMES
                    .iter()
                    .zip(found.limits.iter_mut())
                    .find_map(|((reset, remaining), (at_reset, at_remaining))| {
                        if reset.as_str() == name {
                            Some(at_reset)
                        } else if remaining.as_str() == name {
                            Some(at_remaining)
                        } else {
                            None
                        }
                    });
                match limit {
                    Some(slot) => slot,
                    None => continue,
                }
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        found
    }

    /// [`reset_delay`] over the headers found.
    fn reset_delay(&self, now: SystemTime) -> Option<Duration> {
        let mut any: Option<Duration> = None;
        let mut exhausted: Option<Duration> = None;
        for (reset, remaining) in &self.limits {
            let Some(delay) = header_str(*reset).and_then(|v| parse_reset(v, now)) else {
                continue;
            };
            any = any.max(Some(delay));
            let is_exhausted = header_str(*remaining)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|left| left == 0);
            if is_exhausted {
                exhausted = exhausted.max(Some(delay));
            }
        }
        exhausted.or(any)
    }
}

/// A header value as text, `None` when absent or not UTF-8.
fn header_str(value: Option<&HeaderValue>) -> Option<&str> {
    value.and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
}

/// Parse a `retry-after` value: delay-seconds (also fractional, `1.5`) or an HTTP-date, relative
/// to `now`. A date in the past is zero.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(d) = parse_seconds(value) {
        return Some(d);
    }
    // HTTP-dates are ASCII and at least "Sun, 06 Nov 1994 08:49:37 GMT"-sized (asctime is 24).
    if value.len() < 20 || value.len() > 64 {
        return None;
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(until(at, now))
}

/// Parse a `retry-after-ms` value: milliseconds, possibly fractional (`20`, `1500.5`).
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let (whole, nanos) = parse_decimal(value.trim())?;
    Some(from_nanos_clamped(scale(whole, nanos, NANOS_PER_MILLI)))
}

/// Parse decimal seconds: `2`, `1.5`, `.25`. No sign, no exponent, no `NaN`/`inf`.
pub fn parse_seconds(value: &str) -> Option<Duration> {
    let (whole, nanos) = parse_decimal(value.trim())?;
    Some(from_nanos_clamped(scale(whole, nanos, NANOS_PER_SEC)))
}

/// Parse a rate-limit reset value relative to `now`: a Go duration (`6m0s`, OpenAI and Groq) or
/// an RFC 3339 timestamp (Anthropic).
pub fn parse_reset(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    parse_go_duration(value).or_else(|| parse_rfc3339(value).map(|at| until(at, now)))
}

/// How long from `now` until `at`: zero when `at` is in the past, at most [`MAX_SERVER_DELAY`].
pub fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now)
        .map_or(Duration::ZERO, |d| d.min(MAX_SERVER_DELAY))
}

const NANOS_PER_SEC: u128 = 1_000_000_000;
const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_MICRO: u128 = 1_000;

/// Parse a Go `time.Duration` string as OpenAI and Groq send it in `x-ratelimit-reset-*`:
/// `6m0s`, `12ms`, `1s`, `1h2m3.5s`, `0.5s`, `20ms`, `0`.
///
/// Units `h`, `m`, `s`, `ms`, `us`/`µs`/`μs`, `ns`; a leading `+` is allowed. Negative durations
/// are `None` (a negative wait is not a delay); a value beyond [`MAX_SERVER_DELAY`] is clamped.
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let s = value.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let bytes = s.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    while i < bytes.len() {
        // The number: digits, optionally a fraction; at least one digit on either side.
        let int_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int_digits = &s[int_start..i];
        let mut frac_digits = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let frac_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac_digits = &s[frac_start..i];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return None;
        }
        // The unit: everything up to the next number (Go's lexing rule).
        let unit_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_digit() && bytes[i] != b'.' {
            i += 1;
        }
        let unit: u128 = match &s[unit_start..i] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO,
            "ms" => NANOS_PER_MILLI,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3600 * NANOS_PER_SEC,
            _ => return None,
        };
        let whole = saturating_digits(int_digits);
        // Up to 18 fraction digits fit a u64 exactly; finer digits are below a nanosecond.
        let frac_digits = frac_digits.get(..18).unwrap_or(frac_digits);
        let frac = saturating_digits(frac_digits);
        let frac_scale = 10u128.pow(frac_digits.len() as u32);
        let part = u128::from(whole)
            .saturating_mul(unit)
            .saturating_add(u128::from(frac) * unit / frac_scale);
        total = total.saturating_add(part);
    }
    Some(from_nanos_clamped(total))
}

/// Format `d` the way Go's `time.Duration.String()` does (`6m0s`, `12ms`, `1h2m3.5s`, `0s`), as
/// OpenAI sends it in `x-ratelimit-reset-*`. [`parse_go_duration`] reads it back exactly.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < NANOS_PER_MICRO {
        return format!("{nanos}ns");
    }
    if nanos < NANOS_PER_MILLI {
        return format!("{}\u{b5}s", fixed(nanos, NANOS_PER_MICRO));
    }
    if nanos < NANOS_PER_SEC {
        return format!("{}ms", fixed(nanos, NANOS_PER_MILLI));
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let seconds = fixed(
        u128::from(s) * NANOS_PER_SEC + u128::from(d.subsec_nanos()),
        NANOS_PER_SEC,
    );
    if h > 0 {
        format!("{h}h{m}m{seconds}s")
    } else if m > 0 {
        format!("{m}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / unit` as a decimal with trailing fraction zeros removed (`1500, 1000` → `1.5`).
fn fixed(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parse a protobuf JSON `Duration` (Gemini's `RetryInfo.retryDelay`): decimal seconds followed
/// by `s` (`13s`, `0.5s`, `1.000340012s`). Negative values are `None`.
pub fn parse_protobuf_duration(value: &str) -> Option<Duration> {
    parse_seconds(value.trim().strip_suffix('s')?)
}

/// The `retryDelay` of the first `google.rpc.RetryInfo` in a Gemini (Google API) error body.
///
/// Accepts the parsed body (`{"error":{"details":[...]}}`), the `error` object itself, or the
/// one-element array Gemini's streaming endpoint wraps errors in.
pub fn gemini_retry_delay(body: &serde_json::Value) -> Option<Duration> {
    let body = match body {
        serde_json::Value::Array(items) => items.first()?,
        other => other,
    };
    let error = body.get("error").unwrap_or(body);
    error
        .get("details")?
        .as_array()?
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| {
            d.get("retryDelay")
                .and_then(serde_json::Value::as_str)
                .and_then(parse_protobuf_duration)
        })
}

/// [`gemini_retry_delay`] on raw body bytes; `None` when they are not JSON.
pub fn gemini_retry_delay_from_slice(body: &[u8]) -> Option<Duration> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    gemini_retry_delay(&value)
}

/// A delay stated in an error message: "Please try again in 7.66s." (Groq, OpenAI, Go-duration
/// style: `1m26.4s`, `960ms`), "try again in 20 seconds", "retry after 20 seconds" (Azure).
pub fn delay_in_message(message: &str) -> Option<Duration> {
    const PHRASES: [&str; 3] = ["try again in ", "retry after ", "retry in "];
    for phrase in PHRASES {
        let mut from = 0;
        while let Some(at) = find_ascii_ci(message.get(from..)?, phrase) {
            let rest = message.get(from + at + phrase.len()..)?;
            if let Some(d) = delay_phrase(rest) {
                return Some(d);
            }
            from += at + phrase.len();
        }
    }
    None
}

/// Parse the words after "try again in": `7.66s.`, `1m26.4s,`, `20 seconds`, `500 milliseconds`.
fn delay_phrase(rest: &str) -> Option<Duration> {
    let mut words = rest.split_ascii_whitespace();
    let first = words.next()?;
    let first = first
        .trim_end_matches(['.', ',', ';', ')', '!'])
        .to_ascii_lowercase();
    let first = first.as_str();
    if let Some(d) = parse_go_duration(first) {
        return Some(d);
    }
    let (whole, nanos) = parse_decimal(first)?;
    let unit = words.next()?.to_ascii_lowercase();
    let unit_nanos = if unit.starts_with("ms") || unit.starts_with("milli") {
        NANOS_PER_MILLI
    } else if unit.starts_with("sec") || unit.starts_with('s') {
        NANOS_PER_SEC
    } else if unit.starts_with("min") {
        60 * NANOS_PER_SEC
    } else if unit.starts_with("hour") {
        3600 * NANOS_PER_SEC
    } else {
        return None;
    };
    Some(from_nanos_clamped(scale(whole, nanos, unit_nanos)))
}

/// The byte offset of `needle` (ASCII) in `haystack`, ignoring ASCII case.
pub(crate) fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if n.is_empty() {
        return Some(0);
    }
    h.windows(n.len()).position(|w| w.eq_ignore_ascii_case(n))
}

/// Parse an RFC 3339 timestamp (`2024-05-01T12:00:30Z`, `2024-05-01T13:00:30.5+01:00`).
///
/// Hand-written rather than `humantime::parse_rfc3339_weak`, which accepts only UTC (`Z` or
/// `+00:00`) and would misread or reject any other offset. Accepts `T`, `t` or a space between
/// date and time, `Z`/`z` or `±HH:MM`, any number of fraction digits (nanosecond precision), and a
/// leap second (`:60`). The offset is required, as RFC 3339 says: a local time is `None`.
pub fn parse_rfc3339(value: &str) -> Option<SystemTime> {
    let b = value.trim().as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let year = num(0, 4)?;
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    let hour = num(11, 2)?;
    let minute = num(14, 2)?;
    let second = num(17, 2)?;
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(c - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = num(i + 1, 2)?;
            let om = num(i + 4, 2)?;
            if b.get(i + 3) != Some(&b':') || oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            let secs = i64::from(oh * 3600 + om * 60);
            if sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    if i != b.len()
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(i64::from(year), i64::from(month), i64::from(day));
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    let base = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    base.checked_add(Duration::from_nanos(u64::from(nanos)))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parse `digits[.digits]` (at least one digit) into the whole part (saturating) and the
/// fraction in nanoseconds of the unit (digits past the ninth are dropped).
fn parse_decimal(s: &str) -> Option<(u64, u32)> {
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (s, ""),
    };
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let mut nanos = 0u32;
    for (n, c) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(c - b'0') * 10u32.pow(8 - n as u32);
    }
    Some((saturating_digits(int), nanos))
}

/// ASCII digits as a number, saturating at `u64::MAX` (callers checked they are digits).
fn saturating_digits(digits: &str) -> u64 {
    digits.bytes().fold(0u64, |acc, c| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(c.wrapping_sub(b'0')))
    })
}

/// `whole` units plus `frac_nanos` billionths of a unit, in nanoseconds.
fn scale(whole: u64, frac_nanos: u32, unit_nanos: u128) -> u128 {
    u128::from(whole)
        .saturating_mul(unit_nanos)
        .saturating_add(u128::from(frac_nanos) * unit_nanos / NANOS_PER_SEC)
}

fn from_nanos_clamped(nanos: u128) -> Duration {
    let max = MAX_SERVER_DELAY.as_nanos();
    if nanos >= max {
        return MAX_SERVER_DELAY;
    }
    // Below one day: fits u64 seconds and u32 nanoseconds.
    Duration::new(
        (nanos / NANOS_PER_SEC) as u64,
        (nanos % NANOS_PER_SEC) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }

    #[test]
    fn decimal_fraction_is_exact() {
        assert_eq!(parse_decimal("1.5"), Some((1, 500_000_000)));
        assert_eq!(parse_decimal(".25"), Some((0, 250_000_000)));
        assert_eq!(parse_decimal("3."), Some((3, 0)));
        assert_eq!(parse_decimal("0.1234567891"), Some((0, 123_456_789)));
        assert_eq!(parse_decimal("."), None);
        assert_eq!(parse_decimal("1.2.3"), None);
    }

    #[test]
    fn fixed_trims_zeros() {
        assert_eq!(fixed(1_500, 1_000), "1.5");
        assert_eq!(fixed(2_000, 1_000), "2");
        assert_eq!(fixed(1_001, 1_000), "1.001");
    }
}
