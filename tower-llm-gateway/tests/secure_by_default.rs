//! Issue 21 (secure by default) and issue 15 finding 8 (admin endpoints), over real loopback
//! HTTP: a real provider without client keys is refused at start, unless allowed (with a
//! warning off loopback); mocks only start as before; keys by SHA-256 digest; keys reloaded
//! without dropping a request in flight, a failed reload keeping the old set; admin keys for
//! `/health` details and `/metrics`.

mod gateway_support;

use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;
use tower_llm_chaos::MockUpstream;
use tower_llm_gateway::{Gateway, GatewayConfig, GatewayOptions, KeyReload};

use gateway_support::*;

/// A gateway whose only provider, `real`, is a real upstream at `base_url` (not an embedded
/// mock), with `lines` in `[gateway]`.
fn real_config(base_url: &str, listen: &str, lines: &str) -> String {
    format!(
        r#"
[gateway]
listen = "{listen}"
{lines}

[[providers]]
name = "real"
base_url = "{base_url}"

[[routes]]
match = "*"
targets = [{{ provider = "real" }}]

[retry]
enabled = false
"#
    )
}

async fn try_start(toml: &str) -> Result<Gateway, String> {
    let config = GatewayConfig::from_toml_str(toml).expect("valid config");
    Gateway::start(config, GatewayOptions::new().quiet(true))
        .await
        .map_err(|e| e.to_string())
}

