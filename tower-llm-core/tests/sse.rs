//! SSE framing: the decoder (WHATWG rules, arbitrary chunking, bounded memory), OpenAI-style
//! stream semantics, and the encoders.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use tower_llm_core::openai::{self, done_frame, DONE, DONE_FRAME};
use tower_llm_core::sse::{
    inspect_event, json_frame, parse_error_event, EventKind, SseDecoder, SseError, SseEvent,
    StreamStatus, StreamTracker,
};
use tower_llm_core::ErrorKind;

/// Everything a decoder yields for `chunks`, then what `finish` yields; stops at the first error.
fn decode_chunks_with(
    mut decoder: SseDecoder,
    chunks: &[&[u8]],
) -> Vec<Result<SseEvent, SseError>> {
    let mut out = Vec::new();
    for chunk in chunks {
        for item in decoder.decode(Bytes::copy_from_slice(chunk)) {
            let failed = item.is_err();
            out.push(item);
            if failed {
                return out;
            }
        }
    }
    loop {
        match decoder.finish() {
            Ok(Some(event)) => out.push(Ok(event)),
            Ok(None) => return out,
            Err(err) => {
                out.push(Err(err));
                return out;
            }
        }
    }
}

fn decode_chunks(chunks: &[&[u8]]) -> Vec<Result<SseEvent, SseError>> {
    decode_chunks_with(SseDecoder::new(), chunks)
}

fn events(input: &[u8]) -> Vec<SseEvent> {
    decode_chunks(&[input])
        .into_iter()
        .map(|e| e.expect("no decode error"))
        .collect()
}

fn data_of(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.data_str().unwrap()).collect()
}

const OPENAI_STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Héllo \u{1F600}\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    ": keep-alive\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n",
    "data: [DONE]\n\n",
);

#[test]
fn an_openai_stream_decodes_and_completes() {
    let events = events(OPENAI_STREAM.as_bytes());
    assert_eq!(events.len(), 5);
    let mut tracker = StreamTracker::new();
    let kinds: Vec<EventKind> = events.iter().map(|e| tracker.observe(e)).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Delta { usage: false },
            EventKind::Delta { usage: false },
            EventKind::Finish { usage: false },
            EventKind::Delta { usage: true },
            EventKind::Done,
        ]
    );
    assert_eq!(tracker.status(), StreamStatus::Done);
    assert!(tracker.is_complete());
    assert!(tracker.saw_usage());
    assert_eq!(tracker.events(), 5);
    assert_eq!(tracker.deltas(), 4);
    assert!(events[4].is_done());
    assert!(events[1].data_str().unwrap().contains("Héllo \u{1F600}"));
}

