//! Helpers shared by the gateway tests: start a gateway in-process (on `127.0.0.1:0`, with its
//! embedded mock upstreams on the same runtime) and talk to it over real loopback HTTP.

#![allow(dead_code)] // each test file uses a part of it

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tower_llm_gateway::{Gateway, GatewayConfig, GatewayOptions};

/// Two providers (`primary`, passing the requested model through, then `secondary` answering
/// with `backup-model`) on embedded mocks with the given fault profiles, request bodies up to
/// 64 KiB, plus `extra` sections.
pub fn config(primary: &str, secondary: &str, extra: &str) -> String {
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"
demo_requests_per_sec = 0

[[providers]]
name = "primary"
mock = "{primary}"

[[providers]]
name = "secondary"
mock = "{secondary}"

[[routes]]
match = "*"
targets = [
  {{ provider = "primary" }},
  {{ provider = "secondary", model = "backup-model" }},
]

[request]
max_body_bytes = 65536
{extra}
"#
    )
}

/// Start a gateway for `toml` (no status line, no demo traffic).
pub async fn start(toml: &str) -> Gateway {
    let config = GatewayConfig::from_toml_str(toml).expect("valid test config");
    Gateway::start(config, GatewayOptions::new().quiet(true))
        .await
        .expect("gateway starts")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Assert an OpenAI-shaped error and return its `error` object.
    pub fn openai_error(&self) -> Value {
        let json = self.json();
        let error = json.get("error").cloned().expect("an `error` object");
        assert!(error["message"].is_string(), "{json}");
        assert!(error["type"].is_string(), "{json}");
        assert!(error.get("code").is_some(), "{json}");
        error
    }
}

/// Send a request to the gateway.
pub async fn send(gw: &Gateway, req: http::Request<Full<Bytes>>) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let res = client.request(req).await.expect("the gateway answers");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("whole body").to_bytes();
    let _ = gw;
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A chat request for `model` (`stream` as given) with extra headers.
pub fn chat_request(
    gw: &Gateway,
    model: &str,
    stream: bool,
    headers: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    let body = serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{ "role": "user", "content": "Say hello." }],
    });
    let mut req = http::Request::post(format!("{}/chat/completions", gw.base_url()))
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::from(body.to_string())))
        .expect("valid request")
}

/// POST a JSON chat request for `model`.
pub async fn chat(gw: &Gateway, model: &str) -> Reply {
    send(gw, chat_request(gw, model, false, &[])).await
}

/// GET `path` on the gateway.
pub async fn get(gw: &Gateway, path: &str) -> Reply {
    let req = http::Request::get(format!("http://{}{path}", gw.addr()))
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    send(gw, req).await
}

/// `/health` as JSON.
pub async fn health(gw: &Gateway) -> Value {
    get(gw, "/health").await.json()
}

/// The entry of target `name` in a `/health` document.
pub fn target<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["targets"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no target {name} in {health}"))
}

/// Let spawned tasks (server connections, mock handlers) run.
pub async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// `toml` with `lines` added to its `[gateway]` table (made by [`config`]).
pub fn with_gateway(toml: &str, lines: &str) -> String {
    toml.replacen(
        "demo_requests_per_sec = 0",
        &format!("demo_requests_per_sec = 0\n{lines}"),
        1,
    )
}

/// GET `path` on the gateway with `Authorization: Bearer <key>`.
pub async fn get_with_key(gw: &Gateway, path: &str, key: &str) -> Reply {
    let req = http::Request::get(format!("http://{}{path}", gw.addr()))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    send(gw, req).await
}

/// The lowercase hex SHA-256 of `key`, as `[[gateway.keys]]` and `sha256:` entries take it.
pub fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
