//! The canonical answer of the mock upstream, and the exact bytes it is sent as.
//!
//! Every healthy answer carries the same text, [`CANONICAL_ANSWER`], split into the SSE content
//! events of [`canonical_tokens`]. A caller that received a truncated answer therefore always
//! sees a text that differs from it, so a test can tell a whole answer from a cut one.
//!
//! The functions here build the exact bytes the mock sends, so tests can compare what a caller
//! received byte for byte:
//!
//! ```
//! use tower_llm_chaos::canonical;
//! use tower_llm_chaos::{canonical_tokens, CANONICAL_ANSWER};
//!
//! assert_eq!(canonical_tokens().concat(), CANONICAL_ANSWER);
//!
//! let usage = canonical::usage(3);
//! let events = canonical::sse_events(1, "gpt-4o", usage);
//! // One event per token, a final chunk with `finish_reason` and `usage`, then `[DONE]`.
//! assert_eq!(events.len(), canonical_tokens().len() + 2);
//! assert_eq!(events.last().unwrap().as_ref(), b"data: [DONE]\n\n");
//!
//! let json: serde_json::Value =
//!     serde_json::from_slice(&canonical::completion_json(1, "gpt-4o", usage)).unwrap();
//! assert_eq!(json["choices"][0]["message"]["content"], CANONICAL_ANSWER);
//! assert_eq!(json["model"], "gpt-4o");
//! assert_eq!(json["usage"]["total_tokens"], 3 + canonical_tokens().len() as u64);
//! ```
//!
//! A mock can also answer differently ([`Answer::Alternate`]): [`ALTERNATE_ANSWER`] shares its
//! first three tokens with the canonical text, then says something else, so a replay of a request
//! on such a mock diverges in the middle of the text. Every builder has an `_of` variant taking
//! the token list to send ([`Answer::tokens`], or a [`continuation`] of either text):
//!
//! ```
//! use tower_llm_chaos::canonical::{self, Answer, ALTERNATE_ANSWER};
//! use tower_llm_chaos::CANONICAL_ANSWER;
//!
//! let alternate = Answer::Alternate.tokens();
//! assert_eq!(alternate.concat(), ALTERNATE_ANSWER);
//! assert_eq!(alternate[..3], canonical::canonical_tokens()[..3]);
//!
//! // What a mock that continues an assistant prefill sends after "Resilience is the a":
//! let rest = canonical::continuation(Answer::Canonical.tokens(), "Resilience is the a").unwrap();
//! assert_eq!(rest[..2], ["rt", " of"]);
//! assert_eq!(format!("Resilience is the a{}", rest.concat()), CANONICAL_ANSWER);
//! let events = canonical::sse_events_of(&rest, 1, "gpt-4o", canonical::usage_of(&rest, 3));
//! assert_eq!(events.len(), rest.len() + 2);
//! ```
//!
//! The wire types are core's ([`tower_llm_core::openai`]); this module only fixes the content.

use bytes::Bytes;
use tower_llm_core::openai::{ChatCompletion, ChatCompletionChunk, Delta, ErrorBody};

pub use tower_llm_core::openai::Usage;

/// The full text of every healthy completion.
pub const CANONICAL_ANSWER: &str =
    "Resilience is the art of answering anyway: retry the transient, \
fail over the broken, and never pass a truncated answer off as a whole one.";

const TOKENS: &[&str] = &[
    "Resilience",
    " is",
    " the",
    " art",
    " of",
    " answering",
    " anyway:",
    " retry",
    " the",
    " transient,",
    " fail",
    " over",
    " the",
    " broken,",
    " and",
    " never",
    " pass",
    " a",
    " truncated",
    " answer",
    " off",
    " as",
    " a",
    " whole",
    " one.",
];

/// How [`CANONICAL_ANSWER`] is split into SSE content events: one event per token, in order.
/// Their concatenation is exactly [`CANONICAL_ANSWER`].
pub fn canonical_tokens() -> &'static [&'static str] {
    TOKENS
}

