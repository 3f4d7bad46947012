//! A hand-written pass over a JSON answer read whole: is it valid, does it carry an `error`
//! object, what `usage` and `model` does it report; and over a chat request's body, for its
//! `model` ([`scan_request_model`]). The same answers as the serde visitors of
//! [`whole`](super::whole) and [`usage`](super::usage), at a fraction of the cost, for the
//! documents it is sure to read as they do.
//!
//! The judge of a whole answer ran one `serde_json` pass with visitors that skip everything but
//! `error`, `usage` and `model`: about 5,600 instructions of the full stack's ~20,000 per call
//! (BENCHMARKS.md, issue 18). This scan validates and reads the same things in one pass over the
//! bytes, its strings skipped with SIMD (`memchr`), and gives up (`None`) on whatever it is not
//! sure to read as `serde_json` would: a top level that is not an object, `\u` escapes of lone
//! surrogates, numbers with an exponent, escaped keys where keys matter, deep nesting, invalid
//! UTF-8 (anywhere in an answer; in a request, where serde_json checks it: a top-level key or the
//! model). The judge then takes the serde path, so the outcome is the same either way; an invalid
//! document always goes there (its error message comes from `serde_json`).

use crate::sse::cursor::{json_scanner, JsonCursor};
use crate::sse::string_stop;

use super::usage::Usage;

/// What [`scan_whole`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WholeScan<'a> {
    /// A top-level `error` member that is an object or a non-empty string.
    pub(crate) error: bool,
    /// The merged counts of the top-level `usage` / `usageMetadata` members.
    pub(crate) usage: Option<Usage>,
    /// The last top-level `model` / `modelVersion` string.
    pub(crate) model: Option<&'a str>,
    /// Whether the object has a top-level `x_groq` member (skipped here; a stream chunk's
    /// reader looks for usage inside it).
    pub(crate) x_groq: bool,
}

/// Deepest nesting the scan follows (`serde_json` allows 128; the scan gives up sooner).
const MAX_DEPTH: usize = 64;

/// `data` read as a JSON object, with what the judge needs of it; `None` when the scan is not
/// sure to read it as `serde_json` would (the caller then takes the serde path).
pub(crate) fn scan_whole(data: &[u8]) -> Option<WholeScan<'_>> {
    // Every string the scan returns is a slice of this `str`.
    let text = std::str::from_utf8(data).ok()?;
    let mut s = Scanner(JsonCursor::new(text));
    let scan = s.top()?;
    s.ws();
    (s.pos == data.len()).then_some(scan)
}

/// `data` read as a chat request's JSON body, for its `model`: `Some(Some(model))` for an object
/// with one `model` member that is a string without escapes, `Some(None)` for an object with no
/// `model` or `model: null`, both as `serde_json` reads the body into an optional string field;
/// `None` when the scan is not sure (anything else, escapes in the model, `model` twice,
/// invalid or deeply nested JSON): the caller then takes the serde path.
pub(crate) fn scan_request_model(data: &[u8]) -> Option<Option<&str>> {
    // Not checked whole as UTF-8: serde_json checks the top-level keys and the model, which the
    // scan reads as `str`s, and not the strings it skips (the conversation, nearly all of it).
    let mut s = Scanner(JsonCursor::from_bytes(data));
    let model = s.request_model()?;
    s.ws();
    (s.pos == data.len()).then_some(model)
}

/// The length of the `\u` escape (or surrogate pair of escapes) at the start of `escape`, as
/// serde_json accepts it when it reads the string: four hex digits that are not a surrogate, or
/// a high surrogate's followed by a low surrogate's. `None` otherwise.
fn unicode_escape_len(escape: &[u8]) -> Option<usize> {
    let unit = |at: usize| -> Option<u16> {
        let hex = std::str::from_utf8(escape.get(at..at + 4)?).ok()?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u16::from_str_radix(hex, 16).ok()
    };
    match unit(2)? {
        0xD800..=0xDBFF => {
            if escape.get(6..8)? != b"\\u" {
                return None;
            }
            matches!(unit(8)?, 0xDC00..=0xDFFF).then_some(12)
        }
        0xDC00..=0xDFFF => None,
        _ => Some(6),
    }
}

