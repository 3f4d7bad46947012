//! `Duration::MAX` for the retry layer's configured times means "no limit", never an `Instant`
//! overflow (issue 15, finding 7), with paused time.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tower::{service_fn, Layer, ServiceExt};
use tower_llm_retry::RetryLayer;

#[tokio::test(start_paused = true)]
async fn unbounded_times_retry_and_answer() {
    let calls = Arc::new(AtomicU32::new(0));
    let upstream = {
        let calls = Arc::clone(&calls);
        service_fn(move |_: http::Request<Full<Bytes>>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let status = if n == 0 { 503 } else { 200 };
                Ok::<_, Infallible>(http::Response::builder().status(status).body(()).unwrap())
            }
        })
    };
    let svc = RetryLayer::builder()
        .max_attempts(3)
        .attempt_timeout(Duration::MAX)
        .deadline(Duration::MAX)
        .max_server_delay(Duration::MAX)
        .seed(7)
        .build()
        .unwrap()
        .layer(upstream);
    let req = http::Request::post("http://llm.test/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
