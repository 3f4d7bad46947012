//! Every server-delay signal, through the public parsers and `server_delay`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use tower_llm_core::delay::{self, MAX_SERVER_DELAY};

/// 2023-11-14T22:13:20Z.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn retry_after_seconds() {
    assert_eq!(
        delay::parse_retry_after("2", now()),
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        delay::parse_retry_after(" 30 ", now()),
        Some(Duration::from_secs(30))
    );
    assert_eq!(delay::parse_retry_after("0", now()), Some(Duration::ZERO));
    assert_eq!(delay::parse_retry_after("1.5", now()), Some(ms(1500)));
    assert_eq!(delay::parse_retry_after("0.25", now()), Some(ms(250)));
    assert_eq!(delay::parse_retry_after(".5", now()), Some(ms(500)));
}

#[test]
fn retry_after_http_dates() {
    // IMF-fixdate, 90 s after now.
    let later = httpdate::fmt_http_date(now() + Duration::from_secs(90));
    assert_eq!(
        delay::parse_retry_after(&later, now()),
        Some(Duration::from_secs(90))
    );
    // The obsolete forms httpdate accepts: RFC 850 and asctime.
    assert_eq!(
        delay::parse_retry_after("Tuesday, 14-Nov-23 22:14:20 GMT", now()),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        delay::parse_retry_after("Tue Nov 14 22:15:20 2023", now()),
        Some(Duration::from_secs(120))
    );
    // In the past: zero, not None.
    assert_eq!(
        delay::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now()),
        Some(Duration::ZERO)
    );
    // Far future: clamped.
    assert_eq!(
        delay::parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now()),
        Some(MAX_SERVER_DELAY)
    );
}

#[test]
fn retry_after_rejects_garbage() {
    for bad in [
        "",
        " ",
        "soon",
        "-1",
        "+5",
        "1e3",
        "1e400",
        "NaN",
        "inf",
        "-inf",
        "0x10",
        "1,5",
        "1.2.3",
        "2 s",
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "١٢", // Arabic-Indic digits are not ASCII digits
    ] {
        assert_eq!(delay::parse_retry_after(bad, now()), None, "{bad:?}");
    }
}

#[test]
fn retry_after_huge_values_are_clamped() {
    assert_eq!(
        delay::parse_retry_after("86401", now()),
        Some(MAX_SERVER_DELAY)
    );
    assert_eq!(
        delay::parse_retry_after("99999999999999999999999999999999", now()),
        Some(MAX_SERVER_DELAY)
    );
    assert_eq!(
        delay::parse_retry_after("86399.999", now()),
        Some(ms(86_399_999))
    );
}

#[test]
fn retry_after_ms() {
    assert_eq!(delay::parse_retry_after_ms("1500"), Some(ms(1500)));
    assert_eq!(
        delay::parse_retry_after_ms("20.5"),
        Some(Duration::from_micros(20_500))
    );
    assert_eq!(delay::parse_retry_after_ms("0"), Some(Duration::ZERO));
    assert_eq!(delay::parse_retry_after_ms("-20"), None);
    assert_eq!(delay::parse_retry_after_ms("abc"), None);
    assert_eq!(delay::parse_retry_after_ms("1e400"), None);
    assert_eq!(
        delay::parse_retry_after_ms("18446744073709551616000"),
        Some(MAX_SERVER_DELAY)
    );
}

#[test]
fn go_durations_as_openai_sends_them() {
    let cases = [
        ("6m0s", Duration::from_secs(360)),
        ("12ms", ms(12)),
        ("1s", Duration::from_secs(1)),
        ("1h2m3.5s", ms(3_723_500)),
        ("0.5s", ms(500)),
        ("20ms", ms(20)),
        ("2m59.56s", ms(179_560)),
        ("7.66s", ms(7_660)),
        ("0s", Duration::ZERO),
        ("0", Duration::ZERO),
        ("+1s", Duration::from_secs(1)),
        ("1.5h", Duration::from_secs(5400)),
        ("3us", Duration::from_micros(3)),
        ("3µs", Duration::from_micros(3)),
        ("3μs", Duration::from_micros(3)),
        ("42ns", Duration::from_nanos(42)),
        (".5s", ms(500)),
        ("1s500ms", ms(1500)),
        ("1.000000001s", Duration::new(1, 1)),
    ];
    for (text, expected) in cases {
        assert_eq!(delay::parse_go_duration(text), Some(expected), "{text}");
    }
}

