//! Server-sent events framing for streamed completions.
//!
//! Three pieces, for the layers that watch a stream (a streaming timeout, a fallback that commits
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

use std::fmt;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use memchr::{memchr, memchr2};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::openai::DONE;
use crate::provider::{parse_error_slice, MAX_MESSAGE_LEN};
use crate::{ErrorKind, ProviderError};

/// Default bound on one event (the bytes of its lines, without line endings): 1 MiB. Chat
/// completion chunks are a few hundred bytes; a bigger event means a broken or hostile upstream.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched server-sent event.
///
/// `Debug` shows the sizes, never the data: it holds completion text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    event: Option<Bytes>,
    data: Bytes,
    id: Option<Bytes>,
}

impl SseEvent {
    /// An unnamed event (type `message`) carrying `data`.
    pub fn new(data: impl Into<Bytes>) -> Self {
        SseEvent {
            event: None,
            data: data.into(),
            id: None,
        }
    }

    /// Set the event type (`event:` field).
    pub fn with_event(mut self, event: impl Into<Bytes>) -> Self {
        self.event = Some(event.into());
        self
    }

    /// Set the event ID (`id:` field).
    pub fn with_id(mut self, id: impl Into<Bytes>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The event type; `None` when the event has none (absent or empty `event:`, which means the
    /// default type `message`) or when it is not UTF-8.
    pub fn event(&self) -> Option<&str> {
        self.event
            .as_deref()
            .filter(|e| !e.is_empty())
            .and_then(|e| std::str::from_utf8(e).ok())
    }

    /// The data: the event's `data:` lines joined with `\n`, as sent (not checked for UTF-8).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The data as text, `None` when it is not UTF-8.
    pub fn data_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }

    /// The last event ID the stream set at this event (IDs carry over, as in the WHATWG spec).
    pub fn id(&self) -> Option<&str> {
        self.id
            .as_deref()
            .and_then(|id| std::str::from_utf8(id).ok())
    }

    /// Whether this is the `[DONE]` event that ends an OpenAI stream.
    pub fn is_done(&self) -> bool {
        self.data.trim_ascii() == DONE.as_bytes()
    }

    /// The event as wire bytes: `event:`, `id:`, one `data:` line per line of data, a blank line.
    ///
    /// The event type and ID are cut at their first line break, so they cannot inject fields. An
    /// ID containing NUL is left out (a decoder would ignore it).
    pub fn encode(&self) -> Bytes {
        let extra =
            self.event.as_ref().map_or(0, Bytes::len) + self.id.as_ref().map_or(0, Bytes::len);
        let mut out = BytesMut::with_capacity(self.data.len() + extra + 32);
        if let Some(event) = &self.event {
            out.put_slice(b"event: ");
            out.put_slice(first_line(event));
            out.put_u8(b'\n');
        }
        if let Some(id) = self.id.as_ref().filter(|id| !id.contains(&0)) {
            out.put_slice(b"id: ");
            out.put_slice(first_line(id));
            out.put_u8(b'\n');
        }
        put_data(&mut out, &self.data);
        out.freeze()
    }
}

/// `data` as `data:` lines (one per line of `data`) and the blank line that ends the event.
fn put_data(out: &mut BytesMut, data: &[u8]) {
    let mut rest = data;
    loop {
        out.put_slice(b"data: ");
        match memchr2(b'\n', b'\r', rest) {
            None => {
                out.put_slice(rest);
                out.put_u8(b'\n');
                break;
            }
            Some(pos) => {
                out.put_slice(&rest[..pos]);
                out.put_u8(b'\n');
                let skip = if rest[pos..].starts_with(b"\r\n") {
                    2
                } else {
                    1
                };
                rest = &rest[pos + skip..];
            }
        }
    }
    out.put_u8(b'\n');
}

/// `value` as JSON in one SSE frame: `data: <json>` and a blank line, written in one buffer.
///
/// Compact JSON has no line breaks (they are escaped inside strings), so the frame is one
/// `data:` line; should `value` hold raw JSON that does have some, it is framed like
/// [`SseEvent::encode`] frames it, one `data:` line per line.
///
/// ```
/// let frame = tower_llm_core::sse::json_frame(&serde_json::json!({"choices": []}));
/// assert_eq!(frame, "data: {\"choices\":[]}\n\n");
/// ```
pub fn json_frame<T: Serialize + ?Sized>(value: &T) -> Bytes {
    const PREFIX: &[u8] = b"data: ";
    let mut out = BytesMut::with_capacity(256);
    out.put_slice(PREFIX);
    let mut writer = out.writer();
    let written = serde_json::to_writer(&mut writer, value);
    let mut out = writer.into_inner();
    if written.is_err() {
        // Plain data structures cannot fail to serialize; an empty event is the visible symptom
        // if one ever does.
        out.truncate(PREFIX.len());
    }
    if memchr2(b'\n', b'\r', &out[PREFIX.len()..]).is_some() {
        let json = out.split_off(PREFIX.len());
        out.clear();
        put_data(&mut out, &json);
        return out.freeze();
    }
    out.put_slice(b"\n\n");
    out.freeze()
}

fn first_line(bytes: &[u8]) -> &[u8] {
    let end = memchr2(b'\n', b'\r', bytes).unwrap_or(bytes.len());
    &bytes[..end]
}

impl fmt::Debug for SseEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseEvent")
            .field("event", &self.event())
            .field("data_len", &self.data.len())
            .field("id", &self.id())
            .finish()
    }
}

