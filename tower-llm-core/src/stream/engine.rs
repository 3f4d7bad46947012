//! The state machine behind [`StreamGuardFuture`](super::StreamGuardFuture) (before the first
//! event) and [`GuardedBody`](super::GuardedBody) (after it): frames the stream, judges each
//! event, keeps the time limits, and decides how the stream ends.
//!
//! Bytes move through without copies in the common case: the bytes of the valid events of a
//! chunk are handed on as one slice of it (a chunk is cut only around an event that is left out),
//! and only an event split across chunks is copied, once, when its end arrives.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};

use super::config::GuardConfig;
use super::frame::{Framer, RawFrame};
use super::metrics as names;
use super::{MalformedPolicy, StreamEnd, StreamOutcome};
use crate::openai::{done_frame, error_event};
use crate::sse::{parse_error_event, EventKind, SseDecoder, StreamTracker};
use crate::{classify_error, BoxError, ClassifiedError, ErrorKind, Failure, Target};

/// How far ahead "no deadline" is: further than any stream lives.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The most bytes read after `[DONE]` while waiting for the upstream to end the body (so the
/// connection can be reused); past it the body is dropped.
const MAX_DRAIN: usize = 64 * 1024;

fn after(base: Instant, d: Duration) -> Instant {
    base.checked_add(d)
        .or_else(|| base.checked_add(FAR))
        .unwrap_or(base)
}

/// What the engine produced.
pub(crate) enum Next {
    /// Bytes for the caller (after the first event only).
    Data(Bytes),
    /// The first answer event arrived: commit to the stream.
    Committed,
    /// The stream failed before its first answer event: the attempt fails with this error.
    Rejected(ClassifiedError),
    /// The stream is over.
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first answer event; nothing is handed on yet.
    FirstEvent,
    /// Committed: events flow to the caller.
    Streaming,
    /// `[DONE]` was handed on; reading the upstream to its end so the connection can be reused.
    Draining,
    /// The end is decided; `last_frame` (if any) is still to be handed on.
    Closing,
    /// Over.
    Ended,
}

/// Why a stream stops early.
#[derive(Debug)]
struct Stop {
    failure: Failure,
    message: Cow<'static, str>,
}

impl Stop {
    fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Stop {
            failure: Failure::new(kind),
            message: message.into(),
        }
    }

    fn into_error(self) -> ClassifiedError {
        let error = ClassifiedError::new(self.failure.kind, self.message);
        match self.failure.retry_after {
            Some(after) => error.with_retry_after(after),
            None => error,
        }
    }
}

/// What to do with one frame.
#[derive(Debug)]
enum Verdict {
    /// Hand it on.
    Keep,
    /// Hand it on; it is the first answer event.
    Commit,
    /// Hand it on; it is `[DONE]`.
    Done,
    /// Leave it out (a malformed event under [`MalformedPolicy::Skip`]).
    Drop,
    /// Leave it out and end the stream.
    Stop(Stop),
}

/// A frame judged but not applied yet, because the bytes before it must be handed on first.
#[derive(Debug)]
struct Parked {
    frame: RawFrame,
    used: usize,
    verdict: Verdict,
}

/// What scanning the buffered bytes led to.
enum Scan {
    /// Everything buffered is handled; read more.
    NeedInput,
    /// There are bytes to hand on.
    Output,
    /// The first answer event arrived.
    Commit,
    /// The stream failed before its first answer event.
    Reject(ClassifiedError),
    /// The end of the stream is decided.
    Closed,
}

/// The guard of one streamed response. Lives in one `Box` from the first byte of the body to
/// its end (the future hands it to the body), so the timer needs no allocation of its own.
#[pin_project]
pub(crate) struct Engine<B> {
    #[pin]
    sleep: Sleep,
    /// The deadline `sleep` is set to. It may be earlier than the real one (moved on lazily, when
    /// it fires, so an event costs a clock read rather than a timer update).
    armed: Instant,
    core: Core<B>,
}

