//! Random model names on a pass-through route do not grow what the gateway keeps per model:
//! `/v1/models` lists the models the route holds now (at most
//! [`MAX_MODELS_PER_ROUTE`](tower_llm::stack::MAX_MODELS_PER_ROUTE)), not every name ever sent.

mod gateway_support;

use http::StatusCode;
use tower_llm::stack::MAX_MODELS_PER_ROUTE;

use gateway_support::{chat, config, get, start};

#[tokio::test(start_paused = true)]
async fn models_stays_bounded_with_300_distinct_model_names() {
    let toml = config("healthy", "healthy", "[retry]\nenabled = false\n");
    let gw = start(&toml).await;
    let routes = gw.stack().route_patterns().len();
    for i in 0..320 {
        let reply = chat(&gw, &format!("random-{i}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let models = get(&gw, "/v1/models").await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| m["id"].as_str().expect("an id"))
        .collect();
    assert!(
        ids.len() <= MAX_MODELS_PER_ROUTE + routes,
        "{} entries",
        ids.len()
    );
    // The most recent names are listed, the first ones were evicted.
    assert!(ids.contains(&"random-319"));
    assert!(!ids.contains(&"random-0"));
    // Health lists the targets held now, not every one ever created.
    let targets = gw.stack().health().targets.len();
    assert!(
        targets <= MAX_MODELS_PER_ROUTE + 1,
        "{targets} targets in /health"
    );
    gw.shutdown().await.unwrap();
}
