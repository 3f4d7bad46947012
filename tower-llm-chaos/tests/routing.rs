//! Fault selection (schedule windows, model routes, default, runtime changes), the attempt log
//! and the mock's own rejections, over real loopback HTTP.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use tokio::time::sleep;
use tower_llm_chaos::upstream::COMPLETIONS_PATH;
use tower_llm_chaos::{Fault, FaultProfile, MockUpstream};

async fn status_of(upstream: &MockUpstream, model: &str) -> u16 {
    ask(upstream.addr(), model, false)
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(start_paused = true)]
async fn schedule_windows_apply_to_every_model_then_routes_then_default() {
    let upstream = MockUpstream::builder()
        .default_fault(Fault::Healthy)
        .route("gpt-bad", Fault::status(500))
        .schedule(Duration::ZERO, Duration::from_secs(10), Fault::status(503))
        .schedule_from(Duration::from_secs(30), Fault::status(429))
        .start()
        .await
        .unwrap();

    assert_eq!(status_of(&upstream, "gpt-4o").await, 503);
    assert_eq!(
        status_of(&upstream, "gpt-bad").await,
        503,
        "a window beats a route"
    );
    sleep(Duration::from_millis(9_999)).await;
    assert_eq!(status_of(&upstream, "gpt-4o").await, 503);
    sleep(Duration::from_millis(1)).await;
    assert_eq!(
        status_of(&upstream, "gpt-4o").await,
        200,
        "windows end exclusive"
    );
    assert_eq!(status_of(&upstream, "gpt-bad").await, 500);
    assert_eq!(
        status_of(&upstream, "gpt-bad-2").await,
        200,
        "routes match exactly"
    );
    sleep(Duration::from_secs(20)).await;
    assert_eq!(status_of(&upstream, "gpt-4o").await, 429);
    sleep(Duration::from_secs(1000)).await;
    assert_eq!(
        status_of(&upstream, "gpt-bad").await,
        429,
        "an open window never ends"
    );

    let log: Vec<_> = upstream
        .attempts()
        .iter()
        .map(|a| (a.at, a.model.clone(), a.status))
        .collect();
    let secs = Duration::from_secs;
    let ms = Duration::from_millis;
    assert_eq!(
        log,
        [
            (secs(0), "gpt-4o".to_owned(), Some(503)),
            (secs(0), "gpt-bad".to_owned(), Some(503)),
            (ms(9_999), "gpt-4o".to_owned(), Some(503)),
            (secs(10), "gpt-4o".to_owned(), Some(200)),
            (secs(10), "gpt-bad".to_owned(), Some(500)),
            (secs(10), "gpt-bad-2".to_owned(), Some(200)),
            (secs(30), "gpt-4o".to_owned(), Some(429)),
            (secs(1030), "gpt-bad".to_owned(), Some(429)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_parsed_profile_drives_the_mock() {
    let profile: FaultProfile = "0s-20s=status:503; model gpt-bad=status:500; default=healthy"
        .parse()
        .unwrap();
    let upstream = MockUpstream::start(profile).await.unwrap();
    assert_eq!(status_of(&upstream, "gpt-4o").await, 503);
    sleep(Duration::from_secs(20)).await;
    assert_eq!(status_of(&upstream, "gpt-4o").await, 200);
    assert_eq!(status_of(&upstream, "gpt-bad").await, 500);
}

#[tokio::test]
async fn faults_change_at_run_time() {
    let upstream = MockUpstream::builder().start().await.unwrap();
    assert_eq!(status_of(&upstream, "a").await, 200);

    upstream.set_default_fault(Fault::status(502));
    assert_eq!(status_of(&upstream, "a").await, 502);

    upstream.route_model("a", Fault::status(401));
    assert_eq!(status_of(&upstream, "a").await, 401);
    assert_eq!(status_of(&upstream, "b").await, 502);
    upstream.route_model("a", Fault::status(403));
    assert_eq!(
        status_of(&upstream, "a").await,
        403,
        "a new route replaces the old one"
    );

    upstream.unroute_model("a");
    assert_eq!(status_of(&upstream, "a").await, 502);

    let handle = upstream.handle();
    handle.add_window(Duration::ZERO, None, Fault::status(504));
    assert_eq!(status_of(&upstream, "a").await, 504);

    handle.set_profile("model b=status:529".parse().unwrap());
    assert_eq!(status_of(&upstream, "a").await, 200);
    assert_eq!(status_of(&upstream, "b").await, 529);
}

#[tokio::test(start_paused = true)]
async fn the_log_records_every_attempt() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook_seen = seen.clone();
    let upstream = MockUpstream::builder()
        .route("gpt-limited", Fault::status(429).retry_after_secs(2))
        .on_attempt(move |attempt| hook_seen.lock().unwrap().push(attempt.seq))
        .start()
        .await
        .unwrap();
    let addr = upstream.addr();

    let mut sender = connect(addr).await;
    let request = Request::post(COMPLETIONS_PATH)
        .header("host", addr.to_string())
        .header("authorization", "Bearer sk-secret")
        .header("x-retry-count", "2")
        .body(Full::from(chat_json("gpt-limited", true).to_string()))
        .unwrap();
    let res = sender.send_request(request).await.unwrap();
    assert_eq!(res.status(), 429);
    sleep(Duration::from_secs(5)).await;
    let _ = ask(addr, "gpt-4o", false).await.unwrap();

    upstream.wait_for_attempts(2).await;
    assert_eq!(upstream.attempt_count(), 2);
    let attempts = upstream.attempts();
    let first = &attempts[0];
    assert_eq!(first.seq, 1);
    assert_eq!(first.at, Duration::ZERO);
    assert_eq!(first.model, "gpt-limited");
    assert!(first.stream);
    assert_eq!(first.fault, "status");
    assert_eq!(first.status, Some(429));
    assert_eq!(first.headers["authorization"], "Bearer sk-secret");
    assert_eq!(first.headers["x-retry-count"], "2");
    assert_eq!(
        first.body,
        Bytes::from(chat_json("gpt-limited", true).to_string())
    );
    let second = &attempts[1];
    assert_eq!(
        (second.seq, second.at, second.stream),
        (2, Duration::from_secs(5), false)
    );
    assert_eq!((second.fault, second.status), ("healthy", Some(200)));
    assert_eq!(*seen.lock().unwrap(), [1, 2]);

    upstream.clear_attempts();
    assert_eq!(upstream.attempt_count(), 0);
    assert!(upstream.attempts().is_empty());
    let waiter = {
        let handle = upstream.handle();
        tokio::spawn(async move { handle.wait_for_attempts(1).await })
    };
    let _ = ask(addr, "gpt-4o", false).await.unwrap();
    waiter.await.unwrap();
    assert_eq!(
        upstream.attempts()[0].seq,
        3,
        "sequence numbers keep counting"
    );
}

#[tokio::test]
async fn the_log_can_be_bounded() {
    let upstream = MockUpstream::builder()
        .max_logged_attempts(2)
        .start()
        .await
        .unwrap();
    for _ in 0..5 {
        let _ = ask(upstream.addr(), "m", false).await.unwrap();
    }
    assert_eq!(upstream.attempt_count(), 5);
    let seqs: Vec<_> = upstream.attempts().iter().map(|a| a.seq).collect();
    assert_eq!(seqs, [4, 5]);

    let silent = MockUpstream::builder()
        .max_logged_attempts(0)
        .start()
        .await
        .unwrap();
    let _ = ask(silent.addr(), "m", false).await.unwrap();
    assert_eq!(silent.attempt_count(), 1);
    assert!(silent.attempts().is_empty());
}

async fn send_raw(
    upstream: &MockUpstream,
    request: Request<Full<Bytes>>,
) -> (u16, http::HeaderMap, serde_json::Value) {
    let mut sender = connect(upstream.addr()).await;
    let res = sender.send_request(request).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, json_body(res).await)
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_errors() {
    let upstream = MockUpstream::builder()
        .max_body_bytes(1024)
        .start()
        .await
        .unwrap();
    let host = upstream.addr().to_string();
    let post = |path: &str, body: &str| {
        Request::post(path)
            .header("host", &host)
            .body(Full::from(body.to_owned()))
            .unwrap()
    };

    let (status, _, body) = send_raw(&upstream, post(COMPLETIONS_PATH, "not json")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(
        body["error"]["message"],
        "the request body is not a JSON object"
    );

    let (status, _, body) = send_raw(&upstream, post(COMPLETIONS_PATH, r#"{"messages":[]}"#)).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "you must provide a model parameter"
    );

    let (status, _, body) = send_raw(&upstream, post(COMPLETIONS_PATH, r#"[1,2]"#)).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].is_string());

    let big = format!(
        r#"{{"model":"m","messages":[{{"content":"{}"}}]}}"#,
        "x".repeat(2048)
    );
    let (status, _, body) = send_raw(&upstream, post(COMPLETIONS_PATH, &big)).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "request_too_large");

    let (status, _, body) = send_raw(&upstream, post("/v1/embeddings", "{}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_url");

    let get = Request::get(COMPLETIONS_PATH)
        .header("host", &host)
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = send_raw(&upstream, get).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");

    // Rejected completions are logged; other paths and methods are not attempts.
    let faults: Vec<_> = upstream
        .attempts()
        .iter()
        .map(|a| (a.fault, a.status, a.seq))
        .collect();
    assert_eq!(
        faults,
        [
            ("bad_request", Some(400), 0),
            ("bad_request", Some(400), 0),
            ("bad_request", Some(400), 0),
            ("payload_too_large", Some(413), 0),
        ]
    );
}

#[tokio::test]
async fn invalid_faults_are_refused_at_start_and_answered_with_500_later() {
    let error = MockUpstream::builder()
        .route("m", Fault::status(1000))
        .start()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("status 1000"), "{error}");

    let upstream = MockUpstream::builder().start().await.unwrap();
    upstream.set_default_fault(Fault::status(429).header("bad header", "x"));
    let res = ask(upstream.addr(), "m", false).await.unwrap();
    assert_eq!(res.status(), 500);
    let body = json_body(res).await;
    assert_eq!(body["error"]["code"], "invalid_mock_fault");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("invalid header name"));
    assert_eq!(upstream.attempts()[0].fault, "invalid_fault");
}

#[tokio::test]
async fn urls_point_at_the_bound_port() {
    let upstream = MockUpstream::builder().start().await.unwrap();
    let port = upstream.addr().port();
    assert_ne!(port, 0);
    assert!(upstream.addr().ip().is_loopback());
    assert_eq!(upstream.base_url(), format!("http://127.0.0.1:{port}/v1"));
    assert_eq!(
        upstream.completions_url(),
        format!("http://127.0.0.1:{port}/v1/chat/completions")
    );
}

#[tokio::test]
async fn works_with_the_hyper_util_legacy_client() {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let upstream = MockUpstream::builder()
        .route("gpt-bad", Fault::ResetBeforeHeaders)
        .start()
        .await
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = |model: &str| {
        Request::post(upstream.completions_url())
            .body(Full::from(chat_json(model, false).to_string()))
            .unwrap()
    };
    let res = client.request(request("gpt-4o")).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body,
        tower_llm_chaos::canonical::completion_json(1, "gpt-4o", usage())
    );
    let error = client.request(request("gpt-bad")).await.unwrap_err();
    assert_eq!(
        tower_llm_core::classify_error(&error).kind,
        tower_llm_core::ErrorKind::Transport
    );
}

#[tokio::test]
async fn bodiless_and_unusual_statuses_are_sent_as_configured() {
    let upstream = MockUpstream::builder()
        .route("no-content", Fault::status(204))
        .route("not-modified", Fault::status(304))
        .route("odd", Fault::status(999))
        .start()
        .await
        .unwrap();
    for (model, status, empty) in [
        ("no-content", 204, true),
        ("not-modified", 304, true),
        ("odd", 999, false),
    ] {
        let res = ask(upstream.addr(), model, false).await.unwrap();
        assert_eq!(res.status().as_u16(), status);
        let (body, error) = read_body(res).await;
        assert!(error.is_none());
        assert_eq!(body.is_empty(), empty, "{model}");
    }
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<MockUpstream>();
    send_sync::<tower_llm_chaos::MockHandle>();
    send_sync::<tower_llm_chaos::Attempt>();
    send_sync::<Fault>();
    send_sync::<FaultProfile>();
    send_sync::<tower_llm_chaos::AutoAdvanceGuard>();
}
