//! Splicing a continuation into a stream that was cut: keep the first stream's `id`, drop the
//! repeated `role`, and (for a replay) swallow the text the caller already has.

use bytes::Bytes;
use serde_json::{Map, Value};
use tower_llm_core::sse::json_frame;

use super::transcript::{ChunkView, Transcript};
use super::How;

/// What to do with one event of the continuation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Spliced {
    /// Hand on the event as it came.
    Pass,
    /// Hand on this rewritten event's frame instead.
    Rewrite(Bytes),
    /// Nothing of it is new to the caller: leave it out.
    Drop,
    /// The continuation cannot be spliced; why, for the error event.
    Diverged(String),
}

/// The state of one continuation.
#[derive(Debug)]
pub(crate) struct Splice {
    how: How,
    /// How many bytes of the text sent before the resume the continuation reproduced (a replay
    /// swallows them); equal to `sent` from the start for a prefill.
    matched: usize,
    /// The length of the text sent before the resume.
    sent: usize,
    /// The first stream's `id`, written into every continuation chunk that has one.
    id: Option<String>,
}

impl Splice {
    /// A continuation of the stream `transcript` holds, obtained by `how`.
    pub(crate) fn new(how: How, transcript: &Transcript) -> Self {
        let sent = transcript.text().len();
        Splice {
            how,
            matched: if how == How::Prefill { sent } else { 0 },
            sent,
            id: transcript.id().map(str::to_owned),
        }
    }

    /// Whether a replay is still reproducing the text already sent.
    pub(crate) fn swallowing(&self) -> bool {
        self.matched < self.sent
    }

    /// How far a replay got, for the error event when it stops short.
    pub(crate) fn progress(&self, transcript: &Transcript) -> String {
        let text = transcript.text();
        let chars = |end: usize| text.get(..end).map_or(0, |t| t.chars().count());
        format!(
            "{} of the {} characters already sent",
            chars(self.matched),
            chars(self.sent)
        )
    }

    /// One event of the continuation (its data); text handed on is added to `transcript`.
    pub(crate) fn event(&mut self, data: &[u8], transcript: &mut Transcript) -> Spliced {
        let Some(view) = ChunkView::parse(data) else {
            return self.diverged(
                transcript,
                "sent an event that is not a chat completion chunk",
            );
        };
        let choice = match view.single_choice() {
            Ok(choice) => choice,
            Err(why) => return self.diverged(transcript, why.as_str()),
        };
        if let Some(why) = choice
            .and_then(|c| c.delta.as_ref())
            .and_then(|d| d.unresumable())
        {
            return self.diverged(transcript, why.as_str());
        }
        let content = choice
            .and_then(|c| c.delta.as_ref())
            .and_then(|d| d.content.as_deref())
            .unwrap_or("");
        let finishes = choice.is_some_and(|c| c.finish_reason.is_some());
        let has_role = choice
            .and_then(|c| c.delta.as_ref())
            .is_some_and(|d| d.role.is_some());
        let id_differs = match (&self.id, view.id.as_deref()) {
            (Some(ours), Some(theirs)) => ours != theirs,
            _ => false,
        };
        // The part of `content` that is new to the caller.
        let fresh = if self.swallowing() {
            let remaining = transcript.text().get(self.matched..self.sent).unwrap_or("");
            if remaining.starts_with(content) {
                self.matched += content.len();
                ""
            } else if let Some(rest) = content.strip_prefix(remaining) {
                self.matched = self.sent;
                rest
            } else {
                return self.diverged(transcript, "answered differently");
            }
        } else {
            content
        };
        if finishes && self.swallowing() {
            return self.diverged(transcript, "finished before reproducing the text");
        }
        let trimmed = fresh.len() != content.len();
        transcript.push_text(fresh);
        if finishes {
            transcript.finish();
        }
        let empty = choice.is_some() && fresh.is_empty() && !finishes && view.usage.is_none();
        if trimmed && empty && only_text_delta(data) {
            return Spliced::Drop;
        }
        if !(trimmed || has_role || id_differs) {
            return Spliced::Pass;
        }
        match self.rewrite(data, trimmed.then_some(fresh)) {
            Some(frame) => Spliced::Rewrite(frame),
            None => self.diverged(transcript, "sent an event that could not be rewritten"),
        }
    }

    fn diverged(&self, transcript: &Transcript, why: &str) -> Spliced {
        let how = match self.how {
            How::Prefill => "the continuation",
            How::Replay => "the replay",
        };
        Spliced::Diverged(format!("{how} {why} (after {})", self.progress(transcript)))
    }

