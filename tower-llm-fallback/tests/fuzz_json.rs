//! Fuzz harness: the fallback chain's request rewrite (the JSON model splice and the caps on
//! `max_tokens`), through the public API: a [`FallbackLayer`] whose target names its own model,
//! in front of a client that records what it is sent. Runner and settings: `tests/fuzz_support`
//! at the workspace root, `FUZZING.md`.
//!
//! The unit proptests in `src/json.rs` check the member scanner against serde_json on
//! serializer-written objects; this harness goes through the whole rewrite with hand-written
//! documents (duplicate keys, escaped keys, odd whitespace, `model` nested or absent or not a
//! string), their truncations, other JSON values and raw bytes.

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fuzz_support::fuzz;
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_core::ReplayBody;
use tower_llm_fallback::{FallbackLayer, TargetConfig};

/// The target's model: plain, and with characters JSON must escape. Visible ASCII only: the
/// chain names the target in a response header, and refuses (with an error) a name that cannot
/// be one.
fn target_model() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("backup-model".to_owned()),
        Just("a\"quoted\\model".to_owned()),
        "[!-~][ -~]{0,23}",
    ]
}

/// JSON values (as text) for the members of the document.
fn value_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        Just(Value::String("model\",\"model\":\"x".to_owned())),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![Just("model".to_owned()), "\\PC{0,6}"],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    (value, any::<bool>()).prop_map(|(v, pretty)| {
        if pretty {
            serde_json::to_string_pretty(&v).unwrap_or_default()
        } else {
            v.to_string()
        }
    })
}

/// Whitespace JSON allows between tokens.
fn ws() -> impl Strategy<Value = String> {
    "[ \t\r\n]{0,3}"
}

/// A top-level key: `model` (also escaped), the capped members, or another name.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("\"model\"".to_owned()),
        1 => Just("\"mod\\u0065l\"".to_owned()),
        1 => Just("\"max_tokens\"".to_owned()),
        1 => Just("\"Model\"".to_owned()),
        3 => "[a-z_]{1,8}".prop_map(|k| format!("\"{k}\"")),
        1 => "\\PC{0,6}".prop_map(|k| Value::String(k).to_string()),
    ]
}

/// A JSON object written by hand: members in any order, keys repeated, whitespace anywhere.
fn document() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec((key(), ws(), ws(), value_text(), ws()), 0..8),
        ws(),
        ws(),
    )
        .prop_map(|(members, lead, trail)| {
            let members: Vec<String> = members
                .into_iter()
                .map(|(k, a, b, v, c)| format!("{a}{k}{b}:{c}{v}"))
                .collect();
            format!("{lead}{{{}}}{trail}", members.join(","))
        })
}

/// What reached the client: its headers and body.
type Sent = Arc<Mutex<Option<(HeaderMap, Bytes)>>>;

/// Send `body` (with a `content-length` for it) through a chain of one target answering with
/// `model`, capped at `max_tokens`; returns what the client was sent.
fn rewrite(
    body: &[u8],
    model: &str,
    max_tokens: Option<u64>,
) -> Result<(HeaderMap, Bytes), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sent: Sent = Arc::default();
    let seen = sent.clone();
    let client = service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.bytes().cloned().unwrap_or_default();
            *seen.lock().expect("lock") = Some((parts.headers, bytes));
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(b"{\"choices\":[]}")))
                    .expect("valid response"),
            )
        }
    });
    let mut target = TargetConfig::new("p", model);
    if let Some(cap) = max_tokens {
        target = target.max_tokens(cap);
    }
    let layer = FallbackLayer::builder()
        .target(target)
        .build()
        .map_err(|e| TestCaseError::fail(format!("the chain does not build: {e}")))?;
    let svc = ServiceBuilder::new().layer(layer).service(client);
    let req = Request::post("http://gateway/v1/chat/completions")
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(ReplayBody::from_bytes(Bytes::copy_from_slice(body)))
        .expect("valid request");
    let res = rt.block_on(svc.oneshot(req));
    prop_assert!(
        res.is_ok(),
        "the chain failed: {:?}",
        res.err().map(|e| e.to_string())
    );
    let sent = sent.lock().expect("lock").take();
    sent.ok_or_else(|| TestCaseError::fail("the client was not called"))
}

/// A rewritten body's `content-length`, if any, is its own.
fn check_length(headers: &HeaderMap, body: &Bytes) -> Result<(), TestCaseError> {
    if let Some(length) = headers.get(http::header::CONTENT_LENGTH) {
        prop_assert_eq!(
            length.to_str().ok().and_then(|l| l.parse::<usize>().ok()),
            Some(body.len()),
            "content-length does not match the body sent"
        );
    }
    Ok(())
}

/// A valid document comes out as valid JSON equal to the input with the top-level `model` set to
/// the target's (and `max_tokens` capped): nothing else changes.
#[test]
fn fuzz_rewrite_valid_documents() {
    fuzz(
        "rewrite_valid_json",
        1024,
        || (document(), target_model(), proptest::option::of(1u64..5000)),
        |(doc, model, cap)| {
            let Ok(Value::Object(mut want)) = serde_json::from_str::<Value>(&doc) else {
                // Keys repeated with different escapes can still parse; anything else is for the
                // harness below.
                return Ok(());
            };
            let (headers, body) = rewrite(doc.as_bytes(), &model, cap)?;
            check_length(&headers, &body)?;
            let got: Value = serde_json::from_slice(&body).map_err(|e| {
                TestCaseError::fail(format!(
                    "the rewrite is not JSON ({e}): {}",
                    String::from_utf8_lossy(&body)
                ))
            })?;
            want.insert("model".to_owned(), Value::String(model));
            if let (Some(cap), Some(n)) = (cap, want.get("max_tokens").and_then(Value::as_f64)) {
                if n > cap as f64 {
                    want.insert("max_tokens".to_owned(), Value::from(cap));
                }
            }
            prop_assert_eq!(got, Value::Object(want));
            Ok(())
        },
    );
}

/// Anything else is sent without a panic; what is not a JSON object, and a truncated document,
/// is left exactly as it was.
#[test]
fn fuzz_rewrite_refuses_what_is_not_an_object() {
    let input = || {
        prop_oneof![
            // A strict prefix of a document.
            (document(), any::<prop::sample::Index>()).prop_map(|(doc, at)| {
                let cut = at.index(doc.trim_end().len().max(1));
                (doc.into_bytes()[..cut].to_vec(), true)
            }),
            // JSON that is not an object.
            value_text()
                .prop_filter("not an object", |v| !v.trim_start().starts_with('{'))
                .prop_map(|v| (v.into_bytes(), true)),
            // A document with a byte replaced (may or may not stay valid).
            (document(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(doc, at, b)| {
                let mut bytes = doc.into_bytes();
                let i = at.index(bytes.len());
                bytes[i] = b;
                (bytes, false)
            }),
            proptest::collection::vec(any::<u8>(), 0..128).prop_map(|b| (b, false)),
        ]
    };
    fuzz(
        "rewrite_invalid_json",
        1024,
        || (input(), target_model()),
        |((bytes, must_be_unchanged), model)| {
            let (headers, body) = rewrite(&bytes, &model, Some(16))?;
            check_length(&headers, &body)?;
            if must_be_unchanged {
                prop_assert_eq!(
                    &body[..],
                    &bytes[..],
                    "a body that is not an object was edited"
                );
            }
            // Bounded: at most the model inserted with its key, and the cap's digits.
            let model_json = Value::String(model).to_string();
            prop_assert!(body.len() <= bytes.len() + model_json.len() + "\"model\":,".len() + 20);
            Ok(())
        },
    );
}
