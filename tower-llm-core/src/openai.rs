//! The OpenAI chat-completions wire format, as tower-llm writes and reads it.
//!
//! One definition for every crate that renders or reads an OpenAI-compatible answer: the mock
//! upstream of `tower-llm-chaos`, the cache and static tiers of `tower-llm-fallback`, the stream
//! guard's error event and the gateway's error responses.
//!
//! - [`ChatCompletion`] (`"object":"chat.completion"`), [`ChatCompletionChunk`]
//!   (`"object":"chat.completion.chunk"`), both a [`Completion`] envelope, and [`Usage`];
//! - [`ErrorBody`]: `{"error":{"message","type","param","code"}}`, with [`error_body`] and
//!   [`error_event`] for an [`ErrorKind`];
//! - the `[DONE]` sentinel that ends a stream: [`DONE`], [`DONE_FRAME`], [`done_frame`].
//!
//! Strings are [`Cow`]s: written from borrowed text without copying, read from a body without
//! copying where the JSON has no escapes. Fields are written in OpenAI's order; reading is
//! lenient (missing fields take their defaults, unknown fields are ignored), so bodies of
//! OpenAI-compatible servers that leave out `id` or `created` read too. Other providers' error
//! shapes are read by [`provider::parse_error_body`](crate::provider::parse_error_body).
//!
//! ```
//! use tower_llm_core::openai::{ChatCompletion, ChatCompletionChunk, Delta, Usage, DONE_FRAME};
//!
//! // A whole answer, as JSON.
//! let answer = ChatCompletion::assistant("chatcmpl-1", 1_700_000_000, "gpt-4o", "Hi!", "stop")
//!     .with_usage(Usage::new(3, 2));
//! let json = answer.to_json();
//! assert!(json.starts_with(br#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000"#));
//! let back: ChatCompletion<'_> = serde_json::from_slice(&json).unwrap();
//! assert_eq!(back.content(), Some("Hi!"));
//! assert_eq!(back.usage.unwrap().total_tokens, 5);
//!
//! // The same answer, streamed: one chunk per event, then `[DONE]`.
//! let first = ChatCompletionChunk::new("chatcmpl-1", 1_700_000_000, "gpt-4o")
//!     .with_choice(Delta::assistant("Hi!"), None);
//! let last = ChatCompletionChunk::new("chatcmpl-1", 1_700_000_000, "gpt-4o")
//!     .with_choice(Delta::default(), Some("stop"))
//!     .with_usage(Usage::new(3, 2));
//! let stream = [first.to_sse(), last.to_sse(), tower_llm_core::openai::done_frame()].concat();
//! assert!(stream.starts_with(b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\""));
//! assert!(stream.ends_with(DONE_FRAME));
//! ```

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{sse, ErrorKind};

/// The data of the event that ends an OpenAI stream.
pub const DONE: &str = "[DONE]";

/// The frame that ends an OpenAI stream: `data: [DONE]` and a blank line.
pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// [`DONE_FRAME`] as `Bytes` (no allocation).
pub fn done_frame() -> Bytes {
    Bytes::from_static(DONE_FRAME)
}

/// The `object` of a non-streamed completion.
pub const CHAT_COMPLETION: &str = "chat.completion";

/// The `object` of a streamed chunk.
pub const CHAT_COMPLETION_CHUNK: &str = "chat.completion.chunk";

/// The `role` of the model's messages.
pub const ASSISTANT: &str = "assistant";

/// Serialize `value` to JSON bytes.
fn to_json<T: Serialize + ?Sized>(value: &T) -> Bytes {
    // The types of this module hold strings, integers and JSON values: serializing them into a
    // Vec cannot fail. An empty body would be the visible symptom if it ever did.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// Token counts of a completion (`usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens in the completion.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u64,
}

