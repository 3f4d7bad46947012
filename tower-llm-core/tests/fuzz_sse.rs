//! Fuzz harnesses: the SSE decoder and the stream guard on arbitrary byte streams split at
//! arbitrary chunk boundaries. Runner and settings: `tests/fuzz_support` at the workspace root,
//! `FUZZING.md`.
//!
//! `tests/sse.rs` already checks split invariance on SSE-like tokens with the default limit and
//! the size error's position on small limits; these harnesses add raw bytes mixed into the
//! tokens, any limit, the decoder's memory bound after every chunk, the tracker's verdict, and
//! the whole stream guard (what the caller reads, and how the stream ended) under the same
//! chunkings, body errors included.

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fuzz_support::fuzz;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use proptest::prelude::*;
use tower::{service_fn, Layer, ServiceExt};
use tower_llm_core::sse::{
    inspect_event, EventKind, SseDecoder, SseError, SseEvent, StreamStatus, StreamTracker,
};
use tower_llm_core::{classify_error, ErrorKind, StreamEnd, StreamGuardLayer, StreamOutcome};

/// Pieces of event streams: fields, line endings, OpenAI payloads, in-band errors, a BOM, NUL,
/// multi-byte characters.
fn token() -> impl Strategy<Value = Vec<u8>> {
    let fixed = prop_oneof![
        Just(&b"data: "[..]),
        Just(&b"data:"[..]),
        Just(&b"event: "[..]),
        Just(&b"event: error\n"[..]),
        Just(&b"id: "[..]),
        Just(&b"retry: 99999999999999999999999"[..]),
        Just(&b": ping"[..]),
        Just(&b"\n"[..]),
        Just(&b"\r"[..]),
        Just(&b"\r\n"[..]),
        Just(&b"\n\n"[..]),
        Just(&b"[DONE]"[..]),
        Just(&br#"{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}"#[..]),
        Just(&br#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#[..]),
        Just(&br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#[..]),
        Just(&br#"{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit_exceeded"}}"#[..]),
        Just(&br#"{"type":"message_stop"}"#[..]),
        Just(&br#"{"choices":[{"delta":{"content"#[..]),
        Just("é\u{1F600}".as_bytes()),
        Just(&b"\xEF\xBB\xBF"[..]),
        Just(&b"\0"[..]),
        Just(&b":"[..]),
        Just(&b" "[..]),
    ]
    .prop_map(<[u8]>::to_vec);
    prop_oneof![
        8 => fixed,
        1 => proptest::collection::vec(any::<u8>(), 1..24),
    ]
}

/// A stream: tokens and raw bytes, concatenated.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(token(), 0..48).prop_map(|t| t.concat())
}

/// Cut points: sorted offsets into the stream (duplicates make empty chunks).
fn cuts() -> impl Strategy<Value = Vec<prop::sample::Index>> {
    proptest::collection::vec(any::<prop::sample::Index>(), 0..16)
}

fn split(input: &[u8], cuts: &[prop::sample::Index]) -> Vec<Bytes> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut from = 0;
    for p in points {
        chunks.push(Bytes::copy_from_slice(&input[from..p]));
        from = p;
    }
    chunks.push(Bytes::copy_from_slice(&input[from..]));
    chunks
}

/// What a decoder makes of `chunks`: the events (and the error that stopped it), the tracker's
/// verdict, and whether the body ended inside an event. Checks the memory bound on the way.
#[derive(Debug, PartialEq)]
struct Decoded {
    events: Vec<Result<SseEvent, SseError>>,
    status: StreamStatus,
    mid_event: bool,
}

fn decode(limit: usize, chunks: &[Bytes]) -> Result<Decoded, TestCaseError> {
    decode_with(limit, chunks, false)
}

/// [`decode`], taking each chunk that is one `data:` event through
/// [`SseDecoder::single_data_event`] when `shortcut`.
fn decode_with(limit: usize, chunks: &[Bytes], shortcut: bool) -> Result<Decoded, TestCaseError> {
    let mut decoder = SseDecoder::with_max_event_size(limit);
    let mut tracker = StreamTracker::new();
    let mut events = Vec::new();
    let mut failed = false;
    for chunk in chunks {
        if let Some(event) = shortcut.then(|| decoder.single_data_event(chunk)).flatten() {
            events.push(Ok(event));
            prop_assert!(!decoder.is_mid_event() && decoder.buffered() == 0);
            continue;
        }
        decoder.push(chunk.clone());
        // Pushed but not drained: what was left (nothing, after draining) plus this chunk.
        prop_assert!(
            decoder.buffered() <= limit + chunk.len(),
            "{} bytes buffered after a push of {} (limit {limit})",
            decoder.buffered(),
            chunk.len()
        );
        while let Some(item) = next(&mut decoder, false) {
            failed = item.is_err();
            events.push(item);
            if failed {
                break;
            }
        }
        if failed {
            break;
        }
        prop_assert!(
            decoder.buffered() <= limit,
            "{} bytes buffered after draining (limit {limit})",
            decoder.buffered()
        );
    }
    let mid_event = !failed && decoder.is_mid_event();
    while !failed {
        let Some(item) = next(&mut decoder, true) else {
            break;
        };
        failed = item.is_err();
        events.push(item);
    }
    for event in events.iter().flatten() {
        prop_assert!(event.data().len() <= limit, "an event over the limit");
        tracker.observe(event);
    }
    Ok(Decoded {
        events,
        status: tracker.status(),
        mid_event,
    })
}

/// The decoder's next event (`finish`ing when `eof`), `None` when it needs more input; an
/// error is returned once.
fn next(decoder: &mut SseDecoder, eof: bool) -> Option<Result<SseEvent, SseError>> {
    let item = if eof {
        decoder.finish()
    } else {
        decoder.next_event()
    };
    item.transpose()
}

/// Limits: tiny ones (every line trips them), mid-sized, and the default.
fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..16,
        16usize..512,
        Just(tower_llm_core::sse::DEFAULT_MAX_EVENT_SIZE)
    ]
}

#[test]
fn fuzz_decoder_bounded_and_split_invariant() {
    fuzz(
        "sse_decoder",
        1024,
        || (stream_bytes(), cuts(), limit()),
        |(input, cuts, limit)| {
            let whole = decode(limit, &[Bytes::from(input.clone())])?;
            let pieces = decode(limit, &split(&input, &cuts))?;
            prop_assert_eq!(&pieces, &whole);
            // One byte at a time: every `\r\n`, BOM and UTF-8 sequence is split.
            let bytes: Vec<Bytes> = input.iter().map(|&b| Bytes::from(vec![b])).collect();
            prop_assert_eq!(&decode(limit, &bytes)?, &whole);
            Ok(())
        },
    );
}

/// A stream of mostly whole `data:` events (their data from the tokens, raw bytes included),
/// with other tokens between them.
fn framed_stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let event = proptest::collection::vec(token(), 0..3).prop_map(|data| {
        let mut event = b"data: ".to_vec();
        event.extend(data.concat());
        event.extend(b"\n\n");
        event
    });
    let part = prop_oneof![4 => event, 1 => token()];
    proptest::collection::vec(part, 0..24).prop_map(|p| p.concat())
}

/// `input` cut after every blank line: one event per chunk, as providers send them.
fn per_event(input: &[u8]) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let mut from = 0;
    for at in 1..input.len() {
        if &input[at - 1..=at] == b"\n\n" {
            chunks.push(Bytes::copy_from_slice(&input[from..=at]));
            from = at + 1;
        }
    }
    chunks.push(Bytes::copy_from_slice(&input[from..]));
    chunks
}

