//! Assistant prefill (continue, reject, ignore) and the alternate answer text, over real loopback
//! HTTP with a hyper client.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower_llm_chaos::canonical::{self, Answer};
use tower_llm_chaos::upstream::COMPLETIONS_PATH;
use tower_llm_chaos::{
    alternate_tokens, canonical_tokens, Fault, MockUpstream, Prefill, ALTERNATE_ANSWER,
    CANONICAL_ANSWER,
};

const MODEL: &str = "vllm-llama";

/// A chat request whose last message is the assistant's, holding `content`.
fn prefilled(content: Value, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "stream": stream,
        "messages": [
            {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": content},
        ],
    })
}

fn post(body: &Value) -> Request<Full<Bytes>> {
    Request::post(COMPLETIONS_PATH)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::from(body.to_string()))
        .expect("request")
}

async fn send(sender: &mut SendRequest<Full<Bytes>>, body: &Value) -> Response<Incoming> {
    sender.ready().await.expect("connection ready");
    sender.send_request(post(body)).await.expect("response")
}

async fn mock(prefill: Prefill, answer: Answer) -> MockUpstream {
    MockUpstream::builder()
        .prefill(prefill)
        .answer(answer)
        .start()
        .await
        .expect("start the mock")
}

/// A streamed answer's text, checking it is a whole stream: one `[DONE]`, last, after a finish
/// event, no error.
async fn stream_text(res: Response<Incoming>) -> String {
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let (body, error) = read_body(res).await;
    assert!(error.is_none(), "the stream failed: {error:?}");
    let data = sse_data(&body);
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let finish: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    sse_text(&data)
}

/// A JSON answer's content.
async fn json_text(res: Response<Incoming>) -> String {
    assert_eq!(res.status(), 200);
    let json = json_body(res).await;
    json["choices"][0]["message"]["content"]
        .as_str()
        .expect("string content")
        .to_owned()
}

async fn text(res: Response<Incoming>, stream: bool) -> String {
    if stream {
        stream_text(res).await
    } else {
        json_text(res).await
    }
}

/// The usage the mock reports for `request` answered with `tokens`.
fn usage_for(request: &Value, tokens: &[&str]) -> canonical::Usage {
    canonical::usage_of(tokens, canonical::estimate_usage(request).prompt_tokens)
}

#[tokio::test]
async fn continue_mid_token_streams_the_rest_of_that_token_first() {
    let upstream = mock(Prefill::Continue, Answer::Canonical).await;
    let sent = "Resilience is the a";
    let request = prefilled(json!(sent), true);
    let res = send(&mut connect(upstream.addr()).await, &request).await;
    assert_eq!(res.status(), 200);
    let (body, error) = read_body(res).await;
    assert!(error.is_none());

    // Exactly the healthy stream's shape over the continuation: same id scheme, model, role on
    // the first content event, finish with usage, one `[DONE]`.
    let rest: Vec<&str> = ["rt"]
        .into_iter()
        .chain(canonical_tokens()[4..].iter().copied())
        .collect();
    let expected = canonical::sse_events_of(&rest, 1, MODEL, usage_for(&request, &rest));
    assert_eq!(body, concat(&expected));

    let data = sse_data(&body);
    assert_eq!(data.len(), rest.len() + 2);
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["id"], "chatcmpl-mock-1");
    assert_eq!(first["model"], MODEL);
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["choices"][0]["delta"]["content"], "rt");
    let finish: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(finish["usage"]["completion_tokens"], rest.len() as u64);
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
    assert_eq!(sse_text(&data), CANONICAL_ANSWER[sent.len()..]);
}

#[tokio::test]
async fn continue_on_a_token_boundary_starts_with_the_next_token() {
    let upstream = mock(Prefill::Continue, Answer::Canonical).await;
    let sent = "Resilience is the";
    let mut conn = connect(upstream.addr()).await;
    let request = prefilled(json!(sent), true);
    let (body, error) = read_body(send(&mut conn, &request).await).await;
    assert!(error.is_none());
    let rest = &canonical_tokens()[3..];
    assert_eq!(
        body,
        concat(&canonical::sse_events_of(
            rest,
            1,
            MODEL,
            usage_for(&request, rest)
        ))
    );
    let data = sse_data(&body);
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], " art");
    assert_eq!(sse_text(&data), CANONICAL_ANSWER[sent.len()..]);

    // The whole text as prefill: nothing left but the finish event and `[DONE]`.
    let request = prefilled(json!(CANONICAL_ANSWER), true);
    let res = send(&mut conn, &request).await;
    assert_eq!(stream_text(res).await, "");
}

