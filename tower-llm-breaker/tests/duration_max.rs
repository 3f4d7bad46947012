//! `Duration::MAX` for the breaker's configured times is a configuration error naming the
//! setting, never an `Instant` overflow; the longest accepted times work (issue 15, finding 7),
//! with paused time.

use std::convert::Infallible;
use std::time::Duration;

use tower::{service_fn, Service, ServiceExt};
use tower_llm_breaker::{CircuitBreakerLayer, State};
use tower_llm_core::BreakerOpen;

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

#[test]
fn duration_max_is_refused_with_the_settings_name() {
    let open = CircuitBreakerLayer::builder()
        .open_duration(Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(open.field(), "open_duration");
    let max = CircuitBreakerLayer::builder()
        .max_open_duration(Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(max.field(), "max_open_duration");
    let half_open = CircuitBreakerLayer::builder()
        .max_wait_in_half_open(Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(half_open.field(), "max_wait_in_half_open");
}

#[tokio::test(start_paused = true)]
async fn the_longest_open_duration_keeps_the_breaker_open_without_panicking() {
    let layer = CircuitBreakerLayer::builder()
        .name("forever")
        .consecutive_failures(1)
        .open_duration(WEEK)
        .max_open_duration(WEEK)
        .open_duration_multiplier(2.0)
        .max_wait_in_half_open(WEEK)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = tower::Layer::layer(
        &layer,
        service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::builder().status(500).body(()).unwrap())
        }),
    );
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await;
    assert_eq!(res.unwrap().status(), 500);
    assert_eq!(handle.state(), State::Open);
    tokio::time::advance(Duration::from_secs(6 * 24 * 3600)).await;
    let err = match svc.ready().await {
        Ok(ready) => ready.call(http::Request::new(())).await.unwrap_err(),
        Err(err) => err,
    };
    let open = err
        .downcast_ref::<BreakerOpen>()
        .expect("still open six days later");
    assert!(open.retry_after() <= Duration::from_secs(24 * 3600));
    assert_eq!(handle.state(), State::Open);
    let _ = handle.snapshot();
}
