//! The committed stream's watch: what it sent, and the resume when it fails.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use serde_json::Value;
use tower_llm_core::openai::error_event;
use tower_llm_core::sse::{
    inspect_event, json_frame, parse_error_event, EventKind, SseDecoder, SseEvent,
};
use tower_llm_core::{classify_error, BoxError, ErrorKind, ReplayBody, StreamOutcome};

use super::splice::{Splice, Spliced};
use super::transcript::{Transcript, Unresumable};
use super::{How, ResumeFuture, Resumer};
use crate::metrics::{HOW, REASON, STREAM_RESUMED_TOTAL, STREAM_RESUME_FAILED_TOTAL, TARGET};

/// The first failure of a stream, held back while it is resumed.
struct Held {
    /// Its error event as the guard sent it (`None` when the body broke or ended instead).
    frame: Option<Bytes>,
    kind: ErrorKind,
}

/// Watches a committed stream on its way to the caller and resumes it when it fails.
pub(crate) struct Watch<B> {
    decoder: SseDecoder,
    transcript: Transcript,
    /// What can resume the stream now (`None`: nothing left, or not resumable).
    resumer: Option<Box<dyn Resumer<B>>>,
    /// The continuation in progress, once a resume committed.
    splice: Option<Splice>,
    resuming: Option<ResumeFuture<B>>,
    held: Option<Held>,
    /// Frames to hand on before reading on.
    queue: VecDeque<Bytes>,
    /// The target the current stream comes from, and how it was obtained (for a continuation).
    target: Arc<str>,
    how: Option<How>,
    /// The outcome of the stream guard below, whose notes spare scanning each event again.
    outcome: Option<StreamOutcome>,
    done: bool,
    ended: bool,
}

impl<B> Watch<B> {
    /// A watch over a stream from `target`; `resumer` walks on when it fails.
    pub(crate) fn new(
        target: Arc<str>,
        cap: usize,
        resumer: Option<Box<dyn Resumer<B>>>,
        how: Option<How>,
        unresumable: Option<Unresumable>,
    ) -> Self {
        let mut transcript = Transcript::new(cap);
        if let Some(why) = unresumable {
            transcript.mark(why);
        }
        Watch {
            decoder: SseDecoder::new(),
            transcript,
            resumer,
            splice: None,
            resuming: None,
            held: None,
            queue: VecDeque::new(),
            target,
            how,
            outcome: None,
            done: false,
            ended: false,
        }
    }

    /// Read the scans of the stream guard that reported through `outcome` (the response's
    /// [`StreamOutcome`], when a guard is below) instead of scanning each event again.
    pub(crate) fn with_scans_of(mut self, outcome: Option<&StreamOutcome>) -> Self {
        if let Some(outcome) = outcome {
            outcome.watch_scans();
            self.outcome = Some(outcome.clone());
        }
        self
    }

    /// A continuation's hand-off: what resumes it in turn, and how it was obtained.
    pub(crate) fn into_handoff(self) -> (Option<Box<dyn Resumer<B>>>, Option<How>) {
        (self.resumer, self.how)
    }
}

