//! Fuzz harness: `Retry-After`, `retry-after-ms` and the rate-limit reset headers, as
//! [`delay::server_delay`] and [`HttpClassifier`] read them. Runner and settings:
//! `tests/fuzz_support` at the workspace root, `FUZZING.md`.
//!
//! `tests/delay.rs` already feeds arbitrary strings to each parser and arbitrary bytes to every
//! header at once, with `now` near the present; this harness generates values shaped like the
//! real ones at their edges (huge and fractional numbers, many-part Go durations, HTTP dates and
//! RFC 3339 timestamps around `now` and at the ends of the calendar), any subset of the headers,
//! and `now` anywhere from the epoch to the year 9999, and checks what the callers rely on: the
//! delay is capped, adding it to an `Instant` cannot overflow, the precedence between the
//! headers holds, and the classifier's delay is capped too.

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::time::{Duration, Instant, UNIX_EPOCH};

use fuzz_support::fuzz;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;
use tower_llm_core::delay::{self, MAX_SERVER_DELAY, RESET_HEADERS, RETRY_AFTER_MS};
use tower_llm_core::{Classification, HttpClassifier};

/// Seconds from the epoch to 9999-12-31.
const YEAR_9999: u64 = 253_402_300_799;

fn decimal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        (any::<u32>(), "[0-9]{0,25}").prop_map(|(n, f)| format!("{n}.{f}")),
        "[0-9]{1,60}",
        Just(".5".to_owned()),
        Just("1.".to_owned()),
        Just("-1".to_owned()),
        Just("+1".to_owned()),
        Just("1e3".to_owned()),
        Just("NaN".to_owned()),
        Just("inf".to_owned()),
    ]
}

fn go_duration() -> impl Strategy<Value = String> {
    let unit = prop_oneof![
        Just("h"),
        Just("m"),
        Just("s"),
        Just("ms"),
        Just("us"),
        Just("µs"),
        Just("ns"),
        Just("d"),
        Just("")
    ];
    proptest::collection::vec((decimal(), unit), 0..6).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(n, u)| format!("{n}{u}"))
            .collect::<String>()
    })
}

/// A moment as an HTTP date or an RFC 3339 timestamp (maybe with an offset), or a broken one.
fn date(now_secs: u64) -> impl Strategy<Value = String> {
    let moment = prop_oneof![
        (0u64..YEAR_9999),
        (0u64..200_000).prop_map(move |d| now_secs.saturating_add(d)),
        (0u64..200_000).prop_map(move |d| now_secs.saturating_sub(d)),
    ];
    (moment, 0u32..1_000_000_000, -1439i32..=1439, 0u8..4).prop_map(
        |(secs, nanos, offset, form)| {
            // humantime writes years up to 9999; keep a day's margin for the offsets.
            let secs = secs.clamp(86_400, YEAR_9999 - 86_400);
            let at = UNIX_EPOCH + Duration::new(secs, nanos);
            match form {
                0 => httpdate::fmt_http_date(at),
                1 => humantime::format_rfc3339_nanos(at).to_string(),
                2 => {
                    // The same moment written in another offset.
                    let local = UNIX_EPOCH
                        + Duration::from_secs(secs.saturating_add_signed(i64::from(offset) * 60));
                    let text = humantime::format_rfc3339_seconds(local).to_string();
                    let sign = if offset < 0 { '-' } else { '+' };
                    let abs = offset.unsigned_abs();
                    format!(
                        "{}{sign}{:02}:{:02}",
                        text.trim_end_matches('Z'),
                        abs / 60,
                        abs % 60
                    )
                }
                _ => {
                    let mut text = httpdate::fmt_http_date(at);
                    text.truncate(text.len() / 2);
                    text
                }
            }
        },
    )
}

fn header_value(now_secs: u64) -> impl Strategy<Value = String> {
    prop_oneof![
        decimal(),
        go_duration(),
        date(now_secs),
        "[ -~]{0,40}",
        (decimal(), "[ \t]{0,3}").prop_map(|(d, ws)| format!("{ws}{d}{ws}")),
    ]
}