/// The event stream broke a rule of the decoder. The decoder is unusable afterwards: every call
/// returns the same error.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseError {
    /// One event (or one line) grew past the decoder's limit before it was complete.
    EventTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::EventTooLarge { limit } => {
                write!(f, "server-sent event larger than the {limit}-byte limit")
            }
        }
    }
}

impl std::error::Error for SseError {}

#[derive(Default)]
enum Data {
    /// No `data:` field yet.
    #[default]
    None,
    /// One `data:` field: a slice of the input, no copy.
    One(Bytes),
    /// Several fields joined with `\n`.
    Many(BytesMut),
}

/// Incremental SSE parser following the WHATWG event-stream rules: `\n`, `\r\n` and `\r` line
/// endings, `:` comments, `event:`, `data:` (joined with `\n`), `id:` (kept across events, ignored
/// when it contains NUL), `retry:`, unknown fields ignored, a leading BOM skipped, an event
/// dispatched at a blank line and only if it has data.
///
/// Feed body chunks with [`push`](Self::push) and drain events with
/// [`next_event`](Self::next_event) (or both at once with [`decode`](Self::decode)); at the end of
/// the body, call [`finish`](Self::finish). Drain the events of a chunk before pushing the next:
/// leftover input is then joined with the new chunk by copying.
///
/// Memory is bounded by the event limit: a line or event longer than
/// [`max_event_size`](Self::with_max_event_size) is an [`SseError::EventTooLarge`], not a growing
/// buffer. Events inside one chunk are slices of it; only an event split across chunks is copied.
pub struct SseDecoder {
    /// Unparsed input.
    input: Bytes,
    /// The start of a line whose end has not arrived yet.
    line: BytesMut,
    /// The last chunk ended in `\r`: skip a `\n` that starts the next.
    skip_lf: bool,
    /// No line parsed yet: strip a BOM from the first one.
    at_start: bool,
    /// The body ended ([`finish`](Self::finish)).
    eof: bool,
    event: Option<Bytes>,
    data: Data,
    last_id: Option<Bytes>,
    retry: Option<Duration>,
    /// Bytes of the current event's lines so far (without line endings and comments).
    pending: usize,
    max_event_size: usize,
    failed: Option<SseError>,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SseDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseDecoder")
            .field("buffered", &(self.input.len() + self.line.len()))
            .field("pending_event_bytes", &self.pending)
            .field("max_event_size", &self.max_event_size)
            .field("failed", &self.failed)
            .finish()
    }
}

