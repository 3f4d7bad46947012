use super::layers::{self, chain_error, section_error};
use super::*;
use tower_llm_core::ConfigError;

fn err(src: &str) -> ConfigFileError {
    StackConfig::from_toml_str(src).unwrap_err()
}

fn key_line(e: &ConfigFileError) -> (&str, Option<usize>) {
    (e.key(), e.line())
}

const PROVIDER: &str = "[[providers]]\nname = \"p\"\nbase_url = \"http://127.0.0.1:9/v1\"\n";

#[test]
fn empty_config_gets_defaults() {
    let c = StackConfig::from_toml_str("").unwrap();
    assert_eq!(c.breaker.window, 20);
    assert_eq!(c.retry.max_attempts, 3);
    assert_eq!(c.retry.budget_ratio, 0.2);
    assert_eq!(c.cooldown.auth_ms, None);
    assert_eq!(c.request.max_body_bytes, 4 * 1024 * 1024);
}

#[test]
fn defaults_are_the_crates_own() {
    use std::time::Duration;
    let c = StackConfig::default();
    let breaker = layers::breaker_config(&c.breaker, "default", None).unwrap();
    let crate_default = tower_llm_breaker::CircuitBreakerConfig::default();
    assert_eq!(
        breaker.failure_rate_threshold(),
        crate_default.failure_rate_threshold()
    );
    assert_eq!(breaker.sliding_window(), crate_default.sliding_window());
    assert_eq!(breaker.minimum_calls(), crate_default.minimum_calls());
    assert_eq!(
        breaker.consecutive_failures(),
        crate_default.consecutive_failures()
    );
    assert_eq!(breaker.open_duration(), crate_default.open_duration());
    assert_eq!(
        breaker.max_open_duration(),
        crate_default.max_open_duration()
    );
    assert_eq!(
        breaker.permitted_calls_in_half_open(),
        crate_default.permitted_calls_in_half_open()
    );

    let retry = tower_llm_retry::RetryConfig::default();
    assert_eq!(c.retry.max_attempts, retry.max_attempts());
    assert_eq!(
        Some(Duration::from_millis(c.retry.attempt_timeout_ms)),
        retry.attempt_timeout()
    );
    assert_eq!(
        Duration::from_millis(c.retry.max_server_delay_ms),
        retry.max_server_delay()
    );
    let budget = tower_llm_retry::RetryBudget::default_budget();
    assert_eq!(c.retry.budget_ratio, budget.retry_ratio());
    assert_eq!(c.retry.budget_floor_per_sec, budget.min_per_sec());

    assert_eq!(
        layers::cooldown_policy(&c.cooldown),
        tower_llm_fallback::CooldownPolicy::default()
    );
    assert_eq!(
        layers::escalation_policy(&c.escalation),
        tower_llm_fallback::EscalationPolicy::default()
    );
    let mut cache = c.cache.clone();
    cache.enabled = true;
    assert_eq!(
        layers::cache_config(&cache),
        Some(tower_llm_fallback::CacheConfig::new())
    );
    let limits = tower_llm_core::stream::StreamLimits::default();
    assert_eq!(Duration::from_millis(c.stream.ttft_ms), limits.ttft);
    assert_eq!(Duration::from_millis(c.stream.idle_ms), limits.idle);
    assert_eq!(Duration::from_millis(c.stream.total_ms), limits.total);
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = err("[retry]\nmax_attempts = 2\nmax_atempts = 3\n");
    assert_eq!(key_line(&e), ("retry.max_atempts", Some(3)));
    assert!(e.message().contains("unknown field"), "{e}");
}

#[test]
fn gateway_keys_are_not_the_librarys() {
    let e = err("[gateway]\nlisten = \"127.0.0.1:1\"\n");
    assert_eq!(key_line(&e), ("gateway", Some(1)));
    assert!(e.message().contains("unknown field"), "{e}");
    let e = err(&format!(
        "{PROVIDER}\n[[providers]]\nname = \"q\"\nmock = \"healthy\"\n"
    ));
    assert_eq!(key_line(&e), ("providers[1].mock", Some(7)));
    assert!(e.message().contains("unknown field"), "{e}");
}

