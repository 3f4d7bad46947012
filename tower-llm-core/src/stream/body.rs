//! [`GuardedBody`].

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;

use super::engine::{Engine, Next};
use crate::BoxError;

/// Response body of [`StreamGuard`](super::StreamGuard): the inner body untouched (anything
/// that is not a `2xx text/event-stream`), or a guarded event stream.
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

    /// Whether this body is a guarded event stream (not passed through).
    pub fn is_guarded(&self) -> bool {
        matches!(self.kind, Kind::Guarded(_))
    }
}

impl<B> fmt::Debug for GuardedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedBody")
            .field("guarded", &self.is_guarded())
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
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::PassThrough(body) => body.is_end_stream(),
            Kind::Guarded(engine) => engine.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::PassThrough(body) => body.size_hint(),
            // Events may be left out or added.
            Kind::Guarded(_) => SizeHint::default(),
        }
    }
}