impl SseDecoder {
    /// A decoder with the [`DEFAULT_MAX_EVENT_SIZE`] limit.
    pub fn new() -> Self {
        Self::with_max_event_size(DEFAULT_MAX_EVENT_SIZE)
    }

    /// A decoder that rejects an event (or a line) longer than `limit` bytes.
    pub fn with_max_event_size(limit: usize) -> Self {
        SseDecoder {
            input: Bytes::new(),
            line: BytesMut::new(),
            skip_lf: false,
            at_start: true,
            eof: false,
            event: None,
            data: Data::None,
            last_id: None,
            retry: None,
            pending: 0,
            max_event_size: limit,
            failed: None,
        }
    }

    /// The limit on one event, in bytes.
    pub fn max_event_size(&self) -> usize {
        self.max_event_size
    }

    /// Add a chunk of the body.
    pub fn push(&mut self, chunk: Bytes) {
        if self.failed.is_some() || chunk.is_empty() {
            return;
        }
        if self.input.is_empty() {
            self.input = chunk;
        } else {
            let mut joined = BytesMut::with_capacity(self.input.len() + chunk.len());
            joined.put_slice(&self.input);
            joined.put_slice(&chunk);
            self.input = joined.freeze();
        }
    }

    /// Push `chunk` and iterate over the events it completes.
    pub fn decode(&mut self, chunk: Bytes) -> Decode<'_> {
        self.push(chunk);
        Decode {
            decoder: self,
            done: false,
        }
    }

    /// The next complete event, `Ok(None)` when more input is needed.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        loop {
            if self.skip_lf && !self.input.is_empty() {
                if self.input.first() == Some(&b'\n') {
                    self.input.advance(1);
                }
                self.skip_lf = false;
            }
            let line = match memchr2(b'\n', b'\r', &self.input) {
                Some(pos) => {
                    let ending_cr = self.input.get(pos) == Some(&b'\r');
                    let mut line = self.input.split_to(pos);
                    self.input.advance(1);
                    if ending_cr {
                        if self.input.first() == Some(&b'\n') {
                            self.input.advance(1);
                        } else if self.input.is_empty() {
                            self.skip_lf = true;
                        }
                    }
                    if !self.line.is_empty() {
                        self.line.put_slice(&line);
                        line = self.line.split().freeze();
                    }
                    line
                }
                None if self.eof => {
                    // The body ended inside a line or an event: parse what is there.
                    let rest = std::mem::take(&mut self.input);
                    let line = if self.line.is_empty() {
                        rest
                    } else {
                        self.line.put_slice(&rest);
                        self.line.split().freeze()
                    };
                    if !line.is_empty() {
                        self.check_size(line.len())?;
                        self.process_line(line);
                    }
                    self.pending = 0;
                    return Ok(self.dispatch());
                }
                None => {
                    self.check_size(self.line.len() + self.input.len())?;
                    let rest = std::mem::take(&mut self.input);
                    self.line.put_slice(&rest);
                    return Ok(None);
                }
            };
            self.check_size(line.len())?;
            if let Some(event) = self.process_line(line) {
                return Ok(Some(event));
            }
        }
    }

    /// Mark the end of the body and return what is left: the events still in the input, then
    /// the last event if the body ended without the blank line that dispatches it. Call it until
    /// it returns `Ok(None)`.
    ///
    /// The WHATWG algorithm discards an unterminated last event. It is returned here so the caller
    /// can decide; [`is_mid_event`](Self::is_mid_event), checked before calling `finish`, says
    /// whether the body ended inside an event (a sign of a cut stream).
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        self.eof = true;
        self.next_event()
    }

    /// Whether the input so far ends inside an event: bytes of an incomplete line, or fields not
    /// yet dispatched by a blank line.
    pub fn is_mid_event(&self) -> bool {
        self.pending > 0 || !self.line.is_empty() || !self.input.is_empty()
    }

    /// The last event ID the stream set, if any.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id
            .as_deref()
            .and_then(|id| std::str::from_utf8(id).ok())
    }

    /// The reconnection time the stream set with a `retry:` field, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Fail if the current event plus `more` bytes exceeds the limit.
    fn check_size(&mut self, more: usize) -> Result<(), SseError> {
        if self.pending.saturating_add(more) <= self.max_event_size {
            return Ok(());
        }
        let err = SseError::EventTooLarge {
            limit: self.max_event_size,
        };
        self.failed = Some(err.clone());
        self.input = Bytes::new();
        self.line = BytesMut::new();
        self.data = Data::None;
        self.event = None;
        Err(err)
    }

    /// Apply one line (without its ending); returns an event when the line dispatches one.
    fn process_line(&mut self, mut line: Bytes) -> Option<SseEvent> {
        if self.at_start {
            self.at_start = false;
            if line.starts_with(BOM) {
                line.advance(BOM.len());
            }
        }
        if line.is_empty() {
            self.pending = 0;
            return self.dispatch();
        }
        if line.first() == Some(&b':') {
            return None;
        }
        self.pending += line.len();
        let (name_len, value) = match memchr(b':', &line) {
            Some(colon) => {
                let mut value = line.slice(colon + 1..);
                if value.first() == Some(&b' ') {
                    value.advance(1);
                }
                (colon, value)
            }
            None => (line.len(), Bytes::new()),
        };
        match &line[..name_len] {
            b"event" => self.event = Some(value),
            b"data" => match &mut self.data {
                Data::None => self.data = Data::One(value),
                Data::One(first) => {
                    let mut joined = BytesMut::with_capacity(first.len() + 1 + value.len());
                    joined.put_slice(first);
                    joined.put_u8(b'\n');
                    joined.put_slice(&value);
                    self.data = Data::Many(joined);
                }
                Data::Many(joined) => {
                    joined.put_u8(b'\n');
                    joined.put_slice(&value);
                }
            },
            // Copied: an ID outlives its event and should not pin the chunk it came in.
            b"id" if !value.contains(&0) => self.last_id = Some(Bytes::copy_from_slice(&value)),
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let millis = value.iter().fold(0u64, |acc, d| {
                    acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                self.retry = Some(Duration::from_millis(millis));
            }
            _ => {}
        }
        None
    }

    /// End the current event: an event when it has data, else nothing (its type is reset).
    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let data = match std::mem::take(&mut self.data) {
            Data::None => return None,
            Data::One(data) => data,
            Data::Many(data) => data.freeze(),
        };
        Some(SseEvent {
            event,
            data,
            id: self.last_id.clone(),
        })
    }
}