#[tokio::test]
async fn continue_json_is_the_completion_of_the_rest() {
    let upstream = mock(Prefill::Continue, Answer::Canonical).await;
    let mut conn = connect(upstream.addr()).await;
    for (seq, sent) in [(1, "Resilience is the a"), (2, "Resilience is the")] {
        let request = prefilled(json!(sent), false);
        let res = send(&mut conn, &request).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/json");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let rest = canonical::continuation(canonical_tokens(), sent).unwrap();
        assert_eq!(
            body,
            canonical::completion_json_of(&rest, seq, MODEL, usage_for(&request, &rest))
        );
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json["choices"][0]["message"]["content"],
            CANONICAL_ANSWER[sent.len()..]
        );
        assert_eq!(json["choices"][0]["message"]["role"], "assistant");
    }
}

#[tokio::test]
async fn continue_with_content_parts_and_vllm_flags() {
    let upstream = mock(Prefill::Continue, Answer::Canonical).await;
    let mut request = prefilled(
        json!([
            {"type": "text", "text": "Resilience is the art"},
            {"type": "text", "text": " of answ"},
        ]),
        true,
    );
    // The server-specific flags a resuming client sends to vLLM are ignored, and logged.
    request["continue_final_message"] = json!(true);
    request["add_generation_prompt"] = json!(false);
    let res = send(&mut connect(upstream.addr()).await, &request).await;
    let sent = "Resilience is the art of answ";
    assert_eq!(stream_text(res).await, CANONICAL_ANSWER[sent.len()..]);
    let logged: Value = serde_json::from_slice(&upstream.attempts()[0].body).unwrap();
    assert_eq!(logged["continue_final_message"], true);
    assert_eq!(logged["add_generation_prompt"], false);
}

#[tokio::test]
async fn continue_with_a_non_prefix_answers_the_whole_text() {
    let upstream = mock(Prefill::Continue, Answer::Canonical).await;
    let mut conn = connect(upstream.addr()).await;
    let not_prefixes = [
        json!("Resilience was"),
        json!("resilience"),
        json!(""),
        // The alternate text's beginning is not the canonical text's.
        json!(&ALTERNATE_ANSWER[..25]),
        json!(format!("{CANONICAL_ANSWER} And more.")),
        json!(null),
    ];
    for content in not_prefixes {
        for stream in [true, false] {
            let res = send(&mut conn, &prefilled(content.clone(), stream)).await;
            assert_eq!(text(res, stream).await, CANONICAL_ANSWER, "{content}");
        }
    }
    // A final user message is no prefill, even after an assistant one.
    let request = json!({"model": MODEL, "stream": true, "messages": [
        {"role": "assistant", "content": "Resilience is"},
        {"role": "user", "content": PROMPT},
    ]});
    assert_eq!(
        stream_text(send(&mut conn, &request).await).await,
        CANONICAL_ANSWER
    );
}

#[tokio::test]
async fn faults_apply_to_the_continuation() {
    let upstream = MockUpstream::builder()
        .prefill(Prefill::Continue)
        .default_fault(Fault::CutAfter(2))
        .start()
        .await
        .unwrap();
    let sent = "Resilience is the a";
    let request = prefilled(json!(sent), true);
    let res = send(&mut connect(upstream.addr()).await, &request).await;
    let (body, error) = read_body(res).await;
    assert!(error.is_some(), "the continuation is cut");
    let rest = canonical::continuation(canonical_tokens(), sent).unwrap();
    let expected = canonical::sse_events_of(&rest, 1, MODEL, usage_for(&request, &rest));
    assert_eq!(body, concat(&expected[..2]));
    assert_eq!(sse_text(&sse_data(&body)), "rt of");

    // A JSON continuation cut after 2 tokens stops right after them.
    let request = prefilled(json!(sent), false);
    let res = send(&mut connect(upstream.addr()).await, &request).await;
    let (body, error) = read_body(res).await;
    assert!(error.is_some());
    assert!(body.ends_with(b"\"content\":\"rt of"), "{body:?}");
}

