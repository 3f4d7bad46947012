//! Issue 21: the gateway reloads its keys on SIGHUP. A test binary with this single test: the
//! signal goes to the whole test process, and the gateway's handler is the only one.

mod gateway_support;

use std::time::{Duration, Instant};

use http::StatusCode;
use tower_llm_gateway::{Gateway, GatewayConfig, GatewayOptions};

use gateway_support::*;

#[tokio::test]
async fn sighup_reloads_the_keys_without_dropping_a_request_in_flight() {
    let dir = std::env::temp_dir().join(format!("tower-llm-gw-sighup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys");
    std::fs::write(&keys, "alice=alice-1\n").unwrap();
    let toml = with_gateway(
        &config("latency:500ms", "healthy", "[retry]\nenabled = false\n"),
        &format!("api_keys_file = \"{}\"", keys.display()),
    );
    let config = GatewayConfig::from_toml_str(&toml).unwrap();
    let gw = Gateway::start(config, GatewayOptions::new().quiet(true))
        .await
        .unwrap();

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = chat_request(&gw, "gpt-4o", false, &[("authorization", "Bearer alice-1")]);
    let in_flight = tokio::spawn(async move { client.request(req).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.mock("primary").unwrap().attempt_count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    std::fs::write(&keys, "bob=bob-1\n").unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    while gw.key_reloads() == 0 {
        assert!(Instant::now() < deadline, "no reload after SIGHUP");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let auth = |key: &str| format!("Bearer {key}");
    let alice = send(
        &gw,
        chat_request(&gw, "gpt-4o", false, &[("authorization", &auth("alice-1"))]),
    )
    .await;
    assert_eq!(alice.status, StatusCode::UNAUTHORIZED);
    let bob = send(
        &gw,
        chat_request(&gw, "gpt-4o", false, &[("authorization", &auth("bob-1"))]),
    )
    .await;
    assert_eq!(bob.status, StatusCode::OK);
    let res = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(res.status(), StatusCode::OK);
    gw.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
