//! https upstreams through `StackBuilder::build_http` (issue 16): the chaos mock served over TLS
//! with a certificate from a CA made in the test, trusted through the provider's `ca_file`.
//! JSON and SSE answers, HTTP/1.1 by default and HTTP/2 when a provider opts in and the server
//! offers it (asserted on the mock's side), streams past the server's HTTP/2 stream limit, a
//! stream cut over https finished on the secondary, failover between https and http targets,
//! and TLS failures that are `transport` failures naming TLS and bench the target. All on
//! loopback.

mod tls_support;

use std::time::Duration;

use bytes::Bytes;
use http::Version;
use http_body_util::Full;
use tls_support::{chat, send, TestCa};
use tower::ServiceExt;
use tower_llm::core::{classify_error, ErrorKind};
use tower_llm::{StackBuilder, StackConfig};
use tower_llm_chaos::{Fault, MockTls, MockUpstream, CANONICAL_ANSWER};

/// One https provider `tls` (the mock's URL, `ca_file`, `extra` keys) and a route to it.
fn one_provider(url: &str, ca: &TestCa, extra: &str) -> StackConfig {
    StackConfig::from_toml_str(&format!(
        r#"
[[providers]]
name = "tls"
base_url = "{url}"
ca_file = "{ca}"
{extra}

[[routes]]
match = "*"
targets = [{{ provider = "tls", model = "m" }}]
"#,
        ca = ca.ca_file_toml()
    ))
    .expect("config")
}

async fn mock(tls: MockTls) -> MockUpstream {
    MockUpstream::builder()
        .tls(tls)
        .start()
        .await
        .expect("mock")
}