struct Core<B> {
    body: Option<B>,
    /// The current chunk: `input[..ready]` is judged and waits to be handed on; the rest is not
    /// scanned yet.
    input: Bytes,
    ready: usize,
    /// Before the first event: judged bytes of earlier chunks (comments, pings).
    held: BytesMut,
    /// A frame that began in an earlier chunk, joined; handed on before `input[..ready]`.
    joined: Option<Bytes>,
    parked: Option<Parked>,
    framer: Framer,
    decoder: SseDecoder,
    tracker: StreamTracker,
    phase: Phase,
    last_frame: Option<Bytes>,
    config: GuardConfig,
    /// When the call was made.
    started: Instant,
    /// When the last chunk arrived.
    chunk_at: Instant,
    /// When the last complete frame arrived (comments included: they are keep-alives).
    last_event: Instant,
    /// When the last answer chunk (a delta, a `finish_reason`, usage) arrived: the grace for a
    /// missing `[DONE]` counts from it, so pings after the end do not hold the stream open.
    last_answer: Instant,
    drain_until: Instant,
    drained: usize,
    outcome: Option<StreamOutcome>,
    reported: bool,
    target: Option<Target>,
    target_label: Option<Arc<str>>,
}

impl<B> Engine<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(
        body: B,
        config: GuardConfig,
        started: Instant,
        target: Option<Target>,
    ) -> Self {
        let core = Core {
            body: Some(body),
            input: Bytes::new(),
            ready: 0,
            held: BytesMut::new(),
            joined: None,
            parked: None,
            framer: Framer::new(config.max_event_size),
            decoder: SseDecoder::with_max_event_size(config.max_event_size),
            tracker: StreamTracker::new(),
            phase: Phase::FirstEvent,
            last_frame: None,
            config,
            started,
            // No chunk yet: the call's start, so that bytes already there when late headers arrive
            // are read before any deadline is checked.
            chunk_at: started,
            last_event: started,
            last_answer: started,
            drain_until: started,
            drained: 0,
            outcome: None,
            reported: false,
            target,
            target_label: None,
        };
        let armed = core.deadline();
        Engine {
            sleep: tokio::time::sleep_until(armed),
            armed,
            core,
        }
    }

    /// Report the stream's end through `outcome` (called at commit).
    pub(crate) fn attach(self: Pin<&mut Self>, outcome: StreamOutcome) {
        self.project().core.outcome = Some(outcome);
    }

    /// Whether nothing more will come.
    pub(crate) fn is_end_stream(&self) -> bool {
        let core = &self.core;
        core.phase == Phase::Ended && core.last_frame.is_none() && !core.has_output()
    }

    pub(crate) fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Next> {
        let mut this = self.project();
        let core = this.core;
        loop {
            if core.phase != Phase::FirstEvent {
                if let Some(bytes) = core.take_output() {
                    return Poll::Ready(Next::Data(bytes));
                }
            }
            match core.phase {
                Phase::Closing => {
                    core.phase = Phase::Ended;
                    if let Some(bytes) = core.last_frame.take() {
                        return Poll::Ready(Next::Data(bytes));
                    }
                    continue;
                }
                Phase::Ended => return Poll::Ready(Next::End),
                Phase::FirstEvent | Phase::Streaming => match core.scan() {
                    Scan::NeedInput => {
                        // Data that kept arriving until past a deadline: the limit is over even
                        // though the timer never got a turn.
                        if core.chunk_at >= core.deadline() {
                            if let Some(rejected) = core.expire() {
                                return Poll::Ready(Next::Rejected(rejected));
                            }
                            continue;
                        }
                    }
                    Scan::Output | Scan::Closed => continue,
                    Scan::Commit => return Poll::Ready(Next::Committed),
                    Scan::Reject(err) => return Poll::Ready(Next::Rejected(err)),
                },
                Phase::Draining => {}
            }

            match core.poll_body(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    core.chunk_at = Instant::now();
                    if core.phase == Phase::Draining {
                        core.drained = core.drained.saturating_add(data.len());
                        if core.drained > MAX_DRAIN || core.chunk_at >= core.drain_until {
                            core.end_now();
                        }
                    } else {
                        core.input = data;
                        core.ready = 0;
                    }
                    continue;
                }
                Poll::Ready(Some(Err(err))) => {
                    if let Some(rejected) = core.body_failed(err) {
                        return Poll::Ready(Next::Rejected(rejected));
                    }
                    continue;
                }
                Poll::Ready(None) => {
                    if let Some(rejected) = core.body_ended() {
                        return Poll::Ready(Next::Rejected(rejected));
                    }
                    continue;
                }
                Poll::Pending => {}
            }

            let due = core.deadline();
            if due < *this.armed {
                this.sleep.as_mut().reset(due);
                *this.armed = due;
            }
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = core.deadline();
            if Instant::now() < due {
                // An event moved the deadline on since the timer was set.
                this.sleep.as_mut().reset(due);
                *this.armed = due;
                continue;
            }
            if let Some(rejected) = core.expire() {
                return Poll::Ready(Next::Rejected(rejected));
            }
        }
    }
}

