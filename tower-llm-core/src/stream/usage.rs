//! Token usage read from an answer, for the token counters: the `usage` member of a JSON
//! completion or of a stream chunk, read with serde visitors that skip everything else (no
//! `Value` tree, nothing allocated).
//!
//! Names understood, in `usage` (OpenAI, Anthropic, most OpenAI-compatible servers),
//! `usageMetadata` (Gemini) and `x_groq.usage` (Groq's streams): `prompt_tokens` /
//! `input_tokens` / `promptTokenCount` for the input, `completion_tokens` / `output_tokens` /
//! `candidatesTokenCount` for the output. A count that is not a non-negative integer is left out;
//! a malformed `usage` never makes the answer invalid.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::whole_scan::scan_whole;

/// Tokens an answer reports (either may be missing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) input: Option<u64>,
    pub(crate) output: Option<u64>,
}

impl Usage {
    /// Counts of `later` replace those of `self` (a provider's later chunk holds the running
    /// total: Anthropic's `message_delta`).
    pub(crate) fn merge(&mut self, later: Usage) {
        if later.input.is_some() {
            self.input = later.input;
        }
        if later.output.is_some() {
            self.output = later.output;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.input.is_none() && self.output.is_none()
    }
}

/// The usage in one stream chunk's JSON data (`None`: none, or not JSON); its top-level `model`
/// is recorded on the current span.
pub(crate) fn of_event(data: &[u8]) -> Option<Usage> {
    // The common case: the hand-written scan reads it as the serde path would (Groq's
    // `x_groq.usage` and anything the scan is unsure of go to serde_json).
    if let Some(scan) = scan_whole(data).filter(|scan| !scan.x_groq) {
        if let Some(model) = scan.model {
            record_model(model);
        }
        return scan.usage.filter(|u| !u.is_empty());
    }
    of_event_serde(data)
}

/// [`of_event`] by `serde_json` alone.
pub(crate) fn of_event_serde(data: &[u8]) -> Option<Usage> {
    let mut de = serde_json::Deserializer::from_slice(data);
    EventUsage
        .deserialize(&mut de)
        .ok()
        .flatten()
        .filter(|u| !u.is_empty())
}

/// Record `usage` on the current span, for traces: the fallback chain's attempt span
/// (`gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`); nothing without a subscriber.
/// Recorded as `i64`: OpenTelemetry has no unsigned integers (tracing-opentelemetry would turn
/// a `u64` into a string).
pub(crate) fn record_on_span(usage: Usage) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    if let Some(input) = usage.input {
        span.record("gen_ai.usage.input_tokens", int(input));
    }
    if let Some(output) = usage.output {
        span.record("gen_ai.usage.output_tokens", int(output));
    }
}

/// A top-level member name the token counters care about.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Member {
    /// `usage` or `usageMetadata`.
    Usage,
    /// `model` (or Gemini's `modelVersion`): recorded on the current span as
    /// `gen_ai.response.model`.
    Model,
    /// `x_groq` (its `usage` member).
    XGroq,
    /// `error` (for the whole-body judge).
    Error,
    Other,
}

/// A map key, compared in place (not kept).
pub(crate) struct MemberKey;

