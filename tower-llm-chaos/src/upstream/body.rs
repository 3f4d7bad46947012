//! The mock's response body: a script of chunks, pauses, a stall or a cut.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// One step of a [`MockBody`] script.
#[derive(Debug)]
pub(super) enum Step {
    /// Send these bytes.
    Data(Bytes),
    /// Wait this long (`tokio::time`).
    Pause(Duration),
    /// Let the connection write out what it buffered before going on.
    Flush,
    /// Send nothing more, for ever; the connection stays open.
    Stall,
    /// Fail the body: the server closes the connection without ending the message.
    Cut,
}

/// The body of the mock's responses: whole JSON bodies, SSE streams with pauses, stalls and cuts.
pub(crate) struct MockBody {
    steps: VecDeque<Step>,
    pause: Option<Pin<Box<Sleep>>>,
    yielded_for_flush: bool,
}

impl fmt::Debug for MockBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockBody")
            .field("steps_left", &self.steps.len())
            .finish()
    }
}

impl MockBody {
    /// A body of exactly these bytes.
    pub(super) fn full(bytes: impl Into<Bytes>) -> Self {
        MockBody::script([Step::Data(bytes.into())])
    }

    pub(super) fn script(steps: impl IntoIterator<Item = Step>) -> Self {
        MockBody {
            steps: steps.into_iter().collect(),
            pause: None,
            yielded_for_flush: false,
        }
    }
}

/// The error that ends a [`Fault::CutAfter`](crate::Fault::CutAfter) body.
#[derive(Debug)]
pub(crate) struct StreamCut;

impl fmt::Display for StreamCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stream cut by the mock's fault")
    }
}

impl std::error::Error for StreamCut {}

impl Body for MockBody {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        let this = &mut *self;
        loop {
            if let Some(pause) = this.pause.as_mut() {
                if pause.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.pause = None;
            }
            match this.steps.pop_front() {
                None => return Poll::Ready(None),
                Some(Step::Data(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Some(Step::Pause(delay)) => this.pause = Some(Box::pin(tokio::time::sleep(delay))),
                Some(Step::Flush) => {
                    // Returning Pending once makes hyper write out its buffer; wake at once to
                    // go on right after.
                    if !std::mem::replace(&mut this.yielded_for_flush, true) {
                        this.steps.push_front(Step::Flush);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    this.yielded_for_flush = false;
                }
                Some(Step::Stall) => {
                    // Never woken: the stream stays silent until the client goes away.
                    this.steps.push_front(Step::Stall);
                    return Poll::Pending;
                }
                Some(Step::Cut) => return Poll::Ready(Some(Err(StreamCut))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty() && self.pause.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.steps.len(), self.steps.front()) {
            (0, _) => SizeHint::with_exact(0),
            (1, Some(Step::Data(bytes))) => SizeHint::with_exact(bytes.len() as u64),
            _ => SizeHint::default(),
        }
    }
}
