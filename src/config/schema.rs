//! The library's configuration schema: [`StackConfig`] and its sections, plain values with
//! serde container defaults. Every default comes from the crate whose layer the key configures
//! (`tower_llm_breaker::DEFAULT_*`, `tower_llm_retry::config::DEFAULT_*`, …), so the facade keeps
//! no copy of those numbers.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration: `[[providers]]`, `[[routes]]` and the policy sections.
///
/// Build it with [`from_toml_str`](Self::from_toml_str) or [`from_file`](Self::from_file)
/// (validated), from a [`ConfigDocument`](super::ConfigDocument) when the file also holds
/// sections of your own, or in code ([`StackConfig::standard`], or [`Default`] and the
/// fields; [`StackBuilder`](crate::stack::StackBuilder) validates it).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StackConfig {
    /// Upstream providers.
    pub providers: Vec<ProviderConfig>,
    /// Routes by requested model; the first match wins.
    pub routes: Vec<RouteConfig>,
    /// Requests as the stack receives them.
    pub request: RequestSection,
    /// Streaming limits, applied by each target's stream guard.
    pub stream: StreamSection,
    /// Circuit breaker per target.
    pub breaker: BreakerSection,
    /// Retries per target.
    pub retry: RetrySection,
    /// Concurrency and client-side rate limits per target.
    pub bulkhead: BulkheadSection,
    /// Cooldowns per target by error kind.
    pub cooldown: CooldownSection,
    /// The cache tier.
    pub cache: CacheSection,
    /// The static tier: an answer of last resort.
    #[serde(rename = "static")]
    pub static_answer: StaticSection,
    /// When and where failures are escalated.
    pub escalation: EscalationSection,
    /// Health persistence across restarts.
    pub health: HealthSection,
    /// State shared with other replicas through Redis (off unless `redis_url` is set).
    pub shared_state: SharedStateSection,
    /// The TOML text this configuration was read from (for the lines of later errors).
    #[serde(skip)]
    pub(crate) source: Option<SourceText>,
}

/// The TOML text a configuration was read from; `Debug` shows its size only.
#[derive(Clone, Default)]
pub(crate) struct SourceText(pub(crate) Arc<str>);

impl std::fmt::Debug for SourceText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes of TOML>", self.0.len())
    }
}

/// `[[providers]]`: one OpenAI-compatible upstream.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The provider's name, used by routes and in `x-llm-target`.
    pub name: String,
    /// Base URL of an OpenAI-compatible API, e.g. `https://api.openai.com/v1`. It may be left
    /// out when the program that builds the stack supplies it
    /// ([`StackBuilder::provider_url`](crate::stack::StackBuilder::provider_url)), as the
    /// gateway does for its embedded mock upstreams.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the API key (read once, when the stack is built).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Header the key goes in: `authorization` (the default) sends `Bearer <key>`; any other
    /// header gets the bare key (`x-api-key` for Anthropic, `api-key` for Azure).
    #[serde(default)]
    pub auth_header: Option<String>,
    /// A preset: the provider's default `base_url`, key header and `api_key_env`, and what else
    /// it requires ([`ProviderKind`](super::ProviderKind)). Keys written here win.
    #[serde(default)]
    pub kind: Option<super::ProviderKind>,
    /// Azure only: the `api-version` query parameter (default
    /// [`AZURE_API_VERSION`](super::AZURE_API_VERSION)).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Offer HTTP/2 by ALPN on https (default
    /// [`DEFAULT_HTTP2`](super::DEFAULT_HTTP2), `false`).
    #[serde(default)]
    pub http2: Option<bool>,
    /// Trusted roots for https: `"webpki"` (bundled, the default) or `"native"` (the platform's).
    #[serde(default)]
    pub tls_roots: Option<super::TlsRoots>,
    /// A PEM file of extra trusted CAs (a private gateway's, a test's).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// TCP connect plus TLS handshake limit, in ms (default
    /// [`DEFAULT_CONNECT_TIMEOUT_MS`](super::DEFAULT_CONNECT_TIMEOUT_MS)).
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Idle pooled connections close after this many ms (default
    /// [`DEFAULT_POOL_IDLE_TIMEOUT_MS`](super::DEFAULT_POOL_IDLE_TIMEOUT_MS)).
    #[serde(default)]
    pub pool_idle_timeout_ms: Option<u64>,
    /// Idle connections kept per host (default
    /// [`DEFAULT_POOL_MAX_IDLE_PER_HOST`](super::DEFAULT_POOL_MAX_IDLE_PER_HOST), no limit beyond
    /// the idle timeout; 0: none).
    #[serde(default)]
    pub pool_max_idle_per_host: Option<usize>,
    /// TCP keep-alive idle time in ms (default
    /// [`DEFAULT_TCP_KEEPALIVE_MS`](super::DEFAULT_TCP_KEEPALIVE_MS); 0: off).
    #[serde(default)]
    pub tcp_keepalive_ms: Option<u64>,
    /// Whether the provider continues an assistant prefill (the original messages plus a final
    /// assistant message are answered with the rest of that message). A cut stream is resumed
    /// on such a provider by prefill, on others by replay (see the route's `resume`); a prefill
    /// is never sent to a provider that does not declare it. Default false.
    #[serde(default)]
    pub supports_prefill: bool,
    /// Extra top-level members of a prefill request, for servers that need a flag to continue
    /// the final message (vLLM: `{ continue_final_message = true, add_generation_prompt = false }`).
    /// Only with `supports_prefill = true`; cannot set `messages`, `model` or `stream`.
    #[serde(default)]
    pub prefill_params: Option<toml::Table>,
}

