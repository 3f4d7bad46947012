//! One target of the chain: a name, a provider and model, a request rewrite, an attempt timeout
//! and capabilities.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_fallback::TargetConfig;
//!
//! // The primary: aggressive timeout, the caller's request sent as it is.
//! let primary = TargetConfig::new("openai", "gpt-4o-mini")
//!     .attempt_timeout(Duration::from_secs(5))
//!     .context_window(128_000);
//! // A fallback on another provider: its own URL, key, model and caps, a patient timeout.
//! let fallback = TargetConfig::new("groq", "llama-3.1-8b-instant")
//!     .name("groq-small")
//!     .base_url("https://api.groq.com/openai/v1")
//!     .bearer_from_env("GROQ_API_KEY")
//!     .max_tokens(2048)
//!     .max_temperature(1.0)
//!     .attempt_timeout(Duration::from_secs(30))
//!     .context_window(131_072);
//! # let _ = (primary, fallback);
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::HeaderValue;
use metrics::Counter;
use serde_json::{Map, Value};
use tower_llm_core::{ConfigError, Target};

use crate::health::TargetState;
use crate::report::FallbackKind;
use crate::rewrite::{AuthSource, RequestRewrite, Secret};

/// The attempt timeout when none is configured (DESIGN.md: 30 s per attempt).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Configuration of one target.
///
/// The attempt timeout runs from the call to the target until the chain commits to its answer:
/// the response headers for a JSON answer (the whole body when the cache tier buffers it), the
/// first SSE event for a stream.
#[derive(Clone, Debug)]
pub struct TargetConfig {
    provider: Arc<str>,
    model: Arc<str>,
    name: Option<Arc<str>>,
    rewrite_model: bool,
    base_url: Option<String>,
    auth: Option<AuthSource>,
    headers: Vec<(String, String)>,
    max_tokens: Option<u64>,
    max_temperature: Option<f64>,
    attempt_timeout: Duration,
    context_window: Option<u64>,
    weight: u32,
    supports_prefill: bool,
    prefill_params: Option<Value>,
}

impl TargetConfig {
    /// A target for `model` on `provider`. Its name is `provider/model` (or `provider` when the
    /// model is empty). A non-empty model is written into the request body's `model` member; an
    /// empty one leaves the caller's model as it is.
    pub fn new(provider: impl Into<Arc<str>>, model: impl Into<Arc<str>>) -> Self {
        let model = model.into();
        TargetConfig {
            provider: provider.into(),
            rewrite_model: !model.is_empty(),
            model,
            name: None,
            base_url: None,
            auth: None,
            headers: Vec::new(),
            max_tokens: None,
            max_temperature: None,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            context_window: None,
            weight: 1,
            supports_prefill: false,
            prefill_params: None,
        }
    }

    /// The target's name: the `x-llm-target` value, the key of its health entry and of
    /// [`FallbackHandle::reset_target`](crate::FallbackHandle::reset_target). Must be unique.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Keep the caller's `model` in the body; the configured model only labels the target (its
    /// `Target` extension and health entry). For one service per target that sets the model itself.
    pub fn keep_request_model(mut self) -> Self {
        self.rewrite_model = false;
        self
    }

    /// Send this target's requests to `url` (scheme, host, port and an optional base path such as
    /// `https://api.groq.com/openai/v1`). With a path, it replaces the request path's prefix named
    /// by [`FallbackLayerBuilder::request_base_path`](crate::FallbackLayerBuilder::request_base_path)
    /// (default `/v1`): `/v1/chat/completions` becomes `/openai/v1/chat/completions`. Without a
    /// path only scheme and authority change. Moving a request to another host removes its
    /// `Host` header and any credential headers unless this target sets its own.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// `Authorization: Bearer <value of the environment variable var>`, read once when the chain
    /// is built (a missing variable fails the build).
    pub fn bearer_from_env(mut self, var: impl Into<String>) -> Self {
        self.auth = Some(AuthSource::BearerEnv(var.into()));
        self
    }

    /// `Authorization: Bearer <secret>`.
    pub fn bearer(mut self, secret: Secret) -> Self {
        self.auth = Some(AuthSource::Bearer(secret));
        self
    }

    /// `<header>: <value of the environment variable var>` (`x-api-key` for Anthropic,
    /// `x-goog-api-key` for Gemini, `api-key` for Azure), read once when the chain is built.
    pub fn auth_header_from_env(
        mut self,
        header: impl Into<String>,
        var: impl Into<String>,
    ) -> Self {
        self.auth = Some(AuthSource::HeaderEnv(header.into(), var.into()));
        self
    }

    /// `<header>: <secret>`.
    pub fn auth_header(mut self, header: impl Into<String>, secret: Secret) -> Self {
        self.auth = Some(AuthSource::Header(header.into(), secret));
        self
    }

    /// An extra header set on this target's requests (`anthropic-version: 2023-06-01`). Not for
    /// credentials: use the auth methods, which redact and strip.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Lower `max_tokens` and `max_completion_tokens` to `cap` when the request asks for more.
    pub fn max_tokens(mut self, cap: u64) -> Self {
        self.max_tokens = Some(cap);
        self
    }

    /// Lower `temperature` to `cap` when the request asks for more.
    pub fn max_temperature(mut self, cap: f64) -> Self {
        self.max_temperature = Some(cap);
        self
    }

