//! What a committed, watched stream allocates per event (issue 18), counted with a counting
//! global allocator (this test binary holds a single test; the harness's main thread still
//! allocates once right after starting it, which under load can land in a count, so the events
//! are counted in three rounds and a per-event allocation must show in every one): nothing. The
//! watch parses each OpenAI chunk once and borrows its strings; only the transcript's text grows
//! (amortised reallocations of one `String`). With core's stream guard below, the watch reads
//! every event from the guard's scan notes instead of scanning it again, and commits to the
//! stream without reading its first event a second time.

use std::alloc::System;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::util::BoxCloneSyncService;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_core::sse::scan_plain_chunk;
use tower_llm_core::{
    BoxError, BufferRequestBodyLayer, ReplayBody, StreamGuardLayer, StreamOutcome,
};
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

fn event(i: usize) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-alloc\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" w{i}\"}},\"finish_reason\":null}}]}}\n\n"
    )
}

/// The whole stream, [DONE] included, as frames cut from one buffer (as hyper's are: slices of
/// what it read, so handing one on clones no allocation).
fn frames() -> VecDeque<Bytes> {
    let mut texts: Vec<String> = (0..=EVENTS).map(event).collect();
    texts.push(
        "data: {\"id\":\"chatcmpl-alloc\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".to_owned(),
    );
    texts.push("data: [DONE]\n\n".to_owned());
    let all = Bytes::from(texts.concat());
    let mut at = 0;
    texts
        .iter()
        .map(|text| {
            at += text.len();
            all.slice(at - text.len()..at)
        })
        .collect()
}

/// What the spy between the fallback and the guard saw.
#[derive(Default)]
struct Seen {
    /// Frames handed up (by the guard, when there is one).
    frames: AtomicUsize,
    /// Of them, events the guard had noted, with what the scan of their data gives.
    noted: AtomicUsize,
}

/// The guard's body on its way up to the fallback: checks that each event is in the guard's
/// notes, as the scan reads it, and leaves the note for the watch above.
struct Spy {
    inner: Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>,
    outcome: Option<StreamOutcome>,
    seen: Arc<Seen>,
}

impl Body for Spy {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            self.seen.frames.fetch_add(1, Ordering::Relaxed);
            let notes = self.outcome.as_ref().and_then(StreamOutcome::scan_notes);
            if let (Some(data), Some(notes)) = (frame.data_ref(), notes) {
                // `data: <json>\n\n`: the event's data, at the address the decoders cut it.
                let json = data.slice(6..data.len() - 2);
                if let Some(noted) = notes.get(&json) {
                    assert_eq!(noted, scan_plain_chunk(&json));
                    notes.note(&json, noted.as_ref());
                    self.seen.noted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        polled
    }
}

/// Puts a [`Spy`] over a response's body.
fn spy<B>(seen: &Arc<Seen>) -> impl Fn(Response<B>) -> Response<Spy> + Clone
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let seen = Arc::clone(seen);
    move |res| {
        let outcome = res.extensions().get::<StreamOutcome>().cloned();
        let seen = Arc::clone(&seen);
        res.map(|inner| Spy {
            inner: Box::pin(inner.map_err(Into::into)),
            outcome,
            seen,
        })
    }
}

#[test]
fn a_watched_stream_allocates_nothing_per_event() {
    count_per_event(false);
    count_per_event(true);
}

/// Reads a watched stream through the fallback (and with `guarded`, core's stream guard below
/// it) and counts the allocations per event.
fn count_per_event(guarded: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Built before counting.
    let frames = Arc::new(std::sync::Mutex::new(Some(frames())));
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
    let seen = Arc::new(Seen::default());
    let upstream: BoxCloneSyncService<_, Response<Spy>, BoxError> = if guarded {
        let guarded = ServiceBuilder::new()
            .map_response(spy(&seen))
            .layer(StreamGuardLayer::new())
            .service(upstream);
        BoxCloneSyncService::new(guarded.map_err(BoxError::from))
    } else {
        let bare = ServiceBuilder::new()
            .map_response(spy(&seen))
            .service(upstream);
        BoxCloneSyncService::new(bare.map_err(BoxError::from))
    };
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
        let outcome = res.extensions().get::<StreamOutcome>().cloned();
        assert_eq!(outcome.is_some(), guarded);
        // Without a guard the fallback read the first event to commit to the stream; with one,
        // the guard had (its outcome says so) and the fallback read nothing yet.
        assert_eq!(
            seen.frames.load(Ordering::Relaxed),
            usize::from(!guarded),
            "guarded: {guarded}"
        );
        let mut body = res.into_body();
        // The first events: commit, the transcript's id, its text's first growth.
        for _ in 0..4 {
            body.frame().await.unwrap().unwrap();
        }
        if guarded {
            // The first answer event too: the guard judged it before anyone could ask for
            // notes, kept its note, and handed it over with the event.
            assert_eq!(
                seen.noted.load(Ordering::Relaxed),
                seen.frames.load(Ordering::Relaxed)
            );
        }
        let noted_before = seen.noted.load(Ordering::Relaxed);
        let mut rounds = Vec::new();
        let mut read = 0;
        for round in 0..3 {
            let region = Region::new(GLOBAL);
            for _ in 0..(EVENTS - 3) / 3 {
                let frame = body.frame().await.unwrap().unwrap();
                assert!(frame.data_ref().unwrap().starts_with(b"data: {"));
                read += 1;
                if let Some(outcome) = &outcome {
                    // The watch read the event's note: none is left behind.
                    assert_eq!(outcome.scan_notes().map(|notes| notes.len()), Some(0));
                }
            }
            rounds.push((round, region.change()));
        }
        if guarded {
            // Every event read was answered by the guard's notes.
            assert_eq!(seen.noted.load(Ordering::Relaxed) - noted_before, read);
        } else {
            assert_eq!(seen.noted.load(Ordering::Relaxed), 0);
        }
        // Before (serde's `Cow<str>` behind an `Option` copies every string): 2 per event.
        let fewest = rounds.iter().map(|(_, s)| s.allocations).min();
        assert_eq!(
            fewest,
            Some(0),
            "guarded: {guarded}, allocations over {read} events: {rounds:?}"
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