/// The text of a mock that "answers differently" ([`Answer::Alternate`]): the same first three
/// tokens as [`CANONICAL_ANSWER`] (`"Resilience is the"`), then other words, so a replayed request
/// diverges from the canonical text in its middle, at byte 17.
pub const ALTERNATE_ANSWER: &str =
    "Resilience is the habit of answering anyway: back off when asked, \
route around the failure, and tell the caller plainly when nothing worked.";

const ALTERNATE_TOKENS: &[&str] = &[
    "Resilience",
    " is",
    " the",
    " habit",
    " of",
    " answering",
    " anyway:",
    " back",
    " off",
    " when",
    " asked,",
    " route",
    " around",
    " the",
    " failure,",
    " and",
    " tell",
    " the",
    " caller",
    " plainly",
    " when",
    " nothing",
    " worked.",
];

/// How [`ALTERNATE_ANSWER`] is split into SSE content events; their concatenation is exactly
/// [`ALTERNATE_ANSWER`], and the first three are those of [`canonical_tokens`].
pub fn alternate_tokens() -> &'static [&'static str] {
    ALTERNATE_TOKENS
}

/// Which text a mock upstream answers with
/// ([`MockUpstreamBuilder::answer`](crate::MockUpstreamBuilder::answer)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Answer {
    /// [`CANONICAL_ANSWER`], as every mock by default.
    #[default]
    Canonical,
    /// [`ALTERNATE_ANSWER`]: a mock that answers the same request differently (another model, a
    /// sampled answer), for tests where a replay must not be taken for a continuation.
    Alternate,
}

impl Answer {
    /// The whole text.
    pub const fn text(self) -> &'static str {
        match self {
            Answer::Canonical => CANONICAL_ANSWER,
            Answer::Alternate => ALTERNATE_ANSWER,
        }
    }

    /// The text split into SSE content events, in order.
    pub fn tokens(self) -> &'static [&'static str] {
        match self {
            Answer::Canonical => TOKENS,
            Answer::Alternate => ALTERNATE_TOKENS,
        }
    }

    /// `canonical` or `alternate`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Answer::Canonical => "canonical",
            Answer::Alternate => "alternate",
        }
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tokens that continue `tokens`' text after `prefix`, as a mock that continues an assistant
/// prefill sends them: the rest of the token `prefix` ends inside (nothing when it ends exactly
/// between two tokens), then every following token. `prefix` followed by their concatenation is
/// the whole text.
///
/// `None` when `prefix` is empty or not a prefix of the text: the answer starts from the
/// beginning then. A `prefix` that is the whole text gives an empty continuation.
pub fn continuation<'a>(tokens: &[&'a str], prefix: &str) -> Option<Vec<&'a str>> {
    if prefix.is_empty() {
        return None;
    }
    let mut rest = prefix;
    for (i, token) in tokens.iter().enumerate() {
        if rest.is_empty() {
            return Some(tokens[i..].to_vec());
        }
        if let Some(after) = rest.strip_prefix(token) {
            rest = after;
        } else if let Some(remainder) = token.strip_prefix(rest) {
            // `prefix` ends inside this token.
            let mut out = Vec::with_capacity(tokens.len() - i);
            out.push(remainder);
            out.extend_from_slice(&tokens[i + 1..]);
            return Some(out);
        } else {
            return None;
        }
    }
    rest.is_empty().then(Vec::new)
}

/// The `created` timestamp of every mock completion: fixed, so answers are byte-for-byte
/// reproducible.
pub const CREATED: u64 = 1_700_000_000;

/// The event sent in place of a valid one by
/// [`Fault::MalformedEvent`](crate::Fault::MalformedEvent): an SSE frame whose data is not JSON.
pub const MALFORMED_EVENT: &[u8] =
    b"data: {\"id\":\"chatcmpl-mock\",\"choices\":[{\"delta\":{\"content\n\n";