impl ProviderConfig {
    /// A provider named `name`, with no base URL and no credentials yet.
    pub fn new(name: impl Into<String>) -> Self {
        ProviderConfig {
            name: name.into(),
            base_url: None,
            api_key_env: None,
            auth_header: None,
            kind: None,
            api_version: None,
            http2: None,
            tls_roots: None,
            ca_file: None,
            connect_timeout_ms: None,
            pool_idle_timeout_ms: None,
            pool_max_idle_per_host: None,
            tcp_keepalive_ms: None,
            supports_prefill: false,
            prefill_params: None,
        }
    }
}

/// How targets of one tier share load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierSelection {
    /// In the order written.
    #[default]
    Ordered,
    /// At random, by `weight`.
    Weighted,
    /// The target with the fewest calls in flight.
    LeastLoaded,
}

/// `[[routes]]`: which targets serve the models a glob matches.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Glob on the requested model (`*`, `?`, `[abc]`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// Targets in order of preference.
    pub targets: Vec<TargetConfig>,
    /// How targets that share a `tier` are picked.
    #[serde(default)]
    pub selection: TierSelection,
    /// Serve cached answers when every target failed (needs `[cache] enabled`). Default on.
    #[serde(default = "yes")]
    pub cache: bool,
    /// Serve the static answer when nothing else answered (needs `[static] content`). Default on.
    #[serde(default = "yes")]
    pub static_answer: bool,
    /// How a stream cut or stalled after its first event is finished on another target of
    /// the route: `prefill` (default: by prefill on providers with `supports_prefill`, by
    /// replay and splice on the others), `replay` (always by replay), `off` (the stream ends
    /// with an error event).
    #[serde(default)]
    pub resume: ResumeSetting,
}

/// A route's `resume`: how a cut stream is finished on another target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeSetting {
    /// By prefill where the provider supports it, by replay elsewhere.
    #[default]
    Prefill,
    /// Always by replay and splice.
    Replay,
    /// Not resumed.
    Off,
}

impl ResumeSetting {
    /// The fallback chain's mode.
    pub fn mode(self) -> tower_llm_fallback::ResumeMode {
        match self {
            ResumeSetting::Prefill => tower_llm_fallback::ResumeMode::Prefill,
            ResumeSetting::Replay => tower_llm_fallback::ResumeMode::Replay,
            ResumeSetting::Off => tower_llm_fallback::ResumeMode::Off,
        }
    }
}

fn yes() -> bool {
    true
}

impl RouteConfig {
    /// A route for the models `pattern` matches over `targets`, tiers in order, the cache and
    /// static tiers allowed.
    pub fn new(pattern: impl Into<String>, targets: Vec<TargetConfig>) -> Self {
        RouteConfig {
            pattern: pattern.into(),
            targets,
            selection: TierSelection::Ordered,
            cache: true,
            static_answer: true,
            resume: ResumeSetting::Prefill,
        }
    }

    /// Whether this route serves `model` (false when the glob is invalid).
    pub fn matches(&self, model: &str) -> bool {
        super::ModelPattern::new(&self.pattern).is_ok_and(|p| p.matches(model))
    }
}

