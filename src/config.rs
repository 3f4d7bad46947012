//! The declarative configuration of a tower-llm stack: providers, routes and policies, loaded
//! from TOML (the gateway's `workspace.toml`).
//!
//! Every key is checked: an unknown key, a route that names a missing provider, a bad glob, a
//! negative or zero timeout, a rate outside `0..=1` is rejected with a [`ConfigFileError`] that
//! names the key (its full dotted path) and the line.
//!
//! ```
//! use tower_llm::config::StackConfig;
//!
//! let config = StackConfig::from_toml_str(r#"
//! [[providers]]
//! name = "primary"
//! base_url = "http://127.0.0.1:9101/v1"
//!
//! [[providers]]
//! name = "secondary"
//! mock = "healthy"
//!
//! [[routes]]
//! match = "gpt-*"
//! targets = [
//!   { provider = "primary" },
//!   { provider = "secondary", model = "backup-model", attempt_timeout_ms = 5000 },
//! ]
//! "#).unwrap();
//! let route = config.route_for("gpt-4o").unwrap();
//! assert_eq!(route.targets[1].model.as_deref(), Some("backup-model"));
//!
//! let err = StackConfig::from_toml_str(r#"
//! [[routes]]
//! match = "*"
//! targets = [{ provider = "nowhere" }]
//! "#).unwrap_err();
//! assert_eq!(err.key(), "routes[0].targets[0].provider");
//! assert_eq!(err.line(), Some(4));
//! assert!(err.to_string().contains("no provider named `nowhere`"));
//!
//! let err = StackConfig::from_toml_str("[retry]\nmax_atempts = 3\n").unwrap_err();
//! assert_eq!(err.key(), "retry.max_atempts");
//! assert_eq!(err.line(), Some(2));
//! ```

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A configuration file was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFileError {
    key: String,
    line: Option<usize>,
    message: String,
}

impl ConfigFileError {
    /// An error about `key` (a dotted path such as `routes[0].targets[1].provider`) at `line`.
    pub fn new(key: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigFileError {
            key: key.into(),
            line,
            message: message.into(),
        }
    }

    fn at(
        source: &str,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        ConfigFileError {
            key: key.into(),
            line: span.map(|s| line_of(source, s.start)),
            message: message.into(),
        }
    }

    /// The dotted path of the offending key (`routes[0].targets[1].provider`), or `""` when the
    /// file could not be parsed far enough to tell.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The 1-based line of the offending key or value, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), self.line) {
            (false, Some(line)) => write!(f, "line {line}: `{}`: {}", self.key, self.message),
            (false, None) => write!(f, "`{}`: {}", self.key, self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigFileError {}

fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source
        .as_bytes()
        .get(..end)
        .unwrap_or_default()
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The whole configuration: `[gateway]`, `[[providers]]`, `[[routes]]` and the policy sections.
///
/// Build it with [`from_toml_str`](Self::from_toml_str) or [`from_file`](Self::from_file)
/// (validated), or start from [`StackConfig::standard`] in code.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackConfig {
    /// The gateway's own settings (ignored by library users).
    #[serde(default)]
    pub gateway: GatewaySection,
    /// Upstream providers.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Routes by requested model; the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Streaming limits.
    #[serde(default)]
    pub stream: StreamSection,
    /// Circuit breaker per target.
    #[serde(default)]
    pub breaker: BreakerSection,
    /// Retries per target.
    #[serde(default)]
    pub retry: RetrySection,
    /// Concurrency and client-side rate limits per target.
    #[serde(default)]
    pub bulkhead: BulkheadSection,
    /// Cooldowns per target by error kind.
    #[serde(default)]
    pub cooldown: CooldownSection,
    /// The cache tier.
    #[serde(default)]
    pub cache: CacheSection,
    /// The static tier: an answer of last resort.
    #[serde(default, rename = "static")]
    pub static_answer: StaticSection,
    /// When and where failures are escalated.
    #[serde(default)]
    pub escalation: EscalationSection,
    /// Health persistence across restarts.
    #[serde(default)]
    pub health: HealthSection,
    /// The TOML text this configuration was read from (for line numbers in later errors).
    #[serde(skip)]
    source: Option<Arc<str>>,
}

/// `[gateway]`: the proxy's listener and client-facing limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    /// Environment variable holding the comma-separated client keys; unset = no client auth.
    #[serde(default)]
    pub api_keys_env: Option<String>,
    /// Largest request body accepted (413 beyond).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Requests per second the gateway sends itself, for the offline demo (0 = none).
    #[serde(default)]
    pub demo_requests_per_sec: u32,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            listen: default_listen(),
            api_keys_env: None,
            max_body_bytes: default_max_body(),
            demo_requests_per_sec: 0,
        }
    }
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".to_owned())
}

