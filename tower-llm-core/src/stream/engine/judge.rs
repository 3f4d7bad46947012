//! Judging the buffered frames: what to hand on, leave out, or end the stream at.

use bytes::{Buf, Bytes, BytesMut};

use super::end::Stop;
use super::{after, Core, Phase};
use crate::sse::{inspect_and_note, parse_error_event, EventKind, NoteTo};
use crate::stream::frame::RawFrame;
use crate::stream::usage::{self, Usage};
use crate::stream::{MalformedPolicy, StreamEnd};
use crate::{ClassifiedError, ErrorKind, Failure};
use std::borrow::Cow;

/// What to do with one frame.
#[derive(Debug)]
pub(super) enum Verdict {
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
pub(super) struct Parked {
    frame: RawFrame,
    used: usize,
    verdict: Verdict,
}

/// What scanning the buffered bytes led to.
pub(super) enum Scan {
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

impl<B> Core<B> {
    /// Judge the buffered frames until there is something to do.
    pub(super) fn scan(&mut self) -> Scan {
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
            self.idle_due = after(self.chunk_at, self.config.limits.idle);
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
        // Nearly every frame is one `data:` line: no line-by-line decoding for it, and no second
        // search for line breaks when the framer saw that it is one line.
        let single = if matches!(frame, RawFrame::InChunk(_)) && self.framer.one_line() {
            self.decoder.single_data_line_event(&bytes)
        } else {
            self.decoder.single_data_event(&bytes)
        };
        let event = match single {
            Some(event) => event,
            None => {
                self.decoder.push(bytes);
                match self.decoder.next_event() {
                    Ok(Some(event)) => event,
                    // Comments, blank lines, `id:` or `retry:` alone: no event.
                    Ok(None) => return Verdict::Keep,
                    Err(err) => {
                        return Verdict::Stop(Stop::new(
                            ErrorKind::InvalidResponse,
                            err.to_string(),
                        ))
                    }
                }
            }
        };
        // A layer above that reads the same events (a fallback's resume watch) may have asked
        // for what the scan finds, so that it does not scan each event again.
        // Before the first answer event nobody above can have asked: its note is kept, and put
        // in the notes if a layer asks for them once the stream is committed to.
        let kind = match self
            .outcome
            .as_ref()
            .and_then(|outcome| outcome.scan_notes())
        {
            Some(notes) => inspect_and_note(&event, NoteTo::Notes(notes)),
            None if self.phase == Phase::FirstEvent => {
                inspect_and_note(&event, NoteTo::Keep(&mut self.first_note))
            }
            None => inspect_and_note(&event, NoteTo::Nowhere),
        };
        self.tracker.record(kind);
        match kind {
            EventKind::Delta { usage: true } | EventKind::Finish { usage: true } => {
                self.last_answer = self.chunk_at;
                // Parsed again only for the chunk that carries usage (once per stream).
                if let Some(found) = usage::of_event(event.data()) {
                    self.usage.get_or_insert_with(Usage::default).merge(found);
                }
            }
            EventKind::Delta { usage: false } => {
                self.last_answer = self.chunk_at;
                self.content_chunks += 1;
            }
            EventKind::Finish { usage: false } => self.last_answer = self.chunk_at,
            _ => {}
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
}