impl<B> Core<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// The next data chunk of the inner body (trailers and empty chunks are skipped).
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        loop {
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                    // Trailers have no place in an event stream; empty chunks carry nothing.
                    _ => continue,
                },
            }
        }
    }
}

impl<B> Core<B> {
    fn has_output(&self) -> bool {
        self.ready > 0 || self.joined.is_some() || !self.held.is_empty()
    }

    /// The next bytes to hand on, in stream order.
    fn take_output(&mut self) -> Option<Bytes> {
        if !self.held.is_empty() {
            return Some(self.held.split().freeze());
        }
        if let Some(joined) = self.joined.take() {
            return Some(joined);
        }
        if self.ready > 0 {
            let ready = std::mem::take(&mut self.ready);
            return Some(self.input.split_to(ready.min(self.input.len())));
        }
        None
    }

    /// Before the first event: move the judged bytes out of the chunk before it goes.
    fn flush_to_held(&mut self) {
        if let Some(joined) = self.joined.take() {
            self.held.extend_from_slice(&joined);
        }
        if self.ready > 0 {
            let ready = std::mem::take(&mut self.ready).min(self.input.len());
            self.held.extend_from_slice(&self.input.split_to(ready));
        }
    }

    /// When the next limit runs out.
    fn deadline(&self) -> Instant {
        let limits = &self.config.limits;
        let total = after(self.started, limits.total);
        match self.phase {
            Phase::FirstEvent => total.min(after(self.started, limits.ttft)),
            Phase::Streaming => {
                let idle = after(self.last_event, limits.idle);
                let mut due = total.min(idle);
                if self.tracker.is_complete() {
                    due = due.min(after(self.last_answer, self.config.finish_grace));
                }
                due
            }
            Phase::Draining => self.drain_until,
            Phase::Closing | Phase::Ended => after(self.chunk_at, FAR),
        }
    }

    /// Judge the buffered frames until there is something to do.
    fn scan(&mut self) -> Scan {
        loop {
            let (frame, used, verdict) = match self.parked.take() {
                Some(parked) => (parked.frame, parked.used, parked.verdict),
                None => {
                    if self.input.len() <= self.ready {
                        return self.exhausted();
                    }
                    match self.framer.next_frame(&self.input, self.ready) {
                        Err(_) => {
                            let limit = self.config.max_event_size;
                            return self.stop(Stop::new(
                                ErrorKind::InvalidResponse,
                                format!("the upstream sent an event larger than {limit} bytes"),
                            ));
                        }
                        Ok(None) => {
                            // The rest of the chunk starts an event; the framer kept a copy.
                            self.input.truncate(self.ready);
                            return self.exhausted();
                        }
                        Ok(Some((frame, used))) => {
                            let verdict = self.judge(&frame);
                            (frame, used, verdict)
                        }
                    }
                }
            };
            self.last_event = self.chunk_at;
            match verdict {
                Verdict::Keep => self.keep(frame, used),
                Verdict::Commit => {
                    self.keep(frame, used);
                    self.phase = Phase::Streaming;
                    self.committed();
                    return Scan::Commit;
                }
                Verdict::Done => {
                    self.keep(frame, used);
                    self.report(StreamEnd::Complete);
                    self.input.truncate(self.ready);
                    self.framer.clear();
                    self.phase = Phase::Draining;
                    self.drain_until = after(self.chunk_at, self.config.finish_grace);
                    return Scan::Closed;
                }
                Verdict::Drop | Verdict::Stop(_) => {
                    if self.phase == Phase::Streaming && self.has_output() {
                        self.parked = Some(Parked {
                            frame,
                            used,
                            verdict,
                        });
                        return Scan::Output;
                    }
                    self.flush_to_held();
                    self.discard(frame, used);
                    if let Verdict::Stop(stop) = verdict {
                        return self.stop(stop);
                    }
                }
            }
        }
    }