fn default_max_body() -> u64 {
    4 * 1024 * 1024
}

/// `[[providers]]`: one upstream, real (`base_url`) or embedded (`mock`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The provider's name, used by routes and in `x-llm-target`.
    pub name: Spanned<String>,
    /// Base URL of an OpenAI-compatible API, e.g. `https://api.openai.com/v1`.
    #[serde(default)]
    pub base_url: Option<Spanned<String>>,
    /// A fault profile for an embedded mock upstream, in the grammar of `tower-llm-chaos`
    /// (`"0s-20s=status:503; default=healthy"`). Whoever builds the stack starts the mock and
    /// supplies its URL ([`StackBuilder::provider_url`](crate::stack::StackBuilder::provider_url)).
    #[serde(default)]
    pub mock: Option<Spanned<String>>,
    /// Environment variable holding the API key (read once, when the stack is built).
    #[serde(default)]
    pub api_key_env: Option<Spanned<String>>,
    /// Header the key goes in: `authorization` (the default) sends `Bearer <key>`; any other
    /// header gets the bare key (`x-api-key` for Anthropic, `api-key` for Azure).
    #[serde(default)]
    pub auth_header: Option<Spanned<String>>,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only names of variables are held here, never keys; still, keep Debug short.
        f.debug_struct("ProviderConfig")
            .field("name", self.name.get_ref())
            .field("base_url", &self.base_url.as_ref().map(Spanned::get_ref))
            .field("mock", &self.mock.as_ref().map(Spanned::get_ref))
            .field(
                "api_key_env",
                &self.api_key_env.as_ref().map(Spanned::get_ref),
            )
            .finish_non_exhaustive()
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
    pub pattern: Spanned<String>,
    /// Targets in order of preference.
    pub targets: Vec<TargetConfig>,
    /// How targets that share a `tier` are picked.
    #[serde(default)]
    pub selection: TierSelection,
    /// Serve cached answers when every target failed (needs `[cache] enabled`).
    #[serde(default = "yes")]
    pub cache: bool,
    /// Serve the static answer when nothing else answered (needs `[static] content`).
    #[serde(default = "yes")]
    pub static_answer: bool,
    #[serde(skip)]
    compiled: Option<glob::Pattern>,
}

fn yes() -> bool {
    true
}

/// One entry of a route's `targets`: a provider plus an upstream model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The provider's name.
    pub provider: Spanned<String>,
    /// Upstream model; absent = the requested model passes through (and each requested model is
    /// then a target of its own, with its own breaker, cooldown and health).
    #[serde(default)]
    pub model: Option<String>,
    /// How long this target may take before the chain moves on, in milliseconds, retries
    /// included: until the response headers (for a stream, its first event). The chain passes it
    /// down as the attempt's deadline: a retry below never waits past it, and a silent target is
    /// left after it at once. Default: `[retry] attempt_timeout_ms`.
    #[serde(default)]
    pub attempt_timeout_ms: Option<u64>,
    /// Tier: targets of the same tier share load (see the route's `selection`); tiers are tried
    /// in ascending order. Defaults to the target's position.
    #[serde(default)]
    pub tier: Option<u32>,
    /// Weight inside its tier (`selection = "weighted"`).
    #[serde(default = "one")]
    pub weight: u32,
    /// Context window in tokens: after a context-length failure only larger targets are tried.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Cap on `max_tokens` sent to this target.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Cap on `temperature` sent to this target.
    #[serde(default)]
    pub max_temperature: Option<Spanned<f64>>,
}

fn one() -> u32 {
    1
}

/// `[stream]`: limits on streamed answers, in milliseconds.
///
/// The fallback chain already commits to a streamed answer only after its first event, within
/// the target's attempt timeout. These three limits are for the stream-guard layer
/// (first token, idle gap, whole stream); they are validated here and exposed to it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSection {
    /// Time to the first event.
    #[serde(default = "d_ttft")]
    pub ttft_ms: u64,
    /// Longest gap between events.
    #[serde(default = "d_idle")]
    pub idle_ms: u64,
    /// Whole stream.
    #[serde(default = "d_total")]
    pub total_ms: u64,
}

impl Default for StreamSection {
    fn default() -> Self {
        StreamSection {
            ttft_ms: d_ttft(),
            idle_ms: d_idle(),
            total_ms: d_total(),
        }
    }
}

fn d_ttft() -> u64 {
    10_000
}
fn d_idle() -> u64 {
    30_000
}
fn d_total() -> u64 {
    120_000
}

