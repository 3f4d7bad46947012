//! Fuzz harness: the TOML configuration loaders, the facade's [`StackConfig::from_toml_str`]
//! (then [`StackBuilder`] on what it accepts) and the gateway's
//! [`GatewayConfig::from_toml_str`] (`[gateway]`, `mock = "<fault profile>"` providers). Runner
//! and settings: `tests/fuzz_support`, `FUZZING.md`.
//!
//! Inputs are structure-aware documents (the schema's sections and keys with values of every
//! TOML type, in range and out of it, keys misspelt, sections repeated), the same documents
//! damaged (truncated, a byte replaced), and TOML-ish text. Properties: no panic; a rejection
//! has a message and says where (a key, or a line for a syntax error); what is accepted builds a
//! stack or fails with a message. Keys that name files or directories (`[health] file`,
//! `[escalation] dir`, the gateway's `*_file`) are never generated: building a stack would touch
//! the disk.

mod fuzz_support;

use fuzz_support::fuzz;
use proptest::prelude::*;
use tower_llm::config::{ConfigFileError, StackConfig};
use tower_llm::stack::StackBuilder;
use tower_llm_gateway::GatewayConfig;

/// TOML values: in range, out of range, of the wrong type.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("1".to_owned()),
        Just("-1".to_owned()),
        Just("2".to_owned()),
        Just("0.5".to_owned()),
        Just("1.5".to_owned()),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("-0.0".to_owned()),
        Just("9223372036854775807".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("1e400".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"*\"".to_owned()),
        Just("\"gpt-*\"".to_owned()),
        Just("\"[\"".to_owned()),
        Just("\"primary\"".to_owned()),
        Just("\"secondary\"".to_owned()),
        Just("\"http://127.0.0.1:9/v1\"".to_owned()),
        Just("\"https://[::1]:0/v1\"".to_owned()),
        Just("\"not a url\"".to_owned()),
        Just("\"127.0.0.1:0\"".to_owned()),
        Just("\"weighted\"".to_owned()),
        Just("\"least_loaded\"".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        (0u32..100_000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "\\PC{0,16}".prop_map(|s| toml_string(&s)),
        "[a-z0-9:;=. -]{0,30}".prop_map(|s| toml_string(&s)),
    ]
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The library schema's sections and their keys (as of this harness; new keys are still
/// reached through the misspelt and random ones).
const SECTIONS: &[(&str, &[&str])] = &[
    ("request", &["max_body_bytes"]),
    (
        "stream",
        &["ttft_ms", "idle_ms", "total_ms", "max_buffered_body_bytes"],
    ),
    (
        "breaker",
        &[
            "enabled",
            "failure_rate",
            "window",
            "min_calls",
            "consecutive_failures",
            "open_ms",
            "max_open_ms",
            "half_open_probes",
        ],
    ),
    (
        "retry",
        &[
            "enabled",
            "max_attempts",
            "base_ms",
            "max_delay_ms",
            "max_server_delay_ms",
            "attempt_timeout_ms",
            "budget_ratio",
            "budget_floor_per_sec",
            "seed",
        ],
    ),
    (
        "bulkhead",
        &[
            "enabled",
            "max_in_flight",
            "max_queued",
            "max_wait_ms",
            "requests_per_minute",
            "tokens_per_minute",
        ],
    ),
    (
        "cooldown",
        &[
            "rate_limited_ms",
            "quota_ms",
            "auth_ms",
            "transient_min_ms",
            "max_probe_interval_ms",
            "panic_probe_interval_ms",
            "max_server_delay_ms",
        ],
    ),
    ("cache", &["enabled", "max_entries", "max_bytes", "ttl_ms"]),
    ("static", &["content", "model"]),
    (
        "escalation",
        &[
            "all_targets_failed",
            "repeated_kind",
            "window_failures",
            "window_ms",
        ],
    ),
];

const GATEWAY_KEYS: &[&str] = &[
    "listen",
    "api_keys_env",
    "allow_unauthenticated",
    "admin_keys_env",
    "forward_request_headers",
    "forward_response_headers",
    "request_timeout_ms",
    "body_timeout_ms",
    "header_read_timeout_ms",
    "max_connections",
    "shutdown_grace_ms",
    "mock_logged_attempts",
    "demo_requests_per_sec",
];

const TARGET_KEYS: &[&str] = &[
    "provider",
    "model",
    "attempt_timeout_ms",
    "tier",
    "weight",
    "context_window",
    "max_tokens",
    "max_temperature",
];

/// A key of `keys`, or a misspelt or unknown one.
fn key_of(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => proptest::sample::select(keys).prop_map(str::to_owned),
        1 => (proptest::sample::select(keys), any::<prop::sample::Index>()).prop_map(|(k, at)| {
            let mut k = k.to_owned();
            k.remove(at.index(k.len()));
            k
        }),
        1 => "[a-z_]{1,12}",
    ]
}

/// A chaos fault profile, as the gateway's `mock` key holds it: valid clauses and broken ones.
fn fault_profile() -> impl Strategy<Value = String> {
    let clause = prop_oneof![
        Just("healthy"),
        Just("status:503"),
        Just("status:429:retry-after=2"),
        Just("status:429:retry-after=99999999999999999999"),
        Just("status:9999"),
        Just("latency:50ms"),
        Just("latency:99999999999h"),
        Just("hang"),
        Just("reset"),
        Just("cut-after:3"),
        Just("stall-after:1"),
        Just("fraction:0.3:seed=7:status:500"),
        Just("fraction:2:status:500"),
        Just("flapping:5s:reset"),
        Just("0s-10s=status:503"),
        Just("10s-=latency:1ms"),
        Just("model gpt-x=status:500"),
        Just("default=latency:5ms"),
        Just("status:"),
        Just(""),
    ]
    .prop_map(str::to_owned);
    prop_oneof![
        4 => proptest::collection::vec(clause, 0..4).prop_map(|c| c.join("; ")),
        1 => "[a-z0-9:;=.% -]{0,40}",
    ]
}

/// One `[[providers]]` table.
fn provider() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("primary".to_owned()),
            Just("secondary".to_owned()),
            "[a-z]{0,6}"
        ],
        prop_oneof![
            Just("base_url = \"http://127.0.0.1:9/v1\"".to_owned()),
            fault_profile().prop_map(|p| format!("mock = {}", toml_string(&p))),
            (
                key_of(&["base_url", "api_key_env", "auth_header", "mock"]),
                value()
            )
                .prop_map(|(k, v)| format!("{k} = {v}")),
        ],
    )
        .prop_map(|(name, line)| format!("[[providers]]\nname = {}\n{line}\n", toml_string(&name)))
}

