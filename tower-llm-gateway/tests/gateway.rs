//! The gateway end to end, over real loopback HTTP: the seed cases (primary answers,
//! failover, everything failing, a 401 tried once), routing errors, security (client keys,
//! credentials and hop-by-hop headers never forwarded, bounded bodies), SSE passthrough,
//! `/v1/models`, `/metrics`, configuration errors and health persistence across a restart.
//!
//! Each test starts the gateway in-process on `127.0.0.1:0` with embedded mock upstreams on the
//! same runtime, with a paused clock: backoffs, cooldowns and timeouts pass instantly and
//! deterministically.

mod gateway_support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use tower_llm_chaos::{canonical_tokens, CANONICAL_ANSWER};

use gateway_support::*;
use tower_llm_gateway::{Gateway, GatewayConfig, GatewayOptions};

const NO_RETRY: &str = "[retry]\nenabled = false\n";

#[tokio::test(start_paused = true)]
async fn primary_answers_with_its_model_and_usage() {
    let gw = start(&config("healthy", "healthy", NO_RETRY)).await;
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-llm-target"), Some("primary/gpt-4o"));
    assert_eq!(reply.header("x-llm-fallback"), Some("none"));
    let json = reply.json();
    assert_eq!(json["model"], "gpt-4o");
    assert_eq!(json["choices"][0]["message"]["content"], CANONICAL_ANSWER);
    assert!(json["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(gw.mock("primary").unwrap().attempt_count(), 1);
    assert_eq!(gw.mock("secondary").unwrap().attempt_count(), 0);
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_primary_falls_back_and_the_answer_says_so() {
    let extra = "[retry]\nmax_attempts = 2\nbase_ms = 100\n";
    let gw = start(&config("status:503", "healthy", extra)).await;
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-llm-target"), Some("secondary/backup-model"));
    assert_eq!(reply.header("x-llm-fallback"), Some("target"));
    let json = reply.json();
    // The model and usage are those of the target that answered.
    assert_eq!(json["model"], "backup-model");
    assert!(json["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    // The secondary could answer: the primary got one call (no retry), then the chain moved on.
    assert_eq!(gw.mock("primary").unwrap().attempt_count(), 1);
    let secondary = gw.mock("secondary").unwrap().attempts();
    assert_eq!(secondary.len(), 1);
    assert_eq!(
        secondary[0].model, "backup-model",
        "the request was rewritten for the target"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn everything_failing_is_an_openai_shaped_error_with_the_right_status() {
    // Overloaded everywhere: 503 with the providers' delay.
    let gw = start(&config(
        "status:503:retry-after=7",
        "status:503:retry-after=3",
        NO_RETRY,
    ))
    .await;
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let error = reply.openai_error();
    assert_eq!(error["code"], "overloaded");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("primary/gpt-4o"),
        "{error}"
    );
    assert_eq!(reply.header("retry-after"), Some("3"));
    gw.shutdown().await.unwrap();

    // Server errors: 502.
    let gw = start(&config("status:500", "status:502", NO_RETRY)).await;
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.openai_error()["type"], "server_error");
    gw.shutdown().await.unwrap();

    // Rate limits: 429 with retry-after.
    let gw = start(&config(
        "status:429:retry-after=9",
        "status:429:retry-after=4",
        NO_RETRY,
    ))
    .await;
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.openai_error()["code"], "rate_limit_exceeded");
    assert_eq!(reply.header("retry-after"), Some("4"));
    gw.shutdown().await.unwrap();

    // Silence: 504 once each target's time is up.
    let extra = "[retry]\nenabled = false\nattempt_timeout_ms = 2000\n";
    let gw = start(&config("hang", "hang", extra)).await;
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.openai_error()["code"], "timeout");
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn everything_failing_serves_the_static_answer_when_configured() {
    let extra =
        "[retry]\nenabled = false\n[static]\ncontent = \"Back soon.\"\nmodel = \"static-notice\"\n";
    let gw = start(&config("status:503", "status:500", extra)).await;
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-llm-fallback"), Some("static"));
    let json = reply.json();
    assert_eq!(json["choices"][0]["message"]["content"], "Back soon.");
    assert_eq!(json["model"], "static-notice");
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_primary_401_is_tried_once_then_skipped_until_its_cooldown() {
    let extra = "[retry]\nmax_attempts = 3\n[cooldown]\nauth_ms = 60000\n";
    let gw = start(&config("status:401", "healthy", extra)).await;
    for _ in 0..3 {
        let reply = chat(&gw, "gpt-4o").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-llm-target"), Some("secondary/backup-model"));
    }
    // Not retried (auth never is), and benched after the first call.
    assert_eq!(gw.mock("primary").unwrap().attempt_count(), 1);
    let health = health(&gw).await;
    let primary = target(&health, "primary/gpt-4o");
    assert_eq!(primary["cooldown"]["kind"], "auth");
    assert_eq!(primary["available"], false);
    assert_eq!(primary["last_error_kind"], "auth");
    // An auth failure says nothing about the target's health: the breaker did not count it.
    assert_eq!(primary["breaker"]["failures"], 0);
    assert_eq!(health["status"], "degraded");

    tokio::time::sleep(Duration::from_secs(61)).await;
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.header("x-llm-target"), Some("secondary/backup-model"));
    assert_eq!(
        gw.mock("primary").unwrap().attempt_count(),
        2,
        "after the cooldown the primary is probed again"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn routing_errors_are_404_and_400() {
    let toml = config("healthy", "healthy", NO_RETRY).replace("match = \"*\"", "match = \"gpt-*\"");
    let gw = start(&toml).await;
    let reply = chat(&gw, "claude-3").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.openai_error()["code"], "model_not_found");

    let bad = |body: &'static str| {
        http::Request::post(format!("{}/chat/completions", gw.base_url()))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    let reply = send(&gw, bad("not json")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.openai_error()["type"], "invalid_request_error");
    let reply = send(&gw, bad(r#"{"messages":[]}"#)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.openai_error()["message"]
        .as_str()
        .unwrap()
        .contains("model"));

    let reply = get(&gw, "/v1/nothing-here").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    reply.openai_error();
    assert_eq!(gw.mock("primary").unwrap().attempt_count(), 0);
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn request_bodies_are_bounded() {
    let gw = start(&config("healthy", "healthy", NO_RETRY)).await;
    let padding = "x".repeat(70_000);
    let body =
        format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{padding}"}}]}}"#);
    let req = http::Request::post(format!("{}/chat/completions", gw.base_url()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let reply = send(&gw, req).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.openai_error()["code"], "request_too_large");
    assert_eq!(gw.mock("primary").unwrap().attempt_count(), 0);
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn client_keys_are_checked_and_never_forwarded() {
    // Unique variable names: tests in this binary run in parallel.
    std::env::set_var("TOWER_LLM_TEST_CLIENT_KEYS", "client-key-1, client-key-2");
    std::env::set_var("TOWER_LLM_TEST_PROVIDER_KEY", "sk-provider-secret");
    let toml = config("healthy", "healthy", NO_RETRY)
        .replace(
            "demo_requests_per_sec = 0",
            "demo_requests_per_sec = 0\napi_keys_env = \"TOWER_LLM_TEST_CLIENT_KEYS\"",
        )
        .replacen(
            "mock = \"healthy\"",
            "mock = \"healthy\"\napi_key_env = \"TOWER_LLM_TEST_PROVIDER_KEY\"",
            1,
        );
    let gw = start(&toml).await;

    let reply = send(&gw, chat_request(&gw, "gpt-4o", false, &[])).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.openai_error()["code"], "invalid_api_key");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    let wrong = [("authorization", "Bearer client-key-3")];
    let reply = send(&gw, chat_request(&gw, "gpt-4o", false, &wrong)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = get(&gw, "/v1/models").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(gw.mock("primary").unwrap().attempt_count(), 0);

    let right = [("authorization", "Bearer client-key-2")];
    let reply = send(&gw, chat_request(&gw, "gpt-4o", false, &right)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let attempts = gw.mock("primary").unwrap().attempts();
    let auth = attempts[0].headers.get("authorization").unwrap();
    assert_eq!(
        auth, "Bearer sk-provider-secret",
        "the provider's key, not the client's"
    );

    // The provider's key appears nowhere a client or an operator can read it.
    for path in ["/health", "/metrics"] {
        let reply = get(&gw, path).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{path} is for operators: no client key"
        );
        assert!(
            !reply.text().contains("sk-provider-secret"),
            "{path} leaks the key"
        );
    }
    assert!(!format!("{:?}", gw.stack()).contains("sk-provider-secret"));
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn hop_by_hop_and_credential_headers_are_not_forwarded() {
    let gw = start(&config("healthy", "healthy", NO_RETRY)).await;
    let headers = [
        ("authorization", "Bearer client-secret"),
        ("x-api-key", "client-secret"),
        ("cookie", "session=abc"),
        ("connection", "keep-alive, x-hop-named"),
        ("x-hop-named", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("x-request-id", "req-42"),
    ];
    let reply = send(&gw, chat_request(&gw, "gpt-4o", false, &headers)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let attempt = &gw.mock("primary").unwrap().attempts()[0];
    for name in [
        "authorization",
        "x-api-key",
        "cookie",
        "x-hop-named",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert!(
            !attempt.headers.contains_key(name),
            "`{name}` was forwarded"
        );
    }
    assert!(attempt
        .headers
        .get("connection")
        .is_none_or(|v| !v.to_str().unwrap().contains("x-hop-named")));
    assert_eq!(
        attempt.headers["x-request-id"], "req-42",
        "end-to-end headers pass"
    );
    assert!(reply
        .headers
        .get("transfer-encoding")
        .is_none_or(|v| v == "chunked"));
    gw.shutdown().await.unwrap();
}

/// The content of an OpenAI SSE stream, and whether it ended with `[DONE]`.
fn sse_content(text: &str) -> (String, bool) {
    let mut content = String::new();
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: serde_json::Value = serde_json::from_str(data).expect("JSON event");
        if let Some(delta) = chunk["choices"][0]["delta"]["content"].as_str() {
            content.push_str(delta);
        }
    }
    (content, done)
}

#[tokio::test(start_paused = true)]
async fn sse_streams_pass_through_and_fail_over_before_the_first_event() {
    let gw = start(&config("healthy", "healthy", NO_RETRY)).await;
    let reply = send(&gw, chat_request(&gw, "gpt-4o", true, &[])).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert_eq!(reply.header("x-llm-target"), Some("primary/gpt-4o"));
    let (content, done) = sse_content(reply.text());
    assert_eq!(content, CANONICAL_ANSWER);
    assert_eq!(content, canonical_tokens().concat());
    assert!(done && reply.text().ends_with("data: [DONE]\n\n"));
    gw.shutdown().await.unwrap();

    // A stream whose first event is an error fails over to the secondary, byte for byte whole.
    let gw = start(&config("first-event-error", "healthy", NO_RETRY)).await;
    let reply = send(&gw, chat_request(&gw, "gpt-4o", true, &[])).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-llm-target"), Some("secondary/backup-model"));
    assert_eq!(reply.header("x-llm-fallback"), Some("target"));
    let (content, done) = sse_content(reply.text());
    assert_eq!(content, CANONICAL_ANSWER);
    assert!(done);
    assert!(reply.text().contains("\"model\":\"backup-model\""));
    gw.shutdown().await.unwrap();

    // A stream cut after the first events is finished on the secondary (the route resumes by
    // default): the whole answer, one [DONE] (tests/stream_resume.rs has the cases).
    let gw = start(&config("cut-after:3", "healthy", NO_RETRY)).await;
    let reply = send(&gw, chat_request(&gw, "gpt-4o", true, &[])).await;
    assert_eq!(reply.status, StatusCode::OK);
    let (content, done) = sse_content(reply.text());
    assert_eq!(content, canonical_tokens().concat());
    assert!(done && reply.text().matches("[DONE]").count() == 1);
    assert!(!reply.text().contains("\"error\""), "{}", reply.text());
    gw.shutdown().await.unwrap();

    // With `resume = "off"` it is never passed off as whole: it ends with an error event and no
    // [DONE].
    let toml = config("cut-after:3", "healthy", NO_RETRY).replacen(
        "model = \"backup-model\" },\n]\n",
        "model = \"backup-model\" },\n]\nresume = \"off\"\n",
        1,
    );
    assert!(toml.contains("resume = \"off\""), "{toml}");
    let gw = start(&toml).await;
    let reply = send(&gw, chat_request(&gw, "gpt-4o", true, &[])).await;
    assert_eq!(reply.status, StatusCode::OK);
    let (content, done) = sse_content(reply.text());
    assert_eq!(content, canonical_tokens()[..3].concat());
    assert!(!done, "a cut stream must not end with [DONE]");
    assert!(reply.text().contains("\"error\""), "{}", reply.text());
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn models_lists_what_a_client_may_send_not_globs() {
    // `fast`: an alias whose targets name their models; `gpt-*`: a glob passing models through;
    // `*`: a catch-all.
    let toml = config("healthy", "healthy", NO_RETRY).replace(
        "[[routes]]\nmatch = \"*\"",
        "[[routes]]\nmatch = \"fast\"\ntargets = [{ provider = \"secondary\", model = \"small-model\" }]\n\n\
         [[routes]]\nmatch = \"gpt-*\"\ntargets = [{ provider = \"primary\" }]\n\n\
         [[routes]]\nmatch = \"*\"",
    );
    let gw = start(&toml).await;
    let ids = |json: &serde_json::Value| -> Vec<String> {
        assert_eq!(json["object"], "list", "{json}");
        json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["object"], "model", "{m}");
                assert!(m["created"].as_u64().unwrap() > 1_600_000_000, "{m}");
                assert_eq!(m["owned_by"], "tower-llm", "{m}");
                m["id"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    // At start: the literal route only; neither a glob nor an upstream model name.
    assert_eq!(ids(&get(&gw, "/v1/models").await.json()), ["fast"]);

    // Models requested on pass-through routes join the list once routed; the alias answers with
    // its target's model.
    assert_eq!(chat(&gw, "gpt-4o").await.status, StatusCode::OK);
    assert_eq!(chat(&gw, "claude-3").await.status, StatusCode::OK);
    let reply = chat(&gw, "fast").await;
    assert_eq!(reply.header("x-llm-target"), Some("secondary/small-model"));
    assert_eq!(
        ids(&get(&gw, "/v1/models").await.json()),
        ["fast", "gpt-4o", "claude-3"]
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn metrics_endpoint() {
    let toml = config("status:503", "healthy", NO_RETRY);
    let gw = start(&toml).await;
    assert_eq!(chat(&gw, "gpt-4o").await.status, StatusCode::OK);
    let metrics = get(&gw, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text();
    assert!(text.contains("tower_llm_gateway_requests_total"), "{text}");
    assert!(text.contains("fallback=\"target\""), "{text}");
    assert!(text.contains("tower_llm_"), "{text}");
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn configuration_errors_name_the_key_and_the_line() {
    let cases: [(&str, &str, usize, &str); 8] = [
        (
            "[gateway]\nlisten = \"127.0.0.1:0\"\nlisten_port = 3\n",
            "gateway.listen_port",
            3,
            "unknown field",
        ),
        (
            "[[providers]]\nname = \"a\"\nmock = \"healthy\"\n[[routes]]\nmatch = \"*\"\ntargets = [{ provider = \"b\" }]\n",
            "routes[0].targets[0].provider",
            6,
            "no provider named `b`",
        ),
        (
            "[[providers]]\nname = \"a\"\nmock = \"healthy\"\n[[routes]]\nmatch = \"gpt-[4\"\ntargets = [{ provider = \"a\" }]\n",
            "routes[0].match",
            5,
            "bad glob",
        ),
        (
            "[[providers]]\nname = \"a\"\nmock = \"healthy\"\n[[routes]]\nmatch = \"*\"\ntargets = [\n  { provider = \"a\", attempt_timeout_ms = -100 },\n]\n",
            "routes[0].targets[0].attempt_timeout_ms",
            7,
            "invalid value",
        ),
        (
            "[gateway]\nlisten = \"localhost\"\n",
            "gateway.listen",
            2,
            "not an address",
        ),
        (
            "[[providers]]\nname = \"a\"\nmock = 7\n",
            "providers[0].mock",
            3,
            "invalid type",
        ),
        (
            "[[providers]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmock = \"healthy\"\n",
            "providers[0].mock",
            4,
            "not both",
        ),
        // A key of the library's schema, checked by the breaker crate, named as in the file.
        (
            "[breaker]\nhalf_open_probes = 0\n",
            "breaker.half_open_probes",
            2,
            "",
        ),
    ];
    for (toml, key, line, message) in cases {
        let err = GatewayConfig::from_toml_str(toml).unwrap_err();
        assert_eq!(err.key(), key, "{err}");
        assert_eq!(err.line(), Some(line), "{err}");
        assert!(err.to_string().contains(message), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("line {line}: `{key}`")),
            "{err}"
        );
    }

    // A bad mock profile is caught when the gateway starts, with its key and line too.
    let toml = config("status:9999", "healthy", "");
    let parsed = GatewayConfig::from_toml_str(&toml).unwrap();
    let err = Gateway::start(parsed, GatewayOptions::new().quiet(true))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("line 8: `providers[0].mock`"), "{err}");
    assert!(err.contains("9999"), "{err}");

    // So is a provider key variable that is not set.
    let toml = config("healthy", "healthy", "").replacen(
        "mock = \"healthy\"",
        "mock = \"healthy\"\napi_key_env = \"TOWER_LLM_TEST_UNSET_VARIABLE\"",
        1,
    );
    let parsed = GatewayConfig::from_toml_str(&toml).unwrap();
    let err = Gateway::start(parsed, GatewayOptions::new().quiet(true))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`providers[0].api_key_env`"), "{err}");
    assert!(err.contains("TOWER_LLM_TEST_UNSET_VARIABLE"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_saves_health_and_a_restart_restores_it() {
    let dir = std::env::temp_dir().join(format!("tower-llm-gateway-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("health.json");
    let _ = std::fs::remove_file(&file);
    let extra = format!(
        "[retry]\nenabled = false\n[cooldown]\ntransient_min_ms = 600000\nmax_probe_interval_ms = 600000\n[health]\nfile = \"{}\"\n",
        file.display()
    );
    let gw = start(&config("status:500", "healthy", &extra)).await;
    assert_eq!(
        chat(&gw, "gpt-4o").await.header("x-llm-fallback"),
        Some("target")
    );
    let saved = gw.shutdown().await.unwrap();
    assert_eq!(saved.as_deref(), Some(file.as_path()));

    // A new gateway (healthy primary now) starts with the primary still cooling down.
    let gw = start(&config("healthy", "healthy", &extra)).await;
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.header("x-llm-target"), Some("secondary/backup-model"));
    assert_eq!(
        gw.mock("primary").unwrap().attempt_count(),
        0,
        "skipped: restored cooldown"
    );
    let health = health(&gw).await;
    let primary = target(&health, "primary/gpt-4o");
    assert_eq!(primary["cooldown"]["kind"], "server_error");
    assert_eq!(primary["failures"], 1);
    gw.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
