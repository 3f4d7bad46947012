//! ChaosLayer: seeded rates, the runtime switch, latency under a paused clock, canned responses.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tower::{service_fn, Layer as _, Service, ServiceBuilder, ServiceExt};
use tower_llm_chaos::{ChaosLayer, ChaosStats};
use tower_llm_core::{
    classify_error, BoxError, ClassifiedError, Classify, ErrorKind, HttpClassifier,
};

/// An inner service that counts how often it runs.
fn counting() -> (
    Arc<AtomicUsize>,
    impl Service<
            u32,
            Response = u32,
            Error = Infallible,
            Future = impl std::future::Future<Output = Result<u32, Infallible>> + Send,
        > + Clone,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let svc = service_fn(move |x: u32| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Infallible>(x) }
    });
    (calls, svc)
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Seen {
    Inner,
    Error,
    Canned,
}

/// What the documented decision procedure gives for `n` calls with this seed.
fn replay(seed: u64, n: usize, error: f64, response: f64, latency: f64) -> (Vec<Seen>, usize) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut delayed = 0;
    let outcomes = (0..n)
        .map(|_| {
            if rng.random::<f64>() < latency {
                delayed += 1;
            }
            let u = rng.random::<f64>();
            if u < error {
                Seen::Error
            } else if u < error + response {
                Seen::Canned
            } else {
                Seen::Inner
            }
        })
        .collect();
    (outcomes, delayed)
}

async fn outcomes<S>(svc: &mut S, n: usize) -> Vec<Seen>
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        let result = svc.ready().await.unwrap().call(7).await;
        seen.push(match result {
            Ok(7) => Seen::Inner,
            Ok(_) => Seen::Canned,
            Err(error) => {
                let classified = error
                    .downcast_ref::<ClassifiedError>()
                    .expect("a ClassifiedError");
                assert_eq!(classified.kind(), ErrorKind::Overloaded);
                Seen::Error
            }
        });
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn a_seed_fixes_every_decision() {
    const N: usize = 10_000;
    let layer = ChaosLayer::builder()
        .error_rate(0.1)
        .error_kind(ErrorKind::Overloaded)
        .response(0.05, || 999u32)
        .latency(Duration::from_millis(50), 0.2)
        .seed(42)
        .build()
        .unwrap();
    let (inner_calls, inner) = counting();
    let mut svc = ServiceBuilder::new().layer(layer.clone()).service(inner);
    let start = Instant::now();
    let seen = outcomes(&mut svc, N).await;

    let (expected, delayed) = replay(42, N, 0.1, 0.05, 0.2);
    assert_eq!(seen, expected, "decisions follow the documented draws");
    let count = |which| seen.iter().filter(|s| **s == which).count() as u64;
    let stats = layer.stats();
    assert_eq!(
        stats,
        ChaosStats {
            calls: N as u64,
            errors: count(Seen::Error),
            responses: count(Seen::Canned),
            forwarded: count(Seen::Inner),
            delayed: delayed as u64,
        }
    );
    assert_eq!(
        inner_calls.load(Ordering::SeqCst) as u64,
        stats.forwarded,
        "injected calls skip the inner service"
    );
    // Binomial bounds at five standard deviations: 0.1 → 1000 ± 150, 0.05 → 500 ± 109, 0.2 → 2000 ± 200.
    assert!((850..=1150).contains(&stats.errors), "{stats:?}");
    assert!((391..=609).contains(&stats.responses), "{stats:?}");
    assert!((1800..=2200).contains(&stats.delayed), "{stats:?}");
    // The paused clock moved exactly by the injected latency.
    assert_eq!(start.elapsed(), Duration::from_millis(50) * delayed as u32);
}

#[tokio::test]
async fn rates_hold_across_seeds() {
    for seed in 0..20 {
        let layer = ChaosLayer::builder()
            .error_rate(0.3)
            .seed(seed)
            .build()
            .unwrap();
        let (_, inner) = counting();
        let mut svc = layer.layer(inner);
        let _ = outcomes_any(&mut svc, 2_000).await;
        let errors = layer.stats().errors;
        // 2000 × 0.3 = 600, σ ≈ 20.5: five σ.
        assert!((497..=703).contains(&errors), "seed {seed}: {errors}");
    }
}

async fn outcomes_any<S>(svc: &mut S, n: usize) -> usize
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    let mut errors = 0;
    for _ in 0..n {
        if svc.ready().await.unwrap().call(1).await.is_err() {
            errors += 1;
        }
    }
    errors
}

#[tokio::test]
async fn clones_share_one_generator_and_one_switch() {
    let build = || {
        ChaosLayer::builder()
            .error_rate(0.5)
            .seed(9)
            .build()
            .unwrap()
    };
    let (_, inner) = counting();
    let reference = {
        let mut one = build().layer(inner.clone());
        let mut seen = Vec::new();
        for _ in 0..64 {
            seen.push(one.ready().await.unwrap().call(1).await.is_ok());
        }
        seen
    };
    let layer = build();
    let mut a = layer.layer(inner.clone());
    let mut b = a.clone();
    let mut c = layer.layer(inner);
    let mut seen = Vec::new();
    for i in 0..64 {
        let svc = match i % 3 {
            0 => &mut a,
            1 => &mut b,
            _ => &mut c,
        };
        seen.push(svc.ready().await.unwrap().call(1).await.is_ok());
    }
    assert_eq!(seen, reference, "interleaved clones see one sequence");

    b.switch().disable();
    assert!(!layer.switch().is_enabled());
    assert!(!a.switch().is_enabled());
}

