//! What a committed stream has sent so far: the answer's text, its `id`, and whether it can still
//! be resumed faithfully.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use tower_llm_core::sse::{scan_plain_chunk, PlainChunk, ScanNotes, SseEvent};

/// Why a stream cannot be resumed (said in the error event that ends it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unresumable {
    /// Tool-call or function-call deltas: a half-sent call cannot be continued faithfully.
    ToolCall,
    /// More than one choice (`n > 1`).
    Choices,
    /// Token log probabilities: a continuation's would not line up.
    Logprobs,
    /// Reasoning, refusal or audio deltas: only message text is resumed.
    NotText,
    /// An event that is not an OpenAI chat completion chunk (another wire format, malformed data).
    Format,
    /// The text sent is over the configured cap.
    TooLong,
}

impl Unresumable {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Unresumable::ToolCall => "tool or function call deltas were in flight",
            Unresumable::Choices => "the stream had more than one choice",
            Unresumable::Logprobs => "the stream carried logprobs",
            Unresumable::NotText => "the stream carried reasoning, refusal or audio deltas",
            Unresumable::Format => "the stream was not an OpenAI chat completion stream",
            Unresumable::TooLong => "the text already sent is over the resume cap",
        }
    }
}

/// The parts of a chat completion chunk that resumption needs; everything else is skipped
/// without allocating (strings without escapes are borrowed).
#[derive(Deserialize)]
pub(crate) struct ChunkView<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub(crate) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) choices: Option<Choices<'a>>,
    #[serde(default)]
    pub(crate) usage: Option<IgnoredAny>,
    /// An in-band error object: not a chunk (see [`Transcript::observe_event`]).
    #[serde(default)]
    pub(crate) error: Option<IgnoredAny>,
    /// Another protocol's event type (Anthropic, Responses API): not an OpenAI chunk.
    #[serde(default, rename = "type")]
    pub(crate) ty: Option<IgnoredAny>,
}

/// An optional string that borrows from the input when it has no escapes. serde's own
/// `Deserialize` for `Cow<str>` always copies (`#[serde(borrow)]` does not reach through an
/// `Option`): that was an allocation per string per event on the watched stream's path.
fn borrowed_str<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    struct Str<'a>(PhantomData<&'a ()>);

    impl<'de: 'a, 'a> Visitor<'de> for Str<'a> {
        type Value = Option<Cow<'a, str>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }

        fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(s)))
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(s.to_owned())))
        }

        fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(s)))
        }
    }

    deserializer.deserialize_option(Str(PhantomData))
}

/// A chunk's `choices`: the first one and how many there are (no `Vec`: events are parsed on
/// the streaming path, which allocates nothing per event).
pub(crate) struct Choices<'a> {
    pub(crate) first: Option<ChoiceView<'a>>,
    pub(crate) count: usize,
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Seq<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for Seq<'a> {
            type Value = Choices<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of choices")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first: Option<ChoiceView<'a>> = seq.next_element()?;
                let mut count = usize::from(first.is_some());
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(Choices { first, count })
            }
        }

        deserializer.deserialize_seq(Seq(PhantomData))
    }
}

#[derive(Deserialize)]
pub(crate) struct ChoiceView<'a> {
    #[serde(default)]
    pub(crate) index: Option<u64>,
    #[serde(borrow, default)]
    pub(crate) delta: Option<DeltaView<'a>>,
    #[serde(default)]
    pub(crate) logprobs: Option<IgnoredAny>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub(crate) finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(crate) struct DeltaView<'a> {
    #[serde(default)]
    pub(crate) role: Option<IgnoredAny>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub(crate) content: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) tool_calls: Option<IgnoredAny>,
    #[serde(default)]
    pub(crate) function_call: Option<IgnoredAny>,
    #[serde(default)]
    pub(crate) audio: Option<IgnoredAny>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub(crate) refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub(crate) reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    pub(crate) reasoning: Option<Cow<'a, str>>,
}