#[test]
fn line_endings_are_equivalent() {
    let lf = b"event: a\ndata: 1\ndata: 2\n\ndata: 3\n\n".as_slice();
    let crlf = b"event: a\r\ndata: 1\r\ndata: 2\r\n\r\ndata: 3\r\n\r\n".as_slice();
    let cr = b"event: a\rdata: 1\rdata: 2\r\rdata: 3\r\r".as_slice();
    let mixed = b"event: a\rdata: 1\r\ndata: 2\n\r\ndata: 3\r\n\n".as_slice();
    let expected = events(lf);
    assert_eq!(data_of(&expected), ["1\n2", "3"]);
    assert_eq!(expected[0].event(), Some("a"));
    assert_eq!(expected[1].event(), None);
    for input in [crlf, cr, mixed] {
        assert_eq!(
            events(input),
            expected,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn whatwg_field_rules() {
    let input = concat!(
        "\u{FEFF}: a comment, with a BOM before it\n",
        "data:no space\n",
        "data:  two spaces\n",
        "data\n",
        "unknown: field\n",
        "retry: 2500\n",
        "id: 7\n",
        "\n",
        // Blank-line events without data dispatch nothing and reset the type.
        "event: lonely\n",
        "\n",
        "data: second\n",
        "\n",
        // An ID with NUL is ignored; the last ID carries over.
        "id: bad\0id\n",
        "event: custom\n",
        "data: third\n",
        "\n",
        "id\n",
        "data: fourth\n",
        "\n",
        "event:\n",
        "data:\n",
        "\n",
        "retry: soon\n",
        "data: : colon in value\n",
        "\n",
    );
    let mut decoder = SseDecoder::new();
    let mut got = Vec::new();
    for event in decoder.decode(Bytes::from(input)) {
        got.push(event.unwrap());
    }
    assert_eq!(
        data_of(&got),
        [
            "no space\n two spaces\n",
            "second",
            "third",
            "fourth",
            "",
            ": colon in value"
        ]
    );
    assert_eq!(got[0].id(), Some("7"));
    assert_eq!(got[1].event(), None);
    assert_eq!(got[1].id(), Some("7"));
    assert_eq!(got[2].event(), Some("custom"));
    assert_eq!(got[2].id(), Some("7"));
    // `id` with no value resets the last ID to empty.
    assert_eq!(got[3].id(), Some(""));
    assert_eq!(got[4].event(), None);
    assert_eq!(decoder.retry(), Some(Duration::from_millis(2500)));
    assert_eq!(decoder.last_event_id(), Some(""));
    assert!(!decoder.is_mid_event());
}

#[test]
fn a_bom_is_stripped_only_at_the_start() {
    let got = events(b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\ndata: c\n\n");
    // The second BOM starts a line whose field name is "\u{FEFF}data": unknown, ignored.
    assert_eq!(data_of(&got), ["a", "c"]);
}

#[test]
fn every_split_point_gives_the_same_events() {
    let input = concat!(
        "event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n",
        "data: é\u{1F600}\rdata: second line\r\r",
        ": ping\n",
        "id: 42\ndata: [DONE]\n\n",
    )
    .as_bytes();
    let whole = decode_chunks(&[input]);
    assert_eq!(whole.len(), 3);
    for i in 0..=input.len() {
        assert_eq!(
            decode_chunks(&[&input[..i], &input[i..]]),
            whole,
            "split at {i}"
        );
        for j in i..=input.len() {
            assert_eq!(
                decode_chunks(&[&input[..i], &input[i..j], &input[j..]]),
                whole,
                "split at {i}, {j}"
            );
        }
    }
    let bytewise: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode_chunks(&bytewise), whole);
}

#[test]
fn events_inside_one_chunk_are_not_copied() {
    let chunk = Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: {\"c\"");
    let range = chunk.as_ptr() as usize..chunk.as_ptr() as usize + chunk.len();
    let mut decoder = SseDecoder::new();
    let got: Vec<SseEvent> = decoder.decode(chunk.clone()).map(Result::unwrap).collect();
    assert_eq!(got.len(), 2);
    for event in &got {
        assert!(
            range.contains(&(event.data().as_ptr() as usize)),
            "a slice of the chunk"
        );
    }
    // The event split across chunks is joined (and so copied).
    let rest: Vec<SseEvent> = decoder
        .decode(Bytes::from_static(b":3}\n\n"))
        .map(Result::unwrap)
        .collect();
    assert_eq!(data_of(&rest), ["{\"c\":3}"]);
}

#[test]
fn an_over_long_event_is_an_error_not_unbounded_memory() {
    let mut decoder = SseDecoder::with_max_event_size(64);
    assert_eq!(decoder.max_event_size(), 64);
    // Exactly at the limit: fine (the limit counts line bytes, not line endings).
    let line = format!("data: {}", "x".repeat(58));
    assert_eq!(line.len(), 64);
    let got: Vec<_> = decoder.decode(Bytes::from(format!("{line}\n\n"))).collect();
    assert_eq!(got.len(), 1);
    assert!(got[0].is_ok());

    // Several lines that add up to more than the limit.
    let input = "data: 0123456789\n".repeat(5) + "\n";
    let got = decode_chunks_with(SseDecoder::with_max_event_size(64), &[input.as_bytes()]);
    assert_eq!(got, [Err(SseError::EventTooLarge { limit: 64 })]);

    // A line that never ends, fed in small chunks: the error comes as soon as the limit is
    // passed, and the decoder stays failed.
    let mut decoder = SseDecoder::with_max_event_size(1024);
    let mut fed = 0;
    let err = loop {
        match decoder.decode(Bytes::from_static(&[b'x'; 100])).next() {
            None => fed += 100,
            Some(Err(err)) => break err,
            Some(Ok(_)) => panic!("no event in a line without end"),
        }
        assert!(fed <= 1024, "buffered past the limit");
    };
    assert_eq!(err, SseError::EventTooLarge { limit: 1024 });
    assert_eq!(
        err.to_string(),
        "server-sent event larger than the 1024-byte limit"
    );
    assert_eq!(
        decoder.next_event(),
        Err(SseError::EventTooLarge { limit: 1024 })
    );
    assert_eq!(
        decoder.finish(),
        Err(SseError::EventTooLarge { limit: 1024 })
    );
    decoder.push(Bytes::from_static(b"\n\ndata: ok\n\n"));
    assert!(decoder.next_event().is_err());

    // Comments count while they are pending, too: one huge comment line is refused.
    let comment = format!(": {}\n\ndata: a\n\n", "c".repeat(100));
    let got = decode_chunks_with(SseDecoder::with_max_event_size(64), &[comment.as_bytes()]);
    assert_eq!(got, [Err(SseError::EventTooLarge { limit: 64 })]);
    // ... but many short comments do not add up.
    let comments = ": ping\n".repeat(100) + "data: a\n\n";
    let got = decode_chunks_with(SseDecoder::with_max_event_size(64), &[comments.as_bytes()]);
    assert_eq!(got.len(), 1);
    assert!(got[0].is_ok());
}

#[test]
fn finish_returns_an_unterminated_last_event() {
    let mut decoder = SseDecoder::new();
    let got: Vec<_> = decoder
        .decode(Bytes::from_static(
            b"data: {\"choices\":[]}\n\ndata: [DONE]",
        ))
        .collect();
    assert_eq!(got.len(), 1);
    assert!(decoder.is_mid_event());
    let last = decoder.finish().unwrap().unwrap();
    assert!(last.is_done());
    assert_eq!(decoder.finish(), Ok(None));

    // Ended after the fields, before the blank line.
    let mut decoder = SseDecoder::new();
    assert!(decoder
        .decode(Bytes::from_static(b"event: x\ndata: y\n"))
        .next()
        .is_none());
    assert!(decoder.is_mid_event());
    let last = decoder.finish().unwrap().unwrap();
    assert_eq!((last.event(), last.data_str()), (Some("x"), Some("y")));

    // A clean end: nothing pending.
    let mut decoder = SseDecoder::new();
    assert_eq!(decoder.decode(done_frame()).count(), 1);
    assert!(!decoder.is_mid_event());
    assert_eq!(decoder.finish(), Ok(None));

    // Undrained input: finish yields every remaining event in turn.
    let mut decoder = SseDecoder::new();
    decoder.push(Bytes::from_static(b"data: 1\n\ndata: 2\n\ndata: 3"));
    let mut rest = Vec::new();
    while let Some(event) = decoder.finish().unwrap() {
        rest.push(event);
    }
    assert_eq!(data_of(&rest), ["1", "2", "3"]);
}

#[test]
fn pushing_without_draining_loses_nothing() {
    let mut decoder = SseDecoder::new();
    decoder.push(Bytes::from_static(b"data: 1\n\ndata: "));
    decoder.push(Bytes::from_static(b"2\n\n"));
    let mut got = Vec::new();
    while let Some(event) = decoder.next_event().unwrap() {
        got.push(event);
    }
    assert_eq!(data_of(&got), ["1", "2"]);
}

fn kind(data: &str) -> EventKind {
    inspect_event(&SseEvent::new(data.to_owned()))
}

#[test]
fn openai_event_kinds() {
    assert_eq!(kind("[DONE]"), EventKind::Done);
    assert_eq!(kind(" [DONE] "), EventKind::Done);
    assert_eq!(
        kind(r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#),
        EventKind::Delta { usage: false }
    );
    assert_eq!(
        kind(
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":{"total_tokens":3}}"#
        ),
        EventKind::Finish { usage: true }
    );
    // n > 1: any choice finishing counts.
    assert_eq!(
        kind(
            r#"{"choices":[{"index":0,"finish_reason":null},{"index":1,"finish_reason":"stop"}]}"#
        ),
        EventKind::Finish { usage: false }
    );
    // An empty finish_reason is not a finish.
    assert_eq!(
        kind(r#"{"choices":[{"finish_reason":""}]}"#),
        EventKind::Delta { usage: false }
    );
    // Escaped strings and unknown fields.
    assert_eq!(
        kind(
            r#"{"choices":[{"finish_reason":"st\u006fp","logprobs":{"content":[1,2,{"a":[]}]}}],"system_fingerprint":"fp"}"#
        ),
        EventKind::Finish { usage: false }
    );
    // Groq puts usage under x_groq.
    assert_eq!(
        kind(
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"x_groq":{"id":"req_1","usage":{"total_tokens":5}}}"#
        ),
        EventKind::Finish { usage: true }
    );
    assert_eq!(
        kind(r#"{"choices":[],"x_groq":{"id":"req_1"}}"#),
        EventKind::Delta { usage: false }
    );
}

#[test]
fn in_band_errors() {
    assert_eq!(
        kind(r#"{"error":{"message":"The server had an error","type":"server_error"}}"#),
        EventKind::Error
    );
    assert_eq!(kind(r#"{"error":"boom"}"#), EventKind::Error);
    assert_eq!(
        kind(r#"{"choices":[],"error":null}"#),
        EventKind::Delta { usage: false }
    );
    let named = SseEvent::new("not even json").with_event("error");
    assert_eq!(inspect_event(&named), EventKind::Error);
    let anthropic = SseEvent::new(
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    )
    .with_event("error");
    assert_eq!(inspect_event(&anthropic), EventKind::Error);

    let found = parse_error_event(&anthropic).unwrap();
    assert_eq!(found.kind, Some(ErrorKind::Overloaded));
    assert_eq!(found.code.as_deref(), Some("overloaded_error"));
    let found = parse_error_event(&named).unwrap();
    assert_eq!(found.kind, Some(ErrorKind::ServerError));
    assert_eq!(found.message.as_deref(), Some("not even json"));
    let openrouter = SseEvent::new(
        r#"{"id":"gen-1","object":"chat.completion.chunk","error":{"code":502,"message":"Provider disconnected"},"choices":[{"delta":{"content":""},"finish_reason":"error"}]}"#,
    );
    assert_eq!(inspect_event(&openrouter), EventKind::Error);
    assert_eq!(
        parse_error_event(&openrouter).unwrap().kind,
        Some(ErrorKind::ServerError)
    );
    assert_eq!(parse_error_event(&SseEvent::new("[DONE]")), None);
}

#[test]
fn malformed_and_other_events() {
    for data in [
        "{broken",
        "hello",
        "{\"choices\":",
        "42",
        "[1,2]",
        "\"x\"",
        "{\"choices\":{}}",
        "{\"choices\":[{\"finish_reason\":7}]}",
    ] {
        assert_eq!(kind(data), EventKind::Malformed, "{data}");
    }
    assert_eq!(
        inspect_event(&SseEvent::new(Bytes::from_static(b"\xff\xfe"))),
        EventKind::Malformed
    );
    for data in [
        "",
        "  ",
        "{}",
        "{\"type\":\"ping\"}",
        "{\"object\":\"keepalive\"}",
    ] {
        assert_eq!(kind(data), EventKind::Other, "{data:?}");
    }
}

#[test]
fn anthropic_gemini_and_responses_streams() {
    let anthropic = [
        (
            r#"{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":25,"output_tokens":1}}}"#,
            EventKind::Delta { usage: false },
        ),
        (
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            EventKind::Delta { usage: false },
        ),
        (r#"{"type":"ping"}"#, EventKind::Other),
        (
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
            EventKind::Delta { usage: false },
        ),
        (
            r#"{"type":"content_block_stop","index":0}"#,
            EventKind::Delta { usage: false },
        ),
        (
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
            EventKind::Finish { usage: true },
        ),
        (r#"{"type":"message_stop"}"#, EventKind::Done),
    ];
    let mut tracker = StreamTracker::new();
    for (data, expected) in anthropic {
        assert_eq!(tracker.observe(&SseEvent::new(data)), expected, "{data}");
        if expected == (EventKind::Finish { usage: true }) {
            assert_eq!(tracker.status(), StreamStatus::Finished);
        }
    }
    assert_eq!(tracker.status(), StreamStatus::Done);
    assert_eq!(
        kind(
            r#"{"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":1}}"#
        ),
        EventKind::Delta { usage: true }
    );

    assert_eq!(
        kind(
            r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":4}}"#
        ),
        EventKind::Delta { usage: true }
    );
    assert_eq!(
        kind(
            r#"{"candidates":[{"content":{"parts":[{"text":"!"}]},"finishReason":"STOP"}],"usageMetadata":{"totalTokenCount":9}}"#
        ),
        EventKind::Finish { usage: true }
    );

    assert_eq!(
        kind(r#"{"type":"response.output_text.delta","delta":"Hi"}"#),
        EventKind::Delta { usage: false }
    );
    assert_eq!(
        kind(r#"{"type":"response.completed","response":{}}"#),
        EventKind::Done
    );
    assert_eq!(
        kind(r#"{"type":"response.failed","response":{}}"#),
        EventKind::Error
    );
}

#[test]
fn tracker_tells_complete_from_cut() {
    let delta = SseEvent::new(r#"{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}"#);
    let finish = SseEvent::new(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#);
    let error = SseEvent::new(r#"{"error":{"message":"boom"}}"#);
    let malformed = SseEvent::new("{oops");
    let done = SseEvent::new("[DONE]");

    let mut cut = StreamTracker::new();
    assert!(cut.is_open());
    cut.observe(&delta);
    cut.observe(&delta);
    assert!(cut.is_open());
    assert!(!cut.is_complete());

    // Finished without [DONE]: complete.
    let mut finished = StreamTracker::new();
    finished.observe(&delta);
    finished.observe(&finish);
    assert_eq!(finished.status(), StreamStatus::Finished);
    assert!(finished.is_complete());
    finished.observe(&done);
    assert_eq!(finished.status(), StreamStatus::Done);

    // An error after the finish but before [DONE]: errored, and it stays so.
    let mut errored = StreamTracker::new();
    errored.observe(&finish);
    errored.observe(&error);
    errored.observe(&done);
    assert_eq!(errored.status(), StreamStatus::Errored);
    assert!(!errored.is_complete());
    assert!(!errored.is_open());

    // [DONE] is final.
    let mut over = StreamTracker::new();
    over.observe(&done);
    over.observe(&error);
    over.observe(&malformed);
    assert_eq!(over.status(), StreamStatus::Done);
    assert_eq!(over.malformed(), 1);
    assert_eq!(over.events(), 3);

    // `record` for callers that inspected the event already.
    let mut manual = StreamTracker::new();
    manual.record(EventKind::Delta { usage: false });
    manual.record(EventKind::Finish { usage: true });
    assert!(manual.is_complete());
    assert!(manual.saw_usage());
}

#[test]
fn the_done_frame() {
    assert_eq!(DONE_FRAME, b"data: [DONE]\n\n");
    assert_eq!(done_frame(), Bytes::from_static(DONE_FRAME));
    let got = events(DONE_FRAME);
    assert_eq!(got.len(), 1);
    assert_eq!(inspect_event(&got[0]), EventKind::Done);
    assert_eq!(DONE, "[DONE]");
    assert!(got[0].is_done());
}

#[test]
fn error_events_read_back_as_their_kind() {
    for kind in ErrorKind::ALL {
        let frame = openai::error_event(kind, "stream cut after 3 chunks\nretrying won't help");
        assert!(frame.starts_with(b"data: {\"error\":{"));
        assert!(frame.ends_with(b"}}\n\n"));
        // One data line: the message's newline is escaped.
        assert_eq!(frame.iter().filter(|&&b| b == b'\n').count(), 2);
        let got = events(&frame);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event(), None);
        assert_eq!(inspect_event(&got[0]), EventKind::Error);
        let found = parse_error_event(&got[0]).unwrap();
        assert_eq!(found.kind, Some(kind));
        assert_eq!(
            found.message.as_deref(),
            Some("stream cut after 3 chunks\nretrying won't help")
        );
        let json: serde_json::Value = serde_json::from_slice(got[0].data()).unwrap();
        assert_eq!(json["error"]["type"], openai::error_type(kind));
        assert_eq!(json["error"]["code"], openai::error_code(kind));
    }
}

#[test]
fn json_frames_are_one_data_line() {
    let value = serde_json::json!({"text": "two\nlines\r\n", "n": 1});
    let frame = json_frame(&value);
    assert_eq!(frame, "data: {\"n\":1,\"text\":\"two\\nlines\\r\\n\"}\n\n");
    // The same bytes as the general writer.
    let json = serde_json::to_vec(&value).unwrap();
    assert_eq!(frame, SseEvent::new(json).encode());
    let got = events(&frame);
    assert_eq!(got.len(), 1);
    let back: serde_json::Value = serde_json::from_slice(got[0].data()).unwrap();
    assert_eq!(back, value);
}

#[test]
fn encode_round_trips_and_cannot_inject_fields() {
    let event = SseEvent::new("line 1\nline 2\r\nline 3\rline 4")
        .with_event("delta")
        .with_id("9");
    let wire = event.encode();
    assert_eq!(
        &wire[..],
        b"event: delta\nid: 9\ndata: line 1\ndata: line 2\ndata: line 3\ndata: line 4\n\n"
    );
    let back = events(&wire);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].data_str(), Some("line 1\nline 2\nline 3\nline 4"));
    assert_eq!((back[0].event(), back[0].id()), (Some("delta"), Some("9")));

    let hostile = SseEvent::new("x")
        .with_event("a\ndata: injected")
        .with_id("1\r\nevent: b");
    let back = events(&hostile.encode());
    assert_eq!(back.len(), 1);
    assert_eq!(
        (back[0].event(), back[0].id(), back[0].data_str()),
        (Some("a"), Some("1"), Some("x"))
    );
    // An ID with NUL is left out.
    assert_eq!(
        SseEvent::new("x").with_id("a\0b").encode(),
        Bytes::from_static(b"data: x\n\n")
    );
    assert_eq!(
        SseEvent::new("").encode(),
        Bytes::from_static(b"data: \n\n")
    );
}

#[test]
fn debug_never_shows_the_data() {
    let event = SseEvent::new("the secret completion").with_event("message");
    let debug = format!("{event:?}");
    assert!(!debug.contains("secret"), "{debug}");
    assert!(debug.contains("data_len: 21"), "{debug}");
    let mut decoder = SseDecoder::new();
    decoder.push(Bytes::from_static(b"data: the secret"));
    assert!(decoder.next_event().unwrap().is_none());
    assert!(!format!("{decoder:?}").contains("secret"));
}

/// Bytes that look like an event stream: fields, values, line endings, multi-byte characters.
fn sse_like() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(&b"data: "[..]),
        Just(&b"data:"[..]),
        Just(&b"event: "[..]),
        Just(&b"id: "[..]),
        Just(&b"retry: "[..]),
        Just(&b": comment"[..]),
        Just(&b"\n"[..]),
        Just(&b"\r"[..]),
        Just(&b"\r\n"[..]),
        Just(&b"\n\n"[..]),
        Just(&b"[DONE]"[..]),
        Just(&br#"{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}"#[..]),
        Just(&br#"{"choices":[{"finish_reason":"stop"}]}"#[..]),
        Just(&br#"{"error":{"message":"e"}}"#[..]),
        Just("é\u{1F600}".as_bytes()),
        Just(&b"\xEF\xBB\xBF"[..]),
        Just(&b"\0"[..]),
        Just(&b"42"[..]),
        Just(&b":"[..]),
        Just(&b" "[..]),
        Just(&b"x"[..]),
    ];
    proptest::collection::vec(token, 0..60).prop_map(|tokens| tokens.concat())
}

/// Split `input` at the given (unsorted, possibly repeated) fractions of its length.
fn split<'a>(input: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for p in points {
        chunks.push(&input[from..p]);
        from = p;
    }
    chunks.push(&input[from..]);
    chunks
}

/// Split `input` into consecutive chunks of the given sizes (the rest is the last chunk): small
/// sizes cut inside nearly every `\r\n` and multi-byte character.
fn split_sizes<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = input;
    for &size in sizes {
        let (head, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(head);
        rest = tail;
    }
    chunks.push(rest);
    chunks
}

proptest! {
    // XorShift: the default ChaCha generator dominates run time in unoptimised test builds.
    #![proptest_config(ProptestConfig {
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    #[test]
    fn decoding_does_not_depend_on_chunking(
        input in sse_like(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let whole = decode_chunks(&[&input]);
        let pieces = split(&input, &cuts);
        prop_assert_eq!(decode_chunks(&pieces), whole);
    }

    #[test]
    fn decoding_does_not_depend_on_small_chunks(
        input in sse_like(),
        sizes in proptest::collection::vec(1usize..6, 0..400),
    ) {
        let whole = decode_chunks(&[&input]);
        prop_assert_eq!(decode_chunks(&split_sizes(&input, &sizes)), whole);
    }

    #[test]
    fn chunking_does_not_move_the_size_error(
        input in sse_like(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        limit in 0usize..80,
    ) {
        let whole = decode_chunks_with(SseDecoder::with_max_event_size(limit), &[&input]);
        let pieces = split(&input, &cuts);
        prop_assert_eq!(decode_chunks_with(SseDecoder::with_max_event_size(limit), &pieces), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..512),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        limit in 1usize..256,
    ) {
        let mut tracker = StreamTracker::new();
        let decoded = decode_chunks_with(SseDecoder::with_max_event_size(limit), &split(&input, &cuts));
        for event in decoded.iter().flatten() {
            prop_assert!(event.data().len() <= limit);
            tracker.observe(event);
            let _ = parse_error_event(event);
            let _ = event.encode();
        }
    }

    #[test]
    fn inspect_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256), name in "[a-z]{0,8}") {
        let _ = inspect_event(&SseEvent::new(data.clone()).with_event(name));
        let _ = parse_error_event(&SseEvent::new(data));
    }

    #[test]
    fn encode_then_decode_is_identity(
        data in "[^\r\n]{0,40}(\n[^\r\n]{0,40}){0,4}",
        name in "[a-zA-Z_.]{1,16}",
        id in "[a-z0-9-]{0,12}",
    ) {
        let event = SseEvent::new(data.clone()).with_event(name.clone()).with_id(id.clone());
        let back = events(&event.encode());
        prop_assert_eq!(back.len(), 1);
        prop_assert_eq!(back[0].data_str(), Some(data.as_str()));
        prop_assert_eq!(back[0].event(), Some(name.as_str()));
        prop_assert_eq!(back[0].id(), Some(id.as_str()));
        prop_assert_eq!(&back[0], &event);
    }
}
