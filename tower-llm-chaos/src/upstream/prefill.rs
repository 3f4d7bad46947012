//! Whether the mock continues, ignores or rejects an assistant prefill.

use std::borrow::Cow;

use serde_json::Value;

use crate::canonical;

/// What a mock upstream does with a request whose last message is the assistant's
/// ([`MockUpstreamBuilder::prefill`](super::MockUpstreamBuilder::prefill),
/// [`MockHandle::set_prefill`](super::MockHandle::set_prefill)).
///
/// An *assistant prefill* is the conversation plus one final
/// `{"role":"assistant","content":"<text so far>"}` message: servers that support it (vLLM with
/// `continue_final_message: true, add_generation_prompt: false`, Anthropic natively) continue the
/// text from there. A resilient client uses it to finish a cut stream on another provider.
///
/// Server-specific members such as `continue_final_message` and `add_generation_prompt` are
/// ignored in every mode (they are in [`Attempt::body`](super::Attempt::body) for tests to check).
///
/// ```
/// use http_body_util::{BodyExt, Full};
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower_llm_chaos::{MockUpstream, Prefill, CANONICAL_ANSWER};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let upstream = MockUpstream::builder().prefill(Prefill::Continue).start().await?;
/// let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
/// let ask = |body: serde_json::Value| {
///     http::Request::post(upstream.completions_url())
///         .body(Full::from(body.to_string()))
///         .unwrap()
/// };
/// let sent = "Resilience is the art of answ";
/// let request = serde_json::json!({"model": "m", "messages": [
///     {"role": "user", "content": "Say something resilient."},
///     {"role": "assistant", "content": sent},
/// ]});
///
/// let res = client.request(ask(request.clone())).await?;
/// let json: serde_json::Value = serde_json::from_slice(&res.into_body().collect().await?.to_bytes())?;
/// let rest = json["choices"][0]["message"]["content"].as_str().unwrap();
/// assert_eq!(format!("{sent}{rest}"), CANONICAL_ANSWER);
///
/// // A server without prefill support says so.
/// upstream.set_prefill(Prefill::Reject);
/// let res = client.request(ask(request)).await?;
/// assert_eq!(res.status(), 400);
/// assert_eq!(upstream.attempts()[1].fault, "prefill_rejected");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Prefill {
    /// A final assistant message changes nothing: the answer starts from the beginning, as
    /// OpenAI's chat completions API does.
    #[default]
    Ignore,
    /// When the last message is the assistant's, its text `P` (a string, or the concatenated
    /// `text` of its `{"type":"text"}` content parts) is non-empty and a prefix of the answer
    /// text, the answer is the rest of the text after `P`: a stream's first content event carries
    /// the rest of the token `P` ends inside (none when `P` ends between two tokens), then one
    /// event per following token, the finish event with usage and `[DONE]`; a JSON completion's
    /// content is the rest. Otherwise the answer starts from the beginning. Faults apply to the
    /// continuation (`cut-after:2` cuts after its second event).
    Continue,
    /// A request whose last message is the assistant's gets `400` with
    /// [`PREFILL_REJECTED_MESSAGE`] in an OpenAI error body (`"param":"messages"`), logged as an
    /// attempt with fault `prefill_rejected` and seq 0, before any fault applies.
    Reject,
}

impl Prefill {
    /// `ignore`, `continue` or `reject`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Prefill::Ignore => "ignore",
            Prefill::Continue => "continue",
            Prefill::Reject => "reject",
        }
    }
}

impl std::fmt::Display for Prefill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error message of a [`Prefill::Reject`] mock.
pub const PREFILL_REJECTED_MESSAGE: &str = "assistant prefill is not supported";

/// What the mock answers one request with.
pub(super) enum Decision<'a> {
    /// These tokens: the whole answer text or its continuation.
    Answer(Cow<'a, [&'static str]>),
    /// `400`: prefill is not supported.
    Reject,
}

/// Decide for `request` under `prefill`, answering with the tokens `whole`.
pub(super) fn decide<'a>(
    prefill: Prefill,
    whole: &'a [&'static str],
    request: &Value,
) -> Decision<'a> {
    let answer = Decision::Answer(Cow::Borrowed(whole));
    let Some(last) = last_assistant_message(request) else {
        return answer;
    };
    match prefill {
        Prefill::Ignore => answer,
        Prefill::Reject => Decision::Reject,
        Prefill::Continue => {
            match message_text(last).and_then(|prefix| canonical::continuation(whole, &prefix)) {
                Some(rest) => Decision::Answer(Cow::Owned(rest)),
                None => answer,
            }
        }
    }
}

/// The last message of `request`, when its role is `assistant`.
fn last_assistant_message(request: &Value) -> Option<&Value> {
    let last = request.get("messages")?.as_array()?.last()?;
    (last.get("role")?.as_str()? == "assistant").then_some(last)
}

/// A message's text: its string content, or the concatenated `text` of its text parts.
fn message_text(message: &Value) -> Option<String> {
    match message.get("content")? {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|part| part.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Answer;
    use serde_json::json;

    fn tokens(decision: Decision<'_>) -> Option<Vec<&'static str>> {
        match decision {
            Decision::Answer(tokens) => Some(tokens.into_owned()),
            Decision::Reject => None,
        }
    }

    fn with_last(message: Value) -> Value {
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}, message]})
    }

    #[test]
    fn only_a_final_assistant_message_is_a_prefill() {
        let user_last = json!({"model": "m", "messages": [
            {"role": "assistant", "content": "Resilience"},
            {"role": "user", "content": "go on"},
        ]});
        for prefill in [Prefill::Ignore, Prefill::Continue, Prefill::Reject] {
            let whole = tokens(decide(prefill, Answer::Canonical.tokens(), &user_last)).unwrap();
            assert_eq!(whole, canonical::canonical_tokens());
            let whole = tokens(decide(prefill, Answer::Alternate.tokens(), &json!({}))).unwrap();
            assert_eq!(whole, canonical::alternate_tokens());
        }
    }

    #[test]
    fn content_parts_are_concatenated() {
        let request = with_last(json!({"role": "assistant", "content": [
            {"type": "text", "text": "Resilience is"},
            {"type": "image_url", "image_url": {"url": "x"}},
            {"type": "text", "text": " the a"},
        ]}));
        let rest = tokens(decide(
            Prefill::Continue,
            Answer::Canonical.tokens(),
            &request,
        ))
        .unwrap();
        assert_eq!(rest[..2], ["rt", " of"]);
        assert_eq!(
            tokens(decide(
                Prefill::Ignore,
                Answer::Canonical.tokens(),
                &request
            ))
            .unwrap(),
            canonical::canonical_tokens()
        );
        assert!(tokens(decide(
            Prefill::Reject,
            Answer::Canonical.tokens(),
            &request
        ))
        .is_none());
    }

    #[test]
    fn odd_contents_answer_from_the_beginning() {
        for content in [json!(null), json!(42), json!(""), json!([])] {
            let request = with_last(json!({"role": "assistant", "content": content}));
            let whole = tokens(decide(
                Prefill::Continue,
                Answer::Canonical.tokens(),
                &request,
            ))
            .unwrap();
            assert_eq!(whole, canonical::canonical_tokens());
        }
        let no_content = with_last(json!({"role": "assistant", "tool_calls": []}));
        assert!(tokens(decide(
            Prefill::Reject,
            Answer::Canonical.tokens(),
            &no_content
        ))
        .is_none());
    }
}
