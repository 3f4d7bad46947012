//! What the stream guard allocates, counted with a counting global allocator (this test binary
//! holds a single test; the harness's main thread still allocates once right after starting it,
//! which under load can land in a count, so each figure asserted on is the fewest of three
//! rounds: the guard's own count is the same every round, noise only ever adds).
//!
//! - a non-stream response: nothing more than without the guard;
//! - a stream, once committed: nothing per chunk whose events are whole.

use std::alloc::System;
use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_llm_core::{StreamEnd, StreamGuardLayer, StreamOutcome};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn chunk(i: usize) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i}\"}},\"finish_reason\":null}}]}}\n\n"
    ))
}

/// One call through `svc`, its response dropped.
async fn one_call<S>(svc: &mut S)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let res = svc.ready().await.unwrap().call(Request::new(())).await;
    drop(res.unwrap());
}

fn allocations_during<F: Future>(rt: &tokio::runtime::Runtime, fut: F) -> (F::Output, usize) {
    let region = Region::new(GLOBAL);
    let out = rt.block_on(fut);
    (out, region.change().allocations)
}

#[test]
fn the_guard_allocates_nothing_for_json_and_nothing_per_chunk() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();

    // A non-stream response: the same allocations with and without the guard.
    let json = || {
        service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
        })
    };
    let mut bare = json();
    let mut guarded = StreamGuardLayer::new().layer(json());
    // The fewest allocations of three calls, after one to warm up lazily initialised state.
    let fewest = |svc: &mut dyn FnMut() -> usize| {
        svc();
        (0..3).map(|_| svc()).min().unwrap_or(0)
    };
    let bare_allocs = fewest(&mut || allocations_during(&rt, one_call(&mut bare)).1);
    let guarded_allocs = fewest(&mut || allocations_during(&rt, one_call(&mut guarded)).1);
    assert_eq!(
        guarded_allocs, bare_allocs,
        "a JSON response costs the guard nothing"
    );

    // A stream: prebuilt chunks, one event each, as an upstream sends them.
    const CHUNKS: usize = 64;
    let mut parts: Vec<Bytes> = (0..CHUNKS).map(chunk).collect();
    parts.push(Bytes::from_static(
        b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
    ));
    let body = StreamBody::new(futures_util::stream::iter(
        parts
            .into_iter()
            .map(|p| Ok::<_, Infallible>(Frame::data(p))),
    ));
    let res = Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap();
    let res = std::sync::Mutex::new(Some(res));
    let upstream = service_fn(move |_req: Request<()>| {
        let res = res.lock().unwrap().take().unwrap();
        async move { Ok::<_, Infallible>(res) }
    });
    let svc = StreamGuardLayer::new().layer(upstream);
    let (res, commit_allocs) =
        allocations_during(&rt, async { svc.oneshot(Request::new(())).await.unwrap() });
    let outcome = res.extensions().get::<StreamOutcome>().unwrap().clone();
    let mut body = res.into_body();
    let (first, _) = allocations_during(&rt, async { body.frame().await });
    assert_eq!(first.unwrap().unwrap().into_data().unwrap(), chunk(0));

    // Three rounds of 21 chunks: an allocation per chunk shows in every round.
    let mut frames = 0;
    let mut per_chunk_allocs = usize::MAX;
    for _ in 0..3 {
        let (read, allocs) = allocations_during(&rt, async {
            for _ in 0..(CHUNKS - 1) / 3 {
                body.frame().await.unwrap().unwrap();
            }
            (CHUNKS - 1) / 3
        });
        frames += read;
        per_chunk_allocs = per_chunk_allocs.min(allocs);
    }
    assert_eq!(frames, CHUNKS - 1);
    assert_eq!(
        per_chunk_allocs, 0,
        "{per_chunk_allocs} allocations for {frames} chunks"
    );
    let (_, end_allocs) = allocations_during(&rt, async { while body.frame().await.is_some() {} });
    assert_eq!(outcome.end(), Some(StreamEnd::Complete));
    println!(
        "allocations: JSON call {bare_allocs} bare / {guarded_allocs} guarded; stream: commit \
         {commit_allocs}, {per_chunk_allocs} for {frames} chunks, end {end_allocs}"
    );
}
