//! Fuzz harnesses: provider error bodies (OpenAI, Anthropic, Gemini, Groq, OpenRouter and local
//! server shapes) and the layer that reads them. Runner and settings: `tests/fuzz_support` at
//! the workspace root, `FUZZING.md`.
//!
//! `tests/provider.rs` already feeds random bytes and flat error objects with random strings to
//! the parser; these harnesses generate the providers' shapes with arbitrary JSON at any depth
//! (nested `metadata.raw` bodies as strings and objects, Gemini `details`, arrays around the
//! error), mutate their serialized bytes, and drive error responses through
//! [`InspectErrorBodyLayer`] in arbitrary chunks.

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fuzz_support::fuzz;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::{service_fn, Layer, ServiceExt};
use tower_llm_core::delay::MAX_SERVER_DELAY;
use tower_llm_core::provider::{self, MAX_CODE_LEN, MAX_MESSAGE_LEN};
use tower_llm_core::{
    Classification, Classify, HttpClassifier, InspectErrorBodyLayer, ProviderError,
};

/// Strings providers put in error bodies, and arbitrary ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("insufficient_quota".to_owned()),
        Just("rate_limit_exceeded".to_owned()),
        Just("RESOURCE_EXHAUSTED".to_owned()),
        Just("context_length_exceeded".to_owned()),
        Just("overloaded_error".to_owned()),
        Just("Please try again in 7.66s.".to_owned()),
        Just("Request too large for gpt-4o on tokens per min (TPM). The input or output tokens must be reduced".to_owned()),
        Just("type.googleapis.com/google.rpc.RetryInfo".to_owned()),
        Just("type.googleapis.com/google.rpc.QuotaFailure".to_owned()),
        Just("GenerateRequestsPerDayPerProjectPerModel".to_owned()),
        Just("API_KEY_INVALID".to_owned()),
        Just("99999999999999999999s".to_owned()),
        Just("retry after 1e308 seconds".to_owned()),
        "\\PC{0,24}",
        any::<String>(),
        // Long: the parser truncates messages and codes on a character boundary.
        "[é😀a]{500,700}",
    ]
}

/// Arbitrary JSON, shallow or deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("error".to_owned()),
                    Just("message".to_owned()),
                    Just("code".to_owned()),
                    Just("type".to_owned()),
                    Just("status".to_owned()),
                    Just("details".to_owned()),
                    Just("metadata".to_owned()),
                    Just("raw".to_owned()),
                    Just("@type".to_owned()),
                    Just("retryDelay".to_owned()),
                    "\\PC{0,6}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A provider's error body with any of its members replaced by arbitrary JSON.
fn provider_body() -> impl Strategy<Value = Value> {
    let member = || prop_oneof![3 => text().prop_map(Value::String), 1 => json_value()];
    prop_oneof![
        // OpenAI, Groq, vLLM.
        (member(), member(), member(), member()).prop_map(|(message, ty, param, code)| {
            json!({"error": {"message": message, "type": ty, "param": param, "code": code}})
        }),
        // Anthropic.
        (member(), member())
            .prop_map(|(ty, message)| json!({"type": "error", "error": {"type": ty, "message": message}})),
        // Gemini, also wrapped in an array.
        (member(), member(), member(), json_value(), member(), any::<bool>()).prop_map(
            |(code, message, status, detail, delay, wrapped)| {
                let body = json!({"error": {"code": code, "message": message, "status": status,
                    "details": [
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
                        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": status}]},
                        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": code},
                        detail,
                    ]}});
                if wrapped {
                    json!([body])
                } else {
                    body
                }
            }
        ),
        // OpenRouter, relaying an upstream body as a string or an object (which may relay again).
        (member(), member(), json_value(), any::<bool>()).prop_map(|(code, message, raw, as_text)| {
            let raw = if as_text { Value::String(raw.to_string()) } else { raw };
            json!({"error": {"code": code, "message": message,
                "metadata": {"raw": raw, "reasons": [], "provider_name": "x"}}})
        }),
        // Local servers.
        member().prop_map(|e| json!({"error": e})),
        (member(), member(), member()).prop_map(|(m, t, c)| json!({"message": m, "type": t, "code": c})),
        member().prop_map(|d| json!({"detail": d})),
        json_value(),
    ]
}

