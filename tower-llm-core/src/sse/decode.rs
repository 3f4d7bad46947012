//! The incremental event-stream parser: [`SseDecoder`].

use std::fmt;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use memchr::{memchr, memchr2};

use super::SseEvent;

/// Default bound on one event (the bytes of its lines, without line endings): 1 MiB. Chat
/// completion chunks are a few hundred bytes; a bigger event means a broken or hostile upstream.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

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

    /// Bytes the decoder holds for events not dispatched yet: unparsed input, the start of an
    /// incomplete line, and the current event's data. Once a chunk's events are drained this is
    /// at most [`max_event_size`](Self::max_event_size); between a [`push`](Self::push) and the
    /// draining it is at most that plus the chunk.
    pub fn buffered(&self) -> usize {
        let data = match &self.data {
            Data::None => 0,
            Data::One(data) => data.len(),
            Data::Many(data) => data.len(),
        };
        self.input.len() + self.line.len() + data
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

    /// The event `chunk` holds when it is exactly one event of a single `data: ` line ending in
    /// a blank line (`data: …\n\n`, no other line break) and the decoder is between events with
    /// nothing buffered: the event [`push`](Self::push) and [`next_event`](Self::next_event)
    /// would give (its data a slice of `chunk`, no name, the last event id), with the decoder's
    /// state moved on as decoding the chunk would move it, but without reading it line by line.
    /// `None` for any other chunk or state, with the decoder untouched: push the chunk then.
    ///
    /// Providers send nearly every event as a chunk of its own, and a layer that hands on whole
    /// events (the stream guard) makes every frame one.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_llm_core::sse::SseDecoder;
    ///
    /// let mut decoder = SseDecoder::new();
    /// let event = decoder.single_data_event(&Bytes::from_static(b"data: {\"a\":1}\n\n")).unwrap();
    /// assert_eq!(event.data_str(), Some("{\"a\":1}"));
    /// // Anything else is decoded as usual.
    /// let chunk = Bytes::from_static(b"id: 7\ndata: x\n\n");
    /// assert!(decoder.single_data_event(&chunk).is_none());
    /// decoder.push(chunk);
    /// assert_eq!(decoder.next_event().unwrap().unwrap().id(), Some("7"));
    /// ```
    pub fn single_data_event(&mut self, chunk: &Bytes) -> Option<SseEvent> {
        self.single_data(chunk, true)
    }

    /// [`single_data_event`](Self::single_data_event) of a chunk known to have no `\n` or `\r`
    /// before its final `\n\n` (the stream guard's framer found its line breaks already).
    pub(crate) fn single_data_line_event(&mut self, chunk: &Bytes) -> Option<SseEvent> {
        debug_assert!(memchr2(b'\n', b'\r', &chunk[..chunk.len().saturating_sub(2)]).is_none());
        self.single_data(chunk, false)
    }

    #[inline(always)]
    fn single_data(&mut self, chunk: &Bytes, find_breaks: bool) -> Option<SseEvent> {
        if self.failed.is_some() || self.eof || self.skip_lf || self.is_mid_event() {
            return None;
        }
        let data = chunk.strip_prefix(b"data: ")?.strip_suffix(b"\n\n")?;
        // The line's length against the limit, as `next_event` checks it.
        if chunk.len() - 2 > self.max_event_size
            || (find_breaks && memchr2(b'\n', b'\r', data).is_some())
        {
            return None;
        }
        // A first line starting `data: ` has no BOM to strip; later ones never do.
        self.at_start = false;
        Some(SseEvent {
            event: None,
            data: chunk.slice(6..chunk.len() - 2),
            id: self.last_id.clone(),
        })
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
