//! The `mock-upstream` binary: binds, prints its address, serves the profile, logs attempts.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// Run the binary with `args` (stdout and stderr piped) until it prints its address: the child,
/// the address, and the rest of its stdout.
async fn start<I, A>(args: I) -> (Child, SocketAddr, tokio::io::Lines<BufReader<ChildStdout>>)
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run mock-upstream");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .expect("the binary prints its address")
        .unwrap()
        .unwrap();
    let addr: SocketAddr = first
        .strip_prefix("mock-upstream listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .parse()
        .unwrap();
    (child, addr, stdout)
}

#[tokio::test]
async fn the_binary_serves_a_profile_from_the_command_line() {
    let (mut child, addr, mut stdout) = start([
        "--listen",
        "127.0.0.1:0",
        "--profile",
        "model gpt-bad=status:500:retry-after=3",
    ])
    .await;
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let second = stdout.next_line().await.unwrap().unwrap();
    assert_eq!(
        second,
        format!("base URL http://{addr}/v1 (profile: model gpt-bad=status:500:retry-after=3; default=healthy)")
    );

    let res = ask(addr, "gpt-bad", false).await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["retry-after"], "3");
    let res = ask(addr, "gpt-4o", true).await.unwrap();
    assert_eq!(res.status(), 200);
    let (body, _) = read_body(res).await;
    assert_eq!(
        sse_text(&sse_data(&body)),
        tower_llm_chaos::CANONICAL_ANSWER
    );

    let line = stderr.next_line().await.unwrap().unwrap();
    assert!(
        line.ends_with("#1 model=gpt-bad stream=false fault=status status=500"),
        "{line}"
    );
    let line = stderr.next_line().await.unwrap().unwrap();
    assert!(
        line.ends_with("#2 model=gpt-4o stream=true fault=healthy status=200"),
        "{line}"
    );
    assert!(!line.contains("resilient"), "no prompt text in the log");

    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_bad_profile_is_reported_with_the_offending_part() {
    let output = Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args(["--listen", "127.0.0.1:0", "--profile", "model x=status:42"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--profile: invalid fault profile, clause 1 (`model x=status:42`): `42`: status must be in 200..=999"), "{stderr}");
}

#[tokio::test]
async fn the_binary_continues_a_prefill_of_the_alternate_answer() {
    let (mut child, addr, mut stdout) = start([
        "--listen",
        "127.0.0.1:0",
        "--prefill",
        "continue",
        "--answer=alternate",
        "--quiet",
    ])
    .await;
    let second = stdout.next_line().await.unwrap().unwrap();
    assert_eq!(
        second,
        format!(
            "base URL http://{addr}/v1 (profile: default=healthy), prefill: continue, answer: alternate"
        )
    );

    let sent = "Resilience is the hab";
    let body = serde_json::json!({"model": "m", "stream": true, "messages": [
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": sent},
    ]});
    let req = http::Request::post(tower_llm_chaos::upstream::COMPLETIONS_PATH)
        .header("host", addr.to_string())
        .body(http_body_util::Full::from(body.to_string()))
        .unwrap();
    let res = connect(addr).await.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let (body, _) = read_body(res).await;
    assert_eq!(
        sse_text(&sse_data(&body)),
        tower_llm_chaos::ALTERNATE_ANSWER[sent.len()..]
    );

    child.kill().await.unwrap();
}

/// `--tls-cert`/`--tls-key` serve https with HTTP/2 offered by ALPN; `--no-http2` offers only
/// HTTP/1.1. A client that trusts the test's CA completes the handshake and gets an answer.
#[cfg(feature = "tls")]
#[tokio::test]
async fn the_binary_serves_https_with_the_given_certificate() {
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mock-upstream test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("mock-upstream-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();

    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    for (extra, alpn) in [(None, "h2"), (Some("--no-http2"), "http/1.1")] {
        let mut args = vec![
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--quiet".to_owned(),
            "--tls-cert".to_owned(),
            cert_file.display().to_string(),
            "--tls-key".to_owned(),
            key_file.display().to_string(),
        ];
        args.extend(extra.map(str::to_owned));
        let (mut child, addr, mut stdout) = start(&args).await;
        let second = stdout.next_line().await.unwrap().unwrap();
        assert_eq!(
            second,
            format!("base URL https://{addr}/v1 (profile: default=healthy)")
        );

        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn.as_bytes()));
        if alpn == "http/1.1" {
            let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
            let head = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            tls.write_all(head.as_bytes()).await.unwrap();
            let mut answer = String::new();
            tls.read_to_string(&mut answer).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
            assert!(answer.contains(r#""object":"chat.completion""#), "{answer}");
        }
        child.kill().await.unwrap();
    }

    for (flags, message) in [
        (vec!["--tls-cert", "c.pem"], "--tls-cert needs --tls-key"),
        (
            vec![
                "--tls-cert",
                "/nonexistent/c.pem",
                "--tls-key",
                "/nonexistent/k.pem",
            ],
            "--tls-cert: cannot read `/nonexistent/c.pem`",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(message), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
