//! The values inside faults: rates, counts, durations, and the percent encoding of text.

use std::fmt::{self, Write as _};
use std::time::Duration;

use super::ParseError;

/// Parse a rate in `0..=1` with at most three decimals, as thousandths.
pub(super) fn parse_rate(text: &str) -> Result<u16, ParseError> {
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
pub(super) struct DisplayRate(pub(super) u16);

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

pub(super) fn parse_count(text: &str) -> Result<usize, ParseError> {
    let text = text.trim();
    text.parse()
        .map_err(|_| ParseError::new(text, "expected a count (a whole number)"))
}

pub(super) fn parse_u64(text: &str, what: &str) -> Result<u64, ParseError> {
    let text = text.trim();
    text.parse()
        .map_err(|_| ParseError::new(text, format!("expected a whole number of {what}")))
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
pub(super) struct Encoded<'a>(pub(super) &'a [u8]);

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

pub(super) fn decode(text: &str) -> Result<Vec<u8>, ParseError> {
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

pub(super) fn decode_text(text: &str) -> Result<String, ParseError> {
    let text = text.trim();
    let decoded = decode(text)?;
    if decoded.is_empty() {
        return Err(ParseError::new(text, "empty value"));
    }
    String::from_utf8(decoded).map_err(|_| ParseError::new(text, "percent escapes are not UTF-8"))
}
