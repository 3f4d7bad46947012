//! Surgical edits of a JSON object's top-level members.
//!
//! Rewriting a request for another target touches at most a few top-level members (`model`,
//! `max_tokens`, `temperature`). Parsing into a `serde_json::Value` would reorder keys (the
//! workspace does not enable `preserve_order`) and allocate for every string; instead this module
//! finds the byte spans of the wanted members in one pass and splices replacements in, leaving
//! every other byte of the body exactly as the caller sent it.

use std::borrow::Cow;
use std::ops::Range;

/// The spans of up to `N` wanted top-level members of a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Members<const N: usize> {
    /// Index of the opening `{`.
    pub(crate) open: usize,
    /// Whether the object has no members at all.
    pub(crate) empty: bool,
    /// For each wanted key, the span of its value (the last occurrence wins, as in serde_json).
    pub(crate) values: [Option<Range<usize>>; N],
}

/// Scan `json` (a JSON object) for the top-level members named in `keys`.
///
/// Returns `None` when `json` is not a well-formed object at the top level (the caller then
/// leaves the body alone). Nested values are skipped structurally (strings, brackets); scalars
/// are not validated beyond their extent, which is all a splice needs.
pub(crate) fn find_members<const N: usize>(json: &[u8], keys: [&str; N]) -> Option<Members<N>> {
    let mut pos = skip_ws(json, 0);
    if json.get(pos) != Some(&b'{') {
        return None;
    }
    let open = pos;
    pos += 1;
    let mut values: [Option<Range<usize>>; N] = std::array::from_fn(|_| None);
    let mut empty = true;
    pos = skip_ws(json, pos);
    if json.get(pos) == Some(&b'}') {
        return end_of_document(json, pos + 1).then_some(Members {
            open,
            empty,
            values,
        });
    }
    loop {
        empty = false;
        pos = skip_ws(json, pos);
        if json.get(pos) != Some(&b'"') {
            return None;
        }
        let key_start = pos + 1;
        let (key_end, escaped) = string_end(json, pos)?;
        let raw_key = json.get(key_start..key_end - 1)?;
        pos = skip_ws(json, key_end);
        if json.get(pos) != Some(&b':') {
            return None;
        }
        pos = skip_ws(json, pos + 1);
        let value_start = pos;
        let value_end = value_end(json, pos)?;
        for (slot, key) in values.iter_mut().zip(keys.iter()) {
            if key_matches(raw_key, escaped, key) {
                *slot = Some(value_start..value_end);
            }
        }
        pos = skip_ws(json, value_end);
        match json.get(pos) {
            Some(b',') => pos += 1,
            Some(b'}') => {
                return end_of_document(json, pos + 1).then_some(Members {
                    open,
                    empty,
                    values,
                });
            }
            _ => return None,
        }
    }
}

fn end_of_document(json: &[u8], pos: usize) -> bool {
    skip_ws(json, pos) == json.len()
}

fn key_matches(raw: &[u8], escaped: bool, key: &str) -> bool {
    if !escaped {
        return raw == key.as_bytes();
    }
    // Rare: an escaped key (`"mod\u0065l"`). Decode it properly.
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted).is_ok_and(|k| k == key)
}

fn skip_ws(json: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = json.get(pos) {
        pos += 1;
    }
    pos
}

/// `json[start]` is `"`: the index just past the closing quote, and whether any escape occurred.
fn string_end(json: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut pos = start + 1;
    let mut escaped = false;
    loop {
        match json.get(pos)? {
            b'"' => return Some((pos + 1, escaped)),
            b'\\' => {
                escaped = true;
                // The escaped character is skipped whatever it is; `\u` digits are plain bytes.
                pos += 2;
            }
            c if *c < 0x20 => return None,
            _ => pos += 1,
        }
    }
}

/// The index just past the value starting at `json[start]`.
fn value_end(json: &[u8], start: usize) -> Option<usize> {
    match json.get(start)? {
        b'"' => string_end(json, start).map(|(end, _)| end),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut pos = start;
            loop {
                match json.get(pos)? {
                    b'"' => {
                        pos = string_end(json, pos)?.0;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(pos + 1);
                        }
                    }
                    _ => {}
                }
                pos += 1;
            }
        }
        _ => {
            let mut pos = start;
            while let Some(c) = json.get(pos) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                pos += 1;
            }
            (pos > start).then_some(pos)
        }
    }
}

/// Whether the top-level member `key` of the JSON object `body` is `true` (`"stream": true`).
pub(crate) fn member_is_true(body: &[u8], key: &str) -> bool {
    find_members(body, [key])
        .and_then(|m| m.values.into_iter().next().flatten())
        .and_then(|span| body.get(span))
        == Some(&b"true"[..])
}