impl DeltaView<'_> {
    /// What in this delta a continuation could not reproduce.
    pub(crate) fn unresumable(&self) -> Option<Unresumable> {
        if self.tool_calls.is_some() || self.function_call.is_some() {
            return Some(Unresumable::ToolCall);
        }
        let non_empty = |s: &Option<Cow<'_, str>>| s.as_deref().is_some_and(|s| !s.is_empty());
        if self.audio.is_some()
            || non_empty(&self.refusal)
            || non_empty(&self.reasoning_content)
            || non_empty(&self.reasoning)
        {
            return Some(Unresumable::NotText);
        }
        None
    }
}

impl<'a> ChunkView<'a> {
    /// Parse one event's data; `None` when it is not a JSON object of this shape. A plain chunk
    /// is read by [`scan_plain_chunk`] (no serde_json pass); anything it is not sure of by
    /// serde_json, with the same result.
    pub(crate) fn parse(data: &'a [u8]) -> Option<Self> {
        match scan_plain_chunk(data) {
            Some(chunk) => Some(Self::from_plain(&chunk)),
            None => Self::parse_json(data),
        }
    }

    /// [`parse`](Self::parse) by serde_json alone.
    fn parse_json(data: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(data).ok()
    }

    /// The view of a chunk [`scan_plain_chunk`] read: what serde_json gives for the same data.
    fn from_plain(chunk: &PlainChunk<'a>) -> Self {
        let present = |yes: bool| yes.then_some(IgnoredAny);
        ChunkView {
            id: chunk.id.map(Cow::Borrowed),
            choices: Some(Choices {
                first: chunk.first.map(|choice| ChoiceView {
                    index: choice.index,
                    delta: choice.delta.map(|delta| DeltaView {
                        role: present(delta.role),
                        content: delta.content.map(Cow::Borrowed),
                        tool_calls: present(delta.tool_calls),
                        function_call: present(delta.function_call),
                        audio: present(delta.audio),
                        refusal: delta.refusal.map(Cow::Borrowed),
                        reasoning_content: delta.reasoning_content.map(Cow::Borrowed),
                        reasoning: delta.reasoning.map(Cow::Borrowed),
                    }),
                    logprobs: present(choice.logprobs),
                    finish_reason: choice.finish_reason.map(Cow::Borrowed),
                }),
                count: chunk.choices,
            }),
            usage: present(chunk.usage),
            // The scan takes no chunk with an `error` or a `type`.
            error: None,
            ty: None,
        }
    }

    /// The one choice of a single-choice chunk, or why the chunk cannot be resumed. `Ok(None)` for
    /// a chunk with no choice (a usage-only chunk).
    pub(crate) fn single_choice(&self) -> Result<Option<&ChoiceView<'a>>, Unresumable> {
        match &self.choices {
            None if self.usage.is_some() => Ok(None),
            None => Err(Unresumable::Format),
            Some(Choices { first: None, .. }) => Ok(None),
            Some(Choices {
                first: Some(choice),
                count: 1,
            }) if choice.index.unwrap_or(0) == 0 => {
                if choice.logprobs.is_some() {
                    return Err(Unresumable::Logprobs);
                }
                Ok(Some(choice))
            }
            Some(_) => Err(Unresumable::Choices),
        }
    }
}

/// The text and identity of what a stream sent, while it stays resumable.
#[derive(Debug)]
pub(crate) struct Transcript {
    text: String,
    id: Option<String>,
    finished: bool,
    cap: usize,
    unresumable: Option<Unresumable>,
}

impl Transcript {
    /// An empty transcript that keeps at most `cap` bytes of text.
    pub(crate) fn new(cap: usize) -> Self {
        Transcript {
            text: String::new(),
            id: None,
            finished: false,
            cap,
            unresumable: None,
        }
    }

    /// A transcript that will never be resumed.
    pub(crate) fn mark(&mut self, why: Unresumable) {
        if self.unresumable.is_none() {
            self.unresumable = Some(why);
            // Nothing will read the text again: give its memory back.
            self.text = String::new();
        }
    }