impl Usage {
    /// `prompt_tokens` and `completion_tokens`, and their (saturating) sum as `total_tokens`.
    pub const fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// A non-streamed chat completion (`"object":"chat.completion"`).
///
/// `Debug` shows the fields as they are, completion text included: keep it out of logs.
pub type ChatCompletion<'a> = Completion<'a, Choice<'a>>;

/// One event of a streamed chat completion (`"object":"chat.completion.chunk"`).
///
/// `Debug` shows the fields as they are, completion text included: keep it out of logs.
pub type ChatCompletionChunk<'a> = Completion<'a, ChunkChoice<'a>>;

/// The object OpenAI sends a completion in, whole ([`ChatCompletion`]: choices of [`Choice`]) or
/// streamed ([`ChatCompletionChunk`]: choices of [`ChunkChoice`]); only the choices differ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "C: Deserialize<'de>"))]
#[non_exhaustive]
pub struct Completion<'a, C> {
    /// `chatcmpl-…`, the same in every chunk of a stream.
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    /// [`CHAT_COMPLETION`] or [`CHAT_COMPLETION_CHUNK`].
    #[serde(borrow, default)]
    pub object: Cow<'a, str>,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answers.
    #[serde(borrow, default)]
    pub model: Cow<'a, str>,
    /// The answers (one unless the request set `n`); in a chunk, their deltas (none in a
    /// usage-only chunk).
    #[serde(default = "Vec::new")]
    pub choices: Vec<C>,
    /// Token counts; in a stream, in the last chunk when the request asked for them (and always
    /// in tower-llm's own streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl<'a, C> Completion<'a, C> {
    fn empty(
        object: &'static str,
        id: impl Into<Cow<'a, str>>,
        created: u64,
        model: impl Into<Cow<'a, str>>,
    ) -> Self {
        Completion {
            id: id.into(),
            object: Cow::Borrowed(object),
            created,
            model: model.into(),
            choices: Vec::new(),
            usage: None,
        }
    }

    /// Set the token counts.
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// As JSON, on one line.
    pub fn to_json(&self) -> Bytes
    where
        C: Serialize,
    {
        to_json(self)
    }
}

impl<'a> ChatCompletion<'a> {
    /// A completion with no choices and no usage.
    pub fn new(id: impl Into<Cow<'a, str>>, created: u64, model: impl Into<Cow<'a, str>>) -> Self {
        Self::empty(CHAT_COMPLETION, id, created, model)
    }

    /// A completion of one assistant message, `content`, that ended for `finish_reason`.
    pub fn assistant(
        id: impl Into<Cow<'a, str>>,
        created: u64,
        model: impl Into<Cow<'a, str>>,
        content: impl Into<Cow<'a, str>>,
        finish_reason: impl Into<Cow<'a, str>>,
    ) -> Self {
        Self::new(id, created, model).with_choice(Message::assistant(content), finish_reason)
    }

    /// Add a choice (its `index` is its position).
    pub fn with_choice(
        mut self,
        message: Message<'a>,
        finish_reason: impl Into<Cow<'a, str>>,
    ) -> Self {
        self.choices.push(Choice {
            index: self.choices.len() as u32,
            message,
            finish_reason: Some(finish_reason.into()),
        });
        self
    }

    /// The text of the first choice's message.
    pub fn content(&self) -> Option<&str> {
        self.choices.first()?.message.content.as_deref()
    }
}

impl<'a> ChatCompletionChunk<'a> {
    /// A chunk with no choices and no usage.
    pub fn new(id: impl Into<Cow<'a, str>>, created: u64, model: impl Into<Cow<'a, str>>) -> Self {
        Self::empty(CHAT_COMPLETION_CHUNK, id, created, model)
    }

    /// Add a choice (its `index` is its position): `delta`, and `finish_reason` in the choice's
    /// last chunk (`null` before).
    pub fn with_choice(mut self, delta: Delta<'a>, finish_reason: Option<&'a str>) -> Self {
        self.choices.push(ChunkChoice {
            index: self.choices.len() as u32,
            delta,
            finish_reason: finish_reason.map(Cow::Borrowed),
        });
        self
    }

    /// The text of the first choice's delta.
    pub fn content(&self) -> Option<&str> {
        self.choices.first()?.delta.content.as_deref()
    }

    /// The chunk as an SSE frame: `data: <json>` and a blank line.
    pub fn to_sse(&self) -> Bytes {
        sse::json_frame(self)
    }
}