impl<B> Watch<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// The next frame for the caller, reading `inner` (the current stream's body).
    pub(crate) fn poll_frame(
        &mut self,
        mut inner: Pin<&mut ReplayBody<B>>,
        span: &mut tracing::Span,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(frame) = self.queue.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            if let Some(resuming) = self.resuming.as_mut() {
                let resumed = match resuming.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(resumed) => resumed,
                };
                self.resuming = None;
                match resumed {
                    Ok(resumed) => {
                        if let Some(held) = &self.held {
                            crate::trace::stream_failed(span, held.kind);
                        }
                        // The cut attempt's span closes here; the continuation's is read on.
                        *span = resumed.span;
                        self.resumed(resumed.target, resumed.how, resumed.next);
                        inner.set(resumed.body);
                    }
                    Err(why) => self.give_up("no_target", &why),
                }
                continue;
            }
            let polled = {
                let _entered = span.enter();
                inner.as_mut().poll_frame(cx)
            };
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    if self.done || self.transcript.finished() {
                        self.ended = true;
                    } else {
                        // Ended without a `finish_reason` (no stream guard below): a cut.
                        self.fail(ErrorKind::InvalidResponse, None);
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    if self.done || !self.fail(classify_error(&*error).kind, None) {
                        self.ended = true;
                        return Poll::Ready(Some(Err(error)));
                    }
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(data) = self.on_data(data) {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
            }
        }
    }

    /// One data frame of the current stream: the frame to hand on as it is, or `None` when what
    /// it holds went to the queue (rewritten, or held back for a resume).
    fn on_data(&mut self, data: Bytes) -> Option<Bytes> {
        // Whether the frame starts on an event boundary (the stream guard hands on whole events).
        let whole = !self.decoder.is_mid_event() && self.decoder.buffered() == 0;
        if self.splice.is_none() {
            // Nearly every frame is one `data:` event (the guard hands on whole events): read
            // it without decoding the frame line by line.
            let single = self.decoder.single_data_event(&data);
            if single.is_none() {
                self.decoder.push(data.clone());
            }
            return self.observe(data, whole, single);
        }
        self.decoder.push(data.clone());
        let mut out: Vec<Bytes> = Vec::new();
        while let Ok(Some(event)) = self.decoder.next_event() {
            let kind = inspect_event(&event);
            let spliced = match kind {
                EventKind::Error => {
                    self.queue.extend(out);
                    let kind = error_kind(&event);
                    self.fail(kind, Some(event.encode()));
                    return None;
                }
                EventKind::Done => {
                    self.done = true;
                    Spliced::Pass
                }
                EventKind::Delta { .. } | EventKind::Finish { .. } => match self.splice.as_mut() {
                    Some(splice) => splice.event(event.data(), &mut self.transcript),
                    None => Spliced::Pass,
                },
                _ => Spliced::Pass,
            };
            match spliced {
                Spliced::Pass => out.push(event.encode()),
                Spliced::Rewrite(frame) => out.push(reframe(&event, frame)),
                Spliced::Drop => {}
                Spliced::Diverged(why) => {
                    self.queue.extend(out);
                    self.give_up("diverged", &why);
                    return None;
                }
            }
        }
        self.queue.extend(out);
        None
    }

    /// A frame of the first stream: its events (`single`, when the frame is that one event and
    /// was not pushed to the decoder) go into the transcript and the frame on as it came, unless
    /// it is the error event that ends the stream and the stream is resumed.
    fn observe(&mut self, data: Bytes, whole: bool, mut single: Option<SseEvent>) -> Option<Bytes> {
        let mut first = true;
        // A frame read as one event was not pushed to the decoder, which was empty then: it has
        // no further event to give, and asking it would cost a search of its empty input.
        let pushed = single.is_none();
        while let Some(event) = single.take().or_else(|| {
            pushed
                .then(|| self.decoder.next_event().ok().flatten())
                .flatten()
        }) {
            // `[DONE]`: what `inspect_event` says of it, without a failed chunk parse first.
            if event.is_done() && event.event() != Some("error") {
                self.done = true;
                first = false;
                continue;
            }
            // A plain OpenAI chunk (nearly every event): one JSON pass, the transcript's.
            let notes = self.outcome.as_ref().and_then(StreamOutcome::scan_notes);
            if self.transcript.observe_event(&event, notes) {
                first = false;
                continue;
            }
            match inspect_event(&event) {
                EventKind::Error => {
                    if !(first && whole) {
                        // Other events share its frame: no clean place to cut, no resume.
                        self.transcript.mark(Unresumable::Format);
                    }
                    let kind = error_kind(&event);
                    return if self.fail(kind, Some(event.encode())) {
                        None
                    } else {
                        Some(data)
                    };
                }
                EventKind::Done => self.done = true,
                EventKind::Delta { .. } | EventKind::Finish { .. } => {
                    self.transcript.observe(event.data());
                }
                _ => {}
            }
            first = false;
        }
        Some(data)
    }

    /// The current stream failed with `kind`. Returns whether the failure was taken over (a
    /// resume started, or the caller gets the first failure from the queue); `false` when the
    /// first stream is not resumed and its failure goes to the caller as it came.
    fn fail(&mut self, kind: ErrorKind, frame: Option<Bytes>) -> bool {
        if self.held.is_none() {
            self.held = Some(Held {
                frame: frame.clone(),
                kind,
            });
        }
        let why_not = if !kind.fails_over() {
            Some("the failure is not one another target can fix")
        } else {
            self.transcript.unresumable().map(Unresumable::as_str)
        };
        let resumer = match why_not {
            Some(_) => None,
            None => self.resumer.take(),
        };
        let Some(resumer) = resumer else {
            let why = why_not.unwrap_or("no target left to resume on");
            if self.splice.is_some() {
                // A continuation failed: the caller gets the first failure, with the reason.
                self.give_up("no_target", why);
                return true;
            }
            if kind.fails_over() {
                count_failed("unresumable");
                tracing::info!(target_name = %self.target, kind = kind.as_str(), reason = why, "stream failed after commit; not resumed");
            }
            self.held = None;
            self.ended = true;
            return false;
        };
        tracing::debug!(target_name = %self.target, kind = kind.as_str(), sent_bytes = self.transcript.text().len(), "stream failed after commit; resuming");
        self.resuming = Some(resumer.resume(self.transcript.text()));
        true
    }

    /// A continuation committed: splice it in after a comment naming its target.
    fn resumed(&mut self, target: Arc<str>, how: How, next: Option<Box<dyn Resumer<B>>>) {
        metrics::counter!(STREAM_RESUMED_TOTAL, TARGET => target.to_string(), HOW => how.as_str())
            .increment(1);
        tracing::info!(
            from = %self.target,
            target_name = %target,
            how = how.as_str(),
            sent_bytes = self.transcript.text().len(),
            "stream resumed on another target"
        );
        self.queue
            .push_back(Bytes::from(format!(": resumed on {target}\n\n")));
        self.splice = Some(Splice::new(how, &self.transcript));
        self.decoder = SseDecoder::new();
        // The continuation comes through another guard; its events are read here in full.
        self.outcome = None;
        self.resumer = next;
        self.target = target;
        self.how = Some(how);
        self.done = false;
    }

    /// No resume: end with the first failure's error event, saying why.
    fn give_up(&mut self, reason: &'static str, why: &str) {
        count_failed(reason);
        tracing::warn!(target_name = %self.target, reason = why, "stream not resumed");
        let held = self.held.take();
        let frame = held
            .as_ref()
            .and_then(|h| h.frame.as_ref())
            .and_then(|frame| amend(frame, why))
            .unwrap_or_else(|| {
                let kind = held.as_ref().map_or(ErrorKind::InvalidResponse, |h| h.kind);
                error_event(
                    kind,
                    &format!("the stream broke after its first event; not resumed: {why}"),
                )
            });
        self.queue.push_back(frame);
        self.ended = true;
    }
}

