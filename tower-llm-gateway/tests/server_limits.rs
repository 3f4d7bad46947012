//! Issue 15, findings 3, 5 and 7: the server's limits over real loopback TCP (header-read
//! timeout, idle keep-alive connections, the connection cap, shutdown within a grace period
//! that then saves the health state), the embedded mocks' bounded attempt logs, and the demo
//! rate's bound. Paused clocks: each timeout passes as soon as nothing else can happen.

mod gateway_support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_llm_gateway::{Gateway, GatewayConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

use gateway_support::*;

/// Read until the peer closes (or resets) the connection; what was read.
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn half_a_request_head_is_disconnected_after_the_header_read_timeout() {
    let toml = with_gateway(
        &config("healthy", "healthy", ""),
        "header_read_timeout_ms = 2000",
    );
    let gw = start(&toml).await;
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: appl")
        .await
        .unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(600), read_until_closed(&mut tcp))
        .await
        .expect("the gateway closes the connection");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    gw.shutdown().await.unwrap();
}

/// A connection to `gw` kept alive after one answer (`GET /health`): its request sender (the
/// connection closes when it is dropped) and the task driving it, which ends when the gateway
/// closes the connection.
async fn kept_alive_after_one_answer(
    gw: &Gateway,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/health")
        .header("host", "gateway")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();
    (sender, conn)
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed() {
    let toml = with_gateway(
        &config("healthy", "healthy", ""),
        "header_read_timeout_ms = 5000",
    );
    let gw = start(&toml).await;
    let (_sender, conn) = kept_alive_after_one_answer(&gw).await;
    let idle_since = Instant::now();
    // The connection is kept alive, then closed by the gateway when idle for 5 s.
    tokio::time::timeout(Duration::from_secs(600), conn)
        .await
        .expect("the gateway closes the idle connection")
        .unwrap()
        .unwrap();
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_secs(5) && idle < Duration::from_secs(6),
        "{idle:?}"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn past_the_connection_cap_a_connection_waits_until_one_closes() {
    let toml = with_gateway(&config("healthy", "healthy", ""), "max_connections = 2");
    let gw = start(&toml).await;
    let first = TcpStream::connect(gw.addr()).await.unwrap();
    let _second = TcpStream::connect(gw.addr()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        while gw.open_connections() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("both connections accepted");

    let mut third = TcpStream::connect(gw.addr()).await.unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let waited = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf)).await;
    assert!(waited.is_err(), "served past the cap: {waited:?}");
    assert_eq!(gw.open_connections(), 2);

    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(600), read_until_closed(&mut third))
        .await
        .expect("served once a connection closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_waiting_after_the_grace_period_and_saves_health() {
    let dir = std::env::temp_dir().join(format!("tower-llm-gw-grace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("health.json");
    let _ = std::fs::remove_file(&file);
    let extra = format!(
        "[retry]\nenabled = false\n[health]\nfile = \"{}\"\n",
        file.display()
    );
    let toml = with_gateway(
        &config("hang", "healthy", &extra),
        "shutdown_grace_ms = 3000",
    );
    let gw = start(&toml).await;

    // A request hangs on the primary (its attempt timeout is the default 30 s).
    let req = chat_request(&gw, "gpt-4o", false, &[]);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let in_flight = tokio::spawn(async move { client.request(req).await });
    while gw.mock("primary").unwrap().attempt_count() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let started = Instant::now();
    let saved = gw.shutdown().await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(saved.as_deref(), Some(file.as_path()));
    assert!(file.exists(), "health saved");
    let cut = in_flight.await.unwrap();
    assert!(
        cut.is_err(),
        "the hanging request's connection was closed: {cut:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Graceful shutdown over loopback: an idle keep-alive connection is closed at once, a busy one
/// gets its answer, and the shutdown ends when that answer is sent, well inside the grace period.
#[tokio::test(start_paused = true)]
async fn shutdown_closes_idle_connections_at_once_and_lets_busy_ones_answer() {
    let toml = with_gateway(
        &config("latency:2s", "healthy", "[retry]\nenabled = false\n"),
        "shutdown_grace_ms = 10000\nheader_read_timeout_ms = 60000",
    );
    let gw = start(&toml).await;

    let (_idle_sender, idle_conn) = kept_alive_after_one_answer(&gw).await;

    // A busy connection: its answer comes 2 s after the request.
    let req = chat_request(&gw, "gpt-4o", false, &[]);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let busy = tokio::spawn(async move {
        let res = client.request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        Ok::<_, BoxError>((status, body, Instant::now()))
    });
    while gw.mock("primary").unwrap().attempt_count() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let started = Instant::now();
    let shutdown = tokio::spawn(gw.shutdown());
    tokio::time::timeout(Duration::from_secs(600), idle_conn)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "closed at once: {:?}",
        started.elapsed()
    );

    let (status, body, answered) = busy.await.unwrap().expect("the busy request is answered");
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        json["choices"][0]["message"]["content"].is_string(),
        "{json}"
    );
    shutdown.await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(answered.duration_since(started) < Duration::from_secs(3));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(3),
        "ended with the busy answer, not the 10 s grace: {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn embedded_mocks_keep_a_bounded_attempt_log() {
    let toml = with_gateway(
        &config("healthy", "healthy", "[retry]\nenabled = false\n"),
        "mock_logged_attempts = 3",
    );
    let gw = start(&toml).await;
    for _ in 0..5 {
        assert_eq!(chat(&gw, "gpt-4o").await.status, StatusCode::OK);
    }
    let primary = gw.mock("primary").unwrap();
    assert_eq!(primary.attempt_count(), 5);
    let kept: Vec<u64> = primary.attempts().iter().map(|a| a.seq).collect();
    assert_eq!(kept, [3, 4, 5], "the oldest are dropped");
    gw.shutdown().await.unwrap();

    // The default bound.
    let config = GatewayConfig::from_toml_str(&config("healthy", "healthy", "")).unwrap();
    assert_eq!(config.gateway.mock_logged_attempts, 1000);
}

#[test]
fn server_limits_and_the_demo_rate_are_validated_at_load() {
    for (lines, key, message) in [
        (
            "demo_requests_per_sec = 10001",
            "gateway.demo_requests_per_sec",
            "10000",
        ),
        (
            "demo_requests_per_sec = 4000000000",
            "gateway.demo_requests_per_sec",
            "10000",
        ),
        (
            "max_connections = 0",
            "gateway.max_connections",
            "at least 1",
        ),
        (
            "header_read_timeout_ms = 0",
            "gateway.header_read_timeout_ms",
            "at least 1",
        ),
    ] {
        // The helper's own `demo_requests_per_sec = 0` is replaced, not duplicated.
        let toml = config("healthy", "healthy", "").replace("demo_requests_per_sec = 0", lines);
        let err = GatewayConfig::from_toml_str(&toml).unwrap_err();
        assert_eq!(err.key(), key, "{err}");
        assert!(err.to_string().contains(message), "{err}");
    }
    let toml = config("healthy", "healthy", "")
        .replace("demo_requests_per_sec = 0", "demo_requests_per_sec = 10000");
    assert_eq!(
        GatewayConfig::from_toml_str(&toml)
            .unwrap()
            .gateway
            .demo_requests_per_sec,
        10_000
    );
}
