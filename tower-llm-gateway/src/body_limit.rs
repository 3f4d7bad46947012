//! `[request] max_body_bytes`, refused so that the client reads the `413`; and
//! `[gateway] body_timeout_ms`, the longest pause while a client sends its body (a `408`).
//!
//! A server that answers `413` and closes the connection while the client is still sending its
//! body makes the kernel reset the connection (unread data was pending): most clients then see
//! a broken pipe or a reset, not the `413`. So, once a body is known to be too large, the
//! gateway reads and discards the rest of it, up to a bound and within a time limit, and only
//! then answers `413` with `connection: close`, closing cleanly:
//!
//! | the request | what happens |
//! |---|---|
//! | `content-length` ≤ `max_body_bytes` | passed on; hyper holds the body to its length |
//! | `content-length` > `max_body_bytes`, ≤ the drain bound | the body is read and discarded, then `413` |
//! | `content-length` past the drain bound, or `expect: 100-continue` | `413` at once, without reading (a `100-continue` client has not sent its body) |
//! | no `content-length` (chunked), longer than `max_body_bytes` | the handler's read fails at the limit ([`BodyTooLarge`]); the rest is read and discarded, then the handler's `413` |
//!
//! The drain bound is [`DRAIN_FACTOR`] × `max_body_bytes`, at least [`MIN_DRAIN_BYTES`]; the
//! drain takes at most `[gateway] body_timeout_ms` in all. A body still coming past either is
//! not read further: the `413` goes out and the connection is closed (the client may see a
//! reset, which it earned).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT};
use http::{HeaderMap, HeaderValue, Request};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project::pin_project;
use tower::{Layer, Service};

use crate::errors;

/// The drain bound is this many times `max_body_bytes` ...
pub(crate) const DRAIN_FACTOR: u64 = 4;

/// ... and at least this many bytes (1 MiB).
pub(crate) const MIN_DRAIN_BYTES: u64 = 1 << 20;

/// How many bytes of a refused body are read at most, counted from its start.
pub(crate) fn drain_bound(limit: u64) -> u64 {
    limit.saturating_mul(DRAIN_FACTOR).max(MIN_DRAIN_BYTES)
}

/// The error a request body longer than `max_body_bytes` fails with, while it is read.
#[derive(Debug)]
pub(crate) struct BodyTooLarge {
    limit: u64,
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the request body is larger than {} bytes", self.limit)
    }
}

impl StdError for BodyTooLarge {}

/// The error a request body fails with when the client paused longer than
/// `[gateway] body_timeout_ms` while sending it.
#[derive(Debug)]
pub(crate) struct BodyTimeout {
    within: Duration,
}

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the client paused longer than {} ms while sending the request body",
            self.within.as_millis()
        )
    }
}

impl StdError for BodyTimeout {}

/// Applies `max_body_bytes` with a drain, and `body_timeout_ms` to the reading of the body; see
/// the [module docs](self).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyLimitLayer {
    limit: u64,
    within: Duration,
}

impl BodyLimitLayer {
    /// `limit` is `[request] max_body_bytes`, `within` is `[gateway] body_timeout_ms`.
    pub(crate) fn new(limit: u64, within: Duration) -> Self {
        BodyLimitLayer { limit, within }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> BodyLimit<S> {
        BodyLimit {
            inner,
            limit: self.limit,
            within: self.within,
        }
    }
}

/// The service of [`BodyLimitLayer`].
#[derive(Clone, Debug)]
pub(crate) struct BodyLimit<S> {
    inner: S,
    limit: u64,
    within: Duration,
}

/// The rest of a body that passed the limit while the handler read it, handed back for the
/// drain.
pub(crate) struct Spill {
    body: Body,
    seen: u64,
}

pub(crate) type SpillSlot = Arc<Mutex<Option<Spill>>>;

impl<S> Service<Request<Body>> for BodyLimit<S>
where
    S: Service<Request<LimitedBody>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BodyLimitFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let declared = content_length(&parts.headers);
        if let Some(len) = declared.filter(|len| *len > self.limit) {
            let refused = too_large(self.limit);
            if len > drain_bound(self.limit) || expects_continue(&parts.headers) {
                return BodyLimitFuture::Refused {
                    res: Some(refused),
                    _error: std::marker::PhantomData,
                };
            }
            let drain = drain(body, 0, self.limit, self.within);
            return BodyLimitFuture::Draining {
                drain: Box::pin(async move {
                    drain.await;
                    refused
                }),
            };
        }
        // A body with a length cannot outgrow it (hyper holds it to it); only a chunked one
        // needs a slot to hand its rest back in.
        let spill = declared.is_none().then(SpillSlot::default);
        let body = LimitedBody {
            inner: Some(body),
            remaining: self.limit,
            limit: self.limit,
            spill: spill.clone(),
            idle: self.within,
            timer: None,
        };
        BodyLimitFuture::Inner {
            fut: self.inner.call(Request::from_parts(parts, body)),
            spill,
            limit: self.limit,
            within: self.within,
        }
    }
}

