//! A hand-written scan of the commonest streamed event, a plain OpenAI chat completion chunk:
//! [`scan_plain_chunk`].
//!
//! Nearly every event of an OpenAI-compatible stream is a small JSON object such as
//! `{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,
//! "delta":{"content":"Hi"},"finish_reason":null}]}`. The stream guard ([`inspect_event`]) and
//! the fallback's resume watch each need a few fields of it; a general JSON deserializer costs
//! several thousand instructions per event for that. The scan reads exactly this shape in one
//! pass and gives up (`None`) on anything it is not sure to read as `serde_json` would: string
//! escapes, a number with an exponent, a duplicate key it reads, a field of an unexpected type,
//! another wire format's keys (`type`, `error`, `candidates`, ...), deep nesting, invalid UTF-8.
//! Callers then take their `serde_json` path, so the outcome is the same either way.
//!
//! [`inspect_event`]: super::inspect_event

use super::cursor::{json_scanner, JsonCursor};

/// The fields of a plain OpenAI chat completion chunk that the stream guard and the resume watch
/// read. Strings are borrowed from the event's data (the scan takes none with escapes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlainChunk<'a> {
    /// The chunk's `id` (`None` when absent or `null`).
    pub id: Option<&'a str>,
    /// How many elements `choices` has.
    pub choices: usize,
    /// The first element of `choices`.
    pub first: Option<PlainChoice<'a>>,
    /// Whether any choice has a non-empty `finish_reason`.
    pub finished: bool,
    /// Whether the chunk has a `usage` that is not `null`.
    pub usage: bool,
}

/// The first choice of a [`PlainChunk`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlainChoice<'a> {
    /// Its `index` (`None` when absent or `null`).
    pub index: Option<u64>,
    /// Its `finish_reason` (`None` when absent or `null`).
    pub finish_reason: Option<&'a str>,
    /// Whether it has a `logprobs` that is not `null`.
    pub logprobs: bool,
    /// Its `delta` (`None` when absent or `null`).
    pub delta: Option<PlainDelta<'a>>,
}

/// The `delta` of a [`PlainChoice`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlainDelta<'a> {
    /// Whether it has a `role` that is not `null`.
    pub role: bool,
    /// Its `content` (`None` when absent or `null`).
    pub content: Option<&'a str>,
    /// Whether it has a `tool_calls` that is not `null`.
    pub tool_calls: bool,
    /// Whether it has a `function_call` that is not `null`.
    pub function_call: bool,
    /// Whether it has an `audio` that is not `null`.
    pub audio: bool,
    /// Its `refusal` (`None` when absent or `null`).
    pub refusal: Option<&'a str>,
    /// Its `reasoning_content` (`None` when absent or `null`).
    pub reasoning_content: Option<&'a str>,
    /// Its `reasoning` (`None` when absent or `null`).
    pub reasoning: Option<&'a str>,
}

/// Deepest nesting the scan follows (`serde_json` allows 128; the scan gives up sooner).
const MAX_DEPTH: usize = 16;

/// `data` (one event's data) read as a plain OpenAI chat completion chunk: a JSON object with a
/// `choices` array of objects and no `type`, `error`, `delta`, `candidates`, `usageMetadata` or
/// `x_groq` key. `None` when it is not one, or when the scan is not sure it reads it as
/// `serde_json` would (escapes, exponents, duplicate keys, other wire formats' keys, deep nesting,
/// invalid UTF-8): the caller then parses it with `serde_json`.
///
/// ```
/// use tower_llm_core::sse::scan_plain_chunk;
///
/// let chunk = scan_plain_chunk(br#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#).unwrap();
/// assert_eq!(chunk.id, Some("c1"));
/// assert_eq!(chunk.first.unwrap().delta.unwrap().content, Some("Hi"));
/// assert!(!chunk.finished);
/// // Escapes are left to serde_json.
/// assert!(scan_plain_chunk(br#"{"choices":[{"delta":{"content":"a\nb"}}]}"#).is_none());
/// ```
pub fn scan_plain_chunk(data: &[u8]) -> Option<PlainChunk<'_>> {
    // Every string the scan reads is then a slice of this `str`.
    let text = std::str::from_utf8(data).ok()?;
    let mut s = Scanner(JsonCursor::new(text));
    // Returned as it came: unwrapping and wrapping the ~170-byte answer again copied it twice.
    let chunk = s.chunk();
    s.ws();
    if s.pos != data.len() {
        return None;
    }
    chunk
}