#[tokio::test]
async fn json_and_sse_over_https_negotiate_http2_when_the_provider_opts_in() {
    let ca = TestCa::new("tower-llm test CA");
    let upstream = mock(ca.server(&["127.0.0.1"])).await;
    assert!(upstream.base_url().starts_with("https://"));
    let config = one_provider(&upstream.base_url(), &ca, "http2 = true");
    let stack = StackBuilder::new(&config)
        .build_http::<Full<Bytes>>()
        .expect("stack");

    let (status, headers, body) = send(&stack, chat("gpt-4o", false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-llm-target"], "tls/m");
    assert!(body.contains(CANONICAL_ANSWER), "{body}");

    let (status, headers, body) = send(&stack, chat("gpt-4o", true)).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(body.contains("data: [DONE]"), "{body}");

    let attempts = upstream.attempts();
    assert_eq!(attempts.len(), 2);
    for attempt in &attempts {
        assert_eq!(attempt.version, Version::HTTP_2, "the server saw h2");
        assert_eq!(attempt.path, "/v1/chat/completions");
    }
    assert!(attempts[1].stream);
}

#[tokio::test]
async fn http1_by_default_or_when_the_server_does_not_offer_h2() {
    let ca = TestCa::new("tower-llm test CA");
    // The server offers only http/1.1 and the provider opts in to h2; the server offers h2 and
    // the provider keeps the default (`http2 = false`), or says so.
    for (offers_h2, extra) in [(false, "http2 = true"), (true, ""), (true, "http2 = false")] {
        let upstream = mock(ca.server(&["127.0.0.1"]).http2(offers_h2)).await;
        let config = one_provider(&upstream.base_url(), &ca, extra);
        let stack = StackBuilder::new(&config)
            .build_http::<Full<Bytes>>()
            .expect("stack");
        for stream in [false, true] {
            let (status, _, body) = send(&stack, chat("gpt-4o", stream)).await;
            assert_eq!(status, 200, "{body}");
            assert!(body.contains(if stream { "[DONE]" } else { CANONICAL_ANSWER }));
        }
        let attempts = upstream.attempts();
        assert_eq!(attempts.len(), 2);
        assert!(
            attempts.iter().all(|a| a.version == Version::HTTP_11),
            "{extra:?}"
        );
    }
}

/// Long streams past the server's HTTP/2 stream limit (hyper's server allows 200 per connection,
/// as providers' edges allow 100 to 250). With `http2 = true` every request to the host shares one
/// connection, and the 201st waits for one of the 200 open streams to end: with minute-long
/// answers, a stall. With the default (HTTP/1.1, a connection per answer in flight) it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_servers_stream_limit_http2_waits_and_the_default_does_not() {
    const LIMIT: usize = 200;
    let ca = TestCa::new("tower-llm test CA");
    for (extra, waits) in [("http2 = true", true), ("", false)] {
        let upstream = mock(ca.server(&["127.0.0.1"])).await;
        // Tables after the provider's keys: no bulkhead, streams that may idle (TOML takes
        // `[[routes]]` after them).
        let keys = format!(
            "{extra}\n[bulkhead]\nenabled = false\n[stream]\nidle_ms = 600000\ntotal_ms = 600000\n"
        );
        let config = one_provider(&upstream.base_url(), &ca, &keys);
        let stack = StackBuilder::new(&config)
            .build_http::<Full<Bytes>>()
            .expect("stack");
        // One answer first: its connection is in the pool before the streams start (200 requests
        // on a cold client may each start a connection, HTTP/2 ones included).
        let (status, _, _) = send(&stack, chat("m", false)).await;
        assert_eq!(status, 200);
        // One content event, then silence with the stream open.
        upstream.set_default_fault(Fault::Stall { after: 1 });
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..LIMIT {
            opening.spawn(stack.clone().oneshot(chat("m", true)));
        }
        // Each answer is kept, unread: its stream stays open.
        let mut open = Vec::new();
        while let Some(answer) = opening.join_next().await {
            let answer = answer.expect("task").expect("an answer");
            assert_eq!(answer.status(), 200, "{extra:?}");
            open.push(answer);
        }
        // HTTP/2: one connection for all; HTTP/1.1: one per open stream (and the first answer's,
        // reused by one of them).
        assert_eq!(upstream.open_connections(), if waits { 1 } else { LIMIT });
        let mut next = tokio::spawn(stack.clone().oneshot(chat("m", true)));
        if waits {
            let early = tokio::time::timeout(Duration::from_millis(500), &mut next).await;
            assert!(
                early.is_err(),
                "over one HTTP/2 connection the next stream waits"
            );
            // One stream ends: its slot goes to the waiting request.
            drop(open.pop());
        }
        // Over HTTP/1.1 it answers with all 200 streams still open.
        let answer = tokio::time::timeout(Duration::from_secs(30), next)
            .await
            .expect("answered")
            .expect("task")
            .expect("an answer");
        assert_eq!(answer.status(), 200);
        assert_eq!(open.len(), if waits { LIMIT - 1 } else { LIMIT });
        let versions: Vec<_> = upstream.attempts().iter().map(|a| a.version).collect();
        assert_eq!(versions.len(), LIMIT + 2);
        let expected = if waits {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        assert!(versions.iter().all(|v| *v == expected), "{extra:?}");
    }
}

/// A stream cut mid-answer over https, on the default HTTP/1.1 connections (the mock offers h2):
/// the cut is seen as over `http` (the peer closes the TLS connection), and the secondary
/// finishes the answer in the same response: the whole text once, one `[DONE]`, no error event.
#[tokio::test]
async fn a_stream_cut_over_https_is_finished_on_the_secondary() {
    let ca = TestCa::new("tower-llm test CA");
    let primary = mock(ca.server(&["127.0.0.1"])).await;
    let secondary = mock(ca.server(&["127.0.0.1"])).await;
    primary.set_default_fault(Fault::CutAfter(3));
    let config = StackConfig::from_toml_str(&format!(
        r#"
[[providers]]
name = "primary"
base_url = "{primary}"
ca_file = "{ca}"

[[providers]]
name = "secondary"
base_url = "{secondary}"
ca_file = "{ca}"

[[routes]]
match = "*"
targets = [{{ provider = "primary", model = "m" }}, {{ provider = "secondary", model = "m" }}]
"#,
        primary = primary.base_url(),
        secondary = secondary.base_url(),
        ca = ca.ca_file_toml()
    ))
    .expect("config");
    let stack = StackBuilder::new(&config)
        .build_http::<Full<Bytes>>()
        .expect("stack");
    let (status, headers, body) = send(&stack, chat("gpt-4o", true)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers["x-llm-target"], "primary/m",
        "committed to the primary first"
    );
    let mut text = String::new();
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let event: serde_json::Value = serde_json::from_str(data).expect("a JSON event");
        assert!(event.get("error").is_none(), "no error event: {body}");
        if let Some(delta) = event["choices"][0]["delta"]["content"].as_str() {
            text.push_str(delta);
        }
    }
    assert_eq!(text, CANONICAL_ANSWER, "{body}");
    assert_eq!(body.matches("data: [DONE]").count(), 1, "{body}");
    assert!(body.contains(": resumed on secondary/m"), "{body}");
    for upstream in [&primary, &secondary] {
        let attempts = upstream.attempts();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].version, Version::HTTP_11);
    }
}

