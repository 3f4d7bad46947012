//! The request a prefill continuation sends: the caller's, plus the text already sent as the
//! final assistant message, plus the target's extra members.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::json::find_members;

/// Whether a request can be resumed at all: it asked for a stream, one choice, no logprobs.
pub(crate) fn request_resumable(body: &[u8]) -> bool {
    let Some(members) = find_members(body, ["stream", "n", "logprobs"]) else {
        return false;
    };
    let value = |i: usize| {
        members.values[i]
            .clone()
            .and_then(|span| body.get(span))
            .map(<[u8]>::trim_ascii)
    };
    value(0) == Some(b"true")
        && matches!(value(1), None | Some(b"1" | b"null"))
        && matches!(value(2), None | Some(b"false" | b"null"))
}

/// `original` (a chat completion request) asking the model to continue `sent`: an assistant
/// message holding it is appended to `messages` (or `sent` is appended to the caller's own
/// final assistant message), and `params` are set as top-level members. `None` when `original`
/// is not a JSON object with a `messages` array.
pub(crate) fn prefill_body(
    original: &[u8],
    sent: &str,
    params: &Map<String, Value>,
) -> Option<Bytes> {
    let mut request: Map<String, Value> = serde_json::from_slice(original).ok()?;
    let messages = request.get_mut("messages")?.as_array_mut()?;
    let caller_prefill = messages
        .last_mut()
        .and_then(Value::as_object_mut)
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"));
    match caller_prefill.and_then(|m| m.get_mut("content")) {
        Some(Value::String(content)) => content.push_str(sent),
        _ => {
            let mut message = Map::new();
            message.insert("role".into(), Value::String("assistant".into()));
            message.insert("content".into(), Value::String(sent.to_owned()));
            messages.push(Value::Object(message));
        }
    }
    for (key, value) in params {
        request.insert(key.clone(), value.clone());
    }
    serde_json::to_vec(&request).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn appends_the_text_and_the_params() {
        let original =
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let params = json!({"continue_final_message": true, "add_generation_prompt": false});
        let body = prefill_body(original, "Hel\"lo", params.as_object().unwrap()).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["messages"],
            json!([{"role":"user","content":"hi"},{"role":"assistant","content":"Hel\"lo"}])
        );
        assert_eq!(body["continue_final_message"], true);
        assert_eq!(body["add_generation_prompt"], false);
        assert_eq!(body["model"], "m");
    }

    #[test]
    fn extends_the_callers_own_prefill() {
        let original = br#"{"stream":true,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Sure: "}]}"#;
        let body = prefill_body(original, "one, two", &Map::new()).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["messages"][1],
            json!({"role":"assistant","content":"Sure: one, two"})
        );
        assert_eq!(body["messages"].as_array().unwrap().len(), 2);
        assert_eq!(prefill_body(b"{\"messages\":3}", "x", &Map::new()), None);
        assert_eq!(prefill_body(b"[]", "x", &Map::new()), None);
    }

    #[test]
    fn resumable_requests() {
        assert!(request_resumable(br#"{"stream":true,"messages":[]}"#));
        assert!(request_resumable(
            br#"{"stream": true ,"n":1,"logprobs":false}"#
        ));
        assert!(!request_resumable(br#"{"messages":[]}"#));
        assert!(!request_resumable(br#"{"stream":true,"n":2}"#));
        assert!(!request_resumable(br#"{"stream":true,"logprobs":true}"#));
        assert!(!request_resumable(b"not json"));
    }
}