/// Iterator over the events one chunk completes; see [`SseDecoder::decode`]. It ends after the
/// first error.
#[derive(Debug)]
pub struct Decode<'a> {
    decoder: &'a mut SseDecoder,
    done: bool,
}

impl Iterator for Decode<'_> {
    type Item = Result<SseEvent, SseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.decoder.next_event() {
            Ok(Some(event)) => Some(Ok(event)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

/// What one event means in a streamed completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The stream's end: `data: [DONE]` (OpenAI), `message_stop` (Anthropic),
    /// `response.completed` / `response.incomplete` (OpenAI Responses).
    Done,
    /// A chunk of the answer (a `choices` / `candidates` delta, an Anthropic content event), or a
    /// usage-only chunk (`choices: []` with `usage`).
    Delta {
        /// Whether the chunk carries token usage.
        usage: bool,
    },
    /// A chunk with a `finish_reason` (Gemini `finishReason`, Anthropic `stop_reason`): the answer
    /// is complete, though `[DONE]` (and with `stream_options.include_usage`, a usage chunk) may
    /// still follow.
    Finish {
        /// Whether the chunk carries token usage.
        usage: bool,
    },
    /// An in-band error: `event: error`, a JSON object with a top-level `error`, or a
    /// `"type":"error"` event (see [`parse_error_event`]).
    Error,
    /// Data that is neither `[DONE]` nor a JSON object: the stream is broken.
    Malformed,
    /// A well-formed event that carries no answer: a ping, empty data, an unknown JSON object.
    Other,
}

/// What `event` means in a streamed completion. Allocation-free for ordinary chunks: the JSON is
/// scanned for the few fields that matter, not built into a tree.
pub fn inspect_event(event: &SseEvent) -> EventKind {
    if event.event.as_deref() == Some(&b"error"[..]) {
        return EventKind::Error;
    }
    let data = event.data.trim_ascii();
    if data == DONE.as_bytes() {
        return EventKind::Done;
    }
    if data.is_empty() {
        return EventKind::Other;
    }
    let probe: Probe<'_> = match serde_json::from_slice(data) {
        Ok(probe) => probe,
        Err(_) => return EventKind::Malformed,
    };
    if probe.error.is_some() {
        return EventKind::Error;
    }
    let ty = probe.ty.as_deref();
    match ty {
        Some("error" | "response.failed") => return EventKind::Error,
        Some("message_stop" | "response.completed" | "response.incomplete") => {
            return EventKind::Done
        }
        Some("ping") => return EventKind::Other,
        _ => {}
    }
    let usage = probe.usage.is_some()
        || probe.usage_metadata.is_some()
        || probe.x_groq.is_some_and(|x| x.usage.is_some());
    let choices = probe.choices.or(probe.candidates);
    let finished = choices.is_some_and(|c| c.0) || probe.delta.is_some_and(|d| d.0);
    if finished {
        return EventKind::Finish { usage };
    }
    let is_chunk = choices.is_some()
        || ty.is_some_and(|t| {
            t.starts_with("content_block")
                || t.starts_with("message_")
                || t.starts_with("response.")
        });
    if is_chunk {
        EventKind::Delta { usage }
    } else if usage {
        EventKind::Delta { usage: true }
    } else {
        EventKind::Other
    }
}