/// A value that is either absent/`null` or a string.
enum StrOrNull<'a> {
    Null,
    Str(&'a str),
}

json_scanner!(
    /// The scan of one chunk.
    Scanner
);

impl<'a> Scanner<'a> {
    /// A string without escapes or control characters, after whitespace; `None` otherwise.
    fn string(&mut self) -> Option<&'a str> {
        let (start, end) = self.string_span()?;
        // Both ends are next to an ASCII `"`: character boundaries.
        self.str_at(start, end)
    }

    /// Where the body of a string without escapes or control characters lies, after whitespace
    /// (the scanner then past its closing `"`); `None` otherwise.
    #[inline(always)]
    fn string_span(&mut self) -> Option<(usize, usize)> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.pos;
        let end = start + plain_string_len(self.data.get(start..)?)?;
        self.pos = end + 1;
        Some((start, end))
    }

    /// A member's key, as the bytes of its string: the keys are compared with ASCII names only,
    /// and the document was checked as UTF-8 whole, so no `str` is needed.
    fn key(&mut self) -> Option<&'a [u8]> {
        let (start, end) = self.string_span()?;
        self.data.get(start..end)
    }

    /// `null` or a string.
    fn str_or_null(&mut self) -> Option<StrOrNull<'a>> {
        self.ws();
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            Some(StrOrNull::Null)
        } else {
            self.string().map(StrOrNull::Str)
        }
    }

    /// Any JSON value, skipped; `Some(true)` when it was not `null`.
    fn skip(&mut self, depth: usize) -> Option<bool> {
        self.ws();
        match self.peek()? {
            b'n' => {
                self.literal(b"null")?;
                return Some(false);
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'"' => {
                self.string_span()?;
            }
            b'-' | b'0'..=b'9' => self.number()?,
            b'[' => {
                let depth = depth.checked_sub(1)?;
                self.pos += 1;
                if !self.eat(b']') {
                    loop {
                        self.skip(depth)?;
                        if !self.comma_or(b']')? {
                            break;
                        }
                    }
                }
            }
            b'{' => {
                let depth = depth.checked_sub(1)?;
                self.pos += 1;
                if !self.eat(b'}') {
                    loop {
                        self.string_span()?;
                        if !self.eat(b':') {
                            return None;
                        }
                        self.skip(depth)?;
                        if !self.comma_or(b'}')? {
                            break;
                        }
                    }
                }
            }
            _ => return None,
        }
        Some(true)
    }

    /// A number of JSON's grammar without an exponent, skipped.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        match self.peek() {
            Some(b'e' | b'E' | b'0'..=b'9') => None,
            _ => Some(()),
        }
    }

    /// `null` (`Some(None)`) or an unsigned integer that fits a `u64`.
    fn index(&mut self) -> Option<Option<u64>> {
        self.ws();
        match self.peek()? {
            b'n' => {
                self.literal(b"null")?;
                Some(None)
            }
            b'0' => {
                self.pos += 1;
                match self.peek() {
                    Some(b'0'..=b'9' | b'.' | b'e' | b'E') => None,
                    _ => Some(Some(0)),
                }
            }
            b'1'..=b'9' => {
                let mut n: u64 = 0;
                while let Some(b) = self.peek().filter(u8::is_ascii_digit) {
                    n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
                    self.pos += 1;
                }
                match self.peek() {
                    Some(b'.' | b'e' | b'E') => None,
                    _ => Some(Some(n)),
                }
            }
            _ => None,
        }
    }

    /// The members of an object, after its `{`: calls `member` with each key (the scanner is
    /// then before the value, which `member` must consume). Stops at the closing `}`.
    fn members(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.key()?;
            if !self.eat(b':') {
                return None;
            }
            member(self, key)?;
            if !self.comma_or(b'}')? {
                return Some(());
            }
        }
    }

    fn chunk(&mut self) -> Option<PlainChunk<'a>> {
        if !self.eat(b'{') {
            return None;
        }
        let mut chunk = PlainChunk::default();
        let (mut seen_id, mut seen_choices, mut seen_usage) = (false, false, false);
        self.members(|s, key| {
            match key {
                b"id" => {
                    once(&mut seen_id)?;
                    chunk.id = s.str_or_null()?.into_option();
                }
                b"choices" => {
                    once(&mut seen_choices)?;
                    s.choices(&mut chunk)?;
                }
                b"usage" => {
                    once(&mut seen_usage)?;
                    chunk.usage = s.skip(MAX_DEPTH)?;
                }
                // Fields another wire format (or an error) has: serde_json's path decides.
                b"type" | b"error" | b"delta" | b"candidates" | b"usageMetadata" | b"x_groq" => {
                    return None
                }
                _ => {
                    s.skip(MAX_DEPTH)?;
                }
            }
            Some(())
        })?;
        seen_choices.then_some(chunk)
    }

    /// The `choices` array, into `chunk`.
    fn choices(&mut self, chunk: &mut PlainChunk<'a>) -> Option<()> {
        if !self.eat(b'[') {
            return None;
        }
        if self.eat(b']') {
            return Some(());
        }
        loop {
            let choice = self.choice()?;
            chunk.finished |= choice.finish_reason.is_some_and(|r| !r.is_empty());
            if chunk.first.is_none() {
                chunk.first = Some(choice);
            }
            chunk.choices += 1;
            if !self.comma_or(b']')? {
                return Some(());
            }
        }
    }

    fn choice(&mut self) -> Option<PlainChoice<'a>> {
        if !self.eat(b'{') {
            return None;
        }
        let mut choice = PlainChoice::default();
        let mut seen = [false; 4];
        self.members(|s, key| {
            match key {
                b"index" => {
                    once(&mut seen[0])?;
                    choice.index = s.index()?;
                }
                b"delta" => {
                    once(&mut seen[1])?;
                    choice.delta = s.delta()?;
                }
                b"logprobs" => {
                    once(&mut seen[2])?;
                    choice.logprobs = s.skip(MAX_DEPTH)?;
                }
                b"finish_reason" => {
                    once(&mut seen[3])?;
                    choice.finish_reason = s.str_or_null()?.into_option();
                }
                // An alias serde_json's guard path reads and the watch's does not.
                b"finishReason" => return None,
                _ => {
                    s.skip(MAX_DEPTH)?;
                }
            }
            Some(())
        })?;
        Some(choice)
    }

    /// `null` (`Some(None)`) or a delta object.
    fn delta(&mut self) -> Option<Option<PlainDelta<'a>>> {
        self.ws();
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            return Some(None);
        }
        if !self.eat(b'{') {
            return None;
        }
        let mut delta = PlainDelta::default();
        let mut seen = [false; 8];
        self.members(|s, key| {
            match key {
                b"role" => {
                    once(&mut seen[0])?;
                    delta.role = s.skip(MAX_DEPTH)?;
                }
                b"content" => {
                    once(&mut seen[1])?;
                    delta.content = s.str_or_null()?.into_option();
                }
                b"tool_calls" => {
                    once(&mut seen[2])?;
                    delta.tool_calls = s.skip(MAX_DEPTH)?;
                }
                b"function_call" => {
                    once(&mut seen[3])?;
                    delta.function_call = s.skip(MAX_DEPTH)?;
                }
                b"audio" => {
                    once(&mut seen[4])?;
                    delta.audio = s.skip(MAX_DEPTH)?;
                }
                b"refusal" => {
                    once(&mut seen[5])?;
                    delta.refusal = s.str_or_null()?.into_option();
                }
                b"reasoning_content" => {
                    once(&mut seen[6])?;
                    delta.reasoning_content = s.str_or_null()?.into_option();
                }
                b"reasoning" => {
                    once(&mut seen[7])?;
                    delta.reasoning = s.str_or_null()?.into_option();
                }
                _ => {
                    s.skip(MAX_DEPTH)?;
                }
            }
            Some(())
        })?;
        Some(Some(delta))
    }
}