/// Any subset of the delay headers, with values shaped like theirs, among headers that are not
/// (some sharing their prefixes).
fn headers(now_secs: u64) -> impl Strategy<Value = Vec<(HeaderName, String)>> {
    let mut names = vec![http::header::RETRY_AFTER, RETRY_AFTER_MS];
    for (reset, remaining) in RESET_HEADERS {
        names.push(reset);
        names.push(remaining);
    }
    for other in [
        "content-type",
        "date",
        "retry-after-s",
        "x-ratelimit-limit-requests",
        "x-ratelimit-reset",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-tokens-reset-at",
    ] {
        names.push(HeaderName::from_static(other));
    }
    let name = proptest::sample::select(names);
    let remaining = prop_oneof![Just("0".to_owned()), Just("1".to_owned()), decimal()];
    proptest::collection::vec(
        (
            name,
            prop_oneof![3 => header_value(now_secs), 1 => remaining],
        ),
        0..8,
    )
}

fn now_secs() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(1_700_000_000u64),
        0u64..YEAR_9999,
        Just(0u64),
        Just(YEAR_9999),
    ]
}

fn map(pairs: &[(HeaderName, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(value) {
            map.append(name.clone(), value);
        }
    }
    map
}

/// `HeaderMap::get` reads the first value of a repeated header; so do the parsers.
fn first(map: &HeaderMap, name: &HeaderName) -> Option<String> {
    map.get(name)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .map(str::to_owned)
}

fn capped(d: Duration) -> Result<(), TestCaseError> {
    prop_assert!(d <= MAX_SERVER_DELAY, "delay {d:?} over the cap");
    prop_assert!(
        Instant::now().checked_add(d).is_some(),
        "Instant + {d:?} overflows"
    );
    prop_assert!(tokio::time::Instant::now().checked_add(d).is_some());
    Ok(())
}

#[test]
fn fuzz_rate_limit_headers() {
    fuzz(
        "rate_limit_headers",
        2048,
        || now_secs().prop_flat_map(|now| (Just(now), headers(now))),
        |(now_secs, pairs)| {
            let now = UNIX_EPOCH + Duration::from_secs(now_secs);
            let map = map(&pairs);
            let found = delay::server_delay(&map, now);
            if let Some(d) = found {
                capped(d)?;
            }
            // Precedence: retry-after-ms, then retry-after, then the resets.
            let ms = first(&map, &RETRY_AFTER_MS).and_then(|v| delay::parse_retry_after_ms(&v));
            let ra = first(&map, &http::header::RETRY_AFTER)
                .and_then(|v| delay::parse_retry_after(&v, now));
            let resets = delay::reset_delay(&map, now);
            prop_assert_eq!(found, ms.or(ra).or(resets));
            // The one pass over the map finds what a lookup of each name finds.
            let mut any = None;
            let mut exhausted = None;
            for (reset, remaining) in &RESET_HEADERS {
                let Some(d) = first(&map, reset).and_then(|v| delay::parse_reset(&v, now)) else {
                    continue;
                };
                any = any.max(Some(d));
                if first(&map, remaining).and_then(|v| v.trim().parse::<u64>().ok()) == Some(0) {
                    exhausted = exhausted.max(Some(d));
                }
            }
            prop_assert_eq!(resets, exhausted.or(any));
            // The resets give the longest of the exhausted limits, else the longest of all.
            let each: Vec<Duration> = RESET_HEADERS
                .iter()
                .filter_map(|(reset, _)| first(&map, reset))
                .filter_map(|v| delay::parse_reset(&v, now))
                .collect();
            if let Some(r) = resets {
                capped(r)?;
                prop_assert!(each.contains(&r), "{r:?} is none of the resets {each:?}");
                prop_assert!(r <= each.iter().copied().max().unwrap_or_default());
            } else {
                prop_assert!(each.is_empty());
            }
            for (_, value) in &pairs {
                for d in [
                    delay::parse_retry_after(value, now),
                    delay::parse_retry_after_ms(value),
                    delay::parse_reset(value, now),
                    delay::parse_go_duration(value),
                ]
                .into_iter()
                .flatten()
                {
                    capped(d)?;
                }
            }
            // The classifier's delay (its own clock, the same headers) is capped as well.
            for status in [429u16, 503, 529, 500] {
                let status = StatusCode::from_u16(status).expect("status");
                let verdict = HttpClassifier::default().classify_parts(status, &map);
                let Classification::Failure(failure) = verdict else {
                    return Err(TestCaseError::fail(format!("{status} is a failure")));
                };
                if let Some(d) = failure.retry_after {
                    capped(d)?;
                }
            }
            Ok(())
        },
    );
}
