//! Reading the real token use of a call from its response, to correct the token budget.
//!
//! [`Usage::from_json`] reads one JSON document: OpenAI's and Groq's `usage` (`total_tokens`, or
//! `prompt_tokens` + `completion_tokens`), Anthropic's `usage` (`input_tokens` + `output_tokens`,
//! also inside `message` in a streamed `message_start` event) and Gemini's `usageMetadata`.
//! [`Usage::merge`] combines the partial counts a stream reports in several events.
//!
//! ```
//! use tower_llm_bulkhead::usage::Usage;
//!
//! let openai = br#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#;
//! assert_eq!(Usage::from_json(openai).and_then(|u| u.total()), Some(42));
//!
//! // Anthropic streams input tokens first and output tokens last.
//! let start = br#"{"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}"#;
//! let delta = br#"{"type":"message_delta","usage":{"output_tokens":15}}"#;
//! let usage = Usage::from_json(start).unwrap().merge(Usage::from_json(delta).unwrap());
//! assert_eq!(usage.total(), Some(40));
//! ```

use bytes::Buf;
use serde::Deserialize;
use tower_llm_core::content_type::{is_json, is_media_type};

/// Token counts a response reported (each part when it was given).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Total tokens, when reported as such.
    pub total: Option<u64>,
    /// Prompt (input) tokens.
    pub input: Option<u64>,
    /// Completion (output) tokens.
    pub output: Option<u64>,
}

impl Usage {
    /// The usage in one JSON document, or `None` when it has none.
    pub fn from_json(json: &[u8]) -> Option<Usage> {
        // Most bodies and events carry no usage: skip them without parsing (and without
        // allocating a parse error).
        if !contains(json, b"sage") {
            return None;
        }
        let envelope: Envelope = serde_json::from_slice(json).ok()?;
        let usage = envelope
            .usage
            .or(envelope.message.and_then(|m| m.usage))
            .map(|u| Usage {
                total: u.total_tokens,
                input: u.prompt_tokens.or(u.input_tokens),
                output: u.completion_tokens.or(u.output_tokens),
            })
            .or(envelope.usage_metadata.map(|g| Usage {
                total: g.total_token_count,
                input: g.prompt_token_count,
                output: g.candidates_token_count,
            }))?;
        (usage != Usage::default()).then_some(usage)
    }

    /// Combine counts reported in several events of one stream: each part keeps its largest
    /// value (streams report running totals).
    pub fn merge(self, later: Usage) -> Usage {
        fn max(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        }
        Usage {
            total: max(self.total, later.total),
            input: max(self.input, later.input),
            output: max(self.output, later.output),
        }
    }

