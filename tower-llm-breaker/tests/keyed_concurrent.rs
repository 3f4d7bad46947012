//! Keyed breakers (bound, eviction, overflow, listeners, custom keys) and concurrent callers on
//! a multi-threaded runtime.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_llm_breaker::{CircuitBreakerLayer, KeyedCircuitBreakerLayer, State, DEFAULT_MAX_KEYS};
use tower_llm_core::{BoxError, BreakerOpen, Classification, Classify, NoBudget, Target};

type Req = http::Request<u16>;
type Res = http::Response<()>;

fn keyed_request(provider: &str, status: u16) -> Req {
    let mut req = http::Request::new(status);
    req.extensions_mut().insert(Target::new(provider, "m"));
    req
}

fn status_service(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Req,
    Response = Res,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Res, Infallible>> + Send,
> + Clone
       + Send
       + 'static {
    service_fn(move |req: Req| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            // Give other tasks a chance to interleave with this call.
            tokio::task::yield_now().await;
            Ok::<_, Infallible>(
                http::Response::builder()
                    .status(*req.body())
                    .body(())
                    .unwrap(),
            )
        }
    })
}

async fn call<S>(svc: &mut S, req: Req) -> Result<Res, BoxError>
where
    S: Service<Req, Response = Res, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

#[tokio::test(start_paused = true)]
async fn the_key_bound_evicts_closed_breakers_then_overflows() {
    let layer = KeyedCircuitBreakerLayer::builder()
        .name("llm")
        .consecutive_failures(1)
        .max_keys(2)
        .build()
        .unwrap();
    let breakers = layer.handle();
    assert_eq!(breakers.max_keys(), 2);
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    breakers.on_state_change(move |c| seen.lock().unwrap().push((c.breaker.to_string(), c.to)));
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(status_service(Arc::new(AtomicUsize::new(0))));

    call(&mut svc, keyed_request("a", 500)).await.unwrap(); // a opens
    call(&mut svc, keyed_request("b", 200)).await.unwrap();
    assert_eq!(
        breakers.keys(),
        [Target::new("a", "m"), Target::new("b", "m")]
    );
    // c evicts b, the oldest closed breaker; a is open and stays.
    call(&mut svc, keyed_request("c", 500)).await.unwrap(); // c opens
    assert_eq!(
        breakers.keys(),
        [Target::new("a", "m"), Target::new("c", "m")]
    );
    assert!(call(&mut svc, keyed_request("a", 200))
        .await
        .unwrap_err()
        .is::<BreakerOpen>());
    // Every breaker is open: d goes through the overflow breaker.
    call(&mut svc, keyed_request("d", 200)).await.unwrap();
    assert_eq!(breakers.len(), 2);
    assert_eq!(breakers.overflow().name(), "llm:overflow");
    assert_eq!(breakers.overflow().counts().calls, 1);
    // Requests without a target use the unkeyed breaker.
    call(&mut svc, http::Request::new(200)).await.unwrap();
    assert_eq!(breakers.unkeyed().name(), "llm");
    assert_eq!(breakers.unkeyed().counts().calls, 1);

    assert_eq!(
        *events.lock().unwrap(),
        [
            ("a/m".to_owned(), State::Open),
            ("c/m".to_owned(), State::Open)
        ],
        "listeners reach breakers created after they were added"
    );
    let names: Vec<String> = breakers.snapshots().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["a/m", "c/m", "llm", "llm:overflow"]);
    breakers.reset_all();
    assert!(call(&mut svc, keyed_request("a", 200)).await.is_ok());

    assert!(KeyedCircuitBreakerLayer::builder()
        .max_keys(0)
        .build()
        .is_err());
    assert_eq!(
        KeyedCircuitBreakerLayer::new().handle().max_keys(),
        DEFAULT_MAX_KEYS
    );
}

