//! Reading a non-stream `2xx` answer whole, under the guard's time limits, before the response is
//! handed on: a body that stalls or breaks is then a failed attempt (retried or failed over)
//! rather than a hang or a broken `200` at the caller. A JSON answer read whole is judged too
//! ([`Check`]): garbled JSON, or a provider's error object sent with a `2xx`, fails the attempt.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::fmt;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::Body;
use pin_project::pin_project;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tokio::time::{Instant, Sleep};

use super::config::StreamLimits;
use super::engine::after;
use super::usage::{record_model, Member, MemberKey, ModelValue, Usage, UsageValue};
use super::whole_scan::scan_whole;
use crate::content_type::has_json_subtype;
use crate::provider::parse_error_slice;
use crate::{classify_error, BoxError, ClassifiedError, ErrorKind};

/// What reading produced.
pub(crate) enum Read<B> {
    /// The whole body, read to its end.
    Whole {
        data: Bytes,
        trailers: Option<Box<HeaderMap>>,
        /// The token usage a JSON answer reports.
        usage: Option<Usage>,
    },
    /// The body passed the cap: what was read, then the rest of the body, unguarded.
    OverCap { prefix: Bytes, rest: B },
}

/// The bytes read so far: one chunk is kept as it came (no copy); a second starts a buffer.
enum Buf {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Buf {
    fn push(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Buf::Empty) {
            Buf::Empty => Buf::One(data),
            Buf::One(first) => {
                let mut many = BytesMut::with_capacity(first.len() + data.len());
                many.extend_from_slice(&first);
                many.extend_from_slice(&data);
                Buf::Many(many)
            }
            Buf::Many(mut many) => {
                many.extend_from_slice(&data);
                Buf::Many(many)
            }
        };
    }

    fn take(&mut self) -> Bytes {
        match std::mem::replace(self, Buf::Empty) {
            Buf::Empty => Bytes::new(),
            Buf::One(bytes) => bytes,
            Buf::Many(many) => many.freeze(),
        }
    }
}

/// Reads one body whole: time to the first byte against `ttft`, silence between chunks against
/// `idle`, the whole read against `total` (all from the call). Dropping it drops the body.
#[pin_project]
pub(crate) struct WholeRead<B> {
    /// The timer for `deadline`, created the first time the body has to be waited for: a body
    /// that is there at once (and each chunk that moves the deadline) never touches the
    /// runtime's timer.
    #[pin]
    sleep: Option<Sleep>,
    /// When the read times out: the first byte's limit, then the idle limit after each chunk,
    /// within the total.
    deadline: Instant,
    body: Option<B>,
    buf: Buf,
    len: usize,
    /// Boxed (rare; see [`ReplayBody`](crate::ReplayBody)'s).
    trailers: Option<Box<HeaderMap>>,
    first_byte: bool,
    check: Check,
}

