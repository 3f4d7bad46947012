//! Issue 15, finding 4: headers cross the gateway by allow-list, in both directions, over real
//! loopback HTTP against the chaos mock upstream (whose attempt log records request headers).

mod gateway_support;

use http::StatusCode;

use gateway_support::*;

const NO_RETRY: &str = "[retry]\nenabled = false\n";

#[tokio::test(start_paused = true)]
async fn only_allow_listed_client_headers_reach_the_upstream() {
    let gw = start(&config("healthy", "healthy", NO_RETRY)).await;
    let headers = [
        ("openai-organization", "org-someone-else"),
        ("openai-project", "proj-someone-else"),
        ("openai-beta", "assistants=v2"),
        ("x-forwarded-for", "10.1.2.3"),
        ("forwarded", "for=10.1.2.3"),
        ("x-custom", "1"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("authorization", "Bearer client-secret"),
        ("cookie", "session=abc"),
        ("accept-encoding", "gzip"),
        ("accept", "application/json"),
        ("user-agent", "OpenAI/Python 1.0"),
        ("idempotency-key", "idem-1"),
        ("x-request-id", "req-42"),
    ];
    let reply = send(&gw, chat_request(&gw, "gpt-4o", false, &headers)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let attempt = &gw.mock("primary").unwrap().attempts()[0];
    for name in [
        "openai-organization",
        "openai-project",
        "openai-beta",
        "x-forwarded-for",
        "forwarded",
        "x-custom",
        "traceparent",
        "cookie",
        "accept-encoding",
    ] {
        assert!(
            !attempt.headers.contains_key(name),
            "`{name}` was forwarded: {:?}",
            attempt.headers
        );
    }
    assert!(attempt.headers.get("authorization").is_none());
    for (name, value) in [
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("user-agent", "OpenAI/Python 1.0"),
        ("idempotency-key", "idem-1"),
        ("x-request-id", "req-42"),
    ] {
        assert_eq!(attempt.headers[name], value, "`{name}` passes");
    }
    gw.shutdown().await.unwrap();

    // `forward_request_headers` extends the list.
    let toml = with_gateway(
        &config("healthy", "healthy", NO_RETRY),
        "forward_request_headers = [\"traceparent\", \"X-Custom\"]",
    );
    let gw = start(&toml).await;
    let reply = send(&gw, chat_request(&gw, "gpt-4o", false, &headers)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let attempt = &gw.mock("primary").unwrap().attempts()[0];
    assert_eq!(attempt.headers["x-custom"], "1");
    assert!(attempt.headers.contains_key("traceparent"));
    assert!(!attempt.headers.contains_key("openai-organization"));
    gw.shutdown().await.unwrap();
}

/// The upstream answers a 400 (returned to the client unchanged by the stack) with headers of
/// the operator's account.
const LEAKY_400: &str = "status:400:header=set-cookie=session=upstream:header=openai-organization=org-operator:header=x-ratelimit-remaining-requests=42:header=anthropic-ratelimit-requests-remaining=7:header=retry-after=30:header=x-request-id=req_upstream:header=cache-control=no-store:header=x-vendor=v";

#[tokio::test(start_paused = true)]
async fn only_allow_listed_upstream_headers_reach_the_client() {
    let gw = start(&config(LEAKY_400, "healthy", NO_RETRY)).await;
    let reply = send(
        &gw,
        chat_request(&gw, "gpt-4o", false, &[("x-request-id", "req-client")]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert_eq!(reply.header("x-llm-target"), Some("primary/gpt-4o"));
    for name in [
        "set-cookie",
        "openai-organization",
        "x-ratelimit-remaining-requests",
        "anthropic-ratelimit-requests-remaining",
        "retry-after",
        "x-vendor",
    ] {
        assert!(
            !reply.headers.contains_key(name),
            "`{name}` reached the client: {:?}",
            reply.headers
        );
    }
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(
        reply.header("x-request-id"),
        Some("req-client"),
        "the gateway's id, not the upstream's"
    );
    gw.shutdown().await.unwrap();

    // `forward_response_headers` extends the list.
    let toml = with_gateway(
        &config(LEAKY_400, "healthy", NO_RETRY),
        "forward_response_headers = [\"x-vendor\"]",
    );
    let gw = start(&toml).await;
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.header("x-vendor"), Some("v"));
    assert!(!reply.headers.contains_key("set-cookie"));
    gw.shutdown().await.unwrap();
}

#[test]
fn configured_header_names_are_validated_at_load() {
    for (lines, key, message) in [
        (
            "forward_request_headers = [\"content-type\", \"bad header\"]",
            "gateway.forward_request_headers[1]",
            "not a header name",
        ),
        (
            "forward_request_headers = [\"Authorization\"]",
            "gateway.forward_request_headers[0]",
            "never forwarded upstream",
        ),
        (
            "forward_response_headers = [\"transfer-encoding\"]",
            "gateway.forward_response_headers[0]",
            "never forwarded to clients",
        ),
    ] {
        let toml = with_gateway(&config("healthy", "healthy", ""), lines);
        let err = tower_llm_gateway::GatewayConfig::from_toml_str(&toml).unwrap_err();
        assert_eq!(err.key(), key, "{err}");
        assert!(err.line().is_some(), "{err}");
        assert!(err.to_string().contains(message), "{err}");
    }
}
