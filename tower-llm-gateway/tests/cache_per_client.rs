//! Issue 15, finding 9 (the gateway's part): the cache tier's key includes the client, taken
//! from the authenticated key's name (never the key), so two clients with different keys never
//! share a cached answer.

mod gateway_support;

use http::StatusCode;
use tower_llm_chaos::Fault;

use gateway_support::*;

async fn ask(gw: &tower_llm_gateway::Gateway, key: &str) -> Reply {
    let auth = format!("Bearer {key}");
    send(
        gw,
        chat_request(gw, "gpt-4o", false, &[("authorization", &auth)]),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn two_clients_with_different_keys_do_not_share_a_cached_answer() {
    std::env::set_var(
        "TOWER_LLM_TEST_CACHE_KEYS",
        format!("tenant-a=key-a, sha256:{}", sha256_hex("key-b")),
    );
    let toml = with_gateway(
        &config(
            "healthy",
            "healthy",
            "[retry]\nenabled = false\n[cache]\nenabled = true\n",
        ),
        "api_keys_env = \"TOWER_LLM_TEST_CACHE_KEYS\"",
    )
    .replace(
        "  { provider = \"secondary\", model = \"backup-model\" },\n]",
        "  { provider = \"secondary\", model = \"backup-model\" },\n]\ncache = true",
    );

    let gw = start(&toml).await;
    let first = ask(&gw, "key-a").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-llm-fallback"), Some("none"));

    // Every target fails from now on: only the cache can answer.
    gw.mock("primary")
        .unwrap()
        .set_default_fault(Fault::status(500));
    gw.mock("secondary")
        .unwrap()
        .set_default_fault(Fault::status(500));

    let again = ask(&gw, "key-a").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.header("x-llm-fallback"), Some("cache"));
    let content = |r: &Reply| r.json()["choices"][0]["message"]["content"].clone();
    assert_eq!(
        content(&again),
        content(&first),
        "tenant-a gets its own cached answer"
    );

    let other = ask(&gw, "key-b").await;
    assert_ne!(
        other.header("x-llm-fallback"),
        Some("cache"),
        "another client got tenant-a's answer: {}",
        other.text()
    );
    assert!(other.status.is_server_error(), "{}", other.text());
    gw.shutdown().await.unwrap();
}