#[tokio::test]
async fn reject_answers_400_in_the_openai_shape_and_logs_it() {
    let upstream = MockUpstream::builder()
        .prefill(Prefill::Reject)
        .default_fault(Fault::status(503))
        .start()
        .await
        .unwrap();
    let mut conn = connect(upstream.addr()).await;
    for stream in [true, false] {
        let res = send(&mut conn, &prefilled(json!("Resilience is"), stream)).await;
        assert_eq!(res.status(), 400, "the rejection comes before any fault");
        assert_eq!(res.headers()["content-type"], "application/json");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            concat!(
                r#"{"error":{"message":"assistant prefill is not supported","#,
                r#""type":"invalid_request_error","param":"messages","code":null}}"#
            )
        );
    }
    // Any final assistant message is a prefill, whatever its content.
    let res = send(&mut conn, &prefilled(json!(null), false)).await;
    assert_eq!(res.status(), 400);
    // Without a prefill the fault applies.
    let res = send(&mut conn, &chat_json(MODEL, false)).await;
    assert_eq!(res.status(), 503);

    let attempts = upstream.attempts();
    assert_eq!(attempts.len(), 4);
    for attempt in &attempts[..3] {
        assert_eq!(attempt.fault, "prefill_rejected");
        assert_eq!(attempt.status, Some(400));
        assert_eq!(attempt.seq, 0);
        assert_eq!(attempt.model, MODEL);
    }
    assert!(attempts[0].stream);
    assert_eq!((attempts[3].fault, attempts[3].seq), ("status", 1));
}

#[tokio::test]
async fn ignore_is_the_default_and_answers_from_the_beginning() {
    let upstream = MockUpstream::builder().start().await.unwrap();
    let mut conn = connect(upstream.addr()).await;
    for stream in [true, false] {
        let request = prefilled(json!("Resilience is the a"), stream);
        let res = send(&mut conn, &request).await;
        assert_eq!(text(res, stream).await, CANONICAL_ANSWER);
    }
    upstream.set_prefill(Prefill::Ignore);
    let request = prefilled(json!("Resilience is"), true);
    let (body, _) = read_body(send(&mut conn, &request).await).await;
    let expected = canonical::sse_events(3, MODEL, canonical::estimate_usage(&request));
    assert_eq!(body, concat(&expected));
}

#[tokio::test]
async fn alternate_answers_the_alternate_text_and_continues_it() {
    let upstream = mock(Prefill::Ignore, Answer::Alternate).await;
    let mut conn = connect(upstream.addr()).await;
    let request = chat_json(MODEL, true);
    let (body, _) = read_body(send(&mut conn, &request).await).await;
    let usage = usage_for(&request, alternate_tokens());
    assert_eq!(
        body,
        concat(&canonical::sse_events_of(
            alternate_tokens(),
            1,
            MODEL,
            usage
        ))
    );
    assert_eq!(sse_text(&sse_data(&body)), ALTERNATE_ANSWER);
    let res = send(&mut conn, &chat_json(MODEL, false)).await;
    assert_eq!(json_text(res).await, ALTERNATE_ANSWER);

    // A replay diverges from the canonical text after "Resilience is the".
    let common = CANONICAL_ANSWER
        .chars()
        .zip(ALTERNATE_ANSWER.chars())
        .take_while(|(a, b)| a == b)
        .count();
    assert_eq!(&ALTERNATE_ANSWER[..common], "Resilience is the ");

    // Continue applies to the alternate text; a canonical prefix beyond the shared part is not
    // a prefix of it.
    upstream.set_prefill(Prefill::Continue);
    let res = send(&mut conn, &prefilled(json!("Resilience is the hab"), true)).await;
    assert_eq!(
        stream_text(res).await,
        ALTERNATE_ANSWER["Resilience is the hab".len()..]
    );
    let res = send(&mut conn, &prefilled(json!("Resilience is the ar"), false)).await;
    assert_eq!(json_text(res).await, ALTERNATE_ANSWER);
}

