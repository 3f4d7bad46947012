//! The default upstream client over real loopback HTTP: HTTP/1.1 connections driven by the
//! answer's reader (`tower_llm::client`'s `driven` module) are reused, released on drop, reaped
//! when idle, and fail with the kinds the classifier expects.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_llm::client::{UpstreamClient, UpstreamClientBuilder};
use tower_llm::core::{classify_error, ErrorKind, Target};
use tower_llm::StackConfig;
use tower_llm_chaos::{Fault, MockUpstream};

fn client(extra: &str) -> UpstreamClient<Full<Bytes>> {
    let config = StackConfig::from_toml_str(&format!(
        "[[providers]]\nname = \"p\"\nbase_url = \"http://127.0.0.1:1/v1\"\n{extra}\n\
         [[routes]]\nmatch = \"*\"\ntargets = [{{ provider = \"p\" }}]\n"
    ))
    .expect("config");
    UpstreamClientBuilder::new(&config).build().expect("client")
}

/// A request to provider `p` (whose connection settings the test's client holds).
fn chat(url: &str, stream: bool) -> Request<Full<Bytes>> {
    let mut req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::from(format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"stream":{stream}}}"#
        )))
        .expect("request");
    req.extensions_mut().insert(Target::new("p", "m"));
    req
}

/// Until `check` holds, on real loopback IO (bounded).
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("{what}: never");
}