/// One entry of a route's `targets`: a provider plus an upstream model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The provider's name.
    pub provider: String,
    /// Upstream model; absent = the requested model passes through (and each requested model is
    /// then a target of its own, with its own breaker, cooldown and health).
    #[serde(default)]
    pub model: Option<String>,
    /// How long this target may take before the chain moves on, in milliseconds, retries
    /// included: until the response headers (for a stream, its first event). The chain passes it
    /// down as the attempt's deadline: a retry below never waits past it, and a silent target is
    /// left after it at once. Default: `[retry] attempt_timeout_ms` (30 s).
    #[serde(default)]
    pub attempt_timeout_ms: Option<u64>,
    /// Tier: targets of the same tier share load (see the route's `selection`); tiers are tried
    /// in ascending order. Defaults to the target's position.
    #[serde(default)]
    pub tier: Option<u32>,
    /// Weight inside its tier (`selection = "weighted"`). Default 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// Context window in tokens: after a context-length failure only larger targets are tried.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Cap on `max_tokens` sent to this target.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Cap on `temperature` sent to this target (0..=2).
    #[serde(default)]
    pub max_temperature: Option<f64>,
}

fn one() -> u32 {
    1
}

impl TargetConfig {
    /// A target on `provider` that passes the requested model through, with the defaults.
    pub fn new(provider: impl Into<String>) -> Self {
        TargetConfig {
            provider: provider.into(),
            model: None,
            attempt_timeout_ms: None,
            tier: None,
            weight: 1,
            context_window: None,
            max_tokens: None,
            max_temperature: None,
        }
    }
}

/// `[request]`: requests as the stack receives them.
///
/// The stack buffers each request body (so that retries and fallbacks can replay it) and reads
/// its `model`; a body larger than `max_body_bytes` is refused with
/// [`InvalidRequest`](crate::InvalidRequest) ([`TooLarge`](crate::InvalidReason::TooLarge); a
/// gateway answers 413) before any target is called.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestSection {
    /// Largest request body buffered, in bytes. Default 4 MiB
    /// ([`DEFAULT_REQUEST_BODY_LIMIT`](tower_llm_core::buffer::DEFAULT_REQUEST_BODY_LIMIT)).
    pub max_body_bytes: u64,
}

impl Default for RequestSection {
    fn default() -> Self {
        RequestSection {
            max_body_bytes: count(tower_llm_core::buffer::DEFAULT_REQUEST_BODY_LIMIT),
        }
    }
}

/// `[stream]`: limits on streamed answers, in milliseconds, applied by each target's
/// [`StreamGuardLayer`](tower_llm_core::StreamGuardLayer).
///
/// A stream that does not start within `ttft_ms` is a failed attempt (retried or failed over
/// like any other); after its first event, a stream silent for `idle_ms` or longer than
/// `total_ms` is ended with an SSE `error` event and no `[DONE]`, never a silent truncation.
/// The chain also commits to a stream only after its first event, within the target's
/// `attempt_timeout_ms`.
///
/// A non-stream `2xx` answer is read whole (up to `max_buffered_body_bytes`) under the same
/// limits before it is handed on: a body that stalls or is cut is a failed attempt (`timeout` /
/// `transport`), failed over like any other, never a hang or a broken `200`. A JSON (or untyped)
/// body read whole must be one JSON value (else `invalid_response`), and one with a top-level
/// `error` object is a failure of the kind it names: both are failed over.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSection {
    /// Time to the first event. Default 10 s.
    pub ttft_ms: u64,
    /// Longest gap between events. Default 30 s.
    pub idle_ms: u64,
    /// Whole stream. Default 120 s.
    pub total_ms: u64,
    /// Largest non-stream answer read whole, in bytes; a larger one is handed on as it comes,
    /// unguarded. 0 = not read (non-stream answers pass through, unbounded in time). Default
    /// 8 MiB.
    pub max_buffered_body_bytes: u64,
    /// Most bytes of answer text kept per stream to resume it on another target after a cut
    /// (see the route's `resume`); a longer answer is not resumed. Default 256 KiB.
    pub resume_max_text_bytes: u64,
    /// How long after a request's start a cut stream may still be resumed, in ms. Default:
    /// `total_ms`.
    pub resume_budget_ms: Option<u64>,
}

