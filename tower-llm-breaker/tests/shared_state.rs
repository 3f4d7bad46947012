//! One layer, one state: every service a layer wraps (as axum's `Router::layer` calls
//! `Layer::layer` once per route) and every clone shares the breaker(s), and the layer's owned
//! handle, taken before the layer moves into a `ServiceBuilder`, sees them.

use std::convert::Infallible;

use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};
use tower_llm_breaker::{CircuitBreakerLayer, KeyedCircuitBreakerLayer, State};
use tower_llm_core::{BreakerOpen, Target};

type Req = http::Request<u16>;

fn upstream() -> impl Service<Req, Response = http::Response<()>, Error = Infallible> + Clone {
    service_fn(|req: Req| async move {
        Ok::<_, Infallible>(
            http::Response::builder()
                .status(*req.body())
                .body(())
                .unwrap(),
        )
    })
}

fn to(provider: &str, status: u16) -> Req {
    let mut req = http::Request::new(status);
    req.extensions_mut().insert(Target::new(provider, "m"));
    req
}

#[tokio::test(start_paused = true)]
async fn two_services_of_one_layer_share_one_breaker() {
    let layer = CircuitBreakerLayer::builder()
        .name("routes")
        .consecutive_failures(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let route_a = layer.layer(upstream());
    let route_b = layer.layer(upstream());
    // One failure through each route: two in a row for the one breaker.
    route_a
        .clone()
        .oneshot(http::Request::new(500))
        .await
        .unwrap();
    route_b
        .clone()
        .oneshot(http::Request::new(500))
        .await
        .unwrap();
    assert_eq!(handle.state(), State::Open);
    let err = route_a.oneshot(http::Request::new(200)).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().unwrap().breaker(),
        "routes"
    );
    assert_eq!(route_b.handle().snapshot().not_permitted, 1);
}

#[tokio::test(start_paused = true)]
async fn two_services_of_one_keyed_layer_share_its_breakers() {
    let layer = KeyedCircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .build()
        .unwrap();
    let breakers = layer.handle();
    let route_a = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream());
    let route_b = layer.layer(upstream());
    route_a.clone().oneshot(to("p", 503)).await.unwrap();
    route_b.clone().oneshot(to("p", 503)).await.unwrap();
    route_b.clone().oneshot(to("q", 200)).await.unwrap();
    assert_eq!(breakers.len(), 2);
    assert_eq!(
        breakers.get(&Target::new("p", "m")).unwrap().state(),
        State::Open
    );
    assert!(route_a.oneshot(to("p", 200)).await.is_err());
    assert!(route_b.clone().oneshot(to("q", 200)).await.is_ok());
    assert_eq!(route_b.handle().keys(), breakers.keys());

    // An admin action on one key, through the handle taken from the layer.
    breakers.get(&Target::new("q", "m")).unwrap().force_open();
    assert!(route_b.oneshot(to("q", 200)).await.is_err());
}