#[test]
fn unknown_key_inside_an_inline_target_names_its_path() {
    let src = format!(
        "{PROVIDER}[[routes]]\nmatch = \"*\"\ntargets = [\n  {{ provider = \"p\" }},\n  {{ provider = \"p\", model = \"m\", atempt_timeout_ms = 5 }},\n]\n"
    );
    let e = err(&src);
    assert_eq!(
        key_line(&e),
        ("routes[0].targets[1].atempt_timeout_ms", Some(8))
    );
}

#[test]
fn negative_timeout_is_rejected_with_key_and_line() {
    let src = format!("{PROVIDER}[[routes]]\nmatch = \"*\"\ntargets = [\n  {{ provider = \"p\", attempt_timeout_ms = -5 }},\n]\n");
    let e = err(&src);
    assert_eq!(
        key_line(&e),
        ("routes[0].targets[0].attempt_timeout_ms", Some(7))
    );
    let e = err("[retry]\nattempt_timeout_ms = -1\n");
    assert_eq!(key_line(&e), ("retry.attempt_timeout_ms", Some(2)));
}

#[test]
fn bad_glob_is_rejected() {
    let src =
        format!("{PROVIDER}[[routes]]\nmatch = \"gpt-[\"\ntargets = [{{ provider = \"p\" }}]\n");
    let e = err(&src);
    assert_eq!(key_line(&e), ("routes[0].match", Some(5)));
    assert!(e.message().contains("bad glob"));
}

#[test]
fn route_errors_name_the_targets_keys() {
    let e = err(&format!(
        "{PROVIDER}[[routes]]\nmatch = \"*\"\ntargets = []\n"
    ));
    assert_eq!(key_line(&e), ("routes[0].targets", Some(6)));
    let e = err(&format!(
        "{PROVIDER}[[routes]]\nmatch = \"*\"\ntargets = [\n  {{ provider = \"p\" }},\n  {{ provider = \"p\", model = \"\" }},\n]\n"
    ));
    assert_eq!(key_line(&e), ("routes[0].targets[1].model", Some(8)));
    let e = err(&format!(
        "{PROVIDER}[[routes]]\nmatch = \"*\"\ntargets = [\n  {{ provider = \"p\", max_temperature = 3.0 }},\n]\n"
    ));
    assert_eq!(
        key_line(&e),
        ("routes[0].targets[0].max_temperature", Some(7))
    );
}

#[test]
fn rate_outside_unit_interval_is_rejected() {
    let e = err("[breaker]\nfailure_rate = 1.5\n");
    assert_eq!(key_line(&e), ("breaker.failure_rate", Some(2)));
    let e = err("[retry]\nbudget_ratio = 1.5\n");
    assert_eq!(key_line(&e), ("retry.budget_ratio", Some(2)));
}

#[test]
fn zero_values_are_rejected_with_line() {
    let e = err("[stream]\nttft_ms = 10\nidle_ms = 0\n");
    assert_eq!(key_line(&e), ("stream.idle_ms", Some(3)));
    let e = err("[bulkhead]\nrequests_per_minute = 0\n");
    assert_eq!(key_line(&e), ("bulkhead.requests_per_minute", Some(2)));
    let e = err("[bulkhead]\n\ntokens_per_minute = 0\n");
    assert_eq!(key_line(&e), ("bulkhead.tokens_per_minute", Some(3)));
    let e = err("[request]\nmax_body_bytes = 0\n");
    assert_eq!(key_line(&e), ("request.max_body_bytes", Some(2)));
}

#[test]
fn ordered_pairs_are_checked() {
    let e = err("[breaker]\nwindow = 5\nmin_calls = 6\n");
    assert_eq!(key_line(&e), ("breaker.min_calls", Some(3)));
    let e = err("[retry]\nbase_ms = 900\nmax_delay_ms = 100\n");
    assert_eq!(key_line(&e), ("retry.base_ms", Some(2)));
    let e = err("[breaker]\nopen_ms = 9000\nmax_open_ms = 1000\n");
    assert_eq!(key_line(&e), ("breaker.max_open_ms", Some(3)));
}

// One test per section: a value the section's crate rejects is reported on the key of the
// file that set it, with its line (not on the crate's builder method).