    /// Every buffered byte is judged.
    fn exhausted(&mut self) -> Scan {
        if self.phase == Phase::FirstEvent {
            self.flush_to_held();
            let limit = self.config.max_event_size;
            if self.held.len() > limit {
                return self.stop(Stop::new(
                    ErrorKind::InvalidResponse,
                    format!("the upstream sent more than {limit} bytes without an answer event"),
                ));
            }
            return Scan::NeedInput;
        }
        if self.has_output() {
            Scan::Output
        } else {
            Scan::NeedInput
        }
    }

    /// The frame's bytes (no copy).
    fn frame_bytes(&self, frame: &RawFrame) -> Bytes {
        match frame {
            RawFrame::InChunk(len) => {
                let end = self.ready.saturating_add(*len).min(self.input.len());
                self.input.slice(self.ready.min(end)..end)
            }
            RawFrame::Joined(bytes) => bytes.clone(),
        }
    }

    fn judge(&mut self, frame: &RawFrame) -> Verdict {
        let bytes = self.frame_bytes(frame);
        self.decoder.push(bytes);
        let event = match self.decoder.next_event() {
            Ok(Some(event)) => event,
            // Comments, blank lines, `id:` or `retry:` alone: no event.
            Ok(None) => return Verdict::Keep,
            Err(err) => {
                return Verdict::Stop(Stop::new(ErrorKind::InvalidResponse, err.to_string()))
            }
        };
        let kind = self.tracker.observe(&event);
        if let EventKind::Delta { .. } | EventKind::Finish { .. } = kind {
            self.last_answer = self.chunk_at;
        }
        let first = self.phase == Phase::FirstEvent;
        match kind {
            EventKind::Malformed => match self.config.malformed {
                MalformedPolicy::Skip => Verdict::Drop,
                MalformedPolicy::End => Verdict::Stop(Stop::new(
                    ErrorKind::InvalidResponse,
                    "the upstream sent a malformed event",
                )),
            },
            EventKind::Error => {
                let found = parse_error_event(&event).unwrap_or_default();
                let kind = found.kind.unwrap_or(ErrorKind::ServerError);
                let message = match found.message {
                    Some(message) => Cow::Owned(format!("upstream error: {message}")),
                    None => Cow::Borrowed("the upstream reported an error in the stream"),
                };
                Verdict::Stop(Stop {
                    failure: Failure::new(kind).with_retry_after(found.retry_after),
                    message,
                })
            }
            EventKind::Delta { .. } | EventKind::Finish { .. } if first => Verdict::Commit,
            EventKind::Done if first => Verdict::Stop(Stop::new(
                ErrorKind::InvalidResponse,
                "the upstream ended the stream ([DONE]) before any answer",
            )),
            EventKind::Done => Verdict::Done,
            EventKind::Delta { .. } | EventKind::Finish { .. } | EventKind::Other => Verdict::Keep,
        }
    }

    /// Hand the frame on.
    fn keep(&mut self, frame: RawFrame, used: usize) {
        match frame {
            RawFrame::InChunk(len) => self.ready = self.ready.saturating_add(len),
            RawFrame::Joined(bytes) => {
                // A joined frame starts its chunk, so nothing of the chunk is pending before it.
                self.input.advance(used.min(self.input.len()));
                self.joined = Some(match self.joined.take() {
                    None => bytes,
                    Some(before) => {
                        let mut both = BytesMut::with_capacity(before.len() + bytes.len());
                        both.extend_from_slice(&before);
                        both.extend_from_slice(&bytes);
                        both.freeze()
                    }
                });
            }
        }
    }