/// `[breaker]`: one circuit breaker per target.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    /// Whether breakers are used.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Failure rate (0..=1) over the window that opens the breaker.
    #[serde(default = "d_rate")]
    pub failure_rate: Spanned<f64>,
    /// Window size in calls.
    #[serde(default = "d_window")]
    pub window: u32,
    /// Calls needed in the window before the rate counts.
    #[serde(default = "d_min_calls")]
    pub min_calls: u32,
    /// Consecutive failures that open the breaker (0 = off).
    #[serde(default = "d_consecutive")]
    pub consecutive_failures: u32,
    /// First open duration, doubled per re-open.
    #[serde(default = "d_open")]
    pub open_ms: u64,
    /// Cap on the open duration.
    #[serde(default = "d_open_max")]
    pub max_open_ms: u64,
    /// Probes admitted in half-open; that many successes close the breaker.
    #[serde(default = "d_probes")]
    pub half_open_probes: u32,
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            enabled: true,
            failure_rate: d_rate(),
            window: d_window(),
            min_calls: d_min_calls(),
            consecutive_failures: d_consecutive(),
            open_ms: d_open(),
            max_open_ms: d_open_max(),
            half_open_probes: d_probes(),
        }
    }
}

fn d_rate() -> Spanned<f64> {
    Spanned::new(0..0, 0.5)
}
fn d_window() -> u32 {
    20
}
fn d_min_calls() -> u32 {
    10
}
fn d_consecutive() -> u32 {
    5
}
fn d_open() -> u64 {
    5_000
}
fn d_open_max() -> u64 {
    60_000
}
fn d_probes() -> u32 {
    2
}

/// `[retry]`: retries on the same target.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Whether retries are used.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Attempts per target, the first included.
    #[serde(default = "d_attempts")]
    pub max_attempts: u32,
    /// Base of the decorrelated-jitter backoff.
    #[serde(default = "d_base")]
    pub base_ms: u64,
    /// Cap on one backoff.
    #[serde(default = "d_max_delay")]
    pub max_delay_ms: u64,
    /// Longest server-requested delay honoured; above it the target is given up.
    #[serde(default = "d_server_delay")]
    pub max_server_delay_ms: u64,
    /// Default timeout of one attempt (targets may set their own `attempt_timeout_ms`).
    #[serde(default = "d_attempt_timeout")]
    pub attempt_timeout_ms: u64,
    /// Retries allowed as a fraction (0..=1) of first attempts.
    #[serde(default = "d_budget")]
    pub budget_ratio: Spanned<f64>,
    /// Retries always allowed per second.
    #[serde(default = "d_floor")]
    pub budget_floor_per_sec: u32,
    /// Seed of the backoff jitter (absent = random).
    #[serde(default)]
    pub seed: Option<u64>,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            enabled: true,
            max_attempts: d_attempts(),
            base_ms: d_base(),
            max_delay_ms: d_max_delay(),
            max_server_delay_ms: d_server_delay(),
            attempt_timeout_ms: d_attempt_timeout(),
            budget_ratio: d_budget(),
            budget_floor_per_sec: d_floor(),
            seed: None,
        }
    }
}

fn d_attempts() -> u32 {
    3
}
fn d_base() -> u64 {
    250
}
fn d_max_delay() -> u64 {
    8_000
}
fn d_server_delay() -> u64 {
    60_000
}
fn d_attempt_timeout() -> u64 {
    30_000
}
fn d_budget() -> Spanned<f64> {
    Spanned::new(0..0, 0.2)
}
fn d_floor() -> u32 {
    5
}

/// `[bulkhead]`: isolation and client-side limits per target.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkheadSection {
    /// Whether the bulkhead is used.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Calls in flight per target.
    #[serde(default = "d_in_flight")]
    pub max_in_flight: u32,
    /// Calls waiting per target (0 = reject at once when full).
    #[serde(default = "d_queued")]
    pub max_queued: u32,
    /// Longest wait for a slot.
    #[serde(default = "d_wait")]
    pub max_wait_ms: u64,
    /// Requests per minute per target (absent = unlimited).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute per target, estimated from the request and corrected from the answer's
    /// `usage` (absent = unlimited).
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

impl Default for BulkheadSection {
    fn default() -> Self {
        BulkheadSection {
            enabled: true,
            max_in_flight: d_in_flight(),
            max_queued: d_queued(),
            max_wait_ms: d_wait(),
            requests_per_minute: None,
            tokens_per_minute: None,
        }
    }
}

fn d_in_flight() -> u32 {
    64
}
fn d_queued() -> u32 {
    128
}
fn d_wait() -> u64 {
    1_000
}