/// The answer to one request through `client`, read whole (it must be a 200).
async fn answer(client: &UpstreamClient<Full<Bytes>>, url: &str, stream: bool) -> Bytes {
    let res = client.clone().oneshot(chat(url, stream)).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn streamed_and_json_answers_arrive_whole() {
    let mock = MockUpstream::builder()
        .answer_tokens(200)
        .start()
        .await
        .unwrap();
    let client = client("");
    for i in 0..6 {
        let stream = i % 2 == 0;
        let body = answer(&client, &mock.completions_url(), stream).await;
        let text = std::str::from_utf8(&body).unwrap();
        if stream {
            // 200 tokens, the finish chunk and `[DONE]`.
            assert_eq!(text.matches("data: ").count(), 202, "{text}");
            assert!(text.ends_with("data: [DONE]\n\n"));
        } else {
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(json["object"], "chat.completion");
        }
    }
    // Dropping the client drops its pool and the idle connection in it.
    assert_eq!(mock.open_connections(), 1);
    drop(client);
    eventually("the idle connection closes with its client", || {
        mock.open_connections() == 0
    })
    .await;
    let attempts = mock.attempts();
    assert_eq!(attempts.len(), 6);
    assert_eq!(attempts[0].path, "/v1/chat/completions");
    assert_eq!(
        attempts[0].headers["host"],
        mock.addr().to_string().as_str()
    );
}

/// A keep-alive HTTP/1.1 server answering `ok` in two chunks (chunked encoding, as a stream is
/// sent), counting the connections it accepted.
async fn counting_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let answer = hyper::service::service_fn(|_req| async {
                    let chunks = ["o", "k"].map(|c| {
                        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(
                            c.as_bytes(),
                        )))
                    });
                    let body = StreamBody::new(futures_util::stream::iter(chunks));
                    Ok::<_, std::convert::Infallible>(http::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), answer)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let (addr, accepted) = counting_server().await;
    let client = client("");
    let url = format!("http://{addr}/v1/chat/completions");
    for _ in 0..5 {
        assert_eq!(answer(&client, &url, false).await, "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // Two at once need two connections; both are kept, and serve what follows.
    let (a, b) = tokio::join!(answer(&client, &url, false), answer(&client, &url, false));
    assert_eq!((a, b), (Bytes::from("ok"), Bytes::from("ok")));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    for _ in 0..3 {
        answer(&client, &url, false).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_body_dropped_mid_stream_closes_its_connection() {
    let mock = MockUpstream::builder()
        .default_fault(Fault::Stall { after: 2 })
        .start()
        .await
        .unwrap();
    let client = client("");
    let res = client
        .clone()
        .oneshot(chat(&mock.completions_url(), true))
        .await
        .unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().unwrap().starts_with(b"data: "));
    assert_eq!(mock.open_connections(), 1);
    drop(body);
    eventually("the stalled connection closes", || {
        mock.open_connections() == 0
    })
    .await;
    // The next request gets a new connection and its answer.
    mock.set_default_fault(Fault::Healthy);
    answer(&client, &mock.completions_url(), false).await;
}

#[tokio::test]
async fn a_response_future_dropped_before_the_head_closes_its_connection() {
    let mock = MockUpstream::builder()
        .default_fault(Fault::Hang)
        .start()
        .await
        .unwrap();
    let client = client("");
    let pending = client.clone().oneshot(chat(&mock.completions_url(), false));
    let cut = tokio::time::timeout(Duration::from_millis(50), pending).await;
    assert!(cut.is_err(), "the mock hangs");
    eventually("the hung connection closes", || {
        mock.open_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let mock = MockUpstream::builder().start().await.unwrap();
    let client = client("pool_idle_timeout_ms = 200");
    answer(&client, &mock.completions_url(), false).await;
    assert_eq!(mock.open_connections(), 1);
    // The reaper runs every 100 ms (half the timeout, at least 100 ms).
    tokio::time::sleep(Duration::from_millis(400)).await;
    eventually("the idle connection is reaped", || {
        mock.open_connections() == 0
    })
    .await;
}

/// A burst of answers in flight at once, then another of the same size: the second opens no
/// connection, every one of the first is kept idle for it (each new one would be a TCP and, to
/// an https provider, a TLS handshake: ~1.1 M instructions and a round trip or two before the
/// request leaves). The pool once kept 32 idle per host, below the bulkhead's 64 in flight per
/// target: a burst of 64 then opened 32 connections again every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_reuses_every_connection_of_the_burst_before() {
    const BURST: usize = 96;
    let mock = MockUpstream::builder().start().await.unwrap();
    // Each answer waits a second: the whole burst is in flight at once (asserted below by the
    // first burst opening one connection per request).
    mock.set_default_fault(Fault::Latency(Duration::from_secs(1)));
    let client = client("");
    let url = mock.completions_url();
    for burst in 1..=2 {
        let mut answers = tokio::task::JoinSet::new();
        for _ in 0..BURST {
            let (client, url) = (client.clone(), url.clone());
            answers.spawn(async move { answer(&client, &url, false).await });
        }
        while let Some(answered) = answers.join_next().await {
            answered.expect("an answer");
        }
        assert_eq!(
            mock.accepted_connections(),
            BURST,
            "after burst {burst}: one connection per answer in flight, none opened again"
        );
        assert_eq!(mock.open_connections(), BURST, "all kept idle");
    }
    assert_eq!(mock.attempts().len(), 2 * BURST);
}

#[tokio::test]
async fn no_idle_connection_is_kept_with_a_pool_of_zero() {
    let mock = MockUpstream::builder().start().await.unwrap();
    let client = client("pool_max_idle_per_host = 0");
    for _ in 0..2 {
        answer(&client, &mock.completions_url(), false).await;
        eventually("the answered connection closes", || {
            mock.open_connections() == 0
        })
        .await;
    }
}

/// A server that answers each connection's first request and then closes it, without saying so
/// (`Connection: close` absent): the pooled connection is dead by the next request.
async fn one_answer_per_connection() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                // Head and body (`Content-Length` of the test's request) read whole.
                while !String::from_utf8_lossy(&seen).contains("}") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_peer_is_not_reused() {
    let addr = one_answer_per_connection().await;
    let client = client("");
    let url = format!("http://{addr}/v1/chat/completions");
    for _ in 0..3 {
        assert_eq!(answer(&client, &url, false).await, "ok");
        // Let the peer's close arrive before the next request.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_failure() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    let err = client("")
        .oneshot(chat(&format!("http://{gone}/v1/chat/completions"), false))
        .await
        .unwrap_err();
    assert_eq!(classify_error(&*err).kind, ErrorKind::Transport, "{err}");
    assert!(
        err.to_string()
            .contains("connecting to the upstream failed"),
        "{err}"
    );
}

#[tokio::test]
async fn a_relative_uri_is_an_error_not_a_panic() {
    let err = client("")
        .oneshot(chat("/v1/chat/completions", false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not absolute"), "{err}");
}

/// `inner`, with the wake-ups it gives its own task during a poll counted (they cost the task a
/// trip through the scheduler); every wake-up is passed on.
struct SelfWakes<F> {
    inner: F,
    during_poll: Arc<WakeCounter>,
}

struct WakeCounter {
    polling: std::sync::atomic::AtomicBool,
    count: AtomicUsize,
    task: std::sync::Mutex<Option<std::task::Waker>>,
}

impl std::task::Wake for WakeCounter {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.polling.load(Ordering::SeqCst) {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(task) = self.task.lock().unwrap().as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F: std::future::Future + Unpin> std::future::Future for SelfWakes<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let counter = Arc::clone(&self.during_poll);
        *counter.task.lock().unwrap() = Some(cx.waker().clone());
        let waker = std::task::Waker::from(Arc::clone(&counter));
        counter.polling.store(true, Ordering::SeqCst);
        let polled =
            std::pin::Pin::new(&mut self.inner).poll(&mut std::task::Context::from_waker(&waker));
        counter.polling.store(false, Ordering::SeqCst);
        polled
    }
}

/// The client drives its connection from the answer's reader, and the two wake each other as
/// they go (the connection hands over the head and each read; the reader takes them): those
/// wake-ups stay inside the client's poll, so the caller's task is never woken by its own
/// upstream connection, which would cost it a trip through the scheduler per answer and per read
/// of a stream.
#[tokio::test]
async fn the_reading_task_is_not_woken_by_its_own_connection() {
    let mock = MockUpstream::builder()
        .answer_tokens(50)
        .start()
        .await
        .unwrap();
    let client = client("");
    let counter = Arc::new(WakeCounter {
        polling: false.into(),
        count: AtomicUsize::new(0),
        task: std::sync::Mutex::new(None),
    });
    for stream in [false, true, false, true] {
        let url = mock.completions_url();
        let exchange = Box::pin(async {
            let res = client.clone().oneshot(chat(&url, stream)).await.unwrap();
            res.into_body().collect().await.unwrap().to_bytes()
        });
        let body = SelfWakes {
            inner: exchange,
            during_poll: Arc::clone(&counter),
        }
        .await;
        assert!(body.ends_with(if stream {
            b"data: [DONE]\n\n" as &[u8]
        } else {
            b"}"
        }));
    }
    assert_eq!(counter.count.load(Ordering::SeqCst), 0, "self wake-ups");
}