    /// `data` with our `id`, no `role`, and (when given) `content` in place of its own.
    fn rewrite(&self, data: &[u8], content: Option<&str>) -> Option<Bytes> {
        let mut value: Value = serde_json::from_slice(data).ok()?;
        let chunk = value.as_object_mut()?;
        if let (Some(id), Some(slot)) = (&self.id, chunk.get_mut("id")) {
            *slot = Value::String(id.clone());
        }
        if let Some(delta) = chunk
            .get_mut("choices")
            .and_then(Value::as_array_mut)
            .and_then(|c| c.first_mut())
            .and_then(Value::as_object_mut)
            .and_then(|c| c.get_mut("delta"))
            .and_then(Value::as_object_mut)
        {
            delta.remove("role");
            if let Some(content) = content {
                set_content(delta, content);
            }
        }
        Some(json_frame(&value))
    }
}

fn set_content(delta: &mut Map<String, Value>, content: &str) {
    if content.is_empty() {
        delta.remove("content");
    } else {
        delta.insert("content".to_owned(), Value::String(content.to_owned()));
    }
}

/// Whether the first choice's delta holds nothing but `role` and `content` (so a chunk whose
/// content was swallowed carries nothing else the caller would miss).
fn only_text_delta(data: &[u8]) -> bool {
    first_delta(data).is_some_and(|d| {
        d.iter()
            .all(|(k, v)| k == "role" || k == "content" || v.is_null())
    })
}