    /// The total: as reported, else input plus output.
    pub fn total(&self) -> Option<u64> {
        match (self.total, self.input, self.output) {
            (Some(total), _, _) => Some(total),
            (None, None, None) => None,
            (None, input, output) => Some(input.unwrap_or(0).saturating_add(output.unwrap_or(0))),
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    usage: Option<WireUsage>,
    message: Option<Message>,
    #[serde(rename = "usageMetadata")]
    usage_metadata: Option<GeminiUsage>,
}

#[derive(Deserialize)]
struct Message {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireUsage {
    total_tokens: Option<u64>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    total_token_count: Option<u64>,
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
}

/// Largest JSON response body buffered to read its usage; a larger body keeps its estimate.
pub(crate) const MAX_JSON_BODY: usize = 1024 * 1024;
/// Longest SSE line considered; a longer line is skipped.
pub(crate) const MAX_SSE_LINE: usize = 256 * 1024;

/// Watches a response body go by and picks up its usage.
pub(crate) enum UsageScanner {
    /// A JSON body: collected (up to [`MAX_JSON_BODY`]) and parsed at its end.
    Json { body: Vec<u8>, overflowed: bool },
    /// An SSE stream: each `data:` line that mentions `usage` is parsed as it completes.
    Sse {
        line: Vec<u8>,
        overlong: bool,
        seen: Option<Usage>,
    },
}

impl UsageScanner {
    /// A scanner for a body of this content type, or `None` when the content type carries no
    /// usage this crate can read.
    pub(crate) fn for_content_type(content_type: Option<&http::HeaderValue>) -> Option<Self> {
        match content_type {
            None => Some(Self::json()),
            Some(value) if is_media_type(value, "text/event-stream") => Some(UsageScanner::Sse {
                line: Vec::new(),
                overlong: false,
                seen: None,
            }),
            Some(value) if is_json(value) => Some(Self::json()),
            Some(_) => None,
        }
    }

    fn json() -> Self {
        UsageScanner::Json {
            body: Vec::new(),
            overflowed: false,
        }
    }

    /// Feed the next data frame.
    pub(crate) fn feed(&mut self, data: &impl Buf) {
        let mut slices = [std::io::IoSlice::new(&[]); 16];
        let n = data.chunks_vectored(&mut slices);
        let mut fed = 0usize;
        for slice in slices.iter().take(n) {
            self.feed_bytes(slice);
            fed += slice.len();
        }
        if fed < data.remaining() {
            // More chunks than slices: this frame cannot be read whole; give up on it.
            self.poison();
        }
    }

    fn poison(&mut self) {
        match self {
            UsageScanner::Json { body, overflowed } => {
                *overflowed = true;
                *body = Vec::new();
            }
            UsageScanner::Sse { line, overlong, .. } => {
                *overlong = true;
                line.clear();
            }
        }
    }

    fn feed_bytes(&mut self, mut bytes: &[u8]) {
        match self {
            UsageScanner::Json { body, overflowed } => {
                if *overflowed {
                    return;
                }
                if body.len() + bytes.len() > MAX_JSON_BODY {
                    *overflowed = true;
                    *body = Vec::new();
                } else {
                    body.extend_from_slice(bytes);
                }
            }
            UsageScanner::Sse {
                line,
                overlong,
                seen,
            } => {
                while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
                    let (head, rest) = bytes.split_at(pos);
                    if !*overlong && line.len() + head.len() <= MAX_SSE_LINE {
                        line.extend_from_slice(head);
                        if let Some(usage) = sse_line_usage(line) {
                            *seen = Some(seen.map_or(usage, |s| s.merge(usage)));
                        }
                    }
                    line.clear();
                    *overlong = false;
                    bytes = rest.get(1..).unwrap_or_default();
                }
                if !*overlong {
                    if line.len() + bytes.len() > MAX_SSE_LINE {
                        *overlong = true;
                        line.clear();
                    } else {
                        line.extend_from_slice(bytes);
                    }
                }
            }
        }
    }

    /// Usage seen so far (SSE) — a stream may be dropped after its usage event.
    pub(crate) fn seen(&self) -> Option<Usage> {
        match self {
            UsageScanner::Json { .. } => None,
            UsageScanner::Sse { seen, .. } => *seen,
        }
    }

    /// The body ended: the usage it reported, if any.
    pub(crate) fn finish(&mut self) -> Option<Usage> {
        match self {
            UsageScanner::Json { body, overflowed } => {
                if *overflowed {
                    return None;
                }
                Usage::from_json(body)
            }
            UsageScanner::Sse {
                line,
                overlong,
                seen,
            } => {
                // A final line without its newline.
                if !*overlong {
                    if let Some(usage) = sse_line_usage(line) {
                        *seen = Some(seen.map_or(usage, |s| s.merge(usage)));
                    }
                }
                line.clear();
                *seen
            }
        }
    }
}

/// The usage on one SSE line, if it is a `data:` line reporting some.
fn sse_line_usage(line: &[u8]) -> Option<Usage> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let data = line.strip_prefix(b"data:")?;
    Usage::from_json(data.strip_prefix(b" ").unwrap_or(data))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn reads_every_provider_shape() {
        let cases: [(&[u8], Option<u64>); 7] = [
            (br#"{"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#, Some(7)),
            (br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#, Some(7)),
            (br#"{"usage":{"input_tokens":10,"output_tokens":5}}"#, Some(15)),
            (br#"{"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":3,"totalTokenCount":5}}"#, Some(5)),
            (br#"{"usage":null,"choices":[]}"#, None),
            (br#"{"choices":[]}"#, None),
            (b"garbage", None),
        ];
        for (json, total) in cases {
            assert_eq!(
                Usage::from_json(json).and_then(|u| u.total()),
                total,
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    fn scan(content_type: &str, frames: &[&str]) -> Option<u64> {
        let ct = http::HeaderValue::from_str(content_type).unwrap();
        let mut s = UsageScanner::for_content_type(Some(&ct))?;
        for f in frames {
            s.feed(&Bytes::copy_from_slice(f.as_bytes()));
        }
        s.finish().and_then(|u| u.total())
    }

    #[test]
    fn json_body_split_across_frames() {
        let frames = [r#"{"choices":[],"us"#, r#"age":{"total_tokens":"#, "99}}"];
        assert_eq!(scan("application/json; charset=utf-8", &frames), Some(99));
        assert_eq!(scan("text/plain", &frames), None);
    }

    #[test]
    fn sse_usage_in_the_final_chunk_split_across_frames() {
        let frames = [
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,",
            "\"completion_tokens\":6,\"total_tokens\":11}}\r\n\r\n",
            "data: [DONE]\n\n",
        ];
        assert_eq!(scan("text/event-stream", &frames), Some(11));
    }

    #[test]
    fn sse_anthropic_usage_is_merged() {
        let frames = [
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}",
        ];
        assert_eq!(scan("text/event-stream", &frames), Some(40));
    }

    #[test]
    fn oversized_json_keeps_the_estimate() {
        let ct = http::HeaderValue::from_static("application/json");
        let mut s = UsageScanner::for_content_type(Some(&ct)).unwrap();
        s.feed(&Bytes::from(vec![b' '; MAX_JSON_BODY]));
        s.feed(&Bytes::from_static(br#"{"usage":{"total_tokens":1}}"#));
        assert_eq!(s.finish(), None);
    }
}