/// One `[[routes]]` table with inline targets.
fn route() -> impl Strategy<Value = String> {
    let target =
        proptest::collection::vec((key_of(TARGET_KEYS), value()), 0..4).prop_map(|members| {
            let members: Vec<String> = std::iter::once("provider = \"primary\"".to_owned())
                .chain(members.into_iter().map(|(k, v)| format!("{k} = {v}")))
                .collect();
            format!("{{ {} }}", members.join(", "))
        });
    (
        prop_oneof![Just("\"*\"".to_owned()), value()],
        proptest::collection::vec(target, 0..3),
        proptest::collection::vec(
            (key_of(&["selection", "cache", "static_answer"]), value()),
            0..2,
        ),
    )
        .prop_map(|(pattern, targets, extra)| {
            let mut text = format!(
                "[[routes]]\nmatch = {pattern}\ntargets = [{}]\n",
                targets.join(", ")
            );
            for (k, v) in extra {
                text.push_str(&format!("{k} = {v}\n"));
            }
            text
        })
}

/// A section of the library schema with some of its keys.
fn section() -> impl Strategy<Value = String> {
    (0..SECTIONS.len()).prop_flat_map(|i| {
        let (name, keys) = SECTIONS[i];
        proptest::collection::vec((key_of(keys), value()), 0..4).prop_map(move |members| {
            let mut text = format!("[{name}]\n");
            for (k, v) in members {
                text.push_str(&format!("{k} = {v}\n"));
            }
            text
        })
    })
}

fn gateway_section() -> impl Strategy<Value = String> {
    proptest::collection::vec((key_of(GATEWAY_KEYS), value()), 0..4).prop_map(|members| {
        let mut text = "[gateway]\n".to_owned();
        for (k, v) in members {
            text.push_str(&format!("{k} = {v}\n"));
        }
        text
    })
}

/// A whole document: providers, routes, sections (maybe `[gateway]`), in any order, maybe
/// repeated.
fn document() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            3 => provider(),
            3 => route(),
            3 => section(),
            1 => gateway_section(),
        ],
        0..8,
    )
    .prop_map(|parts| parts.join("\n"))
}

/// Documents, damaged documents and TOML-ish text.
fn input() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => document(),
        1 => (document(), any::<prop::sample::Index>()).prop_map(|(d, at)| {
            let mut cut = at.index(d.len() + 1);
            while !d.is_char_boundary(cut) {
                cut -= 1;
            }
            d[..cut].to_owned()
        }),
        1 => (document(), any::<prop::sample::Index>(), any::<char>()).prop_map(|(d, at, c)| {
            let mut chars: Vec<char> = d.chars().collect();
            if !chars.is_empty() {
                let i = at.index(chars.len());
                chars[i] = c;
            }
            chars.into_iter().collect()
        }),
        1 => "[\\[\\]a-z_=\"'{}, .0-9\n#-]{0,200}",
        1 => any::<String>(),
    ]
}

/// A rejection says what and where.
fn check_error(err: &ConfigFileError, source: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !err.message().trim().is_empty(),
        "an error without a message: {err:?}"
    );
    prop_assert!(
        !err.key().is_empty() || err.line().is_some(),
        "an error that names neither a key nor a line: {err:?}"
    );
    if let Some(line) = err.line() {
        prop_assert!(
            line >= 1 && line <= source.lines().count().max(1) + 1,
            "line {line} outside the document: {err:?}"
        );
    }
    prop_assert!(!err.to_string().is_empty());
    Ok(())
}

#[test]
fn fuzz_stack_config_loader() {
    fuzz("stack_config_toml", 1024, input, |text| {
        match StackConfig::from_toml_str(&text) {
            Err(err) => check_error(&err, &text)?,
            Ok(config) => {
                // What the loader accepts either builds or is refused with a message (inside a
                // runtime, as every program that builds a stack has one).
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let _entered = rt.enter();
                match StackBuilder::new(&config).build_http::<http_body_util::Full<bytes::Bytes>>()
                {
                    Ok(_stack) => {}
                    Err(err) => check_error(&err, &text)?,
                }
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_gateway_config_loader() {
    fuzz("gateway_config_toml", 1024, input, |text| {
        if let Err(err) = GatewayConfig::from_toml_str(&text) {
            check_error(&err, &text)?;
        }
        Ok(())
    });
}