/// `[cooldown]`: how long a target is skipped after a failure, and how it is probed back.
///
/// Transient failures (overload, 5xx, timeouts, transport errors, broken answers) bench a target
/// for a quarter of the time it has been failing, at least `transient_min_ms` and at most
/// `max_probe_interval_ms`, so a provider that comes back is probed within that bound however long
/// it was down. Rate limits and quota bench for the server's delay; auth failures until reset.
/// When every target of a route is benched, each is probed every `panic_probe_interval_ms`.
/// `0` means "not benched" for `rate_limited_ms`, `quota_ms` and `transient_min_ms`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CooldownSection {
    /// After a rate limit without a server delay (with one, exactly the server's delay).
    #[serde(default = "d_cd_rate")]
    pub rate_limited_ms: u64,
    /// After an exhausted quota without a server delay.
    #[serde(default = "d_cd_quota")]
    pub quota_ms: u64,
    /// After a 401/403; absent = until the target is reset by hand.
    #[serde(default)]
    pub auth_ms: Option<u64>,
    /// The shortest cooldown after a transient failure; `0` = transient failures do not bench
    /// a target (a per-target breaker below the chain alone decides, on its own clock).
    #[serde(default = "d_cd_transient_min")]
    pub transient_min_ms: u64,
    /// The longest cooldown after a transient failure: the bound on the time to the next probe.
    #[serde(default = "d_cd_probe_max")]
    pub max_probe_interval_ms: u64,
    /// When every target of a route is benched: how often each is probed (one probe at a time).
    #[serde(default = "d_cd_panic")]
    pub panic_probe_interval_ms: u64,
    /// The longest server-requested delay honoured as a cooldown.
    #[serde(default = "d_cd_server_max")]
    pub max_server_delay_ms: u64,
}

impl Default for CooldownSection {
    fn default() -> Self {
        CooldownSection {
            rate_limited_ms: d_cd_rate(),
            quota_ms: d_cd_quota(),
            auth_ms: None,
            transient_min_ms: d_cd_transient_min(),
            max_probe_interval_ms: d_cd_probe_max(),
            panic_probe_interval_ms: d_cd_panic(),
            max_server_delay_ms: d_cd_server_max(),
        }
    }
}

fn d_cd_rate() -> u64 {
    60_000
}
fn d_cd_quota() -> u64 {
    3_600_000
}
fn d_cd_transient_min() -> u64 {
    tower_llm_fallback::DEFAULT_MIN_COOLDOWN.as_millis() as u64
}
fn d_cd_probe_max() -> u64 {
    tower_llm_fallback::DEFAULT_MAX_PROBE_INTERVAL.as_millis() as u64
}
fn d_cd_panic() -> u64 {
    tower_llm_fallback::DEFAULT_PANIC_PROBE_INTERVAL.as_millis() as u64
}
fn d_cd_server_max() -> u64 {
    3_600_000
}

/// `[cache]`: successful answers kept to serve when every target failed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Whether the cache tier is used.
    #[serde(default)]
    pub enabled: bool,
    /// Entries kept at most.
    #[serde(default = "d_entries")]
    pub max_entries: u32,
    /// Bytes kept at most.
    #[serde(default = "d_bytes")]
    pub max_bytes: u64,
    /// Age after which an entry is not served.
    #[serde(default = "d_ttl")]
    pub ttl_ms: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            enabled: false,
            max_entries: d_entries(),
            max_bytes: d_bytes(),
            ttl_ms: d_ttl(),
        }
    }
}

fn d_entries() -> u32 {
    1_000
}
fn d_bytes() -> u64 {
    16 * 1024 * 1024
}
fn d_ttl() -> u64 {
    3_600_000
}

/// `[static]`: the answer of last resort.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSection {
    /// The answer's text; absent = no static tier.
    #[serde(default)]
    pub content: Option<String>,
    /// The `model` the static answer reports (default `"static"`).
    #[serde(default)]
    pub model: Option<String>,
}

/// `[escalation]`: when a person should look.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationSection {
    /// Directory for JSON escalation records; absent = a `tracing` warning only.
    #[serde(default)]
    pub dir: Option<String>,
    /// Escalate when every target failed for a request.
    #[serde(default = "yes")]
    pub all_targets_failed: bool,
    /// Escalate when one error kind repeats this many times in a row (0 = off).
    #[serde(default = "d_repeat")]
    pub repeated_kind: u32,
    /// Escalate when failures within `window_ms` exceed this (0 = off).
    #[serde(default = "d_window_failures")]
    pub window_failures: u32,
    /// The window for `window_failures`.
    #[serde(default = "d_escalation_window")]
    pub window_ms: u64,
}

impl Default for EscalationSection {
    fn default() -> Self {
        EscalationSection {
            dir: None,
            all_targets_failed: true,
            repeated_kind: d_repeat(),
            window_failures: d_window_failures(),
            window_ms: d_escalation_window(),
        }
    }
}

fn d_repeat() -> u32 {
    5
}
fn d_window_failures() -> u32 {
    20
}
fn d_escalation_window() -> u64 {
    60_000
}

/// `[health]`: health persistence.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// JSON file the health state (cooldowns, counters, recent errors) is saved to on shutdown
    /// and restored from at start.
    #[serde(default)]
    pub file: Option<String>,
}

