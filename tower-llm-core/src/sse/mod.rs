//! Server-sent events framing for streamed completions.
//!
//! The pieces, for the layers that watch a stream (a streaming timeout, a fallback that commits
//! to a target after the first event, a gateway that must never pass a cut stream off as whole):
//!
//! - [`SseDecoder`]: incremental WHATWG event-stream parsing of body chunks split anywhere (inside
//!   a `\r\n`, inside a UTF-8 sequence, between `data:` lines), with a bound on the size of one
//!   event. A chunk that holds whole events is sliced, not copied.
//! - [`inspect_event`] and [`StreamTracker`]: what an event means in an OpenAI-style stream
//!   (`[DONE]`, a delta, a `finish_reason`, an in-band error, a malformed event), and whether the
//!   stream so far is complete or would be cut if it ended now. Anthropic (`message_stop`,
//!   `stop_reason`), Gemini (`finishReason`) and OpenAI Responses (`response.completed`) streams
//!   are recognised too.
//! - [`ScanNotes`]: what the stream guard's scan found in recent events, so that a layer above
//!   reading the same events (a fallback's resume watch) does not scan them again.
//! - Writers: [`SseEvent::encode`] (any event: `event:`, `id:`, multi-line data) and
//!   [`json_frame`] (`data: <json>` and a blank line, the frame of every OpenAI chunk). The
//!   OpenAI frames themselves, `[DONE]` and the in-band error event, are in
//!   [`openai`](crate::openai).
//!
//! ```
//! use bytes::Bytes;
//! use tower_llm_core::sse::{EventKind, SseDecoder, StreamTracker};
//!
//! let mut decoder = SseDecoder::new();
//! let mut tracker = StreamTracker::new();
//! let chunks = [
//!     &b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel"[..],
//!     b"lo\"},\"finish_reason\":null}]}\r\n\r",
//!     b"\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
//! ];
//! let mut kinds = Vec::new();
//! for chunk in chunks {
//!     for event in decoder.decode(Bytes::from_static(chunk)) {
//!         kinds.push(tracker.observe(&event.unwrap()));
//!     }
//! }
//! assert_eq!(kinds, [EventKind::Delta { usage: false }, EventKind::Finish { usage: false }]);
//! // A finish_reason makes the stream complete even though `[DONE]` never came.
//! assert!(tracker.is_complete());
//! ```

mod chunk;
#[cfg(test)]
mod chunk_strategy;
pub(crate) mod cursor;
mod decode;
mod event;
mod inspect;
mod notes;
mod tracker;

pub(crate) use chunk::string_stop;
pub use chunk::{scan_plain_chunk, PlainChoice, PlainChunk, PlainDelta};
pub use decode::{Decode, SseDecoder, SseError, DEFAULT_MAX_EVENT_SIZE};
pub use event::{json_frame, SseEvent};
pub(crate) use inspect::{inspect_and_note, NoteTo};
pub use inspect::{inspect_event, parse_error_event, EventKind};
pub(crate) use notes::Note;
pub use notes::ScanNotes;
pub use tracker::{StreamStatus, StreamTracker};
