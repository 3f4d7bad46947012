//! Property: whatever callers do — cancel their call after any number of suspensions, drop the
//! response body after any number of frames, or hit an upstream that fails or panics — every
//! permit, queue place and in-flight count returns to zero, and the limit is never exceeded.
//! Callers whose attempt has a deadline ([`AttemptBudget`]) are never kept waiting past it: they
//! reach the upstream, or are rejected, by then.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::Probe;
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_bulkhead::{BulkheadLayer, RateLimit, TokenLimit};
use tower_llm_core::{AttemptBudget, BulkheadFull};

/// Drops its future after it suspended `suspensions` times (`None`: never): cancellation at an
/// arbitrary await point.
struct CancelAfter<F> {
    inner: Option<Pin<Box<F>>>,
    suspensions: Option<u32>,
}

impl<F: Future> Future for CancelAfter<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => match &mut self.suspensions {
                Some(0) => {
                    self.inner = None;
                    Poll::Ready(None)
                }
                Some(n) => {
                    *n -= 1;
                    Poll::Pending
                }
                None => Poll::Pending,
            },
        }
    }
}

fn cancel_after<F: Future>(fut: F, suspensions: Option<u32>) -> CancelAfter<F> {
    CancelAfter {
        inner: Some(Box::pin(fut)),
        suspensions,
    }
}

#[derive(Clone, Debug)]
enum Upstream {
    Answer { chunks: usize, gap_ms: u64 },
    Fail,
    Panic,
}

#[derive(Clone, Debug)]
struct Caller {
    start_ms: u64,
    latency_ms: u64,
    upstream: Upstream,
    cancel_call_after: Option<u32>,
    drop_body_after: Option<usize>,
    /// The attempt's deadline, in ms after the call starts.
    deadline_ms: Option<u64>,
}

fn caller() -> impl Strategy<Value = Caller> {
    let upstream = prop_oneof![
        6 => (0usize..5, 0u64..50).prop_map(|(chunks, gap_ms)| Upstream::Answer { chunks, gap_ms }),
        1 => Just(Upstream::Fail),
        1 => Just(Upstream::Panic),
    ];
    (
        0u64..300,
        0u64..200,
        upstream,
        prop::option::weighted(0.4, 0u32..6),
        prop::option::weighted(0.4, 0usize..4),
        prop::option::weighted(0.5, 0u64..400),
    )
        .prop_map(
            |(start_ms, latency_ms, upstream, cancel_call_after, drop_body_after, deadline_ms)| {
                Caller {
                    start_ms,
                    latency_ms,
                    upstream,
                    cancel_call_after,
                    drop_body_after,
                    deadline_ms,
                }
            },
        )
}

#[derive(Clone, Debug)]
struct Limits {
    max_concurrent: usize,
    max_queued: usize,
    max_wait_ms: u64,
    rate: Option<(u32, u64)>,
    tokens: Option<(u64, u64)>,
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        1usize..5,
        0usize..6,
        0u64..300,
        prop::option::of((5u32..50, 0u64..200)),
        prop::option::of((50u64..2000, 0u64..200)),
    )
        .prop_map(
            |(max_concurrent, max_queued, max_wait_ms, rate, tokens)| Limits {
                max_concurrent,
                max_queued,
                max_wait_ms,
                rate,
                tokens,
            },
        )
}

fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&"injected upstream panic") {
                default(info);
            }
        }));
    });
}