impl Default for StreamSection {
    fn default() -> Self {
        use tower_llm_core::stream::{
            DEFAULT_IDLE, DEFAULT_MAX_BUFFERED_BODY, DEFAULT_TOTAL, DEFAULT_TTFT,
        };
        StreamSection {
            ttft_ms: millis(DEFAULT_TTFT),
            idle_ms: millis(DEFAULT_IDLE),
            total_ms: millis(DEFAULT_TOTAL),
            max_buffered_body_bytes: count(DEFAULT_MAX_BUFFERED_BODY),
            resume_max_text_bytes: count(tower_llm_fallback::resume::DEFAULT_MAX_TEXT_BYTES),
            resume_budget_ms: None,
        }
    }
}

/// `[breaker]`: one circuit breaker per target (the defaults are the breaker crate's).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSection {
    /// Whether breakers are used. Default on.
    pub enabled: bool,
    /// Failure rate (0..=1) over the window that opens the breaker. Default 0.5.
    pub failure_rate: f64,
    /// Window size in calls. Default 20.
    pub window: u32,
    /// Calls needed in the window before the rate counts. Default 10.
    pub min_calls: u32,
    /// Consecutive failures that open the breaker (0 = off). Default 5.
    pub consecutive_failures: u32,
    /// First open duration, doubled per re-open. Default 5 s.
    pub open_ms: u64,
    /// Cap on the open duration. Default 60 s.
    pub max_open_ms: u64,
    /// Probes admitted in half-open; that many successes close the breaker. Default 2.
    pub half_open_probes: u32,
}

impl Default for BreakerSection {
    fn default() -> Self {
        use tower_llm_breaker as b;
        BreakerSection {
            enabled: true,
            failure_rate: b::DEFAULT_FAILURE_RATE_THRESHOLD,
            window: b::DEFAULT_WINDOW_CALLS,
            min_calls: b::DEFAULT_MINIMUM_CALLS,
            consecutive_failures: b::DEFAULT_CONSECUTIVE_FAILURES,
            open_ms: millis(b::DEFAULT_OPEN_DURATION),
            max_open_ms: millis(b::DEFAULT_MAX_OPEN_DURATION),
            half_open_probes: b::DEFAULT_HALF_OPEN_PROBES,
        }
    }
}

/// `[retry]`: retries on the same target (the defaults are the retry crate's, which follow
/// `DESIGN.md`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySection {
    /// Whether retries are used. Default on.
    pub enabled: bool,
    /// Attempts per target, the first included. Default 3.
    pub max_attempts: u32,
    /// Base of the decorrelated-jitter backoff. Default 250 ms.
    pub base_ms: u64,
    /// Cap on one backoff. Default 8 s.
    pub max_delay_ms: u64,
    /// Longest server-requested delay honoured; above it the target is given up. Default 60 s.
    pub max_server_delay_ms: u64,
    /// The timeout of one attempt, and the default `attempt_timeout_ms` of every target (how
    /// long the chain gives a target, its retries included; a target may set its own).
    /// Default 30 s.
    pub attempt_timeout_ms: u64,
    /// Retries allowed as a fraction (0..=1) of first attempts. Default 0.2.
    pub budget_ratio: f32,
    /// Retries always allowed per second. Default 5.
    pub budget_floor_per_sec: u32,
    /// Seed of the backoff jitter (absent = random).
    pub seed: Option<u64>,
}

impl Default for RetrySection {
    fn default() -> Self {
        use tower_llm_retry::{backoff, budget, config};
        RetrySection {
            enabled: true,
            max_attempts: config::DEFAULT_MAX_ATTEMPTS,
            base_ms: millis(backoff::DEFAULT_BASE),
            max_delay_ms: millis(backoff::DEFAULT_MAX_DELAY),
            max_server_delay_ms: millis(config::DEFAULT_MAX_SERVER_DELAY),
            attempt_timeout_ms: millis(config::DEFAULT_ATTEMPT_TIMEOUT),
            budget_ratio: budget::DEFAULT_BUDGET_RETRY_RATIO,
            budget_floor_per_sec: budget::DEFAULT_BUDGET_MIN_PER_SEC,
            seed: None,
        }
    }
}

/// `[bulkhead]`: isolation and client-side limits per target (the defaults are the bulkhead
/// crate's).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadSection {
    /// Whether the bulkhead is used. Default on.
    pub enabled: bool,
    /// Calls in flight per target. Default 64.
    pub max_in_flight: u32,
    /// Calls waiting per target (0 = reject at once when full). Default 512. A call is also
    /// turned away at once when the calls ahead would not drain within `max_wait_ms`.
    pub max_queued: u32,
    /// Longest wait for a slot. Default 1 s.
    pub max_wait_ms: u64,
    /// Requests per minute per target (absent = unlimited). With `[shared_state]`, the limit of
    /// all replicas together (each replica's own while Redis is down).
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute per target, estimated from the request and corrected from the answer's
    /// `usage` (absent = unlimited). With `[shared_state]`, shared like `requests_per_minute`.
    pub tokens_per_minute: Option<u64>,
}