#[tokio::test]
async fn failover_from_https_to_http_and_back() {
    let ca = TestCa::new("tower-llm test CA");
    let secure = mock(ca.server(&["127.0.0.1"])).await;
    let plain = MockUpstream::builder().start().await.expect("mock");
    let config = StackConfig::from_toml_str(&format!(
        r#"
[[providers]]
name = "secure"
base_url = "{secure}"
ca_file = "{ca}"

[[providers]]
name = "plain"
base_url = "{plain}"

[[routes]]
match = "a-*"
targets = [{{ provider = "secure", model = "s" }}, {{ provider = "plain", model = "p" }}]

[[routes]]
match = "b-*"
targets = [{{ provider = "plain", model = "p2" }}, {{ provider = "secure", model = "s2" }}]
"#,
        secure = secure.base_url(),
        plain = plain.base_url(),
        ca = ca.ca_file_toml()
    ))
    .expect("config");
    let stack = StackBuilder::new(&config)
        .build_http::<Full<Bytes>>()
        .expect("stack");

    // https down: the http target answers.
    secure.set_default_fault(Fault::status(503));
    let (status, headers, _) = send(&stack, chat("a-1", false)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-llm-target"], "plain/p");
    assert_eq!(headers["x-llm-fallback"], "target");
    assert_eq!(secure.attempts()[0].status, Some(503));

    // http down: the https target answers, streaming (over HTTP/1.1, the default).
    secure.set_default_fault(Fault::Healthy);
    plain.set_default_fault(Fault::status(503));
    let (status, headers, body) = send(&stack, chat("b-1", true)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-llm-target"], "secure/s2");
    assert!(body.contains("[DONE]"));
    let last = secure.attempts().pop().expect("an https attempt");
    assert_eq!(
        (last.model.as_str(), last.version),
        ("s2", Version::HTTP_11)
    );
}

/// The stack's error for one request, the kind `classify_error` gives it, and the text of its
/// whole source chain.
async fn failure(
    config: &StackConfig,
) -> (
    ErrorKind,
    String,
    tower_llm::Stack<Full<Bytes>, tower_llm::client::UpstreamBody>,
) {
    let stack = StackBuilder::new(config)
        .build_http::<Full<Bytes>>()
        .expect("stack");
    let err = stack
        .clone()
        .oneshot(chat("gpt-4o", false))
        .await
        .expect_err("no target can answer");
    let kind = classify_error(&*err).kind;
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(" / ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    (kind, text, stack)
}

#[tokio::test]
async fn a_wrong_ca_is_a_transport_failure_naming_tls_that_benches_the_target() {
    let ca = TestCa::new("tower-llm test CA");
    let stranger = TestCa::new("someone else's CA");
    let upstream = mock(ca.server(&["127.0.0.1"])).await;
    let config = one_provider(&upstream.base_url(), &stranger, "");
    let (kind, text, stack) = failure(&config).await;
    assert_eq!(kind, ErrorKind::Transport, "{text}");
    assert!(text.contains("TLS handshake with 127.0.0.1:"), "{text}");
    assert!(text.contains("unknown issuer"), "{text}");
    assert_eq!(
        upstream.attempt_count(),
        0,
        "no request went over the failed handshake"
    );

    let health = stack.health();
    let target = health.target("tls/m").expect("target in health");
    assert_eq!(target.failures, 1);
    assert_eq!(target.last_error_kind.as_deref(), Some("transport"));
    assert!(!target.available, "benched like any transport failure");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_name_mismatch() {
    let ca = TestCa::new("tower-llm test CA");
    let upstream = mock(ca.server(&["other.example"])).await;
    let config = one_provider(&upstream.base_url(), &ca, "");
    let (kind, text, _) = failure(&config).await;
    assert_eq!(kind, ErrorKind::Transport, "{text}");
    assert!(text.contains("name mismatch"), "{text}");
}

#[tokio::test]
async fn the_bundled_roots_alone_do_not_trust_a_private_ca() {
    let ca = TestCa::new("tower-llm test CA");
    let upstream = mock(ca.server(&["127.0.0.1"])).await;
    let config = StackConfig::from_toml_str(&format!(
        "[[providers]]\nname = \"tls\"\nbase_url = \"{}\"\n\n[[routes]]\nmatch = \"*\"\n\
         targets = [{{ provider = \"tls\", model = \"m\" }}]\n",
        upstream.base_url()
    ))
    .expect("config");
    let (kind, text, _) = failure(&config).await;
    assert_eq!(kind, ErrorKind::Transport);
    assert!(text.contains("unknown issuer"), "{text}");
}

#[tokio::test]
async fn an_unreadable_ca_file_stops_the_build_naming_the_key() {
    let config = StackConfig::from_toml_str(
        r#"
[[providers]]
name = "tls"
base_url = "https://127.0.0.1:9/v1"
ca_file = "/nonexistent/tower-llm/ca.pem"

[[routes]]
match = "*"
targets = [{ provider = "tls", model = "m" }]
"#,
    )
    .expect("config");
    let err = StackBuilder::new(&config)
        .build_http::<Full<Bytes>>()
        .expect_err("no such file");
    assert_eq!(err.key(), "providers[0].ca_file");
    assert_eq!(err.line(), Some(5));
    assert!(
        err.to_string().contains("/nonexistent/tower-llm/ca.pem"),
        "{err}"
    );
}

/// `connect_timeout_ms` covers the TLS handshake, not only the TCP connect: an upstream that
/// accepts the connection and never answers the ClientHello is a `timeout` failure after it.
#[tokio::test(start_paused = true)]
async fn a_handshake_that_never_completes_times_out_within_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream); // never read, never written: the handshake hangs
        }
    });
    let ca = TestCa::new("tower-llm test CA");
    let config = one_provider(
        &format!("https://{addr}/v1"),
        &ca,
        "connect_timeout_ms = 200",
    );
    let started = tokio::time::Instant::now();
    let (kind, text, _) = failure(&config).await;
    assert_eq!(kind, ErrorKind::Timeout, "{text}");
    assert!(text.contains("took longer than 200 ms"), "{text}");
    // Each attempt (the last target standing is retried) waited its 200 ms: TCP was up, only
    // the handshake hung.
    let attempts = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(attempts >= 1, "TCP connected");
    assert!(started.elapsed() >= std::time::Duration::from_millis(200) * attempts as u32);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "not the attempt timeout"
    );
}