#[test]
fn fuzz_decoder_single_data_event_decodes_as_push() {
    fuzz(
        "sse_single_data_event",
        1024,
        || {
            (
                prop_oneof![stream_bytes(), framed_stream_bytes()],
                cuts(),
                limit(),
            )
        },
        |(input, cuts, limit)| {
            let whole = decode(limit, &[Bytes::from(input.clone())])?;
            prop_assert_eq!(&decode_with(limit, &per_event(&input), true)?, &whole);
            prop_assert_eq!(&decode_with(limit, &split(&input, &cuts), true)?, &whole);
            Ok(())
        },
    );
}

#[test]
fn single_data_event_takes_plain_events_only() {
    let single = |decoder: &mut SseDecoder, chunk: &'static [u8]| {
        decoder
            .single_data_event(&Bytes::from_static(chunk))
            .map(|e| e.data().clone())
    };
    let mut decoder = SseDecoder::new();
    let event = &b"data: {\"a\":1}\n\n"[..];
    assert_eq!(
        single(&mut decoder, event).as_deref(),
        Some(&b"{\"a\":1}"[..])
    );
    for other in [
        &b"data:{}\n\n"[..],
        b"data: {}\r\n\r\n",
        b"data: a\rb\n\n",
        b"data: a\ndata: b\n\n",
        b"event: x\ndata: a\n\n",
        b"data: a\n",
        b": ping\n\n",
    ] {
        assert_eq!(single(&mut decoder, other), None, "{other:?}");
    }
    // The last id goes with the event, as `next_event` gives it.
    decoder.push(Bytes::from_static(b"id: 9\n\n"));
    assert!(decoder.next_event().unwrap().is_none());
    let with_id = decoder
        .single_data_event(&Bytes::from_static(event))
        .unwrap();
    assert_eq!(with_id.id(), Some("9"));
    // Not between events: a line has begun.
    decoder.push(Bytes::from_static(b"data: par"));
    assert_eq!(decoder.next_event().unwrap(), None);
    assert_eq!(single(&mut decoder, event), None);
    // Over the limit.
    let mut small = SseDecoder::with_max_event_size(8);
    assert_eq!(
        single(&mut small, b"data: 12\n\n").as_deref(),
        Some(&b"12"[..])
    );
    assert_eq!(single(&mut small, b"data: 123\n\n"), None);
}