/// One answer of a [`ChatCompletion`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Choice<'a> {
    /// Its position in `choices`.
    #[serde(default)]
    pub index: u32,
    /// The message.
    #[serde(borrow, default)]
    pub message: Message<'a>,
    /// Why the model stopped: `stop`, `length`, `tool_calls`, `content_filter`, ...
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// The message of a [`Choice`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Message<'a> {
    /// [`ASSISTANT`] in answers.
    #[serde(borrow, default)]
    pub role: Cow<'a, str>,
    /// The text; `null` when the model only called tools.
    #[serde(borrow, default)]
    pub content: Option<Cow<'a, str>>,
    /// Tool calls, as sent (absent unless the model called tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
}

impl<'a> Message<'a> {
    /// An assistant message with `content`.
    pub fn assistant(content: impl Into<Cow<'a, str>>) -> Self {
        Message {
            role: Cow::Borrowed(ASSISTANT),
            content: Some(content.into()),
            tool_calls: None,
        }
    }
}

/// One choice of a [`ChatCompletionChunk`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChunkChoice<'a> {
    /// The index of the choice this delta belongs to.
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(borrow, default)]
    pub delta: Delta<'a>,
    /// Why the model stopped, in the choice's last chunk; `null` before.
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// What a chunk adds to a message. Absent fields are left out when written: `{}` is an empty
/// delta.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Delta<'a> {
    /// [`ASSISTANT`], in the first chunk.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Cow<'a, str>>,
    /// A piece of the text.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Cow<'a, str>>,
    /// Pieces of tool calls, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
}

impl<'a> Delta<'a> {
    /// A piece of text.
    pub fn text(content: impl Into<Cow<'a, str>>) -> Self {
        Delta {
            content: Some(content.into()),
            ..Delta::default()
        }
    }

    /// The first piece of an assistant message: `role` and text.
    pub fn assistant(content: impl Into<Cow<'a, str>>) -> Self {
        Delta {
            role: Some(Cow::Borrowed(ASSISTANT)),
            ..Delta::text(content)
        }
    }
}

/// An OpenAI error body: `{"error":{"message","type","param","code"}}`.
///
/// `param` and `code` are written as `null` when absent, as OpenAI does.
///
/// ```
/// use tower_llm_core::openai::ErrorBody;
///
/// let body = ErrorBody::new("no such model", "invalid_request_error").with_code("model_not_found");
/// assert_eq!(
///     body.to_json(),
///     r#"{"error":{"message":"no such model","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorBody<'a> {
    /// The error.
    #[serde(borrow)]
    pub error: ApiError<'a>,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApiError<'a> {
    /// What went wrong, for a person.
    #[serde(borrow)]
    pub message: Cow<'a, str>,
    /// The error type: `invalid_request_error`, `rate_limit_error`, `server_error`, ...
    #[serde(borrow, default)]
    pub r#type: Cow<'a, str>,
    /// The request parameter at fault.
    #[serde(borrow, default)]
    pub param: Option<Cow<'a, str>>,
    /// A machine-readable code: `rate_limit_exceeded`, `context_length_exceeded`, ...
    #[serde(borrow, default)]
    pub code: Option<Cow<'a, str>>,
}

impl<'a> ErrorBody<'a> {
    /// An error of type `r#type` saying `message`, with no `param` and no `code`.
    pub fn new(message: impl Into<Cow<'a, str>>, r#type: impl Into<Cow<'a, str>>) -> Self {
        ErrorBody {
            error: ApiError {
                message: message.into(),
                r#type: r#type.into(),
                param: None,
                code: None,
            },
        }
    }

    /// The error for `kind`: type [`error_type`] and code [`error_code`].
    pub fn for_kind(kind: ErrorKind, message: impl Into<Cow<'a, str>>) -> Self {
        Self::new(message, error_type(kind)).with_code(error_code(kind))
    }

    /// Set the `code`.
    pub fn with_code(mut self, code: impl Into<Cow<'a, str>>) -> Self {
        self.error.code = Some(code.into());
        self
    }

    /// Set the `param`.
    pub fn with_param(mut self, param: impl Into<Cow<'a, str>>) -> Self {
        self.error.param = Some(param.into());
        self
    }

    /// The body as JSON, on one line (the message is JSON-escaped).
    pub fn to_json(&self) -> Bytes {
        to_json(self)
    }

    /// The body as an in-band stream error: `data: <json>` and a blank line (see
    /// [`error_event`]).
    pub fn to_sse(&self) -> Bytes {
        sse::json_frame(self)
    }
}