impl Default for BulkheadSection {
    fn default() -> Self {
        use tower_llm_bulkhead::config::{
            DEFAULT_MAX_CONCURRENT, DEFAULT_MAX_QUEUED, DEFAULT_MAX_WAIT,
        };
        BulkheadSection {
            enabled: true,
            max_in_flight: u32::try_from(DEFAULT_MAX_CONCURRENT).unwrap_or(u32::MAX),
            max_queued: u32::try_from(DEFAULT_MAX_QUEUED).unwrap_or(u32::MAX),
            max_wait_ms: millis(DEFAULT_MAX_WAIT),
            requests_per_minute: None,
            tokens_per_minute: None,
        }
    }
}

/// `[cooldown]`: how long a target is skipped after a failure, and how it is probed back (the
/// defaults are the fallback crate's [`CooldownPolicy`](tower_llm_fallback::CooldownPolicy)).
///
/// Transient failures (overload, 5xx, timeouts, transport errors, broken answers) bench a target
/// for a quarter of the time it has been failing, at least `transient_min_ms` and at most
/// `max_probe_interval_ms`, so a provider that comes back is probed within that bound however long
/// it was down. Rate limits and quota bench for the server's delay; auth failures until reset.
/// When every target of a route is benched, each is probed every `panic_probe_interval_ms`.
/// `0` means "not benched" for `rate_limited_ms`, `quota_ms` and `transient_min_ms`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CooldownSection {
    /// After a rate limit without a server delay (with one, exactly the server's delay).
    /// Default 60 s.
    pub rate_limited_ms: u64,
    /// After an exhausted quota without a server delay. Default 1 h.
    pub quota_ms: u64,
    /// After a 401/403; absent = until the target is reset by hand.
    pub auth_ms: Option<u64>,
    /// The shortest cooldown after a transient failure; `0` = transient failures do not bench
    /// a target (a per-target breaker below the chain alone decides, on its own clock).
    /// Default 1 s.
    pub transient_min_ms: u64,
    /// The longest cooldown after a transient failure: the bound on the time to the next probe.
    /// Default 5 s.
    pub max_probe_interval_ms: u64,
    /// When every target of a route is benched: how often each is probed (one probe at a time).
    /// Default 500 ms.
    pub panic_probe_interval_ms: u64,
    /// The longest server-requested delay honoured as a cooldown. Default 1 h.
    pub max_server_delay_ms: u64,
}

impl Default for CooldownSection {
    fn default() -> Self {
        use tower_llm_fallback as f;
        CooldownSection {
            rate_limited_ms: millis(f::DEFAULT_RATE_LIMIT_COOLDOWN),
            quota_ms: millis(f::DEFAULT_QUOTA_COOLDOWN),
            auth_ms: None,
            transient_min_ms: millis(f::DEFAULT_MIN_COOLDOWN),
            max_probe_interval_ms: millis(f::DEFAULT_MAX_PROBE_INTERVAL),
            panic_probe_interval_ms: millis(f::DEFAULT_PANIC_PROBE_INTERVAL),
            max_server_delay_ms: millis(f::DEFAULT_MAX_SERVER_DELAY),
        }
    }
}

/// `[cache]`: successful answers kept to serve when every target failed. Off by default.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    /// Whether the cache tier is used. Default off.
    pub enabled: bool,
    /// Entries kept at most. Default 1024.
    pub max_entries: u32,
    /// Bytes kept at most. Default 16 MiB.
    pub max_bytes: u64,
    /// Age after which an entry is not served. Default 10 min.
    pub ttl_ms: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        use tower_llm_fallback::cache as c;
        CacheSection {
            enabled: false,
            max_entries: u32::try_from(c::DEFAULT_MAX_ENTRIES).unwrap_or(u32::MAX),
            max_bytes: count(c::DEFAULT_MAX_BYTES),
            ttl_ms: millis(c::DEFAULT_TTL),
        }
    }
}

/// `[static]`: the answer of last resort.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticSection {
    /// The answer's text; absent = no static tier.
    pub content: Option<String>,
    /// The `model` the static answer reports (default `"static"`).
    pub model: Option<String>,
}