#[test]
fn breaker_crate_errors_name_the_key() {
    let e = err("[breaker]\nenabled = true\nhalf_open_probes = 20000\n");
    assert_eq!(key_line(&e), ("breaker.half_open_probes", Some(3)));
    let e = err("[breaker]\nmin_calls = 0\n");
    assert_eq!(key_line(&e), ("breaker.min_calls", Some(2)));
    let e = err("[breaker]\nwindow = 0\n");
    assert_eq!(key_line(&e), ("breaker.window", Some(2)));
    let e = err("[breaker]\nopen_ms = 0\n");
    assert_eq!(key_line(&e), ("breaker.open_ms", Some(2)));
}

#[test]
fn retry_crate_errors_name_the_key() {
    let e = err("[retry]\nmax_attempts = 500\n");
    assert_eq!(key_line(&e), ("retry.max_attempts", Some(2)));
    assert!(e.message().contains("500"), "{e}");
    let e = err("[retry]\n\nbudget_floor_per_sec = 2000000\n");
    assert_eq!(key_line(&e), ("retry.budget_floor_per_sec", Some(3)));
}

#[test]
fn bulkhead_crate_errors_name_the_key() {
    let e = err("[bulkhead]\nmax_in_flight = 0\n");
    assert_eq!(key_line(&e), ("bulkhead.max_in_flight", Some(2)));
    let e = err("[bulkhead]\nmax_queued = 3000000000\n");
    assert_eq!(key_line(&e), ("bulkhead.max_queued", Some(2)));
}

#[test]
fn stream_crate_errors_name_the_key() {
    let e = err("[stream]\ntotal_ms = 0\n");
    assert_eq!(key_line(&e), ("stream.total_ms", Some(2)));
    assert_eq!(e.message(), "must be greater than zero");
}

#[test]
fn cooldown_cache_escalation_and_request_errors_name_the_key() {
    let e = err("[cooldown]\ntransient_min_ms = 9000\n");
    assert_eq!(key_line(&e), ("cooldown.transient_min_ms", Some(2)));
    let e = err("[cooldown]\npanic_probe_interval_ms = 0\n");
    assert_eq!(key_line(&e), ("cooldown.panic_probe_interval_ms", Some(2)));
    let e = err("[cache]\nenabled = true\nttl_ms = 0\n");
    assert_eq!(key_line(&e), ("cache.ttl_ms", Some(3)));
    let e = err("[cache]\nenabled = true\nmax_entries = 0\n");
    assert_eq!(key_line(&e), ("cache.max_entries", Some(3)));
    let e = err("[escalation]\nwindow_ms = 0\n");
    assert_eq!(key_line(&e), ("escalation.window_ms", Some(2)));
    let e = err("[escalation]\nmax_files = 0\n");
    assert_eq!(key_line(&e), ("escalation.max_files", Some(2)));
}

#[test]
fn the_escalation_rate_limit_window_is_configurable() {
    let c = StackConfig::from_toml_str("[escalation]\nrate_limit_window_ms = 0\n").unwrap();
    assert_eq!(
        layers::escalation_policy(&c.escalation),
        tower_llm_fallback::EscalationPolicy::default()
            .rate_limit_window(std::time::Duration::ZERO)
    );
    let c = StackConfig::default();
    assert_eq!(
        c.escalation.max_files as usize,
        tower_llm_fallback::escalation::DEFAULT_MAX_FILES
    );
}

#[test]
fn crate_settings_map_to_keys() {
    let e = ConfigError::new("permitted_calls_in_half_open", "too many");
    assert_eq!(
        section_error("breaker", &e),
        ("breaker.half_open_probes".into(), "too many".into())
    );
    let e = ConfigError::new("max_concurrent", "must be at least 1");
    assert_eq!(section_error("bulkhead", &e).0, "bulkhead.max_in_flight");
    // A setting the facade never makes is reported on the section, under the crate's name.
    let e = ConfigError::new("jitter", "bad");
    assert_eq!(
        section_error("breaker", &e),
        ("breaker".into(), "`jitter`: bad".into())
    );
    // The fallback crate's errors: a section's setting, or the route.
    let e = ConfigError::new("panic_probe_interval", "must be > 0");
    assert_eq!(chain_error(2, &e).0, "cooldown.panic_probe_interval_ms");
    let e = ConfigError::new("base_url", "`x` is not a URL");
    assert_eq!(
        chain_error(2, &e),
        ("routes[2]".into(), "`base_url`: `x` is not a URL".into())
    );
}