/// The OpenAI error `type` for `kind`: `rate_limit_error`, `insufficient_quota`,
/// `authentication_error`, `invalid_request_error` or `server_error`.
pub const fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::QuotaExhausted => "insufficient_quota",
        ErrorKind::Auth => "authentication_error",
        ErrorKind::ContextLength | ErrorKind::ContentPolicy | ErrorKind::BadRequest => {
            "invalid_request_error"
        }
        ErrorKind::Overloaded
        | ErrorKind::ServerError
        | ErrorKind::Timeout
        | ErrorKind::Transport
        | ErrorKind::InvalidResponse
        | ErrorKind::Unknown => "server_error",
    }
}

/// The OpenAI error `code` for `kind`: OpenAI's own code where it has one
/// (`rate_limit_exceeded`, `insufficient_quota`, `context_length_exceeded`,
/// `content_policy_violation`), else [`ErrorKind::as_str`].
/// [`provider::kind_of_code`](crate::provider::kind_of_code) reads each back.
pub const fn error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::RateLimited => "rate_limit_exceeded",
        ErrorKind::QuotaExhausted => "insufficient_quota",
        ErrorKind::ContextLength => "context_length_exceeded",
        ErrorKind::ContentPolicy => "content_policy_violation",
        other => other.as_str(),
    }
}

/// The JSON error body for `kind`:
/// `{"error":{"message":...,"type":...,"param":null,"code":...}}` ([`ErrorBody::for_kind`]).
pub fn error_body(kind: ErrorKind, message: &str) -> Bytes {
    ErrorBody::for_kind(kind, message).to_json()
}

/// An in-band error event that ends a broken stream: `data: ` + [`error_body`] and a blank line.
///
/// No `event: error` line: OpenAI sends stream errors as plain `data:` events, and that is what
/// every OpenAI client checks for (the official SDKs raise on a `data` object with an `error`;
/// clients that dispatch on event names would not know an `error` type, and in a browser
/// `EventSource` it collides with the connection-error event).
/// [`sse::inspect_event`] recognises both. Send it instead of `[DONE]`, never followed by it.
pub fn error_event(kind: ErrorKind, message: &str) -> Bytes {
    ErrorBody::for_kind(kind, message).to_sse()
}

