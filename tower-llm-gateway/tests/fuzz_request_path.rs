//! Fuzz harness: the gateway's request path end to end. Random methods, paths, headers, model
//! names and bodies go over real loopback HTTP to one in-process [`Gateway`] (started once for
//! this test binary) whose two providers are embedded chaos mocks: the primary fails a share of
//! its calls in every way the mock knows that answers at once (503, 429 with `retry-after`,
//! resets, cut and malformed streams, no `[DONE]`, an error as the first event, context length),
//! the secondary is healthy. Runner and settings: `tests/fuzz_support` at the workspace root,
//! `FUZZING.md`.
//!
//! Properties, for every request: the gateway answers (no panic, no dropped connection); the
//! answer is a well-formed OpenAI success (a `chat.completion` object, or an event stream that
//! ends with `[DONE]` or an OpenAI error event) or an OpenAI error object
//! `{"error":{"message","type",...}}` with a 4xx/5xx status; and after it a well-formed request
//! for a model the gateway has not seen yet still succeeds.

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use fuzz_support::fuzz;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower_llm_gateway::{Gateway, GatewayConfig, GatewayOptions};

/// The primary fails 40 % of its calls, each kind of fault for a share of them (seeded, so the
/// same request sequence meets the same faults); the secondary is healthy.
const PRIMARY: &str = "\
    default = fraction:0.4:seed=11:status:503:retry-after=1; \
    model fuzz-429 = status:429:retry-after=1; \
    model fuzz-reset = reset; \
    model fuzz-cut = cut-after:2; \
    model fuzz-malformed = malformed-event:1; \
    model fuzz-no-done = no-done; \
    model fuzz-first-error = first-event-error; \
    model fuzz-context = context-length-exceeded";

fn config() -> String {
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"
demo_requests_per_sec = 0

[[providers]]
name = "primary"
mock = "{PRIMARY}"

[[providers]]
name = "secondary"
mock = "healthy"

[[routes]]
match = "*"
targets = [
  {{ provider = "primary" }},
  {{ provider = "secondary", model = "backup-model" }},
]

[request]
max_body_bytes = 65536

[stream]
ttft_ms = 2000
idle_ms = 2000
total_ms = 10000
"#
    )
}

struct Shared {
    rt: tokio::runtime::Runtime,
    gateway: Gateway,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// The gateway of this test binary, started on first use.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let gateway = rt.block_on(async {
            let config = GatewayConfig::from_toml_str(&config()).expect("valid fuzz config");
            Gateway::start(config, GatewayOptions::new().quiet(true))
                .await
                .expect("gateway starts")
        });
        // A connection per request: a pooled connection the server has just closed (after a
        // 413, or at its keep-alive limit) would fail the next request on the client's side and
        // make cases depend on each other.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
        Shared {
            rt,
            gateway,
            client,
        }
    })
}

/// Model names: ordinary, fault-routed, and hostile (long, control characters, escapes,
/// non-ASCII, empty).
fn model() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            "gpt-4o",
            "gpt-4o-mini",
            "fuzz-429",
            "fuzz-reset",
            "fuzz-cut",
            "fuzz-malformed",
            "fuzz-no-done",
            "fuzz-first-error",
            "fuzz-context",
            "backup-model",
        ])
        .prop_map(|m| Value::String(m.to_owned())),
        2 => "[a-z0-9.-]{1,20}".prop_map(Value::String),
        1 => "\\PC{0,40}".prop_map(Value::String),
        1 => any::<String>().prop_map(Value::String),
        1 => Just(Value::String("\u{1b}[31mred\u{1b}[0m".to_owned())),
        1 => (257usize..2000).prop_map(|n| Value::String("m".repeat(n))),
        1 => Just(Value::String(String::new())),
        1 => prop_oneof![Just(Value::Null), Just(json!(42)), Just(json!(["gpt-4o"])), Just(json!({"a": 1}))],
    ]
}

/// `messages`: well-formed, odd, or not a list at all.
fn messages() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => "\\PC{0,64}".prop_map(|c| json!([{"role": "user", "content": c}])),
        1 => Just(json!([])),
        1 => Just(json!([{"role": "tool"}])),
        1 => Just(json!("hello")),
        1 => Just(Value::Null),
    ]
}