impl<B> WholeRead<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// A read of `body` under `limits` from `started`, the call's start. The limits, the cap and
    /// the start are passed again to each [`poll_read`](Self::poll_read), not kept here: the
    /// guard's future holds them already, and every layer above moves this read whole.
    pub(crate) fn new(body: B, limits: &StreamLimits, started: Instant, check: Check) -> Self {
        WholeRead {
            sleep: None,
            deadline: after(started, limits.ttft.min(limits.total)),
            body: Some(body),
            buf: Buf::Empty,
            len: 0,
            trailers: None,
            first_byte: false,
            check,
        }
    }

    /// Read on: the same `limits`, `cap` (bytes read whole at most) and `started` as given to
    /// [`new`](Self::new) at every call.
    pub(crate) fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        limits: &StreamLimits,
        cap: usize,
        started: Instant,
    ) -> Poll<Result<Read<B>, ClassifiedError>> {
        let mut this = self.project();
        loop {
            let Some(body) = this.body.as_mut() else {
                return Poll::Ready(Err(ClassifiedError::new(
                    ErrorKind::Unknown,
                    "non-stream body polled after it was read",
                )));
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => {
                        *this.len = this.len.saturating_add(data.len());
                        this.buf.push(data);
                        if *this.len > cap {
                            let prefix = this.buf.take();
                            return match this.body.take() {
                                Some(rest) => Poll::Ready(Ok(Read::OverCap { prefix, rest })),
                                None => Poll::Ready(Ok(Read::Whole {
                                    data: prefix,
                                    trailers: None,
                                    usage: None,
                                })),
                            };
                        }
                        *this.first_byte = true;
                        // Silence is now measured from this chunk, still within the total.
                        let now = Instant::now();
                        *this.deadline = after(now, limits.idle).min(after(started, limits.total));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            match this.trailers.as_mut() {
                                Some(all) => all.extend(trailers),
                                None => *this.trailers = Some(Box::new(trailers)),
                            }
                        }
                    }
                },
                Poll::Ready(Some(Err(err))) => {
                    *this.body = None;
                    let err: BoxError = err.into();
                    let kind = match classify_error(&*err).kind {
                        ErrorKind::Unknown => ErrorKind::Transport,
                        kind => kind,
                    };
                    return Poll::Ready(Err(ClassifiedError::new(
                        kind,
                        format!("the answer body failed before its end: {err}"),
                    )));
                }
                Poll::Ready(None) => {
                    *this.body = None;
                    let data = this.buf.take();
                    let usage = match this.check.judge(&data) {
                        Ok(usage) => usage,
                        Err(err) => return Poll::Ready(Err(err)),
                    };
                    return Poll::Ready(Ok(Read::Whole {
                        data,
                        trailers: this.trailers.take(),
                        usage,
                    }));
                }
                Poll::Pending => {
                    if expiry(this.sleep.as_mut(), *this.deadline, cx).is_pending() {
                        return Poll::Pending;
                    }
                    // Close the connection now rather than when the future is dropped.
                    *this.body = None;
                    let message = if *this.first_byte {
                        let elapsed = Instant::now().saturating_duration_since(started);
                        if elapsed >= limits.total {
                            format!("the answer body took longer than {:?}", limits.total)
                        } else {
                            format!(
                                "the answer body was silent for {:?} after {} bytes",
                                limits.idle, this.len
                            )
                        }
                    } else {
                        format!(
                            "no byte of the answer body within {:?}",
                            limits.ttft.min(limits.total)
                        )
                    };
                    return Poll::Ready(Err(ClassifiedError::new(ErrorKind::Timeout, message)));
                }
            }
        }
    }
}

/// Poll a timer for `deadline`, armed on first use and moved when the deadline moved.
fn expiry(mut sleep: Pin<&mut Option<Sleep>>, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
    match sleep.as_mut().as_pin_mut() {
        Some(mut timer) => {
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            timer.poll(cx)
        }
        None => {
            sleep.set(Some(tokio::time::sleep_until(deadline)));
            match sleep.as_pin_mut() {
                Some(timer) => timer.poll(cx),
                None => Poll::Pending,
            }
        }
    }
}

/// What a body read whole must be, decided from the response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// One JSON value, and not a provider's error object.
    Json {
        /// `content-type` named JSON: an empty body is not JSON. Without one, an empty body
        /// passes (nothing claimed JSON).
        declared: bool,
    },
    /// Not judged: another content type (text, audio, ...), or a status without content.
    None,
}

impl Check {
    /// [`for_content_type`](Self::for_content_type) of a response's headers.
    #[cfg(test)]
    pub(crate) fn for_response(status: StatusCode, headers: &HeaderMap) -> Check {
        Check::for_content_type(status, headers.get(http::header::CONTENT_TYPE))
    }

    /// From a response's status and `content-type` (its first value, which the caller looks up
    /// once): JSON (`application/json`, `text/json`, `*/*+json`) or no `content-type` at all is
    /// judged; anything else, and `204`/`205`, passes as it is.
    pub(crate) fn for_content_type(
        status: StatusCode,
        content_type: Option<&HeaderValue>,
    ) -> Check {
        if matches!(status, StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT) {
            return Check::None;
        }
        let Some(value) = content_type else {
            return Check::Json { declared: false };
        };
        if has_json_subtype(value) {
            Check::Json { declared: true }
        } else {
            Check::None
        }
    }