    /// How long one attempt on this target may take before the chain moves on (default 30 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The model's context window, in tokens. After a `ContextLength` failure the chain only
    /// moves to targets with a strictly larger declared window.
    pub fn context_window(mut self, tokens: u64) -> Self {
        self.context_window = Some(tokens);
        self
    }

    /// The target's weight in a [`Selection::Weighted`](crate::Selection::Weighted) pool
    /// (default 1; 0 = only when the others are unavailable).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Whether the target continues an assistant prefill: given the original messages plus a
    /// final assistant message, it answers with the rest of that message (default `false`). A
    /// cut stream is [resumed](crate::resume) on such a target by prefill, on others by replay;
    /// a prefill is never sent to a target that did not declare it.
    pub fn supports_prefill(mut self, supports: bool) -> Self {
        self.supports_prefill = supports;
        self
    }

    /// Top-level members added to a prefill request for this target, for servers that need a
    /// flag to continue the final message instead of starting a new one (vLLM:
    /// `{"continue_final_message": true, "add_generation_prompt": false}`). Must be a JSON
    /// object; `messages`, `model` and `stream` cannot be set this way.
    pub fn prefill_params(mut self, params: Value) -> Self {
        self.prefill_params = Some(params);
        self
    }

    /// The target's name as configured or derived.
    pub fn target_name(&self) -> Arc<str> {
        match &self.name {
            Some(name) => name.clone(),
            None => Target::new(self.provider.clone(), self.model.clone())
                .to_string()
                .into(),
        }
    }

    pub(crate) fn compile(&self, tier: usize) -> Result<TargetRuntime, ConfigError> {
        let name = self.target_name();
        if name.is_empty() {
            return Err(ConfigError::new(
                "target",
                "a target needs a non-empty name",
            ));
        }
        if self.attempt_timeout.is_zero() {
            return Err(ConfigError::new(
                "attempt_timeout",
                format!("target `{name}`: must be > 0"),
            ));
        }
        let prefill = self.compile_prefill(&name)?;
        let name_header = HeaderValue::from_str(&name).map_err(|_| {
            ConfigError::new("target", format!("name `{name}` cannot be a header value"))
        })?;
        let rewrite = RequestRewrite::compile(
            self.rewrite_model.then_some(&*self.model),
            self.max_tokens,
            self.max_temperature,
            self.base_url.as_deref(),
            self.auth.as_ref(),
            &self.headers,
        )
        .map_err(|e| ConfigError::new(e.field(), format!("target `{name}`: {}", e.message())))?;
        Ok(TargetRuntime {
            target: Target::new(self.provider.clone(), self.model.clone()),
            name,
            name_header,
            tier,
            attempt_timeout: self.attempt_timeout,
            context_window: self.context_window,
            weight: self.weight,
            rewrite,
            prefill,
            state: Arc::default(),
            success_counter: OnceLock::new(),
            served_first_counter: OnceLock::new(),
            metrics: Default::default(),
        })
    }
}

impl TargetConfig {
    fn compile_prefill(&self, name: &str) -> Result<Option<Arc<Map<String, Value>>>, ConfigError> {
        let params = match &self.prefill_params {
            None => Map::new(),
            Some(Value::Object(params)) => params.clone(),
            Some(_) => {
                return Err(ConfigError::new(
                    "prefill_params",
                    format!("target `{name}`: must be a JSON object"),
                ))
            }
        };
        if let Some(key) = ["messages", "model", "stream"]
            .into_iter()
            .find(|k| params.contains_key(*k))
        {
            return Err(ConfigError::new(
                "prefill_params",
                format!("target `{name}`: `{key}` cannot be set by prefill_params"),
            ));
        }
        if !self.supports_prefill && self.prefill_params.is_some() {
            return Err(ConfigError::new(
                "prefill_params",
                format!("target `{name}`: set only with supports_prefill = true"),
            ));
        }
        Ok(self.supports_prefill.then(|| Arc::new(params)))
    }
}

/// A compiled target, shared by every clone of the chain.
#[derive(Debug)]
pub(crate) struct TargetRuntime {
    pub(crate) name: Arc<str>,
    pub(crate) name_header: HeaderValue,
    pub(crate) target: Target,
    pub(crate) tier: usize,
    pub(crate) attempt_timeout: Duration,
    pub(crate) context_window: Option<u64>,
    pub(crate) weight: u32,
    pub(crate) rewrite: RequestRewrite,
    /// With prefill support: the members its prefill requests add.
    pub(crate) prefill: Option<Arc<Map<String, Value>>>,
    pub(crate) state: Arc<TargetState>,
    /// Registered on first use, so the hot path never builds a metric key.
    success_counter: OnceLock<Counter>,
    served_first_counter: OnceLock<Counter>,
    /// Attempt durations and fallbacks, registered on first use.
    pub(crate) metrics: crate::metrics::TargetMetrics,
}

impl TargetRuntime {
    pub(crate) fn count_success(&self) {
        self.success_counter
            .get_or_init(|| {
                metrics::counter!(
                    crate::metrics::ATTEMPTS_TOTAL,
                    crate::metrics::TARGET => self.name.clone(),
                    crate::metrics::OUTCOME => "success",
                    crate::metrics::KIND => "none"
                )
            })
            .increment(1);
    }

    pub(crate) fn count_served_first(&self) {
        self.served_first_counter
            .get_or_init(|| {
                metrics::counter!(
                    crate::metrics::RESPONSES_TOTAL,
                    crate::metrics::TARGET => self.name.clone(),
                    crate::metrics::OUTCOME => FallbackKind::None.as_str()
                )
            })
            .increment(1);
    }
}
