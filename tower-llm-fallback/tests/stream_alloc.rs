//! What a committed, watched stream allocates per event (issue 18), counted with a counting
//! global allocator (this test binary holds a single test; the harness's main thread still
//! allocates once right after starting it, which under load can land in a count, so the events
//! are counted in three rounds and a per-event allocation must show in every one): nothing. The watch parses each OpenAI chunk once and borrows its strings; only the
//! transcript's text grows (amortised reallocations of one `String`).

use std::alloc::System;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_core::{BufferRequestBodyLayer, ReplayBody};
use tower_llm_fallback::{FallbackLayer, ResumeConfig, TargetConfig};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// How many content events the stream sends after the first one.
const EVENTS: usize = 200;

/// An upstream body handing out pre-built frames, one per poll (as hyper hands out one
/// chunked-encoding chunk per poll).
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn event(i: usize) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-alloc\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" w{i}\"}},\"finish_reason\":null}}]}}\n\n"
    ))
}

#[test]
fn a_watched_stream_allocates_nothing_per_event() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Built before counting: the whole stream, [DONE] included.
    let mut frames: VecDeque<Bytes> = (0..=EVENTS).map(event).collect();
    frames.push_back(Bytes::from_static(
        b"data: {\"id\":\"chatcmpl-alloc\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    ));
    frames.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    let frames = std::sync::Arc::new(std::sync::Mutex::new(Some(frames)));
    let upstream = service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
        let body = frames.lock().unwrap().take().unwrap_or_default();
        async move {
            let mut res = Response::new(Frames(body));
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            Ok::<_, Infallible>(res)
        }
    });
    // Two targets: the answering one's stream is watched, so it could be resumed on the other.
    let fallback = FallbackLayer::builder()
        .resume(ResumeConfig::default())
        .target(TargetConfig::new("a", "model-a").name("primary"))
        .target(TargetConfig::new("b", "model-b").name("secondary"))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(BufferRequestBodyLayer::default())
        .layer(fallback)
        .service(upstream);
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();

    rt.block_on(async move {
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let mut body = res.into_body();
        // The first events: commit, the transcript's id, its text's first growth.
        for _ in 0..4 {
            body.frame().await.unwrap().unwrap();
        }
        let mut rounds = Vec::new();
        let mut read = 0;
        for round in 0..3 {
            let region = Region::new(GLOBAL);
            for _ in 0..(EVENTS - 3) / 3 {
                let frame = body.frame().await.unwrap().unwrap();
                assert!(frame.data_ref().unwrap().starts_with(b"data: {"));
                read += 1;
            }
            rounds.push((round, region.change()));
        }
        // Before (serde's `Cow<str>` behind an `Option` copies every string): 2 per event.
        let fewest = rounds.iter().map(|(_, s)| s.allocations).min();
        assert_eq!(
            fewest,
            Some(0),
            "allocations over {read} events: {rounds:?}"
        );
        // The transcript's text doubles its capacity as it grows: a handful over 197 events
        // (counted in the rounds the harness left alone).
        let reallocations: usize = rounds
            .iter()
            .filter(|(_, s)| s.allocations == 0)
            .map(|(_, s)| s.reallocations)
            .sum();
        assert!(reallocations <= 8, "{rounds:?}");
        let rest = body.collect().await.unwrap().to_bytes();
        assert!(rest.ends_with(b"data: [DONE]\n\n"));
    });
}