#[test]
fn providers_are_checked() {
    let e = err("[[providers]]\nname = \"p\"\nbase_url = \"ftp://x\"\n");
    assert_eq!(key_line(&e), ("providers[0].base_url", Some(3)));
    let e = err(&format!("{PROVIDER}{PROVIDER}"));
    assert!(e.message().contains("defined twice"));
    assert_eq!(key_line(&e), ("providers[1].name", Some(5)));
    let e = err("[[providers]]\nname = \"p\"\nauth_header = \"bad header\"\n");
    assert_eq!(key_line(&e), ("providers[0].auth_header", Some(3)));
    // No `base_url` is valid: whoever builds the stack supplies it.
    StackConfig::from_toml_str("[[providers]]\nname = \"p\"\n").unwrap();
}

#[test]
fn wrong_type_names_the_key() {
    let e = err("[breaker]\nwindow = \"twenty\"\n");
    assert_eq!(key_line(&e), ("breaker.window", Some(2)));
}

#[test]
fn first_matching_route_wins() {
    let src = format!(
        "{PROVIDER}[[routes]]\nmatch = \"gpt-4*\"\ntargets = [{{ provider = \"p\", model = \"a\" }}]\n\
         [[routes]]\nmatch = \"*\"\ntargets = [{{ provider = \"p\", model = \"b\" }}]\n"
    );
    let c = StackConfig::from_toml_str(&src).unwrap();
    assert_eq!(
        c.route_for("gpt-4o").unwrap().targets[0].model.as_deref(),
        Some("a")
    );
    assert_eq!(
        c.route_for("claude").unwrap().targets[0].model.as_deref(),
        Some("b")
    );
}

#[test]
fn error_at_finds_lines_of_keys() {
    let c =
        StackConfig::from_toml_str(&format!("{PROVIDER}{}", PROVIDER.replace("\"p\"", "\"q\"")))
            .unwrap();
    let e = c.error_at("providers[1].base_url", "bad");
    assert_eq!(e.line(), Some(6));
    assert_eq!(c.error_at("breaker.window", "x").line(), None);
}

#[test]
fn standard_is_built_in_code_and_validated() {
    let c = StackConfig::standard(
        "http://127.0.0.1:9/v1",
        Some(("http://127.0.0.1:8/v1", "m")),
    )
    .unwrap();
    let toml = StackConfig::from_toml_str(
        "[[providers]]\nname = \"primary\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [[providers]]\nname = \"fallback\"\nbase_url = \"http://127.0.0.1:8/v1\"\n\
         [[routes]]\nmatch = \"*\"\ntargets = [{ provider = \"primary\" }, { provider = \"fallback\", model = \"m\" }]\n",
    )
    .unwrap();
    assert_eq!(format!("{:?}", c.routes), format!("{:?}", toml.routes));
    assert_eq!(
        format!("{:?}", c.providers),
        format!("{:?}", toml.providers)
    );
    // A quote in a URL is not TOML injection any more, just a bad URL.
    let e = StackConfig::standard("http://x/\"\n[gateway]", None).unwrap_err();
    assert_eq!(key_line(&e), ("providers[0].base_url", None));
}

#[test]
fn document_sections_are_taken_out_before_the_library_reads() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Gateway {
        listen: String,
    }
    let src = "[gateway]\nlisten = \"127.0.0.1:1\"\n\n[[providers]]\nname = \"a\"\nmock = \"healthy\"\n\n[[providers]]\nname = \"b\"\nbase_url = \"http://127.0.0.1:9/v1\"\n";
    let mut doc = ConfigDocument::parse(src).unwrap();
    let gateway: Option<Gateway> = doc.take_section("gateway").unwrap();
    assert_eq!(gateway.unwrap().listen, "127.0.0.1:1");
    let absent: Option<Gateway> = doc.take_section("absent").unwrap();
    assert!(absent.is_none());
    let mocks: Vec<(String, String)> = doc.take_provider_keys("mock").unwrap();
    assert_eq!(mocks, [("a".to_owned(), "healthy".to_owned())]);
    let config = doc.into_stack_config().unwrap();
    assert_eq!(config.providers.len(), 2);
    assert_eq!(config.providers[0].base_url, None);
    // Lines still refer to the whole file.
    assert_eq!(
        config.error_at("providers[1].base_url", "x").line(),
        Some(10)
    );
    assert_eq!(config.error_at("gateway.listen", "x").line(), Some(2));
}

