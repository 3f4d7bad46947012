//! Every error the gateway answers itself is OpenAI-shaped, the router's own ones included: a
//! wrong method on a known path (405, with `allow`) and an unknown path (404).

mod gateway_support;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;

use gateway_support::{config, send, start};

const NO_RETRY: &str = "[retry]\nmax_attempts = 1\n";

fn request(
    gw: &tower_llm_gateway::Gateway,
    method: &str,
    path: &str,
) -> http::Request<Full<Bytes>> {
    let base = gw.base_url();
    let root = base.strip_suffix("/v1").unwrap_or(&base);
    http::Request::builder()
        .method(method)
        .uri(format!("{root}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_wrong_method_is_an_openai_shaped_405_with_allow() {
    let gw = start(&config("healthy", "healthy", NO_RETRY)).await;
    for (method, path, allowed) in [
        ("PUT", "/v1/chat/completions", "POST"),
        ("GET", "/v1/chat/completions", "POST"),
        ("DELETE", "/v1/models", "GET"),
        ("POST", "/health", "GET"),
        ("PATCH", "/metrics", "GET"),
    ] {
        let reply = send(&gw, request(&gw, method, path)).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let error = reply.openai_error();
        assert_eq!(error["code"], "method_not_allowed", "{method} {path}");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(error.get("param").is_some(), "{error}");
        let allow = reply
            .header("allow")
            .unwrap_or_else(|| panic!("no allow for {method} {path}"));
        assert!(
            allow.split(',').any(|m| m.trim() == allowed),
            "{method} {path}: allow {allow}"
        );
        assert!(reply.header("x-request-id").is_some());
    }
    assert_eq!(gw.mock("primary").unwrap().attempt_count(), 0);
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unknown_path_is_an_openai_shaped_404() {
    let gw = start(&config("healthy", "healthy", NO_RETRY)).await;
    for (method, path) in [
        ("GET", "/v1/nothing"),
        ("PUT", "/"),
        ("POST", "/v1/completions"),
    ] {
        let reply = send(&gw, request(&gw, method, path)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
        let error = reply.openai_error();
        assert_eq!(error["code"], "unknown_url");
        assert!(error.get("param").is_some(), "{error}");
    }
    gw.shutdown().await.unwrap();
}