#[tokio::test]
async fn runtime_setters_change_the_answer_and_survive_set_profile() {
    let upstream = MockUpstream::builder().start().await.unwrap();
    let handle = upstream.handle();
    let mut conn = connect(upstream.addr()).await;
    let request = prefilled(json!("Resilience is the"), false);

    handle.set_prefill(Prefill::Continue);
    handle.set_answer(Answer::Alternate);
    let res = send(&mut conn, &request).await;
    assert_eq!(
        json_text(res).await,
        ALTERNATE_ANSWER["Resilience is the".len()..]
    );

    upstream.set_profile("model other=status:500".parse().unwrap());
    let res = send(&mut conn, &request).await;
    assert_eq!(
        json_text(res).await,
        ALTERNATE_ANSWER["Resilience is the".len()..],
        "set_profile keeps the prefill behaviour and the answer text"
    );

    upstream.set_answer(Answer::Canonical);
    upstream.set_prefill(Prefill::Reject);
    assert_eq!(send(&mut conn, &request).await.status(), 400);
    let res = send(&mut conn, &chat_json(MODEL, false)).await;
    assert_eq!(json_text(res).await, CANONICAL_ANSWER);
}

/// Every cut point of both texts, streamed and not: the prefix and the continuation make the
/// whole text again.
#[tokio::test]
async fn every_prefix_plus_its_continuation_is_the_whole_answer() {
    let upstream = mock(Prefill::Continue, Answer::Canonical).await;
    let mut conn = connect(upstream.addr()).await;
    for answer in [Answer::Canonical, Answer::Alternate] {
        upstream.set_answer(answer);
        let whole = answer.text();
        for k in (0..=whole.len()).filter(|k| whole.is_char_boundary(*k)) {
            let sent = &whole[..k];
            for stream in [true, false] {
                let res = send(&mut conn, &prefilled(json!(sent), stream)).await;
                let rest = text(res, stream).await;
                // An empty prefill is no prefill: the whole answer.
                let expected = if k == 0 { whole } else { &whole[k..] };
                assert_eq!(rest, expected, "{answer} k={k} stream={stream}");
            }
        }
    }
}

/// A prefix of the answer text split into arbitrary content parts, possibly spoilt by one
/// changed character: the mock continues exactly the text or answers it whole.
#[test]
fn prefill_in_parts_continues_exactly_or_answers_whole() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (upstream, conn) = runtime.block_on(async {
        let upstream = mock(Prefill::Continue, Answer::Canonical).await;
        let conn = connect(upstream.addr()).await;
        (upstream, conn)
    });
    // One keep-alive connection for every case (proptest's closure is `Fn`).
    let conn = std::cell::Cell::new(Some(conn));
    let cases = (
        any::<bool>(),
        any::<bool>(),
        0..=CANONICAL_ANSWER.len(),
        proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        proptest::option::of((any::<prop::sample::Index>(), any::<char>())),
    );
    let config = ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    };
    proptest!(config, |((alternate, stream, k, splits, spoil) in cases)| {
        let answer = if alternate { Answer::Alternate } else { Answer::Canonical };
        let whole = answer.text();
        let k = k.min(whole.len());
        let mut sent = whole[..k].to_owned();
        if let Some((at, c)) = spoil.filter(|_| k > 0) {
            let at = at.index(k);
            sent.replace_range(at..=at, &c.to_string());
        }
        let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(sent.len() + 1)).collect();
        cuts.retain(|c| sent.is_char_boundary(*c));
        cuts.extend([0, sent.len()]);
        cuts.sort_unstable();
        let parts: Vec<Value> = cuts
            .windows(2)
            .map(|w| json!({"type": "text", "text": &sent[w[0]..w[1]]}))
            .collect();
        upstream.set_answer(answer);
        // A case that failed kept its connection: the next one (shrinking) opens another.
        let mut sender = match conn.take() {
            Some(sender) => sender,
            None => runtime.block_on(connect(upstream.addr())),
        };
        let rest = runtime.block_on(async {
            let res = send(&mut sender, &prefilled(Value::Array(parts), stream)).await;
            text(res, stream).await
        });
        conn.set(Some(sender));
        let expected = match whole.strip_prefix(sent.as_str()) {
            Some(rest) if !sent.is_empty() => rest,
            _ => whole,
        };
        prop_assert_eq!(rest, expected);
    });
}
