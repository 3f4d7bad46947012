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
    for key in ["billing-key-123", "search-key-456"] {
        let auth = format!("Bearer {key}");
        let reply = send(
            &gw,
            chat_request(&gw, "gpt-4o", false, &[("authorization", &auth)]),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
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

    for name in ["billing-svc", "search-svc"] {
        assert!(
            metrics.contains(&format!("client=\"{name}\"")),
            "no `client` label {name} in:\n{metrics}"
        );
        assert!(
            logs.contains(&format!("client=\"{name}\""))
                || logs.contains(&format!("client={name}")),
            "{name} not in the logs:\n{logs}"
        );
    }
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
