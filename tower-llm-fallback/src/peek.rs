//! Committing to a streamed answer only after its first event.
//!
//! A `200 text/event-stream` response says nothing yet: the stream may never start, or start with
//! an in-band error event. The chain reads the body until the first event that carries an answer
//! (a delta or a `finish_reason`), keeping every byte it read; the chain then commits to the
//! target and hands the caller those bytes followed by the rest of the stream
//! (`ReplayBody::prefixed`). Before that point a failure moves the chain on like any other:
//!
//! | what arrived first | outcome |
//! |---|---|
//! | a delta or a `finish_reason` | commit |
//! | comments, pings, empty or unknown events, malformed data | keep reading (bounded) |
//! | an in-band error event | failure of the kind the error names (`ServerError` when none) |
//! | `[DONE]` with no answer | `InvalidResponse` |
//! | the end of the body, or an event over the size limit | `InvalidResponse` |
//! | a body error | the error's kind (`Transport` for a reset connection) |
//! | nothing before the attempt timeout | `Timeout` (enforced by the chain) |
//!
//! With core's stream guard below the chain, a streamed response that reaches the chain carries
//! the guard's [`StreamOutcome`](tower_llm_core::StreamOutcome): the guard returns a stream only
//! once its first answer event arrived, by the same reading of events, so the chain commits to it
//! without reading the first event a second time.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::Body;
use tower_llm_core::sse::{
    inspect_event, parse_error_event, EventKind, SseDecoder, DEFAULT_MAX_EVENT_SIZE,
};
use tower_llm_core::{classify_error, BoxError, ClassifiedError, ErrorKind, Failure};

/// The most bytes read while waiting for the first answer event.
pub(crate) const MAX_PEEK_BYTES: usize = DEFAULT_MAX_EVENT_SIZE;

/// How a peek ended.
pub(crate) enum PeekOutcome<B> {
    /// The first answer event arrived: `prefix` holds every byte read, `rest` the unread body.
    Commit { prefix: Bytes, rest: B },
    /// The stream failed before its first answer event.
    Fail { failure: Failure, error: BoxError },
}

/// Reads a stream up to its first answer event.
pub(crate) struct Peek<B> {
    body: Option<B>,
    decoder: SseDecoder,
    first: Option<Bytes>,
    more: Option<BytesMut>,
    read: usize,
}

fn fail<B>(kind: ErrorKind, message: &'static str) -> Poll<PeekOutcome<B>> {
    Poll::Ready(PeekOutcome::Fail {
        failure: Failure::new(kind),
        error: Box::new(ClassifiedError::new(kind, message)),
    })
}

