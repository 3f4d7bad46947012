//! [`Plan`]: everything the configuration says, resolved once when the stack is built: each
//! provider's URL and credentials, each route's targets, the chain's policies, and the settings
//! of the per-target layers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tower_llm_core::StreamGuardLayer;
use tower_llm_fallback::{
    CacheConfig, CooldownPolicy, EscalationPolicy, JsonDirEscalation, ResumeConfig, Secret,
    Selection, StaticAnswer,
};

use crate::config::layers::{self, ms};
use crate::config::{
    BreakerSection, BulkheadSection, ModelPattern, ProviderConfig, RetrySection, RouteConfig,
    StackConfig, TierSelection,
};
use crate::ConfigFileError;

/// Everything the configuration says, resolved once: URLs, secrets, policies.
#[derive(Clone)]
pub(super) struct Plan {
    pub(super) providers: Arc<HashMap<String, ProviderPlan>>,
    pub(super) routes: Arc<[RoutePlan]>,
    pub(super) cooldowns: CooldownPolicy,
    pub(super) escalation_policy: EscalationPolicy,
    pub(super) escalation_dir: Option<Arc<JsonDirEscalation>>,
    pub(super) cache: Option<CacheConfig>,
    pub(super) static_answer: Option<StaticAnswer>,
    /// The settings of every target's own layers.
    pub(super) layers: TargetLayers,
    /// Whether the chains' answers carry the `FallbackReport` extension
    /// ([`StackBuilder::fallback_reports`](super::StackBuilder::fallback_reports)).
    pub(super) reports: bool,
}

/// The settings of one target's layers (breaker, retry, bulkhead, stream guard), the same for
/// every target; each target's layers are built from them under its own name.
#[derive(Clone)]
pub(super) struct TargetLayers {
    pub(super) breaker: Option<BreakerSection>,
    pub(super) retry: Option<RetrySection>,
    pub(super) bulkhead: Option<BulkheadSection>,
    pub(super) stream_guard: StreamGuardLayer,
    /// `[shared_state]`: the process's handle on Redis, when sharing is on. Breakers share
    /// their transitions through it (scope `targets`), chains their cooldowns (scope = the
    /// chain's key).
    pub(crate) shared_state: Option<tower_llm_redis::SharedState>,
    /// The breakers' side of `shared_state` (one for every target of the stack).
    pub(super) shared_breakers: Option<Arc<tower_llm_redis::RedisBreakers>>,
    /// The bulkheads' side of `shared_state`: their rate and token limits (one limiter for every
    /// target; each bulkhead's state in Redis is named after its target).
    pub(super) shared_limiter: Option<Arc<dyn tower_llm_bulkhead::SharedLimiter>>,
    /// Whether the retry layers set their `Attempt` and `RetryAttempts` extensions
    /// ([`StackBuilder::retry_attempt_extensions`](super::StackBuilder::retry_attempt_extensions)).
    pub(super) retry_extensions: bool,
}

#[derive(Clone)]
pub(super) struct ProviderPlan {
    pub(super) base_url: String,
    /// With prefill support: the extra members of its prefill requests.
    pub(super) prefill: Option<serde_json::Value>,
    /// `None` header = `Authorization: Bearer`.
    pub(super) auth: Option<(Option<HeaderName>, Secret)>,
}

pub(super) struct RoutePlan {
    pub(super) pattern: String,
    pub(super) glob: ModelPattern,
    pub(super) targets: Vec<TargetPlan>,
    pub(super) selection: Selection,
    pub(super) cache: bool,
    pub(super) static_answer: bool,
    pub(super) resume: ResumeConfig,
    /// A target passes the requested model through: one chain per requested model.
    pub(super) passthrough: bool,
}

pub(super) struct TargetPlan {
    pub(super) provider: Arc<str>,
    pub(super) model: Option<Arc<str>>,
    pub(super) attempt_timeout: Duration,
    pub(super) tier: u32,
    pub(super) weight: u32,
    pub(super) context_window: Option<u64>,
    pub(super) max_tokens: Option<u64>,
    pub(super) max_temperature: Option<f64>,
}

impl Plan {
    /// Resolve a validated `config`; `urls` override providers' base URLs (by provider name).
    pub(super) fn new(
        config: &StackConfig,
        urls: &HashMap<String, String>,
        shared_state: Option<tower_llm_redis::SharedState>,
    ) -> Result<Self, ConfigFileError> {
        let mut providers = HashMap::new();
        for (i, p) in config.providers.iter().enumerate() {
            providers.insert(p.name.clone(), provider(config, i, p, urls)?);
        }
        // A target's default time in the chain (retries included): one attempt's timeout.
        let default_budget = ms(config.retry.attempt_timeout_ms);
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| route(config, i, r, default_budget))
            .collect::<Result<Vec<_>, _>>()?;
        let escalation_dir = match &config.escalation.dir {
            Some(dir) => {
                let max_files = usize::try_from(config.escalation.max_files).unwrap_or(usize::MAX);
                let hook = JsonDirEscalation::builder(dir)
                    .max_files(max_files)
                    .build()
                    .map_err(|e| {
                        config.error_at("escalation.dir", format!("cannot use `{dir}`: {e}"))
                    })?;
                Some(Arc::new(hook))
            }
            None => None,
        };
        let stream_guard = layers::stream_guard(&config.stream).map_err(|e| {
            let (key, message) = layers::section_error("stream", &e);
            config.error_at(&key, message)
        })?;
        Ok(Plan {
            providers: Arc::new(providers),
            routes: routes.into(),
            cooldowns: layers::cooldown_policy(&config.cooldown),
            escalation_policy: layers::escalation_policy(&config.escalation),
            escalation_dir,
            cache: layers::cache_config(&config.cache),
            static_answer: layers::static_answer(&config.static_answer),
            layers: TargetLayers {
                breaker: config.breaker.enabled.then(|| config.breaker.clone()),
                retry: config.retry.enabled.then(|| config.retry.clone()),
                bulkhead: config.bulkhead.enabled.then(|| config.bulkhead.clone()),
                stream_guard,
                shared_breakers: shared_state.as_ref().map(|s| s.breakers("targets")),
                shared_limiter: shared_state.as_ref().map(|s| {
                    let limiter: Arc<dyn tower_llm_bulkhead::SharedLimiter> =
                        Arc::new(tower_llm_redis::limiter::RedisLimiter::from_shared_state(s));
                    limiter
                }),
                shared_state,
                retry_extensions: true,
            },
            reports: true,
        })
    }
}