    /// Why this stream cannot be resumed, if it cannot.
    pub(crate) fn unresumable(&self) -> Option<Unresumable> {
        self.unresumable
    }

    /// The text sent so far.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The first stream's `id`, which continuations keep.
    pub(crate) fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Whether a `finish_reason` was sent (the answer is whole).
    pub(crate) fn finished(&self) -> bool {
        self.finished
    }

    /// Text that reached the caller.
    pub(crate) fn push_text(&mut self, text: &str) {
        if self.unresumable.is_some() {
            return;
        }
        if self.text.len().saturating_add(text.len()) > self.cap {
            self.mark(Unresumable::TooLong);
            return;
        }
        self.text.push_str(text);
    }

    /// A `finish_reason` reached the caller.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }

    /// One event of the first stream (its data), as it reached the caller.
    pub(crate) fn observe(&mut self, data: &[u8]) {
        if self.unresumable.is_some() {
            return;
        }
        match ChunkView::parse(data) {
            Some(chunk) => self.observe_chunk(&chunk),
            None => self.mark(Unresumable::Format),
        }
    }

    /// `event` when it is a plain OpenAI chat completion chunk (a JSON object with a `choices`
    /// array of at most one choice, no `error`, no `type`, no `error` event name), observed from
    /// a single parse of its data; `false` for anything else, which the caller classifies and
    /// observes as before ([`inspect_event`](tower_llm_core::sse::inspect_event), then
    /// [`observe`](Self::observe)). Such a chunk is what `inspect_event` calls a delta or a
    /// finish, so the outcome is the same with one JSON pass per event instead of two.
    ///
    /// With `notes` (the stream guard's below, [`ScanNotes`]), the guard's scan of these very
    /// bytes is read instead of scanning them again: no JSON pass here at all for a plain chunk.
    pub(crate) fn observe_event(&mut self, event: &SseEvent, notes: Option<&ScanNotes>) -> bool {
        if event.event().is_some_and(|name| name == "error") {
            return false;
        }
        let data = event.data();
        let parsed = match notes.and_then(|notes| notes.get(data)) {
            Some(Some(chunk)) => Some(ChunkView::from_plain(&chunk)),
            // The guard's scan gave up on it: what `parse` would do next.
            Some(None) => ChunkView::parse_json(data),
            None => ChunkView::parse(data),
        };
        let Some(chunk) = parsed else {
            return false;
        };
        let plain = chunk.error.is_none()
            && chunk.ty.is_none()
            && chunk.choices.as_ref().is_some_and(|c| c.count <= 1);
        if plain && self.unresumable.is_none() {
            self.observe_chunk(&chunk);
        }
        plain
    }

