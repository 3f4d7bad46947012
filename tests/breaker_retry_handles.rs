//! Breaker, keyed breaker and retry in one `ServiceBuilder` chain: their owned handles are taken
//! from the layers before `.service(...)`, calls are driven through the chain, and the state is
//! read (and reset) through the handles alone.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm::breaker::{CircuitBreakerLayer, KeyedCircuitBreakerLayer, State};
use tower_llm::core::{ErrorKind, KindSet, ReplayBody, Target};
use tower_llm::retry::{Backoff, RetryLayer};
use tower_llm::ServiceBuilderExt;

fn request(provider: &str) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::post("http://llm.test/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    req.extensions_mut().insert(Target::new(provider, "m"));
    req
}

#[tokio::test(start_paused = true)]
async fn breaker_keyed_breaker_and_retry_handles_observe_a_built_chain() {
    let breaker = CircuitBreakerLayer::builder()
        .name("chain")
        .consecutive_failures(10)
        .build()
        .unwrap();
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .no_budget()
        .seed(5)
        .build()
        .unwrap();
    // Per target, below the retry: every attempt counts. 429s count too for these providers.
    let keyed = KeyedCircuitBreakerLayer::builder()
        .name("per-target")
        .consecutive_failures(2)
        .failures(KindSet::counts_against_breaker().with(ErrorKind::RateLimited))
        .build()
        .unwrap();
    // The handles, taken before the layers move into the chain.
    let (chain, retries, targets) = (breaker.handle(), retry.handle(), keyed.handle());

    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let calls = Arc::clone(&calls);
        service_fn(move |req: http::Request<ReplayBody<Full<Bytes>>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let status = match req.extensions().get::<Target>().unwrap().provider() {
                "bad" => 429,
                _ => 200,
            };
            async move {
                Ok::<_, Infallible>(http::Response::builder().status(status).body(()).unwrap())
            }
        })
    };
    let client = ServiceBuilder::new()
        .buffer_request_body(64 * 1024)
        .circuit_breaker(breaker)
        .retry_with(retry)
        .keyed_circuit_breaker(keyed)
        .service(upstream);

    let res = client.clone().oneshot(request("good")).await.unwrap();
    assert_eq!(res.status(), 200);
    // Two 429s open the bad target's breaker; the third attempt is rejected below the retry,
    // which leaves a local rejection to the layer above.
    let err = client.clone().oneshot(request("bad")).await.unwrap_err();
    assert!(err.to_string().contains("circuit breaker"), "{err}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "one good call, two bad attempts"
    );

    // Per target.
    assert_eq!(
        targets.keys(),
        [Target::new("good", "m"), Target::new("bad", "m")]
    );
    let bad = targets.get(&Target::new("bad", "m")).unwrap();
    assert_eq!(bad.state(), State::Open);
    assert_eq!(
        targets.get(&Target::new("good", "m")).unwrap().state(),
        State::Closed
    );
    // The retries.
    let stats = retries.stats();
    assert_eq!((stats.calls, stats.retries, stats.gave_up), (2, 2, 1));
    assert_eq!(retries.config().max_attempts(), 3);
    // The chain's breaker saw one success; the local rejection says nothing about the chain.
    let counts = chain.counts();
    assert_eq!((counts.calls, counts.failures), (1, 0));
    assert_eq!(chain.state(), State::Closed);

    // An admin action through the keyed handle: the bad target is let through again.
    targets.reset_all();
    assert_eq!(bad.state(), State::Closed);
    client.clone().oneshot(request("bad")).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}