/// Response future of [`BodyLimit`].
#[pin_project(project = Proj)]
pub(crate) enum BodyLimitFuture<F, E> {
    /// The inner service's call; then, if the body passed the limit while read, the drain.
    Inner {
        #[pin]
        fut: F,
        spill: Option<SpillSlot>,
        limit: u64,
        within: Duration,
    },
    /// Reading and discarding a refused body, then the `413` (rare: boxed).
    Draining {
        drain: Pin<Box<dyn Future<Output = Response> + Send>>,
    },
    /// Refused without reading.
    Refused {
        res: Option<Response>,
        _error: std::marker::PhantomData<fn() -> E>,
    },
}

impl<F, E> Future for BodyLimitFuture<F, E>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let draining = match self.as_mut().project() {
                Proj::Inner {
                    fut,
                    spill,
                    limit,
                    within,
                } => {
                    let res = ready!(fut.poll(cx))?;
                    let spilled = spill.as_ref().and_then(|slot| {
                        slot.lock().unwrap_or_else(PoisonError::into_inner).take()
                    });
                    let Some(Spill { body, seen }) = spilled else {
                        return Poll::Ready(Ok(res));
                    };
                    let drain = drain(body, seen, *limit, *within);
                    Box::pin(async move {
                        drain.await;
                        close(res)
                    }) as Pin<Box<dyn Future<Output = Response> + Send>>
                }
                Proj::Draining { drain } => return drain.as_mut().poll(cx).map(Ok),
                Proj::Refused { res, .. } => {
                    return Poll::Ready(Ok(res.take().unwrap_or_else(|| {
                        // Polled again after completion: answer the same way rather than panic.
                        too_large(0)
                    })));
                }
            };
            self.set(BodyLimitFuture::Draining { drain: draining });
        }
    }
}

/// Read and discard `body` (of which `seen` bytes were read already) until it ends, the drain
/// bound is passed, it fails, or `within` has passed.
fn drain(
    mut body: Body,
    seen: u64,
    limit: u64,
    within: Duration,
) -> impl Future<Output = ()> + Send {
    let bound = drain_bound(limit);
    async move {
        let mut seen = seen;
        let read = async {
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return "failed";
                };
                if let Some(data) = frame.data_ref() {
                    seen = seen.saturating_add(data.len() as u64);
                    if seen > bound {
                        return "past the drain bound";
                    }
                }
            }
            "read to its end"
        };
        let outcome = tokio::time::timeout(within, read)
            .await
            .unwrap_or("not sent within the body timeout");
        tracing::debug!(limit, bound, outcome, "refused an oversized request body");
    }
}

/// The `413`, closing the connection.
fn too_large(limit: u64) -> Response {
    close(errors::too_large(limit))
}

