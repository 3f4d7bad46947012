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
use tower_llm_core::openai::{ChatCompletion, ChatCompletionChunk, Delta, Usage, DONE_FRAME};

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

impl Answer<'_> {
    fn json(&self) -> Bytes {
        ChatCompletion::assistant(
            self.id,
            self.created,
            self.model,
            self.content,
            self.finish_reason,
        )
        .with_usage(Usage::default())
        .to_json()
    }

    /// Two chunks (the whole text, then the finish reason with zero usage) and `[DONE]`.
    fn sse(&self) -> Bytes {
        let chunk = || ChatCompletionChunk::new(self.id, self.created, self.model);
        let first = chunk()
            .with_choice(Delta::assistant(self.content), None)
            .to_sse();
        let last = chunk()
            .with_choice(Delta::default(), Some(self.finish_reason))
            .with_usage(Usage::default())
            .to_sse();
        let mut out = BytesMut::with_capacity(first.len() + last.len() + DONE_FRAME.len());
        out.put_slice(&first);
        out.put_slice(&last);
        out.put_slice(DONE_FRAME);
        out.freeze()
    }
}

/// A stored chat completion re-framed as SSE, when it is a single plain-text answer.
pub(crate) fn completion_to_sse(json: &[u8]) -> Option<Bytes> {
    let stored: ChatCompletion<'_> = serde_json::from_slice(json).ok()?;
    let [choice] = <[_; 1]>::try_from(stored.choices).ok()?;
    if choice.message.tool_calls.is_some() {
        return None;
    }
    let answer = Answer {
        id: if stored.id.is_empty() {
            "chatcmpl-cache"
        } else {
            &stored.id
        },
        created: stored.created,
        model: &stored.model,
        content: choice.message.content.as_deref()?,
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

    /// The exact bytes of the static tier, as they were before the wire format moved to core.
    #[test]
    fn bytes_are_pinned() {
        let answer = Answer {
            id: "chatcmpl-static-9",
            created: 1_700_000_001,
            model: "static",
            content: "sorry \"later\"\n",
            finish_reason: "stop",
        };
        assert_eq!(
            answer.json(),
            concat!(
                r#"{"id":"chatcmpl-static-9","object":"chat.completion","created":1700000001,"#,
                r#""model":"static","choices":[{"index":0,"message":{"role":"assistant","#,
                r#""content":"sorry \"later\"\n"},"finish_reason":"stop"}],"#,
                r#""usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}"#
            )
        );
        assert_eq!(
            answer.sse(),
            concat!(
                r#"data: {"id":"chatcmpl-static-9","object":"chat.completion.chunk","#,
                r#""created":1700000001,"model":"static","choices":[{"index":0,"delta":"#,
                r#"{"role":"assistant","content":"sorry \"later\"\n"},"finish_reason":null}]}"#,
                "\n\n",
                r#"data: {"id":"chatcmpl-static-9","object":"chat.completion.chunk","#,
                r#""created":1700000001,"model":"static","choices":[{"index":0,"delta":{},"#,
                r#""finish_reason":"stop"}],"usage":{"prompt_tokens":0,"completion_tokens":0,"#,
                r#""total_tokens":0}}"#,
                "\n\ndata: [DONE]\n\n"
            )
        );
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
        let no_text = br#"{"choices":[{"message":{"role":"assistant","content":null}}]}"#;
        assert!(completion_to_sse(no_text).is_none());
        // Defaults for what a stored body leaves out.
        let minimal = completion_to_sse(br#"{"choices":[{"message":{"content":"x"}}]}"#).unwrap();
        let text = std::str::from_utf8(&minimal).unwrap();
        assert!(text.starts_with(
            r#"data: {"id":"chatcmpl-cache","object":"chat.completion.chunk","created":0,"model":"""#
        ));
        assert!(text.contains(r#""finish_reason":"stop""#));
        assert!(completion_to_sse(br#"{"choices":[]}"#).is_none());
    }
}