/// The fields of a stream chunk that matter; everything else is skipped without allocating.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(default)]
    choices: Option<AnyFinished>,
    #[serde(default)]
    candidates: Option<AnyFinished>,
    #[serde(default)]
    error: Option<IgnoredAny>,
    #[serde(default)]
    usage: Option<IgnoredAny>,
    #[serde(default, rename = "usageMetadata")]
    usage_metadata: Option<IgnoredAny>,
    #[serde(default)]
    x_groq: Option<XGroq>,
    #[serde(default, borrow, rename = "type")]
    ty: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    delta: Option<StopReason>,
}

#[derive(Deserialize)]
struct XGroq {
    #[serde(default)]
    usage: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ChoiceProbe {
    #[serde(default, alias = "finishReason")]
    finish_reason: Option<NonEmpty>,
}

/// Whether any element of a `choices` / `candidates` array has a finish reason.
#[derive(Clone, Copy)]
struct AnyFinished(bool);

impl<'de> Deserialize<'de> for AnyFinished {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyFinished;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyFinished, A::Error> {
                let mut any = false;
                while let Some(choice) = seq.next_element::<ChoiceProbe>()? {
                    any |= choice.finish_reason.is_some_and(|r| r.0);
                }
                Ok(AnyFinished(any))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A string field, `true` when non-empty.
struct NonEmpty(bool);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NonEmpty;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<NonEmpty, E> {
                Ok(NonEmpty(!s.is_empty()))
            }
        }
        d.deserialize_str(V)
    }
}

/// Anthropic's `message_delta` carries `delta.stop_reason`; other `delta`s (objects of another
/// shape, the Responses API's strings) are skipped.
struct StopReason(bool);