impl StackConfig {
    /// The "standard" configuration for one provider (and optionally a fallback provider):
    /// DESIGN.md's defaults everywhere, one catch-all route whose first target passes the
    /// requested model through and whose second (if given) answers with `fallback_model`.
    ///
    /// ```
    /// use tower_llm::config::StackConfig;
    ///
    /// let config = StackConfig::standard(
    ///     "http://127.0.0.1:9101/v1",
    ///     Some(("http://127.0.0.1:9102/v1", "backup-model")),
    /// ).unwrap();
    /// assert_eq!(config.routes[0].targets.len(), 2);
    /// assert_eq!(config.breaker.consecutive_failures, 5);
    /// assert!(StackConfig::standard("not a url", None).is_err());
    /// ```
    pub fn standard(
        primary_url: &str,
        fallback: Option<(&str, &str)>,
    ) -> Result<Self, ConfigFileError> {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut toml = format!(
            "[[providers]]\nname = \"primary\"\nbase_url = \"{}\"\n",
            esc(primary_url)
        );
        if let Some((url, _)) = fallback {
            toml.push_str(&format!(
                "[[providers]]\nname = \"fallback\"\nbase_url = \"{}\"\n",
                esc(url)
            ));
        }
        toml.push_str("[[routes]]\nmatch = \"*\"\ntargets = [\n  { provider = \"primary\" },\n");
        if let Some((_, model)) = fallback {
            toml.push_str(&format!(
                "  {{ provider = \"fallback\", model = \"{}\" }},\n",
                esc(model)
            ));
        }
        toml.push_str("]\n");
        Self::from_toml_str(&toml)
    }

    /// Parse and validate a TOML document.
    pub fn from_toml_str(source: &str) -> Result<Self, ConfigFileError> {
        let mut config: StackConfig = toml::from_str(source).map_err(|e| {
            let message = e.message().trim().to_owned();
            let key = e
                .span()
                .and_then(|span| path_at(source, span))
                .unwrap_or_default();
            ConfigFileError::at(source, key, e.span(), message)
        })?;
        config.source = Some(source.into());
        config.validate(source)?;
        Ok(config)
    }

    /// Read, parse and validate a TOML file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigFileError> {
        let path = path.as_ref();
        let source = std::fs::read_to_string(path).map_err(|e| {
            ConfigFileError::new("", None, format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_toml_str(&source)
    }

    /// The first route whose glob matches `model`.
    pub fn route_for(&self, model: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.matches(model))
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name.get_ref() == name)
    }

    /// An error about `key` (a dotted path as in [`ConfigFileError::key`]), with the line of that
    /// key in the file this configuration was read from, when there is one.
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> ConfigFileError {
        let line = self
            .source
            .as_deref()
            .and_then(|src| span_of_path(src, key).map(|span| line_of(src, span.start)));
        ConfigFileError::new(key, line, message)
    }