/// Request bodies: chat requests with arbitrary members, damaged ones, and raw bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let chat = || {
        (
            proptest::option::of(model()),
            proptest::option::of(prop_oneof![
                Just(json!(true)),
                Just(json!(false)),
                Just(json!("yes")),
                Just(json!(1))
            ]),
            proptest::option::of(messages()),
            proptest::option::of(prop_oneof![
                Just(json!(16)),
                Just(json!(-1)),
                Just(json!(1e300))
            ]),
            proptest::collection::btree_map("[a-z_]{1,8}", "\\PC{0,12}", 0..3),
        )
            .prop_map(|(model, stream, messages, max_tokens, extra)| {
                let mut body = serde_json::Map::new();
                for (k, v) in extra {
                    body.insert(k, Value::String(v));
                }
                let members = [
                    ("model", model),
                    ("stream", stream),
                    ("messages", messages),
                    ("max_tokens", max_tokens),
                ];
                for (k, v) in members {
                    if let Some(v) = v {
                        body.insert(k.to_owned(), v);
                    }
                }
                serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
            })
    };
    prop_oneof![
        8 => chat(),
        1 => (chat(), any::<prop::sample::Index>()).prop_map(|(b, at)| b[..at.index(b.len() + 1)].to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        1 => (65_000usize..70_000).prop_map(|n| {
            format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(n)).into_bytes()
        }),
    ]
}

/// Extra request headers: ordinary, odd and hostile ones (values the client can send). Not the
/// connection's own (`connection`, `expect`, framing): they are hyper's business, not the
/// request path's.
fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("content-type".to_owned()),
        Just("accept".to_owned()),
        Just("authorization".to_owned()),
        Just("openai-organization".to_owned()),
        Just("x-request-id".to_owned()),
        Just("accept-encoding".to_owned()),
        "x-[a-z-]{1,12}",
    ];
    let value = prop_oneof![
        Just("application/json".to_owned()),
        Just("text/event-stream".to_owned()),
        Just("Bearer sk-fuzz".to_owned()),
        Just("gzip, br".to_owned()),
        Just("keep-alive".to_owned()),
        "[ -~]{0,40}",
    ];
    proptest::collection::vec((name, value), 0..4)
}

fn method_and_path() -> impl Strategy<Value = (Method, String)> {
    prop_oneof![
        12 => Just((Method::POST, "/v1/chat/completions".to_owned())),
        1 => Just((Method::GET, "/v1/chat/completions".to_owned())),
        1 => Just((Method::POST, "/v1/models".to_owned())),
        1 => Just((Method::GET, "/v1/models".to_owned())),
        1 => Just((Method::POST, "/v1/completions".to_owned())),
        1 => "/[a-z0-9/._%-]{0,24}".prop_map(|p| (Method::POST, p)),
        1 => Just((Method::PUT, "/v1/chat/completions".to_owned())),
    ]
}

#[derive(Debug)]
struct Case {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    (method_and_path(), headers(), body()).prop_map(|((method, path), headers, body)| Case {
        method,
        path,
        headers,
        body,
    })
}

/// Send one request; the status, content type and whole body.
async fn send(
    shared: &Shared,
    method: Method,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Result<(StatusCode, String, Bytes), String> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", shared.gateway.addr()));
    for (name, value) in headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("the harness built a bad request: {e}"))?;
    let res = tokio::time::timeout(Duration::from_secs(30), shared.client.request(req))
        .await
        .map_err(|_| "no answer within 30 s".to_owned())?
        .map_err(|e| format!("{NO_ANSWER}: {e}"))?;
    let status = res.status();
    let content_type = res
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = tokio::time::timeout(Duration::from_secs(30), res.into_body().collect())
        .await
        .map_err(|_| "the body did not end within 30 s".to_owned())?
        .map_err(|e| format!("{BODY_FAILED}: {e}"))?
        .to_bytes();
    Ok((status, content_type, body))
}

const BODY_FAILED: &str = "the body failed";
const NO_ANSWER: &str = "no answer";