impl<B> Peek<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(body: B) -> Self {
        Peek {
            body: Some(body),
            decoder: SseDecoder::new(),
            first: None,
            more: None,
            read: 0,
        }
    }

    fn keep(&mut self, data: &Bytes) {
        self.read = self.read.saturating_add(data.len());
        match (&mut self.first, &mut self.more) {
            (_, Some(buf)) => buf.extend_from_slice(data),
            (None, None) => self.first = Some(data.clone()),
            (Some(first), None) => {
                let mut buf = BytesMut::with_capacity(first.len() + data.len());
                buf.extend_from_slice(first);
                buf.extend_from_slice(data);
                self.first = None;
                self.more = Some(buf);
            }
        }
    }

    fn commit(&mut self) -> Poll<PeekOutcome<B>> {
        let prefix = match self.more.take() {
            Some(buf) => buf.freeze(),
            None => self.first.take().unwrap_or_default(),
        };
        match self.body.take() {
            Some(rest) => Poll::Ready(PeekOutcome::Commit { prefix, rest }),
            None => fail(ErrorKind::InvalidResponse, "stream peeked twice"),
        }
    }

    /// What the events decoded so far mean: `None` to keep reading.
    fn verdict(&mut self) -> Option<Poll<PeekOutcome<B>>> {
        loop {
            let event = match self.decoder.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => return None,
                Err(err) => {
                    return Some(Poll::Ready(PeekOutcome::Fail {
                        failure: Failure::new(ErrorKind::InvalidResponse),
                        error: Box::new(err),
                    }))
                }
            };
            match inspect_event(&event) {
                EventKind::Delta { .. } | EventKind::Finish { .. } => return Some(self.commit()),
                EventKind::Done => {
                    return Some(fail(
                        ErrorKind::InvalidResponse,
                        "stream ended ([DONE]) before any answer event",
                    ))
                }
                EventKind::Error => {
                    let found = parse_error_event(&event).unwrap_or_default();
                    let kind = found.kind.unwrap_or(ErrorKind::ServerError);
                    let mut error = ClassifiedError::new(
                        kind,
                        "in-band error event before the first answer event",
                    );
                    if let Some(after) = found.retry_after {
                        error = error.with_retry_after(after);
                    }
                    return Some(Poll::Ready(PeekOutcome::Fail {
                        failure: Failure::new(kind).with_retry_after(found.retry_after),
                        error: Box::new(error),
                    }));
                }
                EventKind::Malformed | EventKind::Other => continue,
            }
        }
    }

    pub(crate) fn poll_peek(&mut self, cx: &mut Context<'_>) -> Poll<PeekOutcome<B>> {
        loop {
            let Some(body) = self.body.as_mut() else {
                return fail(ErrorKind::InvalidResponse, "stream peeked twice");
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // An unterminated last event is not an answer the caller could use.
                    return fail(
                        ErrorKind::InvalidResponse,
                        "stream ended before its first answer event",
                    );
                }
                Poll::Ready(Some(Err(err))) => {
                    let error: BoxError = err.into();
                    let failure = classify_error(&*error);
                    return Poll::Ready(PeekOutcome::Fail { failure, error });
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers before any event: nothing to commit to
            };
            if data.is_empty() {
                continue;
            }
            self.keep(&data);
            self.decoder.push(data);
            if let Some(verdict) = self.verdict() {
                return verdict;
            }
            if self.read > MAX_PEEK_BYTES {
                return fail(
                    ErrorKind::InvalidResponse,
                    "no answer event within the first MiB of the stream",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use std::convert::Infallible;

    type Chunks = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>>,
    >;

    fn body(parts: &[&'static str]) -> Chunks {
        let frames: Vec<_> = parts
            .iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn run(parts: &[&'static str]) -> PeekOutcome<Chunks> {
        let mut peek = Peek::new(body(parts));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match peek.poll_peek(&mut cx) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("ready bodies never pend"),
        }
    }

    #[tokio::test]
    async fn commits_on_first_delta_keeping_every_byte() {
        use http_body_util::BodyExt;
        let out = run(&[
            ": keepalive\n\n",
            "data: {\"choices\":[{\"delta\":{\"con",
            "tent\":\"Hi\"}}]}\n\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        ]);
        let PeekOutcome::Commit { prefix, rest } = out else {
            panic!("expected a commit")
        };
        assert!(prefix.starts_with(b": keepalive\n\ndata: {\"choices\""));
        assert!(prefix.ends_with(b"\"finish_reason\":\"stop\"}]}\n\n"));
        assert_eq!(rest.collect().await.unwrap().to_bytes(), "data: [DONE]\n\n");
    }

    #[test]
    fn first_event_error_fails_with_its_kind() {
        let out =
            run(&["data: {\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n"]);
        let PeekOutcome::Fail { failure, .. } = out else {
            panic!("expected a failure")
        };
        assert_eq!(failure.kind, ErrorKind::Overloaded);
        let generic = run(&["data: {\"error\":{\"message\":\"boom\"}}\n\n"]);
        assert!(
            matches!(generic, PeekOutcome::Fail { failure, .. } if failure.kind == ErrorKind::ServerError)
        );
    }

    #[test]
    fn empty_streams_and_bare_done_are_invalid() {
        for parts in [
            &[][..],
            &["data: [DONE]\n\n"][..],
            &[": ping\n\n", "data: {\"choices\":[{\"delta\""][..],
        ] {
            let out = run(parts);
            assert!(
                matches!(out, PeekOutcome::Fail { failure, .. } if failure.kind == ErrorKind::InvalidResponse),
                "{parts:?}"
            );
        }
    }

    #[test]
    fn malformed_first_event_is_skipped() {
        let out = run(&[
            "data: {not json\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
        ]);
        assert!(matches!(out, PeekOutcome::Commit { .. }));
    }
}