    fn validate(&mut self, src: &str) -> Result<(), ConfigFileError> {
        let err = |key: String, span: Range<usize>, msg: String| {
            // Defaults have an empty span: look the key up instead (it is then absent: no line).
            let span = Some(span)
                .filter(|s| s.end > 0)
                .or_else(|| span_of_path(src, &key));
            Err(ConfigFileError::at(src, key, span, msg))
        };
        let listen = &self.gateway.listen;
        if listen.get_ref().parse::<SocketAddr>().is_err() {
            return err(
                "gateway.listen".into(),
                listen.span(),
                format!(
                    "`{}` is not an address like 127.0.0.1:8080",
                    listen.get_ref()
                ),
            );
        }
        let mut names = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let name = p.name.get_ref();
            if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
                return err(
                    format!("providers[{i}].name"),
                    p.name.span(),
                    "must be non-empty, without `/` or control characters".into(),
                );
            }
            if !names.insert(name.clone()) {
                return err(
                    format!("providers[{i}].name"),
                    p.name.span(),
                    format!("provider `{name}` is defined twice"),
                );
            }
            match (&p.base_url, &p.mock) {
                (None, None) => {
                    return err(
                        format!("providers[{i}]"),
                        p.name.span(),
                        format!("provider `{name}` needs `base_url` or `mock`"),
                    )
                }
                (Some(_), Some(mock)) => {
                    return err(
                        format!("providers[{i}].mock"),
                        mock.span(),
                        "set either `base_url` or `mock`, not both".into(),
                    )
                }
                (Some(url), None) => {
                    if !is_http_url(url.get_ref()) {
                        return err(
                            format!("providers[{i}].base_url"),
                            url.span(),
                            format!("`{}` is not an http(s) URL", url.get_ref()),
                        );
                    }
                }
                (None, Some(_)) => {}
            }
            if let Some(var) = &p.api_key_env {
                if var.get_ref().is_empty() {
                    return err(
                        format!("providers[{i}].api_key_env"),
                        var.span(),
                        "must name an environment variable".into(),
                    );
                }
            }
            if let Some(header) = &p.auth_header {
                if http::HeaderName::from_bytes(header.get_ref().as_bytes()).is_err() {
                    return err(
                        format!("providers[{i}].auth_header"),
                        header.span(),
                        format!("`{}` is not a header name", header.get_ref()),
                    );
                }
            }
        }
        for (i, route) in self.routes.iter_mut().enumerate() {
            match glob::Pattern::new(route.pattern.get_ref()) {
                Ok(p) => route.compiled = Some(p),
                Err(e) => {
                    return err(
                        format!("routes[{i}].match"),
                        route.pattern.span(),
                        format!("bad glob `{}`: {}", route.pattern.get_ref(), e.msg),
                    )
                }
            }
            if route.targets.is_empty() {
                return err(
                    format!("routes[{i}].targets"),
                    route.pattern.span(),
                    "a route needs at least one target".into(),
                );
            }
            let mut seen = HashSet::new();
            for (j, t) in route.targets.iter().enumerate() {
                let key = |field: &str| format!("routes[{i}].targets[{j}].{field}");
                if !names.contains(t.provider.get_ref()) {
                    return err(
                        key("provider"),
                        t.provider.span(),
                        format!("no provider named `{}`", t.provider.get_ref()),
                    );
                }
                if !seen.insert((t.provider.get_ref().clone(), t.model.clone())) {
                    return err(
                        key("provider"),
                        t.provider.span(),
                        "the same provider and model appear twice in this route".into(),
                    );
                }
                if t.model.as_deref() == Some("") {
                    return err(
                        key("model"),
                        t.provider.span(),
                        "must not be empty (leave it out to pass the requested model through)"
                            .into(),
                    );
                }
                if t.attempt_timeout_ms == Some(0) {
                    return err(
                        key("attempt_timeout_ms"),
                        t.provider.span(),
                        "must be greater than zero".into(),
                    );
                }
                if let Some(temp) = &t.max_temperature {
                    if !(0.0..=2.0).contains(temp.get_ref()) {
                        return err(
                            key("max_temperature"),
                            temp.span(),
                            "must be within 0..=2".into(),
                        );
                    }
                }
            }
        }
        for (key, rate) in [
            ("breaker.failure_rate", &self.breaker.failure_rate),
            ("retry.budget_ratio", &self.retry.budget_ratio),
        ] {
            if !(0.0..=1.0).contains(rate.get_ref()) {
                return err(
                    key.into(),
                    rate.span(),
                    format!("{} is outside 0..=1", rate.get_ref()),
                );
            }
        }
        let zero_checks: [(&str, u64); 14] = [
            ("stream.ttft_ms", self.stream.ttft_ms),
            ("stream.idle_ms", self.stream.idle_ms),
            ("stream.total_ms", self.stream.total_ms),
            ("breaker.window", u64::from(self.breaker.window)),
            ("breaker.open_ms", self.breaker.open_ms),
            (
                "breaker.half_open_probes",
                u64::from(self.breaker.half_open_probes),
            ),
            ("retry.max_attempts", u64::from(self.retry.max_attempts)),
            ("retry.base_ms", self.retry.base_ms),
            ("retry.attempt_timeout_ms", self.retry.attempt_timeout_ms),
            (
                "bulkhead.max_in_flight",
                u64::from(self.bulkhead.max_in_flight),
            ),
            ("gateway.max_body_bytes", self.gateway.max_body_bytes),
            ("cache.ttl_ms", self.cache.ttl_ms),
            (
                "cooldown.max_probe_interval_ms",
                self.cooldown.max_probe_interval_ms,
            ),
            (
                "cooldown.panic_probe_interval_ms",
                self.cooldown.panic_probe_interval_ms,
            ),
        ];
        for (key, value) in zero_checks {
            if value == 0 {
                return err(key.into(), 0..0, "must be greater than zero".into());
            }
        }
        let optional_zero_checks: [(&str, Option<u64>); 2] = [
            (
                "bulkhead.requests_per_minute",
                self.bulkhead.requests_per_minute.map(u64::from),
            ),
            (
                "bulkhead.tokens_per_minute",
                self.bulkhead.tokens_per_minute,
            ),
        ];
        for (key, value) in optional_zero_checks {
            if value == Some(0) {
                return err(key.into(), 0..0, "must be greater than zero".into());
            }
        }
        let ordered: [(&str, u64, &str, u64); 4] = [
            (
                "breaker.min_calls",
                u64::from(self.breaker.min_calls),
                "breaker.window",
                u64::from(self.breaker.window),
            ),
            (
                "breaker.open_ms",
                self.breaker.open_ms,
                "breaker.max_open_ms",
                self.breaker.max_open_ms,
            ),
            (
                "retry.base_ms",
                self.retry.base_ms,
                "retry.max_delay_ms",
                self.retry.max_delay_ms,
            ),
            (
                "cooldown.transient_min_ms",
                self.cooldown.transient_min_ms,
                "cooldown.max_probe_interval_ms",
                self.cooldown.max_probe_interval_ms,
            ),
        ];
        for (low_key, low, high_key, high) in ordered {
            if low > high {
                return err(
                    low_key.into(),
                    0..0,
                    format!("{low} is above `{high_key}` ({high})"),
                );
            }
        }
        if self.escalation.window_failures > 0 && self.escalation.window_ms == 0 {
            return err(
                "escalation.window_ms".into(),
                0..0,
                "must be greater than zero".into(),
            );
        }
        if self.cache.enabled && (self.cache.max_entries == 0 || self.cache.max_bytes == 0) {
            return err(
                "cache.max_entries".into(),
                0..0,
                "the cache needs room for at least one entry".into(),
            );
        }
        Ok(())
    }
}

