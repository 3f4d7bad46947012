//! How a stream ends early or on time: limits, a broken or finished body, an error event.

use std::borrow::Cow;

use bytes::Bytes;
use tokio::time::Instant;

use super::judge::Scan;
use super::{Core, Phase};
use crate::openai::{done_frame, error_event};
use crate::stream::metrics as names;
use crate::stream::StreamEnd;
use crate::{classify_error, BoxError, ClassifiedError, ErrorKind, Failure};

/// Why a stream stops early.
#[derive(Debug)]
pub(super) struct Stop {
    pub(super) failure: Failure,
    pub(super) message: Cow<'static, str>,
}

impl Stop {
    pub(super) fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
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

impl<B> Core<B> {
    /// End the stream early: fail the attempt before the first event, else hand on an error event.
    pub(super) fn stop(&mut self, stop: Stop) -> Scan {
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
    pub(super) fn end_now(&mut self) {
        self.body = None;
        self.phase = Phase::Ended;
    }

    /// The stream is whole: append `[DONE]` and end.
    fn close_complete(&mut self) {
        self.close(done_frame(), StreamEnd::Complete);
    }

    /// A limit ran out.
    pub(super) fn expire(&mut self) -> Option<ClassifiedError> {
        let limits = self.config.limits;
        let total_over = Instant::now() >= self.total_due || self.chunk_at >= self.total_due;
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
    pub(super) fn body_ended(&mut self) -> Option<ClassifiedError> {
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
    pub(super) fn body_failed(&mut self, err: BoxError) -> Option<ClassifiedError> {
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
}