/// Serialized bodies, some of them damaged: truncated, a byte replaced, bytes inserted, or deeply
/// nested.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    let serialized = || {
        (provider_body(), any::<bool>()).prop_map(|(v, pretty)| {
            if pretty {
                serde_json::to_vec_pretty(&v).unwrap_or_default()
            } else {
                serde_json::to_vec(&v).unwrap_or_default()
            }
        })
    };
    prop_oneof![
        4 => serialized(),
        1 => (serialized(), any::<prop::sample::Index>())
            .prop_map(|(b, at)| b[..at.index(b.len() + 1)].to_vec()),
        1 => (serialized(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut b, at, x)| {
            if !b.is_empty() {
                let i = at.index(b.len());
                b[i] = x;
            }
            b
        }),
        1 => (serialized(), any::<prop::sample::Index>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(mut b, at, bytes)| {
                let i = at.index(b.len() + 1);
                b.splice(i..i, bytes);
                b
            }),
        1 => (1usize..3000, prop_oneof![Just("["), Just("{\"error\":"), Just("{\"a\":")])
            .prop_map(|(depth, open)| open.repeat(depth).into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

fn error_status() -> impl Strategy<Value = StatusCode> {
    prop_oneof![
        Just(400u16),
        Just(401),
        Just(402),
        Just(403),
        Just(404),
        Just(413),
        Just(429),
        Just(500),
        Just(502),
        Just(503),
        Just(529),
        400u16..1000,
    ]
    .prop_map(|s| StatusCode::from_u16(s).expect("400..1000 is a status"))
}

/// What every parse must respect: bounded, truncated on a character boundary, delays capped.
fn check_bounds(found: &ProviderError) -> Result<(), TestCaseError> {
    if let Some(message) = &found.message {
        prop_assert!(
            message.len() <= MAX_MESSAGE_LEN,
            "message of {} bytes",
            message.len()
        );
    }
    if let Some(code) = &found.code {
        prop_assert!(code.len() <= MAX_CODE_LEN, "code of {} bytes", code.len());
    }
    if let Some(delay) = found.retry_after {
        prop_assert!(delay <= MAX_SERVER_DELAY, "delay {delay:?}");
    }
    Ok(())
}

#[test]
fn fuzz_provider_error_bodies() {
    fuzz(
        "provider_error_bodies",
        1024,
        || (error_status(), body_bytes()),
        |(status, bytes)| {
            let found = provider::parse_error_body(status, &bytes);
            let alone = provider::parse_error_slice(&bytes);
            if let Some(found) = &found {
                check_bounds(found)?;
                // The status only takes the kind away; everything else is what the body says.
                let alone = alone
                    .as_ref()
                    .expect("parse_error_body implies parse_error_slice");
                prop_assert_eq!(&found.code, &alone.code);
                prop_assert_eq!(&found.message, &alone.message);
                prop_assert_eq!(found.retry_after, alone.retry_after);
                prop_assert!(found.kind.is_none() || found.kind == alone.kind);
            } else {
                prop_assert!(alone.is_none());
            }
            let _ = provider::body_retry_after(&bytes);
            // Deterministic.
            prop_assert_eq!(provider::parse_error_body(status, &bytes), found);
            Ok(())
        },
    );
}

/// An error response with `bytes` in the given chunks, read by [`InspectErrorBodyLayer`] with
/// `limit`: the caller must read back exactly the upstream's bytes, and the classifier must see
/// what the parser says of them when they fit the limit.
#[test]
fn fuzz_inspect_error_body_layer() {
    fuzz(
        "inspect_error_body",
        512,
        || {
            (
                error_status(),
                body_bytes(),
                proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
                prop_oneof![
                    0usize..64,
                    Just(tower_llm_core::inspect::DEFAULT_ERROR_BODY_LIMIT)
                ],
                proptest::option::of("[ -~]{0,40}"),
            )
        },
        |(status, bytes, cuts, limit, retry_after)| {
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for p in points.into_iter().chain([bytes.len()]) {
                chunks.push(Bytes::copy_from_slice(&bytes[from..p]));
                from = p;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                    chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
                let mut res = Response::builder().status(status);
                if let Some(value) = &retry_after {
                    res = res.header("retry-after", value.as_str());
                }
                let res = res
                    .body(StreamBody::new(futures_util::stream::iter(frames)))
                    .expect("valid response");
                let res = Arc::new(Mutex::new(Some(res)));
                let upstream = service_fn(move |_req: Request<()>| {
                    let res = res.lock().expect("lock").take().expect("called once");
                    async move { Ok::<_, Infallible>(res) }
                });
                let res = InspectErrorBodyLayer::with_limit(limit)
                    .layer(upstream)
                    .oneshot(Request::new(()))
                    .await
                    .map_err(|e| TestCaseError::fail(format!("the layer failed: {e}")))?;
                let verdict = HttpClassifier::default().classify_response(&res);
                match verdict {
                    Classification::Failure(failure) => prop_assert!(
                        failure.retry_after.is_none_or(|d| d <= MAX_SERVER_DELAY),
                        "delay {:?}",
                        failure.retry_after
                    ),
                    Classification::Success => prop_assert!(false, "a {status} is a failure"),
                }
                let found = res.extensions().get::<ProviderError>().cloned();
                if bytes.len() <= limit {
                    prop_assert_eq!(&found, &provider::parse_error_body(status, &bytes));
                } else {
                    prop_assert!(found.is_none(), "a body over the limit is not parsed");
                }
                if let Some(found) = &found {
                    check_bounds(found)?;
                }
                let read = res
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("body failed: {e}")))?
                    .to_bytes();
                prop_assert_eq!(
                    &read[..],
                    &bytes[..],
                    "the body must reach the caller whole"
                );
                Ok(())
            })
        },
    );
}