// ---------------------------------------------------------------------------------------------
// The stream guard.

/// How a guarded call went, in terms that do not depend on the chunking.
#[derive(Debug, PartialEq)]
enum Guarded {
    /// The call failed before the first event, with this kind.
    Rejected(ErrorKind),
    /// The stream was committed: the events the caller read and how the stream ended.
    Streamed {
        events: Vec<SseEvent>,
        end: Option<StreamEnd>,
    },
}

fn sse_response<B>(body: B) -> Response<B> {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .expect("valid response")
}

/// One call through a default stream guard to an upstream answering `chunks` (then a reset when
/// `reset` is set), on a paused clock: no timer fires while the body has data ready.
fn guard(chunks: Vec<Bytes>, reset: bool) -> Result<Guarded, TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut frames: Vec<Result<Frame<Bytes>, io::Error>> =
            chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
        if reset {
            frames.push(Err(io::Error::from(io::ErrorKind::ConnectionReset)));
        }
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let res = Arc::new(Mutex::new(Some(sse_response(body))));
        let upstream = service_fn(move |_req: Request<()>| {
            let res = res.lock().expect("lock").take().expect("called once");
            async move { Ok::<_, Infallible>(res) }
        });
        let answer = StreamGuardLayer::new()
            .layer(upstream)
            .oneshot(Request::new(()))
            .await;
        let res = match answer {
            Ok(res) => res,
            Err(err) => return Ok(Guarded::Rejected(classify_error(&*err).kind)),
        };
        let outcome = res
            .extensions()
            .get::<StreamOutcome>()
            .cloned()
            .expect("a committed stream carries its outcome");
        let collected = res.into_body().collect().await;
        prop_assert!(collected.is_ok(), "a guarded body never fails");
        let out = collected.map(|c| c.to_bytes()).unwrap_or_default();
        // What the caller reads is a well-formed event stream that ends with the stream's own
        // terminator (`[DONE]`, or Anthropic's `message_stop` and the Responses API's
        // `response.completed`, which the guard passes on as they are) or an OpenAI error event,
        // with nothing after a terminator.
        let mut decoder = SseDecoder::new();
        let mut events: Vec<SseEvent> = Vec::new();
        for item in decoder.decode(out.clone()) {
            events.push(item.map_err(|e| TestCaseError::fail(e.to_string()))?);
        }
        prop_assert!(
            !decoder.is_mid_event(),
            "the output ends inside an event: {:?}",
            String::from_utf8_lossy(&out)
        );
        let last = events.last().cloned().unwrap_or_else(|| SseEvent::new(""));
        let terminated = inspect_event(&last) == EventKind::Done;
        let is_error = serde_json::from_slice::<serde_json::Value>(last.data())
            .ok()
            .and_then(|v| v.get("error").cloned())
            .is_some_and(|e| e["message"].is_string() && e["type"].is_string());
        prop_assert!(
            terminated || is_error,
            "the stream ends with neither a terminator nor an error event: {:?}",
            String::from_utf8_lossy(&out)
        );
        for earlier in &events[..events.len() - 1] {
            prop_assert!(
                inspect_event(earlier) != EventKind::Done,
                "an event after the terminator: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        let end = outcome.end();
        match end {
            Some(StreamEnd::Complete) => prop_assert!(terminated),
            Some(StreamEnd::Failed(_)) => prop_assert!(is_error),
            _ => {}
        }
        Ok(Guarded::Streamed { events, end })
    })
}

#[test]
fn fuzz_stream_guard_well_formed_and_split_invariant() {
    fuzz(
        "stream_guard",
        512,
        || (stream_bytes(), cuts(), any::<bool>()),
        |(input, cuts, reset)| {
            let whole = guard(vec![Bytes::from(input.clone())], reset)?;
            let pieces = guard(split(&input, &cuts), reset)?;
            prop_assert_eq!(pieces, whole);
            Ok(())
        },
    );
}
