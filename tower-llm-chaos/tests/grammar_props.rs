//! Property tests of the fault and profile text forms.

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};
use proptest::prelude::*;
use tower_llm_chaos::{ErrorReply, ErrorShape, Fault, FaultProfile, RetryAfter};

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..10_000).prop_map(Duration::from_millis),
        (0u64..100_000).prop_map(Duration::from_secs),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn retry_after() -> impl Strategy<Value = RetryAfter> {
    prop_oneof![
        any::<u64>().prop_map(RetryAfter::Seconds),
        any::<u64>().prop_map(RetryAfter::Millis),
        (0u64..253_402_300_799).prop_map(|s| RetryAfter::date(UNIX_EPOCH + Duration::from_secs(s))),
        duration().prop_map(RetryAfter::DateIn),
    ]
}

fn header() -> impl Strategy<Value = (HeaderName, HeaderValue)> {
    (
        "[a-z0-9!#$%&'*+.^_`|~-]{1,20}",
        proptest::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..30),
    )
        .prop_filter_map("valid header", |(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_bytes(&value).ok()?,
            ))
        })
}

fn error_reply() -> impl Strategy<Value = ErrorReply> {
    (
        200u16..=999,
        proptest::option::of(retry_after()),
        proptest::sample::select(ErrorShape::ALL.to_vec()),
        proptest::option::of(any::<String>().prop_filter("non-empty", |s| !s.is_empty())),
        proptest::option::of(any::<String>().prop_filter("non-empty", |s| !s.is_empty())),
        proptest::collection::vec(header(), 0..3),
    )
        .prop_map(|(status, retry, shape, code, message, headers)| {
            let mut reply = ErrorReply::new(status).shape(shape);
            if let Some(retry) = retry {
                reply = reply.retry_after(retry);
            }
            if let Some(code) = code {
                reply = reply.code(code);
            }
            if let Some(message) = message {
                reply = reply.message(message);
            }
            for (name, value) in headers {
                reply = reply.header(name, value);
            }
            reply
        })
}

fn fault() -> impl Strategy<Value = Fault> {
    let leaf = prop_oneof![
        Just(Fault::Healthy),
        error_reply().prop_map(Fault::Status),
        Just(Fault::Hang),
        Just(Fault::ResetBeforeHeaders),
        duration().prop_map(Fault::Latency),
        duration().prop_map(Fault::SlowFirstToken),
        any::<usize>().prop_map(Fault::CutAfter),
        any::<usize>().prop_map(|after| Fault::Stall { after }),
        any::<usize>().prop_map(|at| Fault::MalformedEvent { at }),
        Just(Fault::NoDone),
        Just(Fault::FirstEventError),
        Just(Fault::ContextLengthExceeded),
        Just(Fault::ContentPolicyViolation),
    ];
    leaf.prop_recursive(3, 8, 1, |inner| {
        prop_oneof![
            (duration(), inner.clone())
                .prop_map(|(down_for, while_down)| Fault::flapping(down_for, while_down)),
            (0u16..=1000, any::<u64>(), inner).prop_map(|(per_mille, seed, fault)| {
                Fault::fraction(per_mille, fault).with_seed(seed)
            }),
        ]
    })
}

fn profile() -> impl Strategy<Value = FaultProfile> {
    (
        proptest::collection::vec(
            (duration(), proptest::option::of(duration()), fault()),
            0..4,
        ),
        proptest::collection::btree_map(
            any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
            fault(),
            0..4,
        ),
        fault(),
    )
        .prop_map(|(windows, routes, default)| {
            let mut profile = FaultProfile::new(default);
            for (from, len, fault) in windows {
                // A window must end after it starts.
                let until = len.and_then(|len| from.checked_add(len.max(Duration::from_nanos(1))));
                profile = profile.window(from, until, fault);
            }
            for (model, fault) in routes {
                profile = profile.route(model, fault);
            }
            profile
        })
}

/// Strings made of the grammar's own words, to reach deep into the parser.
fn grammar_soup() -> impl Strategy<Value = String> {
    let word = proptest::sample::select(vec![
        "status",
        "hang",
        "reset",
        "latency",
        "slow-first-token",
        "cut-after",
        "stall-after",
        "malformed-event",
        "no-done",
        "first-event-error",
        "context-length-exceeded",
        "content-policy-violation",
        "flapping",
        "fraction",
        "seed",
        "0.3",
        "1.",
        ".05",
        "healthy",
        "default",
        "model",
        "retry-after",
        "retry-after-ms",
        "retry-after-date",
        "shape",
        "code",
        "message",
        "header",
        "openai",
        "gemini",
        ":",
        ";",
        "=",
        "-",
        "@",
        "+",
        "%",
        "%4",
        "%zz",
        "%C3",
        " ",
        "\n",
        "0",
        "429",
        "3s",
        "10ms",
        "1m30s",
        "99999999999999999999",
        "-1",
        "\u{e9}",
        "x-a",
        "1h",
    ]);
    proptest::collection::vec(word, 0..24).prop_map(|words| words.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = Fault::parse(&text);
        let _ = FaultProfile::parse(&text);
    }

    #[test]
    fn grammar_soup_never_panics_and_errors_name_a_part(text in grammar_soup()) {
        match Fault::parse(&text) {
            Ok(fault) => prop_assert_eq!(Fault::parse(&fault.to_string()), Ok(fault)),
            Err(err) => {
                let quoted = format!("`{}`", err.part());
                prop_assert!(err.to_string().contains(&quoted));
            }
        }
        if let Ok(profile) = FaultProfile::parse(&text) {
            prop_assert_eq!(FaultProfile::parse(&profile.to_string()), Ok(profile));
        }
    }

    #[test]
    fn faults_round_trip_through_text(fault in fault()) {
        let text = fault.to_string();
        prop_assert_eq!(Fault::parse(&text), Ok(fault.clone()), "text: {}", text);
        prop_assert!(fault.validate().is_ok());
    }

    #[test]
    fn profiles_round_trip_through_text(profile in profile()) {
        let text = profile.to_string();
        prop_assert_eq!(FaultProfile::parse(&text), Ok(profile), "text: {}", text);
    }
}
