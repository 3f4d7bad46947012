//! [`GuardedBody`].

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;

use super::engine::{Engine, Next};
use crate::BoxError;

/// Response body of [`StreamGuard`](super::StreamGuard): the inner body untouched (anything
/// that is not `2xx`), a guarded event stream (a `2xx text/event-stream`), or a non-stream `2xx`
/// answer already read whole by the guard (handed on from memory, no copy). A non-stream answer
/// over the guard's cap ([`max_buffered_body_bytes`](super::StreamGuardLayerBuilder::max_buffered_body_bytes))
/// is the bytes read so far followed by the rest of the inner body, unguarded.
///
/// A guarded stream hands on the upstream's bytes as they come, minus any event it leaves out,
/// and ends with `[DONE]` or an OpenAI-shaped error event; it never fails with a body error. Its
/// end is reported through the [`StreamOutcome`](super::StreamOutcome) in the response
/// extensions; dropping it before the end reports [`StreamEnd::Abandoned`](super::StreamEnd).
#[pin_project]
pub struct GuardedBody<B> {
    #[pin]
    kind: Kind<B>,
}

#[pin_project(project = KindProj)]
enum Kind<B> {
    PassThrough(#[pin] B),
    Guarded(Pin<Box<Engine<B>>>),
    /// A non-stream answer read whole.
    Buffered {
        data: Option<Bytes>,
        /// Boxed (rare; see [`ReplayBody`](crate::ReplayBody)'s).
        trailers: Option<Box<HeaderMap>>,
    },
    /// A non-stream answer over the cap: what was read, then the rest of the body.
    Prefixed {
        prefix: Option<Bytes>,
        #[pin]
        rest: B,
    },
}

impl<B> GuardedBody<B> {
    /// The inner body, handed on untouched.
    pub fn pass_through(body: B) -> Self {
        GuardedBody {
            kind: Kind::PassThrough(body),
        }
    }

    pub(crate) fn guarded(engine: Pin<Box<Engine<B>>>) -> Self {
        GuardedBody {
            kind: Kind::Guarded(engine),
        }
    }

    pub(crate) fn buffered(data: Bytes, trailers: Option<Box<HeaderMap>>) -> Self {
        GuardedBody {
            kind: Kind::Buffered {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    pub(crate) fn prefixed(prefix: Bytes, rest: B) -> Self {
        GuardedBody {
            kind: Kind::Prefixed {
                prefix: (!prefix.is_empty()).then_some(prefix),
                rest,
            },
        }
    }

    /// Whether this body is a guarded event stream (not passed through).
    pub fn is_guarded(&self) -> bool {
        matches!(self.kind, Kind::Guarded(_))
    }

    /// Whether this body is a non-stream answer the guard read whole (within its cap) before
    /// handing the response on.
    pub fn is_buffered(&self) -> bool {
        matches!(self.kind, Kind::Buffered { .. })
    }
}

impl<B> fmt::Debug for GuardedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedBody")
            .field("guarded", &self.is_guarded())
            .field("buffered", &self.is_buffered())
            .finish_non_exhaustive()
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::PassThrough(body) => body.poll_frame(cx).map_err(Into::into),
            KindProj::Guarded(engine) => loop {
                return match engine.as_mut().poll_next(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Next::Data(bytes)) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                    Poll::Ready(Next::End | Next::Rejected(_)) => Poll::Ready(None),
                    // Only before the first event, which the future already passed.
                    Poll::Ready(Next::Committed) => continue,
                };
            },
            KindProj::Buffered { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(|t| Frame::trailers(*t)))
                    .map(Ok),
            ),
            KindProj::Prefixed { prefix, rest } => match prefix.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => rest.poll_frame(cx).map_err(Into::into),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::PassThrough(body) => body.is_end_stream(),
            Kind::Guarded(engine) => engine.is_end_stream(),
            Kind::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Prefixed { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::PassThrough(body) => body.size_hint(),
            // Events may be left out or added.
            Kind::Guarded(_) => SizeHint::default(),
            Kind::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Prefixed { prefix, rest } => {
                let read = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let hint = rest.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower().saturating_add(read));
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper.saturating_add(read));
                }
                sum
            }
        }
    }
}