/// A top-level key the judge cares about.
enum Key {
    Error,
    Usage,
    Model,
    XGroq,
    Other,
}

/// A key of a `usage` object.
enum CountKey {
    Input,
    Output,
    Other,
}

json_scanner!(
    /// The scan of a whole answer.
    Scanner
);

impl<'a> Scanner<'a> {
    /// A string (after whitespace), its escapes checked but its bytes not read as UTF-8 (as
    /// `serde_json` skips a string): the bounds of its body and whether it had escapes. `None`
    /// on a bad escape, a `\u` escape of a lone surrogate (serde_json rejects one where it reads
    /// the string, and the scan does not know which strings those are) or a control character.
    #[inline(always)]
    fn string_span(&mut self) -> Option<(usize, usize, bool)> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.pos;
        let mut escaped = false;
        loop {
            let at = self.pos + string_stop(self.data.get(self.pos..)?)?;
            match self.data[at] {
                b'"' => {
                    self.pos = at + 1;
                    return Some((start, at, escaped));
                }
                b'\\' => {
                    self.pos = match self.data.get(at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at + 2,
                        b'u' => at + unicode_escape_len(&self.data[at..])?,
                        _ => return None,
                    };
                    escaped = true;
                }
                _ => return None,
            }
        }
    }

    /// The top level of a request: `Some(model)` for an object whose one `model` member is a
    /// string without escapes, `Some(None)` for an object without one or with `model: null`;
    /// `None` (left to serde_json) for anything else, `model` twice included.
    fn request_model(&mut self) -> Option<Option<&'a str>> {
        if !self.eat(b'{') {
            return None;
        }
        let (mut model, mut seen) = (None, false);
        self.members(
            |s: &mut Self, is_model: bool| {
                if !is_model {
                    return s.skip(MAX_DEPTH);
                }
                if std::mem::replace(&mut seen, true) {
                    return None;
                }
                s.ws();
                if s.peek()? == b'n' {
                    s.literal(b"null")
                } else {
                    // The one string serde_json reads as a `str` besides the keys: checked here.
                    let (start, end, escaped) = s.string_span()?;
                    model = Some(std::str::from_utf8(&s.data[start..end]).ok()?);
                    (!escaped).then_some(())
                }
            },
            |s| {
                let (start, end, escaped) = s.string_span()?;
                let key = &s.data[start..end];
                // serde_json reads every top-level key as a `str`: one that is not UTF-8 is its
                // error to report. Keys are short and nearly always ASCII.
                let utf8 = key.is_ascii() || std::str::from_utf8(key).is_ok();
                (!escaped && utf8).then_some(key == b"model")
            },
        )?;
        Some(model)
    }

    /// A key without escapes, as the bytes of its body (`None` for one with escapes: keys that
    /// matter could hide behind them). The document was checked whole as UTF-8, so the key is
    /// compared as bytes, without reading it back as a `str` (a boundary check per key).
    #[inline(always)]
    fn plain_key(&mut self) -> Option<&'a [u8]> {
        let (start, end, escaped) = self.string_span()?;
        let data: &'a [u8] = self.data;
        (!escaped).then(|| &data[start..end])
    }

    /// A string without escapes (a value the judge reads), after whitespace.
    fn plain_string(&mut self) -> Option<&'a str> {
        match self.string_span()? {
            // Both ends are next to an ASCII `"`: character boundaries.
            (start, end, false) => self.str_at(start, end),
            (_, _, true) => None,
        }
    }

    /// A number of JSON's grammar without an exponent, skipped: `(negative, the bounds of its
    /// integer part, whether it had a fraction)`.
    #[inline(always)]
    fn number_span(&mut self) -> Option<(bool, usize, usize, bool)> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let start = self.pos;
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let end = self.pos;
        let mut fraction = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
            fraction = true;
        }
        // An exponent is left to serde_json; a digit here is a leading zero (`01`).
        if let Some(b'e' | b'E' | b'0'..=b'9') = self.peek() {
            return None;
        }
        Some((negative, start, end, fraction))
    }

    /// A number skipped (its value not computed: most numbers of an answer are not counts).
    fn skip_number(&mut self) -> Option<()> {
        self.number_span().map(drop)
    }

    /// A number of JSON's grammar without an exponent, skipped; `Some(Some(n))` for a
    /// non-negative integer that fits a `u64` (what serde_json hands a visitor as `u64`).
    fn number(&mut self) -> Option<Option<u64>> {
        let (negative, start, end, fraction) = self.number_span()?;
        if negative || fraction {
            return Some(None);
        }
        // Digits only: the value fails on overflow alone (serde_json then reads an `f64`).
        Some(self.data[start..end].iter().try_fold(0u64, |n, &digit| {
            n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        }))
    }

    /// Any JSON value, validated and skipped.
    fn skip(&mut self, depth: usize) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'"' => self.string_span().map(drop),
            b'-' | b'0'..=b'9' => self.skip_number(),
            b'[' => {
                let depth = depth.checked_sub(1)?;
                self.pos += 1;
                if self.eat(b']') {
                    return Some(());
                }
                loop {
                    self.skip(depth)?;
                    if !self.comma_or(b']')? {
                        return Some(());
                    }
                }
            }
            b'{' => {
                let depth = depth.checked_sub(1)?;
                self.pos += 1;
                self.members(|s, _| s.skip(depth), |s| s.string_span().map(drop))
            }
            _ => None,
        }
    }

    /// The members of an object, after its `{`: `key` reads each key, `value` is called with
    /// what it read (the scanner then before the value, which it must consume).
    fn members<K>(
        &mut self,
        mut value: impl FnMut(&mut Self, K) -> Option<()>,
        mut key: impl FnMut(&mut Self) -> Option<K>,
    ) -> Option<()> {
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let k = key(self)?;
            if !self.eat(b':') {
                return None;
            }
            value(self, k)?;
            if !self.comma_or(b'}')? {
                return Some(());
            }
        }
    }

    /// The top level: an object.
    fn top(&mut self) -> Option<WholeScan<'a>> {
        if !self.eat(b'{') {
            return None;
        }
        let mut scan = WholeScan::default();
        self.members(
            |s, key| {
                match key {
                    Key::Error => scan.error |= s.error_value()?,
                    Key::Usage => {
                        if let Some(found) = s.usage_value()? {
                            scan.usage.get_or_insert_with(Usage::default).merge(found);
                        }
                    }
                    Key::Model => {
                        s.ws();
                        if s.peek() == Some(b'"') {
                            scan.model = Some(s.plain_string()?);
                        } else {
                            s.skip(MAX_DEPTH)?;
                        }
                    }
                    Key::XGroq => {
                        scan.x_groq = true;
                        s.skip(MAX_DEPTH)?;
                    }
                    Key::Other => s.skip(MAX_DEPTH)?,
                }
                Some(())
            },
            |s| {
                Some(match s.plain_key()? {
                    b"error" => Key::Error,
                    b"usage" | b"usageMetadata" => Key::Usage,
                    b"model" | b"modelVersion" => Key::Model,
                    b"x_groq" => Key::XGroq,
                    _ => Key::Other,
                })
            },
        )?;
        Some(scan)
    }

    /// The value of `error`: an object or a non-empty string reports an error.
    fn error_value(&mut self) -> Option<bool> {
        self.ws();
        match self.peek()? {
            b'{' => self.skip(MAX_DEPTH).map(|()| true),
            // An escape is at least one character: a string with one is not empty.
            b'"' => self
                .string_span()
                .map(|(start, end, escaped)| escaped || end > start),
            _ => self.skip(MAX_DEPTH).map(|()| false),
        }
    }

    /// The value of `usage`: an object of counts (anything else `None`).
    fn usage_value(&mut self) -> Option<Option<Usage>> {
        self.ws();
        if self.peek()? != b'{' {
            return self.skip(MAX_DEPTH).map(|()| None);
        }
        self.pos += 1;
        let mut usage = Usage::default();
        self.members(
            |s, key| {
                match key {
                    CountKey::Input => usage.input = s.count()?.or(usage.input),
                    CountKey::Output => usage.output = s.count()?.or(usage.output),
                    CountKey::Other => s.skip(MAX_DEPTH)?,
                }
                Some(())
            },
            |s| {
                Some(match s.plain_key()? {
                    b"prompt_tokens" | b"input_tokens" | b"promptTokenCount" => CountKey::Input,
                    b"completion_tokens" | b"output_tokens" | b"candidatesTokenCount" => {
                        CountKey::Output
                    }
                    _ => CountKey::Other,
                })
            },
        )?;
        Some((!usage.is_empty()).then_some(usage))
    }

    /// One count: a non-negative integer, anything else `None`.
    fn count(&mut self) -> Option<Option<u64>> {
        self.ws();
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            _ => self.skip(MAX_DEPTH).map(|()| None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: Option<u64>, output: Option<u64>) -> Option<Usage> {
        Some(Usage { input, output })
    }

    #[test]
    fn reads_a_chat_completion_with_escapes_in_its_content() {
        let scan = scan_whole(br#"{"id":"chatcmpl-1","object":"chat.completion","created":1712345678,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Line one.\nLine \"two\" \\ \/ \t.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"fp_1"}"#).unwrap();
        assert_eq!(
            scan,
            WholeScan {
                error: false,
                usage: usage(Some(12), Some(7)),
                model: Some("gpt-4o-mini"),
                x_groq: false,
            }
        );
    }

    #[test]
    fn error_usage_and_model_rules() {
        // (document, error, usage, model)
        type Case = (&'static [u8], bool, Option<Usage>, Option<&'static str>);
        let cases: [Case; 9] = [
            (br#"{"error":{"message":"x"}}"#, true, None, None),
            (br#"{"error":"boom"}"#, true, None, None),
            (br#"{"error":"\n"}"#, true, None, None),
            (br#"{"error":""}"#, false, None, None),
            (br#"{"error":null,"output":[]}"#, false, None, None),
            (br#"{"error":[1],"model":7,"modelVersion":"g"}"#, false, None, Some("g")),
            (
                br#"{"usage":{"prompt_tokens":-1,"completion_tokens":1.5,"input_tokens":18446744073709551616}}"#,
                false,
                None,
                None,
            ),
            (
                br#"{"usage":{"prompt_tokens":2,"prompt_tokens":null},"usageMetadata":{"candidatesTokenCount":9}}"#,
                false,
                usage(Some(2), Some(9)),
                None,
            ),
            (
                br#"{"usage":[1],"usage":{"output_tokens":0}}"#,
                false,
                usage(None, Some(0)),
                None,
            ),
        ];
        for (data, error, want_usage, model) in cases {
            let scan =
                scan_whole(data).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(data)));
            assert_eq!(
                (scan.error, scan.usage, scan.model),
                (error, want_usage, model),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn a_request_s_skipped_strings_are_not_read_as_utf8() {
        // serde_json checks only what it reads as a `str` (the top-level keys, the model): the
        // scan does the same, so a conversation is not checked a second time.
        assert_eq!(
            scan_request_model(b"{\"model\":\"m\",\"messages\":[{\"content\":\"a\xff\"}]}"),
            Some(Some("m"))
        );
        assert_eq!(
            scan_request_model(b"{\"messages\":{\"\xc3\":\"\xe9\"},\"model\":\"m\"}"),
            Some(Some("m"))
        );
        assert_eq!(scan_request_model(b"{\"model\":\"\xff\"}"), None);
        assert_eq!(scan_request_model(b"{\"\xff\":1,\"model\":\"m\"}"), None);
    }

    #[test]
    fn gives_up_when_unsure() {
        for s in [
            "",
            "null",
            "[]",
            "\"x\"",
            "1",
            "{",
            "{}x",
            r#"{"a":1,}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\u12g4"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\x"}"#,
            "{\"a\":\"a\tb\"}",
            r#"{"a":1e5}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":nul}"#,
            r#"{"mod\nel":"x"}"#,
            r#"{"model":"a\nb"}"#,
            r#"{"usage":{"prompt\ttokens":1}}"#,
        ] {
            assert_eq!(scan_whole(s.as_bytes()), None, "{s}");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(70), "]".repeat(70));
        assert_eq!(scan_whole(deep.as_bytes()), None);
        assert_eq!(scan_whole(b"{\"a\":\"\xff\"}"), None);
    }
}