#[tokio::test]
async fn the_switch_turns_injection_off_and_on() {
    let layer = ChaosLayer::builder()
        .error_rate(1.0)
        .seed(1)
        .enabled(false)
        .build()
        .unwrap();
    let switch = layer.switch();
    let (inner_calls, inner) = counting();
    let mut svc = layer.layer(inner);
    for _ in 0..10 {
        assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), 3);
    }
    assert_eq!(inner_calls.load(Ordering::SeqCst), 10);
    assert_eq!(
        layer.stats(),
        ChaosStats::default(),
        "nothing is drawn while off"
    );

    switch.enable();
    let error = svc.ready().await.unwrap().call(3).await.unwrap_err();
    assert_eq!(classify_error(&*error).kind, ErrorKind::ServerError);
    assert_eq!(
        error.to_string(),
        "server_error: injected by tower-llm-chaos"
    );
    assert_eq!(inner_calls.load(Ordering::SeqCst), 10);

    switch.disable();
    assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), 3);
    assert_eq!(layer.stats().calls, 1);
}

#[tokio::test]
async fn turning_off_does_not_shift_the_sequence() {
    let layer = ChaosLayer::builder()
        .error_rate(0.5)
        .seed(5)
        .build()
        .unwrap();
    let (_, inner) = counting();
    let mut svc = layer.layer(inner);
    let mut seen = Vec::new();
    for i in 0..40 {
        // Calls 10..20 happen while off and must not consume draws.
        layer.switch().set(!(10..20).contains(&i));
        let ok = svc.ready().await.unwrap().call(1).await.is_ok();
        if !(10..20).contains(&i) {
            seen.push(if ok { Seen::Inner } else { Seen::Error });
        }
    }
    assert_eq!(seen, replay(5, 30, 0.5, 0.0, 0.0).0);
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_call_before_the_inner_service_runs() {
    let layer = ChaosLayer::builder()
        .latency(Duration::from_millis(250), 1.0)
        .seed(3)
        .build()
        .unwrap();
    let start = Instant::now();
    let svc = layer.layer(service_fn(move |_: ()| async move {
        Ok::<_, Infallible>(start.elapsed())
    }));
    let ran_at = svc.clone().oneshot(()).await.unwrap();
    assert_eq!(ran_at, Duration::from_millis(250));
    assert_eq!(start.elapsed(), Duration::from_millis(250));

    // A dropped delayed call never reaches the inner service.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let mut svc = layer.layer(service_fn(move |_: ()| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>(())
        }
    }));
    let fut = svc.ready().await.unwrap().call(());
    let _ = tokio::time::timeout(Duration::from_millis(100), fut)
        .await
        .unwrap_err();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn canned_http_error_responses_classify_like_real_ones() {
    let layer = ChaosLayer::builder()
        .response(1.0, || {
            http::Response::builder()
                .status(503)
                .header("retry-after", "4")
                .body(String::from("{\"error\":{\"message\":\"overloaded\"}}"))
                .unwrap()
        })
        .seed(11)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_req: http::Request<String>| async {
        Ok::<_, Infallible>(http::Response::new(String::from("real")))
    }));
    let res = svc
        .oneshot(http::Request::new(String::new()))
        .await
        .unwrap();
    let failure = match HttpClassifier::default().classify_response(&res) {
        tower_llm_core::Classification::Failure(f) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(failure.kind, ErrorKind::Overloaded);
    assert_eq!(failure.retry_after, Some(Duration::from_secs(4)));
}

#[tokio::test]
async fn injected_errors_carry_kind_message_and_delay() {
    let layer = ChaosLayer::builder()
        .error_rate(1.0)
        .error_kind(ErrorKind::RateLimited)
        .error_message("slow down")
        .error_retry_after(Duration::from_secs(30))
        .build()
        .unwrap();
    let (_, inner) = counting();
    let error = layer.layer(inner).oneshot(1).await.unwrap_err();
    let classified = error.downcast_ref::<ClassifiedError>().unwrap();
    assert_eq!(classified.message(), "slow down");
    let failure = classify_error(&*error);
    assert_eq!(
        (failure.kind, failure.retry_after),
        (ErrorKind::RateLimited, Some(Duration::from_secs(30)))
    );
}

#[test]
fn invalid_rates_are_config_errors() {
    for (rate, field) in [
        (-0.1, "error_rate"),
        (1.01, "error_rate"),
        (f64::NAN, "error_rate"),
    ] {
        let err = ChaosLayer::builder().error_rate(rate).build().unwrap_err();
        assert_eq!(err.field(), field);
        assert!(err.message().contains("not a probability"), "{err}");
    }
    let err = ChaosLayer::builder()
        .latency(Duration::from_secs(1), f64::INFINITY)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "latency");
    let err = ChaosLayer::builder()
        .response(2.0, || ())
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "response");
    let err = ChaosLayer::builder()
        .error_rate(0.6)
        .response(0.5, || ())
        .build()
        .unwrap_err();
    assert!(err.message().contains("exceeds 1"), "{err}");
    // 0.7 + 0.3 is a hair above 1.0 in floating point and still accepted.
    assert!(ChaosLayer::builder()
        .error_rate(0.7)
        .response(0.3, || ())
        .build()
        .is_ok());
    assert!(ChaosLayer::builder()
        .error_rate(0.0)
        .latency(Duration::ZERO, 1.0)
        .build()
        .is_ok());
}

#[test]
fn layers_services_and_futures_are_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let layer = ChaosLayer::builder()
        .response(0.5, || 1u32)
        .build()
        .unwrap();
    send_sync(&layer);
    let (_, inner) = counting();
    let mut svc = layer.layer(inner);
    send_sync(&svc);
    let future = svc.call(1);
    send(&future);
}