fn first_delta(data: &[u8]) -> Option<Map<String, Value>> {
    let mut value: Value = serde_json::from_slice(data).ok()?;
    let choice = value
        .get_mut("choices")?
        .as_array_mut()?
        .first_mut()?
        .as_object_mut()?;
    match choice.remove("delta")? {
        Value::Object(delta) => Some(delta),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn chunk(id: &str, content: &str, finish: Option<&str>, role: bool) -> Vec<u8> {
        let mut delta = json!({ "content": content });
        if role {
            delta["role"] = json!("assistant");
        }
        json!({
            "id": id, "object": "chat.completion.chunk", "model": "m",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }]
        })
        .to_string()
        .into_bytes()
    }

    /// The content a handed-on event carries.
    fn content_of(spliced: &Spliced, original: &[u8]) -> Option<String> {
        let data = match spliced {
            Spliced::Pass => original.to_vec(),
            Spliced::Rewrite(frame) => frame
                .strip_prefix(b"data: ")
                .and_then(|d| d.strip_suffix(b"\n\n"))
                .unwrap()
                .to_vec(),
            Spliced::Drop | Spliced::Diverged(_) => return None,
        };
        let value: Value = serde_json::from_slice(&data).unwrap();
        Some(
            value["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    }

    /// Split `text` into pieces at the given char-boundary cut points.
    fn split(text: &str, cuts: &[usize]) -> Vec<String> {
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|c| c % (text.len() + 1))
            .filter(|c| text.is_char_boundary(*c))
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut pieces = Vec::new();
        let mut at = 0;
        for p in points {
            pieces.push(text[at..p].to_owned());
            at = p;
        }
        pieces.push(text[at..].to_owned());
        pieces
    }

    /// The first stream sends `first[..cut]`, then the continuation (`how`) sends `second`; the
    /// text the caller ends up with, or why it diverged.
    fn run(first: &[String], cut: usize, how: How, second: &[String]) -> Result<String, String> {
        let mut transcript = Transcript::new(1 << 20);
        let mut received = String::new();
        for (i, piece) in first.iter().take(cut).enumerate() {
            transcript.observe(&chunk("first", piece, None, i == 0));
            received.push_str(piece);
        }
        let mut splice = Splice::new(how, &transcript);
        for (i, piece) in second.iter().enumerate() {
            let data = chunk("second", piece, None, i == 0);
            let out = splice.event(&data, &mut transcript);
            if let Spliced::Diverged(why) = out {
                return Err(why);
            }
            if let Some(content) = content_of(&out, &data) {
                received.push_str(&content);
            }
        }
        let finish = chunk("second", "", Some("stop"), false);
        if let Spliced::Diverged(why) = splice.event(&finish, &mut transcript) {
            return Err(why);
        }
        assert_eq!(
            transcript.text(),
            received,
            "the transcript follows what was handed on"
        );
        Ok(received)
    }

    proptest! {
        /// For every split of an answer into chunks (differently in the two streams) and every
        /// cut point, prefill and replay reproduce the answer exactly.
        #[test]
        fn splicing_reproduces_the_answer(
            answer in "\\PC{0,80}",
            first_cuts in proptest::collection::vec(any::<usize>(), 0..12),
            second_cuts in proptest::collection::vec(any::<usize>(), 0..12),
            cut in any::<usize>(),
        ) {
            let first = split(&answer, &first_cuts);
            let cut = cut % (first.len() + 1);
            let sent: String = first.iter().take(cut).map(String::as_str).collect();
            let replayed = split(&answer, &second_cuts);
            prop_assert_eq!(run(&first, cut, How::Replay, &replayed), Ok(answer.clone()));
            let rest = split(&answer[sent.len()..], &second_cuts);
            prop_assert_eq!(run(&first, cut, How::Prefill, &rest), Ok(answer.clone()));
        }

        /// A replay whose text differs from what was sent never hands on a byte of it.
        #[test]
        fn a_diverging_replay_hands_on_nothing(
            answer in "[a-z ]{2,40}",
            other in "[a-z ]{2,40}",
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let first = split(&answer, &cuts);
            let cut = first.len();
            prop_assume!(!other.starts_with(&answer));
            let second = split(&other, &cuts);
            let result = run(&first, cut, How::Replay, &second);
            prop_assert!(result.is_err(), "{:?}", result);
        }
    }

    #[test]
    fn keeps_the_first_id_and_drops_the_role() {
        let mut transcript = Transcript::new(1024);
        transcript.observe(&chunk("chatcmpl-first", "Hel", None, true));
        let mut splice = Splice::new(How::Prefill, &transcript);
        let data = chunk("chatcmpl-second", "lo", None, true);
        let Spliced::Rewrite(frame) = splice.event(&data, &mut transcript) else {
            panic!("rewritten");
        };
        let value: Value = serde_json::from_slice(&frame[6..frame.len() - 2]).unwrap();
        assert_eq!(value["id"], "chatcmpl-first");
        assert_eq!(value["model"], "m");
        assert_eq!(value["choices"][0]["delta"], json!({ "content": "lo" }));
        // Same id, no role: handed on as it came.
        let data = chunk("chatcmpl-first", "!", None, false);
        assert_eq!(splice.event(&data, &mut transcript), Spliced::Pass);
        assert_eq!(transcript.text(), "Hello!");
    }

    #[test]
    fn replay_swallows_then_forwards_and_reports_divergence() {
        let mut transcript = Transcript::new(1024);
        transcript.observe(&chunk("a", "Hello wor", None, true));
        let mut splice = Splice::new(How::Replay, &transcript);
        assert_eq!(
            splice.event(&chunk("b", "Hel", None, true), &mut transcript),
            Spliced::Drop
        );
        let out = splice.event(&chunk("b", "lo world", None, false), &mut transcript);
        assert_eq!(content_of(&out, b"").as_deref(), Some("ld"));
        assert!(!splice.swallowing());

        let mut transcript = Transcript::new(1024);
        transcript.observe(&chunk("a", "Hello wor", None, true));
        let mut splice = Splice::new(How::Replay, &transcript);
        assert_eq!(
            splice.event(&chunk("b", "Hello", None, true), &mut transcript),
            Spliced::Drop
        );
        let Spliced::Diverged(why) =
            splice.event(&chunk("b", " there", None, false), &mut transcript)
        else {
            panic!("diverged");
        };
        assert_eq!(
            why,
            "the replay answered differently (after 5 of the 9 characters already sent)"
        );
        let mut splice = Splice::new(How::Replay, &transcript);
        let Spliced::Diverged(why) =
            splice.event(&chunk("b", "Hello", Some("stop"), true), &mut transcript)
        else {
            panic!("diverged");
        };
        assert!(
            why.starts_with("the replay finished before reproducing the text"),
            "{why}"
        );
        // Tool calls in a continuation cannot be spliced.
        let mut splice = Splice::new(How::Prefill, &transcript);
        let tool = br#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]}"#;
        assert!(matches!(
            splice.event(tool, &mut transcript),
            Spliced::Diverged(_)
        ));
    }

    #[test]
    fn a_swallowed_chunk_with_usage_or_finish_is_kept() {
        let mut transcript = Transcript::new(1024);
        transcript.observe(&chunk("a", "Hi", None, true));
        let mut splice = Splice::new(How::Replay, &transcript);
        let data = br#"{"id":"b","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}],"usage":{"total_tokens":3}}"#;
        let Spliced::Rewrite(frame) = splice.event(data, &mut transcript) else {
            panic!("rewritten");
        };
        let value: Value = serde_json::from_slice(&frame[6..frame.len() - 2]).unwrap();
        assert_eq!(value["id"], "a");
        assert_eq!(value["choices"][0]["delta"], json!({}));
        assert_eq!(value["choices"][0]["finish_reason"], "stop");
        assert_eq!(value["usage"]["total_tokens"], 3);
        assert!(transcript.finished());
    }
}