fn is_http_url(url: &str) -> bool {
    url.parse::<http::Uri>().ok().is_some_and(|u| {
        matches!(u.scheme_str(), Some("http") | Some("https")) && u.authority().is_some()
    })
}

impl RouteConfig {
    /// Whether this route serves `model`.
    pub fn matches(&self, model: &str) -> bool {
        match &self.compiled {
            Some(p) => p.matches(model),
            None => glob::Pattern::new(self.pattern.get_ref()).is_ok_and(|p| p.matches(model)),
        }
    }
}

/// The dotted path (`routes[0].targets[1].attempt_timeout_ms`) of the innermost key or value
/// whose span contains `span`.
fn path_at(source: &str, span: Range<usize>) -> Option<String> {
    let root = DeTable::parse(source).ok()?;
    let mut path = String::new();
    if descend_table(root.get_ref(), &span, &mut path) {
        Some(path)
    } else {
        None
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn descend_table(table: &DeTable<'_>, span: &Range<usize>, path: &mut String) -> bool {
    for (key, value) in table.iter() {
        if contains(&key.span(), span) {
            push_key(path, key.get_ref());
            return true;
        }
        let len = path.len();
        push_key(path, key.get_ref());
        // Children first: `[section]` tables and arrays of tables may not span their contents.
        if descend_value(value.get_ref(), span, path) || contains(&value.span(), span) {
            return true;
        }
        path.truncate(len);
    }
    false
}

fn descend_value(value: &DeValue<'_>, span: &Range<usize>, path: &mut String) -> bool {
    match value {
        DeValue::Table(table) => descend_table(table, span, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                if descend_value(item.get_ref(), span, path) || contains(&item.span(), span) {
                    return true;
                }
                path.truncate(len);
            }
            false
        }
        _ => false,
    }
}

/// The span of the value at a dotted path (`breaker.window`, `routes[0].match`), if present.
fn span_of_path(source: &str, dotted: &str) -> Option<Range<usize>> {
    let root = DeTable::parse(source).ok()?;
    let mut segments = dotted.split('.');
    let first = segments.next()?;
    let (name, indices) = split_indices(first)?;
    let mut current = index_into(root.get_ref().get(name)?, &indices)?;
    for segment in segments {
        let (name, indices) = split_indices(segment)?;
        let DeValue::Table(table) = current.get_ref() else {
            return None;
        };
        current = index_into(table.get(name)?, &indices)?;
    }
    Some(current.span())
}

type SpannedValue<'a, 'i> = &'a Spanned<DeValue<'i>>;

fn index_into<'a, 'i>(
    mut value: SpannedValue<'a, 'i>,
    indices: &[usize],
) -> Option<SpannedValue<'a, 'i>> {
    for &i in indices {
        let DeValue::Array(items) = value.get_ref() else {
            return None;
        };
        value = items.get(i)?;
    }
    Some(value)
}

fn split_indices(segment: &str) -> Option<(&str, Vec<usize>)> {
    let (name, mut rest) = match segment.find('[') {
        Some(at) => (segment.get(..at)?, segment.get(at..)?),
        None => return Some((segment, Vec::new())),
    };
    let mut indices = Vec::new();
    while let Some(inner) = rest.strip_prefix('[') {
        let close = inner.find(']')?;
        indices.push(inner.get(..close)?.parse().ok()?);
        rest = inner.get(close + 1..)?;
    }
    Some((name, indices))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> ConfigFileError {
        StackConfig::from_toml_str(src).unwrap_err()
    }

    const PROVIDER: &str = "[[providers]]\nname = \"p\"\nmock = \"healthy\"\n";

    #[test]
    fn empty_config_gets_defaults() {
        let c = StackConfig::from_toml_str("").unwrap();
        assert_eq!(c.gateway.listen.get_ref(), "127.0.0.1:8080");
        assert_eq!(c.breaker.window, 20);
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.cooldown.auth_ms, None);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err("[gateway]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n");
        assert_eq!(e.line(), Some(3));
        assert_eq!(e.key(), "gateway.listne");
        assert!(e.message().contains("unknown field"), "{e}");
    }

    #[test]
    fn unknown_key_inside_an_inline_target_names_its_path() {
        let src = format!(
            "{PROVIDER}[[routes]]\nmatch = \"*\"\ntargets = [\n  {{ provider = \"p\" }},\n  {{ provider = \"p\", model = \"m\", atempt_timeout_ms = 5 }},\n]\n"
        );
        let e = err(&src);
        assert_eq!(e.key(), "routes[0].targets[1].atempt_timeout_ms");
        assert_eq!(e.line(), Some(8));
    }

    #[test]
    fn negative_timeout_is_rejected_with_key_and_line() {
        let src = format!("{PROVIDER}[[routes]]\nmatch = \"*\"\ntargets = [\n  {{ provider = \"p\", attempt_timeout_ms = -5 }},\n]\n");
        let e = err(&src);
        assert_eq!(e.line(), Some(7), "{e}");
        assert_eq!(e.key(), "routes[0].targets[0].attempt_timeout_ms", "{e}");
        let e = err("[retry]\nattempt_timeout_ms = -1\n");
        assert_eq!((e.key(), e.line()), ("retry.attempt_timeout_ms", Some(2)));
    }

    #[test]
    fn bad_glob_is_rejected() {
        let src = format!(
            "{PROVIDER}[[routes]]\nmatch = \"gpt-[\"\ntargets = [{{ provider = \"p\" }}]\n"
        );
        let e = err(&src);
        assert_eq!(e.key(), "routes[0].match");
        assert_eq!(e.line(), Some(5));
        assert!(e.message().contains("bad glob"));
    }

    #[test]
    fn rate_outside_unit_interval_is_rejected() {
        let e = err("[breaker]\nfailure_rate = 1.5\n");
        assert_eq!(e.key(), "breaker.failure_rate");
        assert_eq!(e.line(), Some(2));
    }

    #[test]
    fn zero_values_are_rejected_with_line() {
        let e = err("[stream]\nttft_ms = 10\nidle_ms = 0\n");
        assert_eq!(e.key(), "stream.idle_ms");
        assert_eq!(e.line(), Some(3));
        let e = err("[bulkhead]\nrequests_per_minute = 0\n");
        assert_eq!(
            (e.key(), e.line()),
            ("bulkhead.requests_per_minute", Some(2))
        );
    }

    #[test]
    fn ordered_pairs_are_checked() {
        let e = err("[breaker]\nwindow = 5\nmin_calls = 6\n");
        assert_eq!(e.key(), "breaker.min_calls");
        assert_eq!(e.line(), Some(3));
        let e = err("[retry]\nbase_ms = 900\nmax_delay_ms = 100\n");
        assert_eq!(e.key(), "retry.base_ms");
    }

    #[test]
    fn provider_needs_exactly_one_source() {
        let e = err("[[providers]]\nname = \"p\"\n");
        assert!(e.message().contains("needs `base_url` or `mock`"));
        let e =
            err("[[providers]]\nname = \"p\"\nbase_url = \"http://x/v1\"\nmock = \"healthy\"\n");
        assert_eq!(e.key(), "providers[0].mock");
        let e = err("[[providers]]\nname = \"p\"\nbase_url = \"ftp://x\"\n");
        assert_eq!(e.key(), "providers[0].base_url");
        assert_eq!(e.line(), Some(3));
        let e = err(&format!("{PROVIDER}{PROVIDER}"));
        assert!(e.message().contains("defined twice"));
        assert_eq!(e.line(), Some(5));
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = err("[breaker]\nwindow = \"twenty\"\n");
        assert_eq!((e.key(), e.line()), ("breaker.window", Some(2)));
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
        let c = StackConfig::from_toml_str(&format!(
            "{PROVIDER}{}",
            PROVIDER.replace("\"p\"", "\"q\"")
        ))
        .unwrap();
        let e = c.error_at("providers[1].mock", "bad profile");
        assert_eq!(e.line(), Some(6));
        assert_eq!(c.error_at("breaker.window", "x").line(), None);
    }

    #[test]
    fn the_shipped_workspace_toml_is_valid() {
        let src = include_str!("../workspace.toml");
        let c = StackConfig::from_toml_str(src).unwrap();
        assert!(!c.routes.is_empty());
        assert!(c.providers.iter().all(|p| p.mock.is_some()));
    }
}
