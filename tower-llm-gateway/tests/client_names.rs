//! Issue 21: each client key's name appears in the logs (the request span's `client` field) and
//! in `/metrics` (label `client`), never the key. A test binary of its own: it installs a
//! log subscriber for its thread.

mod gateway_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use http::StatusCode;

use gateway_support::*;

/// Log lines written by the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn the_key_name_never_the_key_is_in_logs_and_metrics() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    std::env::set_var(
        "TOWER_LLM_TEST_NAMED_KEYS",
        format!(
            "billing-svc=billing-key-123, search-svc=sha256:{}",
            sha256_hex("search-key-456")
        ),
    );
    let toml = with_gateway(
        &config("healthy", "healthy", ""),
        "api_keys_env = \"TOWER_LLM_TEST_NAMED_KEYS\"",
    );
    let gw = start(&toml).await;
    // Three answers for one client, two for the other: the usual answer's series is a held
    // handle (the recorder keeps every series here), and must count each.
    for (key, times) in [("billing-key-123", 3), ("search-key-456", 2)] {
        let auth = format!("Bearer {key}");
        for _ in 0..times {
            let reply = send(
                &gw,
                chat_request(&gw, "gpt-4o", false, &[("authorization", &auth)]),
            )
            .await;
            assert_eq!(reply.status, StatusCode::OK);
        }
    }
    // A chat request's log lines carry its request id (the handler's span; the router's
    // trace layer no longer wraps the chat route).
    let traced = chat_request(
        &gw,
        "gpt-4o",
        false,
        &[
            ("authorization", "Bearer billing-key-123"),
            ("x-request-id", "log-check-42"),
        ],
    );
    assert_eq!(send(&gw, traced).await.status, StatusCode::OK);
    // Another outcome of the same client: its own series, looked up per request.
    let mut no_model = chat_request(
        &gw,
        "gpt-4o",
        false,
        &[("authorization", "Bearer billing-key-123")],
    );
    *no_model.body_mut() = http_body_util::Full::new(bytes::Bytes::from_static(b"{}"));
    assert_eq!(send(&gw, no_model).await.status, StatusCode::BAD_REQUEST);
    let wrong = [("authorization", "Bearer wrong-key-789")];
    assert_eq!(
        send(&gw, chat_request(&gw, "gpt-4o", false, &wrong))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let metrics = get(&gw, "/metrics").await.text().to_owned();
    gw.shutdown().await.unwrap();
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();

    let finished = logs
        .lines()
        .find(|line| line.contains("log-check-42") && line.contains("finished processing request"))
        .unwrap_or_else(|| panic!("no line with the request id:\n{logs}"));
    assert!(finished.contains("billing-svc"), "{finished}");
    for (name, answered) in [("billing-svc", 4.0), ("search-svc", 2.0)] {
        assert_eq!(
            requests_total(&metrics, name, "success", "200"),
            Some(answered),
            "{name}'s answers:\n{metrics}"
        );
        assert!(
            logs.contains(&format!("client=\"{name}\""))
                || logs.contains(&format!("client={name}")),
            "{name} not in the logs:\n{logs}"
        );
    }
    assert_eq!(
        requests_total(&metrics, "billing-svc", "failure", "400"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        requests_total(&metrics, "search-svc", "failure", "400"),
        None
    );
    for secret in [
        "billing-key-123",
        "search-key-456",
        "wrong-key-789",
        &sha256_hex("search-key-456"),
    ] {
        assert!(!metrics.contains(secret), "a key in /metrics");
        assert!(!logs.contains(secret), "a key in the logs");
    }
}

/// The value of `tower_llm_gateway_requests_total` for `client` with `outcome`, `status` and
/// `fallback="none"`, if `/metrics` has that series.
fn requests_total(metrics: &str, client: &str, outcome: &str, status: &str) -> Option<f64> {
    let labels = [
        format!("client=\"{client}\""),
        format!("outcome=\"{outcome}\""),
        format!("status=\"{status}\""),
        "fallback=\"none\"".to_owned(),
    ];
    metrics
        .lines()
        .filter(|l| l.starts_with("tower_llm_gateway_requests_total{"))
        .find(|l| labels.iter().all(|label| l.contains(label.as_str())))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