    /// Leave the frame out (nothing is pending before it).
    fn discard(&mut self, frame: RawFrame, used: usize) {
        let len = match frame {
            RawFrame::InChunk(len) => len,
            RawFrame::Joined(_) => used,
        };
        self.input.advance(len.min(self.input.len()));
    }

    /// End the stream early: fail the attempt before the first event, else hand on an error event.
    fn stop(&mut self, stop: Stop) -> Scan {
        if self.phase == Phase::FirstEvent {
            return Scan::Reject(self.reject(stop));
        }
        let frame = error_event(stop.failure.kind, &stop.message);
        self.close(frame, StreamEnd::Failed(stop.failure));
        Scan::Closed
    }

    fn reject(&mut self, stop: Stop) -> ClassifiedError {
        self.phase = Phase::Ended;
        self.body = None;
        let kind = stop.failure.kind;
        metrics::counter!(
            names::ENDS_TOTAL,
            names::TARGET => self.target_label(),
            names::OUTCOME => names::REJECTED,
            names::KIND => kind.as_str(),
        )
        .increment(1);
        tracing::debug!(
            target = %self.target_display(),
            kind = %kind,
            elapsed_ms = Instant::now()
                .saturating_duration_since(self.started)
                .as_millis() as u64,
            "stream failed before its first event"
        );
        stop.into_error()
    }

    /// Hand on `frame` (after the bytes already judged) and end; drop the upstream body.
    fn close(&mut self, frame: Bytes, end: StreamEnd) {
        self.report(end);
        self.input.truncate(self.ready);
        self.parked = None;
        self.framer.clear();
        self.body = None;
        self.last_frame = Some(frame);
        self.phase = Phase::Closing;
    }

    /// End with nothing more to hand on.
    fn end_now(&mut self) {
        self.body = None;
        self.phase = Phase::Ended;
    }

    /// The stream is whole: append `[DONE]` and end.
    fn close_complete(&mut self) {
        self.close(done_frame(), StreamEnd::Complete);
    }

    /// A limit ran out.
    fn expire(&mut self) -> Option<ClassifiedError> {
        let limits = self.config.limits;
        let total_over = Instant::now() >= after(self.started, limits.total)
            || self.chunk_at >= after(self.started, limits.total);
        match self.phase {
            Phase::FirstEvent => {
                let message = if total_over && limits.total <= limits.ttft {
                    format!(
                        "no server-sent event within the {:.3}s total stream limit",
                        limits.total.as_secs_f64()
                    )
                } else {
                    format!(
                        "no server-sent event within the {:.3}s time-to-first-event limit",
                        limits.ttft.as_secs_f64()
                    )
                };
                Some(self.reject(Stop::new(ErrorKind::Timeout, message)))
            }
            Phase::Streaming if self.tracker.is_complete() => {
                // A `finish_reason` came and then silence: the answer is whole.
                self.close_complete();
                None
            }
            Phase::Streaming => {
                let message = if total_over {
                    format!(
                        "the stream exceeded its {:.3}s total limit",
                        limits.total.as_secs_f64()
                    )
                } else {
                    format!(
                        "the upstream sent no event for {:.3}s (idle limit)",
                        limits.idle.as_secs_f64()
                    )
                };
                let frame = error_event(ErrorKind::Timeout, &message);
                self.close(frame, StreamEnd::Failed(Failure::new(ErrorKind::Timeout)));
                None
            }
            Phase::Draining => {
                self.end_now();
                None
            }
            Phase::Closing | Phase::Ended => None,
        }
    }