async fn chat_with_key(gw: &Gateway, model: &str, key: &str) -> Reply {
    let auth = format!("Bearer {key}");
    send(
        gw,
        chat_request(gw, model, false, &[("authorization", &auth)]),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_real_provider_without_client_keys_is_refused_unless_allowed() {
    let upstream = MockUpstream::builder().start().await.unwrap();

    let err = try_start(&real_config(&upstream.base_url(), "127.0.0.1:0", ""))
        .await
        .unwrap_err();
    for part in [
        "`gateway.allow_unauthenticated`",
        "refusing to start",
        "`real`",
        "http://127.0.0.1:0",
        "api_keys_env",
        "allow_unauthenticated = true",
    ] {
        assert!(err.contains(part), "`{part}` missing from: {err}");
    }

    // Allowed, on loopback: starts, serves, no warning.
    let gw = try_start(&real_config(
        &upstream.base_url(),
        "127.0.0.1:0",
        "allow_unauthenticated = true",
    ))
    .await
    .unwrap();
    assert!(gw.warnings().is_empty(), "{:?}", gw.warnings());
    assert_eq!(chat(&gw, "gpt-4o").await.status, StatusCode::OK);
    gw.shutdown().await.unwrap();

    // Allowed, on every address: starts, with a warning naming the address.
    let gw = try_start(&real_config(
        &upstream.base_url(),
        "0.0.0.0:0",
        "allow_unauthenticated = true",
    ))
    .await
    .unwrap();
    let warnings = gw.warnings().join("\n");
    assert!(
        warnings.contains("0.0.0.0:") && warnings.contains("not a loopback address"),
        "{warnings}"
    );
    assert!(warnings.contains("`real`"), "{warnings}");
    gw.shutdown().await.unwrap();

    // With client keys: starts, no warning even off loopback.
    std::env::set_var("TOWER_LLM_TEST_REFUSE_KEYS", "k-1");
    let gw = try_start(&real_config(
        &upstream.base_url(),
        "0.0.0.0:0",
        "api_keys_env = \"TOWER_LLM_TEST_REFUSE_KEYS\"",
    ))
    .await
    .unwrap();
    assert!(gw.warnings().is_empty(), "{:?}", gw.warnings());
    gw.shutdown().await.unwrap();
    upstream.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn mocks_only_start_without_keys_and_the_shipped_file_still_starts() {
    let gw = start(&config("healthy", "healthy", "")).await;
    assert!(gw.warnings().is_empty());
    assert_eq!(chat(&gw, "gpt-4o").await.status, StatusCode::OK);
    gw.shutdown().await.unwrap();

    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../workspace.toml");
    let config = GatewayConfig::from_file(&shipped).expect("workspace.toml loads");
    let gw = Gateway::start(
        config,
        GatewayOptions::new()
            .listen("127.0.0.1:0".parse().unwrap())
            .quiet(true),
    )
    .await
    .expect("workspace.toml starts with no keys");
    assert_eq!(chat(&gw, "gpt-4o").await.status, StatusCode::OK);
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn keys_given_by_sha256_are_accepted_and_wrong_keys_get_401() {
    let upstream = MockUpstream::builder().start().await.unwrap();
    std::env::set_var(
        "TOWER_LLM_TEST_HASHED_KEYS",
        format!("bob=sha256:{}, carol-raw-key", sha256_hex("bob-secret")),
    );
    let lines = format!(
        "api_keys_env = \"TOWER_LLM_TEST_HASHED_KEYS\"\n\n[[gateway.keys]]\nname = \"alice\"\nsha256 = \"{}\"\n",
        sha256_hex("alice-secret")
    );
    let gw = try_start(&real_config(&upstream.base_url(), "127.0.0.1:0", &lines))
        .await
        .expect("client keys: a real provider may be served");
    for key in ["alice-secret", "bob-secret", "carol-raw-key"] {
        assert_eq!(
            chat_with_key(&gw, "gpt-4o", key).await.status,
            StatusCode::OK,
            "{key}"
        );
    }
    for key in [
        "alice-secret2".to_owned(),
        "bob".to_owned(),
        sha256_hex("alice-secret"),
        format!("sha256:{}", sha256_hex("alice-secret")),
    ] {
        let reply = chat_with_key(&gw, "gpt-4o", &key).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{key}");
        assert_eq!(reply.openai_error()["code"], "invalid_api_key");
    }
    assert_eq!(chat(&gw, "gpt-4o").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        upstream.attempt_count(),
        3,
        "only the known keys reached the provider"
    );
    gw.shutdown().await.unwrap();

    // A malformed digest stops the load with the key and line.
    let bad = "[[gateway.keys]]\nname = \"x\"\nsha256 = \"abc\"\n";
    let err =
        GatewayConfig::from_toml_str(&real_config("http://127.0.0.1:9/v1", "127.0.0.1:0", bad))
            .unwrap_err();
    assert_eq!(err.key(), "gateway.keys[0]", "{err}");
    assert!(err.to_string().contains("64 hex digits"), "{err}");
    upstream.shutdown().await;
}

/// A temporary directory of this test process.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tower-llm-gw-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(start_paused = true)]
async fn a_key_reload_adds_and_removes_keys_without_dropping_a_request_in_flight() {
    let dir = temp_dir("reload");
    let keys = dir.join("keys");
    std::fs::write(&keys, "# client keys\nalice=alice-1\n").unwrap();
    let file = dir.join("gateway.toml");
    let toml = with_gateway(
        &config("latency:5s", "healthy", "[retry]\nenabled = false\n"),
        &format!("api_keys_file = \"{}\"", keys.display()),
    );
    std::fs::write(&file, &toml).unwrap();
    let config = GatewayConfig::from_file(&file).unwrap();
    let gw = Gateway::start(
        config,
        GatewayOptions::new().quiet(true).reload_on_sighup(false),
    )
    .await
    .unwrap();

    // alice's request is in flight (the primary answers after 5 s)...
    let in_flight = {
        let req = chat_request(&gw, "gpt-4o", false, &[("authorization", "Bearer alice-1")]);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        tokio::spawn(async move { client.request(req).await })
    };
    while gw.mock("primary").unwrap().attempt_count() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // ...when her key is replaced by bob's.
    std::fs::write(&keys, "bob=bob-1\n").unwrap();
    let reload: KeyReload = gw.reload_keys().unwrap();
    assert_eq!((reload.client_keys, reload.admin_keys), (1, 0));
    assert_eq!(gw.key_reloads(), 1);
    assert_eq!(
        chat_with_key(&gw, "gpt-4o", "alice-1").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        chat_with_key(&gw, "gpt-4o", "bob-1").await.status,
        StatusCode::OK
    );
    let res = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(res.status(), StatusCode::OK);

    // A `[[gateway.keys]]` table added to the configuration file is read by the next reload.
    let table = format!(
        "{toml}\n[[gateway.keys]]\nname = \"carol\"\nsha256 = \"{}\"\n",
        sha256_hex("carol-1")
    );
    std::fs::write(&file, table).unwrap();
    assert_eq!(gw.reload_keys().unwrap().client_keys, 2);
    assert_eq!(
        chat_with_key(&gw, "gpt-4o", "carol-1").await.status,
        StatusCode::OK
    );

    // A reload that fails keeps the keys in use: a bad entry, then no key at all.
    std::fs::write(&keys, "bob=bob-1\nsha256:zz\n").unwrap();
    let err = gw.reload_keys().unwrap_err().to_string();
    assert!(
        err.contains("`gateway.api_keys_file`") && err.contains("line 2"),
        "{err}"
    );
    std::fs::write(&file, &toml).unwrap();
    std::fs::write(&keys, "# nobody\n").unwrap();
    let err = gw.reload_keys().unwrap_err().to_string();
    assert!(err.contains("holds no key"), "{err}");
    assert_eq!(gw.key_reloads(), 2);
    assert_eq!(
        chat_with_key(&gw, "gpt-4o", "bob-1").await.status,
        StatusCode::OK
    );
    assert_eq!(
        chat_with_key(&gw, "gpt-4o", "carol-1").await.status,
        StatusCode::OK
    );
    gw.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn admin_keys_guard_health_details_and_metrics() {
    std::env::set_var("TOWER_LLM_TEST_ADMIN_KEYS", "ops=admin-secret");
    let toml = with_gateway(
        &config("healthy", "healthy", ""),
        "admin_keys_env = \"TOWER_LLM_TEST_ADMIN_KEYS\"",
    );
    let gw = start(&toml).await;
    assert_eq!(
        chat(&gw, "secret-project-model").await.status,
        StatusCode::OK
    );

    // A load balancer without a key sees the overall status only, with its status code.
    let health = get(&gw, "/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json(), serde_json::json!({ "status": "healthy" }));
    assert!(!health.text().contains("secret-project-model"));
    let wrong = get_with_key(&gw, "/health", "admin-secreT").await;
    assert_eq!(wrong.json(), serde_json::json!({ "status": "healthy" }));
    let full = get_with_key(&gw, "/health", "admin-secret").await;
    assert_eq!(full.status, StatusCode::OK);
    target(&full.json(), "primary/secret-project-model");

    let metrics = get(&gw, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::UNAUTHORIZED);
    assert_eq!(metrics.openai_error()["code"], "invalid_api_key");
    assert_eq!(
        get_with_key(&gw, "/metrics", "nope").await.status,
        StatusCode::UNAUTHORIZED
    );
    let metrics = get_with_key(&gw, "/metrics", "admin-secret").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.text().contains("tower_llm_gateway_requests_total"));
    gw.shutdown().await.unwrap();

    // Without admin keys both stay open (the default).
    let gw = start(&config("healthy", "healthy", "")).await;
    assert_eq!(get(&gw, "/metrics").await.status, StatusCode::OK);
    assert!(get(&gw, "/health").await.json()["targets"].is_array());
    gw.shutdown().await.unwrap();
}