#[test]
fn go_durations_reject_garbage() {
    for bad in [
        "", "s", "1", "12", "-1s", "1x", "1.s.", "1 s", "ms", "1e3s", "NaN", "inf", "1h-2m",
        "..5s", "5sm", "1d",
    ] {
        assert_eq!(delay::parse_go_duration(bad), None, "{bad:?}");
    }
}

#[test]
fn go_durations_clamp_overflow() {
    assert_eq!(delay::parse_go_duration("25h"), Some(MAX_SERVER_DELAY));
    assert_eq!(
        delay::parse_go_duration("99999999999999999999999999h"),
        Some(MAX_SERVER_DELAY)
    );
    assert_eq!(
        delay::parse_go_duration(&"9999999999h".repeat(1000)),
        Some(MAX_SERVER_DELAY)
    );
}

#[test]
fn go_duration_formatting_matches_go() {
    let cases = [
        (Duration::ZERO, "0s"),
        (Duration::from_secs(360), "6m0s"),
        (ms(12), "12ms"),
        (Duration::from_secs(1), "1s"),
        (ms(3_723_500), "1h2m3.5s"),
        (ms(500), "500ms"),
        (Duration::from_micros(1500), "1.5ms"),
        (Duration::from_nanos(1500), "1.5µs"),
        (Duration::from_nanos(7), "7ns"),
        (Duration::from_secs(3600), "1h0m0s"),
    ];
    for (d, text) in cases {
        assert_eq!(delay::format_go_duration(d), text);
    }
}

#[test]
fn rfc3339_timestamps_with_offsets() {
    let base = now(); // 2023-11-14T22:13:20Z
    let cases = [
        ("2023-11-14T22:13:50Z", Duration::from_secs(30)),
        ("2023-11-14t22:13:50z", Duration::from_secs(30)),
        ("2023-11-14 22:13:50Z", Duration::from_secs(30)),
        ("2023-11-14T22:13:20.5Z", ms(500)),
        (
            "2023-11-14T22:13:20.123456789Z",
            Duration::from_nanos(123_456_789),
        ),
        (
            "2023-11-14T22:13:20.1234567891Z",
            Duration::from_nanos(123_456_789),
        ),
        ("2023-11-14T23:14:20+01:00", Duration::from_secs(60)),
        ("2023-11-14T17:14:20-05:00", Duration::from_secs(60)),
        ("2023-11-15T03:43:20+05:30", Duration::from_secs(0)),
        ("2023-11-14T22:13:20-00:00", Duration::ZERO),
        // In the past: zero.
        ("2023-11-14T22:00:00Z", Duration::ZERO),
        ("1969-12-31T23:59:59Z", Duration::ZERO),
        // Far future: clamped.
        ("9999-12-31T23:59:59Z", MAX_SERVER_DELAY),
    ];
    for (text, expected) in cases {
        assert_eq!(delay::parse_reset(text, base), Some(expected), "{text}");
    }
    // A leap second and 29 February parse.
    assert!(delay::parse_rfc3339("2016-12-31T23:59:60Z").is_some());
    assert!(delay::parse_rfc3339("2024-02-29T00:00:00Z").is_some());
    assert_eq!(
        delay::parse_rfc3339("1970-01-01T00:00:00Z"),
        Some(UNIX_EPOCH)
    );
    assert_eq!(
        delay::parse_rfc3339("1970-01-01T01:00:00+01:00"),
        Some(UNIX_EPOCH)
    );
}

#[test]
fn rfc3339_rejects_garbage() {
    for bad in [
        "",
        "2023-11-14",
        "2023-11-14T22:13:20",       // no offset: a local time
        "2023-11-14T22:13:20+0100",  // offset without colon
        "2023-11-14T22:13:20+24:00", // offset out of range
        "2023-02-29T00:00:00Z",      // not a leap year
        "2023-13-01T00:00:00Z",
        "2023-00-01T00:00:00Z",
        "2023-11-31T00:00:00Z",
        "2023-11-14T24:00:00Z",
        "2023-11-14T22:60:00Z",
        "2023-11-14T22:13:61Z",
        "2023-11-14T22:13:20.Z",
        "2023-11-14T22:13:20ZZ",
        "2023-11-14X22:13:20Z",
        "+2023-11-14T22:13:20Z",
        "２０２３-11-14T22:13:20Z",
    ] {
        assert_eq!(delay::parse_rfc3339(bad), None, "{bad:?}");
    }
}

