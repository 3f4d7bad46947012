//! One event ([`SseEvent`]) and the writers: [`SseEvent::encode`] and [`json_frame`].

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use memchr::memchr2;
use serde::Serialize;

use crate::openai::DONE;

/// One dispatched server-sent event.
///
/// `Debug` shows the sizes, never the data: it holds completion text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub(super) event: Option<Bytes>,
    pub(super) data: Bytes,
    pub(super) id: Option<Bytes>,
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
