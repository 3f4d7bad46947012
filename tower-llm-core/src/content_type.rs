//! The media type of a `Content-Type` header, read from its bytes: no UTF-8 check, no
//! allocation. Every layer that tells a stream from a JSON answer asks here, so they agree.
//!
//! ```
//! use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
//! use tower_llm_core::content_type::{is_event_stream, is_json, media_type};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(CONTENT_TYPE, HeaderValue::from_static(" Text/Event-Stream; charset=utf-8"));
//! assert!(is_event_stream(&headers));
//! assert_eq!(media_type(&headers[CONTENT_TYPE]), b"Text/Event-Stream");
//!
//! assert!(is_json(&HeaderValue::from_static("application/problem+json")));
//! assert!(!is_json(&HeaderValue::from_static("text/plain")));
//! ```

use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};

/// The media type of a `Content-Type` value: the bytes before its first `;` (the parameters),
/// ASCII whitespace trimmed from both ends (RFC 9110, section 8.3.1). Media types compare
/// without regard to ASCII case.
pub fn media_type(value: &HeaderValue) -> &[u8] {
    let bytes = value.as_bytes();
    let end = bytes.iter().position(|&b| b == b';').unwrap_or(bytes.len());
    bytes[..end].trim_ascii()
}

/// Whether `value`'s media type is `expected` (a `type/subtype`), ignoring ASCII case and
/// parameters.
pub fn is_media_type(value: &HeaderValue, expected: &str) -> bool {
    // As `media_type(value) == expected`, without looking for the `;` first: most values
    // differ within `expected`'s length, or are shorter.
    let bytes = value.as_bytes().trim_ascii_start();
    let Some((head, rest)) = bytes.split_at_checked(expected.len()) else {
        return false;
    };
    head.eq_ignore_ascii_case(expected.as_bytes())
        && matches!(rest.trim_ascii_start().first(), None | Some(b';'))
}

/// Whether `headers` say `Content-Type: text/event-stream` (any case, any parameters).
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|value| is_media_type(value, "text/event-stream"))
}

/// Whether `value` is a JSON media type: `application/json`, or any type with the `+json`
/// structured syntax suffix (`application/problem+json`).
pub fn is_json(value: &HeaderValue) -> bool {
    let media = media_type(value);
    media.eq_ignore_ascii_case(b"application/json") || has_json_suffix(media)
}

/// Whether `name` ends with the `+json` structured syntax suffix, in any case.
fn has_json_suffix(name: &[u8]) -> bool {
    const SUFFIX: &[u8] = b"+json";
    name.len() >= SUFFIX.len() && name[name.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX)
}

/// Whether a `Content-Type` value names a JSON subtype, of any type: `json`
/// (`application/json`, `text/json`) or a `+json` suffix, any case, any parameters (the stream
/// guard's rule for a body it judges as JSON; [`is_json`] takes `application/json` only). Read from the bytes: a value that
/// is not visible ASCII (what `HeaderValue::to_str` takes) names none.
pub(crate) fn has_json_subtype(value: &HeaderValue) -> bool {
    // A `HeaderValue` holds no control byte but tab (its constructors check): visible ASCII
    // is ASCII.
    if !value.as_bytes().is_ascii() {
        return false;
    }
    let media = media_type(value);
    let subtype = media
        .iter()
        .position(|&b| b == b'/')
        .map_or(&[][..], |at| &media[at + 1..]);
    subtype.eq_ignore_ascii_case(b"json") || has_json_suffix(subtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reading the layers had before this module: the value as text, the part before `;`,
    /// trimmed, compared ignoring ASCII case.
    fn media_type_as_text(value: &HeaderValue) -> Option<String> {
        let text = value.to_str().ok()?;
        Some(
            text.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase(),
        )
    }

    #[test]
    fn reads_the_media_type() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(media_type(&v("text/event-stream")), b"text/event-stream");
        assert_eq!(
            media_type(&v("\ttext/event-stream ;charset=x")),
            b"text/event-stream"
        );
        assert_eq!(media_type(&v("")), b"");
        assert_eq!(media_type(&v(";a=b")), b"");
        assert!(is_media_type(&v("TEXT/EVENT-STREAM"), "text/event-stream"));
        // A longer type is another type, not a prefix match.
        assert!(!is_media_type(
            &v("text/event-streaming"),
            "text/event-stream"
        ));
        assert!(is_json(&v("Application/JSON; charset=utf-8")));
        assert!(is_json(&v("application/vnd.api+JSON")));
        assert!(!is_json(&v("+jsonx")));
        assert!(!is_json(&v("json")));
        let mut headers = HeaderMap::new();
        assert!(!is_event_stream(&headers));
        headers.insert(CONTENT_TYPE, v("application/json"));
        assert!(!is_event_stream(&headers));
    }

    /// Media types near the ones the layers look for, in any case, with whitespace and
    /// parameters around them.
    fn content_type() -> impl Strategy<Value = Vec<u8>> {
        let types = prop::sample::select(vec![
            "text/event-stream",
            "text/event-streaming",
            "text/event",
            "application/json",
            "application/jsonx",
            "application/problem+json",
            "+json",
            "json",
            "text/plain",
            "",
        ]);
        (
            "[ \t]{0,2}",
            types,
            any::<u32>(),
            "[ \t]{0,2}(;[a-z=+; ]{0,8})?",
        )
            .prop_map(|(lead, media, case, tail)| {
                let cased = media.bytes().enumerate().map(|(i, b)| {
                    if case >> (i % 32) & 1 == 1 {
                        b.to_ascii_uppercase()
                    } else {
                        b
                    }
                });
                lead.bytes().chain(cased).chain(tail.bytes()).collect()
            })
    }

    proptest! {
        /// On every value that is text, the byte reading agrees with the text reading.
        #[test]
        fn agrees_with_the_text_reading(
            raw in prop_oneof![
                content_type(),
                proptest::collection::vec(
                    prop::sample::select(b" \t;=+/-abcjnosxAEJNOSTX".to_vec()),
                    0..24,
                ),
            ],
        ) {
            let value = HeaderValue::from_bytes(&raw).unwrap();
            let text = media_type_as_text(&value).unwrap();
            prop_assert_eq!(media_type(&value).to_ascii_lowercase(), text.as_bytes());
            for expected in ["text/event-stream", "application/json", "text/event"] {
                prop_assert_eq!(is_media_type(&value, expected), text == expected);
            }
            prop_assert_eq!(
                is_json(&value),
                text == "application/json" || text.ends_with("+json")
            );
        }
    }
}
