//! Every fault of the mock upstream, driven over real loopback HTTP with a hyper client.

mod common;

use std::future::Future as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::time::{timeout, Instant};
use tower_llm_chaos::canonical::{self, MALFORMED_EVENT};
use tower_llm_chaos::{
    canonical_tokens, hold_auto_advance, ErrorShape, Fault, MockUpstream, CANONICAL_ANSWER,
};
use tower_llm_core::openai::DONE_FRAME;
use tower_llm_core::{classify_error, Classify, ErrorKind, HttpClassifier};

async fn mock(fault: Fault) -> MockUpstream {
    MockUpstream::builder()
        .default_fault(fault)
        .start()
        .await
        .expect("start the mock")
}

#[tokio::test]
async fn healthy_json_is_the_canonical_completion_byte_for_byte() {
    let upstream = mock(Fault::Healthy).await;
    let res = ask(upstream.addr(), "gpt-4o-mini", false).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let (body, error) = read_body(res).await;
    assert!(error.is_none());
    assert_eq!(body, canonical::completion_json(1, "gpt-4o-mini", usage()));

    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["id"], "chatcmpl-mock-1");
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["model"], "gpt-4o-mini");
    assert_eq!(json["choices"][0]["message"]["role"], "assistant");
    assert_eq!(json["choices"][0]["message"]["content"], CANONICAL_ANSWER);
    assert_eq!(json["choices"][0]["finish_reason"], "stop");
    let prompt = PROMPT.len().div_ceil(4) as u64;
    let completion = canonical_tokens().len() as u64;
    assert_eq!(json["usage"]["prompt_tokens"], prompt);
    assert_eq!(json["usage"]["completion_tokens"], completion);
    assert_eq!(json["usage"]["total_tokens"], prompt + completion);
}

#[tokio::test]
async fn healthy_sse_is_one_event_per_token_then_finish_and_done() {
    let upstream = mock(Fault::Healthy).await;
    let res = ask(upstream.addr(), "llama-3.1-70b", true).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    let (body, error) = read_body(res).await;
    assert!(error.is_none());
    let expected = canonical::sse_events(1, "llama-3.1-70b", usage());
    assert_eq!(body, concat(&expected));

    let data = sse_data(&body);
    assert_eq!(data.len(), canonical_tokens().len() + 2);
    assert_eq!(sse_text(&data), CANONICAL_ANSWER);
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], "llama-3.1-70b");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let finish: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        finish["usage"]["completion_tokens"],
        canonical_tokens().len() as u64
    );
    assert_eq!(data.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn connections_are_kept_alive_between_requests() {
    let upstream = mock(Fault::Healthy).await;
    let mut sender = connect(upstream.addr()).await;
    for seq in 1..=3 {
        let res = sender
            .send_request(chat(upstream.addr(), "m", false))
            .await
            .unwrap();
        let (body, _) = read_body(res).await;
        assert_eq!(body, canonical::completion_json(seq, "m", usage()));
        sender.ready().await.unwrap();
    }
    assert_eq!(upstream.open_connections(), 1);
}

#[tokio::test]
async fn status_with_retry_after_seconds_and_extra_headers() {
    let upstream = mock(
        Fault::status(429)
            .retry_after_secs(2)
            .header("x-ratelimit-reset-requests", "6m0s")
            .header("x-ratelimit-reset-tokens", "12ms"),
    )
    .await;
    for stream in [false, true] {
        let res = ask(upstream.addr(), "gpt-4o", stream).await.unwrap();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.headers()["retry-after"], "2");
        assert_eq!(res.headers()["x-ratelimit-reset-requests"], "6m0s");
        assert_eq!(res.headers()["x-ratelimit-reset-tokens"], "12ms");
        let verdict = HttpClassifier::default().classify_response(&res);
        assert_eq!(verdict.kind(), Some(ErrorKind::RateLimited));
        let body = json_body(res).await;
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["type"], "requests");
        assert!(body["error"]["param"].is_null());
        assert_eq!(
            body["error"]["message"],
            "mock upstream: Too Many Requests (HTTP 429)"
        );
    }
}

#[tokio::test]
async fn status_with_retry_after_ms() {
    let upstream = mock(Fault::status(503).retry_after_ms(1500)).await;
    let res = ask(upstream.addr(), "gpt-4o", false).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after-ms"], "1500");
    assert!(res.headers().get("retry-after").is_none());
    let body = json_body(res).await;
    assert_eq!(body["error"]["type"], "server_error");
}