#[test]
fn document_errors_name_the_key_and_line() {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Gateway {
        listen: String,
    }
    let mut doc = ConfigDocument::parse("[gateway]\nlisten = \"x\"\nlistne = 3\n").unwrap();
    let e = doc.take_section::<Gateway>("gateway").unwrap_err();
    assert_eq!(key_line(&e), ("gateway.listne", Some(3)));

    let mut doc = ConfigDocument::parse(
        "[[providers]]\nname = \"a\"\n\n[[providers]]\nname = \"b\"\nmock = 5\n",
    )
    .unwrap();
    let e = doc.take_provider_keys::<String>("mock").unwrap_err();
    assert_eq!(key_line(&e), ("providers[1].mock", Some(6)));

    let mut doc = ConfigDocument::parse("[[providers]]\nmock = \"healthy\"\n").unwrap();
    let e = doc.take_provider_keys::<String>("mock").unwrap_err();
    assert_eq!(key_line(&e), ("providers[0]", Some(2)));

    let e = ConfigDocument::parse("[breaker\n").unwrap_err();
    assert_eq!(e.line(), Some(1));
}

#[test]
fn the_shipped_workspace_toml_is_valid() {
    let src = include_str!("../../workspace.toml");
    let mut doc = ConfigDocument::parse(src).unwrap();
    let gateway: Option<toml::Table> = doc.take_section("gateway").unwrap();
    assert!(gateway.is_some());
    let mocks: Vec<(String, String)> = doc.take_provider_keys("mock").unwrap();
    let c = doc.into_stack_config().unwrap();
    assert!(!c.routes.is_empty());
    assert_eq!(mocks.len(), c.providers.len());
    // Without the gateway's keys taken out, it is not the library's schema.
    assert_eq!(
        StackConfig::from_toml_str(src).unwrap_err().key(),
        "gateway"
    );
}

#[test]
fn shared_state_is_off_by_default_and_its_bad_values_name_their_key() {
    let c = StackConfig::from_toml_str("").unwrap();
    assert!(c.shared_state.redis_config().is_none());
    assert_eq!(c.shared_state.key_prefix, "tower-llm:");
    assert_eq!(c.shared_state.timeout_ms, 20);

    let c = StackConfig::from_toml_str(
        "[shared_state]\nredis_url = \"redis://127.0.0.1:6379/0\"\nkey_prefix = \"prod:\"\n",
    )
    .unwrap();
    assert!(c.shared_state.redis_config().is_some());

    let e = StackConfig::from_toml_str(
        "[shared_state]\nredis_url = \"http://user:hunter2@cache:6379\"\n",
    )
    .unwrap_err();
    assert_eq!(key_line(&e), ("shared_state.redis_url", Some(2)));
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(e.to_string().contains("redis://"), "{e}");

    let e = StackConfig::from_toml_str(
        "[shared_state]\nredis_url = \"redis://127.0.0.1/0\"\ntimeout_ms = 0\n",
    )
    .unwrap_err();
    assert_eq!(key_line(&e), ("shared_state.timeout_ms", Some(3)));
    let e = StackConfig::from_toml_str(
        "[shared_state]\nredis_url = \"redis://127.0.0.1/0\"\nkey_prefix = \"a b\"\n",
    )
    .unwrap_err();
    assert_eq!(key_line(&e), ("shared_state.key_prefix", Some(3)));
    let e = StackConfig::from_toml_str("[shared_state]\nredis = \"x\"\n").unwrap_err();
    assert_eq!(e.key(), "shared_state.redis");
}