    /// Judge a body read whole: one pass of serde over the bytes, nothing allocated for a valid
    /// answer. The provider's error parser runs only on an object with an `error` member.
    /// The same pass reads the answer's token `usage` for the token counters.
    pub(crate) fn judge(self, data: &[u8]) -> Result<Option<Usage>, ClassifiedError> {
        let Check::Json { declared } = self else {
            return Ok(None);
        };
        if data.is_empty() && !declared {
            return Ok(None);
        }
        // The common case: an object the hand-written scan reads as serde_json would.
        if let Some(scan) = scan_whole(data) {
            if let Some(model) = scan.model {
                record_model(model);
            }
            return if scan.error {
                Err(in_band_error(data))
            } else {
                Ok(scan.usage)
            };
        }
        match serde_json::from_slice::<Probe>(data) {
            Ok(Probe {
                error: false,
                usage,
            }) => Ok(usage),
            Ok(Probe { error: true, .. }) => Err(in_band_error(data)),
            Err(err) => Err(ClassifiedError::new(
                ErrorKind::InvalidResponse,
                format!(
                    "the answer body is not valid JSON ({} bytes): {err}",
                    data.len()
                ),
            )),
        }
    }
}

/// The failure an in-band error object names: its kind (`ServerError` when it names none), its
/// message and its delay.
fn in_band_error(data: &[u8]) -> ClassifiedError {
    let found = parse_error_slice(data).unwrap_or_default();
    let kind = found.kind.unwrap_or(ErrorKind::ServerError);
    let message = match found.message {
        Some(message) => format!("upstream error in a 2xx answer: {message}"),
        None => "the upstream answered 2xx with an error object".to_owned(),
    };
    let err = ClassifiedError::new(kind, message);
    match found.retry_after {
        Some(delay) => err.with_retry_after(delay),
        None => err,
    }
}

/// What one pass over a JSON document learns: whether it is an object with a non-null `error`
/// member (an object or a non-empty string), and its top-level token `usage`. Other values are
/// skipped with [`IgnoredAny`].
struct Probe {
    error: bool,
    usage: Option<Usage>,
}

impl<'de> de::Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ProbeVisitor)
    }
}

struct ProbeVisitor;

/// Any scalar at the top level: valid JSON, no error object.
macro_rules! scalar {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method<E: de::Error>(self, _: $ty) -> Result<Probe, E> {
            Ok(Probe { error: false, usage: None })
        }
    )*};
}

