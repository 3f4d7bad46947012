//! `POST /v1/chat/completions` is answered beside axum's router (issue 18: the router's
//! per-request work on nearly every request); it must answer exactly as the router's route did:
//! the same client authentication, a JSON answer's `content-length`, a stream chunked, a query
//! string ignored, and every near miss (trailing slash, another method) left to the router.

mod gateway_support;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;

use gateway_support::*;

const KEYS_VAR: &str = "TOWER_LLM_TEST_CHAT_ROUTE_KEYS";

fn with_keys() -> String {
    std::env::set_var(KEYS_VAR, "app=chat-route-key-1");
    with_gateway(
        &config("healthy", "healthy", ""),
        &format!("api_keys_env = \"{KEYS_VAR}\""),
    )
}

/// `req` sent to `path` (relative to the gateway's root) instead of its own.
fn to_path(
    gw: &tower_llm_gateway::Gateway,
    mut req: http::Request<Full<Bytes>>,
    path: &str,
) -> http::Request<Full<Bytes>> {
    *req.uri_mut() = format!("http://{}{path}", gw.addr()).parse().unwrap();
    req
}

#[tokio::test(start_paused = true)]
async fn a_refused_key_is_refused_as_on_the_routers_routes() {
    let gw = start(&with_keys()).await;
    for key in [None, Some("Bearer wrong-key")] {
        let headers: Vec<(&str, &str)> = key.map(|k| ("authorization", k)).into_iter().collect();
        let chat = send(&gw, chat_request(&gw, "gpt-4o", false, &headers)).await;
        let mut models = http::Request::get(format!("http://{}/v1/models", gw.addr()));
        if let Some(k) = key {
            models = models.header("authorization", k);
        }
        let models = send(&gw, models.body(Full::new(Bytes::new())).unwrap()).await;
        assert_eq!(chat.status, StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(chat.status, models.status, "{key:?}");
        assert_eq!(chat.body, models.body, "{key:?}");
        assert_eq!(chat.header("www-authenticate"), Some("Bearer"));
        assert_eq!(chat.header("content-type"), Some("application/json"));
        assert!(chat.header("x-request-id").is_some());
    }
    assert_eq!(gw.mock("primary").unwrap().attempt_count(), 0);
    let ok = [("authorization", "Bearer chat-route-key-1")];
    assert_eq!(
        send(&gw, chat_request(&gw, "gpt-4o", false, &ok))
            .await
            .status,
        StatusCode::OK
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn answers_carry_their_length_or_are_chunked_as_before() {
    let gw = start(&config("healthy", "healthy", "")).await;
    let json = send(&gw, chat_request(&gw, "gpt-4o", false, &[])).await;
    assert_eq!(json.status, StatusCode::OK);
    assert_eq!(json.json()["object"], "chat.completion");
    let length: usize = json
        .header("content-length")
        .expect("a JSON answer's length, as axum's route set it")
        .parse()
        .unwrap();
    assert_eq!(length, json.body.len());
    assert!(json.header("transfer-encoding").is_none());
    assert!(json.header("x-request-id").is_some());
    assert_eq!(json.header("x-llm-target"), Some("primary/gpt-4o"));

    let stream = send(&gw, chat_request(&gw, "gpt-4o", true, &[])).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert!(stream.header("content-length").is_none());
    assert_eq!(stream.header("transfer-encoding"), Some("chunked"));
    assert!(
        stream.text().trim_end().ends_with("data: [DONE]"),
        "{}",
        stream.text()
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_query_string_is_served_and_near_misses_go_to_the_router() {
    let gw = start(&config("healthy", "healthy", "")).await;
    let query = to_path(
        &gw,
        chat_request(&gw, "gpt-4o", false, &[]),
        "/v1/chat/completions?api-version=2024-10-21",
    );
    let reply = send(&gw, query).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["object"], "chat.completion");

    for path in [
        "/v1/chat/completions/",
        "/v1/chat/completions/x",
        "/v1/chat/Completions",
    ] {
        let reply = send(
            &gw,
            to_path(&gw, chat_request(&gw, "gpt-4o", false, &[]), path),
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.openai_error()["code"], "unknown_url", "{path}");
    }
    let mut put = chat_request(&gw, "gpt-4o", false, &[]);
    *put.method_mut() = http::Method::PUT;
    let reply = send(&gw, put).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("POST"));
    // Only the two chat answers reached an upstream.
    assert_eq!(gw.mock("primary").unwrap().attempt_count(), 1);
    gw.shutdown().await.unwrap();
}
