//! Reading a non-stream `2xx` answer whole, under the guard's time limits, before the response is
//! handed on: a body that stalls or breaks is then a failed attempt (retried or failed over)
//! rather than a hang or a broken `200` at the caller.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};

use super::config::StreamLimits;
use super::engine::after;
use crate::{classify_error, BoxError, ClassifiedError, ErrorKind};

/// What reading produced.
pub(crate) enum Read<B> {
    /// The whole body, read to its end.
    Whole {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// The body passed the cap: what was read, then the rest of the body, unguarded.
    OverCap { prefix: Bytes, rest: B },
}

/// The bytes read so far: one chunk is kept as it came (no copy); a second starts a buffer.
enum Buf {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Buf {
    fn push(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Buf::Empty) {
            Buf::Empty => Buf::One(data),
            Buf::One(first) => {
                let mut many = BytesMut::with_capacity(first.len() + data.len());
                many.extend_from_slice(&first);
                many.extend_from_slice(&data);
                Buf::Many(many)
            }
            Buf::Many(mut many) => {
                many.extend_from_slice(&data);
                Buf::Many(many)
            }
        };
    }

    fn take(&mut self) -> Bytes {
        match std::mem::replace(self, Buf::Empty) {
            Buf::Empty => Bytes::new(),
            Buf::One(bytes) => bytes,
            Buf::Many(many) => many.freeze(),
        }
    }
}

/// Reads one body whole: time to the first byte against `ttft`, silence between chunks against
/// `idle`, the whole read against `total` (all from the call). Dropping it drops the body.
#[pin_project]
pub(crate) struct WholeRead<B> {
    #[pin]
    sleep: Sleep,
    body: Option<B>,
    buf: Buf,
    len: usize,
    trailers: Option<HeaderMap>,
    first_byte: bool,
    started: Instant,
    limits: StreamLimits,
    cap: usize,
}

impl<B> WholeRead<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(body: B, limits: StreamLimits, cap: usize, started: Instant) -> Self {
        let deadline = after(started, limits.ttft.min(limits.total));
        WholeRead {
            sleep: tokio::time::sleep_until(deadline),
            body: Some(body),
            buf: Buf::Empty,
            len: 0,
            trailers: None,
            first_byte: false,
            started,
            limits,
            cap,
        }
    }

    pub(crate) fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Read<B>, ClassifiedError>> {
        let mut this = self.project();
        loop {
            let Some(body) = this.body.as_mut() else {
                return Poll::Ready(Err(ClassifiedError::new(
                    ErrorKind::Unknown,
                    "non-stream body polled after it was read",
                )));
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => {
                        *this.len = this.len.saturating_add(data.len());
                        this.buf.push(data);
                        if *this.len > *this.cap {
                            let prefix = this.buf.take();
                            return match this.body.take() {
                                Some(rest) => Poll::Ready(Ok(Read::OverCap { prefix, rest })),
                                None => Poll::Ready(Ok(Read::Whole {
                                    data: prefix,
                                    trailers: None,
                                })),
                            };
                        }
                        *this.first_byte = true;
                        // Silence is now measured from this chunk, still within the total.
                        let now = Instant::now();
                        let deadline = after(now, this.limits.idle)
                            .min(after(*this.started, this.limits.total));
                        this.sleep.as_mut().reset(deadline);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            match this.trailers.as_mut() {
                                Some(all) => all.extend(trailers),
                                None => *this.trailers = Some(trailers),
                            }
                        }
                    }
                },
                Poll::Ready(Some(Err(err))) => {
                    *this.body = None;
                    let err: BoxError = err.into();
                    let kind = match classify_error(&*err).kind {
                        ErrorKind::Unknown => ErrorKind::Transport,
                        kind => kind,
                    };
                    return Poll::Ready(Err(ClassifiedError::new(
                        kind,
                        format!("the answer body failed before its end: {err}"),
                    )));
                }
                Poll::Ready(None) => {
                    *this.body = None;
                    return Poll::Ready(Ok(Read::Whole {
                        data: this.buf.take(),
                        trailers: this.trailers.take(),
                    }));
                }
                Poll::Pending => {
                    if this.sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // Close the connection now rather than when the future is dropped.
                    *this.body = None;
                    let message = if *this.first_byte {
                        let elapsed = Instant::now().saturating_duration_since(*this.started);
                        if elapsed >= this.limits.total {
                            format!("the answer body took longer than {:?}", this.limits.total)
                        } else {
                            format!(
                                "the answer body was silent for {:?} after {} bytes",
                                this.limits.idle, this.len
                            )
                        }
                    } else {
                        format!(
                            "no byte of the answer body within {:?}",
                            this.limits.ttft.min(this.limits.total)
                        )
                    };
                    return Poll::Ready(Err(ClassifiedError::new(ErrorKind::Timeout, message)));
                }
            }
        }
    }
}