/// The kind an error event names (`ServerError` when none).
fn error_kind(event: &SseEvent) -> ErrorKind {
    parse_error_event(event)
        .and_then(|e| e.kind)
        .unwrap_or(ErrorKind::ServerError)
}

fn count_failed(reason: &'static str) {
    metrics::counter!(STREAM_RESUME_FAILED_TOTAL, REASON => reason).increment(1);
}

/// `frame` (an error event) with `; not resumed: <why>` added to its message.
fn amend(frame: &Bytes, why: &str) -> Option<Bytes> {
    let mut decoder = SseDecoder::new();
    decoder.push(frame.clone());
    let event = decoder.next_event().ok()??;
    let mut value: Value = serde_json::from_slice(event.data()).ok()?;
    let error = value.get_mut("error")?.as_object_mut()?;
    let message = match error.get("message").and_then(Value::as_str) {
        Some(message) => format!("{message}; not resumed: {why}"),
        None => format!("not resumed: {why}"),
    };
    error.insert("message".into(), Value::String(message));
    Some(json_frame(&value))
}

/// `frame` (a rewritten `data:` frame) with `event`'s other fields kept.
fn reframe(event: &SseEvent, frame: Bytes) -> Bytes {
    if event.event().is_none() && event.id().is_none() {
        return frame;
    }
    let data = frame
        .strip_prefix(b"data: ")
        .and_then(|d| d.strip_suffix(b"\n\n"))
        .map(Bytes::copy_from_slice)
        .unwrap_or(frame);
    let mut rebuilt = SseEvent::new(data);
    if let Some(name) = event.event() {
        rebuilt = rebuilt.with_event(name.to_owned());
    }
    if let Some(id) = event.id() {
        rebuilt = rebuilt.with_id(id.to_owned());
    }
    rebuilt.encode()
}