    /// The upstream body ended.
    fn body_ended(&mut self) -> Option<ClassifiedError> {
        match self.phase {
            Phase::FirstEvent => {
                let message = if self.framer.is_mid_frame() {
                    "the upstream ended the stream inside its first event"
                } else {
                    "the upstream ended the stream before its first event"
                };
                Some(self.reject(Stop::new(ErrorKind::InvalidResponse, message)))
            }
            Phase::Streaming if self.tracker.is_complete() => {
                self.close_complete();
                None
            }
            Phase::Streaming => {
                let stop = Stop::new(
                    ErrorKind::InvalidResponse,
                    "the upstream ended the stream before the answer was complete \
                     (no finish_reason, no end-of-stream event)",
                );
                self.stop(stop);
                None
            }
            Phase::Draining | Phase::Closing | Phase::Ended => {
                self.end_now();
                None
            }
        }
    }

    /// The upstream body failed (connection reset, cut, a lower layer's error).
    fn body_failed(&mut self, err: BoxError) -> Option<ClassifiedError> {
        let kind = classify_error(&*err).kind;
        match self.phase {
            Phase::FirstEvent => {
                let kind = match kind {
                    ErrorKind::Unknown => ErrorKind::Transport,
                    kind => kind,
                };
                let message = format!("the stream failed before its first event: {err}");
                Some(self.reject(Stop::new(kind, message)))
            }
            Phase::Streaming if self.tracker.is_complete() => {
                self.close_complete();
                None
            }
            Phase::Streaming => {
                // A connection lost after the headers is a stream cut before its end.
                let kind = match kind {
                    ErrorKind::Unknown | ErrorKind::Transport => ErrorKind::InvalidResponse,
                    kind => kind,
                };
                let message = format!("the stream broke before the answer was complete: {err}");
                self.stop(Stop::new(kind, message));
                None
            }
            Phase::Draining | Phase::Closing | Phase::Ended => {
                self.end_now();
                None
            }
        }
    }

    fn committed(&mut self) {
        let ttft = self.chunk_at.saturating_duration_since(self.started);
        metrics::histogram!(names::FIRST_EVENT_SECONDS, names::TARGET => self.target_label())
            .record(ttft.as_secs_f64());
        tracing::debug!(
            target = %self.target_display(),
            ttft_ms = ttft.as_millis() as u64,
            "stream committed at its first event"
        );
    }

    /// Record the end once: outcome listeners, metrics, a log line.
    fn report(&mut self, end: StreamEnd) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        if let Some(outcome) = &self.outcome {
            outcome.finish(end);
        }
        metrics::counter!(
            names::ENDS_TOTAL,
            names::TARGET => self.target_label(),
            names::OUTCOME => end.as_str(),
            names::KIND => end.kind().map_or("none", ErrorKind::as_str),
        )
        .increment(1);
        let elapsed_ms = Instant::now()
            .saturating_duration_since(self.started)
            .as_millis() as u64;
        let events = self.tracker.events();
        match end {
            StreamEnd::Failed(failure) => tracing::warn!(
                target = %self.target_display(),
                kind = %failure.kind,
                events,
                elapsed_ms,
                "stream ended with an error event"
            ),
            _ => tracing::debug!(
                target = %self.target_display(),
                outcome = end.as_str(),
                events,
                elapsed_ms,
                "stream ended"
            ),
        }
    }

    fn target_label(&mut self) -> Arc<str> {
        let label = self.target_label.get_or_insert_with(|| {
            self.target
                .as_ref()
                .map_or_else(|| Arc::from(""), |t| Arc::from(t.to_string()))
        });
        Arc::clone(label)
    }

    fn target_display(&self) -> TargetDisplay<'_> {
        TargetDisplay(self.target.as_ref())
    }
}

struct TargetDisplay<'a>(Option<&'a Target>);

impl std::fmt::Display for TargetDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(target) => write!(f, "{target}"),
            None => f.write_str("-"),
        }
    }
}

impl<B> Drop for Core<B> {
    fn drop(&mut self) {
        // Dropped after commit without an end: the caller went away. An answer already whole
        // (a `finish_reason` seen) still counts as complete.
        if self.outcome.is_some() && !self.reported {
            let end = if self.tracker.is_complete() {
                StreamEnd::Complete
            } else {
                StreamEnd::Abandoned
            };
            self.report(end);
        }
    }
}
