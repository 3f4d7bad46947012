//! Longer answers (`answer_tokens`) and paced streams (`token_interval`), as the load and latency
//! benches use them, over real loopback HTTP.

mod common;

use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::time::Instant;
use tower_llm_chaos::{canonical_tokens, Fault, MockUpstream};

/// The answer text with its tokens repeated up to `n` tokens.
fn repeated(n: usize) -> String {
    canonical_tokens().iter().cycle().take(n).copied().collect()
}

#[tokio::test]
async fn a_longer_answer_repeats_the_tokens_in_json_and_in_a_stream() {
    let upstream = MockUpstream::builder()
        .answer_tokens(60)
        .start()
        .await
        .unwrap();
    let json = json_body(ask(upstream.addr(), "m", false).await.unwrap()).await;
    assert_eq!(json["choices"][0]["message"]["content"], repeated(60));
    assert_eq!(json["usage"]["completion_tokens"], 60);

    let (body, error) = read_body(ask(upstream.addr(), "m", true).await.unwrap()).await;
    assert!(error.is_none());
    let data = sse_data(&body);
    // 60 content events, the finish event, `[DONE]`.
    assert_eq!(data.len(), 62);
    assert_eq!(sse_text(&data), repeated(60));
    let finish: Value = serde_json::from_str(&data[60]).unwrap();
    assert_eq!(finish["usage"]["completion_tokens"], 60);
}

#[tokio::test]
async fn a_cut_counts_events_in_the_longer_answer() {
    let upstream = MockUpstream::builder()
        .answer_tokens(100)
        .default_fault(Fault::CutAfter(40))
        .start()
        .await
        .unwrap();
    let (body, error) = read_body(ask(upstream.addr(), "m", true).await.unwrap()).await;
    assert!(error.is_some(), "the stream is cut");
    assert_eq!(sse_text(&sse_data(&body)), repeated(40));
}

#[tokio::test(start_paused = true)]
async fn paced_events_arrive_one_interval_apart() {
    let interval = Duration::from_millis(20);
    let upstream = MockUpstream::builder()
        .answer_tokens(30)
        .token_interval(interval)
        .start()
        .await
        .unwrap();
    let start = Instant::now();
    let res = ask(upstream.addr(), "m", true).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "headers come at once");
    let mut body = res.into_body();
    let mut bytes = Vec::new();
    let mut first_at = None;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        first_at.get_or_insert_with(|| start.elapsed());
        bytes.extend_from_slice(&data);
    }
    assert_eq!(
        first_at,
        Some(Duration::ZERO),
        "the first event is not delayed"
    );
    // 29 pauses between the content events and one before the finish event; `[DONE]` follows
    // the finish at once. The paused clock only moves to the mock's timers.
    let paced = interval * 30;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= paced && elapsed < paced + interval,
        "{elapsed:?}"
    );
    let data = sse_data(&bytes);
    assert_eq!(data.len(), 32);
    assert_eq!(sse_text(&data), repeated(30));

    // JSON answers are not delayed.
    let start = Instant::now();
    let json = json_body(ask(upstream.addr(), "m", false).await.unwrap()).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(json["choices"][0]["message"]["content"], repeated(30));
}
