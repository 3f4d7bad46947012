//! What one event means in a streamed completion: [`inspect_event`], [`parse_error_event`].

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::notes::{scan_and_keep, scan_and_note, Note};
use super::{scan_plain_chunk, ScanNotes, SseEvent};
use crate::openai::DONE;
use crate::provider::{parse_error_slice, MAX_MESSAGE_LEN};
use crate::{ErrorKind, ProviderError};

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
    inspect_and_note(event, NoteTo::Nowhere)
}

/// Where [`inspect_and_note`] notes what its scan found.
pub(crate) enum NoteTo<'n> {
    /// Nowhere: no layer above reads the event.
    Nowhere,
    /// In the notes a layer above asked for.
    Notes(&'n ScanNotes),
    /// In a note kept for a layer that may ask later (the first answer event: the layer above
    /// sees the stream only once it is committed to).
    Keep(&'n mut Option<Note>),
}

/// [`inspect_event`], noting in `notes` what the plain-chunk scan found, for a layer above that
/// reads the same event (only when the scan read the event's data whole, without whitespace
/// trimmed off: the reader above looks up the data as it is).
pub(crate) fn inspect_and_note(event: &SseEvent, notes: NoteTo<'_>) -> EventKind {
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
    // Nearly every event: read by a hand-written scan, without serde_json.
    let scanned = match notes {
        _ if data.len() != event.data.len() => scan_plain_chunk(data),
        NoteTo::Nowhere => scan_plain_chunk(data),
        NoteTo::Notes(notes) => scan_and_note(&event.data, notes),
        NoteTo::Keep(kept) => scan_and_keep(&event.data, kept),
    };
    if let Some(chunk) = scanned {
        let usage = chunk.usage;
        return if chunk.finished {
            EventKind::Finish { usage }
        } else {
            EventKind::Delta { usage }
        };
    }
    inspect_json(data)
}

/// What an event's data (not `[DONE]`, not empty) means, by a `serde_json` pass.
fn inspect_json(data: &[u8]) -> EventKind {
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

#[cfg(test)]
mod tests {
    use super::super::chunk_strategy::chunk_data;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The scan's classification is serde_json's, on whatever it accepts.
        #[test]
        fn scan_classifies_as_serde(data in chunk_data()) {
            let data = &data[..];
            if let Some(chunk) = scan_plain_chunk(data) {
                let kind = if chunk.finished {
                    EventKind::Finish { usage: chunk.usage }
                } else {
                    EventKind::Delta { usage: chunk.usage }
                };
                prop_assert_eq!(kind, inspect_json(data.trim_ascii()));
            }
        }
    }

    #[test]
    fn the_generator_reaches_the_scan() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let strategy = chunk_data();
        let (mut accepted, mut finished) = (0, 0);
        for _ in 0..2000 {
            let data = strategy.new_tree(&mut runner).unwrap().current();
            if let Some(chunk) = scan_plain_chunk(&data) {
                accepted += 1;
                finished += usize::from(chunk.finished);
            }
        }
        assert!(accepted > 600, "{accepted}");
        assert!(finished > 100, "{finished}");
    }

    #[test]
    fn ordinary_chunks_are_classified_as_before() {
        for data in [
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"c","choices":[],"usage":{"total_tokens":1}}"#,
            r#"{"id":"c","choices":[{"delta":{"content":"a\nb"},"finish_reason":""}],"usage":null}"#,
        ] {
            let event = SseEvent::new(data);
            assert_eq!(
                inspect_event(&event),
                inspect_json(data.as_bytes()),
                "{data}"
            );
        }
    }
}