/// The usage of a canonical answer to a prompt of `prompt_tokens` tokens: the completion is the
/// number of [`canonical_tokens`].
pub const fn usage(prompt_tokens: u64) -> Usage {
    Usage::new(prompt_tokens, TOKENS.len() as u64)
}

/// The usage of an answer of `tokens` to a prompt of `prompt_tokens` tokens: the completion is
/// one token per content event.
pub fn usage_of(tokens: &[&str], prompt_tokens: u64) -> Usage {
    Usage::new(prompt_tokens, tokens.len() as u64)
}

/// The usage the mock reports for `request` (a chat completion request's JSON): the prompt is
/// counted as one token per four characters of message text (string contents and the `text` of
/// content parts), rounded up, at least one.
pub fn estimate_usage(request: &serde_json::Value) -> Usage {
    let mut chars: u64 = 0;
    if let Some(messages) = request.get("messages").and_then(|m| m.as_array()) {
        for message in messages {
            match message.get("content") {
                Some(serde_json::Value::String(text)) => {
                    chars = chars.saturating_add(text.chars().count() as u64);
                }
                Some(serde_json::Value::Array(parts)) => {
                    for part in parts {
                        if let Some(text) = part.get("text").and_then(|t| t.as_str()) {
                            chars = chars.saturating_add(text.chars().count() as u64);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    usage(chars.div_ceil(4).max(1))
}

/// The completion id of the mock's `seq`-th attempt: `chatcmpl-mock-{seq}`.
pub fn completion_id(seq: u64) -> String {
    format!("chatcmpl-mock-{seq}")
}

/// The healthy non-streamed answer of the `seq`-th attempt for `model`:
///
/// `{"id":"chatcmpl-mock-N","object":"chat.completion","created":CREATED,"model":MODEL,
/// "choices":[{"index":0,"message":{"role":"assistant","content":CANONICAL_ANSWER},"finish_reason":"stop"}],
/// "usage":{...}}`
pub fn completion_json(seq: u64, model: &str, usage: Usage) -> Bytes {
    completion_json_of(TOKENS, seq, model, usage)
}

/// [`completion_json`] whose content is the concatenation of `tokens` (an [`Answer::tokens`] or
/// a [`continuation`]).
pub fn completion_json_of(tokens: &[&str], seq: u64, model: &str, usage: Usage) -> Bytes {
    let content = tokens.concat();
    ChatCompletion::assistant(completion_id(seq), CREATED, model, &content, "stop")
        .with_usage(usage)
        .to_json()
}

/// The SSE event carrying content token `index` of [`canonical_tokens`] (the first one also
/// carries `"role":"assistant"`), or `None` when `index` is past the last token.
pub fn content_event(seq: u64, model: &str, index: usize) -> Option<Bytes> {
    content_event_of(TOKENS, seq, model, index)
}

/// [`content_event`] for token `index` of `tokens` (an [`Answer::tokens`] or a
/// [`continuation`]).
pub fn content_event_of(tokens: &[&str], seq: u64, model: &str, index: usize) -> Option<Bytes> {
    let token = *tokens.get(index)?;
    let delta = if index == 0 {
        Delta::assistant(token)
    } else {
        Delta::text(token)
    };
    Some(
        ChatCompletionChunk::new(completion_id(seq), CREATED, model)
            .with_choice(delta, None)
            .to_sse(),
    )
}

/// The last chunk of a complete stream: an empty delta, `"finish_reason":"stop"` and `usage`.
pub fn finish_event(seq: u64, model: &str, usage: Usage) -> Bytes {
    ChatCompletionChunk::new(completion_id(seq), CREATED, model)
        .with_choice(Delta::default(), Some("stop"))
        .with_usage(usage)
        .to_sse()
}

/// Every event of the healthy stream of the `seq`-th attempt for `model`, in order: one
/// [`content_event`] per token, the [`finish_event`], then
/// [`DONE_FRAME`](tower_llm_core::openai::DONE_FRAME).
pub fn sse_events(seq: u64, model: &str, usage: Usage) -> Vec<Bytes> {
    sse_events_of(TOKENS, seq, model, usage)
}

/// [`sse_events`] of `tokens` (an [`Answer::tokens`] or a [`continuation`]): one
/// [`content_event_of`] per token, the [`finish_event`], then `[DONE]`.
pub fn sse_events_of(tokens: &[&str], seq: u64, model: &str, usage: Usage) -> Vec<Bytes> {
    let mut events: Vec<Bytes> = (0..tokens.len())
        .filter_map(|i| content_event_of(tokens, seq, model, i))
        .collect();
    events.push(finish_event(seq, model, usage));
    events.push(tower_llm_core::openai::done_frame());
    events
}

/// The message of the in-band error of [`Fault::FirstEventError`](crate::Fault::FirstEventError).
pub const ERROR_MESSAGE: &str = "mock upstream: the model failed before its first token";

fn first_event_error() -> ErrorBody<'static> {
    ErrorBody::new(ERROR_MESSAGE, "server_error").with_code("server_error")
}

/// The in-band error event of [`Fault::FirstEventError`](crate::Fault::FirstEventError), in the
/// OpenAI shape: `data: {"error":{"message":ERROR_MESSAGE,"type":"server_error","param":null,
/// "code":"server_error"}}` and a blank line.
pub fn error_event() -> Bytes {
    first_event_error().to_sse()
}

/// The data of [`error_event`] (what a non-streamed request gets with a 200 status).
pub fn error_event_json() -> Bytes {
    first_event_error().to_json()
}

/// The length of the prefix of [`completion_json_of`]`(tokens, ..)`'s bytes that ends right after
/// the first `n` of `tokens`: what a non-streamed answer cut (or stalled) after `n` tokens sends.
pub(crate) fn json_prefix_len(tokens: &[&str], body: &[u8], n: usize) -> usize {
    const NEEDLE: &[u8] = b"\"content\":\"";
    let start = body
        .windows(NEEDLE.len())
        .position(|w| w == NEEDLE)
        .map(|p| p + NEEDLE.len());
    match start {
        Some(start) => {
            let text: usize = tokens.iter().take(n).map(|t| t.len()).sum();
            (start + text).min(body.len())
        }
        None => body.len() / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_concatenate_to_the_answer() {
        for answer in [Answer::Canonical, Answer::Alternate] {
            assert_eq!(answer.tokens().concat(), answer.text());
            // Plain tokens: the JSON prefix arithmetic counts their bytes as sent.
            assert!(answer
                .tokens()
                .iter()
                .all(|t| !t.is_empty() && !t.contains(['"', '\\'])));
        }
    }

    #[test]
    fn alternate_shares_three_tokens_then_differs() {
        assert_eq!(ALTERNATE_TOKENS[..3], TOKENS[..3]);
        assert_ne!(ALTERNATE_TOKENS[3], TOKENS[3]);
        let common = CANONICAL_ANSWER
            .bytes()
            .zip(ALTERNATE_ANSWER.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        assert_eq!(common, "Resilience is the ".len());
    }

    #[test]
    fn continuation_splits_inside_and_between_tokens() {
        assert_eq!(continuation(TOKENS, ""), None);
        assert_eq!(continuation(TOKENS, "Resilience was"), None);
        assert_eq!(continuation(TOKENS, "resilience"), None);
        assert_eq!(continuation(TOKENS, &format!("{CANONICAL_ANSWER}!")), None);
        assert_eq!(continuation(TOKENS, "Resilience").unwrap(), TOKENS[1..]);
        let rest = continuation(TOKENS, "Resil").unwrap();
        assert_eq!(rest[0], "ience");
        assert_eq!(rest[1..], TOKENS[1..]);
        assert_eq!(continuation(TOKENS, CANONICAL_ANSWER).unwrap(), [""; 0]);
        let one_short = &CANONICAL_ANSWER[..CANONICAL_ANSWER.len() - 1];
        assert_eq!(continuation(TOKENS, one_short).unwrap(), ["."]);
        let rest = continuation(ALTERNATE_TOKENS, "Resilience is the h").unwrap();
        assert_eq!(rest[..2], ["abit", " of"]);
        assert_eq!(continuation(ALTERNATE_TOKENS, "Resilience is the a"), None);
    }

    #[test]
    fn json_prefix_ends_after_n_tokens() {
        let body = completion_json(7, "m", usage(1));
        let len = json_prefix_len(TOKENS, &body, 2);
        assert!(body[..len].ends_with(b"\"content\":\"Resilience is"));
        assert_eq!(
            json_prefix_len(TOKENS, &body, 0) + "Resilience".len(),
            json_prefix_len(TOKENS, &body, 1)
        );
        let body = completion_json_of(ALTERNATE_TOKENS, 7, "m", usage(1));
        let len = json_prefix_len(ALTERNATE_TOKENS, &body, 4);
        assert!(body[..len].ends_with(b"\"content\":\"Resilience is the habit"));
    }

    #[test]
    fn usage_estimate_counts_message_text() {
        let req = serde_json::json!({"messages": [
            {"role": "user", "content": "12345678"},
            {"role": "user", "content": [{"type": "text", "text": "a"}]}
        ]});
        assert_eq!(estimate_usage(&req).prompt_tokens, 3);
        assert_eq!(estimate_usage(&serde_json::json!({})).prompt_tokens, 1);
    }

    #[test]
    fn error_event_json_is_the_event_data() {
        let json: serde_json::Value = serde_json::from_slice(&error_event_json()).unwrap();
        assert_eq!(json["error"]["type"], "server_error");
        let event = error_event();
        assert_eq!(event[..6], *b"data: ");
        assert_eq!(event[6..event.len() - 2], error_event_json());
        assert_eq!(event[event.len() - 2..], *b"\n\n");
    }

    /// The exact bytes the mock sent before its wire format moved to core: tests elsewhere
    /// compare answers byte for byte.
    #[test]
    fn bytes_are_pinned() {
        assert_eq!(
            completion_json(7, "gpt-4o", usage(3)),
            concat!(
                r#"{"id":"chatcmpl-mock-7","object":"chat.completion","created":1700000000,"#,
                r#""model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","#,
                r#""content":"Resilience is the art of answering anyway: retry the transient, "#,
                r#"fail over the broken, and never pass a truncated answer off as a whole one."},"#,
                r#""finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":25,"#,
                r#""total_tokens":28}}"#
            )
        );
        let events = sse_events(7, "gpt-4o", usage(3));
        assert_eq!(
            events[0],
            concat!(
                r#"data: {"id":"chatcmpl-mock-7","object":"chat.completion.chunk","#,
                r#""created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":"#,
                r#"{"role":"assistant","content":"Resilience"},"finish_reason":null}]}"#,
                "\n\n"
            )
        );
        assert_eq!(
            events[1],
            concat!(
                r#"data: {"id":"chatcmpl-mock-7","object":"chat.completion.chunk","#,
                r#""created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":"#,
                r#"{"content":" is"},"finish_reason":null}]}"#,
                "\n\n"
            )
        );
        assert_eq!(
            events[TOKENS.len()],
            concat!(
                r#"data: {"id":"chatcmpl-mock-7","object":"chat.completion.chunk","#,
                r#""created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{},"#,
                r#""finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":25,"#,
                r#""total_tokens":28}}"#,
                "\n\n"
            )
        );
        assert_eq!(events[TOKENS.len() + 1], "data: [DONE]\n\n");
        assert_eq!(
            error_event(),
            concat!(
                r#"data: {"error":{"message":"mock upstream: the model failed before its first "#,
                r#"token","type":"server_error","param":null,"code":"server_error"}}"#,
                "\n\n"
            )
        );
    }
}
