//! Replayable bodies: [`ReplayBody`] holds bytes a layer has already read, followed by whatever
//! the inner body still has.
//!
//! For requests, [`ReplayBody::buffer`] reads a body up to a size limit so a retry or fallback
//! layer can send it again; a body over the limit keeps what was read and the unread rest, so it
//! is still sent whole, once, and [`ReplayBody::not_replayable`] says why it cannot be sent again.
//! For responses, the same type carries an error body an inspecting layer has read, or the first
//! SSE event a streaming layer has peeked, in front of the rest of the stream.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower_llm_core::{ReplayBody, ReplayableBody};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let body = Full::new(Bytes::from_static(br#"{"model":"gpt-4o"}"#));
//! let replay = ReplayBody::buffer(body, 64 * 1024).await.unwrap();
//! let again = replay.try_clone().expect("small bodies are replayable");
//! assert_eq!(again.collect().await.unwrap().to_bytes(), &br#"{"model":"gpt-4o"}"#[..]);
//!
//! // Over the limit: still sent whole, but only once.
//! let big = Full::new(Bytes::from(vec![b'x'; 100]));
//! let once = ReplayBody::buffer(big, 10).await.unwrap();
//! assert!(once.try_clone().is_none());
//! assert!(once.not_replayable().is_some());
//! assert_eq!(once.collect().await.unwrap().to_bytes().len(), 100);
//! # }
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project::pin_project;

use crate::BoxError;

/// Why a body cannot be sent more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReplayable {
    /// The body is larger than the buffering limit (in bytes).
    OverLimit {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The body was never buffered: it streams straight through.
    Streaming,
}

impl fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReplayable::OverLimit { limit } => {
                write!(
                    f,
                    "request body is larger than the {limit}-byte replay limit"
                )
            }
            NotReplayable::Streaming => {
                f.write_str("request body is streamed and was not buffered")
            }
        }
    }
}

/// A body made of bytes already read (`prefix`), optional trailers, then the unread rest of an
/// inner body. With no rest it is fully buffered and can be cloned cheaply.
#[pin_project]
pub struct ReplayBody<B> {
    prefix: Option<Bytes>,
    /// Boxed: answers and requests almost never carry trailers, and inline the map would make
    /// every request and response that holds this body 88 bytes larger, which each layer moves.
    trailers: Option<Box<HeaderMap>>,
    #[pin]
    rest: Option<B>,
    not_replayable: Option<NotReplayable>,
}

impl<B> ReplayBody<B> {
    /// A fully buffered body.
    pub fn from_bytes(bytes: Bytes) -> Self {
        ReplayBody {
            prefix: Some(bytes),
            trailers: None,
            rest: None,
            not_replayable: None,
        }
    }

    /// An empty, fully buffered body.
    pub fn empty() -> Self {
        Self::from_bytes(Bytes::new())
    }

    /// An untouched inner body (streamed through, not replayable).
    pub fn streaming(body: B) -> Self {
        ReplayBody {
            prefix: None,
            trailers: None,
            rest: Some(body),
            not_replayable: Some(NotReplayable::Streaming),
        }
    }

    /// `prefix` (bytes already read from `rest`) followed by the rest of the inner body.
    pub fn prefixed(prefix: Bytes, rest: B) -> Self {
        ReplayBody {
            prefix: Some(prefix),
            trailers: None,
            rest: Some(rest),
            not_replayable: Some(NotReplayable::Streaming),
        }
    }

    /// The whole body, when it is fully buffered.
    pub fn bytes(&self) -> Option<&Bytes> {
        match (&self.rest, &self.trailers) {
            (None, None) => Some(self.prefix.as_ref().unwrap_or(&EMPTY)),
            _ => None,
        }
    }

    /// Why this body cannot be replayed, or `None` when it can.
    pub fn not_replayable(&self) -> Option<NotReplayable> {
        if self.rest.is_none() {
            None
        } else {
            self.not_replayable.or(Some(NotReplayable::Streaming))
        }
    }
}

