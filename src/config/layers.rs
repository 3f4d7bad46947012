//! From the sections to the crates' own settings, and from the crates' setting names back to
//! the TOML keys that set them.
//!
//! The crates validate their settings and name the builder method in a
//! [`ConfigError`] (`permitted_calls_in_half_open`, `max_concurrent`); [`KEYS`] maps each one a
//! section can set to its key (`breaker.half_open_probes`, `bulkhead.max_in_flight`), so an error
//! names a key of the file and shows its line. Validation ([`StackConfig::validate`]) and the
//! stack's build use the same functions, so what validates builds.

use std::sync::Arc;
use std::time::Duration;

use tower_llm_breaker::{CircuitBreakerConfig, SlidingWindow};
use tower_llm_bulkhead::{
    BulkheadLayer, Global, JsonBodyEstimate, RateLimit, SharedLimiter, TokenLimit,
};
use tower_llm_core::{ConfigError, ErrorKind, StreamGuardLayer};
use tower_llm_fallback::{CacheConfig, Cooldown, CooldownPolicy, EscalationPolicy, StaticAnswer};
use tower_llm_retry::budget::DEFAULT_BUDGET_TTL;
use tower_llm_retry::{Backoff, HttpReplay, RetryBudget, RetryLayer};

use super::schema::{
    BreakerSection, BulkheadSection, CacheSection, CooldownSection, EscalationSection,
    RetrySection, StaticSection, StreamSection,
};
use super::StackConfig;

/// `(section, the crate's setting, the key in that section)`.
const KEYS: &[(&str, &str, &str)] = &[
    // tower-llm-breaker: `CircuitBreakerConfigBuilder`.
    ("breaker", "failure_rate_threshold", "failure_rate"),
    ("breaker", "sliding_window", "window"),
    ("breaker", "minimum_calls", "min_calls"),
    ("breaker", "consecutive_failures", "consecutive_failures"),
    ("breaker", "open_duration", "open_ms"),
    ("breaker", "max_open_duration", "max_open_ms"),
    (
        "breaker",
        "permitted_calls_in_half_open",
        "half_open_probes",
    ),
    // tower-llm-retry: `RetryLayerBuilder`, `Backoff`, `RetryBudget`.
    ("retry", "max_attempts", "max_attempts"),
    ("retry", "backoff.base", "base_ms"),
    ("retry", "backoff.max_delay", "max_delay_ms"),
    ("retry", "max_server_delay", "max_server_delay_ms"),
    ("retry", "attempt_timeout", "attempt_timeout_ms"),
    ("retry", "budget.retry_ratio", "budget_ratio"),
    ("retry", "budget.min_per_sec", "budget_floor_per_sec"),
    // tower-llm-bulkhead: `BulkheadLayerBuilder`.
    ("bulkhead", "max_concurrent", "max_in_flight"),
    ("bulkhead", "max_queued", "max_queued"),
    ("bulkhead", "max_wait", "max_wait_ms"),
    ("bulkhead", "rate_limit", "requests_per_minute"),
    ("bulkhead", "token_limit", "tokens_per_minute"),
    // tower-llm-core: `StreamGuardLayerBuilder`.
    ("stream", "ttft", "ttft_ms"),
    ("stream", "idle", "idle_ms"),
    ("stream", "total", "total_ms"),
    // tower-llm-fallback: `CooldownPolicy`, `CacheConfig`, `EscalationPolicy`.
    ("cooldown", "cooldowns", "transient_min_ms"),
    ("cooldown", "max_probe_interval", "max_probe_interval_ms"),
    (
        "cooldown",
        "panic_probe_interval",
        "panic_probe_interval_ms",
    ),
    ("cache", "cache", "max_entries"),
    ("escalation", "escalation_policy", "window_ms"),
    // tower-llm-redis: `RedisConfig`.
    ("shared_state", "redis_url", "redis_url"),
    ("shared_state", "key_prefix", "key_prefix"),
    ("shared_state", "timeout_ms", "timeout_ms"),
];

/// The settings of the fallback crate that belong to a section rather than to a route.
const CHAIN_SECTIONS: &[&str] = &["cooldown", "cache", "escalation"];