#[cfg(test)]
mod tests {
    use super::super::chunk_strategy::chunk_data;
    use super::*;
    use http_body_util::Empty;
    use proptest::prelude::*;
    use tower_llm_core::sse::{scan_plain_chunk, ScanNotes};

    fn watch(outcome: Option<&StreamOutcome>) -> Watch<Empty<Bytes>> {
        Watch::new(Arc::from("primary"), 1 << 16, None, None, None).with_scans_of(outcome)
    }

    /// What the stream guard below does with a frame before handing it on: decode its events
    /// and note the scan of each one's data.
    fn guard_notes(guard: &mut SseDecoder, notes: &ScanNotes, frame: &Bytes) {
        guard.push(frame.clone());
        while let Ok(Some(event)) = guard.next_event() {
            notes.note(event.data(), scan_plain_chunk(event.data()).as_ref());
        }
    }

    /// Everything the watch's reading of the first stream decides.
    fn state(w: &Watch<Empty<Bytes>>) -> (String, Option<&'static str>, bool, bool, bool, usize) {
        (
            w.transcript.text().to_owned(),
            w.transcript.unresumable().map(Unresumable::as_str),
            w.transcript.finished(),
            w.done,
            w.ended,
            w.queue.len(),
        )
    }

    const PLAIN: &str = r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;

    #[test]
    fn a_noted_frame_is_read_from_its_note() {
        let outcome = StreamOutcome::new();
        let mut w = watch(Some(&outcome));
        let notes = outcome.scan_notes().unwrap();
        let frame = Bytes::from(format!("data: {PLAIN}\n\n"));
        let data = frame.slice(6..frame.len() - 2);
        notes.note(&data, scan_plain_chunk(&data).as_ref());

        assert_eq!(w.on_data(frame.clone()), Some(frame));
        assert!(notes.is_empty(), "the note was read");
        assert_eq!(w.transcript.text(), "Hi");
        assert_eq!(w.transcript.id(), Some("c1"));
        assert!(!w.decoder.is_mid_event() && w.decoder.buffered() == 0);
    }

    /// A frame as a stream can send it: mostly one plain `data:` line, sometimes with an id or
    /// a name, CRLF line ends, two events at once, a comment, or `[DONE]`.
    fn frame() -> impl Strategy<Value = String> {
        let line = chunk_data()
            .prop_map(|data| String::from_utf8_lossy(&data).replace(['\n', '\r'], " "))
            .boxed();
        prop_oneof![
            8 => line.clone().prop_map(|d| format!("data: {d}\n\n")),
            1 => line.clone().prop_map(|d| format!("id: 3\ndata: {d}\n\n")),
            1 => line.clone().prop_map(|d| format!("event: error\ndata: {d}\n\n")),
            1 => line.clone().prop_map(|d| format!("data: {d}\r\n\r\n")),
            1 => (line.clone(), line).prop_map(|(a, b)| format!("data: {a}\n\ndata: {b}\n\n")),
            1 => Just(": keep-alive\n\n".to_owned()),
            1 => Just("data: [DONE]\n\n".to_owned()),
        ]
    }

    proptest! {
        /// Reading frames from the guard's notes decides exactly what scanning them again does.
        #[test]
        fn notes_read_the_stream_as_scanning_does(frames in prop::collection::vec(frame(), 1..12)) {
            let outcome = StreamOutcome::new();
            let mut noted = watch(Some(&outcome));
            let notes = outcome.scan_notes().unwrap();
            let mut guard = SseDecoder::new();
            let mut decoded = watch(None);
            for frame in frames {
                let frame = Bytes::from(frame);
                guard_notes(&mut guard, notes, &frame);
                let a = noted.on_data(frame.clone());
                let b = decoded.on_data(frame.clone());
                prop_assert_eq!(a, b);
                prop_assert_eq!(state(&noted), state(&decoded));
                if noted.ended {
                    break;
                }
            }
        }
    }
}