/// The `model` a chat request's JSON body names, its escapes decoded: `Ok(None)` for a body
/// with no `model` or `model: null`, an error for a body that is not JSON, or whose `model` is
/// not a string or comes twice. The same as `serde_json` reading the body into a struct with one
/// optional string field `model` — the path this takes for a body its hand-written scan is not
/// sure of — but for nearly every request the rest of the body (the conversation, usually all
/// of it) is skipped with SIMD instead of a byte at a time, and, as serde_json does, without
/// reading it as UTF-8: a 35 KB conversation costs about 59,000 instructions instead of
/// serde_json's 109,000 (BENCHMARKS.md, issue 18).
///
/// ```
/// use tower_llm_core::openai::request_model;
///
/// let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi \"there\"\n"}]}"#;
/// assert_eq!(request_model(body).unwrap().as_deref(), Some("gpt-4o"));
/// assert_eq!(request_model(br#"{"messages":[]}"#).unwrap(), None);
/// assert!(request_model(br#"{"model":7}"#).is_err());
/// assert!(request_model(b"not json").is_err());
/// ```
pub fn request_model(body: &[u8]) -> Result<Option<Cow<'_, str>>, serde_json::Error> {
    if let Some(model) = crate::stream::scan_request_model(body) {
        return Ok(model.map(Cow::Borrowed));
    }
    #[derive(Deserialize)]
    struct ModelOnly<'a> {
        #[serde(borrow)]
        model: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<ModelOnly<'_>>(body).map(|m| m.model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_model_reads_as_serde_json() {
        // (body, the model read, or `Err` when the body is refused)
        type Case = (&'static [u8], Result<Option<&'static str>, ()>);
        let cases: [Case; 14] = [
            (br#"{"model":"m","messages":[]}"#, Ok(Some("m"))),
            // Invalid UTF-8: serde_json refuses it in a top-level key or the model, and does not
            // check the strings it skips.
            (
                b"{\"model\":\"m\",\"messages\":[{\"content\":\"a\xff\"}]}",
                Ok(Some("m")),
            ),
            (
                b"{\"messages\":{\"\xc3\":\"\xe9\"},\"model\":\"m\"}",
                Ok(Some("m")),
            ),
            (b"{\"model\":\"\xff\"}", Err(())),
            (b"{\"\xff\":1,\"model\":\"m\"}", Err(())),
            (
                br#" {"messages":[{"content":"\u00e9\ud83d\ude00"}], "model" : "m" } "#,
                Ok(Some("m")),
            ),
            (br#"{"model":"a\u00e9\n"}"#, Ok(Some("a\u{e9}\n"))),
            (br#"{"model":null}"#, Ok(None)),
            (br#"{}"#, Ok(None)),
            (br#"{"model":"a","model":"b"}"#, Err(())),
            (br#"{"model":["m"]}"#, Err(())),
            (br#"{"model":"m"}x"#, Err(())),
            (br#"{"model":"m","x":"\ud800"}"#, Ok(Some("m"))),
            (b"", Err(())),
        ];
        for (body, want) in cases {
            let got = request_model(body)
                .map(|m| m.map(Cow::into_owned))
                .map_err(|_| ());
            assert_eq!(
                got,
                want.map(|m| m.map(str::to_owned)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn error_body_bytes() {
        assert_eq!(
            error_body(ErrorKind::RateLimited, "slow \"down\"\n"),
            r#"{"error":{"message":"slow \"down\"\n","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}"#
        );
        assert_eq!(
            error_event(ErrorKind::Timeout, "late"),
            "data: {\"error\":{\"message\":\"late\",\"type\":\"server_error\",\"param\":null,\"code\":\"timeout\"}}\n\n"
        );
        assert_eq!(
            ErrorBody::new("m", "t").with_param("messages").to_json(),
            r#"{"error":{"message":"m","type":"t","param":"messages","code":null}}"#
        );
    }

    #[test]
    fn completion_bytes() {
        let json = ChatCompletion::assistant("c1", 7, "m", "a\nb", "stop")
            .with_usage(Usage::new(1, 2))
            .to_json();
        assert_eq!(
            json,
            r#"{"id":"c1","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"a\nb"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#
        );
        let back: ChatCompletion<'_> = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.to_json(), json);
        // Escape-free strings are borrowed from the body.
        assert!(matches!(back.model, Cow::Borrowed("m")));
        assert_eq!(back.content(), Some("a\nb"));
    }

    #[test]
    fn chunk_bytes() {
        let first =
            ChatCompletionChunk::new("c1", 7, "m").with_choice(Delta::assistant("Hi"), None);
        assert_eq!(
            first.to_sse(),
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n"
        );
        let last = ChatCompletionChunk::new("c1", 7, "m")
            .with_choice(Delta::default(), Some("stop"))
            .with_usage(Usage::default());
        assert_eq!(
            last.to_json(),
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}"#
        );
        let json = first.to_json();
        let back: ChatCompletionChunk<'_> = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, first);
        assert_eq!(back.content(), Some("Hi"));
    }

    #[test]
    fn lenient_reading() {
        let minimal: ChatCompletion<'_> =
            serde_json::from_slice(br#"{"choices":[{"message":{"content":"x"}}],"extra":1}"#)
                .unwrap();
        assert_eq!((minimal.id.as_ref(), minimal.created), ("", 0));
        assert_eq!(minimal.content(), Some("x"));
        assert_eq!(minimal.usage, None);
        let tools: ChatCompletion<'_> = serde_json::from_slice(
            br#"{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[]}}]}"#,
        )
        .unwrap();
        assert_eq!(tools.content(), None);
        assert!(tools.choices[0].message.tool_calls.is_some());
        let usage_only: ChatCompletionChunk<'_> = serde_json::from_slice(
            br#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        )
        .unwrap();
        assert_eq!(usage_only.usage, Some(Usage::new(3, 2)));
        assert_eq!(usage_only.content(), None);
        let json = error_body(ErrorKind::ContextLength, "too long");
        let error: ErrorBody<'_> = serde_json::from_slice(&json).unwrap();
        assert_eq!(error.error.code.as_deref(), Some("context_length_exceeded"));
    }
}
