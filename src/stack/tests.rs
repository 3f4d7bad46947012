use bytes::Bytes;
use http_body_util::Full;

use super::*;

fn build(
    config: &StackConfig,
) -> Result<Stack<Full<Bytes>, crate::client::UpstreamBody>, ConfigFileError> {
    StackBuilder::new(config).build_http::<Full<Bytes>>()
}

const TOML: &str = "[[providers]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n[[providers]]\nname = \"b\"\n\n[[routes]]\nmatch = \"gpt-*\"\ntargets = [{ provider = \"a\", model = \"m\" }]\n\n[[routes]]\nmatch = \"*\"\ntargets = [{ provider = \"b\" }]\n";

#[test]
fn a_provider_without_url_is_an_error_with_its_line() {
    let config = StackConfig::from_toml_str(TOML).unwrap();
    let err = build(&config).unwrap_err();
    assert_eq!((err.key(), err.line()), ("providers[1]", Some(6)));
    assert!(
        err.message().contains("StackBuilder::provider_url"),
        "{err}"
    );
}

#[test]
fn fixed_routes_are_built_at_start_pass_through_routes_on_use() {
    let config = StackConfig::from_toml_str(TOML).unwrap();
    let stack = StackBuilder::new(&config)
        .provider_url("b", "http://127.0.0.1:9/v1")
        .build_http::<Full<Bytes>>()
        .unwrap();
    assert_eq!(stack.route_patterns(), ["gpt-*", "*"]);
    assert!(matches!(
        stack.inner.chains.routes[0],
        RouteChains::Fixed(_)
    ));
    assert!(matches!(
        stack.inner.chains.routes[1],
        RouteChains::PerModel(_)
    ));
    let names: Vec<String> = stack
        .health()
        .targets
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names, ["a/m"]);
    assert!(stack.requested_models().is_empty());
    stack.route_service("claude").unwrap();
    assert_eq!(stack.health().targets.len(), 2);
    assert!(stack.breaker("b/claude").is_some());
    // Only pass-through routes track requested models.
    stack.route_service("gpt-4o").unwrap();
    stack.route_service("another").unwrap();
    assert_eq!(stack.requested_models(), ["another", "claude"]);
}

#[test]
fn a_configuration_built_in_code_is_validated_by_the_builder() {
    let mut config = StackConfig::standard("http://127.0.0.1:9/v1", None).unwrap();
    config.bulkhead.max_in_flight = 0;
    let err = build(&config).unwrap_err();
    assert_eq!((err.key(), err.line()), ("bulkhead.max_in_flight", None));
}

#[test]
fn the_body_limit_is_the_request_sections() {
    let mut config = StackConfig::standard("http://127.0.0.1:9/v1", None).unwrap();
    config.request.max_body_bytes = 1234;
    assert_eq!(build(&config).unwrap().inner.body_limit, 1234);
}

#[test]
fn a_failed_chain_build_leaves_nothing_behind() {
    use tower_llm_core::ConfigError;

    let text = "[[providers]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n[[providers]]\nname = \"b\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n[[routes]]\nmatch = \"*\"\ntargets = [{ provider = \"a\" }, { provider = \"b\" }]\n";
    let config = StackConfig::from_toml_str(text).unwrap();
    let mut stack = build(&config).unwrap();
    // Target `b/...` cannot be built: `a/...` was built first and must not stay behind.
    let inner = Arc::get_mut(&mut stack.inner).expect("the only handle");
    let layers = inner.chains.plan.layers.clone();
    let client = tower::service_fn(|_: Request<ReplayBody<Full<Bytes>>>| async {
        Err::<Response<crate::client::UpstreamBody>, BoxError>("never called".into())
    });
    inner.chains.targets = Targets::new(Arc::new(move |target: &Target| {
        if target.provider() == "b" {
            Err(ConfigError::new("bulkhead", "refused for the test"))
        } else {
            layers.target_stack(target, client)
        }
    }));
    assert!(stack.route_service("gpt-4o").is_err());
    assert!(stack.health().targets.is_empty());
    assert!(stack.requested_models().is_empty());
    assert!(stack.breaker("a/gpt-4o").is_none());
    assert!(lock(&stack.inner.chains.targets.entries).is_empty());
}
