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
//! use tower_llm_chaos::canonical::{self, Usage};
//! use tower_llm_chaos::{canonical_tokens, CANONICAL_ANSWER};
//!
//! assert_eq!(canonical_tokens().concat(), CANONICAL_ANSWER);
//!
//! let usage = Usage::new(3);
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

use bytes::Bytes;
use serde::Serialize;

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

/// The `created` timestamp of every mock completion: fixed, so answers are byte-for-byte
/// reproducible.
pub const CREATED: u64 = 1_700_000_000;

/// The final SSE event of a complete stream.
pub const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// The event sent in place of a valid one by
/// [`Fault::MalformedEvent`](crate::Fault::MalformedEvent): an SSE frame whose data is not JSON.
pub const MALFORMED_EVENT: &[u8] =
    b"data: {\"id\":\"chatcmpl-mock\",\"choices\":[{\"delta\":{\"content\n\n";

/// The `usage` object of a mock completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Tokens in the prompt (the mock's estimate, see [`Usage::estimate`]).
    pub prompt_tokens: u64,
    /// Tokens in the completion: the number of [`canonical_tokens`].
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

impl Usage {
    /// The usage of a canonical answer to a prompt of `prompt_tokens` tokens.
    pub fn new(prompt_tokens: u64) -> Self {
        let completion_tokens = TOKENS.len() as u64;
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }

    /// The usage the mock reports for `request` (a chat completion request's JSON): the prompt is
    /// counted as one token per four characters of message text (string contents and the `text`
    /// of content parts), rounded up, at least one.
    pub fn estimate(request: &serde_json::Value) -> Self {
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
        Usage::new(chars.div_ceil(4).max(1))
    }
}

/// The completion id of the mock's `seq`-th attempt: `chatcmpl-mock-{seq}`.
pub fn completion_id(seq: u64) -> String {
    format!("chatcmpl-mock-{seq}")
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChunkChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs into a Vec cannot fail (no maps with non-string keys, no
    // failing Serialize impls); an empty body would be the visible symptom if it ever did.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The healthy non-streamed answer of the `seq`-th attempt for `model`:
///
/// `{"id":"chatcmpl-mock-N","object":"chat.completion","created":CREATED,"model":MODEL,
/// "choices":[{"index":0,"message":{"role":"assistant","content":CANONICAL_ANSWER},"finish_reason":"stop"}],
/// "usage":{...}}`
pub fn completion_json(seq: u64, model: &str, usage: Usage) -> Bytes {
    let id = completion_id(seq);
    Bytes::from(to_bytes(&Completion {
        id: &id,
        object: "chat.completion",
        created: CREATED,
        model,
        choices: [Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content: CANONICAL_ANSWER,
            },
            finish_reason: "stop",
        }],
        usage,
    }))
}

fn sse_frame(json: Vec<u8>) -> Bytes {
    let mut frame = Vec::with_capacity(json.len() + 8);
    frame.extend_from_slice(b"data: ");
    frame.extend_from_slice(&json);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// The SSE event carrying content token `index` of [`canonical_tokens`] (the first one also
/// carries `"role":"assistant"`), or `None` when `index` is past the last token.
pub fn content_event(seq: u64, model: &str, index: usize) -> Option<Bytes> {
    let token = TOKENS.get(index)?;
    let id = completion_id(seq);
    Some(sse_frame(to_bytes(&Chunk {
        id: &id,
        object: "chat.completion.chunk",
        created: CREATED,
        model,
        choices: [ChunkChoice {
            index: 0,
            delta: Delta {
                role: (index == 0).then_some("assistant"),
                content: Some(token),
            },
            finish_reason: None,
        }],
        usage: None,
    })))
}

/// The last chunk of a complete stream: an empty delta, `"finish_reason":"stop"` and `usage`.
pub fn finish_event(seq: u64, model: &str, usage: Usage) -> Bytes {
    let id = completion_id(seq);
    sse_frame(to_bytes(&Chunk {
        id: &id,
        object: "chat.completion.chunk",
        created: CREATED,
        model,
        choices: [ChunkChoice {
            index: 0,
            delta: Delta {
                role: None,
                content: None,
            },
            finish_reason: Some("stop"),
        }],
        usage: Some(usage),
    }))
}

/// Every event of the healthy stream of the `seq`-th attempt for `model`, in order: one
/// [`content_event`] per token, the [`finish_event`], then [`DONE_EVENT`].
pub fn sse_events(seq: u64, model: &str, usage: Usage) -> Vec<Bytes> {
    let mut events: Vec<Bytes> = (0..TOKENS.len())
        .filter_map(|i| content_event(seq, model, i))
        .collect();
    events.push(finish_event(seq, model, usage));
    events.push(Bytes::from_static(DONE_EVENT));
    events
}

/// The in-band error event of [`Fault::FirstEventError`](crate::Fault::FirstEventError), in the
/// OpenAI shape.
pub const ERROR_EVENT: &[u8] = b"data: {\"error\":{\"message\":\"mock upstream: the model failed before its first token\",\"type\":\"server_error\",\"param\":null,\"code\":\"server_error\"}}\n\n";

/// The body of [`ERROR_EVENT`] (what a non-streamed request gets with a 200 status).
pub fn error_event_json() -> Bytes {
    let event = ERROR_EVENT;
    let json = event
        .strip_prefix(b"data: ")
        .and_then(|rest| rest.strip_suffix(b"\n\n"))
        .unwrap_or(event);
    Bytes::copy_from_slice(json)
}

/// The length of the prefix of [`completion_json`]'s bytes that ends right after the first `n`
/// tokens of the answer: what a non-streamed answer cut (or stalled) after `n` tokens sends.
pub(crate) fn json_prefix_len(body: &[u8], n: usize) -> usize {
    const NEEDLE: &[u8] = b"\"content\":\"";
    let start = body
        .windows(NEEDLE.len())
        .position(|w| w == NEEDLE)
        .map(|p| p + NEEDLE.len());
    match start {
        Some(start) => {
            let text: usize = TOKENS.iter().take(n).map(|t| t.len()).sum();
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
        assert_eq!(TOKENS.concat(), CANONICAL_ANSWER);
        assert!(TOKENS
            .iter()
            .all(|t| !t.is_empty() && !t.contains(['"', '\\'])));
    }

    #[test]
    fn json_prefix_ends_after_n_tokens() {
        let body = completion_json(7, "m", Usage::new(1));
        let len = json_prefix_len(&body, 2);
        assert!(body[..len].ends_with(b"\"content\":\"Resilience is"));
        assert_eq!(
            json_prefix_len(&body, 0) + "Resilience".len(),
            json_prefix_len(&body, 1)
        );
    }

    #[test]
    fn usage_estimate_counts_message_text() {
        let req = serde_json::json!({"messages": [
            {"role": "user", "content": "12345678"},
            {"role": "user", "content": [{"type": "text", "text": "a"}]}
        ]});
        assert_eq!(Usage::estimate(&req).prompt_tokens, 3);
        assert_eq!(Usage::estimate(&serde_json::json!({})).prompt_tokens, 1);
    }

    #[test]
    fn error_event_json_is_the_event_data() {
        let json: serde_json::Value = serde_json::from_slice(&error_event_json()).unwrap();
        assert_eq!(json["error"]["type"], "server_error");
    }
}
