//! The static tier: a configured answer for when nothing else answered.
//!
//! It is rendered per request in the OpenAI chat-completion shape: a `chat.completion` JSON
//! object, or, when the request asked for `"stream": true`, `chat.completion.chunk` SSE events
//! ending with `data: [DONE]`. Its `model` is the configured label (default `"static"`), its
//! `usage` is zero, and the response carries `x-llm-fallback: static`.
//!
//! ```
//! use tower_llm_fallback::StaticAnswer;
//!
//! let answer = StaticAnswer::new("The assistant is unavailable right now; please try again shortly.")
//!     .model("offline-notice");
//! # let _ = answer;
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::health::unix_ms;

/// A configured answer served when every target (and the cache, if any) failed.
#[derive(Clone, Debug)]
pub struct StaticAnswer {
    content: Arc<str>,
    model: Arc<str>,
    finish_reason: Arc<str>,
}

impl StaticAnswer {
    /// An answer whose assistant message is `content`.
    pub fn new(content: impl Into<Arc<str>>) -> Self {
        StaticAnswer {
            content: content.into(),
            model: "static".into(),
            finish_reason: "stop".into(),
        }
    }

    /// The `model` the answer reports (default `"static"`).
    pub fn model(mut self, model: impl Into<Arc<str>>) -> Self {
        self.model = model.into();
        self
    }

    /// The `finish_reason` the answer reports (default `"stop"`).
    pub fn finish_reason(mut self, reason: impl Into<Arc<str>>) -> Self {
        self.finish_reason = reason.into();
        self
    }

    /// The model label.
    pub fn model_name(&self) -> &str {
        &self.model
    }

    pub(crate) fn render(&self, stream: bool) -> Bytes {
        static SEQ: AtomicU64 = AtomicU64::new(1);
        let id = format!("chatcmpl-static-{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let answer = Answer {
            id: &id,
            created: unix_ms(SystemTime::now()) / 1000,
            model: &self.model,
            content: &self.content,
            finish_reason: &self.finish_reason,
        };
        if stream {
            answer.sse()
        } else {
            answer.json()
        }
    }
}

/// The parts of a plain-text chat completion.
struct Answer<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
    content: &'a str,
    finish_reason: &'a str,
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
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize, Default)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
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
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

impl Answer<'_> {
    fn json(&self) -> Bytes {
        let completion = Completion {
            id: self.id,
            object: "chat.completion",
            created: self.created,
            model: self.model,
            choices: [Choice {
                index: 0,
                message: Message {
                    role: "assistant",
                    content: self.content,
                },
                finish_reason: self.finish_reason,
            }],
            usage: Usage::default(),
        };
        // Serializing plain structs of strings and integers cannot fail.
        Bytes::from(serde_json::to_vec(&completion).unwrap_or_default())
    }

    fn sse(&self) -> Bytes {
        let chunk = |delta: Delta<'_>, finish_reason: Option<&str>, usage: Option<Usage>| {
            serde_json::to_vec(&Chunk {
                id: self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: self.model,
                choices: [ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason,
                }],
                usage,
            })
            .unwrap_or_default()
        };
        let first = chunk(
            Delta {
                role: Some("assistant"),
                content: Some(self.content),
            },
            None,
            None,
        );
        let last = chunk(
            Delta {
                role: None,
                content: None,
            },
            Some(self.finish_reason),
            Some(Usage::default()),
        );
        let mut out = BytesMut::with_capacity(first.len() + last.len() + 40);
        for event in [&first[..], &last[..]] {
            out.put_slice(b"data: ");
            out.put_slice(event);
            out.put_slice(b"\n\n");
        }
        out.put_slice(b"data: [DONE]\n\n");
        out.freeze()
    }
}

#[derive(Deserialize)]
struct StoredCompletion<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    created: Option<u64>,
    #[serde(borrow, default)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    choices: Vec<StoredChoice<'a>>,
}

#[derive(Deserialize)]
struct StoredChoice<'a> {
    #[serde(borrow)]
    message: StoredMessage<'a>,
    #[serde(borrow, default)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct StoredMessage<'a> {
    #[serde(borrow)]
    content: std::borrow::Cow<'a, str>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
}

/// A stored chat completion re-framed as SSE, when it is a single plain-text answer.
pub(crate) fn completion_to_sse(json: &[u8]) -> Option<Bytes> {
    let stored: StoredCompletion<'_> = serde_json::from_slice(json).ok()?;
    let [choice] = <[StoredChoice<'_>; 1]>::try_from(stored.choices).ok()?;
    if choice.message.tool_calls.is_some() {
        return None;
    }
    let answer = Answer {
        id: stored.id.as_deref().unwrap_or("chatcmpl-cache"),
        created: stored.created.unwrap_or_default(),
        model: stored.model.as_deref().unwrap_or_default(),
        content: &choice.message.content,
        finish_reason: choice.finish_reason.as_deref().unwrap_or("stop"),
    };
    Some(answer.sse())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let body = StaticAnswer::new("sorry \"later\"")
            .model("offline")
            .render(false);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "offline");
        assert_eq!(v["choices"][0]["message"]["content"], "sorry \"later\"");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 0);
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-static-"));
    }

    #[test]
    fn sse_shape() {
        let body = StaticAnswer::new("hi").render(true);
        let text = std::str::from_utf8(&body).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2], "data: [DONE]");
        let first: serde_json::Value =
            serde_json::from_str(events[0].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["content"], "hi");
        assert_eq!(first["model"], "static");
        let last: serde_json::Value =
            serde_json::from_str(events[1].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(last["usage"]["completion_tokens"], 0);
    }

    #[test]
    fn stored_completion_reframed() {
        let json = br#"{"id":"c1","created":7,"model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":"a\nb"},"finish_reason":"length"}],"usage":{}}"#;
        let sse = completion_to_sse(json).unwrap();
        let text = std::str::from_utf8(&sse).unwrap();
        assert!(text.contains(r#""model":"gpt-x""#));
        assert!(text.contains(r#""content":"a\nb""#));
        assert!(text.contains(r#""finish_reason":"length""#));
        assert!(text.ends_with("data: [DONE]\n\n"));
        let tools = br#"{"choices":[{"message":{"content":"","tool_calls":[]}}]}"#;
        assert!(completion_to_sse(tools).is_none());
        assert!(completion_to_sse(br#"{"choices":[]}"#).is_none());
    }
}