/// An OpenAI error object: `{"error":{"message": string, "type": string, ...}}`.
fn is_openai_error(value: &Value) -> bool {
    value
        .get("error")
        .is_some_and(|e| e["message"].is_string() && e["type"].is_string())
}

/// The answer to a chat request is a success or an OpenAI error; any other answer is an error
/// object with a 4xx/5xx status (`/health` and `/v1/models` answer JSON documents of their own).
fn check_answer(
    case: &Case,
    status: StatusCode,
    content_type: &str,
    body: &Bytes,
) -> Result<(), TestCaseError> {
    let shown = || String::from_utf8_lossy(&body[..body.len().min(600)]).into_owned();
    if status.is_success() && case.method == Method::GET && case.path == "/v1/models" {
        let json: Value = serde_json::from_slice(body)
            .map_err(|e| TestCaseError::fail(format!("/v1/models: {e}")))?;
        prop_assert_eq!(&json["object"], "list");
        return Ok(());
    }
    if status.is_success() {
        prop_assert!(
            case.method == Method::POST && case.path == "/v1/chat/completions",
            "{status} for {} {}: {}",
            case.method,
            case.path,
            shown()
        );
        if content_type.starts_with("text/event-stream") {
            let text = std::str::from_utf8(body)
                .map_err(|_| TestCaseError::fail("a stream that is not UTF-8"))?;
            let last = text
                .trim_end()
                .rsplit("\n\n")
                .next()
                .and_then(|event| event.strip_prefix("data: "))
                .unwrap_or("");
            let ends_well = last == "[DONE]"
                || serde_json::from_str::<Value>(last).is_ok_and(|v| is_openai_error(&v));
            prop_assert!(
                ends_well,
                "a stream that ends with neither [DONE] nor an error event: {}",
                shown()
            );
            prop_assert!(
                text.ends_with("\n\n"),
                "a stream cut inside an event: {}",
                shown()
            );
        } else {
            // The primary's cut, garbled and error-object 200s fail over too (the stream guard
            // reads and judges a JSON answer whole).
            let json: Value = serde_json::from_slice(body).map_err(|e| {
                TestCaseError::fail(format!("a 2xx that is not JSON ({e}): {}", shown()))
            })?;
            prop_assert_eq!(&json["object"], "chat.completion", "{}", shown());
            prop_assert!(json["choices"].is_array(), "{}", shown());
        }
        return Ok(());
    }
    prop_assert!(
        status.is_client_error() || status.is_server_error(),
        "status {status}: {}",
        shown()
    );
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        TestCaseError::fail(format!(
            "a {status} for {} {} that is not JSON ({e}): {:?}",
            case.method,
            case.path,
            shown()
        ))
    })?;
    prop_assert!(
        is_openai_error(&json),
        "a {status} that is not an OpenAI error: {}",
        shown()
    );
    Ok(())
}

#[test]
fn fuzz_gateway_request_path() {
    let shared = shared();
    let fresh = AtomicU64::new(0);
    fuzz("gateway_request_path", 256, case, |case| {
        shared.rt.block_on(async {
            match send(
                shared,
                case.method.clone(),
                &case.path,
                &case.headers,
                case.body.clone(),
            )
            .await
            {
                Ok((status, content_type, body)) => {
                    check_answer(&case, status, &content_type, &body)?
                }
                // An oversized body included: the gateway reads the rest before its 413.
                Err(e) => return Err(TestCaseError::fail(format!("the case: {e}"))),
            }
            // The gateway keeps serving, models it has not seen included.
            let model = format!("fuzz-fresh-{}", fresh.fetch_add(1, Ordering::Relaxed));
            let well_formed =
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
            let (status, _, body) = send(
                shared,
                Method::POST,
                "/v1/chat/completions",
                &[("content-type".to_owned(), "application/json".to_owned())],
                serde_json::to_vec(&well_formed).unwrap_or_default(),
            )
            .await
            .map_err(|e| TestCaseError::fail(format!("the follow-up request: {e}")))?;
            prop_assert_eq!(
                status,
                StatusCode::OK,
                "a well-formed request after the case failed: {}",
                String::from_utf8_lossy(&body)
            );
            Ok(())
        })
    });
}