#[test]
fn protobuf_durations_as_gemini_sends_them() {
    assert_eq!(
        delay::parse_protobuf_duration("13s"),
        Some(Duration::from_secs(13))
    );
    assert_eq!(delay::parse_protobuf_duration("0.5s"), Some(ms(500)));
    assert_eq!(
        delay::parse_protobuf_duration("1.000340012s"),
        Some(Duration::new(1, 340_012))
    );
    assert_eq!(delay::parse_protobuf_duration("-1s"), None);
    assert_eq!(delay::parse_protobuf_duration("13"), None);
    assert_eq!(delay::parse_protobuf_duration("13ms"), None);
}

#[test]
fn gemini_retry_info_in_json() {
    let body = serde_json::json!({"error": {
        "code": 429,
        "message": "Resource has been exhausted",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"}
        ]
    }});
    assert_eq!(
        delay::gemini_retry_delay(&body),
        Some(Duration::from_secs(13))
    );
    // The error object alone, and the streaming endpoint's one-element array.
    assert_eq!(
        delay::gemini_retry_delay(&body["error"]),
        Some(Duration::from_secs(13))
    );
    let wrapped = serde_json::Value::Array(vec![body.clone()]);
    assert_eq!(
        delay::gemini_retry_delay(&wrapped),
        Some(Duration::from_secs(13))
    );
    let bytes = serde_json::to_vec(&body).unwrap();
    assert_eq!(
        delay::gemini_retry_delay_from_slice(&bytes),
        Some(Duration::from_secs(13))
    );

    let fractional = serde_json::json!({"error": {"details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.5s"}
    ]}});
    assert_eq!(delay::gemini_retry_delay(&fractional), Some(ms(500)));

    for bad in [
        serde_json::json!({"error": {"details": [{"@type": "x.RetryInfo", "retryDelay": "13s"}]}}),
        serde_json::json!({"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": 13}]}}),
        serde_json::json!({"error": {"details": "nope"}}),
        serde_json::json!({"error": "nope"}),
        serde_json::json!([]),
        serde_json::json!(null),
    ] {
        assert_eq!(delay::gemini_retry_delay(&bad), None, "{bad}");
    }
    assert_eq!(delay::gemini_retry_delay_from_slice(b"\xff\xfe"), None);
    assert_eq!(delay::gemini_retry_delay_from_slice(b"{"), None);
}

#[test]
fn delays_in_messages() {
    let cases = [
        ("Rate limit reached for model `llama-3.1-70b-versatile` in organization `org_1` on tokens per minute (TPM): Limit 6000, Used 5996, Requested 100. Please try again in 7.66s. Visit https://console.groq.com/docs/rate-limits", ms(7_660)),
        ("Please try again in 960ms.", ms(960)),
        ("Please try again in 1m26.4s.", ms(86_400)),
        ("Rate limit exceeded. Try again in 20 seconds", Duration::from_secs(20)),
        ("Please retry after 20 seconds.", Duration::from_secs(20)),
        ("PLEASE TRY AGAIN IN 2S", Duration::from_secs(2)),
        ("try again in a moment; or try again in 3s", Duration::from_secs(3)),
    ];
    for (message, expected) in cases {
        assert_eq!(
            delay::delay_in_message(message),
            Some(expected),
            "{message}"
        );
    }
    for message in [
        "Please try again later.",
        "try again in",
        "retry after a while",
        "é try again in é",
    ] {
        assert_eq!(delay::delay_in_message(message), None, "{message}");
    }
}

#[test]
fn server_delay_precedence() {
    let all = headers(&[
        ("retry-after-ms", "1500"),
        ("retry-after", "2"),
        ("x-ratelimit-reset-requests", "30s"),
    ]);
    assert_eq!(delay::server_delay(&all, now()), Some(ms(1500)));

    let no_ms = headers(&[("retry-after", "2"), ("x-ratelimit-reset-requests", "30s")]);
    assert_eq!(
        delay::server_delay(&no_ms, now()),
        Some(Duration::from_secs(2))
    );

    // A garbled header falls through to the next signal.
    let garbled = headers(&[("retry-after-ms", "soon"), ("retry-after", "3")]);
    assert_eq!(
        delay::server_delay(&garbled, now()),
        Some(Duration::from_secs(3))
    );
    let garbled = headers(&[
        ("retry-after", "later"),
        ("x-ratelimit-reset-tokens", "12ms"),
    ]);
    assert_eq!(delay::server_delay(&garbled, now()), Some(ms(12)));

    let date = headers(&[("retry-after", "Tue, 14 Nov 2023 22:13:25 GMT")]);
    assert_eq!(
        delay::server_delay(&date, now()),
        Some(Duration::from_secs(5))
    );

    assert_eq!(delay::server_delay(&HeaderMap::new(), now()), None);
}

