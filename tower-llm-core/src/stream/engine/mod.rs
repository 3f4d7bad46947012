//! The state machine behind [`StreamGuardFuture`](super::StreamGuardFuture) (before the first
//! event) and [`GuardedBody`](super::GuardedBody) (after it): frames the stream, judges each
//! event, keeps the time limits, and decides how the stream ends.
//!
//! Bytes move through without copies in the common case: the bytes of the valid events of a
//! chunk are handed on as one slice of it (a chunk is cut only around an event that is left out),
//! and only an event split across chunks is copied, once, when its end arrives.
//!
//! The state and the poll loop are here; judging frames is in `judge`, how a stream ends (limits,
//! a broken or finished body) in `end`, and its commit and end reports in `report`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};

use super::config::GuardConfig;
use super::frame::Framer;
use super::metrics::TargetMetrics;
use super::usage::Usage;
use super::StreamOutcome;
use crate::sse::{Note, SseDecoder, StreamTracker};
use crate::{BoxError, ClassifiedError, Target};

mod end;
mod judge;
mod report;

use judge::{Parked, Scan};

/// How far ahead "no deadline" is: further than any stream lives.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The most bytes read after `[DONE]` while waiting for the upstream to end the body (so the
/// connection can be reused); past it the body is dropped.
const MAX_DRAIN: usize = 64 * 1024;

pub(super) fn after(base: Instant, d: Duration) -> Instant {
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

/// The guard of one streamed response. Lives in one `Box` from the first byte of the body to
/// its end (the future hands it to the body), so the timer needs no allocation of its own.
#[pin_project]
pub(crate) struct Engine<B> {
    #[pin]
    sleep: Sleep,
    /// The deadline `sleep` is set to. It may be earlier than the real one (moved on lazily, when
    /// it fires, so an event costs a clock read rather than a timer update).
    armed: Instant,
    /// The waker `sleep` was polled with since it was last set: while it has not fired, polling
    /// it again with the same waker would only register that waker again.
    sleep_waker: Option<Waker>,
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
    /// When the stream's total limit runs out, and when its first event is due (the earlier of
    /// that and the time-to-first-token limit): fixed at the start, read on every poll.
    total_due: Instant,
    first_due: Instant,
    /// When the last chunk arrived.
    chunk_at: Instant,
    /// When the idle limit runs out: its length after the last complete frame arrived (comments
    /// included: they are keep-alives). Moved on once per frame, read on every poll.
    idle_due: Instant,
    /// When the last answer chunk (a delta, a `finish_reason`, usage) arrived: the grace for a
    /// missing `[DONE]` counts from it, so pings after the end do not hold the stream open.
    last_answer: Instant,
    drain_until: Instant,
    drained: usize,
    outcome: Option<StreamOutcome>,
    reported: bool,
    target: Option<Target>,
    metrics: Arc<TargetMetrics>,
    /// The usage the stream reported (its usage chunks, merged).
    usage: Option<Usage>,
    /// Content chunks without usage: the output estimate of a stream that reports none.
    content_chunks: u64,
    /// The scan of the last event judged before the stream was committed to (the first answer
    /// event), for a layer above that asks for notes once it sees the stream.
    first_note: Option<Note>,
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
        metrics: Arc<TargetMetrics>,
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
            total_due: after(started, config.limits.total),
            first_due: after(started, config.limits.total).min(after(started, config.limits.ttft)),
            // No chunk yet: the call's start, so that bytes already there when late headers arrive
            // are read before any deadline is checked.
            chunk_at: started,
            idle_due: after(started, config.limits.idle),
            last_answer: started,
            drain_until: started,
            drained: 0,
            outcome: None,
            reported: false,
            target,
            metrics,
            usage: None,
            content_chunks: 0,
            first_note: None,
        };
        let armed = core.deadline();
        Engine {
            sleep: tokio::time::sleep_until(armed),
            armed,
            sleep_waker: None,
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
            // The deadline as read before polling the body, while nothing has changed since.
            let mut due_before = None;
            if core.phase != Phase::FirstEvent {
                if let Some(bytes) = core.take_output() {
                    core.hand_over_first_note();
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
                        let due = core.deadline();
                        if core.chunk_at >= due {
                            if let Some(rejected) = core.expire() {
                                return Poll::Ready(Next::Rejected(rejected));
                            }
                            continue;
                        }
                        due_before = Some(due);
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

            // The body is pending: nothing changed since `due_before` was read.
            let due = due_before.unwrap_or_else(|| core.deadline());
            if due < *this.armed {
                this.sleep.as_mut().reset(due);
                *this.armed = due;
                *this.sleep_waker = None;
            }
            let registered = this
                .sleep_waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()));
            if registered && !this.sleep.is_elapsed() {
                return Poll::Pending;
            }
            if this.sleep.as_mut().poll(cx).is_pending() {
                if !registered {
                    *this.sleep_waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let due = core.deadline();
            if Instant::now() < due {
                // An event moved the deadline on since the timer was set.
                this.sleep.as_mut().reset(due);
                *this.armed = due;
                *this.sleep_waker = None;
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

    /// The first answer event's note, into the notes a layer above asked for since (before it
    /// reads the event); dropped when none did.
    fn hand_over_first_note(&mut self) {
        if let Some(note) = self.first_note.take() {
            if let Some(notes) = self.outcome.as_ref().and_then(|o| o.scan_notes()) {
                notes.put(note);
            }
        }
    }

    /// When the next limit runs out.
    fn deadline(&self) -> Instant {
        match self.phase {
            Phase::FirstEvent => self.first_due,
            Phase::Streaming => {
                let mut due = self.total_due.min(self.idle_due);
                if self.tracker.is_complete() {
                    due = due.min(after(self.last_answer, self.config.finish_grace));
                }
                due
            }
            Phase::Draining => self.drain_until,
            Phase::Closing | Phase::Ended => after(self.chunk_at, FAR),
        }
    }
}