impl<'a> StrOrNull<'a> {
    fn into_option(self) -> Option<&'a str> {
        match self {
            StrOrNull::Null => None,
            StrOrNull::Str(s) => Some(s),
        }
    }
}

/// The length of a string's body: the index of the first `"` in `bytes`, or `None` when a `\\`
/// or a control character (below 0x20) comes first, or no `"` comes.
fn plain_string_len(bytes: &[u8]) -> Option<usize> {
    let at = string_stop(bytes)?;
    (bytes[at] == b'"').then_some(at)
}

/// The index of the first byte in `bytes` that stops a JSON string's plain run: a `"`, a `\\` or
/// a control character (below 0x20); `None` when there is none.
///
/// Most of an answer's bytes are in strings, so this is the scans' inner loop; byte at a time, a
/// 3 KB answer's content cost ~10,000 instructions (callgrind). Short strings (keys, ids, one
/// token's text) are read eight bytes at a time in a register (SWAR); past `SHORT` bytes,
/// `memchr2` finds the first `"` or `\\` with SIMD and one pass that compiles to vector `min`s
/// checks the run before it for a control character.
#[inline(always)]
pub(crate) fn string_stop(bytes: &[u8]) -> Option<usize> {
    /// Bytes read by words before the SIMD search takes over (its call and setup cost more
    /// than a few words).
    const SHORT: usize = 32;
    let mut offset = 0;
    while offset < SHORT {
        let Some(word) = bytes.get(offset..offset + 8) else {
            // Under a word left: byte at a time.
            let tail = &bytes[offset..];
            return tail.iter().position(|&b| stops(b)).map(|i| offset + i);
        };
        let hits = word_stops(word);
        if hits != 0 {
            // Little-endian: the lowest flagged byte is the first in memory.
            return Some(offset + (hits.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    let rest = &bytes[offset..];
    let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
    let run = &rest[..end];
    // A fold without an early exit, so that it vectorizes.
    if run.iter().fold(u8::MAX, |lowest, &b| lowest.min(b)) < 0x20 {
        return run.iter().position(|&b| b < 0x20).map(|i| offset + i);
    }
    (end < rest.len()).then_some(offset + end)
}

/// Whether `b` stops a JSON string's plain run.
fn stops(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// The high bit of each byte of an 8-byte `word` that [`stops`] a plain run; exact for the
/// lowest such byte (a byte above it may be flagged falsely, by the borrow, which a
/// lowest-first read never reaches).
fn word_stops(word: &[u8]) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    /// The high bit of each byte of `x` below `n` (n ≤ 0x80).
    const fn below(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES.wrapping_mul(n as u64)) & !x & HIGHS
    }
    let mut le = [0u8; 8];
    le.copy_from_slice(word);
    let w = u64::from_le_bytes(le);
    below(w ^ ONES.wrapping_mul(u64::from(b'"')), 1)
        | below(w ^ ONES.wrapping_mul(u64::from(b'\\')), 1)
        | below(w, 0x20)
}

/// `None` (give up) when the key was seen already: serde_json's derived structs reject a
/// duplicate field.
fn once(seen: &mut bool) -> Option<()> {
    if std::mem::replace(seen, true) {
        None
    } else {
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(s: &str) -> Option<PlainChunk<'_>> {
        scan_plain_chunk(s.as_bytes())
    }

    /// The byte-at-a-time reading `string_stop` must equal.
    fn string_stop_bytewise(bytes: &[u8]) -> Option<usize> {
        bytes
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
    }

    /// The byte-at-a-time reading `plain_string_len` must equal.
    fn plain_string_len_bytewise(bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'"' => return Some(i),
                b'\\' | 0..=0x1f => return None,
                _ => {}
            }
        }
        None
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        /// Any bytes, with the three kinds of stop byte and high bytes made common.
        #[test]
        fn the_fast_scan_reads_as_the_byte_scan(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<u8>(),
                    proptest::prelude::Just(b'"'),
                    proptest::prelude::Just(b'\\'),
                    0x00u8..0x20,
                    0x1fu8..0x24,
                    0x7fu8..=0xff,
                    proptest::prelude::Just(b'a'),
                ],
                0..80,
            ),
            prefix in 0usize..64,
        ) {
            // The prefix carries the stop bytes past the word-at-a-time part (32 bytes).
            let mut padded = vec![b'x'; prefix];
            padded.extend_from_slice(&bytes);
            proptest::prop_assert_eq!(string_stop(&padded), string_stop_bytewise(&padded));
            proptest::prop_assert_eq!(plain_string_len(&padded), plain_string_len_bytewise(&padded));
        }
    }

    #[test]
    fn the_fast_scan_finds_each_stop_byte_at_each_place() {
        for len in 0..48 {
            for at in 0..len {
                for stop in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = stop;
                    assert_eq!(string_stop(&bytes), Some(at), "{bytes:?}");
                    assert_eq!(
                        plain_string_len(&bytes),
                        plain_string_len_bytewise(&bytes),
                        "{bytes:?}"
                    );
                }
            }
            assert_eq!(string_stop(&vec![0xe9; len]), None);
        }
    }

    #[test]
    fn reads_an_ordinary_chunk() {
        let c = scan(r#" {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1712345678,"model":"gpt-4o","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":"Hé 😀"},"logprobs":null,"finish_reason":null}]}
"#).unwrap();
        assert_eq!(c.id, Some("chatcmpl-1"));
        assert_eq!(c.choices, 1);
        assert!(!c.finished && !c.usage);
        let first = c.first.unwrap();
        assert_eq!(first.index, Some(0));
        assert!(!first.logprobs);
        assert_eq!(first.finish_reason, None);
        assert_eq!(first.delta.unwrap().content, Some("Hé 😀"));
    }

    #[test]
    fn finish_usage_and_empty_choices() {
        let c =
            scan(r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":{"total_tokens":3}}"#)
                .unwrap();
        assert!(c.finished && c.usage);
        let c = scan(r#"{"choices":[{"finish_reason":""}],"usage":null}"#).unwrap();
        assert!(!c.finished && !c.usage);
        let c = scan(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#).unwrap();
        assert_eq!((c.choices, c.first, c.usage), (0, None, true));
        let c = scan(r#"{"choices":[{"index":0},{"index":1,"finish_reason":"length"}]}"#).unwrap();
        assert_eq!(c.choices, 2);
        assert!(c.finished);
    }

    #[test]
    fn delta_flags() {
        let c = scan(r#"{"choices":[{"delta":{"tool_calls":[{"id":"x"}],"function_call":null,"audio":{"a":1},"refusal":"no","reasoning":"","reasoning_content":null}}]}"#).unwrap();
        let d = c.first.unwrap().delta.unwrap();
        assert!(d.tool_calls && !d.function_call && d.audio);
        assert_eq!(
            (d.refusal, d.reasoning, d.reasoning_content),
            (Some("no"), Some(""), None)
        );
    }

    #[test]
    fn gives_up_when_unsure() {
        for s in [
            "",
            "[DONE]",
            "{}",
            r#"{"id":"x"}"#,
            r#"{"choices":null}"#,
            r#"{"choices":{}}"#,
            r#"{"choices":[1]}"#,
            r#"{"choices":[null]}"#,
            r#"{"choices":[],"type":"x"}"#,
            r#"{"choices":[],"error":null}"#,
            r#"{"choices":[],"delta":{}}"#,
            r#"{"choices":[],"candidates":[]}"#,
            r#"{"choices":[],"usageMetadata":{}}"#,
            r#"{"choices":[],"x_groq":{}}"#,
            r#"{"choices":[],"choices":[]}"#,
            r#"{"choices":[],"id":"a","id":"b"}"#,
            r#"{"choices":[],"id":1}"#,
            r#"{"choices":[{"finishReason":"STOP"}]}"#,
            r#"{"choices":[{"finish_reason":1}]}"#,
            r#"{"choices":[{"index":-0}]}"#,
            r#"{"choices":[{"index":01}]}"#,
            r#"{"choices":[{"index":1.0}]}"#,
            r#"{"choices":[{"index":1e0}]}"#,
            r#"{"choices":[{"index":18446744073709551616}]}"#,
            r#"{"choices":[{"delta":"x"}]}"#,
            r#"{"choices":[{"delta":{"content":1}}]}"#,
            r#"{"choices":[{"delta":{"role":"a","role":"b"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a\"b"}}]}"#,
            r#"{"choices":[],"m\u0061":1}"#,
            r#"{"choices":[],"n":1e5}"#,
            r#"{"choices":[],"n":01}"#,
            r#"{"choices":[],"n":1.}"#,
            r#"{"choices":[],"n":-}"#,
            r#"{"choices":[],"n":nul}"#,
            r#"{"choices":[],"n":tru}"#,
            "{\"choices\":[],\"n\":\"a\tb\"}",
            r#"{"choices":[]}x"#,
            r#"{"choices":[],}"#,
            r#"{"choices":[,]}"#,
            r#"{"choices":[]"#,
            "\x0c{\"choices\":[]}",
            r#"{"choices":[],"deep":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}"#,
        ] {
            assert_eq!(scan(s), None, "{s}");
        }
        assert_eq!(scan_plain_chunk(b"{\"choices\":[],\"x\":\"\xff\"}"), None);
    }

    #[test]
    fn accepts_what_serde_json_accepts_around_it() {
        for s in [
            " \t\r\n{ \"choices\" : [ ] } \n",
            r#"{"choices":[],"n":-0.5,"m":[true,false,null,{"a":[]}],"o":{}}"#,
            r#"{"choices":[{"index":18446744073709551615}]}"#,
            r#"{"choices":[{"index":null,"delta":null,"logprobs":null}]}"#,
        ] {
            assert!(scan(s).is_some(), "{s}");
        }
    }
}