static EMPTY: Bytes = Bytes::new();

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// Read `body` up to `limit` bytes. A body that ends within the limit becomes replayable; a
    /// longer one keeps the bytes read so far in front of its unread rest, so nothing is lost.
    ///
    /// A body whose size hint already exceeds the limit is not read at all. Fails only when the
    /// inner body fails.
    pub async fn buffer(body: B, limit: usize) -> Result<Self, BoxError>
    where
        B: Unpin,
    {
        if body.size_hint().lower() > limit as u64 {
            return Ok(ReplayBody {
                not_replayable: Some(NotReplayable::OverLimit { limit }),
                ..Self::streaming(body)
            });
        }
        let mut body = body;
        let mut first: Option<Bytes> = None;
        let mut more: Option<BytesMut> = None;
        let mut read = 0usize;
        let mut trailers = None;
        loop {
            if body.is_end_stream() {
                break;
            }
            let frame = match body.frame().await {
                None => break,
                Some(frame) => frame.map_err(Into::into)?,
            };
            match frame.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    read = read.saturating_add(data.len());
                    match (&mut first, &mut more) {
                        (_, Some(buf)) => buf.extend_from_slice(&data),
                        (None, None) => first = Some(data),
                        (Some(f), None) => {
                            let mut buf = BytesMut::with_capacity(f.len() + data.len());
                            buf.extend_from_slice(f);
                            buf.extend_from_slice(&data);
                            first = None;
                            more = Some(buf);
                        }
                    }
                    if read > limit {
                        let prefix = match more {
                            Some(buf) => buf.freeze(),
                            None => first.unwrap_or_default(),
                        };
                        return Ok(ReplayBody {
                            prefix: Some(prefix),
                            trailers: None,
                            rest: Some(body),
                            not_replayable: Some(NotReplayable::OverLimit { limit }),
                        });
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(Box::new(t));
                    }
                }
            }
        }
        let prefix = match more {
            Some(buf) => buf.freeze(),
            None => first.unwrap_or_default(),
        };
        Ok(ReplayBody {
            prefix: Some(prefix),
            trailers,
            rest: None,
            not_replayable: None,
        })
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the bytes: they may hold prompts or keys.
        f.debug_struct("ReplayBody")
            .field("buffered_len", &self.prefix.as_ref().map_or(0, Bytes::len))
            .field("has_rest", &self.rest.is_some())
            .finish()
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(prefix) = this.prefix.take() {
            if !prefix.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(prefix))));
            }
        }
        if let Some(rest) = this.rest.as_mut().as_pin_mut() {
            return rest.poll_frame(cx).map_err(Into::into);
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(*t))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(Bytes::is_empty)
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |b| b.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(prefix),
            Some(rest) => {
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(prefix));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(prefix));
                }
                hint
            }
        }
    }
}

/// A body a layer can send more than once and rebuild from bytes: what retry and fallback
/// layers need from a request body.
pub trait ReplayableBody: Body + Sized {
    /// A copy of the body for another attempt, or `None` when it cannot be replayed.
    fn try_clone(&self) -> Option<Self>;

    /// The whole body, when it is buffered (for a layer that rewrites JSON).
    fn buffered(&self) -> Option<&Bytes>;

    /// A new body holding `bytes` (a rewritten request).
    fn from_bytes(bytes: Bytes) -> Self;

    /// Why the body cannot be replayed (when [`try_clone`](Self::try_clone) returns `None`), for
    /// the record a retry layer keeps.
    fn not_replayable_reason(&self) -> Option<NotReplayable> {
        None
    }
}

impl<B> ReplayableBody for ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    fn try_clone(&self) -> Option<Self> {
        if self.rest.is_some() {
            return None;
        }
        Some(ReplayBody {
            prefix: self.prefix.clone(),
            trailers: self.trailers.clone(),
            rest: None,
            not_replayable: None,
        })
    }

    fn buffered(&self) -> Option<&Bytes> {
        self.bytes()
    }

    fn from_bytes(bytes: Bytes) -> Self {
        ReplayBody::from_bytes(bytes)
    }

    fn not_replayable_reason(&self) -> Option<NotReplayable> {
        self.not_replayable()
    }
}

impl ReplayableBody for http_body_util::Full<Bytes> {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }

    fn buffered(&self) -> Option<&Bytes> {
        None
    }

    fn from_bytes(bytes: Bytes) -> Self {
        http_body_util::Full::new(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn chunks(
        parts: &[&'static [u8]],
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn multi_chunk_body_within_limit_is_replayable() {
        let body = ReplayBody::buffer(chunks(&[b"ab", b"cd", b"ef"]), 6)
            .await
            .unwrap();
        assert_eq!(body.bytes().unwrap(), &b"abcdef"[..]);
        let copy = body.try_clone().unwrap();
        assert_eq!(copy.collect().await.unwrap().to_bytes(), &b"abcdef"[..]);
        assert_eq!(body.collect().await.unwrap().to_bytes(), &b"abcdef"[..]);
    }

    #[tokio::test]
    async fn over_limit_keeps_every_byte() {
        let body = ReplayBody::buffer(chunks(&[b"ab", b"cd", b"ef"]), 3)
            .await
            .unwrap();
        assert_eq!(
            body.not_replayable(),
            Some(NotReplayable::OverLimit { limit: 3 })
        );
        assert!(body.try_clone().is_none());
        assert_eq!(body.collect().await.unwrap().to_bytes(), &b"abcdef"[..]);
    }

    #[tokio::test]
    async fn size_hint_over_limit_is_not_read() {
        let body = ReplayBody::buffer(Full::new(Bytes::from_static(b"0123456789")), 4)
            .await
            .unwrap();
        assert_eq!(body.size_hint().exact(), Some(10));
        assert_eq!(
            body.not_replayable(),
            Some(NotReplayable::OverLimit { limit: 4 })
        );
        assert_eq!(body.collect().await.unwrap().to_bytes(), &b"0123456789"[..]);
    }

    #[tokio::test]
    async fn empty_body_is_replayable_and_ends() {
        let body = ReplayBody::buffer(http_body_util::Empty::<Bytes>::new(), 4)
            .await
            .unwrap();
        assert!(body.is_end_stream());
        assert_eq!(body.bytes().unwrap().len(), 0);
    }
}