impl<'de> Visitor<'de> for ProbeVisitor {
    type Value = Probe;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<Probe, E> {
        Ok(Probe {
            error: false,
            usage: None,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Probe, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Probe {
            error: false,
            usage: None,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
        let mut error = false;
        let mut usage: Option<Usage> = None;
        while let Some(member) = map.next_key_seed(MemberKey)? {
            match member {
                Member::Error => error |= map.next_value_seed(ErrorValue)?,
                Member::Usage => {
                    if let Some(found) = map.next_value_seed(UsageValue)? {
                        usage.get_or_insert_with(Usage::default).merge(found);
                    }
                }
                Member::Model => map.next_value_seed(ModelValue)?,
                Member::XGroq | Member::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Probe { error, usage })
    }
}

/// The value of `error`: an object or a non-empty string reports an error; `null` (OpenAI's
/// Responses API sends `"error": null` on success), `false`, numbers and lists do not.
struct ErrorValue;

impl<'de> DeserializeSeed<'de> for ErrorValue {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

macro_rules! not_an_error {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method<E: de::Error>(self, _: $ty) -> Result<bool, E> {
            Ok(false)
        }
    )*};
}

impl<'de> Visitor<'de> for ErrorValue {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    not_an_error!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64);

    fn visit_str<E: de::Error>(self, message: &str) -> Result<bool, E> {
        Ok(!message.is_empty())
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod content_type_reading {
        use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
        use http::StatusCode;
        use proptest::prelude::*;

        use super::super::Check;

        /// The reading `Check::for_response` had before it read bytes: the value as text, the
        /// part before `;`, trimmed, the subtype `json` or `+json`.
        fn check_as_text(value: &HeaderValue) -> Check {
            let essence = value
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .unwrap_or_default()
                .trim();
            let subtype = essence.split_once('/').map_or("", |(_, sub)| sub);
            let json = subtype.eq_ignore_ascii_case("json")
                || subtype
                    .len()
                    .checked_sub(5)
                    .and_then(|at| subtype.get(at..))
                    .is_some_and(|tail| tail.eq_ignore_ascii_case("+json"));
            if json {
                Check::Json { declared: true }
            } else {
                Check::None
            }
        }

        /// Content types near JSON's, in any case, with whitespace, parameters and bytes that
        /// are not visible ASCII around them.
        fn value() -> impl Strategy<Value = Vec<u8>> {
            let parts = prop::sample::select(vec![
                "application/json",
                "text/json",
                "application/problem+json",
                "application/x+jsonx",
                "json",
                "/json",
                "+json",
                "application/",
                "text/event-stream",
                "",
            ]);
            let fill = prop::sample::select(vec![
                &b""[..],
                b" ",
                b"\t",
                b";",
                b"; charset=utf-8",
                b"/",
                b"\xe9",
                b"\x7f",
                b"\x80",
                b"JSON",
                b"+",
            ]);
            (fill.clone(), parts, fill.clone(), fill, any::<u32>()).prop_map(
                |(before, part, after, tail, case)| {
                    let mut bytes = before.to_vec();
                    bytes.extend(part.bytes().enumerate().map(|(i, b)| {
                        if case >> (i % 32) & 1 == 1 {
                            b.to_ascii_uppercase()
                        } else {
                            b
                        }
                    }));
                    bytes.extend_from_slice(after);
                    bytes.extend_from_slice(tail);
                    bytes
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            #[test]
            fn the_content_type_is_read_as_the_text_reading_did(bytes in value()) {
                let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                    return Ok(());
                };
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_TYPE, value.clone());
                prop_assert_eq!(
                    Check::for_response(StatusCode::OK, &headers),
                    check_as_text(&value),
                    "{:?}",
                    value
                );
            }
        }
    }

    mod scan_equivalence {
        use proptest::prelude::*;

        use super::super::{scan_whole, Probe};
        use crate::stream::usage::{of_event, of_event_serde};
        use crate::stream::whole_scan::scan_request_model;

        /// A JSON value as text, from a grammar that reaches the scan's corners: the keys the
        /// judge reads, escapes, numbers of every kind, nesting.
        fn value() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("null".to_owned()),
                Just("true".to_owned()),
                Just("false".to_owned()),
                any::<u64>().prop_map(|n| n.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                Just("18446744073709551616".to_owned()),
                Just("-0".to_owned()),
                Just("0.5".to_owned()),
                Just("-1.25".to_owned()),
                Just("1e3".to_owned()),
                Just("2.5E-7".to_owned()),
                Just("\"\"".to_owned()),
                "[a-z ]{0,12}".prop_map(|s| format!("\"{s}\"")),
                Just(r#""a\nb \"q\" \\ \/ \t""#.to_owned()),
                Just(r#""\u00e9""#.to_owned()),
                Just(r#""\ud83d\ude00 \u0000""#.to_owned()),
                Just(r#""\ud800""#.to_owned()),
                Just(r#""\udc00\ud800""#.to_owned()),
                Just(r#""\ud83d\u0041""#.to_owned()),
                Just(r#""\u12g4""#.to_owned()),
                Just("\"é 😀\"".to_owned()),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4)
                        .prop_map(|v| format!("[{}]", v.join(","))),
                    proptest::collection::vec((key(), inner), 0..5).prop_map(|m| {
                        let members: Vec<String> =
                            m.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                        format!("{{{}}}", members.join(","))
                    }),
                ]
            })
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("error"),
                Just("usage"),
                Just("usageMetadata"),
                Just("model"),
                Just("modelVersion"),
                Just("prompt_tokens"),
                Just("completion_tokens"),
                Just("input_tokens"),
                Just("output_tokens"),
                Just("candidatesTokenCount"),
                Just("choices"),
                Just("x"),
                Just("us\\u0061ge"),
                Just("a\\nb"),
                Just("x_groq"),
            ]
            .prop_map(|k| format!("\"{k}\""))
        }

        /// A document: usually an object, sometimes damaged (cut, or a byte put in).
        fn document() -> impl Strategy<Value = Vec<u8>> {
            (
                proptest::collection::vec((key(), value()), 0..6),
                0usize..4,
                any::<usize>(),
                any::<u8>(),
                prop_oneof![Just(""), Just(" "), Just("\n\t ")],
            )
                .prop_map(|(members, damage, at, byte, ws)| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, v)| format!("{k}{ws}:{v}"))
                        .collect();
                    let mut doc =
                        format!("{ws}{{{}}}{ws}", members.join(&format!(",{ws}"))).into_bytes();
                    let at = at % (doc.len() + 1);
                    match damage {
                        0 => doc.truncate(at),
                        1 => doc.insert(at, byte),
                        _ => {}
                    }
                    doc
                })
        }

        /// The last top-level `model` / `modelVersion` string of an object: what the serde
        /// path leaves on the span (each string it meets is recorded over the one before).
        struct LastModel(Option<String>);

        impl<'de> serde::Deserialize<'de> for LastModel {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Last;
                impl<'de> serde::de::Visitor<'de> for Last {
                    type Value = LastModel;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<LastModel, A::Error> {
                        let mut last = None;
                        while let Some((key, value)) =
                            map.next_entry::<String, serde_json::Value>()?
                        {
                            if let ("model" | "modelVersion", serde_json::Value::String(model)) =
                                (key.as_str(), value)
                            {
                                last = Some(model);
                            }
                        }
                        Ok(LastModel(last))
                    }
                }
                d.deserialize_map(Last)
            }
        }

        /// Whatever the request scan reads of `doc`, serde_json reads the same into an optional
        /// string field, and does not refuse.
        fn request_scan_agrees(doc: &[u8]) -> Result<(), TestCaseError> {
            #[derive(serde::Deserialize)]
            struct ModelOnly<'a> {
                #[serde(borrow)]
                model: Option<std::borrow::Cow<'a, str>>,
            }
            if let Some(model) = scan_request_model(doc) {
                let serde = serde_json::from_slice::<ModelOnly<'_>>(doc);
                prop_assert!(
                    serde.is_ok(),
                    "{}: {:?}",
                    String::from_utf8_lossy(doc),
                    serde.err()
                );
                let read = serde.unwrap().model;
                prop_assert_eq!(model, read.as_deref(), "{}", String::from_utf8_lossy(doc));
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]
            /// Whatever the scan reads, serde_json reads the same (valid, same error flag, same
            /// usage); the scan never reads a document serde_json rejects.
            #[test]
            fn the_scan_reads_as_serde_json(doc in document()) {
                if let Some(scan) = scan_whole(&doc) {
                    let probe = serde_json::from_slice::<Probe>(&doc);
                    prop_assert!(probe.is_ok(), "{}: {:?}", String::from_utf8_lossy(&doc), probe.err());
                    let probe = probe.unwrap();
                    prop_assert_eq!((scan.error, scan.usage), (probe.error, probe.usage), "{}", String::from_utf8_lossy(&doc));
                    // The model: the last top-level string, as serde_json's visitor records it.
                    let LastModel(model) = serde_json::from_slice(&doc).unwrap();
                    prop_assert_eq!(scan.model.map(str::to_owned), model, "{}", String::from_utf8_lossy(&doc));
                }
            }

            /// A stream chunk's usage: the same with the scan as with serde_json alone.
            #[test]
            fn a_chunk_s_usage_reads_as_serde_json(doc in document()) {
                prop_assert_eq!(of_event(&doc), of_event_serde(&doc), "{}", String::from_utf8_lossy(&doc));
            }

            /// Whatever the request scan reads, serde_json reads the same into an optional
            /// string field (the gateway's and the stack's reading of a request's `model`).
            #[test]
            fn the_request_scan_reads_as_serde_json(doc in document()) {
                request_scan_agrees(&doc)?;
            }

            /// The same with a byte of a non-ASCII character (only ever in a string) replaced by
            /// any byte from 0x80: invalid UTF-8 in skipped strings, keys and models, which the
            /// request scan reads as serde_json does (it checks only the top-level keys and the
            /// model).
            #[test]
            fn the_request_scan_reads_invalid_utf8_as_serde_json(
                doc in document(),
                pick in any::<usize>(),
                byte in 0x80u8..=0xff,
            ) {
                let mut doc = doc;
                let high: Vec<usize> = (0..doc.len()).filter(|&i| doc[i] >= 0x80).collect();
                if !high.is_empty() {
                    doc[high[pick % high.len()]] = byte;
                }
                request_scan_agrees(&doc)?;
            }

            /// Undamaged documents without lone surrogates, exponents or escaped keys are read by
            /// the scan, not left to serde_json.
            #[test]
            fn the_scan_reads_the_plain_documents(members in proptest::collection::vec(
                (key(), value()), 0..6,
            )) {
                let members: Vec<String> = members.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                let doc = format!("{{{}}}", members.join(","));
                // What the scan leaves to serde_json: `\u` escapes, exponents, an escaped key
                // (where keys matter) or model name.
                let unsure = ["us\\u0061ge", "\\ud800\"", "\\udc00", "\\ud83d\\u0041", "\\u12g4", "1e3", "E-7", "a\\nb\":", "model\":\"a\\n", "modelVersion\":\"a\\n", "model\":\"\\", "modelVersion\":\"\\"]
                    .iter()
                    .any(|s| doc.contains(s));
                if !unsure {
                    prop_assert!(scan_whole(doc.as_bytes()).is_some(), "{doc}");
                }
            }
        }
    }