impl<'de> DeserializeSeed<'de> for MemberKey {
    type Value = Member;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Member, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for MemberKey {
    type Value = Member;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Member, E> {
        Ok(match key {
            "usage" | "usageMetadata" => Member::Usage,
            "x_groq" => Member::XGroq,
            "model" | "modelVersion" => Member::Model,
            "error" => Member::Error,
            _ => Member::Other,
        })
    }
}

/// The top level of a stream chunk: its `usage`, `usageMetadata` or `x_groq.usage`.
struct EventUsage;

impl<'de> DeserializeSeed<'de> for EventUsage {
    type Value = Option<Usage>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventUsage {
    type Value = Option<Usage>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: Option<Usage> = None;
        while let Some(key) = map.next_key_seed(MemberKey)? {
            let usage = match key {
                Member::Usage => map.next_value_seed(UsageValue)?,
                // `x_groq` is an object holding `usage`: the same visitor finds it.
                Member::XGroq => map.next_value_seed(EventUsage)?,
                Member::Model => {
                    map.next_value_seed(ModelValue)?;
                    None
                }
                Member::Error | Member::Other => {
                    map.next_value::<IgnoredAny>()?;
                    None
                }
            };
            if let Some(usage) = usage {
                found.get_or_insert_with(Usage::default).merge(usage);
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Record the answer's `model` on the current span as `gen_ai.response.model` (nothing without
/// a subscriber).
pub(crate) fn record_model(model: &str) {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("gen_ai.response.model", model);
    }
}

/// The value of a top-level `model` member: a string is recorded on the current span as
/// `gen_ai.response.model` (borrowed, nothing allocated); any other value is skipped.
pub(crate) struct ModelValue;

impl<'de> DeserializeSeed<'de> for ModelValue {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ModelValue {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a model name")
    }

    fn visit_str<E: de::Error>(self, model: &str) -> Result<(), E> {
        record_model(model);
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// The value of a `usage` member: an object of counts (anything else: `None`).
pub(crate) struct UsageValue;

impl<'de> DeserializeSeed<'de> for UsageValue {
    type Value = Option<Usage>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Which count a member of `usage` is.
#[derive(Clone, Copy)]
enum CountKey {
    Input,
    Output,
    Other,
}

impl<'de> DeserializeSeed<'de> for CountKey {
    type Value = CountKey;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<CountKey, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for CountKey {
    type Value = CountKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<CountKey, E> {
        Ok(match key {
            "prompt_tokens" | "input_tokens" | "promptTokenCount" => CountKey::Input,
            "completion_tokens" | "output_tokens" | "candidatesTokenCount" => CountKey::Output,
            _ => CountKey::Other,
        })
    }
}

impl<'de> Visitor<'de> for UsageValue {
    type Value = Option<Usage>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a usage object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut usage = Usage::default();
        while let Some(key) = map.next_key_seed(CountKey::Other)? {
            match key {
                CountKey::Input => usage.input = map.next_value_seed(Count)?.or(usage.input),
                CountKey::Output => usage.output = map.next_value_seed(Count)?.or(usage.output),
                CountKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((!usage.is_empty()).then_some(usage))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// One count: a non-negative integer, anything else `None`.
struct Count;

impl<'de> DeserializeSeed<'de> for Count {
    type Value = Option<u64>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Count {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a token count")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).ok())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: Option<u64>, output: Option<u64>) -> Option<Usage> {
        Some(Usage { input, output })
    }

    #[test]
    fn reads_the_usage_of_each_provider_shape() {
        let cases: [(&[u8], Option<Usage>); 9] = [
            (
                br#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":25,"total_tokens":28}}"#,
                usage(Some(3), Some(25)),
            ),
            (
                br#"{"type":"message_delta","usage":{"output_tokens":15}}"#,
                usage(None, Some(15)),
            ),
            (
                br#"{"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":9}}"#,
                usage(Some(4), Some(9)),
            ),
            (
                br#"{"x_groq":{"id":"r","usage":{"prompt_tokens":1,"completion_tokens":2}}}"#,
                usage(Some(1), Some(2)),
            ),
            (br#"{"choices":[{"delta":{}}],"usage":null}"#, None),
            (br#"{"usage":{"prompt_tokens":-1,"completion_tokens":1.5}}"#, None),
            (br#"{"usage":{"prompt_tokens":"7"},"usage2":{}}"#, None),
            (b"[DONE]", None),
            (br#"{"usage":{"prompt_tokens":2,"nested":{"a":[1,2]}}}"#, usage(Some(2), None)),
        ];
        for (data, want) in cases {
            assert_eq!(of_event(data), want, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn a_later_count_replaces_an_earlier_one() {
        let mut total = Usage {
            input: Some(10),
            output: Some(1),
        };
        total.merge(Usage {
            input: None,
            output: Some(7),
        });
        assert_eq!(total.input, Some(10));
        assert_eq!(total.output, Some(7));
    }
}
