//! The tower-http layers around the gateway's routes, over real loopback HTTP: request ids set
//! and propagated, the body limit (declared and streamed), the body and request timeouts, each
//! refusal an OpenAI-shaped error.

mod gateway_support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tower_llm_gateway::Gateway;

use gateway_support::*;

const NO_RETRY: &str = "[retry]\nenabled = false\n";

#[tokio::test(start_paused = true)]
async fn request_ids_are_set_forwarded_and_returned() {
    let gw = start(&config("healthy", "healthy", NO_RETRY)).await;

    // None sent: the gateway makes one (a UUID), sends it upstream and returns it.
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.status, StatusCode::OK);
    let id = reply
        .header("x-request-id")
        .expect("a request id")
        .to_owned();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.matches('-').count(), 4, "{id}");
    // A random (version 4, RFC 9562 variant) UUID.
    assert_eq!(&id[14..15], "4", "{id}");
    assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    let upstream = gw.mock("primary").unwrap().attempts();
    assert_eq!(upstream[0].headers["x-request-id"], id.as_str());

    // The client's own id is kept, on every answer, errors included.
    let mine = [("x-request-id", "req-42")];
    let reply = send(&gw, chat_request(&gw, "gpt-4o", false, &mine)).await;
    assert_eq!(reply.header("x-request-id"), Some("req-42"));
    assert_eq!(
        gw.mock("primary").unwrap().attempts()[1].headers["x-request-id"],
        "req-42"
    );
    let reply = get(&gw, "/v1/nothing-here").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let other = reply.header("x-request-id").expect("a request id");
    assert_ne!(other, id, "every request gets its own id");
    gw.shutdown().await.unwrap();
}

type StreamedBody = BoxBody<Bytes, Infallible>;

/// A chat request whose body the test sends piece by piece (no `content-length`).
fn streamed_request(gw: &Gateway) -> (http::Request<StreamedBody>, mpsc::Sender<Bytes>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let frames = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    });
    let req = http::Request::post(format!("{}/chat/completions", gw.base_url()))
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap();
    (req, tx)
}

async fn send_streamed(req: http::Request<StreamedBody>) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<StreamedBody>();
    let res = client.request(req).await.expect("the gateway answers");
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("whole body").to_bytes(),
    }
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_limit_are_an_openai_shaped_413_declared_or_streamed() {
    // `[request] max_body_bytes = 65536` in the test configuration.
    let gw = start(&config("healthy", "healthy", NO_RETRY)).await;

    // Declared: refused from its `content-length`, before it is read.
    let req = http::Request::post(format!("{}/chat/completions", gw.base_url()))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(vec![b' '; 70_000])))
        .unwrap();
    let reply = send(&gw, req).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.openai_error()["code"], "request_too_large");
    assert!(reply.header("x-request-id").is_some());

    // Streamed without a length: refused when the read passes the limit.
    let (req, tx) = streamed_request(&gw);
    let sender = tokio::spawn(async move {
        for _ in 0..3 {
            if tx.send(Bytes::from(vec![b' '; 40_000])).await.is_err() {
                break;
            }
        }
    });
    let reply = send_streamed(req).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.openai_error()["code"], "request_too_large");
    sender.abort();
    assert_eq!(gw.mock("primary").unwrap().attempt_count(), 0);
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_sending_its_body_gets_a_408() {
    let toml = config("healthy", "healthy", NO_RETRY).replace(
        "demo_requests_per_sec = 0",
        "demo_requests_per_sec = 0\nbody_timeout_ms = 2000",
    );
    let gw = start(&toml).await;
    let (req, tx) = streamed_request(&gw);
    tx.send(Bytes::from_static(br#"{"model":"gpt-4o","#))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let reply = send_streamed(req).await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(reply.openai_error()["code"], "request_timeout");
    assert!(started.elapsed() >= Duration::from_secs(2));
    drop(tx);
    assert_eq!(gw.mock("primary").unwrap().attempt_count(), 0);
    gw.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn no_answer_within_the_request_timeout_is_an_openai_shaped_504() {
    // Both targets hang for their whole 30 s attempt; the gateway gives the request 1 s.
    let toml = config("hang", "hang", NO_RETRY).replace(
        "demo_requests_per_sec = 0",
        "demo_requests_per_sec = 0\nrequest_timeout_ms = 1000",
    );
    let gw = start(&toml).await;
    let started = tokio::time::Instant::now();
    let reply = chat(&gw, "gpt-4o").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    let error = reply.openai_error();
    assert!(
        error["message"].as_str().unwrap().contains("1000 ms"),
        "{error}"
    );
    assert!(reply.header("x-request-id").is_some());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    gw.shutdown().await.unwrap();
}