fn close(mut res: Response) -> Response {
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    res
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// A request body counted against the limit: past it, reading fails with [`BodyTooLarge`] and
/// the rest of the body goes to the slot (when there is one) for the drain. A pause of more
/// than `idle` while the reader waits for the next frame fails it with [`BodyTimeout`].
pub(crate) struct LimitedBody {
    inner: Option<Body>,
    remaining: u64,
    limit: u64,
    spill: Option<SpillSlot>,
    idle: Duration,
    /// The pause's timer, made the first time the reader has to wait (most bodies arrive with
    /// their head and never do) and then reused; the flag is `false` once a frame came
    /// (disarmed: re-armed, from then, at the reader's next wait).
    timer: Option<(Pin<Box<tokio::time::Sleep>>, bool)>,
}

impl LimitedBody {
    /// The reader waits for the next frame: whether the pause has lasted longer than `idle`.
    fn paused_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        let idle = self.idle;
        let (sleep, armed) = self
            .timer
            .get_or_insert_with(|| (Box::pin(tokio::time::sleep(idle)), true));
        if !*armed {
            sleep.as_mut().reset(tokio::time::Instant::now() + idle);
            *armed = true;
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) else {
            if this.paused_too_long(cx) {
                // Nothing more is read: hyper closes the connection after the answer.
                this.inner = None;
                return Poll::Ready(Some(Err(Box::new(BodyTimeout { within: this.idle }))));
            }
            return Poll::Pending;
        };
        if let Some((_, armed)) = this.timer.as_mut() {
            // The next pause starts when the reader next waits.
            *armed = false;
        }
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
            None => return Poll::Ready(None),
        };
        let len = frame.data_ref().map_or(0, |data| data.len() as u64);
        if len <= this.remaining {
            this.remaining -= len;
            return Poll::Ready(Some(Ok(frame)));
        }
        if let (Some(body), Some(slot)) = (this.inner.take(), this.spill.as_ref()) {
            let seen = this.limit - this.remaining + len;
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Spill { body, seen });
        }
        Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit: this.limit }))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_bound_is_four_times_the_limit_at_least_one_mib() {
        assert_eq!(drain_bound(1), MIN_DRAIN_BYTES);
        assert_eq!(drain_bound(1 << 20), 4 << 20);
        assert_eq!(drain_bound(u64::MAX), u64::MAX);
    }

    /// A body of ready chunks.
    struct Chunks(std::collections::VecDeque<&'static str>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(
                self.0
                    .pop_front()
                    .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk.as_bytes())))),
            )
        }
    }

    /// A body whose frames come from a channel, whenever the test sends them.
    struct Channel(tokio::sync::mpsc::Receiver<&'static str>);

    impl http_body::Body for Channel {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes())))))
        }
    }

    fn timed(rx: tokio::sync::mpsc::Receiver<&'static str>, idle: Duration) -> LimitedBody {
        LimitedBody {
            inner: Some(Body::new(Channel(rx))),
            remaining: 1 << 20,
            limit: 1 << 20,
            spill: None,
            idle,
            timer: None,
        }
    }

    /// The timeout is for a pause, not for the whole body: frames 1.5 s apart pass a 2 s limit
    /// however long the body takes; a 2 s pause fails it, and nothing more is read.
    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_body_timeout_fails_the_body_and_shorter_ones_do_not() {
        let idle = Duration::from_secs(2);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut body = timed(rx, idle);
        let sender = tokio::spawn(async move {
            for chunk in ["a", "b", "c", "d"] {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                tx.send(chunk).await.unwrap();
            }
            // Then a pause past the limit, the sender still there.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        let started = tokio::time::Instant::now();
        let mut read = String::new();
        let err = loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    read.push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap())
                }
                Some(Err(err)) => break err,
                None => panic!("the body ended instead of timing out"),
            }
        };
        assert_eq!(read, "abcd", "6 s of body, no pause over 2 s");
        assert_eq!(started.elapsed(), Duration::from_millis(6_000) + idle);
        let err = err.downcast_ref::<BodyTimeout>().expect("BodyTimeout");
        assert_eq!(
            err.to_string(),
            "the client paused longer than 2000 ms while sending the request body"
        );
        assert!(body.frame().await.is_none(), "nothing more is read");
        sender.abort();
    }

    /// A body ready at once never makes a timer.
    #[tokio::test(start_paused = true)]
    async fn a_body_read_without_waiting_makes_no_timer() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send("whole").await.unwrap();
        drop(tx);
        let mut body = timed(rx, Duration::from_secs(2));
        let bytes = (&mut body).collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "whole");
        assert!(body.timer.is_none());
    }

    #[tokio::test]
    async fn past_the_limit_a_chunked_body_fails_and_hands_its_rest_back() {
        let inner = Body::new(Chunks(["12345", "6789", "abc"].into()));
        let slot = SpillSlot::default();
        let mut body = LimitedBody {
            inner: Some(inner),
            remaining: 8,
            limit: 8,
            spill: Some(slot.clone()),
            idle: Duration::from_secs(30),
            timer: None,
        };
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "12345");
        let err = body.frame().await.unwrap().unwrap_err();
        let err = err.downcast_ref::<BodyTooLarge>().expect("BodyTooLarge");
        assert_eq!(err.to_string(), "the request body is larger than 8 bytes");
        assert!(body.frame().await.is_none());
        let spill = slot
            .lock()
            .unwrap()
            .take()
            .expect("the rest is handed back");
        assert_eq!(spill.seen, 9);
        let rest = spill.body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "abc");
    }
}
