//! The gateway with an https provider trusted through `ca_file` (issue 16): the chaos mock served
//! over TLS with a certificate from a CA made here. JSON and streamed answers through the
//! gateway, HTTP/1.1 to the upstream (the default, though the mock offers h2), and a provider whose certificate the gateway cannot trust
//! failing over as a `transport` failure. All on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::Value;
use tower_llm_chaos::{MockTls, MockUpstream, CANONICAL_ANSWER};
use tower_llm_gateway::{Gateway, GatewayConfig, GatewayOptions};

/// A CA (its PEM written to a file) and a loopback server certificate it signed.
fn pki(name: &str) -> (std::path::PathBuf, MockTls) {
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let ca_key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    let path = std::env::temp_dir().join(format!(
        "tower-llm-gateway-ca-{}-{}.pem",
        std::process::id(),
        FILES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let tls = MockTls::from_pem(&leaf.pem(), &key.serialize_pem()).unwrap();
    (path, tls)
}

async fn post(gw: &Gateway, model: &str, stream: bool) -> (u16, http::HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let req = http::Request::post(format!("{}/chat/completions", gw.base_url()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = client.request(req).await.expect("gateway answers");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn an_https_provider_with_ca_file_serves_answers_through_the_gateway() {
    let (ca_file, tls) = pki("tower-llm gateway test CA");
    let (stranger_file, stranger_tls) = pki("a CA the gateway is not told about");
    let upstream = MockUpstream::builder().tls(tls).start().await.unwrap();
    // Serves a certificate the gateway cannot trust (its CA is not in `untrusted`'s ca_file).
    let untrusted = MockUpstream::builder()
        .tls(stranger_tls)
        .start()
        .await
        .unwrap();
    let toml = format!(
        r#"
[gateway]
listen = "127.0.0.1:0"
demo_requests_per_sec = 0
# Loopback only: no client keys needed for this test.
allow_unauthenticated = true

[[providers]]
name = "untrusted"
base_url = "{untrusted}"
ca_file = "{ca}"

[[providers]]
name = "secure"
base_url = "{secure}"
ca_file = "{ca}"

[[routes]]
match = "*"
targets = [{{ provider = "untrusted", model = "u" }}, {{ provider = "secure", model = "s" }}]
"#,
        untrusted = untrusted.base_url(),
        secure = upstream.base_url(),
        ca = ca_file.display(),
    );
    let config = GatewayConfig::from_toml_str(&toml).expect("config");
    let gw = Gateway::start(config, GatewayOptions::new().quiet(true))
        .await
        .expect("gateway starts");

    let (status, headers, body) = post(&gw, "gpt-4o", false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-llm-target"], "secure/s");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["choices"][0]["message"]["content"], CANONICAL_ANSWER);

    let (status, _, body) = post(&gw, "gpt-4o", true).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("data: [DONE]"), "{body}");

    assert_eq!(
        untrusted.attempt_count(),
        0,
        "no request crossed a failed handshake"
    );
    let attempts = upstream.attempts();
    assert!(!attempts.is_empty());
    // `http2` defaults to false: HTTP/1.1 although the mock offers h2.
    assert!(attempts.iter().all(|a| a.version == http::Version::HTTP_11));

    let health = gw.stack().health();
    let target = health.target("untrusted/u").expect("in health");
    assert_eq!(target.last_error_kind.as_deref(), Some("transport"));
    assert!(!target.available, "benched like any transport failure");
    drop(gw);
    let _ = std::fs::remove_file(ca_file);
    let _ = std::fs::remove_file(stranger_file);
}