/// Provider `i`: its URL (an override from the builder wins) and its credentials, read now.
fn provider(
    config: &StackConfig,
    i: usize,
    p: &ProviderConfig,
    urls: &HashMap<String, String>,
) -> Result<ProviderPlan, ConfigFileError> {
    // A preset (`kind`) fills in what the provider's keys leave out (config/provider.rs).
    let base_url = match p.resolved_base_url(urls.get(&p.name).map(String::as_str)) {
        Some(url) => url,
        None => {
            return Err(config.error_at(
                &format!("providers[{i}]"),
                format!(
                    "provider `{}` has no `base_url` (nor a URL given to \
                     StackBuilder::provider_url)",
                    p.name
                ),
            ))
        }
    };
    let prefill = prefill_plan(config, i, p)?;
    let Some(var) = p.resolved_api_key_env() else {
        return Ok(ProviderPlan {
            base_url,
            prefill,
            auth: None,
        });
    };
    let secret = Secret::from_env(var)
        .map_err(|e| config.error_at(&format!("providers[{i}].api_key_env"), e.message()))?;
    let header = match p.resolved_auth_header() {
        Some(h) if !h.eq_ignore_ascii_case("authorization") => {
            Some(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                config.error_at(&format!("providers[{i}].auth_header"), "not a header name")
            })?)
        }
        _ => None,
    };
    Ok(ProviderPlan {
        base_url,
        prefill,
        auth: Some((header, secret)),
    })
}

/// Provider `i`'s prefill support: `None` without, else its extra members (a JSON object).
fn prefill_plan(
    config: &StackConfig,
    i: usize,
    p: &ProviderConfig,
) -> Result<Option<serde_json::Value>, ConfigFileError> {
    let key = format!("providers[{i}].prefill_params");
    let params = match &p.prefill_params {
        None => serde_json::Map::new(),
        Some(_) if !p.supports_prefill => {
            return Err(config.error_at(&key, "set only with supports_prefill = true"))
        }
        Some(table) => match serde_json::to_value(table) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err(config.error_at(&key, "not representable as JSON")),
        },
    };
    if let Some(member) = ["messages", "model", "stream"]
        .into_iter()
        .find(|k| params.contains_key(*k))
    {
        return Err(config.error_at(&key, format!("`{member}` cannot be set here")));
    }
    Ok(p.supports_prefill
        .then_some(serde_json::Value::Object(params)))
}

/// Route `i`: its glob, its targets with their defaults filled in, its tiers.
fn route(
    config: &StackConfig,
    i: usize,
    r: &RouteConfig,
    default_budget: Duration,
) -> Result<RoutePlan, ConfigFileError> {
    let glob = ModelPattern::new(&r.pattern)
        .map_err(|e| config.error_at(&format!("routes[{i}].match"), e.message()))?;
    let targets = r
        .targets
        .iter()
        .enumerate()
        .map(|(j, t)| TargetPlan {
            provider: t.provider.as_str().into(),
            model: t.model.as_deref().map(Arc::from),
            attempt_timeout: t.attempt_timeout_ms.map_or(default_budget, ms),
            tier: t.tier.unwrap_or(u32::try_from(j).unwrap_or(u32::MAX)),
            weight: t.weight,
            context_window: t.context_window,
            max_tokens: t.max_tokens,
            max_temperature: t.max_temperature,
        })
        .collect();
    Ok(RoutePlan {
        pattern: r.pattern.clone(),
        glob,
        targets,
        selection: match r.selection {
            TierSelection::Ordered => Selection::Ordered,
            TierSelection::Weighted => Selection::Weighted,
            TierSelection::LeastLoaded => Selection::LeastLoaded,
        },
        cache: r.cache,
        static_answer: r.static_answer,
        resume: ResumeConfig::new(r.resume.mode())
            .max_text_bytes(
                usize::try_from(config.stream.resume_max_text_bytes).unwrap_or(usize::MAX),
            )
            .budget(ms(config
                .stream
                .resume_budget_ms
                .unwrap_or(config.stream.total_ms))),
        passthrough: r.targets.iter().any(|t| t.model.is_none()),
    })
}