async fn scenario(limits: Limits, callers: Vec<Caller>) {
    let probe = Probe::default();
    let mut builder = BulkheadLayer::builder()
        .max_concurrent(limits.max_concurrent)
        .max_queued(limits.max_queued)
        .max_wait(Duration::from_millis(limits.max_wait_ms));
    if let Some((per_second, wait)) = limits.rate {
        builder = builder
            .rate_limit(RateLimit::per_second(per_second).max_wait(Duration::from_millis(wait)));
    }
    let token_limit = limits
        .tokens
        .map(|(tokens, wait)| TokenLimit::per_minute(tokens).max_wait(Duration::from_millis(wait)))
        .unwrap_or(TokenLimit::per_minute(u64::MAX));
    // Each request costs half its latency in tokens (so some wait or are refused, a few are too large).
    let layer = builder
        .token_limit(token_limit, |req: &http::Request<Caller>| {
            req.body().latency_ms / 2
        })
        .build()
        .unwrap();
    let probe_in = probe.clone();
    let upstream = service_fn(move |req: http::Request<Caller>| {
        let probe = probe_in.clone();
        async move {
            let inside = probe.enter();
            if let Some(budget) = req.extensions().get::<AttemptBudget>() {
                assert!(
                    tokio::time::Instant::now() <= budget.deadline(),
                    "admitted after its deadline"
                );
            }
            let caller = req.into_body();
            tokio::time::sleep(Duration::from_millis(caller.latency_ms)).await;
            match caller.upstream {
                Upstream::Fail => Err(std::io::Error::other("injected failure")),
                Upstream::Panic => panic!("injected upstream panic"),
                Upstream::Answer { chunks, gap_ms } => {
                    drop(inside);
                    let stream = futures_util::stream::unfold(0usize, move |i| async move {
                        if i == chunks {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
                        Some((
                            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"x"))),
                            i + 1,
                        ))
                    });
                    Ok(http::Response::new(http_body_util::StreamBody::new(stream)))
                }
            }
        }
    });
    let svc = ServiceBuilder::new().layer(layer).service(upstream);
    let handle = svc.handle();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for c in callers {
        let svc = svc.clone();
        let handle = handle.clone();
        let limit = limits.max_concurrent;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + Duration::from_millis(c.start_ms)).await;
            let mut req = http::Request::new(c.clone());
            let deadline = c
                .deadline_ms
                .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
            if let Some(deadline) = deadline {
                req.extensions_mut().insert(AttemptBudget::until(deadline));
            }
            let call = svc.oneshot(req);
            let res = match cancel_after(call, c.cancel_call_after).await {
                Some(Ok(res)) => res,
                Some(Err(err)) => {
                    if let (Some(deadline), Some(full)) =
                        (deadline, err.downcast_ref::<BulkheadFull>())
                    {
                        let now = tokio::time::Instant::now();
                        assert!(now <= deadline, "{full}: rejected after its deadline");
                    }
                    return;
                }
                None => return,
            };
            assert!(handle.in_flight() <= limit);
            let mut body = std::pin::pin!(res.into_body());
            let mut frames = 0;
            while c.drop_body_after != Some(frames) {
                match body.as_mut().frame().await {
                    Some(Ok(_)) => frames += 1,
                    _ => break,
                }
            }
        }));
    }
    for t in tasks {
        // An injected upstream panic surfaces as a panicked task; any other panic is a failure.
        if let Err(err) = t.await {
            let payload = err.into_panic();
            if payload.downcast_ref::<&str>() != Some(&"injected upstream panic") {
                std::panic::resume_unwind(payload);
            }
        }
    }
    assert_eq!(handle.in_flight(), 0, "every permit came back");
    assert_eq!(handle.queued(), 0, "every waiter left the queue");
    assert_eq!(probe.current(), 0);
    assert!(
        probe.max() <= limits.max_concurrent,
        "{} > {}",
        probe.max(),
        limits.max_concurrent
    );
    // Once time passes, the token budget is whole again (no charge leaked as debt).
    if let Some((tokens, _)) = limits.tokens {
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(handle.snapshot()[0].tokens_available, Some(tokens));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn in_flight_returns_to_zero_whatever_callers_do(limits in limits(), callers in prop::collection::vec(caller(), 1..40)) {
        quiet_injected_panics();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(scenario(limits, callers));
    }
}
