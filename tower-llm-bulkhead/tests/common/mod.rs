//! Shared test helpers: an upstream that records its own concurrency, and body helpers.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use tower::service_fn;

/// Counts calls running inside the upstream, and the most ever seen at once.
#[derive(Clone, Default)]
pub struct Probe {
    current: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

/// Leaves the probe when dropped (so a panicking or cancelled call leaves too).
pub struct Inside(Probe);

impl Drop for Inside {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Probe {
    pub fn enter(&self) -> Inside {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        Inside(self.clone())
    }
    pub fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

pub type Body = Full<Bytes>;

/// An upstream that takes `latency` and answers `ok`.
pub fn slow_upstream(
    probe: Probe,
    latency: Duration,
) -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |_req: http::Request<()>| {
        let probe = probe.clone();
        async move {
            let _inside = probe.enter();
            tokio::time::sleep(latency).await;
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    })
}

/// A streaming body of `chunks` chunks, one every `gap`.
pub fn drip(
    chunks: usize,
    gap: Duration,
) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    let stream = futures_util::stream::unfold(0usize, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(gap).await;
        Some((
            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(format!("chunk{i}")))),
            i + 1,
        ))
    });
    StreamBody::new(stream).boxed()
}

/// Let spawned tasks run until they block on something (timers stay paused).
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}
