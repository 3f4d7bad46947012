//! `classify_error`: io errors, timeouts, real hyper / hyper-util client errors over loopback, and
//! tower-llm's own errors.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use tower::{service_fn, ServiceExt};
use tower_llm_core::sse::SseError;
use tower_llm_core::{
    classify_error, AllTargetsFailed, AttemptRecord, AttemptTimeout, BoxError, BreakerOpen,
    BulkheadFull, ClassifiedError, ErrorKind, Failure, LimitKind, Origin, RetriesExhausted, Target,
};

fn kind_of(err: &(dyn Error + 'static)) -> ErrorKind {
    classify_error(err).kind
}

#[test]
fn io_errors() {
    use std::io::ErrorKind as Io;
    let cases = [
        (Io::ConnectionRefused, ErrorKind::Transport),
        (Io::ConnectionReset, ErrorKind::Transport),
        (Io::ConnectionAborted, ErrorKind::Transport),
        (Io::NotConnected, ErrorKind::Transport),
        (Io::BrokenPipe, ErrorKind::Transport),
        (Io::UnexpectedEof, ErrorKind::Transport),
        (Io::AddrNotAvailable, ErrorKind::Transport),
        (Io::TimedOut, ErrorKind::Timeout),
        (Io::InvalidData, ErrorKind::InvalidResponse),
    ];
    for (io, kind) in cases {
        let err = std::io::Error::from(io);
        let f = classify_error(&err);
        assert_eq!(f, Failure::new(kind), "{io:?}");
    }
}

#[test]
fn io_error_wrapping_a_known_error_keeps_its_kind() {
    let wrapped = std::io::Error::other(BreakerOpen::new("b", "open", Duration::from_secs(1)));
    let f = classify_error(&wrapped);
    assert_eq!((f.kind, f.origin), (ErrorKind::Overloaded, Origin::Local));
    let wrapped = std::io::Error::other(AttemptTimeout::new(Duration::from_secs(1)));
    assert_eq!(kind_of(&wrapped), ErrorKind::Timeout);
    // An unknown inner error: the io kind decides.
    let wrapped = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
    assert_eq!(kind_of(&wrapped), ErrorKind::Transport);
}

#[derive(Debug)]
struct Wrapper(Option<BoxError>);

impl fmt::Display for Wrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("wrapper")
    }
}

impl Error for Wrapper {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[test]
fn the_source_chain_is_walked() {
    assert_eq!(kind_of(&Wrapper(None)), ErrorKind::Unknown);
    let inner: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    let outer = Wrapper(Some(Box::new(Wrapper(Some(inner)))));
    assert_eq!(kind_of(&outer), ErrorKind::Transport);
}

#[tokio::test(start_paused = true)]
async fn tokio_elapsed() {
    let err = tokio::time::timeout(Duration::from_secs(1), std::future::pending::<()>())
        .await
        .unwrap_err();
    assert_eq!(classify_error(&err), Failure::new(ErrorKind::Timeout));
}

#[tokio::test(start_paused = true)]
async fn tower_elapsed() {
    let never = service_fn(|_req: ()| std::future::pending::<Result<(), BoxError>>());
    let err = tower::timeout::Timeout::new(never, Duration::from_secs(1))
        .oneshot(())
        .await
        .unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>());
    assert_eq!(classify_error(&*err), Failure::new(ErrorKind::Timeout));
}