/// The TOML key and the message of a crate's error about `section`'s settings. A setting the
/// table does not know is reported on the section, with the crate's name for it.
pub(crate) fn section_error(section: &str, e: &ConfigError) -> (String, String) {
    match KEYS
        .iter()
        .find(|(s, field, _)| *s == section && *field == e.field())
    {
        Some((_, _, key)) => (format!("{section}.{key}"), e.message().to_owned()),
        None => (
            section.to_owned(),
            format!("`{}`: {}", e.field(), e.message()),
        ),
    }
}

/// The TOML key and the message of the fallback crate's error when it built route `index`'s
/// chain: a key of `[cooldown]`, `[cache]` or `[escalation]` when the setting is one of theirs,
/// else the route.
pub(crate) fn chain_error(index: usize, e: &ConfigError) -> (String, String) {
    let section = KEYS
        .iter()
        .find(|(s, field, _)| CHAIN_SECTIONS.contains(s) && *field == e.field());
    match section {
        Some((s, _, _)) => section_error(s, e),
        None => (
            format!("routes[{index}]"),
            format!("`{}`: {}", e.field(), e.message()),
        ),
    }
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The breaker settings of one target (named `name`).
pub(crate) fn breaker_config(
    b: &BreakerSection,
    name: &str,
    shared: Option<std::sync::Arc<dyn tower_llm_breaker::shared::SharedBreakers>>,
) -> Result<CircuitBreakerConfig, ConfigError> {
    let mut builder = CircuitBreakerConfig::builder();
    if let Some(shared) = shared {
        builder = builder.shared(shared);
    }
    let builder = builder
        .name(name)
        .failure_rate_threshold(b.failure_rate)
        .sliding_window(SlidingWindow::Count(b.window))
        .minimum_calls(b.min_calls)
        .open_duration(ms(b.open_ms))
        .max_open_duration(ms(b.max_open_ms))
        .permitted_calls_in_half_open(b.half_open_probes);
    let builder = if b.consecutive_failures == 0 {
        builder.no_consecutive_failures()
    } else {
        builder.consecutive_failures(b.consecutive_failures)
    };
    builder.build()
}

/// The retry layer of one target (named `name`: it salts the seed, so each target's jitter is
/// its own yet stable across runs). `attempt_timeout_ms` is the per-attempt timeout; with
/// `extensions` off it sets neither the `Attempt` nor the `RetryAttempts` extension.
pub(crate) fn retry_layer(
    r: &RetrySection,
    name: &str,
    extensions: bool,
) -> Result<RetryLayer, ConfigError> {
    let mut builder = RetryLayer::builder()
        .replay(HttpReplay::new().attempt_extensions(extensions))
        .max_attempts(r.max_attempts)
        .backoff(Backoff::decorrelated_jitter(ms(r.base_ms)).with_max_delay(ms(r.max_delay_ms)))
        .max_server_delay(ms(r.max_server_delay_ms))
        .attempt_timeout(ms(r.attempt_timeout_ms))
        .budget(RetryBudget::new(
            DEFAULT_BUDGET_TTL,
            r.budget_floor_per_sec,
            r.budget_ratio,
        )?);
    if let Some(seed) = r.seed {
        let salt = name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        builder = builder.seed(seed ^ salt);
    }
    builder.build()
}

/// The bulkhead layer of one target (named `name`); with `shared` (`[shared_state]`), its rate
/// and token limits, if any, are shared by every replica through it (the local limits being the
/// fallback while Redis is down).
pub(crate) fn bulkhead_layer(
    b: &BulkheadSection,
    name: &str,
    shared: Option<&Arc<dyn SharedLimiter>>,
) -> Result<BulkheadLayer<Global, JsonBodyEstimate>, ConfigError> {
    let max_wait = ms(b.max_wait_ms);
    let mut builder = BulkheadLayer::builder()
        .name(name)
        .max_concurrent(usize::try_from(b.max_in_flight).unwrap_or(usize::MAX))
        .max_queued(usize::try_from(b.max_queued).unwrap_or(usize::MAX))
        .max_wait(max_wait);
    if let Some(rpm) = b.requests_per_minute {
        builder = builder.rate_limit(RateLimit::per_minute(rpm).max_wait(max_wait));
    }
    let mut builder = match b.tokens_per_minute {
        Some(tpm) => builder.token_limit(
            TokenLimit::per_minute(tpm).max_wait(max_wait),
            JsonBodyEstimate::new(),
        ),
        None => builder.estimate_tokens(JsonBodyEstimate::new()),
    };
    if let Some(shared) = shared {
        if b.requests_per_minute.is_some() || b.tokens_per_minute.is_some() {
            builder = builder.shared_limiter_arc(Arc::clone(shared));
        }
    }
    builder.build()
}

/// The stream guard every target shares the settings of.
pub(crate) fn stream_guard(s: &StreamSection) -> Result<StreamGuardLayer, ConfigError> {
    StreamGuardLayer::builder()
        .ttft(ms(s.ttft_ms))
        .idle(ms(s.idle_ms))
        .total(ms(s.total_ms))
        // Past the address space nothing could be buffered anyway.
        .max_buffered_body_bytes(usize::try_from(s.max_buffered_body_bytes).unwrap_or(usize::MAX))
        .build()
}

/// The cooldown of each error kind.
pub(crate) fn cooldown_policy(c: &CooldownSection) -> CooldownPolicy {
    let mut policy = CooldownPolicy::default()
        .max_probe_interval(ms(c.max_probe_interval_ms))
        .panic_probe_interval(ms(c.panic_probe_interval_ms))
        .max_server_delay(ms(c.max_server_delay_ms))
        .with(
            ErrorKind::Auth,
            c.auth_ms
                .map_or(Cooldown::UntilReset, |n| Cooldown::Fixed(ms(n))),
        );
    for (kind, n) in [
        (ErrorKind::RateLimited, c.rate_limited_ms),
        (ErrorKind::QuotaExhausted, c.quota_ms),
    ] {
        let row = if n == 0 {
            Cooldown::None
        } else {
            Cooldown::ServerDelayOr(ms(n))
        };
        policy = policy.with(kind, row);
    }
    let transient = if c.transient_min_ms == 0 {
        Cooldown::None
    } else {
        Cooldown::Adaptive {
            min: ms(c.transient_min_ms),
            max: ms(c.max_probe_interval_ms),
        }
    };
    for kind in ErrorKind::ALL
        .into_iter()
        .filter(|k| tower_llm_fallback::is_transient(*k))
    {
        policy = policy.with(kind, transient);
    }
    policy
}

/// When escalations fire.
pub(crate) fn escalation_policy(e: &EscalationSection) -> EscalationPolicy {
    EscalationPolicy::new()
        .all_targets_failed(e.all_targets_failed)
        .repeated_kind(e.repeated_kind)
        .failure_burst(e.window_failures, ms(e.window_ms))
        .rate_limit_window(ms(e.rate_limit_window_ms))
}

/// The cache tier, when enabled.
pub(crate) fn cache_config(c: &CacheSection) -> Option<CacheConfig> {
    c.enabled.then(|| {
        CacheConfig::new()
            .max_entries(usize::try_from(c.max_entries).unwrap_or(usize::MAX))
            .max_bytes(usize::try_from(c.max_bytes).unwrap_or(usize::MAX))
            .ttl(ms(c.ttl_ms))
    })
}

/// The static answer, when there is one.
pub(crate) fn static_answer(s: &StaticSection) -> Option<StaticAnswer> {
    s.content.as_ref().map(|content| {
        let answer = StaticAnswer::new(content.as_str());
        match &s.model {
            Some(model) => answer.model(model.as_str()),
            None => answer,
        }
    })
}

/// Check every crate's settings as the stack will build them; the error names the TOML key.
pub(crate) fn check(config: &StackConfig) -> Result<(), (String, String)> {
    let name = "check";
    breaker_config(&config.breaker, name, None).map_err(|e| section_error("breaker", &e))?;
    retry_layer(&config.retry, name, true).map_err(|e| section_error("retry", &e))?;
    bulkhead_layer(&config.bulkhead, name, None).map_err(|e| section_error("bulkhead", &e))?;
    stream_guard(&config.stream).map_err(|e| section_error("stream", &e))?;
    if let Some(redis) = config.shared_state.redis_config() {
        redis
            .validate()
            .map_err(|e| section_error("shared_state", &e))?;
    }
    Ok(())
}