/// `[escalation]`: when a person should look (the defaults are the fallback crate's
/// [`EscalationPolicy`](tower_llm_fallback::EscalationPolicy)).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EscalationSection {
    /// Directory for JSON escalation records, written by a thread of their own; absent = a
    /// `tracing` error event only.
    pub dir: Option<String>,
    /// Files kept in `dir` at most; the oldest go first. Default 1000.
    pub max_files: u32,
    /// At most one escalation per route, reason and target per this window, then one summary
    /// with the count of those held back (`0` = no limit). Default 10 s.
    pub rate_limit_window_ms: u64,
    /// Escalate when every target failed for a request. Default on.
    pub all_targets_failed: bool,
    /// Escalate when one error kind repeats this many times in a row (0 = off). Default 5.
    pub repeated_kind: u32,
    /// Escalate when failures within `window_ms` exceed this (0 = off). Default 20.
    pub window_failures: u32,
    /// The window for `window_failures`. Default 60 s.
    pub window_ms: u64,
}

impl Default for EscalationSection {
    fn default() -> Self {
        use tower_llm_fallback as f;
        EscalationSection {
            dir: None,
            max_files: u32::try_from(f::escalation::DEFAULT_MAX_FILES).unwrap_or(u32::MAX),
            rate_limit_window_ms: millis(f::DEFAULT_RATE_LIMIT_WINDOW),
            all_targets_failed: true,
            repeated_kind: f::DEFAULT_REPEATED_KIND,
            window_failures: f::DEFAULT_BURST_FAILURES,
            window_ms: millis(f::DEFAULT_BURST_WINDOW),
        }
    }
}

/// `[health]`: health persistence.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSection {
    /// JSON file the health state (cooldowns, counters, recent errors) is saved to on shutdown
    /// and restored from at start. A missing file is a first start. Saved entries of routes and
    /// targets no longer in the configuration are dropped at start.
    pub file: Option<String>,
    /// What to do at start when `file` exists but cannot be read or parsed. Default `"fail"`:
    /// the stack is not built (starting empty would lift benches, an auth bench included).
    pub on_corrupt: OnCorrupt,
}

/// `[shared_state]`: what replicas learn, shared through Redis (see the README's "Running
/// several replicas"): cooldowns, breaker transitions and the probes after them, and the
/// bulkheads' `requests_per_minute` / `tokens_per_minute` (decided in Redis at each admission,
/// within `timeout_ms`).
///
/// Off unless `redis_url` is set. Only rate and token admissions wait for Redis (at most
/// `timeout_ms`): what other replicas publish is applied to local state through a subscription;
/// when Redis is down or slower than `timeout_ms`, every decision is taken on local state, and
/// sharing resumes when it answers.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedStateSection {
    /// `redis://[user:password@]host:port/db`. Replicas that share state use the same Redis
    /// and `key_prefix`. A password in it never appears in logs, errors or `/health`.
    pub redis_url: Option<String>,
    /// The prefix of every key and channel (default `tower-llm:`); unrelated deployments on
    /// one Redis use different ones.
    pub key_prefix: String,
    /// How long any decision waits for Redis before it is taken on local state, and the timeout
    /// of every Redis operation (default 20 ms).
    pub timeout_ms: u64,
}

impl Default for SharedStateSection {
    fn default() -> Self {
        SharedStateSection {
            redis_url: None,
            key_prefix: tower_llm_redis::DEFAULT_KEY_PREFIX.to_owned(),
            timeout_ms: millis(tower_llm_redis::DEFAULT_TIMEOUT),
        }
    }
}

impl SharedStateSection {
    /// The Redis settings, when sharing is on (`redis_url` set).
    pub fn redis_config(&self) -> Option<tower_llm_redis::RedisConfig> {
        let url = self.redis_url.as_ref()?;
        Some(
            tower_llm_redis::RedisConfig::new(url.clone())
                .key_prefix(self.key_prefix.clone())
                .timeout(Duration::from_millis(self.timeout_ms)),
        )
    }
}

/// `[health] on_corrupt`: what to do with a health file that cannot be read or parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCorrupt {
    /// Refuse to build the stack; the error names the file and the parse error.
    #[default]
    Fail,
    /// Rename the file to `<file>.corrupt-<unix seconds>` (with a warning) and start with no
    /// saved health.
    MoveAside,
}

/// A duration in whole milliseconds (saturating).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A size as a configuration number (saturating).
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