/// hyper and hyper-util client errors, read with the `hyper` feature (on by default).
#[cfg(feature = "hyper")]
mod hyper_errors {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
        Client::builder(TokioExecutor::new()).build_http()
    }

    fn get(addr: std::net::SocketAddr) -> http::Request<Full<Bytes>> {
        http::Request::get(format!("http://{addr}/v1/chat/completions"))
            .body(Full::default())
            .unwrap()
    }

    #[tokio::test]
    async fn hyper_util_connect_error_is_transport() {
        // Take a free port, then close it: nothing listens there.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = client().request(get(addr)).await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert_eq!(classify_error(&err), Failure::new(ErrorKind::Transport));
        // Boxed, as a tower service returns it.
        let boxed: BoxError = Box::new(err);
        assert_eq!(kind_of(&*boxed), ErrorKind::Transport);
    }

    /// A server that accepts one connection, reads the request head, and answers with `reply`
    /// (then closes).
    async fn one_shot_server(reply: &'static [u8]) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut read = 0;
            while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf[read..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => read += n,
                }
            }
            let _ = socket.write_all(reply).await;
            let _ = socket.shutdown().await;
        });
        addr
    }

    #[tokio::test]
    async fn connection_closed_before_headers_is_transport() {
        let addr = one_shot_server(b"").await;
        let err = client().request(get(addr)).await.unwrap_err();
        assert!(!err.is_connect());
        assert_eq!(
            classify_error(&err),
            Failure::new(ErrorKind::Transport),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn garbage_instead_of_http_is_invalid_response() {
        let addr = one_shot_server(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        let err = client().request(get(addr)).await.unwrap_err();
        assert_eq!(
            classify_error(&err),
            Failure::new(ErrorKind::InvalidResponse),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn body_cut_short_is_transport() {
        let addr = one_shot_server(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"id\":").await;
        let res = client().request(get(addr)).await.unwrap();
        let err = res.into_body().collect().await.unwrap_err();
        assert_eq!(
            classify_error(&err),
            Failure::new(ErrorKind::Transport),
            "{err:?}"
        );
    }
}

#[test]
fn breaker_open_is_a_local_overload() {
    let err = BreakerOpen::new(
        "openai/gpt-4o",
        "5 consecutive failures",
        Duration::from_secs(5),
    );
    let f = classify_error(&err);
    assert_eq!(
        f,
        Failure::local(ErrorKind::Overloaded).with_retry_after(Some(Duration::from_secs(5)))
    );
    assert!(!f.counts_against_breaker());
}

#[test]
fn bulkhead_full_by_limit() {
    let cases = [
        (LimitKind::Concurrency, ErrorKind::Overloaded),
        (LimitKind::Queue, ErrorKind::Overloaded),
        (LimitKind::MaxWait, ErrorKind::Overloaded),
        (LimitKind::Partitions, ErrorKind::Overloaded),
        (LimitKind::Rate, ErrorKind::RateLimited),
        (LimitKind::Tokens, ErrorKind::RateLimited),
        (LimitKind::RequestTooLarge, ErrorKind::BadRequest),
    ];
    for (limit, kind) in cases {
        let err = BulkheadFull::new("groq", limit, 64, Duration::from_secs(1));
        assert_eq!(classify_error(&err), Failure::local(kind), "{limit}");
        let err = err.with_retry_after(Duration::from_millis(250));
        let f = classify_error(&err);
        assert_eq!(f.retry_after, Some(Duration::from_millis(250)));
        assert_eq!(f.origin, Origin::Local);
        assert!(!f.counts_against_breaker());
    }
}

#[test]
fn classified_error_keeps_kind_and_delay() {
    for kind in ErrorKind::ALL {
        let err = ClassifiedError::new(kind, "stream cut").with_retry_after(Duration::from_secs(2));
        assert_eq!(
            classify_error(&err),
            Failure::new(kind).with_retry_after(Some(Duration::from_secs(2)))
        );
    }
}

#[test]
fn attempt_timeout_and_sse_errors() {
    assert_eq!(
        classify_error(&AttemptTimeout::new(Duration::from_secs(30))),
        Failure::new(ErrorKind::Timeout)
    );
    assert_eq!(
        classify_error(&SseError::EventTooLarge { limit: 1024 }),
        Failure::new(ErrorKind::InvalidResponse)
    );
}

fn record(kind: ErrorKind) -> AttemptRecord {
    AttemptRecord {
        attempt: 1,
        target: Some(Target::new("openai", "gpt-4o")),
        kind,
        status: Some(503),
        elapsed: Duration::from_millis(10),
        retry_after: Some(Duration::from_secs(1)),
    }
}

#[test]
fn retries_exhausted_is_its_last_error() {
    let last: BoxError = Box::new(ClassifiedError::new(ErrorKind::ServerError, "HTTP 500"));
    let err = RetriesExhausted::new(vec![record(ErrorKind::ServerError)], last);
    assert_eq!(classify_error(&err), Failure::new(ErrorKind::ServerError));

    let last: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    let err = RetriesExhausted::new(vec![record(ErrorKind::Transport)], last);
    assert_eq!(kind_of(&err), ErrorKind::Transport);
}

#[test]
fn all_targets_failed() {
    let last: BoxError = Box::new(BreakerOpen::new("b", "open", Duration::from_secs(3)));
    let err = AllTargetsFailed::new(vec![record(ErrorKind::Overloaded)], Some(last));
    let f = classify_error(&err);
    assert_eq!((f.kind, f.origin), (ErrorKind::Overloaded, Origin::Local));

    // No error, only records (every target answered with a failed response).
    let err = AllTargetsFailed::new(
        vec![record(ErrorKind::Auth), record(ErrorKind::RateLimited)],
        None,
    );
    assert_eq!(
        classify_error(&err),
        Failure::new(ErrorKind::RateLimited).with_retry_after(Some(Duration::from_secs(1)))
    );

    let err = AllTargetsFailed::new(Vec::new(), None);
    assert_eq!(classify_error(&err), Failure::new(ErrorKind::Unknown));
}

#[test]
fn unknown_errors() {
    assert_eq!(kind_of(&fmt::Error), ErrorKind::Unknown);
    let boxed: BoxError = "something odd".into();
    assert_eq!(kind_of(&*boxed), ErrorKind::Unknown);
}