    fn headers(content_type: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(http::header::CONTENT_TYPE, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn which_answers_are_judged() {
        let judged = |status: StatusCode, ct: Option<&str>| {
            Check::for_response(status, &headers(ct)) != Check::None
        };
        for ct in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("Application/JSON"),
            Some("text/json"),
            Some("application/problem+json"),
        ] {
            assert!(judged(StatusCode::OK, ct), "{ct:?}");
        }
        for ct in [
            "text/plain",
            "audio/mpeg",
            "application/octet-stream",
            "application/x-ndjson",
            "application/jsonl",
            "json",
            "",
        ] {
            assert!(!judged(StatusCode::OK, Some(ct)), "{ct}");
        }
        assert!(!judged(StatusCode::NO_CONTENT, None));
        assert!(!judged(StatusCode::RESET_CONTENT, Some("application/json")));
    }

    #[test]
    fn valid_json_without_an_error_object_passes() {
        let check = Check::Json { declared: true };
        for body in [
            &br#"{"id":"c1","object":"chat.completion","choices":[]}"#[..],
            br#"{"object":"response","status":"completed","error":null}"#,
            br#"{"error":false,"errors":[{"message":"kept"}]}"#,
            br#"{"data":{"error":{"message":"nested: not the top level"}}}"#,
            br#"[{"error":{"message":"a list is not judged as an error"}}]"#,
            br#"{"error":""}"#,
            b" 42 ",
            b"\"text\"",
            b"null",
            br#"{"e\u0072ror2":{}}"#,
        ] {
            assert!(
                check.judge(body).is_ok(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn the_judge_reads_the_usage_of_a_valid_answer() {
        let check = Check::Json { declared: true };
        let body = br#"{"id":"c1","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
        assert_eq!(
            check.judge(body).unwrap(),
            Some(Usage {
                input: Some(12),
                output: Some(3)
            })
        );
        // A malformed usage is no usage, and the answer stays valid.
        assert_eq!(check.judge(br#"{"usage":"many"}"#).unwrap(), None);
        assert_eq!(
            check.judge(br#"{"usage":{"prompt_tokens":-3}}"#).unwrap(),
            None
        );
        assert_eq!(check.judge(br#"{"choices":[]}"#).unwrap(), None);
        assert_eq!(
            Check::None
                .judge(br#"{"usage":{"prompt_tokens":1}}"#)
                .unwrap(),
            None
        );
    }

    #[test]
    fn an_error_object_is_its_kind_with_its_message() {
        let check = Check::Json { declared: false };
        let err = check
            .judge(br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        assert!(err.message().contains("slow down"), "{}", err.message());
        // An escaped key is still `error`.
        let err = check.judge(br#"{"e\u0072ror":"boom"}"#).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ServerError);
        assert!(err.message().contains("boom"), "{}", err.message());
        // Anthropic's shape.
        let err = check
            .judge(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Overloaded);
        // An error object that names nothing.
        let err = check.judge(br#"{"error":{}}"#).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ServerError);
    }

    #[test]
    fn what_is_not_one_json_value_is_an_invalid_response() {
        let declared = Check::Json { declared: true };
        for body in [
            &br#"{"id":"c1","choices":[{"mess"#[..],
            b"",
            b"   ",
            b"{} {}",
            b"<html>502</html>",
            b"\xff\xfe",
            br#"{"a":1,}"#,
        ] {
            let err = declared.judge(body).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{body:?}");
        }
        // Without a content type, only an empty body passes.
        let undeclared = Check::Json { declared: false };
        assert!(undeclared.judge(b"").is_ok());
        assert_eq!(
            undeclared.judge(b"plain words").unwrap_err().kind(),
            ErrorKind::InvalidResponse
        );
        assert!(Check::None.judge(b"plain words").is_ok());
    }

    #[test]
    fn nesting_past_serde_s_limit_is_an_invalid_response_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        let err = Check::Json { declared: true }
            .judge(deep.as_bytes())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    }
}