#[tokio::test]
async fn status_with_retry_after_http_date() {
    let at = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let upstream = mock(Fault::status(503).retry_after_date(at)).await;
    let res = ask(upstream.addr(), "gpt-4o", false).await.unwrap();
    let header = res.headers()["retry-after"].to_str().unwrap().to_owned();
    assert_eq!(header, "Sun, 17 Mar 2030 17:46:40 GMT");
    assert_eq!(httpdate::parse_http_date(&header).unwrap(), at);

    // A date relative to the moment of the response.
    upstream.set_default_fault(Fault::status(503).retry_after_date_in(Duration::from_secs(120)));
    let before = SystemTime::now();
    let res = ask(upstream.addr(), "gpt-4o", false).await.unwrap();
    let date = httpdate::parse_http_date(res.headers()["retry-after"].to_str().unwrap()).unwrap();
    let delay = date.duration_since(before).unwrap_or_default();
    assert!(
        (Duration::from_secs(118)..=Duration::from_secs(122)).contains(&delay),
        "{delay:?}"
    );
}

#[tokio::test]
async fn error_bodies_in_every_provider_shape() {
    let upstream = mock(Fault::Healthy).await;
    let addr = upstream.addr();
    let fetch = |fault: Fault| {
        upstream.set_default_fault(fault);
        async move {
            let res = ask(addr, "m", false).await.unwrap();
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            (status, headers, json_body(res).await)
        }
    };

    let (status, _, body) = fetch(Fault::status(429).code("insufficient_quota")).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        serde_json::json!({"error": {
            "message": "mock upstream: Too Many Requests (HTTP 429)",
            "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}})
    );

    let (status, headers, body) = fetch(
        Fault::status(529)
            .shape(ErrorShape::Anthropic)
            .retry_after_secs(7),
    )
    .await;
    assert_eq!(status, 529);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(
        body,
        serde_json::json!({"type": "error", "error": {
            "type": "overloaded_error", "message": "mock upstream: Overloaded (HTTP 529)"}})
    );

    let (status, headers, body) = fetch(
        Fault::status(429)
            .shape(ErrorShape::Gemini)
            .retry_after_secs(13),
    )
    .await;
    assert_eq!(status, 429);
    assert!(
        headers.get("retry-after").is_none(),
        "Gemini states its delay in the body"
    );
    assert_eq!(
        body,
        serde_json::json!({"error": {
            "code": 429, "message": "mock upstream: Too Many Requests (HTTP 429)",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"}]}})
    );
    let (_, _, body) = fetch(Fault::status(503).shape(ErrorShape::Gemini)).await;
    assert_eq!(body["error"]["status"], "UNAVAILABLE");
    assert!(body["error"].get("details").is_none());

    let (status, _, body) = fetch(
        Fault::status(498)
            .shape(ErrorShape::Groq)
            .message("Flex tier capacity exceeded"),
    )
    .await;
    assert_eq!(status, 498);
    assert_eq!(
        body,
        serde_json::json!({"error": {
            "message": "Flex tier capacity exceeded", "type": "capacity_exceeded", "code": "capacity_exceeded"}})
    );

    let (status, _, body) = fetch(
        Fault::status(502)
            .shape(ErrorShape::OpenRouter)
            .code("upstream_error"),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], 502);
    assert_eq!(
        body["error"]["message"],
        "mock upstream: Bad Gateway (HTTP 502)"
    );
    assert_eq!(body["error"]["metadata"]["provider_name"], "mock");
    let raw: Value =
        serde_json::from_str(body["error"]["metadata"]["raw"].as_str().unwrap()).unwrap();
    assert_eq!(raw["error"]["code"], "upstream_error");

    let (status, _, body) = fetch(Fault::status(401)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn context_length_and_content_policy_are_openai_400s() {
    let upstream = mock(Fault::ContextLengthExceeded).await;
    let res = ask(upstream.addr(), "gpt-4o", true).await.unwrap();
    assert_eq!(res.status(), 400);
    let body = json_body(res).await;
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "messages");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("maximum context length"));

    upstream.set_default_fault(Fault::ContentPolicyViolation);
    let res = ask(upstream.addr(), "gpt-4o", false).await.unwrap();
    assert_eq!(res.status(), 400);
    let body = json_body(res).await;
    assert_eq!(body["error"]["code"], "content_policy_violation");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // In Anthropic's shape, context length reads as Anthropic says it.
    upstream.set_default_fault(Fault::ContextLengthExceeded.shape(ErrorShape::Anthropic));
    let res = ask(upstream.addr(), "claude", false).await.unwrap();
    let body = json_body(res).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("prompt is too long"));

    let faults: Vec<_> = upstream.attempts().iter().map(|a| a.fault).collect();
    assert_eq!(
        faults,
        [
            "context_length_exceeded",
            "content_policy_violation",
            "status"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn hang_reads_the_request_and_never_answers() {
    let upstream = mock(Fault::Hang).await;
    let start = Instant::now();
    let mut sender = connect(upstream.addr()).await;
    let pending = sender.send_request(chat(upstream.addr(), "gpt-4o", true));
    let outcome = timeout(Duration::from_secs(3600), pending).await;
    assert!(outcome.is_err(), "a hung request must not be answered");
    assert!(start.elapsed() >= Duration::from_secs(3600));

    let attempts = upstream.attempts();
    assert_eq!(attempts.len(), 1);
    assert_eq!((attempts[0].fault, attempts[0].status), ("hang", None));
    assert_eq!(attempts[0].body, chat_json("gpt-4o", true).to_string());
    assert_eq!(upstream.open_connections(), 1);

    // The client giving up closes the connection on the server side too.
    drop(sender);
    eventually(|| upstream.open_connections() == 0).await;
}

#[tokio::test]
async fn reset_is_a_connection_error_before_any_header() {
    let upstream = mock(Fault::ResetBeforeHeaders).await;
    for stream in [false, true] {
        let error = ask(upstream.addr(), "gpt-4o", stream)
            .await
            .expect_err("a reset connection has no response");
        assert!(
            has_io_kind(&error, std::io::ErrorKind::ConnectionReset),
            "expected ECONNRESET, got {error:?}"
        );
        assert_eq!(classify_error(&error).kind, ErrorKind::Transport);
    }
    let attempts = upstream.attempts();
    assert_eq!(attempts.len(), 2, "the request was read before the reset");
    assert!(attempts
        .iter()
        .all(|a| a.fault == "reset" && a.status.is_none()));
    eventually(|| upstream.open_connections() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_response_headers() {
    let upstream = mock(Fault::Latency(Duration::from_secs(2))).await;
    for stream in [false, true] {
        let start = Instant::now();
        let res = ask(upstream.addr(), "gpt-4o", stream).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(2));
        assert!(start.elapsed() < Duration::from_millis(2100));
        let (body, error) = read_body(res).await;
        assert!(error.is_none());
        let seq = if stream { 2 } else { 1 };
        let expected = if stream {
            concat(&canonical::sse_events(seq, "gpt-4o", usage()))
        } else {
            canonical::completion_json(seq, "gpt-4o", usage())
        };
        assert_eq!(body, expected);
    }
}

#[tokio::test(start_paused = true)]
async fn slow_first_token_sends_headers_at_once_and_the_first_event_after_the_delay() {
    let upstream = mock(Fault::SlowFirstToken(Duration::from_secs(3))).await;
    let start = Instant::now();
    let res = ask(upstream.addr(), "gpt-4o", true).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "headers come at once");
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();

    // Hold the clock so only `advance` moves it while the socket is read.
    let guard = hold_auto_advance();
    tokio::time::advance(Duration::from_millis(2_999)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let early = futures_poll_once(&mut body).await;
    assert!(early.is_none(), "an event arrived before the delay");
    tokio::time::advance(Duration::from_millis(1)).await;
    let first = canonical::content_event(1, "gpt-4o", 0).unwrap();
    read_exactly(&mut body, &first).await;
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    drop(guard);

    let (rest, error) = read_body(http::Response::new(body)).await;
    assert!(error.is_none());
    let all = concat(&canonical::sse_events(1, "gpt-4o", usage()));
    assert_eq!(rest, all.slice(first.len()..));

    // A non-streamed request gets its headers after the delay.
    let start = Instant::now();
    let res = ask(upstream.addr(), "gpt-4o", false).await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(3));
    assert_eq!(
        read_body(res).await.0,
        canonical::completion_json(2, "gpt-4o", usage())
    );
}

/// Poll the next frame of `body` once: `Some` when it was ready.
async fn futures_poll_once(body: &mut hyper::body::Incoming) -> Option<()> {
    let frame = body.frame();
    tokio::pin!(frame);
    std::future::poll_fn(|cx| match frame.as_mut().poll(cx) {
        std::task::Poll::Ready(_) => std::task::Poll::Ready(Some(())),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

#[tokio::test]
async fn cut_after_n_tokens_closes_the_connection_without_finish_or_done() {
    let upstream = mock(Fault::CutAfter(5)).await;
    let res = ask(upstream.addr(), "gpt-4o", true).await.unwrap();
    assert_eq!(res.status(), 200);
    let (body, error) = read_body(res).await;
    let error = error.expect("a cut stream ends with an error, not a clean end");
    // A FIN in the middle of the chunked body: hyper reports an unexpected EOF.
    assert!(
        has_io_kind(&error, std::io::ErrorKind::UnexpectedEof),
        "{error:?}"
    );
    let expected: Vec<Bytes> = (0..5)
        .map(|i| canonical::content_event(1, "gpt-4o", i).unwrap())
        .collect();
    assert_eq!(body, concat(&expected));
    let data = sse_data(&body);
    assert_eq!(sse_text(&data), canonical_tokens()[..5].concat());
    assert!(!String::from_utf8_lossy(&body).contains("finish_reason\":\"stop"));
    assert!(!body.ends_with(DONE_FRAME));

    // Non-streamed: the declared length is the whole answer, the body stops after 5 tokens.
    let res = ask(upstream.addr(), "gpt-4o", false).await.unwrap();
    let full = canonical::completion_json(2, "gpt-4o", usage());
    assert_eq!(res.headers()["content-length"], full.len().to_string());
    let (body, error) = read_body(res).await;
    assert!(
        error.is_some(),
        "the body is shorter than its content-length"
    );
    assert!(full.starts_with(&body));
    let text_start = body.len() - canonical_tokens()[..5].concat().len();
    assert_eq!(
        &body[text_start..],
        canonical_tokens()[..5].concat().as_bytes()
    );
}

#[tokio::test(start_paused = true)]
async fn stall_sends_n_events_then_nothing_with_the_connection_open() {
    let upstream = mock(Fault::Stall { after: 3 }).await;
    let mut sender = connect(upstream.addr()).await;
    let res = sender
        .send_request(chat(upstream.addr(), "gpt-4o", true))
        .await
        .unwrap();
    let mut body = res.into_body();
    let expected: Vec<Bytes> = (0..3)
        .map(|i| canonical::content_event(1, "gpt-4o", i).unwrap())
        .collect();
    read_exactly(&mut body, &concat(&expected)).await;
    let next = timeout(Duration::from_secs(600), body.frame()).await;
    assert!(
        next.is_err(),
        "a stalled stream sends nothing more: {next:?}"
    );
    assert_eq!(upstream.open_connections(), 1);
    drop(body);
    drop(sender);
    eventually(|| upstream.open_connections() == 0).await;

    // Non-streamed: part of the body, then silence.
    let res = ask(upstream.addr(), "gpt-4o", false).await.unwrap();
    let full = canonical::completion_json(2, "gpt-4o", usage());
    let mut body = res.into_body();
    let answer_at = full
        .windows(CANONICAL_ANSWER.len())
        .position(|w| w == CANONICAL_ANSWER.as_bytes())
        .unwrap();
    let prefix_len = answer_at + canonical_tokens()[..3].concat().len();
    read_exactly(&mut body, &full[..prefix_len]).await;
    assert!(timeout(Duration::from_secs(600), body.frame())
        .await
        .is_err());
}

#[tokio::test]
async fn malformed_event_is_inserted_and_the_rest_is_normal() {
    let upstream = mock(Fault::MalformedEvent { at: 2 }).await;
    let res = ask(upstream.addr(), "gpt-4o", true).await.unwrap();
    let (body, error) = read_body(res).await;
    assert!(error.is_none());
    let mut expected = canonical::sse_events(1, "gpt-4o", usage());
    expected.insert(2, Bytes::from_static(MALFORMED_EVENT));
    assert_eq!(body, concat(&expected));
    let data = sse_data(&body);
    assert!(
        serde_json::from_str::<Value>(&data[2]).is_err(),
        "event 2 is not JSON"
    );
    assert_eq!(
        sse_text(&data),
        CANONICAL_ANSWER,
        "skipping it yields the whole answer"
    );

    // Past the end, the bad event lands just before [DONE].
    upstream.set_default_fault(Fault::MalformedEvent { at: 1000 });
    let (body, _) = read_body(ask(upstream.addr(), "gpt-4o", true).await.unwrap()).await;
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(serde_json::from_str::<Value>(&data[data.len() - 2]).is_err());

    // Non-streamed: a 200 whose body is not JSON.
    let res = ask(upstream.addr(), "gpt-4o", false).await.unwrap();
    assert_eq!(res.status(), 200);
    let (body, error) = read_body(res).await;
    assert!(error.is_none());
    assert!(serde_json::from_slice::<Value>(&body).is_err());
}

#[tokio::test]
async fn no_done_is_complete_but_lacks_the_terminator() {
    let upstream = mock(Fault::NoDone).await;
    let res = ask(upstream.addr(), "gpt-4o", true).await.unwrap();
    let (body, error) = read_body(res).await;
    assert!(error.is_none(), "the body ends cleanly");
    let mut expected = canonical::sse_events(1, "gpt-4o", usage());
    expected.pop();
    assert_eq!(body, concat(&expected));
    let data = sse_data(&body);
    assert_eq!(sse_text(&data), CANONICAL_ANSWER);
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn first_event_error_is_a_200_whose_first_event_is_an_error() {
    let upstream = mock(Fault::FirstEventError).await;
    let res = ask(upstream.addr(), "gpt-4o", true).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let (body, error) = read_body(res).await;
    assert!(error.is_none());
    assert_eq!(body, canonical::error_event());
    let data = sse_data(&body);
    let event: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(event["error"]["type"], "server_error");

    let res = ask(upstream.addr(), "gpt-4o", false).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = json_body(res).await;
    assert_eq!(body["error"]["code"], "server_error");
}

#[tokio::test(start_paused = true)]
async fn flapping_is_down_for_t_after_start_and_after_reset() {
    let upstream = mock(Fault::flapping(Duration::from_secs(10), Fault::status(503))).await;
    let status = |stream| {
        let addr = upstream.addr();
        async move { ask(addr, "gpt-4o", stream).await.unwrap().status().as_u16() }
    };
    assert_eq!(status(false).await, 503);
    tokio::time::sleep(Duration::from_millis(9_990)).await;
    assert_eq!(status(true).await, 503);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(status(false).await, 200);
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(status(false).await, 200);

    upstream.reset_flap();
    assert_eq!(status(false).await, 503);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(status(false).await, 200);

    let faults: Vec<_> = upstream.attempts().iter().map(|a| a.fault).collect();
    assert_eq!(
        faults,
        ["status", "status", "healthy", "healthy", "status", "healthy"]
    );
}

#[tokio::test(start_paused = true)]
async fn fraction_hits_the_requests_its_seed_picks_and_the_rest_fall_through() {
    use tower_llm_chaos::fault::fraction_hit;
    let profile = "0s-10s=fraction:0.3:seed=5:status:500; default=latency:50ms";
    let upstream = MockUpstream::start(profile.parse().unwrap()).await.unwrap();
    let mut sender = connect(upstream.addr()).await;
    for _ in 0..200 {
        let res = sender
            .send_request(chat(upstream.addr(), "gpt-4o", false))
            .await
            .unwrap();
        read_body(res).await;
    }
    let attempts = upstream.attempts();
    assert_eq!(attempts.len(), 200);
    for a in &attempts {
        let (fault, status) = if fraction_hit(300, 5, a.seq) {
            ("status", 500)
        } else {
            // Not hit: the window is passed over and the default applies.
            ("latency", 200)
        };
        assert_eq!((a.fault, a.status), (fault, Some(status)), "seq {}", a.seq);
    }
    let failed = attempts.iter().filter(|a| a.status == Some(500)).count();
    assert!((40..80).contains(&failed), "{failed}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_hung_connections() {
    let upstream = mock(Fault::Hang).await;
    let mut sender = connect(upstream.addr()).await;
    let pending = tokio::spawn(sender.send_request(chat(upstream.addr(), "m", false)));
    upstream.wait_for_attempts(1).await;
    upstream.shutdown().await;
    let outcome = pending.await.unwrap();
    assert!(
        outcome.is_err(),
        "the hung request fails once the mock is gone"
    );
}
