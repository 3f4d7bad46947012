//! Helpers shared by the loopback tests: a raw hyper HTTP/1 client and request builders.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tower_llm_chaos::canonical::{self, Usage};
use tower_llm_chaos::upstream::COMPLETIONS_PATH;

/// The prompt every test sends.
pub const PROMPT: &str = "Say something resilient.";

/// One HTTP/1.1 connection to `addr`; its driver task runs on the current runtime.
pub async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect to the mock");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

/// The JSON body of a chat completion request.
pub fn chat_json(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": PROMPT}],
    })
}

/// The usage the mock reports for [`chat_json`].
pub fn usage() -> Usage {
    canonical::estimate_usage(&chat_json("any", false))
}

/// A `POST /v1/chat/completions` request for `model`.
pub fn chat(addr: SocketAddr, model: &str, stream: bool) -> Request<Full<Bytes>> {
    Request::post(COMPLETIONS_PATH)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test-key")
        .body(Full::from(chat_json(model, stream).to_string()))
        .expect("request")
}

/// Send one chat request on a fresh connection.
pub async fn ask(
    addr: SocketAddr,
    model: &str,
    stream: bool,
) -> Result<Response<Incoming>, hyper::Error> {
    let mut sender = connect(addr).await;
    sender.send_request(chat(addr, model, stream)).await
}

/// The whole body, or the error that ended it with what arrived before.
pub async fn read_body(res: Response<Incoming>) -> (Bytes, Option<hyper::Error>) {
    let mut body = res.into_body();
    let mut bytes = BytesMut::new();
    loop {
        match body.frame().await {
            None => return (bytes.freeze(), None),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            Some(Err(error)) => return (bytes.freeze(), Some(error)),
        }
    }
}

/// Read from `body` until exactly `expected` arrived (panics on more, on an error or the end).
pub async fn read_exactly(body: &mut Incoming, expected: &[u8]) {
    let mut got = BytesMut::new();
    while got.len() < expected.len() {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    got.extend_from_slice(data);
                }
            }
            other => panic!("body ended early after {} bytes: {other:?}", got.len()),
        }
    }
    assert_eq!(&got[..], expected, "received bytes differ");
}

/// The whole body as JSON.
pub async fn json_body(res: Response<Incoming>) -> Value {
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes).expect("JSON body")
}

/// Concatenate `events`.
pub fn concat(events: &[Bytes]) -> Bytes {
    let mut all = BytesMut::new();
    for event in events {
        all.extend_from_slice(event);
    }
    all.freeze()
}

/// The `data:` payloads of an SSE byte stream.
pub fn sse_data(bytes: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(bytes).expect("UTF-8 SSE");
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").expect("data event").to_owned())
        .collect()
}

/// The answer text of SSE data payloads, skipping `[DONE]` and payloads that are not JSON.
pub fn sse_text(data: &[String]) -> String {
    data.iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// Poll `condition` while letting the runtime run, up to a bounded number of turns.
pub async fn eventually(mut condition: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not met");
}

/// Whether `error` (or its sources) is an `std::io::Error` of `kind`.
pub fn has_io_kind(error: &(dyn std::error::Error + 'static), kind: std::io::ErrorKind) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        current = e.source();
    }
    false
}
