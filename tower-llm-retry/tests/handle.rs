//! The owned [`RetryHandle`]: taken from the layer before it goes into a `ServiceBuilder`, it
//! shows the configuration, the budget(s) and the counters every service of the layer shares.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};
use tower_llm_core::Target;
use tower_llm_retry::{Backoff, Hedging, RetryBudget, RetryLayer, RetryStats};

type Req = Request<Full<Bytes>>;
type Res = Response<()>;

/// A request to `target` (if any) asking the upstream for `status` after `delay_ms`.
fn req(target: Option<&Target>, status: u16, delay_ms: u64) -> Req {
    let mut req = Request::post("http://llm.test/v1/chat/completions")
        .header("x-status", status)
        .header("x-delay-ms", delay_ms)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    if let Some(target) = target {
        req.extensions_mut().insert(target.clone());
    }
    req
}

/// An upstream answering with the status (after the delay) each request asks for, counting calls.
fn upstream(
    calls: Arc<AtomicU32>,
) -> impl tower::Service<
    Req,
    Response = Res,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Res, Infallible>> + Send,
> + Clone {
    service_fn(move |req: Req| {
        calls.fetch_add(1, Ordering::SeqCst);
        let header = |name: &str| -> u64 { req.headers()[name].to_str().unwrap().parse().unwrap() };
        let (status, delay) = (header("x-status") as u16, header("x-delay-ms"));
        async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            Ok::<_, Infallible>(Response::builder().status(status).body(()).unwrap())
        }
    })
}

fn fast_backoff() -> Backoff {
    Backoff::constant(Duration::from_millis(10))
}

#[tokio::test(start_paused = true)]
async fn counters_through_a_service_builder_chain() {
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .backoff(fast_backoff())
        .no_budget()
        .seed(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let calls = Arc::new(AtomicU32::new(0));
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(upstream(calls.clone()));

    // A success, a failure retried to the end, and a failure that is not retried at all.
    client.clone().oneshot(req(None, 200, 0)).await.unwrap();
    let res = client.clone().oneshot(req(None, 503, 0)).await.unwrap();
    assert_eq!(res.status(), 503);
    client.clone().oneshot(req(None, 401, 0)).await.unwrap();

    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(
        handle.stats(),
        RetryStats {
            calls: 3,
            retries: 2,
            hedges: 0,
            budget_exhausted: 0,
            gave_up: 1,
            recovered: 0,
        }
    );
    assert_eq!(handle.stats().attempts(), 5);
    assert_eq!(handle.config().max_attempts(), 3);
    assert!(handle.budget().is_none(), "no budget");
}

#[tokio::test(start_paused = true)]
async fn services_built_from_one_layer_share_budget_and_counters() {
    // A budget with no floor and no ratio: it pays for no retry at all.
    let layer = RetryLayer::builder()
        .backoff(fast_backoff())
        .budget(RetryBudget::new(Duration::from_secs(10), 0, 0.0).unwrap())
        .build()
        .unwrap();
    let handle = layer.handle();
    let calls = Arc::new(AtomicU32::new(0));
    // As axum's `Router::layer` does: one `layer` call per route.
    let a = layer.layer(upstream(calls.clone()));
    let b = layer.layer(upstream(calls.clone()));
    a.oneshot(req(None, 502, 0)).await.unwrap();
    b.clone().oneshot(req(None, 200, 0)).await.unwrap();
    let stats = handle.stats();
    assert_eq!((stats.calls, stats.retries), (2, 0));
    assert_eq!(stats.budget_exhausted, 1);
    assert_eq!(stats.gave_up, 1);
    assert!(b
        .handle()
        .budget()
        .unwrap()
        .same_as(&handle.budget().unwrap()));
    assert_eq!(b.handle().stats(), stats);
}

#[tokio::test(start_paused = true)]
async fn per_target_budgets_and_hedges_are_visible() {
    let layer = RetryLayer::builder()
        .backoff(fast_backoff())
        .budget_per_target(RetryBudget::new(Duration::from_secs(10), 5, 0.2).unwrap())
        .hedging(Hedging::fixed(Duration::from_millis(100)).with_max_hedges(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(upstream(Arc::default()));
    let (a, b) = (Target::new("a", "m"), Target::new("b", "m"));
    assert!(handle.target_budgets().is_empty());
    assert!(
        handle.budget_for(&a).is_none(),
        "made by the first call to it"
    );

    // Slow enough to be hedged once.
    client
        .clone()
        .oneshot(req(Some(&a), 200, 150))
        .await
        .unwrap();
    // A target that fails every time: retried to the end.
    let res = client.clone().oneshot(req(Some(&b), 500, 0)).await.unwrap();
    assert_eq!(res.status(), 500);

    let mut targets: Vec<Target> = handle
        .target_budgets()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    targets.sort_by_key(|t| t.to_string());
    assert_eq!(targets, [a.clone(), b.clone()]);
    let (budget_a, budget_b) = (
        handle.budget_for(&a).unwrap(),
        handle.budget_for(&b).unwrap(),
    );
    assert!(!budget_a.same_as(&budget_b), "one budget per target");
    assert!(!budget_a.same_as(&handle.budget().unwrap()));
    let stats = handle.stats();
    assert_eq!(stats.hedges, 1);
    assert_eq!(stats.calls, 2);
    assert_eq!(stats.retries, 2);
    assert_eq!(stats.gave_up, 1);
}