#[test]
fn reset_headers_openai() {
    let h = headers(&[
        ("x-ratelimit-reset-requests", "1s"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ]);
    // Unknown which limit was hit: the longest reset.
    assert_eq!(
        delay::server_delay(&h, now()),
        Some(Duration::from_secs(360))
    );

    // The requests limit is exhausted, the tokens limit has room: its reset is what counts.
    let h = headers(&[
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "1s"),
        ("x-ratelimit-remaining-tokens", "149000"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ]);
    assert_eq!(delay::reset_delay(&h, now()), Some(Duration::from_secs(1)));

    let only_tokens = headers(&[("x-ratelimit-reset-tokens", "20ms")]);
    assert_eq!(delay::server_delay(&only_tokens, now()), Some(ms(20)));
}

#[test]
fn reset_headers_anthropic() {
    let h = headers(&[
        ("anthropic-ratelimit-requests-reset", "2023-11-14T22:13:30Z"),
        ("anthropic-ratelimit-tokens-reset", "2023-11-14T22:14:20Z"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2023-11-14T23:13:40+01:00",
        ),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2023-11-14T22:13:25Z",
        ),
    ]);
    assert_eq!(
        delay::server_delay(&h, now()),
        Some(Duration::from_secs(60))
    );

    let exhausted = headers(&[
        ("anthropic-ratelimit-requests-remaining", "10"),
        ("anthropic-ratelimit-requests-reset", "2023-11-14T22:14:20Z"),
        ("anthropic-ratelimit-output-tokens-remaining", "0"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2023-11-14T22:13:25Z",
        ),
        ("anthropic-ratelimit-input-tokens-remaining", "0"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2023-11-14T22:13:40Z",
        ),
    ]);
    assert_eq!(
        delay::reset_delay(&exhausted, now()),
        Some(Duration::from_secs(20))
    );

    // Each header family accepts the other's format too.
    let swapped = headers(&[("anthropic-ratelimit-tokens-reset", "45s")]);
    assert_eq!(
        delay::server_delay(&swapped, now()),
        Some(Duration::from_secs(45))
    );
    let swapped = headers(&[("x-ratelimit-reset-requests", "2023-11-14T22:13:50Z")]);
    assert_eq!(
        delay::server_delay(&swapped, now()),
        Some(Duration::from_secs(30))
    );

    // A reset in the past: zero.
    let past = headers(&[("anthropic-ratelimit-requests-reset", "2020-01-01T00:00:00Z")]);
    assert_eq!(delay::server_delay(&past, now()), Some(Duration::ZERO));
}

#[test]
fn non_utf8_and_garbage_headers_are_ignored() {
    let mut h = HeaderMap::new();
    h.insert(
        "retry-after",
        HeaderValue::from_bytes(b"\xff\xfe2").unwrap(),
    );
    h.insert("retry-after-ms", HeaderValue::from_bytes(b"1\x80").unwrap());
    h.insert(
        "x-ratelimit-reset-requests",
        HeaderValue::from_bytes(b"\xc3\x28s").unwrap(),
    );
    assert_eq!(delay::server_delay(&h, now()), None);

    h.insert(
        "anthropic-ratelimit-tokens-reset",
        HeaderValue::from_static("7s"),
    );
    assert_eq!(delay::server_delay(&h, now()), Some(Duration::from_secs(7)));
}

/// Headers whose values are arbitrary bytes (as `HeaderValue` allows them).
fn arbitrary_header_value() -> impl Strategy<Value = HeaderValue> {
    let byte = prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')];
    proptest::collection::vec(byte, 0..64)
        .prop_map(|bytes| HeaderValue::from_bytes(&bytes).expect("visible ASCII and obs-text"))
}

/// Strings that look like delays: digits, units, dots, signs and a few odd characters.
fn delay_like() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[0-9.+\\-eEhmsuµμnNaIif :TZ,]{0,40}").unwrap()
}

