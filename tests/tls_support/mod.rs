//! Shared by `tests/tls.rs` and `tests/presets.rs`: a test CA made with rcgen, server
//! certificates it signs for the chaos mock, and its PEM written to a `ca_file`.

#![allow(dead_code)] // each test file uses a part of it

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use tower::ServiceExt;
use tower_llm::Stack;
use tower_llm_chaos::MockTls;

/// A certificate authority of the test's own.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
    /// Where its certificate is, as PEM: a provider's `ca_file`.
    pub ca_file: PathBuf,
}

static FILES: AtomicUsize = AtomicUsize::new(0);

impl TestCa {
    /// A new CA named `name`, its certificate written to a fresh file.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        let ca_file =
            std::env::temp_dir().join(format!("tower-llm-test-ca-{}-{n}.pem", std::process::id()));
        std::fs::write(&ca_file, cert.pem()).expect("write ca_file");
        TestCa { cert, key, ca_file }
    }

    /// The `ca_file` path as TOML text.
    pub fn ca_file_toml(&self) -> String {
        self.ca_file.display().to_string().replace('\\', "\\\\")
    }

    /// A server certificate for `names` (host names or IP addresses), signed by this CA, as the
    /// mock's TLS (HTTP/2 offered).
    pub fn server(&self, names: &[&str]) -> MockTls {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("server params");
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("server cert");
        MockTls::from_pem(&cert.pem(), &key.serialize_pem()).expect("mock tls")
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

/// A chat completion request for `model` (streamed when `stream`).
pub fn chat(model: &str, stream: bool) -> http::Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request")
}

/// Send `req` through `stack`: status, headers and the whole body as text.
pub async fn send(
    stack: &Stack<Full<Bytes>, tower_llm::client::UpstreamBody>,
    req: http::Request<Full<Bytes>>,
) -> (u16, http::HeaderMap, String) {
    let res = stack.clone().oneshot(req).await.expect("answer");
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}