#[tokio::test(start_paused = true)]
async fn a_custom_key_and_classifier_for_a_typed_client() {
    #[derive(Clone)]
    struct Unit;
    impl Classify<()> for Unit {
        fn classify_response(&self, _: &()) -> Classification {
            Classification::Success
        }
    }
    let typed = service_fn(|(_region, up): (&'static str, bool)| async move {
        if up {
            Ok(())
        } else {
            Err(std::io::Error::other("down"))
        }
    });
    let layer = KeyedCircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .key_fn(|req: &(&'static str, bool)| Some(req.0))
        .classifier(Unit)
        .read_budget(NoBudget)
        .build()
        .unwrap();
    let breakers = layer.handle();
    let mut svc = ServiceBuilder::new().layer(layer).service(typed);
    svc.ready()
        .await
        .unwrap()
        .call(("east", false))
        .await
        .unwrap_err();
    svc.ready()
        .await
        .unwrap()
        .call(("west", true))
        .await
        .unwrap();
    assert_eq!(breakers.get(&"east").unwrap().state(), State::Open);
    assert_eq!(breakers.get(&"west").unwrap().state(), State::Closed);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(("east", true))
        .await
        .unwrap_err();
    assert_eq!(err.downcast_ref::<BreakerOpen>().unwrap().breaker(), "east");
}

/// Many tasks on 2 worker threads hammer a failing upstream: the breaker opens exactly once and
/// the upstream sees far fewer calls than were made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_failures_open_the_breaker_once() {
    let layer = CircuitBreakerLayer::builder()
        .open_duration(std::time::Duration::from_secs(3600))
        .build()
        .unwrap();
    let handle = layer.handle();
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = opened.clone();
    handle.on_state_change(move |c| {
        if c.to == State::Open {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let upstream_calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(status_service(upstream_calls.clone()));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                let mut rejected = 0;
                for _ in 0..50 {
                    match call(&mut svc, http::Request::new(503)).await {
                        Ok(res) => assert_eq!(res.status(), 503),
                        Err(e) => {
                            assert!(e.is::<BreakerOpen>());
                            rejected += 1;
                        }
                    }
                }
                rejected
            })
        })
        .collect();
    let mut rejected = 0;
    for t in tasks {
        rejected += t.await.unwrap();
    }
    assert_eq!(handle.state(), State::Open);
    assert_eq!(
        opened.load(Ordering::SeqCst),
        1,
        "exactly one transition to open"
    );
    let reached = upstream_calls.load(Ordering::SeqCst);
    assert_eq!(reached + rejected, 400);
    // Five failures trip it; only calls already admitted (at most one per task, plus any
    // admitted in the instant between the fifth record and the transition) get through after.
    assert!(reached <= 5 + 2 * 8, "{reached} calls reached the upstream");
    assert_eq!(handle.snapshot().not_permitted, rejected as u64);
}

/// Many concurrent callers race for the half-open probes: exactly the permitted number reach
/// the upstream while the probes are in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_get_exactly_the_permitted_probes() {
    let layer = CircuitBreakerLayer::builder()
        .permitted_calls_in_half_open(3)
        .build()
        .unwrap();
    let handle = layer.handle();
    handle.transition_to(State::HalfOpen);
    let release = Arc::new(tokio::sync::Notify::new());
    let reached = Arc::new(AtomicUsize::new(0));
    let upstream = service_fn({
        let (release, reached) = (release.clone(), reached.clone());
        move |_req: Req| {
            reached.fetch_add(1, Ordering::SeqCst);
            let release = release.clone();
            async move {
                release.notified().await;
                Ok::<_, Infallible>(http::Response::new(()))
            }
        }
    });
    let svc = ServiceBuilder::new().layer(layer).service(upstream);
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let mut svc = svc.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let ready = svc.ready().await.unwrap();
                ready.call(http::Request::new(0)).await
            })
        })
        .collect();
    // Wait until every non-probe caller has been rejected.
    while handle.snapshot().not_permitted < 13 {
        tokio::task::yield_now().await;
    }
    assert_eq!(reached.load(Ordering::SeqCst), 3);
    assert_eq!(handle.snapshot().half_open_in_flight, 3);
    while handle.state() != State::Closed {
        release.notify_waiters();
        tokio::task::yield_now().await;
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(
                e.downcast_ref::<BreakerOpen>().unwrap().retry_after(),
                std::time::Duration::ZERO
            ),
        }
    }
    assert_eq!(ok, 3);
}