impl<'de> Deserialize<'de> for StopReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StopReason;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StopReason, A::Error> {
                let mut stopped = false;
                while let Some(key) = map.next_key::<Key>()? {
                    if key.0 {
                        stopped |= map.next_value::<Option<NonEmpty>>()?.is_some_and(|s| s.0);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(StopReason(stopped))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StopReason, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StopReason(false))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<StopReason, E> {
                Ok(StopReason(false))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<StopReason, E> {
                Ok(StopReason(false))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<StopReason, E> {
                Ok(StopReason(false))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<StopReason, E> {
                Ok(StopReason(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<StopReason, E> {
                Ok(StopReason(false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<StopReason, E> {
                Ok(StopReason(false))
            }
        }
        d.deserialize_any(V)
    }
}

/// A map key, `true` when it is `stop_reason`.
struct Key(bool);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(Key(s == "stop_reason"))
            }
        }
        d.deserialize_identifier(V)
    }
}

/// The details of an in-band error event, `None` when `event` is not one
/// ([`inspect_event`] is not [`EventKind::Error`]).
///
/// `kind` is always set: what the error body says (`overloaded_error` → `Overloaded`, ...), or
/// [`ErrorKind::ServerError`] when it names nothing, since a provider that reports an error
/// mid-stream failed to finish the answer. Data that is not a JSON error body becomes the message.
pub fn parse_error_event(event: &SseEvent) -> Option<ProviderError> {
    if inspect_event(event) != EventKind::Error {
        return None;
    }
    let mut found = parse_error_slice(&event.data).unwrap_or_else(|| ProviderError {
        message: event.data_str().map(|text| {
            let mut end = text.len().min(MAX_MESSAGE_LEN);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_owned()
        }),
        ..ProviderError::default()
    });
    found.kind = Some(found.kind.unwrap_or(ErrorKind::ServerError));
    Some(found)
}

/// Where a stream stands, from the events seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StreamStatus {
    /// No end signal yet: if the body ends now, the stream was cut.
    #[default]
    Open,
    /// A `finish_reason` was seen: the answer is whole; `[DONE]` may still follow.
    Finished,
    /// `[DONE]` (or another end event) was seen.
    Done,
    /// The provider sent an in-band error before the end.
    Errored,
}

/// Follows a stream's events and says whether it is complete or was cut.
///
/// `Done` and `Errored` are final; an error after a `finish_reason` but before `[DONE]` makes the
/// stream `Errored`. With `n > 1` choices a `finish_reason` on any of them counts; `[DONE]` is the
/// reliable signal there.
#[derive(Clone, Debug, Default)]
pub struct StreamTracker {
    status: StreamStatus,
    events: u64,
    deltas: u64,
    malformed: u64,
    usage: bool,
}

impl StreamTracker {
    /// A tracker for a stream that has not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inspect `event` ([`inspect_event`]), record it, and return its kind.
    pub fn observe(&mut self, event: &SseEvent) -> EventKind {
        let kind = inspect_event(event);
        self.record(kind);
        kind
    }

    /// Record an event already inspected.
    pub fn record(&mut self, kind: EventKind) {
        self.events += 1;
        match kind {
            EventKind::Delta { usage } | EventKind::Finish { usage } => {
                self.deltas += 1;
                self.usage |= usage;
            }
            EventKind::Malformed => self.malformed += 1,
            _ => {}
        }
        self.status = match (self.status, kind) {
            (StreamStatus::Done | StreamStatus::Errored, _) => self.status,
            (_, EventKind::Error) => StreamStatus::Errored,
            (_, EventKind::Done) => StreamStatus::Done,
            (StreamStatus::Open, EventKind::Finish { .. }) => StreamStatus::Finished,
            (status, _) => status,
        };
    }

    /// Where the stream stands.
    pub fn status(&self) -> StreamStatus {
        self.status
    }

    /// Whether the answer is whole: a `finish_reason` or `[DONE]` was seen, and no error.
    pub fn is_complete(&self) -> bool {
        matches!(self.status, StreamStatus::Finished | StreamStatus::Done)
    }

    /// Whether the stream would be cut if it ended now: no end signal and no error yet.
    pub fn is_open(&self) -> bool {
        self.status == StreamStatus::Open
    }

    /// Events recorded.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Answer chunks ([`EventKind::Delta`] and [`EventKind::Finish`]) recorded.
    pub fn deltas(&self) -> u64 {
        self.deltas
    }

    /// Malformed events recorded.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Whether a chunk carried token usage.
    pub fn saw_usage(&self) -> bool {
        self.usage
    }
}