proptest! {
    // XorShift: the default ChaCha generator dominates run time in unoptimised test builds.
    #![proptest_config(ProptestConfig {
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    #[test]
    fn parsers_never_panic_on_strings(s in any::<String>(), secs in any::<u64>()) {
        let now = UNIX_EPOCH + Duration::from_secs(secs % (300 * 365 * 86_400));
        for d in [
            delay::parse_retry_after(&s, now),
            delay::parse_retry_after_ms(&s),
            delay::parse_seconds(&s),
            delay::parse_go_duration(&s),
            delay::parse_reset(&s, now),
            delay::parse_protobuf_duration(&s),
            delay::delay_in_message(&s),
        ].into_iter().flatten() {
            prop_assert!(d <= MAX_SERVER_DELAY);
        }
        let _ = delay::parse_rfc3339(&s);
    }

    #[test]
    fn parsers_never_panic_on_delay_like_strings(s in delay_like()) {
        for d in [
            delay::parse_retry_after(&s, now()),
            delay::parse_retry_after_ms(&s),
            delay::parse_go_duration(&s),
            delay::parse_reset(&s, now()),
            delay::parse_protobuf_duration(&s),
        ].into_iter().flatten() {
            prop_assert!(d <= MAX_SERVER_DELAY);
        }
    }

    #[test]
    fn server_delay_never_panics_on_arbitrary_header_bytes(
        values in proptest::collection::vec(arbitrary_header_value(), 12),
    ) {
        let names = [
            "retry-after", "retry-after-ms",
            "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens",
            "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens",
            "anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset",
            "anthropic-ratelimit-input-tokens-reset", "anthropic-ratelimit-output-tokens-reset",
            "anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-tokens-remaining",
        ];
        let mut h = HeaderMap::new();
        for (name, value) in names.iter().zip(values) {
            h.insert(*name, value);
        }
        if let Some(d) = delay::server_delay(&h, now()) {
            prop_assert!(d <= MAX_SERVER_DELAY);
        }
    }

    #[test]
    fn gemini_body_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = delay::gemini_retry_delay_from_slice(&bytes);
    }

    #[test]
    fn go_durations_round_trip(nanos in 0u64..=MAX_SERVER_DELAY.as_nanos() as u64) {
        let d = Duration::from_nanos(nanos);
        let text = delay::format_go_duration(d);
        prop_assert_eq!(delay::parse_go_duration(&text), Some(d), "{}", text);
    }

    #[test]
    fn go_durations_round_trip_coarse(secs in 0u64..86_400, millis in 0u32..1000) {
        let d = Duration::from_secs(secs) + Duration::from_millis(u64::from(millis));
        let text = delay::format_go_duration(d);
        prop_assert_eq!(delay::parse_go_duration(&text), Some(d), "{}", text);
    }

    #[test]
    fn seconds_round_trip(secs in 0u64..86_400, nanos in 0u32..1_000_000_000) {
        let d = Duration::new(secs, nanos);
        let text = format!("{secs}.{nanos:09}");
        prop_assert_eq!(delay::parse_retry_after(&text, now()), Some(d));
        prop_assert_eq!(delay::parse_retry_after(&secs.to_string(), now()), Some(Duration::from_secs(secs)));
        prop_assert_eq!(delay::parse_protobuf_duration(&format!("{text}s")), Some(d));
        prop_assert_eq!(
            delay::parse_retry_after_ms(&(secs * 1000 + u64::from(nanos / 1_000_000)).to_string()),
            Some(Duration::from_millis(secs * 1000 + u64::from(nanos / 1_000_000)))
        );
    }

    #[test]
    fn http_dates_round_trip(offset in 0u64..86_400) {
        let at = now() + Duration::from_secs(offset);
        let text = httpdate::fmt_http_date(at);
        prop_assert_eq!(delay::parse_retry_after(&text, now()), Some(Duration::from_secs(offset)));
    }

    #[test]
    fn rfc3339_round_trips_through_humantime(secs in 0u64..253_402_300_799, nanos in 0u32..1_000_000_000) {
        let at = UNIX_EPOCH + Duration::new(secs, nanos);
        let text = humantime::format_rfc3339_nanos(at).to_string();
        prop_assert_eq!(delay::parse_rfc3339(&text), Some(at), "{}", text);
    }

    #[test]
    fn rfc3339_offsets_are_applied(secs in 86_400u64..253_402_000_000, offset_min in -1439i64..=1439) {
        // Write the same instant in a local time with an offset.
        let at = UNIX_EPOCH + Duration::from_secs(secs);
        let local = (secs as i64 + offset_min * 60) as u64;
        let utc_text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(local)).to_string();
        let sign = if offset_min < 0 { '-' } else { '+' };
        let abs = offset_min.unsigned_abs();
        let text = format!("{}{sign}{:02}:{:02}", utc_text.trim_end_matches('Z'), abs / 60, abs % 60);
        prop_assert_eq!(delay::parse_rfc3339(&text), Some(at), "{}", text);
    }
}