/// One splice: replace `span` of the source with `bytes` (an empty span inserts).
#[derive(Debug)]
pub(crate) struct Splice<'a> {
    pub(crate) span: Range<usize>,
    pub(crate) bytes: Cow<'a, [u8]>,
}

/// Apply non-overlapping `splices` (in any order; `None`s are ignored) to `src`. One allocation,
/// of exactly the output's size (so `Bytes::from` keeps it without another).
pub(crate) fn apply(src: &[u8], splices: &mut [Option<Splice<'_>>]) -> Vec<u8> {
    splices.sort_by_key(|s| s.as_ref().map_or(usize::MAX, |s| s.span.start));
    let added: usize = splices.iter().flatten().map(|s| s.bytes.len()).sum();
    let removed: usize = splices.iter().flatten().map(|s| s.span.len()).sum();
    let mut out = Vec::with_capacity((src.len() + added).saturating_sub(removed));
    let mut at = 0;
    for splice in splices.iter().flatten() {
        if let Some(chunk) = src.get(at..splice.span.start) {
            out.extend_from_slice(chunk);
        }
        out.extend_from_slice(&splice.bytes);
        at = splice.span.end.max(at);
    }
    if let Some(rest) = src.get(at..) {
        out.extend_from_slice(rest);
    }
    out
}

/// `value` encoded as a JSON string literal (with quotes).
pub(crate) fn encode_string(value: &str) -> Vec<u8> {
    // Serializing a &str cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn span<'a>(json: &'a str, range: &Option<Range<usize>>) -> Option<&'a str> {
        range.clone().map(|r| &json[r])
    }

    #[test]
    fn finds_top_level_members_only() {
        let json = r#" { "messages": [{"role":"user","content":"model: x, \"model\""}],
            "model" : "gpt-4o", "nested": {"model": "inner"}, "max_tokens": 512 , "t":true} "#;
        let m = find_members(json.as_bytes(), ["model", "max_tokens", "temperature"]).unwrap();
        assert_eq!(span(json, &m.values[0]), Some(r#""gpt-4o""#));
        assert_eq!(span(json, &m.values[1]), Some("512"));
        assert_eq!(m.values[2], None);
        assert!(!m.empty);
    }

    #[test]
    fn empty_object_and_rejections() {
        let m = find_members(b"{ }", ["model"]).unwrap();
        assert!(m.empty);
        assert_eq!(m.open, 0);
        for bad in [
            &b"[]"[..],
            b"",
            b"{",
            b"{\"a\" 1}",
            b"{\"a\":1,}",
            b"{\"a\":1} x",
            b"{\"a\":}",
        ] {
            assert!(
                find_members(bad, ["a"]).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn escaped_keys_are_decoded() {
        let json = r#"{"mod\u0065l":"a"}"#;
        let m = find_members(json.as_bytes(), ["model"]).unwrap();
        assert_eq!(span(json, &m.values[0]), Some(r#""a""#));
    }

    #[test]
    fn member_is_true_reads_top_level_booleans() {
        assert!(member_is_true(br#"{"a":1,"stream": true}"#, "stream"));
        assert!(!member_is_true(br#"{"stream":false}"#, "stream"));
        assert!(!member_is_true(br#"{"x":{"stream":true}}"#, "stream"));
        assert!(!member_is_true(b"garbage", "stream"));
    }

    #[test]
    fn splices_apply_in_order() {
        let src = b"0123456789";
        let out = apply(
            src,
            &mut [
                Some(Splice {
                    span: 8..9,
                    bytes: Cow::Borrowed(b"X"),
                }),
                None,
                Some(Splice {
                    span: 1..1,
                    bytes: Cow::Borrowed(b"ins"),
                }),
            ],
        );
        assert_eq!(out, b"0ins1234567X9");
        assert_eq!(out.capacity(), out.len());
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        // Every top-level member the scanner reports is the exact serialization of that member.
        #[test]
        fn agrees_with_serde_json(
            map in prop::collection::btree_map("[a-z]{1,3}|model", json_value(), 0..6),
            pretty in any::<bool>(),
        ) {
            let object = serde_json::Value::Object(map.clone().into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&object).unwrap()
            } else {
                serde_json::to_string(&object).unwrap()
            };
            let found = find_members(text.as_bytes(), ["model", "a", "b"]).unwrap();
            for (key, range) in ["model", "a", "b"].iter().zip(found.values.iter()) {
                match (map.get(*key), range) {
                    (Some(v), Some(r)) => {
                        let parsed: serde_json::Value = serde_json::from_str(&text[r.clone()]).unwrap();
                        prop_assert_eq!(&parsed, v);
                    }
                    (None, None) => {}
                    (expected, got) => prop_assert!(false, "{key}: {expected:?} vs {got:?}"),
                }
            }
            prop_assert_eq!(found.empty, map.is_empty());
        }

        // Arbitrary bytes never panic the scanner.
        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = find_members(&bytes, ["model"]);
        }
    }
}