    fn observe_chunk(&mut self, chunk: &ChunkView<'_>) {
        if self.id.is_none() {
            self.id = chunk.id.as_deref().map(str::to_owned);
        }
        let choice = match chunk.single_choice() {
            Ok(choice) => choice,
            Err(why) => {
                self.mark(why);
                return;
            }
        };
        let Some(choice) = choice else {
            return;
        };
        if choice.finish_reason.is_some() {
            self.finished = true;
        }
        let Some(delta) = &choice.delta else {
            return;
        };
        if let Some(why) = delta.unresumable() {
            self.mark(why);
            return;
        }
        if let Some(content) = delta.content.as_deref() {
            self.push_text(content);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::chunk_strategy::chunk_data;
    use super::*;
    use proptest::prelude::*;

    /// Everything a [`ChunkView`] holds, comparable.
    type Summary = (
        Option<String>,
        Option<(usize, Option<ChoiceSummary>)>,
        bool,
        bool,
        bool,
    );
    type ChoiceSummary = (Option<u64>, Option<DeltaSummary>, bool, Option<String>);
    type DeltaSummary = (bool, Option<String>, [bool; 3], [Option<String>; 3]);

    fn summary(view: &ChunkView<'_>) -> Summary {
        let s = |s: &Option<Cow<'_, str>>| s.as_deref().map(str::to_owned);
        (
            s(&view.id),
            view.choices.as_ref().map(|c| {
                (
                    c.count,
                    c.first.as_ref().map(|f| {
                        (
                            f.index,
                            f.delta.as_ref().map(|d| {
                                (
                                    d.role.is_some(),
                                    s(&d.content),
                                    [
                                        d.tool_calls.is_some(),
                                        d.function_call.is_some(),
                                        d.audio.is_some(),
                                    ],
                                    [s(&d.refusal), s(&d.reasoning_content), s(&d.reasoning)],
                                )
                            }),
                            f.logprobs.is_some(),
                            s(&f.finish_reason),
                        )
                    }),
                )
            }),
            view.usage.is_some(),
            view.error.is_some(),
            view.ty.is_some(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The scan's view is serde_json's, on whatever it accepts.
        #[test]
        fn scan_reads_as_serde(data in chunk_data()) {
            if scan_plain_chunk(&data).is_some() {
                let json = ChunkView::parse_json(&data);
                prop_assert!(json.is_some(), "{}", String::from_utf8_lossy(&data));
                prop_assert_eq!(
                    ChunkView::parse(&data).as_ref().map(summary),
                    json.as_ref().map(summary)
                );
            }
        }
    }

    #[test]
    fn ordinary_chunks_are_read_as_before() {
        for data in [
            &br#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"x"},"logprobs":null,"finish_reason":null}]}"#[..],
            br#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            br#"{"id":null,"choices":[],"usage":{"total_tokens":1}}"#,
            br#"{"choices":[{"delta":{"tool_calls":null,"refusal":"no"}}]}"#,
            br#"{"choices":[{"index":0},{"index":1}]}"#,
        ] {
            assert!(scan_plain_chunk(data).is_some());
            assert_eq!(
                ChunkView::parse(data).as_ref().map(summary),
                ChunkView::parse_json(data).as_ref().map(summary)
            );
        }
    }

    fn chunk(content: &str) -> String {
        serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
        })
        .to_string()
    }

    #[test]
    fn keeps_text_and_id() {
        let mut t = Transcript::new(1024);
        t.observe(chunk("Hel").as_bytes());
        t.observe(chunk("lo \"w\"").as_bytes());
        t.observe(br#"{"id":"x","choices":[],"usage":{"total_tokens":3}}"#);
        assert_eq!(t.text(), "Hello \"w\"");
        assert_eq!(t.id(), Some("chatcmpl-1"));
        assert_eq!(t.unresumable(), None);
        assert!(!t.finished());
    }

    #[test]
    fn marks_what_cannot_be_resumed() {
        let cases: [(&[u8], Unresumable); 6] = [
            (
                br#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]}"#,
                Unresumable::ToolCall,
            ),
            (
                br#"{"choices":[{"index":0,"delta":{}},{"index":1,"delta":{}}]}"#,
                Unresumable::Choices,
            ),
            (
                br#"{"choices":[{"index":1,"delta":{"content":"a"}}]}"#,
                Unresumable::Choices,
            ),
            (
                br#"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":{"content":[]}}]}"#,
                Unresumable::Logprobs,
            ),
            (
                br#"{"choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]}"#,
                Unresumable::NotText,
            ),
            (br#"{"type":"content_block_delta"}"#, Unresumable::Format),
        ];
        for (data, why) in cases {
            let mut t = Transcript::new(1024);
            t.observe(data);
            assert_eq!(
                t.unresumable(),
                Some(why),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
        // Nulls are what OpenAI sends when nothing is there.
        let mut t = Transcript::new(1024);
        t.observe(br#"{"choices":[{"index":0,"delta":{"content":"a","refusal":null,"tool_calls":null},"logprobs":null}]}"#);
        assert_eq!(t.unresumable(), None);
        assert_eq!(t.text(), "a");
    }

    #[test]
    fn caps_the_text() {
        let mut t = Transcript::new(4);
        t.observe(chunk("abc").as_bytes());
        t.observe(chunk("de").as_bytes());
        assert_eq!(t.unresumable(), Some(Unresumable::TooLong));
        assert_eq!(t.text(), "");
    }
}
